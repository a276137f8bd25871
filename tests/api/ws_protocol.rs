//! Edges of the two WebSocket protocols on `/graphql`: the message size limit, a second
//! `connection_init`, one protocol's message types on the other, an operation id started again on
//! the legacy protocol, and the order of the legacy protocol's answers to broken messages.

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const LEGACY: &str = "graphql-ws";
const TRANSPORT: &str = "graphql-transport-ws";

/// The largest message the BFF reads (`MAX_MESSAGE_BYTES` in `src/http/ws/mod.rs`).
const MAX_MESSAGE: usize = 1024 * 1024;

/// A query, answered at once when run as an operation.
const QUERY: &str = "{ installations { id } }";

/// The close the connection ends with next, nothing else coming first.
async fn closed_with(ws: &mut Ws) -> (u16, String) {
    match ws_next_or_close(ws).await {
        Err(close) => close,
        Ok(v) => panic!("a message instead of the close: {v}"),
    }
}

/// A JSON text message of exactly `size` bytes: `head` (an object left open) with padding.
fn padded(head: &str, size: usize) -> String {
    let mut text = format!(r#"{head},"pad":""#);
    let pad = size - text.len() - 2;
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(r#""}"#);
    assert_eq!(text.len(), size);
    text
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009_naming_the_limit_on_both_protocols() {
    let app = spawn_app().await;
    // graphql-transport-ws: a ping of exactly the limit is answered; one byte more closes.
    let mut ws = app.ws_acked(TRANSPORT, &app.token_for("alice")).await;
    ws_send_text(&mut ws, &padded(r#"{"type":"ping""#, MAX_MESSAGE)).await;
    assert_eq!(ws_next_or_close(&mut ws).await, Ok(json!({"type": "pong"})));
    ws_send_text(&mut ws, &padded(r#"{"type":"ping""#, MAX_MESSAGE + 1)).await;
    assert_eq!(closed_with(&mut ws).await, (1009, "message over the 1 MiB limit".to_string()));
    // Legacy: a message of exactly the limit is read (here: answered as of an unknown type); one
    // byte more closes, with no connection_error first.
    let mut ws = app.ws_acked(LEGACY, &app.token_for("alice")).await;
    ws_send_text(&mut ws, &padded(r#"{"type":"foo","id":"7""#, MAX_MESSAGE)).await;
    let v = ws_next_or_close(&mut ws).await.expect("an answer");
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("error"), Some("7")), "{v}");
    ws_send_text(&mut ws, &padded(r#"{"type":"foo","id":"8""#, MAX_MESSAGE + 1)).await;
    assert_eq!(closed_with(&mut ws).await, (1009, "message over the 1 MiB limit".to_string()));
    // Also before `connection_init`.
    let mut ws = app.ws_open(TRANSPORT).await;
    ws_send_text(&mut ws, &padded(r#"{"type":"connection_init""#, MAX_MESSAGE + 1)).await;
    assert_eq!(closed_with(&mut ws).await, (1009, "message over the 1 MiB limit".to_string()));
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = spawn_app().await;
    for protocol in [TRANSPORT, LEGACY] {
        let mut ws = app.ws_acked(protocol, &app.token_for("alice")).await;
        let frame = Frame::message(&b"{\"type\":\"\xff\"}"[..], OpCode::Data(Data::Text), true);
        ws.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(closed_with(&mut ws).await, (1007, "text message not valid UTF-8".to_string()), "{protocol}");
    }
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429_and_only_a_refused_token_with_4403() {
    let app = spawn_app().await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", app.token_for("alice"))}})
            .to_string();
    let too_many = (4429, "Too many initialisation requests.".to_string());
    // graphql-transport-ws: closed at once.
    let mut ws = app.ws_acked(TRANSPORT, &app.token_for("alice")).await;
    ws_send_text(&mut ws, &init).await;
    assert_eq!(closed_with(&mut ws).await, too_many);
    // Legacy: connection_error saying why, then the same close (not 4403: the token was good).
    let mut ws = app.ws_acked(LEGACY, &app.token_for("alice")).await;
    ws_send_text(&mut ws, &init).await;
    let v = ws_next_or_close(&mut ws).await.expect("connection_error");
    assert_eq!(v, json!({"type": "connection_error", "payload": {"message": "Too many initialisation requests."}}));
    assert_eq!(closed_with(&mut ws).await, too_many);
    // A refused token is still 4403 on both.
    let mut ws = app.ws_connect(TRANSPORT, "not-a-token").await;
    let (code, reason) = closed_with(&mut ws).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.starts_with("unauthorized"), "{reason}");
    let mut ws = app.ws_connect(LEGACY, "not-a-token").await;
    let v = ws_next_or_close(&mut ws).await.expect("connection_error");
    assert_eq!(v["type"], "connection_error", "{v}");
    assert_eq!(closed_with(&mut ws).await, (4403, "unauthorized".to_string()));
}

#[tokio::test]
async fn graphql_transport_ws_refuses_the_legacy_message_types_with_4400() {
    let app = spawn_app().await;
    for (message, kind) in [
        (json!({"id": "1", "type": "start", "payload": {"query": QUERY}}), "start"),
        (json!({"id": "1", "type": "stop"}), "stop"),
        (json!({"type": "connection_terminate"}), "connection_terminate"),
        // Not even read as far as its fields.
        (json!({"type": "start"}), "start"),
    ] {
        let mut ws = app.ws_acked(TRANSPORT, &app.token_for("alice")).await;
        ws_send_text(&mut ws, &message.to_string()).await;
        assert_eq!(closed_with(&mut ws).await, (4400, format!("unknown message type {kind}")), "{message}");
    }
}

#[tokio::test]
async fn legacy_graphql_ws_answers_the_newer_protocols_message_types_as_unknown_and_stays_open() {
    let app = spawn_app().await;
    let mut ws = app.ws_acked(LEGACY, &app.token_for("alice")).await;
    for (message, kind) in [
        (json!({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}), "subscribe"),
        (json!({"id": "1", "type": "complete"}), "complete"),
        (json!({"id": "1", "type": "ping"}), "ping"),
    ] {
        ws_send_text(&mut ws, &message.to_string()).await;
        let expected =
            json!({"type": "error", "id": "1", "payload": {"message": format!("unknown message type {kind}")}});
        assert_eq!(ws_next_or_close(&mut ws).await, Ok(expected), "{message}");
    }
    // Nothing ran; the connection serves the protocol's own `start`.
    ws_send_text(&mut ws, &json!({"id": "2", "type": "start", "payload": {"query": QUERY}}).to_string()).await;
    let v = ws_next_or_close(&mut ws).await.expect("data");
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("data"), Some("2")), "{v}");
    assert!(v["payload"]["data"]["installations"].is_array(), "{v}");
    assert_eq!(ws_next_or_close(&mut ws).await, Ok(json!({"type": "complete", "id": "2"})));
}

#[tokio::test]
async fn a_legacy_start_with_an_id_in_use_replaces_the_running_operation_as_the_reference_server_does() {
    let app = spawn_app().await;
    let mut ws = app.ws_acked(LEGACY, &app.token_for("alice")).await;
    let start = |query: &str| json!({"id": "1", "type": "start", "payload": {"query": query}}).to_string();
    ws_send_text(&mut ws, &start(EVENTS)).await;
    app.live_subscriptions(1).await;
    // Started again with another operation (one refused at once): the first one ends without a
    // word, the second one runs under the id.
    ws_send_text(&mut ws, &start("subscription { stationEvents(installationId: 42) { id } }")).await;
    let v = ws_next_or_close(&mut ws).await.expect("the second operation's answer");
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("data"), Some("1")), "{v}");
    assert_eq!(v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{v}");
    assert_eq!(ws_next_or_close(&mut ws).await, Ok(json!({"type": "complete", "id": "1"})));
    app.live_subscriptions(0).await;
    // The connection is open and the id free.
    ws_send_text(&mut ws, &start(EVENTS)).await;
    app.live_subscriptions(1).await;
}

#[tokio::test]
async fn legacy_answers_to_broken_messages_come_in_the_order_of_the_messages() {
    let app = spawn_app().await;
    let mut ws = app.ws_open(LEGACY).await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", app.token_for("alice"))}});
    // In one write, so that the server reads them together: garbage, a `start` before the
    // connection is acknowledged, then `connection_init`.
    for text in [
        "{oops".to_string(),
        json!({"id": "0", "type": "start", "payload": {"query": QUERY}}).to_string(),
        init.to_string(),
    ] {
        ws.feed(Message::Text(text.into())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let kinds = [ws_next(&mut ws).await, ws_next(&mut ws).await, ws_next(&mut ws).await];
    let kinds = kinds.iter().map(|v| v["type"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>();
    assert_eq!(kinds, ["connection_error", "error", "connection_ack"]);
}
