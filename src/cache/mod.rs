//! Loading upstream resources: a shared moka cache below per-request DataLoaders.
//!
//! - [`SharedCache`] is one moka cache for the whole process. Its keys are the caller's identity
//!   (the token's `sub`) and the [`Resource`], so an answer fetched with one caller's token is never
//!   served to another. Concurrent misses for one key wait on a single upstream call
//!   (`get_with`). Entries expire per resource class ([`Ttls`]); failures are kept only for the
//!   short negative TTL. An invalidation also reaches answers whose fetch was under way when it
//!   was made (see `Invalidations`), so nothing fetched before an event is served after it.
//! - Station events invalidate by installation, not by predicate: each one bumps its
//!   installation's generation ([`SharedCache::invalidate_live_state`], see `Generations`), and a
//!   read of live state compares its entry's generation with it. That costs O(1) per event and per
//!   read however many events a delivery carries, where a predicate per event would be run against
//!   every entry a read touches (a burst of 40,000 events made every user's cached queries slow).
//! - A refused token (the upstream's 401: expired, revoked) is about that token, not its user: it
//!   is never stored under the user's key, only remembered for that token (`Refusals`), and a
//!   reader who waited on a fetch made with another token that was refused fetches again with its
//!   own. Everything else (data, a 403, a 404, throttling, 5xx) is the same for all of a user's
//!   tokens and shared by them.
//! - [`RequestLoader`] is created for each GraphQL request and wrapped in a DataLoader with a
//!   per-request cache: identical loads within one query (aliases, the same station reached twice)
//!   are made once, and independent ones run concurrently.
//! - Each request's loader has a budget of upstream reads ([`READ_BUDGET`], see [`ReadBudget`]):
//!   the static complexity limit counts a list's items once, so a query fanning out over many
//!   installations and stations could otherwise send thousands of reads on the shared partner key.
//! - Values are typed by their key: a reader asks with a key of [`read`] (`read::Stations {
//!   installation_id }`) and gets that resource's value type back, checked by the compiler.

mod answers;
pub(crate) mod read;
mod resource;

pub(crate) use answers::{Answer, AnswerKey, Reads};
pub(crate) use read::{Fetched, Kind, Read};
pub(crate) use resource::Resource;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_graphql::dataloader::{CacheFactory, CacheStorage, DataLoader, Loader};
use chrono::{DateTime, Utc};
use moka::Expiry;

use crate::auth::Caller;
use crate::upstream::{UpstreamClient, UpstreamError};

/// How long each kind of resource is kept.
#[derive(Debug, Clone)]
pub struct Ttls {
    /// Live state: stations and grid meters.
    pub state: Duration,
    /// Installations, users, invitations (membership), tariffs, event subscriptions.
    pub lists: Duration,
    /// Measure and log metadata, which hardly ever changes.
    pub metadata: Duration,
    /// Measure values and logs of ranges that ended in the past: they no longer change.
    pub closed_history: Duration,
    /// Measure values and logs of ranges that reach the present.
    pub open_history: Duration,
    /// Failures.
    pub negative: Duration,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            state: Duration::from_secs(5),
            lists: Duration::from_secs(30),
            metadata: Duration::from_secs(3600),
            closed_history: Duration::from_secs(3600),
            open_history: Duration::from_secs(30),
            negative: Duration::from_secs(2),
        }
    }
}

/// A loaded resource: its value, of its resource's kind, and when it was fetched.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub value: Fetched,
    pub fetched_at: DateTime<Utc>,
}

impl Loaded {
    /// The value as `K`'s value type, with when it was fetched (`None` only if this was loaded
    /// for another kind of resource than `K`).
    pub(crate) fn of<K: Read>(&self) -> Option<(Arc<K::Value>, DateTime<Utc>)> {
        Some((K::pick(&self.value)?, self.fetched_at))
    }
}

type LoadResult = Result<Loaded, UpstreamError>;

/// Said when a key's kind and the value stored under its resource differ: [`read`] declares them
/// together and `Resource::fetch` stores each resource's own kind, so this is a bug of ours.
pub(crate) const MISMATCH: &str = "a cached resource holds another kind of value than its key's";

