//! Who sees what: owners, installers and strangers, with the shared cache in between; token
//! lifetimes and token sources over WebSocket.

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Everything about Alice's installation, costs included.
fn everything() -> String {
    format!(
        r#"{{ installation(id: 33) {{
            name
            chargingStation(id: "{ALICE_STATION}") {{
                friendlyName chargeMode
                lastSession {{ endDate totalSessionEnergy totalSessionCost }}
                measure(id: "1") {{ values(operator: SUM, from: "2025-01-01T00:00:00Z", to: "2025-01-02T00:00:00Z", step: DAY) {{ value }} }}
                log(id: "2") {{ entries(from: "2025-01-01T00:00:00Z", to: "2025-02-01T00:00:00Z") {{ logName value }} }}
            }}
            gridMeters {{ id ticType generalConsumption {{ consumptionTotalIndex }} tariffs {{ id currentPrice }} }}
        }} }}"#
    )
}

fn errors_at(r: &Value) -> Vec<(String, String)> {
    r["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    let path: Vec<String> = e["path"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_str().map(str::to_string).unwrap_or_else(|| p.to_string()))
                        .collect();
                    (path.join("."), e["extensions"]["code"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn another_owner_gets_not_found_right_after_the_owner_filled_the_cache() {
    let app = spawn_app().await;
    let alice = app.graphql("alice", &everything(), json!({})).await;
    assert_eq!(data(&alice)["installation"]["name"], "Mon installation Witty-Home");
    let bob = app.graphql("bob", &everything(), json!({})).await;
    assert!(bob["data"]["installation"].is_null(), "{bob:#}");
    assert_eq!(error_codes(&bob), vec!["NOT_FOUND"]);
    // Nor through the list of installations.
    let list = app.graphql("bob", "{ installations { id } }", json!({})).await;
    let ids: Vec<&str> =
        data(&list)["installations"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["42", "43"]);
}

#[tokio::test]
async fn an_installer_sees_general_data_only_even_right_after_the_owner_filled_the_cache() {
    let app = spawn_app().await;
    let alice = app.graphql("alice", &everything(), json!({})).await;
    let a = &data(&alice)["installation"];
    assert!(a["chargingStation"]["lastSession"]["totalSessionEnergy"].as_f64().unwrap() > 0.0);
    assert!(a["gridMeters"][0]["tariffs"].as_array().is_some());
    let session_end = &a["chargingStation"]["log"]["entries"][0]["value"];
    assert!(session_end.get("energy").is_some(), "the owner sees the session's energy: {session_end}");

    app.sim().reset_calls().await;
    let ivan = app.graphql("ivan", &everything(), json!({})).await;
    let i = &ivan["data"]["installation"];
    // General data arrives...
    assert_eq!(i["name"], "Mon installation Witty-Home", "{ivan:#}");
    assert_eq!(i["chargingStation"]["friendlyName"], "my garage charging station");
    assert_eq!(i["chargingStation"]["chargeMode"], "IMMEDIATE");
    assert!(i["chargingStation"]["lastSession"]["endDate"].is_string());
    assert_eq!(i["gridMeters"][0]["ticType"], "HISTORIC_MONO");
    // ...costs and consumptions do not.
    let mut refused = errors_at(&ivan);
    refused.sort();
    let mut expected: Vec<(String, String)> = [
        "installation.chargingStation.lastSession.totalSessionEnergy",
        "installation.chargingStation.lastSession.totalSessionCost",
        "installation.chargingStation.measure.values",
        "installation.gridMeters.0.generalConsumption",
        "installation.gridMeters.0.tariffs",
    ]
    .iter()
    .map(|p| (p.to_string(), "FORBIDDEN".to_string()))
    .collect();
    expected.sort();
    assert_eq!(refused, expected, "{ivan:#}");
    assert!(i["chargingStation"]["lastSession"]["totalSessionEnergy"].is_null());
    assert!(i["chargingStation"]["measure"]["values"].is_null());
    let session_end = &i["chargingStation"]["log"]["entries"][0]["value"];
    assert!(session_end.get("energy").is_none() && session_end.get("cost").is_none(), "{session_end}");
    assert!(session_end.get("sessionDuration").is_some());
    // The BFF refused them itself: no tariff or measure-value call went upstream for Ivan.
    let calls = app.sim().calls_by_route().await;
    assert!(!calls.contains_key("GET /installations/{i}/grid-meters/{gm}/tariffs"), "{calls:#?}");
    assert!(
        !calls.contains_key("POST /installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum"),
        "{calls:#?}"
    );

    // Commands too, right after.
    let q = format!(
        r#"mutation {{ stopCharging(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ status }} }}"#
    );
    let r = app.graphql("ivan", &q, json!({})).await;
    assert_eq!(error_codes(&r), vec!["FORBIDDEN"]);
}

#[tokio::test]
async fn an_installer_disabled_upstream_directly_loses_access_within_the_membership_ttl() {
    let app = spawn_app_with(|c| c.cache_list_ttl_secs = 1).await;
    let q = "{ installation(id: 33) { name } }";
    assert_eq!(data(&app.graphql("ivan", q, json!({})).await)["installation"]["name"], "Mon installation Witty-Home");
    // The owner disables Ivan without going through witty-bff.
    let r = app.sim().post("alice", "/installations/33/users/ivan/operators/disable", json!({})).await;
    assert_eq!(r.status, 204);
    let started = std::time::Instant::now();
    eventually("ivan to lose access", || async {
        let r = app.graphql("ivan", q, json!({})).await;
        (error_codes(&r) == vec!["NOT_FOUND"]).then_some(())
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "within the 1 s membership TTL (and some slack)");
}

#[tokio::test]
async fn a_subscription_ends_when_its_token_expires() {
    let app = spawn_app_with(|c| c.jwt_leeway_secs = 0).await;
    // `exp` is in whole seconds: this token expires 2 to 3 s from now.
    let token = witty_bff::mint_dev_token(JWT_SECRET, "alice", 3, None, None);
    let mut ws = app.watch_events(&token).await;
    let started = std::time::Instant::now();
    // It says why, then completes.
    let end = ws_next(&mut ws).await;
    assert_eq!(end["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{end}");
    let after = started.elapsed();
    assert_eq!(ws_next(&mut ws).await["type"], "complete");
    assert!(after > std::time::Duration::from_millis(1500) && after < std::time::Duration::from_secs(10), "{after:?}");
}

fn rs256_token(sub: &str) -> String {
    let key =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/test-only-rsa-a.key.pem")).unwrap();
    let exp = chrono::Utc::now().timestamp() + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_pem_key_verifies_websocket_connections_too() {
    let app = spawn_app_with(|c| {
        c.jwt_secret = None;
        c.jwt_public_key =
            Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/test-only-rsa-a.pub.pem").into());
    })
    .await;
    let mut ws = app.watch_events(&rs256_token("alice")).await;
    // An HS256 token is refused on this server: the connection is closed with 4403.
    let hs = witty_bff::mint_dev_token(JWT_SECRET, "alice", 600, None, None);
    let mut bad = app.ws_connect("graphql-transport-ws", &hs).await;
    let code = timeout(PATIENCE, async {
        while let Some(Ok(m)) = bad.next().await {
            if let Message::Close(Some(frame)) = m {
                return Some(u16::from(frame.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(4403));
    let _ = ws.send(Message::Close(None)).await;
}

/// Alice (owner) then Ivan (installer) watching `stationEvents` of installation 33, selecting
/// `fields`. Alice watches first: the upstream subscription is hers, so deliveries carry everything.
async fn owner_and_installer_watching(app: &TestApp, fields: &str) -> (Ws, Ws) {
    let q = format!("subscription {{ stationEvents(installationId: 33) {{ {fields} }} }}");
    let alice = app.subscribe_as("alice", &q).await;
    let ivan = app.subscribe_as("ivan", &q).await;
    app.live_subscriptions(2).await;
    (alice, ivan)
}

#[tokio::test]
async fn an_installer_hears_events_without_energy_or_cost() {
    let app = spawn_app().await;
    let (mut alice, mut ivan) = owner_and_installer_watching(&app, "type data").await;
    app.validated_webhook().await;
    app.sim().plug(ALICE_STATION).await;
    app.sim().unplug(ALICE_STATION).await;
    async fn unplugged(ws: &mut Ws) -> Value {
        loop {
            let e = ws_data(ws).await;
            if e["data"]["stationEvents"]["type"] == "CABLE_UNPLUGGED" {
                return e["data"]["stationEvents"]["data"].clone();
            }
        }
    }
    let for_alice = unplugged(&mut alice).await;
    assert!(for_alice.get("sessionEnergy").is_some(), "{for_alice}");
    let for_ivan = unplugged(&mut ivan).await;
    assert!(for_ivan.get("sessionEnergy").is_none() && for_ivan.get("sessionCost").is_none(), "{for_ivan}");
    assert_eq!(for_ivan["availability"], "available");
}

#[tokio::test]
async fn an_installer_watching_station_updates_gets_the_state_but_not_energy_or_cost() {
    let app = spawn_app().await;
    let q = format!(
        r#"subscription {{ chargingStationUpdated(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ availability currentSession {{ startDate totalSessionEnergy }} }} }}"#
    );
    let mut ivan = app.subscribe_as("ivan", &q).await;
    let mut alice = app.subscribe_as("alice", &q).await;
    app.live_subscriptions(2).await;
    app.validated_webhook().await;
    app.sim().plug(ALICE_STATION).await;
    let for_alice = ws_data(&mut alice).await;
    let s = &for_alice["data"]["chargingStationUpdated"];
    assert_eq!(s["availability"], "OCCUPIED", "{for_alice}");
    assert!(s["currentSession"]["totalSessionEnergy"].is_number(), "{for_alice}");
    let for_ivan = ws_data(&mut ivan).await;
    let s = &for_ivan["data"]["chargingStationUpdated"];
    assert_eq!(s["availability"], "OCCUPIED", "{for_ivan}");
    assert!(s["currentSession"]["startDate"].is_string(), "{for_ivan}");
    assert!(s["currentSession"]["totalSessionEnergy"].is_null(), "{for_ivan}");
    assert_eq!(for_ivan["errors"][0]["extensions"]["code"], "FORBIDDEN", "{for_ivan}");
}

#[tokio::test]
async fn house_consumption_cached_before_consent_was_withdrawn_upstream_is_not_served_after() {
    // Station state read afresh each time; history kept for its hour.
    let app = spawn_app_with(|c| c.cache_state_ttl_secs = 0).await;
    let q = format!(
        r#"{{ installation(id: 43) {{ gridMeter(id: "{BOB_CHALET_METER}") {{ authorizeTic
            measure(id: "1") {{ values(operator: SUM, from: "2025-01-05T00:00:00Z", to: "2025-01-06T00:00:00Z", step: DAY) {{ value }} }}
            measures {{ id values(operator: SUM, from: "2025-01-05T00:00:00Z", to: "2025-01-06T00:00:00Z", step: DAY) {{ value }} }} }} }} }}"#
    );
    let r = app.graphql("bob", &q, json!({})).await;
    let meter = &data(&r)["installation"]["gridMeter"];
    assert_eq!(meter["authorizeTic"], "CONSENT", "{r:#}");
    assert!(meter["measure"]["values"][0]["value"].is_number(), "{r:#}");
    // Bob withdraws his consent with another app, straight upstream.
    let path = format!("{}/operators/authorize-tic", meter_path(BOB_CHALET, BOB_CHALET_METER));
    let w = app.sim().post("bob", &path, json!({"authorizeTIC": false})).await;
    assert!(w.status.is_success(), "{:?}", w.body);
    // The upstream refuses the house's values now; so does witty-bff, though it has them cached.
    let r = app.graphql("bob", &q, json!({})).await;
    let meter = &r["data"]["installation"]["gridMeter"];
    assert_eq!(meter["authorizeTic"], "NO_CONSENT", "{r:#}");
    assert_eq!(meter["measure"]["values"], Value::Null, "{r:#}");
    let forbidden = r["errors"].as_array().unwrap();
    assert!(!forbidden.is_empty(), "{r:#}");
    for e in forbidden {
        assert_eq!(e["extensions"]["code"], "FORBIDDEN", "{r:#}");
        assert!(e["message"].as_str().unwrap().contains("authorizeTic"), "says how to fix it: {r:#}");
    }
    assert!(meter["measures"].as_array().unwrap().iter().all(|m| m["values"].is_null()), "{r:#}");
}

#[tokio::test]
async fn an_installer_hears_events_without_energy_or_cost_nested_in_their_data() {
    let app = spawn_app().await;
    let (mut alice, mut ivan) = owner_and_installer_watching(&app, "id data").await;
    let url = app.webhook_url().await;
    let data = json!({
        "session": {"totalSessionEnergy": 7.5, "totalSessionCost": 1.62, "rangeRecoveredByEV": 48, "startDate": "2026-11-27T08:00:00Z"},
        "changed": {"sessionCost": 1.62, "ledPower": 20},
        "entries": [{"energy": 1.0, "plugged": true}]
    });
    let event = grid_event("nested-1", "Hager.WittyHome.SessionEnded", "2026-11-27T09:00:00Z", true, data.clone());
    assert_eq!(app.deliver(&url, json!([event])).await, 200);
    let for_alice = ws_data(&mut alice).await["data"]["stationEvents"]["data"].clone();
    assert_eq!(for_alice, data, "the owner gets it all");
    let for_ivan = ws_data(&mut ivan).await["data"]["stationEvents"]["data"].clone();
    assert_eq!(
        for_ivan,
        json!({"session": {"startDate": "2026-11-27T08:00:00Z"}, "changed": {"ledPower": 20}, "entries": [{"plugged": true}]}),
        "no energy or cost at any depth for an installer"
    );
}
