//! Verifying bearer tokens with jsonwebtoken, against every configured key source: an HS secret, a
//! public key from a PEM file, a JWKS URL. A key accepts only the algorithms of its own type
//! (never `alg: none`, never an RSA public key used as an HMAC secret); `exp` (required) and `nbf`
//! with a small leeway; `sub` required; issuer and audience when configured.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeZone, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use reqwest::Url;
use serde::Deserialize;

use super::Caller;
use super::jwks::{Jwks, KeySet, shown_url};
use super::keys::{ASYMMETRIC, VerifyingKey};

/// Why a token was refused. The message is safe to show the client: it never echoes the token
/// (nor its `kid` or claims).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send 'Authorization: Bearer <JWT>'")]
    Missing,
    #[error("the Authorization header must be 'Bearer <JWT>'")]
    BadScheme,
    #[error("invalid token: not a well-formed JWT")]
    Malformed,
    #[error("invalid token: unsigned tokens (alg: none) are refused")]
    Unsigned,
    #[error("invalid token: its signing algorithm is not supported")]
    UnsupportedAlgorithm,
    #[error("invalid token: its header has critical extensions (crit), which are not supported")]
    UnsupportedHeader,
    #[error("invalid token: tokens signed with {0:?} are not accepted here")]
    AlgorithmNotAllowed(Algorithm),
    #[error("invalid token: its signing key (kid) is unknown")]
    UnknownKey,
    #[error("the token cannot be checked now: the identity provider's signing keys are unavailable; try again later")]
    KeysUnavailable,
    #[error("invalid token: bad signature")]
    BadSignature,
    #[error("the token has expired: get a new one")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("invalid token: wrong issuer")]
    WrongIssuer,
    #[error("invalid token: wrong audience")]
    WrongAudience,
    #[error("invalid token: it has no '{0}' claim")]
    MissingClaim(&'static str),
    #[error("invalid token: its '{0}' claim is malformed")]
    BadClaim(&'static str),
    /// Any other refusal; the text is written by the caller and must not contain the token.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// How tokens are checked. At least one key source (`secret`, `public_key`, `jwks_url`) is needed;
/// several may be combined.
#[derive(Clone)]
pub(crate) struct JwtSettings {
    /// HS256/384/512 shared secret.
    pub secret: Option<String>,
    /// PEM file with an RSA (RS256/384/512, PS256/384/512), EC P-256 (ES256), EC P-384 (ES384) or
    /// Ed25519 (EdDSA) public key.
    pub public_key: Option<PathBuf>,
    /// The identity provider's JWKS.
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Least time between two JWKS fetches triggered by tokens (an unknown `kid`, old keys).
    pub jwks_min_refresh: Duration,
    /// Keys older than this are fetched again in the background.
    pub jwks_max_age: Duration,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout: Duration,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            secret: None,
            public_key: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            jwks_min_refresh: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(3600),
            jwks_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key", &self.public_key)
            .field("jwks_url", &self.jwks_url.as_ref().map(shown_url))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("jwks_timeout", &self.jwks_timeout)
            .finish()
    }
}

/// The claims read beyond what jsonwebtoken validates.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
}

/// What the verifier reads from a token's header before choosing a key.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        #[derive(Deserialize)]
        struct Raw {
            alg: Option<serde_json::Value>,
            kid: Option<serde_json::Value>,
            crit: Option<serde_json::Value>,
        }
        let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
        let raw: Raw = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
        let alg = raw.alg.as_ref().and_then(|a| a.as_str()).ok_or(AuthError::Malformed)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::Unsigned);
        }
        if raw.crit.is_some() {
            return Err(AuthError::UnsupportedHeader);
        }
        let alg = alg.parse::<Algorithm>().map_err(|_| AuthError::UnsupportedAlgorithm)?;
        let kid = match raw.kid {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(kid)) => Some(kid),
            Some(_) => return Err(AuthError::Malformed),
        };
        Ok(TokenHeader { alg, kid })
    }
}

/// Checks tokens against the configured keys.
pub(crate) struct Verifier {
    /// The HS secret and the PEM key: they verify tokens whatever `kid` they name.
    keys: Vec<VerifyingKey>,
    jwks: Option<Jwks>,
    /// Claims rules; the algorithm is set per token, after the key is chosen.
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("jwks", &self.jwks)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.validation.leeway)
            .finish()
    }
}

