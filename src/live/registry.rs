//! Which installations are watched, and the one upstream event subscription (or poller) kept for
//! each while anybody watches it. A watcher holds a [`WatchGuard`]; when the last one goes, the
//! upstream subscription is deleted after a grace period (a watcher coming back in time keeps it).
//! Subscriptions witty-bff created are recognised by their URL (so they are adopted again after a
//! restart); other subscriptions are never touched.
//!
//! Upstream event subscriptions belong to the user who created them, and deliveries to an
//! installer's carry no energy or cost. So the subscription is made with an owner's token when an
//! owner watches (an installer's is replaced when an owner comes), the upstream calls use a token
//! that has not expired, and the removal uses the token of the subscription's holder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Live;
use crate::auth::Caller;
use crate::upstream::UpstreamError;
use crate::upstream::notifications::NewEventSubscription;

/// One watcher's credentials.
#[derive(Clone)]
struct Watcher {
    caller: Caller,
    owner: bool,
}

impl Watcher {
    fn usable(&self) -> bool {
        self.caller.expires_at.is_none_or(|at| at > Utc::now())
    }
}

struct Registration {
    /// The active watchers, by watch number.
    watchers: HashMap<u64, Watcher>,
    /// Whose upstream subscription it is (the freshest token seen for that user).
    holder: Option<Watcher>,
    subscription_id: Option<String>,
    validated: watch::Sender<bool>,
    setup: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
    /// Bumped at every watch, so a pending removal knows it is stale.
    generation: u64,
    /// The upstream subscription is being removed; a watcher arriving meanwhile has it set up
    /// again once that is done.
    removing: bool,
}

impl Registration {
    /// The credentials for upstream calls: an owner's if one watches, the longest-lived first.
    fn credentials(&self) -> Option<Watcher> {
        self.watchers
            .values()
            .filter(|w| w.usable())
            .max_by_key(|w| (w.owner, w.caller.expires_at.map_or(i64::MAX, |at| at.timestamp())))
            .cloned()
    }

    fn stop_polling(&mut self) {
        if let Some(p) = self.poller.take() {
            p.abort();
        }
    }
}

pub(super) struct Registry {
    inner: Mutex<HashMap<i64, Registration>>,
    /// Validations that arrived before their subscription's id was known (by lower-case name).
    early_validations: moka::sync::Cache<String, ()>,
    next_watch: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            early_validations: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            next_watch: AtomicU64::new(0),
        }
    }
}

/// Keeps an installation watched; dropping it ends the watch.
pub struct WatchGuard {
    live: Arc<Live>,
    installation_id: i64,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.live.metrics().live_subscriptions.dec();
        self.live.registry.unwatch(&self.live, self.installation_id, self.id);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Registration>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn watch(&self, live: &Arc<Live>, caller: &Caller, owner: bool, installation_id: i64) -> WatchGuard {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let watcher = Watcher { caller: caller.clone(), owner };
        let mut regs = self.lock();
        let reg = regs.entry(installation_id).or_insert_with(|| Registration {
            watchers: HashMap::new(),
            holder: None,
            subscription_id: None,
            validated: watch::channel(false).0,
            setup: None,
            poller: None,
            generation: 0,
            removing: false,
        });
        reg.generation += 1;
        // A fresher token of the holder serves the removal later.
        if let Some(h) = &mut reg.holder
            && h.caller.sub == caller.sub
            && caller.expires_at > h.caller.expires_at
        {
            h.caller = caller.clone();
        }
        // Nothing delivers events for the installation, and nothing is being set up.
        let first =
            reg.subscription_id.is_none() && reg.poller.is_none() && reg.setup.as_ref().is_none_or(|t| t.is_finished());
        // An owner replaces an installer's subscription (whose deliveries lack costs).
        let upgrade = owner
            && reg.holder.as_ref().is_some_and(|h| !h.owner)
            && reg.setup.as_ref().is_none_or(|t| t.is_finished());
        reg.watchers.insert(id, watcher);
        if (first || upgrade) && !reg.removing {
            reg.setup = Some(tokio::spawn(setup(live.clone(), installation_id)));
        }
        live.metrics().live_subscriptions.inc();
        count(live, &regs);
        WatchGuard { live: live.clone(), installation_id, id }
    }

