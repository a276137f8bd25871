//! witty-bff: a GraphQL backend-for-frontend for Hager's Witty-Home cloud API.
//!
//! Module map and the rules of what may depend on what:
//!
//! - [`config`]: one typed `Config`, read once from flags and `WITTY_BFF_*` variables.
//! - [`app`]: the only place that wires parts together; binds its own listener.
//! - [`upstream`]: the typed REST client of the Witty-Home API. Knows nothing of GraphQL, axum or
//!   caching.
//! - [`cache`]: the shared moka cache and the per-request DataLoaders, above [`upstream`].
//! - [`auth`]: JWT verification and the verified `Caller`.
//! - [`graphql`]: the schema, split by domain. Never imports axum.
//! - `commands`: the write path every mutation runs through (idempotency, role check, one
//!   upstream write, invalidation); the mutation resolvers are thin adapters over it.
//! - `idempotency`: the `Idempotency-Key` store behind a trait (in memory; shared in a fleet).
//! - [`http`]: the only axum module of the BFF: `/graphql`, `/graphiql`, `/webhooks/witty`,
//!   `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: what the process counts (Prometheus text format).
//! - [`simulator`]: the embedded Witty-Home cloud, a separate axum app on its own listener. It
//!   imports nothing else from this crate, so the BFF reaches it only over HTTP, through its own
//!   wire types, exactly as it would reach the real upstream.

pub mod app;
pub mod auth;
pub mod cache;
mod commands;
pub mod config;
pub mod events;
pub mod graphql;
pub mod http;
mod idempotency;
pub mod live;
pub mod metrics;
pub mod simulator;
pub mod upstream;
