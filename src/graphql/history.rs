//! Measures and logs of stations and grid meters: metadata, aggregated values reshaped into points
//! with `byTariff`, log entries and counts. Also what the other query fields share about the
//! upstream: what a field that reads it costs in the complexity limit, and the check of the ids
//! that go into its routes.

use std::sync::Arc;

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Datelike, Timelike, Utc};

use super::access::{require_costs, role, strip_costs};
use super::context::load;
use super::enums::{AggregationOperator, Step, TariffId, TariffType, UserRole};
use super::error::{AppError, AppResult};
use crate::cache::read;
use crate::upstream::history::{self as wire, Device, LogInfo, MeasureInfo, Operator, Range};
use crate::upstream::quirks::parse_time;

/// The complexity of a field that can make an upstream call of its own: a list or a resource read
/// by id, a measure's values, a log's entries or counts. Every other field costs 1. With the
/// schema's limit (`MAX_COMPLEXITY`, 5 000) a query can ask for about 100 upstream reads, and is
/// refused with `QUERY_TOO_COMPLEX` before anything is sent when it asks for more. Each alias
/// counts: two aliases that differ in their arguments are two upstream calls (the per-request
/// loader only merges identical ones). A dashboard costs about 300, a station's history page
/// with a year of daily values and two dozen monthly views about 2 500.
pub(crate) const UPSTREAM_READ: usize = 50;

/// How many measures a device has (energy and cost): the fields under `measures` are counted for
/// each, as each may read the upstream on its own.
pub(crate) const MEASURES_PER_DEVICE: usize = 2;
/// How many logs a station has (SessionStart, SessionEnd, KeySwitch, ChargeMode, Errors,
/// CyberSecurity), for the same reason.
pub(crate) const LOGS_PER_STATION: usize = 6;
/// How many logs a grid meter has (CurrentTariff, TicType).
pub(crate) const LOGS_PER_METER: usize = 2;

/// An id argument that names one upstream resource, as it goes into the route: trimmed, and
/// refused before anything is sent when it cannot name one. An empty id would ask for another
/// route, and so would `.` or `..`, which a URL path drops (`log(id: "..") { entries }` would
/// list every log's entries). `argument` names it for the client (`chargingStationId`).
pub(crate) fn resource_id(id: &str, argument: &str) -> AppResult<String> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AppError::bad_input(format!("{argument} must not be empty")));
    }
    if id == "." || id == ".." {
        return Err(AppError::bad_input(format!("{argument} cannot be '.' or '..'")));
    }
    Ok(id.to_string())
}

/// An installation id argument (`installationId`): an id as [`resource_id`] checks it, and a
/// whole number, the only kind the upstream's installations have.
pub(crate) fn installation_arg(id: &str, argument: &str) -> AppResult<i64> {
    let id = resource_id(id, argument)?;
    id.parse().map_err(|_| AppError::bad_input(format!("{argument} must be a whole number, got '{id}'")))
}

/// The longest range one aggregation or log query may ask for. The upstream's documentation gives
/// no limit: this is witty-bff's own (ten years, the simulator's too), so one answer stays small.
pub(crate) const MAX_RANGE_DAYS: i64 = 3_660;
/// The most points (steps) one aggregation or count may ask for: witty-bff's own, as above.
pub(crate) const MAX_POINTS: i64 = 10_000;

/// Roughly how many steps of `step` a range spans (a month as 28 days, a year as 365, plus one
/// for a step begun): never fewer than the simulator counts, so a range accepted here is not
/// refused there.
fn approx_points(step: Step, span: chrono::TimeDelta) -> i64 {
    let per = match step {
        Step::Hour => 3_600,
        Step::Day => 86_400,
        Step::Week => 7 * 86_400,
        Step::Month => 28 * 86_400,
        Step::Year => 365 * 86_400,
    };
    span.num_seconds().max(0) / per + 1
}

/// Checks and builds a range: `to` after `from`, at most [`MAX_RANGE_DAYS`] apart, and with a
/// `step`, at most [`MAX_POINTS`] steps; checked here, naming the arguments (an upstream refusal
/// would name its own `startDate`, `endDate`), before anything is sent. Dates go upstream to the millisecond, so they are compared as they are sent.
pub(crate) fn range(from: DateTime<Utc>, to: DateTime<Utc>, step: Option<Step>) -> AppResult<Range> {
    // The upstream reads ISO 8601 dates of four-digit years: past them it refuses in its own words
    // (naming its `startDate`), so such a date is refused here, by the argument's name.
    for (name, date) in [("from", from), ("to", to)] {
        if !(1..=9999).contains(&date.year()) {
            return Err(AppError::bad_input(format!(
                "`{name}` ({}) is out of range: dates run from year 1 to year 9999",
                date.to_rfc3339()
            )));
        }
    }
    let (from, to) = (to_millis(from), to_millis(to));
    if to <= from {
        return Err(AppError::bad_input(format!(
            "`to` ({}) must be after `from` ({}); dates count to the millisecond",
            show(to),
            show(from)
        )));
    }
    let span = to - from;
    if span > chrono::TimeDelta::days(MAX_RANGE_DAYS) {
        return Err(AppError::bad_input(format!(
            "`to` ({}) is more than {MAX_RANGE_DAYS} days after `from` ({}): at most {MAX_RANGE_DAYS} days can be \
             asked for at once; narrow the range or split it",
            show(to),
            show(from)
        )));
    }
    if let Some(step) = step {
        let points = approx_points(step, span);
        if points > MAX_POINTS {
            return Err(AppError::bad_input(format!(
                "`step` {} from `from` ({}) to `to` ({}) gives about {points} points: at most {MAX_POINTS} can be \
                 asked for at once; use a larger `step` or narrow the range",
                step.to_upstream().to_uppercase(),
                show(from),
                show(to)
            )));
        }
    }
    Ok(Range { start_date: from, end_date: to, step: step.map(|s| s.to_upstream().to_string()) })
}

