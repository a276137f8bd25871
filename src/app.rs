//! The only place that wires the parts together: the upstream client (and the embedded simulator
//! when no upstream is configured), the token verifier, the shared cache, the schema and the HTTP
//! router, on a listener it binds itself (port 0 works).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;
use tower_http::compression::CompressionLayer;

use crate::auth::{JwtSettings, Verifier, mint_dev_token};
use crate::cache::SharedCache;
use crate::config::{Config, Secret};
use crate::events::{LocalBus, SharedBus};
use crate::fleet::{Fleet, Redis};
use crate::graphql::{CommandSettings, Services, build_schema};
use crate::http::{Fanout, HttpState, RateLimiter, Shutdown, router};
use crate::idempotency::{IdempotencyStore, MemoryStore, RedisStore};
use crate::live::{Live, LiveSettings};
use crate::simulator::{self, SimConfig, Simulator};
use crate::upstream::{UpstreamClient, UpstreamConfig};
use uuid::Uuid;

/// How long requests in flight may take to finish once a shutdown is asked for, and WebSockets and
/// SSE streams to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A built application, listening but not yet serving.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    /// The embedded simulator, when it is the upstream; it stops when the app is dropped.
    simulator: Option<Simulator>,
    jwt_secret: Option<String>,
    config: Config,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        let (simulator, base_url, api_key) = upstream(&config).await?;
        let webhook_secret = webhook_secret(&config, &api_key);
        let client = UpstreamClient::new(UpstreamConfig {
            base_url,
            api_key,
            timeout: Duration::from_millis(config.upstream_timeout_ms),
            read_retries: config.upstream_read_retries,
        })
        .map_err(|e| anyhow::anyhow!("upstream client: {e}"))?;
        let jwt_secret = config.effective_jwt_secret();
        let verifier = verifier(&config, jwt_secret.clone()).await?;
        let cache = SharedCache::new(client, config.ttls(), config.cache_capacity)
            .with_response_cache(config.response_cache_mb.saturating_mul(1024 * 1024));
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let dev_token = simulator.as_ref().and(jwt_secret.as_ref()).map(|secret| dev_token(&config, secret));
        let bus: SharedBus = Arc::new(LocalBus::new(config.live_buffer_events));
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => format!("http://{addr}").parse().context("public URL")?,
        };
        let window = Duration::from_secs(config.idempotency_window_secs.max(1));
        // An empty URL (a variable set to nothing in a manifest) is no Redis.
        let redis_url = config.redis_url.as_ref().map(Secret::expose).filter(|u| !u.trim().is_empty());
        let (fleet, idempotency): (_, Arc<dyn IdempotencyStore>) = match redis_url {
            Some(url) => {
                let redis = Redis::new(url, cache.client().metrics().clone())?;
                redis.check().await?;
                let store = Arc::new(RedisStore::new(redis.clone(), window));
                (Some(Fleet::join(redis, Duration::from_millis(config.fleet_lease_ms))), store)
            }
            None => (None, Arc::new(MemoryStore::new(window))),
        };
        let live = Live::new(
            cache.clone(),
            bus.clone(),
            LiveSettings {
                webhooks: config.webhooks,
                public_url,
                webhook_secret,
                validation_timeout: Duration::from_millis(config.webhook_validation_timeout_ms),
                poll_interval: Duration::from_millis(config.poll_interval_ms.max(50)),
                grace: Duration::from_secs(config.watch_grace_secs),
            },
            fleet,
        );
        let services = Services {
            cache: cache.clone(),
            bus,
            commands: CommandSettings { wait_timeout: Duration::from_millis(config.command_wait_timeout_ms) },
            idempotency,
            live: live.clone(),
        };
        let state = HttpState {
            schema: build_schema(services),
            verifier: Arc::new(verifier),
            cache,
            dev_token,
            fanout: Fanout::new(config.live_buffer_events, live.metrics().clone()),
            live,
            ws_keepalive: Duration::from_secs(config.ws_keepalive_secs),
            ws_init_timeout: Duration::from_secs(config.ws_init_timeout_secs),
            limiter: RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst),
            body_timeout: Duration::from_secs(config.header_read_timeout_secs),
        };
        let cors = config.cors().map_err(anyhow::Error::msg)?;
        // Every answer compressed as the client accepts (gzip, br, zstd), GraphiQL's assets
        // included; tower-http's default predicate leaves out SSE (each event must go out as it
        // comes), bodies under 32 bytes and WebSocket upgrades (no body).
        let router = router(state, cors.as_ref()).layer(CompressionLayer::new());
        Ok(App { listener, router, addr, simulator, jwt_secret, config })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The embedded simulator's base URL, when it is the upstream.
    pub fn simulator_url(&self) -> Option<String> {
        self.simulator.as_ref().map(Simulator::base_url)
    }

    /// A token for `sub` signed with the configured HS secret (dev and tests).
    pub fn token_for(&self, sub: &str, ttl_secs: i64) -> Option<String> {
        let secret = self.jwt_secret.as_deref()?;
        Some(mint_dev_token(
            secret,
            sub,
            ttl_secs,
            self.config.jwt_issuer.as_deref(),
            self.config.jwt_audience.as_deref(),
        ))
    }

    /// Serves until `shutdown` completes, then ends WebSockets and SSE streams with their
    /// goodbyes and finishes the requests in flight, within [`SHUTDOWN_GRACE`].
    ///
    /// Each accepted connection takes a place under `WITTY_BFF_MAX_CONNECTIONS` for as long as it
    /// lives, WebSocket included (the place travels with the socket through the upgrade); past the
    /// cap a connection's first request is answered 503 and the connection closed. hyper closes a connection whose request head does
    /// not arrive within `WITTY_BFF_HEADER_READ_TIMEOUT_SECS`, idle keep-alive ones included.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App { listener, router, simulator: _simulator, config, .. } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs));
        let places = Arc::new(Semaphore::new(config.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        let graceful = GracefulShutdown::new();
        // Goes with every request, for the WebSockets and SSE streams to end on.
        let (stop, stopping) = Shutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
            };
            // No Nagle: a small event frame written while the previous one awaits its (delayed)
            // ACK would otherwise wait up to 40 ms.
            let _ = tcp.set_nodelay(true);
            let Ok(place) = places.clone().try_acquire_owned() else {
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(tcp).await;
                        drop(refusal);
                    });
                }
                continue;
            };
            // The peer's address goes with each of its requests, for the rate limit of callers
            // without a token (as `axum::serve`'s `ConnectInfo` would).
            let stopping = stopping.clone();
            let service = TowerToHyperService::new(router.clone().map_request(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(stopping.clone());
                    req
                },
            ));
            let (builder, watcher) = (builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                let io = TokioIo::new(Placed { tcp, _place: place });
                let connection = builder.serve_connection_with_upgrades(io, service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::trace!(error = %e, "a connection ended on an error");
                }
            });
        }
        // New connections are refused from here on.
        drop(listener);
        // WebSockets complete their operations and close with 1001, SSE streams send `complete`
        // and end; hyper's graceful shutdown does not see upgraded connections, so they are waited
        // for apart. Everything gets the grace period, and nothing holds the exit up for longer.
        stop.stop();
        drop(stopping);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join(graceful.shutdown(), stop.drained())).await;
        Ok(())
    }
}

