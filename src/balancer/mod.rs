//! Pure balancing: flow keys and the fixed hash, Maglev tables, the per-worker
//! flow table, schedulers and the immutable forwarding state workers read.
#![forbid(unsafe_code)]

pub mod access;
pub mod flow;
pub mod flowtable;
pub mod fragments;
pub mod hash;
pub mod limits;
pub mod maglev;
pub mod persist;
pub mod rss;
pub mod state;
pub mod synced;

/// A cache hint the data path gives before it touches memory. Pure code stays
/// free of `unsafe`: the DPDK worker passes a real prefetch, tests pass
/// [`NoPrefetch`].
pub trait Prefetch {
    fn prefetch<T>(&self, r: &T);
}

/// A [`Prefetch`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPrefetch;

impl Prefetch for NoPrefetch {
    #[inline(always)]
    fn prefetch<T>(&self, _: &T) {}
}
