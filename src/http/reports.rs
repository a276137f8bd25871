//! `GET /reports/sessions.csv`: an installation's charging sessions over a range as RFC 4180 CSV,
//! for a spreadsheet. The route runs one GraphQL query through the app's schema with the caller's
//! identity, so the role and ownership rules, the sessions and their figures are those of
//! `ChargingStation.sessions` and `Installation.chargingReport`; this file only checks the
//! parameters and formats the answer. See docs/sessions.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::{ServerError, Variables};
use axum::Json;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde::Deserialize;

use super::HttpState;
use crate::auth::AuthError;
use crate::cache::request_loaders;

/// One query for every case: the stations' sessions and the report's totals read the same log
/// listings, which the request's loader fetches once. `chargingReport.total.energy` is how the
/// caller's role is known: `null` for an installer, a number (0 without sessions) for the owner.
const SESSIONS_QUERY: &str = r#"query SessionsCsv($installationId: ID!, $from: DateTime!, $to: DateTime!) {
  installation(id: $installationId) {
    id
    name
    chargingStations {
      id
      friendlyName
      sessions(from: $from, to: $to) {
        startDate endDate durationSeconds chargingDurationSeconds energy cost currency
      }
    }
    chargingReport(from: $from, to: $to) {
      from to currency
      total { sessions energy cost }
      stations { chargingStationId totals { sessions energy cost } }
    }
  }
}"#;

/// The query string's parameters, each at most once.
const PARAMETERS: [&str; 5] = ["installationId", "from", "to", "chargingStationId", "ratePerKwh"];

/// The highest `ratePerKwh` taken: past it, a rate is surely a mistake (and its products could
/// overflow).
const MAX_RATE: f64 = 1_000_000.0;

const CSV_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// `GET /reports/sessions.csv?installationId=…&from=…&to=…[&chargingStationId=…][&ratePerKwh=…]`.
pub(super) async fn sessions_csv(State(s): State<HttpState>, req: Request) -> Response {
    match answer(&s, req).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

async fn answer(s: &HttpState, req: Request) -> Result<Response, Refused> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let identity = s.identify(req.headers()).await;
    // Counted as a `/graphql` request is.
    if let Some(limited) = s.over_limit(&identity, peer) {
        let error = limited.into_app_error();
        return Err(Refused::new(StatusCode::TOO_MANY_REQUESTS, error.code(), error.message())
            .retry_after(limited.retry_after_secs()));
    }
    let caller = match &identity.0 {
        Ok(caller) => caller.clone(),
        Err(e @ AuthError::KeysUnavailable) => {
            return Err(Refused::new(StatusCode::SERVICE_UNAVAILABLE, "UNAUTHENTICATED", e.to_string()));
        }
        Err(e) => return Err(Refused::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.to_string())),
    };
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map_err(|_| Refused::bad_input("the query string cannot be read: send it URL-encoded"))?;
    let asked = Asked::parse(&pairs.0)?;

    let variables = serde_json::json!({
        "installationId": asked.installation_id.to_string(),
        "from": asked.from.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "to": asked.to.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    });
    let request = async_graphql::Request::new(SESSIONS_QUERY)
        .variables(Variables::from_json(variables))
        .data(Arc::new(request_loaders(caller, s.cache.clone(), None)))
        .data(identity);
    // In a fleet: what other replicas changed before this request came is heard first.
    s.live.catch_up().await;
    let mut response = s.schema.execute(request).await;
    crate::graphql::error::with_codes(&mut response);
    if let Some(error) = response.errors.first() {
        return Err(Refused::from_graphql(error));
    }
    let data = response.data.into_json().map_err(Refused::internal)?;
    let answer: Answer = serde_json::from_value(data).map_err(Refused::internal)?;
    let installation = answer.installation.ok_or_else(|| Refused::internal("no installation in the answer"))?;
    let report = csv(&installation, &asked)?;

    let disposition = format!("attachment; filename=\"{}\"", filename(&asked));
    let mut http = report.into_response();
    let headers = http.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CSV_TYPE));
    // Names caller data: neither a shared cache nor the browser's keeps it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(http)
}

