//! Safe layer over DPDK. This module and `dpdk-sys` hold all of l4lb's `unsafe`;
//! every block says which invariant it relies on.
//!
//! Lifetimes: an [`Eal`] handle is shared by everything created from it
//! (mempools, ports), so EAL is cleaned up only after the last of them is
//! dropped. Queues borrow their [`Port`], and [`lcore::scope`] joins every
//! launched lcore before it returns, so workers may borrow queues and state.

mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod port;
mod queue;

pub use eal::{Eal, PacketCapture};
pub use error::DpdkError;
pub use lcore::{LaunchScope, Lcore};
pub use mbuf::{Burst, Drain, Mbuf, BURST_MAX};
pub use mempool::Mempool;
pub use port::{Link, Port, PortConfig, PortInfo, PortStats};
pub use queue::{RxQueue, TxQueue, TxStats, TX_BUFFER_CAPACITY};

/// Reads the CPU's time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: rte_rdtsc only reads the TSC register; it has no preconditions.
    unsafe { dpdk_sys::l4lb_rdtsc() }
}

/// Hints the CPU to pull `p`'s cache line into all cache levels.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults, and SSE is part of the
    // x86_64 baseline; the address comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const T as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: a prefetch is only a hint; the address comes from a live reference.
    unsafe {
        dpdk_sys::l4lb_prefetch0(p as *const T as *const std::ffi::c_void)
    }
}

/// The CPU prefetch for the pure balancing code (which has no `unsafe`).
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuPrefetch;

impl crate::balancer::Prefetch for CpuPrefetch {
    #[inline(always)]
    fn prefetch<T>(&self, r: &T) {
        prefetch(r)
    }
}
