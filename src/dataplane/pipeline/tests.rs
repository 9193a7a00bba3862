//! The pipeline's own property tests: the fast paths against the general
//! parser, and the whole pipeline on frames near their edges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::harness::{check_output, differential_worker, fast_paths_agree};
use super::*;
use crate::balancer::flowtable::FlowState;
use crate::balancer::state::Forwarding;
use crate::net::{ethernet, ipv4, proto};

#[test]
fn flow_states_follow_the_clients_segments() {
    use FlowState::*;
    use KeyKind::*;
    let (syn, ack, fin, rst) = (tcp::SYN, tcp::ACK, tcp::FIN, tcp::RST);
    let tcp = proto::TCP;
    let cases = [
        // (protocol, kind, flags, previous state, next state)
        (tcp, FiveTuple, syn, None, SynSeen),
        (tcp, FiveTuple, syn, Some(SynSeen), SynRetried),
        (tcp, FiveTuple, syn, Some(SynRetried), SynRetried),
        (tcp, FiveTuple, ack, Some(SynRetried), Established),
        (tcp, FiveTuple, rst, Some(SynRetried), Closing),
        (tcp, FiveTuple, ack, Some(SynSeen), Established),
        (tcp, FiveTuple, ack, None, Established),
        (tcp, FiveTuple, ack, Some(Established), Established),
        (tcp, FiveTuple, 0, Some(Established), Established),
        (tcp, FiveTuple, syn, Some(Established), Established),
        (tcp, FiveTuple, syn | ack, Some(Established), Established),
        (tcp, FiveTuple, fin | ack, Some(Established), Closing),
        (tcp, FiveTuple, rst, Some(Established), Closing),
        (tcp, FiveTuple, ack, Some(Closing), Closing),
        (tcp, Fragment, ack, Some(Established), Other),
        (tcp, IcmpError, ack, Some(Established), Other),
        (proto::UDP, FiveTuple, 0, Some(Established), Udp),
        (proto::UDP, FiveTuple, 0, None, Udp),
        (proto::ICMP, ThreeTuple, 0, None, Other),
    ];
    for (p, kind, flags, prev, want) in cases {
        assert_eq!(next_state(p, kind, flags, prev), want, "{p} {kind:?} {flags:#x} {prev:?}");
    }
}

