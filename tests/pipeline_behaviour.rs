//! Pipeline behaviour over many packets: flow affinity across state changes,
//! the same decision on two boxes, a full flow table, no allocation on the
//! packet path, and no panic on any input.
use std::net::{IpAddr, Ipv4Addr};

use l4lb::balancer::NoPrefetch;
use l4lb::control::config::Config;
use l4lb::control::state_build::{build_state, simulated_facts, worker_config};
use l4lb::dataplane::packet::{Packet, TestPacket};
use l4lb::dataplane::pipeline::{BurstPlan, Counter, DropReason, Verdict, Worker, WorkerConfig};
use proptest::prelude::*;

const BASE: &str = r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
hugepages = false

[workers]
flow_table_capacity = FLOWS

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
mac = "02:00:00:00:00:01"
neighbours = [NEIGH]

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
forwarding = "ipip"
backends = [BACKENDS]

[[services]]
name = "web6"
vip = "2001:db8:100::1"
protocol = "udp"
port = 53
forwarding = "gue"
backends = [{ address = "2001:db8::11" }, { address = "2001:db8::12" }]
"#;

fn config(flows: usize, backends: &[(u8, u32)]) -> l4lb::control::config::Validated {
    config_with(flows, backends, "")
}

/// [`config`] with `extra` keys for the first service.
fn config_with(flows: usize, backends: &[(u8, u32)], extra: &str) -> l4lb::control::config::Validated {
    let neigh: Vec<String> = (1..=30u8)
        .map(|i| format!("{{ ip = \"198.18.0.{i}\", mac = \"02:00:00:00:01:{i:02x}\" }}"))
        .chain(
            (0x11..=0x12)
                .map(|i| format!("{{ ip = \"2001:db8::{i:x}\", mac = \"02:00:00:00:06:{i:02x}\" }}")),
        )
        .collect();
    let bs: Vec<String> = backends
        .iter()
        .map(|(last, w)| format!("{{ address = \"198.18.0.{last}\", weight = {w} }}"))
        .collect();
    let text = BASE
        .replace("FLOWS", &flows.to_string())
        .replace("NEIGH", &neigh.join(", "))
        .replace("BACKENDS", &bs.join(", "))
        .replace("forwarding = \"ipip\"", &format!("forwarding = \"ipip\"\n{extra}"));
    Config::parse(&text, "test.toml").unwrap().validate("test.toml").unwrap()
}

fn frame(src: u32, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&Ipv4Addr::from(src).octets());
    ip[16..20].copy_from_slice(&[198, 18, 100, 1]);
    let c = l4lb::net::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut f[34..54];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    f
}

