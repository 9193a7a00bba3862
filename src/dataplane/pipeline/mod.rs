//! The per-packet path, in the order a packet takes it:
//!
//! 1. **parse** ([`parse`], its fast paths in [`fast`]): L2 checks, the IPv4
//!    and IPv6 headers, the flow key and the service of VIP traffic;
//! 2. **classify**: what parsing decided — a local reply ([`replies`]: ARP,
//!    NDP, echo), traffic for the box itself, a drop — or a packet to balance;
//! 3. **decide** ([`decide`]): the flow-table lookup, scheduling of new flows,
//!    persistence;
//! 4. **rewrite** ([`encap`]: L2 MAC rewrite, IP-in-IP, GUE; [`icmp_error`]:
//!    frag-needed / packet-too-big when the packet would not fit);
//! 5. **dispatch**: the [`Verdict`] ([`verdict`]) and its counter
//!    ([`counters`], the worker's one counter table); the worker
//!    loop (`dataplane::balance`) sends, hands up or frees the packet.
//!
//! [`Worker::process`] runs one packet through it; [`Worker::process_burst`]
//! ([`burst`]) runs a burst in passes, with every flow-table line prefetched
//! first. Nothing here allocates, locks, logs or reads a clock: the time comes
//! in as an argument, read once per burst by the caller.

use std::sync::Arc;

use super::packet::Packet;
use super::punt::TokenBucket;
use crate::balancer::flow::{FlowKey, KeyKind};
use crate::balancer::flowtable::{Entry, FlowState, FlowTable, FlowTableStats, InsertHint, Place};
use crate::balancer::fragments::FragmentServices;
use crate::balancer::limits::{MAX_BACKEND_IDS, MAX_SERVICES};
use crate::balancer::persist::PersistTable;
use crate::balancer::state::{ForwardingState, SchedState, Service};
use crate::balancer::synced::{AtRisk, SyncedFlows};
use crate::balancer::Prefetch;
use crate::net::tcp;
use crossbeam::queue::ArrayQueue;

mod burst;
mod counters;
mod decide;
mod encap;
mod fast;
#[doc(hidden)]
pub mod harness;
mod icmp_error;
mod parse;
mod quota;
mod replies;
#[cfg(test)]
mod tests;
mod verdict;
mod vip_path;

pub use burst::BurstPlan;
pub use counters::{
    row_info, BackendCounters, Counter, CounterInfo, Counters, Handshakes, DROPS_METRIC,
    HANDSHAKE_BUCKETS_MS, ROWS,
};
pub use decide::next_state;
pub use encap::{fragment_frames, l2_len};
pub use verdict::{DropReason, Verdict};
pub use vip_path::{
    vip_path_answer, Answer, VipPathClaim, VipPathPorts, VIP_PATH_FIRST_PORT, VIP_PATH_PORTS,
};

use fast::{ServiceMemo, ServiceMemoV6};

/// Outer header sizes.
const V4_HDR: usize = 20;
const V6_HDR: usize = 40;
const UDP_HDR: usize = 8;
/// Hop limit / TTL of packets l4lb originates.
const OWN_TTL: u8 = 64;
/// GUE source ports come from this range (RFC 6335 dynamic ports).
const GUE_SPORT_BASE: u16 = 49152;

/// `Worker::handed_origin` when the packet being decided came from the NIC.
const NOT_HANDED: u16 = u16::MAX;

/// Sizes of a worker's tables and its ICMP rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    pub flow_capacity: usize,
    /// Entries of the persistence table (one per team of workers).
    pub persist_capacity: usize,
    /// frag-needed / packet-too-big answers per second (token bucket rate).
    pub icmp_rate_per_s: u64,
    pub icmp_burst: u64,
    /// Backend ids the worker counts flows and traffic for (ids from 0; a
    /// flow of a higher id is forwarded but not counted). l4lb's limit by
    /// default; the fuzz targets' small states take far fewer.
    pub backend_ids: usize,
    /// Slots of the table that sends a datagram's later fragments where its
    /// first went (`balancer::fragments`).
    pub fragment_slots: usize,
}

