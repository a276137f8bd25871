//! The one place where witty-bff corrects async-graphql 7.2: [`ResponseShape`], an extension
//! registered on the schema. Each correction below names what async-graphql does on its own and
//! the spec section (GraphQL, October 2021) it answers to; `tests/api/graph_corrections.rs` shows
//! each one still needed (a `plain_async_graphql_*` test fails the day async-graphql does it
//! itself, and the correction can go).
//!
//! - Field errors, "Handling Field Errors" (§6.4.4). async-graphql leaves a failed field out of
//!   its object (`{"thing":{"ok":2}}` for `{ thing { maybe ok } }`) and never sends a failed
//!   non-null field's null up to its parent. Here ([`Extension::resolve`], then `execute`) the
//!   failed field is `null` in its place with its error in `errors`; when it is non-null, the null
//!   goes up to the nearest nullable field or list item (or to `data`). The nulls go up once the
//!   whole answer is there: a field asked twice (in two fragments, say) is resolved twice and
//!   merged, and only the merged answer says what its parent is.
//! - Field order, "Field Collection" (§6.3.2) and "Serialized Map Ordering" (§7.2.2).
//!   async-graphql writes an object's fields in the order they finish resolving; here they are
//!   put in the order the query asked for them (`in_order`).
//! - Variables, "Coercing Variable Values" (§6.1.2). async-graphql runs a request whose non-null
//!   variable was given no value (failing only the fields using it, "Variable n is not defined")
//!   and reads a `DateTime` variable only where an argument uses it; here either fails the whole
//!   request, naming the variable (`missing_variable`, `unreadable_date`).
//! - Subscriptions, "Single root field" (§5.2.3.1). async-graphql runs only fields written at a
//!   subscription's root: one spread from a fragment ends the stream at once, with no event and
//!   no error. Here such fragments are written out (`inline_subscription_root_fragments`), and a
//!   subscription selecting more than one root field, or one under `@skip`/`@include`, is refused.
//! - Error codes (witty-bff's contract: every error has `extensions.code`; the spec's "Errors",
//!   §7.1.2, leaves `extensions` to the service). async-graphql gives its parse and validation
//!   errors, and its own depth and complexity limits, no code and only an English message. Here
//!   the parse and validation hooks tag their phase's errors `BAD_USER_INPUT`
//!   ([`request_error`]), and the limits are checked from async-graphql's typed
//!   [`ValidationResult`] ([`over_limits`]), never from message text. What async-graphql raises
//!   outside these hooks (choosing the operation, coercing an argument) gets `BAD_USER_INPUT`
//!   from [`with_codes`](super::error::with_codes), which every transport calls.
//! - Document size ([`super::size`]), checked before async-graphql walks the document, with the
//!   limits of aliases and root fields; introspection fields counted in the complexity; the
//!   parser's recursion limit (told by its error's variant) and the answer's size, both
//!   `QUERY_TOO_COMPLEX`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest, NextResolve,
    NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{DocumentOperations, OperationDefinition, OperationType};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{
    Name, Positioned, QueryPathNode, QueryPathSegment, Request, Response, ServerError, ServerResult, ValidationResult,
    Value, Variables,
};

use super::error::{over_limits, request_error};

/// The extension, registered on the schema.
pub struct ResponseShape;

impl ExtensionFactory for ResponseShape {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Shaping::default())
    }
}

/// One request's (or one subscription's) state.
#[derive(Default)]
struct Shaping {
    /// The document, to know the order of the fields its operation and fragments select.
    doc: Mutex<Option<Arc<ExecutableDocument>>>,
    /// Errors of fields that were answered `null` in their place.
    errors: Mutex<Vec<ServerError>>,
    /// Paths of non-null fields (or list items) that failed: their parent must be null too.
    nulled: Mutex<Vec<Path>>,
    /// `nulled` has any: checked first, as every field that resolves looks.
    failed: AtomicBool,
    /// The document's introspection fields, counted by [`super::size::check`] for the
    /// complexity limit ([`over_limits`]).
    introspection: AtomicUsize,
    /// Of the fields above a failed non-null one: whether each is non-null, and (for a list)
    /// whether its items may be null.
    above: Mutex<HashMap<Path, (bool, bool)>>,
}

/// A place in the answer.
type Path = Vec<Seg>;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Seg {
    Field(String),
    Index(usize),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_graphql::async_trait::async_trait]
