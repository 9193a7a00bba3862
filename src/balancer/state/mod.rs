//! The forwarding state: everything a worker reads to decide, built whole by
//! the management side and never changed afterwards (workers get an `Arc`).
//! Also the schedulers, which pick a backend for a new flow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::access::AccessList;

use super::flow::{ip16, FlowKey};
use super::flowtable::Timeouts;
use super::hash::{hash_words, SEED_SOURCE};
use super::maglev::{MaglevBackend, MaglevError, MaglevTable};
use crate::net::ethernet::Mac;

/// How packets reach the backend (direct server return in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Rewrite the destination MAC; the backend is on the same L2 segment.
    L2,
    /// IP-in-IP: 4in4, 6in6, or 4in6 when the backend is IPv6.
    IpIp,
    /// GUE variant 1 (UDP, inner IP directly) to this UDP port.
    Gue { port: u16 },
}

/// How a new flow picks its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Maglev on the flow hash: the same choice on every l4lb box.
    Maglev,
    /// Maglev on the (masked) source address: affinity without state.
    SourceIp {
        v4_prefix: u8,
        v6_prefix: u8,
    },
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    WeightedLeastConnections,
    /// Health-check RTT × (active flows + 1), lowest wins.
    LeastResponseTime,
}

/// A backend as workers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id (survives state rebuilds); flows remember it.
    pub id: u32,
    pub addr: IpAddr,
    pub weight: u32,
    /// Existing flows continue; no new flow is sent here.
    pub draining: bool,
    /// Last health-check round-trip time in µs (0: unknown).
    pub rtt_us: u32,
    /// Destination MAC for this backend's packets: the backend itself in L2
    /// mode, the next hop (backend or gateway) when encapsulating.
    pub next_hop: Option<Mac>,
    /// Index of the port its packets leave on.
    pub port: usize,
}

impl Backend {
    /// Whether new flows may go here: not drained and a weight above 0.
    #[inline]
    pub fn takes_new_flows(&self) -> bool {
        self.weight > 0 && !self.draining
    }
}

/// A precomputed outer header for one backend: Ethernet and the outer IP
/// header (and UDP for GUE) with every field that does not change per packet
/// already written, so encapsulating is one copy and a few patched fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapTemplate {
    pub bytes: [u8; 64],
    /// Bytes used: 14 + 20 (IPv4 outer) or 40 (IPv6 outer), + 8 for GUE.
    pub len: u8,
    pub outer_v6: bool,
    /// GUE destination port when GUE.
    pub gue: bool,
    /// IPv4 outer: the one's-complement sum of the header's fixed 16-bit
    /// words (version/IHL, TTL/protocol, addresses), folded to 16 bits; the
    /// packet adds TOS, length and ident or flags, each below 2^16, so its
    /// sum folds in two steps.
    pub sum: u16,
    /// The egress port's index.
    pub port: u16,
    /// The largest inner IP packet (bytes) that fits the egress MTU once
    /// encapsulated; longer ones take the general path (frag-needed).
    pub max_inner: u16,
}

