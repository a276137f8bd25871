//! Which installations are watched, and the one upstream event subscription (or poller) kept for
//! each while anybody watches it. A watcher holds a [`WatchGuard`]; when the last one goes, the
//! upstream subscription is deleted after a grace period (a watcher coming back in time keeps it).
//! Subscriptions witty-bff created are recognised by their URL (so they are adopted again after a
//! restart); other subscriptions are never touched.
//!
//! Upstream event subscriptions belong to the user who created them, and deliveries to an
//! installer's carry no energy or cost. So the subscription is made with an owner's token when an
//! owner watches (an installer's is replaced when an owner comes), the upstream calls use a token
//! that has not expired, and the removal uses the token of the subscription's holder. When that
//! token has expired meanwhile (a subscription ended by its token's expiry, say), the removal
//! waits for the next token of that user witty-bff sees, on any request (`orphans` keeps the book).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Live;
use super::orphans::{self, Orphans, Outcome};
use super::strays::Strays;
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
        usable(&self.caller)
    }
}

/// The token has not expired.
fn usable(caller: &Caller) -> bool {
    caller.expires_at.is_none_or(|at| at > Utc::now())
}

struct Registration {
    /// Tells this registration from a later one of the same installation.
    id: u64,
    /// The active watchers, by watch number.
    watchers: HashMap<u64, Watcher>,
    /// Whose upstream subscription it is (the freshest token seen for that user).
    holder: Option<Watcher>,
    /// The last watcher to leave: the poller keeps reading with it through the grace period.
    last: Option<Watcher>,
    subscription_id: Option<String>,
    validated: watch::Sender<bool>,
    /// A setup task runs (it clears this under the lock when it is done).
    setting_up: bool,
    poller: Option<JoinHandle<()>>,
    /// Bumped at every watch, so a pending removal knows it is stale.
    generation: u64,
    /// The upstream subscription is being removed; a watcher arriving meanwhile has it set up
    /// again once that is done.
    removing: bool,
    /// When the upstream last deleted our subscription while it was watched and it was made again.
    remade: Option<Instant>,
    /// A task will make it again once it may (see `remake_later`).
    remake_pending: bool,
    /// In a fleet: this replica holds the installation's lease, so it keeps the upstream
    /// subscription (or the poller); else another replica does, and events come through Redis.
    leading: bool,
    /// In a fleet: a task renews this replica's watching and lease (see `tend`).
    tending: bool,
}

impl Registration {
    fn new(id: u64) -> Registration {
        Registration {
            id,
            watchers: HashMap::new(),
            holder: None,
            last: None,
            subscription_id: None,
            validated: watch::channel(false).0,
            setting_up: false,
            poller: None,
            generation: 0,
            removing: false,
            remade: None,
            remake_pending: false,
            leading: false,
            tending: false,
        }
    }

    /// The credentials for upstream calls: an owner's if one watches, the longest-lived first;
    /// in the grace period, the holder's or the last watcher's.
    fn credentials(&self) -> Option<Watcher> {
        let watching = self.watchers.values().filter(|w| w.usable()).max_by_key(|w| (w.owner, expiry(&w.caller)));
        watching.or_else(|| [&self.holder, &self.last].into_iter().flatten().find(|w| w.usable())).cloned()
    }

    /// A poller runs (one that ended for want of credentials does not count).
    fn polling(&self) -> bool {
        self.poller.as_ref().is_some_and(|p| !p.is_finished())
    }

    fn stop_polling(&mut self) {
        if let Some(p) = self.poller.take() {
            p.abort();
        }
    }

    /// The webhook is registered and validated: events arrive through it.
    fn webhook_works(&self) -> bool {
        self.subscription_id.is_some() && *self.validated.borrow()
    }
}

/// When a token stops working (never: `i64::MAX`).
fn expiry(c: &Caller) -> i64 {
    c.expires_at.map_or(i64::MAX, |at| at.timestamp())
}

/// The registration of `installation_id` if it is still the one numbered `id`.
fn current(regs: &mut HashMap<i64, Registration>, installation_id: i64, id: u64) -> Option<&mut Registration> {
    regs.get_mut(&installation_id).filter(|r| r.id == id)
}

