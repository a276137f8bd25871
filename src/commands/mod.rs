//! The write path: every mutation is described once, as a [`Command`] (who may run it, what a
//! failure after sending leaves in doubt, which cached resources it changes), and runs through
//! [`run`]: idempotency claim, role check, one upstream write (never retried), invalidation of
//! what it changed, and the outcome recorded for its key.
//!
//! Nothing here reads a GraphQL request: the resolvers in `graphql::mutations` check and translate
//! their arguments, hand over the caller, the idempotency key and an [`Access`] check, and turn
//! the answer back into GraphQL objects. Errors are the app's one [`AppError`]: a command's
//! refusals are the client's error codes, so a second error type would only be mapped one to one.

mod input;
pub mod installations;
pub mod meters;
pub mod notifications;
mod run;
pub mod sharing;
pub mod stations;
pub mod tariffs;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use input::text;
pub use run::{Invocation, Key, KeySource, Write, run, send};

use crate::cache::{Resource, SharedCache};
use crate::events::SharedBus;
use crate::graphql::error::{AppError, AppResult};
use crate::idempotency::IdempotencyStore;

/// How commands behave.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// How long `wait: true` waits for the station to show the change.
    pub wait_timeout: Duration,
}

/// What commands need besides the request's caller.
pub struct Services {
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub commands: CommandSettings,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub live: Arc<crate::live::Live>,
}

/// A mutation, described once.
#[derive(Debug)]
pub struct Command {
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
pub enum Who {
    /// The installation's owner; installers are told they cannot `what`.
    Owner { what: &'static str },
    /// Anyone who sees the installation (its owner or an enabled installer).
    Member,
    /// Any authenticated caller (what they may do is the upstream's to say).
    Anyone,
}

/// Asks the request whether its caller may run a command. Implemented over the request's loaders
/// (`graphql::access`), so the check reads what the request reads.
pub trait Access: Sync {
    fn allow(&self, who: Who, installation_id: Option<i64>) -> impl Future<Output = AppResult<()>> + Send;
}

/// The kinds of cached resource ([`Resource`] without its parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Installations,
    Users,
    Invitations,
    EventSubscriptions,
    EventSubscription,
    Stations,
    Station,
    Meters,
    Meter,
    Tariffs,
    Tariff,
    Measures,
    Measure,
    MeasureValues,
    Logs,
    Log,
    LogCounts,
    LogEntries,
}

impl Kind {
    /// Every kind: what a change of who sees an installation makes stale.
    pub const EVERY: &'static [Kind] = &[
        Kind::Installations,
        Kind::Users,
        Kind::Invitations,
        Kind::EventSubscriptions,
        Kind::EventSubscription,
        Kind::Stations,
        Kind::Station,
        Kind::Meters,
        Kind::Meter,
        Kind::Tariffs,
        Kind::Tariff,
        Kind::Measures,
        Kind::Measure,
        Kind::MeasureValues,
        Kind::Logs,
        Kind::Log,
        Kind::LogCounts,
        Kind::LogEntries,
    ];

    pub fn of(r: &Resource) -> Kind {
        match r {
            Resource::Installations => Kind::Installations,
            Resource::Users { .. } => Kind::Users,
            Resource::Invitations { .. } => Kind::Invitations,
            Resource::EventSubscriptions { .. } => Kind::EventSubscriptions,
            Resource::EventSubscription { .. } => Kind::EventSubscription,
            Resource::Stations { .. } => Kind::Stations,
            Resource::Station { .. } => Kind::Station,
            Resource::Meters { .. } => Kind::Meters,
            Resource::Meter { .. } => Kind::Meter,
            Resource::Tariffs { .. } => Kind::Tariffs,
            Resource::Tariff { .. } => Kind::Tariff,
            Resource::Measures { .. } => Kind::Measures,
            Resource::Measure { .. } => Kind::Measure,
            Resource::MeasureValues { .. } => Kind::MeasureValues,
            Resource::Logs { .. } => Kind::Logs,
            Resource::Log { .. } => Kind::Log,
            Resource::LogCounts { .. } => Kind::LogCounts,
            Resource::LogEntries { .. } => Kind::LogEntries,
        }
    }
}

/// What a command's write makes stale in the shared cache, dropped once the write is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Changes {
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
    pub const NONE: Changes = Changes { installation: &[], everywhere: &[], own: &[], unsettles: &[], access: false };
}

/// What a mutation tells the user when the upstream did not confirm its write: what was asked,
/// and where to look to learn whether it happened.
#[derive(Debug, Clone, Copy)]
pub struct Doubt {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::history::{Device, Operator, Range};

    #[test]
    fn every_kind_of_resource_is_listed() {
        let (i, device) = (1, Device::Station { installation_id: 1, station_id: "s".into() });
        let range = Range { start_date: chrono::Utc::now(), end_date: chrono::Utc::now(), step: None };
        let resources = [
            Resource::Installations,
            Resource::Users { installation_id: i },
            Resource::Invitations { installation_id: i },
            Resource::EventSubscriptions { installation_id: i },
            Resource::EventSubscription { installation_id: i, id: "e".into() },
            Resource::Stations { installation_id: i },
            Resource::Station { installation_id: i, station_id: "s".into() },
            Resource::Meters { installation_id: i },
            Resource::Meter { installation_id: i, meter_id: "m".into() },
            Resource::Tariffs { installation_id: i, meter_id: "m".into() },
            Resource::Tariff { installation_id: i, meter_id: "m".into(), tariff: "th".into() },
            Resource::Measures { device: device.clone() },
            Resource::Measure { device: device.clone(), measure_id: "x".into() },
            Resource::MeasureValues {
                device: device.clone(),
                measure_id: "x".into(),
                operator: Operator::Sum,
                range: range.clone(),
            },
            Resource::Logs { device: device.clone() },
            Resource::Log { device: device.clone(), log_id: "l".into() },
            Resource::LogCounts { device: device.clone(), log_id: "l".into(), range: range.clone() },
            Resource::LogEntries { device, log_id: None, range },
        ];
        let kinds: Vec<Kind> = resources.iter().map(Kind::of).collect();
        assert_eq!(kinds, Kind::EVERY);
    }
}
