//! Every counter of the workers' table reaches the metrics page and
//! `ctl stats --json` with a non-zero value when its event happens.
//!
//! The pipeline's events happen here, to real packets through a real
//! `Worker`: the fixture table's cases (tests/fixtures/cases.json) and a few
//! states made to provoke the rest (no backend, no neighbour, no source
//! address, no headroom, a backend leaving, a full table, expiry). The
//! counters then go the way a running l4lb sends them: published into a
//! worker's telemetry block, read back, rendered as the metrics page and as
//! the `stats` reply. The worker loop's own rows (packets in and out, polls,
//! state swaps, the neighbour rings) are counted around the pipeline, not by
//! it: tests/e2e_control.rs and tests/e2e_encap.rs check those on a running
//! l4lb. (Fast tier: no DPDK, no root.)
use std::net::{IpAddr, Ipv4Addr};

use l4lb::balancer::state::{Backend, Forwarding, ForwardingState};
use l4lb::control::api::Stats;
use l4lb::control::config::Config;
use l4lb::control::metrics::{workers, Exposition};
use l4lb::control::state_build::{build_state, simulated_facts, worker_config};
use l4lb::dataplane::packet::TestPacket;
use l4lb::dataplane::pipeline::{row_info, Counters, DropReason, Verdict, Worker, WorkerConfig, ROWS};
use l4lb::dataplane::telemetry::{WorkerStats, WorkerTelemetry};
use l4lb::dataplane::testframes;
use l4lb::net::tcp;

/// Rows the worker loop counts, around the pipeline.
const LOOP_ROWS: [&str; 18] = [
    "rx_packets",
    "tx_packets",
    "busy_polls",
    "idle_polls",
    "stalls",
    "states_adopted",
    "control_up",
    "control_sent",
    "tx_full",
    "control_ring_full",
    "no_route",
    "handoff_ring_full",
    "punted",
    "punt_rate_limited",
    "punt_ring_full",
    "no_mbuf",
    "vip_path_answers",
    "vip_path_wrong_source",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Every fixture case through one worker: its counters.
fn fixture_counters() -> Counters {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cfg = Config::load(&dir.join("fixtures.toml")).unwrap();
    let state = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let mut p = TestPacket::new(&unhex(c["input"].as_str().unwrap()));
        w.process(&state, &mut p, c["port"].as_u64().unwrap() as u16, c["time_ms"].as_u64().unwrap());
    }
    w.counter_snapshot()
}

/// The benchmark frames' service (198.18.100.1:80, TCP, IP-in-IP) with three
/// backends made by `backend`, on a port with or without an IPv4 address.
fn state(generation: u64, port_v4: bool, backend: impl Fn(u32) -> Option<Backend>) -> ForwardingState {
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
    let backends = (0..3).filter_map(&backend).collect();
    let spec = testframes::service(vip, l4lb::net::proto::TCP, 80, Forwarding::IpIp, backends);
    ForwardingState::build(generation, vec![testframes::port(port_v4, false)], vec![spec]).unwrap()
}

fn backend(i: u32) -> Backend {
    testframes::backend(i, false)
}

