//! `createInstallation`.

use async_graphql::{Context, InputObject, Object};

use super::call;
use crate::commands::installations::CREATE_INSTALLATION;
use crate::commands::{send, text};
use crate::graphql::error::{AppError, AppResult};
use crate::graphql::installations::Installation;
use crate::upstream::installations::{GpsCoordinates, NewInstallation};

#[derive(InputObject, Debug)]
pub(super) struct LocationInput {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(InputObject, Debug)]
pub(super) struct CreateInstallationInput {
    pub name: String,
    /// The town or place, e.g. "Bordeaux".
    pub location_name: String,
    pub location: LocationInput,
}

impl CreateInstallationInput {
    /// The upstream body, checked field by field.
    fn to_upstream(&self) -> AppResult<NewInstallation> {
        let name = text("input.name", &self.name, 100)?;
        let location_name = text("input.locationName", &self.location_name, 100)?;
        let (lat, lon) = (self.location.latitude, self.location.longitude);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(AppError::bad_input(format!("input.location.latitude must be between -90 and 90, got {lat}")));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(AppError::bad_input(format!(
                "input.location.longitude must be between -180 and 180, got {lon}"
            )));
        }
        let location_gps_coordinates = GpsCoordinates { latitude: lat, longitude: lon };
        Ok(NewInstallation { name, location_name, location_gps_coordinates })
    }
}

#[derive(Default)]
pub(super) struct InstallationMutation;

#[Object]
impl InstallationMutation {
    /// Creates an installation owned by the caller.
    async fn create_installation(
        &self,
        ctx: &Context<'_>,
        input: CreateInstallationInput,
        idempotency_key: Option<String>,
    ) -> AppResult<Installation> {
        let new = input.to_upstream()?;
        let (access, call, svc) = call(ctx, None, idempotency_key, format!("{new:?}"))?;
        let created = send(&access, call, svc, &CREATE_INSTALLATION, |client, token| async move {
            client.create_installation(token, &new).await
        })
        .await?;
        Ok(Installation::from(created))
    }
}
