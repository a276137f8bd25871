//! The store of a fleet: outcomes kept in Redis, so that a key retried on another replica replays
//! the first outcome and a concurrent duplicate on another replica waits for the first.
//!
//! Per key, `witty-bff:idem:{digest of caller, key, place}` is a hash: the first request's field
//! and fingerprint, the token of the claim running it and, once kept, its outcome (JSON). Claims
//! and completions are Lua scripts, so that a look and a write are one step for every replica.
//! Should Redis fail, a claim goes to a [`MemoryStore`] of this replica instead (counted as a
//! fleet fallback), and the next one tries Redis again.
//!
//! Redis must not evict these keys early (`maxmemory-policy noeviction`; every key here has a TTL,
//! so a `volatile-*` policy would drop them first): a record dropped early lets its retry run the
//! write again. At its `maxmemory`, Redis refuses new keys instead, as the memory store does past
//! its bound for all callers together.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::{RedisError, Script};

use super::memory::{CALLER_BYTES, CALLER_KEYS, other_request, same_request, too_many, weight};
use super::{Claim, Claimed, Completion, Digest, IdempotencyStore, MemoryStore, Outcome, Refusal, Slot, digest};
use crate::fleet::{PREFIX, Redis};

/// How long a claim's running mark lasts in Redis. A replica that dies while running a key never
/// completes it: its mark expires and a waiter claims the key again rather than waiting forever.
/// Well above the longest a run takes (an upstream call times out in 10 s by default, a command
/// waits up to 15 s for its effect, with retries), so that a live run's mark does not expire.
const RUNNING: Duration = Duration::from_secs(120);
/// How long a passed (or kept elsewhere) outcome stays for the waiters of its run: they look
/// every 100 ms at most, so this is a wide margin for a slow Redis.
const ENDED: Duration = Duration::from_secs(30);
/// A waiter's first pause between looks, doubled each time up to `POLL_MAX`: a short run is
/// answered quickly, a long one costs Redis ten looks a second per waiter.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);
/// When a client refused because Redis is full should try again.
const FULL_RETRY: Duration = Duration::from_secs(60);
/// How long past a window the header's request mark lasts, as in [`MemoryStore`]: a request's
/// mutations are kept a window from when each ends.
const REQUEST_MARK_MARGIN: Duration = Duration::from_secs(120);

/// Claims a key. KEYS: the key's record, the header's request mark, the caller's keys (a sorted
/// set: key → when it expires, in ms) and their weights (a hash: kept key → bytes). ARGV: token,
/// field, fingerprint, request digest (or ''), the key's member, running ms, window ms, request
/// mark ms, the caller's key and byte limits. Answers `run`; `kept` field fingerprint outcome;
/// `running` field fingerprint token; `request` (another request under the header); or `full`
/// with the ms until the caller's oldest key expires. Redis's clock, not the replicas'. Nothing is
/// written before the record's HSET: Redis at its `maxmemory` refuses that first write (a write
/// that denies on OOM), which it would let through once the script had written anything, so a
/// full Redis refuses new keys (the fleet's bound on all callers' keys together).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' then
  local first = redis.call('GET', KEYS[2])
  if first and first ~= ARGV[4] then return {'request'} end
end
local first = redis.call('HMGET', KEYS[1], 'token', 'field', 'fingerprint', 'outcome')
if first[4] then return {'kept', first[2], first[3], first[4]} end
if first[1] then return {'running', first[2], first[3], first[1]} end
local live = '(' .. now
local bytes = 0
local weights = redis.call('HGETALL', KEYS[4])
for i = 1, #weights, 2 do
  local expires = tonumber(redis.call('ZSCORE', KEYS[3], weights[i]))
  if expires and expires > now then bytes = bytes + tonumber(weights[i + 1]) end
end
if redis.call('ZCOUNT', KEYS[3], live, '+inf') >= tonumber(ARGV[9]) or bytes >= tonumber(ARGV[10]) then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[3], live, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {'full', tostring(math.max(0, (tonumber(oldest[2]) or now) - now))}
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'field', ARGV[2], 'fingerprint', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, member in ipairs(gone) do redis.call('HDEL', KEYS[4], member) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
redis.call('HDEL', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]) + tonumber(ARGV[6]))
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[8]) end
return {'run'}
",
    )
});