impl Verifier {
    /// Builds the verifier without touching the network: reads the PEM file (a file that cannot
    /// be read or parsed is an error naming it), prepares the JWKS client. Call
    /// [`warm_up`](Verifier::warm_up) to fetch the JWKS at start-up.
    pub(crate) fn new(settings: &JwtSettings) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.secret {
            if secret.len() < 16 {
                return Err("the JWT secret must be at least 16 characters".into());
            }
            keys.push(VerifyingKey::from_secret(secret));
        }
        if let Some(path) = &settings.public_key {
            let origin = format!("the JWT public key file {}", path.display());
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
            keys.push(VerifyingKey::from_pem(&pem, &origin)?);
        }
        let jwks = match &settings.jwks_url {
            Some(url) => {
                Some(Jwks::new(url.clone(), settings.jwks_min_refresh, settings.jwks_max_age, settings.jwks_timeout)?)
            }
            None => None,
        };
        if keys.is_empty() && jwks.is_none() {
            return Err("no key to verify tokens with: set a JWT secret, a public key file or a JWKS URL".into());
        }

        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = HashSet::from(["exp".to_string(), "sub".to_string()]);
        match &settings.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        Ok(Verifier { keys, jwks, validation })
    }

    /// Fetches the JWKS, when one is configured. A failure is logged, not returned: the keys are
    /// then fetched when the first token needs them.
    pub(crate) async fn warm_up(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.warm_up().await;
        }
    }

    /// Reads `Authorization` header text into a verified caller.
    pub(crate) async fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::BadScheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::BadScheme);
        }
        self.verify(token.trim()).await
    }

    /// Verifies a bare token (no `Bearer ` prefix).
    /// How long after its `exp` a token is still accepted.
    pub(crate) fn leeway(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.validation.leeway)
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let result = self.check(token).await;
        if let Err(reason) = &result {
            tracing::debug!(%reason, "bearer token refused");
        }
        result
    }

    async fn check(&self, token: &str) -> Result<Caller, AuthError> {
        let TokenHeader { alg, kid } = TokenHeader::parse(token)?;
        let jwks = self.jwks.as_ref().filter(|_| ASYMMETRIC.contains(&alg));
        let mut refusal = AuthError::AlgorithmNotAllowed(alg);
        for key in self.keys.iter().filter(|k| k.algorithms.contains(&alg)) {
            match self.decode(token, key, alg) {
                Err(AuthError::BadSignature) => refusal = AuthError::BadSignature,
                // Right signature: the claims decide.
                decided => return decided,
            }
        }
        match jwks {
            Some(jwks) => self.check_with_jwks(jwks, token, alg, kid.as_deref()).await,
            None => Err(refusal),
        }
    }

    async fn check_with_jwks(
        &self,
        jwks: &Jwks,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let (seen, mut set) = jwks.current();
        let missing = |set: &KeySet| !set.loaded() || kid.is_some_and(|kid| set.find(kid).is_none());
        if missing(&set) {
            set = jwks.refresh(seen).await;
        } else {
            jwks.refresh_if_stale(&set);
        }
        if !set.loaded() {
            return Err(AuthError::KeysUnavailable);
        }
        match kid {
            Some(kid) => {
                let key = set.find(kid).ok_or(AuthError::UnknownKey)?;
                if !key.algorithms.contains(&alg) {
                    return Err(AuthError::AlgorithmNotAllowed(alg));
                }
                self.decode(token, key, alg)
            }
            None => {
                let mut refusal = AuthError::AlgorithmNotAllowed(alg);
                for key in set.keys.iter().filter(|k| k.algorithms.contains(&alg)) {
                    match self.decode(token, key, alg) {
                        Err(AuthError::BadSignature) => refusal = AuthError::BadSignature,
                        decided => return decided,
                    }
                }
                Err(refusal)
            }
        }
    }

    /// Verifies `token` with one key that fits `alg`.
    fn decode(&self, token: &str, key: &VerifyingKey, alg: Algorithm) -> Result<Caller, AuthError> {
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| refusal(&e, alg))?;
        let sub = match data.claims.sub {
            Some(serde_json::Value::String(sub)) if !sub.trim().is_empty() => sub,
            _ => return Err(AuthError::MissingClaim("sub")),
        };
        let exp = data.claims.exp.as_ref().and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)));
        let expires_at = exp.and_then(|e| Utc.timestamp_opt(e, 0).single());
        Ok(Caller::new(sub, token, expires_at))
    }
}

