//! Procedural history of the simulated devices: tariff schedules, charging sessions, 10-minute
//! energy samples, their aggregation by operator and step, and the logs that go with them.
//!
//! Nothing here is stored: every value is a pure function of a device's [`Profile`], the live
//! sessions recorded since the simulator started, and the tariff prices. So any date range can be
//! asked for, the same question always gets the same answer, and the logs agree with the measures
//! because both are read off the same sessions.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use serde_json::{Value, json};

/// Seconds in one sample slot (the measures' `10m` periodicity).
pub const SLOT_SECS: i64 = 600;
/// The most points (buckets) one aggregation may return.
pub const MAX_POINTS: i64 = 10_000;
/// The longest range one aggregation or log query may span.
pub const MAX_RANGE_DAYS: i64 = 3_660;

/// A grid subscription, which fixes the tariffs that exist and when each one applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    Base,
    Hchp,
    Ejp,
    Tempo,
    Standard,
}

impl Subscription {
    pub fn code(self) -> &'static str {
        match self {
            Subscription::Base => "BASE",
            Subscription::Hchp => "HCHP",
            Subscription::Ejp => "EJP",
            Subscription::Tempo => "TEMPO",
            Subscription::Standard => "STANDARD",
        }
    }

    /// The tariff ids this subscription prices, in the document's order.
    pub fn tariff_ids(self) -> Vec<TariffId> {
        use TariffId::*;
        match self {
            Subscription::Base => vec![Th],
            Subscription::Hchp => vec![Hc, Hp],
            Subscription::Ejp => vec![Hn, Pm],
            Subscription::Tempo => vec![Hcjb, Hpjb, Hcjw, Hpjw, Hcjr, Hpjr],
            Subscription::Standard => (1..=10).map(Tariff).collect(),
        }
    }
}

/// One priced tariff (`th`, `hc`, …, `tariff10`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TariffId {
    Th,
    Hc,
    Hp,
    Hn,
    Pm,
    Hcjb,
    Hpjb,
    Hcjw,
    Hpjw,
    Hcjr,
    Hpjr,
    /// `tariff1` … `tariff10` of the STANDARD subscription.
    Tariff(u8),
}

impl TariffId {
    pub fn code(self) -> String {
        match self {
            TariffId::Th => "th".into(),
            TariffId::Hc => "hc".into(),
            TariffId::Hp => "hp".into(),
            TariffId::Hn => "hn".into(),
            TariffId::Pm => "pm".into(),
            TariffId::Hcjb => "hcjb".into(),
            TariffId::Hpjb => "hpjb".into(),
            TariffId::Hcjw => "hcjw".into(),
            TariffId::Hpjw => "hpjw".into(),
            TariffId::Hcjr => "hcjr".into(),
            TariffId::Hpjr => "hpjr".into(),
            TariffId::Tariff(n) => format!("tariff{n}"),
        }
    }

    pub fn parse(code: &str) -> Option<TariffId> {
        let code = code.to_ascii_lowercase();
        Some(match code.as_str() {
            "th" => TariffId::Th,
            "hc" => TariffId::Hc,
            "hp" => TariffId::Hp,
            "hn" => TariffId::Hn,
            "pm" => TariffId::Pm,
            "hcjb" => TariffId::Hcjb,
            "hpjb" => TariffId::Hpjb,
            "hcjw" => TariffId::Hcjw,
            "hpjw" => TariffId::Hpjw,
            "hcjr" => TariffId::Hcjr,
            "hpjr" => TariffId::Hpjr,
            other => {
                let n: u8 = other.strip_prefix("tariff")?.parse().ok()?;
                if !(1..=10).contains(&n) || other != format!("tariff{n}") {
                    return None;
                }
                TariffId::Tariff(n)
            }
        })
    }

    /// The per-tariff field of an aggregation row: `valueTh`, `valueHcjb`, `valueTariff3`.
    pub fn value_field(self) -> String {
        let code = self.code();
        let mut chars = code.chars();
        let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or('X');
        format!("value{first}{}", chars.as_str())
    }
}

/// Low (`hc`) or high (`hp`) price period: the `tariffType` of aggregation rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TariffType {
    Hc,
    Hp,
}

impl TariffType {
    pub fn code(self) -> &'static str {
        match self {
            TariffType::Hc => "hc",
            TariffType::Hp => "hp",
        }
    }

    pub fn parse(code: &str) -> Option<TariffType> {
        match code {
            "hc" => Some(TariffType::Hc),
            "hp" => Some(TariffType::Hp),
            _ => None,
        }
    }
}

/// Aggregation operators of the measures' `operators/{op}` routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Sum,
    Count,
    Average,
    MinMax,
}

/// Aggregation steps. The document shows `hour` and `day`; `week`, `month` and `year` are
/// accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Step {
    pub const ALLOWED: &'static str = "hour, day, week, month, year";

    pub fn parse(code: &str) -> Option<Step> {
        match code.to_ascii_lowercase().as_str() {
            "hour" => Some(Step::Hour),
            "day" => Some(Step::Day),
            "week" => Some(Step::Week),
            "month" => Some(Step::Month),
            "year" => Some(Step::Year),
            _ => None,
        }
    }

    /// The start of the step bucket holding `t` (UTC).
    pub fn bucket(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let date = t.date_naive();
        let day_start = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        match self {
            Step::Hour => day_start(date) + Duration::hours(i64::from(t.hour())),
            Step::Day => day_start(date),
            Step::Week => day_start(date - Duration::days(i64::from(date.weekday().num_days_from_monday()))),
            Step::Month => day_start(date.with_day(1).unwrap_or(date)),
            Step::Year => day_start(NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date)),
        }
    }

    /// Where the bucket starting at `bucket` ends (the next one starts).
    pub fn next(self, bucket: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Step::Hour => bucket + Duration::hours(1),
            Step::Day => bucket + Duration::days(1),
            Step::Week => bucket + Duration::days(7),
            Step::Month => bucket.checked_add_months(Months::new(1)).unwrap_or(DateTime::<Utc>::MAX_UTC),
            Step::Year => bucket.checked_add_months(Months::new(12)).unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// A rough count of buckets in a range, to refuse ranges that would return too many points.
    pub fn approx_buckets(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let secs = (to - from).num_seconds().max(0);
        let per = match self {
            Step::Hour => 3_600,
            Step::Day => 86_400,
            Step::Week => 7 * 86_400,
            Step::Month => 28 * 86_400,
            Step::Year => 365 * 86_400,
        };
        secs / per + 1
    }
}

