//! Event subscriptions (routes 3–7) and the Event Grid events the upstream delivers.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::tolerant;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionFilter {
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub subject_begins_with: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub subject_ends_with: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventSubscription {
    /// Required: a subscription without a readable id makes the answer unreadable.
    pub event_subscription_id: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_id: Option<i64>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub protocol_code: Option<String>,
    /// Strict: the BFF tells its own webhook subscriptions by it (and adopts, replaces or
    /// removes them); read as absent, one of its own would pass for someone else's and be
    /// registered again beside it.
    #[serde(default)]
    pub protocol_data: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub event_type: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub filter: Option<SubscriptionFilter>,
    /// Strict: the BFF decides on it whether its webhook is validated or failed.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub creation_date: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub modification_date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewEventSubscription {
    pub protocol_code: String,
    pub protocol_data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

/// One Azure Event Grid event, as delivered to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GridEvent {
    pub id: String,
    pub event_type: String,
    #[serde(default)]
    pub subject: String,
    pub event_time: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub data_version: Option<String>,
    #[serde(default)]
    pub metadata_version: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
}

impl UpstreamClient {
    /// 3. `GET /installations/{i}/event-subscriptions`
    pub(crate) async fn event_subscriptions(
        &self,
        bearer: &str,
        i: i64,
    ) -> Result<Vec<EventSubscription>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "event-subscriptions"], bearer, NO_BODY)
            .await
    }

    /// 4. `GET /installations/{i}/event-subscriptions/{id}`
    pub(crate) async fn event_subscription(
        &self,
        bearer: &str,
        i: i64,
        id: &str,
    ) -> Result<EventSubscription, UpstreamError> {
        let path = ["installations", &i.to_string(), "event-subscriptions", id];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 5. `POST /installations/{i}/event-subscriptions`
    pub(crate) async fn subscribe(
        &self,
        bearer: &str,
        i: i64,
        new: &NewEventSubscription,
    ) -> Result<EventSubscription, UpstreamError> {
        let path = ["installations", &i.to_string(), "event-subscriptions"];
        self.json(Kind::Command, Method::POST, &path, bearer, Some(new)).await
    }

    /// 6. `DELETE /installations/{i}/event-subscriptions`
    pub(crate) async fn unsubscribe_all(&self, bearer: &str, i: i64) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "event-subscriptions"];
        self.empty(Kind::Command, Method::DELETE, &path, bearer, NO_BODY).await
    }

    /// 7. `DELETE /installations/{i}/event-subscriptions/{id}`
    pub(crate) async fn unsubscribe(&self, bearer: &str, i: i64, id: &str) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "event-subscriptions", id];
        self.empty(Kind::Command, Method::DELETE, &path, bearer, NO_BODY).await
    }
}
