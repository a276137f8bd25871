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
use std::time::{Duration, Instant};

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
/// It names the whole request: its mutations, their arguments, in their order.
#[derive(Debug)]
pub struct IdempotencyKey {
    key: String,
}

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> IdempotencyKey {
        IdempotencyKey { key: key.into() }
    }
}

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
    fn error(&self, cause: &str) -> AppError {
        AppError::UpstreamUnavailable(format!(
            "the Witty-Home service did not confirm {} ({cause}): it may or may not have been {}. Check {} before \
             sending it again",
            self.what, self.done, self.check
        ))
    }
}

/// A failure of a write, said so the user knows whether it may have happened (see [`did_not_run`]).
fn command_error(e: UpstreamError, doubt: Doubt) -> AppError {
    match e {
        UpstreamError::Timeout => doubt.error("no answer in time"),
        UpstreamError::Unreachable(_) => doubt.error("the connection was cut"),
        UpstreamError::Server { status: status @ (502 | 504), .. } => {
            doubt.error(&format!("its gateway answered {status} after passing the request on"))
        }
        // A failure on its side after taking the request (not 501 or 503, which say it did not
        // run): it may have written first.
        UpstreamError::Server { status: status @ (500 | 505..=599), .. } => {
            doubt.error(&format!("it failed with {status}"))
        }
        other => other.into(),
    }
}

/// A name or label given by the user: trimmed, 1 to `max` characters, no control or invisible
/// formatting characters (a newline, a NUL or a right-to-left override would be stored upstream
/// and shown back everywhere).
pub(crate) fn text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::bad_input(format!("{field} must not be blank")));
    }
    let count = v.chars().count();
    if count > max {
        return Err(AppError::bad_input(format!("{field} must be at most {max} characters, got {count}")));
    }
    let unfit = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    };
    if let Some((at, c)) = v.chars().enumerate().find(|&(_, c)| unfit(c)) {
        // Counted in the value as given, before trimming.
        let lead = value.chars().count() - value.trim_start().chars().count();
        return Err(AppError::bad_input(format!(
            "{field} must not contain control or invisible formatting characters, found U+{:04X} at character {}",
            c as u32,
            lead + at + 1
        )));
    }
    Ok(v.to_string())
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
            | UpstreamError::Server { status: 501 | 503, .. }
            | UpstreamError::Rejected { status: 408, .. }
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
    /// What to keep for the key if the request goes away after the upstream accepted the write
    /// (while waiting for its effect): the answer it would have had without waiting.
    accepted: Arc<std::sync::Mutex<Option<Box<dyn Any + Send + Sync>>>>,
}

impl Sent {
    fn new(doubt: Doubt) -> Sent {
        Sent { sent: Arc::new(AtomicBool::new(false)), doubt, accepted: Arc::default() }
    }

    /// The upstream accepted the write: should the request go away before it finishes (waiting
    /// for the write's effect), `answer` is what its key keeps, not a doubt.
    pub(crate) fn accepted<V: Any + Send + Sync>(&self, answer: V) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(answer));
    }

    fn take_accepted<V: Any>(&self) -> Option<V> {
        let answer = self.accepted.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        answer.downcast::<V>().ok().map(|v| *v)
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

/// The longest idempotency key, in bytes (the `Idempotency-Key` header or `idempotencyKey`).
const MAX_KEY_BYTES: usize = 255;

/// Which mutation an idempotency key names: the caller, the key and, for the header on a request
/// of several mutations (it covers each), the field's place among the operation's root fields.
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
    /// The field's arguments as the mutation normalised them, hashed (HMAC-SHA256): arguments of
    /// any length take 43 bytes.
    fingerprint: Digest,
    outcome: Arc<dyn Any + Send + Sync>,
    /// About how many bytes the entry holds (see [`weight`]).
    weight: u32,
    /// When it was kept (its key is free again a window later).
    at: Instant,
}

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
const CALLER_KEYS: usize = 1_000;
const CALLER_BYTES: u64 = 4 * 1024 * 1024;
/// What a kept entry takes besides its strings: the cache's entry, the `Arc`s, the watch channel
/// and what the upstream told (a station's state), which the arguments do not say.
const ENTRY_OVERHEAD: usize = 1024;

