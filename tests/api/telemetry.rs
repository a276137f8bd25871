//! Request ids, JSON logs and OpenTelemetry traces. The log format and OpenTelemetry are set up
//! once per process by `main`, and this binary's tracing subscriber is the test harness's, so
//! those run the real `witty-bff` binary (on the embedded simulator) and read what it writes and
//! exports; request ids are checked in process.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::helpers::*;

/// A caller's trace context (W3C Trace Context's example).
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const QUERY: &str = "query Dashboard { installations { id chargingStations { friendlyName } } }";

#[tokio::test]
async fn every_answer_echoes_the_callers_request_id_or_a_new_uuid() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let paths = [
        ("POST", "/graphql"),
        ("GET", "/healthz"),
        ("GET", "/no-such-page"),
        ("POST", "/webhooks/witty/not-our-secret"),
    ];
    for (method, path) in paths {
        let request = |id: Option<&str>| {
            let mut r = app.client.request(method.parse().unwrap(), format!("{}{path}", app.base));
            if path == "/graphql" {
                r = r.bearer_auth(&token).json(&json!({ "query": QUERY })).header("traceparent", TRACEPARENT);
            }
            if let Some(id) = id {
                r = r.header("x-request-id", id);
            }
            r.send()
        };
        let echoed = request(Some("abc-123")).await.unwrap();
        assert_eq!(echoed.headers()["x-request-id"], "abc-123", "{method} {path}");
        for id in [None, Some("has space"), Some(&*"x".repeat(129))] {
            let made = request(id).await.unwrap();
            let made = made.headers()["x-request-id"].to_str().unwrap();
            assert!(uuid::Uuid::parse_str(made).is_ok(), "{method} {path} with {id:?}: {made}");
        }
    }
    // A refused GraphQL request (no token, not JSON) too.
    let refused = app.client.post(format!("{}/graphql", app.base)).header("x-request-id", "bad-1").body("{").send();
    assert_eq!(refused.await.unwrap().headers()["x-request-id"], "bad-1");
    // Without OTEL_EXPORTER_OTLP_ENDPOINT no trace context is propagated.
    let calls = app.sim().calls().await;
    assert!(calls["total"].as_u64() > Some(0) && calls["lastTraceparent"].is_null(), "{calls}");
}

/// A `witty-bff` process on the embedded simulator, with its output read line by line.
struct Served {
    child: Child,
    base: String,
    simulator: String,
    token: String,
    stderr: Lines<BufReader<ChildStderr>>,
    /// Kept open: witty-bff fails on a closed stdout.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Served {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_witty-bff"))
            .args(["--listen", "127.0.0.1:0"])
            // Only what the test sets: no OTLP endpoint or log settings from the environment.
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("witty-bff runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = after(&mut stdout, "serving GraphQL on ").await.trim_end_matches("/graphql").to_string();
        let simulator = after(&mut stdout, "embedded Witty-Home simulator at ").await;
        let token = after(&mut stdout, "Authorization: Bearer ").await;
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Served { child, base, simulator, token, stderr, _stdout: stdout }
    }

    async fn graphql(&self, headers: &[(&str, &str)]) -> Value {
        let mut request = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"query": QUERY}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Stops it as an orchestrator would (SIGTERM) and waits for it to exit.
    async fn stop(mut self) -> Lines<BufReader<ChildStderr>> {
        let pid = self.child.id().expect("still running").to_string();
        let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("exits").unwrap();
        assert!(status.success(), "{status}");
        self.stderr
    }
}

/// What follows `marker` on the next line of `lines` that has it.
async fn after(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) -> String {
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once(marker) {
                return rest.trim().to_string();
            }
        }
        panic!("witty-bff never printed {marker:?}");
    };
    tokio::time::timeout(PATIENCE, find).await.expect("witty-bff starts")
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_and_carry_the_request_id() {
    let served = Served::start(&[("WITTY_BFF_LOG_FORMAT", "json"), ("RUST_LOG", "info,tower_http=debug")]).await;
    let token = served.token.clone();
    let answer = served.graphql(&[("x-request-id", "abc-123")]).await;
    assert!(answer["errors"].is_null(), "{answer}");
    let mut stderr = served.stop().await;
    let mut of_request = Vec::new();
    while let Some(line) = stderr.next_line().await.unwrap() {
        let object: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object.is_object() && !line.contains('\u{1b}'), "{line}");
        assert!(!line.contains(&token) && !line.contains(witty_bff::simulator::DEV_API_KEY), "{line}");
        if line.contains(r#""request_id":"abc-123""#) {
            of_request.push(object);
        }
    }
    // tower-http's lines of the request's start and end, at least.
    assert!(of_request.len() >= 2, "{of_request:?}");
}

/// An OTLP/HTTP collector: what it was sent on `POST /v1/traces`, decoded.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    async fn start(&self) -> String {
        let spans = self.0.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            post(move |body: bytes::Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let sent = request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
                spans.lock().unwrap().extend(sent);
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::new())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

/// A span attribute's value, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn traces_continue_the_callers_trace_through_the_operation_to_the_upstream_calls() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let served = Served::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("RUST_LOG", "info")]).await;
    let (trace_id, parent_id) = (&TRACEPARENT[3..35], &TRACEPARENT[36..52]);
    let answer = served.graphql(&[("traceparent", TRACEPARENT)]).await;
    assert!(answer["errors"].is_null(), "{answer}");
    // The simulator was sent the trace, as a child of one of ours.
    let calls: Value = reqwest::get(format!("{}/_sim/calls", served.simulator)).await.unwrap().json().await.unwrap();
    let sent = calls["lastTraceparent"].as_str().unwrap_or_else(|| panic!("no traceparent upstream: {calls}"));
    assert!(sent.starts_with(&format!("00-{trace_id}-")) && !sent.contains(parent_id), "{sent}");
    let token = served.token.clone();
    // The last spans are flushed on shutdown.
    let _stderr = served.stop().await;

    let spans = collector.spans();
    let hex = |id: &[u8]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let named = |name: &str| in_trace.iter().copied().find(|s| s.name == name);
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let server = named("POST /graphql").unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(hex(&server.parent_span_id), parent_id);
    let operation = named("query Dashboard").unwrap_or_else(|| panic!("no operation span in {names:?}"));
    assert_eq!(attribute(operation, "graphql.operation.type").as_deref(), Some("query"));
    let upstream = named("GET /installations").unwrap_or_else(|| panic!("no upstream span in {names:?}"));
    assert_eq!(attribute(upstream, "http.route").as_deref(), Some("/installations"));
    assert_eq!(attribute(upstream, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(upstream, "http.request.resend_count").as_deref(), Some("0"));
    let stations = named("GET /installations/{i}/charging-stations").unwrap_or_else(|| panic!("{names:?}"));
    // Every upstream call of the operation is under it (batched loads included).
    for call in [upstream, stations] {
        let mut up = call;
        while up.span_id != operation.span_id {
            up = in_trace.iter().find(|s| s.span_id == up.parent_span_id).unwrap_or_else(|| panic!("{names:?}"));
        }
    }
    // No secret in any attribute.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(&token) && !everything.contains(witty_bff::simulator::DEV_API_KEY));
}
