//! Benchmark traffic: pcaps of client-to-VIP TCP packets with a chosen number
//! of flows, mix (established, SYN, half and half), address family and frame
//! sizes (64 bytes or IMIX), for `net_pcap,infinite_rx=1` replay
//! (`scripts/bench/testpmd.sh`). Deterministic: the same arguments give the same file.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::balancer::hash::fmix64;
use crate::net::checksum;

/// Which packets the flows send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// ACK/data packets of established connections.
    Established,
    /// Every packet a SYN (a new flow when the flow is not tracked).
    Syn,
    /// Alternately an established packet and a SYN of another flow.
    Half,
}

/// Frame sizes, on the wire with the 4-byte FCS (the capture holds 4 fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sizes {
    /// 64-byte frames (IPv6 needs 78: its headers do not fit in 64).
    #[value(name = "64")]
    Min,
    /// 78-byte frames for both families: IPv6's smallest TCP frame, and the
    /// same bytes per packet for IPv4 (20 bytes of TCP data), so the two
    /// families can be compared on equal input.
    #[value(name = "78")]
    V6Min,
    /// Simple IMIX, 7:4:1 of 64, 594 and 1438 bytes (the large size keeps an
    /// IP-in-IP or GUE packet within a 1500-byte MTU).
    Imix,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub flows: u32,
    pub packets: u32,
    pub mix: Mix,
    pub v6: bool,
    pub sizes: Sizes,
    pub vip: IpAddr,
    pub port: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub seed: u64,
    /// Segments carry no data: the IP packet is its headers alone and the
    /// frame is padded to its size with zeros after it, as a client's pure
    /// ACK is on the wire (a 54-byte IPv4 frame padded to 60).
    pub no_payload: bool,
    /// (k, n): only flows k, k+n, k+2n... (one file per RX queue, as RSS
    /// would spread them); (0, 1) for all.
    pub part: (u32, u32),
}

const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1438];

impl Spec {
    /// The `i`-th frame of the capture.
    pub fn frame(&self, i: u32) -> Vec<u8> {
        let (k, n) = (self.part.0, self.part.1.max(1));
        let r = fmix64(self.seed ^ (((i as u64) << 8) | k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Flow of this packet: every one of this part's flows once in each
        // run of `mine` packets (so a capture with as many packets as flows
        // holds every flow), in a scrambled order: packet i takes flow
        // i * P mod mine, P a prime above any flow count.
        let mine = (self.flows / n).max(1) as u64;
        const P: u64 = 4_294_967_311; // the least prime above 2^32
        let pick = ((i as u64 % mine) * (P % mine) % mine) as u32 * n + k;
        let (flow, syn) = match self.mix {
            Mix::Established => (pick, false),
            Mix::Syn => (pick, true),
            Mix::Half => {
                let f = pick;
                // Even flows are established, odd ones SYN.
                if i % 2 == 0 {
                    (f & !1, false)
                } else {
                    (f | 1, true)
                }
            }
        };
        let wire = match self.sizes {
            Sizes::Min => 64,
            Sizes::V6Min => 78,
            Sizes::Imix => IMIX[(fmix64(r) % IMIX.len() as u64) as usize],
        };
        self.build(flow.min(self.flows.saturating_sub(1)), syn, wire - 4)
    }

    /// The client address and port of flow `f`: 65000 ports per address.
    fn client(&self, f: u32) -> (IpAddr, u16) {
        let host = f / 64_000;
        let port = 1024 + (f % 64_000) as u16;
        let ip = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000u128 | (host as u128 + 2)))
        } else {
            // 198.18.128.0/17 and up: clients, apart from l4lb's test segments.
            IpAddr::V4(Ipv4Addr::from(0xc612_8000u32 + host + 2))
        };
        (ip, port)
    }

    fn build(&self, flow: u32, syn: bool, len: usize) -> Vec<u8> {
        let (src, sport) = self.client(flow);
        let ip_hdr = if self.v6 { 40 } else { 20 };
        let len = len.max(14 + ip_hdr + 20);
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        let l4 = 14 + ip_hdr;
        // The IP packet ends at the frame's end, or after the TCP header
        // (the rest is Ethernet padding).
        let end = if self.no_payload { l4 + 20 } else { len };
        let ip_len = end - 14;
        let tcp_len = (end - l4) as u16;
        let pseudo = match (src, self.vip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                let h = &mut f[14..34];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
                h[6] = 0x40; // DF
                h[8] = 64;
                h[9] = crate::net::proto::TCP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let c = checksum::checksum(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                checksum::pseudo_v4(s, d, crate::net::proto::TCP, tcp_len)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
                let h = &mut f[14..54];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&tcp_len.to_be_bytes());
                h[6] = crate::net::proto::TCP;
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                checksum::pseudo_v6(&s, &d, crate::net::proto::TCP, tcp_len as u32)
            }
            _ => unreachable!("the VIP's family is the spec's"),
        };
        let t = &mut f[l4..end];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.port.to_be_bytes());
        t[4..8].copy_from_slice(&(flow.wrapping_mul(2_654_435_761)).to_be_bytes());
        if !syn {
            t[8..12].copy_from_slice(&1u32.to_be_bytes());
        }
        t[12] = 5 << 4;
        t[13] = if syn { 0x02 } else { 0x10 }; // SYN or ACK
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        for (k, b) in t[20..].iter_mut().enumerate() {
            *b = (k as u8).wrapping_add(flow as u8);
        }
        let c = !checksum::fold(checksum::add(pseudo, t));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// Writes `spec.packets` frames to `path`.