#[derive(Clone)]
struct Entry {
    result: LoadResult,
    ttl: Duration,
    /// The invalidation epoch when the fetch started.
    started: u64,
    /// The clock of [`Generations`] when the fetch started.
    generation: u64,
    /// Checked once against the invalidations made during its fetch; later ones reach it
    /// through moka.
    verified: Arc<std::sync::atomic::AtomicBool>,
    /// Which fetch this is (unique in the process; 0: not stored in the cache). A kept answer
    /// names the entries it was computed from by these, and is current while they all are.
    id: u64,
}

/// The number of the next fetch (see `Entry::id`).
static FETCHES: AtomicU64 = AtomicU64::new(1);

type Stale = Arc<dyn Fn(&Key) -> bool + Send + Sync>;

/// How many recent invalidations are remembered; an entry not yet checked whose fetch started
/// before the oldest one remembered is fetched again rather than trusted.
const RECENT_INVALIDATIONS: usize = 1024;

/// The invalidations made recently, numbered. moka applies an invalidation only to entries stored
/// before it was made; an answer whose fetch was under way at that moment (a read begun just before
/// an event) is stored afterwards and would be served stale. Each entry remembers the epoch at
/// which its fetch started, and its first read checks it against the invalidations made since
/// (after that, moka's own predicates cover it).
#[derive(Default)]
struct Invalidations {
    epoch: AtomicU64,
    recent: Mutex<VecDeque<(u64, Stale)>>,
}

impl Invalidations {
    fn now(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn record(&self, stale: Stale) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        recent.push_back((epoch, stale));
        if recent.len() > RECENT_INVALIDATIONS {
            recent.pop_front();
        }
    }

    /// Whether an invalidation made after `started` names `key`.
    fn made_since(&self, key: &Key, started: u64) -> bool {
        if self.now() == started {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match recent.front() {
            Some((oldest, _)) if *oldest <= started + 1 => {
                recent.iter().rev().take_while(|(epoch, _)| *epoch > started).any(|(_, stale)| stale(key))
            }
            // Older than what is remembered: not to be trusted.
            _ => true,
        }
    }
}

/// How many installations' last live-state change is remembered; past it the older half is
/// forgotten (see `Generations`).
const REMEMBERED_INSTALLATIONS: usize = 100_000;

/// When each installation's live state (stations, meters, their history) last changed, on a clock
/// that counts such changes. An entry of live state remembers the clock when its fetch started,
/// and is stale when its installation changed since: one comparison per read and one bump per
/// change, where a moka invalidation predicate per change would cost every read of every user a
/// call of each predicate registered since its entry was stored.
#[derive(Default)]
struct Generations {
    clock: AtomicU64,
    changes: RwLock<Changes>,
}

#[derive(Default)]
struct Changes {
    /// The clock at each installation's last change.
    last: HashMap<i64, u64>,
    /// The latest change forgotten to keep `last` bounded: an installation not in `last` may have
    /// changed as late as this, so an entry fetched before it is not trusted.
    forgotten: u64,
}

impl Generations {
    fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// The live state of `installation` changed (a station event).
    fn bump(&self, installation: i64) {
        let mut changes = self.changes.write().unwrap_or_else(|e| e.into_inner());
        // Ticked under the lock: a read that sees the new clock value sees the change too.
        let at = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        changes.last.insert(installation, at);
        if changes.last.len() > REMEMBERED_INSTALLATIONS {
            // Forgets the older half at once, so this O(n) pass comes once per n/2 new
            // installations (amortised O(1) per change).
            let mut ats: Vec<u64> = changes.last.values().copied().collect();
            let middle = ats.len() / 2;
            let cutoff = *ats.select_nth_unstable(middle).1;
            changes.last.retain(|_, at| *at > cutoff);
            changes.forgotten = changes.forgotten.max(cutoff);
        }
    }

