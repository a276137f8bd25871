//! The 18 mutations through GraphQL over HTTP, against the simulator: each one's effect in the
//! simulator's state and in the next query (no stale cache), every refusal (plugged car, installer,
//! bad input) before anything reaches the upstream, `wait`, idempotency, tariff merging, and
//! command timeouts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

// ---- helpers ----

const STOP_ROUTE: &str = "POST /installations/{i}/charging-stations/{cs}/operators/stop";
const UPDATE_ROUTE: &str = "PUT /installations/{i}/charging-stations/{cs}";
const SET_TARIFFS_ROUTE: &str = "POST /installations/{i}/grid-meters/{gm}/tariffs";

const SET_MODE_KEYED: &str = r#"mutation($i: ID!, $cs: ID!, $mode: ChargeMode!, $key: String) {
    setChargeMode(installationId: $i, chargingStationId: $cs, mode: $mode, idempotencyKey: $key) {
        status chargingStation { id chargeMode fetchedAt }
    }
}"#;

const START_KEYED: &str = r#"mutation($i: ID!, $cs: ID!, $key: String) {
    startCharging(installationId: $i, chargingStationId: $cs, idempotencyKey: $key) {
        status chargingStation { id fetchedAt currentSession { chargingSpeed } }
    }
}"#;

const STOP: &str = r#"mutation($i: ID!, $cs: ID!, $wait: Boolean!) {
    stopCharging(installationId: $i, chargingStationId: $cs, wait: $wait) {
        status chargingStation { id fetchedAt currentSession { chargingSpeed } }
    }
}"#;

const UPDATE: &str = r#"mutation($i: ID!, $cs: ID!, $input: UpdateChargingStationInput!, $wait: Boolean!) {
    updateChargingStation(installationId: $i, chargingStationId: $cs, input: $input, wait: $wait) {
        status chargingStation { id friendlyName ledPower averageEvConsumption tariff3 }
    }
}"#;

const CREATE: &str = r#"mutation($input: CreateInstallationInput!) {
    createInstallation(input: $input) { id name locationName location { latitude longitude } }
}"#;

const ASSOCIATE: &str = r#"mutation($i: ID!, $input: AssociateChargingStationInput!) {
    associateChargingStation(installationId: $i, input: $input) { id uuid timezone culture }
}"#;

const SET_TARIFFS: &str = r#"mutation($i: ID!, $gm: ID!, $tariffs: [TariffPriceInput!]!) {
    setTariffs(installationId: $i, gridMeterId: $gm, tariffs: $tariffs) {
        id friendlyName currency currentPrice values { beginDate value }
    }
}"#;

const TARIFFS: &str = r#"query($i: ID!, $gm: ID!) { installation(id: $i) { gridMeter(id: $gm) {
    tariffs { id friendlyName currency currentPrice values { beginDate value } }
} } }"#;

/// The station's `properties` in the simulator (REST, as the owner).
async fn sim_props(app: &TestApp, sub: &str, i: i64, cs: &str) -> Value {
    app.sim().station(sub, i, cs).await["properties"].clone()
}

/// The calls that could change something upstream (every method but GET).
async fn writes(app: &TestApp) -> BTreeMap<String, u64> {
    app.sim().calls_by_route().await.into_iter().filter(|(k, _)| !k.starts_with("GET ")).collect()
}

