//! Port, queue, mbuf and lcore tests on DPDK virtual devices. Each test is its
//! own process under cargo-nextest (EAL initialises once per process).
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use l4lb::dpdk::{lcore, Burst, Eal, Mempool, Port, PortConfig, BURST_MAX, TX_BUFFER_CAPACITY};

fn seq_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[18], frame[19]])
}

#[test]
fn net_null_rx_generates_and_tx_consumes_on_two_queues() {
    let eal = Eal::init(common::eal_args(&["--no-pci", "--vdev", "net_null0,size=128"])).unwrap();
    let pool = Mempool::new(&eal, "null", 4095, 0, -1).unwrap();
    let id = Port::id_by_name(&eal, "net_null0").unwrap();
    let cfg = PortConfig { rx_queues: 2, tx_queues: 2, ..PortConfig::default() };
    let mut port = Port::configure(&eal, id, &cfg, &pool).unwrap();
    assert_eq!(port.info().driver, "net_null");
    assert_eq!((port.rx_queue_count(), port.tx_queue_count()), (2, 2));
    port.start().unwrap();
    assert!(port.link().unwrap().up);
    {
        let mut rx1 = port.rx_queue(1).unwrap();
        assert!(port.rx_queue(1).is_err(), "a queue is handed out once");
        assert!(port.rx_queue(2).is_err(), "no such queue");
        let mut tx0 = port.tx_queue(0, 0).unwrap();
        let mut burst = Burst::new();
        let mut received = 0;
        for _ in 0..10 {
            let n = rx1.burst(&mut burst);
            assert!(burst.as_slice().iter().all(|m| m.len() == 128));
            received += n;
            tx0.push_burst(&mut burst);
            assert!(burst.is_empty());
        }
        assert_eq!(received, 10 * BURST_MAX);
        tx0.flush();
        assert_eq!(tx0.stats().sent, received as u64);
        assert_eq!(tx0.buffered(), 0);
        let stats = port.stats().unwrap();
        assert_eq!(stats.rx_packets, received as u64);
        assert_eq!(stats.tx_packets, received as u64);
        let xstats = port.xstats().unwrap();
        let rx_good = xstats.iter().find(|(n, _)| n == "rx_good_packets").expect("rx_good_packets xstat");
        assert_eq!(rx_good.1, received as u64);
    }
    assert_eq!(pool.in_use(), 0, "every mbuf is back in the pool");
    port.stop().unwrap();
}