    /// Whether `installation`'s live state changed after a fetch that started at `started`.
    fn changed_since(&self, installation: i64, started: u64) -> bool {
        // Nothing changed anywhere since: no lock taken (the common case between bursts).
        if self.now() == started {
            return false;
        }
        let changes = self.changes.read().unwrap_or_else(|e| e.into_inner());
        changes.last.get(&installation).copied().unwrap_or(changes.forgotten) > started
    }
}

/// How long an answer is kept while a command may still change it (see `Unsettled`).
pub(crate) const UNSETTLED_TTL: Duration = Duration::from_millis(500);

/// Resources that a command the upstream accepted (202) may still change: the station applies it
/// a moment later, and an answer read in between would otherwise be served for the whole TTL after
/// the change. While marked, answers are kept only [`UNSETTLED_TTL`].
#[derive(Default)]
struct Unsettled {
    marks: Mutex<Vec<(u64, std::time::Instant, Stale)>>,
    next: AtomicU64,
}

impl Unsettled {
    fn mark(&self, until: std::time::Instant, stale: Stale) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, until, stale));
        id
    }

    fn settle(&self, id: u64) {
        self.lock().retain(|(mark, ..)| *mark != id);
    }

    fn covers(&self, key: &Key) -> bool {
        let mut marks = self.lock();
        let now = std::time::Instant::now();
        marks.retain(|(_, until, _)| *until > now);
        marks.iter().any(|(_, _, stale)| stale(key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, std::time::Instant, Stale)>> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct PerEntryTtl;

impl Expiry<Key, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &Key, value: &Entry, _created_at: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// An entry's key: the caller's `sub` and the resource.
pub(crate) type Key = (Arc<str>, Resource);

/// Whether an upstream failure is about the bearer token itself rather than its user: a 401 (the
/// token expired or was revoked early; also a wrong partner key, which no token fixes). Another
/// token of the same user may well be accepted, so such an answer is never served to it. A 403 is
/// about the user's membership and the same for all their tokens; throttling (429, a quota's 403)
/// is about the partner key and 5xx about the upstream: those are shared by the user's tokens.
fn refuses_the_token(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Unauthorized { .. })
}

/// The refusals of one token, for the negative TTL: a token the upstream just refused is not
/// sent again for the same resource meanwhile, as a failure under the user's key would not be,
/// but the user's other tokens never see it. Keyed by a fingerprint of the token (a keyed hash,
/// random per process: tokens are not kept) and the cache key.
struct Refusals {
    memory: moka::future::Cache<(u64, Key), UpstreamError>,
    hasher: RandomState,
    ttl: Duration,
}

impl Refusals {
    fn new(ttl: Duration, capacity: u64) -> Refusals {
        // moka refuses a time to live beyond 1000 years; a year is more than any negative TTL.
        let kept = ttl.min(Duration::from_secs(365 * 86_400));
        let memory = moka::future::Cache::builder().max_capacity(capacity).time_to_live(kept).build();
        Refusals { memory, hasher: RandomState::new(), ttl }
    }

    fn fingerprint(&self, caller: &Caller) -> u64 {
        self.hasher.hash_one(caller.token())
    }

    async fn get(&self, token: u64, key: &Key) -> Option<UpstreamError> {
        self.memory.get(&(token, key.clone())).await
    }

    async fn remember(&self, token: u64, key: &Key, error: UpstreamError) {
        if !self.ttl.is_zero() {
            self.memory.insert((token, key.clone()), error).await;
        }
    }
}

/// The process-wide cache of upstream answers.
#[derive(Clone)]
pub(crate) struct SharedCache {
    cache: moka::future::Cache<Key, Entry>,
    client: UpstreamClient,
    ttls: Arc<Ttls>,
    invalidations: Arc<Invalidations>,
    generations: Arc<Generations>,
    unsettled: Arc<Unsettled>,
    refusals: Arc<Refusals>,
    /// The upstream reads each request's loader may send ([`READ_BUDGET`] unless set).
    read_budget: u32,
    /// Whole answers of queries, kept while what they read is current (off unless
    /// [`SharedCache::with_response_cache`] sets a size).
    answers: answers::Answers,
}

impl SharedCache {
    pub(crate) fn new(client: UpstreamClient, ttls: Ttls, capacity: u64) -> SharedCache {
        let cache = moka::future::Cache::builder()
            .max_capacity(capacity)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        SharedCache {
            cache,
            client,
            refusals: Arc::new(Refusals::new(ttls.negative, capacity)),
            ttls: Arc::new(ttls),
            invalidations: Arc::default(),
            generations: Arc::default(),
            unsettled: Arc::default(),
            read_budget: READ_BUDGET,
            answers: answers::Answers::default(),
        }
    }

    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The resource `key` names as `caller` sees it, with when it was fetched: from the cache, or
    /// fetched once for all concurrent askers. Not counted in any request's budget (the live
    /// watches' own reads).
    pub(crate) async fn get<K: Read>(
        &self,
        caller: &Caller,
        key: K,
    ) -> Result<(Arc<K::Value>, DateTime<Utc>), UpstreamError> {
        let loaded = self.read(caller, key.into(), None, None).await.map_err(|e| match e {
            ReadError::Upstream(e) => e,
            ReadError::OverBudget { .. } => unreachable!("a read without a budget is never refused"),
        })?;
        loaded.of::<K>().ok_or_else(|| UpstreamError::Decode(MISMATCH.into()))
    }

    /// As [`SharedCache::get`]; a read this call would send upstream itself takes one read of
    /// `budget`, and is not sent when none is left. A cache hit, or waiting on a fetch that another
    /// request already sent, costs nothing. `reads` is told which entry answered.
    async fn read(
        &self,
        caller: &Caller,
        resource: Resource,
        budget: Option<&ReadBudget>,
        reads: Option<&Reads>,
    ) -> Result<Loaded, ReadError> {
        let key = (caller.sub.clone(), resource.clone());
        let metrics = self.client.metrics();
        let unrepeatable = |e: ReadError| {
            if let Some(reads) = reads {
                reads.unrepeatable();
            }
            e
        };
        let (mut entry, mut fresh) = self.entry(&key, caller, budget).await.map_err(unrepeatable)?;
        if self.untrusted(&key, &entry) {
            self.cache.invalidate(&key).await;
            (entry, fresh) = self.entry(&key, caller, budget).await.map_err(unrepeatable)?;
        } else if !entry.verified.load(Ordering::Acquire) {
            // Checked now; later invalidations reach it through moka.
            entry.verified.store(true, Ordering::Release);
        }
        if !fresh {
            metrics.cache_lookups.with_label_values(&["hit"]).inc();
        }
        if let Some(reads) = reads {
            reads.record(&key, &entry);
        }
        entry.result.map_err(ReadError::Upstream)
    }

    /// Whether each entry `deps` names is still the one in the cache and still to be trusted: not
    /// expired, invalidated, replaced, or outdated by a station event (the checks of `read`,
    /// without fetching).
    pub(crate) async fn still_current(&self, deps: &[(Key, u64)]) -> bool {
        for (key, id) in deps {
            let Some(entry) = self.cache.get(key).await else { return false };
            if entry.id != *id || self.untrusted(key, &entry) {
                return false;
            }
        }
        true
    }

    /// Whether a stored entry is not to be served: fetched while something made it stale (by us
    /// or by whoever we waited on; checked until its first read verifies it), or, for live state,
    /// before an event of its installation (checked at every read: moka never hears of those).
    fn untrusted(&self, key: &Key, entry: &Entry) -> bool {
        let unverified = !entry.verified.load(Ordering::Acquire);
        (unverified && self.invalidations.made_since(key, entry.started)) || self.outdated_by_events(key, entry)
    }

    /// The cached entry, or a new one fetched by this call or by the concurrent caller it waited
    /// on; true when this call fetched it.
    ///
    /// A refusal of the token (see [`refuses_the_token`]) is not stored: it reaches those who waited
    /// on the fetch, and only those with the same token take it. The others try once more through
    /// the cache (those who waited together still share one fetch: their own, or one they join);
    /// if that too ends on another token's refusal, they fetch with their own token outside it.
    async fn entry(&self, key: &Key, caller: &Caller, budget: Option<&ReadBudget>) -> Result<(Entry, bool), ReadError> {
        let token = self.refusals.fingerprint(caller);
        let over_budget = || ReadError::OverBudget { budget: budget.map_or(0, |b| b.limit) };
        let mut tried_again = false;
        loop {
            // moka runs only one caller's init future per missing key: this call's runs only when
            // this call is the one to fetch, and only then is a read of the budget taken.
            let ran = AtomicBool::new(false);
            let fetch = async {
                ran.store(true, Ordering::Relaxed);
                self.fetch(key, caller, token, budget).await
            };
            let unstored = match self.cache.entry_by_ref(key).or_try_insert_with(fetch).await {
                Ok(entry) => {
                    let fresh = entry.is_fresh();
                    return Ok((entry.into_value(), fresh));
                }
                Err(unstored) => unstored,
            };
            match &*unstored {
                Unstored::OverBudget if ran.load(Ordering::Relaxed) => return Err(over_budget()),
                // We waited on another request whose budget was spent: nothing was sent or
                // stored, so this one tries again (a fetch of its own, or someone else's to join).
                Unstored::OverBudget => continue,
                // Our own token was refused (by this fetch, recently, or in the fetch of a request
                // with the same token that we joined).
                Unstored::Refused { token: refused, error } if *refused == token => {
                    return Err(ReadError::Upstream(error.clone()));
                }
                // Another token of the user was refused: says nothing of ours.
                Unstored::Refused { .. } if !tried_again => tried_again = true,
                // Again another's (a third token's fetch joined meanwhile): no more joining.
                Unstored::Refused { .. } => {
                    return match self.fetch(key, caller, token, budget).await {
                        // Not stored: nothing to be kept with it.
                        Ok(entry) => Ok((Entry { id: 0, ..entry }, true)),
                        Err(Unstored::OverBudget) => Err(over_budget()),
                        Err(Unstored::Refused { error, .. }) => Err(ReadError::Upstream(error)),
                    };
                }
            }
        }
    }

    /// One upstream read of `key` with `caller`'s token (`token` is its fingerprint), taking one
    /// read of `budget`; not sent when the budget is spent or the upstream refused that token for
    /// this key within the negative TTL.
    async fn fetch(
        &self,
        key: &Key,
        caller: &Caller,
        token: u64,
        budget: Option<&ReadBudget>,
    ) -> Result<Entry, Unstored> {
        let metrics = self.client.metrics();
        if let Some(error) = self.refusals.get(token, key).await {
            metrics.cache_lookups.with_label_values(&["hit"]).inc();
            return Err(Unstored::Refused { token, error });
        }
        if budget.is_some_and(|b| !b.take()) {
            return Err(Unstored::OverBudget);
        }
        let started = self.invalidations.now();
        let generation = self.generations.now();
        metrics.cache_lookups.with_label_values(&["miss"]).inc();
        let result = key.1.fetch(&self.client, caller.token()).await;
        let ttl = match &result {
            Err(e) if refuses_the_token(e) => {
                let error = e.clone();
                self.refusals.remember(token, key, error.clone()).await;
                return Err(Unstored::Refused { token, error });
            }
            // Checked once fetched: a mark made meanwhile counts too.
            Ok(_) if self.unsettled.covers(key) => key.1.ttl(&self.ttls, Utc::now()).min(UNSETTLED_TTL),
            Ok(_) => key.1.ttl(&self.ttls, Utc::now()),
            Err(_) => self.ttls.negative,
        };
        let result = result.map(|value| Loaded { value, fetched_at: Utc::now() });
        let id = FETCHES.fetch_add(1, Ordering::Relaxed);
        Ok(Entry { result, ttl, started, generation, verified: Arc::default(), id })
    }

    /// Whether a station event of the entry's installation came after its fetch started (only live
    /// state changes with events; see [`Resource::moves_with_events`]).
    fn outdated_by_events(&self, key: &Key, entry: &Entry) -> bool {
        key.1.moves_with_events()
            && key.1.installation_id().is_some_and(|i| self.generations.changed_since(i, entry.generation))
    }

    /// A station event says the live state of `installation_id` changed: every caller's stations,
    /// meters and their history there are fetched again at their next read. O(1): entries are not
    /// visited, each read compares its entry's generation (see `Generations`).
    pub(crate) fn invalidate_live_state(&self, installation_id: i64) {
        self.generations.bump(installation_id);
    }

    /// The invalidation work registered so far: predicates (each one run against the entries)
    /// and generation bumps (O(1) each).
    #[cfg(test)]
    pub(crate) fn invalidation_work(&self) -> (u64, u64) {
        (self.invalidations.now(), self.generations.now())
    }

    /// Drops what a change made stale (on this replica; `Live::changed` tells the fleet). Returns
    /// the mark of what it unsettles, for [`SharedCache::settle`].
    pub(crate) fn apply(&self, change: &Change) -> Option<u64> {
        let Change { installation: i, here, everywhere, own, unsettles, unsettle_ms, .. } = change.clone();
        let mark = match (i, unsettles.is_empty()) {
            // Marked before the invalidation, so a read landing between the two is not kept for
            // its usual time.
            (Some(i), false) => Some(self.unsettle(Duration::from_millis(unsettle_ms), move |r| {
                r.installation_id() == Some(i) && unsettles.contains(&Kind::of(r))
            })),
            _ => None,
        };
        if (i.is_some() && !here.is_empty()) || !everywhere.is_empty() {
            self.invalidate(move |r| {
                let kind = Kind::of(r);
                (i.is_some() && r.installation_id() == i && here.contains(&kind)) || everywhere.contains(&kind)
            });
        }
        if let Some((sub, kinds)) = own.filter(|(_, kinds)| !kinds.is_empty()) {
            self.invalidate_caller_resource(&sub, move |r| kinds.contains(&Kind::of(r)));
        }
        mark
    }

    /// Drops every entry (of every caller) that `stale` says a change made out of date.
    pub(crate) fn invalidate(&self, stale: impl Fn(&Resource) -> bool + Send + Sync + 'static) {
        self.invalidate_keys(Arc::new(move |(_, r): &Key| stale(r)));
    }

    /// Drops one caller's entries that `stale` names.
    pub(crate) fn invalidate_caller_resource(
        &self,
        sub: &str,
        stale: impl Fn(&Resource) -> bool + Send + Sync + 'static,
    ) {
        let sub: Arc<str> = sub.into();
        self.invalidate_keys(Arc::new(move |(s, r): &Key| *s == sub && stale(r)));
    }

    /// Marks the resources `stale` names (of every caller) as still changing for `how_long`: a
    /// command was accepted and not yet seen applied. Returns the mark for [`SharedCache::settle`].
    pub(crate) fn unsettle(
        &self,
        how_long: Duration,
        stale: impl Fn(&Resource) -> bool + Send + Sync + 'static,
    ) -> u64 {
        self.unsettled.mark(std::time::Instant::now() + how_long, Arc::new(move |(_, r): &Key| stale(r)))
    }

    /// The change a mark waited for is seen: answers are kept for their usual time again.
    pub(crate) fn settle(&self, mark: u64) {
        self.unsettled.settle(mark);
    }

    fn invalidate_keys(&self, stale: Stale) {
        // Recorded first: a fetch finishing from now on is checked against it.
        self.invalidations.record(stale.clone());
        if let Err(e) = self.cache.invalidate_entries_if(move |k, _| stale(k)) {
            tracing::error!(error = %e, "cache invalidation failed; clearing the whole cache");
            self.cache.invalidate_all();
        }
    }
}

/// What a write made stale, as data: applied here, and sent to the other replicas of a fleet.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Change {
    /// The installation the write was about.
    pub installation: Option<i64>,
    /// Kinds of the installation, for every caller.
    pub here: Vec<Kind>,
    /// Kinds of every installation, for every caller.
    pub everywhere: Vec<Kind>,
    /// One caller's (`sub`) own entries of these kinds.
    pub own: Option<(String, Vec<Kind>)>,
    /// Kinds of the installation kept only briefly (`unsettle_ms`) until the change shows.
    pub unsettles: Vec<Kind>,
    pub unsettle_ms: u64,
    /// Who may see the installation changed: live subscriptions check their access again.
    pub access: bool,
}