/// What the query string asks for, checked.
#[derive(Debug, PartialEq)]
struct Asked {
    installation_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    station: Option<String>,
    rate: Option<f64>,
}

impl Asked {
    fn parse(pairs: &[(String, String)]) -> Result<Asked, Refused> {
        let mut given: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in pairs {
            if !PARAMETERS.contains(&name.as_str()) {
                return Err(Refused::bad_input(format!(
                    "unknown parameter `{name}`: the parameters are installationId, from, to, chargingStationId and \
                     ratePerKwh"
                )));
            }
            if given.insert(name, value.trim()).is_some() {
                return Err(Refused::bad_input(format!("`{name}` is given more than once")));
            }
        }
        let required = |name: &str| {
            given
                .get(name)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Refused::bad_input(format!("`{name}` is required")))
        };
        let raw = required("installationId")?;
        let installation_id = raw
            .parse::<i64>()
            .map_err(|_| Refused::bad_input(format!("`installationId` must be a whole number, got '{raw}'")))?;
        let from = date_time("from", required("from")?)?;
        let to = date_time("to", required("to")?)?;
        // The range rules of `sessions` (order, length), checked before anything is read so that
        // a bad range is refused whoever asks, as there.
        crate::graphql::history::range(from, to, None).map_err(|e| Refused::bad_input(e.message()))?;
        let station = match given.get("chargingStationId").copied() {
            None => None,
            Some("") => return Err(Refused::bad_input("`chargingStationId` must not be empty")),
            Some(id) => Some(id.to_string()),
        };
        let rate = given.get("ratePerKwh").map(|raw| price_per_kwh(raw)).transpose()?;
        Ok(Asked { installation_id, from, to, station, rate })
    }
}

/// A date-time as RFC 3339 has it, or a day (`2024-12-01`: from midnight UTC).
fn date_time(name: &str, raw: &str) -> Result<DateTime<Utc>, Refused> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    Err(Refused::bad_input(format!(
        "`{name}` must be a date-time as RFC 3339 writes it (2024-12-01T00:00:00Z; a '+' of an offset sent as %2B) \
         or a day (2024-12-01, from midnight UTC), got '{raw}'"
    )))
}

/// A price per kWh: a number from 0 to [`MAX_RATE`].
fn price_per_kwh(raw: &str) -> Result<f64, Refused> {
    match raw.parse::<f64>() {
        // `-0` is 0 (a `-0` column would look odd).
        Ok(rate) if (0.0..=MAX_RATE).contains(&rate) => Ok(rate.abs()),
        _ => Err(Refused::bad_input(format!(
            "`ratePerKwh` must be a price per kWh, a number from 0 to {MAX_RATE} (0.25), got '{raw}'"
        ))),
    }
}

/// `sessions-33-2024-12-01-2025-01-01.csv` (the station's id after the installation's when one is
/// asked for), in ASCII letters, digits and `-` only.
fn filename(asked: &Asked) -> String {
    let mut name = format!("sessions-{}", asked.installation_id);
    if let Some(station) = &asked.station {
        let safe: String = station.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        name.push('-');
        name.push_str(&safe);
    }
    format!("{name}-{}-{}.csv", asked.from.format("%Y-%m-%d"), asked.to.format("%Y-%m-%d"))
}

// ---- The GraphQL answer ----

