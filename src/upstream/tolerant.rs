//! The tolerant reader of upstream answers. The upstream's value sets and types are only partly
//! documented, so a member whose value has an unexpected JSON type must not make the whole answer
//! unreadable: it reads as absent, is logged naming it, and the rest of its object, of its list
//! and of the answer reads as usual.
//!
//! The rule, field by field in the wire models:
//! - a member the BFF can do without is marked `#[serde(default, deserialize_with =
//!   "tolerant::optional")]` (an `Option`: `None`) or `"tolerant::or_default"` (a list or a name:
//!   empty). A `null` reads as absent too, without being counted as drift;
//! - a member that identifies the object (`id`, `installationId`, `accountId`, a measure's id, a
//!   point's date…) stays strict: an object without a readable id cannot be told apart from
//!   another, cached under its key, or addressed again, so the answer it is in is unreadable, as
//!   before. So do the few members the BFF takes decisions on where reading "absent" would grant
//!   something (a user's `enabled`: absent reads as enabled) and the values that are the datum
//!   itself (a price, a count), where a made-up default would be a wrong answer;
//! - an unknown enum value is no drift: enums are read as strings and mapped to `UNKNOWN` above.
//!
//! [`decode`] reads an answer and, only when a tolerant member gave up, finds which members did by
//! comparing the answer with what was read, and logs each (kind of model, member path) at `warn`
//! the first time in the process and at `debug` afterwards, so a lasting drift does not flood the
//! logs. The logs name the member and the JSON type found, never the value (it may be personal).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

thread_local! {
    /// Members given up on this thread since the last [`decode`] began. Decoding is synchronous,
    /// so one decode's count is never mixed with another's.
    static GIVEN_UP: Cell<usize> = const { Cell::new(0) };
}

/// `deserialize_with` for an optional member: a value of an unexpected type reads as `None`.
pub(crate) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let raw = Value::deserialize(deserializer)?;
    if raw.is_null() {
        return Ok(None);
    }
    Ok(read(raw))
}

/// `deserialize_with` for a member with a natural empty value (a list, a name): a value of an
/// unexpected type reads as that empty value.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let raw = Value::deserialize(deserializer)?;
    if raw.is_null() {
        return Ok(T::default());
    }
    Ok(read(raw).unwrap_or_default())
}

fn read<T: DeserializeOwned>(raw: Value) -> Option<T> {
    match T::deserialize(raw) {
        Ok(value) => Some(value),
        Err(_) => {
            GIVEN_UP.with(|n| n.set(n.get() + 1));
            None
        }
    }
}

/// One member read as absent: where (`[].properties.ledPower`, list indices left out), how many
/// times in the answer, and the JSON type it came as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    pub path: String,
    pub count: usize,
    pub found: &'static str,
}

/// Reads an answer of type `T`, tolerating drift as the module says. `route` names the call in
/// the logs (it is only built when something drifted). The error names where the answer is
/// unreadable (`[1].id: invalid type: …`).
pub(crate) fn decode<T>(bytes: &[u8], route: impl FnOnce() -> String) -> Result<T, String>
where
    T: DeserializeOwned + Serialize,
{
    let (read, given_up) = counting_given_up::<T>(bytes);
    let value = match read {
        Ok(value) => value,
        Err(e) => return Err(unreadable::<T>(bytes, e)),
    };
    if given_up > 0 {
        report(&model_name::<T>(), &drifts(bytes, &value), &route());
    }
    Ok(value)
}

/// Reads `T`, with how many members were given up on.
fn counting_given_up<T: DeserializeOwned>(bytes: &[u8]) -> (serde_json::Result<T>, usize) {
    GIVEN_UP.with(|n| n.set(0));
    let read = serde_json::from_slice::<T>(bytes);
    (read, GIVEN_UP.with(|n| n.replace(0)))
}

/// Why an answer is unreadable, naming where: the same read again, with the path tracked.
fn unreadable<T: DeserializeOwned>(bytes: &[u8], e: serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return e.to_string();
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let why = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(tracked) => format!("{}: {}", tracked.path(), tracked.inner()),
        Ok(_) => e.to_string(),
    };
    why.chars().take(300).collect()
}