/// A fingerprint hashed: HMAC-SHA256 (jsonwebtoken's HS256 signer, as the webhook keys), base64url.
/// Collision resistant: two requests with the same digest are the same request.
type Digest = Box<str>;

fn digest(fingerprint: &str) -> AppResult<Digest> {
    crate::auth::hmac_sha256(b"witty-bff idempotency fingerprint", fingerprint.as_bytes())
        .map(String::into_boxed_str)
        .ok_or_else(|| AppError::internal("an idempotency fingerprint could not be hashed"))
}

/// About how many bytes an entry holds: its strings, and what its outcome can hold beyond what
/// the upstream told: the arguments (an answer may repeat them, e.g. a webhook URL; their
/// fingerprint's length stands for them) or an error's message.
fn weight<T>(slot: &Slot, field: &str, arguments: usize, outcome: &AppResult<T>) -> u32 {
    let told = match outcome {
        Ok(_) => 0,
        Err(e) => e.message().len(),
    };
    let bytes = ENTRY_OVERHEAD
        + std::mem::size_of::<Stored>()
        + std::mem::size_of::<AppResult<T>>()
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
    since: std::collections::VecDeque<Instant>,
}

/// What each caller has kept: keys and bytes.
#[derive(Default)]
struct Usage(std::sync::Mutex<HashMap<Arc<str>, Kept>>, std::sync::atomic::AtomicU64);

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

    /// Bytes kept, all callers together.
    fn total(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(&self, who: &Arc<str>, stored: &Stored) {
        let mut usage = self.lock();
        let kept = usage.entry(who.clone()).or_default();
        kept.keys += 1;
        kept.bytes += u64::from(stored.weight);
        // In order but for concurrent inserts, which are a moment apart.
        let at = kept.since.partition_point(|t| *t <= stored.at);
        kept.since.insert(at, stored.at);
        self.1.fetch_add(u64::from(stored.weight), std::sync::atomic::Ordering::Relaxed);
    }

    fn remove(&self, who: &str, stored: &Stored) {
        let mut usage = self.lock();
        self.1.fetch_sub(u64::from(stored.weight).min(self.total()), std::sync::atomic::Ordering::Relaxed);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Kept>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Outcome = watch::Receiver<Option<Arc<Stored>>>;

/// Results of mutations sent with an idempotency key, kept for a window: the same key from the
/// same caller, for the same mutation with the same arguments, returns the first result without
/// calling the upstream again; for a different request it is refused. Concurrent requests with
/// one key wait for the first one's outcome.
/// Kept entries are weighed (about their bytes): at most `KEPT_BYTES` together, and at most
/// `CALLER_KEYS` keys and `CALLER_BYTES` of one caller.
pub struct Idempotency {
    kept: moka::sync::Cache<Slot, Arc<Stored>>,
    /// The requests running now, by key; checked together with `kept` under this lock.
    running: std::sync::Mutex<HashMap<Slot, Outcome>>,
    /// What each caller has in `kept`: added before an entry is inserted, removed when the cache
    /// lets it go (expired, evicted or replaced). Never locked around a call to the cache, whose
    /// listener locks it.
    usage: Arc<Usage>,
    /// Which request each `Idempotency-Key` header named (by caller and key): its mutations with
    /// their arguments, hashed. Written when one of them runs, under the `running` lock.
    requests: moka::sync::Cache<(Arc<str>, String), Digest>,
    window: Duration,
}

/// At most this many `Idempotency-Key` headers are remembered, all callers together (about 400
/// bytes each at most). Past it the oldest go first; their mutations' own entries still replay.
const HEADER_REQUESTS: u64 = 100_000;

impl Idempotency {
    pub fn new(window: Duration) -> Idempotency {
        let usage = Arc::new(Usage::default());
        let freed = usage.clone();
        Idempotency {
            kept: moka::sync::Cache::builder()
                .max_capacity(KEPT_BYTES + KEPT_SLACK)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_: &Slot, stored: &Arc<Stored>| stored.weight)
                .eviction_listener(move |slot: Arc<Slot>, stored: Arc<Stored>, _| freed.remove(&slot.who, &stored))
                .time_to_live(window)
                .build(),
            running: std::sync::Mutex::new(HashMap::new()),
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
    fn too_many(&self, who: &str) -> AppError {
        let (keys, bytes) = self.usage.of(who);
        let theirs = keys >= CALLER_KEYS || bytes >= CALLER_BYTES;
        let oldest = self.usage.oldest(theirs.then_some(who));
        let retry_after = oldest.map(|at| (at + self.window).saturating_duration_since(Instant::now()));
        AppError::RateLimited {
            // Whole seconds, rounded up, at least one.
            retry_after: Some(retry_after.map_or(self.window, |d| Duration::from_secs(d.as_secs() + 1))),
            message: format!(
                "too many idempotency keys in use: at most {CALLER_KEYS} (and {} MiB of results) per user, and {} MiB \
                 for all users, are kept for {} s; nothing was sent. Send it again once some keys have expired",
                CALLER_BYTES / (1024 * 1024),
                KEPT_BYTES / (1024 * 1024),
                self.window.as_secs()
            ),
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
        // The argument wins over the header. A header on a request of one mutation names the
        // same mutation as the argument would; on several, each by its place.
        let (key, place, request, name) = match explicit {
            Some(key) => (key, None, None, "idempotencyKey"),
            None => match ctx.data_opt::<IdempotencyKey>() {
                Some(header) => {
                    let root = root_fields(ctx);
                    let place = (root.count > 1).then_some(root.place);
                    (header.key.clone(), place, Some(digest(&root.identity)?), "the Idempotency-Key header")
                }
                None => return mutation(sent).await,
            },
        };
        if key.trim().is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(AppError::bad_input(format!(
                "{name} must be 1 to {MAX_KEY_BYTES} bytes and not blank (got {} bytes); nothing was sent",
                key.len()
            )));
        }
        let keyed = Keyed {
            slot: Slot { who: caller(ctx)?.sub.clone(), key, place },
            field: ctx.item.node.name.node.to_string(),
            arguments: fingerprint.len(),
            fingerprint: digest(&fingerprint)?,
            request,
        };
        self.keyed(&keyed, sent, mutation).await
    }

    /// [`Idempotency::once`] with the key: the mutation's outcome, run here or the first one's.
    async fn keyed<T, F, Fut>(&self, keyed: &Keyed, sent: Sent, mutation: F) -> AppResult<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(Sent) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let Keyed { slot, field, fingerprint, request, .. } = keyed;
        let named = (slot.who.clone(), slot.key.clone());
        let mut tidied = false;
        loop {
            let role = {
                let mut running = self.running();
                // Under the header, the key must name this very request.
                if let Some(request) = request
                    && self.requests.get(&named).is_some_and(|first| first != *request)
                {
                    return Err(AppError::bad_input(format!(
                        "the idempotency key '{}' (the Idempotency-Key header) was already used for a different request \
                         (other mutations, or other arguments); nothing was sent. Use a new key for a new request",
                        slot.key
                    )));
                }
                if let Some(first) = self.kept.get(slot) {
                    return replay(slot, &first, field, fingerprint);
                }
                let theirs = running.keys().filter(|s| s.who == slot.who).count();
                match running.get(slot) {
                    Some(outcome) => Role::Wait(outcome.clone()),
                    None if self.full(&slot.who, theirs) => Role::Full,
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(slot.clone(), rx);
                        if let Some(request) = request {
                            self.requests.insert(named.clone(), request.clone());
                        }
                        Role::Lead(tx)
                    }
                }
            };
            match role {
                // Expired entries may not have been let go yet: once, outside the lock.
                Role::Full if !tidied => {
                    tidied = true;
                    self.kept.run_pending_tasks();
                }
                Role::Full => return Err(self.too_many(&slot.who)),
                Role::Lead(tx) => {
                    let mut lead =
                        Lead { store: self, keyed, sent: sent.clone(), tx: Some(tx), outcome: PhantomData::<T> };
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
                        return replay(slot, &first, field, fingerprint);
                    }
                }
            }
        }
    }
}

