//! The mutation side of the schema: station commands, installations, sharing, TIC consent,
//! tariffs and notification subscriptions. Every mutation validates its input before the upstream
//! is called, checks the caller's role itself, never retries a command, and drops exactly the
//! cached entries it makes stale.

mod installations;
mod meters;
mod notifications;
mod sharing;
mod stations;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, MergedObject};

pub use stations::{CommandResult, CommandStatus};

use super::context::caller;
use super::error::{AppError, AppResult};
use crate::cache::{Resource, SharedCache};
use crate::events::SharedBus;
use crate::upstream::UpstreamError;

#[derive(MergedObject, Default)]
pub struct Mutation(
    installations::InstallationMutation,
    stations::StationMutation,
    sharing::SharingMutation,
    meters::MeterMutation,
    notifications::NotificationMutation,
);

/// How commands behave.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// How long `wait: true` waits for the station to show the change.
    pub wait_timeout: Duration,
}

/// What mutations need besides the request's caller.
pub struct Services {
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub commands: CommandSettings,
    pub idempotency: Idempotency,
    pub live: Arc<crate::live::Live>,
}

pub fn services<'a>(ctx: &Context<'a>) -> AppResult<&'a Services> {
    ctx.data::<Services>().map_err(|_| AppError::internal("no services in the schema"))
}

/// The `Idempotency-Key` header of the HTTP request, put in the request data by the transport.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

/// A failure of a command, said so the user knows whether it may have happened.
pub(crate) fn command_error(e: UpstreamError) -> AppError {
    match e {
        UpstreamError::Timeout | UpstreamError::Unreachable(_) => AppError::UpstreamUnavailable(
            "the Witty-Home service did not confirm the command: it may or may not have been delivered. \
             Check the station's state before sending it again"
                .into(),
        ),
        other => other.into(),
    }
}

/// Marks the moment a mutation sends its write upstream (from then on its outcome is kept for
/// its idempotency key, even a failure: the write may have happened).
#[derive(Clone, Default)]
pub struct Sent(Arc<std::sync::atomic::AtomicBool>);

impl Sent {
    pub fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn was_sent(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Stored {
    fingerprint: String,
    outcome: Arc<dyn Any + Send + Sync>,
}

/// Results of mutations sent with an idempotency key, kept for a window: the same key (from the
/// same caller, for the same field) returns the first result without calling the upstream again.
pub struct Idempotency {
    cache: moka::future::Cache<(Arc<str>, String), Arc<Stored>>,
}

impl Idempotency {
    pub fn new(window: Duration) -> Idempotency {
        Idempotency { cache: moka::future::Cache::builder().max_capacity(100_000).time_to_live(window).build() }
    }

    /// Runs `mutation` once per key. `fingerprint` describes the request: reusing a key for a
    /// different request is refused. A failure before the mutation marked itself [`Sent`] is not
    /// kept: nothing happened upstream, so the same key may try again.
    pub async fn once<T, F, Fut>(
        &self,
        ctx: &Context<'_>,
        explicit: Option<String>,
        fingerprint: String,
        mutation: F,
    ) -> AppResult<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(Sent) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let header = ctx.data_opt::<IdempotencyKey>().map(|k| k.0.clone());
        let sent = Sent::default();
        let Some(key) = explicit.or(header) else { return mutation(sent).await };
        if key.trim().is_empty() || key.len() > 255 {
            return Err(AppError::bad_input("the idempotency key must be 1 to 255 characters"));
        }
        let who = caller(ctx)?.sub.clone();
        // One header may cover several mutations of a request: scope it by the field's response key.
        let scoped = format!("{}\u{1f}{key}", ctx.item.node.response_key().node);
        let cache_key = (who, scoped);
        let marker = sent.clone();
        let stored = self
            .cache
            .get_with(cache_key.clone(), async {
                let outcome: AppResult<T> = mutation(marker).await;
                Arc::new(Stored { fingerprint: fingerprint.clone(), outcome: Arc::new(outcome) })
            })
            .await;
        let failed_unsent =
            !sent.was_sent() && stored.outcome.downcast_ref::<AppResult<T>>().is_some_and(|r| r.is_err());
        if failed_unsent && stored.fingerprint == fingerprint {
            self.cache.invalidate(&cache_key).await;
        }
        if stored.fingerprint != fingerprint {
            return Err(AppError::bad_input(format!(
                "the idempotency key '{key}' was first used for a different request; use a new key"
            )));
        }
        stored
            .outcome
            .clone()
            .downcast::<AppResult<T>>()
            .map(|r| (*r).clone())
            .unwrap_or_else(|_| Err(AppError::internal("idempotent result of another type")))
    }
}

/// Drops every cached resource of an installation that `stale` names, for every caller.
pub(crate) fn invalidate(ctx: &Context<'_>, installation_id: i64, stale: fn(&Resource) -> bool) -> AppResult<()> {
    services(ctx)?.cache.invalidate(move |r| r.installation_id() == Some(installation_id) && stale(r));
    Ok(())
}