impl WorkerConfig {
    /// Tiny tables (64 flows, persistence entries, backend ids and fragment
    /// slots): cheap to make, for property tests and fuzz targets that make
    /// a worker per case.
    pub fn small() -> WorkerConfig {
        WorkerConfig {
            flow_capacity: 64,
            persist_capacity: 64,
            backend_ids: 64,
            fragment_slots: 64,
            ..WorkerConfig::default()
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            flow_capacity: 1 << 20,
            persist_capacity: 1 << 16,
            icmp_rate_per_s: 100,
            icmp_burst: 20,
            backend_ids: MAX_BACKEND_IDS,
            fragment_slots: crate::balancer::fragments::DEFAULT_SLOTS,
        }
    }
}

/// The per-worker mutable side of the pipeline.
pub struct Worker {
    flows: FlowTable,
    /// Shared by every worker of the box (`balancer::persist`).
    persist: Arc<PersistTable>,
    /// This worker's place in its team and the team's size: who owns which
    /// persisted clients, and where an ICMP error goes next.
    index: u16,
    workers: u16,
    /// The worker a handed-over packet first came in on while it is decided
    /// ([`Worker::process_handed`]), else `NOT_HANDED`.
    handed_origin: u16,
    active: Vec<u32>,
    sched: Vec<SchedState>,
    generation: u64,
    /// frag-needed / packet-too-big answers.
    icmp_bucket: TokenBucket,
    ident: u16,
    last_service: ServiceMemo,
    last_service_v6: ServiceMemoV6,
    per_backend: Arc<BackendCounters>,
    plan: Option<Box<BurstPlan>>,
    pub counters: Counters,
    /// Flow sync (`[sync]`): the flows peers reported, consulted on a miss,
    /// and where this worker reports its own flows that need sharing.
    sync: Option<Box<SyncSide>>,
    /// The service of each datagram whose first fragment came here.
    fragments: FragmentServices,
    /// Per-service quotas on new flows.
    quotas: quota::Quotas,
}

/// A worker's part in flow sync.
struct SyncSide {
    peers: Arc<SyncedFlows>,
    out: Arc<ArrayQueue<AtRisk>>,
    /// The next bucket the scan reads, and how many are left of the pass.
    cursor: usize,
    left: usize,
    /// The state the last pass started on.
    generation: u64,
    /// Whether the pass found flows to share (the last whole one, this one).
    found: bool,
    found_now: bool,
    /// When a pass starts again without a new state (refreshing peers'
    /// copies while shared flows live).
    next_pass_ms: u64,
}

/// A pass over the flow table again this often while it found flows to share.
const SYNC_REFRESH_MS: u64 = 10_000;

/// Where a VIP packet's flow sits in the flow table: its place (from the
/// first pass) and, for a new flow, the slot its insert will write (from the
/// second). One record, so the decision takes both by one reference.
#[derive(Debug, Clone, Copy, Default)]
struct TablePlan {
    at: Place,
    hint: Option<InsertHint>,
}

/// A packet to a VIP after parsing, waiting for its flow lookup.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PacketMeta {
    key: FlowKey,
    hash: u64,
    service: u32,
    ip_len: u16,
    l2_len: u8,
    v6: bool,
    kind: KeyKind,
    tcp_flags: u8,
    /// IPv4 DF flag (IPv6: always true).
    df: bool,
    tos: u8,
}

impl PacketMeta {
    /// A TCP SYN without ACK: most likely a new flow (its table lines are
    /// fetched as for an insert).
    #[inline(always)]
    fn opens(&self) -> bool {
        self.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN
    }
}

impl Default for PacketMeta {
    fn default() -> Self {
        PacketMeta {
            key: FlowKey::default(),
            hash: 0,
            service: 0,
            ip_len: 0,
            l2_len: 0,
            v6: false,
            kind: KeyKind::ThreeTuple,
            tcp_flags: 0,
            df: false,
            tos: 0,
        }
    }
}

