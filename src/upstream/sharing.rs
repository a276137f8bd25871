//! Sharing an installation with an installer (routes 8–15).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::tolerant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Invitation {
    /// Required: it identifies the invitation (it is cancelled by e-mail).
    pub email: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_name: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_id: Option<i64>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub expiration_date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewInvitation {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culture_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    /// Required: the caller is found among the users by it.
    pub account_id: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub account_first_name: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub account_last_name: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub account_email: Option<String>,
    #[serde(default, deserialize_with = "tolerant::or_default")]
    pub authorization_groups: Vec<String>,
    /// Tolerant: an unreadable role reads as none, which grants no owner's right.
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub role_code: Option<String>,
    /// Strict: absent reads as enabled, so a disabled installer whose `enabled` came as another
    /// type would get their access back. An unreadable one keeps the users unreadable, and the
    /// role check refuses (fails closed).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl UpstreamClient {
    /// 8. `POST /installations/{i}/invitations`
    pub(crate) async fn invite(&self, bearer: &str, i: i64, new: &NewInvitation) -> Result<Invitation, UpstreamError> {
        self.json(Kind::Command, Method::POST, &["installations", &i.to_string(), "invitations"], bearer, Some(new))
            .await
    }

    /// 9. `GET /installations/{i}/invitations`
    pub(crate) async fn invitations(&self, bearer: &str, i: i64) -> Result<Vec<Invitation>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "invitations"], bearer, NO_BODY).await
    }

    /// 10. `DELETE /installations/{i}/invitations/{email}`
    pub(crate) async fn cancel_invitation(&self, bearer: &str, i: i64, email: &str) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "invitations", email];
        self.empty(Kind::Command, Method::DELETE, &path, bearer, NO_BODY).await
    }

    /// 11. `POST /invitations/operators/accept/{activationCode}`
    pub(crate) async fn accept_invitation(&self, bearer: &str, activation_code: &str) -> Result<(), UpstreamError> {
        let path = ["invitations", "operators", "accept", activation_code];
        self.empty(Kind::Command, Method::POST, &path, bearer, NO_BODY).await
    }

    /// 12. `GET /installations/{i}/users`
    pub(crate) async fn users(&self, bearer: &str, i: i64) -> Result<Vec<User>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "users"], bearer, NO_BODY).await
    }

    /// 13–14. `POST /installations/{i}/users/{accountId}/operators/disable|enable`
    pub(crate) async fn set_installer_enabled(
        &self,
        bearer: &str,
        i: i64,
        account_id: &str,
        enabled: bool,
    ) -> Result<(), UpstreamError> {
        let op = if enabled { "enable" } else { "disable" };
        let path = ["installations", &i.to_string(), "users", account_id, "operators", op];
        self.empty(Kind::Command, Method::POST, &path, bearer, NO_BODY).await
    }

    /// 15. `DELETE /installations/{i}/users/{accountId}`
    pub(crate) async fn remove_user(&self, bearer: &str, i: i64, account_id: &str) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "users", account_id];
        self.empty(Kind::Command, Method::DELETE, &path, bearer, NO_BODY).await
    }
}
