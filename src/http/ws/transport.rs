//! graphql-transport-ws (the protocol of the `graphql-ws` library). A client that breaks it is
//! closed with the code the protocol gives, and a short reason: 4400 for a message that is not
//! JSON, of an unknown type (the legacy protocol's `start`/`stop` among them) or missing a field;
//! 4401 for `subscribe` before the connection was acknowledged; 4409 for an operation id in use;
//! 4429 for a second `connection_init`. An operation refused before it runs gets `error` instead
//! of `next` and `complete`, as the protocol says.

use async_graphql::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Connection, Flow, InitRefused, TOO_MANY_INITS, TOO_MANY_INITS_CLOSE, UNAUTHORIZED_CLOSE, parse};

const BAD_REQUEST_CLOSE: u16 = 4400;
const NOT_ACKNOWLEDGED_CLOSE: u16 = 4401;
const DUPLICATE_ID_CLOSE: u16 = 4409;

/// The client's message types.
const TYPES: [&str; 5] = ["connection_init", "subscribe", "complete", "ping", "pong"];

/// A message of the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        payload: Option<Value>,
    },
    Subscribe {
        // Before the payload: a message with neither is told the id is missing.
        id: String,
        payload: Box<async_graphql::Request>,
    },
    Complete {
        id: String,
    },
    Ping,
    Pong,
}

pub(super) async fn on_message(conn: &mut Connection, bytes: &[u8]) -> Flow {
    let message = match parse::<ClientMessage>(bytes, &TYPES) {
        Ok(message) => message,
        Err(violation) => return Flow::close(BAD_REQUEST_CLOSE, violation.message()),
    };
    match message {
        ClientMessage::ConnectionInit { payload } => match conn.init(payload).await {
            Ok(()) => Flow::Continue,
            Err(InitRefused::TooMany) => Flow::close(TOO_MANY_INITS_CLOSE, TOO_MANY_INITS),
            Err(InitRefused::Unauthorized(reason)) => Flow::close(UNAUTHORIZED_CLOSE, &reason),
        },
        ClientMessage::Subscribe { .. } if !conn.acknowledged() => Flow::close(NOT_ACKNOWLEDGED_CLOSE, "Unauthorized"),
        ClientMessage::Subscribe { id, .. } if conn.is_running(&id) => {
            Flow::close(DUPLICATE_ID_CLOSE, &format!("Subscriber for {id} already exists"))
        }
        ClientMessage::Subscribe { id, payload } => {
            conn.start(id, *payload);
            Flow::Continue
        }
        ClientMessage::Complete { id } => {
            conn.stop(&id);
            Flow::Continue
        }
        ClientMessage::Ping => {
            conn.send(json!({"type": "pong"}));
            Flow::Continue
        }
        ClientMessage::Pong => Flow::Continue,
    }
}

/// Whether an operation's first response says it was refused before it ran: no data, and errors
/// that name no field (the document or its variables are wrong).
pub(super) fn refused_before_running(first: &Response) -> bool {
    first.data == async_graphql::Value::Null
        && !first.errors.is_empty()
        && first.errors.iter().all(|e| e.path.is_empty())
}

/// The `error` message that ends operation `id`, refused before it ran.
pub(super) fn error_message(id: &str, refused: &Response) -> Value {
    json!({"type": "error", "id": id, "payload": refused.errors})
}

#[cfg(test)]
mod tests {
    use super::super::Violation;
    use super::*;

    fn read(text: &str) -> Result<ClientMessage, Violation> {
        parse(text.as_bytes(), &TYPES)
    }

    fn refusal(text: &str) -> String {
        match read(text) {
            Err(violation) => violation.message().to_string(),
            Ok(_) => panic!("{text} was read"),
        }
    }

    #[test]
    fn each_message_type_of_the_protocol_is_read() {
        let init = read(r#"{"type":"connection_init","payload":{"token":"t"}}"#);
        assert!(matches!(init, Ok(ClientMessage::ConnectionInit { payload: Some(p) }) if p["token"] == "t"));
        assert!(matches!(read(r#"{"type":"connection_init"}"#), Ok(ClientMessage::ConnectionInit { payload: None })));
        let subscribe = read(r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":{"x":1}}}"#);
        assert!(
            matches!(subscribe, Ok(ClientMessage::Subscribe { id, payload }) if id == "1" && payload.query == "{ a }")
        );
        assert!(matches!(read(r#"{"type":"complete","id":"1"}"#), Ok(ClientMessage::Complete { id }) if id == "1"));
        assert!(matches!(read(r#"{"type":"ping","payload":{"x":1}}"#), Ok(ClientMessage::Ping)));
        assert!(matches!(read(r#"{"type":"pong","pad":"xx"}"#), Ok(ClientMessage::Pong)));
    }

    #[test]
    fn the_legacy_types_and_unknown_ones_are_refused_whatever_their_fields() {
        for kind in ["start", "stop", "connection_terminate", "ka", "foo"] {
            assert_eq!(refusal(&format!(r#"{{"type":"{kind}","id":"1"}}"#)), format!("unknown message type {kind}"));
        }
    }

    #[test]
    fn a_message_missing_a_field_is_refused_naming_it() {
        let message = refusal(r#"{"type":"subscribe"}"#);
        assert!(message.starts_with("invalid subscribe message") && message.contains("`id`"), "{message}");
        let message = refusal(r#"{"type":"subscribe","id":"1"}"#);
        assert!(message.contains("`payload`"), "{message}");
        assert!(refusal("[1]").contains("no type"));
    }

    #[test]
    fn only_a_first_response_without_data_whose_errors_name_no_field_is_a_refusal() {
        let error = |path: bool| {
            let mut e = async_graphql::ServerError::new("no", None);
            if path {
                e.path = vec![async_graphql::PathSegment::Field("a".into())];
            }
            e
        };
        assert!(refused_before_running(&Response::from_errors(vec![error(false)])));
        assert!(!refused_before_running(&Response::from_errors(vec![error(true)])));
        assert!(!refused_before_running(&Response::new(async_graphql::Value::Null)));
        let mut with_data = Response::new(async_graphql::value!({"a": 1}));
        with_data.errors = vec![error(false)];
        assert!(!refused_before_running(&with_data));
    }
}
