use std::ffi::CStr;

/// A DPDK call that failed, with DPDK's own description of the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {reason} (error {code})")]
pub struct DpdkError {
    /// What l4lb was doing, e.g. `rte_eth_dev_configure(port 0)`.
    pub op: String,
    /// The positive errno value.
    pub code: i32,
    /// `rte_strerror(code)`, or l4lb's own reason for checks made in Rust.
    pub reason: String,
}

impl DpdkError {
    /// An error from a DPDK return value or `rte_errno` (sign is ignored).
    pub fn from_code(op: impl Into<String>, code: i32) -> Self {
        let code = code.abs();
        // SAFETY: rte_strerror accepts any value and returns a pointer to a
        // NUL-terminated string in static or per-thread storage.
        let reason = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(code)) }.to_string_lossy().into_owned();
        DpdkError { op: op.into(), code, reason }
    }

    /// An error built from the thread's `rte_errno`.
    pub fn from_errno(op: impl Into<String>) -> Self {
        // SAFETY: reading the per-lcore rte_errno has no preconditions.
        let code = unsafe { dpdk_sys::l4lb_errno() };
        Self::from_code(op, code)
    }

    /// A failed precondition checked in Rust before calling DPDK.
    pub fn invalid(op: impl Into<String>, reason: impl Into<String>) -> Self {
        DpdkError { op: op.into(), code: libc::EINVAL, reason: reason.into() }
    }

    /// Turns a DPDK `int` return (negative errno on failure) into a result.
    pub(crate) fn check(op: impl FnOnce() -> String, ret: i32) -> Result<i32, DpdkError> {
        if ret < 0 {
            Err(Self::from_code(op(), ret))
        } else {
            Ok(ret)
        }
    }
}
