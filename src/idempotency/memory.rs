//! The store of one process: moka caches bounded in bytes, with per-caller limits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Claim, Claimed, Completion, Digest, IdempotencyStore, Outcome, Refusal, Slot};

/// At most this many bytes of kept outcomes, all callers together: beyond it a new key is refused
/// like a caller's beyond their own limits. Kept outcomes are never evicted early (moka's default
/// admission would drop a new entry at once, letting its retry run again); the cache's own bound
/// is only a backstop above this one.
const KEPT_BYTES: u64 = 64 * 1024 * 1024;
/// Room above `KEPT_BYTES` for the requests already running when it is reached.
const KEPT_SLACK: u64 = 16 * 1024 * 1024;
/// At most this many keys of one caller are kept at once, and at most `CALLER_BYTES` of theirs:
/// beyond either, a request with a new key is refused (RATE_LIMITED, nothing sent) until some of
/// the caller's keys expire. Refused rather than making room by dropping the caller's oldest
/// keys: a key dropped early would let its retry run the write again, the very thing a key
/// prevents, and would do so silently. So no caller's keys crowd out another's either, short of
/// `KEPT_BYTES / CALLER_BYTES` callers at their limits together.
pub(super) const CALLER_KEYS: usize = 1_000;
pub(super) const CALLER_BYTES: u64 = 4 * 1024 * 1024;
/// What a kept entry takes besides its strings: the cache's entry, the `Arc`s, the watch channel
/// and what the upstream told (a station's state), which the arguments do not say.
const ENTRY_OVERHEAD: usize = 1024;
/// At most this many `Idempotency-Key` headers are remembered, all callers together (about 400
/// bytes each at most). Past it the oldest go first; their mutations' own entries still replay.
const HEADER_REQUESTS: u64 = 100_000;

/// The first request made with a key, and its outcome.
struct Stored {
    /// The mutation field (not its alias).
    field: String,
    fingerprint: Digest,
    outcome: Outcome,
    /// About how many bytes the entry holds (see [`weight`]).
    weight: u32,
    /// When it was kept (its key is free again a window later).
    at: Instant,
}

