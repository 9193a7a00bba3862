//! The forwarding state's tests: schedulers, Maglev, masks, the build.

use super::*;
use crate::balancer::flow::mapped;

fn backend(id: u32, last: u8, weight: u32) -> Backend {
    Backend {
        id,
        addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
        weight,
        draining: false,
        rtt_us: 100,
        next_hop: Some([2, 0, 0, 0, 0, last]),
        port: 0,
    }
}

pub(crate) fn state(sched: Scheduler, backends: Vec<Backend>) -> ForwardingState {
    ForwardingState::build(
        1,
        vec![PortIdentity {
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: None,
            mtu: 1500,
            ..Default::default()
        }],
        vec![ServiceSpec {
            name: "web".into(),
            vip: "198.18.100.1".parse().unwrap(),
            proto: 6,
            port: 80,
            forwarding: Forwarding::L2,
            scheduler: sched,
            persistence_ms: 0,
            timeouts: Timeouts::default(),
            answer_arp: false,
            maglev_size: 4099,
            backends,
            access: None,
            stats: ServiceStats::new(1),
            quota: None,
        }],
    )
    .unwrap()
}

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)),
        "198.18.100.1".parse().unwrap(),
        6,
        1000 + (i % 50000) as u16,
        80,
    )
}

#[test]
fn service_lookup_exact_then_all_ports() {
    let s = state(Scheduler::Maglev, vec![backend(0, 11, 1)]);
    let vip = mapped(Ipv4Addr::new(198, 18, 100, 1));
    assert_eq!(s.find_service(&vip, 6, 80), Some(0));
    assert_eq!(s.find_service(&vip, 6, 81), None);
    assert_eq!(s.find_service(&vip, 17, 80), None);
    assert!(s.is_vip(&vip).is_some());
    assert!(s.is_vip(&mapped(Ipv4Addr::new(198, 18, 100, 2))).is_none());
    assert_eq!(s.slot_of(0), Some(0));
    assert_eq!(s.slot_of(5), None);
}

fn spread(s: &ForwardingState, flows: u32) -> Vec<u32> {
    let svc = &s.services[0];
    let mut active = vec![0u32; s.id_space()];
    let mut sched = SchedState { rr: 0, wrr: vec![0; svc.backends.len()] };
    for i in 0..flows {
        let k = key(i);
        let slot = svc.pick(s, &k, k.hash(), &active, &mut sched).unwrap();
        active[s.backends[slot].id as usize] += 1;
    }
    active
}

/// The flow hash spreads the shapes real traffic has over a Maglev table:
/// one client's source ports (a NAT, a load generator), and IPv6 clients
/// differing only in their interface identifiers.
#[test]
fn the_flow_hash_spreads_ports_of_one_client_and_v6_clients_evenly() {
    let st = state(Scheduler::Maglev, vec![backend(0, 11, 1), backend(1, 12, 1), backend(2, 13, 1)]);
    let svc = &st.services[0];
    let vip: IpAddr = "198.18.100.1".parse().unwrap();
    let one_client = (0..30_000u32)
        .map(|i| FlowKey::new("198.18.0.2".parse().unwrap(), vip, 6, 1024 + i as u16, 80))
        .collect::<Vec<_>>();
    let v6_clients = (0..30_000u64)
        .map(|i| {
            let src = Ipv6Addr::from((0x2001_0db8_0000_0001u128 << 64) | i as u128);
            FlowKey::new(IpAddr::V6(src), "2001:db8:100::1".parse().unwrap(), 6, 40000, 443)
        })
        .collect::<Vec<_>>();
    for keys in [one_client, v6_clients] {
        let mut got = [0u32; 3];
        for k in &keys {
            let mut sched = SchedState::default();
            got[svc.pick(&st, k, k.hash(), &[], &mut sched).unwrap()] += 1;
        }
        // 10,000 expected each; binomial sd ~82, so 5% is many sds.
        assert!(got.iter().all(|&n| (9_500..=10_500).contains(&n)), "{got:?}");
    }
}