impl EncapTemplate {
    fn build(
        forwarding: Forwarding,
        inner_v6: bool,
        b: &Backend,
        port_index: usize,
        port: &PortIdentity,
    ) -> Option<EncapTemplate> {
        let next_hop = b.next_hop?;
        let gue_port = match forwarding {
            Forwarding::L2 => return None,
            Forwarding::IpIp => None,
            Forwarding::Gue { port } => Some(port),
        };
        let mut bytes = [0u8; 64];
        bytes[0..6].copy_from_slice(&next_hop);
        bytes[6..12].copy_from_slice(&port.mac);
        let (len, outer_v6, sum) = match b.addr {
            IpAddr::V4(dst) => {
                // The outer protocol (and so the checksum's fixed sum) is
                // IPIP's: IPv6 clients (6in4, which configuration refuses)
                // take the general path, which writes 41.
                if inner_v6 {
                    return None;
                }
                let src = port.ipv4?;
                bytes[12..14].copy_from_slice(&[0x08, 0x00]);
                let proto = if gue_port.is_some() { crate::net::proto::UDP } else { crate::net::proto::IPIP };
                bytes[14] = 0x45;
                bytes[22] = 64;
                bytes[23] = proto;
                bytes[26..30].copy_from_slice(&src.octets());
                bytes[30..34].copy_from_slice(&dst.octets());
                let sum = crate::net::checksum::fold(
                    0x4500u64 + ((64u64 << 8) | proto as u64) + u32::from(src) as u64 + u32::from(dst) as u64,
                );
                (34, false, sum)
            }
            IpAddr::V6(dst) => {
                // GUE over IPv6 needs a checksum over the whole packet: general path.
                if gue_port.is_some() {
                    return None;
                }
                let src = port.ipv6?;
                bytes[12..14].copy_from_slice(&[0x86, 0xdd]);
                bytes[14] = 0x60;
                bytes[21] = 64;
                bytes[22..38].copy_from_slice(&src.octets());
                bytes[38..54].copy_from_slice(&dst.octets());
                (54, true, 0)
            }
        };
        let len = match gue_port {
            Some(gp) => {
                bytes[len + 2..len + 4].copy_from_slice(&gp.to_be_bytes());
                len + 8
            }
            None => len,
        };
        let max_inner = (port.mtu as usize).saturating_sub(len - crate::net::ethernet::HEADER_LEN) as u16;
        Some(EncapTemplate {
            bytes,
            len: len as u8,
            outer_v6,
            gue: gue_port.is_some(),
            sum,
            port: port_index as u16,
            max_inner,
        })
    }
}

/// A port as the pipeline sees it: the MAC and addresses it owns, its MTU
/// and its kernel interface (`dpdk::PortInfo` is the driver's description
/// of a device).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortIdentity {
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mtu: u16,
    /// Whether the port has a kernel interface: traffic for the box that
    /// l4lb does not answer goes to it (`Verdict::Local`), else it is freed.
    pub kernel: bool,
    /// Traffic to a VIP on a protocol and port no service covers is the
    /// kernel's (`Local`) instead of a `no_service` drop.
    pub punt_unknown_vip_ports: bool,
}

/// A virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// 0: every port.
    pub port: u16,
    pub forwarding: Forwarding,
    pub scheduler: Scheduler,
    /// Source-IP persistence timeout (0: off).
    pub persistence_ms: u64,
    /// A bound on the refresh slack of this service's flows (see
    /// `flowtable::refresh_slack`) that persistence sets, so a client's entry,
    /// refreshed with its flow, cannot lapse between written packets: the
    /// persistence timeout's own slack, or `u64::MAX` without persistence.
    pub persist_slack_ms: u64,
    pub timeouts: Timeouts,
    /// Answer ARP / neighbour solicitations for the VIP (one-arm L2 setups).
    pub answer_arp: bool,
    /// Slots in `ForwardingState::backends`, in configuration order.
    pub backends: Vec<u32>,
    /// Maglev over `backends` (entry = position in `backends`).
    /// Shared with the states before and after it while its backends and
    /// weights stay the same ([`ForwardingState::build_reusing`]).
    pub maglev: Arc<MaglevTable>,
    /// A stable id for persistence entries (hash of VIP, protocol, port).
    pub persist_id: u32,
    /// Who may open flows (None: everyone; checked on a flow's first packet).
    pub access: Option<Arc<AccessList>>,
    /// Counts the workers keep for the service.
    pub stats: Arc<ServiceStats>,
    /// Limits on the service's new flows (None: none).
    pub quota: Option<Quota>,
}

/// A service's limits on new flows, for the box: each worker enforces its
/// share alone (no lock, no shared count), so a flood at one service can
/// neither evict another's flows nor take its new ones' table room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// New flows per second the box admits (0: no limit); a worker admits
    /// this divided by the workers, rounded up.
    pub new_flows_per_s: u64,
    /// New flows admitted at once above the rate (for the box, shared out
    /// alike).
    pub new_flows_burst: u64,
    /// The most entries the service may hold in each worker's flow table, in
    /// thousandths of the table (1000: no limit).
    pub table_share_milli: u32,
    /// What happens to a new flow over either limit.
    pub over: OverQuota,
}

