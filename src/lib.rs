//! witty-bff: a GraphQL backend-for-frontend for Hager's Witty-Home cloud API.
//!
//! Module map and the rules of what may depend on what:
//!
//! - [`config`]: one typed `Config`, read once from flags and `WITTY_BFF_*` variables.
//! - [`app`]: the only place that wires parts together; binds its own listener.
//! - `upstream`: the typed REST client of the Witty-Home API, one file per resource. Knows nothing
//!   of GraphQL, axum or caching.
//! - `cache`: the shared moka cache and the per-request DataLoaders, above `upstream`;
//!   `cache/read.rs` is the table of every upstream read with its value type.
//! - `auth`: JWT verification and the verified `Caller`.
//! - `graphql`: the schema, split by domain, and where async-graphql's answers are corrected
//!   (`shape.rs`, `size.rs`, `error.rs`). Never imports axum.
//! - `commands`: the write path every mutation runs through (idempotency, role check, one
//!   upstream write, invalidation); the resolvers in `graphql/mutations/` are thin adapters.
//! - `idempotency`: the `Idempotency-Key` store behind a trait (in memory; shared in a fleet).
//! - `events`: the domain `StationEvent` and the `EventBus` it travels on.
//! - `fleet`: what replicas share through Redis when `WITTY_BFF_REDIS_URL` is set (events,
//!   invalidations, leases on upstream subscriptions); `idempotency` keeps its keys there too.
//! - `live`: webhook intake, the upstream event subscription of each watched installation, the
//!   polling fallback, and subscriptions left behind to remove.
//! - `http`: the only axum module of the BFF: `/graphql` (POST, GET, SSE), `/graphiql`, the
//!   dashboard (`/`), `/reports/sessions.csv`, `/webhooks/witty`, `/healthz`, `/readyz`, `/metrics`;
//!   `http/ws/` owns the WebSocket protocols and the shared subscription fan-out.
//! - `metrics`: what the process counts (Prometheus text format).
//! - [`simulator`]: the embedded Witty-Home cloud, a separate axum app on its own listener. It
//!   imports nothing else from this crate, so the BFF reaches it only over HTTP, through its own
//!   wire types, exactly as it would reach the real upstream.
//!
//! Only what the binary, the tests and the benches need is public; everything else is private to
//! the crate, so the compiler tells which items are used.

#![warn(unreachable_pub)]

pub mod app;
mod auth;
mod cache;
mod commands;
pub mod config;
mod events;
mod fleet;
mod graphql;
mod http;
mod idempotency;
mod live;
mod metrics;
// Property tests of the readers of outside input (issue 17, item 6).
#[cfg(test)]
mod proptests;
pub mod simulator;
pub mod telemetry;
mod upstream;

// What the binary, the tests and the benches use besides `App`, `Config` and the simulator.
pub use auth::mint_dev_token;
pub use graphql::shape::ResponseShape;
pub use graphql::{MAX_COMPLEXITY, MAX_DEPTH, sdl};
pub use http::MAX_REQUEST_BYTES;
pub use live::webhook_key;
