//! Measures and logs, shared by charging stations (routes 24–34) and grid meters (38–47).

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::quirks::NumberOrString;
use super::stations::refs;
use super::tolerant;

/// The device a measure or log belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Device {
    Station { installation_id: i64, station_id: String },
    Meter { installation_id: i64, meter_id: String },
}

impl Device {
    fn path(&self) -> Vec<String> {
        match self {
            Device::Station { installation_id, station_id } => {
                vec![
                    "installations".into(),
                    installation_id.to_string(),
                    "charging-stations".into(),
                    station_id.clone(),
                ]
            }
            Device::Meter { installation_id, meter_id } => {
                vec!["installations".into(), installation_id.to_string(), "grid-meters".into(), meter_id.clone()]
            }
        }
    }

    fn with(&self, tail: &[&str]) -> Vec<String> {
        let mut p = self.path();
        p.extend(tail.iter().map(|s| s.to_string()));
        p
    }

    pub(crate) fn installation_id(&self) -> i64 {
        match self {
            Device::Station { installation_id, .. } | Device::Meter { installation_id, .. } => *installation_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeasureInfo {
    /// Required: a measure without a readable id makes the answer unreadable.
    pub measure_id: NumberOrString,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub name: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "tolerant::optional")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub unit: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub periodicity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogInfo {
    /// Required: a log without a readable id makes the answer unreadable.
    pub log_id: NumberOrString,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub periodicity: Option<String>,
}

/// One aggregated point: `value`, or `valueMin`/`valueMax`, and `value<Tariff>` fields kept in
/// `by_tariff` (the field name without `value`, lower-cased: `hc`, `tariff3`; one that is not a
/// number is left out). The date is required: a point without one cannot be placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AggregatePoint {
    pub date: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub tariff_type: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub value: Option<f64>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub value_min: Option<f64>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub value_max: Option<f64>,
    #[serde(flatten)]
    pub rest: std::collections::BTreeMap<String, serde_json::Value>,
}

impl AggregatePoint {
    /// The per-tariff values: (`hc`, 1.2), (`tariff3`, 0.4), in field order.
    pub(crate) fn by_tariff(&self) -> Vec<(String, f64)> {
        self.rest
            .iter()
            .filter_map(|(k, v)| {
                let tariff = k.strip_prefix("value")?;
                if tariff.is_empty() {
                    return None;
                }
                Some((tariff.to_ascii_lowercase(), v.as_f64()?))
            })
            .collect()
    }
}

/// One log entry; its `value` is any JSON. The date is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogEntry {
    pub date: String,
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub log_name: Option<String>,
}

/// One count. The date and the count are required: the count is the datum (a made-up 0 would be
/// a wrong answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogCount {
    pub date: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub log_name: Option<String>,
}

/// `{startDate, endDate, step}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Range {
    #[serde(serialize_with = "millis")]
    pub start_date: DateTime<Utc>,
    #[serde(serialize_with = "millis")]
    pub end_date: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

fn millis<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Aggregation operators, with their route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Operator {
    Sum,
    Count,
    Average,
    MinMax,
}

impl Operator {
    pub(crate) fn route(self) -> &'static str {
        match self {
            Operator::Sum => "sum",
            Operator::Count => "count",
            Operator::Average => "average",
            Operator::MinMax => "min-max",
        }
    }
}

impl UpstreamClient {
    /// 24, 38. `GET …/measures`
    pub(crate) async fn measures(&self, bearer: &str, device: &Device) -> Result<Vec<MeasureInfo>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &refs(&device.with(&["measures"])), bearer, NO_BODY).await
    }

    /// 25, 39. `GET …/measures/{m}`
    pub(crate) async fn measure(&self, bearer: &str, device: &Device, m: &str) -> Result<MeasureInfo, UpstreamError> {
        self.json(Kind::Read, Method::GET, &refs(&device.with(&["measures", m])), bearer, NO_BODY).await
    }

    /// 26–29, 40–43. `POST …/measures/{m}/operators/{op}` (a read, so retried like one)
    pub(crate) async fn aggregate(
        &self,
        bearer: &str,
        device: &Device,
        m: &str,
        op: Operator,
        range: &Range,
    ) -> Result<Vec<AggregatePoint>, UpstreamError> {
        let path = device.with(&["measures", m, "operators", op.route()]);
        self.json(Kind::Read, Method::POST, &refs(&path), bearer, Some(range)).await
    }

    /// 30, 44. `GET …/logs`
    pub(crate) async fn logs(&self, bearer: &str, device: &Device) -> Result<Vec<LogInfo>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &refs(&device.with(&["logs"])), bearer, NO_BODY).await
    }

    /// 31, 45. `GET …/logs/{l}`
    pub(crate) async fn log(&self, bearer: &str, device: &Device, l: &str) -> Result<LogInfo, UpstreamError> {
        self.json(Kind::Read, Method::GET, &refs(&device.with(&["logs", l])), bearer, NO_BODY).await
    }

    /// 32, 46. `POST …/logs/{l}/operators/count`
    pub(crate) async fn log_counts(
        &self,
        bearer: &str,
        device: &Device,
        l: &str,
        range: &Range,
    ) -> Result<Vec<LogCount>, UpstreamError> {
        let path = device.with(&["logs", l, "operators", "count"]);
        self.json(Kind::Read, Method::POST, &refs(&path), bearer, Some(range)).await
    }

    /// 33, 47 (`Some(l)`), and 34 for a station (`None`): `POST …/logs[/{l}]/operators/list`
    pub(crate) async fn log_entries(
        &self,
        bearer: &str,
        device: &Device,
        l: Option<&str>,
        range: &Range,
    ) -> Result<Vec<LogEntry>, UpstreamError> {
        let path = match l {
            Some(l) => device.with(&["logs", l, "operators", "list"]),
            None => device.with(&["logs", "operators", "list"]),
        };
        self.json(Kind::Read, Method::POST, &refs(&path), bearer, Some(range)).await
    }
}
