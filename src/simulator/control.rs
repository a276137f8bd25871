//! The `/_sim/` control routes (not behind the platform's key or bearer): call counts, fault
//! injection, runtime settings, the seeded users, devices and mail, and the station events a
//! person would cause (a car plugged in or unplugged, an error).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::SimResult;
use super::platform::{CallCounts, Faults};
use super::routes::Body;
use super::store::AccountKind;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_sim/calls", get(calls).delete(reset_calls))
        .route("/_sim/faults", get(faults).put(set_faults).delete(clear_faults))
        .route("/_sim/config", get(config).put(set_config))
        .route("/_sim/users", get(users))
        .route("/_sim/devices", get(devices))
        .route("/_sim/mail", get(mail))
        .route("/_sim/stations/{cs}/plug", post(plug))
        .route("/_sim/stations/{cs}/unplug", post(unplug))
        .route("/_sim/stations/{cs}/error", post(error))
        .route("/_sim/stations/{cs}/load-shedding", post(load_shedding))
        .route("/_sim/stations/{cs}/properties", put(override_station))
        .route("/_sim/grid-meters/{gm}/properties", put(override_meter))
        .route("/_sim/grid-meters/{gm}/tariffs/{t}", put(override_tariff))
        .route("/openapi.json", get(super::openapi::serve))
}