/// Everything a device's procedural history depends on.
#[derive(Clone, Debug)]
pub struct Profile {
    pub seed: u64,
    pub subscription: Subscription,
    /// STANDARD only: whether `tariff1` … `tariff10` are low or high price (the station's
    /// `tariff1` … `tariff10` properties).
    pub standard_types: [TariffType; 10],
    /// Charging power of the station, in watts.
    pub power_w: f64,
    /// Nothing is recorded before the device was installed.
    pub installed_at: DateTime<Utc>,
    /// Procedural sessions end here; later ones come only from the live session record.
    pub history_until: DateTime<Utc>,
}

/// A charging session: from plug to unplug, with the intervals in which the car actually charged.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub start: DateTime<Utc>,
    /// `None` while the car is still plugged.
    pub end: Option<DateTime<Utc>>,
    /// Charging intervals; an open one (`None` end) is charging now.
    pub charging: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub power_w: f64,
}

impl Session {
    pub fn is_charging(&self) -> bool {
        self.charging.last().is_some_and(|(_, end)| end.is_none())
    }

    /// Energy in watt-hours charged between `from` and `to`, counting open intervals up to `now`.
    pub fn energy_wh_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
        self.charging.iter().map(|&(a, b)| interval_wh(a, b.unwrap_or(now), from, to, self.power_w)).sum()
    }

    pub fn charging_secs(&self, now: DateTime<Utc>) -> i64 {
        self.charging.iter().map(|&(a, b)| (b.unwrap_or(now) - a).num_seconds().max(0)).sum()
    }
}

/// Watt-hours charged at `power_w` over the part of `[a, b)` within `[from, to)`.
fn interval_wh(a: DateTime<Utc>, b: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>, power_w: f64) -> f64 {
    let b = b.min(to);
    let a = a.max(from);
    if b > a { (b - a).num_milliseconds() as f64 / 3_600_000.0 * power_w } else { 0.0 }
}

/// A price history for each tariff: `(beginDate, price per kWh)`, any order.
pub type PriceBook = BTreeMap<TariffId, Vec<(DateTime<Utc>, f64)>>;

/// The price of `tariff` at `t`: the latest value that began at or before `t`, else the earliest.
pub fn price_at(prices: &PriceBook, tariff: TariffId, t: DateTime<Utc>) -> f64 {
    let Some(values) = prices.get(&tariff) else { return 0.0 };
    let mut best: Option<(DateTime<Utc>, f64)> = None;
    let mut earliest: Option<(DateTime<Utc>, f64)> = None;
    for &(begin, value) in values {
        if begin <= t && best.is_none_or(|(b, _)| begin >= b) {
            best = Some((begin, value));
        }
        if earliest.is_none_or(|(b, _)| begin < b) {
            earliest = Some((begin, value));
        }
    }
    best.or(earliest).map(|(_, v)| v).unwrap_or(0.0)
}

/// A stable 64-bit mix of some numbers (SplitMix64's finaliser over each part).
pub fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

fn day_number(date: NaiveDate) -> u64 {
    date.num_days_from_ce() as u64
}

fn at(date: NaiveDate, minutes: i64) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()) + Duration::minutes(minutes)
}

/// Tempo day colours are national, the same for every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TempoColour {
    Blue,
    White,
    Red,
}

/// The parts of the tariff schedule that depend on the date only.
#[derive(Clone, Copy, Debug)]
struct DaySchedule {
    ejp_peak: bool,
    colour: TempoColour,
    weekend: bool,
}

fn winter(date: NaiveDate) -> bool {
    matches!(date.month(), 11 | 12 | 1 | 2 | 3)
}

fn tempo_colour(date: NaiveDate) -> TempoColour {
    let roll = mix(&[0x7E4D0, day_number(date)]) % 100;
    let weekday = !matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
    if winter(date) && weekday && roll < 15 {
        TempoColour::Red
    } else if date.weekday() != Weekday::Sun && roll >= 85 {
        TempoColour::White
    } else {
        TempoColour::Blue
    }
}

fn ejp_peak_day(date: NaiveDate) -> bool {
    winter(date) && mix(&[0xE1B, day_number(date)]) % 100 < 15
}

impl Profile {
    /// The tariff in force at `t`.
    pub fn tariff_at(&self, t: DateTime<Utc>) -> TariffId {
        self.tariff_in(self.day_schedule(t.date_naive()), t.hour())
    }

    /// What a date adds to the schedule, worked out once a day by the aggregation rather than
    /// once an hour (the Tempo and EJP draws hash the date).
    fn day_schedule(&self, date: NaiveDate) -> DaySchedule {
        DaySchedule {
            ejp_peak: self.subscription == Subscription::Ejp && ejp_peak_day(date),
            colour: if self.subscription == Subscription::Tempo { tempo_colour(date) } else { TempoColour::Blue },
            weekend: matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
        }
    }