#[derive(Deserialize)]
struct Answer {
    installation: Option<Installation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Installation {
    id: String,
    name: String,
    charging_stations: Option<Vec<Station>>,
    charging_report: Option<Report>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Station {
    id: String,
    friendly_name: Option<String>,
    sessions: Option<Vec<Session>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    start_date: String,
    end_date: Option<String>,
    duration_seconds: Option<i64>,
    charging_duration_seconds: Option<i64>,
    energy: Option<f64>,
    cost: Option<f64>,
    currency: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    from: String,
    to: String,
    currency: Option<String>,
    total: Totals,
    stations: Vec<StationTotals>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StationTotals {
    charging_station_id: String,
    totals: Totals,
}

#[derive(Deserialize)]
struct Totals {
    sessions: i64,
    energy: Option<f64>,
    cost: Option<f64>,
}

// ---- The CSV ----

/// The report: a header row, one row per session (station by station, in the installation's
/// order; each station's in start order), and a `Total` row.
fn csv(installation: &Installation, asked: &Asked) -> Result<String, Refused> {
    let stations = installation.charging_stations.as_deref().unwrap_or_default();
    let report = installation.charging_report.as_ref().ok_or_else(|| Refused::internal("no report in the answer"))?;
    let owner = report.total.energy.is_some();
    let (stations, totals): (Vec<&Station>, &Totals) = match &asked.station {
        None => (stations.iter().collect(), &report.total),
        Some(id) => {
            let station = stations.iter().find(|s| s.id == *id).ok_or_else(|| {
                Refused::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("charging station '{id}' is not one of installation {}'s", installation.id),
                )
            })?;
            let totals = report
                .stations
                .iter()
                .find(|t| t.charging_station_id == *id)
                .map(|t| &t.totals)
                .ok_or_else(|| Refused::internal("the report has no totals for the station"))?;
            (vec![station], totals)
        }
    };
    // With the rate, for the owner only: an installer sees no energy to multiply.
    let rate = asked.rate.filter(|_| owner);

    let mut out = Csv::default();
    let mut header = vec![
        "installationId",
        "installationName",
        "chargingStationName",
        "chargingStationId",
        "startDate",
        "endDate",
        "durationSeconds",
        "chargingDurationSeconds",
    ];
    if owner {
        header.extend(["energyKwh", "cost", "currency"]);
    }
    if rate.is_some() {
        header.push("reimbursement");
    }
    header.push("sessions");
    out.row(header.into_iter().map(Cell::Text));

    let (mut duration, mut charging, mut reimbursed) = (0_i64, 0_i64, 0.0_f64);
    for station in &stations {
        let name = station.friendly_name.as_deref().unwrap_or_default();
        for session in station.sessions.iter().flatten() {
            duration += session.duration_seconds.unwrap_or(0);
            charging += session.charging_duration_seconds.unwrap_or(0);
            let mut row = vec![
                Cell::Text(&installation.id),
                Cell::Text(&installation.name),
                Cell::Text(name),
                Cell::Text(&station.id),
                Cell::Text(&session.start_date),
                Cell::Text(session.end_date.as_deref().unwrap_or_default()),
                Cell::Int(session.duration_seconds),
                Cell::Int(session.charging_duration_seconds),
            ];
            if owner {
                row.extend([
                    Cell::Number(session.energy),
                    Cell::Number(session.cost),
                    Cell::Text(session.currency.as_deref().unwrap_or_default()),
                ]);
            }
            if let Some(rate) = rate {
                let amount = session.energy.map(|e| round(rate * e, 10_000.0));
                reimbursed += amount.unwrap_or(0.0);
                row.push(Cell::Number(amount));
            }
            row.push(Cell::Int(Some(1)));
            out.row(row);
        }
    }

    let (station_name, station_id) = match stations.as_slice() {
        [one] if asked.station.is_some() => (one.friendly_name.as_deref().unwrap_or_default(), one.id.as_str()),
        _ => ("", ""),
    };
    let mut total = vec![
        Cell::Text("Total"),
        Cell::Text(&installation.name),
        Cell::Text(station_name),
        Cell::Text(station_id),
        Cell::Text(&report.from),
        Cell::Text(&report.to),
        Cell::Int(Some(duration)),
        Cell::Int(Some(charging)),
    ];
    if owner {
        total.extend([
            Cell::Number(totals.energy),
            Cell::Number(totals.cost),
            Cell::Text(report.currency.as_deref().unwrap_or_default()),
        ]);
    }
    if rate.is_some() {
        total.push(Cell::Number(Some(round(reimbursed, 10_000.0))));
    }
    total.push(Cell::Int(Some(totals.sessions)));
    out.row(total);
    Ok(out.text)
}

/// Amounts are given to the precision the logs give costs (0.0001), without binary noise.
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// One field of a row.
enum Cell<'a> {
    /// Text, guarded against being read as a formula.
    Text(&'a str),
    /// A figure as GraphQL gives it: Rust's shortest form that reads back as the same `f64` (no
    /// exponent); empty for `null`.
    Number(Option<f64>),
    Int(Option<i64>),
}

/// RFC 4180 text: fields separated by commas, rows ended by CRLF.
#[derive(Default)]
struct Csv {
    text: String,
}

impl Csv {
    fn row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) {
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            match cell {
                Cell::Text(text) => self.field(&defused(text)),
                Cell::Number(n) => self.field(&n.map(|n| n.to_string()).unwrap_or_default()),
                Cell::Int(n) => self.field(&n.map(|n| n.to_string()).unwrap_or_default()),
            }
        }
        self.text.push_str("\r\n");
    }

