//! Upstream answers whose fields drift from the documented types: a member of an unexpected JSON
//! type reads as absent (`null`), and the rest of the object, of its list and of the answer reads
//! as usual. The read graph through GraphQL over HTTP, against the simulator, whose
//! `/_sim/…/properties` routes lay raw values over its models as a newer upstream might send them.
//! Each test starts an app of its own and drifts the upstream before the first query, so nothing
//! is cached yet (no waiting on a TTL).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// `PUT /_sim/stations/{cs}/properties`, asserting 200.
async fn drift_station(app: &TestApp, station: &str, values: Value) {
    let path = format!("/_sim/stations/{station}/properties");
    let r = app.sim().control(Method::PUT, &path, Some(values)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// `PUT /_sim/grid-meters/{gm}/properties`, asserting 200.
async fn drift_meter(app: &TestApp, meter: &str, values: Value) {
    let path = format!("/_sim/grid-meters/{meter}/properties");
    let r = app.sim().control(Method::PUT, &path, Some(values)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// A date-time of an answer, as seconds (whatever its RFC 3339 spelling).
fn instant(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a date-time: {v}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}")).timestamp()
}

#[tokio::test]
async fn a_led_power_of_another_type_is_null_and_the_rest_of_the_station_reads() {
    let app = spawn_app().await;
    // An unknown enum value beside it keeps reading as UNKNOWN with its raw string.
    drift_station(&app, ALICE_STATION, json!({"ledPower": "high", "chargeMode": "solarBoost"})).await;

    // The tester's query: only friendlyName asked for.
    let r = app.graphql("alice", "{ installation(id: 33) { chargingStations { friendlyName } } }", json!({})).await;
    assert_eq!(
        data(&r)["installation"]["chargingStations"],
        json!([{"friendlyName": "my garage charging station"}]),
        "{r:#}"
    );

    // The list and the single station (two upstream routes), with the drifted field asked for.
    let q = format!(
        r#"{{ installation(id: 33) {{
            chargingStations {{ id friendlyName ledPower serialNumber timezone evcsLocked chargeMode chargeModeRaw }}
            chargingStation(id: "{ALICE_STATION}") {{ id friendlyName ledPower averageEvConsumption heartbeat {{ heartbeat }} }}
        }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let rest = app.sim().station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(rest["properties"]["ledPower"], "high", "the upstream sends the drifted value");
    let i = &data(&r)["installation"];
    let listed = &i["chargingStations"][0];
    assert_eq!(listed["id"], ALICE_STATION, "{r:#}");
    assert_eq!(listed["friendlyName"], "my garage charging station");
    assert!(listed["ledPower"].is_null(), "{r:#}");
    assert_eq!(listed["serialNumber"], "1234ABCDEF5678");
    assert_eq!(listed["timezone"], "ROMANCE_STANDARD_TIME");
    assert_eq!(listed["evcsLocked"], rest["properties"]["evcsLocked"]);
    assert_eq!(listed["chargeMode"], "UNKNOWN");
    assert_eq!(listed["chargeModeRaw"], "solarBoost");
    let single = &i["chargingStation"];
    assert_eq!(single["id"], ALICE_STATION);
    assert_eq!(single["friendlyName"], "my garage charging station");
    assert!(single["ledPower"].is_null(), "{r:#}");
    assert!(single["averageEvConsumption"].as_f64().is_some(), "{r:#}");
    assert_eq!(single["heartbeat"]["heartbeat"], true);
}

#[tokio::test]
async fn a_drifted_station_leaves_the_other_stations_readable() {
    let app = spawn_app().await;
    // Bob has two installations, a station each: the first one drifts, in several fields.
    drift_station(&app, BOB_STATION, json!({"ledPower": "high", "evcsLocked": "no", "friendlyName": 42})).await;
    let q = "{ installations { id chargingStations { id friendlyName ledPower evcsLocked serialNumber } } }";
    let r = app.graphql("bob", q, json!({})).await;
    let chalet = app.sim().station("bob", BOB_CHALET, BOB_CHALET_STATION).await;
    let installations = data(&r)["installations"].as_array().unwrap();
    assert_eq!(installations.len(), 2, "{r:#}");
    let drifted = &installations[0]["chargingStations"][0];
    assert_eq!(drifted["id"], BOB_STATION, "{r:#}");
    assert!(drifted["friendlyName"].is_null(), "{r:#}");
    assert!(drifted["ledPower"].is_null(), "{r:#}");
    assert!(drifted["evcsLocked"].is_null(), "{r:#}");
    assert_eq!(drifted["serialNumber"], "2345BCDEFG6789");
    let other = &installations[1]["chargingStations"][0];
    assert_eq!(other["id"], BOB_CHALET_STATION, "{r:#}");
    assert_eq!(other["friendlyName"], "Chalet");
    assert_eq!(other["ledPower"], 50);
    assert_eq!(other["evcsLocked"], chalet["properties"]["evcsLocked"]);
    assert!(other["evcsLocked"].is_boolean());
}

#[tokio::test]
async fn a_wrong_typed_nested_member_nulls_only_that_member() {
    let app = spawn_app().await;
    drift_station(
        &app,
        ALICE_STATION,
        json!({
            // A duration in seconds where the model has "hh:mm".
            "lastSession": {
                "startDate": "2025-01-02T18:00:00Z",
                "endDate": "2025-01-02T20:00:00Z",
                "sessionDuration": 3600,
                "chargingDuration": "01:30",
                "totalSessionEnergy": 12.5,
                "totalSessionCost": "2,10 EUR",
                "rangeRecoveredByEV": 80
            },
            "heartbeat": {"heartbeat": "yes", "receptionDate": "2025-01-02T20:01:00Z"},
            "error": {"code": {"value": 3}},
            // A whole object of another type.
            "currentSession": "charging"
        }),
    )
    .await;
    let q = r#"{ installation(id: 33) { chargingStations {
        id friendlyName ledPower
        lastSession { startDate endDate sessionDuration sessionDurationSeconds chargingDuration chargingDurationSeconds
                      totalSessionEnergy totalSessionCost rangeRecoveredByEV }
        heartbeat { heartbeat receptionDate }
        error { code }
        currentSession { startDate }
    } } }"#;
    let r = app.graphql("alice", q, json!({})).await;
    let s = &data(&r)["installation"]["chargingStations"][0];
    assert_eq!(s["id"], ALICE_STATION, "{r:#}");
    assert_eq!(s["friendlyName"], "my garage charging station");
    assert_eq!(s["ledPower"], 50);
    let last = &s["lastSession"];
    assert_eq!(instant(&last["startDate"]), instant(&json!("2025-01-02T18:00:00Z")), "{r:#}");
    assert_eq!(instant(&last["endDate"]), instant(&json!("2025-01-02T20:00:00Z")));
    assert!(last["sessionDuration"].is_null(), "{r:#}");
    assert!(last["sessionDurationSeconds"].is_null(), "{r:#}");
    assert_eq!(last["chargingDuration"], "01:30");
    assert_eq!(last["chargingDurationSeconds"], 5400);
    assert_eq!(last["totalSessionEnergy"], 12.5);
    assert!(last["totalSessionCost"].is_null(), "{r:#}");
    assert_eq!(last["rangeRecoveredByEV"], 80.0);
    assert!(s["heartbeat"]["heartbeat"].is_null(), "{r:#}");
    assert_eq!(instant(&s["heartbeat"]["receptionDate"]), instant(&json!("2025-01-02T20:01:00Z")), "{r:#}");
    assert_eq!(s["error"], json!({"code": null}), "{r:#}");
    assert!(s["currentSession"].is_null(), "{r:#}");
}

