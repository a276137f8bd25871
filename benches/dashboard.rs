//! The scenario benchmark of the read graph (`cargo bench --bench dashboard`).
//!
//! The simulator runs in the bench's process with an upstream latency injected on every call;
//! witty-bff runs as processes of the crate's binary pointed at it, so that the CPU they use is
//! theirs alone (read from `/proc/{pid}/stat`, far less noisy here than wall time). Reported in
//! one run, for the dashboard query of the README (user bob, two installations):
//! - upstream calls: cold, warm, and for 16 concurrent cold queries;
//! - cold latency against the floor measured in the same run (the three upstream calls the answer
//!   depends on: installations, then an installation's stations, then a station's measure values,
//!   one after the other, straight to the simulator): on a running process that keeps nothing
//!   (every TTL 0), and as the first query of fresh processes (connections still to be opened);
//! - warm: requests per second at 16 connections, p50/p99, and the server's CPU milliseconds per
//!   request, with the response cache on and off (`WITTY_BFF_RESPONSE_CACHE_MB=0`: executed every
//!   time, as before the response cache), for the dashboard and for a flat query.
//!
//! `DASHBOARD_BASE_BINARY=/path/to/an/earlier/witty-bff` adds that build's cold and warm figures,
//! measured in the same run (an A/B on a machine whose speed moves from run to run).
//!
//! The load comes from minimal HTTP/1.1 keep-alive clients on raw sockets (a request written as
//! prepared bytes, the answer read by its `Content-Length`), so the bench's own CPU stays small
//! beside the server's on the same 2 cores. Loopback only, bounded in count and time.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witty_bff::mint_dev_token;
use witty_bff::simulator::{SimConfig, Simulator};

const SECRET: &str = "bench-secret-for-witty-bff";
const KEY: &str = "bench-key";
/// Injected on every upstream call.
const LATENCY_MS: u64 = 20;
const CONNECTIONS: usize = 16;
const WARM_FOR: Duration = Duration::from_secs(5);
/// Fresh processes whose first dashboard is the cold latency.
const COLD_RUNS: usize = 5;

/// The same query as the tests' (a shared fixture).
const DASHBOARD: &str = include_str!("../tests/fixtures/dashboard.graphql");
const FLAT: &str = "{ installations { id name locationName } }";
const BOB_INSTALLATION: &str = "42";
const BOB_STATION: &str = "2b7c9a41-53f0-4c1e-9d6a-8f2e1b0c4d77";

fn dashboard_body() -> Value {
    json!({"query": DASHBOARD, "variables": {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}})
}

/// How a witty-bff process of the bench keeps answers.
#[derive(Clone, Copy, PartialEq)]
enum Caching {
    /// As configured by default.
    Default,
    /// The response cache off: every query executed (as before the response cache).
    NoResponseCache,
    /// Nothing kept at all (every TTL 0): every query is a cold one, on a running process.
    Nothing,
}

/// A witty-bff process pointed at the bench's simulator.
async fn server(sim: &str, caching: Caching) -> common::Server {
    launch(sim, caching).spawn().await
}

/// How to start a witty-bff process pointed at the bench's simulator.
fn launch(sim: &str, caching: Caching) -> common::Launch {
    let mut launch = common::Launch::new()
        .upstream(sim)
        .env("WITTY_BFF_API_KEY", KEY)
        .env("WITTY_BFF_JWT_SECRET", SECRET)
        // One user's thousands of requests a second are the load, not a runaway client.
        .env("WITTY_BFF_RATE_LIMIT_PER_SECOND", "0");
    if caching == Caching::NoResponseCache {
        launch = launch.env("WITTY_BFF_RESPONSE_CACHE_MB", "0");
    }
    if caching == Caching::Nothing {
        for class in ["STATE", "LIST", "METADATA", "HISTORY", "LIVE_HISTORY"] {
            launch = launch.env(&format!("WITTY_BFF_CACHE_{class}_TTL_SECS"), "0");
        }
    }
    launch
}

async fn calls(http: &reqwest::Client, sim: &str) -> u64 {
    let v: Value = http.get(format!("{sim}/_sim/calls")).send().await.unwrap().json().await.unwrap();
    v["total"].as_u64().unwrap_or(0)
}

async fn reset(http: &reqwest::Client, sim: &str) {
    http.delete(format!("{sim}/_sim/calls")).send().await.unwrap();
}

