//! dpdk-sys smoke test: EAL up on a net_ring vdev, a mempool, one packet sent
//! and received back, bytes compared.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use l4lb::dpdk::{Burst, Eal, Mempool, Port, PortConfig};

#[test]
fn one_packet_round_trips_through_net_ring() {
    let eal = Eal::init(common::eal_args(&["--no-pci", "--vdev", "net_ring0"])).expect("EAL init");
    assert_eq!(eal.port_count(), 1);
    let pool = Mempool::new(&eal, "smoke", 1023, 0, -1).expect("mempool");
    let id = Port::id_by_name(&eal, "net_ring0").expect("port by name");
    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).expect("configure");
    port.start().expect("start");
    {
        let mut rx = port.rx_queue(0).unwrap();
        let mut tx = port.tx_queue(0, 0).unwrap();
        let frame = common::udp_frame(7, 100);
        let mut m = pool.alloc().expect("alloc");
        assert!(m.set_data(&frame));
        assert_eq!(pool.in_use(), 1);
        tx.push(m);
        assert_eq!(tx.flush(), 1);
        let mut burst = Burst::new();
        assert_eq!(rx.burst(&mut burst), 1);
        assert_eq!(burst.as_slice()[0].data(), &frame[..]);
        burst.clear();
        assert_eq!(pool.in_use(), 0);
        let stats = port.stats().unwrap();
        assert_eq!(stats.tx_packets, 1);
        assert_eq!(stats.rx_packets, 1);
    }
    port.stop().unwrap();
}

#[test]
fn second_eal_init_in_one_process_is_an_error() {
    let _eal = Eal::init(common::eal_args(&["--no-pci", "--vdev", "net_null0"])).expect("EAL init");
    let err = Eal::init(common::eal_args(&["--no-pci"])).err().expect("second init fails");
    assert!(err.reason.contains("already initialised"), "{err}");
}
