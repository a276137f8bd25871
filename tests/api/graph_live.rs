//! Live subscriptions: upstream webhooks (and the polling fallback) to GraphQL subscriptions over
//! WebSocket (both protocols) and Server-Sent Events.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn a_plugged_car_reaches_both_websocket_protocols_and_sse() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut modern = app.watch_events(&token).await;
    let mut legacy = app.subscribe("graphql-ws", &token, "1", EVENTS).await;
    let sse = app.sse(&token, EVENTS).await;
    assert!(sse.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    app.live_subscriptions(3).await;
    let hook = app.validated_webhook().await;
    assert!(hook["protocolData"].as_str().unwrap().starts_with(&app.base), "{hook}");

    let r = app.sim().plug(ALICE_STATION).await;
    assert_eq!(r.status, 200);
    for (name, ws) in [("graphql-transport-ws", &mut modern), ("graphql-ws", &mut legacy)] {
        let e = ws_data(ws).await;
        let e = &e["data"]["stationEvents"];
        assert_eq!(e["type"], "CABLE_PLUGGED", "{name}: {e}");
        assert_eq!(e["rawType"], "Hager.WittyHome.CablePlugged");
        assert_eq!(e["installationId"], "33");
        assert_eq!(e["chargingStationId"], ALICE_STATION);
        // Alice's station is in immediate mode: charging starts with the plug.
        let e = ws_data(ws).await;
        assert_eq!(e["data"]["stationEvents"]["type"], "SESSION_STARTED", "{name}");
    }
    let mut sse = sse;
    let mut text = String::new();
    let got = timeout(PATIENCE, async {
        while !text.contains("SESSION_STARTED") {
            let chunk = sse.chunk().await.expect("readable").expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(got.is_ok(), "SSE got: {text}");
    assert!(text.contains("event: next") && text.contains("CABLE_PLUGGED"), "{text}");
}

#[tokio::test]
async fn charging_station_updated_shows_the_new_state_and_queries_are_fresh() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    // Fill the cache with the station unplugged.
    let q = format!(
        r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ availability carPlugStatus }} }} }}"#
    );
    let before = app.graphql("alice", &q, json!({})).await;
    assert_eq!(data(&before)["installation"]["chargingStation"]["availability"], "AVAILABLE");
    let sub = format!(
        r#"subscription {{ chargingStationUpdated(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ id availability carPlugStatus currentSession {{ startDate totalSessionEnergy }} }} }}"#
    );
    let mut ws = app.subscribe("graphql-transport-ws", &token, "s", &sub).await;
    app.validated_webhook().await;
    app.sim().plug(ALICE_STATION).await;
    let update = ws_data(&mut ws).await;
    let s = &update["data"]["chargingStationUpdated"];
    assert_eq!(s["availability"], "OCCUPIED", "{update}");
    assert_eq!(s["carPlugStatus"], "MODE_3");
    assert!(s["currentSession"]["startDate"].is_string());
    // The query right after the event is not served from the stale entry.
    let after = app.graphql("alice", &q, json!({})).await;
    assert_eq!(data(&after)["installation"]["chargingStation"]["availability"], "OCCUPIED");
}

#[tokio::test]
async fn a_duplicated_delivery_produces_one_event_and_a_wrong_secret_is_refused() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut ws = app.watch_events(&token).await;
    let url = app.webhook_url().await;
    let event = |id: &str, kind: &str| {
        let data = json!({"installationId": 33, "chargingStationId": ALICE_STATION});
        json!([grid_event(id, kind, "2026-01-01T10:00:00Z", true, data)])
    };
    // A wrong secret: refused, and nothing is published.
    let wrong = url.rsplit_once('/').unwrap().0.to_string() + "/not-the-secret";
    assert_eq!(app.deliver(&wrong, event("e-wrong", "Hager.WittyHome.LoadShedding")).await, 404);
    // Malformed bodies and kinds: 400.
    let r = app.client.post(&url).header("aeg-event-type", "Notification").body("{oops").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = app.client.post(&url).header("aeg-event-type", "Gossip").json(&event("x", "y")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The same event twice, then another: the subscriber sees the first once, then the second.
    assert_eq!(app.deliver(&url, event("e-1", "Hager.WittyHome.Error")).await, 200);
    assert_eq!(app.deliver(&url, event("e-1", "Hager.WittyHome.Error")).await, 200);
    assert_eq!(app.deliver(&url, event("e-2", "Hager.WittyHome.SomethingNew")).await, 200);
    let first = ws_data(&mut ws).await;
    assert_eq!(first["data"]["stationEvents"]["id"], "e-1");
    assert_eq!(first["data"]["stationEvents"]["type"], "ERROR");
    let second = ws_data(&mut ws).await;
    assert_eq!(second["data"]["stationEvents"]["id"], "e-2", "the duplicate of e-1 was dropped");
    assert_eq!(second["data"]["stationEvents"]["type"], "UNKNOWN");
    assert_eq!(second["data"]["stationEvents"]["rawType"], "Hager.WittyHome.SomethingNew");
}

#[tokio::test]
async fn watching_someone_elses_installation_or_with_a_bad_token_is_refused() {
    let app = spawn_app().await;
    let bob = app.token_for("bob");
    let mut ws = app.watch_events(&bob).await;
    // Refused at once with NOT_FOUND (as a `next` carrying only the error), then completed.
    let v = ws_next(&mut ws).await;
    let errors = if v["type"] == "error" { v["payload"].clone() } else { v["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{v}");
    assert!(v["payload"]["data"].is_null(), "{v}");
    assert_eq!(ws_next(&mut ws).await["type"], "complete");

    // A bad token: the connection is closed with 4403.
    let mut ws = app.ws_connect("graphql-transport-ws", "not-a-token").await;
    let closed = timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(4403));
    // The legacy protocol hears connection_error, then the close.
    let mut ws = app.ws_connect("graphql-ws", "not-a-token").await;
    let v = ws_next(&mut ws).await;
    assert_eq!(v["type"], "connection_error", "{v}");
}

#[tokio::test]
async fn with_webhooks_off_polling_delivers_the_same_event() {
    let app = spawn_app_with(polling).await;
    let token = app.token_for("alice");
    let mut ws = app.watch_events(&token).await;
    // The poller's first read is the baseline.
    eventually("the poller's first read", || async {
        (app.sim().calls_to("GET /installations/{i}/charging-stations").await >= 1).then_some(())
    })
    .await;
    app.sim().plug(ALICE_STATION).await;
    let e = ws_data(&mut ws).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{e}");
    assert_eq!(e["data"]["stationEvents"]["chargingStationId"], ALICE_STATION);
    // No webhook was registered upstream.
    let subs = app.sim().get("alice", "/installations/33/event-subscriptions").await.body;
    assert_eq!(subs, json!([]));
}

#[tokio::test]
async fn with_webhooks_off_polling_reports_a_settings_change() {
    let app = spawn_app_with(polling).await;
    let mut ws = app.watch_events(&app.token_for("alice")).await;
    eventually("the poller's first read", || async {
        (app.sim().calls_to("GET /installations/{i}/charging-stations").await >= 1).then_some(())
    })
    .await;
    // Renamed with another app, straight upstream.
    let path = format!("/installations/33/charging-stations/{ALICE_STATION}");
    let r = app.sim().put("alice", &path, json!({"friendlyName": "Garage nord"})).await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let e = ws_data(&mut ws).await;
    let event = &e["data"]["stationEvents"];
    assert_eq!(
        (event["type"].as_str(), event["rawType"].as_str()),
        (Some("UNKNOWN"), Some("witty-bff.polled.SettingsUpdated")),
        "{e}"
    );
    assert_eq!(event["chargingStationId"], ALICE_STATION);
}

