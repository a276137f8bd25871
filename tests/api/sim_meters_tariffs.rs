//! Grid meters and tariffs: the meter model per subscription, the TIC consent, the default
//! tariffs, and setting prices (STANDARD needs all ten tariffs, every other subscription exactly
//! its own ids), which the costs then follow.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

/// The tariff ids of each subscription, as the document lists them.
fn tariff_ids(subscription: &str) -> Vec<String> {
    match subscription {
        "BASE" => vec!["th".into()],
        "HCHP" => vec!["hc".into(), "hp".into()],
        "EJP" => vec!["hn".into(), "pm".into()],
        "TEMPO" => ["hcjb", "hpjb", "hcjw", "hpjw", "hcjr", "hpjr"].map(String::from).to_vec(),
        "STANDARD" => (1..=10).map(|n| format!("tariff{n}")).collect(),
        other => panic!("no subscription {other}"),
    }
}

fn prices(ids: &[String], value: f64) -> Value {
    json!(
        ids.iter()
            .map(|id| json!({"id": id, "currency": "eur", "beginDate": "2025-07-01T00:00:00.000Z", "value": value}))
            .collect::<Vec<_>>()
    )
}

const METERS: [(&str, i64, &str, &str); 4] = [
    ("alice", ALICE_INSTALLATION, ALICE_METER, "HCHP"),
    ("bob", BOB_INSTALLATION, BOB_METER, "TEMPO"),
    ("bob", BOB_CHALET, BOB_CHALET_METER, "BASE"),
    ("dieter", DIETER_INSTALLATION, DIETER_METER, "STANDARD"),
];

