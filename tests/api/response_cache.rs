//! The response cache: a query asked again is answered with the answer kept from the first time,
//! and only while everything that answer read is still current. Each test first shows that the
//! repeated query was a hit (the counter moves, nothing goes upstream, and a change made behind
//! witty-bff's back is not seen yet), then that the invalidation it is about makes the next
//! answer fresh.

use reqwest::header;
use serde_json::{Value, json};

use crate::helpers::*;

const HIT: &str = r#"witty_bff_response_cache_total{outcome="hit"}"#;
const KEPT: &str = r#"witty_bff_response_cache_total{outcome="kept"}"#;

const MODE: &str = r#"query($i: ID!, $cs: ID!) { installation(id: $i) { chargingStation(id: $cs) {
    id chargeMode friendlyName fetchedAt } } }"#;

/// Runs `query` as `sub`, and says whether it was answered from a kept answer.
async fn ask(app: &TestBff, sub: &str, query: &str, variables: Value) -> (Value, bool) {
    let hits = app.metric(HIT).await;
    let r = app.graphql(sub, query, variables).await;
    (r, app.metric(HIT).await > hits)
}

/// The variables of `SET_MODE` putting Alice's station in DEFERRED and waiting for it to show.
fn deferred() -> Value {
    let mut set = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    set["mode"] = json!("DEFERRED");
    set["wait"] = json!(true);
    set
}

/// Alice's station put in DEFERRED through witty-bff, seen applied.
async fn set_deferred(app: &TestBff) {
    let r = app.graphql("alice", SET_MODE, deferred()).await;
    assert_eq!(status(&r, "setChargeMode"), "APPLIED", "{r:#}");
}

/// Alice disables Ivan, her installer, through witty-bff.
async fn disable_ivan(app: &TestApp) {
    let ivan = app.sim().account_id("ivan").await;
    let m = "mutation($a: ID!) { disableInstaller(installationId: 33, accountId: $a) }";
    assert_eq!(data(&app.graphql("alice", m, json!({"a": ivan})).await)["disableInstaller"], true);
}

fn station_of(r: &Value) -> &Value {
    &data(r)["installation"]["chargingStation"]
}

#[tokio::test]
async fn a_repeated_query_is_a_hit_that_sends_nothing_and_keeps_its_fetched_at() {
    let app = spawn_app().await;
    let vars = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    let (first, hit) = ask(&app, "alice", MODE, vars.clone()).await;
    assert!(!hit);
    assert_eq!(app.metric(KEPT).await, 1.0);
    app.sim().reset_calls().await;
    let (second, hit) = ask(&app, "alice", MODE, vars.clone()).await;
    assert!(hit, "the second ask is answered from the kept answer");
    assert_eq!(second, first, "the same answer, its fetchedAt included: {second:#}");
    assert_eq!(app.sim().total_calls().await, 0);
    // Other variables are another answer.
    let (other, hit) = ask(&app, "bob", MODE, vars_station(BOB_INSTALLATION, BOB_STATION)).await;
    assert!(!hit);
    assert_eq!(station_of(&other)["id"], BOB_STATION);
}

#[tokio::test]
async fn a_mutation_makes_the_next_answer_fresh() {
    let app = spawn_app().await;
    let vars = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    let (first, _) = ask(&app, "alice", MODE, vars.clone()).await;
    assert_eq!(station_of(&first)["chargeMode"], "IMMEDIATE");
    let (_, hit) = ask(&app, "alice", MODE, vars.clone()).await;
    assert!(hit);
    set_deferred(&app).await;
    let (after, hit) = ask(&app, "alice", MODE, vars).await;
    assert!(!hit, "the mutation dropped the kept answer");
    assert_eq!(station_of(&after)["chargeMode"], "DEFERRED", "{after:#}");
}

#[tokio::test]
async fn a_webhook_event_makes_the_next_answer_fresh() {
    let app = spawn_app().await;
    let vars = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    ask(&app, "alice", MODE, vars.clone()).await;
    // Renamed upstream behind witty-bff's back: the kept answer still stands (no event yet).
    app.sim().set_station_properties(ALICE_STATION, json!({"friendlyName": "renamed by the app"})).await;
    let (kept, hit) = ask(&app, "alice", MODE, vars.clone()).await;
    assert!(hit);
    assert_eq!(station_of(&kept)["friendlyName"], "my garage charging station");
    let event = grid_event("rc-1", "Hager.WittyHome.ChargingStationUpdated", "2026-12-07T10:00:00Z", true, json!({}));
    assert_eq!(app.deliver(&app.webhook_of(ALICE_INSTALLATION), json!([event])).await, 200);
    let after = eventually("the event to make the answer fresh", || async {
        let r = app.graphql("alice", MODE, vars.clone()).await;
        (station_of(&r)["friendlyName"] == "renamed by the app").then_some(r)
    })
    .await;
    assert_ne!(station_of(&after)["fetchedAt"], station_of(&kept)["fetchedAt"]);
}

