//! The read graph through GraphQL over HTTP, against the simulator.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_dashboard_costs_one_upstream_call_per_resource_and_nothing_when_warm() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let r = app.graphql("alice", DASHBOARD, dashboard_variables()).await;
    let d = data(&r);
    let station = &d["installations"][0]["chargingStations"][0];
    assert_eq!(station["friendlyName"], "my garage charging station");
    assert_eq!(station["energy"]["values"].as_array().unwrap().len(), 24, "one point per hour: {station:#}");
    assert_eq!(d["installations"][0]["gridMeters"][0]["tariffs"].as_array().unwrap().len(), 2);
    let calls = app.sim().calls_by_route().await;
    let expected: BTreeMap<String, u64> = [
        "GET /installations",
        "GET /installations/{i}/charging-stations",
        "POST /installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum",
        "GET /installations/{i}/grid-meters",
        "GET /installations/{i}/grid-meters/{gm}/tariffs",
        // The caller's role (costs and consumptions are the owner's only).
        "GET /installations/{i}/users",
    ]
    .into_iter()
    .map(|k| (k.to_string(), 1))
    .collect();
    assert_eq!(calls, expected);

    // Again, within the TTLs: nothing reaches the upstream.
    app.sim().reset_calls().await;
    let again = app.graphql("alice", DASHBOARD, dashboard_variables()).await;
    assert_eq!(again, r);
    assert_eq!(app.sim().total_calls().await, 0);
}

#[tokio::test]
async fn sixteen_concurrent_cold_dashboards_cost_what_one_does() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let runs = (0..16).map(|_| app.graphql("bob", DASHBOARD, dashboard_variables()));
    let answers = futures::future::join_all(runs).await;
    for a in &answers {
        assert_eq!(a, &answers[0]);
        data(a);
    }
    // Bob has two installations: 1 + 2 × (users, stations, energy, meters, tariffs).
    assert_eq!(app.sim().total_calls().await, 11, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn an_aliased_duplicate_costs_nothing_extra() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let q = format!(
        r#"{{ installation(id: 33) {{
            a: chargingStation(id: "{ALICE_STATION}") {{ id friendlyName }}
            b: chargingStation(id: "{ALICE_STATION}") {{ id serialNumber }}
            c: chargingStation(id: "{ALICE_STATION}") {{ id friendlyName }}
        }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let i = &data(&r)["installation"];
    assert_eq!(i["a"]["id"], ALICE_STATION);
    assert_eq!(i["b"]["serialNumber"], "1234ABCDEF5678");
    let calls = app.sim().calls_by_route().await;
    assert_eq!(calls.get("GET /installations/{i}/charging-stations/{cs}"), Some(&1));
    assert_eq!(calls.get("GET /installations"), Some(&1));
}

#[tokio::test]
async fn answers_equal_the_upstream_rest_answers() {
    let app = spawn_app().await;
    let rest = app.sim().get("alice", &station_path(ALICE_INSTALLATION, ALICE_STATION)).await.body;
    let q = format!(
        r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{
            id serialNumber uuid installationParentId type friendlyName macAddress wifiSsid
            chargeModeRaw timezone timezoneRaw culture availabilityRaw phaseNumberRaw averageEvConsumption
            tariff1 tariff2 tariff1Raw ledPower evcsLocked installationDate fetchedAt
            error {{ code }}
            lastSession {{ startDate endDate sessionDuration sessionDurationSeconds totalSessionEnergy totalSessionCost rangeRecoveredByEV }}
            heartbeat {{ heartbeat }}
        }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let s = &data(&r)["installation"]["chargingStation"];
    let p = &rest["properties"];
    assert_eq!(s["id"], rest["id"]);
    assert_eq!(s["serialNumber"], rest["serialNumber"]);
    assert_eq!(s["uuid"], rest["uuid"]);
    assert_eq!(s["installationParentId"], "33");
    assert_eq!(s["type"], rest["type"]);
    assert_eq!(s["friendlyName"], p["friendlyName"]);
    assert_eq!(s["macAddress"], p["macAddress"]);
    assert_eq!(s["chargeModeRaw"], p["chargeMode"]);
    assert_eq!(s["timezone"], "ROMANCE_STANDARD_TIME");
    assert_eq!(s["timezoneRaw"], p["timezone"]);
    assert_eq!(s["culture"], "FR_FR");
    assert_eq!(s["availabilityRaw"], p["availability"]);
    assert_eq!(s["averageEvConsumption"].as_f64(), p["averageEvConsumption"].as_str().unwrap().parse::<f64>().ok());
    assert_eq!(s["tariff1"], "HC");
    assert_eq!(s["tariff2"], "HP");
    assert_eq!(s["ledPower"], p["ledPower"]);
    assert_eq!(s["error"]["code"], "0");
    let last = &p["lastSession"];
    assert_eq!(s["lastSession"]["totalSessionEnergy"], last["totalSessionEnergy"]);
    assert_eq!(s["lastSession"]["totalSessionCost"], last["totalSessionCost"]);
    assert_eq!(s["lastSession"]["sessionDuration"], last["sessionDuration"]);
    let hh_mm = last["sessionDuration"].as_str().unwrap();
    let (h, m) = hh_mm.split_once(':').unwrap();
    let secs = h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60;
    assert_eq!(s["lastSession"]["sessionDurationSeconds"], secs);
    assert!(s["fetchedAt"].as_str().is_some());

    // Measure values: the same numbers as the REST aggregation.
    let body = range_body("2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", Some("day"));
    let rest_points =
        app.sim().post("alice", &format!("{}/measures/1/operators/sum", meter_path(33, ALICE_METER)), body).await.body;
    let q = format!(
        r#"{{ installation(id: 33) {{ gridMeter(id: "{ALICE_METER}") {{ measure(id: "1") {{
            values(operator: SUM, from: "2025-01-01T00:00:00Z", to: "2025-02-01T00:00:00Z", step: DAY) {{
                dateRaw tariffTypeRaw value byTariff {{ tariff tariffRaw value }}
            }} }} }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let points = data(&r)["installation"]["gridMeter"]["measure"]["values"].as_array().unwrap().clone();
    let rest_points = rest_points.as_array().unwrap();
    assert_eq!(points.len(), rest_points.len());
    assert_eq!(points.len(), 62, "31 days × HC and HP");
    for (g, r) in points.iter().zip(rest_points) {
        assert_eq!(g["dateRaw"], r["date"]);
        assert_eq!(g["tariffTypeRaw"], r["tariffType"]);
        assert_eq!(g["value"], r["value"]);
        let tariff = g["byTariff"][0]["tariffRaw"].as_str().unwrap();
        assert_eq!(g["byTariff"][0]["value"], r[format!("value{}{}", tariff[..1].to_uppercase(), &tariff[1..])]);
    }
}

