//! Property tests of the readers of what callers and the upstream send (issue 17, item 6): the
//! webhook body reader, the document size check, the `Accept` ranking, the tolerant upstream
//! reader and the free-text checks. Arbitrary input never panics, and a refusal is a clear error:
//! a message that is not blank and names what is wrong (`QUERY_TOO_COMPLEX` past a size limit).
//!
//! Failures are not persisted (`failure_persistence: None`): proptest prints the shrunk case,
//! which is then kept as a unit test next to the code it found wrong.

use async_graphql::ServerError;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use crate::commands::input::{text, url_without_controls};
use crate::graphql::size::{MAX_ALIASES, MAX_NESTING, MAX_ROOT_FIELDS, MAX_SELECTIONS, check, parse_limit};
use crate::http::negotiate;
use crate::http::webhooks::events_of;
use crate::live::unreadable_event;
use crate::upstream::installations::Installation;
use crate::upstream::meters::GridMeter;
use crate::upstream::notifications::EventSubscription;
use crate::upstream::sharing::Invitation;
use crate::upstream::stations::ChargingStation;
use crate::upstream::tolerant::decode;

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Any JSON value, nested a few levels, with keys drawn from the wire types' own names so that
/// objects often look like (drifted) answers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "installationId",
            "installationParentId",
            "serialNumber",
            "type",
            "properties",
            "name",
            "email",
            "eventType",
            "eventTime",
            "subject",
            "data",
            "chargingStationId",
            "locationGpsCoordinates",
            "latitude",
            "longitude",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z]{1,8}",
    ]
}

fn code(e: &ServerError) -> Option<String> {
    match e.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A refusal of the size check: a message, and `QUERY_TOO_COMPLEX` unless it is a fragment
/// spreading itself (`BAD_USER_INPUT`, as validation would say).
fn clear_refusal(e: &ServerError) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.trim().is_empty(), "a blank message: {e:?}");
    let code = code(e);
    prop_assert!(
        matches!(code.as_deref(), Some("QUERY_TOO_COMPLEX" | "BAD_USER_INPUT")),
        "refused without a known code: {e:?}"
    );
    Ok(())
}

fn too_complex(e: &ServerError) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.trim().is_empty(), "a blank message: {e:?}");
    let code = code(e);
    prop_assert_eq!(code.as_deref(), Some("QUERY_TOO_COMPLEX"), "{:?}", e);
    Ok(())
}

// ---- (1) the webhook body reader ----

