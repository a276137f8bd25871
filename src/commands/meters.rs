//! TIC consent and tariff prices of a grid meter.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tariffs::{self, Meter, Price};
use super::{Access, Changes, Command, Doubt, Invocation, Kind, Services, Who, run};
use crate::graphql::error::{AppError, AppResult};
use crate::upstream::meters as wire;

pub(crate) static AUTHORIZE_TIC: Command = Command {
    name: "authorizeTic",
    who: Who::Owner { what: "change the TIC consent" },
    doubt: Doubt { what: "the change of TIC consent", done: "made", check: "the grid meter's authorizeTic" },
    changes: Changes {
        installation: &[Kind::Meters, Kind::Meter, Kind::Stations, Kind::Station, Kind::MeasureValues],
        ..Changes::NONE
    },
};
pub(crate) static SET_TARIFFS: Command = Command {
    name: "setTariffs",
    who: Who::Owner { what: "set tariff prices" },
    doubt: Doubt { what: "the new prices", done: "saved", check: "the grid meter's tariffs" },
    changes: Changes {
        installation: &[
            Kind::Tariffs,
            Kind::Tariff,
            Kind::MeasureValues,
            Kind::Stations,
            Kind::Station,
            Kind::LogEntries,
        ],
        ..Changes::NONE
    },
};

/// A grid meter's state as the upstream gave it, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MeterState {
    pub meter: wire::GridMeter,
    pub fetched_at: DateTime<Utc>,
}

/// Gives or withdraws consent to send the house's TIC data, then reads the meter back. `held`
/// checks the meter is the installation's, once the caller may, before anything is sent.
pub(crate) async fn authorize_tic(
    access: &impl Access,
    call: Invocation<'_>,
    svc: &Services,
    held: impl Future<Output = AppResult<()>>,
    gm: String,
    authorize: bool,
) -> AppResult<MeterState> {
    let i = call.installation()?;
    run(svc, access, &AUTHORIZE_TIC, call, |w| async move {
        held.await?;
        let client = svc.cache.client();
        w.send(client.authorize_tic(w.token(), i, &gm, authorize)).await?;
        // The change is made: a failed read-back says so, and not to send it again.
        let meter = client.grid_meter(w.token(), i, &gm).await.map_err(|e| {
            AppError::UpstreamUnavailable(format!(
                "the TIC consent was changed, but the grid meter could not be read back ({}): query it again rather \
                 than sending the change again",
                AppError::from(e).message()
            ))
        })?;
        Ok(MeterState { meter, fetched_at: Utc::now() })
    })
    .await
}

/// Sets the `wanted` prices: reads the meter's subscription and current prices and sends the
/// complete set (see [`tariffs::merge`]).
pub(crate) async fn set_tariffs(
    access: &impl Access,
    call: Invocation<'_>,
    svc: &Services,
    gm: String,
    wanted: BTreeMap<String, Price>,
) -> AppResult<Vec<wire::Tariff>> {
    let i = call.installation()?;
    run(svc, access, &SET_TARIFFS, call, |w| async move {
        let client = svc.cache.client();
        let (meter, current) =
            futures::try_join!(client.grid_meter(w.token(), i, &gm), client.tariffs(w.token(), i, &gm))?;
        let meter = Meter { subscription: meter.properties.grid_subscription.as_deref(), current: &current };
        let body = tariffs::merge(&wanted, &meter, Utc::now())?;
        w.send(client.set_tariffs(w.token(), i, &gm, &body)).await
    })
    .await
}
