//! Flow sync's budgets (a benchmark, not a test): two boxes' `FlowSync` on
//! loopback (127.0.0.1 and 127.0.0.2), box A's "worker" reporting flows on
//! its ring at a steady rate, box B's table watched for each entry.
//!
//! Measures, per rate: the lag from the report (the flow's first packet, or
//! the scan that found it) to the entry usable in B's table, the bytes on
//! the wire per entry and the channel's Mbit/s, and what was lost.
//!
//! `cargo bench --bench sync` runs the issue's two points: 100k flows/s
//! needing sync (the lag budget) and 250k/s (1M new flows/s of which 25%
//! need sync: the bandwidth budget), then the worker's side (`scan`): the
//! pass over 1M tracked flows after a backend change. `-- RATE SECONDS`
//! runs one rate, `-- scan` the pass alone.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use l4lb::balancer::flow::FlowKey;
use l4lb::balancer::synced::{AtRisk, SyncedFlows};
use l4lb::control::config::{Config, SyncSection};
use l4lb::control::sync::{Clock, FlowSync, View};

const CONFIG: &str = r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_null0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
backends = [{ address = "198.18.0.11" }, { address = "198.18.0.12" }, { address = "198.18.0.13" }]
"#;

/// A worker's report ring, as `l4lb run` makes them.
const RING: usize = 16_384;
/// How long the reported entries live: B's table reuses their slots after.
const TTL_MS: u32 = 3_000;
/// The report time of a flow the ring had no room for (as a worker's
/// report is lost when the management core falls behind: counted).
const LOST: u64 = u64::MAX;
/// One flow in this many is watched.
const SAMPLE: usize = 16;
/// An entry not in B's table this long after its report is counted missing.
const GIVE_UP: Duration = Duration::from_secs(2);

struct Side {
    sync: FlowSync,
    ring: Arc<ArrayQueue<AtRisk>>,
    table: Arc<SyncedFlows>,
    clock: Clock,
}

fn start(listen: Ipv4Addr, peer: Ipv4Addr, port: u16, capacity: usize) -> Side {
    let cfg = SyncSection {
        enabled: true,
        peers: vec![peer.into()],
        port,
        listen: Some(listen.into()),
        capacity,
        queue: 65_536,
        warmup_timeout_s: 600,
    };
    let config = Config::parse(CONFIG, "bench.toml").expect("the bench's configuration");
    let view = View::new(&config, &|_, a| match a {
        IpAddr::V4(a) => Some(a.octets()[3] as u32),
        IpAddr::V6(_) => None,
    });
    let ring = Arc::new(ArrayQueue::new(RING));
    let (table, writer) = SyncedFlows::new(capacity);
    let t0 = Instant::now();
    let clock: Clock = Arc::new(move || 1 + t0.elapsed().as_millis() as u64);
    let sync = FlowSync::start(&cfg, vec![ring.clone()], writer, view, clock.clone()).expect("sync starts");
    Side { sync, ring, table, clock }
}

