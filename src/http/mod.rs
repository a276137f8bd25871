//! The only axum module: `/graphql` (GraphQL over HTTP, POST and GET; WebSocket; SSE),
//! `/webhooks/witty/{secret}`, `/graphiql`, `/healthz`, `/readyz`. It verifies the caller's token, creates the request's loaders, and hands both to the
//! schema as request data.

mod batch;
mod dashboard;
mod graphiql;
mod reports;
pub(crate) mod webhooks;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Response as GqlResponse, ServerError};
use std::convert::Infallible;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub(crate) use limit::RateLimiter;
pub(crate) use ws::{Fanout, Shutdown};

use crate::auth::Verifier;
use crate::cache::{Answer, AnswerKey, Reads, SharedCache, request_loaders};
use crate::config::CorsOrigins;
use crate::graphql::persisted::{self, PersistedQueries};
use crate::graphql::subscriptions::TokenCheck;
use crate::graphql::{IdempotencyKey, Identity, WittySchema};
use crate::live::Live;
use crate::metrics::{self, Transport};
use crate::telemetry::Traced as _;

/// Mints a fresh development token.
pub(crate) type DevToken = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub schema: WittySchema,
    pub verifier: Arc<Verifier>,
    pub cache: SharedCache,
    /// Mints the token pre-filled in GraphiQL when running on the embedded simulator.
    pub dev_token: Option<DevToken>,
    pub live: Arc<Live>,
    /// Shared execution of identical WebSocket subscriptions.
    pub fanout: Arc<Fanout>,
    pub ws_keepalive: Duration,
    /// How long a WebSocket may stay open without sending `connection_init`.
    pub ws_init_timeout: Duration,
    /// The per-caller request limit of `/graphql` (`None`: off).
    pub limiter: Option<Arc<RateLimiter>>,
    /// How long a request's body may take to arrive once its head has (as long as its head may).
    pub body_timeout: Duration,
}

impl HttpState {
    /// The caller an HTTP request's bearer token names (or why there is none); a verified token
    /// is told to the live subscriptions, which use the freshest one.
    async fn identify(&self, headers: &axum::http::HeaderMap) -> Identity {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let identity = Identity(self.verifier.verify_header(authorization).await);
        if let Ok(caller) = &identity.0 {
            self.live.token_seen(caller);
        }
        identity
    }

    /// Counts one request against the per-caller limit: the verified caller's, else the client's
    /// at `peer` (so that a forged `sub` cannot spend another user's allowance). `Some` when it
    /// is over the limit (and counted refused).
    fn over_limit(&self, identity: &Identity, peer: Option<std::net::IpAddr>) -> Option<limit::Limited> {
        let limited = self.limiter.as_ref()?.check(identity.0.as_ref().ok(), peer)?;
        self.live.metrics().rate_limited.with_label_values(&["http"]).inc();
        Some(limited)
    }
}

/// The media type of a GraphQL answer: `application/graphql-response+json` when the client chose
/// it (`modern`), else `application/json`.
fn answer_type(modern: bool) -> &'static str {
    if modern { GRAPHQL_RESPONSE } else { "application/json" }
}

/// The routes. CORS (`cors`) is on `/graphql` alone: webhooks come from servers, and the other
/// routes are not for pages of other origins.
pub(crate) fn router(state: HttpState, cors: Option<&CorsOrigins>) -> Router {
    // Built from the state (the fleet's Redis, when there is one) so that the app's wiring stays.
    let persisted: Persisted = Arc::new(PersistedQueries::new(state.live.fleet().cloned()));
    let graphql_routes = get(graphql_get).post(graphql).layer(Extension(persisted));
    let graphql_routes = match cors {
        Some(origins) => graphql_routes.layer(cors_layer(origins)),
        None => graphql_routes,
    };
    Router::new()
        .route("/graphql", graphql_routes)
        .route("/", get(dashboard::index))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/graphiql", get(graphiql::index))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/reports/sessions.csv", get(reports::sessions_csv))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(
            Router::new()
                .route("/webhooks/witty/{secret}", post(webhooks::receive))
                .layer(DefaultBodyLimit::max(webhooks::MAX_DELIVERY_BYTES))
                // A delivery trickled in is cut off as a slow `/graphql` body is (see `read_body`).
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.body_timeout))
                .with_state(state.live.clone()),
        )
        .traced(redacted_path)
}

