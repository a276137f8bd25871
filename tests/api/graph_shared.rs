//! Shared execution of identical WebSocket subscriptions: subscribers with the same token, query,
//! variables and operation name are answered by one execution, each under its own operation id
//! and in its own protocol's framing; each joins, leaves and is checked on its own; nothing is
//! shared across tokens, callers or variables.

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// The operation most tests share: events of Alice's installation, named by their id.
const IDS: &str = r#"subscription { stationEvents(installationId: 33) { id type chargingStationId } }"#;

/// Another station of installation 33 than Alice's, named in an event's data (the BFF publishes
/// the event as delivered; the simulator has no such station).
const OTHER_STATION: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

/// An initialised (acknowledged) connection for `token`.
async fn connection(app: &TestApp, legacy: bool, token: &str) -> Ws {
    app.ws_acked(if legacy { "graphql-ws" } else { "graphql-transport-ws" }, token).await
}

/// Sends `subscribe` (`start` on the legacy protocol) for operation `id` on an acknowledged socket.
async fn subscribe(ws: &mut Ws, legacy: bool, id: &str, query: &str, variables: Value) {
    let kind = if legacy { "start" } else { "subscribe" };
    let msg = json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}});
    ws.send(Message::Text(msg.to_string().into())).await.unwrap();
}

/// Ends operation `id` from the client: `complete`, or `stop` on the legacy protocol.
async fn unsubscribe(ws: &mut Ws, legacy: bool, id: &str) {
    let kind = if legacy { "stop" } else { "complete" };
    ws.send(Message::Text(json!({"id": id, "type": kind}).to_string().into())).await.unwrap();
}

/// The next message of a connection, asserted to be an event answer of operation `id` in the
/// protocol's framing and without errors; returns the `stationEvents` object.
async fn event_for(ws: &mut Ws, legacy: bool, id: &str) -> Value {
    let v = ws_next(ws).await;
    let kind = if legacy { "data" } else { "next" };
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some(kind), Some(id)), "{v}");
    assert!(v["payload"].get("errors").is_none_or(|e| e.is_null()), "{v}");
    v["payload"]["data"]["stationEvents"].clone()
}

/// The id of the event answered in the next message of a connection, for operation `id`.
async fn event_id_for(ws: &mut Ws, legacy: bool, id: &str) -> String {
    event_for(ws, legacy, id).await["id"].as_str().expect("an event id").to_string()
}

/// Asserts the next message of a connection is the server's `complete` of operation `id`.
async fn completed(ws: &mut Ws, id: &str) {
    let v = ws_next(ws).await;
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("complete"), Some(id)), "{v}");
}

/// An event of Alice's installation with `data` (which names the station, if any), delivered
/// through the app's webhook.
async fn deliver_event(app: &TestApp, id: &str, data: Value) {
    let station = data["chargingStationId"].as_str().unwrap_or(ALICE_STATION).to_string();
    let mut event = grid_event(id, "Hager.WittyHome.Error", "2026-01-01T10:00:00Z", true, data);
    // The subject names the station the event is about (it wins over the data).
    event["subject"] = json!(format!("installations/33/charging-stations/{station}"));
    assert_eq!(app.deliver(&app.webhook_of(33), json!([event])).await, 200);
}

/// An event of Alice's station.
async fn deliver_station_event(app: &TestApp, id: &str) {
    deliver_event(app, id, json!({"installationId": 33, "chargingStationId": ALICE_STATION})).await;
}

#[tokio::test]
async fn two_connections_with_one_token_and_one_subscription_each_hear_every_event_under_their_own_id() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut x = connection(&app, false, &token).await;
    subscribe(&mut x, false, "a", IDS, json!({})).await;
    app.live_subscriptions(1).await;
    let mut y = connection(&app, false, &token).await;
    subscribe(&mut y, false, "b", IDS, json!({})).await;
    app.live_subscriptions(2).await;
    for n in 1..=3 {
        deliver_station_event(&app, &format!("e-{n}")).await;
    }
    for (ws, id) in [(&mut x, "a"), (&mut y, "b")] {
        for n in 1..=3 {
            let e = event_for(ws, false, id).await;
            assert_eq!(e["id"], format!("e-{n}"), "{id}: {e}");
            assert_eq!(e["type"], "ERROR", "{id}: {e}");
            assert_eq!(e["chargingStationId"], ALICE_STATION, "{id}: {e}");
        }
    }
}

