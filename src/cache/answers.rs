//! Whole answers of queries, kept as the bytes sent, and exactly as long as what they were
//! computed from.
//!
//! A query's answer is decided by who asks (the token's `sub`: every role and consent rule is
//! applied to what that caller's reads returned), the document, the operation and the variables,
//! and by the cache entries its resolvers read. Each answer is kept with the entries it read, by
//! their fetch number ([`Reads`]), and is served again only while every one of them is still the
//! entry in the cache and still trusted ([`SharedCache::still_current`]). Every invalidation that
//! exists (a TTL running out, a mutation's `Change`, a station event, a membership or consent
//! change, here or from another replica) acts on those entries, so it drops exactly the answers
//! that used them, with no bookkeeping of its own, and an answer is never served that a fresh
//! execution over the same cache would not give.
//!
//! An answer is not kept when something it depends on is not a cache entry: a read the cache
//! did not store (another token's refusal answered outside it, a read past the request's budget)
//! or an error the transport does not know to follow from the reads (it keeps only answers whose
//! errors are refusals of the role and consent rules). A resolver whose value moves with the
//! clock bounds the answer's life ([`Reads::valid_until`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Entry, Key, SharedCache};

/// The most bytes of document and variables of an answer kept.
const MAX_KEY_BYTES: usize = 64 * 1024;

/// What one execution read: the entries, by fetch number.
#[derive(Default)]
pub(crate) struct Reads {
    recorded: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    deps: Vec<(Key, u64)>,
    /// Something read was not a stored entry: the answer cannot be checked later.
    unrepeatable: bool,
    /// The answer changes with the clock by then.
    until: Option<DateTime<Utc>>,
    /// The shortest TTL among the entries read: past it one of them is gone.
    ttl: Option<Duration>,
}

impl Reads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read failed without an entry to check later (a refused token, the request's budget
    /// spent): an answer that read it is not kept, even if a resolver made it a `null`.
    pub(super) fn unrepeatable(&self) {
        self.lock().unrepeatable = true;
    }

    pub(super) fn record(&self, key: &Key, entry: &Entry) {
        let mut r = self.lock();
        if entry.id == 0 {
            r.unrepeatable = true;
            return;
        }
        if !r.deps.iter().any(|(k, id)| *id == entry.id && k == key) {
            r.deps.push((key.clone(), entry.id));
        }
        r.ttl = Some(r.ttl.map_or(entry.ttl, |t| t.min(entry.ttl)));
    }

    /// The answer being computed is right only until `when` (a price that starts then, say).
    pub(crate) fn valid_until(&self, when: DateTime<Utc>) {
        let mut r = self.lock();
        r.until = Some(r.until.map_or(when, |u| u.min(when)));
    }
}

/// What decides a query's answer besides the entries it reads.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct AnswerKey {
    pub sub: Arc<str>,
    pub document: String,
    pub operation: Option<String>,
    /// The variables as sent, in JSON.
    pub variables: String,
}

/// A kept answer: the response body and its entity tag, with what it read.
pub(crate) struct Answer {
    pub body: Bytes,
    /// Made when first asked for (GET and HEAD only).
    etag: std::sync::OnceLock<String>,
    deps: Vec<(Key, u64)>,
    until: Option<DateTime<Utc>>,
    ttl: Duration,
}

struct AnswerTtl;

impl moka::Expiry<AnswerKey, Arc<Answer>> for AnswerTtl {
    fn expire_after_create(&self, _: &AnswerKey, answer: &Arc<Answer>, _: Instant) -> Option<Duration> {
        Some(answer.ttl)
    }
}

/// The kept answers of every caller (none when the response cache is off).
#[derive(Clone, Default)]
pub(super) struct Answers {
    kept: Option<moka::sync::Cache<AnswerKey, Arc<Answer>>>,
}

impl Answers {
    /// At most `bytes` of answers (bodies and what they read), whatever their number; 0: off.
    pub(super) fn new(bytes: u64) -> Answers {
        if bytes == 0 {
            return Answers { kept: None };
        }
        let kept = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|key: &AnswerKey, answer: &Arc<Answer>| {
                let key_size = key.sub.len() + key.document.len() + key.variables.len();
                let deps: usize = answer.deps.iter().map(|((sub, _), _)| 96 + sub.len()).sum();
                let size = key_size + key.operation.as_ref().map_or(0, String::len) + answer.body.len() + deps;
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(AnswerTtl)
            .build();
        Answers { kept: Some(kept) }
    }
}

impl SharedCache {
    /// With a response cache of at most `bytes` (0: off).
    pub(crate) fn with_response_cache(mut self, bytes: u64) -> SharedCache {
        self.answers = Answers::new(bytes);
        self
    }

    /// The kept answer for `key`, when everything it read is still current.
    pub(crate) async fn answer(&self, key: &AnswerKey) -> Option<Arc<Answer>> {
        let kept = self.answers.kept.as_ref()?;
        let answer = kept.get(key)?;
        let fresh = answer.until.is_none_or(|until| Utc::now() < until) && self.still_current(&answer.deps).await;
        if !fresh {
            kept.invalidate(key);
        }
        fresh.then_some(answer)
    }

    /// Keeps `body`, the answer to `key` computed from `reads`, unless something it depends on
    /// cannot be checked later. Returns the answer, and whether it was kept.
    pub(crate) fn keep_answer(&self, key: AnswerKey, body: Bytes, reads: &Reads) -> (Arc<Answer>, bool) {
        let r = std::mem::take(&mut *reads.lock());
        let ttl = r.ttl.unwrap_or(Duration::ZERO);
        let answer = Arc::new(Answer { etag: Default::default(), body, deps: r.deps, until: r.until, ttl });
        // Nothing read (an empty list of installations is still a read): nothing to check later
        // against, so nothing kept. A document or variables past `MAX_KEY_BYTES` (unused variables
        // are accepted) would let one caller's few answers push out everyone's: not kept either.
        let small = key.document.len() + key.variables.len() <= MAX_KEY_BYTES;
        let keep = small && !r.unrepeatable && !answer.deps.is_empty() && !ttl.is_zero();
        let kept = self.answers.kept.as_ref().filter(|_| keep);
        if let Some(kept) = kept {
            kept.insert(key, answer.clone());
        }
        let keep = kept.is_some();
        (answer, keep)
    }
}

impl Answer {
    /// The opaque tag of the answer (`"…"`, RFC 9110, 8.8.3).
    pub(crate) fn etag(&self) -> &str {
        self.etag.get_or_init(|| etag(&self.body))
    }
}

/// The opaque tag of `body`: its SHA-256, shortened.
fn etag(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
