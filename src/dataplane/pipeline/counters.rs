//! The worker's counters: one table of every per-worker counter, each with
//! its name, Prometheus family and help in one place ([`Counter`], plus one
//! row per [`DropReason`]), and the per-backend traffic counters.
//!
//! Adding a counter is one line in `counters!` below (a drop reason: one line
//! in `verdict.rs`); the worker increments `counters[Counter::X]`, and
//! publishing, summing, `ctl stats`, the metrics page and the exit report
//! loop over [`Counters::rows`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::verdict::{DropReason, Verdict};

/// Declares [`Counter`] from one list: variant, name, Prometheus family
/// (exported per worker), an optional extra label, help.
macro_rules! counters {
    ($($variant:ident => $name:literal, $metric:literal, $label:expr, $help:literal;)*) => {
        /// Every per-worker counter but the drops (one per [`DropReason`],
        /// after these in [`Counters`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Counter {
            $(#[doc = $help] $variant,)*
        }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            const fn info(self) -> CounterInfo {
                match self {
                    $(Counter::$variant => CounterInfo { name: $name, metric: $metric, label: $label, help: $help },)*
                }
            }
        }
    };
}

counters! {
    RxPackets => "rx_packets", "l4lb_worker_rx_packets_total", None,
        "Packets the worker received.";
    TxPackets => "tx_packets", "l4lb_worker_tx_packets_total", None,
        "Packets the worker handed to the device.";
    Forwarded => "forwarded", "l4lb_forwarded_packets_total", None,
        "Packets rewritten and sent to a backend.";
    Replied => "replied", "l4lb_replied_packets_total", None,
        "Packets answered (ARP, NDP, ICMP echo, frag-needed, packet-too-big).";
    Local => "local", "l4lb_local_packets_total", None,
        "Packets for the box itself that l4lb does not answer (neighbour answers teach the management core; the rest are freed).";
    NewFlows => "new_flows", "l4lb_new_flows_total", None,
        "Flows scheduled to a backend.";
    Rescheduled => "rescheduled", "l4lb_rescheduled_flows_total", None,
        "Tracked flows moved because their backend left.";
    IcmpTooBigSent => "icmp_too_big_sent", "l4lb_icmp_too_big_sent_total", None,
        "frag-needed / packet-too-big answers sent.";
    FlowInserts => "flow_inserts", "l4lb_flow_table_inserts_total", None,
        "Entries written into the flow table.";
    FlowsExpired => "flows_expired", "l4lb_flow_table_expired_total", None,
        "Expired flows reclaimed.";
    EvictedUnconfirmed => "evicted_unconfirmed", "l4lb_flow_table_evictions_total", Some(("class", "unconfirmed")),
        "Live flows evicted from a full table, by class.";
    EvictedEstablished => "evicted_established", "l4lb_flow_table_evictions_total", Some(("class", "established")),
        "Live flows evicted from a full table, by class.";
    BusyPolls => "busy_polls", "l4lb_worker_busy_polls_total", None,
        "Polls that received packets.";
    IdlePolls => "idle_polls", "l4lb_worker_idle_polls_total", None,
        "Polls that received nothing.";
    Stalls => "stalls", "l4lb_worker_stalls_total", None,
        "Gaps of 1 ms or more between two polls, not counting idle pauses.";
    StatesAdopted => "states_adopted", "l4lb_worker_states_adopted_total", None,
        "Forwarding states the worker switched to.";
    ControlUp => "control_up", "l4lb_control_up_packets_total", None,
        "Neighbour answers handed to the management core.";
    ControlSent => "control_sent", "l4lb_control_sent_packets_total", None,
        "Packets the management core had the worker send (ARP requests, solicitations).";
    Punted => "punted", "l4lb_punted_packets_total", None,
        "Packets for the box handed towards its port's kernel interface (the exception path).";
    HandedOff => "handed_off", "l4lb_handed_off_packets_total", None,
        "Packets passed to another worker to decide (new flows of a persisted client to its owner, ICMP errors to the worker tracking their flow).";
    PersistWritten => "persist_written", "l4lb_persistence_entries_written_total", None,
        "Persistence entries made or remade by this worker (the owner of their clients).";
    PersistEvicted => "persist_evicted", "l4lb_persistence_evictions_total", None,
        "Live persistence entries overwritten because their set was full (raise workers.persistence_capacity).";
    SyncedFlows => "synced_flows", "l4lb_synced_flows_total", None,
        "Flows this worker did not track that kept the backend a peer box reported for them (flow sync).";
    SyncReported => "sync_reported", "l4lb_sync_reported_flows_total", None,
        "Tracked flows whose backend the tables would not choose now, reported for the peer boxes (flow sync).";
    SyncReportsLost => "sync_reports_lost", "l4lb_sync_reports_lost_total", None,
        "Such reports dropped because the ring to the management core was full (flow sync).";
    Fragmented => "fragmented", "l4lb_fragmented_packets_total", None,
        "Packets forwarded in fragments: IPv4 without DF too big once encapsulated (the outer packet is fragmented).";
    FragmentsUnmatched => "fragments_unmatched", "l4lb_fragments_unmatched_total", None,
        "Later fragments whose datagram's first fragment this worker had not seen: sent to the VIP's lowest-port service of their protocol.";
    SynRetried => "syn_retried", "l4lb_syn_retried_flows_total", None,
        "TCP flows whose client sent its SYN again: the backend did not answer the first (passive health).";
    OverQuotaStateless => "over_quota_stateless", "l4lb_over_quota_stateless_packets_total", None,
        "Packets of untracked flows over their service's quota sent to the backend its hash picks, with no flow-table entry (over_quota = \"stateless\").";
    VipPathProbes => "vip_path_probes", "l4lb_vip_path_probe_packets_total", None,
        "Packets of the box's VIP-path health checks sent to a backend as a client's packet to the VIP would be.";
    VipPathAnswers => "vip_path_answers", "l4lb_vip_path_answer_packets_total", None,
        "Answers to the box's VIP-path health checks (from a VIP) handed to the box's kernel as from the backend.";
}