pub(super) struct Registry {
    inner: Mutex<HashMap<i64, Registration>>,
    /// Validations that arrived before their subscription's id was known (by lower-case name).
    early_validations: moka::sync::Cache<(i64, String), ()>,
    next_id: AtomicU64,
    /// Upstream subscriptions of ours whose removal failed: removed with the holder's next token.
    orphans: Orphans,
    /// Installations receiving deliveries nobody here asked for: a subscription an earlier run left.
    strays: Strays,
    /// Installations whose registration went lately: a delivery still on its way (Event Grid
    /// retries for up to a day) is no stray.
    gone: moka::sync::Cache<i64, ()>,
}

impl Registry {
    /// A registry whose failed removals are tried again after `backoff` (doubling; at most
    /// `orphans::MAX_BACKOFF` at first).
    pub(super) fn new(backoff: Duration) -> Self {
        Registry {
            inner: Mutex::default(),
            early_validations: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            next_id: AtomicU64::new(0),
            orphans: Orphans::new(backoff),
            strays: Strays::default(),
            gone: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }
}

/// Keeps an installation watched; dropping it ends the watch.
pub(crate) struct WatchGuard {
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.strays.settled(installation_id);
        let mut regs = self.lock();
        let reg = regs.entry(installation_id).or_insert_with(|| Registration::new(id));
        reg.generation += 1;
        // A fresher token of the holder serves the removal later.
        if let Some(h) = &mut reg.holder
            && h.caller.sub == caller.sub
            && expiry(caller) > expiry(&h.caller)
        {
            h.caller = caller.clone();
        }
        reg.watchers.insert(id, Watcher { caller: caller.clone(), owner });
        // Nothing delivers the installation's events; or an owner comes to an installer's
        // subscription (whose deliveries lack costs).
        let silent = reg.subscription_id.is_none() && !reg.polling();
        let upgrade = owner && reg.holder.as_ref().is_some_and(|h| !h.owner);
        if (silent || upgrade) && !reg.removing && !reg.setting_up {
            reg.setting_up = true;
            tokio::spawn(setup(live.clone(), installation_id, reg.id));
        }
        if live.fleet().is_some() && !reg.tending {
            reg.tending = true;
            tokio::spawn(tend(live.clone(), installation_id, reg.id));
        }
        live.metrics().live_subscriptions.inc();
        count(live, &regs);
        WatchGuard { live: live.clone(), installation_id, id }
    }