async fn set_command_delay(app: &TestApp, ms: u64) {
    let r = app.sim().control(Method::PUT, "/_sim/config", Some(json!({"commandDelayMs": ms}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// Asserts the response failed with exactly one error of `code` whose message contains every one
/// of `words` (case-insensitive), and that the mutation's field is null.
fn assert_refused(r: &Value, code: &str, words: &[&str]) {
    assert_eq!(error_codes(r), vec![code.to_string()], "{r:#}");
    let message = r["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
    for w in words {
        assert!(message.contains(&w.to_lowercase()), "the message should name '{w}': {r:#}");
    }
    if let Some(d) = r["data"].as_object() {
        assert!(d.values().all(Value::is_null), "a refused mutation returns nothing: {r:#}");
    }
}

// ---- commands: wait, ACCEPTED, APPLIED, TIMED_OUT ----

#[tokio::test]
async fn set_charge_mode_with_wait_is_applied_and_the_next_query_shows_the_new_mode() {
    let app = spawn_app().await;
    set_command_delay(&app, 300).await;
    // Warm the cache with the old state, for the owner and for the installer.
    assert_eq!(gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "IMMEDIATE");
    assert_eq!(gql_station(&app, "ivan", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "IMMEDIATE");
    app.sim().reset_calls().await;

    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": true});
    let r = app.graphql("alice", SET_MODE, vars).await;
    assert_eq!(status(&r, "setChargeMode"), "APPLIED", "{r:#}");
    assert_eq!(data(&r)["setChargeMode"]["chargingStation"]["chargeMode"], "DEFERRED");
    assert_eq!(data(&r)["setChargeMode"]["chargingStation"]["id"], ALICE_STATION);

    assert_eq!(sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "deferred");
    assert_eq!(gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "DEFERRED");
    assert_eq!(gql_station(&app, "ivan", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "DEFERRED");
    assert_eq!(
        app.sim().calls_to(SET_MODE_ROUTE).await,
        1,
        "the command is sent once: {:#?}",
        app.sim().calls_by_route().await
    );
}

#[tokio::test]
async fn set_charge_mode_times_out_when_the_station_is_slower_than_the_wait_bound() {
    let app = spawn_app_with(|c| c.command_wait_timeout_ms = 500).await;
    set_command_delay(&app, 3_000).await;
    app.sim().reset_calls().await;

    let started = Instant::now();
    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED_EXCLUSIVE", "wait": true});
    let r = app.graphql("alice", SET_MODE, vars).await;
    let took = started.elapsed();
    assert_eq!(status(&r, "setChargeMode"), "TIMED_OUT", "{r:#}");
    assert_eq!(data(&r)["setChargeMode"]["chargingStation"]["chargeMode"], "IMMEDIATE", "the state as last read");
    assert!(took >= Duration::from_millis(500), "it waited for the bound: {took:?}");
    assert!(took < Duration::from_millis(2_500), "it did not wait for the station: {took:?}");
    // Not applied yet, and not sent again while waiting.
    assert_eq!(sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "immediate");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1);
}

#[tokio::test]
async fn set_charge_mode_without_wait_is_accepted_at_once_and_the_change_shows_later() {
    let app = spawn_app().await;
    set_command_delay(&app, 1_000).await;
    assert_eq!(gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "IMMEDIATE");

    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": false});
    let r = app.graphql("alice", SET_MODE, vars).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
    // Answered before the station applied it.
    assert_eq!(sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "immediate");

    eventually("the simulator applies the charge mode", || async {
        (sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"] == "deferred").then_some(())
    })
    .await;
    // Nothing re-cached the old state since the command: the next query shows the new mode.
    assert_eq!(gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "DEFERRED");
}

#[tokio::test]
async fn start_and_stop_with_wait_on_a_plugged_car_are_applied_and_show_in_the_session() {
    let app = spawn_app().await;
    // Bob's car is plugged in deferred mode: not charging.
    let before = gql_station(&app, "bob", BOB_INSTALLATION, BOB_STATION).await;
    assert_eq!(before["currentSession"]["chargingSpeed"], "none", "{before:#}");

    let r = app.graphql("bob", START, json!({"i": "42", "cs": BOB_STATION, "wait": true})).await;
    assert_eq!(status(&r, "startCharging"), "APPLIED", "{r:#}");
    assert_eq!(data(&r)["startCharging"]["chargingStation"]["currentSession"]["chargingSpeed"], "optimal");
    let sim = sim_props(&app, "bob", BOB_INSTALLATION, BOB_STATION).await;
    assert_eq!(sim["currentSession"]["chargingSpeed"], "optimal");
    let after = gql_station(&app, "bob", BOB_INSTALLATION, BOB_STATION).await;
    assert_eq!(after["currentSession"]["chargingSpeed"], "optimal");

    let r = app.graphql("bob", STOP, json!({"i": "42", "cs": BOB_STATION, "wait": true})).await;
    assert_eq!(status(&r, "stopCharging"), "APPLIED", "{r:#}");
    assert_eq!(data(&r)["stopCharging"]["chargingStation"]["currentSession"]["chargingSpeed"], "none");
    let sim = sim_props(&app, "bob", BOB_INSTALLATION, BOB_STATION).await;
    assert_eq!(sim["currentSession"]["chargingSpeed"], "none");
    let after = gql_station(&app, "bob", BOB_INSTALLATION, BOB_STATION).await;
    assert_eq!(after["currentSession"]["chargingSpeed"], "none");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);
    assert_eq!(app.sim().calls_to(STOP_ROUTE).await, 1);
}

#[tokio::test]
async fn update_charging_station_with_wait_applies_the_settings_and_the_next_query_shows_them() {
    let app = spawn_app().await;
    let before = gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(before["ledPower"], 50);
    assert_eq!(before["tariff3"], "HC");

    let input = json!({"friendlyName": "Garage nord", "ledPower": 20, "averageEvConsumption": 17.5, "tariff3": "HP"});
    let r = app.graphql("alice", UPDATE, json!({"i": "33", "cs": ALICE_STATION, "input": input, "wait": true})).await;
    assert_eq!(status(&r, "updateChargingStation"), "APPLIED", "{r:#}");
    let s = &data(&r)["updateChargingStation"]["chargingStation"];
    assert_eq!(s["friendlyName"], "Garage nord");
    assert_eq!(s["ledPower"], 20);
    assert_eq!(s["averageEvConsumption"], 17.5);
    assert_eq!(s["tariff3"], "HP");

    let p = sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(p["friendlyName"], "Garage nord");
    assert_eq!(p["ledPower"], 20);
    assert_eq!(p["averageEvConsumption"], "17.5");
    assert_eq!(p["tariff3"], "hp");

    let after = gql_station(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(after["friendlyName"], "Garage nord");
    assert_eq!(after["ledPower"], 20);
    assert_eq!(after["averageEvConsumption"], 17.5);
    assert_eq!(after["tariff3"], "HP");
    assert_eq!(app.sim().calls_to(UPDATE_ROUTE).await, 1);
}

#[tokio::test]

async fn wait_is_an_optional_nullable_boolean_as_the_contract_says() {
    let app = spawn_app().await;
    // DESIGN.md: `wait: Boolean = false`. A nullable variable, left out or null, means no waiting.
    let q = r#"mutation($cs: ID!, $w: Boolean) {
        setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED, wait: $w) { status }
    }"#;
    let r = app.graphql("alice", q, json!({"cs": ALICE_STATION})).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
    let q = r#"mutation($cs: ID!) {
        setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED, wait: null) { status }
    }"#;
    let r = app.graphql("alice", q, json!({"cs": ALICE_STATION})).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
}

// ---- refusals: plugged car, nothing plugged ----

#[tokio::test]
async fn a_plugged_car_refuses_charge_mode_led_power_and_tariff_slots_with_conflict_before_sending() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;

    let r =
        app.graphql("bob", SET_MODE, json!({"i": "42", "cs": BOB_STATION, "mode": "IMMEDIATE", "wait": false})).await;
    assert_refused(&r, "CONFLICT", &["unplug"]);

    for input in [json!({"ledPower": 30}), json!({"tariff1": "HP"}), json!({"friendlyName": "x", "tariff10": "HC"})] {
        let vars = json!({"i": "42", "cs": BOB_STATION, "input": input, "wait": false});
        let r = app.graphql("bob", UPDATE, vars).await;
        assert_refused(&r, "CONFLICT", &["unplug"]);
    }
    assert_eq!(writes(&app).await, BTreeMap::new(), "nothing is sent upstream");
    assert_eq!(sim_props(&app, "bob", BOB_INSTALLATION, BOB_STATION).await["chargeMode"], "deferred");

    // The name may change with a car plugged.
    let vars = json!({"i": "42", "cs": BOB_STATION, "input": {"friendlyName": "Borne"}, "wait": true});
    let r = app.graphql("bob", UPDATE, vars).await;
    assert_eq!(status(&r, "updateChargingStation"), "APPLIED", "{r:#}");
    assert_eq!(sim_props(&app, "bob", BOB_INSTALLATION, BOB_STATION).await["friendlyName"], "Borne");
}

#[tokio::test]
async fn start_or_stop_with_nothing_plugged_is_a_conflict_before_sending() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    for (q, field) in [(START, "startCharging"), (STOP, "stopCharging")] {
        let r = app.graphql("alice", q, json!({"i": "33", "cs": ALICE_STATION, "wait": true})).await;
        assert_refused(&r, "CONFLICT", &["no car is plugged"]);
        assert!(r["data"][field].is_null());
    }
    assert_eq!(writes(&app).await, BTreeMap::new());
}

// ---- refusals: installers ----

#[tokio::test]
async fn an_installer_is_forbidden_every_owner_only_mutation_and_nothing_reaches_the_upstream() {
    let app = spawn_app().await;
    let device = app.sim().devices().await[0]["uid"].as_str().unwrap().to_string();
    let cs = ALICE_STATION;
    let gm = ALICE_METER;
    let cases: Vec<(&str, String)> = vec![
        (
            "setChargeMode",
            format!(
                r#"mutation {{ setChargeMode(installationId: 33, chargingStationId: "{cs}", mode: DEFERRED, wait: true) {{ status }} }}"#
            ),
        ),
        (
            "startCharging",
            format!(r#"mutation {{ startCharging(installationId: 33, chargingStationId: "{cs}") {{ status }} }}"#),
        ),
        (
            "stopCharging",
            format!(r#"mutation {{ stopCharging(installationId: 33, chargingStationId: "{cs}") {{ status }} }}"#),
        ),
        (
            "updateChargingStation",
            format!(
                r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{friendlyName: "mine"}}) {{ status }} }}"#
            ),
        ),
        (
            "associateChargingStation",
            format!(
                r#"mutation {{ associateChargingStation(installationId: 33, input: {{uid: "{device}", timezone: ROMANCE_STANDARD_TIME, culture: FR_FR}}) {{ id }} }}"#
            ),
        ),
        (
            "removeChargingStation",
            format!(r#"mutation {{ removeChargingStation(installationId: 33, chargingStationId: "{cs}") }}"#),
        ),
        (
            "inviteInstaller",
            r#"mutation { inviteInstaller(installationId: 33, email: "friend@installer.example.com") { email } }"#
                .to_string(),
        ),
        (
            "cancelInvitation",
            r#"mutation { cancelInvitation(installationId: 33, email: "friend@installer.example.com") }"#.to_string(),
        ),
        ("disableInstaller", r#"mutation { disableInstaller(installationId: 33, accountId: "ivan") }"#.to_string()),
        ("enableInstaller", r#"mutation { enableInstaller(installationId: 33, accountId: "ivan") }"#.to_string()),
        (
            "removeInstallationUser",
            r#"mutation { removeInstallationUser(installationId: 33, accountId: "ivan") }"#.to_string(),
        ),
        (
            "authorizeTic",
            format!(
                r#"mutation {{ authorizeTic(installationId: 33, gridMeterId: "{gm}", authorize: false) {{ id }} }}"#
            ),
        ),
        (
            "setTariffs",
            format!(
                r#"mutation {{ setTariffs(installationId: 33, gridMeterId: "{gm}", tariffs: [{{id: HC, value: 0.01}}]) {{ id }} }}"#
            ),
        ),
    ];
    app.sim().reset_calls().await;
    for (field, q) in &cases {
        let r = app.graphql("ivan", q, json!({})).await;
        assert_eq!(error_codes(&r), vec!["FORBIDDEN".to_string()], "{field}: {r:#}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("owner"), "{field}: {r:#}");
        assert!(r["data"].is_null() || r["data"][field].is_null(), "{field}: {r:#}");
    }
    assert_eq!(writes(&app).await, BTreeMap::new(), "nothing but reads reached the simulator");
    // And nothing changed.
    let p = sim_props(&app, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(p["chargeMode"], "immediate");
    assert_eq!(p["friendlyName"], "my garage charging station");
    let users = app.sim().get("alice", "/installations/33/users").await.body;
    assert!(users.as_array().unwrap().iter().any(|u| u["accountId"] == "ivan" && u["enabled"] == true), "{users:#}");
}

// ---- refusals: bad input ----

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_field_before_anything_is_sent_upstream() {
    let app = spawn_app().await;
    let (cs, gm) = (ALICE_STATION, ALICE_METER);
    let loc = r#"location: {latitude: 44.8, longitude: -0.6}"#;
    let cases: Vec<(&str, &str, String)> = vec![
        ("alice", "qrCode", r#"mutation { associateChargingStation(installationId: 33, input: {timezone: ROMANCE_STANDARD_TIME, culture: FR_FR}) { id } }"#.into()),
        ("alice", "uid", r#"mutation { associateChargingStation(installationId: 33, input: {uid: " ", qrCode: "", timezone: ROMANCE_STANDARD_TIME, culture: FR_FR}) { id } }"#.into()),
        ("alice", "timezone", r#"mutation { associateChargingStation(installationId: 33, input: {uid: "Fbo5WTTsSeeLQ8YYoLzNwN", timezone: UNKNOWN, culture: FR_FR}) { id } }"#.into()),
        ("alice", "culture", r#"mutation { associateChargingStation(installationId: 33, input: {uid: "Fbo5WTTsSeeLQ8YYoLzNwN", timezone: ROMANCE_STANDARD_TIME, culture: UNKNOWN}) { id } }"#.into()),
        ("alice", "email", r#"mutation { inviteInstaller(installationId: 33, email: "not-an-email") { email } }"#.into()),
        ("alice", "email", r#"mutation { inviteInstaller(installationId: 33, email: "a@b") { email } }"#.into()),
        ("alice", "culture", r#"mutation { inviteInstaller(installationId: 33, email: "x@installer.example.com", culture: UNKNOWN) { email } }"#.into()),
        ("alice", "email", r#"mutation { cancelInvitation(installationId: 33, email: "nobody at example.com") }"#.into()),
        ("alice", "value", format!(r#"mutation {{ setTariffs(installationId: 33, gridMeterId: "{gm}", tariffs: [{{id: HC, value: -0.1}}]) {{ id }} }}"#)),
        ("alice", "id", format!(r#"mutation {{ setTariffs(installationId: 33, gridMeterId: "{gm}", tariffs: [{{id: UNKNOWN, value: 0.1}}]) {{ id }} }}"#)),
        ("alice", "tariffs[1].id", format!(r#"mutation {{ setTariffs(installationId: 33, gridMeterId: "{gm}", tariffs: [{{id: HP, value: 0.1}}, {{id: HP, value: 0.2}}]) {{ id }} }}"#)),
        ("alice", "currency", format!(r#"mutation {{ setTariffs(installationId: 33, gridMeterId: "{gm}", tariffs: [{{id: HC, value: 0.1, currency: "euro"}}]) {{ id }} }}"#)),
        ("alice", "name", format!(r#"mutation {{ createInstallation(input: {{name: "  ", locationName: "Bordeaux", {loc}}}) {{ id }} }}"#)),
        ("alice", "locationName", format!(r#"mutation {{ createInstallation(input: {{name: "Maison", locationName: "", {loc}}}) {{ id }} }}"#)),
        ("alice", "latitude", r#"mutation { createInstallation(input: {name: "Maison", locationName: "Bordeaux", location: {latitude: 91, longitude: 0}}) { id } }"#.into()),
        ("alice", "longitude", r#"mutation { createInstallation(input: {name: "Maison", locationName: "Bordeaux", location: {latitude: 0, longitude: -181}}) { id } }"#.into()),
        ("alice", "ledPower", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{ledPower: 101}}) {{ status }} }}"#)),
        ("alice", "ledPower", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{ledPower: -1}}) {{ status }} }}"#)),
        ("alice", "friendlyName", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{friendlyName: " "}}) {{ status }} }}"#)),
        ("alice", "averageEvConsumption", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{averageEvConsumption: 0}}) {{ status }} }}"#)),
        ("alice", "tariff1", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{tariff1: UNKNOWN}}) {{ status }} }}"#)),
        ("alice", "input", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{}}) {{ status }} }}"#)),
        ("alice", "mode", format!(r#"mutation {{ setChargeMode(installationId: 33, chargingStationId: "{cs}", mode: UNKNOWN) {{ status }} }}"#)),
        // Not a value of the enum at all: refused by validation, still naming the argument.
        ("alice", "mode", format!(r#"mutation {{ setChargeMode(installationId: 33, chargingStationId: "{cs}", mode: FAST) {{ status }} }}"#)),
        ("alice", "webhookUrl", r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "not a url") { id } }"#.into()),
        ("alice", "webhookUrl", r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "ftp://example.com/hook") { id } }"#.into()),
        ("alice", "webhookUrl", r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "/webhooks/witty") { id } }"#.into()),
        // Blank would widen it to every type.
        ("alice", "eventType", r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "https://example.com/e", eventType: "  ") { id } }"#.into()),
        // A control character would be stored and shown back everywhere.
        ("alice", "friendlyName", format!(r#"mutation {{ updateChargingStation(installationId: 33, chargingStationId: "{cs}", input: {{friendlyName: "a\u0007b"}}) {{ status }} }}"#)),
        ("alice", "name", r#"mutation { createInstallation(input: {name: "Mai\nson", locationName: "Bordeaux", location: {latitude: 0, longitude: 0}}) { id } }"#.into()),
    ];
    app.sim().reset_calls().await;
    for (sub, field, q) in &cases {
        let r = app.graphql(sub, q, json!({})).await;
        assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT".to_string()], "{q}: {r:#}");
        let message = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "the message should name '{field}': {q}: {r:#}");
    }
    let calls = app.sim().calls_by_route().await;
    assert_eq!(app.sim().total_calls().await, 0, "refused before anything was sent upstream: {calls:#?}");
}

#[tokio::test]
async fn tariff_ids_foreign_to_the_subscription_are_refused_listing_the_valid_ones() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let vars = json!({"i": "51", "gm": DIETER_METER, "tariffs": [{"id": "HC", "value": 0.1}]});
    let r = app.graphql("dieter", SET_TARIFFS, vars).await;
    assert_refused(&r, "BAD_USER_INPUT", &["HC", "STANDARD"]);
    let message = r["errors"][0]["message"].as_str().unwrap();
    for n in 1..=10 {
        assert!(message.contains(&format!("TARIFF{n}")), "lists TARIFF{n}: {message}");
    }

    let vars =
        json!({"i": "33", "gm": ALICE_METER, "tariffs": [{"id": "HC", "value": 0.1}, {"id": "TH", "value": 0.1}]});
    let r = app.graphql("alice", SET_TARIFFS, vars).await;
    assert_refused(
        &r,
        "BAD_USER_INPUT",
        &["TH is not a tariff of this meter's HCHP subscription", "valid tariffs: HC, HP"],
    );
    assert_eq!(writes(&app).await, BTreeMap::new(), "nothing was sent");
}

// ---- setTariffs ----

/// The simulator's tariffs of a meter, by id.
async fn sim_tariffs(app: &TestApp, sub: &str, i: i64, gm: &str) -> BTreeMap<String, Value> {
    let r = app.sim().get(sub, &format!("{}/tariffs", meter_path(i, gm))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body.as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap().to_string(), t.clone())).collect()
}

#[tokio::test]

async fn tariff_ids_have_the_contract_names() {
    let app = spawn_app().await;
    let r = app.graphql("alice", r#"{ __type(name: "TariffId") { enumValues { name } } }"#, json!({})).await;
    let names: Vec<String> = data(&r)["__type"]["enumValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> =
        ["TH", "HC", "HP", "HN", "PM", "HCJB", "HPJB", "HCJW", "HPJW", "HCJR", "HPJR"].map(String::from).to_vec();
    expected.extend((1..=10).map(|n| format!("TARIFF{n}")));
    expected.push("UNKNOWN".into());
    assert_eq!(names, expected);
}

#[tokio::test]
async fn set_tariffs_with_one_hchp_price_sends_both_and_keeps_the_other() {
    let app = spawn_app().await;
    let before = sim_tariffs(&app, "alice", ALICE_INSTALLATION, ALICE_METER).await;
    let q = r#"query($gm: ID!) { installation(id: 33) { gridMeter(id: $gm) {
        tariffs { id currentPrice values { value } } hc: tariff(id: HC) { currentPrice }
    } } }"#;
    let warm = app.graphql("alice", q, json!({"gm": ALICE_METER})).await;
    assert_eq!(data(&warm)["installation"]["gridMeter"]["hc"]["currentPrice"], 0.2068);
    app.sim().reset_calls().await;

    let vars = json!({"i": "33", "gm": ALICE_METER, "tariffs": [{"id": "HC", "value": 0.1234}]});
    let r = app.graphql("alice", SET_TARIFFS, vars).await;
    let saved = data(&r)["setTariffs"].as_array().unwrap().clone();
    assert_eq!(saved.len(), 2, "{r:#}");
    assert_eq!(app.sim().calls_to(SET_TARIFFS_ROUTE).await, 1);

    let after = sim_tariffs(&app, "alice", ALICE_INSTALLATION, ALICE_METER).await;
    assert_eq!(after["hc"]["values"][0]["value"], 0.1234);
    assert_eq!(after["hc"]["values"].as_array().unwrap().len(), 2);
    assert_eq!(after["hp"]["values"], before["hp"]["values"], "HP unchanged");
    assert_eq!(after["hp"]["friendlyName"], before["hp"]["friendlyName"]);

    let q = app.graphql("alice", q, json!({"gm": ALICE_METER})).await;
    let meter = &data(&q)["installation"]["gridMeter"];
    assert_eq!(meter["hc"]["currentPrice"], 0.1234);
    let hp = meter["tariffs"].as_array().unwrap().iter().find(|t| t["id"] == "HP").unwrap();
    assert_eq!(hp["currentPrice"], before["hp"]["values"][0]["value"]);
    let hc = meter["tariffs"].as_array().unwrap().iter().find(|t| t["id"] == "HC").unwrap();
    assert_eq!(hc["values"].as_array().unwrap().len(), 2);
}

#[tokio::test]

async fn set_tariffs_with_three_standard_prices_sends_all_ten_and_keeps_the_seven_others() {
    let app = spawn_app().await;
    let before = sim_tariffs(&app, "dieter", DIETER_INSTALLATION, DIETER_METER).await;
    assert_eq!(before.len(), 10);
    // Warm the cache.
    let warm = app.graphql("dieter", TARIFFS, json!({"i": "51", "gm": DIETER_METER})).await;
    assert_eq!(data(&warm)["installation"]["gridMeter"]["tariffs"].as_array().unwrap().len(), 10);
    app.sim().reset_calls().await;

    let prices = json!([
        {"id": "TARIFF1", "value": 0.11},
        {"id": "TARIFF4", "value": 0.22},
        {"id": "TARIFF9", "value": 0.33, "friendlyName": "Nuit"},
    ]);
    let r = app.graphql("dieter", SET_TARIFFS, json!({"i": "51", "gm": DIETER_METER, "tariffs": prices})).await;
    let saved = data(&r)["setTariffs"].as_array().unwrap().clone();
    assert_eq!(saved.len(), 10, "the complete set: {r:#}");
    assert_eq!(app.sim().calls_to(SET_TARIFFS_ROUTE).await, 1);

    let changed: BTreeMap<&str, f64> = [("tariff1", 0.11), ("tariff4", 0.22), ("tariff9", 0.33)].into_iter().collect();
    let after = sim_tariffs(&app, "dieter", DIETER_INSTALLATION, DIETER_METER).await;
    assert_eq!(after.len(), 10);
    for (id, old) in &before {
        let new = &after[id];
        let old_values = old["values"].as_array().unwrap();
        let new_values = new["values"].as_array().unwrap();
        match changed.get(id.as_str()) {
            Some(price) => {
                assert_eq!(new_values.len(), old_values.len() + 1, "{id}: {new:#}");
                assert_eq!(new_values[0]["value"], *price, "{id}: newest first: {new:#}");
                assert_eq!(&new_values[1..], old_values.as_slice(), "{id}: history kept");
            }
            None => {
                assert_eq!(new_values, old_values, "{id} keeps its prices and history: {old:#} → {new:#}");
                assert_eq!(new["friendlyName"], old["friendlyName"], "{id}");
                assert_eq!(new["currency"], old["currency"], "{id}");
            }
        }
    }
    assert_eq!(after["tariff9"]["friendlyName"], "Nuit");
    assert_eq!(after["tariff1"]["friendlyName"], before["tariff1"]["friendlyName"]);

    // The next query shows the new prices (not the cached ones), the others as they were.
    let q = app.graphql("dieter", TARIFFS, json!({"i": "51", "gm": DIETER_METER})).await;
    let tariffs = data(&q)["installation"]["gridMeter"]["tariffs"].as_array().unwrap().clone();
    assert_eq!(tariffs.len(), 10);
    for t in &tariffs {
        let id = t["id"].as_str().unwrap().to_lowercase();
        let expected = match changed.get(id.as_str()) {
            Some(p) => *p,
            None => before[&id]["values"][0]["value"].as_f64().unwrap(),
        };
        assert_eq!(t["currentPrice"].as_f64(), Some(expected), "{id}: {t:#}");
        let history = before[&id]["values"].as_array().unwrap().len() + usize::from(changed.contains_key(id.as_str()));
        assert_eq!(t["values"].as_array().unwrap().len(), history, "{id}: {t:#}");
    }
    let nuit = tariffs.iter().find(|t| t["id"] == "TARIFF9").unwrap();
    assert_eq!(nuit["friendlyName"], "Nuit");
}

// ---- idempotency ----

#[tokio::test]
async fn the_same_start_sent_twice_with_one_idempotency_key_header_reaches_the_upstream_once() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let vars = json!({"i": "42", "cs": BOB_STATION, "wait": false});
    let first = app.post_with_key("bob", "start-7f3a", START, vars.clone()).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    let second = app.post_with_key("bob", "start-7f3a", START, vars.clone()).await;
    assert_eq!(second, first, "the first answer again");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);

    // A new key is a new command.
    let third = app.post_with_key("bob", "start-other", START, vars).await;
    assert_eq!(status(&third, "startCharging"), "ACCEPTED", "{third:#}");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 2);
}

#[tokio::test]
async fn the_same_start_sent_twice_with_one_idempotency_key_argument_reaches_the_upstream_once() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let vars = json!({"i": "42", "cs": BOB_STATION, "key": "mobile-retry-1"});
    let first = app.graphql("bob", START_KEYED, vars.clone()).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    let second = app.graphql("bob", START_KEYED, vars).await;
    assert_eq!(second, first);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn reusing_an_idempotency_key_with_other_arguments_is_bad_user_input() {
    let app = spawn_app().await;
    // Bob's chalet station gets a car too, so that both starts would be valid.
    assert_eq!(app.sim().plug(BOB_CHALET_STATION).await.status, 200);
    app.sim().reset_calls().await;

    let first = app.post_with_key("bob", "k-1", START, json!({"i": "42", "cs": BOB_STATION, "wait": false})).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    let other =
        app.post_with_key("bob", "k-1", START, json!({"i": "43", "cs": BOB_CHALET_STATION, "wait": false})).await;
    assert_refused(&other, "BAD_USER_INPUT", &["idempotency key"]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);

    let vars = |mode: &str| json!({"i": "33", "cs": ALICE_STATION, "mode": mode, "key": "mode-1"});
    let first = app.graphql("alice", SET_MODE_KEYED, vars("DEFERRED")).await;
    assert_eq!(status(&first, "setChargeMode"), "ACCEPTED", "{first:#}");
    let other = app.graphql("alice", SET_MODE_KEYED, vars("DEFERRED_EXCLUSIVE")).await;
    assert_refused(&other, "BAD_USER_INPUT", &["idempotency key"]);
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_with_one_idempotency_key_reach_the_upstream_once() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let vars = json!({"i": "42", "cs": BOB_STATION, "wait": false});
    let sends = (0..8).map(|_| app.post_with_key("bob", "burst-1", START, vars.clone()));
    let answers = futures::future::join_all(sends).await;
    assert_eq!(status(&answers[0], "startCharging"), "ACCEPTED", "{:#}", answers[0]);
    for a in &answers {
        assert_eq!(a, &answers[0]);
    }
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]

async fn a_key_reused_with_another_wait_is_bad_user_input() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let first = app.post_with_key("bob", "w-1", START, json!({"i": "42", "cs": BOB_STATION, "wait": false})).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    // Another request under the same key: refused, not answered with the first (ACCEPTED) result.
    let other = app.post_with_key("bob", "w-1", START, json!({"i": "42", "cs": BOB_STATION, "wait": true})).await;
    assert_refused(&other, "BAD_USER_INPUT", &["idempotency key"]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);
}

#[tokio::test]
async fn different_callers_may_use_the_same_idempotency_key() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let a = app
        .post_with_key(
            "alice",
            "same",
            SET_MODE,
            json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": false}),
        )
        .await;
    let d = app
        .post_with_key(
            "dieter",
            "same",
            SET_MODE,
            json!({"i": "51", "cs": DIETER_STATION, "mode": "DEFERRED", "wait": false}),
        )
        .await;
    assert_eq!(status(&a, "setChargeMode"), "ACCEPTED", "{a:#}");
    assert_eq!(status(&d, "setChargeMode"), "ACCEPTED", "{d:#}");
    assert_eq!(data(&d)["setChargeMode"]["chargingStation"]["id"], DIETER_STATION);
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2);
}

#[tokio::test]

async fn a_failure_before_the_command_was_sent_does_not_pin_the_idempotency_key() {
    let app = spawn_app().await;
    // The station cannot be read: nothing is sent, the client is told to try again later.
    let f = app
        .sim()
        .set_faults(
            json!({"errorRate": 1.0, "errorStatus": 503, "routes": ["GET /installations/{i}/charging-stations/{cs}"]}),
        )
        .await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    app.sim().reset_calls().await;
    let vars = json!({"i": "42", "cs": BOB_STATION, "wait": false});
    let first = app.post_with_key("bob", "retry-me", START, vars.clone()).await;
    assert_refused(&first, "UPSTREAM_UNAVAILABLE", &[]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 0, "nothing was sent");

    // The client retries with the same key once the service is back: the command goes through.
    app.sim().clear_faults().await;
    let retry = app.post_with_key("bob", "retry-me", START, vars).await;
    assert_eq!(status(&retry, "startCharging"), "ACCEPTED", "{retry:#}");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1);
}

/// `setChargeMode` of Alice's station with an `idempotencyKey` argument, under `alias` (none:
/// the field's own name).
fn keyed_set_mode(alias: Option<&str>, mode: &str, key: &str) -> String {
    let alias = alias.map(|a| format!("{a}: ")).unwrap_or_default();
    format!(
        r#"mutation {{ {alias}setChargeMode(installationId: 33, chargingStationId: "{ALICE_STATION}", mode: {mode},
            idempotencyKey: "{key}") {{ status chargingStation {{ id chargeMode fetchedAt }} }} }}"#
    )
}