/// A mutation sent under an idempotency key.
struct Keyed {
    slot: Slot,
    /// The mutation field (not its alias).
    field: String,
    /// The length of the arguments' fingerprint before it was hashed.
    arguments: usize,
    fingerprint: Digest,
    /// Under the header: the whole request's mutations and arguments, hashed.
    request: Option<Digest>,
}

enum Role {
    Lead(watch::Sender<Option<Arc<Stored>>>),
    /// The caller has as many keys kept as they may.
    Full,
    Wait(Outcome),
}

/// The first request's outcome, or a refusal if this request is another one.
fn replay<T: Clone + 'static>(slot: &Slot, first: &Stored, field: &str, fingerprint: &str) -> AppResult<T> {
    if first.field != field || *first.fingerprint != *fingerprint {
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
    keyed: &'a Keyed,
    sent: Sent,
    tx: Option<watch::Sender<Option<Arc<Stored>>>>,
    outcome: PhantomData<T>,
}

impl<T: Clone + Send + Sync + 'static> Lead<'_, T> {
    fn settle(&mut self, outcome: AppResult<T>) {
        let Some(tx) = self.tx.take() else { return };
        let r = self.keyed;
        let keep = outcome.is_ok() || self.sent.was_sent();
        let weight = weight(&r.slot, &r.field, r.arguments + r.fingerprint.len(), &outcome);
        let stored = Arc::new(Stored {
            field: r.field.clone(),
            fingerprint: r.fingerprint.clone(),
            outcome: Arc::new(outcome),
            weight,
            at: Instant::now(),
        });
        let mut running = self.store.running();
        if keep {
            // Counted before the cache has it: the cache may let it go at once (too heavy).
            self.store.usage.add(&r.slot.who, &stored);
            self.store.kept.insert(r.slot.clone(), stored.clone());
            // The request's mark lasts as long as what it kept.
            if let Some(request) = &r.request {
                self.store.requests.insert((r.slot.who.clone(), r.slot.key.clone()), request.clone());
            }
        }
        running.remove(&r.slot);
        tx.send_replace(Some(stored));
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        if self.tx.is_none() {
            return;
        }
        if let Some(answer) = self.sent.take_accepted::<T>() {
            tracing::info!(
                field = self.keyed.field,
                "a mutation was dropped while waiting on an accepted write; its key keeps the acceptance"
            );
            self.settle(Ok(answer));
        } else if self.sent.was_sent() {
            tracing::warn!(
                field = self.keyed.field,
                "a mutation was dropped after sending its write; its key keeps a doubt"
            );
            self.settle(Err(self.sent.doubt.error("the request that sent it went away before the answer")));
        } else {
            // Nothing was sent: waiters see the channel close and try again themselves.
            self.store.running().remove(&self.keyed.slot);
            self.tx = None;
        }
    }
}