/// What names a counter: its `ctl stats` name, its Prometheus family, an
/// extra label that tells its row apart within the family, and its help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    pub name: &'static str,
    pub metric: &'static str,
    pub label: Option<(&'static str, &'static str)>,
    pub help: &'static str,
}

/// Rows of [`Counters`]: the [`Counter`]s, then one per [`DropReason`].
pub const ROWS: usize = Counter::COUNT + DropReason::COUNT;

/// The family every drop reason is a row of.
pub const DROPS_METRIC: &str = "l4lb_drops_total";

/// The row `i` of the counter table.
pub fn row_info(i: usize) -> CounterInfo {
    if i < Counter::COUNT {
        Counter::ALL[i].info()
    } else {
        let r = DropReason::ALL[i - Counter::COUNT];
        CounterInfo {
            name: r.name(),
            metric: DROPS_METRIC,
            label: Some(("reason", r.name())),
            help: r.help(),
        }
    }
}

/// One worker's counters (or a sum over workers), indexed by [`Counter`]
/// and by [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters([u64; ROWS]);

impl Default for Counters {
    fn default() -> Self {
        Counters([0; ROWS])
    }
}

impl std::ops::Index<Counter> for Counters {
    type Output = u64;
    #[inline(always)]
    fn index(&self, c: Counter) -> &u64 {
        &self.0[c as usize]
    }
}

impl std::ops::IndexMut<Counter> for Counters {
    #[inline(always)]
    fn index_mut(&mut self, c: Counter) -> &mut u64 {
        &mut self.0[c as usize]
    }
}

