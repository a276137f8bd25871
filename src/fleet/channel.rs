//! The fleet's one pub/sub channel, and the sequence that orders it.
//!
//! Every note a replica shares (the fresh events of a delivery, what a mutation made stale, a
//! webhook validation) is numbered and published by one Lua script, atomically: `INCR` of
//! `witty-bff:seq` then `PUBLISH` on `witty-bff:notes`. So the channel carries notes in the order
//! of their numbers, and a replica knows how far it has heard. A query first reads the number
//! (one `GET`) and waits until its replica has heard that far: a mutation answered on replica A
//! has numbered its note before answering, so a query sent to B afterwards sees its effect (the
//! "read your writes" a load balancer would otherwise break).
//!
//! Webhook events are deduplicated and ordered fleet-wide in the same script: an event id already
//! seen at the installation (by any replica, within a day) is dropped, and an event older than
//! the newest of its station already published is marked `late`.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{CALL_TIMEOUT, PREFIX, Redis};
use crate::cache::Change;
use crate::events::StationEvent;

/// What one replica tells the others.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    /// Fresh events of a delivery (or of a poller), deduplicated and `late`-marked fleet-wide:
    /// publish them to this replica's subscribers, after dropping what they make stale.
    Events(Vec<StationEvent>),
    /// What a mutation made stale.
    Change(Change),
    /// A webhook validation handshake was answered (by the replica the upstream reached).
    Validated(Subscription),
    /// The upstream deleted an event subscription (its webhook said so).
    Deleted(Subscription),
}

/// An installation's upstream event subscription, as a webhook delivery names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub installation: i64,
    pub name: Option<String>,
}

/// What hears the notes of the other replicas.
pub(crate) trait Listener: Send + Sync {
    fn heard(&self, note: Note);
    /// Notes may have been missed (the channel was lost a while): everything cached may be stale.
    fn resynced(&self);
}

/// How long a replica waits to have heard the notes numbered before a query came; past it, the
/// query goes on after the cache is dropped (it cannot be stale if nothing is cached).
const CATCH_UP: Duration = Duration::from_secs(1);

/// How often the channel's Redis is asked whether it answers.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The longest pause between two tries to reach Redis again.
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// How long an event id stays known, and the newest event time of a station (Event Grid retries
/// a delivery for up to a day).
const EVENT_MEMORY_MS: u64 = 24 * 3600 * 1000;

/// This replica's place in the fleet.
pub(crate) struct Fleet {
    redis: Redis,
    /// This replica's name (a random UUID: a restarted replica is a new one).
    replica: String,
    /// The number of the last note heard on the channel.
    heard: tokio::sync::watch::Sender<u64>,
    listener: OnceLock<Weak<dyn Listener>>,
    pub(super) lease: Duration,
}

/// Numbers and publishes a note: KEYS[1] the sequence, KEYS[2] the channel; ARGV: replica, kind,
/// payload.
const NOTE: &str = r"
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], seq .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return seq
";

