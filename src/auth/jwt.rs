//! Verifying bearer tokens with jsonwebtoken: the algorithms a configured key allows and nothing
//! else (no `alg: none`, no switching), expiry with a small leeway, issuer and audience when set.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Caller;

/// Why a token was refused. The message is safe to show the client: it never echoes the token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send 'Authorization: Bearer <JWT>'")]
    Missing,
    #[error("the Authorization header must be 'Bearer <JWT>'")]
    BadScheme,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired: get a new one")]
    Expired,
}

/// How tokens are checked.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// HS256/384/512 shared secret.
    pub secret: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
}

impl Verifier {
    pub fn new(settings: &JwtSettings) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.secret {
            if secret.len() < 16 {
                return Err("the JWT secret must be at least 16 characters".into());
            }
            let mut v = Validation::new(Algorithm::HS256);
            v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
            keys.push((DecodingKey::from_secret(secret.as_bytes()), v));
        }
        if keys.is_empty() {
            return Err("no key to verify tokens with: set a JWT secret".into());
        }
        for (_, v) in keys.iter_mut() {
            v.leeway = settings.leeway_secs;
            v.validate_nbf = true;
            v.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
            match &settings.issuer {
                Some(iss) => v.set_issuer(&[iss]),
                None => v.iss = None,
            }
            match &settings.audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
        }
        Ok(Verifier { keys })
    }

    /// Reads `Authorization` header text into a verified caller.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::BadScheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::BadScheme);
        }
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("not a JWT".into()))?;
        let mut last = AuthError::Invalid("no configured key accepts this token".into());
        for (key, validation) in &self.keys {
            if !validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let sub = data.claims.sub.filter(|s| !s.trim().is_empty());
                    let sub = sub.ok_or_else(|| AuthError::Invalid("the token has no sub".into()))?;
                    let exp = data.claims.exp.and_then(|e| Utc.timestamp_opt(e, 0).single());
                    return Ok(Caller::new(sub, token, exp));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                        ErrorKind::ImmatureSignature => AuthError::Invalid("the token is not valid yet (nbf)".into()),
                        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                        ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                        ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("the token has no {c}")),
                        ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not allowed".into()),
                        _ => AuthError::Invalid("malformed token".into()),
                    };
                }
            }
        }
        Err(last)
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
    use super::*;

    const SECRET: &str = "a-test-secret-of-some-length";

    fn verifier() -> Verifier {
        Verifier::new(&JwtSettings { secret: Some(SECRET.into()), leeway_secs: 5, ..Default::default() }).unwrap()
    }

    #[test]
    fn accepts_a_minted_token_and_refuses_tampering() {
        let token = mint_dev_token(SECRET, "alice", 60, None, None);
        assert_eq!(&*verifier().verify(&token).unwrap().sub, "alice");
        let other = mint_dev_token("another-secret-of-some-length", "alice", 60, None, None);
        assert!(matches!(verifier().verify(&other), Err(AuthError::Invalid(_))));
        assert_eq!(
            verifier().verify(&mint_dev_token(SECRET, "alice", -60, None, None)).unwrap_err(),
            AuthError::Expired
        );
        assert!(verifier().verify("garbage").is_err());
        assert_eq!(verifier().verify_header(None).unwrap_err(), AuthError::Missing);
        assert_eq!(verifier().verify_header(Some("Basic abc")).unwrap_err(), AuthError::BadScheme);
    }

    #[test]
    fn refuses_alg_none() {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let exp = Utc::now().timestamp() + 60;
        let token = format!("{}.{}.", e.encode(r#"{"alg":"none"}"#), e.encode(format!(r#"{{"sub":"a","exp":{exp}}}"#)));
        assert!(verifier().verify(&token).is_err());
    }
}