impl Extension for Shaping {
    /// Parses the query here (async-graphql then uses this parse), to refuse one that stands for
    /// too many fields before anything walks it with its fragments written out: async-graphql's
    /// recursion-depth check, validation, the complexity count and execution all do.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // A document parsed before is not parsed again (async-graphql takes the one set here).
        let kept = super::documents::kept(&request.query);
        let text = match &kept {
            Some(doc) => {
                request.set_parsed_query(ExecutableDocument::clone(doc));
                None
            }
            None => Some(request.query.clone()),
        };
        // A query that does not parse is left for async-graphql to report, unless it nests past
        // the parser's limit (a limit of ours too: `QUERY_TOO_COMPLEX`, not a syntax error).
        match request.parsed_query() {
            Ok(doc) => {
                self.introspection.store(super::size::check(doc)?.introspection, Ordering::Release);
                if let Some(text) = text {
                    super::documents::keep(&text, doc);
                }
            }
            Err(_) => {
                if let Some(refused) = super::size::parse_limit(&request.query) {
                    return Err(refused);
                }
            }
        }
        // Of the operation that runs, whatever its kind (a subscription's included); with several
        // and no name, or a name the document does not have, async-graphql says what is wrong.
        let variables = std::mem::take(&mut request.variables);
        let operation_name = request.operation_name.clone();
        let missing = match request.parsed_query() {
            // An anonymous operation asked for by name: async-graphql knows no such operation.
            Ok(doc) if matches!(doc.operations, DocumentOperations::Single(_)) && operation_name.is_some() => None,
            Ok(doc) => super::operation(doc, operation_name.as_deref())
                .and_then(|op| missing_variable(op, &variables).or_else(|| unreadable_date(op, &variables))),
            Err(_) => None,
        };
        if let Some(missing) = missing {
            return Err(request_error(missing));
        }
        request.variables = variables;
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let mut doc = next.run(ctx, query, variables).await.map_err(request_error)?;
        inline_subscription_root_fragments(&mut doc);
        for (_, op) in doc.operations.iter().filter(|(_, op)| op.node.ty == OperationType::Subscription) {
            let items = &op.node.selection_set.node.items;
            if items.len() != 1 {
                return Err(request_error(ServerError::new(
                    "a subscription selects exactly one root field (subscribe once per field)",
                    Some(op.pos),
                )));
            }
            // The spec's rule too: what it streams may not depend on a variable.
            if let Selection::Field(field) = &items[0].node
                && field.node.directives.iter().any(|d| ["skip", "include"].contains(&d.node.name.node.as_str()))
            {
                return Err(request_error(ServerError::new(
                    "a subscription's root field cannot carry @skip or @include (nor can a fragment spreading it)",
                    Some(items[0].pos),
                )));
            }
        }
        *lock(&self.doc) = Some(Arc::new(doc.clone()));
        Ok(doc)
    }

    /// Validation errors are the request's (`BAD_USER_INPUT`); a valid document is then held to
    /// the schema's limits, from async-graphql's typed measure of it (see [`over_limits`]).
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let measured =
            next.run(ctx).await.map_err(|errors| errors.into_iter().map(request_error).collect::<Vec<_>>())?;
        match over_limits(&measured, self.introspection.load(Ordering::Acquire)) {
            Some(refused) => Err(vec![refused]),
            None => Ok(measured),
        }
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let doc = lock(&self.doc).clone();
        let mut response = next.run(ctx, operation_name).await;
        response.errors.extend(lock(&self.errors).drain(..));
        let nulled = std::mem::take(&mut *lock(&self.nulled));
        self.failed.store(false, Ordering::Release);
        let above = std::mem::take(&mut *lock(&self.above));
        for path in nulled {
            null_parent(&mut response.data, path, &above);
        }
        if let Some(doc) = doc.as_deref()
            && let Some(op) = super::operation(doc, operation_name)
        {
            in_order(&mut response.data, &[&op.node.selection_set.node], &doc.fragments);
        }
        // Measured once the answer is there (its size is known no sooner), before it is sent.
        if super::size::too_large(&response.data) {
            response.data = Value::Null;
            response.errors = vec![super::size::response_too_large()];
        }
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let path_node = info.path_node;
        // A list's item: whether it may be null is the list's to say (from the list's type).
        let item = matches!(path_node.segment, QueryPathSegment::Index(_));
        let non_null = item || info.return_type.ends_with('!');
        let return_type = info.return_type;
        let value = match next.run(ctx, info).await {
            Ok(value) => value.unwrap_or_default(),
            Err(error) => {
                lock(&self.errors).push(error);
                if non_null {
                    lock(&self.nulled).push(path_of(path_node));
                    self.failed.store(true, Ordering::Release);
                }
                return Ok(Some(Value::Null));
            }
        };
        // Above a failed non-null field (which failed before this one finished): what `execute`
        // needs to know of this one to send the null up. Items need nothing (their list says).
        if item || !self.failed.load(Ordering::Acquire) {
            return Ok(Some(value));
        }
        let path = path_of(path_node);
        let below = lock(&self.nulled).iter().any(|at| at.len() > path.len() && at.starts_with(&path));
        if below {
            lock(&self.above).insert(path, (non_null, item_nullable(return_type)));
        }
        Ok(Some(value))
    }
}