#[tokio::test]
async fn a_retry_under_another_alias_returns_the_first_result_without_calling_the_upstream() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let first = app.graphql("alice", &keyed_set_mode(None, "IMMEDIATE", "K"), json!({})).await;
    assert_eq!(status(&first, "setChargeMode"), "ACCEPTED", "{first:#}");
    let retry = app.graphql("alice", &keyed_set_mode(Some("retry"), "IMMEDIATE", "K"), json!({})).await;
    assert_eq!(data(&retry)["retry"], data(&first)["setChargeMode"], "the first answer again");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);

    // The same with the `Idempotency-Key` header.
    let start = |alias: &str| {
        format!(
            r#"mutation($i: ID!, $cs: ID!) {{ {alias}startCharging(installationId: $i, chargingStationId: $cs) {{
                status chargingStation {{ id fetchedAt }} }} }}"#
        )
    };
    let vars = json!({"i": "42", "cs": BOB_STATION});
    let first = app.post_with_key("bob", "start-h", &start(""), vars.clone()).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    let retry = app.post_with_key("bob", "start-h", &start("again: "), vars).await;
    assert_eq!(data(&retry)["again"], data(&first)["startCharging"]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);

    // A key given as the argument, then as the header (the request being one mutation, beside
    // `__typename`): the same key of the same request, both ways.
    let unkeyed = format!(
        r#"mutation {{ __typename setChargeMode(installationId: 33, chargingStationId: "{ALICE_STATION}", mode: IMMEDIATE) {{
            status chargingStation {{ id chargeMode fetchedAt }} }} }}"#
    );
    let by_argument = app.graphql("alice", &keyed_set_mode(None, "IMMEDIATE", "both-ways"), json!({})).await;
    let by_header = app.post_with_key("alice", "both-ways", &unkeyed, json!({})).await;
    assert_eq!(data(&by_header)["setChargeMode"], data(&by_argument)["setChargeMode"], "{by_header:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "K and both-ways: {:#?}", app.sim().calls_by_route().await);

    // An invitation sent again under another alias is the same invitation, not a CONFLICT.
    let invite = |alias: &str| {
        format!(
            r#"mutation {{ {alias}inviteInstaller(installationId: 33, email: "tech@installer.example.com",
                idempotencyKey: "inv-alias") {{ email expirationDate }} }}"#
        )
    };
    let first = app.graphql("alice", &invite(""), json!({})).await;
    assert_eq!(data(&first)["inviteInstaller"]["email"], "tech@installer.example.com", "{first:#}");
    let retry = app.graphql("alice", &invite("b: "), json!({})).await;
    assert_eq!(data(&retry)["b"], data(&first)["inviteInstaller"]);
    assert_eq!(app.sim().calls_to("POST /installations/{i}/invitations").await, 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_under_another_alias_is_refused_and_nothing_is_sent() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let first = app.graphql("alice", &keyed_set_mode(None, "IMMEDIATE", "K"), json!({})).await;
    assert_eq!(status(&first, "setChargeMode"), "ACCEPTED", "{first:#}");

    // Other arguments, under another alias or none.
    for alias in [Some("again"), None] {
        let other = app.graphql("alice", &keyed_set_mode(alias, "DEFERRED", "K"), json!({})).await;
        assert_refused(&other, "BAD_USER_INPUT", &["idempotency key 'K'", "different request", "nothing was sent"]);
    }
    // Another mutation.
    let q = format!(
        r#"mutation {{ s: stopCharging(installationId: 33, chargingStationId: "{ALICE_STATION}", idempotencyKey: "K") {{ status }} }}"#
    );
    let other = app.graphql("alice", &q, json!({})).await;
    assert_refused(&other, "BAD_USER_INPUT", &["idempotency key 'K'", "setChargeMode"]);
    assert_eq!(writes(&app).await, BTreeMap::from([(SET_MODE_ROUTE.to_string(), 1)]));
    assert_eq!(sim_props(&app, "alice", 33, ALICE_STATION).await["chargeMode"], "immediate");
}

