//! The 50 upstream routes of the API document, as one table: each entry is the route's method and
//! template (the names of ROUTES.md), what it answers, and its handler. The router and the OpenAPI
//! description are both built from it, so they cannot drift apart.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{SimError, SimResult};
use super::platform;
use super::series::{self, Operator, Quantity, Step, TariffId, TariffType};
use super::store::{
    self, Account, AccountKind, CHARGE_MODES, CULTURES, EventSubscription, Member, Notice, Role, Store, TIMEZONES,
    events, fmt_time,
};
use super::wire::*;
use super::{AppState, webhooks};

/// A JSON object body. Refusals are 400 (415 without a JSON content type) in the platform's
/// error shape, naming the field; an array or a scalar where an object is expected is refused too
/// (serde alone would read an array as a struct, field by position).
pub struct Body<T>(pub T);

/// A JSON array body (the tariffs POST).
pub struct Items<T>(pub Vec<T>);

async fn json_value<S: Send + Sync>(req: Request, state: &S) -> Result<Value, SimError> {
    match Json::<Value>::from_request(req, state).await {
        Ok(Json(v)) => Ok(v),
        Err(rejection) => {
            let status = if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(SimError::new(status, rejection.body_text()))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, SimError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            SimError::bad_request(format!("invalid body: {inner}"))
        } else {
            SimError::bad_request(format!("invalid body: {path}: {inner}"))
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = SimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = json_value(req, state).await?;
        if !value.is_object() {
            return Err(SimError::bad_request(format!(
                "invalid type: the body must be a JSON object, got {}",
                kind(&value)
            )));
        }
        typed(value).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Items<T> {
    type Rejection = SimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = json_value(req, state).await?;
        if !value.is_array() {
            return Err(SimError::bad_request(format!(
                "invalid type: the body must be a JSON array, got {}",
                kind(&value)
            )));
        }
        typed(value).map(Items)
    }
}

/// The path parameters, with an unreadable path refused in the platform's error shape.
pub struct Params(pub BTreeMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = SimError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Params(p))
            .map_err(|e| SimError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

fn param<'a>(p: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    p.get(name).map(String::as_str).unwrap_or_default()
}

fn installation_id(p: &BTreeMap<String, String>) -> SimResult<i64> {
    let raw = param(p, "i");
    raw.parse().map_err(|_| SimError::bad_request(format!("installationId must be a whole number, got '{raw}'")))
}

fn parse_date(field: &str, raw: Option<&String>) -> SimResult<DateTime<Utc>> {
    let raw = raw.ok_or_else(|| {
        SimError::bad_request(format!("{field} is required (ISO 8601, e.g. 2020-06-02T00:58:24.458Z)"))
    })?;
    DateTime::parse_from_rfc3339(raw).map(|d| d.with_timezone(&Utc)).map_err(|_| {
        SimError::bad_request(format!("{field} is not an ISO 8601 date-time: '{raw}' (e.g. 2020-06-02T00:58:24.458Z)"))
    })
}

/// `startDate`/`endDate` (and `step` when `need_step`), checked.
fn range(req: &RangeRequest, need_step: bool) -> SimResult<(DateTime<Utc>, DateTime<Utc>, Step)> {
    let from = parse_date("startDate", req.start_date.as_ref())?;
    let to = parse_date("endDate", req.end_date.as_ref())?;
    if to <= from {
        return Err(SimError::bad_request(format!(
            "endDate ({}) must be after startDate ({})",
            fmt_time(to),
            fmt_time(from)
        )));
    }
    if (to - from).num_days() > series::MAX_RANGE_DAYS {
        return Err(SimError::bad_request(format!(
            "the range from startDate to endDate is longer than {} days",
            series::MAX_RANGE_DAYS
        )));
    }
    let step = match (&req.step, need_step) {
        (Some(s), _) => Step::parse(s)
            .ok_or_else(|| SimError::bad_request(format!("step must be one of {}, got '{s}'", Step::ALLOWED)))?,
        (None, true) => return Err(SimError::bad_request(format!("step is required (one of {})", Step::ALLOWED))),
        (None, false) => Step::Day,
    };
    if need_step && step.approx_buckets(from, to) > series::MAX_POINTS {
        return Err(SimError::bad_request(format!(
            "too many points for step {}: narrow the range or use a larger step (at most {})",
            req.step.as_deref().unwrap_or_default(),
            series::MAX_POINTS
        )));
    }
    Ok((from, to, step))
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// Runs a command's effect once the station has had time to apply it, then notifies.
fn after_delay(state: &AppState, apply: impl FnOnce(&mut Store, DateTime<Utc>) -> Vec<Notice> + Send + 'static) {
    let state = state.clone();
    let delay = state.settings().command_delay;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let notices = {
            let mut store = state.write();
            apply(&mut store, Utc::now())
        };
        state.publish(notices);
    });
}

// ---- installations ----

async fn list_installations(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
) -> Json<Vec<InstallationModel>> {
    Json(s.read().installations_of(&a))
}

fn required_text(field: &str, value: Option<String>, max: usize) -> SimResult<String> {
    let v = value.map(|v| v.trim().to_string()).unwrap_or_default();
    if v.is_empty() {
        return Err(SimError::bad_request(format!("{field} is required")));
    }
    if v.chars().count() > max {
        return Err(SimError::bad_request(format!("{field} must be at most {max} characters")));
    }
    Ok(v)
}

async fn create_installation(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Body(req): Body<CreateInstallationRequest>,
) -> SimResult<Response> {
    let name = required_text("name", req.name, 100)?;
    let location = required_text("locationName", req.location_name, 100)?;
    let gps = req
        .location_gps_coordinates
        .ok_or_else(|| SimError::bad_request("locationGpsCoordinates is required ({latitude, longitude})"))?;
    let lat = gps.latitude.ok_or_else(|| SimError::bad_request("locationGpsCoordinates.latitude is required"))?;
    let lon = gps.longitude.ok_or_else(|| SimError::bad_request("locationGpsCoordinates.longitude is required"))?;
    if !(-90.0..=90.0).contains(&lat) {
        return Err(SimError::bad_request(format!(
            "locationGpsCoordinates.latitude must be between -90 and 90, got {lat}"
        )));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(SimError::bad_request(format!(
            "locationGpsCoordinates.longitude must be between -180 and 180, got {lon}"
        )));
    }
    if a.kind == AccountKind::Installer {
        return Err(SimError::forbidden("an installer account cannot create installations"));
    }
    Ok(created(s.write().create_installation(&a, name, location, lat, lon)))
}

// ---- notifications ----

fn own_subscriptions<'a>(
    store: &'a Store,
    a: &'a Account,
    i: i64,
) -> SimResult<impl Iterator<Item = &'a EventSubscription>> {
    store.role(a, i)?;
    Ok(store.installation(i)?.subscriptions.iter().filter(move |s| s.model.user_id == a.account_id))
}