/// One GraphQL request through reqwest (the cold phases), checked for errors; its latency.
async fn ask(http: &reqwest::Client, port: u16, token: &str, body: &Value) -> Duration {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/graphql");
    let r: Value = http.post(url).bearer_auth(token).json(body).send().await.unwrap().json().await.unwrap();
    assert!(r.get("errors").is_none(), "the query failed: {r}");
    started.elapsed()
}

/// The three dependent upstream calls of the dashboard, one after the other, straight to the
/// simulator: what no BFF can answer faster than.
async fn floor(http: &reqwest::Client, sim: &str, token: &str) -> Duration {
    let get = |path: String| {
        http.get(format!("{sim}{path}")).header("Ocp-Apim-Subscription-Key", KEY).bearer_auth(token).send()
    };
    let started = Instant::now();
    assert!(get("/installations".into()).await.unwrap().status().is_success());
    let stations = get(format!("/installations/{BOB_INSTALLATION}/charging-stations")).await.unwrap();
    assert!(stations.status().is_success());
    let values = http
        .post(format!(
            "{sim}/installations/{BOB_INSTALLATION}/charging-stations/{BOB_STATION}/measures/1/operators/sum"
        ))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .bearer_auth(token)
        .json(&json!({"startDate": "2025-03-01T00:00:00Z", "endDate": "2025-03-02T00:00:00Z", "step": "hour"}))
        .send()
        .await
        .unwrap();
    assert!(values.status().is_success(), "{}", values.status());
    started.elapsed()
}

/// A request as the bytes sent on a keep-alive connection.
fn raw_request(port: u16, token: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection sending `request` until `deadline`: each answer's latency.
async fn connection(port: u16, request: Vec<u8>, deadline: Instant) -> Vec<Duration> {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        socket.write_all(&request).await.unwrap();
        buffer.clear();
        let (head, length) = loop {
            let mut chunk = [0u8; 8192];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("a Content-Length");
                break (end + 4, length);
            }
        };
        while buffer.len() < head + length {
            let mut chunk = [0u8; 8192];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection mid-answer");
            buffer.extend_from_slice(&chunk[..n]);
        }
        times.push(started.elapsed());
        // Cheap enough to check every answer: an error would make every figure meaningless.
        assert!(!buffer[head..].windows(9).any(|w| w == b"\"errors\":"), "an answer with errors");
    }
    times
}

/// What a warm phase measured.
struct Warm {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU per request.
    cpu: Duration,
}

