//! The soak benchmark (`cargo bench --bench soak`): `SOAK_MINUTES` (5 by default) minutes of mixed
//! load against a witty-bff process and its embedded simulator, with the simulator's faults set to
//! `errorRate` 0.2: dashboard queries for alice and bob, `setChargeMode` mutations (each attempt
//! with its own `Idempotency-Key`), a few graphql-transport-ws subscriptions to `stationEvents`,
//! and every 10 s a webhook burst (the simulator plugs then unplugs a car, and delivers the events).
//! Prints per minute the requests made, p50/p99 of the queries, the server's RSS and the count of
//! malformed answers (not JSON, neither `data` nor `errors`, or an error without
//! `extensions.code`: must be 0), then a markdown table and whether RSS stayed flat after the first
//! minute. Upstream errors from the injected faults are expected and are not malformed. Loopback
//! only; bounded in count and time; the rate limit is off (`WITTY_BFF_RATE_LIMIT_PER_SECOND=0`).

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use witty_bff::config::DEV_JWT_SECRET;
use witty_bff::mint_dev_token;

const DASHBOARD: &str = include_str!("../tests/fixtures/dashboard.graphql");
const STATION: &str = "60e0d33e-cd45-4382-9e4d-c64002c3f5a7";
const SET_MODE: &str = "mutation($cs: ID!, $mode: ChargeMode!) { setChargeMode(installationId: 33, \
                        chargingStationId: $cs, mode: $mode, wait: false) { status } }";
const SUBSCRIPTION: &str = "subscription { stationEvents(installationId: 33) { id type } }";
/// Query workers (each sends one query at a time).
const QUERY_WORKERS: usize = 4;
/// WebSocket subscribers.
const SUBSCRIBERS: usize = 3;
/// A ceiling on the GraphQL requests of the whole soak, whatever its length.
const MAX_REQUESTS: u64 = 2_000_000;

/// Whether a GraphQL answer is well formed: a JSON object with `data` or `errors`, each error
/// carrying `extensions.code`.
fn well_formed(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    if !o.contains_key("data") && !o.contains_key("errors") {
        return false;
    }
    match o.get("errors") {
        None => true,
        Some(Value::Array(errors)) => errors.iter().all(|e| e["extensions"]["code"].is_string()),
        Some(_) => false,
    }
}

/// What one minute saw.
#[derive(Default)]
struct Minute {
    queries: u64,
    mutations: u64,
    query_latencies: Vec<Duration>,
    /// Answers carrying `errors` (expected: the injected faults).
    with_errors: u64,
    malformed: u64,
    events: u64,
    bursts: u64,
}

struct Stats {
    started: Instant,
    minutes: Mutex<Vec<Minute>>,
    total: AtomicU64,
}

impl Stats {
    fn with<F: FnOnce(&mut Minute)>(&self, f: F) {
        let at = (self.started.elapsed().as_secs() / 60) as usize;
        let mut minutes = self.minutes.lock().unwrap();
        if minutes.len() <= at {
            minutes.resize_with(at + 1, Minute::default);
        }
        f(&mut minutes[at]);
    }

    /// Records an answer's shape: malformed, or carrying `errors`.
    fn answer(&self, body: &[u8], m: &mut Minute) {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if well_formed(&v) => {
                if v.get("errors").is_some() {
                    m.with_errors += 1;
                }
            }
            Ok(v) => {
                m.malformed += 1;
                eprintln!("malformed answer: {}", v.to_string().chars().take(300).collect::<String>());
            }
            Err(_) => {
                m.malformed += 1;
                eprintln!("answer is not JSON: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
            }
        }
    }
}

async fn graphql(http: &reqwest::Client, url: &str, token: &str, body: &Value, key: Option<String>) -> Vec<u8> {
    let mut req = http.post(url).bearer_auth(token).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    match req.send().await {
        Ok(r) => r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        Err(e) => format!("transport error: {e}").into_bytes(),
    }
}

