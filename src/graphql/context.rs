//! What resolvers read from the request: the caller and the per-request loader.

use std::any::Any;
use std::sync::Arc;

use async_graphql::Context;
use chrono::{DateTime, Utc};

use super::error::{AppError, AppResult};
use crate::auth::{AuthError, Caller};
use crate::cache::{Loaded, Loaders, ReadError, Resource};

/// The outcome of checking the request's credentials, put in the request data by the transport.
#[derive(Clone, Debug)]
pub struct Identity(pub Result<Caller, AuthError>);

/// The verified caller, or `UNAUTHENTICATED` saying what is wrong with the credentials.
pub fn caller<'a>(ctx: &Context<'a>) -> AppResult<&'a Caller> {
    match ctx.data_opt::<Identity>() {
        Some(Identity(Ok(caller))) => Ok(caller),
        Some(Identity(Err(e))) => Err(e.clone().into()),
        None => Err(AuthError::Missing.into()),
    }
}

/// Loads a resource for the caller and returns it as `T` with the time it was fetched.
pub async fn load<T: Any + Send + Sync>(ctx: &Context<'_>, resource: Resource) -> AppResult<(Arc<T>, DateTime<Utc>)> {
    caller(ctx)?;
    let loaders = ctx.data::<Arc<Loaders>>().map_err(|_| AppError::internal("no loaders in the request"))?;
    let loaded = match loaders.load_one(resource).await {
        Ok(Some(result)) => result.map_err(read_error)?,
        Ok(None) => return Err(AppError::internal("the loader returned nothing")),
        Err(never) => match never {},
    };
    Ok((typed(&loaded)?, loaded.fetched_at))
}

/// What the client is told of a read that failed: the upstream's error, or the request's budget
/// of upstream reads spent (the query fans out too far: fewer at a time).
fn read_error(e: ReadError) -> AppError {
    match e {
        ReadError::Upstream(e) => e.into(),
        ReadError::OverBudget { budget } => AppError::QueryTooComplex(format!(
            "this query needs more than {budget} reads of the Witty-Home service; split it into smaller queries \
             (fewer installations or stations at a time)"
        )),
    }
}

/// A loaded resource as the type its fetch produced.
pub fn typed<T: Any + Send + Sync>(loaded: &Loaded) -> AppResult<Arc<T>> {
    loaded.get::<T>().ok_or_else(|| AppError::internal("a loaded resource has an unexpected type"))
}
