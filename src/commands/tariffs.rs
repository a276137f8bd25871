//! Tariff prices: what the caller gives is checked, then merged with the meter's subscription and
//! current tariffs into the complete set the upstream requires in one call (all ten for
//! STANDARD), the tariffs not given sent unchanged. Pure: no upstream call here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::graphql::enums::{GridSubscription, TariffId};
use crate::graphql::error::{AppError, AppResult};
use crate::upstream::meters::{SetTariff, Tariff};
use crate::upstream::quirks::parse_time;

/// A price to set, as the caller gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub value: f64,
    pub currency: Option<String>,
    pub begin_date: Option<DateTime<Utc>>,
    pub friendly_name: Option<String>,
}

/// One price of the request, with its tariff as named in the schema (`TH`, `TARIFF1`...).
#[derive(Debug, Clone)]
pub struct Given {
    pub id: TariffId,
    pub price: Price,
}

/// The highest price per kWh `setTariffs` takes, in the tariff's currency. Household prices are
/// about 0.2 to 0.4 EUR/kWh, the EU's wholesale markets stop at 4 EUR/kWh (day-ahead) and 10 EUR/kWh
/// (intraday), and the currencies of the countries the stations are sold in with the smallest unit
/// (HUF, CZK, SEK…) price a kWh well under 1000. Above it is a typo, and a price once saved stays
/// in the tariff's history for good (the upstream deletes none): a price near `f64::MAX` makes
/// every cost computed with it overflow.
const MAX_PRICE: f64 = 1000.0;

/// How far ahead a price may start: price changes are known weeks or months ahead (a regulated
/// tariff's new rate, a supplier's notice, a contract's yearly renewal). A begin date later than a
/// year is almost always a mistyped year, and cannot be taken back.
const LATEST_BEGIN_DAYS: i64 = 366;

/// The earliest `beginDate`: long before any connected Witty-Home station recorded anything (the
/// API document's dates are from 2020), so no earlier price is ever used; after the euro (the
/// default currency) began; and far from the upstream's `0001-01-01T00:00:00Z`, which means
/// "never" and reads back as null.
fn earliest_begin() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or_default() // 2000-01-01T00:00:00Z
}

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

/// A currency as sent upstream: three ASCII letters (around them, spaces are ignored), lower case.
fn currency_code(c: &str) -> Option<String> {
    let c = c.trim();
    (c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic())).then(|| c.to_ascii_lowercase())
}

fn millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Checks a price and its begin date against the bounds above.
fn check_price(n: usize, t: &Price, now: DateTime<Utc>) -> AppResult<()> {
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

/// The prices given, checked, by upstream tariff id (lower case): at least one, each once.
pub fn wanted(given: &[Given], now: DateTime<Utc>) -> AppResult<BTreeMap<String, Price>> {
    if given.is_empty() {
        return Err(AppError::bad_input("tariffs must name at least one tariff to price"));
    }
    let mut wanted = BTreeMap::new();
    for (n, t) in given.iter().enumerate() {
        let code =
            t.id.to_upstream().ok_or_else(|| AppError::bad_input(format!("tariffs[{n}].id cannot be UNKNOWN")))?;
        check_price(n, &t.price, now)?;
        if let Some(name) = &t.price.friendly_name {
            super::text(&format!("tariffs[{n}].friendlyName"), name, 64)?;
        }
        if let Some(c) = &t.price.currency
            && currency_code(c).is_none()
        {
            return Err(AppError::bad_input(format!(
                "tariffs[{n}].currency must be a 3-letter code such as EUR, got '{c}'"
            )));
        }
        // -0 is 0 (not a price to keep in the history as written).
        if wanted.insert(code.to_string(), Price { value: t.price.value + 0.0, ..t.price.clone() }).is_some() {
            let shown = async_graphql::InputType::to_value(&t.id);
            return Err(AppError::bad_input(format!("tariffs[{n}].id {shown} is given twice")));
        }
    }
    Ok(wanted)
}

/// The meter as read before its prices are set.
pub struct Meter<'a> {
    /// Its subscription as the upstream names it (`None`: not given).
    pub subscription: Option<&'a str>,
    pub current: &'a [Tariff],
}