#[tokio::test]
async fn every_read_route_is_reachable_through_the_graph() {
    let app = spawn_app().await;
    let sub = app
        .sim()
        .post(
            "alice",
            "/installations/33/event-subscriptions",
            json!({"protocolCode": "Webhook", "protocolData": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{:?}", sub.body);
    let sub_id = sub.body["eventSubscriptionId"].as_str().unwrap().to_string();
    app.sim().reset_calls().await;
    let range = r#"from: "2025-01-01T00:00:00Z", to: "2025-01-08T00:00:00Z""#;
    let values = |step: &str| {
        format!(
            r#"sum: values(operator: SUM, {range}, step: {step}) {{ value }}
               count: values(operator: COUNT, {range}, step: {step}) {{ value }}
               average: values(operator: AVERAGE, {range}, step: {step}) {{ value }}
               minMax: values(operator: MIN_MAX, {range}, step: {step}) {{ valueMin valueMax }}"#
        )
    };
    let q = format!(
        r#"{{ installations {{ id }}
          installation(id: 33) {{
            users {{ accountId role enabled }}
            invitations {{ email }}
            eventSubscriptions {{ id state }}
            eventSubscription(id: "{sub_id}") {{ id protocolData }}
            chargingStations {{ id }}
            chargingStation(id: "{ALICE_STATION}") {{
              measures {{ id name unit }}
              measure(id: "1") {{ name {values_station} }}
              logs {{ id name }}
              log(id: "1") {{ name entries({range}) {{ date logName value }} counts({range}, step: DAY) {{ date count }} }}
              logEntries({range}) {{ logName }}
            }}
            gridMeters {{ id }}
            gridMeter(id: "{ALICE_METER}") {{
              ticType
              measures {{ id }}
              measure(id: "1") {{ name {values_meter} }}
              logs {{ id }}
              log(id: "1") {{ name entries({range}) {{ value }} counts({range}, step: DAY) {{ count }} }}
              tariffs {{ id }}
              tariff(id: HC) {{ id values {{ value }} }}
            }}
          }} }}"#,
        values_station = values("DAY"),
        values_meter = values("DAY"),
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let d = data(&r);
    assert_eq!(d["installation"]["eventSubscription"]["id"], sub_id.as_str());
    assert!(!d["installation"]["gridMeter"]["log"]["entries"].as_array().unwrap().is_empty());
    let calls = app.sim().calls_by_route().await;
    let mut expected = vec![
        "GET /installations",
        "GET /installations/{i}/users",
        "GET /installations/{i}/invitations",
        "GET /installations/{i}/event-subscriptions",
        "GET /installations/{i}/event-subscriptions/{id}",
        "GET /installations/{i}/charging-stations",
        "GET /installations/{i}/charging-stations/{cs}",
        "GET /installations/{i}/charging-stations/{cs}/measures",
        "GET /installations/{i}/charging-stations/{cs}/measures/{m}",
        "GET /installations/{i}/charging-stations/{cs}/logs",
        "GET /installations/{i}/charging-stations/{cs}/logs/{l}",
        "POST /installations/{i}/charging-stations/{cs}/logs/{l}/operators/list",
        "POST /installations/{i}/charging-stations/{cs}/logs/{l}/operators/count",
        "POST /installations/{i}/charging-stations/{cs}/logs/operators/list",
        "GET /installations/{i}/grid-meters",
        "GET /installations/{i}/grid-meters/{gm}",
        "GET /installations/{i}/grid-meters/{gm}/measures",
        "GET /installations/{i}/grid-meters/{gm}/measures/{m}",
        "GET /installations/{i}/grid-meters/{gm}/logs",
        "GET /installations/{i}/grid-meters/{gm}/logs/{l}",
        "POST /installations/{i}/grid-meters/{gm}/logs/{l}/operators/list",
        "POST /installations/{i}/grid-meters/{gm}/logs/{l}/operators/count",
        "GET /installations/{i}/grid-meters/{gm}/tariffs",
        "GET /installations/{i}/grid-meters/{gm}/tariffs/{t}",
    ];
    let ops: Vec<String> = ["charging-stations/{cs}", "grid-meters/{gm}"]
        .iter()
        .flat_map(|d| {
            ["sum", "count", "average", "min-max"]
                .map(|op| format!("POST /installations/{{i}}/{d}/measures/{{m}}/operators/{op}"))
        })
        .collect();
    expected.extend(ops.iter().map(String::as_str));
    for route in &expected {
        assert_eq!(calls.get(*route), Some(&1), "{route} in {calls:#?}");
    }
    assert_eq!(calls.len(), expected.len(), "{calls:#?}");
}

#[tokio::test]
async fn an_unknown_upstream_enum_value_is_unknown_with_its_raw_string() {
    let app = spawn_app().await;
    app.sim()
        .set_station_properties(
            ALICE_STATION,
            json!({"chargeMode": "solarBoost", "timezone": "Tokyo Standard Time", "tariff3": "hx"}),
        )
        .await;
    app.sim()
        .control(
            Method::PUT,
            &format!("/_sim/grid-meters/{ALICE_METER}/properties"),
            Some(json!({"ticType": "linky9"})),
        )
        .await;
    let q = format!(
        r#"{{ installation(id: 33) {{
            chargingStation(id: "{ALICE_STATION}") {{ chargeMode chargeModeRaw timezone timezoneRaw tariff3 tariff3Raw culture }}
            gridMeter(id: "{ALICE_METER}") {{ ticType ticTypeRaw }}
        }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let i = &data(&r)["installation"];
    let s = &i["chargingStation"];
    assert_eq!(s["chargeMode"], "UNKNOWN");
    assert_eq!(s["chargeModeRaw"], "solarBoost");
    assert_eq!(s["timezone"], "UNKNOWN");
    assert_eq!(s["timezoneRaw"], "Tokyo Standard Time");
    assert_eq!(s["tariff3"], "UNKNOWN");
    assert_eq!(s["tariff3Raw"], "hx");
    assert_eq!(s["culture"], "FR_FR");
    assert_eq!(i["gridMeter"]["ticType"], "UNKNOWN");
    assert_eq!(i["gridMeter"]["ticTypeRaw"], "linky9");
}

#[tokio::test]
async fn car_plug_status_is_an_open_enum_with_its_raw_string() {
    let app = spawn_app().await;
    // Each station is changed before it is first read, so that no cached answer is in the way.
    app.sim().plug(BOB_STATION).await;
    app.sim().set_station_properties(ALICE_STATION, json!({"carPlugStatus": "m7"})).await;
    let cases = [
        ("dieter", DIETER_INSTALLATION, DIETER_STATION, "UNPLUGGED", "unplugged"),
        ("bob", BOB_INSTALLATION, BOB_STATION, "MODE_3", "m3"),
        ("alice", ALICE_INSTALLATION, ALICE_STATION, "UNKNOWN", "m7"),
    ];
    for (sub, installation, station, status, raw) in cases {
        let q = format!(
            r#"{{ installation(id: {installation}) {{ chargingStation(id: "{station}") {{ carPlugStatus carPlugStatusRaw }} }} }}"#
        );
        let r = app.graphql(sub, &q, json!({})).await;
        let expected = json!({"carPlugStatus": status, "carPlugStatusRaw": raw});
        assert_eq!(data(&r)["installation"]["chargingStation"], expected, "{sub}");
    }
}

/// `a` is Alice's station, `b` one that fails; the rest of the answer must arrive.
fn two_stations(bad: &str) -> String {
    format!(
        r#"{{ installation(id: 33) {{
            name
            a: chargingStation(id: "{ALICE_STATION}") {{ id friendlyName }}
            b: chargingStation(id: "{bad}") {{ id friendlyName }}
            gridMeters {{ id }}
        }} }}"#
    )
}