async fn list_event_subscriptions(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<EventSubscriptionModel>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    Ok(Json(own_subscriptions(&store, &a, i)?.map(|s| s.model.clone()).collect()))
}

async fn get_event_subscription(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<EventSubscriptionModel>> {
    let i = installation_id(&p)?;
    let id = param(&p, "id");
    let store = s.read();
    let found =
        own_subscriptions(&store, &a, i)?.find(|s| s.model.event_subscription_id == id).map(|s| s.model.clone());
    found.map(Json).ok_or_else(|| SimError::not_found(format!("event subscription {id} not found in installation {i}")))
}

async fn create_event_subscription(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<CreateEventSubscriptionRequest>,
) -> SimResult<Response> {
    let i = installation_id(&p)?;
    s.read().role(&a, i)?;
    let protocol = req.protocol_code.unwrap_or_default();
    if !protocol.eq_ignore_ascii_case("webhook") {
        return Err(SimError::bad_request(format!("protocolCode must be 'Webhook', got '{protocol}'")));
    }
    let url = req.protocol_data.unwrap_or_default();
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            return Err(SimError::bad_request(format!(
                "protocolData must be the absolute http(s) URL of the webhook, got '{url}'"
            )));
        }
    }
    let event_type = req.event_type.filter(|t| !t.trim().is_empty());
    if let Some(t) = &event_type
        && !events::ALL.iter().any(|e| e.eq_ignore_ascii_case(t))
    {
        return Err(SimError::bad_request(format!(
            "eventType '{t}' is unknown; use one of {} or leave it out for every type",
            events::ALL.join(", ")
        )));
    }
    let id = Uuid::new_v4().to_string();
    let model = EventSubscriptionModel {
        event_subscription_id: id.clone(),
        installation_id: i,
        user_id: a.account_id.clone(),
        protocol_code: "webhook".into(),
        protocol_data: url.clone(),
        event_type,
        filter: req.filter.unwrap_or_default(),
        state: "Creating".into(),
        creation_date: fmt_time(Utc::now()),
        modification_date: store::NEVER.into(),
    };
    let queue = webhooks::start(s.clone(), i, id, url);
    s.write().installation_mut(i)?.subscriptions.push(EventSubscription { model: model.clone(), queue });
    Ok(created(model))
}

async fn delete_event_subscriptions(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let mut store = s.write();
    store.role(&a, i)?;
    let subs = &mut store.installation_mut(i)?.subscriptions;
    let (gone, kept): (Vec<_>, Vec<_>) = subs.drain(..).partition(|s| s.model.user_id == a.account_id);
    *subs = kept;
    drop(store);
    for sub in gone {
        say_farewell(&s, sub);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_event_subscription(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let id = param(&p, "id");
    let mut store = s.write();
    store.role(&a, i)?;
    let subs = &mut store.installation_mut(i)?.subscriptions;
    let index = subs
        .iter()
        .position(|s| s.model.event_subscription_id == id && s.model.user_id == a.account_id)
        .ok_or_else(|| SimError::not_found(format!("event subscription {id} not found in installation {i}")))?;
    let gone = subs.remove(index);
    drop(store);
    say_farewell(&s, gone);
    Ok(StatusCode::NO_CONTENT)
}

/// A deleted subscription that had been validated is told so.
fn say_farewell(state: &AppState, sub: EventSubscription) {
    if sub.model.state == "Created" {
        let m = sub.model;
        webhooks::farewell(state.clone(), m.installation_id, m.event_subscription_id, m.protocol_data);
    }
}

// ---- sharing ----

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c == ',' || c == ';')
        && !domain.contains('@')
}

fn culture_of(field: &str, raw: Option<&str>) -> SimResult<String> {
    let raw = raw.unwrap_or_default();
    CULTURES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(raw))
        .map(|c| c.to_string())
        .ok_or_else(|| SimError::bad_request(format!("{field} must be one of {}, got '{raw}'", CULTURES.join(", "))))
}

async fn invite(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<InvitationRequest>,
) -> SimResult<Response> {
    let i = installation_id(&p)?;
    let mut store = s.write();
    store.require_owner(&a, i, "invite users")?;
    let email = req.email.unwrap_or_default().trim().to_ascii_lowercase();
    if !valid_email(&email) {
        return Err(SimError::bad_request(format!("email must be an e-mail address, got '{email}'")));
    }
    let culture = culture_of("cultureCode", Some(req.culture_code.as_deref().unwrap_or("fr-fr")))?;
    let inst = store.installation(i)?;
    if inst.invitations.iter().any(|inv| inv.email == email) {
        return Err(SimError::conflict(format!("an invitation for {email} is already pending on installation {i}")));
    }
    let is_user = inst
        .members
        .iter()
        .filter_map(|m| store.account_by_id(&m.account_id))
        .any(|acc| acc.email.eq_ignore_ascii_case(&email));
    if is_user {
        return Err(SimError::conflict(format!("{email} is already a user of installation {i}")));
    }
    let code = Uuid::new_v4().simple().to_string()[..16].to_uppercase();
    let model = store.add_invitation(i, &email, &culture, code, Utc::now());
    model.map(created).ok_or_else(|| SimError::not_found(format!("installation {i} not found")))
}

