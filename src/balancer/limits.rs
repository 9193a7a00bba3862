//! Sizes fixed at build time that configuration is validated against.

/// The largest burst l4lb moves at once (RX burst size is configured up to this).
pub const BURST_MAX: usize = 64;
/// How many packets a worker's TX queue holds when the device does not take them.
pub const TX_BUFFER_CAPACITY: usize = 512;

/// Backend ids per worker for active-flow counts.
pub const MAX_BACKEND_IDS: usize = 1 << 16;
/// Services per worker for scheduler state.
pub const MAX_SERVICES: usize = 4096;
