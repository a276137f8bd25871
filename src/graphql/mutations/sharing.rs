//! Sharing an installation with an installer: invitations, acceptance, disabling, enabling and
//! removing. Membership changes drop every cached entry of the installation for every caller, so an
//! installer the owner disabled or removed through witty-bff loses access at once.

use async_graphql::{Context, ID, Object};

use super::{Held, call, require_held};
use crate::commands::sharing::{
    ACCEPT_INVITATION, CANCEL_INVITATION, DISABLE_INSTALLER, ENABLE_INSTALLER, INVITE_INSTALLER,
    REMOVE_INSTALLATION_USER,
};
use crate::commands::{send, send_checked};
use crate::graphql::enums::Culture;
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::history::{installation_arg, resource_id};
use crate::graphql::installations::Invitation;
use crate::upstream::sharing::NewInvitation;

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

/// Disables or enables an installer.
async fn set_installer_enabled(
    ctx: &Context<'_>,
    installation_id: &ID,
    account_id: &ID,
    enabled: bool,
) -> AppResult<bool> {
    let (i, account) = account(installation_id, account_id)?;
    let command = if enabled { &ENABLE_INSTALLER } else { &DISABLE_INSTALLER };
    let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {account}"))?;
    send(&access, call, svc, command, |client, token| async move {
        client.set_installer_enabled(token, i, &account, enabled).await
    })
    .await?;
    Ok(true)
}

#[derive(Default)]
pub(super) struct SharingMutation;

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
        let culture = culture.map(|c| c.to_upstream().ok_or_else(|| AppError::bad_input("culture cannot be UNKNOWN")));
        let body = NewInvitation { email, culture_code: culture.transpose()?.map(str::to_string) };
        let (access, call, svc) = call(ctx, Some(i), idempotency_key, format!("{i} {body:?}"))?;
        let invitation =
            send(
                &access,
                call,
                svc,
                &INVITE_INSTALLER,
                |client, token| async move { client.invite(token, i, &body).await },
            );
        Ok(Invitation::from(invitation.await?))
    }

    /// Cancels a pending invitation.
    async fn cancel_invitation(&self, ctx: &Context<'_>, installation_id: ID, email: String) -> AppResult<bool> {
        let i = installation_arg(&installation_id, "installationId")?;
        let email = check_email("email", &email)?;
        let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {email}"))?;
        let held = require_held(ctx, i, Held::Invitation(email.clone()));
        send_checked(&access, call, svc, &CANCEL_INVITATION, held, |client, token| async move {
            client.cancel_invitation(token, i, &email).await
        })
        .await?;
        Ok(true)
    }

    /// Accepts an invitation with the code from its e-mail (installer accounts only).
    async fn accept_invitation(&self, ctx: &Context<'_>, activation_code: String) -> AppResult<bool> {
        // A path segment upstream, so checked as an id is (`.` or `..` would change the route).
        let code = resource_id(&activation_code, "activationCode")?;
        let code = code.as_str();
        if code.len() > 200 || code.contains('/') {
            return Err(AppError::bad_input("activationCode must be the code from the invitation e-mail"));
        }
        let (access, call, svc) = call(ctx, None, None, code.to_string())?;
        send(&access, call, svc, &ACCEPT_INVITATION, |client, token| client.accept_invitation(token, code)).await?;
        Ok(true)
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
        let (access, call, svc) = call(ctx, Some(i), None, format!("{i} {account}"))?;
        send(&access, call, svc, &REMOVE_INSTALLATION_USER, |client, token| async move {
            client.remove_user(token, i, &account).await
        })
        .await?;
        Ok(true)
    }
}
