//! The fan-out benchmark (`cargo bench --bench fanout`): N WebSocket subscribers (1000 by default,
//! `FANOUT_SUBSCRIBERS` to change) on one installation of a witty-bff process, then a burst of
//! webhook deliveries. Reports the delivery ratio, the latency from webhook receipt to client
//! (p50/p99), the CPU each delivered message cost the server and the bench's clients, and the
//! server's RSS. `FANOUT_ROUNDS` (5) rounds of two bursts of `FANOUT_EVENTS` (50) deliveries:
//! `FANOUT_GAP_MS` (20) apart, then back to back; the figures pool the rounds, and each round's p99
//! shows the spread. `FANOUT_DISTINCT_TOKENS=1` gives every subscriber a token of its own (nothing
//! shared). `FANOUT_PER_EVENT=1` also prints each delivery's post time (and wall clock) and its
//! first and last arrival. Loopback only; bounded in count and time.
//!
//! `FANOUT_REPLICAS=3` (any number above 1) measures a fleet instead: a `redis-server` of the
//! bench's own on a free port (it must be installed), one simulator (`witty-bff simulate`), and
//! that many replicas of the release binary on them with the same secrets and
//! `WITTY_BFF_REDIS_URL`. The subscribers are spread evenly across the replicas (subscriber `n`
//! on replica `n % replicas`), every webhook is delivered to the first replica, and the bench
//! adds each replica's subscribers' p50/p99 and its RSS.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use memchr::memmem;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witty_bff::config::DEV_JWT_SECRET;
use witty_bff::mint_dev_token;

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

/// The bench's settings, from the environment (see the module's doc).
struct Settings {
    subscribers: usize,
    events: usize,
    /// Spacing between deliveries of the paced burst.
    gap: Duration,
    rounds: usize,
    /// A token per subscriber (a token per session), so no two share an execution: the worst case
    /// for memory and CPU.
    distinct: bool,
    per_event: bool,
    /// 1: one process with its embedded simulator; more: a fleet of replicas on Redis.
    replicas: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let number =
            |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Settings {
            subscribers: number("FANOUT_SUBSCRIBERS", 1000),
            events: number("FANOUT_EVENTS", 50),
            gap: Duration::from_millis(number("FANOUT_GAP_MS", 20) as u64),
            rounds: number("FANOUT_ROUNDS", 5),
            distinct: std::env::var("FANOUT_DISTINCT_TOKENS").is_ok(),
            per_event: std::env::var("FANOUT_PER_EVENT").is_ok(),
            replicas: number("FANOUT_REPLICAS", 1).max(1),
        }
    }
}

/// The secrets every replica of a fleet shares (the bench's own; the simulator reads tokens
/// without checking their signature, as an upstream with keys of its own would check them).
const FLEET_API_KEY: &str = "fanout-bench-api-key";
const FLEET_JWT_SECRET: &str = "fanout-bench-jwt-secret";
const FLEET_WEBHOOK_SECRET: &str = "fanout-bench-webhook-secret";

/// The per-caller request limit off: every subscriber is the same caller, and its 1000
/// `subscribe` messages in about a second would be refused past the limit's burst (200).
const NO_RATE_LIMIT: (&str, &str) = ("WITTY_BFF_RATE_LIMIT_PER_SECOND", "0");

/// The installation every subscriber watches.
const INSTALLATION: i64 = 33;

/// What the bench measures: one witty-bff process with its embedded simulator, or a fleet of
/// replicas sharing one simulator and one Redis.
struct Target {
    /// The witty-bff processes; subscriber `n` connects to `servers[n % len]`, webhooks go to the
    /// first.
    servers: Vec<common::Server>,
    /// The upstream's base URL.
    sim: String,
    api_key: &'static str,
    jwt_secret: &'static str,
    fleet: Option<Fleet>,
}

/// What a fleet adds (kept alive for the run, killed when dropped).
struct Fleet {
    _redis: common::Redis,
    _simulator: common::Simulator,
}

impl Target {
    async fn single() -> Target {
        let server = common::spawn_server(&[NO_RATE_LIMIT]).await;
        let sim = server.sim.clone();
        Target { servers: vec![server], sim, api_key: "witty-dev-key", jwt_secret: DEV_JWT_SECRET, fleet: None }
    }

