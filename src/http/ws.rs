//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` and the legacy `graphql-ws`
//! (subscriptions-transport-ws). The token comes in the `connection_init` payload; a bad one
//! closes the connection with 4403 (graphql-transport-ws; the legacy protocol gets a
//! `connection_error` first). Keep-alive: WebSocket pings, and `ka` messages on the legacy protocol.
//!
//! A client that breaks the protocol hears what its protocol says: on graphql-transport-ws the
//! connection closes with 4400 (a message that is not JSON, of an unknown type, the other
//! protocol's `start`/`stop` among them, or missing a field), 4401 (`subscribe` before the
//! connection was acknowledged) or 4409 (an operation id already in use), with a short reason; on
//! the legacy protocol it gets `connection_error` (not JSON) or `error` (anything else, the other
//! protocol's `subscribe`/`complete` among them), in the order of the messages it answers, and the
//! connection stays open. On both, a second `connection_init` closes with 4429, a refused token
//! with 4403, a message over [`MAX_MESSAGE_BYTES`] with 1009. A close reason never exceeds what a
//! close frame may carry.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_graphql::http::{ClientMessage, WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{SinkExt, StreamExt};

use super::HttpState;
use crate::auth::Caller;
use crate::cache::{SharedCache, request_loaders};
use crate::graphql::fanout::{Fanout, Lane, LaneSink};
use crate::graphql::subscriptions::TokenCheck;
use crate::graphql::{Identity, WittySchema};

