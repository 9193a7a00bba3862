//! End to end: fragmented datagrams on the one-arm TAP LAN. Two UDP
//! services share a VIP (ports 53 and 5300, different backends); the
//! client's kernel fragments its 4000-byte datagrams; each backend's kernel
//! must get every piece of a datagram to reassemble it, and only datagrams
//! of its own service.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use common::lan::{ctl_json, managed, service, spawn_script, PY};
use common::netns::unique;

const VIP: &str = "198.18.100.5";

fn backends(ids: &[u8]) -> Vec<String> {
    ids.iter().map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}")).collect()
}

#[test]
fn fragmented_datagrams_arrive_whole_at_a_backend_of_their_own_service() {
    let services = [
        service("dns", VIP, "udp", 53, "forwarding = \"l2\"", &backends(&[1, 2])),
        service("dns-alt", VIP, "udp", 5300, "forwarding = \"l2\"", &backends(&[3])),
    ]
    .join("\n");
    let mut m = managed(&[VIP], &services, None);
    // Each backend answers on both ports with its name, the port and the
    // length of the datagram its kernel reassembled.
    for i in 0..m.lan.backends.len() {
        let b = &m.lan.backends[i];
        let script = format!(
            "import socket, threading\n\
             def serve(port):\n    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
             u.bind(('{VIP}', port))\n    while True:\n        d, a = u.recvfrom(65535)\n        \
             u.sendto(('{} %d %d' % (port, len(d))).encode(), a)\n\
             for p in (53, 5300):\n    threading.Thread(target=serve, args=(p,), daemon=True).start()\n\
             print('ready', flush=True)\n\
             threading.Event().wait()\n",
            b.name
        );
        let child = spawn_script(&b.ns, &script, &format!("l4b-frag-{}-", b.name));
        m.lan.children.push(child);
    }
    // 60 datagrams of 4000 bytes (three fragments each at MTU 1500), each
    // from a new port, alternating between the services.
    let client = format!(
        "import socket\n\
         for i in range(60):\n    port = 53 if i % 2 == 0 else 5300\n    \
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n    \
         s.sendto(bytes([i]) * 4000, ('{VIP}', port))\n    \
         try:\n        print(port, s.recvfrom(100)[0].decode())\n    except OSError:\n        print(port, 'lost')\n    \
         s.close()\n"
    );
    let path = std::env::temp_dir().join(format!("{}.py", unique("l4b-frag-cl-")));
    std::fs::write(&path, client).unwrap();
    let out = m.lan.client.exec(&format!("{PY} {}", path.display()));
    let _ = std::fs::remove_file(&path);
    let mut per_backend = std::collections::BTreeMap::new();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(w.len(), 4, "no whole datagram came back: {line}\n{out}\n{}", m.l4lb.transcript());
        let (sent_to, backend, port, len) = (w[0], w[1], w[2], w[3]);
        assert_eq!((port, len), (sent_to, "4000"), "{line}");
        let own = if sent_to == "53" {
            ["backend-1", "backend-2"].contains(&backend)
        } else {
            backend == "backend-3"
        };
        assert!(own, "a datagram to {sent_to} reached {backend}");
        *per_backend.entry(backend.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(out.lines().count(), 60, "{out}");
    eprintln!("datagrams per backend: {per_backend:?}");
    let st = ctl_json(&m.socket, "stats");
    eprintln!("fragments_unmatched: {}", st["counters"]["fragments_unmatched"]);
    assert_eq!(st["counters"]["fragments_unmatched"], 0, "{st}");
}
