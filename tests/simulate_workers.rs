//! `l4lb simulate --workers W`: one capture through 1 and through W
//! pipelines, spread as a NIC's RSS would, packet by packet, and at random —
//! every flow reaches the same backend however its packets were spread.
//! (Fast tier: no DPDK, no root.)
//!
//! Maglev on the flow and on the source address (`maglev`, `source-ip`)
//! need no state shared between workers. Persistence and ICMP errors do (a
//! client's connections and an error quoting a flow land on any worker):
//! the second half checks that they hold with any spread too. What the
//! per-worker schedulers promise is in docs/architecture.md.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use l4lb::control::config::Config;
use l4lb::simulate::{run, Assign};
use l4lb::trafficgen::{Mix, Sizes, Spec};

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

const HEADER: &str = r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
mac = "02:00:00:00:00:01"
"#;

/// A TCP port 80 IP-in-IP service on 198.18.100.N with backends
/// 198.18.0.N1 to N3, and `extra` keys.
fn service(name: &str, n: u8, extra: &str) -> String {
    let backends: Vec<String> = (1..=3)
        .map(|b| format!("  {{ address = \"198.18.0.{n}{b}\", mac = \"02:00:00:00:0b:{n}{b}\" }},"))
        .collect();
    format!(
        "\n[[services]]\nname = \"{name}\"\nvip = \"198.18.100.{n}\"\nprotocol = \"tcp\"\nport = 80\n\
         forwarding = \"ipip\"\n{extra}\nbackends = [\n{}\n]\n",
        backends.join("\n")
    )
}

/// Maglev on the flow and on the source address.
fn stateless() -> String {
    format!("{HEADER}{}{}", service("web", 1, ""), service("by-source", 2, "scheduler = \"source-ip\""))
}

/// Persistence over Maglev and over round robin, and least connections.
fn stateful() -> String {
    format!(
        "{HEADER}{}{}{}",
        service("sticky", 3, "persistence_s = 300"),
        service("sticky-rr", 4, "scheduler = \"round-robin\"\npersistence_s = 300"),
        service("least", 5, "scheduler = \"least-connections\"")
    )
}

