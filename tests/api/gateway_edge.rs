//! What a gateway in front of browsers and operators gives: CORS on `/graphql`, compressed
//! answers (never an SSE stream), a `/readyz` that does not fail on the shared upstream, and
//! request metrics by transport, operation type and outcome.

use std::io::Read;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::helpers::*;

const APP_ORIGIN: &str = "https://app.example.com";

/// A CORS preflight for a POST to `path` from `origin`, with the headers Apollo Client and a
/// tracing front end send.
async fn preflight(app: &TestApp, path: &str, origin: &str) -> Response {
    app.client
        .request(Method::OPTIONS, format!("{}{path}", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,idempotency-key,traceparent")
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_the_cors_headers_and_another_none() {
    let app = spawn_app_with(|c| c.cors_origins = Some(format!("{APP_ORIGIN}, http://localhost:5173"))).await;
    let allowed = preflight(&app, "/graphql", APP_ORIGIN).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some(APP_ORIGIN));
    let methods = header(&allowed, "access-control-allow-methods").unwrap().to_ascii_lowercase();
    assert!(methods.contains("post") && methods.contains("get"), "{methods}");
    let headers = header(&allowed, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key", "traceparent", "tracestate", "x-request-id"] {
        assert!(headers.contains(name), "{name} in {headers}");
    }

    let token = app.token_for("alice");
    let query = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("origin", APP_ORIGIN)
        .bearer_auth(&token)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&query, "access-control-allow-origin"), Some(APP_ORIGIN));
    let exposed = header(&query, "access-control-expose-headers").unwrap().to_ascii_lowercase();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{exposed}");

    let other = preflight(&app, "/graphql", "https://evil.example").await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    // Webhooks come from servers: no CORS there, whatever the origin.
    let webhook = preflight(&app, &app.webhook_of(ALICE_INSTALLATION).replace(&app.base, ""), APP_ORIGIN).await;
    assert_eq!(header(&webhook, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_the_setting_there_are_no_cors_headers_and_any_origin_is_a_star() {
    let app = spawn_app().await;
    let r = preflight(&app, "/graphql", APP_ORIGIN).await;
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", r.headers());

    let any = spawn_app_with(|c| c.cors_origins = Some("*".into())).await;
    assert_eq!(
        header(&preflight(&any, "/graphql", "https://anyone.example").await, "access-control-allow-origin"),
        Some("*")
    );
}

#[tokio::test]
async fn an_origin_that_is_not_one_is_refused_at_start_naming_the_setting() {
    let refused =
        TestApp::builder().bff(|c| c.cors_origins = Some("https://app.example.com/spa".into())).try_spawn().await;
    let error = refused.err().expect("witty-bff does not start");
    assert!(error.contains("WITTY_BFF_CORS_ORIGINS") && error.contains("/spa"), "{error}");
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("a gzip body");
    out
}

#[tokio::test]
async fn answers_and_graphiqls_script_are_compressed_as_the_client_accepts() {
    let app = spawn_app().await;
    let query = format!("{{ installation(id: {ALICE_INSTALLATION}) {{ id name chargingStations {{ id }} }} }}");
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token_for("alice"))
        .header(ACCEPT_ENCODING, "gzip")
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, CONTENT_ENCODING.as_str()), Some("gzip"));
    let body: Value = serde_json::from_slice(&gunzip(&r.bytes().await.unwrap())).expect("JSON once gunzipped");
    assert_eq!(body["data"]["installation"]["id"], ALICE_INSTALLATION.to_string(), "{body}");

    let script = format!("{}/graphiql/graphiql.min.js", app.base);
    for encoding in ["gzip", "br", "zstd"] {
        let r = app.client.get(&script).header(ACCEPT_ENCODING, encoding).send().await.unwrap();
        assert_eq!(header(&r, CONTENT_ENCODING.as_str()), Some(encoding));
        if encoding == "gzip" {
            let js = gunzip(&r.bytes().await.unwrap());
            assert!(js.len() > 100_000, "the whole script: {} bytes", js.len());
        }
    }
    // Not asked for: not compressed.
    let plain = app.client.get(&script).send().await.unwrap();
    assert_eq!(header(&plain, CONTENT_ENCODING.as_str()), None);
}

/// Reads the stream until `what` shows, in time; what was read.
async fn sse_until(sse: &mut Response, text: &mut String, what: &str) {
    let got = timeout(PATIENCE, async {
        while !text.contains(what) {
            let chunk = sse.chunk().await.expect("readable").expect("the stream stays open");
            text.push_str(std::str::from_utf8(&chunk).expect("plain text, not compressed"));
        }
    })
    .await;
    assert!(got.is_ok(), "{what} did not come; SSE got: {text}");
}

