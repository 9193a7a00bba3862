//! End to end: `l4lb run` balancing real HTTP and UDP over TAP in L2
//! (MAC-rewrite) direct-server-return mode, one arm (tests/common/lan.rs).
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use common::lan::{
    assert_shares, attach_tap, balancing_field, drop_count, http_load, l4lb_config, service,
    start_long_stream, start_servers, stop_long_stream, test_workers, topology, PY,
};
use common::netns::{link_exists_in_root, netns_exists, require_root, unique, L4lb};

fn config(tap: &str, backends: &[common::lan::Backend]) -> String {
    let bs: Vec<String> =
        backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v4, b.mac)).collect();
    // The first service names no backend MAC: l4lb resolves them by ARP.
    let resolved: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.v4)).collect();
    let weighted: Vec<String> = backends
        .iter()
        .zip(1..)
        .map(|(b, w)| format!("{{ address = \"{}\", mac = \"{}\", weight = {w} }}", b.v4, b.mac))
        .collect();
    let services = [
        service("web", "198.18.100.1", "tcp", 80, "forwarding = \"l2\"", &resolved),
        service("weighted", "198.18.100.2", "tcp", 80, "forwarding = \"l2\"", &weighted),
        service("sticky", "198.18.100.3", "tcp", 80, "forwarding = \"l2\"\nscheduler = \"source-ip\"", &bs),
        service("udp", "198.18.100.4", "udp", 5300, "forwarding = \"l2\"", &bs),
    ];
    l4lb_config(tap, &services.join("\n"))
}

#[test]
fn http_and_udp_through_vips_in_l2_dsr_mode() {
    require_root();
    let mut t = topology(&["198.18.100.1", "198.18.100.2", "198.18.100.3", "198.18.100.4"]);
    start_servers(&mut t, Some("198.18.100.4"));
    let names: Vec<String> = t.backends.iter().map(|b| b.name.clone()).collect();
    let tap = unique("l4bt");
    let dir = std::env::temp_dir().join(unique("l4lb-bal-"));
    std::fs::create_dir_all(&dir).unwrap();
    let l4lb = L4lb::start(&config(&tap, &t.backends), &dir);
    attach_tap(&t, &tap);
    // As many queues as workers (L4LB_TEST_WORKERS: scripts/test.sh runs this with 2 too).
    let w = test_workers();
    assert!(l4lb.transcript().contains(&format!("{w} rx / {w} tx queues")), "{}", l4lb.transcript());

    // l4lb answers ARP and ping for its own address.
    let out = t.client.exec("ping -c 2 -i 0.2 -W 2 198.18.0.1");
    assert!(out.contains("2 received"), "{out}");

    // Flow affinity: a long-lived connection keeps its backend while the
    // 2100 short connections below come and go (its requests never fail and all
    // land on one backend).
    let stream = start_long_stream(&t.client, "198.18.100.1");

    // Equal weights: every connection succeeds; over 900 connections each of
    // three backends gets its third within ±15%. Backends see the client's own
    // address (direct server return, no source NAT).
    let counts = http_load(&t.client, "198.18.100.1", 900, "198.18.0.2", &l4lb);
    for n in &names {
        let c = counts.get(n).copied().unwrap_or(0);
        assert!((255..=345).contains(&c), "backend {n} got {c} of 900: {counts:?}");
    }
    // Weights 1:2:3: shares within ±5 points of 1/6, 2/6, 3/6 over 1200 connections.
    let counts = http_load(&t.client, "198.18.100.2", 1200, "198.18.0.2", &l4lb);
    assert_shares(&counts, &names, &[1.0, 2.0, 3.0], 0.05);
    let (n, errors, seen) = stop_long_stream(stream);
    assert_eq!(errors, 0, "the long connection broke");
    assert!(n >= 20, "the long connection made only {n} requests");
    assert_eq!(seen.len(), 1, "the long connection moved between backends: {seen:?}");
    // (2100 short connections came and went meanwhile.)

    // source-ip: one client, one backend, whatever its ports.
    let counts = http_load(&t.client, "198.18.100.3", 60, "198.18.0.2", &l4lb);
    assert_eq!(counts.len(), 1, "source-ip spread one client: {counts:?}");
    // UDP: the datagrams of one flow (one socket) all reach one backend, and
    // its answers come straight back from the VIP.
    let out = t.client.exec(&format!(
        "{PY} -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect(('198.18.100.4', 5300)); r=set()\n\
for i in range(20):\n    s.send(b'x'); r.add(s.recv(100).split()[0])\nprint(len(r), r.pop().decode())\""
    ));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"1"), "one UDP flow reached several backends: {out}");
    assert!(names.iter().any(|n| words.get(1) == Some(&n.as_str())), "{out}");
    // Traffic routed to l4lb for an address it does not serve is dropped and counted.
    let _ = t.client.exec_try("curl -s --max-time 1 http://198.18.100.99/");

    let (status, transcript) = l4lb.stop();
    assert!(status.success(), "{transcript}");
    // DSR: l4lb only saw client-to-server packets; replies bypassed it.
    let requests = 900 + 1200 + 60;
    // A client may reuse a source port whose flow is still closing: that is
    // the same flow again, so allow a few fewer new flows than connections.
    assert!(balancing_field(&transcript, "new_flows") >= requests * 9 / 10, "{transcript}");
    assert!(
        balancing_field(&transcript, "forwarded") >= 3 * requests,
        "SYN, ACK, request, FIN per connection: {transcript}"
    );
    assert!(balancing_field(&transcript, "replied") <= 10, "l4lb answered only ARP and ping: {transcript}");
    assert!(
        drop_count(&transcript, "not_for_us") >= 1,
        "the unknown destination was not counted:\n{transcript}"
    );

    let names_ns: Vec<String> =
        std::iter::once(t.lan.name.clone()).chain(t.backends.iter().map(|b| b.ns.name.clone())).collect();
    drop(t);
    assert!(!link_exists_in_root(&tap));
    for n in names_ns {
        assert!(!netns_exists(&n), "{n} left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
