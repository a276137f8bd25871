//! Charging stations: the model, association and dissociation with their rules, the asynchronous
//! commands (charge mode, start, stop, settings) that answer 202 and take effect later, and the
//! live behaviour of a car plugged in and out.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn is_hh_mm(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        b.len() == 5 && b[2] == b':' && b.iter().enumerate().all(|(n, c)| n == 2 || c.is_ascii_digit())
    })
}

fn date(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("a date, got {v}")).parse().unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Waits until the station, read as its owner, satisfies `check`; returns it.
async fn station_when(sim: &TestSim, sub: &str, i: i64, cs: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let st = sim.station(sub, i, cs).await;
        check(&st).then_some(st)
    })
    .await
}

async fn new_installation(sim: &TestSim, sub: &str) -> i64 {
    let r = sim
        .post(
            sub,
            "/installations",
            json!({"name": "Atelier", "locationName": "Pau", "locationGpsCoordinates": {"latitude": 43.3, "longitude": -0.37}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["installationId"].as_i64().unwrap()
}

#[tokio::test]
async fn the_seeded_station_has_the_documents_model_and_quirks() {
    let app = spawn_app().await;
    let sim = app.sim();
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(st["id"], ALICE_STATION);
    assert_eq!(st["serialNumber"], "1234ABCDEF5678");
    assert_eq!(st["uuid"], "SyybhpX7Lzo3uhTzCoWQbn");
    assert_eq!(st["installationParentId"], ALICE_INSTALLATION);
    assert_eq!(st["type"], "chargingStation");
    let p = &st["properties"];
    for (field, value) in [
        ("installationDate", json!("2020-04-15T13:28:13Z")),
        ("productionDate", json!("2020-04-07T13:27:25Z")),
        ("productReference", json!("XEVFR")),
        ("macAddress", json!("F8-F5-05-DC-33-83")),
        ("wifiSsid", json!("myInternetBox-ABCD")),
        ("friendlyName", json!("my garage charging station")),
        ("erlConnected", json!(true)),
        ("ticConnected", json!("connected")),
        ("nightModeConnected", json!("dn")),
        ("sheddingMode", json!("chpLoadShedding7A13A")),
        ("averageEvConsumption", json!("14.2")),
        ("isDefaultAverageEvConsumption", json!(false)),
        ("authorizeTic", json!("consent")),
        ("availability", json!("available")),
        ("chargeMode", json!("immediate")),
        ("carPlugStatus", json!("unplugged")),
        ("keySwitch", json!("locked")),
        ("timezone", json!("Romance Standard Time")),
        ("culture", json!("fr-fr")),
        ("connectivityType", json!("ethernet")),
        ("evcsLocked", json!(true)),
        ("error", json!({"code": 0})),
        ("currentSession", Value::Null),
    ] {
        assert_eq!(p[field], value, "properties.{field}");
    }
    assert!(["monoPhase", "threePhase"].contains(&p["phaseNumber"].as_str().unwrap()));
    let tariffs: Vec<&str> = (1..=10).map(|n| p[format!("tariff{n}")].as_str().unwrap()).collect();
    assert_eq!(tariffs, ["hc", "hp", "hc", "hc", "hp", "hc", "hp", "hc", "hp", "hc"], "the document's example");
    assert_eq!(p["heartbeat"]["heartbeat"], true);
    date(&p["heartbeat"]["receptionDate"]);
    let last = &p["lastSession"];
    assert!(date(&last["endDate"]) >= date(&last["startDate"]));
    assert!(date(&last["endDate"]) <= Utc::now());
    assert!(is_hh_mm(&last["sessionDuration"]), "hh:mm: {last}");
    assert!(is_hh_mm(&last["chargingDuration"]), "hh:mm: {last}");
    assert!(last["totalSessionEnergy"].as_f64().is_some_and(|e| e > 0.0), "{last}");
    assert!(last["totalSessionCost"].as_f64().is_some_and(|c| c > 0.0), "{last}");
    assert!(last["rangeRecoveredByEV"].as_i64().is_some(), "{last}");
}

#[tokio::test]
async fn each_installation_lists_its_own_stations() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, i, cs) in [
        ("alice", ALICE_INSTALLATION, ALICE_STATION),
        ("bob", BOB_INSTALLATION, BOB_STATION),
        ("bob", BOB_CHALET, BOB_CHALET_STATION),
        ("dieter", DIETER_INSTALLATION, DIETER_STATION),
    ] {
        let r = sim.get(sub, &format!("/installations/{i}/charging-stations")).await;
        assert_eq!(r.status, 200);
        let list = r.body.as_array().unwrap();
        assert_eq!(list.len(), 1, "{sub} {i}");
        assert_eq!(list[0]["id"], cs);
        assert_eq!(list[0]["installationParentId"], i);
        assert_eq!(list[0], sim.station(sub, i, cs).await, "the list holds the same model as the single read");
    }
    // A station read through an installation it is not on is unknown there.
    let r = sim.get("bob", &station_path(BOB_CHALET, BOB_STATION)).await;
    assert_eq!(r.status, 404);
    assert!(r.message().contains(BOB_STATION), "{:?}", r.body);
    let r = sim.get("alice", &station_path(ALICE_INSTALLATION, "no-such-station")).await;
    assert_eq!(r.status, 404);
    assert!(r.message().contains("no-such-station"));
}

#[tokio::test]
async fn bobs_seeded_car_is_plugged_and_waiting_in_deferred_mode() {
    let app = spawn_app().await;
    let sim = app.sim();
    let p = sim.station("bob", BOB_INSTALLATION, BOB_STATION).await["properties"].clone();
    assert_eq!(p["chargeMode"], "deferred");
    assert_eq!(p["availability"], "occupied");
    assert_eq!(p["carPlugStatus"], "m3");
    let cur = &p["currentSession"];
    assert_eq!(cur["chargingSpeed"], "none", "deferred: not charging yet: {cur}");
    assert!(date(&cur["startDate"]) <= Utc::now());
    assert!(is_hh_mm(&cur["duration"]) && is_hh_mm(&cur["chargingDuration"]), "{cur}");
    assert_eq!(cur["totalSessionEnergy"], 0.0);
    assert_eq!(
        sim.station("bob", BOB_CHALET, BOB_CHALET_STATION).await["properties"]["chargeMode"],
        "deferredExclusive"
    );
}

#[tokio::test]
async fn associating_and_removing_a_station() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = new_installation(sim, "alice").await;
    let devices = sim.devices().await;
    assert_eq!(devices.as_array().unwrap().len(), 5);
    let device = devices.as_array().unwrap().iter().find(|d| d["gridSubscription"] == "HCHP").unwrap().clone();
    let uid = device["uid"].as_str().unwrap().to_string();
    assert_eq!(device["qrCode"], format!("https://hgr.io/u/{uid}"));
    let stations = format!("/installations/{i}/charging-stations");
    assert_eq!(sim.get("alice", &stations).await.body, json!([]));

    let r =
        sim.post("alice", &stations, json!({"uid": uid, "timezone": "GMT Standard Time", "country": "en-gb"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let cs = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["uuid"], uid.as_str());
    assert_eq!(r.body["serialNumber"], device["serialNumber"]);
    assert_eq!(r.body["installationParentId"], i);
    assert_eq!(r.body["type"], "chargingStation");
    let p = &r.body["properties"];
    assert_eq!(p["timezone"], "GMT Standard Time");
    assert_eq!(p["culture"], "en-gb");
    assert_eq!(p["availability"], "available");
    assert_eq!(p["currentSession"], Value::Null);
    assert_eq!(p["lastSession"]["startDate"], "0001-01-01T00:00:00Z", "never charged: {p}");
    assert_eq!(p["lastSession"]["endDate"], "0001-01-01T00:00:00Z");
    assert_eq!(sim.station("alice", i, &cs).await, r.body, "the 201 body is the station");

    // The installation now carries the station's reference; its meter came with it.
    let inst = sim.get("alice", "/installations").await.body;
    let inst = inst.as_array().unwrap().iter().find(|x| x["installationId"] == i).unwrap().clone();
    assert_eq!(inst["externalId"], format!("XEVFR-{}", device["serialNumber"].as_str().unwrap()));
    let meters = sim.get("alice", &format!("/installations/{i}/grid-meters")).await.body;
    assert_eq!(meters.as_array().unwrap().len(), 1);
    assert_eq!(meters[0]["properties"]["gridSubscription"], "HCHP");
    assert!(!sim.devices().await.as_array().unwrap().iter().any(|d| d["uid"] == uid.as_str()), "out of the pool");

    // One station per installation; a station already associated cannot be taken again.
    let other = devices[1]["uid"].as_str().unwrap();
    let second =
        sim.post("alice", &stations, json!({"uid": other, "timezone": "GMT Standard Time", "country": "en-gb"})).await;
    assert_eq!(second.status, 409, "{:?}", second.body);
    let j = new_installation(sim, "bob").await;
    let taken = sim
        .post(
            "bob",
            &format!("/installations/{j}/charging-stations"),
            json!({"uid": uid, "timezone": "GMT Standard Time", "country": "en-gb"}),
        )
        .await;
    assert_eq!(taken.status, 409, "{:?}", taken.body);
    assert!(taken.message().contains(&uid));

    // Removal: 204, the station and its meter are gone, the device is back in the pool.
    let removed = sim.delete("alice", &station_path(i, &cs)).await;
    assert_eq!(removed.status, 204, "{:?}", removed.body);
    assert_eq!(sim.get("alice", &station_path(i, &cs)).await.status, 404);
    assert_eq!(sim.get("alice", &stations).await.body, json!([]));
    assert_eq!(sim.get("alice", &format!("/installations/{i}/grid-meters")).await.body, json!([]));
    assert_eq!(sim.devices().await.as_array().unwrap().len(), 5);
    let again = sim.delete("alice", &station_path(i, &cs)).await;
    assert_eq!(again.status, 404, "{:?}", again.body);

    // By QR code alone this time: a new station id.
    let qr = sim
        .post("alice", &stations, json!({"qrCode": format!("https://hgr.io/u/{uid}"), "timezone": "W. Europe Standard Time", "country": "de-de"}))
        .await;
    assert_eq!(qr.status, 201, "{:?}", qr.body);
    assert_eq!(qr.body["uuid"], uid.as_str());
    assert_ne!(qr.body["id"], cs.as_str());
    assert_eq!(qr.body["properties"]["culture"], "de-de");
}

#[tokio::test]
async fn association_accepts_uid_and_qr_code_together_when_they_agree() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = new_installation(sim, "dieter").await;
    let uid = sim.devices().await[2]["uid"].as_str().unwrap().to_string();
    let r = sim
        .post(
            "dieter",
            &format!("/installations/{i}/charging-stations"),
            json!({"uid": uid, "qrCode": format!("https://hgr.io/u/{uid}"), "timezone": "Romance Standard Time", "country": "fr-fr"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[tokio::test]
async fn an_invalid_association_is_refused_naming_the_problem() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = new_installation(sim, "alice").await;
    let path = format!("/installations/{i}/charging-stations");
    let uid = "Fbo5WTTsSeeLQ8YYoLzNwN";
    let tz = "Romance Standard Time";
    for (body, status, needle) in [
        (json!({"timezone": tz, "country": "fr-fr"}), 400, "uid or qrCode"),
        (json!({"uid": "  ", "qrCode": "", "timezone": tz, "country": "fr-fr"}), 400, "uid or qrCode"),
        (json!({"qrCode": "https://example.com/u/abc", "timezone": tz, "country": "fr-fr"}), 400, "qrCode"),
        (json!({"qrCode": "https://hgr.io/u/", "timezone": tz, "country": "fr-fr"}), 400, "qrCode"),
        (json!({"uid": uid, "qrCode": "https://hgr.io/u/Other", "timezone": tz, "country": "fr-fr"}), 400, "qrCode"),
        (json!({"uid": uid, "country": "fr-fr"}), 400, "timezone"),
        (json!({"uid": uid, "timezone": "Pacific Standard Time", "country": "fr-fr"}), 400, "timezone"),
        (json!({"uid": uid, "timezone": "Europe/Paris", "country": "fr-fr"}), 400, "timezone"),
        (json!({"uid": uid, "timezone": tz}), 400, "country"),
        (json!({"uid": uid, "timezone": tz, "country": "es-es"}), 400, "country"),
        (json!({"uid": uid, "timezone": tz, "country": "fr"}), 400, "country"),
        (json!({"uid": 42, "timezone": tz, "country": "fr-fr"}), 400, "uid"),
        (json!({"uid": uid, "timezone": ["GMT Standard Time"], "country": "fr-fr"}), 400, "timezone"),
        (json!({"uid": "NoSuchDevice123", "timezone": tz, "country": "fr-fr"}), 404, "NoSuchDevice123"),
        (json!({"uid": "SyybhpX7Lzo3uhTzCoWQbn", "timezone": tz, "country": "fr-fr"}), 409, "SyybhpX7Lzo3uhTzCoWQbn"),
    ] {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {:?}", r.body);
        assert!(r.message().contains(needle), "{body}: the message names {needle}: {:?}", r.body);
    }
    // The allowed sets are named in the refusal.
    let r = sim.post("alice", &path, json!({"uid": uid, "timezone": "UTC", "country": "fr-fr"})).await;
    for tz in ["GMT Standard Time", "Romance Standard Time", "W. Europe Standard Time"] {
        assert!(r.message().contains(tz), "{:?}", r.body);
    }
    let r = sim.post("alice", &path, json!({"uid": uid, "timezone": tz, "country": "it-it"})).await;
    for c in ["en-gb", "fr-fr", "de-de"] {
        assert!(r.message().contains(c), "{:?}", r.body);
    }
    assert_eq!(sim.get("alice", &path).await.body, json!([]), "nothing was associated");
    // Every allowed timezone and country is accepted.
    for (n, (tz, country)) in
        [("GMT Standard Time", "en-gb"), ("Romance Standard Time", "fr-fr"), ("W. Europe Standard Time", "de-de")]
            .into_iter()
            .enumerate()
    {
        let j = new_installation(sim, "alice").await;
        let uid = sim.devices().await[0]["uid"].as_str().unwrap().to_string();
        let r = sim
            .post(
                "alice",
                &format!("/installations/{j}/charging-stations"),
                json!({"uid": uid, "timezone": tz, "country": country}),
            )
            .await;
        assert_eq!(r.status, 201, "{n}: {tz} {country}: {:?}", r.body);
        assert_eq!(r.body["properties"]["timezone"], tz);
        assert_eq!(r.body["properties"]["culture"], country);
    }
}

#[tokio::test]
async fn a_command_answers_202_at_once_and_takes_effect_after_the_delay() {
    let delay = Duration::from_millis(1000);
    let app = TestApp::builder().sim(|s| s.command_delay = delay).spawn().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let sent = Instant::now();
    let r = sim.post("alice", &format!("{cs}/operators/set-charge-mode"), json!({"chargeMode": "deferred"})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert!(sent.elapsed() < delay, "202 comes before the station applies the command: {:?}", sent.elapsed());
    assert_eq!(
        sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await["properties"]["chargeMode"],
        "immediate",
        "accepted is not applied"
    );
    station_when(sim, "alice", ALICE_INSTALLATION, ALICE_STATION, "the charge mode to change", |st| {
        st["properties"]["chargeMode"] == "deferred"
    })
    .await;
    assert!(sent.elapsed() >= delay, "applied after the delay: {:?}", sent.elapsed());
}

#[tokio::test]
async fn every_charge_mode_is_accepted_and_logged() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let since = Utc::now() - chrono::Duration::seconds(1);
    for mode in ["deferred", "deferredExclusive", "immediate"] {
        let r = sim.post("alice", &format!("{cs}/operators/set-charge-mode"), json!({"chargeMode": mode})).await;
        assert_eq!(r.status, 202, "{mode}: {:?}", r.body);
        assert_eq!(r.body, Value::Null, "202 has no body");
        station_when(sim, "alice", ALICE_INSTALLATION, ALICE_STATION, mode, |st| {
            st["properties"]["chargeMode"] == mode
        })
        .await;
    }
    let until = Utc::now() + chrono::Duration::seconds(1);
    let logs = sim
        .post(
            "alice",
            &format!("{cs}/logs/4/operators/list"),
            range_body(&since.to_rfc3339(), &until.to_rfc3339(), None),
        )
        .await;
    assert_eq!(logs.status, 200, "{:?}", logs.body);
    let modes: Vec<&str> =
        logs.body.as_array().unwrap().iter().map(|e| e["value"]["chargeMode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["deferred", "deferredExclusive", "immediate"], "{}", logs.body);
    assert!(logs.body.as_array().unwrap().iter().all(|e| e["logName"] == "ChargeMode"));
}

#[tokio::test]
async fn an_unknown_charge_mode_is_400_naming_the_allowed_ones() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/operators/set-charge-mode", station_path(ALICE_INSTALLATION, ALICE_STATION));
    for body in
        [json!({"chargeMode": "turbo"}), json!({"chargeMode": ""}), json!({}), json!({"chargeMode": "Immediate "})]
    {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains("chargeMode"), "{body}: {:?}", r.body);
        for mode in ["immediate", "deferred", "deferredExclusive"] {
            assert!(r.message().contains(mode), "{body}: the message lists {mode}: {:?}", r.body);
        }
    }
    let r = sim.post("alice", &path, json!({"chargeMode": 1})).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("chargeMode"), "{:?}", r.body);
    let r = sim
        .post(
            "alice",
            &format!("{}/operators/set-charge-mode", station_path(ALICE_INSTALLATION, "nope")),
            json!({"chargeMode": "deferred"}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
}

#[tokio::test]
async fn the_charge_mode_cannot_change_while_a_car_is_plugged() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/operators/set-charge-mode", station_path(BOB_INSTALLATION, BOB_STATION));
    for mode in ["immediate", "deferred", "deferredExclusive"] {
        let r = sim.post("bob", &path, json!({"chargeMode": mode})).await;
        assert_eq!(r.status, 409, "{mode}: {:?}", r.body);
        assert_eq!(r.body["statusCode"], 409);
        assert!(r.message().contains("plugged"), "{:?}", r.body);
    }
    // Once the car leaves, the same command is accepted.
    assert_eq!(sim.unplug(BOB_STATION).await.status, 200);
    let r = sim.post("bob", &path, json!({"chargeMode": "immediate"})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    station_when(sim, "bob", BOB_INSTALLATION, BOB_STATION, "immediate mode", |st| {
        st["properties"]["chargeMode"] == "immediate"
    })
    .await;
}

#[tokio::test]
async fn start_and_stop_need_a_plugged_car() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    for op in ["start", "stop"] {
        let r = sim.call("alice", Method::POST, &format!("{cs}/operators/{op}"), None).await;
        assert_eq!(r.status, 409, "{op}: {:?}", r.body);
        assert!(r.message().contains("no car is plugged"), "{op}: {:?}", r.body);
        let r = sim
            .call("alice", Method::POST, &format!("{}/operators/{op}", station_path(ALICE_INSTALLATION, "nope")), None)
            .await;
        assert_eq!(r.status, 404, "{op}: {:?}", r.body);
    }
}

#[tokio::test]
async fn start_and_stop_charge_bobs_plugged_car_after_the_delay() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(BOB_INSTALLATION, BOB_STATION);
    let r = sim.call("bob", Method::POST, &format!("{cs}/operators/start"), None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = station_when(sim, "bob", BOB_INSTALLATION, BOB_STATION, "charging to start", |st| {
        st["properties"]["currentSession"]["chargingSpeed"] == "optimal"
    })
    .await;
    assert_eq!(st["properties"]["availability"], "occupied");
    let r = sim.call("bob", Method::POST, &format!("{cs}/operators/stop"), None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = station_when(sim, "bob", BOB_INSTALLATION, BOB_STATION, "charging to stop", |st| {
        st["properties"]["currentSession"]["chargingSpeed"] == "none"
    })
    .await;
    assert_eq!(st["properties"]["carPlugStatus"], "m3", "stopping the charge does not unplug the car");
    // Starting twice, or stopping what is not charging, is accepted and harmless.
    let r = sim.call("bob", Method::POST, &format!("{cs}/operators/stop"), None).await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn plugging_in_immediate_mode_starts_a_session_and_unplugging_ends_it() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let before = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    let plugged = sim.plug(ALICE_STATION).await;
    assert_eq!(plugged.status, 200, "{:?}", plugged.body);
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    let p = &st["properties"];
    assert_eq!(p["availability"], "occupied");
    assert_eq!(p["carPlugStatus"], "m3");
    let cur = p["currentSession"].clone();
    assert!(cur.is_object(), "a current session: {p}");
    assert_eq!(cur["chargingSpeed"], "optimal", "immediate mode charges at once");
    assert!(is_hh_mm(&cur["duration"]) && is_hh_mm(&cur["chargingDuration"]), "{cur}");
    let start = date(&cur["startDate"]);
    assert!((Utc::now() - start).num_seconds().abs() < 60, "started now: {start}");
    assert_eq!(p["lastSession"], before["properties"]["lastSession"], "the last session is still the previous one");

    // A second car cannot be plugged; the charge mode and the reboot settings are locked.
    assert_eq!(sim.plug(ALICE_STATION).await.status, 409);
    let r = sim.post("alice", &format!("{cs}/operators/set-charge-mode"), json!({"chargeMode": "deferred"})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);

    let unplugged = sim.unplug(ALICE_STATION).await;
    assert_eq!(unplugged.status, 200, "{:?}", unplugged.body);
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    let p = &st["properties"];
    assert_eq!(p["availability"], "available");
    assert_eq!(p["carPlugStatus"], "unplugged");
    assert_eq!(p["currentSession"], Value::Null);
    let last = &p["lastSession"];
    assert_eq!(last["startDate"], cur["startDate"], "the last session is the one that just ended: {last}");
    let end = date(&last["endDate"]);
    assert!(end >= start);
    let energy = last["totalSessionEnergy"].as_f64().unwrap();
    assert!(energy >= 0.0);

    // The logs tell the same story: SessionStart at the plug, SessionEnd at the unplug.
    let from = (start - chrono::Duration::minutes(1)).to_rfc3339();
    let to = (Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let logs = sim.post("alice", &format!("{cs}/logs/operators/list"), range_body(&from, &to, None)).await.body;
    let entries = logs.as_array().unwrap();
    let session_start = entries.iter().find(|e| e["logName"] == "SessionStart").expect("a SessionStart entry");
    assert_eq!(session_start["date"], cur["startDate"]);
    assert_eq!(session_start["value"], json!({"evcsSocket": "m3", "evcsCableValue": 32}));
    let session_end = entries.iter().find(|e| e["logName"] == "SessionEnd").expect("a SessionEnd entry");
    assert_eq!(session_end["date"], last["endDate"]);
    assert_eq!(session_end["value"]["energy"].as_f64().unwrap(), energy);
    assert_eq!(session_end["value"]["cost"], last["totalSessionCost"]);
    // Whole seconds on both sides, rounded differently: they agree within one.
    let logged = session_end["value"]["sessionDuration"].as_i64().unwrap();
    assert!((logged - (end - start).num_seconds()).abs() <= 1, "{logged} s vs {start} .. {end}");
    // Unplugging again is a conflict.
    assert_eq!(sim.unplug(ALICE_STATION).await.status, 409);
}

#[tokio::test]
async fn plugging_in_a_deferred_mode_waits_for_a_start_command() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.plug(BOB_CHALET_STATION).await;
    let st = sim.station("bob", BOB_CHALET, BOB_CHALET_STATION).await;
    assert_eq!(st["properties"]["carPlugStatus"], "m3");
    assert_eq!(
        st["properties"]["currentSession"]["chargingSpeed"], "none",
        "deferredExclusive does not charge on plug"
    );
    let r = sim
        .call("bob", Method::POST, &format!("{}/operators/start", station_path(BOB_CHALET, BOB_CHALET_STATION)), None)
        .await;
    assert_eq!(r.status, 202);
    station_when(sim, "bob", BOB_CHALET, BOB_CHALET_STATION, "charging", |st| {
        st["properties"]["currentSession"]["chargingSpeed"] == "optimal"
    })
    .await;
}

#[tokio::test]
async fn the_car_controls_refuse_unknown_stations() {
    let app = spawn_app().await;
    let sim = app.sim();
    for r in [sim.plug("nope").await, sim.unplug("nope").await] {
        assert_eq!(r.status, 404, "{:?}", r.body);
        assert!(r.message().contains("nope"));
    }
    assert_eq!(sim.unplug(ALICE_STATION).await.status, 409, "nothing to unplug");
}

#[tokio::test]
async fn updating_a_station_answers_202_and_applies_every_field_later() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    // The document's example payload.
    let r = sim
        .put(
            "alice",
            &cs,
            json!({
                "friendlyName": "my borne", "ledPower": 30, "averageEvConsumption": 37.5,
                "tariff1": "hp", "tariff2": "hc", "tariff3": "hp", "tariff4": "hp", "tariff5": "hc",
                "tariff6": "hp", "tariff7": "hp", "tariff8": "hp", "tariff9": "hp", "tariff10": "hp"
            }),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = station_when(sim, "alice", ALICE_INSTALLATION, ALICE_STATION, "the update", |st| {
        st["properties"]["friendlyName"] == "my borne"
    })
    .await;
    let p = &st["properties"];
    assert_eq!(p["ledPower"], 30);
    assert_eq!(p["averageEvConsumption"], "37.5", "a number when written, a string when read");
    assert_eq!(p["isDefaultAverageEvConsumption"], false);
    let tariffs: Vec<&str> = (1..=10).map(|n| p[format!("tariff{n}")].as_str().unwrap()).collect();
    assert_eq!(tariffs, ["hp", "hc", "hp", "hp", "hc", "hp", "hp", "hp", "hp", "hp"]);

    // One field alone leaves the others as they are.
    let r = sim.put("alice", &cs, json!({"tariff2": "hp"})).await;
    assert_eq!(r.status, 202);
    let st = station_when(sim, "alice", ALICE_INSTALLATION, ALICE_STATION, "tariff2", |st| {
        st["properties"]["tariff2"] == "hp"
    })
    .await;
    assert_eq!(st["properties"]["friendlyName"], "my borne");
    assert_eq!(st["properties"]["ledPower"], 30);
}

#[tokio::test]
async fn an_invalid_station_update_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    for (body, field) in [
        (json!({}), "friendlyName"),
        (json!({"friendlyName": ""}), "friendlyName"),
        (json!({"friendlyName": "x".repeat(65)}), "friendlyName"),
        (json!({"friendlyName": 3}), "friendlyName"),
        (json!({"ledPower": 101}), "ledPower"),
        (json!({"ledPower": -1}), "ledPower"),
        (json!({"ledPower": "30"}), "ledPower"),
        (json!({"ledPower": 30.5}), "ledPower"),
        (json!({"averageEvConsumption": 0}), "averageEvConsumption"),
        (json!({"averageEvConsumption": 150}), "averageEvConsumption"),
        (json!({"averageEvConsumption": "37.5"}), "averageEvConsumption"),
        (json!({"tariff3": "peak"}), "tariff3"),
        (json!({"tariff10": "HC"}), "tariff10"),
        (json!({"tariff1": true}), "tariff1"),
        (json!({"tariff11": "hc"}), "tariff11"),
        (json!({"colour": "blue"}), "colour"),
    ] {
        let r = sim.put("alice", &cs, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: the message names {field}: {:?}", r.body);
    }
    let r = sim.put("alice", &station_path(ALICE_INSTALLATION, "nope"), json!({"friendlyName": "x"})).await;
    assert_eq!(r.status, 404);
    // Nothing was applied.
    let r = sim.put("alice", &cs, json!({"friendlyName": "marker"})).await;
    assert_eq!(r.status, 202);
    let st = station_when(sim, "alice", ALICE_INSTALLATION, ALICE_STATION, "marker", |st| {
        st["properties"]["friendlyName"] == "marker"
    })
    .await;
    assert_eq!(st["properties"]["ledPower"], 50);
    assert_eq!(st["properties"]["tariff3"], "hc");
}

#[tokio::test]
async fn led_power_and_tariffs_cannot_change_while_a_car_is_plugged_but_the_rest_can() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(BOB_INSTALLATION, BOB_STATION);
    for (body, needle) in [
        (json!({"ledPower": 30}), "ledPower"),
        (json!({"tariff5": "hp"}), "tariff"),
        (json!({"tariff1": "hc", "tariff10": "hp"}), "tariff"),
        (json!({"friendlyName": "ok", "ledPower": 10}), "ledPower"),
        (json!({"averageEvConsumption": 20.0, "tariff2": "hc"}), "tariff"),
    ] {
        let r = sim.put("bob", &cs, body.clone()).await;
        assert_eq!(r.status, 409, "{body}: {:?}", r.body);
        assert!(r.message().contains(needle) && r.message().contains("plugged"), "{body}: {:?}", r.body);
    }
    let r = sim.put("bob", &cs, json!({"friendlyName": "Borne Lyon", "averageEvConsumption": 16.5})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = station_when(sim, "bob", BOB_INSTALLATION, BOB_STATION, "the name", |st| {
        st["properties"]["friendlyName"] == "Borne Lyon"
    })
    .await;
    assert_eq!(st["properties"]["averageEvConsumption"], "16.5");
    assert_eq!(st["properties"]["ledPower"], 50, "the refused ledPower was not applied");
    // Unplugged, the same change goes through.
    sim.unplug(BOB_STATION).await;
    let r = sim.put("bob", &cs, json!({"ledPower": 30, "tariff5": "hp"})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    station_when(sim, "bob", BOB_INSTALLATION, BOB_STATION, "ledPower", |st| {
        st["properties"]["ledPower"] == 30 && st["properties"]["tariff5"] == "hp"
    })
    .await;
}

#[tokio::test]
async fn raw_property_overrides_are_laid_over_the_model_and_removed_with_null() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("/_sim/stations/{ALICE_STATION}/properties");
    let r = sim.control(Method::PUT, &path, Some(json!({"chargeMode": "solarBoost", "newField": 1}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(st["properties"]["chargeMode"], "solarBoost");
    assert_eq!(st["properties"]["newField"], 1);
    assert_eq!(st["properties"]["friendlyName"], "my garage charging station", "the rest is untouched");
    sim.control(Method::PUT, &path, Some(json!({"chargeMode": null, "newField": null}))).await;
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(st["properties"]["chargeMode"], "immediate");
    assert!(st["properties"].get("newField").is_none());
    let meter = format!("/_sim/grid-meters/{ALICE_METER}/properties");
    let r = sim.control(Method::PUT, &meter, Some(json!({"ticType": "historicTri"}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sim.get("alice", &meter_path(ALICE_INSTALLATION, ALICE_METER)).await.body["properties"]["ticType"],
        "historicTri"
    );
    assert_eq!(sim.control(Method::PUT, "/_sim/stations/nope/properties", Some(json!({}))).await.status, 404);
    assert_eq!(sim.control(Method::PUT, &path, Some(json!(["chargeMode"]))).await.status, 400);
}