/// `t` cut to the millisecond, as it is sent upstream.
fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}

/// A date as the client wrote it (RFC 3339, milliseconds when there are any).
fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn operator(op: AggregationOperator) -> Operator {
    match op {
        AggregationOperator::Sum => Operator::Sum,
        AggregationOperator::Count => Operator::Count,
        AggregationOperator::Average => Operator::Average,
        AggregationOperator::MinMax => Operator::MinMax,
    }
}

/// Every measure of a device, with its metadata (their values refused, saying `withheld`).
pub(crate) async fn measures_of(
    ctx: &Context<'_>,
    device: Device,
    withheld: Option<Arc<str>>,
) -> AppResult<Option<Vec<Measure>>> {
    let (list, _) = load(ctx, read::Measures { device: device.clone() }).await?;
    Ok(Some(list.iter().map(|m| Measure::listed(device.clone(), m.clone()).withheld(withheld.clone())).collect()))
}

/// Every log of a device, with its metadata.
pub(crate) async fn logs_of(ctx: &Context<'_>, device: Device) -> AppResult<Option<Vec<Log>>> {
    let (list, _) = load(ctx, read::Logs { device: device.clone() }).await?;
    Ok(Some(list.iter().map(|l| Log::listed(device.clone(), l.clone())).collect()))
}

/// A measure of a device. Reached by id, its metadata is loaded only if a metadata field is asked
/// for, so `measure(id: "1") { values(…) }` costs one upstream call.
pub(crate) struct Measure {
    device: Device,
    /// As asked for (`measure(id:)` refuses one that cannot name a resource), or as listed by the
    /// upstream; checked again by each field that reads the upstream, so a listed id that cannot
    /// name one fails those fields alone and is never sent.
    id: String,
    info: Option<Arc<MeasureInfo>>,
    /// Why its values are refused without asking: the upstream refuses them too (a grid meter
    /// without TIC consent), and a cached answer from before must not be served.
    withheld: Option<Arc<str>>,
}

impl Measure {
    pub(crate) fn listed(device: Device, info: MeasureInfo) -> Measure {
        Measure { device, id: info.measure_id.as_text(), info: Some(Arc::new(info)), withheld: None }
    }

    pub(crate) fn by_id(device: Device, id: String) -> Measure {
        Measure { device, id, info: None, withheld: None }
    }

    /// Its values are refused, saying `why`.
    pub(crate) fn withheld(self, why: Option<Arc<str>>) -> Measure {
        Measure { withheld: why, ..self }
    }

    fn measure_id(&self) -> AppResult<String> {
        resource_id(&self.id, "measureId")
    }

    async fn info(&self, ctx: &Context<'_>) -> AppResult<Arc<MeasureInfo>> {
        match &self.info {
            Some(info) => Ok(info.clone()),
            None => {
                let r = read::Measure { device: self.device.clone(), measure_id: self.measure_id()? };
                Ok(load(ctx, r).await?.0)
            }
        }
    }
}

#[Object]
impl Measure {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.name.clone())
    }
    #[graphql(name = "type")]
    async fn kind(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.kind.clone())
    }
    async fn unit(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.unit.clone())
    }
    /// How often a value is recorded (`10m`).
    async fn periodicity(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.periodicity.clone())
    }

    /// Values between `from` and `to`, aggregated by `operator` per `step` and tariff type.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn values(
        &self,
        ctx: &Context<'_>,
        operator: AggregationOperator,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Step,
    ) -> AppResult<Option<Vec<MeasurePoint>>> {
        let measure_id = self.measure_id()?;
        let range = range(from, to, Some(step))?;
        require_costs(ctx, self.device.installation_id()).await?;
        if let Some(why) = &self.withheld {
            return Err(AppError::Forbidden(why.to_string()));
        }
        let r =
            read::MeasureValues { device: self.device.clone(), measure_id, operator: self::operator(operator), range };
        let (points, _) = load(ctx, r).await?;
        Ok(Some(points.iter().map(MeasurePoint::from).collect()))
    }
}

