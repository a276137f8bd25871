//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` and the legacy `graphql-ws`
//! (subscriptions-transport-ws). The token comes in the `connection_init` payload; a bad one
//! closes the connection with 4403 (graphql-transport-ws; the legacy protocol gets a
//! `connection_error` first). Keep-alive: WebSocket pings, and `ka` messages on the legacy protocol.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use futures::channel::mpsc;

use super::HttpState;
use crate::cache::{SharedCache, request_loaders};
use crate::auth::Caller;
use crate::graphql::fanout::{Fanout, Lane, LaneItem, LaneSink};
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
        match (id, session_data) {
            (Some(id), Some(session)) => match Self::caller(Some(&session)).map(|c| c.token().to_string()) {
                Some(token) => self.fanout.execute_stream(&self.schema, request, session, &token, &id, self.lanes.clone()),
                None => self.schema.execute_stream_with_session_data(request, session),
            },
            (_, session) => self.schema.execute_stream_with_session_data(request, session.unwrap_or_default()),
        }
    }
}

/// Hands the lanes of a connection's shared subscriptions to its loop.
struct Lanes(mpsc::UnboundedSender<Lane>);

impl LaneSink for Lanes {
    fn add(&self, lane: Lane) {
        // The loop is gone only when the connection is: nobody to answer.
        let _ = self.0.unbounded_send(lane);
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
fn lane_frame(item: &LaneItem, legacy: bool) -> String {
    let kind = if legacy { "data" } else { "next" };
    let id = serde_json::to_string(&*item.id).unwrap_or_default();
    format!(r#"{{"type":"{kind}","id":{id},"payload":{}}}"#, item.payload)
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
    let (lanes, mut new_lanes) = mpsc::unbounded();
    let lanes = Arc::new(Lanes(lanes));
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
        let mut data = Data::default();
        data.insert(Identity(Ok(caller)));
        Ok(data)
    });
    let mut shared = futures::stream::SelectAll::<Lane>::new();
    // Messages that are ready together (a burst of events) go out in one write.
    let mut gql = std::pin::pin!(gql.ready_chunks(WRITE_BATCH));
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let mut keepalive = tokio::time::interval(state.ws_keepalive.max(Duration::from_secs(1)));
    keepalive.tick().await;
    let mut refused = false;
    // Shared answers come first (they are most of the traffic); the protocol's own messages
    // still get a turn after every few batches of them.
    let mut streak = 0;
    loop {
        let step = match (streak >= FAIR_TURN).then(|| gql.next().now_or_never()).flatten() {
            Some(out) => Step::Protocol(out),
            None => tokio::select! {
                biased;
                Some(lane) = new_lanes.next() => Step::NewLane(lane),
                Some(item) = shared.next(), if !shared.is_empty() => Step::Shared(item),
                out = gql.next() => Step::Protocol(out),
                _ = keepalive.tick() => Step::KeepAlive,
            },
        };
        streak = if matches!(step, Step::Shared(_)) { streak + 1 } else { 0 };
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            match step {
                Step::NewLane(lane) => {
                    shared.push(lane);
                    return Ok(true);
                }
                Step::Shared(item) => {
                    // This answer and the others already there, in one write.
                    sink.feed(Message::Text(lane_frame(&item, legacy).into())).await?;
                    for _ in 1..WRITE_BATCH {
                        match shared.next().now_or_never() {
                            Some(Some(item)) => sink.feed(Message::Text(lane_frame(&item, legacy).into())).await?,
                            _ => break,
                        }
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
        })
        .await;
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
    NewLane(Lane),
    Shared(LaneItem),
    Protocol(Option<Vec<WsMessage>>),
    KeepAlive,
}