/// Answers preflights and adds the CORS headers for `origins`: the methods and request headers a
/// GraphQL client (and its tracing) sends, and the response headers a page may read.
fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let origins = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    let name = header::HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            name("idempotency-key"),
            name("traceparent"),
            name("tracestate"),
            name("x-request-id"),
        ])
        .expose_headers([name("x-request-id"), header::RETRY_AFTER])
        // A browser may reuse a preflight's answer for 10 minutes instead of asking before each
        // request (Chromium caps it at 2 hours, Firefox at 24).
        .max_age(Duration::from_secs(600))
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// The largest GraphQL request body read (a query and its variables; documents are small).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The request body, up to [`MAX_REQUEST_BYTES`]: 413 past it, 400 when the body breaks off (a
/// malformed chunk, a client gone mid-upload).
/// Reads a request's body, within `MAX_REQUEST_BYTES` and `timeout`: hyper times the head only,
/// and a body trickled a byte at a time would hold its connection (and its buffer) for ever.
async fn read_body(body: axum::body::Body, timeout: Duration) -> Result<bytes::Bytes, StatusCode> {
    let reading = async {
        let mut chunks = body.into_data_stream();
        let mut read = bytes::BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
            if read.len() + chunk.len() > MAX_REQUEST_BYTES {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(read.freeze())
    };
    tokio::time::timeout(timeout, reading).await.unwrap_or(Err(StatusCode::REQUEST_TIMEOUT))
}

/// `GET /graphql`: a WebSocket upgrade, an SSE subscription, or GraphQL over HTTP.
async fn graphql_get(State(s): State<HttpState>, persisted: Extension<Persisted>, req: Request) -> Response {
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return graphql(State(s), persisted, req).await;
    }
    let shutdown = req.extensions().get::<Shutdown>().cloned();
    let (mut parts, _) = req.into_parts();
    // The first protocol offered that we speak; none offered: graphql-transport-ws.
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(ws::Protocol::first_offered)
        .unwrap_or(ws::Protocol::Transport);
    match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(upgrade) => upgrade
            // Small buffers: an idle subscriber should cost kilobytes, not tungstenite's 128 KiB.
            // Frames are buffered up to 16 KiB until the pump flushes a batch.
            .read_buffer_size(4 * 1024)
            .write_buffer_size(16 * 1024)
            .max_message_size(ws::MAX_MESSAGE_BYTES)
            // Answer with the protocol chosen above (axum would pick in its own order otherwise).
            .protocols([protocol.name()])
            .on_upgrade(move |socket| ws::serve(s, socket, protocol, shutdown)),
        Err(rejection) => rejection.into_response(),
    }
}

/// GraphQL over HTTP (and over SSE when the client accepts `text/event-stream`).
async fn graphql(State(s): State<HttpState>, Extension(persisted): Extension<Persisted>, req: Request) -> Response {
    let started = std::time::Instant::now();
    // HEAD is GET without the body (RFC 9110, 9.3.2): the same headers, its ETag and 304 included.
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let headers = req.headers().clone();
    let shutdown = req.extensions().get::<Shutdown>().cloned();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Negotiated { modern, sse } = negotiate(accept);
    // Read within the limit before anything is parsed.
    let (parts, body) = req.into_parts();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match declared {
        Some(n) if n > MAX_REQUEST_BYTES as u64 => Err(StatusCode::PAYLOAD_TOO_LARGE),
        _ => read_body(body, s.body_timeout).await,
    };
    let body = match body {
        Ok(body) => body,
        Err(status) => return refused(ServerError::new(unread_body(status), None), false, modern, Some(status)),
    };
    let parsed = if get {
        batch::parse_get(&parts.uri).map(|r| batch::Parsed::One(Box::new(r)))
    } else {
        batch::parse_post(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), &body)
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return refused(ServerError::new(e.message, None), sse, modern, Some(e.status)),
    };
    let identity = s.identify(&headers).await;
    let op = Operation { s: &s, persisted: &persisted, identity: &identity, peer, headers: &headers, get, modern };
    let request = match parsed {
        batch::Parsed::One(request) => *request,
        batch::Parsed::Batch(_) if sse => {
            let err =
                ServerError::new("a batch cannot be answered as an event stream; send its requests one by one", None);
            return refused(err, true, modern, None);
        }
        batch::Parsed::Batch(requests) => return run_batch(&op, requests).await,
    };
    let prepared = match op.prepare(request, None).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal.into_response(sse, modern),
    };
    if sse {
        return event_stream(&s, op.loaded(prepared.request, None), shutdown);
    }
    match op.run(prepared, started).await {
        Ran::Answer(answer) => respond_answer(&answer, get.then_some(&headers), modern),
        Ran::Response(response) => respond(*response, modern),
    }
}