async fn list_invitations(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<InvitationModel>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    store.require_owner(&a, i, "see invitations")?;
    let inst = store.installation(i)?;
    let now = Utc::now();
    Ok(Json(inst.invitations.iter().filter(|inv| inv.expiration > now).map(|inv| inst.invitation_model(inv)).collect()))
}

async fn cancel_invitation(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let email = param(&p, "email").to_ascii_lowercase();
    let mut store = s.write();
    store.require_owner(&a, i, "cancel invitations")?;
    let invs = &mut store.installation_mut(i)?.invitations;
    let before = invs.len();
    invs.retain(|inv| inv.email != email);
    if invs.len() == before {
        return Err(SimError::not_found(format!("no pending invitation for {email} on installation {i}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn accept_invitation(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<InstallationModel>> {
    let code = param(&p, "activationCode").to_string();
    let mut store = s.write();
    let found = store.installations.values().find_map(|inst| {
        inst.invitations
            .iter()
            .find(|inv| inv.activation_code == code)
            .map(|inv| (inst.id, inv.expiration, inv.email.clone()))
    });
    let (i, expiration, email) =
        found.ok_or_else(|| SimError::not_found(format!("no invitation with activation code {code}")))?;
    if a.kind != AccountKind::Installer {
        return Err(SimError::forbidden("only an installer account can accept an invitation"));
    }
    if !a.email.eq_ignore_ascii_case(&email) {
        return Err(SimError::forbidden("this invitation was sent to another e-mail address"));
    }
    if expiration <= Utc::now() {
        return Err(SimError::new(StatusCode::GONE, format!("the invitation with activation code {code} has expired")));
    }
    let inst = store.installation_mut(i)?;
    if inst.members.iter().any(|m| m.account_id == a.account_id) {
        return Err(SimError::conflict(format!("you are already a user of installation {i}")));
    }
    inst.invitations.retain(|inv| inv.activation_code != code);
    inst.members.push(Member { account_id: a.account_id.clone(), role: Role::Installer, enabled: true });
    Ok(Json(inst.model()))
}

async fn list_users(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<UserModel>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    store.role(&a, i)?;
    store.users(i).map(Json)
}

/// Finds an installer of the installation for the owner's user operations.
fn installer_member<'a>(
    store: &'a mut Store,
    a: &Account,
    i: i64,
    account_id: &str,
    what: &str,
) -> SimResult<&'a mut Member> {
    store.require_owner(a, i, what)?;
    let m = store
        .installation_mut(i)?
        .members
        .iter_mut()
        .find(|m| m.account_id == account_id)
        .ok_or_else(|| SimError::not_found(format!("user {account_id} not found in installation {i}")))?;
    if m.role == Role::Owner {
        return Err(SimError::conflict(format!(
            "user {account_id} is the owner of installation {i}; only installers can be {what}"
        )));
    }
    Ok(m)
}

async fn set_enabled(s: AppState, a: Account, p: BTreeMap<String, String>, enabled: bool) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let mut store = s.write();
    let m = installer_member(&mut store, &a, i, param(&p, "accountId"), if enabled { "enabled" } else { "disabled" })?;
    m.enabled = enabled;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_user(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let account_id = param(&p, "accountId").to_string();
    let mut store = s.write();
    installer_member(&mut store, &a, i, &account_id, "removed")?;
    store.installation_mut(i)?.members.retain(|m| m.account_id != account_id);
    Ok(StatusCode::NO_CONTENT)
}

// ---- charging stations ----

fn hide_costs(role: Role) -> bool {
    role == Role::Installer
}

async fn list_stations(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<Value>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    let role = store.role(&a, i)?;
    let now = Utc::now();
    Ok(Json(store.stations_of(i).map(|st| store.station_json(st, now, hide_costs(role))).collect()))
}

async fn get_station(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Value>> {
    let i = installation_id(&p)?;
    let store = s.read();
    let role = store.role(&a, i)?;
    let st = store.station(i, param(&p, "cs"))?;
    Ok(Json(store.station_json(st, Utc::now(), hide_costs(role))))
}

async fn associate_station(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<AssociateStationRequest>,
) -> SimResult<Response> {
    let i = installation_id(&p)?;
    s.read().require_owner(&a, i, "associate charging stations")?;
    let from_qr = match req.qr_code.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(qr) => Some(
            qr.rsplit('/')
                .next()
                .filter(|u| !u.is_empty() && qr.starts_with("https://hgr.io/u/"))
                .ok_or_else(|| {
                    SimError::bad_request(format!("qrCode must look like https://hgr.io/u/<uid>, got '{qr}'"))
                })?
                .to_string(),
        ),
        None => None,
    };
    let uid = req.uid.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string);
    let uid = match (uid, from_qr) {
        (Some(u), Some(q)) if u != q => {
            return Err(SimError::bad_request(format!("uid '{u}' and the uid in qrCode '{q}' differ")));
        }
        (Some(u), _) | (None, Some(u)) => u,
        (None, None) => return Err(SimError::bad_request("one of uid or qrCode is required")),
    };
    let tz_raw = req.timezone.unwrap_or_default();
    let timezone = TIMEZONES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(&tz_raw))
        .ok_or_else(|| {
            SimError::bad_request(format!("timezone must be one of {}, got '{tz_raw}'", TIMEZONES.join(" | ")))
        })?
        .to_string();
    let culture = culture_of("country", req.country.as_deref().or(req.culture.as_deref()))?;
    let now = Utc::now();
    let mut store = s.write();
    let id = store.associate(i, &uid, timezone, culture, now)?;
    let st = store.station(i, &id)?;
    Ok(created(store.station_json(st, now, false)))
}