    /// The tariff in force at `hour` (UTC) of a day with schedule `day`.
    fn tariff_in(&self, day: DaySchedule, hour: u32) -> TariffId {
        let off_peak = !(6..22).contains(&hour);
        match self.subscription {
            Subscription::Base => TariffId::Th,
            Subscription::Hchp => {
                if off_peak {
                    TariffId::Hc
                } else {
                    TariffId::Hp
                }
            }
            Subscription::Ejp => {
                if day.ejp_peak && hour >= 7 {
                    TariffId::Pm
                } else {
                    TariffId::Hn
                }
            }
            Subscription::Tempo => match (day.colour, off_peak) {
                (TempoColour::Blue, true) => TariffId::Hcjb,
                (TempoColour::Blue, false) => TariffId::Hpjb,
                (TempoColour::White, true) => TariffId::Hcjw,
                (TempoColour::White, false) => TariffId::Hpjw,
                (TempoColour::Red, true) => TariffId::Hcjr,
                (TempoColour::Red, false) => TariffId::Hpjr,
            },
            Subscription::Standard => TariffId::Tariff(match (day.weekend, hour) {
                (true, h) if off_peak || h < 8 => 10,
                (true, _) => 9,
                (false, 0..=5) => 1,
                (false, 6..=7) => 2,
                (false, 8..=11) => 3,
                (false, 12..=13) => 4,
                (false, 14..=16) => 5,
                (false, 17..=19) => 6,
                (false, 20..=21) => 7,
                (false, _) => 8,
            }),
        }
    }

    /// Whether a tariff is a low or a high price period. BASE's single tariff counts as high.
    pub fn tariff_type(&self, tariff: TariffId) -> TariffType {
        match tariff {
            TariffId::Hc | TariffId::Hn | TariffId::Hcjb | TariffId::Hcjw | TariffId::Hcjr => TariffType::Hc,
            TariffId::Th | TariffId::Hp | TariffId::Pm | TariffId::Hpjb | TariffId::Hpjw | TariffId::Hpjr => {
                TariffType::Hp
            }
            TariffId::Tariff(n) => self.standard_types[usize::from(n.clamp(1, 10)) - 1],
        }
    }

    /// The procedural session of one day, if the car came home that day and it ended before
    /// `history_until`.
    fn procedural_session(&self, date: NaiveDate) -> Option<Session> {
        let h = mix(&[self.seed, day_number(date)]);
        if h % 100 >= 55 {
            return None;
        }
        let start = at(date, 16 * 60 + ((h >> 8) % 36) as i64 * 10);
        let minutes = 60 + ((h >> 16) % 30) as i64 * 10;
        let charge_minutes = (minutes * (50 + ((h >> 24) % 50) as i64) / 100 / 10 * 10).max(20);
        let end = start + Duration::minutes(minutes);
        if start < self.installed_at || end > self.history_until {
            return None;
        }
        Some(Session {
            start,
            end: Some(end),
            charging: vec![(start, Some(start + Duration::minutes(charge_minutes)))],
            power_w: self.power_w,
        })
    }

    /// Every session (procedural and live) that overlaps `[from, to)`, by start.
    pub fn sessions(&self, live: &[Session], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Session> {
        let mut out = Vec::new();
        let first = (from - Duration::days(1)).date_naive();
        let last = to.min(self.history_until).date_naive();
        let mut date = first;
        while date <= last {
            if let Some(s) = self.procedural_session(date)
                && s.end.is_some_and(|e| e > from)
                && s.start < to
            {
                out.push(s);
            }
            date = date.succ_opt().unwrap_or(date);
            if date == NaiveDate::MAX {
                break;
            }
        }
        out.extend(live.iter().filter(|s| s.start < to && s.end.is_none_or(|e| e > from)).cloned());
        out.sort_by_key(|s| s.start);
        out
    }

    /// The last session that ended at or before `t`.
    pub fn last_session_before(&self, live: &[Session], t: DateTime<Utc>) -> Option<Session> {
        if let Some(s) = live.iter().rev().find(|s| s.end.is_some_and(|e| e <= t)) {
            return Some(s.clone());
        }
        let mut date = t.date_naive();
        for _ in 0..60 {
            if let Some(s) = self.procedural_session(date)
                && s.end.is_some_and(|e| e <= t)
            {
                return Some(s);
            }
            date = date.pred_opt()?;
        }
        None
    }
}

/// What a series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// Energy charged by a station, kWh per slot.
    StationEnergy,
    /// Cost of the station's energy at the tariff in force, per slot.
    StationCost,
    /// Whole-house energy read by the grid meter (it includes the station's), kWh per slot.
    HouseEnergy,
    /// Cost of the house's energy.
    HouseCost,
}

/// One 10-minute sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub start: DateTime<Utc>,
    pub tariff: TariffId,
    pub value: f64,
}

/// Base load of the house in watt-hours for one slot: a deterministic, daily-shaped noise.
fn house_base_wh(seed: u64, slot: i64) -> f64 {
    let h = mix(&[seed, 0xB45E, slot as u64]);
    let minute_of_day = slot.rem_euclid(144) * 10;
    let evening = (18 * 60..23 * 60).contains(&minute_of_day);
    let morning = (6 * 60..9 * 60).contains(&minute_of_day);
    let base = 40.0 + (h % 80) as f64;
    let bump = if evening {
        120.0
    } else if morning {
        60.0
    } else {
        0.0
    };
    (base + bump).round()
}