    fn unwatch(&self, live: &Arc<Live>, installation_id: i64, id: u64) {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(&installation_id) else { return };
        let left = reg.watchers.remove(&id);
        if !reg.watchers.is_empty() {
            return;
        }
        reg.last = left;
        // Outside a runtime (a watch dropped while the process shuts down) nothing is left to do.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(remove_after_grace(live.clone(), installation_id, reg.id, reg.generation));
        }
    }

    /// A request came with `caller`'s token: the subscriptions of theirs we failed to remove
    /// (and whose backoff is over) are removed with it.
    pub(super) fn token_seen(&self, live: &Arc<Live>, caller: &Caller) {
        if !usable(caller) {
            return;
        }
        for (installation_id, subscription_id) in self.orphans.take_due(live.metrics(), &caller.sub, Instant::now()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(remove_orphan(live.clone(), installation_id, subscription_id, caller.clone()));
            }
        }
        let strays = self.strays.due(&caller.sub);
        if !strays.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(remove_strays(live.clone(), caller.clone(), strays));
        }
    }

    /// A delivery came at the webhook of an installation: one nobody watches here is a stray.
    pub(super) fn delivered(&self, installation_id: i64) {
        if self.lock().contains_key(&installation_id) || self.gone.contains_key(&installation_id) {
            return;
        }
        if self.strays.seen(installation_id, Instant::now()) {
            tracing::info!(
                installation = installation_id,
                "deliveries come for an installation nobody watches (a subscription an earlier run left); \
                 removed with the next token of the member who made it"
            );
        }
    }

    fn credentials(&self, installation_id: i64) -> Option<Caller> {
        self.lock().get(&installation_id).and_then(Registration::credentials).map(|w| w.caller)
    }

    /// The upstream subscription events of the installation should come from, if known.
    pub(super) fn subscription_of(&self, installation_id: i64) -> Option<String> {
        self.lock().get(&installation_id).and_then(|r| r.subscription_id.clone())
    }

    /// A validation handshake was answered at the webhook of `installation` for this subscription
    /// (or, for a delivery without a subscription name, for the installation's).
    pub(super) fn validated(&self, live: &Live, installation: i64, subscription_name: Option<&str>) {
        let mut regs = self.lock();
        let target = match subscription_name {
            Some(n) => regs
                .get(&installation)
                .and_then(|r| r.subscription_id.as_deref())
                .is_some_and(|id| id.eq_ignore_ascii_case(n)),
            None => regs.contains_key(&installation),
        };
        match target.then(|| regs.get_mut(&installation).map(|r| (installation, r))).flatten() {
            Some((i, reg)) => {
                reg.validated.send_replace(true);
                if reg.polling() {
                    tracing::info!(installation = i, "the webhook is validated after all; polling stopped");
                    reg.stop_polling();
                    count(live, &regs);
                }
            }
            None => {
                if let Some(n) = subscription_name {
                    self.early_validations.insert((installation, n.to_ascii_lowercase()), ());
                }
            }
        }
    }

    /// The upstream deleted a subscription, said the webhook of `installation` (a member's
    /// `unsubscribeAllNotifications` deletes ours too). While the installation is watched, ours is
    /// made again, at most once per grace period (and at least a second apart); it is polled
    /// until the new one works.
    pub(super) fn deleted(&self, live: &Arc<Live>, installation: i64, subscription_name: Option<&str>) {
        let Some(name) = subscription_name else { return };
        let every = live.settings.grace.max(Duration::from_secs(1));
        let found = {
            let mut regs = self.lock();
            regs.get_mut(&installation)
                .filter(|r| r.subscription_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(name)))
                .map(|r| {
                    r.subscription_id = None;
                    r.holder = None;
                    r.validated.send_replace(false);
                    // Once the throttle allows (at once, the first time).
                    let wait = r.remade.map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()));
                    let remake = !r.watchers.is_empty() && !r.removing && !r.remake_pending;
                    r.remake_pending |= remake;
                    (r.id, remake.then_some(wait))
                })
        };
        let Some((reg_id, remake)) = found else { return };
        start_polling(live, installation);
        tracing::warn!(installation, "the upstream deleted our event subscription; polling until it is made again");
        if let Some(wait) = remake {
            tokio::spawn(remake_later(live.clone(), installation, reg_id, wait));
        }
    }
}

/// Makes our subscription again after `wait`, if the installation is still watched and has none;
/// waits while a setup runs (one waiting on the very subscription just deleted, say).
async fn remake_later(live: Arc<Live>, installation_id: i64, reg_id: u64, mut wait: Duration) {
    loop {
        tokio::time::sleep(wait).await;
        // Some(true): make it now; Some(false): nothing to do; None: a setup runs, wait.
        let now = {
            let mut regs = live.registry.lock();
            match current(&mut regs, installation_id, reg_id) {
                None => Some(false),
                Some(reg) if reg.setting_up => None,
                Some(reg) => {
                    reg.remake_pending = false;
                    let wanted = !reg.watchers.is_empty() && !reg.removing && reg.subscription_id.is_none();
                    if wanted {
                        reg.setting_up = true;
                        reg.remade = Some(Instant::now());
                    }
                    Some(wanted)
                }
            }
        };
        match now {
            Some(true) => return setup(live, installation_id, reg_id).await,
            Some(false) => return,
            None => wait = Duration::from_millis(500),
        }
    }
}

/// Updates the gauges of watched and polled installations.
fn count(live: &Live, regs: &HashMap<i64, Registration>) {
    let metrics = live.metrics();
    metrics.watched_installations.set(regs.len() as i64);
    metrics.polled_installations.set(regs.values().filter(|r| r.polling()).count() as i64);
}

fn start_polling(live: &Arc<Live>, installation_id: i64) {
    let mut regs = live.registry.lock();
    if let Some(reg) = regs.get_mut(&installation_id)
        && !reg.polling()
        && !reg.removing
    {
        reg.poller = Some(tokio::spawn(super::poller::run(live.clone(), installation_id)));
    }
    count(live, &regs);
}

