//! Safe layer over DPDK. This module and `dpdk-sys` hold all of l4lb's `unsafe`;
//! every block says which invariant it relies on.
//!
//! Lifetimes: an [`Eal`] handle is shared by everything created from it
//! (mempools, ports), so EAL is cleaned up only after the last of them is
//! dropped. Queues borrow their [`Port`], and [`lcore::scope`] joins every
//! launched lcore before it returns, so workers may borrow queues and state.

//!
//! Everything that needs DPDK is behind the default `dpdk` cargo feature; the
//! CPU helpers below (time-stamp counter, prefetch, huge-page advice, signal
//! mask) are plain x86_64 and libc and build without it.
#![allow(unsafe_code)]

#[cfg(feature = "dpdk")]
mod capture;
#[cfg(feature = "dpdk")]
mod eal;
#[cfg(feature = "dpdk")]
mod error;
#[cfg(feature = "dpdk")]
pub mod lcore;
#[cfg(feature = "dpdk")]
mod mbuf;
#[cfg(feature = "dpdk")]
mod mempool;
#[cfg(feature = "dpdk")]
mod port;
#[cfg(feature = "dpdk")]
mod queue;

pub use crate::balancer::limits::{BURST_MAX, TX_BUFFER_CAPACITY};
#[cfg(feature = "dpdk")]
pub use capture::PacketCapture;
#[cfg(feature = "dpdk")]
pub use eal::Eal;
#[cfg(feature = "dpdk")]
pub use error::DpdkError;
#[cfg(feature = "dpdk")]
pub use lcore::{pin_current_thread, LaunchScope, Lcore};
#[cfg(feature = "dpdk")]
pub use mbuf::{Burst, Drain, Mbuf};
#[cfg(feature = "dpdk")]
pub use mempool::Mempool;
#[cfg(feature = "dpdk")]
pub use port::{Link, Port, PortConfig, PortInfo, PortStats};
#[cfg(feature = "dpdk")]
pub use queue::{RxQueue, TxQueue, TxStats};

/// Reads the CPU's time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC only reads the time-stamp counter; it has no preconditions.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(all(not(target_arch = "x86_64"), feature = "dpdk"))]
    // SAFETY: rte_rdtsc only reads the time-stamp counter; it has no preconditions.
    unsafe {
        dpdk_sys::l4lb_rdtsc()
    }
    #[cfg(all(not(target_arch = "x86_64"), not(feature = "dpdk")))]
    {
        // Nanoseconds since the first call: a monotonic counter for the
        // simulations and tools that build without DPDK elsewhere.
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// Hints the CPU to pull `p`'s cache line into all cache levels.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    prefetch_ptr(p as *const T as *const u8)
}

/// As [`prefetch`] for a raw address (inlined: on x86_64 one PREFETCHT0,
/// not a call into the C shim).
#[inline(always)]
pub(crate) fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults, whatever the address,
    // and SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(all(not(target_arch = "x86_64"), feature = "dpdk"))]
    // SAFETY: a prefetch is only a hint and never faults.
    unsafe {
        dpdk_sys::l4lb_prefetch0(p as *const std::ffi::c_void)
    }
    #[cfg(all(not(target_arch = "x86_64"), not(feature = "dpdk")))]
    let _ = p;
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

/// Asks the kernel to back `len` bytes at `addr` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), for big tables that every packet reads at
/// random (the flow table): one TLB entry per 2 MiB instead of per 4 KiB.
/// Only whole 2 MiB pages inside the range are advised; call it before the
/// memory is first touched. Returns whether the kernel took the advice.
pub fn advise_hugepages(addr: usize, len: usize) -> bool {
    const HUGE: usize = 2 << 20;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) & !(HUGE - 1);
    if end <= start {
        return false;
    }
    // SAFETY: madvise only changes how the kernel backs these pages, never
    // their contents or mapping; the range lies inside the caller's live
    // allocation (rounded inwards to whole huge pages).
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
}

/// Blocks SIGIO in the calling thread and in every thread it spawns from now
/// on. DPDK's TAP driver uses process-directed SIGIO to tell its RX queues
/// that packets are waiting; the EAL worker lcores (started earlier, SIGIO
/// open) take it. A management-side thread that received it would see its
/// blocking socket calls with timeouts fail with EINTR.
pub fn block_driver_signals() -> bool {
    // SAFETY: the sigset is initialised by sigemptyset before use, and
    // pthread_sigmask only changes this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGIO);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hugepage_advice_covers_whole_huge_pages_only() {
        let mut v: Vec<u64> = Vec::with_capacity(4 << 20); // 32 MiB
        let addr = v.spare_capacity_mut().as_ptr() as usize;
        assert!(super::advise_hugepages(addr, 32 << 20), "this kernel refuses MADV_HUGEPAGE");
        assert!(!super::advise_hugepages(addr | 1, 4096), "less than one huge page: nothing to advise");
        v.resize(4 << 20, 7);
        assert!(v.iter().step_by(4096).all(|&x| x == 7), "advice never changes contents");
    }

    #[test]
    fn sigio_stays_blocked_in_spawned_threads() {
        let blocked = || {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let mask = status
                .lines()
                .find(|l| l.starts_with("SigBlk:"))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_owned();
            u64::from_str_radix(&mask, 16).unwrap() & (1 << (libc::SIGIO - 1)) != 0
        };
        std::thread::spawn(move || {
            assert!(!blocked());
            assert!(super::block_driver_signals());
            assert!(blocked());
            assert!(std::thread::spawn(blocked).join().unwrap(), "inherited by threads spawned later");
        })
        .join()
        .unwrap();
    }
}
