//! The `GridMeter` type, its consumptions, measures, logs and tariffs.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::access::require_costs;
use super::context::load;
use super::enums::{GridSubscription, TariffId, TicConsent, TicType, tic_type_of};
use super::error::AppResult;
use super::history::{LOGS_PER_METER, Log, MEASURES_PER_DEVICE, Measure, UPSTREAM_READ, logs_of, measures_of};
use crate::cache::read;
use crate::upstream::history::Device;
use crate::upstream::meters as wire;
use crate::upstream::quirks::parse_time;

#[derive(Clone)]
pub(crate) struct GridMeter {
    installation_id: i64,
    data: Arc<wire::GridMeter>,
    fetched_at: DateTime<Utc>,
}

impl GridMeter {
    pub(crate) fn new(installation_id: i64, data: Arc<wire::GridMeter>, fetched_at: DateTime<Utc>) -> Self {
        GridMeter { installation_id, data, fetched_at }
    }

    fn device(&self) -> Device {
        Device::Meter { installation_id: self.installation_id, meter_id: self.data.id.clone() }
    }

    /// Without TIC consent (as this read of the meter says) the upstream refuses the house's
    /// measure values: so does witty-bff, whatever it cached while consent was given.
    fn values_withheld(&self) -> Option<Arc<str>> {
        let consent = self.data.properties.authorize_tic.as_deref().map(TicConsent::from_upstream);
        matches!(consent, Some(TicConsent::NoConsent)).then(|| {
            format!(
                "TIC data transmission is not authorized for grid meter {} (authorizeTic is NO_CONSENT): the owner \
                 gives consent with authorizeTic first",
                self.data.id
            )
            .into()
        })
    }
}

