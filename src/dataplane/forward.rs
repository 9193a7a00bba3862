//! The plain port-to-port forwarding worker: every packet received on a port
//! leaves unchanged on that port's `forward_to` peer (or is dropped and
//! counted).

use std::sync::atomic::{AtomicBool, Ordering};

use super::pipeline::{Counter, DropReason};
use super::poll::{flush_all, IdleBackoff, PollConfig, PollGaps, STALL_US};
use super::telemetry::WorkerStats;
use crate::dpdk::{tsc, Burst, RxQueue, TxQueue};

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
        let mut gaps = PollGaps::new(STALL_US * tsc_per_ms / 1000);
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
