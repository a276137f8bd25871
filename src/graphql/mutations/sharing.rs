//! Sharing an installation with an installer: invitations, acceptance, disabling, enabling and
//! removing. Membership changes drop every cached entry of the installation for every caller, so an
//! installer the owner disabled or removed through witty-bff loses access at once.

use async_graphql::{Context, ID, Object};

use super::{Doubt, services};
use crate::cache::Resource;
use crate::graphql::access::require_owner;
use crate::graphql::context::caller;
use crate::graphql::enums::Culture;
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::installations::Invitation;
use crate::upstream::sharing::NewInvitation;

const INVITED: Doubt = Doubt { what: "the invitation", done: "sent", check: "the installation's invitations" };
const CANCELLED: Doubt =
    Doubt { what: "the cancellation of the invitation", done: "made", check: "the installation's invitations" };
const ACCEPTED: Doubt = Doubt { what: "the acceptance of the invitation", done: "made", check: "your installations" };
const DISABLED: Doubt = Doubt { what: "disabling the installer", done: "done", check: "the installation's users" };
const ENABLED: Doubt = Doubt { what: "enabling the installer", done: "done", check: "the installation's users" };
const USER_REMOVED: Doubt = Doubt { what: "the removal of the user", done: "made", check: "the installation's users" };

/// A plausible e-mail address: one `@`, something before it, a dotted domain after it.
pub(crate) fn check_email(field: &str, email: &str) -> AppResult<String> {
    let email = email.trim().to_ascii_lowercase();
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>'))
        }
        None => false,
    };
    if !ok || email.len() > 254 {
        return Err(AppError::bad_input(format!("{field} must be an e-mail address, got '{email}'")));
    }
    Ok(email)
}

/// `installationId` and `accountId`, checked as every id argument is.
fn account(installation_id: &ID, account_id: &ID) -> AppResult<(i64, String)> {
    Ok((installation_arg(installation_id, "installationId")?, resource_id(account_id, "accountId")?))
}

/// A membership changed: nobody keeps a cached view of the installation, and everyone's list of
/// installations is read again.
fn membership_changed(ctx: &Context<'_>, i: i64) -> AppResult<()> {
    let svc = services(ctx)?;
    svc.cache.invalidate(move |r| r.installation_id() == Some(i) || matches!(r, Resource::Installations));
    svc.live.access_changed(i);
    Ok(())
}

/// Disables or enables an installer (owners only; once per idempotency key).
async fn set_installer_enabled(
    ctx: &Context<'_>,
    installation_id: &ID,
    account_id: &ID,
    enabled: bool,
) -> AppResult<bool> {
    let (i, account) = account(installation_id, account_id)?;
    let (doubt, what) = if enabled { (ENABLED, "enable installers") } else { (DISABLED, "disable installers") };
    let svc = services(ctx)?;
    svc.idempotency
        .once(ctx, None, format!("{i} {account}"), doubt, |sent| async move {
            require_owner(ctx, i, what).await?;
            let me = caller(ctx)?;
            sent.send(svc.cache.client().set_installer_enabled(me.token(), i, &account, enabled)).await?;
            membership_changed(ctx, i)?;
            Ok(true)
        })
        .await
}

#[derive(Default)]
pub struct SharingMutation;

#[Object]
impl SharingMutation {
    /// Invites an installer by e-mail to monitor the installation (general data only).
    async fn invite_installer(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        email: String,
        culture: Option<Culture>,
        idempotency_key: Option<String>,
    ) -> AppResult<Invitation> {
        let i = installation_arg(&installation_id, "installationId")?;
        let email = check_email("email", &email)?;
        let culture_code = match culture {
            Some(c) => {
                Some(c.to_upstream().ok_or_else(|| AppError::bad_input("culture cannot be UNKNOWN"))?.to_string())
            }
            None => None,
        };
        let body = NewInvitation { email, culture_code };
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, idempotency_key, format!("{i} {body:?}"), INVITED, |sent| async move {
                require_owner(ctx, i, "invite installers").await?;
                let me = caller(ctx)?;
                let inv = sent.send(svc.cache.client().invite(me.token(), i, &body)).await?;
                super::invalidate(ctx, i, |r| matches!(r, Resource::Invitations { .. }))?;
                Ok(Invitation::from(inv))
            })
            .await
    }

    /// Cancels a pending invitation.
    async fn cancel_invitation(&self, ctx: &Context<'_>, installation_id: ID, email: String) -> AppResult<bool> {
        let i = installation_arg(&installation_id, "installationId")?;
        let email = check_email("email", &email)?;
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, format!("{i} {email}"), CANCELLED, |sent| async move {
                require_owner(ctx, i, "cancel invitations").await?;
                let me = caller(ctx)?;
                sent.send(svc.cache.client().cancel_invitation(me.token(), i, &email)).await?;
                super::invalidate(ctx, i, |r| matches!(r, Resource::Invitations { .. }))?;
                Ok(true)
            })
            .await
    }

    /// Accepts an invitation with the code from its e-mail (installer accounts only).
    async fn accept_invitation(&self, ctx: &Context<'_>, activation_code: String) -> AppResult<bool> {
        // A path segment upstream, so checked as an id is (`.` or `..` would change the route).
        let code = resource_id(&activation_code, "activationCode")?;
        let code = code.as_str();
        if code.len() > 200 || code.contains('/') {
            return Err(AppError::bad_input("activationCode must be the code from the invitation e-mail"));
        }
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, code.to_string(), ACCEPTED, |sent| async move {
                let me = caller(ctx)?;
                sent.send(svc.cache.client().accept_invitation(me.token(), code)).await?;
                // Which installation it was is not said: every cached list of users and
                // installations goes.
                svc.cache.invalidate(|r| {
                    matches!(r, Resource::Installations | Resource::Users { .. } | Resource::Invitations { .. })
                });
                Ok(true)
            })
            .await
    }

    /// Stops sharing with an installer until enabled again; effective at once.
    async fn disable_installer(&self, ctx: &Context<'_>, installation_id: ID, account_id: ID) -> AppResult<bool> {
        set_installer_enabled(ctx, &installation_id, &account_id, false).await
    }

    /// Shares the installation with a disabled installer again.
    async fn enable_installer(&self, ctx: &Context<'_>, installation_id: ID, account_id: ID) -> AppResult<bool> {
        set_installer_enabled(ctx, &installation_id, &account_id, true).await
    }

    /// Removes an installer from the installation for good; effective at once.
    async fn remove_installation_user(
        &self,
        ctx: &Context<'_>,
        installation_id: ID,
        account_id: ID,
    ) -> AppResult<bool> {
        let (i, account) = account(&installation_id, &account_id)?;
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, None, format!("{i} {account}"), USER_REMOVED, |sent| async move {
                require_owner(ctx, i, "remove users").await?;
                let me = caller(ctx)?;
                sent.send(svc.cache.client().remove_user(me.token(), i, &account)).await?;
                membership_changed(ctx, i)?;
                Ok(true)
            })
            .await
    }
}