    /// A field as RFC 4180 says: in double quotes when it holds a comma, a double quote, CR or
    /// LF, with its double quotes doubled. Also when it holds a semicolon or a tab: a
    /// spreadsheet set to a French or German locale splits on `;`, and would read what follows
    /// one (`x;=1+1`) as a cell of its own, a formula the defusing never saw at its start.
    fn field(&mut self, value: &str) {
        if value.contains([',', '"', '\r', '\n', ';', '\t']) {
            self.text.push('"');
            self.text.push_str(&value.replace('"', "\"\""));
            self.text.push('"');
        } else {
            self.text.push_str(value);
        }
    }
}

/// Text a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, a tab, CR or LF first: a
/// station named `=HYPERLINK(…)` by whoever may rename it) gets a `'` before it, as OWASP's advice
/// on CSV injection says. Figures are never text here, so a negative number is not touched.
fn defused(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) { format!("'{text}").into() } else { text.into() }
}

// ---- Refusals ----

/// A request answered with an error: its status, a code as GraphQL's `extensions.code` has it,
/// and what the client is told, as JSON `{"code", "message"}`.
#[derive(Debug, PartialEq)]
struct Refused {
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl Refused {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refused {
        Refused { status, code: code.to_string(), message: message.into(), retry_after: None }
    }

    fn bad_input(message: impl Into<String>) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", message)
    }

    fn retry_after(self, secs: u64) -> Refused {
        Refused { retry_after: Some(secs), ..self }
    }

    /// Logged; the client only learns that something went wrong.
    fn internal(cause: impl std::fmt::Display) -> Refused {
        tracing::error!(%cause, "the sessions CSV could not be made");
        Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
    }

