//! The per-packet side: worker poll loops over DPDK queues.
#![forbid(unsafe_code)]

#[cfg(feature = "dpdk")]
pub mod balance;
#[cfg(feature = "dpdk")]
pub mod exception;
#[cfg(feature = "dpdk")]
pub mod forward;
#[cfg(feature = "dpdk")]
pub mod mailbox;
pub mod packet;
pub mod pipeline;
pub mod poll;
pub mod punt;
pub mod telemetry;
pub mod testframes;
