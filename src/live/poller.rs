//! The polling fallback: while an installation is watched and webhooks cannot be used, its
//! stations are read at an interval and the same events are synthesised from state changes.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::Live;
use crate::events::{StationEvent, StationEventKind};
use crate::upstream::stations::ChargingStation;

/// What is compared between two reads (kept in Redis by a fleet's poller, so that the replica
/// taking its lease over compares with it: a change made while the lease moved is not missed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    plugged: bool,
    charging: bool,
    charge_mode: Option<String>,
    error: Option<String>,
    /// The settings a command or another app may change (name, LED power, average consumption,
    /// tariff slots, TIC consent), as one text.
    settings: String,
}

fn snapshot(s: &ChargingStation) -> Snapshot {
    let p = &s.properties;
    Snapshot {
        plugged: s.is_plugged(),
        charging: s.is_charging(),
        charge_mode: p.charge_mode.clone(),
        error: p.error.as_ref().and_then(|e| e.code.as_ref()).map(|c| c.as_text()).filter(|c| c != "0"),
        settings: format!(
            "{:?}",
            (
                &p.friendly_name,
                p.led_power,
                &p.average_ev_consumption,
                [&p.tariff1, &p.tariff2, &p.tariff3, &p.tariff4, &p.tariff5],
                [&p.tariff6, &p.tariff7, &p.tariff8, &p.tariff9, &p.tariff10],
                &p.authorize_tic,
            )
        ),
    }
}

/// The events a change between two reads stands for, each with its type as the upstream names it.
fn changes(before: &Snapshot, after: &Snapshot) -> Vec<(StationEventKind, &'static str)> {
    let mut out = Vec::new();
    if !before.plugged && after.plugged {
        out.push((StationEventKind::CablePlugged, "CablePlugged"));
    }
    if before.charging != after.charging {
        out.push(match after.charging {
            true => (StationEventKind::SessionStarted, "SessionStarted"),
            false => (StationEventKind::SessionEnded, "SessionEnded"),
        });
    }
    if before.plugged && !after.plugged {
        out.push((StationEventKind::CableUnplugged, "CableUnplugged"));
    }
    if before.charge_mode != after.charge_mode {
        out.push((StationEventKind::ChargeModeChanged, "ChargeModeChanged"));
    }
    if before.error != after.error && after.error.is_some() {
        out.push((StationEventKind::Error, "Error"));
    }
    // No type of witty-bff's own (the upstream's SettingsUpdated arrives as UNKNOWN too).
    if before.settings != after.settings {
        out.push((StationEventKind::Unknown, "SettingsUpdated"));
    }
    out
}

pub(super) async fn run(live: Arc<Live>, installation_id: i64) {
    let baseline = format!("polled:{installation_id}");
    let mut known: HashMap<String, Snapshot> = match live.fleet() {
        Some(f) => f.recall(&baseline).await.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default(),
        None => HashMap::new(),
    };
    let mut first = known.is_empty();
    let mut ticks = tokio::time::interval(live.settings.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(caller) = live.registry_caller(installation_id) else { return };
        let stations = match live.cache.client().charging_stations(caller.token(), installation_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(installation = installation_id, error = %e, "poll failed");
                continue;
            }
        };
        let mut found = Vec::new();
        for s in &stations {
            let now = snapshot(s);
            if let Some(before) = known.get(&s.id)
                && !first
            {
                found.extend(changes(before, &now).into_iter().map(|(kind, name)| (s.id.clone(), kind, name)));
            }
            known.insert(s.id.clone(), now);
        }
        first = false;
        // Kept before the events go out: whoever hears them and sees this replica die next has
        // the next holder compare with what they heard.
        if let (Some(f), Ok(text)) = (live.fleet(), serde_json::to_string(&known)) {
            f.keep(&baseline, &text, (live.settings.poll_interval * 10).max(BASELINE_KEPT)).await;
        }
        for (station, kind, name) in found {
            live.publish(StationEvent {
                id: format!("poll-{}", Uuid::new_v4()),
                kind,
                raw_type: format!("witty-bff.polled.{name}"),
                event_time: Utc::now(),
                installation_id,
                data: serde_json::json!({"installationId": installation_id, "chargingStationId": station}),
                charging_station_id: Some(station),
                late: false,
            })
            .await;
        }
    }
}

/// How long a fleet keeps the last poll of an installation for the next lease holder, at least.
const BASELINE_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_become_events() {
        let idle = Snapshot {
            plugged: false,
            charging: false,
            charge_mode: Some("immediate".into()),
            error: None,
            settings: "Garage, 20".into(),
        };
        let charging = Snapshot { plugged: true, charging: true, ..idle.clone() };
        let kinds = |a, b| changes(a, b).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(kinds(&idle, &charging), vec![StationEventKind::CablePlugged, StationEventKind::SessionStarted]);
        assert_eq!(kinds(&charging, &idle), vec![StationEventKind::SessionEnded, StationEventKind::CableUnplugged]);
        let deferred = Snapshot { charge_mode: Some("deferred".into()), ..idle.clone() };
        assert_eq!(kinds(&idle, &deferred), vec![StationEventKind::ChargeModeChanged]);
        let renamed = Snapshot { settings: "Garage nord, 20".into(), ..idle.clone() };
        assert_eq!(changes(&idle, &renamed), vec![(StationEventKind::Unknown, "SettingsUpdated")]);
    }
}