    /// A Redis, one simulator, and `replicas` processes of the release binary on them with the
    /// same secrets.
    async fn fleet(replicas: usize) -> Target {
        let redis = common::spawn_redis().await;
        let simulator = common::spawn_simulator(FLEET_API_KEY).await;
        let mut servers = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let launch = common::Launch::new()
                .upstream(&simulator.url)
                .env("WITTY_BFF_API_KEY", FLEET_API_KEY)
                .env("WITTY_BFF_JWT_SECRET", FLEET_JWT_SECRET)
                .env("WITTY_BFF_WEBHOOK_SECRET", FLEET_WEBHOOK_SECRET)
                .env("WITTY_BFF_REDIS_URL", &redis.url())
                .env(NO_RATE_LIMIT.0, NO_RATE_LIMIT.1);
            servers.push(launch.spawn().await);
        }
        let sim = simulator.url.clone();
        let fleet = Some(Fleet { _redis: redis, _simulator: simulator });
        Target { servers, sim, api_key: FLEET_API_KEY, jwt_secret: FLEET_JWT_SECRET, fleet }
    }

    fn port_of(&self, subscriber: usize) -> u16 {
        self.servers[subscriber % self.servers.len()].port
    }

    /// CPU time of every witty-bff process, summed.
    fn cpu(&self) -> Duration {
        self.servers.iter().map(|s| common::cpu_time(&s.pid.to_string())).sum()
    }

    fn rss(&self) -> Vec<u64> {
        self.servers.iter().map(|s| common::rss_kib(s.pid)).collect()
    }

    /// The URL webhooks are delivered to, once the upstream subscription is validated, and the
    /// number of upstream event subscriptions of the installation with the index of the replica
    /// whose URL was registered. One process: the registered URL. A fleet: the first replica's,
    /// whichever replica registered.
    async fn hook(&self, http: &reqwest::Client, token: &str) -> (String, usize, Option<usize>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (registered, count) = loop {
            let subs: Value = http
                .get(format!("{}/installations/{INSTALLATION}/event-subscriptions", self.sim))
                .header("Ocp-Apim-Subscription-Key", self.api_key)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            let all = subs.as_array().cloned().unwrap_or_default();
            let created = all.iter().find(|s| s["state"] == "Created");
            if let Some(url) = created.and_then(|s| s["protocolData"].as_str()) {
                break (url.to_string(), all.len());
            }
            assert!(Instant::now() < deadline, "no validated upstream event subscription within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let holder = self.servers.iter().position(|s| registered.contains(&format!("127.0.0.1:{}/", s.port)));
        if self.fleet.is_none() {
            return (registered, count, holder);
        }
        let key = witty_bff::webhook_key(FLEET_WEBHOOK_SECRET, INSTALLATION);
        (format!("http://127.0.0.1:{}/webhooks/witty/{key}", self.servers[0].port), count, holder)
    }

    /// Waits until each process serves its share of the `subscribers` (its
    /// `witty_bff_live_subscriptions`), or 30 s.
    async fn wait_subscribed(&self, http: &reqwest::Client, subscribers: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, server) in self.servers.iter().enumerate() {
            let share = (i..subscribers).step_by(self.servers.len()).count();
            loop {
                let url = format!("http://127.0.0.1:{}/metrics", server.port);
                let text = match http.get(url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let serving = text
                    .lines()
                    .find_map(|l| l.strip_prefix("witty_bff_live_subscriptions "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                if serving >= share as f64 {
                    break;
                }
                assert!(Instant::now() < deadline, "replica {} serves {serving} of {share} subscriptions", i + 1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Connects the subscribers, each recording on its own when it receives each event id (a light
/// client: the bench process shares the 2 cores with the servers, so it must not dominate).
/// Returns their arrivals, their tasks and how long they took to connect and subscribe.
async fn connect(
    s: &Settings,
    target: &Target,
    token: &str,
) -> (Vec<Arrivals>, Vec<tokio::task::JoinHandle<()>>, Duration) {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(s.subscribers);
    let arrivals: Vec<Arrivals> = (0..s.subscribers).map(|_| Arrivals::default()).collect();
    let mut clients = Vec::with_capacity(s.subscribers);
    for (n, seen) in arrivals.iter().enumerate() {
        let token = match s.distinct {
            true => mint_dev_token(target.jwt_secret, "alice", 3600 + n as i64, None, None),
            false => token.to_string(),
        };
        let ready = ready_tx.clone();
        clients.push(tokio::spawn(subscriber(target.port_of(n), token, ready, seen.clone())));
    }
    drop(ready_tx);
    let connect_started = Instant::now();
    for _ in 0..s.subscribers {
        ready_rx.recv().await.expect("every subscriber connects");
    }
    (arrivals, clients, connect_started.elapsed())
}

/// The kinds of burst: name and spacing.
fn kinds(s: &Settings) -> [(&'static str, Duration); 2] {
    [("paced", s.gap), ("back to back", Duration::ZERO)]
}

/// One burst as sent: its kind (index in `kinds`), when each delivery was posted (by
/// `event_key`), and the CPU the servers and the bench used meanwhile.
struct Phase {
    kind: usize,
    sent_at: std::collections::HashMap<u32, Instant>,
    server_cpu: Duration,
    bench_cpu: Duration,
}

/// Rounds of two bursts: deliveries `gap` apart, then back to back (as fast as the webhook takes
/// them). Each burst is measured until every subscriber has every event (or 5 s).
async fn run_rounds(
    s: &Settings,
    target: &Target,
    http: &reqwest::Client,
    hook: &str,
    arrivals: &[Arrivals],
) -> Vec<Phase> {
    let arrived = || arrivals.iter().map(|a| a.lock().unwrap().len()).sum::<usize>();
    let expected = s.subscribers * s.events;
    let mut phases = Vec::new();
    for _ in 0..s.rounds {
        for (kind, (name, spacing)) in kinds(s).iter().enumerate() {
            let phase = phases.len() as u32;
            let before = arrived();
            let (server_cpu0, bench_cpu0) = (target.cpu(), common::cpu_time("self"));
            let mut sent_at = std::collections::HashMap::new();
            for n in 0..s.events {
                let t0 = deliver(http, hook, &format!("{phase}-{n}")).await;
                if s.per_event {
                    // The wall clock of the post too, to line it up with other tools' logs
                    // (`redis-cli monitor`).
                    let wall = std::time::SystemTime::now() - t0.elapsed();
                    let unix = wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
                    println!("{name}: post {n}: {:.1} ms, sent at {unix:.6}", t0.elapsed().as_secs_f64() * 1e3);
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
            let server_cpu = target.cpu().saturating_sub(server_cpu0);
            let bench_cpu = common::cpu_time("self").saturating_sub(bench_cpu0);
            phases.push(Phase { kind, sent_at, server_cpu, bench_cpu });
            // Quiet between bursts.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    phases
}

/// Posts one webhook delivery of one event `id`; returns when it was posted.
async fn deliver(http: &reqwest::Client, hook: &str, id: &str) -> Instant {
    let body = json!([{
        "id": id, "eventType": "Hager.WittyHome.LoadShedding",
        "subject": "installations/33/charging-stations/60e0d33e-cd45-4382-9e4d-c64002c3f5a7",
        "eventTime": chrono::Utc::now().to_rfc3339(), "data": {"installationId": 33},
        "dataVersion": "1.0", "metadataVersion": "1", "topic": "/witty-home/installations/33"
    }]);
    let t0 = Instant::now();
    let r = http.post(hook).header("aeg-event-type", "Notification").json(&body).send().await.unwrap();
    assert!(r.status().is_success());
    t0
}

/// The figures of one kind of burst over some subscribers' arrivals.
struct Figures {
    /// Distinct (subscriber, event) arrivals.
    delivered: usize,
    /// Arrivals of an event a subscriber had already received.
    duplicates: usize,
    latencies: Vec<Duration>,
    round_p99: Vec<f64>,
    server_cpu: Duration,
    bench_cpu: Duration,
}

fn figures(phases: &[Phase], kind: usize, arrivals: &[Vec<(u32, Instant)>]) -> Figures {
    let mut f = Figures {
        delivered: 0,
        duplicates: 0,
        latencies: Vec::new(),
        round_p99: Vec::new(),
        server_cpu: Duration::ZERO,
        bench_cpu: Duration::ZERO,
    };
    for p in phases.iter().filter(|p| p.kind == kind) {
        let mut latencies = Vec::new();
        for seen in arrivals {
            let mut ids = std::collections::HashSet::new();
            for (id, at) in seen.iter().filter(|(id, _)| p.sent_at.contains_key(id)) {
                match ids.insert(*id) {
                    true => latencies.push(at.saturating_duration_since(p.sent_at[id])),
                    false => f.duplicates += 1,
                }
            }
        }
        latencies.sort();
        f.round_p99.push(ms(common::percentile(&latencies, 0.99)));
        f.delivered += latencies.len();
        f.latencies.extend(latencies);
        f.server_cpu += p.server_cpu;
        f.bench_cpu += p.bench_cpu;
    }
    f.latencies.sort();
    f
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Each delivery's first and last arrival (`FANOUT_PER_EVENT`).
fn print_per_event(phases: &[Phase], kind: usize, arrivals: &[Vec<(u32, Instant)>]) {
    for p in phases.iter().filter(|p| p.kind == kind) {
        let mut per: std::collections::BTreeMap<u32, (Duration, Duration)> = Default::default();
        for (id, at) in arrivals.iter().flatten().filter(|(id, _)| p.sent_at.contains_key(id)) {
            let l = at.saturating_duration_since(p.sent_at[id]);
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

/// The table of both kinds of burst over every subscriber.
fn print_table(s: &Settings, phases: &[Phase], arrivals: &[Vec<(u32, Instant)>]) {
    println!("| burst | delivered | p50 | p99 | max | p99 of each round | CPU per message (server, bench clients) |");
    println!("|---|---|---|---|---|---|---|");
    let mut duplicates = 0;
    for (kind, (name, spacing)) in kinds(s).iter().enumerate() {
        let f = figures(phases, kind, arrivals);
        if s.per_event {
            print_per_event(phases, kind, arrivals);
        }
        duplicates += f.duplicates;
        let sent = s.subscribers * s.events * s.rounds;
        let per_message = |cpu: Duration| cpu.as_secs_f64() * 1e6 / sent.max(1) as f64;
        let rounds_text: Vec<String> = f.round_p99.iter().map(|p| format!("{p:.1}")).collect();
        println!(
            "| {name} ({} ms apart) | {} of {sent} ({:.2} %) | {:.2} ms | {:.2} ms | {:.2} ms | {} ms | {:.1} µs, {:.1} µs |",
            spacing.as_millis(),
            f.delivered,
            f.delivered as f64 * 100.0 / sent as f64,
            ms(common::percentile(&f.latencies, 0.5)),
            ms(common::percentile(&f.latencies, 0.99)),
            ms(f.latencies.last().copied().unwrap_or_default()),
            rounds_text.join(", "),
            per_message(f.server_cpu),
            per_message(f.bench_cpu),
        );
    }
    if duplicates > 0 {
        println!("DUPLICATES: {duplicates} arrivals of an event the subscriber had already received");
    }
}

/// A fleet's figures per replica: its subscribers' latencies, and its RSS.
fn print_replicas(s: &Settings, phases: &[Phase], arrivals: &[Vec<(u32, Instant)>], rss: (&[u64], &[u64])) {
    println!(
        "\n| replica | subscribers | paced p50 | paced p99 | back to back p50 | back to back p99 | RSS idle | RSS after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in 0..s.replicas {
        let mine: Vec<Vec<(u32, Instant)>> = arrivals.iter().skip(r).step_by(s.replicas).cloned().collect();
        let (paced, b2b) = (figures(phases, 0, &mine), figures(phases, 1, &mine));
        let p = |f: &Figures, q: f64| ms(common::percentile(&f.latencies, q));
        println!(
            "| {}{} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} MB | {:.1} MB |",
            r + 1,
            if r == 0 { " (webhooks)" } else { "" },
            mine.len(),
            p(&paced, 0.5),
            p(&paced, 0.99),
            p(&b2b, 0.5),
            p(&b2b, 0.99),
            rss.0[r] as f64 / 1024.0,
            rss.1[r] as f64 / 1024.0,
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let s = Settings::from_env();
    let target = match s.replicas {
        1 => Target::single().await,
        n => Target::fleet(n).await,
    };
    let http = reqwest::Client::new();
    let token = mint_dev_token(target.jwt_secret, "alice", 3600, None, None);
    let (arrivals, clients, connect_time) = connect(&s, &target, &token).await;
    // The webhook the BFF registered upstream, once validated, and every subscription served.
    let (hook, upstream_subscriptions, holder) = target.hook(&http, &token).await;
    target.wait_subscribed(&http, s.subscribers).await;
    // Quiet before the idle figures.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = target.rss();
    let phases = run_rounds(&s, &target, &http, &hook, &arrivals).await;
    let burst_rss = target.rss();
    for c in &clients {
        c.abort();
    }
    let got: Vec<Vec<(u32, Instant)>> = arrivals.iter().map(|a| a.lock().unwrap().clone()).collect();
    let (subscribers, rounds, events) = (s.subscribers, s.rounds, s.events);
    println!(
        "witty-bff fan-out benchmark: {subscribers} graphql-transport-ws subscribers (connected and subscribed in \
         {:.2} s), {rounds} rounds of two bursts of {events} webhook deliveries",
        connect_time.as_secs_f64()
    );
    if target.fleet.is_some() {
        let holder = holder.map_or("none of them".to_string(), |h| format!("replica {}", h + 1));
        println!(
            "fleet: {} replicas on one Redis and one simulator, subscribers spread evenly, every webhook delivered \
             to replica 1; upstream event subscriptions: {upstream_subscriptions}, registered by {holder}; server \
             CPU is the replicas' sum",
            s.replicas
        );
    }
    print_table(&s, &phases, &got);
    if target.fleet.is_some() {
        print_replicas(&s, &phases, &got, (&idle_rss, &burst_rss));
    } else {
        println!(
            "server RSS: {:.1} MB idle with the subscribers, {:.1} MB after the bursts",
            idle_rss[0] as f64 / 1024.0,
            burst_rss[0] as f64 / 1024.0
        );
    }
    for mut server in target.servers {
        let _ = server.child.kill().await;
    }
}
