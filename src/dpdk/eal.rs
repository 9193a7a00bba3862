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
    /// `--file-prefix` (None with `--in-memory` / `--no-shconf`: no files).
    file_prefix: Option<String>,
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: every object built on EAL holds a clone of `Eal`, so none is
        // alive now; lcores are joined before rte_eal_cleanup releases memory.
        unsafe {
            dpdk_sys::rte_eal_mp_wait_lcore();
            dpdk_sys::rte_eal_cleanup();
        }
        if let Some(prefix) = &self.file_prefix {
            remove_runtime_files(prefix);
        }
    }
}

/// Removes what a primary process with `prefix` leaves behind after
/// `rte_eal_cleanup`: hugepage files still linked in every hugetlbfs mount and
/// the runtime directory. Nothing maps them any more; leaving them would keep
/// hugepages reserved until the next start with the same prefix.
fn remove_runtime_files(prefix: &str) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let page_prefix = format!("{prefix}map_");
    for dir in mounts.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"hugetlbfs")).then(|| f.get(1).map(|d| d.to_string())).flatten()
    }) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&page_prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let run = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !is_root() => std::path::PathBuf::from(x).join("dpdk"),
        _ => std::path::PathBuf::from("/var/run/dpdk"),
    };
    let _ = std::fs::remove_dir_all(run.join(prefix));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Eal {
    /// Initialises EAL from an argument list (without a program name, which is
    /// added), e.g. `["--no-pci", "--vdev", "net_ring0", "--lcores", "0@0"]`.
    pub fn init<I, S>(args: I) -> Result<Eal, DpdkError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        // `--no-huge` alone still writes the runtime config files.
        let no_files = args.iter().any(|a| a == "--in-memory" || a == "--no-shconf");
        let file_prefix = if no_files {
            None
        } else {
            let named = args.iter().position(|a| a == "--file-prefix").and_then(|i| args.get(i + 1)).cloned();
            let inline = args.iter().find_map(|a| a.strip_prefix("--file-prefix=").map(str::to_owned));
            Some(named.or(inline).unwrap_or_else(|| "rte".to_owned()))
        };
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::invalid(
                "rte_eal_init",
                "EAL was already initialised in this process (DPDK allows one init per process)",
            ));
        }
        let mut owned = vec![CString::new("l4lb").expect("no NUL")];
        for a in &args {
            owned.push(CString::new(a.as_str()).map_err(|_| {
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
        Ok(Eal { inner: Arc::new(EalInner { tsc_hz, file_prefix }) })
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

    /// Whether secondary processes can attach: EAL keeps its runtime files
    /// (not `--in-memory` or `--no-shconf`) and runs on hugepages.
    pub fn has_shared_files(&self) -> bool {
        self.inner.file_prefix.is_some() && self.has_hugepages()
    }

    /// Whether EAL runs on hugepages (false with `--no-huge`).
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_eal_has_hugepages() != 0 }
    }
}
