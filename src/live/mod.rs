//! Live station events: the webhook intake (deduplicated, in event-time order), the upstream event
//! subscription kept while anybody watches an installation, and the polling fallback used when the
//! upstream cannot reach the webhook. Everything learned is published on the [`EventBus`] after the
//! cached entries it makes stale are dropped, so a query after an event shows fresh state.
//!
//! Knows nothing of axum or GraphQL: `http` hands it deliveries, `graphql` asks it to watch.

mod orphans;
mod poller;
mod registry;
mod strays;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;

pub(crate) use registry::WatchGuard;

use crate::cache::Change;
use crate::cache::SharedCache;
use crate::events::{SharedBus, StationEvent, StationEventKind};
use crate::fleet::{Fleet, Listener, Note, Subscription};
use crate::upstream::notifications::GridEvent;

/// How live events are obtained.
#[derive(Debug, Clone)]
pub(crate) struct LiveSettings {
    /// Register a webhook upstream; `false`: poll only.
    pub webhooks: bool,
    /// Base URL the upstream can reach witty-bff at (the webhook is `<base>/webhooks/witty/<secret>`).
    pub public_url: Url,
    /// The secret path segment of the webhook URL.
    pub webhook_secret: String,
    /// How long to wait for the upstream's validation handshake before polling instead.
    pub validation_timeout: Duration,
    /// Interval of the polling fallback.
    pub poll_interval: Duration,
    /// How long an upstream subscription outlives its last watcher.
    pub grace: Duration,
}

/// The key of an installation's webhook URL: `{installation}-{mac}`, the mac an HMAC-SHA256 (by
/// way of jsonwebtoken's HS256 signer) of the installation under the webhook secret. The same
/// secret gives the same URL after a restart, so the subscription is recognised and adopted.
pub fn webhook_key(secret: &str, installation_id: i64) -> String {
    let message = format!("witty-bff webhook of installation {installation_id}");
    // Without a mac the key is `{installation}-`, which `webhook_installation` never accepts.
    let mac = crate::auth::hmac_sha256(secret.as_bytes(), message.as_bytes()).unwrap_or_default();
    format!("{installation_id}-{}", &mac[..mac.len().min(WEBHOOK_MAC_CHARS)])
}

/// The characters of a webhook key's mac.
const WEBHOOK_MAC_CHARS: usize = 32;

/// The kind of webhook delivery (`aeg-event-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryKind {
    SubscriptionValidation,
    Notification,
    SubscriptionDeletion,
}

impl DeliveryKind {
    const ALL: [DeliveryKind; 3] =
        [DeliveryKind::SubscriptionValidation, DeliveryKind::Notification, DeliveryKind::SubscriptionDeletion];

    /// The `aeg-event-type` value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DeliveryKind::SubscriptionValidation => "SubscriptionValidation",
            DeliveryKind::Notification => "Notification",
            DeliveryKind::SubscriptionDeletion => "SubscriptionDeletion",
        }
    }

    pub(crate) fn from_header(value: Option<&str>) -> Option<DeliveryKind> {
        let value = value?.trim();
        DeliveryKind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(value))
    }
}

pub(crate) const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// The live-events service.
pub(crate) struct Live {
    cache: SharedCache,
    bus: SharedBus,
    settings: LiveSettings,
    /// Event ids already handled, with the installation whose webhook took them (bounded;
    /// deliveries are at least once). Ids are unique per installation only as far as we know:
    /// one installation's event must not hide another's that happens to share its id.
    seen: moka::sync::Cache<(i64, String), ()>,
    /// The latest event time published per installation and station (bounded), to mark late ones.
    latest: moka::sync::Cache<(i64, Option<String>), DateTime<Utc>>,
    registry: registry::Registry,
    /// Bumped whenever witty-bff changes a membership, so live watches check access again.
    access: std::sync::atomic::AtomicU64,
    /// The installation of each such change, so that its watches check at once (a watch whose
    /// caller lost access may hear no event ever again to check it at), and only its watches.
    access_changes: tokio::sync::broadcast::Sender<i64>,
    /// Deliveries waiting to be handled, in the order they arrived (with their subscription name).
    intake: std::sync::mpsc::SyncSender<Intake>,
    /// The other replicas, when witty-bff runs as a fleet.
    fleet: Option<Arc<Fleet>>,
    /// The runtime the intake thread reaches Redis through.
    runtime: tokio::runtime::Handle,
    /// What hears the other replicas (the fleet holds it weakly).
    hearing: Arc<Hearing>,
    /// Events heard from other replicas, in the order heard, on their way to the intake.
    remote: tokio::sync::mpsc::UnboundedSender<Vec<StationEvent>>,
}