/// An Event Grid event whose members are each sometimes right, sometimes missing or of another
/// type.
fn grid_event() -> impl Strategy<Value = Value> {
    let id = prop_oneof![".{0,8}".prop_map(Value::from), Just(json!("  ")), any_json()];
    let time = prop_oneof![
        Just(json!("2026-12-07T03:42:00Z")),
        Just(json!("2026-12-07T03:42:00.123+01:00")),
        ".{0,25}".prop_map(Value::from),
        any_json(),
    ];
    let subject = prop_oneof![
        (any::<i64>(), "[a-z0-9-]{0,6}").prop_map(|(i, s)| json!(format!("/installations/{i}/charging-stations/{s}"))),
        ".{0,30}".prop_map(Value::from),
        any_json(),
    ];
    let kind = prop_oneof![
        Just(json!("Witty.ChargingStation.StatusChanged")),
        Just(json!("Microsoft.EventGrid.SubscriptionValidationEvent")),
        ".{0,12}".prop_map(Value::from),
    ];
    let optional = |s: BoxedStrategy<Value>| prop::option::weighted(0.8, s);
    (
        optional(id.boxed()),
        optional(kind.boxed()),
        optional(subject.boxed()),
        optional(time.boxed()),
        optional(any_json().boxed()),
    )
        .prop_map(|(id, kind, subject, time, data)| {
            let mut event = serde_json::Map::new();
            for (k, v) in [("id", id), ("eventType", kind), ("subject", subject), ("eventTime", time), ("data", data)] {
                if let Some(v) = v {
                    event.insert(k.into(), v);
                }
            }
            Value::Object(event)
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_webhook_body_is_read_or_refused_with_a_reason(body in prop::collection::vec(any::<u8>(), 0..256)) {
        match events_of(&body) {
            Ok(events) => for e in &events {
                let _ = unreadable_event(e);
            },
            Err(why) => prop_assert!(why.starts_with("the body is not ") && why.len() > 20, "{why}"),
        }
    }

    #[test]
    fn any_json_body_is_read_or_refused_with_a_reason(body in any_json()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        match events_of(&bytes) {
            Ok(events) => for e in &events {
                if let Some(why) = unreadable_event(e) {
                    prop_assert!(why.starts_with("its "), "{why}");
                }
            },
            Err(why) => prop_assert!(why.starts_with("the body is not "), "{why}"),
        }
    }

    /// Events of the right and the wrong shapes, alone or in an array: each read event is either
    /// readable (an id, an RFC 3339 time, an installation) or dropped with a reason naming which.
    #[test]
    fn events_of_every_shape_are_read_or_named_as_unreadable(
        events in prop::collection::vec(grid_event(), 1..5),
        single in any::<bool>(),
        pad in "[ \t\r\n]{0,3}",
    ) {
        let body = match single {
            true => format!("{pad}{}", events[0]),
            false => format!("{pad}{}", Value::Array(events.clone())),
        };
        match events_of(body.as_bytes()) {
            Ok(read) => {
                prop_assert_eq!(read.len(), if single { 1 } else { events.len() });
                for e in &read {
                    match unreadable_event(e) {
                        Some(why) => prop_assert!(
                            ["its id", "its eventTime", "its subject"].iter().any(|p| why.starts_with(p)),
                            "{why}"
                        ),
                        None if e.event_type.eq_ignore_ascii_case("Microsoft.EventGrid.SubscriptionValidationEvent") => {}
                        None => {
                            prop_assert!(!e.id.trim().is_empty());
                            prop_assert!(chrono::DateTime::parse_from_rfc3339(&e.event_time).is_ok());
                        }
                    }
                }
            }
            // A member of the wrong type or a required one missing: serde's message names it.
            Err(why) => prop_assert!(
                why.starts_with("the body is not ")
                    && ["id", "eventType", "eventTime", "subject", "data", "invalid type"].iter().any(|m| why.contains(m)),
                "{why}"
            ),
        }
    }
}

// ---- (2) the document size check ----

/// `depth` selection sets, the operation's included (so `depth - 1` levels of nesting), with
/// `aliases` aliases in the innermost.
fn nested(depth: usize, aliases: usize) -> String {
    let inner = (0..aliases).map(|k| format!("a{k}: x ")).collect::<String>();
    let inner = if inner.is_empty() { "x".to_string() } else { inner };
    let mut doc = inner;
    for level in 0..depth.saturating_sub(1) {
        doc = format!("f{level} {{ {doc} }}");
    }
    format!("{{ {doc} }}")
}

/// Fragments F0..F{levels}, each spreading the next `spreads` times, F{levels} holding `width`
/// fields; the query spreads F0 under a field. Written out: the field and its spread, the spreads
/// of each level (spreads^l at level l) and spreads^levels × width fields.
fn fragment_tree(levels: usize, spreads: usize, width: usize, cycle: bool) -> (String, f64) {
    let mut doc = String::from("{ root { ...F0 } }\n");
    for l in 0..levels {
        let spread = format!("...F{} ", l + 1).repeat(spreads);
        doc.push_str(&format!("fragment F{l} on T {{ {spread}}}\n"));
    }
    let fields = (0..width).map(|k| format!("g{k} ")).collect::<String>();
    let back = if cycle { "...F0 " } else { "" };
    doc.push_str(&format!("fragment F{levels} on T {{ {fields}{back}}}\n"));
    let s = spreads as f64;
    let written = 2.0 + (1..=levels).map(|l| s.powi(l as i32)).sum::<f64>() + s.powi(levels as i32) * width as f64;
    (doc, written)
}

/// Text made of GraphQL's tokens, so that a good share of it parses.
fn graphql_tokens() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{",
        "{",
        "}",
        "}",
        "a",
        "b",
        "c:",
        "__schema",
        "__type(name: \"Q\")",
        "...F",
        "...G",
        "... on T",
        "fragment F on T",
        "fragment G on T",
        "query",
        "query Q",
        "mutation",
        "subscription",
        "(x: 1)",
        "(y: $v)",
        "@skip(if: true)",
        "$v: Int",
        "(",
        ")",
        ":",
        "\"s\"",
        "#c\n",
        "[",
        "]",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_text_is_parsed_and_measured_or_refused_clearly(query in prop_oneof![".{0,200}", graphql_tokens()]) {
        if let Some(e) = parse_limit(&query) {
            too_complex(&e)?;
        }
        if let Ok(doc) = async_graphql::parser::parse_query(&query)
            && let Err(e) = check(&doc)
        {
            clear_refusal(&e)?;
        }
    }

    /// Nesting past the limit is `QUERY_TOO_COMPLEX` at any depth, whether the parser or the
    /// check sees it; aliases past theirs too.
    #[test]
    fn nesting_and_aliases_are_refused_past_their_limits(depth in 1usize..120, aliases in 0usize..260) {
        let query = nested(depth, aliases);
        let nesting = depth - 1;
        // At the root, each alias is a root field too.
        let alias_limit = if depth == 1 { MAX_ALIASES.min(MAX_ROOT_FIELDS) } else { MAX_ALIASES };
        let refused_by_parser = parse_limit(&query);
        if let Some(e) = &refused_by_parser {
            too_complex(e)?;
            prop_assert!(nesting > MAX_NESTING, "refused at nesting {nesting}");
        }
        match async_graphql::parser::parse_query(&query) {
            Ok(doc) => match check(&doc) {
                Ok(_) => prop_assert!(nesting <= MAX_NESTING && aliases <= alias_limit, "{nesting} deep, {aliases} aliases passed"),
                Err(e) => {
                    too_complex(&e)?;
                    prop_assert!(nesting > MAX_NESTING || aliases > alias_limit, "{nesting} deep, {aliases} aliases: {}", e.message);
                }
            },
            Err(_) => prop_assert!(refused_by_parser.is_some(), "a parse error past the limit that is not QUERY_TOO_COMPLEX"),
        }
    }

    /// Fragments spread again and again are measured in one pass: past [`MAX_SELECTIONS`] written
    /// out they are `QUERY_TOO_COMPLEX` (at once, however large), a cycle is refused, and a
    /// document within the limits passes.
    #[test]
    fn spread_fragments_are_measured_written_out(
        levels in 0usize..24,
        spreads in 1usize..6,
        width in 1usize..4,
        cycle in prop::bool::weighted(0.1),
    ) {
        let (query, written) = fragment_tree(levels, spreads, width, cycle);
        let doc = async_graphql::parser::parse_query(&query).expect("a generated document parses");
        let started = std::time::Instant::now();
        let outcome = check(&doc);
        prop_assert!(started.elapsed() < std::time::Duration::from_millis(200), "{:?} to measure", started.elapsed());
        match outcome {
            Err(e) if cycle => clear_refusal(&e)?,
            Err(e) => {
                too_complex(&e)?;
                prop_assert!(written > MAX_SELECTIONS as f64 - 2.0 || levels + 2 > MAX_NESTING, "{written} refused: {}", e.message);
            }
            Ok(_) => {
                prop_assert!(!cycle, "a fragment spreading itself passed");
                prop_assert!(written <= MAX_SELECTIONS as f64 + 2.0, "{written} selections passed");
            }
        }
    }
}

// ---- (3) the Accept ranking ----

fn accept_header() -> impl Strategy<Value = String> {
    let media = prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "APPLICATION/JSON",
            "application/graphql-response+json",
            "text/event-stream",
            "Text/Event-Stream",
            "application/*",
            "text/*",
            "*/*",
            "text/html",
            "",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
    ];
    let q = prop_oneof![
        Just(String::new()),
        prop::sample::select(vec![
            ";q=0",
            "; q=0.5",
            ";Q=1",
            ";q=1.0",
            ";q=",
            ";q=x",
            ";q=NaN",
            ";q=inf",
            ";q=-1",
            ";q=7",
            ";charset=utf-8",
            ";q"
        ])
        .prop_map(str::to_string),
        ";q=.{0,6}",
    ];
    prop::collection::vec((media, q).prop_map(|(m, q)| format!("{m}{q}")), 0..6).prop_map(|r| r.join(","))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_accept_header_is_ranked(accept in prop_oneof![".{0,80}", accept_header()]) {
        let n = negotiate(&accept);
        let named = accept.to_ascii_lowercase();
        // The event stream and the newer JSON type are only ever answered when named.
        prop_assert!(!n.sse || named.contains("text/event-stream"), "{accept:?}");
        prop_assert!(!n.modern || named.contains("application/graphql-response+json"), "{accept:?}");
    }

    /// A type refused with `q=0` (its only range, and nothing broader naming it) is not answered.
    #[test]
    fn a_type_weighted_zero_is_never_chosen(others in prop::collection::vec(prop::sample::select(vec!["application/json", "text/html", "application/json;q=0.2", "*/*;q=0.9"]), 0..3)) {
        for refused in ["text/event-stream", "application/graphql-response+json"] {
            let mut ranges: Vec<String> = others.iter().map(|r| r.to_string()).collect();
            ranges.push(format!("{refused};q=0"));
            let n = negotiate(&ranges.join(", "));
            prop_assert!(if refused.starts_with("text") { !n.sse } else { !n.modern }, "{ranges:?}");
        }
    }
}

// ---- (4) the tolerant upstream reader ----

/// A station as upstream might send it: the required id right or wrong, every other member
/// of any type.
fn station_shaped() -> impl Strategy<Value = (Value, bool)> {
    let id = prop_oneof![3 => "[a-z0-9-]{1,8}".prop_map(|s| (json!(s), true)), 1 => any_json().prop_map(|v| {
        let ok = v.is_string();
        (v, ok)
    })];
    (id, prop::collection::btree_map(key(), any_json(), 0..6)).prop_map(|((id, ok), mut rest)| {
        rest.remove("id");
        let mut station: serde_json::Map<String, Value> = rest.into_iter().collect();
        station.insert("id".into(), id);
        (Value::Object(station), ok)
    })
}

/// Every wire type read from `bytes`: never a panic, and an error names what is wrong.
fn read_every_type(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Err(why) = decode::<T>(bytes, || "GET /proptest".into()) {
            prop_assert!(!why.trim().is_empty() && why.chars().count() <= 300, "{why:?}");
        }
        Ok(())
    }
    one::<ChargingStation>(bytes)?;
    one::<Vec<ChargingStation>>(bytes)?;
    one::<Installation>(bytes)?;
    one::<Vec<Installation>>(bytes)?;
    one::<GridMeter>(bytes)?;
    one::<Vec<EventSubscription>>(bytes)?;
    one::<Vec<Invitation>>(bytes)?;
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_bytes_are_read_or_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        read_every_type(&bytes)?;
    }

    #[test]
    fn any_json_is_read_or_refused_with_a_reason(value in any_json()) {
        read_every_type(&serde_json::to_vec(&value).unwrap())?;
    }

    /// A station list whose ids are strings is read, whatever the other members hold; one whose
    /// id is not is refused naming that station's id.
    #[test]
    fn stations_of_right_and_wrong_shapes(stations in prop::collection::vec(station_shaped(), 0..5)) {
        let bad = stations.iter().position(|(_, ok)| !ok);
        let list = Value::Array(stations.into_iter().map(|(s, _)| s).collect());
        let read = decode::<Vec<ChargingStation>>(&serde_json::to_vec(&list).unwrap(), || "GET /stations".into());
        match (bad, read) {
            (None, Ok(_)) => {}
            (Some(n), Err(why)) => prop_assert!(why.starts_with(&format!("[{n}].id: ")), "{why}"),
            (bad, read) => prop_assert!(false, "first wrong id {bad:?}, read {read:?} of {list}"),
        }
    }
}

