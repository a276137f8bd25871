//! A span per GraphQL operation, named for OpenTelemetry after its type and name (`query
//! Dashboard`, `mutation SetChargeMode`; `query` alone for an anonymous one), so that a trace
//! shows which operation the upstream calls under it served. Neither variables nor the document
//! are recorded: they may carry personal data.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Request, Response, ServerResult, Variables};
use tracing::Instrument as _;

/// The extension (one instance per request).
pub(crate) struct OperationSpan;

impl ExtensionFactory for OperationSpan {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Operation::default())
    }
}

/// What the request runs, learnt as it goes: the operation name asked for, then the operation's
/// type and name from the parsed document.
#[derive(Default)]
struct Operation {
    asked: Mutex<Option<String>>,
    chosen: Mutex<Option<(OperationType, Option<String>)>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for Operation {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = request.operation_name.clone();
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(op) = super::operation(&doc, asked.as_deref()) {
            let name = match &doc.operations {
                async_graphql::parser::types::DocumentOperations::Single(_) => None,
                async_graphql::parser::types::DocumentOperations::Multiple(ops) => {
                    ops.iter().find(|(_, o)| std::ptr::eq(*o, op)).map(|(n, _)| n.to_string())
                }
            };
            *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some((op.node.ty, name));
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (ty, name) = match chosen {
            Some((ty, name)) => (ty.to_string(), name.or(operation_name.map(str::to_string))),
            None => ("query".to_string(), operation_name.map(str::to_string)),
        };
        let span = tracing::info_span!(
            "graphql",
            otel.name = tracing::field::Empty,
            graphql.operation.type = %ty,
            graphql.operation.name = name.as_deref().unwrap_or_default(),
        );
        let span_name = || name.as_ref().map_or_else(|| ty.clone(), |name| format!("{ty} {name}"));
        crate::telemetry::name_for_export(&span, span_name, None);
        next.run(ctx, operation_name).instrument(span).await
    }
}
