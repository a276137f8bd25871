//! Issue 17's amplification limits and input holes: aliases, root fields, introspection counted
//! in the complexity, nesting at any depth and the answer's size are `QUERY_TOO_COMPLEX` before
//! anything runs (the answer's size once it is known, before it is sent); free text refuses every
//! format and control character but keeps emoji sequences; a webhook URL refuses controls; the
//! writes naming an object check it is the installation's before sending anything.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::*;

/// The calls that could change something upstream (every method but GET).
async fn writes(app: &TestApp) -> BTreeMap<String, u64> {
    app.sim().calls_by_route().await.into_iter().filter(|(k, _)| !k.starts_with("GET ")).collect()
}

/// Asserts `r` is refused with one `code` error whose message has each of `says`, and no data.
fn assert_refused(r: &Value, code: &str, says: &[&str]) {
    assert_eq!(error_codes(r), [code], "{r:#}");
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    for part in says {
        assert!(message.contains(part), "says {part:?}: {message}");
    }
}

/// `n` aliases of `field`, separated by spaces.
fn aliased(n: usize, field: &str) -> String {
    (0..n).map(|k| format!("a{k}: {field} ")).collect()
}

#[tokio::test]
async fn five_hundred_aliased_schemas_without_a_token_are_refused_before_execution() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let schema = "__schema { queryType { name } types { name kind description fields { name description type { name kind } } } }";
    let query = format!("{{ {} }}", aliased(500, schema));
    assert!(query.len() > 40 * 1024, "the attack's size: {}", query.len());
    let r = app.post_graphql(None, json!({"query": query})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_refused(&r.body, "QUERY_TOO_COMPLEX", &["more than 200 aliases", "split it into smaller queries"]);
    assert!(r.body["data"].is_null(), "nothing ran: {}", r.body);
    assert!(r.body.to_string().len() < 2048, "a short refusal, not 14 MB: {} bytes", r.body.to_string().len());
    assert_eq!(app.sim().total_calls().await, 0, "{:#?}", app.sim().calls_by_route().await);
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL sends it.
const IDE_INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}"#;

#[tokio::test]
async fn introspection_counts_in_the_complexity_limit_and_one_schema_still_passes() {
    let app = spawn_app().await;
    // Ten `__schema` under the alias limit: 10 × 500 is over the 5000 allowed.
    let ten = format!("{{ {} }}", aliased(10, "__schema { queryType { name } }"));
    let r = app.post_graphql(None, json!({"query": ten})).await.body;
    assert_refused(&r, "QUERY_TOO_COMPLEX", &["introspection", "500 of the 5000", "ask for the schema once"]);
    assert!(r["data"].is_null(), "{r}");
    // `__type` too, and both at once.
    let mixed = format!("{{ {} {} }}", aliased(5, "__schema { queryType { name } }"), {
        (0..5).map(|k| format!("t{k}: __type(name: \"Query\") {{ name }} ")).collect::<String>()
    });
    let r = app.post_graphql(None, json!({"query": mixed})).await.body;
    assert_refused(&r, "QUERY_TOO_COMPLEX", &["introspection"]);
    // What an IDE asks (graphql-js's introspection query): one schema, whole.
    let r = app.post_graphql(None, json!({"query": IDE_INTROSPECTION})).await.body;
    assert_eq!(data(&r)["__schema"]["queryType"]["name"], "Query", "{r}");
    assert!(data(&r)["__schema"]["types"].as_array().unwrap().len() > 20, "{r}");
}

