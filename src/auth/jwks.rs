//! The identity provider's JWKS: fetched at start-up, cached, and fetched again when a token names
//! an unknown `kid` or the keys grow old.
//!
//! Fetches that tokens trigger are rate-limited (at most one per `min_refresh`), so a flood of
//! tokens with random `kid`s cannot hammer the key server; callers that wait while a fetch is in
//! flight use its result instead of fetching again. A failed fetch keeps the keys already known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use reqwest::Url;
use serde::Deserialize;

use super::keys::VerifyingKey;

/// A JWKS larger than this is refused (a real one is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The keys of one fetch.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<VerifyingKey>,
    /// When they were fetched; `None` until a fetch has succeeded.
    pub fetched_at: Option<Instant>,
}

impl KeySet {
    pub(super) fn loaded(&self) -> bool {
        self.fetched_at.is_some()
    }

    pub(super) fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A cached JWKS. Cloning shares the cache.
#[derive(Clone)]
pub(crate) struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: Url,
    /// The URL without credentials or query, for logs and `Debug`.
    shown: String,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Fetches attempted (successful or not); bumped after the keys are stored.
    attempts: AtomicU64,
    /// Held while fetching: concurrent refreshes queue here and reuse the fetch in flight.
    refresh: Arc<tokio::sync::Mutex<RefreshState>>,
    min_refresh: Duration,
    max_age: Duration,
}

#[derive(Default)]
struct RefreshState {
    /// The last fetch a token triggered (the start-up fetch does not count).
    last: Option<Instant>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.inner.shown)
            .field("keys", &self.current().1.keys)
            .field("min_refresh", &self.inner.min_refresh)
            .field("max_age", &self.inner.max_age)
            .finish()
    }
}

/// `url` without user info and query, which may carry credentials.
pub(crate) fn shown_url(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

impl Jwks {
    pub(super) fn new(url: Url, min_refresh: Duration, max_age: Duration, timeout: Duration) -> Result<Jwks, String> {
        let shown = shown_url(&url);
        match url.scheme() {
            "https" => {}
            "http" => {
                let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let loopback = host.eq_ignore_ascii_case("localhost")
                    || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    tracing::warn!(url = %shown, "the JWKS URL is plain http: keys fetched from it can be tampered with on the way");
                }
            }
            other => return Err(format!("the JWKS URL must be http(s), not {other}: {shown}")),
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?;
        Ok(Jwks {
            inner: Arc::new(Inner {
                url,
                shown,
                client,
                keys: RwLock::new(Arc::new(KeySet::default())),
                attempts: AtomicU64::new(0),
                refresh: Arc::new(tokio::sync::Mutex::new(RefreshState::default())),
                min_refresh,
                max_age,
            }),
        })
    }

    /// The start-up fetch: a failure is logged and the keys are fetched on first use.
    pub(super) async fn warm_up(&self) {
        let _fetching = self.inner.refresh.lock().await;
        self.inner.fetch_and_store().await;
    }

    /// The number of fetches attempted so far, and the keys known now (read in that order).
    pub(super) fn current(&self) -> (u64, Arc<KeySet>) {
        let attempts = self.inner.attempts.load(Ordering::SeqCst);
        (attempts, self.inner.snapshot())
    }

    /// Fetches the keys again for a token whose key is not in the set read after `seen` fetches,
    /// unless a fetch happened since (its result is used) or the last token-triggered fetch is
    /// less than `min_refresh` old (rate-limited: the set is returned as it is).
    pub(super) async fn refresh(&self, seen: u64) -> Arc<KeySet> {
        let mut state = self.inner.refresh.lock().await;
        if self.inner.attempts.load(Ordering::SeqCst) != seen {
            return self.inner.snapshot();
        }
        if let Some(last) = state.last
            && last.elapsed() < self.inner.min_refresh
        {
            tracing::debug!(url = %self.inner.shown, "JWKS refresh skipped: rate-limited");
            return self.inner.snapshot();
        }
        state.last = Some(Instant::now());
        self.inner.fetch_and_store().await;
        self.inner.snapshot()
    }

    /// Starts a background fetch when `set` is older than `max_age` (so that keys the identity
    /// provider withdrew stop verifying), within the same rate limit; the caller goes on with
    /// `set`. Needs a tokio runtime.
    pub(super) fn refresh_if_stale(&self, set: &KeySet) {
        let stale = set.fetched_at.is_some_and(|at| at.elapsed() >= self.inner.max_age);
        if !stale {
            return;
        }
        let Ok(mut state) = self.inner.refresh.clone().try_lock_owned() else {
            return; // a fetch is in flight
        };
        if state.last.is_some_and(|last| last.elapsed() < self.inner.min_refresh) {
            return;
        }
        state.last = Some(Instant::now());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _state = state;
            inner.fetch_and_store().await;
        });
    }
}

