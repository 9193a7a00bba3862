//! VIP-path health checks (`[services.health] via = "vip"`, the default
//! where a service's mode allows it).
//!
//! The box's kernel connects to the backend's own address, from a source
//! port the health thread claimed for that backend ([`VipPathPorts`]). The
//! worker that sends the kernel's packet on the wire turns it into a
//! client's packet ([`Worker::vip_path_out`]): its destination becomes the
//! VIP, then it gets the backend's DSR rewrite (MAC, IP-in-IP, GUE) like any
//! client packet of the service. A backend that really serves the VIP in
//! that mode answers the box directly, from the VIP; the worker gives the
//! answer the backend's address back before the kernel sees it
//! ([`vip_path_answer`]). The check code and the kernel's socket need know
//! nothing of the VIP, and every check kind that talks TCP or UDP (TCP,
//! HTTP, HTTPS, UDP) takes the VIP's path unchanged.
//!
//! None of this is on the path of client packets: the kernel's packets and
//! the box's own traffic only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Counter, DropReason, PacketMeta, Verdict, Worker};
use crate::balancer::state::{ForwardingState, VipPathTarget};
use crate::dataplane::packet::Packet;
use crate::net::{checksum, ethernet, ipv4, ipv6, proto, put16};

/// The first source port of VIP-path checks: the box's kernel must use
/// `VIP_PATH_FIRST_PORT .. + VIP_PATH_PORTS` for nothing else (Linux's
/// default ephemeral range ends at 60999).
pub const VIP_PATH_FIRST_PORT: u16 = 64512;
/// How many checks can be in flight through VIP paths at once.
pub const VIP_PATH_PORTS: usize = 1024;

/// Which backend each VIP-path source port is checking now, shared by the
/// health threads (which claim and release ports) and the workers (which
/// read them). Lock-free: one atomic per port, 0 for free, else the
/// backend's stable id + 1.
pub struct VipPathPorts {
    owners: Box<[AtomicU32]>,
    cursor: AtomicUsize,
}

impl Default for VipPathPorts {
    fn default() -> Self {
        VipPathPorts {
            owners: (0..VIP_PATH_PORTS).map(|_| AtomicU32::new(0)).collect(),
            cursor: AtomicUsize::new(0),
        }
    }
}

impl VipPathPorts {
    /// Claims a free port for a check of backend `id`, the next free one
    /// after the last claimed (so a port is reused as late as possible:
    /// a late packet of an earlier check finds it free or someone else's).
    /// `None` when every port is taken.
    pub fn claim(self: &Arc<Self>, id: u32) -> Option<VipPathClaim> {
        let n = self.owners.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find_map(|i| {
            self.owners[i]
                .compare_exchange(0, id.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed)
                .ok()?;
            self.cursor.store(i + 1, Ordering::Relaxed);
            Some(VipPathClaim { ports: Arc::clone(self), index: i })
        })
    }

    /// The backend id a port is claimed for.
    #[inline]
    pub fn owner(&self, port: u16) -> Option<u32> {
        let i = port.checked_sub(VIP_PATH_FIRST_PORT)? as usize;
        let v = self.owners.get(i)?.load(Ordering::Acquire);
        v.checked_sub(1)
    }
}

/// A claimed VIP-path source port; released when dropped.
pub struct VipPathClaim {
    ports: Arc<VipPathPorts>,
    index: usize,
}

impl VipPathClaim {
    pub fn port(&self) -> u16 {
        VIP_PATH_FIRST_PORT + self.index as u16
    }
}

impl Drop for VipPathClaim {
    fn drop(&mut self) {
        self.ports.owners[self.index].store(0, Ordering::Release);
    }
}

/// Where the fields of a kernel's TCP or UDP packet are (untagged or
/// tagged Ethernet, IPv4 without options or fragments, IPv6 without
/// extension headers: what the kernel sends for a check).
struct View {
    l2: usize,
    v6: bool,
    ip_len: usize,
    protocol: u8,
    l4: usize,
    sport: u16,
    dport: u16,
}

