//! The typed REST client of the Witty-Home API: one file per resource with its wire types and
//! methods, one private send path in [`client`], one [`UpstreamError`], one tolerant reader of
//! answers in [`tolerant`] (a member of an unexpected type reads as absent, ids stay required).
//! It knows nothing of GraphQL, axum or caching.

mod client;
pub(crate) mod error;
pub(crate) mod history;
pub(crate) mod installations;
pub(crate) mod meters;
pub(crate) mod notifications;
pub(crate) mod quirks;
pub(crate) mod sharing;
pub(crate) mod stations;
pub(crate) mod tolerant;

pub(crate) use client::{UpstreamClient, UpstreamConfig};
pub(crate) use error::UpstreamError;
