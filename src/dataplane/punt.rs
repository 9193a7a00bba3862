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
