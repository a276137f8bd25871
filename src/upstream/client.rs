//! The one reqwest client and the one private send path every resource method goes through: it
//! joins the URL, sets the subscription key and the caller's bearer, sorts failures into
//! [`UpstreamError`], retries reads (never commands) on transient failures, and decodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::error::UpstreamError;
use super::tolerant;
use crate::metrics::Metrics;

/// Where the upstream is and how to talk to it.
#[derive(Clone)]
pub(crate) struct UpstreamConfig {
    pub base_url: Url,
    /// The partner's `Ocp-Apim-Subscription-Key`.
    pub api_key: String,
    /// For one attempt of one call.
    pub timeout: Duration,
    /// Extra attempts for reads that failed on the way (5xx, timeout, connection).
    pub read_retries: usize,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("read_retries", &self.read_retries)
            .finish()
    }
}

/// Whether a call only reads (and may be retried) or commands (and must not be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Command,
}

/// A typed client of the Witty-Home API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    http: reqwest::Client,
    base: Arc<Url>,
    api_key: Arc<HeaderValue>,
    read_retries: usize,
    metrics: Arc<Metrics>,
}

impl UpstreamClient {
    pub(crate) fn new(config: UpstreamConfig) -> Result<UpstreamClient, UpstreamError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("witty-bff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let mut api_key = HeaderValue::from_str(&config.api_key).map_err(|_| UpstreamError::Rejected {
            status: 0,
            message: "the API key is not a valid header value".into(),
        })?;
        api_key.set_sensitive(true);
        Ok(UpstreamClient {
            http,
            base: Arc::new(config.base_url),
            api_key: Arc::new(api_key),
            read_retries: config.read_retries,
            metrics: Metrics::new(),
        })
    }

    /// The process's metrics: this client's calls, and those of the cache and live events above it.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base
    }

    /// `base/segment/segment…`, each segment percent-encoded. An empty, `.` or `..` segment is
    /// refused: the URL would silently name another route (`DELETE …/event-subscriptions/..` is
    /// `DELETE /installations/{i}`), so such a request is never sent.
    fn url(&self, segments: &[&str]) -> Result<Url, UpstreamError> {
        if let Some(bad) = segments.iter().find(|s| matches!(s.trim(), "" | "." | "..")) {
            return Err(UpstreamError::Rejected {
                status: 0,
                message: format!("'{bad}' is not a valid id: an id may not be empty, '.' or '..'"),
            });
        }
        let mut url = (*self.base).clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    /// One attempt.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        bearer: &str,
        body: Option<&[u8]>,
    ) -> Result<bytes::Bytes, UpstreamError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {bearer}")).map_err(|_| UpstreamError::Unauthorized {
            message: "the bearer token is not a valid header value".into(),
        })?;
        auth.set_sensitive(true);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("Ocp-Apim-Subscription-Key", (*self.api_key).clone())
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_vec());
        }
        let mut trace_context = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_trace_context(&mut trace_context);
        let resp = req.headers(trace_context).send().await.map_err(UpstreamError::from_transport)?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(UpstreamError::from_transport)?;
        if status.is_success() { Ok(bytes) } else { Err(UpstreamError::from_status(status, retry_after, &bytes)) }
    }

    /// The send path: reads are retried on transient failures with exponential backoff; commands
    /// are sent once.
    async fn send(
        &self,
        kind: Kind,
        method: Method,
        segments: &[&str],
        bearer: &str,
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, UpstreamError> {
        let url = self.url(segments)?;
        let span = upstream_span(&method, segments);
        let attempts = AtomicUsize::new(0);
        let once = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(&method, &url, bearer, body.as_deref())
        };
        let started = std::time::Instant::now();
        let result = match kind {
            Kind::Command => once().instrument(span.clone()).await,
            Kind::Read => {
                once.retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(50))
                        .with_max_delay(Duration::from_secs(1))
                        .with_max_times(self.read_retries)
                        .with_jitter(),
                )
                .when(UpstreamError::is_transient)
                .instrument(span.clone())
                .await
            }
        };
        span.record("http.request.resend_count", attempts.into_inner().saturating_sub(1));
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        let elapsed = started.elapsed();
        let ms = elapsed.as_millis() as u64;
        self.metrics.upstream_seconds.observe(elapsed.as_secs_f64());
        let kind_label = if kind == Kind::Read { "read" } else { "command" };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.upstream_calls.with_label_values(&[kind_label, outcome]).inc();
        match &result {
            Ok(_) => tracing::debug!(%method, path = url.path(), ms, "upstream call"),
            Err(e) => tracing::warn!(%method, path = url.path(), ms, error = %e, "upstream call failed"),
        }
        result
    }

    /// A call whose answer is JSON of type `T`, read by [`tolerant::decode`]: a member of an
    /// unexpected type reads as absent (and is logged), an unreadable id fails the call.
    pub(crate) async fn json<T: DeserializeOwned + Serialize, B: Serialize + ?Sized>(
        &self,
        kind: Kind,
        method: Method,
        segments: &[&str],
        bearer: &str,
        body: Option<&B>,
    ) -> Result<T, UpstreamError> {
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| UpstreamError::Decode(e.to_string()))?;
        let bytes = self.send(kind, method.clone(), segments, bearer, body).await?;
        tolerant::decode(&bytes, || format!("{method} /{}", segments.join("/"))).map_err(UpstreamError::Decode)
    }

    /// A call whose answer carries nothing we need (202, 204, or a body we ignore).
    pub(crate) async fn empty<B: Serialize + ?Sized>(
        &self,
        kind: Kind,
        method: Method,
        segments: &[&str],
        bearer: &str,
        body: Option<&B>,
    ) -> Result<(), UpstreamError> {
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| UpstreamError::Decode(e.to_string()))?;
        self.send(kind, method, segments, bearer, body).await.map(|_| ())
    }
}

