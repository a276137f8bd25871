//! Who in the fleet keeps an installation's upstream event subscription (or its poller): the
//! replica holding the installation's lease, `witty-bff:lease:{installation}` (its replica name,
//! expiring after `WITTY_BFF_FLEET_LEASE_MS` unless renewed). And who watches it:
//! `witty-bff:watchers:{installation}`, a sorted set of replica names scored by when their
//! presence expires, so that a replica that dies stops counting on its own.
//!
//! Only a replica with watchers of its own takes a lease (it has their tokens to call the
//! upstream with; no token is ever written to Redis). A holder whose watchers all left keeps the
//! lease through the grace period, then gives it up to a replica still watching, or removes the
//! subscription when nobody in the fleet watches.

use super::channel::timed;
use super::{Fleet, PREFIX};

/// Records whether this replica watches the installation, renews, takes or gives up its lease,
/// and tells whether another replica watches. KEYS: the lease, the watchers. ARGV: replica,
/// lease (ms), watching (0/1), wants the lease (0/1). Redis's clock decides expiries, so the
/// replicas' clocks need not agree.
const TEND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local holder = redis.call('GET', KEYS[1])
local mine = 0
if holder == ARGV[1] then
  if ARGV[4] == '1' then
    redis.call('PEXPIRE', KEYS[1], lease)
    mine = 1
  else
    redis.call('DEL', KEYS[1])
  end
elseif not holder and ARGV[4] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
  mine = 1
end
local others = 0
for _, r in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if r ~= ARGV[1] then others = 1 end
end
return {mine, others}
";

/// Whether anybody in the fleet keeps or watches the installation. KEYS as for `TEND`.
const WATCHED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
return redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') > 0 and 1 or 0
";

/// What [`Fleet::tend`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tended {
    /// This replica holds the lease now.
    pub mine: bool,
    /// Another replica watches the installation.
    pub others_watch: bool,
}

impl Fleet {
    fn lease_keys(installation: i64) -> (String, String) {
        (format!("{PREFIX}lease:{installation}"), format!("{PREFIX}watchers:{installation}"))
    }

    /// Records this replica's watching, and renews, takes (`want`) or gives up (`!want`) the
    /// installation's lease (see the module's doc).
    pub(crate) async fn tend(&self, installation: i64, watching: bool, want: bool) -> redis::RedisResult<Tended> {
        self.usable()?;
        let (lease, watchers) = Fleet::lease_keys(installation);
        let script = redis::Script::new(TEND);
        let mut call = script.key(lease);
        call.key(watchers)
            .arg(self.replica())
            .arg(self.lease.as_millis() as u64)
            .arg(u8::from(watching))
            .arg(u8::from(want));
        let (mine, others): (u8, u8) = timed(call.invoke_async(&mut self.redis().conn())).await?;
        Ok(Tended { mine: mine == 1, others_watch: others == 1 })
    }

    /// Whether any replica holds the installation's lease or watches it.
    pub(crate) async fn watched(&self, installation: i64) -> redis::RedisResult<bool> {
        self.usable()?;
        let (lease, watchers) = Fleet::lease_keys(installation);
        let script = redis::Script::new(WATCHED);
        let mut call = script.key(lease);
        call.key(watchers);
        let watched: u8 = timed(call.invoke_async(&mut self.redis().conn())).await?;
        Ok(watched == 1)
    }

    /// Fails at once while Redis is away (rather than after a timeout, on every call).
    fn usable(&self) -> redis::RedisResult<()> {
        if self.connected() {
            return Ok(());
        }
        Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected)))
    }

    /// How often a lease and a presence are renewed: three times within their life.
    pub(crate) fn tend_every(&self) -> std::time::Duration {
        self.lease / 3
    }
}
