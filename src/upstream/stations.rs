//! Charging stations and their commands (routes 16–23).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Kind, NO_BODY, UpstreamClient};
use super::error::UpstreamError;
use super::quirks::NumberOrString;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargingStation {
    pub id: String,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub installation_parent_id: Option<i64>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub properties: StationProperties,
}

/// The station's properties; every one optional, enums as raw strings (the GraphQL layer maps
/// them to open enums).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StationProperties {
    pub installation_date: Option<String>,
    pub production_date: Option<String>,
    pub product_reference: Option<String>,
    pub mac_address: Option<String>,
    pub wifi_ssid: Option<String>,
    pub friendly_name: Option<String>,
    pub phase_number: Option<String>,
    pub erl_connected: Option<bool>,
    pub tic_connected: Option<String>,
    pub night_mode_connected: Option<String>,
    pub shedding_mode: Option<String>,
    /// A string when read (a number when written).
    pub average_ev_consumption: Option<NumberOrString>,
    pub is_default_average_ev_consumption: Option<bool>,
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
    pub authorize_tic: Option<String>,
    pub availability: Option<String>,
    pub charge_mode: Option<String>,
    pub car_plug_status: Option<String>,
    pub key_switch: Option<String>,
    pub timezone: Option<String>,
    pub culture: Option<String>,
    pub connectivity_type: Option<String>,
    pub evcs_locked: Option<bool>,
    pub led_power: Option<f64>,
    pub error: Option<StationError>,
    pub current_session: Option<CurrentSession>,
    pub last_session: Option<LastSession>,
    pub heartbeat: Option<Heartbeat>,
}

impl ChargingStation {
    /// A car is plugged in: the socket is taken, the station is busy, or a session is open.
    pub fn is_plugged(&self) -> bool {
        let p = &self.properties;
        let status = p.car_plug_status.as_deref().unwrap_or("").to_ascii_lowercase();
        let socket_taken = !matches!(status.as_str(), "" | "unplugged" | "none" | "notplugged");
        let busy = matches!(p.availability.as_deref(), Some("occupied") | Some("charging"));
        socket_taken || busy || p.current_session.is_some()
    }

    /// The plugged car is charging now.
    pub fn is_charging(&self) -> bool {
        let p = &self.properties;
        let speed =
            p.current_session.as_ref().and_then(|c| c.charging_speed.as_deref()).unwrap_or("").to_ascii_lowercase();
        p.availability.as_deref() == Some("charging")
            || (p.current_session.is_some() && !matches!(speed.as_str(), "" | "none" | "stopped" | "paused"))
    }
}

impl StationProperties {
    /// `tariff1` … `tariff10`, in order.
    pub fn tariffs(&self) -> [Option<&String>; 10] {
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
pub struct StationError {
    /// A number in the model (a string such as `noError` in logs).
    pub code: Option<NumberOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CurrentSession {
    pub start_date: Option<String>,
    pub duration: Option<String>,
    pub total_session_energy: Option<f64>,
    pub total_session_cost: Option<f64>,
    pub charging_speed: Option<String>,
    pub charging_duration: Option<String>,
    #[serde(rename = "rangeRecoveredByEV")]
    pub range_recovered_by_ev: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LastSession {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub session_duration: Option<String>,
    pub charging_duration: Option<String>,
    pub total_session_energy: Option<f64>,
    pub total_session_cost: Option<f64>,
    #[serde(rename = "rangeRecoveredByEV")]
    pub range_recovered_by_ev: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Heartbeat {
    pub heartbeat: Option<bool>,
    pub reception_date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociateStation {
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
pub struct UpdateStation {
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
    pub async fn charging_stations(&self, bearer: &str, i: i64) -> Result<Vec<ChargingStation>, UpstreamError> {
        let path = ["installations", &i.to_string(), "charging-stations"];
        self.json(Kind::Read, Method::GET, &path, bearer, NO_BODY).await
    }

    /// 17. `GET /installations/{i}/charging-stations/{cs}`
    pub async fn charging_station(&self, bearer: &str, i: i64, cs: &str) -> Result<ChargingStation, UpstreamError> {
        let p = station_path(i, cs);
        self.json(Kind::Read, Method::GET, &refs(&p), bearer, NO_BODY).await
    }

    /// 18. `POST /installations/{i}/charging-stations`
    pub async fn associate_station(
        &self,
        bearer: &str,
        i: i64,
        body: &AssociateStation,
    ) -> Result<ChargingStation, UpstreamError> {
        let path = ["installations", &i.to_string(), "charging-stations"];
        self.json(Kind::Command, Method::POST, &path, bearer, Some(body)).await
    }

    /// 19. `DELETE /installations/{i}/charging-stations/{cs}`
    pub async fn remove_station(&self, bearer: &str, i: i64, cs: &str) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        self.empty(Kind::Command, Method::DELETE, &refs(&p), bearer, NO_BODY).await
    }

    /// 20. `POST …/operators/set-charge-mode` (202: accepted, not yet applied)
    pub async fn set_charge_mode(&self, bearer: &str, i: i64, cs: &str, mode: &str) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        let path = [refs(&p).as_slice(), &["operators", "set-charge-mode"]].concat();
        self.empty(Kind::Command, Method::POST, &path, bearer, Some(&ChargeModeBody { charge_mode: mode })).await
    }

    /// 21–22. `POST …/operators/start|stop` (202)
    pub async fn start_stop(&self, bearer: &str, i: i64, cs: &str, start: bool) -> Result<(), UpstreamError> {
        let p = station_path(i, cs);
        let path = [refs(&p).as_slice(), &["operators", if start { "start" } else { "stop" }]].concat();
        self.empty(Kind::Command, Method::POST, &path, bearer, NO_BODY).await
    }

    /// 23. `PUT /installations/{i}/charging-stations/{cs}` (202)
    pub async fn update_station(
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
