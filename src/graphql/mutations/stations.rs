//! Associating and removing stations, and the commands: charge mode, start, stop, settings. The
//! upstream answers 202 (accepted, not applied); with `wait: true` the mutation resolves when the
//! station's state shows the change (an event about the station, or a re-read with backoff), or
//! reports `TIMED_OUT` after the configured bound. A command is never sent twice.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;

use super::{Doubt, Sent, invalidate, services, unsettle};
use crate::cache::Resource;
use crate::graphql::access::require_owner;
use crate::graphql::context::caller;
use crate::graphql::enums::{ChargeMode, Culture, TariffType, Timezone};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::stations::ChargingStation;
use crate::upstream::stations::{self as wire, AssociateStation, UpdateStation};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CommandStatus {
    /// The upstream accepted the command (202); the station has not shown it yet.
    Accepted,
    /// The station's state shows the command took effect.
    Applied,
    /// `wait: true` gave up before the station showed the change (it may still come).
    TimedOut,
}

/// The outcome of a station command, with the station's state as last read.
#[derive(SimpleObject, Clone)]
pub struct CommandResult {
    pub status: CommandStatus,
    pub charging_station: Option<ChargingStation>,
}

#[derive(InputObject, Debug)]
pub struct AssociateChargingStationInput {
    /// The uid on the packaging (or give `qrCode`).
    pub uid: Option<String>,
    /// The QR code's value (`https://hgr.io/u/<uid>`).
    pub qr_code: Option<String>,
    pub timezone: Timezone,
    pub culture: Culture,
}

/// The station settings to change; leave out what stays. `ledPower` and `tariff1` … `tariff10`
/// need every socket free (no car plugged).
#[derive(InputObject, Debug, Default)]
pub struct UpdateChargingStationInput {
    pub friendly_name: Option<String>,
    /// 0 to 100.
    pub led_power: Option<i32>,
    /// kWh per 100 km.
    pub average_ev_consumption: Option<f64>,
    pub tariff1: Option<TariffType>,
    pub tariff2: Option<TariffType>,
    pub tariff3: Option<TariffType>,
    pub tariff4: Option<TariffType>,
    pub tariff5: Option<TariffType>,
    pub tariff6: Option<TariffType>,
    pub tariff7: Option<TariffType>,
    pub tariff8: Option<TariffType>,
    pub tariff9: Option<TariffType>,
    pub tariff10: Option<TariffType>,
}

impl UpdateChargingStationInput {
    fn tariffs(&self) -> [Option<TariffType>; 10] {
        [
            self.tariff1,
            self.tariff2,
            self.tariff3,
            self.tariff4,
            self.tariff5,
            self.tariff6,
            self.tariff7,
            self.tariff8,
            self.tariff9,
            self.tariff10,
        ]
    }

    /// The upstream PUT body, checked field by field.
    fn to_upstream(&self) -> AppResult<UpdateStation> {
        let mut body = UpdateStation::default();
        if let Some(name) = &self.friendly_name {
            body.friendly_name = Some(super::text("input.friendlyName", name, 64)?);
        }
        if let Some(led) = self.led_power {
            if !(0..=100).contains(&led) {
                return Err(AppError::bad_input(format!("input.ledPower must be between 0 and 100, got {led}")));
            }
            body.led_power = Some(i64::from(led));
        }
        if let Some(avg) = self.average_ev_consumption {
            if !(avg.is_finite() && avg > 0.0 && avg <= 100.0) {
                return Err(AppError::bad_input(format!(
                    "input.averageEvConsumption must be more than 0 and at most 100 kWh/100 km, got {avg}"
                )));
            }
            body.average_ev_consumption = Some(avg);
        }
        for (n, t) in self.tariffs().iter().enumerate() {
            if let Some(t) = t {
                let code = t
                    .to_upstream()
                    .ok_or_else(|| AppError::bad_input(format!("input.tariff{} must be HC or HP", n + 1)))?;
                body.tariffs.insert(format!("tariff{}", n + 1), code.to_string());
            }
        }
        if body == UpdateStation::default() {
            return Err(AppError::bad_input(
                "input names nothing to change (friendlyName, ledPower, averageEvConsumption, tariff1 … tariff10)",
            ));
        }
        Ok(body)
    }
}