/// Active-flow and quota bookkeeping for entries leaving the flow table
/// (given their backend id).
fn release<'a>(active: &'a mut [u32], quotas: &'a mut quota::Quotas) -> impl FnMut(u32) + 'a {
    move |backend| {
        if let Some(a) = active.get_mut(backend as usize) {
            *a = a.saturating_sub(1);
        }
        if quotas.on {
            quotas.released(backend);
        }
    }
}

impl Worker {
    /// A team of one: allocates every table up front.
    pub fn new(cfg: WorkerConfig) -> Worker {
        Self::team(cfg, 1).pop().expect("a team of one")
    }

    /// `n` workers that balance one box together: each has its own flow
    /// table, and they share the persistence table.
    pub fn team(cfg: WorkerConfig, n: usize) -> Vec<Worker> {
        Self::team_advised(cfg, n, &|_, _| {})
    }

    /// As [`Worker::team`], the flow tables on transparent huge pages: every
    /// packet reads its table at random, and one TLB entry then covers 2 MiB
    /// of it. `l4lb run` builds its workers so, and the benchmarks theirs.
    pub fn team_on_hugepages(cfg: WorkerConfig, n: usize) -> Vec<Worker> {
        Self::team_advised(cfg, n, &|addr, len| {
            crate::dpdk::advise_hugepages(addr, len);
        })
    }

    /// As [`Worker::new`], on huge pages (see [`Worker::team_on_hugepages`]).
    pub fn on_hugepages(cfg: WorkerConfig) -> Worker {
        Self::team_on_hugepages(cfg, 1).pop().expect("a team of one")
    }

    /// As [`Worker::team`]; `advise` sees each flow table's memory before it
    /// is first touched.
    fn team_advised(cfg: WorkerConfig, n: usize, advise: &dyn Fn(usize, usize)) -> Vec<Worker> {
        let n = n.clamp(1, u16::MAX as usize - 1);
        let persist = Arc::new(PersistTable::with_capacity(cfg.persist_capacity));
        (0..n).map(|i| Self::new_advised(cfg, persist.clone(), i as u16, n as u16, advise)).collect()
    }

    fn new_advised(
        cfg: WorkerConfig,
        persist: Arc<PersistTable>,
        index: u16,
        workers: u16,
        advise: &dyn Fn(usize, usize),
    ) -> Worker {
        Worker {
            flows: FlowTable::with_capacity_advised(cfg.flow_capacity, advise),
            persist,
            index,
            workers,
            handed_origin: NOT_HANDED,
            active: vec![0; cfg.backend_ids],
            sched: Vec::new(),
            generation: u64::MAX,
            icmp_bucket: TokenBucket::new(cfg.icmp_rate_per_s, cfg.icmp_burst),
            ident: 0,
            last_service: ServiceMemo::EMPTY,
            last_service_v6: ServiceMemoV6::EMPTY,
            per_backend: Arc::new(BackendCounters::new(cfg.backend_ids)),
            plan: Some(Box::default()),
            counters: Counters::default(),
            sync: None,
            fragments: FragmentServices::with_slots(cfg.fragment_slots),
            quotas: quota::Quotas::default(),
        }
    }

    /// Takes part in flow sync: consults `peers` for flows it does not
    /// track, and reports to `out` the flows it tracks whose backend the
    /// tables would not choose now (found by [`Worker::sync_scan`]).
    pub fn set_sync(&mut self, peers: Arc<SyncedFlows>, out: Arc<ArrayQueue<AtRisk>>) {
        self.sync = Some(Box::new(SyncSide {
            peers,
            out,
            cursor: 0,
            left: 0,
            generation: u64::MAX,
            found: false,
            found_now: false,
            next_pass_ms: 0,
        }));
    }