impl View {
    fn parse(d: &[u8]) -> Option<View> {
        let l2 = super::l2_len(d);
        let ip = d.get(l2..)?;
        let et = u16::from_be_bytes([*d.get(l2.checked_sub(2)?)?, *d.get(l2 - 1)?]);
        let (v6, ip_len, protocol, hlen) = match et {
            ethernet::ETHERTYPE_IPV4 => {
                let p = ipv4::Packet::new_checked(ip).ok()?;
                if p.frag_offset() != 0 || p.more_fragments() {
                    return None;
                }
                (false, p.total_len(), p.protocol(), p.header_len())
            }
            ethernet::ETHERTYPE_IPV6 => {
                let p = ipv6::Packet::new_checked(ip).ok()?;
                (true, ipv6::HEADER_LEN + p.payload_len(), p.next_header(), ipv6::HEADER_LEN)
            }
            _ => return None,
        };
        let min = match protocol {
            proto::TCP => 20,
            proto::UDP => 8,
            _ => return None,
        };
        if ip_len < hlen + min || ip_len > ip.len() {
            return None;
        }
        let l4 = l2 + hlen;
        let port = |at: usize| u16::from_be_bytes([d[l4 + at], d[l4 + at + 1]]);
        Some(View { l2, v6, ip_len, protocol, l4, sport: port(0), dport: port(2) })
    }

    /// Offset of the source (`dst` false) or destination address.
    fn addr_at(&self, dst: bool) -> usize {
        self.l2
            + match (self.v6, dst) {
                (false, false) => ipv4::field::SRC,
                (false, true) => ipv4::field::DST,
                (true, false) => ipv6::field::SRC,
                (true, true) => ipv6::field::DST,
            }
    }

    fn addr(&self, d: &[u8], dst: bool) -> IpAddr {
        let at = self.addr_at(dst);
        if self.v6 {
            IpAddr::from(<[u8; 16]>::try_from(&d[at..at + 16]).unwrap_or_default())
        } else {
            IpAddr::from(<[u8; 4]>::try_from(&d[at..at + 4]).unwrap_or_default())
        }
    }

    /// Rewrites an address to `to` (same family), keeping the IPv4 header's
    /// and the TCP or UDP checksum right (both cover it, the latter through
    /// its pseudo-header).
    fn set_addr(&self, d: &mut [u8], dst: bool, to: IpAddr) {
        let at = self.addr_at(dst);
        let len = if self.v6 { 16 } else { 4 };
        let mut old = [0u8; 16];
        old[..len].copy_from_slice(&d[at..at + len]);
        let new = match to {
            IpAddr::V4(a) => {
                let mut n = [0u8; 16];
                n[..4].copy_from_slice(&a.octets());
                n
            }
            IpAddr::V6(a) => a.octets(),
        };
        let (old, new) = (&old[..len], &new[..len]);
        let sum_at = self.l4 + if self.protocol == proto::TCP { 16 } else { 6 };
        let sum = u16::from_be_bytes([d[sum_at], d[sum_at + 1]]);
        // A UDP checksum of 0 over IPv4 means none: it stays none.
        if !(self.protocol == proto::UDP && sum == 0 && !self.v6) {
            let mut c = checksum::update_bytes(sum, old, new);
            if self.protocol == proto::UDP && c == 0 {
                c = 0xffff;
            }
            put16(d, sum_at, c);
        }
        if !self.v6 {
            let h = self.l2 + ipv4::field::CHECKSUM;
            let c = checksum::update_bytes(u16::from_be_bytes([d[h], d[h + 1]]), old, new);
            put16(d, h, c);
        }
        d[at..at + len].copy_from_slice(new);
    }
}

/// What became of a packet for the box that may answer a VIP-path check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not an answer to a check: the box's as it is.
    NotOne,
    /// An answer from the VIP, now from the backend's address.
    Translated,
    /// An answer to a check from the backend's own address: it did not
    /// come from the VIP, and a client would not take it either (a UDP
    /// server answering from the wrong address). Dropped, so the check fails.
    Drop(DropReason),
}