async fn remove_station(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let mut store = s.write();
    store.require_owner(&a, i, "remove charging stations")?;
    store.dissociate(i, param(&p, "cs"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn unplug_first(cs: &str, what: &str) -> SimError {
    SimError::conflict(format!(
        "a car is plugged into charging station {cs}: all sockets must be available (unplugged) to change {what}; unplug it first"
    ))
}

async fn set_charge_mode(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<SetChargeModeRequest>,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let cs = param(&p, "cs").to_string();
    {
        let store = s.read();
        store.require_owner(&a, i, "send commands to a charging station")?;
        let raw = req.charge_mode.unwrap_or_default();
        let mode = CHARGE_MODES
            .iter()
            .find(|m| m.eq_ignore_ascii_case(&raw))
            .ok_or_else(|| {
                SimError::bad_request(format!("chargeMode must be one of {}, got '{raw}'", CHARGE_MODES.join(" | ")))
            })?
            .to_string();
        if store.station(i, &cs)?.plugged() {
            return Err(unplug_first(&cs, "the charge mode"));
        }
        after_delay(&s, move |store, now| store.apply_charge_mode(&cs, &mode, now));
    }
    Ok(StatusCode::ACCEPTED)
}

async fn start_stop(s: AppState, a: Account, p: BTreeMap<String, String>, start: bool) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let cs = param(&p, "cs").to_string();
    let store = s.read();
    store.require_owner(&a, i, "send commands to a charging station")?;
    if !store.station(i, &cs)?.plugged() {
        return Err(SimError::conflict(format!(
            "no car is plugged into charging station {cs}: there is no session to {}",
            if start { "start" } else { "stop" }
        )));
    }
    drop(store);
    after_delay(&s, move |store, now| store.apply_start_stop(&cs, start, now));
    Ok(StatusCode::ACCEPTED)
}

async fn update_station(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<UpdateStationRequest>,
) -> SimResult<StatusCode> {
    let i = installation_id(&p)?;
    let cs = param(&p, "cs").to_string();
    let store = s.read();
    store.require_owner(&a, i, "change a charging station's settings")?;
    let plugged = store.station(i, &cs)?.plugged();
    drop(store);
    let tariffs = checked_settings(&req)?;
    if plugged && req.led_power.is_some() {
        return Err(unplug_first(&cs, "ledPower"));
    }
    if plugged && !tariffs.is_empty() {
        return Err(unplug_first(&cs, "the tariffX parameters"));
    }
    after_delay(&s, move |store, _now| {
        let Some(st) = store.stations.get_mut(&cs) else { return vec![] };
        let mut changed = serde_json::Map::new();
        if let Some(name) = req.friendly_name {
            st.friendly_name = name.trim().to_string();
            changed.insert("friendlyName".into(), json!(st.friendly_name));
        }
        if let Some(led) = req.led_power {
            st.led_power = led;
            changed.insert("ledPower".into(), json!(led));
        }
        if let Some(avg) = req.average_ev_consumption {
            st.average_ev_consumption = avg;
            st.is_default_average_ev_consumption = false;
            changed.insert("averageEvConsumption".into(), json!(avg));
        }
        for (n, t) in tariffs {
            st.tariff_types[n - 1] = t;
            changed.insert(format!("tariff{n}"), json!(t.code()));
        }
        let notice = Notice {
            installation_id: st.installation_id,
            station_id: Some(st.id.clone()),
            event_type: events::SETTINGS_UPDATED,
            data: json!({"installationId": st.installation_id, "chargingStationId": st.id, "changed": changed}),
        };
        vec![notice]
    });
    Ok(StatusCode::ACCEPTED)
}

/// The settings of an update, each within the bounds the upstream documents, and the tariff
/// switches it names; an update naming nothing is refused.
fn checked_settings(req: &UpdateStationRequest) -> SimResult<Vec<(usize, TariffType)>> {
    if let Some(name) = &req.friendly_name
        && (name.trim().is_empty() || name.chars().count() > 64)
    {
        return Err(SimError::bad_request("friendlyName must be 1 to 64 characters"));
    }
    if let Some(led) = req.led_power
        && !(0..=100).contains(&led)
    {
        return Err(SimError::bad_request(format!("ledPower must be between 0 and 100, got {led}")));
    }
    if let Some(avg) = req.average_ev_consumption
        && !(avg.is_finite() && avg > 0.0 && avg <= 100.0)
    {
        return Err(SimError::bad_request(format!(
            "averageEvConsumption must be more than 0 and at most 100 kWh/100 km, got {avg}"
        )));
    }
    let mut tariffs = Vec::new();
    for (n, value) in req.tariffs() {
        if let Some(v) = value {
            let t = TariffType::parse(v)
                .ok_or_else(|| SimError::bad_request(format!("tariff{n} must be 'hc' or 'hp', got '{v}'")))?;
            tariffs.push((n, t));
        }
    }
    if req.friendly_name.is_none()
        && req.led_power.is_none()
        && req.average_ev_consumption.is_none()
        && tariffs.is_empty()
    {
        return Err(SimError::bad_request(
            "the body names nothing to update (friendlyName, ledPower, averageEvConsumption, tariff1 … tariff10)",
        ));
    }
    Ok(tariffs)
}

// ---- measures ----

#[derive(Clone, Copy)]
enum Device {
    Station,
    Meter,
}

fn measures(device: Device) -> Vec<MeasureModel> {
    let cost = match device {
        Device::Station => "ChargingCost",
        Device::Meter => "ConsumptionCost",
    };
    vec![
        MeasureModel {
            measure_id: "1".into(),
            name: "EnergyConsumption".into(),
            kind: "Energy".into(),
            unit: "kWh".into(),
            periodicity: "10m".into(),
        },
        MeasureModel {
            measure_id: "2".into(),
            name: cost.into(),
            kind: "Cost".into(),
            unit: "eur".into(),
            periodicity: "10m".into(),
        },
    ]
}

fn find_measure(device: Device, id: &str) -> SimResult<MeasureModel> {
    measures(device)
        .into_iter()
        .find(|m| m.measure_id == id)
        .ok_or_else(|| SimError::not_found(format!("measure {id} not found")))
}

/// Checks the caller may read the device (and its consumptions, with `costs`); returns the station
/// whose history drives it.
fn device_station<'a>(
    store: &'a Store,
    a: &Account,
    p: &BTreeMap<String, String>,
    device: Device,
    costs: bool,
) -> SimResult<&'a store::Station> {
    let i = installation_id(p)?;
    if costs {
        store.require_owner(a, i, "see costs or consumptions")?;
    } else {
        store.role(a, i)?;
    }
    match device {
        Device::Station => store.station(i, param(p, "cs")),
        Device::Meter => {
            let m = store.meter(i, param(p, "gm"))?;
            if costs && !m.authorize_tic {
                return Err(SimError::forbidden(format!(
                    "TIC data transmission is not authorized for grid meter {}: give consent with authorize-tic first",
                    m.id
                )));
            }
            store
                .stations
                .get(&m.station_id)
                .ok_or_else(|| SimError::not_found(format!("grid meter {} has no station", m.id)))
        }
    }
}