/// The refusal for a jsonwebtoken error.
fn refusal(e: &jsonwebtoken::errors::Error, alg: Algorithm) -> AuthError {
    let claim = |c: &str| match c {
        "exp" => "exp",
        "nbf" => "nbf",
        "sub" => "sub",
        "iss" => "iss",
        "aud" => "aud",
        _ => "required",
    };
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(claim(c)),
        ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(claim(c)),
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed(alg),
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => {
            tracing::warn!(?alg, "a configured key cannot verify signatures");
            AuthError::BadSignature
        }
        _ => AuthError::Malformed,
    }
}

/// An HS256 token for `sub`, valid `ttl_secs` (the dev tokens of `witty-bff token`).
pub fn mint_dev_token(secret: &str, sub: &str, ttl_secs: i64, issuer: Option<&str>, audience: Option<&str>) -> String {
    let now = Utc::now().timestamp();
    let mut claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + ttl_secs});
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    if let Some(aud) = audience {
        claims["aud"] = aud.into();
    }
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::jwks::test_server::{JwksServer, jwk};
    use crate::auth::keys::tests::fixture;

    const SECRET: &str = "a-test-secret-of-some-length";

    fn fixture_path(name: &str) -> PathBuf {
        PathBuf::from(format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    fn verifier() -> Verifier {
        Verifier::new(&JwtSettings { secret: Some(SECRET.into()), leeway_secs: 5, ..Default::default() }).unwrap()
    }

    fn pem_verifier(public_key: &str, secret: Option<&str>) -> Verifier {
        let settings = JwtSettings {
            secret: secret.map(str::to_owned),
            public_key: Some(fixture_path(public_key)),
            leeway_secs: 5,
            ..Default::default()
        };
        Verifier::new(&settings).unwrap()
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    fn claims(sub: &str) -> Value {
        json!({"sub": sub, "exp": now() + 60})
    }

    fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
        jsonwebtoken::encode(header, claims, key).unwrap()
    }

    fn hs(alg: Algorithm, claims: &Value) -> String {
        sign(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
    }

    fn private(name: &str) -> EncodingKey {
        let pem = fixture(name);
        EncodingKey::from_rsa_pem(&pem)
            .or_else(|_| EncodingKey::from_ec_pem(&pem))
            .or_else(|_| EncodingKey::from_ed_pem(&pem))
            .unwrap()
    }

    fn signed(alg: Algorithm, private_key: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        sign(&header, claims, &private(private_key))
    }

    /// A token with a hand-written header and `signature`.
    fn raw(header: &str, claims: &Value, signature: &str) -> String {
        format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[tokio::test]
    async fn accepts_a_minted_token_and_refuses_tampering() {
        let token = mint_dev_token(SECRET, "alice", 60, None, None);
        let caller = verifier().verify(&token).await.unwrap();
        assert_eq!((&*caller.sub, caller.token()), ("alice", token.as_str()));
        assert!(caller.expires_at.is_some());
        let other = mint_dev_token("another-secret-of-some-length", "alice", 60, None, None);
        assert_eq!(verifier().verify(&other).await.unwrap_err(), AuthError::BadSignature);
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(claims("bob").to_string()));
        assert_eq!(verifier().verify(&forged).await.unwrap_err(), AuthError::BadSignature);
        let expired = mint_dev_token(SECRET, "alice", -60, None, None);
        assert_eq!(verifier().verify(&expired).await.unwrap_err(), AuthError::Expired);
        assert_eq!(verifier().verify_header(None).await.unwrap_err(), AuthError::Missing);
        assert_eq!(verifier().verify_header(Some("Basic abc")).await.unwrap_err(), AuthError::BadScheme);
        assert_eq!(verifier().verify_header(Some("Bearer")).await.unwrap_err(), AuthError::BadScheme);
        assert_eq!(&*verifier().verify_header(Some(&format!("bearer  {token} "))).await.unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn the_secret_verifies_hs256_hs384_and_hs512() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(&*verifier().verify(&hs(alg, &claims("alice"))).await.unwrap().sub, "alice", "{alg:?}");
        }
        let rs = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &claims("alice"));
        assert_eq!(verifier().verify(&rs).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::RS256));
    }

    #[tokio::test]
    async fn unsigned_tokens_are_refused_however_alg_none_is_spelled() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            for signature in ["", "c2ln"] {
                let token = raw(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &claims("alice"), signature);
                assert_eq!(verifier().verify(&token).await.unwrap_err(), AuthError::Unsigned, "{alg}");
            }
        }
    }

    #[tokio::test]
    async fn claims_are_checked_with_the_leeway() {
        let v = verifier(); // 5 s of leeway
        let refused = [
            (json!({"exp": now() + 60}), AuthError::MissingClaim("sub")),
            (json!({"sub": "", "exp": now() + 60}), AuthError::MissingClaim("sub")),
            (json!({"sub": "  ", "exp": now() + 60}), AuthError::MissingClaim("sub")),
            (json!({"sub": 42, "exp": now() + 60}), AuthError::MissingClaim("sub")),
            (json!({"sub": "alice"}), AuthError::MissingClaim("exp")),
            // jsonwebtoken counts an `exp` that is not a number as missing.
            (json!({"sub": "alice", "exp": "tomorrow"}), AuthError::MissingClaim("exp")),
            (json!({"sub": "alice", "exp": now() - 60}), AuthError::Expired),
            (json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 60}), AuthError::NotYetValid),
            (json!({"sub": "alice", "exp": now() + 600, "nbf": "later"}), AuthError::BadClaim("nbf")),
        ];
        for (claims, refusal) in refused {
            assert_eq!(v.verify(&hs(Algorithm::HS256, &claims)).await.unwrap_err(), refusal, "{claims}");
        }
        let within_leeway = json!({"sub": "alice", "exp": now() - 2, "nbf": now() + 2});
        assert!(v.verify(&hs(Algorithm::HS256, &within_leeway)).await.is_ok());
        let float_exp = json!({"sub": "alice", "exp": (now() + 60) as f64 + 0.5});
        assert!(v.verify(&hs(Algorithm::HS256, &float_exp)).await.unwrap().expires_at.is_some());
    }

    #[tokio::test]
    async fn issuer_and_audience_are_required_when_configured() {
        let v = Verifier::new(&JwtSettings {
            secret: Some(SECRET.into()),
            issuer: Some("https://idp.example".into()),
            audience: Some("witty-bff".into()),
            ..Default::default()
        })
        .unwrap();
        let exp = now() + 60;
        let good = json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "witty-bff"});
        assert!(v.verify(&hs(Algorithm::HS256, &good)).await.is_ok());
        let audiences = json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": ["x", "witty-bff"]});
        assert!(v.verify(&hs(Algorithm::HS256, &audiences)).await.is_ok());
        let refused = [
            (
                json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "witty-bff"}),
                AuthError::WrongIssuer,
            ),
            (json!({"sub": "a", "exp": exp, "aud": "witty-bff"}), AuthError::MissingClaim("iss")),
            (json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "other"}), AuthError::WrongAudience),
            (json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}), AuthError::MissingClaim("aud")),
        ];
        for (claims, refusal) in refused {
            assert_eq!(v.verify(&hs(Algorithm::HS256, &claims)).await.unwrap_err(), refusal, "{claims}");
        }
        // Not configured: not checked.
        assert!(verifier().verify(&hs(Algorithm::HS256, &json!({"sub": "a", "exp": exp, "aud": "x"}))).await.is_ok());
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        let v = verifier();
        let good = hs(Algorithm::HS256, &claims("alice"));
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let malformed = [
            String::new(),
            "garbage".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "!!!.e30.c2ln".into(),
            format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("not json")),
            raw(r#"{"typ":"JWT"}"#, &claims("a"), "c2ln"),
            raw(r#"{"alg":"HS256","kid":7}"#, &claims("a"), "c2ln"),
            format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode("not json")),
            format!("{head}.%%%.{sig}"),
        ];
        for token in malformed {
            let refusal = v.verify(&token).await.unwrap_err();
            assert!(matches!(refusal, AuthError::Malformed | AuthError::BadSignature), "{token}: {refusal:?}");
        }
        let unknown_alg = raw(r#"{"alg":"HS999"}"#, &claims("a"), "c2ln");
        assert_eq!(v.verify(&unknown_alg).await.unwrap_err(), AuthError::UnsupportedAlgorithm);
        let crit = raw(r#"{"alg":"HS256","crit":["exp"]}"#, &claims("a"), "c2ln");
        assert_eq!(v.verify(&crit).await.unwrap_err(), AuthError::UnsupportedHeader);
        let signed_garbage =
            sign(&Header::new(Algorithm::HS256), &json!([1, 2]), &EncodingKey::from_secret(SECRET.as_bytes()));
        assert_eq!(v.verify(&signed_garbage).await.unwrap_err(), AuthError::Malformed);
    }

    #[tokio::test]
    async fn a_rsa_public_key_verifies_rsa_signatures_only() {
        let v = pem_verifier("test-only-rsa-a.pub.pem", None);
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = signed(alg, "test-only-rsa-a.key.pem", Some("any-kid"), &claims("alice"));
            assert_eq!(&*v.verify(&token).await.unwrap().sub, "alice", "{alg:?}");
        }
        let other_key = signed(Algorithm::RS256, "test-only-rsa-b.key.pem", None, &claims("alice"));
        assert_eq!(v.verify(&other_key).await.unwrap_err(), AuthError::BadSignature);
        let expired =
            signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &json!({"sub": "a", "exp": now() - 60}));
        assert_eq!(v.verify(&expired).await.unwrap_err(), AuthError::Expired);
    }

    #[tokio::test]
    async fn the_public_key_used_as_an_hmac_secret_is_refused() {
        // The classic algorithm confusion: HS256 "signed" with the PEM file's bytes as the secret.
        let pem = fixture("test-only-rsa-a.pub.pem");
        let confused = sign(&Header::new(Algorithm::HS256), &claims("alice"), &EncodingKey::from_secret(&pem));
        let v = pem_verifier("test-only-rsa-a.pub.pem", None);
        assert_eq!(v.verify(&confused).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::HS256));
        // With a secret configured too, HS256 goes to the secret only.
        let both = pem_verifier("test-only-rsa-a.pub.pem", Some(SECRET));
        assert_eq!(both.verify(&confused).await.unwrap_err(), AuthError::BadSignature);
        assert!(both.verify(&hs(Algorithm::HS256, &claims("alice"))).await.is_ok());
        let rs = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", None, &claims("alice"));
        assert!(both.verify(&rs).await.is_ok());
    }

    #[tokio::test]
    async fn an_ec_public_key_verifies_its_curve_only() {
        let v = pem_verifier("test-only-ec-p256.pub.pem", None);
        let es256 = signed(Algorithm::ES256, "test-only-ec-p256.key.pem", None, &claims("alice"));
        assert_eq!(&*v.verify(&es256).await.unwrap().sub, "alice");
        let es384 = signed(Algorithm::ES384, "test-only-ec-p384.key.pem", None, &claims("alice"));
        assert_eq!(v.verify(&es384).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::ES384));
        let v384 = pem_verifier("test-only-ec-p384.pub.pem", None);
        assert!(v384.verify(&es384).await.is_ok());
        let ed = pem_verifier("test-only-ed25519.pub.pem", None);
        assert!(ed.verify(&signed(Algorithm::EdDSA, "test-only-ed25519.key.pem", None, &claims("a"))).await.is_ok());
    }

    #[tokio::test]
    async fn a_token_cannot_bring_its_own_key() {
        let v = pem_verifier("test-only-rsa-a.pub.pem", None);
        let mut header = Header::new(Algorithm::RS256);
        let attacker = jsonwebtoken::DecodingKey::from_rsa_pem(&fixture("test-only-rsa-b.pub.pem")).unwrap();
        header.jwk = Some(Jwk::from_decoding_key(&attacker, Some(Algorithm::RS256)).unwrap());
        header.jku = Some("https://attacker.example/jwks.json".into());
        header.kid = Some("attacker".into());
        let token = sign(&header, &claims("alice"), &private("test-only-rsa-b.key.pem"));
        assert_eq!(v.verify(&token).await.unwrap_err(), AuthError::BadSignature);
    }

    #[tokio::test]
    async fn a_jwks_key_verifies_the_tokens_naming_its_kid_with_its_algorithm() {
        let (server, _hits) = JwksServer::start(vec![
            jwk("test-only-rsa-a.pub.pem", "rsa-a", Some("RS256")),
            jwk("test-only-ec-p256.pub.pem", "ec", None),
        ])
        .await;
        let v = Verifier::new(&JwtSettings {
            jwks_url: Some(server.url.clone()),
            jwks_min_refresh: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
        v.warm_up().await;
        let rs256 = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some("rsa-a"), &claims("alice"));
        assert_eq!(&*v.verify(&rs256).await.unwrap().sub, "alice");
        let es256 = signed(Algorithm::ES256, "test-only-ec-p256.key.pem", Some("ec"), &claims("bob"));
        assert_eq!(&*v.verify(&es256).await.unwrap().sub, "bob");
        // No kid: every key that fits the algorithm is tried.
        let no_kid = signed(Algorithm::ES256, "test-only-ec-p256.key.pem", None, &claims("bob"));
        assert!(v.verify(&no_kid).await.is_ok());
        // The JWK says RS256: RS512 with the same key is refused.
        let rs512 = signed(Algorithm::RS512, "test-only-rsa-a.key.pem", Some("rsa-a"), &claims("alice"));
        assert_eq!(v.verify(&rs512).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::RS512));
        // A key named by another key's kid.
        let swapped = signed(Algorithm::ES256, "test-only-ec-p256.key.pem", Some("rsa-a"), &claims("bob"));
        assert_eq!(v.verify(&swapped).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::ES256));
        let unknown = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some("gone"), &claims("alice"));
        assert_eq!(v.verify(&unknown).await.unwrap_err(), AuthError::UnknownKey);
        // HS256 never reaches the JWKS (no refresh for it).
        let before = server.hits();
        let hs = sign(
            &Header { kid: Some("x".into()), ..Header::new(Algorithm::HS256) },
            &claims("a"),
            &EncodingKey::from_secret(b"whatever-secret-value"),
        );
        assert_eq!(v.verify(&hs).await.unwrap_err(), AuthError::AlgorithmNotAllowed(Algorithm::HS256));
        assert_eq!(server.hits(), before);
    }

    #[tokio::test]
    async fn keys_that_cannot_be_fetched_make_a_clear_refusal() {
        let unreachable = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/jwks.json", listener.local_addr().unwrap())
        };
        let v =
            Verifier::new(&JwtSettings { jwks_url: Some(unreachable.parse().unwrap()), ..Default::default() }).unwrap();
        v.warm_up().await;
        let token = signed(Algorithm::RS256, "test-only-rsa-a.key.pem", Some("a"), &claims("alice"));
        assert_eq!(v.verify(&token).await.unwrap_err(), AuthError::KeysUnavailable);
    }

    #[tokio::test]
    async fn refusals_never_echo_the_token() {
        let v = Verifier::new(&JwtSettings {
            secret: Some(SECRET.into()),
            issuer: Some("https://idp.example".into()),
            ..Default::default()
        })
        .unwrap();
        let marker = "SENSITIVE-marker-value";
        let tokens = [
            hs(Algorithm::HS256, &json!({"sub": marker, "exp": now() - 600, "iss": "https://idp.example"})),
            hs(Algorithm::HS256, &json!({"sub": marker, "exp": now() + 60, "iss": marker})),
            raw(&format!(r#"{{"alg":"{marker}"}}"#), &claims(marker), marker),
            raw(&format!(r#"{{"alg":"HS256","kid":"{marker}"}}"#), &claims(marker), marker),
            format!("{marker}.{marker}.{marker}"),
            marker.to_string(),
        ];
        for token in tokens {
            let message = v.verify(&token).await.unwrap_err().to_string();
            assert!(!message.contains(marker) && !message.contains(&token), "{message}");
        }
    }

    #[test]
    fn a_public_key_file_that_cannot_be_used_is_an_error_naming_it() {
        let settings = |path: &str| JwtSettings { public_key: Some(PathBuf::from(path)), ..Default::default() };
        let missing = Verifier::new(&settings("/nonexistent/idp-key.pem")).unwrap_err();
        assert!(missing.contains("/nonexistent/idp-key.pem") && missing.contains("cannot read"), "{missing}");
        let private_path = fixture_path("test-only-rsa-a.key.pem");
        let private = Verifier::new(&settings(private_path.to_str().unwrap())).unwrap_err();
        assert!(private.contains("test-only-rsa-a.key.pem") && private.contains("private key"), "{private}");
        let not_pem = Verifier::new(&settings(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))).unwrap_err();
        assert!(not_pem.contains("Cargo.toml") && not_pem.contains("not a PEM file"), "{not_pem}");
        assert!(Verifier::new(&JwtSettings::default()).unwrap_err().contains("no key"));
        let short = JwtSettings { secret: Some("short".into()), ..Default::default() };
        assert!(Verifier::new(&short).unwrap_err().contains("16 characters"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = JwtSettings {
            secret: Some(SECRET.into()),
            public_key: Some(fixture_path("test-only-rsa-a.pub.pem")),
            jwks_url: Some("https://idp.example/keys?key=hush".parse().unwrap()),
            ..Default::default()
        };
        let shown = format!("{settings:?} {:?}", Verifier::new(&settings).unwrap());
        assert!(!shown.contains(SECRET) && !shown.contains("hush"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("RS256"), "{shown}");
        let token = mint_dev_token(SECRET, "alice", 60, None, None);
        let caller = format!("{:?}", Caller::new("alice", token.as_str(), None));
        assert!(!caller.contains(&token));
    }
}
