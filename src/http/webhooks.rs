//! `POST /webhooks/witty/{key}`: where the upstream delivers notifications (Azure Event Grid's
//! shape). The key in the path (one per installation, made from the webhook secret) is checked
//! before the body is read; events about another installation than the key's are dropped; the validation handshake
//! is answered; notifications are acknowledged at once and handled after the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::live::{DeliveryKind, Live};
use crate::upstream::notifications::GridEvent;

/// Largest delivery accepted (Event Grid batches are at most 1 MB).
pub(super) const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(super) async fn receive(
    State(live): State<Arc<Live>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(installation) = live.webhook_installation(&key) else {
        return refuse(StatusCode::NOT_FOUND, "no such webhook");
    };
    let kind_header = headers.get("aeg-event-type").and_then(|v| v.to_str().ok());
    let Some(kind) = DeliveryKind::from_header(kind_header) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "aeg-event-type must be SubscriptionValidation, Notification or SubscriptionDeletion",
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refusal(rejection),
    };
    live.metrics().webhook_deliveries.with_label_values(&[kind.name()]).inc();
    let events = match events_of(&body) {
        Ok(events) => events,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, &problem),
    };
    let subscription = headers.get("aeg-subscription-name").and_then(|v| v.to_str().ok());
    match kind {
        DeliveryKind::SubscriptionValidation => match live.validation_code(installation, subscription, &events) {
            Some(code) => Json(json!({ "validationResponse": code })).into_response(),
            None => refuse(StatusCode::BAD_REQUEST, "no SubscriptionValidationEvent with a validationCode"),
        },
        DeliveryKind::Notification => match readable(&live, installation, events) {
            Ok(events) => notify(&live, installation, subscription, events),
            Err(problem) => refuse(StatusCode::BAD_REQUEST, &problem),
        },
        DeliveryKind::SubscriptionDeletion => {
            live.subscription_deleted(installation, subscription);
            StatusCode::OK.into_response()
        }
    }
}

fn body_refusal(rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let limit = MAX_DELIVERY_BYTES / 1024;
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a delivery is at most {limit} KiB; send fewer events at once"),
        );
    }
    refuse(rejection.status(), &rejection.body_text())
}

/// An array of events; a single event not wrapped in one is accepted too. The error names what
/// was wrong with what was sent.
pub(crate) fn events_of(body: &[u8]) -> Result<Vec<GridEvent>, String> {
    let array = body.trim_ascii_start().starts_with(b"[");
    let events = match array {
        true => serde_json::from_slice::<Vec<GridEvent>>(body),
        false => serde_json::from_slice::<GridEvent>(body).map(|e| vec![e]),
    };
    events.map_err(|e| {
        let what = if array { "an array of Event Grid events" } else { "an Event Grid event (or an array of them)" };
        format!("the body is not {what}: {e}")
    })
}

/// The events of a notification that can be told apart, dated and placed. The others are dropped,
/// logged and counted rather than refusing the delivery: Event Grid does not send a batch refused
/// with 400 again, so a refusal would lose them all. Refused only when none is readable.
fn readable(live: &Live, installation: i64, events: Vec<GridEvent>) -> Result<Vec<GridEvent>, String> {
    let total = events.len();
    let mut first_problem = None;
    let events: Vec<GridEvent> = events
        .into_iter()
        .enumerate()
        .filter(|(n, e)| match crate::live::unreadable_event(e) {
            None => true,
            Some(why) => {
                tracing::warn!(installation, event = n, id = %e.id, problem = %why, "an unreadable event was dropped");
                live.metrics().events.with_label_values(&["unreadable"]).inc();
                first_problem.get_or_insert_with(|| format!("event {n} of the delivery (id '{}'): {why}", e.id));
                false
            }
        })
        .map(|(_, e)| e)
        .collect();
    match first_problem {
        Some(problem) if events.is_empty() => {
            Err(format!("no event of the delivery ({total}) could be read; the first: {problem}"))
        }
        _ => Ok(events),
    }
}

/// Hands a delivery's events to the intake (answered at once; handled afterwards).
fn notify(live: &Live, installation: i64, subscription: Option<&str>, events: Vec<GridEvent>) -> Response {
    match live.accept(installation, subscription, events) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => {
            let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, "too many deliveries waiting; deliver again later");
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            r
        }
    }
}
