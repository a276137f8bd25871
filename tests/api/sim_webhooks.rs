//! Notifications as Azure Event Grid delivers them, received by a small webhook receiver started
//! inside each test: the validation handshake, the event shape, filters, retries, and event
//! subscriptions per user.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::helpers::*;

const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
const CABLE_PLUGGED: &str = "Hager.WittyHome.CablePlugged";
const CABLE_UNPLUGGED: &str = "Hager.WittyHome.CableUnplugged";
const SESSION_STARTED: &str = "Hager.WittyHome.SessionStarted";
const SESSION_ENDED: &str = "Hager.WittyHome.SessionEnded";
/// How long a receiver must stay silent to show that nothing was delivered to it.
const QUIET: Duration = Duration::from_millis(600);

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    /// `aeg-event-type`: SubscriptionValidation, Notification, …
    kind: String,
    /// `aeg-delivery-count`: 0 for a first attempt.
    attempt: String,
    body: Value,
    /// Whether the receiver had already answered the validation when this arrived.
    after_validation: bool,
}

impl Delivery {
    fn events(&self) -> &[Value] {
        self.body.as_array().map(Vec::as_slice).unwrap_or_default()
    }

    fn event_ids(&self) -> Vec<String> {
        self.events().iter().map(|e| e["id"].as_str().unwrap_or_default().to_string()).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers the validation with its code and every notification with 200.
    Validates,
    /// Answers the validation with a wrong code.
    AnswersWrongCode,
    /// Validates, then answers 500 to the first notification.
    RefusesFirstNotification,
}

struct ReceiverState {
    behaviour: Behaviour,
    deliveries: mpsc::UnboundedSender<Delivery>,
    /// Holds the validation answer back until it turns true.
    gate: watch::Receiver<bool>,
    validated: AtomicBool,
    refused_one: AtomicBool,
}

/// A webhook endpoint on `127.0.0.1:0` that records each delivery into a channel.
struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    gate: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// Events of notifications already received but not yet asked for by [`Receiver::event`].
    unclaimed: Vec<(Value, Delivery)>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn hook(State(st): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> Response {
    let kind = header(&headers, "aeg-event-type");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = st.deliveries.send(Delivery {
        kind: kind.clone(),
        attempt: header(&headers, "aeg-delivery-count"),
        body: body.clone(),
        after_validation: st.validated.load(Ordering::SeqCst),
    });
    if kind == "SubscriptionValidation" {
        let mut gate = st.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        if st.behaviour == Behaviour::AnswersWrongCode {
            return Json(json!({"validationResponse": "not-the-code"})).into_response();
        }
        st.validated.store(true, Ordering::SeqCst);
        return Json(json!({"validationResponse": body[0]["data"]["validationCode"]})).into_response();
    }
    if st.behaviour == Behaviour::RefusesFirstNotification
        && kind == "Notification"
        && !st.refused_one.swap(true, Ordering::SeqCst)
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    StatusCode::OK.into_response()
}

impl Receiver {
    /// Starts a receiver; with `hold_validation`, it answers the validation only after `release`.
    async fn start(behaviour: Behaviour, hold_validation: bool) -> Receiver {
        let (tx, deliveries) = mpsc::unbounded_channel();
        let (gate, gate_rx) = watch::channel(!hold_validation);
        let state = Arc::new(ReceiverState {
            behaviour,
            deliveries: tx,
            gate: gate_rx,
            validated: AtomicBool::new(false),
            refused_one: AtomicBool::new(false),
        });
        let sim = Router::new().route("/hook", post(hook)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, sim).await;
        });
        Receiver { url, deliveries, gate, server, unclaimed: Vec::new() }
    }

    fn release_validation(&self) {
        let _ = self.gate.send(true);
    }

    /// The next delivery, within [`PATIENCE`].
    async fn next(&mut self) -> Delivery {
        timeout(PATIENCE, self.deliveries.recv())
            .await
            .expect("a delivery within PATIENCE")
            .expect("the receiver is running")
    }

