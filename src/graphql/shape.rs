//! Keeps every answer in the shape the GraphQL spec gives it ("Handling Field Errors" and
//! "Serialized Map Ordering"), which async-graphql 7.2 does not on its own: there, a field that
//! fails is left out of its object (and an object whose fields all failed becomes `null`, even
//! where the schema says non-null), and an object's fields come in the order they finished.
//!
//! With this extension a failing field is `null` with its error in `errors`; when that field is
//! non-null, the `null` goes up to the nearest nullable field or list item (or to `data`); and
//! every object lists its fields in the order the query asked for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{
    Name, PathSegment, Positioned, QueryPathNode, QueryPathSegment, Response, ServerError, ServerResult, Value,
    Variables,
};

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
    /// Paths of non-null fields (or list items) that are `null`: their parent must be too.
    nulled: Mutex<Vec<Vec<PathSegment>>>,
    /// The order of the keys of each field's selection (by the address of the field in the
    /// document, which lives as long as the request).
    orders: Mutex<HashMap<usize, Arc<[Name]>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_graphql::async_trait::async_trait]
impl Extension for Shaping {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        *lock(&self.doc) = Some(Arc::new(doc.clone()));
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        response.errors.extend(lock(&self.errors).drain(..));
        // A non-null root field is null: so is `data`.
        if lock(&self.nulled).drain(..).next().is_some() {
            response.data = Value::Null;
        }
        let doc = lock(&self.doc).clone();
        if let Some(doc) = doc.as_deref()
            && let Some(op) = super::operation(doc, operation_name)
        {
            let mut order = Vec::new();
            keys_in_order(&op.node.selection_set.node, &doc.fragments, &mut order);
            reorder(&mut response.data, &order);
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
        let field = info.field;
        let return_type = info.return_type;
        let mut value = match next.run(ctx, info).await {
            Ok(value) => value.unwrap_or_default(),
            Err(error) => {
                lock(&self.errors).push(error);
                if non_null {
                    lock(&self.nulled).push(path_of(path_node));
                }
                return Ok(Some(Value::Null));
            }
        };
        if !lock(&self.nulled).is_empty() {
            let path = path_of(path_node);
            if self.null_children(&path, return_type, &mut value) {
                if non_null {
                    lock(&self.nulled).push(path);
                }
                return Ok(Some(Value::Null));
            }
        }
        if matches!(value, Value::Object(_) | Value::List(_)) {
            reorder(&mut value, &self.order_of(field));
        }
        Ok(Some(value))
    }
}

impl Shaping {
    /// The keys `field` selects, in order.
    fn order_of(&self, field: &async_graphql::parser::types::Field) -> Arc<[Name]> {
        let at = field as *const _ as usize;
        if let Some(order) = lock(&self.orders).get(&at) {
            return order.clone();
        }
        let mut order = Vec::new();
        if let Some(doc) = lock(&self.doc).clone() {
            keys_in_order(&field.selection_set.node, &doc.fragments, &mut order);
        }
        let order: Arc<[Name]> = order.into();
        lock(&self.orders).insert(at, order.clone());
        order
    }

    /// Applies the nulls of non-null fields under the field at `path` (of `return_type`) to its
    /// `value`: a list item whose field is null becomes null when the list allows it. Says
    /// whether the field's whole value must be null.
    fn null_children(&self, path: &[PathSegment], return_type: &str, value: &mut Value) -> bool {
        let mut nulled = lock(&self.nulled);
        if nulled.is_empty() {
            return false;
        }
        let mut whole = false;
        nulled.retain(|at| {
            let Some(rest) = at.strip_prefix(path).filter(|rest| !rest.is_empty()) else { return true };
            match rest {
                // A field of this object is null and may not be.
                [PathSegment::Field(_)] => whole = true,
                // An item of this list is null (or a field of it that may not be): fine if the list
                // allows null items.
                [PathSegment::Index(i)] | [PathSegment::Index(i), PathSegment::Field(_)] => {
                    match (item_nullable(return_type), &mut *value) {
                        (true, Value::List(items)) if *i < items.len() => items[*i] = Value::Null,
                        _ => whole = true,
                    }
                }
                // Deeper (lists of lists): the whole value.
                _ => whole = true,
            }
            false
        });
        whole
    }
}

/// Whether the items of a list type (`[T]`, `[T!]!`) may be null.
fn item_nullable(return_type: &str) -> bool {
    let inner = return_type.trim_end_matches('!');
    !inner.strip_prefix('[').and_then(|t| t.strip_suffix(']')).is_some_and(|t| t.ends_with('!'))
}

fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut path: Vec<PathSegment> = std::iter::once(node)
        .chain(node.parents())
        .map(|n| match n.segment {
            QueryPathSegment::Name(name) => PathSegment::Field(name.to_string()),
            QueryPathSegment::Index(i) => PathSegment::Index(i),
        })
        .collect();
    path.reverse();
    path
}