pub fn write(spec: &Spec, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut w = crate::pcap::Writer::new(file)?;
    for i in 0..spec.packets {
        w.write(i / 1_000_000, i % 1_000_000, &spec.frame(i))?;
    }
    w.into_inner()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::flow::FlowKey;

    fn spec(mix: Mix, v6: bool, sizes: Sizes) -> Spec {
        Spec {
            flows: 1000,
            packets: 4000,
            mix,
            v6,
            sizes,
            vip: if v6 { "2001:db8:100::1".parse().unwrap() } else { "198.18.100.1".parse().unwrap() },
            port: 80,
            dst_mac: [2, 0x70, 0x63, 0x61, 0x70, 0],
            src_mac: [2, 0, 0, 0, 0x0c, 2],
            seed: 1,
            no_payload: false,
            part: (0, 1),
        }
    }

    fn parse(f: &[u8]) -> (FlowKey, u8, usize) {
        use crate::net::{ethernet, ipv4, ipv6, tcp};
        let e = ethernet::Frame::new_checked(f).unwrap();
        if e.ethertype() == ethernet::ETHERTYPE_IPV4 {
            let ip = ipv4::Packet::new_checked(e.payload()).unwrap();
            assert!(ip.header_checksum_ok());
            let t = tcp::Segment::new_checked(ip.payload()).unwrap();
            let sum = checksum::pseudo_v4(ip.src(), ip.dst(), 6, ip.payload().len() as u16);
            assert_eq!(checksum::fold(checksum::add(sum, ip.payload())), 0xffff, "TCP checksum");
            let k = FlowKey::new(ip.src().into(), ip.dst().into(), 6, t.src_port(), t.dst_port());
            (k, t.flags(), f.len())
        } else {
            let ip = ipv6::Packet::new_checked(e.payload()).unwrap();
            let t = tcp::Segment::new_checked(ip.payload()).unwrap();
            let sum = checksum::pseudo_v6(&ip.src(), &ip.dst(), 6, ip.payload().len() as u32);
            assert_eq!(checksum::fold(checksum::add(sum, ip.payload())), 0xffff, "TCP checksum");
            let k = FlowKey::new(ip.src().into(), ip.dst().into(), 6, t.src_port(), t.dst_port());
            (k, t.flags(), f.len())
        }
    }

    #[test]
    fn frames_are_valid_tcp_to_the_vip_with_the_asked_flow_count_and_sizes() {
        for v6 in [false, true] {
            for mix in [Mix::Established, Mix::Syn, Mix::Half] {
                let s = spec(mix, v6, Sizes::Min);
                let mut flows = std::collections::HashSet::new();
                let mut syns = 0;
                for i in 0..s.packets {
                    let (k, flags, len) = parse(&s.frame(i));
                    assert_eq!(k.dst_ip(), s.vip);
                    assert_eq!(len, if v6 { 74 } else { 60 });
                    syns += (flags == 0x02) as u32;
                    flows.insert(k);
                }
                // Every flow, each as often (Half: established flows from
                // even packets, SYN flows from odd ones, half of each).
                assert_eq!(flows.len(), 1000, "{mix:?} v6={v6}");
                let want = match mix {
                    Mix::Established => 0,
                    Mix::Syn => s.packets,
                    Mix::Half => s.packets / 2,
                };
                assert_eq!(syns, want, "{mix:?}");
            }
        }
        let s = spec(Mix::Established, false, Sizes::Imix);
        let mut by_len = std::collections::BTreeMap::new();
        for i in 0..12_000 {
            *by_len.entry(s.frame(i).len()).or_insert(0) += 1;
        }
        assert_eq!(by_len.keys().copied().collect::<Vec<_>>(), vec![60, 590, 1434]);
        let small = by_len[&60] as f64 / 12_000.0;
        assert!((small - 7.0 / 12.0).abs() < 0.02, "{by_len:?}");
        assert_eq!(s.frame(7), s.frame(7), "deterministic");
        // Parts split the flows without overlap.
        let flows_of = |k| -> std::collections::HashSet<FlowKey> {
            let p = Spec { part: (k, 2), ..spec(Mix::Established, false, Sizes::Min) };
            (0..4000).map(|i| parse(&p.frame(i)).0).collect()
        };
        let (a, b) = (flows_of(0), flows_of(1));
        assert!(a.is_disjoint(&b));
        assert_eq!((a.len(), b.len()), (500, 500));
    }

    #[test]
    fn equal_sizes_for_both_families_and_pure_acks_padded_to_the_size() {
        for v6 in [false, true] {
            let s = spec(Mix::Established, v6, Sizes::V6Min);
            let (_, flags, len) = parse(&s.frame(3));
            assert_eq!((flags, len), (0x10, 74), "v6={v6}");
        }
        // IPv4 at 78 bytes: the segment carries the 20 bytes IPv6 spends on addresses.
        let f = spec(Mix::Established, false, Sizes::V6Min).frame(3);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 60);
        for (v6, size, frame_len) in
            [(false, Sizes::Min, 60), (true, Sizes::V6Min, 74), (false, Sizes::V6Min, 74)]
        {
            for mix in [Mix::Established, Mix::Syn] {
                let s = Spec { no_payload: true, ..spec(mix, v6, size) };
                let f = s.frame(5);
                // parse checks the IP and TCP checksums over the IP packet alone.
                let (_, _, len) = parse(&f);
                assert_eq!(len, frame_len);
                let (ip_len, l4) = if v6 {
                    (40 + u16::from_be_bytes([f[18], f[19]]) as usize, 54)
                } else {
                    (u16::from_be_bytes([f[16], f[17]]) as usize, 34)
                };
                assert_eq!(14 + ip_len, l4 + 20, "headers only, v6={v6} {mix:?}");
                assert!(f[l4 + 20..].iter().all(|&b| b == 0), "zero padding");
            }
        }
    }

    #[test]
    fn a_capture_with_as_many_packets_as_flows_holds_every_flow_once() {
        for (flows, part) in [(1000, (0, 1)), (100_003, (0, 1)), (1 << 16, (1, 4))] {
            let s =
                Spec { flows, packets: flows / part.1, part, ..spec(Mix::Established, false, Sizes::Min) };
            let seen: std::collections::HashSet<FlowKey> =
                (0..s.packets).map(|i| parse(&s.frame(i)).0).collect();
            assert_eq!(seen.len() as u32, s.packets, "{flows} flows, part {part:?}");
        }
        // Consecutive packets belong to unrelated flows, not neighbours.
        let s = spec(Mix::Established, false, Sizes::Min);
        let ports: Vec<u16> = (0..4).map(|i| parse(&s.frame(i)).0.src_port).collect();
        assert!(ports.windows(2).all(|w| w[0].abs_diff(w[1]) > 1), "{ports:?}");
    }
}
