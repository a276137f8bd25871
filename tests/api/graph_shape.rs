//! The shape of answers, as the GraphQL spec gives it: a field that fails is `null` in its place
//! (its siblings stay), and fields come in the order the query asked for them.

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// The response's body as sent (its key order is what is checked).
async fn body_text(app: &TestApp, sub: &str, query: &str) -> String {
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token_for(sub))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("the BFF answers");
    assert_eq!(r.status(), 200);
    r.text().await.expect("a body")
}

fn error_paths(r: &Value) -> Vec<String> {
    r["errors"].as_array().into_iter().flatten().map(|e| e["path"].to_string()).collect()
}

#[tokio::test]
async fn a_field_an_installer_may_not_see_is_null_in_its_place_beside_what_he_may() {
    let app = spawn_app().await;
    let r = app
        .graphql(
            "ivan",
            &format!(
                r#"{{ installation(id: 33) {{
                    chargingStation(id: "{ALICE_STATION}") {{ lastSession {{ endDate totalSessionCost }} }}
                    gridMeters {{ generalConsumption {{ consumptionTotalIndex }} }}
                }} }}"#
            ),
            json!({}),
        )
        .await;
    let installation = &r["data"]["installation"];
    let session = installation["chargingStation"]["lastSession"].as_object().expect("the session, not null");
    assert!(session["endDate"].is_string(), "{r}");
    assert_eq!(session.get("totalSessionCost"), Some(&Value::Null), "present, as null: {r}");
    // The grid meter's only field failed: the meter is there, with that field null.
    let meter = installation["gridMeters"][0].as_object().expect("the meter, not null");
    assert_eq!(meter.get("generalConsumption"), Some(&Value::Null), "{r}");
    assert_eq!(error_codes(&r), ["FORBIDDEN", "FORBIDDEN"], "{r}");
    let paths = error_paths(&r);
    assert!(
        paths.contains(&r#"["installation","chargingStation","lastSession","totalSessionCost"]"#.to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&r#"["installation","gridMeters",0,"generalConsumption"]"#.to_string()), "{paths:?}");
}

#[tokio::test]
async fn an_installation_not_found_is_null_in_data_and_the_other_root_fields_stay() {
    let app = spawn_app().await;
    let r = app.graphql("alice", "{ installation(id: 42) { id } installations { id } }", json!({})).await;
    let data = r["data"].as_object().expect("data, not null");
    assert_eq!(data.get("installation"), Some(&Value::Null), "{r}");
    assert_eq!(data["installations"][0]["id"], "33", "{r}");
    assert_eq!(error_codes(&r), ["NOT_FOUND"], "{r}");
}

#[tokio::test]
async fn a_non_null_field_that_fails_makes_data_null() {
    let app = spawn_app().await;
    let f = app.sim().set_faults(json!({"errorRate": 1.0, "errorStatus": 500, "routes": ["GET /installations"]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    // `installations` is non-null: its failure reaches `data`.
    let r = app.graphql("dieter", "{ installations { id } }", json!({})).await;
    assert!(r["data"].is_null(), "{r}");
    assert_eq!(error_codes(&r), ["UPSTREAM_UNAVAILABLE"], "{r}");
}

#[tokio::test]
async fn fields_come_in_the_order_the_query_asks_for_them() {
    let app = spawn_app().await;
    // Fields of different parts of the schema (users, the installation itself, its stations),
    // and a fragment: each object in the query's order.
    let text = body_text(
        &app,
        "alice",
        "{ installations { users { accountId } chargingStations { measures { id } id } ...Named } }
         fragment Named on Installation { name id }",
    )
    .await;
    let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap_or_else(|| panic!("{key} in {text}"));
    assert!(at("users") < at("chargingStations"), "{text}");
    assert!(at("chargingStations") < at("name"), "{text}");
    assert!(at("measures") < at_in(&text, "60e0d33e"), "station id after its measures: {text}");
    assert!(at("name") < text.rfind("\"id\":\"33\"").unwrap(), "{text}");
    let text = body_text(&app, "alice", "{ installation(id: 33) { id } installations { id } }").await;
    assert!(at_in(&text, "installation\"") < at_in(&text, "installations\""), "{text}");
    let text = body_text(&app, "alice", "{ installations { id } installation(id: 33) { id } }").await;
    assert!(at_in(&text, "installations\"") < at_in(&text, "installation\""), "{text}");
}

fn at_in(text: &str, key: &str) -> usize {
    text.find(&format!("\"{key}")).unwrap_or_else(|| panic!("{key} in {text}"))
}

#[tokio::test]
async fn a_subscription_refused_at_validation_over_websocket_gets_a_code_as_over_http() {
    let app = spawn_app().await;
    // graphql-transport-ws: an `error` message (its payload the errors), and no `complete`; the
    // id is free again.
    let mut ws = app.subscribe_as("alice", "subscription { noSuchField }").await;
    let v = ws_next(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("error"), Some("1")), "{v}");
    let error = &v["payload"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{v}");
    assert!(error["message"].as_str().unwrap_or_default().contains("noSuchField"), "{v}");
    let again = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { alsoNoSuchField }"}});
    ws.send(Message::Text(again.to_string().into())).await.unwrap();
    let v = ws_next(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("error"), Some("1")), "the id was free: {v}");
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
    assert_eq!(ws_next(&mut ws).await["type"], "pong", "no complete came before it");
    // The legacy protocol keeps its `data` and `complete`.
    let mut legacy = app.subscribe("graphql-ws", &app.token_for("alice"), "1", "subscription { noSuchField }").await;
    let v = ws_next(&mut legacy).await;
    assert_eq!(v["type"], "data", "{v}");
    assert_eq!(v["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{v}");
    assert_eq!(ws_next(&mut legacy).await["type"], "complete");
}

#[tokio::test]
async fn a_date_time_variable_that_is_no_date_time_fails_the_request_naming_it() {
    let app = spawn_app().await;
    let q = format!(
        r#"query($f: DateTime!, $t: DateTime) {{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{
            friendlyName measure(id: "1") {{ values(operator: SUM, from: $f, to: $t, step: DAY) {{ value }} }} }} }} }}"#
    );
    let post = |variables: Value| {
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(app.token_for("alice"))
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": q, "variables": variables}))
            .send()
    };
    for (variables, named) in [
        (json!({"f": "yesterday", "t": "2025-01-02T00:00:00Z"}), "$f of type DateTime! was given \"yesterday\""),
        (json!({"f": 123, "t": "2025-01-02T00:00:00Z"}), "$f of type DateTime! was given 123"),
        (json!({"f": "2025-01-01T00:00:00Z", "t": "2025-02-30T00:00:00Z"}), "$t of type DateTime was given"),
    ] {
        let r = post(variables.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{variables}: a request error");
        let r: Value = r.json().await.unwrap();
        assert!(r.get("data").is_none(), "{r:#}");
        assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT"], "{r:#}");
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(named) && message.contains("RFC 3339"), "{message}");
    }
    // Good dates, with an offset or not, still run.
    let r = post(json!({"f": "2025-01-01T00:00:00+01:00", "t": "2025-01-02T00:00:00Z"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert!(data(&r)["installation"]["chargingStation"]["measure"]["values"].is_array(), "{r:#}");
}

#[tokio::test]
async fn a_required_variable_given_no_value_fails_the_request_naming_it() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let post = |body: Value| {
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("accept", "application/graphql-response+json")
            .json(&body)
            .send()
    };
    let two = "query A($i: ID!) { installation(id: $i) { id } } query B($n: ID = 33) { installation(id: $n) { id } }";
    let cases = [
        json!({"query": "query($i: ID!) { installation(id: $i) { id } }"}),
        json!({"query": "query($i: ID!) { installation(id: $i) { id } }", "variables": {"other": 1}}),
        json!({"query": two, "operationName": "A", "variables": {}}),
        json!({"query": "subscription($cs: ID!) { stationEvents(installationId: 33, chargingStationId: $cs) { id } }"}),
        // Null is no value for a non-null variable, with a default or without.
        json!({"query": "query($i: ID!) { installation(id: $i) { id } }", "variables": {"i": null}}),
        json!({"query": "query($i: ID! = 33) { installation(id: $i) { id } }", "variables": {"i": null}}),
    ];
    for body in cases {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}: a request error");
        let r: Value = r.json().await.unwrap();
        assert!(r["data"].is_null(), "{r:#}");
        assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT"], "{r:#}");
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(
            (message.contains("given no value") || message.contains("given null"))
                && (message.contains("$i") || message.contains("$cs")),
            "{message}"
        );
    }
    // A subscription over SSE, chosen among several operations, or given null where a nullable
    // argument would take it (watching every station instead of one).
    let watch = "subscription S($cs: ID!) { stationEvents(installationId: 33, chargingStationId: $cs) { id } }";
    for (body, words) in [
        (json!({"query": format!("{two} {watch}"), "operationName": "S"}), "$cs of type ID! was given no value"),
        (json!({"query": watch, "variables": {"cs": null}}), "$cs of type ID! was given null"),
    ] {
        let mut r = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut text = String::new();
        let read = tokio::time::timeout(PATIENCE, async {
            while !text.contains("event: complete") {
                let Some(chunk) = r.chunk().await.unwrap() else { break };
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(read.is_ok() && text.contains(words), "{body}: {text}");
    }
    // The other operation of the document needs nothing, and a default stands in for a value.
    let r: Value = post(json!({"query": two, "operationName": "B"})).await.unwrap().json().await.unwrap();
    assert_eq!(r["data"]["installation"]["id"], "33", "{r:#}");
}

/// POSTs `body` (raw) to /graphql as Alice with `accept`; returns the status, content type and
/// body text (an event stream is read to its `complete`).
async fn post_accepting(app: &TestApp, accept: &str, body: &str) -> (u16, String, String) {
    let mut r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token_for("alice"))
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let status = r.status().as_u16();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = r.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: complete") {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{accept}: no end in time: {text}"));
    (status, kind, text)
}

#[tokio::test]
async fn the_accept_header_is_read_as_http_says_and_sse_refusals_come_on_the_stream() {
    let app = spawn_app().await;
    let query = r#"{"query": "{ installation(id: 33) { id } }"}"#;
    // Media types compare without case.
    let (status, kind, text) = post_accepting(&app, "Text/Event-Stream", query).await;
    assert_eq!((status, kind.as_str()), (200, "text/event-stream"), "{text}");
    assert!(text.contains(r#""id":"33""#) && text.contains("event: complete"), "{text}");
    // q=0 means "not this one".
    let (status, kind, text) = post_accepting(&app, "text/event-stream;q=0, application/json", query).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["data"]["installation"]["id"], "33");
    // Weights rank: JSON preferred over the event stream gets JSON.
    let (status, kind, text) = post_accepting(&app, "text/event-stream;q=0.5, application/json", query).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{text}");
    // A body that is no GraphQL request, to an SSE client: refused on the stream it accepted.
    let (status, kind, text) = post_accepting(&app, "text/event-stream", r#"{"query":"#).await;
    assert_eq!((status, kind.as_str()), (200, "text/event-stream"), "{text}");
    assert!(text.contains("event: next") && text.contains("not a GraphQL request"), "{text}");
    assert!(text.contains("BAD_USER_INPUT") && text.contains("event: complete"), "{text}");
    // A request error has no `data` at all (nothing was executed).
    let (status, kind, text) =
        post_accepting(&app, "application/graphql-response+json", r#"{"query": "{ nosuch }"}"#).await;
    assert_eq!((status, kind.as_str()), (400, "application/graphql-response+json"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body.get("data").is_none() && body["errors"][0]["message"].is_string(), "{text}");
}