/// No request body.
pub(crate) const NO_BODY: Option<&()> = None;

/// The span of one upstream call, retries included: named for OpenTelemetry after the method and
/// the route template, never the ids (bounded names, and no caller data in them).
fn upstream_span(method: &Method, segments: &[&str]) -> tracing::Span {
    let route = route_template(segments);
    let span = tracing::info_span!(
        "upstream",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        // OpenTelemetry's name for the retry count.
        http.request.resend_count = tracing::field::Empty,
    );
    crate::telemetry::name_for_export(&span, || format!("{method} {route}"), Some("client"));
    span
}

/// The route template of a call's path (`/installations/{i}/charging-stations`), with the
/// simulator's names for the ids: the segment after a collection is an id, except `operators`
/// (and what follows it, an operation's name).
fn route_template(segments: &[&str]) -> String {
    let mut route = String::new();
    let mut previous = "";
    for segment in segments {
        route.push('/');
        match id_name(previous) {
            Some(id) if *segment != "operators" => route.push_str(&format!("{{{id}}}")),
            _ => route.push_str(segment),
        }
        previous = segment;
    }
    route
}

/// What the id following `collection` is called in route templates.
fn id_name(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "installations" => "i",
        "charging-stations" => "cs",
        "grid-meters" => "gm",
        "logs" => "l",
        "measures" => "m",
        "tariffs" => "t",
        "invitations" => "email",
        "event-subscriptions" | "users" => "id",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn route_templates_name_the_route_not_the_ids() {
        let cases: [(&[&str], &str); 5] = [
            (&["installations"], "/installations"),
            (&["installations", "33", "charging-stations"], "/installations/{i}/charging-stations"),
            (
                &["installations", "33", "charging-stations", "cs-1", "logs", "operators", "list"],
                "/installations/{i}/charging-stations/{cs}/logs/operators/list",
            ),
            (
                &["installations", "33", "grid-meters", "gm", "measures", "7", "operators", "sum"],
                "/installations/{i}/grid-meters/{gm}/measures/{m}/operators/sum",
            ),
            (&["installations", "33", "event-subscriptions", "e-9"], "/installations/{i}/event-subscriptions/{id}"),
        ];
        for (segments, template) in cases {
            assert_eq!(route_template(segments), template);
        }
    }
}
