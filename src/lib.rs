//! witty-bff: a GraphQL backend-for-frontend for Hager's Witty-Home cloud API.
//!
//! Module map and the rules of what may depend on what:
//!
//! - [`simulator`]: the embedded Witty-Home cloud, a separate axum app on its own listener. It
//!   imports nothing else from this crate, so the BFF reaches it only over HTTP, through its own
//!   wire types, exactly as it would reach the real upstream.

pub mod simulator;