/// How many upstream reads one GraphQL request may send: about twice what the complexity limit
/// lets a query ask for without lists (5000 / 50 = 100 reads), so every query that passes it and
/// fans out a little (a user's few installations and stations) is answered, while one fanning out
/// over hundreds of installations cannot spend the shared partner key's quota for everyone.
pub(crate) const READ_BUDGET: u32 = 200;

/// The upstream reads left to one execution of an operation. Only reads this request sends itself
/// are counted: a hit in the shared cache or in the request's own loader, or waiting on a fetch
/// another request already sent, costs nothing. A read past the budget is not sent, and its
/// field fails with `QUERY_TOO_COMPLEX`; the rest of the answer stands.
///
/// A subscription's execution spans many events: clearing its loader (as `chargingStationUpdated`
/// does before each event, to read the station afresh) gives it a whole budget again, so each
/// event's answer has a budget of its own and a long subscription never runs out.
pub(crate) struct ReadBudget {
    limit: u32,
    used: AtomicU32,
}

impl ReadBudget {
    fn new(limit: u32) -> ReadBudget {
        ReadBudget { limit, used: AtomicU32::new(0) }
    }

    /// Takes one read; false when none is left.
    fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.limit).then_some(used + 1))
            .is_ok()
    }

    fn reset(&self) {
        self.used.store(0, Ordering::Release);
    }
}

