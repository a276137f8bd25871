//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` ([`transport`]) and the legacy
//! `graphql-ws` of subscriptions-transport-ws ([`legacy`]). witty-bff runs both protocols itself:
//! it reads the client's messages, keeps each operation under its id, and runs the operation with
//! loaders of its own, or through the shared execution of identical subscriptions ([`fanout`]).
//!
//! This module holds what the protocols share: `connection_init` and its token (a refused one
//! closes with 4403; none within `WITTY_BFF_WS_INIT_TIMEOUT_SECS` closes with 4408), the
//! connection's operations, and the one loop that writes to the client
//! (answers batched, keep-alive pings, a write timeout, the close). A message the WebSocket layer
//! refuses closes with the code RFC 6455 gives it (1009 over [`MAX_MESSAGE_BYTES`], 1007, 1002).
//! A close reason never exceeds what a close frame may carry.

mod fanout;
mod legacy;
mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::{Data, Response};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{AbortHandle, Abortable, BoxStream, SplitSink, SplitStream};
use futures::task::AtomicWaker;
use futures::{SinkExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub(crate) use fanout::Fanout;

use self::fanout::Answer;
use super::HttpState;
use crate::auth::Caller;
use crate::cache::request_loaders;
use crate::graphql::Identity;
use crate::graphql::subscriptions::TokenCheck;
use crate::metrics::{Measured, Transport};

/// The largest message a client may send (a `subscribe` and its variables; documents are small).
pub(super) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Close code when the credentials are refused.
const UNAUTHORIZED_CLOSE: u16 = 4403;
const AUTH_PREFIX: &str = "unauthorized: ";
/// A second `connection_init`: graphql-transport-ws's code, used on the legacy protocol too (it
/// has none of its own).
const TOO_MANY_INITS_CLOSE: u16 = 4429;
const TOO_MANY_INITS: &str = "Too many initialisation requests.";
/// No `connection_init` within `WITTY_BFF_WS_INIT_TIMEOUT_SECS`: graphql-transport-ws's code, used
/// on the legacy protocol too (it has none of its own), after a `connection_error` there.
const INIT_TIMEOUT_CLOSE: u16 = 4408;
const INIT_TIMEOUT: &str = "Connection initialisation timeout";
/// RFC 6455: a close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;
/// At most this many ready answers are written together.
const WRITE_BATCH: usize = 64;
/// After this many batches of answers in a row, the client's messages get a turn.
const FAIR_TURN: usize = 8;
/// A client that takes no data for this long is disconnected (its subscriptions end).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Close code when the server shuts down (RFC 6455: "going away"), and its reason.
const GOING_AWAY_CLOSE: u16 = 1001;
const GOING_AWAY: &str = "the server is shutting down; connect again";
/// How long a client has, at shutdown, to answer our close with its own. Closing the socket with
/// the client's frames unread would reset the connection, and the client could lose our close.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The server's shutdown, as the long-lived answers see it: WebSockets and SSE streams wait for it
/// to say goodbye. Each copy held tells [`ShutdownTrigger::drained`] that someone has not yet.
#[derive(Clone)]
pub(crate) struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// Starts the shutdown that [`Shutdown`]s wait for.
pub(crate) struct ShutdownTrigger(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    pub(crate) fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Completes when the shutdown starts (or its trigger is gone); never without one (`None`:
    /// the router is not served by `run_until_stopped`).
    pub(crate) async fn requested(shutdown: Option<Shutdown>) {
        match shutdown {
            Some(Shutdown(mut rx)) => {
                let _ = rx.wait_for(|stopping| *stopping).await;
            }
            None => std::future::pending().await,
        }
    }
}

impl ShutdownTrigger {
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Completes once every [`Shutdown`] is dropped: every connection said goodbye and ended.
    pub(crate) async fn drained(&self) {
        self.0.closed().await;
    }
}

/// The protocols spoken on `/graphql`, by their `Sec-WebSocket-Protocol` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// `graphql-transport-ws`.
    Transport,
    /// `graphql-ws`, the legacy subscriptions-transport-ws protocol.
    Legacy,
}

impl Protocol {
    /// The first protocol of a `Sec-WebSocket-Protocol` offer that witty-bff speaks.
    pub(super) fn first_offered(offer: &str) -> Option<Protocol> {
        offer.split(',').find_map(|p| match p.trim() {
            p if p.eq_ignore_ascii_case("graphql-transport-ws") => Some(Protocol::Transport),
            p if p.eq_ignore_ascii_case("graphql-ws") => Some(Protocol::Legacy),
            _ => None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Protocol::Transport => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }
}

/// Gives every error of a response its code. Every response sent over WebSocket passes here
/// before it is rendered, so that it is coded as over HTTP.
fn coded(mut response: Response) -> Response {
    crate::graphql::error::with_codes(&mut response);
    response
}

/// A (coded) response as the JSON payload of a protocol message.
fn render(response: &Response) -> String {
    serde_json::to_string(response).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a GraphQL response could not be rendered");
        r#"{"data":null,"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#.to_string()
    })
}

/// The bearer token of a `connection_init` payload: `Authorization`/`authorization` (with or without
/// `Bearer`), `token`, or the same under `headers`.
fn token_of(payload: &Value) -> Option<String> {
    let from = |v: &Value| -> Option<String> {
        for key in ["Authorization", "authorization", "token", "accessToken"] {
            if let Some(s) = v.get(key).and_then(|t| t.as_str()) {
                return Some(if s.to_ascii_lowercase().starts_with("bearer ") {
                    s.to_string()
                } else {
                    format!("Bearer {s}")
                });
            }
        }
        None
    };
    from(payload).or_else(|| payload.get("headers").and_then(from))
}

/// A close reason that fits in a close frame: cut on a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// A client message that breaks its protocol, for the protocol to answer in its own way.
#[derive(Debug, PartialEq)]
enum Violation {
    /// It is not JSON.
    Malformed(String),
    /// Of no type, of a type the protocol does not have, or missing a field; `id` is the
    /// operation it names, if any.
    Unreadable { id: Option<String>, message: String },
}

impl Violation {
    fn message(&self) -> &str {
        match self {
            Violation::Malformed(message) | Violation::Unreadable { message, .. } => message,
        }
    }
}

/// Reads a client message of a protocol whose message types are `types`. The type is checked
/// first, so that a message of the other protocol is refused as such whatever its fields.
fn parse<M: DeserializeOwned>(bytes: &[u8], types: &[&str]) -> Result<M, Violation> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Violation::Malformed(format!("malformed JSON: {e}")))?;
    let id = value.get("id").and_then(Value::as_str).map(str::to_string);
    let message = match value.get("type").and_then(Value::as_str) {
        None => "the message has no type".to_string(),
        Some(kind) if !types.contains(&kind) => format!("unknown message type {kind}"),
        Some(kind) => match M::deserialize(&value) {
            Ok(message) => return Ok(message),
            Err(e) => format!("invalid {kind} message: {e}"),
        },
    };
    Err(Violation::Unreadable { id, message })
}

