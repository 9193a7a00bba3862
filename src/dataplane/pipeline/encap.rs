//! The DSR rewrite of a decided packet: the backend's precomputed template
//! (untagged frames that fit), or the general writer — L2 MAC rewrite,
//! IP-in-IP (4in4, 6in6, 4in6) or GUE.

use std::net::IpAddr;

use super::verdict::DropReason;
use super::{PacketMeta, Verdict, Worker, GUE_SPORT_BASE, OWN_TTL, UDP_HDR, V4_HDR, V6_HDR};
use crate::balancer::state::{Backend, EncapTemplate, Forwarding, ForwardingState, Service};
use crate::dataplane::packet::Packet;
use crate::net::{checksum, ethernet, ipv4, ipv6, proto, put16, udp};

impl Worker {
    /// Encapsulation with a backend's precomputed template (untagged frames):
    /// one copy of the outer headers, then the per-packet fields. Produces
    /// the same bytes as the general path in `rewrite`.
    #[inline]
    pub(super) fn encap_template<P: Packet>(
        &mut self,
        t: &EncapTemplate,
        pkt: &mut P,
        meta: &PacketMeta,
    ) -> Verdict {
        const L2: usize = ethernet::HEADER_LEN;
        let ip_len = meta.ip_len as usize;
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
            let (tc, fl) = (meta.tos as u32, (meta.hash as u32) & 0x000f_ffff);
            let w0 = 0x6000_0000 | tc << 20 | fl;
            use ipv6::field::{NEXT_HEADER, PAYLOAD_LEN, VER_TC_FLOW};
            ip[L2 + VER_TC_FLOW..L2 + VER_TC_FLOW + 4].copy_from_slice(&w0.to_be_bytes());
            ip[L2 + PAYLOAD_LEN..L2 + PAYLOAD_LEN + 2].copy_from_slice(&payload_len.to_be_bytes());
            ip[L2 + NEXT_HEADER] = if meta.v6 { proto::IPV6 } else { proto::IPIP };
        } else {
            let total = payload_len as u32 + V4_HDR as u32;
            use ipv4::field::{CHECKSUM, DSCP_ECN, IDENT, TOTAL_LEN};
            // Ident (0 with DF) and flags, one word; `w` is the one of the
            // two halves that is not 0, for the checksum.
            let (w1, w) = if meta.df {
                (ipv4::FLAG_DF as u32, ipv4::FLAG_DF as u32)
            } else {
                self.ident = self.ident.wrapping_add(1);
                ((self.ident as u32) << 16, self.ident as u32)
            };
            ip[L2 + DSCP_ECN] = meta.tos;
            ip[L2 + TOTAL_LEN..L2 + TOTAL_LEN + 2].copy_from_slice(&(total as u16).to_be_bytes());
            ip[L2 + IDENT..L2 + IDENT + 4].copy_from_slice(&w1.to_be_bytes());
            // Four terms below 2^16: two end-around-carry steps fold them.
            let s = t.sum as u32 + meta.tos as u32 + (total & 0xffff) + w;
            let s = (s & 0xffff) + (s >> 16);
            let c = !((s & 0xffff) + (s >> 16)) as u16;
            ip[L2 + CHECKSUM..L2 + CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        if t.gue {
            let u = L2 + outer_ip;
            let sport = GUE_SPORT_BASE + ((meta.hash >> 16) as u16 & 0x3fff);
            use udp::field::{LEN, SRC_PORT};
            h[u + SRC_PORT..u + SRC_PORT + 2].copy_from_slice(&sport.to_be_bytes());
            h[u + LEN..u + LEN + 2].copy_from_slice(&payload_len.to_be_bytes());
        }
        Verdict::Forward { port: t.port }
    }

    /// [`Worker::rewrite_with`] in `svc`'s mode.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rewrite<P: Packet>(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        b: &Backend,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
    ) -> Verdict {
        self.rewrite_with(st, svc.forwarding, b, pkt, in_port, now_ms, meta)
    }

