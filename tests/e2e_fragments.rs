//! End to end: fragments on the one-arm TAP LAN.
//! - Two UDP services share a VIP (ports 53 and 5300, different backends);
//!   the client's kernel fragments its 4000-byte datagrams; each backend's
//!   kernel must get every piece of a datagram to reassemble it, and only
//!   datagrams of its own service.
//! - Datagrams without DF that fill the client's MTU no longer fit once
//!   encapsulated in IP-in-IP: l4lb sends the outer packet in fragments, the
//!   backend's kernel reassembles it, and the datagram arrives whole.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use common::lan::{client_py, ctl_json, managed, service, spawn_script, start_decap, Managed};

const VIP: &str = "198.18.100.5";

fn backends(ids: &[u8]) -> Vec<String> {
    ids.iter().map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}")).collect()
}

/// Each backend answers UDP on the VIP's `ports` with its name, the port
/// and the length of the datagram its kernel reassembled.
fn start_udp_servers(m: &mut Managed, vip: &str, ports: &[u16]) {
    for i in 0..m.lan.backends.len() {
        let b = &m.lan.backends[i];
        let script = format!(
            "import socket, threading\n\
             def serve(port):\n    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
             u.bind(('{vip}', port))\n    while True:\n        d, a = u.recvfrom(65535)\n        \
             u.sendto(('{} %d %d' % (port, len(d))).encode(), a)\n\
             for p in {ports:?}:\n    threading.Thread(target=serve, args=(p,), daemon=True).start()\n\
             print('ready', flush=True)\n\
             threading.Event().wait()\n",
            b.name
        );
        let child = spawn_script(&b.ns, &script, &format!("l4b-frag-{}-", b.name));
        m.lan.children.push(child);
    }
}

#[test]
fn datagrams_without_df_too_big_for_the_tunnel_are_sent_in_fragments_and_arrive_whole() {
    const TUNNELED: &str = "198.18.100.6";
    let bs: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let mut m =
        managed(&[TUNNELED], &service("tunneled", TUNNELED, "udp", 7000, "forwarding = \"ipip\"", &bs), None);
    start_decap(&mut m.lan);
    start_udp_servers(&mut m, TUNNELED, &[7000]);
    // 1472 bytes of UDP payload fill the client's 1500-byte MTU; DF off
    // (IP_PMTUDISC_DONT), so l4lb may not answer frag-needed but must cut.
    let out = client_py(
        &m,
        &format!(
            "import socket\n\
             for i in range(20):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n    \
             s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER: IP_PMTUDISC_DONT\n    \
             s.sendto(bytes([i]) * 1472, ('{TUNNELED}', 7000))\n    \
             try:\n        print(s.recvfrom(100)[0].decode())\n    except OSError:\n        print('lost')\n    \
             s.close()\n"
        ),
    );
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert!(w.len() == 3 && w[1] == "7000" && w[2] == "1472", "{line}\n{out}\n{}", m.l4lb.transcript());
    }
    assert_eq!(out.lines().count(), 20, "{out}");
    let st = ctl_json(&m.socket, "stats");
    eprintln!("fragmented: {}", st["counters"]["fragmented"]);
    assert_eq!(st["counters"]["fragmented"], 20, "{st}");
    assert!(st["drops"].get("too_big").is_none_or(|v| v == 0), "{st}");
}

#[test]
fn fragmented_datagrams_arrive_whole_at_a_backend_of_their_own_service() {
    let services = [
        service("dns", VIP, "udp", 53, "forwarding = \"l2\"", &backends(&[1, 2])),
        service("dns-alt", VIP, "udp", 5300, "forwarding = \"l2\"", &backends(&[3])),
    ]
    .join("\n");
    let mut m = managed(&[VIP], &services, None);
    start_udp_servers(&mut m, VIP, &[53, 5300]);
    // 60 datagrams of 4000 bytes (three fragments each at MTU 1500), each
    // from a new port, alternating between the services.
    let out = client_py(
        &m,
        &format!(
            "import socket\n\
             for i in range(60):\n    port = 53 if i % 2 == 0 else 5300\n    \
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n    \
             s.sendto(bytes([i]) * 4000, ('{VIP}', port))\n    \
             try:\n        print(port, s.recvfrom(100)[0].decode())\n    except OSError:\n        print(port, 'lost')\n    \
             s.close()\n"
        ),
    );
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