#[tokio::test]
async fn an_answer_is_kept_no_longer_than_the_shortest_ttl_it_read() {
    let app = spawn_app_with(|c| c.cache_state_ttl_secs = 1).await;
    let vars = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    ask(&app, "alice", MODE, vars.clone()).await;
    app.sim().set_station_properties(ALICE_STATION, json!({"friendlyName": "renamed by the app"})).await;
    let (kept, hit) = ask(&app, "alice", MODE, vars.clone()).await;
    // A slow machine may have let the second pass already: then it was no hit, and fresh.
    if hit {
        assert_eq!(station_of(&kept)["friendlyName"], "my garage charging station");
    }
    let started = std::time::Instant::now();
    eventually("the station's TTL to run out", || async {
        let r = app.graphql("alice", MODE, vars.clone()).await;
        (station_of(&r)["friendlyName"] == "renamed by the app").then_some(())
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "within the 1 s TTL (and some slack)");
}

#[tokio::test]
async fn withdrawn_consent_drops_the_answers_holding_the_house_consumption() {
    let app = spawn_app().await;
    let q = format!(
        r#"{{ installation(id: 43) {{ gridMeter(id: "{BOB_CHALET_METER}") {{ authorizeTic
            measure(id: "1") {{ values(operator: SUM, from: "2025-01-05T00:00:00Z", to: "2025-01-06T00:00:00Z", step: DAY) {{ value }} }} }} }} }}"#
    );
    ask(&app, "bob", &q, json!({})).await;
    let (kept, hit) = ask(&app, "bob", &q, json!({})).await;
    assert!(hit);
    assert!(data(&kept)["installation"]["gridMeter"]["measure"]["values"][0]["value"].is_number());
    let m = r#"mutation($gm: ID!) { authorizeTic(installationId: 43, gridMeterId: $gm, authorize: false) { authorizeTic } }"#;
    let r = app.graphql("bob", m, json!({"gm": BOB_CHALET_METER})).await;
    assert_eq!(data(&r)["authorizeTic"]["authorizeTic"], "NO_CONSENT", "{r:#}");
    let (after, hit) = ask(&app, "bob", &q, json!({})).await;
    assert!(!hit);
    assert_eq!(after["data"]["installation"]["gridMeter"]["measure"]["values"], Value::Null, "{after:#}");
    assert_eq!(error_codes(&after), vec!["FORBIDDEN"]);
}

#[tokio::test]
async fn a_member_disabled_loses_the_answers_kept_for_him() {
    let app = spawn_app().await;
    let q = "{ installations { id name } }";
    ask(&app, "ivan", q, json!({})).await;
    let (kept, hit) = ask(&app, "ivan", q, json!({})).await;
    assert!(hit);
    assert!(kept.to_string().contains("\"33\""), "{kept}");
    disable_ivan(&app).await;
    let (after, hit) = ask(&app, "ivan", q, json!({})).await;
    assert!(!hit);
    assert!(!after.to_string().contains("\"33\""), "ivan no longer sees installation 33: {after}");
}

#[tokio::test]
async fn an_installer_never_gets_the_owners_costs_and_keeps_his_own_refusals() {
    let app = spawn_app().await;
    let q = format!(
        r#"{{ installation(id: 33) {{ name chargingStation(id: "{ALICE_STATION}") {{
            lastSession {{ totalSessionEnergy totalSessionCost }} }} }} }}"#
    );
    let (owner, _) = ask(&app, "alice", &q, json!({})).await;
    let (owner_again, hit) = ask(&app, "alice", &q, json!({})).await;
    assert!(hit && owner_again == owner);
    assert!(data(&owner)["installation"]["chargingStation"]["lastSession"]["totalSessionCost"].is_number());
    // The same document from the installer: executed for him, never the owner's answer; asked
    // again, his own (refusals included) is kept for him.
    let mut first = None;
    for expect_hit in [false, true] {
        let (installer, hit) = ask(&app, "ivan", &q, json!({})).await;
        assert_eq!(hit, expect_hit, "{installer:#}");
        let session = &installer["data"]["installation"]["chargingStation"]["lastSession"];
        assert!(session["totalSessionCost"].is_null() && session["totalSessionEnergy"].is_null(), "{installer:#}");
        assert!(!error_codes(&installer).is_empty(), "{installer:#}");
        assert!(error_codes(&installer).iter().all(|c| c == "FORBIDDEN"), "{installer:#}");
        assert_eq!(first.get_or_insert_with(|| installer.clone()), &installer);
    }
    // Disabled, he loses his kept answer with his membership.
    disable_ivan(&app).await;
    let (gone, hit) = ask(&app, "ivan", &q, json!({})).await;
    assert!(!hit && error_codes(&gone) == vec!["NOT_FOUND"], "{gone:#}");
}

