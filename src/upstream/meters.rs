//! Grid meters, TIC consent and tariffs (routes 35–37, 48–50).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::quirks::NumberOrString;
use super::tolerant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GridMeter {
    /// Required: a meter without a readable id makes the answer unreadable.
    pub id: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_parent_id: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "tolerant::optional")]
    pub kind: Option<String>,
    /// Not an object: no property is known.
    #[serde(default, deserialize_with = "tolerant::or_default")]
    pub properties: MeterProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct MeterProperties {
    #[serde(deserialize_with = "tolerant::optional")]
    pub general_consumption: Option<GeneralConsumption>,
    /// A number in the model, a string in logs; either may come.
    #[serde(deserialize_with = "tolerant::optional")]
    pub tic_type: Option<NumberOrString>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub intensity_subscribed: Option<f64>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub current_tariff: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub grid_subscription: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub authorize_tic: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GeneralConsumption {
    #[serde(deserialize_with = "tolerant::optional")]
    pub consumption_total_index: Option<f64>,
    /// Empty when it is not a list or one of its consumptions is unreadable: a partial list
    /// would pass for the whole.
    #[serde(deserialize_with = "tolerant::or_default")]
    pub consumptions: Vec<Consumption>,
}

/// One tariff's index. Not tolerant: a `name` or `value` of another type makes it unreadable (the
/// value is the datum, a made-up 0 would be a wrong answer), which empties the list it is in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Consumption {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tariff {
    /// Required: a tariff without a readable id makes the answer unreadable.
    pub id: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_parent_id: Option<i64>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub friendly_name: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub is_default: Option<bool>,
    /// Empty when it is not a list or one of its prices is unreadable: dropping one price would
    /// make an older one current.
    #[serde(default, deserialize_with = "tolerant::or_default")]
    pub values: Vec<TariffPrice>,
}

/// One price. Strict: its date and value are the datum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TariffPrice {
    pub begin_date: String,
    pub value: f64,
}

/// One element of the tariffs POST.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetTariff {
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
    pub(crate) async fn grid_meters(&self, bearer: &str, i: i64) -> Result<Vec<GridMeter>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "grid-meters"], bearer, NO_BODY).await
    }

    /// 36. `GET /installations/{i}/grid-meters/{gm}`
    pub(crate) async fn grid_meter(&self, bearer: &str, i: i64, gm: &str) -> Result<GridMeter, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations", &i.to_string(), "grid-meters", gm], bearer, NO_BODY).await
    }

    /// 37. `POST …/grid-meters/{gm}/operators/authorize-tic`
    pub(crate) async fn authorize_tic(
        &self,
        bearer: &str,
        i: i64,
        gm: &str,
        authorize: bool,
    ) -> Result<(), UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "operators", "authorize-tic"];
        self.empty(Kind::Command, Method::POST, &path, bearer, Some(&AuthorizeTicBody { authorize_tic: authorize }))
            .await
    }

    /// 48. `GET …/grid-meters/{gm}/tariffs`
    pub(crate) async fn tariffs(&self, bearer: &str, i: i64, gm: &str) -> Result<Vec<Tariff>, UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "tariffs"];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 49. `GET …/grid-meters/{gm}/tariffs/{t}`
    pub(crate) async fn tariff(&self, bearer: &str, i: i64, gm: &str, t: &str) -> Result<Tariff, UpstreamError> {
        let path = ["installations", &i.to_string(), "grid-meters", gm, "tariffs", t];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 50. `POST …/grid-meters/{gm}/tariffs` (the whole set the subscription needs)
    pub(crate) async fn set_tariffs(
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
    pub(crate) fn tic_type_text(&self) -> Option<String> {
        self.tic_type.as_ref().map(NumberOrString::as_text)
    }
}
