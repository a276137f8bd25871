//! Upstream event subscriptions of ours that could not be removed yet, by their holder (only the
//! user who created one may remove it upstream). Mostly their holder's token had expired when the
//! removal came; the registry tries again with that user's next token, and goes on trying with it
//! while it lasts. This keeps the book and
//! the policy: one entry per subscription, one try at a time, a backoff after each failed try, and
//! a subscription given up (logged, counted) once refused for good, after `MAX_TRIES` failed tries,
//! or when its holder did not come back within `MAX_AGE`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Failed tries with a fresh token before a subscription is given up.
pub(super) const MAX_TRIES: u32 = 8;
/// The longest wait after the first failed try (doubled after each one).
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A subscription whose holder sent no token in this long is given up.
pub(super) const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// On the request path, the whole book is looked over for `MAX_AGE` at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Orphan {
    installation_id: i64,
    subscription_id: String,
    /// Tries with a fresh token that failed.
    tries: u32,
    /// Not tried before this.
    not_before: Instant,
    /// When its removal first failed.
    since: Instant,
    /// A try is under way (taken by `take_due`, not yet `settle`d).
    trying: bool,
}

/// How a try went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Removed, found gone, or adopted by a registration again: nothing left to do.
    Settled,
    /// The upstream refused for good (the holder lost access, say): given up.
    Refused,
    /// Failed (the upstream failed, or the token expired meanwhile): tried again later.
    Failed,
    /// Not tried (the installation is being set up or removed): looked at again after `wait`.
    NotYet { wait: Duration },
}

#[derive(Default)]
struct Book {
    by_holder: HashMap<String, Vec<Orphan>>,
    /// When the whole book was last looked over for `MAX_AGE`.
    swept: Option<Instant>,
}

pub(super) struct Orphans {
    book: Mutex<Book>,
    /// Whether there are any (looked at on every request, without the lock).
    any: AtomicBool,
    /// The wait after the first failed try, doubled after each one.
    backoff: Duration,
}

/// A subscription given up: left upstream, named in the log for an operator to remove by hand.
pub(super) fn give_up(metrics: &Metrics, holder: &str, installation_id: i64, subscription_id: &str, why: &str) {
    metrics.abandoned_upstream_subscriptions.inc();
    tracing::warn!(
        installation = installation_id,
        subscription = subscription_id,
        holder,
        why,
        "gave up removing an upstream event subscription of ours; remove it upstream by hand"
    );
}

