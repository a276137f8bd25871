//! Test harness: starts the simulator (and, later, the BFF) on port 0 and talks to them over HTTP.
//! Set `TEST_LOG=1` to see the servers' logs.

#![allow(dead_code)]

use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use witty_bff::simulator::{SimConfig, Simulator};

pub const API_KEY: &str = "test-api-key";

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

static TRACING: Once = Once::new();

/// Logs of the servers under test: to the test output with `TEST_LOG=1`, or appended to the file
/// named by `WITTY_BFF_TEST_LOG_FILE` (CI searches that file for secrets after the suite).
pub fn init_test_log() {
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

/// Test settings: short command delay and fast webhook retries.
pub fn test_sim_config() -> SimConfig {
    SimConfig {
        api_key: API_KEY.into(),
        command_delay: Duration::from_millis(200),
        delivery_attempts: 5,
        delivery_backoff: Duration::from_millis(50),
        delivery_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    }
}

/// A running simulator and a client for it.
pub struct TestSim {
    pub sim: Simulator,
    pub client: reqwest::Client,
    pub base: String,
}

pub async fn spawn_sim() -> TestSim {
    spawn_sim_with(test_sim_config()).await
}

pub async fn spawn_sim_with(config: SimConfig) -> TestSim {
    init_test_log();
    let sim = Simulator::spawn(config).await.expect("simulator starts");
    let base = sim.base_url();
    TestSim { sim, client: reqwest::Client::new(), base }
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
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Calls an upstream route as `sub` (with the right key).
    pub async fn call(&self, sub: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("Ocp-Apim-Subscription-Key", API_KEY)
            .bearer_auth(unsigned_token(sub));
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

    /// A `/_sim/` control route (no key, no token).
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// `GET /_sim/calls`.
    pub async fn calls(&self) -> Value {
        self.control(Method::GET, "/_sim/calls", None).await.body
    }

    pub async fn reset_calls(&self) {
        self.control(Method::DELETE, "/_sim/calls", None).await;
    }
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
        Some(s) => serde_json::json!({"startDate": start, "endDate": end, "step": s}),
        None => serde_json::json!({"startDate": start, "endDate": end}),
    }
}

impl TestSim {
    /// A request to an upstream route as `sub`, with the right key, for bodies the JSON helpers
    /// cannot send (raw text, other content types).
    pub fn request(&self, sub: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Ocp-Apim-Subscription-Key", API_KEY)
            .bearer_auth(unsigned_token(sub))
    }

    /// `GET` a station as `sub`, asserting 200.
    pub async fn station(&self, sub: &str, installation: i64, station: &str) -> Value {
        let r = self.get(sub, &station_path(installation, station)).await;
        assert_eq!(r.status, 200, "GET station {station} as {sub}: {:?}", r.body);
        r.body
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
