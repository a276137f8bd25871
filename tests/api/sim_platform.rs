//! What the API-management platform adds in front of every route: the subscription key, the
//! bearer token, throttling; and the simulator's own `/_sim/` controls: fault injection, call
//! counts, run-time settings.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// A token whose claims are the given JSON (not checked for a signature by the simulator).
fn token_with_claims(claims: &str) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.c2ln", e.encode(r#"{"alg":"HS256","typ":"JWT"}"#), e.encode(claims))
}

fn assert_apim_401(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    assert_eq!(r.body["statusCode"], 401, "{what}: the body is {{statusCode, message}}: {:?}", r.body);
    assert!(!r.message().is_empty(), "{what}: a message says why: {:?}", r.body);
}

#[tokio::test]
async fn a_missing_or_wrong_subscription_key_is_401_with_the_platform_body() {
    let app = spawn_app().await;
    let sim = app.sim();
    let token = unsigned_token("alice");
    let none = send(sim.client.get(sim.url("/installations")).bearer_auth(&token)).await;
    assert_apim_401(&none, "no key");
    assert!(none.message().contains("missing subscription key"), "{:?}", none.body);
    let wrong =
        send(sim.client.get(sim.url("/installations")).bearer_auth(&token).header("Ocp-Apim-Subscription-Key", "nope"))
            .await;
    assert_apim_401(&wrong, "wrong key");
    assert!(wrong.message().contains("invalid subscription key"), "{:?}", wrong.body);
    // Without a key, nothing else is looked at: not even a missing token.
    let neither = send(sim.client.post(sim.url("/installations")).json(&json!({}))).await;
    assert_apim_401(&neither, "no key, no token");
    assert!(neither.message().contains("subscription key"), "{:?}", neither.body);
    // The key as a query parameter is accepted too, as API management does.
    let query =
        send(sim.client.get(sim.url(&format!("/installations?subscription-key={API_KEY}"))).bearer_auth(&token)).await;
    assert_eq!(query.status, 200, "{:?}", query.body);
    // A 401 on a route deep in the table has the same shape.
    let deep =
        send(sim.client.get(sim.url(&station_path(ALICE_INSTALLATION, ALICE_STATION))).bearer_auth(&token)).await;
    assert_apim_401(&deep, "no key on a station");
}

