//! Test harness: [`spawn_app`] starts the simulator and witty-bff pointed at it, both on port 0,
//! and returns a [`TestApp`] that talks to them over HTTP and WebSocket.
//! Set `TEST_LOG=1` to see the servers' logs.

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use witty_bff::app::App;
use witty_bff::config::{Config, Secret};
use witty_bff::mint_dev_token;
use witty_bff::simulator::{SimConfig, Simulator};

pub const API_KEY: &str = "test-api-key";
pub const JWT_SECRET: &str = "test-jwt-secret-for-witty-bff";
/// The webhook path secret of the apps under test (CI checks it never reaches the logs).
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-3f9a";

/// Seeded ids (see `src/simulator/store.rs`).
pub const ALICE_INSTALLATION: i64 = 33;
pub const ALICE_STATION: &str = "60e0d33e-cd45-4382-9e4d-c64002c3f5a7";
pub const ALICE_METER: &str = "a6536308-fc1d-4930-ae1a-19a526958c75";
pub const BOB_INSTALLATION: i64 = 42;
pub const BOB_STATION: &str = "2b7c9a41-53f0-4c1e-9d6a-8f2e1b0c4d77";
pub const BOB_METER: &str = "c41d0e8a-7b3f-4a52-b6e9-0d1f2a3b4c5d";
pub const BOB_CHALET: i64 = 43;
pub const BOB_CHALET_STATION: &str = "9e3f5a17-0c2d-4b8e-a6f1-3d5c7b9e1a20";
pub const BOB_CHALET_METER: &str = "e7a9c1b3-5d2f-4e6a-8b0c-1f3e5d7a9c2b";
pub const DIETER_INSTALLATION: i64 = 51;
pub const DIETER_STATION: &str = "5d8e2c40-1a7b-4f3e-9c6d-2e4a6b8c0d1f";
pub const DIETER_METER: &str = "f2b4d6e8-0a1c-4e3f-b5a7-9c1e3d5f7a8b";

/// A generous bound for anything asynchronous (a loaded 2-core machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(20);

// ---- Starting the apps ----

/// The simulator and witty-bff with the test settings.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// As [`spawn_app`], with witty-bff's configuration changed by `tune`.
pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::builder().bff(tune).spawn().await
}

/// Settings of the apps a test starts, for what [`spawn_app_with`] cannot say.
pub struct TestAppBuilder<'a> {
    sim: SimConfig,
    bff: Vec<ConfigChange<'a>>,
}

type ConfigChange<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

impl<'a> TestAppBuilder<'a> {
    /// Changes the simulator's settings (a short command delay and fast webhook retries otherwise).
    pub fn sim(mut self, tune: impl FnOnce(&mut SimConfig)) -> Self {
        tune(&mut self.sim);
        self
    }

    /// Changes witty-bff's configuration (the simulator as upstream, known secrets, short timeouts
    /// otherwise).
    pub fn bff(mut self, tune: impl FnOnce(&mut Config) + 'a) -> Self {
        self.bff.push(Box::new(tune));
        self
    }

    pub async fn spawn(self) -> TestApp {
        self.try_spawn().await.expect("witty-bff starts")
    }

    /// Starts the simulator, then witty-bff, whose start may fail (the error, with its causes).
    pub async fn try_spawn(self) -> Result<TestApp, String> {
        let sim = TestSim::spawn(self.sim).await;
        let mut config = TestApp::config(&sim);
        for tune in self.bff {
            tune(&mut config);
        }
        TestApp::start(sim, config).await
    }
}

/// Logs of the servers under test: to the test output with `TEST_LOG=1`, or appended to the file
/// named by `WITTY_BFF_TEST_LOG_FILE` (CI searches that file for secrets after the suite).
fn init_test_log() {
    static TRACING: Once = Once::new();
    TRACING.call_once(|| {
        let filter = "trace,hyper=debug,hyper_util=debug,h2=info,tungstenite=debug,tokio_tungstenite=debug";
        if let Some(path) = std::env::var_os("WITTY_BFF_TEST_LOG_FILE") {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the log file opens");
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        } else if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().init();
        }
    });
}

// ---- witty-bff ----

/// A running witty-bff, the simulator it uses as its upstream, and clients for both. Dropping it
/// stops witty-bff. Its client side is a [`TestBff`], which it dereferences to.
pub struct TestApp {
    /// Dropped with the app, which stops witty-bff; first (fields drop in order), so that
    /// witty-bff stops before its upstream.
    _stop: oneshot::Sender<()>,
    sim: TestSim,
    bff: TestBff,
}

