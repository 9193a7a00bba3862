//! The per-packet decision: parse, classify, track, schedule, rewrite.
//!
//! `Worker::process` takes one packet, the immutable [`ForwardingState`] and
//! the time, and returns a [`Verdict`]; the packet is rewritten in place (DSR
//! encapsulation, MAC rewrite, or a reply built over it). `process_burst` does
//! the same for a burst, with every flow-table line prefetched first. Nothing
//! here allocates, locks, logs or reads a clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::packet::Packet;
use crate::balancer::flow::{key_v4, key_v6, mapped, FlowKey, KeyKind};
use crate::balancer::flowtable::{
    refresh_slack, Entry, FlowState, FlowTable, FlowTableStats, InsertHint, Place,
};
use crate::balancer::persist::PersistTable;
use crate::balancer::state::{
    Backend, EncapTemplate, Forwarding, ForwardingState, PortInfo, SchedState, Service,
};
use crate::balancer::Prefetch;
use crate::net::ethernet;
use crate::net::{arp, checksum, icmp, ipv4, ipv6, proto, put16, tcp};

/// What to do with a packet after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the rewritten packet on this port.
    Forward {
        port: u16,
    },
    /// The packet was turned into a reply (ARP, echo, frag-needed, NA): send
    /// it back out on this port.
    Reply {
        port: u16,
    },
    /// For the host's own stack (ARP replies, traffic to l4lb's addresses that
    /// it does not answer itself).
    ToKernel,
    Drop(DropReason),
}

/// Why a packet was dropped; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// A header failed its length/version checks.
    Malformed = 0,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// Unicast frame for another MAC address.
    NotOurMac,
    /// Neither IPv4, IPv6 nor ARP.
    UnsupportedEthertype,
    /// Addressed to neither l4lb nor a VIP.
    NotForUs,
    /// A VIP, but no service for this protocol and port.
    NoService,
    /// The service has no backend taking new flows.
    NoBackend,
    /// TTL / hop limit 0.
    TtlExpired,
    /// Too big to encapsulate and not allowed a frag-needed answer (no DF).
    TooBig,
    /// A frag-needed / packet-too-big answer was due but over the rate limit.
    IcmpRateLimited,
    /// The next hop's MAC is unknown.
    NoNeighbour,
    /// The egress port has no address of the outer family to encapsulate from.
    NoSourceAddress,
    /// Not enough headroom to encapsulate.
    NoHeadroom,
    /// ARP request for an address l4lb does not own.
    ArpNotOurs,
}

impl DropReason {
    pub const COUNT: usize = 14;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NotOurMac,
        DropReason::UnsupportedEthertype,
        DropReason::NotForUs,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::IcmpRateLimited,
        DropReason::NoNeighbour,
        DropReason::NoSourceAddress,
        DropReason::NoHeadroom,
        DropReason::ArpNotOurs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NotOurMac => "not_our_mac",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::NotForUs => "not_for_us",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TooBig => "too_big",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::NoSourceAddress => "no_source_address",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::ArpNotOurs => "arp_not_ours",
        }
    }
}

/// One worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub forwarded: u64,
    pub replied: u64,
    pub to_kernel: u64,
    pub drops: [u64; DropReason::COUNT],
    pub new_flows: u64,
    /// Flows whose backend left the state and were scheduled again.
    pub rescheduled: u64,
    pub icmp_too_big_sent: u64,
}

impl Counters {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    pub fn add(&mut self, o: &Counters) {
        self.forwarded += o.forwarded;
        self.replied += o.replied;
        self.to_kernel += o.to_kernel;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        self.new_flows += o.new_flows;
        self.rescheduled += o.rescheduled;
        self.icmp_too_big_sent += o.icmp_too_big_sent;
    }
}

/// Sizes of a worker's tables and its ICMP rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    pub flow_capacity: usize,
    pub persist_capacity: usize,
    /// frag-needed / packet-too-big answers per second (token bucket rate).
    pub icmp_rate_per_s: u64,
    pub icmp_burst: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            flow_capacity: 1 << 20,
            persist_capacity: 1 << 16,
            icmp_rate_per_s: 100,
            icmp_burst: 20,
        }
    }
}

/// Packets and bytes (IP length, before encapsulation) sent to each backend,
/// by backend id. One block per worker, written only by that worker (relaxed
/// load + store, no locked instruction) and read by the management core at
/// any time; padded so two workers' blocks never share a cache line. A
/// backend's three counters sit together: one bounds check, one line.
#[repr(align(64))]
pub struct BackendCounters {
    by_id: Box<[BackendCount]>,
}

#[derive(Default)]
#[repr(align(32))]
struct BackendCount {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
}

impl BackendCounters {
    fn new(ids: usize) -> Self {
        BackendCounters { by_id: (0..ids).map(|_| BackendCount::default()).collect() }
    }