/// The complete set of prices to send: the meter's subscription's tariffs (or, when it is not
/// known, the tariffs it has), the wanted ones priced as given, the others as they are.
pub fn merge(wanted: &BTreeMap<String, Price>, meter: &Meter<'_>, now: DateTime<Utc>) -> AppResult<Vec<SetTariff>> {
    let expected = expected(wanted, meter)?;
    // A tariff the meter does not have yet takes a currency the caller gave in this request, or
    // else that of the meter's other tariffs.
    let meters_currency = wanted.values().find_map(|t| t.currency.as_deref().and_then(currency_code)).or_else(|| {
        meter
            .current
            .iter()
            .filter(|t| expected.iter().any(|id| t.id.eq_ignore_ascii_case(id)))
            .find_map(|t| t.currency.as_deref().and_then(currency_code))
    });
    expected
        .iter()
        .map(|id| {
            let existing = meter.current.iter().find(|t| t.id.eq_ignore_ascii_case(id));
            let currency = currency(id, wanted, existing, meters_currency.as_deref())?;
            item(id, wanted.get(id), existing, currency, now)
        })
        .collect()
}

/// The tariffs the upstream requires, refusing any wanted one that is not among them.
fn expected(wanted: &BTreeMap<String, Price>, meter: &Meter<'_>) -> AppResult<Vec<String>> {
    let expected: Vec<String> = match meter.subscription.map(GridSubscription::from_upstream).and_then(tariffs_of) {
        Some(ids) => ids.iter().filter_map(|t| t.to_upstream()).map(str::to_string).collect(),
        None => meter.current.iter().map(|t| t.id.to_ascii_lowercase()).collect(),
    };
    let foreign: Vec<&String> = wanted.keys().filter(|k| !expected.contains(k)).collect();
    if foreign.is_empty() {
        return Ok(expected);
    }
    let upper = |ids: &mut dyn Iterator<Item = &String>| ids.map(|s| s.to_uppercase()).collect::<Vec<_>>().join(", ");
    Err(AppError::bad_input(format!(
        "{} {} of this meter's {} subscription; valid tariffs: {}",
        upper(&mut foreign.iter().copied()),
        if foreign.len() == 1 { "is not a tariff" } else { "are not tariffs" },
        meter.subscription.unwrap_or("unknown"),
        upper(&mut expected.iter())
    )))
}

/// A tariff's currency: the one given for it, else its own, else (for a new tariff) the meter's.
/// A currency the upstream did not give, or gave in a form that is not a 3-letter code, is not
/// guessed: sent as "eur", it would reprice the tariff in another currency.
fn currency(
    id: &str,
    wanted: &BTreeMap<String, Price>,
    existing: Option<&Tariff>,
    meters_currency: Option<&str>,
) -> AppResult<String> {
    let given = wanted.get(id).and_then(|t| t.currency.as_deref()).and_then(currency_code);
    let known = match existing {
        Some(e) => e.currency.as_deref().and_then(currency_code),
        None => meters_currency.map(str::to_string),
    };
    given.or(known).ok_or_else(|| {
        if existing.is_none() {
            // Nothing to read it from: the caller is the one to say.
            return AppError::bad_input(format!(
                "tariff {} is new on this meter and no currency is known for it: give it in tariffs with a currency",
                id.to_uppercase()
            ));
        }
        let what = if wanted.contains_key(id) {
            "give its currency too"
        } else {
            "give this tariff in tariffs with its price and currency"
        };
        AppError::UpstreamError(format!(
            "the Witty-Home service did not give a readable currency for tariff {}, and witty-bff does not guess \
             one; {what}",
            id.to_uppercase()
        ))
    })
}

/// One tariff of the set: priced as given, or unchanged (the same price from the same date).
fn item(
    id: &str,
    given: Option<&Price>,
    existing: Option<&Tariff>,
    currency: String,
    now: DateTime<Utc>,
) -> AppResult<SetTariff> {
    let existing_name = || existing.and_then(|e| e.friendly_name.clone());
    if let Some(t) = given {
        return Ok(SetTariff {
            id: id.to_string(),
            friendly_name: t.friendly_name.as_deref().map(|n| n.trim().to_string()).or_else(existing_name),
            currency,
            begin_date: millis(t.begin_date.unwrap_or(now)),
            value: t.value,
        });
    }
    let latest = existing.and_then(|t| {
        t.values.iter().filter_map(|v| Some((parse_time(Some(&v.begin_date))?, v))).max_by_key(|(b, _)| *b)
    });
    let Some((begin, price)) = latest else {
        return Err(AppError::bad_input(format!(
            "tariff {} has no current price to keep: give it a price too",
            id.to_uppercase()
        )));
    };
    Ok(SetTariff {
        id: id.to_string(),
        friendly_name: existing_name(),
        currency,
        begin_date: millis(begin),
        value: price.value,
    })
}
