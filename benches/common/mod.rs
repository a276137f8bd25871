//! What the process benchmarks share: a witty-bff process of the crate's own binary on a free
//! loopback port (with its embedded simulator, or pointed at an upstream of the bench's), the
//! simulator alone and a Redis for a fleet of replicas, and the figures read off them.

// Each bench compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// How long a process may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running witty-bff process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
    /// The upstream's base URL, without a trailing `/`: the embedded simulator's, or the one given
    /// with [`Launch::upstream`].
    pub sim: String,
}

/// How to start a witty-bff process: `Launch::new().env(..).upstream(..).spawn().await`.
#[derive(Default)]
pub struct Launch {
    env: Vec<(String, String)>,
    upstream: Option<String>,
    binary: Option<String>,
}

impl Launch {
    pub fn new() -> Launch {
        Launch::default()
    }

    /// Sets a variable of the process's environment.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Points the process at an upstream of the bench's (`WITTY_BFF_UPSTREAM_URL`) instead of
    /// its embedded simulator; it then needs `WITTY_BFF_API_KEY` and `WITTY_BFF_JWT_SECRET` too.
    pub fn upstream(mut self, url: &str) -> Launch {
        self.upstream = Some(url.trim_end_matches('/').to_string());
        self
    }

    /// Runs another build of witty-bff than the crate's (an earlier one, for an A/B in one run).
    pub fn binary(mut self, path: &str) -> Launch {
        self.binary = Some(path.to_string());
        self
    }

    /// Starts witty-bff on a free loopback port and waits until it says it serves (with its
    /// embedded simulator: until it prints the simulator's address). Its output is drained
    /// afterwards, so the server never blocks on a full pipe.
    pub async fn spawn(self) -> Server {
        let port = free_port();
        let binary = self.binary.as_deref().unwrap_or(env!("CARGO_BIN_EXE_witty-bff"));
        let mut command = tokio::process::Command::new(binary);
        command.env("WITTY_BFF_LISTEN", format!("127.0.0.1:{port}")).env("RUST_LOG", "warn");
        if let Some(url) = &self.upstream {
            command.env("WITTY_BFF_UPSTREAM_URL", url);
        }
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("witty-bff starts");
        let pid = child.id().unwrap_or(0);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let sim = match self.upstream {
            Some(url) => {
                let serving = wait_for_line(&mut lines, "serving GraphQL on").await;
                assert!(serving.is_some(), "witty-bff did not say it serves (upstream {url})");
                url
            }
            None => {
                let line = wait_for_line(&mut lines, "simulator at ").await;
                let url = line.as_deref().and_then(|l| l.split("simulator at ").nth(1)).unwrap_or_default();
                assert!(!url.is_empty(), "witty-bff did not print its simulator address");
                url.trim().trim_end_matches('/').to_string()
            }
        };
        drain(lines);
        Server { child, pid, port, sim }
    }
}

/// Starts witty-bff with `env` set and its embedded simulator (see [`Launch::spawn`]).
pub async fn spawn_server(env: &[(&str, &str)]) -> Server {
    env.iter().fold(Launch::new(), |launch, (k, v)| launch.env(k, v)).spawn().await
}

/// A free loopback port (free when asked; the process started on it binds it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The first line of `lines` holding `needle`, within [`START_DEADLINE`] (`None`: the output
/// ended, or the deadline passed).
async fn wait_for_line(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> Option<String> {
    let found = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    };
    tokio::time::timeout(START_DEADLINE, found).await.ok().flatten()
}

/// Reads what is left of a child's output, so it never blocks on a full pipe.
fn drain(mut lines: Lines<BufReader<ChildStdout>>) {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// The Witty-Home simulator alone (`witty-bff simulate`), on a free loopback port; killed when
/// dropped.
pub struct Simulator {
    pub child: Child,
    /// Its base URL, without a trailing `/`.
    pub url: String,
}

/// Starts `witty-bff simulate` accepting `api_key`, and waits until it prints its address.
pub async fn spawn_simulator(api_key: &str) -> Simulator {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_witty-bff"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--api-key", api_key])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("witty-bff simulate starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = wait_for_line(&mut lines, "simulator on ").await;
    let url = line.as_deref().and_then(|l| l.split("simulator on ").nth(1)).unwrap_or_default();
    assert!(!url.is_empty(), "witty-bff simulate did not print its address");
    let url = url.trim().trim_end_matches('/').to_string();
    drain(lines);
    Simulator { child, url }
}

/// A `redis-server` of the bench's own on a free loopback port, nothing persisted; killed when
/// dropped.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Starts `redis-server` and waits until it answers `PING`. Panics, saying so, when
/// `redis-server` is not installed.
pub async fn spawn_redis() -> Redis {
    let port = free_port();
    let spawned = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-server is not installed (it is on the PATH of no directory): the fleet mode needs it")
        }
        Err(e) => panic!("redis-server does not start: {e}"),
    };
    let deadline = Instant::now() + START_DEADLINE;
    while !answers_ping(port).await {
        assert!(Instant::now() < deadline, "redis-server did not answer PING on port {port} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Redis { child, port }
}

/// Whether a Redis on `port` answers `PING` with `+PONG`.
async fn answers_ping(port: u16) -> bool {
    let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if socket.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(tokio::time::timeout(Duration::from_secs(1), socket.read_exact(&mut answer)).await, Ok(Ok(_)))
        && &answer == b"+PONG\r\n"
}

/// A process's resident memory, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile of sorted durations (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time (user + system) a process (`pid`, or `self`) has used so far, to the clock tick.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}