/// What a worker does with a new flow over its service's [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverQuota {
    /// Dropped and counted (the default: the flood stops here, whatever the
    /// scheduler).
    #[default]
    Drop,
    /// Sent to the backend the service's hash picks, with no table entry
    /// (Katran's "flood mode"): every packet of the flow is decided again,
    /// so only Maglev and source-IP services may use it.
    Stateless,
}

impl Quota {
    /// A worker's share of the rate and burst (rounded up, at least 1).
    pub fn per_worker(&self, workers: u16) -> (u64, u64) {
        let w = workers.max(1) as u64;
        (self.new_flows_per_s.div_ceil(w), self.new_flows_burst.div_ceil(w).max(1))
    }

    /// The most entries the service may hold in a table of `capacity`.
    pub fn table_limit(&self, capacity: usize) -> u32 {
        let n = capacity as u64 * self.table_share_milli as u64 / 1000;
        n.clamp(1, u32::MAX as u64) as u32
    }
}

/// Per-service counts, one padded block per worker (each written by its
/// worker alone: a plain load and store, no locked instruction). The
/// management side hands the same `Arc` to every state while the service
/// exists (by name), so the counts only grow across reloads.
#[derive(Debug)]
pub struct ServiceStats {
    by_worker: Box<[ServiceCount]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct ServiceCount {
    denied: AtomicU64,
    over_quota_dropped: AtomicU64,
    over_quota_stateless: AtomicU64,
}

/// What a worker counts for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    /// A new flow refused by the access list.
    Denied,
    /// A new flow over the quota, dropped.
    OverQuotaDropped,
    /// A packet of a new flow over the quota, sent without an entry.
    OverQuotaStateless,
}

impl ServiceCount {
    fn of(&self, e: ServiceEvent) -> &AtomicU64 {
        match e {
            ServiceEvent::Denied => &self.denied,
            ServiceEvent::OverQuotaDropped => &self.over_quota_dropped,
            ServiceEvent::OverQuotaStateless => &self.over_quota_stateless,
        }
    }
}

impl ServiceStats {
    /// Counts for `workers` workers.
    pub fn new(workers: usize) -> Arc<ServiceStats> {
        Arc::new(ServiceStats { by_worker: (0..workers.max(1)).map(|_| ServiceCount::default()).collect() })
    }

    /// Counts `e` on `worker`.
    #[inline]
    pub fn count(&self, worker: usize, e: ServiceEvent) {
        match self.by_worker.get(worker) {
            Some(c) => {
                let n = c.of(e);
                n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed)
            }
            // More workers than blocks (a state built for fewer): shared.
            None => _ = self.by_worker[0].of(e).fetch_add(1, Ordering::Relaxed),
        }
    }

    /// How many `e` every worker together counted.
    pub fn total(&self, e: ServiceEvent) -> u64 {
        self.by_worker.iter().map(|c| c.of(e).load(Ordering::Relaxed)).sum()
    }

    /// New flows refused by the access list, every worker together.
    pub fn denied(&self) -> u64 {
        self.total(ServiceEvent::Denied)
    }
}

/// Counts are not part of what a state decides: two states that decide
/// alike are equal whatever they counted.
impl PartialEq for ServiceStats {
    fn eq(&self, _: &ServiceStats) -> bool {
        true
    }
}
impl Eq for ServiceStats {}

/// What a service needs to be built.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub forwarding: Forwarding,
    pub scheduler: Scheduler,
    pub persistence_ms: u64,
    pub timeouts: Timeouts,
    pub answer_arp: bool,
    pub maglev_size: u32,
    pub backends: Vec<Backend>,
    pub access: Option<Arc<AccessList>>,
    pub stats: Arc<ServiceStats>,
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("service {service}: {source}")]
    Maglev { service: String, source: MaglevError },
    #[error("service {0}: the same VIP, protocol and port as an earlier service")]
    Duplicate(String),
    #[error("backend id {0} is used twice")]
    DuplicateBackendId(u32),
    #[error("service {0}: backend port index out of range")]
    BadPort(String),
}

/// Lookup key of a service: VIP (16 bytes), protocol, port.
type ServiceKey = ([u8; 16], u8, u16);