async fn list_measures(
    device: Device,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
) -> SimResult<Json<Vec<MeasureModel>>> {
    device_station(&s.read(), &a, &p, device, false)?;
    Ok(Json(measures(device)))
}

async fn get_measure(
    device: Device,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
) -> SimResult<Json<MeasureModel>> {
    device_station(&s.read(), &a, &p, device, false)?;
    find_measure(device, param(&p, "m")).map(Json)
}

async fn measure_values(
    device: Device,
    op: Operator,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
    req: RangeRequest,
) -> SimResult<Json<Vec<series::Row>>> {
    let store = s.read();
    let st = device_station(&store, &a, &p, device, true)?;
    let m = find_measure(device, param(&p, "m"))?;
    let (from, to, step) = range(&req, true)?;
    let quantity = match (device, m.measure_id.as_str()) {
        (Device::Station, "1") => Quantity::StationEnergy,
        (Device::Station, _) => Quantity::StationCost,
        (Device::Meter, "1") => Quantity::HouseEnergy,
        (Device::Meter, _) => Quantity::HouseCost,
    };
    let profile = store.profile(st);
    let prices = store.prices(st);
    let series = series::Series { profile: &profile, live: &st.live_sessions, prices: &prices, quantity };
    Ok(Json(series.aggregate(from, to, Utc::now(), op, step)))
}

// ---- logs ----

fn logs_of(device: Device) -> &'static [(&'static str, &'static str)] {
    match device {
        Device::Station => &series::STATION_LOGS,
        Device::Meter => &series::METER_LOGS,
    }
}

fn log_models(device: Device) -> Vec<LogModel> {
    logs_of(device)
        .iter()
        .map(|(id, name)| LogModel { log_id: id.to_string(), name: name.to_string(), periodicity: "Immediate".into() })
        .collect()
}

fn find_log(device: Device, id: &str) -> SimResult<&'static str> {
    logs_of(device)
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, n)| *n)
        .ok_or_else(|| SimError::not_found(format!("log {id} not found")))
}

async fn list_logs(
    device: Device,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
) -> SimResult<Json<Vec<LogModel>>> {
    device_station(&s.read(), &a, &p, device, false)?;
    Ok(Json(log_models(device)))
}

async fn get_log(device: Device, s: AppState, a: Account, p: BTreeMap<String, String>) -> SimResult<Json<LogModel>> {
    device_station(&s.read(), &a, &p, device, false)?;
    let name = find_log(device, param(&p, "l"))?;
    Ok(Json(log_models(device).into_iter().find(|l| l.name == name).unwrap_or_else(|| LogModel {
        log_id: param(&p, "l").into(),
        name: name.into(),
        periodicity: "Immediate".into(),
    })))
}

