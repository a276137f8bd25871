//! The GraphQL schema, split by domain and merged. Never imports axum: the transport puts the
//! caller's [`Identity`], the request's loaders and any `Idempotency-Key` into
//! the request data; [`Services`] (the shared cache, the event bus, command settings) are schema
//! data.

pub(crate) mod access;
pub(crate) mod context;
pub(crate) mod documents;
pub(crate) mod enums;
pub(crate) mod error;
pub(crate) mod history;
pub(crate) mod installations;
pub(crate) mod meters;
pub(crate) mod mutations;
pub(crate) mod persisted;
pub(crate) mod sessions;
pub(crate) mod shape;
pub(crate) mod size;
pub(crate) mod spans;
pub(crate) mod stations;
pub(crate) mod subscriptions;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use async_graphql::{MergedObject, MergedSubscription, Positioned, Schema, SchemaBuilder};

pub(crate) use context::Identity;
pub(crate) use mutations::{CommandSettings, IdempotencyKey, Mutation, Services};

/// The query root.
#[derive(MergedObject, Default)]
pub(crate) struct Query(installations::InstallationQuery);

/// The subscription root.
#[derive(MergedSubscription, Default)]
pub(crate) struct Subscription(subscriptions::StationSubscription);

pub(crate) type WittySchema = Schema<Query, Mutation, Subscription>;

/// The operation a document runs: its only one (named or not), or the one `name`d (none when
/// several and no name).
pub(crate) fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Limits that keep one query from costing the upstream too much, checked by
/// [`shape::ResponseShape`] from async-graphql's measure of the document (see
/// `error::over_limits`), not by the schema's own `limit_depth`/`limit_complexity`.
pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 5_000;

/// What the `DateTime` scalar is, for clients reading the schema (async-graphql's own text names
/// the Rust type). Only the description changes: the scalar itself is async-graphql's.
const DATE_TIME: &str = "A date and time in RFC 3339 format, e.g. `2024-05-01T12:30:00+00:00`. Sent in UTC (offset \
`+00:00`, with a fraction of a second only when there is one). Accepted with any offset (`Z`, `+02:00`) and \
read as the same instant in UTC.";

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .extension(shape::ResponseShape)
        .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME)
        .extension(spans::OperationSpan)
}

pub(crate) fn build_schema(services: Services) -> WittySchema {
    builder().data(services).finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