    /// Flow sync's scan, a few buckets at a time: after every new state, one
    /// pass over the flow table reports each live flow whose backend is not
    /// the one every box would pick for it now (from the key alone); while
    /// such flows exist, a pass again every 10 s refreshes the peers' copies.
    /// Returns the buckets read.
    pub fn sync_scan(&mut self, st: &ForwardingState, now_ms: u64, buckets: usize) -> usize {
        let Some(sync) = self.sync.as_deref_mut() else { return 0 };
        if st.generation != sync.generation {
            sync.generation = st.generation;
            sync.left = self.flows.buckets();
        } else if sync.left == 0 && sync.found && now_ms >= sync.next_pass_ms {
            sync.left = self.flows.buckets();
        }
        if sync.left == 0 {
            return 0;
        }
        let n = buckets.min(sync.left);
        let (mut reported, mut lost) = (0u64, 0u64);
        let out = &sync.out;
        let mut found = false;
        sync.cursor = self.flows.scan(sync.cursor, n, now_ms, |e| {
            let k = &e.key;
            let Some(si) = st
                .find_service(&k.dst, k.proto, k.dst_port)
                .or_else(|| st.find_service_any_port(&k.dst, k.proto))
            else {
                return;
            };
            let svc = &st.services[si];
            if svc.stateless_pick(k, k.hash()).is_some_and(|b| st.backends[b].id == e.backend) {
                return;
            }
            found = true;
            let left = e.expires_ms.saturating_sub(now_ms).min(u32::MAX as u64) as u32;
            match out.push(AtRisk { key: *k, backend: e.backend, expires_in_ms: left }) {
                Ok(()) => reported += 1,
                Err(_) => lost += 1,
            }
        });
        sync.found_now |= found;
        sync.left -= n;
        if sync.left == 0 {
            sync.found = std::mem::take(&mut sync.found_now);
            sync.next_pass_ms = now_ms + SYNC_REFRESH_MS;
        }
        self.counters[Counter::SyncReported] += reported;
        self.counters[Counter::SyncReportsLost] += lost;
        n
    }

    /// Flow sync for a flow decided now: reported at once (not at the next
    /// scan) when its backend is not the one every box would pick for it —
    /// a scheduler with per-box state (round robin, least connections),
    /// persistence, a peer's entry, a backend taking no new flows — so the
    /// peers know it from its first packet. A flow still opening is shared
    /// for as long as it would live established (the scans refresh it).
    #[inline(never)]
    fn share_if_at_risk(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        meta: &PacketMeta,
        backend: usize,
        state: FlowState,
    ) {
        let Some(sync) = self.sync.as_deref_mut() else { return };
        if svc.stateless_pick(&meta.key, meta.hash) == Some(backend) {
            return;
        }
        let state = if state.opening() { FlowState::Established } else { state };
        let ttl = svc.timeouts.for_state(state).min(u32::MAX as u64) as u32;
        let id = st.backends[backend].id;
        match sync.out.push(AtRisk { key: meta.key, backend: id, expires_in_ms: ttl }) {
            Ok(()) => self.counters[Counter::SyncReported] += 1,
            Err(_) => self.counters[Counter::SyncReportsLost] += 1,
        }
        // Periodic passes keep the peers' copy alive while the flow lives.
        sync.found = true;
        sync.found_now = true;
    }

    /// The backend a peer reported for a flow this worker does not track
    /// (flow sync), if it is in the state.
    #[inline(never)]
    fn synced_choice(&mut self, st: &ForwardingState, meta: &PacketMeta, now_ms: u64) -> Option<usize> {
        let sync = self.sync.as_deref()?;
        let id = sync.peers.get(&meta.key, meta.hash, now_ms)?;
        let b = st.slot_of(id)?;
        self.counters[Counter::SyncedFlows] += 1;
        Some(b)
    }

    /// This worker's per-backend counters (shared with the management core).
    pub fn backend_counters(&self) -> Arc<BackendCounters> {
        self.per_backend.clone()
    }

    pub fn flow_stats(&self) -> FlowTableStats {
        self.flows.stats()
    }

