//! Answers l4lb gives itself, built over the request with `net/` writers: ARP
//! replies, neighbour advertisements, echo replies (to its own addresses and
//! to VIPs).

use std::net::Ipv6Addr;

use super::verdict::DropReason;
use super::{Verdict, Worker, OWN_TTL};
use crate::balancer::flow::mapped;
use crate::balancer::state::{ForwardingState, PortIdentity};
use crate::dataplane::packet::Packet;
use crate::net::{arp, ethernet, icmp, ipv4, ipv6, proto};

impl Worker {
    /// Answers an ARP request for the port's address or a VIP that asks for
    /// it; other ARP (replies: the management core learns neighbours from
    /// them) is for the box.
    pub(super) fn arp<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortIdentity,
        in_port: u16,
    ) -> Verdict {
        let data = pkt.data_mut();
        let Ok(a) = arp::Packet::new_checked(&data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if a.op() != arp::OP_REQUEST {
            return Verdict::Local;
        }
        let target = a.target_ip();
        let ours = port.ipv4 == Some(target) || st.is_vip(&mapped(target)).is_some_and(|s| s.answer_arp);
        if !ours {
            return Verdict::Drop(DropReason::ArpNotOurs);
        }
        let (smac, sip) = (a.sender_mac(), a.sender_ip());
        arp::write(&mut data[l2..], arp::OP_REPLY, port.mac, target, smac, sip);
        ethernet::set_addresses(data, smac, port.mac);
        Verdict::Reply { port: in_port }
    }

    /// Traffic to l4lb's own IPv4 address (or ICMP to a VIP): echo requests
    /// are answered; the rest is the box's (`Local`: to the port's kernel
    /// interface, if any) where `kernel` says so (its own address, or a VIP
    /// on a port that punts unknown VIP traffic), else dropped. The header
    /// was checked by the parser.
    pub(super) fn local_v4<P: Packet>(
        &mut self,
        pkt: &mut P,
        l2: usize,
        in_port: u16,
        kernel: bool,
    ) -> Verdict {
        let data = pkt.data_mut();
        let Ok(ip) = ipv4::Packet::new_checked(&data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let ihl = ip.header_len();
        let is_echo = ip.protocol() == proto::ICMP
            && !ip.is_fragment()
            && ip.payload().len() >= icmp::HEADER_LEN
            && ip.payload()[icmp::field::TYPE] == icmp::v4::ECHO_REQUEST;
        if !is_echo {
            return if kernel { Verdict::Local } else { Verdict::Drop(DropReason::NoService) };
        }
        ethernet::swap_addresses(data);
        let Ok(mut ip) = ipv4::Packet::new_checked(&mut data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        ip.swap_addresses();
        ip.set_ttl(OWN_TTL);
        ip.fill_checksum();
        icmp::set_type(&mut data[l2 + ihl..], icmp::v4::ECHO_REPLY);
        Verdict::Reply { port: in_port }
    }

    /// As [`Worker::local_v4`] for IPv6; `l4_off` is the upper-layer header's
    /// offset from the IPv6 header.
    pub(super) fn local_v6<P: Packet>(
        &mut self,
        pkt: &mut P,
        l2: usize,
        l4_off: usize,
        upper: u8,
        in_port: u16,
        kernel: bool,
    ) -> Verdict {
        let data = pkt.data_mut();
        let is_echo = upper == proto::ICMPV6
            && data.len() >= l2 + l4_off + icmp::HEADER_LEN
            && data[l2 + l4_off + icmp::field::TYPE] == icmp::v6::ECHO_REQUEST;
        if !is_echo {
            return if kernel { Verdict::Local } else { Verdict::Drop(DropReason::NoService) };
        }
        ethernet::swap_addresses(data);
        let Ok(mut ip) = ipv6::Packet::new_checked(&mut data[l2..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // Swapping source and destination leaves the pseudo-header sum as it was.
        ip.swap_addresses();
        ip.set_hop_limit(OWN_TTL);
        icmp::set_type(&mut data[l2 + l4_off..], icmp::v6::ECHO_REPLY);
        Verdict::Reply { port: in_port }
    }

    /// Answers a neighbour solicitation for the port's IPv6 address (or a VIP
    /// that asks for it) with a solicited advertisement.
    pub(super) fn neighbour_solicit<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        l4_off: usize,
        port: &PortIdentity,
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
            // The kernel interface's own link-local address: its kernel answers.
            if port.kernel && is_link_local(&ns.target) {
                return Verdict::Local;
            }
            return Verdict::Drop(DropReason::ArpNotOurs);
        }
        let src = ip.src();
        let (dst_ip, dst_mac, solicited) = if src.is_unspecified() {
            // All-nodes (RFC 4861 §7.2.4).
            (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0x33, 0x33, 0, 0, 0, 1], false)
        } else {
            (src, ns.link_addr.unwrap_or_else(|| ethernet::mac_at(data, ethernet::field::SRC)), true)
        };
        let want = l2 + ipv6::HEADER_LEN + icmp::NA_LEN;
        let have = pkt.data().len();
        let sized = if have > want { pkt.trim_back(have - want) } else { pkt.append(want - have) };
        if !sized {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let data = pkt.data_mut();
        ethernet::set_addresses(data, dst_mac, port.mac);
        ethernet::set_ethertype(data, l2, ethernet::ETHERTYPE_IPV6);
        ipv6::Repr {
            src: ns.target,
            dst: dst_ip,
            next_header: proto::ICMPV6,
            payload_len: icmp::NA_LEN as u16,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
        }
        .write(&mut data[l2..]);
        let msg = &mut data[l2 + ipv6::HEADER_LEN..];
        icmp::write_neighbor_advert(msg, &ns.target, &dst_ip, &ns.target, port.mac, solicited);
        Verdict::Reply { port: in_port }
    }
}

/// fe80::/10.
#[inline]
pub(super) fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}