async fn query_worker(
    n: usize,
    http: reqwest::Client,
    url: String,
    tokens: [String; 2],
    stats: Arc<Stats>,
    end: Instant,
) {
    let body = json!({"query": DASHBOARD, "variables": {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}});
    let mut i = n;
    while Instant::now() < end && stats.total.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
        let t0 = Instant::now();
        let answer = graphql(&http, &url, &tokens[i % 2], &body, None).await;
        let took = t0.elapsed();
        stats.with(|m| {
            m.queries += 1;
            m.query_latencies.push(took);
            stats.answer(&answer, m);
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn mutation_worker(http: reqwest::Client, url: String, token: String, stats: Arc<Stats>, end: Instant) {
    let mut i: u64 = 0;
    while Instant::now() < end && stats.total.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
        let mode = if i.is_multiple_of(2) { "IMMEDIATE" } else { "DEFERRED" };
        let body = json!({"query": SET_MODE, "variables": {"cs": STATION, "mode": mode}});
        let key = format!("soak-{}-{i}", std::process::id());
        let answer = graphql(&http, &url, &token, &body, Some(key)).await;
        stats.with(|m| {
            m.mutations += 1;
            stats.answer(&answer, m);
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One graphql-transport-ws subscriber: reads what comes until the end, reconnecting (at most
/// every second) if the server closes.
async fn subscriber(ws_url: String, token: String, stats: Arc<Stats>, end: Instant) {
    while Instant::now() < end {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req)).await
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        let _ = ws.send(Message::text(init.to_string())).await;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, ws.next()).await else { break };
            let Message::Text(text) = msg else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                stats.with(|m| m.malformed += 1);
                eprintln!("WebSocket message is not JSON: {}", text.as_str());
                continue;
            };
            match v["type"].as_str() {
                Some("connection_ack") => {
                    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}});
                    let _ = ws.send(Message::text(sub.to_string())).await;
                }
                Some("ping") => {
                    let _ = ws.send(Message::text(json!({"type": "pong"}).to_string())).await;
                }
                Some("next") => stats.with(|m| {
                    m.events += 1;
                    if !well_formed(&v["payload"]) {
                        m.malformed += 1;
                        eprintln!("malformed subscription payload: {v}");
                    }
                }),
                Some("error") => stats.with(|m| {
                    let ok = v["payload"]
                        .as_array()
                        .is_some_and(|es| es.iter().all(|e| e["extensions"]["code"].is_string()));
                    if !ok {
                        m.malformed += 1;
                        eprintln!("malformed subscription error: {v}");
                    }
                }),
                Some("complete") | Some("pong") => {}
                _ => stats.with(|m| {
                    m.malformed += 1;
                    eprintln!("unexpected WebSocket message: {v}");
                }),
            }
        }
        let _ = ws.close(None).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every 10 s: plug then unplug a car on the simulator, which delivers the webhook events.
async fn bursts(http: reqwest::Client, sim: String, stats: Arc<Stats>, end: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            return;
        }
        for action in ["plug", "unplug"] {
            let _ = http.post(format!("{sim}/_sim/stations/{STATION}/{action}")).send().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stats.with(|m| m.bursts += 1);
    }
}

