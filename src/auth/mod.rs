//! Who is calling: JWT verification with jsonwebtoken, the verified [`Caller`], and dev tokens.
//!
//! - `jwt`: the [`Verifier`], its [`JwtSettings`] and the [`AuthError`]s a token is refused with.
//! - `keys`: one verifying key and the algorithms it allows (secret, PEM file, JWK).
//! - `jwks`: the identity provider's JWKS, cached and refreshed (rate-limited) on an unknown `kid`.

mod jwks;
mod jwt;
mod keys;

pub use jwt::{AuthError, JwtSettings, Verifier, mint_dev_token};

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A verified caller. The token is kept to be forwarded upstream as the end user's bearer; it
/// never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Caller {
    /// The token's `sub`: the identity cache entries are keyed by.
    pub sub: Arc<str>,
    token: Arc<str>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Caller {
    pub fn new(sub: impl Into<Arc<str>>, token: impl Into<Arc<str>>, expires_at: Option<DateTime<Utc>>) -> Caller {
        Caller { sub: sub.into(), token: token.into(), expires_at }
    }

    /// The bearer token to forward upstream.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("sub", &self.sub).field("token", &"<redacted>").finish()
    }
}