    /// The counter table with the flow table's own counts filled in.
    pub fn counter_snapshot(&self) -> Counters {
        let mut c = self.counters;
        let fs = self.flows.stats();
        c[Counter::FlowInserts] = fs.inserts;
        c[Counter::FlowsExpired] = fs.expired;
        c[Counter::EvictedUnconfirmed] = fs.evicted_unconfirmed;
        c[Counter::EvictedEstablished] = fs.evicted_established;
        c
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The live entry this worker tracks for `key`, if any.
    pub fn tracked(&self, key: &FlowKey, now_ms: u64) -> Option<Entry> {
        self.flows.lookup(key, key.hash(), now_ms).map(|s| self.flows.entry(s))
    }

    /// The backend id the box keeps `client` on for a persistent service,
    /// and until when (ms), if it does.
    pub fn persisted(&self, persist_id: u32, client: &[u8; 16], now_ms: u64) -> Option<(u32, u64)> {
        self.persist.peek(persist_id, client, now_ms)
    }

    /// This worker's active flows per backend id.
    pub fn active_flows(&self, backend_id: u32) -> u32 {
        self.active.get(backend_id as usize).copied().unwrap_or(0)
    }

    /// Prepares per-service scheduler state for a new forwarding state. Called
    /// when a state is swapped in (per burst at most), not per packet; it
    /// allocates only when a service's backend count changes.
    pub fn adopt(&mut self, st: &ForwardingState) {
        if st.generation == self.generation {
            return;
        }
        self.generation = st.generation;
        self.last_service = ServiceMemo::EMPTY;
        self.last_service_v6 = ServiceMemoV6::EMPTY;
        // Scheduler state for every service of the state (it grows with the
        // largest state seen, here: not on the packet path).
        let n = st.services.len().min(MAX_SERVICES);
        if self.sched.len() < n {
            self.sched.resize_with(n, SchedState::default);
        }
        for (i, svc) in st.services.iter().enumerate().take(MAX_SERVICES) {
            let s = &mut self.sched[i];
            s.wrr.clear();
            s.wrr.resize(svc.backends.len(), 0);
        }
        self.quotas.adopt(st, &self.active, self.flows.capacity(), self.workers);
    }

    /// Service `i`'s entries in this worker's flow table and the most its
    /// quota lets it hold, while it has a table share.
    pub fn quota_usage(&self, i: usize) -> Option<(u32, u32)> {
        self.quotas.usage(i)
    }

    /// A new entry of backend `id` is in the flow table: its active count
    /// and its service's quota count.
    #[inline(always)]
    fn hold(&mut self, id: u32) {
        if let Some(a) = self.active.get_mut(id as usize) {
            *a += 1;
        }
        if self.quotas.on {
            self.quotas.taken(id);
        }
    }

    /// Reclaims expired flows in the next `buckets` buckets of the flow table.
    pub fn sweep(&mut self, now_ms: u64, buckets: usize) -> usize {
        let Worker { flows, active, quotas, .. } = self;
        flows.sweep(now_ms, buckets, &mut release(active, quotas))
    }

    /// Prefetches what the next [`Worker::sweep`] of `buckets` reads.
    pub fn prefetch_sweep<F: Prefetch>(&self, buckets: usize, pf: &F) {
        self.flows.prefetch_sweep(buckets, pf)
    }

    /// Processes one packet received on `in_port`.
    pub fn process<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
    ) -> Verdict {
        self.adopt(st);
        let mut meta = PacketMeta::default();
        let v = match self.parse(st, pkt, in_port, &mut meta) {
            Some(v) => v,
            None => {
                let table = TablePlan { at: self.flows.place_of(&meta.key, meta.hash), hint: None };
                let found = self.flows.find(&meta.key, &table.at, now_ms);
                self.balance(st, pkt, in_port, now_ms, &meta, found, &table)
            }
        };
        self.count(v);
        v
    }

    /// Processes a packet another worker handed over (`Verdict::Handoff`);
    /// `origin` is the worker that received it from the NIC.
    pub fn process_handed<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        origin: u16,
    ) -> Verdict {
        self.handed_origin = origin;
        let v = self.process(st, pkt, in_port, now_ms);
        self.handed_origin = NOT_HANDED;
        v
    }

    /// Counts a verdict: forwards (nearly every packet) with one add, not a
    /// jump through the verdict's variants.
    #[inline(always)]
    fn count(&mut self, v: Verdict) {
        if let Verdict::Forward { .. } = v {
            self.counters[Counter::Forwarded] += 1;
            return;
        }
        self.count_other(v)
    }

    #[inline(never)]
    fn count_other(&mut self, v: Verdict) {
        self.counters.count(v)
    }
}