async fn calls(State(s): State<AppState>) -> Json<CallCounts> {
    Json(s.calls.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn reset_calls(State(s): State<AppState>) -> StatusCode {
    *s.calls.lock().unwrap_or_else(|e| e.into_inner()) = CallCounts::default();
    StatusCode::NO_CONTENT
}

async fn faults(State(s): State<AppState>) -> Json<Faults> {
    Json(s.faults.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default())
}

async fn set_faults(State(s): State<AppState>, Body(f): Body<Faults>) -> SimResult<Json<Faults>> {
    f.validate()?;
    *s.faults.write().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
    Ok(Json(f))
}

async fn clear_faults(State(s): State<AppState>) -> StatusCode {
    *s.faults.write().unwrap_or_else(|e| e.into_inner()) = None;
    StatusCode::NO_CONTENT
}

/// The settings that can change at run time.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigBody {
    #[serde(default)]
    pub command_delay_ms: Option<u64>,
    #[serde(default)]
    pub delivery_attempts: Option<u32>,
    #[serde(default)]
    pub delivery_backoff_ms: Option<u64>,
    #[serde(default)]
    pub delivery_timeout_ms: Option<u64>,
}

fn current(s: &AppState) -> ConfigBody {
    let st = s.settings();
    ConfigBody {
        command_delay_ms: Some(st.command_delay.as_millis() as u64),
        delivery_attempts: Some(st.delivery_attempts),
        delivery_backoff_ms: Some(st.delivery_backoff.as_millis() as u64),
        delivery_timeout_ms: Some(st.delivery_timeout.as_millis() as u64),
    }
}

async fn config(State(s): State<AppState>) -> Json<ConfigBody> {
    Json(current(&s))
}

async fn set_config(State(s): State<AppState>, Body(c): Body<ConfigBody>) -> SimResult<Json<ConfigBody>> {
    if c.delivery_attempts == Some(0) {
        return Err(super::error::SimError::bad_request("deliveryAttempts must be at least 1"));
    }
    {
        let mut st = s.settings.write().unwrap_or_else(|e| e.into_inner());
        if let Some(ms) = c.command_delay_ms {
            st.command_delay = Duration::from_millis(ms);
        }
        if let Some(n) = c.delivery_attempts {
            st.delivery_attempts = n;
        }
        if let Some(ms) = c.delivery_backoff_ms {
            st.delivery_backoff = Duration::from_millis(ms);
        }
        if let Some(ms) = c.delivery_timeout_ms {
            st.delivery_timeout = Duration::from_millis(ms);
        }
    }
    Ok(Json(current(&s)))
}

async fn users(State(s): State<AppState>) -> Json<Vec<Value>> {
    let store = s.read();
    let out = store
        .accounts
        .values()
        .map(|a| {
            let installations: Vec<Value> = store
                .installations
                .values()
                .filter_map(|i| {
                    let m = i.members.iter().find(|m| m.account_id == a.account_id)?;
                    Some(json!({"installationId": i.id, "role": m.role.code(), "enabled": m.enabled}))
                })
                .collect();
            json!({
                "sub": a.sub,
                "email": a.email,
                "accountId": a.account_id,
                "accountType": if a.kind == AccountKind::Installer { "installer" } else { "owner" },
                "installations": installations,
            })
        })
        .collect();
    Json(out)
}

async fn devices(State(s): State<AppState>) -> Json<Vec<Value>> {
    let store = s.read();
    Json(
        store
            .devices
            .iter()
            .map(|d| {
                json!({
                    "uid": d.uid,
                    "qrCode": d.qr_code(),
                    "serialNumber": d.serial_number,
                    "gridSubscription": d.subscription.code(),
                })
            })
            .collect(),
    )
}

async fn mail(State(s): State<AppState>) -> Json<Value> {
    Json(json!(s.read().mail))
}

/// The station as its owner sees it, after a control action.
fn station_view(s: &AppState, cs: &str) -> Value {
    let store = s.read();
    store.stations.get(cs).map(|st| store.station_json(st, Utc::now(), false)).unwrap_or(Value::Null)
}

async fn plug(State(s): State<AppState>, Path(cs): Path<String>) -> SimResult<Json<Value>> {
    let notices = s.write().plug(&cs, Utc::now())?;
    s.publish(notices);
    Ok(Json(station_view(&s, &cs)))
}

async fn unplug(State(s): State<AppState>, Path(cs): Path<String>) -> SimResult<Json<Value>> {
    let notices = s.write().unplug(&cs, Utc::now())?;
    s.publish(notices);
    Ok(Json(station_view(&s, &cs)))
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

async fn error(
    State(s): State<AppState>,
    Path(cs): Path<String>,
    body: Option<Json<ErrorBody>>,
) -> SimResult<Json<Value>> {
    let code = body.and_then(|b| b.0.code).filter(|c| !c.trim().is_empty()).unwrap_or_else(|| "internalError".into());
    let notices = s.write().raise_error(&cs, &code, Utc::now())?;
    s.publish(notices);
    Ok(Json(station_view(&s, &cs)))
}

async fn load_shedding(State(s): State<AppState>, Path(cs): Path<String>) -> SimResult<Json<Value>> {
    let notices = s.write().raise_error(&cs, "loadShedding", Utc::now())?;
    s.publish(notices);
    Ok(Json(station_view(&s, &cs)))
}

/// Lays raw values over a station's properties, as a newer upstream might send them
/// (`{"chargeMode": "solarBoost"}`); `null` removes an override.
async fn override_station(
    State(s): State<AppState>,
    Path(cs): Path<String>,
    Body(values): Body<serde_json::Map<String, Value>>,
) -> SimResult<Json<Value>> {
    {
        let mut store = s.write();
        let st = store
            .stations
            .get_mut(&cs)
            .ok_or_else(|| super::error::SimError::not_found(format!("charging station {cs} not found")))?;
        merge_overrides(&mut st.overrides, values);
    }
    Ok(Json(station_view(&s, &cs)))
}

async fn override_meter(
    State(s): State<AppState>,
    Path(gm): Path<String>,
    Body(values): Body<serde_json::Map<String, Value>>,
) -> SimResult<Json<Value>> {
    let mut store = s.write();
    let m = store
        .meters
        .get_mut(&gm)
        .ok_or_else(|| super::error::SimError::not_found(format!("grid meter {gm} not found")))?;
    merge_overrides(&mut m.overrides, values);
    let m = &store.meters[&gm];
    Ok(Json(store.meter_json(m, Utc::now(), false)))
}

/// Lays raw values over one tariff of a meter (`{"currency": {"code": "EUR"}}`); `null` removes
/// an override.
async fn override_tariff(
    State(s): State<AppState>,
    Path((gm, t)): Path<(String, String)>,
    Body(values): Body<serde_json::Map<String, Value>>,
) -> SimResult<Json<Value>> {
    let mut store = s.write();
    let m = store
        .meters
        .get_mut(&gm)
        .ok_or_else(|| super::error::SimError::not_found(format!("grid meter {gm} not found")))?;
    let (id, tariff) = super::series::TariffId::parse(&t)
        .and_then(|id| Some((id, m.tariffs.get_mut(&id)?)))
        .ok_or_else(|| super::error::SimError::not_found(format!("tariff {t} not found on grid meter {gm}")))?;
    merge_overrides(&mut tariff.overrides, values);
    Ok(Json(super::store::tariff_json(id, tariff)))
}

fn merge_overrides(overrides: &mut serde_json::Map<String, Value>, values: serde_json::Map<String, Value>) {
    for (k, v) in values {
        if v.is_null() {
            overrides.remove(&k);
        } else {
            overrides.insert(k, v);
        }
    }
}
