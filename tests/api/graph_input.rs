//! Input checks of arguments before anything is sent upstream: every id argument of every mutation
//! (an empty, `.` or `..` id names its argument), `setTariffs`' price and begin date bounds, and the
//! upstream's range limits (3660 days, 10000 points) checked naming `from`, `to` and `step`.

use serde_json::{Value, json};

use crate::helpers::*;

/// Ids that cannot name an upstream resource.
const BAD_IDS: [&str; 4] = ["", "  ", ".", ".."];

/// What `resource_id` says of a bad id given as `argument`.
fn id_message(argument: &str, bad: &str) -> String {
    if bad.trim().is_empty() {
        format!("{argument} must not be empty")
    } else {
        format!("{argument} cannot be '.' or '..'")
    }
}

/// Asserts nothing reached the upstream since the last reset.
async fn assert_nothing_sent(app: &TestApp, what: &str) {
    let calls = app.sim().calls_by_route().await;
    assert_eq!(app.sim().total_calls().await, 0, "{what}: refused before anything was sent upstream: {calls:#?}");
}

/// The one error of a response: its code and message.
fn only_error(r: &Value) -> (String, String) {
    let errors = r["errors"].as_array().unwrap_or_else(|| panic!("an error expected: {r:#}"));
    assert_eq!(errors.len(), 1, "one error expected: {r:#}");
    let e = &errors[0];
    (e["extensions"]["code"].as_str().unwrap_or("<none>").to_string(), e["message"].as_str().unwrap_or("").to_string())
}

// ---- 1. every id argument of every mutation ----

/// Every mutation with its id arguments, `{i}`, `{cs}`, `{gm}`, `{acc}`, `{sub}` and `{code}` to fill in.
const MUTATIONS: [&str; 18] = [
    r#"mutation { associateChargingStation(installationId: "{i}", input: {uid: "Fbo5WTTsSeeLQ8YYoLzNwN", timezone: ROMANCE_STANDARD_TIME, culture: FR_FR}) { id } }"#,
    r#"mutation { removeChargingStation(installationId: "{i}", chargingStationId: "{cs}") }"#,
    r#"mutation { updateChargingStation(installationId: "{i}", chargingStationId: "{cs}", input: {friendlyName: "Garage"}) { status } }"#,
    r#"mutation { setChargeMode(installationId: "{i}", chargingStationId: "{cs}", mode: IMMEDIATE) { status } }"#,
    r#"mutation { startCharging(installationId: "{i}", chargingStationId: "{cs}") { status } }"#,
    r#"mutation { stopCharging(installationId: "{i}", chargingStationId: "{cs}") { status } }"#,
    r#"mutation { inviteInstaller(installationId: "{i}", email: "new@installer.example.com") { email } }"#,
    r#"mutation { cancelInvitation(installationId: "{i}", email: "new@installer.example.com") }"#,
    r#"mutation { disableInstaller(installationId: "{i}", accountId: "{acc}") }"#,
    r#"mutation { enableInstaller(installationId: "{i}", accountId: "{acc}") }"#,
    r#"mutation { removeInstallationUser(installationId: "{i}", accountId: "{acc}") }"#,
    r#"mutation { authorizeTic(installationId: "{i}", gridMeterId: "{gm}", authorize: true) { id } }"#,
    r#"mutation { setTariffs(installationId: "{i}", gridMeterId: "{gm}", tariffs: [{id: HC, value: 0.2}]) { id } }"#,
    r#"mutation { subscribeToNotifications(installationId: "{i}", webhookUrl: "https://hooks.example.com/w") { id } }"#,
    r#"mutation { unsubscribeFromNotifications(installationId: "{i}", eventSubscriptionId: "{sub}") }"#,
    r#"mutation { unsubscribeAllNotifications(installationId: "{i}") }"#,
    // Not an ID, but a segment of the upstream's route all the same.
    r#"mutation { acceptInvitation(activationCode: "{code}") }"#,
    // And the query's installation (its other id arguments: see graph_read).
    r#"{ installation(id: "{i}") { id } }"#,
];

