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
//! - [`http`]: the only axum module of the BFF: `/graphql`, `/graphiql`, `/webhooks/witty`,
//!   `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: what the process counts (Prometheus text format).
//! - [`simulator`]: the embedded Witty-Home cloud, a separate axum app on its own listener. It
//!   imports nothing else from this crate, so the BFF reaches it only over HTTP, through its own
//!   wire types, exactly as it would reach the real upstream.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod events;
pub mod graphql;
pub mod http;
pub mod live;
pub mod metrics;
pub mod simulator;
pub mod upstream;
