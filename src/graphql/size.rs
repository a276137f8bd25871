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
//! costs one pass over the document. `plain_async_graphql_still_walks_a_fragment_again_at_every_spread`
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

/// Refuses a document that makes more than [`MAX_SELECTIONS`] selections written out, nests more
/// than [`MAX_NESTING`] deep, or has a fragment that spreads itself (which validation would
/// refuse too, but only after async-graphql's depth check walked it to its limit, every way).
/// A spread of an unknown fragment counts one (validation refuses it later).
pub(crate) fn check(doc: &ExecutableDocument) -> Result<(), ServerError> {
    let mut walk = Walk { fragments: &doc.fragments, sizes: HashMap::new() };
    let mut total = 0usize;
    for (_, op) in doc.operations.iter() {
        total = total.saturating_add(walk.set(&op.node.selection_set.node, 0)?.size);
        if total > MAX_SELECTIONS {
            return Err(too_many());
        }
    }
    // Fragments no operation spreads are walked by validation too.
    for name in doc.fragments.keys() {
        walk.fragment(name, 0)?;
    }
    Ok(())
}

type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

/// What a selection set stands for: its selections written out, and how deep they nest below it.
#[derive(Clone, Copy)]
struct Measure {
    size: usize,
    height: usize,
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
        let mut total = Measure { size: 0, height: 0 };
        for item in &set.items {
            let below = match &item.node {
                Selection::Field(f) if f.node.selection_set.node.items.is_empty() => None,
                Selection::Field(f) => Some(self.set(&f.node.selection_set.node, depth + 1)?),
                Selection::InlineFragment(f) => Some(self.set(&f.node.selection_set.node, depth + 1)?),
                Selection::FragmentSpread(s) => self.fragment(&s.node.fragment_name.node, depth + 1)?,
            };
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
    too_complex(format!("the query nests fields and fragments more than {MAX_NESTING} levels deep"))
}

fn too_complex(message: String) -> ServerError {
    AppError::QueryTooComplex(message).into_request_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(query: &str) -> Result<(), String> {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        check(&doc).map_err(|e| e.message)
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