/// About how many bytes an entry holds: its strings, and what its outcome can hold beyond what
/// the upstream told: the arguments (an answer may repeat them, e.g. a webhook URL; their
/// fingerprint's length stands for them) or an error's message.
pub(super) fn weight(slot: &Slot, field: &str, arguments: usize, outcome: &Outcome) -> u32 {
    let told = match outcome {
        Ok(_) => 0,
        Err(e) => e.message.len(),
    };
    let bytes = ENTRY_OVERHEAD
        + std::mem::size_of::<Stored>()
        + std::mem::size_of::<Outcome>()
        + slot.who.len()
        + slot.key.len()
        + field.len()
        + arguments
        + told;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// What one caller has kept.
#[derive(Default)]
struct Kept {
    keys: usize,
    bytes: u64,
    /// When each of their entries was kept, oldest first.
    since: VecDeque<Instant>,
}

/// What each caller has kept (keys and bytes), and the bytes of everyone together.
#[derive(Default)]
struct Usage(Mutex<HashMap<Arc<str>, Kept>>, AtomicU64);

impl Usage {
    fn of(&self, who: &str) -> (usize, u64) {
        self.lock().get(who).map(|k| (k.keys, k.bytes)).unwrap_or_default()
    }

    /// When the oldest entry kept was kept: that of `who`, or of anyone (`None`).
    fn oldest(&self, who: Option<&str>) -> Option<Instant> {
        let usage = self.lock();
        match who {
            Some(who) => usage.get(who)?.since.front().copied(),
            None => usage.values().filter_map(|k| k.since.front().copied()).min(),
        }
    }

    fn total(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    fn add(&self, who: &Arc<str>, stored: &Stored) {
        let mut usage = self.lock();
        let kept = usage.entry(who.clone()).or_default();
        kept.keys += 1;
        kept.bytes += u64::from(stored.weight);
        // In order but for concurrent inserts, which are a moment apart.
        let at = kept.since.partition_point(|t| *t <= stored.at);
        kept.since.insert(at, stored.at);
        self.1.fetch_add(u64::from(stored.weight), Ordering::Relaxed);
    }

    fn remove(&self, who: &str, stored: &Stored) {
        let mut usage = self.lock();
        self.1.fetch_sub(u64::from(stored.weight).min(self.total()), Ordering::Relaxed);
        if let Some(kept) = usage.get_mut(who) {
            kept.keys = kept.keys.saturating_sub(1);
            kept.bytes = kept.bytes.saturating_sub(u64::from(stored.weight));
            if let Some(at) = kept.since.iter().position(|t| *t == stored.at) {
                kept.since.remove(at);
            }
            if kept.keys == 0 {
                usage.remove(who);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Kept>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Running = watch::Sender<Option<Arc<Stored>>>;

/// Outcomes kept in this process. Kept entries are weighed (about their bytes): at most
/// `KEPT_BYTES` together, and at most `CALLER_KEYS` keys and `CALLER_BYTES` of one caller.
pub(crate) struct MemoryStore {
    kept: moka::sync::Cache<Slot, Arc<Stored>>,
    /// The requests running now, by key; checked together with `kept` under this lock. Dropping
    /// a sender tells its waiters that nothing was sent.
    running: Mutex<HashMap<Slot, Running>>,
    /// What each caller has in `kept`: added before an entry is inserted, removed when the cache
    /// lets it go (expired, evicted or replaced). Never locked around a call to the cache, whose
    /// listener locks it.
    usage: Arc<Usage>,
    /// Which request each `Idempotency-Key` header named (by caller and key): its mutations with
    /// their arguments, hashed. Written when one of them runs, under the `running` lock.
    requests: moka::sync::Cache<(Arc<str>, String), Digest>,
    window: Duration,
}

impl MemoryStore {
    pub(crate) fn new(window: Duration) -> MemoryStore {
        let usage = Arc::new(Usage::default());
        let freed = usage.clone();
        MemoryStore {
            kept: moka::sync::Cache::builder()
                .max_capacity(KEPT_BYTES + KEPT_SLACK)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_: &Slot, stored: &Arc<Stored>| stored.weight)
                .eviction_listener(move |slot: Arc<Slot>, stored: Arc<Stored>, _| freed.remove(&slot.who, &stored))
                .time_to_live(window)
                .build(),
            running: Mutex::new(HashMap::new()),
            usage,
            // Longer than the window: a request's mutations are kept a window from when each ends.
            requests: moka::sync::Cache::builder()
                .max_capacity(HEADER_REQUESTS)
                .time_to_live(window + Duration::from_secs(120))
                .build(),
            window,
        }
    }

    /// Whether `who` has as many keys as they may (`CALLER_KEYS`, `CALLER_BYTES`), counting the
    /// `running` requests of theirs, which will be kept.
    fn full(&self, who: &str, running: usize) -> bool {
        let (keys, bytes) = self.usage.of(who);
        keys + running >= CALLER_KEYS || bytes >= CALLER_BYTES || self.usage.total() >= KEPT_BYTES
    }

    /// The refusal of a new key to a caller who has as many as they may, with the time until the
    /// oldest key that stands in the way is free again.
    fn too_many(&self, who: &str) -> Refusal {
        let (keys, bytes) = self.usage.of(who);
        let theirs = keys >= CALLER_KEYS || bytes >= CALLER_BYTES;
        let oldest = self.usage.oldest(theirs.then_some(who));
        let retry_after = oldest.map(|at| (at + self.window).saturating_duration_since(Instant::now()));
        too_many(self.window, retry_after)
    }

    fn running(&self) -> MutexGuard<'_, HashMap<Slot, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look under the `running` lock: the first outcome, a wait, or the key taken for this
    /// request (`None`: the caller is full).
    fn look(&self, claim: &Claim) -> Result<Option<Claimed>, Refusal> {
        let Claim { slot, request, .. } = claim;
        let named = (slot.who.clone(), slot.key.clone());
        let mut running = self.running();
        // Under the header, the key must name this very request.
        if let Some(request) = request
            && self.requests.get(&named).is_some_and(|first| first != *request)
        {
            return Err(other_request(&slot.key));
        }
        if let Some(first) = self.kept.get(slot) {
            return replay(claim, &first).map(|o| Some(Claimed::Replay(o)));
        }
        let theirs = running.keys().filter(|s| s.who == slot.who).count();
        if let Some(first) = running.get(slot) {
            let (mut rx, claim) = (first.subscribe(), claim.clone());
            let wait = async move {
                let first = rx.wait_for(Option::is_some).await.ok()?.clone()?;
                Some(replay(&claim, &first))
            };
            return Ok(Some(Claimed::Wait(wait.boxed())));
        }
        if self.full(&slot.who, theirs) {
            return Ok(None);
        }
        running.insert(slot.clone(), watch::channel(None).0);
        if let Some(request) = request {
            self.requests.insert(named, request.clone());
        }
        Ok(Some(Claimed::Run))
    }
}

/// The refusal of a new key to a caller who has as many as they may (or to anyone, when all
/// callers together have), to try again after `retry_after` (`None`: a window).
pub(super) fn too_many(window: Duration, retry_after: Option<Duration>) -> Refusal {
    Refusal::Full {
        // Whole seconds, rounded up, at least one.
        retry_after: retry_after.map_or(window, |d| Duration::from_secs(d.as_secs() + 1)),
        message: format!(
            "too many idempotency keys in use: at most {CALLER_KEYS} (and {} MiB of results) per user, and {} MiB \
             for all users, are kept for {} s; nothing was sent. Send it again once some keys have expired",
            CALLER_BYTES / (1024 * 1024),
            KEPT_BYTES / (1024 * 1024),
            window.as_secs()
        ),
    }
}

/// The refusal of an `Idempotency-Key` header that named another request before.
pub(super) fn other_request(key: &str) -> Refusal {
    Refusal::Conflict(format!(
        "the idempotency key '{key}' (the Idempotency-Key header) was already used for a different request \
         (other mutations, or other arguments); nothing was sent. Use a new key for a new request"
    ))
}

/// The first request's outcome, or a refusal if this request is another one.
fn replay(claim: &Claim, first: &Stored) -> Result<Outcome, Refusal> {
    same_request(claim, &first.field, &first.fingerprint)?;
    Ok(first.outcome.clone())
}

/// Refuses `claim` if the first request under its key (`field` with arguments hashed to
/// `fingerprint`) was another one.
pub(super) fn same_request(claim: &Claim, field: &str, fingerprint: &str) -> Result<(), Refusal> {
    let ours = &claim.field;
    if field != ours || *fingerprint != *claim.fingerprint {
        let other = if field == ours { format!("{ours} with other arguments") } else { field.to_string() };
        return Err(Refusal::Conflict(format!(
            "the idempotency key '{}' was already used for a different request ({other}); nothing was sent. \
             Use a new key for a new request",
            claim.slot.key
        )));
    }
    Ok(())
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Claimed, Refusal>> {
        async move {
            if let Some(claimed) = self.look(claim)? {
                return Ok(claimed);
            }
            // Expired entries may not have been let go yet: once, outside the lock.
            self.kept.run_pending_tasks();
            self.look(claim)?.ok_or_else(|| self.too_many(&claim.slot.who))
        }
        .boxed()
    }

    fn complete(&self, claim: &Claim, end: Completion) {
        let mut running = self.running();
        let Some(tx) = running.remove(&claim.slot) else { return };
        let (outcome, keep) = match end {
            Completion::Keep(outcome) => (outcome, true),
            Completion::Pass(outcome) => (outcome, false),
            Completion::Free => return,
        };
        let weight = weight(&claim.slot, &claim.field, claim.arguments + claim.fingerprint.len(), &outcome);
        let stored = Arc::new(Stored {
            field: claim.field.clone(),
            fingerprint: claim.fingerprint.clone(),
            outcome,
            weight,
            at: Instant::now(),
        });
        if keep {
            // Counted before the cache has it: the cache may let it go at once (too heavy).
            self.usage.add(&claim.slot.who, &stored);
            self.kept.insert(claim.slot.clone(), stored.clone());
            // The request's mark lasts as long as what it kept.
            if let Some(request) = &claim.request {
                self.requests.insert((claim.slot.who.clone(), claim.slot.key.clone()), request.clone());
            }
        }
        tx.send_replace(Some(stored));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Failure, digest};
    use super::*;

    fn slot(who: &str, key: usize) -> Slot {
        Slot { who: who.into(), key: format!("k-{key}"), place: None }
    }

    fn claim(who: &str, key: usize, fingerprint: &str) -> Claim {
        Claim {
            slot: slot(who, key),
            field: "f".into(),
            arguments: fingerprint.len(),
            fingerprint: digest(fingerprint).unwrap(),
            request: None,
        }
    }

    #[test]
    fn fingerprints_of_any_length_are_kept_as_43_bytes_and_told_apart() {
        let long = "x".repeat(1 << 20);
        let (a, b) = (digest(&long).unwrap(), digest(&format!("{long}y")).unwrap());
        assert_eq!((a.len(), b.len()), (43, 43));
        assert_ne!(a, b);
        assert_eq!(a, digest(&long).unwrap());
        // The arguments still weigh what they are: an answer may repeat them.
        let outcome: Outcome = Ok(serde_json::Value::Null);
        assert!(weight(&slot("u", 1), "f", long.len(), &outcome) as usize > long.len());
        let refused: Outcome =
            Err(Failure { code: "BAD_USER_INPUT".into(), message: long.clone(), retry_after_ms: None });
        assert!(weight(&slot("u", 1), "f", 0, &refused) as usize > long.len());
    }

    #[test]
    fn kept_entries_stay_under_the_byte_bound_and_each_callers_usage_follows_the_cache() {
        let store = MemoryStore::new(Duration::from_secs(600));
        let heavy = 1 << 20;
        for n in 0..100 {
            let (s, w) = (slot(if n % 2 == 0 { "a" } else { "b" }, n), heavy);
            let at = Instant::now();
            let outcome = Ok(serde_json::Value::Null);
            let stored = Arc::new(Stored { field: "f".into(), fingerprint: "d".into(), outcome, weight: w, at });
            store.usage.add(&s.who, &stored);
            store.kept.insert(s, stored);
        }
        store.kept.run_pending_tasks();
        let kept = store.kept.weighted_size();
        assert!(kept <= KEPT_BYTES + KEPT_SLACK && kept > KEPT_BYTES / 2, "{kept}");
        let (a, b) = (store.usage.of("a"), store.usage.of("b"));
        assert_eq!(a.1 + b.1, kept, "{a:?} {b:?}");
        assert_eq!(store.usage.total(), kept);
        assert_eq!((a.0 + b.0) as u64, store.kept.entry_count());
        // Full for everyone, a caller with no key at all included: new keys are refused rather
        // than kept ones dropped.
        assert!(store.full("c", 0));
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_first_and_replays_it_or_runs_when_nothing_was_kept() {
        let store = MemoryStore::new(Duration::from_secs(600));
        let first = claim("u", 1, "a");
        assert!(matches!(store.claim(&first).await, Ok(Claimed::Run)));
        let Ok(Claimed::Wait(wait)) = store.claim(&first).await else { panic!("expected a wait") };
        store.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
        assert_eq!(wait.await, Some(Ok(Ok(serde_json::json!(7)))));
        assert!(matches!(store.claim(&first).await, Ok(Claimed::Replay(Ok(v))) if v == 7));
        // Another request under the key is refused.
        assert!(matches!(store.claim(&claim("u", 1, "b")).await, Err(Refusal::Conflict(_))));
        // Freed without an outcome: the waiter learns it and the key runs again.
        let second = claim("u", 2, "a");
        assert!(matches!(store.claim(&second).await, Ok(Claimed::Run)));
        let Ok(Claimed::Wait(wait)) = store.claim(&second).await else { panic!("expected a wait") };
        store.complete(&second, Completion::Free);
        assert_eq!(wait.await, None);
        assert!(matches!(store.claim(&second).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_caller_at_the_key_limit_is_refused_counting_running_requests() {
        let store = MemoryStore::new(Duration::from_secs(600));
        for n in 0..CALLER_KEYS {
            assert!(matches!(store.claim(&claim("u", n, "a")).await, Ok(Claimed::Run)));
        }
        let refused = store.claim(&claim("u", CALLER_KEYS, "a")).await;
        assert!(matches!(refused, Err(Refusal::Full { .. })));
        assert!(matches!(store.claim(&claim("v", 0, "a")).await, Ok(Claimed::Run)));
    }
}
