//! Parsing: from a received frame to either a verdict (malformed, not ours, a
//! local reply) or the [`PacketMeta`] of a packet to balance. The fast paths
//! ([`super::fast`]) take the common case; the general parser here decides
//! everything else, and — a property test holds them to it — decides what
//! the fast paths take identically.

use super::fast::{fast_v4, fast_v6};
use super::verdict::DropReason;
use super::{Counter, PacketMeta, Verdict, Worker};
use crate::balancer::flow::{key_v4, key_v6, mapped, FlowKey, KeyKind};
use crate::balancer::state::{ForwardingState, PortIdentity};
use crate::dataplane::packet::Packet;
use crate::net::{ethernet, icmp, ipv4, ipv6, proto, tcp};

impl Worker {
    /// Everything up to the flow lookup: L2 checks, ARP/NDP/echo answers, and
    /// the flow key and service of VIP traffic. Returns the verdict when it is
    /// already decided, or `None` with `out` filled for a VIP packet. The IPv4
    /// fast path is inlined into the burst loop; the rest is a call.
    #[inline(always)]
    pub(super) fn parse<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        out: &mut PacketMeta,
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
    pub(super) fn parse_slow<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        port: &PortIdentity,
        out: &mut PacketMeta,
    ) -> Option<Verdict> {
        if fast_v6(st, port, in_port, pkt.data(), &mut self.last_service_v6, out).is_some() {
            return None;
        }
        self.parse_general(st, pkt, in_port, port, out)
    }

    /// The general parser, which decides every packet the fast paths decline
    /// (and, tests check, every one they take, identically).
    pub(super) fn parse_general<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        port: &PortIdentity,
        out: &mut PacketMeta,
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

    pub(super) fn parse_v4<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortIdentity,
        in_port: u16,
        out: &mut PacketMeta,
    ) -> Option<Verdict> {
        use DropReason::*;
        let data = pkt.data();
        let multicast = ethernet::is_multicast(&ethernet::mac_at(data, ethernet::field::DST));
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
        let (mut key, kind) = match key_v4(&ip) {
            Ok(k) => k,
            Err(_) => return Some(Verdict::Drop(Malformed)),
        };
        let service = if kind == KeyKind::Fragment {
            let first = (ip.frag_offset() == 0).then(|| dst_port(ip.protocol(), ip.payload())).flatten();
            self.fragment_service(st, &mut key, ip.ident() as u32, first)
        } else {
            self.service_for(st, &key)
        };
        let Some(service) = service else {
            return Some(if st.is_vip(&mapped(dst)).is_some() {
                if ip.protocol() == proto::ICMP && kind == KeyKind::ThreeTuple {
                    self.local_v4(pkt, l2, in_port, port.punt_unknown_vip_ports)
                } else {
                    unknown_vip_port(port)
                }
            } else {
                Verdict::Drop(NotForUs)
            });
        };
        let tcp_flags = tcp_flags(ip.protocol(), kind, ip.payload());
        *out = PacketMeta {
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

    pub(super) fn parse_v6<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        l2: usize,
        port: &PortIdentity,
        in_port: u16,
        out: &mut PacketMeta,
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
            let t = l4[icmp::field::TYPE];
            if t == icmp::v6::NEIGHBOR_SOLICIT {
                return Some(self.neighbour_solicit(st, pkt, l2, upper.offset, port, in_port));
            }
            if t == icmp::v6::NEIGHBOR_ADVERT || t == icmp::v6::ROUTER_SOLICIT || t == icmp::v6::ROUTER_ADVERT
            {
                // Advertisements and router messages are for the control plane.
                return Some(Verdict::Local);
            }
        }
        if ip.hop_limit() == 0 {
            return Some(Verdict::Drop(TtlExpired));
        }
        if port.ipv6 == Some(dst) {
            return Some(self.local_v6(pkt, l2, upper.offset, upper.protocol, in_port, true));
        }
        // Link-local and multicast traffic is the kernel interface's, if the
        // port has one (its link-local address, MLD, OSPFv3, …).
        if port.kernel && (super::replies::is_link_local(&dst) || dst.is_multicast()) {
            return Some(Verdict::Local);
        }
        if dst.is_multicast() {
            return Some(Verdict::Drop(NotForUs));
        }
        let (mut key, kind) = match key_v6(&ip, &upper) {
            Ok(k) => k,
            Err(_) => return Some(Verdict::Drop(Malformed)),
        };
        // An IPv4-mapped destination (in the header, or an ICMPv6 error's
        // embedded source) is no IPv6 VIP, and such a key would be stored
        // as an IPv4 flow's (`FlowKey::is_v4`): with its source cut to its
        // last four bytes it could pass for an IPv4 client's flow.
        if key.is_v4() {
            return Some(Verdict::Drop(NotForUs));
        }
        let service = match upper.fragment {
            Some(f) if kind == KeyKind::Fragment => {
                let first = (f.offset == 0).then(|| dst_port(upper.protocol, l4)).flatten();
                self.fragment_service(st, &mut key, f.ident, first)
            }
            _ => self.service_for(st, &key),
        };
        let Some(service) = service else {
            return Some(if st.is_vip(&dst.octets()).is_some() {
                if upper.protocol == proto::ICMPV6 && kind == KeyKind::ThreeTuple {
                    self.local_v6(pkt, l2, upper.offset, upper.protocol, in_port, port.punt_unknown_vip_ports)
                } else {
                    unknown_vip_port(port)
                }
            } else {
                Verdict::Drop(NotForUs)
            });
        };
        let tcp_flags = tcp_flags(upper.protocol, kind, l4);
        *out = PacketMeta {
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

    /// The service a key that is not a fragment's belongs to (fragments:
    /// [`Worker::fragment_service`]).
    #[inline]
    pub(super) fn service_for(&self, st: &ForwardingState, key: &FlowKey) -> Option<usize> {
        st.find_service(&key.dst, key.proto, key.dst_port)
    }

    /// A fragment's service: a first fragment's by its destination port
    /// (`first`; recorded for the datagram's later fragments), a later one's
    /// by that record, else (its first was not seen here) the VIP's
    /// lowest-port service of its protocol, counted. The key's destination
    /// port becomes the service's, so each service's fragments of one client
    /// are a flow of their own (`docs/architecture.md`, "Flow keys").
    #[inline(never)]
    fn fragment_service(
        &mut self,
        st: &ForwardingState,
        key: &mut FlowKey,
        ident: u32,
        first: Option<u16>,
    ) -> Option<usize> {
        let service = match first {
            Some(port) => {
                let s = st
                    .find_service(&key.dst, key.proto, port)
                    .or_else(|| st.find_service(&key.dst, key.proto, 0))?;
                self.fragments.record(&key.src, &key.dst, key.proto, ident, st.services[s].port);
                s
            }
            None => match self.fragments.port_of(&key.src, &key.dst, key.proto, ident) {
                Some(port) => st.find_service(&key.dst, key.proto, port)?,
                None => {
                    self.counters[Counter::FragmentsUnmatched] += 1;
                    st.find_service_any_port(&key.dst, key.proto)?
                }
            },
        };
        key.dst_port = st.services[service].port;
        Some(service)
    }
}

/// The destination port of a first fragment's TCP or UDP header, if whole
/// enough to hold it.
#[inline]
fn dst_port(protocol: u8, l4: &[u8]) -> Option<u16> {
    if protocol != proto::TCP && protocol != proto::UDP {
        return None;
    }
    Some(u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?))
}

/// A packet to a VIP on a protocol and port no service covers: the
/// kernel's where the port says so, else dropped.
#[inline]
fn unknown_vip_port(port: &PortIdentity) -> Verdict {
    if port.punt_unknown_vip_ports {
        Verdict::Local
    } else {
        Verdict::Drop(DropReason::NoService)
    }
}

/// The TCP flags of a first fragment or whole segment (0 otherwise).
pub(super) fn tcp_flags(p: u8, kind: KeyKind, l4: &[u8]) -> u8 {
    if p == proto::TCP && kind == KeyKind::FiveTuple {
        tcp::Segment::new_checked(l4).map(|s| s.flags()).unwrap_or(0)
    } else {
        0
    }
}