/// A new installation of `sub` with the pool's device of that subscription; returns the meter path.
async fn installation_with(sim: &TestSim, sub: &str, subscription: &str) -> String {
    let r = sim
        .post(
            sub,
            "/installations",
            json!({"name": "Maison", "locationName": "Tours", "locationGpsCoordinates": {"latitude": 47.39, "longitude": 0.69}}),
        )
        .await;
    let i = r.body["installationId"].as_i64().unwrap();
    let devices = sim.devices().await;
    let uid =
        devices.as_array().unwrap().iter().find(|d| d["gridSubscription"] == subscription).unwrap()["uid"].clone();
    let r = sim
        .post(
            sub,
            &format!("/installations/{i}/charging-stations"),
            json!({"uid": uid, "timezone": "Romance Standard Time", "country": "fr-fr"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let meters = sim.get(sub, &format!("/installations/{i}/grid-meters")).await.body;
    assert_eq!(meters[0]["properties"]["gridSubscription"], subscription);
    meter_path(i, meters[0]["id"].as_str().unwrap())
}

#[tokio::test]
async fn each_meter_has_the_documents_model_for_its_subscription() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, i, gm, subscription) in METERS {
        let r = sim.get(sub, &meter_path(i, gm)).await;
        assert_eq!(r.status, 200);
        let m = &r.body;
        assert_eq!(m["id"], gm);
        assert_eq!(m["installationParentId"], i);
        assert_eq!(m["type"], "gridMeter");
        let p = &m["properties"];
        assert_eq!(p["gridSubscription"], subscription);
        assert_eq!(p["ticType"], if subscription == "STANDARD" { 2 } else { 5 }, "a number in the model");
        assert!(p["intensitySubscribed"].as_i64().is_some_and(|a| a > 0), "{p}");
        assert_eq!(p["authorizeTic"], "consent");
        let ids: Vec<String> = tariff_ids(subscription).iter().map(|t| t.to_uppercase()).collect();
        assert!(ids.contains(&p["currentTariff"].as_str().unwrap().to_string()), "{p}");
        let gc = &p["generalConsumption"];
        let names: Vec<String> =
            gc["consumptions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ids, "one consumption per tariff of the subscription");
        let sum: i64 = gc["consumptions"].as_array().unwrap().iter().map(|c| c["value"].as_i64().unwrap()).sum();
        assert_eq!(gc["consumptionTotalIndex"], sum, "the total index is the sum of the consumptions");
        assert!(sum > 0);
        let list = sim.get(sub, &format!("/installations/{i}/grid-meters")).await.body;
        assert_eq!(list, json!([r.body.clone()]));
    }
    let r = sim.get("alice", &meter_path(ALICE_INSTALLATION, "no-such-meter")).await;
    assert_eq!(r.status, 404);
    assert!(r.message().contains("no-such-meter"));
    let r = sim.get("bob", &meter_path(BOB_CHALET, BOB_METER)).await;
    assert_eq!(r.status, 404, "a meter through an installation it is not on: {:?}", r.body);
}

#[tokio::test]
async fn withdrawing_the_tic_consent_hides_consumptions_and_refuses_meter_measures() {
    let app = spawn_app().await;
    let sim = app.sim();
    let gm = meter_path(ALICE_INSTALLATION, ALICE_METER);
    let sum = format!("{gm}/measures/1/operators/sum");
    let day = range_body("2025-01-03T00:00:00Z", "2025-01-04T00:00:00Z", Some("day"));
    let r = sim.post("alice", &format!("{gm}/operators/authorize-tic"), json!({"authorizeTIC": false})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["properties"]["authorizeTic"], "noConsent");
    assert!(r.body["properties"].get("generalConsumption").is_none(), "{:?}", r.body);
    assert_eq!(sim.get("alice", &gm).await.body, r.body);
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(st["properties"]["authorizeTic"], "noConsent", "the station reports the consent too");
    for m in ["1", "2"] {
        let refused = sim.post("alice", &format!("{gm}/measures/{m}/operators/sum"), day.clone()).await;
        assert_eq!(refused.status, 403, "{:?}", refused.body);
        assert!(refused.message().contains("authorize-tic"), "the message says how to fix it: {:?}", refused.body);
    }
    // The metadata stays readable, and the station's own measures are not TIC data.
    assert_eq!(sim.get("alice", &format!("{gm}/measures")).await.status, 200);
    let station = format!("{}/measures/1/operators/sum", station_path(ALICE_INSTALLATION, ALICE_STATION));
    assert_eq!(sim.post("alice", &station, day.clone()).await.status, 200);

    // `authorizeTic` is accepted as a spelling of the document's `authorizeTIC`.
    let r = sim.post("alice", &format!("{gm}/operators/authorize-tic"), json!({"authorizeTic": true})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["properties"]["authorizeTic"], "consent");
    assert!(r.body["properties"]["generalConsumption"].is_object());
    assert_eq!(sim.post("alice", &sum, day).await.status, 200);
}

#[tokio::test]
async fn an_invalid_tic_consent_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/operators/authorize-tic", meter_path(ALICE_INSTALLATION, ALICE_METER));
    for body in [json!({}), json!({"authorizeTIC": "yes"}), json!({"authorizeTIC": 1}), json!({"authorizeTIC": null})] {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains("authorizeTIC"), "{body}: {:?}", r.body);
    }
    let r = sim
        .post(
            "alice",
            &format!("{}/operators/authorize-tic", meter_path(ALICE_INSTALLATION, "nope")),
            json!({"authorizeTIC": true}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        sim.get("alice", &meter_path(ALICE_INSTALLATION, ALICE_METER)).await.body["properties"]["authorizeTic"],
        "consent"
    );
}

#[tokio::test]
async fn default_tariffs_are_the_subscriptions() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, i, gm, subscription) in METERS {
        let base = format!("{}/tariffs", meter_path(i, gm));
        let r = sim.get(sub, &base).await;
        assert_eq!(r.status, 200);
        let list = r.body.as_array().unwrap();
        let ids: BTreeSet<String> = list.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids, tariff_ids(subscription).into_iter().collect::<BTreeSet<_>>(), "{subscription}");
        for t in list {
            assert_eq!(t["installationParentId"], 0, "the document's quirk: {t}");
            assert_eq!(t["currency"], "eur");
            assert_eq!(t["isDefault"], true);
            assert!(t["friendlyName"].as_str().is_some_and(|n| !n.is_empty()));
            let values = t["values"].as_array().unwrap();
            assert!(!values.is_empty());
            assert!(
                values.iter().all(|v| v["value"].as_f64().is_some_and(|p| p > 0.0) && v["beginDate"].is_string()),
                "{t}"
            );
            let one = sim.get(sub, &format!("{base}/{}", t["id"].as_str().unwrap())).await;
            assert_eq!(one.status, 200);
            assert_eq!(&one.body, t);
        }
    }
    for (path, needle) in [
        (format!("{}/tariffs/th", meter_path(ALICE_INSTALLATION, ALICE_METER)), "HCHP"),
        (format!("{}/tariffs/xx", meter_path(ALICE_INSTALLATION, ALICE_METER)), "xx"),
        (format!("{}/tariffs/tariff11", meter_path(DIETER_INSTALLATION, DIETER_METER)), "tariff11"),
        (format!("{}/tariffs", meter_path(ALICE_INSTALLATION, "nope")), "nope"),
    ] {
        let who = if path.contains(&DIETER_INSTALLATION.to_string()) { "dieter" } else { "alice" };
        let r = sim.get(who, &path).await;
        assert_eq!(r.status, 404, "{path}: {:?}", r.body);
        assert!(r.message().contains(needle), "{path}: {:?}", r.body);
    }
}