/// Flow `i`'s key: clients in 198.18.0.0/15, 256 ports each.
fn key(i: u64) -> FlowKey {
    let client = Ipv4Addr::from(0xc612_0000 + (i >> 8) as u32);
    FlowKey::new(client.into(), "198.18.100.1".parse().expect("vip"), 6, 1024 + (i & 0xff) as u16, 80)
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn run(rate: u64, seconds: u64) {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    // `capacity` (both boxes, as in a fleet): 8× the entries alive at once
    // (4-way sets evict a few below that: `docs/operations.md`).
    let capacity = (rate * TTL_MS as u64 / 1000 * 8).max(1 << 16) as usize;
    let a = start(Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2), port, capacity);
    let b = start(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 1), port, capacity);
    let until = Instant::now() + Duration::from_secs(10);
    while !(a.sync.warm() && b.sync.warm()) {
        assert!(Instant::now() < until, "the two sides did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = rate * seconds;
    // When each flow was reported (ns after t0; 0: not yet).
    let reported: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let lost = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The watcher: every SAMPLE-th flow in report order (they travel in
    // order), until it is in B's table or GIVE_UP passed; 100 µs between
    // looks. (Watching every flow would take a core from the sync threads.)
    let watcher = {
        let (reported, table, clock, done) =
            (reported.clone(), b.table.clone(), b.clock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut lags_us = Vec::with_capacity(total as usize);
            let mut missing = 0u64;
            for (i, at) in reported.iter().enumerate().step_by(SAMPLE) {
                let k = key(i as u64);
                loop {
                    let at_ns = at.load(Ordering::Acquire);
                    if at_ns == LOST || (at_ns == 0 && done.load(Ordering::Acquire)) {
                        break;
                    }
                    let now = t0.elapsed();
                    if at_ns != 0 && table.get(&k, k.hash(), clock()).is_some() {
                        lags_us.push((now.as_nanos() as u64).saturating_sub(at_ns) / 1000);
                        break;
                    }
                    if at_ns != 0 && now.as_nanos() as u64 > at_ns + GIVE_UP.as_nanos() as u64 {
                        missing += 1;
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            (lags_us, missing)
        })
    };
    // The "worker": every millisecond, the reports due by then.
    let mut next = 0u64;
    while next < total {
        let due = (t0.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
        while next < due {
            let r = AtRisk { key: key(next), backend: 11 + (next % 3) as u32, expires_in_ms: TTL_MS };
            if a.ring.push(r).is_ok() {
                reported[next as usize].store(t0.elapsed().as_nanos() as u64 | 1, Ordering::Release);
            } else {
                reported[next as usize].store(LOST, Ordering::Release);
                lost.fetch_add(1, Ordering::Relaxed);
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let sent_for = t0.elapsed();
    done.store(true, Ordering::Release);
    let (mut lags, missing) = watcher.join().expect("watcher");
    lags.sort_unstable();
    let sa = a.sync.status();
    let sb = b.sync.status();
    let p = &sa.peers[0];
    let bytes_per_entry = p.sent_bytes as f64 / p.sent.max(1) as f64;
    let mbit = p.sent_bytes as f64 * 8.0 / sent_for.as_secs_f64() / 1e6;
    println!(
        "rate {rate}/s for {seconds} s: {} of the flows watched (1 in {SAMPLE}) usable at B, {missing} missing; \
         {} lost on the ring, {} dropped for the peer, {} evicted at B",
        lags.len(),
        lost.load(Ordering::Relaxed),
        p.dropped,
        sb.evicted
    );
    println!(
        "  lag report -> usable at B (ms): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        quantile(&lags, 0.999),
        quantile(&lags, 1.0)
    );
    println!(
        "  wire: {} entries, {} bytes = {bytes_per_entry:.2} B/entry, {mbit:.1} Mbit/s; \
         B installed {}, its own batch lag p50 {:?} p99 {:?} ms",
        p.sent, p.sent_bytes, sb.installed, sb.lag_ms_p50, sb.lag_ms_p99
    );
    a.sync.stop();
    b.sync.stop();
}

/// A worker's scan after a backend change: 1M tracked flows of one Maglev
/// service, a backend added (so about 1 in 11 flows is no longer the
/// table's choice), the whole pass timed and per bucket.
fn scan() {
    use l4lb::balancer::state::{Backend, Forwarding, ForwardingState, ServiceSpec};
    use l4lb::dataplane::packet::TestPacket;
    use l4lb::dataplane::pipeline::{Counter, DropReason, Verdict, Worker, WorkerConfig};
    use l4lb::dataplane::testframes;
    use l4lb::dpdk::CpuPrefetch;
    const FLOWS: u32 = 1 << 20;
    let state = |generation: u64, backends: u32| {
        let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
        let bs = (0..backends).map(|i| Backend { id: i, ..testframes::backend(i, false) }).collect();
        let spec = ServiceSpec {
            name: "bench".into(),
            maglev_size: 65537,
            ..testframes::service(vip, 6, 80, Forwarding::IpIp, bs)
        };
        ForwardingState::build(generation, vec![testframes::port(true, true)], vec![spec]).expect("a state")
    };
    let (before, after) = (state(1, 10), state(2, 11));
    let mut w = Worker::on_hugepages(WorkerConfig { flow_capacity: 1 << 22, ..WorkerConfig::default() });
    let ring = Arc::new(ArrayQueue::new(RING));
    w.set_sync(SyncedFlows::new(1024).0, ring.clone());
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); 32];
    for chunk in (0..FLOWS).collect::<Vec<_>>().chunks(32) {
        let mut pkts: Vec<TestPacket> =
            chunk.iter().map(|&f| TestPacket::new(&testframes::tcp(f, false, 0x02))).collect();
        let n = pkts.len();
        w.process_burst(&before, &mut pkts, 0, 0, &mut verdicts[..n], &CpuPrefetch);
    }
    assert_eq!(w.counter_snapshot()[Counter::NewFlows], FLOWS as u64);
    while w.sync_scan(&before, 1, 256) > 0 {}
    let (mut buckets, mut popped) = (0usize, 0u64);
    let t = Instant::now();
    loop {
        let n = w.sync_scan(&after, 1, 1);
        if n == 0 {
            break;
        }
        buckets += n;
        while ring.pop().is_some() {
            popped += 1;
        }
    }
    let took = t.elapsed();
    println!(
        "scan after a backend change: {FLOWS} flows in {buckets} buckets read in {:.1} ms ({:.1} ns per bucket, \
         one bucket per busy poll); {popped} reported ({:.1}%), {} lost on the ring",
        took.as_secs_f64() * 1e3,
        took.as_nanos() as f64 / buckets as f64,
        popped as f64 * 100.0 / FLOWS as f64,
        w.counter_snapshot()[Counter::SyncReportsLost]
    );
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if args.iter().any(|a| a == "scan") {
        return scan();
    }
    match nums.as_slice() {
        [rate, seconds, ..] => run(*rate, *seconds),
        [rate] => run(*rate, 10),
        _ => {
            run(100_000, 10);
            run(250_000, 10);
            scan();
        }
    }
}
