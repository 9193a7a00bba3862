use super::*;
use crate::control::config::Config;

#[test]
fn lag_quantiles_are_bucket_bounds() {
    let lag = Lag::default();
    let counts = |l: &Lag| l.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect::<Vec<_>>();
    assert_eq!(lag.quantile(&counts(&lag), 0.5), None);
    for ms in [0, 1, 3, 3, 4, 40, 90, 90, 150, 9000] {
        lag.record(ms);
    }
    let c = counts(&lag);
    assert_eq!(c.iter().sum::<u64>(), 10);
    assert_eq!(lag.quantile(&c, 0.5), Some(5), "half are at most 5 ms");
    assert_eq!(lag.quantile(&c, 0.9), Some(200));
    assert_eq!(lag.quantile(&c, 0.99), Some(u64::MAX), "beyond the last bound");
    assert_eq!(lag.max_ms.load(Ordering::Relaxed), 9000);
}

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
backends = [{ address = "198.18.0.11" }, { address = "198.18.0.12" }]
"#;

/// One box's flow sync on a loopback address (127.0.0.0/8 is all local).
struct Box1 {
    sync: FlowSync,
    ring: Arc<ArrayQueue<AtRisk>>,
    table: Arc<SyncedFlows>,
}

fn start(listen: &str, peer: &str, port: u16, queue: usize) -> Box1 {
    let cfg = SyncSection {
        enabled: true,
        peers: vec![peer.parse().unwrap()],
        port,
        listen: Some(listen.parse().unwrap()),
        capacity: 1 << 16,
        queue,
        warmup_timeout_s: 600,
    };
    // Backend ids: the address's last byte, on both boxes.
    let config = Config::parse(CONFIG, "t.toml").unwrap();
    let view = View::new(&config, &|_, a| match a {
        IpAddr::V4(a) => Some(a.octets()[3] as u32),
        IpAddr::V6(_) => None,
    });
    let ring = Arc::new(ArrayQueue::new(4096));
    let (table, writer) = SyncedFlows::new(cfg.capacity);
    let t0 = Instant::now();
    let clock: Clock = Arc::new(move || 1 + t0.elapsed().as_millis() as u64);
    let sync = FlowSync::start(&cfg, vec![ring.clone()], writer, view, clock).unwrap();
    Box1 { sync, ring, table }
}

/// A port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key(i: u32) -> FlowKey {
    let client = IpAddr::from([198, 19, (i >> 16) as u8, (i >> 8) as u8]);
    FlowKey::new(
        client,
        "198.18.100.1".parse().unwrap(),
        crate::net::proto::TCP,
        1024 + (i & 0xff) as u16,
        80,
    )
}

#[test]
fn peers_install_each_others_flows_and_an_overflowed_queue_is_caught_up_by_a_full_dump() {
    let port = free_port();
    // Box A can queue one entry for B: a burst overflows it.
    let a = start("127.0.0.1", "127.0.0.2", port, 1);
    let b = start("127.0.0.2", "127.0.0.1", port, 1000);
    wait_for("both dumps", || a.sync.warm() && b.sync.warm());
    const N: u32 = 3000;
    for i in 0..N {
        let backend = 11 + i % 2;
        a.ring.push(AtRisk { key: key(i), backend, expires_in_ms: 60_000 }).unwrap();
    }
    let arrived = |t: &SyncedFlows| {
        (0..N).filter(|&i| t.get(&key(i), key(i).hash(), 1) == Some(11 + i % 2)).count() as u32
    };
    let until = Instant::now() + Duration::from_secs(20);
    while arrived(&b.table) != N {
        if Instant::now() > until {
            panic!("{} of {N} at B\nA: {:?}\nB: {:?}", arrived(&b.table), a.sync.status(), b.sync.status());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sa = a.sync.status();
    assert!(sa.peers[0].dropped > 0, "the queue overflowed: {sa:?}");
    assert!(sa.peers[0].sent >= N as u64, "{sa:?}");
    assert_eq!(sa.shared_flows, N as u64);
    let sb = b.sync.status();
    assert_eq!(sb.received_flows, N as u64, "{sb:?}");
    assert_eq!((sb.unknown, sb.bad_messages, sb.peers[0].dropped), (0, 0, 0));
    // A flow of a backend B does not know is counted, not installed.
    a.ring.push(AtRisk { key: key(N), backend: 99, expires_in_ms: 60_000 }).unwrap();
    a.ring.push(AtRisk { key: key(N + 1), backend: 12, expires_in_ms: 60_000 }).unwrap();
    wait_for("the known one", || b.table.get(&key(N + 1), key(N + 1).hash(), 1) == Some(12));
    assert_eq!(b.table.get(&key(N), key(N).hash(), 1), None);

    // The other way, without overflow.
    b.ring.push(AtRisk { key: key(7_000_000), backend: 11, expires_in_ms: 60_000 }).unwrap();
    wait_for("B's flow at A", || a.table.get(&key(7_000_000), key(7_000_000).hash(), 1) == Some(11));
    assert_eq!(b.sync.status().peers[0].dropped, 0);
    assert!(a.sync.status().lag_batches > 0);

    // A stranger is refused; junk from a peer's address ends that
    // connection (counted) and the peer's next one carries on.
    let stranger = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stranger.bind(&SocketAddr::from(([127, 0, 0, 3], 0)).into()).unwrap();
    stranger.connect(&SocketAddr::from(([127, 0, 0, 2], port)).into()).unwrap();
    wait_for("the refusal", || b.sync.status().refused_connections == 1);
    let junk = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    junk.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    junk.connect(&SocketAddr::from(([127, 0, 0, 2], port)).into()).unwrap();
    let mut junk: TcpStream = junk.into();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_for("the bad message", || b.sync.status().bad_messages == 1);
    a.ring.push(AtRisk { key: key(N + 2), backend: 11, expires_in_ms: 60_000 }).unwrap();
    wait_for("A's next flow", || b.table.get(&key(N + 2), key(N + 2).hash(), 1) == Some(11));
    a.sync.stop();
    b.sync.stop();
}