/// The recorded samples of `[from, to)`: from the device's installation up to `now`.
pub fn samples(
    profile: &Profile,
    live: &[Session],
    prices: &PriceBook,
    quantity: Quantity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Sample> {
    let start = from.max(profile.installed_at);
    let end = to.min(now);
    if end <= start {
        return Vec::new();
    }
    let first_slot = (start.timestamp() + SLOT_SECS - 1).div_euclid(SLOT_SECS);
    let end_slot = (end.timestamp() + SLOT_SECS - 1).div_euclid(SLOT_SECS);
    let count = usize::try_from(end_slot - first_slot).unwrap_or(0);
    // Energy of each slot in Wh, rounded per slot so that sums over any grouping agree exactly.
    let mut wh = vec![0.0f64; count];
    for session in profile.sessions(live, start, end) {
        for &(a, b) in &session.charging {
            let b = b.unwrap_or(now);
            let mut slot = a.timestamp().div_euclid(SLOT_SECS).max(first_slot);
            while slot < end_slot && slot * SLOT_SECS < b.timestamp() {
                let slot_start = Utc.timestamp_opt(slot * SLOT_SECS, 0).single().unwrap_or(start);
                let slot_end = slot_start + Duration::seconds(SLOT_SECS);
                let e = Session { charging: vec![(a, Some(b))], ..session.clone() }
                    .energy_wh_between(slot_start, slot_end, now);
                wh[usize::try_from(slot - first_slot).unwrap_or(0)] += e;
                slot += 1;
            }
        }
    }
    let house = matches!(quantity, Quantity::HouseEnergy | Quantity::HouseCost);
    // Tariffs change on the hour: work each out once per hour, not once per slot.
    let mut hour_tariff: Option<(i64, TariffId)> = None;
    (0..count)
        .map(|i| {
            let slot = first_slot + i as i64;
            let t = Utc.timestamp_opt(slot * SLOT_SECS, 0).single().unwrap_or(start);
            let hour = (slot * SLOT_SECS).div_euclid(3_600);
            let tariff = match hour_tariff {
                Some((h, tariff)) if h == hour => tariff,
                _ => {
                    let tariff = profile.tariff_at(t);
                    hour_tariff = Some((hour, tariff));
                    tariff
                }
            };
            let mut energy_wh = wh[i].round();
            if house {
                energy_wh += house_base_wh(profile.seed, slot);
            }
            let kwh = energy_wh / 1000.0;
            let value = match quantity {
                Quantity::StationEnergy | Quantity::HouseEnergy => kwh,
                Quantity::StationCost | Quantity::HouseCost => kwh * price_at(prices, tariff, t),
            };
            Sample { start: t, tariff, value }
        })
        .collect()
}

/// One row of an aggregation result: one bucket and tariff type.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub date: DateTime<Utc>,
    pub tariff_type: TariffType,
    pub value: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub by_tariff: Vec<(TariffId, f64)>,
}

/// Six decimals: exact for energies (whole watt-hours) and far below a cent for costs.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl Row {
    /// The document's JSON shape: `date`, `tariffType`, `value` (`valueMin`/`valueMax` for
    /// min-max) and one `value<Tariff>` field per tariff of the subscription with this type.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("date".into(), json!(self.date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()));
        map.insert("tariffType".into(), json!(self.tariff_type.code()));
        for (field, v) in [("value", self.value), ("valueMin", self.value_min), ("valueMax", self.value_max)] {
            if let Some(v) = v {
                map.insert(field.into(), json!(round6(v)));
            }
        }
        for (tariff, v) in &self.by_tariff {
            map.insert(tariff.value_field(), json!(round6(*v)));
        }
        Value::Object(map)
    }
}

/// Writes the bytes of [`Row::to_json`] without building a map per row: its map is a
/// `BTreeMap`, which writes keys in byte order, so the fields are sorted the same way here.
impl serde::Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut values: Vec<(String, f64)> = Vec::with_capacity(3 + self.by_tariff.len());
        for (field, v) in [("value", self.value), ("valueMin", self.value_min), ("valueMax", self.value_max)] {
            if let Some(v) = v {
                values.push((field.to_string(), round6(v)));
            }
        }
        values.extend(self.by_tariff.iter().map(|(tariff, v)| (tariff.value_field(), round6(*v))));
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = serializer.serialize_map(Some(2 + values.len()))?;
        // "date" < "tariffType" < "value…".
        map.serialize_entry("date", &self.date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())?;
        map.serialize_entry("tariffType", self.tariff_type.code())?;
        for (field, v) in &values {
            // `json!` turns a non-finite float into null, as serde_json writes one.
            map.serialize_entry(field, v)?;
        }
        map.end()
    }
}

#[derive(Default)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Count and sum per tariff (a handful at most).
    per_tariff: Vec<(TariffId, u64, f64)>,
}

impl Acc {
    fn add(&mut self, tariff: TariffId, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        match self.per_tariff.iter_mut().find(|(t, _, _)| *t == tariff) {
            Some((_, count, sum)) => {
                *count += 1;
                *sum += value;
            }
            None => self.per_tariff.push((tariff, 1, value)),
        }
    }

    /// Adds `value` `n` times. For a zero `v`, `(x + v) + v == x + v` and min and max are
    /// idempotent, so a run of uncharged slots costs one add and the same floats come out.
    fn add_run(&mut self, tariff: TariffId, value: f64, n: u64) {
        if value != 0.0 || n == 0 {
            (0..n).for_each(|_| self.add(tariff, value));
            return;
        }
        self.add(tariff, value);
        self.count += n - 1;
        if let Some((_, count, _)) = self.per_tariff.iter_mut().find(|(t, _, _)| *t == tariff) {
            *count += n - 1;
        }
    }

