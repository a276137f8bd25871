//! TIC consent and tariff prices.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, InputType, Object};
use chrono::{DateTime, Utc};

use super::{Doubt, invalidate, services};
use crate::cache::Resource;
use crate::graphql::access::require_owner;
use crate::graphql::context::caller;
use crate::graphql::enums::{GridSubscription, TariffId};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::meters::{GridMeter, Tariff};
use crate::upstream::meters::SetTariff;
use crate::upstream::quirks::parse_time;

/// A price to set. Leave out the tariffs that keep their price: witty-bff sends them unchanged.
#[derive(InputObject, Debug, Clone)]
pub struct TariffPriceInput {
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

const TIC_CHANGED: Doubt =
    Doubt { what: "the change of TIC consent", done: "made", check: "the grid meter's authorizeTic" };
const PRICED: Doubt = Doubt { what: "the new prices", done: "saved", check: "the grid meter's tariffs" };

/// The tariff ids a subscription prices (the upstream requires all of them in one call).
fn tariffs_of(subscription: GridSubscription) -> Option<Vec<TariffId>> {
    use TariffId::*;
    Some(match subscription {
        GridSubscription::Base => vec![Th],
        GridSubscription::Hchp => vec![Hc, Hp],
        GridSubscription::Ejp => vec![Hn, Pm],
        GridSubscription::Tempo => vec![Hcjb, Hpjb, Hcjw, Hpjw, Hcjr, Hpjr],
        GridSubscription::Standard => {
            vec![Tariff1, Tariff2, Tariff3, Tariff4, Tariff5, Tariff6, Tariff7, Tariff8, Tariff9, Tariff10]
        }
        GridSubscription::Unknown => return None,
    })
}

/// `installationId` and `gridMeterId`, checked as every id argument is.
fn meter_id(installation_id: &ID, grid_meter_id: &ID) -> AppResult<(i64, String)> {
    Ok((installation_arg(installation_id, "installationId")?, resource_id(grid_meter_id, "gridMeterId")?))
}

/// A currency as sent upstream: three ASCII letters (around them, spaces are ignored), lower case.
fn currency_code(c: &str) -> Option<String> {
    let c = c.trim();
    (c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic())).then(|| c.to_ascii_lowercase())
}

/// The highest price per kWh `setTariffs` takes, in the tariff's currency. Household prices are
/// about 0.2 to 0.4 EUR/kWh, the EU's wholesale markets stop at 4 EUR/kWh (day-ahead) and 10 EUR/kWh
/// (intraday), and the currencies of the countries the stations are sold in with the smallest unit
/// (HUF, CZK, SEK…) price a kWh well under 1000. Above it is a typo, and a price once saved stays
/// in the tariff's history for good (the upstream deletes none): a price near `f64::MAX` makes
/// every cost computed with it overflow.
const MAX_PRICE: f64 = 1000.0;

/// The earliest `beginDate`: long before any connected Witty-Home station recorded anything (the
/// API document's dates are from 2020), so no earlier price is ever used; after the euro (the
/// default currency) began; and far from the upstream's `0001-01-01T00:00:00Z`, which means
/// "never" and reads back as null.
fn earliest_begin() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or_default() // 2000-01-01T00:00:00Z
}

/// How far ahead a price may start: price changes are known weeks or months ahead (a regulated
/// tariff's new rate, a supplier's notice, a contract's yearly renewal). A begin date later than a
/// year is almost always a mistyped year, and cannot be taken back.
const LATEST_BEGIN_DAYS: i64 = 366;