/// An operation run: an answer of a query as its body's bytes (kept, or fit to be), or any other
/// response.
enum Ran {
    Answer(Arc<Answer>),
    Response(Box<GqlResponse>),
}

/// A request prepared to run: its operation's type (for the metrics' label), and what keeps its
/// answer when it is a query of a verified caller.
struct Prepared {
    request: async_graphql::Request,
    operation: &'static str,
    keep: Option<(AnswerKey, Arc<Reads>)>,
}

/// The persisted queries' store, given to the `/graphql` handlers as an extension (see `router`).
type Persisted = Arc<PersistedQueries>;

/// What each operation of a request is prepared with.
struct Operation<'a> {
    s: &'a HttpState,
    persisted: &'a PersistedQueries,
    identity: &'a Identity,
    peer: Option<std::net::IpAddr>,
    headers: &'a axum::http::HeaderMap,
    get: bool,
    modern: bool,
}

/// An operation refused before it runs: the error, the status instead of the one `respond`
/// picks, and a header for the answer (not on an event stream).
struct Refusal {
    error: ServerError,
    status: Option<StatusCode>,
    header: Option<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    fn into_response(self, sse: bool, modern: bool) -> Response {
        let mut response = refused(self.error, sse, modern, self.status);
        if let (false, Some((name, value))) = (sse, self.header) {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl Operation<'_> {
    /// Counts the operation against the caller's rate limit, puts in its persisted query, refuses
    /// a mutation by GET, and gives it its request data (`batch`: its place in a batch of several
    /// and the batch, which an `Idempotency-Key` header names as a whole).
    async fn prepare(
        &self,
        mut request: async_graphql::Request,
        batch: Option<(usize, Arc<str>)>,
    ) -> Result<Prepared, Refusal> {
        let (s, modern) = (self.s, self.modern);
        if let Some(limited) = s.over_limit(self.identity, self.peer) {
            // GraphQL over HTTP keeps `application/json` answers at 200 whatever the error (as for
            // every other refusal here); the newer media type has statuses, so it gets 429.
            let retry_after = (header::RETRY_AFTER, limited.retry_after_secs().into());
            return Err(Refusal {
                error: limited.into_error(),
                status: modern.then_some(StatusCode::TOO_MANY_REQUESTS),
                header: modern.then_some(retry_after),
            });
        }
        if let Err(error) = self.persisted.resolve(&mut request, self.identity.0.is_ok()).await {
            // An unknown hash is 200 whatever the media type: Apollo Client's link gives persisted
            // queries up for good on a 400, and this one is answered by sending the query.
            let status = if persisted::is_not_found(&error) { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            return Err(Refusal { error, status: Some(status), header: None });
        }
        if self.get && is_mutation(&request) {
            return Err(Refusal {
                error: ServerError::new("mutations must be sent with POST, not GET", None),
                status: Some(StatusCode::METHOD_NOT_ALLOWED),
                header: Some((header::ALLOW, HeaderValue::from_static("POST"))),
            });
        }
        if let Some(key) = self.headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
            let key = IdempotencyKey::new(key);
            request = request.data(match batch {
                Some((place, batch)) => key.in_batch(place, batch),
                None => key,
            });
        }
        let operation = metrics::operation_type(&request);
        let keep = match &self.identity.0 {
            Ok(caller) if operation == "query" => {
                let key = AnswerKey {
                    sub: caller.sub.clone(),
                    document: request.query.clone(),
                    operation: request.operation_name.clone(),
                    variables: serde_json::to_string(&request.variables).unwrap_or_default(),
                };
                Some((key, Arc::default()))
            }
            _ => None,
        };
        Ok(Prepared { request: request.data(self.identity.clone()), operation, keep })
    }

    /// The request with its loaders, to be executed (made only then: a kept answer needs none).
    fn loaded(&self, request: async_graphql::Request, reads: Option<Arc<Reads>>) -> async_graphql::Request {
        match &self.identity.0 {
            Ok(caller) => request.data(Arc::new(request_loaders(caller.clone(), self.s.cache.clone(), reads))),
            Err(_) => request,
        }
    }

    /// Runs a prepared operation: a query's kept answer while everything it read is current,
    /// else executed (a query's answer is kept when it has no errors but refusals of the rules).
    async fn run(&self, Prepared { request, operation, keep }: Prepared, started: std::time::Instant) -> Ran {
        let s = self.s;
        // In a fleet: what other replicas changed before this request came is heard first.
        s.live.catch_up().await;
        let counted = s.live.metrics();
        if let Some((key, _)) = &keep
            && let Some(answer) = s.cache.answer(key).await
        {
            counted.response_cache.with_label_values(&["hit"]).inc();
            counted.observe(Transport::Http, operation, "ok", started.elapsed());
            return Ran::Answer(answer);
        }
        let reads = keep.as_ref().map(|(_, reads)| reads.clone());
        let mut response = s.schema.execute(self.loaded(request, reads)).await;
        counted.observe(Transport::Http, operation, metrics::outcome(&response), started.elapsed());
        crate::graphql::error::with_codes(&mut response);
        // Kept with no error but refusals of the role and consent rules (an installer's answer
        // without the costs): those follow from the reads the answer keeps, as its data does.
        let keepable = response.errors.iter().all(crate::graphql::error::is_forbidden);
        let Some((key, reads)) = keep.filter(|(key, _)| keepable && is_query(key)) else {
            counted.response_cache.with_label_values(&["unkept"]).inc();
            return Ran::Response(Box::new(response));
        };
        let body = match serde_json::to_vec(&response) {
            Ok(body) => bytes::Bytes::from(body),
            Err(_) => return Ran::Response(Box::new(response)),
        };
        let (answer, kept) = s.cache.keep_answer(key, body, &reads);
        let outcome = if kept { "kept" } else { "unkept" };
        counted.response_cache.with_label_values(&[outcome]).inc();
        Ran::Answer(answer)
    }
}

/// Whether the operation `key` names is a query (from the parsed document: an answer is kept only
/// for what surely is one).
fn is_query(key: &AnswerKey) -> bool {
    crate::graphql::documents::is_query(&key.document, key.operation.as_deref())
}

/// A query's answer from its bytes. To a GET or HEAD (`get`: its headers) it carries its entity
/// tag, and is `304 Not Modified` when `If-None-Match` names it (RFC 9110, 13.1.2): the client's
/// copy is still the answer. The tag is weak (RFC 9110, 8.8.1): the JSON and
/// `graphql-response+json` answers, compressed or not, are the same answer in other bytes. Private:
/// it is the caller's own.
fn respond_answer(answer: &Answer, get: Option<&axum::http::HeaderMap>, modern: bool) -> Response {
    let kind = answer_type(modern);
    let Some(headers) = get else {
        return ([(header::CONTENT_TYPE, kind)], answer.body.clone()).into_response();
    };
    let tag =
        HeaderValue::from_str(&format!("W/{}", answer.etag())).unwrap_or_else(|_| HeaderValue::from_static("W/\"\""));
    // A 304 carries the Vary of the 200 it stands for, the compression layer's included.
    let caching = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
        (header::VARY, HeaderValue::from_static("Authorization, Accept, Accept-Encoding")),
    ];
    if if_none_match(headers, answer.etag()) {
        return (StatusCode::NOT_MODIFIED, caching).into_response();
    }
    (caching, [(header::CONTENT_TYPE, kind)], answer.body.clone()).into_response()
}

/// Whether `If-None-Match` names the answer whose opaque tag is `tag` (`"…"`): `*` alone, or a
/// list of tags compared weakly (RFC 9110, 13.1.2).
fn if_none_match(headers: &axum::http::HeaderMap, tag: &str) -> bool {
    let mut values = headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).peekable();
    values.peek().is_some_and(|v| v.trim() == "*")
        || values.any(|v| v.split(',').map(str::trim).any(|t| t.strip_prefix("W/").unwrap_or(t) == tag))
}

