//! The one error of the GraphQL layer and its stable `extensions.code`. Internal causes are logged
//! here and never sent to the client.

use std::time::Duration;

use async_graphql::ErrorExtensions;

use crate::auth::AuthError;
use crate::upstream::UpstreamError;

/// Deliberately not `Display`: async-graphql turns any `Display` error into a plain error without
/// a code, so this one converts only through [`ErrorExtensions`], which sets `extensions.code`.
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadUserInput(String),
    Conflict(String),
    RateLimited { retry_after: Option<Duration>, message: String },
    UpstreamUnavailable(String),
    UpstreamError(String),
    QueryTooComplex(String),
    Internal,
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::BadUserInput(_) => "BAD_USER_INPUT",
            AppError::Conflict(_) => "CONFLICT",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            AppError::UpstreamError(_) => "UPSTREAM_ERROR",
            AppError::QueryTooComplex(_) => "QUERY_TOO_COMPLEX",
            AppError::Internal => "INTERNAL",
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            AppError::Unauthenticated(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::BadUserInput(m)
            | AppError::Conflict(m)
            | AppError::UpstreamUnavailable(m)
            | AppError::UpstreamError(m)
            | AppError::QueryTooComplex(m)
            | AppError::RateLimited { message: m, .. } => m,
            AppError::Internal => "internal error",
        }
    }

    pub fn bad_input(message: impl Into<String>) -> AppError {
        AppError::BadUserInput(message.into())
    }

    /// A live subscriber that fell `n` events behind the bus is dropped; it may subscribe again
    /// at once (`retryAfterSeconds: 0`).
    pub fn lagged(n: u64) -> AppError {
        AppError::RateLimited {
            retry_after: Some(Duration::ZERO),
            message: format!("this subscriber fell {n} events behind and was dropped; subscribe again"),
        }
    }

    /// A logged internal failure; the client only learns that something went wrong.
    pub fn internal(cause: impl std::fmt::Display) -> AppError {
        tracing::error!(%cause, "internal error");
        AppError::Internal
    }
}

impl From<UpstreamError> for AppError {
    fn from(e: UpstreamError) -> AppError {
        match e {
            UpstreamError::Unauthorized { message } => AppError::Unauthenticated(format!(
                "the Witty-Home service refused your token ({message}); refresh it and try again"
            )),
            UpstreamError::Forbidden { message } => AppError::Forbidden(message),
            UpstreamError::NotFound { message } => AppError::NotFound(message),
            UpstreamError::Conflict { message } => AppError::Conflict(message),
            // What the request carried was refused: its arguments are the caller's to fix.
            // (0: refused by witty-bff's own checks before sending, naming the argument.)
            UpstreamError::Rejected { status: 0 | 400 | 413 | 414 | 422, message } => AppError::BadUserInput(message),
            // A refusal witty-bff does not expect after its own checks passed: not the caller's fault.
            UpstreamError::Rejected { status, message } => {
                AppError::UpstreamError(format!("the Witty-Home service refused the request ({status}): {message}"))
            }
            UpstreamError::RateLimited { retry_after, message } => AppError::RateLimited { retry_after, message },
            UpstreamError::Server { status, .. } => {
                AppError::UpstreamUnavailable(format!("the Witty-Home service failed ({status}); try again later"))
            }
            UpstreamError::Timeout => {
                AppError::UpstreamUnavailable("the Witty-Home service did not answer in time; try again later".into())
            }
            UpstreamError::NotConnected(cause) | UpstreamError::Unreachable(cause) => {
                tracing::warn!(%cause, "upstream unreachable");
                AppError::UpstreamUnavailable("the Witty-Home service cannot be reached; try again later".into())
            }
            UpstreamError::Decode(cause) => {
                tracing::error!(%cause, "unreadable upstream answer");
                AppError::UpstreamError("the Witty-Home service answered something unreadable".into())
            }
        }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> AppError {
        AppError::Unauthenticated(e.to_string())
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", self.code());
            if let AppError::RateLimited { retry_after: Some(d), .. } = self {
                ext.set("retryAfterSeconds", d.as_secs());
            }
        })
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> async_graphql::Error {
        e.extend()
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Gives every error of a response a code: those async-graphql makes itself (a syntax error, a
/// limit) have none. A query over the complexity limit is told how to fix it.
pub fn with_codes(response: &mut async_graphql::Response) {
    for e in response.errors.iter_mut() {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if has_code {
            continue;
        }
        let lower = e.message.to_ascii_lowercase();
        let code = if lower.contains("too complex") {
            e.message = format!(
                "the query asks the Witty-Home service for too much at once: each field that reads it (a \
                 measure's values, a log's entries or counts, a list, a resource by id), and each alias of \
                 one, counts {} of the {} allowed; split it into smaller queries",
                super::history::UPSTREAM_READ,
                super::MAX_COMPLEXITY
            );
            "QUERY_TOO_COMPLEX"
        } else if lower.contains("nested too deep") {
            e.message = format!("the query is nested deeper than {} levels; ask for less at once", super::MAX_DEPTH);
            "QUERY_TOO_COMPLEX"
        } else {
            "BAD_USER_INPUT"
        };
        e.extensions.get_or_insert_with(Default::default).set("code", code);
    }
}
