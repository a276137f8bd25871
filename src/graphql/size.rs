//! How much a document stands for once its fragments are written out, measured before
//! async-graphql walks it (called from [`ResponseShape`](super::shape::ResponseShape)'s
//! `prepare_request`).
//!
//! What it corrects in async-graphql 7.2: every pass over a document walks a fragment again at
//! each spread of it: the recursion-depth check of the parse phase (`check_recursive_depth`), the
//! validation rules and the complexity count (`visit_fragment_spread` in `VisitMode::Inline`), and
//! execution. Fragments that each spread the next four times stand, in a few hundred bytes, for
//! 4^levels visits: seconds to years of CPU for one request, with or without a token, before any
//! limit of async-graphql's answers. The spec sets no limit here (it leaves the cost of a query to
//! the service); its "Fragment spreads must not form cycles" (§5.5.2.2, October 2021) refuses a
//! fragment spreading itself, but async-graphql's depth check walks such a cycle to its limit, every
//! way, before validation says so.
//!
//! Here each fragment is walked once (its size remembered), to a bounded depth, so the measure
//! costs one pass over the document. The same pass counts what amplifies an answer without
//! making the document large (Apollo Router's limits): aliases and root fields per operation, and
//! introspection fields, which async-graphql counts 1 each in the complexity while each
//! `__schema` answers the whole schema (tens of kilobytes). The parser's own recursion limit and
//! the size of an answer are refused here too, all as `QUERY_TOO_COMPLEX`. `plain_async_graphql_still_walks_a_fragment_again_at_every_spread`
//! in `tests/api/graph_corrections.rs` fails the day async-graphql walks each fragment once.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{Name, Positioned, ServerError};

use super::error::AppError;

/// How many selections (fields, fragment spreads, inline fragments) a document may make with its
/// fragments written out, all operations together. A real query makes a few hundred.
pub(crate) const MAX_SELECTIONS: usize = 20_000;

/// How deep selections may nest (a field's selection set, a fragment, an inline fragment each
/// count one): async-graphql's own recursion limit, which refuses anything deeper anyway.
pub(crate) const MAX_NESTING: usize = 32;

/// How many aliases one operation may use, its fragments written out. Each alias asks for its
/// field again (500 aliased `__schema` in 48 KiB answered 14 MB); a station's history page uses
/// a few dozen, and a batch of 100 keyed commands 100.
pub(crate) const MAX_ALIASES: usize = 200;

/// How many root fields one operation may select: distinct response keys at its root, its
/// fragments included (a field asked twice under one key is merged and resolved once; each alias
/// is a key of its own). Each is resolved on its own; a batch of 100 keyed commands selects 100.
pub(crate) const MAX_ROOT_FIELDS: usize = 128;

/// What each `__schema` or `__type` field (each alias of one) adds to the query's complexity
/// (checked against [`super::MAX_COMPLEXITY`] in [`super::error::over_limits`]): its answer is the
/// schema, tens of kilobytes, which async-graphql counts as 1 per field selected. So at most 9
/// per query; an IDE's introspection query (one `__schema`, a few hundred fields) passes.
pub(crate) const INTROSPECTION_COST: usize = 500;

/// How large the `data` of one query's or mutation's answer may be, as JSON. Checked once the
/// answer is there, before it is sent; a station's history page answers about 200 KiB.
pub(crate) const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// What a document asks for that is checked later, once async-graphql has measured it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measured {
    /// `__schema` and `__type` fields (aliases included), fragments written out, of every
    /// operation: each costs [`INTROSPECTION_COST`].
    pub(crate) introspection: usize,
}

/// Refuses a document that makes more than [`MAX_SELECTIONS`] selections written out, nests more
/// than [`MAX_NESTING`] deep, has an operation with more than [`MAX_ALIASES`] aliases or
/// [`MAX_ROOT_FIELDS`] root fields, or has a fragment that spreads itself (which validation would
/// refuse too, but only after async-graphql's depth check walked it to its limit, every way).
/// A spread of an unknown fragment counts one (validation refuses it later).
pub(crate) fn check(doc: &ExecutableDocument) -> Result<Measured, ServerError> {
    let mut walk = Walk { fragments: &doc.fragments, sizes: HashMap::new() };
    let mut total = 0usize;
    let mut measured = Measured::default();
    for (_, op) in doc.operations.iter() {
        let m = walk.set(&op.node.selection_set.node, 0)?;
        total = total.saturating_add(m.size);
        if total > MAX_SELECTIONS {
            return Err(too_many());
        }
        if m.aliases > MAX_ALIASES {
            return Err(too_complex(format!(
                "the operation uses more than {MAX_ALIASES} aliases (its fragments written out), and each alias asks \
                 for its field again; split it into smaller queries"
            )));
        }
        let mut keys = RootKeys::default();
        keys.walk(&op.node.selection_set.node, &doc.fragments);
        if keys.keys.len() > MAX_ROOT_FIELDS {
            return Err(too_complex(format!(
                "the operation selects more than {MAX_ROOT_FIELDS} root fields (response keys, its fragments \
                 included, each alias one); split it into smaller queries"
            )));
        }
        measured.introspection = measured.introspection.saturating_add(m.introspection);
    }
    // Fragments no operation spreads are walked by validation too.
    for name in doc.fragments.keys() {
        walk.fragment(name, 0)?;
    }
    Ok(measured)
}

