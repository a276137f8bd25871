//! What witty-bff counts, served on `GET /metrics` in the Prometheus text format (the `prometheus`
//! crate). One [`Metrics`] per process (per app in tests): its own registry, no global state.
//! Request metrics have bounded labels only: the transport, the operation's type (never its
//! name) and an outcome from a fixed list of codes.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    /// Live watches: GraphQL subscriptions (`stationEvents`, `chargingStationUpdated`) being
    /// served, and commands waiting for their outcome.
    pub live_subscriptions: IntGauge,
    /// Installations with at least one live subscription.
    pub watched_installations: IntGauge,
    /// Watched installations on the polling fallback.
    pub polled_installations: IntGauge,
    /// Upstream event subscriptions of ours that could not be removed yet (their holder's token
    /// had expired): each goes with its holder's next token.
    pub unremoved_upstream_subscriptions: IntGauge,
    /// Upstream event subscriptions of ours given up (refused, or every try failed): left
    /// upstream, to remove by hand (the log names each).
    pub abandoned_upstream_subscriptions: IntCounter,
    /// Webhook deliveries accepted, by `aeg-event-type`.
    pub webhook_deliveries: IntCounterVec,
    /// Webhook events, by outcome: `published`, `duplicate`, or `replaced_subscription` (from a
    /// subscription of ours being replaced).
    pub events: IntCounterVec,
    /// Subscribers dropped because they fell too far behind.
    pub lagging_subscribers_dropped: IntCounter,
    /// Upstream calls, by kind (`read`, `command`) and outcome (`ok`, `error`).
    pub upstream_calls: IntCounterVec,
    /// Upstream call duration, retries included.
    pub upstream_seconds: Histogram,
    /// Shared-cache lookups, by outcome: `hit` or `miss` (a miss is one upstream read, however
    /// many callers waited on it).
    pub cache_lookups: IntCounterVec,
    /// Queries answered over HTTP, by what the response cache did: `hit` (a kept answer, still
    /// current), `kept` (executed and kept), `unkept` (executed; not to be kept: errors, reads
    /// that cannot be checked later, or not a query of a verified caller).
    pub response_cache: IntCounterVec,
    /// Requests refused by the per-caller rate limit, by `transport`: `http` (a `/graphql`
    /// request, SSE included) or `websocket` (a `subscribe`).
    pub rate_limited: IntCounterVec,
    /// In a fleet: 1 while this replica reaches Redis (events, invalidations and idempotency keys
    /// are shared), 0 while it works on its own state.
    pub fleet_connected: IntGauge,
    /// In a fleet: operations that could not use Redis and fell back to the replica's own state,
    /// by `part` (`events`, `idempotency`, `invalidation`, `lease`, `barrier`).
    pub fleet_fallbacks: IntCounterVec,
    /// GraphQL operations, by `transport` (`http`, `sse`, `websocket`), `operation` (its type, or
    /// `unknown`) and `outcome` (`ok`, or the first error's code among [`KNOWN_CODES`], else
    /// `other`). A stream counts once, at its first result.
    pub requests: IntCounterVec,
    /// Time to the answer (to the first result for a stream), by `transport` and `operation`.
    pub request_seconds: HistogramVec,
    /// WebSocket connections open on `/graphql`.
    pub websocket_connections: IntGauge,
    /// GraphQL-over-SSE streams open.
    pub sse_streams: IntGauge,
}

/// The error codes a request's outcome may be; any other code is `other`, so that what a client
/// or a future error sends cannot grow the label's values.
pub(crate) const KNOWN_CODES: [&str; 11] = [
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "UPSTREAM_UNAVAILABLE",
    "UPSTREAM_ERROR",
    "QUERY_TOO_COMPLEX",
    "INTERNAL",
    "PERSISTED_QUERY_NOT_FOUND",
];

