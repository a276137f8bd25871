//! The `Idempotency-Key` store: the outcome of a mutation sent with a key is kept for a window, so
//! that the same request sent again gets the first outcome without reaching the upstream again,
//! a different request under the key is refused, and a concurrent duplicate waits for the first.
//!
//! The store knows nothing of GraphQL or of the mutations: it keeps, per caller and key, the
//! mutation's name, a hash of its arguments and its outcome as JSON ([`Outcome`]), so that a store
//! shared by replicas (Redis) can implement [`IdempotencyStore`] as [`MemoryStore`] does.
//!
//! [`MemoryStore`] keeps them in one process; [`RedisStore`] in the fleet's Redis, so that a key
//! retried or duplicated on another replica finds the first request there, and in its own
//! [`MemoryStore`] while Redis fails.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub(crate) use memory::MemoryStore;
pub(crate) use redis::RedisStore;

/// A mutation's outcome as a key keeps it: its answer as JSON, or the error it gave.
pub(crate) type Outcome = Result<serde_json::Value, Failure>;

/// An error kept for a key, as the client was told it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Failure {
    /// The error's `extensions.code`.
    pub code: String,
    pub message: String,
    /// For a refusal to be tried again later (`RATE_LIMITED`), in milliseconds.
    pub retry_after_ms: Option<u64>,
}

/// A hash of a request's arguments (HMAC-SHA256, base64url: 43 bytes whatever their length).
/// Collision resistant: two requests with the same digest are the same request.
pub(crate) type Digest = Box<str>;

/// Hashes a description of a request's arguments.
pub(crate) fn digest(fingerprint: &str) -> Option<Digest> {
    crate::auth::hmac_sha256(b"witty-bff idempotency fingerprint", fingerprint.as_bytes()).map(String::into_boxed_str)
}

/// Which mutation a key names: the caller, the key and, for the header on a request of several
/// mutations (it covers each), the field's place among the operation's root fields. Never the
/// alias: a retry may name the field differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    pub who: Arc<str>,
    pub key: String,
    pub place: Option<usize>,
}

/// A mutation sent under a key, as the store compares it with the first one.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub slot: Slot,
    /// The mutation field (not its alias).
    pub field: String,
    /// The length of the arguments' description before it was hashed (what an answer may repeat).
    pub arguments: usize,
    pub fingerprint: Digest,
    /// Under the header: the whole request's mutations and arguments, hashed. The key must name
    /// the same request each time.
    pub request: Option<Digest>,
}

/// What a claim found.
pub(crate) enum Claimed {
    /// The key is new: run the mutation, then [`IdempotencyStore::complete`] it.
    Run,
    /// The same request ran before: its outcome.
    Replay(Outcome),
    /// The same key is running now: wait for the first one's outcome, then claim again if it
    /// ended without one (it was dropped before anything was sent).
    Wait(BoxFuture<'static, Option<Result<Outcome, Refusal>>>),
}

/// Why a key was refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The key was used for another request.
    #[error("{0}")]
    Conflict(String),
    /// The caller (or everyone together) has as many keys kept as they may.
    #[error("{message}")]
    Full { retry_after: Duration, message: String },
}

/// Where outcomes of keyed mutations are kept.
pub(crate) trait IdempotencyStore: Send + Sync {
    /// Claims the key for this request.
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Claimed, Refusal>>;

    /// Ends a [`Claimed::Run`]. Called from a drop guard, so it does not wait: a remote store
    /// sends its write in the background.
    fn complete(&self, claim: &Claim, end: Completion);
}

/// How a mutation run under a key ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Completion {
    /// Kept for the window, and given to those waiting: the write may have run.
    Keep(Outcome),
    /// Given to those waiting (concurrent duplicates make one upstream call), not kept: nothing
    /// ran upstream, so the key may try again.
    Pass(Outcome),
    /// Gone before anything was sent: the key is free and a waiter runs it instead.
    Free,
}
