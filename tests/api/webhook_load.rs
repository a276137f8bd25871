//! Webhook deliveries under load: duplicates are recognised per installation.

use serde_json::json;

use crate::helpers::*;

/// An Event Grid event about Bob's station (installation 42).
fn bobs_event(id: &str) -> serde_json::Value {
    json!({
        "id": id, "eventType": "Hager.WittyHome.Error",
        "subject": format!("installations/42/charging-stations/{BOB_STATION}"),
        "eventTime": "2026-01-01T10:00:00Z", "data": {"installationId": 42, "code": "E1"},
        "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/42"
    })
}

#[tokio::test]
async fn an_event_id_reused_across_installations_is_delivered_to_subscribers_of_both() {
    let app = spawn_app().await;
    let query = |i: i64| format!("subscription {{ stationEvents(installationId: {i}) {{ id installationId }} }}");
    let mut bob = app.subscribe_as("bob", &query(BOB_INSTALLATION)).await;
    let mut alice = app.subscribe_as("alice", &query(ALICE_INSTALLATION)).await;
    let alices = app.webhook_url().await;
    let bobs = format!("{}/webhooks/witty/{}", app.base, witty_bff::webhook_key(WEBHOOK_SECRET, 42));
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
