//! GraphQL over WebSocket on `/graphql`: `graphql-transport-ws` and the legacy `graphql-ws`
//! (subscriptions-transport-ws). The token comes in the `connection_init` payload; a bad one
//! closes the connection with 4403 (graphql-transport-ws; the legacy protocol gets a
//! `connection_error` first). Keep-alive: WebSocket pings, and `ka` messages on the legacy protocol.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};

use super::HttpState;
use crate::cache::{SharedCache, request_loaders};
use crate::graphql::{Identity, WittySchema};

/// Close code when the credentials are refused.
pub const UNAUTHORIZED_CLOSE: u16 = 4403;
const AUTH_PREFIX: &str = "unauthorized: ";
/// At most this many ready messages are written together.
const WRITE_BATCH: usize = 64;
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
/// operation read (a membership, a station) is not what the next one sees.
#[derive(Clone)]
struct PerOperation {
    schema: WittySchema,
    cache: SharedCache,
}

impl PerOperation {
    fn with_loaders(&self, request: async_graphql::Request, session: Option<&Data>) -> async_graphql::Request {
        match session
            .and_then(|d| d.get(&std::any::TypeId::of::<Identity>()))
            .and_then(|i| i.downcast_ref::<Identity>())
        {
            Some(Identity(Ok(caller))) => request.data(Arc::new(request_loaders(caller.clone(), self.cache.clone()))),
            _ => request,
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
        self.schema.execute_stream_with_session_data(request, session_data.unwrap_or_default())
    }
}

pub async fn serve(state: HttpState, socket: WebSocket, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    let input = stream.take_while(|m| futures::future::ready(m.is_ok())).filter_map(|m| {
        futures::future::ready(match m {
            Ok(Message::Text(t)) => Some(t.as_bytes().to_vec()),
            Ok(Message::Binary(b)) => Some(b.to_vec()),
            _ => None,
        })
    });
    let verifier = state.verifier.clone();
    let executor = PerOperation { schema: state.schema.clone(), cache: state.cache.clone() };
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
    // Messages that are ready together (a burst of events) go out in one write.
    let mut gql = std::pin::pin!(gql.ready_chunks(WRITE_BATCH));
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let mut keepalive = tokio::time::interval(state.ws_keepalive.max(Duration::from_secs(1)));
    keepalive.tick().await;
    let mut refused = false;
    'pump: loop {
        tokio::select! {
            out = gql.next() => {
                let Some(batch) = out else {
                    let frame = refused.then(|| CloseFrame { code: UNAUTHORIZED_CLOSE, reason: "unauthorized".into() });
                    let _ = sink.send(Message::Close(frame)).await;
                    break;
                };
                for message in batch {
                    match message {
                        WsMessage::Text(text) => {
                            refused |= legacy && text.contains("\"connection_error\"");
                            let fed = tokio::time::timeout(WRITE_TIMEOUT, sink.feed(Message::Text(text.into()))).await;
                            if !matches!(fed, Ok(Ok(()))) {
                                break 'pump;
                            }
                        }
                        WsMessage::Close(code, reason) => {
                            let code = if reason.starts_with(AUTH_PREFIX) { UNAUTHORIZED_CLOSE } else { code };
                            let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                            break 'pump;
                        }
                    }
                }
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await, Ok(Ok(()))) {
                    tracing::debug!("a WebSocket client took no data in time; disconnecting it");
                    break;
                }
            },
            _ = keepalive.tick() => {
                let alive = tokio::time::timeout(WRITE_TIMEOUT, async {
                    sink.feed(Message::Ping(Vec::new().into())).await?;
                    if legacy {
                        sink.feed(Message::Text(r#"{"type":"ka"}"#.into())).await?;
                    }
                    sink.flush().await
                })
                .await;
                if !matches!(alive, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
}