    /// The status of a GraphQL error's code (its message is already fit for the client).
    fn from_graphql(error: &ServerError) -> Refused {
        let extension = |name: &str| error.extensions.as_ref().and_then(|x| x.get(name)).cloned();
        let code = match extension("code") {
            Some(async_graphql::Value::String(code)) => code,
            _ => "INTERNAL".to_string(),
        };
        let status = match code.as_str() {
            "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
            "FORBIDDEN" => StatusCode::FORBIDDEN,
            "NOT_FOUND" => StatusCode::NOT_FOUND,
            "BAD_USER_INPUT" | "QUERY_TOO_COMPLEX" => StatusCode::BAD_REQUEST,
            "CONFLICT" => StatusCode::CONFLICT,
            "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
            "UPSTREAM_UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
            "UPSTREAM_ERROR" => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match extension("retryAfterSeconds") {
            Some(async_graphql::Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        Refused { status, code, message: error.message.clone(), retry_after }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn refusal(query: &[(&str, &str)]) -> String {
        let refused = Asked::parse(&pairs(query)).expect_err("refused");
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
        refused.message
    }

    #[test]
    fn fields_are_quoted_as_rfc_4180_says_and_formulas_are_defused() {
        let mut csv = Csv::default();
        csv.row([Cell::Text("plain"), Cell::Text("a,b"), Cell::Text("say \"hi\""), Cell::Text("two\r\nlines")]);
        csv.row([
            Cell::Text("=1+1"),
            Cell::Text("-x"),
            Cell::Number(Some(-1.5)),
            Cell::Number(None),
            Cell::Int(Some(3)),
        ]);
        assert_eq!(csv.text, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\"\r\n'=1+1,'-x,-1.5,,3\r\n");
        // What a `;`-separated spreadsheet would split stays one quoted field; a leading newline
        // is defused as the other formula starts are.
        let mut csv = Csv::default();
        csv.row([Cell::Text("x;=1+1;y"), Cell::Text("a\tb"), Cell::Text("\n=1+1")]);
        assert_eq!(csv.text, "\"x;=1+1;y\",\"a\tb\",\"'\n=1+1\"\r\n");
    }

    #[test]
    fn figures_read_back_as_the_same_f64() {
        for v in [0.1 + 0.2, 12.345, 1e-7, 123456789.125, 0.0] {
            let text = v.to_string();
            assert!(!text.contains('e'), "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let ok = Asked::parse(&pairs(&[
            ("installationId", "33"),
            ("from", "2024-12-01"),
            ("to", "2025-01-01T00:00:00+01:00"),
            ("ratePerKwh", "0.25"),
        ]))
        .expect("accepted");
        assert_eq!(ok.from.to_rfc3339(), "2024-12-01T00:00:00+00:00");
        assert_eq!(ok.to.to_rfc3339(), "2024-12-31T23:00:00+00:00");
        assert_eq!(ok.rate, Some(0.25));
        assert_eq!(filename(&ok), "sessions-33-2024-12-01-2024-12-31.csv");

        let base = [("installationId", "33"), ("from", "2024-12-01"), ("to", "2025-01-01")];
        let with = |extra: (&'static str, &'static str)| {
            let mut q = base.to_vec();
            q.retain(|(k, _)| *k != extra.0);
            q.push(extra);
            refusal(&q)
        };
        assert!(with(("from", "yesterday")).contains("`from`"));
        assert!(with(("to", "2024-11-01")).contains("`to`"));
        assert!(with(("installationId", "x")).contains("`installationId`"));
        for rate in ["abc", "-1", "NaN", "inf", "1e300"] {
            assert!(with(("ratePerKwh", rate)).contains("`ratePerKwh`"), "{rate}");
        }
        assert!(with(("chargingStationId", "")).contains("`chargingStationId`"));
        assert!(with(("ratePerKWh", "1")).contains("unknown parameter `ratePerKWh`"));
        assert!(refusal(&base[1..]).contains("`installationId` is required"));
        let twice = [base.as_slice(), &[("from", "2024-12-02")]].concat();
        assert!(refusal(&twice).contains("more than once"));
    }

    #[test]
    fn a_filename_is_ascii_whatever_the_station_id() {
        let asked = Asked {
            installation_id: 33,
            from: "2024-12-01T00:00:00Z".parse().unwrap(),
            to: "2025-01-01T00:00:00Z".parse().unwrap(),
            station: Some("é\"/x".into()),
            rate: None,
        };
        assert_eq!(filename(&asked), "sessions-33----x-2024-12-01-2025-01-01.csv");
        assert_eq!(price_per_kwh("-0").unwrap().to_string(), "0");
    }
}