    #[inline(always)]
    fn count_new_flow(&self, id: usize) {
        if let Some(c) = self.by_id.get(id) {
            c.new_flows.store(c.new_flows.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// Flows started on (or moved to) backend `id`.
    pub fn new_flows(&self, id: u32) -> u64 {
        self.by_id.get(id as usize).map_or(0, |c| c.new_flows.load(Ordering::Relaxed))
    }

    #[inline(always)]
    fn count(&self, id: usize, bytes: u64) {
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

/// Backend ids per worker for active-flow counts.
pub const MAX_BACKEND_IDS: usize = 1 << 16;
/// Services per worker for scheduler state.
pub const MAX_SERVICES: usize = 4096;

/// Outer header sizes.
const V4_HDR: usize = 20;
const V6_HDR: usize = 40;
const UDP_HDR: usize = 8;
/// Hop limit / TTL of packets l4lb originates.
const OWN_TTL: u8 = 64;
/// GUE source ports come from this range (RFC 6335 dynamic ports).
const GUE_SPORT_BASE: u16 = 49152;

/// The per-worker mutable side of the pipeline.
pub struct Worker {
    flows: FlowTable,
    persist: PersistTable,
    active: Vec<u32>,
    sched: Vec<SchedState>,
    generation: u64,
    icmp_tokens_milli: u64,
    icmp_last_ms: u64,
    icmp_rate: u64,
    icmp_burst: u64,
    ident: u16,
    last_service: ServiceMemo,
    last_service_v6: ServiceMemoV6,
    per_backend: Arc<BackendCounters>,
    plan: Option<Box<BurstPlan>>,
    pub counters: Counters,
}

/// Packets per `process_burst` call at most.
const BURST: usize = crate::dpdk::BURST_MAX;

/// What [`Worker::prepare_burst`] hands [`Worker::finish_burst`]: each
/// packet's parse (or its verdict, when parsing decided it) and flow-table
/// place. Allocated once per worker (about 6 KiB for 64 packets), reused
/// for every burst.
pub struct BurstPlan {
    vips: [Vip; BURST],
    /// Each VIP packet's flow-table place and insert hint.
    places: [TablePlan; BURST],
    is_vip: [bool; BURST],
    verdicts: [Verdict; BURST],
    /// Packets planned.
    n: usize,
    /// The generation of the state the plan was made with.
    generation: u64,
    /// Whether the second prefetch pass ran ([`Worker::stage_burst`]).
    staged: bool,
}

impl Default for BurstPlan {
    fn default() -> Self {
        BurstPlan {
            vips: [Vip::default(); BURST],
            places: [TablePlan::default(); BURST],
            is_vip: [false; BURST],
            verdicts: [Verdict::Drop(DropReason::Malformed); BURST],
            n: 0,
            generation: u64::MAX,
            staged: false,
        }
    }
}

impl BurstPlan {
    /// The verdicts of the last finished burst, one per packet.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts[..self.n]
    }
}

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
struct Vip {
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

impl Vip {
    /// A TCP SYN without ACK: most likely a new flow (its table lines are
    /// fetched as for an insert).
    #[inline(always)]
    fn opens(&self) -> bool {
        self.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN
    }
}

impl Default for Vip {
    fn default() -> Self {
        Vip {
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

/// Active-flow bookkeeping for entries leaving the flow table (given their
/// backend id).
fn release(active: &mut [u32]) -> impl FnMut(u32) + '_ {
    move |backend| {
        if let Some(a) = active.get_mut(backend as usize) {
            *a = a.saturating_sub(1);
        }
    }
}

impl Worker {
    /// Allocates every table up front.
    pub fn new(cfg: WorkerConfig) -> Worker {
        Self::new_advised(cfg, &|_, _| {})
    }

    /// As [`Worker::new`], the flow table on transparent huge pages: every
    /// packet reads it at random, and one TLB entry then covers 2 MiB of it.
    /// `l4lb run` builds its workers so, and the benchmarks theirs.
    pub fn on_hugepages(cfg: WorkerConfig) -> Worker {
        Self::new_advised(cfg, &|addr, len| {
            crate::dpdk::advise_hugepages(addr, len);
        })
    }

    /// As [`Worker::new`]; `advise` sees the flow table's memory before it is
    /// first touched.
    fn new_advised(cfg: WorkerConfig, advise: &dyn Fn(usize, usize)) -> Worker {
        Worker {
            flows: FlowTable::with_capacity_advised(cfg.flow_capacity, advise),
            persist: PersistTable::with_capacity(cfg.persist_capacity),
            active: vec![0; MAX_BACKEND_IDS],
            sched: (0..MAX_SERVICES).map(|_| SchedState::default()).collect(),
            generation: u64::MAX,
            icmp_tokens_milli: cfg.icmp_burst * 1000,
            icmp_last_ms: 0,
            icmp_rate: cfg.icmp_rate_per_s,
            icmp_burst: cfg.icmp_burst,
            ident: 0,
            last_service: ServiceMemo::EMPTY,
            last_service_v6: ServiceMemoV6::EMPTY,
            per_backend: Arc::new(BackendCounters::new(MAX_BACKEND_IDS)),
            plan: Some(Box::default()),
            counters: Counters::default(),
        }
    }

    /// This worker's per-backend counters (shared with the management core).
    pub fn backend_counters(&self) -> Arc<BackendCounters> {
        self.per_backend.clone()
    }

    pub fn flow_stats(&self) -> FlowTableStats {
        self.flows.stats()
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The live entry this worker tracks for `key`, if any.
    pub fn tracked(&self, key: &FlowKey, now_ms: u64) -> Option<Entry> {
        self.flows.lookup(key, key.hash(), now_ms).map(|s| *self.flows.entry(s))
    }

    /// The backend id this worker keeps `client` on for a persistent
    /// service, and until when (ms), if it does.
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
        for (i, svc) in st.services.iter().enumerate().take(MAX_SERVICES) {
            let s = &mut self.sched[i];
            s.wrr.clear();
            s.wrr.resize(svc.backends.len(), 0);
        }
    }

    /// Reclaims expired flows in the next `buckets` buckets of the flow table.
    pub fn sweep(&mut self, now_ms: u64, buckets: usize) -> usize {
        let Worker { flows, active, .. } = self;
        flows.sweep(now_ms, buckets, &mut release(active))
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
        let mut vip = Vip::default();
        let v = match self.parse(st, pkt, in_port, &mut vip) {
            Some(v) => v,
            None => {
                let table = TablePlan { at: self.flows.place_of(vip.hash), hint: None };
                let slot = self.flows.lookup_place(&vip.key, &table.at, now_ms);
                self.balance(st, pkt, in_port, now_ms, &vip, slot, &table)
            }
        };
        self.count(v);
        v
    }

    /// Processes a burst in three passes: parse every packet and prefetch, for
    /// those bound for VIPs, the primary signature line and the preferred
    /// entry (both buckets' lines for a TCP SYN); prefetch the entry a key
    /// matched elsewhere, or the second line; then decide each packet, in
    /// order. `verdicts[i]` is for `pkts[i]`.
    pub fn process_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        now_ms: u64,
        verdicts: &mut [Verdict],
        pf: &F,
    ) {
        // The per-burst plan lives with the worker: no 6 KiB of stack to
        // clear per burst. (Taken out and put back to borrow it beside `self`.)
        let mut plan = self.plan.take().unwrap_or_default();
        let n = pkts.len().min(verdicts.len());
        self.prepare_burst(st, &mut pkts[..n], in_port, &mut plan, pf);
        self.finish_burst(st, &mut pkts[..n], in_port, now_ms, &mut plan, pf);
        verdicts[..plan.n].copy_from_slice(&plan.verdicts[..plan.n]);
        self.plan = Some(plan);
    }

    /// The first pass of [`Worker::process_burst`]: parses every packet
    /// (answering ARP, NDP and echo requests in place) and prefetches the
    /// flow-table lines of those bound for VIPs. A worker may prepare its next
    /// burst before it finishes this one (see `BalanceWorker::run`), so the
    /// lines arrive while it receives and decides other packets.
    pub fn prepare_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        plan: &mut BurstPlan,
        pf: &F,
    ) {
        self.adopt(st);
        let BurstPlan { vips, places, is_vip, verdicts, n: planned, generation, staged, .. } = plan;
        let n = pkts.len().min(BURST);
        *planned = n;
        *generation = st.generation;
        *staged = false;
        for i in 0..n {
            is_vip[i] = false;
            match self.parse(st, &mut pkts[i], in_port, &mut vips[i]) {
                Some(v) => verdicts[i] = v,
                None => {
                    places[i].at = self.flows.place_of(vips[i].hash);
                    if vips[i].opens() {
                        self.flows.prefetch_place_new(&places[i].at, pf);
                    } else {
                        self.flows.prefetch_place(&places[i].at, pf);
                    }
                    is_vip[i] = true;
                }
            }
        }
    }

    /// The second prefetch pass of a prepared burst, once its primary
    /// signature lines are in cache: the entries the keys matched, the second
    /// bucket's line of keys not found in the first, and for a new flow the
    /// slot its insert will write (its insert hint). The balancing worker
    /// runs it a poll after [`Worker::prepare_burst`] and before it receives
    /// its next burst, so these lines (a miss in DRAM each, with a table
    /// larger than the caches) arrive while it receives and parses that burst;
    /// [`Worker::finish_burst`] runs it itself when it has not run. Reads the
    /// table only. The worker changes nothing in the table between the two
    /// calls, and each hint is checked again at its insert: a slot changed in
    /// between costs a fresh choice, never a wrong one. A plan made with
    /// another forwarding state is left to the finish, which parses it again.
    pub fn stage_burst<F: Prefetch>(&self, st: &ForwardingState, plan: &mut BurstPlan, now_ms: u64, pf: &F) {
        let BurstPlan { vips, places, is_vip, n, generation, staged, .. } = plan;
        if *staged || *generation != st.generation {
            return;
        }
        *staged = true;
        let n = (*n).min(BURST);
        for i in 0..n {
            // (As statements: written as one `if` expression, LLVM's code for
            // this loop took 21 more instructions per hot packet, callgrind.)
            if is_vip[i] {
                let place = &mut places[i];
                place.hint = None;
                if vips[i].opens() {
                    place.hint = self.flows.prefetch_entry_place_new(&place.at, now_ms, pf);
                } else {
                    self.flows.prefetch_entry_place(&place.at, pf);
                }
            }
        }
    }

    /// The rest of [`Worker::process_burst`] for a prepared burst (the same
    /// packets, in the same order): stages it (see [`Worker::stage_burst`])
    /// unless that ran, then decides each packet in order.
    /// `plan.verdicts()[i]` is for `pkts[i]`. A plan made with another
    /// forwarding state (one arrived in between) has its VIP packets parsed
    /// again: services are numbered per state.
    pub fn finish_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        now_ms: u64,
        plan: &mut BurstPlan,
        pf: &F,
    ) {
        if plan.generation != st.generation {
            self.adopt(st);
            let BurstPlan { vips, places, is_vip, verdicts, n, generation, staged, .. } = &mut *plan;
            *generation = st.generation;
            *staged = false;
            for i in 0..(*n).min(pkts.len()).min(BURST) {
                if is_vip[i] {
                    // A VIP packet is not changed by its parse: parsed again as received.
                    match self.parse(st, &mut pkts[i], in_port, &mut vips[i]) {
                        Some(v) => (is_vip[i], verdicts[i]) = (false, v),
                        None => places[i].at = self.flows.place_of(vips[i].hash),
                    }
                }
            }
        }
        self.stage_burst(st, plan, now_ms, pf);
        let BurstPlan { vips, places, is_vip, verdicts, n, .. } = plan;
        // (Bounded by BURST too, so the plan's arrays need no bounds checks.)
        let n = (*n).min(pkts.len()).min(BURST);
        for i in 0..n {
            if is_vip[i] {
                let slot = self.flows.lookup_place(&vips[i].key, &places[i].at, now_ms);
                verdicts[i] = self.balance(st, &mut pkts[i], in_port, now_ms, &vips[i], slot, &places[i]);
            }
            self.count(verdicts[i]);
        }
    }

    /// Counts a verdict: forwards (nearly every packet) with one add, not a
    /// jump through the verdict's variants.
    #[inline(always)]
    fn count(&mut self, v: Verdict) {
        if let Verdict::Forward { .. } = v {
            self.counters.forwarded += 1;
            return;
        }
        self.count_other(v)
    }

    #[inline(never)]
    fn count_other(&mut self, v: Verdict) {
        match v {
            Verdict::Forward { .. } => self.counters.forwarded += 1,
            Verdict::Reply { .. } => self.counters.replied += 1,
            Verdict::ToKernel => self.counters.to_kernel += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
        }
    }

    /// Everything up to the flow lookup: L2 checks, ARP/NDP/echo answers, and
    /// the flow key and service of VIP traffic. Returns the verdict when it is
    /// already decided, or `None` with `out` filled for a VIP packet. The IPv4
    /// fast path is inlined into the burst loop; the rest is a call.
    #[inline(always)]
    fn parse<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        out: &mut Vip,
    ) -> Option<Verdict> {
        let Some(port) = st.ports.get(in_port as usize) else {
            return Some(Verdict::Drop(DropReason::NotForUs));
        };
        if fast_v4(st, port, in_port, pkt.data(), &mut self.last_service, out).is_some() {
            return None;
        }
        self.parse_slow(st, pkt, in_port, port, out)
    }

    /// [`Worker::parse`] past the IPv4 fast path: the IPv6 one, then the
    /// general parser. (Inlining the IPv6 fast path too made the burst loop
    /// slower for IPv4 and no faster for IPv6.)
    #[inline(never)]
    fn parse_slow<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        port: &PortInfo,
        out: &mut Vip,
    ) -> Option<Verdict> {
        if fast_v6(st, port, in_port, pkt.data(), &mut self.last_service_v6, out).is_some() {
            return None;
        }
        self.parse_general(st, pkt, in_port, port, out)
    }

    /// The general parser, which decides every packet the fast paths decline
    /// (and, tests check, every one they take, identically).
    fn parse_general<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        port: &PortInfo,
        out: &mut Vip,
    ) -> Option<Verdict> {
        use DropReason::*;
        let (l2_len, ethertype, dst_mac) = match ethernet::Frame::new_checked(pkt.data()) {
            Ok(f) => (f.header_len(), f.ethertype(), f.dst()),
            Err(_) => return Some(Verdict::Drop(Malformed)),
        };
        let multicast = ethernet::is_multicast(&dst_mac);
        if !multicast && dst_mac != port.mac {
            return Some(Verdict::Drop(NotOurMac));
        }
        match ethertype {
            ethernet::ETHERTYPE_ARP => Some(self.arp(st, pkt, l2_len, port, in_port)),
            ethernet::ETHERTYPE_IPV4 => self.parse_v4(st, pkt, l2_len, port, in_port, out),
            ethernet::ETHERTYPE_IPV6 => self.parse_v6(st, pkt, l2_len, port, in_port, out),
            _ => Some(Verdict::Drop(UnsupportedEthertype)),
        }
    }

    fn arp<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortInfo,
        in_port: u16,
    ) -> Verdict {
        let data = pkt.data_mut();
        let Ok(a) = arp::Packet::new_checked(&data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if a.op() != arp::OP_REQUEST {
            return Verdict::ToKernel;
        }
        let target = a.target_ip();
        let ours = port.ipv4 == Some(target) || st.is_vip(&mapped(target)).is_some_and(|s| s.answer_arp);
        if !ours {
            return Verdict::Drop(DropReason::ArpNotOurs);
        }
        let (smac, sip) = (a.sender_mac(), a.sender_ip());
        arp::write(&mut data[l2..], arp::OP_REPLY, port.mac, target, smac, sip);
        data[0..6].copy_from_slice(&smac);
        data[6..12].copy_from_slice(&port.mac);
        Verdict::Reply { port: in_port }
    }

    fn parse_v4<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortInfo,
        in_port: u16,
        out: &mut Vip,
    ) -> Option<Verdict> {
        use DropReason::*;
        let data = pkt.data();
        let multicast = data[0] & 1 == 1;
        let Ok(ip) = ipv4::Packet::new_checked(&data[l2..]) else {
            return Some(Verdict::Drop(Malformed));
        };
        if !ip.header_checksum_ok() {
            return Some(Verdict::Drop(BadChecksum));
        }
        if ip.ttl() == 0 {
            return Some(Verdict::Drop(TtlExpired));
        }
        let dst = ip.dst();
        if port.ipv4 == Some(dst) {
            return Some(self.local_v4(pkt, l2, in_port, true));
        }
        if multicast {
            return Some(Verdict::Drop(NotForUs));
        }
        let (key, kind) = match key_v4(&ip) {
            Ok(k) => k,
            Err(_) => return Some(Verdict::Drop(Malformed)),
        };
        let Some(service) = self.service_for(st, &key, kind, ip.protocol()) else {
            return Some(if st.is_vip(&mapped(dst)).is_some() {
                if ip.protocol() == proto::ICMP && kind == KeyKind::ThreeTuple {
                    self.local_v4(pkt, l2, in_port, false)
                } else {
                    Verdict::Drop(NoService)
                }
            } else {
                Verdict::Drop(NotForUs)
            });
        };
        let tcp_flags = tcp_flags(ip.protocol(), kind, ip.payload());
        *out = Vip {
            l2_len: l2 as u8,
            ip_len: ip.total_len() as u16,
            v6: false,
            key,
            kind,
            hash: key.hash(),
            tcp_flags,
            service: service as u32,
            df: ip.dont_fragment(),
            tos: ip.dscp_ecn(),
        };
        None
    }

