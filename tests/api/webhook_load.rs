//! Webhook deliveries under load: a delivery of thousands of events costs other users' cached
//! queries nothing, and duplicates are recognised per installation.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_event_id_reused_across_installations_is_delivered_to_subscribers_of_both() {
    let app = spawn_app().await;
    let query = |i: i64| format!("subscription {{ stationEvents(installationId: {i}) {{ id installationId }} }}");
    let mut bob = app.subscribe_as("bob", &query(BOB_INSTALLATION)).await;
    let mut alice = app.subscribe_as("alice", &query(ALICE_INSTALLATION)).await;
    let alices = app.webhook_url().await;
    let bobs = app.webhook_of(42);
    app.live_subscriptions(2).await;
    // Bob's installation hears of the id first; Alice's event with the same id is another event.
    assert_eq!(app.deliver(&bobs, json!([bobs_event("same-id")])).await, 200);
    let heard = ws_data(&mut bob).await;
    assert_eq!(heard["data"]["stationEvents"], json!({"id": "same-id", "installationId": "42"}), "{heard}");
    let alices_event = grid_event("same-id", "Hager.WittyHome.Error", "2026-01-01T10:00:00Z", true, json!({}));
    assert_eq!(app.deliver(&alices, json!([alices_event.clone()])).await, 200);
    let heard = ws_data(&mut alice).await;
    assert_eq!(heard["data"]["stationEvents"], json!({"id": "same-id", "installationId": "33"}), "{heard}");
    // Delivered again at the same installation, it is a duplicate there.
    assert_eq!(app.deliver(&alices, json!([alices_event])).await, 200);
    eventually("the repeated delivery to be dropped as a duplicate", || async {
        (app.metric(r#"witty_bff_events_total{outcome="duplicate"}"#).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(app.metric(r#"witty_bff_events_total{outcome="published"}"#).await, 2.0);
}

#[tokio::test]
async fn a_delivery_of_thousands_of_events_refreshes_its_installation_and_leaves_others_cached() {
    // Long TTLs: only the delivery can make an entry fetched again during the test.
    let app = spawn_app_with(|c| {
        c.cache_state_ttl_secs = 600;
        c.cache_list_ttl_secs = 600;
    })
    .await;
    let _alice_watches = app.watch_events(&app.token_for("alice")).await;
    let url = app.webhook_url().await;
    app.live_subscriptions(1).await;
    // Bob's dashboard of his installation, and Alice's station, are cached.
    let bobs = r#"{ installation(id: 42) { name chargingStations { id availability } gridMeters { id } } }"#;
    let bob_before = app.graphql("bob", bobs, json!({})).await;
    assert!(bob_before.get("errors").is_none(), "{bob_before}");
    let alices =
        format!(r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ availability }} }} }}"#);
    let before = app.graphql("alice", &alices, json!({})).await;
    assert_eq!(data(&before)["installation"]["chargingStation"]["availability"], "AVAILABLE");
    // Alice's station changes upstream without an event of its own; then one delivery of 4,000
    // events (under the webhook's 1 MiB) says her installation changed.
    app.sim().set_station_properties(ALICE_STATION, json!({"availability": "UNAVAILABLE"})).await;
    let events: Vec<_> = (0..4000)
        .map(|n| grid_event(&format!("b{n}"), "Hager.WittyHome.LoadShedding", "2026-01-01T10:00:00Z", false, json!({})))
        .collect();
    let body = json!(events);
    assert!(body.to_string().len() < 1 << 20, "the delivery fits the body limit");
    assert_eq!(app.deliver(&url, body).await, 200);
    eventually("the delivery's events to be published", || async {
        (app.metric(r#"witty_bff_events_total{outcome="published"}"#).await >= 4000.0).then_some(())
    })
    .await;
    // Bob's query is still served from the cache: nothing is sent upstream for it.
    app.sim().reset_calls().await;
    let bob_after = app.graphql("bob", bobs, json!({})).await;
    assert_eq!(bob_after, bob_before);
    let calls = app.sim().calls_by_route().await;
    assert!(calls.values().all(|n| *n == 0), "Bob's cached query sent {calls:?}");
    // Alice's station is read afresh.
    let after = app.graphql("alice", &alices, json!({})).await;
    assert_eq!(data(&after)["installation"]["chargingStation"]["availability"], "UNAVAILABLE", "{after}");
}