/// `CONNECTIONS` connections sending `body` for `WARM_FOR`.
async fn warm(server: &common::Server, token: &str, body: &Value) -> Warm {
    let request = raw_request(server.port, token, body);
    let deadline = Instant::now() + WARM_FOR;
    let cpu_before = common::cpu_time(&server.pid.to_string());
    let started = Instant::now();
    let clients: Vec<_> =
        (0..CONNECTIONS).map(|_| tokio::spawn(connection(server.port, request.clone(), deadline))).collect();
    let mut times: Vec<Duration> = Vec::new();
    for c in clients {
        times.extend(c.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = common::cpu_time(&server.pid.to_string()).saturating_sub(cpu_before);
    times.sort();
    Warm {
        rps: times.len() as f64 / elapsed.as_secs_f64(),
        p50: common::percentile(&times, 0.5),
        p99: common::percentile(&times, 0.99),
        cpu: cpu / times.len().max(1) as u32,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    common::percentile(&v, 0.5)
}

// Two threads, as the machine has 2 cores: the clients' work stays small beside the server's.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let http = reqwest::Client::new();
    let token = mint_dev_token(SECRET, "bob", 3600, None, None);
    let sim = Simulator::spawn(SimConfig { api_key: KEY.into(), ..SimConfig::default() }).await.expect("simulator");
    let sim_url = sim.base_url().trim_end_matches('/').to_string();
    http.put(format!("{sim_url}/_sim/faults")).json(&json!({"latencyMs": LATENCY_MS})).send().await.expect("faults");
    let body = dashboard_body();

    // Cold: the first dashboard of fresh processes (connections to the upstream still to be
    // opened), and the floor between them.
    let (mut firsts, mut floors, mut cold_calls) = (Vec::new(), Vec::new(), 0);
    for _ in 0..COLD_RUNS {
        let s = server(&sim_url, Caching::Default).await;
        floors.push(floor(&http, &sim_url, &token).await);
        reset(&http, &sim_url).await;
        firsts.push(ask(&http, s.port, &token, &body).await);
        cold_calls = calls(&http, &sim_url).await;
    }
    // Cold on a running process, which keeps nothing: each dashboard reads all it needs upstream
    // (and on the base build, when there is one, in turns with it).
    let base = std::env::var("DASHBOARD_BASE_BINARY").ok();
    let s = server(&sim_url, Caching::Nothing).await;
    let base_server = match &base {
        Some(path) => Some(launch(&sim_url, Caching::Nothing).binary(path).spawn().await),
        None => None,
    };
    ask(&http, s.port, &token, &body).await;
    let (mut colds, mut base_colds) = (Vec::new(), Vec::new());
    for _ in 0..COLD_RUNS * 2 {
        floors.push(floor(&http, &sim_url, &token).await);
        colds.push(ask(&http, s.port, &token, &body).await);
        if let Some(b) = &base_server {
            base_colds.push(ask(&http, b.port, &token, &body).await);
        }
    }
    drop((s, base_server));
    let (first, cold, floor) = (median(firsts), median(colds), median(floors));

    // 16 concurrent cold dashboards on a fresh process.
    let s = server(&sim_url, Caching::Default).await;
    reset(&http, &sim_url).await;
    futures::future::join_all((0..16).map(|_| ask(&http, s.port, &token, &body))).await;
    let concurrent_calls = calls(&http, &sim_url).await;
    drop(s);

    // Warm, with the response cache on and off, on processes of their own; and an earlier build
    // when `DASHBOARD_BASE_BINARY` names one (an A/B in one run).
    let mut builds = vec![("on", Caching::Default, None), ("off", Caching::NoResponseCache, None)];
    if let Some(path) = &base {
        builds.push(("base build", Caching::Default, Some(path.as_str())));
    }
    let mut rows = Vec::new();
    let mut warm_calls = 0;
    for (label, caching, binary) in builds {
        let cache = label == "on";
        let mut launch = launch(&sim_url, caching);
        if let Some(path) = binary {
            launch = launch.binary(path);
        }
        let s = launch.spawn().await;
        ask(&http, s.port, &token, &body).await;
        ask(&http, s.port, &token, &json!({"query": FLAT})).await;
        reset(&http, &sim_url).await;
        let dashboard = warm(&s, &token, &body).await;
        let flat = warm(&s, &token, &json!({"query": FLAT})).await;
        if cache {
            warm_calls = calls(&http, &sim_url).await;
        }
        let rss = common::rss_kib(s.pid);
        rows.push((label, dashboard, flat, rss));
    }

    println!("witty-bff dashboard benchmark (user bob: 2 installations), upstream latency {LATENCY_MS} ms");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| upstream calls, cold | {cold_calls} |");
    println!("| upstream calls, warm (cache on, {} s of load) | {warm_calls} |", WARM_FOR.as_secs() * 2);
    println!("| upstream calls, 16 concurrent cold queries | {concurrent_calls} |");
    println!("| floor (3 dependent upstream calls in a row, median) | {:.1} ms |", ms(floor));
    println!(
        "| cold dashboard on a running process (median of {}) | {:.1} ms: {:.3}× the floor |",
        COLD_RUNS * 2,
        ms(cold),
        cold.as_secs_f64() / floor.as_secs_f64()
    );
    if !base_colds.is_empty() {
        let b = median(base_colds);
        println!(
            "| cold dashboard on a running process, base build | {:.1} ms: {:.3}× the floor |",
            ms(b),
            b.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!(
        "| first dashboard of a fresh process (median of {COLD_RUNS}) | {:.1} ms: {:.3}× the floor |",
        ms(first),
        first.as_secs_f64() / floor.as_secs_f64()
    );
    for (label, d, f, rss) in &rows {
        let label = if label.contains("build") { label.to_string() } else { format!("response cache {label}") };
        println!(
            "| warm dashboard, {label} | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.3} ms CPU/request |",
            d.rps,
            ms(d.p50),
            ms(d.p99),
            ms(d.cpu)
        );
        println!(
            "| warm flat query, {label} | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.3} ms CPU/request |",
            f.rps,
            ms(f.p50),
            ms(f.p99),
            ms(f.cpu)
        );
        println!("| server RSS after, {label} | {:.1} MB |", *rss as f64 / 1024.0);
    }
    let on = &rows[0].1;
    for (label, other, ..) in &rows[1..] {
        println!(
            "| warm dashboard, response cache on / {label} | {:.1}× the requests per second |",
            on.rps / other.rps
        );
    }
}