#[tokio::test]
async fn aliases_and_root_fields_are_capped_per_operation_fragments_included() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    // 200 aliases below the root pass; 201 are refused, and so are 2 × 101 through a fragment.
    let within = format!("{{ installations {{ {} }} }}", aliased(200, "id"));
    let r = app.graphql("alice", &within, json!({})).await;
    assert_eq!(data(&r)["installations"][0]["a199"], "33", "{r}");
    app.sim().reset_calls().await;
    for over in [
        format!("{{ installations {{ {} }} }}", aliased(201, "id")),
        format!("{{ installations {{ ...F ...F }} }} fragment F on Installation {{ {} }}", aliased(101, "id")),
    ] {
        let r = app.graphql("alice", &over, json!({})).await;
        assert_refused(&r, "QUERY_TOO_COMPLEX", &["more than 200 aliases", "split it into smaller queries"]);
        assert!(r["data"].is_null(), "{r}");
    }
    assert_eq!(app.sim().total_calls().await, 0, "refused before execution");
    // 128 root fields pass; 129 are refused (here with aliases of one field, under the alias cap).
    let r = app.graphql("alice", &format!("{{ {} }}", aliased(128, "__typename")), json!({})).await;
    assert_eq!(data(&r)["a127"], "Query", "{r}");
    let r = app.graphql("alice", &format!("{{ {} }}", aliased(129, "__typename")), json!({})).await;
    assert_refused(&r, "QUERY_TOO_COMPLEX", &["more than 128 root fields", "split it into smaller queries"]);
    let spread = format!("{{ ...R {} }} fragment R on Query {{ {} }}", aliased(100, "__typename"), {
        (0..29).map(|k| format!("b{k}: __typename ")).collect::<String>()
    });
    let r = app.graphql("alice", &spread, json!({})).await;
    assert_refused(&r, "QUERY_TOO_COMPLEX", &["root fields"]);
}

#[tokio::test]
async fn nesting_past_the_limit_is_query_too_complex_at_any_depth() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let nested = |n: usize| format!("{{ installations {{ {}id{} }} }}", "a { ".repeat(n), " }".repeat(n));
    // 40 levels parse (the size check refuses them); 100 and 1000 stop the parser.
    for n in [40, 100, 1000] {
        for token in [Some(app.token_for("alice")), None] {
            let r = app.post_graphql(token.as_deref(), json!({"query": nested(n)})).await.body;
            assert_refused(&r, "QUERY_TOO_COMPLEX", &["more than 32 levels deep", "ask for less at once"]);
            assert!(r["data"].is_null(), "{n}: {r}");
        }
    }
    // A syntax error is still the caller's input.
    let r = app.graphql("alice", "{ installations { id }", json!({})).await;
    assert_eq!(error_codes(&r), ["BAD_USER_INPUT"], "{r}");
    assert_eq!(app.sim().total_calls().await, 0);
}

#[tokio::test]
async fn an_answer_over_eight_mebibytes_is_refused_and_a_smaller_one_passes() {
    let app = spawn_app().await;
    // A year of hourly energy is ~8784 points; aliases of one range share one upstream read but
    // each is in the answer. 30 of them: well over 8 MiB, under every other limit.
    let hours = |n: usize| {
        let series = r#"values(operator: SUM, from: "2024-01-01T00:00:00Z", to: "2025-01-01T00:00:00Z", step: HOUR) { date value }"#;
        format!(
            r#"{{ installation(id: 33) {{ chargingStation(id: "{ALICE_STATION}") {{ measure(id: "1") {{ {} }} }} }} }}"#,
            aliased(n, series)
        )
    };
    let r = app.graphql("alice", &hours(30), json!({})).await;
    assert_refused(&r, "QUERY_TOO_COMPLEX", &["larger than 8 MiB", "split it into smaller queries"]);
    assert!(r["data"].is_null(), "no data sent");
    let r = app.graphql("alice", &hours(2), json!({})).await;
    let points = data(&r)["installation"]["chargingStation"]["measure"]["a1"].as_array().expect("points").len();
    assert!(points > 8000, "a year of hours: {points}");
}

/// `updateChargingStation` of Alice's station renaming it to `$name`, waiting until it shows.
const RENAME: &str = r#"mutation($name: String!) { updateChargingStation(installationId: 33,
    chargingStationId: "60e0d33e-cd45-4382-9e4d-c64002c3f5a7", input: {friendlyName: $name}, wait: true) {
    status chargingStation { friendlyName } } }"#;

