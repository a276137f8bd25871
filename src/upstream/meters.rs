//! Grid meters, TIC consent and tariffs (routes 35–37, 48–50).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::quirks::NumberOrString;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridMeter {
    pub id: String,
    #[serde(default)]
    pub installation_parent_id: Option<i64>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub properties: MeterProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeterProperties {
    pub general_consumption: Option<GeneralConsumption>,
    /// A number in the model, a string in logs; either may come.
    pub tic_type: Option<NumberOrString>,
    pub intensity_subscribed: Option<f64>,
    pub current_tariff: Option<String>,
    pub grid_subscription: Option<String>,
    pub authorize_tic: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GeneralConsumption {
    pub consumption_total_index: Option<f64>,
    pub consumptions: Vec<Consumption>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consumption {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tariff {
    pub id: String,
    #[serde(default)]
    pub installation_parent_id: Option<i64>,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub is_default: Option<bool>,
    #[serde(default)]
    pub values: Vec<TariffPrice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TariffPrice {
    pub begin_date: String,
    pub value: f64,
}

/// One element of the tariffs POST.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetTariff {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    pub currency: String,
    pub begin_date: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
struct AuthorizeTicBody {
    #[serde(rename = "authorizeTIC")]
    authorize_tic: bool,
}

impl UpstreamClient {
    /// 35. `GET /installations/{i}/grid-meters`
    pub async fn grid_meters(&self, bearer: &str, i: i64) -> Result<Vec<GridMeter>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "grid-meters"], bearer, NO_BODY).await
    }

    /// 36. `GET /installations/{i}/grid-meters/{gm}`
    pub async fn grid_meter(&self, bearer: &str, i: i64, gm: &str) -> Result<GridMeter, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "grid-meters", gm], bearer, NO_BODY).await
    }

    /// 37. `POST …/grid-meters/{gm}/operators/authorize-tic`
    pub async fn authorize_tic(&self, bearer: &str, i: i64, gm: &str, authorize: bool) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "operators", "authorize-tic"];
        self.empty(Kind::Command, Method::POST, &path, bearer, Some(&AuthorizeTicBody { authorize_tic: authorize }))
            .await
    }

    /// 48. `GET …/grid-meters/{gm}/tariffs`
    pub async fn tariffs(&self, bearer: &str, i: i64, gm: &str) -> Result<Vec<Tariff>, UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "tariffs"];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 49. `GET …/grid-meters/{gm}/tariffs/{t}`
    pub async fn tariff(&self, bearer: &str, i: i64, gm: &str, t: &str) -> Result<Tariff, UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "tariffs", t];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 50. `POST …/grid-meters/{gm}/tariffs` (the whole set the subscription needs)
    pub async fn set_tariffs(
        &self,
        bearer: &str,
        i: i64,
        gm: &str,
        tariffs: &[SetTariff],
    ) -> Result<Vec<Tariff>, UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "tariffs"];
        self.json(Kind::Command, Method::POST, &path, bearer, Some(tariffs)).await
    }
}

impl MeterProperties {
    pub fn tic_type_text(&self) -> Option<String> {
        self.tic_type.as_ref().map(NumberOrString::as_text)
    }
}
