//! The one integration-test binary: everything runs over real HTTP on loopback ports.

mod auth_tokens;
mod graph_access;
mod graph_corrections;
mod graph_drift;
mod graph_input;
mod graph_live;
mod graph_mutations;
mod graph_read;
mod graph_shape;
mod graph_shared;
mod graph_tokens;
mod graph_webhooks;
mod hardening;
mod helpers;
mod hygiene;
mod sim_access;
mod sim_invalid_input;
mod sim_measures_logs;
mod sim_meters_tariffs;
mod sim_platform;
mod sim_sharing;
mod sim_stations;
mod sim_webhooks;
mod simulator;
mod webhook_load;
mod ws_protocol;
