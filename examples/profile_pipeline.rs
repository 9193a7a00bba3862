//! Runs bursts through the pipeline for profiling (callgrind, perf):
//! `cargo build --release --example profile_pipeline` then
//! `valgrind --tool=callgrind target/release/examples/profile_pipeline [hot|random|syn] [v4|v6] [bursts] [capacity] [serial|worker] [bursts per ms]`.
//! `serial` (default): `process_burst`, one burst at a time, as the criterion
//! benches run it; `worker`: two bursts in flight, as `BalanceWorker::run`
//! runs them. The flow table is madvised onto transparent huge pages, as
//! `l4lb run` does.
//! The clock advances one millisecond per 312 bursts by default, as in a
//! worker forwarding 10 Mpps (`1`: a millisecond per burst, so a full table's
//! victims expired long ago).
//! `syn`: every packet a SYN of a new flow (4096 frames, their client address
//! renewed every pass over them: `testframes::renew`), into a table of
//! `capacity` entries (default 2M); with 65536, as `scripts/bench/testpmd.sh` sets for
//! its SYN input, every SYN soon evicts one. It prints how many were new.

use l4lb::balancer::state::Forwarding;
use l4lb::dataplane::packet::{Packet, TestPacket};
use l4lb::dataplane::pipeline::{BurstPlan, DropReason, Verdict, Worker, WorkerConfig};
use l4lb::dpdk::CpuPrefetch;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let random = args.get(1).is_some_and(|s| s == "random" || s == "syn");
    let syn = args.get(1).is_some_and(|s| s == "syn");
    let v6 = args.get(2).map(|s| s == "v6").unwrap_or(false);
    let bursts: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let st = l4lb::dataplane::testframes::state(Forwarding::IpIp, v6, 6);
    let capacity: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1 << 21);
    // Huge pages for the flow table, as `l4lb run` asks for them.
    let mut w = Worker::on_hugepages(WorkerConfig { flow_capacity: capacity, ..WorkerConfig::default() });
    let flags = if syn { 0x02 } else { 0x10 };
    let frames: Vec<Vec<u8>> = (0..4096u32).map(|i| l4lb::dataplane::testframes::tcp(i, v6, flags)).collect();
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); 32];
    let mode = args.get(5).map(String::as_str).unwrap_or("serial");
    let bursts_per_ms: u64 = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(312).max(1);
    let mut pkts: Vec<TestPacket> = (0..32).map(|i| TestPacket::new(&frames[i])).collect();
    let mut held: Vec<TestPacket> = (0..32).map(|i| TestPacket::new(&frames[i])).collect();
    let (mut plan, mut held_plan) = (Box::<BurstPlan>::default(), Box::<BurstPlan>::default());
    let mut holding = false;
    let mut seed = 88172645463325252u64;
    let mut forwarded = 0u64;
    let start = std::time::Instant::now();
    for b in 0..bursts {
        let now = b as u64 / bursts_per_ms;
        if mode == "worker" && holding {
            // As the balancing worker: the held burst is staged before the
            // next one is received (here: copied in).
            w.stage_burst(&st, &mut held_plan, now, &CpuPrefetch);
        }
        for (i, p) in pkts.iter_mut().enumerate() {
            let f = if syn {
                (b as usize * 32 + i) % 4096
            } else if random {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 4096) as usize
            } else {
                0
            };
            p.reset(&frames[f]);
            if syn {
                // Each pass over the 4096 frames (128 bursts) a new generation:
                // every packet a new flow for 8M bursts.
                l4lb::dataplane::testframes::renew(p.data_mut(), v6, (b / 128) as u16 + 1);
            }
        }
        match mode {
            "worker" => {
                // Two bursts in flight, in the balancing worker's order: prepare
                // the burst received, then finish the one held from before.
                w.prepare_burst(&st, &mut pkts, 0, &mut plan, &CpuPrefetch);
                if holding {
                    w.finish_burst(&st, &mut held, 0, now, &mut held_plan, &CpuPrefetch);
                    forwarded += count(held_plan.verdicts());
                }
                std::mem::swap(&mut pkts, &mut held);
                std::mem::swap(&mut plan, &mut held_plan);
                holding = true;
            }
            _ => {
                w.process_burst(&st, &mut pkts, 0, now, &mut verdicts, &CpuPrefetch);
                forwarded += count(&verdicts);
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (bursts as f64 * 32.0);
    println!(
        "{forwarded} forwarded, {} new flows, {ns:.1} ns/packet (including the frame copy)",
        w.counters[l4lb::dataplane::pipeline::Counter::NewFlows]
    );
}

fn count(verdicts: &[Verdict]) -> u64 {
    verdicts.iter().filter(|v| matches!(v, Verdict::Forward { .. })).count() as u64
}