/// Deduplicates and orders a delivery's events, then numbers and publishes the fresh ones.
/// KEYS as for `NOTE`; ARGV: replica, memory (ms), then five per event: its id's key, its
/// station's newest-time key, its time and the time it counts as seen (µs), its JSON. Returns the
/// note's number (0: nothing fresh) and one flag per event: `-` a duplicate, `1` late, `0` not.
const EVENTS: &str = r"
local flags, fresh = {}, {}
for b = 3, #ARGV, 5 do
  if redis.call('SET', ARGV[b], '1', 'NX', 'PX', ARGV[2]) then
    local at, seen_at = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local newest = tonumber(redis.call('GET', ARGV[b + 1]) or ARGV[b + 3])
    if seen_at > newest then newest = seen_at end
    redis.call('SET', ARGV[b + 1], string.format('%.0f', newest), 'PX', ARGV[2])
    flags[#flags + 1] = (newest > at) and '1' or '0'
    fresh[#fresh + 1] = ARGV[b + 4]
  else
    flags[#flags + 1] = '-'
  end
end
local seq = 0
if #fresh > 0 then
  seq = redis.call('INCR', KEYS[1])
  local note = seq .. '|' .. ARGV[1] .. '|E|' .. table.concat(flags) .. '|[' .. table.concat(fresh, ',') .. ']'
  redis.call('PUBLISH', KEYS[2], note)
end
return {seq, table.concat(flags)}
";

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The channel of the fleet on the Redis database `db`: keys are per database, channels are not,
/// so fleets sharing a Redis by database number must not hear each other.
fn channel(db: i64) -> String {
    format!("{PREFIX}notes:{db}")
}

impl Fleet {
    /// Joins the fleet on `redis`: listens to the channel from now on (and again after a loss).
    pub(crate) fn join(redis: Redis, lease: Duration) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            redis,
            replica: uuid::Uuid::new_v4().to_string(),
            heard: tokio::sync::watch::channel(0).0,
            listener: OnceLock::new(),
            lease,
        });
        tracing::info!(replica = %fleet.replica, "fleet: this replica's name (in Redis's leases)");
        tokio::spawn(listen(Arc::downgrade(&fleet)));
        fleet
    }

    /// Who hears the other replicas' notes (set once, by the live-events service).
    pub(crate) fn set_listener(&self, listener: Weak<dyn Listener>) {
        let _ = self.listener.set(listener);
    }

    fn channel(&self) -> String {
        channel(self.redis.client().get_connection_info().redis_settings().db())
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// Subscribed to the channel (Redis answers).
    pub(crate) fn connected(&self) -> bool {
        self.redis.up()
    }

    /// Tells the other replicas; returns once the note is numbered (so a query on another replica
    /// after this one answers sees it). Without Redis, nobody else hears it (counted, logged).
    pub(crate) async fn tell(&self, note: &Note) {
        let (kind, payload) = match note {
            Note::Events(_) => return,
            Note::Change(c) => ("C", serde_json::to_string(c)),
            Note::Validated(s) => ("V", serde_json::to_string(s)),
            Note::Deleted(s) => ("D", serde_json::to_string(s)),
        };
        let Ok(payload) = payload else { return };
        if !self.connected() {
            return self.redis.metrics().fleet_fallbacks.with_label_values(&["invalidation"]).inc();
        }
        let script = redis::Script::new(NOTE);
        let mut call = script.key(key("seq"));
        call.key(self.channel()).arg(&self.replica).arg(kind).arg(payload);
        let told: Result<u64, _> = timed(call.invoke_async(&mut self.redis.conn())).await;
        if let Err(e) = told {
            self.redis.fell_back("invalidation", &e);
        }
    }

    /// A connection of its own to the fleet's Redis, for a caller on another runtime.
    pub(crate) async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        timed(self.redis.client().get_multiplexed_async_connection()).await
    }

    /// Keeps a value for the fleet under `name` for `ttl` (nothing while Redis is away).
    pub(crate) async fn keep(&self, name: &str, value: &str, ttl: Duration) {
        if !self.connected() {
            return;
        }
        let set = redis::cmd("SET").arg(key(name)).arg(value).arg("PX").arg(ttl.as_millis() as u64).clone();
        if let Err(e) = timed(set.query_async::<()>(&mut self.redis.conn())).await {
            self.redis.fell_back("lease", &e);
        }
    }

    /// What [`Fleet::keep`] kept under `name`, if it lasts and Redis answers.
    pub(crate) async fn recall(&self, name: &str) -> Option<String> {
        if !self.connected() {
            return None;
        }
        let get = redis::cmd("GET").arg(key(name)).clone();
        timed(get.query_async::<Option<String>>(&mut self.redis.conn())).await.ok().flatten()
    }

    /// Keeps the events no replica has published yet (an id is known per installation), marks
    /// the late ones, and tells the other replicas. `Err` when Redis cannot be used: the caller
    /// then judges with its own memory.
    /// On `conn` when given (the webhook intake has its own), else on the shared connection.
    pub(crate) async fn publish_events(
        &self,
        events: Vec<StationEvent>,
        conn: Option<&mut redis::aio::MultiplexedConnection>,
    ) -> Result<Vec<StationEvent>, (Vec<StationEvent>, redis::RedisError)> {
        let script = redis::Script::new(EVENTS);
        let mut call = script.key(key("seq"));
        call.key(self.channel()).arg(&self.replica).arg(EVENT_MEMORY_MS);
        let now = Utc::now();
        for e in &events {
            let station = e.charging_station_id.as_deref().unwrap_or("");
            let at = e.event_time.timestamp_micros();
            // An event dated after its receipt (a skewed clock) counts as received now.
            let seen_at = e.event_time.min(now).timestamp_micros();
            let json = serde_json::to_string(e).unwrap_or_default();
            call.arg(key(&format!("event:{}:{}", e.installation_id, digest(&e.id))))
                .arg(key(&format!("newest:{}:{}", e.installation_id, digest(station))))
                .arg(at)
                .arg(seen_at)
                .arg(json);
        }
        let answer = match conn {
            Some(conn) => timed(call.invoke_async::<(u64, String)>(conn)).await,
            None => timed(call.invoke_async::<(u64, String)>(&mut self.redis.conn())).await,
        };
        let flags: String = match answer {
            Ok((_, flags)) => flags,
            Err(e) => return Err((events, e)),
        };
        Ok(events
            .into_iter()
            .zip(flags.bytes())
            .filter(|(_, f)| *f != b'-')
            .map(|(mut e, f)| {
                e.late = f == b'1';
                e
            })
            .collect())
    }

    /// Waits until this replica has heard every note numbered before now (see the module's doc).
    /// Returns at once while Redis is away: the replica works on its own state.
    pub(crate) async fn catch_up(&self) {
        if !self.connected() {
            return;
        }
        let number: Result<Option<u64>, _> =
            timed(redis::cmd("GET").arg(key("seq")).query_async(&mut self.redis.conn())).await;
        let target = match number {
            Ok(n) => n.unwrap_or(0),
            Err(e) => return self.redis.fell_back("barrier", &e),
        };
        let mut heard = self.heard.subscribe();
        let caught = tokio::time::timeout(CATCH_UP, heard.wait_for(|n| *n >= target)).await;
        if !matches!(caught, Ok(Ok(_))) {
            self.redis.metrics().fleet_fallbacks.with_label_values(&["barrier"]).inc();
            tracing::warn!(target, "notes of other replicas not heard in time; the cache is dropped");
            if let Some(l) = self.listener() {
                l.resynced();
            }
            // Nothing cached is older than this now: the next query need not wait for the same
            // number again (should it never come: a note lost, or a number set by hand).
            self.heard.send_modify(|n| *n = (*n).max(target));
        }
    }

    fn listener(&self) -> Option<Arc<dyn Listener>> {
        self.listener.get().and_then(Weak::upgrade)
    }

    /// Reads a note heard on the channel: `seq|replica|kind|payload`.
    fn hear(&self, text: &str) {
        let mut parts = text.splitn(4, '|');
        let (Some(seq), Some(from), Some(kind), Some(payload)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return tracing::warn!("unreadable note on the fleet channel");
        };
        let seq = seq.parse::<u64>().unwrap_or(0);
        if from != self.replica
            && let Some(note) = read_note(kind, payload)
            && let Some(l) = self.listener()
        {
            l.heard(note);
        }
        self.heard.send_if_modified(|n| {
            let newer = seq > *n;
            *n = (*n).max(seq);
            newer
        });
    }
}

