//! Issue 18, items 7 and 8: automatic persisted queries (Apollo's protocol), batches (a JSON array
//! of requests answers an array), and the GraphQL-over-HTTP statuses graphql-http's audits check
//! (415 without a content type, 400 for what is not a GraphQL request).

use serde_json::{Value, json};

use crate::helpers::*;

const QUERY: &str = "{ installations { id } }";

/// SHA-256 of `text`, lower-case hex, computed apart from the server's code (`sha256sum`'s).
fn sha256(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// The first error's message.
fn message(r: &Reply) -> &str {
    r.body["errors"][0]["message"].as_str().unwrap_or_default()
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

/// GETs /graphql as Alice with `params` as the query string.
async fn get(app: &TestApp, params: &[(&str, &str)], accept: &str) -> Reply {
    let url = reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), params).unwrap();
    let req = app.client.get(url).header("accept", accept);
    send(req.bearer_auth(app.token_for("alice"))).await
}

#[tokio::test]
async fn an_unknown_hash_is_not_found_then_stored_with_its_query_then_runs_alone_by_post_and_get() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let hash = sha256(QUERY);
    let ext = persisted(&hash);
    // The hash alone, unknown: the answer Apollo's PersistedQueryLink retries on (200, even for
    // the media type with statuses).
    let r = app.post_graphql(Some(&token), json!({"extensions": ext})).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["errors"][0]["message"], "PersistedQueryNotFound", "{:#}", r.body);
    assert_eq!(error_codes(&r.body), ["PERSISTED_QUERY_NOT_FOUND"]);
    let e = ext.to_string();
    let r = get(&app, &[("extensions", &e)], "application/graphql-response+json").await;
    assert_eq!((r.status.as_u16(), error_codes(&r.body)), (200, vec!["PERSISTED_QUERY_NOT_FOUND".to_string()]));
    // With its query: stored and run.
    let r = app.post_graphql(Some(&token), json!({"query": QUERY, "extensions": ext})).await;
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
    // Then the hash alone runs it, by POST and by GET.
    let r = app.post_graphql(Some(&token), json!({"extensions": ext})).await;
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
    let r = get(&app, &[("extensions", &e)], "application/json").await;
    assert_eq!(r.status, 200);
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
}

#[tokio::test]
async fn a_hash_that_is_not_its_querys_is_refused_and_a_persisted_mutation_never_runs_by_get() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let wrong = sha256("{ something else }");
    let r = app.post_graphql(Some(&token), json!({"query": QUERY, "extensions": persisted(&wrong)})).await;
    assert_eq!(r.status, 400, "{:#}", r.body);
    assert_eq!(error_codes(&r.body), ["BAD_USER_INPUT"]);
    assert!(message(&r).contains("does not match"), "{:#}", r.body);
    // Nothing was stored under it.
    let r = app.post_graphql(Some(&token), json!({"extensions": persisted(&wrong)})).await;
    assert_eq!(error_codes(&r.body), ["PERSISTED_QUERY_NOT_FOUND"]);
    // A mutation stored by POST (refused there for its arguments) is still one by GET: 405.
    let mutation = "mutation { startCharging(installationId: 0, stationId: \"none\") { status } }";
    let ext = persisted(&sha256(mutation));
    app.post_graphql(Some(&token), json!({"query": mutation, "extensions": ext})).await;
    let e = ext.to_string();
    let r = get(&app, &[("extensions", &e)], "application/json").await;
    assert_eq!(r.status, 405, "{:#}", r.body);
}

#[tokio::test]
async fn a_batch_answers_an_array_in_order_and_one_over_the_cap_or_empty_is_refused() {
    let app = spawn_app().await;
    let token = app.token_for("bob");
    let batch = json!([
        {"query": QUERY},
        {"query": "query($i: ID!) { installation(id: $i) { id } }", "variables": {"i": "42"}},
        {"query": "{ nosuch }"},
    ]);
    let r = app.post_graphql(Some(&token), batch).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let answers = r.body.as_array().expect("an array");
    assert_eq!(answers.len(), 3, "{:#}", r.body);
    assert!(answers[0]["data"]["installations"].is_array(), "{:#}", r.body);
    assert_eq!(answers[1]["data"]["installation"]["id"], "42", "{:#}", r.body);
    assert_eq!(error_codes(&answers[2]), ["BAD_USER_INPUT"], "each its own answer");
    let over: Vec<Value> = (0..21).map(|_| json!({"query": QUERY})).collect();
    let r = app.post_graphql(Some(&token), Value::from(over)).await;
    assert_eq!(r.status, 400, "{:#}", r.body);
    assert_eq!(error_codes(&r.body), ["BAD_USER_INPUT"]);
    assert!(message(&r).contains("over the 20 allowed"), "{:#}", r.body);
    let r = app.post_graphql(Some(&token), json!([])).await;
    assert_eq!(r.status, 400);
    assert!(message(&r).contains("batch is empty"), "{:#}", r.body);
}

