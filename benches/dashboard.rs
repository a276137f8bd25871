//! The scenario benchmark of the read graph (`cargo bench --bench dashboard`).
//!
//! Starts the simulator with an injected upstream latency and witty-bff pointed at it, both on
//! port 0, and reports for the dashboard query: upstream calls cold, warm and for 16 concurrent
//! cold queries; cold latency against the bound (dependency depth × upstream latency); warm
//! requests per second with p50/p99. Loopback only, bounded in count and time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use witty_bff::app::App;
use witty_bff::config::{Config, Secret};
use witty_bff::mint_dev_token;
use witty_bff::simulator::{SimConfig, Simulator};

const SECRET: &str = "bench-secret-for-witty-bff";
const KEY: &str = "bench-key";
/// Injected on every upstream call.
const LATENCY_MS: u64 = 20;
/// Installations → stations and meters → measure values and tariffs.
const DEPTH: u64 = 3;

/// The same query as the tests' (a shared fixture).
const DASHBOARD: &str = include_str!("../tests/fixtures/dashboard.graphql");

struct Stack {
    _sim: Simulator,
    sim_url: String,
    bff_url: String,
    _stop: oneshot::Sender<()>,
}

async fn stack() -> Stack {
    let sim = Simulator::spawn(SimConfig { api_key: KEY.into(), ..SimConfig::default() }).await.expect("simulator");
    let sim_url = sim.base_url();
    let http = reqwest::Client::new();
    http.put(format!("{sim_url}/_sim/faults")).json(&json!({"latencyMs": LATENCY_MS})).send().await.expect("faults");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_url: Some(sim_url.parse().unwrap()),
        api_key: Some(Secret::new(KEY)),
        jwt_secret: Some(Secret::new(SECRET)),
        // One user's thousands of requests a second are the load, not a runaway client.
        rate_limit_per_second: 0.0,
        ..Config::default()
    };
    let app = App::build(config).await.expect("app");
    let bff_url = format!("http://{}/graphql", app.addr());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    Stack { _sim: sim, sim_url, bff_url, _stop: tx }
}

async fn calls(http: &reqwest::Client, sim_url: &str) -> u64 {
    let v: Value = http.get(format!("{sim_url}/_sim/calls")).send().await.unwrap().json().await.unwrap();
    v["total"].as_u64().unwrap_or(0)
}

async fn reset(http: &reqwest::Client, sim_url: &str) {
    http.delete(format!("{sim_url}/_sim/calls")).send().await.unwrap();
}

async fn dashboard(http: &reqwest::Client, url: &str, token: &str) -> Duration {
    let started = Instant::now();
    let body = json!({"query": DASHBOARD, "variables": {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}});
    let r: Value = http.post(url).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap();
    assert!(r.get("errors").is_none(), "dashboard failed: {r}");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let http = reqwest::Client::new();
    let token = mint_dev_token(SECRET, "bob", 3600, None, None);

    // Cold, then warm, on one stack.
    let s = stack().await;
    reset(&http, &s.sim_url).await;
    let cold = dashboard(&http, &s.bff_url, &token).await;
    let cold_calls = calls(&http, &s.sim_url).await;
    reset(&http, &s.sim_url).await;
    dashboard(&http, &s.bff_url, &token).await;
    let warm_calls = calls(&http, &s.sim_url).await;

    // Warm throughput: 16 clients for 5 seconds (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, token) = (http.clone(), s.bff_url.clone(), token.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < deadline && times.len() < 200_000 {
                    times.push(dashboard(&http, &url, &token).await);
                }
                times
            })
        })
        .collect();
    let started = Instant::now();
    let mut times: Vec<Duration> = Vec::new();
    for c in clients {
        times.extend(c.await.unwrap());
    }
    let elapsed = started.elapsed();
    times.sort();
    drop(s);

    // 16 concurrent cold queries on a fresh stack.
    let s = stack().await;
    reset(&http, &s.sim_url).await;
    let runs = (0..16).map(|_| dashboard(&http, &s.bff_url, &token));
    futures::future::join_all(runs).await;
    let concurrent_calls = calls(&http, &s.sim_url).await;

    let bound = Duration::from_millis(LATENCY_MS * DEPTH);
    println!("witty-bff dashboard benchmark (user bob: 2 installations), upstream latency {LATENCY_MS} ms");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| upstream calls, cold | {cold_calls} |");
    println!("| upstream calls, warm (within TTL) | {warm_calls} |");
    println!("| upstream calls, 16 concurrent cold queries | {concurrent_calls} |");
    println!(
        "| cold latency | {:.1} ms (bound: depth {DEPTH} × {LATENCY_MS} ms = {} ms) |",
        cold.as_secs_f64() * 1e3,
        bound.as_millis()
    );
    println!("| warm requests/s (16 clients, 5 s) | {:.0} |", times.len() as f64 / elapsed.as_secs_f64());
    println!(
        "| warm p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3
    );
}
