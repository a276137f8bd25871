//! Shared execution of identical subscriptions. Subscribers that send the same operation with the
//! same variables under the same token would each get the same answer to every event, so one
//! execution (a hub) answers for all of them: it runs the operation once per event, renders the
//! payload to JSON once, and hands the text to every subscriber, whose connection only frames it.
//! With 1000 subscribers that is one execution per event instead of 1000. A lone subscriber runs
//! the execution on its own connection, as an unshared one would; a task of its own takes it over
//! when a second subscriber joins, so no subscriber waits on another one's connection.
//!
//! Only the same token (and the same owner/installer decision) shares: a hub never serves a caller
//! anything that caller's own execution would not have produced. Every subscriber is still checked
//! on its own when it subscribes (the resolver runs for each, with the caller's loaders, and must
//! pass its access checks before it joins), holds its own watch of the installation, and is
//! dropped on its own when it falls behind.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use async_graphql::{Data, Response};
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};

use crate::graphql::WittySchema;
use crate::graphql::error::AppError;
use crate::graphql::subscriptions::SharedWatch;
use crate::live::WatchGuard;
use crate::metrics::Metrics;

/// One answer of an operation: as its execution produced it, or already rendered to the JSON of a
/// GraphQL response by a shared execution.
pub(super) enum Answer {
    Response(Box<Response>),
    Rendered(Arc<str>),
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        Answer::Response(Box::new(response))
    }
}

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
pub(crate) struct Fanout {
    hubs: Mutex<HashMap<HubKey, Weak<Hub>>>,
    /// How many answers a subscriber may fall behind before it is dropped.
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// One shared execution, alive while any subscriber holds it.
struct Hub {
    state: Arc<Mutex<HubState>>,
    /// The execution while its opener runs it on its own connection. Whoever takes it out (the
    /// opener when it sees someone joined or when it leaves, or a joiner) starts its task.
    execution: Mutex<Option<Execution>>,
    /// Wakes the opener when a joiner took the execution: it then reads from the channel.
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// The channel, if someone joined. If nobody did and `ending`, it ends: nobody joins after.
    fn joined(&self, ending: bool) -> Option<broadcast::Sender<Frame>> {
        let mut state = lock(&self.state);
        if state.tx.is_none() && ending {
            state.ended = true;
        }
        state.tx.clone()
    }

    /// Starts the execution's task (someone joined).
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
            let mut hubs = lock(&fanout.hubs);
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

/// Put in the data of a subscription that may be shared; the resolver arms it when the subscriber
/// is about to wait for events.
struct Arming {
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

impl SharedWatch for Arming {
    /// Joins (or opens) the hub, then takes the watch: a subscriber counted as live already hears
    /// every event that follows. Only once, and only before the subscriber's stream moved on;
    /// otherwise the watch is handed back for the execution to keep, as an unshared one does.
    fn arm(&self, owner: bool, watch: &dyn Fn() -> WatchGuard) -> Option<WatchGuard> {
        let mut armed = lock(&self.ticket);
        if !matches!(*armed, Armed::Open) {
            return Some(watch());
        }
        let (hub, place) = self.fanout.attach(&HubKey { owner, ..self.key.clone() });
        let guard = watch();
        *armed = Armed::Ticket(Ticket { hub, place, guard });
        None
    }
}

impl Arming {
    /// The ticket, if the resolver armed; either way no later arming takes a place.
    fn close(&self) -> Option<Ticket> {
        match std::mem::replace(&mut *lock(&self.ticket), Armed::Closed) {
            Armed::Ticket(ticket) => Some(ticket),
            _ => None,
        }
    }

    fn is_armed(&self) -> bool {
        matches!(*lock(&self.ticket), Armed::Ticket(_))
    }
}

impl Fanout {
    pub(crate) fn new(capacity: usize, metrics: Arc<Metrics>) -> Arc<Fanout> {
        Arc::new(Fanout { hubs: Mutex::default(), capacity: capacity.max(16), metrics })
    }