    /// Waits for a notification carrying an event of `event_type`; returns it and its delivery.
    /// Other events of the deliveries read meanwhile are kept for later calls.
    async fn event(&mut self, event_type: &str) -> (Value, Delivery) {
        loop {
            if let Some(n) = self.unclaimed.iter().position(|(e, _)| e["eventType"] == event_type) {
                return self.unclaimed.remove(n);
            }
            let d = self.next().await;
            if d.kind == "Notification" {
                self.unclaimed.extend(d.events().iter().map(|e| (e.clone(), d.clone())));
            }
        }
    }

    /// Asserts that no notification arrives for a while (a `SubscriptionDeletion` farewell is not
    /// a notification).
    async fn assert_quiet(&mut self, why: &str) {
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(d)) = tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
            if d.kind != "SubscriptionDeletion" {
                panic!("{why}, yet this arrived: {d:?}");
            }
        }
    }
}

fn subscriptions(i: i64) -> String {
    format!("/installations/{i}/event-subscriptions")
}

/// Subscribes `url` for `sub` on installation `i`, with extra fields; asserts 201.
async fn subscribe(sim: &TestSim, sub: &str, i: i64, url: &str, extra: Value) -> Value {
    let mut body = json!({"protocolCode": "Webhook", "protocolData": url});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let r = sim.post(sub, &subscriptions(i), body.clone()).await;
    assert_eq!(r.status, 201, "{body}: {:?}", r.body);
    r.body
}

/// Waits until the subscription reaches `state`.
async fn state_becomes(sim: &TestSim, sub: &str, i: i64, id: &str, state: &str) -> Value {
    eventually(&format!("subscription {id} to be {state}"), || async {
        let r = sim.get(sub, &format!("{}/{id}", subscriptions(i))).await;
        (r.body["state"] == state).then_some(r.body)
    })
    .await
}

/// A receiver already validated for `sub`'s subscription on `i`.
async fn validated(sim: &TestSim, sub: &str, i: i64, behaviour: Behaviour, extra: Value) -> (Receiver, String) {
    let mut rx = Receiver::start(behaviour, false).await;
    let model = subscribe(sim, sub, i, &rx.url, extra).await;
    let id = model["eventSubscriptionId"].as_str().unwrap().to_string();
    assert_eq!(rx.next().await.kind, "SubscriptionValidation");
    state_becomes(sim, sub, i, &id, "Created").await;
    (rx, id)
}

fn assert_event_grid_shape(e: &Value, event_type: &str, subject: &str, installation: i64) {
    let keys: BTreeSet<&str> = e.as_object().expect("an event object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "eventType", "subject", "eventTime", "data", "dataVersion", "metadataVersion", "topic"]),
        "{e}"
    );
    assert_eq!(e["eventType"], event_type);
    assert_eq!(e["subject"], subject);
    assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok(), "{e}");
    let at: DateTime<Utc> = e["eventTime"].as_str().unwrap().parse().expect("an ISO 8601 eventTime");
    assert!((Utc::now() - at).num_seconds().abs() < 60, "{e}");
    assert!(e["dataVersion"].as_str().is_some_and(|v| !v.is_empty()), "{e}");
    assert!(e["metadataVersion"].as_str().is_some_and(|v| !v.is_empty()), "{e}");
    assert!(e["topic"].as_str().is_some_and(|t| t.contains(&installation.to_string())), "{e}");
    assert!(e["data"].is_object(), "{e}");
}

