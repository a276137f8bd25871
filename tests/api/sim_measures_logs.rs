//! Measures and logs of stations and grid meters: metadata, the four aggregation operators over
//! every step, determinism, hours that add up to days, per-tariff fields that add up to the value,
//! and logs that agree with the measures (a session's SessionEnd energy is what was measured
//! during it).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

/// Energies are whole watt-hours, so sums of kWh agree to far below this.
const ENERGY_TOLERANCE: f64 = 1e-6;

/// Costs are written with six decimals, so each row can be off by half a millionth.
fn cost_tolerance(rows: usize) -> f64 {
    rows as f64 * 5e-7 + 1e-9
}

/// The base path of a device: a station or a grid meter.
#[derive(Clone, Copy)]
enum Device<'a> {
    Station(i64, &'a str),
    Meter(i64, &'a str),
}

impl Device<'_> {
    fn path(&self) -> String {
        match *self {
            Device::Station(i, cs) => station_path(i, cs),
            Device::Meter(i, gm) => meter_path(i, gm),
        }
    }
}

/// POSTs an aggregation and returns its rows, asserting 200.
async fn aggregate(
    sim: &TestSim,
    sub: &str,
    device: Device<'_>,
    measure: &str,
    op: &str,
    range: (&str, &str),
    step: &str,
) -> Vec<Value> {
    let path = format!("{}/measures/{measure}/operators/{op}", device.path());
    let r = sim.post(sub, &path, range_body(range.0, range.1, Some(step))).await;
    assert_eq!(r.status, 200, "{path} {range:?} {step}: {:?}", r.body);
    r.body.as_array().expect("an array of rows").clone()
}

fn value(row: &Value) -> f64 {
    row["value"].as_f64().unwrap_or_else(|| panic!("a value in {row}"))
}

fn total(rows: &[Value]) -> f64 {
    rows.iter().map(value).sum()
}

/// The `value<Tariff>` fields of a row.
fn tariff_fields(row: &Value) -> BTreeMap<String, f64> {
    row.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("value") && !["value", "valueMin", "valueMax"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn date(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("a date, got {v}")).parse().unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn logs(sim: &TestSim, sub: &str, device: Device<'_>, log: Option<&str>, from: &str, to: &str) -> Vec<Value> {
    let path = match log {
        Some(l) => format!("{}/logs/{l}/operators/list", device.path()),
        None => format!("{}/logs/operators/list", device.path()),
    };
    let r = sim.post(sub, &path, range_body(from, to, None)).await;
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    r.body.as_array().unwrap().clone()
}

const ALICE_CS: Device<'static> = Device::Station(ALICE_INSTALLATION, ALICE_STATION);
const ALICE_GM: Device<'static> = Device::Meter(ALICE_INSTALLATION, ALICE_METER);
const BOB_CS: Device<'static> = Device::Station(BOB_INSTALLATION, BOB_STATION);
const BOB_GM: Device<'static> = Device::Meter(BOB_INSTALLATION, BOB_METER);
const CHALET_CS: Device<'static> = Device::Station(BOB_CHALET, BOB_CHALET_STATION);
const CHALET_GM: Device<'static> = Device::Meter(BOB_CHALET, BOB_CHALET_METER);
const DIETER_CS: Device<'static> = Device::Station(DIETER_INSTALLATION, DIETER_STATION);
const DIETER_GM: Device<'static> = Device::Meter(DIETER_INSTALLATION, DIETER_METER);

/// Every seeded device with its owner.
const SEEDED: [(&str, Device<'static>); 8] = [
    ("alice", ALICE_CS),
    ("alice", ALICE_GM),
    ("bob", BOB_CS),
    ("bob", BOB_GM),
    ("bob", CHALET_CS),
    ("bob", CHALET_GM),
    ("dieter", DIETER_CS),
    ("dieter", DIETER_GM),
];

#[tokio::test]
async fn measures_and_logs_are_described_by_their_metadata() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, device, cost) in [("alice", ALICE_CS, "ChargingCost"), ("alice", ALICE_GM, "ConsumptionCost")] {
        let base = device.path();
        let r = sim.get(sub, &format!("{base}/measures")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            json!([
                {"measureId": "1", "name": "EnergyConsumption", "type": "Energy", "unit": "kWh", "periodicity": "10m"},
                {"measureId": "2", "name": cost, "type": "Cost", "unit": "eur", "periodicity": "10m"}
            ])
        );
        for m in r.body.as_array().unwrap() {
            let one = sim.get(sub, &format!("{base}/measures/{}", m["measureId"].as_str().unwrap())).await;
            assert_eq!(one.status, 200);
            assert_eq!(&one.body, m);
        }
        let unknown = sim.get(sub, &format!("{base}/measures/9")).await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.message().contains("measure 9"), "{:?}", unknown.body);
    }
    let station_logs = sim.get("alice", &format!("{}/logs", ALICE_CS.path())).await.body;
    let names: Vec<(&str, &str)> = station_logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["logId"].as_str().unwrap(), l["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("1", "SessionStart"),
            ("2", "SessionEnd"),
            ("3", "KeySwitch"),
            ("4", "ChargeMode"),
            ("5", "Errors"),
            ("6", "CyberSecurity")
        ]
    );
    let meter_logs = sim.get("alice", &format!("{}/logs", ALICE_GM.path())).await.body;
    assert_eq!(
        meter_logs,
        json!([
            {"logId": "1", "name": "CurrentTariff", "periodicity": "Immediate"},
            {"logId": "2", "name": "TicType", "periodicity": "Immediate"}
        ])
    );
    for (device, list) in [(ALICE_CS, &station_logs), (ALICE_GM, &meter_logs)] {
        for l in list.as_array().unwrap() {
            assert_eq!(l["periodicity"], "Immediate");
            let one = sim.get("alice", &format!("{}/logs/{}", device.path(), l["logId"].as_str().unwrap())).await;
            assert_eq!(one.status, 200);
            assert_eq!(&one.body, l);
        }
        let unknown = sim.get("alice", &format!("{}/logs/7", device.path())).await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.message().contains("log 7"));
    }
}