#[tokio::test]
async fn every_id_argument_that_cannot_name_a_resource_is_refused_naming_it_before_anything_is_sent() {
    let app = spawn_app().await;
    let valid = [
        ("i", "33"),
        ("cs", ALICE_STATION),
        ("gm", ALICE_METER),
        ("acc", "ivan"),
        ("sub", "some-subscription"),
        ("code", "some-code"),
    ];
    let argument = |placeholder: &str, template: &str| match placeholder {
        "i" if template.starts_with('{') => "id",
        "i" => "installationId",
        "cs" => "chargingStationId",
        "gm" => "gridMeterId",
        "acc" => "accountId",
        "code" => "activationCode",
        _ => "eventSubscriptionId",
    };
    app.sim().reset_calls().await;
    let mut tried = 0;
    for template in MUTATIONS {
        for (placeholder, _) in valid {
            if !template.contains(&format!("{{{placeholder}}}")) {
                continue;
            }
            for bad in BAD_IDS {
                let mut q = template.to_string();
                for (p, good) in valid {
                    q = q.replace(&format!("{{{p}}}"), if p == placeholder { bad } else { good });
                }
                let r = app.graphql("alice", &q, json!({})).await;
                let arg = argument(placeholder, template);
                let (code, message) = only_error(&r);
                assert_eq!(code, "BAD_USER_INPUT", "{q}: {r:#}");
                assert!(!message.contains("is not a valid id"), "{q}: the upstream client's guard answered: {r:#}");
                assert_eq!(message, id_message(arg, bad), "{q}: {r:#}");
                tried += 1;
            }
        }
    }
    // installationId in 16 mutations, chargingStationId in 5, gridMeterId in 2, accountId in 3,
    // eventSubscriptionId and activationCode in 1, and the query's installation id.
    assert_eq!(tried, (16 + 5 + 2 + 3 + 1 + 1 + 1) * BAD_IDS.len(), "every id argument was tried");
    let by_route = app.sim().calls_by_route().await;
    assert!(by_route.is_empty(), "nothing was sent upstream: {by_route:#?}");
    assert_nothing_sent(&app, "bad ids").await;
}

#[tokio::test]
async fn an_installation_id_that_is_not_a_whole_number_is_refused_naming_installation_id() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    for template in &MUTATIONS[..16] {
        let q = template
            .replace("{i}", "thirty-three")
            .replace("{cs}", ALICE_STATION)
            .replace("{gm}", ALICE_METER)
            .replace("{acc}", "ivan")
            .replace("{sub}", "some-subscription");
        let r = app.graphql("alice", &q, json!({})).await;
        let (code, message) = only_error(&r);
        assert_eq!(code, "BAD_USER_INPUT", "{q}: {r:#}");
        assert_eq!(message, "installationId must be a whole number, got 'thirty-three'", "{q}: {r:#}");
    }
    assert_nothing_sent(&app, "installationId").await;
}

// ---- 2. setTariffs: a price and a begin date that make sense ----

const SET_TARIFFS: &str = r#"mutation($tariffs: [TariffPriceInput!]!) {
    setTariffs(installationId: 33, gridMeterId: "a6536308-fc1d-4930-ae1a-19a526958c75", tariffs: $tariffs) {
        id values { beginDate value }
    }
}"#;

fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn set_tariffs_refuses_prices_and_begin_dates_out_of_bounds_before_anything_is_sent() {
    let app = spawn_app().await;
    let ok = json!({"id": "HP", "value": 0.2});
    let cases: Vec<(Value, &str, &str)> = vec![
        // A price that overflows every cost computed with it.
        (json!([{"id": "HC", "value": 1.7e308}]), "tariffs[0].value", "1000"),
        (json!([{"id": "HC", "value": f64::MAX}]), "tariffs[0].value", "1000"),
        (json!([ok.clone(), {"id": "HC", "value": 1000.01}]), "tariffs[1].value", "1000"),
        (json!([{"id": "HC", "value": -0.01}]), "tariffs[0].value", "0"),
        // A name that would be ignored, or one over the upstream's length.
        (json!([{"id": "HC", "value": 0.2, "friendlyName": "  "}]), "tariffs[0].friendlyName", "blank"),
        (
            json!([ok.clone(), {"id": "HC", "value": 0.2, "friendlyName": "n".repeat(65)}]),
            "tariffs[1].friendlyName",
            "at most 64 characters, got 65",
        ),
        // A control character would be stored and shown back everywhere.
        (
            json!([{"id": "HC", "value": 0.2, "friendlyName": "Nuit\u{0}\n"}]),
            "tariffs[0].friendlyName",
            "U+0000 at character 5",
        ),
        // The upstream's "never", which reads back as null.
        (
            json!([{"id": "HC", "value": 0.2, "beginDate": "0001-01-01T00:00:00Z"}]),
            "tariffs[0].beginDate",
            "2000-01-01",
        ),
        (
            json!([ok.clone(), {"id": "HC", "value": 0.2, "beginDate": "1999-12-31T23:59:59Z"}]),
            "tariffs[1].beginDate",
            "2000-01-01",
        ),
        (
            json!([{"id": "HC", "value": 0.2, "beginDate": "9999-12-31T00:00:00Z"}]),
            "tariffs[0].beginDate",
            "a year from now",
        ),
        (
            json!([{"id": "HC", "value": 0.2, "beginDate": days_from_now(400)}]),
            "tariffs[0].beginDate",
            "a year from now",
        ),
    ];
    app.sim().reset_calls().await;
    for (tariffs, argument, bound) in &cases {
        let r = app.graphql("alice", SET_TARIFFS, json!({"tariffs": tariffs})).await;
        let (code, message) = only_error(&r);
        assert_eq!(code, "BAD_USER_INPUT", "{tariffs}: {r:#}");
        assert!(message.starts_with(argument), "names {argument}: {tariffs}: {r:#}");
        assert!(message.contains(bound), "gives the bound {bound}: {tariffs}: {r:#}");
        assert!(message.len() < 200, "short, even for a huge number: {message}");
        assert!(r["data"].is_null() || r["data"]["setTariffs"].is_null(), "{r:#}");
    }
    assert_nothing_sent(&app, "setTariffs").await;

    // The bounds themselves are prices that work: saved, and read back as they were given.
    let tariffs = json!([
        {"id": "HC", "value": 1000, "beginDate": "2000-01-01T00:00:00Z"},
        {"id": "HP", "value": 0, "beginDate": days_from_now(360)},
    ]);
    let r = app.graphql("alice", SET_TARIFFS, json!({"tariffs": tariffs})).await;
    let saved = data(&r)["setTariffs"].as_array().unwrap().clone();
    let hc = saved.iter().find(|t| t["id"] == "HC").unwrap();
    assert!(
        hc["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["beginDate"].as_str().is_some_and(|d| d.starts_with("2000-01-01T00:00:00"))
                && v["value"] == 1000.0),
        "{r:#}"
    );
    let hp = saved.iter().find(|t| t["id"] == "HP").unwrap();
    assert!(hp["values"].as_array().unwrap().iter().all(|v| v["beginDate"].is_string()), "{r:#}");
}

// ---- 3. ranges: witty-bff's limits (the simulator's too), named as the GraphQL arguments ----

/// An app whose cache keeps the installation, station and meter through the test, so a refused
/// range can be shown to send nothing at all.
async fn warm_app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.cache_state_ttl_secs = 600;
        c.cache_list_ttl_secs = 600;
    })
    .await;
    let warm = format!(
        r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ id }} gridMeter(id: "{ALICE_METER}") {{ id }} }} }}"#
    );
    data(&app.graphql("alice", &warm, json!({})).await);
    app.sim().reset_calls().await;
    app
}

