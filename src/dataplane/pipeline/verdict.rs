//! What the pipeline decides for a packet ([`Verdict`]) and why it drops one
//! ([`DropReason`]).

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
    /// Send the rewritten packet on this port in fragments that fit the
    /// port's MTU (an encapsulated IPv4 packet without DF that no longer
    /// fits: the outer packet is fragmented, RFC 2003 §5.1). The worker
    /// loop cuts it (`net::ipv4::write_fragment`) into new buffers. (As
    /// small as `Forward`: the MTU is the port's, the L2 length the frame's.)
    Fragment {
        port: u16,
    },
    /// For the box itself and not answered by the pipeline: ARP replies and
    /// neighbour advertisements (the worker hands them to the management
    /// core, which learns its neighbours from them, then passes them to the
    /// port's kernel interface) and other traffic to the box's own addresses
    /// (to the kernel interface; freed on a port without one).
    Local,
    /// Another worker must decide this packet (it is unchanged): the owner
    /// of a client with no usable persistence entry, or the next worker to
    /// look for an ICMP error's flow (`decide.rs`). The worker loop passes
    /// it over a lock-free ring; the receiver runs it through
    /// `Worker::process_handed`.
    Handoff {
        worker: u16,
    },
    Drop(DropReason),
}

/// Declares [`DropReason`] from one list: variant, counter name, help.
macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal;)*) => {
        /// Why a packet was dropped; one counter each (see
        /// `dataplane::counters`). Adding one is one line in this list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name: the `reason` label of `l4lb_drops_total`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            /// The reason in a sentence (the documentation of the variant).
            pub const fn help(self) -> &'static str {
                match self {
                    $(DropReason::$variant => concat!($($doc),*),)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A header failed its length or version checks.
    Malformed => "malformed";
    /// IPv4 header checksum wrong.
    BadChecksum => "bad_checksum";
    /// Unicast frame for another MAC address.
    NotOurMac => "not_our_mac";
    /// Neither IPv4, IPv6 nor ARP.
    UnsupportedEthertype => "unsupported_ethertype";
    /// Addressed to neither l4lb nor a VIP.
    NotForUs => "not_for_us";
    /// A VIP, but no service for this protocol and port.
    NoService => "no_service";
    /// The service has no backend taking new flows.
    NoBackend => "no_backend";
    /// TTL or hop limit 0.
    TtlExpired => "ttl_expired";
    /// Too big to encapsulate and not allowed a frag-needed answer (no DF).
    TooBig => "too_big";
    /// A frag-needed or packet-too-big answer was due but over the rate limit.
    IcmpRateLimited => "icmp_rate_limited";
    /// The next hop's MAC address is unknown.
    NoNeighbour => "no_neighbour";
    /// The egress port has no address of the outer family to encapsulate from.
    NoSourceAddress => "no_source_address";
    /// Not enough headroom to encapsulate.
    NoHeadroom => "no_headroom";
    /// ARP request or neighbour solicitation for an address l4lb does not own.
    ArpNotOurs => "arp_not_ours";
    /// The TX queue and the device were both full (counted by the worker loop).
    TxFull => "tx_full";
    /// A neighbour answer for the management core found its ring full (worker loop).
    ControlRingFull => "control_ring_full";
    /// Received on a port that forwards nowhere (plain forwarding).
    NoRoute => "no_route";
    /// A packet for another worker found that worker's hand-off ring full (worker loop).
    HandoffRingFull => "handoff_ring_full";
    /// A packet for the kernel interface over the worker's punt rate (control-plane traffic is exempt).
    PuntRateLimited => "punt_rate_limited";
    /// A packet for the kernel interface found the worker's punt ring full.
    PuntRingFull => "punt_ring_full";
    /// A new flow from a source the service's access lists refuse.
    AccessDenied => "access_denied";
    /// No packet buffer was free for a fragment (worker loop).
    NoMbuf => "no_mbuf";
    /// A new flow over its service's quota (new flows per second or flow-table share).
    OverQuota => "over_quota";
    /// An answer to a VIP-path health check from the backend's own address,
    /// not the VIP: a client would not take it either (worker loop).
    VipPathWrongSource => "vip_path_wrong_source";
}
