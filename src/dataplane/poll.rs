//! How a worker polls: its configuration, the idle back-off, the poll-gap
//! meter, and the final flush of its TX queues. Shared by the balancing and
//! the plain forwarding worker.

use std::time::Duration;

use super::pipeline::{Counter, Counters};
#[cfg(feature = "dpdk")]
use crate::dpdk::TxQueue;

/// A gap between polls this long (µs) counts as a stall: at 10 Mpps a
/// 1024-descriptor RX ring fills in 0.1 ms.
pub const STALL_US: u64 = 1000;

/// How the loop polls and backs off.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    pub burst_size: usize,
    pub tx_drain_tsc: u64,
    /// Sleep after this many empty polls in a row (0 with `idle_pause` zero: never).
    pub idle_polls_before_pause: u32,
    pub idle_pause: Duration,
}

/// Counts polls and pauses a worker after a run of empty ones (never while
/// traffic is waiting).
#[derive(Debug, Default)]
pub struct IdleBackoff {
    idle_run: u32,
}

impl IdleBackoff {
    /// Records a poll that received `got` packets; sleeps when the idle run
    /// is long enough. Returns whether it slept.
    #[inline]
    pub fn after_poll(&mut self, got: usize, cfg: &PollConfig, counters: &mut Counters) -> bool {
        if got > 0 {
            counters[Counter::BusyPolls] += 1;
            self.idle_run = 0;
            return false;
        }
        counters[Counter::IdlePolls] += 1;
        self.idle_run = self.idle_run.saturating_add(1);
        if !cfg.idle_pause.is_zero() && self.idle_run >= cfg.idle_polls_before_pause {
            std::thread::sleep(cfg.idle_pause);
            return true;
        }
        false
    }
}

/// Gaps between the starts of a worker's consecutive polls. A long one means
/// the worker was not running — descheduled by the kernel or the hypervisor,
/// or held by a page fault — while its RX rings filled (and, once full, the
/// NIC dropped). A gap after the worker's own idle pause does not count.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollGaps {
    /// Start of the previous poll; 0 after a pause.
    last_tsc: u64,
    stall_tsc: u64,
    /// The longest gap, in TSC ticks.
    pub longest_tsc: u64,
    /// Gaps of `stall_tsc` or more.
    pub stalls: u64,
}

impl PollGaps {
    /// Counts gaps of `stall_tsc` ticks or more as stalls.
    pub fn new(stall_tsc: u64) -> PollGaps {
        PollGaps { stall_tsc: stall_tsc.max(1), ..PollGaps::default() }
    }

    /// At the start of a poll.
    #[inline]
    pub fn poll(&mut self, now_tsc: u64) {
        if self.last_tsc != 0 {
            let gap = now_tsc.saturating_sub(self.last_tsc);
            self.longest_tsc = self.longest_tsc.max(gap);
            self.stalls += (gap >= self.stall_tsc) as u64;
        }
        self.last_tsc = now_tsc;
    }

    /// The worker paused on purpose: the next gap is not a stall.
    #[inline]
    pub fn paused(&mut self) {
        self.last_tsc = 0;
    }
}

/// Flushes every TX queue at shutdown: (packets sent, packets dropped on a
/// full buffer) over their lifetime.
#[cfg(feature = "dpdk")]
pub fn flush_all(tx: &mut [TxQueue<'_>]) -> (u64, u64) {
    tx.iter_mut().fold((0, 0), |(sent, dropped), t| {
        t.flush();
        let s = t.stats();
        (sent + s.sent, dropped + s.dropped_full)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::pipeline::{Counter, Counters};

    #[test]
    fn poll_gaps_count_long_gaps_but_not_idle_pauses() {
        let mut g = PollGaps::new(1000);
        for t in [10, 20, 30] {
            g.poll(t);
        }
        assert_eq!((g.longest_tsc, g.stalls), (10, 0));
        g.poll(1030); // away for 1000 ticks: a stall
        g.poll(1040);
        assert_eq!((g.longest_tsc, g.stalls), (1000, 1));
        g.paused();
        g.poll(9000); // after its own pause: not a stall
        g.poll(9010);
        assert_eq!((g.longest_tsc, g.stalls), (1000, 1));
        g.poll(12_010);
        assert_eq!((g.longest_tsc, g.stalls), (3000, 2));
    }

    #[test]
    fn idle_backoff_says_when_it_slept() {
        let cfg = PollConfig {
            burst_size: 32,
            tx_drain_tsc: 0,
            idle_polls_before_pause: 2,
            idle_pause: Duration::from_micros(1),
        };
        let (mut b, mut c) = (IdleBackoff::default(), Counters::default());
        assert!(!b.after_poll(0, &cfg, &mut c));
        assert!(b.after_poll(0, &cfg, &mut c));
        assert!(!b.after_poll(5, &cfg, &mut c));
        assert!(!b.after_poll(0, &cfg, &mut c));
        assert_eq!((c[Counter::BusyPolls], c[Counter::IdlePolls]), (1, 3));
        let off = PollConfig { idle_pause: Duration::ZERO, ..cfg };
        assert!(!b.after_poll(0, &off, &mut c));
    }
}
