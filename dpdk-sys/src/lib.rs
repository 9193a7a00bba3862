//! Raw bindings to the system DPDK (found with pkg-config, >= 22.11) and to the
//! `l4lb_*` C shim that exposes DPDK's static-inline functions and macros.
//!
//! Everything here is `unsafe` to call; the safe layer is `l4lb::dpdk`.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]
#![allow(rustdoc::all)]

/// bindgen's output, exempt from the crate's lints on hand-written unsafe
/// code (its accessors are unsafe fns with unsafe operations inside).
#[allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
pub use bindings::*;

/// Safe readers of the shim's constants (DPDK macros bindgen cannot evaluate).
pub mod consts {
    macro_rules! shim_const {
        ($($name:ident: $ty:ty => $sym:ident;)*) => {$(
            #[inline(always)]
            pub fn $name() -> $ty {
                // SAFETY: the symbol is an immutable `const` object defined in shim.c.
                unsafe { super::$sym }
            }
        )*};
    }
    shim_const! {
        eth_rss_ip: u64 => l4lb_eth_rss_ip;
        eth_rss_tcp: u64 => l4lb_eth_rss_tcp;
        eth_rss_udp: u64 => l4lb_eth_rss_udp;
        eth_mq_rx_rss: u64 => l4lb_eth_mq_rx_rss;
        eth_mq_rx_none: u64 => l4lb_eth_mq_rx_none;
        eth_tx_offload_mbuf_fast_free: u64 => l4lb_eth_tx_offload_mbuf_fast_free;
        eth_tx_offload_ipv4_cksum: u64 => l4lb_eth_tx_offload_ipv4_cksum;
        eth_rx_offload_checksum: u64 => l4lb_eth_rx_offload_checksum;
        mbuf_f_rx_rss_hash: u64 => l4lb_mbuf_f_rx_rss_hash;
        max_lcore: u32 => l4lb_max_lcore;
        mbuf_default_buf_size: u32 => l4lb_mbuf_default_buf_size;
        pktmbuf_headroom: u32 => l4lb_pktmbuf_headroom_default;
    }
}
