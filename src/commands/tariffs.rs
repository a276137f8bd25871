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
pub(crate) struct Price {
    pub value: f64,
    pub currency: Option<String>,
    pub begin_date: Option<DateTime<Utc>>,
    pub friendly_name: Option<String>,
}

/// One price of the request, with its tariff as named in the schema (`TH`, `TARIFF1`...).
#[derive(Debug, Clone)]
pub(crate) struct Given {
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
pub(crate) fn wanted(given: &[Given], now: DateTime<Utc>) -> AppResult<BTreeMap<String, Price>> {
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
pub(crate) struct Meter<'a> {
    /// Its subscription as the upstream names it (`None`: not given).
    pub subscription: Option<&'a str>,
    pub current: &'a [Tariff],
}

/// The complete set of prices to send: the meter's subscription's tariffs (or, when it is not
/// known, the tariffs it has), the wanted ones priced as given, the others as they are.
pub(crate) fn merge(
    wanted: &BTreeMap<String, Price>,
    meter: &Meter<'_>,
    now: DateTime<Utc>,
) -> AppResult<Vec<SetTariff>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::meters::TariffPrice;

    fn now() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn price(value: f64) -> Price {
        Price { value, currency: None, begin_date: None, friendly_name: None }
    }

    fn given(id: TariffId, price: Price) -> Given {
        Given { id, price }
    }

    /// A tariff the meter has, priced from `begin` (and earlier at 9.0).
    fn tariff(id: &str, currency: Option<&str>, value: f64, begin: &str) -> Tariff {
        Tariff {
            id: id.into(),
            installation_parent_id: Some(1),
            friendly_name: Some(format!("name {id}")),
            currency: currency.map(str::to_string),
            is_default: None,
            values: vec![
                TariffPrice { begin_date: begin.into(), value },
                TariffPrice { begin_date: "2021-01-01T00:00:00Z".into(), value: 9.0 },
            ],
        }
    }

    fn merged(wanted: &[Given], subscription: Option<&str>, current: &[Tariff]) -> AppResult<Vec<SetTariff>> {
        merge(&super::wanted(wanted, now())?, &Meter { subscription, current }, now())
    }

    fn message(r: AppResult<impl std::fmt::Debug>) -> String {
        r.unwrap_err().message().to_string()
    }

