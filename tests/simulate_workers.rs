//! `l4lb simulate --workers W`: one capture through 1 and through W
//! pipelines, spread as a NIC's RSS would, packet by packet, and at random —
//! every flow reaches the same backend however its packets were spread.
//! (Fast tier: no DPDK, no root.)
//!
//! The services here are the ones whose choice needs no state shared between
//! workers: Maglev on the flow and on the source address (`maglev`,
//! `source-ip`). Persistence and the per-worker schedulers keep state per
//! worker today; docs/architecture.md says what they promise with several.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use l4lb::control::config::Config;
use l4lb::simulate::{run, Assign};
use l4lb::trafficgen::{Mix, Sizes, Spec};

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

const CONFIG: &str = r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
mac = "02:00:00:00:00:01"

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
forwarding = "ipip"
backends = [
  { address = "198.18.0.11", mac = "02:00:00:00:0b:11" },
  { address = "198.18.0.12", mac = "02:00:00:00:0b:12" },
  { address = "198.18.0.13", mac = "02:00:00:00:0b:13" },
]

[[services]]
name = "by-source"
vip = "198.18.100.2"
protocol = "tcp"
port = 80
forwarding = "ipip"
scheduler = "source-ip"
backends = [
  { address = "198.18.0.21", mac = "02:00:00:00:0b:21" },
  { address = "198.18.0.22", mac = "02:00:00:00:0b:22" },
  { address = "198.18.0.23", mac = "02:00:00:00:0b:23" },
]
"#;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("l4lb-simw-{}", std::process::id()));
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
    let d = dir();
    let cfg = Config::parse(CONFIG, "t.toml").unwrap().validate("t.toml").unwrap();
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
    let d = dir().join("spread");
    std::fs::create_dir_all(&d).unwrap();
    let cfg = Config::parse(CONFIG, "t.toml").unwrap().validate("t.toml").unwrap();
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
