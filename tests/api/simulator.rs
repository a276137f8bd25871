//! The embedded Witty-Home simulator, driven over HTTP: the route table as a whole (every route
//! answers with its documented status and is counted under its template), and its OpenAPI
//! description.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// The 50 routes of ROUTES.md, numbered as there (index + 1): method, template, and the status of
/// a successful call as the API document gives it.
pub const ROUTES: [(&str, &str, u16); 50] = [
    ("GET", "/installations", 200),
    ("POST", "/installations", 201),
    ("GET", "/installations/{i}/event-subscriptions", 200),
    ("GET", "/installations/{i}/event-subscriptions/{id}", 200),
    ("POST", "/installations/{i}/event-subscriptions", 201),
    ("DELETE", "/installations/{i}/event-subscriptions", 204),
    ("DELETE", "/installations/{i}/event-subscriptions/{id}", 204),
    ("POST", "/installations/{i}/invitations", 201),
    ("GET", "/installations/{i}/invitations", 200),
    ("DELETE", "/installations/{i}/invitations/{email}", 204),
    ("POST", "/invitations/operators/accept/{activationCode}", 200),
    ("GET", "/installations/{i}/users", 200),
    ("POST", "/installations/{i}/users/{accountId}/operators/disable", 204),
    ("POST", "/installations/{i}/users/{accountId}/operators/enable", 204),
    ("DELETE", "/installations/{i}/users/{accountId}", 204),
    ("GET", "/installations/{i}/charging-stations", 200),
    ("GET", "/installations/{i}/charging-stations/{cs}", 200),
    ("POST", "/installations/{i}/charging-stations", 201),
    ("DELETE", "/installations/{i}/charging-stations/{cs}", 204),
    ("POST", "/installations/{i}/charging-stations/{cs}/operators/set-charge-mode", 202),
    ("POST", "/installations/{i}/charging-stations/{cs}/operators/start", 202),
    ("POST", "/installations/{i}/charging-stations/{cs}/operators/stop", 202),
    ("PUT", "/installations/{i}/charging-stations/{cs}", 202),
    ("GET", "/installations/{i}/charging-stations/{cs}/measures", 200),
    ("GET", "/installations/{i}/charging-stations/{cs}/measures/{m}", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/measures/{m}/operators/sum", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/measures/{m}/operators/count", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/measures/{m}/operators/average", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/measures/{m}/operators/min-max", 200),
    ("GET", "/installations/{i}/charging-stations/{cs}/logs", 200),
    ("GET", "/installations/{i}/charging-stations/{cs}/logs/{l}", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/logs/{l}/operators/count", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/logs/{l}/operators/list", 200),
    ("POST", "/installations/{i}/charging-stations/{cs}/logs/operators/list", 200),
    ("GET", "/installations/{i}/grid-meters", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/operators/authorize-tic", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/measures", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/measures/{m}", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/measures/{m}/operators/sum", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/measures/{m}/operators/count", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/measures/{m}/operators/average", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/measures/{m}/operators/min-max", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/logs", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/logs/{l}", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/logs/{l}/operators/count", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/logs/{l}/operators/list", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/tariffs", 200),
    ("GET", "/installations/{i}/grid-meters/{gm}/tariffs/{t}", 200),
    ("POST", "/installations/{i}/grid-meters/{gm}/tariffs", 200),
];

/// `"METHOD /template"`, the key of `/_sim/calls`' `byRoute`.
pub fn route_key(n: usize) -> String {
    let (method, template, _) = ROUTES[n - 1];
    format!("{method} {template}")
}

/// Whether a concrete path is an instance of a template (`{x}` matches one non-empty segment).
pub fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| if t.starts_with('{') { !p.is_empty() } else { t == p })
}

/// Calls route number `n` of ROUTES.md on `path` (which must be an instance of its template).
pub async fn call_route(sim: &TestSim, sub: &str, n: usize, path: &str, body: Option<Value>) -> Reply {
    let (method, template, _) = ROUTES[n - 1];
    assert!(matches_template(template, path), "route {n}: {path} is not an instance of {template}");
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    sim.call(sub, method, path, body).await
}

/// Calls route `n` and asserts it answered with its documented success status.
async fn hit(sim: &TestSim, sub: &str, n: usize, path: &str, body: Option<Value>) -> Reply {
    let r = call_route(sim, sub, n, path, body).await;
    assert_eq!(r.status.as_u16(), ROUTES[n - 1].2, "route {n} ({}) on {path}: {:?}", route_key(n), r.body);
    r
}

