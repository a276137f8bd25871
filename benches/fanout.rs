//! The fan-out benchmark (`cargo bench --bench fanout`): N WebSocket subscribers (1000 by default,
//! `FANOUT_SUBSCRIBERS` to change) on one installation of a witty-bff process, then a burst of
//! webhook deliveries. Reports the delivery ratio, the latency from webhook receipt to client
//! (p50/p99) and the server's RSS. Loopback only; bounded in count and time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use witty_bff::auth::mint_dev_token;
use witty_bff::config::DEV_JWT_SECRET;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let subscribers: usize = std::env::var("FANOUT_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let events: usize = std::env::var("FANOUT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    // Spacing between deliveries of the burst (0: back to back).
    let gap = Duration::from_millis(std::env::var("FANOUT_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_witty-bff"))
        .env("WITTY_BFF_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("witty-bff starts");
    let pid = child.id().unwrap_or(0);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut sim = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(url) = line.split("simulator at ").nth(1) {
            sim = url.trim().to_string();
            break;
        }
    }
    assert!(!sim.is_empty(), "witty-bff did not print its simulator address");
    let http = reqwest::Client::new();
    let token = mint_dev_token(DEV_JWT_SECRET, "alice", 3600, None, None);

    // Subscribers: each records, on its own, when it receives each event id (a light client:
    // the bench process shares the 2 cores with the server, so it must not dominate).
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut clients = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (ready, token, mut stop) = (ready_tx.clone(), token.clone(), stop_rx.clone());
        let mut req = format!("ws://127.0.0.1:{port}/graphql").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(String, Instant)> = Vec::new();
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else { return seen };
            let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
            let _ = ws.send(Message::Text(init.to_string().into())).await;
            let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { stationEvents(installationId: 33) { id } }"}});
            loop {
                tokio::select! {
                    msg = ws.next() => {
                        let Some(Ok(Message::Text(t))) = msg else { if msg.is_none() { break } else { continue } };
                        let at = Instant::now();
                        if t.contains("\"connection_ack\"") {
                            let _ = ws.send(Message::Text(sub.to_string().into())).await;
                            let _ = ready.send(()).await;
                        } else if let Some(rest) = t.split("\"stationEvents\":{\"id\":\"").nth(1) {
                            seen.push((rest.split('"').next().unwrap_or_default().to_string(), at));
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            seen
        }));
    }
    drop(ready_tx);
    let connect_started = Instant::now();
    for _ in 0..subscribers {
        ready_rx.recv().await.expect("every subscriber connects");
    }
    let connect_time = connect_started.elapsed();

    // The webhook the BFF registered upstream, once validated.
    let hook = loop {
        let subs: Value = http
            .get(format!("{sim}/installations/33/event-subscriptions"))
            .header("Ocp-Apim-Subscription-Key", "witty-dev-key")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if let Some(url) = subs.as_array().and_then(|a| {
            a.iter().find(|s| s["state"] == "Created").and_then(|s| s["protocolData"].as_str().map(str::to_string))
        }) {
            break url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_kib(pid);

    // The burst: one delivery per event, as fast as the webhook takes them.
    let mut sent_at = std::collections::HashMap::new();
    for n in 0..events {
        let id = format!("fanout-{n}");
        let body = json!([{
            "id": id, "eventType": "Hager.WittyHome.LoadShedding",
            "subject": "installations/33/charging-stations/60e0d33e-cd45-4382-9e4d-c64002c3f5a7",
            "eventTime": chrono::Utc::now().to_rfc3339(), "data": {"installationId": 33},
            "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/33"
        }]);
        let t0 = Instant::now();
        let r = http.post(&hook).header("aeg-event-type", "Notification").json(&body).send().await.unwrap();
        assert!(r.status().is_success());
        sent_at.insert(id, t0);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let expected = subscribers * events;
    // Give the burst time to arrive, then stop the clients and gather what they saw.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let burst_rss = rss_kib(pid);
    let _ = stop_tx.send(true);
    let mut got: Vec<(String, Instant)> = Vec::with_capacity(expected);
    for c in clients {
        got.extend(c.await.unwrap_or_default());
    }
    let mut latencies: Vec<Duration> =
        got.iter().filter_map(|(id, at)| sent_at.get(id).map(|t0| at.saturating_duration_since(*t0))).collect();
    latencies.sort();

    println!(
        "witty-bff fan-out benchmark: {subscribers} graphql-transport-ws subscribers, {events} webhook deliveries"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| subscribers connected and subscribed | {subscribers} in {:.2} s |", connect_time.as_secs_f64());
    println!(
        "| events delivered | {} of {expected} ({:.2} %) |",
        got.len(),
        got.len() as f64 * 100.0 / expected as f64
    );
    println!("| latency webhook → client p50 | {:.2} ms |", percentile(&latencies, 0.5).as_secs_f64() * 1e3);
    println!("| latency webhook → client p99 | {:.2} ms |", percentile(&latencies, 0.99).as_secs_f64() * 1e3);
    println!("| latency max | {:.2} ms |", latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3);
    println!("| server RSS idle with subscribers | {:.1} MB |", idle_rss as f64 / 1024.0);
    println!("| server RSS after the burst | {:.1} MB |", burst_rss as f64 / 1024.0);
    let _ = child.kill().await;
}
