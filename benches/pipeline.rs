//! Pipeline cost per packet, bursts of 32, no DPDK (TestPacket buffers):
//! established flows with 1M flows tracked and picked in random order, one hot
//! flow, new flows (SYN), L2, IPv6 and UDP/GUE.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use l4lb::balancer::state::{Forwarding, ForwardingState};
use l4lb::dataplane::packet::{Packet, TestPacket};
use l4lb::dataplane::pipeline::{Counter, DropReason, Verdict, Worker, WorkerConfig};
use l4lb::dataplane::testframes;
use l4lb::dpdk::CpuPrefetch;

const BURST: usize = 32;
const FLOWS: u32 = 1 << 20;

fn frame(flow: u32, v6: bool, proto: u8, flags: u8) -> Vec<u8> {
    if proto == 6 {
        testframes::tcp(flow, v6, flags)
    } else {
        testframes::udp(flow, v6)
    }
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
    let st = testframes::state(forwarding, v6, proto);
    // The flow table on transparent huge pages, as `l4lb run` asks for them
    // (a 4M-entry table is 256 MiB: on 4 KiB pages nearly every lookup would
    // also miss the TLB).
    let mut w = Worker::on_hugepages(WorkerConfig { flow_capacity: 1 << 22, ..WorkerConfig::default() });
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); BURST];
    for chunk in (0..populate).collect::<Vec<_>>().chunks(BURST) {
        let mut pkts: Vec<TestPacket> =
            chunk.iter().map(|&f| TestPacket::new(&frame(f, v6, proto, 0x02))).collect();
        let n = pkts.len();
        w.process_burst(&st, &mut pkts, 0, 0, &mut verdicts[..n], &CpuPrefetch);
    }
    assert_eq!(w.counters[Counter::Forwarded], populate as u64);
    Setup { st, w, v6, proto }
}

/// `fresh`: the ring holds 8192 distinct flows and each pass over it gives
/// them a new client address (`testframes::renew`, a 2-byte write and an
/// incremental checksum per packet), so every packet is a new flow. The run
/// checks afterwards that it measured what it says: new flows only, or none.
fn run(c: &mut Criterion, name: &str, s: &mut Setup, pick: &mut dyn FnMut() -> u32, flags: u8, fresh: bool) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.warm_up_time(std::time::Duration::from_secs(1));
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); BURST];
    let (v6, proto) = (s.v6, s.proto);
    // A ring of prepared frames; each burst copies 32 of them into reused
    // packet buffers (as a NIC would have written them) and processes them.
    // `copy_only` measures that copy alone, to subtract.
    let ring: Vec<Vec<u8>> =
        (0..8192).map(|i| frame(if fresh { i } else { pick() }, v6, proto, flags)).collect();
    let mut pkts: Vec<TestPacket> = (0..BURST).map(|i| TestPacket::new(&ring[i])).collect();
    let mut at = 0usize;
    // Generation 0 is the ring as built: fresh runs start at 1.
    let mut pass = 1u16;
    let before = (s.w.counters[Counter::Forwarded], s.w.counters[Counter::NewFlows]);
    g.bench_function(name, |b| {
        b.iter(|| {
            for p in pkts.iter_mut() {
                p.reset(&ring[at]);
                if fresh {
                    testframes::renew(p.data_mut(), v6, pass);
                }
                at = (at + 1) & 8191;
                if at == 0 {
                    pass = pass.wrapping_add(1).max(1);
                }
            }
            s.w.process_burst(&s.st, &mut pkts, 0, 1, &mut verdicts, &CpuPrefetch)
        })
    });
    g.finish();
    let (forwarded, new_flows) =
        (s.w.counters[Counter::Forwarded] - before.0, s.w.counters[Counter::NewFlows] - before.1);
    if fresh {
        assert!(new_flows as f64 >= 0.99 * forwarded as f64, "{name}: {new_flows} new of {forwarded}");
    } else {
        assert!(new_flows as f64 <= 0.01 * forwarded as f64, "{name}: {new_flows} new of {forwarded}");
    }
    // One more burst outside the measurement proves the benchmark measured forwarding.
    for p in pkts.iter_mut() {
        p.reset(&ring[at]);
        at = (at + 1) & 8191;
    }
    s.w.process_burst(&s.st, &mut pkts, 0, 1, &mut verdicts, &CpuPrefetch);
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { .. })), "{name}: {verdicts:?}");
}

/// The harness's own work per burst, to subtract from the pipeline rows:
/// copying the frames into the packet buffers (`copy_only`), and for the
/// new-flow row also renewing their client address (`copy_renew_only`: the
/// 2-byte write and incremental checksum `run` does for every fresh packet).
fn harness_only(c: &mut Criterion, name: &str, fresh: bool) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(2));
    let ring: Vec<Vec<u8>> = (0..8192).map(|i| frame(i, false, 6, 0x10)).collect();
    let mut pkts: Vec<TestPacket> = (0..BURST).map(|i| TestPacket::new(&ring[i])).collect();
    let mut at = 0usize;
    let mut pass = 1u16;
    g.bench_function(name, |b| {
        b.iter(|| {
            for p in pkts.iter_mut() {
                p.reset(&ring[at]);
                if fresh {
                    testframes::renew(p.data_mut(), false, pass);
                }
                at = (at + 1) & 8191;
                if at == 0 {
                    pass = pass.wrapping_add(1).max(1);
                }
            }
            criterion::black_box(&mut pkts);
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    harness_only(c, "copy_only", false);
    harness_only(c, "copy_renew_only", true);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut random = move || (xorshift(&mut seed) % FLOWS as u64) as u32;
    let (ack, syn) = (0x10, 0x02);
    {
        let mut s = setup(Forwarding::IpIp, false, 6, FLOWS);
        run(c, "ipip_v4_established_1M_random", &mut s, &mut random, ack, false);
        run(c, "ipip_v4_one_flow_hot", &mut s, &mut || 7, ack, false);
        run(c, "ipip_v4_new_flow_syn", &mut s, &mut random, syn, true);
    }
    {
        let mut s = setup(Forwarding::L2, false, 6, FLOWS);
        run(c, "l2_v4_established_1M_random", &mut s, &mut random, ack, false);
    }
    {
        let mut s = setup(Forwarding::IpIp, true, 6, FLOWS);
        run(c, "ipip_v6_established_1M_random", &mut s, &mut random, ack, false);
    }
    {
        let mut s = setup(Forwarding::Gue { port: 6080 }, false, 17, FLOWS);
        run(c, "gue_v4_udp_established_1M_random", &mut s, &mut random, 0, false);
    }
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