    fn unwatch(&self, live: &Arc<Live>, installation_id: i64, id: u64) {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(&installation_id) else { return };
        reg.watchers.remove(&id);
        if !reg.watchers.is_empty() {
            return;
        }
        let generation = reg.generation;
        tokio::spawn(remove_after_grace(live.clone(), installation_id, generation));
    }

    fn credentials(&self, installation_id: i64) -> Option<Caller> {
        self.lock().get(&installation_id).and_then(Registration::credentials).map(|w| w.caller)
    }

    /// A validation handshake was answered for this subscription (or installation topic).
    pub(super) fn validated(&self, live: &Live, subscription_name: Option<&str>, topic: Option<&str>) {
        let mut regs = self.lock();
        let by_name = subscription_name.and_then(|n| {
            regs.iter()
                .find(|(_, r)| r.subscription_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(n)))
                .map(|(i, _)| *i)
        });
        let by_topic = || topic?.rsplit('/').next()?.parse::<i64>().ok().filter(|i| regs.contains_key(i));
        match by_name.or_else(by_topic) {
            Some(i) => {
                let Some(reg) = regs.get_mut(&i) else { return };
                reg.validated.send_replace(true);
                if reg.poller.is_some() {
                    tracing::info!(installation = i, "the webhook is validated after all; polling stopped");
                    reg.stop_polling();
                    count(live, &regs);
                }
            }
            None => {
                if let Some(n) = subscription_name {
                    self.early_validations.insert(n.to_ascii_lowercase(), ());
                }
            }
        }
    }

    pub(super) fn deleted(&self, live: &Arc<Live>, subscription_name: Option<&str>) {
        let Some(name) = subscription_name else { return };
        let found = {
            let mut regs = self.lock();
            regs.iter_mut()
                .find(|(_, r)| r.subscription_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(name)))
                .map(|(i, r)| {
                    r.subscription_id = None;
                    r.holder = None;
                    *i
                })
        };
        if let Some(i) = found {
            tracing::warn!(installation = i, "the upstream deleted our event subscription; polling instead");
            start_polling(live, i);
        }
    }
}

/// Updates the gauges of watched and polled installations.
fn count(live: &Live, regs: &HashMap<i64, Registration>) {
    let metrics = live.metrics();
    metrics.watched_installations.set(regs.len() as i64);
    metrics.polled_installations.set(regs.values().filter(|r| r.poller.is_some()).count() as i64);
}

fn start_polling(live: &Arc<Live>, installation_id: i64) {
    let mut regs = live.registry.lock();
    if let Some(reg) = regs.get_mut(&installation_id)
        && reg.poller.is_none()
    {
        reg.poller = Some(tokio::spawn(super::poller::run(live.clone(), installation_id)));
    }
    count(live, &regs);
}

/// After the grace period, if nobody came back: stops the poller and removes the upstream
/// subscription with its holder's token. A watcher arriving during the removal has it set up again.
async fn remove_after_grace(live: Arc<Live>, installation_id: i64, generation: u64) {
    tokio::time::sleep(live.settings.grace).await;
    let (subscription, holder) = {
        let mut regs = live.registry.lock();
        let Some(reg) = regs.get_mut(&installation_id) else { return };
        if !reg.watchers.is_empty() || reg.generation != generation || reg.removing {
            return;
        }
        reg.removing = true;
        reg.stop_polling();
        if let Some(t) = reg.setup.take() {
            t.abort();
        }
        reg.validated.send_replace(false);
        (reg.subscription_id.take(), reg.holder.take())
    };
    if let (Some(id), Some(holder)) = (subscription, holder) {
        let client = live.cache.client();
        match client.unsubscribe(holder.caller.token(), installation_id, &id).await {
            Ok(()) | Err(UpstreamError::NotFound { .. }) => {
                tracing::info!(installation = installation_id, "upstream event subscription removed")
            }
            Err(e) => tracing::warn!(
                installation = installation_id,
                error = %e,
                "could not remove the upstream event subscription; the next watch adopts it again"
            ),
        }
    }
    let mut regs = live.registry.lock();
    let Some(reg) = regs.get_mut(&installation_id) else { return };
    reg.removing = false;
    if reg.watchers.is_empty() {
        regs.remove(&installation_id);
    } else {
        reg.setup = Some(tokio::spawn(setup(live.clone(), installation_id)));
    }
    count(&live, &regs);
}

