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
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::parser::types::{Selection, SelectionSet};
use async_graphql::{Context, MergedObject};
use tokio::sync::watch;

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

/// What a mutation tells the user when the upstream did not confirm its write: what was asked,
/// and where to look to learn whether it happened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doubt {
    /// e.g. "the command", "the new installation".
    pub what: &'static str,
    /// e.g. "delivered", "created".
    pub done: &'static str,
    /// e.g. "the charging station's state", "your installations".
    pub check: &'static str,
}

impl Doubt {
    fn error(&self) -> AppError {
        AppError::UpstreamUnavailable(format!(
            "the Witty-Home service did not confirm {}: it may or may not have been {}. Check {} before sending it again",
            self.what, self.done, self.check
        ))
    }
}

/// A failure of a write, said so the user knows whether it may have happened.
pub(crate) fn command_error(e: UpstreamError, doubt: Doubt) -> AppError {
    match e {
        UpstreamError::Timeout | UpstreamError::Unreachable(_) => doubt.error(),
        other => other.into(),
    }
}

/// Whether a failed write certainly did not run upstream, so that sending it again under the same
/// idempotency key is right: throttled (429, or 403 with `Retry-After`), a service that says it
/// is unavailable (503), or a token refused (401: the client refreshes it and tries again). A
/// timeout, a connection cut after sending, or a gateway's 502 or 504 (it passed the request on)
/// may have run; another 4xx is the upstream's answer to this request. A connection that could not
/// be made (`NotConnected`) sent nothing; one reset or cut (`Unreachable`) may have sent it.
fn did_not_run(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::RateLimited { .. }
            | UpstreamError::Unauthorized { .. }
            | UpstreamError::Server { status: 503, .. }
            | UpstreamError::NotConnected(_)
    )
}

/// Given to a mutation run under an idempotency key: its write goes through [`Sent::send`], which
/// records whether it may have reached the upstream. From then on the outcome is kept for the key,
/// even a failure, unless the upstream's answer shows the write did not run.
#[derive(Clone)]
pub struct Sent {
    sent: Arc<AtomicBool>,
    doubt: Doubt,
}

impl Sent {
    fn new(doubt: Doubt) -> Sent {
        Sent { sent: Arc::new(AtomicBool::new(false)), doubt }
    }

    /// Sends the mutation's one upstream write (never retried) and sorts its failure.
    pub(crate) async fn send<V>(&self, write: impl Future<Output = Result<V, UpstreamError>>) -> AppResult<V> {
        self.sent.store(true, Ordering::SeqCst);
        write.await.map_err(|e| {
            if did_not_run(&e) {
                self.sent.store(false, Ordering::SeqCst);
            }
            command_error(e, self.doubt)
        })
    }

