//! The fast paths of the parser: an untagged IPv4 or IPv6 TCP/UDP packet to
//! our MAC and a service, read in one pass over a fixed-size prefix. What
//! they decline, the general parser ([`super::parse`]) decides.

use super::{PacketMeta, UDP_HDR, V4_HDR, V6_HDR};
use crate::balancer::flow::{FlowKey, KeyKind};
use crate::balancer::state::{ForwardingState, PortIdentity};
use crate::net::ethernet::field as eth;
use crate::net::ipv4::field as ip4;
use crate::net::ipv6::field as ip6;
use crate::net::tcp::field as tcp;
use crate::net::udp::field as udp;
use crate::net::{ethernet, ipv4, proto};

/// The last IPv4 (VIP, protocol, port, ingress port) -> service answer, kept
/// per worker and cleared when a new forwarding state arrives: traffic comes
/// in runs to the same service.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServiceMemo {
    /// VIP (32 bits) | protocol << 32 | port << 40 | ingress port << 56
    /// (ingress ports below 256 only). Empty: all ones, which no packet
    /// makes (the protocol byte is TCP's or UDP's).
    tag: u64,
    service: usize,
}

impl ServiceMemo {
    pub(super) const EMPTY: ServiceMemo = ServiceMemo { tag: u64::MAX, service: usize::MAX };
}

