//! Pipeline cost per packet, bursts of 32, no DPDK (TestPacket buffers):
//! established flows with 1M flows tracked and picked in random order, one hot
//! flow, new flows (SYN), L2, IPv6 and UDP/GUE.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use l4lb::balancer::flowtable::Timeouts;
use l4lb::balancer::state::{Backend, Forwarding, ForwardingState, PortInfo, Scheduler, ServiceSpec};
use l4lb::dataplane::packet::TestPacket;
use l4lb::dataplane::pipeline::{DropReason, Verdict, Worker, WorkerConfig};
use l4lb::dpdk::CpuPrefetch;

const BURST: usize = 32;
const FLOWS: u32 = 1 << 20;

fn state(forwarding: Forwarding, v6: bool, proto: u8) -> ForwardingState {
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
            ipv6: Some("2001:db8::1".parse().unwrap()),
            mtu: 1500,
        }],
        vec![ServiceSpec {
            name: "bench".into(),
            vip: if v6 { "2001:db8:100::1".parse().unwrap() } else { "198.18.100.1".parse().unwrap() },
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
    .unwrap()
}

/// A 64-byte frame (60 + FCS on the wire): TCP ACK or UDP, IPv4 or IPv6.
fn frame(flow: u32, v6: bool, proto: u8, flags: u8) -> Vec<u8> {
    let (sport, client) = ((flow & 0xffff) as u16 | 1024, flow >> 16);
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc1]);
    let l4len = if proto == 6 { 20 } else { 8 };
    if v6 {
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..24].copy_from_slice(
            &Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (client >> 16) as u16, client as u16).octets(),
        );
        ip[24..40].copy_from_slice(&"2001:db8:100::1".parse::<Ipv6Addr>().unwrap().octets());
        f.extend(ip);
    } else {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + l4len as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&Ipv4Addr::from(0xc612_0000u32 | client).octets());
        ip[16..20].copy_from_slice(&[198, 18, 100, 1]);
        let c = l4lb::net::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
    }
    let mut l4 = vec![0u8; l4len];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&80u16.to_be_bytes());
    if proto == 6 {
        l4[12] = 5 << 4;
        l4[13] = flags;
    } else {
        l4[4..6].copy_from_slice(&(8u16).to_be_bytes());
    }
    f.extend(l4);
    f.resize(60, 0);
    f
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

struct Setup {
    st: ForwardingState,
    w: Worker,
    v6: bool,
    proto: u8,
}

fn setup(forwarding: Forwarding, v6: bool, proto: u8, populate: u32) -> Setup {
    let st = state(forwarding, v6, proto);
    let mut w = Worker::new(WorkerConfig { flow_capacity: 1 << 22, ..WorkerConfig::default() });
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); BURST];
    for chunk in (0..populate).collect::<Vec<_>>().chunks(BURST) {
        let mut pkts: Vec<TestPacket> =
            chunk.iter().map(|&f| TestPacket::new(&frame(f, v6, proto, 0x02))).collect();
        let n = pkts.len();
        w.process_burst(&st, &mut pkts, 0, 0, &mut verdicts[..n], &CpuPrefetch);
    }
    assert_eq!(w.counters.forwarded, populate as u64);
    Setup { st, w, v6, proto }
}

fn run(c: &mut Criterion, name: &str, s: &mut Setup, pick: &mut dyn FnMut() -> u32, flags: u8) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.warm_up_time(std::time::Duration::from_secs(1));
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); BURST];
    let (v6, proto) = (s.v6, s.proto);
    g.bench_function(name, |b| {
        b.iter_batched_ref(
            || (0..BURST).map(|_| TestPacket::new(&frame(pick(), v6, proto, flags))).collect::<Vec<_>>(),
            |pkts| s.w.process_burst(&s.st, pkts, 0, 1, &mut verdicts, &CpuPrefetch),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { .. })), "{name}: {verdicts:?}");
}

fn benches(c: &mut Criterion) {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let ack = 0x10;
    {
        let mut s = setup(Forwarding::IpIp, false, 6, FLOWS);
        run(
            c,
            "ipip_v4_established_1M_random",
            &mut s,
            &mut || (xorshift(&mut seed) % FLOWS as u64) as u32,
            ack,
        );
        run(c, "ipip_v4_one_flow_hot", &mut s, &mut || 7, ack);
        let mut next = FLOWS;
        run(
            c,
            "ipip_v4_new_flow_syn",
            &mut s,
            &mut || {
                next = next.wrapping_add(1);
                next
            },
            0x02,
        );
    }
    {
        let mut s = setup(Forwarding::L2, false, 6, FLOWS);
        run(
            c,
            "l2_v4_established_1M_random",
            &mut s,
            &mut || (xorshift(&mut seed) % FLOWS as u64) as u32,
            ack,
        );
    }
    {
        let mut s = setup(Forwarding::IpIp, true, 6, FLOWS);
        run(
            c,
            "ipip_v6_established_1M_random",
            &mut s,
            &mut || (xorshift(&mut seed) % FLOWS as u64) as u32,
            ack,
        );
    }
    {
        let mut s = setup(Forwarding::Gue { port: 6080 }, false, 17, FLOWS);
        run(
            c,
            "gue_v4_udp_established_1M_random",
            &mut s,
            &mut || (xorshift(&mut seed) % FLOWS as u64) as u32,
            0,
        );
    }
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
