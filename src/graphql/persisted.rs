//! Automatic persisted queries, Apollo's protocol: a request names its query by
//! `extensions.persistedQuery.sha256Hash`; a hash alone runs the query stored under it, or is
//! answered `PersistedQueryNotFound` (code `PERSISTED_QUERY_NOT_FOUND`), after which the client
//! sends the hash with its query, which stores it.
//!
//! Resolved by the transport before anything else reads the query (not by async-graphql's
//! `ApolloPersistedQueries` extension): a hash-only GET must be seen as the mutation it may name
//! (refused by GET), and the extension keeps parsed documents, which can be neither weighed by
//! their length nor shared through Redis. Never imports axum.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Request, ServerError, Value};

use crate::fleet::Fleet;

/// The bound of the replica's store: the total length of the queries kept. Past it, the least
/// used go first (a client whose query went sends it again on `PersistedQueryNotFound`).
pub(crate) const MAX_STORED_BYTES: u64 = 16 * 1024 * 1024;

/// How long a query stays in Redis (`witty-bff:apq:{sha256}`) after it was last stored.
pub(crate) const SHARED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest query kept in Redis (longer ones are kept by the replica only): with the rule
/// that only verified callers' queries are shared, it bounds what one caller can make the fleet's
/// Redis hold (a dashboard's query is a few KiB).
pub(crate) const MAX_SHARED_QUERY_BYTES: usize = 64 * 1024;

/// The message Apollo Client's `PersistedQueryLink` looks for to send the query again.
pub(crate) const NOT_FOUND: &str = "PersistedQueryNotFound";

/// Where queries are kept by their SHA-256: in the replica, and in the fleet's Redis when there
/// is one (so that a query stored through one replica runs by hash on every other).
pub(crate) struct PersistedQueries {
    local: moka::future::Cache<String, Arc<str>>,
    fleet: Option<Arc<Fleet>>,
}

/// What resolving did to a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// No `persistedQuery` extension.
    Plain,
    /// The hash with its query: stored.
    Stored,
    /// The hash alone: its stored query put in the request.
    Found,
}

impl PersistedQueries {
    pub(crate) fn new(fleet: Option<Arc<Fleet>>) -> PersistedQueries {
        let local = moka::future::Cache::builder()
            .max_capacity(MAX_STORED_BYTES)
            .weigher(|hash: &String, query: &Arc<str>| u32::try_from(hash.len() + query.len()).unwrap_or(u32::MAX))
            .build();
        PersistedQueries { local, fleet }
    }

    /// Puts the stored query of a hash-only request in it, or stores the query of a request with
    /// both. Refused: an unknown hash (`PERSISTED_QUERY_NOT_FOUND`), a hash that is not the
    /// query's, or an extension that is not Apollo's version 1. A query is shared through Redis
    /// only when `share` (the caller's token was verified) and it is short enough.
    pub(crate) async fn resolve(&self, request: &mut Request, share: bool) -> Result<Resolved, ServerError> {
        let Some(extension) = request.extensions.get("persistedQuery") else { return Ok(Resolved::Plain) };
        let hash = hash_of(extension)?;
        if request.query.is_empty() {
            let query = self.find(&hash).await.ok_or_else(not_found)?;
            request.query = query.to_string();
            return Ok(Resolved::Found);
        }
        let actual = sha256_hex(&request.query);
        if actual != hash {
            return Err(ServerError::new(
                format!(
                    "provided sha does not match query: extensions.persistedQuery.sha256Hash is {hash}, the query's \
                     SHA-256 is {actual}; nothing was stored or run"
                ),
                None,
            ));
        }
        let query: Arc<str> = request.query.as_str().into();
        self.local.insert(hash.clone(), query.clone()).await;
        if let Some(fleet) = self.fleet.as_ref().filter(|_| share && query.len() <= MAX_SHARED_QUERY_BYTES) {
            fleet.keep(&shared_name(&hash), &query, SHARED_TTL).await;
        }
        Ok(Resolved::Stored)
    }

    /// The query stored under `hash`: the replica's, else the fleet's (checked against its hash,
    /// and kept in the replica from then on).
    async fn find(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(query) = self.local.get(hash).await {
            return Some(query);
        }
        let shared = self.fleet.as_ref()?.recall(&shared_name(hash)).await?;
        if sha256_hex(&shared) != hash {
            return None;
        }
        let query: Arc<str> = shared.into();
        self.local.insert(hash.to_string(), query.clone()).await;
        Some(query)
    }
}

/// The Redis name of a hash's query (under the fleet's `witty-bff:` prefix).
fn shared_name(hash: &str) -> String {
    format!("apq:{hash}")
}

/// The hash the extension names: version 1, 64 hex digits (compared in lower case).
fn hash_of(extension: &Value) -> Result<String, ServerError> {
    let bad = |why: &str| ServerError::new(format!("extensions.persistedQuery {why}"), None);
    let Value::Object(fields) = extension else { return Err(bad("must be an object")) };
    match fields.get("version") {
        Some(Value::Number(n)) if n.as_i64() == Some(1) => {}
        _ => return Err(bad("must have version 1, the only one supported")),
    }
    match fields.get("sha256Hash") {
        Some(Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(bad("must have a sha256Hash of 64 hex digits: the SHA-256 of the query")),
    }
}

fn not_found() -> ServerError {
    let mut e = ServerError::new(NOT_FOUND, None);
    e.extensions.get_or_insert_with(Default::default).set("code", "PERSISTED_QUERY_NOT_FOUND");
    e
}

/// Whether an error is the unknown hash's (answered 200 whatever the media type: Apollo Client's
/// link gives persisted queries up for good on a 400).
pub(crate) fn is_not_found(e: &ServerError) -> bool {
    e.message == NOT_FOUND
}

/// SHA-256 of `text`, lower-case hex, as Apollo's clients compute it.
pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, hash: &str) -> Request {
        let mut r = Request::new(query);
        let ext = serde_json::json!({"version": 1, "sha256Hash": hash});
        r.extensions.insert("persistedQuery".into(), Value::from_json(ext).unwrap());
        r
    }

    #[tokio::test]
    async fn a_hash_is_unknown_then_stored_then_found_and_a_wrong_one_refused() {
        let store = PersistedQueries::new(None);
        let query = "{ __typename }";
        let hash = sha256_hex(query);
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let e = store.resolve(&mut request("", &hash), true).await.unwrap_err();
        assert!(is_not_found(&e), "{e:?}");
        assert_eq!(store.resolve(&mut request(query, &hash), true).await, Ok(Resolved::Stored));
        let mut found = request("", &hash.to_ascii_uppercase());
        assert_eq!(store.resolve(&mut found, true).await, Ok(Resolved::Found));
        assert_eq!(found.query, query);
        let e = store.resolve(&mut request("{ a }", &hash), true).await.unwrap_err();
        assert!(e.message.contains("does not match"), "{e:?}");
        assert!(store.resolve(&mut request(query, "abc"), true).await.is_err());
    }
}
