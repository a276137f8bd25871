//! Who is calling: JWT verification with jsonwebtoken, the verified [`Caller`], and dev tokens.
//!
//! - `jwt`: the [`Verifier`], its [`JwtSettings`] and the [`AuthError`]s a token is refused with.
//! - `keys`: one verifying key and the algorithms it allows (secret, PEM file, JWK).
//! - `jwks`: the identity provider's JWKS, cached and refreshed (rate-limited) on an unknown `kid`.

mod jwks;
mod jwt;
mod keys;

pub use jwt::mint_dev_token;
pub(crate) use jwt::{AuthError, JwtSettings, Verifier};

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// HMAC-SHA256 of `message` under `key`, base64url: jsonwebtoken's HS256 signer, so no crate of
/// its own. `None` only if the signer refused the key, which it never does for an HS256 secret.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Option<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(key);
    jsonwebtoken::crypto::sign(message, &key, jsonwebtoken::Algorithm::HS256).ok()
}

/// A verified caller. The token is kept to be forwarded upstream as the end user's bearer; it
/// never appears in `Debug` output or logs.
#[derive(Clone)]
pub(crate) struct Caller {
    /// The token's `sub`: the identity cache entries are keyed by.
    pub sub: Arc<str>,
    token: Arc<str>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Caller {
    pub(crate) fn new(
        sub: impl Into<Arc<str>>,
        token: impl Into<Arc<str>>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Caller {
        Caller { sub: sub.into(), token: token.into(), expires_at }
    }

    /// The bearer token to forward upstream.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("sub", &self.sub).field("token", &"<redacted>").finish()
    }
}
