//! `createInstallation`.

use async_graphql::{Context, InputObject, Object};

use super::{Doubt, services, text};
use crate::cache::Resource;
use crate::graphql::context::caller;
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::installations::Installation;
use crate::upstream::installations::{GpsCoordinates, NewInstallation};

#[derive(InputObject, Debug)]
pub struct LocationInput {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(InputObject, Debug)]
pub struct CreateInstallationInput {
    pub name: String,
    /// The town or place, e.g. "Bordeaux".
    pub location_name: String,
    pub location: LocationInput,
}

/// What a `createInstallation` the upstream did not confirm may have done.
const CREATED: Doubt = Doubt { what: "the new installation", done: "created", check: "your installations" };

#[derive(Default)]
pub struct InstallationMutation;

#[Object]
impl InstallationMutation {
    /// Creates an installation owned by the caller.
    async fn create_installation(
        &self,
        ctx: &Context<'_>,
        input: CreateInstallationInput,
        idempotency_key: Option<String>,
    ) -> AppResult<Installation> {
        let name = text("input.name", &input.name, 100)?;
        let location_name = text("input.locationName", &input.location_name, 100)?;
        let (lat, lon) = (input.location.latitude, input.location.longitude);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(AppError::bad_input(format!("input.location.latitude must be between -90 and 90, got {lat}")));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(AppError::bad_input(format!(
                "input.location.longitude must be between -180 and 180, got {lon}"
            )));
        }
        let new = NewInstallation {
            name,
            location_name,
            location_gps_coordinates: GpsCoordinates { latitude: lat, longitude: lon },
        };
        let fingerprint = format!("{new:?}");
        let svc = services(ctx)?;
        svc.idempotency
            .once(ctx, idempotency_key, fingerprint, CREATED, |sent| async move {
                let me = caller(ctx)?;
                let created = sent.send(svc.cache.client().create_installation(me.token(), &new)).await?;
                let sub = me.sub.clone();
                svc.cache.invalidate_caller_resource(&sub, |r| matches!(r, Resource::Installations));
                Ok(Installation::from(created))
            })
            .await
    }
}
