//! Notifications delivered as Azure Event Grid delivers them: JSON arrays of events POSTed to the
//! subscription's webhook with an `aeg-event-type` header. Each subscription first gets a
//! `Microsoft.EventGrid.SubscriptionValidationEvent`; nothing else is delivered until the webhook
//! answers it with `{"validationResponse": <code>}`. Failed deliveries are retried with doubling
//! backoff, a bounded number of times; each delivery is retried on its own, so events can arrive out
//! of order, and a receiver that times out may get the same event twice (at least once).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::store::{Notice, Role, subscription_matches};
use super::wire::GridEvent;
use super::{AppState, Shared};

pub const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// Event data fields an installer may not see.
const COST_FIELDS: &[&str] = &["energy", "sessionEnergy", "sessionCost", "cost"];

/// Most events put in one delivery.
const BATCH: usize = 10;

fn topic(installation_id: i64) -> String {
    format!("/witty-home/installations/{installation_id}")
}

fn now_text() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Turns notices into events and queues them on every matching subscription.
pub fn publish(shared: &Shared, notices: Vec<Notice>) {
    if notices.is_empty() {
        return;
    }
    let store = shared.read();
    for notice in notices {
        let subject = match &notice.station_id {
            Some(cs) => format!("installations/{}/charging-stations/{cs}", notice.installation_id),
            None => format!("installations/{}", notice.installation_id),
        };
        let event = GridEvent {
            id: Uuid::new_v4().to_string(),
            event_type: notice.event_type.into(),
            subject,
            event_time: now_text(),
            data: notice.data,
            data_version: "1.0".into(),
            metadata_version: "1".into(),
            topic: topic(notice.installation_id),
        };
        let Some(inst) = store.installations.get(&notice.installation_id) else { continue };
        for sub in &inst.subscriptions {
            // Only users who may still see the installation hear of it; installers without costs.
            let member = inst.members.iter().find(|m| m.account_id == sub.model.user_id && m.enabled);
            let Some(member) = member else { continue };
            if sub.model.state == "Failed" || !subscription_matches(&sub.model, &event) {
                continue;
            }
            let mut event = event.clone();
            if member.role == Role::Installer
                && let Some(data) = event.data.as_object_mut()
            {
                for key in COST_FIELDS {
                    data.remove(*key);
                }
            }
            let _ = sub.queue.send(event);
        }
    }
}

/// Starts the delivery task of a new subscription and returns its queue.
pub fn start(
    state: AppState,
    installation_id: i64,
    subscription_id: String,
    url: String,
) -> mpsc::UnboundedSender<GridEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(state, installation_id, subscription_id, url, rx));
    tx
}

fn set_state(shared: &Shared, installation_id: i64, subscription_id: &str, value: &str) {
    let mut store = shared.write();
    if let Some(sub) = store
        .installations
        .get_mut(&installation_id)
        .and_then(|i| i.subscriptions.iter_mut().find(|s| s.model.event_subscription_id == subscription_id))
    {
        sub.model.state = value.into();
        sub.model.modification_date = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
}

fn exists(shared: &Shared, installation_id: i64, subscription_id: &str) -> bool {
    shared
        .read()
        .installations
        .get(&installation_id)
        .is_some_and(|i| i.subscriptions.iter().any(|s| s.model.event_subscription_id == subscription_id))
}

async fn run(
    state: AppState,
    installation_id: i64,
    subscription_id: String,
    url: String,
    mut rx: mpsc::UnboundedReceiver<GridEvent>,
) {
    let code = Uuid::new_v4().to_string();
    let validation = GridEvent {
        id: Uuid::new_v4().to_string(),
        event_type: VALIDATION_EVENT.into(),
        subject: String::new(),
        event_time: now_text(),
        data: json!({ "validationCode": code, "validationUrl": Value::Null }),
        data_version: "1".into(),
        metadata_version: "1".into(),
        topic: topic(installation_id),
    };
    let validated = deliver(&state, &url, &subscription_id, "SubscriptionValidation", &[validation], Some(&code)).await;
    if !exists(&state, installation_id, &subscription_id) {
        return;
    }
    if !validated {
        let host = reqwest::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        tracing::warn!(%subscription_id, %host, "webhook validation handshake failed");
        set_state(&state, installation_id, &subscription_id, "Failed");
        return;
    }
    set_state(&state, installation_id, &subscription_id, "Created");
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        if !exists(&state, installation_id, &subscription_id) {
            return;
        }
        let (state, url, id) = (state.clone(), url.clone(), subscription_id.clone());
        tokio::spawn(async move {
            if !deliver(&state, &url, &id, "Notification", &batch, None).await {
                tracing::warn!(subscription_id = %id, events = batch.len(), "webhook delivery dropped after retries");
            }
        });
    }
}

/// Tells a deleted subscription's webhook it is gone (`SubscriptionDeletion`), in the background.
pub fn farewell(state: AppState, installation_id: i64, subscription_id: String, url: String) {
    tokio::spawn(async move {
        let event = GridEvent {
            id: Uuid::new_v4().to_string(),
            event_type: "Microsoft.EventGrid.SubscriptionDeletedEvent".into(),
            subject: String::new(),
            event_time: now_text(),
            data: json!({ "eventSubscriptionId": subscription_id }),
            data_version: "1".into(),
            metadata_version: "1".into(),
            topic: topic(installation_id),
        };
        deliver(&state, &url, &subscription_id, "SubscriptionDeletion", &[event], None).await;
    });
}

/// POSTs one delivery, retrying with doubling backoff. With `expect_code`, only a 2xx answer whose
/// body carries that `validationResponse` counts as delivered.
async fn deliver(
    shared: &Arc<Shared>,
    url: &str,
    subscription_id: &str,
    kind: &str,
    events: &[GridEvent],
    expect_code: Option<&str>,
) -> bool {
    let settings = shared.settings();
    let mut backoff = settings.delivery_backoff;
    for attempt in 1..=settings.delivery_attempts {
        let sent = shared
            .http
            .post(url)
            .timeout(settings.delivery_timeout)
            .header("aeg-event-type", kind)
            .header("aeg-subscription-name", subscription_id)
            .header("aeg-delivery-count", (attempt - 1).to_string())
            .header("aeg-data-version", "1.0")
            .json(events)
            .send()
            .await;
        let ok = match sent {
            Ok(resp) if resp.status().is_success() => match expect_code {
                None => true,
                Some(code) => resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("validationResponse").and_then(|c| c.as_str()).map(|c| c == code))
                    .unwrap_or(false),
            },
            Ok(resp) => {
                tracing::debug!(status = %resp.status(), attempt, "webhook refused a delivery");
                false
            }
            Err(e) => {
                // Without the URL: its path carries the subscriber's secret.
                tracing::debug!(error = %e.without_url(), attempt, "webhook delivery failed");
                false
            }
        };
        if ok {
            return true;
        }
        if attempt < settings.delivery_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
    false
}