// ---- the free-text checks ----

fn is_format_or_control(c: char) -> bool {
    // General category Cf of Unicode 16.0, written independently of `input.rs`'s table.
    const CF: &[u32] = &[0x00AD, 0x061C, 0x06DD, 0x070F, 0x08E2, 0x180E, 0xFEFF, 0x110BD, 0x110CD, 0xE0001];
    let u = c as u32;
    c.is_control()
        || CF.contains(&u)
        || (0x0600..=0x0605).contains(&u)
        || (0x0890..=0x0891).contains(&u)
        || (0x200B..=0x200F).contains(&u)
        || (0x202A..=0x202E).contains(&u)
        || (0x2060..=0x2064).contains(&u)
        || (0x2066..=0x206F).contains(&u)
        || (0xFFF9..=0xFFFB).contains(&u)
        || (0x13430..=0x1343F).contains(&u)
        || (0x1BCA0..=0x1BCA3).contains(&u)
        || (0x1D173..=0x1D17A).contains(&u)
        || (0xE0020..=0xE007F).contains(&u)
}

/// Free text with a good share of the characters that matter: controls, format characters,
/// joiners, variation selectors, emoji, and ordinary letters.
fn free_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\u{0}',
        '\t',
        '\n',
        '\r',
        '\u{7F}',
        '\u{85}',
        '\u{AD}',
        '\u{61C}',
        '\u{180E}',
        '\u{200B}',
        '\u{200D}',
        '\u{200D}',
        '\u{200E}',
        '\u{202E}',
        '\u{2028}',
        '\u{2066}',
        '\u{FE0F}',
        '\u{FEFF}',
        '\u{E0041}',
        '\u{E007F}',
        '👩',
        '🔧',
        '🏳',
        '🌈',
        '\u{1F3FD}',
        '❤',
        '©',
        ' ',
        'a',
        'é',
        'Ж',
        '中',
    ]);
    let c = prop_oneof![3 => special, 1 => any::<char>()];
    prop::collection::vec(c, 0..16).prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(config(256))]

    /// Accepted text is trimmed, within its length, and holds no control or format character but
    /// a ZWJ between two emoji; a refusal names the field.
    #[test]
    fn free_text_accepted_holds_no_control_or_format_character(value in prop_oneof![free_text(), ".{0,20}"], max in 1usize..12) {
        match text("name", &value, max) {
            Ok(v) => {
                prop_assert_eq!(v.as_str(), value.trim());
                prop_assert!(v.chars().count() <= max);
                let chars: Vec<char> = v.chars().collect();
                for (at, &c) in chars.iter().enumerate() {
                    if c == '\u{200D}' {
                        let before = chars[..at].iter().rev().find(|&&b| b != '\u{FE0F}');
                        prop_assert!(before.is_some_and(|&b| !b.is_alphanumeric() && !b.is_ascii() && !is_format_or_control(b)), "{v:?}");
                        prop_assert!(chars.get(at + 1).is_some_and(|&a| !a.is_alphanumeric() && !a.is_ascii() && !is_format_or_control(a)), "{v:?}");
                    } else {
                        prop_assert!(!is_format_or_control(c) && !matches!(c, '\u{2028}' | '\u{2029}'), "U+{:04X} in {v:?}", c as u32);
                    }
                }
            }
            Err(e) => prop_assert!(e.message().starts_with("name must "), "{}", e.message()),
        }
    }

    #[test]
    fn urls_accepted_hold_no_control_or_format_character(value in prop_oneof![free_text(), ".{0,20}"]) {
        let url = format!("https://example.com/{value}");
        match url_without_controls("webhookUrl", &url) {
            Ok(()) => prop_assert!(!url.trim().chars().any(is_format_or_control), "{url:?}"),
            Err(e) => prop_assert!(e.message().starts_with("webhookUrl must not contain") && e.message().contains("at character"), "{}", e.message()),
        }
    }
}