/// A frame near the fast paths' edges: a valid TCP or UDP frame to one of
/// the VIPs (or a port's own address) with a few bytes of its headers
/// replaced, its IPv4 header checksum then made right again or not, and
/// its length cut or padded.
fn edge_frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0u8, 1, 2, 0x05, 0x06, 0x10, 0x11, 0x12, 0x20, 0x2c, 0x3a, 0x3f, 0x40, 0x44, 0x45, 0x46, 0x50,
            0x60, 0x80, 0xf0, 0xff
        ]),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        0usize..4,
        0u16..2,
        any::<u32>(),
        prop::collection::vec((0usize..76, byte), 0..4),
        any::<bool>(),
        -24i32..24,
        prop::sample::select(vec![0u16, 80, 443]),
    )
        .prop_map(|(v6, udp, dst, in_port, flow, edits, fix, len, dport)| {
            use crate::dataplane::testframes;
            let mut f =
                if udp { testframes::udp(flow, v6) } else { testframes::tcp(flow, v6, (flow >> 24) as u8) };
            let ip = 14;
            // Destination: the VIP, port 1's own address (a VIP too), port
            // 0's own address, or another address.
            match (v6, dst) {
                (false, 1) => f[ip + 19] = 2,
                (false, 2) => f[ip + 16..ip + 20].copy_from_slice(&[198, 18, 0, 1]),
                (false, 3) => f[ip + 19] = 9,
                (true, 2) => f[ip + 24..ip + 40]
                    .copy_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets()),
                (true, 3) => f[ip + 39] = 9,
                _ => {}
            }
            let l4 = if v6 { ip + 40 } else { ip + 20 };
            f[l4 + 2..l4 + 4].copy_from_slice(&dport.max(80).to_be_bytes());
            if in_port == 1 {
                f[5] = 2;
            }
            for (at, b) in edits {
                if at < f.len() {
                    f[at] = b;
                }
            }
            if !v6 && fix {
                let ihl = (f[ip] & 0x0f) as usize * 4;
                if ihl >= 20 && f.len() >= ip + ihl {
                    f[ip + 10..ip + 12].fill(0);
                    let c = crate::net::checksum::checksum(&f[ip..ip + ihl]);
                    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
                }
            }
            f.resize((f.len() as i32 + len).max(0) as usize, 0);
            (in_port, f)
        })
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40000))]

    /// Whatever the IPv4 and IPv6 fast paths take, the general parser
    /// takes too, with the same key, hash, service, lengths, flags, DF
    /// and TOS — including after their service memos were filled by the
    /// frames before (one worker sees the whole sequence).
    #[test]
    fn the_fast_paths_decide_as_the_general_parser(frames in prop::collection::vec(edge_frame(), 1..8)) {
        let (st, mut w) = differential_worker();
        for (in_port, f) in frames {
            let agree = fast_paths_agree(st, &mut w, in_port, &f);
            prop_assert!(agree.is_ok(), "{}", agree.unwrap_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    /// The whole pipeline on frames near the fast paths' edges: no panic,
    /// and whatever it forwards or answers is well formed.
    #[test]
    fn edge_frames_leave_well_formed_or_not_at_all(frames in prop::collection::vec(edge_frame(), 1..8)) {
        let (st, mut w) = differential_worker();
        for (i, (in_port, f)) in frames.into_iter().enumerate() {
            let mut p = crate::dataplane::packet::TestPacket::new(&f);
            match w.process(st, &mut p, in_port, i as u64) {
                Verdict::Forward { .. } => check_output(&f, p.data(), true),
                Verdict::Reply { .. } => check_output(&f, p.data(), false),
                _ => {}
            }
        }
    }
}

/// A state with one service per (forwarding mode, backend family) on the
/// frames' VIP (`v6`): IP-in-IP and GUE to IPv4 and to IPv6 backends, each
/// with three backends.
fn template_state(v6: bool, proto: u8, gue: bool) -> ForwardingState {
    use crate::dataplane::testframes::{backend, port, service};
    let vip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1))
    };
    let forwarding = if gue { Forwarding::Gue { port: 6080 } } else { Forwarding::IpIp };
    let backends = (0..6u32).map(|i| backend(i, i % 2 == 1)).collect();
    ForwardingState::build(1, vec![port(true, true)], vec![service(vip, proto, 80, forwarding, backends)])
        .expect("a valid state")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The encapsulation template and the general writer produce the same
    /// bytes and verdict for every backend that has a template: IPv4 and IPv6
    /// clients, IP-in-IP and GUE, IPv4 and IPv6 backends, any TOS, with and
    /// without DF, with Ethernet padding and TCP data of any length.
    #[test]
    fn the_template_writes_what_the_general_writer_writes(
        flow in any::<u32>(),
        v6 in any::<bool>(),
        udp in any::<bool>(),
        gue in any::<bool>(),
        tos in any::<u8>(),
        df in any::<bool>(),
        data in prop::collection::vec(any::<u8>(), 0..64),
        pad in 0usize..16,
    ) {
        use crate::dataplane::packet::TestPacket;
        use crate::dataplane::testframes;
        static STATES: std::sync::OnceLock<Vec<ForwardingState>> = std::sync::OnceLock::new();
        let states = STATES.get_or_init(|| {
            (0..8).map(|i| template_state(i & 4 != 0, [proto::TCP, proto::UDP][i & 1], i & 2 != 0)).collect()
        });
        let st = &states[(v6 as usize) << 2 | (gue as usize) << 1 | udp as usize];
        let mut f = if udp { testframes::udp(flow, v6) } else { testframes::tcp(flow, v6, tcp::ACK) };
        // The payload, the lengths, the TOS and DF, then the IPv4 checksum.
        f.extend_from_slice(&data);
        let ip = ethernet::HEADER_LEN;
        let ip_len = f.len() - ip;
        if v6 {
            f[ip] = 0x60 | tos >> 4;
            f[ip + 1] = (tos << 4) | (f[ip + 1] & 0x0f);
            f[ip + 4..ip + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
            if udp {
                f[ip + 44..ip + 46].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
            }
        } else {
            f[ip + 1] = tos;
            f[ip + 2..ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            f[ip + 6] = if df { 0x40 } else { 0 };
            if udp {
                f[ip + 24..ip + 26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
            }
            let mut h = ipv4::Packet::new_checked(&mut f[ip..]).expect("an IPv4 header");
            h.fill_checksum();
        }
        f.resize(f.len() + pad, 0);
        thread_local! {
            static WORKERS: std::cell::RefCell<[Worker; 2]> = std::cell::RefCell::new(std::array::from_fn(|_| {
                Worker::new(WorkerConfig { flow_capacity: 64, persist_capacity: 64, ..WorkerConfig::default() })
            }));
        }
        WORKERS.with_borrow_mut(|[a, b]| {
        let mut meta = PacketMeta::default();
        let parsed = a.parse_general(st, &mut TestPacket::new(&f), 0, &st.ports[0], &mut meta);
        prop_assert_eq!(parsed, None);
        let svc = &st.services[meta.service as usize];
        let mut compared = 0;
        for &slot in svc.backends.iter() {
            let slot = slot as usize;
            let Some(t) = st.template(slot) else { continue };
            if meta.ip_len > t.max_inner {
                continue;
            }
            // The same IPv4 ident sequence for both.
            (a.ident, b.ident) = (0, 0);
            let (mut by_template, mut general) = (TestPacket::new(&f), TestPacket::new(&f));
            let vt = a.encap_template(t, &mut by_template, &meta);
            let vg = b.rewrite(st, svc, &st.backends[slot], &mut general, 0, 0, &meta);
            prop_assert_eq!(vt, vg);
            prop_assert_eq!(by_template.data(), general.data(), "backend {}", st.backends[slot].addr);
            compared += 1;
        }
        // Templates: none for IPv6 GUE (its UDP checksum covers the packet)
        // nor for IPv6 clients of IPv4 backends (6in4).
        let (v4_backends, v6_backends) = (if v6 { 0 } else { 3 }, if gue { 0 } else { 3 });
        prop_assert_eq!(compared, v4_backends + v6_backends);
        Ok(())
        })?;
    }
}

/// A port with a kernel interface: what the pipeline leaves to the kernel
/// (`Local`) that a port without one drops.
#[test]
fn a_kernel_port_hands_the_box_link_local_multicast_and_configured_vip_ports() {
    use crate::balancer::state::ForwardingState;
    use crate::dataplane::packet::TestPacket;
    use crate::dataplane::testframes;
    use crate::net::{ethernet, icmp, ipv6};
    let state = |kernel: bool, punt_vip: bool| {
        let mut port = testframes::port(true, true);
        port.kernel = kernel;
        port.punt_unknown_vip_ports = punt_vip;
        let vip = std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
        let backends = (0..3).map(|i| testframes::backend(i, false)).collect();
        let spec = testframes::service(vip, proto::TCP, 80, Forwarding::IpIp, backends);
        ForwardingState::build(1, vec![port], vec![spec]).unwrap()
    };
    // An IPv6 UDP datagram from 2001:db8::2 to `dst`, to the port's MAC.
    let v6_to = |dst: Ipv6Addr| {
        let mut f = vec![0u8; 14 + 40 + 8];
        ethernet::write_header(&mut f, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xc1], ethernet::ETHERTYPE_IPV6);
        let repr = ipv6::Repr {
            src: "2001:db8::2".parse().unwrap(),
            dst,
            next_header: proto::UDP,
            payload_len: 8,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        repr.write(&mut f[14..]);
        f
    };
    let link_local: Ipv6Addr = "fe80::ff:fe00:1".parse().unwrap();
    let mut solicit =
        icmp::solicit_frame([2, 0, 0, 0, 0, 0xc1], "2001:db8::2".parse().unwrap(), link_local).to_vec();
    // Addressed to the port's MAC (the solicitation builder multicasts).
    solicit[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    let mut vip_other_port = testframes::tcp(1, false, crate::net::tcp::SYN);
    vip_other_port[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&8080u16.to_be_bytes());
    let frames: [(&str, Vec<u8>); 4] = [
        ("link-local", v6_to(link_local)),
        ("multicast", v6_to("ff02::5".parse().unwrap())),
        ("solicitation for the link-local address", solicit),
        ("an unknown VIP port", vip_other_port),
    ];
    for (kernel, punt_vip) in [(false, false), (true, false), (true, true)] {
        let st = state(kernel, punt_vip);
        let mut w =
            Worker::new(WorkerConfig { flow_capacity: 64, persist_capacity: 64, ..WorkerConfig::default() });
        for (what, f) in &frames {
            let v = w.process(&st, &mut TestPacket::new(f), 0, 0);
            let want_local = if *what == "an unknown VIP port" { punt_vip } else { kernel };
            assert_eq!(
                v == Verdict::Local,
                want_local,
                "{what}, kernel {kernel}, punt_vip {punt_vip}: {v:?}"
            );
        }
    }
}

#[test]
fn an_ipv6_packet_to_an_ipv4_mapped_address_is_dropped_and_touches_no_ipv4_flow() {
    // An IPv6 key with a mapped destination would be stored as an IPv4
    // flow's, its source cut to its last four bytes: this packet would then
    // be the IPv4 client's flow 7 (whose address ends with the same bytes),
    // and its RST would close that flow.
    use crate::dataplane::packet::TestPacket;
    use crate::dataplane::testframes;
    let st = testframes::state(Forwarding::IpIp, false, proto::TCP);
    let mut w =
        Worker::new(WorkerConfig { flow_capacity: 64, persist_capacity: 64, ..WorkerConfig::default() });
    let v4 = testframes::tcp(7, false, tcp::ACK);
    assert!(matches!(w.process(&st, &mut TestPacket::new(&v4), 0, 0), Verdict::Forward { .. }));
    // The same client address bytes, ports and VIP, as IPv6 with the VIP
    // mapped; once a SYN (the fast path's first sight of the VIP), then an RST.
    let v6_as = |flags: u8| {
        let mut f = testframes::tcp(7, true, flags);
        let (ip, l4) = (&v4[14..34], &v4[34..]);
        let (src, dst) = (&ip[12..16], &ip[16..20]);
        f[14 + 8..14 + 20].copy_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0]);
        f[14 + 20..14 + 24].copy_from_slice(src);
        f[14 + 24..14 + 36].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        f[14 + 36..14 + 40].copy_from_slice(dst);
        f[54..58].copy_from_slice(&l4[..4]);
        f
    };
    for flags in [tcp::SYN, tcp::RST | tcp::ACK] {
        let f = v6_as(flags);
        assert_eq!(w.process(&st, &mut TestPacket::new(&f), 0, 0), Verdict::Drop(DropReason::NotForUs));
        let key = crate::balancer::flow::key_v4(&ipv4::Packet::new_checked(&v4[14..]).unwrap()).unwrap().0;
        let at = w.flows.place_of(&key, key.hash());
        let (_, flow) = w.flows.find(&key, &at, 0).expect("the IPv4 flow is still there");
        assert_eq!(flow.state(), FlowState::Established, "after flags {flags:#x}");
    }
}