#[test]
fn net_pcap_frames_in_are_the_same_bytes_out() {
    let dir = std::env::temp_dir().join(format!("l4lb-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));
    let frames: Vec<Vec<u8>> = (0..300u16).map(|i| common::udp_frame(i, (i as usize * 7) % 1400)).collect();
    l4lb::pcap::write_file(&inp, frames.iter().map(|f| &f[..])).unwrap();
    let vdev = format!("net_pcap0,rx_pcap={},tx_pcap={}", inp.display(), out.display());
    let eal = Eal::init(common::eal_args(&["--no-pci", "--vdev", &vdev])).unwrap();
    let pool = Mempool::new(&eal, "pcap", 2047, 0, -1).unwrap();
    let mut port =
        Port::configure(&eal, Port::id_by_name(&eal, "net_pcap0").unwrap(), &PortConfig::default(), &pool)
            .unwrap();
    port.start().unwrap();
    {
        let mut rx = port.rx_queue(0).unwrap();
        let mut tx = port.tx_queue(0, 0).unwrap();
        let mut burst = Burst::new();
        let mut seen = 0usize;
        assert!(common::wait_for(Duration::from_secs(10), || {
            seen += rx.burst(&mut burst);
            tx.push_burst(&mut burst);
            seen >= frames.len()
        }));
        assert_eq!(seen, frames.len());
        tx.flush();
        assert_eq!(tx.stats().sent, frames.len() as u64);
    }
    drop(port); // closing the port flushes the pcap writer
    let written = l4lb::pcap::read_file(&out).unwrap();
    assert_eq!(written.len(), frames.len());
    for (w, f) in written.iter().zip(&frames) {
        assert_eq!(&w.data, f);
    }
    assert_eq!(pool.in_use(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tx_buffer_keeps_what_the_device_refuses_and_leaks_nothing() {
    let eal = Eal::init(common::eal_args(&["--no-pci", "--vdev", "net_ring0"])).unwrap();
    let pool = Mempool::new(&eal, "ring", 8191, 0, -1).unwrap();
    let mut port =
        Port::configure(&eal, Port::id_by_name(&eal, "net_ring0").unwrap(), &PortConfig::default(), &pool)
            .unwrap();
    port.start().unwrap();
    {
        // net_ring loops a port's TX ring back to its RX; nobody receives
        // until we say so, so the ring fills and the device refuses packets.
        let mut rx = port.rx_queue(0).unwrap();
        let mut tx = port.tx_queue(0, 0).unwrap();
        let total: u16 = 1500;
        for i in 0..total {
            let mut m = pool.alloc().unwrap();
            assert!(m.set_data(&common::udp_frame(i, 20)));
            tx.push(m);
        }
        let sent = tx.stats().sent;
        assert!(sent > 0 && sent < total as u64, "ring took {sent} of {total}");
        assert_eq!(tx.buffered() as u64, total as u64 - sent, "the rest is kept, not dropped");
        assert!(tx.stats().partial_bursts > 0);
        assert_eq!(tx.stats().dropped_full, 0);

        // Empty the ring, then let the buffer drain: order is kept.
        let mut next = 0u16;
        let receive_all = |rx: &mut l4lb::dpdk::RxQueue<'_>, next: &mut u16| {
            let mut burst = Burst::new();
            while rx.burst(&mut burst) > 0 {
                for m in burst.drain() {
                    assert_eq!(seq_of(m.data()), *next);
                    assert_eq!(m.data(), &common::udp_frame(*next, 20)[..]);
                    *next += 1;
                }
            }
        };
        receive_all(&mut rx, &mut next);
        assert_eq!(next as u64, sent);
        tx.drain_if_due(1); // drain period 0: due at once
        assert_eq!(tx.buffered(), 0);
        receive_all(&mut rx, &mut next);
        assert_eq!(next, total);

        // Fill the ring and the buffer: further packets are counted drops.
        let mut pushed = 0u64;
        while tx.buffered() < TX_BUFFER_CAPACITY {
            tx.push(pool.alloc().unwrap());
            pushed += 1;
        }
        for _ in 0..10 {
            tx.push(pool.alloc().unwrap());
        }
        assert_eq!(tx.stats().dropped_full, 10);
        assert!(pushed > TX_BUFFER_CAPACITY as u64);
        // Dropping the queue frees what is still buffered; then empty the ring.
        drop(tx);
        let mut burst = Burst::new();
        while rx.burst(&mut burst) > 0 {
            burst.clear();
        }
    }
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    port.stop().unwrap();
}

#[test]
fn mbuf_prepend_trim_append() {
    let eal = Eal::init(common::eal_args(&["--no-pci"])).unwrap();
    let pool = Mempool::new(&eal, "mbuf", 63, 0, -1).unwrap();
    let mut m = pool.alloc().unwrap();
    let payload: Vec<u8> = (0..100u8).collect();
    assert!(m.set_data(&payload));
    let (head, tail) = (m.headroom(), m.tailroom());
    assert_eq!(head, dpdk_sys::consts::pktmbuf_headroom() as usize);

    // Prepend an outer header: the new bytes come first, the rest is intact.
    let data = m.prepend(20).expect("headroom for 20 bytes");
    data[..20].fill(0xee);
    assert_eq!(m.len(), 120);
    assert_eq!(&m.data()[..20], &[0xee; 20]);
    assert_eq!(&m.data()[20..], &payload[..]);
    assert_eq!(m.headroom(), head - 20);
    // Too much: refused, unchanged.
    assert!(m.prepend(head).is_none());
    assert_eq!(m.len(), 120);

    assert_eq!(m.pkt_len(), 120);
    assert!(m.trim_front(20));
    assert_eq!(m.data(), &payload[..]);
    assert_eq!((m.pkt_len(), m.headroom()), (100, head));
    assert!(!m.trim_front(101));
    assert_eq!(m.data(), &payload[..]);
    assert!(m.trim_back(10));
    assert_eq!(m.data(), &payload[..90]);
    assert_eq!((m.pkt_len(), m.tailroom()), (90, tail + 10));
    assert!(!m.trim_back(91));
    assert_eq!((m.data(), m.pkt_len()), (&payload[..90], 90));
    // Everything, then nothing more.
    let mut e = pool.alloc().unwrap();
    assert!(e.set_data(&payload[..8]));
    assert!(e.trim_back(8) && e.is_empty() && e.pkt_len() == 0);
    assert!(!e.trim_back(1) && !e.trim_front(1));
    drop(e);

    let t = m.append(4).expect("tailroom");
    t.copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(&m.data()[90..], &[1, 2, 3, 4]);
    assert_eq!(m.tailroom(), tail + 10 - 4);
    assert!(m.append(m.tailroom() + 1).is_none());
    assert_eq!(pool.in_use(), 1);
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn lcore_scope_runs_borrowing_jobs_on_workers_and_reports_panics() {
    let map = common::lcore_map(3);
    let mut args = common::eal_args(&["--no-pci"]);
    let i = args.iter().position(|a| a == "--lcores").unwrap();
    args[i + 1] = map;
    let eal = Eal::init(args).unwrap();
    let workers = eal.worker_lcores();
    assert_eq!(workers.iter().map(|l| l.id()).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(eal.main_lcore().id(), 0);
    let counter = AtomicU64::new(0);
    let (ret, joined) = lcore::scope(&eal, |s| {
        s.launch(workers[0], || {
            counter.fetch_add(5, Ordering::SeqCst);
            assert_eq!(l4lb::dpdk::Lcore::current().map(|l| l.id()), Some(1));
            7
        })
        .unwrap();
        s.launch(workers[1], || panic!("worker fails on purpose")).unwrap();
        "done"
    });
    assert_eq!(ret, "done");
    assert_eq!(counter.load(Ordering::SeqCst), 5);
    assert_eq!(joined.len(), 2);
    assert_eq!(joined[0].1.as_ref().ok(), Some(&7));
    let err = joined[1].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("lcore 2") && err.contains("worker fails on purpose"), "{err}");
}

#[test]
fn eal_cleanup_leaves_no_hugepage_or_runtime_files() {
    assert!(common::hugepages_free(), "needs free hugepages: scripts/setup-hugepages.sh reserves them");
    let prefix = format!("l4lbt{}", std::process::id());
    let lcores = common::lcore_map(1);
    let eal = Eal::init(["--lcores", &lcores, "--file-prefix", &prefix, "--no-pci", "--vdev", "net_null0"])
        .unwrap();
    assert!(eal.has_hugepages());
    let pool = Mempool::new(&eal, "files", 4095, 0, -1).unwrap();
    let ours = |dir: &str| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
            .unwrap_or(0)
    };
    assert!(ours("/dev/hugepages") > 0, "EAL maps its hugepages as files named after the prefix");
    assert!(std::path::Path::new("/var/run/dpdk").join(&prefix).exists());
    drop(pool);
    drop(eal);
    assert_eq!(ours("/dev/hugepages"), 0, "hugepage files left behind");
    assert!(!std::path::Path::new("/var/run/dpdk").join(&prefix).exists(), "runtime directory left behind");
}

/// Without hugepages (`--no-huge`, the demo's setting) EAL still writes its
/// runtime config files; they go too.
#[test]
fn no_huge_runtime_files_are_removed_too() {
    let prefix = format!("l4lbn{}", std::process::id());
    let lcores = common::lcore_map(1);
    let eal = Eal::init([
        "--lcores",
        &lcores,
        "--file-prefix",
        &prefix,
        "--no-huge",
        "-m",
        "64",
        "--no-pci",
        "--vdev",
        "net_null0",
    ])
    .unwrap();
    assert!(!eal.has_hugepages());
    let run = std::path::Path::new("/var/run/dpdk").join(&prefix);
    assert!(run.exists(), "EAL keeps its config under /var/run/dpdk/PREFIX");
    assert!(
        eal.enable_packet_capture(std::time::Duration::ZERO).is_err(),
        "dumpcap cannot attach to memory without hugepages"
    );
    drop(eal);
    assert!(!run.exists(), "runtime directory left behind");
}