/// The operation's root fields as an `Idempotency-Key` header sees them.
struct RootFields {
    /// The current field's place (fragments spread in place; fields answered under one key, and
    /// `__typename`, counted once or not at all), so that the header covers each mutation of a
    /// request whatever its alias.
    place: usize,
    count: usize,
    /// Every root field with its arguments and directives, in order, without aliases, then the
    /// request's variables: what the header names.
    identity: String,
}

fn root_fields(ctx: &Context<'_>) -> RootFields {
    use async_graphql::parser::types::Field;
    struct Seen<'a> {
        keys: Vec<&'a str>,
        mine: Option<usize>,
        identity: String,
    }
    /// A field as written, without its alias (its variables are added once, after all fields).
    fn describe(f: &Field, out: &mut String) {
        out.push_str(f.name.node.as_str());
        for (name, value) in &f.arguments {
            out.push_str(&format!(" {}: {}", name.node, value.node));
        }
        for d in &f.directives {
            out.push_str(&format!(" @{}", d.node.name.node));
            for (name, value) in &d.node.arguments {
                out.push_str(&format!(" {}: {}", name.node, value.node));
            }
        }
        out.push('\n');
    }
    fn walk<'a>(set: &'a SelectionSet, ctx: &Context<'a>, seen: &mut Seen<'a>, depth: u8) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(f) if f.node.name.node.starts_with("__") => {}
                Selection::Field(f) => {
                    let key = f.node.response_key().node.as_str();
                    let place = seen.keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                        seen.keys.push(key);
                        describe(&f.node, &mut seen.identity);
                        seen.keys.len() - 1
                    });
                    if f.pos == ctx.item.pos {
                        seen.mine = Some(place);
                    }
                }
                Selection::FragmentSpread(s) if depth < 16 => {
                    if let Some(f) = ctx.query_env.fragments.get(&s.node.fragment_name.node) {
                        walk(&f.node.selection_set.node, ctx, seen, depth + 1);
                    }
                }
                Selection::InlineFragment(f) if depth < 16 => walk(&f.node.selection_set.node, ctx, seen, depth + 1),
                _ => {}
            }
        }
    }
    let mut seen = Seen { keys: Vec::new(), mine: None, identity: String::new() };
    walk(&ctx.query_env.operation.node.selection_set.node, ctx, &mut seen, 0);
    seen.identity.push_str(&serde_json::to_string(&ctx.query_env.variables).unwrap_or_default());
    RootFields { place: seen.mine.unwrap_or(seen.keys.len()), count: seen.keys.len(), identity: seen.identity }
}