#[tokio::test]
async fn one_idempotency_key_header_covers_each_mutation_of_a_request_whatever_its_aliases() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let two = |a: &str, b: &str, first: &str, second: &str| {
        format!(
            r#"mutation($cs: ID!) {{
                {a}: setChargeMode(installationId: 33, chargingStationId: $cs, mode: {first}) {{ status }}
                {b}: setChargeMode(installationId: 33, chargingStationId: $cs, mode: {second}) {{ status }}
            }}"#
        )
    };
    let vars = json!({"cs": ALICE_STATION});
    let r = app.post_with_key("alice", "two", &two("a", "b", "DEFERRED", "IMMEDIATE"), vars.clone()).await;
    assert_eq!(data(&r), &json!({"a": {"status": "ACCEPTED"}, "b": {"status": "ACCEPTED"}}));
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "each mutation of the request is sent");

    // The same request with other aliases: the first answers, nothing sent.
    let r = app.post_with_key("alice", "two", &two("x", "y", "DEFERRED", "IMMEDIATE"), vars.clone()).await;
    assert_eq!(data(&r), &json!({"x": {"status": "ACCEPTED"}, "y": {"status": "ACCEPTED"}}));
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2);

    // Another request under the same header: refused, nothing sent.
    let r = app.post_with_key("alice", "two", &two("a", "b", "IMMEDIATE", "DEFERRED"), vars).await;
    assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT", "BAD_USER_INPUT"], "{r:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2);
}