#[test]
fn round_robin_and_weighted() {
    let bs = || vec![backend(0, 11, 1), backend(1, 12, 2), backend(2, 13, 3)];
    assert_eq!(spread(&state(Scheduler::RoundRobin, bs()), 300), vec![100, 100, 100]);
    assert_eq!(spread(&state(Scheduler::WeightedRoundRobin, bs()), 600), vec![100, 200, 300]);
    assert_eq!(spread(&state(Scheduler::LeastConnections, bs()), 300), vec![100, 100, 100]);
    assert_eq!(spread(&state(Scheduler::WeightedLeastConnections, bs()), 600), vec![100, 200, 300]);
    let m = spread(&state(Scheduler::Maglev, bs()), 60_000);
    for (got, w) in m.iter().zip([1.0, 2.0, 3.0]) {
        let want = 60_000.0 * w / 6.0;
        assert!((*got as f64 - want).abs() < want * 0.05, "{m:?}");
    }
}

#[test]
fn least_response_time_prefers_fast_backends() {
    let mut bs = vec![backend(0, 11, 1), backend(1, 12, 1)];
    bs[0].rtt_us = 100;
    bs[1].rtt_us = 300;
    // Costs equalise when active0 + 1 = 3 (active1 + 1): 3:1 split.
    assert_eq!(spread(&state(Scheduler::LeastResponseTime, bs), 400), vec![300, 100]);
}

#[test]
fn an_unmeasured_backend_counts_as_the_median_of_the_measured() {
    // A new backend, no check yet, beside ones at 100, 300 and 500 µs: it
    // takes new flows like the 300 µs one, not all of them (as 1 µs did).
    let mut bs: Vec<Backend> = (0..4).map(|i| backend(i, 11 + i as u8, 1)).collect();
    for (b, rtt) in bs.iter_mut().zip([100, 300, 500, 0]) {
        b.rtt_us = rtt;
    }
    let st = state(Scheduler::LeastResponseTime, bs);
    assert_eq!(st.backends[3].rtt_us, 300);
    let got = spread(&st, 2300);
    assert!(got[3].abs_diff(got[1]) <= 1, "{got:?}");
    assert!(got[3] < got[0], "{got:?}");
    // None measured: all equal.
    let unmeasured = |i: u32| Backend { rtt_us: 0, ..backend(i, 11 + i as u8, 1) };
    let st = state(Scheduler::LeastResponseTime, (0..3).map(unmeasured).collect());
    assert!(st.backends.iter().all(|b| b.rtt_us == 0));
    assert_eq!(spread(&st, 300), vec![100, 100, 100]);
}

#[test]
fn draining_and_zero_weight_get_no_new_flows() {
    let mut bs = vec![backend(0, 11, 1), backend(1, 12, 1), backend(2, 13, 0)];
    bs[1].draining = true;
    for sched in [
        Scheduler::Maglev,
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnections,
        Scheduler::WeightedLeastConnections,
        Scheduler::LeastResponseTime,
        Scheduler::SourceIp { v4_prefix: 32, v6_prefix: 128 },
    ] {
        assert_eq!(spread(&state(sched, bs.clone()), 100), vec![100, 0, 0], "{sched:?}");
    }
}