/// How a removal went.
enum Removal {
    Done,
    /// Refused for good (the holder lost access, say): trying again changes nothing.
    Refused(String),
    Failed(String),
    /// Not tried: the holder's token has expired.
    Expired,
}

/// Removes an upstream subscription with its holder's token (a 404 means it is gone already).
async fn try_unsubscribe(live: &Live, installation_id: i64, holder: &Caller, id: &str, why: &str) -> Removal {
    if !usable(holder) {
        return Removal::Expired;
    }
    let removal = match live.cache.client().unsubscribe(holder.token(), installation_id, id).await {
        Ok(()) | Err(UpstreamError::NotFound { .. }) => Removal::Done,
        Err(e @ (UpstreamError::Forbidden { .. } | UpstreamError::Rejected { .. })) => Removal::Refused(e.to_string()),
        Err(e) => Removal::Failed(e.to_string()),
    };
    match &removal {
        Removal::Done => tracing::info!(installation = installation_id, why, "upstream event subscription removed"),
        Removal::Refused(error) | Removal::Failed(error) => {
            tracing::warn!(
                installation = installation_id,
                why,
                error,
                "could not remove an upstream event subscription"
            )
        }
        Removal::Expired => {}
    }
    removal
}

/// Removes an upstream subscription; one that cannot be removed now (its holder's token has
/// expired, or the upstream failed) is removed with the holder's next token.
async fn unsubscribe(live: &Live, installation_id: i64, holder: &Caller, id: &str, why: &str) {
    match try_unsubscribe(live, installation_id, holder, id, why).await {
        Removal::Done => {}
        Removal::Refused(_) => {
            orphans::give_up(live.metrics(), &holder.sub, installation_id, id, "the upstream refused")
        }
        Removal::Failed(_) | Removal::Expired => {
            tracing::info!(
                installation = installation_id,
                why,
                "an upstream event subscription goes with its holder's next token"
            );
            live.registry.orphans.record(live.metrics(), &holder.sub, installation_id, id, Instant::now());
        }
    }
}

/// Removes a subscription we failed to remove before, with a fresh token of its holder. It waits
/// a grace period first, so the holder coming back (a fresh token, then a subscribe) adopts it and
/// events flow at once. A try that fails or has to wait is made again with the same token while it
/// lasts; after that, with the holder's next one.
async fn remove_orphan(live: Arc<Live>, installation_id: i64, subscription_id: String, holder: Caller) {
    let orphans = &live.registry.orphans;
    let mut wait = live.settings.grace;
    loop {
        tokio::time::sleep(wait).await;
        let outcome = try_orphan(&live, installation_id, &subscription_id, &holder).await;
        let Some(due) = orphans.settle(live.metrics(), &holder.sub, &subscription_id, outcome, Instant::now()) else {
            return;
        };
        wait = due.saturating_duration_since(Instant::now());
        let lasts = holder.expires_at.is_none_or(|at| at > Utc::now() + wait);
        if !lasts || !orphans.resume(&holder.sub, &subscription_id) {
            return;
        }
    }
}

/// One try of `remove_orphan`. Where nobody watches, the installation is marked as being removed
/// meanwhile, as after a grace period.
async fn try_orphan(live: &Arc<Live>, installation_id: i64, subscription_id: &str, holder: &Caller) -> Outcome {
    let ours = |id: &str| id.eq_ignore_ascii_case(subscription_id);
    let elsewhere = watched_elsewhere(live, installation_id).await;
    // Where nobody watches, the registration marking the removal.
    let mut marked = None;
    {
        let mut regs = live.registry.lock();
        match regs.get(&installation_id) {
            // Adopted again: it is in use.
            Some(reg) if reg.subscription_id.as_deref().is_some_and(ours) => return Outcome::Settled,
            // Watched through another subscription (an owner's replaced this installer's, say):
            // nothing adopts this one, it goes now.
            Some(reg) if reg.subscription_id.is_some() && !reg.setting_up && !reg.removing => {}
            // Being set up (it may adopt this one) or removed: looked at again later.
            Some(_) => return Outcome::NotYet { wait: live.settings.grace.max(Duration::from_secs(1)) },
            // Kept by another replica of the fleet (or Redis cannot tell): not ours to remove.
            None if elsewhere => {
                return Outcome::NotYet { wait: live.settings.grace.max(Duration::from_secs(1)) };
            }
            None => {
                let mut reg = Registration::new(live.registry.next_id.fetch_add(1, Ordering::Relaxed));
                reg.removing = true;
                marked = Some(reg.id);
                regs.insert(installation_id, reg);
            }
        }
    }
    let why = "removed with its holder's fresh token";
    let outcome = match try_unsubscribe(live, installation_id, holder, subscription_id, why).await {
        Removal::Done => Outcome::Settled,
        Removal::Refused(_) => Outcome::Refused,
        Removal::Failed(_) => Outcome::Failed,
        Removal::Expired => Outcome::NotYet { wait: Duration::ZERO },
    };
    if let Some(reg_id) = marked {
        removed(live, installation_id, reg_id);
    }
    outcome
}