fn assert_only_b_failed(r: &Value, code: &str) {
    let i = &r["data"]["installation"];
    assert_eq!(i["name"], "Mon installation Witty-Home", "{r:#}");
    assert_eq!(i["a"]["id"], ALICE_STATION, "{r:#}");
    assert_eq!(i["gridMeters"][0]["id"], ALICE_METER, "{r:#}");
    assert!(i["b"].is_null(), "{r:#}");
    assert_eq!(error_codes(r), vec![code.to_string()], "{r:#}");
    assert_eq!(r["errors"][0]["path"], json!(["installation", "b"]));
}

#[tokio::test]
async fn an_upstream_404_nulls_only_that_station() {
    let app = spawn_app().await;
    let r = app.graphql("alice", &two_stations("no-such-station"), json!({})).await;
    assert_only_b_failed(&r, "NOT_FOUND");
}

#[tokio::test]
async fn an_upstream_5xx_nulls_only_that_station() {
    let app = spawn_app().await;
    // Bob's station path under Alice's installation, made to fail with 503.
    let bad = "0f0f0f0f-5xx-station";
    let path = format!("/installations/33/charging-stations/{bad}");
    let r = app
        .sim()
        .control(Method::PUT, "/_sim/faults", Some(json!({"errorRate": 1.0, "errorStatus": 503, "routes": [path]})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.graphql("alice", &two_stations(bad), json!({})).await;
    assert_only_b_failed(&r, "UPSTREAM_UNAVAILABLE");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("503"), "{r:#}");
}

#[tokio::test]
async fn an_unexpected_upstream_4xx_is_the_upstreams_error_not_the_callers() {
    let app = spawn_app().await;
    for (status, code) in [(418, "UPSTREAM_ERROR"), (410, "UPSTREAM_ERROR"), (422, "BAD_USER_INPUT")] {
        let bad = format!("0f0f0f0f-{status}-station");
        let path = format!("/installations/33/charging-stations/{bad}");
        let faults = json!({"errorRate": 1.0, "errorStatus": status, "routes": [path]});
        let r = app.sim().control(Method::PUT, "/_sim/faults", Some(faults)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = app.graphql("alice", &two_stations(&bad), json!({})).await;
        assert_only_b_failed(&r, code);
        if code == "UPSTREAM_ERROR" {
            let message = r["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(&format!("refused the request ({status})")), "{r:#}");
        }
    }
}

#[tokio::test]
async fn an_upstream_timeout_nulls_only_that_station() {
    let app = spawn_app_with(|c| {
        c.upstream_timeout_ms = 300;
        c.upstream_read_retries = 0;
    })
    .await;
    let slow = "0f0f0f0f-slow-station";
    let path = format!("GET /installations/33/charging-stations/{slow}");
    app.sim().control(Method::PUT, "/_sim/faults", Some(json!({"latencyMs": 3000, "routes": [path]}))).await;
    let r = app.graphql("alice", &two_stations(slow), json!({})).await;
    assert_only_b_failed(&r, "UPSTREAM_UNAVAILABLE");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("in time"), "{r:#}");
}

#[tokio::test]
async fn reads_are_retried_after_a_transient_failure_but_not_forever() {
    let app = spawn_app_with(|c| c.upstream_read_retries = 2).await;
    app.sim()
        .control(
            Method::PUT,
            "/_sim/faults",
            Some(json!({"errorRate": 1.0, "errorStatus": 502, "routes": ["GET /installations"]})),
        )
        .await;
    app.sim().reset_calls().await;
    let r = app.graphql("alice", "{ installations { id } }", json!({})).await;
    assert_eq!(error_codes(&r), vec!["UPSTREAM_UNAVAILABLE"]);
    assert_eq!(app.sim().calls_to("GET /installations").await, 3, "one try and two retries");
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated() {
    let app = spawn_app().await;
    let q = json!({"query": "{ installations { id } }"});
    let wrong_secret = witty_bff::mint_dev_token("some-other-secret-entirely", "alice", 600, None, None);
    for token in [None, Some("not-a-jwt"), Some("a.b.c"), Some(wrong_secret.as_str())] {
        let r = app.post_graphql(token, q.clone()).await;
        assert_eq!(error_codes(&r.body), vec!["UNAUTHENTICATED"], "{token:?}: {:?}", r.body);
        assert!(r.body["data"].is_null());
    }
    let expired = witty_bff::mint_dev_token(JWT_SECRET, "alice", -600, None, None);
    let r = app.post_graphql(Some(&expired), q.clone()).await;
    assert_eq!(error_codes(&r.body), vec!["UNAUTHENTICATED"]);
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("expired"));
    // No upstream call was made for any of them.
    assert_eq!(app.sim().total_calls().await, 0);
}

#[tokio::test]
async fn malformed_requests_get_clear_errors() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let cases = [
        (json!({"query": "{ installations { id "}), "expected"),
        (json!({"query": "{ installations { nope } }"}), "nope"),
        (json!({"query": "query($id: ID!) { installation(id: $id) { id } }", "variables": {"id": {"x": 1}}}), "id"),
        (json!({"query": "query($f: DateTime!) { installations { id } }", "variables": {"f": "yesterday"}}), "f"),
    ];
    for (body, mention) in cases {
        let r = app.post_graphql(Some(&token), body.clone()).await;
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(error_codes(&r.body), vec!["BAD_USER_INPUT"], "{body}: {:#}", r.body);
        assert!(r.body["errors"][0]["message"].as_str().unwrap().contains(mention), "{body}: {:#}", r.body);
    }
    // Not a GraphQL request (no query): 400, as GraphQL over HTTP asks.
    let r = app.post_graphql(Some(&token), json!({"nothing": true})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(error_codes(&r.body), vec!["BAD_USER_INPUT"], "{:?}", r.body);
    // Not JSON at all.
    let r = send(
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(error_codes(&r.body), vec!["BAD_USER_INPUT"], "{:?}", r.body);
    // A bad range is refused before the upstream is called.
    app.sim().reset_calls().await;
    let q = format!(
        r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ measure(id: "1") {{
            values(operator: SUM, from: "2025-02-01T00:00:00Z", to: "2025-01-01T00:00:00Z", step: DAY) {{ value }} }} }} }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT"]);
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("must be after"));
    assert!(r["data"]["installation"]["chargingStation"]["measure"]["values"].is_null());
    let calls = app.sim().calls_by_route().await;
    assert!(
        !calls.contains_key("POST /installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum"),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn graphql_over_http_get_and_the_graphql_response_media_type() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let r = send(
        app.client
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/graphql", app.base),
                    [("query", "{ installations { id } }")],
                )
                .unwrap(),
            )
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["installations"][0]["id"], "33");
    let r = send(
        app.client
            .post(format!("{}/graphql", app.base))
            .header("accept", "application/graphql-response+json")
            .bearer_auth(&token)
            .json(&json!({"query": "{ installations { "})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["content-type"], "application/graphql-response+json");
}

#[tokio::test]
async fn not_found_for_an_installation_that_is_not_yours() {
    let app = spawn_app().await;
    let r = app.graphql("bob", "{ installation(id: 33) { id name } }", json!({})).await;
    assert_eq!(error_codes(&r), vec!["NOT_FOUND"]);
    assert!(r["data"]["installation"].is_null());
    let r = app.graphql("bob", "{ installation(id: \"abc\") { id } }", json!({})).await;
    assert_eq!(error_codes(&r), vec!["BAD_USER_INPUT"]);
}

#[tokio::test]
async fn graphiql_health_and_readiness_are_served() {
    let app = spawn_app().await;
    let page = app.client.get(format!("{}/graphiql", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/graphiql/graphiql.min.js") && !html.contains("https://"), "offline page");
    for asset in ["graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"] {
        let r = app.client.get(format!("{}/graphiql/{asset}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 5_000, "{asset}");
    }
    assert_eq!(app.client.get(format!("{}/healthz", app.base)).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn graphiqls_token_carries_the_configured_issuer_and_audience() {
    // On its embedded simulator, as `cargo run` serves it (the page has a token only then).
    let app = spawn_app_with(|c| {
        c.upstream_url = None;
        c.api_key = None;
        c.jwt_issuer = Some("https://issuer.example".into());
        c.jwt_audience = Some("witty".into());
    })
    .await;
    let html = app.client.get(format!("{}/graphiql", app.base)).send().await.unwrap().text().await.unwrap();
    let token = html.split("Bearer ").find(|t| t.starts_with("ey")).expect("a token in the headers pane");
    let token: String = token.chars().take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    let r = app.post_graphql(Some(&token), json!({"query": "{ installations { id } }"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["errors"].is_null(), "the page's token is accepted: {:#}", r.body);
    assert!(!r.body["data"]["installations"].as_array().unwrap().is_empty(), "{:#}", r.body);
}

#[tokio::test]
async fn the_dashboard_is_served_offline_under_a_strict_policy_and_asks_for_a_token() {
    let app = spawn_app().await;
    let page = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/dashboard.js") && !html.contains("https://"), "offline page");
    // Not on the embedded simulator: no token minted, the page asks for one.
    assert!(!html.contains("witty-dev-token") && html.contains("token-form"), "{html}");
    for asset in ["dashboard.js", "dashboard.css"] {
        let r = app.client.get(format!("{}/dashboard/{asset}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{asset}");
        let text = r.text().await.unwrap();
        assert!(text.len() > 1_000 && !text.contains("https://"), "{asset}");
    }
    let r = app.client.get(format!("{}/dashboard/other.js", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_dashboards_token_is_minted_on_the_embedded_simulator() {
    let app = spawn_app_with(|c| {
        c.upstream_url = None;
        c.api_key = None;
    })
    .await;
    let html = app.client.get(format!("{}/", app.base)).send().await.unwrap().text().await.unwrap();
    let token = html.split(r#"name="witty-dev-token" content=""#).nth(1).expect("a token in the page");
    let token = &token[..token.find('"').unwrap()];
    let r = app.post_graphql(Some(token), json!({"query": "{ installations { id } }"})).await;
    assert!(r.body["errors"].is_null(), "the page's token is accepted: {:#}", r.body);
    assert!(!r.body["data"]["installations"].as_array().unwrap().is_empty(), "{:#}", r.body);
}

/// A `{ __typename }` request whose variable holds `bytes` bytes.
fn padded_request(bytes: usize) -> Value {
    json!({"query": "{ __typename }", "variables": {"pad": "a".repeat(bytes)}})
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    let app = spawn_app().await;
    let limit = witty_bff::MAX_REQUEST_BYTES;
    // Under the limit: answered, even without a token.
    let r = app.post_graphql(None, padded_request(limit - 1024)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"]["__typename"], "Query");
    // Over it, declared by Content-Length: refused, naming the limit.
    let r = app.post_graphql(None, padded_request(limit + 1)).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(error_codes(&r.body), vec!["BAD_USER_INPUT"], "{:?}", r.body);
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{} KiB", limit / 1024)), "{message}");
    // Over it in chunks, with no length declared: refused once the limit is passed.
    let body = padded_request(limit + 1).to_string();
    let address = app.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(64 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if socket.write_all(&framed).await.is_err() {
            break; // Refused before the end: the server may close its side.
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("BAD_USER_INPUT"), "{answer}");
    // A body that breaks off (a chunk size that is not hex) is a bad request, not one too large.
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(b"5\r\n{\"que\r\nzz\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("could not be read to its end"), "{answer}");
}

#[tokio::test]
async fn the_committed_schema_is_the_codes_schema() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed at the crate root");
    let current = witty_bff::sdl();
    assert!(
        committed == current,
        "schema.graphql differs from the code's SDL: run `cargo run -- schema > schema.graphql` and commit it"
    );
}

/// `n` aliases of Alice's station energy, each asking for a range starting at a different hour,
/// so that no two are the same upstream resource.
fn aliased_energy_ranges(n: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
    let aliases: String = (0..n)
        .map(|k| {
            let from = (start + chrono::Duration::hours(k)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            format!(
                r#"a{k}: values(operator: SUM, from: "{from}", to: "2025-01-01T00:00:00Z", step: MONTH) {{ value }}
                "#
            )
        })
        .collect();
    format!(
        r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ measure(id: "1") {{ {aliases} }} }} }} }}"#
    )
}

#[tokio::test]
async fn a_query_that_would_cost_hundreds_of_upstream_calls_is_refused_before_any_call() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    for aliases in [2_000, 500, 120] {
        let r = app.graphql("alice", &aliased_energy_ranges(aliases), json!({})).await;
        let codes = error_codes(&r);
        assert_eq!(
            codes.first().map(String::as_str),
            Some("QUERY_TOO_COMPLEX"),
            "{aliases} aliases: {}",
            r["errors"][0]
        );
        assert_eq!(codes.len(), 1, "{aliases} aliases: {} errors", codes.len());
        let message = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("split it into smaller queries"), "says what to do: {message}");
        assert!(r["data"].is_null(), "{aliases} aliases: nothing runs");
        assert_eq!(app.sim().total_calls().await, 0, "{aliases} aliases: {:#?}", app.sim().calls_by_route().await);
    }
}

/// `levels` fragments on `on`, each spreading the next four times, the last selecting `leaf`:
/// a few hundred bytes standing for 4^levels fields.
pub fn fragment_tree(kind: &str, on: &str, levels: usize, leaf: &str) -> String {
    let mut doc = format!("{kind} {{ ...F0 }}");
    for i in 0..levels {
        doc += &format!(" fragment F{i} on {on} {{ ...F{n} ...F{n} ...F{n} ...F{n} }}", n = i + 1);
    }
    doc + &format!(" fragment F{levels} on {on} {{ {leaf} }}")
}

#[tokio::test]
async fn fragments_spread_into_millions_of_fields_are_refused_at_once_and_a_few_spreads_still_pass() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    // 4^24 selections once written out: walked one by one (async-graphql's depth check,
    // validation, execution each do), this would take the server years; refused before any of
    // it, whatever the leaves (a spread of an unknown fragment included), and with no token too.
    for (leaf, who) in [("installations { id }", Some("alice")), ("...Unknown", Some("alice")), ("__typename", None)] {
        let bomb = fragment_tree("query", "Query", 24, leaf);
        let token = who.map(|w| app.token_for(w));
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            app.post_graphql(token.as_deref(), json!({"query": bomb})),
        )
        .await
        .expect("answered, not walked field by field")
        .body;
        assert_eq!(error_codes(&r), ["QUERY_TOO_COMPLEX"], "{leaf}: {r}");
        let message = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("20000 selections once its fragments are written out"), "{message}");
        assert!(r["data"].is_null(), "{r}");
    }
    assert_eq!(app.sim().total_calls().await, 0, "{:#?}", app.sim().calls_by_route().await);
    // A fragment tree of 4^3 = 64 spreads of one field is an ordinary query.
    let r = app.graphql("alice", &fragment_tree("query", "Query", 3, "installations { id }"), json!({})).await;
    assert_eq!(data(&r)["installations"][0]["id"], "33", "{r}");
}

#[tokio::test]
async fn a_heavy_but_realistic_station_page_still_passes() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    // Two years month by month, a year day by day, the sessions and the meter's year: what a
    // station's history page asks for at once.
    let months: String = (0..24)
        .map(|m| {
            let (y, mo) = (2023 + m / 12, m % 12 + 1);
            let (ny, nmo) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
            format!(
                r#"m{m}: values(operator: SUM, from: "{y}-{mo:02}-01T00:00:00Z", to: "{ny}-{nmo:02}-01T00:00:00Z", step: DAY) {{ date value }}
                "#
            )
        })
        .collect();
    let year = r#"from: "2024-01-01T00:00:00Z", to: "2025-01-01T00:00:00Z""#;
    let q = format!(
        r#"{{ installations {{ id name }}
          installation(id: 33) {{
            name
            chargingStation(id: "{ALICE_STATION}") {{
              id friendlyName chargeMode availability carPlugStatus
              currentSession {{ startDate durationSeconds totalSessionEnergy }}
              lastSession {{ startDate endDate totalSessionEnergy totalSessionCost }}
              measures {{ id name unit }}
              energy: measure(id: "1") {{
                name unit
                year: values(operator: SUM, {year}, step: DAY) {{ date tariffType value byTariff {{ tariff value }} }}
                peaks: values(operator: MIN_MAX, {year}, step: MONTH) {{ date valueMin valueMax }}
                {months}
              }}
              logs {{ id name counts({year}, step: MONTH) {{ date count }} }}
              sessions: log(id: "2") {{ name entries({year}) {{ date value }} }}
              logEntries(from: "2024-12-01T00:00:00Z", to: "2025-01-01T00:00:00Z") {{ date logName value }}
            }}
            gridMeters {{
              id gridSubscription currentTariff
              tariffs {{ id friendlyName currentPrice values {{ beginDate value }} }}
              measure(id: "1") {{ values(operator: SUM, {year}, step: DAY) {{ date value byTariff {{ tariff value }} }} }}
            }}
          }} }}"#
    );
    let r = app.graphql("alice", &q, json!({})).await;
    let station = &data(&r)["installation"]["chargingStation"];
    let days = |points: &Value| {
        let dates: std::collections::BTreeSet<&str> =
            points.as_array().unwrap().iter().map(|p| p["date"].as_str().unwrap()).collect();
        dates.len()
    };
    assert_eq!(days(&station["energy"]["year"]), 366, "every day of 2024");
    assert_eq!(days(&station["energy"]["m13"]), 29, "February 2024, day by day");
    assert_eq!(station["logs"].as_array().unwrap().len(), 6);
    // Each alias is a resource of its own: the page costs what it asks for, no more.
    let sums =
        app.sim().calls_by_route().await["POST /installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum"];
    assert_eq!(sums, 25);
}

/// Ids that name no resource: refused before anything is sent upstream.
const BAD_IDS: [&str; 4] = ["", "  ", ".", ".."];

#[tokio::test]
async fn an_empty_id_is_bad_user_input_naming_the_argument_and_never_sent_upstream() {
    let app = spawn_app().await;
    let range = r#"from: "2025-01-01T00:00:00Z", to: "2025-01-08T00:00:00Z""#;
    for bad in BAD_IDS {
        app.sim().reset_calls().await;
        let q = format!(
            r#"{{ installation(id: 33) {{
                name
                station: chargingStation(id: "{bad}") {{ id friendlyName }}
                meter: gridMeter(id: "{bad}") {{ id ticType }}
                subscription: eventSubscription(id: "{bad}") {{ id state }}
                chargingStation(id: "{ALICE_STATION}") {{
                  friendlyName
                  measure(id: "{bad}") {{ unit values(operator: SUM, {range}, step: DAY) {{ value }} }}
                  log(id: "{bad}") {{ name entries({range}) {{ date }} counts({range}, step: DAY) {{ count }} }}
                }}
                gridMeter(id: "{ALICE_METER}") {{
                  ticType
                  measure(id: "{bad}") {{ periodicity values(operator: SUM, {range}, step: DAY) {{ value }} }}
                  log(id: "{bad}") {{ periodicity entries({range}) {{ date }} counts({range}, step: DAY) {{ count }} }}
                }}
            }} }}"#
        );
        let r = app.graphql("alice", &q, json!({})).await;
        let i = &r["data"]["installation"];
        // The rest of the answer is delivered.
        assert_eq!(i["name"], "Mon installation Witty-Home", "{bad:?}: {r:#}");
        assert_eq!(i["chargingStation"]["friendlyName"], "my garage charging station", "{bad:?}: {r:#}");
        assert!(i["gridMeter"]["ticType"].is_string(), "{bad:?}: {r:#}");
        let mut got: Vec<(String, String)> = r["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{bad:?}: errors expected: {r:#}"))
            .iter()
            .map(|e| {
                let path: Vec<String> =
                    e["path"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().into()).collect();
                let message = e["message"].as_str().unwrap();
                assert_eq!(e["extensions"]["code"], "BAD_USER_INPUT", "{bad:?} at {path:?}: {e}");
                assert!(!message.contains("route"), "{bad:?}: the upstream's text leaked: {e}");
                (path[1..].join("."), message.to_string())
            })
            .collect();
        got.sort();
        let named = |arg: &str| {
            if bad.trim().is_empty() {
                format!("{arg} must not be empty")
            } else {
                format!("{arg} cannot be '.' or '..'")
            }
        };
        let mut expected: Vec<(String, String)> = [
            ("station", "chargingStationId"),
            ("meter", "gridMeterId"),
            ("subscription", "eventSubscriptionId"),
            // Once per field, naming its own argument, whatever it selects.
            ("chargingStation.measure", "id"),
            ("chargingStation.log", "id"),
            ("gridMeter.measure", "id"),
            ("gridMeter.log", "id"),
        ]
        .into_iter()
        .map(|(path, arg)| (path.to_string(), named(arg)))
        .collect();
        expected.sort();
        assert_eq!(got, expected, "{bad:?}");
        // Only what the valid ids needed reached the upstream (and nothing when cached already).
        let calls = app.sim().calls_by_route().await;
        let allowed = [
            "GET /installations",
            "GET /installations/{i}/charging-stations/{cs}",
            "GET /installations/{i}/grid-meters/{gm}",
        ];
        assert!(calls.keys().all(|route| allowed.contains(&route.as_str())), "{bad:?}: {calls:#?}");
    }
}