#[tokio::test]
async fn a_legacy_and_a_modern_connection_sharing_a_subscription_each_get_their_protocols_framing() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut modern = connection(&app, false, &token).await;
    subscribe(&mut modern, false, "a", IDS, json!({})).await;
    app.live_subscriptions(1).await;
    let mut legacy = connection(&app, true, &token).await;
    subscribe(&mut legacy, true, "b", IDS, json!({})).await;
    app.live_subscriptions(2).await;
    deliver_station_event(&app, "e-1").await;
    deliver_station_event(&app, "e-2").await;
    // `next` on graphql-transport-ws, `data` on graphql-ws; each under its own id.
    for n in 1..=2 {
        assert_eq!(event_id_for(&mut modern, false, "a").await, format!("e-{n}"));
        assert_eq!(event_id_for(&mut legacy, true, "b").await, format!("e-{n}"));
    }
    // The other way round too: the legacy subscriber first, a modern one joining it.
    let mut legacy_first = connection(&app, true, &token).await;
    let q = r#"subscription { stationEvents(installationId: 33) { id } }"#;
    subscribe(&mut legacy_first, true, "c", q, json!({})).await;
    app.live_subscriptions(3).await;
    let mut modern_second = connection(&app, false, &token).await;
    subscribe(&mut modern_second, false, "d", q, json!({})).await;
    app.live_subscriptions(4).await;
    deliver_station_event(&app, "e-3").await;
    assert_eq!(event_id_for(&mut legacy_first, true, "c").await, "e-3");
    assert_eq!(event_id_for(&mut modern_second, false, "d").await, "e-3");
    assert_eq!(event_id_for(&mut modern, false, "a").await, "e-3");
    assert_eq!(event_id_for(&mut legacy, true, "b").await, "e-3");
}

