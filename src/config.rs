//! One typed configuration, read once at start-up from flags and `WITTY_BFF_*` environment
//! variables (a flag wins over its variable). Secrets never show in `Debug` output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::cache::Ttls;
use crate::telemetry::LogFormat;

/// A secret string: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The dev HS256 secret used when none is configured and the embedded simulator is the upstream.
pub const DEV_JWT_SECRET: &str = "witty-bff-dev-secret-do-not-use-in-production";

/// witty-bff's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve GraphQL on (port 0: any free port).
    #[arg(long, env = "WITTY_BFF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the Witty-Home API. Unset: start the embedded simulator on a loopback port.
    #[arg(long, env = "WITTY_BFF_UPSTREAM_URL")]
    pub upstream_url: Option<Url>,

    /// The partner's Ocp-Apim-Subscription-Key (default: the embedded simulator's dev key).
    #[arg(long, env = "WITTY_BFF_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// HS256/384/512 secret that signs callers' tokens (default with the simulator: a dev secret).
    #[arg(long, env = "WITTY_BFF_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// JWKS URL of the identity provider (RS256/ES256 keys).
    #[arg(long, env = "WITTY_BFF_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<Url>,

    /// PEM file with the identity provider's RS256/ES256 public key.
    #[arg(long, env = "WITTY_BFF_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` of tokens (unset: not checked).
    #[arg(long, env = "WITTY_BFF_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of tokens (unset: not checked).
    #[arg(long, env = "WITTY_BFF_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Seconds of clock skew allowed on token expiry.
    #[arg(long, env = "WITTY_BFF_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Least seconds between two fetches of the JWKS triggered by tokens naming an unknown `kid`
    /// (so a flood of random `kid`s cannot hammer the key server).
    #[arg(long, env = "WITTY_BFF_JWT_JWKS_MIN_REFRESH_SECS", default_value_t = 10)]
    pub jwt_jwks_min_refresh_secs: u64,

    /// Public base URL of this server (the webhook registered upstream is built from it).
    #[arg(long, env = "WITTY_BFF_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Secret path segment of the webhook URL (default: derived from the API key, so it stays the
    /// same across restarts and the upstream subscription is adopted again).
    #[arg(long, env = "WITTY_BFF_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Receive station events by webhook (`false`: poll the watched stations instead).
    #[arg(long, env = "WITTY_BFF_WEBHOOKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhooks: bool,

    /// Interval of the polling fallback, in ms.
    #[arg(long, env = "WITTY_BFF_POLL_INTERVAL_MS", default_value_t = 5_000)]
    pub poll_interval_ms: u64,

    /// How long to wait for the upstream's webhook validation before polling instead, in ms.
    #[arg(long, env = "WITTY_BFF_WEBHOOK_VALIDATION_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_validation_timeout_ms: u64,

    /// How long the upstream subscription outlives the last watcher of an installation, in s.
    #[arg(long, env = "WITTY_BFF_WATCH_GRACE_SECS", default_value_t = 30)]
    pub watch_grace_secs: u64,

    /// Interval of keep-alives, in seconds: WebSocket pings (and `ka` messages on the legacy
    /// protocol), SSE comments.
    #[arg(long, env = "WITTY_BFF_WS_KEEPALIVE_SECS", default_value_t = 15)]
    pub ws_keepalive_secs: u64,

    /// Seconds a WebSocket client has to send `connection_init` once upgraded; past them the
    /// connection is closed with 4408 (on the legacy protocol, after a `connection_error`). A
    /// client sends it at once (the graphql-ws library waits 3 s for it by default); 10 s leaves
    /// room for a slow mobile network and closes a silent WebSocket well within 30 s.
    #[arg(long, env = "WITTY_BFF_WS_INIT_TIMEOUT_SECS", default_value_t = 10)]
    pub ws_init_timeout_secs: u64,

    /// Seconds a client has to send the whole head of a request (request line and headers),
    /// counted from the accept and, on a keep-alive connection, from the end of the previous
    /// response: so it is also how long an idle keep-alive connection is kept (hyper counts both
    /// with one timer). Past it the connection is closed. 20 s closes a half-sent request or an
    /// idle connection within 30 s while a browser still reuses its connection between clicks; a
    /// proxy in front must close its idle connections to witty-bff sooner than this. A request's
    /// body (of `/graphql` or a webhook) has as long again once its head has arrived: past it,
    /// 408.
    #[arg(long, env = "WITTY_BFF_HEADER_READ_TIMEOUT_SECS", default_value_t = 20)]
    pub header_read_timeout_secs: u64,

    /// Most connections served at once, WebSockets and SSE streams included. Past it a new
    /// connection is answered 503 with `Retry-After` and closed at once, so that a flood of
    /// connections cannot exhaust the file descriptors (keep the process's `ulimit -n` above it).
    #[arg(long, env = "WITTY_BFF_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Requests a second each caller may send to `/graphql` over time (GCRA: one comes back every
    /// 1/rate seconds), counted by the verified token's `sub`, or by client address for requests
    /// without a valid token; a WebSocket's `subscribe` messages count against its caller. Past
    /// the limit a request gets `RATE_LIMITED` with `retryAfterSeconds` (and HTTP 429 with
    /// `Retry-After` for `application/graphql-response+json`). Webhooks, `/healthz`, `/readyz` and
    /// `/metrics` are never limited. May be fractional (0.5: one every 2 s); 0 turns the limit off.
    /// 50 is well above what an app's screens send, so only a runaway client meets it.
    #[arg(long, env = "WITTY_BFF_RATE_LIMIT_PER_SECOND", default_value_t = 50.0)]
    pub rate_limit_per_second: f64,

    /// Requests a caller may send at once before the rate above applies (a dashboard opening with
    /// many queries, a test suite); 0 turns the limit off.
    #[arg(long, env = "WITTY_BFF_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Events a live subscriber may fall behind by before it is dropped (with an error telling it
    /// to subscribe again). The event bus keeps this many events, and so does each execution
    /// shared by several WebSocket subscribers (about 48 bytes each). Past half of it, a burst of webhook
    /// events (one delivery, or deliveries queued back to back) is published only as fast as the
    /// listeners take it (at most 2 s in all, and not for a listener that stopped reading).
    #[arg(long, env = "WITTY_BFF_LIVE_BUFFER_EVENTS", default_value_t = 1024)]
    pub live_buffer_events: usize,

    /// Timeout of one upstream call, in milliseconds.
    #[arg(long, env = "WITTY_BFF_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,

    /// Extra attempts for upstream reads that failed on the way (commands are never retried).
    #[arg(long, env = "WITTY_BFF_UPSTREAM_READ_RETRIES", default_value_t = 2)]
    pub upstream_read_retries: usize,

    /// Seconds stations and grid meters are cached.
    #[arg(long, env = "WITTY_BFF_CACHE_STATE_TTL_SECS", default_value_t = 5)]
    pub cache_state_ttl_secs: u64,

    /// Seconds installations, users, invitations, tariffs and event subscriptions are cached
    /// (membership changes made outside witty-bff show after at most this long).
    #[arg(long, env = "WITTY_BFF_CACHE_LIST_TTL_SECS", default_value_t = 30)]
    pub cache_list_ttl_secs: u64,

    /// Seconds measure and log metadata is cached.
    #[arg(long, env = "WITTY_BFF_CACHE_METADATA_TTL_SECS", default_value_t = 3600)]
    pub cache_metadata_ttl_secs: u64,

    /// Seconds measure values and logs of ranges that ended in the past are cached.
    #[arg(long, env = "WITTY_BFF_CACHE_HISTORY_TTL_SECS", default_value_t = 3600)]
    pub cache_history_ttl_secs: u64,

    /// Seconds measure values and logs of ranges reaching the present are cached.
    #[arg(long, env = "WITTY_BFF_CACHE_LIVE_HISTORY_TTL_SECS", default_value_t = 30)]
    pub cache_live_history_ttl_secs: u64,

    /// Seconds an upstream failure is remembered.
    #[arg(long, env = "WITTY_BFF_CACHE_NEGATIVE_TTL_SECS", default_value_t = 2)]
    pub cache_negative_ttl_secs: u64,

    /// How long a command with `wait: true` waits for the station to show the change, in ms.
    #[arg(long, env = "WITTY_BFF_COMMAND_WAIT_TIMEOUT_MS", default_value_t = 15_000)]
    pub command_wait_timeout_ms: u64,

    /// How long a mutation's result is kept for its idempotency key, in seconds.
    #[arg(long, env = "WITTY_BFF_IDEMPOTENCY_WINDOW_SECS", default_value_t = 600)]
    pub idempotency_window_secs: u64,

    /// Most entries in the shared cache.
    #[arg(long, env = "WITTY_BFF_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,

    /// Most mebibytes of whole query answers kept by the response cache (0: off). See
    /// docs/loading.md.
    #[arg(long, env = "WITTY_BFF_RESPONSE_CACHE_MB", default_value_t = 64)]
    pub response_cache_mb: u64,

    /// Redis (or Valkey) shared by the replicas of a fleet: `redis://[:password@]host:port[/db]`,
    /// `rediss://` for TLS. Unset: one process, everything in memory. Never printed (it may hold
    /// a password). See docs/fleet.md.
    #[arg(long, env = "WITTY_BFF_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// In a fleet, how long a replica's lease on an installation's upstream event subscription
    /// (or poller), and its count of watchers, last without renewal, in ms: when a replica dies,
    /// another takes over within about this long. Renewed every third of it.
    #[arg(long, env = "WITTY_BFF_FLEET_LEASE_MS", default_value_t = 5_000)]
    pub fleet_lease_ms: u64,

    /// Origins allowed to call `/graphql` from a browser, comma-separated
    /// (`https://app.example.com,http://localhost:5173`), or `*` for any. Unset: no CORS headers
    /// at all, so only pages served from witty-bff's own origin (GraphiQL) can call it.
    #[arg(long, env = "WITTY_BFF_CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// Log lines: `text` (coloured only on a terminal) or `json` (one JSON object a line, with
    /// the fields of its request's span, `request_id` among them). Traces go to OpenTelemetry
    /// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[arg(long, env = "WITTY_BFF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The browser origins allowed to call `/graphql` (`WITTY_BFF_CORS_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (tokens travel in `Authorization`, not cookies, so this shares nothing a
    /// page could not send anyway).
    Any,
    /// These origins, as browsers write them in `Origin` (`scheme://host[:port]`, default port left out).
    List(Vec<String>),
}