    fn parse_v6<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortInfo,
        in_port: u16,
        out: &mut Vip,
    ) -> Option<Verdict> {
        use DropReason::*;
        let data = pkt.data();
        let Ok(ip) = ipv6::Packet::new_checked(&data[l2..]) else {
            return Some(Verdict::Drop(Malformed));
        };
        let Ok(upper) = ip.upper() else { return Some(Verdict::Drop(Malformed)) };
        let dst = ip.dst();
        let l4 = &ip.payload()[upper.offset - ipv6::HEADER_LEN..];
        if upper.protocol == proto::ICMPV6 && upper.fragment.is_none() && l4.len() >= 2 {
            let t = l4[0];
            if t == icmp::v6::NEIGHBOR_SOLICIT {
                return Some(self.neighbour_solicit(st, pkt, l2, upper.offset, port, in_port));
            }
            if t == icmp::v6::NEIGHBOR_ADVERT || t == 133 || t == 134 {
                // Advertisements and router messages are for the control plane.
                return Some(Verdict::ToKernel);
            }
        }
        if ip.hop_limit() == 0 {
            return Some(Verdict::Drop(TtlExpired));
        }
        if port.ipv6 == Some(dst) {
            return Some(self.local_v6(pkt, l2, upper.offset, upper.protocol, in_port, true));
        }
        if dst.is_multicast() {
            return Some(Verdict::Drop(NotForUs));
        }
        let (key, kind) = match key_v6(&ip, &upper) {
            Ok(k) => k,
            Err(_) => return Some(Verdict::Drop(Malformed)),
        };
        let Some(service) = self.service_for(st, &key, kind, upper.protocol) else {
            return Some(if st.is_vip(&dst.octets()).is_some() {
                if upper.protocol == proto::ICMPV6 && kind == KeyKind::ThreeTuple {
                    self.local_v6(pkt, l2, upper.offset, upper.protocol, in_port, false)
                } else {
                    Verdict::Drop(NoService)
                }
            } else {
                Verdict::Drop(NotForUs)
            });
        };
        let tcp_flags = tcp_flags(upper.protocol, kind, l4);
        *out = Vip {
            l2_len: l2 as u8,
            ip_len: ip.total_len() as u16,
            v6: true,
            key,
            kind,
            hash: key.hash(),
            tcp_flags,
            service: service as u32,
            df: true,
            tos: ip.traffic_class(),
        };
        None
    }

    /// The service a key belongs to. Fragments carry no ports: they go to the
    /// VIP's first service of their protocol (docs/architecture.md).
    #[inline]
    fn service_for(&self, st: &ForwardingState, key: &FlowKey, kind: KeyKind, _proto: u8) -> Option<usize> {
        match kind {
            KeyKind::Fragment => st.find_service_any_port(&key.dst, key.proto),
            _ => st.find_service(&key.dst, key.proto, key.dst_port),
        }
    }

    /// Traffic to l4lb's own IPv4 address (or ICMP to a VIP): echo requests
    /// are answered, the rest goes to the kernel (own) or is dropped (VIP).
    fn local_v4<P: Packet>(&mut self, pkt: &mut P, l2: usize, in_port: u16, own: bool) -> Verdict {
        let data = pkt.data_mut();
        let ihl = ((data[l2] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([data[l2 + 2], data[l2 + 3]]) as usize;
        let is_echo = data[l2 + 9] == proto::ICMP
            && total >= ihl + icmp::HEADER_LEN
            && data[l2 + ihl] == icmp::v4::ECHO_REQUEST
            && data[l2 + 6] & 0x3f == 0
            && data[l2 + 7] == 0;
        if !is_echo {
            return if own { Verdict::ToKernel } else { Verdict::Drop(DropReason::NoService) };
        }
        swap_macs(data);
        let ip = &mut data[l2..];
        let (src, dst): ([u8; 4], [u8; 4]) =
            (ip[12..16].try_into().unwrap_or_default(), ip[16..20].try_into().unwrap_or_default());
        ip[12..16].copy_from_slice(&dst);
        ip[16..20].copy_from_slice(&src);
        ip[8] = OWN_TTL;
        let mut p = ipv4::Packet::new_checked(&mut ip[..]).expect("checked by parse_v4");
        p.fill_checksum();
        set_icmp_type(ip, ihl, icmp::v4::ECHO_REPLY);
        Verdict::Reply { port: in_port }
    }

    fn local_v6<P: Packet>(
        &mut self,
        pkt: &mut P,
        l2: usize,
        l4_off: usize,
        upper: u8,
        in_port: u16,
        own: bool,
    ) -> Verdict {
        let data = pkt.data_mut();
        let is_echo = upper == proto::ICMPV6
            && data.len() >= l2 + l4_off + 8
            && data[l2 + l4_off] == icmp::v6::ECHO_REQUEST;
        if !is_echo {
            return if own { Verdict::ToKernel } else { Verdict::Drop(DropReason::NoService) };
        }
        swap_macs(data);
        let ip = &mut data[l2..];
        let mut src = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        ip.copy_within(24..40, 8);
        ip[24..40].copy_from_slice(&src);
        ip[7] = OWN_TTL;
        // Swapping source and destination leaves the pseudo-header sum as it was.
        set_icmp_type(ip, l4_off, icmp::v6::ECHO_REPLY);
        Verdict::Reply { port: in_port }
    }

    /// Answers a neighbour solicitation for the port's IPv6 address (or a VIP
    /// that asks for it) with a solicited advertisement.
    fn neighbour_solicit<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        l4_off: usize,
        port: &PortInfo,
        in_port: u16,
    ) -> Verdict {
        let data = pkt.data();
        let Ok(ip) = ipv6::Packet::new_checked(&data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if ip.hop_limit() != 255 {
            return Verdict::Drop(DropReason::Malformed); // RFC 4861 §7.1.1
        }
        let Ok(ns) = icmp::parse_ndp(&ip.payload()[l4_off - ipv6::HEADER_LEN..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let ours =
            port.ipv6 == Some(ns.target) || st.is_vip(&ns.target.octets()).is_some_and(|s| s.answer_arp);
        if !ours {
            return Verdict::Drop(DropReason::ArpNotOurs);
        }
        let src = ip.src();
        let (dst_ip, dst_mac, solicited) = if src.is_unspecified() {
            (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0x33, 0x33, 0, 0, 0, 1], false)
        } else {
            (src, ns.link_addr.unwrap_or_else(|| ethernet::mac_at(data, 6)), true)
        };
        // NA: 24 bytes + target link-layer option (8).
        let want = l2 + ipv6::HEADER_LEN + 32;
        let have = pkt.data().len();
        let sized = if have > want { pkt.trim_back(have - want) } else { pkt.append(want - have) };
        if !sized {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let data = pkt.data_mut();
        data[0..6].copy_from_slice(&dst_mac);
        data[6..12].copy_from_slice(&port.mac);
        ethernet::set_ethertype(data, l2, ethernet::ETHERTYPE_IPV6);
        ipv6::Repr {
            src: ns.target,
            dst: dst_ip,
            next_header: proto::ICMPV6,
            payload_len: 32,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
        }
        .write(&mut data[l2..]);
        let m = &mut data[l2 + ipv6::HEADER_LEN..];
        m[0] = icmp::v6::NEIGHBOR_ADVERT;
        m[1] = 0;
        m[2] = 0;
        m[3] = 0;
        let flags = icmp::v6::NA_OVERRIDE | if solicited { icmp::v6::NA_SOLICITED } else { 0 };
        m[4..8].copy_from_slice(&flags.to_be_bytes());
        m[8..24].copy_from_slice(&ns.target.octets());
        m[24] = icmp::v6::OPT_TARGET_LL;
        m[25] = 1;
        m[26..32].copy_from_slice(&port.mac);
        let sum = checksum::pseudo_v6(&ns.target, &dst_ip, proto::ICMPV6, 32);
        let c = !checksum::fold(checksum::add(sum, &m[..32]));
        put16(m, 2, c);
        Verdict::Reply { port: in_port }
    }

    /// Flow tracking, scheduling and the DSR rewrite of one VIP packet:
    /// `slot` is its flow's, if tracked; `table` its place in the flow table.
    #[allow(clippy::too_many_arguments)]
    fn balance<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        vip: &Vip,
        slot: Option<usize>,
        table: &TablePlan,
    ) -> Verdict {
        let svc = &st.services[vip.service as usize];
        let kind = vip.kind;
        // Whether this packet moved the flow's expiry (or started or moved the
        // flow): only then is the client's persistence refreshed, so that
        // most packets of a persistent flow skip that table too.
        let mut refreshed = true;
        // The backend's slot in the state and its stable id.
        let (backend, id) = match slot {
            Some(s) => {
                let (e_backend, e_state) = {
                    let e = self.flows.entry(s);
                    (e.backend, e.state)
                };
                match st.slot_of(e_backend) {
                    Some(b) => {
                        if kind != KeyKind::IcmpError {
                            let state = next_state(svc.proto, kind, vip.tcp_flags, Some(e_state));
                            let t = svc.timeouts.for_state(state);
                            // Persistence bounds the slack too (per service).
                            let slack = refresh_slack(t).min(svc.persist_slack_ms);
                            refreshed = self.flows.refresh(s, state, now_ms + t, slack, now_ms);
                        }
                        (b, e_backend)
                    }
                    None => {
                        // Its backend is gone (down or removed): this flow moves.
                        let Some(b) = self.schedule(st, svc, vip, now_ms) else {
                            return Verdict::Drop(DropReason::NoBackend);
                        };
                        let id = st.backends[b].id;
                        let Worker { flows, active, .. } = self;
                        flows.rebind(s, id, &mut release(active));
                        if let Some(a) = self.active.get_mut(id as usize) {
                            *a += 1;
                        }
                        let state = next_state(svc.proto, kind, vip.tcp_flags, None);
                        self.flows.touch(s, state, now_ms + svc.timeouts.for_state(state), now_ms);
                        self.counters.rescheduled += 1;
                        self.per_backend.count_new_flow(id as usize);
                        (b, id)
                    }
                }
            }
            None => {
                let Some(b) = self.schedule(st, svc, vip, now_ms) else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                let id = st.backends[b].id;
                // ICMP errors follow flows; they never start one.
                if kind != KeyKind::IcmpError {
                    let state = next_state(svc.proto, kind, vip.tcp_flags, None);
                    let expires = now_ms + svc.timeouts.for_state(state);
                    let Worker { flows, active, .. } = self;
                    let entry = Entry { key: vip.key, backend: id, state, expires_ms: expires };
                    flows.insert_at(entry, &table.at, now_ms, table.hint, &mut release(active));
                    if let Some(a) = self.active.get_mut(id as usize) {
                        *a += 1;
                    }
                    self.counters.new_flows += 1;
                    self.per_backend.count_new_flow(id as usize);
                }
                (b, id)
            }
        };
        if svc.persistence_ms > 0 && kind != KeyKind::IcmpError && refreshed {
            self.persist.record(svc.persist_id, &vip.key.src, id, now_ms, now_ms + svc.persistence_ms);
        }
        let id = id as usize;
        if let Some(t) = st.template(backend) {
            if vip.ip_len <= t.max_inner && vip.l2_len as usize == ethernet::HEADER_LEN {
                self.per_backend.count(id, vip.ip_len as u64);
                return self.encap_template(t, pkt, vip);
            }
        }
        let v = self.rewrite(st, svc, &st.backends[backend], pkt, in_port, now_ms, vip);
        if let Verdict::Forward { .. } = v {
            self.per_backend.count(id, vip.ip_len as u64);
        }
        v
    }

    /// Encapsulation with a backend's precomputed template (untagged frames):
    /// one copy of the outer headers, then the per-packet fields. Produces
    /// the same bytes as the general path in `rewrite`.
    #[inline]
    fn encap_template<P: Packet>(&mut self, t: &EncapTemplate, pkt: &mut P, vip: &Vip) -> Verdict {
        const L2: usize = ethernet::HEADER_LEN;
        let ip_len = vip.ip_len as usize;
        let len = t.len as usize;
        let overhead = len - L2;
        let extra = pkt.len() - (L2 + ip_len);
        if (extra > 0 && !pkt.trim_back(extra)) || !pkt.prepend(overhead) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let d = pkt.data_mut();
        let Some(h) = d.get_mut(..len) else { return Verdict::Drop(DropReason::Malformed) };
        // Every template is 34 to 62 bytes: two fixed-size 32-byte copies,
        // overlapping in the middle, write it without a memcpy call (LLVM
        // folds copies of several constant lengths into one call).
        const HALF: usize = 32;
        if len < HALF {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (src, dst) = (&t.bytes[..len], &mut *h);
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<HALF>(), src.first_chunk::<HALF>()) {
            *d = *s;
        }
        if let (Some(d), Some(s)) = (dst.last_chunk_mut::<HALF>(), src.last_chunk::<HALF>()) {
            *d = *s;
        }
        let outer_ip = if t.outer_v6 { V6_HDR } else { V4_HDR };
        let payload_len = (ip_len + overhead - outer_ip) as u16;
        // Every template is at least Ethernet + IPv4 long: one length check
        // here instead of one per field below.
        let Some(ip) = h.first_chunk_mut::<{ L2 + V4_HDR }>() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if t.outer_v6 {
            let (tc, fl) = (vip.tos as u32, (vip.hash as u32) & 0x000f_ffff);
            let w0 = 0x6000_0000 | tc << 20 | fl;
            ip[14..18].copy_from_slice(&w0.to_be_bytes());
            ip[18..20].copy_from_slice(&payload_len.to_be_bytes());
            ip[20] = if vip.v6 { proto::IPV6 } else { proto::IPIP };
        } else {
            let total = payload_len as u32 + V4_HDR as u32;
            // Bytes 18..22: ident (0 with DF) and flags; `w` is the one of
            // the two that is not 0, for the checksum.
            let (w1, w) = if vip.df {
                (ipv4::FLAG_DF as u32, ipv4::FLAG_DF as u32)
            } else {
                self.ident = self.ident.wrapping_add(1);
                ((self.ident as u32) << 16, self.ident as u32)
            };
            ip[15] = vip.tos;
            ip[16..18].copy_from_slice(&(total as u16).to_be_bytes());
            ip[18..22].copy_from_slice(&w1.to_be_bytes());
            // Four terms below 2^16: two end-around-carry steps fold them.
            let s = t.sum as u32 + vip.tos as u32 + (total & 0xffff) + w;
            let s = (s & 0xffff) + (s >> 16);
            let c = !((s & 0xffff) + (s >> 16)) as u16;
            ip[24..26].copy_from_slice(&c.to_be_bytes());
        }
        if t.gue {
            let u = L2 + outer_ip;
            let sport = GUE_SPORT_BASE + ((vip.hash >> 16) as u16 & 0x3fff);
            h[u..u + 2].copy_from_slice(&sport.to_be_bytes());
            h[u + 4..u + 6].copy_from_slice(&payload_len.to_be_bytes());
        }
        Verdict::Forward { port: t.port }
    }

    /// A backend for a new flow: the persisted one if live, else the scheduler's.
    fn schedule(&mut self, st: &ForwardingState, svc: &Service, vip: &Vip, now_ms: u64) -> Option<usize> {
        if svc.persistence_ms > 0 {
            if let Some(id) = self.persist.lookup(svc.persist_id, &vip.key.src, now_ms) {
                if let Some(b) = st.slot_of(id).filter(|&b| !st.backends[b].draining) {
                    return Some(b);
                }
            }
        }
        let sched = self.sched.get_mut(vip.service as usize)?;
        // `vip.hash` is the documented flow hash, computed once by the parse.
        svc.pick(st, &vip.key, vip.hash, &self.active, sched)
    }

    #[allow(clippy::too_many_arguments)]
    fn rewrite<P: Packet>(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        b: &Backend,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        vip: &Vip,
    ) -> Verdict {
        let Some(out) = st.ports.get(b.port) else { return Verdict::Drop(DropReason::NoNeighbour) };
        let Some(next_hop) = b.next_hop else { return Verdict::Drop(DropReason::NoNeighbour) };
        if svc.forwarding == Forwarding::L2 {
            let d = pkt.data_mut();
            d[0..6].copy_from_slice(&next_hop);
            d[6..12].copy_from_slice(&out.mac);
            return Verdict::Forward { port: b.port as u16 };
        }
        let outer_v6 = b.addr.is_ipv6();
        let gue_port = match svc.forwarding {
            Forwarding::Gue { port } => Some(port),
            _ => None,
        };
        let overhead = if outer_v6 { V6_HDR } else { V4_HDR } + if gue_port.is_some() { UDP_HDR } else { 0 };
        if vip.ip_len as usize + overhead > out.mtu as usize {
            return self.too_big(
                st,
                pkt,
                in_port,
                now_ms,
                vip,
                out.mtu as usize - overhead.min(out.mtu as usize),
            );
        }
        let l2 = vip.l2_len as usize;
        // Ethernet padding must not travel inside the tunnel.
        let extra = pkt.data().len() - (l2 + vip.ip_len as usize);
        if extra > 0 && !pkt.trim_back(extra) {
            return Verdict::Drop(DropReason::Malformed);
        }
        let inner_proto = if vip.v6 { proto::IPV6 } else { proto::IPIP };
        let outer_proto = if gue_port.is_some() { proto::UDP } else { inner_proto };
        let payload_len = (vip.ip_len as usize + overhead - if outer_v6 { V6_HDR } else { V4_HDR }) as u16;
        let src = match (b.addr, out.ipv4, out.ipv6) {
            (IpAddr::V4(_), Some(s), _) => IpAddr::V4(s),
            (IpAddr::V6(_), _, Some(s)) => IpAddr::V6(s),
            _ => return Verdict::Drop(DropReason::NoSourceAddress),
        };
        if !pkt.prepend(overhead) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let d = pkt.data_mut();
        d.copy_within(overhead..overhead + l2, 0);
        d[0..6].copy_from_slice(&next_hop);
        d[6..12].copy_from_slice(&out.mac);
        let ip_at = l2;
        match (src, b.addr) {
            (IpAddr::V4(s), IpAddr::V4(dst)) => {
                ethernet::set_ethertype(d, l2, ethernet::ETHERTYPE_IPV4);
                let df = vip.df;
                let ident = if df {
                    0
                } else {
                    self.ident = self.ident.wrapping_add(1);
                    self.ident
                };
                ipv4::Repr {
                    src: s,
                    dst,
                    protocol: outer_proto,
                    payload_len,
                    ttl: OWN_TTL,
                    dscp_ecn: vip.tos,
                    ident,
                    dont_fragment: df,
                }
                .write(&mut d[ip_at..]);
            }
            (IpAddr::V6(s), IpAddr::V6(dst)) => {
                ethernet::set_ethertype(d, l2, ethernet::ETHERTYPE_IPV6);
                ipv6::Repr {
                    src: s,
                    dst,
                    next_header: outer_proto,
                    payload_len,
                    hop_limit: OWN_TTL,
                    traffic_class: vip.tos,
                    flow_label: (vip.hash as u32) & 0x000f_ffff,
                }
                .write(&mut d[ip_at..]);
            }
            _ => return Verdict::Drop(DropReason::NoSourceAddress),
        }
        if let Some(gport) = gue_port {
            let u = ip_at + if outer_v6 { V6_HDR } else { V4_HDR };
            let sport = GUE_SPORT_BASE + ((vip.hash >> 16) as u16 & 0x3fff);
            crate::net::udp::write_header(&mut d[u..], sport, gport, payload_len, 0);
            if let (IpAddr::V6(s), IpAddr::V6(dst)) = (src, b.addr) {
                // IPv6 requires a UDP checksum (RFC 8200 §8.1).
                let sum = checksum::pseudo_v6(&s, &dst, proto::UDP, payload_len as u32);
                let mut c = !checksum::fold(checksum::add(sum, &d[u..u + payload_len as usize]));
                if c == 0 {
                    c = 0xffff;
                }
                put16(d, u + 6, c);
            }
        }
        Verdict::Forward { port: b.port as u16 }
    }

    /// Answers "too big to encapsulate" with ICMP frag-needed (IPv4 with DF)
    /// or packet-too-big (IPv6), rate-limited, built over the packet.
    fn too_big<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        vip: &Vip,
        mtu: usize,
    ) -> Verdict {
        if !vip.v6 && !vip.df {
            return Verdict::Drop(DropReason::TooBig);
        }
        // Token bucket: icmp_rate per second, icmp_burst deep.
        let elapsed = now_ms.saturating_sub(self.icmp_last_ms);
        self.icmp_last_ms = now_ms;
        self.icmp_tokens_milli =
            (self.icmp_tokens_milli + elapsed * self.icmp_rate).min(self.icmp_burst * 1000);
        if self.icmp_tokens_milli < 1000 {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        self.icmp_tokens_milli -= 1000;
        let Some(port) = st.ports.get(in_port as usize) else { return Verdict::Drop(DropReason::NotForUs) };
        let l2 = vip.l2_len as usize;
        let svc_vip = st.services[vip.service as usize].vip;
        let d = pkt.data_mut();
        swap_macs(d);
        d[6..12].copy_from_slice(&port.mac);
        let len = if vip.v6 {
            // Quote as much as fits in the IPv6 minimum MTU.
            let q = (vip.ip_len as usize).min(1280 - V6_HDR - icmp::HEADER_LEN);
            let client = ipv6::addr_at(d, l2 + 8);
            let src = port.ipv6.unwrap_or(match svc_vip {
                IpAddr::V6(v) => v,
                IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
            });
            d.copy_within(l2..l2 + q, l2 + V6_HDR + icmp::HEADER_LEN);
            let plen = (icmp::HEADER_LEN + q) as u16;
            ipv6::Repr {
                src,
                dst: client,
                next_header: proto::ICMPV6,
                payload_len: plen,
                hop_limit: OWN_TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .write(&mut d[l2..]);
            let m = &mut d[l2 + V6_HDR..l2 + V6_HDR + plen as usize];
            m[0] = icmp::v6::PACKET_TOO_BIG;
            m[1] = 0;
            m[2] = 0;
            m[3] = 0;
            m[4..8].copy_from_slice(&(mtu as u32).to_be_bytes());
            let sum = checksum::pseudo_v6(&src, &client, proto::ICMPV6, plen as u32);
            let c = !checksum::fold(checksum::add(sum, m));
            put16(m, 2, c);
            l2 + V6_HDR + plen as usize
        } else {
            let ihl = ((d[l2] & 0x0f) as usize) * 4;
            let q = (ihl + 8).min(vip.ip_len as usize);
            let client = Ipv4Addr::new(d[l2 + 12], d[l2 + 13], d[l2 + 14], d[l2 + 15]);
            let src = port.ipv4.unwrap_or(match svc_vip {
                IpAddr::V4(v) => v,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            });
            d.copy_within(l2..l2 + q, l2 + V4_HDR + icmp::HEADER_LEN);
            let plen = (icmp::HEADER_LEN + q) as u16;
            ipv4::Repr {
                src,
                dst: client,
                protocol: proto::ICMP,
                payload_len: plen,
                ttl: OWN_TTL,
                dscp_ecn: 0,
                ident: 0,
                dont_fragment: false,
            }
            .write(&mut d[l2..]);
            let m = &mut d[l2 + V4_HDR..l2 + V4_HDR + plen as usize];
            m[0] = icmp::v4::DEST_UNREACHABLE;
            m[1] = icmp::v4::CODE_FRAG_NEEDED;
            m[2..6].copy_from_slice(&[0, 0, 0, 0]);
            put16(m, 6, mtu as u16);
            let c = checksum::checksum(m);
            put16(m, 2, c);
            l2 + V4_HDR + plen as usize
        };
        let have = pkt.data().len();
        if have > len && !pkt.trim_back(have - len) {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters.icmp_too_big_sent += 1;
        Verdict::Reply { port: in_port }
    }
}

/// The last IPv4 (VIP, protocol, port, ingress port) -> service answer, kept
/// per worker and cleared when a new forwarding state arrives: traffic comes
/// in runs to the same service.
#[derive(Debug, Clone, Copy)]
struct ServiceMemo {
    /// VIP (32 bits) | protocol << 32 | port << 40 | ingress port << 56
    /// (ingress ports below 256 only). Empty: all ones, which no packet
    /// makes (the protocol byte is TCP's or UDP's).
    tag: u64,
    service: usize,
}

impl ServiceMemo {
    const EMPTY: ServiceMemo = ServiceMemo { tag: u64::MAX, service: usize::MAX };
}

/// Whether the frame's destination MAC is the port's (compared as one word).
#[inline(always)]
fn to_our_mac(frame: &[u8], port: &PortInfo) -> bool {
    let word = |b: &[u8]| {
        b.get(..6).map(|b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
                | (u16::from_le_bytes([b[4], b[5]]) as u64) << 32
        })
    };
    word(frame).is_some_and(|w| Some(w) == word(&port.mac))
}

/// The common case in one pass over a fixed-size prefix (no bounds checks
/// after the first): an untagged IPv4 TCP/UDP packet without options or
/// fragmentation, to our MAC and a service. Anything else — and every
/// malformed packet — returns `None` and takes the general path, which
/// decides identically.
#[inline(always)]
fn fast_v4(
    st: &ForwardingState,
    port: &PortInfo,
    in_port: u16,
    data: &[u8],
    last: &mut ServiceMemo,
    out: &mut Vip,
) -> Option<()> {
    const L2: usize = ethernet::HEADER_LEN;
    let h: &[u8; 48] = data.get(..48)?.try_into().ok()?;
    // Little-endian word reads: the bytes stay in wire order inside them.
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    // Ethertype 0x0800, version 4, IHL 5.
    if !to_our_mac(h, port) || le32(12) & 0x00ff_ffff != 0x0045_0008 {
        return None;
    }
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    let frag = u16::from_be_bytes([h[20], h[21]]);
    let p = h[23];
    // A whole TCP header (20 + its data offset, checked below to be at least
    // 20) or UDP header (20 + 8) inside the packet. (A data offset past the
    // packet's end is a malformed segment, whose flags the general path does
    // not trust: it reads them as 0.)
    let min_total = match p {
        proto::TCP => V4_HDR + (h[46] >> 4) as usize * 4,
        proto::UDP => 28,
        _ => return None,
    };
    if frag & 0x3fff != 0 || h[22] == 0 || total < min_total || data.len() < L2 + total {
        return None;
    }
    // The one's-complement sum does not depend on byte order (RFC 1071 §2):
    // verifying it needs no byte swaps. It folds to 0xffff exactly when the
    // plain sum is a multiple of 0xffff (the sum is never 0: version 4).
    let sum = le32(14) as u64 + le32(18) as u64 + le32(22) as u64 + le32(26) as u64 + le32(30) as u64;
    if sum % 0xffff != 0 {
        return None;
    }
    let (src4, dst4, ports) = (le32(26), le32(30), le32(34));
    // The key straight into `out` (a caller reads `out` only when this
    // returns `Some`): built on the stack first, it was copied over.
    out.key = FlowKey {
        src: crate::balancer::flow::mapped_bytes(&src4.to_le_bytes()),
        dst: crate::balancer::flow::mapped_bytes(&dst4.to_le_bytes()),
        src_port: u16::from_be_bytes([h[34], h[35]]),
        dst_port: u16::from_be_bytes([h[36], h[37]]),
        proto: p,
    };
    let key = &out.key;
    let tag = dst4 as u64 | (p as u64) << 32 | (key.dst_port as u64) << 40 | (in_port as u64) << 56;
    let service = if last.tag == tag && in_port < 256 {
        last.service
    } else {
        // Traffic to the port's own address is l4lb's, never balanced (a hit
        // above was checked here when it was stored).
        if port.ipv4.is_some_and(|a| u32::from_le_bytes(a.octets()) == dst4) {
            return None;
        }
        let s = st.find_service(&key.dst, p, key.dst_port)?;
        *last = ServiceMemo { tag, service: s };
        s
    };
    let tcp_flags = if p == proto::TCP {
        if h[46] >> 4 < 5 {
            return None;
        }
        h[47]
    } else {
        0
    };
    out.hash = crate::balancer::flow::hash_v4(src4, dst4, ports, p);
    out.service = service as u32;
    out.ip_len = total as u16;
    out.l2_len = L2 as u8;
    out.v6 = false;
    out.kind = KeyKind::FiveTuple;
    out.tcp_flags = tcp_flags;
    out.df = frag & ipv4::FLAG_DF != 0;
    out.tos = h[15];
    Some(())
}

/// The last IPv6 (VIP, protocol, port, ingress port) -> service answer (see
/// [`ServiceMemo`]).
#[derive(Debug, Clone, Copy)]
struct ServiceMemoV6 {
    vip: [u8; 16],
    /// protocol | port << 8 | ingress port << 24. Empty: all ones, which no
    /// packet makes (40 bits at most).
    tag: u64,
    service: usize,
}

impl ServiceMemoV6 {
    const EMPTY: ServiceMemoV6 = ServiceMemoV6 { vip: [0; 16], tag: u64::MAX, service: usize::MAX };
}

/// The IPv6 common case, as [`fast_v4`]: an untagged IPv6 packet to our MAC
/// whose next header is TCP (with a whole header) or UDP, to a service. No
/// extension headers, no hop limit 0, no multicast or own destination; the
/// rest — and every malformed packet — takes the general path.
#[inline(always)]
fn fast_v6(
    st: &ForwardingState,
    port: &PortInfo,
    in_port: u16,
    data: &[u8],
    last: &mut ServiceMemoV6,
    out: &mut Vip,
) -> Option<()> {
    const L2: usize = ethernet::HEADER_LEN;
    const L4: usize = L2 + V6_HDR;
    // Up to the TCP flags.
    let h: &[u8; L4 + 14] = data.get(..L4 + 14)?.try_into().ok()?;
    // Ethertype 0x86dd, version 6.
    if !to_our_mac(h, port) || h[12] != 0x86 || h[13] != 0xdd || h[14] >> 4 != 6 {
        return None;
    }
    let payload = u16::from_be_bytes([h[18], h[19]]) as usize;
    let (p, hop_limit) = (h[20], h[21]);
    if hop_limit == 0 || data.len() < L4 + payload {
        return None;
    }
    let tcp_flags = match p {
        proto::TCP
            if payload >= 20 && (h[L4 + 12] >> 4) >= 5 && (h[L4 + 12] >> 4) as usize * 4 <= payload =>
        {
            h[L4 + 13]
        }
        proto::UDP if payload >= UDP_HDR => 0,
        _ => return None,
    };
    let src: [u8; 16] = h[22..38].try_into().ok()?;
    let dst: [u8; 16] = h[38..54].try_into().ok()?;
    if dst[0] == 0xff {
        return None;
    }
    let key = FlowKey {
        src,
        dst,
        src_port: u16::from_be_bytes([h[L4], h[L4 + 1]]),
        dst_port: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        proto: p,
    };
    let tag = p as u64 | (key.dst_port as u64) << 8 | (in_port as u64) << 24;
    let service = if last.tag == tag && last.vip == dst {
        last.service
    } else {
        // The port's own address is never balanced (checked before storing).
        if port.ipv6.is_some_and(|a| a.octets() == dst) {
            return None;
        }
        let s = st.find_service(&dst, p, key.dst_port)?;
        *last = ServiceMemoV6 { vip: dst, tag, service: s };
        s
    };
    *out = Vip {
        hash: key.hash(),
        key,
        service: service as u32,
        ip_len: (V6_HDR + payload) as u16,
        l2_len: L2 as u8,
        v6: true,
        kind: KeyKind::FiveTuple,
        tcp_flags,
        df: true,
        tos: (h[14] << 4) | (h[15] >> 4),
    };
    Some(())
}

/// Changes the type of the ICMP / ICMPv6 message at `at`, updating its
/// checksum incrementally (RFC 1624).
fn set_icmp_type(ip: &mut [u8], at: usize, new_type: u8) {
    let old = u16::from_be_bytes([ip[at], ip[at + 1]]);
    ip[at] = new_type;
    let new = u16::from_be_bytes([ip[at], ip[at + 1]]);
    let c = u16::from_be_bytes([ip[at + 2], ip[at + 3]]);
    put16(ip, at + 2, checksum::update16(c, old, new));
}

fn swap_macs(d: &mut [u8]) {
    let mut a = [0u8; 6];
    a.copy_from_slice(&d[0..6]);
    d.copy_within(6..12, 0);
    d[6..12].copy_from_slice(&a);
}

/// The TCP flags of a first fragment or whole segment (0 otherwise).
fn tcp_flags(p: u8, kind: KeyKind, l4: &[u8]) -> u8 {
    if p == proto::TCP && kind == KeyKind::FiveTuple {
        tcp::Segment::new_checked(l4).map(|s| s.flags()).unwrap_or(0)
    } else {
        0
    }
}

/// A flow's next state from the client's packet (DSR: one direction only).
#[inline]
pub fn next_state(p: u8, kind: KeyKind, flags: u8, prev: Option<FlowState>) -> FlowState {
    // Most packets first: a plain segment of an established TCP flow.
    if prev == Some(FlowState::Established)
        && flags & (tcp::FIN | tcp::RST | tcp::SYN) == 0
        && kind == KeyKind::FiveTuple
        && p == proto::TCP
    {
        return FlowState::Established;
    }
    if kind != KeyKind::FiveTuple {
        return FlowState::Other;
    }
    match p {
        proto::TCP => {
            if flags & (tcp::FIN | tcp::RST) != 0 {
                FlowState::Closing
            } else if flags & tcp::SYN != 0 && flags & tcp::ACK == 0 {
                match prev {
                    Some(FlowState::Established) => FlowState::Established,
                    _ => FlowState::SynSeen,
                }
            } else {
                match prev {
                    Some(FlowState::Closing) => FlowState::Closing,
                    _ => FlowState::Established,
                }
            }
        }
        proto::UDP => FlowState::Udp,
        _ => FlowState::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_states_follow_the_clients_segments() {
        use FlowState::*;
        use KeyKind::*;
        let (syn, ack, fin, rst) = (tcp::SYN, tcp::ACK, tcp::FIN, tcp::RST);
        let tcp = proto::TCP;
        let cases = [
            // (protocol, kind, flags, previous state, next state)
            (tcp, FiveTuple, syn, None, SynSeen),
            (tcp, FiveTuple, syn, Some(SynSeen), SynSeen),
            (tcp, FiveTuple, ack, Some(SynSeen), Established),
            (tcp, FiveTuple, ack, None, Established),
            (tcp, FiveTuple, ack, Some(Established), Established),
            (tcp, FiveTuple, 0, Some(Established), Established),
            (tcp, FiveTuple, syn, Some(Established), Established),
            (tcp, FiveTuple, syn | ack, Some(Established), Established),
            (tcp, FiveTuple, fin | ack, Some(Established), Closing),
            (tcp, FiveTuple, rst, Some(Established), Closing),
            (tcp, FiveTuple, ack, Some(Closing), Closing),
            (tcp, Fragment, ack, Some(Established), Other),
            (tcp, IcmpError, ack, Some(Established), Other),
            (proto::UDP, FiveTuple, 0, Some(Established), Udp),
            (proto::UDP, FiveTuple, 0, None, Udp),
            (proto::ICMP, ThreeTuple, 0, None, Other),
        ];
        for (p, kind, flags, prev, want) in cases {
            assert_eq!(next_state(p, kind, flags, prev), want, "{p} {kind:?} {flags:#x} {prev:?}");
        }
    }

    /// Two ports (port 1's own IPv4 address is also a VIP, balanced only when
    /// it arrives on port 0) and TCP and UDP services on an IPv4 and an IPv6
    /// VIP, in each forwarding mode.
    fn differential_state() -> ForwardingState {
        use crate::balancer::flowtable::Timeouts;
        use crate::balancer::state::{Scheduler, ServiceSpec};
        let vip4 = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
        let vip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));
        let own1 = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 2));
        let mut next_id = 0u32;
        let mut spec = |vip: IpAddr, proto: u8, port: u16, forwarding: Forwarding| {
            let backends = (0..3)
                .map(|i| {
                    next_id += 1;
                    Backend {
                        id: next_id,
                        addr: match vip {
                            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i)),
                            IpAddr::V6(_) => {
                                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i as u16))
                            }
                        },
                        weight: 1,
                        draining: false,
                        rtt_us: 0,
                        next_hop: Some([2, 0, 0, 0, 1, i]),
                        port: 0,
                    }
                })
                .collect();
            ServiceSpec {
                name: format!("{vip}:{proto}:{port}"),
                vip,
                proto,
                port,
                forwarding,
                scheduler: Scheduler::Maglev,
                persistence_ms: 0,
                timeouts: Timeouts::default(),
                answer_arp: false,
                maglev_size: 251,
                backends,
            }
        };
        let services = vec![
            spec(vip4, proto::TCP, 80, Forwarding::IpIp),
            spec(vip4, proto::UDP, 80, Forwarding::Gue { port: 6080 }),
            spec(vip4, proto::TCP, 443, Forwarding::L2),
            spec(vip6, proto::TCP, 80, Forwarding::IpIp),
            spec(vip6, proto::UDP, 80, Forwarding::Gue { port: 6080 }),
            spec(own1, proto::TCP, 80, Forwarding::L2),
        ];
        let ports = vec![
            PortInfo {
                mac: [2, 0, 0, 0, 0, 1],
                ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
                ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                mtu: 1500,
            },
            PortInfo {
                mac: [2, 0, 0, 0, 0, 2],
                ipv4: Some(Ipv4Addr::new(198, 18, 100, 2)),
                ipv6: None,
                mtu: 1500,
            },
        ];
        ForwardingState::build(1, ports, services).expect("a valid state")
    }

    /// A frame near the fast paths' edges: a valid TCP or UDP frame to one of
    /// the VIPs (or a port's own address) with a few bytes of its headers
    /// replaced, its IPv4 header checksum then made right again or not, and
    /// its length cut or padded.
    fn edge_frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let byte = prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![
                0u8, 1, 2, 0x05, 0x06, 0x10, 0x11, 0x12, 0x20, 0x2c, 0x3a, 0x3f, 0x40, 0x44, 0x45, 0x46,
                0x50, 0x60, 0x80, 0xf0, 0xff
            ]),
        ];
        (
            any::<bool>(),
            any::<bool>(),
            0usize..4,
            0u16..2,
            any::<u32>(),
            prop::collection::vec((0usize..76, byte), 0..4),
            any::<bool>(),
            -24i32..24,
            prop::sample::select(vec![0u16, 80, 443]),
        )
            .prop_map(|(v6, udp, dst, in_port, flow, edits, fix, len, dport)| {
                use crate::dataplane::testframes;
                let mut f = if udp {
                    testframes::udp(flow, v6)
                } else {
                    testframes::tcp(flow, v6, (flow >> 24) as u8)
                };
                let ip = 14;
                // Destination: the VIP, port 1's own address (a VIP too), port
                // 0's own address, or another address.
                match (v6, dst) {
                    (false, 1) => f[ip + 19] = 2,
                    (false, 2) => f[ip + 16..ip + 20].copy_from_slice(&[198, 18, 0, 1]),
                    (false, 3) => f[ip + 19] = 9,
                    (true, 2) => f[ip + 24..ip + 40]
                        .copy_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets()),
                    (true, 3) => f[ip + 39] = 9,
                    _ => {}
                }
                let l4 = if v6 { ip + 40 } else { ip + 20 };
                f[l4 + 2..l4 + 4].copy_from_slice(&dport.max(80).to_be_bytes());
                if in_port == 1 {
                    f[5] = 2;
                }
                for (at, b) in edits {
                    if at < f.len() {
                        f[at] = b;
                    }
                }
                if !v6 && fix {
                    let ihl = (f[ip] & 0x0f) as usize * 4;
                    if ihl >= 20 && f.len() >= ip + ihl {
                        f[ip + 10..ip + 12].fill(0);
                        let c = crate::net::checksum::checksum(&f[ip..ip + ihl]);
                        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
                    }
                }
                f.resize((f.len() as i32 + len).max(0) as usize, 0);
                (in_port, f)
            })
    }

    /// The differential tests' state (built once per process) and a fresh
    /// worker with small tables for one case.
    fn differential_worker() -> (&'static ForwardingState, Worker) {
        static STATE: std::sync::OnceLock<ForwardingState> = std::sync::OnceLock::new();
        let cfg = WorkerConfig { flow_capacity: 64, persist_capacity: 64, ..WorkerConfig::default() };
        (STATE.get_or_init(differential_state), Worker::new(cfg))
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40000))]

        /// Whatever the IPv4 and IPv6 fast paths take, the general parser
        /// takes too, with the same key, hash, service, lengths, flags, DF
        /// and TOS — including after their service memos were filled by the
        /// frames before (one worker sees the whole sequence).
        #[test]
        fn the_fast_paths_decide_as_the_general_parser(frames in prop::collection::vec(edge_frame(), 1..8)) {
            let (st, mut w) = differential_worker();
            for (in_port, f) in frames {
                let port = &st.ports[in_port as usize];
                let mut fast = Vip::default();
                let took = fast_v4(st, port, in_port, &f, &mut w.last_service, &mut fast).is_some()
                    || fast_v6(st, port, in_port, &f, &mut w.last_service_v6, &mut fast).is_some();
                let mut general = Vip::default();
                let verdict = w.parse_general(st, &mut crate::dataplane::packet::TestPacket::new(&f), in_port, port, &mut general);
                if took {
                    prop_assert_eq!(verdict, None, "the fast path took {:02x?}", f);
                    prop_assert_eq!(fast, general, "{:02x?}", f);
                }
            }
        }
    }

    /// What a forwarded frame carries: for IP-in-IP and GUE the client's IP
    /// packet unchanged (padding dropped) behind an outer header whose lengths
    /// and IPv4 checksum are right, nothing after it; for L2 the frame as received behind new
    /// MACs. Replies carry a valid IPv4 header checksum. Panics otherwise.
    fn check_output(input: &[u8], out: &[u8], forwarded: bool) {
        let ether = u16::from_be_bytes([out[12], out[13]]);
        let l3 = &out[14..];
        let (inner, outer_proto, trailing) = match ether {
            ethernet::ETHERTYPE_IPV4 => {
                let ip = ipv4::Packet::new_checked(l3).expect("an IPv4 header");
                assert!(ip.header_checksum_ok(), "outer checksum: {out:02x?}");
                if !forwarded {
                    return;
                }
                (&l3[ip.header_len()..ip.total_len()], ip.protocol(), l3.len() - ip.total_len())
            }
            ethernet::ETHERTYPE_IPV6 => {
                let ip = ipv6::Packet::new_checked(l3).expect("an IPv6 header");
                if !forwarded {
                    return;
                }
                (&l3[ipv6::HEADER_LEN..ip.total_len()], ip.next_header(), l3.len() - ip.total_len())
            }
            other => panic!("ethertype {other:#06x}: {out:02x?}"),
        };
        let in_l3 = &input[14..];
        let (inner, udp_len) = match outer_proto {
            proto::IPIP | proto::IPV6 => (inner, None),
            proto::UDP => (&inner[8..], Some(u16::from_be_bytes([inner[4], inner[5]]) as usize)),
            // L2: the frame as received behind new MACs.
            _ => {
                assert_eq!(&out[12..], &input[12..], "an L2-forwarded frame changed");
                return;
            }
        };
        // The client frame's padding is trimmed before the outer header goes on.
        assert_eq!(trailing, 0, "bytes after the outer packet: {out:02x?}");
        if let Some(len) = udp_len {
            assert_eq!(len, inner.len() + 8, "GUE UDP length");
        }
        assert_eq!(inner, &in_l3[..inner.len()], "the inner packet differs from the client's");
        let ip_len = if in_l3[0] >> 4 == 4 {
            u16::from_be_bytes([in_l3[2], in_l3[3]]) as usize
        } else {
            40 + u16::from_be_bytes([in_l3[4], in_l3[5]]) as usize
        };
        assert_eq!(inner.len(), ip_len, "the inner packet's length");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]

        /// The whole pipeline on frames near the fast paths' edges: no panic,
        /// and whatever it forwards or answers is well formed.
        #[test]
        fn edge_frames_leave_well_formed_or_not_at_all(frames in prop::collection::vec(edge_frame(), 1..8)) {
            let (st, mut w) = differential_worker();
            for (i, (in_port, f)) in frames.into_iter().enumerate() {
                let mut p = crate::dataplane::packet::TestPacket::new(&f);
                match w.process(st, &mut p, in_port, i as u64) {
                    Verdict::Forward { .. } => check_output(&f, p.data(), true),
                    Verdict::Reply { .. } => check_output(&f, p.data(), false),
                    _ => {}
                }
            }
        }
    }
}
