//! `Subscription.stationEvents` and `Subscription.chargingStationUpdated`: live station events
//! over WebSocket (graphql-transport-ws, legacy graphql-ws) or Server-Sent Events. Watching needs
//! the same access as querying; installers get no costs or consumptions. A subscription ends when
//! the caller's token expires (as the [`TokenCheck`] sees it: at `exp` plus the configured leeway,
//! as for HTTP requests) or their access goes, and a subscriber too slow to keep up is dropped;
//! each ends with an error saying why (`UNAUTHENTICATED`, `FORBIDDEN`, `RATE_LIMITED`).

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Json, Subscription};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::access::{role, strip_costs};
use super::context::{caller, load};
use super::enums::UserRole;
use super::error::{AppError, AppResult};
use super::history::{installation_arg, resource_id};
use super::mutations::services;
use super::stations::ChargingStation;
use crate::auth::{Caller, Verifier};
use crate::cache::{Loaders, Resource, SharedCache, read};
use crate::events::{StationEvent as Event, StationEventKind};
use crate::live::Live;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum StationEventType {
    CablePlugged,
    CableUnplugged,
    SessionStarted,
    SessionEnded,
    ChargeModeChanged,
    Error,
    LoadShedding,
    /// A type witty-bff does not know (see `rawType`).
    Unknown,
}

impl From<StationEventKind> for StationEventType {
    fn from(k: StationEventKind) -> Self {
        match k {
            StationEventKind::CablePlugged => StationEventType::CablePlugged,
            StationEventKind::CableUnplugged => StationEventType::CableUnplugged,
            StationEventKind::SessionStarted => StationEventType::SessionStarted,
            StationEventKind::SessionEnded => StationEventType::SessionEnded,
            StationEventKind::ChargeModeChanged => StationEventType::ChargeModeChanged,
            StationEventKind::Error => StationEventType::Error,
            StationEventKind::LoadShedding => StationEventType::LoadShedding,
            StationEventKind::Unknown => StationEventType::Unknown,
        }
    }
}

/// Something that happened at a station.
#[derive(async_graphql::SimpleObject, Clone)]
pub(crate) struct StationEvent {
    /// The upstream's event id (`poll-…` for an event the polling fallback made up).
    pub id: ID,
    #[graphql(name = "type")]
    pub kind: StationEventType,
    /// The upstream's event type, as sent (`witty-bff.polled.<Type>` for an event the polling
    /// fallback made up from a change of the station's state).
    pub raw_type: String,
    pub event_time: DateTime<Utc>,
    pub installation_id: ID,
    pub charging_station_id: Option<ID>,
    /// The event's data as sent (without energy or cost for installers).
    pub data: Json<serde_json::Value>,
    /// True when an event of the same station with a later `eventTime` was delivered before this
    /// one (the upstream may deliver out of order, and retries late); an event dated in the future
    /// counts, for that, as dated when it arrived. The station's state in `chargingStationUpdated`
    /// and in queries is read fresh, so it is right either way.
    pub late: bool,
}

impl StationEvent {
    fn from_event(e: &Event, owner: bool) -> StationEvent {
        let mut data = e.data.clone();
        if !owner {
            strip_costs(&mut data);
        }
        StationEvent {
            id: ID(e.id.clone()),
            kind: e.kind.into(),
            raw_type: e.raw_type.clone(),
            event_time: e.event_time,
            installation_id: ID(e.installation_id.to_string()),
            charging_station_id: e.charging_station_id.clone().map(ID),
            data: Json(data),
            late: e.late,
        }
    }
}

/// Put in the request (or connection) data by the transport: the verifier that accepted the
/// caller's token. A subscription lasts as long as it would still accept that token by its time
/// claims, so it ends at `exp` plus the verifier's leeway, when an HTTP request would be refused.
/// Without it, a subscription ends at `exp`.
#[derive(Clone)]
pub(crate) struct TokenCheck(pub Arc<Verifier>);

/// Put in a subscription's data, as `Arc<dyn SharedWatch>`, by a transport that shares identical
/// subscriptions (the WebSocket fan-out). The resolver arms it once the caller's checks passed:
/// a subscriber joins a shared execution only with the access it was checked for.
pub(crate) trait SharedWatch: Send + Sync {
    /// Joins (or opens) the shared execution for what the resolver decided (`owner`: the caller
    /// gets costs) and takes the watch with `watch`. `Some` hands the watch back: this execution
    /// is not shared and keeps it itself.
    fn arm(&self, owner: bool, watch: &dyn Fn() -> crate::live::WatchGuard) -> Option<crate::live::WatchGuard>;
}

/// What a subscriber is told when its token expired.
const EXPIRED: &str = "the token has expired; subscribe again with a fresh token";

