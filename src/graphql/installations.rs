//! `Query.installations`, `Query.installation(id)` and the `Installation` type with what hangs off
//! it: users, invitations and event subscriptions.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::access::role;
use super::context::load;
use super::enums::UserRole;
use super::error::{AppError, AppResult};
use super::history::{UPSTREAM_READ, installation_arg, resource_id};
use super::meters::GridMeter;
use super::sessions::{self, ChargingReport, ChargingTotals, Join, StationReport};
use super::stations::ChargingStation;
use crate::cache::read;
use crate::upstream::history::Device;
use crate::upstream::quirks::parse_time;
use crate::upstream::{installations as wire, notifications, sharing};

#[derive(Default)]
pub(crate) struct InstallationQuery;

#[Object]
impl InstallationQuery {
    /// The caller's installations (as owner, or as an enabled installer).
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn installations(&self, ctx: &Context<'_>) -> AppResult<Vec<Installation>> {
        let (list, _) = load(ctx, read::Installations).await?;
        Ok(list.iter().cloned().map(Installation::from).collect())
    }

    /// One of the caller's installations; `NOT_FOUND` when it is not one of theirs.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn installation(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<Installation>> {
        let wanted = installation_arg(&id, "id")?;
        let (list, _) = load(ctx, read::Installations).await?;
        list.iter()
            .find(|i| i.installation_id == wanted)
            .cloned()
            .map(|i| Some(Installation::from(i)))
            .ok_or_else(|| AppError::NotFound(format!("installation {wanted} not found")))
    }
}

#[derive(SimpleObject, Clone, Copy)]
pub(crate) struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Clone)]
pub(crate) struct Installation {
    data: wire::Installation,
}

impl From<wire::Installation> for Installation {
    fn from(data: wire::Installation) -> Self {
        Installation { data }
    }
}

