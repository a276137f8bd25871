//! The webhook's keys: one per installation, so a URL one member of an installation can read
//! speaks for that installation only.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_installations_webhook_url_cannot_deliver_events_of_another_installation() {
    let app = spawn_app().await;
    // Bob watches his installation 42; Alice watches hers, 33, so its webhook is registered.
    let mut bob = app.subscribe_as("bob", "subscription { stationEvents(installationId: 42) { id type } }").await;
    let _alice = app.watch_events(&app.token_for("alice")).await;
    let alices = app.webhook_url().await;
    let bobs = app.webhook_of(42);
    assert_ne!(alices, bobs);
    app.live_subscriptions(2).await;
    // An event of Bob's installation posted to the webhook of Alice's: taken (the upstream gets no
    // hint), and dropped.
    assert_eq!(app.deliver(&alices, json!([bobs_event("forged-1")])).await, 200);
    eventually("the forged event to be dropped", || async {
        (app.metric(r#"witty_bff_events_total{outcome="other_installation"}"#).await == 1.0).then_some(())
    })
    .await;
    // The same event at the webhook of Bob's installation reaches him: it is the first he hears.
    assert_eq!(app.deliver(&bobs, json!([bobs_event("real-1")])).await, 200);
    assert_eq!(ws_data(&mut bob).await["data"]["stationEvents"]["id"], "real-1");
    // A key made up for an installation is not one.
    let made_up = format!("{}/webhooks/witty/42-{}", app.base, "A".repeat(32));
    assert_eq!(app.deliver(&made_up, json!([bobs_event("forged-2")])).await, 404);
}

#[tokio::test]
async fn an_event_dated_in_the_future_does_not_make_the_later_ones_late() {
    let app = spawn_app().await;
    let mut ws = app.subscribe_as("alice", "subscription { stationEvents(installationId: 33) { id late } }").await;
    let url = app.webhook_url().await;
    let event = |id: &str, at: &str| grid_event(id, "Hager.WittyHome.Error", at, true, json!({"code": "E1"}));
    assert_eq!(app.deliver(&url, json!([event("skewed", "2099-01-01T00:00:00Z")])).await, 200);
    let first = ws_data(&mut ws).await;
    assert_eq!(first["data"]["stationEvents"], json!({"id": "skewed", "late": false}), "{first}");
    let now = chrono::Utc::now().to_rfc3339();
    assert_eq!(app.deliver(&url, json!([event("on-time", &now)])).await, 200);
    let next = ws_data(&mut ws).await;
    assert_eq!(next["data"]["stationEvents"], json!({"id": "on-time", "late": false}), "{next}");
    // One genuinely older than what was published is still late.
    assert_eq!(app.deliver(&url, json!([event("older", "2020-01-01T00:00:00Z")])).await, 200);
    let older = ws_data(&mut ws).await;
    assert_eq!(older["data"]["stationEvents"], json!({"id": "older", "late": true}), "{older}");
}

#[tokio::test]
async fn a_malformed_or_oversized_delivery_is_refused_saying_what_is_wrong() {
    let app = spawn_app().await;
    let _alice = app.watch_events(&app.token_for("alice")).await;
    let url = app.webhook_url().await;
    let post = |body: Vec<u8>| {
        app.client
            .post(&url)
            .header("aeg-event-type", "Notification")
            .header("content-type", "application/json")
            .body(body)
    };
    for (body, says) in [
        (&b"[{"[..], "EOF while parsing"),
        (&b"[1, 2]"[..], "expected struct GridEvent"),
        (&br#"[{"id": "a"}]"#[..], "missing field"),
    ] {
        let r = send(post(body.to_vec())).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("array of Event Grid events") && message.contains(says), "{message}");
        assert!(!message.contains("expected a string"), "{message}");
    }
    // Events that read as events, but cannot be told apart, dated or placed: dropped and counted,
    // the others of the delivery taken; a delivery of none but those is refused, naming the first
    // and what is wrong with it.
    let good = grid_event("good-1", "Hager.WittyHome.CablePlugged", "2026-11-27T09:00:00Z", true, json!({}));
    let mut no_id = good.clone();
    no_id["id"] = json!(" ");
    let mut undated = good.clone();
    undated["id"] = json!("undated");
    undated["eventTime"] = json!("yesterday");
    let mut nowhere = good.clone();
    nowhere["id"] = json!("nowhere");
    nowhere["subject"] = json!("stations/x");
    for (bad, says) in [
        (no_id, "event 0 of the delivery (id ' '): its id is empty"),
        (undated, "event 0 of the delivery (id 'undated'): its eventTime 'yesterday' is no RFC 3339 date-time"),
        (nowhere, "event 0 of the delivery (id 'nowhere'): its subject 'stations/x' names no installation"),
    ] {
        let r = send(post(serde_json::to_vec(&json!([bad.clone()])).unwrap())).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("no event of the delivery (1) could be read") && message.contains(says), "{message}");
        let r = send(post(serde_json::to_vec(&json!([good, bad])).unwrap())).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    eventually("the readable event, taken once", || async {
        (app.metric(r#"witty_bff_events_total{outcome="published"}"#).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(app.metric(r#"witty_bff_events_total{outcome="unreadable"}"#).await, 6.0);
    let r = send(post(vec![b' '; 2 * 1024 * 1024])).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap_or_default().contains("at most 1024 KiB"), "{:?}", r.body);
}

/// Alice subscribes a webhook of her own (not witty-bff's) to her installation.
async fn subscribe_alices_own_hook(app: &TestApp) {
    let query =
        r#"mutation { subscribeToNotifications(installationId: 33, webhookUrl: "https://example.com/hook") { id } }"#;
    let r = app.graphql("alice", query, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
}

#[tokio::test]
async fn a_member_sees_witty_bffs_webhook_url_without_its_key_and_her_own_as_it_is() {
    let app = spawn_app().await;
    // Alice watches: witty-bff's subscription is made with her token, so it is among hers.
    let _alice = app.watch_events(&app.token_for("alice")).await;
    let url = app.validated_webhook().await;
    let url = url["protocolData"].as_str().unwrap();
    let key = url.rsplit('/').next().unwrap();
    subscribe_alices_own_hook(&app).await;
    let r = app.graphql("alice", "{ installation(id: 33) { eventSubscriptions { protocolData } } }", json!({})).await;
    let text = r.to_string();
    assert!(!text.contains(key), "the key is shown: {text}");
    assert!(text.contains(&format!("{}/webhooks/witty/<hidden>", app.base)), "{text}");
    assert!(text.contains("https://example.com/hook"), "{text}");
}

#[tokio::test]
async fn an_id_of_dots_is_refused_and_never_sent_to_another_route() {
    let app = spawn_app().await;
    let _alice = app.watch_events(&app.token_for("alice")).await;
    app.validated_webhook().await;
    subscribe_alices_own_hook(&app).await;
    app.sim().reset_calls().await;
    // `…/event-subscriptions/..` would be `DELETE /installations/33`, `…/.` all her subscriptions.
    for id in ["..", "."] {
        let r = app
            .graphql(
                "alice",
                &format!(
                    r#"mutation {{ unsubscribeFromNotifications(installationId: 33, eventSubscriptionId: "{id}") }}"#
                ),
                json!({}),
            )
            .await;
        assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r}");
        assert!(r.to_string().contains("eventSubscriptionId cannot be '.' or '..'"), "names the argument: {r}");
    }
    let r = app
        .graphql(
            "alice",
            r#"mutation { removeChargingStation(installationId: 33, chargingStationId: "..") }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r}");
    let calls = app.sim().calls_by_route().await;
    assert!(calls.keys().all(|k| !k.starts_with("DELETE")), "nothing deleted: {calls:#?}");
    let subs = app.sim().get("alice", "/installations/33/event-subscriptions").await.body;
    assert_eq!(subs.as_array().map(Vec::len), Some(2), "witty-bff's and hers are still there: {subs}");
}

#[tokio::test]
async fn a_subscription_left_by_an_earlier_run_that_nobody_watches_again_goes_with_its_creators_next_request() {
    let first = spawn_app().await;
    let ws = first.watch_events(&first.token_for("alice")).await;
    let left = first.validated_webhook().await;
    // The first run goes before its grace period ends (a deploy): its subscription stays upstream.
    // One address for both runs: the webhook URL registered by the first stays right.
    drop(ws);
    let second = first.restart().await;
    let sim = second.sim();
    // Nobody watches installation 33 here, yet its events are delivered.
    let r = sim.control(reqwest::Method::POST, &format!("/_sim/stations/{ALICE_STATION}/load-shedding"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    eventually("the delivery to reach the next run", || async {
        (second.metric("witty_bff_webhook_deliveries_total{kind=\"Notification\"}").await >= 1.0).then_some(())
    })
    .await;
    // Ivan's request (he is a member, but did not make it) changes nothing; Alice's removes it.
    let r = second.graphql("ivan", "{ installations { id } }", json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = second.graphql("alice", "{ installations { id } }", json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    eventually("the left subscription to be removed", || async {
        let subs = sim.get("alice", "/installations/33/event-subscriptions").await.body;
        let ids: Vec<&serde_json::Value> = subs.as_array()?.iter().map(|s| &s["eventSubscriptionId"]).collect();
        (!ids.contains(&&left["eventSubscriptionId"])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_delivery_of_thousands_of_events_reaches_a_subscriber_that_reads_them_all() {
    let app = spawn_app().await;
    let mut ws = app.subscribe_as("alice", "subscription { stationEvents(installationId: 33) { id } }").await;
    let url = app.webhook_url().await;
    app.live_subscriptions(1).await;
    // Three times the bus's 1024 events, in one delivery under its 1 MiB.
    let at = chrono::Utc::now().to_rfc3339();
    let events: Vec<_> = (0..3000)
        .map(|n| grid_event(&format!("bulk-{n}"), "Hager.WittyHome.LoadShedding", &at, false, json!({})))
        .collect();
    assert_eq!(app.deliver(&url, json!(events)).await, 200);
    for n in 0..3000 {
        let next = ws_data(&mut ws).await;
        assert_eq!(next["data"]["stationEvents"]["id"], format!("bulk-{n}"), "{next}");
    }
    assert_eq!(app.metric("witty_bff_lagging_subscribers_dropped_total").await, 0.0);
}

#[tokio::test]
async fn many_small_deliveries_back_to_back_reach_a_subscriber_that_reads_them_all() {
    let app = spawn_app().await;
    let mut ws = app.subscribe_as("alice", "subscription { stationEvents(installationId: 33) { id } }").await;
    let url = app.webhook_url().await;
    app.live_subscriptions(1).await;
    // Twelve deliveries of 250 events (each under half the bus's 1024), posted at once: three
    // times the bus in all, queued for the intake together.
    let at = chrono::Utc::now().to_rfc3339();
    let deliveries = (0..12).map(|d| {
        let events: Vec<_> = (0..250)
            .map(|n| grid_event(&format!("small-{d}-{n}"), "Hager.WittyHome.LoadShedding", &at, false, json!({})))
            .collect();
        let (app, url) = (&app, &url);
        async move { app.deliver(url, json!(events)).await }
    });
    let statuses = futures::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Each delivery's events in order (the deliveries in the order they arrived), none missing.
    let mut next_of = [0usize; 12];
    for _ in 0..3000 {
        let next = ws_data(&mut ws).await;
        let id = next["data"]["stationEvents"]["id"].as_str().unwrap_or_else(|| panic!("{next}")).to_string();
        let (d, n) = id.trim_start_matches("small-").split_once('-').expect("small-d-n");
        let (d, n): (usize, usize) = (d.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, next_of[d], "{id} after {next_of:?}");
        next_of[d] += 1;
    }
    assert_eq!(app.metric("witty_bff_lagging_subscribers_dropped_total").await, 0.0);
}

#[tokio::test]
async fn an_event_whose_data_names_another_installation_than_its_subject_follows_the_subject() {
    let app = spawn_app().await;
    let mut ws =
        app.subscribe_as("alice", "subscription { stationEvents(installationId: 33) { id chargingStationId } }").await;
    let url = app.webhook_url().await;
    app.live_subscriptions(1).await;
    // About Bob's station of installation 42 by its subject, with a `data` claiming Alice's 33.
    let mut odd = bobs_event("odd-1");
    odd["data"] = json!({"installationId": 33, "chargingStationId": BOB_STATION});
    assert_eq!(app.deliver(&url, json!([odd])).await, 200);
    eventually("the event to be dropped", || async {
        (app.metric(r#"witty_bff_events_total{outcome="other_installation"}"#).await == 1.0).then_some(())
    })
    .await;
    // Alice's next event is the first she hears.
    assert_eq!(
        app.deliver(
            &url,
            json!([grid_event(
                "mine-1",
                "Hager.WittyHome.LoadShedding",
                &chrono::Utc::now().to_rfc3339(),
                true,
                json!({})
            )])
        )
        .await,
        200
    );
    let next = ws_data(&mut ws).await;
    assert_eq!(next["data"]["stationEvents"]["id"], "mine-1", "{next}");
}