#[tokio::test]
async fn a_missing_garbage_or_expired_bearer_token_is_401() {
    let app = spawn_app().await;
    let sim = app.sim();
    let with_key = |req: reqwest::RequestBuilder| req.header("Ocp-Apim-Subscription-Key", API_KEY);
    let url = sim.url("/installations");
    let none = send(with_key(sim.client.get(&url))).await;
    assert_apim_401(&none, "no token");
    assert!(none.message().contains("Authorization"), "{:?}", none.body);
    let expired = token_with_claims(&format!(r#"{{"sub":"alice","exp":{}}}"#, chrono::Utc::now().timestamp() - 60));
    let no_sub = token_with_claims(r#"{"name":"alice"}"#);
    let blank_sub = token_with_claims(r#"{"sub":"  "}"#);
    let not_json = format!("x.{}.y", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json"));
    for (what, header) in [
        ("garbage", "Bearer garbage".to_string()),
        ("not base64", "Bearer a.!!!.c".to_string()),
        ("claims not JSON", format!("Bearer {not_json}")),
        ("no sub", format!("Bearer {no_sub}")),
        ("blank sub", format!("Bearer {blank_sub}")),
        ("expired", format!("Bearer {expired}")),
        ("basic auth", "Basic YWxpY2U6c2VjcmV0".to_string()),
        ("empty bearer", "Bearer ".to_string()),
    ] {
        let r = send(with_key(sim.client.get(&url)).header("Authorization", header)).await;
        assert_apim_401(&r, what);
    }
    // A token without `exp` that names a user is enough: the simulator does not check signatures.
    let r = send(with_key(sim.client.get(&url)).bearer_auth(token_with_claims(r#"{"sub":"alice"}"#))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[0]["installationId"], ALICE_INSTALLATION);
}

#[tokio::test]
async fn an_unknown_sub_is_a_new_account_that_sees_nothing_until_it_creates_an_installation() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.get("zoe", "/installations").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!([]));
    assert_eq!(sim.get("zoe", &station_path(ALICE_INSTALLATION, ALICE_STATION)).await.status, 404);
    let created = sim
        .post(
            "zoe",
            "/installations",
            json!({"name": "Zoé", "locationName": "Nantes", "locationGpsCoordinates": {"latitude": 47.2, "longitude": -1.55}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let mine = sim.get("zoe", "/installations").await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
    assert_eq!(mine.body[0]["installationId"], created.body["installationId"]);
}

#[tokio::test]
async fn an_injected_error_hits_only_the_named_route() {
    let app = spawn_app().await;
    let sim = app.sim();
    let set = sim
        .set_faults(
            json!({"errorRate": 1.0, "errorStatus": 503, "routes": ["GET /installations/{i}/charging-stations/{cs}"]}),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["errorRate"], 1.0);
    let current = sim.control(Method::GET, "/_sim/faults", None).await;
    assert_eq!(current.body["errorStatus"], 503);
    for _ in 0..5 {
        let r = sim.get("alice", &station_path(ALICE_INSTALLATION, ALICE_STATION)).await;
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.body["statusCode"], 503);
        assert!(!r.message().is_empty());
    }
    // Other routes, and other methods on the same path, are untouched.
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
    assert_eq!(sim.get("alice", &format!("/installations/{ALICE_INSTALLATION}/charging-stations")).await.status, 200);
    let put = sim.put("alice", &station_path(ALICE_INSTALLATION, ALICE_STATION), json!({"friendlyName": "x"})).await;
    assert_eq!(put.status, 202, "{:?}", put.body);
    // Another status, on a route given as a path alone (every method).
    sim.set_faults(json!({"errorRate": 1.0, "errorStatus": 500, "routes": ["/installations"]})).await;
    assert_eq!(sim.get("alice", "/installations").await.status, 500);
    let post = sim.post("alice", "/installations", json!({})).await;
    assert_eq!(post.status, 500, "{:?}", post.body);
    assert_eq!(sim.get("alice", &station_path(ALICE_INSTALLATION, ALICE_STATION)).await.status, 200);
    // DELETE clears.
    let cleared = sim.clear_faults().await;
    assert_eq!(cleared.status, 204);
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
    assert_eq!(sim.control(Method::GET, "/_sim/faults", None).await.body, json!({}));
}

#[tokio::test]
async fn faults_without_routes_hit_every_route_and_come_before_the_key_check() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.set_faults(json!({"errorRate": 1.0, "errorStatus": 502})).await;
    assert_eq!(sim.get("alice", "/installations").await.status, 502);
    assert_eq!(sim.get("bob", &meter_path(BOB_INSTALLATION, BOB_METER)).await.status, 502);
    let no_key = send(sim.client.get(sim.url("/installations"))).await;
    assert_eq!(no_key.status, 502, "the platform fails before it checks keys: {:?}", no_key.body);
    // The control routes are not faulted.
    assert_eq!(sim.control(Method::GET, "/_sim/users", None).await.status, 200);
    sim.clear_faults().await;
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
}

#[tokio::test]
async fn throttling_429_and_quota_403_carry_retry_after() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.set_faults(json!({"errorRate": 1.0, "errorStatus": 429, "routes": ["GET /installations"]})).await;
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["statusCode"], 429);
    assert!(r.message().contains("Rate limit"), "{:?}", r.body);
    let retry = r.headers.get("retry-after").expect("429 has Retry-After").to_str().unwrap();
    assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After is a number of seconds: {retry}");

    sim.set_faults(json!({"errorRate": 1.0, "errorStatus": 403, "routes": ["GET /installations"]})).await;
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 403);
    assert!(r.message().contains("quota"), "{:?}", r.body);
    assert!(r.headers.get("retry-after").is_some(), "a quota 403 has Retry-After");

    // An ordinary 503 does not.
    sim.set_faults(json!({"errorRate": 1.0, "errorStatus": 503, "routes": ["GET /installations"]})).await;
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn an_error_rate_of_zero_injects_nothing() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.set_faults(json!({"errorRate": 0.0, "errorStatus": 503})).await;
    for _ in 0..20 {
        assert_eq!(sim.get("alice", "/installations").await.status, 200);
    }
}

#[tokio::test]
async fn injected_latency_delays_the_named_route_only() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.set_faults(json!({"latencyMs": 800, "routes": ["GET /installations"]})).await;
    let started = Instant::now();
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 200, "latency alone does not fail the call");
    assert!(started.elapsed() >= Duration::from_millis(800), "delayed by 800 ms: {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(sim.get("alice", &format!("/installations/{ALICE_INSTALLATION}/users")).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(800), "other routes are not delayed: {:?}", started.elapsed());
    sim.clear_faults().await;
    let started = Instant::now();
    sim.get("alice", "/installations").await;
    assert!(started.elapsed() < Duration::from_millis(800), "cleared: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dropped_connection_fails_the_call_mid_answer() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.set_faults(json!({"dropRate": 1.0, "routes": ["GET /installations"]})).await;
    let outcome = async {
        let resp = sim.request("alice", Method::GET, "/installations").send().await?;
        resp.bytes().await
    }
    .await;
    assert!(outcome.is_err(), "the answer is cut: {outcome:?}");
    assert_eq!(sim.get("alice", &format!("/installations/{ALICE_INSTALLATION}/users")).await.status, 200);
}

#[tokio::test]
async fn invalid_fault_bodies_are_400_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (body, field) in [
        (json!({"errorRate": 1.5}), "errorRate"),
        (json!({"errorRate": -0.1}), "errorRate"),
        (json!({"dropRate": 2}), "dropRate"),
        (json!({"errorStatus": 200}), "errorStatus"),
        (json!({"errorStatus": 600}), "errorStatus"),
        (json!({"latencyMs": -1}), "latencyMs"),
        (json!({"latencyMs": 200_000}), "latencyMs"),
        (json!({"latencyMs": "fast"}), "latencyMs"),
        (json!({"errorRate": "always"}), "errorRate"),
        (json!({"routes": "GET /installations"}), "routes"),
        (json!({"errorRates": 1.0}), "errorRates"),
    ] {
        let r = sim.set_faults(body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: the message names {field}: {:?}", r.body);
    }
    let raw = send(
        sim.client.put(sim.url("/_sim/faults")).header("content-type", "application/json").body("{\"errorRate\": "),
    )
    .await;
    assert_eq!(raw.status, 400, "{:?}", raw.body);
    assert!(raw.message().contains("JSON"), "{:?}", raw.body);
    assert_eq!(sim.control(Method::GET, "/_sim/faults", None).await.body, json!({}), "nothing was set");
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
}

#[tokio::test]
async fn a_fault_on_a_concrete_path_hits_that_path_only() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim
        .set_faults(
            json!({"errorRate": 1.0, "errorStatus": 504, "routes": ["GET /installations/42/charging-stations"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(sim.get("bob", "/installations/42/charging-stations").await.status, 504);
    assert_eq!(sim.get("bob", "/installations/43/charging-stations").await.status, 200, "same template, other path");
    sim.set_faults(
        json!({"errorRate": 1.0, "errorStatus": 504, "routes": [station_path(BOB_INSTALLATION, BOB_STATION)]}),
    )
    .await;
    assert_eq!(sim.get("bob", &station_path(BOB_INSTALLATION, BOB_STATION)).await.status, 504);
    let put = sim.put("bob", &station_path(BOB_INSTALLATION, BOB_STATION), json!({"friendlyName": "x"})).await;
    assert_eq!(put.status, 504, "a path alone matches every method");
    assert_eq!(sim.get("bob", &station_path(BOB_CHALET, BOB_CHALET_STATION)).await.status, 200);
}

#[tokio::test]

async fn a_fault_naming_no_route_is_refused() {
    let app = spawn_app().await;
    let sim = app.sim();
    for routes in [json!(["GET /nope"]), json!(["GET /installations/{id}"]), json!(["FETCH /installations"])] {
        let r = sim.set_faults(json!({"errorRate": 1.0, "routes": routes.clone()})).await;
        assert_eq!(r.status, 400, "{routes}: {:?}", r.body);
        assert!(r.message().contains("routes"), "{routes}: {:?}", r.body);
    }
}

#[tokio::test]
async fn calls_are_counted_under_their_route_template_and_reset() {
    let app = spawn_app().await;
    let sim = app.sim();
    let fresh = sim.calls().await;
    assert_eq!(fresh["total"], 0, "{fresh}");
    assert_eq!(fresh["byRoute"], json!({}));
    sim.get("alice", &station_path(ALICE_INSTALLATION, ALICE_STATION)).await;
    sim.get("bob", &station_path(BOB_INSTALLATION, BOB_STATION)).await;
    sim.get("alice", &station_path(ALICE_INSTALLATION, "no-such-station")).await;
    sim.get("alice", "/installations").await;
    // Refused calls count too: the platform counts before it checks anything.
    send(sim.client.get(sim.url("/installations"))).await;
    // Control routes, the OpenAPI document and unknown paths are not upstream calls.
    sim.control(Method::GET, "/_sim/users", None).await;
    sim.control(Method::GET, "/openapi.json", None).await;
    sim.get("alice", "/no/such/route").await;
    let calls = sim.calls().await;
    assert_eq!(calls["total"], 5, "{calls}");
    assert_eq!(
        calls["byRoute"],
        json!({"GET /installations/{i}/charging-stations/{cs}": 3, "GET /installations": 2}),
        "keys are METHOD and the route template"
    );
    // Faulted calls are counted as well.
    sim.set_faults(json!({"errorRate": 1.0, "routes": ["GET /installations"]})).await;
    sim.get("alice", "/installations").await;
    assert_eq!(sim.calls_to("GET /installations").await, 3);

    let reset = sim.control(Method::DELETE, "/_sim/calls", None).await;
    assert_eq!(reset.status, 204);
    let after = sim.calls().await;
    assert_eq!(after["total"], 0);
    assert_eq!(after["byRoute"], json!({}));
    sim.clear_faults().await;
    sim.post(
        "alice",
        &format!("{}/measures/1/operators/sum", station_path(ALICE_INSTALLATION, ALICE_STATION)),
        json!({}),
    )
    .await;
    let after = sim.calls().await;
    assert_eq!(
        after["byRoute"],
        json!({"POST /installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum": 1})
    );
}

#[tokio::test]
async fn runtime_settings_can_be_read_changed_and_are_checked() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.control(Method::GET, "/_sim/config", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["commandDelayMs"], 200);
    assert_eq!(r.body["deliveryAttempts"], 5);
    let r = sim.control(Method::PUT, "/_sim/config", Some(json!({"commandDelayMs": 50}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["commandDelayMs"], 50);
    assert_eq!(r.body["deliveryAttempts"], 5, "fields left out keep their value");
    for (body, field) in [
        (json!({"deliveryAttempts": 0}), "deliveryAttempts"),
        (json!({"commandDelayMs": -5}), "commandDelayMs"),
        (json!({"commandDelay": 5}), "commandDelay"),
    ] {
        let r = sim.control(Method::PUT, "/_sim/config", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: {:?}", r.body);
    }
}

#[tokio::test]
async fn the_seeded_accounts_are_listed_with_their_installations_and_roles() {
    let app = spawn_app().await;
    let sim = app.sim();
    let users = sim.control(Method::GET, "/_sim/users", None).await.body;
    let user = |sub: &str| users.as_array().unwrap().iter().find(|u| u["sub"] == sub).cloned().unwrap();
    let alice = user("alice");
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["installations"], json!([{"installationId": 33, "role": "owner", "enabled": true}]));
    let bob = user("bob");
    let bobs: Vec<i64> =
        bob["installations"].as_array().unwrap().iter().map(|i| i["installationId"].as_i64().unwrap()).collect();
    assert_eq!(bobs, vec![BOB_INSTALLATION, BOB_CHALET]);
    assert_eq!(user("dieter")["installations"][0]["installationId"], DIETER_INSTALLATION);
    let ivan = user("ivan");
    assert_eq!(ivan["accountType"], "installer");
    assert_eq!(ivan["installations"], json!([{"installationId": 33, "role": "installer", "enabled": true}]));
    let erin = user("erin");
    assert_eq!(erin["accountType"], "installer");
    assert_eq!(erin["installations"], json!([]));
    // Owners with separate installations.
    assert!(alice["installations"][0]["installationId"] != bob["installations"][0]["installationId"]);
}

#[tokio::test]
async fn concurrent_calls_are_all_answered_and_all_counted() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let sum = format!("{cs}/measures/1/operators/sum");
    let day = range_body("2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", Some("day"));
    let reads = (0..60).map(|_| sim.get("alice", &cs));
    let sums = (0..20).map(|_| sim.post("alice", &sum, day.clone()));
    let (reads, sums) = tokio::join!(futures::future::join_all(reads), futures::future::join_all(sums));
    assert!(reads.iter().all(|r| r.status == 200));
    assert!(sums.iter().all(|r| r.status == 200));
    assert!(sums.windows(2).all(|w| w[0].body == w[1].body), "concurrent aggregations agree");
    let calls = sim.calls().await;
    assert_eq!(calls["total"], 80);
    assert_eq!(calls["byRoute"]["GET /installations/{i}/charging-stations/{cs}"], 60);
}