/// The immutable state one generation of configuration and health produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingState {
    pub generation: u64,
    pub ports: Vec<PortIdentity>,
    pub services: Vec<Service>,
    pub backends: Vec<Backend>,
    index: Vec<(ServiceKey, u32)>,
    /// Per backend slot: its encapsulation template, when it has one.
    templates: Vec<Option<EncapTemplate>>,
    /// Open-addressed (linear probing) copy of `index` for the per-packet
    /// lookup: (VIP, protocol << 16 | port, service + 1; 0 = empty).
    slots: Vec<(u128, u32, u32)>,
    by_id: Vec<u32>,
    /// Sources whose packets for the box's kernel go first (sorted): every
    /// configured backend, up or down, so that the answers to the box's
    /// health checks are never held behind a flood (`dataplane::punt`).
    priority_sources: Vec<[u8; 16]>,
    /// The backends the box checks through their VIP's path, by stable id
    /// (sorted): down ones too, which are not in `backends`.
    vip_paths: Vec<VipPathTarget>,
}

/// A backend checked through its VIP's path (`dataplane::pipeline::vip_path`):
/// what a probe's packets become on the way out, and what its answers come
/// from. Carried for every such backend, up or down, so a down backend's
/// checks still reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipPathTarget {
    /// The VIP the probe is addressed to (the backend's family).
    pub vip: IpAddr,
    pub forwarding: Forwarding,
    /// The backend as a client's packet would reach it; its `id` is the
    /// stable id the health check claims a source port with.
    pub backend: Backend,
}

/// A service's backends with each one not measured yet (`rtt_us` 0: no
/// health-check round trip so far, e.g. just added) given the median of the
/// measured ones, so least-response-time neither sends it every new flow (as
/// the fastest) nor none (as the slowest) until its first check. With none
/// measured, all stay equal.
fn with_unmeasured_at_median(mut backends: Vec<Backend>) -> Vec<Backend> {
    let mut measured: Vec<u32> = backends.iter().map(|b| b.rtt_us).filter(|&r| r > 0).collect();
    if measured.is_empty() || measured.len() == backends.len() {
        return backends;
    }
    measured.sort_unstable();
    let median = measured[(measured.len() - 1) / 2];
    for b in backends.iter_mut().filter(|b| b.rtt_us == 0) {
        b.rtt_us = median;
    }
    backends
}