#[tokio::test]
async fn each_subscription_takes_exactly_its_own_tariffs() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ejp = installation_with(sim, "alice", "EJP").await;
    let mut meters: Vec<(String, String, &str)> =
        METERS.iter().map(|(sub, i, gm, s)| (sub.to_string(), meter_path(*i, gm), *s)).collect();
    meters.push(("alice".into(), ejp, "EJP"));
    for (sub, gm, subscription) in &meters {
        let path = format!("{gm}/tariffs");
        let ids = tariff_ids(subscription);
        let r = sim.post(sub, &path, prices(&ids, 0.33)).await;
        assert_eq!(r.status, 200, "{subscription}: {:?}", r.body);
        let list = r.body.as_array().unwrap();
        assert_eq!(list.len(), ids.len(), "the full history of every tariff of the subscription");
        for t in list {
            assert_eq!(t["isDefault"], false, "{t}");
            assert_eq!(
                t["values"][0],
                json!({"beginDate": "2025-07-01T00:00:00.000Z", "value": 0.33}),
                "newest first: {t}"
            );
            assert!(t["values"].as_array().unwrap().len() >= 2, "the default price stays in the history: {t}");
        }
        assert_eq!(sim.get(sub, &path).await.body, r.body, "stored");
    }
}

#[tokio::test]
async fn a_subscriptions_tariffs_must_all_be_given_and_no_others() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ejp = installation_with(sim, "alice", "EJP").await;
    let alice = format!("{}/tariffs", meter_path(ALICE_INSTALLATION, ALICE_METER));
    let bob = format!("{}/tariffs", meter_path(BOB_INSTALLATION, BOB_METER));
    let chalet = format!("{}/tariffs", meter_path(BOB_CHALET, BOB_CHALET_METER));
    let dieter = format!("{}/tariffs", meter_path(DIETER_INSTALLATION, DIETER_METER));
    let ejp = format!("{ejp}/tariffs");
    let ids = |s: &str| tariff_ids(s);
    let nine: Vec<String> = ids("STANDARD")[..9].to_vec();
    let three: Vec<String> = ids("STANDARD")[..3].to_vec();
    let with = |mut v: Vec<String>, extra: &str| {
        v.push(extra.into());
        v
    };
    for (sub, path, body, needles) in [
        ("alice", &alice, prices(&["hc".into()], 0.3), vec!["missing", "hp"]),
        ("alice", &alice, prices(&["th".into()], 0.3), vec!["th", "HCHP"]),
        ("alice", &alice, prices(&with(ids("HCHP"), "th"), 0.3), vec!["th"]),
        ("alice", &alice, prices(&with(ids("HCHP"), "hc"), 0.3), vec!["twice"]),
        ("bob", &bob, prices(&ids("HCHP"), 0.3), vec!["hc", "TEMPO"]),
        ("bob", &bob, prices(&ids("TEMPO")[..5], 0.3), vec!["missing", "hpjr"]),
        ("bob", &chalet, prices(&ids("HCHP"), 0.3), vec!["BASE"]),
        ("bob", &chalet, json!([]), vec!["missing", "th"]),
        ("dieter", &dieter, prices(&nine, 0.3), vec!["missing", "tariff10"]),
        ("dieter", &dieter, prices(&three, 0.3), vec!["STANDARD", "tariff4", "tariff10"]),
        ("dieter", &dieter, prices(&with(ids("STANDARD"), "tariff11"), 0.3), vec!["tariff11"]),
        ("alice", &ejp, prices(&ids("HCHP"), 0.3), vec!["hn", "pm"]),
        ("alice", &ejp, prices(&["hn".into()], 0.3), vec!["missing", "pm"]),
    ] {
        let r = sim.post(sub, path, body.clone()).await;
        assert_eq!(r.status, 400, "{path} {body}: {:?}", r.body);
        for needle in needles {
            assert!(r.message().contains(needle), "{path} {body}: the message names {needle}: {:?}", r.body);
        }
    }
    // Nothing was stored.
    for (sub, path) in [("alice", &alice), ("bob", &bob), ("bob", &chalet), ("dieter", &dieter), ("alice", &ejp)] {
        let list = sim.get(sub, path).await.body;
        assert!(list.as_array().unwrap().iter().all(|t| t["isDefault"] == true), "{path}: {list}");
    }
}

