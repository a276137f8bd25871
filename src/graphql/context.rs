//! What resolvers read from the request: the caller and the per-request loader.

use std::sync::Arc;

use async_graphql::Context;
use chrono::{DateTime, Utc};

use super::error::{AppError, AppResult};
use crate::auth::{AuthError, Caller};
use crate::cache::{Loaders, MISMATCH, Read, ReadError};

/// The outcome of checking the request's credentials, put in the request data by the transport.
#[derive(Clone, Debug)]
pub(crate) struct Identity(pub Result<Caller, AuthError>);

/// The verified caller, or `UNAUTHENTICATED` saying what is wrong with the credentials.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> AppResult<&'a Caller> {
    match ctx.data_opt::<Identity>() {
        Some(Identity(Ok(caller))) => Ok(caller),
        Some(Identity(Err(e))) => Err(e.clone().into()),
        None => Err(AuthError::Missing.into()),
    }
}

/// Loads the resource `key` names for the caller, through the request's loader: its value, of
/// the key's type, and when it was fetched. `load(ctx, read::Users { installation_id })` gives an
/// `Arc<Vec<User>>`.
pub(crate) async fn load<K: Read>(ctx: &Context<'_>, key: K) -> AppResult<(Arc<K::Value>, DateTime<Utc>)> {
    caller(ctx)?;
    let loaders = ctx.data::<Arc<Loaders>>().map_err(|_| AppError::internal("no loaders in the request"))?;
    let loaded = match loaders.load_one(key.into()).await {
        Ok(Some(result)) => result.map_err(read_error)?,
        Ok(None) => return Err(AppError::internal("the loader returned nothing")),
        Err(never) => match never {},
    };
    loaded.of::<K>().ok_or_else(|| AppError::internal(MISMATCH))
}

/// The value being resolved is right only until `when` (it moves with the clock): an answer
/// holding it is not served again after then.
pub(crate) fn valid_until(ctx: &Context<'_>, when: DateTime<Utc>) {
    if let Some(reads) = ctx.data_opt::<Arc<Loaders>>().and_then(|l| l.loader().reads()) {
        reads.valid_until(when);
    }
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