#[tokio::test]
async fn each_operation_of_a_batch_counts_against_the_rate_limit() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_second = 1.0 / 3600.0;
        c.rate_limit_burst = 2;
    })
    .await;
    let token = app.token_for("alice");
    let batch = json!([{"query": QUERY}, {"query": QUERY}, {"query": QUERY}]);
    let r = app.post_graphql(Some(&token), batch).await;
    let answers = r.body.as_array().expect("an array");
    assert!(answers[0]["data"].is_object() && answers[1]["data"].is_object(), "{:#}", r.body);
    assert_eq!(error_codes(&answers[2]), ["RATE_LIMITED"], "{:#}", r.body);
}

#[tokio::test]
async fn a_batch_under_one_idempotency_key_replays_whole_and_each_mutation_runs_once() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let vars = json!({"i": "42", "cs": BOB_STATION, "wait": false});
    let batch = json!([{"query": QUERY}, {"query": START, "variables": vars}]);
    let post = || {
        let req = app.client.post(format!("{}/graphql", app.base)).bearer_auth(app.token_for("bob"));
        send(req.header("Idempotency-Key", "batch-1").json(&batch))
    };
    let first = post().await;
    assert_eq!(status(&first.body[1], "startCharging"), "ACCEPTED", "{:#}", first.body);
    let second = post().await;
    assert_eq!(second.body[1], first.body[1], "the first answer again");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);
    // The key reused with a batch that differs is refused, as for a request of several mutations.
    let other = json!([{"query": START, "variables": vars}]);
    let req = app.client.post(format!("{}/graphql", app.base)).bearer_auth(app.token_for("bob"));
    let r = send(req.header("Idempotency-Key", "batch-1").json(&other)).await;
    assert_eq!(error_codes(&r.body[0]), ["BAD_USER_INPUT"], "{:#}", r.body);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);
}

#[tokio::test]
async fn what_is_not_a_graphql_request_gets_the_status_graphql_over_http_asks() {
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.base);
    let post = |kind: Option<&str>, body: &str| {
        let mut req = app.client.post(&url).bearer_auth(app.token_for("alice")).body(body.to_string());
        if let Some(kind) = kind {
            req = req.header("content-type", kind);
        }
        send(req)
    };
    let query = json!({"query": QUERY}).to_string();
    let r = post(None, &query).await;
    assert_eq!(r.status, 415, "{:#}", r.body);
    assert!(message(&r).contains("Content-Type"), "{:#}", r.body);
    let json = Some("application/json");
    for body in [
        "{not json",
        "",
        r#"{"qeury": "{ installations { id } }"}"#,
        r#"{"query": 1}"#,
        r#"{"query": "{ a }", "variables": "x"}"#,
    ] {
        let r = post(json, body).await;
        assert_eq!(r.status, 400, "{body}: {:#}", r.body);
        assert_eq!(error_codes(&r.body), ["BAD_USER_INPUT"], "{body}");
        assert!(message(&r).contains("not a GraphQL request"), "{body}: {:#}", r.body);
    }
    // A GraphQL error (the document) stays 200 with `application/json`.
    let r = post(json, r#"{"query": "{ nosuch }"}"#).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let r = post(Some("application/json; charset=utf-8"), &query).await;
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
}

#[tokio::test]
async fn in_a_fleet_a_query_stored_through_one_replica_runs_by_hash_on_another() {
    let Some(fleet) = crate::fleet_harness::TestFleet::spawn(2).await else { return };
    let (a, b) = (fleet.replica(0), fleet.replica(1));
    let token = a.token_for("alice");
    let ext = persisted(&sha256(QUERY));
    let r = a.post_graphql(Some(&token), json!({"query": QUERY, "extensions": ext})).await;
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
    let r = b.post_graphql(Some(&token), json!({"extensions": ext})).await;
    assert_eq!(data(&r.body)["installations"][0]["id"], "33", "{:#}", r.body);
    let key = format!("witty-bff:apq:{}", sha256(QUERY));
    let mut redis = redis::Client::open(fleet.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut redis).await.unwrap();
    assert!(ttl > 23 * 3600, "kept with its 24 h TTL: {ttl}");
}