/// Looks, with `caller`'s token, for subscriptions of ours left on the stray installations they
/// are a member of, and removes them (as an orphan's removal: adopted instead if a watcher came).
async fn remove_strays(live: Arc<Live>, caller: Caller, candidates: Vec<i64>) {
    let Ok((theirs, _)) = live.cache.get(&caller, crate::cache::read::Installations).await else { return };
    let ours = live.webhook_base();
    for i in candidates.into_iter().filter(|i| theirs.iter().any(|x| x.installation_id == *i)) {
        let Ok(subs) = live.cache.client().event_subscriptions(caller.token(), i).await else { continue };
        for s in subs.iter().filter(|s| s.protocol_data.as_deref().is_some_and(|d| d.starts_with(&ours))) {
            if try_orphan(&live, i, &s.event_subscription_id, &caller).await == Outcome::Settled {
                tracing::info!(installation = i, "removed an upstream event subscription an earlier run left");
                live.registry.strays.settled(i);
            }
        }
    }
}

/// After the grace period, if nobody came back: stops the poller and removes the upstream
/// subscription with its holder's token. A setup still running drops what it registers (it sees
/// `removing`); a watcher arriving during the removal has the installation set up again.
async fn remove_after_grace(live: Arc<Live>, installation_id: i64, reg_id: u64, generation: u64) {
    tokio::time::sleep(live.settings.grace).await;
    let alone = match live.fleet() {
        Some(f) => match f.tend(installation_id, false, true).await {
            Ok(t) => Some(t.mine && !t.others_watch),
            Err(e) => {
                f.redis().fell_back("lease", &e);
                None
            }
        },
        None => None,
    };
    if alone == Some(false) {
        return leave(&live, installation_id, reg_id, generation).await;
    }
    let (subscription, holder) = {
        let mut regs = live.registry.lock();
        let Some(reg) = current(&mut regs, installation_id, reg_id) else { return };
        if !reg.watchers.is_empty() || reg.generation != generation || reg.removing {
            return;
        }
        reg.removing = true;
        reg.stop_polling();
        reg.validated.send_replace(false);
        (reg.subscription_id.take(), reg.holder.take())
    };
    match (subscription, holder) {
        (Some(id), Some(holder)) => unsubscribe(&live, installation_id, &holder.caller, &id, "nobody watches").await,
        // A replica of a fleet that took the lease only now, to remove what another kept.
        (None, _) if alone == Some(true) => remove_ours(&live, installation_id, reg_id).await,
        _ => {}
    }
    removed(&live, installation_id, reg_id);
    if let (Some(f), Some(true)) = (live.fleet(), alone) {
        let _ = f.tend(installation_id, false, false).await;
    }
}

/// A removal is done: the registration goes, or is set up again for the watchers who came
/// meanwhile.
fn removed(live: &Arc<Live>, installation_id: i64, reg_id: u64) {
    let mut regs = live.registry.lock();
    let Some(reg) = current(&mut regs, installation_id, reg_id) else { return };
    reg.removing = false;
    if reg.watchers.is_empty() {
        regs.remove(&installation_id);
        live.registry.gone.insert(installation_id, ());
    } else if !reg.setting_up {
        reg.setting_up = true;
        tokio::spawn(setup(live.clone(), installation_id, reg_id));
    }
    count(live, &regs);
}