impl Default for Config {
    /// The defaults of the flags (what `witty-bff` does with no configuration).
    fn default() -> Self {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        // Parsed from no arguments and no environment: the declared defaults.
        let matches = <Defaults as clap::CommandFactory>::command()
            .mut_args(|a| a.env(None::<&str>))
            .get_matches_from(["witty-bff"]);
        Defaults::from_arg_matches(&matches).map(|d| d.config).unwrap_or_else(|e| panic!("flag defaults: {e}"))
    }
}

impl Config {
    pub fn ttls(&self) -> Ttls {
        Ttls {
            state: Duration::from_secs(self.cache_state_ttl_secs),
            lists: Duration::from_secs(self.cache_list_ttl_secs),
            metadata: Duration::from_secs(self.cache_metadata_ttl_secs),
            closed_history: Duration::from_secs(self.cache_history_ttl_secs),
            open_history: Duration::from_secs(self.cache_live_history_ttl_secs),
            negative: Duration::from_secs(self.cache_negative_ttl_secs),
        }
    }

    /// Checks what cannot work before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.upstream_url.is_some()
            && self.jwt_secret.is_none()
            && self.jwt_jwks_url.is_none()
            && self.jwt_public_key.is_none()
        {
            return Err("WITTY_BFF_UPSTREAM_URL is set, so a key to verify tokens is required: set \
                        WITTY_BFF_JWT_SECRET, WITTY_BFF_JWT_JWKS_URL or WITTY_BFF_JWT_PUBLIC_KEY"
                .into());
        }
        if self.upstream_url.is_some() && self.api_key.is_none() {
            return Err(
                "WITTY_BFF_UPSTREAM_URL is set, so WITTY_BFF_API_KEY (the partner's subscription key) is required"
                    .into(),
            );
        }
        if self.upstream_timeout_ms == 0 {
            return Err("the upstream timeout must be more than 0 ms".into());
        }
        if self.header_read_timeout_secs == 0 || self.ws_init_timeout_secs == 0 {
            return Err(
                "WITTY_BFF_HEADER_READ_TIMEOUT_SECS and WITTY_BFF_WS_INIT_TIMEOUT_SECS must be at least 1".into()
            );
        }
        if !(1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&self.max_connections) {
            return Err(format!(
                "WITTY_BFF_MAX_CONNECTIONS must be between 1 and {}",
                tokio::sync::Semaphore::MAX_PERMITS
            ));
        }
        if let Some(url) = self.redis_url.as_ref().filter(|u| !u.expose().trim().is_empty()) {
            crate::fleet::check_url(url.expose())?;
        }
        if self.fleet_lease_ms < 300 {
            return Err("WITTY_BFF_FLEET_LEASE_MS must be at least 300".into());
        }
        self.cors()?;
        let rate = self.rate_limit_per_second;
        if !rate.is_finite() || rate < 0.0 || (rate > 0.0 && Duration::try_from_secs_f64(1.0 / rate).is_err()) {
            return Err(format!("WITTY_BFF_RATE_LIMIT_PER_SECOND must be 0 (off) or a positive number, not {rate}"));
        }
        Ok(())
    }

    /// The origins of `WITTY_BFF_CORS_ORIGINS`; `None` when unset or empty (no CORS). An entry
    /// that is not an origin is refused, so that a typo does not silently lock a front end out.
    pub fn cors(&self) -> Result<Option<CorsOrigins>, String> {
        let Some(setting) = self.cors_origins.as_deref().filter(|s| !s.trim().is_empty()) else { return Ok(None) };
        let entries: Vec<&str> = setting.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        if entries.contains(&"*") {
            return match entries.len() {
                1 => Ok(Some(CorsOrigins::Any)),
                _ => Err("WITTY_BFF_CORS_ORIGINS: `*` allows any origin, so it goes alone".into()),
            };
        }
        let origins = entries.into_iter().map(origin).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CorsOrigins::List(origins)))
    }

    /// The HS secret in force: the configured one, or the dev secret on the simulator.
    pub fn effective_jwt_secret(&self) -> Option<String> {
        match (&self.jwt_secret, &self.upstream_url) {
            (Some(s), _) => Some(s.expose().to_string()),
            (None, None) => Some(DEV_JWT_SECRET.to_string()),
            (None, Some(_)) => None,
        }
    }
}