#[tokio::test]
async fn a_subscription_is_validated_then_gets_event_grid_deliveries() {
    let app = spawn_app().await;
    let sim = app.sim();
    let mut rx = Receiver::start(Behaviour::Validates, false).await;
    let model = subscribe(sim, "alice", ALICE_INSTALLATION, &rx.url, json!({})).await;
    let id = model["eventSubscriptionId"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{model}");
    assert_eq!(model["installationId"], ALICE_INSTALLATION);
    assert_eq!(model["userId"], sim.account_id("alice").await);
    assert_eq!(model["protocolCode"], "webhook");
    assert_eq!(model["protocolData"], rx.url.as_str());
    assert_eq!(model["filter"], json!({"subjectBeginsWith": "", "subjectEndsWith": ""}));
    assert_eq!(model["state"], "Creating", "not validated yet");
    assert_eq!(model["modificationDate"], "0001-01-01T00:00:00Z");
    let created: DateTime<Utc> = model["creationDate"].as_str().unwrap().parse().unwrap();
    assert!((Utc::now() - created).num_seconds().abs() < 60);

    // The handshake: one validation event, with a code to echo.
    let v = rx.next().await;
    assert_eq!(v.kind, "SubscriptionValidation");
    assert_eq!(v.attempt, "0");
    assert_eq!(v.events().len(), 1, "{:?}", v.body);
    let event = &v.events()[0];
    assert_eq!(event["eventType"], VALIDATION_EVENT);
    assert!(event["data"]["validationCode"].as_str().is_some_and(|c| !c.is_empty()), "{event}");
    for field in ["id", "eventTime", "topic", "dataVersion", "metadataVersion"] {
        assert!(event[field].is_string(), "validation event {field}: {event}");
    }
    let now_created = state_becomes(sim, "alice", ALICE_INSTALLATION, &id, "Created").await;
    assert_ne!(now_created["modificationDate"], "0001-01-01T00:00:00Z");

    // A car arrives: Event Grid notifications.
    sim.plug(ALICE_STATION).await;
    let subject = format!("installations/{ALICE_INSTALLATION}/charging-stations/{ALICE_STATION}");
    let (plugged, delivery) = rx.event(CABLE_PLUGGED).await;
    assert_eq!(delivery.kind, "Notification");
    assert!(delivery.after_validation);
    assert_event_grid_shape(&plugged, CABLE_PLUGGED, &subject, ALICE_INSTALLATION);
    assert_eq!(plugged["data"]["carPlugStatus"], "m3");
    assert_eq!(plugged["data"]["availability"], "occupied");
    assert_eq!(plugged["data"]["installationId"], ALICE_INSTALLATION);
    assert_eq!(plugged["data"]["chargingStationId"], ALICE_STATION);
    let (started, _) = rx.event(SESSION_STARTED).await;
    assert_event_grid_shape(&started, SESSION_STARTED, &subject, ALICE_INSTALLATION);
    let st = sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(started["data"]["startDate"], st["properties"]["currentSession"]["startDate"]);

    // It leaves.
    sim.unplug(ALICE_STATION).await;
    let (unplugged, _) = rx.event(CABLE_UNPLUGGED).await;
    assert_event_grid_shape(&unplugged, CABLE_UNPLUGGED, &subject, ALICE_INSTALLATION);
    assert_eq!(unplugged["data"]["carPlugStatus"], "unplugged");
    assert_eq!(unplugged["data"]["availability"], "available");
    let (ended, _) = rx.event(SESSION_ENDED).await;
    assert_event_grid_shape(&ended, SESSION_ENDED, &subject, ALICE_INSTALLATION);
    let last = &sim.station("alice", ALICE_INSTALLATION, ALICE_STATION).await["properties"]["lastSession"];
    assert_eq!(ended["data"]["endDate"], last["endDate"]);
    let ids: BTreeSet<&str> =
        [&plugged, &started, &unplugged, &ended].into_iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "every event has its own id");
}

#[tokio::test]
async fn nothing_is_delivered_before_the_validation_is_answered() {
    let app = spawn_app().await;
    let sim = app.sim();
    let mut rx = Receiver::start(Behaviour::Validates, true).await;
    let model = subscribe(sim, "alice", ALICE_INSTALLATION, &rx.url, json!({})).await;
    let id = model["eventSubscriptionId"].as_str().unwrap().to_string();
    let v = rx.next().await;
    assert_eq!(v.kind, "SubscriptionValidation");
    // The receiver sits on its answer; meanwhile the car arrives.
    sim.plug(ALICE_STATION).await;
    rx.assert_quiet("the validation is not answered").await;
    let r = sim.get("alice", &format!("{}/{id}", subscriptions(ALICE_INSTALLATION))).await;
    assert_eq!(r.body["state"], "Creating");
    // Answered: the events that happened meanwhile come after it.
    rx.release_validation();
    let (plugged, delivery) = rx.event(CABLE_PLUGGED).await;
    assert!(delivery.after_validation, "delivered only after the validation was answered");
    assert_eq!(plugged["subject"], format!("installations/{ALICE_INSTALLATION}/charging-stations/{ALICE_STATION}"));
    state_becomes(sim, "alice", ALICE_INSTALLATION, &id, "Created").await;
}

