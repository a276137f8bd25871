//! `ChargingStation.sessions` and `Installation.chargingReport`: the join of the simulated
//! SessionStart/SessionEnd logs, checked against the raw logs read through `logs` in the same
//! test rather than against numbers written down here.

use serde_json::{Value, json};

use super::helpers::*;

const FROM: &str = "2024-11-15T00:00:00Z";
const TO: &str = "2025-01-10T00:00:00Z";
/// A day past `TO`: the simulator's sessions end at most a few hours after they start, so every
/// session that started before `TO` has its SessionEnd in here.
const RAW_TO: &str = "2025-01-11T00:00:00Z";

const SESSION_FIELDS: &str = "startDate endDate durationSeconds energy cost currency byTariff { tariff energy cost }";

async fn sessions(app: &TestApp, sub: &str, from: &str, to: &str) -> Value {
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ chargingStation(id: "{ALICE_STATION}") {{
            sessions(from: "{from}", to: "{to}") {{ {SESSION_FIELDS} }} }} }} }}"#
    );
    app.graphql(sub, &q, json!({})).await
}

/// The raw SessionStart and SessionEnd entries, by date, through the existing `logs` field.
async fn raw_session_logs(app: &TestApp) -> Vec<(String, String, Value)> {
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ chargingStation(id: "{ALICE_STATION}") {{
            logs {{ name entries(from: "{FROM}", to: "{RAW_TO}") {{ date logName value }} }} }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let mut out: Vec<(String, String, Value)> = data(&r)["installation"]["chargingStation"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| matches!(l["name"].as_str(), Some("SessionStart" | "SessionEnd")))
        .flat_map(|l| l["entries"].as_array().unwrap().clone())
        .map(|e| {
            (e["date"].as_str().unwrap().to_string(), e["logName"].as_str().unwrap().to_string(), e["value"].clone())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn sessions_are_the_logs_sessions_with_their_end_figures() {
    let app = spawn_app().await;
    let raw = raw_session_logs(&app).await;
    let r = sessions(&app, "alice", FROM, TO).await;
    let got = data(&r)["installation"]["chargingStation"]["sessions"].as_array().unwrap().clone();
    // Each start in [FROM, TO) with the end that follows it.
    let mut expected = Vec::new();
    for (i, (date, name, _)) in raw.iter().enumerate() {
        if name == "SessionStart" && date.as_str() < TO {
            let (end, _, value) = raw[i + 1..].iter().find(|e| e.1 == "SessionEnd").expect("an end");
            expected.push((date.clone(), end.clone(), value.clone()));
        }
    }
    assert!(expected.len() > 10, "the seeded history has sessions: {raw:?}");
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    let time = |s: &Value| chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap()).unwrap();
    for (s, (start, end, value)) in got.iter().zip(&expected) {
        assert_eq!(time(&s["startDate"]), time(&json!(start)));
        assert_eq!(time(&s["endDate"]), time(&json!(end)));
        assert_eq!(s["energy"], value["energy"]);
        assert_eq!(s["cost"], value["cost"]);
        assert_eq!(s["durationSeconds"], value["sessionDuration"]);
        let span = (time(&s["endDate"]) - time(&s["startDate"])).num_seconds();
        assert_eq!(s["durationSeconds"].as_i64(), Some(span));
        assert_eq!(s["currency"], "eur", "as the simulated tariffs write it");
        // The measures split the same energy by tariff (hourly sums, rounded like the logs).
        let by_tariff: f64 = s["byTariff"].as_array().unwrap().iter().map(|t| t["energy"].as_f64().unwrap()).sum();
        assert!((by_tariff - value["energy"].as_f64().unwrap()).abs() < 0.01, "{s:#}");
    }
}

#[tokio::test]
async fn a_running_session_has_no_end_and_a_day_without_any_is_empty() {
    let app = spawn_app().await;
    assert_eq!(app.sim().plug(ALICE_STATION).await.status, 200);
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ chargingStation(id: "{ALICE_STATION}") {{
            currentSession {{ startDate totalSessionEnergy }} }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let current = data(&r)["installation"]["chargingStation"]["currentSession"].clone();
    let start = chrono::DateTime::parse_from_rfc3339(current["startDate"].as_str().unwrap()).unwrap();
    let (from, to) =
        ((start - chrono::Duration::hours(1)).to_rfc3339(), (start + chrono::Duration::hours(1)).to_rfc3339());
    let r = sessions(&app, "alice", &from, &to).await;
    let list = data(&r)["installation"]["chargingStation"]["sessions"].as_array().unwrap().clone();
    let last = list.last().expect("the running session");
    assert_eq!(last["startDate"], current["startDate"]);
    assert!(last["endDate"].is_null(), "{last:#}");
    assert_eq!(last["energy"], current["totalSessionEnergy"]);

    // Far before the station was installed: nothing, and no error.
    let r = sessions(&app, "alice", "2001-01-01T00:00:00Z", "2001-01-02T00:00:00Z").await;
    assert_eq!(data(&r)["installation"]["chargingStation"]["sessions"], json!([]));
}

#[tokio::test]
async fn an_installer_gets_the_sessions_without_energy_or_cost() {
    let app = spawn_app().await;
    let owner = sessions(&app, "alice", FROM, TO).await;
    let installer = sessions(&app, "ivan", FROM, TO).await;
    let owner = data(&owner)["installation"]["chargingStation"]["sessions"].as_array().unwrap().clone();
    let installer = data(&installer)["installation"]["chargingStation"]["sessions"].as_array().unwrap().clone();
    assert_eq!(owner.len(), installer.len());
    for (o, i) in owner.iter().zip(&installer) {
        assert_eq!(o["startDate"], i["startDate"]);
        assert_eq!(o["endDate"], i["endDate"]);
        assert!(i["energy"].is_null() && i["cost"].is_null() && i["byTariff"].is_null(), "{i:#}");
    }
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ chargingReport(from: "{FROM}", to: "{TO}") {{
            total {{ sessions energy cost byTariff {{ energy }} }} }} }} }}"#
    );
    let r = app.graphql("ivan", &q, json!({})).await;
    let total = &data(&r)["installation"]["chargingReport"]["total"];
    assert_eq!(total["sessions"].as_u64(), Some(owner.len() as u64));
    assert!(total["energy"].is_null() && total["cost"].is_null() && total["byTariff"].is_null(), "{total:#}");
}