/// A batch: each operation prepared and run in turn (a mutation's effects are seen by the next
/// operation, as the batch's order says), each answered in its place of the array.
async fn run_batch(op: &Operation<'_>, requests: Vec<async_graphql::Request>) -> Response {
    // What an `Idempotency-Key` header names: the whole batch, as sent.
    let described = requests
        .iter()
        .map(|r| {
            format!("{}\n{:?}\n{}", r.query, r.operation_name, serde_json::to_string(&r.variables).unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let described: Arc<str> = described.into();
    let several = requests.len() > 1;
    let mut answers = Vec::with_capacity(requests.len());
    for (place, request) in requests.into_iter().enumerate() {
        let batch = several.then(|| (place, described.clone()));
        let started = std::time::Instant::now();
        let ran = match op.prepare(request, batch).await {
            Ok(prepared) => op.run(prepared, started).await,
            Err(refusal) => Ran::Response(Box::new(GqlResponse::from_errors(vec![refusal.error]))),
        };
        answers.push(match ran {
            Ran::Answer(answer) => answer.body.clone(),
            Ran::Response(mut response) => {
                crate::graphql::error::with_codes(&mut response);
                serde_json::to_vec(&response).unwrap_or_default().into()
            }
        });
    }
    // The array of the answers' bodies, each already JSON.
    let mut body = Vec::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(answer);
    }
    body.push(b']');
    let kind = answer_type(op.modern);
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A request refused before it runs: on the SSE stream when the client asked for one (as
/// graphql-sse says), else as a GraphQL response, with `status` instead of the one `respond` picks.
fn refused(err: ServerError, sse: bool, modern: bool, status: Option<StatusCode>) -> Response {
    let errors = GqlResponse::from_errors(vec![err]);
    if sse {
        return event_stream_of(futures::stream::once(async { errors }), None, None);
    }
    let mut response = respond(errors, modern);
    if let Some(status) = status {
        *response.status_mut() = status;
    }
    response
}

/// What a client is told of a body that could not be read (`status`: too large, or cut).
fn unread_body(status: StatusCode) -> String {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is over {} KiB; send a shorter query or fewer variables",
            MAX_REQUEST_BYTES / 1024
        ),
        StatusCode::REQUEST_TIMEOUT => "the request body did not arrive in time; send it again".to_string(),
        _ => "the request body could not be read to its end; send it again".to_string(),
    }
}

/// GraphQL over Server-Sent Events, graphql-sse's "distinct connections" mode: one `next` event
/// per result, then `complete` (also when the server shuts down).
fn event_stream(s: &HttpState, request: async_graphql::Request, shutdown: Option<Shutdown>) -> Response {
    // Subscriptions last while the verifier accepts the token (its leeway included).
    let request = request.data(TokenCheck(s.verifier.clone()));
    let keep_alive = s.ws_keepalive.max(Duration::from_secs(1));
    let metrics = s.live.metrics().clone();
    let operation = metrics::operation_type(&request);
    let open = metrics::Open::new(&metrics.sse_streams);
    let results = s.schema.execute_stream(request);
    let results = metrics::Measured::new(results, metrics::outcome, metrics, Transport::Sse, operation).holding(open);
    event_stream_of(results, Some(keep_alive), shutdown)
}

/// `results` as SSE `next` events, then `complete`. A refusal before anything ran goes the same
/// way: graphql-sse asks for it on the accepted stream, not as a 4xx. At `shutdown` the results
/// stop and `complete` follows, so that the client knows the stream ended on purpose and the
/// connection is free for hyper to close.
fn event_stream_of(
    results: impl futures::Stream<Item = GqlResponse> + Send + 'static,
    keep_alive: Option<Duration>,
    shutdown: Option<Shutdown>,
) -> Response {
    let results = results.take_until(Shutdown::requested(shutdown)).map(|mut r| {
        crate::graphql::error::with_codes(&mut r);
        Ok::<_, Infallible>(Event::default().event("next").data(serde_json::to_string(&r).unwrap_or_default()))
    });
    let complete = futures::stream::once(async { Ok(Event::default().event("complete").data("")) });
    let sse = Sse::new(results.chain(complete));
    match keep_alive {
        Some(every) => sse.keep_alive(KeepAlive::new().interval(every)).into_response(),
        None => sse.into_response(),
    }
}

/// What a request's `Accept` header chose among what `/graphql` answers with.
#[derive(Debug, PartialEq)]
pub(crate) struct Negotiated {
    /// `application/graphql-response+json` (else `application/json`).
    pub(crate) modern: bool,
    /// Server-Sent Events.
    pub(crate) sse: bool,
}

/// Ranks the answers by `Accept` as HTTP says (RFC 9110, 12.5.1): each type gets the weight of
/// the most specific range naming it, and a weight of 0 refuses it. The event stream and
/// `application/graphql-response+json` must be named (a browser's `*/*` gets plain JSON);
/// `application/json` is also reached by `application/*` and `*/*`, and is the answer when
/// nothing offered is accepted. On equal weights the event stream wins, then the newer JSON type.
pub(crate) fn negotiate(accept: &str) -> Negotiated {
    let json = weight(accept, "application/json", true);
    let modern = weight(accept, GRAPHQL_RESPONSE, false);
    let stream = weight(accept, "text/event-stream", false);
    Negotiated { modern: modern > 0.0 && modern >= json, sse: stream > 0.0 && stream >= json.max(modern) }
}

/// The weight `accept` gives `media` (`type/subtype`, lower case): that of the range naming it,
/// else (with `wildcards`) of `type/*`, else of `*/*`; 0 when none does. Names compare without
/// case; a weight that is not a number counts as 1.
fn weight(accept: &str, media: &str, wildcards: bool) -> f32 {
    let family = media.split('/').next().unwrap_or_default();
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let specificity = if name.eq_ignore_ascii_case(media) {
            3
        } else if !wildcards {
            continue;
        } else if name.strip_suffix("/*").is_some_and(|f| f.eq_ignore_ascii_case(family)) {
            2
        } else if name == "*/*" {
            1
        } else {
            continue;
        };
        let q = parts
            .find_map(|p| p.get(..2).filter(|k| k.eq_ignore_ascii_case("q=")).map(|_| p[2..].trim()))
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// A request path fit for logs: the webhook's secret segment is hidden.
fn redacted_path(path: &str) -> String {
    match path.strip_prefix("/webhooks/witty/") {
        Some(_) => "/webhooks/witty/<secret>".to_string(),
        None => path.to_string(),
    }
}

/// Whether the operation the request would run is a mutation.
fn is_mutation(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else { return false };
    let is = |t: OperationType| t == OperationType::Mutation;
    match (&doc.operations, &request.operation_name) {
        // Several and none named: refused anyway, but never run by GET.
        (DocumentOperations::Multiple(ops), None) => ops.values().any(|op| is(op.node.ty)),
        _ => crate::graphql::operation(&doc, request.operation_name.as_deref()).is_some_and(|op| is(op.node.ty)),
    }
}

/// The HTTP answer, with the status the GraphQL-over-HTTP spec asks for.
fn respond(mut response: GqlResponse, modern: bool) -> Response {
    crate::graphql::error::with_codes(&mut response);
    // A request error (nothing executed) has no data and errors without a path.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if modern && request_error { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let kind = answer_type(modern);
    let mut http = if request_error {
        // The spec: `data` is present only once execution started. (Only here is the answer
        // turned into a map, whose keys come sorted: an executed answer keeps its order.)
        let mut body = serde_json::to_value(&response).unwrap_or_default();
        if let Some(map) = body.as_object_mut() {
            map.remove("data");
        }
        (status, Json(body)).into_response()
    } else {
        (status, Json(response)).into_response()
    };
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    http
}

/// Ready while this replica serves: it answers here, so its listener, cache and schema are up.
/// The upstream's state (reached at all: any status means it is there) and, in a fleet, Redis's
/// are reported but fail nothing: the upstream is shared, so failing on it would take every
/// replica out of the load balancer at once, which would answer 503 where witty-bff answers
/// `UPSTREAM_UNAVAILABLE` and what it has cached.
async fn ready(State(s): State<HttpState>) -> Response {
    let url = s.cache.client().base_url().clone();
    let probe = reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await;
    // In a fleet, Redis away does not take the replica out of the load balancer: it works on its
    // own state meanwhile (see docs/fleet.md); the answer says so.
    let fleet =
        s.live.fleet().map(|f| if f.connected() { "connected" } else { "unreachable: this replica works alone" });
    let upstream = if probe.is_ok() { "reachable" } else { "unreachable" };
    let mut body = serde_json::json!({"status": "ready", "upstream": upstream});
    if let (Some(redis), Some(f)) = (fleet, s.live.fleet()) {
        body["redis"] = redis.into();
        body["replica"] = f.replica().into();
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// `GET /metrics`: the process's counters and gauges, Prometheus text format (no caller data).
async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.live.metrics().render()).into_response()
}

/// The per-caller request limit of `/graphql` (GCRA, by `governor`): each verified `sub`, and each
/// client address for requests without a valid token, gets `WITTY_BFF_RATE_LIMIT_PER_SECOND`
/// requests a second with bursts of up to `WITTY_BFF_RATE_LIMIT_BURST`. WebSocket `subscribe`
/// (legacy `start`) messages count against their connection's caller. Webhooks and the health
/// routes are never counted.
mod limit {
    use std::net::IpAddr;
    use std::num::NonZeroU32;
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use async_graphql::ServerError;
    use governor::clock::{Clock, DefaultClock};
    use governor::{DefaultKeyedRateLimiter, Quota};

    use crate::auth::Caller;
    use crate::graphql::error::AppError;

    /// How often the state of callers whose allowance is full again is dropped, so that the limiter's
    /// memory follows the callers of the last moments, not every caller ever seen.
    const FORGET_EVERY: Duration = Duration::from_secs(60);

    /// Whom a request counts against.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum Key {
        User(Arc<str>),
        Address(IpAddr),
        /// No token and no known address (not served by our accept loop): one shared allowance.
        Unknown,
    }

    pub(crate) struct RateLimiter {
        limiter: DefaultKeyedRateLimiter<Key>,
        clock: DefaultClock,
    }

    /// A refused request: when the caller may try again.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Limited {
        retry_after: Duration,
    }

    impl RateLimiter {
        /// The limiter for `per_second` requests a second with bursts of `burst`; `None` when either
        /// is 0 (the limit is off) or the rate is not a usable number.
        pub(crate) fn new(per_second: f64, burst: u32) -> Option<Arc<RateLimiter>> {
            let burst = NonZeroU32::new(burst)?;
            if !(per_second.is_finite() && per_second > 0.0) {
                return None;
            }
            let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
            let quota = Quota::with_period(period)?.allow_burst(burst);
            let limiter =
                Arc::new(RateLimiter { limiter: governor::RateLimiter::keyed(quota), clock: DefaultClock::default() });
            // Held weakly: the task ends with the app.
            let weak = Arc::downgrade(&limiter);
            tokio::spawn(forget_idle(weak));
            Some(limiter)
        }

        /// Counts one request of `caller` (or, without a verified caller, of the client at `peer`);
        /// `Some` when it is over the limit.
        pub(crate) fn check(&self, caller: Option<&Caller>, peer: Option<IpAddr>) -> Option<Limited> {
            let key = match (caller, peer) {
                (Some(caller), _) => Key::User(caller.sub.clone()),
                (None, Some(ip)) => Key::Address(ip),
                (None, None) => Key::Unknown,
            };
            match self.limiter.check_key(&key) {
                Ok(()) => None,
                Err(not_until) => Some(Limited { retry_after: not_until.wait_time_from(self.clock.now()) }),
            }
        }
    }

    async fn forget_idle(limiter: Weak<RateLimiter>) {
        let mut every = tokio::time::interval(FORGET_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(limiter) = limiter.upgrade() else { return };
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
    }

    impl Limited {
        /// Whole seconds to wait, rounded up (never 0: a retry at once would be refused again).
        pub(crate) fn retry_after_secs(&self) -> u64 {
            let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
            secs.max(1)
        }

        pub(crate) fn into_app_error(self) -> AppError {
            let secs = self.retry_after_secs();
            AppError::RateLimited {
                retry_after: Some(Duration::from_secs(secs)),
                message: format!("too many requests; try again in {secs} s"),
            }
        }

        /// The refusal as an error of the whole request, with `RATE_LIMITED` and `retryAfterSeconds`.
        pub(crate) fn into_error(self) -> ServerError {
            self.into_app_error().into_request_error()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn the_request_past_the_burst_is_refused_per_key_and_zero_is_off() {
            let limiter = RateLimiter::new(1.0 / 3600.0, 2).expect("on");
            let ip = Some(IpAddr::from([127, 0, 0, 1]));
            assert!(limiter.check(None, ip).is_none() && limiter.check(None, ip).is_none());
            let refused = limiter.check(None, ip).expect("past the burst");
            assert!(refused.retry_after_secs() > 3000, "{refused:?}");
            let other = Caller::new("bob", "token", None);
            assert!(limiter.check(Some(&other), ip).is_none(), "a user is not the address");
            assert!(RateLimiter::new(0.0, 10).is_none() && RateLimiter::new(5.0, 0).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Negotiated, negotiate};

    fn chose(accept: &str) -> &'static str {
        match negotiate(accept) {
            Negotiated { sse: true, .. } => "sse",
            Negotiated { modern: true, .. } => "graphql-response+json",
            _ => "json",
        }
    }

    #[test]
    fn accept_is_ranked_by_weight_and_specificity() {
        let cases = [
            ("", "json"),
            ("*/*", "json"),
            ("text/html", "json"),
            ("text/*", "json"),
            ("text/event-stream", "sse"),
            ("Text/Event-Stream; charset=utf-8", "sse"),
            ("text/event-stream;q=0, application/json", "json"),
            ("text/event-stream;q=0.5, application/json", "json"),
            ("text/event-stream;q=0.5, application/*", "json"),
            ("text/event-stream;q=0.5, */*", "json"),
            ("application/json;q=0.5, text/event-stream", "sse"),
            ("application/json, text/event-stream", "sse"),
            ("text/event-stream, */*;q=0.1", "sse"),
            // The most specific range gives a type its weight.
            ("application/json;q=0.2, */*, text/event-stream;q=0.5", "sse"),
            ("application/graphql-response+json, application/json;q=0.9", "graphql-response+json"),
            ("application/json, application/graphql-response+json;q=0.5", "json"),
            ("application/graphql-response+json;q=0.5, */*", "json"),
            ("application/graphql-response+json;Q=0", "json"),
            ("application/graphql-response+json;q=nan", "graphql-response+json"),
            ("application/graphql-response+json;q=junk", "graphql-response+json"),
            ("application/graphql-response+json, text/event-stream;q=0.9", "graphql-response+json"),
        ];
        for (accept, expected) in cases {
            assert_eq!(chose(accept), expected, "Accept: {accept}");
        }
    }
}
