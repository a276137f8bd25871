//! Reading a GraphQL-over-HTTP request: a POST's JSON body (one request, or an array of them: a
//! batch) or a GET's query string, each parameter checked for its type. What is not a
//! well-formed request is refused with 400 (415 for a POST that does not say it is JSON), as
//! the GraphQL-over-HTTP spec and graphql-http's audits ask, whatever the media type answered.

use axum::http::StatusCode;
use serde_json::{Map, Value};

/// The most operations one batch may hold. Each runs as a request of its own (and counts as one
/// against the rate limit); a client's batching link sends a few at a time (Apollo's
/// `BatchHttpLink` sends at most 10 by default).
pub(crate) const MAX_BATCH: usize = 20;

/// What a request asked for.
pub(crate) enum Parsed {
    One(Box<async_graphql::Request>),
    /// A JSON array of requests: answered by an array, in order.
    Batch(Vec<async_graphql::Request>),
}

/// A request that is not a GraphQL request: its status and why.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub status: StatusCode,
    pub message: String,
}

fn malformed(message: impl Into<String>) -> Malformed {
    Malformed {
        status: StatusCode::BAD_REQUEST,
        message: format!("the request is not a GraphQL request: {}", message.into()),
    }
}

/// A POST's body, as its `Content-Type` says: JSON (`application/json`, or a `+json` type).
pub(crate) fn parse_post(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, Malformed> {
    let Some(kind) = content_type else {
        return Err(Malformed {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "the request has no Content-Type; send it as JSON with `Content-Type: application/json`".into(),
        });
    };
    let essence = kind.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !(essence == "application/json" || essence.starts_with("application/") && essence.ends_with("+json")) {
        return Err(Malformed {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("the request's Content-Type is {essence}; send it as JSON (`application/json`)"),
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the body is empty; send a JSON object with a `query`"));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("the body is not JSON ({e})")))?;
    match json {
        Value::Object(fields) => one(fields).map(|r| Parsed::One(Box::new(r))),
        Value::Array(items) if items.is_empty() => {
            Err(malformed("the batch is empty; send at least one request in the array"))
        }
        Value::Array(items) if items.len() > MAX_BATCH => Err(malformed(format!(
            "the batch holds {} requests, over the {MAX_BATCH} allowed; send it in smaller batches",
            items.len()
        ))),
        Value::Array(items) => {
            let batch = items.into_iter().enumerate().map(|(i, item)| match item {
                Value::Object(fields) => {
                    one(fields).map_err(|e| Malformed { message: format!("{} (batch item {i})", e.message), ..e })
                }
                _ => Err(malformed(format!("batch item {i} is not a JSON object"))),
            });
            batch.collect::<Result<_, _>>().map(Parsed::Batch)
        }
        _ => Err(malformed("the body must be a JSON object (or an array of them: a batch)")),
    }
}

/// A GET's query string: `query`, `operationName`, and `variables` and `extensions` as JSON.
pub(crate) fn parse_get(uri: &axum::http::Uri) -> Result<async_graphql::Request, Malformed> {
    let axum::extract::Query(pairs) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| malformed(format!("the query string ({e})")))?;
    let mut fields = Map::new();
    for (name, value) in pairs {
        let value = match name.as_str() {
            "variables" | "extensions" => serde_json::from_str(&value)
                .map_err(|e| malformed(format!("`{name}` is not URL-encoded JSON ({e})")))?,
            _ => Value::String(value),
        };
        fields.insert(name, value);
    }
    one(fields)
}

/// One request's parameters, each of its type: `query` a string (absent only with a persisted
/// query's hash), `operationName` a string, `variables` and `extensions` objects (or null).
fn one(mut fields: Map<String, Value>) -> Result<async_graphql::Request, Malformed> {
    for name in ["variables", "extensions", "operationName"] {
        if fields.get(name) == Some(&Value::Null) {
            fields.remove(name);
        }
    }
    let persisted = fields.get("extensions").and_then(|e| e.get("persistedQuery")).is_some();
    match fields.get("query") {
        Some(Value::String(_)) => {}
        None if persisted => {}
        None => return Err(malformed("it has no `query` (a string holding the GraphQL document)")),
        Some(_) => return Err(malformed("`query` must be a string holding the GraphQL document")),
    }
    if fields.get("operationName").is_some_and(|n| !n.is_string()) {
        return Err(malformed("`operationName` must be a string"));
    }
    for name in ["variables", "extensions"] {
        if fields.get(name).is_some_and(|v| !v.is_object()) {
            return Err(malformed(format!("`{name}` must be an object (a map)")));
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(kind: Option<&str>, body: &str) -> u16 {
        match parse_post(kind, body.as_bytes()) {
            Ok(Parsed::One(_)) => 1,
            Ok(Parsed::Batch(b)) => 100 + b.len() as u16,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn bodies_are_checked_for_their_type_and_each_parameter() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(status(None, r#"{"query":"{a}"}"#), 415);
        assert_eq!(status(Some("text/plain"), r#"{"query":"{a}"}"#), 415);
        assert_eq!(status(json, ""), 400);
        assert_eq!(status(json, "{not json"), 400);
        assert_eq!(status(json, r#"{"query":"{a}"}"#), 1);
        assert_eq!(status(json, r#"{"query":"{a}","variables":null,"operationName":null}"#), 1);
        assert_eq!(status(json, r#"{"extensions":{"persistedQuery":{}}}"#), 1);
        for bad in [r#"{"qeury":"{a}"}"#, r#"{"query":1}"#, r#"{"query":"{a}","variables":"x"}"#, "3"] {
            assert_eq!(status(json, bad), 400, "{bad}");
        }
        assert_eq!(status(json, r#"{"query":"{a}","operationName":false}"#), 400);
        assert_eq!(status(json, r#"{"query":"{a}","extensions":[1]}"#), 400);
        assert_eq!(status(json, r#"[{"query":"{a}"},{"query":"{b}"}]"#), 102);
        assert_eq!(status(json, "[]"), 400);
        assert_eq!(status(json, r#"[{"query":"{a}"}, 1]"#), 400);
        let over = format!("[{}]", vec![r#"{"query":"{a}"}"#; MAX_BATCH + 1].join(","));
        assert_eq!(status(json, &over), 400);
        let get = |q: &str| parse_get(&format!("/graphql?{q}").parse().unwrap());
        assert!(get("query=%7Ba%7D&variables=%7B%7D").is_ok());
        assert!(get("query=%7Ba%7D&variables=x").is_err() && get("").is_err());
    }
}