/// How a GraphQL operation came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Http,
    Sse,
    WebSocket,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("witty_bff".into()), None).expect("a valid prefix");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let live_subscriptions =
            gauge("live_subscriptions", "GraphQL subscriptions being served and commands waiting for their outcome.");
        let watched_installations =
            gauge("watched_installations", "Installations with at least one live subscription.");
        let polled_installations = gauge("polled_installations", "Watched installations on the polling fallback.");
        let unremoved_upstream_subscriptions = gauge(
            "unremoved_upstream_subscriptions",
            "Upstream event subscriptions of ours not removed yet, waiting for their holder's next token.",
        );
        let abandoned_upstream_subscriptions = counter(
            "abandoned_upstream_subscriptions_total",
            "Upstream event subscriptions of ours given up, left upstream to remove by hand (see the log).",
        );
        let webhook_deliveries =
            counters("webhook_deliveries_total", "Webhook deliveries accepted, by aeg-event-type.", &["kind"]);
        let events = counters("events_total", "Webhook events, by outcome.", &["outcome"]);
        let lagging =
            counter("lagging_subscribers_dropped_total", "Subscribers dropped because they fell too far behind.");
        let upstream_calls =
            counters("upstream_calls_total", "Calls to the Witty-Home API, by kind and outcome.", &["kind", "outcome"]);
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new("upstream_call_seconds", "Duration of calls to the Witty-Home API, retries included.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("a valid metric");
        registry.register(Box::new(upstream_seconds.clone())).expect("registered once");
        let cache_lookups = counters("cache_lookups_total", "Shared-cache lookups, by outcome.", &["outcome"]);
        let response_cache =
            counters("response_cache_total", "Queries over HTTP, by what the response cache did.", &["outcome"]);
        let rate_limited = counters(
            "rate_limited_requests_total",
            "Requests refused by the per-caller rate limit, by transport.",
            &["transport"],
        );
        let fleet_connected = gauge("fleet_connected", "1 while this replica of a fleet reaches Redis, else 0.");
        let fleet_fallbacks = counters(
            "fleet_fallbacks_total",
            "Operations of a fleet replica that could not use Redis and used its own state, by part.",
            &["part"],
        );
        let (requests, request_seconds) = request_metrics(&registry);
        let websocket_connections = gauge("websocket_connections", "WebSocket connections open on /graphql.");
        let sse_streams = gauge("sse_streams", "GraphQL-over-SSE streams open.");
        register_process_metrics(&registry);
        Arc::new(Metrics {
            registry,
            live_subscriptions,
            watched_installations,
            polled_installations,
            unremoved_upstream_subscriptions,
            abandoned_upstream_subscriptions,
            webhook_deliveries,
            events,
            lagging_subscribers_dropped: lagging,
            upstream_calls,
            upstream_seconds,
            cache_lookups,
            response_cache,
            rate_limited,
            fleet_connected,
            fleet_fallbacks,
            requests,
            request_seconds,
            websocket_connections,
            sse_streams,
        })
    }

    /// Counts one operation and the time it took.
    pub(crate) fn observe(&self, transport: Transport, operation: &str, outcome: &str, took: Duration) {
        let transport = transport.label();
        self.requests.with_label_values(&[transport, operation, outcome]).inc();
        self.request_seconds.with_label_values(&[transport, operation]).observe(took.as_secs_f64());
    }

    /// Every metric, in the Prometheus text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn request_metrics(registry: &Registry) -> (IntCounterVec, HistogramVec) {
    let requests = IntCounterVec::new(
        Opts::new("requests_total", "GraphQL operations, by transport, operation type and outcome code."),
        &["transport", "operation", "outcome"],
    )
    .expect("a valid metric");
    let seconds = HistogramVec::new(
        HistogramOpts::new(
            "request_seconds",
            "Time to a GraphQL operation's answer (a stream's first result), by transport and operation type.",
        )
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        &["transport", "operation"],
    )
    .expect("a valid metric");
    registry.register(Box::new(requests.clone())).expect("registered once");
    registry.register(Box::new(seconds.clone())).expect("registered once");
    (requests, seconds)
}

/// The process's resident memory, CPU time and open file descriptors (from `/proc`, so on Linux
/// only), as `witty_bff_process_*`: in the app's own registry, so that each app of a test
/// process has them without a global one.
fn register_process_metrics(registry: &Registry) {
    #[cfg(target_os = "linux")]
    if let Err(e) = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
        tracing::warn!(error = %e, "the process metrics are not available");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

/// The type of the operation `request` runs: `query`, `mutation`, `subscription`, or `unknown`
/// when the document does not parse or names no single operation (a hash-only persisted query
/// before it was looked up included).
pub(crate) fn operation_type(request: &async_graphql::Request) -> &'static str {
    // Read off the document's top-level words rather than parsed: the schema parses it again
    // anyway, and a second parse on every request costs the warm path more than the label is
    // worth. A document the schema will refuse may get a label here; it is counted by its outcome.
    let operations = top_level_operations(&request.query);
    let chosen = match request.operation_name.as_deref() {
        Some(name) => operations.iter().find(|(_, n)| *n == Some(name)),
        None if operations.len() == 1 => operations.first(),
        None => None,
    };
    chosen.map_or("unknown", |(ty, _)| ty)
}