/// The response keys a selection set asks for, in the order it asks (fragments included).
fn keys_in_order(set: &SelectionSet, fragments: &HashMap<Name, Positioned<FragmentDefinition>>, out: &mut Vec<Name>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let key = f.node.response_key();
                if !out.contains(&key.node) {
                    out.push(key.node.clone());
                }
            }
            Selection::FragmentSpread(s) => {
                if let Some(fragment) = fragments.get(&s.node.fragment_name.node) {
                    keys_in_order(&fragment.node.selection_set.node, fragments, out);
                }
            }
            Selection::InlineFragment(f) => keys_in_order(&f.node.selection_set.node, fragments, out),
        }
    }
}

/// Puts the fields of an object (or of each object of a list) in `order`.
fn reorder(value: &mut Value, order: &[Name]) {
    match value {
        Value::Object(map) => {
            let in_order = map.keys().zip(order.iter().filter(|k| map.contains_key(*k))).all(|(a, b)| a == b);
            if !in_order {
                let mut sorted = async_graphql::indexmap::IndexMap::with_capacity(map.len());
                for key in order {
                    if let Some(v) = map.shift_remove(key) {
                        sorted.insert(key.clone(), v);
                    }
                }
                sorted.extend(std::mem::take(map));
                *map = sorted;
            }
        }
        Value::List(items) => items.iter_mut().for_each(|item| reorder(item, order)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Result, Schema};

    use super::*;

    struct Q;

    #[Object]
    impl Q {
        async fn one(&self) -> i32 {
            1
        }
        async fn thing(&self) -> Option<Thing> {
            Some(Thing)
        }
        async fn strict(&self) -> Thing {
            Thing
        }
        async fn things(&self) -> Option<Vec<Option<Thing>>> {
            Some(vec![Some(Thing), Some(Thing)])
        }
        async fn strict_things(&self) -> Option<Vec<Thing>> {
            Some(vec![Thing])
        }
    }

    struct Thing;

    #[Object]
    impl Thing {
        async fn ok(&self) -> i32 {
            // Finishes after its siblings: the order of the answer is the query's, not this.
            tokio::task::yield_now().await;
            2
        }
        async fn other(&self) -> i32 {
            3
        }
        async fn broken(&self) -> Result<i32> {
            Err("broken".into())
        }
        async fn maybe(&self) -> Result<Option<i32>> {
            Err("no maybe".into())
        }
    }

    async fn run(query: &str) -> (String, Vec<String>) {
        let schema = Schema::build(Q, EmptyMutation, EmptySubscription).extension(ResponseShape).finish();
        let r = schema.execute(query).await;
        let paths = r.errors.iter().map(|e| serde_json::to_string(&e.path).unwrap()).collect();
        (serde_json::to_string(&r.data).unwrap(), paths)
    }

    #[tokio::test]
    async fn a_failing_nullable_field_is_null_in_its_place() {
        let (data, errors) = run("{ one thing { maybe ok } }").await;
        assert_eq!(data, r#"{"one":1,"thing":{"maybe":null,"ok":2}}"#);
        assert_eq!(errors, [r#"["thing","maybe"]"#]);
        // Its only field failing still leaves the object, not null.
        assert_eq!(run("{ thing { maybe } }").await.0, r#"{"thing":{"maybe":null}}"#);
    }

    #[tokio::test]
    async fn a_failing_non_null_field_nulls_its_nearest_nullable_parent() {
        let (data, errors) = run("{ thing { ok broken } one }").await;
        assert_eq!(data, r#"{"thing":null,"one":1}"#);
        assert_eq!(errors, [r#"["thing","broken"]"#]);
        // Through a non-null parent, up to `data`.
        assert_eq!(run("{ one strict { broken } }").await.0, "null");
        // An item of a list that allows null items is null; otherwise the list is.
        assert_eq!(run("{ things { broken } }").await.0, r#"{"things":[null,null]}"#);
        assert_eq!(run("{ strictThings { other broken } one }").await.0, r#"{"strictThings":null,"one":1}"#);
    }

    #[tokio::test]
    async fn fields_come_in_the_order_asked_fragments_included() {
        let (data, _) = run("{ thing { ok other ...F } one } fragment F on Thing { ... on Thing { maybe } }").await;
        assert_eq!(data, r#"{"thing":{"ok":2,"other":3,"maybe":null},"one":1}"#);
        let (data, _) = run("{ things { other ok } }").await;
        assert_eq!(data, r#"{"things":[{"other":3,"ok":2},{"other":3,"ok":2}]}"#);
    }

    #[test]
    fn list_item_nullability_is_read_from_the_type() {
        assert!(item_nullable("[Thing]"));
        assert!(item_nullable("[Thing]!"));
        assert!(!item_nullable("[Thing!]"));
        assert!(!item_nullable("[Thing!]!"));
    }
}