    fn row(&self, profile: &Profile, date: DateTime<Utc>, kind: TariffType, op: Operator) -> Row {
        let by_tariff = || {
            profile
                .subscription
                .tariff_ids()
                .iter()
                .filter(|t| profile.tariff_type(**t) == kind)
                .map(|t| {
                    let (count, sum) =
                        self.per_tariff.iter().find(|(x, _, _)| x == t).map(|(_, c, s)| (*c, *s)).unwrap_or((0, 0.0));
                    let v = match op {
                        Operator::Sum => sum,
                        Operator::Count => count as f64,
                        Operator::Average if count > 0 => sum / count as f64,
                        _ => 0.0,
                    };
                    (*t, v)
                })
                .collect()
        };
        let mut row = Row { date, tariff_type: kind, value: None, value_min: None, value_max: None, by_tariff: vec![] };
        match op {
            Operator::Sum => {
                row.value = Some(self.sum);
                row.by_tariff = by_tariff();
            }
            Operator::Count => {
                row.value = Some(self.count as f64);
                row.by_tariff = by_tariff();
            }
            Operator::Average => {
                row.value = Some(self.sum / self.count as f64);
                row.by_tariff = by_tariff();
            }
            Operator::MinMax => {
                row.value_min = Some(self.min);
                row.value_max = Some(self.max);
            }
        }
        row
    }
}

/// Aggregates samples by step bucket and tariff type, in date order (hc before hp in a bucket).
/// Samples come in time order (as [`samples`] makes them), so one bucket is open at a time.
pub fn aggregate(profile: &Profile, samples: &[Sample], op: Operator, step: Step) -> Vec<Row> {
    let mut rows = Vec::new();
    // The open bucket, where the next one starts, and its accumulators by tariff type.
    let mut open: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    let mut accs: Vec<(TariffType, Acc)> = Vec::new();
    let close = |rows: &mut Vec<Row>, date: DateTime<Utc>, accs: &mut Vec<(TariffType, Acc)>| {
        accs.sort_by_key(|(kind, _)| *kind);
        rows.extend(accs.drain(..).map(|(kind, acc)| acc.row(profile, date, kind, op)));
    };
    for s in samples {
        let inside = open.is_some_and(|(from, next)| s.start >= from && s.start < next);
        if !inside {
            if let Some((from, _)) = open {
                close(&mut rows, from, &mut accs);
            }
            let from = step.bucket(s.start);
            open = Some((from, step.next(from)));
        }
        let kind = profile.tariff_type(s.tariff);
        let at = match accs.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                accs.push((kind, Acc::default()));
                accs.len() - 1
            }
        };
        accs[at].1.add(s.tariff, s.value);
    }
    if let Some((from, _)) = open {
        close(&mut rows, from, &mut accs);
    }
    rows
}

/// A device's series, aggregated straight from its sessions: the same rows as [`aggregate`] over
/// [`samples`], without a [`Sample`] (or a date) per 10-minute slot, so a one-year daily `sum`
/// stays cheap (issue 19).
pub struct Series<'a> {
    pub profile: &'a Profile,
    pub live: &'a [Session],
    pub prices: &'a PriceBook,
    pub quantity: Quantity,
}

impl Series<'_> {
    /// The rows of `[from, to)` up to `now`, equal to `aggregate(samples(..), op, step)`.
    ///
    /// Step buckets and tariffs change on the hour, so each hour is one bucket and one tariff.
    /// Within it, a run of slots with no charge (and no house load) all have the same value,
    /// which [`Acc::add_run`] adds at once.
    pub fn aggregate(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        op: Operator,
        step: Step,
    ) -> Vec<Row> {
        let profile = self.profile;
        let start = from.max(profile.installed_at);
        let end = to.min(now);
        if end <= start {
            return Vec::new();
        }
        let first_slot = (start.timestamp() + SLOT_SECS - 1).div_euclid(SLOT_SECS);
        let end_slot = (end.timestamp() + SLOT_SECS - 1).div_euclid(SLOT_SECS);
        let energies = slot_energies(profile, self.live, start, end, now, (first_slot, end_slot));
        let mut next_energy = energies.iter().peekable();
        let house = matches!(self.quantity, Quantity::HouseEnergy | Quantity::HouseCost);
        let cost = matches!(self.quantity, Quantity::StationCost | Quantity::HouseCost);
        let mut buckets = Buckets { profile, op, step, rows: Vec::new(), open: None, accs: [None, None] };
        let mut price = PriceCursor { prices: self.prices, tariff: None, price: 0.0, until_slot: i64::MIN };
        let mut day: Option<(i64, DaySchedule)> = None;
        let mut slot = first_slot;
        while slot < end_slot {
            let hour = (slot * SLOT_SECS).div_euclid(3_600);
            let hour_end = ((hour + 1) * 3_600 / SLOT_SECS).min(end_slot);
            let day_number = hour.div_euclid(24);
            let schedule = match day {
                Some((d, schedule)) if d == day_number => schedule,
                _ => {
                    let schedule = profile.day_schedule(slot_time(slot).date_naive());
                    day = Some((day_number, schedule));
                    schedule
                }
            };
            let tariff = profile.tariff_in(schedule, hour.rem_euclid(24) as u32);
            let acc = buckets.acc_for(slot, profile.tariff_type(tariff));
            while slot < hour_end {
                let charged = next_energy.next_if(|(s, _)| *s == slot).map(|(_, wh)| *wh);
                // A run of uncharged slots ends at the next charged slot, the hour, or a price change.
                let mut run_end = if charged.is_some() || house { slot + 1 } else { hour_end };
                run_end = run_end.min(next_energy.peek().map_or(i64::MAX, |(s, _)| *s));
                let mut energy_wh = charged.unwrap_or(0.0).round();
                if house {
                    energy_wh += house_base_wh(profile.seed, slot);
                }
                let kwh = energy_wh / 1000.0;
                let value = if cost {
                    let (p, until) = price.at(tariff, slot);
                    run_end = run_end.min(until);
                    kwh * p
                } else {
                    kwh
                };
                let run_end = run_end.max(slot + 1);
                acc.add_run(tariff, value, (run_end - slot) as u64);
                slot = run_end;
            }
        }
        buckets.finish()
    }
}