#[tokio::test]
async fn an_sse_stream_is_never_compressed_and_each_event_comes_as_it_happens() {
    let app = spawn_app().await;
    let mut sse = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token_for("alice"))
        .header("accept", "text/event-stream")
        .header(ACCEPT_ENCODING, "gzip, br, zstd")
        .json(&json!({ "query": EVENTS }))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(header(&sse, CONTENT_ENCODING.as_str()), None);
    app.live_subscriptions(1).await;
    assert_eq!(app.metric("witty_bff_sse_streams").await, 1.0);
    let mut text = String::new();
    assert_eq!(app.sim().plug(ALICE_STATION).await.status, 200);
    sse_until(&mut sse, &mut text, "CABLE_PLUGGED").await;
    // The stream is still open, and the next event comes on its own, after the first was read.
    let before = text.len();
    assert_eq!(app.sim().unplug(ALICE_STATION).await.status, 200);
    sse_until(&mut sse, &mut text, "CABLE_UNPLUGGED").await;
    assert!(text[before..].contains("event: next"), "{text}");
    drop(sse);
    eventually("the SSE stream to be counted closed", || async {
        (app.metric("witty_bff_sse_streams").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn readyz_stays_200_when_the_upstream_is_down_and_says_so() {
    let app = spawn_app().await;
    let ready: Value = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!((&ready["status"], &ready["upstream"]), (&json!("ready"), &json!("reachable")), "{ready}");

    // An upstream nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn_app_with(|c| c.upstream_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap())).await;
    let r = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the replica still serves: it stays in the load balancer");
    let ready: Value = r.json().await.unwrap();
    assert_eq!((&ready["status"], &ready["upstream"]), (&json!("ready"), &json!("unreachable")), "{ready}");
    // And it answers for the upstream itself.
    let q = format!("{{ installation(id: {ALICE_INSTALLATION}) {{ id }} }}");
    let answer = app.graphql("alice", &q, json!({})).await;
    assert_eq!(error_codes(&answer), vec!["UPSTREAM_UNAVAILABLE"], "{answer}");
}

/// Whether `line` is a comment, or `name{labels} value` (labels optional) with a number.
fn exposition_line(line: &str) -> bool {
    if line.starts_with('#') {
        return true;
    }
    let Some((series, value)) = line.rsplit_once(' ') else { return false };
    let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let series_ok = match series.split_once('{') {
        Some((name, labels)) => name_ok(name) && labels.ends_with('}'),
        None => name_ok(series),
    };
    let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    series_ok && value_ok
}

#[tokio::test]
async fn metrics_parse_and_count_requests_by_transport_operation_and_outcome() {
    let app = spawn_app().await;
    let good = app.graphql("alice", &format!("{{ installation(id: {ALICE_INSTALLATION}) {{ id }} }}"), json!({})).await;
    assert!(good.get("errors").is_none(), "{good}");
    let bad = app.graphql("alice", "query Secretly { noSuchField }", json!({})).await;
    assert_eq!(error_codes(&bad), vec!["BAD_USER_INPUT"]);
    // Over WebSocket: a subscription refused by validation counts once, at its refusal.
    let mut ws = app.subscribe_as("alice", "subscription { noSuchField }").await;
    let refused = ws_next(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(app.metric("witty_bff_websocket_connections").await, 1.0);

    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(exposition_line(line), "not the text format: {line}");
    }
    for counted in [
        r#"witty_bff_requests_total{operation="query",outcome="ok",transport="http"} 1"#,
        r#"witty_bff_requests_total{operation="query",outcome="BAD_USER_INPUT",transport="http"} 1"#,
        r#"witty_bff_requests_total{operation="subscription",outcome="BAD_USER_INPUT",transport="websocket"} 1"#,
        r#"witty_bff_request_seconds_count{operation="query",transport="http"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == counted), "{counted} in:\n{text}");
    }
    assert!(!text.contains("Secretly"), "operation names never become labels");
    for process in
        ["witty_bff_process_resident_memory_bytes", "witty_bff_process_open_fds", "witty_bff_process_cpu_seconds_total"]
    {
        assert!(text.lines().any(|l| l.starts_with(&format!("{process} "))), "{process}");
    }
    drop(ws);
    eventually("the WebSocket to be counted closed", || async {
        (app.metric("witty_bff_websocket_connections").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_websocket_upgrade_from_a_browser_accepting_compression_is_not_compressed() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let mut req = format!("{}/graphql", app.base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    // What browsers send on every upgrade.
    req.headers_mut().insert("Accept-Encoding", "gzip, deflate, br, zstd".parse().unwrap());
    let (mut ws, upgraded) = tokio_tungstenite::connect_async(req).await.expect("the upgrade succeeds");
    assert!(upgraded.headers().get("content-encoding").is_none(), "{:?}", upgraded.headers());
    let init = json!({"type": "connection_init", "payload": {"token": app.token_for("alice")}});
    ws_send_text(&mut ws, &init.to_string()).await;
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
}