/// What the connection does after a message was handled.
enum Flow {
    Continue,
    Close(Option<CloseFrame>),
}

impl Flow {
    fn close(code: u16, reason: &str) -> Flow {
        Flow::Close(Some(CloseFrame { code, reason: close_reason(reason).into() }))
    }
}

/// Why `connection_init` was refused.
enum InitRefused {
    /// The connection was initialised already.
    TooMany,
    /// The token was refused; the reason says why.
    Unauthorized(String),
}

/// The caller a connection was acknowledged for, and what its operations get as session data.
struct Session {
    caller: Caller,
    data: Arc<Data>,
}

/// One WebSocket connection: its protocol's state, its operations, and what is to be written.
struct Connection {
    state: HttpState,
    protocol: Protocol,
    /// `connection_init` was read.
    initialised: bool,
    /// Set when the connection is acknowledged.
    session: Option<Session>,
    /// The operations running, by id; aborting one ends it without a `complete`.
    running: HashMap<String, AbortHandle>,
    /// Each polled only when its answers woke it. Not a `SelectAll`: that allocates a task for
    /// every answer of every operation, which the fan-out pays a thousand times per event.
    operations: Vec<Gated<Operation>>,
    /// Where the next look at the operations starts, so that a busy one does not starve the rest.
    turn: usize,
    /// Messages that broke the protocol so far (the legacy protocol answers a few).
    violations: usize,
    /// Messages to write, in order.
    outbox: Vec<Message>,
}