#[tokio::test]
async fn a_wrong_validation_answer_fails_the_subscription_after_bounded_retries() {
    let app = spawn_app().await;
    let sim = app.sim();
    let mut rx = Receiver::start(Behaviour::AnswersWrongCode, false).await;
    let model = subscribe(sim, "alice", ALICE_INSTALLATION, &rx.url, json!({})).await;
    let id = model["eventSubscriptionId"].as_str().unwrap().to_string();
    // Five attempts (the test configuration), each the same validation event.
    let mut attempts = Vec::new();
    let mut event_ids = BTreeSet::new();
    for _ in 0..5 {
        let d = rx.next().await;
        assert_eq!(d.kind, "SubscriptionValidation", "{d:?}");
        attempts.push(d.attempt.clone());
        event_ids.insert(d.event_ids()[0].clone());
    }
    assert_eq!(attempts, ["0", "1", "2", "3", "4"]);
    assert_eq!(event_ids.len(), 1, "a retry sends the same validation event");
    let failed = state_becomes(sim, "alice", ALICE_INSTALLATION, &id, "Failed").await;
    assert_eq!(failed["eventSubscriptionId"], id.as_str());
    sim.plug(ALICE_STATION).await;
    rx.assert_quiet("the subscription failed its validation").await;
}

#[tokio::test]
async fn a_refused_notification_is_delivered_again_with_the_same_event_id() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut rx, _) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::RefusesFirstNotification, json!({})).await;
    sim.plug(ALICE_STATION).await;
    let first = loop {
        let d = rx.next().await;
        if d.kind == "Notification" {
            break d;
        }
    };
    assert_eq!(first.attempt, "0", "{first:?}");
    // The receiver answered 500: the same events come again, marked as a further attempt.
    let retry = loop {
        let d = rx.next().await;
        if d.kind == "Notification" && d.attempt != "0" {
            break d;
        }
    };
    assert_eq!(retry.attempt, "1");
    assert_eq!(retry.event_ids(), first.event_ids(), "the retried delivery carries the same event ids");
    assert_eq!(retry.body, first.body, "the same events, unchanged");
    // Later events are delivered normally.
    sim.unplug(ALICE_STATION).await;
    let (_, d) = rx.event(CABLE_UNPLUGGED).await;
    assert_eq!(d.attempt, "0");
}

#[tokio::test]
async fn filters_pick_events_by_type_and_subject() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let (mut by_type, _) =
        validated(sim, "alice", i, Behaviour::Validates, json!({"eventType": CABLE_UNPLUGGED})).await;
    let (mut by_subject, _) = validated(
        sim,
        "alice",
        i,
        Behaviour::Validates,
        json!({"filter": {"subjectBeginsWith": format!("installations/{i}/charging-stations/"), "subjectEndsWith": ALICE_STATION}}),
    )
    .await;
    let (mut elsewhere, _) =
        validated(sim, "alice", i, Behaviour::Validates, json!({"filter": {"subjectEndsWith": "/no-such-station"}}))
            .await;
    let (mut lower_case, _) =
        validated(sim, "alice", i, Behaviour::Validates, json!({"eventType": CABLE_PLUGGED.to_lowercase()})).await;
    sim.plug(ALICE_STATION).await;
    sim.unplug(ALICE_STATION).await;
    // Only CableUnplugged, though CablePlugged and SessionStarted happened first.
    let first = by_type.next().await;
    assert_eq!(first.kind, "Notification");
    assert!(first.events().iter().all(|e| e["eventType"] == CABLE_UNPLUGGED), "{:?}", first.body);
    by_subject.event(CABLE_PLUGGED).await;
    by_subject.event(CABLE_UNPLUGGED).await;
    let (e, _) = lower_case.event(CABLE_PLUGGED).await;
    assert_eq!(e["eventType"], CABLE_PLUGGED, "event types match whatever their case");
    elsewhere.assert_quiet("no event has a subject ending in /no-such-station").await;
}

