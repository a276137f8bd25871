//! The `ChargingStation` type: every property of the upstream model as a typed field, its sessions,
//! heartbeat and error, and its measures and logs.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::access::require_costs;
use super::enums::*;
use super::error::AppResult;
use super::history::{
    LOGS_PER_STATION, Log, LogEntry, MEASURES_PER_DEVICE, Measure, UPSTREAM_READ, logs_of, measures_of,
};
use super::sessions::{self, ChargingSession, Join};
use crate::upstream::history::Device;
use crate::upstream::quirks::{duration_seconds, parse_time};
use crate::upstream::stations::{self as wire, StationProperties};

#[derive(Clone)]
pub(crate) struct ChargingStation {
    installation_id: i64,
    data: Arc<wire::ChargingStation>,
    fetched_at: DateTime<Utc>,
}

impl ChargingStation {
    pub(crate) fn new(installation_id: i64, data: Arc<wire::ChargingStation>, fetched_at: DateTime<Utc>) -> Self {
        ChargingStation { installation_id, data, fetched_at }
    }

    fn p(&self) -> &StationProperties {
        &self.data.properties
    }

    fn device(&self) -> Device {
        Device::Station { installation_id: self.installation_id, station_id: self.data.id.clone() }
    }
}

fn open<T>(raw: &Option<String>, parse: fn(&str) -> T) -> Option<T> {
    raw.as_deref().map(parse)
}