impl std::ops::Deref for TestApp {
    type Target = TestBff;

    fn deref(&self) -> &TestBff {
        &self.bff
    }
}

/// The client side of one running witty-bff (an app or a replica of a fleet): its base URL, an
/// HTTP client, and the configuration it was started with (its tokens are signed for it).
pub struct TestBff {
    /// witty-bff's base URL, `http://127.0.0.1:{port}`.
    pub base: String,
    pub client: reqwest::Client,
    config: Config,
}

impl TestApp {
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder { sim: TestSim::test_config(), bff: Vec::new() }
    }

    /// The test configuration: the simulator's URL and key, known secrets, short timeouts.
    pub(crate) fn config(sim: &TestSim) -> Config {
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

    /// Builds witty-bff with `config` and runs it until the returned app is dropped.
    async fn start(sim: TestSim, config: Config) -> Result<TestApp, String> {
        let app = App::build(config.clone()).await.map_err(|e| format!("{e:#}"))?;
        Ok(TestApp::run(sim, app, config))
    }

    fn run(sim: TestSim, app: App, config: Config) -> TestApp {
        let base = format!("http://{}", app.addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let bff = TestBff::new(base, sim.client.clone(), config);
        TestApp { _stop: stop, sim, bff }
    }

    /// Stops witty-bff without any cleaning up (a crash or a deploy) and starts it again with the
    /// same configuration, address and simulator, once the address is free.
    pub async fn restart(self) -> TestApp {
        let TestApp { _stop: stop, sim, bff } = self;
        drop(stop);
        let config = Config { listen: bff.addr(), ..bff.config };
        let app = eventually("the address to be free for the restarted witty-bff", || async {
            App::build(config.clone()).await.ok()
        })
        .await;
        TestApp::run(sim, app, config)
    }

    pub fn sim(&self) -> &TestSim {
        &self.sim
    }

    /// Where the upstream delivers Alice's installation's events: see [`TestSim::webhook_url`].
    pub async fn webhook_url(&self) -> String {
        self.sim.webhook_url().await
    }

    /// The webhook registered by the BFF on Alice's installation: see [`TestSim::validated_webhook`].
    pub async fn validated_webhook(&self) -> Value {
        self.sim.validated_webhook().await
    }
}

impl TestBff {
    pub(crate) fn new(base: String, client: reqwest::Client, config: Config) -> TestBff {
        TestBff { base, client, config }
    }

    /// The address witty-bff listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().expect("a base URL of an address")
    }

    /// The URL of this witty-bff's webhook for `installation`'s events.
    pub fn webhook_of(&self, installation: i64) -> String {
        format!("{}/webhooks/witty/{}", self.base, witty_bff::webhook_key(WEBHOOK_SECRET, installation))
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

    /// POSTs a GraphQL request as `sub` with an `Idempotency-Key` header; returns the JSON response.
    pub async fn post_with_key(&self, sub: &str, key: &str, query: &str, variables: Value) -> Value {
        let req = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(self.token_for(sub))
            .header("Idempotency-Key", key)
            .json(&json!({"query": query, "variables": variables}));
        let r = send(req).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    /// A WebSocket on /graphql speaking `protocol`, with nothing sent yet.
    pub async fn ws_open(&self, protocol: &str) -> Ws {
        self.ws_upgrade(protocol).await.0
    }

    /// A WebSocket on /graphql speaking `protocol` that sent `connection_init` with `token`.
    pub async fn ws_connect(&self, protocol: &str, token: &str) -> Ws {
        let (mut ws, resp) = self.ws_upgrade(protocol).await;
        assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        ws_send_text(&mut ws, &init.to_string()).await;
        ws
    }

    async fn ws_upgrade(&self, protocol: &str) -> (Ws, tokio_tungstenite::tungstenite::handshake::client::Response) {
        let mut req = format!("{}/graphql", self.base.replace("http://", "ws://")).into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        tokio_tungstenite::connect_async(req).await.expect("websocket upgrade")
    }

    /// A WebSocket on /graphql speaking `protocol`, initialised with `token` and acknowledged.
    pub async fn ws_acked(&self, protocol: &str, token: &str) -> Ws {
        let mut ws = self.ws_connect(protocol, token).await;
        let ack = ws_next(&mut ws).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    /// A connection of `token` speaking `protocol` (`graphql-transport-ws` or the legacy
    /// `graphql-ws`), acknowledged, that subscribed operation `id` to `query`.
    pub async fn subscribe(&self, protocol: &str, token: &str, id: &str, query: &str) -> Ws {
        let mut ws = self.ws_connect(protocol, token).await;
        ws_subscribe(&mut ws, protocol == "graphql-ws", id, query).await;
        ws
    }

    /// A graphql-transport-ws connection of `sub` (a fresh token) with operation `1` subscribed to
    /// `query`.
    pub async fn subscribe_as(&self, sub: &str, query: &str) -> Ws {
        self.subscribe("graphql-transport-ws", &self.token_for(sub), "1", query).await
    }

    /// A graphql-transport-ws connection subscribed to [`EVENTS`] with `token`.
    pub async fn watch_events(&self, token: &str) -> Ws {
        self.subscribe("graphql-transport-ws", token, "1", EVENTS).await
    }

    /// A graphql-sse subscription (distinct connections mode) to `query` with `token`, accepted.
    pub async fn sse(&self, token: &str, query: &str) -> reqwest::Response {
        let r = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    }

    /// One value of the app's `/metrics` (0 when absent), e.g. `witty_bff_live_subscriptions`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `n` subscriptions are live (listening for events) on the app.
    pub async fn live_subscriptions(&self, n: usize) {
        eventually(&format!("{n} live subscriptions"), || async {
            (self.metric("witty_bff_live_subscriptions").await as usize == n).then_some(())
        })
        .await
    }

    /// Posts a `Notification` delivery of `events` to the webhook at `url`; returns the status.
    pub async fn deliver(&self, url: &str, events: Value) -> StatusCode {
        self.client.post(url).header("aeg-event-type", "Notification").json(&events).send().await.unwrap().status()
    }
}

/// Polling instead of webhooks, every 100 ms: `spawn_app_with(polling)`.
pub fn polling(config: &mut Config) {
    config.webhooks = false;
    config.poll_interval_ms = 100;
}

// ---- GraphQL ----

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
pub const DASHBOARD: &str = include_str!("../fixtures/dashboard.graphql");

pub fn dashboard_variables() -> Value {
    json!({"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"})
}

// ---- Commands ----

pub const START_ROUTE: &str = "POST /installations/{i}/charging-stations/{cs}/operators/start";
pub const SET_MODE_ROUTE: &str = "POST /installations/{i}/charging-stations/{cs}/operators/set-charge-mode";

pub const STATION: &str = r#"query($i: ID!, $cs: ID!) { installation(id: $i) { chargingStation(id: $cs) {
    id chargeMode friendlyName ledPower averageEvConsumption tariff3 authorizeTic availability
    currentSession { chargingSpeed }
} } }"#;