    #[test]
    fn each_subscription_sends_its_whole_set_the_others_unchanged() {
        let current = [
            tariff("HC", Some("EUR"), 0.2, "2024-01-01T00:00:00Z"),
            tariff("hp", Some("eur"), 0.3, "2024-01-01T00:00:00Z"),
        ];
        let body = merged(&[given(TariffId::Hc, price(0.25))], Some("HCHP"), &current).unwrap();
        let ids: Vec<&str> = body.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["hc", "hp"]);
        assert_eq!((body[0].value, body[0].begin_date.as_str()), (0.25, "2026-06-01T12:00:00.000Z"));
        // Unchanged: its latest price from the same date, its name and currency.
        assert_eq!((body[1].value, body[1].begin_date.as_str()), (0.3, "2024-01-01T00:00:00.000Z"));
        assert_eq!((body[1].currency.as_str(), body[1].friendly_name.as_deref()), ("eur", Some("name hp")));
        for (subscription, count) in [("BASE", 1), ("EJP", 2), ("tempo", 6)] {
            let wanted: Vec<Given> = tariffs_of(GridSubscription::from_upstream(subscription))
                .unwrap()
                .into_iter()
                .map(|id| given(id, Price { currency: Some("EUR".into()), ..price(0.1) }))
                .collect();
            assert_eq!(merged(&wanted, Some(subscription), &[]).unwrap().len(), count, "{subscription}");
        }
    }

    #[test]
    fn standard_needs_all_ten_tariffs_with_a_price() {
        let ten: Vec<Tariff> =
            (1..=10).map(|n| tariff(&format!("tariff{n}"), Some("eur"), 0.1, "2025-01-01T00:00:00Z")).collect();
        let body = merged(&[given(TariffId::Tariff3, price(0.5))], Some("STANDARD"), &ten).unwrap();
        assert_eq!(body.len(), 10);
        assert_eq!(body.iter().filter(|t| t.value == 0.5).count(), 1);
        // One of the ten missing or without a price to keep: the caller must give it.
        let missing = "tariff TARIFF10 has no current price to keep: give it a price too";
        assert_eq!(message(merged(&[given(TariffId::Tariff3, price(0.5))], Some("STANDARD"), &ten[..9])), missing);
        let mut priceless = ten.clone();
        priceless[9].values.clear();
        assert_eq!(message(merged(&[given(TariffId::Tariff3, price(0.5))], Some("STANDARD"), &priceless)), missing);
    }

    #[test]
    fn a_tariff_outside_the_subscription_is_refused_naming_the_valid_ones() {
        let e = message(merged(&[given(TariffId::Th, price(0.2)), given(TariffId::Pm, price(0.2))], Some("HCHP"), &[]));
        assert_eq!(e, "PM, TH are not tariffs of this meter's HCHP subscription; valid tariffs: HC, HP");
        // An unknown subscription: the meter's own tariffs are the set.
        let current = [tariff("th", Some("eur"), 0.2, "2024-01-01T00:00:00Z")];
        let e = message(merged(&[given(TariffId::Hc, price(0.2))], Some("SOLAR"), &current));
        assert_eq!(e, "HC is not a tariff of this meter's SOLAR subscription; valid tariffs: TH");
        assert_eq!(merged(&[given(TariffId::Th, price(0.2))], None, &current).unwrap().len(), 1);
    }

    #[test]
    fn the_currency_is_the_given_one_then_the_tariffs_then_the_meters_and_never_guessed() {
        let eur = |id: &str| tariff(id, Some("EUR"), 0.2, "2024-01-01T00:00:00Z");
        let with = |c: &str| Price { currency: Some(c.into()), ..price(0.2) };
        // Given for this tariff wins over its own.
        let body = merged(&[given(TariffId::Hc, with(" chf "))], Some("HCHP"), &[eur("hc"), eur("hp")]).unwrap();
        assert_eq!((body[0].currency.as_str(), body[1].currency.as_str()), ("chf", "eur"));
        // A new tariff takes a currency given in the request for another one...
        let body =
            merged(&[given(TariffId::Hc, price(0.2)), given(TariffId::Hp, with("SEK"))], Some("HCHP"), &[eur("hc")])
                .unwrap();
        assert_eq!((body[0].currency.as_str(), body[1].currency.as_str()), ("eur", "sek"));
        // ...or else that of the meter's other tariffs.
        let body = merged(&[given(TariffId::Hp, price(0.2))], Some("HCHP"), &[eur("hc")]).unwrap();
        assert_eq!(body[1].currency, "eur");
        // Nothing to read it from.
        let e = message(merged(&[given(TariffId::Th, price(0.2))], Some("BASE"), &[]));
        assert!(e.starts_with("tariff TH is new on this meter and no currency is known for it"), "{e}");
        // An unreadable currency upstream is not guessed: the upstream is at fault.
        let odd = tariff("th", Some("euro"), 0.2, "2024-01-01T00:00:00Z");
        let r = merged(&[given(TariffId::Th, price(0.2))], Some("BASE"), std::slice::from_ref(&odd));
        assert!(matches!(&r, Err(AppError::UpstreamError(m)) if m.ends_with("give its currency too")), "{r:?}");
        let r = merged(
            &[given(TariffId::Hc, with("eur"))],
            Some("HCHP"),
            &[odd.clone(), tariff("hp", None, 0.1, "2024-01-01T00:00:00Z")],
        );
        assert!(
            matches!(&r, Err(AppError::UpstreamError(m)) if m.contains("tariff HP") && m.ends_with("with its price and currency")),
            "{r:?}"
        );
    }

    #[test]
    fn names_are_trimmed_bounded_and_kept_when_not_given() {
        let current = [tariff("th", Some("eur"), 0.2, "2024-01-01T00:00:00Z")];
        let named = |n: &str| Price { friendly_name: Some(n.into()), ..price(0.2) };
        let body = merged(&[given(TariffId::Th, named("  Jour  "))], Some("BASE"), &current).unwrap();
        assert_eq!(body[0].friendly_name.as_deref(), Some("Jour"));
        let body = merged(&[given(TariffId::Th, price(0.2))], Some("BASE"), &current).unwrap();
        assert_eq!(body[0].friendly_name.as_deref(), Some("name th"));
        let e = message(merged(&[given(TariffId::Th, named(&"x".repeat(65)))], Some("BASE"), &current));
        assert_eq!(e, "tariffs[0].friendlyName must be at most 64 characters, got 65");
        assert!(
            message(merged(&[given(TariffId::Th, named(" "))], Some("BASE"), &current)).contains("must not be blank")
        );
    }

    #[test]
    fn what_is_given_is_checked_before_anything_is_read() {
        assert_eq!(message(wanted(&[], now())), "tariffs must name at least one tariff to price");
        assert_eq!(message(wanted(&[given(TariffId::Unknown, price(1.0))], now())), "tariffs[0].id cannot be UNKNOWN");
        let twice = [given(TariffId::Th, price(1.0)), given(TariffId::Th, price(2.0))];
        assert_eq!(message(wanted(&twice, now())), "tariffs[1].id TH is given twice");
        for bad in [-0.01, 1000.5, f64::NAN] {
            assert!(message(wanted(&[given(TariffId::Th, price(bad))], now())).starts_with("tariffs[0].value must be"));
        }
        assert!(message(wanted(&[given(TariffId::Th, price(1e300))], now())).ends_with("got 1e300"));
        let at = |d: &str| Price { begin_date: Some(d.parse().unwrap()), ..price(1.0) };
        let e = message(wanted(&[given(TariffId::Th, at("1999-12-31T23:59:59Z"))], now()));
        assert_eq!(
            e,
            "tariffs[0].beginDate must be from 2000-01-01 to a year from now (2027-06-02), got 1999-12-31T23:59:59Z"
        );
        assert!(wanted(&[given(TariffId::Th, at("2027-06-02T00:00:00Z"))], now()).is_ok());
        let e = message(wanted(&[given(TariffId::Th, Price { currency: Some("EURO".into()), ..price(1.0) })], now()));
        assert_eq!(e, "tariffs[0].currency must be a 3-letter code such as EUR, got 'EURO'");
        // -0 is kept as 0.
        let w = wanted(&[given(TariffId::Th, price(-0.0))], now()).unwrap();
        assert!(w["th"].value.is_sign_positive());
    }
}