impl Orphans {
    /// A book whose first wait after a failed try is `backoff` (at most `MAX_BACKOFF`).
    pub(super) fn new(backoff: Duration) -> Orphans {
        Orphans { book: Mutex::default(), any: AtomicBool::new(false), backoff: backoff.min(MAX_BACKOFF) }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A removal failed (not a retry): kept for the holder's next token. A subscription already
    /// kept stays as it is.
    pub(super) fn record(
        &self,
        metrics: &Metrics,
        holder: &str,
        installation_id: i64,
        subscription_id: &str,
        now: Instant,
    ) {
        let mut book = self.book();
        let theirs = book.by_holder.entry(holder.to_string()).or_default();
        if !theirs.iter().any(|o| o.subscription_id.eq_ignore_ascii_case(subscription_id)) {
            theirs.push(Orphan {
                installation_id,
                subscription_id: subscription_id.to_string(),
                tries: 0,
                not_before: now,
                since: now,
                trying: false,
            });
        }
        self.changed(metrics, &mut book, now);
    }

    /// The holder's subscriptions due for a try now, as (installation, subscription): each is
    /// marked as being tried until `settle` says how it went. Called on every request: the book
    /// is looked over for `MAX_AGE` only once in a while here.
    pub(super) fn take_due(&self, metrics: &Metrics, holder: &str, now: Instant) -> Vec<(i64, String)> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut book = self.book();
        let due = book
            .by_holder
            .get_mut(holder)
            .into_iter()
            .flatten()
            .filter(|o| !o.trying && o.not_before <= now)
            .map(|o| {
                o.trying = true;
                (o.installation_id, o.subscription_id.clone())
            })
            .collect();
        if book.swept.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY) {
            self.changed(metrics, &mut book, now);
        }
        due
    }

    /// How a try of `take_due` (or `resume`) went. `Some`: it stays, and is due at that time.
    pub(super) fn settle(
        &self,
        metrics: &Metrics,
        holder: &str,
        subscription_id: &str,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Instant> {
        let mut book = self.book();
        let theirs = book.by_holder.get_mut(holder)?;
        let at = theirs.iter().position(|o| o.subscription_id.eq_ignore_ascii_case(subscription_id))?;
        let orphan = &mut theirs[at];
        orphan.trying = false;
        // Whether it leaves the book, and why it is given up if it is.
        let (done, given_up) = match outcome {
            Outcome::Settled => (true, None),
            Outcome::Refused => (true, Some("the upstream refused")),
            Outcome::Failed => {
                orphan.tries += 1;
                orphan.not_before = now + self.backoff.saturating_mul(1 << (orphan.tries - 1).min(16));
                let out = orphan.tries >= MAX_TRIES;
                (out, out.then_some("every try failed"))
            }
            Outcome::NotYet { wait } => {
                orphan.not_before = now + wait;
                (false, None)
            }
        };
        let due = (!done).then_some(orphan.not_before);
        if done {
            let orphan = theirs.remove(at);
            if let Some(why) = given_up {
                give_up(metrics, holder, orphan.installation_id, &orphan.subscription_id, why);
            }
        }
        self.changed(metrics, &mut book, now);
        due
    }

    /// Takes a subscription `settle` kept for another try now, by whoever holds a token of its
    /// holder; `false` if it is gone or someone else is trying it.
    pub(super) fn resume(&self, holder: &str, subscription_id: &str) -> bool {
        let mut book = self.book();
        let orphan = book
            .by_holder
            .get_mut(holder)
            .and_then(|theirs| theirs.iter_mut().find(|o| o.subscription_id.eq_ignore_ascii_case(subscription_id)));
        match orphan {
            Some(orphan) if !orphan.trying => {
                orphan.trying = true;
                true
            }
            _ => false,
        }
    }

    /// After any change: gives up those whose holder did not come back in time, drops empty
    /// holders, and updates the flag and the gauge.
    fn changed(&self, metrics: &Metrics, book: &mut Book, now: Instant) {
        book.swept = Some(now);
        let book = &mut book.by_holder;
        for (holder, theirs) in book.iter_mut() {
            theirs.retain(|o| {
                let keep = o.trying || now.saturating_duration_since(o.since) < MAX_AGE;
                if !keep {
                    give_up(metrics, holder, o.installation_id, &o.subscription_id, "its holder did not come back");
                }
                keep
            });
        }
        book.retain(|_, theirs| !theirs.is_empty());
        self.any.store(!book.is_empty(), Ordering::Release);
        metrics.unremoved_upstream_subscriptions.set(book.values().map(Vec::len).sum::<usize>() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(m: &Metrics) -> i64 {
        m.unremoved_upstream_subscriptions.get()
    }

    #[test]
    fn one_entry_per_subscription_and_one_try_at_a_time() {
        let (m, o, t0) = (Metrics::new(), Orphans::new(MAX_BACKOFF), Instant::now());
        o.record(&m, "alice", 33, "S1", t0);
        o.record(&m, "alice", 33, "s1", t0);
        assert_eq!(gauge(&m), 1);
        assert!(o.take_due(&m, "bob", t0).is_empty());
        assert_eq!(o.take_due(&m, "alice", t0), vec![(33, "S1".to_string())]);
        // Being tried: not handed out again, still counted, not aged out.
        assert!(o.take_due(&m, "alice", t0).is_empty());
        assert_eq!(gauge(&m), 1);
        o.settle(&m, "alice", "S1", Outcome::Settled, t0);
        assert_eq!(gauge(&m), 0);
        assert_eq!(m.abandoned_upstream_subscriptions.get(), 0);
    }

    #[test]
    fn failed_tries_back_off_doubling_then_are_given_up() {
        let (m, o, t0) = (Metrics::new(), Orphans::new(MAX_BACKOFF), Instant::now());
        o.record(&m, "alice", 33, "S1", t0);
        let mut now = t0;
        for n in 1..=MAX_TRIES {
            assert_eq!(o.take_due(&m, "alice", now).len(), 1, "try {n}");
            o.settle(&m, "alice", "S1", Outcome::Failed, now);
            if n < MAX_TRIES {
                let wait = MAX_BACKOFF * (1 << (n - 1));
                assert!(o.take_due(&m, "alice", now + wait - Duration::from_secs(1)).is_empty(), "try {n}");
                now += wait;
            }
        }
        assert_eq!(gauge(&m), 0);
        assert_eq!(m.abandoned_upstream_subscriptions.get(), 1);
    }

    #[test]
    fn refused_is_given_up_and_not_yet_waits_without_counting_a_try() {
        let (m, o, t0) = (Metrics::new(), Orphans::new(MAX_BACKOFF), Instant::now());
        o.record(&m, "alice", 33, "S1", t0);
        o.record(&m, "alice", 34, "S2", t0);
        o.take_due(&m, "alice", t0);
        o.settle(&m, "alice", "S1", Outcome::Refused, t0);
        let wait = Duration::from_secs(2);
        o.settle(&m, "alice", "S2", Outcome::NotYet { wait }, t0);
        assert_eq!((gauge(&m), m.abandoned_upstream_subscriptions.get()), (1, 1));
        assert!(o.take_due(&m, "alice", t0 + wait / 2).is_empty());
        assert_eq!(o.take_due(&m, "alice", t0 + wait), vec![(34, "S2".to_string())]);
    }

    #[test]
    fn a_kept_try_says_when_it_is_due_and_is_resumed_by_one_holder_of_a_token_at_a_time() {
        let (m, o, t0) = (Metrics::new(), Orphans::new(Duration::from_secs(2)), Instant::now());
        o.record(&m, "alice", 33, "S1", t0);
        o.take_due(&m, "alice", t0);
        assert_eq!(o.settle(&m, "alice", "S1", Outcome::Failed, t0), Some(t0 + Duration::from_secs(2)));
        assert!(o.resume("alice", "s1"));
        // Resumed: not handed out to a request, nor resumed twice.
        assert!(o.take_due(&m, "alice", t0 + Duration::from_secs(3)).is_empty());
        assert!(!o.resume("alice", "S1"));
        assert_eq!(o.settle(&m, "alice", "S1", Outcome::Failed, t0), Some(t0 + Duration::from_secs(4)));
        assert!(!o.resume("bob", "S1"));
        assert!(o.resume("alice", "S1"));
        assert_eq!(o.settle(&m, "alice", "S1", Outcome::Settled, t0), None);
        assert!(!o.resume("alice", "S1"));
        assert_eq!(gauge(&m), 0);
    }

    #[test]
    fn a_holder_who_does_not_come_back_is_given_up_after_the_max_age() {
        let (m, o, t0) = (Metrics::new(), Orphans::new(MAX_BACKOFF), Instant::now());
        o.record(&m, "alice", 33, "S1", t0);
        // Any later change looks at every holder's.
        o.record(&m, "bob", 34, "S2", t0 + MAX_AGE);
        assert_eq!((gauge(&m), m.abandoned_upstream_subscriptions.get()), (1, 1));
        assert!(o.take_due(&m, "alice", t0 + MAX_AGE).is_empty());
    }
}