/// Whether this replica may keep the installation's upstream subscription: always alone; in a
/// fleet, when it holds (or now takes) the installation's lease, or Redis cannot tell (each
/// replica then works on its own, adopting the subscription another made by its URL).
async fn lead(live: &Arc<Live>, installation_id: i64, reg_id: u64) -> bool {
    let Some(f) = live.fleet() else { return true };
    let leading = match f.tend(installation_id, true, true).await {
        Ok(t) => t.mine,
        Err(e) => {
            f.redis().fell_back("lease", &e);
            true
        }
    };
    if let Some(reg) = current(&mut live.registry.lock(), installation_id, reg_id) {
        reg.leading = leading;
    }
    leading
}

/// In a fleet, for as long as the registration lasts: renews this replica's watching of the
/// installation and, while it keeps the subscription, its lease; takes the lease over when its
/// holder is gone (a replica died, or left with its watchers) and sets the installation up; and
/// steps down, leaving the subscription in place, should another replica hold the lease.
async fn tend(live: Arc<Live>, installation_id: i64, reg_id: u64) {
    let Some(f) = live.fleet().cloned() else { return };
    loop {
        tokio::time::sleep(f.tend_every()).await;
        let Some((watching, leading)) =
            current(&mut live.registry.lock(), installation_id, reg_id).map(|r| (!r.watchers.is_empty(), r.leading))
        else {
            return;
        };
        // A holder keeps its lease through the grace period (its watchers may come back).
        let tended = match f.tend(installation_id, watching, watching || leading).await {
            Ok(t) => t,
            Err(e) => {
                f.redis().fell_back("lease", &e);
                continue;
            }
        };
        let mut regs = live.registry.lock();
        let Some(reg) = current(&mut regs, installation_id, reg_id) else { return };
        if tended.mine && !reg.leading {
            reg.leading = true;
            if !reg.watchers.is_empty() && !reg.setting_up && !reg.removing {
                tracing::info!(installation = installation_id, "fleet: took over the installation's lease");
                reg.setting_up = true;
                tokio::spawn(setup(live.clone(), installation_id, reg_id));
            }
        } else if !tended.mine && reg.leading {
            tracing::warn!(installation = installation_id, "fleet: another replica holds the lease now; stepping down");
            reg.leading = false;
            reg.stop_polling();
            reg.subscription_id = None;
            reg.holder = None;
            reg.validated.send_replace(false);
        }
        count(&live, &regs);
    }
}

/// The grace period is over on a replica of a fleet while another replica still watches (or
/// holds the lease): the registration goes here without touching the upstream subscription, and
/// the lease is given up for a watching replica to take.
async fn leave(live: &Arc<Live>, installation_id: i64, reg_id: u64, generation: u64) {
    {
        let mut regs = live.registry.lock();
        let Some(reg) = current(&mut regs, installation_id, reg_id) else { return };
        if !reg.watchers.is_empty() || reg.generation != generation || reg.removing {
            return;
        }
        reg.stop_polling();
        regs.remove(&installation_id);
        live.registry.gone.insert(installation_id, ());
        count(live, &regs);
    }
    if let Some(f) = live.fleet() {
        let _ = f.tend(installation_id, false, false).await;
    }
}

/// Removes our upstream subscription of an installation this replica did not keep (the replica
/// that kept it has left the fleet), with the token of its last watcher here.
async fn remove_ours(live: &Arc<Live>, installation_id: i64, reg_id: u64) {
    let last = current(&mut live.registry.lock(), installation_id, reg_id).and_then(|r| r.last.clone());
    let Some(last) = last.filter(Watcher::usable) else { return };
    let Ok(subs) = live.cache.client().event_subscriptions(last.caller.token(), installation_id).await else {
        return;
    };
    let url = live.webhook_url(installation_id);
    for s in subs.into_iter().filter(|s| s.protocol_data.as_deref() == Some(url.as_str())) {
        unsubscribe(live, installation_id, &last.caller, &s.event_subscription_id, "nobody in the fleet watches").await;
    }
}