/// The root type of subscriptions.
const SUBSCRIPTION: &str = "Subscription";

/// Writes the fragments a subscription spreads at its root (`subscription { ...F }`,
/// `... on Subscription { … }`) as the fields they select: async-graphql 7.2 runs only fields at a
/// subscription's root and ends such a subscription at once, without a word. A fragment's
/// directives (`@skip`, `@include`) go to each of its fields, which means the same. Fragments
/// used nowhere else afterwards are dropped (validation would call them unused); a fragment on
/// another type is left for validation to refuse.
fn inline_subscription_root_fragments(doc: &mut ExecutableDocument) {
    // Taken out for the walk (and put back), not copied: most documents have no subscription.
    let fragments = std::mem::take(&mut doc.fragments);
    let mut inlined = std::collections::HashSet::new();
    let ops: Vec<&mut Positioned<OperationDefinition>> = match &mut doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values_mut().collect(),
    };
    for op in ops.into_iter().filter(|op| op.node.ty == OperationType::Subscription) {
        let items = &op.node.selection_set.node.items;
        if items.iter().all(|item| matches!(item.node, Selection::Field(_))) {
            continue;
        }
        let mut root = Vec::new();
        flatten_root(items, &fragments, &[], &mut inlined, 0, &mut root);
        op.node.selection_set.node.items = root;
    }
    doc.fragments = fragments;
    if inlined.is_empty() {
        return;
    }
    let mut used = std::collections::HashSet::new();
    for (_, op) in doc.operations.iter() {
        spreads(&op.node.selection_set.node, &mut used);
    }
    for (name, fragment) in &doc.fragments {
        if !inlined.contains(name) {
            spreads(&fragment.node.selection_set.node, &mut used);
        }
    }
    doc.fragments.retain(|name, _| !inlined.contains(name) || used.contains(name));
}

/// Appends to `out` the root selections `items` stand for, fragments written out. It stops at a
/// second one: a subscription with more than one root field is refused anyway, and a tree of
/// fragments each spreading the next several times would otherwise be written out in full (a
/// few kilobytes of query standing for billions of fields).
fn flatten_root(
    items: &[Positioned<Selection>],
    fragments: &Fragments,
    directives: &[Positioned<async_graphql::parser::types::Directive>],
    inlined: &mut std::collections::HashSet<Name>,
    depth: usize,
    out: &mut Vec<Positioned<Selection>>,
) {
    for item in items {
        if out.len() > 1 {
            return;
        }
        let on_root = |on: Option<&Name>| on.is_none_or(|t| t.as_str() == SUBSCRIPTION) && depth < 16;
        match &item.node {
            Selection::Field(field) => {
                let mut field = field.clone();
                field.node.directives.extend(directives.iter().cloned());
                out.push(Positioned::new(Selection::Field(field), item.pos));
            }
            Selection::FragmentSpread(spread) => match fragments.get(&spread.node.fragment_name.node) {
                Some(def) if on_root(Some(&def.node.type_condition.node.on.node)) => {
                    inlined.insert(spread.node.fragment_name.node.clone());
                    let mut inner = directives.to_vec();
                    inner.extend(spread.node.directives.iter().cloned());
                    flatten_root(&def.node.selection_set.node.items, fragments, &inner, inlined, depth + 1, out);
                }
                _ => out.push(item.clone()),
            },
            Selection::InlineFragment(fragment)
                if on_root(fragment.node.type_condition.as_ref().map(|t| &t.node.on.node)) =>
            {
                let mut inner = directives.to_vec();
                inner.extend(fragment.node.directives.iter().cloned());
                flatten_root(&fragment.node.selection_set.node.items, fragments, &inner, inlined, depth + 1, out);
            }
            _ => out.push(item.clone()),
        }
    }
}

