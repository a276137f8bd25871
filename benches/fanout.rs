//! The fan-out benchmark (`cargo bench --bench fanout`): N WebSocket subscribers (1000 by default,
//! `FANOUT_SUBSCRIBERS` to change) on one installation of a witty-bff process, then a burst of
//! webhook deliveries. Reports the delivery ratio, the latency from webhook receipt to client
//! (p50/p99), the CPU each delivered message cost the server and the bench's clients, and the
//! server's RSS. `FANOUT_ROUNDS` (5) rounds of two bursts of `FANOUT_EVENTS` (50) deliveries:
//! `FANOUT_GAP_MS` (20) apart, then back to back; the figures pool the rounds, and each round's p99
//! shows the spread. `FANOUT_DISTINCT_TOKENS=1` gives every subscriber a token of its own (nothing
//! shared). `FANOUT_PER_EVENT=1` also prints each delivery's post time and its first and
//! last arrival. Loopback only; bounded in count and time.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use memchr::memmem;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witty_bff::config::DEV_JWT_SECRET;
use witty_bff::mint_dev_token;

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// A client frame (masked, as RFC 6455 requires of clients; the all-zero key leaves the bytes as
/// they are).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// One subscriber: a minimal graphql-transport-ws client over a raw socket that records when each
/// event id arrives. It reads whatever is there in one call and parses frames in place, so the
/// bench process, which shares the 2 cores with the server, costs little next to it.
async fn subscriber(port: u16, token: String, ready: tokio::sync::mpsc::Sender<()>, seen: Arrivals) {
    let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
    let _ = socket.set_nodelay(true);
    let upgrade = format!(
        "GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    );
    if socket.write_all(upgrade.as_bytes()).await.is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    // The handshake answer, up to its blank line.
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if !matches!(socket.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
    };
    assert!(buf.starts_with(b"HTTP/1.1 101"), "the WebSocket upgrade is refused");
    buf.drain(..head_end);
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { stationEvents(installationId: 33) { id } }"}});
    if socket.write_all(&client_frame(1, init.to_string().as_bytes())).await.is_err() {
        return;
    }
    let mut acked = false;
    loop {
        // Every complete frame in the buffer.
        let at = Instant::now();
        let mut used = 0;
        while buf.len() - used >= 2 {
            let (b0, b1) = (buf[used], buf[used + 1] & 0x7f);
            let (len, header) = match b1 {
                126 if buf.len() - used >= 4 => (u16::from_be_bytes([buf[used + 2], buf[used + 3]]) as usize, 4),
                127 if buf.len() - used >= 10 => {
                    (u64::from_be_bytes(buf[used + 2..used + 10].try_into().unwrap()) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() - used < header + len {
                break;
            }
            let payload = &buf[used + header..used + header + len];
            match b0 & 0x0f {
                1 => {
                    if !acked && memmem::find(payload, b"\"connection_ack\"").is_some() {
                        acked = true;
                        let _ = socket.write_all(&client_frame(1, sub.to_string().as_bytes())).await;
                        let _ = ready.send(()).await;
                    } else if let Some(at_id) = EVENT_ID.find(payload)
                        && let Some(key) = event_key(&payload[at_id + EVENT_ID.needle().len()..])
                    {
                        seen.lock().unwrap().push((key, at));
                    }
                }
                9 => {
                    let pong = client_frame(10, payload);
                    let _ = socket.write_all(&pong).await;
                }
                8 => return,
                _ => {}
            }
            used += header + len;
        }
        buf.drain(..used);
        if !matches!(socket.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Where each subscriber records when each event reached it (by `event_key`).
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<(u32, Instant)>>>;

/// What precedes an event's id in a subscriber's message.
static EVENT_ID: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"stationEvents\":{\"id\":\""));

/// Event ids are `{phase}-{n}`; their key is `phase * KEY_PHASE + n`.
const KEY_PHASE: u32 = 1_000_000;

fn event_key(id: &[u8]) -> Option<u32> {
    let end = memchr::memchr(b'"', id)?;
    let (phase, n) = std::str::from_utf8(&id[..end]).ok()?.split_once('-')?;
    Some(phase.parse::<u32>().ok()? * KEY_PHASE + n.parse::<u32>().ok()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let subscribers: usize = std::env::var("FANOUT_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let events: usize = std::env::var("FANOUT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    // Spacing between deliveries of the paced burst.
    let gap = Duration::from_millis(std::env::var("FANOUT_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(20));
    let rounds: usize = std::env::var("FANOUT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let server = common::spawn_server(&[]).await;
    let (pid, port, sim) = (server.pid, server.port, server.sim.clone());
    let http = reqwest::Client::new();
    let token = mint_dev_token(DEV_JWT_SECRET, "alice", 3600, None, None);

    // Subscribers: each records, on its own, when it receives each event id (a light client:
    // the bench process shares the 2 cores with the server, so it must not dominate).
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let arrivals: Vec<Arrivals> = (0..subscribers).map(|_| Arrivals::default()).collect();
    let mut clients = Vec::with_capacity(subscribers);
    // `FANOUT_DISTINCT_TOKENS=1`: every subscriber its own token (a token per session), so no two
    // share an execution: the worst case for memory and CPU.
    let distinct = std::env::var("FANOUT_DISTINCT_TOKENS").is_ok();
    for (n, seen) in arrivals.iter().enumerate() {
        let token = match distinct {
            true => mint_dev_token(DEV_JWT_SECRET, "alice", 3600 + n as i64, None, None),
            false => token.clone(),
        };
        let ready = ready_tx.clone();
        clients.push(tokio::spawn(subscriber(port, token, ready, seen.clone())));
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
    let idle_rss = common::rss_kib(pid);

    // Rounds of two bursts: deliveries `gap` apart, then back to back (as fast as the webhook
    // takes them). Each burst is measured until every subscriber has every event (or 5 s).
    let per_event = std::env::var("FANOUT_PER_EVENT").is_ok();
    let arrived = || arrivals.iter().map(|a| a.lock().unwrap().len()).sum::<usize>();
    let expected = subscribers * events;
    let kinds = [("paced", gap), ("back to back", Duration::ZERO)];
    let mut phases = Vec::new();
    for _ in 0..rounds {
        for (kind, (name, spacing)) in kinds.iter().enumerate() {
            let phase = phases.len() as u32;
            let before = arrived();
            let (server_cpu0, bench_cpu0) = (cpu_time(&pid.to_string()), cpu_time("self"));
            let mut sent_at = std::collections::HashMap::new();
            for n in 0..events {
                let id = format!("{phase}-{n}");
                let body = json!([{
                    "id": id, "eventType": "Hager.WittyHome.LoadShedding",
                    "subject": "installations/33/charging-stations/60e0d33e-cd45-4382-9e4d-c64002c3f5a7",
                    "eventTime": chrono::Utc::now().to_rfc3339(), "data": {"installationId": 33},
                    "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/33"
                }]);
                let t0 = Instant::now();
                let r = http.post(&hook).header("aeg-event-type", "Notification").json(&body).send().await.unwrap();
                assert!(r.status().is_success());
                if per_event {
                    println!("{name}: post {n}: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
                }
                sent_at.insert(phase * KEY_PHASE + n as u32, t0);
                if !spacing.is_zero() {
                    tokio::time::sleep(*spacing).await;
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while arrived() < before + expected && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let server_cpu = cpu_time(&pid.to_string()).saturating_sub(server_cpu0);
            let bench_cpu = cpu_time("self").saturating_sub(bench_cpu0);
            phases.push((kind, sent_at, server_cpu, bench_cpu));
            // Quiet between bursts.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let burst_rss = common::rss_kib(pid);
    for c in &clients {
        c.abort();
    }
    let got: Vec<(u32, Instant)> = arrivals.iter().flat_map(|a| a.lock().unwrap().clone()).collect();

    println!(
        "witty-bff fan-out benchmark: {subscribers} graphql-transport-ws subscribers (connected and subscribed in \
         {:.2} s), {rounds} rounds of two bursts of {events} webhook deliveries",
        connect_time.as_secs_f64()
    );
    println!("| burst | delivered | p50 | p99 | max | p99 of each round | CPU per message (server, bench clients) |");
    println!("|---|---|---|---|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (kind, (name, spacing)) in kinds.iter().enumerate() {
        let (mut all, mut round_p99, mut delivered) = (Vec::new(), Vec::new(), 0);
        let (mut server_cpu, mut bench_cpu) = (Duration::ZERO, Duration::ZERO);
        for (_, sent_at, server, bench) in phases.iter().filter(|p| p.0 == kind) {
            let mine: Vec<&(u32, Instant)> = got.iter().filter(|(id, _)| sent_at.contains_key(id)).collect();
            let mut latencies: Vec<Duration> =
                mine.iter().map(|(id, at)| at.saturating_duration_since(sent_at[id])).collect();
            latencies.sort();
            round_p99.push(ms(common::percentile(&latencies, 0.99)));
            delivered += mine.len();
            all.extend(latencies);
            server_cpu += *server;
            bench_cpu += *bench;
            if per_event {
                let mut per: std::collections::BTreeMap<u32, (Duration, Duration)> = Default::default();
                for (id, at) in &mine {
                    let l = at.saturating_duration_since(sent_at[id]);
                    let e = per.entry(*id).or_insert((Duration::MAX, Duration::ZERO));
                    e.0 = e.0.min(l);
                    e.1 = e.1.max(l);
                }
                for (id, (lo, hi)) in per {
                    let (phase, n) = (id / KEY_PHASE, id % KEY_PHASE);
                    println!("  event {phase}-{n}: first {:.1} ms, last {:.1} ms", ms(lo), ms(hi));
                }
            }
        }
        all.sort();
        let sent = expected * rounds;
        let per_message = |cpu: Duration| cpu.as_secs_f64() * 1e6 / sent.max(1) as f64;
        let rounds_text: Vec<String> = round_p99.iter().map(|p| format!("{p:.1}")).collect();
        println!(
            "| {name} ({} ms apart) | {delivered} of {sent} ({:.2} %) | {:.2} ms | {:.2} ms | {:.2} ms | {} ms | {:.1} µs, {:.1} µs |",
            spacing.as_millis(),
            delivered as f64 * 100.0 / sent as f64,
            ms(common::percentile(&all, 0.5)),
            ms(common::percentile(&all, 0.99)),
            ms(all.last().copied().unwrap_or_default()),
            rounds_text.join(", "),
            per_message(server_cpu),
            per_message(bench_cpu),
        );
    }
    println!(
        "server RSS: {:.1} MB idle with the subscribers, {:.1} MB after the bursts",
        idle_rss as f64 / 1024.0,
        burst_rss as f64 / 1024.0
    );
    let mut server = server;
    let _ = server.child.kill().await;
}
