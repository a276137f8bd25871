//! JWT verification through the real GraphQL endpoint, for every token source: the HS secret, a
//! public key from a PEM file (RSA, EC), a JWKS served by a test server (start-up fetch, key
//! rotation, rate-limited refreshes, an unreachable key server), and every refusal. The key pairs
//! are test-only fixtures in tests/fixtures/jwt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, data, error_codes, spawn_app_with};

const QUERY: &str = "{ installations { id } }";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn private(name: &str) -> EncodingKey {
    let pem = fixture(name);
    EncodingKey::from_rsa_pem(&pem).or_else(|_| EncodingKey::from_ec_pem(&pem)).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a good token for the seeded owner alice.
fn alice() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs(alg: Algorithm, claims: &Value) -> String {
    sign(alg, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), None, claims)
}

/// Signed with a fixture private key.
fn signed(alg: Algorithm, private_key: &str, kid: Option<&str>, claims: &Value) -> String {
    sign(alg, &private(private_key), kid, claims)
}

async fn assert_accepted(app: &TestApp, token: &str) {
    let reply = app.post_graphql(Some(token), json!({"query": QUERY})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let installations = &data(&reply.body)["installations"];
    assert!(installations.as_array().is_some_and(|i| !i.is_empty()), "{:#}", reply.body);
}

/// Asserts the token is refused with `UNAUTHENTICATED` and a message that does not echo it;
/// returns the message.
async fn assert_refused(app: &TestApp, token: &str) -> String {
    let reply = app.post_graphql(Some(token), json!({"query": QUERY})).await;
    let codes = error_codes(&reply.body);
    assert!(!codes.is_empty() && codes.iter().all(|c| c == "UNAUTHENTICATED"), "{:#}", reply.body);
    assert!(reply.body["data"].is_null() || reply.body["data"]["installations"].is_null(), "{:#}", reply.body);
    let message = reply.body["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    if !token.is_empty() {
        assert!(!reply.body.to_string().contains(token), "the reply echoes the token: {:#}", reply.body);
    }
    message
}

#[tokio::test]
async fn the_hs_secret_verifies_hs256_hs384_and_hs512_tokens() {
    let app = spawn_app_with(|_| {}).await;
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_accepted(&app, &hs(alg, &alice())).await;
    }
    let rs = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &alice());
    assert!(assert_refused(&app, &rs).await.contains("RS256 are not accepted"));
}

#[tokio::test]
async fn an_rsa_public_key_from_a_pem_file_verifies_rs_tokens_and_nothing_else() {
    let app = spawn_app_with(|config| {
        config.jwt_secret = None;
        config.jwt_public_key = Some(fixture_path("test-only-rsa-a.pub.pem"));
    })
    .await;
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        assert_accepted(&app, &signed(alg, "test-only-rsa-a.key.pem", Some("idp-key-1"), &alice())).await;
    }
    // The classic algorithm confusion: HS256 "signed" with the public key file as the secret.
    let confused =
        sign(Algorithm::HS256, &EncodingKey::from_secret(&fixture("test-only-rsa-a.pub.pem")), None, &alice());
    assert!(assert_refused(&app, &confused).await.contains("HS256 are not accepted"));
    assert!(assert_refused(&app, &hs(Algorithm::HS256, &alice())).await.contains("HS256 are not accepted"));
    let other_key = signed(Algorithm::RS256, "test-only-rsa-b.key.pem", None, &alice());
    assert!(assert_refused(&app, &other_key).await.contains("bad signature"));
    let expired =
        signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &json!({"sub": "alice", "exp": now() - 600}));
    assert!(assert_refused(&app, &expired).await.contains("expired"));
}

#[tokio::test]
async fn an_ec_public_key_from_a_pem_file_verifies_es256_tokens_only() {
    let app = spawn_app_with(|config| {
        config.jwt_secret = None;
        config.jwt_public_key = Some(fixture_path("test-only-ec-p256.pub.pem"));
    })
    .await;
    assert_accepted(&app, &signed(Algorithm::ES256, "test-only-ec-p256.key.pem", None, &alice())).await;
    let es384 = signed(Algorithm::ES384, "test-only-ec-p384.key.pem", None, &alice());
    assert!(assert_refused(&app, &es384).await.contains("ES384 are not accepted"));
    let rs256 = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &alice());
    assert!(assert_refused(&app, &rs256).await.contains("RS256 are not accepted"));
    let confused =
        sign(Algorithm::HS256, &EncodingKey::from_secret(&fixture("test-only-ec-p256.pub.pem")), None, &alice());
    assert!(assert_refused(&app, &confused).await.contains("HS256 are not accepted"));
}