impl std::ops::Index<DropReason> for Counters {
    type Output = u64;
    #[inline(always)]
    fn index(&self, r: DropReason) -> &u64 {
        &self.0[Counter::COUNT + r as usize]
    }
}

impl std::ops::IndexMut<DropReason> for Counters {
    #[inline(always)]
    fn index_mut(&mut self, r: DropReason) -> &mut u64 {
        &mut self.0[Counter::COUNT + r as usize]
    }
}

impl std::ops::AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
}

impl Counters {
    /// Counts one packet's verdict.
    #[inline(always)]
    pub fn count(&mut self, v: Verdict) {
        match v {
            Verdict::Forward { .. } => self[Counter::Forwarded] += 1,
            Verdict::Reply { .. } => self[Counter::Replied] += 1,
            Verdict::Fragment { .. } => {
                self[Counter::Forwarded] += 1;
                self[Counter::Fragmented] += 1;
            }
            Verdict::Local => self[Counter::Local] += 1,
            Verdict::Handoff { .. } => self[Counter::HandedOff] += 1,
            Verdict::Drop(r) => self[r] += 1,
        }
    }

    /// Every packet dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.0[Counter::COUNT..].iter().sum()
    }

    /// Every row with its value, in table order.
    pub fn rows(&self) -> impl Iterator<Item = (CounterInfo, u64)> + '_ {
        self.0.iter().enumerate().map(|(i, v)| (row_info(i), *v))
    }

    /// The raw rows, for copying in and out of telemetry.
    pub fn as_array(&self) -> &[u64; ROWS] {
        &self.0
    }

    pub fn from_array(a: [u64; ROWS]) -> Counters {
        Counters(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_unique_name_and_a_unique_series() {
        let mut names = std::collections::HashSet::new();
        let mut series = std::collections::HashSet::new();
        for i in 0..ROWS {
            let r = row_info(i);
            assert!(names.insert(r.name), "counter name {} twice", r.name);
            assert!(series.insert((r.metric, r.label)), "series {} {:?} twice", r.metric, r.label);
            assert!(r.metric.starts_with("l4lb_") && r.metric.ends_with("_total"), "{}", r.metric);
            assert!(!r.help.is_empty(), "{} has no help", r.name);
        }
        // Rows of one family are adjacent, so one HELP/TYPE header covers them.
        let metrics: Vec<&str> = (0..ROWS).map(|i| row_info(i).metric).collect();
        for (i, m) in metrics.iter().enumerate() {
            if let Some(j) = metrics[..i].iter().rposition(|x| x == m) {
                assert_eq!(j + 1, i, "family {m} is split");
            }
        }
    }

    #[test]
    fn verdicts_count_into_their_rows() {
        let mut c = Counters::default();
        c.count(Verdict::Forward { port: 0 });
        c.count(Verdict::Local);
        c.count(Verdict::Drop(DropReason::NoService));
        c.count(Verdict::Drop(DropReason::NoService));
        assert_eq!((c[Counter::Forwarded], c[Counter::Local], c[DropReason::NoService]), (1, 1, 2));
        assert_eq!(c.dropped(), 2);
        let mut sum = c;
        sum += &c;
        assert_eq!(sum[DropReason::NoService], 4);
        let row = sum.rows().find(|(i, _)| i.name == "no_service").unwrap();
        assert_eq!((row.0.metric, row.0.label, row.1), (DROPS_METRIC, Some(("reason", "no_service")), 4));
    }
}

/// Packets and bytes (IP length, before encapsulation) sent to each backend,
/// by backend id. One block per worker, written only by that worker (relaxed
/// load + store, no locked instruction) and read by the management core at
/// any time; padded so two workers' blocks never share a cache line. A
/// backend's counters sit together: one bounds check; its packets and bytes
/// in one line.
#[repr(align(64))]
pub struct BackendCounters {
    by_id: Box<[BackendCount]>,
}

#[derive(Default)]
#[repr(align(32))]
pub(super) struct BackendCount {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
    /// New flows whose client sent its SYN again.
    syn_retried: AtomicU64,
    /// Handshakes seen (SYN to the client's first ACK), their summed time
    /// in ms, and how many took at most each of [`HANDSHAKE_BUCKETS_MS`]
    /// (the last: longer).
    handshake_ms_sum: AtomicU64,
    handshakes: [AtomicU32; HANDSHAKE_BUCKETS],
}

/// Upper bounds (ms) of the handshake-time buckets; one more bucket holds
/// the longer ones.
pub const HANDSHAKE_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
pub const HANDSHAKE_BUCKETS: usize = HANDSHAKE_BUCKETS_MS.len() + 1;

/// A backend's handshakes as counted: per bucket, and their summed time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handshakes {
    pub buckets: [u64; HANDSHAKE_BUCKETS],
    pub sum_ms: u64,
}

