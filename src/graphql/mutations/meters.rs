//! TIC consent and tariff prices.

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{Held, call, require_held};
use crate::commands::meters as command;
use crate::commands::tariffs::{self, Given, Price};
use crate::graphql::enums::TariffId;
use crate::graphql::error::AppResult;
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::meters::{GridMeter, Tariff};

/// A price to set. Leave out the tariffs that keep their price: witty-bff sends them unchanged.
#[derive(InputObject, Debug, Clone)]
pub(crate) struct TariffPriceInput {
    pub id: TariffId,
    /// Price per kWh in the tariff's currency, from 0 to 1000.
    pub value: f64,
    /// 3-letter code (default: the tariff's current currency).
    pub currency: Option<String>,
    /// When the price starts (default: now): from 2000-01-01 to 366 days from now.
    pub begin_date: Option<DateTime<Utc>>,
    /// A new name for the tariff, 1 to 64 characters (default: its current name).
    pub friendly_name: Option<String>,
}

impl From<TariffPriceInput> for Given {
    fn from(t: TariffPriceInput) -> Given {
        let TariffPriceInput { id, value, currency, begin_date, friendly_name } = t;
        Given { id, price: Price { value, currency, begin_date, friendly_name } }
    }
}

/// `installationId` and `gridMeterId`, checked as every id argument is.
fn meter_id(installation_id: &ID, grid_meter_id: &ID) -> AppResult<(i64, String)> {
    Ok((installation_arg(installation_id, "installationId")?, resource_id(grid_meter_id, "gridMeterId")?))
}

#[derive(Default)]
pub(super) struct MeterMutation;

#[Object]
impl MeterMutation {
    /// Gives (`true`) or withdraws (`false`) consent to send the house's TIC data to Hager.
    async fn authorize_tic(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        grid_meter_id: ID,
        authorize: bool,
    ) -> AppResult<GridMeter> {
        let (i, gm) = meter_id(&installation_id, &grid_meter_id)?;
        let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {gm} {authorize}"))?;
        let held = require_held(ctx, i, Held::Meter(gm.clone()));
        let state = command::authorize_tic(&access, call, svc, held, gm, authorize).await?;
        Ok(GridMeter::new(i, Arc::new(state.meter), state.fetched_at))
    }

    /// Sets tariff prices. Give only the tariffs to change: witty-bff reads the meter's
    /// subscription and current prices and sends the complete set the upstream requires (all ten
    /// for STANDARD), the others unchanged.
    async fn set_tariffs(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        grid_meter_id: ID,
        tariffs: Vec<TariffPriceInput>,
        idempotency_key: Option<String>,
    ) -> AppResult<Vec<Tariff>> {
        let (i, gm) = meter_id(&installation_id, &grid_meter_id)?;
        let given: Vec<Given> = tariffs.into_iter().map(Given::from).collect();
        let wanted = tariffs::wanted(&given, Utc::now())?;
        let (access, call, svc) = call(ctx, Some(i), idempotency_key, format!("{i} {gm} {wanted:?}"))?;
        let saved = command::set_tariffs(&access, call, svc, gm, wanted).await?;
        Ok(saved.into_iter().map(Tariff::from).collect())
    }
}
