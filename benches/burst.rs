//! What a webhook burst costs the other users: a witty-bff process with its embedded simulator,
//! its cache filled with many entries (bob's dashboard over `BURST_FILL` different days), then
//! alice's cached dashboard timed before, during and after `BURST_DELIVERIES` concurrent webhook
//! deliveries of `BURST_EVENTS` events each at bob's installation 42 (Event Grid batches hold up
//! to 5000). Prints p50/p99 of each phase and their ratio to before: issue 17 asks for 3× at most.
//! Defaults: 10 deliveries × 4000 events, 12000 days of fill (about 24,000 cache entries).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use witty_bff::config::DEV_JWT_SECRET;
use witty_bff::{mint_dev_token, webhook_key};

const DASHBOARD: &str = include_str!("../tests/fixtures/dashboard.graphql");
const SECRET: &str = "bench-webhook-secret";
const BOB_STATION: &str = "2b7c9a41-53f0-4c1e-9d6a-8f2e1b0c4d77";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The dashboard for `day` days before 2025-03-01.
fn dashboard(day: i64) -> Value {
    let from = chrono::DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z").unwrap() - chrono::Duration::days(day);
    let to = from + chrono::Duration::days(1);
    json!({"query": DASHBOARD, "variables": {"from": from.to_rfc3339(), "to": to.to_rfc3339()}})
}

async fn ask(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Duration {
    let t0 = Instant::now();
    let r = http.post(url).bearer_auth(token).json(body).send().await.expect("an answer");
    let v: Value = r.json().await.expect("JSON");
    assert!(v["data"]["installations"].is_array(), "{v}");
    t0.elapsed()
}

/// p50 and p99 of alice's cached dashboard over `n` requests one after the other, or until `until`
/// says the phase is over (at least 20 requests).
async fn time_alice(http: &reqwest::Client, url: &str, token: &str, n: usize, until: impl Fn() -> bool) -> (f64, f64) {
    let body = dashboard(0);
    let mut times = Vec::new();
    while times.len() < n && (times.len() < 20 || !until()) {
        times.push(ask(http, url, token, &body).await);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(common::percentile(&times, 0.5)), ms(common::percentile(&times, 0.99)))
}

/// The events published so far (`witty_bff_events_total{outcome="published"}`).
async fn published(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("witty_bff_events_total{outcome=\"published\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn delivery(d: usize, events: usize) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    Value::Array(
        (0..events)
            .map(|n| {
                // Lean (no topic or versions), so that 4000 fit Event Grid's 1 MB, as the
                // webhook's limit is.
                json!({
                    "id": format!("b-{d}-{n}"), "eventType": "Hager.WittyHome.LoadShedding",
                    "subject": format!("installations/42/charging-stations/{BOB_STATION}"),
                    "eventTime": now, "data": {"installationId": 42}
                })
            })
            .collect(),
    )
}

#[tokio::main]
async fn main() {
    let (deliveries, events, fill) =
        (setting("BURST_DELIVERIES", 10), setting("BURST_EVENTS", 4000), setting("BURST_FILL", 12000));
    let mut server =
        common::spawn_server(&[("WITTY_BFF_WEBHOOK_SECRET", SECRET), ("WITTY_BFF_RATE_LIMIT_PER_SECOND", "0")]).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let url = format!("{base}/graphql");
    let http = reqwest::Client::new();
    let (alice, bob) = (
        mint_dev_token(DEV_JWT_SECRET, "alice", 3600, None, None),
        mint_dev_token(DEV_JWT_SECRET, "bob", 3600, None, None),
    );

    // The fill: bob's dashboard over `fill` days, 16 at a time.
    let started = Instant::now();
    let filling = futures::stream::iter(0..fill as i64)
        .map(|day| {
            let (http, url, bob) = (http.clone(), url.clone(), bob.clone());
            async move { ask(&http, &url, &bob, &dashboard(day + 1)).await }
        })
        .buffer_unordered(16);
    filling.collect::<Vec<_>>().await;
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let misses = text.lines().find(|l| l.contains("cache_lookups_total{outcome=\"miss\"}")).unwrap_or("?").to_string();
    println!(
        "cache filled in {:.1} s ({misses}; simulator at {}), server RSS {} KiB",
        started.elapsed().as_secs_f64(),
        server.sim,
        common::rss_kib(server.pid)
    );

    let before = time_alice(&http, &url, &alice, 200, || false).await;
    let hook = format!("{base}/webhooks/witty/{}", webhook_key(SECRET, 42));
    let at_start = published(&http, &base).await;
    let burst_started = Instant::now();
    let posts: Vec<_> = (0..deliveries)
        .map(|d| {
            let (http, hook, body) = (http.clone(), hook.clone(), delivery(d, events));
            tokio::spawn(async move {
                let r = http.post(&hook).header("aeg-event-type", "Notification").json(&body).send().await.unwrap();
                assert!(r.status().is_success(), "delivery {d}: {}", r.status());
            })
        })
        .collect();
    // During: until every event of the burst is published.
    let expected = at_start + (deliveries * events) as u64;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (http, base, done) = (http.clone(), base.clone(), done.clone());
        tokio::spawn(async move {
            while published(&http, &base).await < expected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let during = time_alice(&http, &url, &alice, usize::MAX, || done.load(std::sync::atomic::Ordering::SeqCst)).await;
    for p in posts {
        p.await.unwrap();
    }
    watcher.await.unwrap();
    let burst_time = burst_started.elapsed();
    let after = time_alice(&http, &url, &alice, 200, || false).await;

    println!(
        "witty-bff webhook burst: {deliveries} deliveries x {events} events to installation 42, published in {:.2} s; \
         alice's cached dashboard (another user's):",
        burst_time.as_secs_f64()
    );
    println!("| phase | p50 | p99 | p50 / before | p99 / before |");
    println!("|---|---|---|---|---|");
    for (name, (p50, p99)) in [("before", before), ("during", during), ("after", after)] {
        println!("| {name} | {p50:.2} ms | {p99:.2} ms | {:.2} | {:.2} |", p50 / before.0, p99 / before.1);
    }
    println!("server RSS after the burst: {} KiB", common::rss_kib(server.pid));
    let within = [during, after].iter().all(|(p50, _)| *p50 <= 3.0 * before.0);
    println!("p50 within 3x of before, during and after the burst: {}", if within { "yes" } else { "no" });
    let _ = server.child.kill().await;
}
