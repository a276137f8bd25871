//! Who may see what, checked by the BFF itself before anything is sent upstream. The caller's role
//! on an installation comes from the installation's users (cached per caller, for the list TTL, and
//! dropped at once when witty-bff changes a membership). An installer sees general data only: no
//! costs or consumptions, no commands (the API document, "Sharing your installation").

use async_graphql::Context;

use super::context::{caller, load};
use super::enums::UserRole;
use super::error::{AppError, AppResult};
use crate::cache::read;
use crate::commands::{Access, Who};

/// Who may run a command, read through the request's loaders like the rest of the request.
pub(crate) struct RequestAccess<'r, 'c>(pub &'r Context<'c>);

impl Access for RequestAccess<'_, '_> {
    async fn allow(&self, who: Who, installation_id: Option<i64>) -> AppResult<()> {
        let installation = || installation_id.ok_or_else(|| AppError::internal("a command's installation is missing"));
        match who {
            Who::Owner { what } => require_owner(self.0, installation()?, what).await,
            Who::Member => require_member(self.0, installation()?).await,
            Who::Anyone => caller(self.0).map(drop),
        }
    }
}

/// The caller's role on an installation.
pub(crate) async fn role(ctx: &Context<'_>, installation_id: i64) -> AppResult<UserRole> {
    let me = caller(ctx)?;
    let users = match load(ctx, read::Users { installation_id }).await {
        Ok((users, _)) => users,
        // An upstream that hides the users from installers: the caller is not the owner.
        Err(AppError::Forbidden(_)) => return Ok(UserRole::Installer),
        Err(e) => return Err(e),
    };
    let found = users.iter().find(|u| u.account_id == *me.sub);
    match found {
        Some(u) if u.enabled == Some(false) => {
            Err(AppError::Forbidden(format!("your access to installation {installation_id} was disabled by its owner")))
        }
        Some(u) => Ok(u.role_code.as_deref().map(UserRole::from_upstream).unwrap_or(UserRole::Unknown)),
        // Not listed among the users: give no more than an installer has.
        None => Ok(UserRole::Installer),
    }
}

/// Refuses anyone but the owner, saying what installers may not do.
pub(crate) async fn require_owner(ctx: &Context<'_>, installation_id: i64, what: &str) -> AppResult<()> {
    match role(ctx, installation_id).await? {
        UserRole::Owner => Ok(()),
        _ => Err(AppError::Forbidden(format!("only the installation's owner can {what}; installers cannot"))),
    }
}

/// Refuses anyone who does not see the installation (as owner or enabled installer).
pub(crate) async fn require_member(ctx: &Context<'_>, installation_id: i64) -> AppResult<()> {
    let (list, _) = load(ctx, read::Installations).await?;
    if list.iter().any(|x| x.installation_id == installation_id) {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("installation {installation_id} not found")))
    }
}

/// Whether a field of a log value or of event data carries energy, cost or consumption, at any
/// depth (a session's `totalSessionCost`, a settings change's `changed.sessionCost`, ...).
fn carries_costs(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("energy")
        || k.contains("cost")
        || matches!(
            k.as_str(),
            "rangerecoveredbyev" | "consumption" | "consumptions" | "consumptiontotalindex" | "generalconsumption"
        )
}

/// Removes energy, cost and consumption from a log value or event data, at every depth (what
/// installers are sent).
pub(crate) fn strip_costs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !carries_costs(k));
            map.values_mut().for_each(strip_costs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_costs),
        _ => {}
    }
}

/// The guard of fields carrying costs or consumptions.
pub(crate) async fn require_costs(ctx: &Context<'_>, installation_id: i64) -> AppResult<()> {
    require_owner(ctx, installation_id, "see costs and consumptions").await
}

#[cfg(test)]
mod tests {
    use super::strip_costs;
    use serde_json::json;

    #[test]
    fn costs_go_at_every_depth_and_settings_stay() {
        let mut v = json!({
            "energy": 7.5, "chargeMode": "immediate", "averageEvConsumption": 17.5,
            "session": {"totalSessionEnergy": 7.5, "TotalSessionCost": 1.62, "rangeRecoveredByEV": 48, "startDate": "x"},
            "changed": {"sessionCost": 1.62, "ledPower": 20},
            "entries": [{"value": {"cost": 1, "plugged": true}}],
            "tic": {"generalConsumption": {"consumptions": [1]}, "consumptionTotalIndex": 3}
        });
        strip_costs(&mut v);
        assert_eq!(
            v,
            json!({
                "chargeMode": "immediate", "averageEvConsumption": 17.5,
                "session": {"startDate": "x"},
                "changed": {"ledPower": 20},
                "entries": [{"value": {"plugged": true}}],
                "tic": {}
            })
        );
    }
}