/// `n` aliases of a station's energy, each a range of its own (so each its own upstream read).
fn energy_ranges(n: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
    (0..n)
        .map(|k| {
            let from = (start + chrono::Duration::hours(k)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            format!(
                r#"a{k}: values(operator: SUM, from: "{from}", to: "2025-01-01T00:00:00Z", step: MONTH) {{ value }} "#
            )
        })
        .collect()
}

#[tokio::test]
async fn a_query_fanning_out_past_the_budget_of_upstream_reads_fails_only_the_reads_past_it() {
    let app = spawn_app().await;
    // An owner of three installations, a station on each.
    let devices = app.sim().devices().await;
    for n in 0..3 {
        let create = r#"mutation($input: CreateInstallationInput!) { createInstallation(input: $input) { id } }"#;
        let input = json!({"input": {"name": format!("Site {n}"), "locationName": "Nantes", "location": {"latitude": 47.2, "longitude": -1.55}}});
        let r = app.graphql("quentin", create, input).await;
        let i = data(&r)["createInstallation"]["id"].as_str().unwrap().to_string();
        let associate = r#"mutation($i: ID!, $input: AssociateChargingStationInput!) { associateChargingStation(installationId: $i, input: $input) { id } }"#;
        let input = json!({"uid": devices[n]["uid"], "timezone": "ROMANCE_STANDARD_TIME", "culture": "FR_FR"});
        data(&app.graphql("quentin", associate, json!({"i": i, "input": input})).await);
    }
    // 90 ranges per station: within the complexity limit (the stations list counts once), but
    // 3 × 90 reads of values alone, past the budget of 200.
    const ALIASES: i64 = 90;
    let q = format!(
        r#"{{ installations {{ id chargingStations {{ id energy: measure(id: "1") {{ {} }} }} }} }}"#,
        energy_ranges(ALIASES)
    );
    app.sim().reset_calls().await;
    let r = app.graphql("quentin", &q, json!({})).await;
    let calls = app.sim().total_calls().await;
    assert!(calls <= 200, "{calls} upstream calls: {:#?}", app.sim().calls_by_route().await);

    let errors = r["errors"].as_array().expect("the reads past the budget fail");
    for e in errors {
        assert_eq!(e["extensions"]["code"], "QUERY_TOO_COMPLEX", "{e:#}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("more than 200 reads") && message.contains("split it"), "{message}");
        let path = e["path"].as_array().unwrap();
        assert!(path.last().unwrap().as_str().unwrap().starts_with('a'), "a range's values failed: {e:#}");
    }
    // The rest of the answer stands: every station, every range answered or failed in its place.
    let installations = r["data"]["installations"].as_array().unwrap();
    assert_eq!(installations.len(), 3, "{r:#}");
    let (mut answered, mut failed) = (0, 0);
    for i in installations {
        let stations = i["chargingStations"].as_array().unwrap();
        assert_eq!(stations.len(), 1, "{i:#}");
        for k in 0..ALIASES {
            match &stations[0]["energy"][format!("a{k}")] {
                Value::Null => failed += 1,
                Value::Array(_) => answered += 1,
                other => panic!("a{k}: {other}"),
            }
        }
    }
    assert_eq!(failed, errors.len());
    assert_eq!(answered + failed, 3 * ALIASES as usize);
    assert!(answered > 0 && failed > 0, "{answered} answered, {failed} failed");

    // What is already cached costs nothing: the same query again sends only what was refused.
    app.sim().reset_calls().await;
    let again = app.graphql("quentin", &q, json!({})).await;
    data(&again);
    assert!(app.sim().total_calls().await <= 200);

    // A normal dashboard is far within the budget.
    let dashboard = app.graphql("quentin", DASHBOARD, dashboard_variables()).await;
    assert_eq!(data(&dashboard)["installations"].as_array().unwrap().len(), 3);
    data(&app.graphql("bob", DASHBOARD, dashboard_variables()).await);
}
