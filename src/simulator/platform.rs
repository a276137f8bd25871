//! What the API-management platform in front of the Witty-Home cloud adds to every route, in the
//! order a request meets it: the call count of `/_sim/calls`, injected faults, the subscription key
//! and the bearer token.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::SimError;

/// Calls per route template (`"GET /installations/{i}"`), counted before anything can refuse them.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCounts {
    pub total: u64,
    pub by_route: BTreeMap<String, u64>,
    /// The W3C `traceparent` of the last call that carried one (tests check that the BFF sends
    /// its trace context upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_traceparent: Option<String>,
}

/// Faults injected on the upstream routes (`PUT /_sim/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Added to every matching call before it is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Share of matching calls (0 to 1) answered with `errorStatus` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The status of injected errors (default 503). 429, and 403 as a quota, carry `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Share of matching calls whose connection is cut before the answer is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    /// Which calls: route templates (`"GET /installations/{i}"`, or the template alone for every
    /// method) or concrete paths (`"GET /installations/33"`, `"/installations/33"`); none = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

impl Faults {
    /// Refuses values that cannot mean anything, naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        for (name, rate) in [("errorRate", self.error_rate), ("dropRate", self.drop_rate)] {
            if let Some(r) = rate
                && !(0.0..=1.0).contains(&r)
            {
                return Err(SimError::bad_request(format!("{name} must be between 0 and 1, got {r}")));
            }
        }
        if let Some(s) = self.error_status
            && !(400..=599).contains(&s)
        {
            return Err(SimError::bad_request(format!("errorStatus must be a 4xx or 5xx status, got {s}")));
        }
        let known: Vec<(String, String)> =
            super::routes::table().into_iter().map(|r| (r.method.to_string(), r.path)).collect();
        for entry in self.routes.iter().flatten() {
            let (method, path) = match entry.split_once(' ') {
                Some((m, p)) => (Some(m), p),
                None => (None, entry.as_str()),
            };
            let fits = known.iter().any(|(m, template)| {
                method.is_none_or(|x| x.eq_ignore_ascii_case(m))
                    && (template == path || template_matches(template, path))
            });
            if !fits {
                return Err(SimError::bad_request(format!(
                    "routes: '{entry}' names no upstream route (use a template such as \
                     'GET /installations/{{i}}/charging-stations/{{cs}}' or a concrete path)"
                )));
            }
        }
        if self.latency_ms.is_some_and(|l| l > 120_000) {
            return Err(SimError::bad_request("latencyMs must be at most 120000"));
        }
        Ok(())
    }

    fn applies_to(&self, method: &str, template: &str, path: &str) -> bool {
        self.routes.as_ref().is_none_or(|routes| {
            routes.iter().any(|r| {
                let (m, p) = match r.split_once(' ') {
                    Some((m, p)) => (Some(m), p),
                    None => (None, r.as_str()),
                };
                m.is_none_or(|m| m.eq_ignore_ascii_case(method)) && (p == template || p == path)
            })
        })
    }
}

/// Whether a concrete path fits a template (`{x}` stands for one non-empty segment).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| if t.starts_with('{') && t.ends_with('}') { !p.is_empty() } else { t == p })
}

/// `"METHOD /template"` of a matched route.
fn route_key(req: &Request) -> (String, String) {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    (format!("{} {}", req.method(), path), path)
}

pub async fn count_calls(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (key, _) = route_key(&req);
    {
        let mut calls = state.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.total += 1;
        *calls.by_route.entry(key).or_default() += 1;
        if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
            calls.last_traceparent = Some(tp.to_string());
        }
    }
    next.run(req).await
}

pub async fn inject_faults(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let faults = state.faults.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(faults) = faults else { return next.run(req).await };
    let (_, template) = route_key(&req);
    if !faults.applies_to(req.method().as_str(), &template, req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(ms) = faults.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if faults.error_rate.is_some_and(|r| fastrand::f64() < r) {
        let status =
            StatusCode::from_u16(faults.error_status.unwrap_or(503)).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut err = SimError::new(
            status,
            format!("injected fault: {} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            err.message = "Rate limit is exceeded. Try again in 1 seconds.".into();
            err.retry_after = Some(1);
        } else if status == StatusCode::FORBIDDEN {
            err.message = "Out of call volume quota. Quota will be replenished in 00:00:01.".into();
            err.retry_after = Some(1);
        }
        return err.into_response();
    }
    if faults.drop_rate.is_some_and(|r| fastrand::f64() < r) {
        // Headers go out, then the body fails: the client sees the connection cut mid-answer.
        let stream =
            futures::stream::once(async { Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("dropped")) });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    next.run(req).await
}

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let header = req.headers().get("ocp-apim-subscription-key").and_then(|v| v.to_str().ok());
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("subscription-key=")))
        .map(str::to_string);
    match header.map(str::to_string).or(query) {
        None => SimError::unauthorized(
            "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
        )
        .into_response(),
        Some(key) if key != state.api_key => SimError::unauthorized(
            "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
        )
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

/// The identity in a bearer token. Like an upstream with keys of its own, the simulator reads the
/// token's claims without checking its signature; an expired token is refused all the same.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
}

fn caller_from(headers: &HeaderMap) -> Result<Caller, SimError> {
    let refuse = |why: &str| SimError::unauthorized(format!("Unauthorized: {why}"));
    let value = headers
        .get("authorization")
        .ok_or_else(|| refuse("missing Authorization header with a Bearer token"))?
        .to_str()
        .map_err(|_| refuse("unreadable Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| refuse("the Authorization header must be 'Bearer <token>'"))?
        .trim();
    let payload = token.split('.').nth(1).ok_or_else(|| refuse("the bearer token is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| refuse("the bearer token's claims are not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| refuse("the bearer token's claims are not JSON"))?;
    let sub = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| refuse("the bearer token has no sub claim"))?;
    if let Some(exp) = claims.get("exp").and_then(|e| e.as_i64())
        && exp < chrono::Utc::now().timestamp()
    {
        return Err(refuse("the bearer token has expired"));
    }
    Ok(Caller { sub: sub.to_string() })
}

pub async fn require_bearer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match caller_from(req.headers()) {
        Ok(caller) => {
            // Known accounts need only the read lock; a new one is created under the write lock.
            let known = state.read().accounts.get(&caller.sub).cloned();
            let account = match known {
                Some(a) => a,
                None => state.write().account_for(&caller.sub),
            };
            req.extensions_mut().insert(account);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(r#"{"alg":"HS256"}"#), e.encode(claims))
    }

    #[test]
    fn reads_sub_and_refuses_what_is_not_a_usable_token() {
        assert_eq!(caller_from(&headers(&jwt(r#"{"sub":"alice"}"#))).unwrap().sub, "alice");
        for bad in ["garbage", &jwt(r#"{"name":"x"}"#), &jwt(r#"{"sub":"a","exp":1}"#), "a.!!!.c"] {
            assert_eq!(caller_from(&headers(bad)).unwrap_err().status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert!(caller_from(&HeaderMap::new()).is_err());
    }
}
