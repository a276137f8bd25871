//! Who may call what, route by route: another owner, an installer, an unknown or malformed
//! installation id, each tried on every route of the table with an otherwise valid request.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::simulator::{ROUTES, call_route};

/// The ids a route's template is filled with.
pub struct Ids<'a> {
    pub i: &'a str,
    pub cs: &'a str,
    pub gm: &'a str,
    pub account: &'a str,
}

/// Route `n` of ROUTES.md as a concrete path and a valid body.
pub fn concrete(n: usize, ids: &Ids) -> (String, Option<Value>) {
    let (method, template, _) = ROUTES[n - 1];
    let path = template
        .replace("{i}", ids.i)
        .replace("{cs}", ids.cs)
        .replace("{gm}", ids.gm)
        .replace("{m}", "1")
        .replace("{l}", "1")
        .replace("{t}", "hc")
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{email}", "someone@example.com")
        .replace("{accountId}", ids.account)
        .replace("{activationCode}", "NOSUCHCODE");
    let range = range_body("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", Some("day"));
    let body = match (method, template.rsplit('/').next().unwrap_or_default()) {
        ("POST", "installations") => Some(
            json!({"name": "Garage", "locationName": "Pessac", "locationGpsCoordinates": {"latitude": 44.8, "longitude": -0.6}}),
        ),
        ("POST", "event-subscriptions") => {
            Some(json!({"protocolCode": "Webhook", "protocolData": "http://127.0.0.1:9/hook"}))
        }
        ("POST", "invitations") => Some(json!({"email": "new.installer@example.com", "cultureCode": "fr-fr"})),
        ("POST", "charging-stations") => {
            Some(json!({"uid": "Fbo5WTTsSeeLQ8YYoLzNwN", "timezone": "Romance Standard Time", "country": "fr-fr"}))
        }
        ("POST", "set-charge-mode") => Some(json!({"chargeMode": "deferred"})),
        ("PUT", _) => Some(json!({"friendlyName": "garage"})),
        ("POST", "sum" | "count" | "average" | "min-max") => Some(range),
        ("POST", "list") => Some(range_body("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", None)),
        ("POST", "authorize-tic") => Some(json!({"authorizeTIC": true})),
        ("POST", "tariffs") => Some(json!([{"id": "hc", "value": 0.2}, {"id": "hp", "value": 0.3}])),
        _ => None,
    };
    (path, body)
}

fn alice_ids<'a>(i: &'a str, account: &'a str) -> Ids<'a> {
    Ids { i, cs: ALICE_STATION, gm: ALICE_METER, account }
}

/// The routes whose template names an installation.
fn installation_routes() -> impl Iterator<Item = usize> {
    (1..=50).filter(|n| ROUTES[n - 1].1.contains("{i}"))
}

#[tokio::test]
async fn another_owner_gets_404_on_every_route_of_an_installation_not_theirs() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ivan = sim.account_id("ivan").await;
    let ids = alice_ids("33", &ivan);
    let mut checked = 0;
    for n in installation_routes() {
        let (path, body) = concrete(n, &ids);
        let r = call_route(sim, "bob", n, &path, body).await;
        assert_eq!(r.status, 404, "bob on route {n} {path}: {:?}", r.body);
        assert!(r.message().contains("installation 33"), "route {n}: the message names the installation: {:?}", r.body);
        checked += 1;
    }
    assert_eq!(checked, 47, "every route but GET/POST /installations and accept names an installation");
    // Alice's own installation list is untouched by Bob's attempts, and his own does not show hers.
    let bobs = sim.get("bob", "/installations").await;
    assert!(bobs.body.as_array().unwrap().iter().all(|i| i["installationId"] != ALICE_INSTALLATION));
}

#[tokio::test]
async fn an_unknown_installation_is_404_on_every_route() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ivan = sim.account_id("ivan").await;
    let ids = alice_ids("999999", &ivan);
    for n in installation_routes() {
        let (path, body) = concrete(n, &ids);
        let r = call_route(sim, "alice", n, &path, body).await;
        assert_eq!(r.status, 404, "route {n} {path}: {:?}", r.body);
        assert!(r.message().contains("999999"), "route {n}: the message names the id: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_non_numeric_installation_id_is_400_naming_it_on_every_route() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ivan = sim.account_id("ivan").await;
    for bad in ["abc", "33x", "3.3", "99999999999999999999999"] {
        let ids = alice_ids(bad, &ivan);
        for n in installation_routes() {
            let (path, body) = concrete(n, &ids);
            let r = call_route(sim, "alice", n, &path, body).await;
            assert_eq!(r.status, 400, "route {n} {path}: {:?}", r.body);
            assert!(r.message().contains("installationId"), "route {n}: {:?}", r.body);
            assert!(r.message().contains(bad), "route {n}: the message quotes the value: {:?}", r.body);
        }
    }
    // Nothing above hurt the simulator.
    assert_eq!(sim.get("alice", "/installations").await.status, 200);
}

/// The installer of an installation sees general data only: no commands, no costs or
/// consumptions (measure operators, tariffs), no sharing management (API document, "Sharing your
/// installation with your installer").
#[tokio::test]
async fn an_installer_reads_general_data_but_gets_403_on_commands_costs_and_sharing() {
    let app = spawn_app().await;
    let sim = app.sim();
    let ivan = sim.account_id("ivan").await;
    let ids = alice_ids("33", &ivan);
    let forbidden = [2, 8, 9, 10, 13, 14, 15, 18, 19, 20, 21, 22, 23, 26, 27, 28, 29, 37, 40, 41, 42, 43, 48, 49, 50];
    // Routes 4 and 7 name an event subscription that does not exist, 11 an unknown code.
    let not_found = [4, 7, 11];
    for n in 1..=50 {
        let (path, body) = concrete(n, &ids);
        let r = call_route(sim, "ivan", n, &path, body).await;
        let expected = if forbidden.contains(&n) {
            403
        } else if not_found.contains(&n) {
            404
        } else {
            ROUTES[n - 1].2
        };
        assert_eq!(r.status.as_u16(), expected, "ivan on route {n} {path}: {:?}", r.body);
        if expected == 403 {
            assert!(r.message().contains("installer"), "route {n}: the message says why: {:?}", r.body);
            assert_eq!(r.body["statusCode"], 403);
        }
    }
    // Nothing changed on Alice's station: the commands were refused, not queued.
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(st["properties"]["friendlyName"], "my garage charging station");
    assert_eq!(st["properties"]["chargeMode"], "immediate");
}
