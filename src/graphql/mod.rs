//! The GraphQL schema, split by domain and merged. Never imports axum: the transport puts the
//! caller's [`Identity`], the request's loaders and any `Idempotency-Key` into
//! the request data; [`Services`] (the shared cache, the event bus, command settings) are schema
//! data.

pub mod access;
pub mod context;
pub mod enums;
pub mod error;
pub mod history;
pub mod installations;
pub mod meters;
pub mod mutations;
pub mod shape;
pub mod size;
pub mod stations;
pub mod subscriptions;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use async_graphql::{MergedObject, MergedSubscription, Positioned, Schema, SchemaBuilder};

pub use context::Identity;
pub use error::{AppError, AppResult};
pub use mutations::{CommandSettings, IdempotencyKey, Mutation, Services};

/// The query root.
#[derive(MergedObject, Default)]
pub struct Query(installations::InstallationQuery);

/// The subscription root.
#[derive(MergedSubscription, Default)]
pub struct Subscription(subscriptions::StationSubscription);

pub type WittySchema = Schema<Query, Mutation, Subscription>;

/// The operation a document runs: its only one (named or not), or the one `name`d (none when
/// several and no name).
pub fn operation<'a>(doc: &'a ExecutableDocument, name: Option<&str>) -> Option<&'a Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Limits that keep one query from costing the upstream too much, checked by
/// [`shape::ResponseShape`] from async-graphql's measure of the document (see
/// [`error::over_limits`]), not by the schema's own `limit_depth`/`limit_complexity`.
pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 5_000;

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query::default(), Mutation::default(), Subscription::default()).extension(shape::ResponseShape)
}

pub fn build_schema(services: Services) -> WittySchema {
    builder().data(services).finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