/// When the caller's token stops being accepted: `exp` plus the verifier's leeway (without a
/// verifier, `exp`); `None` when it never expires.
fn token_deadline(check: Option<&TokenCheck>, caller: &Caller) -> Option<chrono::DateTime<Utc>> {
    // The verifier compares whole seconds and refuses only once `now - leeway` is past `exp`:
    // within the second after `exp + leeway` it still accepts.
    let leeway = check.map(|TokenCheck(v)| v.leeway() + std::time::Duration::from_secs(1)).unwrap_or_default();
    let leeway = chrono::Duration::from_std(leeway).unwrap_or_default();
    caller.expires_at.map(|at| at + leeway)
}

/// Whether the caller's token is still accepted (the signature and claims were checked when it
/// came; only time has passed since).
fn token_accepted(check: Option<&TokenCheck>, caller: &Caller) -> bool {
    token_deadline(check, caller).is_none_or(|end| Utc::now() < end)
}

/// Completes when the caller's token is no longer accepted.
fn token_end(check: Option<TokenCheck>, caller: Caller) -> BoxFuture<'static, ()> {
    async move {
        let Some(end) = token_deadline(check.as_ref(), &caller) else { return futures::future::pending().await };
        tokio::time::sleep((end - Utc::now()).to_std().unwrap_or_default()).await;
    }
    .boxed()
}

/// How often a long-lived watch checks again that the caller still has access (memberships
/// changed through witty-bff are noticed at once).
const ACCESS_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// About how often a watch that hears no event checks its access anyway (a member removed
/// upstream by other means may hear nothing more: the upstream stops delivering to their
/// subscription). Each check may read the caller's installations upstream, so it is rare, and
/// spread over a fifth of it either way so that watches opened together do not check together.
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

/// What every watch needs once the resolver has returned.
struct Watch {
    caller: Caller,
    cache: SharedCache,
    loaders: Option<Arc<Loaders>>,
    installation_id: i64,
    /// The caller owns the installation (rather than installs it).
    owner: bool,
    station: Option<String>,
    live: Arc<Live>,
    /// When access was last checked, and the membership generation then.
    checked: std::sync::Mutex<(std::time::Instant, u64)>,
    /// Membership changes since access was first read (taken by the feed).
    access: Option<tokio::sync::broadcast::Receiver<i64>>,
}

impl Watch {
    /// Whether access must be checked again: memberships changed, or it has been a while.
    fn recheck_due(&self) -> bool {
        let (at, generation) = *self.checked.lock().unwrap_or_else(|e| e.into_inner());
        at.elapsed() > ACCESS_RECHECK || generation != self.live.access_generation()
    }

    /// A removed or disabled user stops hearing (`FORBIDDEN`; `UNAUTHENTICATED` when the upstream
    /// refuses the token), and, with `station`, so does a watch of a station that left the
    /// installation (`NOT_FOUND`; read only when told the installation changed: an event has just
    /// made that list stale, and a second read per event would double the upstream's load). A
    /// failed read (the upstream unavailable, throttling) is no reason to end.
    async fn still_watchable(&self, station: bool) -> Result<(), AppError> {
        *self.checked.lock().unwrap_or_else(|e| e.into_inner()) =
            (std::time::Instant::now(), self.live.access_generation());
        let i = self.installation_id;
        match self.cache.get(&self.caller, read::Installations).await.map_err(AppError::from) {
            Ok((list, _)) if !list.iter().any(|x| x.installation_id == i) => {
                return Err(AppError::Forbidden(format!("you no longer have access to installation {i}")));
            }
            Err(refused @ (AppError::Unauthenticated(_) | AppError::Forbidden(_))) => return Err(refused),
            _ => {}
        }
        if let Some(cs) = self.station.as_ref().filter(|_| station)
            && let Ok((list, _)) = self.cache.get(&self.caller, read::Stations { installation_id: i }).await
            && !list.iter().any(|s| &s.id == cs)
        {
            return Err(station_gone(cs, i));
        }
        Ok(())
    }

    /// Events of the installation: those of the watched station, and those of the whole
    /// installation (no station named, as load shedding can be).
    fn wants(&self, e: &Event) -> bool {
        e.installation_id == self.installation_id
            && match (self.station.as_deref(), e.charging_station_id.as_deref()) {
                (Some(watched), Some(of)) => watched == of,
                _ => true,
            }
    }
}