#[tokio::test]
async fn commands_and_station_events_are_notified_after_they_happen() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut rx, _) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    let cs = station_path(ALICE_INSTALLATION, ALICE_STATION);
    let sent = Utc::now();
    let r = sim.post("alice", &format!("{cs}/operators/set-charge-mode"), json!({"chargeMode": "deferred"})).await;
    assert_eq!(r.status, 202);
    let (mode, _) = rx.event("Hager.WittyHome.ChargeModeChanged").await;
    assert_eq!(mode["data"]["chargeMode"], "deferred");
    assert_eq!(mode["data"]["previousChargeMode"], "immediate");
    let at: DateTime<Utc> = mode["eventTime"].as_str().unwrap().parse().unwrap();
    assert!(
        at >= sent + chrono::Duration::milliseconds(200),
        "notified once applied, after the command delay: {sent} -> {at}"
    );

    // Deferred: plugging does not start a session; start and stop do.
    sim.plug(ALICE_STATION).await;
    let (plugged, delivery) = rx.event(CABLE_PLUGGED).await;
    assert!(delivery.events().iter().all(|e| e["eventType"] != SESSION_STARTED), "{:?}", delivery.body);
    assert_eq!(plugged["data"]["carPlugStatus"], "m3");
    let start_sent = Utc::now();
    assert_eq!(sim.call("alice", Method::POST, &format!("{cs}/operators/start"), None).await.status, 202);
    let (started, _) = rx.event(SESSION_STARTED).await;
    let at: DateTime<Utc> = started["eventTime"].as_str().unwrap().parse().unwrap();
    assert!(at >= start_sent, "the session started with the start command, not with the plug: {at}");
    assert_eq!(sim.call("alice", Method::POST, &format!("{cs}/operators/stop"), None).await.status, 202);
    rx.event(SESSION_ENDED).await;
    assert_eq!(sim.put("alice", &cs, json!({"friendlyName": "renamed"})).await.status, 202);
    let (settings, _) = rx.event("Hager.WittyHome.SettingsUpdated").await;
    assert_eq!(settings["data"]["changed"], json!({"friendlyName": "renamed"}));
    sim.unplug(ALICE_STATION).await;
    rx.event(CABLE_UNPLUGGED).await;

    // Errors and load shedding, as a person at the station would cause them.
    let r = sim
        .control(Method::POST, &format!("/_sim/stations/{ALICE_STATION}/error"), Some(json!({"code": "groundFault"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (error, _) = rx.event("Hager.WittyHome.Error").await;
    assert_eq!(error["data"]["code"], "groundFault");
    assert_eq!(
        sim.control(Method::POST, &format!("/_sim/stations/{ALICE_STATION}/load-shedding"), None).await.status,
        200
    );
    let (shedding, _) = rx.event("Hager.WittyHome.LoadShedding").await;
    assert_eq!(shedding["data"]["code"], "loadShedding");
    // Both are in the Errors log.
    let now = Utc::now();
    let logs = sim
        .post(
            "alice",
            &format!("{cs}/logs/5/operators/list"),
            range_body(
                &(now - chrono::Duration::minutes(5)).to_rfc3339(),
                &(now + chrono::Duration::minutes(1)).to_rfc3339(),
                None,
            ),
        )
        .await
        .body;
    let codes: Vec<&Value> = logs.as_array().unwrap().iter().map(|e| &e["value"]["code"]).collect();
    assert!(codes.len() >= 2, "{logs}");
    assert_eq!(codes[codes.len() - 2..], [&json!("groundFault"), &json!("loadShedding")], "{logs}");
}

#[tokio::test]
async fn events_of_another_installation_are_not_delivered() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut alices, _) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    let (mut bobs, _) = validated(sim, "bob", BOB_CHALET, Behaviour::Validates, json!({})).await;
    sim.plug(BOB_CHALET_STATION).await;
    let (e, _) = bobs.event(CABLE_PLUGGED).await;
    assert_eq!(e["subject"], format!("installations/{BOB_CHALET}/charging-stations/{BOB_CHALET_STATION}"));
    alices.assert_quiet("nothing happened on Alice's installation").await;
}

#[tokio::test]
async fn subscriptions_belong_to_their_user_and_can_be_deleted() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let list = |sub: &'static str| {
        let sim = &sim;
        async move {
            let r = sim.get(sub, &subscriptions(i)).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["eventSubscriptionId"].as_str().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(list("alice").await, BTreeSet::new());
    let id = |m: Value| m["eventSubscriptionId"].as_str().unwrap().to_string();
    let a1 = id(subscribe(sim, "alice", i, "http://127.0.0.1:9/a1", json!({})).await);
    let a2 = id(subscribe(sim, "alice", i, "https://127.0.0.1:9/hook?a=2", json!({"eventType": CABLE_PLUGGED})).await);
    let v1 = id(subscribe(sim, "ivan", i, "http://127.0.0.1:9/ivan", json!({})).await);
    assert_eq!(list("alice").await, BTreeSet::from([a1.clone(), a2.clone()]));
    assert_eq!(list("ivan").await, BTreeSet::from([v1.clone()]));
    let one = sim.get("alice", &format!("{}/{a2}", subscriptions(i))).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["eventType"], CABLE_PLUGGED);
    assert_eq!(one.body["protocolData"], "https://127.0.0.1:9/hook?a=2");

    // Another user's subscription is not found, and cannot be deleted.
    assert_eq!(sim.get("alice", &format!("{}/{v1}", subscriptions(i))).await.status, 404);
    let r = sim.delete("alice", &format!("{}/{v1}", subscriptions(i))).await;
    assert_eq!(r.status, 404);
    assert!(r.message().contains(&v1));
    // Nor can another owner list them.
    assert_eq!(sim.get("bob", &subscriptions(i)).await.status, 404);

    let r = sim.delete("alice", &format!("{}/{a1}", subscriptions(i))).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(sim.get("alice", &format!("{}/{a1}", subscriptions(i))).await.status, 404);
    assert_eq!(sim.delete("alice", &format!("{}/{a1}", subscriptions(i))).await.status, 404);
    assert_eq!(list("alice").await, BTreeSet::from([a2.clone()]));

    // Deleting all deletes the caller's only.
    let r = sim.delete("alice", &subscriptions(i)).await;
    assert_eq!(r.status, 204);
    assert_eq!(list("alice").await, BTreeSet::new());
    assert_eq!(list("ivan").await, BTreeSet::from([v1]));
    assert_eq!(sim.delete("alice", &subscriptions(i)).await.status, 204, "nothing left to delete is fine");
    let unknown = sim.get("alice", &format!("{}/not-an-id", subscriptions(i))).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.message().contains("not-an-id"));
}

