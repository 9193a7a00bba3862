//! Sizes fixed at build time that configuration is validated against.

/// Backend ids per worker for active-flow counts.
pub const MAX_BACKEND_IDS: usize = 1 << 16;
/// Services per worker for scheduler state.
pub const MAX_SERVICES: usize = 4096;
