use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::lcore::Lcore;
use super::DpdkError;

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// The DPDK environment of this process. Initialised once per process
/// (DPDK cannot initialise twice, even after cleanup); cleaned up when the last
/// clone — including those held by mempools and ports — is dropped.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    tsc_hz: u64,
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: every object built on EAL holds a clone of `Eal`, so none is
        // alive now; lcores are joined before rte_eal_cleanup releases memory.
        unsafe {
            dpdk_sys::rte_eal_mp_wait_lcore();
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

impl Eal {
    /// Initialises EAL from an argument list (without a program name, which is
    /// added), e.g. `["--no-pci", "--vdev", "net_ring0", "--lcores", "0@0"]`.
    pub fn init<I, S>(args: I) -> Result<Eal, DpdkError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::invalid(
                "rte_eal_init",
                "EAL was already initialised in this process (DPDK allows one init per process)",
            ));
        }
        let mut owned = vec![CString::new("l4lb").expect("no NUL")];
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| {
                DpdkError::invalid("rte_eal_init", format!("argument {a:?} contains a NUL byte"))
            })?);
        }
        // EAL may keep pointers into argv (device arguments, for one), so the
        // strings live for the rest of the process.
        let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut c_char] =
            Box::leak(owned.iter().map(|s| s.as_ptr() as *mut c_char).collect::<Vec<_>>().into_boxed_slice());
        // SAFETY: argv holds argc valid NUL-terminated strings that are never
        // freed; EAL_STARTED guarantees this is the only call in the process.
        let ret = unsafe { dpdk_sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            let err = DpdkError::from_errno("rte_eal_init");
            return Err(err);
        }
        // SAFETY: EAL is initialised.
        let tsc_hz = unsafe { dpdk_sys::rte_get_tsc_hz() };
        Ok(Eal { inner: Arc::new(EalInner { tsc_hz }) })
    }

    /// Time-stamp counter ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.inner.tsc_hz
    }

    /// Converts microseconds to TSC ticks.
    pub fn us_to_tsc(&self, us: u64) -> u64 {
        self.inner.tsc_hz / 1_000_000 * us
    }

    /// The lcore running the management side (EAL's main lcore).
    pub fn main_lcore(&self) -> Lcore {
        // SAFETY: EAL is initialised.
        Lcore::new(unsafe { dpdk_sys::rte_get_main_lcore() })
    }

    /// Every enabled lcore except the main one, in id order.
    pub fn worker_lcores(&self) -> Vec<Lcore> {
        let mut out = Vec::new();
        let mut id = u32::MAX; // rte_get_next_lcore(-1, ...) starts from the first
        loop {
            // SAFETY: EAL is initialised; the call only reads the lcore config.
            id = unsafe { dpdk_sys::rte_get_next_lcore(id, 1, 0) };
            if id >= dpdk_sys::RTE_MAX_LCORE {
                return out;
            }
            out.push(Lcore::new(id));
        }
    }

    /// Number of ethdev ports EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// Whether EAL runs on hugepages (false with `--no-huge`).
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_eal_has_hugepages() != 0 }
    }
}
