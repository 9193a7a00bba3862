//! The exception path's rules, apart from DPDK: which packets for the box
//! are control-plane traffic (first in line to the kernel, never rate
//! limited) and the token bucket that bounds the rest.

use crate::net::{ethernet, icmp, ipv4, ipv6, proto};

/// BGP's TCP port.
pub const BGP_PORT: u16 = 179;
/// BFD: single-hop control, echo, multihop control (RFC 5881, 5883).
pub const BFD_PORTS: [u16; 3] = [3784, 3785, 4784];
/// OSPF's IP protocol number.
const OSPF: u8 = 89;

/// How a packet for the box's kernel is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PuntClass {
    /// Routing and neighbour traffic: ARP, NDP and router messages, BGP,
    /// BFD, OSPF; and whatever comes from a priority source (the backends:
    /// answers to the box's health checks). Its own ring, drained first, not
    /// rate limited, so a flood of anything else cannot starve a BGP session
    /// or fail the health checks.
    Control,
    /// Everything else (SSH, ICMP, …): rate limited per worker.
    Other,
}

/// The class of an Ethernet frame for the box (VLAN tags allowed);
/// `priority(source)` says whether its IP source (16-byte form, IPv4
/// mapped) goes first whatever it carries.
pub fn class(frame: &[u8], priority: impl Fn(&[u8; 16]) -> bool) -> PuntClass {
    let Ok(f) = ethernet::Frame::new_checked(frame) else { return PuntClass::Other };
    let p = f.payload();
    let (protocol, l4) = match f.ethertype() {
        ethernet::ETHERTYPE_ARP => return PuntClass::Control,
        ethernet::ETHERTYPE_IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(p) else { return PuntClass::Other };
            if priority(&crate::balancer::flow::mapped(ip.src())) {
                return PuntClass::Control;
            }
            if ip.frag_offset() != 0 {
                return PuntClass::Other;
            }
            (ip.protocol(), &p[ip.header_len().min(p.len())..])
        }
        ethernet::ETHERTYPE_IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(p) else { return PuntClass::Other };
            if priority(&ip.src().octets()) {
                return PuntClass::Control;
            }
            let Ok(upper) = ip.upper() else { return PuntClass::Other };
            (upper.protocol, p.get(upper.offset..).unwrap_or(&[]))
        }
        _ => return PuntClass::Other,
    };
    let port = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let control = match protocol {
        proto::TCP => port(0) == Some(BGP_PORT) || port(2) == Some(BGP_PORT),
        proto::UDP => port(2).is_some_and(|d| BFD_PORTS.contains(&d)),
        proto::ICMPV6 => {
            l4.first().is_some_and(|t| (icmp::v6::ROUTER_SOLICIT..=icmp::v6::REDIRECT).contains(t))
        }
        OSPF => true,
        _ => false,
    };
    if control {
        PuntClass::Control
    } else {
        PuntClass::Other
    }
}

/// Whether a frame the kernel sent is its answer for one of the port's own
/// addresses (`v4`, `v6`): an ARP reply from `v4` or a neighbour
/// advertisement for `v6`. l4lb answers for those on the wire itself; the
/// kernel's answers for its link-local address go out.
pub fn kernel_answer_for(
    frame: &[u8],
    v4: Option<std::net::Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
) -> bool {
    let Ok(f) = ethernet::Frame::new_checked(frame) else { return false };
    let p = f.payload();
    match f.ethertype() {
        ethernet::ETHERTYPE_ARP => crate::net::arp::Packet::new_checked(p)
            .is_ok_and(|a| a.op() == crate::net::arp::OP_REPLY && Some(a.sender_ip()) == v4),
        ethernet::ETHERTYPE_IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(p) else { return false };
            let l4 = ip.payload();
            ip.next_header() == proto::ICMPV6
                && l4.first() == Some(&icmp::v6::NEIGHBOR_ADVERT)
                && l4.get(8..24).and_then(|t| <[u8; 16]>::try_from(t).ok()).map(std::net::Ipv6Addr::from)
                    == v6
                && v6.is_some()
        }
        _ => false,
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
/// Time comes in (ms), read once per poll by the caller.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens_milli: u64,
    last_ms: u64,
    rate: u64,
    burst: u64,
}

impl TokenBucket {
    /// Full at the start.
    pub fn new(rate_per_s: u64, burst: u64) -> TokenBucket {
        TokenBucket { tokens_milli: burst * 1000, last_ms: 0, rate: rate_per_s, burst }
    }