impl Connection {
    fn new(state: HttpState, protocol: Protocol) -> Connection {
        Connection {
            state,
            protocol,
            initialised: false,
            session: None,
            running: HashMap::new(),
            operations: Vec::new(),
            turn: 0,
            violations: 0,
            outbox: Vec::new(),
        }
    }

    fn send(&mut self, message: Value) {
        self.outbox.push(Message::Text(message.to_string().into()));
    }

    fn acknowledged(&self) -> bool {
        self.session.is_some()
    }

    fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// Verifies the token of `connection_init` and acknowledges the connection. Nothing else is
    /// read meanwhile, so no operation starts before the acknowledgement.
    async fn init(&mut self, payload: Option<Value>) -> Result<(), InitRefused> {
        if std::mem::replace(&mut self.initialised, true) {
            return Err(InitRefused::TooMany);
        }
        let header = token_of(&payload.unwrap_or_default());
        let verifier = self.state.verifier.clone();
        let caller = verifier
            .verify_header(header.as_deref())
            .await
            .map_err(|e| InitRefused::Unauthorized(format!("{AUTH_PREFIX}{e}")))?;
        self.state.live.token_seen(&caller);
        let mut data = Data::default();
        data.insert(Identity(Ok(caller.clone())));
        // Subscriptions last while this verifier accepts the token (its leeway included).
        data.insert(TokenCheck(verifier));
        self.session = Some(Session { caller, data: Arc::new(data) });
        self.send(json!({"type": "connection_ack"}));
        Ok(())
    }

    /// Runs operation `id` with loaders of its own, as an HTTP request has: what one operation
    /// read (a membership, a station) is not what the next one sees. An operation running under
    /// the same id ends silently (the callers decide whether that may happen).
    fn start(&mut self, id: String, request: async_graphql::Request) {
        let Some(session) = &self.session else { return };
        let metrics = self.state.live.metrics().clone();
        let operation = crate::metrics::operation_type(&request);
        // Each operation counts against the caller's request limit, as a request over HTTP does.
        if let Some(limited) = self.state.limiter.as_ref().and_then(|l| l.check(Some(&session.caller), None)) {
            metrics.rate_limited.with_label_values(&["websocket"]).inc();
            metrics.observe(Transport::WebSocket, operation, "RATE_LIMITED", Duration::ZERO);
            let refused = Response::from_errors(vec![limited.into_error()]);
            let message = match self.protocol {
                Protocol::Transport => transport::error_message(&id, &refused),
                Protocol::Legacy => legacy::error_message(&id, &refused),
            };
            return self.send(message);
        }
        let loaders = request_loaders(session.caller.clone(), self.state.cache.clone(), None);
        let request = request.data(Arc::new(loaders));
        let answers =
            self.state.fanout.execute_stream(&self.state.schema, request, session.data.clone(), session.caller.token());
        // Counted once, at its first answer: a subscription is one operation however long it runs.
        let answers = Measured::new(answers, outcome_of, metrics, Transport::WebSocket, operation).boxed();
        let (abort, registration) = AbortHandle::new_pair();
        if let Some(replaced) = self.running.insert(id.clone(), abort) {
            replaced.abort();
        }
        let answers = Abortable::new(answers, registration);
        self.operations.push(Gated::new(Operation::new(id, answers)));
    }

    /// Ends operation `id` without a word; whether it was running.
    fn forget(&mut self, id: &str) -> bool {
        self.running.remove(id).inspect(AbortHandle::abort).is_some()
    }

    /// The client ends operation `id`: it is answered with `complete` if it was running.
    fn stop(&mut self, id: &str) {
        if self.forget(id) {
            self.send(json!({"type": "complete", "id": id}));
        }
    }

