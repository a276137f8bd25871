//! Associating and removing stations, and the station commands: charge mode, start, stop,
//! settings. The upstream answers 202 (accepted, not applied); with `wait` the command resolves
//! when the station's state shows the change (an event about the station, or a re-read with
//! backoff), or reports `TimedOut` after the configured bound. A command is never sent twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{Access, Changes, Command, Doubt, Invocation, Kind, Who, Write, run};
use crate::graphql::error::{AppError, AppResult};
use crate::upstream::stations::{self as wire, AssociateStation, UpdateStation};

/// What a station command the upstream did not confirm may have done.
const COMMAND: Doubt = Doubt { what: "the command", done: "delivered", check: "the charging station's state" };
/// What a station command changes: the station's state, logs and measures; kept only briefly
/// until the station shows it.
const COMMANDED: Changes = Changes {
    installation: &[Kind::Stations, Kind::Station, Kind::LogEntries, Kind::LogCounts, Kind::MeasureValues],
    unsettles: &[Kind::Stations, Kind::Station, Kind::LogEntries, Kind::LogCounts],
    ..Changes::NONE
};
const TO_STATION: Who = Who::Owner { what: "send commands to a charging station" };

pub(crate) static SET_CHARGE_MODE: Command =
    Command { name: "setChargeMode", who: TO_STATION, doubt: COMMAND, changes: COMMANDED };
pub(crate) static START_CHARGING: Command =
    Command { name: "startCharging", who: TO_STATION, doubt: COMMAND, changes: COMMANDED };
pub(crate) static STOP_CHARGING: Command =
    Command { name: "stopCharging", who: TO_STATION, doubt: COMMAND, changes: COMMANDED };
pub(crate) static UPDATE_CHARGING_STATION: Command =
    Command { name: "updateChargingStation", who: TO_STATION, doubt: COMMAND, changes: COMMANDED };
pub(crate) static ASSOCIATE_CHARGING_STATION: Command = Command {
    name: "associateChargingStation",
    who: Who::Owner { what: "associate charging stations" },
    doubt: Doubt {
        what: "the association of the charging station",
        done: "made",
        check: "the installation's charging stations",
    },
    changes: Changes {
        installation: &[Kind::Stations, Kind::Meters],
        everywhere: &[Kind::Installations],
        ..Changes::NONE
    },
};
pub(crate) static REMOVE_CHARGING_STATION: Command = Command {
    name: "removeChargingStation",
    who: Who::Owner { what: "remove charging stations" },
    doubt: Doubt {
        what: "the removal of the charging station",
        done: "made",
        check: "the installation's charging stations",
    },
    changes: Changes { installation: Kind::EVERY, everywhere: &[Kind::Installations], access: true, ..Changes::NONE },
};

/// What a command asks of the station.
#[derive(Debug, Clone)]
pub(crate) enum Order {
    ChargeMode(&'static str),
    Start,
    Stop,
    Update(UpdateStation),
}

impl Order {
    /// The command's descriptor.
    pub(crate) fn command(&self) -> &'static Command {
        match self {
            Order::ChargeMode(_) => &SET_CHARGE_MODE,
            Order::Start => &START_CHARGING,
            Order::Stop => &STOP_CHARGING,
            Order::Update(_) => &UPDATE_CHARGING_STATION,
        }
    }

