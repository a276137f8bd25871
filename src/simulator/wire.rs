//! The simulator's own JSON shapes, written from the API document. They are deliberately separate
//! from the BFF's upstream types, so that a serde mistake on either side fails a test instead of
//! being mirrored on both.
//!
//! Request bodies are read loosely (every field optional, numbers and strings as they come) and
//! checked by hand, so that each refusal names the field and the allowed values.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `{statusCode, message}`: the body of every error, as Azure API Management writes its own.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status_code: u16,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GpsCoordinates {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationModel {
    pub installation_id: i64,
    pub external_id: Option<String>,
    pub application_code: String,
    pub name: String,
    pub location_name: String,
    pub location_gps_coordinates: GpsCoordinates,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateInstallationRequest {
    pub name: Option<String>,
    pub location_name: Option<String>,
    pub location_gps_coordinates: Option<GpsCoordinatesInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GpsCoordinatesInput {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionFilter {
    #[serde(default)]
    pub subject_begins_with: String,
    #[serde(default)]
    pub subject_ends_with: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptionModel {
    pub event_subscription_id: String,
    pub installation_id: i64,
    pub user_id: String,
    pub protocol_code: String,
    pub protocol_data: String,
    /// The event type the subscription was created for; `null` means every type.
    pub event_type: Option<String>,
    pub filter: SubscriptionFilter,
    pub state: String,
    pub creation_date: String,
    pub modification_date: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventSubscriptionRequest {
    pub protocol_code: Option<String>,
    pub protocol_data: Option<String>,
    pub event_type: Option<String>,
    pub filter: Option<SubscriptionFilter>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationRequest {
    pub email: Option<String>,
    pub culture_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationModel {
    pub email: String,
    pub installation_name: String,
    pub installation_id: i64,
    pub expiration_date: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserModel {
    pub account_id: String,
    pub account_first_name: String,
    pub account_last_name: String,
    pub account_email: String,
    pub authorization_groups: Vec<String>,
    pub role_code: String,
    pub enabled: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssociateStationRequest {
    pub uid: Option<String>,
    pub qr_code: Option<String>,
    pub timezone: Option<String>,
    pub country: Option<String>,
    /// Accepted as a synonym of `country`.
    pub culture: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetChargeModeRequest {
    pub charge_mode: Option<String>,
}

/// The station PUT: every field optional. `averageEvConsumption` is a number when written (it is
/// a string when read).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStationRequest {
    pub friendly_name: Option<String>,
    pub led_power: Option<i64>,
    pub average_ev_consumption: Option<f64>,
    pub tariff1: Option<String>,
    pub tariff2: Option<String>,
    pub tariff3: Option<String>,
    pub tariff4: Option<String>,
    pub tariff5: Option<String>,
    pub tariff6: Option<String>,
    pub tariff7: Option<String>,
    pub tariff8: Option<String>,
    pub tariff9: Option<String>,
    pub tariff10: Option<String>,
}

impl UpdateStationRequest {
    pub fn tariffs(&self) -> [(usize, Option<&String>); 10] {
        [
            (1, self.tariff1.as_ref()),
            (2, self.tariff2.as_ref()),
            (3, self.tariff3.as_ref()),
            (4, self.tariff4.as_ref()),
            (5, self.tariff5.as_ref()),
            (6, self.tariff6.as_ref()),
            (7, self.tariff7.as_ref()),
            (8, self.tariff8.as_ref()),
            (9, self.tariff9.as_ref()),
            (10, self.tariff10.as_ref()),
        ]
    }
}

/// The charging station model, properties as in the document (plus `ledPower`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargingStationModel {
    pub id: String,
    pub serial_number: String,
    pub uuid: String,
    pub installation_parent_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub properties: Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GridMeterModel {
    pub id: String,
    pub installation_parent_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub properties: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasureModel {
    pub measure_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub periodicity: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogModel {
    pub log_id: String,
    pub name: String,
    pub periodicity: String,
}

/// `{startDate, endDate, step}` of the aggregation and count operators (`step` unused by list).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RangeRequest {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub step: Option<String>,
}

/// One point of a measure aggregation: `value`, or `valueMin`/`valueMax` for min-max, and one
/// `value<Tariff>` field per tariff of the subscription (`valueHc`, `valueTariff3`, …).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregationPoint {
    pub date: String,
    pub tariff_type: String,
    pub value: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogValue {
    pub date: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub log_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogCount {
    pub date: String,
    pub value: f64,
    pub log_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthorizeTicRequest {
    #[serde(rename = "authorizeTIC", alias = "authorizeTic")]
    pub authorize_tic: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TariffValue {
    pub begin_date: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TariffModel {
    pub id: String,
    pub installation_parent_id: i64,
    pub friendly_name: String,
    pub currency: String,
    pub is_default: bool,
    pub values: Vec<TariffValue>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TariffPriceRequest {
    pub id: Option<String>,
    pub friendly_name: Option<String>,
    pub currency: Option<String>,
    pub begin_date: Option<String>,
    pub value: Option<f64>,
}

/// An Azure Event Grid event, as delivered to webhooks.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GridEvent {
    pub id: String,
    pub event_type: String,
    pub subject: String,
    pub event_time: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub data_version: String,
    pub metadata_version: String,
    pub topic: String,
}
