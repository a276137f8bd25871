//! The one error of the GraphQL layer and its stable `extensions.code`. Internal causes are logged
//! here and never sent to the client.

use std::time::Duration;

use async_graphql::{ErrorExtensions, ServerError, ValidationResult};

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

const BAD_USER_INPUT: &str = "BAD_USER_INPUT";

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::BadUserInput(_) => BAD_USER_INPUT,
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

pub(crate) type AppResult<T> = Result<T, AppError>;

/// An error async-graphql raised while reading the request (the query does not parse, is not valid
/// against the schema, or breaks a rule of ours checked before it runs): the caller's to fix, so
/// `BAD_USER_INPUT` unless it already has a code. Called with the errors of those phases only,
/// which is what decides the code; their messages are async-graphql's and are never read.
pub(crate) fn request_error(mut e: ServerError) -> ServerError {
    bad_input_unless_coded(&mut e);
    e
}

/// Whether `e` is a refusal of the role and consent rules (`FORBIDDEN`): decided by what the
/// caller's reads returned (their membership, the meter's consent, the upstream's own 403), so an
/// answer holding it is as current as those reads.
pub(crate) fn is_forbidden(e: &ServerError) -> bool {
    let code = e.extensions.as_ref().and_then(|x| x.get("code"));
    matches!(code, Some(async_graphql::Value::String(code)) if code == "FORBIDDEN")
}

fn bad_input_unless_coded(e: &mut ServerError) {
    let extensions = e.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", BAD_USER_INPUT);
    }
}

impl AppError {
    /// This error as one of the whole request (no field, no place in the document), with its code.
    pub fn into_request_error(self) -> ServerError {
        let error = self.extend();
        let mut e = ServerError::new(error.message, None);
        e.extensions = error.extensions;
        e
    }
}

/// The schema's limits of depth and complexity, from async-graphql's typed measure of the
/// document. (async-graphql's own `limit_depth`/`limit_complexity` refuse with an English message
/// and no code, which is why they are not used.) Complexity is checked first, as they do, with
/// the document's `introspection` fields (from [`super::size::check`]) each counting
/// [`INTROSPECTION_COST`](super::size::INTROSPECTION_COST) more: async-graphql counts them 1.
pub(crate) fn over_limits(measured: &ValidationResult, introspection: usize) -> Option<ServerError> {
    let extra = introspection.saturating_mul(super::size::INTROSPECTION_COST);
    let message = if measured.complexity > super::MAX_COMPLEXITY {
        format!(
            "the query asks the Witty-Home service for too much at once: each field that reads it (a measure's \
             values, a log's entries or counts, a list, a resource by id), and each alias of one, counts {} of the \
             {} allowed; split it into smaller queries",
            super::history::UPSTREAM_READ,
            super::MAX_COMPLEXITY
        )
    } else if measured.complexity.saturating_add(extra) > super::MAX_COMPLEXITY {
        format!(
            "the query asks for too much at once: each introspection field (`__schema`, `__type`), and each alias of \
             one, counts {} of the {} allowed besides its fields, and it uses {introspection}; ask for the schema once \
             per query, or split it into smaller queries",
            super::size::INTROSPECTION_COST,
            super::MAX_COMPLEXITY
        )
    } else if measured.depth > super::MAX_DEPTH {
        format!("the query is nested deeper than {} levels; ask for less at once", super::MAX_DEPTH)
    } else {
        return None;
    };
    Some(AppError::QueryTooComplex(message).into_request_error())
}

/// Gives a code to every error of a response that has none. Errors of ours carry theirs, and so
/// do those of parsing and validation (tagged by [`request_error`] in the phase they come from)
/// and the limits ([`over_limits`]). What is left is what async-graphql raises outside the
/// extension's hooks: choosing the operation to run (an unknown name, several and none named)
/// and coercing an argument's value as its field runs. Both are about what the request asked.
pub(crate) fn with_codes(response: &mut async_graphql::Response) {
    response.errors.iter_mut().for_each(bad_input_unless_coded);
}