    fn was_sent(&self) -> bool {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Which request an idempotency key names: the caller, the key and, for the header (which covers
/// every mutation of the HTTP request), the field's place among the operation's root fields.
/// Never the alias: a retry may name the field differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    who: Arc<str>,
    key: String,
    place: Option<usize>,
}

/// The first request made with a key, and its outcome (an `AppResult<T>`).
struct Stored {
    /// The mutation field (not its alias).
    field: String,
    /// The field's arguments as the mutation normalised them.
    fingerprint: String,
    outcome: Arc<dyn Any + Send + Sync>,
}

type Outcome = watch::Receiver<Option<Arc<Stored>>>;

/// Results of mutations sent with an idempotency key, kept for a window: the same key from the
/// same caller, for the same mutation with the same arguments, returns the first result without
/// calling the upstream again; for a different request it is refused. Concurrent requests with
/// one key wait for the first one's outcome.
pub struct Idempotency {
    kept: moka::sync::Cache<Slot, Arc<Stored>>,
    /// The requests running now, by key; checked together with `kept` under this lock.
    running: std::sync::Mutex<HashMap<Slot, Outcome>>,
}

impl Idempotency {
    pub fn new(window: Duration) -> Idempotency {
        Idempotency {
            kept: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(window).build(),
            running: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Outcome>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `mutation` once per key. `fingerprint` describes the field's arguments; reusing a key
    /// for another field or other arguments is refused. An outcome that shows nothing ran upstream
    /// (a failure before [`Sent::send`], or one [`did_not_run`] names) is not kept, so the same
    /// key may try again; any other is kept for the window, even when the request that ran it
    /// was dropped (the client went away) after sending: then the key answers `doubt`.
    pub(crate) async fn once<T, F, Fut>(
        &self,
        ctx: &Context<'_>,
        explicit: Option<String>,
        fingerprint: String,
        doubt: Doubt,
        mutation: F,
    ) -> AppResult<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(Sent) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let sent = Sent::new(doubt);
        let (key, place) = match explicit {
            Some(key) => (key, None),
            None => match ctx.data_opt::<IdempotencyKey>() {
                Some(header) => (header.0.clone(), Some(root_field_place(ctx))),
                None => return mutation(sent).await,
            },
        };
        if key.trim().is_empty() || key.len() > 255 {
            return Err(AppError::bad_input("the idempotency key must be 1 to 255 characters"));
        }
        let slot = Slot { who: caller(ctx)?.sub.clone(), key, place };
        let field = ctx.item.node.name.node.to_string();
        loop {
            let role = {
                let mut running = self.running();
                if let Some(first) = self.kept.get(&slot) {
                    return replay(&slot, &first, &field, &fingerprint);
                }
                match running.get(&slot) {
                    Some(outcome) => Role::Wait(outcome.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(slot.clone(), rx);
                        Role::Lead(tx)
                    }
                }
            };
            match role {
                Role::Lead(tx) => {
                    let mut lead = Lead {
                        store: self,
                        slot: &slot,
                        field: &field,
                        fingerprint: &fingerprint,
                        sent: sent.clone(),
                        tx: Some(tx),
                        outcome: PhantomData::<T>,
                    };
                    let outcome = mutation(sent).await;
                    lead.settle(outcome.clone());
                    return outcome;
                }
                // Another request with this key is running: its outcome is this one's, even one
                // that is not kept (concurrent duplicates make one upstream call).
                Role::Wait(mut outcome) => {
                    let first = match outcome.wait_for(Option::is_some).await {
                        Ok(first) => first.clone(),
                        // It was dropped before sending anything: try again (perhaps running it here).
                        Err(_) => continue,
                    };
                    if let Some(first) = first {
                        return replay(&slot, &first, &field, &fingerprint);
                    }
                }
            }
        }
    }
}

enum Role {
    Lead(watch::Sender<Option<Arc<Stored>>>),
    Wait(Outcome),
}

/// The first request's outcome, or a refusal if this request is another one.
fn replay<T: Clone + 'static>(slot: &Slot, first: &Stored, field: &str, fingerprint: &str) -> AppResult<T> {
    if first.field != field || first.fingerprint != fingerprint {
        let other = if first.field == field { format!("{field} with other arguments") } else { first.field.clone() };
        return Err(AppError::bad_input(format!(
            "the idempotency key '{}' was already used for a different request ({other}); nothing was sent. \
             Use a new key for a new request",
            slot.key
        )));
    }
    first
        .outcome
        .downcast_ref::<AppResult<T>>()
        .cloned()
        .unwrap_or_else(|| Err(AppError::internal("idempotent result of another type")))
}

/// The request that runs the mutation of a key while others with the key wait for it. Dropped
/// before it settled (the client went away), it keeps a doubt for the key if the write was sent.
struct Lead<'a, T: Clone + Send + Sync + 'static> {
    store: &'a Idempotency,
    slot: &'a Slot,
    field: &'a str,
    fingerprint: &'a str,
    sent: Sent,
    tx: Option<watch::Sender<Option<Arc<Stored>>>>,
    outcome: PhantomData<T>,
}

impl<T: Clone + Send + Sync + 'static> Lead<'_, T> {
    fn settle(&mut self, outcome: AppResult<T>) {
        let Some(tx) = self.tx.take() else { return };
        let keep = outcome.is_ok() || self.sent.was_sent();
        let stored = Arc::new(Stored {
            field: self.field.to_string(),
            fingerprint: self.fingerprint.to_string(),
            outcome: Arc::new(outcome),
        });
        let mut running = self.store.running();
        if keep {
            self.store.kept.insert(self.slot.clone(), stored.clone());
        }
        running.remove(self.slot);
        tx.send_replace(Some(stored));
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        if self.tx.is_none() {
            return;
        }
        if self.sent.was_sent() {
            tracing::warn!(field = self.field, "a mutation was dropped after sending its write; its key keeps a doubt");
            self.settle(Err(self.sent.doubt.error()));
        } else {
            // Nothing was sent: waiters see the channel close and try again themselves.
            self.store.running().remove(self.slot);
            self.tx = None;
        }
    }
}

/// The place of the current field among the operation's root fields (fragments spread in place),
/// so that one `Idempotency-Key` header covers each mutation of a request whatever its alias.
fn root_field_place(ctx: &Context<'_>) -> usize {
    fn walk(set: &SelectionSet, ctx: &Context<'_>, n: &mut usize, depth: u8) -> bool {
        for selection in &set.items {
            let found = match &selection.node {
                Selection::Field(f) if f.pos == ctx.item.pos => return true,
                Selection::Field(_) => {
                    *n += 1;
                    false
                }
                Selection::FragmentSpread(s) => {
                    depth < 16
                        && ctx
                            .query_env
                            .fragments
                            .get(&s.node.fragment_name.node)
                            .is_some_and(|f| walk(&f.node.selection_set.node, ctx, n, depth + 1))
                }
                Selection::InlineFragment(f) => depth < 16 && walk(&f.node.selection_set.node, ctx, n, depth + 1),
            };
            if found {
                return true;
            }
        }
        false
    }
    let mut n = 0;
    walk(&ctx.query_env.operation.node.selection_set.node, ctx, &mut n, 0);
    n
}

/// Drops every cached resource of an installation that `stale` names, for every caller.
pub(crate) fn invalidate(ctx: &Context<'_>, installation_id: i64, stale: fn(&Resource) -> bool) -> AppResult<()> {
    services(ctx)?.cache.invalidate(move |r| r.installation_id() == Some(installation_id) && stale(r));
    Ok(())
}