/// Checks a price and its begin date against the bounds above.
fn check_price(n: usize, t: &TariffPriceInput, now: DateTime<Utc>) -> AppResult<()> {
    if !(t.value.is_finite() && (0.0..=MAX_PRICE).contains(&t.value)) {
        return Err(AppError::bad_input(format!(
            "tariffs[{n}].value must be a price per kWh from 0 to {MAX_PRICE} (in the tariff's currency), got {}",
            if t.value.abs() < 1e9 { t.value.to_string() } else { format!("{:e}", t.value) }
        )));
    }
    if let Some(begin) = t.begin_date {
        let (earliest, latest) = (earliest_begin(), now + chrono::TimeDelta::days(LATEST_BEGIN_DAYS));
        if begin < earliest || begin > latest {
            return Err(AppError::bad_input(format!(
                "tariffs[{n}].beginDate must be from {} to a year from now ({}), got {}",
                earliest.format("%Y-%m-%d"),
                latest.format("%Y-%m-%d"),
                begin.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )));
        }
    }
    Ok(())
}

fn millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Default)]
pub struct MeterMutation;

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
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, format!("{i} {gm} {authorize}"), TIC_CHANGED, |sent| async move {
                require_owner(ctx, i, "change the TIC consent").await?;
                let me = caller(ctx)?;
                let client = svc.cache.client();
                sent.send(client.authorize_tic(me.token(), i, &gm, authorize)).await?;
                invalidate(ctx, i, |r| {
                    matches!(
                        r,
                        Resource::Meters { .. }
                            | Resource::Meter { .. }
                            | Resource::Stations { .. }
                            | Resource::Station { .. }
                            | Resource::MeasureValues { .. }
                    )
                })?;
                // The change is made: a failed read-back says so, and not to send it again.
                let meter = client.grid_meter(me.token(), i, &gm).await.map_err(|e| {
                    AppError::UpstreamUnavailable(format!(
                        "the TIC consent was changed, but the grid meter could not be read back ({}): query it \
                         again rather than sending the change again",
                        AppError::from(e).message()
                    ))
                })?;
                Ok(GridMeter::new(i, Arc::new(meter), Utc::now()))
            })
            .await
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
        if tariffs.is_empty() {
            return Err(AppError::bad_input("tariffs must name at least one tariff to price"));
        }
        let mut wanted: BTreeMap<String, TariffPriceInput> = BTreeMap::new();
        for (n, t) in tariffs.iter().enumerate() {
            let code =
                t.id.to_upstream().ok_or_else(|| AppError::bad_input(format!("tariffs[{n}].id cannot be UNKNOWN")))?;
            check_price(n, t, Utc::now())?;
            if let Some(name) = &t.friendly_name {
                super::text(&format!("tariffs[{n}].friendlyName"), name, 64)?;
            }
            if let Some(c) = &t.currency
                && currency_code(c).is_none()
            {
                return Err(AppError::bad_input(format!(
                    "tariffs[{n}].currency must be a 3-letter code such as EUR, got '{c}'"
                )));
            }
            // -0 is 0 (not a price to keep in the history as written).
            if wanted.insert(code.to_string(), TariffPriceInput { value: t.value + 0.0, ..t.clone() }).is_some() {
                return Err(AppError::bad_input(format!("tariffs[{n}].id {} is given twice", t.id.to_value())));
            }
        }
        let fingerprint = format!("{i} {gm} {wanted:?}");
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, idempotency_key, fingerprint, PRICED, |sent| async move {
                require_owner(ctx, i, "set tariff prices").await?;
                let me = caller(ctx)?;
                let client = svc.cache.client();
                let (meter, current) =
                    futures::try_join!(client.grid_meter(me.token(), i, &gm), client.tariffs(me.token(), i, &gm))?;
                let subscription = meter.properties.grid_subscription.as_deref().map(GridSubscription::from_upstream);
                let expected: Vec<String> = match subscription.and_then(tariffs_of) {
                    Some(ids) => ids.iter().filter_map(|t| t.to_upstream()).map(str::to_string).collect(),
                    None => current.iter().map(|t| t.id.to_ascii_lowercase()).collect(),
                };
                let foreign: Vec<&String> = wanted.keys().filter(|k| !expected.contains(k)).collect();
                if !foreign.is_empty() {
                    return Err(AppError::bad_input(format!(
                        "{} {} of this meter's {} subscription; valid tariffs: {}",
                        foreign.iter().map(|s| s.to_uppercase()).collect::<Vec<_>>().join(", "),
                        if foreign.len() == 1 { "is not a tariff" } else { "are not tariffs" },
                        meter.properties.grid_subscription.as_deref().unwrap_or("unknown"),
                        expected.iter().map(|s| s.to_uppercase()).collect::<Vec<_>>().join(", ")
                    )));
                }
                let now = Utc::now();
                // A tariff the meter does not have yet takes a currency the caller gave in this
                // request, or else that of the meter's other tariffs.
                let meters_currency =
                    wanted.values().find_map(|t| t.currency.as_deref().and_then(currency_code)).or_else(|| {
                        current
                            .iter()
                            .filter(|t| expected.iter().any(|id| t.id.eq_ignore_ascii_case(id)))
                            .find_map(|t| t.currency.as_deref().and_then(currency_code))
                    });
                let mut body = Vec::new();
                for id in &expected {
                    let existing = current.iter().find(|t| t.id.eq_ignore_ascii_case(id));
                    let latest = existing.and_then(|t| {
                        t.values
                            .iter()
                            .filter_map(|v| Some((parse_time(Some(&v.begin_date))?, v)))
                            .max_by_key(|(b, _)| *b)
                    });
                    let given = wanted.get(id).and_then(|t| t.currency.as_deref()).and_then(currency_code);
                    // A currency the upstream did not give, or gave in a form that is not a
                    // 3-letter code, is not guessed: sent as "eur", it would reprice the tariff
                    // in another currency.
                    let currency = given
                        .or_else(|| match existing {
                            Some(e) => e.currency.as_deref().and_then(currency_code),
                            None => meters_currency.clone(),
                        })
                        .ok_or_else(|| {
                            if existing.is_none() {
                                // Nothing to read it from: the caller is the one to say.
                                return AppError::bad_input(format!(
                                    "tariff {} is new on this meter and no currency is known for it: give it \
                                     in tariffs with a currency",
                                    id.to_uppercase()
                                ));
                            }
                            let what = if wanted.contains_key(id) {
                                "give its currency too"
                            } else {
                                "give this tariff in tariffs with its price and currency"
                            };
                            AppError::UpstreamError(format!(
                                "the Witty-Home service did not give a readable currency for tariff {}, and witty-bff \
                                 does not guess one; {what}",
                                id.to_uppercase()
                            ))
                        })?;
                    let item = match wanted.get(id) {
                        Some(t) => SetTariff {
                            id: id.clone(),
                            friendly_name: t
                                .friendly_name
                                .as_deref()
                                .map(|n| n.trim().to_string())
                                .or_else(|| existing.and_then(|e| e.friendly_name.clone())),
                            currency,
                            begin_date: millis(t.begin_date.unwrap_or(now)),
                            value: t.value,
                        },
                        // Unchanged: the same price from the same date.
                        None => match latest {
                            Some((begin, price)) => SetTariff {
                                id: id.clone(),
                                friendly_name: existing.and_then(|e| e.friendly_name.clone()),
                                currency,
                                begin_date: millis(begin),
                                value: price.value,
                            },
                            None => {
                                return Err(AppError::bad_input(format!(
                                    "tariff {} has no current price to keep: give it a price too",
                                    id.to_uppercase()
                                )));
                            }
                        },
                    };
                    body.push(item);
                }
                let saved = sent.send(client.set_tariffs(me.token(), i, &gm, &body)).await?;
                invalidate(ctx, i, |r| {
                    matches!(
                        r,
                        Resource::Tariffs { .. }
                            | Resource::Tariff { .. }
                            | Resource::MeasureValues { .. }
                            | Resource::Stations { .. }
                            | Resource::Station { .. }
                            | Resource::LogEntries { .. }
                    )
                })?;
                Ok(saved.into_iter().map(Tariff::from).collect::<Vec<_>>())
            })
            .await
    }
}