    /// The general DSR rewrite of a packet for backend `b` in `forwarding`
    /// mode. (Out of line: the template path, [`Worker::encap_template`],
    /// takes nearly every packet.)
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rewrite_with<P: Packet>(
        &mut self,
        st: &ForwardingState,
        forwarding: Forwarding,
        b: &Backend,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
    ) -> Verdict {
        let Some(out) = st.ports.get(b.port) else { return Verdict::Drop(DropReason::NoNeighbour) };
        let Some(next_hop) = b.next_hop else { return Verdict::Drop(DropReason::NoNeighbour) };
        if forwarding == Forwarding::L2 {
            let d = pkt.data_mut();
            ethernet::set_addresses(d, next_hop, out.mac);
            return Verdict::Forward { port: b.port as u16 };
        }
        let outer_v6 = b.addr.is_ipv6();
        let gue_port = match forwarding {
            Forwarding::Gue { port } => Some(port),
            _ => None,
        };
        let overhead = if outer_v6 { V6_HDR } else { V4_HDR } + if gue_port.is_some() { UDP_HDR } else { 0 };
        // Too big once encapsulated: an IPv4 packet without DF in an IPv4
        // tunnel is sent in fragments (of the outer packet: the backend
        // reassembles it before decapsulating, RFC 2003 §5.1); the rest gets
        // frag-needed / packet-too-big, or is dropped.
        let fits = meta.ip_len as usize + overhead <= out.mtu as usize;
        let fragment = !fits && !outer_v6 && !meta.v6 && !meta.df;
        if !fits && !fragment {
            return self.too_big(
                st,
                pkt,
                in_port,
                now_ms,
                meta,
                out.mtu as usize - overhead.min(out.mtu as usize),
            );
        }
        let l2 = meta.l2_len as usize;
        // Ethernet padding must not travel inside the tunnel.
        let extra = pkt.data().len() - (l2 + meta.ip_len as usize);
        if extra > 0 && !pkt.trim_back(extra) {
            return Verdict::Drop(DropReason::Malformed);
        }
        let inner_proto = if meta.v6 { proto::IPV6 } else { proto::IPIP };
        let outer_proto = if gue_port.is_some() { proto::UDP } else { inner_proto };
        let payload_len = (meta.ip_len as usize + overhead - if outer_v6 { V6_HDR } else { V4_HDR }) as u16;
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
        ethernet::set_addresses(d, next_hop, out.mac);
        let ip_at = l2;
        match (src, b.addr) {
            (IpAddr::V4(s), IpAddr::V4(dst)) => {
                ethernet::set_ethertype(d, l2, ethernet::ETHERTYPE_IPV4);
                let df = meta.df;
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
                    dscp_ecn: meta.tos,
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
                    traffic_class: meta.tos,
                    flow_label: (meta.hash as u32) & 0x000f_ffff,
                }
                .write(&mut d[ip_at..]);
            }
            _ => return Verdict::Drop(DropReason::NoSourceAddress),
        }
        if let Some(gport) = gue_port {
            let u = ip_at + if outer_v6 { V6_HDR } else { V4_HDR };
            let sport = GUE_SPORT_BASE + ((meta.hash >> 16) as u16 & 0x3fff);
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
        if fragment {
            return Verdict::Fragment { port: b.port as u16 };
        }
        Verdict::Forward { port: b.port as u16 }
    }
}

/// The length of a frame's Ethernet header (with a VLAN tag, if any).
pub fn l2_len(frame: &[u8]) -> usize {
    match frame.get(12..14) {
        Some([0x81, 0x00]) => ethernet::HEADER_LEN + 4,
        _ => ethernet::HEADER_LEN,
    }
}

/// The frames a [`Verdict::Fragment`] packet leaves as (for `simulate` and
/// tests; the worker loop writes the same bytes straight into new buffers):
/// `frame`'s first `l2` bytes, then each fragment of its IPv4 packet.
pub fn fragment_frames(frame: &[u8], l2: usize, mtu: usize) -> Vec<Vec<u8>> {
    let Some(ip) = frame.get(l2..) else { return Vec::new() };
    let Some(plan) = ipv4::Fragments::plan(ip, mtu) else { return Vec::new() };
    (0..plan.count())
        .filter_map(|i| {
            let mut f = vec![0u8; l2 + plan.len_of(i)];
            f[..l2].copy_from_slice(&frame[..l2]);
            plan.write(ip, i, &mut f[l2..])?;
            Some(f)
        })
        .collect()
}