#[tokio::test]
async fn one_upstream_subscription_while_watched_removed_after_the_grace_and_others_untouched() {
    let app = spawn_app_with(|c| c.watch_grace_secs = 0).await;
    // A webhook of Alice's own, not witty-bff's.
    let r = app
        .sim()
        .post(
            "alice",
            "/installations/33/event-subscriptions",
            json!({"protocolCode": "Webhook", "protocolData": "http://127.0.0.1:9/alices-own"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let token = app.token_for("alice");
    let a = app.watch_events(&token).await;
    let b = app.subscribe("graphql-ws", &token, "1", EVENTS).await;
    app.live_subscriptions(2).await;
    app.validated_webhook().await;
    assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1, "one for both watchers");
    // Both watchers leave: after the grace (0 s here) witty-bff's subscription goes, Alice's stays.
    drop(a);
    drop(b);
    eventually("witty-bff's subscription to be removed", || async {
        app.sim().bff_hooks("alice", 33).await.is_empty().then_some(())
    })
    .await;
    let all = app.sim().get("alice", "/installations/33/event-subscriptions").await.body;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["protocolData"], "http://127.0.0.1:9/alices-own");
}

/// An app that honours token expiry to the second, and `sub` watching installation 33 on it with
/// a token that expires 2 to 3 s from now (`exp` is in whole seconds).
async fn watching_with_a_short_token(sub: &str) -> (TestApp, Ws) {
    let app = spawn_app_with(|c| {
        c.jwt_leeway_secs = 0;
        // Longer than the second `exp` may be off by: a removal after the grace comes after the expiry.
        c.watch_grace_secs = 2;
    })
    .await;
    let short = witty_bff::mint_dev_token(JWT_SECRET, sub, 3, None, None);
    let ws = app.watch_events(&short).await;
    (app, ws)
}

/// Waits until `n` upstream subscriptions of ours wait to be removed (none is being tried).
async fn unremoved(app: &TestApp, n: f64, what: &str) {
    eventually(what, || async { (app.metric("witty_bff_unremoved_upstream_subscriptions").await == n).then_some(()) })
        .await;
}

/// An app whose only watcher, Alice, left when her token expired: after the grace, the removal of
/// witty-bff's upstream subscription cannot be made (only Alice may remove hers upstream, and her
/// token has expired), so it waits for her next token. Returns the app and that subscription.
async fn left_with_an_expired_token() -> (TestApp, Value) {
    let (app, mut ws) = watching_with_a_short_token("alice").await;
    let hook = app.validated_webhook().await;
    ws_ended_with(&mut ws, "UNAUTHENTICATED").await;
    unremoved(&app, 1.0, "the removal to wait for a fresh token").await;
    assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1, "still there");
    (app, hook)
}

