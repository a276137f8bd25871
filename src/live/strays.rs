//! Installations whose webhook receives deliveries while nobody watches them here: an upstream
//! subscription of ours was left by an earlier run (a restart before its grace period ended, a
//! crash). Only the user who made it may remove it, and nobody knows who that was; so the
//! installation is kept here, and each user's next verified token looks for our subscription
//! among theirs on the stray installations they belong to, at most once per `RETRY` per user,
//! until it is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A user's token is used to look for a stray subscription at most this often.
pub(super) const RETRY: Duration = Duration::from_secs(600);
/// An installation is forgotten when no delivery came for it in this long (its subscription is
/// gone, or its creator never comes back).
const MAX_AGE: Duration = Duration::from_secs(2 * 24 * 3600);
/// At most this many installations are kept.
const MAX_STRAYS: usize = 10_000;

/// At most this many installations are looked at per user's token.
const MAX_LOOKS: usize = 50;

struct Stray {
    /// The last delivery.
    seen: Instant,
}

pub(super) struct Strays {
    by_installation: Mutex<HashMap<i64, Stray>>,
    /// Whether there are any (looked at on every request, without the lock).
    any: AtomicBool,
    /// The users whose token looked lately (bounded; forgotten after `RETRY`).
    looked: moka::sync::Cache<String, ()>,
}

impl Default for Strays {
    fn default() -> Strays {
        Strays {
            by_installation: Mutex::default(),
            any: AtomicBool::new(false),
            looked: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(RETRY).build(),
        }
    }
}

impl Strays {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Stray>> {
        self.by_installation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery came for an installation nobody watches. Says whether it is new here.
    pub(super) fn seen(&self, installation_id: i64, now: Instant) -> bool {
        let mut map = self.map();
        if let Some(stray) = map.get_mut(&installation_id) {
            stray.seen = now;
            return false;
        }
        map.retain(|_, s| now.saturating_duration_since(s.seen) < MAX_AGE);
        if map.len() >= MAX_STRAYS {
            return false;
        }
        map.insert(installation_id, Stray { seen: now });
        self.any.store(true, Ordering::Release);
        true
    }

    /// The installation is watched again, or our subscription there is gone.
    pub(super) fn settled(&self, installation_id: i64) {
        let mut map = self.map();
        map.remove(&installation_id);
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// The installations `sub`'s token may look at now: all of them (up to `MAX_LOOKS`, the most
    /// recently delivered first), once per `RETRY` per user.
    pub(super) fn due(&self, sub: &str) -> Vec<i64> {
        if !self.any.load(Ordering::Acquire) || self.looked.contains_key(sub) {
            return Vec::new();
        }
        self.looked.insert(sub.to_string(), ());
        let map = self.map();
        let mut strays: Vec<(&i64, &Stray)> = map.iter().collect();
        strays.sort_by_key(|(_, s)| std::cmp::Reverse(s.seen));
        strays.into_iter().take(MAX_LOOKS).map(|(i, _)| *i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_looks_once_until_settled() {
        let (s, t0) = (Strays::default(), Instant::now());
        assert!(s.due("alice").is_empty());
        assert!(s.seen(33, t0));
        assert!(!s.seen(33, t0), "kept once");
        assert!(s.seen(42, t0 + Duration::from_secs(1)));
        assert_eq!(s.due("alice"), [42, 33], "the latest delivered first");
        assert!(s.due("alice").is_empty(), "once per RETRY");
        assert_eq!(s.due("bob"), [42, 33], "another user looks on their own");
        s.settled(33);
        s.settled(42);
        assert!(s.due("carol").is_empty());
    }
}