/// Why a fetch left nothing in the cache; every reader who waited on it gets it.
#[derive(Debug)]
enum Unstored {
    /// The fetching request's budget was spent: nothing was sent.
    OverBudget,
    /// The upstream refused the token whose fingerprint is `token` (see [`refuses_the_token`]),
    /// now or within the negative TTL.
    Refused { token: u64, error: UpstreamError },
}

/// Why a request's read has no value.
#[derive(Debug, Clone)]
pub(crate) enum ReadError {
    /// The upstream answered with an error, or could not be reached.
    Upstream(UpstreamError),
    /// The request has used its budget of `budget` upstream reads: this one was not sent.
    OverBudget { budget: u32 },
}

/// The loader of one GraphQL request: one caller, the shared cache below, the request's budget.
pub(crate) struct RequestLoader {
    caller: Caller,
    shared: SharedCache,
    budget: Arc<ReadBudget>,
    /// What the request read, when its answer may be kept (see [`Reads`]).
    reads: Option<Arc<Reads>>,
}

impl RequestLoader {
    /// What the request read so far, when its answer may be kept.
    pub(crate) fn reads(&self) -> Option<&Reads> {
        self.reads.as_deref()
    }
}

impl Loader<Resource> for RequestLoader {
    /// Each resource's own result, so one failing resource does not fail its batch.
    type Value = Result<Loaded, ReadError>;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[Resource]) -> Result<HashMap<Resource, Self::Value>, Self::Error> {
        let (budget, reads) = (Some(&*self.budget), self.reads.as_deref());
        let loads = keys
            .iter()
            .map(|k| async move { (k.clone(), self.shared.read(&self.caller, k.clone(), budget, reads).await) });
        Ok(futures::future::join_all(loads).await.into_iter().collect())
    }
}

