//! Live counters of one balancing worker, for the management core (metrics,
//! `l4lb ctl`). The worker keeps its counters in plain fields on the packet
//! path and copies them here every millisecond or so: one relaxed store per
//! field, no locked instruction, nothing per packet. Readers see each field
//! at most a publish period old.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::balance::BalanceStats;
use super::pipeline::{Counters, DropReason};
use crate::balancer::flowtable::FlowTableStats;
use crate::balancer::state::ForwardingState;

/// One worker's published counters. Single writer (the worker), any readers.
#[repr(align(64))]
pub struct WorkerTelemetry {
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    dropped_tx_full: AtomicU64,
    busy_polls: AtomicU64,
    idle_polls: AtomicU64,
    forwarded: AtomicU64,
    replied: AtomicU64,
    to_kernel: AtomicU64,
    new_flows: AtomicU64,
    rescheduled: AtomicU64,
    icmp_too_big_sent: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    flows: AtomicU64,
    flow_capacity: AtomicU64,
    flow_inserts: AtomicU64,
    flows_expired: AtomicU64,
    evicted_unconfirmed: AtomicU64,
    evicted_established: AtomicU64,
    generation: AtomicU64,
    states_adopted: AtomicU64,
    control_up_dropped: AtomicU64,
    longest_poll_gap_us: AtomicU64,
    stalls: AtomicU64,
    /// Active flows by backend id (only ids in the worker's current state
    /// are refreshed; the others keep their last value).
    active: Box<[AtomicU32]>,
}

/// A copy of one worker's telemetry (or a sum over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetrySnapshot {
    pub stats: BalanceStats,
    pub flows: u64,
    pub flow_capacity: u64,
    pub flow_table: FlowTableStats,
    /// Forwarding-state generation in use (the lowest over workers when summed).
    pub generation: u64,
}

impl std::ops::AddAssign for TelemetrySnapshot {
    fn add_assign(&mut self, o: Self) {
        let first = self.flow_capacity == 0;
        self.stats += o.stats;
        self.flows += o.flows;
        self.flow_capacity += o.flow_capacity;
        let (a, b) = (&mut self.flow_table, o.flow_table);
        a.inserts += b.inserts;
        a.expired += b.expired;
        a.evicted_unconfirmed += b.evicted_unconfirmed;
        a.evicted_established += b.evicted_established;
        self.generation = if first { o.generation } else { self.generation.min(o.generation) };
    }
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
            rx_packets: z(),
            tx_packets: z(),
            dropped_tx_full: z(),
            busy_polls: z(),
            idle_polls: z(),
            forwarded: z(),
            replied: z(),
            to_kernel: z(),
            new_flows: z(),
            rescheduled: z(),
            icmp_too_big_sent: z(),
            drops: std::array::from_fn(|_| z()),
            flows: z(),
            flow_capacity: z(),
            flow_inserts: z(),
            flows_expired: z(),
            evicted_unconfirmed: z(),
            evicted_established: z(),
            generation: z(),
            states_adopted: z(),
            control_up_dropped: z(),
            longest_poll_gap_us: z(),
            stalls: z(),
            active: (0..backend_ids).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Worker side: copies the worker's counters in.
    pub fn publish(
        &self,
        stats: &BalanceStats,
        counters: &Counters,
        flows: (usize, usize, FlowTableStats),
        state: &ForwardingState,
        active: impl Fn(u32) -> u32,
    ) {
        put(&self.rx_packets, stats.rx_packets);
        put(&self.tx_packets, stats.tx_packets);
        put(&self.dropped_tx_full, stats.dropped_tx_full);
        put(&self.busy_polls, stats.busy_polls);
        put(&self.idle_polls, stats.idle_polls);
        put(&self.states_adopted, stats.states_adopted);
        put(&self.control_up_dropped, stats.control_up_dropped);
        put(&self.longest_poll_gap_us, stats.longest_poll_gap_us);
        put(&self.stalls, stats.stalls);
        put(&self.forwarded, counters.forwarded);
        put(&self.replied, counters.replied);
        put(&self.to_kernel, counters.to_kernel);
        put(&self.new_flows, counters.new_flows);
        put(&self.rescheduled, counters.rescheduled);
        put(&self.icmp_too_big_sent, counters.icmp_too_big_sent);
        for (a, v) in self.drops.iter().zip(counters.drops.iter()) {
            put(a, *v);
        }
        let (len, cap, fs) = flows;
        put(&self.flows, len as u64);
        put(&self.flow_capacity, cap as u64);
        put(&self.flow_inserts, fs.inserts);
        put(&self.flows_expired, fs.expired);
        put(&self.evicted_unconfirmed, fs.evicted_unconfirmed);
        put(&self.evicted_established, fs.evicted_established);
        put(&self.generation, state.generation);
        for b in &state.backends {
            if let Some(a) = self.active.get(b.id as usize) {
                a.store(active(b.id), Ordering::Relaxed);
            }
        }
    }

