//! Frames and a forwarding state for benchmarks and profiling: 64-byte TCP
//! segments (or UDP datagrams) to the VIPs 198.18.100.1:80 /
//! [2001:db8:100::1]:80 from many clients, and one service over ten backends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::balancer::flowtable::Timeouts;
use crate::balancer::state::{Backend, Forwarding, ForwardingState, PortInfo, Scheduler, ServiceSpec};

/// One Maglev service on the VIP of the frames below, port 80, protocol
/// `proto`, ten backends (IPv6 ones when `v6`) with known MACs.
pub fn state(forwarding: Forwarding, v6: bool, proto: u8) -> ForwardingState {
    let backends = (0..10u32)
        .map(|i| Backend {
            id: i,
            addr: if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i as u16))
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i as u8))
            },
            weight: 1,
            draining: false,
            rtt_us: 0,
            next_hop: Some([2, 0, 0, 0, 1, i as u8]),
            port: 0,
        })
        .collect();
    ForwardingState::build(
        1,
        vec![PortInfo {
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            mtu: 1500,
        }],
        vec![ServiceSpec {
            name: "bench".into(),
            vip: if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1))
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1))
            },
            proto,
            port: 80,
            forwarding,
            scheduler: Scheduler::Maglev,
            persistence_ms: 0,
            timeouts: Timeouts::default(),
            answer_arp: false,
            maglev_size: 65537,
            backends,
        }],
    )
    .expect("a valid benchmark state")
}

/// Flow `flow` (client address and port derived from it), TCP `flags`.
pub fn tcp(flow: u32, v6: bool, flags: u8) -> Vec<u8> {
    l4(flow, v6, crate::net::proto::TCP, flags)
}

/// A UDP datagram of flow `flow` to port 80 of the VIP.
pub fn udp(flow: u32, v6: bool) -> Vec<u8> {
    l4(flow, v6, crate::net::proto::UDP, 0)
}

fn l4(flow: u32, v6: bool, proto: u8, flags: u8) -> Vec<u8> {
    let (sport, client) = (1024 + (flow % 64_000) as u16, flow / 64_000);
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc1]);
    let l4len = if proto == crate::net::proto::TCP { 20 } else { 8 };
    if v6 {
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..24].copy_from_slice(
            &Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (client >> 16) as u16, client as u16).octets(),
        );
        ip[24..40].copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1).octets());
        f.extend_from_slice(&ip);
    } else {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + l4len as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&Ipv4Addr::from(0xc612_0000u32 | (client & 0xffff)).octets());
        ip[16..20].copy_from_slice(&[198, 18, 100, 1]);
        let c = crate::net::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    let mut l4 = vec![0u8; l4len];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&80u16.to_be_bytes());
    if proto == crate::net::proto::TCP {
        l4[12] = 5 << 4;
        l4[13] = flags;
    } else {
        l4[4..6].copy_from_slice(&(8u16).to_be_bytes());
    }
    f.extend(l4);
    f.resize(f.len().max(60), 0);
    f
}