#[tokio::test]
async fn one_idempotency_key_header_names_a_whole_request_never_one_of_another_size() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let one = r#"mutation($cs: ID!) { setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED) { status } }"#;
    let two = r#"mutation($cs: ID!) {
        a: setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED) { status }
        b: setChargeMode(installationId: 33, chargingStationId: $cs, mode: IMMEDIATE) { status }
    }"#;
    let vars = json!({"cs": ALICE_STATION});
    // Two mutations, then one that is the first of them under the same key: another request.
    let r = app.post_with_key("alice", "size-1", two, vars.clone()).await;
    assert_eq!(data(&r), &json!({"a": {"status": "ACCEPTED"}, "b": {"status": "ACCEPTED"}}), "{r:#}");
    let r = app.post_with_key("alice", "size-1", one, vars.clone()).await;
    assert_refused(&r, "BAD_USER_INPUT", &["idempotency key 'size-1'", "different request", "nothing was sent"]);
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "nothing sent for the second request");
    // One, then two whose first is that one: both of the two are refused, nothing sent.
    let r = app.post_with_key("alice", "size-2", one, vars.clone()).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
    let r = app.post_with_key("alice", "size-2", two, vars.clone()).await;
    assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT", "BAD_USER_INPUT"], "{r:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 3, "{:#?}", app.sim().calls_by_route().await);
    // Two, then two whose first differs and whose second is the same: the second mutation is
    // part of another request too, not the first one's second again.
    let other = r#"mutation($cs: ID!) {
        a: setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED_EXCLUSIVE) { status }
        b: setChargeMode(installationId: 33, chargingStationId: $cs, mode: IMMEDIATE) { status }
    }"#;
    let r = app.post_with_key("alice", "size-3", two, vars.clone()).await;
    assert_eq!(data(&r), &json!({"a": {"status": "ACCEPTED"}, "b": {"status": "ACCEPTED"}}), "{r:#}");
    let r = app.post_with_key("alice", "size-3", other, vars).await;
    assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT", "BAD_USER_INPUT"], "{r:#}");
    assert!(r["errors"][1]["message"].as_str().unwrap().contains("different request"), "{r:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 5, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn a_header_key_whose_first_mutation_sent_nothing_still_names_its_whole_request() {
    let app = spawn_app().await;
    // A car at Alice's station: a charge mode change is refused before anything is sent, a start goes.
    assert_eq!(app.sim().plug(ALICE_STATION).await.status, 200);
    app.sim().reset_calls().await;
    let two = r#"mutation($cs: ID!) {
        a: setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED) { status }
        b: startCharging(installationId: 33, chargingStationId: $cs) { status }
    }"#;
    let vars = json!({"cs": ALICE_STATION});
    let r = app.post_with_key("alice", "half", two, vars.clone()).await;
    assert_eq!(error_codes(&r), vec!["CONFLICT"], "{r:#}");
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "the start was sent");
    // The start alone under the same key is another request: refused, not sent again.
    let one = r#"mutation($cs: ID!) { startCharging(installationId: 33, chargingStationId: $cs) { status } }"#;
    let r = app.post_with_key("alice", "half", one, vars).await;
    assert_refused(&r, "BAD_USER_INPUT", &["idempotency key 'half'", "different request"]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn a_mutations_own_key_equal_to_the_header_does_not_refuse_the_others_of_its_request() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let q = format!(
        r#"mutation {{
            a: setChargeMode(installationId: 33, chargingStationId: "{ALICE_STATION}", mode: DEFERRED, idempotencyKey: "same") {{ status }}
            b: setChargeMode(installationId: 33, chargingStationId: "{ALICE_STATION}", mode: IMMEDIATE) {{ status }}
        }}"#
    );
    let first = app.post_with_key("alice", "same", &q, json!({})).await;
    assert_eq!(data(&first), &json!({"a": {"status": "ACCEPTED"}, "b": {"status": "ACCEPTED"}}), "{first:#}");
    let again = app.post_with_key("alice", "same", &q, json!({})).await;
    assert_eq!(again, first, "the retry replays both");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn the_idempotency_key_header_covers_mutations_without_the_argument() {
    let app = spawn_app().await;
    let ivan = app.sim().account_id("ivan").await;
    app.sim().reset_calls().await;
    let disable = "mutation($a: ID!) { disableInstaller(installationId: 33, accountId: $a) }";
    let first = app.post_with_key("alice", "off-1", disable, json!({"a": ivan})).await;
    assert_eq!(data(&first)["disableInstaller"], true, "{first:#}");
    // The client's retry gets the first answer: nothing is sent again.
    let retry = app.post_with_key("alice", "off-1", disable, json!({"a": ivan})).await;
    assert_eq!(retry, first);
    // Another mutation under that key is refused, and nothing is sent.
    let enable = "mutation($a: ID!) { enableInstaller(installationId: 33, accountId: $a) }";
    let other = app.post_with_key("alice", "off-1", enable, json!({"a": ivan})).await;
    assert_refused(&other, "BAD_USER_INPUT", &["idempotency key 'off-1'", "different request"]);
    let writes = writes(&app).await;
    assert_eq!(writes.values().sum::<u64>(), 1, "one write in all: {writes:#?}");
    assert_eq!(sim_user(&app, &ivan).await.unwrap()["enabled"], false);
}

#[tokio::test]
async fn a_command_the_upstream_refused_without_running_it_is_sent_again_with_the_same_key() {
    let app = spawn_app().await;
    // Throttled, unavailable, or the token refused (the client refreshes it): nothing ran.
    // (And a request timeout, or a method it does not implement: it did not run either.)
    let cases = [
        (503, "UPSTREAM_UNAVAILABLE"),
        (429, "RATE_LIMITED"),
        (401, "UNAUTHENTICATED"),
        (408, "UPSTREAM_ERROR"),
        (501, "UPSTREAM_UNAVAILABLE"),
    ];
    for (status_code, code) in cases {
        let key = format!("refused-{status_code}");
        let f = app
            .sim()
            .set_faults(json!({"errorRate": 1.0, "errorStatus": status_code, "routes": [SET_MODE_ROUTE]}))
            .await;
        assert_eq!(f.status, 200, "{:?}", f.body);
        app.sim().reset_calls().await;
        let r = app.graphql("alice", &keyed_set_mode(None, "DEFERRED", &key), json!({})).await;
        assert_refused(&r, code, &[]);
        assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1, "{status_code}");

        // The service is back: the same key sends the command, and from then on keeps its answer.
        app.sim().clear_faults().await;
        let retry = app.graphql("alice", &keyed_set_mode(None, "DEFERRED", &key), json!({})).await;
        assert_eq!(status(&retry, "setChargeMode"), "ACCEPTED", "{status_code}: {retry:#}");
        assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "{status_code}");
        let again = app.graphql("alice", &keyed_set_mode(Some("again"), "DEFERRED", &key), json!({})).await;
        assert_eq!(data(&again)["again"], data(&retry)["setChargeMode"]);
        assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "{status_code}");
    }
}

