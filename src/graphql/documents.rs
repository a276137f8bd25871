//! Parsed documents, kept by their text: front ends send the same few documents again and again,
//! and parsing one (async-graphql's pest parser) is the largest single cost of executing a small
//! query. A document is kept once it parsed and passed the size limits ([`super::size::check`]);
//! what is done with it after (validation against the variables, execution) runs every time.

use std::sync::{Arc, LazyLock};

use async_graphql::parser::types::{ExecutableDocument, OperationType};

/// At most this many bytes of document text are kept (the parsed form is a few times larger).
const CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// Documents longer than this are parsed each time (and are rare: one that large is refused by
/// the size limits, or is a one-off).
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// Process-wide: a document's parse depends on its text alone, never on who sends it.
static KEPT: LazyLock<moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(CAPACITY_BYTES)
        .weigher(|text: &Arc<str>, _| u32::try_from(text.len()).unwrap_or(u32::MAX))
        .build()
});

/// The parsed document of `text`, when it was kept.
pub(crate) fn kept(text: &str) -> Option<Arc<ExecutableDocument>> {
    KEPT.get(text)
}

/// Keeps `doc`, the parse of `text`, which passed the size limits.
pub(crate) fn keep(text: &str, doc: &ExecutableDocument) {
    if text.len() <= MAX_KEPT_BYTES {
        KEPT.insert(text.into(), Arc::new(doc.clone()));
    }
}

/// Whether the operation `name` (or the only one) of the document `text` is a query: read from
/// the kept parse, or parsed now. False when it does not parse or names no single operation.
pub(crate) fn is_query(text: &str, name: Option<&str>) -> bool {
    let is =
        |doc: &ExecutableDocument| super::operation(doc, name).is_some_and(|op| op.node.ty == OperationType::Query);
    match kept(text) {
        Some(doc) => is(&doc),
        None => async_graphql::parser::parse_query(text).is_ok_and(|doc| is(&doc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_parse_answers_for_its_text_and_tells_operations_apart() {
        let text = "query KeptA { a } mutation KeptB { b }";
        assert!(kept(text).is_none());
        assert!(is_query(text, Some("KeptA")) && !is_query(text, Some("KeptB")) && !is_query(text, None));
        keep(text, &async_graphql::parser::parse_query(text).unwrap());
        assert!(kept(text).is_some_and(|doc| super::super::operation(&doc, Some("KeptB")).is_some()));
        assert!(is_query(text, Some("KeptA")) && !is_query(text, Some("KeptB")));
        assert!(!is_query("{ not closed", None) && is_query("{ a }", None));
    }
}