#[tokio::test]
async fn lists_the_callers_installations_only() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 200);
    let ids: Vec<i64> = r.body.as_array().unwrap().iter().map(|i| i["installationId"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![ALICE_INSTALLATION]);
    let r = sim.get("bob", "/installations").await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = sim.post("bob", "/installations", json!({"name": ""})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

/// Every one of the 50 routes, called once with a valid request, answers with the status of the
/// API document (201 creations, 202 commands and station PUT, 204 deletions and enable/disable,
/// 200 reads and accepting an invitation), and `/_sim/calls` counts exactly one call under each of
/// the 50 templates.
#[tokio::test]
async fn every_route_answers_with_its_documented_status_and_is_counted_once() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ivan = sim.account_id("ivan").await;
    let code = sim.mail().await[0]["activationCode"].as_str().expect("erin's seeded invitation").to_string();
    let device = sim.devices().await[0]["uid"].as_str().expect("a device in the pool").to_string();
    sim.reset_calls().await;

    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let gm = meter_path(ALICE_INSTALLATION, ALICE_METER);
    let bob_cs = station_path(BOB_INSTALLATION, BOB_STATION);
    let i = format!("/installations/{ALICE_INSTALLATION}");
    let day = range_body("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", Some("day"));
    let span = range_body("2025-03-01T00:00:00Z", "2025-03-08T00:00:00Z", None);

    hit(sim, "alice", 1, "/installations", None).await;
    let created = hit(
        sim,
        "alice",
        2,
        "/installations",
        Some(json!({"name": "Garage", "locationName": "Pessac", "locationGpsCoordinates": {"latitude": 44.8, "longitude": -0.63}})),
    )
    .await;
    let new_i = created.body["installationId"].as_i64().expect("installationId");
    hit(sim, "alice", 16, &format!("{i}/charging-stations"), None).await;
    hit(sim, "alice", 17, &cs, None).await;
    let associated = hit(
        sim,
        "alice",
        18,
        &format!("/installations/{new_i}/charging-stations"),
        Some(json!({"uid": device, "timezone": "Romance Standard Time", "country": "fr-fr"})),
    )
    .await;
    let new_cs = associated.body["id"].as_str().expect("id").to_string();
    hit(sim, "alice", 19, &station_path(new_i, &new_cs), None).await;
    hit(sim, "alice", 20, &format!("{cs}/operators/set-charge-mode"), Some(json!({"chargeMode": "deferred"}))).await;
    hit(sim, "bob", 21, &format!("{bob_cs}/operators/start"), None).await;
    hit(sim, "bob", 22, &format!("{bob_cs}/operators/stop"), None).await;
    hit(sim, "alice", 23, &cs, Some(json!({"friendlyName": "garage"}))).await;
    hit(sim, "alice", 24, &format!("{cs}/measures"), None).await;
    hit(sim, "alice", 25, &format!("{cs}/measures/1"), None).await;
    for (n, op) in [(26, "sum"), (27, "count"), (28, "average"), (29, "min-max")] {
        hit(sim, "alice", n, &format!("{cs}/measures/1/operators/{op}"), Some(day.clone())).await;
    }
    hit(sim, "alice", 30, &format!("{cs}/logs"), None).await;
    hit(sim, "alice", 31, &format!("{cs}/logs/1"), None).await;
    hit(sim, "alice", 32, &format!("{cs}/logs/1/operators/count"), Some(day.clone())).await;
    hit(sim, "alice", 33, &format!("{cs}/logs/1/operators/list"), Some(span.clone())).await;
    hit(sim, "alice", 34, &format!("{cs}/logs/operators/list"), Some(span.clone())).await;
    hit(sim, "alice", 35, &format!("{i}/grid-meters"), None).await;
    hit(sim, "alice", 36, &gm, None).await;
    hit(sim, "alice", 37, &format!("{gm}/operators/authorize-tic"), Some(json!({"authorizeTIC": true}))).await;
    hit(sim, "alice", 38, &format!("{gm}/measures"), None).await;
    hit(sim, "alice", 39, &format!("{gm}/measures/1"), None).await;
    for (n, op) in [(40, "sum"), (41, "count"), (42, "average"), (43, "min-max")] {
        hit(sim, "alice", n, &format!("{gm}/measures/2/operators/{op}"), Some(day.clone())).await;
    }
    hit(sim, "alice", 44, &format!("{gm}/logs"), None).await;
    hit(sim, "alice", 45, &format!("{gm}/logs/2"), None).await;
    hit(sim, "alice", 46, &format!("{gm}/logs/1/operators/count"), Some(day.clone())).await;
    hit(sim, "alice", 47, &format!("{gm}/logs/1/operators/list"), Some(span.clone())).await;
    hit(sim, "alice", 48, &format!("{gm}/tariffs"), None).await;
    hit(sim, "alice", 49, &format!("{gm}/tariffs/hc"), None).await;
    hit(
        sim,
        "alice",
        50,
        &format!("{gm}/tariffs"),
        Some(json!([{"id": "hc", "currency": "eur", "value": 0.2}, {"id": "hp", "currency": "eur", "value": 0.3}])),
    )
    .await;
    hit(sim, "alice", 3, &format!("{i}/event-subscriptions"), None).await;
    let sub = hit(
        sim,
        "alice",
        5,
        &format!("{i}/event-subscriptions"),
        Some(json!({"protocolCode": "Webhook", "protocolData": "http://127.0.0.1:9/hook"})),
    )
    .await;
    let sub_id = sub.body["eventSubscriptionId"].as_str().expect("eventSubscriptionId").to_string();
    hit(sim, "alice", 4, &format!("{i}/event-subscriptions/{sub_id}"), None).await;
    hit(sim, "alice", 7, &format!("{i}/event-subscriptions/{sub_id}"), None).await;
    hit(sim, "alice", 6, &format!("{i}/event-subscriptions"), None).await;
    hit(
        sim,
        "alice",
        8,
        &format!("{i}/invitations"),
        Some(json!({"email": "new.installer@example.com", "cultureCode": "fr-FR"})),
    )
    .await;
    hit(sim, "alice", 9, &format!("{i}/invitations"), None).await;
    hit(sim, "alice", 10, &format!("{i}/invitations/new.installer@example.com"), None).await;
    hit(sim, "erin", 11, &format!("/invitations/operators/accept/{code}"), None).await;
    hit(sim, "alice", 12, &format!("{i}/users"), None).await;
    hit(sim, "alice", 13, &format!("{i}/users/{ivan}/operators/disable"), None).await;
    hit(sim, "alice", 14, &format!("{i}/users/{ivan}/operators/enable"), None).await;
    hit(sim, "alice", 15, &format!("{i}/users/{ivan}"), None).await;

    let calls = sim.calls().await;
    let expected: BTreeSet<String> = (1..=50).map(route_key).collect();
    let by_route = calls["byRoute"].as_object().expect("byRoute is an object");
    let counted: BTreeSet<String> = by_route.keys().cloned().collect();
    assert_eq!(counted, expected, "byRoute keys are the 50 route templates");
    for (key, n) in by_route {
        assert_eq!(n, 1, "{key} was called once");
    }
    assert_eq!(calls["total"], 50, "{calls}");
}

#[tokio::test]
async fn openapi_describes_the_50_routes_with_their_statuses() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.control(Method::GET, "/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "an OpenAPI 3 document: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let key = format!("{} {path}", method.to_uppercase());
            let (_, _, status) = ROUTES
                .iter()
                .find(|(m, t, _)| format!("{m} {t}") == key)
                .unwrap_or_else(|| panic!("{key} is not a route of ROUTES.md"));
            assert!(op["responses"].get(status.to_string()).is_some(), "{key} documents its {status} answer: {op}");
            assert!(operations.insert(key));
        }
    }
    assert_eq!(operations.len(), 50, "50 operations: {operations:?}");
    let expected: BTreeSet<String> = (1..=50).map(route_key).collect();
    assert_eq!(operations, expected);
    for schema in ["ErrorBody", "InstallationModel", "EventSubscriptionModel", "TariffModel", "GridEvent"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "schema {schema} is described");
    }
}

#[test]
fn templates_match_only_their_instances() {
    assert!(matches_template("/installations/{i}/users", "/installations/33/users"));
    assert!(!matches_template("/installations/{i}/users", "/installations//users"));
    assert!(!matches_template("/installations/{i}/users", "/installations/33/users/x"));
    assert!(!matches_template("/installations/{i}/logs/{l}", "/installations/33/logs/operators/list"));
}
