//! Owning packet buffers and fixed-size bursts of them.

use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

pub use crate::balancer::limits::BURST_MAX;

/// An owned packet buffer; freed back to its mempool on drop.
///
/// l4lb configures no scatter-gather, so a packet is one segment and
/// [`Mbuf::data`] is the whole packet. Must be dropped before its mempool.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an mbuf has exactly one owner; DPDK lets any thread free it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid, single-segment mbuf that nobody else owns.
    pub(crate) unsafe fn from_raw(ptr: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(ptr)
    }

    /// Gives up ownership (e.g. to a TX ring) without freeing.
    pub(crate) fn into_raw(self) -> *mut rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline(always)]
    fn raw(&self) -> &rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as `self` lives.
        unsafe { self.0.as_ref() }
    }

    #[inline(always)]
    fn raw_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: as in `raw`; `&mut self` makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// Packet bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer (DPDK invariant), and `&self` keeps it alive and unaliased.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Packet bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw();
        let (addr, off, len) = (m.buf_addr as *mut u8, m.data_off as usize, m.data_len as usize);
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(addr.add(off), len) }
    }

    /// Length of the packet in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.raw().data_len as usize
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free bytes in front of the packet.
    pub fn headroom(&self) -> usize {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::l4lb_pktmbuf_headroom(self.0.as_ptr()) as usize }
    }

    /// Free bytes after the packet.
    pub fn tailroom(&self) -> usize {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::l4lb_pktmbuf_tailroom(self.0.as_ptr()) as usize }
    }

    /// Grows the packet at the front by `n` bytes (uninitialised contents are
    /// the old headroom) and returns the whole packet, or `None` when the
    /// headroom is too small (the packet is unchanged).
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n = u16::try_from(n).ok()?;
        let m = self.raw_mut();
        if m.nb_segs == 1 {
            // rte_pktmbuf_prepend, inline for the single-segment packets l4lb uses.
            if n > m.data_off {
                return None;
            }
            m.data_off -= n;
            m.data_len += n;
            m.pkt_len += n as u32;
            return Some(self.data_mut());
        }
        // SAFETY: valid owned mbuf; rte_pktmbuf_prepend checks the headroom.
        let p = unsafe { dpdk_sys::l4lb_pktmbuf_prepend(self.0.as_ptr(), n) };
        (!p.is_null()).then(|| self.data_mut())
    }

    /// Removes `n` bytes from the front; false (and no change) if `n > len`.
    #[inline]
    pub fn trim_front(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        let m = self.raw_mut();
        if m.nb_segs == 1 {
            // rte_pktmbuf_adj, inline for single-segment packets (as `prepend`).
            if n > m.data_len {
                return false;
            }
            m.data_off += n;
            m.data_len -= n;
            m.pkt_len -= n as u32;
            return true;
        }
        // SAFETY: valid owned mbuf; rte_pktmbuf_adj checks the length.
        !unsafe { dpdk_sys::l4lb_pktmbuf_adj(self.0.as_ptr(), n) }.is_null()
    }

    /// Removes `n` bytes from the end; false (and no change) if `n > len`.
    /// Every encapsulated frame with Ethernet padding (a client's pure ACK:
    /// 54 bytes padded to 60) takes this before its outer header goes on, so
    /// a single-segment packet is trimmed inline, not through the C shim.
    #[inline]
    pub fn trim_back(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        let m = self.raw_mut();
        if m.nb_segs == 1 {
            // rte_pktmbuf_trim for one segment: the last segment is this one.
            if n > m.data_len {
                return false;
            }
            m.data_len -= n;
            m.pkt_len -= n as u32;
            return true;
        }
        // SAFETY: valid owned mbuf; rte_pktmbuf_trim checks the length.
        unsafe { dpdk_sys::l4lb_pktmbuf_trim(self.0.as_ptr(), n) == 0 }
    }

    /// The packet's length over all its segments (`pkt_len`; `len` is the
    /// first segment's).
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.raw().pkt_len as usize
    }

    /// Grows the packet at the end by `n` bytes and returns the new tail, or
    /// `None` when the tailroom is too small.
    #[inline]
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: valid owned mbuf; rte_pktmbuf_append checks the tailroom and
        // returns a pointer to `n` writable bytes inside the buffer.
        unsafe {
            let p = dpdk_sys::l4lb_pktmbuf_append(self.0.as_ptr(), n16);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p as *mut u8, n))
        }
    }

    /// A fresh, empty mbuf from this one's pool, or `None` when the pool is
    /// exhausted (the worker loop's fragments of a packet).
    #[inline]
    pub fn alloc_sibling(&self) -> Option<Mbuf> {
        // SAFETY: an mbuf's pool outlives every mbuf of it, so the pointer
        // is a valid pool while `self` lives.
        let p = unsafe { dpdk_sys::l4lb_pktmbuf_alloc(self.raw().pool) };
        // SAFETY: a non-null result is a fresh single-segment mbuf, ours.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Replaces the contents with `bytes`; false if they do not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        let len = self.len();
        if !self.trim_back(len) {
            return false;
        }
        match self.append(bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// The port the packet was received on.
    pub fn rx_port(&self) -> u16 {
        self.raw().port
    }

    /// The NIC's RSS hash of the packet, when the device computed one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        // SAFETY: reading a plain-old-data union field of initialised memory;
        // the value means the RSS hash whenever RTE_MBUF_F_RX_RSS_HASH is set.
        (m.ol_flags & dpdk_sys::consts::mbuf_f_rx_rss_hash() != 0)
            .then_some(unsafe { m.__bindgen_anon_2.hash.rss })
    }

    /// Prefetches the packet's first cache line.
    #[inline(always)]
    pub fn prefetch_data(&self) {
        let m = self.raw();
        // The start of the packet: `wrapping_add` computes the address without
        // asserting it is in bounds (it is: data_off lies inside the buffer),
        // and a prefetch never faults either way.
        let p = (m.buf_addr as *const u8).wrapping_add(m.data_off as usize);
        super::prefetch_ptr(p)
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nobody uses it after this.
        unsafe { dpdk_sys::l4lb_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.len()).finish()
    }
}