impl Handshakes {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Those counted since `earlier`.
    pub fn since(&self, earlier: &Handshakes) -> Handshakes {
        let mut d = *self;
        for (b, e) in d.buckets.iter_mut().zip(earlier.buckets) {
            *b = b.saturating_sub(e);
        }
        d.sum_ms = d.sum_ms.saturating_sub(earlier.sum_ms);
        d
    }

    /// Their mean time in ms (none without handshakes).
    pub fn mean_ms(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_ms as f64 / n as f64)
    }
}

impl BackendCounters {
    pub(super) fn new(ids: usize) -> Self {
        BackendCounters { by_id: (0..ids).map(|_| BackendCount::default()).collect() }
    }

    #[inline(always)]
    pub(super) fn count_new_flow(&self, id: usize) {
        if let Some(c) = self.by_id.get(id) {
            c.new_flows.store(c.new_flows.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub(super) fn count_syn_retried(&self, id: usize) {
        if let Some(c) = self.by_id.get(id) {
            c.syn_retried.store(c.syn_retried.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub(super) fn count_handshake(&self, id: usize, ms: u64) {
        if let Some(c) = self.by_id.get(id) {
            let b = HANDSHAKE_BUCKETS_MS.iter().position(|&le| ms <= le).unwrap_or(HANDSHAKE_BUCKETS - 1);
            let n = &c.handshakes[b];
            n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            c.handshake_ms_sum.store(c.handshake_ms_sum.load(Ordering::Relaxed) + ms, Ordering::Relaxed);
        }
    }

    /// Backend `id`'s handshakes so far.
    pub fn handshakes(&self, id: u32) -> Handshakes {
        let mut h = Handshakes::default();
        if let Some(c) = self.by_id.get(id as usize) {
            for (b, n) in h.buckets.iter_mut().zip(&c.handshakes) {
                *b = n.load(Ordering::Relaxed) as u64;
            }
            h.sum_ms = c.handshake_ms_sum.load(Ordering::Relaxed);
        }
        h
    }

    /// Flows of backend `id` whose client sent its SYN again.
    pub fn syn_retried(&self, id: u32) -> u64 {
        self.by_id.get(id as usize).map_or(0, |c| c.syn_retried.load(Ordering::Relaxed))
    }

    /// Flows started on (or moved to) backend `id`.
    pub fn new_flows(&self, id: u32) -> u64 {
        self.by_id.get(id as usize).map_or(0, |c| c.new_flows.load(Ordering::Relaxed))
    }

    #[inline(always)]
    pub(super) fn count(&self, id: usize, bytes: u64) {
        if let Some(c) = self.by_id.get(id) {
            // Single writer: a plain read-modify-write is exact.
            c.packets.store(c.packets.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            c.bytes.store(c.bytes.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
        }
    }

    /// (packets, bytes) sent to backend `id`.
    pub fn get(&self, id: u32) -> (u64, u64) {
        self.by_id
            .get(id as usize)
            .map_or((0, 0), |c| (c.packets.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed)))
    }
}