/// Most deliveries (and events) the intake takes together.
const BATCH_ITEMS: usize = 64;
const BATCH_EVENTS: usize = 10_000;

/// What the intake thread keeps: the burst it publishes, and in a fleet a runtime and a Redis
/// connection of its own, so that a delivery's Redis call does not wait behind the main
/// runtime's tasks (every subscriber's, under a fan-out).
struct Worker {
    burst: Burst,
    redis: Option<(tokio::runtime::Runtime, Option<redis::aio::MultiplexedConnection>)>,
}

impl Worker {
    fn new(fleet: bool) -> Worker {
        let runtime = fleet.then(|| tokio::runtime::Builder::new_current_thread().enable_all().build()).and_then(|r| {
            r.map_err(|e| tracing::error!(error = %e, "no runtime for the intake's Redis calls; events judged alone"))
                .ok()
        });
        Worker { burst: Burst::new(), redis: runtime.map(|r| (r, None)) }
    }

    /// `Fleet::publish_events` on the intake's own connection (made again after a failure).
    fn publish(
        &mut self,
        fleet: &Fleet,
        events: Vec<StationEvent>,
    ) -> Result<Vec<StationEvent>, (Vec<StationEvent>, redis::RedisError)> {
        let Some((runtime, conn)) = &mut self.redis else {
            // No runtime of its own could be made (logged at start): the intake thread is in no
            // runtime to borrow one from, so the replica judges with its own memory.
            let error = std::io::Error::other("the webhook intake has no runtime for Redis");
            return Err((events, redis::RedisError::from(error)));
        };
        runtime.block_on(async {
            if conn.is_none() {
                match fleet.connect().await {
                    Ok(c) => *conn = Some(c),
                    Err(e) => return Err((events, e)),
                }
            }
            let published = fleet.publish_events(events, conn.as_mut()).await;
            if published.is_err() {
                *conn = None;
            }
            published
        })
    }
}

/// What the intake thread handles, in the order it came.
enum Intake {
    /// A webhook delivery: at the webhook of an installation, from the subscription named.
    Delivery(i64, Option<String>, Vec<GridEvent>),
    /// Fresh events another replica of the fleet published.
    Heard(Vec<StationEvent>),
}

impl Intake {
    /// Its events.
    fn len(&self) -> usize {
        match self {
            Intake::Delivery(_, _, events) => events.len(),
            Intake::Heard(events) => events.len(),
        }
    }
}

/// Deliveries accepted but not yet handled before new ones are refused (503, the upstream retries).
const INTAKE_QUEUE: usize = 1024;

/// The delivery queue is full: the upstream should deliver again later.
#[derive(Debug)]
pub(crate) struct IntakeFull;

