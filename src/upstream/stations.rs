//! Charging stations and their commands (routes 16–23).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::quirks::NumberOrString;
use super::tolerant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChargingStation {
    /// Required: a station without a readable id makes the answer unreadable.
    pub id: String,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub serial_number: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub uuid: Option<String>,
    #[serde(default, deserialize_with = "tolerant::optional")]
    pub installation_parent_id: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "tolerant::optional")]
    pub kind: Option<String>,
    /// Not an object: no property is known.
    #[serde(default, deserialize_with = "tolerant::or_default")]
    pub properties: StationProperties,
}

/// The station's properties; every one optional, enums as raw strings (the GraphQL layer maps
/// them to open enums). A property of an unexpected type reads as absent (see [`tolerant`]); the
/// container's `default` covers the missing ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct StationProperties {
    #[serde(deserialize_with = "tolerant::optional")]
    pub installation_date: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub production_date: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub product_reference: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub mac_address: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub wifi_ssid: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub friendly_name: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub phase_number: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub erl_connected: Option<bool>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tic_connected: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub night_mode_connected: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub shedding_mode: Option<String>,
    /// A string when read (a number when written).
    #[serde(deserialize_with = "tolerant::optional")]
    pub average_ev_consumption: Option<NumberOrString>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub is_default_average_ev_consumption: Option<bool>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff1: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff2: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff3: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff4: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff5: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff6: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff7: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff8: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff9: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub tariff10: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub authorize_tic: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub availability: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub charge_mode: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub car_plug_status: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub key_switch: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub timezone: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub culture: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub connectivity_type: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub evcs_locked: Option<bool>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub led_power: Option<f64>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub error: Option<StationError>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub current_session: Option<CurrentSession>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub last_session: Option<LastSession>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub heartbeat: Option<Heartbeat>,
}

impl ChargingStation {
    /// A car is plugged in: the socket is taken, the station is busy, or a session is open.
    pub(crate) fn is_plugged(&self) -> bool {
        let p = &self.properties;
        let status = p.car_plug_status.as_deref().unwrap_or("").to_ascii_lowercase();
        let socket_taken = !matches!(status.as_str(), "" | "unplugged" | "none" | "notplugged");
        let busy = matches!(p.availability.as_deref(), Some("occupied") | Some("charging"));
        socket_taken || busy || p.current_session.is_some()
    }

    /// The plugged car is charging now.
    pub(crate) fn is_charging(&self) -> bool {
        let p = &self.properties;
        let speed =
            p.current_session.as_ref().and_then(|c| c.charging_speed.as_deref()).unwrap_or("").to_ascii_lowercase();
        p.availability.as_deref() == Some("charging")
            || (p.current_session.is_some() && !matches!(speed.as_str(), "" | "none" | "stopped" | "paused"))
    }
}

impl StationProperties {
    /// `tariff1` … `tariff10`, in order.
    pub(crate) fn tariffs(&self) -> [Option<&String>; 10] {
        [
            self.tariff1.as_ref(),
            self.tariff2.as_ref(),
            self.tariff3.as_ref(),
            self.tariff4.as_ref(),
            self.tariff5.as_ref(),
            self.tariff6.as_ref(),
            self.tariff7.as_ref(),
            self.tariff8.as_ref(),
            self.tariff9.as_ref(),
            self.tariff10.as_ref(),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StationError {
    /// A number in the model (a string such as `noError` in logs).
    #[serde(deserialize_with = "tolerant::optional")]
    pub code: Option<NumberOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CurrentSession {
    #[serde(deserialize_with = "tolerant::optional")]
    pub start_date: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub duration: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub total_session_energy: Option<f64>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub total_session_cost: Option<f64>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub charging_speed: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub charging_duration: Option<String>,
    #[serde(rename = "rangeRecoveredByEV", deserialize_with = "tolerant::optional")]
    pub range_recovered_by_ev: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct LastSession {
    #[serde(deserialize_with = "tolerant::optional")]
    pub start_date: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub end_date: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub session_duration: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub charging_duration: Option<String>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub total_session_energy: Option<f64>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub total_session_cost: Option<f64>,
    #[serde(rename = "rangeRecoveredByEV", deserialize_with = "tolerant::optional")]
    pub range_recovered_by_ev: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Heartbeat {
    #[serde(deserialize_with = "tolerant::optional")]
    pub heartbeat: Option<bool>,
    #[serde(deserialize_with = "tolerant::optional")]
    pub reception_date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssociateStation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
    pub timezone: String,
    pub country: String,
}

/// The station PUT: only the fields to change are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateStation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub led_power: Option<i64>,
    /// A number when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_ev_consumption: Option<f64>,
    #[serde(flatten)]
    pub tariffs: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChargeModeBody<'a> {
    charge_mode: &'a str,
}

fn station_path(i: i64, cs: &str) -> [String; 4] {
    ["installations".into(), i.to_string(), "charging-stations".into(), cs.into()]
}

impl UpstreamClient {
    /// 16. `GET /installations/{i}/charging-stations`
    pub(crate) async fn charging_stations(&self, bearer: &str, i: i64) -> Result<Vec<ChargingStation>, UpstreamError> {
        let path = ["installations", &i.to_string(), "charging-stations"];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 17. `GET /installations/{i}/charging-stations/{cs}`
    pub(crate) async fn charging_station(
        &self,
        bearer: &str,
        i: i64,
        cs: &str,
    ) -> Result<ChargingStation, UpstreamError> {
        let p = station_path(i, cs);
        self.json(Kind::Read, Method::GET, &refs(&p), bearer, NO_BODY).await
    }

    /// 18. `POST /installations/{i}/charging-stations`
    pub(crate) async fn associate_station(
        &self,
        bearer: &str,
        i: i64,
        body: &AssociateStation,
    ) -> Result<ChargingStation, UpstreamError> {
        let path = ["installations", &i.to_string(), "charging-stations"];
        self.json(Kind::Command, Method::POST, &path, bearer, Some(body)).await
    }

    /// 19. `DELETE /installations/{i}/charging-stations/{cs}`
    pub(crate) async fn remove_station(&self, bearer: &str, i: i64, cs: &str) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        self.empty(Kind::Command, Method::DELETE, &refs(&p), bearer, NO_BODY).await
    }

    /// 20. `POST …/operators/set-charge-mode` (202: accepted, not yet applied)
    pub(crate) async fn set_charge_mode(
        &self,
        bearer: &str,
        i: i64,
        cs: &str,
        mode: &str,
    ) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        let path = [refs(&p).as_slice(), &["operators", "set-charge-mode"]].concat();
        self.empty(Kind::Command, Method::POST, &path, bearer, Some(&ChargeModeBody { charge_mode: mode })).await
    }

    /// 21–22. `POST …/operators/start|stop` (202)
    pub(crate) async fn start_stop(&self, bearer: &str, i: i64, cs: &str, start: bool) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        let path = [refs(&p).as_slice(), &["operators", if start { "start" } else { "stop" }]].concat();
        self.empty(Kind::Command, Method::POST, &path, bearer, NO_BODY).await
    }

    /// 23. `PUT /installations/{i}/charging-stations/{cs}` (202)
    pub(crate) async fn update_station(
        &self,
        bearer: &str,
        i: i64,
        cs: &str,
        body: &UpdateStation,
    ) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        self.empty(Kind::Command, Method::PUT, &refs(&p), bearer, Some(body)).await
    }
}

pub(crate) fn refs(p: &[String]) -> Vec<&str> {
    p.iter().map(String::as_str).collect()
}