pub const SET_MODE: &str = r#"mutation($i: ID!, $cs: ID!, $mode: ChargeMode!, $wait: Boolean!) {
    setChargeMode(installationId: $i, chargingStationId: $cs, mode: $mode, wait: $wait) {
        status chargingStation { id chargeMode fetchedAt }
    }
}"#;

pub const START: &str = r#"mutation($i: ID!, $cs: ID!, $wait: Boolean!) {
    startCharging(installationId: $i, chargingStationId: $cs, wait: $wait) {
        status chargingStation { id fetchedAt currentSession { chargingSpeed } }
    }
}"#;

pub fn vars_station(i: i64, cs: &str) -> Value {
    json!({"i": i.to_string(), "cs": cs})
}

/// The station as `sub` sees it through GraphQL.
pub async fn gql_station(app: &TestBff, sub: &str, i: i64, cs: &str) -> Value {
    let r = app.graphql(sub, STATION, vars_station(i, cs)).await;
    data(&r)["installation"]["chargingStation"].clone()
}

/// The `status` of a command's result, the mutation's field named `field`.
pub fn status(r: &Value, field: &str) -> String {
    data(r)[field]["status"].as_str().unwrap_or_default().to_string()
}

// ---- Live events: WebSocket subscriptions and webhook deliveries ----

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const EVENTS: &str = r#"subscription { stationEvents(installationId: 33) { id type rawType eventTime installationId chargingStationId } }"#;

pub async fn ws_send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into())).await.unwrap();
}

/// The next JSON text message that is not a keep-alive.
pub async fn ws_next(ws: &mut Ws) -> Value {
    match ws_next_or_close(ws).await {
        Ok(v) => v,
        Err(close) => panic!("closed instead of a message: {close:?}"),
    }
}