#[tokio::test]
async fn the_same_query_twice_gives_identical_json_even_on_another_simulator() {
    let app = spawn_app().await;
    let sim = app.sim();
    let other_app = spawn_app().await;
    let other = other_app.sim();
    let range = ("2025-02-03T00:00:00Z", "2025-02-06T00:00:00Z");
    for (sub, device) in SEEDED {
        for measure in ["1", "2"] {
            for op in ["sum", "count", "average", "min-max"] {
                let first = aggregate(sim, sub, device, measure, op, range, "hour").await;
                let again = aggregate(sim, sub, device, measure, op, range, "hour").await;
                let elsewhere = aggregate(other, sub, device, measure, op, range, "hour").await;
                assert!(!first.is_empty(), "{} {measure} {op}", device.path());
                assert_eq!(serde_json::to_string(&first).unwrap(), serde_json::to_string(&again).unwrap());
                assert_eq!(first, elsewhere, "the history is a function of the seed, not of the run");
            }
        }
        let a = logs(sim, sub, device, Some("1"), range.0, range.1).await;
        assert_eq!(a, logs(other, sub, device, Some("1"), range.0, range.1).await);
    }
    let all = logs(sim, "alice", ALICE_CS, None, "2025-01-01T00:00:00Z", "2025-04-01T00:00:00Z").await;
    assert_eq!(all, logs(other, "alice", ALICE_CS, None, "2025-01-01T00:00:00Z", "2025-04-01T00:00:00Z").await);
}