/// One aggregated value: a date step and a tariff type.
#[derive(SimpleObject)]
pub(crate) struct MeasurePoint {
    /// Start of the step; `null` if the upstream sent an unreadable date (see `dateRaw`).
    pub date: Option<DateTime<Utc>>,
    pub date_raw: String,
    pub tariff_type: Option<TariffType>,
    pub tariff_type_raw: Option<String>,
    /// The aggregate (`null` for `MIN_MAX`, which fills `valueMin` and `valueMax`).
    pub value: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    /// The value split by the tariffs of the subscription that belong to this tariff type.
    pub by_tariff: Vec<TariffValue>,
}

#[derive(SimpleObject)]
pub(crate) struct TariffValue {
    pub tariff: TariffId,
    pub tariff_raw: String,
    pub value: f64,
}

impl From<&wire::AggregatePoint> for MeasurePoint {
    fn from(p: &wire::AggregatePoint) -> Self {
        MeasurePoint {
            date: parse_time(Some(&p.date)),
            date_raw: p.date.clone(),
            tariff_type: p.tariff_type.as_deref().map(TariffType::from_upstream),
            tariff_type_raw: p.tariff_type.clone(),
            value: p.value,
            value_min: p.value_min,
            value_max: p.value_max,
            by_tariff: p
                .by_tariff()
                .into_iter()
                .map(|(raw, value)| TariffValue { tariff: TariffId::from_upstream(&raw), tariff_raw: raw, value })
                .collect(),
        }
    }
}

/// A log of a device. Reached by id, its metadata is loaded only if asked for.
pub(crate) struct Log {
    device: Device,
    /// As asked for; checked by each field that reads the upstream (see [`Measure`]).
    id: String,
    info: Option<Arc<LogInfo>>,
}

impl Log {
    pub(crate) fn listed(device: Device, info: LogInfo) -> Log {
        Log { device, id: info.log_id.as_text(), info: Some(Arc::new(info)) }
    }

    pub(crate) fn by_id(device: Device, id: String) -> Log {
        Log { device, id, info: None }
    }

    fn log_id(&self) -> AppResult<String> {
        resource_id(&self.id, "logId")
    }

    async fn info(&self, ctx: &Context<'_>) -> AppResult<Arc<LogInfo>> {
        match &self.info {
            Some(info) => Ok(info.clone()),
            None => {
                let r = read::Log { device: self.device.clone(), log_id: self.log_id()? };
                Ok(load(ctx, r).await?.0)
            }
        }
    }
}

#[Object]
impl Log {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.name.clone())
    }
    async fn periodicity(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        Ok(self.info(ctx).await?.periodicity.clone())
    }
    /// The log's entries between `from` and `to`.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn entries(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Option<Vec<LogEntry>>> {
        let log_id = self.log_id()?;
        Ok(Some(entries(ctx, self.device.clone(), Some(log_id), range(from, to, None)?).await?))
    }
    /// How many entries per `step` (steps with none are left out).
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn counts(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Step,
    ) -> AppResult<Option<Vec<LogCount>>> {
        let r = read::LogCounts {
            device: self.device.clone(),
            log_id: self.log_id()?,
            range: range(from, to, Some(step))?,
        };
        let (counts, _) = load(ctx, r).await?;
        Ok(Some(
            counts
                .iter()
                .map(|c| LogCount {
                    date: parse_time(Some(&c.date)),
                    date_raw: c.date.clone(),
                    count: c.value,
                    log_name: c.log_name.clone(),
                })
                .collect(),
        ))
    }
}

/// Log entries; for an installer without a session's energy and cost.
pub(crate) async fn entries(
    ctx: &Context<'_>,
    device: Device,
    log_id: Option<String>,
    range: Range,
) -> AppResult<Vec<LogEntry>> {
    let owner = role(ctx, device.installation_id()).await? == UserRole::Owner;
    let (list, _) = load(ctx, read::LogEntries { device, log_id, range }).await?;
    Ok(list
        .iter()
        .map(|e| {
            let mut value = e.value.clone();
            if !owner {
                strip_costs(&mut value);
            }
            LogEntry {
                date: parse_time(Some(&e.date)),
                date_raw: e.date.clone(),
                log_name: e.log_name.clone(),
                value: Json(value),
            }
        })
        .collect())
}

/// One log entry; `value`'s shape depends on the log (see the API document).
#[derive(SimpleObject)]
pub(crate) struct LogEntry {
    pub date: Option<DateTime<Utc>>,
    pub date_raw: String,
    pub log_name: Option<String>,
    pub value: Json<serde_json::Value>,
}

#[derive(SimpleObject)]
pub(crate) struct LogCount {
    pub date: Option<DateTime<Utc>>,
    pub date_raw: String,
    pub count: f64,
    pub log_name: Option<String>,
}