#[tokio::test]
async fn a_grid_meter_field_of_another_type_is_null_and_the_rest_of_the_meter_reads() {
    let app = spawn_app().await;
    drift_meter(
        &app,
        ALICE_METER,
        json!({
            "intensitySubscribed": "45 A",
            "ticType": {"code": 2},
            "currentTariff": 7,
            "generalConsumption": {
                "consumptionTotalIndex": "lots",
                "consumptions": [{"name": "HC", "value": 120}, {"name": "HP", "value": 90}]
            }
        }),
    )
    .await;
    let fields = "id type gridSubscription authorizeTicRaw intensitySubscribed ticType ticTypeRaw currentTariff \
                  currentTariffRaw generalConsumption { consumptionTotalIndex consumptions { tariff name value } }";
    let q = format!(
        r#"{{ installation(id: 33) {{
            gridMeters {{ {fields} tariffs {{ id }} }}
            gridMeter(id: "{ALICE_METER}") {{ {fields} }}
        }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let rest = app.sim().get("alice", &meter_path(ALICE_INSTALLATION, ALICE_METER)).await.body;
    assert_eq!(rest["properties"]["intensitySubscribed"], "45 A", "the upstream sends the drifted value");
    let i = &data(&r)["installation"];
    for m in [&i["gridMeters"][0], &i["gridMeter"]] {
        assert_eq!(m["id"], ALICE_METER, "{r:#}");
        assert_eq!(m["type"], "gridMeter");
        assert_eq!(m["gridSubscription"], "HCHP");
        assert_eq!(m["authorizeTicRaw"], rest["properties"]["authorizeTic"]);
        assert!(m["authorizeTicRaw"].is_string());
        assert!(m["intensitySubscribed"].is_null(), "{r:#}");
        assert!(m["ticType"].is_null(), "{r:#}");
        assert!(m["ticTypeRaw"].is_null(), "{r:#}");
        assert!(m["currentTariff"].is_null(), "{r:#}");
        assert!(m["currentTariffRaw"].is_null(), "{r:#}");
        let consumption = &m["generalConsumption"];
        assert!(consumption["consumptionTotalIndex"].is_null(), "{r:#}");
        assert_eq!(
            consumption["consumptions"],
            json!([{"tariff": "HC", "name": "HC", "value": 120.0}, {"tariff": "HP", "name": "HP", "value": 90.0}])
        );
    }
    assert_eq!(i["gridMeters"][0]["tariffs"].as_array().unwrap().len(), 2, "{r:#}");
}

