//! Charging sessions and reports: the station's SessionStart/SessionEnd logs joined into sessions,
//! with the energy per tariff from the measures and the currency from the grid meter's tariffs,
//! and the totals of an installation's sessions per station, tariff and month.

use std::collections::BTreeMap;

use async_graphql::{Context, ID, SimpleObject};
use chrono::{DateTime, Datelike, Duration, DurationRound, Utc};

use super::access::role;
use super::context::load;
use super::enums::{TariffId, UserRole};
use super::error::{AppError, AppResult};
use super::history::{MAX_POINTS, MAX_RANGE_DAYS, range};
use crate::cache::read;
use crate::upstream::history::{Device, LogEntry, Operator, Range};
use crate::upstream::quirks::{duration_seconds, parse_time};
use crate::upstream::stations::CurrentSession;

/// How far past `to` the log listing reaches to find the end of a session that started before
/// `to`: a session longer than this shows as still open (`endDate` null, no energy).
const END_LOOKAHEAD_HOURS: i64 = 48;
/// The station measures summed per tariff for `byTariff` (the simulator's and the API
/// document's ids).
const ENERGY_MEASURE: &str = "1";
const COST_MEASURE: &str = "2";

/// One charging session: from plug to unplug.
#[derive(SimpleObject, Clone)]
pub(crate) struct ChargingSession {
    /// When the car was plugged (the SessionStart log entry's date).
    pub start_date: DateTime<Utc>,
    /// When it was unplugged (the SessionEnd entry's date); `null` while it runs, or when its end
    /// was not logged within 48 hours after `to`.
    pub end_date: Option<DateTime<Utc>>,
    /// From plug to unplug: SessionEnd's `sessionDuration`; while it runs, `currentSession`'s
    /// duration (to the minute).
    pub duration_seconds: Option<i64>,
    /// Time the car actually charged: SessionEnd's `chargingDuration`, or `currentSession`'s.
    pub charging_duration_seconds: Option<i64>,
    /// kWh: SessionEnd's `energy`, or `currentSession.totalSessionEnergy` so far. `null` for an
    /// installer.
    pub energy: Option<f64>,
    /// SessionEnd's `cost`, or `currentSession.totalSessionCost` so far. `null` for an installer.
    pub cost: Option<f64>,
    /// The currency of the grid meter's tariffs, as they write it (`eur`); `null` when the
    /// installation has no grid meter or its tariffs name none.
    pub currency: Option<String>,
    /// Energy and cost per tariff, from the station's energy and cost measures summed per hour
    /// over the hours the session touched (the hours it starts and ends in count whole, so a
    /// session sharing an hour with another counts that hour's energy too). `null` for an
    /// installer, for a range over 10 000 hours, or when not asked for.
    pub by_tariff: Option<Vec<TariffTotal>>,
}

/// Energy and cost of one tariff.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub(crate) struct TariffTotal {
    pub tariff: TariffId,
    /// As the upstream names it (`hc`, `tariff3`).
    pub tariff_raw: String,
    /// kWh; `null` for an installer.
    pub energy: Option<f64>,
    /// `null` for an installer.
    pub cost: Option<f64>,
}

/// What the join needs besides the logs.
pub(crate) struct Join<'a> {
    pub device: Device,
    pub current: Option<&'a CurrentSession>,
    pub owner: bool,
    pub currency: Option<String>,
    /// Whether `byTariff` is asked for: it costs two measure reads.
    pub by_tariff: bool,
}

/// Whether the caller owns the installation (installers get no energy or cost).
pub(crate) async fn is_owner(ctx: &Context<'_>, installation_id: i64) -> AppResult<bool> {
    Ok(role(ctx, installation_id).await? == UserRole::Owner)
}