/// Two subscriptions of one connection to the same operation, under ids `a` and `b`.
async fn one_connection_two_ids(legacy: bool) {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut ws = connection(&app, legacy, &token).await;
    subscribe(&mut ws, legacy, "a", IDS, json!({})).await;
    subscribe(&mut ws, legacy, "b", IDS, json!({})).await;
    app.live_subscriptions(2).await;
    deliver_station_event(&app, "e-1").await;
    deliver_station_event(&app, "e-2").await;
    // The two operations' answers may interleave; each operation's come in order.
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..4 {
        let v = ws_next(&mut ws).await;
        let kind = if legacy { "data" } else { "next" };
        assert_eq!(v["type"], kind, "{v}");
        let id = v["id"].as_str().expect("an operation id").to_string();
        got.entry(id).or_default().push(v["payload"]["data"]["stationEvents"]["id"].as_str().unwrap().to_string());
    }
    let both = vec!["e-1".to_string(), "e-2".to_string()];
    let expected: std::collections::BTreeMap<String, Vec<String>> =
        [("a".to_string(), both.clone()), ("b".to_string(), both)].into();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn two_subscriptions_of_one_connection_to_the_same_operation_each_hear_every_event() {
    one_connection_two_ids(false).await;
}

#[tokio::test]
async fn two_legacy_subscriptions_of_one_connection_to_the_same_operation_each_hear_every_event() {
    one_connection_two_ids(true).await;
}

/// `a` and `probe` on connection X, `b` on connection Y, all one operation of one token; `a`
/// leaves, the others go on; then everybody leaves.
async fn one_subscriber_leaves_the_others_go_on(legacy: bool) {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let mut x = connection(&app, legacy, &token).await;
    subscribe(&mut x, legacy, "a", IDS, json!({})).await;
    app.live_subscriptions(1).await;
    let mut y = connection(&app, legacy, &token).await;
    subscribe(&mut y, legacy, "b", IDS, json!({})).await;
    subscribe(&mut x, legacy, "probe", IDS, json!({})).await;
    app.live_subscriptions(3).await;
    deliver_station_event(&app, "e-1").await;
    let kind = if legacy { "data" } else { "next" };
    let mut on_x = Vec::new();
    for _ in 0..2 {
        let v = ws_next(&mut x).await;
        assert_eq!(v["type"], kind, "{v}");
        on_x.push((v["id"].to_string(), v["payload"]["data"]["stationEvents"]["id"].to_string()));
    }
    on_x.sort();
    let expected = [(r#""a""#, r#""e-1""#), (r#""probe""#, r#""e-1""#)].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(on_x, expected, "both operations of X hear the first event");
    assert_eq!(event_id_for(&mut y, legacy, "b").await, "e-1");

    // `a` leaves: the server completes it, and its watch goes.
    unsubscribe(&mut x, legacy, "a").await;
    completed(&mut x, "a").await;
    app.live_subscriptions(2).await;

    // The sharing subscribers hear later events; `a` hears nothing more: X's next messages are
    // the probe's, event after event.
    for n in 2..=3 {
        deliver_station_event(&app, &format!("e-{n}")).await;
        assert_eq!(event_id_for(&mut y, legacy, "b").await, format!("e-{n}"));
        assert_eq!(event_id_for(&mut x, legacy, "probe").await, format!("e-{n}"), "nothing more for `a`");
    }

    // Everybody leaves, the connections staying open: nothing is live any more.
    unsubscribe(&mut y, legacy, "b").await;
    completed(&mut y, "b").await;
    unsubscribe(&mut x, legacy, "probe").await;
    completed(&mut x, "probe").await;
    app.live_subscriptions(0).await;
    // Subscribing again to the same operation works, with a fresh execution.
    subscribe(&mut y, legacy, "b2", IDS, json!({})).await;
    app.live_subscriptions(1).await;
    deliver_station_event(&app, "e-4").await;
    assert_eq!(event_id_for(&mut y, legacy, "b2").await, "e-4");
}

#[tokio::test]
async fn a_subscriber_completing_leaves_the_others_sharing_its_operation_hearing_events() {
    one_subscriber_leaves_the_others_go_on(false).await;
}

#[tokio::test]
async fn a_legacy_subscriber_stopping_leaves_the_others_sharing_its_operation_hearing_events() {
    one_subscriber_leaves_the_others_go_on(true).await;
}

/// Alice (owner) and Ivan (installer) watch with the same query, `installer_first` deciding who
/// subscribes first: the event's energy and cost reach Alice only.
async fn owner_and_installer_do_not_share(installer_first: bool) {
    let app = spawn_app().await;
    let q = "subscription { stationEvents(installationId: 33) { id data } }";
    let (alice, ivan) = (app.token_for("alice"), app.token_for("ivan"));
    let order =
        if installer_first { [("ivan", &ivan), ("alice", &alice)] } else { [("alice", &alice), ("ivan", &ivan)] };
    let mut sockets = Vec::new();
    for (n, (who, token)) in order.into_iter().enumerate() {
        let mut ws = connection(&app, false, token).await;
        // The same operation id too: only the token differs.
        subscribe(&mut ws, false, "1", q, json!({})).await;
        app.live_subscriptions(n + 1).await;
        sockets.push((who, ws));
    }
    let data = json!({
        "installationId": 33, "chargingStationId": ALICE_STATION, "availability": "available",
        "sessionDuration": 3600, "sessionEnergy": 12.5, "sessionCost": 3.25, "energy": 7.5, "cost": 1.5
    });
    deliver_event(&app, "costly-1", data).await;
    for (who, ws) in &mut sockets {
        let e = event_for(ws, false, "1").await;
        assert_eq!(e["id"], "costly-1", "{who}: {e}");
        let d = &e["data"];
        assert_eq!(d["availability"], "available", "{who}: {e}");
        assert_eq!(d["sessionDuration"], 3600, "{who}: {e}");
        for field in ["sessionEnergy", "sessionCost", "energy", "cost"] {
            if *who == "alice" {
                assert!(d.get(field).is_some(), "the owner sees {field}: {e}");
            } else {
                assert!(d.get(field).is_none(), "the installer does not see {field}: {e}");
            }
        }
    }
}

#[tokio::test]
async fn an_owner_joining_an_installers_identical_subscription_still_sees_costs() {
    owner_and_installer_do_not_share(true).await;
}

#[tokio::test]
async fn an_installer_joining_an_owners_identical_subscription_sees_no_costs() {
    owner_and_installer_do_not_share(false).await;
}

#[tokio::test]
async fn subscriptions_differing_only_in_their_variables_do_not_share() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let q = r#"subscription Watch($cs: ID) { stationEvents(installationId: 33, chargingStationId: $cs) { id chargingStationId } }"#;
    // The whole installation first, then the same query filtered to Alice's station.
    let mut whole = connection(&app, false, &token).await;
    subscribe(&mut whole, false, "all", q, json!({"cs": null})).await;
    app.live_subscriptions(1).await;
    let mut one = connection(&app, false, &token).await;
    subscribe(&mut one, false, "one", q, json!({"cs": ALICE_STATION})).await;
    app.live_subscriptions(2).await;
    // An event of another station reaches the whole-installation subscriber only...
    deliver_event(&app, "other-1", json!({"installationId": 33, "chargingStationId": OTHER_STATION})).await;
    let e = event_for(&mut whole, false, "all").await;
    assert_eq!((e["id"].as_str(), e["chargingStationId"].as_str()), (Some("other-1"), Some(OTHER_STATION)), "{e}");
    // ...so the filtered subscriber's next message is the event of its own station.
    deliver_station_event(&app, "mine-1").await;
    let e = event_for(&mut one, false, "one").await;
    assert_eq!((e["id"].as_str(), e["chargingStationId"].as_str()), (Some("mine-1"), Some(ALICE_STATION)), "{e}");
    assert_eq!(event_id_for(&mut whole, false, "all").await, "mine-1");
}

#[tokio::test]
async fn joining_a_shared_subscription_works_and_is_refused_once_the_caller_lost_access() {
    let app = spawn_app().await;
    let q = "subscription { stationEvents(installationId: 33) { id } }";
    let ivan = app.token_for("ivan");
    // Ivan (installer on 33) watches on one connection; a second one joins the same operation.
    let mut first = connection(&app, false, &ivan).await;
    subscribe(&mut first, false, "a", q, json!({})).await;
    app.live_subscriptions(1).await;
    let mut second = connection(&app, false, &ivan).await;
    subscribe(&mut second, false, "b", q, json!({})).await;
    app.live_subscriptions(2).await;
    deliver_station_event(&app, "e-1").await;
    assert_eq!(event_id_for(&mut first, false, "a").await, "e-1");
    assert_eq!(event_id_for(&mut second, false, "b").await, "e-1", "the join works");

    // Alice removes Ivan through witty-bff, while his shared subscription is still running.
    let r = app
        .graphql("alice", r#"mutation { removeInstallationUser(installationId: 33, accountId: "ivan") }"#, json!({}))
        .await;
    assert_eq!(data(&r)["removeInstallationUser"], true);
    // The running ones end at once, before any event, each with the refusal.
    for (ws, id) in [(&mut first, "a"), (&mut second, "b")] {
        let v = ws_next(ws).await;
        assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("next"), Some(id)), "{v}");
        assert_eq!(v["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
        completed(ws, id).await;
    }
    app.live_subscriptions(0).await;
    // A third subscriber with the same token and operation is checked on its own, and refused.
    let mut third = connection(&app, false, &ivan).await;
    subscribe(&mut third, false, "c", q, json!({})).await;
    let refused = ws_next(&mut third).await;
    assert_eq!(refused["id"], "c", "{refused}");
    let errors =
        if refused["type"] == "error" { refused["payload"].clone() } else { refused["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{refused}");
    assert!(refused["payload"]["data"].is_null(), "{refused}");
    if refused["type"] == "next" {
        completed(&mut third, "c").await;
    }
    assert_eq!(app.metric("witty_bff_live_subscriptions").await, 0.0, "the refused one never watched");
}

#[tokio::test]
async fn two_tokens_of_one_user_never_share_an_execution() {
    let app = spawn_app_with(|c| c.jwt_leeway_secs = 0).await;
    let long = app.token_for("alice");
    // `exp` is in whole seconds: this one expires 3 to 4 s from now.
    let short = witty_bff::mint_dev_token(JWT_SECRET, "alice", 4, None, None);
    assert_ne!(long, short);
    let q1 = "subscription { stationEvents(installationId: 33) { id } }";
    let q2 = "subscription { stationEvents(installationId: 33) { id type } }";
    let mut l = connection(&app, false, &long).await;
    let mut s = connection(&app, false, &short).await;
    // q1: the long-lived token first; q2: the short-lived one first.
    subscribe(&mut l, false, "l1", q1, json!({})).await;
    app.live_subscriptions(1).await;
    subscribe(&mut s, false, "s1", q1, json!({})).await;
    subscribe(&mut s, false, "s2", q2, json!({})).await;
    app.live_subscriptions(3).await;
    subscribe(&mut l, false, "l2", q2, json!({})).await;
    app.live_subscriptions(4).await;
    // The short-lived token's subscriptions end at its expiry, both of them, each saying why...
    let mut ended = Vec::new();
    for _ in 0..4 {
        ended.push(ws_next(&mut s).await);
    }
    for id in ["s1", "s2"] {
        let of: Vec<&Value> = ended.iter().filter(|v| v["id"] == id).collect();
        assert_eq!(of.len(), 2, "{ended:?}");
        assert_eq!(of[0]["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{ended:?}");
        assert_eq!(of[1]["type"], "complete", "{ended:?}");
    }
    app.live_subscriptions(2).await;
    // ...and the long-lived token's go on, whoever subscribed first.
    deliver_station_event(&app, "after-expiry").await;
    let mut got = vec![ws_next(&mut l).await, ws_next(&mut l).await];
    got.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
    for (v, id) in got.iter().zip(["l1", "l2"]) {
        assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("next"), Some(id)), "{got:?}");
        assert_eq!(v["payload"]["data"]["stationEvents"]["id"], "after-expiry", "{got:?}");
    }
}

#[tokio::test]
async fn a_sharing_subscriber_that_stops_reading_is_dropped_alone() {
    let app = spawn_app_with(|c| c.live_buffer_events = 16).await;
    let token = app.token_for("alice");
    let q = "subscription { stationEvents(installationId: 33) { id data } }";
    // The one that will stop reading opens the shared execution; the other joins it.
    let mut slow = connection(&app, false, &token).await;
    subscribe(&mut slow, false, "s", q, json!({})).await;
    app.live_subscriptions(1).await;
    let mut fast = connection(&app, false, &token).await;
    subscribe(&mut fast, false, "f", q, json!({})).await;
    app.live_subscriptions(2).await;
    // 300 events of 64 KiB (19 MiB): far more than the socket buffers and the 16 answers a
    // subscriber may be behind. The reading subscriber takes each one as it comes.
    let blob = "x".repeat(64 * 1024);
    let total = 300;
    for n in 0..total {
        deliver_event(&app, &format!("big-{n}"), json!({"installationId": 33, "blob": blob})).await;
        assert_eq!(event_id_for(&mut fast, false, "f").await, format!("big-{n}"));
    }
    // The stuck one, reading again, finds what was already on its way, then the notice, then the end.
    let received = ws_until_lag_notice(&mut slow, Some("s")).await;
    assert!(received < total, "it got {received} events");
    completed(&mut slow, "s").await;
    assert_eq!(app.metric("witty_bff_lagging_subscribers_dropped_total").await, 1.0);
    app.live_subscriptions(1).await;
    // The execution it opened goes on for the other one.
    deliver_station_event(&app, "after-drop").await;
    assert_eq!(event_id_for(&mut fast, false, "f").await, "after-drop");
}

#[tokio::test]
async fn a_subscription_with_two_root_fields_is_refused_as_the_spec_says_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let two =
        r#"subscription { a: stationEvents(installationId: 33) { id } b: stationEvents(installationId: 33) { id } }"#;
    let mut x = connection(&app, false, &token).await;
    subscribe(&mut x, false, "x", two, json!({})).await;
    let v = ws_next(&mut x).await;
    // Refused before it ran: graphql-transport-ws's `error` (no `complete` follows).
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("error"), Some("x")), "{v}");
    let error = &v["payload"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{v}");
    assert!(error["message"].as_str().unwrap_or_default().contains("exactly one root field"), "{v}");
    assert_eq!(app.metric("witty_bff_live_subscriptions").await, 0.0);
    // The same token's single-field subscriber is served as ever, on the same connection.
    subscribe(&mut x, false, "z", IDS, json!({})).await;
    app.live_subscriptions(1).await;
    deliver_station_event(&app, "e-2").await;
    assert_eq!(event_id_for(&mut x, false, "z").await, "e-2");
}

#[tokio::test]
async fn the_subscriber_that_opened_a_shared_execution_may_leave_at_once_and_the_others_keep_it() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    for round in 0..3 {
        let mut opener = connection(&app, false, &token).await;
        subscribe(&mut opener, false, "a", IDS, json!({})).await;
        app.live_subscriptions(1).await;
        let mut joiner = connection(&app, false, &token).await;
        subscribe(&mut joiner, false, "b", IDS, json!({})).await;
        app.live_subscriptions(2).await;
        // The opener leaves before any event: by `complete` or by closing its connection.
        if round % 2 == 0 {
            unsubscribe(&mut opener, false, "a").await;
            completed(&mut opener, "a").await;
        } else {
            drop(opener);
        }
        app.live_subscriptions(1).await;
        deliver_station_event(&app, &format!("e-{round}-1")).await;
        assert_eq!(event_id_for(&mut joiner, false, "b").await, format!("e-{round}-1"));
        // A newcomer joins what the opener left behind; both hear the next event.
        let mut newcomer = connection(&app, false, &token).await;
        subscribe(&mut newcomer, false, "c", IDS, json!({})).await;
        app.live_subscriptions(2).await;
        deliver_station_event(&app, &format!("e-{round}-2")).await;
        assert_eq!(event_id_for(&mut joiner, false, "b").await, format!("e-{round}-2"));
        assert_eq!(event_id_for(&mut newcomer, false, "c").await, format!("e-{round}-2"));
        drop((joiner, newcomer));
        app.live_subscriptions(0).await;
    }
}

