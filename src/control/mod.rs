//! Management side: configuration (and, later, health checks, API, metrics).
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod health;
pub mod lcores;
pub mod metrics;
#[cfg(feature = "dpdk")]
pub mod mgmt;
pub mod neighbour;
pub mod registry;
pub mod state_build;