/// The names of the fragments spread anywhere in `set`.
fn spreads(set: &SelectionSet, used: &mut std::collections::HashSet<Name>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => spreads(&f.node.selection_set.node, used),
            Selection::FragmentSpread(s) => {
                used.insert(s.node.fragment_name.node.clone());
            }
            Selection::InlineFragment(f) => spreads(&f.node.selection_set.node, used),
        }
    }
}

/// The spec's "Coercing Variable Values": a non-null variable must be given a value that is not
/// null (without a default, it must be given one at all), or the request fails as a whole.
/// async-graphql fails each field that uses a missing one instead (saying the variable "is not
/// defined"), and lets a null through wherever the variable meets a nullable argument.
fn missing_variable(op: &Positioned<OperationDefinition>, given: &Variables) -> Option<ServerError> {
    op.node.variable_definitions.iter().find_map(|v| {
        let (name, ty) = (&v.node.name.node, &v.node.var_type.node);
        if ty.nullable {
            return None;
        }
        let problem = match given.get(name) {
            None if v.node.default_value.is_none() => "was given no value: add it to `variables`",
            Some(Value::Null) => "was given null: give it a value (or leave it out, if it has a default)",
            _ => return None,
        };
        Some(ServerError::new(format!("variable ${name} of type {ty} {problem}"), Some(v.pos)))
    })
}

/// A `DateTime` variable whose value is no date-time fails the request as a whole, naming the
/// variable, as the spec's coercion of variables says; async-graphql (which reads a custom scalar
/// only where an argument uses it) fails each field using it, naming neither.
fn unreadable_date(op: &Positioned<OperationDefinition>, given: &Variables) -> Option<ServerError> {
    use async_graphql::parser::types::BaseType;
    fn bad<'a>(ty: &BaseType, value: &'a Value) -> Option<&'a Value> {
        match (ty, value) {
            (_, Value::Null) => None,
            (BaseType::List(inner), Value::List(items)) => items.iter().find_map(|v| bad(&inner.base, v)),
            (BaseType::List(inner), v) => bad(&inner.base, v),
            (BaseType::Named(name), Value::String(s)) if name.as_str() == "DateTime" => {
                s.parse::<chrono::DateTime<chrono::Utc>>().is_err().then_some(value)
            }
            (BaseType::Named(name), v) if name.as_str() == "DateTime" => Some(v),
            _ => None,
        }
    }
    op.node.variable_definitions.iter().find_map(|v| {
        let (name, ty) = (&v.node.name.node, &v.node.var_type.node);
        let value = bad(&ty.base, given.get(name)?)?;
        Some(ServerError::new(
            format!(
                "variable ${name} of type {ty} was given {value}, which is no date-time: write it as RFC 3339, e.g. \
                 2025-03-01T00:00:00Z"
            ),
            Some(v.pos),
        ))
    })
}

/// Whether the items of a list type (`[T]`, `[T!]!`) may be null.
fn item_nullable(return_type: &str) -> bool {
    let inner = return_type.trim_end_matches('!');
    !inner.strip_prefix('[').and_then(|t| t.strip_suffix(']')).is_some_and(|t| t.ends_with('!'))
}

fn path_of(node: &QueryPathNode<'_>) -> Path {
    let mut path: Path = std::iter::once(node)
        .chain(node.parents())
        .map(|n| match n.segment {
            QueryPathSegment::Name(name) => Seg::Field(name.to_string()),
            QueryPathSegment::Index(i) => Seg::Index(i),
        })
        .collect();
    path.reverse();
    path
}