    /// Takes a token if there is one.
    #[inline]
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens_milli = (self.tokens_milli + elapsed * self.rate).min(self.burst * 1000);
        if self.tokens_milli < 1000 {
            return false;
        }
        self.tokens_milli -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testframes;
    use crate::net::tcp;

    fn with_ports(mut frame: Vec<u8>, v6: bool, sport: u16, dport: u16) -> Vec<u8> {
        let l4 = 14 + if v6 { 40 } else { 20 };
        frame[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        frame[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        frame
    }

    fn class(frame: &[u8]) -> PuntClass {
        super::class(frame, |_| false)
    }

    #[test]
    fn priority_sources_go_first_whatever_they_carry() {
        let frame = with_ports(testframes::tcp(1, false, tcp::ACK), false, 80, 40000);
        let src = crate::balancer::flow::mapped(crate::net::ipv4::addr_at(&frame, 14 + 12));
        assert_eq!(super::class(&frame, |a| *a == src), PuntClass::Control);
        assert_eq!(super::class(&frame, |a| *a != src), PuntClass::Other);
    }

    #[test]
    fn routing_and_neighbour_traffic_is_control_the_rest_is_not() {
        for v6 in [false, true] {
            let tcp = testframes::tcp(1, v6, tcp::ACK);
            assert_eq!(class(&with_ports(tcp.clone(), v6, 40000, 179)), PuntClass::Control, "to BGP");
            assert_eq!(class(&with_ports(tcp.clone(), v6, 179, 40000)), PuntClass::Control, "from BGP");
            assert_eq!(class(&with_ports(tcp, v6, 40000, 22)), PuntClass::Other, "SSH");
            let udp = testframes::udp(1, v6);
            assert_eq!(class(&with_ports(udp.clone(), v6, 49152, 3784)), PuntClass::Control, "BFD");
            assert_eq!(class(&with_ports(udp.clone(), v6, 3784, 53)), PuntClass::Other, "from BFD's port");
            assert_eq!(class(&udp[..20]), PuntClass::Other, "cut short");
        }
        let arp = crate::net::arp::request_frame(
            [2, 0, 0, 0, 0, 1],
            std::net::Ipv4Addr::new(198, 18, 0, 1),
            std::net::Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(class(&arp), PuntClass::Control);
        let ns = icmp::solicit_frame(
            [2, 0, 0, 0, 0, 1],
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert_eq!(class(&ns), PuntClass::Control);
        assert_eq!(class(&[0u8; 10]), PuntClass::Other);
    }

    #[test]
    fn the_kernels_answers_for_the_ports_addresses_stay_in_and_link_local_ones_go_out() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let (mac, me4) = ([2, 0, 0, 0, 1, 1], Ipv4Addr::new(198, 18, 0, 1));
        let mut reply = crate::net::arp::request_frame(mac, me4, Ipv4Addr::new(198, 18, 0, 2));
        crate::net::arp::write(
            &mut reply[14..],
            crate::net::arp::OP_REPLY,
            mac,
            me4,
            [2; 6],
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert!(kernel_answer_for(&reply, Some(me4), None));
        assert!(!kernel_answer_for(&reply, Some(Ipv4Addr::new(198, 18, 0, 9)), None));
        let na = |target: Ipv6Addr| {
            let mut f = vec![0u8; 14 + 40 + icmp::NA_LEN];
            ethernet::write_header(&mut f, [2; 6], mac, ethernet::ETHERTYPE_IPV6);
            let repr = ipv6::Repr {
                src: target,
                dst: "2001:db8::2".parse().unwrap(),
                next_header: proto::ICMPV6,
                payload_len: icmp::NA_LEN as u16,
                hop_limit: 255,
                traffic_class: 0,
                flow_label: 0,
            };
            repr.write(&mut f[14..]);
            icmp::write_neighbor_advert(
                &mut f[54..],
                &target,
                &"2001:db8::2".parse().unwrap(),
                &target,
                mac,
                true,
            );
            f
        };
        let me6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(kernel_answer_for(&na(me6), None, Some(me6)));
        assert!(
            !kernel_answer_for(&na("fe80::1".parse().unwrap()), None, Some(me6)),
            "link-local: the kernel's"
        );
        assert!(!kernel_answer_for(&na(me6), None, None));
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(1000, 5);
        assert_eq!((0..10).filter(|_| b.take(0)).count(), 5, "the burst");
        assert!(!b.take(0));
        assert!(b.take(1), "1 ms later: one token");
        assert!(!b.take(1));
        assert_eq!((0..100).filter(|_| b.take(1000)).count(), 5, "a long pause refills the burst only");
        assert!(!b.take(999), "time going back gives nothing");
    }
}
