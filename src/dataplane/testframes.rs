//! Frames and a forwarding state for benchmarks and profiling: 64-byte TCP
//! segments (or UDP datagrams) to the VIPs 198.18.100.1:80 /
//! [2001:db8:100::1]:80 from many clients, and one service over ten backends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::balancer::flowtable::Timeouts;
use crate::balancer::state::{
    Backend, Forwarding, ForwardingState, PortIdentity, Scheduler, ServiceSpec, ServiceStats,
};

/// One Maglev service on the VIP of the frames below, port 80, protocol
/// `proto`, ten backends (IPv6 ones when `v6`) with known MACs.
pub fn state(forwarding: Forwarding, v6: bool, proto: u8) -> ForwardingState {
    // Ids from 0 and a 65537-entry table, as the benchmarks' figures were taken.
    let backends = (0..10u32).map(|i| Backend { id: i, ..backend(i, v6) }).collect();
    let vip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1))
    };
    let spec = ServiceSpec {
        name: "bench".into(),
        maglev_size: 65537,
        ..service(vip, proto, 80, forwarding, backends)
    };
    ForwardingState::build(1, vec![port(true, true)], vec![spec]).expect("a valid benchmark state")
}

/// Backend `i` of the test states: id `i + 1`, 198.18.0.(10+i) or
/// 2001:db8::(10+i), weight 1, MAC 02:00:00:00:01:0i, on port 0.
pub fn backend(i: u32, v6: bool) -> Backend {
    Backend {
        id: i + 1,
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
    }
}

/// The port of the test states: 02:00:00:00:00:01, 198.18.0.1 (if `v4`),
/// 2001:db8::1 (if `v6`), MTU 1500.
pub fn port(v4: bool, v6: bool) -> PortIdentity {
    PortIdentity {
        mac: [2, 0, 0, 0, 0, 1],
        ipv4: v4.then_some(Ipv4Addr::new(198, 18, 0, 1)),
        ipv6: v6.then_some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        mtu: 1500,
        ..Default::default()
    }
}

/// A Maglev service (table size 251, default timeouts, nothing else set).
pub fn service(
    vip: IpAddr,
    proto: u8,
    port: u16,
    forwarding: Forwarding,
    backends: Vec<Backend>,
) -> ServiceSpec {
    ServiceSpec {
        name: format!("{vip}:{proto}:{port}"),
        vip,
        proto,
        port,
        forwarding,
        scheduler: Scheduler::Maglev,
        persistence_ms: 0,
        timeouts: Timeouts::default(),
        answer_arp: false,
        maglev_size: 251,
        backends,
        access: None,
        quota: None,
        stats: ServiceStats::new(1),
    }
}

/// Flow `flow` (client address and port derived from it), TCP `flags`.
pub fn tcp(flow: u32, v6: bool, flags: u8) -> Vec<u8> {
    l4(flow, v6, crate::net::proto::TCP, flags)
}

/// Makes a frame from [`tcp`]/[`udp`] the frame of another flow, `generation`
/// apart: the client address's low 16 bits become `generation` (the IPv4
/// header checksum follows, RFC 1624; the TCP/UDP checksum, which covers the
/// address and which l4lb never verifies, does not). Frames of distinct flows `0..64000`
/// stay distinct from each other and from every other generation, so a
/// benchmark that gives each pass over its frames a new generation sends only
/// new flows.
pub fn renew(frame: &mut [u8], v6: bool, generation: u16) {
    let at = if v6 { 14 + 8 + 14 } else { 14 + 12 + 2 };
    let Some(word) = frame.get_mut(at..at + 2) else { return };
    let old = u16::from_be_bytes([word[0], word[1]]);
    word.copy_from_slice(&generation.to_be_bytes());
    if !v6 {
        if let Some(c) = frame.get_mut(24..26) {
            let check = crate::net::checksum::update16(u16::from_be_bytes([c[0], c[1]]), old, generation);
            c.copy_from_slice(&check.to_be_bytes());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::flow::FlowKey;
    use crate::net::checksum;

    fn key(f: &[u8], v6: bool) -> FlowKey {
        let w = |at: usize, n: usize| f[at..at + n].to_vec();
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            let a = |at| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(w(at, 16)).unwrap()));
            (a(22), a(38))
        } else {
            let a = |at| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(w(at, 4)).unwrap()));
            (a(26), a(30))
        };
        let l4 = if v6 { 54 } else { 34 };
        let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        FlowKey::new(src, dst, 6, port(l4), port(l4 + 2))
    }

    #[test]
    fn renewed_frames_are_new_flows_with_valid_checksums() {
        for v6 in [false, true] {
            let mut seen = std::collections::HashSet::new();
            for generation in [0u16, 1, 2, 0xffff] {
                for flow in [0u32, 1, 63_999] {
                    let mut f = tcp(flow, v6, 0x02);
                    renew(&mut f, v6, generation);
                    assert!(seen.insert(key(&f, v6)), "flow {flow}, generation {generation} seen before");
                    if !v6 {
                        assert_eq!(checksum::checksum(&f[14..34]), 0, "IPv4 header checksum");
                    }
                }
            }
        }
    }
}
