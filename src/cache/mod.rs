//! Loading upstream resources: a shared moka cache below per-request DataLoaders.
//!
//! - [`SharedCache`] is one moka cache for the whole process. Its keys are the caller's identity
//!   (the token's `sub`) and the [`Resource`], so an answer fetched with one caller's token is never
//!   served to another. Concurrent misses for one key wait on a single upstream call
//!   (`get_with`). Entries expire per resource class ([`Ttls`]); failures are kept only for the
//!   short negative TTL. An invalidation also reaches answers whose fetch was under way when it
//!   was made (see [`Invalidations`]), so nothing fetched before an event is served after it.
//! - [`RequestLoader`] is created for each GraphQL request and wrapped in a DataLoader with a
//!   per-request cache: identical loads within one query (aliases, the same station reached twice)
//!   are made once, and independent ones run concurrently.

mod resource;

pub use resource::Resource;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
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

/// A loaded resource: the typed value (downcast by the reader) and when it was fetched.
#[derive(Clone)]
pub struct Loaded {
    pub value: Arc<dyn Any + Send + Sync>,
    pub fetched_at: DateTime<Utc>,
}

impl Loaded {
    /// The value as `T`, the type the resource's fetch produced.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.value.clone().downcast::<T>().ok()
    }
}

pub type LoadResult = Result<Loaded, UpstreamError>;

#[derive(Clone)]
struct Entry {
    result: LoadResult,
    ttl: Duration,
    /// The invalidation epoch when the fetch started.
    started: u64,
    /// Checked once against the invalidations made during its fetch; later ones reach it
    /// through moka.
    verified: Arc<std::sync::atomic::AtomicBool>,
}

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

struct PerEntryTtl;

impl Expiry<Key, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &Key, value: &Entry, _created_at: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

type Key = (Arc<str>, Resource);

/// The process-wide cache of upstream answers.
#[derive(Clone)]
pub struct SharedCache {
    cache: moka::future::Cache<Key, Entry>,
    client: UpstreamClient,
    ttls: Arc<Ttls>,
    invalidations: Arc<Invalidations>,
}

impl SharedCache {
    pub fn new(client: UpstreamClient, ttls: Ttls, capacity: u64) -> SharedCache {
        let cache = moka::future::Cache::builder()
            .max_capacity(capacity)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        SharedCache { cache, client, ttls: Arc::new(ttls), invalidations: Arc::default() }
    }

    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The resource as `caller` sees it: from the cache, or fetched once for all concurrent askers.
    pub async fn get(&self, caller: &Caller, resource: Resource) -> LoadResult {
        let key = (caller.sub.clone(), resource.clone());
        let metrics = self.client.metrics();
        let fetch = || async {
            let started = self.invalidations.now();
            metrics.cache_lookups.with_label_values(&["miss"]).inc();
            let result = resource.fetch(&self.client, caller.token()).await;
            let ttl = match &result {
                Ok(_) => resource.ttl(&self.ttls, Utc::now()),
                Err(_) => self.ttls.negative,
            };
            let result = result.map(|value| Loaded { value, fetched_at: Utc::now() });
            Entry { result, ttl, started, verified: Arc::default() }
        };
        let mut entry = self.cache.entry_by_ref(&key).or_insert_with(fetch()).await;
        if !entry.value().verified.load(Ordering::Acquire) {
            if self.invalidations.made_since(&key, entry.value().started) {
                // Fetched while something made it stale (by us or by whoever we waited on): again.
                self.cache.invalidate(&key).await;
                entry = self.cache.entry(key).or_insert_with(fetch()).await;
            } else {
                entry.value().verified.store(true, Ordering::Release);
            }
        }
        if !entry.is_fresh() {
            metrics.cache_lookups.with_label_values(&["hit"]).inc();
        }
        entry.into_value().result
    }

    /// Drops every entry (of every caller) that `stale` says a change made out of date.
    pub fn invalidate(&self, stale: impl Fn(&Resource) -> bool + Send + Sync + 'static) {
        self.invalidate_keys(Arc::new(move |(_, r): &Key| stale(r)));
    }

    /// Drops one caller's entries that `stale` names.
    pub fn invalidate_caller_resource(&self, sub: &str, stale: impl Fn(&Resource) -> bool + Send + Sync + 'static) {
        let sub: Arc<str> = sub.into();
        self.invalidate_keys(Arc::new(move |(s, r): &Key| *s == sub && stale(r)));
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

/// The loader of one GraphQL request: one caller, the shared cache below.
pub struct RequestLoader {
    caller: Caller,
    shared: SharedCache,
}

impl Loader<Resource> for RequestLoader {
    /// Each resource's own result, so one failing resource does not fail its batch.
    type Value = LoadResult;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[Resource]) -> Result<HashMap<Resource, LoadResult>, Self::Error> {
        let loads = keys.iter().map(|k| async move { (k.clone(), self.shared.get(&self.caller, k.clone()).await) });
        Ok(futures::future::join_all(loads).await.into_iter().collect())
    }
}

/// The per-request DataLoader (with a per-request cache).
pub type Loaders = DataLoader<RequestLoader, HashMapCache>;

pub fn request_loaders(caller: Caller, shared: SharedCache) -> Loaders {
    DataLoader::with_cache(RequestLoader { caller, shared }, tokio::spawn, HashMapCache::default())
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