/// At most this many connections over the cap are being answered 503 at once; past them, one is
/// closed without an answer.
const MAX_REFUSALS: usize = 1024;
/// What a client is told to wait before it connects again, past the cap.
const RETRY_AFTER_SECS: u64 = 5;
/// How long a connection over the cap is kept, to read its request and answer it.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// An accepted connection and its place under the connection cap, given back when the connection
/// (or the WebSocket it became) is dropped.
struct Placed {
    tcp: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Placed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Placed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Answers a connection over the cap: its first request gets 503 with `Retry-After`, then the
/// connection is closed. The request head is read first (a client that reads an answer it has not
/// asked for yet takes it for a broken connection), for at most [`REFUSAL_TIME`] in all.
async fn refuse(tcp: TcpStream) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(REFUSAL_TIME).keep_alive(false);
    let busy = hyper::service::service_fn(|_| async {
        let mut busy = axum::http::Response::new(axum::body::Body::from("too many connections; retry later\n"));
        *busy.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        let headers = busy.headers_mut();
        headers.insert(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok::<_, std::convert::Infallible>(busy)
    });
    let _ = tokio::time::timeout(REFUSAL_TIME, builder.serve_connection(TokioIo::new(tcp), busy)).await;
    tracing::debug!("a connection over the cap was answered 503");
}

/// An accept that failed: one connection's trouble is skipped; anything else (out of file
/// descriptors) is logged and waited out for a second, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The upstream to use: the configured one, or an embedded simulator started on a loopback port,
/// with the API key to send it.
async fn upstream(config: &Config) -> anyhow::Result<(Option<Simulator>, reqwest::Url, String)> {
    let key = config.api_key.as_ref().map(|k| k.expose().to_string());
    if let Some(url) = &config.upstream_url {
        return Ok((None, url.clone(), key.unwrap_or_default()));
    }
    let key = key.unwrap_or(simulator::DEV_API_KEY.into());
    let sim = Simulator::spawn(SimConfig { api_key: key.clone(), ..SimConfig::default() })
        .await
        .context("cannot start the embedded simulator")?;
    let url = sim.base_url().parse().context("simulator URL")?;
    Ok((Some(sim), url, key))
}

/// The secret the installations' webhook keys are made from: stable across restarts, so our
/// upstream subscription is recognised again, and unguessable without the API key. The prefix
/// keeps it apart from the secret members could once read in webhook URLs.
fn webhook_secret(config: &Config, api_key: &str) -> String {
    match &config.webhook_secret {
        Some(s) => s.expose().to_string(),
        None => Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("witty-bff-webhook-keys-v2:{api_key}").as_bytes())
            .simple()
            .to_string(),
    }
}

async fn verifier(config: &Config, secret: Option<String>) -> anyhow::Result<Verifier> {
    let verifier = Verifier::new(&JwtSettings {
        secret,
        public_key: config.jwt_public_key.clone(),
        jwks_url: config.jwt_jwks_url.clone(),
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_secs: config.jwt_leeway_secs,
        jwks_min_refresh: Duration::from_secs(config.jwt_jwks_min_refresh_secs),
        ..JwtSettings::default()
    })
    .map_err(anyhow::Error::msg)?;
    verifier.warm_up().await;
    Ok(verifier)
}

/// GraphiQL's token, minted for each page so it is never stale and carries the configured claims.
fn dev_token(config: &Config, secret: &str) -> crate::http::DevToken {
    let (secret, issuer, audience) = (secret.to_string(), config.jwt_issuer.clone(), config.jwt_audience.clone());
    Arc::new(move || mint_dev_token(&secret, "alice", 12 * 3600, issuer.as_deref(), audience.as_deref()))
}