#[tokio::test]
async fn a_reversed_range_is_refused_naming_from_and_to() {
    let app = spawn_app().await;
    let r = sessions(&app, "alice", TO, FROM).await;
    assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r:#}");
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`to`") && message.contains("`from`"), "{message}");
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ chargingReport(from: "{TO}", to: "{FROM}") {{ total {{ sessions }} }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r:#}");
    // A year past 9999 is refused by its argument's name, before anything is sent.
    app.sim().reset_calls().await;
    let r = sessions(&app, "alice", FROM, "+12345-01-01T00:00:00Z").await;
    assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r:#}");
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`to`") && message.contains("9999"), "{message}");
    assert!(!app.sim().calls_by_route().await.keys().any(|route| route.contains("logs")), "nothing sent");
}

#[tokio::test]
async fn the_report_totals_are_the_sums_of_the_sessions() {
    let app = spawn_app().await;
    let totals = "sessions energy cost byTariff { tariff energy cost }";
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{
            chargingStations {{ id sessions(from: "{FROM}", to: "{TO}") {{ {SESSION_FIELDS} }} }}
            chargingReport(from: "{FROM}", to: "{TO}") {{
              currency total {{ {totals} }}
              stations {{ chargingStationId totals {{ {totals} }} }}
              months {{ month totals {{ {totals} }} }}
            }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let installation = &data(&r)["installation"];
    let report = &installation["chargingReport"];
    let all: Vec<Value> = installation["chargingStations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["sessions"].as_array().unwrap().clone())
        .collect();
    let sum = |list: &[Value], k: &str| list.iter().map(|s| s[k].as_f64().unwrap()).sum::<f64>();
    let total = &report["total"];
    assert_eq!(total["sessions"].as_u64(), Some(all.len() as u64));
    assert!((total["energy"].as_f64().unwrap() - sum(&all, "energy")).abs() < 1e-6, "{total:#}");
    assert!((total["cost"].as_f64().unwrap() - sum(&all, "cost")).abs() < 1e-6, "{total:#}");
    assert_eq!(report["currency"], "eur", "as the simulated tariffs write it");
    let stations = report["stations"].as_array().unwrap();
    assert_eq!(stations.len(), installation["chargingStations"].as_array().unwrap().len());
    let station_sessions: u64 = stations.iter().map(|s| s["totals"]["sessions"].as_u64().unwrap()).sum();
    assert_eq!(station_sessions, all.len() as u64);
    let months: Vec<&str> = report["months"].as_array().unwrap().iter().map(|m| m["month"].as_str().unwrap()).collect();
    assert_eq!(months, ["2024-11", "2024-12", "2025-01"]);
    let month_energy: f64 =
        report["months"].as_array().unwrap().iter().map(|m| m["totals"]["energy"].as_f64().unwrap()).sum();
    assert!((month_energy - total["energy"].as_f64().unwrap()).abs() < 1e-6);
    let tariff_energy: f64 = total["byTariff"].as_array().unwrap().iter().map(|t| t["energy"].as_f64().unwrap()).sum();
    let session_tariffs: f64 =
        all.iter().flat_map(|s| s["byTariff"].as_array().unwrap().clone()).map(|t| t["energy"].as_f64().unwrap()).sum();
    assert!((tariff_energy - session_tariffs).abs() < 1e-6);
}
