//! The one integration-test binary: everything runs over real HTTP on loopback ports.

mod helpers;
mod simulator;
