//! Installations (routes 1–2).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::tolerant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GpsCoordinates {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Installation {
    /// Required: an installation without a readable id makes the answer unreadable.
    pub installation_id: i64,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub application_code: Option<String>,
    #[serde(default, deserialize_with = "tolerant::or_default")]
    pub name: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub location_name: Option<String>,
    /// Absent unless both coordinates are numbers.
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub location_gps_coordinates: Option<GpsCoordinates>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewInstallation {
    pub name: String,
    pub location_name: String,
    pub location_gps_coordinates: GpsCoordinates,
}

impl UpstreamClient {
    /// 1. `GET /installations`
    pub(crate) async fn installations(&self, bearer: &str) -> Result<Vec<Installation>, UpstreamError> {
        self.json(Kind::Read, Method::GET, &["installations"], bearer, NO_BODY).await
    }

    /// 2. `POST /installations`
    pub(crate) async fn create_installation(
        &self,
        bearer: &str,
        new: &NewInstallation,
    ) -> Result<Installation, UpstreamError> {
        self.json(Kind::Command, Method::POST, &["installations"], bearer, Some(new)).await
    }
}