#[tokio::test]
async fn an_unreadable_list_member_reads_as_an_empty_list() {
    let app = spawn_app().await;
    // One consumption whose value is not a number: the list reads as empty (a partial list would
    // pass for the whole), the index beside it still reads.
    drift_meter(
        &app,
        ALICE_METER,
        json!({"generalConsumption": {
            "consumptionTotalIndex": 210,
            "consumptions": [{"name": "HC", "value": 120}, {"name": "HP", "value": "ninety"}]
        }}),
    )
    .await;
    let q = "{ installation(id: 33) { gridMeters { id gridSubscription \
             generalConsumption { consumptionTotalIndex consumptions { name value } } } } }";
    let r = app.graphql("alice", q, json!({})).await;
    let m = &data(&r)["installation"]["gridMeters"][0];
    assert_eq!(m["id"], ALICE_METER, "{r:#}");
    assert_eq!(m["gridSubscription"], "HCHP");
    assert_eq!(m["generalConsumption"], json!({"consumptionTotalIndex": 210.0, "consumptions": []}), "{r:#}");
}

#[tokio::test]
async fn set_tariffs_never_sends_a_guessed_currency_for_a_tariff_whose_currency_it_cannot_read() {
    let app = spawn_app().await;
    // HP's currency drifts to an object; HC's stays "eur".
    let r = app
        .sim()
        .control(
            Method::PUT,
            &format!("/_sim/grid-meters/{ALICE_METER}/tariffs/hp"),
            Some(json!({"currency": {"code": "EUR"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let read =
        format!(r#"{{ installation(id: 33) {{ gridMeter(id: "{ALICE_METER}") {{ tariffs {{ id currency }} }} }} }}"#);
    let r = app.graphql("alice", &read, json!({})).await;
    let tariffs = &data(&r)["installation"]["gridMeter"]["tariffs"];
    assert_eq!(*tariffs, json!([{"id": "HC", "currency": "eur"}, {"id": "HP", "currency": null}]), "{r:#}");

    let set = |tariffs: Value| {
        let q = format!(
            r#"mutation($t: [TariffPriceInput!]!) {{
                setTariffs(installationId: 33, gridMeterId: "{ALICE_METER}", tariffs: $t) {{ id values {{ value }} }}
            }}"#
        );
        let app = &app;
        async move { app.graphql("alice", &q, json!({"t": tariffs})).await }
    };
    // Pricing HC alone would send HP back unchanged, in a currency witty-bff would have to guess;
    // so would pricing HP without a currency. The same for a string that is no currency code.
    app.sim().reset_calls().await;
    for (drifted, tariffs, asked) in [
        (
            json!({"code": "EUR"}),
            json!([{"id": "HC", "value": 0.11}]),
            "give this tariff in tariffs with its price and currency",
        ),
        (json!({"code": "EUR"}), json!([{"id": "HP", "value": 0.22}]), "give its currency too"),
        (
            json!("euro"),
            json!([{"id": "HC", "value": 0.11}]),
            "give this tariff in tariffs with its price and currency",
        ),
    ] {
        let path = format!("/_sim/grid-meters/{ALICE_METER}/tariffs/hp");
        let drift = app.sim().control(Method::PUT, &path, Some(json!({ "currency": drifted }))).await;
        assert_eq!(drift.status, 200, "{:?}", drift.body);
        let r = set(tariffs.clone()).await;
        let e = &r["errors"][0];
        assert_eq!(e["extensions"]["code"], "UPSTREAM_ERROR", "{tariffs}: {r:#}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("readable currency for tariff HP") && message.contains(asked), "{tariffs}: {message}");
    }
    let calls = app.sim().calls_by_route().await;
    let posted = calls.keys().filter(|k| k.starts_with("POST")).count();
    assert_eq!(posted, 0, "nothing was priced: {calls:#?}");

    // Named by the caller, it is sent as given.
    let r = set(json!([{"id": "HC", "value": 0.11}, {"id": "HP", "value": 0.22, "currency": "EUR"}])).await;
    let saved = data(&r)["setTariffs"].as_array().unwrap().clone();
    for (id, price) in [("HC", 0.11), ("HP", 0.22)] {
        let t = saved.iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {r:#}"));
        assert!(t["values"].as_array().unwrap().iter().any(|v| v["value"] == price), "{id}: {r:#}");
    }
}
