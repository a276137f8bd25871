//! Tokens of one user: what one token is refused never reaches another.
//!
//! The upstream's 401 ("the bearer token has expired", a revoked token) is about the token, not
//! its user: the shared cache, keyed by the user, must neither keep it for the user's other tokens
//! nor hand it to their reads that joined the refused token's fetch.

use serde_json::{Value, json};
use witty_bff::mint_dev_token;

use crate::helpers::*;

const INSTALLATIONS_ROUTE: &str = "GET /installations";
const STATION_ROUTE: &str = "GET /installations/{i}/charging-stations/{cs}";

/// An app that still accepts a token an hour past its expiry (the simulator refuses it with 401,
/// as the real upstream may refuse a token before witty-bff does), and that keeps failures for a
/// minute: a refusal served to another token would be served for that long.
async fn spawn_lenient_app() -> TestApp {
    spawn_lenient_app_keeping_failures(60).await
}

/// As [`spawn_lenient_app`], with failures kept `negative_ttl_secs`.
async fn spawn_lenient_app_keeping_failures(negative_ttl_secs: u64) -> TestApp {
    spawn_app_with(|c| {
        c.jwt_leeway_secs = 3600;
        c.cache_negative_ttl_secs = negative_ttl_secs;
        c.cache_state_ttl_secs = 60;
    })
    .await
}

/// A token of `sub` that expired a minute ago: accepted by the app (its leeway), refused upstream.
fn expired_token(sub: &str) -> String {
    mint_dev_token(JWT_SECRET, sub, -60, None, None)
}

/// A fresh 12-hour token of `sub`.
fn valid_token(sub: &str) -> String {
    mint_dev_token(JWT_SECRET, sub, 12 * 3600, None, None)
}

