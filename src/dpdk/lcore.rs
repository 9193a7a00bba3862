//! Launching work on EAL lcores. EAL pins each lcore's thread to the CPU set
//! given by `--lcores`/`-l`; [`scope`] runs closures there and joins them all
//! before it returns, so the closures may borrow from the caller.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use super::{DpdkError, Eal};

/// An EAL logical core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lcore(u32);

impl Lcore {
    pub(crate) fn new(id: u32) -> Self {
        Lcore(id)
    }

    pub fn id(self) -> u32 {
        self.0
    }

    /// The CPU this lcore is pinned to (the first of its set), if any.
    pub fn cpu(self) -> Option<u32> {
        // SAFETY: any lcore id is accepted; unknown ids return -1.
        let cpu = unsafe { dpdk_sys::rte_lcore_to_cpu_id(self.0 as c_int) };
        u32::try_from(cpu).ok()
    }

    /// NUMA socket of this lcore.
    pub fn socket(self) -> u32 {
        // SAFETY: any lcore id is accepted.
        unsafe { dpdk_sys::rte_lcore_to_socket_id(self.0) }
    }

    /// The lcore the calling thread runs on, or `None` on a non-EAL thread.
    pub fn current() -> Option<Lcore> {
        // SAFETY: reads a thread-local set by EAL.
        let id = unsafe { dpdk_sys::l4lb_lcore_id() };
        (id < dpdk_sys::RTE_MAX_LCORE).then_some(Lcore(id))
    }
}

/// Pins the calling thread to one CPU. Called before [`Eal::init`] it keeps
/// EAL's control threads (interrupts, multi-process, telemetry) there too:
/// EAL gives them the CPUs of the initial thread's affinity that no lcore
/// uses, and the main lcore's CPU when none is left. Without it a process
/// whose only lcore is CPU 0 puts them on every other CPU, among them the
/// one another program's worker busy-polls.
pub fn pin_current_thread(cpu: u32) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain bits, so all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu as usize >= bits {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("CPU {cpu}: at most {}", bits - 1),
        ));
    }
    // SAFETY: the index was checked against the set's size above.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Each launched lcore with its job's return code or failure.
pub type Joined = Vec<(Lcore, Result<i32, LcoreError>)>;

type Job<'env> = Box<dyn FnOnce() -> i32 + Send + 'env>;

/// Result slot the trampoline writes on the lcore, read after the join.
struct Launched {
    lcore: Lcore,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    job: Mutex<Option<Job<'static>>>,
}

/// Handle given to [`scope`]'s closure for launching work on worker lcores.
pub struct LaunchScope<'env> {
    // Boxed on purpose: the lcore holds a raw pointer to its slot, which must
    // not move when the Vec grows.
    #[allow(clippy::vec_box)]
    launched: Mutex<Vec<Box<Launched>>>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// Why a scoped lcore did not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LcoreError {
    #[error("launch on lcore {lcore}: {source}")]
    Launch { lcore: u32, source: DpdkError },
    #[error("the job on lcore {lcore} panicked: {message}")]
    Panicked { lcore: u32, message: String },
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Launched> pointer passed by `launch`, which stays
    // alive until the scope joins this lcore.
    let slot = unsafe { &*(arg as *const Launched) };
    let job = slot.job.lock().map(|mut j| j.take()).ok().flatten();
    let Some(job) = job else { return -1 };
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(code) => code,
        Err(payload) => {
            if let Ok(mut p) = slot.panic.lock() {
                *p = Some(payload);
            }
            -1
        }
    }
}

impl<'env> LaunchScope<'env> {
    /// Runs `job` on `lcore` (a worker lcore that is idle). The job's return
    /// code is collected when the scope ends.
    pub fn launch<F>(&self, lcore: Lcore, job: F) -> Result<(), LcoreError>
    where
        F: FnOnce() -> i32 + Send + 'env,
    {
        let job: Job<'env> = Box::new(job);
        // SAFETY: the 'env bound is erased only for storage; `scope` joins every
        // launched lcore before returning (also when unwinding), so the job never
        // runs or is dropped after the data it borrows is gone.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'env>, Job<'static>>(job) };
        let slot = Box::new(Launched { lcore, panic: Mutex::new(None), job: Mutex::new(Some(job)) });
        let arg = &*slot as *const Launched as *mut c_void;
        // SAFETY: `trampoline` matches lcore_function_t; `arg` points into a Box
        // that `self.launched` keeps until the join.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore.id()) };
        if ret < 0 {
            return Err(LcoreError::Launch {
                lcore: lcore.id(),
                source: DpdkError::from_code(format!("rte_eal_remote_launch(lcore {})", lcore.id()), ret),
            });
        }
        self.launched.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
        Ok(())
    }

    fn join_all(&self) -> Joined {
        let slots = std::mem::take(&mut *self.launched.lock().unwrap_or_else(|e| e.into_inner()));
        slots
            .into_iter()
            .map(|slot| {
                // SAFETY: the lcore was launched by this scope; waiting has no
                // other precondition.
                let code = unsafe { dpdk_sys::rte_eal_wait_lcore(slot.lcore.id()) };
                let panic = slot.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
                let res = match panic {
                    Some(p) => {
                        Err(LcoreError::Panicked { lcore: slot.lcore.id(), message: panic_message(&p) })
                    }
                    None => Ok(code),
                };
                (slot.lcore, res)
            })
            .collect()
    }
}

impl Drop for LaunchScope<'_> {
    fn drop(&mut self) {
        // Reached with launched lcores only when the scope closure unwinds.
        self.join_all();
    }
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, which may launch borrowing jobs on worker lcores, then waits for
/// every launched lcore. Returns `f`'s value and each lcore's outcome.
pub fn scope<'env, R>(_eal: &Eal, f: impl FnOnce(&LaunchScope<'env>) -> R) -> (R, Joined) {
    let s = LaunchScope { launched: Mutex::new(Vec::new()), _env: PhantomData };
    let r = f(&s);
    let joined = s.join_all();
    (r, joined)
}