#[tokio::test]
async fn an_invalid_tariff_price_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/tariffs", meter_path(ALICE_INSTALLATION, ALICE_METER));
    let hp = json!({"id": "hp", "value": 0.3});
    for (hc, needle) in [
        (json!({"id": "hc"}), "[0].value"),
        (json!({"id": "hc", "value": -0.1}), "[0].value"),
        (json!({"id": "hc", "value": "cheap"}), "value"),
        (json!({"id": "hc", "value": 0.2, "currency": "euro"}), "[0].currency"),
        (json!({"id": "hc", "value": 0.2, "currency": "€"}), "[0].currency"),
        (json!({"id": "hc", "value": 0.2, "beginDate": "soon"}), "[0].beginDate"),
        (json!({"id": "hc", "value": 0.2, "beginDate": 20250101}), "beginDate"),
        (json!({"value": 0.2}), "[0].id"),
        (json!({"id": 7, "value": 0.2}), "id"),
    ] {
        let body = json!([hc.clone(), hp.clone()]);
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(needle), "{body}: the message names {needle}: {:?}", r.body);
    }
    for body in [json!({"id": "hc", "value": 0.2}), json!("hc"), json!(null)] {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: not an array: {:?}", r.body);
        assert!(!r.message().is_empty());
    }
    // A price of zero is a price (the document's STANDARD example sends zeros).
    let r = sim.post("alice", &path, json!([{"id": "hc", "value": 0}, {"id": "hp", "value": 0.3}])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn the_standard_example_of_the_document_is_accepted() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/tariffs", meter_path(DIETER_INSTALLATION, DIETER_METER));
    let mut body = vec![
        json!({"id": "tariff1", "friendlyName": "my low cost tariff", "currency": "eur", "beginDate": "2020-07-03T13:25:37.120Z", "value": 0.33}),
        json!({"id": "tariff2", "friendlyName": "my high cost tariff", "currency": "eur", "beginDate": "2020-07-03T13:25:37.120Z", "value": 0.806}),
        json!({"id": "tariff3", "friendlyName": "my special week-end tariff", "currency": "eur", "beginDate": "2020-07-03T13:25:37.120Z", "value": 0.42}),
    ];
    for n in 4..=10 {
        body.push(
            json!({"id": format!("tariff{n}"), "currency": "eur", "beginDate": "2020-07-03T13:25:37.120Z", "value": 0}),
        );
    }
    let r = sim.post("dieter", &path, json!(body)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t1 = sim.get("dieter", &format!("{path}/tariff1")).await.body;
    assert_eq!(t1["friendlyName"], "my low cost tariff");
    assert_eq!(t1["values"][0], json!({"beginDate": "2020-07-03T13:25:37.120Z", "value": 0.33}));
    let t4 = sim.get("dieter", &format!("{path}/tariff4")).await.body;
    assert_eq!(t4["friendlyName"], "Tariff 4", "no friendlyName given: the old one stays");
}

#[tokio::test]
async fn prices_keep_their_history_and_a_same_begin_date_replaces() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("{}/tariffs", meter_path(BOB_CHALET, BOB_CHALET_METER));
    let set = |begin: &str, value: f64| json!([{"id": "th", "beginDate": begin, "value": value}]);
    assert_eq!(sim.post("bob", &path, set("2024-01-01T00:00:00Z", 0.21)).await.status, 200);
    assert_eq!(sim.post("bob", &path, set("2025-01-01T00:00:00Z", 0.25)).await.status, 200);
    assert_eq!(sim.post("bob", &path, set("2024-01-01T00:00:00Z", 0.22)).await.status, 200);
    let th = sim.get("bob", &format!("{path}/th")).await.body;
    let values: Vec<(&str, f64)> = th["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["beginDate"].as_str().unwrap(), v["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        values,
        [("2025-01-01T00:00:00.000Z", 0.25), ("2024-01-01T00:00:00.000Z", 0.22), ("2020-01-01T00:00:00.000Z", 0.2516)],
        "newest first; the second 2024 price replaced the first"
    );
    // Without a beginDate, the price starts now.
    let r = sim.post("bob", &path, json!([{"id": "th", "value": 0.3}])).await;
    assert_eq!(r.status, 200);
    let newest = &r.body[0]["values"][0];
    assert_eq!(newest["value"], 0.3);
    let begin: chrono::DateTime<chrono::Utc> = newest["beginDate"].as_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now() - begin).num_seconds().abs() < 60, "{newest}");
}