/// The events the fixtures do not cover, each checked to give its verdict.
fn provoked_counters() -> Counters {
    let cfg = WorkerConfig { flow_capacity: 64, persist_capacity: 64, ..WorkerConfig::default() };
    let mut w = Worker::new(cfg);
    let syn = |flow: u32| testframes::tcp(flow, false, tcp::SYN);
    let send = |w: &mut Worker, st: &ForwardingState, f: &[u8], now: u64| {
        w.process(st, &mut TestPacket::new(f), 0, now)
    };
    // Every backend drained: nobody takes new flows.
    let drained = state(1, true, |i| Some(Backend { draining: true, ..backend(i) }));
    assert_eq!(send(&mut w, &drained, &syn(1), 0), Verdict::Drop(DropReason::NoBackend));
    // Backends whose MAC nobody knows.
    let unresolved = state(2, true, |i| Some(Backend { next_hop: None, ..backend(i) }));
    assert_eq!(send(&mut w, &unresolved, &syn(2), 0), Verdict::Drop(DropReason::NoNeighbour));
    // A port with no IPv4 address to encapsulate from.
    let no_source = state(3, false, |i| Some(backend(i)));
    assert_eq!(send(&mut w, &no_source, &syn(3), 0), Verdict::Drop(DropReason::NoSourceAddress));
    // A packet with no room in front for the outer header.
    let full = state(4, true, |i| Some(backend(i)));
    let mut tight = TestPacket::with_room(&syn(4), 0, 0);
    assert_eq!(w.process(&full, &mut tight, 0, 0), Verdict::Drop(DropReason::NoHeadroom));
    // A tracked flow whose backend leaves: scheduled again.
    let ack = |flow: u32| testframes::tcp(flow, false, tcp::ACK);
    let flows: Vec<u32> = (100..130).collect();
    for &f in &flows {
        assert!(matches!(send(&mut w, &full, &ack(f), 1), Verdict::Forward { .. }));
    }
    let without_first = state(5, true, |i| (i != 0).then(|| backend(i)));
    for &f in &flows {
        assert!(matches!(send(&mut w, &without_first, &ack(f), 2), Verdict::Forward { .. }));
    }
    // A full table (64 entries): SYNs and established flows alike are evicted.
    for f in 1000..1400u32 {
        let frame = if f % 2 == 0 { syn(f) } else { ack(f) };
        assert!(matches!(send(&mut w, &without_first, &frame, 3), Verdict::Forward { .. }));
    }
    // Long after: every entry has expired and the sweep takes them.
    w.sweep(10_000_000, 1 << 20);
    let mut c = w.counter_snapshot();
    c += &persistence_counters();
    c += &sync_counters();
    c += &vip_path_counters();
    c
}

/// A VIP-path health check's packet from the box's kernel (a claimed source
/// port, to the backend claimed for): sent to the VIP through the backend's
/// rewrite.
fn vip_path_counters() -> Counters {
    use l4lb::balancer::state::VipPathTarget;
    use l4lb::dataplane::pipeline::VipPathPorts;
    let mut st = state(30, true, |i| Some(backend(i)));
    let target = Backend { id: 40, ..backend(1) };
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
    st.set_vip_paths(vec![VipPathTarget { vip, forwarding: Forwarding::IpIp, backend: target.clone() }]);
    let ports = std::sync::Arc::new(VipPathPorts::default());
    let claim = ports.claim(40).unwrap();
    // A SYN from the box (198.18.0.1) to the backend, as the kernel sends it.
    let mut f = testframes::tcp(0, false, tcp::SYN);
    f[14 + 12..14 + 16].copy_from_slice(&[198, 18, 0, 1]);
    let IpAddr::V4(b) = target.addr else { unreachable!() };
    f[14 + 16..14 + 20].copy_from_slice(&b.octets());
    f[34..36].copy_from_slice(&claim.port().to_be_bytes());
    let mut w = Worker::new(WorkerConfig::small());
    let v = w.vip_path_out(&st, &mut TestPacket::new(&f), 0, 0, &ports);
    assert_eq!(v, Some(Verdict::Forward { port: 0 }));
    w.counter_snapshot()
}

/// Flow sync: a backend starts draining, so the flows on it are no longer
/// the tables' choice: the scan reports them (a ring of two loses the rest),
/// and a peer given the reports keeps such a flow on its backend.
fn sync_counters() -> Counters {
    use crossbeam::queue::ArrayQueue;
    use l4lb::balancer::synced::SyncedFlows;
    use std::sync::Arc;
    let cfg = WorkerConfig { flow_capacity: 256, ..WorkerConfig::default() };
    let ring = Arc::new(ArrayQueue::new(2));
    let mut a = Worker::new(cfg);
    a.set_sync(SyncedFlows::new(64).0, ring.clone());
    let all = state(20, true, |i| Some(backend(i)));
    for f in 0..60u32 {
        let v = a.process(&all, &mut TestPacket::new(&testframes::tcp(f, false, tcp::SYN)), 0, 1);
        assert!(matches!(v, Verdict::Forward { .. }));
    }
    let draining = state(21, true, |i| Some(Backend { draining: i == 0, ..backend(i) }));
    while a.sync_scan(&draining, 2, 64) > 0 {}
    let (peers, mut writer) = SyncedFlows::new(64);
    let mut b = Worker::new(cfg);
    b.set_sync(peers, Arc::new(ArrayQueue::new(2)));
    let r = ring.pop().expect("a report");
    writer.put(&r.key, r.key.hash(), r.backend, 10_000, 2);
    let flow = (0..60u32).find(|&f| flow_key(f) == r.key).expect("the reported flow");
    let v = b.process(&draining, &mut TestPacket::new(&testframes::tcp(flow, false, tcp::ACK)), 0, 3);
    assert!(matches!(v, Verdict::Forward { .. }));
    let mut c = a.counter_snapshot();
    c += &b.counter_snapshot();
    c
}

