//! The typed REST client of the Witty-Home API: one file per resource with its wire types and
//! methods, one private send path in [`client`], one [`UpstreamError`], one tolerant reader of
//! answers in [`tolerant`] (a member of an unexpected type reads as absent, ids stay required).
//! It knows nothing of GraphQL, axum or caching.

mod client;
pub mod error;
pub mod history;
pub mod installations;
pub mod meters;
pub mod notifications;
pub mod quirks;
pub mod sharing;
pub mod stations;
pub mod tolerant;

pub use client::{Kind, UpstreamClient, UpstreamConfig};
pub use error::UpstreamError;