#[tokio::test]
async fn a_public_key_file_that_cannot_be_used_stops_the_start_with_its_path() {
    let cases = [
        (PathBuf::from("/nonexistent/idp-public-key.pem"), "cannot read"),
        (fixture_path("test-only-rsa-a.key.pem"), "private key"),
        (PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")), "not a PEM file"),
        (fixture_path("test-only-rsa-1024.pub.pem"), "2048 bits"),
    ];
    for (path, reason) in cases {
        let started = TestApp::builder()
            .bff(|config| {
                config.jwt_secret = None;
                config.jwt_public_key = Some(path.clone());
            })
            .try_spawn()
            .await;
        let error = match started {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e,
        };
        assert!(error.contains(&path.display().to_string()) && error.contains(reason), "{error}");
    }
}

#[tokio::test]
async fn every_refusal_is_unauthenticated_with_a_clear_message() {
    let issuer = "https://idp.example";
    let audience = "witty-bff";
    let app = spawn_app_with(|config| {
        config.jwt_issuer = Some(issuer.into());
        config.jwt_audience = Some(audience.into());
        config.jwt_leeway_secs = 5;
    })
    .await;
    let claims = |extra: Value| {
        let mut c = json!({"sub": "alice", "exp": now() + 600, "iss": issuer, "aud": audience});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    assert_accepted(&app, &hs(Algorithm::HS256, &claims(json!({})))).await;
    // Within the leeway.
    assert_accepted(&app, &hs(Algorithm::HS256, &claims(json!({"exp": now() - 2, "nbf": now() + 2})))).await;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none =
        format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims(json!({})).to_string()));
    let wrong_secret =
        sign(Algorithm::HS256, &EncodingKey::from_secret(b"another-secret-of-some-length"), None, &claims(json!({})));
    let refusals = [
        (alg_none, "alg: none"),
        (hs(Algorithm::HS256, &claims(json!({"sub": null}))), "no 'sub' claim"),
        (hs(Algorithm::HS256, &claims(json!({"sub": ""}))), "no 'sub' claim"),
        (hs(Algorithm::HS256, &claims(json!({"exp": null}))), "no 'exp' claim"),
        (hs(Algorithm::HS256, &claims(json!({"exp": now() - 60}))), "expired"),
        (hs(Algorithm::HS256, &claims(json!({"nbf": now() + 60}))), "not valid yet"),
        (hs(Algorithm::HS256, &claims(json!({"iss": "https://evil.example"}))), "wrong issuer"),
        (hs(Algorithm::HS256, &claims(json!({"iss": null}))), "no 'iss' claim"),
        (hs(Algorithm::HS256, &claims(json!({"aud": "someone-else"}))), "wrong audience"),
        (hs(Algorithm::HS256, &claims(json!({"aud": null}))), "no 'aud' claim"),
        (wrong_secret, "bad signature"),
        ("garbage".to_string(), "not a well-formed JWT"),
        ("a.b.c".to_string(), "not a well-formed JWT"),
    ];
    for (token, reason) in refusals {
        let message = assert_refused(&app, &token).await;
        assert!(message.contains(reason), "expected '{reason}', got '{message}'");
    }
    let reply = app.post_graphql(None, json!({"query": QUERY})).await;
    assert_eq!(error_codes(&reply.body), ["UNAUTHENTICATED"]);
}

/// A JWKS server on a loopback port: serves the keys it is given, counts its hits, can fail.
#[derive(Clone)]
struct JwksServer {
    url: reqwest::Url,
    shared: Arc<Shared>,
}