/// Whether the frame's destination MAC is the port's (compared as one word).
#[inline(always)]
pub(super) fn to_our_mac(frame: &[u8], port: &PortIdentity) -> bool {
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
pub(super) fn fast_v4(
    st: &ForwardingState,
    port: &PortIdentity,
    in_port: u16,
    data: &[u8],
    last: &mut ServiceMemo,
    out: &mut PacketMeta,
) -> Option<()> {
    const L2: usize = ethernet::HEADER_LEN;
    const L4: usize = L2 + V4_HDR;
    // Up to the TCP flags (a UDP header is shorter).
    let h: &[u8; L4 + tcp::FLAGS + 1] = data.get(..L4 + tcp::FLAGS + 1)?.try_into().ok()?;
    // Little-endian word reads: the bytes stay in wire order inside them.
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    // Ethertype 0x0800, version 4, IHL 5.
    if !to_our_mac(h, port) || le32(eth::ETHERTYPE) & 0x00ff_ffff != 0x0045_0008 {
        return None;
    }
    let total = u16::from_be_bytes([h[L2 + ip4::TOTAL_LEN], h[L2 + ip4::TOTAL_LEN + 1]]) as usize;
    let frag = u16::from_be_bytes([h[L2 + ip4::FLAGS_FRAG], h[L2 + ip4::FLAGS_FRAG + 1]]);
    let p = h[L2 + ip4::PROTOCOL];
    // A whole TCP header (20 + its data offset, checked below to be at least
    // 20) or UDP header (20 + 8) inside the packet. (A data offset past the
    // packet's end is a malformed segment, whose flags the general path does
    // not trust: it reads them as 0.)
    let min_total = match p {
        proto::TCP => V4_HDR + (h[L4 + tcp::DATA_OFF] >> 4) as usize * 4,
        proto::UDP => V4_HDR + UDP_HDR,
        _ => return None,
    };
    if frag & 0x3fff != 0 || h[L2 + ip4::TTL] == 0 || total < min_total || data.len() < L2 + total {
        return None;
    }
    // The one's-complement sum does not depend on byte order (RFC 1071 §2):
    // verifying it needs no byte swaps. It folds to 0xffff exactly when the
    // plain sum is a multiple of 0xffff (the sum is never 0: version 4).
    let sum = le32(L2) as u64
        + le32(L2 + 4) as u64
        + le32(L2 + 8) as u64
        + le32(L2 + 12) as u64
        + le32(L2 + 16) as u64;
    if sum % 0xffff != 0 {
        return None;
    }
    let (src4, dst4, ports) = (le32(L2 + ip4::SRC), le32(L2 + ip4::DST), le32(L4 + tcp::SRC_PORT));
    // The key straight into `out` (a caller reads `out` only when this
    // returns `Some`): built on the stack first, it was copied over.
    out.key = FlowKey {
        src: crate::balancer::flow::mapped_bytes(&src4.to_le_bytes()),
        dst: crate::balancer::flow::mapped_bytes(&dst4.to_le_bytes()),
        src_port: u16::from_be_bytes([h[L4 + tcp::SRC_PORT], h[L4 + tcp::SRC_PORT + 1]]),
        dst_port: u16::from_be_bytes([h[L4 + tcp::DST_PORT], h[L4 + tcp::DST_PORT + 1]]),
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
        if h[L4 + tcp::DATA_OFF] >> 4 < 5 {
            return None;
        }
        h[L4 + tcp::FLAGS]
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
    out.tos = h[L2 + ip4::DSCP_ECN];
    Some(())
}

/// The last IPv6 (VIP, protocol, port, ingress port) -> service answer (see
/// [`ServiceMemo`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct ServiceMemoV6 {
    vip: [u8; 16],
    /// protocol | port << 8 | ingress port << 24. Empty: all ones, which no
    /// packet makes (40 bits at most).
    tag: u64,
    service: usize,
}

impl ServiceMemoV6 {
    pub(super) const EMPTY: ServiceMemoV6 =
        ServiceMemoV6 { vip: [0; 16], tag: u64::MAX, service: usize::MAX };
}

/// The IPv6 common case, as [`fast_v4`]: an untagged IPv6 packet to our MAC
/// whose next header is TCP (with a whole header) or UDP, to a service. No
/// extension headers, no hop limit 0, no multicast, IPv4-mapped or own
/// destination; the rest — and every malformed packet — takes the general
/// path.
#[inline(always)]
pub(super) fn fast_v6(
    st: &ForwardingState,
    port: &PortIdentity,
    in_port: u16,
    data: &[u8],
    last: &mut ServiceMemoV6,
    out: &mut PacketMeta,
) -> Option<()> {
    const L2: usize = ethernet::HEADER_LEN;
    const L4: usize = L2 + V6_HDR;
    // Up to the TCP flags.
    let h: &[u8; L4 + tcp::FLAGS + 1] = data.get(..L4 + tcp::FLAGS + 1)?.try_into().ok()?;
    // Ethertype 0x86dd, version 6.
    if !to_our_mac(h, port) || h[eth::ETHERTYPE] != 0x86 || h[eth::ETHERTYPE + 1] != 0xdd || h[L2] >> 4 != 6 {
        return None;
    }
    let payload = u16::from_be_bytes([h[L2 + ip6::PAYLOAD_LEN], h[L2 + ip6::PAYLOAD_LEN + 1]]) as usize;
    let (p, hop_limit) = (h[L2 + ip6::NEXT_HEADER], h[L2 + ip6::HOP_LIMIT]);
    let data_off = h[L4 + tcp::DATA_OFF] >> 4;
    if hop_limit == 0 || data.len() < L4 + payload {
        return None;
    }
    let tcp_flags = match p {
        proto::TCP if payload >= 20 && data_off >= 5 && data_off as usize * 4 <= payload => {
            h[L4 + tcp::FLAGS]
        }
        proto::UDP if payload >= UDP_HDR => 0,
        _ => return None,
    };
    let src: [u8; 16] = h[L2 + ip6::SRC..L2 + ip6::SRC + 16].try_into().ok()?;
    let dst: [u8; 16] = h[L2 + ip6::DST..L2 + ip6::DST + 16].try_into().ok()?;
    if dst[0] == 0xff {
        return None;
    }
    let key = FlowKey {
        src,
        dst,
        src_port: u16::from_be_bytes([h[L4 + udp::SRC_PORT], h[L4 + udp::SRC_PORT + 1]]),
        dst_port: u16::from_be_bytes([h[L4 + udp::DST_PORT], h[L4 + udp::DST_PORT + 1]]),
        proto: p,
    };
    let tag = p as u64 | (key.dst_port as u64) << 8 | (in_port as u64) << 24;
    let service = if last.tag == tag && last.vip == dst {
        last.service
    } else {
        // The port's own address is never balanced, nor an IPv4-mapped one
        // (the general path drops it): checked before storing.
        if port.ipv6.is_some_and(|a| a.octets() == dst) || key.is_v4() {
            return None;
        }
        let s = st.find_service(&dst, p, key.dst_port)?;
        *last = ServiceMemoV6 { vip: dst, tag, service: s };
        s
    };
    *out = PacketMeta {
        hash: key.hash(),
        key,
        service: service as u32,
        ip_len: (V6_HDR + payload) as u16,
        l2_len: L2 as u8,
        v6: true,
        kind: KeyKind::FiveTuple,
        tcp_flags,
        df: true,
        tos: (h[L2 + ip6::VER_TC_FLOW] << 4) | (h[L2 + ip6::VER_TC_FLOW + 1] >> 4),
    };
    Some(())
}
