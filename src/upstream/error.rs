//! One error for every way an upstream call can fail, sorted by status once, in one place.

use std::time::Duration;

use reqwest::StatusCode;

/// Why an upstream call failed. Cloneable (loaders share one failure between waiters) and free of
/// secrets: it carries the upstream's message, never a token or key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// 401: the token was refused (expired or revoked early) or the subscription key is wrong.
    #[error("upstream refused the credentials: {message}")]
    Unauthorized { message: String },
    /// 403 without `Retry-After`: the caller may not do this.
    #[error("upstream forbids this: {message}")]
    Forbidden { message: String },
    #[error("upstream has no such resource: {message}")]
    NotFound { message: String },
    /// 409: the station's state does not allow it (a car is plugged, …).
    #[error("upstream refused in the current state: {message}")]
    Conflict { message: String },
    /// Any other 4xx: the request itself was refused.
    #[error("upstream refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 429, or 403 with `Retry-After` (a quota): throttling, not authorization.
    #[error("upstream is throttling: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 5xx.
    #[error("upstream failed ({status}): {message}")]
    Server { status: u16, message: String },
    /// No answer within the configured timeout.
    #[error("upstream did not answer in time")]
    Timeout,
    /// No connection could be made (refused, no route, connect timeout): nothing was sent.
    #[error("upstream not reached: {0}")]
    NotConnected(String),
    /// The connection was reset or cut after the request went out, or mid-answer.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// An answer that does not have the documented shape.
    #[error("upstream answered something unreadable: {0}")]
    Decode(String),
}

impl UpstreamError {
    /// Sorts a refused answer by its status (and `Retry-After`).
    pub fn from_status(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> UpstreamError {
        let message = message_of(body).unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        match status.as_u16() {
            401 => UpstreamError::Unauthorized { message },
            403 if retry_after.is_some() => UpstreamError::RateLimited { retry_after, message },
            403 => UpstreamError::Forbidden { message },
            404 => UpstreamError::NotFound { message },
            409 => UpstreamError::Conflict { message },
            429 => UpstreamError::RateLimited { retry_after, message },
            s @ 400..=499 => UpstreamError::Rejected { status: s, message },
            s => UpstreamError::Server { status: s, message },
        }
    }

    pub fn from_transport(e: reqwest::Error) -> UpstreamError {
        // First: a connect timeout is a timeout too, but nothing was sent.
        if e.is_connect() {
            UpstreamError::NotConnected(e.without_url().to_string())
        } else if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_decode() {
            UpstreamError::Decode(e.to_string())
        } else {
            // Without the URL: short, and the same text for every path.
            UpstreamError::Unreachable(e.without_url().to_string())
        }
    }

    /// Worth trying a read again: the failure was on the way, not in the answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Server { .. }
                | UpstreamError::Timeout
                | UpstreamError::NotConnected(_)
                | UpstreamError::Unreachable(_)
        )
    }
}

/// The `message` of an upstream error body (`{statusCode, message}` or ASP.NET's `title`/`detail`).
fn message_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["message", "detail", "title", "error"].iter().find_map(|k| v.get(*k)?.as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_status_and_retry_after() {
        let body = br#"{"statusCode":403,"message":"Out of call volume quota"}"#;
        assert!(matches!(
            UpstreamError::from_status(StatusCode::FORBIDDEN, Some(Duration::from_secs(1)), body),
            UpstreamError::RateLimited { .. }
        ));
        assert_eq!(
            UpstreamError::from_status(StatusCode::FORBIDDEN, None, b"{}"),
            UpstreamError::Forbidden { message: "Forbidden".into() }
        );
        assert!(UpstreamError::from_status(StatusCode::BAD_GATEWAY, None, b"").is_transient());
        assert!(!UpstreamError::from_status(StatusCode::CONFLICT, None, b"").is_transient());
    }

    #[tokio::test]
    async fn a_connection_that_cannot_be_made_is_told_from_one_cut_after_sending() {
        // A port nobody listens on (bound, then let go).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = reqwest::Client::new().post(format!("http://127.0.0.1:{port}/x")).send().await.unwrap_err();
        let e = UpstreamError::from_transport(e);
        assert!(matches!(e, UpstreamError::NotConnected(_)), "{e:?}");
        assert!(e.is_transient());
    }
}
