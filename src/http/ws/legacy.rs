//! The legacy `graphql-ws` protocol of subscriptions-transport-ws. A client that breaks it is
//! answered and stays connected, as the protocol's reference server does: `connection_error` for
//! what is not JSON, `error` for anything else (graphql-transport-ws's `subscribe`/`complete`
//! among them), in the order of the messages. A `start` with an id in use replaces that operation.
//! Keep-alive `ka` messages go with the WebSocket pings.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Connection, Flow, InitRefused, TOO_MANY_INITS, TOO_MANY_INITS_CLOSE, UNAUTHORIZED_CLOSE, Violation, parse,
};

/// The client's message types.
const TYPES: [&str; 4] = ["connection_init", "start", "stop", "connection_terminate"];

/// A client is answered this many messages that break the protocol; the next one closes the
/// connection (policy violation): answers to a flood would pile up in memory.
const MAX_VIOLATIONS: usize = 32;
const POLICY_CLOSE: u16 = 1008;
const NOT_ACKNOWLEDGED: &str = "Unauthorized: send connection_init and wait for connection_ack first";

/// A message of the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit { payload: Option<Value> },
    Start { id: String, payload: Box<async_graphql::Request> },
    Stop { id: String },
    ConnectionTerminate,
}

pub(super) async fn on_message(conn: &mut Connection, bytes: &[u8]) -> Flow {
    let message = match parse::<ClientMessage>(bytes, &TYPES) {
        Ok(message) => message,
        Err(Violation::Malformed(message)) => return violation(conn, connection_error(&message)),
        Err(Violation::Unreadable { id, message }) => return violation(conn, error(id.as_deref(), &message)),
    };
    match message {
        ClientMessage::ConnectionInit { payload } => match conn.init(payload).await {
            Ok(()) => Flow::Continue,
            Err(InitRefused::TooMany) => {
                conn.send(connection_error(TOO_MANY_INITS));
                Flow::close(TOO_MANY_INITS_CLOSE, TOO_MANY_INITS)
            }
            Err(InitRefused::Unauthorized(reason)) => {
                conn.send(connection_error(&reason));
                Flow::close(UNAUTHORIZED_CLOSE, "unauthorized")
            }
        },
        ClientMessage::Start { id, .. } if !conn.acknowledged() => violation(conn, error(Some(&id), NOT_ACKNOWLEDGED)),
        ClientMessage::Start { id, payload } => {
            conn.start(id, *payload);
            Flow::Continue
        }
        ClientMessage::Stop { id } => {
            conn.stop(&id);
            Flow::Continue
        }
        ClientMessage::ConnectionTerminate => Flow::Close(None),
    }
}

/// Answers a message that broke the protocol, until there were too many.
fn violation(conn: &mut Connection, answer: Value) -> Flow {
    conn.violations += 1;
    if conn.violations > MAX_VIOLATIONS {
        return Flow::close(POLICY_CLOSE, "too many messages that break the protocol");
    }
    conn.send(answer);
    Flow::Continue
}

pub(super) fn connection_error(message: &str) -> Value {
    json!({"type": "connection_error", "payload": {"message": message}})
}

/// The `error` message that ends operation `id`, refused before it ran: the protocol's payload
/// has one error, given with its extensions (its code, `retryAfterSeconds`).
pub(super) fn error_message(id: &str, refused: &async_graphql::Response) -> Value {
    let payload = refused.errors.first().map_or_else(|| json!({"message": "refused"}), |e| json!(e));
    json!({"type": "error", "id": id, "payload": payload})
}

/// An `error` message, of operation `id` if the client's message named one.
fn error(id: Option<&str>, message: &str) -> Value {
    match id {
        Some(id) => json!({"type": "error", "id": id, "payload": {"message": message}}),
        None => json!({"type": "error", "payload": {"message": message}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ClientMessage, Violation> {
        parse(text.as_bytes(), &TYPES)
    }

    #[test]
    fn each_message_type_of_the_protocol_is_read() {
        let init = read(r#"{"type":"connection_init","payload":{"Authorization":"Bearer t"}}"#);
        assert!(matches!(init, Ok(ClientMessage::ConnectionInit { payload: Some(_) })));
        let start = read(r#"{"type":"start","id":"7","payload":{"query":"subscription { a }"}}"#);
        assert!(matches!(start, Ok(ClientMessage::Start { id, payload }) if id == "7" && payload.query.contains("a")));
        assert!(matches!(read(r#"{"type":"stop","id":"7"}"#), Ok(ClientMessage::Stop { id }) if id == "7"));
        assert!(matches!(read(r#"{"type":"connection_terminate"}"#), Ok(ClientMessage::ConnectionTerminate)));
    }

    #[test]
    fn the_newer_protocols_types_are_unknown_here_and_keep_their_id() {
        for kind in ["subscribe", "complete", "ping", "pong", "ka"] {
            let refused = read(&format!(r#"{{"type":"{kind}","id":"1"}}"#)).err();
            let message = format!("unknown message type {kind}");
            assert_eq!(refused, Some(Violation::Unreadable { id: Some("1".into()), message }));
        }
        assert!(matches!(read("{oops"), Err(Violation::Malformed(_))));
    }
}
