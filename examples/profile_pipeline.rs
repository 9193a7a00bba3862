//! Runs bursts through the pipeline for profiling (callgrind, perf):
//! `cargo build --release --example profile_pipeline` then
//! `valgrind --tool=callgrind target/release/examples/profile_pipeline [hot|random] [v4|v6] [bursts]`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use l4lb::balancer::flowtable::Timeouts;
use l4lb::balancer::state::{Backend, Forwarding, ForwardingState, PortInfo, Scheduler, ServiceSpec};
use l4lb::dataplane::packet::TestPacket;
use l4lb::dataplane::pipeline::{DropReason, Verdict, Worker, WorkerConfig};
use l4lb::dpdk::CpuPrefetch;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let random = args.get(1).map(|s| s == "random").unwrap_or(false);
    let v6 = args.get(2).map(|s| s == "v6").unwrap_or(false);
    let bursts: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
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
    let st = ForwardingState::build(
        1,
        vec![PortInfo {
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: Some("2001:db8::1".parse().unwrap()),
            mtu: 1500,
        }],
        vec![ServiceSpec {
            name: "p".into(),
            vip: if v6 { "2001:db8:100::1".parse().unwrap() } else { "198.18.100.1".parse().unwrap() },
            proto: 6,
            port: 80,
            forwarding: Forwarding::IpIp,
            scheduler: Scheduler::Maglev,
            persistence_ms: 0,
            timeouts: Timeouts::default(),
            answer_arp: false,
            maglev_size: 65537,
            backends,
        }],
    )
    .unwrap();
    let mut w = Worker::new(WorkerConfig { flow_capacity: 1 << 21, ..WorkerConfig::default() });
    let frames: Vec<Vec<u8>> = (0..4096u32).map(|i| l4lb::dataplane::testframes::tcp(i, v6, 0x10)).collect();
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); 32];
    let mut pkts: Vec<TestPacket> = (0..32).map(|i| TestPacket::new(&frames[i])).collect();
    let mut seed = 88172645463325252u64;
    let mut forwarded = 0u64;
    let start = std::time::Instant::now();
    for b in 0..bursts {
        for (i, p) in pkts.iter_mut().enumerate() {
            let _ = i;
            let f = if random {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 4096) as usize
            } else {
                0
            };
            p.reset(&frames[f]);
        }
        w.process_burst(&st, &mut pkts, 0, b as u64, &mut verdicts, &CpuPrefetch);
        forwarded += verdicts.iter().filter(|v| matches!(v, Verdict::Forward { .. })).count() as u64;
    }
    let ns = start.elapsed().as_nanos() as f64 / (bursts as f64 * 32.0);
    println!("{forwarded} forwarded, {ns:.1} ns/packet (including the frame copy)");
}
