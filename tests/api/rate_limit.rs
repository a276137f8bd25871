//! Issue 17's per-caller rate limit: the request past a caller's burst is `RATE_LIMITED` with
//! `retryAfterSeconds` (429 with `Retry-After` for `application/graphql-response+json`), each
//! caller has an allowance of its own, webhooks and health routes are never counted, and 0 turns
//! the limit off. The rate is one request an hour, so no allowance comes back during a test.

use serde_json::{Value, json};

use crate::helpers::*;

const ONE_AN_HOUR: f64 = 1.0 / 3600.0;
const BURST: u32 = 3;
const QUERY: &str = "{ installations { id } }";

async fn spawn_limited(burst: u32) -> TestApp {
    spawn_app_with(|c| {
        c.rate_limit_per_second = ONE_AN_HOUR;
        c.rate_limit_burst = burst;
    })
    .await
}

fn assert_rate_limited(r: &Value) {
    assert_eq!(error_codes(r), ["RATE_LIMITED"], "{r:#}");
    let wait = r["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().expect("retryAfterSeconds");
    assert!(wait > 60 && wait <= 3600, "one request an hour: {r}");
    assert!(r.get("data").is_none_or(Value::is_null), "nothing ran: {r}");
}

#[tokio::test]
async fn the_request_past_the_burst_is_rate_limited_and_another_user_is_not() {
    let app = spawn_limited(BURST).await;
    let alice = app.token_for("alice");
    for _ in 0..BURST {
        let r = app.post_graphql(Some(&alice), json!({"query": QUERY})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(error_codes(&r.body).is_empty(), "{:#}", r.body);
    }
    let r = app.post_graphql(Some(&alice), json!({"query": QUERY})).await;
    // `application/json`: 200, as every GraphQL error is on it.
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_rate_limited(&r.body);
    // Bob's allowance is his own, and so is that of callers without a token (by address).
    assert!(error_codes(&app.graphql("bob", QUERY, json!({})).await).is_empty());
    let anonymous = app.post_graphql(None, json!({"query": QUERY})).await;
    assert_eq!(error_codes(&anonymous.body), ["UNAUTHENTICATED"], "{:#}", anonymous.body);
    assert_eq!(app.metric(r#"witty_bff_rate_limited_requests_total{transport="http"}"#).await, 1.0);
}

#[tokio::test]
async fn graphql_response_json_gets_429_with_retry_after() {
    let app = spawn_limited(1).await;
    let alice = app.token_for("alice");
    let post = || {
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&alice)
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": QUERY}))
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);
    let r = post().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/graphql-response+json");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let body: Value = r.json().await.unwrap();
    assert_rate_limited(&body);
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], retry);
}

#[tokio::test]
async fn callers_without_a_token_are_limited_by_address() {
    let app = spawn_limited(1).await;
    let first = app.post_graphql(None, json!({"query": QUERY})).await;
    assert_eq!(error_codes(&first.body), ["UNAUTHENTICATED"], "{:#}", first.body);
    let forged = app.post_graphql(Some("not-a-token"), json!({"query": QUERY})).await;
    assert_rate_limited(&forged.body);
    // A valid token is its user's allowance, not the address's.
    assert!(error_codes(&app.graphql("alice", QUERY, json!({})).await).is_empty());
}

#[tokio::test]
async fn websocket_subscribes_count_against_the_caller_and_webhooks_and_health_never_do() {
    let app = spawn_limited(1).await;
    let alice = app.token_for("alice");
    let mut ws = app.subscribe("graphql-transport-ws", &alice, "1", EVENTS).await;
    ws_send_text(&mut ws, &json!({"id": "2", "type": "subscribe", "payload": {"query": EVENTS}}).to_string()).await;
    let refused = ws_next(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "2", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    assert!(refused["payload"][0]["extensions"]["retryAfterSeconds"].as_u64().unwrap() > 60, "{refused}");
    let mut legacy = app.ws_connect("graphql-ws", &alice).await;
    ws_subscribe(&mut legacy, true, "1", EVENTS).await;
    let refused = ws_next(&mut legacy).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    // Alice's allowance is spent; her installation's webhook and the health routes still answer.
    let hook = app.webhook_of(ALICE_INSTALLATION);
    let first = app.deliver(&hook, json!([])).await;
    for _ in 0..5 {
        assert_ne!(first, 429);
        assert_eq!(app.deliver(&hook, json!([])).await, first);
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
    }
    assert_eq!(app.metric(r#"witty_bff_rate_limited_requests_total{transport="websocket"}"#).await, 2.0);
}

#[tokio::test]
async fn a_limit_of_zero_is_off() {
    for (rate, burst) in [(0.0, 1), (ONE_AN_HOUR, 0)] {
        let app = spawn_app_with(|c| {
            c.rate_limit_per_second = rate;
            c.rate_limit_burst = burst;
        })
        .await;
        for _ in 0..10 {
            assert!(error_codes(&app.graphql("alice", QUERY, json!({})).await).is_empty());
        }
    }
}