/// Gives an answer to a VIP-path check (from the VIP to a claimed port)
/// the backend's address, which the kernel's socket is connected to.
pub fn vip_path_answer(st: &ForwardingState, frame: &mut [u8], ports: &VipPathPorts) -> Answer {
    let Some(v) = View::parse(frame) else { return Answer::NotOne };
    let Some(id) = ports.owner(v.dport) else { return Answer::NotOne };
    let Some(t) = st.vip_path(id) else { return Answer::NotOne };
    let src = v.addr(frame, false);
    if src == t.vip && t.backend.addr.is_ipv6() == v.v6 {
        v.set_addr(frame, false, t.backend.addr);
        Answer::Translated
    } else if src == t.backend.addr {
        Answer::Drop(DropReason::VipPathWrongSource)
    } else {
        Answer::NotOne
    }
}

impl Worker {
    /// A packet the box's kernel sends on port `in_port`: when it is a
    /// VIP-path check's (a claimed source port, to the backend claimed for),
    /// it is readdressed to the VIP and rewritten for the backend like a
    /// client's packet; the verdict says where it goes. `None`: the kernel's
    /// own packet, to send as it is.
    pub fn vip_path_out<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        ports: &VipPathPorts,
    ) -> Option<Verdict> {
        let v = View::parse(pkt.data())?;
        let t: &VipPathTarget = st.vip_path(ports.owner(v.sport)?)?;
        if v.addr(pkt.data(), true) != t.backend.addr || t.vip.is_ipv6() != v.v6 {
            return None;
        }
        v.set_addr(pkt.data_mut(), true, t.vip);
        let d = pkt.data();
        let (tos, df) = if v.v6 {
            (((u16::from_be_bytes([d[v.l2], d[v.l2 + 1]]) >> 4) & 0xff) as u8, true)
        } else {
            let flags = u16::from_be_bytes([d[v.l2 + ipv4::field::FLAGS_FRAG], d[v.l2 + 7]]);
            (d[v.l2 + ipv4::field::DSCP_ECN], flags & ipv4::FLAG_DF != 0)
        };
        let meta = PacketMeta {
            hash: crate::balancer::hash::fmix64((v.sport as u64) << 16 | v.dport as u64),
            ip_len: v.ip_len as u16,
            l2_len: v.l2 as u8,
            v6: v.v6,
            df,
            tos,
            ..PacketMeta::default()
        };
        let verdict = self.rewrite_with(st, t.forwarding, &t.backend, pkt, in_port, now_ms, &meta);
        match verdict {
            Verdict::Drop(r) => self.counters[r] += 1,
            _ => self.counters[Counter::VipPathProbes] += 1,
        }
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use super::*;
    use crate::balancer::state::Forwarding;
    use crate::dataplane::packet::TestPacket;
    use crate::dataplane::testframes;
    use crate::net::tcp;

    const ME4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const ME6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    fn vip(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1))
        }
    }

    fn me(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(ME6)
        } else {
            IpAddr::V4(ME4)
        }
    }

    /// The test state (backends ids 0..10) with backend id 7 checked
    /// through the VIP's path in `forwarding`.
    fn state(forwarding: Forwarding, v6: bool) -> ForwardingState {
        let mut st = testframes::state(forwarding, v6, proto::TCP);
        let backend = Backend { id: 7, ..testframes::backend(3, v6) };
        st.set_vip_paths(vec![VipPathTarget { vip: vip(v6), forwarding, backend }]);
        st
    }
    use crate::balancer::state::Backend;

    /// A frame from `src`:`sport` to `dst`:`dport` with a 4-byte payload
    /// and every checksum right.
    fn frame(src: IpAddr, dst: IpAddr, protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        let l4len = if protocol == proto::TCP { 24 } else { 12 };
        let mut f = vec![0u8; 14];
        f[0..12].copy_from_slice(&[2, 0, 0, 0, 9, 9, 2, 0, 0, 0, 0, 1]);
        let pseudo = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                let mut ip = [0u8; 20];
                ipv4::Repr {
                    src: s,
                    dst: d,
                    protocol,
                    payload_len: l4len as u16,
                    ttl: 64,
                    dscp_ecn: 0,
                    ident: 0,
                    dont_fragment: true,
                }
                .write(&mut ip);
                f.extend_from_slice(&ip);
                checksum::pseudo_v4(s, d, protocol, l4len as u16)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
                let mut ip = [0u8; 40];
                ipv6::Repr {
                    src: s,
                    dst: d,
                    next_header: protocol,
                    payload_len: l4len as u16,
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                }
                .write(&mut ip);
                f.extend_from_slice(&ip);
                checksum::pseudo_v6(&s, &d, protocol, l4len as u32)
            }
            _ => unreachable!(),
        };
        let at = f.len();
        f.resize(at + l4len, 0);
        put16(&mut f, at, sport);
        put16(&mut f, at + 2, dport);
        if protocol == proto::TCP {
            f[at + 12] = 5 << 4;
            f[at + 13] = tcp::SYN;
        } else {
            put16(&mut f, at + 4, l4len as u16);
        }
        f[at + l4len - 4..].copy_from_slice(b"ping");
        let sum_at = at + if protocol == proto::TCP { 16 } else { 6 };
        let c = !checksum::fold(checksum::add(pseudo, &f[at..]));
        put16(&mut f, sum_at, c);
        f
    }

    /// Whether the IP packet at `l2` has its checksums right: the IPv4
    /// header's, and the TCP or UDP one over its pseudo-header.
    fn sums_ok(f: &[u8], l2: usize) -> bool {
        let ip = &f[l2..];
        let (pseudo, l4) = if ip[0] >> 4 == 4 {
            let p = ipv4::Packet::new_checked(ip).unwrap();
            if checksum::fold(checksum::add(0, &ip[..20])) != 0xffff {
                return false;
            }
            let len = (p.total_len() - 20) as u16;
            (checksum::pseudo_v4(p.src(), p.dst(), p.protocol(), len), &ip[20..p.total_len()])
        } else {
            let p = ipv6::Packet::new_checked(ip).unwrap();
            let len = p.payload_len();
            (checksum::pseudo_v6(&p.src(), &p.dst(), p.next_header(), len as u32), &ip[40..40 + len])
        };
        checksum::fold(checksum::add(pseudo, l4)) == 0xffff
    }

    #[test]
    fn ports_are_claimed_once_released_on_drop_and_reused_last() {
        let ports = Arc::new(VipPathPorts::default());
        let a = ports.claim(7).unwrap();
        let b = ports.claim(7).unwrap();
        assert_ne!(a.port(), b.port());
        assert_eq!(ports.owner(a.port()), Some(7));
        assert_eq!(ports.owner(VIP_PATH_FIRST_PORT - 1), None);
        let freed = a.port();
        drop(a);
        assert_eq!(ports.owner(freed), None);
        // The next claim moves on rather than take the port just freed.
        let c = ports.claim(8).unwrap();
        assert_ne!(c.port(), freed);
        let all: Vec<_> = (0..VIP_PATH_PORTS - 2).map(|_| ports.claim(9).unwrap()).collect();
        assert!(ports.claim(9).is_none(), "every port taken");
        drop(all);
        assert!(ports.claim(9).is_some());
    }

    #[test]
    fn a_checks_packet_goes_to_the_vip_through_the_backends_rewrite_and_its_answer_comes_back_from_the_backend(
    ) {
        for v6 in [false, true] {
            for (forwarding, protocol) in [
                (Forwarding::L2, proto::TCP),
                (Forwarding::L2, proto::UDP),
                (Forwarding::IpIp, proto::TCP),
                (Forwarding::Gue { port: 6080 }, proto::TCP),
            ] {
                let what = format!("v6={v6} {forwarding:?} {protocol}");
                let st = state(forwarding, v6);
                let b = st.vip_path(7).unwrap().backend.clone();
                let ports = Arc::new(VipPathPorts::default());
                let claim = ports.claim(7).unwrap();
                let mut w = Worker::new(crate::dataplane::pipeline::WorkerConfig::small());
                let out = frame(me(v6), b.addr, protocol, claim.port(), 8080);
                let mut p = TestPacket::new(&out);
                let v = w.vip_path_out(&st, &mut p, 0, 0, &ports);
                assert_eq!(v, Some(Verdict::Forward { port: 0 }), "{what}");
                assert_eq!(w.counters[Counter::VipPathProbes], 1, "{what}");
                let d = p.data();
                assert_eq!(&d[0..6], &b.next_hop.unwrap(), "{what}: to the backend's MAC");
                // The inner packet: from the box to the VIP, the rest as the kernel sent it.
                let inner = match forwarding {
                    Forwarding::L2 => 14,
                    Forwarding::IpIp => 14 + if v6 { 40 } else { 20 },
                    Forwarding::Gue { .. } => 14 + if v6 { 40 } else { 20 } + 8,
                };
                if inner > 14 {
                    let outer_dst = if v6 { &d[14 + 24..14 + 40] } else { &d[14 + 16..14 + 20] };
                    assert_eq!(
                        outer_dst,
                        &crate::balancer::flow::ip16(b.addr)[if v6 { 0 } else { 12 }..],
                        "{what}"
                    );
                }
                let ip = &d[inner..];
                let (src, dst) = if v6 {
                    (
                        IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()),
                        IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()),
                    )
                } else {
                    (
                        IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()),
                        IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()),
                    )
                };
                assert_eq!((src, dst), (me(v6), vip(v6)), "{what}");
                assert!(sums_ok(d, inner), "{what}: checksums after the readdressing");
                assert_eq!(&d[d.len() - 4..], b"ping", "{what}");

                // The backend answers from the VIP: the kernel gets it from the backend.
                let mut back = frame(vip(v6), me(v6), protocol, 8080, claim.port());
                assert_eq!(vip_path_answer(&st, &mut back, &ports), Answer::Translated, "{what}");
                assert_eq!(back, frame(b.addr, me(v6), protocol, 8080, claim.port()), "{what}");
                // An answer from the backend's own address is not the VIP's.
                let mut direct = frame(b.addr, me(v6), protocol, 8080, claim.port());
                assert_eq!(
                    vip_path_answer(&st, &mut direct, &ports),
                    Answer::Drop(DropReason::VipPathWrongSource),
                    "{what}"
                );
                // Released: the kernel's own traffic again, both ways.
                let port = claim.port();
                drop(claim);
                let mut p = TestPacket::new(&out);
                assert_eq!(w.vip_path_out(&st, &mut p, 0, 0, &ports), None, "{what}");
                assert_eq!(p.data(), &out[..]);
                let mut back = frame(vip(v6), me(v6), protocol, 8080, port);
                assert_eq!(vip_path_answer(&st, &mut back, &ports), Answer::NotOne, "{what}");
            }
        }
    }

    #[test]
    fn only_the_claimed_backends_packets_are_readdressed() {
        let st = state(Forwarding::L2, false);
        let ports = Arc::new(VipPathPorts::default());
        let mut w = Worker::new(crate::dataplane::pipeline::WorkerConfig::small());
        let (b, other) = (st.vip_path(7).unwrap().backend.addr, testframes::backend(4, false).addr);
        let mine = ports.claim(7).unwrap();
        let unknown = ports.claim(99).unwrap();
        let cases = [
            (frame(me(false), other, proto::TCP, mine.port(), 80), "to another address"),
            (
                frame(me(false), b, proto::TCP, unknown.port(), 80),
                "a port claimed for a backend not in the state",
            ),
            (frame(me(false), b, proto::TCP, 40000, 80), "a port outside the range"),
            (
                frame(me(true), testframes::backend(3, true).addr, proto::TCP, mine.port(), 80),
                "another family",
            ),
        ];
        for (f, what) in cases {
            let mut p = TestPacket::new(&f);
            assert_eq!(w.vip_path_out(&st, &mut p, 0, 0, &ports), None, "{what}");
            assert_eq!(p.data(), &f[..], "{what}: untouched");
        }
        // Cut short, ICMP, an ARP request: untouched.
        let f = frame(me(false), b, proto::TCP, mine.port(), 80);
        for cut in [10, 14, 30, 40, f.len() - 1] {
            let mut p = TestPacket::new(&f[..cut]);
            assert_eq!(w.vip_path_out(&st, &mut p, 0, 0, &ports), None, "cut at {cut}");
            let mut g = f[..cut].to_vec();
            assert_eq!(vip_path_answer(&st, &mut g, &ports), Answer::NotOne, "cut at {cut}");
        }
        assert_eq!(w.counters[Counter::VipPathProbes], 0);
    }
}
