//! Sizes fixed at build time that configuration is validated against.

/// The largest burst l4lb moves at once (RX burst size is configured up to this).
pub const BURST_MAX: usize = 64;
/// How many packets a worker's TX queue holds when the device does not take them.
pub const TX_BUFFER_CAPACITY: usize = 512;

/// Backend ids per worker for active-flow counts and per-backend counters
/// (96 bytes each per worker): room for 1,000 services of 100 backends and
/// the ids later reloads give new ones.
pub const MAX_BACKEND_IDS: usize = 1 << 17;
/// Services per worker for scheduler state.
pub const MAX_SERVICES: usize = 4096;
