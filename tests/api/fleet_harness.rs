//! The fleet harness: a [`RedisServer`] of the test's own, one simulator shared by N witty-bff
//! replicas on that Redis ([`TestFleet`]), each in its own runtime so that stopping one is a
//! crash, and a [`TestLb`] in front of them, which the upstream's webhook deliveries go through.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use witty_bff::app::App;
use witty_bff::config::{Config, Secret};

use crate::helpers::*;

/// Set (to anything) when the fleet tests must run: a missing `redis-server` then fails them.
const REQUIRE_REDIS: &str = "WITTY_BFF_TEST_REQUIRE_REDIS";

// ---- Redis ----

/// A `redis-server` of the test's own on a free port, without persistence; killed on drop.
pub struct RedisServer {
    port: u16,
    /// What clients must authenticate with (`requirepass`), if anything.
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or says on stderr why the fleet tests are not run and returns `None` when
    /// `redis-server` is not on the PATH (a failure instead when [`REQUIRE_REDIS`] is set).
    pub async fn spawn() -> Option<RedisServer> {
        RedisServer::spawn_with(None).await
    }

    /// As [`Self::spawn`], requiring `password` of its clients when one is given.
    pub async fn spawn_with(password: Option<&str>) -> Option<RedisServer> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !found {
            if std::env::var_os(REQUIRE_REDIS).is_some() {
                panic!("redis-server not found on PATH, and {REQUIRE_REDIS} is set: install redis-server");
            }
            // Straight to stderr: the test harness captures `eprintln!` and shows it only on failure.
            let _ = writeln!(
                std::io::stderr(),
                "fleet tests not run: redis-server not found on PATH (install redis-server; CI requires it)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut redis = RedisServer { port, password: password.map(str::to_string), child: None };
        redis.start().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts `redis-server` on its port (again, after [`Self::stop`]: empty) and waits until it
    /// answers `PING`.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password]);
        }
        let child = Command::new("redis-server").args(args).stdout(Stdio::null()).spawn().expect("redis-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.answers().await {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server on port {port} exited before answering: {status}");
            }
            assert!(tokio::time::Instant::now() < deadline, "redis-server on port {port} did not answer PING");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether it answers `PING` with `+PONG` (or, requiring a password, with `-NOAUTH`).
    async fn answers(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if conn.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        let expected = if self.password.is_some() { b"-NOAUTH" } else { b"+PONG\r\n" };
        conn.read_exact(&mut reply).await.is_ok() && reply == *expected
    }

    /// Stops its process without closing anything (`SIGSTOP`): a Redis that no longer answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes it after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id().to_string();
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// Kills it (a Redis gone away) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- The load balancer ----

/// A TCP proxy forwarding each connection to the next replica in turn, skipping those that do not
/// take it (stopped ones); WebSocket upgrades pass through as any bytes do.
pub struct TestLb {
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    replicas: Arc<Mutex<Vec<SocketAddr>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TestLb {
    /// Listens on a free port, with no replica yet.
    async fn start() -> TestLb {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the load balancer listens");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let replicas: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let targets = replicas.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let order = targets.lock().unwrap().clone();
                let first = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(client, order, first));
            }
        });
        TestLb { base, replicas, accepting }
    }

    fn set_replicas(&self, replicas: Vec<SocketAddr>) {
        *self.replicas.lock().unwrap() = replicas;
    }
}

/// Forwards `client` to the first replica from `first` on (round the list) that takes it.
async fn forward(mut client: TcpStream, replicas: Vec<SocketAddr>, first: usize) {
    for k in 0..replicas.len() {
        if let Ok(mut replica) = TcpStream::connect(replicas[(first + k) % replicas.len()]).await {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut replica).await;
            return;
        }
    }
}

impl Drop for TestLb {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

// ---- The fleet ----

/// One simulator, a Redis, N witty-bff replicas sharing both (with the same secrets), and a load
/// balancer in front of them that is their public URL. Dropped: replicas first, then the rest.
pub struct TestFleet {
    replicas: Vec<Replica>,
    pub lb: TestLb,
    pub redis: RedisServer,
    sim: TestSim,
}

impl TestFleet {
    /// A fleet of `n` replicas on a Redis of its own; `None` when there is no `redis-server` to
    /// run (see [`RedisServer::spawn`]): the test then returns.
    pub async fn spawn(n: usize) -> Option<TestFleet> {
        TestFleet::spawn_with(n, RedisServer::spawn().await?, |_| {}).await
    }

    /// A fleet of `n` replicas on `redis`, their configuration changed by `tune`.
    pub async fn spawn_with(n: usize, redis: RedisServer, tune: impl Fn(&mut Config)) -> Option<TestFleet> {
        let sim = TestSim::spawn(TestSim::test_config()).await;
        let lb = TestLb::start().await;
        let mut config = Config {
            redis_url: Some(Secret::new(redis.url())),
            fleet_lease_ms: 1_000,
            watch_grace_secs: 1,
            public_url: Some(lb.base.parse().unwrap()),
            ..TestApp::config(&sim)
        };
        tune(&mut config);
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(Replica::start(i, config.clone(), sim.client.clone()).await);
        }
        lb.set_replicas(replicas.iter().map(|r| r.bff.addr()).collect());
        Some(TestFleet { replicas, lb, redis, sim })
    }

    /// Replica `i`, to talk to over HTTP and WebSocket.
    pub fn replica(&self, i: usize) -> &TestBff {
        &self.replicas[i].bff
    }

    pub fn sim(&self) -> &TestSim {
        &self.sim
    }

    /// Crashes replica `i`: its runtime goes with every task of it, background ones included, and
    /// nothing is cleaned up. Returns once its address refuses connections.
    pub async fn stop(&mut self, i: usize) {
        self.replicas[i].stop();
        let addr = self.replicas[i].bff.addr();
        eventually(&format!("replica {i} to refuse connections"), || async {
            TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await;
    }
}

/// A witty-bff running in a runtime of its own, on a thread of its own.
struct Replica {
    bff: TestBff,
    /// Dropped or sent to: the thread drops the runtime without waiting for its tasks.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    async fn start(i: usize, config: Config, client: reqwest::Client) -> Replica {
        let (started, addr) = oneshot::channel::<Result<SocketAddr, String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let app_config = config.clone();
        let thread = std::thread::Builder::new()
            .name(format!("replica-{i}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("replica-{i}-worker"))
                    .enable_all()
                    .build()
                    .expect("a runtime for the replica");
                match runtime.block_on(App::build(app_config)) {
                    Ok(app) => {
                        let _ = started.send(Ok(app.addr()));
                        runtime.spawn(app.run_until_stopped(std::future::pending()));
                        let _ = runtime.block_on(stopped);
                    }
                    Err(e) => {
                        let _ = started.send(Err(format!("{e:#}")));
                    }
                }
                runtime.shutdown_background();
            })
            .expect("a thread for the replica");
        let addr = addr.await.expect("the replica's thread answers").unwrap_or_else(|e| panic!("replica {i}: {e}"));
        let bff = TestBff::new(format!("http://{addr}"), client, config);
        Replica { bff, stop: Some(stop), thread: Some(thread) }
    }

    fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the replica's thread ends");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}
