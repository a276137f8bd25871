//! `POST /webhooks/witty/{key}`: where the upstream delivers notifications (Azure Event Grid's
//! shape). The key in the path (one per installation, made from the webhook secret) is checked
//! before the body is read; events about another installation than the key's are dropped; the validation handshake
//! is answered; notifications are acknowledged at once and handled after the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::live::{DeliveryKind, Live};
use crate::upstream::notifications::GridEvent;

/// Largest delivery accepted (Event Grid batches are at most 1 MB).
pub const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn receive(
    State(live): State<Arc<Live>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
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
    live.metrics().webhook_deliveries.with_label_values(&[kind.name()]).inc();
    let subscription = headers.get("aeg-subscription-name").and_then(|v| v.to_str().ok());
    let events: Vec<GridEvent> = match serde_json::from_slice::<Vec<GridEvent>>(&body) {
        Ok(events) => events,
        // A single event not wrapped in an array is accepted too.
        Err(_) => match serde_json::from_slice::<GridEvent>(&body) {
            Ok(e) => vec![e],
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("the body is not an array of events: {e}")),
        },
    };
    match kind {
        DeliveryKind::SubscriptionValidation => match live.validation_code(installation, subscription, &events) {
            Some(code) => Json(json!({ "validationResponse": code })).into_response(),
            None => refuse(StatusCode::BAD_REQUEST, "no SubscriptionValidationEvent with a validationCode"),
        },
        DeliveryKind::Notification => match live.accept(installation, subscription, events) {
            Ok(()) => StatusCode::OK.into_response(),
            Err(_) => {
                let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, "too many deliveries waiting; deliver again later");
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                r
            }
        },
        DeliveryKind::SubscriptionDeletion => {
            live.subscription_deleted(installation, subscription);
            StatusCode::OK.into_response()
        }
    }
}