#[test]
fn source_ip_is_sticky_per_prefix() {
    let s = state(
        Scheduler::SourceIp { v4_prefix: 24, v6_prefix: 64 },
        vec![backend(0, 11, 1), backend(1, 12, 1), backend(2, 13, 1)],
    );
    let svc = &s.services[0];
    let mut sched = SchedState::default();
    let pick = |src: &str, port: u16, sched: &mut SchedState| {
        let k = FlowKey::new(src.parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, port, 80);
        svc.pick(&s, &k, k.hash(), &[], sched).unwrap()
    };
    let first = pick("198.18.5.7", 1000, &mut sched);
    for port in 1001..1100 {
        assert_eq!(pick("198.18.5.7", port, &mut sched), first);
        assert_eq!(pick("198.18.5.200", port, &mut sched), first, "same /24");
    }
    let k = FlowKey::new("2001:db8:1:2:3:4:5:6".parse().unwrap(), "2001:db8::1".parse().unwrap(), 6, 1, 2);
    let m = masked_source(&k, 24, 64);
    assert_eq!(m, "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap().octets());
    let k4 = FlowKey::new("198.18.5.7".parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, 1, 2);
    assert_eq!(masked_source(&k4, 20, 0), mapped(Ipv4Addr::new(198, 18, 0, 0)));
}

/// A TCP port-80 Maglev service in L2 mode.
fn l2_spec(name: &str, vip: IpAddr, maglev_size: u32, backends: Vec<Backend>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        vip,
        proto: crate::net::proto::TCP,
        port: 80,
        forwarding: Forwarding::L2,
        scheduler: Scheduler::Maglev,
        persistence_ms: 0,
        timeouts: Timeouts::default(),
        answer_arp: false,
        maglev_size,
        backends,
        access: None,
        stats: ServiceStats::new(1),
        quota: None,
    }
}

#[test]
fn duplicate_services_and_ids_are_refused() {
    let s = state(Scheduler::Maglev, vec![backend(0, 11, 1)]);
    let svc = l2_spec("x", s.services[0].vip, 101, vec![backend(0, 11, 1)]);
    let mut other = svc.clone();
    other.port = 81;
    assert_eq!(
        ForwardingState::build(1, s.ports.clone(), vec![svc.clone(), svc.clone()]).unwrap_err(),
        BuildError::Duplicate("x".into())
    );
    assert_eq!(
        ForwardingState::build(1, s.ports.clone(), vec![svc, other]).unwrap_err(),
        BuildError::DuplicateBackendId(0)
    );
}

#[test]
fn a_rebuild_shares_the_maglev_tables_of_services_that_did_not_change() {
    let port = PortIdentity {
        mac: [2, 0, 0, 0, 0, 1],
        ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
        mtu: 1500,
        ..Default::default()
    };
    let spec = |i: u8, backends: Vec<Backend>| {
        l2_spec(&format!("s{i}"), IpAddr::V4(Ipv4Addr::new(198, 18, 100, i)), 251, backends)
    };
    // Ids `base + 1..=3` (ids are per service and backend).
    let three = |base: u32, w: u32, draining: bool| {
        vec![
            backend(base + 1, 11, 1),
            Backend { draining, ..backend(base + 2, 12, w) },
            backend(base + 3, 13, 1),
        ]
    };
    let build = |prev: Option<&ForwardingState>, w: u32, draining: bool| {
        let specs = vec![spec(1, three(0, 1, false)), spec(2, three(10, w, draining))];
        ForwardingState::build_reusing(2, vec![port.clone()], specs, prev).unwrap()
    };
    let a = build(None, 1, false);
    let same = |x: &ForwardingState, y: &ForwardingState, s: usize| {
        Arc::ptr_eq(&x.services[s].maglev, &y.services[s].maglev)
    };
    // Nothing changed: both tables shared.
    let b = build(Some(&a), 1, false);
    assert!(same(&a, &b, 0) && same(&a, &b, 1));
    // A weight of the second service: its table is new (and what a fresh
    // build makes), the first's shared.
    for (w, draining) in [(3, false), (1, true)] {
        let c = build(Some(&a), w, draining);
        assert!(same(&a, &c, 0), "w={w} draining={draining}");
        assert!(!same(&a, &c, 1), "w={w} draining={draining}");
        assert_eq!(c.services[1].maglev, build(None, w, draining).services[1].maglev);
    }
    // Another table size or VIP is another table.
    let mut specs = vec![spec(1, three(0, 1, false)), spec(2, three(10, 1, false))];
    specs[0].maglev_size = 509;
    specs[1].vip = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 9));
    let d = ForwardingState::build_reusing(3, vec![port.clone()], specs, Some(&a)).unwrap();
    assert!(!same(&a, &d, 0) && !same(&a, &d, 1));
}