#[Object]
impl GridMeter {
    async fn id(&self) -> ID {
        ID(self.data.id.clone())
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
    /// The house's consumption index per tariff (with TIC consent; the owner's only).
    async fn general_consumption(&self, ctx: &Context<'_>) -> AppResult<Option<GeneralConsumption>> {
        require_costs(ctx, self.installation_id).await?;
        Ok(self.data.properties.general_consumption.as_ref().map(|g| GeneralConsumption {
            consumption_total_index: g.consumption_total_index,
            consumptions: g
                .consumptions
                .iter()
                .map(|c| Consumption { tariff: TariffId::from_upstream(&c.name), name: c.name.clone(), value: c.value })
                .collect(),
        }))
    }
    async fn tic_type(&self) -> Option<TicType> {
        self.data.properties.tic_type_text().map(|t| tic_type_of(&t))
    }
    /// As sent: a number in the model, a name in logs.
    async fn tic_type_raw(&self) -> Option<String> {
        self.data.properties.tic_type_text()
    }
    /// Amperes.
    async fn intensity_subscribed(&self) -> Option<f64> {
        self.data.properties.intensity_subscribed
    }
    async fn current_tariff(&self) -> Option<TariffId> {
        self.data.properties.current_tariff.as_deref().map(TariffId::from_upstream)
    }
    async fn current_tariff_raw(&self) -> Option<&str> {
        self.data.properties.current_tariff.as_deref()
    }
    async fn grid_subscription(&self) -> Option<GridSubscription> {
        self.data.properties.grid_subscription.as_deref().map(GridSubscription::from_upstream)
    }
    async fn grid_subscription_raw(&self) -> Option<&str> {
        self.data.properties.grid_subscription.as_deref()
    }
    async fn authorize_tic(&self) -> Option<TicConsent> {
        self.data.properties.authorize_tic.as_deref().map(TicConsent::from_upstream)
    }
    async fn authorize_tic_raw(&self) -> Option<&str> {
        self.data.properties.authorize_tic.as_deref()
    }

    #[graphql(complexity = "UPSTREAM_READ + MEASURES_PER_DEVICE * child_complexity")]
    async fn measures(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Measure>>> {
        measures_of(ctx, self.device(), self.values_withheld()).await
    }
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn measure(&self, id: ID) -> AppResult<Option<Measure>> {
        Ok(Some(
            Measure::by_id(self.device(), super::history::resource_id(&id, "id")?).withheld(self.values_withheld()),
        ))
    }
    #[graphql(complexity = "UPSTREAM_READ + LOGS_PER_METER * child_complexity")]
    async fn logs(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Log>>> {
        logs_of(ctx, self.device()).await
    }
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn log(&self, id: ID) -> AppResult<Option<Log>> {
        Ok(Some(Log::by_id(self.device(), super::history::resource_id(&id, "id")?)))
    }
    /// Every tariff of the subscription with its price history (the owner's only).
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn tariffs(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Tariff>>> {
        require_costs(ctx, self.installation_id).await?;
        let r = read::Tariffs { installation_id: self.installation_id, meter_id: self.data.id.clone() };
        let (list, _) = load(ctx, r).await?;
        Ok(Some(list.iter().cloned().map(Tariff::from).collect()))
    }
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn tariff(&self, ctx: &Context<'_>, id: TariffId) -> AppResult<Option<Tariff>> {
        require_costs(ctx, self.installation_id).await?;
        let code = id.to_upstream().ok_or_else(|| super::error::AppError::bad_input("UNKNOWN is not a tariff id"))?;
        let r = read::Tariff {
            installation_id: self.installation_id,
            meter_id: self.data.id.clone(),
            tariff: code.to_string(),
        };
        let (t, _) = load(ctx, r).await?;
        Ok(Some(Tariff::from((*t).clone())))
    }
}

#[derive(SimpleObject)]
pub(crate) struct GeneralConsumption {
    /// kWh since installation.
    pub consumption_total_index: Option<f64>,
    pub consumptions: Vec<Consumption>,
}

#[derive(SimpleObject)]
pub(crate) struct Consumption {
    pub tariff: TariffId,
    /// As sent (`HC`).
    pub name: String,
    pub value: f64,
}

/// A tariff and its price history.
#[derive(Clone)]
pub(crate) struct Tariff {
    data: wire::Tariff,
}

impl From<wire::Tariff> for Tariff {
    fn from(data: wire::Tariff) -> Self {
        Tariff { data }
    }
}

#[derive(SimpleObject)]
pub(crate) struct TariffPrice {
    pub begin_date: Option<DateTime<Utc>>,
    /// Price per kWh.
    pub value: f64,
}

#[Object]
impl Tariff {
    async fn id(&self) -> TariffId {
        TariffId::from_upstream(&self.data.id)
    }
    async fn id_raw(&self) -> &str {
        &self.data.id
    }
    async fn friendly_name(&self) -> Option<&str> {
        self.data.friendly_name.as_deref()
    }
    async fn currency(&self) -> Option<&str> {
        self.data.currency.as_deref()
    }
    /// `true` while the user has not set prices of their own.
    async fn is_default(&self) -> Option<bool> {
        self.data.is_default
    }
    /// Price history, newest first.
    async fn values(&self) -> Vec<TariffPrice> {
        let mut v: Vec<TariffPrice> = self
            .data
            .values
            .iter()
            .map(|p| TariffPrice { begin_date: parse_time(Some(&p.begin_date)), value: p.value })
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.begin_date));
        v
    }
    /// The price in force now: the latest that has begun.
    async fn current_price(&self, ctx: &Context<'_>) -> Option<f64> {
        let now = Utc::now();
        let prices = self.data.values.iter().filter_map(|p| Some((parse_time(Some(&p.begin_date))?, p.value)));
        // The next price to begin ends this one.
        if let Some(next) = prices.clone().map(|(begin, _)| begin).filter(|begin| *begin > now).min() {
            super::context::valid_until(ctx, next);
        }
        prices.filter(|(begin, _)| *begin <= now).max_by_key(|(begin, _)| *begin).map(|(_, v)| v)
    }
}