struct Shared {
    keys: Mutex<Vec<Value>>,
    status: AtomicU16,
    hits: AtomicUsize,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        let shared =
            Arc::new(Shared { keys: Mutex::new(keys), status: AtomicU16::new(200), hits: AtomicUsize::new(0) });
        let app =
            axum::Router::new().route("/.well-known/jwks.json", axum::routing::get(jwks)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url, shared }
    }

    /// Rotates the served keys.
    fn serve(&self, keys: Vec<Value>) {
        *self.shared.keys.lock().unwrap() = keys;
    }

    /// Answers `status` from now on (200: the keys).
    fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let status = shared.status.load(Ordering::SeqCst);
    if status != 200 {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let keys = shared.keys.lock().unwrap().clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

/// The JWK of a fixture public key, with `kid` and, when given, `alg`.
fn jwk(public_pem: &str, kid: &str, alg: Option<&str>) -> Value {
    let pem = fixture(public_pem);
    let key = DecodingKey::from_rsa_pem(&pem).or_else(|_| DecodingKey::from_ec_pem(&pem)).unwrap();
    let mut jwk = serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap();
    jwk["kid"] = kid.into();
    jwk["use"] = "sig".into();
    if let Some(alg) = alg {
        jwk["alg"] = alg.into();
    }
    jwk
}

async fn spawn_jwks_app(server: &JwksServer, min_refresh_secs: Option<u64>) -> TestApp {
    let url = server.url.clone();
    spawn_app_with(move |config| {
        config.jwt_secret = None;
        config.jwt_jwks_url = Some(url);
        if let Some(secs) = min_refresh_secs {
            config.jwt_jwks_min_refresh_secs = secs;
        }
    })
    .await
}

#[tokio::test]
async fn jwks_keys_are_fetched_at_start_and_a_rotated_key_is_picked_up_with_one_refresh() {
    let server = JwksServer::start(vec![
        jwk("test-only-rsa-a.pub.pem", "key-a", Some("RS256")),
        jwk("test-only-ec-p256.pub.pem", "key-ec", None),
    ])
    .await;
    let app = spawn_jwks_app(&server, None).await;
    assert_eq!(server.hits(), 1, "fetched at start-up");

    let token_a = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some("key-a"), &alice());
    assert_accepted(&app, &token_a).await;
    // The EC key has no `alg`: ES256 follows from its curve.
    assert_accepted(&app, &signed(Algorithm::ES256, "test-only-ec-p256.key.pem", Some("key-ec"), &alice())).await;
    // The JWK says RS256.
    let rs512 = signed(Algorithm::RS512, "test-only-rsa-a.key.pem", Some("key-a"), &alice());
    assert!(assert_refused(&app, &rs512).await.contains("RS512 are not accepted"));
    assert_eq!(server.hits(), 1, "known keys are cached");

    // The identity provider rotates to key B.
    server.serve(vec![jwk("test-only-rsa-b.pub.pem", "key-b", Some("RS256"))]);
    let token_b = signed(Algorithm::RS256, "test-only-rsa-b.key.pem", Some("key-b"), &alice());
    assert_accepted(&app, &token_b).await;
    assert_eq!(server.hits(), 2, "one refresh for the new kid");
    assert_accepted(&app, &token_b).await;
    assert_eq!(server.hits(), 2);

    // Key A was withdrawn: its tokens are refused now (and the refresh is rate-limited).
    assert!(assert_refused(&app, &token_a).await.contains("signing key (kid) is unknown"));
    // Signed by B but naming A's kid.
    let mislabelled = signed(Algorithm::RS256, "test-only-rsa-b.key.pem", Some("key-a"), &alice());
    assert_refused(&app, &mislabelled).await;
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_flood_of_random_kids_triggers_at_most_one_refresh() {
    let server = JwksServer::start(vec![jwk("test-only-rsa-a.pub.pem", "key-a", Some("RS256"))]).await;
    let app = spawn_jwks_app(&server, None).await;
    assert_eq!(server.hits(), 1);

    let tokens: Vec<String> = (0..50)
        .map(|_| signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some(&uuid::Uuid::new_v4().to_string()), &alice()))
        .collect();
    let replies =
        futures::future::join_all(tokens.iter().map(|t| app.post_graphql(Some(t), json!({"query": QUERY})))).await;
    for reply in &replies {
        assert_eq!(error_codes(&reply.body), ["UNAUTHENTICATED"], "{:#}", reply.body);
        assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains("unknown"), "{:#}", reply.body);
    }
    // One after the other, they cannot share a fetch in flight: only the rate limit holds them.
    for _ in 0..10 {
        let kid = uuid::Uuid::new_v4().to_string();
        assert_refused(&app, &signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some(&kid), &alice())).await;
    }
    assert!(server.hits() <= 2, "60 random kids made {} refreshes", server.hits() - 1);

    assert_accepted(&app, &signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some("key-a"), &alice())).await;
    assert!(server.hits() <= 2);
}

#[tokio::test]
async fn the_jwks_refresh_interval_is_configurable() {
    let server = JwksServer::start(vec![jwk("test-only-rsa-a.pub.pem", "key-a", None)]).await;
    let app = spawn_jwks_app(&server, Some(0)).await;
    server.serve(vec![jwk("test-only-rsa-b.pub.pem", "key-b", None)]);
    assert_accepted(&app, &signed(Algorithm::RS256, "test-only-rsa-b.key.pem", Some("key-b"), &alice())).await;
    // With no interval, the next rotation is picked up at once too.
    server.serve(vec![jwk("test-only-rsa-a.pub.pem", "key-a2", None)]);
    assert_accepted(&app, &signed(Algorithm::PS256, "test-only-rsa-a.key.pem", Some("key-a2"), &alice())).await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_jwks_down_at_start_does_not_stop_the_app_and_is_fetched_on_first_use() {
    let server = JwksServer::start(vec![jwk("test-only-ec-p256.pub.pem", "key-ec", Some("ES256"))]).await;
    server.answer(503);
    let app = spawn_jwks_app(&server, None).await;
    assert_eq!(server.hits(), 1);
    server.answer(200);
    assert_accepted(&app, &signed(Algorithm::ES256, "test-only-ec-p256.key.pem", Some("key-ec"), &alice())).await;
    assert_eq!(server.hits(), 2);

    // Nothing listens there at all.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/jwks.json", listener.local_addr().unwrap())
    };
    let app = spawn_app_with(move |config| {
        config.jwt_secret = None;
        config.jwt_jwks_url = Some(closed.parse().unwrap());
    })
    .await;
    let token = signed(Algorithm::ES256, "test-only-ec-p256.key.pem", Some("key-ec"), &alice());
    assert!(assert_refused(&app, &token).await.contains("signing keys are unavailable"));
}