/// Completes a claim. KEYS: the key's record, its run's end, the header's request mark, the
/// caller's keys and weights. ARGV: token, `keep`/`pass`/`free`, field, fingerprint, outcome,
/// the key's member, weight, window ms, end ms, request digest (or ''), request mark ms, running
/// ms. `keep` stores the outcome in the record for the window if the record is still this run's
/// (or gone: its mark expired, yet the write may have run); otherwise, and for `pass`, the run's
/// end holds the outcome for its waiters. `pass` and `free` free the key if it is still this
/// run's (a later claim's is not theirs to free). Its first write is a DEL, so a full Redis still
/// keeps an outcome whose key it claimed, as the memory store's slack does.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('HGET', KEYS[1], 'token')
local ours = holder == ARGV[1]
if ARGV[2] == 'keep' and (ours or not holder) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'field', ARGV[3], 'fingerprint', ARGV[4], 'outcome', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[8]), ARGV[6])
  redis.call('HSET', KEYS[5], ARGV[6], ARGV[7])
  local life = tonumber(ARGV[8]) + tonumber(ARGV[12])
  redis.call('PEXPIRE', KEYS[4], life)
  redis.call('PEXPIRE', KEYS[5], life)
  if ARGV[10] ~= '' then redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11]) end
  return 1
end
if ARGV[2] ~= 'free' then redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[9]) end
if ours and ARGV[2] ~= 'keep' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[4], ARGV[6])
  redis.call('HDEL', KEYS[5], ARGV[6])
end
return 1
",
    )
});

/// The Redis keys of a slot. Named by digests: never the caller's key itself (it may say more
/// than it should), and `who` is the token's `sub`, never the token.
#[derive(Clone)]
struct Names {
    record: String,
    request: String,
    keys: String,
    weights: String,
    /// The slot among its caller's keys.
    member: Digest,
}

impl Names {
    fn of(slot: &Slot) -> Option<Names> {
        let hash = |parts: serde_json::Value| digest(&parts.to_string());
        let member = hash(serde_json::json!([&*slot.who, slot.key, slot.place]))?;
        let named = hash(serde_json::json!([&*slot.who, slot.key]))?;
        let caller = hash(serde_json::json!([&*slot.who]))?;
        Some(Names {
            record: format!("{PREFIX}idem:{member}"),
            request: format!("{PREFIX}idem:req:{named}"),
            keys: format!("{PREFIX}idem:who:{caller}"),
            weights: format!("{PREFIX}idem:who:{caller}:bytes"),
            member,
        })
    }

    /// Where a run's outcome waits for its waiters when the record does not hold it.
    fn end(&self, token: &str) -> String {
        format!("{}:end:{token}", self.record)
    }
}

/// Where a claim this replica runs went, for its completion to go there too.
enum Route {
    Shared {
        names: Names,
        token: String,
    },
    Local,
    /// In memory, after a claim in Redis that failed without saying whether it ran (a Redis that
    /// stalled, then ran it): completed in memory, and in Redis as soon as Redis answers, so that
    /// a retry on another replica replays the outcome rather than waiting for the claim to expire
    /// and sending the command again.
    Both {
        names: Names,
        token: String,
    },
}

/// What the claim script answered, read.
enum Answer {
    Claimed(Claimed),
    Refused(Refusal),
}

/// Outcomes kept in the fleet's Redis, or in this replica's memory while Redis fails.
pub(crate) struct RedisStore {
    redis: Redis,
    local: MemoryStore,
    window: Duration,
    /// How long a running mark lasts (`RUNNING`; shorter in tests).
    running: Duration,
    /// The claims this replica runs now, by slot.
    routes: Mutex<HashMap<Slot, Route>>,
}