/// Drops every cached resource of an installation that `stale` names, for every caller.
pub(crate) fn invalidate(ctx: &Context<'_>, installation_id: i64, stale: fn(&Resource) -> bool) -> AppResult<()> {
    services(ctx)?.cache.invalidate(move |r| r.installation_id() == Some(installation_id) && stale(r));
    Ok(())
}

/// Keeps answers that `changing` names, read from now on, only briefly for as long as `wait: true`
/// would wait: a command was accepted upstream and the station applies it a moment later, so a
/// client re-reading after `ACCEPTED` sees the change soon after it happens, not a TTL later.
/// Returns the mark, to settle once the change is seen.
pub(crate) fn unsettle(ctx: &Context<'_>, installation_id: i64, changing: fn(&Resource) -> bool) -> AppResult<u64> {
    let svc = services(ctx)?;
    Ok(svc
        .cache
        .unsettle(svc.commands.wait_timeout, move |r| r.installation_id() == Some(installation_id) && changing(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(who: &str, key: usize) -> Slot {
        Slot { who: who.into(), key: format!("k-{key}"), place: None }
    }

    #[test]
    fn names_are_trimmed_and_refuse_control_and_invisible_characters_where_they_were_given() {
        assert_eq!(text("n", "  Garage nord \n", 64).unwrap(), "Garage nord");
        for (given, at) in [("a\u{0}b", "U+0000 at character 2"), ("  ab\u{202E}c", "U+202E at character 5")] {
            let e = text("n", given, 64).unwrap_err().message().to_string();
            assert!(e.contains(at), "{given:?}: {e}");
        }
        for bad in ["a\u{200B}b", "a\u{2028}b", "a\u{FEFF}"] {
            assert!(text("n", bad, 64).is_err(), "{bad:?}");
        }
        assert!(text("n", "   ", 64).unwrap_err().message().contains("blank"));
        assert!(text("n", &"é".repeat(65), 64).unwrap_err().message().contains("at most 64 characters, got 65"));
        assert_eq!(text("n", "Borne « Été » ⚡", 64).unwrap(), "Borne « Été » ⚡");
    }

    #[test]
    fn fingerprints_of_any_length_are_kept_as_43_bytes_and_told_apart() {
        let long = "x".repeat(1 << 20);
        let (a, b) = (digest(&long).unwrap(), digest(&format!("{long}y")).unwrap());
        assert_eq!((a.len(), b.len()), (43, 43));
        assert_ne!(a, b);
        assert_eq!(a, digest(&long).unwrap());
        // The arguments still weigh what they are: an answer may repeat them.
        let outcome: AppResult<()> = Ok(());
        assert!(weight(&slot("u", 1), "f", long.len(), &outcome) as usize > long.len());
        let refused: AppResult<()> = Err(AppError::bad_input(long.clone()));
        assert!(weight(&slot("u", 1), "f", 0, &refused) as usize > long.len());
    }

    #[test]
    fn kept_entries_stay_under_the_byte_bound_and_each_callers_usage_follows_the_cache() {
        let store = Idempotency::new(Duration::from_secs(600));
        let heavy = 1 << 20;
        for n in 0..100 {
            let (s, w) = (slot(if n % 2 == 0 { "a" } else { "b" }, n), heavy);
            let at = Instant::now();
            let stored =
                Arc::new(Stored { field: "f".into(), fingerprint: "d".into(), outcome: Arc::new(()), weight: w, at });
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
}
