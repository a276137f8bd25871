//! What the replicas of a fleet share through Redis (or Valkey) when `WITTY_BFF_REDIS_URL` is set.
//! Redis is the engine between replicas: they never speak to each other directly.
//!
//! Every key and channel starts with [`PREFIX`]; docs/fleet.md lists them with what each holds and
//! how long it lives. Losing Redis degrades, never stops: each part falls back to the replica's
//! own state (counted in `witty_bff_fleet_fallbacks_total{part}`) and uses Redis again once it
//! answers.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// What every key and channel of witty-bff in Redis starts with.
pub(crate) const PREFIX: &str = "witty-bff:";

/// How long a Redis call may take before the replica goes on without it. Redis answers on a
/// healthy network in well under a millisecond; a replica must not make its callers wait long on
/// a Redis that has gone away.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Checks a Redis URL without ever repeating it (it may hold a password).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "WITTY_BFF_REDIS_URL is no Redis URL (redis://[:password@]host:port[/db] or rediss:// for TLS): {}",
            e.category()
        )),
    }
}

/// A handle on the fleet's Redis: cheap to clone, connected lazily and again after a loss by
/// the redis crate's `ConnectionManager`.
#[derive(Clone)]
pub(crate) struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    metrics: std::sync::Arc<Metrics>,
    /// Redis failed since it last answered the channel's subscription: logged once per loss.
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The fleet's channel is subscribed: Redis answers. While it does not, callers go on
    /// without it at once rather than wait for a timeout on every call.
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Redis {
    /// A handle on the Redis at `url` (checked by `Config::validate`); nothing is connected yet.
    pub(crate) fn new(url: &str, metrics: std::sync::Arc<Metrics>) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("Redis URL: {}", e.category()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| anyhow::anyhow!("Redis connection: {}", e.category()))?;
        // Presumed up until the channel's first subscription says otherwise.
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        Ok(Redis { client, conn, metrics, lost: Default::default(), up })
    }

    /// At start: a Redis that refuses the credentials or settings of the URL is a configuration
    /// to fix, not a Redis gone away: the replica does not start. One that cannot be reached is
    /// waited for in the background (the replica starts on its own state).
    pub(crate) async fn check(&self) -> anyhow::Result<()> {
        let connected = channel::timed(self.client.get_multiplexed_async_connection()).await;
        match connected {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig
                ) =>
            {
                anyhow::bail!(
                    "Redis refused this replica ({}): check the user and password of WITTY_BFF_REDIS_URL",
                    e.category()
                )
            }
            Err(e) => {
                self.fell_back("events", &e);
                Ok(())
            }
        }
    }

    /// A connection for commands (multiplexed: clones share it).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for the dedicated pub/sub connection.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Counts an operation that went on without Redis (see the module's doc).
    pub(crate) fn fell_back(&self, part: &str, error: &redis::RedisError) {
        self.metrics.fleet_fallbacks.with_label_values(&[part]).inc();
        if !self.lost.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // The error's kind only: its text may quote the URL.
            tracing::warn!(part, error = error.category(), "Redis unavailable; this replica uses its own state");
        }
    }

    /// Whether Redis answered last time the channel looked (see `up`).
    pub(crate) fn up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Says whether the fleet's channel is subscribed (it alone knows).
    pub(super) fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
        self.metrics.fleet_connected.set(i64::from(up));
    }

    /// Redis answers again (the channel is subscribed): the next loss is logged again.
    pub(crate) fn recovered(&self) {
        if self.lost.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("Redis reachable again; the replicas share their state again");
        }
    }

    pub(crate) fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }
}

mod channel;
mod lease;

pub(crate) use channel::{Fleet, Listener, Note, Subscription};
