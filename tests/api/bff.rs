//! The BFF under test: a simulator of its own and witty-bff pointed at it over HTTP, both on port 0.
//! (To be folded into helpers.rs.)

#![allow(dead_code)]

use serde_json::{Value, json};
use tokio::sync::oneshot;
use witty_bff::app::App;
use witty_bff::auth::mint_dev_token;
use witty_bff::config::{Config, Secret};

use crate::helpers::*;

pub const JWT_SECRET: &str = "test-jwt-secret-for-witty-bff";

pub struct TestApp {
    pub sim: TestSim,
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
        upstream_timeout_ms: 2_000,
        upstream_read_retries: 1,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    let sim = spawn_sim().await;
    let mut config = test_config(&sim);
    tune(&mut config);
    let app = App::build(config.clone()).await.expect("the app builds");
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