/// Close code when the credentials are refused.
pub const UNAUTHORIZED_CLOSE: u16 = 4403;
/// The largest message a client may send (a `subscribe` and its variables; documents are small).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// RFC 6455 close codes for a message the WebSocket layer refused: too big, text not UTF-8, any
/// other breach of the WebSocket protocol.
const TOO_BIG_CLOSE: u16 = 1009;
const NOT_UTF8_CLOSE: u16 = 1007;
const PROTOCOL_ERROR_CLOSE: u16 = 1002;
/// A second `connection_init` (graphql-transport-ws's code; the legacy protocol has none).
const TOO_MANY_INITS_CLOSE: u16 = 4429;
const TOO_MANY_INITS: &str = "Too many initialisation requests.";
/// The message types of each protocol (async-graphql reads either protocol's names on both).
const TRANSPORT_TYPES: [&str; 5] = ["connection_init", "subscribe", "complete", "ping", "pong"];
const LEGACY_TYPES: [&str; 4] = ["connection_init", "start", "stop", "connection_terminate"];
/// graphql-transport-ws close codes: a message the server cannot read, an operation before the
/// connection was acknowledged, an operation id already in use.
const BAD_REQUEST_CLOSE: u16 = 4400;
const NOT_ACKNOWLEDGED_CLOSE: u16 = 4401;
const DUPLICATE_ID_CLOSE: u16 = 4409;
/// RFC 6455: a close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;
/// A legacy-protocol client is answered this many messages that break the protocol; the next one
/// closes the connection (1008, policy violation): answers to a flood would pile up in memory.
const MAX_VIOLATIONS: usize = 32;
const POLICY_CLOSE: u16 = 1008;
const AUTH_PREFIX: &str = "unauthorized: ";
/// At most this many ready messages are written together.
const WRITE_BATCH: usize = 64;
/// After this many batches of shared answers in a row, the protocol's messages get a turn.
const FAIR_TURN: usize = 8;
/// A client that takes no data for this long is disconnected (its subscriptions end).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bearer token of a `connection_init` payload: `Authorization`/`authorization` (with or without
/// `Bearer`), `token`, or the same under `headers`.
fn token_of(payload: &serde_json::Value) -> Option<String> {
    let from = |v: &serde_json::Value| -> Option<String> {
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

/// Runs each operation of a connection with loaders of its own, as an HTTP request has: what one
/// operation read (a membership, a station) is not what the next one sees. Subscriptions go
/// through the shared executions of `Fanout`, their answers through the connection's lanes.
#[derive(Clone)]
struct PerOperation {
    schema: WittySchema,
    cache: SharedCache,
    fanout: Arc<Fanout>,
    lanes: Arc<Lanes>,
    /// The id of the `subscribe` (`start`) message being handled.
    subscribing: Arc<Mutex<Option<String>>>,
}

impl PerOperation {
    fn caller(session: Option<&Data>) -> Option<&Caller> {
        match session?.get(&std::any::TypeId::of::<Identity>())?.downcast_ref::<Identity>()? {
            Identity(Ok(caller)) => Some(caller),
            _ => None,
        }
    }

    fn with_loaders(&self, request: async_graphql::Request, session: Option<&Data>) -> async_graphql::Request {
        match Self::caller(session) {
            Some(caller) => request.data(Arc::new(request_loaders(caller.clone(), self.cache.clone()))),
            None => request,
        }
    }
}

impl Executor for PerOperation {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        let mut response = self.schema.execute(request).await;
        crate::graphql::error::with_codes(&mut response);
        response
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        let request = self.with_loaders(request, session_data.as_deref());
        let id = self.subscribing.lock().unwrap_or_else(|e| e.into_inner()).take();
        let token = Self::caller(session_data.as_deref()).map(|c| c.token().to_string());
        let stream = match (id, token, session_data) {
            (Some(id), Some(token), Some(session)) => {
                self.fanout.execute_stream(&self.schema, request, session, &token, &id, self.lanes.clone())
            }
            (_, _, session) => self.schema.execute_stream_with_session_data(request, session.unwrap_or_default()),
        };
        // Errors get their codes as over HTTP (answers shared through lanes come with theirs).
        stream
            .map(|mut r| {
                crate::graphql::error::with_codes(&mut r);
                r
            })
            .boxed()
    }
}

/// The lanes of a connection's shared subscriptions, handed to its loop. Polled at every turn of
/// the loop, so a flag checked first keeps that cheap.
#[derive(Default)]
struct Lanes {
    new: Mutex<Vec<Lane>>,
    added: AtomicBool,
    waker: AtomicWaker,
}

impl LaneSink for Lanes {
    fn add(&self, lane: Lane) {
        self.new.lock().unwrap_or_else(|e| e.into_inner()).push(lane);
        self.added.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl Lanes {
    fn poll_new(&self, cx: &mut std::task::Context<'_>) -> Poll<Vec<Lane>> {
        if !self.added.swap(false, Ordering::AcqRel) {
            self.waker.register(cx.waker());
            if !self.added.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
        }
        Poll::Ready(std::mem::take(&mut *self.new.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

/// A stream polled only after it asked to be (its waker was called): the protocol handler is not
/// run again each time the connection writes shared answers.
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

impl<S: futures::Stream + Unpin> futures::Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<S::Item>> {
        self.gate.waker.register(cx.waker());
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let gate = self.gate.clone();
        let waker = futures::task::waker_ref(&gate);
        let polled = self.inner.poll_next_unpin(&mut std::task::Context::from_waker(&waker));
        if polled.is_ready() {
            // There may be more: look again next time.
            self.gate.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// A close reason that fits in a close frame: cut on a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// What the client's messages must respect, checked before the protocol handler reads them (it
/// would close with 1002 and serde's whole error as the reason, too long for a close frame, run a
/// `subscribe` before `connection_init`, let a second `subscribe` replace the first, and run
/// either protocol's `subscribe`/`start` on both). Shared by the reader, inside the protocol
/// handler, and the connection's loop.
struct Conduct {
    legacy: bool,
    state: Mutex<ConductState>,
    /// There are notices: checked before the lock, as notices are looked for at every message the
    /// protocol handler produces.
    noticed: AtomicBool,
}

#[derive(Default)]
struct ConductState {
    /// `connection_init` was read.
    initialising: bool,
    /// The connection was acknowledged.
    acked: bool,
    /// graphql-transport-ws: the ids of the operations running.
    running: HashSet<String>,
    /// graphql-transport-ws: operations that got a message already.
    answered: HashSet<String>,
    /// graphql-transport-ws: operations refused with an `error` message, whose `complete` is not
    /// sent (the protocol ends an operation with one or the other).
    errored: HashSet<String>,
    /// The close the connection ends with: a violation on graphql-transport-ws, too many on the
    /// legacy protocol, a second `connection_init`, a refused token, a message the WebSocket
    /// layer refused.
    close: Option<(u16, String)>,
    /// The legacy protocol: messages that answer a violation.
    notices: Vec<String>,
    /// Messages that broke the protocol so far (legacy protocol: each was answered).
    violations: usize,
}

/// The `type` of a client message, as sent.
#[derive(serde::Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl Conduct {
    fn new(legacy: bool) -> Conduct {
        Conduct { legacy, state: Mutex::default(), noticed: AtomicBool::new(false) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConductState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The message types of the connection's protocol.
    fn types(&self) -> &'static [&'static str] {
        if self.legacy { &LEGACY_TYPES } else { &TRANSPORT_TYPES }
    }

    /// A client message read: passed on to the protocol handler, or the violation it is.
    fn read(&self, bytes: &[u8]) -> Option<serde_json::Result<ClientMessage>> {
        let message = match ClientMessage::from_bytes(bytes) {
            Ok(message) => message,
            Err(e) => return self.refuse(Violation::unreadable(bytes, &e, self.types())),
        };
        // async-graphql reads `subscribe` as `start` and `complete` as `stop`, and both protocols'
        // other types on either: a type is checked as sent.
        let foreign = match &message {
            ClientMessage::ConnectionInit { .. } => None,
            ClientMessage::ConnectionTerminate if !self.legacy => Some(Cow::Borrowed("connection_terminate")),
            ClientMessage::Ping { .. } if self.legacy => Some(Cow::Borrowed("ping")),
            ClientMessage::Pong { .. } if self.legacy => Some(Cow::Borrowed("pong")),
            ClientMessage::Start { .. } | ClientMessage::Stop { .. } => match serde_json::from_slice::<Kind>(bytes) {
                Ok(Kind { kind }) if self.types().contains(&kind.as_ref()) => None,
                Ok(Kind { kind }) => Some(kind),
                Err(e) => return self.refuse(Violation::unreadable(bytes, &e, self.types())),
            },
            _ => None,
        };
        if let Some(kind) = foreign {
            // The operation it names, if any (rare: read again).
            let value = serde_json::from_slice::<serde_json::Value>(bytes).unwrap_or_default();
            return self.refuse(Violation::unknown_type(&kind, value.get("id").and_then(|i| i.as_str())));
        }
        let mut state = self.state();
        match &message {
            // The handler answers a second one and closes; with the code graphql-transport-ws
            // gives it on the legacy protocol too (which has none of its own).
            ClientMessage::ConnectionInit { .. } if state.initialising => {
                state.close = Some((TOO_MANY_INITS_CLOSE, close_reason(TOO_MANY_INITS)));
            }
            ClientMessage::ConnectionInit { .. } => state.initialising = true,
            ClientMessage::Start { id, .. } if !state.acked => {
                drop(state);
                return self.refuse(Violation::not_acknowledged(id));
            }
            // The legacy protocol replaces an operation started again with the same id, as its
            // reference server (subscriptions-transport-ws) does: the first one ends silently.
            ClientMessage::Start { id, .. } if !self.legacy && !state.running.insert(id.clone()) => {
                drop(state);
                return self.refuse(Violation::duplicate(id));
            }
            // A new operation under an id used before: nothing of the old one's is left for it.
            ClientMessage::Start { id, .. } if !self.legacy => {
                state.answered.remove(id);
                state.errored.remove(id);
            }
            ClientMessage::Stop { id } => {
                state.running.remove(id);
            }
            _ => {}
        }
        Some(Ok(message))
    }

    /// The WebSocket layer could not read a message: the connection closes with the code RFC 6455
    /// gives the cause. axum hides the error's type (tungstenite's); its text names the cause.
    fn read_failed(&self, e: &axum::Error) {
        let text = e.to_string();
        tracing::debug!(error = %text, "a WebSocket message could not be read; closing");
        let close = if text.starts_with("Space limit exceeded") {
            (TOO_BIG_CLOSE, format!("message over the {} MiB limit", MAX_MESSAGE_BYTES >> 20))
        } else if text.starts_with("UTF-8 encoding error") {
            (NOT_UTF8_CLOSE, "text message not valid UTF-8".to_string())
        } else {
            (PROTOCOL_ERROR_CLOSE, "WebSocket protocol error".to_string())
        };
        self.state().close.get_or_insert(close);
    }

    /// The token of `connection_init` was refused: the handler answers (graphql-transport-ws:
    /// closes with `reason`, legacy: `connection_error`) and ends; the close is 4403.
    fn refused(&self, reason: &str) {
        let reason = if self.legacy { "unauthorized" } else { reason };
        self.state().close = Some((UNAUTHORIZED_CLOSE, close_reason(reason)));
    }

    /// On graphql-transport-ws a violation is passed on as an error, which makes the handler close
    /// the connection (with the code and reason kept here); on the legacy protocol it is answered
    /// (`connection_error` for what is not JSON, `error` for the rest) and dropped.
    fn refuse(&self, violation: Violation) -> Option<serde_json::Result<ClientMessage>> {
        let Violation { close: (code, reason), id, message, malformed } = violation;
        if !self.legacy {
            let reason = close_reason(&reason);
            self.state().close = Some((code, reason.clone()));
            return Some(Err(<serde_json::Error as serde::de::Error>::custom(reason)));
        }
        let mut state = self.state();
        state.violations += 1;
        if state.violations > MAX_VIOLATIONS {
            let reason = close_reason("too many messages that break the protocol");
            state.close = Some((POLICY_CLOSE, reason.clone()));
            return Some(Err(<serde_json::Error as serde::de::Error>::custom(reason)));
        }
        let payload = serde_json::json!({ "message": message });
        let notice = match (malformed, id) {
            (true, _) => serde_json::json!({"type": "connection_error", "payload": payload}),
            (false, Some(id)) => serde_json::json!({"type": "error", "id": id, "payload": payload}),
            (false, None) => serde_json::json!({"type": "error", "payload": payload}),
        };
        state.notices.push(notice.to_string());
        self.noticed.store(true, Ordering::Release);
        None
    }

    /// The connection was acknowledged.
    fn acked(&self) {
        self.state().acked = true;
    }

    /// The protocol handler produced `message`: passed on, changed or dropped. A `complete` frees
    /// its operation's id again, right when it is produced: the handler reads the client's next
    /// messages only after, so the ids follow the messages' order (a `complete` answering the
    /// client's own, then a `subscribe` with the same id, leave that new operation running).
    /// Freed when written instead, it would free the new operation's id, read in the meantime.
    /// On graphql-transport-ws, an operation refused before it ran (its first message has errors
    /// without a path and no data: the document or its variables are wrong) gets an `error`
    /// message instead of `next` and `complete`, as the protocol says; async-graphql sends those.
    fn produced(&self, message: WsMessage) -> Option<WsMessage> {
        let WsMessage::Text(text) = &message else { return Some(message) };
        if self.legacy {
            return Some(message);
        }
        if let Some((id, _)) = operation_of(text, r#"{"type":"complete","id":"#) {
            let mut state = self.state();
            state.running.remove(&id);
            state.answered.remove(&id);
            return (!state.errored.remove(&id)).then_some(message);
        }
        let Some((id, rest)) = operation_of(text, r#"{"type":"next","id":"#) else { return Some(message) };
        let mut state = self.state();
        if state.answered.contains(&id) {
            return Some(message);
        }
        state.answered.insert(id.clone());
        // A refusal has no data: anything else is passed on unread (async-graphql writes `data`
        // first).
        if !rest.starts_with(r#","payload":{"data":null"#) {
            return Some(message);
        }
        #[derive(serde::Deserialize)]
        struct Next {
            payload: serde_json::Value,
        }
        let refused = serde_json::from_str::<Next>(text).ok().and_then(|Next { payload }| {
            // (Its data is null: see above.)
            let errors = payload.get("errors")?.as_array()?;
            let before_running = !errors.is_empty() && errors.iter().all(|e| e.get("path").is_none());
            before_running.then(|| errors.clone())
        });
        match refused {
            Some(errors) => {
                // The operation is over: its id may be used again at once.
                state.running.remove(&id);
                state.errored.insert(id.clone());
                let error = serde_json::json!({"type": "error", "id": id, "payload": errors});
                Some(WsMessage::Text(error.to_string()))
            }
            None => Some(message),
        }
    }

    /// The operation (its id as JSON) is answered through a lane.
    fn answered(&self, id_json: &str) {
        if self.legacy {
            return;
        }
        if let Ok(id) = serde_json::from_str::<String>(id_json) {
            self.state().answered.insert(id);
        }
    }

    /// The close a violation called for, if any.
    fn take_close(&self) -> Option<(u16, String)> {
        self.state().close.take()
    }

    /// The legacy protocol's notices so far (graphql-transport-ws never has any, and a flag
    /// checked first keeps the lock for when there are).
    fn take_notices(&self) -> Vec<String> {
        if !self.noticed.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.state().notices)
    }
}

/// The protocol handler's messages with the legacy protocol's notices in their place. The client's
/// messages are read only while the handler is polled, so the notices a poll leaves were read
/// during it: before the message that made the handler answer (a `connection_init` read after
/// garbage is acknowledged after the garbage's `connection_error`).
struct WithNotices<S> {
    inner: S,
    conduct: Arc<Conduct>,
    queue: VecDeque<WsMessage>,
    ended: bool,
}

impl<S: futures::Stream<Item = WsMessage> + Unpin> futures::Stream for WithNotices<S> {
    type Item = WsMessage;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<WsMessage>> {
        let this = &mut *self;
        if let Some(message) = this.queue.pop_front() {
            return Poll::Ready(Some(message));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = this.inner.poll_next_unpin(cx);
        let notices = this.conduct.take_notices();
        if notices.is_empty() {
            return polled;
        }
        this.queue.extend(notices.into_iter().map(WsMessage::Text));
        match polled {
            Poll::Ready(Some(message)) => this.queue.push_back(message),
            Poll::Ready(None) => this.ended = true,
            Poll::Pending => {}
        }
        Poll::Ready(this.queue.pop_front())
    }
}

/// A client message that breaks the protocol.
struct Violation {
    /// What graphql-transport-ws closes with.
    close: (u16, String),
    /// The operation it names, if any.
    id: Option<String>,
    /// What the legacy protocol's notice says.
    message: String,
    /// It is not JSON at all.
    malformed: bool,
}

impl Violation {
    fn not_acknowledged(id: &str) -> Violation {
        Violation {
            close: (NOT_ACKNOWLEDGED_CLOSE, "Unauthorized".into()),
            id: Some(id.to_string()),
            message: "Unauthorized: send connection_init and wait for connection_ack first".into(),
            malformed: false,
        }
    }

    fn duplicate(id: &str) -> Violation {
        let message = format!("Subscriber for {id} already exists");
        Violation { close: (DUPLICATE_ID_CLOSE, message.clone()), id: Some(id.to_string()), message, malformed: false }
    }

    fn unknown_type(kind: &str, id: Option<&str>) -> Violation {
        let message = format!("unknown message type {kind}");
        Violation { close: (BAD_REQUEST_CLOSE, message.clone()), id: id.map(str::to_string), message, malformed: false }
    }

    /// A message the protocol handler cannot read: not JSON, of no or an unknown type (`types`
    /// are the protocol's), or missing a field.
    fn unreadable(bytes: &[u8], e: &serde_json::Error, types: &[&str]) -> Violation {
        let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => value,
            Err(_) => {
                let message = format!("malformed JSON: {e}");
                return Violation { close: (BAD_REQUEST_CLOSE, message.clone()), id: None, message, malformed: true };
            }
        };
        let id = value.get("id").and_then(|i| i.as_str());
        let message = match value.get("type").and_then(|t| t.as_str()) {
            None => "the message has no type".to_string(),
            Some(kind) if !types.contains(&kind) => return Violation::unknown_type(kind, id),
            Some(kind) => format!("invalid {kind} message: {e}"),
        };
        Violation { close: (BAD_REQUEST_CLOSE, message.clone()), id: id.map(str::to_string), message, malformed: false }
    }
}

/// The operation id of a message of the protocol handler that starts with `prefix` (the type, then
/// the id: the order async-graphql writes them in), and what follows the id; `None` for another
/// message.
fn operation_of<'a>(text: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let rest = text.strip_prefix(prefix)?;
    let mut ids = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let id = ids.next()?.ok()?;
    Some((id, &rest[ids.byte_offset()..]))
}

/// A shared answer, framed as the operation's next message.
fn lane_frame(id_json: &str, payload: &str, legacy: bool) -> Message {
    let kind = if legacy { r#"{"type":"data","id":"# } else { r#"{"type":"next","id":"# };
    let mut text = String::with_capacity(kind.len() + id_json.len() + payload.len() + 12);
    text.push_str(kind);
    text.push_str(id_json);
    text.push_str(r#","payload":"#);
    text.push_str(payload);
    text.push('}');
    Message::Text(text.into())
}

/// The connection's shared subscriptions.
#[derive(Default)]
struct OpenLanes {
    lanes: Vec<Lane>,
    /// Where the next poll starts, so no lane is always last.
    next: usize,
}

impl OpenLanes {
    /// The frames of the answers ready, up to `WRITE_BATCH`.
    fn poll_frames(&mut self, cx: &mut std::task::Context<'_>, legacy: bool) -> Poll<Vec<Message>> {
        let (mut frames, mut answers) = (Vec::new(), Vec::new());
        let count = self.lanes.len();
        for k in 0..count {
            let lane = &mut self.lanes[(self.next + k) % count];
            let _ = lane.poll_answers(cx, &mut answers, WRITE_BATCH - frames.len());
            frames.extend(answers.drain(..).map(|payload| lane_frame(&lane.id_json, &payload, legacy)));
            if frames.len() >= WRITE_BATCH {
                break;
            }
        }
        self.next = self.next.wrapping_add(1);
        self.lanes.retain(|l| !l.is_ended());
        if frames.is_empty() { Poll::Pending } else { Poll::Ready(frames) }
    }
}

pub async fn serve(state: HttpState, socket: WebSocket, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let conduct = Arc::new(Conduct::new(legacy));
    let subscribing = Arc::new(Mutex::new(None));
    let (seen, reader, failed) = (subscribing.clone(), conduct.clone(), conduct.clone());
    // A message the WebSocket layer could not read (over the size limit, say) ends the input:
    // the handler ends, and the connection closes as `Conduct::read_failed` says.
    let input = stream
        .take_while(move |m| {
            if let Err(e) = m {
                failed.read_failed(e);
            }
            futures::future::ready(m.is_ok())
        })
        .filter_map(move |m| {
            let message = match m {
                Ok(Message::Text(t)) => reader.read(t.as_bytes()),
                Ok(Message::Binary(b)) => reader.read(&b),
                _ => None,
            };
            // The protocol handler runs a `subscribe` as soon as it reads it: its id is the one
            // seen last.
            if let Some(Ok(ClientMessage::Start { id, .. })) = &message {
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
            }
            futures::future::ready(message)
        });
    let verifier = state.verifier.clone();
    let live = state.live.clone();
    let lanes = Arc::new(Lanes::default());
    let executor = PerOperation {
        schema: state.schema.clone(),
        cache: state.cache.clone(),
        fanout: state.fanout.clone(),
        lanes: lanes.clone(),
        subscribing,
    };
    let initialised = conduct.clone();
    let gql =
        GqlWebSocket::from_message_stream(executor, input, protocol).on_connection_init(move |payload| async move {
            let header = token_of(&payload);
            let caller = verifier.verify_header(header.as_deref()).await.map_err(|e| {
                let reason = format!("{AUTH_PREFIX}{e}");
                initialised.refused(&reason);
                async_graphql::Error::new(reason)
            })?;
            live.token_seen(&caller);
            let mut data = Data::default();
            data.insert(Identity(Ok(caller)));
            // Subscriptions last while this verifier accepts the token (its leeway included).
            data.insert(TokenCheck(verifier));
            // The handler reads nothing more until it has sent `connection_ack`.
            initialised.acked();
            Ok(data)
        });
    let mut shared = OpenLanes::default();
    // Messages that are ready together (a burst of events) go out in one write.
    // A `complete` frees its id as the handler produces it, before the handler reads on (see
    // `Conduct::produced`), not when the batch it joins is written.
    let produced = conduct.clone();
    let gql = gql.filter_map(move |message| futures::future::ready(produced.produced(message)));
    let gql = WithNotices { inner: Box::pin(gql), conduct: conduct.clone(), queue: VecDeque::new(), ended: false };
    let mut gql = Gated::new(Box::pin(gql.ready_chunks(WRITE_BATCH)));
    let mut keepalive = tokio::time::interval(state.ws_keepalive.max(Duration::from_secs(1)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    // Shared answers come before the protocol's messages (they are most of the traffic); those
    // still get a turn after every few batches.
    let mut streak = 0;
    loop {
        let fair_turn = match streak >= FAIR_TURN {
            true => match futures::poll!(gql.next()) {
                Poll::Ready(out) => Some(Step::Protocol(out)),
                Poll::Pending => None,
            },
            false => None,
        };
        let step = match fair_turn {
            Some(step) => step,
            None => tokio::select! {
                biased;
                // Rare, so first: a busy connection still sends its keep-alives.
                _ = keepalive.tick() => Step::KeepAlive,
                new = std::future::poll_fn(|cx| lanes.poll_new(cx)) => Step::NewLanes(new),
                frames = std::future::poll_fn(|cx| shared.poll_frames(cx, legacy)) => Step::Shared(frames),
                out = gql.next() => Step::Protocol(out),
            },
        };
        streak = if matches!(step, Step::Shared(_)) { streak + 1 } else { 0 };
        let write = async {
            match step {
                Step::NewLanes(new) => {
                    // Their answers are written here: the operation's own messages (its end) are
                    // not its first.
                    for lane in &new {
                        conduct.answered(&lane.id_json);
                    }
                    shared.lanes.extend(new);
                    return Ok(true);
                }
                Step::Shared(frames) => {
                    // Every answer there is, in one write.
                    for frame in frames {
                        sink.feed(frame).await?;
                    }
                }
                Step::Protocol(None) => {
                    // The handler ended: the close it called for (the legacy protocol's refused
                    // token or second `connection_init`, a message too big), or none (the client
                    // left).
                    let frame = conduct.take_close().map(|(code, reason)| CloseFrame { code, reason: reason.into() });
                    sink.send(Message::Close(frame)).await?;
                    return Ok(false);
                }
                Step::Protocol(Some(batch)) => {
                    for message in batch {
                        match message {
                            WsMessage::Text(text) => {
                                sink.feed(Message::Text(text.into())).await?;
                            }
                            WsMessage::Close(code, reason) => {
                                let (code, reason) = conduct.take_close().unwrap_or((code, reason));
                                let frame = CloseFrame { code, reason: close_reason(&reason).into() };
                                sink.send(Message::Close(Some(frame))).await?;
                                return Ok(false);
                            }
                        }
                    }
                }
                Step::KeepAlive => {
                    sink.feed(Message::Ping(Vec::new().into())).await?;
                    if legacy {
                        sink.feed(Message::Text(r#"{"type":"ka"}"#.into())).await?;
                    }
                }
            }
            sink.flush().await.map(|()| true)
        };
        // Most writes complete at once; only one that waits on the client is timed.
        let mut write = std::pin::pin!(write);
        let written = match futures::poll!(write.as_mut()) {
            Poll::Ready(done) => Ok(done),
            Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, write).await,
        };
        match written {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!("a WebSocket client took no data in time; disconnecting it");
                break;
            }
        }
    }
}

/// What a connection's loop does next.
enum Step {
    NewLanes(Vec<Lane>),
    Shared(Vec<Message>),
    Protocol(Option<Vec<WsMessage>>),
    KeepAlive,
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
}
