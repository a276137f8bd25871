//! Associating and removing stations, and the commands: charge mode, start, stop, settings. The
//! upstream answers 202 (accepted, not applied); with `wait: true` the mutation resolves when the
//! station's state shows the change (an event about the station, or a re-read with backoff), or
//! reports `TIMED_OUT` after the configured bound. A command is never sent twice.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::{Held, call, require_held};
use crate::commands::stations::{self as command, Commanded, Order, REMOVE_CHARGING_STATION, StationState, Status};
use crate::commands::{send_checked, text};
use crate::graphql::enums::{ChargeMode, Culture, TariffType, Timezone};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::stations::ChargingStation;
use crate::upstream::stations::{AssociateStation, UpdateStation};

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
pub(crate) struct CommandResult {
    pub status: CommandStatus,
    pub charging_station: Option<ChargingStation>,
}

#[derive(InputObject, Debug)]
pub(super) struct AssociateChargingStationInput {
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
pub(super) struct UpdateChargingStationInput {
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
            body.friendly_name = Some(text("input.friendlyName", name, 64)?);
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

impl AssociateChargingStationInput {
    /// The upstream body, checked field by field.
    fn to_upstream(&self) -> AppResult<AssociateStation> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let (uid, qr_code) = (given(&self.uid), given(&self.qr_code));
        if uid.is_none() && qr_code.is_none() {
            return Err(AppError::bad_input("input.uid or input.qrCode is required (both are on the packaging)"));
        }
        let timezone =
            self.timezone.to_upstream().ok_or_else(|| AppError::bad_input("input.timezone cannot be UNKNOWN"))?;
        let culture =
            self.culture.to_upstream().ok_or_else(|| AppError::bad_input("input.culture cannot be UNKNOWN"))?;
        Ok(AssociateStation { uid, qr_code, timezone: timezone.into(), country: culture.into() })
    }
}

/// `installationId` and `chargingStationId`, checked as every id argument is.
fn station_id(installation_id: &ID, charging_station_id: &ID) -> AppResult<(i64, String)> {
    Ok((installation_arg(installation_id, "installationId")?, resource_id(charging_station_id, "chargingStationId")?))
}

fn view(i: i64, state: StationState) -> ChargingStation {
    ChargingStation::new(i, Arc::new(state.station), state.fetched_at)
}

/// Sends a command once per idempotency key (the fingerprint names the station, order and wait).
async fn command(
    ctx: &Context<'_>,
    installation_id: &ID,
    charging_station_id: &ID,
    order: Order,
    wait: Option<bool>,
    idempotency_key: Option<String>,
) -> AppResult<CommandResult> {
    let (i, cs) = station_id(installation_id, charging_station_id)?;
    let wait = wait.unwrap_or(false);
    let fingerprint = format!("{i} {cs} {order:?} wait={wait}");
    let (access, call, svc) = call(ctx, Some(i), idempotency_key, fingerprint)?;
    let Commanded { status, state } = command::command(&access, call, svc, cs, order, wait).await?;
    let status = match status {
        Status::Accepted => CommandStatus::Accepted,
        Status::Applied => CommandStatus::Applied,
        Status::TimedOut => CommandStatus::TimedOut,
    };
    Ok(CommandResult { status, charging_station: Some(view(i, state)) })
}

#[derive(Default)]
pub(super) struct StationMutation;

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
        let body = input.to_upstream()?;
        let (access, call, svc) = call(ctx, Some(i), idempotency_key, format!("{i} {body:?}"))?;
        Ok(view(i, command::associate(&access, call, svc, body).await?))
    }

    /// Dissociates a station from an installation. Owners only.
    async fn remove_charging_station(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: ID,
    ) -> AppResult<bool> {
        let (i, cs) = station_id(&installation_id, &charging_station_id)?;
        let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {cs}"))?;
        let held = require_held(ctx, i, Held::Station(cs.clone()));
        send_checked(&access, call, svc, &REMOVE_CHARGING_STATION, held, |client, token| async move {
            client.remove_station(token, i, &cs).await
        })
        .await?;
        Ok(true)
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
        let update = Order::Update(input.to_upstream()?);
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
        command(ctx, &installation_id, &charging_station_id, Order::ChargeMode(code), wait, idempotency_key).await
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
        command(ctx, &installation_id, &charging_station_id, Order::Start, wait, idempotency_key).await
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
        command(ctx, &installation_id, &charging_station_id, Order::Stop, wait, idempotency_key).await
    }
}