#[Object]
impl Installation {
    async fn id(&self) -> ID {
        ID(self.data.installation_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.data.name
    }
    async fn location_name(&self) -> Option<&str> {
        self.data.location_name.as_deref()
    }
    async fn location(&self) -> Option<GeoPoint> {
        self.data.location_gps_coordinates.as_ref().map(|g| GeoPoint { latitude: g.latitude, longitude: g.longitude })
    }
    /// `XEVFR-<serial number>` once a station is associated.
    async fn external_id(&self) -> Option<&str> {
        self.data.external_id.as_deref()
    }
    async fn application_code(&self) -> Option<&str> {
        self.data.application_code.as_deref()
    }

    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn charging_stations(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<ChargingStation>>> {
        let i = self.data.installation_id;
        // The caller's role is needed below (costs); fetch it alongside, not after.
        let (stations, _) = futures::join!(load(ctx, read::Stations { installation_id: i }), role(ctx, i));
        let (list, at) = stations?;
        Ok(Some(list.iter().map(|s| ChargingStation::new(i, Arc::new(s.clone()), at)).collect()))
    }

    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn charging_station(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<ChargingStation>> {
        let i = self.data.installation_id;
        let r = read::Station { installation_id: i, station_id: resource_id(&id, "chargingStationId")? };
        let (station, at) = load(ctx, r).await?;
        Ok(Some(ChargingStation::new(i, station, at)))
    }

    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn grid_meters(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<GridMeter>>> {
        let i = self.data.installation_id;
        let (meters, _) = futures::join!(load(ctx, read::Meters { installation_id: i }), role(ctx, i));
        let (list, at) = meters?;
        Ok(Some(list.iter().map(|m| GridMeter::new(i, Arc::new(m.clone()), at)).collect()))
    }

    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn grid_meter(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<GridMeter>> {
        let i = self.data.installation_id;
        let r = read::Meter { installation_id: i, meter_id: resource_id(&id, "gridMeterId")? };
        let (meter, at) = load(ctx, r).await?;
        Ok(Some(GridMeter::new(i, meter, at)))
    }

    /// The owner and installers of the installation.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn users(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<InstallationUser>>> {
        let r = read::Users { installation_id: self.data.installation_id };
        let (list, _) = load(ctx, r).await?;
        Ok(Some(list.iter().cloned().map(InstallationUser::from).collect()))
    }

    /// Pending installer invitations.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn invitations(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<Invitation>>> {
        let r = read::Invitations { installation_id: self.data.installation_id };
        let (list, _) = load(ctx, r).await?;
        Ok(Some(list.iter().cloned().map(Invitation::from).collect()))
    }

    /// The caller's notification subscriptions on this installation.
    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn event_subscriptions(&self, ctx: &Context<'_>) -> AppResult<Option<Vec<EventSubscription>>> {
        let r = read::EventSubscriptions { installation_id: self.data.installation_id };
        let (list, _) = load(ctx, r).await?;
        Ok(Some(list.iter().cloned().map(EventSubscription::from).collect()))
    }

    #[graphql(complexity = "UPSTREAM_READ + child_complexity")]
    async fn event_subscription(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<EventSubscription>> {
        let id = resource_id(&id, "eventSubscriptionId")?;
        let r = read::EventSubscription { installation_id: self.data.installation_id, id };
        let (sub, _) = load(ctx, r).await?;
        Ok(Some(EventSubscription::from((*sub).clone())))
    }

    /// Totals of the sessions that started between `from` and `to`: in all, per station and per
    /// calendar month, each with its energy and cost per tariff. The same sessions and figures as
    /// each station's `sessions`; ranges as for `values`. See docs/sessions.md.
    #[graphql(complexity = "10 * UPSTREAM_READ + child_complexity")]
    async fn charging_report(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Option<ChargingReport>> {
        super::history::range(from, to, None)?;
        let i = self.data.installation_id;
        let look = ctx.look_ahead();
        let by_tariff = look.field("total").field("byTariff").exists()
            || look.field("stations").field("totals").field("byTariff").exists()
            || look.field("months").field("totals").field("byTariff").exists();
        let (stations, owner, currency) = futures::join!(
            load(ctx, read::Stations { installation_id: i }),
            sessions::is_owner(ctx, i),
            sessions::currency(ctx, i)
        );
        let (stations, owner, currency) = (stations?.0, owner?, currency?);
        let mut all = Vec::new();
        let mut per_station = Vec::new();
        // One station after another: each is one log listing (and two measure reads for
        // `byTariff`), and a report is rare enough not to need them at once.
        for s in stations.iter() {
            let device = Device::Station { installation_id: i, station_id: s.id.clone() };
            let current = s.properties.current_session.as_ref();
            let join = Join { device, current, owner, currency: currency.clone(), by_tariff };
            let list = sessions::sessions(ctx, &join, from, to).await?;
            per_station.push(StationReport {
                charging_station_id: ID(s.id.clone()),
                friendly_name: s.properties.friendly_name.clone(),
                totals: ChargingTotals::of(&list, owner),
            });
            all.extend(list);
        }
        Ok(Some(ChargingReport {
            from,
            to,
            currency,
            total: ChargingTotals::of(&all, owner),
            stations: per_station,
            months: sessions::months(from, to, &all, owner),
        }))
    }
}

/// A user of an installation: its owner or an installer it is shared with.
#[derive(SimpleObject)]
pub(crate) struct InstallationUser {
    pub account_id: ID,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub authorization_groups: Vec<String>,
    pub role: UserRole,
    pub role_raw: Option<String>,
    /// `false` for an installer the owner disabled.
    pub enabled: bool,
}

impl From<sharing::User> for InstallationUser {
    fn from(u: sharing::User) -> Self {
        InstallationUser {
            account_id: ID(u.account_id),
            first_name: u.account_first_name,
            last_name: u.account_last_name,
            email: u.account_email,
            authorization_groups: u.authorization_groups,
            role: u.role_code.as_deref().map(UserRole::from_upstream).unwrap_or(UserRole::Unknown),
            role_raw: u.role_code,
            enabled: u.enabled.unwrap_or(true),
        }
    }
}

/// A pending invitation of an installer.
#[derive(SimpleObject, Clone)]
pub(crate) struct Invitation {
    pub email: String,
    pub installation_name: Option<String>,
    pub installation_id: Option<ID>,
    pub expiration_date: Option<DateTime<Utc>>,
}

impl From<sharing::Invitation> for Invitation {
    fn from(i: sharing::Invitation) -> Self {
        Invitation {
            expiration_date: parse_time(i.expiration_date.as_deref()),
            email: i.email,
            installation_name: i.installation_name,
            installation_id: i.installation_id.map(|id| ID(id.to_string())),
        }
    }
}

#[derive(SimpleObject, Default, Clone)]
pub(crate) struct SubjectFilter {
    pub subject_begins_with: Option<String>,
    pub subject_ends_with: Option<String>,
}

/// A webhook subscribed to an installation's notifications.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub(crate) struct EventSubscription {
    pub id: ID,
    pub installation_id: Option<ID>,
    pub user_id: Option<String>,
    pub protocol_code: Option<String>,
    #[graphql(skip)]
    pub protocol_data: Option<String>,
    pub event_type: Option<String>,
    pub filter: SubjectFilter,
    pub state: Option<String>,
    #[graphql(skip)]
    pub creation_raw: Option<String>,
    #[graphql(skip)]
    pub modification_raw: Option<String>,
}

#[ComplexObject]
impl EventSubscription {
    /// The webhook URL. witty-bff's own show `<hidden>` in place of their key: whoever knows it
    /// can deliver events for the installation.
    async fn protocol_data(&self, ctx: &Context<'_>) -> AppResult<Option<String>> {
        let svc = super::mutations::services(ctx)?;
        Ok(self.protocol_data.as_deref().map(|url| svc.live.redact_webhook_url(url)))
    }
    async fn creation_date(&self) -> Option<DateTime<Utc>> {
        parse_time(self.creation_raw.as_deref())
    }
    /// `null` when never modified (the upstream's `0001-01-01T00:00:00Z`).
    async fn modification_date(&self) -> Option<DateTime<Utc>> {
        parse_time(self.modification_raw.as_deref())
    }
}

impl From<notifications::EventSubscription> for EventSubscription {
    fn from(s: notifications::EventSubscription) -> Self {
        let filter = s.filter.unwrap_or_default();
        EventSubscription {
            id: ID(s.event_subscription_id),
            installation_id: s.installation_id.map(|i| ID(i.to_string())),
            user_id: s.user_id,
            protocol_code: s.protocol_code,
            protocol_data: s.protocol_data,
            event_type: s.event_type,
            filter: SubjectFilter {
                subject_begins_with: filter.subject_begins_with,
                subject_ends_with: filter.subject_ends_with,
            },
            state: s.state,
            creation_raw: s.creation_date,
            modification_raw: s.modification_date,
        }
    }
}
