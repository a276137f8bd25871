//! Station events inside witty-bff: what the webhook (or the polling fallback) learned, published
//! on an [`EventBus`] that subscriptions and waiting commands listen to. The bus is a trait so a
//! Redis or NATS bus can replace the in-process one when witty-bff runs as several replicas.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// What happened, as far as witty-bff knows the upstream's event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StationEventKind {
    CablePlugged,
    CableUnplugged,
    SessionStarted,
    SessionEnded,
    ChargeModeChanged,
    Error,
    LoadShedding,
    /// A type witty-bff does not know; the raw type is kept on the event.
    Unknown,
}

impl StationEventKind {
    /// Reads an upstream event type (`Hager.WittyHome.CablePlugged`, or just `CablePlugged`).
    pub fn from_event_type(raw: &str) -> StationEventKind {
        let name = raw.rsplit('.').next().unwrap_or(raw).to_ascii_lowercase();
        match name.as_str() {
            "cableplugged" => StationEventKind::CablePlugged,
            "cableunplugged" => StationEventKind::CableUnplugged,
            "sessionstarted" | "chargingstarted" => StationEventKind::SessionStarted,
            "sessionended" | "chargingstopped" | "chargingended" => StationEventKind::SessionEnded,
            "chargemodechanged" => StationEventKind::ChargeModeChanged,
            "error" | "stationerror" => StationEventKind::Error,
            "loadshedding" => StationEventKind::LoadShedding,
            _ => StationEventKind::Unknown,
        }
    }
}

/// One event about a station (or an installation); as JSON between the replicas of a fleet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StationEvent {
    /// The upstream's event id (deliveries are deduplicated by it).
    pub id: String,
    pub kind: StationEventKind,
    pub raw_type: String,
    pub event_time: DateTime<Utc>,
    pub installation_id: i64,
    pub charging_station_id: Option<String>,
    pub data: serde_json::Value,
    /// An event of the same station (or installation) with a later `event_time` was published
    /// before this one (deliveries can come out of order, retries late).
    pub late: bool,
}

/// Where events are published and heard.
pub(crate) trait EventBus: Send + Sync + 'static {
    fn publish(&self, event: StationEvent);
    /// Every event published from now on. A receiver that falls behind by more than the bus's
    /// capacity skips ahead (it gets `RecvError::Lagged`).
    fn subscribe(&self) -> broadcast::Receiver<Arc<StationEvent>>;
    /// How many published events some listener has yet to take, and how many the bus holds.
    fn backlog(&self) -> (usize, usize);
}

/// The in-process bus: a tokio broadcast channel.
pub(crate) struct LocalBus {
    tx: broadcast::Sender<Arc<StationEvent>>,
    capacity: usize,
}

impl LocalBus {
    pub(crate) fn new(capacity: usize) -> LocalBus {
        let capacity = capacity.max(16);
        LocalBus { tx: broadcast::channel(capacity).0, capacity }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: StationEvent) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(event));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<StationEvent>> {
        self.tx.subscribe()
    }

    fn backlog(&self) -> (usize, usize) {
        (self.tx.len(), self.capacity)
    }
}

pub(crate) type SharedBus = Arc<dyn EventBus>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_open() {
        assert_eq!(StationEventKind::from_event_type("Hager.WittyHome.CablePlugged"), StationEventKind::CablePlugged);
        assert_eq!(StationEventKind::from_event_type("LoadShedding"), StationEventKind::LoadShedding);
        assert_eq!(StationEventKind::from_event_type("Hager.WittyHome.SettingsUpdated"), StationEventKind::Unknown);
    }
}