    /// Refuses what the station's current state does not allow, before anything is sent.
    fn precheck(&self, s: &wire::ChargingStation) -> AppResult<()> {
        let unplug_first = |what: &str| {
            AppError::Conflict(format!(
                "a car is plugged into charging station {}: {what} needs every socket free. Unplug the car first",
                s.id
            ))
        };
        match self {
            Order::ChargeMode(_) if s.is_plugged() => Err(unplug_first("changing the charge mode")),
            Order::Update(u) if s.is_plugged() && u.led_power.is_some() => Err(unplug_first("changing ledPower")),
            Order::Update(u) if s.is_plugged() && !u.tariffs.is_empty() => {
                Err(unplug_first("changing tariff1 … tariff10"))
            }
            Order::Start | Order::Stop if !s.is_plugged() => Err(AppError::Conflict(format!(
                "no car is plugged into charging station {}: there is no session to {}",
                s.id,
                if matches!(self, Order::Start) { "start" } else { "stop" }
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the station's state shows the command took effect.
    fn applied(&self, s: &wire::ChargingStation) -> bool {
        let p = &s.properties;
        match self {
            Order::ChargeMode(mode) => p.charge_mode.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mode)),
            Order::Start => s.is_charging(),
            Order::Stop => !s.is_charging(),
            Order::Update(u) => {
                u.friendly_name.as_ref().is_none_or(|n| p.friendly_name.as_ref() == Some(n))
                    && u.led_power.is_none_or(|l| p.led_power.is_some_and(|v| (v - l as f64).abs() < 1e-9))
                    && u.average_ev_consumption.is_none_or(|a| {
                        p.average_ev_consumption.as_ref().and_then(|v| v.as_f64()).is_some_and(|v| (v - a).abs() < 1e-9)
                    })
                    && u.tariffs.iter().all(|(k, v)| {
                        let n: usize = k.trim_start_matches("tariff").parse().unwrap_or(0);
                        p.tariffs().get(n.wrapping_sub(1)).copied().flatten().is_some_and(|t| t.eq_ignore_ascii_case(v))
                    })
            }
        }
    }
}

/// A station's state as the upstream gave it, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StationState {
    pub station: wire::ChargingStation,
    pub fetched_at: DateTime<Utc>,
}

impl StationState {
    fn now(station: wire::ChargingStation) -> StationState {
        StationState { station, fetched_at: Utc::now() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    /// The upstream accepted the command (202); the station has not shown it yet.
    Accepted,
    /// The station's state shows the command took effect.
    Applied,
    /// `wait` gave up before the station showed the change (it may still come).
    TimedOut,
}

/// A command's outcome, with the station's state as last read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Commanded {
    pub status: Status,
    pub state: StationState,
}

/// Sends a command to a station once per idempotency key and, with `wait`, waits until the
/// station shows it.
pub(crate) async fn command(
    access: &impl Access,
    call: Invocation<'_>,
    svc: &super::Services,
    cs: String,
    order: Order,
    wait: bool,
) -> AppResult<Commanded> {
    let i = call.installation()?;
    run(svc, access, order.command(), call, |w| async move {
        let client = svc.cache.client();
        let before = client.charging_station(w.token(), i, &cs).await?;
        order.precheck(&before)?;
        let events = svc.bus.subscribe();
        // Waiting keeps the installation watched, so the station's event arrives (webhook or
        // poller) even when no subscription watches it.
        let _watch = wait.then(|| svc.live.watch(w.caller(), true, i));
        w.send(async {
            match &order {
                Order::ChargeMode(mode) => client.set_charge_mode(w.token(), i, &cs, mode).await,
                Order::Start => client.start_stop(w.token(), i, &cs, true).await,
                Order::Stop => client.start_stop(w.token(), i, &cs, false).await,
                Order::Update(body) => client.update_station(w.token(), i, &cs, body).await,
            }
        })
        .await?;
        let accepted = Commanded { status: Status::Accepted, state: StationState::now(before) };
        if !wait {
            return Ok(accepted);
        }
        // Should the caller go away while waiting, a retry with the key learns it was accepted.
        w.accepted(&accepted);
        Ok(until_applied(&w, i, &cs, &order, events, accepted.state.station).await)
    })
    .await
}

/// Re-reads the station when an event about it arrives, or after a backoff pause, until it
/// shows the order or the wait bound passes.
async fn until_applied(
    w: &Write<'_>,
    i: i64,
    cs: &str,
    order: &Order,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::events::StationEvent>>,
    mut last: wire::ChargingStation,
) -> Commanded {
    let svc = w.services();
    let deadline = tokio::time::Instant::now() + svc.commands.wait_timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let woke = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + pause), async {
            loop {
                match events.recv().await {
                    Ok(e) if e.charging_station_id.as_deref() == Some(cs) => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        if woke.is_err() {
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        if let Ok(s) = svc.cache.client().charging_station(w.token(), i, cs).await {
            last = s;
        }
        if order.applied(&last) {
            w.settled().await;
            return Commanded { status: Status::Applied, state: StationState::now(last) };
        }
        if tokio::time::Instant::now() >= deadline {
            return Commanded { status: Status::TimedOut, state: StationState::now(last) };
        }
    }
}

/// Associates a station with an installation.
pub(crate) async fn associate(
    access: &impl Access,
    call: Invocation<'_>,
    svc: &super::Services,
    body: AssociateStation,
) -> AppResult<StationState> {
    let i = call.installation()?;
    run(svc, access, &ASSOCIATE_CHARGING_STATION, call, |w| async move {
        let station = w.send(svc.cache.client().associate_station(w.token(), i, &body)).await?;
        Ok(StationState::now(station))
    })
    .await
}