#[tokio::test]
async fn a_subscription_left_with_an_expired_token_is_removed_with_the_users_next_token() {
    let (app, _) = left_with_an_expired_token().await;
    // Alice comes back with a fresh token, for a plain query: it serves the removal.
    let r = app.graphql("alice", "{ installations { id } }", json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    eventually("witty-bff's subscription to be removed", || async {
        app.sim().bff_hooks("alice", 33).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(app.metric("witty_bff_unremoved_upstream_subscriptions").await, 0.0);
    // A later watch by Alice registers afresh, and events flow.
    let mut again = app.watch_events(&app.token_for("alice")).await;
    app.validated_webhook().await;
    assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1);
    app.sim().plug(ALICE_STATION).await;
    assert_eq!(ws_data(&mut again).await["data"]["stationEvents"]["type"], "CABLE_PLUGGED");
}

#[tokio::test]
async fn a_removal_that_fails_with_the_users_fresh_token_is_tried_again_with_it_without_another_request() {
    let (app, _) = left_with_an_expired_token().await;
    const DELETE: &str = "DELETE /installations/{i}/event-subscriptions/{id}";
    let f = app.sim().set_faults(json!({"errorRate": 1.0, "errorStatus": 503, "routes": [DELETE]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    // Alice's one request: a grace later, its removal fails upstream.
    let r = app.graphql("alice", "{ installations { id } }", json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    eventually("the first try", || async { (app.sim().calls_to(DELETE).await == 1).then_some(()) }).await;
    unremoved(&app, 1.0, "the failed try to be kept").await;
    assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1, "still there");
    // The upstream recovers; with no request from Alice, the removal is tried again with her token.
    app.sim().clear_faults().await;
    eventually("witty-bff's subscription to be removed", || async {
        app.sim().bff_hooks("alice", 33).await.is_empty().then_some(())
    })
    .await;
    unremoved(&app, 0.0, "the removal to be settled").await;
    assert_eq!(app.sim().calls_to(DELETE).await, 2, "one failed try, one that removed it");
}

#[tokio::test]
async fn a_user_coming_back_after_their_token_expired_adopts_the_subscription_left_behind() {
    let (app, left) = left_with_an_expired_token().await;
    // Alice subscribes again with a fresh token: the subscription left behind is adopted (it is
    // validated already, so events flow at once), not removed and made anew.
    let mut again = app.watch_events(&app.token_for("alice")).await;
    app.live_subscriptions(1).await;
    app.sim().plug(ALICE_STATION).await;
    assert_eq!(ws_data(&mut again).await["data"]["stationEvents"]["type"], "CABLE_PLUGGED");
    // A grace after her token came, the removal looks again, finds it adopted, and keeps it.
    unremoved(&app, 0.0, "the removal to be settled").await;
    let calls = app.sim().calls_by_route().await;
    assert!(!calls.contains_key("DELETE /installations/{i}/event-subscriptions/{id}"), "{calls:#?}");
    let hooks = app.sim().bff_hooks("alice", 33).await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["eventSubscriptionId"], left["eventSubscriptionId"], "the same one");
    // And it goes on delivering (a session may have started in between).
    app.sim().unplug(ALICE_STATION).await;
    while ws_data(&mut again).await["data"]["stationEvents"]["type"] != "CABLE_UNPLUGGED" {}
}

#[tokio::test]
async fn a_sole_watcher_removed_through_witty_bff_is_told_at_once_without_waiting_for_an_event() {
    for (mutation, transport) in [("disableInstaller", "websocket"), ("removeInstallationUser", "sse")] {
        let app = spawn_app().await;
        // Ivan (installer on 33) is the only watcher, so events come by his token, if at all.
        let ivan = app.token_for("ivan");
        let mut ws = None;
        let mut sse = None;
        if transport == "websocket" {
            ws = Some(app.watch_events(&ivan).await);
        } else {
            sse = Some(app.sse(&ivan, EVENTS).await);
        }
        app.live_subscriptions(1).await;
        let m = format!(r#"mutation {{ {mutation}(installationId: 33, accountId: "ivan") }}"#);
        let r = app.graphql("alice", &m, json!({})).await;
        assert_eq!(data(&r)[mutation], true, "{r}");
        // No event is delivered: the error comes from the removal itself.
        let message = match (ws.as_mut(), sse) {
            (Some(ws), _) => ws_ended_with(ws, "FORBIDDEN").await,
            (None, Some(sse)) => {
                let events = sse_until_complete(sse).await;
                assert_eq!(only_error(&events[0].1)["extensions"]["code"], "FORBIDDEN", "{events:?}");
                only_error(&events[0].1)["message"].as_str().unwrap().to_string()
            }
            (None, None) => unreachable!(),
        };
        assert!(message.contains("no longer have access to installation 33"), "{mutation}: {message}");
        app.live_subscriptions(0).await;
    }
    // A watcher of another installation is not disturbed by a change of 33's members.
    let app = spawn_app().await;
    let mut bob = app.subscribe_as("bob", "subscription { stationEvents(installationId: 42) { type } }").await;
    app.live_subscriptions(1).await;
    eventually("Bob's subscription to be validated", || async {
        app.sim().bff_hooks("bob", 42).await.iter().any(|h| h["state"] == "Created").then_some(())
    })
    .await;
    let r = app
        .graphql("alice", r#"mutation { disableInstaller(installationId: 33, accountId: "ivan") }"#, json!({}))
        .await;
    assert_eq!(data(&r)["disableInstaller"], true, "{r}");
    // (A car is plugged into Bob's station in the seeded world.)
    let unplugged = app.sim().unplug(BOB_STATION).await;
    assert_eq!(unplugged.status, 200, "{:?}", unplugged.body);
    let mut kinds = Vec::new();
    while !kinds.contains(&"CABLE_UNPLUGGED".to_string()) {
        kinds.push(ws_data(&mut bob).await["data"]["stationEvents"]["type"].as_str().unwrap().to_string());
    }
}

#[tokio::test]
async fn a_removal_the_upstream_refuses_for_good_is_given_up_not_retried_at_every_request() {
    let app = spawn_app_with(|c| c.watch_grace_secs = 1).await;
    // Ivan (installer on 33) is the only watcher, so the subscription is his.
    let ivan = app.watch_events(&app.token_for("ivan")).await;
    eventually("Ivan's subscription", || async { (app.sim().bff_hooks("ivan", 33).await.len() == 1).then_some(()) })
        .await;
    // Alice disables him, then he leaves: after the grace, the upstream refuses his removal (403).
    let r = app
        .graphql("alice", r#"mutation { disableInstaller(installationId: 33, accountId: "ivan") }"#, json!({}))
        .await;
    assert_eq!(data(&r)["disableInstaller"], true, "{r}");
    drop(ivan);
    eventually("the removal to be given up", || async {
        (app.metric("witty_bff_abandoned_upstream_subscriptions_total").await == 1.0).then_some(())
    })
    .await;
    // One try, and nothing kept to try again with his next requests.
    let calls = app.sim().calls_by_route().await;
    assert_eq!(calls.get("DELETE /installations/{i}/event-subscriptions/{id}"), Some(&1), "{calls:#?}");
    assert_eq!(app.metric("witty_bff_unremoved_upstream_subscriptions").await, 0.0);
}

#[tokio::test]
async fn an_installers_replaced_subscription_left_with_an_expired_token_goes_while_the_owner_watches() {
    // Ivan (installer) watches first, with a token that expires 2 to 3 s from now.
    let (app, mut ivan) = watching_with_a_short_token("ivan").await;
    eventually("Ivan's subscription", || async { (app.sim().bff_hooks("ivan", 33).await.len() == 1).then_some(()) })
        .await;
    ws_ended_with(&mut ivan, "UNAUTHENTICATED").await;
    // Alice (owner) comes within the grace: hers replaces his, whose removal waits for his next token.
    let mut alice = app.watch_events(&app.token_for("alice")).await;
    app.validated_webhook().await;
    unremoved(&app, 1.0, "the removal to wait for Ivan's next token").await;
    assert_eq!(app.sim().bff_hooks("ivan", 33).await.len(), 1, "still there");
    // Ivan's next request removes it, while Alice's goes on serving her.
    app.graphql("ivan", "{ installations { id } }", json!({})).await;
    eventually("Ivan's subscription to be removed", || async {
        app.sim().bff_hooks("ivan", 33).await.is_empty().then_some(())
    })
    .await;
    unremoved(&app, 0.0, "the removal to be settled").await;
    assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1);
    app.sim().plug(ALICE_STATION).await;
    assert_eq!(ws_data(&mut alice).await["data"]["stationEvents"]["type"], "CABLE_PLUGGED");
}

#[tokio::test]
async fn a_restarted_bff_adopts_its_upstream_subscription_instead_of_adding_one() {
    let first = spawn_app().await;
    let token = first.token_for("alice");
    let ws = first.watch_events(&token).await;
    let registered = first.validated_webhook().await;
    // The first process goes without cleaning up (a crash or a deploy; its grace period is long).
    // One address for both processes: the webhook URL registered by the first stays right.
    drop(ws);
    let second = first.restart().await;
    let mut ws = second.watch_events(&token).await;
    second.live_subscriptions(1).await;
    // The restarted process hears events through the subscription it finds upstream.
    let r = second
        .sim()
        .control(reqwest::Method::POST, &format!("/_sim/stations/{ALICE_STATION}/load-shedding"), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = ws_data(&mut ws).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "LOAD_SHEDDING", "{e}");
    let hooks = second.sim().bff_hooks("alice", 33).await;
    assert_eq!(hooks.len(), 1, "adopted, not duplicated: {hooks:?}");
    assert_eq!(hooks[0]["eventSubscriptionId"], registered["eventSubscriptionId"]);
}

#[tokio::test]
async fn many_watchers_of_a_station_cost_one_upstream_read_per_event() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let sub = format!(
        r#"subscription {{ chargingStationUpdated(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ id availability }} }}"#
    );
    let mut watchers = Vec::new();
    for _ in 0..5 {
        let ws = app.subscribe("graphql-transport-ws", &token, "u", &sub).await;
        watchers.push(ws);
    }
    app.live_subscriptions(5).await;
    app.validated_webhook().await;
    app.sim().reset_calls().await;
    let r =
        app.sim().control(reqwest::Method::POST, &format!("/_sim/stations/{ALICE_STATION}/load-shedding"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for ws in &mut watchers {
        let update = ws_data(ws).await;
        assert_eq!(update["data"]["chargingStationUpdated"]["id"], ALICE_STATION, "{update}");
    }
    let calls = app.sim().calls_by_route().await;
    assert_eq!(
        calls.get("GET /installations/{i}/charging-stations/{cs}"),
        Some(&1),
        "one read for five watchers: {calls:#?}"
    );
}

#[tokio::test]
async fn an_event_of_the_whole_installation_reaches_station_watchers_with_fresh_state() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let one_station = format!(
        r#"subscription {{ stationEvents(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ id type chargingStationId }} }}"#
    );
    let mut events = app.subscribe("graphql-transport-ws", &token, "e", &one_station).await;
    let all_stations = "subscription { chargingStationUpdated(installationId: 33) { id availability } }";
    let mut updates = app.subscribe("graphql-transport-ws", &token, "u", all_stations).await;
    app.live_subscriptions(2).await;
    let url = app.webhook_url().await;
    // The station is cached as available.
    let q = format!(r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ availability }} }} }}"#);
    let before = app.graphql("alice", &q, json!({})).await;
    assert_eq!(data(&before)["installation"]["chargingStation"]["availability"], "AVAILABLE");
    // Something changed upstream that the next read shows; the event names no station.
    app.sim().set_station_properties(ALICE_STATION, json!({"availability": "UNAVAILABLE"})).await;
    let whole = grid_event(
        "whole-1",
        "Hager.WittyHome.LoadShedding",
        "2026-01-01T10:00:00Z",
        false,
        json!({"installationId": 33}),
    );
    assert_eq!(app.deliver(&url, json!([whole])).await, 200);
    let e = ws_data(&mut events).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "LOAD_SHEDDING", "{e}");
    assert!(e["data"]["stationEvents"]["chargingStationId"].is_null(), "{e}");
    let u = ws_data(&mut updates).await;
    assert_eq!(u["data"]["chargingStationUpdated"]["id"], ALICE_STATION, "{u}");
    assert_eq!(u["data"]["chargingStationUpdated"]["availability"], "UNAVAILABLE", "{u}");
    let after = app.graphql("alice", &q, json!({})).await;
    assert_eq!(data(&after)["installation"]["chargingStation"]["availability"], "UNAVAILABLE");
}

