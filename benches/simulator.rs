//! The simulator alone, in this process: `witty_bff::simulator` on port 0, `SIM_BENCH_CLIENTS`
//! concurrent clients (default 8) for `SIM_BENCH_SECS` seconds (default 5) per request kind,
//! printing requests/s. The request issue 19 watches is the one-year daily `sum` of alice's
//! station energy; the grid meter's (which adds the house's base load to every slot) and a plain
//! `GET` of the station are printed beside it.
//!
//! Before the HTTP rounds, the computation alone, on one thread of this process: the one-year daily
//! `sum` the way the route worked before issue 19 (every sample made, aggregated, each row turned
//! into a JSON map) and the way it works now ([`Series::aggregate`], rows written directly), with
//! a check that both write the same bytes.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use witty_bff::simulator::series::{
    self, Operator, PriceBook, Profile, Quantity, Series, Step, Subscription, TariffType,
};
use witty_bff::simulator::{SimConfig, Simulator};

const API_KEY: &str = "bench-sim-key";
const STATION: &str = "/installations/33/charging-stations/60e0d33e-cd45-4382-9e4d-c64002c3f5a7";
const METER: &str = "/installations/33/grid-meters/a6536308-fc1d-4930-ae1a-19a526958c75";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The simulator reads only the claims, so an unsigned token for `alice` will do.
fn token() -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = chrono::Utc::now().timestamp() + 3600;
    format!(
        "{}.{}.c2ln",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(format!(r#"{{"sub":"alice","exp":{exp}}}"#))
    )
}

/// One request the clients repeat: a path and, for a `POST`, its body.
struct Kind {
    name: &'static str,
    path: String,
    body: Option<Value>,
}

/// Runs `clients` loops of `kind` for `secs` seconds; returns requests/s and the mean latency.
async fn run(base: &str, kind: &Kind, clients: u64, secs: u64) -> (f64, Duration) {
    let client = reqwest::Client::new();
    let url = format!("{base}{}", kind.path);
    let token = token();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let loops = (0..clients).map(|_| {
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), kind.body.clone());
        tokio::spawn(async move {
            let (mut n, mut busy) = (0u64, Duration::ZERO);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let req = match &body {
                    Some(b) => client.post(&url).json(b),
                    None => client.get(&url),
                };
                let resp = req.bearer_auth(&token).header("Ocp-Apim-Subscription-Key", API_KEY).send().await;
                let resp = resp.expect("the simulator answers");
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                resp.bytes().await.expect("the body arrives");
                busy += sent.elapsed();
                n += 1;
            }
            (n, busy)
        })
    });
    let (mut total, mut busy) = (0u64, Duration::ZERO);
    for handle in loops.collect::<Vec<_>>() {
        let (n, b) = handle.await.expect("a client loop ends");
        total += n;
        busy += b;
    }
    (total as f64 / started.elapsed().as_secs_f64(), busy / total.max(1) as u32)
}

/// Calls `f` for `secs` seconds; returns calls/s.
fn rate(secs: u64, mut f: impl FnMut() -> usize) -> f64 {
    let started = Instant::now();
    let (mut n, mut bytes) = (0u64, 0usize);
    while started.elapsed() < Duration::from_secs(secs) {
        bytes += f();
        n += 1;
    }
    std::hint::black_box(bytes);
    n as f64 / started.elapsed().as_secs_f64()
}

/// The one-year daily `sum` computed before issue 19 and now, on one thread, for a station with
/// a Tempo subscription (the grid meter's house energy when `house`).
fn computation(secs: u64, house: bool) {
    let t = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let profile = Profile {
        seed: 7,
        subscription: Subscription::Tempo,
        standard_types: [TariffType::Hc; 10],
        power_w: 7_400.0,
        installed_at: t("2020-04-15T13:28:13Z"),
        history_until: t("2026-01-01T00:00:00Z"),
    };
    let quantity = if house { Quantity::HouseEnergy } else { Quantity::StationEnergy };
    let (from, to, now) = (t("2024-01-01T00:00:00Z"), t("2025-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z"));
    let prices = PriceBook::new();
    let before = || {
        let samples = series::samples(&profile, &[], &prices, quantity, from, to, now);
        let rows: Vec<Value> =
            series::aggregate(&profile, &samples, Operator::Sum, Step::Day).iter().map(series::Row::to_json).collect();
        serde_json::to_vec(&rows).unwrap()
    };
    let series = Series { profile: &profile, live: &[], prices: &prices, quantity };
    let now_way = || serde_json::to_vec(&series.aggregate(from, to, now, Operator::Sum, Step::Day)).unwrap();
    assert_eq!(before(), now_way(), "both ways write the same bytes");
    let what = if house { "house energy" } else { "station energy" };
    let (old, new) = (rate(secs, || before().len()), rate(secs, || now_way().len()));
    println!("computation, {what:<15} before {old:>8.0}/s  now {new:>8.0}/s  ({:.1}x)", new / old);
}

#[tokio::main]
async fn main() {
    let clients = setting("SIM_BENCH_CLIENTS", 8);
    let secs = setting("SIM_BENCH_SECS", 5);
    let sim = Simulator::spawn(SimConfig { api_key: API_KEY.into(), ..SimConfig::default() })
        .await
        .expect("the simulator starts");
    let year = json!({"startDate": "2024-01-01T00:00:00Z", "endDate": "2025-01-01T00:00:00Z", "step": "day"});
    let kinds = [
        Kind {
            name: "one-year daily sum, station",
            path: format!("{STATION}/measures/1/operators/sum"),
            body: Some(year.clone()),
        },
        Kind {
            name: "one-year daily sum, grid meter",
            path: format!("{METER}/measures/1/operators/sum"),
            body: Some(year),
        },
        Kind { name: "GET of the station", path: STATION.to_string(), body: None },
    ];
    println!("one-year daily sum, {secs} s each way, one thread:");
    computation(secs, false);
    computation(secs, true);
    println!("simulator alone: {clients} clients, {secs} s per request kind");
    for kind in &kinds {
        let (rate, mean) = run(&sim.base_url(), kind, clients, secs).await;
        println!("{:<32} {:>9.0} requests/s  mean {:>7.2} ms", kind.name, rate, mean.as_secs_f64() * 1000.0);
    }
}