/// A non-null field (or a list item) at `path` failed: the nearest place at or above it that may
/// be null becomes null: the item itself if its list allows null items, else the field above a
/// non-null field, and so on up (at the top, `data`).
fn null_parent(data: &mut Value, mut target: Path, above: &HashMap<Path, (bool, bool)>) {
    if matches!(target.last(), Some(Seg::Field(_))) {
        target.pop();
    }
    loop {
        let may_be_null = match target.last() {
            None => {
                *data = Value::Null;
                return;
            }
            // An item: as its list says.
            Some(Seg::Index(_)) => {
                above.get(&target[..target.len() - 1]).is_some_and(|&(_, items_nullable)| items_nullable)
            }
            Some(Seg::Field(_)) => above.get(&target).is_some_and(|&(non_null, _)| !non_null),
        };
        if may_be_null {
            set_null(data, &target);
            return;
        }
        target.pop();
    }
}

/// Sets the value at `path` to null (nothing, if a null above it is already there).
fn set_null(data: &mut Value, path: &[Seg]) {
    let mut at = data;
    for seg in path {
        at = match (seg, at) {
            (Seg::Field(name), Value::Object(map)) => match map.get_mut(name.as_str()) {
                Some(v) => v,
                None => return,
            },
            (Seg::Index(i), Value::List(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    *at = Value::Null;
}

type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

/// The response keys the selection sets ask for, in the order asked (fragments included, and the
/// same key asked twice merged), each with the selection sets asked under it.
fn plan<'d>(sets: &[&'d SelectionSet], fragments: &'d Fragments) -> Vec<(&'d Name, Vec<&'d SelectionSet>)> {
    fn walk<'d>(set: &'d SelectionSet, fragments: &'d Fragments, out: &mut Vec<(&'d Name, Vec<&'d SelectionSet>)>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    let key = &f.node.response_key().node;
                    let sub = &f.node.selection_set.node;
                    match out.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, subs)) => subs.push(sub),
                        None => out.push((key, vec![sub])),
                    }
                }
                Selection::FragmentSpread(s) => {
                    if let Some(fragment) = fragments.get(&s.node.fragment_name.node) {
                        walk(&fragment.node.selection_set.node, fragments, out);
                    }
                }
                Selection::InlineFragment(f) => walk(&f.node.selection_set.node, fragments, out),
            }
        }
    }
    let mut out = Vec::new();
    for set in sets {
        walk(set, fragments, &mut out);
    }
    out
}

/// Puts every object of `value` (answering `sets`) in the order its fields were asked for.
fn in_order(value: &mut Value, sets: &[&SelectionSet], fragments: &Fragments) {
    match value {
        Value::Object(_) => {
            let plan = plan(sets, fragments);
            order_object(value, &plan, fragments);
        }
        Value::List(_) => {
            // One plan for every item.
            let plan = plan(sets, fragments);
            order_items(value, &plan, fragments);
        }
        _ => {}
    }
}

fn order_items(value: &mut Value, plan: &[(&Name, Vec<&SelectionSet>)], fragments: &Fragments) {
    match value {
        Value::List(items) => items.iter_mut().for_each(|item| order_items(item, plan, fragments)),
        Value::Object(_) => order_object(value, plan, fragments),
        _ => {}
    }
}

fn order_object(value: &mut Value, plan: &[(&Name, Vec<&SelectionSet>)], fragments: &Fragments) {
    let Value::Object(map) = value else { return };
    let sorted_already =
        map.keys().zip(plan.iter().map(|(k, _)| *k).filter(|k| map.contains_key(*k))).all(|(a, b)| a == b);
    if !sorted_already {
        let mut sorted = async_graphql::indexmap::IndexMap::with_capacity(map.len());
        for (key, _) in plan {
            if let Some(v) = map.shift_remove(*key) {
                sorted.insert((*key).clone(), v);
            }
        }
        sorted.extend(std::mem::take(map));
        *map = sorted;
    }
    for (key, subs) in plan {
        if subs.iter().all(|s| s.items.is_empty()) {
            continue;
        }
        if let Some(v) = map.get_mut(*key) {
            in_order(v, subs, fragments);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The answers the extension shapes are tested on a schema of their own in
    // tests/api/graph_corrections.rs, beside plain async-graphql's.
    #[test]
    fn list_item_nullability_is_read_from_the_type() {
        assert!(item_nullable("[Thing]"));
        assert!(item_nullable("[Thing]!"));
        assert!(!item_nullable("[Thing!]"));
        assert!(!item_nullable("[Thing!]!"));
    }
}
