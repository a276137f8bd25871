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
        Ok(Redis { client, conn, metrics })
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
        // The error's kind only: its text may quote the URL.
        tracing::warn!(part, error = error.category(), "Redis unavailable; this replica uses its own state");
    }

    pub(crate) fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }
}

mod channel;
mod lease;

pub(crate) use channel::{Fleet, Listener, Note, Subscription};
