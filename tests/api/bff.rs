//! The BFF under test: a simulator of its own and witty-bff pointed at it over HTTP, both on port 0.
//! (To be folded into helpers.rs.)

#![allow(dead_code)]

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use witty_bff::app::App;
use witty_bff::auth::mint_dev_token;
use witty_bff::config::{Config, Secret};

use crate::helpers::*;

pub const JWT_SECRET: &str = "test-jwt-secret-for-witty-bff";
/// The webhook path secret of the apps under test (CI checks it never reaches the logs).
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-3f9a";

pub struct TestApp {
    pub sim: Arc<TestSim>,
    pub base: String,
    pub client: reqwest::Client,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The test configuration: the simulator's URL and key, a known secret, short timeouts.
pub fn test_config(sim: &TestSim) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_url: Some(sim.base.parse().unwrap()),
        api_key: Some(Secret::new(API_KEY)),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        upstream_timeout_ms: 2_000,
        upstream_read_retries: 1,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    let sim = Arc::new(spawn_sim().await);
    let mut config = test_config(&sim);
    tune(&mut config);
    let app = App::build(config.clone()).await.expect("the app builds");
    start_app(sim, app, config)
}

/// Runs a built app against `sim` until the returned `TestApp` is dropped.
pub fn start_app(sim: Arc<TestSim>, app: App, config: Config) -> TestApp {
    let base = format!("http://{}", app.addr());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp { sim, base, client: reqwest::Client::new(), config, stop: Some(tx) }
}

impl TestApp {
    pub fn sim(&self) -> &TestSim {
        &self.sim
    }

    /// A token for `sub`, signed as the app expects.
    pub fn token_for(&self, sub: &str) -> String {
        let secret = self.config.jwt_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
        mint_dev_token(&secret, sub, 3600, self.config.jwt_issuer.as_deref(), self.config.jwt_audience.as_deref())
    }

    /// POSTs a GraphQL request with an optional bearer token; returns the whole reply.
    pub async fn post_graphql(&self, token: Option<&str>, body: Value) -> Reply {
        let mut req = self.client.post(format!("{}/graphql", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    /// Runs `query` as `sub` and returns the JSON response (`data` and `errors`).
    pub async fn graphql(&self, sub: &str, query: &str, variables: Value) -> Value {
        let token = self.token_for(sub);
        let r = self.post_graphql(Some(&token), json!({"query": query, "variables": variables})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }
}

/// The `extensions.code` of every error of a response.
pub fn error_codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .map(|errs| errs.iter().map(|e| e["extensions"]["code"].as_str().unwrap_or("<none>").to_string()).collect())
        .unwrap_or_default()
}

/// Asserts a response has no errors and returns its data.
pub fn data(response: &Value) -> &Value {
    assert!(response.get("errors").is_none_or(|e| e.is_null()), "unexpected errors: {response:#}");
    &response["data"]
}

/// The dashboard: every installation → stations with state, current session and the day's
/// hourly energy → grid meters with tariffs.
pub const DASHBOARD: &str = r#"
query Dashboard($from: DateTime!, $to: DateTime!) {
  installations {
    id name
    chargingStations {
      id friendlyName chargeMode availability
      currentSession { startDate totalSessionEnergy }
      energy: measure(id: "1") { values(operator: SUM, from: $from, to: $to, step: HOUR) { date tariffType value } }
    }
    gridMeters { id gridSubscription tariffs { id currentPrice } }
  }
}"#;

pub fn dashboard_variables() -> Value {
    json!({"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"})
}

// ---- WebSocket subscriptions ----

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket on /graphql with a subprotocol and sends `connection_init` with the token.
pub async fn ws_connect(app: &TestApp, protocol: &str, token: &str) -> Ws {
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    ws
}

/// The next JSON text message that is not a keep-alive.
pub async fn ws_next(ws: &mut Ws) -> Value {
    // One deadline for the whole wait: keep-alives must not extend it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ka" && v["type"] != "ping" {
                return v;
            }
        }
    }
}