/// A directory of this test's own (the tests of this file run at once).
fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("l4lb-simw-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 500 flows to each VIP, every flow twice (SYN, then established), the two
/// VIPs' packets interleaved.
fn capture(path: &Path) {
    let spec = |vip: [u8; 4], mix, seed| Spec {
        flows: 500,
        packets: 500,
        mix,
        v6: false,
        sizes: Sizes::Min,
        vip: IpAddr::V4(Ipv4Addr::from(vip)),
        port: 80,
        dst_mac: PORT_MAC,
        src_mac: [2, 0, 0, 0, 0x0c, 2],
        seed,
        no_payload: false,
        part: (0, 1),
    };
    let mut w = l4lb::pcap::Writer::new(std::fs::File::create(path).unwrap()).unwrap();
    for (mix, seed) in [(Mix::Syn, 1), (Mix::Established, 1)] {
        let (a, b) = (spec([198, 18, 100, 1], mix, seed), spec([198, 18, 100, 2], mix, seed + 1));
        for i in 0..500 {
            w.write(1, 0, &a.frame(i)).unwrap();
            w.write(1, 0, &b.frame(i)).unwrap();
        }
    }
    w.into_inner().unwrap();
}

/// (client address, client port, VIP) -> the backend each forwarded packet
/// was encapsulated to; panics if one flow went to two backends.
fn backends(out: &Path) -> BTreeMap<([u8; 4], u16, [u8; 4]), [u8; 4]> {
    let mut m = BTreeMap::new();
    let r = l4lb::pcap::Reader::new(std::fs::File::open(out).unwrap()).unwrap();
    for rec in r {
        let f = rec.unwrap().data;
        let (outer, inner) = (&f[14..34], &f[34..]);
        let backend: [u8; 4] = outer[16..20].try_into().unwrap();
        let flow = (
            inner[12..16].try_into().unwrap(),
            u16::from_be_bytes([inner[20], inner[21]]),
            inner[16..20].try_into().unwrap(),
        );
        if let Some(was) = m.insert(flow, backend) {
            assert_eq!(was, backend, "flow {flow:?} reached two backends");
        }
    }
    m
}

#[test]
fn every_flow_reaches_the_same_backend_however_its_packets_are_spread() {
    let d = dir("same");
    let cfg = Config::parse(&stateless(), "t.toml").unwrap().validate("t.toml").unwrap();
    let input = d.join("in.pcap");
    capture(&input);
    let one = d.join("one.pcap");
    let c = run(&cfg, &input, &one, 0, 1, Assign::Rss, None).unwrap();
    assert_eq!(c.dropped(), 0);
    let reference = backends(&one);
    assert_eq!(reference.len(), 1000, "every flow forwarded");
    for (workers, assign) in [
        (2, Assign::Rss),
        (3, Assign::Rss),
        (2, Assign::RoundRobin),
        (4, Assign::Random(7)),
        (2, Assign::Random(99)),
    ] {
        let out = d.join(format!("w{workers}-{assign:?}.pcap"));
        let mut trace = Vec::new();
        let c = run(&cfg, &input, &out, 0, workers, assign, Some(&mut trace)).unwrap();
        assert_eq!(c.dropped(), 0, "{workers} {assign:?}");
        assert_eq!(backends(&out), reference, "{workers} workers, {assign:?}");
        // The spread really spread: every worker decided packets.
        let trace = String::from_utf8(trace).unwrap();
        for w in 0..workers {
            assert!(trace.contains(&format!(" worker {w} forward:0")), "worker {w} idle ({assign:?})");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rss_keeps_a_flow_on_one_worker_and_a_random_spread_does_not() {
    let d = dir("spread");
    let cfg = Config::parse(&stateless(), "t.toml").unwrap().validate("t.toml").unwrap();
    let input = d.join("in.pcap");
    capture(&input);
    let workers_of = |assign| {
        let mut trace = Vec::new();
        run(&cfg, &input, &d.join("out.pcap"), 0, 2, assign, Some(&mut trace)).unwrap();
        // Packet i and i + 1000 are the same flow (SYN, then established).
        let w: Vec<String> = String::from_utf8(trace)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().nth(2).unwrap().to_owned())
            .collect();
        (0..1000).filter(|&i| w[i] != w[i + 1000]).count()
    };
    assert_eq!(workers_of(Assign::Rss), 0, "RSS: a flow's packets on one worker");
    assert!(workers_of(Assign::Random(3)) > 300, "random: flows split across workers");
    let _ = std::fs::remove_dir_all(&d);
}

const ROUTER: [u8; 4] = [198, 18, 0, 254];

/// An Ethernet/IPv4 frame to the port's MAC carrying `payload`.
fn ipv4_frame(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[..6].copy_from_slice(&PORT_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0x0c, 3]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let repr = l4lb::net::ipv4::Repr {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        protocol,
        payload_len: payload.len() as u16,
        ttl: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_fragment: true,
    };
    repr.write(&mut f[14..]);
    f.extend_from_slice(payload);
    f
}

/// A TCP segment (header only) from `client:port` to `vip:80`.
fn tcp_frame(client: [u8; 4], port: u16, vip: [u8; 4], flags: u8) -> Vec<u8> {
    let mut t = [0u8; 20];
    t[..2].copy_from_slice(&port.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    ipv4_frame(client, vip, 6, &t)
}

/// A router's frag-needed about the backend's packet from `vip:80` to
/// `client:port` (which quotes that packet), sent to the VIP.
fn frag_needed(client: [u8; 4], port: u16, vip: [u8; 4]) -> Vec<u8> {
    let reply = tcp_frame(vip, 80, client, 0x12);
    let mut quoted = reply[14..14 + 28].to_vec();
    // The reply's ports: from 80 to the client's.
    quoted[20..22].copy_from_slice(&80u16.to_be_bytes());
    quoted[22..24].copy_from_slice(&port.to_be_bytes());
    let mut msg = vec![0u8; 8];
    msg.extend_from_slice(&quoted);
    l4lb::net::icmp::write_frag_needed(&mut msg, 1400);
    ipv4_frame(ROUTER, vip, 1, &msg)
}

fn client(i: u32) -> [u8; 4] {
    [198, 19, (i / 250) as u8, (i % 250) as u8 + 1]
}

/// 60 clients x 6 connections to each sticky service (SYN, then an ACK for
/// each, after all SYNs), 300 connections to the least-connections service,
/// then a frag-needed for each of those and for 100 of the sticky ones.
fn stateful_capture(path: &Path) {
    let mut w = l4lb::pcap::Writer::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut conns = Vec::new();
    for c in 0..60 {
        for k in 0..6u16 {
            conns.push((client(c), 20_000 + k * 7 + c as u16, [198, 18, 100, 3]));
            conns.push((client(c), 30_000 + k * 5 + c as u16, [198, 18, 100, 4]));
        }
    }
    for i in 0..300u32 {
        conns.push((client(1000 + i % 40), 40_000 + i as u16, [198, 18, 100, 5]));
    }
    for flags in [0x02, 0x10] {
        for &(c, p, v) in &conns {
            w.write(1, 0, &tcp_frame(c, p, v, flags)).unwrap();
        }
    }
    for &(c, p, v) in conns.iter().filter(|(_, _, v)| v[3] == 5).chain(conns.iter().step_by(7).take(100)) {
        w.write(2, 0, &frag_needed(c, p, v)).unwrap();
    }
    w.into_inner().unwrap();
}

/// Forwarded TCP packets: (client, port, VIP) -> the backends they reached;
/// forwarded ICMP errors: the quoted flow, reversed -> the backends.
type Flows = BTreeMap<([u8; 4], u16, [u8; 4]), std::collections::BTreeSet<[u8; 4]>>;

fn flows_and_errors(out: &Path) -> (Flows, Flows) {
    let (mut flows, mut errors) = (Flows::new(), Flows::new());
    for rec in l4lb::pcap::Reader::new(std::fs::File::open(out).unwrap()).unwrap() {
        let f = rec.unwrap().data;
        let (outer, inner) = (&f[14..34], &f[34..]);
        let backend: [u8; 4] = outer[16..20].try_into().unwrap();
        let addr = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap() };
        let (m, key) = if inner[9] == 1 {
            let q = &inner[28..];
            (&mut errors, (addr(&q[16..20]), u16::from_be_bytes([q[22], q[23]]), addr(&q[12..16])))
        } else {
            (
                &mut flows,
                (addr(&inner[12..16]), u16::from_be_bytes([inner[20], inner[21]]), addr(&inner[16..20])),
            )
        };
        m.entry(key).or_default().insert(backend);
    }
    (flows, errors)
}

const STICKY: [u8; 4] = [198, 18, 100, 3];
const STICKY_RR: [u8; 4] = [198, 18, 100, 4];
const LEAST: [u8; 4] = [198, 18, 100, 5];

#[test]
fn persistence_and_icmp_errors_hold_however_packets_are_spread() {
    let d = dir("stateful");
    let cfg = Config::parse(&stateful(), "t.toml").unwrap().validate("t.toml").unwrap();
    let input = d.join("in.pcap");
    stateful_capture(&input);
    let one = d.join("one.pcap");
    let c = run(&cfg, &input, &one, 0, 1, Assign::Rss, None).unwrap();
    assert_eq!(c.dropped(), 0);
    let (ref_flows, ref_errors) = flows_and_errors(&one);
    assert_eq!(ref_flows.len(), 2 * 360 + 300);
    assert_eq!(ref_errors.len(), 400);
    for (workers, assign) in [
        (2, Assign::Rss),
        (3, Assign::Rss),
        (4, Assign::Rss),
        (2, Assign::RoundRobin),
        (3, Assign::Random(5)),
    ] {
        // Least-connections keeps a flow's backend in the flow table of the
        // worker that chose it: it needs the flow's packets on one worker,
        // as RSS (and the TUN driver's flow hash) keeps them. Persistence
        // must hold even when packets are sprayed.
        let sprayed = assign != Assign::Rss;
        let out = d.join(format!("w{workers}-{assign:?}.pcap"));
        let mut trace = Vec::new();
        let c = run(&cfg, &input, &out, 0, workers, assign, Some(&mut trace)).unwrap();
        let what = format!("{workers} workers, {assign:?}");
        assert_eq!(c.dropped(), 0, "{what}");
        let (flows, errors) = flows_and_errors(&out);
        assert_eq!(flows.len(), ref_flows.len(), "{what}");
        assert_eq!(errors.len(), ref_errors.len(), "{what}");
        for (key, bs) in &flows {
            if !(sprayed && key.2 == LEAST) {
                assert_eq!(bs.len(), 1, "{what}: flow {key:?} reached {bs:?}");
            }
        }
        // Every error reached its flow's backend, whichever worker got it.
        for (key, b) in &errors {
            if !(sprayed && key.2 == LEAST) {
                assert_eq!(
                    flows.get(key),
                    Some(b),
                    "{what}: the error about {key:?} missed its flow's backend"
                );
            }
        }
        // Every client of a persistent service stayed on one backend.
        for vip in [STICKY, STICKY_RR] {
            let mut per_client: BTreeMap<[u8; 4], std::collections::BTreeSet<[u8; 4]>> = BTreeMap::new();
            for ((c, _, v), bs) in &flows {
                if *v == vip {
                    per_client.entry(*c).or_default().extend(bs);
                }
            }
            assert_eq!(per_client.len(), 60, "{what}");
            for (c, bs) in &per_client {
                assert_eq!(bs.len(), 1, "{what}: client {c:?} of {vip:?} reached {bs:?}");
            }
        }
        // Maglev with persistence decides as one worker does (the owner
        // sees each client's first connection first).
        for (key, b) in &ref_flows {
            if key.2 == STICKY {
                assert_eq!(flows.get(key), Some(b), "{what}: {key:?}");
            }
        }
        // Packets really were handed over.
        let trace = String::from_utf8(trace).unwrap();
        assert!(c[l4lb::dataplane::pipeline::Counter::HandedOff] > 0, "{what}");
        assert!(trace.lines().any(|l| l.contains(" -> worker ")), "{what}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
