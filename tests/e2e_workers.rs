//! End to end with two balancing workers on a two-queue TAP port: the
//! kernel's TUN driver spreads the client's connections over both queues by
//! its own flow hash, and every promise must hold whichever worker a packet
//! reaches — Maglev's spread, weighted round robin's shares, source-IP
//! persistence (exact: one client, one backend) and ICMP errors reaching
//! the backend of the flow they quote (least connections, whose choice only
//! the worker tracking the flow knows).
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::lan::{
    assert_shares, attach_tap, ctl_json, http_load, l4lb_config_workers, service, spawn_script,
    start_servers, topology,
};
use common::netns::{require_root, unique, L4lb};

const VIPS: [&str; 4] = ["198.18.100.1", "198.18.100.2", "198.18.100.3", "198.18.100.5"];

fn config(tap: &str, socket: &std::path::Path, backends: &[common::lan::Backend]) -> String {
    let with = |weights: &[u32]| -> Vec<String> {
        backends
            .iter()
            .zip(weights)
            .map(|(b, w)| format!("{{ address = \"{}\", mac = \"{}\", weight = {w} }}", b.v4, b.mac))
            .collect()
    };
    let l2 = "forwarding = \"l2\"";
    let services = [
        service("web", VIPS[0], "tcp", 80, l2, &with(&[1, 1, 1])),
        service(
            "weighted",
            VIPS[1],
            "tcp",
            80,
            &format!("{l2}\nscheduler = \"weighted-round-robin\""),
            &with(&[1, 2, 3]),
        ),
        service(
            "sticky",
            VIPS[2],
            "tcp",
            80,
            &format!("{l2}\nscheduler = \"round-robin\"\npersistence_s = 300"),
            &with(&[1, 1, 1]),
        ),
        service(
            "least",
            VIPS[3],
            "tcp",
            80,
            &format!("{l2}\nscheduler = \"least-connections\""),
            &with(&[1, 1, 1]),
        ),
    ];
    let control = format!("[control]\nsocket = \"{}\"\nmetrics_address = \"\"\n", socket.display());
    l4lb_config_workers(tap, &control, &services.join("\n"), 2)
}