/// The operations of a GraphQL document (type and name) from its words outside any braces,
/// parentheses, strings and comments; none when its brackets do not balance.
fn top_level_operations(query: &str) -> Vec<(&'static str, Option<&str>)> {
    let bytes = query.as_bytes();
    let (mut ops, mut depth, mut i) = (Vec::new(), 0usize, 0);
    // In a definition's head (after `query`, `mutation`, `subscription` or `fragment`, before its
    // selection), and whether the operation's name may come next.
    let (mut head, mut naming) = (false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = bytes[i..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |n| i + n),
            b'"' => i = past_string(bytes, i),
            b'{' if depth == 0 => {
                if !head {
                    ops.push(("query", None));
                }
                (head, naming) = (false, false);
                depth += 1;
                i += 1;
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b')' | b']' => {
                let Some(d) = depth.checked_sub(1) else { return Vec::new() };
                depth = d;
                i += 1;
            }
            c if depth == 0 && (c.is_ascii_alphabetic() || c == b'_') => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                let (word, directive) = (&query[i..end], i > 0 && bytes[i - 1] == b'@');
                let kind = match word {
                    "query" => Some("query"),
                    "mutation" => Some("mutation"),
                    "subscription" => Some("subscription"),
                    _ => None,
                };
                match kind {
                    Some(ty) if !head => {
                        ops.push((ty, None));
                        (head, naming) = (true, true);
                    }
                    _ if !head && word == "fragment" => (head, naming) = (true, false),
                    _ if naming && !directive => {
                        if let Some(last) = ops.last_mut() {
                            last.1 = Some(word);
                        }
                        naming = false;
                    }
                    _ => naming = false,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    if depth == 0 { ops } else { Vec::new() }
}

/// Where a string starting at `i` (`"…"` or a block string `"""…"""`) ends.
fn past_string(bytes: &[u8], i: usize) -> usize {
    if bytes[i..].starts_with(b"\"\"\"") {
        let mut j = i + 3;
        while j < bytes.len() {
            if bytes[j..].starts_with(b"\\\"\"\"") {
                j += 4;
            } else if bytes[j..].starts_with(b"\"\"\"") {
                return j + 3;
            } else {
                j += 1;
            }
        }
        return bytes.len();
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

/// The outcome label of a response: `ok`, or its first error's code when known. An error with
/// no code yet counts as `BAD_USER_INPUT`, the code `graphql::error::with_codes` gives it before
/// it is sent.
pub(crate) fn outcome(response: &async_graphql::Response) -> &'static str {
    let Some(first) = response.errors.first() else { return "ok" };
    match first.extensions.as_ref().and_then(|e| e.get("code")) {
        None => "BAD_USER_INPUT",
        Some(async_graphql::Value::String(code)) => known_code(code),
        Some(_) => "other",
    }
}

/// The outcome label of a response already rendered to JSON (shared WebSocket answers).
pub(crate) fn rendered_outcome(json: &str) -> &'static str {
    // Most answers have no errors: only those are read again.
    if !json.contains("\"errors\"") {
        return "ok";
    }
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    match value["errors"].get(0) {
        None => "ok",
        Some(first) => first["extensions"]["code"].as_str().map_or("other", known_code),
    }
}

fn known_code(code: &str) -> &'static str {
    KNOWN_CODES.iter().find(|known| **known == code).copied().unwrap_or("other")
}

/// A stream of results counted once, at its first result (by `outcome`), or when it ends without
/// one (as `ok`: the client ended it, or it had nothing to say).
pub(crate) struct Measured<S, F> {
    inner: S,
    outcome: F,
    pending: Option<Pending>,
    /// A gauge held up while the stream lives.
    _open: Option<Open>,
}

struct Pending {
    metrics: Arc<Metrics>,
    transport: Transport,
    operation: &'static str,
    started: Instant,
}

impl Pending {
    fn observe(self, outcome: &str) {
        self.metrics.observe(self.transport, self.operation, outcome, self.started.elapsed());
    }
}

impl<S, F> Measured<S, F> {
    pub(crate) fn new(
        inner: S,
        outcome: F,
        metrics: Arc<Metrics>,
        transport: Transport,
        operation: &'static str,
    ) -> Self {
        let pending = Some(Pending { metrics, transport, operation, started: Instant::now() });
        Measured { inner, outcome, pending, _open: None }
    }

    /// Keeps `open` until the stream is dropped (the client left, or it ended).
    pub(crate) fn holding(mut self, open: Open) -> Self {
        self._open = Some(open);
        self
    }
}

impl<S, F> Stream for Measured<S, F>
where
    S: Stream + Unpin,
    F: Fn(&S::Item) -> &'static str + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(item) = &polled
            && let Some(pending) = self.pending.take()
        {
            pending.observe(item.as_ref().map_or("ok", |item| (self.outcome)(item)));
        }
        polled
    }
}