#[tokio::test]
async fn two_callers_with_the_same_rights_still_get_answers_of_their_own() {
    let app = spawn_app().await;
    let name = "{ installation(id: 33) { name } }";
    ask(&app, "alice", name, json!({})).await;
    let (_, hit) = ask(&app, "ivan", name, json!({})).await;
    assert!(!hit, "Ivan's first ask is his own");
    let (_, hit) = ask(&app, "ivan", name, json!({})).await;
    assert!(hit);
}

/// GETs `query` as alice with `If-None-Match: tag` (if any).
async fn get(app: &TestBff, query: &str, tag: Option<&str>) -> reqwest::Response {
    let url = reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), [("query", query)]).unwrap();
    let mut req = app.client.get(url).bearer_auth(app.token_for("alice"));
    if let Some(tag) = tag {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn if_none_match_gets_304_only_while_the_answer_is_unchanged_and_never_on_post() {
    let app = spawn_app().await;
    let q = format!(r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ chargeMode }} }} }}"#);
    let first = get(&app, &q, None).await;
    assert_eq!(first.status(), 200);
    let tag = first.headers()[header::ETAG].to_str().unwrap().to_string();
    assert!(tag.starts_with("W/\"") && tag.ends_with('"'), "a weak entity tag: {tag}");
    assert_eq!(first.headers()[header::CACHE_CONTROL], "private, no-cache");
    let body = first.text().await.unwrap();
    assert!(body.contains("IMMEDIATE"), "{body}");

    let again = get(&app, &q, Some(&tag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), tag);
    assert!(again.bytes().await.unwrap().is_empty());
    // A list naming it, and its strong form, match too (RFC 9110's weak comparison); `*` alone
    // matches any; others do not.
    let strong = tag.trim_start_matches("W/");
    assert_eq!(get(&app, &q, Some(&format!(r#""other", {tag}"#))).await.status(), 304);
    assert_eq!(get(&app, &q, Some(strong)).await.status(), 304);
    assert_eq!(get(&app, &q, Some("*")).await.status(), 304);
    assert_eq!(get(&app, &q, Some(r#""other""#)).await.status(), 200);
    // HEAD: the same headers as GET, and the same 304.
    let url = reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), [("query", q.as_str())]).unwrap();
    let head = app.client.head(url.clone()).bearer_auth(app.token_for("alice")).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()[header::ETAG].to_str().unwrap()), (200, tag.as_str()));
    let head = app.client.head(url).bearer_auth(app.token_for("alice")).header(header::IF_NONE_MATCH, &tag);
    assert_eq!(head.send().await.unwrap().status(), 304);

    // A POST is never answered 304.
    let post = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token_for("alice"))
        .header(header::IF_NONE_MATCH, &tag)
        .json(&json!({"query": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert!(post.text().await.unwrap().contains("IMMEDIATE"));

    // Changed: the old tag gets the new answer, with a new tag.
    set_deferred(&app).await;
    let changed = get(&app, &q, Some(&tag)).await;
    assert_eq!(changed.status(), 200);
    let new_tag = changed.headers()[header::ETAG].to_str().unwrap().to_string();
    assert_ne!(new_tag, tag);
    assert!(changed.text().await.unwrap().contains("DEFERRED"));
    assert_eq!(get(&app, &q, Some(&new_tag)).await.status(), 304);
}

#[tokio::test]
async fn a_batch_answers_each_query_from_the_cache_and_sees_its_own_mutation() {
    let app = spawn_app().await;
    let vars = vars_station(ALICE_INSTALLATION, ALICE_STATION);
    let read = json!({"query": MODE, "variables": vars});
    let batch = json!([read, read, {"query": SET_MODE, "variables": deferred()}, read]);
    let hits = app.metric(HIT).await;
    let r = app.post_graphql(Some(&app.token_for("alice")), batch).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let answers = r.body.as_array().expect("an array of answers");
    assert_eq!(app.metric(HIT).await, hits + 1.0, "the second read was a hit, the last one was not");
    assert_eq!(answers[0], answers[1]);
    assert_eq!(station_of(&answers[1])["chargeMode"], "IMMEDIATE");
    assert_eq!(answers[2]["data"]["setChargeMode"]["status"], "APPLIED", "{:#}", answers[2]);
    assert_eq!(station_of(&answers[3])["chargeMode"], "DEFERRED", "{:#}", answers[3]);
}