#[tokio::test]
async fn a_deleted_subscription_gets_nothing_more() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut gone, gone_id) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    let (mut kept, _) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    let r = sim.delete("alice", &format!("{}/{gone_id}", subscriptions(ALICE_INSTALLATION))).await;
    assert_eq!(r.status, 204);
    sim.plug(ALICE_STATION).await;
    kept.event(CABLE_PLUGGED).await;
    gone.assert_quiet("its subscription was deleted").await;
}

#[tokio::test]
async fn an_invalid_subscription_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = subscriptions(ALICE_INSTALLATION);
    let url = "http://127.0.0.1:9/hook";
    for (body, field) in [
        (json!({"protocolData": url}), "protocolCode"),
        (json!({"protocolCode": "Email", "protocolData": url}), "protocolCode"),
        (json!({"protocolCode": 1, "protocolData": url}), "protocolCode"),
        (json!({"protocolCode": "Webhook"}), "protocolData"),
        (json!({"protocolCode": "Webhook", "protocolData": "not a url"}), "protocolData"),
        (json!({"protocolCode": "Webhook", "protocolData": "ftp://127.0.0.1/hook"}), "protocolData"),
        (json!({"protocolCode": "Webhook", "protocolData": "/relative/hook"}), "protocolData"),
        (json!({"protocolCode": "Webhook", "protocolData": url, "eventType": "Bogus"}), "eventType"),
        (json!({"protocolCode": "Webhook", "protocolData": url, "eventType": 3}), "eventType"),
        (json!({"protocolCode": "Webhook", "protocolData": url, "filter": "x"}), "filter"),
        (
            json!({"protocolCode": "Webhook", "protocolData": url, "filter": {"subjectBeginsWith": 5}}),
            "subjectBeginsWith",
        ),
    ] {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: the message names {field}: {:?}", r.body);
    }
    let r =
        sim.post("alice", &path, json!({"protocolCode": "Webhook", "protocolData": url, "eventType": "Bogus"})).await;
    assert!(r.message().contains(CABLE_PLUGGED), "the known event types are listed: {:?}", r.body);
    assert_eq!(sim.get("alice", &path).await.body, json!([]), "nothing was created");
    // An empty event type means every type.
    let ok = sim.post("alice", &path, json!({"protocolCode": "webhook", "protocolData": url, "eventType": ""})).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert_eq!(ok.body["eventType"], Value::Null);
}

