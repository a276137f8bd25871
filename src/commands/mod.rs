//! The write path: every mutation is described once, as a [`Command`] (who may run it, what a
//! failure after sending leaves in doubt, which cached resources it changes), and runs through
//! [`run`]: idempotency claim, role check, one upstream write (never retried), invalidation of
//! what it changed, and the outcome recorded for its key.
//!
//! Nothing here reads a GraphQL request: the resolvers in `graphql::mutations` check and translate
//! their arguments, hand over the caller, the idempotency key and an [`Access`] check, and turn
//! the answer back into GraphQL objects. Errors are the app's one [`AppError`]: a command's
//! refusals are the client's error codes, so a second error type would only be mapped one to one.

pub(crate) mod input;
pub(crate) mod installations;
pub(crate) mod meters;
pub(crate) mod notifications;
mod run;
pub(crate) mod sharing;
pub(crate) mod stations;
pub(crate) mod tariffs;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use input::{text, url_without_controls};
pub(crate) use run::{Invocation, Key, KeySource, Write, run, send, send_checked};

use crate::cache::SharedCache;
pub(crate) use crate::cache::read::Kind;
use crate::events::SharedBus;
use crate::graphql::error::{AppError, AppResult};
use crate::idempotency::IdempotencyStore;

/// How commands behave.
#[derive(Debug, Clone)]
pub(crate) struct CommandSettings {
    /// How long `wait: true` waits for the station to show the change.
    pub wait_timeout: Duration,
}

/// What commands need besides the request's caller.
pub(crate) struct Services {
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub commands: CommandSettings,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub live: Arc<crate::live::Live>,
}

/// A mutation, described once.
#[derive(Debug)]
pub(crate) struct Command {
    /// The mutation's GraphQL field: what an idempotency key remembers it by.
    pub name: &'static str,
    pub who: Who,
    /// What a failure after sending leaves in doubt.
    pub doubt: Doubt,
    /// What its write makes stale.
    pub changes: Changes,
}

/// Who may run a command; checked on fresh state once the key is claimed, before anything is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who {
    /// The installation's owner; installers are told they cannot `what`.
    Owner { what: &'static str },
    /// Anyone who sees the installation (its owner or an enabled installer).
    Member,
    /// Any authenticated caller (what they may do is the upstream's to say).
    Anyone,
}

/// Asks the request whether its caller may run a command. Implemented over the request's loaders
/// (`graphql::access`), so the check reads what the request reads.
pub(crate) trait Access: Sync {
    fn allow(&self, who: Who, installation_id: Option<i64>) -> impl Future<Output = AppResult<()>> + Send;
}

/// What a command's write makes stale in the shared cache, dropped once the write is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Changes {
    /// Of the command's installation, for every caller.
    pub installation: &'static [Kind],
    /// Of every installation, for every caller (the command does not say which one it touched,
    /// or a list of installations changed).
    pub everywhere: &'static [Kind],
    /// The caller's own entries only.
    pub own: &'static [Kind],
    /// Kept only briefly from now until the change shows (a command the station applies a moment
    /// after the upstream accepted it), so a re-read sees it soon after, not a TTL later.
    pub unsettles: &'static [Kind],
    /// Who may see the installation changed: live subscriptions check their access again.
    pub access: bool,
}

impl Changes {
    pub(crate) const NONE: Changes =
        Changes { installation: &[], everywhere: &[], own: &[], unsettles: &[], access: false };
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