/// The refusal of a query that does not parse because it nests deeper than the parser allows, so
/// that any nesting past [`MAX_NESTING`] is `QUERY_TOO_COMPLEX`, as a parsed one is. async-graphql's
/// parser stops at 64 selection sets with
/// [`RecursionLimitExceeded`](async_graphql::parser::Error::RecursionLimitExceeded), told here by
/// its variant; deeper still (about 500), pest stops first with its stack limit, a `Syntax` error
/// told from others only by its text, which is never read: a document whose braces nest past the
/// limit ([`brace_depth`]) is refused for its nesting whatever the parser said. `None` for any
/// other parse error (the parse hook reports it as `BAD_USER_INPUT`).
pub(crate) fn parse_limit(query: &str) -> Option<ServerError> {
    match async_graphql::parser::parse_query(query) {
        Ok(_) => None,
        Err(async_graphql::parser::Error::RecursionLimitExceeded) => Some(too_deep()),
        // The operation's own braces are one level more than its selection sets' depth.
        Err(_) if brace_depth(query) > MAX_NESTING + 1 => Some(too_deep()),
        Err(_) => None,
    }
}

/// How deep `{` nest in a document, outside strings and comments: its selection sets (and any
/// input objects) as written, read without the parser.
fn brace_depth(query: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                chars.by_ref().find(|&c| c == '\n' || c == '\r');
            }
            '"' => {
                // A block string ("""…""") or a string ("…", escapes skipped).
                let block = chars.next_if_eq(&'"').is_some() && chars.next_if_eq(&'"').is_some();
                let mut quotes = 0;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if !block => {
                            chars.next();
                        }
                        '\\' if chars.peek() == Some(&'"') => {
                            chars.next();
                        }
                        '"' if !block => break,
                        '"' => {
                            quotes += 1;
                            if quotes == 3 {
                                break;
                            }
                            continue;
                        }
                        '\n' | '\r' if !block => break,
                        _ => {}
                    }
                    quotes = 0;
                }
            }
            '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The response keys at an operation's root, its fragments included, each fragment walked once.
#[derive(Default)]
struct RootKeys<'a> {
    keys: std::collections::HashSet<&'a Name>,
    fragments: std::collections::HashSet<&'a Name>,
}

impl<'a> RootKeys<'a> {
    /// Called once the document's nesting is known to be bounded ([`MAX_NESTING`]).
    fn walk(&mut self, set: &'a SelectionSet, fragments: &'a Fragments) {
        for item in &set.items {
            if self.keys.len() > MAX_ROOT_FIELDS {
                return;
            }
            match &item.node {
                Selection::Field(f) => {
                    self.keys.insert(&f.node.response_key().node);
                }
                Selection::InlineFragment(f) => self.walk(&f.node.selection_set.node, fragments),
                Selection::FragmentSpread(s) => {
                    let name = &s.node.fragment_name.node;
                    if let Some(def) = fragments.get(name)
                        && self.fragments.insert(name)
                    {
                        self.walk(&def.node.selection_set.node, fragments);
                    }
                }
            }
        }
    }
}

/// Whether `data` is over [`MAX_RESPONSE_BYTES`] as JSON: written to a counter that stops at the
/// limit, so a huge answer is not written out in full to learn it.
pub(crate) fn too_large(data: &async_graphql::Value) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.checked_sub(bytes.len()).ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(MAX_RESPONSE_BYTES), data).is_err()
}

/// The refusal of an answer over [`MAX_RESPONSE_BYTES`].
pub(crate) fn response_too_large() -> ServerError {
    too_complex(format!(
        "the answer would be larger than {} MiB; ask for less at once (fewer aliases or items, shorter ranges or a \
         coarser step) or split it into smaller queries",
        MAX_RESPONSE_BYTES / (1024 * 1024)
    ))
}

type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