impl Live {
    pub(crate) fn new(
        cache: SharedCache,
        bus: SharedBus,
        settings: LiveSettings,
        fleet: Option<Arc<Fleet>>,
    ) -> Arc<Live> {
        let seen =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(24 * 3600)).build();
        // A failed removal is tried again on the scale of the grace period (a second at least).
        let registry = registry::Registry::new(settings.grace.max(Duration::from_secs(1)));
        let (intake, deliveries) = std::sync::mpsc::sync_channel(INTAKE_QUEUE);
        let access = std::sync::atomic::AtomicU64::new(0);
        let (access_changes, _) = tokio::sync::broadcast::channel(ACCESS_CHANGES);
        let latest =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(24 * 3600)).build();
        let runtime = tokio::runtime::Handle::current();
        let (remote, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let live = Arc::new_cyclic(|me| Live {
            cache,
            bus,
            settings,
            seen,
            latest,
            registry,
            access,
            access_changes,
            intake,
            fleet,
            runtime,
            hearing: Arc::new(Hearing(me.clone())),
            remote,
        });
        let weak = Arc::downgrade(&live);
        tokio::spawn(async move {
            while let Some(events) = heard.recv().await {
                let Some(live) = weak.upgrade() else { return };
                live.heard(events).await;
            }
        });
        if let Some(f) = &live.fleet {
            let hearing: Arc<dyn Listener> = live.hearing.clone();
            f.set_listener(Arc::downgrade(&hearing));
        }
        // One thread handles deliveries one after the other, so events are published in the order
        // they arrived. A thread of its own (handling is short and never waits on I/O): it runs
        // as soon as a delivery comes, not after every task the runtime has queued, which under a
        // fan-out is every subscriber's. It ends with the service.
        let weak = Arc::downgrade(&live);
        let mut worker = Worker::new(live.fleet.is_some());
        let started = std::thread::Builder::new().name("witty-bff-intake".into()).spawn(move || {
            loop {
                // A delivery already waiting continues the burst; one waited for starts another.
                let first = match deliveries.try_recv() {
                    Ok(item) => item,
                    Err(_) => match deliveries.recv() {
                        Ok(item) => {
                            worker.burst = Burst::new();
                            item
                        }
                        Err(_) => break,
                    },
                };
                // What else is waiting goes with it: in a fleet, one Redis call for them all.
                let mut batch = vec![first];
                let mut events = batch[0].len();
                while batch.len() < BATCH_ITEMS && events < BATCH_EVENTS {
                    let Ok(item) = deliveries.try_recv() else { break };
                    events += item.len();
                    batch.push(item);
                }
                let Some(live) = weak.upgrade() else { break };
                live.handle(batch, &mut worker);
            }
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the webhook intake thread; deliveries will be refused");
        }
        live
    }

    /// Queues a delivery's events (at the webhook of `installation`, from the upstream
    /// subscription named, if it says) for handling after the webhook has answered.
    pub(crate) fn accept(
        &self,
        installation: i64,
        subscription: Option<&str>,
        events: Vec<GridEvent>,
    ) -> Result<(), IntakeFull> {
        self.intake
            .try_send(Intake::Delivery(installation, subscription.map(str::to_string), events))
            .map_err(|_| IntakeFull)
    }

    /// Queues events another replica of the fleet published, behind the deliveries already
    /// queued here (waiting for room in the queue: Redis keeps what the channel brings meanwhile).
    async fn heard(&self, mut events: Vec<StationEvent>) {
        loop {
            match self.intake.try_send(Intake::Heard(events)) {
                Ok(()) => return,
                Err(std::sync::mpsc::TrySendError::Full(Intake::Heard(back))) => {
                    events = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => return,
            }
        }
    }

    /// The process's metrics (shared with the upstream client).
    pub(crate) fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.cache.client().metrics()
    }

    pub(crate) fn bus(&self) -> &SharedBus {
        &self.bus
    }

    /// What every webhook URL of ours starts with.
    pub(crate) fn webhook_base(&self) -> String {
        format!("{}/webhooks/witty/", self.settings.public_url.as_str().trim_end_matches('/'))
    }

    /// The webhook URL registered upstream for an installation: its last segment is the
    /// installation's key (see `webhook_key`), so a URL one member of an installation can read
    /// says nothing of any other installation's.
    pub(crate) fn webhook_url(&self, installation_id: i64) -> String {
        format!("{}{}", self.webhook_base(), webhook_key(&self.settings.webhook_secret, installation_id))
    }

    /// The installation a webhook key is for, if it is one of ours (compared in constant time).
    pub(crate) fn webhook_installation(&self, key: &str) -> Option<i64> {
        let (installation, mac) = key.split_once('-')?;
        let installation = installation.parse::<i64>().ok().filter(|_| mac.len() == WEBHOOK_MAC_CHARS)?;
        let expected = webhook_key(&self.settings.webhook_secret, installation);
        let (a, b) = (key.as_bytes(), expected.as_bytes());
        let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        same.then_some(installation)
    }

    /// A webhook URL as shown to callers: ours with its key hidden (whoever knows it can deliver
    /// events for the installation), others' as they are.
    pub(crate) fn redact_webhook_url(&self, url: &str) -> String {
        match url.strip_prefix(&self.webhook_base()) {
            Some(_) => format!("{}<hidden>", self.webhook_base()),
            None => url.to_string(),
        }
    }

    /// The validation code to answer (at the webhook of `installation`), and marks the
    /// subscription validated.
    pub(crate) fn validation_code(
        &self,
        installation: i64,
        subscription_name: Option<&str>,
        events: &[GridEvent],
    ) -> Option<String> {
        let event = events.iter().find(|e| e.event_type.eq_ignore_ascii_case(VALIDATION_EVENT))?;
        let code = event.data.get("validationCode")?.as_str()?.to_string();
        self.registry.validated(self, installation, subscription_name);
        self.tell_fleet(Note::Validated(Subscription { installation, name: subscription_name.map(str::to_string) }));
        Some(code)
    }

    /// The upstream deleted a subscription of `installation`: its watchers fall back to polling.
    pub(crate) fn subscription_deleted(self: &Arc<Self>, installation: i64, subscription_name: Option<&str>) {
        self.registry.deleted(self, installation, subscription_name);
        self.tell_fleet(Note::Deleted(Subscription { installation, name: subscription_name.map(str::to_string) }));
    }

    /// Tells the other replicas of a fleet what a webhook delivery said about a subscription
    /// (the replica keeping it may not be the one the upstream reached).
    fn tell_fleet(&self, note: Note) {
        if let Some(f) = self.fleet.clone() {
            self.runtime.spawn(async move { f.tell(&note).await });
        }
    }

    /// Handles notified events: drops duplicates, orders by event time, invalidates (once for the
    /// delivery, whatever its number of events), publishes.
    /// An event about another installation than the webhook's is dropped (whoever could read one
    /// installation's webhook URL cannot speak for another). A delivery from a subscription of
    /// ours that is no longer the installation's (one being replaced, or left behind) is dropped:
    /// its copies may lack what the current one carries.
    #[cfg(test)]
    fn notify(&self, installation: i64, subscription: Option<&str>, events: Vec<GridEvent>, worker: &mut Worker) {
        self.handle(vec![Intake::Delivery(installation, subscription.map(str::to_string), events)], worker);
    }

    /// Handles what the intake took, in order: the deliveries' events judged together (one Redis
    /// call in a fleet), events heard from other replicas where they came.
    fn handle(&self, batch: Vec<Intake>, worker: &mut Worker) {
        let mut pending = Vec::new();
        for item in batch {
            match item {
                Intake::Delivery(installation, subscription, events) => {
                    pending.extend(self.candidates(installation, subscription.as_deref(), events));
                }
                Intake::Heard(events) => {
                    let fresh = self.first_seen(std::mem::take(&mut pending), worker);
                    self.spread(fresh, &mut worker.burst);
                    self.spread(events, &mut worker.burst);
                }
            }
        }
        let fresh = self.first_seen(pending, worker);
        self.spread(fresh, &mut worker.burst);
    }

    /// A delivery's events that may be published, in event-time order: see [`Live::handle`].
    fn candidates(&self, installation: i64, subscription: Option<&str>, events: Vec<GridEvent>) -> Vec<StationEvent> {
        self.registry.delivered(installation);
        // Every event left after the first filter is the webhook's installation's: its current
        // subscription is looked up once for the whole delivery.
        let current = subscription.and_then(|_| self.registry.subscription_of(installation));
        let mut fresh: Vec<StationEvent> = events
            .into_iter()
            .filter(|e| !e.event_type.eq_ignore_ascii_case(VALIDATION_EVENT))
            .filter_map(to_station_event)
            .filter(|e| {
                let theirs = e.installation_id == installation;
                if !theirs {
                    tracing::warn!(
                        webhook = installation,
                        installation = e.installation_id,
                        "dropped an event about another installation than its webhook's"
                    );
                    self.metrics().events.with_label_values(&["other_installation"]).inc();
                }
                theirs
            })
            .filter(|e| {
                let foreign =
                    subscription.zip(current.as_deref()).is_some_and(|(from, now)| !now.eq_ignore_ascii_case(from));
                if foreign {
                    tracing::debug!(
                        installation = e.installation_id,
                        "dropped a delivery from a replaced subscription"
                    );
                    self.metrics().events.with_label_values(&["replaced_subscription"]).inc();
                }
                !foreign
            })
            .collect();
        fresh.sort_by_key(|e| e.event_time);
        fresh
    }

    /// Publishes fresh events to this replica's listeners, as fast as they take them (see
    /// [`Live::wait_for_room`]), once what they make stale is dropped.
    fn spread(&self, fresh: Vec<StationEvent>, burst: &mut Burst) {
        // One invalidation per installation of the delivery (its events all happened upstream
        // before it came, so a read after the first is published sees them all), not one per
        // event: a delivery of thousands must cost the cache's readers no more than one of one.
        let mut installations: Vec<i64> = fresh.iter().map(|e| e.installation_id).collect();
        installations.sort_unstable();
        installations.dedup();
        for i in installations {
            self.cache.invalidate_live_state(i);
        }
        for e in fresh {
            self.wait_for_room(burst);
            tracing::debug!(installation = e.installation_id, kind = ?e.kind, "station event");
            self.bus.publish(e);
            burst.published += 1;
        }
    }

    /// The events (in event-time order) no replica has published yet, marked late when a later
    /// one of their station was published before: judged by the fleet through Redis, or by this
    /// replica's own memory (alone, or while Redis is away).
    fn first_seen(&self, events: Vec<StationEvent>, worker: &mut Worker) -> Vec<StationEvent> {
        let offered = events.len();
        if offered == 0 {
            return events;
        }
        let events = match &self.fleet {
            Some(f) if f.connected() => match worker.publish(f, events) {
                Ok(fresh) => {
                    self.count_fresh(fresh.len(), offered);
                    return fresh;
                }
                Err((events, e)) => {
                    f.redis().fell_back("events", &e);
                    events
                }
            },
            _ => events,
        };
        let fresh: Vec<StationEvent> = events
            .into_iter()
            .filter(|e| self.seen.entry((e.installation_id, e.id.clone())).or_insert(()).is_fresh())
            .map(|e| self.mark_late(e))
            .collect();
        self.count_fresh(fresh.len(), offered);
        fresh
    }

    fn count_fresh(&self, fresh: usize, offered: usize) {
        let events = &self.metrics().events;
        events.with_label_values(&["published"]).inc_by(fresh as u64);
        events.with_label_values(&["duplicate"]).inc_by(offered.saturating_sub(fresh) as u64);
    }

    /// On the intake thread, before each event of a burst (deliveries handled back to back, the
    /// next one already waiting) once it has published more than half the bus: while half the bus
    /// holds events some listener has not taken yet, waits for the listeners to take them, so that
    /// a large delivery (Event Grid batches up to 5000 events), or many queued ones, do not
    /// overrun listeners that read as fast as they can. A smaller burst never waits: it cannot
    /// overrun a listener that keeps up, and waiting would only gather the deliveries arriving
    /// meanwhile into a larger one. The wait ends, for the rest of the burst, at its deadline; and
    /// at once when the backlog stops going down (a listener that stopped reading): that one is
    /// then dropped with a notice as before, and nobody waits on it (pacing resumes once the
    /// backlog is under half).
    fn wait_for_room(&self, burst: &mut Burst) {
        let (mut queued, capacity) = self.bus.backlog();
        if burst.published <= capacity / 2 {
            return;
        }
        if queued < capacity / 2 {
            // The listener that stopped reading is gone (or caught up): pace again.
            burst.stalled = false;
            return;
        }
        if burst.stalled {
            return;
        }
        let mut last_progress = std::time::Instant::now();
        while queued >= capacity / 2 {
            let now = std::time::Instant::now();
            if now >= burst.deadline {
                return;
            }
            if now.duration_since(last_progress) > STALLED {
                burst.stalled = true;
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
            let (left, _) = self.bus.backlog();
            if left < queued {
                last_progress = std::time::Instant::now();
            }
            queued = left;
        }
    }

    /// Publishes an event the poller learned: drops what it makes stale, then tells the listeners
    /// (of every replica, in a fleet).
    pub(crate) async fn publish(&self, event: StationEvent) {
        let event = match &self.fleet {
            Some(f) if f.connected() => match f.publish_events(vec![event], None).await {
                Ok(mut fresh) => match fresh.pop() {
                    Some(e) => e,
                    None => return,
                },
                Err((mut events, e)) => {
                    f.redis().fell_back("events", &e);
                    match events.pop() {
                        Some(e) => self.mark_late(e),
                        None => return,
                    }
                }
            },
            _ => self.mark_late(event),
        };
        self.cache.invalidate_live_state(event.installation_id);
        tracing::debug!(installation = event.installation_id, kind = ?event.kind, "station event");
        self.bus.publish(event);
    }

    /// Marks the event late when a later one of its station was published already (by this
    /// replica's memory).
    fn mark_late(&self, mut event: StationEvent) -> StationEvent {
        let key = (event.installation_id, event.charging_station_id.clone());
        let at = event.event_time;
        // An event dated after its receipt (a skewed clock, a bad event) counts as received now:
        // it must not make every later event of its station look late.
        let seen_at = at.min(Utc::now());
        let newest = self.latest.entry(key).and_upsert_with(|seen| seen.map_or(seen_at, |e| (*e.value()).max(seen_at)));
        event.late = *newest.value() > at;
        event
    }

    /// A write changed what `change` says: dropped here, and on every other replica of a fleet
    /// before this returns (so a query anywhere after the mutation's answer sees it). Returns the
    /// mark of what it unsettles (see `SharedCache::apply`).
    pub(crate) async fn changed(&self, change: Change) -> Option<u64> {
        let mark = self.cache.apply(&change);
        if let (Some(i), true) = (change.installation, change.access) {
            self.access_changed(i);
        }
        if let Some(f) = &self.fleet {
            f.tell(&Note::Change(change)).await;
        }
        mark
    }

    /// Waits until this replica has heard what the others changed before now (in a fleet).
    pub(crate) async fn catch_up(&self) {
        if let Some(f) = &self.fleet {
            f.catch_up().await;
        }
    }

    pub(crate) fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Starts watching an installation with the caller's credentials (`owner`: the caller owns
    /// it, rather than installs it); the guard stops it.
    pub(crate) fn watch(
        self: &Arc<Self>,
        caller: &crate::auth::Caller,
        owner: bool,
        installation_id: i64,
    ) -> WatchGuard {
        self.registry.watch(self, caller, owner, installation_id)
    }

    /// A membership of `installation` changed, or one of its stations left it: its watches check
    /// their access (and their station) at once, every other watch at its next event.
    pub(crate) fn access_changed(&self, installation: i64) {
        self.access.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.access_changes.send(installation);
    }

    pub(crate) fn access_generation(&self) -> u64 {
        self.access.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The installations whose memberships change from now on (see [`Live::access_changed`]).
    pub(crate) fn access_changes(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.access_changes.subscribe()
    }
}

/// Hears the other replicas of a fleet for the live-events service.
struct Hearing(std::sync::Weak<Live>);

impl Listener for Hearing {
    fn heard(&self, note: Note) {
        let Some(live) = self.0.upgrade() else { return };
        match note {
            Note::Events(events) => {
                // Dropped at once (a query answered after this note was heard must not see the
                // state before it); published in turn by the intake.
                for e in &events {
                    live.cache.invalidate_live_state(e.installation_id);
                }
                let _ = live.remote.send(events);
            }
            Note::Change(change) => {
                live.cache.apply(&change);
                if let (Some(i), true) = (change.installation, change.access) {
                    live.access_changed(i);
                }
            }
            Note::Validated(s) => live.registry.validated(&live, s.installation, s.name.as_deref()),
            Note::Deleted(s) => live.registry.deleted(&live, s.installation, s.name.as_deref()),
        }
    }

    fn resynced(&self) {
        if let Some(live) = self.0.upgrade() {
            live.cache.invalidate(|_| true);
        }
    }
}

/// Membership changes a watch may not have looked at yet before it checks its access anyway.
const ACCESS_CHANGES: usize = 64;

/// The longest the intake waits, in all, for listeners to take a burst's events.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Deliveries the intake handles back to back: how many events it published, until when it may
/// wait for listeners to take them, and whether a listener stopped reading (no waiting on it
/// until the backlog is under half again).
struct Burst {
    published: usize,
    deadline: std::time::Instant,
    stalled: bool,
}

impl Burst {
    fn new() -> Burst {
        Burst { published: 0, deadline: std::time::Instant::now() + ROOM_WAIT, stalled: false }
    }
}

/// A backlog that has not gone down for this long has a listener that stopped reading. Long
/// enough that a listener which reads, but whose task waits for a core on a loaded 2-core
/// machine, is not taken for stopped: since a delivery's events no longer cost an invalidation
/// each, the intake outruns such a listener within a few milliseconds.
const STALLED: Duration = Duration::from_millis(250);

/// What is wrong with a notification's event, if anything: it has no id, no readable
/// `eventTime`, or names no installation (in its subject, or its data).
pub(crate) fn unreadable_event(e: &GridEvent) -> Option<String> {
    // A validation event sent as a notification is the intake's to drop.
    if e.event_type.eq_ignore_ascii_case(VALIDATION_EVENT) {
        return None;
    }
    if e.id.trim().is_empty() {
        return Some("its id is empty".into());
    }
    if DateTime::parse_from_rfc3339(&e.event_time).is_err() {
        return Some(format!("its eventTime '{}' is no RFC 3339 date-time", e.event_time));
    }
    if about(e).0.is_none() {
        return Some(format!(
            "its subject '{}' names no installation (installations/{{installationId}}/...), nor does its data",
            e.subject
        ));
    }
    None
}

/// The installation and station an event is about: from its subject
/// (`installations/{i}/charging-stations/{cs}`), its data filling in what that lacks.
fn about(e: &GridEvent) -> (Option<i64>, Option<String>) {
    let mut parts = e.subject.trim_matches('/').split('/');
    let mut from_subject = (None, None);
    while let Some(p) = parts.next() {
        match p {
            "installations" => from_subject.0 = parts.next().and_then(|i| i.parse::<i64>().ok()),
            "charging-stations" => from_subject.1 = parts.next().map(str::to_string),
            _ => {}
        }
    }
    // The subject names what the event is about (Event Grid filters and routes by it); `data`
    // only fills in what it leaves out, so a `data` naming another installation than the subject
    // cannot carry the event into the wrong one.
    let installation = from_subject.0.or_else(|| e.data.get("installationId").and_then(|v| v.as_i64()));
    let station =
        from_subject.1.or_else(|| e.data.get("chargingStationId").and_then(|v| v.as_str()).map(str::to_string));
    (installation, station)
}

/// Reads an Event Grid event into a station event (see [`about`]).
fn to_station_event(e: GridEvent) -> Option<StationEvent> {
    let (installation_id, station) = about(&e);
    let installation_id = installation_id?;
    let event_time =
        DateTime::parse_from_rfc3339(&e.event_time).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| Utc::now());
    Some(StationEvent {
        kind: StationEventKind::from_event_type(&e.event_type),
        raw_type: e.event_type,
        id: e.id,
        event_time,
        installation_id,
        charging_station_id: station,
        data: e.data,
        late: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LocalBus;
    use crate::upstream::{UpstreamClient, UpstreamConfig};

    /// A service whose upstream is never called (nothing here reads).
    fn live() -> Arc<Live> {
        let client = UpstreamClient::new(UpstreamConfig {
            base_url: "http://127.0.0.1:9/".parse().unwrap(),
            api_key: "unused".into(),
            timeout: Duration::from_secs(1),
            read_retries: 0,
        })
        .unwrap();
        let cache = SharedCache::new(client, crate::cache::Ttls::default(), 1_000);
        let settings = LiveSettings {
            webhooks: true,
            public_url: "http://127.0.0.1:9/".parse().unwrap(),
            webhook_secret: "secret".into(),
            validation_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            grace: Duration::from_secs(1),
        };
        Live::new(cache, Arc::new(LocalBus::new(8192)), settings, None)
    }

    fn event(installation: i64, id: &str) -> GridEvent {
        serde_json::from_value(serde_json::json!({
            "id": id, "eventType": "Hager.WittyHome.LoadShedding",
            "subject": format!("installations/{installation}/charging-stations/S1"),
            "eventTime": "2026-01-01T10:00:00Z", "data": {}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_delivery_of_many_events_invalidates_once_for_its_installation() {
        let live = live();
        let heard = live.bus().subscribe();
        let events = (0..4000).map(|n| event(33, &format!("e-{n}"))).collect();
        live.notify(33, None, events, &mut Worker::new(false));
        let (predicates, bumps) = live.cache.invalidation_work();
        assert_eq!(predicates, 0, "no invalidation predicate registered: entries are not scanned");
        assert_eq!(bumps, 1, "one generation bump for the delivery, not one per event");
        assert_eq!(heard.len(), 4000, "every event is still published");
        // A delivery of nothing new (all duplicates) invalidates nothing.
        live.notify(33, None, vec![event(33, "e-0")], &mut Worker::new(false));
        assert_eq!(live.cache.invalidation_work(), (0, 1));
    }

    #[tokio::test]
    async fn an_event_id_is_a_duplicate_only_at_the_same_installation() {
        let live = live();
        let mut heard = live.bus().subscribe();
        live.notify(42, None, vec![event(42, "shared-id")], &mut Worker::new(false));
        live.notify(33, None, vec![event(33, "shared-id")], &mut Worker::new(false));
        live.notify(33, None, vec![event(33, "shared-id")], &mut Worker::new(false));
        let mut installations = Vec::new();
        while let Ok(e) = heard.try_recv() {
            installations.push(e.installation_id);
        }
        assert_eq!(installations, vec![42, 33], "each installation's event once");
    }
}