/// The next frame that is a close or a JSON text message other than a keep-alive: `Err` with the
/// close's code and reason, `Ok` with the message.
pub async fn ws_next_or_close(ws: &mut Ws) -> Result<Value, (u16, String)> {
    // One deadline for the whole wait: keep-alives must not extend it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Close(Some(frame)))) => return Err((u16::from(frame.code), frame.reason.to_string())),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "ka" && v["type"] != "ping" {
                    return Ok(v);
                }
            }
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a valid close frame: {other:?}"),
        }
    }
}

/// Subscribes on an initialised socket: `subscribe` (graphql-transport-ws) or `start` (legacy).
pub async fn ws_subscribe(ws: &mut Ws, legacy: bool, id: &str, query: &str) {
    let ack = ws_next(ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let kind = if legacy { "start" } else { "subscribe" };
    ws_send_text(ws, &json!({"id": id, "type": kind, "payload": {"query": query}}).to_string()).await;
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

// ---- The simulator ----

/// A running simulator and a client for it.
pub struct TestSim {
    _server: Simulator,
    pub client: reqwest::Client,
    pub base: String,
}

/// A response: status, JSON body (`Null` when empty or not JSON) and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The `message` of an error body.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

impl TestSim {
    /// The test settings: a short command delay and fast webhook retries.
    pub(crate) fn test_config() -> SimConfig {
        SimConfig {
            api_key: API_KEY.into(),
            command_delay: Duration::from_millis(200),
            delivery_attempts: 5,
            delivery_backoff: Duration::from_millis(50),
            delivery_timeout: Duration::from_secs(5),
            ..SimConfig::default()
        }
    }

    pub(crate) async fn spawn(config: SimConfig) -> TestSim {
        init_test_log();
        let server = Simulator::spawn(config).await.expect("simulator starts");
        let base = server.base_url();
        TestSim { _server: server, client: loopback_client(), base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request to an upstream route as `sub`, with the right key, for bodies the JSON helpers
    /// cannot send (raw text, other content types).
    pub fn request(&self, sub: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Ocp-Apim-Subscription-Key", API_KEY)
            .bearer_auth(unsigned_token(sub))
    }

    /// Calls an upstream route as `sub` (with the right key).
    pub async fn call(&self, sub: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.request(sub, method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    pub async fn get(&self, sub: &str, path: &str) -> Reply {
        self.call(sub, Method::GET, path, None).await
    }

    pub async fn post(&self, sub: &str, path: &str, body: Value) -> Reply {
        self.call(sub, Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, sub: &str, path: &str, body: Value) -> Reply {
        self.call(sub, Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, sub: &str, path: &str) -> Reply {
        self.call(sub, Method::DELETE, path, None).await
    }

    /// `GET` a station as `sub`, asserting 200.
    pub async fn station(&self, sub: &str, installation: i64, station: &str) -> Value {
        let r = self.get(sub, &station_path(installation, station)).await;
        assert_eq!(r.status, 200, "GET station {station} as {sub}: {:?}", r.body);
        r.body
    }

    /// A `/_sim/` control route (no key, no token).
    /// Changes a station's properties upstream behind witty-bff's back (no event of its own).
    pub async fn set_station_properties(&self, station: &str, properties: Value) {
        let r = self.control(Method::PUT, &format!("/_sim/stations/{station}/properties"), Some(properties)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// `GET /_sim/calls`, as the simulator answers it.
    pub async fn calls(&self) -> Value {
        self.control(Method::GET, "/_sim/calls", None).await.body
    }

    /// The upstream calls since the last reset, by route (`"METHOD /template"`).
    pub async fn calls_by_route(&self) -> BTreeMap<String, u64> {
        serde_json::from_value(self.calls().await["byRoute"].clone()).expect("byRoute counts calls by route")
    }

    /// How many times `route` (`"METHOD /template"`) was called since the last reset.
    pub async fn calls_to(&self, route: &str) -> u64 {
        self.calls_by_route().await.get(route).copied().unwrap_or(0)
    }

    /// The calls since the last reset, of every route.
    pub async fn total_calls(&self) -> u64 {
        self.calls().await["total"].as_u64().expect("a total of calls")
    }

    pub async fn reset_calls(&self) {
        self.control(Method::DELETE, "/_sim/calls", None).await;
    }

    /// `POST /_sim/stations/{cs}/plug`.
    pub async fn plug(&self, station: &str) -> Reply {
        self.control(Method::POST, &format!("/_sim/stations/{station}/plug"), None).await
    }

    /// `POST /_sim/stations/{cs}/unplug`.
    pub async fn unplug(&self, station: &str) -> Reply {
        self.control(Method::POST, &format!("/_sim/stations/{station}/unplug"), None).await
    }

    /// The `accountId` of a seeded user (from `GET /_sim/users`).
    pub async fn account_id(&self, sub: &str) -> String {
        let users = self.control(Method::GET, "/_sim/users", None).await.body;
        users
            .as_array()
            .and_then(|us| us.iter().find(|u| u["sub"] == sub))
            .and_then(|u| u["accountId"].as_str())
            .unwrap_or_else(|| panic!("no seeded user {sub} in /_sim/users"))
            .to_string()
    }

    /// `GET /_sim/mail`.
    pub async fn mail(&self) -> Value {
        self.control(Method::GET, "/_sim/mail", None).await.body
    }

    /// `GET /_sim/devices`.
    pub async fn devices(&self) -> Value {
        self.control(Method::GET, "/_sim/devices", None).await.body
    }

    /// `PUT /_sim/faults`.
    pub async fn set_faults(&self, faults: Value) -> Reply {
        self.control(Method::PUT, "/_sim/faults", Some(faults)).await
    }

    /// `DELETE /_sim/faults`.
    pub async fn clear_faults(&self) -> Reply {
        self.control(Method::DELETE, "/_sim/faults", None).await
    }

    /// Where the upstream delivers Alice's installation's events: the URL of [`Self::validated_webhook`].
    pub async fn webhook_url(&self) -> String {
        self.validated_webhook().await["protocolData"].as_str().expect("a webhook URL").to_string()
    }

    /// The webhook registered by the BFF on Alice's installation, once the upstream validated it.
    pub async fn validated_webhook(&self) -> Value {
        eventually("the BFF's webhook to be registered and validated upstream", || async {
            self.listed_bff_hooks("alice", 33).await?.into_iter().find(|s| s["state"] == "Created")
        })
        .await
    }

    /// The BFF's subscriptions on an installation, as the upstream lists them for `sub`.
    pub async fn bff_hooks(&self, sub: &str, i: i64) -> Vec<Value> {
        self.listed_bff_hooks(sub, i).await.expect("a list of event subscriptions")
    }

    /// As [`Self::bff_hooks`]; `None` when the upstream answers with no list (an error).
    async fn listed_bff_hooks(&self, sub: &str, i: i64) -> Option<Vec<Value>> {
        let subs = self.get(sub, &format!("/installations/{i}/event-subscriptions")).await.body;
        let hooks = subs
            .as_array()?
            .iter()
            .filter(|s| s["protocolData"].as_str().is_some_and(|d| d.contains("/webhooks/witty/")));
        Some(hooks.cloned().collect())
    }
}

/// A client for plain HTTP on loopback: without root certificates, whose loading would cost each
/// test about 40 ms of CPU.
fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder().tls_certs_only([]).build().expect("a client")
}

/// A JWT-shaped token that names `sub`. The simulator reads claims without checking signatures,
/// like an upstream with keys of its own.
pub fn unsigned_token(sub: &str) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = chrono::Utc::now().timestamp() + 3600;
    format!(
        "{}.{}.c2ln",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(format!(r#"{{"sub":"{sub}","exp":{exp}}}"#))
    )
}

/// `/installations/{i}/charging-stations/{cs}`.
pub fn station_path(installation: i64, station: &str) -> String {
    format!("/installations/{installation}/charging-stations/{station}")
}

/// `/installations/{i}/grid-meters/{gm}`.
pub fn meter_path(installation: i64, meter: &str) -> String {
    format!("/installations/{installation}/grid-meters/{meter}")
}

/// The body of the aggregation and log routes; `step` left out when `None`.
pub fn range_body(start: &str, end: &str, step: Option<&str>) -> Value {
    match step {
        Some(s) => json!({"startDate": start, "endDate": end, "step": s}),
        None => json!({"startDate": start, "endDate": end}),
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body, headers }
}

/// Polls `check` until it returns `Some`, or panics after [`PATIENCE`] naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An Event Grid event about Bob's station (installation 42).
pub fn bobs_event(id: &str) -> Value {
    json!({
        "id": id, "eventType": "Hager.WittyHome.Error",
        "subject": format!("installations/42/charging-stations/{BOB_STATION}"),
        "eventTime": "2026-01-01T10:00:00Z", "data": {"installationId": 42, "code": "E1"},
        "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/42"
    })
}