#[tokio::test]
async fn a_subscriber_joining_while_the_opener_is_stuck_writing_hears_events_at_once() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let q = "subscription { stationEvents(installationId: 33) { id data } }";
    // The opener runs the execution on its own connection, and stops reading.
    let mut stuck = connection(&app, false, &token).await;
    subscribe(&mut stuck, false, "s", q, json!({})).await;
    app.live_subscriptions(1).await;
    // 80 events of 64 KiB (5 MiB): more than the socket buffers can hold (4 MiB at most for the
    // server's send buffer, 128 KiB for a receiver that never read), so the opener's connection
    // is left waiting to write, its execution with it.
    let blob = "x".repeat(64 * 1024);
    for n in 0..80 {
        deliver_event(&app, &format!("big-{n}"), json!({"installationId": 33, "blob": blob})).await;
    }
    // A second subscriber joins: it takes the execution to a task of its own instead of waiting
    // for the stuck connection to hand it over. What the execution had not answered yet comes
    // first, then the event delivered after it joined.
    let mut joiner = connection(&app, false, &token).await;
    subscribe(&mut joiner, false, "j", q, json!({})).await;
    app.live_subscriptions(2).await;
    deliver_station_event(&app, "after-join").await;
    loop {
        let id = event_id_for(&mut joiner, false, "j").await;
        if id == "after-join" {
            break;
        }
        assert!(id.starts_with("big-"), "{id}");
    }
    // The opener, reading again, gets every event in order, up to the one after the join.
    for n in 0..80 {
        assert_eq!(event_id_for(&mut stuck, false, "s").await, format!("big-{n}"));
    }
    assert_eq!(event_id_for(&mut stuck, false, "s").await, "after-join");
}
