//! Readers for the upstream's documented quirks: values that arrive as a number or a string,
//! "hh:mm" durations, and `0001-01-01T00:00:00Z` for "never".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A value the upstream sends as a number or as a string (`ticType`, `averageEvConsumption`,
/// `measureId`, error codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrString {
    Number(f64),
    String(String),
}

impl NumberOrString {
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::String(s) => s.trim().replace(',', ".").parse().ok(),
        }
    }

    /// The value as text: whole numbers without a decimal point.
    pub(crate) fn as_text(&self) -> String {
        match self {
            NumberOrString::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            NumberOrString::Number(n) => n.to_string(),
            NumberOrString::String(s) => s.clone(),
        }
    }
}

/// An upstream date-time; `0001-01-01T00:00:00Z` (and anything before year 2) means "never".
pub(crate) fn parse_time(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(raw?.trim()).ok()?.with_timezone(&Utc);
    (t.timestamp() > -62_100_000_000).then_some(t)
}

/// Seconds of an "hh:mm" duration (also "hh:mm:ss", and "d.hh:mm:ss" as .NET writes TimeSpans).
pub(crate) fn duration_seconds(raw: Option<&str>) -> Option<i64> {
    let raw = raw?.trim();
    let (days, rest) = match raw.split_once('.') {
        Some((d, r)) if r.contains(':') => (d.parse::<i64>().ok()?, r),
        _ => (0, raw),
    };
    let parts: Vec<i64> = rest.split(':').map(|p| p.parse::<i64>().ok()).collect::<Option<_>>()?;
    let secs = match parts.as_slice() {
        [h, m] => h * 3600 + m * 60,
        [h, m, s] => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86_400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_quirks() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(parse_time(Some("2020-11-09T10:50:11Z")).is_some());
        assert_eq!(duration_seconds(Some("03:33")), Some(3 * 3600 + 33 * 60));
        assert_eq!(duration_seconds(Some("1.02:00:05")), Some(86_400 + 7_205));
        assert_eq!(duration_seconds(Some("later")), None);
        assert_eq!(NumberOrString::String("14.2".into()).as_f64(), Some(14.2));
        assert_eq!(NumberOrString::Number(5.0).as_text(), "5");
    }
}