/// A fixed-capacity burst of owned mbufs; no allocation, remaining mbufs are
/// freed on drop.
pub struct Burst {
    ptrs: [*mut rte_mbuf; BURST_MAX],
    len: usize,
}

// SAFETY: a Burst owns its mbufs, which any thread may use or free.
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub const fn new() -> Self {
        Burst { ptrs: [std::ptr::null_mut(); BURST_MAX], len: 0 }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST_MAX
    }

    /// Adds a packet; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_MAX {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, and the
        // first `len` pointers are owned, non-null mbufs.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr() as *const Mbuf, self.len) }
    }

    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `as_slice`, exclusive through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptrs.as_mut_ptr() as *mut Mbuf, self.len) }
    }

    /// Takes every packet out, in order. Packets the iterator does not yield
    /// are freed when it is dropped.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let end = self.len;
        self.len = 0;
        Drain { burst: self, next: 0, end }
    }

    /// Frees every packet.
    pub fn clear(&mut self) {
        drop(self.drain());
    }

    /// Spare slots for a device to fill: (pointer to the first free slot, count).
    #[inline(always)]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut rte_mbuf, usize) {
        // SAFETY: len <= BURST_MAX, so the offset stays inside the array.
        (unsafe { self.ptrs.as_mut_ptr().add(self.len) }, BURST_MAX - self.len)
    }

    /// Marks `n` spare slots as filled by a device.
    ///
    /// # Safety
    /// The `n` slots after `len` must hold owned, valid mbufs.
    #[inline(always)]
    pub(crate) unsafe fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_MAX);
        self.len += n;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Iterator returned by [`Burst::drain`].
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.ptrs[self.next];
        self.next += 1;
        // SAFETY: slots below `end` were owned by the burst, and each is yielded once.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Drain<'_> {}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}
