//! The mutation side of the schema: station commands, installations, sharing, TIC consent,
//! tariffs and notification subscriptions. Each resolver checks and translates its arguments,
//! runs its command through [`crate::commands`] (idempotency, role check, one upstream write,
//! invalidation) and turns the answer into GraphQL objects.

mod installations;
mod meters;
mod notifications;
mod sharing;
mod stations;

use async_graphql::parser::types::{Selection, SelectionSet};
use async_graphql::{Context, MergedObject};

use super::access::RequestAccess;
use super::context::{caller, load};
use super::error::{AppError, AppResult};
use crate::cache::read;
pub(crate) use crate::commands::{CommandSettings, Services};
use crate::commands::{Invocation, Key, KeySource};

#[derive(MergedObject, Default)]
pub(crate) struct Mutation(
    installations::InstallationMutation,
    stations::StationMutation,
    sharing::SharingMutation,
    meters::MeterMutation,
    notifications::NotificationMutation,
);

/// An object of the installation that a write names.
pub(super) enum Held {
    Station(String),
    Meter(String),
    Subscription(String),
    Invitation(String),
}

/// Refuses with `NOT_FOUND`, naming it, an object that is not the installation `i`'s, read
/// through the request's loaders (the installation's stations, grid meters, event subscriptions
/// or invitations) as the rest of the request reads them. Run before the write is sent
/// ([`crate::commands::send_checked`]): the upstream would otherwise learn of the write first.
pub(super) async fn require_held(ctx: &Context<'_>, i: i64, held: Held) -> AppResult<()> {
    let installation_id = i;
    let (found, what) = match held {
        Held::Station(cs) => {
            let (list, _) = load(ctx, read::Stations { installation_id }).await?;
            (list.iter().any(|s| s.id == cs), format!("charging station {cs}"))
        }
        Held::Meter(gm) => {
            let (list, _) = load(ctx, read::Meters { installation_id }).await?;
            (list.iter().any(|m| m.id == gm), format!("grid meter {gm}"))
        }
        Held::Subscription(id) => {
            let (list, _) = load(ctx, read::EventSubscriptions { installation_id }).await?;
            (list.iter().any(|s| s.event_subscription_id == id), format!("event subscription {id}"))
        }
        Held::Invitation(email) => {
            let (list, _) = load(ctx, read::Invitations { installation_id }).await?;
            (list.iter().any(|v| v.email.eq_ignore_ascii_case(&email)), format!("a pending invitation of {email}"))
        }
    };
    if found {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("{what} not found in installation {i}: nothing was sent")))
    }
}

pub(crate) fn services<'a>(ctx: &Context<'a>) -> AppResult<&'a Services> {
    ctx.data::<Services>().map_err(|_| AppError::internal("no services in the schema"))
}

/// The `Idempotency-Key` header of the HTTP request, put in the request data by the transport.
/// It names the whole request: its mutations, their arguments, in their order.
#[derive(Debug)]
pub(crate) struct IdempotencyKey {
    key: String,
    /// In a batch of several operations: this operation's place, and the batch as sent (the
    /// header names the whole batch, as it does a request of several mutations).
    batch: Option<(usize, std::sync::Arc<str>)>,
}

/// A mutation's place in a batch: its operation's place times this, plus its own place among
/// the operation's root fields (fewer than this: see `size::MAX_ROOT_FIELDS`).
const BATCH_STRIDE: usize = 1 << 16;

impl IdempotencyKey {
    pub(crate) fn new(key: impl Into<String>) -> IdempotencyKey {
        IdempotencyKey { key: key.into(), batch: None }
    }

    /// The header as seen by the operation at `place` of a batch of several, described by `batch`.
    pub(crate) fn in_batch(self, place: usize, batch: std::sync::Arc<str>) -> IdempotencyKey {
        IdempotencyKey { batch: Some((place, batch)), ..self }
    }
}

/// What a command needs from the request: the caller's access and services, and the call itself
/// (`fingerprint` describes the arguments as the resolver normalised them).
fn call<'r, 'c>(
    ctx: &'r Context<'c>,
    installation_id: Option<i64>,
    explicit: Option<String>,
    fingerprint: String,
) -> AppResult<(RequestAccess<'r, 'c>, Invocation<'r>, &'r Services)> {
    let key = key(ctx, explicit)?;
    let call = Invocation { caller: caller(ctx)?, installation_id, key, fingerprint };
    Ok((RequestAccess(ctx), call, services(ctx)?))
}

