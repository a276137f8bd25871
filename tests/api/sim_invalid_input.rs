//! Invalid input of every kind, route by route: bad JSON, wrong JSON types, missing content
//! types, bad date ranges, unknown ids. Each gets a 4xx in the platform's `{statusCode, message}`
//! shape with a message naming the problem, and nothing brings the simulator down.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::sim_access::{Ids, concrete};
use crate::simulator::{ROUTES, call_route};

/// The routes that take a JSON body.
fn body_routes() -> Vec<usize> {
    let ids = Ids { i: "33", cs: ALICE_STATION, gm: ALICE_METER, account: "x" };
    (1..=50).filter(|n| concrete(*n, &ids).1.is_some()).collect()
}

/// The routes that take `{startDate, endDate[, step]}`, and whether they need a step.
fn range_routes() -> Vec<(usize, bool)> {
    (1..=50)
        .filter(|n| {
            ROUTES[n - 1].1.contains("/operators/") && ROUTES[n - 1].1.rsplit('/').next() != Some("authorize-tic")
        })
        .filter(|n| {
            ROUTES[n - 1].0 == "POST" && (ROUTES[n - 1].1.contains("/measures/") || ROUTES[n - 1].1.contains("/logs/"))
        })
        .map(|n| (n, !ROUTES[n - 1].1.ends_with("/list")))
        .collect()
}

fn method(n: usize) -> Method {
    Method::from_bytes(ROUTES[n - 1].0.as_bytes()).unwrap()
}

fn alice_ids() -> Ids<'static> {
    Ids { i: "33", cs: ALICE_STATION, gm: ALICE_METER, account: "x" }
}

fn assert_refused(r: &Reply, status: u16, needles: &[&str], what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {:?}", r.body);
    assert_eq!(r.body["statusCode"], status, "{what}: the platform's error shape: {:?}", r.body);
    for needle in needles {
        assert!(r.message().contains(needle), "{what}: the message names {needle}: {:?}", r.body);
    }
}

#[test]
fn the_route_lists_are_complete() {
    assert_eq!(body_routes().len(), 21, "{:?}", body_routes());
    assert_eq!(range_routes().len(), 13, "{:?}", range_routes());
}

#[tokio::test]
async fn bad_json_is_400_on_every_route_with_a_body() {
    let app = spawn_app().await;
    let sim = app.sim();
    for n in body_routes() {
        let (path, _) = concrete(n, &alice_ids());
        for raw in ["{\"name\":", "{'a': 1}", "not json", "", "{\"a\": 1} trailing", "\u{feff}{}"] {
            let req = sim.request("alice", method(n), &path).header("content-type", "application/json").body(raw);
            let r = send(req).await;
            assert_refused(&r, 400, &["JSON"], &format!("route {n} {path} with {raw:?}"));
        }
    }
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let app = spawn_app().await;
    let sim = app.sim();
    for n in body_routes() {
        let (path, body) = concrete(n, &alice_ids());
        let text = body.unwrap().to_string();
        for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
            let mut req = sim.request("alice", method(n), &path).body(text.clone());
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let r = send(req).await;
            assert_refused(&r, 415, &["Content-Type"], &format!("route {n} {path} as {content_type:?}"));
        }
    }
}

#[tokio::test]
async fn a_body_of_the_wrong_json_type_is_400() {
    let app = spawn_app().await;
    let sim = app.sim();
    for n in body_routes() {
        let (path, body) = concrete(n, &alice_ids());
        let wrong: Vec<Value> = if body.as_ref().is_some_and(Value::is_array) {
            vec![json!({"id": "hc", "value": 0.2}), json!(42), json!("hc"), json!(null), json!(true)]
        } else {
            vec![json!(42), json!("text"), json!(null), json!(true), json!(4.2)]
        };
        for w in wrong {
            let r = call_route(sim, "alice", n, &path, Some(w.clone())).await;
            assert_refused(&r, 400, &["invalid type"], &format!("route {n} {path} with {w}"));
        }
    }
}

#[tokio::test]

async fn an_array_instead_of_an_object_is_400() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    for (path, body) in [
        (format!("{cs}/operators/set-charge-mode"), json!(["deferred"])),
        (cs.clone(), json!(["renamed"])),
        ("/installations".to_string(), json!(["Home", "Bordeaux", [44.8, -0.6]])),
        (format!("{cs}/measures/1/operators/sum"), json!(["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", "day"])),
        (format!("{}/operators/authorize-tic", meter_path(ALICE_INSTALLATION, ALICE_METER)), json!([false])),
        (format!("/installations/{ALICE_INSTALLATION}/invitations"), json!(["someone@example.com", "fr-fr"])),
    ] {
        let method = if path == cs { Method::PUT } else { Method::POST };
        let r = sim.call("alice", method, &path, Some(body.clone())).await;
        assert_refused(&r, 400, &["invalid type"], &format!("{path} with {body}"));
    }
}