/// `entry` as a browser writes it in `Origin`: `scheme://host[:port]`, the host in lower case and
/// a scheme's default port left out, since the `Origin` header is compared as a string.
fn origin(entry: &str) -> Result<String, String> {
    let refused =
        || format!("WITTY_BFF_CORS_ORIGINS: `{entry}` is not an origin; write scheme://host[:port] (no path), or `*`");
    let url = Url::parse(entry).map_err(|_| refused())?;
    let bare = url.username().is_empty() && url.password().is_none() && url.query().is_none();
    if !bare || !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err(refused());
    }
    let host = url.host_str().ok_or_else(refused)?;
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_redaction() {
        let mut c = Config::default();
        assert_eq!(c.listen.port(), 8080);
        assert!(c.upstream_url.is_none());
        assert!(c.validate().is_ok());
        c.jwt_secret = Some(Secret::new("super-secret-value"));
        c.api_key = Some(Secret::new("partner-key-value"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret-value") && !shown.contains("partner-key-value"), "{shown}");
        c.upstream_url = Some("https://api.example.com".parse().unwrap());
        c.jwt_secret = None;
        assert!(c.validate().unwrap_err().contains("WITTY_BFF_JWT_SECRET"));
    }

    #[test]
    fn cors_origins_are_read_as_browsers_write_them_and_a_bad_one_is_refused() {
        let cors = |s: &str| Config { cors_origins: Some(s.into()), ..Config::default() }.cors();
        assert_eq!(Config::default().cors(), Ok(None));
        assert_eq!(cors(" "), Ok(None));
        assert_eq!(cors("*"), Ok(Some(CorsOrigins::Any)));
        let list = cors("https://App.Example.com:443/, http://localhost:5173,capacitor://localhost");
        let expected = ["https://app.example.com", "http://localhost:5173", "capacitor://localhost"];
        assert_eq!(list, Ok(Some(CorsOrigins::List(expected.map(String::from).to_vec()))));
        for bad in [
            "app.example.com",
            "https://a.example/app",
            "https://a.example?x",
            "https://u@a.example",
            "*,https://a.example",
        ] {
            let error = cors(bad).unwrap_err();
            assert!(error.starts_with("WITTY_BFF_CORS_ORIGINS"), "{bad}: {error}");
            let refused = Config { cors_origins: Some(bad.into()), ..Config::default() }.validate();
            assert!(refused.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_repeating_it() {
        for url in ["http://:hunter2-pass@127.0.0.1:6379", "redis://:hunter2-pass@127.0.0.1:notaport", "hunter2-pass"] {
            let c = Config { redis_url: Some(Secret::new(url)), ..Config::default() };
            let error = c.validate().unwrap_err();
            assert!(error.contains("WITTY_BFF_REDIS_URL") && !error.contains("hunter2"), "{error}");
        }
        // Set to nothing (an empty variable in a manifest): no Redis.
        assert_eq!(Config { redis_url: Some(Secret::new(" ")), ..Config::default() }.validate(), Ok(()));
        let ok = Config { redis_url: Some(Secret::new("rediss://:pw@redis.example:6380/2")), ..Config::default() };
        assert_eq!(ok.validate(), Ok(()));
        assert!(!format!("{ok:?}").contains("redis.example"));
    }

    #[test]
    fn the_connection_limits_close_a_silent_connection_within_30_seconds_and_are_never_zero() {
        let c = Config::default();
        assert!(c.header_read_timeout_secs <= 30 && c.ws_init_timeout_secs <= 30);
        for zero in [
            Config { header_read_timeout_secs: 0, ..Config::default() },
            Config { ws_init_timeout_secs: 0, ..Config::default() },
            Config { max_connections: 0, ..Config::default() },
            Config { rate_limit_per_second: -1.0, ..Config::default() },
            Config { rate_limit_per_second: f64::NAN, ..Config::default() },
        ] {
            assert!(zero.validate().is_err(), "{zero:?}");
        }
    }
}
