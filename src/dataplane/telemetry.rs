//! Live counters of one worker, for the management core (metrics, `l4lb
//! ctl`) and for the exit report. The worker keeps its counters in its own
//! table ([`Counters`]) on the packet path and copies them here every
//! millisecond or so: one relaxed store per row, no locked instruction,
//! nothing per packet. Readers see each row at most a publish period old.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::pipeline::{Counters, ROWS};
use crate::balancer::state::ForwardingState;

/// A worker's counters and gauges: what it publishes, what it reports when
/// it stops, or a sum over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub counters: Counters,
    /// The longest gap between two polls, in microseconds (see
    /// `forward::PollGaps`); over workers, the longest.
    pub longest_poll_gap_us: u64,
    /// Flows in the flow table, the slots they take (an IPv6 flow two) and
    /// the table's slots.
    pub flows: u64,
    pub flow_slots_used: u64,
    pub flow_capacity: u64,
    /// Forwarding-state generation in use (over workers: the lowest).
    pub generation: u64,
}

impl std::ops::AddAssign for WorkerStats {
    fn add_assign(&mut self, o: Self) {
        let first = self.flow_capacity == 0;
        self.counters += &o.counters;
        self.longest_poll_gap_us = self.longest_poll_gap_us.max(o.longest_poll_gap_us);
        self.flows += o.flows;
        self.flow_slots_used += o.flow_slots_used;
        self.flow_capacity += o.flow_capacity;
        self.generation = if first { o.generation } else { self.generation.min(o.generation) };
    }
}

/// One worker's published counters. Single writer (the worker), any readers.
#[repr(align(64))]
pub struct WorkerTelemetry {
    counters: [AtomicU64; ROWS],
    longest_poll_gap_us: AtomicU64,
    flows: AtomicU64,
    flow_slots_used: AtomicU64,
    flow_capacity: AtomicU64,
    generation: AtomicU64,
    /// Active flows by backend id (only ids in the worker's current state
    /// are refreshed; the others keep their last value).
    active: Box<[AtomicU32]>,
}

fn put(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl WorkerTelemetry {
    /// Room for `backend_ids` backend ids.
    pub fn new(backend_ids: usize) -> WorkerTelemetry {
        let z = || AtomicU64::new(0);
        WorkerTelemetry {
            counters: std::array::from_fn(|_| z()),
            longest_poll_gap_us: z(),
            flows: z(),
            flow_slots_used: z(),
            flow_capacity: z(),
            generation: z(),
            active: (0..backend_ids).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Worker side: copies the worker's counters and gauges in, and the
    /// active flows of every backend in `state`.
    pub fn publish(&self, stats: &WorkerStats, state: &ForwardingState, active: impl Fn(u32) -> u32) {
        for (a, v) in self.counters.iter().zip(stats.counters.as_array()) {
            put(a, *v);
        }
        put(&self.longest_poll_gap_us, stats.longest_poll_gap_us);
        put(&self.flows, stats.flows);
        put(&self.flow_slots_used, stats.flow_slots_used);
        put(&self.flow_capacity, stats.flow_capacity);
        put(&self.generation, state.generation);
        for b in &state.backends {
            if let Some(a) = self.active.get(b.id as usize) {
                a.store(active(b.id), Ordering::Relaxed);
            }
        }
    }

    /// Management side: a copy of the counters.
    pub fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            counters: Counters::from_array(std::array::from_fn(|i| get(&self.counters[i]))),
            longest_poll_gap_us: get(&self.longest_poll_gap_us),
            flows: get(&self.flows),
            flow_slots_used: get(&self.flow_slots_used),
            flow_capacity: get(&self.flow_capacity),
            generation: get(&self.generation),
        }
    }

    /// Management side: this worker's active flows to backend `id`.
    pub fn active(&self, id: u32) -> u32 {
        self.active.get(id as usize).map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::pipeline::{row_info, Counter, DropReason};

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
    fn every_row_round_trips_through_publish_and_snapshot() {
        let t = WorkerTelemetry::new(16);
        // A distinct value in every row: a row published as 0 or into
        // another row's place fails.
        let mut stats = WorkerStats {
            counters: Counters::from_array(std::array::from_fn(|i| 1000 + i as u64)),
            longest_poll_gap_us: 1500,
            flows: 3,
            flow_slots_used: 5,
            flow_capacity: 1024,
            generation: 0,
        };
        let st = crate::dataplane::testframes::state(crate::balancer::state::Forwarding::IpIp, false, 6);
        t.publish(&stats, &st, |id| id + 10);
        let s = t.snapshot();
        stats.generation = st.generation;
        assert_eq!(s, stats);
        for (i, (info, v)) in s.counters.rows().enumerate() {
            assert_eq!((info, v), (row_info(i), 1000 + i as u64));
        }
        let id = st.backends[0].id;
        assert_eq!(t.active(id), id + 10);
        let mut sum = s;
        sum += s;
        assert_eq!(sum.counters[Counter::RxPackets], 2 * s.counters[Counter::RxPackets]);
        assert_eq!(sum.counters[DropReason::NoService], 2 * s.counters[DropReason::NoService]);
        // Over workers: the longest gap, the lowest generation.
        assert_eq!((sum.longest_poll_gap_us, sum.generation), (1500, st.generation));
    }
}