/// The per-request DataLoader (with a per-request cache).
pub(crate) type Loaders = DataLoader<RequestLoader, RequestCache>;

/// The loaders of one request of `caller`; `reads` records what it read, for keeping its answer.
pub(crate) fn request_loaders(caller: Caller, shared: SharedCache, reads: Option<Arc<Reads>>) -> Loaders {
    let budget = Arc::new(ReadBudget::new(shared.read_budget));
    let cache = RequestCache { budget: budget.clone() };
    // The batch runs in the request's span, so its upstream calls belong to the request's trace.
    let spawn =
        |batch: futures::future::BoxFuture<'static, ()>| tokio::spawn(tracing::Instrument::in_current_span(batch));
    // Each load is sent at once (a batch of one): the loader reads resource by resource anyway
    // (the upstream has no batch routes), so waiting for a batch to fill would only put the
    // DataLoader's delay (1 ms on a timer thread) on every level of the critical path. Loads of one
    // key made meanwhile are still one upstream call: the shared cache runs one fetch per key.
    DataLoader::with_cache(RequestLoader { caller, shared, budget, reads }, spawn, cache).max_batch_size(1)
}

/// The request's own cache of what it loaded; clearing it also renews the request's budget.
pub(crate) struct RequestCache {
    budget: Arc<ReadBudget>,
}