async fn query(app: &TestApp, token: &str, q: &str) -> Value {
    let r = app.post_graphql(Some(token), json!({"query": q})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// Asserts the answer is the upstream's refusal of the token (not the app's own).
fn assert_refused_upstream(response: &Value) {
    let errors = response["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert!(!errors.is_empty(), "{response:#}");
    for e in errors {
        assert_eq!(e["extensions"]["code"], "UNAUTHENTICATED", "{response:#}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains("refused your token") && message.contains("expired"), "{response:#}");
    }
}

fn dieter_query() -> String {
    format!(
        r#"{{ installations {{ id }} installation(id: {DIETER_INSTALLATION}) {{ id name chargingStation(id: "{DIETER_STATION}") {{ id availability }} }} }}"#
    )
}

fn assert_dieter_data(response: &Value) {
    let d = data(response);
    assert_eq!(d["installations"][0]["id"], DIETER_INSTALLATION.to_string(), "{response:#}");
    assert_eq!(d["installation"]["chargingStation"]["id"], DIETER_STATION, "{response:#}");
    assert!(d["installation"]["chargingStation"]["availability"].is_string(), "{response:#}");
}

#[tokio::test]
async fn a_token_refused_upstream_does_not_fail_the_users_valid_token_afterwards() {
    let app = spawn_lenient_app().await;
    let (expired, valid) = (expired_token("dieter"), valid_token("dieter"));
    let q = dieter_query();

    let first = query(&app, &expired, &q).await;
    assert_refused_upstream(&first);
    assert_eq!(app.sim().calls_to(INSTALLATIONS_ROUTE).await, 1);
    // The same token again within the negative TTL: its refusal stands, and is not sent again.
    let again = query(&app, &expired, &q).await;
    assert_refused_upstream(&again);
    assert_eq!(app.sim().calls_to(INSTALLATIONS_ROUTE).await, 1, "a refused token is remembered as refused");

    // The user's valid token is answered at once, not a negative TTL later.
    let fresh = query(&app, &valid, &q).await;
    assert_dieter_data(&fresh);
    assert_eq!(app.sim().calls_to(INSTALLATIONS_ROUTE).await, 2, "fetched with the valid token");
    // And what it fetched is cached for the user as usual.
    assert_dieter_data(&query(&app, &valid, &q).await);
    assert_eq!(app.sim().calls_to(INSTALLATIONS_ROUTE).await, 2);
}

#[tokio::test]
async fn a_valid_token_that_joined_a_refused_tokens_fetch_fetches_with_its_own() {
    // Failures not kept at all: only a read that joined the refused fetch could be handed its 401.
    let app = spawn_lenient_app_keeping_failures(0).await;
    let (expired, valid) = (expired_token("dieter"), valid_token("dieter"));
    let q = "{ installations { id name } }";
    // Slow enough that the reads below overlap the first one's fetch.
    let r = app.sim().set_faults(json!({"latencyMs": 1500, "routes": [INSTALLATIONS_ROUTE]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let app = std::sync::Arc::new(app);
    let first = tokio::spawn({
        let (app, expired) = (app.clone(), expired.clone());
        async move { query(&app, &expired, q).await }
    });
    eventually("the refused token's fetch to reach the upstream", || async {
        (app.sim().calls_to(INSTALLATIONS_ROUTE).await == 1).then_some(())
    })
    .await;
    // While it is in flight: the same token again, and the user's valid token.
    let (same, other) = tokio::join!(query(&app, &expired, q), query(&app, &valid, q));
    let first = first.await.unwrap();

    assert_refused_upstream(&first);
    assert_refused_upstream(&same);
    let installations = &data(&other)["installations"];
    assert_eq!(installations[0]["id"], DIETER_INSTALLATION.to_string(), "{other:#}");
    // The valid token's read was sent with its own token; the refused token's second read joined
    // the first (or, on a very slow machine, came after it and was sent again: failures are not
    // kept here).
    let calls = app.sim().calls_to(INSTALLATIONS_ROUTE).await;
    assert!((2..=3).contains(&calls), "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn a_station_watcher_with_a_valid_token_is_not_sent_another_tokens_refusal() {
    let app = spawn_lenient_app().await;
    let (expired, valid) = (expired_token("alice"), valid_token("alice"));
    // The valid token watches the installation first (the upstream event subscription is made with
    // it) and reads its stations: what the other subscriptions check is cached for alice.
    let mut events = app.watch_events(&valid).await;
    app.live_subscriptions(1).await;
    let url = app.webhook_url().await;
    let stations = "{ installation(id: 33) { chargingStations { id } } }";
    assert!(data(&query(&app, &valid, stations).await)["installation"]["chargingStations"].is_array());
    let updated = format!(
        r#"subscription {{ chargingStationUpdated(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ id availability }} }}"#
    );
    // A session whose token the upstream now refuses, then one with the valid token; each
    // re-reads the station once per event, through the shared cache.
    let mut refused = app.subscribe("graphql-transport-ws", &expired, "r", &updated).await;
    app.live_subscriptions(2).await;
    let mut fine = app.subscribe("graphql-transport-ws", &valid, "f", &updated).await;
    app.live_subscriptions(3).await;

    let mut refused_open = true;
    for n in 0..3 {
        let id = format!("tokens-{n}");
        let at = format!("2026-01-01T10:00:0{n}Z");
        let data = json!({"installationId": 33, "chargingStationId": ALICE_STATION});
        let event = grid_event(&id, "Hager.WittyHome.LoadShedding", &at, true, data);
        assert_eq!(app.deliver(&url, json!([event])).await, 200);
        let e = ws_data(&mut events).await;
        assert_eq!(e["data"]["stationEvents"]["id"], id.as_str(), "{e}");

        let mine = ws_data(&mut fine).await;
        assert!(mine.get("errors").is_none_or(|e| e.is_null()), "event {n}: {mine:#}");
        assert_eq!(mine["data"]["chargingStationUpdated"]["id"], ALICE_STATION, "event {n}: {mine:#}");
        assert!(mine["data"]["chargingStationUpdated"]["availability"].is_string(), "event {n}: {mine:#}");
        // The refused session hears of it: its own token's refusal, which ends it (the same token
        // would be refused at every event), or the state the user's valid token fetched (the
        // same user's data).
        if refused_open {
            let theirs = ws_next(&mut refused).await;
            assert_eq!(theirs["type"], "next", "{theirs:#}");
            let theirs = &theirs["payload"];
            if theirs.get("errors").is_some_and(|e| !e.is_null()) {
                assert_refused_upstream(theirs);
                assert_eq!(ws_next(&mut refused).await["type"], "complete");
                refused_open = false;
            } else {
                assert_eq!(theirs["data"]["chargingStationUpdated"]["id"], ALICE_STATION, "{theirs:#}");
            }
        }
    }
    // At most: the refused token's read and the valid token's own for the first event, then only
    // the valid token's (the refusal is remembered for the refused token).
    assert!(app.sim().calls_to(STATION_ROUTE).await <= 4, "{:#?}", app.sim().calls_by_route().await);
}