/// The caller must see the installation; returns their role.
async fn open(ctx: &Context<'_>, id: &ID, station: Option<ID>) -> AppResult<(Watch, UserRole)> {
    let i = installation_arg(id, "installationId")?;
    let station = station.map(|cs| resource_id(&cs, "chargingStationId").map(ID)).transpose()?;
    let me = caller(ctx)?.clone();
    // A connection outlives its token: a subscription made on it after the token expired is refused.
    if !token_accepted(ctx.data_opt::<TokenCheck>(), &me) {
        return Err(AppError::Unauthenticated(EXPIRED.into()));
    }
    // Listening for membership changes (and noting the generation) before access is read: a
    // change landing while it is read is then heard.
    let svc = services(ctx)?;
    let live = svc.live.clone();
    let access = Some(live.access_changes());
    let checked = std::sync::Mutex::new((std::time::Instant::now(), live.access_generation()));
    let (list, _) = load(ctx, read::Installations).await?;
    if !list.iter().any(|x| x.installation_id == i) {
        return Err(AppError::NotFound(format!("installation {i} not found")));
    }
    let role = role(ctx, i).await?;
    // A station of another installation (or none) would never have an event: refused, as an
    // unknown installation is. The request's loader reads the stations once, through the cache.
    if let Some(cs) = &station {
        let resource = read::Stations { installation_id: i };
        let (stations, _) = load(ctx, resource).await?;
        if !stations.iter().any(|s| s.id == cs.0) {
            return Err(AppError::NotFound(format!("charging station {} not found on installation {i}", cs.0)));
        }
    }
    let loaders = ctx.data_opt::<Arc<Loaders>>().cloned();
    let watch = Watch {
        caller: me,
        cache: svc.cache.clone(),
        loaders,
        installation_id: i,
        owner: role == UserRole::Owner,
        station: station.map(|s| s.0),
        live,
        checked,
        access,
    };
    Ok((watch, role))
}

/// The bus, filtered for the watch, ending at token expiry, at lost access, or when too slow, each
/// with an error saying so.
fn events(ctx: &Context<'_>, mut watch: Watch) -> AppResult<impl Stream<Item = Result<Arc<Event>, AppError>> + use<>> {
    let live = services(ctx)?.live.clone();
    // Listening before watching: nothing the watch brings about is missed.
    let rx = live.bus().subscribe();
    let take_watch = || live.watch(&watch.caller, watch.owner, watch.installation_id);
    // A shared subscriber's watch is its own, kept by its place at the hub; this execution may
    // go on for others.
    let guard = match ctx.data_opt::<Arc<dyn SharedWatch>>() {
        Some(shared) => shared.arm(watch.owner, &take_watch),
        None => Some(take_watch()),
    };
    let expiry = token_end(ctx.data_opt::<TokenCheck>().cloned(), watch.caller.clone());
    let access = watch.access.take();
    let every = IDLE_RECHECK.mul_f64(0.8 + 0.4 * fastrand::f64());
    let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed { rx, _guard: guard, watch: Arc::new(watch), expiry, access, idle, done: false };
    Ok(futures::stream::unfold(feed, |mut feed| async move {
        if feed.done {
            return None;
        }
        let item = feed.next().await?;
        feed.done = item.is_err();
        Some((item, feed))
    }))
}

/// What a watch's stream holds between events.
struct Feed {
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// The watch of the installation (none when a shared execution's hub holds it).
    _guard: Option<crate::live::WatchGuard>,
    watch: Arc<Watch>,
    /// Completes when the caller's token is no longer accepted.
    expiry: BoxFuture<'static, ()>,
    /// The installations whose memberships witty-bff changed (`None` once that can no longer
    /// happen).
    access: Option<tokio::sync::broadcast::Receiver<i64>>,
    /// Ticks while no event comes: access is checked then too.
    idle: tokio::time::Interval,
    /// It ended with an error: nothing follows.
    done: bool,
}