#[tokio::test]
async fn deeply_nested_or_huge_json_is_refused_without_harm() {
    let app = spawn_app().await;
    let sim = app.sim();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = send(
        sim.request("alice", Method::POST, "/installations").header("content-type", "application/json").body(deep),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let long_name = json!({"name": "x".repeat(200_000), "locationName": "B", "locationGpsCoordinates": {"latitude": 1.0, "longitude": 1.0}});
    let r = sim.post("alice", "/installations", long_name).await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    let long_id = "x".repeat(5_000);
    let r = sim.get("alice", &station_path(ALICE_INSTALLATION, &long_id)).await;
    assert_eq!(r.status, 404);
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
}

#[tokio::test]
async fn bad_date_ranges_are_400_naming_the_field_on_every_range_route() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (a, b) = ("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z");
    for (n, needs_step) in range_routes() {
        let (path, _) = concrete(n, &alice_ids());
        let step = |mut v: Value| {
            if needs_step {
                v["step"] = json!("day");
            }
            v
        };
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (step(json!({"startDate": b, "endDate": a})), vec!["endDate", "startDate", "after"]),
            (step(json!({"startDate": a, "endDate": a})), vec!["endDate", "after"]),
            (step(json!({"endDate": b})), vec!["startDate", "required"]),
            (step(json!({"startDate": a})), vec!["endDate", "required"]),
            (step(json!({"startDate": "yesterday", "endDate": b})), vec!["startDate", "yesterday"]),
            (step(json!({"startDate": a, "endDate": "2025-13-01T00:00:00Z"})), vec!["endDate"]),
            (step(json!({"startDate": "2025-01-01T00:00:00", "endDate": b})), vec!["startDate"]),
            (step(json!({"startDate": "2025-01-01", "endDate": b})), vec!["startDate"]),
            (step(json!({"startDate": 1735689600, "endDate": b})), vec!["startDate", "invalid type"]),
            (step(json!({"startDate": a, "endDate": ["2025-01-02T00:00:00Z"]})), vec!["endDate", "invalid type"]),
            (step(json!({"startDate": "2000-01-01T00:00:00Z", "endDate": "2025-01-01T00:00:00Z"})), vec!["days"]),
            (
                json!({"startDate": a, "endDate": b, "step": "fortnight"}),
                vec!["step", "fortnight", "hour", "day", "month"],
            ),
            (json!({"startDate": a, "endDate": b, "step": 1}), vec!["step", "invalid type"]),
        ];
        for (body, needles) in cases {
            let r = call_route(sim, "alice", n, &path, Some(body.clone())).await;
            assert_refused(&r, 400, &needles, &format!("route {n} {path} with {body}"));
        }
        if needs_step {
            let r = call_route(sim, "alice", n, &path, Some(json!({"startDate": a, "endDate": b}))).await;
            assert_refused(&r, 400, &["step", "required"], &format!("route {n} without step"));
            let r = call_route(
                sim,
                "alice",
                n,
                &path,
                Some(json!({"startDate": "2020-01-01T00:00:00Z", "endDate": "2025-01-01T00:00:00Z", "step": "hour"})),
            )
            .await;
            assert_refused(&r, 400, &["step", "too many points"], &format!("route {n} with five years of hours"));
        } else {
            let r = call_route(sim, "alice", n, &path, Some(json!({"startDate": a, "endDate": b}))).await;
            assert_eq!(r.status, 200, "route {n}: a list needs no step: {:?}", r.body);
        }
    }
}

#[tokio::test]
async fn extreme_but_valid_dates_answer_200_with_nothing() {
    let app = spawn_app().await;
    let sim = app.sim();
    for (n, needs_step) in range_routes() {
        let (path, _) = concrete(n, &alice_ids());
        for (a, b) in [
            ("0001-01-01T00:00:00Z", "0001-12-31T00:00:00Z"),
            ("9999-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
            ("2025-01-01T00:00:00+14:00", "2025-01-01T00:00:00-12:00"),
        ] {
            let body = if needs_step { range_body(a, b, Some("week")) } else { range_body(a, b, None) };
            let r = call_route(sim, "alice", n, &path, Some(body.clone())).await;
            assert_eq!(r.status, 200, "route {n} {path} with {body}: {:?}", r.body);
            assert!(r.body.is_array(), "{:?}", r.body);
            if a.starts_with("0001") || a.starts_with("9999") {
                assert_eq!(r.body, json!([]), "route {n}: nothing before the installation or in the future");
            }
        }
    }
}

#[tokio::test]
async fn an_unknown_station_or_meter_is_404_naming_it_on_every_route() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ids = Ids { i: "33", cs: "no-such-station", gm: "no-such-meter", account: "x" };
    let mut checked = 0;
    for n in 1..=50 {
        let template = ROUTES[n - 1].1;
        let needle = if template.contains("{cs}") {
            "no-such-station"
        } else if template.contains("{gm}") {
            "no-such-meter"
        } else {
            continue;
        };
        let (path, body) = concrete(n, &ids);
        let r = call_route(sim, "alice", n, &path, body).await;
        assert_refused(&r, 404, &[needle], &format!("route {n} {path}"));
        checked += 1;
    }
    assert_eq!(checked, 32);
    // Bob's station and meter are unknown in Alice's installation too.
    let ids = Ids { i: "33", cs: BOB_STATION, gm: BOB_METER, account: "x" };
    for n in [17, 20, 24, 26, 33, 36, 40, 48] {
        let (path, body) = concrete(n, &ids);
        let r = call_route(sim, "alice", n, &path, body).await;
        assert_eq!(r.status, 404, "route {n} {path}: {:?}", r.body);
    }
}