#[tokio::test]

async fn a_disabled_or_removed_installer_gets_no_more_notifications() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let ivan = sim.account_id("ivan").await;
    let (mut installer, _) = validated(sim, "ivan", i, Behaviour::Validates, json!({})).await;
    let (mut owner, _) = validated(sim, "alice", i, Behaviour::Validates, json!({})).await;
    let r = sim.call("alice", Method::POST, &format!("/installations/{i}/users/{ivan}/operators/disable"), None).await;
    assert_eq!(r.status, 204);
    sim.plug(ALICE_STATION).await;
    owner.event(CABLE_PLUGGED).await;
    installer.assert_quiet("the installer was disabled").await;
    assert_eq!(sim.delete("alice", &format!("/installations/{i}/users/{ivan}")).await.status, 204);
    sim.unplug(ALICE_STATION).await;
    owner.event(CABLE_UNPLUGGED).await;
    installer.assert_quiet("the installer was removed").await;
}

#[tokio::test]

async fn an_installers_notifications_carry_no_costs_or_consumptions() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut installer, _) = validated(sim, "ivan", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    sim.plug(ALICE_STATION).await;
    installer.event(CABLE_PLUGGED).await;
    sim.unplug(ALICE_STATION).await;
    let (unplugged, _) = installer.event(CABLE_UNPLUGGED).await;
    for hidden in ["sessionEnergy", "sessionCost"] {
        assert!(unplugged["data"].get(hidden).is_none(), "{hidden} reaches the installer: {unplugged}");
    }
    let (ended, _) = installer.event(SESSION_ENDED).await;
    assert!(ended["data"].get("energy").is_none(), "energy reaches the installer: {ended}");
}

#[tokio::test]

async fn deleting_a_subscription_tells_its_webhook() {
    let app = spawn_app().await;
    let sim = app.sim();
    let (mut rx, id) = validated(sim, "alice", ALICE_INSTALLATION, Behaviour::Validates, json!({})).await;
    assert_eq!(sim.delete("alice", &format!("{}/{id}", subscriptions(ALICE_INSTALLATION))).await.status, 204);
    let d = rx.next().await;
    assert_eq!(d.kind, "SubscriptionDeletion", "{d:?}");
    assert_eq!(d.events()[0]["eventType"], "Microsoft.EventGrid.SubscriptionDeletedEvent");
}
