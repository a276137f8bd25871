//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` and the legacy `graphql-ws`
//! (subscriptions-transport-ws). The token comes in the `connection_init` payload; a bad one
//! closes the connection with 4403 (graphql-transport-ws; the legacy protocol gets a
//! `connection_error` first). Keep-alive: WebSocket pings, and `ka` messages on the legacy protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
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
        self.schema.execute(request).await
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        let request = self.with_loaders(request, session_data.as_deref());
        let id = self.subscribing.lock().unwrap_or_else(|e| e.into_inner()).take();
        let token = Self::caller(session_data.as_deref()).map(|c| c.token().to_string());
        match (id, token, session_data) {
            (Some(id), Some(token), Some(session)) => {
                self.fanout.execute_stream(&self.schema, request, session, &token, &id, self.lanes.clone())
            }
            (_, _, session) => self.schema.execute_stream_with_session_data(request, session.unwrap_or_default()),
        }
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

/// The id of a `subscribe` (graphql-transport-ws) or `start` (legacy) message.
fn subscribe_id(message: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "type")]
        kind: String,
        id: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(message).ok()?;
    matches!(peek.kind.as_str(), "subscribe" | "start").then_some(peek.id).flatten()
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
    let subscribing = Arc::new(Mutex::new(None));
    let seen = subscribing.clone();
    let input = stream.take_while(|m| futures::future::ready(m.is_ok())).filter_map(move |m| {
        let bytes = match m {
            Ok(Message::Text(t)) => Some(t.as_bytes().to_vec()),
            Ok(Message::Binary(b)) => Some(b.to_vec()),
            _ => None,
        };
        // The protocol handler runs a `subscribe` as soon as it reads it: its id is the one
        // seen last.
        if let Some(id) = bytes.as_deref().and_then(subscribe_id) {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        }
        futures::future::ready(bytes)
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
    let gql = GqlWebSocket::new(executor, input, protocol).on_connection_init(move |payload| async move {
        let header = token_of(&payload);
        let caller = verifier
            .verify_header(header.as_deref())
            .await
            .map_err(|e| async_graphql::Error::new(format!("{AUTH_PREFIX}{e}")))?;
        live.token_seen(&caller);
        let mut data = Data::default();
        data.insert(Identity(Ok(caller)));
        // Subscriptions last while this verifier accepts the token (its leeway included).
        data.insert(TokenCheck(verifier));
        Ok(data)
    });
    let mut shared = OpenLanes::default();
    // Messages that are ready together (a burst of events) go out in one write.
    let mut gql = Gated::new(Box::pin(gql.ready_chunks(WRITE_BATCH)));
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let mut keepalive = tokio::time::interval(state.ws_keepalive.max(Duration::from_secs(1)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut refused = false;
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
                    let frame = refused.then(|| CloseFrame { code: UNAUTHORIZED_CLOSE, reason: "unauthorized".into() });
                    sink.send(Message::Close(frame)).await?;
                    return Ok(false);
                }
                Step::Protocol(Some(batch)) => {
                    for message in batch {
                        match message {
                            WsMessage::Text(text) => {
                                refused |= legacy && text.contains("\"connection_error\"");
                                sink.feed(Message::Text(text.into())).await?;
                            }
                            WsMessage::Close(code, reason) => {
                                let code = if reason.starts_with(AUTH_PREFIX) { UNAUTHORIZED_CLOSE } else { code };
                                sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await?;
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
