//! Every upstream read, as a cache key: what to fetch, with which client method, and for how long
//! the answer may be kept.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::Ttls;
use super::read::Fetched;
use crate::upstream::history::{Device, Operator, Range};
use crate::upstream::{UpstreamClient, UpstreamError};

/// An upstream read route with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Resource {
    Installations,
    Users {
        installation_id: i64,
    },
    Invitations {
        installation_id: i64,
    },
    EventSubscriptions {
        installation_id: i64,
    },
    EventSubscription {
        installation_id: i64,
        id: String,
    },
    Stations {
        installation_id: i64,
    },
    Station {
        installation_id: i64,
        station_id: String,
    },
    Meters {
        installation_id: i64,
    },
    Meter {
        installation_id: i64,
        meter_id: String,
    },
    Tariffs {
        installation_id: i64,
        meter_id: String,
    },
    Tariff {
        installation_id: i64,
        meter_id: String,
        tariff: String,
    },
    Measures {
        device: Device,
    },
    Measure {
        device: Device,
        measure_id: String,
    },
    MeasureValues {
        device: Device,
        measure_id: String,
        operator: Operator,
        range: Range,
    },
    Logs {
        device: Device,
    },
    Log {
        device: Device,
        log_id: String,
    },
    LogCounts {
        device: Device,
        log_id: String,
        range: Range,
    },
    /// One log (`Some`) or, for a station, all of them (`None`).
    LogEntries {
        device: Device,
        log_id: Option<String>,
        range: Range,
    },
}

/// The upstream's answer as the [`Fetched`] `variant` of its resource: a variant holds only its
/// own value type, so a resource fetched with another's client method does not compile.
fn boxed<T>(variant: fn(Arc<T>) -> Fetched, r: Result<T, UpstreamError>) -> Result<Fetched, UpstreamError> {
    r.map(|value| variant(Arc::new(value)))
}

impl Resource {
    /// The installation the resource belongs to (`None` for the caller's list of installations).
    pub(crate) fn installation_id(&self) -> Option<i64> {
        use Resource::*;
        match self {
            Installations => None,
            Users { installation_id }
            | Invitations { installation_id }
            | EventSubscriptions { installation_id }
            | EventSubscription { installation_id, .. }
            | Stations { installation_id }
            | Station { installation_id, .. }
            | Meters { installation_id }
            | Meter { installation_id, .. }
            | Tariffs { installation_id, .. }
            | Tariff { installation_id, .. } => Some(*installation_id),
            Measures { device }
            | Measure { device, .. }
            | MeasureValues { device, .. }
            | Logs { device }
            | Log { device, .. }
            | LogCounts { device, .. }
            | LogEntries { device, .. } => Some(device.installation_id()),
        }
    }

    /// Whether a station event may change it: live state (stations, grid meters) and the
    /// history they record. Those are what [`super::SharedCache::invalidate_live_state`] reaches.
    pub(crate) fn moves_with_events(&self) -> bool {
        use Resource::*;
        matches!(
            self,
            Stations { .. }
                | Station { .. }
                | Meters { .. }
                | Meter { .. }
                | LogEntries { .. }
                | LogCounts { .. }
                | MeasureValues { .. }
        )
    }

    pub(super) fn ttl(&self, ttls: &Ttls, now: DateTime<Utc>) -> std::time::Duration {
        use Resource::*;
        // A range that ended more than a sample period ago no longer changes.
        let history = |range: &Range| {
            if range.end_date < now - Duration::minutes(10) { ttls.closed_history } else { ttls.open_history }
        };
        match self {
            Stations { .. } | Station { .. } | Meters { .. } | Meter { .. } => ttls.state,
            Installations
            | Users { .. }
            | Invitations { .. }
            | EventSubscriptions { .. }
            | EventSubscription { .. }
            | Tariffs { .. }
            | Tariff { .. } => ttls.lists,
            Measures { .. } | Measure { .. } | Logs { .. } | Log { .. } => ttls.metadata,
            MeasureValues { range, .. } | LogCounts { range, .. } | LogEntries { range, .. } => history(range),
        }
    }

    pub(super) async fn fetch(&self, client: &UpstreamClient, bearer: &str) -> Result<Fetched, UpstreamError> {
        use Resource::*;
        match self {
            Installations => boxed(Fetched::Installations, client.installations(bearer).await),
            Users { installation_id } => boxed(Fetched::Users, client.users(bearer, *installation_id).await),
            Invitations { installation_id } => {
                boxed(Fetched::Invitations, client.invitations(bearer, *installation_id).await)
            }
            EventSubscriptions { installation_id } => {
                boxed(Fetched::EventSubscriptions, client.event_subscriptions(bearer, *installation_id).await)
            }
            EventSubscription { installation_id, id } => {
                boxed(Fetched::EventSubscription, client.event_subscription(bearer, *installation_id, id).await)
            }
            Stations { installation_id } => {
                boxed(Fetched::Stations, client.charging_stations(bearer, *installation_id).await)
            }
            Station { installation_id, station_id } => {
                boxed(Fetched::Station, client.charging_station(bearer, *installation_id, station_id).await)
            }
            Meters { installation_id } => boxed(Fetched::Meters, client.grid_meters(bearer, *installation_id).await),
            Meter { installation_id, meter_id } => {
                boxed(Fetched::Meter, client.grid_meter(bearer, *installation_id, meter_id).await)
            }
            Tariffs { installation_id, meter_id } => {
                boxed(Fetched::Tariffs, client.tariffs(bearer, *installation_id, meter_id).await)
            }
            Tariff { installation_id, meter_id, tariff } => {
                boxed(Fetched::Tariff, client.tariff(bearer, *installation_id, meter_id, tariff).await)
            }
            Measures { device } => boxed(Fetched::Measures, client.measures(bearer, device).await),
            Measure { device, measure_id } => boxed(Fetched::Measure, client.measure(bearer, device, measure_id).await),
            MeasureValues { device, measure_id, operator, range } => {
                boxed(Fetched::MeasureValues, client.aggregate(bearer, device, measure_id, *operator, range).await)
            }
            Logs { device } => boxed(Fetched::Logs, client.logs(bearer, device).await),
            Log { device, log_id } => boxed(Fetched::Log, client.log(bearer, device, log_id).await),
            LogCounts { device, log_id, range } => {
                boxed(Fetched::LogCounts, client.log_counts(bearer, device, log_id, range).await)
            }
            LogEntries { device, log_id, range } => {
                boxed(Fetched::LogEntries, client.log_entries(bearer, device, log_id.as_deref(), range).await)
            }
        }
    }
}
