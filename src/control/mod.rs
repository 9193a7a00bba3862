//! The management side: configuration, the backend registry, health checks,
//! neighbours, the control protocol and its servers, metrics, and the
//! management loop.
#![forbid(unsafe_code)]

pub mod api;
pub mod bird;
pub mod config;
pub mod health;
pub mod kernel;
pub mod lcores;
pub mod metrics;
#[cfg(feature = "dpdk")]
pub mod mgmt;
pub mod neighbour;
pub mod registry;
pub mod routing;
pub mod server;
pub mod state_build;
pub mod status_page;
pub mod statuses;
pub mod sync;
pub mod systemd;
