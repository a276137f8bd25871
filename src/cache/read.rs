//! Typed reads: one key type per [`Resource`] variant, each naming the value its fetch produces.
//!
//! The cache stores every answer as a [`Fetched`] (one variant per resource, holding that read's
//! value) under its [`Resource`]. A reader asks with a key of this module (`read::Stations {
//! installation_id }`) and gets the value's own type back (`Arc<Vec<ChargingStation>>`): the key
//! type, the resource it stands for, the [`Fetched`] variant and the value type are written once,
//! in the table below, so no reader names a type the compiler cannot check against the resource.
//! `Resource::fetch` puts each client method's result in its resource's variant, which holds
//! only that value type: fetching a resource with another's method does not compile.

use std::sync::Arc;

use super::Resource;
use crate::upstream::history::{AggregatePoint, Device, LogCount, LogEntry, LogInfo, MeasureInfo, Operator, Range};
use crate::upstream::{installations, meters, notifications, sharing, stations};

/// A key of the cache that knows the type of its value.
pub(crate) trait Read: Into<Resource> {
    /// What the upstream read of this resource produces.
    type Value: Send + Sync + 'static;

    /// The value, when `fetched` is this resource's kind; the cache only ever stores a resource's
    /// own kind under it.
    fn pick(fetched: &Fetched) -> Option<Arc<Self::Value>>;
}

/// Declares each resource's key type and value type: the key struct (with the fields of its
/// [`Resource`] variant), its conversion to that variant, its [`Read`] impl and its [`Fetched`]
/// variant, all from one row.
macro_rules! reads {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* } => $value:ty;)*) => {
        /// What one upstream read produced: one variant per [`Resource`] variant, holding its value.
        #[derive(Clone)]
        pub(crate) enum Fetched {
            $($name(Arc<$value>),)*
        }

        /// The kinds of resource ([`Resource`] without its parameters): what a write says it
        /// makes stale (by name between the replicas of a fleet).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub(crate) enum Kind {
            $($name,)*
        }

        impl Kind {
            /// Every kind: what a change of who sees an installation makes stale.
            pub(crate) const EVERY: &'static [Kind] = &[$(Kind::$name,)*];

            pub(crate) fn of(resource: &Resource) -> Kind {
                match resource {
                    $(Resource::$name { .. } => Kind::$name,)*
                }
            }
        }

        $(
            reads!(@key $(#[$doc])* $name { $($field: $ty),* });

            impl From<$name> for Resource {
                fn from(key: $name) -> Resource {
                    let $name { $($field),* } = key;
                    Resource::$name { $($field),* }
                }
            }

            impl Read for $name {
                type Value = $value;

                fn pick(fetched: &Fetched) -> Option<Arc<$value>> {
                    match fetched {
                        Fetched::$name(value) => Some(value.clone()),
                        _ => None,
                    }
                }
            }
        )*
    };
    (@key $(#[$doc:meta])* $name:ident {}) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) struct $name;
    };
    (@key $(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub(crate) struct $name {
            $(pub(crate) $field: $ty,)+
        }
    };
}

reads! {
    /// The caller's installations.
    Installations {} => Vec<installations::Installation>;
    /// An installation's users (owner, installers).
    Users { installation_id: i64 } => Vec<sharing::User>;
    /// An installation's pending invitations.
    Invitations { installation_id: i64 } => Vec<sharing::Invitation>;
    /// An installation's upstream event subscriptions.
    EventSubscriptions { installation_id: i64 } => Vec<notifications::EventSubscription>;
    /// One upstream event subscription.
    EventSubscription { installation_id: i64, id: String } => notifications::EventSubscription;
    /// An installation's charging stations.
    Stations { installation_id: i64 } => Vec<stations::ChargingStation>;
    /// One charging station.
    Station { installation_id: i64, station_id: String } => stations::ChargingStation;
    /// An installation's grid meters.
    Meters { installation_id: i64 } => Vec<meters::GridMeter>;
    /// One grid meter.
    Meter { installation_id: i64, meter_id: String } => meters::GridMeter;
    /// A grid meter's tariffs.
    Tariffs { installation_id: i64, meter_id: String } => Vec<meters::Tariff>;
    /// One tariff of a grid meter.
    Tariff { installation_id: i64, meter_id: String, tariff: String } => meters::Tariff;
    /// A device's measures.
    Measures { device: Device } => Vec<MeasureInfo>;
    /// One measure of a device.
    Measure { device: Device, measure_id: String } => MeasureInfo;
    /// A measure's values over a range.
    MeasureValues { device: Device, measure_id: String, operator: Operator, range: Range } => Vec<AggregatePoint>;
    /// A device's logs.
    Logs { device: Device } => Vec<LogInfo>;
    /// One log of a device.
    Log { device: Device, log_id: String } => LogInfo;
    /// A log's entry counts over a range.
    LogCounts { device: Device, log_id: String, range: Range } => Vec<LogCount>;
    /// One log's entries (`Some`) or, for a station, all of them (`None`), over a range.
    LogEntries { device: Device, log_id: Option<String>, range: Range } => Vec<LogEntry>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_picks_only_its_own_kind() {
        let stations = Fetched::Stations(Arc::new(Vec::new()));
        assert!(Stations::pick(&stations).is_some());
        assert!(Station::pick(&stations).is_none());
        assert_eq!(Resource::from(Stations { installation_id: 33 }), Resource::Stations { installation_id: 33 });
        assert_eq!(Resource::from(Installations), Resource::Installations);
    }
}