/// What a selection set stands for: its selections written out, how deep they nest below it, and
/// its aliases and introspection fields at any depth.
#[derive(Clone, Copy, Default)]
struct Measure {
    size: usize,
    height: usize,
    aliases: usize,
    introspection: usize,
}

struct Walk<'a> {
    fragments: &'a Fragments,
    /// Each fragment's measure once known; `None` while it is being walked (a spread of it then
    /// is a cycle).
    sizes: HashMap<&'a Name, Option<Measure>>,
}

impl<'a> Walk<'a> {
    /// The measure of a selection set at `depth` (the operation's own set is at 0).
    fn set(&mut self, set: &'a SelectionSet, depth: usize) -> Result<Measure, ServerError> {
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        let mut total = Measure::default();
        for item in &set.items {
            let below = match &item.node {
                Selection::Field(f) => {
                    let field = &f.node;
                    total.aliases = total.aliases.saturating_add(usize::from(field.alias.is_some()));
                    let introspection = matches!(field.name.node.as_str(), "__schema" | "__type");
                    total.introspection = total.introspection.saturating_add(usize::from(introspection));
                    match field.selection_set.node.items.is_empty() {
                        true => None,
                        false => Some(self.set(&field.selection_set.node, depth + 1)?),
                    }
                }
                Selection::InlineFragment(f) => Some(self.set(&f.node.selection_set.node, depth + 1)?),
                Selection::FragmentSpread(s) => self.fragment(&s.node.fragment_name.node, depth + 1)?,
            };
            if let Some(m) = below {
                total.aliases = total.aliases.saturating_add(m.aliases);
                total.introspection = total.introspection.saturating_add(m.introspection);
            }
            let (size, height) = below.map_or((1, 0), |m| (m.size.saturating_add(1), m.height + 1));
            total.size = total.size.saturating_add(size);
            total.height = total.height.max(height);
            if total.size > MAX_SELECTIONS {
                return Err(too_many());
            }
        }
        Ok(total)
    }

    /// The measure of the fragment `name`, its set at `depth` (`None`: no such fragment).
    fn fragment(&mut self, name: &'a Name, depth: usize) -> Result<Option<Measure>, ServerError> {
        let measure = match self.sizes.get(name) {
            Some(Some(known)) => *known,
            Some(None) => {
                let cycle = format!("fragment {name} spreads itself (directly or through other fragments)");
                return Err(AppError::BadUserInput(cycle).into_request_error());
            }
            None => {
                let Some(def) = self.fragments.get(name) else { return Ok(None) };
                self.sizes.insert(name, None);
                let measure = self.set(&def.node.selection_set.node, depth)?;
                self.sizes.insert(name, Some(measure));
                measure
            }
        };
        if depth + measure.height > MAX_NESTING {
            return Err(too_deep());
        }
        Ok(Some(measure))
    }
}

fn too_many() -> ServerError {
    too_complex(format!(
        "the query makes more than {MAX_SELECTIONS} selections once its fragments are written out (each spread \
         counts every selection of its fragment again); spread fragments less often"
    ))
}

fn too_deep() -> ServerError {
    too_complex(format!(
        "the query nests fields and fragments more than {MAX_NESTING} levels deep; ask for less at once (fewer \
         levels of fields, fragments or inline fragments)"
    ))
}