/// In a fleet, whether another replica keeps or watches the installation (yes when Redis cannot
/// tell: removing what another replica uses is worse than removing later).
async fn watched_elsewhere(live: &Live, installation_id: i64) -> bool {
    let Some(f) = live.fleet() else { return false };
    f.watched(installation_id).await.unwrap_or(true)
}

/// Registers (or adopts) the upstream subscription with the best credentials at hand, and again
/// when an owner came while an installer's was being made; polls when webhooks are off. Clears
/// `setting_up` when done.
async fn setup(live: Arc<Live>, installation_id: i64, reg_id: u64) {
    loop {
        if !lead(&live, installation_id, reg_id).await {
            if let Some(reg) = current(&mut live.registry.lock(), installation_id, reg_id) {
                reg.setting_up = false;
            }
            return;
        }
        let holder = if live.settings.webhooks {
            register(&live, installation_id, reg_id).await
        } else {
            start_polling(&live, installation_id);
            None
        };
        let mut regs = live.registry.lock();
        let Some(reg) = current(&mut regs, installation_id, reg_id) else { return };
        let owner_waits =
            holder.is_some_and(|h| !h.owner) && reg.credentials().is_some_and(|w| w.owner) && !reg.removing;
        if !owner_waits {
            reg.setting_up = false;
            return;
        }
    }
}

/// One registration: ensures our subscription with the best credentials, replaces one held by
/// somebody else, waits for the validation (polling if it does not come in time). Returns who now
/// holds the subscription.
async fn register(live: &Arc<Live>, installation_id: i64, reg_id: u64) -> Option<Watcher> {
    let watcher = current(&mut live.registry.lock(), installation_id, reg_id)?.credentials()?;
    let (id, already_valid) = match ensure_subscription(live, &watcher.caller, installation_id).await {
        Ok(found) => found,
        Err(e) => {
            let works = current(&mut live.registry.lock(), installation_id, reg_id).is_some_and(|r| r.webhook_works());
            if !works {
                tracing::warn!(installation = installation_id, error = %e, "cannot register the webhook; polling instead");
                start_polling(live, installation_id);
            }
            return None;
        }
    };
    let recorded = {
        let mut regs = live.registry.lock();
        match current(&mut regs, installation_id, reg_id).filter(|r| !r.removing) {
            None => None,
            Some(reg) => {
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
                if already_valid
                    || live.registry.early_validations.remove(&(installation_id, id.to_ascii_lowercase())).is_some()
                {
                    reg.validated.send_replace(true);
                    reg.stop_polling();
                }
                let validated = reg.validated.subscribe();
                count(live, &regs);
                Some((previous, validated))
            }
        }
    };
    let Some((replaced, mut validated)) = recorded else {
        // Nobody watches any more (or a removal is under way): not ours to keep, unless a newer
        // registration of the installation adopted it meanwhile.
        if live.registry.subscription_of(installation_id).is_none_or(|now| !now.eq_ignore_ascii_case(&id)) {
            let why = "registered after the last watcher left";
            unsubscribe(live, installation_id, &watcher.caller, &id, why).await;
        }
        return None;
    };
    if let Some((old, holder)) = replaced {
        unsubscribe(live, installation_id, &holder.caller, &old, "replaced by an owner's").await;
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
    let url = live.webhook_url(i);
    let ours = live.webhook_base();
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
        unsubscribe(live, i, caller, &s.event_subscription_id, "ours, with an older webhook URL").await;
    }
    let new = NewEventSubscription { protocol_code: "Webhook".into(), protocol_data: url, event_type: None };
    let created = client.subscribe(caller.token(), i, &new).await?;
    tracing::info!(installation = i, "registered the webhook upstream");
    Ok((created.event_subscription_id, false))
}

impl Live {
    /// A request came with this caller's (verified) token: subscriptions of theirs that could not
    /// be removed before are removed with it.
    pub(crate) fn token_seen(self: &Arc<Self>, caller: &Caller) {
        self.registry.token_seen(self, caller);
    }

    /// Credentials for reading an installation on the watchers' behalf (the poller's).
    pub(super) fn registry_caller(&self, installation_id: i64) -> Option<Caller> {
        self.registry.credentials(installation_id)
    }
}