#[inline(always)]
fn slot_hash(vip: u128, pp: u32) -> usize {
    super::hash::fmix64(
        (vip as u64) ^ ((vip >> 64) as u64).rotate_left(29) ^ (pp as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ) as usize
}

impl ForwardingState {
    pub fn build(
        generation: u64,
        ports: Vec<PortIdentity>,
        specs: Vec<ServiceSpec>,
    ) -> Result<Self, BuildError> {
        Self::build_reusing(generation, ports, specs, None)
    }

    /// As [`ForwardingState::build`], taking from `previous` the Maglev
    /// table of every service whose key, table size and backends (address
    /// and weight, 0 when draining, in order) are the same: a change to one
    /// service of many rebuilds one table, and the unchanged ones are shared.
    pub fn build_reusing(
        generation: u64,
        ports: Vec<PortIdentity>,
        specs: Vec<ServiceSpec>,
        previous: Option<&ForwardingState>,
    ) -> Result<Self, BuildError> {
        let mut services = Vec::with_capacity(specs.len());
        let mut backends: Vec<Backend> = Vec::new();
        let mut templates: Vec<Option<EncapTemplate>> = Vec::new();
        let mut index = Vec::with_capacity(specs.len());
        for spec in specs {
            let key = (ip16(spec.vip), spec.proto, spec.port);
            if index.iter().any(|(k, _)| *k == key) {
                return Err(BuildError::Duplicate(spec.name));
            }
            if spec.backends.iter().any(|b| b.port >= ports.len()) {
                return Err(BuildError::BadPort(spec.name));
            }
            let mb: Vec<MaglevBackend> = spec
                .backends
                .iter()
                .map(|b| MaglevBackend { id: ip16(b.addr), weight: if b.draining { 0 } else { b.weight } })
                .collect();
            let maglev = match previous.and_then(|p| p.same_maglev(&key, spec.maglev_size, &mb)) {
                Some(t) => t,
                None => Arc::new(
                    MaglevTable::build(&mb, spec.maglev_size)
                        .map_err(|source| BuildError::Maglev { service: spec.name.clone(), source })?,
                ),
            };
            let first = backends.len() as u32;
            let slots: Vec<u32> = (first..first + spec.backends.len() as u32).collect();
            templates.extend(spec.backends.iter().map(|b| {
                EncapTemplate::build(spec.forwarding, spec.vip.is_ipv6(), b, b.port, &ports[b.port])
            }));
            backends.extend(with_unmeasured_at_median(spec.backends));
            let persist_id = hash_words(
                SEED_SOURCE,
                &[key.1 as u64, key.2 as u64, u64::from_le_bytes(key.0[8..].try_into().unwrap_or_default())],
            ) as u32;
            index.push((key, services.len() as u32));
            services.push(Service {
                name: spec.name,
                vip: spec.vip,
                proto: spec.proto,
                port: spec.port,
                forwarding: spec.forwarding,
                scheduler: spec.scheduler,
                persistence_ms: spec.persistence_ms,
                persist_slack_ms: if spec.persistence_ms > 0 {
                    super::flowtable::refresh_slack(spec.persistence_ms)
                } else {
                    u64::MAX
                },
                timeouts: spec.timeouts,
                answer_arp: spec.answer_arp,
                backends: slots,
                maglev,
                persist_id,
                access: spec.access,
                stats: spec.stats,
                quota: spec.quota,
            });
        }
        index.sort_unstable_by_key(|a| a.0);
        let cap = (index.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![(0u128, 0u32, 0u32); cap];
        for (k, svc) in &index {
            let (vip, pp) = (u128::from_be_bytes(k.0), (k.1 as u32) << 16 | k.2 as u32);
            let mut i = slot_hash(vip, pp) & (cap - 1);
            while slots[i].2 != 0 {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = (vip, pp, svc + 1);
        }
        let max_id = backends.iter().map(|b| b.id).max().map_or(0, |m| m as usize + 1);
        let mut by_id = vec![u32::MAX; max_id];
        for (slot, b) in backends.iter().enumerate() {
            if by_id[b.id as usize] != u32::MAX {
                return Err(BuildError::DuplicateBackendId(b.id));
            }
            by_id[b.id as usize] = slot as u32;
        }
        Ok(ForwardingState {
            generation,
            ports,
            services,
            backends,
            index,
            templates,
            slots,
            by_id,
            priority_sources: Vec::new(),
            vip_paths: Vec::new(),
        })
    }

    /// The service for a destination: an exact port match first, then an
    /// all-ports service on the VIP.
    #[inline(always)]
    pub fn find_service(&self, dst: &[u8; 16], proto: u8, port: u16) -> Option<usize> {
        let find = |p: u16| {
            self.index
                .binary_search_by(|(k, _)| (&k.0, k.1, k.2).cmp(&(dst, proto, p)))
                .ok()
                .map(|i| self.index[i].1 as usize)
        };
        find(port).or_else(|| if port != 0 { find(0) } else { None })
    }

    /// The VIP's first service (lowest port) for `proto`: where fragments,
    /// which carry no ports, are sent.
    #[inline]
    pub fn find_service_any_port(&self, dst: &[u8; 16], proto: u8) -> Option<usize> {
        let i = self.index.partition_point(|(k, _)| (&k.0, k.1) < (dst, proto));
        self.index.get(i).filter(|(k, _)| &k.0 == dst && k.1 == proto).map(|(_, s)| *s as usize)
    }

    /// The Maglev table of the service with exactly `key`, when it was
    /// built from `mb` at `size`.
    fn same_maglev(&self, key: &ServiceKey, size: u32, mb: &[MaglevBackend]) -> Option<Arc<MaglevTable>> {
        let i = self.index.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        let svc = &self.services[self.index[i].1 as usize];
        let same = svc.maglev.size() == size
            && svc.backends.len() == mb.len()
            && svc.backends.iter().zip(mb).all(|(&slot, m)| {
                let b = &self.backends[slot as usize];
                ip16(b.addr) == m.id && (if b.draining { 0 } else { b.weight }) == m.weight
            });
        same.then(|| svc.maglev.clone())
    }

    /// Sets the sources whose packets for the box go first (see the field).
    pub fn set_priority_sources(&mut self, mut addrs: Vec<[u8; 16]>) {
        addrs.sort_unstable();
        addrs.dedup();
        self.priority_sources = addrs;
    }

    /// Sets the backends checked through their VIP's path.
    pub fn set_vip_paths(&mut self, mut targets: Vec<VipPathTarget>) {
        targets.sort_unstable_by_key(|t| t.backend.id);
        self.vip_paths = targets;
    }

    /// The VIP-path target of a backend's stable id.
    #[inline]
    pub fn vip_path(&self, id: u32) -> Option<&VipPathTarget> {
        self.vip_paths.binary_search_by_key(&id, |t| t.backend.id).ok().map(|i| &self.vip_paths[i])
    }

    /// Whether any backend is checked through its VIP's path.
    #[inline]
    pub fn has_vip_paths(&self) -> bool {
        !self.vip_paths.is_empty()
    }

    /// Whether packets from `src` for the box go first.
    #[inline]
    pub fn is_priority_source(&self, src: &[u8; 16]) -> bool {
        self.priority_sources.binary_search(src).is_ok()
    }

    /// Is `addr` a VIP of some service (any protocol/port)?
    pub fn is_vip(&self, addr: &[u8; 16]) -> Option<&Service> {
        let i = self.index.partition_point(|(k, _)| &k.0 < addr);
        self.index.get(i).filter(|(k, _)| &k.0 == addr).map(|(_, s)| &self.services[*s as usize])
    }

    /// The encapsulation template of a backend slot.
    #[inline(always)]
    pub fn template(&self, slot: usize) -> Option<&EncapTemplate> {
        self.templates.get(slot).and_then(|t| t.as_ref())
    }

    /// The backend slot of a stable id, if it is in this state.
    #[inline]
    pub fn slot_of(&self, id: u32) -> Option<usize> {
        self.by_id.get(id as usize).filter(|&&s| s != u32::MAX).map(|&s| s as usize)
    }

    /// The largest backend id + 1 (for per-id counters).
    pub fn id_space(&self) -> usize {
        self.by_id.len()
    }
}

/// Per-worker mutable scheduler state for one service.
#[derive(Debug, Clone, Default)]
pub struct SchedState {
    pub rr: u32,
    /// Smooth weighted round robin's current weights, by position.
    pub wrr: Vec<i64>,
}

impl Service {
    /// Picks a backend slot for a new flow. `active` counts this worker's
    /// active flows by backend id. Returns `None` when no backend takes new flows.
    /// The default scheduler, one table read, is inlined into the caller's
    /// new-flow path; the others are a call.
    #[inline(always)]
    pub fn pick(
        &self,
        state: &ForwardingState,
        key: &FlowKey,
        hash: u64,
        active: &[u32],
        sched: &mut SchedState,
    ) -> Option<usize> {
        let pos = match self.scheduler {
            Scheduler::Maglev => self.maglev.lookup(hash)?,
            _ => self.position(state, key, active, sched)?,
        };
        Some(self.backends[pos] as usize)
    }

    /// Source-IP Maglev's position: the Maglev entry of the client's masked
    /// address, whatever its ports.
    #[inline]
    fn source_position(&self, key: &FlowKey, v4_prefix: u8, v6_prefix: u8) -> Option<usize> {
        let src = masked_source(key, v4_prefix, v6_prefix);
        let w0 = u64::from_le_bytes(src[..8].try_into().unwrap_or_default());
        let w1 = u64::from_le_bytes(src[8..].try_into().unwrap_or_default());
        self.maglev.lookup(hash_words(SEED_SOURCE, &[w0, w1]))
    }

    /// The backend (slot in the state) every box would pick for a new flow
    /// `key` now, from the key alone: Maglev and source-IP Maglev; `None`
    /// for the schedulers whose choice depends on this box's own state (or
    /// when no backend takes new flows).
    pub fn stateless_pick(&self, key: &FlowKey, hash: u64) -> Option<usize> {
        let pos = match self.scheduler {
            Scheduler::Maglev => self.maglev.lookup(hash)?,
            Scheduler::SourceIp { v4_prefix, v6_prefix } => {
                self.source_position(key, v4_prefix, v6_prefix)?
            }
            _ => return None,
        };
        Some(self.backends[pos] as usize)
    }

    /// The position in `backends` the service's scheduler picks (for Maglev,
    /// which [`Service::pick`] answers itself, from the key's flow hash).
    #[inline(never)]
    fn position(
        &self,
        state: &ForwardingState,
        key: &FlowKey,
        active: &[u32],
        sched: &mut SchedState,
    ) -> Option<usize> {
        let b = |pos: usize| &state.backends[self.backends[pos] as usize];
        let act = |pos: usize| active.get(b(pos).id as usize).copied().unwrap_or(0) as u64;
        let n = self.backends.len();
        let pos = match self.scheduler {
            Scheduler::Maglev => self.maglev.lookup(key.hash())?,
            Scheduler::SourceIp { v4_prefix, v6_prefix } => {
                self.source_position(key, v4_prefix, v6_prefix)?
            }
            Scheduler::RoundRobin => {
                let mut found = None;
                for _ in 0..n {
                    let p = (sched.rr as usize) % n;
                    sched.rr = sched.rr.wrapping_add(1);
                    if b(p).takes_new_flows() {
                        found = Some(p);
                        break;
                    }
                }
                found?
            }
            Scheduler::WeightedRoundRobin => {
                // Smooth WRR (as nginx): each eligible backend gains its weight,
                // the highest is chosen and loses the total.
                if sched.wrr.len() != n {
                    return None; // sized by the worker when the state arrives
                }
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for p in 0..n {
                    if !b(p).takes_new_flows() {
                        continue;
                    }
                    let w = b(p).weight as i64;
                    sched.wrr[p] += w;
                    total += w;
                    if best.is_none_or(|q| sched.wrr[p] > sched.wrr[q]) {
                        best = Some(p);
                    }
                }
                let p = best?;
                sched.wrr[p] -= total;
                p
            }
            Scheduler::LeastConnections => least(n, sched, |p| b(p).takes_new_flows(), |p| (act(p), 1))?,
            Scheduler::WeightedLeastConnections => {
                least(n, sched, |p| b(p).takes_new_flows(), |p| (act(p) + 1, b(p).weight as u64))?
            }
            Scheduler::LeastResponseTime => least(
                n,
                sched,
                |p| b(p).takes_new_flows(),
                |p| ((b(p).rtt_us.max(1) as u64) * (act(p) + 1), 1),
            )?,
        };
        Some(pos)
    }
}

/// The eligible position with the smallest cost `num / den`; ties go to the
/// first after a rotating start, so equal backends share new flows.
fn least(
    n: usize,
    sched: &mut SchedState,
    eligible: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> (u64, u64),
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = sched.rr as usize % n;
    sched.rr = sched.rr.wrapping_add(1);
    let mut best: Option<(usize, (u64, u64))> = None;
    for i in 0..n {
        let p = (start + i) % n;
        if !eligible(p) {
            continue;
        }
        let c = cost(p);
        let better = match best {
            None => true,
            Some((_, bc)) => (c.0 as u128) * (bc.1 as u128) < (bc.0 as u128) * (c.1 as u128),
        };
        if better {
            best = Some((p, c));
        }
    }
    best.map(|(p, _)| p)
}

/// The flow's source address with host bits cleared to the prefix length.
pub fn masked_source(key: &FlowKey, v4_prefix: u8, v6_prefix: u8) -> [u8; 16] {
    let mut a = key.src;
    let bits = if key.is_v4() { 96 + v4_prefix.min(32) as usize } else { v6_prefix.min(128) as usize };
    for (i, byte) in a.iter_mut().enumerate() {
        let keep = bits.saturating_sub(i * 8).min(8);
        *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    a
}

#[cfg(test)]
mod tests;