/// The members of the answer that were read as absent (or empty) although they had a value: the
/// answer and what was read, serialised again with the same names, compared member by member. A
/// member the model does not know is not in what was read and is left alone.
pub(crate) fn drifts<T: Serialize>(bytes: &[u8], read: &T) -> Vec<Drift> {
    let (Ok(raw), Ok(read)) = (serde_json::from_slice::<Value>(bytes), serde_json::to_value(read)) else {
        return Vec::new();
    };
    let mut found: BTreeMap<String, (usize, &'static str)> = BTreeMap::new();
    compare(&raw, &read, &mut String::new(), &mut found);
    found.into_iter().map(|(path, (count, found))| Drift { path, count, found }).collect()
}

fn compare(raw: &Value, read: &Value, path: &mut String, found: &mut BTreeMap<String, (usize, &'static str)>) {
    match (raw, read) {
        (Value::Object(raw), Value::Object(read)) => {
            for (key, raw_member) in raw {
                let Some(read_member) = read.get(key) else { continue };
                if raw_member.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let emptied =
                    matches!((raw_member, read_member), (Value::Array(r), Value::Array(d)) if r.len() != d.len());
                if read_member.is_null() || kind(raw_member) != kind(read_member) || emptied {
                    found.entry(path.clone()).or_insert((0, kind(raw_member))).0 += 1;
                } else {
                    compare(raw_member, read_member, path, found);
                }
                path.truncate(len);
            }
        }
        (Value::Array(raw), Value::Array(read)) if raw.len() == read.len() => {
            let len = path.len();
            path.push_str("[]");
            for (r, d) in raw.iter().zip(read) {
                compare(r, d, path, found);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Logs each drift: `warn` the first time a (model, member) is seen in this process, `debug` after.
fn report(model: &str, drifts: &[Drift], route: &str) {
    if drifts.is_empty() {
        // Nothing told apart (should not happen): still say so once.
        if first_time(model, "") {
            tracing::warn!(model, route, "the Witty-Home service sent a member of an unexpected type: read as absent");
        }
        return;
    }
    for d in drifts {
        let (field, found, count) = (d.path.as_str(), d.found, d.count);
        if first_time(model, field) {
            tracing::warn!(
                model,
                field,
                found,
                count,
                route,
                "the Witty-Home service sent a member of an unexpected type: read as absent \
                 (logged once; again at debug level)"
            );
        } else {
            tracing::debug!(model, field, found, count, route, "a member of an unexpected type read as absent");
        }
    }
}

/// Whether (model, member) drifts for the first time in this process. Bounded: the members come
/// from the models, but past the bound everything counts as seen.
fn first_time(model: &str, field: &str) -> bool {
    const BOUND: usize = 1024;
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= BOUND {
        return false;
    }
    seen.insert(format!("{model} {field}"))
}

/// `Vec<ChargingStation>` for `alloc::vec::Vec<witty_bff::upstream::stations::ChargingStation>`.
fn model_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or_default());
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Thing {
        id: String,
        #[serde(default, deserialize_with = "optional")]
        power: Option<f64>,
        #[serde(default, deserialize_with = "optional")]
        name: Option<String>,
        #[serde(default, deserialize_with = "or_default")]
        tags: Vec<String>,
        #[serde(default, deserialize_with = "optional")]
        inner: Option<Inner>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Inner {
        #[serde(deserialize_with = "optional")]
        on: Option<bool>,
        #[serde(deserialize_with = "optional")]
        at: Option<String>,
    }

    fn read<T: DeserializeOwned + Serialize>(json: &str) -> Result<T, String> {
        decode::<T>(json.as_bytes(), || "GET /things".into())
    }

    #[test]
    fn a_member_of_another_type_reads_as_absent_and_is_named() {
        let json = r#"[{"id":"a","power":"high","name":"A","tags":["x"],"inner":{"on":"yes","at":"t"},"extra":1},
                       {"id":"b","power":3,"name":4,"tags":"x","inner":"none"},
                       {"id":"c","power":null,"inner":null}]"#;
        let things: Vec<Thing> = read(json).unwrap();
        assert_eq!(things.len(), 3);
        assert_eq!(things[0].power, None);
        assert_eq!(things[0].name.as_deref(), Some("A"));
        assert_eq!(things[0].tags, ["x"]);
        assert_eq!(things[0].inner, Some(Inner { on: None, at: Some("t".into()) }));
        assert_eq!(things[1].power, Some(3.0));
        assert_eq!((&things[1].name, things[1].tags.len(), &things[1].inner), (&None, 0, &None));
        assert_eq!(things[2], Thing { id: "c".into(), ..Thing::default() });
        let drifts = drifts(json.as_bytes(), &things);
        let named: Vec<(&str, usize, &str)> = drifts.iter().map(|d| (d.path.as_str(), d.count, d.found)).collect();
        assert_eq!(
            named,
            [
                ("[].inner", 1, "string"),
                ("[].inner.on", 1, "string"),
                ("[].name", 1, "number"),
                ("[].power", 1, "string"),
                ("[].tags", 1, "string"),
            ],
            "nulls and unknown members are no drift"
        );
    }

    #[test]
    fn an_object_without_a_readable_id_is_unreadable_and_the_error_says_where() {
        let e = read::<Vec<Thing>>(r#"[{"id":"a"},{"id":7,"power":1}]"#).unwrap_err();
        assert!(e.starts_with("[1].id: invalid type: integer `7`"), "{e}");
        let e = read::<Vec<Thing>>(r#"[{"id":"a"},{"power":1}]"#).unwrap_err();
        assert!(e.contains("missing field `id`"), "{e}");
        assert!(read::<Vec<Thing>>(r#"[{"id":"a"}"#).is_err(), "not JSON");
        assert!(read::<Vec<Thing>>(r#"{"id":"a"}"#).is_err(), "not a list");
    }

    #[test]
    fn only_a_member_given_up_on_is_counted() {
        let (t, n) = counting_given_up::<Thing>(br#"{"id":"a","power":1,"name":null,"inner":{"on":true}}"#);
        assert_eq!(t.unwrap().inner, Some(Inner { on: Some(true), at: None }));
        assert_eq!(n, 0, "a null is no drift");
        let (t, n) = counting_given_up::<Thing>(br#"{"id":"a","power":"1","inner":{"on":1}}"#);
        assert_eq!(t.unwrap().inner, Some(Inner { on: None, at: None }));
        assert_eq!(n, 2);
    }

    #[test]
    fn a_drift_is_logged_at_warn_once_per_model_and_member() {
        assert!(first_time("Vec<Probe>", "[].x"));
        assert!(!first_time("Vec<Probe>", "[].x"));
        assert!(first_time("Probe", "[].x"));
    }

    /// Every member of `T` but `strict` reads whatever JSON type it comes as; each strict one
    /// refuses some. `sample` holds the required members.
    fn only_strict_members_refuse<T: DeserializeOwned + Serialize>(sample: Value, strict: &[&str]) {
        let model = model_name::<T>();
        let read: T = serde_json::from_value(sample.clone()).unwrap_or_else(|e| panic!("{model}: {e}"));
        let Value::Object(members) = serde_json::to_value(&read).unwrap() else { panic!("{model}: not an object") };
        let probes = [json!(true), json!(12.5), json!("x"), json!([1, "a"]), json!({"a": {"b": 1}})];
        for key in members.keys() {
            let refused = probes.iter().filter(|probe| {
                let mut with = sample.clone();
                with[key.as_str()] = (*probe).clone();
                serde_json::from_value::<T>(with).is_err()
            });
            let refused = refused.count();
            if strict.contains(&key.as_str()) {
                assert!(refused > 0, "{model}.{key} is meant to be strict");
            } else {
                assert_eq!(refused, 0, "{model}.{key} refuses a type: is it tolerant?");
            }
        }
        for key in strict {
            assert!(members.contains_key(*key), "{model} has no {key}");
        }
    }

    #[test]
    fn every_read_model_is_tolerant_but_for_its_ids() {
        use crate::upstream::{history, installations, meters, notifications, sharing, stations};
        only_strict_members_refuse::<stations::ChargingStation>(json!({"id": "cs"}), &["id"]);
        only_strict_members_refuse::<stations::StationProperties>(json!({}), &[]);
        only_strict_members_refuse::<stations::StationError>(json!({}), &[]);
        only_strict_members_refuse::<stations::CurrentSession>(json!({}), &[]);
        only_strict_members_refuse::<stations::LastSession>(json!({}), &[]);
        only_strict_members_refuse::<stations::Heartbeat>(json!({}), &[]);
        only_strict_members_refuse::<meters::GridMeter>(json!({"id": "gm"}), &["id"]);
        only_strict_members_refuse::<meters::MeterProperties>(json!({}), &[]);
        only_strict_members_refuse::<meters::GeneralConsumption>(json!({}), &[]);
        only_strict_members_refuse::<meters::Tariff>(json!({"id": "hc"}), &["id"]);
        only_strict_members_refuse::<installations::Installation>(json!({"installationId": 33}), &["installationId"]);
        only_strict_members_refuse::<sharing::User>(json!({"accountId": "u"}), &["accountId", "enabled"]);
        only_strict_members_refuse::<sharing::Invitation>(json!({"email": "e@x"}), &["email"]);
        only_strict_members_refuse::<history::MeasureInfo>(json!({"measureId": 1}), &["measureId"]);
        only_strict_members_refuse::<history::LogInfo>(json!({"logId": "1"}), &["logId"]);
        only_strict_members_refuse::<history::AggregatePoint>(json!({"date": "d"}), &["date"]);
        only_strict_members_refuse::<history::LogEntry>(json!({"date": "d"}), &["date"]);
        only_strict_members_refuse::<history::LogCount>(json!({"date": "d", "value": 1}), &["date", "value"]);
        let strict = ["eventSubscriptionId", "protocolData", "state"];
        only_strict_members_refuse::<notifications::EventSubscription>(json!({"eventSubscriptionId": "s"}), &strict);
        only_strict_members_refuse::<notifications::SubscriptionFilter>(json!({}), &[]);
    }

    #[test]
    fn models_are_named_without_their_modules() {
        assert_eq!(model_name::<Vec<Thing>>(), "Vec<Thing>");
        assert_eq!(model_name::<Option<String>>(), "Option<String>");
    }
}