/// The flow key of `testframes::tcp(flow, false, ..)`.
fn flow_key(flow: u32) -> l4lb::balancer::flow::FlowKey {
    let frame = testframes::tcp(flow, false, tcp::SYN);
    let ip = l4lb::net::ipv4::Packet::new_checked(&frame[14..]).unwrap();
    l4lb::balancer::flow::key_v4(&ip).unwrap().0
}

/// Two workers and a persistent service: a client's first flow that reaches
/// the worker which is not its owner is handed over, the owner writes the
/// entry, and in a table of one set (4 entries) later clients evict.
fn persistence_counters() -> Counters {
    let cfg = WorkerConfig { flow_capacity: 64, persist_capacity: 4, ..WorkerConfig::default() };
    let mut team = Worker::team(cfg, 2);
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1));
    let mut spec =
        testframes::service(vip, l4lb::net::proto::TCP, 80, Forwarding::IpIp, (0..3).map(backend).collect());
    spec.persistence_ms = 60_000;
    let st = ForwardingState::build(7, vec![testframes::port(true, false)], vec![spec]).unwrap();
    for client in 0..8u32 {
        let frame = testframes::tcp(client * 64_000, false, tcp::SYN);
        let mut p = TestPacket::new(&frame);
        let mut v = team[0].process(&st, &mut p, 0, 10);
        if let Verdict::Handoff { worker } = v {
            assert_eq!(worker, 1);
            v = team[1].process_handed(&st, &mut p, 0, 10, 0);
        }
        assert!(matches!(v, Verdict::Forward { .. }), "client {client}: {v:?}");
    }
    let mut c = team[0].counter_snapshot();
    c += &team[1].counter_snapshot();
    c
}

#[test]
fn every_counter_reaches_the_page_and_ctl_stats_when_its_event_happens() {
    let mut counters = fixture_counters();
    counters += &provoked_counters();
    // Published and read back as a running l4lb does, as worker 0 of two.
    let telemetry = WorkerTelemetry::new(16);
    let st = testframes::state(Forwarding::IpIp, false, 6);
    telemetry.publish(&WorkerStats { counters, ..Default::default() }, &st, |_| 0);
    let per = vec![telemetry.snapshot(), WorkerStats::default()];
    let mut page = Exposition::default();
    workers(&mut page, &per);
    let page = page.finish();
    let stats: Stats =
        serde_json::from_value(serde_json::to_value(Stats::from_workers(&per, 1, Vec::new())).unwrap())
            .unwrap();
    let mut unprovoked = Vec::new();
    for i in 0..ROWS {
        let info = row_info(i);
        if LOOP_ROWS.contains(&info.name) {
            continue;
        }
        let v = counters.as_array()[i];
        if v == 0 {
            unprovoked.push(info.name);
            continue;
        }
        let labels = match info.label {
            Some((k, l)) => format!("{{worker=\"0\",{k}=\"{l}\"}}"),
            None => "{worker=\"0\"}".to_string(),
        };
        let line = format!("{}{labels} {v}", info.metric);
        assert!(page.lines().any(|l| l == line), "`{line}` is not on the page:\n{page}");
        assert_eq!(stats.counters.get(info.name), Some(&v), "{} in ctl stats", info.name);
        assert_eq!(stats.workers[0].counters.get(info.name), Some(&v), "{} of worker 0", info.name);
    }
    assert!(unprovoked.is_empty(), "no event here made these counters count: {unprovoked:?}");
    // The loop's rows are rows of the same table: on the page and in ctl stats too.
    for name in LOOP_ROWS {
        assert!((0..ROWS).any(|i| row_info(i).name == name), "{name} is not a counter");
        assert!(stats.counters.contains_key(name), "{name} missing from ctl stats");
    }
}
