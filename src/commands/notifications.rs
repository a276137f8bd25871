//! Subscribing webhooks of the caller's own to an installation's notifications.

use super::{Changes, Command, Doubt, Kind, Who};

const SUBSCRIPTIONS: Changes =
    Changes { installation: &[Kind::EventSubscriptions, Kind::EventSubscription], ..Changes::NONE };
const UNSUBSCRIBED: Doubt =
    Doubt { what: "the removal of the subscription", done: "made", check: "the installation's eventSubscriptions" };

pub(crate) static SUBSCRIBE_TO_NOTIFICATIONS: Command = Command {
    name: "subscribeToNotifications",
    who: Who::Member,
    doubt: Doubt { what: "the subscription", done: "made", check: "the installation's eventSubscriptions" },
    changes: SUBSCRIPTIONS,
};
pub(crate) static UNSUBSCRIBE_FROM_NOTIFICATIONS: Command =
    Command { name: "unsubscribeFromNotifications", who: Who::Member, doubt: UNSUBSCRIBED, changes: SUBSCRIPTIONS };
pub(crate) static UNSUBSCRIBE_ALL_NOTIFICATIONS: Command =
    Command { name: "unsubscribeAllNotifications", who: Who::Member, doubt: UNSUBSCRIBED, changes: SUBSCRIPTIONS };
