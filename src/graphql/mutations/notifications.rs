//! Subscribing webhooks of the caller's own to an installation's notifications.

use async_graphql::{Context, ID, Object};

use super::{Doubt, invalidate, services};
use crate::cache::{Resource, read};
use crate::graphql::context::{caller, load};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::installations::EventSubscription;
use crate::upstream::notifications::NewEventSubscription;

const SUBSCRIBED: Doubt =
    Doubt { what: "the subscription", done: "made", check: "the installation's eventSubscriptions" };
const UNSUBSCRIBED: Doubt =
    Doubt { what: "the removal of the subscription", done: "made", check: "the installation's eventSubscriptions" };

fn stale(r: &Resource) -> bool {
    matches!(r, Resource::EventSubscriptions { .. } | Resource::EventSubscription { .. })
}

/// The caller must see the installation (as owner or enabled installer).
async fn visible(ctx: &Context<'_>, i: i64) -> AppResult<()> {
    let (list, _) = load(ctx, read::Installations).await?;
    if list.iter().any(|x| x.installation_id == i) {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("installation {i} not found")))
    }
}

#[derive(Default)]
pub struct NotificationMutation;

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
        let url = webhook_url.trim().to_string();
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(AppError::bad_input(format!("webhookUrl must be an absolute http(s) URL, got '{url}'"))),
        }
        let event_type = match event_type.as_deref().map(str::trim) {
            Some("") => {
                return Err(AppError::bad_input(
                    "eventType must name an event type; leave it out to subscribe to every type",
                ));
            }
            t => t.map(str::to_string),
        };
        let body = NewEventSubscription { protocol_code: "Webhook".into(), protocol_data: url, event_type };
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, idempotency_key, format!("{i} {body:?}"), SUBSCRIBED, |sent| async move {
                visible(ctx, i).await?;
                let me = caller(ctx)?;
                let sub = sent.send(svc.cache.client().subscribe(me.token(), i, &body)).await?;
                invalidate(ctx, i, stale)?;
                Ok(EventSubscription::from(sub))
            })
            .await
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
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, format!("{i} {id}"), UNSUBSCRIBED, |sent| async move {
                visible(ctx, i).await?;
                let me = caller(ctx)?;
                sent.send(svc.cache.client().unsubscribe(me.token(), i, &id)).await?;
                invalidate(ctx, i, stale)?;
                Ok(true)
            })
            .await
    }

    /// Deletes all of the caller's subscriptions on the installation. witty-bff's own, if it was
    /// made with the caller's token, is made again while live subscriptions watch the installation.
    async fn unsubscribe_all_notifications(&self, ctx: &Context<'_>, installation_id: ID) -> AppResult<bool> {
        let i = installation_arg(&installation_id, "installationId")?;
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, i.to_string(), UNSUBSCRIBED, |sent| async move {
                visible(ctx, i).await?;
                let me = caller(ctx)?;
                sent.send(svc.cache.client().unsubscribe_all(me.token(), i)).await?;
                invalidate(ctx, i, stale)?;
                Ok(true)
            })
            .await
    }
}