impl<S, F> Drop for Measured<S, F> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.observe("ok");
        }
    }
}

/// Holds a gauge one higher while it lives (an open WebSocket, an SSE stream).
pub(crate) struct Open(IntGauge);

impl Open {
    pub(crate) fn new(gauge: &IntGauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_labels() {
        let m = Metrics::new();
        m.live_subscriptions.inc();
        m.events.with_label_values(&["duplicate"]).inc();
        let text = m.render();
        assert!(text.contains("witty_bff_live_subscriptions 1"), "{text}");
        assert!(text.contains(r#"witty_bff_events_total{outcome="duplicate"} 1"#), "{text}");
        assert!(text.contains("# TYPE witty_bff_upstream_call_seconds histogram"), "{text}");
    }

    #[test]
    fn outcomes_are_ok_a_known_code_or_other() {
        let coded = |code: &str| {
            let mut e = async_graphql::ServerError::new("no", None);
            e.extensions.get_or_insert_with(Default::default).set("code", code);
            async_graphql::Response::from_errors(vec![e])
        };
        assert_eq!(outcome(&async_graphql::Response::new(async_graphql::Value::Null)), "ok");
        assert_eq!(outcome(&coded("FORBIDDEN")), "FORBIDDEN");
        assert_eq!(outcome(&coded("SOMETHING_A_CLIENT_MADE_UP")), "other");
        let uncoded = async_graphql::Response::from_errors(vec![async_graphql::ServerError::new("no", None)]);
        assert_eq!(outcome(&uncoded), "BAD_USER_INPUT");
        assert_eq!(rendered_outcome(r#"{"data":{"a":1}}"#), "ok");
        assert_eq!(rendered_outcome(r#"{"data":null,"errors":[{"extensions":{"code":"NOT_FOUND"}}]}"#), "NOT_FOUND");
        assert_eq!(rendered_outcome(r#"{"errors":[{"message":"x"}]}"#), "other");
    }

    #[test]
    fn the_operation_type_is_parsed_and_never_named() {
        let of = |q: &str, name: Option<&str>| {
            let mut request = async_graphql::Request::new(q);
            request.operation_name = name.map(str::to_string);
            operation_type(&request)
        };
        assert_eq!(of("{ a }", None), "query");
        assert_eq!(of("mutation M { a }", None), "mutation");
        assert_eq!(of("query A { a } subscription B { b }", Some("B")), "subscription");
        assert_eq!(of("query A { a } query B { b }", None), "unknown");
        assert_eq!(of("{ oops", None), "unknown");
        assert_eq!(of("query Q($a: [Int] = [1]) @cached { a(s: \"mutation {\") }", None), "query");
        assert_eq!(of("# mutation M\nsubscription S { e }", None), "subscription");
        assert_eq!(of("fragment F on Q { a } mutation M { ...F }", Some("M")), "mutation");
        assert_eq!(of("query @d { a } mutation M { b }", Some("M")), "mutation");
        assert_eq!(of("{ a(s: \"\"\"block \\\"\"\" } mutation\"\"\") }", None), "query");
        assert_eq!(of("query A { a }", Some("B")), "unknown");
        assert_eq!(of("} {", None), "unknown");
    }

    #[test]
    fn request_and_process_metrics_render() {
        let m = Metrics::new();
        m.observe(Transport::WebSocket, "subscription", "ok", Duration::from_millis(3));
        let text = m.render();
        let counted = r#"witty_bff_requests_total{operation="subscription",outcome="ok",transport="websocket"} 1"#;
        assert!(text.contains(counted), "{text}");
        assert!(text.contains("witty_bff_request_seconds_bucket{operation=\"subscription\",transport=\"websocket\""));
        #[cfg(target_os = "linux")]
        assert!(text.contains("witty_bff_process_resident_memory_bytes "), "{text}");
    }
}