/// Entries of one log (or all, with `log` None), without costs and energy for installers.
fn log_entries(
    device: Device,
    s: &AppState,
    a: &Account,
    p: &BTreeMap<String, String>,
    log: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> SimResult<Vec<series::LogEntry>> {
    let store = s.read();
    let st = device_station(&store, a, p, device, false)?;
    let installer = store.role(a, installation_id(p)?)? == Role::Installer;
    let now = Utc::now();
    let mut entries = match device {
        Device::Station => store.station_logs(st, from, to, log, now),
        Device::Meter => store.meter_logs(store.meter(installation_id(p)?, param(p, "gm"))?, from, to, log, now),
    };
    if installer {
        for e in entries.iter_mut().filter(|e| e.log_name == "SessionEnd") {
            if let Some(map) = e.value.as_object_mut() {
                map.remove("cost");
                map.remove("energy");
            }
        }
    }
    Ok(entries)
}

async fn log_list(
    device: Device,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
    req: RangeRequest,
) -> SimResult<Json<Vec<Value>>> {
    let name = find_log(device, param(&p, "l"))?;
    let (from, to, _) = range(&req, false)?;
    Ok(Json(log_entries(device, &s, &a, &p, Some(name), from, to)?.iter().map(series::LogEntry::to_json).collect()))
}

async fn log_count(
    device: Device,
    s: AppState,
    a: Account,
    p: BTreeMap<String, String>,
    req: RangeRequest,
) -> SimResult<Json<Vec<Value>>> {
    let name = find_log(device, param(&p, "l"))?;
    let (from, to, step) = range(&req, true)?;
    let entries = log_entries(device, &s, &a, &p, Some(name), from, to)?;
    Ok(Json(series::count_entries(&entries, step, name)))
}

async fn all_logs_list(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<RangeRequest>,
) -> SimResult<Json<Vec<Value>>> {
    let (from, to, _) = range(&req, false)?;
    Ok(Json(log_entries(Device::Station, &s, &a, &p, None, from, to)?.iter().map(series::LogEntry::to_json).collect()))
}

// ---- grid meters ----

async fn list_meters(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<Value>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    let role = store.role(&a, i)?;
    let now = Utc::now();
    Ok(Json(store.meters_of(i).map(|m| store.meter_json(m, now, hide_costs(role))).collect()))
}

async fn get_meter(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Value>> {
    let i = installation_id(&p)?;
    let store = s.read();
    let role = store.role(&a, i)?;
    Ok(Json(store.meter_json(store.meter(i, param(&p, "gm"))?, Utc::now(), hide_costs(role))))
}

async fn authorize_tic(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Body(req): Body<AuthorizeTicRequest>,
) -> SimResult<Json<Value>> {
    let i = installation_id(&p)?;
    let gm = param(&p, "gm");
    let mut store = s.write();
    store.require_owner(&a, i, "change the TIC consent")?;
    let consent = req.authorize_tic.ok_or_else(|| SimError::bad_request("authorizeTIC is required (true or false)"))?;
    store.meter_mut(i, gm)?.authorize_tic = consent;
    let m = store.meter(i, gm)?;
    Ok(Json(store.meter_json(m, Utc::now(), false)))
}

async fn list_tariffs(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Vec<Value>>> {
    let i = installation_id(&p)?;
    let store = s.read();
    store.require_owner(&a, i, "see tariff prices")?;
    Ok(Json(store.tariff_models(store.meter(i, param(&p, "gm"))?)))
}

async fn get_tariff(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
) -> SimResult<Json<Value>> {
    let i = installation_id(&p)?;
    let store = s.read();
    store.require_owner(&a, i, "see tariff prices")?;
    let m = store.meter(i, param(&p, "gm"))?;
    let raw = param(&p, "t");
    let id = TariffId::parse(raw).filter(|id| m.tariffs.contains_key(id)).ok_or_else(|| {
        SimError::not_found(format!(
            "tariff {raw} not found on grid meter {} ({} subscription)",
            m.id,
            m.subscription.code()
        ))
    })?;
    Ok(Json(store::tariff_json(id, &m.tariffs[&id])))
}

async fn set_tariffs(
    State(s): State<AppState>,
    Extension(a): Extension<Account>,
    Params(p): Params,
    Items(req): Items<TariffPriceRequest>,
) -> SimResult<Json<Vec<Value>>> {
    let i = installation_id(&p)?;
    let gm = param(&p, "gm");
    let mut store = s.write();
    store.require_owner(&a, i, "set tariff prices")?;
    let m = store.meter(i, gm)?;
    let expected = m.subscription.tariff_ids();
    let names = || expected.iter().map(|t| t.code()).collect::<Vec<_>>().join(", ");
    let mut seen = BTreeMap::new();
    for (n, t) in req.into_iter().enumerate() {
        let raw = t.id.clone().unwrap_or_default();
        let id = TariffId::parse(&raw).filter(|id| expected.contains(id)).ok_or_else(|| {
            SimError::bad_request(format!(
                "[{n}].id '{raw}' is not a tariff of the {} subscription (expected {})",
                m.subscription.code(),
                names()
            ))
        })?;
        let value = t.value.ok_or_else(|| SimError::bad_request(format!("[{n}].value is required")))?;
        if !value.is_finite() || value < 0.0 {
            return Err(SimError::bad_request(format!("[{n}].value must be a price of 0 or more, got {value}")));
        }
        let currency = t.currency.unwrap_or_else(|| "eur".into()).to_ascii_lowercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(SimError::bad_request(format!(
                "[{n}].currency must be a 3-letter code such as eur, got '{currency}'"
            )));
        }
        let begin = match &t.begin_date {
            Some(_) => parse_date(&format!("[{n}].beginDate"), t.begin_date.as_ref())?,
            None => Utc::now(),
        };
        if seen.insert(id, (value, currency, begin, t.friendly_name)).is_some() {
            return Err(SimError::bad_request(format!("[{n}].id '{raw}' is given twice")));
        }
    }
    let missing: Vec<String> = expected.iter().filter(|t| !seen.contains_key(t)).map(|t| t.code()).collect();
    if !missing.is_empty() {
        return Err(SimError::bad_request(format!(
            "a {} subscription needs a price for every one of its tariffs ({}); missing: {}",
            m.subscription.code(),
            names(),
            missing.join(", ")
        )));
    }
    let meter = store.meter_mut(i, gm)?;
    for (id, (value, currency, begin, name)) in seen {
        if let Some(t) = meter.tariffs.get_mut(&id) {
            t.values.retain(|(b, _)| *b != begin);
            t.values.push((begin, value));
            t.currency = currency;
            t.is_default = false;
            if let Some(n) = name.filter(|n| !n.trim().is_empty()) {
                t.friendly_name = n;
            }
        }
    }
    let m = store.meter(i, gm)?;
    Ok(Json(store.tariff_models(m)))
}

// ---- the table ----

/// One upstream route: its documentation and its handler.
pub struct ApiRoute {
    pub method: Method,
    /// The template, with the parameter names of ROUTES.md.
    pub path: String,
    pub summary: &'static str,
    pub status: u16,
    /// Schema name of the request body, if any.
    pub request: Option<&'static str>,
    /// Schema name of the answer (`[Name]` for an array), if any.
    pub response: Option<&'static str>,
    pub handler: MethodRouter<AppState>,
}

macro_rules! device_handler {
    ($device:expr, $f:ident) => {
        |State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params| $f($device, s, a, p)
    };
    ($device:expr, $f:ident, body) => {
        |State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params, Body(r): Body<RangeRequest>| {
            $f($device, s, a, p, r)
        }
    };
}

fn op_routes(device: Device, base: &'static str, out: &mut Vec<ApiRoute>) {
    let ops: [(&'static str, Operator); 4] = [
        ("sum", Operator::Sum),
        ("count", Operator::Count),
        ("average", Operator::Average),
        ("min-max", Operator::MinMax),
    ];
    for (name, op) in ops {
        out.push(ApiRoute {
            method: Method::POST,
            path: format!("{base}/measures/{{m}}/operators/{name}"),
            summary: "Measure values aggregated by the operator, grouped by date step and tariff type",
            status: 200,
            request: Some("RangeRequest"),
            response: Some("[AggregationPoint]"),
            handler: post(
                move |State(s): State<AppState>,
                      Extension(a): Extension<Account>,
                      Params(p): Params,
                      Body(r): Body<RangeRequest>| { measure_values(device, op, s, a, p, r) },
            ),
        });
    }
}

/// The 50 routes of ROUTES.md.
pub fn table() -> Vec<ApiRoute> {
    const CS: &str = "/installations/{i}/charging-stations/{cs}";
    const GM: &str = "/installations/{i}/grid-meters/{gm}";
    let r = |method: Method,
             path: &'static str,
             summary: &'static str,
             status: u16,
             request: Option<&'static str>,
             response: Option<&'static str>,
             handler: MethodRouter<AppState>| ApiRoute {
        method,
        path: path.to_string(),
        summary,
        status,
        request,
        response,
        handler,
    };
    let mut out = vec![
        r(
            Method::GET,
            "/installations",
            "The caller's installations",
            200,
            None,
            Some("[InstallationModel]"),
            get(list_installations),
        ),
        r(
            Method::POST,
            "/installations",
            "Create an installation",
            201,
            Some("CreateInstallationRequest"),
            Some("InstallationModel"),
            post(create_installation),
        ),
        r(
            Method::GET,
            "/installations/{i}/event-subscriptions",
            "The caller's event subscriptions",
            200,
            None,
            Some("[EventSubscriptionModel]"),
            get(list_event_subscriptions),
        ),
        r(
            Method::GET,
            "/installations/{i}/event-subscriptions/{id}",
            "One event subscription",
            200,
            None,
            Some("EventSubscriptionModel"),
            get(get_event_subscription),
        ),
        r(
            Method::POST,
            "/installations/{i}/event-subscriptions",
            "Subscribe a webhook to notifications",
            201,
            Some("CreateEventSubscriptionRequest"),
            Some("EventSubscriptionModel"),
            post(create_event_subscription),
        ),
        r(
            Method::DELETE,
            "/installations/{i}/event-subscriptions",
            "Delete all the caller's event subscriptions",
            204,
            None,
            None,
            delete(delete_event_subscriptions),
        ),
        r(
            Method::DELETE,
            "/installations/{i}/event-subscriptions/{id}",
            "Delete one event subscription",
            204,
            None,
            None,
            delete(delete_event_subscription),
        ),
        r(
            Method::POST,
            "/installations/{i}/invitations",
            "Invite an installer",
            201,
            Some("InvitationRequest"),
            Some("InvitationModel"),
            post(invite),
        ),
        r(
            Method::GET,
            "/installations/{i}/invitations",
            "Pending invitations",
            200,
            None,
            Some("[InvitationModel]"),
            get(list_invitations),
        ),
        r(
            Method::DELETE,
            "/installations/{i}/invitations/{email}",
            "Cancel a pending invitation",
            204,
            None,
            None,
            delete(cancel_invitation),
        ),
        r(
            Method::POST,
            "/invitations/operators/accept/{activationCode}",
            "Accept an invitation (installer accounts only)",
            200,
            None,
            Some("InstallationModel"),
            post(accept_invitation),
        ),
        r(
            Method::GET,
            "/installations/{i}/users",
            "The installation's users",
            200,
            None,
            Some("[UserModel]"),
            get(list_users),
        ),
        r(
            Method::POST,
            "/installations/{i}/users/{accountId}/operators/disable",
            "Disable an installer",
            204,
            None,
            None,
            post(|State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params| {
                set_enabled(s, a, p, false)
            }),
        ),
        r(
            Method::POST,
            "/installations/{i}/users/{accountId}/operators/enable",
            "Enable an installer",
            204,
            None,
            None,
            post(|State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params| {
                set_enabled(s, a, p, true)
            }),
        ),
        r(
            Method::DELETE,
            "/installations/{i}/users/{accountId}",
            "Remove an installer",
            204,
            None,
            None,
            delete(remove_user),
        ),
        r(
            Method::GET,
            "/installations/{i}/charging-stations",
            "The installation's charging stations",
            200,
            None,
            Some("[ChargingStationModel]"),
            get(list_stations),
        ),
        r(
            Method::GET,
            "/installations/{i}/charging-stations/{cs}",
            "One charging station",
            200,
            None,
            Some("ChargingStationModel"),
            get(get_station),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations",
            "Associate a charging station (uid or qrCode)",
            201,
            Some("AssociateStationRequest"),
            Some("ChargingStationModel"),
            post(associate_station),
        ),
        r(
            Method::DELETE,
            "/installations/{i}/charging-stations/{cs}",
            "Dissociate a charging station",
            204,
            None,
            None,
            delete(remove_station),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/operators/set-charge-mode",
            "Set the charge mode (no car plugged)",
            202,
            Some("SetChargeModeRequest"),
            None,
            post(set_charge_mode),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/operators/start",
            "Start charging the plugged car",
            202,
            None,
            None,
            post(|State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params| {
                start_stop(s, a, p, true)
            }),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/operators/stop",
            "Stop charging the plugged car",
            202,
            None,
            None,
            post(|State(s): State<AppState>, Extension(a): Extension<Account>, Params(p): Params| {
                start_stop(s, a, p, false)
            }),
        ),
        r(
            Method::PUT,
            "/installations/{i}/charging-stations/{cs}",
            "Update a charging station's settings",
            202,
            Some("UpdateStationRequest"),
            None,
            put(update_station),
        ),
        r(
            Method::GET,
            "/installations/{i}/charging-stations/{cs}/measures",
            "The station's measures",
            200,
            None,
            Some("[MeasureModel]"),
            get(device_handler!(Device::Station, list_measures)),
        ),
        r(
            Method::GET,
            "/installations/{i}/charging-stations/{cs}/measures/{m}",
            "One station measure",
            200,
            None,
            Some("MeasureModel"),
            get(device_handler!(Device::Station, get_measure)),
        ),
    ];
    op_routes(Device::Station, CS, &mut out);
    out.extend([
        r(
            Method::GET,
            "/installations/{i}/charging-stations/{cs}/logs",
            "The station's logs",
            200,
            None,
            Some("[LogModel]"),
            get(device_handler!(Device::Station, list_logs)),
        ),
        r(
            Method::GET,
            "/installations/{i}/charging-stations/{cs}/logs/{l}",
            "One station log",
            200,
            None,
            Some("LogModel"),
            get(device_handler!(Device::Station, get_log)),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/logs/{l}/operators/count",
            "Count a log's entries by step",
            200,
            Some("RangeRequest"),
            Some("[LogCount]"),
            post(device_handler!(Device::Station, log_count, body)),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/logs/{l}/operators/list",
            "A log's entries",
            200,
            Some("RangeRequest"),
            Some("[LogValue]"),
            post(device_handler!(Device::Station, log_list, body)),
        ),
        r(
            Method::POST,
            "/installations/{i}/charging-stations/{cs}/logs/operators/list",
            "Every log's entries",
            200,
            Some("RangeRequest"),
            Some("[LogValue]"),
            post(all_logs_list),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters",
            "The installation's grid meters",
            200,
            None,
            Some("[GridMeterModel]"),
            get(list_meters),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}",
            "One grid meter",
            200,
            None,
            Some("GridMeterModel"),
            get(get_meter),
        ),
        r(
            Method::POST,
            "/installations/{i}/grid-meters/{gm}/operators/authorize-tic",
            "Give or withdraw the TIC consent",
            200,
            Some("AuthorizeTicRequest"),
            Some("GridMeterModel"),
            post(authorize_tic),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/measures",
            "The meter's measures",
            200,
            None,
            Some("[MeasureModel]"),
            get(device_handler!(Device::Meter, list_measures)),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/measures/{m}",
            "One meter measure",
            200,
            None,
            Some("MeasureModel"),
            get(device_handler!(Device::Meter, get_measure)),
        ),
    ]);
    op_routes(Device::Meter, GM, &mut out);
    out.extend([
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/logs",
            "The meter's logs",
            200,
            None,
            Some("[LogModel]"),
            get(device_handler!(Device::Meter, list_logs)),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/logs/{l}",
            "One meter log",
            200,
            None,
            Some("LogModel"),
            get(device_handler!(Device::Meter, get_log)),
        ),
        r(
            Method::POST,
            "/installations/{i}/grid-meters/{gm}/logs/{l}/operators/count",
            "Count a meter log's entries by step",
            200,
            Some("RangeRequest"),
            Some("[LogCount]"),
            post(device_handler!(Device::Meter, log_count, body)),
        ),
        r(
            Method::POST,
            "/installations/{i}/grid-meters/{gm}/logs/{l}/operators/list",
            "A meter log's entries",
            200,
            Some("RangeRequest"),
            Some("[LogValue]"),
            post(device_handler!(Device::Meter, log_list, body)),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/tariffs",
            "Every tariff with its price history",
            200,
            None,
            Some("[TariffModel]"),
            get(list_tariffs),
        ),
        r(
            Method::GET,
            "/installations/{i}/grid-meters/{gm}/tariffs/{t}",
            "One tariff with its price history",
            200,
            None,
            Some("TariffModel"),
            get(get_tariff),
        ),
        r(
            Method::POST,
            "/installations/{i}/grid-meters/{gm}/tariffs",
            "Set the subscription's tariff prices (all of them)",
            200,
            Some("[TariffPriceRequest]"),
            Some("[TariffModel]"),
            post(set_tariffs),
        ),
    ]);
    out
}

/// The upstream routes behind the platform layers (outermost first: count, faults, key, bearer).
pub fn api_router(state: AppState) -> Router<AppState> {
    let mut router = Router::new();
    for route in table() {
        router = router.route(&route.path, route.handler);
    }
    router
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            SimError::not_found(format!("no route {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            SimError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), platform::require_bearer))
        .route_layer(middleware::from_fn_with_state(state.clone(), platform::require_api_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), platform::inject_faults))
        .route_layer(middleware::from_fn_with_state(state, platform::count_calls))
}