#[tokio::test]
async fn unknown_measures_logs_and_tariffs_are_404_naming_them() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let gm = meter_path(ALICE_INSTALLATION, ALICE_METER);
    let day = range_body("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", Some("day"));
    let span = range_body("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", None);
    for base in [&cs, &gm] {
        for m in ["0", "3", "x", "EnergyConsumption"] {
            let r = sim.get("alice", &format!("{base}/measures/{m}")).await;
            assert_refused(&r, 404, &[&format!("measure {m}")], &format!("{base} measure {m}"));
            for op in ["sum", "count", "average", "min-max"] {
                let r = sim.post("alice", &format!("{base}/measures/{m}/operators/{op}"), day.clone()).await;
                assert_refused(&r, 404, &[&format!("measure {m}")], &format!("{base} measure {m} {op}"));
            }
        }
        for l in ["0", "9", "SessionStart"] {
            let r = sim.get("alice", &format!("{base}/logs/{l}")).await;
            assert_refused(&r, 404, &[&format!("log {l}")], &format!("{base} log {l}"));
            let r = sim.post("alice", &format!("{base}/logs/{l}/operators/count"), day.clone()).await;
            assert_refused(&r, 404, &[&format!("log {l}")], &format!("{base} log {l} count"));
            let r = sim.post("alice", &format!("{base}/logs/{l}/operators/list"), span.clone()).await;
            assert_refused(&r, 404, &[&format!("log {l}")], &format!("{base} log {l} list"));
        }
    }
    // The meter has two logs only.
    let r = sim.get("alice", &format!("{gm}/logs/3")).await;
    assert_eq!(r.status, 404);
    for t in ["th", "tariff1", "zz", "HC1"] {
        let r = sim.get("alice", &format!("{gm}/tariffs/{t}")).await;
        assert_refused(&r, 404, &[t], &format!("tariff {t}"));
    }
}

#[tokio::test]
async fn unknown_subscriptions_invitations_users_and_codes_are_404() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    for (method, path, needle) in [
        (Method::GET, format!("/installations/{i}/event-subscriptions/nope"), "nope"),
        (Method::DELETE, format!("/installations/{i}/event-subscriptions/nope"), "nope"),
        (Method::DELETE, format!("/installations/{i}/invitations/nobody@example.com"), "nobody@example.com"),
        (Method::POST, format!("/installations/{i}/users/nobody/operators/disable"), "nobody"),
        (Method::POST, format!("/installations/{i}/users/nobody/operators/enable"), "nobody"),
        (Method::DELETE, format!("/installations/{i}/users/nobody"), "nobody"),
        (Method::POST, "/invitations/operators/accept/nope".to_string(), "nope"),
        (Method::DELETE, format!("/installations/{i}/charging-stations/nope"), "nope"),
        (Method::PUT, format!("/installations/{i}/charging-stations/nope"), "nope"),
    ] {
        let body = (method == Method::PUT).then(|| json!({"friendlyName": "x"}));
        let who = if path.starts_with("/invitations") { "erin" } else { "alice" };
        let r = sim.call(who, method.clone(), &path, body).await;
        assert_refused(&r, 404, &[needle], &format!("{method} {path}"));
    }
    // An installation id that is a number but not one of the caller's, even negative.
    for id in ["-1", "0", "100", "9223372036854775807"] {
        let r = sim.get("alice", &format!("/installations/{id}/charging-stations")).await;
        assert_refused(&r, 404, &[id], &format!("installation {id}"));
    }
}

#[tokio::test]

async fn unroutable_requests_get_the_platform_error_body() {
    let app = spawn_app().await;
    let sim = app.sim();
    let cases = [
        (Method::GET, "/installations/33/nothing-here".to_string(), 404),
        (Method::GET, "/no/such/route".to_string(), 404),
        (Method::PATCH, "/installations".to_string(), 405),
        (Method::DELETE, "/installations".to_string(), 405),
        (Method::GET, format!("/installations/{ALICE_INSTALLATION}/charging-stations/%FF"), 400),
    ];
    for (method, path, status) in cases {
        let r = sim.call("alice", method.clone(), &path, None).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}");
        assert_eq!(r.body["statusCode"], status, "{method} {path}: the platform's error shape: {:?}", r.body);
        assert!(!r.message().is_empty(), "{method} {path}: a message says what is wrong");
    }
}