impl RedisStore {
    pub(crate) fn new(redis: Redis, window: Duration) -> RedisStore {
        RedisStore { redis, local: MemoryStore::new(window), window, running: RUNNING, routes: Mutex::default() }
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<Slot, Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims in this replica's memory.
    async fn claim_local(&self, claim: &Claim) -> Result<Claimed, Refusal> {
        let claimed = self.local.claim(claim).await?;
        if matches!(claimed, Claimed::Run) {
            self.routes().insert(claim.slot.clone(), Route::Local);
        }
        Ok(claimed)
    }

    /// Claims in Redis; an error means Redis could not answer (or answered nonsense).
    async fn claim_shared(&self, claim: &Claim, names: &Names, token: &str) -> Result<Answer, RedisError> {
        let answer: Vec<String> = CLAIM
            .key(&names.record)
            .key(&names.request)
            .key(&names.keys)
            .key(&names.weights)
            .arg(token)
            .arg(&claim.field)
            .arg(&*claim.fingerprint)
            .arg(claim.request.as_deref().unwrap_or(""))
            .arg(&*names.member)
            .arg(ms(self.running))
            .arg(ms(self.window))
            .arg(ms(self.window + REQUEST_MARK_MARGIN))
            .arg(CALLER_KEYS)
            .arg(CALLER_BYTES)
            .invoke_async(&mut self.redis.conn())
            .await?;
        let answer: Vec<&str> = answer.iter().map(String::as_str).collect();
        Ok(match answer[..] {
            ["run"] => {
                let route = Route::Shared { names: names.clone(), token: token.to_string() };
                self.routes().insert(claim.slot.clone(), route);
                Answer::Claimed(Claimed::Run)
            }
            ["kept", field, fingerprint, outcome] => match same_request(claim, field, fingerprint) {
                Ok(()) => Answer::Claimed(Claimed::Replay(parse(outcome)?)),
                Err(refusal) => Answer::Refused(refusal),
            },
            ["running", field, fingerprint, first] => {
                let first = First { field: field.into(), fingerprint: fingerprint.into(), token: first.into() };
                let wait = wait(self.redis.clone(), names.clone(), first, claim.clone());
                Answer::Claimed(Claimed::Wait(wait.boxed()))
            }
            ["request"] => Answer::Refused(other_request(&claim.slot.key)),
            ["full", ms] => {
                let ms = ms.parse().map_err(|_| nonsense("a retry time that is no number"))?;
                Answer::Refused(too_many(self.window, Some(Duration::from_millis(ms))))
            }
            _ => return Err(nonsense("an unknown answer to a claim")),
        })
    }
}

/// What a [`Claimed::Wait`] ends with.
type Ended = Option<Result<Outcome, Refusal>>;

/// The run a waiter waits for.
struct First {
    field: String,
    fingerprint: String,
    token: String,
}

/// Looks at a running key until its run ends: its outcome (kept, or passed to its waiters), or
/// `None` when it was freed, its mark expired (its replica died) or Redis failed, so that the
/// waiter claims again (in memory, should Redis still fail).
async fn wait(redis: Redis, names: Names, first: First, claim: Claim) -> Ended {
    let mut pause = POLL_MIN;
    loop {
        match look(&redis, &names, &first, &claim).await {
            Ok(Some(end)) => return end,
            Ok(None) => {}
            // Redis gone away: claim again (in memory). A Redis that answers with errors is
            // looked at again later, at the slowest pace, rather than claimed again at once.
            Err(e) if !redis.up() => {
                redis.fell_back("idempotency", &e);
                return None;
            }
            Err(e) => {
                redis.fell_back("idempotency", &e);
                pause = POLL_MAX;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// One look for [`wait`]: `None` while the first run still holds the key.
async fn look(redis: &Redis, names: &Names, first: &First, claim: &Claim) -> Result<Option<Ended>, RedisError> {
    // Both at once: the end is written as the record is freed.
    let (record, end): (Vec<Option<String>>, Option<String>) = redis::pipe()
        .atomic()
        .cmd("HMGET")
        .arg(&names.record)
        .arg(&["token", "field", "fingerprint", "outcome"])
        .cmd("GET")
        .arg(names.end(&first.token))
        .query_async(&mut redis.conn())
        .await?;
    let [token, field, fingerprint, outcome] = &record[..] else {
        return Err(nonsense("an unknown answer to a look"));
    };
    let ended = |field: &str, fingerprint: &str, outcome: &str| -> Result<Option<Ended>, RedisError> {
        let outcome = parse(outcome)?;
        Ok(Some(Some(same_request(claim, field, fingerprint).map(|()| outcome))))
    };
    // Kept (by this run, or by a later one once its mark expired).
    if let (Some(field), Some(fingerprint), Some(outcome)) = (field, fingerprint, outcome) {
        return ended(field, fingerprint, outcome);
    }
    if let Some(outcome) = end {
        return ended(&first.field, &first.fingerprint, &outcome);
    }
    if token.as_deref() == Some(&*first.token) {
        return Ok(None);
    }
    Ok(Some(None))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse(outcome: &str) -> Result<Outcome, RedisError> {
    serde_json::from_str(outcome).map_err(|_| nonsense("an outcome that is no JSON of one"))
}

fn nonsense(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::UnexpectedReturnType, "idempotency record", what.to_string()))
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Claimed, Refusal>> {
        async move {
            // A key this replica runs in memory stays there until it ends, Redis back or not: its
            // completion goes there, and a duplicate here must wait for it rather than run.
            if matches!(self.routes().get(&claim.slot), Some(Route::Local | Route::Both { .. })) {
                return self.claim_local(claim).await;
            }
            // Redis is away (the fleet's channel says so): no timeout to wait on every claim.
            if !self.redis.up() {
                self.redis.metrics().fleet_fallbacks.with_label_values(&["idempotency"]).inc();
                return self.claim_local(claim).await;
            }
            let Some(names) = Names::of(&claim.slot) else {
                tracing::error!("an idempotency key could not be hashed; this replica uses its own state");
                return self.claim_local(claim).await;
            };
            let token = uuid::Uuid::new_v4().simple().to_string();
            match self.claim_shared(claim, &names, &token).await {
                Ok(Answer::Claimed(claimed)) => Ok(claimed),
                Ok(Answer::Refused(refusal)) => Err(refusal),
                // Redis is at its `maxmemory`: the fleet's bound on all callers' keys together.
                Err(e) if e.code() == Some("OOM") => Err(Refusal::Full {
                    retry_after: FULL_RETRY,
                    message: "witty-bff's store of idempotency keys is full for now: try again later".into(),
                }),
                Err(e) => {
                    self.redis.fell_back("idempotency", &e);
                    let claimed = self.claim_local(claim).await;
                    if matches!(claimed, Ok(Claimed::Run)) {
                        self.routes().insert(claim.slot.clone(), Route::Both { names, token });
                    }
                    claimed
                }
            }
        }
        .boxed()
    }

    fn complete(&self, claim: &Claim, end: Completion) {
        let route = self.routes().remove(&claim.slot);
        let (names, token) = match route {
            Some(Route::Shared { names, token }) => (names, token),
            Some(Route::Both { names, token }) => {
                self.local.complete(claim, end.clone());
                (names, token)
            }
            Some(Route::Local) | None => return self.local.complete(claim, end),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return tracing::error!("an idempotency key was completed outside a runtime; its claim expires instead");
        };
        let (mode, outcome) = match end {
            Completion::Keep(outcome) => ("keep", Some(outcome)),
            Completion::Pass(outcome) => ("pass", Some(outcome)),
            Completion::Free => ("free", None),
        };
        let weight = outcome
            .as_ref()
            .map_or(0, |o| weight(&claim.slot, &claim.field, claim.arguments + claim.fingerprint.len(), o));
        let outcome = match outcome.as_ref().map(serde_json::to_string).transpose() {
            Ok(outcome) => outcome.unwrap_or_default(),
            Err(_) => return tracing::error!("an idempotency outcome could not be written; its claim expires instead"),
        };
        let mut call = COMPLETE.prepare_invoke();
        call.key(&names.record)
            .key(names.end(&token))
            .key(&names.request)
            .key(&names.keys)
            .key(&names.weights)
            .arg(&token)
            .arg(mode)
            .arg(&claim.field)
            .arg(&*claim.fingerprint)
            .arg(outcome)
            .arg(&*names.member)
            .arg(weight)
            .arg(ms(self.window))
            .arg(ms(ENDED))
            .arg(claim.request.as_deref().unwrap_or(""))
            .arg(ms(self.window + REQUEST_MARK_MARGIN))
            .arg(ms(self.running));
        let (redis, running) = (self.redis.clone(), self.running);
        runtime.spawn(async move {
            // Tried again while its claim's mark lasts: its waiters get the outcome rather than
            // claim again once the mark expires (and send the command again).
            let deadline = tokio::time::Instant::now() + running;
            let mut pause = POLL_MAX;
            while let Err(e) = call.invoke_async::<i64>(&mut redis.conn()).await {
                redis.fell_back("idempotency", &e);
                if tokio::time::Instant::now() + pause >= deadline {
                    return tracing::warn!("an idempotency outcome could not reach Redis; its claim expires instead");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use super::super::Failure;
    use super::*;
    use crate::metrics::Metrics;

    /// A redis-server of the test's own, killed when dropped.
    struct Server {
        child: Child,
        port: u16,
    }

    impl Server {
        /// Starts one on `port` (a free one if `None`) and waits until it answers. `None` when
        /// redis-server is missing (said on stderr), unless `WITTY_BFF_TEST_REQUIRE_REDIS` is set.
        async fn start(port: Option<u16>) -> Option<Server> {
            let port = port.unwrap_or_else(|| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
            let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            let child = match Command::new("redis-server")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if std::env::var_os("WITTY_BFF_TEST_REQUIRE_REDIS").is_some() => {
                    panic!("WITTY_BFF_TEST_REQUIRE_REDIS is set, but redis-server could not be started: {e}")
                }
                Err(e) => {
                    eprintln!(
                        "the Redis idempotency tests were NOT run: redis-server could not be started ({e}); install \
                         it, or set WITTY_BFF_TEST_REQUIRE_REDIS to make its absence fail the tests"
                    );
                    return None;
                }
            };
            let server = Server { child, port };
            let client = redis::Client::open(server.url()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
                {
                    return Some(server);
                }
                assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const WINDOW: Duration = Duration::from_secs(600);

    /// A replica's store on `server`.
    fn replica(server: &Server, metrics: &Arc<Metrics>) -> RedisStore {
        RedisStore::new(Redis::new(&server.url(), metrics.clone()).unwrap(), WINDOW)
    }

    /// A Redis of the test's own and two replicas' stores on it, counting into one `Metrics`.
    async fn two_replicas() -> Option<(Server, Arc<Metrics>, RedisStore, RedisStore)> {
        let server = Server::start(None).await?;
        let metrics = Metrics::new();
        let (a, b) = (replica(&server, &metrics), replica(&server, &metrics));
        Some((server, metrics, a, b))
    }

    fn claim(who: &str, key: &str, fingerprint: &str) -> Claim {
        Claim {
            slot: Slot { who: who.into(), key: key.into(), place: None },
            field: "f".into(),
            arguments: fingerprint.len(),
            fingerprint: digest(fingerprint).unwrap(),
            request: None,
        }
    }

    /// A claim's answer once the key's run has ended: a wait is awaited, and the key claimed
    /// again (a completion reaches Redis in the background).
    async fn settled(store: &dyn IdempotencyStore, claim: &Claim) -> Result<Claimed, Refusal> {
        loop {
            match store.claim(claim).await {
                Ok(Claimed::Wait(first)) => drop(first.await),
                other => return other,
            }
        }
    }

    async fn wait_of(store: &RedisStore, claim: &Claim) -> BoxFuture<'static, Option<Result<Outcome, Refusal>>> {
        match store.claim(claim).await {
            Ok(Claimed::Wait(first)) => first,
            _ => panic!("expected a wait"),
        }
    }

    /// Stops (`STOP`) or resumes (`CONT`) the server's process: a Redis that stalls.
    fn signal(server: &Server, signal: &str) {
        let sent = Command::new("kill").args([&format!("-{signal}"), &server.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    /// A claim sent to a Redis that stalled, and ran once it woke up, is completed there too: a
    /// retry on another replica replays the first outcome rather than waiting for the claim to
    /// expire and sending the command again.
    #[tokio::test]
    async fn a_claim_a_stalled_redis_ran_late_gets_the_outcome_of_the_run_made_meanwhile() {
        let Some((server, metrics, a, b)) = two_replicas().await else { return };
        let first = claim("u", "k", "a");
        // Connected before the stall, so the claim is sent and waits in Redis's socket.
        assert!(matches!(a.claim(&claim("u", "warm-up", "a")).await, Ok(Claimed::Run)));
        signal(&server, "STOP");
        let claimed = a.claim(&first).await;
        assert!(matches!(claimed, Ok(Claimed::Run)), "run in memory while Redis does not answer");
        a.complete(&first, Completion::Keep(Ok(serde_json::json!("sent once"))));
        signal(&server, "CONT");
        let replayed = settled(&b, &first).await;
        assert!(matches!(replayed, Ok(Claimed::Replay(Ok(ref v))) if v == "sent once"), "{:?}", replayed.is_ok());
        assert!(metrics.render().contains(r#"witty_bff_fleet_fallbacks_total{part="idempotency"}"#));
    }

    #[tokio::test]
    async fn a_key_kept_on_one_replica_replays_on_another() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        let first = claim("u", "k", "a");
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        a.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
        assert!(matches!(settled(&b, &first).await, Ok(Claimed::Replay(Ok(v))) if v == 7));
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Replay(Ok(v))) if v == 7));
        // Another caller's key of the same name is theirs.
        assert!(matches!(b.claim(&claim("v", "k", "a")).await, Ok(Claimed::Run)));
        // Named by digests: neither the caller nor their key shows.
        let names: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut a.redis.conn()).await.unwrap();
        assert!(!names.is_empty());
        for name in names {
            assert!(name.starts_with("witty-bff:idem:") && !name.contains("u:") && !name.ends_with(":k"), "{name}");
        }
    }

    #[tokio::test]
    async fn another_request_under_a_key_is_refused_on_another_replica_as_in_memory() {
        let Some(server) = Server::start(None).await else { return };
        let metrics = Metrics::new();
        let (a, b, memory) = (replica(&server, &metrics), replica(&server, &metrics), MemoryStore::new(WINDOW));
        let header = |fingerprint, request| Claim {
            slot: Slot { place: Some(0), ..claim("u", "h", "").slot },
            request: Some(digest(request).unwrap()),
            ..claim("u", "h", fingerprint)
        };
        for (first, second) in [(claim("u", "k", "a"), claim("u", "k", "b")), (header("a", "r1"), header("a", "r2"))] {
            let expected = {
                assert!(matches!(memory.claim(&first).await, Ok(Claimed::Run)));
                memory.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
                memory.claim(&second).await.err().expect("refused in memory")
            };
            assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
            a.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
            let refused = settled(&b, &second).await.err().expect("refused in Redis");
            assert!(matches!(refused, Refusal::Conflict(_)));
            assert_eq!(refused, expected);
        }
    }

    #[tokio::test]
    async fn a_concurrent_duplicate_on_another_replica_waits_for_the_first_outcome() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        let first = claim("u", "k", "a");
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &first).await;
        a.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
        assert_eq!(wait.await, Some(Ok(Ok(serde_json::json!(7)))));
        // A waiter under another request is refused once the first has ended.
        let other = claim("u", "l", "a");
        assert!(matches!(a.claim(&other).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &claim("u", "l", "b")).await;
        a.complete(&other, Completion::Keep(Ok(serde_json::json!(7))));
        assert!(matches!(wait.await, Some(Err(Refusal::Conflict(_)))));
    }

    #[tokio::test]
    async fn a_freed_key_lets_its_waiter_run() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        let first = claim("u", "k", "a");
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &first).await;
        a.complete(&first, Completion::Free);
        assert_eq!(wait.await, None);
        assert!(matches!(b.claim(&first).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_passed_outcome_reaches_the_waiters_and_the_key_runs_again() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        let first = claim("u", "k", "a");
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &first).await;
        let failure = Failure { code: "RATE_LIMITED".into(), message: "later".into(), retry_after_ms: Some(1000) };
        a.complete(&first, Completion::Pass(Err(failure.clone())));
        assert_eq!(wait.await, Some(Ok(Err(failure))));
        assert!(matches!(settled(&b, &first).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_claim_whose_replica_died_expires_and_its_waiter_runs() {
        let Some((_server, _metrics, mut a, b)) = two_replicas().await else { return };
        a.running = Duration::from_secs(1);
        let first = claim("u", "k", "a");
        // `a` dies with the key claimed: it never completes it.
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &first).await;
        assert_eq!(wait.await, None);
        assert!(matches!(b.claim(&first).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_caller_at_the_key_limit_is_refused_on_every_replica() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        for n in 0..CALLER_KEYS {
            assert!(matches!(a.claim(&claim("u", &n.to_string(), "a")).await, Ok(Claimed::Run)));
        }
        let Err(Refusal::Full { retry_after, message }) = b.claim(&claim("u", "last", "a")).await else {
            panic!("expected a refusal")
        };
        let Refusal::Full { message: expected, .. } = too_many(WINDOW, None) else { unreachable!() };
        assert_eq!(message, expected);
        assert!(retry_after > Duration::ZERO && retry_after <= RUNNING + Duration::from_secs(1), "{retry_after:?}");
        assert!(matches!(b.claim(&claim("v", "last", "a")).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_caller_at_the_byte_limit_is_refused_on_every_replica() {
        let Some((_server, _metrics, a, b)) = two_replicas().await else { return };
        let told = "x".repeat(1 << 20);
        for n in 0..CALLER_BYTES >> 20 {
            let kept = claim("u", &n.to_string(), "a");
            assert!(matches!(a.claim(&kept).await, Ok(Claimed::Run)));
            let failure = Failure { code: "BAD_USER_INPUT".into(), message: told.clone(), retry_after_ms: None };
            a.complete(&kept, Completion::Keep(Err(failure)));
            assert!(matches!(settled(&b, &kept).await, Ok(Claimed::Replay(Err(_)))));
        }
        let Err(Refusal::Full { retry_after, .. }) = b.claim(&claim("u", "last", "a")).await else {
            panic!("expected a refusal")
        };
        assert!(retry_after > WINDOW - Duration::from_secs(60) && retry_after <= WINDOW + Duration::from_secs(1));
        assert!(matches!(b.claim(&claim("v", "last", "a")).await, Ok(Claimed::Run)));
    }

    #[tokio::test]
    async fn a_full_redis_refuses_new_keys() {
        let Some(server) = Server::start(None).await else { return };
        let metrics = Metrics::new();
        let a = replica(&server, &metrics);
        let () = redis::cmd("CONFIG").arg(&["SET", "maxmemory", "1"]).query_async(&mut a.redis.conn()).await.unwrap();
        assert!(matches!(a.claim(&claim("u", "k", "a")).await, Err(Refusal::Full { .. })));
        assert!(!metrics.render().contains("fleet_fallbacks_total{part=\"idempotency\"}"));
    }

    #[tokio::test]
    async fn without_redis_claims_fall_back_to_memory_and_are_shared_again_once_it_is_back() {
        let Some((server, metrics, a, b)) = two_replicas().await else { return };
        let port = server.port;
        drop(server);
        let first = claim("u", "k", "a");
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Run)));
        // The duplicate waits in memory, and the completion goes where the claim went.
        let wait = wait_of(&a, &first).await;
        a.complete(&first, Completion::Keep(Ok(serde_json::json!(7))));
        assert_eq!(wait.await, Some(Ok(Ok(serde_json::json!(7)))));
        assert!(matches!(a.claim(&first).await, Ok(Claimed::Replay(_))));
        // Per replica meanwhile.
        assert!(matches!(b.claim(&first).await, Ok(Claimed::Run)));
        assert!(metrics.render().contains("fleet_fallbacks_total{part=\"idempotency\"}"), "{}", metrics.render());

        let pending = claim("u", "pending", "a");
        assert!(matches!(a.claim(&pending).await, Ok(Claimed::Run)));

        let _server = Server::start(Some(port)).await.expect("redis-server again");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each replica's connection comes back in the background.
        for store in [&a, &b] {
            while !reaches(store).await {
                assert!(Instant::now() < deadline, "Redis was not reached again");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let shared = claim("u", "shared", "a");
        assert!(matches!(a.claim(&shared).await, Ok(Claimed::Run)));
        let wait = wait_of(&b, &shared).await;
        a.complete(&shared, Completion::Keep(Ok(serde_json::json!(8))));
        assert_eq!(wait.await, Some(Ok(Ok(serde_json::json!(8)))));
        // A key run in memory while Redis was away stays there until it ends.
        let wait = wait_of(&a, &pending).await;
        a.complete(&pending, Completion::Keep(Ok(serde_json::json!(9))));
        assert_eq!(wait.await, Some(Ok(Ok(serde_json::json!(9)))));
    }

    async fn reaches(store: &RedisStore) -> bool {
        redis::cmd("PING").query_async::<String>(&mut store.redis.conn()).await.is_ok()
    }
}