#[Object]
impl ChargingStation {
    async fn id(&self) -> ID {
        ID(self.data.id.clone())
    }
    async fn serial_number(&self) -> Option<&str> {
        self.data.serial_number.as_deref()
    }
    /// The device uid (as on the packaging and in the QR code).
    async fn uuid(&self) -> Option<&str> {
        self.data.uuid.as_deref()
    }
    async fn installation_parent_id(&self) -> ID {
        ID(self.data.installation_parent_id.unwrap_or(self.installation_id).to_string())
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> Option<&str> {
        self.data.kind.as_deref()
    }
    /// When witty-bff got this state from the Witty-Home service.
    async fn fetched_at(&self) -> DateTime<Utc> {
        self.fetched_at
    }
    async fn installation_date(&self) -> Option<DateTime<Utc>> {
        parse_time(self.p().installation_date.as_deref())
    }
    async fn production_date(&self) -> Option<DateTime<Utc>> {
        parse_time(self.p().production_date.as_deref())
    }
    async fn product_reference(&self) -> Option<&str> {
        self.p().product_reference.as_deref()
    }
    async fn mac_address(&self) -> Option<&str> {
        self.p().mac_address.as_deref()
    }
    async fn wifi_ssid(&self) -> Option<&str> {
        self.p().wifi_ssid.as_deref()
    }
    async fn friendly_name(&self) -> Option<&str> {
        self.p().friendly_name.as_deref()
    }
    async fn phase_number(&self) -> Option<PhaseNumber> {
        open(&self.p().phase_number, PhaseNumber::from_upstream)
    }
    async fn phase_number_raw(&self) -> Option<&str> {
        self.p().phase_number.as_deref()
    }
    async fn erl_connected(&self) -> Option<bool> {
        self.p().erl_connected
    }
    async fn tic_connected(&self) -> Option<&str> {
        self.p().tic_connected.as_deref()
    }
    async fn night_mode_connected(&self) -> Option<&str> {
        self.p().night_mode_connected.as_deref()
    }
    async fn shedding_mode(&self) -> Option<&str> {
        self.p().shedding_mode.as_deref()
    }
    /// kWh per 100 km (the upstream sends it as a string).
    async fn average_ev_consumption(&self) -> Option<f64> {
        self.p().average_ev_consumption.as_ref().and_then(|v| v.as_f64())
    }
    async fn is_default_average_ev_consumption(&self) -> Option<bool> {
        self.p().is_default_average_ev_consumption
    }
    async fn tariff1(&self) -> Option<TariffType> {
        self.p().tariff1.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff1_raw(&self) -> Option<&str> {
        self.p().tariff1.as_deref()
    }
    async fn tariff2(&self) -> Option<TariffType> {
        self.p().tariff2.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff2_raw(&self) -> Option<&str> {
        self.p().tariff2.as_deref()
    }
    async fn tariff3(&self) -> Option<TariffType> {
        self.p().tariff3.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff3_raw(&self) -> Option<&str> {
        self.p().tariff3.as_deref()
    }
    async fn tariff4(&self) -> Option<TariffType> {
        self.p().tariff4.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff4_raw(&self) -> Option<&str> {
        self.p().tariff4.as_deref()
    }
    async fn tariff5(&self) -> Option<TariffType> {
        self.p().tariff5.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff5_raw(&self) -> Option<&str> {
        self.p().tariff5.as_deref()
    }
    async fn tariff6(&self) -> Option<TariffType> {
        self.p().tariff6.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff6_raw(&self) -> Option<&str> {
        self.p().tariff6.as_deref()
    }
    async fn tariff7(&self) -> Option<TariffType> {
        self.p().tariff7.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff7_raw(&self) -> Option<&str> {
        self.p().tariff7.as_deref()
    }
    async fn tariff8(&self) -> Option<TariffType> {
        self.p().tariff8.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff8_raw(&self) -> Option<&str> {
        self.p().tariff8.as_deref()
    }
    async fn tariff9(&self) -> Option<TariffType> {
        self.p().tariff9.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff9_raw(&self) -> Option<&str> {
        self.p().tariff9.as_deref()
    }
    async fn tariff10(&self) -> Option<TariffType> {
        self.p().tariff10.as_deref().map(TariffType::from_upstream)
    }
    async fn tariff10_raw(&self) -> Option<&str> {
        self.p().tariff10.as_deref()
    }
    async fn authorize_tic(&self) -> Option<TicConsent> {
        open(&self.p().authorize_tic, TicConsent::from_upstream)
    }
    async fn authorize_tic_raw(&self) -> Option<&str> {
        self.p().authorize_tic.as_deref()
    }
    async fn availability(&self) -> Option<Availability> {
        open(&self.p().availability, Availability::from_upstream)
    }
    async fn availability_raw(&self) -> Option<&str> {
        self.p().availability.as_deref()
    }
    async fn charge_mode(&self) -> Option<ChargeMode> {
        open(&self.p().charge_mode, ChargeMode::from_upstream)
    }
    async fn charge_mode_raw(&self) -> Option<&str> {
        self.p().charge_mode.as_deref()
    }
    async fn car_plug_status(&self) -> Option<CarPlugStatus> {
        open(&self.p().car_plug_status, CarPlugStatus::from_upstream)
    }
    /// The socket a car is plugged into (`m3`), or `unplugged`, as sent upstream.
    async fn car_plug_status_raw(&self) -> Option<&str> {
        self.p().car_plug_status.as_deref()
    }
    async fn key_switch(&self) -> Option<KeySwitch> {
        open(&self.p().key_switch, KeySwitch::from_upstream)
    }
    async fn key_switch_raw(&self) -> Option<&str> {
        self.p().key_switch.as_deref()
    }
    async fn timezone(&self) -> Option<Timezone> {
        open(&self.p().timezone, Timezone::from_upstream)
    }
    async fn timezone_raw(&self) -> Option<&str> {
        self.p().timezone.as_deref()
    }
    async fn culture(&self) -> Option<Culture> {
        open(&self.p().culture, Culture::from_upstream)
    }
    async fn culture_raw(&self) -> Option<&str> {
        self.p().culture.as_deref()
    }
    async fn connectivity_type(&self) -> Option<ConnectivityType> {
        open(&self.p().connectivity_type, ConnectivityType::from_upstream)
    }
    async fn connectivity_type_raw(&self) -> Option<&str> {
        self.p().connectivity_type.as_deref()
    }
    async fn evcs_locked(&self) -> Option<bool> {
        self.p().evcs_locked
    }
    async fn led_power(&self) -> Option<i32> {
        self.p().led_power.map(|v| v as i32)
    }
    async fn error(&self) -> Option<StationError> {
        self.p().error.as_ref().map(|e| StationError { code: e.code.as_ref().map(|c| c.as_text()) })
    }
    async fn current_session(&self) -> Option<CurrentSession> {
        self.p().current_session.as_ref().map(|s| CurrentSession {
            installation_id: self.installation_id,
            start_date: parse_time(s.start_date.as_deref()),
            duration: s.duration.clone(),
            duration_seconds: duration_seconds(s.duration.as_deref()),
            total_session_energy: s.total_session_energy,
            total_session_cost: s.total_session_cost,
            charging_speed: s.charging_speed.clone(),
            charging_duration: s.charging_duration.clone(),
            charging_duration_seconds: duration_seconds(s.charging_duration.as_deref()),
            range_recovered_by_ev: s.range_recovered_by_ev,
        })
    }
    /// The last finished session; `null` when the station never had one.
    async fn last_session(&self) -> Option<LastSession> {
        let s = self.p().last_session.as_ref()?;
        let start_date = parse_time(s.start_date.as_deref());
        start_date?;
        Some(LastSession {
            installation_id: self.installation_id,
            start_date,
            end_date: parse_time(s.end_date.as_deref()),
            session_duration: s.session_duration.clone(),
            session_duration_seconds: duration_seconds(s.session_duration.as_deref()),
            charging_duration: s.charging_duration.clone(),
            charging_duration_seconds: duration_seconds(s.charging_duration.as_deref()),
            total_session_energy: s.total_session_energy,
            total_session_cost: s.total_session_cost,
            range_recovered_by_ev: s.range_recovered_by_ev,
        })
    }
    async fn heartbeat(&self) -> Option<Heartbeat> {
        self.p()
            .heartbeat
            .as_ref()
            .map(|h| Heartbeat { heartbeat: h.heartbeat, reception_date: parse_time(h.reception_date.as_deref()) })
    }

    #[graphql(complexity = "UPSTREAM_READ + MEASURES_PER_DEVICE * child_complexity")]
    async fn measures(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Measure>>> {
        measures_of(ctx, self.device(), None).await
    }
    /// One measure by id (`1` is the energy). Its metadata is read only when asked for.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn measure(&self, id: ID) -> AppResult<Option<Measure>> {
        Ok(Some(Measure::by_id(self.device(), super::history::resource_id(&id, "id")?)))
    }
    #[graphql(complexity = "UPSTREAM_READ + LOGS_PER_STATION * child_complexity")]
    async fn logs(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Log>>> {
        logs_of(ctx, self.device()).await
    }
    /// One log by id. Its metadata is read only when asked for.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn log(&self, id: ID) -> AppResult<Option<Log>> {
        Ok(Some(Log::by_id(self.device(), super::history::resource_id(&id, "id")?)))
    }
    /// Every log's entries between `from` and `to`, whatever their log.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn log_entries(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Option<Vec<LogEntry>>> {
        let range = super::history::range(from, to, None)?;
        Ok(Some(super::history::entries(ctx, self.device(), None, range).await?))
    }
    /// The sessions that started between `from` and `to`, joined from the station's SessionStart
    /// and SessionEnd logs (one listing per range, reaching 48 hours past `to` for the ends) and,
    /// for `byTariff`, its measures. Ranges as for a measure's `values`. Installers get no energy
    /// or cost. See docs/sessions.md.
    #[graphql(complexity = "3 * UPSTREAM_READ + child_complexity")]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Option<Vec<ChargingSession>>> {
        // Checked before any read, so a bad range is refused whoever asks.
        super::history::range(from, to, None)?;
        let (owner, currency) = futures::join!(
            sessions::is_owner(ctx, self.installation_id),
            sessions::currency(ctx, self.installation_id)
        );
        let join = Join {
            device: self.device(),
            current: self.p().current_session.as_ref(),
            owner: owner?,
            currency: currency?,
            by_tariff: ctx.look_ahead().field("byTariff").exists(),
        };
        Ok(Some(sessions::sessions(ctx, &join, from, to).await?))
    }
}

/// The station's error state; `code` is `0` when there is none.
#[derive(SimpleObject)]
pub(crate) struct StationError {
    pub code: Option<String>,
}

/// The session in progress while a car is plugged. Energy, cost and range are the owner's only.
#[derive(SimpleObject)]
#[graphql(complex)]
pub(crate) struct CurrentSession {
    #[graphql(skip)]
    installation_id: i64,
    pub start_date: Option<DateTime<Utc>>,
    /// "hh:mm", as the upstream writes it.
    pub duration: Option<String>,
    pub duration_seconds: Option<i64>,
    #[graphql(skip)]
    pub total_session_energy: Option<f64>,
    #[graphql(skip)]
    pub total_session_cost: Option<f64>,
    pub charging_speed: Option<String>,
    pub charging_duration: Option<String>,
    pub charging_duration_seconds: Option<i64>,
    #[graphql(skip)]
    pub range_recovered_by_ev: Option<f64>,
}

/// The last finished session. Energy, cost and range are the owner's only.
#[derive(SimpleObject)]
#[graphql(complex)]
pub(crate) struct LastSession {
    #[graphql(skip)]
    installation_id: i64,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub session_duration: Option<String>,
    pub session_duration_seconds: Option<i64>,
    pub charging_duration: Option<String>,
    pub charging_duration_seconds: Option<i64>,
    #[graphql(skip)]
    pub total_session_energy: Option<f64>,
    #[graphql(skip)]
    pub total_session_cost: Option<f64>,
    #[graphql(skip)]
    pub range_recovered_by_ev: Option<f64>,
}

#[ComplexObject]
impl CurrentSession {
    /// kWh charged so far.
    async fn total_session_energy(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.total_session_energy)
    }
    async fn total_session_cost(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.total_session_cost)
    }
    /// km of range recovered.
    #[graphql(name = "rangeRecoveredByEV")]
    async fn range_recovered_by_ev(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.range_recovered_by_ev)
    }
}

#[ComplexObject]
impl LastSession {
    /// kWh charged.
    async fn total_session_energy(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.total_session_energy)
    }
    async fn total_session_cost(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.total_session_cost)
    }
    /// km of range recovered.
    #[graphql(name = "rangeRecoveredByEV")]
    async fn range_recovered_by_ev(&self, ctx: &Context<'_>) -> AppResult<Option<f64>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.range_recovered_by_ev)
    }
}

#[derive(SimpleObject)]
pub(crate) struct Heartbeat {
    pub heartbeat: Option<bool>,
    pub reception_date: Option<DateTime<Utc>>,
}
