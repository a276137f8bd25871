//! Logs and traces: the process's `tracing` subscriber (text or JSON lines on stderr, and
//! OpenTelemetry over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), the request id every
//! response carries, and the W3C trace context read from requests and sent upstream.
//!
//! Every span and log line here carries only what is safe to keep: methods, redacted paths, route
//! templates, statuses, the request id. Never a token, an API key or a webhook secret.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Request};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// The standard variable naming the OTLP collector (its base URL; traces go to `/v1/traces`).
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The longest request id taken from a caller; a longer one is replaced (it goes in every log
/// line of the request).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object a line, with the fields of the spans it happened in (`request_id`).
    Json,
}

/// What must outlive the server: the tracer provider, whose last batch is sent on shutdown.
#[must_use = "dropping it loses the spans still batched: call `shutdown`"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still batched and stops the exporter. It blocks (the batch thread waits
    /// for the export, which runs on the tokio runtime): call it from a blocking thread.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("witty-bff: the last traces could not be exported: {e}");
        }
    }
}

/// Installs the process's subscriber: the `RUST_LOG` filter (default `info`), log lines in
/// `format` on stderr, and OpenTelemetry when [`OTLP_ENDPOINT_VAR`] is set (nothing is built
/// otherwise). Must run inside the tokio runtime when OpenTelemetry is on.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let endpoint = std::env::var(OTLP_ENDPOINT_VAR).ok().filter(|e| !e.trim().is_empty());
    let (otel, provider) = match endpoint {
        Some(endpoint) => {
            let (layer, provider) = otel_layer(&endpoint)?;
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    // Colours are escape codes in a file or a log collector.
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(filter)
        .with(log_layer(format, std::io::stderr, ansi))
        .with(otel)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry { provider })
}

/// The layer writing log lines to `writer`.
pub fn log_layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).boxed(),
        // The whole span list, not the current span alone: `request_id` is on the request's span,
        // and a line logged in an upstream call's span must carry it too.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
    }
}