fn slot_time(slot: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(slot * SLOT_SECS, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The charged watt-hours of each slot of `slots` (first, end) that has a charge, by slot. Each
/// slot's energy is summed from 0 in session order, as [`samples`] does, so floats agree exactly.
fn slot_energies(
    profile: &Profile,
    live: &[Session],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    (first_slot, end_slot): (i64, i64),
) -> Vec<(i64, f64)> {
    let mut parts = Vec::new();
    for session in profile.sessions(live, start, end) {
        for &(a, b) in &session.charging {
            let b = b.unwrap_or(now);
            let mut slot = a.timestamp().div_euclid(SLOT_SECS).max(first_slot);
            while slot < end_slot && slot * SLOT_SECS < b.timestamp() {
                let slot_start = Utc.timestamp_opt(slot * SLOT_SECS, 0).single().unwrap_or(start);
                let slot_end = slot_start + Duration::seconds(SLOT_SECS);
                parts.push((slot, interval_wh(a, b, slot_start, slot_end, session.power_w)));
                slot += 1;
            }
        }
    }
    // Stable: the parts of one slot keep their order.
    parts.sort_by_key(|(slot, _)| *slot);
    let mut out: Vec<(i64, f64)> = Vec::new();
    for (slot, e) in parts {
        match out.last_mut() {
            Some((s, wh)) if *s == slot => *wh += e,
            _ => {
                let mut wh = 0.0;
                wh += e;
                out.push((slot, wh));
            }
        }
    }
    out
}

/// The price of one tariff from a slot on, and the first slot where it may change.
struct PriceCursor<'a> {
    prices: &'a PriceBook,
    tariff: Option<TariffId>,
    price: f64,
    until_slot: i64,
}

impl PriceCursor<'_> {
    /// [`price_at`] the slot's start, and the first slot at or after the next price's begin.
    fn at(&mut self, tariff: TariffId, slot: i64) -> (f64, i64) {
        if self.tariff != Some(tariff) || slot >= self.until_slot {
            let t = slot_time(slot);
            self.tariff = Some(tariff);
            self.price = price_at(self.prices, tariff, t);
            let next = self.prices.get(&tariff).into_iter().flatten().map(|(begin, _)| *begin).filter(|b| *b > t).min();
            self.until_slot = next.map_or(i64::MAX, |b| {
                let secs = b.timestamp() + i64::from(b.timestamp_subsec_nanos() > 0);
                (secs + SLOT_SECS - 1).div_euclid(SLOT_SECS)
            });
        }
        (self.price, self.until_slot)
    }
}

/// The open step bucket and its accumulators by tariff type (`hc`, `hp`), and the rows so far.
struct Buckets<'a> {
    profile: &'a Profile,
    op: Operator,
    step: Step,
    rows: Vec<Row>,
    /// The open bucket's start and the timestamp where the next one starts.
    open: Option<(DateTime<Utc>, i64)>,
    accs: [Option<Acc>; 2],
}

impl Buckets<'_> {
    /// The accumulator for `kind` in the bucket holding `slot`, closing the open one if it ended.
    fn acc_for(&mut self, slot: i64, kind: TariffType) -> &mut Acc {
        let ts = slot * SLOT_SECS;
        if self.open.is_none_or(|(_, next)| ts >= next) {
            self.close();
            let from = self.step.bucket(slot_time(slot));
            self.open = Some((from, self.step.next(from).timestamp()));
        }
        self.accs[kind as usize].get_or_insert_with(Acc::default)
    }

    fn close(&mut self) {
        let Some((date, _)) = self.open else { return };
        for (acc, kind) in self.accs.iter_mut().zip([TariffType::Hc, TariffType::Hp]) {
            if let Some(acc) = acc.take() {
                self.rows.push(acc.row(self.profile, date, kind, self.op));
            }
        }
    }

    fn finish(mut self) -> Vec<Row> {
        self.close();
        self.rows
    }
}

/// One log entry, in the document's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub date: DateTime<Utc>,
    pub log_name: &'static str,
    pub value: Value,
}

impl LogEntry {
    pub fn to_json(&self) -> Value {
        json!({
            "date": self.date.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "value": self.value,
            "logName": self.log_name,
        })
    }
}

/// The station logs: id, name. Their periodicity is `Immediate`.
pub const STATION_LOGS: [(&str, &str); 6] = [
    ("1", "SessionStart"),
    ("2", "SessionEnd"),
    ("3", "KeySwitch"),
    ("4", "ChargeMode"),
    ("5", "Errors"),
    ("6", "CyberSecurity"),
];

/// The grid meter logs: id, name.
pub const METER_LOGS: [(&str, &str); 2] = [("1", "CurrentTariff"), ("2", "TicType")];