fn read_note(kind: &str, payload: &str) -> Option<Note> {
    let note = match kind {
        "E" => {
            let (flags, events) = payload.split_once('|')?;
            let events: Vec<StationEvent> = serde_json::from_str(events).ok()?;
            let flags = flags.bytes().filter(|f| *f != b'-');
            Note::Events(
                events
                    .into_iter()
                    .zip(flags)
                    .map(|(mut e, f)| {
                        e.late = f == b'1';
                        e
                    })
                    .collect(),
            )
        }
        "C" => Note::Change(serde_json::from_str(payload).ok()?),
        "V" => Note::Validated(serde_json::from_str(payload).ok()?),
        "D" => Note::Deleted(serde_json::from_str(payload).ok()?),
        _ => return None,
    };
    Some(note)
}

/// A short fixed-length name for an id from outside (event ids and station ids are the
/// upstream's; a key stays short and free of separators whatever they hold).
fn digest(id: &str) -> String {
    crate::auth::hmac_sha256(b"witty-bff fleet key", id.as_bytes()).unwrap_or_else(|| id.replace(':', "_"))
}

/// A Redis call bounded by [`CALL_TIMEOUT`] (the connection's own timeouts cover a connected
/// socket; this also covers waiting for a reconnection).
pub(super) async fn timed<T>(call: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT * 2, call).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))),
    }
}

/// Listens to the channel for as long as the fleet lives, subscribing again after a loss. Each
/// time it subscribes, what is cached may have missed notes meanwhile: it is dropped.
async fn listen(fleet: Weak<Fleet>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(f) = fleet.upgrade() else { return };
        let client = f.redis.client().clone();
        let subscribed = async {
            let mut pubsub = timed(client.get_async_pubsub()).await?;
            timed(pubsub.subscribe(f.channel())).await?;
            let now: Option<u64> = timed(redis::cmd("GET").arg(key("seq")).query_async(&mut f.redis.conn())).await?;
            Ok::<_, redis::RedisError>((pubsub, now.unwrap_or(0)))
        }
        .await;
        let mut stream = match subscribed {
            Ok((pubsub, now)) => {
                // Taken as is, not as a maximum: a Redis that restarted empty numbers from 1 again.
                f.heard.send_replace(now);
                if let Some(l) = f.listener() {
                    l.resynced();
                }
                f.redis.set_up(true);
                f.redis.recovered();
                tracing::info!("fleet: listening to the other replicas through Redis");
                pause = Duration::from_millis(100);
                pubsub.into_on_message()
            }
            Err(e) => {
                f.redis.set_up(false);
                f.redis.fell_back("events", &e);
                drop(f);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        let redis = f.redis.clone();
        drop(f);
        // A Redis that stopped answering keeps its sockets open: it is asked, besides, whether
        // it answers, and taken for lost after two silences in a row.
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut silences = 0;
        while silences < 2 {
            tokio::select! {
                message = stream.next() => {
                    let (Some(message), Some(f)) = (message, fleet.upgrade()) else { break };
                    match message.get_payload::<String>() {
                        Ok(text) => f.hear(&text),
                        Err(_) => tracing::warn!("unreadable note on the fleet channel"),
                    }
                }
                _ = beat.tick() => {
                    let pong = timed(redis::cmd("PING").query_async::<String>(&mut redis.conn())).await;
                    silences = if pong.is_ok() { 0 } else { silences + 1 };
                }
            }
        }
        drop(stream);
        let Some(f) = fleet.upgrade() else { return };
        f.redis.set_up(false);
        f.redis
            .fell_back("events", &redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
    }
}
