//! Installations whose webhook receives deliveries while nobody watches them here: an upstream
//! subscription of ours was left by an earlier run (a restart before its grace period ended, a
//! crash). Only the user who made it may remove it, and nobody knows who that was; so the
//! installation is kept here, and each user's next verified token (of a member of it) looks for
//! our subscription among theirs, at most once per `RETRY` per user, until it is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A user's token is used to look for a stray subscription at most this often.
pub const RETRY: Duration = Duration::from_secs(600);
/// An installation is forgotten when no delivery came for it in this long (its subscription is
/// gone, or its creator never comes back).
const MAX_AGE: Duration = Duration::from_secs(2 * 24 * 3600);
/// At most this many installations are kept.
const MAX_STRAYS: usize = 10_000;

struct Stray {
    /// The last delivery.
    seen: Instant,
    /// When each user's token was last used to look.
    looked: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Strays {
    by_installation: Mutex<HashMap<i64, Stray>>,
    /// Whether there are any (looked at on every request, without the lock).
    any: AtomicBool,
}

impl Strays {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Stray>> {
        self.by_installation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery came for an installation nobody watches. Says whether it is new here.
    pub fn seen(&self, installation_id: i64, now: Instant) -> bool {
        let mut map = self.map();
        if let Some(stray) = map.get_mut(&installation_id) {
            stray.seen = now;
            return false;
        }
        map.retain(|_, s| now.saturating_duration_since(s.seen) < MAX_AGE);
        if map.len() >= MAX_STRAYS {
            return false;
        }
        map.insert(installation_id, Stray { seen: now, looked: HashMap::new() });
        self.any.store(true, Ordering::Release);
        true
    }

    /// The installation is watched again, or our subscription there is gone.
    pub fn settled(&self, installation_id: i64) {
        let mut map = self.map();
        map.remove(&installation_id);
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// The installations `sub`'s token may look at now (each marked as looked at by them).
    pub fn due(&self, sub: &str, now: Instant) -> Vec<i64> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut map = self.map();
        map.iter_mut()
            .filter(|(_, s)| s.looked.get(sub).is_none_or(|at| now.saturating_duration_since(*at) >= RETRY))
            .map(|(i, s)| {
                s.looked.insert(sub.to_string(), now);
                *i
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_looks_once_per_retry_until_settled() {
        let (s, t0) = (Strays::default(), Instant::now());
        assert!(s.due("alice", t0).is_empty());
        assert!(s.seen(33, t0));
        assert!(!s.seen(33, t0), "kept once");
        assert_eq!(s.due("alice", t0), [33]);
        assert!(s.due("alice", t0 + RETRY / 2).is_empty());
        assert_eq!(s.due("bob", t0), [33], "another user looks on their own");
        assert_eq!(s.due("alice", t0 + RETRY), [33]);
        s.settled(33);
        assert!(s.due("carol", t0).is_empty());
    }
}