fn too_complex(message: String) -> ServerError {
    AppError::QueryTooComplex(message).into_request_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(query: &str) -> Result<(), String> {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        check(&doc).map(drop).map_err(|e| e.message)
    }

    #[test]
    fn aliases_root_fields_and_introspection_are_counted_with_fragments_written_out() {
        let aliases = |n: usize| (0..n).map(|k| format!("a{k}: x ")).collect::<String>();
        assert_eq!(measured(&format!("{{ y {{ {} }} }}", aliases(MAX_ALIASES))), Ok(()));
        let over = measured(&format!("{{ y {{ {} }} }}", aliases(MAX_ALIASES + 1))).unwrap_err();
        assert!(over.contains("more than 200 aliases"), "{over}");
        // Through a fragment spread twice: 2 × 101.
        let spread = format!("{{ y {{ ...F ...F }} }} fragment F on Y {{ {} }}", aliases(101));
        assert!(measured(&spread).unwrap_err().contains("aliases"));
        let roots = |n: usize| (0..n).map(|k| format!("f{k} ")).collect::<String>();
        assert_eq!(measured(&format!("{{ {} }}", roots(MAX_ROOT_FIELDS))), Ok(()));
        let others = (0..29).map(|k| format!("g{k} ")).collect::<String>();
        let spread = format!("{{ ...F {} }} fragment F on Query {{ {others} }}", roots(100));
        assert!(measured(&spread).unwrap_err().contains("more than 128 root fields"));
        // One key asked again (a fragment tree of one field) is one root field.
        assert_eq!(
            measured(&format!("{{ ...F ...F {} }} fragment F on Query {{ {} }}", roots(128), roots(128))),
            Ok(())
        );
        // Fields below the root are not root fields.
        assert_eq!(measured(&format!("{{ a {{ {} }} }}", roots(300))), Ok(()));
        let doc = async_graphql::parser::parse_query(
            "{ __schema { types { name } } t: __type(name: \"Q\") { name } ...I } fragment I on Query { s: __schema { x } }",
        )
        .unwrap();
        assert_eq!(check(&doc).unwrap().introspection, 3);
    }

    #[test]
    fn the_parsers_recursion_limit_is_told_by_its_variant_and_the_answer_by_its_size() {
        let nested = |n: usize| format!("{{ {}x{} }}", "a { ".repeat(n), " }".repeat(n));
        for n in [100, 1000, 5000] {
            assert!(parse_limit(&nested(n)).unwrap().message.contains("32 levels"), "{n}");
        }
        assert!(parse_limit("{ a { b }").is_none(), "another parse error is not this one");
        // Braces in strings and comments are not nesting.
        let quoted = format!(
            "{{ a(s: \"{}\", t: \"\"\"{}\\\"\"\"\"\"\") # {}\n {{ b }} ",
            "{".repeat(50),
            "{".repeat(50),
            "{".repeat(50)
        );
        assert_eq!(brace_depth(&quoted), 2, "{quoted}");
        assert!(parse_limit(&quoted).is_none());
        assert!(parse_limit(&nested(3)).is_none());
        let big = async_graphql::Value::String("x".repeat(MAX_RESPONSE_BYTES));
        assert!(too_large(&big));
        assert!(!too_large(&async_graphql::Value::String("x".repeat(1000))));
    }

    /// `levels` fragments, each spreading the next four times, the last selecting `leaf`.
    fn tree(levels: usize, leaf: &str) -> String {
        let mut doc = "query { ...F0 }".to_string();
        for i in 0..levels {
            doc += &format!(" fragment F{i} on Query {{ ...F{n} ...F{n} ...F{n} ...F{n} }}", n = i + 1);
        }
        doc + &format!(" fragment F{levels} on Query {{ {leaf} }}")
    }

    #[test]
    fn ordinary_documents_pass() {
        assert_eq!(measured("{ installations { id chargingStations { id name } } }"), Ok(()));
        assert_eq!(measured(&tree(4, "installations { id }")), Ok(()));
        assert_eq!(measured("query { ...A } fragment A on Query { ...B ...B } fragment B on Query { x }"), Ok(()));
    }

    #[test]
    fn a_tree_of_spreads_is_refused_whatever_its_leaves() {
        for leaf in ["installations { id }", "__typename", "...Unknown", "... { ...Unknown }"] {
            let refused = measured(&tree(24, leaf)).expect_err(leaf);
            assert!(refused.contains("more than 20000 selections"), "{leaf}: {refused}");
        }
    }

    #[test]
    fn a_fragment_spreading_itself_is_refused_even_unused() {
        let wide = "query { ...A } fragment A on Query { ...A ...A ...A ...A }";
        assert!(measured(wide).unwrap_err().contains("fragment A spreads itself"));
        let unused = "query { x } fragment A on Query { ...B } fragment B on Query { ...A ...A }";
        assert!(measured(unused).unwrap_err().contains("spreads itself"));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_through_fragments_too() {
        let nested = |n: usize| format!("{{ {}x{} }}", "a { ".repeat(n), " }".repeat(n));
        assert_eq!(measured(&nested(MAX_NESTING)), Ok(()));
        assert!(measured(&nested(MAX_NESTING + 1)).unwrap_err().contains("32 levels"));
        // A fragment first measured shallow, then spread deep.
        let deep = format!(
            "query {{ ...D {} ...D {} }} fragment D on Query {{ a {{ b }} }}",
            "a { ".repeat(31),
            " }".repeat(31)
        );
        assert!(measured(&deep).unwrap_err().contains("32 levels"));
    }

    #[test]
    fn a_chain_of_forty_thousand_fragments_is_refused_on_a_small_stack() {
        let mut doc = "query { ...F0 }".to_string();
        for i in 0..40_000 {
            doc += &format!(" fragment F{i} on Query {{ ...F{} }}", i + 1);
        }
        doc += " fragment F40000 on Query { x }";
        let doc = async_graphql::parser::parse_query(doc).expect("parses");
        let refused = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || check(&doc).map_err(|e| e.message))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(refused.unwrap_err().contains("32 levels"));
    }
}
