//! `GET /reports/sessions.csv`: read with a real RFC 4180 parser (the `csv` crate, not the route's
//! own writer) and compared field by field with what GraphQL's `sessions` answers in the same test.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::helpers::*;

const FROM: &str = "2024-11-15T00:00:00Z";
const TO: &str = "2025-01-10T00:00:00Z";

/// A GET of the CSV as `sub` (no token with `None`), with `query` as its query string.
async fn get_csv(app: &TestApp, sub: Option<&str>, query: &str) -> (StatusCode, HeaderMap, String) {
    let mut req = app.client.get(format!("{}/reports/sessions.csv?{query}", app.base));
    if let Some(sub) = sub {
        req = req.bearer_auth(app.token_for(sub));
    }
    let resp = req.send().await.expect("the request reaches witty-bff");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

/// The header row and the records, as a strict RFC 4180 reader sees them; also checks that every
/// line ends with CRLF.
fn parse(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    assert!(text.ends_with("\r\n"), "{text:?}");
    assert!(text.match_indices('\n').all(|(i, _)| text[..i].ends_with('\r')), "LF without CR in {text:?}");
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let header = reader.headers().expect("a header row").iter().map(str::to_string).collect();
    let records =
        reader.records().map(|r| r.expect("an RFC 4180 record").iter().map(str::to_string).collect()).collect();
    (header, records)
}

/// One record by column name.
fn field<'a>(header: &[String], record: &'a [String], name: &str) -> &'a str {
    let at = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    &record[at]
}

/// A figure of the CSV as the GraphQL JSON value it must equal (`null` for an empty field).
fn figure(text: &str) -> Value {
    if text.is_empty() { Value::Null } else { json!(text.parse::<f64>().unwrap_or_else(|_| panic!("{text}"))) }
}

fn same_number(csv: &str, graphql: &Value) {
    assert_eq!(figure(csv), graphql.as_f64().map_or(Value::Null, |v| json!(v)), "{csv} vs {graphql}");
}

/// Alice's installation, its stations and their sessions over the range, through GraphQL.
async fn graphql_sessions(app: &TestApp, sub: &str) -> Value {
    let q = format!(
        r#"{{ installation(id: {ALICE_INSTALLATION}) {{ id name chargingStations {{ id friendlyName
            sessions(from: "{FROM}", to: "{TO}") {{
              startDate endDate durationSeconds chargingDurationSeconds energy cost currency
            }} }} }} }}"#
    );
    data(&app.graphql(sub, &q, json!({})).await)["installation"].clone()
}

fn range_query(extra: &str) -> String {
    format!("installationId={ALICE_INSTALLATION}&from={FROM}&to={TO}{extra}")
}