impl Feed {
    /// The next event of the watch, or the error that ends it; `None` when the bus closed.
    async fn next(&mut self) -> Option<Result<Arc<Event>, AppError>> {
        loop {
            // Whether a membership of the watched installation changed (or maybe did: too many
            // changes to tell); `None` when no change can come any more.
            let installation = self.watch.installation_id;
            let access_changed = async {
                let Some(access) = &mut self.access else { return futures::future::pending().await };
                loop {
                    match access.recv().await {
                        Ok(changed) if changed != installation => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => return Some(()),
                        Err(RecvError::Closed) => return None,
                    }
                }
            };
            let received = tokio::select! {
                // An expired token hears nothing more.
                biased;
                () = &mut self.expiry => return Some(Err(AppError::Unauthenticated(EXPIRED.into()))),
                // A caller removed (or disabled) through witty-bff, or a station removed through
                // it, is told at once, not at an event that may never come (their own token may
                // be the one the events came by).
                changed = access_changed => {
                    if changed.is_none() {
                        self.access = None;
                    } else if let Err(e) = self.watch.still_watchable(true).await {
                        return Some(Err(e));
                    }
                    continue;
                }
                received = self.rx.recv() => received,
                _ = self.idle.tick() => {
                    if let Err(e) = self.watch.still_watchable(false).await {
                        return Some(Err(e));
                    }
                    continue;
                }
            };
            match received {
                Ok(e) if self.watch.wants(&e) => {
                    self.idle.reset();
                    if self.watch.recheck_due()
                        && let Err(e) = self.watch.still_watchable(false).await
                    {
                        return Some(Err(e));
                    }
                    return Some(Ok(e));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    self.watch.live.metrics().lagging_subscribers_dropped.inc();
                    return Some(Err(AppError::lagged(n)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct StationSubscription;

#[Subscription]
impl StationSubscription {
    /// Events of an installation's stations (or of one station), as they happen.
    async fn station_events(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: Option<ID>,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<StationEvent>>> {
        let (watch, role) = open(ctx, &installation_id, charging_station_id).await?;
        let owner = role == UserRole::Owner;
        Ok(events(ctx, watch)?.map(move |e| e.map(|e| StationEvent::from_event(&e, owner)).map_err(Into::into)).boxed())
    }

    /// The station's fresh state after each of its events.
    async fn charging_station_updated(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        charging_station_id: Option<ID>,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<ChargingStation>>> {
        let (watch, _) = open(ctx, &installation_id, charging_station_id).await?;
        let (cache, caller, i) = (watch.cache.clone(), watch.caller.clone(), watch.installation_id);
        let (loaders, watched) = (watch.loaders.clone(), watch.station.clone());
        let answers = events(ctx, watch)?
            .then(move |e| {
                let (cache, caller, watched) = (cache.clone(), caller.clone(), watched.clone());
                // The station's nested fields load through the connection's loader: forget what
                // it read for the previous event.
                if let Some(l) = &loaders {
                    l.clear::<Resource>();
                }
                async move {
                    let e = match e {
                        Ok(e) => e,
                        Err(err) => return vec![(Err(err.into()), true)],
                    };
                    // The intake dropped the stale entries: one upstream read per caller, however
                    // many of their subscriptions are waiting. An event of the whole installation
                    // (no station named) refreshes the watched station, or all of them.
                    let answers = match e.charging_station_id.clone().or(watched.clone()) {
                        Some(cs) => match station_now(&cache, &caller, i, cs.clone()).await {
                            // A station the installation does not have: the watched one left it
                            // (the end), or the event named another (nothing to show).
                            Err(AppError::NotFound(_)) if watched.as_ref() != Some(&cs) => vec![],
                            Err(AppError::NotFound(_)) => vec![Err(station_gone(&cs, i))],
                            answer => vec![answer],
                        },
                        None => stations_now(&cache, &caller, i).await,
                    };
                    // Refused (access gone, the token refused): the end; a failed read is not.
                    answers
                        .into_iter()
                        .map(|a| {
                            let end = matches!(
                                a,
                                Err(AppError::Forbidden(_) | AppError::NotFound(_) | AppError::Unauthenticated(_))
                            );
                            (a.map_err(Into::into), end)
                        })
                        .collect::<Vec<_>>()
                }
            })
            .flat_map(futures::stream::iter)
            .boxed();
        // Through the answer that ends it, and not a moment longer (not until another event).
        Ok(futures::stream::unfold((answers, false), |(mut answers, ended)| async move {
            if ended {
                return None;
            }
            let (answer, end) = answers.next().await?;
            Some((answer, (answers, end)))
        })
        .boxed())
    }
}

/// What ends a watch of a station that left its installation.
fn station_gone(cs: &str, i: i64) -> AppError {
    AppError::NotFound(format!("charging station {cs} is no longer on installation {i}"))
}

/// One station's state, as the cache (refilled after the event) has it.
async fn station_now(cache: &SharedCache, caller: &Caller, i: i64, cs: String) -> AppResult<ChargingStation> {
    let (station, at) =
        cache.get(caller, read::Station { installation_id: i, station_id: cs }).await.map_err(AppError::from)?;
    Ok(ChargingStation::new(i, station, at))
}

/// Every station of the installation, in one read.
async fn stations_now(cache: &SharedCache, caller: &Caller, i: i64) -> Vec<AppResult<ChargingStation>> {
    match cache.get(caller, read::Stations { installation_id: i }).await.map_err(AppError::from) {
        Ok((list, at)) => list.iter().map(|s| Ok(ChargingStation::new(i, Arc::new(s.clone()), at))).collect(),
        Err(err) => vec![Err(err)],
    }
}
