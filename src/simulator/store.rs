//! The simulated cloud's state: accounts, installations and their users, invitations, event
//! subscriptions, charging stations and grid meters, the pool of devices not yet associated, and the
//! e-mails "sent". Seeded deterministically; every rule of the API document is enforced here, so the
//! HTTP layer only reads requests and writes answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::{SimError, SimResult};
use super::series::{self, LogEntry, PriceBook, Profile, Session, Subscription, TariffId, TariffType};
use super::wire::{
    EventSubscriptionModel, GpsCoordinates, GridEvent, InstallationModel, InvitationModel, SubscriptionFilter,
    TariffModel, TariffValue, UserModel,
};

/// "Never", as the upstream writes it.
pub const NEVER: &str = "0001-01-01T00:00:00Z";
pub const TIMEZONES: [&str; 3] = ["GMT Standard Time", "Romance Standard Time", "W. Europe Standard Time"];
pub const CULTURES: [&str; 3] = ["en-gb", "fr-fr", "de-de"];
pub const CHARGE_MODES: [&str; 3] = ["immediate", "deferred", "deferredExclusive"];
/// How long an installer invitation stays valid.
pub const INVITATION_DAYS: i64 = 7;

pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_default()
}

/// A deterministic UUID from a seed and a label.
fn stable_uuid(seed: u64, label: &str) -> String {
    let h: Vec<u64> = label.bytes().map(u64::from).collect();
    let a = series::mix(&[&[seed, 1][..], &h].concat());
    let b = series::mix(&[&[seed, 2][..], &h].concat());
    Uuid::from_u64_pair(a, b).to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    Owner,
    Installer,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub sub: String,
    /// The identity provider's subject doubles as the account id, so a caller can find itself in
    /// an installation's users.
    pub account_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub kind: AccountKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Installer,
}

