//! l4lb: a userspace L4 load balancer on DPDK.
//!
//! Only [`dpdk`] contains `unsafe` code; every other module is safe Rust
//! (`unsafe_code` is denied crate-wide in Cargo.toml's `[lints]`; `dpdk`
//! allows it for itself, each block with a `// SAFETY:` line).

#[cfg(feature = "dpdk")]
pub mod app;
pub mod balancer;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod dpdk;
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod net;
pub mod pcap;
#[cfg(feature = "dpdk")]
pub mod replay;
pub mod simulate;
pub mod trafficgen;
