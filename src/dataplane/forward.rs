//! The plain port-to-port forwarding worker: every packet received on a port
//! leaves unchanged on that port's `forward_to` peer (or is dropped and
//! counted). It is the poll loop the balancer's pipeline plugs into.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::pipeline::{Counter, Counters, DropReason};
use super::telemetry::WorkerStats;
use crate::dpdk::{tsc, Burst, RxQueue, TxQueue};

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
pub fn flush_all(tx: &mut [TxQueue<'_>]) -> (u64, u64) {
    tx.iter_mut().fold((0, 0), |(sent, dropped), t| {
        t.flush();
        let s = t.stats();
        (sent + s.sent, dropped + s.dropped_full)
    })
}

/// One worker's queues: the RX queues it polls, each with the index (into
/// `tx`) of the port its packets leave on, and one TX queue per port.
pub struct ForwardWorker<'p> {
    pub rx: Vec<(RxQueue<'p>, Option<usize>)>,
    pub tx: Vec<TxQueue<'p>>,
}

impl ForwardWorker<'_> {
    /// Polls until `stop` is set, then sends what is buffered. `tsc_per_ms`
    /// scales the poll-gap meter.
    pub fn run(mut self, cfg: PollConfig, tsc_per_ms: u64, stop: &AtomicBool) -> WorkerStats {
        let mut stats = WorkerStats::default();
        let mut burst = Burst::new();
        let mut backoff = IdleBackoff::default();
        let mut gaps = PollGaps::new(super::balance::STALL_US * tsc_per_ms / 1000);
        while !stop.load(Ordering::Relaxed) {
            let now = tsc();
            gaps.poll(now);
            let mut got = 0usize;
            for (rxq, out) in self.rx.iter_mut() {
                let n = rxq.burst_max(&mut burst, cfg.burst_size);
                if n == 0 {
                    continue;
                }
                got += n;
                match out {
                    Some(o) => self.tx[*o].push_burst(&mut burst),
                    None => {
                        stats.counters[DropReason::NoRoute] += n as u64;
                        burst.clear();
                    }
                }
            }
            for t in self.tx.iter_mut() {
                t.drain_if_due(now);
            }
            stats.counters[Counter::RxPackets] += got as u64;
            if backoff.after_poll(got, &cfg, &mut stats.counters) {
                gaps.paused();
            }
        }
        let c = &mut stats.counters;
        (c[Counter::TxPackets], c[DropReason::TxFull]) = flush_all(&mut self.tx);
        c[Counter::Stalls] = gaps.stalls;
        stats.longest_poll_gap_us = gaps.longest_tsc * 1000 / tsc_per_ms.max(1);
        // Dropping the TX queues frees (and the stats above omit) whatever the
        // device still refused at the very end.
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn worker_stats_sum_counts_and_keep_the_longest_gap() {
        let stats = |rx: u64, gap_us: u64, stalls: u64| {
            let mut s = WorkerStats { longest_poll_gap_us: gap_us, ..Default::default() };
            (s.counters[Counter::RxPackets], s.counters[Counter::Stalls]) = (rx, stalls);
            s
        };
        let mut a = stats(5, 300, 1);
        a += stats(7, 2500, 2);
        a += stats(0, 40, 0);
        assert_eq!(
            (a.counters[Counter::RxPackets], a.longest_poll_gap_us, a.counters[Counter::Stalls]),
            (12, 2500, 3)
        );
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