impl Role {
    pub fn code(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Installer => "installer",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub account_id: String,
    pub role: Role,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct Invitation {
    pub email: String,
    pub culture: String,
    pub activation_code: String,
    pub expiration: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct EventSubscription {
    pub model: EventSubscriptionModel,
    /// Events waiting for, or handed to, this subscription's delivery task.
    pub queue: mpsc::UnboundedSender<GridEvent>,
}

#[derive(Clone, Debug)]
pub struct Installation {
    pub id: i64,
    pub external_id: Option<String>,
    pub name: String,
    pub location_name: String,
    pub latitude: f64,
    pub longitude: f64,
    pub members: Vec<Member>,
    pub invitations: Vec<Invitation>,
    pub subscriptions: Vec<EventSubscription>,
}

impl Installation {
    pub fn model(&self) -> InstallationModel {
        InstallationModel {
            installation_id: self.id,
            external_id: self.external_id.clone(),
            application_code: "flowEvcs".into(),
            name: self.name.clone(),
            location_name: self.location_name.clone(),
            location_gps_coordinates: GpsCoordinates { latitude: self.latitude, longitude: self.longitude },
        }
    }

    pub fn invitation_model(&self, inv: &Invitation) -> InvitationModel {
        InvitationModel {
            email: inv.email.clone(),
            installation_name: self.name.clone(),
            installation_id: self.id,
            expiration_date: fmt_time(inv.expiration),
        }
    }
}

/// A station in the box, not yet associated with any installation.
#[derive(Clone, Debug)]
pub struct Device {
    pub uid: String,
    pub serial_number: String,
    pub subscription: Subscription,
    pub power_w: f64,
    pub three_phase: bool,
}

impl Device {
    pub fn qr_code(&self) -> String {
        format!("https://hgr.io/u/{}", self.uid)
    }
}

#[derive(Clone, Debug)]
pub struct Station {
    pub id: String,
    pub device: Device,
    pub installation_id: i64,
    pub meter_id: String,
    pub seed: u64,
    pub installed_at: DateTime<Utc>,
    pub production_date: DateTime<Utc>,
    pub mac_address: String,
    pub wifi_ssid: String,
    pub friendly_name: String,
    pub average_ev_consumption: f64,
    pub is_default_average_ev_consumption: bool,
    pub tariff_types: [TariffType; 10],
    pub charge_mode: String,
    pub key_switch: String,
    pub timezone: String,
    pub culture: String,
    pub connectivity_type: String,
    pub led_power: i64,
    pub error_code: i64,
    /// Sessions since the simulator started; the last one is open while a car is plugged.
    pub live_sessions: Vec<Session>,
    /// Log entries written since the simulator started (sessions' entries are derived).
    pub live_logs: Vec<LogEntry>,
    /// Raw property values forced by `PUT /_sim/stations/{cs}/properties` (a value a newer
    /// upstream might send), laid over the model.
    pub overrides: serde_json::Map<String, Value>,
}

impl Station {
    pub fn current_session(&self) -> Option<&Session> {
        self.live_sessions.last().filter(|s| s.end.is_none())
    }

    pub fn plugged(&self) -> bool {
        self.current_session().is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Tariff {
    pub friendly_name: String,
    pub currency: String,
    pub is_default: bool,
    pub values: Vec<(DateTime<Utc>, f64)>,
    /// Raw values forced by `PUT /_sim/grid-meters/{gm}/tariffs/{t}`.
    pub overrides: serde_json::Map<String, Value>,
}

#[derive(Clone, Debug)]
pub struct Meter {
    pub id: String,
    pub installation_id: i64,
    pub station_id: String,
    pub subscription: Subscription,
    pub tic_type: u8,
    pub intensity_subscribed: i64,
    pub authorize_tic: bool,
    pub tariffs: BTreeMap<TariffId, Tariff>,
    /// Raw property values forced by `PUT /_sim/grid-meters/{gm}/properties`.
    pub overrides: serde_json::Map<String, Value>,
}

/// An e-mail the simulator "sent" (installer invitations).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub activation_code: String,
}

/// A change that subscribers are notified of.
#[derive(Clone, Debug)]
pub struct Notice {
    pub installation_id: i64,
    pub station_id: Option<String>,
    pub event_type: &'static str,
    pub data: Value,
}

/// The event types the simulator sends (the document names the kinds, not the strings).
pub mod events {
    pub const CABLE_PLUGGED: &str = "Hager.WittyHome.CablePlugged";
    pub const CABLE_UNPLUGGED: &str = "Hager.WittyHome.CableUnplugged";
    pub const SESSION_STARTED: &str = "Hager.WittyHome.SessionStarted";
    pub const SESSION_ENDED: &str = "Hager.WittyHome.SessionEnded";
    pub const CHARGE_MODE_CHANGED: &str = "Hager.WittyHome.ChargeModeChanged";
    pub const ERROR: &str = "Hager.WittyHome.Error";
    pub const LOAD_SHEDDING: &str = "Hager.WittyHome.LoadShedding";
    pub const SETTINGS_UPDATED: &str = "Hager.WittyHome.SettingsUpdated";
    pub const ALL: [&str; 8] = [
        CABLE_PLUGGED,
        CABLE_UNPLUGGED,
        SESSION_STARTED,
        SESSION_ENDED,
        CHARGE_MODE_CHANGED,
        ERROR,
        LOAD_SHEDDING,
        SETTINGS_UPDATED,
    ];
}

/// The station tariff classification of the document's example.
const EXAMPLE_TARIFF_TYPES: [TariffType; 10] = {
    use TariffType::{Hc, Hp};
    [Hc, Hp, Hc, Hc, Hp, Hc, Hp, Hc, Hp, Hc]
};

fn default_tariffs(subscription: Subscription) -> BTreeMap<TariffId, Tariff> {
    subscription
        .tariff_ids()
        .into_iter()
        .map(|id| {
            let (name, price) = match id {
                TariffId::Th => ("Tarif de base".to_string(), 0.2516),
                TariffId::Hc => ("Heures creuses".into(), 0.2068),
                TariffId::Hp => ("Heures pleines".into(), 0.27),
                TariffId::Hn => ("Heures normales".into(), 0.2),
                TariffId::Pm => ("Pointe mobile".into(), 0.7),
                TariffId::Hcjb => ("Heures creuses jours bleus".into(), 0.1296),
                TariffId::Hpjb => ("Heures pleines jours bleus".into(), 0.1609),
                TariffId::Hcjw => ("Heures creuses jours blancs".into(), 0.1486),
                TariffId::Hpjw => ("Heures pleines jours blancs".into(), 0.1894),
                TariffId::Hcjr => ("Heures creuses jours rouges".into(), 0.1568),
                TariffId::Hpjr => ("Heures pleines jours rouges".into(), 0.7562),
                TariffId::Tariff(n) => (format!("Tariff {n}"), 0.15 + f64::from(n) * 0.02),
            };
            let tariff = Tariff {
                friendly_name: name,
                currency: "eur".into(),
                is_default: true,
                values: vec![(time("2020-01-01T00:00:00Z"), price)],
                overrides: serde_json::Map::new(),
            };
            (id, tariff)
        })
        .collect()
}

fn tic_type_for(subscription: Subscription) -> u8 {
    match subscription {
        Subscription::Standard => 2,
        _ => 5,
    }
}

/// `ticType` numbers of the model and the names the TicType log writes for them.
pub fn tic_type_name(n: u8) -> &'static str {
    match n {
        0 => "idle",
        1 => "historicTri",
        2 => "standardMono",
        3 => "standardTri",
        4 => "standardProducer",
        5 => "historicMono",
        _ => "unknown",
    }
}

pub struct Store {
    pub seed: u64,
    pub accounts: BTreeMap<String, Account>,
    pub installations: BTreeMap<i64, Installation>,
    pub stations: BTreeMap<String, Station>,
    pub meters: BTreeMap<String, Meter>,
    pub devices: Vec<Device>,
    pub mail: Vec<Mail>,
    pub next_installation_id: i64,
    pub history_until: DateTime<Utc>,
}

struct SeedStation<'a> {
    id: &'a str,
    meter_id: &'a str,
    uid: &'a str,
    serial: &'a str,
    subscription: Subscription,
    installed: &'a str,
    friendly_name: &'a str,
    charge_mode: &'a str,
    timezone: &'a str,
    culture: &'a str,
    power_w: f64,
}

impl Store {
    /// The seeded world. `boot` is when the simulator started: procedural history ends there.
    pub fn seeded(seed: u64, boot: DateTime<Utc>) -> Store {
        let history_until = Utc
            .timestamp_opt(boot.timestamp().div_euclid(series::SLOT_SECS) * series::SLOT_SECS, 0)
            .single()
            .unwrap_or(boot);
        let mut store = Store {
            seed,
            accounts: BTreeMap::new(),
            installations: BTreeMap::new(),
            stations: BTreeMap::new(),
            meters: BTreeMap::new(),
            devices: Vec::new(),
            mail: Vec::new(),
            next_installation_id: 100,
            history_until,
        };
        let people = [
            ("alice", "Alice", "Martin", "alice@example.com", AccountKind::Owner),
            ("bob", "Bob", "Durand", "bob@example.com", AccountKind::Owner),
            ("dieter", "Dieter", "Weber", "dieter@example.de", AccountKind::Owner),
            ("ivan", "Ivan", "Petit", "ivan@installer.example.com", AccountKind::Installer),
            ("erin", "Erin", "Moreau", "erin@installer.example.com", AccountKind::Installer),
        ];
        for (sub, first, last, email, kind) in people {
            let account = Account {
                sub: sub.into(),
                account_id: sub.into(),
                first_name: first.into(),
                last_name: last.into(),
                email: email.into(),
                kind,
            };
            store.accounts.insert(sub.into(), account);
        }
        let homes = [
            (33, "alice", "Mon installation Witty-Home", "Bordeaux", 44.8, -0.6),
            (42, "bob", "Maison Lyon", "Lyon", 45.76, 4.84),
            (43, "bob", "Chalet Annecy", "Annecy", 45.9, 6.13),
            (51, "dieter", "Haus Berlin", "Berlin", 52.52, 13.405),
        ];
        for (id, owner, name, location, lat, lon) in homes {
            let owner_id = store.accounts[owner].account_id.clone();
            store.installations.insert(
                id,
                Installation {
                    id,
                    external_id: None,
                    name: name.into(),
                    location_name: location.into(),
                    latitude: lat,
                    longitude: lon,
                    members: vec![Member { account_id: owner_id, role: Role::Owner, enabled: true }],
                    invitations: Vec::new(),
                    subscriptions: Vec::new(),
                },
            );
        }
        let stations = [
            (
                33,
                SeedStation {
                    id: "60e0d33e-cd45-4382-9e4d-c64002c3f5a7",
                    meter_id: "a6536308-fc1d-4930-ae1a-19a526958c75",
                    uid: "SyybhpX7Lzo3uhTzCoWQbn",
                    serial: "1234ABCDEF5678",
                    subscription: Subscription::Hchp,
                    installed: "2020-04-15T13:28:13Z",
                    friendly_name: "my garage charging station",
                    charge_mode: "immediate",
                    timezone: "Romance Standard Time",
                    culture: "fr-fr",
                    power_w: 7_400.0,
                },
            ),
            (
                42,
                SeedStation {
                    id: "2b7c9a41-53f0-4c1e-9d6a-8f2e1b0c4d77",
                    meter_id: "c41d0e8a-7b3f-4a52-b6e9-0d1f2a3b4c5d",
                    uid: "Lq8RtYp2Vx4NmKs6DfGh3J",
                    serial: "2345BCDEFG6789",
                    subscription: Subscription::Tempo,
                    installed: "2021-09-01T08:00:00Z",
                    friendly_name: "Borne du garage",
                    charge_mode: "deferred",
                    timezone: "Romance Standard Time",
                    culture: "fr-fr",
                    power_w: 11_000.0,
                },
            ),
            (
                43,
                SeedStation {
                    id: "9e3f5a17-0c2d-4b8e-a6f1-3d5c7b9e1a20",
                    meter_id: "e7a9c1b3-5d2f-4e6a-8b0c-1f3e5d7a9c2b",
                    uid: "Wz5TnBv8Qc1XsLp4HdRk7M",
                    serial: "3456CDEFGH7890",
                    subscription: Subscription::Base,
                    installed: "2022-06-20T10:15:00Z",
                    friendly_name: "Chalet",
                    charge_mode: "deferredExclusive",
                    timezone: "Romance Standard Time",
                    culture: "fr-fr",
                    power_w: 3_700.0,
                },
            ),
            (
                51,
                SeedStation {
                    id: "5d8e2c40-1a7b-4f3e-9c6d-2e4a6b8c0d1f",
                    meter_id: "f2b4d6e8-0a1c-4e3f-b5a7-9c1e3d5f7a8b",
                    uid: "Pk2MwE9rTy6UhNb3CvXs1Z",
                    serial: "4567DEFGHI8901",
                    subscription: Subscription::Standard,
                    installed: "2023-02-10T09:30:00Z",
                    friendly_name: "Garage Berlin",
                    charge_mode: "immediate",
                    timezone: "W. Europe Standard Time",
                    culture: "de-de",
                    power_w: 11_000.0,
                },
            ),
        ];
        for (n, (installation_id, s)) in stations.into_iter().enumerate() {
            let device = Device {
                uid: s.uid.into(),
                serial_number: s.serial.into(),
                subscription: s.subscription,
                power_w: s.power_w,
                three_phase: s.power_w > 7_400.0,
            };
            store.install_station(
                installation_id,
                device,
                s.id.into(),
                s.meter_id.into(),
                time(s.installed),
                (s.timezone.into(), s.culture.into()),
            );
            let st = store.stations.get_mut(s.id).expect("just inserted");
            st.seed = series::mix(&[seed, n as u64 + 1]);
            st.friendly_name = s.friendly_name.into();
            st.charge_mode = s.charge_mode.into();
            if let Some(first) = st.live_logs.first_mut() {
                first.value = json!({"chargeMode": s.charge_mode});
            }
            st.is_default_average_ev_consumption = n != 0;
            if n == 0 {
                st.wifi_ssid = "myInternetBox-ABCD".into();
                st.mac_address = "F8-F5-05-DC-33-83".into();
                st.production_date = time("2020-04-07T13:27:25Z");
            }
        }
        // Bob's car is plugged in at his Lyon home, waiting for the off-peak hours (deferred).
        if let Some(st) = store.stations.get_mut("2b7c9a41-53f0-4c1e-9d6a-8f2e1b0c4d77") {
            st.live_sessions.push(Session {
                start: history_until,
                end: None,
                charging: vec![],
                power_w: st.device.power_w,
            });
        }
        // Ivan installed Alice's station; Erin is invited on Bob's Lyon home.
        let ivan = store.accounts["ivan"].account_id.clone();
        if let Some(i) = store.installations.get_mut(&33) {
            i.members.push(Member { account_id: ivan, role: Role::Installer, enabled: true });
        }
        let code = stable_uuid(seed, "erin-invitation").replace('-', "")[..16].to_uppercase();
        store.add_invitation(42, "erin@installer.example.com", "fr-fr", code, boot);
        store.devices = vec![
            Device {
                uid: "Fbo5WTTsSeeLQ8YYoLzNwN".into(),
                serial_number: "5678EFGHIJ9012".into(),
                subscription: Subscription::Hchp,
                power_w: 7_400.0,
                three_phase: false,
            },
            Device {
                uid: "Qm3vXc8RtYp2LkWn7HsDfA".into(),
                serial_number: "6789FGHIJK0123".into(),
                subscription: Subscription::Ejp,
                power_w: 7_400.0,
                three_phase: false,
            },
            Device {
                uid: "Zt9KpL2mNqR4sVwX6yB8cD".into(),
                serial_number: "7890GHIJKL1234".into(),
                subscription: Subscription::Standard,
                power_w: 11_000.0,
                three_phase: true,
            },
            Device {
                uid: "Hj7GfD5sA3qW1eR9tY6uIo".into(),
                serial_number: "8901HIJKLM2345".into(),
                subscription: Subscription::Base,
                power_w: 3_700.0,
                three_phase: false,
            },
            Device {
                uid: "Nc4BxV7zLq2WeR5tY8uIpA".into(),
                serial_number: "9012IJKLMN3456".into(),
                subscription: Subscription::Tempo,
                power_w: 7_400.0,
                three_phase: false,
            },
        ];
        store
    }

    fn install_station(
        &mut self,
        installation_id: i64,
        device: Device,
        id: String,
        meter_id: String,
        installed_at: DateTime<Utc>,
        (timezone, culture): (String, String),
    ) {
        let seed = series::mix(&[self.seed, device.serial_number.len() as u64, installed_at.timestamp() as u64]);
        let mac = seed.to_be_bytes()[..6].iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join("-");
        let station = Station {
            id: id.clone(),
            installation_id,
            meter_id: meter_id.clone(),
            seed,
            installed_at,
            production_date: installed_at - Duration::days(8),
            mac_address: mac,
            wifi_ssid: "".into(),
            friendly_name: "Witty".into(),
            average_ev_consumption: 14.2,
            is_default_average_ev_consumption: true,
            tariff_types: EXAMPLE_TARIFF_TYPES,
            charge_mode: "immediate".into(),
            key_switch: "locked".into(),
            timezone,
            culture,
            connectivity_type: "ethernet".into(),
            led_power: 50,
            error_code: 0,
            live_sessions: Vec::new(),
            live_logs: vec![LogEntry {
                date: installed_at,
                log_name: "ChargeMode",
                value: json!({"chargeMode": "immediate"}),
            }],
            device: device.clone(),
            overrides: serde_json::Map::new(),
        };
        let meter = Meter {
            id: meter_id.clone(),
            installation_id,
            station_id: id.clone(),
            subscription: device.subscription,
            tic_type: tic_type_for(device.subscription),
            intensity_subscribed: if device.three_phase { 60 } else { 45 },
            authorize_tic: true,
            tariffs: default_tariffs(device.subscription),
            overrides: serde_json::Map::new(),
        };
        if let Some(i) = self.installations.get_mut(&installation_id) {
            i.external_id = Some(format!("XEVFR-{}", device.serial_number));
        }
        self.stations.insert(id, station);
        self.meters.insert(meter_id, meter);
    }

    /// The account behind a token's `sub`; an unknown `sub` is a new owner account.
    pub fn account_for(&mut self, sub: &str) -> Account {
        if let Some(a) = self.accounts.get(sub) {
            return a.clone();
        }
        let account = Account {
            sub: sub.into(),
            account_id: sub.into(),
            first_name: sub.into(),
            last_name: "".into(),
            email: format!("{sub}@example.com"),
            kind: AccountKind::Owner,
        };
        self.accounts.insert(sub.into(), account.clone());
        account
    }

    pub fn account_by_id(&self, account_id: &str) -> Option<&Account> {
        self.accounts.values().find(|a| a.account_id == account_id)
    }

    /// The caller's role on an installation. Unknown installations and installations the caller
    /// is not a user of are both 404, so that ids of others cannot be probed.
    pub fn role(&self, account: &Account, installation_id: i64) -> SimResult<Role> {
        let not_found = || SimError::not_found(format!("installation {installation_id} not found"));
        let inst = self.installations.get(&installation_id).ok_or_else(not_found)?;
        let member = inst.members.iter().find(|m| m.account_id == account.account_id).ok_or_else(not_found)?;
        if !member.enabled {
            return Err(SimError::forbidden(format!(
                "your access to installation {installation_id} was disabled by its owner"
            )));
        }
        Ok(member.role)
    }

    /// Like [`Store::role`], but refuses installers: `what` says what they may not do.
    pub fn require_owner(&self, account: &Account, installation_id: i64, what: &str) -> SimResult<()> {
        match self.role(account, installation_id)? {
            Role::Owner => Ok(()),
            Role::Installer => Err(SimError::forbidden(format!("an installer cannot {what}"))),
        }
    }

    pub fn installation(&self, id: i64) -> SimResult<&Installation> {
        self.installations.get(&id).ok_or_else(|| SimError::not_found(format!("installation {id} not found")))
    }

    pub fn installation_mut(&mut self, id: i64) -> SimResult<&mut Installation> {
        self.installations.get_mut(&id).ok_or_else(|| SimError::not_found(format!("installation {id} not found")))
    }

    pub fn installations_of(&self, account: &Account) -> Vec<InstallationModel> {
        self.installations
            .values()
            .filter(|i| i.members.iter().any(|m| m.account_id == account.account_id && m.enabled))
            .map(Installation::model)
            .collect()
    }

    pub fn create_installation(
        &mut self,
        owner: &Account,
        name: String,
        location: String,
        lat: f64,
        lon: f64,
    ) -> InstallationModel {
        let id = self.next_installation_id;
        self.next_installation_id += 1;
        let inst = Installation {
            id,
            external_id: None,
            name,
            location_name: location,
            latitude: lat,
            longitude: lon,
            members: vec![Member { account_id: owner.account_id.clone(), role: Role::Owner, enabled: true }],
            invitations: Vec::new(),
            subscriptions: Vec::new(),
        };
        let model = inst.model();
        self.installations.insert(id, inst);
        model
    }

    pub fn station(&self, installation_id: i64, id: &str) -> SimResult<&Station> {
        self.stations.get(id).filter(|s| s.installation_id == installation_id).ok_or_else(|| {
            SimError::not_found(format!("charging station {id} not found in installation {installation_id}"))
        })
    }

    pub fn station_mut(&mut self, installation_id: i64, id: &str) -> SimResult<&mut Station> {
        self.stations.get_mut(id).filter(|s| s.installation_id == installation_id).ok_or_else(|| {
            SimError::not_found(format!("charging station {id} not found in installation {installation_id}"))
        })
    }

    pub fn meter(&self, installation_id: i64, id: &str) -> SimResult<&Meter> {
        self.meters
            .get(id)
            .filter(|m| m.installation_id == installation_id)
            .ok_or_else(|| SimError::not_found(format!("grid meter {id} not found in installation {installation_id}")))
    }

    pub fn meter_mut(&mut self, installation_id: i64, id: &str) -> SimResult<&mut Meter> {
        self.meters
            .get_mut(id)
            .filter(|m| m.installation_id == installation_id)
            .ok_or_else(|| SimError::not_found(format!("grid meter {id} not found in installation {installation_id}")))
    }

    pub fn stations_of(&self, installation_id: i64) -> impl Iterator<Item = &Station> {
        self.stations.values().filter(move |s| s.installation_id == installation_id)
    }

    pub fn meters_of(&self, installation_id: i64) -> impl Iterator<Item = &Meter> {
        self.meters.values().filter(move |m| m.installation_id == installation_id)
    }

    /// The profile that drives a station's (and its meter's) history.
    pub fn profile(&self, station: &Station) -> Profile {
        let subscription = self.meters.get(&station.meter_id).map(|m| m.subscription).unwrap_or(Subscription::Base);
        Profile {
            seed: station.seed,
            subscription,
            standard_types: station.tariff_types,
            power_w: station.device.power_w,
            installed_at: station.installed_at,
            history_until: self.history_until.max(station.installed_at),
        }
    }

    pub fn prices(&self, station: &Station) -> PriceBook {
        self.meters
            .get(&station.meter_id)
            .map(|m| m.tariffs.iter().map(|(id, t)| (*id, t.values.clone())).collect())
            .unwrap_or_default()
    }

    /// The station model of the document; `hide_costs` leaves out energy and costs (installers).
    pub fn station_json(&self, st: &Station, now: DateTime<Utc>, hide_costs: bool) -> Value {
        let profile = self.profile(st);
        let prices = self.prices(st);
        let consent = self.meters.get(&st.meter_id).is_none_or(|m| m.authorize_tic);
        let range = |kwh: f64| (kwh / st.average_ev_consumption * 100.0).floor() as i64;
        let current = st.current_session().map(|s| {
            let (energy, cost) = series::session_energy_cost(&profile, &prices, s, now);
            let mut v = json!({
                "startDate": fmt_time(s.start),
                "duration": series::hh_mm((now - s.start).num_seconds()),
                "totalSessionEnergy": energy,
                "totalSessionCost": cost,
                "chargingSpeed": if s.is_charging() { "optimal" } else { "none" },
                "chargingDuration": series::hh_mm(s.charging_secs(now)),
                "rangeRecoveredByEV": range(energy),
            });
            if hide_costs {
                strip(&mut v, &["totalSessionEnergy", "totalSessionCost", "rangeRecoveredByEV"]);
            }
            v
        });
        let mut last = match profile.last_session_before(&st.live_sessions, now) {
            Some(s) => {
                let (energy, cost) = series::session_energy_cost(&profile, &prices, &s, now);
                let end = s.end.unwrap_or(now);
                json!({
                    "startDate": fmt_time(s.start),
                    "endDate": fmt_time(end),
                    "sessionDuration": series::hh_mm((end - s.start).num_seconds()),
                    "chargingDuration": series::hh_mm(s.charging_secs(now)),
                    "totalSessionEnergy": energy,
                    "totalSessionCost": cost,
                    "rangeRecoveredByEV": range(energy),
                })
            }
            None => json!({
                "startDate": NEVER,
                "endDate": NEVER,
                "sessionDuration": "00:00",
                "chargingDuration": "00:00",
                "totalSessionEnergy": 0.0,
                "totalSessionCost": 0.0,
                "rangeRecoveredByEV": 0,
            }),
        };
        if hide_costs {
            strip(&mut last, &["totalSessionEnergy", "totalSessionCost", "rangeRecoveredByEV"]);
        }
        let mut props = json!({
            "installationDate": fmt_time(st.installed_at),
            "productionDate": fmt_time(st.production_date),
            "productReference": "XEVFR",
            "macAddress": st.mac_address,
            "wifiSsid": st.wifi_ssid,
            "friendlyName": st.friendly_name,
            "phaseNumber": if st.device.three_phase { "threePhase" } else { "monoPhase" },
            "erlConnected": true,
            "ticConnected": "connected",
            "nightModeConnected": "dn",
            "sheddingMode": "chpLoadShedding7A13A",
            "averageEvConsumption": format!("{}", st.average_ev_consumption),
            "isDefaultAverageEvConsumption": st.is_default_average_ev_consumption,
            "authorizeTic": if consent { "consent" } else { "noConsent" },
            "availability": if st.plugged() { "occupied" } else { "available" },
            "chargeMode": st.charge_mode,
            "carPlugStatus": if st.plugged() { "m3" } else { "unplugged" },
            "keySwitch": st.key_switch,
            "timezone": st.timezone,
            "culture": st.culture,
            "connectivityType": st.connectivity_type,
            "evcsLocked": st.key_switch == "locked",
            "ledPower": st.led_power,
            "error": {"code": st.error_code},
            "currentSession": current,
            "lastSession": last,
            "heartbeat": {
                "heartbeat": true,
                "receptionDate": fmt_time(Utc.timestamp_opt(now.timestamp() / 60 * 60, 0).single().unwrap_or(now)),
            },
        });
        if let Some(map) = props.as_object_mut() {
            for (i, t) in st.tariff_types.iter().enumerate() {
                map.insert(format!("tariff{}", i + 1), json!(t.code()));
            }
            map.extend(st.overrides.clone());
        }
        json!({
            "id": st.id,
            "serialNumber": st.device.serial_number,
            "uuid": st.device.uid,
            "installationParentId": st.installation_id,
            "type": "chargingStation",
            "properties": props,
        })
    }

    /// The grid meter model; consumptions only with TIC consent and for owners.
    pub fn meter_json(&self, m: &Meter, now: DateTime<Utc>, hide_costs: bool) -> Value {
        let profile = self.stations.get(&m.station_id).map(|s| self.profile(s));
        let current = profile.as_ref().map(|p| p.tariff_at(now).code().to_ascii_uppercase());
        let mut props = json!({
            "ticType": m.tic_type,
            "intensitySubscribed": m.intensity_subscribed,
            "currentTariff": current,
            "gridSubscription": m.subscription.code(),
            "authorizeTic": if m.authorize_tic { "consent" } else { "noConsent" },
        });
        if m.authorize_tic
            && !hide_costs
            && let (Some(p), Some(map)) = (&profile, props.as_object_mut())
        {
            // A closed-form index: about 12 kWh a day since installation, split over the tariffs.
            let days = (now - p.installed_at).num_seconds().max(0) as f64 / 86_400.0;
            let ids = m.subscription.tariff_ids();
            let weights: Vec<f64> =
                ids.iter().map(|t| if p.tariff_type(*t) == TariffType::Hc { 4.0 } else { 3.0 }).collect();
            let total_weight: f64 = weights.iter().sum();
            let consumptions: Vec<Value> = ids
                .iter()
                .zip(&weights)
                .map(|(t, w)| json!({"name": t.code().to_ascii_uppercase(), "value": (days * 12.0 * w / total_weight).round() as i64}))
                .collect();
            let total: i64 = consumptions.iter().filter_map(|c| c["value"].as_i64()).sum();
            map.insert(
                "generalConsumption".into(),
                json!({"consumptionTotalIndex": total, "consumptions": consumptions}),
            );
        }
        if let Some(map) = props.as_object_mut() {
            map.extend(m.overrides.clone());
        }
        json!({
            "id": m.id,
            "installationParentId": m.installation_id,
            "type": "gridMeter",
            "properties": props,
        })
    }

    pub fn tariff_models(&self, m: &Meter) -> Vec<Value> {
        m.tariffs.iter().map(|(id, t)| tariff_json(*id, t)).collect()
    }

    pub fn users(&self, installation_id: i64) -> SimResult<Vec<UserModel>> {
        let inst = self.installation(installation_id)?;
        Ok(inst
            .members
            .iter()
            .filter_map(|m| {
                let a = self.account_by_id(&m.account_id)?;
                let group = format!("{}{}", m.role.code(), if m.enabled { "Active" } else { "Inactive" });
                Some(UserModel {
                    account_id: a.account_id.clone(),
                    account_first_name: a.first_name.clone(),
                    account_last_name: a.last_name.clone(),
                    account_email: a.email.clone(),
                    authorization_groups: vec![group],
                    role_code: m.role.code().into(),
                    enabled: m.enabled,
                })
            })
            .collect())
    }

    pub fn add_invitation(
        &mut self,
        installation_id: i64,
        email: &str,
        culture: &str,
        activation_code: String,
        now: DateTime<Utc>,
    ) -> Option<InvitationModel> {
        let inst = self.installations.get_mut(&installation_id)?;
        let inv = Invitation {
            email: email.into(),
            culture: culture.into(),
            activation_code: activation_code.clone(),
            expiration: now + Duration::days(INVITATION_DAYS),
        };
        let model = inst.invitation_model(&inv);
        let subject = format!("Invitation to monitor the installation \"{}\"", inst.name);
        inst.invitations.push(inv);
        self.mail.push(Mail { to: email.into(), subject, activation_code });
        Some(model)
    }

    /// Association of a device from the pool, by uid (or the uid in its QR code).
    pub fn associate(
        &mut self,
        installation_id: i64,
        uid: &str,
        timezone: String,
        culture: String,
        now: DateTime<Utc>,
    ) -> SimResult<String> {
        if self.stations.values().any(|s| s.device.uid == uid) {
            return Err(SimError::conflict(format!(
                "charging station {uid} is already associated with an installation"
            )));
        }
        if self.stations_of(installation_id).next().is_some() {
            return Err(SimError::conflict(format!(
                "installation {installation_id} already has a charging station: remove it first"
            )));
        }
        let index = self
            .devices
            .iter()
            .position(|d| d.uid == uid)
            .ok_or_else(|| SimError::not_found(format!("no charging station with uid {uid} is known")))?;
        let device = self.devices.remove(index);
        let id = Uuid::new_v4().to_string();
        let meter_id = Uuid::new_v4().to_string();
        self.install_station(installation_id, device, id.clone(), meter_id, now, (timezone, culture));
        Ok(id)
    }

    /// Dissociation: the station and its meter go, the device returns to the pool.
    pub fn dissociate(&mut self, installation_id: i64, id: &str) -> SimResult<()> {
        self.station(installation_id, id)?;
        if let Some(st) = self.stations.remove(id) {
            self.meters.remove(&st.meter_id);
            if let Some(i) = self.installations.get_mut(&installation_id) {
                i.external_id = None;
            }
            self.devices.push(st.device);
        }
        Ok(())
    }

    /// A car is plugged in. In immediate mode it starts charging at once.
    pub fn plug(&mut self, id: &str, now: DateTime<Utc>) -> SimResult<Vec<Notice>> {
        let st =
            self.stations.get_mut(id).ok_or_else(|| SimError::not_found(format!("charging station {id} not found")))?;
        if st.plugged() {
            return Err(SimError::conflict(format!("a car is already plugged into charging station {id}")));
        }
        let immediate = st.charge_mode == "immediate";
        let charging = if immediate { vec![(now, None)] } else { vec![] };
        st.live_sessions.push(Session { start: now, end: None, charging, power_w: st.device.power_w });
        let mut out =
            vec![notice(st, events::CABLE_PLUGGED, json!({"carPlugStatus": "m3", "availability": "occupied"}))];
        if immediate {
            out.push(notice(st, events::SESSION_STARTED, json!({"startDate": fmt_time(now)})));
        }
        Ok(out)
    }

    /// The car leaves: the session ends (SessionEnd log, lastSession).
    pub fn unplug(&mut self, id: &str, now: DateTime<Utc>) -> SimResult<Vec<Notice>> {
        let profile_prices = self.stations.get(id).map(|st| (self.profile(st), self.prices(st)));
        let st =
            self.stations.get_mut(id).ok_or_else(|| SimError::not_found(format!("charging station {id} not found")))?;
        let Some(session) = st.live_sessions.last_mut().filter(|s| s.end.is_none()) else {
            return Err(SimError::conflict(format!("no car is plugged into charging station {id}")));
        };
        let was_charging = session.is_charging();
        if let Some(last) = session.charging.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(now);
        }
        session.end = Some(now);
        let ended = session.clone();
        let mut out = Vec::new();
        let (energy, cost) = match profile_prices {
            Some((p, prices)) => series::session_energy_cost(&p, &prices, &ended, now),
            None => (0.0, 0.0),
        };
        if was_charging {
            out.push(notice(st, events::SESSION_ENDED, json!({"endDate": fmt_time(now), "energy": energy})));
        }
        out.push(notice(
            st,
            events::CABLE_UNPLUGGED,
            json!({"carPlugStatus": "unplugged", "availability": "available", "sessionEnergy": energy, "sessionCost": cost}),
        ));
        Ok(out)
    }

    /// Applies a start or stop command that reached the station.
    pub fn apply_start_stop(&mut self, id: &str, start: bool, now: DateTime<Utc>) -> Vec<Notice> {
        let Some(st) = self.stations.get_mut(id) else { return vec![] };
        let Some(session) = st.live_sessions.last_mut().filter(|s| s.end.is_none()) else { return vec![] };
        match (start, session.is_charging()) {
            (true, false) => {
                session.charging.push((now, None));
                vec![notice(st, events::SESSION_STARTED, json!({"startDate": fmt_time(now)}))]
            }
            (false, true) => {
                if let Some(last) = session.charging.last_mut() {
                    last.1 = Some(now);
                }
                vec![notice(st, events::SESSION_ENDED, json!({"endDate": fmt_time(now)}))]
            }
            _ => vec![],
        }
    }

    pub fn apply_charge_mode(&mut self, id: &str, mode: &str, now: DateTime<Utc>) -> Vec<Notice> {
        let Some(st) = self.stations.get_mut(id) else { return vec![] };
        let previous = std::mem::replace(&mut st.charge_mode, mode.into());
        st.live_logs.push(LogEntry { date: now, log_name: "ChargeMode", value: json!({"chargeMode": mode}) });
        vec![notice(st, events::CHARGE_MODE_CHANGED, json!({"chargeMode": mode, "previousChargeMode": previous}))]
    }

    /// Injects a station error (load shedding is one): Errors log and a notification.
    pub fn raise_error(&mut self, id: &str, code: &str, now: DateTime<Utc>) -> SimResult<Vec<Notice>> {
        let st =
            self.stations.get_mut(id).ok_or_else(|| SimError::not_found(format!("charging station {id} not found")))?;
        st.live_logs.push(LogEntry { date: now, log_name: "Errors", value: json!({"code": code, "state": true}) });
        let kind = if code == "loadShedding" { events::LOAD_SHEDDING } else { events::ERROR };
        Ok(vec![notice(st, kind, json!({"code": code, "state": true}))])
    }

    /// The station's log entries of `[from, to)`, by date; `name` keeps one log only.
    pub fn station_logs(
        &self,
        st: &Station,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<LogEntry> {
        let profile = self.profile(st);
        let prices = self.prices(st);
        let mut out: Vec<LogEntry> = profile
            .sessions(&st.live_sessions, from - Duration::days(1), to)
            .iter()
            .flat_map(|s| series::session_logs(&profile, &prices, s, now))
            .collect();
        out.extend(series::procedural_station_events(&profile, from, to));
        out.extend(st.live_logs.iter().cloned());
        out.retain(|e| e.date >= from && e.date < to && name.is_none_or(|n| n == e.log_name));
        out.sort_by(|a, b| a.date.cmp(&b.date).then(a.log_name.cmp(b.log_name)));
        out
    }

    pub fn meter_logs(
        &self,
        m: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<LogEntry> {
        let Some(st) = self.stations.get(&m.station_id) else { return vec![] };
        let profile = self.profile(st);
        let mut out = Vec::new();
        if name.is_none_or(|n| n == "CurrentTariff") {
            out.extend(series::current_tariff_logs(&profile, from, to, now));
        }
        if name.is_none_or(|n| n == "TicType") {
            for (offset, ty) in [(0, 0u8), (9, m.tic_type)] {
                let date = st.installed_at + Duration::minutes(offset);
                if date >= from && date < to && date <= now {
                    out.push(LogEntry { date, log_name: "TicType", value: json!({"ticType": tic_type_name(ty)}) });
                }
            }
        }
        out.sort_by_key(|e| e.date);
        out
    }
}

fn strip(v: &mut Value, keys: &[&str]) {
    if let Some(map) = v.as_object_mut() {
        for k in keys {
            map.remove(*k);
        }
    }
}

fn notice(st: &Station, event_type: &'static str, mut data: Value) -> Notice {
    if let Some(map) = data.as_object_mut() {
        map.insert("installationId".into(), json!(st.installation_id));
        map.insert("chargingStationId".into(), json!(st.id));
    }
    Notice { installation_id: st.installation_id, station_id: Some(st.id.clone()), event_type, data }
}

/// A tariff as answered: its model with the raw values forced over it.
pub fn tariff_json(id: TariffId, t: &Tariff) -> Value {
    let mut v = serde_json::to_value(tariff_model(id, t)).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.extend(t.overrides.clone());
    }
    v
}

fn tariff_model(id: TariffId, t: &Tariff) -> TariffModel {
    let mut values: Vec<_> = t.values.clone();
    values.sort_by_key(|v| std::cmp::Reverse(v.0));
    TariffModel {
        id: id.code(),
        // The document's quirk: tariffs always say 0 here.
        installation_parent_id: 0,
        friendly_name: t.friendly_name.clone(),
        currency: t.currency.clone(),
        is_default: t.is_default,
        values: values
            .into_iter()
            .map(|(begin, value)| TariffValue { begin_date: begin.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(), value })
            .collect(),
    }
}

/// The filter of an event subscription: subject prefix/suffix and event type.
pub fn subscription_matches(model: &EventSubscriptionModel, event: &GridEvent) -> bool {
    let f: &SubscriptionFilter = &model.filter;
    event.subject.starts_with(&f.subject_begins_with)
        && event.subject.ends_with(&f.subject_ends_with)
        && model.event_type.as_deref().is_none_or(|t| t.is_empty() || t.eq_ignore_ascii_case(&event.event_type))
}
