//! The only axum module: `/graphql` (GraphQL over HTTP, POST and GET), `/graphiql`, `/healthz`,
//! `/readyz`. It verifies the caller's token, creates the request's loaders, and hands both to the
//! schema as request data.

mod graphiql;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Response as GqlResponse, ServerError};
use async_graphql_axum::GraphQLRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

pub use graphiql::EXAMPLE_QUERY;

use crate::auth::Verifier;
use crate::cache::{SharedCache, request_loaders};
use crate::graphql::{Identity, WittySchema};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub schema: WittySchema,
    pub verifier: Arc<Verifier>,
    pub cache: SharedCache,
    /// Pre-filled in GraphiQL when running on the embedded simulator.
    pub dev_token: Option<String>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/graphql", get(graphql).post(graphql))
        .route("/graphiql", get(graphiql::index))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

async fn graphql(
    State(s): State<HttpState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let modern =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(GRAPHQL_RESPONSE));
    let request = match request {
        Ok(r) => r.into_inner(),
        Err(rejection) => {
            let message = format!("the request is not a GraphQL request: {}", rejection.0);
            let err = ServerError::new(message, None);
            return respond(GqlResponse::from_errors(vec![err]), modern);
        }
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let identity = Identity(s.verifier.verify_header(authorization));
    let mut request = request;
    if let Ok(caller) = &identity.0 {
        request = request.data(request_loaders(caller.clone(), s.cache.clone()));
    }
    let response = s.schema.execute(request.data(identity)).await;
    respond(response, modern)
}

/// Gives every error a code, and the status the GraphQL-over-HTTP spec asks for.
fn respond(mut response: GqlResponse, modern: bool) -> Response {
    for e in response.errors.iter_mut() {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !has_code {
            let lower = e.message.to_ascii_lowercase();
            let code = if lower.contains("too complex") || lower.contains("nested too deep") {
                "QUERY_TOO_COMPLEX"
            } else {
                "BAD_USER_INPUT"
            };
            e.extensions.get_or_insert_with(Default::default).set("code", code);
        }
    }
    // A request error (nothing executed) has no data and errors without a path.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if modern && request_error { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let kind = if modern { GRAPHQL_RESPONSE } else { "application/json" };
    let mut http = (status, Json(response)).into_response();
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    http
}

/// Ready when the upstream answers at all (any status: it is there).
async fn ready(State(s): State<HttpState>) -> Response {
    let url = s.cache.client().base_url().clone();
    let probe = reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await;
    match probe {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "upstream unreachable"})))
            .into_response(),
    }
}