#[tokio::test]
async fn another_seed_gives_another_history() {
    let app = spawn_app().await;
    let sim = app.sim();
    let other_app = TestApp::builder().sim(|s| s.seed = 7).spawn().await;
    let other = other_app.sim();
    let range = ("2025-01-01T00:00:00Z", "2025-04-01T00:00:00Z");
    let a = aggregate(sim, "alice", ALICE_CS, "1", "sum", range, "day").await;
    let b = aggregate(other, "alice", ALICE_CS, "1", "sum", range, "day").await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn hours_add_up_to_days_and_days_to_months() {
    let app = spawn_app().await;
    let sim = app.sim();
    let yesterday = (Utc::now() - Duration::days(1)).duration_trunc(Duration::days(1)).unwrap();
    let days = [
        ("2025-01-03T00:00:00Z".to_string(), "2025-01-04T00:00:00Z".to_string()),
        ("2025-06-14T00:00:00Z".to_string(), "2025-06-15T00:00:00Z".to_string()),
        (iso(yesterday), iso(yesterday + Duration::days(1))),
    ];
    for (sub, device) in SEEDED {
        for measure in ["1", "2"] {
            for (from, to) in &days {
                let hours = aggregate(sim, sub, device, measure, "sum", (from, to), "hour").await;
                let day = aggregate(sim, sub, device, measure, "sum", (from, to), "day").await;
                let what = format!("{} measure {measure} on {from}", device.path());
                let tolerance = if measure == "1" { ENERGY_TOLERANCE } else { cost_tolerance(hours.len() + day.len()) };
                assert!(day.len() <= 2, "{what}: one row per tariff type: {day:?}");
                assert!(
                    hours.iter().all(|h| date(&h["date"]) >= date(&json!(from)) && date(&h["date"]) < date(&json!(to)))
                );
                let (h, d) = (total(&hours), total(&day));
                assert!((h - d).abs() <= tolerance, "{what}: hours {h} vs day {d}");
                for kind in ["hc", "hp"] {
                    let h: f64 = hours.iter().filter(|r| r["tariffType"] == kind).map(value).sum();
                    let d: f64 = day.iter().filter(|r| r["tariffType"] == kind).map(value).sum();
                    assert!((h - d).abs() <= tolerance, "{what} {kind}: hours {h} vs day {d}");
                }
                if measure == "1" && matches!(device, Device::Meter(..)) {
                    assert!(d > 0.0, "{what}: a house always consumes");
                }
            }
        }
    }
    // Days add up to the month, months to the year.
    let days = aggregate(sim, "bob", BOB_GM, "1", "sum", ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z"), "day").await;
    let month =
        aggregate(sim, "bob", BOB_GM, "1", "sum", ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z"), "month").await;
    assert!((total(&days) - total(&month)).abs() <= ENERGY_TOLERANCE);
    let months =
        aggregate(sim, "alice", ALICE_CS, "1", "sum", ("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), "month").await;
    let year =
        aggregate(sim, "alice", ALICE_CS, "1", "sum", ("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), "year").await;
    assert!((total(&months) - total(&year)).abs() <= ENERGY_TOLERANCE);
    assert!(total(&year) > 100.0, "a year of charging: {}", total(&year));
}

#[tokio::test]
async fn every_step_buckets_by_its_period() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-01-01T00:00:00Z", "2025-03-01T00:00:00Z");
    let dates = |rows: &[Value]| rows.iter().map(|r| r["date"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    let month = aggregate(sim, "bob", BOB_GM, "1", "sum", range, "month").await;
    assert_eq!(dates(&month), BTreeSet::from(["2025-01-01T00:00:00.000Z".into(), "2025-02-01T00:00:00.000Z".into()]));
    let year = aggregate(sim, "bob", BOB_GM, "1", "sum", range, "year").await;
    assert_eq!(dates(&year), BTreeSet::from(["2025-01-01T00:00:00.000Z".to_string()]));
    let week = aggregate(sim, "bob", BOB_GM, "1", "sum", range, "week").await;
    for d in dates(&week) {
        assert_eq!(date(&json!(d)).format("%a %H:%M").to_string(), "Mon 00:00", "weeks start on Monday: {d}");
    }
    let day = aggregate(sim, "bob", BOB_GM, "1", "sum", range, "day").await;
    assert_eq!(dates(&day).len(), 59);
    let hour =
        aggregate(sim, "bob", BOB_GM, "1", "sum", ("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"), "hour").await;
    assert_eq!(dates(&hour).len(), 24);
    for rows in [&month, &year, &week, &day] {
        assert!(
            (total(rows) - total(&month)).abs() <= ENERGY_TOLERANCE,
            "every step sums the same range to the same total"
        );
    }
    // Rows come in date order, hc before hp within a date.
    let keys: Vec<(String, String)> =
        day.iter().map(|r| (r["date"].as_str().unwrap().into(), r["tariffType"].as_str().unwrap().into())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Step names are case-insensitive.
    assert_eq!(aggregate(sim, "bob", BOB_GM, "1", "sum", range, "Month").await, month);
}

/// The `value<Tariff>` fields of each tariff type, per subscription, as the document's model.
fn expected_fields(device: Device<'_>) -> [(&'static str, Vec<&'static str>); 2] {
    match device {
        Device::Station(ALICE_INSTALLATION, _) | Device::Meter(ALICE_INSTALLATION, _) => {
            [("hc", vec!["valueHc"]), ("hp", vec!["valueHp"])]
        }
        Device::Station(BOB_INSTALLATION, _) | Device::Meter(BOB_INSTALLATION, _) => {
            [("hc", vec!["valueHcjb", "valueHcjr", "valueHcjw"]), ("hp", vec!["valueHpjb", "valueHpjr", "valueHpjw"])]
        }
        Device::Station(BOB_CHALET, _) | Device::Meter(BOB_CHALET, _) => [("hc", vec![]), ("hp", vec!["valueTh"])],
        _ => [
            // Dieter's station classifies its ten tariffs as the document's example does.
            (
                "hc",
                vec!["valueTariff1", "valueTariff10", "valueTariff3", "valueTariff4", "valueTariff6", "valueTariff8"],
            ),
            ("hp", vec!["valueTariff2", "valueTariff5", "valueTariff7", "valueTariff9"]),
        ],
    }
}

#[tokio::test]
async fn per_tariff_fields_are_the_subscriptions_and_add_up_to_the_value() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-01-06T00:00:00Z", "2025-01-20T00:00:00Z");
    for (sub, device) in SEEDED {
        let fields = expected_fields(device);
        for measure in ["1", "2"] {
            for op in ["sum", "count"] {
                let rows = aggregate(sim, sub, device, measure, op, range, "day").await;
                assert!(!rows.is_empty());
                for row in &rows {
                    let kind = row["tariffType"].as_str().unwrap();
                    let wanted =
                        &fields.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| panic!("tariffType {kind}")).1;
                    let got = tariff_fields(row);
                    let names: Vec<&str> = got.keys().map(String::as_str).collect();
                    assert_eq!(&names, wanted, "{} {measure} {op}: {row}", device.path());
                    assert!(!wanted.is_empty(), "no {kind} rows for this subscription: {row}");
                    let sum: f64 = got.values().sum();
                    let tolerance =
                        if measure == "1" || op == "count" { ENERGY_TOLERANCE } else { cost_tolerance(got.len() + 1) };
                    assert!(
                        (sum - value(row)).abs() <= tolerance,
                        "{} {measure} {op}: fields {sum} vs value in {row}",
                        device.path()
                    );
                    assert!(row.get("valueMin").is_none() && row.get("valueMax").is_none(), "{row}");
                }
            }
        }
    }
}

#[tokio::test]
async fn count_average_and_min_max_agree_with_sum() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-04-07T00:00:00Z", "2025-04-08T00:00:00Z");
    for (sub, device) in SEEDED {
        for measure in ["1", "2"] {
            let sum = aggregate(sim, sub, device, measure, "sum", range, "hour").await;
            let count = aggregate(sim, sub, device, measure, "count", range, "hour").await;
            let average = aggregate(sim, sub, device, measure, "average", range, "hour").await;
            let min_max = aggregate(sim, sub, device, measure, "min-max", range, "hour").await;
            let what = format!("{} measure {measure}", device.path());
            assert_eq!(total(&count), 144.0, "{what}: a day holds 144 ten-minute samples");
            assert_eq!(sum.len(), count.len());
            assert_eq!(sum.len(), average.len());
            assert_eq!(sum.len(), min_max.len());
            for (((s, c), a), mm) in sum.iter().zip(&count).zip(&average).zip(&min_max) {
                for other in [c, a, mm] {
                    assert_eq!(
                        (&s["date"], &s["tariffType"]),
                        (&other["date"], &other["tariffType"]),
                        "{what}: same buckets"
                    );
                }
                let n = value(c);
                assert!(n >= 1.0 && n.fract() == 0.0, "{what}: {c}");
                assert!((value(a) - value(s) / n).abs() <= 1e-6, "{what}: average = sum / count: {s} {c} {a}");
                assert!(mm.get("value").is_none(), "{what}: min-max rows have valueMin and valueMax only: {mm}");
                assert!(tariff_fields(mm).is_empty(), "{mm}");
                let (lo, hi) = (mm["valueMin"].as_f64().unwrap(), mm["valueMax"].as_f64().unwrap());
                assert!(lo <= value(a) + 1e-6 && value(a) <= hi + 1e-6, "{what}: min <= average <= max: {mm} {a}");
                assert!(lo >= 0.0);
                // The average's tariff fields are each tariff's own average: weighted by the
                // counts, they give the row's average.
                let counts = tariff_fields(c);
                let weighted: f64 = tariff_fields(a).iter().map(|(k, v)| v * counts[k]).sum();
                assert!((weighted / n - value(a)).abs() <= 1e-5, "{what}: {a} {c}");
            }
        }
    }
}

#[tokio::test]
async fn sessions_in_the_logs_agree_with_the_measured_energy() {
    let app = spawn_app().await;
    let sim = app.sim();
    let mut checked = 0;
    for (sub, device) in [("alice", ALICE_CS), ("bob", BOB_CS), ("bob", CHALET_CS), ("dieter", DIETER_CS)] {
        let entries = logs(sim, sub, device, None, "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z").await;
        let sessions: Vec<&Value> =
            entries.iter().filter(|e| e["logName"] == "SessionStart" || e["logName"] == "SessionEnd").collect();
        assert!(sessions.len() >= 10, "{}: a month has sessions: {sessions:?}", device.path());
        let mut open: Option<DateTime<Utc>> = None;
        for e in sessions {
            let at = date(&e["date"]);
            if e["logName"] == "SessionStart" {
                assert!(open.is_none(), "{}: two SessionStart in a row at {at}", device.path());
                assert_eq!(e["value"], json!({"evcsSocket": "m3", "evcsCableValue": 32}));
                open = Some(at);
                continue;
            }
            // A SessionEnd whose start fell before the range has no pair here.
            let Some(start) = open.take() else { continue };
            let v = &e["value"];
            let (energy, cost) = (v["energy"].as_f64().unwrap(), v["cost"].as_f64().unwrap());
            assert_eq!(v["sessionDuration"].as_i64().unwrap(), (at - start).num_seconds(), "{e}");
            assert!(v["chargingDuration"].as_i64().unwrap() <= v["sessionDuration"].as_i64().unwrap(), "{e}");
            assert!(energy > 0.0, "{e}");
            let range = (iso(start), iso(at + Duration::minutes(10)));
            let measured = aggregate(sim, sub, device, "1", "sum", (&range.0, &range.1), "hour").await;
            assert!(
                (total(&measured) - energy).abs() <= ENERGY_TOLERANCE,
                "{}: session {start} .. {at}: SessionEnd energy {energy} vs measured {}",
                device.path(),
                total(&measured)
            );
            let costs = aggregate(sim, sub, device, "2", "sum", (&range.0, &range.1), "hour").await;
            // The log writes the cost with four decimals.
            assert!(
                (total(&costs) - cost).abs() <= 5e-5 + cost_tolerance(costs.len()),
                "{e}: measured cost {}",
                total(&costs)
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} sessions checked");
}

#[tokio::test]
async fn the_stations_last_session_is_the_last_session_end_logged() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, device) in [("alice", ALICE_CS), ("bob", CHALET_CS), ("dieter", DIETER_CS)] {
        let Device::Station(i, cs) = device else { unreachable!() };
        let last = sim.station(sub, i, cs).await["properties"]["lastSession"].clone();
        let now = Utc::now();
        let entries =
            logs(sim, sub, device, Some("2"), &iso(now - Duration::days(60)), &iso(now + Duration::minutes(1))).await;
        let end = entries.last().unwrap_or_else(|| panic!("{}: a SessionEnd in 60 days", device.path()));
        assert_eq!(end["date"], last["endDate"], "{}", device.path());
        assert_eq!(end["value"]["energy"], last["totalSessionEnergy"]);
        assert_eq!(end["value"]["cost"], last["totalSessionCost"]);
        let minutes = end["value"]["chargingDuration"].as_i64().unwrap() / 60;
        assert_eq!(
            last["chargingDuration"],
            format!("{:02}:{:02}", minutes / 60, minutes % 60),
            "hh:mm of the logged seconds"
        );
        let minutes = end["value"]["sessionDuration"].as_i64().unwrap() / 60;
        assert_eq!(last["sessionDuration"], format!("{:02}:{:02}", minutes / 60, minutes % 60));
        let starts =
            logs(sim, sub, device, Some("1"), &iso(now - Duration::days(60)), &iso(now + Duration::minutes(1))).await;
        assert!(starts.iter().any(|s| s["date"] == last["startDate"]), "{}: the SessionStart is logged", device.path());
    }
}

#[tokio::test]
async fn a_live_session_is_measured_and_logged_alike() {
    let app = spawn_app().await;
    let sim = app.sim();
    sim.plug(ALICE_STATION).await;
    // Let the car take a few watt-hours.
    eventually("some energy to be charged", || async {
        let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
        (st["properties"]["currentSession"]["totalSessionEnergy"].as_f64().unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    let r = sim.unplug(ALICE_STATION).await;
    let last = r.body["properties"]["lastSession"].clone();
    let start = date(&last["startDate"]);
    let end = date(&last["endDate"]);
    let energy = last["totalSessionEnergy"].as_f64().unwrap();
    assert!(energy > 0.0, "{last}");
    let entries = logs(sim, "alice", ALICE_CS, Some("2"), &iso(start), &iso(end + Duration::minutes(1))).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["value"]["energy"].as_f64().unwrap(), energy);
    // Measured from the start of the ten-minute slot the car was plugged in.
    let from = iso(start.duration_trunc(Duration::minutes(10)).unwrap());
    let to = iso(end + Duration::minutes(10));
    let measured = total(&aggregate(sim, "alice", ALICE_CS, "1", "sum", (&from, &to), "hour").await);
    assert!((measured - energy).abs() <= ENERGY_TOLERANCE, "measured {measured} vs logged {energy}");
    // The house meter saw it too.
    let house = total(&aggregate(sim, "alice", ALICE_GM, "1", "sum", (&from, &to), "hour").await);
    assert!(house >= measured, "house {house} >= station {measured}");
}

#[tokio::test]
async fn the_grid_meter_measures_the_whole_house_including_the_station() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-01-03T00:00:00Z", "2025-01-05T00:00:00Z");
    for (sub, station, meter) in
        [("alice", ALICE_CS, ALICE_GM), ("bob", BOB_CS, BOB_GM), ("dieter", DIETER_CS, DIETER_GM)]
    {
        let cs = aggregate(sim, sub, station, "1", "sum", range, "hour").await;
        let gm = aggregate(sim, sub, meter, "1", "sum", range, "hour").await;
        for row in &cs {
            let house = gm
                .iter()
                .find(|g| g["date"] == row["date"] && g["tariffType"] == row["tariffType"])
                .unwrap_or_else(|| panic!("the meter has the bucket of {row}"));
            assert!(value(house) >= value(row), "{}: house {house} vs station {row}", meter.path());
        }
    }
}

#[tokio::test]
async fn log_counts_agree_with_log_lists() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
    let mut seen = BTreeSet::new();
    for (device, ids) in [(ALICE_CS, 1..=6), (ALICE_GM, 1..=2)] {
        for id in ids {
            let listed = logs(sim, "alice", device, Some(&id.to_string()), range.0, range.1).await;
            let path = format!("{}/logs/{id}/operators/count", device.path());
            let counts = sim.post("alice", &path, range_body(range.0, range.1, Some("month"))).await;
            assert_eq!(counts.status, 200, "{:?}", counts.body);
            let counts = counts.body.as_array().unwrap().clone();
            let counted: f64 = counts.iter().map(value).sum();
            assert_eq!(counted as usize, listed.len(), "{path}");
            let mut per_month: BTreeMap<String, f64> = BTreeMap::new();
            for e in &listed {
                *per_month.entry(format!("{}-01T00:00:00Z", &e["date"].as_str().unwrap()[..7])).or_default() += 1.0;
                seen.insert(e["logName"].as_str().unwrap().to_string());
            }
            for c in &counts {
                assert_eq!(Some(&value(c)), per_month.get(c["date"].as_str().unwrap()), "{path}: {c}");
                assert_eq!(c["logName"], listed[0]["logName"]);
            }
            assert!(counts.iter().all(|c| value(c) > 0.0), "empty buckets are left out");
        }
    }
    for name in ["SessionStart", "SessionEnd", "KeySwitch", "Errors", "CyberSecurity", "CurrentTariff"] {
        assert!(seen.contains(name), "a year holds {name} entries: {seen:?}");
    }
}

#[tokio::test]
async fn log_entries_have_the_documents_shapes() {
    let app = spawn_app().await;
    let sim = app.sim();
    let entries = logs(sim, "alice", ALICE_CS, None, "2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z").await;
    let mut dates = Vec::new();
    for e in &entries {
        let v = &e["value"];
        match e["logName"].as_str().unwrap() {
            "SessionStart" => assert_eq!(v, &json!({"evcsSocket": "m3", "evcsCableValue": 32})),
            "SessionEnd" => {
                for f in ["chargingDuration", "sessionDuration"] {
                    assert!(v[f].as_i64().is_some(), "seconds in logs: {e}");
                }
                for f in ["cost", "energy"] {
                    assert!(v[f].as_f64().is_some(), "{e}");
                }
            }
            "KeySwitch" => assert!(["locked", "unlocked"].contains(&v["keySwitch"].as_str().unwrap()), "{e}"),
            "ChargeMode" => {
                assert!(["immediate", "deferred", "deferredExclusive"].contains(&v["chargeMode"].as_str().unwrap()))
            }
            "Errors" => {
                assert!(v["code"].is_string() && v["state"].is_boolean(), "{e}");
            }
            "CyberSecurity" => {
                assert!(v["event"].is_number() && v["message"].is_string(), "{e}");
                assert_eq!(v["timestamp"], e["date"]);
            }
            other => panic!("unexpected log {other}: {e}"),
        }
        dates.push(date(&e["date"]));
    }
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "entries come in date order");
    // The all-logs list is the union of the single logs.
    let mut union = Vec::new();
    for id in 1..=6 {
        union.extend(
            logs(sim, "alice", ALICE_CS, Some(&id.to_string()), "2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z").await,
        );
    }
    let key = |e: &Value| {
        (e["date"].as_str().unwrap().to_string(), e["logName"].as_str().unwrap().to_string(), e["value"].to_string())
    };
    let mut a: Vec<_> = entries.iter().map(key).collect();
    let mut b: Vec<_> = union.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[tokio::test]
async fn tic_type_is_a_number_in_the_model_and_a_name_in_the_logs() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, i, gm, number, name, installed) in [
        ("alice", ALICE_INSTALLATION, ALICE_METER, 5, "historicMono", "2020-04-15"),
        ("dieter", DIETER_INSTALLATION, DIETER_METER, 2, "standardMono", "2023-02-10"),
    ] {
        let meter = sim.get(sub, &meter_path(i, gm)).await.body;
        assert_eq!(meter["properties"]["ticType"], number, "{meter}");
        let from = format!("{installed}T00:00:00Z");
        let to = format!("{installed}T23:59:59Z");
        let entries = logs(sim, sub, Device::Meter(i, gm), Some("2"), &from, &to).await;
        let values: Vec<&Value> = entries.iter().map(|e| &e["value"]["ticType"]).collect();
        assert_eq!(values, [&json!("idle"), &json!(name)], "{entries:?}");
        assert!(entries.iter().all(|e| e["logName"] == "TicType"));
    }
}

#[tokio::test]
async fn current_tariff_logs_follow_the_subscription_and_end_on_the_meters_tariff() {
    let app = spawn_app().await;
    let sim = app.sim();
    let standard: Vec<String> = (1..=10).map(|n| format!("TARIFF{n}")).collect();
    for (sub, device, allowed) in [
        ("alice", ALICE_GM, vec!["HC", "HP"]),
        ("bob", BOB_GM, vec!["HCJB", "HPJB", "HCJW", "HPJW", "HCJR", "HPJR"]),
        ("bob", CHALET_GM, vec!["TH"]),
        ("dieter", DIETER_GM, standard.iter().map(String::as_str).collect()),
    ] {
        let Device::Meter(i, gm) = device else { unreachable!() };
        let tariff_now =
            || async { sim.get(sub, &meter_path(i, gm)).await.body["properties"]["currentTariff"].clone() };
        let before = tariff_now().await;
        let now = Utc::now();
        let entries =
            logs(sim, sub, device, Some("1"), &iso(now - Duration::days(3)), &iso(now + Duration::hours(1))).await;
        let after = tariff_now().await;
        let values: Vec<&str> = entries.iter().map(|e| e["value"]["currentTariff"].as_str().unwrap()).collect();
        assert!(values.iter().all(|v| allowed.contains(v)), "{}: {values:?}", device.path());
        assert!(values.windows(2).all(|w| w[0] != w[1]), "{}: entries are changes: {values:?}", device.path());
        // The meter is read before and after the logs, in case the tariff changed in between.
        let last = values.last().map(|v| json!(v)).unwrap_or(json!("TH"));
        assert!(
            last == before || last == after,
            "{}: the last change {last} is the tariff now ({before}, {after})",
            device.path()
        );
    }
    // HCHP: off-peak from 22:00 to 06:00.
    let day = logs(sim, "alice", ALICE_GM, Some("1"), "2025-05-06T00:00:00Z", "2025-05-07T00:00:00Z").await;
    assert_eq!(
        day,
        json!([
            {"date": "2025-05-06T06:00:00Z", "value": {"currentTariff": "HP"}, "logName": "CurrentTariff"},
            {"date": "2025-05-06T22:00:00Z", "value": {"currentTariff": "HC"}, "logName": "CurrentTariff"}
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[tokio::test]
async fn nothing_is_recorded_before_installation_or_after_now() {
    let app = spawn_app().await;
    let sim = app.sim();
    let before = ("2019-01-01T00:00:00Z", "2020-01-01T00:00:00Z");
    let future = (iso(Utc::now() + Duration::days(2)), iso(Utc::now() + Duration::days(5)));
    for (sub, device) in SEEDED {
        assert_eq!(aggregate(sim, sub, device, "1", "sum", before, "day").await, Vec::<Value>::new());
        assert_eq!(aggregate(sim, sub, device, "1", "sum", (&future.0, &future.1), "day").await, Vec::<Value>::new());
        assert_eq!(logs(sim, sub, device, Some("1"), before.0, before.1).await, Vec::<Value>::new());
    }
    // The first samples are those after the installation (2020-04-15T13:28:13Z).
    let day =
        aggregate(sim, "alice", ALICE_GM, "1", "count", ("2020-04-15T00:00:00Z", "2020-04-16T00:00:00Z"), "day").await;
    assert_eq!(total(&day), 63.0, "13:30 to midnight is 63 slots: {day:?}");
}

#[tokio::test]
async fn an_installer_sees_sessions_without_costs_or_energy() {
    let app = spawn_app().await;
    let sim = app.sim();
    let range = ("2025-01-01T00:00:00Z", "2025-01-15T00:00:00Z");
    let owner = logs(sim, "alice", ALICE_CS, Some("2"), range.0, range.1).await;
    let installer = logs(sim, "ivan", ALICE_CS, Some("2"), range.0, range.1).await;
    assert_eq!(owner.len(), installer.len());
    assert!(!owner.is_empty());
    for (o, i) in owner.iter().zip(&installer) {
        assert!(o["value"]["energy"].is_number() && o["value"]["cost"].is_number(), "{o}");
        assert!(i["value"].get("energy").is_none() && i["value"].get("cost").is_none(), "{i}");
        assert_eq!(i["value"]["sessionDuration"], o["value"]["sessionDuration"]);
        assert_eq!(i["date"], o["date"]);
    }
    let all = logs(sim, "ivan", ALICE_CS, None, range.0, range.1).await;
    assert!(all.iter().filter(|e| e["logName"] == "SessionEnd").all(|e| e["value"].get("energy").is_none()));
    // The station model: sessions without energy, cost or range.
    sim.plug(ALICE_STATION).await;
    let st = sim.station("ivan", ALICE_INSTALLATION, ALICE_STATION).await;
    for session in ["currentSession", "lastSession"] {
        let s = &st["properties"][session];
        assert!(s.is_object(), "{session}: {s}");
        assert!(s["startDate"].is_string(), "general data stays: {s}");
        for hidden in ["totalSessionEnergy", "totalSessionCost", "rangeRecoveredByEV"] {
            assert!(s.get(hidden).is_none(), "{session}.{hidden} is hidden from installers: {s}");
        }
    }
    let list = sim.get("ivan", &format!("/installations/{ALICE_INSTALLATION}/charging-stations")).await.body;
    assert_eq!(list[0], st, "the list hides the same fields");
    let owners = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert!(owners["properties"]["currentSession"]["totalSessionEnergy"].is_number());
    // The meter model: no consumptions.
    let meter = sim.get("ivan", &meter_path(ALICE_INSTALLATION, ALICE_METER)).await.body;
    assert!(meter["properties"].get("generalConsumption").is_none(), "{meter}");
    assert_eq!(meter["properties"]["gridSubscription"], "HCHP");
    let list = sim.get("ivan", &format!("/installations/{ALICE_INSTALLATION}/grid-meters")).await.body;
    assert!(list[0]["properties"].get("generalConsumption").is_none());
}

#[tokio::test]
async fn the_charge_mode_log_agrees_with_the_stations_charge_mode() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (sub, i, cs) in [
        ("alice", ALICE_INSTALLATION, ALICE_STATION),
        ("bob", BOB_INSTALLATION, BOB_STATION),
        ("bob", BOB_CHALET, BOB_CHALET_STATION),
        ("dieter", DIETER_INSTALLATION, DIETER_STATION),
    ] {
        let st = sim.station(sub, i, cs).await;
        let installed = st["properties"]["installationDate"].as_str().unwrap().to_string();
        let entries =
            logs(sim, sub, Device::Station(i, cs), Some("4"), &installed, &iso(Utc::now() + Duration::minutes(1)))
                .await;
        let last = entries.last().unwrap_or_else(|| panic!("{cs}: a ChargeMode entry"));
        assert_eq!(last["value"]["chargeMode"], st["properties"]["chargeMode"], "{cs}: {entries:?}");
    }
}
