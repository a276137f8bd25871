//! Shared execution of identical subscriptions. Subscribers that send the same operation with the
//! same variables under the same token would each get the same answer to every event, so one
//! execution (a hub) answers for all of them: it runs the operation once per event, renders the
//! payload to JSON once, and hands the text to every subscriber's transport, which only frames it.
//! With 1000 subscribers that is one execution per event instead of 1000, and no per-subscriber
//! work in async-graphql at all. A lone subscriber runs the execution on its own connection, as an
//! unshared one would; a task of its own takes it over when a second subscriber joins.
//!
//! Only the same token (and the same owner/installer decision) shares: a hub never serves a caller
//! anything that caller's own execution would not have produced. Every subscriber is still checked on its own when it subscribes (the
//! resolver runs for each, with the caller's loaders, and must pass its access checks before it
//! joins), holds its own watch of the installation, and is dropped on its own when it falls
//! behind.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use async_graphql::{Data, Response};
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, oneshot};

use super::WittySchema;
use super::error::AppError;
use crate::live::WatchGuard;
use crate::metrics::Metrics;

/// What makes two subscriptions answer the same: the caller's token and the whole operation.
#[derive(Clone, PartialEq, Eq, Hash)]
struct HubKey {
    token: Arc<str>,
    query: String,
    variables: String,
    operation: Option<String>,
    /// The resolver's decision for this caller (costs or not), as of when they subscribed.
    owner: bool,
}

#[derive(Clone)]
enum Frame {
    /// One event's answer, as the JSON of a GraphQL response.
    Next(Arc<str>),
    /// The operation ended (token expiry, lost access): subscribers complete.
    End,
}

/// All hubs of a process.
pub struct Fanout {
    hubs: Mutex<HashMap<HubKey, Weak<Hub>>>,
    /// How many answers a subscriber may fall behind before it is dropped.
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// One shared execution, alive while any subscriber holds it. A lone subscriber runs it on its
/// own connection, as an unshared one would; when a second one joins, it moves to a task of its
/// own that answers them all.
struct Hub {
    state: Arc<Mutex<HubState>>,
    /// The execution while its opener runs it on its own connection. Whoever takes it out (the
    /// opener when it sees someone joined or when it leaves, or a joiner) starts its task.
    execution: Mutex<Option<Execution>>,
    /// Wakes the opener when a joiner took the execution: it then reads through a lane.
    runner: AtomicWaker,
    capacity: usize,
    key: HubKey,
    fanout: Weak<Fanout>,
    /// Dropped with the last subscriber: the execution stops.
    _stop: oneshot::Sender<()>,
}

/// An execution not yet on a task of its own.
struct Execution {
    own: BoxStream<'static, Response>,
    /// An answer it gave that nobody was sent yet.
    first: Option<Option<Response>>,
    stop: oneshot::Receiver<()>,
}

#[derive(Default)]
struct HubState {
    /// Made when a second subscriber joins: from then on the execution runs on a task of its own.
    tx: Option<broadcast::Sender<Frame>>,
    /// The opener's receiver, subscribed with the channel (before anything is sent).
    opener_rx: Option<broadcast::Receiver<Frame>>,
    /// It ended: nobody joins it any more.
    ended: bool,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn execution(&self) -> std::sync::MutexGuard<'_, Option<Execution>> {
        self.execution.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel, if someone joined. If nobody did and `ending`, it ends: nobody joins after.
    fn joined(&self, ending: bool) -> Option<broadcast::Sender<Frame>> {
        let mut state = self.state();
        if state.tx.is_none() && ending {
            state.ended = true;
        }
        state.tx.clone()
    }

    /// Starts the execution's task, if it is still to be started and someone joined.
    fn start(&self, execution: Execution, tx: broadcast::Sender<Frame>) {
        let Execution { own, first, stop } = execution;
        let end = EndOnDrop { tx: tx.clone(), state: self.state.clone() };
        // Panicking (a resolver panicked on the opener's connection): the others end, without it.
        if std::thread::panicking() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(run_hub(own, first, tx, end, stop))),
            // Shutting down: the others end too.
            Err(_) => drop(end),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(fanout) = self.fanout.upgrade() {
            let mut hubs = fanout.hubs.lock().unwrap_or_else(|e| e.into_inner());
            if hubs.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                hubs.remove(&self.key);
            }
        }
    }
}