/// The request's idempotency key: the argument, which wins, or the header. A header on a request
/// of one mutation names the same mutation as the argument would; on several, each by its place.
fn key(ctx: &Context<'_>, explicit: Option<String>) -> AppResult<Option<Key>> {
    if let Some(key) = explicit {
        return Key::new(key, KeySource::Argument, None, None).map(Some);
    }
    let Some(header) = ctx.data_opt::<IdempotencyKey>() else { return Ok(None) };
    let root = root_fields(ctx);
    let (place, request) = match &header.batch {
        None => ((root.count > 1).then_some(root.place), root.identity),
        Some((op, batch)) => (Some(op * BATCH_STRIDE + root.place), format!("{batch}\n{}", root.identity)),
    };
    Key::new(header.key.clone(), KeySource::Header, place, Some(request)).map(Some)
}

/// The operation's root fields as an `Idempotency-Key` header sees them.
struct RootFields {
    /// The current field's place (fragments spread in place; fields answered under one key, and
    /// `__typename`, counted once or not at all), so that the header covers each mutation of a
    /// request whatever its alias.
    place: usize,
    count: usize,
    /// Every root field with its arguments and directives, in order, without aliases, then the
    /// request's variables: what the header names.
    identity: String,
}

fn root_fields(ctx: &Context<'_>) -> RootFields {
    use async_graphql::parser::types::Field;
    struct Seen<'a> {
        keys: Vec<&'a str>,
        mine: Option<usize>,
        identity: String,
    }
    /// A field as written, without its alias (its variables are added once, after all fields).
    fn describe(f: &Field, out: &mut String) {
        out.push_str(f.name.node.as_str());
        for (name, value) in &f.arguments {
            out.push_str(&format!(" {}: {}", name.node, value.node));
        }
        for d in &f.directives {
            out.push_str(&format!(" @{}", d.node.name.node));
            for (name, value) in &d.node.arguments {
                out.push_str(&format!(" {}: {}", name.node, value.node));
            }
        }
        out.push('\n');
    }
    fn walk<'a>(set: &'a SelectionSet, ctx: &Context<'a>, seen: &mut Seen<'a>, depth: u8) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(f) if f.node.name.node.starts_with("__") => {}
                Selection::Field(f) => {
                    let key = f.node.response_key().node.as_str();
                    let place = seen.keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                        seen.keys.push(key);
                        describe(&f.node, &mut seen.identity);
                        seen.keys.len() - 1
                    });
                    if f.pos == ctx.item.pos {
                        seen.mine = Some(place);
                    }
                }
                Selection::FragmentSpread(s) if depth < 16 => {
                    if let Some(f) = ctx.query_env.fragments.get(&s.node.fragment_name.node) {
                        walk(&f.node.selection_set.node, ctx, seen, depth + 1);
                    }
                }
                Selection::InlineFragment(f) if depth < 16 => walk(&f.node.selection_set.node, ctx, seen, depth + 1),
                _ => {}
            }
        }
    }
    let mut seen = Seen { keys: Vec::new(), mine: None, identity: String::new() };
    walk(&ctx.query_env.operation.node.selection_set.node, ctx, &mut seen, 0);
    seen.identity.push_str(&serde_json::to_string(&ctx.query_env.variables).unwrap_or_default());
    RootFields { place: seen.mine.unwrap_or(seen.keys.len()), count: seen.keys.len(), identity: seen.identity }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mutation_is_described_once_under_its_field_name() {
        let sdl = crate::graphql::sdl();
        let mutation = sdl.split("type Mutation {").nth(1).and_then(|m| m.split("\n}").next()).unwrap();
        let fields: Vec<&str> = mutation
            .lines()
            .filter_map(|l| l.strip_prefix('\t').or_else(|| l.strip_prefix("  ")))
            .filter_map(|l| l.split_once('(').or_else(|| l.split_once(':')).map(|(name, _)| name))
            .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
            .collect();
        use crate::commands::{installations, meters, notifications, sharing, stations};
        let all = [
            &installations::CREATE_INSTALLATION,
            &stations::ASSOCIATE_CHARGING_STATION,
            &stations::REMOVE_CHARGING_STATION,
            &stations::UPDATE_CHARGING_STATION,
            &stations::SET_CHARGE_MODE,
            &stations::START_CHARGING,
            &stations::STOP_CHARGING,
            &sharing::INVITE_INSTALLER,
            &sharing::CANCEL_INVITATION,
            &sharing::ACCEPT_INVITATION,
            &sharing::DISABLE_INSTALLER,
            &sharing::ENABLE_INSTALLER,
            &sharing::REMOVE_INSTALLATION_USER,
            &meters::AUTHORIZE_TIC,
            &meters::SET_TARIFFS,
            &notifications::SUBSCRIBE_TO_NOTIFICATIONS,
            &notifications::UNSUBSCRIBE_FROM_NOTIFICATIONS,
            &notifications::UNSUBSCRIBE_ALL_NOTIFICATIONS,
        ];
        let mut named: Vec<&str> = all.iter().map(|c| c.name).collect();
        named.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(named, fields);
    }
}