#[tokio::test]
async fn a_creation_the_upstream_refused_without_running_it_is_sent_again_with_the_same_key() {
    let app = spawn_app().await;
    let f =
        app.sim().set_faults(json!({"errorRate": 1.0, "errorStatus": 503, "routes": ["POST /installations"]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    app.sim().reset_calls().await;
    let first = app.post_with_key("alice", "create-503", CREATE, new_installation("Grange")).await;
    assert_refused(&first, "UPSTREAM_UNAVAILABLE", &[]);

    app.sim().clear_faults().await;
    let retry = app.post_with_key("alice", "create-503", CREATE, new_installation("Grange")).await;
    assert_eq!(data(&retry)["createInstallation"]["name"], "Grange", "{retry:#}");
    let again = app.post_with_key("alice", "create-503", CREATE, new_installation("Grange")).await;
    assert_eq!(again, retry);
    assert_eq!(app.sim().calls_to("POST /installations").await, 2);
    assert_eq!(gql_installation_ids(&app, "alice").await.len(), 2, "one installation created");
}

#[tokio::test]
async fn an_outcome_of_a_command_that_may_have_run_stays_with_its_key() {
    let app = spawn_app_with(|c| c.upstream_timeout_ms = 500).await;
    // No answer in time (the command may have run), a gateway's 502 or 504 (passed on, so it may
    // have run too), and the upstream's own refusal (400).
    let cases = [
        (json!({"latencyMs": 3000, "routes": [SET_MODE_ROUTE]}), "UPSTREAM_UNAVAILABLE", "may or may not"),
        // Said as such: "try again later" would double-send a command that may have run.
        (
            json!({"errorRate": 1.0, "errorStatus": 502, "routes": [SET_MODE_ROUTE]}),
            "UPSTREAM_UNAVAILABLE",
            "may or may not",
        ),
        (
            json!({"errorRate": 1.0, "errorStatus": 504, "routes": [SET_MODE_ROUTE]}),
            "UPSTREAM_UNAVAILABLE",
            "answered 504",
        ),
        // A failure of its own after taking the request: it may have run too.
        (
            json!({"errorRate": 1.0, "errorStatus": 500, "routes": [SET_MODE_ROUTE]}),
            "UPSTREAM_UNAVAILABLE",
            "it failed with 500): it may or may not have been delivered",
        ),
        (json!({"errorRate": 1.0, "errorStatus": 400, "routes": [SET_MODE_ROUTE]}), "BAD_USER_INPUT", ""),
    ];
    for (n, (faults, code, words)) in cases.into_iter().enumerate() {
        let key = format!("pinned-{n}");
        let f = app.sim().set_faults(faults.clone()).await;
        assert_eq!(f.status, 200, "{:?}", f.body);
        app.sim().reset_calls().await;
        let first = app.graphql("alice", &keyed_set_mode(None, "DEFERRED", &key), json!({})).await;
        assert_refused(&first, code, &[words]);
        app.sim().clear_faults().await;
        let retry = app.graphql("alice", &keyed_set_mode(None, "DEFERRED", &key), json!({})).await;
        assert_eq!(retry, first, "{faults}: the first answer again");
        assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1, "{faults}: sent once");
    }
}

/// Sends `query` as `sub` on a task of its own, to be dropped by aborting it (its connection closes).
fn post_in_background(
    app: &TestApp,
    sub: &str,
    query: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request =
        app.client.post(format!("{}/graphql", app.base)).bearer_auth(app.token_for(sub)).json(&json!({"query": query}));
    tokio::spawn(request.send())
}

#[tokio::test]
async fn a_request_dropped_by_its_client_after_sending_keeps_its_key() {
    // The upstream holds the command long after the client gave up.
    let app = spawn_app_with(|c| c.upstream_timeout_ms = 30_000).await;
    let f = app.sim().set_faults(json!({"latencyMs": 20_000, "routes": [SET_MODE_ROUTE]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    app.sim().reset_calls().await;
    let query = keyed_set_mode(None, "DEFERRED", "dropped");
    let first = post_in_background(&app, "alice", &query);
    eventually("the command reaches the upstream", || async {
        (app.sim().calls_to(SET_MODE_ROUTE).await == 1).then_some(())
    })
    .await;
    // The client goes away (its connection closes) while the upstream has the command.
    first.abort();
    let _ = first.await;

    let retry = app.graphql("alice", &query, json!({})).await;
    assert_refused(&retry, "UPSTREAM_UNAVAILABLE", &["may or may not", "charging station's state"]);
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1, "not sent again: {:#?}", app.sim().calls_by_route().await);
}

// ---- upstream failures, transport ----

#[tokio::test]
async fn a_command_the_upstream_does_not_confirm_in_time_is_unavailable_and_not_retried() {
    let app = spawn_app_with(|c| c.upstream_timeout_ms = 500).await;
    let f = app.sim().set_faults(json!({"latencyMs": 3000, "routes": [START_ROUTE]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    app.sim().reset_calls().await;

    let started = Instant::now();
    let r = app.graphql("bob", START, json!({"i": "42", "cs": BOB_STATION, "wait": true})).await;
    assert!(started.elapsed() < Duration::from_millis(2_500), "gave up at the upstream timeout");
    assert_refused(&r, "UPSTREAM_UNAVAILABLE", &["may or may not"]);
    assert_eq!(app.sim().calls_to(START_ROUTE).await, 1, "never retried: {:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn command_failures_are_reported_with_their_code_and_never_retried() {
    let app = spawn_app().await;
    let cases = [
        (json!({"errorRate": 1.0, "errorStatus": 503, "routes": [START_ROUTE]}), "UPSTREAM_UNAVAILABLE", ""),
        (json!({"errorRate": 1.0, "errorStatus": 429, "routes": [START_ROUTE]}), "RATE_LIMITED", ""),
        (json!({"dropRate": 1.0, "routes": [START_ROUTE]}), "UPSTREAM_UNAVAILABLE", "may or may not"),
    ];
    for (faults, code, words) in cases {
        let f = app.sim().set_faults(faults.clone()).await;
        assert_eq!(f.status, 200, "{:?}", f.body);
        app.sim().reset_calls().await;
        let r = app.graphql("bob", START, json!({"i": "42", "cs": BOB_STATION, "wait": false})).await;
        assert_refused(&r, code, &[words]);
        assert_eq!(
            app.sim().calls_to(START_ROUTE).await,
            1,
            "{faults}: never retried: {:#?}",
            app.sim().calls_by_route().await
        );
    }
}

#[tokio::test]
async fn a_tariff_given_twice_is_named_as_the_client_wrote_it() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let cases = [
        ("alice", "33", ALICE_METER, "HC"),
        ("bob", "42", BOB_METER, "HPJR"),
        ("dieter", "51", DIETER_METER, "TARIFF10"),
    ];
    for (sub, i, gm, id) in cases {
        let tariffs = json!([{"id": id, "value": 0.1}, {"id": id, "value": 0.2}]);
        let r = app.graphql(sub, SET_TARIFFS, json!({"i": i, "gm": gm, "tariffs": tariffs})).await;
        assert_refused(&r, "BAD_USER_INPUT", &[]);
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(&format!("tariffs[1].id {id} is given twice")), "{message}");
    }
    assert_eq!(writes(&app).await, BTreeMap::new(), "nothing was sent");
}

#[tokio::test]
async fn a_write_the_upstream_does_not_confirm_says_what_to_check_for_that_mutation() {
    let app = spawn_app_with(|c| c.upstream_timeout_ms = 500).await;
    let invite = r#"mutation { inviteInstaller(installationId: 33, email: "late@installer.example.com") { email } }"#;
    let subscribe =
        r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "http://127.0.0.1:9/h") { id } }"#;
    let tariffs = json!({"i": "33", "gm": ALICE_METER, "tariffs": [{"id": "HC", "value": 0.1}]});
    let cases = [
        ("POST /installations", CREATE, new_installation("Lente"), vec!["new installation", "your installations"]),
        ("POST /installations/{i}/invitations", invite, json!({}), vec!["invitation", "installation's invitations"]),
        (SET_TARIFFS_ROUTE, SET_TARIFFS, tariffs, vec!["prices", "grid meter's tariffs"]),
        (
            "POST /installations/{i}/event-subscriptions",
            subscribe,
            json!({}),
            vec!["subscription", "eventSubscriptions"],
        ),
    ];
    for (route, query, vars, words) in cases {
        let f = app.sim().set_faults(json!({"latencyMs": 3000, "routes": [route]})).await;
        assert_eq!(f.status, 200, "{:?}", f.body);
        let r = app.graphql("alice", query, vars).await;
        let mut expected = vec!["may or may not"];
        expected.extend(words);
        assert_refused(&r, "UPSTREAM_UNAVAILABLE", &expected);
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(!message.contains("station"), "{route}: no station is involved: {message}");
    }
}

#[tokio::test]
async fn mutations_sent_with_get_are_refused_with_405() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let q =
        format!(r#"mutation {{ startCharging(installationId: 42, chargingStationId: "{BOB_STATION}") {{ status }} }}"#);
    let url =
        |query: &str| reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), [("query", query)]).unwrap();
    let r = send(app.client.get(url(&q)).bearer_auth(app.token_for("bob"))).await;
    assert_eq!(r.status, 405, "{:?}", r.body);
    assert_eq!(writes(&app).await, BTreeMap::new());

    // A query over GET is fine.
    let r = send(app.client.get(url("{ installations { id } }")).bearer_auth(app.token_for("bob"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["data"]["installations"].is_array(), "{:?}", r.body);
}

// ---- installations and stations ----

fn new_installation(name: &str) -> Value {
    json!({"input": {"name": name, "locationName": "Nantes", "location": {"latitude": 47.2, "longitude": -1.55}}})
}

async fn gql_installation_ids(app: &TestApp, sub: &str) -> Vec<String> {
    let r = app.graphql(sub, "{ installations { id } }", json!({})).await;
    data(&r)["installations"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

async fn create_installation(app: &TestApp, sub: &str, name: &str) -> String {
    let r = app.graphql(sub, CREATE, new_installation(name)).await;
    data(&r)["createInstallation"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_installation_shows_upstream_and_in_the_next_query_and_is_idempotent() {
    let app = spawn_app().await;
    assert_eq!(gql_installation_ids(&app, "alice").await, vec!["33"]);

    let r = app.graphql("alice", CREATE, new_installation("Maison de Nantes")).await;
    let created = &data(&r)["createInstallation"];
    assert_eq!(created["name"], "Maison de Nantes");
    assert_eq!(created["locationName"], "Nantes");
    assert_eq!(created["location"], json!({"latitude": 47.2, "longitude": -1.55}));
    let id = created["id"].as_str().unwrap().to_string();

    let upstream = app.sim().get("alice", "/installations").await.body;
    let found = upstream.as_array().unwrap().iter().find(|i| i["installationId"] == id.parse::<i64>().unwrap());
    assert_eq!(found.map(|i| i["name"].clone()), Some(json!("Maison de Nantes")), "{upstream:#}");
    assert_eq!(gql_installation_ids(&app, "alice").await, vec!["33".to_string(), id.clone()]);
    let q =
        app.graphql("alice", "query($i: ID!) { installation(id: $i) { name locationName } }", json!({"i": id})).await;
    assert_eq!(data(&q)["installation"], json!({"name": "Maison de Nantes", "locationName": "Nantes"}));

    // Sent twice with one key: one installation.
    app.sim().reset_calls().await;
    let a = app.post_with_key("alice", "create-1", CREATE, new_installation("Chalet")).await;
    let b = app.post_with_key("alice", "create-1", CREATE, new_installation("Chalet")).await;
    assert_eq!(a, b);
    assert_eq!(app.sim().calls_to("POST /installations").await, 1);
    assert_eq!(gql_installation_ids(&app, "alice").await.len(), 3);
}

const INSTALLATION_STATIONS: &str = r#"query($i: ID!) { installation(id: $i) {
    externalId chargingStations { id uuid } gridMeters { id }
} }"#;

#[tokio::test]
async fn associate_and_remove_a_station_show_upstream_and_in_the_next_query() {
    let app = spawn_app().await;
    let i = create_installation(&app, "alice", "Atelier").await;
    let devices = app.sim().devices().await;
    let uid = devices[0]["uid"].as_str().unwrap().to_string();
    let station_list = |i: String| {
        let app = &app;
        async move { app.sim().get("alice", &format!("/installations/{i}/charging-stations")).await.body }
    };
    let warm = app.graphql("alice", INSTALLATION_STATIONS, json!({"i": i})).await;
    assert_eq!(data(&warm)["installation"]["chargingStations"], json!([]));

    let input = json!({"uid": uid, "timezone": "ROMANCE_STANDARD_TIME", "culture": "FR_FR"});
    let r = app.graphql("alice", ASSOCIATE, json!({"i": i, "input": input})).await;
    let station = &data(&r)["associateChargingStation"];
    assert_eq!(station["uuid"], uid.as_str());
    assert_eq!(station["timezone"], "ROMANCE_STANDARD_TIME");
    assert_eq!(station["culture"], "FR_FR");
    let cs = station["id"].as_str().unwrap().to_string();

    let upstream = station_list(i.clone()).await;
    assert_eq!(upstream.as_array().unwrap().len(), 1, "{upstream:#}");
    assert_eq!(upstream[0]["id"], cs.as_str());
    assert!(!app.sim().devices().await.as_array().unwrap().iter().any(|d| d["uid"] == uid.as_str()));
    let q = app.graphql("alice", INSTALLATION_STATIONS, json!({"i": i})).await;
    let inst = &data(&q)["installation"];
    assert_eq!(inst["chargingStations"], json!([{"id": cs, "uuid": uid}]));
    assert_eq!(inst["gridMeters"].as_array().unwrap().len(), 1);
    assert!(inst["externalId"].is_string(), "the installation's externalId follows the station: {inst:#}");

    let r = app
        .graphql(
            "alice",
            "mutation($i: ID!, $cs: ID!) { removeChargingStation(installationId: $i, chargingStationId: $cs) }",
            json!({"i": i, "cs": cs}),
        )
        .await;
    assert_eq!(data(&r)["removeChargingStation"], true);
    assert_eq!(station_list(i.clone()).await, json!([]));
    assert!(app.sim().devices().await.as_array().unwrap().iter().any(|d| d["uid"] == uid.as_str()), "back in the pool");
    let q = app.graphql("alice", INSTALLATION_STATIONS, json!({"i": i})).await;
    assert_eq!(data(&q)["installation"]["chargingStations"], json!([]));
    assert_eq!(data(&q)["installation"]["gridMeters"], json!([]));
    assert_eq!(data(&q)["installation"]["externalId"], Value::Null);

    // By QR code this time.
    let qr = devices[1]["qrCode"].as_str().unwrap().to_string();
    let input = json!({"qrCode": qr, "timezone": "W_EUROPE_STANDARD_TIME", "culture": "DE_DE"});
    let r = app.graphql("alice", ASSOCIATE, json!({"i": i, "input": input})).await;
    assert_eq!(data(&r)["associateChargingStation"]["uuid"], devices[1]["uid"]);
    let cs = data(&r)["associateChargingStation"]["id"].clone();
    assert_eq!(station_list(i.clone()).await[0]["id"], cs);
    let q = app.graphql("alice", INSTALLATION_STATIONS, json!({"i": i})).await;
    assert_eq!(data(&q)["installation"]["chargingStations"][0]["id"], cs);
}

// ---- sharing ----

const SHARING: &str = r#"query($i: ID!) { installation(id: $i) {
    users { accountId role enabled } invitations { email installationId }
} }"#;

async fn gql_sharing(app: &TestApp, sub: &str, i: i64) -> Value {
    let r = app.graphql(sub, SHARING, json!({"i": i.to_string()})).await;
    data(&r)["installation"].clone()
}

fn emails(invitations: &Value) -> Vec<String> {
    invitations.as_array().unwrap().iter().map(|i| i["email"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn invite_and_cancel_show_upstream_and_in_the_next_query() {
    let app = spawn_app().await;
    let email = "newtech@installer.example.com";
    assert_eq!(emails(&gql_sharing(&app, "alice", 33).await["invitations"]), Vec::<String>::new());

    let r = app
        .graphql(
            "alice",
            "mutation($e: String!) { inviteInstaller(installationId: 33, email: $e, culture: EN_GB) { email installationId } }",
            json!({"e": "NewTech@Installer.example.com"}),
        )
        .await;
    assert_eq!(data(&r)["inviteInstaller"], json!({"email": email, "installationId": "33"}));
    let upstream = app.sim().get("alice", "/installations/33/invitations").await.body;
    assert_eq!(emails(&upstream), vec![email]);
    assert!(app.sim().mail().await.as_array().unwrap().iter().any(|m| m["to"] == email));
    assert_eq!(emails(&gql_sharing(&app, "alice", 33).await["invitations"]), vec![email]);

    let r = app
        .graphql(
            "alice",
            "mutation($e: String!) { cancelInvitation(installationId: 33, email: $e) }",
            json!({"e": email}),
        )
        .await;
    assert_eq!(data(&r)["cancelInvitation"], true);
    let upstream = app.sim().get("alice", "/installations/33/invitations").await.body;
    assert_eq!(upstream, json!([]));
    assert_eq!(emails(&gql_sharing(&app, "alice", 33).await["invitations"]), Vec::<String>::new());

    // Sent twice with one key: one invitation, one answer.
    app.sim().reset_calls().await;
    let invite = r#"mutation($e: String!) { inviteInstaller(installationId: 33, email: $e) { email expirationDate } }"#;
    let a = app.post_with_key("alice", "inv-1", invite, json!({"e": email})).await;
    let b = app.post_with_key("alice", "inv-1", invite, json!({"e": email})).await;
    assert_eq!(data(&a)["inviteInstaller"]["email"], email);
    assert_eq!(a, b);
    assert_eq!(app.sim().calls_to("POST /installations/{i}/invitations").await, 1);
}

#[tokio::test]
async fn accepting_an_invitation_makes_the_installer_a_user_in_the_next_queries() {
    let app = spawn_app().await;
    let erin = app.sim().account_id("erin").await;
    let before = gql_sharing(&app, "bob", BOB_INSTALLATION).await;
    assert_eq!(emails(&before["invitations"]), vec!["erin@installer.example.com"]);
    assert!(!before["users"].as_array().unwrap().iter().any(|u| u["accountId"] == erin.as_str()));
    assert!(!gql_installation_ids(&app, "erin").await.contains(&"42".to_string()));

    let mail = app.sim().mail().await;
    let code = mail
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["to"] == "erin@installer.example.com")
        .and_then(|m| m["activationCode"].as_str())
        .unwrap()
        .to_string();
    let r =
        app.graphql("erin", "mutation($c: String!) { acceptInvitation(activationCode: $c) }", json!({"c": code})).await;
    assert_eq!(data(&r)["acceptInvitation"], true);

    let users = app.sim().get("bob", "/installations/42/users").await.body;
    assert!(users.as_array().unwrap().iter().any(|u| u["accountId"] == erin.as_str()), "{users:#}");
    let after = gql_sharing(&app, "bob", BOB_INSTALLATION).await;
    let listed = after["users"].as_array().unwrap().iter().find(|u| u["accountId"] == erin.as_str()).cloned();
    assert_eq!(listed, Some(json!({"accountId": erin, "role": "INSTALLER", "enabled": true})), "{after:#}");
    assert_eq!(emails(&after["invitations"]), Vec::<String>::new());
    assert!(gql_installation_ids(&app, "erin").await.contains(&"42".to_string()));
}

const USER_MUTATION: &str = r#"mutation($a: ID!) {
    disable: disableInstaller(installationId: 33, accountId: $a)
}"#;

async fn sim_user(app: &TestApp, account: &str) -> Option<Value> {
    let users = app.sim().get("alice", "/installations/33/users").await.body;
    users.as_array().unwrap().iter().find(|u| u["accountId"] == account).cloned()
}

async fn gql_user(app: &TestApp, account: &str) -> Option<Value> {
    let s = gql_sharing(app, "alice", ALICE_INSTALLATION).await;
    s["users"].as_array().unwrap().iter().find(|u| u["accountId"] == account).cloned()
}

#[tokio::test]
async fn disable_enable_and_remove_an_installer_show_upstream_and_in_the_next_queries() {
    let app = spawn_app().await;
    let ivan = app.sim().account_id("ivan").await;
    assert_eq!(gql_user(&app, &ivan).await.unwrap()["enabled"], true);
    assert!(gql_installation_ids(&app, "ivan").await.contains(&"33".to_string()));

    let r = app.graphql("alice", USER_MUTATION, json!({"a": ivan})).await;
    assert_eq!(data(&r)["disable"], true);
    assert_eq!(sim_user(&app, &ivan).await.unwrap()["enabled"], false);
    assert_eq!(gql_user(&app, &ivan).await.unwrap()["enabled"], false);
    assert!(!gql_installation_ids(&app, "ivan").await.contains(&"33".to_string()), "ivan loses access at once");

    let r = app
        .graphql(
            "alice",
            "mutation($a: ID!) { enableInstaller(installationId: 33, accountId: $a) }",
            json!({"a": ivan}),
        )
        .await;
    assert_eq!(data(&r)["enableInstaller"], true);
    assert_eq!(sim_user(&app, &ivan).await.unwrap()["enabled"], true);
    assert_eq!(gql_user(&app, &ivan).await.unwrap()["enabled"], true);
    assert!(gql_installation_ids(&app, "ivan").await.contains(&"33".to_string()));

    let r = app
        .graphql(
            "alice",
            "mutation($a: ID!) { removeInstallationUser(installationId: 33, accountId: $a) }",
            json!({"a": ivan}),
        )
        .await;
    assert_eq!(data(&r)["removeInstallationUser"], true);
    assert_eq!(sim_user(&app, &ivan).await, None);
    assert_eq!(gql_user(&app, &ivan).await, None);
    assert!(!gql_installation_ids(&app, "ivan").await.contains(&"33".to_string()));
}

// ---- TIC consent ----

#[tokio::test]
async fn authorize_tic_shows_upstream_and_in_the_next_query() {
    let app = spawn_app().await;
    let q = format!(
        r#"{{ installation(id: 33) {{ gridMeter(id: "{ALICE_METER}") {{ authorizeTic generalConsumption {{ consumptionTotalIndex }} }}
            chargingStation(id: "{ALICE_STATION}") {{ authorizeTic }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    assert_eq!(data(&r)["installation"]["gridMeter"]["authorizeTic"], "CONSENT");
    assert!(data(&r)["installation"]["gridMeter"]["generalConsumption"].is_object());
    // The installer's view of the consent is cached too.
    let installer = format!(r#"{{ installation(id: 33) {{ gridMeter(id: "{ALICE_METER}") {{ authorizeTic }} }} }}"#);
    let r = app.graphql("ivan", &installer, json!({})).await;
    assert_eq!(data(&r)["installation"]["gridMeter"]["authorizeTic"], "CONSENT");

    let m = r#"mutation($gm: ID!, $a: Boolean!) { authorizeTic(installationId: 33, gridMeterId: $gm, authorize: $a) { id authorizeTic } }"#;
    for (authorize, wire, enum_value) in [(false, "noConsent", "NO_CONSENT"), (true, "consent", "CONSENT")] {
        let r = app.graphql("alice", m, json!({"gm": ALICE_METER, "a": authorize})).await;
        assert_eq!(data(&r)["authorizeTic"], json!({"id": ALICE_METER, "authorizeTic": enum_value}));
        let upstream = app.sim().get("alice", &meter_path(33, ALICE_METER)).await.body;
        assert_eq!(upstream["properties"]["authorizeTic"], wire);
        let q = app.graphql("alice", &q, json!({})).await;
        assert_eq!(data(&q)["installation"]["gridMeter"]["authorizeTic"], enum_value);
        assert_eq!(data(&q)["installation"]["chargingStation"]["authorizeTic"], enum_value);
        // Consumptions are sent only with consent.
        assert_eq!(data(&q)["installation"]["gridMeter"]["generalConsumption"].is_object(), authorize, "{q:#}");
        let r = app.graphql("ivan", &installer, json!({})).await;
        assert_eq!(data(&r)["installation"]["gridMeter"]["authorizeTic"], enum_value, "the installer sees it too");
    }
}

// ---- notification subscriptions ----

const SUBSCRIBE: &str = r#"mutation($url: String!, $t: String) {
    subscribeToNotifications(installationId: 33, webhookUrl: $url, eventType: $t) { id eventType protocolData }
}"#;

async fn sim_subscription_ids(app: &TestApp) -> Vec<String> {
    let r = app.sim().get("alice", "/installations/33/event-subscriptions").await.body;
    let mut ids: Vec<String> =
        r.as_array().unwrap().iter().map(|s| s["eventSubscriptionId"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn gql_subscription_ids(app: &TestApp) -> Vec<String> {
    let r = app.graphql("alice", "{ installation(id: 33) { eventSubscriptions { id } } }", json!({})).await;
    let mut ids: Vec<String> = data(&r)["installation"]["eventSubscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn subscribe_and_unsubscribe_show_upstream_and_in_the_next_query() {
    let app = spawn_app().await;
    assert_eq!(gql_subscription_ids(&app).await, Vec::<String>::new());

    let url = "http://127.0.0.1:9/hooks/alice";
    let r = app.graphql("alice", SUBSCRIBE, json!({"url": url, "t": "Hager.WittyHome.ChargeModeChanged"})).await;
    let first = data(&r)["subscribeToNotifications"].clone();
    assert_eq!(first["eventType"], "Hager.WittyHome.ChargeModeChanged");
    assert_eq!(first["protocolData"], url);
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(sim_subscription_ids(&app).await, vec![first_id.clone()]);
    assert_eq!(gql_subscription_ids(&app).await, vec![first_id.clone()]);

    let r = app.graphql("alice", SUBSCRIBE, json!({"url": url, "t": null})).await;
    let second_id = data(&r)["subscribeToNotifications"]["id"].as_str().unwrap().to_string();
    let mut both = vec![first_id.clone(), second_id.clone()];
    both.sort();
    assert_eq!(sim_subscription_ids(&app).await, both);
    assert_eq!(gql_subscription_ids(&app).await, both);

    let r = app
        .graphql(
            "alice",
            "mutation($id: ID!) { unsubscribeFromNotifications(installationId: 33, eventSubscriptionId: $id) }",
            json!({"id": first_id}),
        )
        .await;
    assert_eq!(data(&r)["unsubscribeFromNotifications"], true);
    assert_eq!(sim_subscription_ids(&app).await, vec![second_id.clone()]);
    assert_eq!(gql_subscription_ids(&app).await, vec![second_id]);

    app.graphql("alice", SUBSCRIBE, json!({"url": url, "t": null})).await;
    assert_eq!(gql_subscription_ids(&app).await.len(), 2);
    let r = app.graphql("alice", "mutation { unsubscribeAllNotifications(installationId: 33) }", json!({})).await;
    assert_eq!(data(&r)["unsubscribeAllNotifications"], true);
    assert_eq!(sim_subscription_ids(&app).await, Vec::<String>::new());
    assert_eq!(gql_subscription_ids(&app).await, Vec::<String>::new());

    // Sent twice with one key: one subscription.
    app.sim().reset_calls().await;
    let a = app.post_with_key("alice", "sub-1", SUBSCRIBE, json!({"url": url, "t": null})).await;
    let b = app.post_with_key("alice", "sub-1", SUBSCRIBE, json!({"url": url, "t": null})).await;
    assert_eq!(a, b);
    assert_eq!(app.sim().calls_to("POST /installations/{i}/event-subscriptions").await, 1);
    assert_eq!(sim_subscription_ids(&app).await.len(), 1);
}

// ---- idempotency: bounds ----

#[tokio::test]
async fn an_idempotency_key_longer_than_255_bytes_is_bad_user_input_naming_where_it_came_from() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let long = "k".repeat(256);
    let argument = app
        .graphql("alice", SET_MODE_KEYED, json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "key": long}))
        .await;
    assert_refused(&argument, "BAD_USER_INPUT", &["idempotencyKey", "255", "nothing was sent"]);
    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": false});
    let header = app.post_with_key("alice", &long, SET_MODE, vars.clone()).await;
    assert_refused(&header, "BAD_USER_INPUT", &["Idempotency-Key header", "255", "nothing was sent"]);
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 0, "nothing was sent");
    // 255 bytes are a key.
    let r = app.post_with_key("alice", &"k".repeat(255), SET_MODE, vars).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
}

/// `n` `setChargeMode`s of Dieter's station in one request, keyed `{prefix}{first}`…
fn keyed_set_modes(prefix: &str, first: usize, n: usize) -> String {
    let fields: String = (first..first + n)
        .map(|k| {
            format!(
                r#"m{k}: setChargeMode(installationId: "51", chargingStationId: "{DIETER_STATION}", mode: DEFERRED, wait: false, idempotencyKey: "{prefix}{k}") {{ status }}
"#
            )
        })
        .collect();
    format!("mutation {{\n{fields}}}")
}

#[tokio::test]
async fn a_caller_with_1000_idempotency_keys_kept_is_refused_a_new_one_and_nothing_is_sent() {
    let app = spawn_app().await;
    // 1000 keys kept for Dieter, 100 a request.
    for first in (0..1000).step_by(100) {
        let r = app.graphql("dieter", &keyed_set_modes("cap-", first, 100), json!({})).await;
        let answers = data(&r).as_object().unwrap();
        assert_eq!(answers.len(), 100);
        assert!(answers.values().all(|a| a["status"] == "ACCEPTED"), "{r:#}");
    }
    app.sim().reset_calls().await;
    // A new key: refused, nothing sent; the message says why and what to do.
    let r = app.graphql("dieter", &keyed_set_modes("cap-", 1000, 1), json!({})).await;
    assert_refused(&r, "RATE_LIMITED", &["idempotency keys", "1000", "nothing was sent"]);
    // When the oldest key is free again: the 600 s window, less the moments since it was kept.
    let wait = r["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().expect("retryAfterSeconds");
    assert!((500..=601).contains(&wait), "{r:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 0, "nothing was sent");
    // A key already kept still answers with its first result, without calling the upstream.
    let again = app.graphql("dieter", &keyed_set_modes("cap-", 7, 1), json!({})).await;
    assert_eq!(data(&again)["m7"]["status"], "ACCEPTED", "{again:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 0);
    // Without a key Dieter's command goes through; other callers' keys are theirs.
    let plain = app
        .graphql("dieter", SET_MODE, json!({"i": "51", "cs": DIETER_STATION, "mode": "DEFERRED", "wait": false}))
        .await;
    assert_eq!(status(&plain, "setChargeMode"), "ACCEPTED", "{plain:#}");
    let alice = app
        .graphql(
            "alice",
            SET_MODE_KEYED,
            json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "key": "cap-1000"}),
        )
        .await;
    assert_eq!(status(&alice, "setChargeMode"), "ACCEPTED", "{alice:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2);
}

#[tokio::test]
async fn requests_still_running_count_toward_a_callers_1000_keys() {
    let app = spawn_app().await;
    for first in (0..998).step_by(100) {
        let r = app.graphql("dieter", &keyed_set_modes("run-", first, 100.min(998 - first)), json!({})).await;
        assert!(data(&r).as_object().unwrap().values().all(|a| a["status"] == "ACCEPTED"), "{r:#}");
    }
    // 998 kept; four new keys at once, each held upstream a while: only two have room.
    let f = app.sim().set_faults(json!({"latencyMs": 1000, "routes": [SET_MODE_ROUTE]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    app.sim().reset_calls().await;
    let app = &app;
    let sends = (998..1002).map(|k| {
        let query = keyed_set_modes("run-", k, 1);
        async move { app.graphql("dieter", &query, json!({})).await }
    });
    let answers = futures::future::join_all(sends).await;
    let refused = answers.iter().filter(|r| error_codes(r) == vec!["RATE_LIMITED".to_string()]).count();
    assert_eq!(refused, 2, "{answers:#?}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 2, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn a_command_accepted_upstream_whose_client_left_while_waiting_replays_as_accepted() {
    let app = spawn_app().await;
    // The station takes its time: the wait goes on after the upstream accepted the command.
    let r = app.sim().control(reqwest::Method::PUT, "/_sim/config", Some(json!({"commandDelayMs": 20_000}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.sim().reset_calls().await;
    let query = format!(
        r#"mutation {{ setChargeMode(installationId: 33, chargingStationId: "{ALICE_STATION}", mode: DEFERRED,
            wait: true, idempotencyKey: "left-waiting") {{ status }} }}"#
    );
    let first = post_in_background(&app, "alice", &query);
    // Re-reading the station, so waiting: the command was accepted (the read before it was one).
    eventually("the wait to have begun", || async {
        (app.sim().calls_to("GET /installations/{i}/charging-stations/{cs}").await >= 2).then_some(())
    })
    .await;
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1);
    first.abort();
    let _ = first.await;
    let retry = app.graphql("alice", &query, json!({})).await;
    assert_eq!(status(&retry, "setChargeMode"), "ACCEPTED", "{retry:#}");
    assert_eq!(app.sim().calls_to(SET_MODE_ROUTE).await, 1, "not sent again: {:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn after_an_accepted_command_a_re_read_shows_the_change_soon_after_the_station_applies_it() {
    // State kept a minute: a read made before the station applies the command would otherwise be
    // served for that minute.
    let app = spawn_app_with(|c| c.cache_state_ttl_secs = 60).await;
    set_command_delay(&app, 3_000).await;
    let r = app
        .graphql("alice", SET_MODE, json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": false}))
        .await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
    // Read before the station applied it, by the owner and by the installer: the old mode.
    for sub in ["alice", "ivan"] {
        let station = gql_station(&app, sub, ALICE_INSTALLATION, ALICE_STATION).await;
        assert_eq!(station["chargeMode"], "IMMEDIATE", "{sub}");
    }
    // Once applied, a re-read shows it (for the owner and for the installer alike).
    for sub in ["alice", "ivan"] {
        eventually("the new mode in a re-read", || async {
            let station = gql_station(&app, sub, ALICE_INSTALLATION, ALICE_STATION).await;
            (station["chargeMode"] == "DEFERRED").then_some(())
        })
        .await;
    }
}
