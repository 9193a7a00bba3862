use std::marker::PhantomData;
use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

use super::{Burst, Mbuf, Port};

pub use crate::balancer::limits::TX_BUFFER_CAPACITY;

/// A port's RX queue, owned by one lcore.
pub struct RxQueue<'p> {
    port: u16,
    queue: u16,
    _port: PhantomData<&'p Port>,
}

impl RxQueue<'_> {
    pub(crate) fn new(port: u16, queue: u16) -> Self {
        RxQueue { port, queue, _port: PhantomData }
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Receives up to the burst's free space; returns how many arrived.
    #[inline]
    pub fn burst(&mut self, out: &mut Burst) -> usize {
        self.burst_max(out, usize::MAX)
    }

    /// Receives at most `max` packets into the burst's free space.
    #[inline]
    pub fn burst_max(&mut self, out: &mut Burst, max: usize) -> usize {
        let (ptr, room) = out.spare_raw();
        let want = room.min(max) as u16;
        if want == 0 {
            return 0;
        }
        // SAFETY: this handle is the queue's only user (queues are taken once
        // and the handle is not Sync); `ptr` has room for `want` pointers.
        let n = unsafe { dpdk_sys::l4lb_rx_burst(self.port, self.queue, ptr, want) } as usize;
        // SAFETY: the device wrote `n` owned mbufs into those slots.
        unsafe { out.commit(n) };
        n
    }
}

/// Counters of one [`TxQueue`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    /// Packets the device accepted.
    pub sent: u64,
    /// Packets freed because the buffer was full and the device took nothing.
    pub dropped_full: u64,
    /// Times the device accepted fewer packets than offered.
    pub partial_bursts: u64,
}

/// A port's TX queue with a buffer: packets are sent in bursts of at least
/// `flush_at`; what the device does not take stays buffered (in order) and is
/// retried on the next flush; [`TxQueue::drain_if_due`] flushes on a period so
/// a lone packet never waits long. When the buffer is full and the device still
/// refuses, the new packet is freed and counted.
pub struct TxQueue<'p> {
    port: u16,
    queue: u16,
    buf: [*mut rte_mbuf; TX_BUFFER_CAPACITY],
    len: usize,
    flush_at: usize,
    drain_tsc: u64,
    last_flush_tsc: u64,
    stats: TxStats,
    _port: PhantomData<&'p Port>,
}

// SAFETY: the queue owns its buffered mbufs and is used by one lcore at a time.
unsafe impl Send for TxQueue<'_> {}
// SAFETY: RxQueue holds only ids; one owner, moved to the lcore that polls it.
unsafe impl Send for RxQueue<'_> {}

impl TxQueue<'_> {
    pub(crate) fn new(port: u16, queue: u16, drain_tsc: u64) -> Self {
        TxQueue {
            port,
            queue,
            buf: [std::ptr::null_mut(); TX_BUFFER_CAPACITY],
            len: 0,
            flush_at: 32,
            drain_tsc,
            last_flush_tsc: 0,
            stats: TxStats::default(),
            _port: PhantomData,
        }
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Sets the buffered count that triggers a send (1..=TX_BUFFER_CAPACITY).
    pub fn set_flush_at(&mut self, n: usize) {
        self.flush_at = n.clamp(1, TX_BUFFER_CAPACITY);
    }

    /// Packets waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.len
    }

    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// Queues one packet for sending. Inlined into the worker's verdict loop:
    /// a store and a compare per packet; the send itself stays a call.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) {
        if self.len == TX_BUFFER_CAPACITY {
            self.flush();
            if self.len == TX_BUFFER_CAPACITY {
                self.stats.dropped_full += 1;
                drop(m);
                return;
            }
        }
        self.buf[self.len] = m.into_raw();
        self.len += 1;
        if self.len >= self.flush_at {
            self.flush();
        }
    }

    /// Queues a whole burst, leaving it empty.
    #[inline]
    pub fn push_burst(&mut self, burst: &mut Burst) {
        for m in burst.drain() {
            self.push(m);
        }
    }

    /// Offers every buffered packet to the device; returns how many it took.
    #[inline(never)]
    pub fn flush(&mut self) -> usize {
        if self.len == 0 {
            return 0;
        }
        let mut sent = 0usize;
        // tx_burst takes at most u16::MAX; the buffer is far smaller.
        // SAFETY: this handle is the queue's only user; the first `len` slots
        // hold owned mbufs, and those the device takes become its own.
        let n =
            unsafe { dpdk_sys::l4lb_tx_burst(self.port, self.queue, self.buf.as_mut_ptr(), self.len as u16) }
                as usize;
        sent += n;
        if n < self.len {
            self.stats.partial_bursts += 1;
            self.buf.copy_within(n..self.len, 0);
        }
        self.len -= n;
        self.stats.sent += sent as u64;
        sent
    }

    /// Flushes when packets are waiting and the drain period has passed.
    #[inline]
    pub fn drain_if_due(&mut self, now_tsc: u64) {
        if self.len != 0 && now_tsc.wrapping_sub(self.last_flush_tsc) >= self.drain_tsc {
            self.flush();
            self.last_flush_tsc = now_tsc;
        }
    }

    /// Frees every buffered packet without sending (counted as dropped).
    pub fn discard(&mut self) {
        for &p in &self.buf[..self.len] {
            // SAFETY: buffered slots hold owned, non-null mbufs; each is freed once.
            drop(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) });
        }
        self.stats.dropped_full += self.len as u64;
        self.len = 0;
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        self.flush();
        self.discard();
    }
}