#[tokio::test]
async fn the_csv_is_the_graphql_sessions_line_for_line_with_a_totals_line() {
    let app = spawn_app().await;
    // A name that must be quoted, set before witty-bff first reads the station.
    let name = "Garage \"left\", bay 1";
    app.sim().set_station_properties(ALICE_STATION, json!({"friendlyName": name})).await;
    let rate = 0.27;
    let (status, headers, text) = get_csv(&app, Some("alice"), &range_query(&format!("&ratePerKwh={rate}"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8; header=present");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"sessions-{ALICE_INSTALLATION}-2024-11-15-2025-01-10.csv\"")
    );
    let (header, records) = parse(&text);
    assert_eq!(
        header,
        [
            "installationId",
            "installationName",
            "chargingStationName",
            "chargingStationId",
            "startDate",
            "endDate",
            "durationSeconds",
            "chargingDurationSeconds",
            "energyKwh",
            "cost",
            "currency",
            "reimbursement",
            "sessions"
        ]
    );

    let installation = graphql_sessions(&app, "alice").await;
    let mut expected = Vec::new();
    for station in installation["chargingStations"].as_array().unwrap() {
        for session in station["sessions"].as_array().unwrap() {
            expected.push((station.clone(), session.clone()));
        }
    }
    assert!(expected.len() > 10, "the seeded history has sessions");
    let (total, lines) = records.split_last().expect("a totals line");
    assert_eq!(lines.len(), expected.len(), "{text}");
    let col = |r: &[String], name: &str| field(&header, r, name).to_string();
    for (line, (station, s)) in lines.iter().zip(&expected) {
        assert_eq!(col(line, "installationId"), ALICE_INSTALLATION.to_string());
        assert_eq!(col(line, "installationName"), installation["name"].as_str().unwrap());
        assert_eq!(col(line, "chargingStationName"), station["friendlyName"].as_str().unwrap());
        assert_eq!(col(line, "chargingStationId"), station["id"].as_str().unwrap());
        assert_eq!(col(line, "startDate"), s["startDate"].as_str().unwrap());
        assert_eq!(col(line, "endDate"), s["endDate"].as_str().unwrap_or_default());
        same_number(&col(line, "durationSeconds"), &s["durationSeconds"]);
        same_number(&col(line, "chargingDurationSeconds"), &s["chargingDurationSeconds"]);
        same_number(&col(line, "energyKwh"), &s["energy"]);
        same_number(&col(line, "cost"), &s["cost"]);
        assert_eq!(col(line, "currency"), s["currency"].as_str().unwrap_or_default());
        let reimbursement = figure(&col(line, "reimbursement")).as_f64().unwrap();
        let product = rate * s["energy"].as_f64().unwrap();
        assert!((reimbursement - product).abs() <= 0.00005 + 1e-12, "{reimbursement} vs {product}");
        assert_eq!(col(line, "sessions"), "1");
    }
    assert_eq!(lines[0][2], name, "quoted and read back whole");

    // The totals line: the sums of the lines above.
    let sum = |name: &str| lines.iter().map(|l| figure(&col(l, name)).as_f64().unwrap_or(0.0)).sum::<f64>();
    assert_eq!(col(total, "installationId"), "Total");
    assert_eq!(col(total, "sessions"), expected.len().to_string());
    for name in ["energyKwh", "cost", "reimbursement", "durationSeconds", "chargingDurationSeconds"] {
        let got = figure(&col(total, name)).as_f64().unwrap();
        assert!((got - sum(name)).abs() < 1e-6, "{name}: {got} vs {}", sum(name));
    }
    assert_eq!(col(total, "currency"), "eur");
}

#[tokio::test]
async fn one_station_an_installer_and_an_empty_day() {
    let app = spawn_app().await;
    // One station: the same lines, its id in the file's name; a station of another installation
    // is named in the 404.
    let (status, headers, text) =
        get_csv(&app, Some("alice"), &range_query(&format!("&chargingStationId={ALICE_STATION}"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"sessions-{ALICE_INSTALLATION}-{ALICE_STATION}-2024-11-15-2025-01-10.csv\"")
    );
    let (header, owner_records) = parse(&text);
    assert!(!header.contains(&"reimbursement".to_string()), "no rate, no column: {header:?}");
    let (owner_header, all) = parse(&get_csv(&app, Some("alice"), &range_query("")).await.2);
    // Alice's installation has this one station: the same lines; the totals line names it.
    let (one_total, one_lines) = owner_records.split_last().unwrap();
    let (all_total, all_lines) = all.split_last().unwrap();
    assert_eq!(one_lines, all_lines);
    assert_eq!(field(&header, one_total, "chargingStationId"), ALICE_STATION);
    assert_eq!(field(&header, all_total, "chargingStationId"), "", "every station");
    assert_eq!(one_total[4..], all_total[4..], "the same range and sums");
    let (status, _, text) =
        get_csv(&app, Some("alice"), &range_query(&format!("&chargingStationId={BOB_STATION}"))).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains(BOB_STATION), "{text}");

    // The installer: the same sessions without energy, cost, currency or reimbursement.
    let (status, _, text) = get_csv(&app, Some("ivan"), &range_query("&ratePerKwh=0.25")).await;
    assert_eq!(status, 200, "{text}");
    let (header, records) = parse(&text);
    for hidden in ["energyKwh", "cost", "currency", "reimbursement"] {
        assert!(!header.contains(&hidden.to_string()), "{hidden} in {header:?}");
    }
    assert_eq!(records.len(), owner_records.len());
    let starts =
        |h: &[String], rs: &[Vec<String>]| rs.iter().map(|r| field(h, r, "startDate").to_string()).collect::<Vec<_>>();
    assert_eq!(starts(&header, &records), starts(&owner_header, &owner_records));

    // A day without sessions: the header and a totals line of 0 sessions.
    let (status, _, text) =
        get_csv(&app, Some("alice"), &format!("installationId={ALICE_INSTALLATION}&from=2001-01-01&to=2001-01-02"))
            .await;
    assert_eq!(status, 200, "{text}");
    let (header, records) = parse(&text);
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(field(&header, &records[0], "installationId"), "Total");
    assert_eq!(field(&header, &records[0], "sessions"), "0");
    assert_eq!(field(&header, &records[0], "energyKwh"), "0");
    assert_eq!(field(&header, &records[0], "cost"), "0");
    // Without a session to show it, an installer's file still has no energy or cost.
    let (status, _, text) =
        get_csv(&app, Some("ivan"), &format!("installationId={ALICE_INSTALLATION}&from=2001-01-01&to=2001-01-02"))
            .await;
    assert_eq!(status, 200, "{text}");
    let (header, records) = parse(&text);
    assert!(!header.contains(&"energyKwh".to_string()) && !header.contains(&"cost".to_string()), "{header:?}");
    assert_eq!(field(&header, &records[0], "sessions"), "0");
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let app = spawn_app().await;
    let message = |text: &str| serde_json::from_str::<Value>(text).unwrap()["message"].as_str().unwrap().to_string();

    // Another user's installation, and one that does not exist: 404.
    for installation in [BOB_INSTALLATION, 999_999] {
        let q = format!("installationId={installation}&from={FROM}&to={TO}");
        let (status, _, text) = get_csv(&app, Some("alice"), &q).await;
        assert_eq!(status, 404, "{text}");
        assert!(message(&text).contains(&installation.to_string()), "{text}");
    }
    // No token, or a bad one: 401 with a challenge, as a missing token is refused on /graphql.
    let (status, headers, text) = get_csv(&app, None, &range_query("")).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(message(&text).contains("bearer token"), "{text}");
    let forged = app
        .client
        .get(format!("{}/reports/sessions.csv?{}", app.base, range_query("")))
        .bearer_auth(unsigned_token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // Bad parameters: 400 naming the parameter.
    let cases = [
        (format!("installationId={ALICE_INSTALLATION}&from=yesterday&to={TO}"), "`from`"),
        (format!("installationId={ALICE_INSTALLATION}&to={TO}"), "`from`"),
        (format!("installationId={ALICE_INSTALLATION}&from={TO}&to={FROM}"), "`from`"),
        (format!("installationId={ALICE_INSTALLATION}&from=2001-01-01&to=2020-01-01"), "`to`"),
        (format!("installationId={ALICE_INSTALLATION}&from=%2B12345-01-01&to=%2B12345-01-02"), "`from`"),
        (format!("from={FROM}&to={TO}"), "`installationId`"),
        (format!("installationId=alice&from={FROM}&to={TO}"), "`installationId`"),
        (range_query("&ratePerKwh=abc"), "`ratePerKwh`"),
        (range_query("&ratePerKwh=-0.1"), "`ratePerKwh`"),
        (range_query("&ratePerKwh=NaN"), "`ratePerKwh`"),
    ];
    for (query, named) in cases {
        let (status, _, text) = get_csv(&app, Some("alice"), &query).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(message(&text).contains(named), "{query}: {text}");
    }
}
