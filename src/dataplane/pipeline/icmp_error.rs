//! ICMP errors l4lb originates: frag-needed (IPv4 with DF) and
//! packet-too-big (IPv6) when a packet would not fit its tunnel,
//! rate-limited per worker by a token bucket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::verdict::DropReason;
use super::{Counter, PacketMeta, Verdict, Worker, OWN_TTL, V4_HDR, V6_HDR};
use crate::balancer::state::ForwardingState;
use crate::dataplane::packet::Packet;
use crate::net::{ethernet, icmp, ipv4, ipv6, proto};

impl Worker {
    /// Answers "too big to encapsulate" with ICMP frag-needed (IPv4 with DF)
    /// or packet-too-big (IPv6), rate-limited, built over the packet.
    pub(super) fn too_big<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
        mtu: usize,
    ) -> Verdict {
        if !meta.v6 && !meta.df {
            return Verdict::Drop(DropReason::TooBig);
        }
        // icmp_rate_per_s per second, icmp_burst deep.
        if !self.icmp_bucket.take(now_ms) {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        let Some(port) = st.ports.get(in_port as usize) else { return Verdict::Drop(DropReason::NotForUs) };
        let l2 = meta.l2_len as usize;
        let svc_vip = st.services[meta.service as usize].vip;
        let d = pkt.data_mut();
        let client_mac = ethernet::mac_at(d, ethernet::field::SRC);
        ethernet::set_addresses(d, client_mac, port.mac);
        let len = if meta.v6 {
            // Quote as much as fits in the IPv6 minimum MTU.
            let q = (meta.ip_len as usize).min(1280 - V6_HDR - icmp::HEADER_LEN);
            let client = ipv6::addr_at(d, l2 + ipv6::field::SRC);
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
            let msg = &mut d[l2 + V6_HDR..l2 + V6_HDR + plen as usize];
            icmp::write_packet_too_big(msg, &src, &client, mtu as u32);
            l2 + V6_HDR + plen as usize
        } else {
            let ihl = ((d[l2 + ipv4::field::VER_IHL] & 0x0f) as usize) * 4;
            let q = (ihl + 8).min(meta.ip_len as usize);
            let client = ipv4::addr_at(d, l2 + ipv4::field::SRC);
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
            let msg = &mut d[l2 + V4_HDR..l2 + V4_HDR + plen as usize];
            icmp::write_frag_needed(msg, mtu as u16);
            l2 + V4_HDR + plen as usize
        };
        let have = pkt.data().len();
        if have > len && !pkt.trim_back(have - len) {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters[Counter::IcmpTooBigSent] += 1;
        Verdict::Reply { port: in_port }
    }
}