impl Inner {
    fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One fetch; the caller holds `refresh`.
    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(keys) => {
                if keys.is_empty() {
                    tracing::warn!(url = %self.shown, "the JWKS has no usable signing key: every token will be refused");
                } else {
                    tracing::info!(url = %self.shown, keys = keys.len(), "fetched the JWKS");
                }
                let set = Arc::new(KeySet { keys, fetched_at: Some(Instant::now()) });
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = set;
            }
            Err(cause) => {
                let known = self.snapshot().keys.len();
                tracing::warn!(url = %self.shown, %cause, known_keys = known, "cannot fetch the JWKS; keeping the keys already known");
            }
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading failed: {}", e.without_url()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let set: RawSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for raw in set.keys {
            let kid = raw.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let key = serde_json::from_value::<Jwk>(raw)
                .map_err(|_| "not a JWK".to_string())
                .and_then(|jwk| VerifyingKey::from_jwk(&jwk));
            match key {
                Ok(key) => keys.push(key),
                Err(reason) => tracing::warn!(url = %self.shown, ?kid, %reason, "skipping a key of the JWKS"),
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
impl Jwks {
    /// Waits until no fetch is in flight (a background one included).
    pub(super) async fn idle(&self) {
        drop(self.inner.refresh.lock().await);
    }
}

/// A JWKS server on a loopback port for the tests of this module and of the verifier: it counts
/// its hits, can switch keys, fail, or hold its answers until released.
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use jsonwebtoken::DecodingKey;
    use jsonwebtoken::jwk::Jwk;
    use reqwest::Url;
    use serde_json::{Value, json};
    use tokio::sync::{mpsc, watch};

    use crate::auth::keys::tests::fixture;

    struct Shared {
        keys: Mutex<Vec<Value>>,
        status: AtomicU16,
        hits: AtomicUsize,
        open: watch::Sender<bool>,
        hit_tx: mpsc::UnboundedSender<usize>,
    }

    pub(crate) struct JwksServer {
        pub url: Url,
        shared: Arc<Shared>,
    }

    impl JwksServer {
        /// Serves `keys`; every hit is also sent on the returned channel.
        pub(crate) async fn start(keys: Vec<Value>) -> (JwksServer, mpsc::UnboundedReceiver<usize>) {
            let (hit_tx, hit_rx) = mpsc::unbounded_channel();
            let shared = Arc::new(Shared {
                keys: Mutex::new(keys),
                status: AtomicU16::new(200),
                hits: AtomicUsize::new(0),
                open: watch::Sender::new(true),
                hit_tx,
            });
            let app = axum::Router::new().route("/jwks.json", axum::routing::get(jwks)).with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap()).parse().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (JwksServer { url, shared }, hit_rx)
        }

        pub(crate) fn serve(&self, keys: Vec<Value>) {
            *self.shared.keys.lock().unwrap() = keys;
        }

        /// Answers with `status` (200: the keys).
        pub(crate) fn answer(&self, status: u16) {
            self.shared.status.store(status, Ordering::SeqCst);
        }

        pub(crate) fn hits(&self) -> usize {
            self.shared.hits.load(Ordering::SeqCst)
        }

        /// Holds every answer until [`release`](Self::release).
        pub(crate) fn hold(&self) {
            self.shared.open.send_replace(false);
        }

        pub(crate) fn release(&self) {
            self.shared.open.send_replace(true);
        }
    }

    async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
        let hit = shared.hits.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = shared.hit_tx.send(hit);
        let _ = shared.open.subscribe().wait_for(|open| *open).await;
        let status = shared.status.load(Ordering::SeqCst);
        if status != 200 {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
        let keys = shared.keys.lock().unwrap().clone();
        axum::Json(json!({ "keys": keys })).into_response()
    }