    /// Joins the live hub of `key`, or opens one.
    fn attach(self: &Arc<Self>, key: &HubKey) -> (Arc<Hub>, Place) {
        let mut hubs = lock(&self.hubs);
        // An ended hub found here is let go only once the lock is released (its drop takes it).
        let ended = match hubs.get(key).and_then(Weak::upgrade) {
            Some(hub) => match Self::join(&hub) {
                Some((tx, rx)) => {
                    drop(hubs);
                    // Still on its opener's connection: it goes to a task of its own now, so this
                    // subscriber never waits on that connection.
                    let execution = lock(&hub.execution).take();
                    if let Some(execution) = execution {
                        hub.start(execution, tx);
                        hub.runner.wake();
                    }
                    return (hub, Place::Joined(rx));
                }
                None => Some(hub),
            },
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

    /// The hub's channel and a receiver of it, unless the hub ended. The first joiner makes the
    /// channel, with the opener's receiver.
    fn join(hub: &Hub) -> Option<(broadcast::Sender<Frame>, broadcast::Receiver<Frame>)> {
        let mut state = lock(&hub.state);
        if state.ended {
            return None;
        }
        let tx = match &state.tx {
            Some(tx) => tx.clone(),
            None => {
                let tx = broadcast::channel(hub.capacity).0;
                state.opener_rx = Some(tx.subscribe());
                state.tx = Some(tx.clone());
                tx
            }
        };
        let rx = tx.subscribe();
        Some((tx, rx))
    }

    /// Runs an operation of a connection. Until the resolver arms, this is the subscriber's own
    /// execution (errors such as a refused access come through it as always); once armed, its
    /// answers come from the hub.
    pub(super) fn execute_stream(
        self: &Arc<Self>,
        schema: &WittySchema,
        request: async_graphql::Request,
        session: Arc<Data>,
        token: &str,
    ) -> BoxStream<'static, Answer> {
        if !single_subscription_field(&request) {
            return schema.execute_stream_with_session_data(request, session).map(Answer::from).boxed();
        }
        let key = HubKey {
            token: token.into(),
            query: request.query.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
            operation: request.operation_name.clone(),
            owner: false,
        };
        let arming = Arc::new(Arming { fanout: self.clone(), key, ticket: Mutex::default() });
        let shared: Arc<dyn SharedWatch> = arming.clone();
        let own = schema.execute_stream_with_session_data(request.data(shared), session);
        Box::pin(Shared { phase: Phase::Own { own, arming }, metrics: self.metrics.clone() })
    }
}

/// The stream of a subscription that may be shared.
struct Shared {
    phase: Phase,
    metrics: Arc<Metrics>,
}

enum Phase {
    /// Its own execution, until the resolver arms; throughout if it never does (an error at
    /// subscribe time).
    Own {
        own: BoxStream<'static, Response>,
        arming: Arc<Arming>,
    },
    /// Opened a hub nobody else joined: its execution runs here, as an unshared one's.
    Runs(Subscriber),
    /// Served by a hub.
    Reads(BoxStream<'static, Answer>),
    Done,
}

/// A subscriber running its hub's execution on its own connection.
struct Subscriber {
    hub: Arc<Hub>,
    guard: WatchGuard,
}

impl Subscriber {
    /// Runs the execution if it is still here. `None`: it went to a task of its own (someone
    /// joined), and this subscriber now reads from the channel like the others.
    fn poll_execution(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<Response>>> {
        self.hub.runner.register(cx.waker());
        let mut slot = lock(&self.hub.execution);
        let execution = slot.as_mut()?;
        let polled = match execution.first.take() {
            Some(answer) => Poll::Ready(answer),
            None => execution.own.poll_next_unpin(cx),
        };
        // Checked after polling: an answer to an event that came after someone joined is
        // theirs too, so it goes through the execution's task.
        let ending = matches!(polled, Poll::Ready(None));
        let Some(tx) = self.hub.joined(ending) else { return Some(polled) };
        let mut execution = slot.take()?;
        drop(slot);
        if let Poll::Ready(answer) = polled {
            execution.first = Some(answer);
        }
        self.hub.start(execution, tx);
        None
    }
}

impl Drop for Shared {
    /// Let go while running the execution (the client completed or left): anyone who joined keeps
    /// it.
    fn drop(&mut self) {
        if let Phase::Runs(Subscriber { hub, .. }) = &self.phase {
            let execution = lock(&hub.execution).take();
            if let (Some(execution), Some(tx)) = (execution, hub.joined(true)) {
                hub.start(execution, tx);
            }
        }
    }
}

/// A subscriber's answers from its hub's channel, ending with the hub or, when the subscriber fell
/// too far behind, with a notice telling it to subscribe again. Holds the subscriber's place.
fn from_hub(
    rx: broadcast::Receiver<Frame>,
    hub: Arc<Hub>,
    guard: WatchGuard,
    metrics: Arc<Metrics>,
) -> BoxStream<'static, Answer> {
    let place = Some((rx, hub, guard, metrics));
    futures::stream::unfold(place, |place| async move {
        let (mut rx, hub, guard, metrics) = place?;
        match rx.recv().await {
            Ok(Frame::Next(json)) => Some((Answer::Rendered(json), Some((rx, hub, guard, metrics)))),
            Ok(Frame::End) | Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(n)) => {
                metrics.lagging_subscribers_dropped.inc();
                Some((lagged(n).into(), None))
            }
        }
    })
    .boxed()
}

impl Shared {
    /// Hands the armed subscriber to its hub: the opener brings its own execution (with an answer
    /// it already produced, if any).
    fn join(&mut self, ticket: Ticket, first: Option<Option<Response>>) {
        let Phase::Own { own, .. } = std::mem::replace(&mut self.phase, Phase::Done) else { return };
        let Ticket { hub, place, guard } = ticket;
        self.phase = match place {
            // Runs here until someone joins (a joiner that came already is seen at the first poll).
            Place::Runs(stop) => {
                *lock(&hub.execution) = Some(Execution { own, first, stop });
                Phase::Runs(Subscriber { hub, guard })
            }
            Place::Joined(rx) => Phase::Reads(from_hub(rx, hub, guard, self.metrics.clone())),
        };
    }