/// `"hh:mm"` for a number of seconds, as the station model writes durations.
pub fn hh_mm(secs: i64) -> String {
    let minutes = secs.max(0) / 60;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The SessionStart and SessionEnd entries of a session (SessionEnd only once it ended).
pub fn session_logs(profile: &Profile, prices: &PriceBook, session: &Session, now: DateTime<Utc>) -> Vec<LogEntry> {
    let mut out = vec![LogEntry {
        date: session.start,
        log_name: "SessionStart",
        value: json!({"evcsSocket": "m3", "evcsCableValue": 32}),
    }];
    if let Some(end) = session.end {
        let (energy, cost) = session_energy_cost(profile, prices, session, now);
        out.push(LogEntry {
            date: end,
            log_name: "SessionEnd",
            value: json!({
                "chargingDuration": session.charging_secs(now),
                "sessionDuration": (end - session.start).num_seconds(),
                "cost": cost,
                "energy": energy,
            }),
        });
    }
    out
}

/// Energy (kWh) and cost of a session, read off the same samples the measures return, so that the
/// logs and the measures always agree.
pub fn session_energy_cost(profile: &Profile, prices: &PriceBook, session: &Session, now: DateTime<Utc>) -> (f64, f64) {
    let live = [session.clone()];
    let only = Profile { history_until: profile.installed_at, ..profile.clone() };
    let end = session.end.unwrap_or(now);
    let from = Utc
        .timestamp_opt(session.start.timestamp().div_euclid(SLOT_SECS) * SLOT_SECS, 0)
        .single()
        .unwrap_or(session.start);
    let energy = samples(&only, &live, prices, Quantity::StationEnergy, from, end + Duration::seconds(SLOT_SECS), now);
    let cost = samples(&only, &live, prices, Quantity::StationCost, from, end + Duration::seconds(SLOT_SECS), now);
    let e: f64 = energy.iter().map(|s| s.value).sum();
    let c: f64 = cost.iter().map(|s| s.value).sum();
    ((e * 1000.0).round() / 1000.0, (c * 10_000.0).round() / 10_000.0)
}

/// The procedural station log entries of `[from, to)` other than sessions (which come from
/// [`Profile::sessions`]); live entries are added by the caller.
pub fn procedural_station_events(profile: &Profile, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let start = from.max(profile.installed_at);
    let end = to.min(profile.history_until);
    if end <= start {
        return out;
    }
    let mut date = start.date_naive();
    while date <= end.date_naive() {
        let h = mix(&[profile.seed, 0x10C5, day_number(date)]);
        if h.is_multiple_of(10) {
            out.push(LogEntry {
                date: at(date, 8 * 60 + 3),
                log_name: "KeySwitch",
                value: json!({"keySwitch": "unlocked"}),
            });
            out.push(LogEntry {
                date: at(date, 8 * 60 + 41),
                log_name: "KeySwitch",
                value: json!({"keySwitch": "locked"}),
            });
        }
        if (h >> 8).is_multiple_of(20) {
            out.push(LogEntry {
                date: at(date, 19 * 60 + 7),
                log_name: "Errors",
                value: json!({"code": "loadShedding", "state": true}),
            });
            out.push(LogEntry {
                date: at(date, 19 * 60 + 19),
                log_name: "Errors",
                value: json!({"code": "noError", "state": false}),
            });
        }
        if (h >> 16).is_multiple_of(45) {
            let t = at(date, 11 * 60 + 12);
            out.push(LogEntry {
                date: t,
                log_name: "CyberSecurity",
                value: json!({"event": 3.0, "timestamp": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "message": "MyNewSSID"}),
            });
        }
        date = match date.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    out.retain(|e| e.date >= start && e.date < end);
    out
}

/// The grid meter's CurrentTariff changes within `[from, to)` (up to `now`).
pub fn current_tariff_logs(
    profile: &Profile,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<LogEntry> {
    let start = from.max(profile.installed_at);
    let end = to.min(now);
    let mut out = Vec::new();
    if end <= start {
        return out;
    }
    let mut slot = start.timestamp().div_euclid(SLOT_SECS);
    let slot_time = |s: i64| Utc.timestamp_opt(s * SLOT_SECS, 0).single().unwrap_or(start);
    let mut previous =
        if slot_time(slot) <= profile.installed_at { None } else { Some(profile.tariff_at(slot_time(slot - 1))) };
    while slot_time(slot) < end {
        let t = slot_time(slot);
        let tariff = profile.tariff_at(t);
        if previous != Some(tariff) && t >= start {
            out.push(LogEntry {
                date: t,
                log_name: "CurrentTariff",
                value: json!({"currentTariff": tariff.code().to_ascii_uppercase()}),
            });
        }
        previous = Some(tariff);
        slot += 1;
    }
    out
}

/// Counts log entries per step bucket; buckets with no entry are left out, as in the document.
pub fn count_entries(entries: &[LogEntry], step: Step, log_name: &str) -> Vec<Value> {
    let mut counts: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    for e in entries {
        *counts.entry(step.bucket(e.date)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(date, n)| {
            json!({"date": date.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "value": n as f64, "logName": log_name})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(subscription: Subscription) -> Profile {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        Profile {
            seed: 7,
            subscription,
            standard_types: [TariffType::Hc; 10],
            power_w: 7_400.0,
            installed_at: t("2020-04-15T13:28:13Z"),
            history_until: t("2026-01-01T00:00:00Z"),
        }
    }

    /// The streaming aggregation agrees with grouping every sample in a map, for every step and
    /// operator, across month and year ends and with tariffs that change within a day.
    #[test]
    fn aggregation_agrees_with_a_plain_grouping() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for sub in [Subscription::Tempo, Subscription::Standard, Subscription::Hchp] {
            let p = profile(sub);
            let samples = samples(
                &p,
                &[],
                &PriceBook::new(),
                Quantity::HouseEnergy,
                t("2024-11-20T05:00:00Z"),
                t("2025-02-10T00:00:00Z"),
                t("2026-01-01T00:00:00Z"),
            );
            for step in [Step::Hour, Step::Day, Step::Week, Step::Month, Step::Year] {
                for op in [Operator::Sum, Operator::Count, Operator::Average, Operator::MinMax] {
                    let mut groups: BTreeMap<(DateTime<Utc>, TariffType), Vec<&Sample>> = BTreeMap::new();
                    for s in &samples {
                        groups.entry((step.bucket(s.start), p.tariff_type(s.tariff))).or_default().push(s);
                    }
                    let rows = aggregate(&p, &samples, op, step);
                    assert_eq!(rows.len(), groups.len(), "{step:?} {op:?}");
                    for (row, ((date, kind), group)) in rows.iter().zip(&groups) {
                        assert_eq!((row.date, row.tariff_type), (*date, *kind), "{step:?} {op:?}");
                        let values: Vec<f64> = group.iter().map(|s| s.value).collect();
                        let sum: f64 = values.iter().sum();
                        let expected = match op {
                            Operator::Sum => (Some(sum), None, None),
                            Operator::Count => (Some(values.len() as f64), None, None),
                            Operator::Average => (Some(sum / values.len() as f64), None, None),
                            Operator::MinMax => (
                                None,
                                Some(values.iter().copied().fold(f64::INFINITY, f64::min)),
                                Some(values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                            ),
                        };
                        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                            (a, b) => a == b,
                        };
                        assert!(close(row.value, expected.0), "{step:?} {op:?} {date}: {row:?}");
                        assert!(close(row.value_min, expected.1) && close(row.value_max, expected.2), "{row:?}");
                    }
                }
            }
        }
    }

    /// A price book whose prices change mid-hour (one mid-second), with a negative one.
    fn odd_prices(sub: Subscription) -> PriceBook {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        sub.tariff_ids()
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let k = i as f64;
                let values = vec![
                    (t("2024-12-01T00:00:00Z"), 0.17 + k / 100.0),
                    (t("2024-12-24T13:25:00.5Z"), 0.2131 + k / 1000.0),
                    (t("2025-01-05T07:00:00Z"), if i == 0 { -0.01 } else { 0.19 }),
                    (t("2024-12-10T09:40:00Z"), 0.111),
                ];
                (id, values)
            })
            .collect()
    }

    /// Issue 19's fast path gives, to the bit, the rows of aggregating every sample: every
    /// subscription, quantity, step and operator, ranges cut mid-slot, before installation and at
    /// `now`, with live sessions (one still charging) and prices that change mid-hour.
    #[test]
    fn the_streaming_series_equals_aggregating_the_samples() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let live = vec![
            Session {
                start: t("2025-01-02T10:03:07.25Z"),
                end: Some(t("2025-01-02T12:00:00Z")),
                charging: vec![(t("2025-01-02T10:03:07.25Z"), Some(t("2025-01-02T10:41:00Z")))],
                power_w: 11_000.0,
            },
            Session {
                start: t("2025-01-04T23:55:00Z"),
                end: None,
                charging: vec![
                    (t("2025-01-04T23:55:00Z"), Some(t("2025-01-05T00:20:00Z"))),
                    (t("2025-01-05T01:00:00Z"), None),
                ],
                power_w: 3_700.0,
            },
        ];
        let ranges = [
            ("2024-11-20T05:07:00Z", "2025-02-10T00:00:00Z", "2026-01-01T00:00:00Z"),
            ("2020-04-01T00:00:00Z", "2020-06-03T10:00:00Z", "2026-01-01T00:00:00Z"),
            ("2025-01-01T00:00:00Z", "2025-01-08T00:00:00Z", "2025-01-05T03:14:15.9Z"),
            ("2024-12-24T13:20:00Z", "2024-12-24T13:30:00Z", "2026-01-01T00:00:00Z"),
        ];
        let quantities = [Quantity::StationEnergy, Quantity::StationCost, Quantity::HouseEnergy, Quantity::HouseCost];
        let subs =
            [Subscription::Base, Subscription::Hchp, Subscription::Ejp, Subscription::Tempo, Subscription::Standard];
        for sub in subs {
            let mut p = profile(sub);
            p.standard_types[2] = TariffType::Hp;
            p.standard_types[8] = TariffType::Hp;
            let prices = odd_prices(sub);
            for (from, to, now) in ranges {
                let (from, to, now) = (t(from), t(to), t(now));
                for quantity in quantities {
                    let samples = samples(&p, &live, &prices, quantity, from, to, now);
                    let series = Series { profile: &p, live: &live, prices: &prices, quantity };
                    for step in [Step::Hour, Step::Day, Step::Week, Step::Month, Step::Year] {
                        for op in [Operator::Sum, Operator::Count, Operator::Average, Operator::MinMax] {
                            let old = aggregate(&p, &samples, op, step);
                            let new = series.aggregate(from, to, now, op, step);
                            let bits = |rows: &[Row]| format!("{rows:?}");
                            assert_eq!(bits(&old), bits(&new), "{sub:?} {quantity:?} {step:?} {op:?} {from}");
                            let maps: Vec<Value> = old.iter().map(Row::to_json).collect();
                            assert_eq!(serde_json::to_string(&new).unwrap(), serde_json::to_string(&maps).unwrap());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tariff_ids_round_trip_and_name_their_fields() {
        for sub in
            [Subscription::Base, Subscription::Hchp, Subscription::Ejp, Subscription::Tempo, Subscription::Standard]
        {
            for id in sub.tariff_ids() {
                assert_eq!(TariffId::parse(&id.code()), Some(id));
            }
        }
        assert_eq!(TariffId::Hcjb.value_field(), "valueHcjb");
        assert_eq!(TariffId::Tariff(10).value_field(), "valueTariff10");
        assert_eq!(TariffId::parse("tariff11"), None);
        assert_eq!(TariffId::parse("tariff01"), None);
    }

    #[test]
    fn hours_sum_to_the_day_exactly_in_watt_hours() {
        let p = profile(Subscription::Tempo);
        let from = "2025-01-10T00:00:00Z".parse().unwrap();
        let to = from + Duration::days(1);
        let s = samples(&p, &[], &PriceBook::new(), Quantity::HouseEnergy, from, to, to);
        assert_eq!(s.len(), 144);
        let hours: f64 = aggregate(&p, &s, Operator::Sum, Step::Hour).iter().filter_map(|r| r.value).sum();
        let day: f64 = aggregate(&p, &s, Operator::Sum, Step::Day).iter().filter_map(|r| r.value).sum();
        assert!((hours - day).abs() < 1e-9, "{hours} vs {day}");
    }

    #[test]
    fn hh_mm_formats_durations() {
        assert_eq!(hh_mm(3 * 3600 + 33 * 60 + 59), "03:33");
        assert_eq!(hh_mm(-5), "00:00");
    }
}
