//! What the process benchmarks share: a witty-bff process of the crate's own binary on a free
//! loopback port (with its embedded simulator), and the figures read off it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// A running witty-bff process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
    /// The embedded simulator's base URL, without a trailing `/`.
    pub sim: String,
}

/// Starts witty-bff with `env` set, and waits for it to print its simulator's address. Its
/// output is drained afterwards, so the server never blocks on a full pipe.
pub async fn spawn_server(env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_witty-bff"))
        .env("WITTY_BFF_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
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
            sim = url.trim().trim_end_matches('/').to_string();
            break;
        }
    }
    assert!(!sim.is_empty(), "witty-bff did not print its simulator address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, pid, port, sim }
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