/// A subscriber's place at a hub, taken by the resolver once the caller's checks have passed.
struct Ticket {
    hub: Arc<Hub>,
    place: Place,
    guard: WatchGuard,
}

enum Place {
    /// It opened the hub: its own execution is the hub's.
    Runs(oneshot::Receiver<()>),
    /// It joined one.
    Joined(broadcast::Receiver<Frame>),
}

/// Put in the data of a subscription a transport can share; the resolver arms it (see
/// `subscriptions::events`) when the subscriber is about to wait for events.
pub struct Arming {
    fanout: Arc<Fanout>,
    key: HubKey,
    ticket: Mutex<Armed>,
}

/// Where an `Arming` stands: a subscriber takes one place, once, before its stream moves on.
#[derive(Default)]
enum Armed {
    #[default]
    Open,
    Ticket(Ticket),
    Closed,
}

impl Arming {
    /// Joins (or opens) the hub for what the resolver decided (`owner`: whether the caller gets
    /// costs), then takes the watch: a subscriber counted as live already hears every event that
    /// follows. Only once, and only before the subscriber's stream moved on; otherwise the watch
    /// is handed back for the execution to keep, as an unshared one does.
    pub fn arm(&self, owner: bool, watch: impl FnOnce() -> WatchGuard) -> Option<WatchGuard> {
        let mut armed = self.ticket.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*armed, Armed::Open) {
            return Some(watch());
        }
        let (hub, place) = self.fanout.attach(&HubKey { owner, ..self.key.clone() });
        let guard = watch();
        *armed = Armed::Ticket(Ticket { hub, place, guard });
        None
    }

    /// The ticket, if the resolver armed; either way no later arming takes a place.
    fn close(&self) -> Option<Ticket> {
        match std::mem::replace(&mut *self.ticket.lock().unwrap_or_else(|e| e.into_inner()), Armed::Closed) {
            Armed::Ticket(ticket) => Some(ticket),
            _ => None,
        }
    }

    fn is_armed(&self) -> bool {
        matches!(*self.ticket.lock().unwrap_or_else(|e| e.into_inner()), Armed::Ticket(_))
    }
}

/// A subscriber's feed from its hub, handed to the transport, which writes each answer as the
/// operation's next message (`id_json` names it). It ends when the operation completes; its end,
/// or a notice when the subscriber fell behind, then comes through the operation's own stream,
/// after every answer.
pub struct Lane {
    /// The operation id as a JSON string.
    pub id_json: Arc<str>,
    state: Arc<LaneState>,
    metrics: Arc<Metrics>,
    rx: Option<broadcast::Receiver<Frame>>,
    /// Waiting for the next answer (the receiver comes back with it).
    waiting: Option<Pin<Box<dyn Future<Output = Received> + Send>>>,
    ended: bool,
    _hub: Arc<Hub>,
    _guard: WatchGuard,
}

type Received = (Result<Frame, broadcast::error::RecvError>, broadcast::Receiver<Frame>);

/// Where a connection takes the lanes of its operations.
pub trait LaneSink: Send + Sync {
    fn add(&self, lane: Lane);
}

/// What an operation's own stream and its lane share.
#[derive(Default)]
struct LaneState {
    /// The operation's stream was dropped (the client completed it, or left).
    removed: AtomicBool,
    /// Wakes the lane when `removed` is set.
    lane_waker: AtomicWaker,
    /// The lane ended, with the notice to send first if any.
    ended: Mutex<Option<Option<Response>>>,
    waker: AtomicWaker,
}

impl LaneState {
    fn finish(&self, notice: Option<Response>) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(notice);
        self.waker.wake();
    }
}

impl Fanout {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Arc<Fanout> {
        Arc::new(Fanout { hubs: Mutex::default(), capacity: capacity.max(16), metrics })
    }