    /// Management side: a copy of the counters.
    pub fn snapshot(&self) -> TelemetrySnapshot {
        let mut drops = [0u64; DropReason::COUNT];
        for (d, a) in drops.iter_mut().zip(self.drops.iter()) {
            *d = get(a);
        }
        TelemetrySnapshot {
            stats: BalanceStats {
                rx_packets: get(&self.rx_packets),
                tx_packets: get(&self.tx_packets),
                dropped_tx_full: get(&self.dropped_tx_full),
                busy_polls: get(&self.busy_polls),
                idle_polls: get(&self.idle_polls),
                pipeline: Counters {
                    forwarded: get(&self.forwarded),
                    replied: get(&self.replied),
                    to_kernel: get(&self.to_kernel),
                    drops,
                    new_flows: get(&self.new_flows),
                    rescheduled: get(&self.rescheduled),
                    icmp_too_big_sent: get(&self.icmp_too_big_sent),
                },
                states_adopted: get(&self.states_adopted),
                control_up: 0,
                control_up_dropped: get(&self.control_up_dropped),
                control_sent: 0,
                longest_poll_gap_us: get(&self.longest_poll_gap_us),
                stalls: get(&self.stalls),
            },
            flows: get(&self.flows),
            flow_capacity: get(&self.flow_capacity),
            flow_table: FlowTableStats {
                inserts: get(&self.flow_inserts),
                expired: get(&self.flows_expired),
                evicted_unconfirmed: get(&self.evicted_unconfirmed),
                evicted_established: get(&self.evicted_established),
            },
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

    #[test]
    fn publish_then_snapshot_round_trips() {
        let t = WorkerTelemetry::new(16);
        let mut c = Counters { forwarded: 7, new_flows: 3, ..Default::default() };
        c.drops[DropReason::NoService as usize] = 2;
        let stats = BalanceStats {
            rx_packets: 9,
            tx_packets: 7,
            busy_polls: 4,
            longest_poll_gap_us: 1500,
            stalls: 2,
            ..Default::default()
        };
        let st = crate::dataplane::testframes::state(crate::balancer::state::Forwarding::IpIp, false, 6);
        let fs = FlowTableStats { inserts: 3, ..Default::default() };
        t.publish(&stats, &c, (3, 1024, fs), &st, |id| id + 10);
        let s = t.snapshot();
        assert_eq!(s.stats.rx_packets, 9);
        assert_eq!((s.stats.longest_poll_gap_us, s.stats.stalls), (1500, 2));
        assert_eq!(s.stats.pipeline.forwarded, 7);
        assert_eq!(s.stats.pipeline.drop_count(DropReason::NoService), 2);
        assert_eq!((s.flows, s.flow_capacity, s.flow_table.inserts), (3, 1024, 3));
        assert_eq!(s.generation, st.generation);
        let id = st.backends[0].id;
        assert_eq!(t.active(id), id + 10);
        let mut sum = s;
        sum += s;
        assert_eq!(sum.stats.rx_packets, 18);
        // Over workers: the longest gap, the stalls added up.
        assert_eq!((sum.stats.longest_poll_gap_us, sum.stats.stalls), (1500, 4));
        assert_eq!(sum.generation, st.generation);
    }
}