    /// The JWK of a fixture public key, with `kid` and, when given, `alg`.
    pub(crate) fn jwk(public_pem: &str, kid: &str, alg: Option<&str>) -> Value {
        let pem = fixture(public_pem);
        let key = DecodingKey::from_rsa_pem(&pem).or_else(|_| DecodingKey::from_ec_pem(&pem)).unwrap();
        let mut jwk = serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap();
        jwk["kid"] = kid.into();
        if let Some(alg) = alg {
            jwk["alg"] = alg.into();
        }
        jwk
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_server::{JwksServer, jwk};
    use super::*;

    fn jwks(server: &JwksServer, min_refresh: Duration, max_age: Duration) -> Jwks {
        Jwks::new(server.url.clone(), min_refresh, max_age, Duration::from_secs(5)).unwrap()
    }

    /// What the verifier does for a token naming `kid`: the key, refreshing the set once if needed.
    async fn lookup(jwks: &Jwks, kid: &str) -> Option<Vec<jsonwebtoken::Algorithm>> {
        let (seen, mut set) = jwks.current();
        if set.find(kid).is_none() {
            set = jwks.refresh(seen).await;
        }
        set.find(kid).map(|k| k.algorithms.clone())
    }

    #[tokio::test]
    async fn concurrent_refreshes_coalesce_into_one_fetch() {
        let (server, mut hits) = JwksServer::start(vec![jwk("test-only-rsa-a.pub.pem", "a", Some("RS256"))]).await;
        // No rate limit: only the coalescing keeps this to one fetch.
        let jwks = jwks(&server, Duration::ZERO, Duration::from_secs(3600));
        jwks.warm_up().await;
        assert_eq!((hits.recv().await, jwks.current().1.keys.len()), (Some(1), 1));

        server.serve(vec![jwk("test-only-rsa-b.pub.pem", "b", Some("RS256"))]);
        server.hold();
        let lookups = {
            let jwks = jwks.clone();
            // One task (the test runtime has one thread): every lookup starts before the fetch
            // can reach the server.
            tokio::spawn(async move { futures::future::join_all((0..20).map(|_| lookup(&jwks, "b"))).await })
        };
        assert_eq!(hits.recv().await, Some(2));
        server.release();
        let found = lookups.await.unwrap();
        assert!(found.iter().all(|f| f.as_deref() == Some(&[jsonwebtoken::Algorithm::RS256][..])), "{found:?}");
        assert_eq!(server.hits(), 2, "20 concurrent refreshes, one fetch");
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_interval() {
        let (server, _hits) = JwksServer::start(vec![jwk("test-only-rsa-a.pub.pem", "a", None)]).await;
        let jwks = jwks(&server, Duration::from_secs(3600), Duration::from_secs(3600));
        jwks.warm_up().await;
        for i in 0..10 {
            assert!(lookup(&jwks, &format!("random-{i}")).await.is_none());
        }
        assert_eq!(server.hits(), 2, "the start-up fetch and one refresh");
        assert!(lookup(&jwks, "a").await.is_some());
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_known_keys_and_a_failed_start_fetches_on_first_use() {
        let (server, _hits) = JwksServer::start(vec![jwk("test-only-ec-p256.pub.pem", "e", None)]).await;
        server.answer(503);
        let jwks = jwks(&server, Duration::ZERO, Duration::from_secs(3600));
        jwks.warm_up().await;
        assert!(!jwks.current().1.loaded());
        server.answer(200);
        assert_eq!(lookup(&jwks, "e").await, Some(vec![jsonwebtoken::Algorithm::ES256]));
        server.answer(500);
        assert!(lookup(&jwks, "unknown").await.is_none());
        assert!(lookup(&jwks, "e").await.is_some(), "the keys survive a failed refresh");
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn old_keys_are_refreshed_in_the_background() {
        let (server, _hits) = JwksServer::start(vec![jwk("test-only-rsa-a.pub.pem", "a", None)]).await;
        let jwks = jwks(&server, Duration::ZERO, Duration::ZERO);
        jwks.warm_up().await;
        server.serve(vec![jwk("test-only-rsa-b.pub.pem", "b", None)]);
        let (_, set) = jwks.current();
        assert!(set.find("a").is_some());
        jwks.refresh_if_stale(&set);
        jwks.idle().await;
        assert_eq!(server.hits(), 2);
        let (_, set) = jwks.current();
        assert!(set.find("a").is_none() && set.find("b").is_some(), "a withdrawn key stops verifying");
    }

    #[test]
    fn only_http_urls_are_taken_and_the_debug_output_hides_credentials() {
        let url: Url = "https://user:pass@idp.example/keys?token=t0p".parse().unwrap();
        let jwks = Jwks::new(url, Duration::ZERO, Duration::ZERO, Duration::from_secs(1)).unwrap();
        let shown = format!("{jwks:?}");
        assert!(shown.contains("https://idp.example/keys") && !shown.contains("pass") && !shown.contains("t0p"));
        let file: Url = "file:///etc/keys.json".parse().unwrap();
        assert!(Jwks::new(file, Duration::ZERO, Duration::ZERO, Duration::from_secs(1)).is_err());
    }
}