    fn attach(self: &Arc<Self>, key: &HubKey) -> (Arc<Hub>, Place) {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        // An ended hub found here is let go only once the lock is released (its drop takes it).
        let ended = match hubs.get(key).and_then(Weak::upgrade) {
            Some(hub) => {
                let mut state = hub.state();
                if !state.ended {
                    if state.tx.is_none() {
                        let tx = broadcast::channel(hub.capacity).0;
                        state.opener_rx = Some(tx.subscribe());
                        state.tx = Some(tx);
                    }
                    let tx = state.tx.clone().expect("made above");
                    let rx = tx.subscribe();
                    drop(state);
                    drop(hubs);
                    // Still on its opener's connection: it goes to a task of its own now, so this
                    // subscriber never waits on that connection.
                    let execution = hub.execution().take();
                    if let Some(execution) = execution {
                        hub.start(execution, tx);
                        hub.runner.wake();
                    }
                    return (hub, Place::Joined(rx));
                }
                drop(state);
                Some(hub)
            }
            None => None,
        };
        let (stop, feed) = oneshot::channel();
        let hub = Arc::new(Hub {
            state: Arc::default(),
            execution: Mutex::default(),
            runner: AtomicWaker::new(),
            capacity: self.capacity,
            key: key.clone(),
            fanout: Arc::downgrade(self),
            _stop: stop,
        });
        hubs.insert(key.clone(), Arc::downgrade(&hub));
        drop(hubs);
        drop(ended);
        (hub, Place::Runs(feed))
    }

    /// Runs a subscription for operation `id` of a connection. Until the resolver arms, this is the
    /// subscriber's own execution (errors such as a refused access come through it as always);
    /// once armed, answers go through a lane given to `sink`, and the returned stream carries only
    /// the end.
    pub fn execute_stream(
        self: &Arc<Self>,
        schema: &WittySchema,
        request: async_graphql::Request,
        session: Arc<Data>,
        token: &str,
        id: &str,
        sink: Arc<dyn LaneSink>,
    ) -> BoxStream<'static, Response> {
        if !single_subscription_field(&request) {
            return schema.execute_stream_with_session_data(request, session);
        }
        let key = HubKey {
            token: token.into(),
            query: request.query.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
            operation: request.operation_name.clone(),
            owner: false,
        };
        let arming = Arc::new(Arming { fanout: self.clone(), key, ticket: Mutex::default() });
        let own = schema.execute_stream_with_session_data(request.data(arming.clone()), session);
        let id_json = serde_json::to_string(id).unwrap_or_default();
        Box::pin(Shared { phase: Phase::Own { own, arming, sink, id: id_json.into(), metrics: self.metrics.clone() } })
    }
}

/// The stream an operation gives its transport.
struct Shared {
    phase: Phase,
}