/// A sniffer in a backend's namespace: prints the client port quoted by
/// every ICMP frag-needed the backend receives, one per line, until told
/// to stop.
const SNIFFER: &str = r#"
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print('ready', flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in r:
        break
    d = s.recv(4096)
    i = (d[0] & 15) * 4
    if d[i] == 3 and d[i + 1] == 4:
        q = d[i + 8:]
        j = (q[0] & 15) * 4
        print(int.from_bytes(q[j + 2:j + 4], 'big'), flush=True)
"#;

/// The client: 16 connections to the least-connections VIP, kept open; on
/// "go", prints "PORT=BACKEND ..." and sends, from 16 router addresses (so
/// the TUN driver spreads them too), a frag-needed quoting each
/// connection's reply packet (VIP:80 -> client:PORT), as a router on the
/// backends' path would.
fn client_script(vip: &str) -> String {
    format!(
        r#"
import http.client, sys
from scapy.all import IP, ICMP, TCP, send
conns = []
for i in range(16):
    h = http.client.HTTPConnection('{vip}', 80, timeout=5)
    h.request('GET', '/')
    name = h.getresponse().read().decode().split()[0]
    conns.append((h, h.sock.getsockname()[1], name))
print('ready', flush=True)
sys.stdin.readline()
print(' '.join(f'{{p}}={{n}}' for _, p, n in conns), flush=True)
for i, (_, p, _) in enumerate(conns):
    quoted = IP(src='{vip}', dst='198.18.0.2') / TCP(sport=80, dport=p, flags='A')
    send(IP(src=f'198.18.0.{{200 + i}}', dst='{vip}') / ICMP(type=3, code=4, nexthopmtu=1400) / quoted, verbose=False)
sys.stdin.readline()
"#
    )
}

#[test]
fn two_workers_spread_weigh_persist_and_route_icmp_errors_to_their_flow() {
    require_root();
    let mut t = topology(&VIPS);
    start_servers(&mut t, None);
    let names: Vec<String> = t.backends.iter().map(|b| b.name.clone()).collect();
    let tap = unique("l4bw");
    let dir = std::env::temp_dir().join(unique("l4lb-w2-"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ctl.sock");
    let l4lb = L4lb::start(&config(&tap, &socket, &t.backends), &dir);
    attach_tap(&t, &tap);
    assert!(
        l4lb.transcript().contains("2 rx / 2 tx queues"),
        "the TAP port has two queues:\n{}",
        l4lb.transcript()
    );

    // Maglev, equal weights: each backend's third within ±15% over 900 connections.
    let counts = http_load(&t.client, VIPS[0], 900, "198.18.0.2", &l4lb);
    for n in &names {
        let c = counts.get(n).copied().unwrap_or(0);
        assert!((255..=345).contains(&c), "backend {n} got {c} of 900: {counts:?}");
    }
    // Weighted round robin, each worker with its own turn: shares within ±5
    // points of 1/6, 2/6, 3/6 over 1200 connections.
    let counts = http_load(&t.client, VIPS[1], 1200, "198.18.0.2", &l4lb);
    assert_shares(&counts, &names, &[1.0, 2.0, 3.0], 0.05);
    // Persistence over round robin: 100 connections of one client, from as
    // many source ports, over both workers, reach one backend.
    let counts = http_load(&t.client, VIPS[2], 100, "198.18.0.2", &l4lb);
    assert_eq!(counts.len(), 1, "a persisted client reached several backends: {counts:?}");

    // Both workers balanced. (Whether the persisted client's connections
    // needed a hand-off depends on where its first one landed: the worker
    // that owns it decides it at once.)
    let stats = ctl_json(&socket, "stats");
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{stats}");
    for (i, w) in workers.iter().enumerate() {
        let fwd = w["counters"]["forwarded"].as_u64().unwrap_or(0);
        assert!(fwd > 100, "worker {i} forwarded only {fwd}: {stats}");
    }
    let handed = |s: &serde_json::Value| s["counters"]["handed_off"].as_u64().unwrap_or(0);
    let handed_before_icmp = handed(&stats);

    // ICMP errors: each reaches the backend of the connection it quotes.
    let (tx, rx) = mpsc::channel::<(String, u16)>();
    let mut sniffers = Vec::new();
    for b in &t.backends {
        let mut child = spawn_script(&b.ns, SNIFFER, "l4b-sniff-");
        let out = child.stdout.take().unwrap();
        let (tx, name) = (tx.clone(), b.name.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(p) = line.trim().parse() {
                    let _ = tx.send((name.clone(), p));
                }
            }
        });
        sniffers.push(child);
    }
    let mut client = spawn_script(&t.client, &client_script(VIPS[3]), "l4b-icmp-");
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let owners: HashMap<u16, String> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(p, n)| (p.parse().unwrap(), n.to_owned()))
        .collect();
    assert_eq!(owners.len(), 16, "{line}");
    let mut seen: HashMap<u16, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.values().map(Vec::len).sum::<usize>() < 16 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, port)) => seen.entry(port).or_default().push(name),
            Err(_) => break,
        }
    }
    let _ = writeln!(stdin, "done");
    drop(stdin);
    let _ = client.wait();
    for mut s in sniffers {
        if let Some(mut i) = s.stdin.take() {
            let _ = writeln!(i, "stop");
        }
        let _ = s.wait();
    }
    for (port, backend) in &owners {
        assert_eq!(
            seen.get(port).map(Vec::as_slice),
            Some(std::slice::from_ref(backend)),
            "the frag-needed about client port {port} (a flow on {backend}) reached {:?}; all: {seen:?}",
            seen.get(port)
        );
    }
    let stats = ctl_json(&socket, "stats");
    // 16 connections and 16 errors spread by the TUN driver's hash: some
    // error reached the worker that does not track its flow.
    assert!(handed(&stats) > handed_before_icmp, "no ICMP error was handed to the other worker: {stats}");

    let (status, transcript) = l4lb.stop();
    assert!(status.success(), "{transcript}");
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}
