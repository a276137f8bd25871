//! Subscribing webhooks of the caller's own to an installation's notifications.

use async_graphql::{Context, ID, Object};

use super::{Held, call, require_held};
use crate::commands::notifications::{
    SUBSCRIBE_TO_NOTIFICATIONS, UNSUBSCRIBE_ALL_NOTIFICATIONS, UNSUBSCRIBE_FROM_NOTIFICATIONS,
};
use crate::commands::{send, send_checked, url_without_controls};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::installations::EventSubscription;
use crate::upstream::notifications::NewEventSubscription;

/// The subscription's body: an absolute http(s) URL and, if given, an event type.
fn subscription(webhook_url: &str, event_type: Option<&str>) -> AppResult<NewEventSubscription> {
    // Before parsing: the parser would drop a CR/LF that the text sent upstream still holds.
    url_without_controls("webhookUrl", webhook_url)?;
    let url = webhook_url.trim().to_string();
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(AppError::bad_input(format!("webhookUrl must be an absolute http(s) URL, got '{url}'"))),
    }
    let event_type = match event_type.map(str::trim) {
        Some("") => {
            return Err(AppError::bad_input(
                "eventType must name an event type; leave it out to subscribe to every type",
            ));
        }
        t => t.map(str::to_string),
    };
    Ok(NewEventSubscription { protocol_code: "Webhook".into(), protocol_data: url, event_type })
}

#[derive(Default)]
pub(super) struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Subscribes a webhook (an absolute http(s) URL) to the installation's notifications;
    /// `eventType` limits it to one type.
    async fn subscribe_to_notifications(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        webhook_url: String,
        event_type: Option<String>,
        idempotency_key: Option<String>,
    ) -> AppResult<EventSubscription> {
        let i = installation_arg(&installation_id, "installationId")?;
        let body = subscription(&webhook_url, event_type.as_deref())?;
        let (access, call, svc) = call(ctx, Some(i), idempotency_key, format!("{i} {body:?}"))?;
        let sub = send(&access, call, svc, &SUBSCRIBE_TO_NOTIFICATIONS, |client, token| async move {
            client.subscribe(token, i, &body).await
        })
        .await?;
        Ok(EventSubscription::from(sub))
    }

    /// Deletes one of the caller's subscriptions.
    async fn unsubscribe_from_notifications(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        event_subscription_id: ID,
    ) -> AppResult<bool> {
        let i = installation_arg(&installation_id, "installationId")?;
        let id = resource_id(&event_subscription_id, "eventSubscriptionId")?;
        let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {id}"))?;
        let held = require_held(ctx, i, Held::Subscription(id.clone()));
        send_checked(&access, call, svc, &UNSUBSCRIBE_FROM_NOTIFICATIONS, held, |client, token| async move {
            client.unsubscribe(token, i, &id).await
        })
        .await?;
        Ok(true)
    }

    /// Deletes all of the caller's subscriptions on the installation. witty-bff's own, if it was
    /// made with the caller's token, is made again while live subscriptions watch the installation.
    async fn unsubscribe_all_notifications(&self, ctx: &Context<'_>, installation_id: ID) -> AppResult<bool> {
        let i = installation_arg(&installation_id, "installationId")?;
        let (access, call, svc) = call(ctx, Some(i), None, i.to_string())?;
        send(&access, call, svc, &UNSUBSCRIBE_ALL_NOTIFICATIONS, |client, token| client.unsubscribe_all(token, i))
            .await?;
        Ok(true)
    }
}