/// The backend a forwarded IP-in-IP packet went to (outer destination).
fn backend_of(p: &TestPacket) -> u8 {
    p.data()[14 + 19]
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn send(
    w: &mut Worker,
    st: &l4lb::balancer::state::ForwardingState,
    f: &[u8],
    now: u64,
) -> (Verdict, TestPacket) {
    let mut p = TestPacket::new(f);
    let v = w.process(st, &mut p, 0, now);
    (v, p)
}

#[test]
fn established_flows_keep_their_backend_across_changes_and_only_removed_ones_move() {
    let cfg1 = config(4096, &[(11, 1), (12, 1), (13, 1)]);
    let st1 = build_state(&cfg1, 1, &simulated_facts(&cfg1)).unwrap();
    let mut w = Worker::new(worker_config(&cfg1));
    let flows: Vec<(u32, u16)> = (0..600).map(|i| (0xc612_0200 + i / 100, 10_000 + i as u16)).collect();
    let mut first = Vec::new();
    for &(src, sp) in &flows {
        let (v, p) = send(&mut w, &st1, &frame(src, sp, SYN), 1000);
        assert_eq!(v, Verdict::Forward { port: 0 });
        first.push(backend_of(&p));
    }
    // Weights change and a backend is added: every existing flow stays put.
    // Backend ids follow configuration order, so the new backend goes last.
    let cfg2 = config(4096, &[(11, 5), (12, 1), (13, 1), (14, 3)]);
    let st2 = build_state(&cfg2, 2, &simulated_facts(&cfg2)).unwrap();
    for (i, &(src, sp)) in flows.iter().enumerate() {
        let (_, p) = send(&mut w, &st2, &frame(src, sp, ACK), 2000);
        assert_eq!(backend_of(&p), first[i], "flow {i} moved on a weight change");
    }
    // New flows do reach the new backend.
    let new: Vec<u8> = (0..300)
        .map(|i| backend_of(&send(&mut w, &st2, &frame(0xc612_0300, 20_000 + i, SYN), 2000).1))
        .collect();
    assert!(new.contains(&14));
    // Backend .12 is removed: only its flows move, to remaining backends.
    let cfg3 = config(4096, &[(11, 1), (13, 1), (14, 1)]);
    let mut st3 = build_state(&cfg3, 3, &simulated_facts(&cfg3)).unwrap();
    // Keep ids stable the way the management side does (by address).
    for b in st3.backends.iter_mut() {
        b.id = st2.backends.iter().find(|o| o.addr == b.addr && o.port == b.port).unwrap().id;
    }
    let st3 = l4lb::balancer::state::ForwardingState::build(
        3,
        st3.ports.clone(),
        vec![spec_of(&st3, 0), spec_of(&st3, 1)],
    )
    .unwrap();
    let before = w.counters[Counter::Rescheduled];
    let mut moved = 0;
    for (i, &(src, sp)) in flows.iter().enumerate() {
        let (_, p) = send(&mut w, &st3, &frame(src, sp, ACK), 3000);
        if first[i] == 12 {
            assert_ne!(backend_of(&p), 12);
            moved += 1;
        } else {
            assert_eq!(backend_of(&p), first[i], "flow {i} to a healthy backend moved");
        }
    }
    assert!(moved > 100, "about a third of 600 flows were on .12, got {moved}");
    assert_eq!(w.counters[Counter::Rescheduled] - before, moved);
}

fn spec_of(st: &l4lb::balancer::state::ForwardingState, i: usize) -> l4lb::balancer::state::ServiceSpec {
    let s = &st.services[i];
    l4lb::balancer::state::ServiceSpec {
        name: s.name.clone(),
        vip: s.vip,
        proto: s.proto,
        port: s.port,
        forwarding: s.forwarding,
        scheduler: s.scheduler,
        persistence_ms: s.persistence_ms,
        timeouts: s.timeouts,
        answer_arp: s.answer_arp,
        maglev_size: s.maglev.size(),
        backends: s.backends.iter().map(|&b| st.backends[b as usize].clone()).collect(),
        access: s.access.clone(),
        quota: s.quota,
        stats: s.stats.clone(),
    }
}

#[test]
fn two_boxes_with_the_same_config_choose_the_same_backend() {
    // Box B lists the backends in another order and has a different flow-table size.
    let a = config(4096, &[(11, 1), (12, 2), (13, 1), (14, 1)]);
    let b = config(65536, &[(14, 1), (13, 1), (12, 2), (11, 1)]);
    let (sa, sb) = (
        build_state(&a, 1, &simulated_facts(&a)).unwrap(),
        build_state(&b, 7, &simulated_facts(&b)).unwrap(),
    );
    let (mut wa, mut wb) = (Worker::new(worker_config(&a)), Worker::new(worker_config(&b)));
    for i in 0..2000u32 {
        let f = frame(0xc612_0000 + i * 7, 1024 + (i % 60000) as u16, SYN);
        let (_, pa) = send(&mut wa, &sa, &f, 1);
        // Box B sees the flow mid-connection (an ECMP change): same answer.
        let (_, pb) = send(&mut wb, &sb, &frame(0xc612_0000 + i * 7, 1024 + (i % 60000) as u16, ACK), 1);
        assert_eq!(backend_of(&pa), backend_of(&pb), "flow {i}");
    }
}

#[test]
fn a_full_flow_table_evicts_and_keeps_forwarding() {
    let cfg = config(64, &[(11, 1), (12, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    assert_eq!(w.flows().capacity(), 64);
    for i in 0..1000u32 {
        let (v, _) = send(&mut w, &st, &frame(0xc612_0000 + i, 5000, if i % 2 == 0 { SYN } else { ACK }), 10);
        assert_eq!(v, Verdict::Forward { port: 0 }, "packet {i}");
    }
    let s = w.flow_stats();
    assert_eq!(w.counters[Counter::Forwarded], 1000);
    assert_eq!(w.counters[Counter::NewFlows], 1000);
    assert!(w.flows().len() <= 64);
    assert!(s.evicted_unconfirmed > 0 && s.evicted_established > 0, "{s:?}");
    assert_eq!(s.inserts, 1000);
    assert_eq!(s.evicted_unconfirmed + s.evicted_established + s.expired + w.flows().len() as u64, 1000);
    // Active-flow counts stay true: they sum to what the table holds.
    assert_eq!(st.backends.iter().map(|b| w.active_flows(b.id) as usize).sum::<usize>(), w.flows().len());
}

#[test]
fn expired_flows_are_swept_and_counts_return_to_zero() {
    let cfg = config(4096, &[(11, 1), (12, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    for i in 0..100u32 {
        send(&mut w, &st, &frame(0xc612_0000 + i, 5000, SYN), 0);
    }
    assert_eq!(st.backends.iter().map(|b| w.active_flows(b.id)).sum::<u32>(), 100);
    // SYN-only flows expire after tcp_syn_s (10 s).
    assert_eq!(w.sweep(10_000, usize::MAX), 100);
    assert_eq!(st.backends.iter().map(|b| w.active_flows(b.id)).sum::<u32>(), 0);
    assert!(w.flows().is_empty());
}

#[test]
fn a_flows_expiry_follows_its_packets_to_within_the_refresh_slack() {
    use l4lb::balancer::flow::FlowKey;
    use l4lb::balancer::flowtable::FlowState;
    let cfg = config(4096, &[(11, 1), (12, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let (src, sport) = (0xc612_0007u32, 4321u16);
    let key = FlowKey::new(Ipv4Addr::from(src).into(), Ipv4Addr::new(198, 18, 100, 1).into(), 6, sport, 80);
    let at = |w: &mut Worker, flags: u8, now: u64| {
        assert_eq!(send(w, &st, &frame(src, sport, flags), now).0, Verdict::Forward { port: 0 });
        let e = w.tracked(&key, now).expect("tracked");
        (e.state, e.expires_ms)
    };
    // SYN-only: 10 s timeout. The first retransmission changes the state
    // (SYN retried), which is always written; later ones refresh it once
    // they would move the expiry by 10 s / 16 = 625 ms or more.
    assert_eq!(at(&mut w, SYN, 0), (FlowState::SynSeen, 10_000));
    assert_eq!(at(&mut w, SYN, 624), (FlowState::SynRetried, 10_624));
    assert_eq!(at(&mut w, SYN, 1_248), (FlowState::SynRetried, 10_624));
    assert_eq!(at(&mut w, SYN, 1_249), (FlowState::SynRetried, 11_249));
    // Established (900 s): 1024 ms.
    assert_eq!(at(&mut w, ACK, 1_300), (FlowState::Established, 901_300));
    assert_eq!(at(&mut w, ACK, 2_323), (FlowState::Established, 901_300));
    assert_eq!(at(&mut w, ACK, 2_324), (FlowState::Established, 902_324));
    assert_eq!(at(&mut w, ACK | 0x01, 2_325), (FlowState::Closing, 12_325));
}

#[test]
fn a_clients_persistence_follows_its_packets_to_within_the_refresh_slack() {
    use l4lb::balancer::flow::FlowKey;
    use l4lb::balancer::flowtable::FlowState;
    // Persistence of 1 s: its slack (1000 / 16 = 62 ms) is below the
    // established flow's (1024 ms), so it bounds both, and a packet that moves
    // the flow's expiry by less neither rewrites the flow nor the client.
    let mut cfg = config(4096, &[(11, 1), (12, 1)]);
    cfg.config.services[0].persistence_s = 1;
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let svc = &st.services[0];
    assert_eq!((svc.name.as_str(), svc.persistence_ms), ("web", 1000));
    let mut w = Worker::new(worker_config(&cfg));
    let (src, sport) = (0xc612_0009u32, 4000u16);
    let client =
        FlowKey::new(Ipv4Addr::from(src).into(), Ipv4Addr::new(198, 18, 100, 1).into(), 6, sport, 80);
    let at = |w: &mut Worker, flags: u8, now: u64| {
        assert_eq!(send(w, &st, &frame(src, sport, flags), now).0, Verdict::Forward { port: 0 });
        let e = w.tracked(&client, now).expect("tracked");
        let (_, persisted) = w.persisted(svc.persist_id, &client.src, now).expect("persisted");
        (e.state, e.expires_ms, persisted)
    };
    assert_eq!(at(&mut w, SYN, 0), (FlowState::SynSeen, 10_000, 1_000));
    // A state change is written, the client with it.
    assert_eq!(at(&mut w, ACK, 10), (FlowState::Established, 900_010, 1_010));
    assert_eq!(at(&mut w, ACK, 71), (FlowState::Established, 900_010, 1_010));
    assert_eq!(at(&mut w, ACK, 72), (FlowState::Established, 900_072, 1_072));
    // Packets 900 ms apart keep the client's backend: each finds it persisted.
    for i in 1..=5u64 {
        let now = 72 + 900 * i;
        assert_eq!(at(&mut w, ACK, now), (FlowState::Established, 900_000 + now, 1_000 + now));
    }
}

#[test]
fn a_persisted_client_leaves_a_backend_whose_weight_is_set_to_0() {
    let mut cfg = config(4096, &[(11, 1), (12, 1)]);
    cfg.config.services[0].persistence_s = 300;
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let src = 0xc612_0009u32;
    let (_, p) = send(&mut w, &st, &frame(src, 4000, SYN), 0);
    let kept = backend_of(&p);
    // Its next connections, from other ports, stay on that backend...
    for sport in 4001..4010 {
        assert_eq!(backend_of(&send(&mut w, &st, &frame(src, sport, SYN), 1).1), kept);
    }
    // ...until its weight is 0 (set-weight 0): new connections go elsewhere,
    // the tracked ones stay.
    let weights: Vec<(u8, u32)> = [11u8, 12].iter().map(|&b| (b, (b != kept) as u32)).collect();
    let mut cfg0 = config(4096, &weights);
    cfg0.config.services[0].persistence_s = 300;
    let st0 = build_state(&cfg0, 2, &simulated_facts(&cfg0)).unwrap();
    assert_eq!(st0.services[0].persistence_ms, 300_000);
    for sport in 4010..4020 {
        assert_ne!(backend_of(&send(&mut w, &st0, &frame(src, sport, SYN), 2).1), kept, "port {sport}");
    }
    assert_eq!(backend_of(&send(&mut w, &st0, &frame(src, 4000, ACK), 3).1), kept, "a tracked flow stays");
}

#[test]
fn a_burst_prepared_with_one_state_and_finished_with_another_follows_the_newer() {
    // State 1 numbers "web" second (web6 first); state 2 has "web" alone,
    // on another backend. A worker prepares a burst with state 1 and a new
    // state arrives before it finishes: the burst is decided by state 2 (with
    // state 1's service number it would index past state 2's services).
    let cfg = |backend: u8, web6_first: bool| {
        let mut c = config(4096, &[(backend, 1)]);
        if web6_first {
            c.config.services.rotate_left(1);
        } else {
            c.config.services.truncate(1);
        }
        c
    };
    let (cfg1, cfg2) = (cfg(11, true), cfg(12, false));
    assert_eq!((cfg1.config.services[1].name.as_str(), cfg2.config.services.len()), ("web", 1));
    let st1 = build_state(&cfg1, 1, &simulated_facts(&cfg1)).unwrap();
    let st2 = build_state(&cfg2, 2, &simulated_facts(&cfg2)).unwrap();
    let mut w = Worker::new(worker_config(&cfg1));
    let mut pkts: Vec<TestPacket> =
        (0..8).map(|i| TestPacket::new(&frame(0xc612_0400 + i, 7000, SYN))).collect();
    let mut plan = BurstPlan::default();
    w.prepare_burst(&st1, &mut pkts, 0, &mut plan, &NoPrefetch);
    // Staged with the old state too (the balancing worker's order), before
    // the new one arrived.
    w.stage_burst(&st1, &mut plan, 1000, &NoPrefetch);
    w.finish_burst(&st2, &mut pkts, 0, 1000, &mut plan, &NoPrefetch);
    assert_eq!(plan.verdicts(), &[Verdict::Forward { port: 0 }; 8]);
    assert!(pkts.iter().all(|p| backend_of(p) == 12), "decided by the newer state's backend");
    // The same burst prepared and finished with one state: that state's backend.
    let mut pkts: Vec<TestPacket> =
        (0..8).map(|i| TestPacket::new(&frame(0xc612_0500 + i, 7000, SYN))).collect();
    w.prepare_burst(&st1, &mut pkts, 0, &mut plan, &NoPrefetch);
    w.finish_burst(&st1, &mut pkts, 0, 1000, &mut plan, &NoPrefetch);
    assert!(pkts.iter().all(|p| backend_of(p) == 11));
}

/// Counts prefetches.
#[derive(Default)]
struct Counted(std::cell::Cell<usize>);

impl l4lb::balancer::Prefetch for Counted {
    fn prefetch<T>(&self, _: &T) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_staged_burst_is_finished_without_prefetching_again() {
    // The balancing worker stages a held burst (its second prefetches) before
    // it receives the next one; the finish then only decides. A burst not
    // staged is staged by its finish.
    let cfg = config(4096, &[(11, 1), (12, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let burst = |base: u32, flags: u8| -> Vec<TestPacket> {
        (0..16).map(|i| TestPacket::new(&frame(base + i, 7000, flags))).collect()
    };
    let mut plan = BurstPlan::default();
    // New flows: SYNs, and segments of flows the table does not hold (say,
    // moved here by an ECMP change): both kinds of second pass.
    for (flags, base) in [(SYN, 0xc612_0600), (ACK, 0xc612_0800)] {
        let now = 1000;
        let (mut staged, mut unstaged) = (burst(base, flags), burst(base + 0x100, flags));
        let (first, stage, finish) = (Counted::default(), Counted::default(), Counted::default());
        w.prepare_burst(&st, &mut staged, 0, &mut plan, &first);
        w.stage_burst(&st, &mut plan, now, &stage);
        w.stage_burst(&st, &mut plan, now, &stage);
        let staged_count = stage.0.get();
        assert!(staged_count >= 16, "flags {flags:#x}: {staged_count} lines staged for 16 packets");
        w.finish_burst(&st, &mut staged, 0, now, &mut plan, &finish);
        assert_eq!(finish.0.get(), 0, "flags {flags:#x}: staged once, the finish prefetches nothing");
        assert_eq!(plan.verdicts(), &[Verdict::Forward { port: 0 }; 16]);

        let (first, finish) = (Counted::default(), Counted::default());
        w.prepare_burst(&st, &mut unstaged, 0, &mut plan, &first);
        w.finish_burst(&st, &mut unstaged, 0, now, &mut plan, &finish);
        assert!(finish.0.get() >= 16, "flags {flags:#x}: an unstaged burst is staged by its finish");
        assert_eq!(plan.verdicts(), &[Verdict::Forward { port: 0 }; 16]);
    }
    assert_eq!(w.counters[Counter::NewFlows], 64);
}

#[test]
fn the_packet_path_allocates_nothing() {
    let cfg = config(1 << 16, &[(11, 1), (12, 1), (13, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(WorkerConfig { flow_capacity: 1 << 16, ..worker_config(&cfg) });
    let mut verdicts = [Verdict::Drop(DropReason::Malformed); 32];
    w.adopt(&st);
    let mut allocations = 0;
    for round in 0..200u64 {
        // Fresh copies of the frames (outside the measurement): new flows in
        // round 0, established ones after.
        let mut pkts: Vec<TestPacket> = (0..32)
            .map(|i| TestPacket::new(&frame(0xc612_0000 + i, 7000, if round == 0 { SYN } else { ACK })))
            .collect();
        let info = allocation_counter::measure(|| {
            w.process_burst(&st, &mut pkts, 0, round, &mut verdicts, &NoPrefetch);
        });
        allocations += info.count_total;
        assert!(verdicts.iter().all(|v| *v == Verdict::Forward { port: 0 }));
    }
    assert_eq!(w.counters[Counter::Forwarded], 200 * 32);
    assert_eq!(allocations, 0, "allocations on the packet path");
}

fn shared() -> &'static (l4lb::control::config::Validated, l4lb::balancer::state::ForwardingState) {
    static S: std::sync::OnceLock<(
        l4lb::control::config::Validated,
        l4lb::balancer::state::ForwardingState,
    )> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let cfg = config(1024, &[(11, 1)]);
        let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
        (cfg, st)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_input_makes_the_pipeline_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (cfg, st) = shared();
        let mut w = Worker::new(worker_config(cfg));
        let mut p = TestPacket::new(&bytes);
        let _ = w.process(st, &mut p, 0, 5);
    }

    #[test]
    fn mutated_valid_frames_never_panic(pos in 0usize..54, val in any::<u8>(), cut in 0usize..54, ipv6 in any::<bool>()) {
        let (cfg, st) = shared();
        let mut w = Worker::new(worker_config(cfg));
        let mut f = frame(0xc612_0005, 4000, SYN);
        if ipv6 { f[12] = 0x86; f[13] = 0xdd; }
        f[pos] = val;
        f.truncate(54 - cut);
        let mut p = TestPacket::new(&f);
        let _ = w.process(st, &mut p, 0, 5);
    }
}

/// A service on a port's own address: traffic arriving on that port is
/// l4lb's own (to the kernel), traffic arriving on another port is balanced.
/// Both fast paths (IPv4, IPv6) remember services per ingress port, so a
/// decision cached for one port never answers for the other.
#[test]
fn a_ports_own_address_is_never_balanced_on_that_port() {
    use l4lb::balancer::flowtable::Timeouts;
    use l4lb::balancer::state::{Backend, Forwarding, ForwardingState, PortIdentity, Scheduler, ServiceSpec};
    use l4lb::dataplane::testframes;
    use std::net::{IpAddr, Ipv6Addr};
    let vip4 = Ipv4Addr::new(198, 18, 100, 1);
    let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    let mac = [2, 0, 0, 0, 0, 1];
    let ports = vec![
        PortIdentity { mac, ipv4: Some(vip4), ipv6: Some(vip6), mtu: 1500, ..Default::default() },
        PortIdentity {
            mac,
            ipv4: Some(Ipv4Addr::new(198, 18, 1, 1)),
            ipv6: None,
            mtu: 1500,
            ..Default::default()
        },
    ];
    let spec = |vip: IpAddr, backend: IpAddr, id: u32| ServiceSpec {
        name: format!("on-{vip}"),
        vip,
        proto: 6,
        port: 80,
        forwarding: Forwarding::L2,
        scheduler: Scheduler::Maglev,
        persistence_ms: 0,
        timeouts: Timeouts::default(),
        answer_arp: false,
        maglev_size: 251,
        backends: vec![Backend {
            id,
            addr: backend,
            weight: 1,
            draining: false,
            rtt_us: 0,
            next_hop: Some([2, 0, 0, 0, 1, 1]),
            port: 1,
        }],
        access: None,
        stats: l4lb::balancer::state::ServiceStats::new(1),
        quota: None,
    };
    let st = ForwardingState::build(
        1,
        ports,
        vec![
            spec(vip4.into(), Ipv4Addr::new(198, 18, 1, 11).into(), 0),
            spec(vip6.into(), "2001:db8:1::11".parse().unwrap(), 1),
        ],
    )
    .unwrap();
    let mut w = Worker::new(WorkerConfig { flow_capacity: 1024, ..WorkerConfig::default() });
    for v6 in [false, true] {
        for round in 0..2 {
            let mut p = TestPacket::new(&testframes::tcp(round, v6, 0x02));
            assert_eq!(
                w.process(&st, &mut p, 1, 0),
                Verdict::Forward { port: 1 },
                "v6 {v6}: balanced on port 1"
            );
            let mut p = TestPacket::new(&testframes::tcp(round, v6, 0x02));
            assert_eq!(w.process(&st, &mut p, 0, 0), Verdict::Local, "v6 {v6}: own address on port 0");
        }
    }
}

#[test]
fn flow_sync_reports_the_flows_the_tables_no_longer_pick_and_a_peer_keeps_them_on_their_backend() {
    use crossbeam::queue::ArrayQueue;
    use l4lb::balancer::synced::SyncedFlows;
    use std::sync::Arc;
    let cfg1 = config(4096, &[(11, 1), (12, 1), (13, 1)]);
    let st1 = build_state(&cfg1, 1, &simulated_facts(&cfg1)).unwrap();
    // Box A tracks 600 flows.
    let mut a = Worker::new(worker_config(&cfg1));
    let ring_a = Arc::new(ArrayQueue::new(4096));
    a.set_sync(SyncedFlows::new(1024).0, ring_a.clone());
    let flows: Vec<(u32, u16)> = (0..600).map(|i| (0xc612_0200 + i / 100, 10_000 + i as u16)).collect();
    let first: Vec<u8> =
        flows.iter().map(|&(s, p)| backend_of(&send(&mut a, &st1, &frame(s, p, SYN), 1000).1)).collect();
    // On the first state nothing needs sharing: every flow is the tables' choice.
    while a.sync_scan(&st1, 1000, 64) > 0 {}
    assert!(ring_a.is_empty(), "{} reported", ring_a.len());
    // A backend joins (ids by configuration order: the new one last).
    let cfg2 = config(4096, &[(11, 1), (12, 1), (13, 1), (14, 1)]);
    let st2 = build_state(&cfg2, 2, &simulated_facts(&cfg2)).unwrap();
    // What every box picks for these flows now: a worker that never saw them.
    let mut fresh = Worker::new(worker_config(&cfg2));
    let now_pick: Vec<u8> =
        flows.iter().map(|&(s, p)| backend_of(&send(&mut fresh, &st2, &frame(s, p, SYN), 2000).1)).collect();
    while a.sync_scan(&st2, 2000, 64) > 0 {}
    let mut reports = Vec::new();
    while let Some(r) = ring_a.pop() {
        reports.push(r);
    }
    let moved: Vec<usize> = (0..flows.len()).filter(|&i| first[i] != now_pick[i]).collect();
    eprintln!("{} of 600 moved", moved.len());
    assert!(!moved.is_empty() && moved.len() < flows.len() / 2, "{} of 600 moved", moved.len());
    let mut ports: Vec<u16> = reports.iter().map(|r| r.key.src_port).collect();
    ports.sort();
    let want: Vec<u16> = moved.iter().map(|&i| flows[i].1).collect();
    assert_eq!(ports, want, "exactly the flows whose backend is not the tables' choice");
    assert!(reports.iter().all(|r| r.expires_in_ms > 0));
    assert_eq!(a.counter_snapshot()[Counter::SyncReported], moved.len() as u64);

    // Box B gets A's reports: the flows the router moves to it keep their
    // backend; new flows (SYN) and the flows A did not report get the
    // tables' choice.
    let (peers_b, mut writer) = SyncedFlows::new(1024);
    for r in &reports {
        writer.put(&r.key, r.key.hash(), r.backend, 2000 + r.expires_in_ms as u64, 2000);
    }
    let mut b = Worker::new(worker_config(&cfg2));
    b.set_sync(peers_b, Arc::new(ArrayQueue::new(16)));
    for (i, &(s, p)) in flows.iter().enumerate() {
        let got = backend_of(&send(&mut b, &st2, &frame(s, p, ACK), 3000).1);
        assert_eq!(got, first[i], "flow {i} (moved: {})", first[i] != now_pick[i]);
    }
    assert_eq!(b.counter_snapshot()[Counter::SyncedFlows], moved.len() as u64);
    // A SYN never consults the peers' table.
    let (s, p) = flows[moved[0]];
    let mut c = Worker::new(worker_config(&cfg2));
    let (peers_c, mut wc) = SyncedFlows::new(16);
    let r = reports.iter().find(|r| r.key.src_port == p).unwrap();
    wc.put(&r.key, r.key.hash(), r.backend, 10_000, 0);
    c.set_sync(peers_c, Arc::new(ArrayQueue::new(16)));
    assert_eq!(backend_of(&send(&mut c, &st2, &frame(s, p, SYN), 3000).1), now_pick[moved[0]]);
}

#[test]
fn flow_sync_shares_a_flow_no_table_would_choose_from_its_first_packet() {
    use crossbeam::queue::ArrayQueue;
    use l4lb::balancer::synced::SyncedFlows;
    use std::sync::Arc;
    // Round robin: the backend depends on this box's counter, so no other
    // box would pick it from the key; Maglev (the test above) would.
    let cfg = config_with(4096, &[(11, 1), (12, 1), (13, 1)], "scheduler = \"round-robin\"");
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut a = Worker::new(worker_config(&cfg));
    let ring = Arc::new(ArrayQueue::new(4096));
    a.set_sync(SyncedFlows::new(1024).0, ring.clone());
    let mut chosen = Vec::new();
    for i in 0..30u16 {
        chosen.push(backend_of(&send(&mut a, &st, &frame(0xc612_0200, 20_000 + i, SYN), 1000).1));
        // Reported on its first packet, not at a later scan.
        assert_eq!(ring.len(), i as usize + 1, "flow {i} reported at once");
        // Its later packets report nothing more.
        send(&mut a, &st, &frame(0xc612_0200, 20_000 + i, ACK), 1001);
        assert_eq!(ring.len(), i as usize + 1);
    }
    let established = cfg.config.services[0].timeouts.tcp_established_s * 1000;
    for (i, r) in std::iter::from_fn(|| ring.pop()).enumerate() {
        assert_eq!(r.key.src_port, 20_000 + i as u16);
        let IpAddr::V4(b) = st.backends[st.slot_of(r.backend).unwrap()].addr else { panic!() };
        assert_eq!(b.octets()[3], chosen[i]);
        assert_eq!(r.expires_in_ms as u64, established, "shared for as long as it lives established");
    }
    assert_eq!(a.counter_snapshot()[Counter::SyncReported], 30);
}

/// BASE with `[access]` lists and each service's own.
fn config_access(global: &str, web: &str, web6: &str) -> l4lb::control::config::Validated {
    let neigh = "{ ip = \"198.18.0.11\", mac = \"02:00:00:00:01:11\" }, \
                 { ip = \"2001:db8::11\", mac = \"02:00:00:00:06:11\" }, \
                 { ip = \"2001:db8::12\", mac = \"02:00:00:00:06:12\" }";
    let text = BASE
        .replace("FLOWS", "4096")
        .replace("NEIGH", neigh)
        .replace("BACKENDS", "{ address = \"198.18.0.11\" }")
        .replace("[[ports]]", &format!("[access]\n{global}\n\n[[ports]]"))
        .replace("forwarding = \"ipip\"", &format!("forwarding = \"ipip\"\naccess = {{ {web} }}"))
        .replace("forwarding = \"gue\"", &format!("forwarding = \"gue\"\naccess = {{ {web6} }}"));
    Config::parse(&text, "test.toml").unwrap().validate("test.toml").unwrap()
}

/// A UDP datagram to [2001:db8:100::1]:53 from 2001:db8:1::`client`.
fn udp6(client: u32) -> Vec<u8> {
    let mut f = l4lb::dataplane::testframes::udp(client * 64_000, true);
    f[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&53u16.to_be_bytes());
    f
}

#[test]
fn access_lists_refuse_new_flows_per_service_and_globally_and_never_established_ones() {
    let cfg = config_access(
        "deny = [\"198.18.2.128/25\", \"2001:db8:1::ff00/120\"]",
        "allow = [\"198.18.0.0/22\"], deny = [\"198.18.1.0/24\"]",
        "deny = [\"2001:db8:1::/120\"]",
    );
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let denied = Verdict::Drop(DropReason::AccessDenied);
    let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
    for (src, want_ok) in [
        ("198.18.0.5", true),
        ("198.18.1.5", false),   // the service's deny
        ("198.18.2.5", true),    // in the allow list, under neither deny
        ("198.18.2.200", false), // the global deny
        ("198.18.4.1", false),   // outside the service's allow list
        ("198.18.3.255", true),
    ] {
        let (v, _) = send(&mut w, &st, &frame(ip(src), 4000, SYN), 100);
        assert_eq!(v == denied, !want_ok, "{src}: {v:?}");
    }
    for (client, want_ok) in [(0x12c, true), (0x05, false), (0xff05, false), (0x1_0000, true)] {
        let mut p = TestPacket::new(&udp6(client));
        let v = w.process(&st, &mut p, 0, 100);
        assert_eq!(v == denied, !want_ok, "v6 client {client:x}: {v:?}");
    }
    assert_eq!(w.counter_snapshot()[DropReason::AccessDenied], 5);
    assert_eq!((st.services[0].stats.denied(), st.services[1].stats.denied()), (3, 2));
    assert_eq!(st.services[0].access.as_ref().unwrap().prefixes, 4);

    // A new list that refuses 198.18.0.0/24: the established flow from
    // 198.18.0.5 goes on; a new one from that network is refused.
    let cfg2 = config_access("", "deny = [\"198.18.0.0/24\"]", "");
    let st2 = build_state(&cfg2, 2, &simulated_facts(&cfg2)).unwrap();
    assert!(st2.services[1].access.is_none(), "no list: nothing checked");
    assert!(matches!(
        send(&mut w, &st2, &frame(ip("198.18.0.5"), 4000, ACK), 200).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(send(&mut w, &st2, &frame(ip("198.18.0.6"), 4000, SYN), 200).0, denied);
    // The old list's refusals are the old list's: now 198.18.1.5 may.
    assert!(matches!(
        send(&mut w, &st2, &frame(ip("198.18.1.5"), 4000, SYN), 200).0,
        Verdict::Forward { .. }
    ));
}

/// An IPv4 fragment from 198.18.0.2 to 198.18.100.7 (UDP): `offset8` in
/// units of 8 bytes, `more` its MF flag; the first carries a UDP header to
/// `dport`.
fn fragment4(ident: u16, offset8: u16, more: bool, dport: u16) -> Vec<u8> {
    let mut payload = vec![0x5au8; 64];
    if offset8 == 0 {
        payload[0..2].copy_from_slice(&4000u16.to_be_bytes());
        payload[2..4].copy_from_slice(&dport.to_be_bytes());
        payload[4..6].copy_from_slice(&1000u16.to_be_bytes());
    }
    let mut f = vec![0u8; 34];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..8].copy_from_slice(&((more as u16) << 13 | offset8).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 2]);
    ip[16..20].copy_from_slice(&[198, 18, 100, 7]);
    let c = l4lb::net::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&payload);
    f
}

#[test]
fn every_fragment_of_a_datagram_goes_to_its_own_services_backend() {
    // Two UDP services on one VIP with disjoint backends: 53 on .11-.13,
    // 5300 on .21-.23.
    let mut text = BASE
        .replace("FLOWS", "4096")
        .replace(
            "NEIGH",
            &(11..=23)
                .map(|i| format!("{{ ip = \"198.18.0.{i}\", mac = \"02:00:00:00:01:{i:02x}\" }}"))
                .chain(["{ ip = \"2001:db8::11\", mac = \"02:00:00:00:06:11\" }".into()])
                .chain(["{ ip = \"2001:db8::12\", mac = \"02:00:00:00:06:12\" }".into()])
                .collect::<Vec<_>>()
                .join(", "),
        )
        .replace("BACKENDS", "{ address = \"198.18.0.11\" }");
    for (name, port, first) in [("dns", 53, 11), ("dns-alt", 5300, 21)] {
        let bs: Vec<String> =
            (first..first + 3).map(|i| format!("{{ address = \"198.18.0.{i}\" }}")).collect();
        text += &format!(
            "\n[[services]]\nname = \"{name}\"\nvip = \"198.18.100.7\"\nprotocol = \"udp\"\nport = {port}\n\
             forwarding = \"ipip\"\nbackends = [{}]\n",
            bs.join(", ")
        );
    }
    let cfg = Config::parse(&text, "test.toml").unwrap().validate("test.toml").unwrap();
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let to = |w: &mut Worker, f: Vec<u8>| {
        let (v, p) = send(w, &st, &f, 100);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        backend_of(&p)
    };
    for ident in 1..=40u16 {
        // Datagrams alternate between the services; each one's pieces
        // (the first, a middle, the last) reach one backend of its own.
        let (port, range) = if ident % 2 == 0 { (53, 11..=13) } else { (5300, 21..=23) };
        let first = to(&mut w, fragment4(ident, 0, true, port));
        let middle = to(&mut w, fragment4(ident, 8, true, 0));
        let last = to(&mut w, fragment4(ident, 16, false, 0));
        assert!(range.contains(&first), "datagram {ident} to {port} went to .{first}");
        assert_eq!((middle, last), (first, first), "datagram {ident}: pieces split");
    }
    assert_eq!(w.counter_snapshot()[Counter::FragmentsUnmatched], 0);
    // A later fragment whose first was never seen: the lowest-port service.
    let orphan = to(&mut w, fragment4(999, 8, true, 0));
    assert!((11..=13).contains(&orphan), ".{orphan}");
    assert_eq!(w.counter_snapshot()[Counter::FragmentsUnmatched], 1);
}

/// 198.18.x.y sources for flows that are new each.
fn source(i: u32) -> u32 {
    u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 0x100 + i
}

/// How many of `frames` (each a new flow at `now`) were forwarded, dropped
/// over the quota, or something else.
fn outcomes(
    w: &mut Worker,
    st: &l4lb::balancer::state::ForwardingState,
    frames: &[Vec<u8>],
    now: u64,
) -> (usize, usize) {
    let (mut fwd, mut over) = (0, 0);
    for f in frames {
        match send(w, st, f, now).0 {
            Verdict::Forward { .. } => fwd += 1,
            Verdict::Drop(DropReason::OverQuota) => over += 1,
            v => panic!("{v:?}"),
        }
    }
    (fwd, over)
}

#[test]
fn a_quota_limits_a_services_new_flows_per_second_and_never_its_tracked_flows() {
    let cfg =
        config_with(4096, &[(11, 1), (12, 1)], "quota = { new_flows_per_s = 100, new_flows_burst = 10 }");
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let syns: Vec<Vec<u8>> = (0..20).map(|i| frame(source(i), 4000, SYN)).collect();
    assert_eq!(outcomes(&mut w, &st, &syns, 1000), (10, 10), "the burst, then nothing");
    // 100 ms later: 10 more tokens. The first ten flows' packets pass
    // whatever is left: they are tracked.
    let acks: Vec<Vec<u8>> = (0..10).map(|i| frame(source(i), 4000, ACK)).collect();
    let more: Vec<Vec<u8>> = (100..120).map(|i| frame(source(i), 4000, SYN)).collect();
    assert_eq!(outcomes(&mut w, &st, &more, 1100), (10, 10));
    assert_eq!(outcomes(&mut w, &st, &acks, 1100), (10, 0));
    assert_eq!(w.counter_snapshot()[DropReason::OverQuota], 20);
    // Out of tokens, a segment without SYN of a connection this worker does
    // not track (begun before a restart, or on another box) still goes to
    // its Maglev backend, without an entry.
    let plain = config(4096, &[(11, 1), (12, 1)]);
    let st_plain = build_state(&plain, 1, &simulated_facts(&plain)).unwrap();
    let mut reference = Worker::new(worker_config(&plain));
    let tracked = w.flows().len();
    for i in 300..310 {
        let f = frame(source(i), 4000, ACK);
        let (v, p) = send(&mut w, &st, &f, 1100);
        let (v0, p0) = send(&mut reference, &st_plain, &f, 1100);
        assert_eq!((v, p.data()), (v0, p0.data()), "a mid-stream segment over the quota");
    }
    assert_eq!(w.flows().len(), tracked, "no entry for them");
    assert_eq!(w.counter_snapshot()[Counter::OverQuotaStateless], 10);
    assert_eq!(w.counter_snapshot()[Counter::NewFlows], 20);
    use l4lb::balancer::state::ServiceEvent;
    assert_eq!(st.services[0].stats.total(ServiceEvent::OverQuotaDropped), 20);
    // The other service has no quota.
    for client in 1..=50 {
        let mut p = TestPacket::new(&udp6(client));
        assert!(matches!(w.process(&st, &mut p, 0, 1100), Verdict::Forward { .. }));
    }
    // A reload that keeps the quota keeps the bucket (no free refill); one
    // that changes it starts a new one, full.
    let st2 = build_state(&cfg, 2, &simulated_facts(&cfg)).unwrap();
    let again: Vec<Vec<u8>> = (200..205).map(|i| frame(source(i), 4000, SYN)).collect();
    assert_eq!(outcomes(&mut w, &st2, &again, 1100), (0, 5));
    let cfg3 =
        config_with(4096, &[(11, 1), (12, 1)], "quota = { new_flows_per_s = 100, new_flows_burst = 3 }");
    let st3 = build_state(&cfg3, 3, &simulated_facts(&cfg3)).unwrap();
    assert_eq!(outcomes(&mut w, &st3, &again, 1100), (3, 2));
}

#[test]
fn a_quota_caps_a_services_share_of_the_table_until_its_flows_end() {
    let cfg = config_with(4096, &[(11, 1), (12, 1)], "quota = { flow_table_share = 0.25 }");
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let syns: Vec<Vec<u8>> = (0..1500).map(|i| frame(source(i), 4000, SYN)).collect();
    assert_eq!(outcomes(&mut w, &st, &syns, 1000), (1024, 476));
    assert_eq!(w.quota_usage(0), Some((1024, 1024)));
    assert_eq!(w.quota_usage(1), None, "the other service has no quota");
    // Ten of them end (RST): their entries close; once they expire and are
    // swept, ten new flows fit.
    for i in 0..10 {
        assert!(matches!(send(&mut w, &st, &frame(source(i), 4000, 0x04), 1000).0, Verdict::Forward { .. }));
    }
    let later: Vec<Vec<u8>> = (5000..5020).map(|i| frame(source(i), 4000, SYN)).collect();
    assert_eq!(outcomes(&mut w, &st, &later, 1000), (0, 20));
    let t = 1000 + 10_001; // past tcp_closing_s and tcp_syn_s (10 s each)
    w.sweep(t, w.flows().buckets());
    assert_eq!(w.quota_usage(0), Some((0, 1024)), "every SYN-only flow expired too");
    assert_eq!(outcomes(&mut w, &st, &later, t), (20, 0));
    assert_eq!(w.quota_usage(0), Some((20, 1024)));
}

#[test]
fn stateless_over_quota_sends_to_the_hashs_backend_without_an_entry() {
    let extra = "quota = { flow_table_share = 0.001, over_quota = \"stateless\" }";
    let cfg = config_with(4096, &[(11, 1), (12, 1), (13, 1)], extra);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let plain = config(4096, &[(11, 1), (12, 1), (13, 1)]);
    let st_plain = build_state(&plain, 1, &simulated_facts(&plain)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let mut reference = Worker::new(worker_config(&plain));
    for i in 0..40 {
        let f = frame(source(i), 4000, SYN);
        let (v, p) = send(&mut w, &st, &f, 1000);
        let (v0, p0) = send(&mut reference, &st_plain, &f, 1000);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!((v, p.data()), (v0, p0.data()), "flow {i}: the same bytes as without a quota");
    }
    // 0.001 of 4096: 4 entries; the other 36 flows went without one.
    assert_eq!(w.flows().len(), 4);
    assert_eq!(w.counter_snapshot()[Counter::OverQuotaStateless], 36);
    assert_eq!(w.counter_snapshot()[Counter::NewFlows], 4);
}

#[test]
fn a_flood_at_a_service_with_a_quota_evicts_no_other_services_flows() {
    // 600 UDP flows of the service without a quota, then an ACK flood from
    // random sources at the other: each flood packet is a new flow that
    // would be tracked as established.
    let run = |extra: &str| -> (u64, u64) {
        let cfg = config_with(4096, &[(11, 1), (12, 1)], extra);
        let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
        let mut w = Worker::new(worker_config(&cfg));
        let victims: Vec<Vec<u8>> = (1..=600).map(udp6).collect();
        for f in &victims {
            let mut p = TestPacket::new(f);
            assert!(matches!(w.process(&st, &mut p, 0, 1000), Verdict::Forward { .. }));
        }
        let mut x = 0x9e37_79b9u32;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let _ =
                send(&mut w, &st, &frame(0xc612_0000 | (x & 0xffff), (i % 60_000) as u16 + 1024, ACK), 1001);
        }
        let before = w.counter_snapshot()[Counter::NewFlows];
        for f in &victims {
            let mut p = TestPacket::new(f);
            assert!(matches!(w.process(&st, &mut p, 0, 1002), Verdict::Forward { .. }));
        }
        let c = w.counter_snapshot();
        (c[Counter::NewFlows] - before, c[Counter::EvictedUnconfirmed] + c[Counter::EvictedEstablished])
    };
    let (lost, evicted) = run("quota = { flow_table_share = 0.5 }");
    assert_eq!((lost, evicted), (0, 0), "with the quota every victim flow is still tracked");
    let (lost, evicted) = run("");
    eprintln!("without a quota: {lost} of 600 flows lost, {evicted} evictions");
    assert!(
        lost > 100 && evicted > 10_000,
        "without it the flood evicts them: {lost} lost, {evicted} evicted"
    );
}

#[test]
fn a_retransmitted_syn_is_counted_once_per_flow_for_its_backend() {
    let cfg = config(4096, &[(11, 1), (12, 1), (13, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let syn = frame(source(1), 4000, SYN);
    let (_, first) = send(&mut w, &st, &syn, 1000);
    for t in [2000, 4000, 8000] {
        let (v, again) = send(&mut w, &st, &syn, t);
        assert!(matches!(v, Verdict::Forward { .. }));
        assert_eq!(backend_of(&again), backend_of(&first), "a retransmitted SYN keeps its backend");
    }
    // Another flow's SYN answered at once: not counted.
    send(&mut w, &st, &frame(source(2), 4000, SYN), 1000);
    send(&mut w, &st, &frame(source(2), 4000, ACK), 1001);
    assert_eq!(w.counter_snapshot()[Counter::SynRetried], 1);
    let id =
        st.backends.iter().find(|b| b.addr == IpAddr::from([198, 18, 0, backend_of(&first)])).unwrap().id;
    assert_eq!(w.backend_counters().syn_retried(id), 1);
    assert!(w.backend_counters().new_flows(id) >= 1);
    // The handshake completes after all: the flow is established, not
    // counted again.
    send(&mut w, &st, &frame(source(1), 4000, ACK), 8001);
    send(&mut w, &st, &syn, 8002);
    assert_eq!(w.counter_snapshot()[Counter::SynRetried], 1);
}

#[test]
fn a_handshake_is_timed_from_the_syn_to_the_clients_first_ack() {
    let cfg = config(4096, &[(11, 1), (12, 1), (13, 1)]);
    let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut w = Worker::new(worker_config(&cfg));
    let id_of = |p: &TestPacket| {
        st.backends.iter().find(|b| b.addr == IpAddr::from([198, 18, 0, backend_of(p)])).unwrap().id
    };
    // 3 ms, then 30 ms (its first ACK only), then a flow whose SYN was
    // retried (not timed: its SYN's time is not known).
    let (_, p1) = send(&mut w, &st, &frame(source(1), 4000, SYN), 1000);
    send(&mut w, &st, &frame(source(1), 4000, ACK), 1003);
    send(&mut w, &st, &frame(source(1), 4000, ACK), 1500);
    let (_, p2) = send(&mut w, &st, &frame(source(2), 4000, SYN), 2000);
    send(&mut w, &st, &frame(source(2), 4000, ACK), 2030);
    send(&mut w, &st, &frame(source(3), 4000, SYN), 3000);
    send(&mut w, &st, &frame(source(3), 4000, SYN), 4000);
    send(&mut w, &st, &frame(source(3), 4000, ACK), 4001);
    let c = w.backend_counters();
    let total: u64 = st.backends.iter().map(|b| c.handshakes(b.id).count()).sum();
    assert_eq!(total, 2, "two handshakes timed");
    let (h1, h2) = (c.handshakes(id_of(&p1)), c.handshakes(id_of(&p2)));
    if id_of(&p1) != id_of(&p2) {
        assert_eq!((h1.count(), h1.sum_ms, h2.count(), h2.sum_ms), (1, 3, 1, 30));
        assert_eq!(h1.buckets[2], 1, "3 ms: at most 5 ms");
        assert_eq!(h2.buckets[5], 1, "30 ms: at most 50 ms");
    } else {
        assert_eq!((h1.count(), h1.sum_ms), (2, 33));
    }
}
