//! The embedded Witty-Home cloud: a stateful, faithful stand-in for the upstream, served by its own
//! axum app on its own listener. It imports nothing else from this crate, so that the BFF talks to
//! it exactly as it would to the real cloud: over HTTP, through its own wire types.
//!
//! - [`store`]: the seeded state and every rule of the API document;
//! - [`series`]: procedural measures and logs (any date range, deterministic);
//! - [`routes`]: the 50 upstream routes, as one table that also feeds [`openapi`];
//! - [`platform`]: what Azure API Management adds (subscription key, bearer, throttling) plus the
//!   call counts and fault injection of `/_sim/`;
//! - [`webhooks`]: Event Grid deliveries of notifications;
//! - [`control`]: the `/_sim/` control routes.

pub mod control;
pub mod error;
pub mod openapi;
pub mod platform;
pub mod routes;
pub mod series;
pub mod store;
pub mod webhooks;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use self::platform::{CallCounts, Faults};
use self::store::{Notice, Store};

/// The subscription key the simulator accepts unless told otherwise.
pub const DEV_API_KEY: &str = "witty-dev-key";

/// How the simulator behaves; every field has a default that suits an interactive run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The `Ocp-Apim-Subscription-Key` accepted.
    pub api_key: String,
    /// Seed of the procedural history and of the seeded ids.
    pub seed: u64,
    /// How long a station takes to apply a command after answering 202.
    pub command_delay: Duration,
    /// Webhook delivery attempts (the first included) before an event is dropped.
    pub delivery_attempts: u32,
    /// Delay before the first retry of a failed delivery; doubled at each further retry.
    pub delivery_backoff: Duration,
    /// How long a webhook receiver has to answer one delivery.
    pub delivery_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_key: DEV_API_KEY.into(),
            seed: 42,
            command_delay: Duration::from_secs(1),
            delivery_attempts: 6,
            delivery_backoff: Duration::from_millis(500),
            delivery_timeout: Duration::from_secs(5),
        }
    }
}

/// Settings that the control routes may change while running.
#[derive(Clone, Debug)]
pub struct Settings {
    pub command_delay: Duration,
    pub delivery_attempts: u32,
    pub delivery_backoff: Duration,
    pub delivery_timeout: Duration,
}

/// What every handler shares.
pub struct Shared {
    pub store: RwLock<Store>,
    pub api_key: String,
    pub settings: RwLock<Settings>,
    pub calls: Mutex<CallCounts>,
    pub faults: RwLock<Option<Faults>>,
    /// The client that delivers webhooks.
    pub http: reqwest::Client,
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// Reads the store. A poisoned lock only means a handler panicked mid-read; the data is
    /// still whole, so carry on with it.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands notices to the subscriptions that want them.
    pub fn publish(&self, notices: Vec<Notice>) {
        webhooks::publish(self, notices);
    }
}

/// Builds the simulator's app around a fresh seeded state.
pub fn app(config: &SimConfig) -> (Router, AppState) {
    let settings = Settings {
        command_delay: config.command_delay,
        delivery_attempts: config.delivery_attempts.max(1),
        delivery_backoff: config.delivery_backoff,
        delivery_timeout: config.delivery_timeout,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let state = Arc::new(Shared {
        store: RwLock::new(Store::seeded(config.seed, Utc::now())),
        api_key: config.api_key.clone(),
        settings: RwLock::new(settings),
        calls: Mutex::new(CallCounts::default()),
        faults: RwLock::new(None),
        http,
    });
    let router = routes::api_router(state.clone()).merge(control::router()).with_state(state.clone());
    (router, state)
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Simulator {
    /// Starts the simulator on `127.0.0.1` with a port the OS picks.
    pub async fn spawn(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Simulator::start(listener, config)
    }

    /// Serves on an already bound listener, in the background.
    pub fn start(listener: TcpListener, config: SimConfig) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let (router, state) = app(&config);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        Ok(Simulator { addr, state, shutdown: Some(tx) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL of the upstream routes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves the simulator alone until `shutdown` completes (`witty-bff simulate`).
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _state) = app(&config);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
