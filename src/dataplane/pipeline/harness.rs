//! What the pipeline's property tests and its fuzz targets (`crate::fuzz`)
//! share: a state with a service per forwarding mode, the check that the
//! fast paths decide as the general parser, and the check of what leaves
//! the box.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::fast::{fast_v4, fast_v6};
use super::*;
use crate::balancer::state::{Backend, Forwarding, PortIdentity};
use crate::dataplane::packet::TestPacket;
use crate::net::{ethernet, ipv4, ipv6, proto};

/// Two ports (port 1's own IPv4 address is also a VIP, balanced only when
/// it arrives on port 0) and TCP and UDP services on an IPv4 and an IPv6
/// VIP, in each forwarding mode.
fn differential_state() -> ForwardingState {
    use crate::dataplane::testframes::{backend, service};
    let vip4 = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
    let vip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));
    let own1 = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 2));
    let mut next_id = 0u32;
    let mut spec = |vip: IpAddr, proto: u8, port: u16, forwarding: Forwarding| {
        // Ids go on across services: one state holds them all.
        let backends = (0..3)
            .map(|i| {
                next_id += 1;
                Backend { id: next_id, ..backend(i, vip.is_ipv6()) }
            })
            .collect();
        service(vip, proto, port, forwarding, backends)
    };
    let services = vec![
        spec(vip4, proto::TCP, 80, Forwarding::IpIp),
        spec(vip4, proto::UDP, 80, Forwarding::Gue { port: 6080 }),
        spec(vip4, proto::TCP, 443, Forwarding::L2),
        spec(vip6, proto::TCP, 80, Forwarding::IpIp),
        spec(vip6, proto::UDP, 80, Forwarding::Gue { port: 6080 }),
        spec(own1, proto::TCP, 80, Forwarding::L2),
    ];
    ForwardingState::build(1, two_ports(PortIdentity { mtu: 1500, ..Default::default() }), services)
        .expect("a valid state")
}

/// Port 0 (198.18.0.1, 2001:db8::1, with `first`'s MTU and kernel settings)
/// and port 1, whose own address 198.18.100.2 is also a VIP.
pub fn two_ports(first: PortIdentity) -> Vec<PortIdentity> {
    vec![
        PortIdentity {
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ..first
        },
        PortIdentity {
            mac: [2, 0, 0, 0, 0, 2],
            ipv4: Some(Ipv4Addr::new(198, 18, 100, 2)),
            ipv6: None,
            mtu: 1500,
            ..Default::default()
        },
    ]
}

/// The differential tests' state (built once per process) and a fresh
/// worker with small tables for one case.
pub fn differential_worker() -> (&'static ForwardingState, Worker) {
    static STATE: std::sync::OnceLock<ForwardingState> = std::sync::OnceLock::new();
    let cfg = WorkerConfig::small();
    (STATE.get_or_init(differential_state), Worker::new(cfg))
}

/// Whether the IPv4 and IPv6 fast paths, where they take `frame`, decide
/// as the general parser: the same key, hash, service, lengths, flags, DF
/// and TOS, and no verdict of its own. `w`'s service memos carry over from
/// the frames before (one worker sees a whole sequence).
pub fn fast_paths_agree(
    st: &ForwardingState,
    w: &mut Worker,
    in_port: u16,
    frame: &[u8],
) -> Result<(), String> {
    let Some(port) = st.ports.get(in_port as usize) else { return Ok(()) };
    let mut fast = PacketMeta::default();
    let took = fast_v4(st, port, in_port, frame, &mut w.last_service, &mut fast).is_some()
        || fast_v6(st, port, in_port, frame, &mut w.last_service_v6, &mut fast).is_some();
    let mut general = PacketMeta::default();
    let verdict = w.parse_general(st, &mut TestPacket::new(frame), in_port, port, &mut general);
    if !took {
        return Ok(());
    }
    if verdict.is_some() {
        return Err(format!("the fast path took {frame:02x?}, the general parser says {verdict:?}"));
    }
    if fast != general {
        return Err(format!("{frame:02x?}: fast {fast:?}, general {general:?}"));
    }
    Ok(())
}

/// What a forwarded frame carries (behind its Ethernet header and any
/// VLAN tag): for IP-in-IP and GUE the client's IP
/// packet unchanged (padding dropped) behind an outer header whose lengths
/// and IPv4 checksum are right, nothing after it; for L2 the frame as received behind new
/// MACs. Replies carry a valid IPv4 header checksum. Panics otherwise.
pub fn check_output(input: &[u8], out: &[u8], forwarded: bool) {
    // L2 DSR: the frame as received behind new MACs.
    if forwarded && out.len() > 12 && out.get(12..) == input.get(12..) {
        return;
    }
    // Behind an 802.1Q tag where the frame has one.
    let (lo, li) = (encap::l2_len(out), encap::l2_len(input));
    let ether = u16::from_be_bytes([out[lo - 2], out[lo - 1]]);
    let l3 = &out[lo..];
    let (inner, outer_proto, trailing) = match ether {
        ethernet::ETHERTYPE_ARP if !forwarded => {
            crate::net::arp::Packet::new_checked(l3).expect("an ARP reply");
            return;
        }
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).expect("an IPv4 header");
            assert!(ip.header_checksum_ok(), "outer checksum: {out:02x?}");
            if !forwarded {
                return;
            }
            (&l3[ip.header_len()..ip.total_len()], ip.protocol(), l3.len() - ip.total_len())
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(l3).expect("an IPv6 header");
            if !forwarded {
                return;
            }
            (&l3[ipv6::HEADER_LEN..ip.total_len()], ip.next_header(), l3.len() - ip.total_len())
        }
        other => panic!("ethertype {other:#06x}: {out:02x?}"),
    };
    let in_l3 = &input[li..];
    let (inner, udp_len) = match outer_proto {
        proto::IPIP | proto::IPV6 => (inner, None),
        proto::UDP => (&inner[8..], Some(u16::from_be_bytes([inner[4], inner[5]]) as usize)),
        // Not encapsulated: then it must have been the frame as received.
        _ => panic!("an L2-forwarded frame changed:\n in  {input:02x?}\n out {out:02x?}"),
    };
    // The client frame's padding is trimmed before the outer header goes on.
    assert_eq!(trailing, 0, "bytes after the outer packet: {out:02x?}");
    if let Some(len) = udp_len {
        assert_eq!(len, inner.len() + 8, "GUE UDP length");
    }
    assert_eq!(inner, &in_l3[..inner.len()], "the inner packet differs from the client's");
    let ip_len = if in_l3[0] >> 4 == 4 {
        u16::from_be_bytes([in_l3[2], in_l3[3]]) as usize
    } else {
        40 + u16::from_be_bytes([in_l3[4], in_l3[5]]) as usize
    };
    assert_eq!(inner.len(), ip_len, "the inner packet's length");
}