#[tokio::test]
async fn format_and_control_characters_in_names_are_refused_naming_the_field_and_place() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    for (name, at) in [
        ("soft\u{AD}hyphen", "U+00AD at character 5"),
        ("arabic \u{61C}mark", "U+061C at character 8"),
        ("mongolian\u{180E}", "U+180E at character 10"),
        ("tag\u{E0041}s", "U+E0041 at character 4"),
        ("a\u{200D}b", "U+200D at character 2 (U+200D is allowed only between two emoji)"),
        ("line\rbreak", "U+000D at character 5"),
        ("line\nbreak", "U+000A at character 5"),
        ("iso\u{2066}late", "U+2066 at character 4"),
    ] {
        let r = app.graphql("alice", RENAME, json!({"name": name})).await;
        assert_refused(&r, "BAD_USER_INPUT", &["input.friendlyName", at]);
    }
    let create = r#"mutation($n: String!) { createInstallation(input: {name: $n, locationName: "Bordeaux",
        location: {latitude: 44.8, longitude: -0.6}}) { id } }"#;
    let r = app.graphql("alice", create, json!({"n": "Mai\u{AD}son"})).await;
    assert_refused(&r, "BAD_USER_INPUT", &["input.name", "U+00AD at character 4"]);
    assert_eq!(writes(&app).await, BTreeMap::new(), "nothing was sent");
}

#[tokio::test]
async fn an_emoji_zwj_sequence_is_accepted_as_a_station_name() {
    let app = spawn_app().await;
    for name in ["👩\u{200D}🔧 garage", "🏳\u{FE0F}\u{200D}🌈 borne"] {
        let r = app.graphql("alice", RENAME, json!({"name": name})).await;
        assert_eq!(data(&r)["updateChargingStation"]["status"], "APPLIED", "{name}: {r:#}");
        assert_eq!(data(&r)["updateChargingStation"]["chargingStation"]["friendlyName"], name);
        let props = app.sim().station("alice", ALICE_INSTALLATION, ALICE_STATION).await["properties"].clone();
        assert_eq!(props["friendlyName"], name);
    }
}

#[tokio::test]
async fn a_webhook_url_with_control_characters_is_refused_naming_it_and_nothing_is_sent() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let subscribe = "mutation($u: String!) { subscribeToNotifications(installationId: 33, webhookUrl: $u) { id } }";
    for (url, at) in [
        ("https://hooks.example.com/w\r\nX-Injected: 1", "U+000D at character 28"),
        ("https://hooks.example.com/w\nx", "U+000A at character 28"),
        ("https://hooks.exa\tmple.com/w", "U+0009 at character 18"),
        ("https://hooks.example.com/\u{0}", "U+0000 at character 27"),
    ] {
        let r = app.graphql("alice", subscribe, json!({"u": url})).await;
        assert_refused(&r, "BAD_USER_INPUT", &["webhookUrl", at]);
    }
    assert_eq!(app.sim().total_calls().await, 0, "{:#?}", app.sim().calls_by_route().await);
}

#[tokio::test]
async fn writes_naming_another_installations_object_are_not_found_and_nothing_is_sent() {
    let app = spawn_app().await;
    app.sim().reset_calls().await;
    let cases = [
        (
            format!(r#"mutation {{ removeChargingStation(installationId: 33, chargingStationId: "{BOB_STATION}") }}"#),
            format!("charging station {BOB_STATION} not found in installation 33"),
        ),
        (
            format!(
                r#"mutation {{ authorizeTic(installationId: 33, gridMeterId: "{BOB_METER}", authorize: true) {{ id }} }}"#
            ),
            format!("grid meter {BOB_METER} not found in installation 33"),
        ),
        (
            r#"mutation { unsubscribeFromNotifications(installationId: 33, eventSubscriptionId: "not-alices") }"#
                .into(),
            "event subscription not-alices not found in installation 33".into(),
        ),
        (
            r#"mutation { cancelInvitation(installationId: 33, email: "nobody@installer.example.com") }"#.into(),
            "a pending invitation of nobody@installer.example.com not found in installation 33".into(),
        ),
    ];
    for (q, says) in &cases {
        let r = app.graphql("alice", q, json!({})).await;
        assert_refused(&r, "NOT_FOUND", &[says, "nothing was sent"]);
    }
    assert_eq!(writes(&app).await, BTreeMap::new(), "only reads reached the simulator");
    // Bob's station is still his.
    let r = app
        .graphql(
            "bob",
            &format!(r#"{{ installation(id: 42) {{ chargingStation(id: "{BOB_STATION}") {{ id }} }} }}"#),
            json!({}),
        )
        .await;
    assert_eq!(data(&r)["installation"]["chargingStation"]["id"], BOB_STATION, "{r}");
}
