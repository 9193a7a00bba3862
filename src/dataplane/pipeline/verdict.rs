//! What the pipeline decides for a packet ([`Verdict`]), why it drops one
//! ([`DropReason`]), and the worker's counters.

use std::sync::atomic::{AtomicU64, Ordering};

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
pub(super) struct BackendCount {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
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