    /// The opener's execution went to a task of its own: it reads from the channel from now on.
    fn leave_execution(&mut self) {
        let Phase::Runs(subscriber) = std::mem::replace(&mut self.phase, Phase::Done) else { return };
        // Its receiver was subscribed with the channel, before anything was sent.
        let Subscriber { hub, guard } = subscriber;
        let rx = lock(&hub.state).opener_rx.take();
        if let Some(rx) = rx {
            self.phase = Phase::Reads(from_hub(rx, hub, guard, self.metrics.clone()));
        }
    }
}

impl Stream for Shared {
    type Item = Answer;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        let this = &mut *self;
        loop {
            match &mut this.phase {
                Phase::Own { own, arming } => {
                    let polled = own.poll_next_unpin(cx);
                    if polled.is_pending() && !arming.is_armed() {
                        return Poll::Pending;
                    }
                    // Not armed once it moved on: it never will be, and stays its own execution.
                    let Some(ticket) = arming.close() else {
                        return polled.map(|r| r.map(Answer::from));
                    };
                    this.join(ticket, if let Poll::Ready(first) = polled { Some(first) } else { None });
                }
                Phase::Runs(subscriber) => match subscriber.poll_execution(cx) {
                    Some(polled) => return polled.map(|r| r.map(Answer::from)),
                    None => this.leave_execution(),
                },
                Phase::Reads(answers) => return answers.poll_next_unpin(cx),
                Phase::Done => return Poll::Ready(None),
            }
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
            Some(Some(response)) => {
                let _ = tx.send(Frame::Next(super::render(&super::coded(response)).into()));
            }
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
        lock(&self.state).ended = true;
        let _ = self.tx.send(Frame::End);
    }
}

/// Whether the request runs a subscription with a single root field (as the GraphQL spec
/// requires of subscriptions): only such an operation is shared.
fn single_subscription_field(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{OperationType, Selection};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else { return false };
    crate::graphql::operation(&doc, request.operation_name.as_deref()).is_some_and(|op| {
        let items = &op.node.selection_set.node.items;
        op.node.ty == OperationType::Subscription && items.len() == 1 && matches!(items[0].node, Selection::Field(_))
    })
}

/// The notice a subscriber gets when it fell too far behind.
fn lagged(n: u64) -> Response {
    let mut err = async_graphql::Error::from(AppError::lagged(n)).into_server_error(async_graphql::Pos::default());
    err.locations.clear();
    Response::from_errors(vec![err])
}