#[tokio::test]
async fn costs_follow_the_prices_in_force() {
    let app = spawn_app().await;
    let sim = app.sim();
    let gm = meter_path(ALICE_INSTALLATION, ALICE_METER);
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let r = sim
        .post(
            "alice",
            &format!("{gm}/tariffs"),
            json!([{"id": "hc", "beginDate": "2024-12-01T00:00:00Z", "value": 0.5}, {"id": "hp", "beginDate": "2024-12-01T00:00:00Z", "value": 1.0}]),
        )
        .await;
    assert_eq!(r.status, 200);
    for (base, range, hc_price, hp_price) in [
        (&cs, ("2025-01-03T00:00:00Z", "2025-01-05T00:00:00Z"), 0.5, 1.0),
        (&gm, ("2025-01-03T00:00:00Z", "2025-01-05T00:00:00Z"), 0.5, 1.0),
        // Before the new prices began, the defaults apply.
        (&gm, ("2024-06-03T00:00:00Z", "2024-06-05T00:00:00Z"), 0.2068, 0.27),
    ] {
        let body = range_body(range.0, range.1, Some("day"));
        let energy = sim.post("alice", &format!("{base}/measures/1/operators/sum"), body.clone()).await.body;
        let cost = sim.post("alice", &format!("{base}/measures/2/operators/sum"), body).await.body;
        let energy = energy.as_array().unwrap();
        let cost = cost.as_array().unwrap();
        assert_eq!(energy.len(), cost.len());
        let mut some = 0.0;
        for (e, c) in energy.iter().zip(cost) {
            assert_eq!((&e["date"], &e["tariffType"]), (&c["date"], &c["tariffType"]));
            let price = if e["tariffType"] == "hc" { hc_price } else { hp_price };
            let expected = e["value"].as_f64().unwrap() * price;
            let got = c["value"].as_f64().unwrap();
            assert!((got - expected).abs() <= 1e-5, "{base} {range:?}: cost {got} vs energy x price {expected}");
            some += got;
        }
        assert!(some > 0.0, "{base} {range:?}: something was consumed");
    }
}