/// The range fields: a station's and a meter's measure values and log counts (with `step`), log
/// entries and a station's `logEntries` (without).
fn range_fields(range: &str, step: &str) -> Vec<(&'static str, String)> {
    let with_step = format!("{range}, step: {step}");
    vec![
        (
            "chargingStation.measure.values",
            format!(
                r#"chargingStation(id: "{ALICE_STATION}") {{ measure(id: "1") {{ values(operator: SUM, {with_step}) {{ value }} }} }}"#
            ),
        ),
        (
            "chargingStation.log.counts",
            format!(
                r#"chargingStation(id: "{ALICE_STATION}") {{ log(id: "1") {{ counts({with_step}) {{ count }} }} }}"#
            ),
        ),
        (
            "gridMeter.measure.values",
            format!(
                r#"gridMeter(id: "{ALICE_METER}") {{ measure(id: "1") {{ values(operator: AVERAGE, {with_step}) {{ value }} }} }}"#
            ),
        ),
        (
            "chargingStation.log.entries",
            format!(r#"chargingStation(id: "{ALICE_STATION}") {{ log(id: "1") {{ entries({range}) {{ date }} }} }}"#),
        ),
        (
            "chargingStation.logEntries",
            format!(r#"chargingStation(id: "{ALICE_STATION}") {{ logEntries({range}) {{ date }} }}"#),
        ),
    ]
}

/// Runs each field alone under the installation and asserts it is refused with a message that
/// contains every one of `words` and none of the upstream's field names.
async fn assert_range_refused(app: &TestApp, fields: Vec<(&str, String)>, words: &[&str]) {
    for (path, field) in fields {
        let q = format!("{{ installation(id: 33) {{ {field} }} }}");
        let r = app.graphql("alice", &q, json!({})).await;
        let (code, message) = only_error(&r);
        assert_eq!(code, "BAD_USER_INPUT", "{path}: {r:#}");
        let at: Vec<&str> = r["errors"][0]["path"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(at[1..].join("."), path, "{r:#}");
        for w in words {
            assert!(message.contains(w), "{path}: the message should name {w}: {message}");
        }
        for upstream in ["startDate", "endDate"] {
            assert!(!message.contains(upstream), "{path}: the upstream's {upstream} reached the client: {message}");
        }
    }
}

#[tokio::test]
async fn a_range_longer_than_3660_days_is_refused_naming_from_and_to_before_anything_is_sent() {
    let app = warm_app().await;
    let range = r#"from: "0001-01-01T00:00:00Z", to: "9999-12-31T00:00:00Z""#;
    assert_range_refused(&app, range_fields(range, "DAY"), &["`from`", "`to`", "3660 days"]).await;
    // One millisecond over.
    let range = r#"from: "2015-01-01T00:00:00Z", to: "2025-01-08T00:00:00.001Z""#;
    assert_range_refused(&app, range_fields(range, "YEAR"), &["`from`", "`to`", "3660 days"]).await;
    assert_nothing_sent(&app, "a range over 3660 days").await;
}

#[tokio::test]
async fn a_range_of_more_than_10000_points_is_refused_naming_step_before_anything_is_sent() {
    let app = warm_app().await;
    // 10 000 hours: 10 001 hourly points as the upstream counts them (a step begun counts).
    let range = r#"from: "2024-01-01T00:00:00Z", to: "2025-02-20T16:00:00Z""#;
    let fields: Vec<_> = range_fields(range, "HOUR").into_iter().take(3).collect();
    assert_range_refused(&app, fields, &["`step`", "HOUR", "`from`", "`to`", "10000"]).await;
    assert_nothing_sent(&app, "a range over 10000 points").await;
}

#[tokio::test]
async fn from_and_to_the_same_millisecond_are_refused_naming_them_as_the_upstream_sees_only_milliseconds() {
    let app = warm_app().await;
    let range = r#"from: "2025-01-01T00:00:00.0001Z", to: "2025-01-01T00:00:00.0009Z""#;
    assert_range_refused(&app, range_fields(range, "DAY"), &["`to`", "`from`", "must be after"]).await;
    assert_nothing_sent(&app, "a range within one millisecond").await;
}

#[tokio::test]
async fn ranges_at_the_limits_are_answered_by_the_upstream() {
    let app = warm_app().await;
    // Exactly 3660 days, and 9 999 hours: 10 000 hourly points as the upstream counts them.
    for (range, step) in [
        (r#"from: "2015-01-01T00:00:00Z", to: "2025-01-08T00:00:00Z""#, "MONTH"),
        (r#"from: "2024-01-01T00:00:00Z", to: "2025-02-20T15:00:00Z""#, "HOUR"),
    ] {
        let q = format!(
            r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{
                measure(id: "1") {{ values(operator: SUM, {range}, step: {step}) {{ value }} }}
                log(id: "1") {{ counts({range}, step: {step}) {{ count }} }}
            }} }} }}"#
        );
        let r = app.graphql("alice", &q, json!({})).await;
        let s = &data(&r)["installation"]["chargingStation"];
        assert!(!s["measure"]["values"].as_array().unwrap().is_empty(), "{step}: {r:#}");
        assert!(s["log"]["counts"].is_array(), "{step}: {r:#}");
    }
}