#[tokio::main]
async fn main() {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    // Every mutation sends a fresh Idempotency-Key, four a second: with the default 10-minute
    // window the store fills (up to its per-user bound) for most of a 5-minute run, which is
    // bounded growth, not a leak. A 1-minute window lets every bounded store reach its steady
    // state within the first minute, so a flat RSS after it says that nothing else grows.
    let window = std::env::var("SOAK_IDEMPOTENCY_WINDOW_SECS").unwrap_or_else(|_| "60".into());
    let server = common::spawn_server(&[
        ("WITTY_BFF_RATE_LIMIT_PER_SECOND", "0"),
        ("WITTY_BFF_IDEMPOTENCY_WINDOW_SECS", &window),
    ])
    .await;
    let (pid, port, sim) = (server.pid, server.port, server.sim.clone());

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}/graphql");
    let ws_url = format!("ws://127.0.0.1:{port}/graphql");
    let alice = mint_dev_token(DEV_JWT_SECRET, "alice", 3 * 3600, None, None);
    let bob = mint_dev_token(DEV_JWT_SECRET, "bob", 3 * 3600, None, None);
    // Wait for the server to answer before loading it.
    for _ in 0..100 {
        if http.post(&url).json(&json!({"query": "{ __typename }"})).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http.put(format!("{sim}/_sim/faults")).json(&json!({"errorRate": 0.2})).send().await.expect("faults set");
    assert!(r.status().is_success(), "PUT /_sim/faults: {}", r.status());

    println!(
        "witty-bff soak: {minutes} min, simulator errorRate 0.2, pid {pid}, start RSS {:.1} MB",
        common::rss_kib(pid) as f64 / 1024.0
    );
    let stats = Arc::new(Stats { started: Instant::now(), minutes: Mutex::new(Vec::new()), total: AtomicU64::new(0) });
    let end = stats.started + Duration::from_secs(minutes * 60);
    let mut tasks = Vec::new();
    for n in 0..QUERY_WORKERS {
        let tokens = [alice.clone(), bob.clone()];
        tasks.push(tokio::spawn(query_worker(n, http.clone(), url.clone(), tokens, stats.clone(), end)));
    }
    tasks.push(tokio::spawn(mutation_worker(http.clone(), url.clone(), alice.clone(), stats.clone(), end)));
    for _ in 0..SUBSCRIBERS {
        tasks.push(tokio::spawn(subscriber(ws_url.clone(), alice.clone(), stats.clone(), end)));
    }
    tasks.push(tokio::spawn(bursts(http.clone(), sim.clone(), stats.clone(), end)));

    // Per minute: the figures of the minute just ended.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut rows = Vec::new();
    for minute in 0..minutes as usize {
        tokio::time::sleep_until((stats.started + Duration::from_secs((minute as u64 + 1) * 60)).into()).await;
        let rss = common::rss_kib(pid);
        // Give the minute's last requests a moment to be recorded.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut all = stats.minutes.lock().unwrap();
        if all.len() <= minute {
            all.resize_with(minute + 1, Minute::default);
        }
        let m = &mut all[minute];
        m.query_latencies.sort();
        let row = (
            minute + 1,
            m.queries + m.mutations,
            m.queries,
            m.mutations,
            ms(common::percentile(&m.query_latencies, 0.5)),
            ms(common::percentile(&m.query_latencies, 0.99)),
            rss,
            m.malformed,
            m.with_errors,
            m.events,
            m.bursts,
        );
        println!(
            "minute {}: {} requests ({} queries, {} mutations), queries p50 {:.1} ms p99 {:.1} ms, RSS {:.1} MB, \
             {} malformed, {} answers with errors, {} subscription events, {} webhook bursts",
            row.0,
            row.1,
            row.2,
            row.3,
            row.4,
            row.5,
            rss as f64 / 1024.0,
            row.7,
            row.8,
            row.9,
            row.10
        );
        rows.push(row);
    }
    for t in &tasks {
        t.abort();
    }
    // Anything recorded past the last minute (requests still in flight at the end) counts too.
    let late_malformed: u64 = stats.minutes.lock().unwrap().iter().skip(minutes as usize).map(|m| m.malformed).sum();

    println!();
    println!(
        "| minute | requests | queries | mutations | query p50 | query p99 | server RSS | malformed | with errors | subscription events | webhook bursts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} MB | {} | {} | {} | {} |",
            r.0,
            r.1,
            r.2,
            r.3,
            r.4,
            r.5,
            r.6 as f64 / 1024.0,
            r.7,
            r.8,
            r.9,
            r.10
        );
    }
    let malformed: u64 = rows.iter().map(|r| r.7).sum::<u64>() + late_malformed;
    let first = rows.first().map(|r| r.6).unwrap_or(0) as f64;
    let flat = rows.iter().skip(1).all(|r| (r.6 as f64 - first).abs() <= first * 0.1);
    let note = if rows.len() < 2 { "; only one minute, nothing after it to compare" } else { "" };
    println!();
    println!("malformed answers: {malformed} (must be 0)");
    println!("RSS flat after the first minute: {} (within 10 %{note})", if flat { "yes" } else { "no" });
    let mut server = server;
    let _ = server.child.kill().await;
    if malformed > 0 {
        std::process::exit(1);
    }
}
