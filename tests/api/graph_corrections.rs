//! Where witty-bff corrects async-graphql, and proof that the correction is still needed.
//!
//! Each `plain_async_graphql_*` test runs a query on a small schema built with async-graphql alone
//! and asserts that it still answers otherwise than the spec (or than witty-bff's contract) asks;
//! the same query on the same schema with witty-bff's [`ResponseShape`] gives the right answer.
//! When a `plain_*` test fails, async-graphql does it itself now: drop the correction and the test.
//! The `the_bff_*` tests drive the real service over HTTP: they fail without the correction.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{EmptyMutation, Object, Request, Result, Schema, Subscription};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use witty_bff::ResponseShape;
use witty_bff::{MAX_COMPLEXITY, MAX_DEPTH};

use crate::helpers::*;

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
    async fn echo(&self, n: Option<i32>) -> Option<i32> {
        n
    }
    /// Counts how often validation visits it (see the fragment test).
    #[graphql(complexity = "visited()")]
    async fn leaf(&self) -> i32 {
        0
    }
}

struct Thing;

#[Object]
impl Thing {
    async fn ok(&self) -> i32 {
        // Finishes after its siblings: the answer's order must still be the query's.
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
    async fn inner(&self) -> Option<Thing> {
        Some(Thing)
    }
}

struct S;

#[Subscription(name = "Subscription")]
impl S {
    async fn ticks(&self) -> impl Stream<Item = i32> {
        futures::stream::iter([1])
    }
}

/// Validation's visits of `Q.leaf` (only the fragment test selects it).
static LEAF_VISITS: AtomicUsize = AtomicUsize::new(0);

fn visited() -> usize {
    LEAF_VISITS.fetch_add(1, Ordering::Relaxed);
    1
}

type TestSchema = Schema<Q, EmptyMutation, S>;

/// async-graphql alone, with its own limits set as witty-bff's were before it checked them itself.
fn plain() -> TestSchema {
    Schema::build(Q, EmptyMutation, S).limit_complexity(MAX_COMPLEXITY).limit_depth(MAX_DEPTH).finish()
}

/// The same schema as witty-bff builds its own: with the correcting extension, no schema limits.
fn corrected() -> TestSchema {
    Schema::build(Q, EmptyMutation, S).extension(ResponseShape).finish()
}

/// The response as sent: `data` as JSON text (key order kept), and each error's message and code.
async fn run(schema: &TestSchema, query: &str) -> (String, Vec<(String, Option<String>)>) {
    let r = schema.execute(query).await;
    let errors = r
        .errors
        .iter()
        .map(|e| {
            let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|c| c.to_string().replace('"', ""));
            (e.message.clone(), code)
        })
        .collect();
    (serde_json::to_string(&r.data).unwrap(), errors)
}

fn codes(errors: &[(String, Option<String>)]) -> Vec<Option<&str>> {
    errors.iter().map(|(_, code)| code.as_deref()).collect()
}

/// The corrected answer: `data` as JSON text, and each error's path as JSON.
async fn shaped(query: &str) -> (String, Vec<String>) {
    let r = corrected().execute(query).await;
    let paths = r.errors.iter().map(|e| serde_json::to_string(&e.path).unwrap()).collect();
    (serde_json::to_string(&r.data).unwrap(), paths)
}

// What the correction does, on the corrected schema alone.

