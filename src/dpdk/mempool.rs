use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys::rte_mempool;

use super::{DpdkError, Eal, Mbuf};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`). Cloning shares the pool.
///
/// The pool is freed when the last clone is dropped and no mbuf is out; if
/// mbufs are still out it is left to EAL cleanup rather than freed under them.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ptr: NonNull<rte_mempool>,
    name: String,
    _eal: Eal,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe.
unsafe impl Send for PoolInner {}
// SAFETY: as above; every method takes &self and DPDK synchronises internally.
unsafe impl Sync for PoolInner {}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: the pool is valid; freeing it only when no mbuf is out means
        // no live Mbuf points into it.
        unsafe {
            if dpdk_sys::rte_mempool_in_use_count(self.ptr.as_ptr()) == 0 {
                dpdk_sys::rte_mempool_free(self.ptr.as_ptr());
            }
        }
    }
}

impl Mempool {
    /// Creates a pool of `size` mbufs with a per-lcore cache and the default
    /// data room (2048 bytes + headroom), on NUMA socket `socket` (-1: any).
    pub fn new(eal: &Eal, name: &str, size: u32, cache: u32, socket: i32) -> Result<Mempool, DpdkError> {
        Self::with_data_room(eal, name, size, cache, dpdk_sys::consts::mbuf_default_buf_size() as u16, socket)
    }

    /// As [`Mempool::new`] with an explicit data room per mbuf (headroom included).
    pub fn with_data_room(
        eal: &Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let op = || format!("rte_pktmbuf_pool_create({name}, {size} mbufs)");
        let cname = CString::new(name).map_err(|_| DpdkError::invalid(op(), "name contains NUL"))?;
        // SAFETY: EAL is initialised (we hold `eal`); the name is a valid C string.
        let p =
            unsafe { dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket) };
        let ptr = NonNull::new(p).ok_or_else(|| DpdkError::from_errno(op()))?;
        Ok(Mempool { inner: Arc::new(PoolInner { ptr, name: name.to_owned(), _eal: eal.clone() }) })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Allocates one mbuf, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-null result is a fresh owned mbuf.
        let p = unsafe { dpdk_sys::l4lb_pktmbuf_alloc(self.inner.ptr.as_ptr()) };
        // SAFETY: fresh single-segment mbuf, owned by us.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Mbufs currently allocated (in use anywhere, including device rings and caches).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.inner.ptr.as_ptr()) }
    }

    /// Mbufs free in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut rte_mempool {
        self.inner.ptr.as_ptr()
    }
}