/// Subscribes on an initialised socket: `subscribe` (graphql-transport-ws) or `start` (legacy).
pub async fn ws_subscribe(ws: &mut Ws, legacy: bool, id: &str, query: &str) {
    let ack = ws_next(ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let kind = if legacy { "start" } else { "subscribe" };
    ws.send(Message::Text(json!({"id": id, "type": kind, "payload": {"query": query}}).to_string().into()))
        .await
        .unwrap();
}

/// A graphql-transport-ws connection subscribed to [`EVENTS`] with `token`.
pub async fn watch_events(app: &TestApp, token: &str) -> Ws {
    let mut ws = ws_connect(app, "graphql-transport-ws", token).await;
    ws_subscribe(&mut ws, false, "1", EVENTS).await;
    ws
}

/// An app with webhooks off that polls watched stations every 100 ms.
pub async fn spawn_polling_app() -> TestApp {
    spawn_app_with(|c| {
        c.webhooks = false;
        c.poll_interval_ms = 100;
    })
    .await
}

/// The next `next`/`data` payload of a subscription.
pub async fn ws_data(ws: &mut Ws) -> Value {
    loop {
        let v = ws_next(ws).await;
        match v["type"].as_str() {
            Some("next") | Some("data") => return v["payload"].clone(),
            Some("error") | Some("complete") => panic!("subscription ended: {v}"),
            _ => continue,
        }
    }
}

/// A subscriber that fell behind, reading again: what was already on its way (each a `next`, of
/// operation `id` when given), then the RATE_LIMITED notice telling it to subscribe again.
/// Returns how many events came before the notice.
pub async fn ws_until_lag_notice(ws: &mut Ws, id: Option<&str>) -> usize {
    let mut received = 0;
    let notice = loop {
        let v = ws_next(ws).await;
        assert_eq!(v["type"], "next", "{v}");
        if let Some(id) = id {
            assert_eq!(v["id"], id, "{v}");
        }
        if v["payload"]["errors"].is_array() {
            break v;
        }
        received += 1;
    };
    let error = &notice["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{notice}");
    assert!(error["message"].as_str().unwrap().contains("subscribe again"), "{notice}");
    assert_eq!(error["extensions"]["retryAfterSeconds"], 0, "it may subscribe again at once: {notice}");
    received
}

pub const EVENTS: &str = r#"subscription { stationEvents(installationId: 33) { id type rawType eventTime installationId chargingStationId } }"#;

/// One value of the app's `/metrics` (0 when absent), e.g. `witty_bff_live_subscriptions`.
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `n` subscriptions are live (listening for events) on the app.
pub async fn live_subscriptions(app: &TestApp, n: usize) {
    eventually(&format!("{n} live subscriptions"), || async {
        (metric(app, "witty_bff_live_subscriptions").await as usize == n).then_some(())
    })
    .await
}

/// One Event Grid event about Alice's station (`station: false`: about her whole installation).
pub fn grid_event(id: &str, kind: &str, at: &str, station: bool, data: Value) -> Value {
    let subject = if station {
        format!("installations/33/charging-stations/{ALICE_STATION}")
    } else {
        "installations/33".to_string()
    };
    json!({
        "id": id, "eventType": kind, "subject": subject, "eventTime": at, "data": data,
        "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/33"
    })
}

/// Posts a `Notification` delivery of `events` to the webhook at `url`; returns the status.
pub async fn deliver(app: &TestApp, url: &str, events: Value) -> reqwest::StatusCode {
    app.client.post(url).header("aeg-event-type", "Notification").json(&events).send().await.unwrap().status()
}

/// The webhook registered by the BFF on Alice's installation, once the upstream validated it.
pub async fn validated_webhook(app: &TestApp) -> Value {
    eventually("the BFF's webhook to be registered and validated upstream", || async {
        let subs = app.sim().get("alice", "/installations/33/event-subscriptions").await.body;
        subs.as_array()?
            .iter()
            .find(|s| {
                s["state"] == "Created" && s["protocolData"].as_str().is_some_and(|d| d.contains("/webhooks/witty/"))
            })
            .cloned()
    })
    .await
}