#[tokio::test]
async fn a_failing_nullable_field_is_null_in_its_place() {
    let (data, errors) = shaped("{ one thing { maybe ok } }").await;
    assert_eq!(data, r#"{"one":1,"thing":{"maybe":null,"ok":2}}"#);
    assert_eq!(errors, [r#"["thing","maybe"]"#]);
    // Its only field failing still leaves the object, not null.
    assert_eq!(shaped("{ thing { maybe } }").await.0, r#"{"thing":{"maybe":null}}"#);
}

#[tokio::test]
async fn a_failing_non_null_field_nulls_its_nearest_nullable_parent() {
    let (data, errors) = shaped("{ thing { ok broken } one }").await;
    assert_eq!(data, r#"{"thing":null,"one":1}"#);
    assert_eq!(errors, [r#"["thing","broken"]"#]);
    // Through a non-null parent, up to `data`.
    assert_eq!(shaped("{ one strict { broken } }").await.0, "null");
    // An item of a list that allows null items is null; otherwise the list is.
    assert_eq!(shaped("{ things { broken } }").await.0, r#"{"things":[null,null]}"#);
    assert_eq!(shaped("{ strictThings { other broken } one }").await.0, r#"{"strictThings":null,"one":1}"#);
}

#[tokio::test]
async fn a_field_asked_twice_is_nulled_from_what_both_asked() {
    // The copy with the failing field finishes last (`ok` waits a turn) or first: same answer.
    assert_eq!(shaped("{ thing { other } thing { ok broken } }").await.0, r#"{"thing":null}"#);
    assert_eq!(shaped("{ thing { ok broken } thing { other } }").await.0, r#"{"thing":null}"#);
    assert_eq!(shaped("{ thing { ok } thing { broken } }").await.0, r#"{"thing":null}"#);
    // A failure deeper in one copy nulls only its own nearest nullable parent.
    let (data, errors) = shaped("{ thing { inner { ok broken } } thing { other } }").await;
    assert_eq!(data, r#"{"thing":{"inner":null,"other":3}}"#);
    assert_eq!(errors, [r#"["thing","inner","broken"]"#]);
}

#[tokio::test]
async fn fields_come_in_the_order_asked_fragments_included() {
    let (data, _) = shaped("{ thing { ok other ...F } one } fragment F on Thing { ... on Thing { maybe } }").await;
    assert_eq!(data, r#"{"thing":{"ok":2,"other":3,"maybe":null},"one":1}"#);
    let (data, _) = shaped("{ things { other ok } }").await;
    assert_eq!(data, r#"{"things":[{"other":3,"ok":2},{"other":3,"ok":2}]}"#);
}

/// The spec (October 2021), "Handling Field Errors" (§6.4.4): a field that fails is null in its
/// place, its error in `errors`. async-graphql leaves it out (`{"thing":{"ok":2}}` here).
#[tokio::test]
async fn plain_async_graphql_still_leaves_a_failing_nullable_field_out() {
    let query = "{ thing { maybe ok } }";
    let spec = r#"{"thing":{"maybe":null,"ok":2}}"#;
    assert_eq!(run(&corrected(), query).await.0, spec);
    let (plain, errors) = run(&plain(), query).await;
    assert_eq!(errors.len(), 1, "the error is reported: {errors:?}");
    assert_ne!(plain, spec, "async-graphql now keeps a failed field as null: drop that part of shape.rs");
}

/// The same section: a failing non-null field nulls its nearest nullable parent. async-graphql
/// leaves the parent as it was, the failed field out (`{"one":1,"thing":{"ok":2}}` here).
#[tokio::test]
async fn plain_async_graphql_still_does_not_null_the_parent_of_a_failing_non_null_field() {
    let query = "{ thing { ok broken } one }";
    let spec = r#"{"thing":null,"one":1}"#;
    assert_eq!(run(&corrected(), query).await.0, spec);
    let (plain, _) = run(&plain(), query).await;
    assert_ne!(plain, spec, "async-graphql now propagates nulls as the spec says: drop that part of shape.rs");
}

/// The spec, "Field Collection" (§6.3.2) and "Serialized Map Ordering" (§7.2.2): fields come in
/// the order the query asks for them. async-graphql writes them as they finish
/// (`{"one":1,"thing":{"other":3,"ok":2}}` here).
#[tokio::test]
async fn plain_async_graphql_still_answers_fields_in_the_order_they_finish() {
    let query = "{ thing { ok other } one }";
    let spec = r#"{"thing":{"ok":2,"other":3},"one":1}"#;
    assert_eq!(run(&corrected(), query).await.0, spec);
    let (plain, _) = run(&plain(), query).await;
    assert_ne!(plain, spec, "async-graphql now answers in the query's order: drop in_order from shape.rs");
}

/// The spec, "Coercing Variable Values" (§6.1.2): a non-null variable given no value fails the
/// whole request. async-graphql runs it, failing only the fields that use the variable.
#[tokio::test]
async fn plain_async_graphql_still_runs_a_request_missing_a_required_variable() {
    let query = "query($n: Int!) { one echo(n: $n) }";
    let (data, errors) = run(&corrected(), query).await;
    assert_eq!((data.as_str(), codes(&errors)), ("null", vec![Some("BAD_USER_INPUT")]), "{errors:?}");
    let (plain, _) = run(&plain(), query).await;
    assert_ne!(plain, "null", "async-graphql now refuses the request: drop missing_variable from shape.rs");
}

/// A subscription whose root field comes through a fragment (allowed by "Single root field",
/// §5.2.3.1). async-graphql runs only fields written at the root: it ends the stream at once,
/// with no event and no error.
#[tokio::test]
async fn plain_async_graphql_still_ends_a_subscription_whose_root_is_a_fragment() {
    let query = "subscription { ...F } fragment F on Subscription { ticks }";
    let events = |schema: TestSchema| async move {
        schema.execute_stream(Request::new(query)).map(|r| serde_json::to_string(&r).unwrap()).collect::<Vec<_>>().await
    };
    assert_eq!(events(corrected()).await, [r#"{"data":{"ticks":1}}"#]);
    assert_ne!(events(plain()).await, [r#"{"data":{"ticks":1}}"#], "drop inline_subscription_root_fragments");
}

/// async-graphql's own limits raise an untyped error (no `extensions.code`) whose only mark is its
/// English text; witty-bff checks them from the typed `ValidationResult` instead.
#[tokio::test]
async fn plain_async_graphql_still_gives_its_limits_and_parse_errors_no_code() {
    let wide = format!("{{ {} }}", (0..=MAX_COMPLEXITY).map(|i| format!("a{i}: one")).collect::<Vec<_>>().join(" "));
    let deep = format!("{{ thing {{ {}other{} }} }}", "inner { ".repeat(MAX_DEPTH), " }".repeat(MAX_DEPTH));
    for (query, what) in [(&wide, "complexity"), (&deep, "depth")] {
        let (_, errors) = run(&plain(), query).await;
        assert_eq!(codes(&errors), [None], "{what}: async-graphql now gives a code: {errors:?}");
        let (data, errors) = run(&corrected(), query).await;
        assert_eq!((data.as_str(), codes(&errors)), ("null", vec![Some("QUERY_TOO_COMPLEX")]), "{what}");
    }
    for broken in ["{ thing { ok ", "{ nope }"] {
        assert_eq!(codes(&run(&plain(), broken).await.1), [None], "{broken}: async-graphql now gives a code");
        assert_eq!(codes(&run(&corrected(), broken).await.1), [Some("BAD_USER_INPUT")], "{broken}");
    }
}

/// `levels` fragments, each spreading the next four times, the last selecting `leaf`.
fn fragment_tree(levels: u32) -> String {
    let mut doc = "{ ...F0 }".to_string();
    for i in 0..levels {
        doc += &format!(" fragment F{i} on Q {{ ...F{n} ...F{n} ...F{n} ...F{n} }}", n = i + 1);
    }
    doc + &format!(" fragment F{levels} on Q {{ leaf }}")
}

/// size.rs: async-graphql walks a fragment again at every spread of it (its validation's
/// `visit_fragment_spread`, its recursion-depth check, the complexity count, execution), so a
/// document of a few hundred bytes costs 4^levels visits. witty-bff measures each fragment once
/// and refuses the document before async-graphql walks it.
#[tokio::test]
async fn plain_async_graphql_still_walks_a_fragment_again_at_every_spread() {
    let tree = fragment_tree(8);
    LEAF_VISITS.store(0, Ordering::Relaxed);
    let (_, errors) = run(&plain(), &tree).await;
    let visits = LEAF_VISITS.swap(0, Ordering::Relaxed);
    assert!(visits >= 4usize.pow(8), "async-graphql now walks each fragment once ({visits} visits): drop size.rs");
    assert_eq!(codes(&errors), [None], "refused only by its complexity limit, once walked: {errors:?}");
    let (_, errors) = run(&corrected(), &tree).await;
    assert_eq!(codes(&errors), [Some("QUERY_TOO_COMPLEX")], "{errors:?}");
    assert_eq!(LEAF_VISITS.load(Ordering::Relaxed), 0, "refused before anything walked it");
}

/// The real BFF: the messages and codes of the limits and of a request async-graphql cannot
/// read, as clients see them.
#[tokio::test]
async fn the_bff_tells_each_refused_request_its_code_and_what_to_do() {
    let app = spawn_app().await;
    // Introspection nests deep enough without a token's data: 4 fields, then `ofType`s.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {}name{} }} }} }} }} }}",
        "ofType { ".repeat(MAX_DEPTH - 3),
        " }".repeat(MAX_DEPTH - 3)
    );
    let r = app.graphql("alice", &deep, json!({})).await;
    assert_eq!(only(&r), ("QUERY_TOO_COMPLEX", "the query is nested deeper than 16 levels; ask for less at once"));
    let wide =
        format!("{{ {} }}", (0..=100).map(|i| format!("a{i}: installations {{ id }}")).collect::<Vec<_>>().join(" "));
    let r = app.graphql("alice", &wide, json!({})).await;
    let complex = "the query asks the Witty-Home service for too much at once: each field that reads it (a measure's \
                   values, a log's entries or counts, a list, a resource by id), and each alias of one, counts 50 of \
                   the 5000 allowed; split it into smaller queries";
    assert_eq!(only(&r), ("QUERY_TOO_COMPLEX", complex));
    for (query, what) in [("{ installations { id ", "does not parse"), ("{ nope }", "is not valid")] {
        let r = app.graphql("alice", query, json!({})).await;
        assert_eq!(only(&r).0, "BAD_USER_INPUT", "a query that {what}: {r}");
    }
    let token = app.token_for("alice");
    let named = json!({"query": "query A { installations { id } }", "operationName": "B"});
    let r = app.post_graphql(Some(&token), named).await.body;
    assert_eq!(only(&r).0, "BAD_USER_INPUT", "an operation the document lacks: {r}");
}

/// The code and message of a response's only error.
fn only(r: &Value) -> (&str, &str) {
    let errors = r["errors"].as_array().unwrap_or_else(|| panic!("errors: {r}"));
    assert_eq!(errors.len(), 1, "{r}");
    (errors[0]["extensions"]["code"].as_str().unwrap_or("<none>"), errors[0]["message"].as_str().unwrap_or_default())
}