/// The OpenTelemetry layer exporting to the OTLP/HTTP collector at `endpoint` (its base URL), and
/// its provider (flush and shut it down). Also installs the W3C TraceContext propagator, which
/// reads `traceparent` from requests and writes it on upstream calls (the default propagator
/// does neither, so nothing is sent while OpenTelemetry is off). Must run inside the tokio
/// runtime, where the exports are sent.
pub fn otel_layer<S>(endpoint: &str) -> anyhow::Result<(OpenTelemetryLayer<S, SdkTracer>, SdkTracerProvider)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let runtime = tokio::runtime::Handle::try_current().context("OpenTelemetry needs the tokio runtime")?;
    let http = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build().context("OTLP HTTP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime { http, runtime })
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("cannot export traces to {OTLP_ENDPOINT_VAR}={endpoint}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    // `OTEL_SERVICE_NAME` wins when set (the builder reads it).
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("witty-bff");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Relaxed);
    let tracer = provider.tracer("witty-bff");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// Whether spans are exported: their OpenTelemetry names are recorded only then, so that log
/// lines do not repeat them.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Names `span` (declared with empty `otel.name` and `otel.kind`) for OpenTelemetry, when spans
/// are exported (`name` is only made then).
pub(crate) fn name_for_export(span: &tracing::Span, name: impl FnOnce() -> String, kind: Option<&str>) {
    if EXPORTING.load(Ordering::Relaxed) {
        span.record("otel.name", name().as_str());
        if let Some(kind) = kind {
            span.record("otel.kind", kind);
        }
    }
}

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client: the crate's own reqwest, its requests run on the tokio runtime.
/// The SDK's batch processor exports from its own thread, where reqwest's async client has no
/// reactor; reqwest's blocking client would bring a second runtime instead.
#[derive(Debug)]
struct OnRuntime {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, HttpError> {
        let http = self.http.clone();
        self.runtime.spawn(async move { http.send_bytes(request).await }).await?
    }
}

/// The request's span: the one every log line of the request happens in, named for
/// OpenTelemetry after the method and the (already redacted) `path`, continuing the caller's
/// trace when it sent a `traceparent`.
pub(crate) fn http_span<B>(req: &Request<B>, path: &str) -> tracing::Span {
    let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path,
        request_id,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    name_for_export(&span, || format!("{} {path}", req.method()), Some("server"));
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    // Fails only when OpenTelemetry is off: then there is no trace to continue.
    let _ = span.set_parent(parent);
    span
}

/// Writes the current span's trace context (`traceparent`) into `headers`, when OpenTelemetry
/// is on.
pub(crate) fn inject_trace_context(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

const REQUEST_ID: &str = "x-request-id";

/// Whether a caller's request id may be kept: at most [`MAX_REQUEST_ID_LEN`] visible ASCII
/// characters (it is echoed and logged as is).
pub fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// Drops a request id we will not keep (or several), so that a new one is made.
fn drop_insane_request_id<B>(mut req: Request<B>) -> Request<B> {
    let ids = req.headers().get_all(REQUEST_ID);
    let mut ids = ids.iter();
    let keep = matches!((ids.next(), ids.next()), (Some(id), None) if is_sane_request_id(id));
    if !keep {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// The request id and the request's span on every route of a router.
pub(crate) trait Traced {
    /// `x-request-id` taken from the request (when sane) or made (a UUID), echoed on the
    /// response, and recorded in the request's span; `redact` gives the path fit for logs.
    fn traced(self, redact: fn(&str) -> String) -> Self;
}

impl Traced for Router {
    fn traced(self, redact: fn(&str) -> String) -> Router {
        // Outermost first: the id is settled before the span is made, and echoed on every answer.
        self.layer(
            tower::ServiceBuilder::new()
                .map_request(drop_insane_request_id::<axum::body::Body>)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    TraceLayer::new_for_http().make_span_with(move |req: &Request<axum::body::Body>| {
                        http_span(req, &redact(req.uri().path()))
                    }),
                ),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    /// A writer into a shared buffer.
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A request through the traced router with JSON logs captured: the log lines.
    async fn json_lines_of(request: Request<axum::body::Body>) -> (axum::http::Response<axum::body::Body>, String) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || Captured(buf.clone())
        };
        let subscriber = tracing_subscriber::registry()
            .with(log_layer(LogFormat::Json, writer, false))
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        // The test runs on one thread, where this subscriber is the default.
        let _default = tracing::subscriber::set_default(subscriber);
        let router = Router::new()
            .route("/hello", get(|| async { tracing::info!(answer = "ok", "handled") }))
            .traced(|p| p.to_string());
        let response = router.oneshot(request).await.unwrap();
        let lines = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        (response, lines)
    }

    #[tokio::test]
    async fn a_json_log_line_of_a_request_carries_its_request_id() {
        let request = Request::get("/hello").header("x-request-id", "abc-123").body(Default::default()).unwrap();
        let (response, lines) = json_lines_of(request).await;
        assert_eq!(response.headers()["x-request-id"], "abc-123");
        let line = lines.lines().find(|l| l.contains("handled")).unwrap_or_else(|| panic!("no line: {lines}"));
        assert!(line.contains(r#""request_id":"abc-123""#), "{line}");
        let json: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        assert_eq!(json["message"], "handled");
        assert_eq!(json["answer"], "ok");
    }

    #[tokio::test]
    async fn an_insane_request_id_is_replaced_by_a_uuid_in_the_answer_and_the_logs() {
        for bad in ["has space", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
            let request = Request::get("/hello").header("x-request-id", bad).body(Default::default()).unwrap();
            let (response, lines) = json_lines_of(request).await;
            let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} gave {id}");
            assert!(lines.contains(&format!(r#""request_id":"{id}""#)) && !lines.contains(bad), "{lines}");
        }
        let twice = Request::get("/hello")
            .header("x-request-id", "a")
            .header("x-request-id", "b")
            .body(Default::default())
            .unwrap();
        let id = json_lines_of(twice).await.0.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    #[test]
    fn request_ids_of_visible_ascii_up_to_128_characters_are_kept() {
        let ok = |s: &str| is_sane_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123") && ok(&"a".repeat(128)) && ok("{}~!"));
        assert!(!ok("") && !ok("a b") && !ok(&"a".repeat(129)) && !ok("tab\there"));
        assert!(!is_sane_request_id(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
    }
}
