//! The GraphQL schema, split by domain and merged. Never imports axum: the transport puts the
//! caller's [`Identity`](context::Identity) and the request's loaders into the request data.

pub mod context;
pub mod enums;
pub mod error;
pub mod history;
pub mod installations;
pub mod meters;
pub mod stations;

use async_graphql::{EmptyMutation, EmptySubscription, MergedObject, Schema};

pub use context::Identity;
pub use error::{AppError, AppResult};

/// The query root.
#[derive(MergedObject, Default)]
pub struct Query(installations::InstallationQuery);

pub type WittySchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Limits that keep one query from costing the upstream too much.
pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 5_000;

pub fn build_schema() -> WittySchema {
    Schema::build(Query::default(), EmptyMutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema().sdl()
}