/// What a command asks of the station.
#[derive(Debug, Clone)]
enum Command {
    ChargeMode(&'static str),
    Start,
    Stop,
    Update(UpdateStation),
}

impl Command {
    fn describe(&self) -> String {
        format!("{self:?}")
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
            Command::ChargeMode(_) if s.is_plugged() => Err(unplug_first("changing the charge mode")),
            Command::Update(u) if s.is_plugged() && u.led_power.is_some() => Err(unplug_first("changing ledPower")),
            Command::Update(u) if s.is_plugged() && !u.tariffs.is_empty() => {
                Err(unplug_first("changing tariff1 … tariff10"))
            }
            Command::Start | Command::Stop if !s.is_plugged() => Err(AppError::Conflict(format!(
                "no car is plugged into charging station {}: there is no session to {}",
                s.id,
                if matches!(self, Command::Start) { "start" } else { "stop" }
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the station's state shows the command took effect.
    fn applied(&self, s: &wire::ChargingStation) -> bool {
        let p = &s.properties;
        match self {
            Command::ChargeMode(mode) => p.charge_mode.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mode)),
            Command::Start => s.is_charging(),
            Command::Stop => !s.is_charging(),
            Command::Update(u) => {
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

/// What a station command the upstream did not confirm may have done.
const COMMAND: Doubt = Doubt { what: "the command", done: "delivered", check: "the charging station's state" };
const ASSOCIATED: Doubt = Doubt {
    what: "the association of the charging station",
    done: "made",
    check: "the installation's charging stations",
};
const REMOVED: Doubt =
    Doubt { what: "the removal of the charging station", done: "made", check: "the installation's charging stations" };

/// `installationId` and `chargingStationId`, checked as every id argument is.
fn station_id(installation_id: &ID, charging_station_id: &ID) -> AppResult<(i64, String)> {
    Ok((installation_arg(installation_id, "installationId")?, resource_id(charging_station_id, "chargingStationId")?))
}

fn station_stale(r: &Resource) -> bool {
    matches!(
        r,
        Resource::Stations { .. }
            | Resource::Station { .. }
            | Resource::LogEntries { .. }
            | Resource::LogCounts { .. }
            | Resource::MeasureValues { .. }
    )
}

/// Sends a command and, with `wait`, waits until the station shows it.
async fn run_command(
    ctx: &Context<'_>,
    i: i64,
    cs: String,
    command: Command,
    wait: bool,
    sent: Sent,
) -> AppResult<CommandResult> {
    require_owner(ctx, i, "send commands to a charging station").await?;
    let svc = services(ctx)?;
    let me = caller(ctx)?;
    let client = svc.cache.client();
    let before = client.charging_station(me.token(), i, &cs).await?;
    command.precheck(&before)?;
    let mut events = svc.bus.subscribe();
    // Waiting keeps the installation watched, so the station's event arrives (webhook or poller)
    // even when no subscription watches it.
    let _watch = wait.then(|| svc.live.watch(me, true, i));
    sent.send(async {
        match &command {
            Command::ChargeMode(mode) => client.set_charge_mode(me.token(), i, &cs, mode).await,
            Command::Start => client.start_stop(me.token(), i, &cs, true).await,
            Command::Stop => client.start_stop(me.token(), i, &cs, false).await,
            Command::Update(body) => client.update_station(me.token(), i, &cs, body).await,
        }
    })
    .await?;
    // Until the station shows the change, its state and logs are kept only briefly: marked before
    // the invalidation, so a read landing between the two is not kept for its usual time.
    let mark = unsettle(ctx, i, |r| {
        matches!(
            r,
            Resource::Stations { .. }
                | Resource::Station { .. }
                | Resource::LogEntries { .. }
                | Resource::LogCounts { .. }
        )
    })?;
    invalidate(ctx, i, station_stale)?;
    let view = |s: wire::ChargingStation| Some(ChargingStation::new(i, Arc::new(s), Utc::now()));
    if !wait {
        return Ok(CommandResult { status: CommandStatus::Accepted, charging_station: view(before) });
    }
    // Should the caller go away while waiting, a retry with the key learns it was accepted.
    sent.accepted(CommandResult { status: CommandStatus::Accepted, charging_station: view(before.clone()) });
    let deadline = tokio::time::Instant::now() + svc.commands.wait_timeout;
    let mut pause = Duration::from_millis(100);
    let mut last = before;
    loop {
        // Re-read when an event about this station arrives, or after the backoff pause.
        let woke = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + pause), async {
            loop {
                match events.recv().await {
                    Ok(e) if e.charging_station_id.as_deref() == Some(cs.as_str()) => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        if woke.is_err() {
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        if let Ok(s) = client.charging_station(me.token(), i, &cs).await {
            last = s;
        }
        if command.applied(&last) {
            invalidate(ctx, i, station_stale)?;
            svc.cache.settle(mark);
            return Ok(CommandResult { status: CommandStatus::Applied, charging_station: view(last) });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(CommandResult { status: CommandStatus::TimedOut, charging_station: view(last) });
        }
    }
}

/// Sends a command once per idempotency key (the fingerprint names the station, command and wait).
async fn command(
    ctx: &Context<'_>,
    installation_id: &ID,
    charging_station_id: &ID,
    command: Command,
    wait: Option<bool>,
    idempotency_key: Option<String>,
) -> AppResult<CommandResult> {
    let (i, cs) = station_id(installation_id, charging_station_id)?;
    let wait = wait.unwrap_or(false);
    let fingerprint = format!("{i} {cs} {} wait={wait}", command.describe());
    services(ctx)?
        .idempotency
        .once(ctx, idempotency_key, fingerprint, COMMAND, |sent| run_command(ctx, i, cs, command, wait, sent))
        .await
}

#[derive(Default)]
pub struct StationMutation;

#[Object]
impl StationMutation {
    /// Associates a station (by uid or QR code) with an installation. Owners only.
    async fn associate_charging_station(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        input: AssociateChargingStationInput,
        idempotency_key: Option<String>,
    ) -> AppResult<ChargingStation> {
        let i = installation_arg(&installation_id, "installationId")?;
        let uid = input.uid.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let qr = input.qr_code.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        if uid.is_none() && qr.is_none() {
            return Err(AppError::bad_input("input.uid or input.qrCode is required (both are on the packaging)"));
        }
        let timezone =
            input.timezone.to_upstream().ok_or_else(|| AppError::bad_input("input.timezone cannot be UNKNOWN"))?;
        let culture =
            input.culture.to_upstream().ok_or_else(|| AppError::bad_input("input.culture cannot be UNKNOWN"))?;
        let body = AssociateStation { uid, qr_code: qr, timezone: timezone.into(), country: culture.into() };
        let fingerprint = format!("{i} {body:?}");
        let key = idempotency_key;
        services(ctx)?
            .idempotency
            .once(ctx, key, fingerprint, ASSOCIATED, |sent| async move {
                require_owner(ctx, i, "associate charging stations").await?;
                let me = caller(ctx)?;
                let station = sent.send(services(ctx)?.cache.client().associate_station(me.token(), i, &body)).await?;
                invalidate(ctx, i, |r| matches!(r, Resource::Stations { .. } | Resource::Meters { .. }))?;
                services(ctx)?.cache.invalidate(|r| matches!(r, Resource::Installations));
                Ok(ChargingStation::new(i, Arc::new(station), Utc::now()))
            })
            .await
    }

    /// Dissociates a station from an installation. Owners only.
    async fn remove_charging_station(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
    ) -> AppResult<bool> {
        let (i, cs) = station_id(&installation_id, &charging_station_id)?;
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, format!("{i} {cs}"), REMOVED, |sent| async move {
                require_owner(ctx, i, "remove charging stations").await?;
                let me = caller(ctx)?;
                sent.send(svc.cache.client().remove_station(me.token(), i, &cs)).await?;
                invalidate(ctx, i, |_| true)?;
                svc.cache.invalidate(|r| matches!(r, Resource::Installations));
                // Subscriptions watching that station end now, not at an event that never comes.
                svc.live.access_changed(i);
                Ok(true)
            })
            .await
    }

    /// Changes settings (name, LED power, average consumption, tariff slots).
    async fn update_charging_station(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
        input: UpdateChargingStationInput,
        #[graphql(default_with = "Some(false)")] wait: Option<bool>,
        idempotency_key: Option<String>,
    ) -> AppResult<CommandResult> {
        let update = Command::Update(input.to_upstream()?);
        command(ctx, &installation_id, &charging_station_id, update, wait, idempotency_key).await
    }

    /// Sets the charge mode (every socket must be free).
    async fn set_charge_mode(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
        mode: ChargeMode,
        #[graphql(default_with = "Some(false)")] wait: Option<bool>,
        idempotency_key: Option<String>,
    ) -> AppResult<CommandResult> {
        let code = mode.to_upstream().ok_or_else(|| {
            AppError::bad_input("mode cannot be UNKNOWN: use IMMEDIATE, DEFERRED or DEFERRED_EXCLUSIVE")
        })?;
        command(ctx, &installation_id, &charging_station_id, Command::ChargeMode(code), wait, idempotency_key).await
    }

    /// Starts charging the plugged car (outside immediate mode it does not start by itself).
    async fn start_charging(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
        #[graphql(default_with = "Some(false)")] wait: Option<bool>,
        idempotency_key: Option<String>,
    ) -> AppResult<CommandResult> {
        command(ctx, &installation_id, &charging_station_id, Command::Start, wait, idempotency_key).await
    }

    /// Stops charging the plugged car.
    async fn stop_charging(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
        #[graphql(default_with = "Some(false)")] wait: Option<bool>,
        idempotency_key: Option<String>,
    ) -> AppResult<CommandResult> {
        command(ctx, &installation_id, &charging_station_id, Command::Stop, wait, idempotency_key).await
    }
}