/// Registers (or adopts) the upstream subscription with the best credentials at hand, replaces
/// one held by somebody else (an installer's, when an owner now watches), then waits for the
/// validation; polls when webhooks are off, registration fails or validation does not come in time.
async fn setup(live: Arc<Live>, installation_id: i64) {
    if !live.settings.webhooks {
        start_polling(&live, installation_id);
        return;
    }
    loop {
        let Some(holder) = register(&live, installation_id).await else { return };
        // An owner who came while an installer's subscription was being made: theirs instead.
        let owner_waits = {
            let regs = live.registry.lock();
            regs.get(&installation_id).and_then(Registration::credentials).is_some_and(|w| w.owner && !holder.owner)
        };
        if !owner_waits {
            return;
        }
    }
}

/// One registration round of [`setup`]; returns who now holds the subscription.
async fn register(live: &Arc<Live>, installation_id: i64) -> Option<Watcher> {
    let watcher = live.registry.lock().get(&installation_id).and_then(Registration::credentials)?;
    let (id, already_valid) = match ensure_subscription(live, &watcher.caller, installation_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(installation = installation_id, error = %e, "cannot register the webhook; polling instead");
            start_polling(live, installation_id);
            return None;
        }
    };
    let (replaced, mut validated) = {
        let mut regs = live.registry.lock();
        let reg = regs.get_mut(&installation_id)?;
        let previous = match (&reg.holder, &reg.subscription_id) {
            (Some(h), Some(old)) if h.caller.sub != watcher.caller.sub => Some((old.clone(), h.clone())),
            _ => None,
        };
        if previous.is_some() {
            reg.validated.send_replace(false);
        }
        reg.subscription_id = Some(id.clone());
        reg.holder = Some(watcher.clone());
        // Checked under the registry's lock, as `validated` records early ones under it.
        if already_valid || live.registry.early_validations.remove(&id.to_ascii_lowercase()).is_some() {
            reg.validated.send_replace(true);
            reg.stop_polling();
        }
        let validated = reg.validated.subscribe();
        count(live, &regs);
        (previous, validated)
    };
    if let Some((old, holder)) = replaced {
        match live.cache.client().unsubscribe(holder.caller.token(), installation_id, &old).await {
            Ok(()) | Err(UpstreamError::NotFound { .. }) => {
                tracing::info!(
                    installation = installation_id,
                    "replaced the upstream event subscription with an owner's"
                )
            }
            Err(e) => {
                tracing::warn!(installation = installation_id, error = %e, "could not remove the replaced upstream event subscription")
            }
        }
    }
    let ok = tokio::time::timeout(live.settings.validation_timeout, validated.wait_for(|v| *v)).await;
    if !matches!(ok, Ok(Ok(_))) {
        tracing::warn!(
            installation = installation_id,
            "the upstream did not validate the webhook in time; polling until it does"
        );
        start_polling(live, installation_id);
    }
    Some(watcher)
}

/// Our subscription on the installation: adopted when one with our URL exists, else created.
/// Subscriptions of ours with another URL (an older secret or address) are replaced.
async fn ensure_subscription(live: &Live, caller: &Caller, i: i64) -> Result<(String, bool), UpstreamError> {
    let client = live.cache.client();
    let url = live.webhook_url();
    let ours = format!("{}/webhooks/witty/", live.settings.public_url.as_str().trim_end_matches('/'));
    for s in client.event_subscriptions(caller.token(), i).await? {
        let data = s.protocol_data.as_deref().unwrap_or_default();
        if !data.starts_with(&ours) {
            continue;
        }
        let failed = s.state.as_deref().is_some_and(|st| st.eq_ignore_ascii_case("failed"));
        if data == url && !failed {
            let valid = s.state.as_deref().is_some_and(|st| st.eq_ignore_ascii_case("created"));
            tracing::info!(installation = i, "adopted the existing upstream event subscription");
            return Ok((s.event_subscription_id, valid));
        }
        let _ = client.unsubscribe(caller.token(), i, &s.event_subscription_id).await;
    }
    let new = NewEventSubscription { protocol_code: "Webhook".into(), protocol_data: url, event_type: None };
    let created = client.subscribe(caller.token(), i, &new).await?;
    tracing::info!(installation = i, "registered the webhook upstream");
    Ok((created.event_subscription_id, false))
}

impl Live {
    /// Credentials for reading an installation on the watchers' behalf (the poller's).
    pub(super) fn registry_caller(&self, installation_id: i64) -> Option<Caller> {
        self.registry.credentials(installation_id)
    }
}
