//! Connection hygiene: a half-sent request head and an idle keep-alive connection are closed after
//! the header read timeout, connections past the cap are answered 503 with `Retry-After`, and a
//! WebSocket that never sends `connection_init` is closed with 4408 on both protocols. The limits
//! are set to 1 s (or 2 connections) so the tests stay fast; each waits for the close itself.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const LEGACY: &str = "graphql-ws";
const TRANSPORT: &str = "graphql-transport-ws";

/// A request for `/healthz` on a keep-alive connection (answered `ok`).
const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: witty-bff\r\n\r\n";

/// A bit less than the 1 s the tests set, for a timer's rounding.
const ALMOST_A_SECOND: Duration = Duration::from_millis(900);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.expect("a TCP connection")
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut received))
        .await
        .expect("the server closes the connection in time")
        .expect("the connection ends with a close, not an error");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `/healthz` on `tcp` and reads the whole answer, leaving the connection open.
async fn health_on(tcp: &mut TcpStream) -> String {
    tcp.write_all(HEALTH).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        while !received.ends_with(b"\r\n\r\nok") {
            let n = tcp.read(&mut chunk).await.expect("an answer");
            assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_half_sent_request_head_is_disconnected_after_the_header_read_timeout() {
    let app = spawn_app_with(|c| c.header_read_timeout_secs = 1).await;
    let mut tcp = connect(&app).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: witty-bff\r\n").await.unwrap();
    let sent = Instant::now();

    let received = read_until_closed(&mut tcp).await;

    assert!(sent.elapsed() >= ALMOST_A_SECOND, "closed after {:?}", sent.elapsed());
    // hyper may say why (408) before it closes; the request itself never runs.
    assert!(received.is_empty() || received.starts_with("HTTP/1.1 408"), "{received}");
}

/// A body trickled in (its head sent, then a part of it, then nothing) is cut off as a slow head
/// is: 408 on `/graphql`, an error on the webhook; neither runs.
#[tokio::test]
async fn a_half_sent_request_body_is_refused_after_the_same_timeout() {
    let app = spawn_app_with(|c| c.header_read_timeout_secs = 1).await;
    let webhook = app.webhook_of(ALICE_INSTALLATION);
    let webhook_path = webhook.trim_start_matches(&app.base).to_string();
    for (path, expected) in [("/graphql", "HTTP/1.1 408"), (webhook_path.as_str(), "HTTP/1.1 4")] {
        let mut tcp = connect(&app).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: witty-bff\r\ncontent-type: application/json\r\n\
             aeg-event-type: Notification\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{\"query\""
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let sent = Instant::now();
        let received = read_until_closed(&mut tcp).await;
        assert!(sent.elapsed() >= ALMOST_A_SECOND, "{path}: answered after {:?}", sent.elapsed());
        assert!(received.starts_with(expected), "{path}: {received}");
    }
    assert_eq!(app.sim().total_calls().await, 0, "nothing ran");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|c| c.header_read_timeout_secs = 1).await;
    let mut tcp = connect(&app).await;
    let answer = health_on(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answered = Instant::now();

    let received = read_until_closed(&mut tcp).await;

    assert!(answered.elapsed() >= ALMOST_A_SECOND, "closed after {:?}", answered.elapsed());
    assert!(received.is_empty() || received.starts_with("HTTP/1.1 408"), "{received}");
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_with_retry_after_until_one_leaves() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    // Two connections take the two places: a keep-alive connection, and a WebSocket (its place
    // goes with it through the upgrade).
    let mut kept = connect(&app).await;
    assert!(health_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    let ws = app.ws_acked(TRANSPORT, &app.token_for("alice")).await;

    // A new client (a connection of its own) is refused at once, told when to come back.
    let refused = reqwest::get(format!("{}/healthz", app.base)).await.expect("an answer, not a reset");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let mut tcp = connect(&app).await;
    tcp.write_all(HEALTH).await.unwrap();
    let answer = read_until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // The kept connection is still served.
    assert!(health_on(&mut kept).await.starts_with("HTTP/1.1 200"));

    // Once the WebSocket is gone, its place is free again.
    drop(ws);
    eventually("a place freed by the closed WebSocket", || async {
        let mut tcp = connect(&app).await;
        tcp.write_all(HEALTH).await.unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/1.1 200").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_websocket_without_connection_init_is_closed_with_4408_on_both_protocols() {
    let app = spawn_app_with(|c| c.ws_init_timeout_secs = 1).await;

    let mut ws = app.ws_open(TRANSPORT).await;
    let opened = Instant::now();
    assert_eq!(ws_next_or_close(&mut ws).await, Err((4408, "Connection initialisation timeout".into())));
    assert!(opened.elapsed() >= ALMOST_A_SECOND, "closed after {:?}", opened.elapsed());

    // The legacy protocol has no code of its own: it is told why, then closed the same way.
    let mut ws = app.ws_open(LEGACY).await;
    let error = ws_next(&mut ws).await;
    assert_eq!(error, json!({"type": "connection_error", "payload": {"message": "Connection initialisation timeout"}}));
    assert_eq!(ws_next_or_close(&mut ws).await, Err((4408, "Connection initialisation timeout".into())));
}

#[tokio::test]
async fn an_initialised_websocket_outlives_the_init_timeout() {
    let app = spawn_app_with(|c| {
        c.ws_init_timeout_secs = 1;
        c.ws_keepalive_secs = 2;
    })
    .await;
    let mut ws = app.ws_acked(TRANSPORT, &app.token_for("alice")).await;

    // The first keep-alive ping comes after the init timeout has passed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a ping in time") {
            Some(Ok(Message::Ping(_))) => break,
            Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }

    ws_send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(ws_next(&mut ws).await, json!({"type": "pong"}));
}