enum Phase {
    /// Its own execution, until the resolver arms.
    Own {
        own: BoxStream<'static, Response>,
        arming: Arc<Arming>,
        sink: Arc<dyn LaneSink>,
        id: Arc<str>,
        metrics: Arc<Metrics>,
    },
    /// Never armed: its own execution throughout (a query, or an error at subscribe time).
    Alone(BoxStream<'static, Response>),
    /// Opened a hub nobody else joined: its execution runs here, answers as an unshared one's.
    Runs(Subscriber),
    /// Served by a hub through its lane.
    Lane(Arc<LaneState>),
    Done,
}

impl Shared {
    /// Hands the subscriber to its hub; the hub's creator gives it its own execution (with an
    /// answer it already produced, if any).
    fn join(&mut self, ticket: Ticket, first: Option<Option<Response>>) {
        let Phase::Own { own, sink, id, metrics, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let Ticket { hub, place, guard } = ticket;
        let subscriber = Subscriber { hub, guard, sink, id, metrics };
        self.phase = match place {
            // Runs here until someone joins (a joiner that came already is seen at the first poll).
            Place::Runs(stop) => {
                *subscriber.hub.execution() = Some(Execution { own, first, stop });
                Phase::Runs(subscriber)
            }
            Place::Joined(rx) => Phase::Lane(subscriber.into_lane(rx)),
        };
    }
}

/// A subscriber at a hub: running its execution on its connection (`Phase::Runs`), or on its
/// way to a lane.
struct Subscriber {
    hub: Arc<Hub>,
    guard: WatchGuard,
    sink: Arc<dyn LaneSink>,
    id: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    /// Runs the execution if it is still here. `None`: it went to a task of its own (someone
    /// joined), and this subscriber now reads through a lane like the others.
    fn poll_execution(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<Response>>> {
        self.hub.runner.register(cx.waker());
        let mut slot = self.hub.execution();
        let execution = slot.as_mut()?;
        let polled = match execution.first.take() {
            Some(answer) => Poll::Ready(answer),
            None => execution.own.poll_next_unpin(cx),
        };
        // Checked after polling: an answer to an event that came after someone joined is
        // theirs too, so it goes through the execution's task.
        let ending = matches!(polled, Poll::Ready(None));
        match self.hub.joined(ending) {
            None => Some(polled),
            Some(tx) => {
                let mut execution = slot.take()?;
                drop(slot);
                if let Poll::Ready(answer) = polled {
                    execution.first = Some(answer);
                }
                self.hub.start(execution, tx);
                None
            }
        }
    }

    /// Let go while running it (the client completed or left): anyone who joined keeps it.
    fn let_go(self) {
        let execution = self.hub.execution().take();
        if let (Some(execution), Some(tx)) = (execution, self.hub.joined(true)) {
            self.hub.start(execution, tx);
        }
    }

    /// Gives the transport the subscriber's lane; returns what its own stream watches.
    fn into_lane(self, rx: broadcast::Receiver<Frame>) -> Arc<LaneState> {
        let Subscriber { hub, guard, sink, id, metrics } = self;
        let state = Arc::new(LaneState::default());
        sink.add(Lane {
            id_json: id,
            state: state.clone(),
            metrics,
            rx: Some(rx),
            waiting: None,
            ended: false,
            _hub: hub,
            _guard: guard,
        });
        state
    }
}

impl Stream for Shared {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        let this = &mut *self;
        loop {
            let armed = match &mut this.phase {
                Phase::Own { own, arming, .. } => {
                    let polled = own.poll_next_unpin(cx);
                    let moved_on = matches!(polled, Poll::Ready(_));
                    if !moved_on && !arming.is_armed() {
                        return Poll::Pending;
                    }
                    match (polled, arming.close()) {
                        (polled, Some(ticket)) => (ticket, polled),
                        (polled, None) => {
                            // Never armed (an error at subscribe time): its own execution on.
                            if matches!(polled, Poll::Ready(Some(_)))
                                && let Phase::Own { own, .. } = std::mem::replace(&mut this.phase, Phase::Done)
                            {
                                this.phase = Phase::Alone(own);
                            }
                            return polled;
                        }
                    }
                }
                Phase::Alone(own) => return own.poll_next_unpin(cx),
                Phase::Runs(subscriber) => match subscriber.poll_execution(cx) {
                    Some(polled) => return polled,
                    None => {
                        let Phase::Runs(subscriber) = std::mem::replace(&mut this.phase, Phase::Done) else {
                            unreachable!()
                        };
                        // Its receiver was subscribed with the channel, before anything was sent.
                        let rx = subscriber.hub.state().opener_rx.take();
                        this.phase = match rx {
                            Some(rx) => Phase::Lane(subscriber.into_lane(rx)),
                            None => Phase::Done,
                        };
                        continue;
                    }
                },
                Phase::Lane(state) => {
                    state.waker.register(cx.waker());
                    let ended = state.ended.lock().unwrap_or_else(|e| e.into_inner()).take();
                    return match ended {
                        Some(notice) => {
                            this.phase = Phase::Done;
                            Poll::Ready(notice)
                        }
                        None => Poll::Pending,
                    };
                }
                Phase::Done => return Poll::Ready(None),
            };
            let (ticket, polled) = armed;
            let first = match polled {
                Poll::Ready(first) => Some(first),
                Poll::Pending => None,
            };
            this.join(ticket, first);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Lane(state) => {
                state.removed.store(true, Ordering::SeqCst);
                state.lane_waker.wake();
            }
            Phase::Runs(subscriber) => subscriber.let_go(),
            _ => {}
        }
    }
}

/// A hub's execution: each answer rendered once and sent to every subscriber.
async fn run_hub(
    mut own: BoxStream<'static, Response>,
    first: Option<Option<Response>>,
    tx: broadcast::Sender<Frame>,
    // However it stops (its end, nobody left, a panic in a resolver, or dropped unstarted),
    // subscribers complete and nobody joins it any more.
    _end: EndOnDrop,
    mut stop: oneshot::Receiver<()>,
) {
    let mut next = first;
    loop {
        match next.take() {
            Some(Some(r)) => match serde_json::to_string(&r) {
                Ok(json) => {
                    let _ = tx.send(Frame::Next(json.into()));
                }
                Err(e) => tracing::warn!(error = %e, "a subscription answer could not be rendered; skipped"),
            },
            Some(None) => return,
            None => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            r = own.next() => next = Some(r),
        }
    }
}

struct EndOnDrop {
    tx: broadcast::Sender<Frame>,
    state: Arc<Mutex<HubState>>,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        let _ = self.tx.send(Frame::End);
    }
}

/// Whether the request runs a subscription with a single root field (as the GraphQL spec
/// requires of subscriptions): only such an operation is shared.
fn single_subscription_field(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{OperationType, Selection};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else { return false };
    super::operation(&doc, request.operation_name.as_deref()).is_some_and(|op| {
        let items = &op.node.selection_set.node.items;
        op.node.ty == OperationType::Subscription && items.len() == 1 && matches!(items[0].node, Selection::Field(_))
    })
}

impl Lane {
    /// Adds the answers that are ready (up to `max` in `out`), and says whether the lane is still
    /// open. Pending when nothing came and it is open: the task is woken for the next answer, and
    /// when the operation's stream is dropped.
    pub fn poll_answers(&mut self, cx: &mut Context<'_>, out: &mut Vec<Arc<str>>, max: usize) -> Poll<bool> {
        if self.ended {
            return Poll::Ready(false);
        }
        self.state.lane_waker.register(cx.waker());
        if self.state.removed.load(Ordering::SeqCst) {
            return self.end(None);
        }
        let before = out.len();
        while out.len() < max {
            let received = match (&mut self.waiting, &mut self.rx) {
                (Some(waiting), _) => match waiting.as_mut().poll(cx) {
                    Poll::Ready((received, rx)) => {
                        self.waiting = None;
                        self.rx = Some(rx);
                        received
                    }
                    Poll::Pending => break,
                },
                (None, Some(rx)) => match rx.try_recv() {
                    Ok(frame) => Ok(frame),
                    Err(broadcast::error::TryRecvError::Empty) => {
                        let Some(mut rx) = self.rx.take() else { break };
                        self.waiting = Some(Box::pin(async move { (rx.recv().await, rx) }));
                        continue;
                    }
                    Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                    Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
                },
                (None, None) => break,
            };
            match received {
                Ok(Frame::Next(payload)) => out.push(payload),
                Ok(Frame::End) | Err(broadcast::error::RecvError::Closed) => return self.end(None),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.metrics.lagging_subscribers_dropped.inc();
                    return self.end(Some(lagged(n)));
                }
            }
        }
        if out.len() > before { Poll::Ready(true) } else { Poll::Pending }
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The answers already taken are written first; the end (and its notice) follow through the
    /// operation's own stream.
    fn end(&mut self, notice: Option<Response>) -> Poll<bool> {
        self.ended = true;
        self.waiting = None;
        self.rx = None;
        if !self.state.removed.load(Ordering::SeqCst) {
            self.state.finish(notice);
        }
        Poll::Ready(false)
    }
}

/// The notice a subscriber gets when it fell too far behind.
fn lagged(n: u64) -> Response {
    let mut err = async_graphql::Error::from(AppError::lagged(n)).into_server_error(async_graphql::Pos::default());
    err.locations.clear();
    Response::from_errors(vec![err])
}