#[tokio::test]
async fn metrics_count_live_subscriptions_deliveries_duplicates_and_upstream_calls() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let ws = app.watch_events(&token).await;
    app.live_subscriptions(1).await;
    let url = app.webhook_url().await;
    assert_eq!(app.metric("witty_bff_watched_installations").await, 1.0);
    assert_eq!(app.metric(r#"witty_bff_webhook_deliveries_total{kind="SubscriptionValidation"}"#).await, 1.0);
    let event = grid_event("m-1", "Hager.WittyHome.Error", "2026-01-01T10:00:00Z", true, json!({"installationId": 33}));
    for _ in 0..2 {
        assert_eq!(app.deliver(&url, json!([event])).await, 200);
    }
    eventually("the duplicate to be counted", || async {
        (app.metric(r#"witty_bff_events_total{outcome="duplicate"}"#).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(app.metric(r#"witty_bff_events_total{outcome="published"}"#).await, 1.0);
    assert!(app.metric(r#"witty_bff_upstream_calls_total{kind="read",outcome="ok"}"#).await >= 1.0);
    let r = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    // The subscriber leaves: the gauge goes back to zero.
    drop(ws);
    app.live_subscriptions(0).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_with_a_notice_and_slows_nobody() {
    let app = spawn_app_with(|c| c.live_buffer_events = 16).await;
    let token = app.token_for("alice");
    let mut fast = app
        .subscribe("graphql-transport-ws", &token, "f", "subscription { stationEvents(installationId: 33) { id } }")
        .await;
    // The slow one asks for the events' (large) data, then reads nothing for a while.
    let mut slow = app
        .subscribe(
            "graphql-transport-ws",
            &token,
            "s",
            "subscription { stationEvents(installationId: 33) { id data } }",
        )
        .await;
    app.live_subscriptions(2).await;
    let url = app.webhook_url().await;
    // 300 events of 64 KiB (19 MiB): far more than the socket buffers and the 16 events the bus keeps.
    let blob = "x".repeat(64 * 1024);
    let total = 300;
    for n in 0..total {
        let data = json!({"installationId": 33, "blob": blob});
        let event = grid_event(&format!("big-{n}"), "Hager.WittyHome.Error", "2026-01-01T10:00:00Z", true, data);
        assert_eq!(app.deliver(&url, json!([event])).await, 200);
    }
    // The reading subscriber gets every event, in order, while the other one is stuck.
    for n in 0..total {
        let e = ws_data(&mut fast).await;
        assert_eq!(e["data"]["stationEvents"]["id"], format!("big-{n}"), "{e}");
    }
    // The stuck one, reading again, finds what was already on its way, then the notice, then the end.
    let received = ws_until_lag_notice(&mut slow, None).await;
    assert!(received < total, "it got {received} events");
    assert_eq!(ws_next(&mut slow).await["type"], "complete");
    assert_eq!(app.metric("witty_bff_lagging_subscribers_dropped_total").await, 1.0);
}

#[tokio::test]
async fn a_command_waiting_for_its_outcome_hears_the_station_event_without_any_subscriber() {
    let app = spawn_app().await;
    let r = app.sim().control(reqwest::Method::PUT, "/_sim/config", Some(json!({"commandDelayMs": 300}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let set_mode = r#"mutation($cs: ID!) { setChargeMode(installationId: 33, chargingStationId: $cs, mode: DEFERRED, wait: true) { status } }"#;
    let r = app.graphql("alice", set_mode, json!({"cs": ALICE_STATION})).await;
    assert_eq!(data(&r)["setChargeMode"]["status"], "APPLIED", "{r}");
    // The wait registered the webhook, and the station's ChargeModeChanged came through it.
    app.validated_webhook().await;
    eventually("the command's event to arrive by webhook", || async {
        (app.metric(r#"witty_bff_events_total{outcome="published"}"#).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(app.metric("witty_bff_polled_installations").await, 0.0);
}

#[tokio::test]
async fn when_the_upstream_never_validates_the_webhook_polling_delivers_the_events() {
    // The upstream cannot reach this address, so the validation never comes.
    let app = spawn_app_with(|c| {
        c.public_url = Some("http://127.0.0.1:9".parse().unwrap());
        c.webhook_validation_timeout_ms = 300;
        c.poll_interval_ms = 100;
    })
    .await;
    let mut ws = app.watch_events(&app.token_for("alice")).await;
    eventually("the polling fallback to start", || async {
        (app.metric("witty_bff_polled_installations").await == 1.0).then_some(())
    })
    .await;
    // The poller's first read is the baseline.
    app.sim().reset_calls().await;
    eventually("a poll", || async {
        (app.sim().calls_to("GET /installations/{i}/charging-stations").await >= 1).then_some(())
    })
    .await;
    app.sim().plug(ALICE_STATION).await;
    let e = ws_data(&mut ws).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{e}");
}

#[tokio::test]
async fn a_members_unsubscribe_all_deletes_our_subscription_and_it_is_made_again_while_watched() {
    // Made again at most once per grace period.
    let app = spawn_app_with(|c| c.watch_grace_secs = 2).await;
    let mut ws = app.watch_events(&app.token_for("alice")).await;
    let first = app.validated_webhook().await;
    /// Alice removes all her webhooks, witty-bff's `previous` among them (it was made with her
    /// token); while she still watches, a new one is made and validated, polling (the stopgap)
    /// ends, and it is the only one. Returns it.
    async fn removed_and_made_again(app: &TestApp, previous: &Value) -> Value {
        let r = app.graphql("alice", "mutation { unsubscribeAllNotifications(installationId: 33) }", json!({})).await;
        assert_eq!(data(&r)["unsubscribeAllNotifications"], true, "{r}");
        let again = eventually("our subscription to be made again and validated", || async {
            let hooks = app.sim().bff_hooks("alice", 33).await;
            let again = hooks.into_iter().find(|h| h["eventSubscriptionId"] != previous["eventSubscriptionId"])?;
            (again["state"] == "Created").then_some(again)
        })
        .await;
        eventually("polling to stop once the new webhook works", || async {
            (app.metric("witty_bff_polled_installations").await == 0.0).then_some(())
        })
        .await;
        assert_eq!(app.sim().bff_hooks("alice", 33).await.len(), 1, "exactly one: {again}");
        again
    }
    let second = removed_and_made_again(&app, &first).await;
    // Deleted again at once, within the grace period: made again once it has passed.
    removed_and_made_again(&app, &second).await;
    // Events come through the webhook again, not a poll.
    app.sim().plug(ALICE_STATION).await;
    let e = ws_data(&mut ws).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{e}");
    let raw = e["data"]["stationEvents"]["rawType"].as_str().unwrap_or_default();
    assert!(!raw.starts_with("witty-bff.polled"), "delivered by the webhook: {e}");
}

#[tokio::test]
async fn a_watcher_back_within_the_grace_keeps_the_upstream_subscription() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let ws = app.watch_events(&token).await;
    let first = app.validated_webhook().await;
    drop(ws);
    app.live_subscriptions(0).await;
    let mut ws = app.watch_events(&token).await;
    app.live_subscriptions(1).await;
    app.sim().plug(ALICE_STATION).await;
    assert_eq!(ws_data(&mut ws).await["data"]["stationEvents"]["type"], "CABLE_PLUGGED");
    let hooks = app.sim().bff_hooks("alice", 33).await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["eventSubscriptionId"], first["eventSubscriptionId"], "the same subscription");
}

#[tokio::test]
async fn the_owner_holds_the_upstream_subscription_and_its_removal_uses_the_owners_token() {
    let app = spawn_app_with(|c| c.watch_grace_secs = 0).await;
    let q = r#"subscription { stationEvents(installationId: 33) { type data } }"#;
    // The installer watches first; the owner comes next.
    let ivan = app.subscribe_as("ivan", q).await;
    app.live_subscriptions(1).await;
    eventually("the installer's subscription", || async {
        (app.sim().bff_hooks("ivan", 33).await.len() == 1).then_some(())
    })
    .await;
    let mut alice = app.subscribe_as("alice", q).await;
    app.live_subscriptions(2).await;
    // The owner's replaces the installer's, so deliveries carry everything.
    app.validated_webhook().await;
    eventually("the installer's subscription to be replaced", || async {
        app.sim().bff_hooks("ivan", 33).await.is_empty().then_some(())
    })
    .await;
    app.sim().plug(ALICE_STATION).await;
    app.sim().unplug(ALICE_STATION).await;
    let ended = loop {
        let e = ws_data(&mut alice).await;
        if e["data"]["stationEvents"]["type"] == "SESSION_ENDED" {
            break e;
        }
    };
    assert!(ended["data"]["stationEvents"]["data"].to_string().contains("nergy"), "the owner sees energy: {ended}");
    // The owner leaves first; the installer last. The removal still reaches the owner's subscription.
    drop(alice);
    app.live_subscriptions(1).await;
    drop(ivan);
    eventually("witty-bff's subscription to be removed upstream", || async {
        app.sim().bff_hooks("alice", 33).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_offering_both_protocols_is_answered_in_the_one_it_preferred() {
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-ws, graphql-transport-ws".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-ws");
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", app.token_for("alice"))}});
    futures::SinkExt::send(&mut ws, Message::Text(init.to_string().into())).await.unwrap();
    // The legacy protocol: `start`, then `data`.
    ws_subscribe(&mut ws, true, "1", EVENTS).await;
    app.live_subscriptions(1).await;
    app.validated_webhook().await;
    app.sim().plug(ALICE_STATION).await;
    let v = ws_next(&mut ws).await;
    assert_eq!(v["type"], "data", "{v}");
}

#[tokio::test]
async fn deliveries_out_of_order_are_sorted_within_a_delivery_and_marked_late_across_them() {
    let app = spawn_app().await;
    let q = r#"subscription { stationEvents(installationId: 33) { id eventTime late } }"#;
    let mut ws = app.subscribe_as("alice", q).await;
    let url = app.webhook_url().await;
    let event = |id: &str, at: &str| {
        grid_event(id, "Hager.WittyHome.ChargeModeChanged", at, true, json!({"installationId": 33}))
    };
    // One delivery with two events in the wrong order, then a retry of an older one.
    let both = json!([event("b", "2026-01-01T10:00:02Z"), event("a", "2026-01-01T10:00:01Z")]);
    assert_eq!(app.deliver(&url, both).await, 200);
    assert_eq!(app.deliver(&url, json!([event("old", "2026-01-01T09:59:00Z")])).await, 200);
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = ws_data(&mut ws).await;
        let e = &e["data"]["stationEvents"];
        got.push((e["id"].as_str().unwrap().to_string(), e["late"].as_bool().unwrap()));
    }
    assert_eq!(
        got,
        vec![("a".to_string(), false), ("b".to_string(), false), ("old".to_string(), true)],
        "in event-time order within the delivery; the retried one marked late"
    );
}

#[tokio::test]
async fn idle_connections_get_keep_alives_on_both_websocket_protocols_and_sse() {
    let app = spawn_app_with(|c| c.ws_keepalive_secs = 1).await;
    let token = app.token_for("alice");
    let mut legacy = app.subscribe("graphql-ws", &token, "1", EVENTS).await;
    let mut modern = app.watch_events(&token).await;
    let mut sse = app.sse(&token, EVENTS).await;
    // Nothing happens at the station; each connection still hears from the server.
    let (mut pinged, mut ka) = (false, false);
    timeout(PATIENCE, async {
        while !(pinged && ka) {
            match legacy.next().await {
                Some(Ok(Message::Ping(_))) => pinged = true,
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"ka""#) => ka = true,
                Some(Ok(_)) => {}
                other => panic!("the legacy connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a ping and a ka on the legacy protocol");
    timeout(PATIENCE, async {
        loop {
            match modern.next().await {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a ping on graphql-transport-ws");
    let comment = timeout(PATIENCE, sse.chunk()).await.expect("an SSE keep-alive in time").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&comment).starts_with(':'), "{comment:?}");
}

#[tokio::test]
async fn a_watcher_back_within_the_grace_of_a_polled_installation_hears_events() {
    let app = spawn_app_with(polling).await;
    let token = app.token_for("alice");
    let ws = app.watch_events(&token).await;
    app.live_subscriptions(1).await;
    drop(ws);
    app.live_subscriptions(0).await;
    // Nobody watches, but within the grace the poller goes on reading.
    app.sim().reset_calls().await;
    let polls = || async { app.sim().calls_to("GET /installations/{i}/charging-stations").await };
    eventually("the poller to go on through the grace", || async { (polls().await >= 2).then_some(()) }).await;
    let mut ws = app.watch_events(&token).await;
    app.live_subscriptions(1).await;
    // A poll after the return is the baseline the plug is compared with.
    let seen = polls().await;
    eventually("a poll after the return", || async { (polls().await > seen).then_some(()) }).await;
    app.sim().plug(ALICE_STATION).await;
    let e = ws_data(&mut ws).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{e}");
}

#[tokio::test]
async fn a_removed_member_resubscribing_on_the_same_connection_is_refused() {
    let app = spawn_app().await;
    // Ivan (installer on 33) watches; Alice then removes him through witty-bff.
    let mut ws = app.watch_events(&app.token_for("ivan")).await;
    app.live_subscriptions(1).await;
    let r = app
        .graphql("alice", r#"mutation { removeInstallationUser(installationId: 33, accountId: "ivan") }"#, json!({}))
        .await;
    assert_eq!(data(&r)["removeInstallationUser"], true);
    // A new subscription on the same connection reads the membership again, and is refused.
    ws.send(Message::Text(json!({"id": "1", "type": "complete"}).to_string().into())).await.unwrap();
    ws.send(Message::Text(json!({"id": "2", "type": "subscribe", "payload": {"query": EVENTS}}).to_string().into()))
        .await
        .unwrap();
    let refused = loop {
        let v = ws_next(&mut ws).await;
        if v["id"] == "2" {
            break v;
        }
    };
    let errors =
        if refused["type"] == "error" { refused["payload"].clone() } else { refused["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{refused}");
}

// ---- How a subscription ends, and what a client that breaks the protocol hears ----

/// The events of an SSE subscription up to its `complete`: (event name, JSON data).
async fn sse_until_complete(mut sse: reqwest::Response) -> Vec<(String, Value)> {
    let mut text = String::new();
    timeout(PATIENCE, async {
        while !text.contains("event: complete") {
            let chunk = sse.chunk().await.expect("readable").expect("the stream stays open until complete");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no complete in time; got: {text}"));
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            Some((name.to_string(), serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// The only error of a `next` (`data`) message, or of an SSE `next` event's data.
fn only_error(payload: &Value) -> &Value {
    let errors = payload["errors"].as_array().unwrap_or_else(|| panic!("no errors: {payload}"));
    assert_eq!(errors.len(), 1, "{payload}");
    &errors[0]
}

/// Asserts the next message of a WebSocket is the error that ends an operation with `code`, then
/// its `complete`; returns the error's message.
async fn ws_ended_with(ws: &mut Ws, code: &str) -> String {
    let v = ws_next(ws).await;
    assert!(v["type"] == "next" || v["type"] == "data", "{v}");
    let error = only_error(&v["payload"]);
    assert_eq!(error["extensions"]["code"], code, "{v}");
    let end = ws_next(ws).await;
    assert_eq!((end["type"].as_str(), end["id"].as_str()), (Some("complete"), v["id"].as_str()), "{end}");
    error["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_subscription_with_a_bad_id_is_refused_naming_the_argument() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut ws = app.ws_connect("graphql-transport-ws", &token).await;
    let cases = [
        (r#"installationId: "x""#, "installationId must be a whole number, got 'x'"),
        (r#"installationId: " ""#, "installationId must not be empty"),
        (r#"installationId: 33, chargingStationId: """#, "chargingStationId must not be empty"),
        (r#"installationId: 33, chargingStationId: "..""#, "chargingStationId cannot be '.' or '..'"),
    ];
    for (n, (arguments, expected)) in cases.into_iter().enumerate() {
        let query = format!("subscription {{ stationEvents({arguments}) {{ id }} }}");
        match n {
            0 => ws_subscribe(&mut ws, false, "bad-0", &query).await,
            _ => {
                let subscribe = json!({"id": format!("bad-{n}"), "type": "subscribe", "payload": {"query": query}});
                ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
            }
        }
        assert_eq!(ws_ended_with(&mut ws, "BAD_USER_INPUT").await, expected, "{arguments}");
    }
}

#[tokio::test]
async fn a_subscription_ended_by_token_expiry_says_why_on_both_websocket_protocols_and_sse() {
    let app = spawn_app_with(|c| c.jwt_leeway_secs = 0).await;
    // `exp` is in whole seconds: this token expires 3 to 4 s from now.
    let short = witty_bff::mint_dev_token(JWT_SECRET, "alice", 4, None, None);
    let mut modern = app.watch_events(&short).await;
    let mut legacy = app.subscribe("graphql-ws", &short, "1", EVENTS).await;
    let sse = app.sse(&short, EVENTS).await;
    for (name, ws) in [("graphql-transport-ws", &mut modern), ("graphql-ws", &mut legacy)] {
        let message = ws_ended_with(ws, "UNAUTHENTICATED").await;
        assert!(message.contains("expired") && message.contains("fresh token"), "{name}: {message}");
    }
    let events = sse_until_complete(sse).await;
    let [.., (next, last), (complete, _)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((next.as_str(), complete.as_str()), ("next", "complete"), "{events:?}");
    assert_eq!(only_error(last)["extensions"]["code"], "UNAUTHENTICATED", "{events:?}");
    assert!(only_error(last)["message"].as_str().unwrap().contains("expired"), "{events:?}");
    // The connection outlives the token: a subscription made on it now is refused at once.
    let again = json!({"id": "2", "type": "subscribe", "payload": {"query": EVENTS}});
    modern.send(Message::Text(again.to_string().into())).await.unwrap();
    let message = ws_ended_with(&mut modern, "UNAUTHENTICATED").await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn a_token_past_its_exp_but_within_the_leeway_is_served_as_long_as_http_accepts_it() {
    let app = spawn_app_with(|c| c.jwt_leeway_secs = 10).await;
    // Alice watches with a fresh token: what her subscriptions read is cached for her (the
    // simulator, as upstream, refuses expired tokens without any leeway).
    let _fresh = app.watch_events(&app.token_for("alice")).await;
    app.live_subscriptions(1).await;
    // Expired a second ago: accepted for 9 to 10 s more.
    let late = witty_bff::mint_dev_token(JWT_SECRET, "alice", -1, None, None);
    let query = json!({"query": "{ installations { id } }"});
    let r = app.post_graphql(Some(&late), query.clone()).await;
    assert!(error_codes(&r.body).is_empty(), "HTTP accepts it: {:?}", r.body);
    let mut ws = app.watch_events(&late).await;
    app.live_subscriptions(2).await;
    let event =
        grid_event("in-leeway", "Hager.WittyHome.Error", "2026-01-01T10:00:00Z", true, json!({"installationId": 33}));
    let url = app.webhook_url().await;
    assert_eq!(app.deliver(&url, json!([event])).await, 200);
    assert_eq!(ws_data(&mut ws).await["data"]["stationEvents"]["id"], "in-leeway");
    // It ends, saying why, once the token is refused: an HTTP request with it is refused too.
    let message = ws_ended_with(&mut ws, "UNAUTHENTICATED").await;
    assert!(message.contains("expired"), "{message}");
    let r = app.post_graphql(Some(&late), query).await;
    assert_eq!(error_codes(&r.body), vec!["UNAUTHENTICATED"], "{:?}", r.body);
}

#[tokio::test]
async fn a_station_not_on_the_installation_is_refused_when_subscribing_with_one_read_of_its_stations() {
    let app = spawn_app_with(|c| c.cache_state_ttl_secs = 600).await;
    let token = app.token_for("alice");
    app.sim().reset_calls().await;
    let unknown = r#"subscription { stationEvents(installationId: 33, chargingStationId: "does-not-exist") { id } }"#;
    let bobs = format!(
        r#"subscription {{ chargingStationUpdated(installationId: 33, chargingStationId: "{BOB_STATION}") {{ id }} }}"#
    );
    let mut modern = app.subscribe("graphql-transport-ws", &token, "x", unknown).await;
    let message = ws_ended_with(&mut modern, "NOT_FOUND").await;
    assert_eq!(message, "charging station does-not-exist not found on installation 33");
    // The id is free again once the server completed it.
    let again = json!({"id": "x", "type": "subscribe", "payload": {"query": bobs}});
    modern.send(Message::Text(again.to_string().into())).await.unwrap();
    let message = ws_ended_with(&mut modern, "NOT_FOUND").await;
    assert_eq!(message, format!("charging station {BOB_STATION} not found on installation 33"));
    let mut legacy = app.subscribe("graphql-ws", &token, "1", &bobs).await;
    ws_ended_with(&mut legacy, "NOT_FOUND").await;
    let events = sse_until_complete(app.sse(&token, unknown).await).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(only_error(&events[0].1)["extensions"]["code"], "NOT_FOUND", "{events:?}");
    // Alice's own station is still watched.
    let mine = format!(
        r#"subscription {{ stationEvents(installationId: 33, chargingStationId: "{ALICE_STATION}") {{ id }} }}"#
    );
    let _ok = app.subscribe("graphql-transport-ws", &token, "1", &mine).await;
    app.live_subscriptions(1).await;
    // Every check read the installation's stations through the cache: once upstream.
    let calls = app.sim().calls_by_route().await;
    assert_eq!(calls.get("GET /installations/{i}/charging-stations"), Some(&1), "{calls:#?}");
}

/// The close frame the server ends the connection with (code and reason), skipping anything before.
async fn ws_close_frame(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a valid close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn graphql_transport_ws_clients_breaking_the_protocol_are_closed_with_its_codes_and_short_reasons() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let acked = || app.ws_acked("graphql-transport-ws", &token);
    // An unknown message type.
    let mut ws = acked().await;
    ws_send_text(&mut ws, r#"{"type":"foo"}"#).await;
    assert_eq!(ws_close_frame(&mut ws).await, (4400, "unknown message type foo".to_string()));
    // Not JSON.
    let mut ws = acked().await;
    ws_send_text(&mut ws, "{oops").await;
    let (code, reason) = ws_close_frame(&mut ws).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.starts_with("malformed JSON"), "{reason}");
    // A known type without its fields.
    let mut ws = acked().await;
    ws_send_text(&mut ws, r#"{"type":"subscribe"}"#).await;
    let (code, reason) = ws_close_frame(&mut ws).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("subscribe") && reason.contains("id"), "{reason}");
    // A type name longer than a close frame holds, in two-byte characters: cut to fit, still UTF-8.
    let mut ws = acked().await;
    ws_send_text(&mut ws, &json!({"type": "é".repeat(200)}).to_string()).await;
    let (code, reason) = ws_close_frame(&mut ws).await;
    assert_eq!(code, 4400);
    assert!(reason.len() <= 123 && reason.starts_with("unknown message type é"), "{} bytes: {reason}", reason.len());
    // An id already in use.
    let mut ws = acked().await;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}}).to_string();
    ws_send_text(&mut ws, &subscribe).await;
    ws_send_text(&mut ws, &subscribe).await;
    assert_eq!(ws_close_frame(&mut ws).await, (4409, "Subscriber for 1 already exists".to_string()));
    // `subscribe` before `connection_init`.
    let mut ws = app.ws_open("graphql-transport-ws").await;
    ws_send_text(&mut ws, &subscribe).await;
    assert_eq!(ws_close_frame(&mut ws).await, (4401, "Unauthorized".to_string()));
}

#[tokio::test]
async fn legacy_graphql_ws_clients_breaking_the_protocol_hear_its_error_messages_and_stay_connected() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    // `start` before `connection_init`: that operation's error; the connection goes on.
    let mut ws = app.ws_open("graphql-ws").await;
    ws_send_text(&mut ws, &json!({"id": "0", "type": "start", "payload": {"query": EVENTS}}).to_string()).await;
    let v = ws_next(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("error"), Some("0")), "{v}");
    assert!(v["payload"]["message"].as_str().unwrap().contains("connection_init"), "{v}");
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws_send_text(&mut ws, &init.to_string()).await;
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
    // An unknown type: `error`, naming the operation when the message does.
    ws_send_text(&mut ws, r#"{"type":"foo","id":"9"}"#).await;
    let v = ws_next(&mut ws).await;
    assert_eq!(v, json!({"type": "error", "id": "9", "payload": {"message": "unknown message type foo"}}));
    // Not JSON: `connection_error`.
    ws_send_text(&mut ws, "{oops").await;
    let v = ws_next(&mut ws).await;
    assert_eq!(v["type"], "connection_error", "{v}");
    assert!(v["payload"]["message"].as_str().unwrap().starts_with("malformed JSON"), "{v}");
    // The connection still serves operations.
    let other = "subscription { stationEvents(installationId: 42) { id } }";
    ws_send_text(&mut ws, &json!({"id": "1", "type": "start", "payload": {"query": other}}).to_string()).await;
    assert_eq!(ws_ended_with(&mut ws, "NOT_FOUND").await, "installation 42 not found");
}

#[tokio::test]
async fn an_id_completed_by_the_client_and_subscribed_again_at_once_is_still_in_use() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut ws = app.ws_acked("graphql-transport-ws", &token).await;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}}).to_string();
    let complete = json!({"id": "1", "type": "complete"}).to_string();
    // In one write, so that the server reads them together: the server's `complete` answering the
    // client's is produced before it reads the second `subscribe`, and goes out with what that
    // reading produced.
    for text in [&subscribe, &complete, &subscribe] {
        ws.feed(Message::Text(text.clone().into())).await.unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(ws_next(&mut ws).await, json!({"type": "complete", "id": "1"}));
    // Operation 1 runs again: a third `subscribe 1` breaks the protocol (rather than replacing it
    // silently), and the ping after it is never answered.
    ws_send_text(&mut ws, &subscribe).await;
    ws_send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(ws_next_or_close(&mut ws).await, Err((4409, "Subscriber for 1 already exists".to_string())));
}

#[tokio::test]
async fn a_legacy_client_flooding_malformed_messages_is_closed_after_a_few_answers() {
    let app = spawn_app().await;
    let mut ws = app.ws_acked("graphql-ws", &app.token_for("alice")).await;
    for n in 0..100 {
        ws_send_text(&mut ws, &format!(r#"{{"type":"foo","id":"{n}"}}"#)).await;
    }
    let mut answered = 0;
    let (code, reason) = loop {
        match ws_next_or_close(&mut ws).await {
            Ok(v) => {
                assert_eq!(v["type"], "error", "{v}");
                answered += 1;
            }
            Err(close) => break close,
        }
    };
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too many"), "{reason}");
    assert!(answered <= 32, "{answered} answered before the close");
}

#[tokio::test]
async fn a_subscription_whose_root_field_comes_through_a_fragment_runs_and_is_checked_as_any() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let spread = "subscription { ...F } fragment F on Subscription { stationEvents(installationId: 33) { id type } }";
    let inline = "subscription { ... on Subscription { ... { stationEvents(installationId: 33) { type } } } }";
    let mut modern = app.subscribe("graphql-transport-ws", &token, "1", spread).await;
    let mut legacy = app.subscribe("graphql-ws", &token, "1", inline).await;
    app.live_subscriptions(2).await;
    app.sim().plug(ALICE_STATION).await;
    for (name, ws) in [("spread", &mut modern), ("inline", &mut legacy)] {
        let e = ws_data(ws).await;
        assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{name}: {e}");
    }
    // Checked as written inline: one root field only, and only an installation of the caller's.
    let two = "subscription { ...F } fragment F on Subscription { a: stationEvents(installationId: 33) { id } \
               b: stationEvents(installationId: 33) { id } }";
    let events = sse_until_complete(app.sse(&token, two).await).await;
    assert_eq!(only_error(&events[0].1)["extensions"]["code"], "BAD_USER_INPUT", "{events:?}");
    assert!(events[0].1.to_string().contains("exactly one root field"), "{events:?}");
    let others = "subscription { ...F } fragment F on Subscription { stationEvents(installationId: 42) { id } }";
    let events = sse_until_complete(app.sse(&token, others).await).await;
    assert_eq!(only_error(&events[0].1)["extensions"]["code"], "NOT_FOUND", "{events:?}");
    // A root field that may be skipped: refused, as the spec asks, not a silent end.
    let skipped =
        "subscription { ...F @skip(if: true) } fragment F on Subscription { stationEvents(installationId: 33) { id } }";
    let events = sse_until_complete(app.sse(&token, skipped).await).await;
    assert_eq!(only_error(&events[0].1)["extensions"]["code"], "BAD_USER_INPUT", "{events:?}");
    assert!(events[0].1.to_string().contains("@skip or @include"), "{events:?}");
    // A fragment tree standing for 4^24 root fields: refused at once, on both transports.
    let bomb = crate::graph_read::fragment_tree(
        "subscription",
        "Subscription",
        24,
        "stationEvents(installationId: 33) { id }",
    );
    let events =
        timeout(std::time::Duration::from_secs(60), async { sse_until_complete(app.sse(&token, &bomb).await).await })
            .await
            .expect("answered, not written out");
    assert_eq!(only_error(&events[0].1)["extensions"]["code"], "QUERY_TOO_COMPLEX", "{events:?}");
    let mut ws = app.subscribe("graphql-transport-ws", &token, "bomb", &bomb).await;
    let refused = ws_next(&mut ws).await;
    // As every refusal before running there: graphql-transport-ws's `error`, and no `complete`.
    assert_eq!((refused["type"].as_str(), refused["id"].as_str()), (Some("error"), Some("bomb")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX", "{refused}");
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
    assert_eq!(ws_next(&mut ws).await["type"], "pong", "no complete before it");
}

#[tokio::test]
async fn watches_of_a_station_removed_through_witty_bff_end_at_once_and_others_go_on() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let station = format!(r#"installationId: 33, chargingStationId: "{ALICE_STATION}""#);
    let events = format!("subscription {{ stationEvents({station}) {{ id }} }}");
    let mut ws = app.subscribe("graphql-transport-ws", &token, "ev", &events).await;
    let up = format!("subscription {{ chargingStationUpdated({station}) {{ id }} }}");
    let second = json!({"id": "up", "type": "subscribe", "payload": {"query": up}});
    ws.send(Message::Text(second.to_string().into())).await.unwrap();
    let mut all = app.watch_events(&token).await;
    app.live_subscriptions(3).await;
    let r = app
        .graphql(
            "alice",
            "mutation($cs: ID!) { removeChargingStation(installationId: 33, chargingStationId: $cs) }",
            json!({"cs": ALICE_STATION}),
        )
        .await;
    assert_eq!(data(&r)["removeChargingStation"], true, "{r}");
    // Both watches of the station end with NOT_FOUND, then complete, without any event.
    let mut ended = Vec::new();
    for _ in 0..2 {
        let v = ws_next(&mut ws).await;
        assert_eq!(v["type"], "next", "{v}");
        let error = only_error(&v["payload"]);
        assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{v}");
        assert!(error["message"].as_str().unwrap().contains("no longer on installation 33"), "{v}");
        let end = ws_next(&mut ws).await;
        assert_eq!((end["type"].as_str(), end["id"].as_str()), (Some("complete"), v["id"].as_str()), "{end}");
        ended.push(v["id"].as_str().unwrap().to_string());
    }
    ended.sort();
    assert_eq!(ended, ["ev", "up"]);
    // The installation's own watch goes on.
    let url = app.webhook_url().await;
    let shed = grid_event("after-removal", "Hager.WittyHome.LoadShedding", "2026-11-27T09:00:00Z", false, json!({}));
    assert_eq!(app.deliver(&url, json!([shed])).await, 200);
    assert_eq!(ws_data(&mut all).await["data"]["stationEvents"]["id"], "after-removal");
}

#[tokio::test]
async fn station_updates_skip_an_event_of_a_station_the_installation_does_not_have() {
    let app = spawn_app().await;
    let mut ws = app.subscribe_as("alice", "subscription { chargingStationUpdated(installationId: 33) { id } }").await;
    app.live_subscriptions(1).await;
    let url = app.webhook_url().await;
    let mut stray = grid_event("stray", "Hager.WittyHome.CablePlugged", "2026-11-27T09:00:00Z", true, json!({}));
    stray["subject"] = json!("installations/33/charging-stations/not-a-station-of-33");
    let real = grid_event("real", "Hager.WittyHome.CablePlugged", "2026-11-27T09:00:01Z", true, json!({}));
    assert_eq!(app.deliver(&url, json!([stray])).await, 200);
    assert_eq!(app.deliver(&url, json!([real])).await, 200);
    // Nothing for the stray one (no error in the stream), then the real station's state.
    let v = ws_data(&mut ws).await;
    assert_eq!(v, json!({"data": {"chargingStationUpdated": {"id": ALICE_STATION}}}), "{v}");
}

#[tokio::test]
async fn station_updates_of_a_member_disabled_upstream_end_at_the_first_refusal() {
    let app = spawn_app().await;
    // Alice's watch holds the upstream subscription; Ivan watches the station's state.
    let _alice = app.watch_events(&app.token_for("alice")).await;
    let mut ivan = app
        .subscribe(
            "graphql-ws",
            &app.token_for("ivan"),
            "1",
            "subscription { chargingStationUpdated(installationId: 33) { id } }",
        )
        .await;
    app.live_subscriptions(2).await;
    app.validated_webhook().await;
    // Alice disables Ivan with another app, straight upstream.
    let ivan_id = app.sim().account_id("ivan").await;
    let r = app.sim().post("alice", &format!("/installations/33/users/{ivan_id}/operators/disable"), json!({})).await;
    assert!(r.status.is_success(), "{:?}", r.body);
    app.sim().plug(ALICE_STATION).await;
    // The read of the station with his token is refused: that ends it, once.
    let v = ws_next(&mut ivan).await;
    assert_eq!(v["type"], "data", "{v}");
    assert_eq!(only_error(&v["payload"])["extensions"]["code"], "FORBIDDEN", "{v}");
    let end = ws_next(&mut ivan).await;
    assert_eq!((end["type"].as_str(), end["id"].as_str()), (Some("complete"), Some("1")), "{end}");
}

#[tokio::test]
async fn a_watch_whose_membership_read_the_upstream_refuses_ends_saying_so() {
    let app = spawn_app().await;
    let mut alice = app.watch_events(&app.token_for("alice")).await;
    app.live_subscriptions(1).await;
    // The upstream now refuses Alice's token (a 403 of the simulator is its quota, not this).
    let f = app.sim().set_faults(json!({"errorRate": 1.0, "errorStatus": 401, "routes": ["GET /installations"]})).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    // A membership change of her installation makes her watch check its access at once.
    let ivan = app.sim().account_id("ivan").await;
    let r = app
        .graphql(
            "alice",
            "mutation($a: ID!) { disableInstaller(installationId: 33, accountId: $a) }",
            json!({"a": ivan}),
        )
        .await;
    assert_eq!(data(&r)["disableInstaller"], true, "{r}");
    let message = ws_ended_with(&mut alice, "UNAUTHENTICATED").await;
    assert!(message.contains("refused your token"), "{message}");
}