impl CacheFactory for RequestCache {
    fn create<K, V>(&self) -> Box<dyn CacheStorage<Key = K, Value = V>>
    where
        K: Send + Sync + Clone + Eq + Hash + 'static,
        V: Send + Sync + Clone + 'static,
    {
        Box::new(RequestStorage { map: HashMap::new(), budget: self.budget.clone() })
    }
}

struct RequestStorage<K, V> {
    map: HashMap<K, V>,
    budget: Arc<ReadBudget>,
}

impl<K, V> CacheStorage for RequestStorage<K, V>
where
    K: Send + Sync + Clone + Eq + Hash + 'static,
    V: Send + Sync + Clone + 'static,
{
    type Key = K;
    type Value = V;

    fn get(&mut self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn insert(&mut self, key: Cow<'_, K>, val: Cow<'_, V>) {
        self.map.insert(key.into_owned(), val.into_owned());
    }

    fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// What was read is forgotten (a subscription's next event): a new execution, a new budget.
    fn clear(&mut self) {
        self.map.clear();
        self.budget.reset();
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&'_ K, &'_ V)> + '_> {
        Box::new(self.map.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sub: &str, installation_id: i64) -> Key {
        (sub.into(), Resource::Stations { installation_id })
    }

    #[test]
    fn an_answer_fetched_across_an_invalidation_that_names_it_is_not_trusted() {
        let inv = Invalidations::default();
        let started = inv.now();
        assert!(!inv.made_since(&key("alice", 33), started), "nothing happened since");
        inv.record(Arc::new(|(_, r): &Key| r.installation_id() == Some(33)));
        assert!(inv.made_since(&key("alice", 33), started));
        assert!(!inv.made_since(&key("alice", 42), started), "another installation");
        assert!(!inv.made_since(&key("alice", 33), inv.now()), "fetched after it");
    }

    #[test]
    fn live_state_fetched_before_an_event_of_its_installation_is_stale() {
        let generations = Generations::default();
        let started = generations.now();
        assert!(!generations.changed_since(33, started), "nothing happened since");
        generations.bump(33);
        assert!(generations.changed_since(33, started));
        assert!(!generations.changed_since(42, started), "another installation");
        assert!(!generations.changed_since(33, generations.now()), "fetched after it");
    }

    #[test]
    fn a_forgotten_installation_is_not_trusted_for_fetches_before_what_was_forgotten() {
        let generations = Generations::default();
        let started = generations.now();
        for i in 0..=REMEMBERED_INSTALLATIONS as i64 {
            generations.bump(i);
        }
        let changes = generations.changes.read().unwrap();
        assert!(changes.last.len() <= REMEMBERED_INSTALLATIONS / 2 + 1, "the older half is forgotten");
        assert!(!changes.last.contains_key(&0));
        drop(changes);
        assert!(generations.changed_since(0, started), "forgotten, so maybe changed");
        assert!(generations.changed_since(-1, started), "never seen, but fetched before the forgotten ones");
        assert!(!generations.changed_since(-1, generations.now()));
    }

    #[test]
    fn only_live_state_moves_with_events() {
        assert!(Resource::Station { installation_id: 33, station_id: "S1".into() }.moves_with_events());
        assert!(!Resource::Users { installation_id: 33 }.moves_with_events());
        assert!(!Resource::Installations.moves_with_events());
    }

    #[test]
    fn a_budget_runs_out_and_a_cleared_loader_cache_renews_it() {
        let budget = Arc::new(ReadBudget::new(2));
        assert!(budget.take() && budget.take());
        assert!(!budget.take(), "the third read is past the budget");
        let mut storage = RequestCache { budget: budget.clone() }.create::<Resource, u8>();
        storage.clear();
        assert!(budget.take(), "a subscription's next event has a budget of its own");
    }

    #[test]
    fn an_answer_older_than_what_is_remembered_is_not_trusted() {
        let inv = Invalidations::default();
        let started = inv.now();
        for _ in 0..=RECENT_INVALIDATIONS {
            inv.record(Arc::new(|_: &Key| false));
        }
        assert!(inv.made_since(&key("alice", 33), started));
        assert!(!inv.made_since(&key("alice", 33), started + 2));
    }
}