/// The currency of the installation's first grid meter's tariffs. A caller the upstream refuses
/// the tariffs to, or an installation without a meter, gets none rather than an error: the
/// sessions are worth answering without it.
pub(crate) async fn currency(ctx: &Context<'_>, installation_id: i64) -> AppResult<Option<String>> {
    let meters = match load(ctx, read::Meters { installation_id }).await {
        Ok((meters, _)) => meters,
        Err(AppError::Forbidden(_) | AppError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(meter) = meters.first() else { return Ok(None) };
    match load(ctx, read::Tariffs { installation_id, meter_id: meter.id.clone() }).await {
        Ok((tariffs, _)) => Ok(tariffs.iter().find_map(|t| t.currency.clone())),
        Err(AppError::Forbidden(_) | AppError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sessions that started in `[from, to)`, from one listing of the station's logs over
/// `[from, to + 48 h]` (cached like other history). A session that started before `from` is left
/// to the range it started in, so consecutive ranges give each session once.
pub(crate) async fn sessions(
    ctx: &Context<'_>,
    join: &Join<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Vec<ChargingSession>> {
    let asked = range(from, to, None)?;
    let listing = Range { end_date: lookahead_end(&asked), ..asked.clone() };
    let (entries, _) =
        load(ctx, read::LogEntries { device: join.device.clone(), log_id: None, range: listing.clone() }).await?;
    let mut out = pair(&entries, &asked, join);
    if join.by_tariff && join.owner {
        add_by_tariff(ctx, join, &listing, &mut out).await?;
    }
    Ok(out)
}

/// `to` plus the look-ahead, kept within the longest range the upstream is asked for.
fn lookahead_end(asked: &Range) -> DateTime<Utc> {
    let end = asked.end_date + Duration::hours(END_LOOKAHEAD_HOURS);
    end.min(asked.start_date + Duration::days(MAX_RANGE_DAYS))
}

/// Pairs each SessionStart in the asked range with the SessionEnd that follows it (before the
/// next start). A start with no end is the running session when the station has one.
fn pair(entries: &[LogEntry], asked: &Range, join: &Join<'_>) -> Vec<ChargingSession> {
    let mut sorted: Vec<(DateTime<Utc>, &LogEntry)> =
        entries.iter().filter_map(|e| Some((parse_time(Some(&e.date))?, e))).collect();
    // Stable: entries of the same instant keep the upstream's order (a start before its end).
    sorted.sort_by_key(|(t, _)| *t);
    let mut out = Vec::new();
    let mut open: Option<DateTime<Utc>> = None;
    for (t, e) in sorted {
        match e.log_name.as_deref() {
            Some("SessionStart") => {
                if let Some(start) = open.take() {
                    out.push(unended(start, false, join));
                }
                if t >= asked.start_date && t < asked.end_date {
                    open = Some(t);
                }
            }
            Some("SessionEnd") => {
                if let Some(start) = open.take() {
                    out.push(ended(start, t, &e.value, join));
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        let running = join.current.and_then(|c| parse_time(c.start_date.as_deref())).is_some_and(|s| s == start);
        out.push(unended(start, running, join));
    }
    out
}

fn ended(start: DateTime<Utc>, end: DateTime<Utc>, value: &serde_json::Value, join: &Join<'_>) -> ChargingSession {
    let number = |k: &str| value.get(k).and_then(|v| v.as_f64());
    let seconds = |k: &str| number(k).map(|v| v.round() as i64);
    ChargingSession {
        start_date: start,
        end_date: Some(end),
        duration_seconds: seconds("sessionDuration").or(Some((end - start).num_seconds())),
        charging_duration_seconds: seconds("chargingDuration"),
        energy: number("energy").filter(|_| join.owner),
        cost: number("cost").filter(|_| join.owner),
        currency: join.currency.clone(),
        by_tariff: None,
    }
}

/// A session whose end is not in the listing: the running one takes its figures from
/// `currentSession`; any other has none.
fn unended(start: DateTime<Utc>, running: bool, join: &Join<'_>) -> ChargingSession {
    let current = join.current.filter(|_| running);
    ChargingSession {
        start_date: start,
        end_date: None,
        duration_seconds: current.and_then(|c| duration_seconds(c.duration.as_deref())),
        charging_duration_seconds: current.and_then(|c| duration_seconds(c.charging_duration.as_deref())),
        energy: current.and_then(|c| c.total_session_energy).filter(|_| join.owner),
        cost: current.and_then(|c| c.total_session_cost).filter(|_| join.owner),
        currency: join.currency.clone(),
        by_tariff: None,
    }
}

/// Fills `byTariff` from the hourly sums of the energy and cost measures over the listing (two
/// reads per station and range); left `null` when the range has more hours than one aggregation
/// may ask for.
async fn add_by_tariff(
    ctx: &Context<'_>,
    join: &Join<'_>,
    listing: &Range,
    out: &mut [ChargingSession],
) -> AppResult<()> {
    let start = listing.start_date.duration_trunc(Duration::hours(1)).unwrap_or(listing.start_date);
    if (listing.end_date - start).num_hours() + 1 > MAX_POINTS {
        return Ok(());
    }
    let hourly = Range { start_date: start, end_date: listing.end_date, step: Some("hour".into()) };
    let read = |measure_id: &str| read::MeasureValues {
        device: join.device.clone(),
        measure_id: measure_id.to_string(),
        operator: Operator::Sum,
        range: hourly.clone(),
    };
    let (energy, _) = load(ctx, read(ENERGY_MEASURE)).await?;
    let (cost, _) = load(ctx, read(COST_MEASURE)).await?;
    let now = Utc::now();
    if out.iter().any(|s| s.end_date.is_none()) {
        // A running session's hours reach the present: the next hour's point counts from then on.
        let hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now) + Duration::hours(1);
        super::context::valid_until(ctx, hour);
    }
    for s in out.iter_mut() {
        let first = s.start_date.duration_trunc(Duration::hours(1)).unwrap_or(s.start_date);
        let last = s.end_date.unwrap_or(now);
        let within = |date: &str| parse_time(Some(date)).is_some_and(|t| t >= first && t < last);
        let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for p in energy.iter().filter(|p| within(&p.date)) {
            p.by_tariff().into_iter().for_each(|(k, v)| sums.entry(k).or_default().0 += v);
        }
        for p in cost.iter().filter(|p| within(&p.date)) {
            p.by_tariff().into_iter().for_each(|(k, v)| sums.entry(k).or_default().1 += v);
        }
        s.by_tariff = Some(
            sums.into_iter()
                .filter(|(_, (e, c))| *e != 0.0 || *c != 0.0)
                .map(|(raw, (e, c))| TariffTotal {
                    tariff: TariffId::from_upstream(&raw),
                    tariff_raw: raw,
                    energy: Some(round(e, 1_000.0)),
                    cost: Some(round(c, 10_000.0)),
                })
                .collect(),
        );
    }
    Ok(())
}

/// Sums of floats carry binary noise; figures are given to the precision the logs use.
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// The totals of a set of sessions.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq)]
pub(crate) struct ChargingTotals {
    /// How many sessions started in the range (running ones included).
    pub sessions: i32,
    /// kWh, the sum of the sessions' `energy`; `null` for an installer.
    pub energy: Option<f64>,
    /// The sum of the sessions' `cost`; `null` for an installer.
    pub cost: Option<f64>,
    /// The sum of the sessions' `byTariff`, per tariff; `null` when they have none.
    pub by_tariff: Option<Vec<TariffTotal>>,
}

impl ChargingTotals {
    pub(crate) fn of<'s>(sessions: impl IntoIterator<Item = &'s ChargingSession>, owner: bool) -> ChargingTotals {
        let mut t = ChargingTotals::default();
        let mut tariffs: BTreeMap<String, (TariffId, f64, f64)> = BTreeMap::new();
        let mut any_tariff = false;
        for s in sessions {
            t.sessions += 1;
            t.energy = Some(t.energy.unwrap_or(0.0) + s.energy.unwrap_or(0.0));
            t.cost = Some(t.cost.unwrap_or(0.0) + s.cost.unwrap_or(0.0));
            for b in s.by_tariff.iter().flatten() {
                any_tariff = true;
                let e = tariffs.entry(b.tariff_raw.clone()).or_insert((b.tariff, 0.0, 0.0));
                e.1 += b.energy.unwrap_or(0.0);
                e.2 += b.cost.unwrap_or(0.0);
            }
        }
        if !owner {
            (t.energy, t.cost) = (None, None);
        } else if t.sessions == 0 {
            (t.energy, t.cost) = (Some(0.0), Some(0.0));
        }
        t.energy = t.energy.map(|v| round(v, 1_000.0));
        t.cost = t.cost.map(|v| round(v, 10_000.0));
        t.by_tariff = (owner && any_tariff).then(|| {
            tariffs
                .into_iter()
                .map(|(raw, (tariff, e, c))| TariffTotal {
                    tariff,
                    tariff_raw: raw,
                    energy: Some(round(e, 1_000.0)),
                    cost: Some(round(c, 10_000.0)),
                })
                .collect()
        });
        t
    }
}

/// An installation's charging over a range.
#[derive(SimpleObject)]
pub(crate) struct ChargingReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The grid meter's tariffs' currency, as on the sessions.
    pub currency: Option<String>,
    /// Every station together.
    pub total: ChargingTotals,
    /// One entry per station, in the installation's order.
    pub stations: Vec<StationReport>,
    /// One entry per calendar month (UTC) of the range, every station together; a range within
    /// one month has one.
    pub months: Vec<MonthReport>,
}

#[derive(SimpleObject)]
pub(crate) struct StationReport {
    pub charging_station_id: ID,
    pub friendly_name: Option<String>,
    pub totals: ChargingTotals,
}

#[derive(SimpleObject)]
pub(crate) struct MonthReport {
    /// `2026-11`.
    pub month: String,
    pub totals: ChargingTotals,
}

/// Totals per month (by the sessions' start, UTC) for every month `[from, to)` touches.
pub(crate) fn months(from: DateTime<Utc>, to: DateTime<Utc>, all: &[ChargingSession], owner: bool) -> Vec<MonthReport> {
    let key = |t: DateTime<Utc>| format!("{:04}-{:02}", t.year(), t.month());
    let mut keys: Vec<String> = Vec::new();
    let (mut y, mut m) = (from.year(), from.month());
    let last = to - Duration::milliseconds(1);
    while (y, m) <= (last.year(), last.month()) {
        keys.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    keys.into_iter()
        .map(|month| {
            let totals = ChargingTotals::of(all.iter().filter(|s| key(s.start_date) == month), owner);
            MonthReport { month, totals }
        })
        .collect()
}