    /// The server shuts down: every running operation is completed (both protocols call it
    /// `complete`), then the connection closes with 1001.
    fn going_away(&mut self) -> Flow {
        let mut ids: Vec<String> = self.running.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            self.stop(&id);
        }
        Flow::close(GOING_AWAY_CLOSE, GOING_AWAY)
    }

    /// Writes what an operation produced in the protocol's framing.
    fn on_produced(&mut self, produced: Produced) {
        let Produced { id, first, answer, last } = produced;
        if let Some(answer) = answer {
            self.on_answer(&id, first, answer);
        }
        if last && self.forget(&id) {
            self.send(json!({"type": "complete", "id": &*id}));
        }
    }

    fn on_answer(&mut self, id: &str, first: bool, answer: Answer) {
        // Ended by an earlier answer of the same batch (refused): the rest is dropped.
        if !self.is_running(id) {
            return;
        }
        let payload = match answer {
            Answer::Rendered(json) => json,
            Answer::Response(response) => {
                let response = coded(*response);
                if self.protocol == Protocol::Transport && first && transport::refused_before_running(&response) {
                    self.forget(id);
                    return self.send(transport::error_message(id, &response));
                }
                render(&response).into()
            }
        };
        let kind = match self.protocol {
            Protocol::Transport => "next",
            Protocol::Legacy => "data",
        };
        self.outbox.push(next_message(kind, id, &payload));
    }

    /// The answers ready, up to [`WRITE_BATCH`]; pending when there are none. An operation that
    /// ended is dropped; one started later is polled at the next turn.
    fn poll_answers(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Produced>> {
        let mut batch = Vec::new();
        let count = self.operations.len();
        let start = if count == 0 { 0 } else { self.turn % count };
        let mut ended = Vec::new();
        for n in (start..count).chain(0..start) {
            while batch.len() < WRITE_BATCH {
                match self.operations[n].poll_next_unpin(cx) {
                    Poll::Ready(Some(produced)) => batch.push(produced),
                    Poll::Ready(None) => {
                        ended.push(n);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if batch.len() == WRITE_BATCH {
                self.turn = n + 1;
                break;
            }
        }
        ended.sort_unstable();
        for n in ended.into_iter().rev() {
            self.operations.swap_remove(n);
        }
        if batch.is_empty() { Poll::Pending } else { Poll::Ready(batch) }
    }

    /// Handles a message of the client.
    async fn on_message(&mut self, bytes: &[u8]) -> Flow {
        match self.protocol {
            Protocol::Transport => transport::on_message(self, bytes).await,
            Protocol::Legacy => legacy::on_message(self, bytes).await,
        }
    }
}

/// The outcome label of an answer, for the request metrics.
fn outcome_of(answer: &Answer) -> &'static str {
    match answer {
        Answer::Rendered(json) => crate::metrics::rendered_outcome(json),
        Answer::Response(response) => crate::metrics::outcome(response),
    }
}

/// An operation's answer (framed as its next message, the payload written as is).
fn next_message(kind: &str, id: &str, payload: &str) -> Message {
    let id = serde_json::to_string(id).unwrap_or_default();
    let mut text = String::with_capacity(payload.len() + id.len() + 32);
    for part in [r#"{"type":""#, kind, r#"","id":"#, &id, r#","payload":"#, payload, "}"] {
        text.push_str(part);
    }
    Message::Text(text.into())
}

/// What an operation produced: an answer (`first`: its first one), its end (`last`), or both.
struct Produced {
    id: Arc<str>,
    first: bool,
    answer: Option<Answer>,
    last: bool,
}

/// An operation of a connection. Its end is reported once, unless it was aborted: an operation the
/// client completed, or one replaced or refused, ends without a word of its own.
struct Operation {
    id: Arc<str>,
    answers: Abortable<BoxStream<'static, Answer>>,
    /// The answer after the one produced last, read ahead.
    ahead: Option<Answer>,
    answered: bool,
    ended: bool,
}

impl Operation {
    fn new(id: String, answers: Abortable<BoxStream<'static, Answer>>) -> Operation {
        Operation { id: id.into(), answers, ahead: None, answered: false, ended: false }
    }
}

impl Stream for Operation {
    type Item = Produced;

    /// An answer goes out with the operation's end when that is ready too: an operation's last
    /// answer and its `complete` are written together, not apart with other operations' answers
    /// between them.
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Produced>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let id = self.id.clone();
        let answer = match self.ahead.take() {
            Some(answer) => answer,
            None => match futures::ready!(self.answers.poll_next_unpin(cx)) {
                Some(answer) => answer,
                None => {
                    self.ended = true;
                    // Aborted: the connection ended it, and says what it has to.
                    let aborted = self.answers.is_aborted();
                    return Poll::Ready((!aborted).then_some(Produced { id, first: false, answer: None, last: true }));
                }
            },
        };
        let first = !std::mem::replace(&mut self.answered, true);
        let last = match self.answers.poll_next_unpin(cx) {
            Poll::Ready(Some(next)) => {
                self.ahead = Some(next);
                false
            }
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        self.ended = last;
        Poll::Ready(Some(Produced { id, first, answer: Some(answer), last }))
    }
}

/// The client's messages, read only once the socket said there may be some (its waker was
/// called). The loop wakes for every answer it writes; reading the socket at each of those turns
/// would cost a read attempt (and the WebSocket layer's buffer set-up) per answer written.
struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
}

struct Gate {
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl futures::task::ArcWake for Gate {
    fn wake_by_ref(gate: &Arc<Self>) {
        gate.woken.store(true, Ordering::Release);
        gate.waker.wake();
    }
}

impl<S> Gated<S> {
    fn new(inner: S) -> Gated<S> {
        Gated { inner, gate: Arc::new(Gate { woken: AtomicBool::new(true), waker: AtomicWaker::new() }) }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.gate.waker.register(cx.waker());
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let gate = self.gate.clone();
        let waker = futures::task::waker_ref(&gate);
        let polled = self.inner.poll_next_unpin(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // There may be more: look again next time.
            self.gate.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// What the connection's loop does next.
enum Step {
    /// The server shuts down.
    Shutdown,
    /// The client sent no `connection_init` in time.
    InitTimeout,
    KeepAlive,
    Answers(Vec<Produced>),
    Input(Option<Result<Message, axum::Error>>),
}

/// Serves one upgraded connection until the client leaves, a close is called for or the server
/// shuts down.
pub(super) async fn serve(state: HttpState, socket: WebSocket, protocol: Protocol, shutdown: Option<Shutdown>) {
    let _open = crate::metrics::Open::new(&state.live.metrics().websocket_connections);
    let (mut sink, input) = socket.split();
    let mut input = Gated::new(input);
    let shutdown = Shutdown::requested(shutdown);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut going_away = false;
    let mut keepalive = tokio::time::interval(state.ws_keepalive.max(Duration::from_secs(1)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let init_deadline = tokio::time::sleep(state.ws_init_timeout);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let mut conn = Connection::new(state, protocol);
    let mut streak = 0;
    loop {
        let step = tokio::select! {
            biased;
            () = shutdown.as_mut(), if !going_away => Step::Shutdown,
            step = next_step(&mut conn, &mut input, &mut keepalive, init_deadline.as_mut(), streak >= FAIR_TURN) => step,
        };
        streak = if matches!(step, Step::Answers(_)) { streak + 1 } else { 0 };
        let flow = match step {
            Step::Shutdown => {
                going_away = true;
                conn.going_away()
            }
            Step::InitTimeout => {
                if protocol == Protocol::Legacy {
                    conn.send(legacy::connection_error(INIT_TIMEOUT));
                }
                Flow::close(INIT_TIMEOUT_CLOSE, INIT_TIMEOUT)
            }
            Step::KeepAlive => {
                conn.outbox.push(Message::Ping(Vec::new().into()));
                if protocol == Protocol::Legacy {
                    conn.send(json!({"type": "ka"}));
                }
                Flow::Continue
            }
            Step::Answers(batch) => {
                batch.into_iter().for_each(|produced| conn.on_produced(produced));
                Flow::Continue
            }
            Step::Input(None) => Flow::Close(None),
            Step::Input(Some(Err(e))) => read_failed(&e),
            Step::Input(Some(Ok(Message::Text(text)))) => conn.on_message(text.as_bytes()).await,
            Step::Input(Some(Ok(Message::Binary(bytes)))) => conn.on_message(&bytes).await,
            // Pings are answered by the WebSocket layer; a close is followed by the input's end.
            Step::Input(Some(Ok(_))) => Flow::Continue,
        };
        let out = std::mem::take(&mut conn.outbox);
        if !write(&mut sink, out, flow).await {
            break;
        }
    }
    if going_away {
        // The client's close (or its leaving) ends the handshake; what comes before is dropped.
        let answered = async {
            while let Some(Ok(message)) = input.inner.next().await
                && !matches!(message, Message::Close(_))
            {}
        };
        let _ = tokio::time::timeout(CLOSE_ANSWER_WAIT, answered).await;
    }
}

/// The next thing to do. The answers come before the client's messages (they are most of the
/// traffic); with `input_first` (after a run of answers), the client's messages get a turn.
async fn next_step(
    conn: &mut Connection,
    input: &mut Gated<SplitStream<WebSocket>>,
    keepalive: &mut tokio::time::Interval,
    init_deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    input_first: bool,
) -> Step {
    if input_first && let Poll::Ready(message) = futures::poll!(input.next()) {
        return Step::Input(message);
    }
    // Once `connection_init` was read (even while its token is verified), the deadline is over.
    let awaiting_init = !conn.initialised;
    tokio::select! {
        biased;
        () = init_deadline, if awaiting_init => Step::InitTimeout,
        // Rare, so first: a busy connection still sends its keep-alives.
        _ = keepalive.tick() => Step::KeepAlive,
        batch = std::future::poll_fn(|cx| conn.poll_answers(cx)) => Step::Answers(batch),
        message = input.next() => Step::Input(message),
    }
}

/// Writes `out` in one flush, then the close `flow` calls for; whether the connection goes on.
async fn write(sink: &mut SplitSink<WebSocket, Message>, out: Vec<Message>, flow: Flow) -> bool {
    let write = async {
        for message in out {
            sink.feed(message).await?;
        }
        match flow {
            Flow::Continue => sink.flush().await.map(|()| true),
            Flow::Close(frame) => sink.send(Message::Close(frame)).await.map(|()| false),
        }
    };
    // Most writes complete at once; only one that waits on the client is timed.
    let mut write = std::pin::pin!(write);
    let written = match futures::poll!(write.as_mut()) {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, write).await,
    };
    match written {
        Ok(Ok(go_on)) => go_on,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!("a WebSocket client took no data in time; disconnecting it");
            false
        }
    }
}

/// The WebSocket layer could not read a message: the connection closes with the code RFC 6455
/// gives the cause. axum hides the error's type (tungstenite's); its text names the cause.
fn read_failed(e: &axum::Error) -> Flow {
    let text = e.to_string();
    tracing::debug!(error = %text, "a WebSocket message could not be read; closing");
    if text.starts_with("Space limit exceeded") {
        Flow::close(1009, &format!("message over the {} MiB limit", MAX_MESSAGE_BYTES >> 20))
    } else if text.starts_with("UTF-8 encoding error") {
        Flow::close(1007, "text message not valid UTF-8")
    } else {
        Flow::close(1002, "WebSocket protocol error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame_and_stay_utf8() {
        assert_eq!(close_reason("short"), "short");
        let long = format!("unknown message type {}", "é".repeat(100));
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1, "{}", cut.len());
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn the_first_protocol_offered_that_is_spoken_is_chosen() {
        assert_eq!(Protocol::first_offered("graphql-ws, graphql-transport-ws"), Some(Protocol::Legacy));
        assert_eq!(Protocol::first_offered("foo, GRAPHQL-TRANSPORT-WS"), Some(Protocol::Transport));
        assert_eq!(Protocol::first_offered("foo"), None);
    }

    #[test]
    fn a_message_that_is_not_json_or_of_no_type_is_refused_saying_so() {
        let types = ["ping"];
        assert!(
            matches!(parse::<Value>(b"{oops", &types), Err(Violation::Malformed(m)) if m.starts_with("malformed JSON"))
        );
        let refused = parse::<Value>(br#"{"id":"3","type":7}"#, &types);
        let expected = Violation::Unreadable { id: Some("3".into()), message: "the message has no type".into() };
        assert_eq!(refused, Err(expected));
    }

    #[test]
    fn an_answer_is_framed_with_its_id_escaped_and_its_payload_as_is() {
        let Message::Text(text) = next_message("next", "a\"b", r#"{"data":{"x":1}}"#) else { panic!() };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"type": "next", "id": "a\"b", "payload": {"data": {"x": 1}}}));
    }
}
