//! End to end on TAP devices: `l4lb run` forwards between two `net_tap` ports
//! whose kernel sides live in two namespaces; ping and UDP cross; everything
//! is removed afterwards, also when the test fails.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::time::Duration;

use common::netns::{link_exists_in_root, netns_exists, require_root, unique, L4lb, Netns};

fn config(if_a: &str, if_b: &str) -> String {
    format!(
        r#"
[dpdk]
lcores = "{}"
devices = ["net_tap0,iface={if_a}", "net_tap1,iface={if_b}"]
{}

[workers]
idle_pause_us = 200

[[ports]]
name = "a"
device = "net_tap0"
forward_to = "b"

[[ports]]
name = "b"
device = "net_tap1"
forward_to = "a"
"#,
        common::lcore_map(2),
        if common::hugepages_free() { "in_memory = true" } else { "hugepages = false" }
    )
}

struct Topology {
    l4lb: Option<L4lb>,
    a: Netns,
    b: Netns,
    if_a: String,
    if_b: String,
    dir: std::path::PathBuf,
}

fn build() -> Topology {
    require_root();
    let (if_a, if_b) = (unique("l4fa"), unique("l4fb"));
    let dir = std::env::temp_dir().join(unique("l4lb-tap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Netns::new(&unique("l4lb-a"));
    let b = Netns::new(&unique("l4lb-b"));
    let l4lb = L4lb::start(&config(&if_a, &if_b), &dir);
    a.adopt(&if_a, &["198.18.0.2/24", "2001:db8::2/64"]);
    b.adopt(&if_b, &["198.18.0.3/24", "2001:db8::3/64"]);
    Topology { l4lb: Some(l4lb), a, b, if_a, if_b, dir }
}

fn assert_all_gone(names: &[String], ifs: &[String]) {
    for n in names {
        assert!(!netns_exists(n), "namespace {n} left behind");
    }
    for i in ifs {
        assert!(!link_exists_in_root(i), "TAP {i} left behind");
    }
    let (_, all_links) = common::netns::sh_try("ip -o link show");
    for i in ifs {
        assert!(!all_links.contains(i.as_str()), "TAP {i} still exists");
    }
}

#[test]
fn ping_and_udp_cross_l4lb_between_two_namespaces() {
    let started = std::time::Instant::now();
    let mut t = build();
    let names = vec![t.a.name.clone(), t.b.name.clone()];
    let ifs = vec![t.if_a.clone(), t.if_b.clone()];

    let out = t.a.exec("ping -c 3 -i 0.2 -W 2 198.18.0.3");
    assert!(out.contains("3 received"), "{out}");
    let out = t.a.exec("ping -6 -c 2 -i 0.2 -W 2 2001:db8::3");
    assert!(out.contains("2 received"), "{out}");

    // One UDP datagram, bytes compared at the receiver.
    let mut rx = t.b.spawn(
        "exec python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); \
         s.bind((\"198.18.0.3\",9000)); print(\"ready\",flush=True); s.settimeout(10); \
         d,a=s.recvfrom(2048); print(a[0], d.hex(), flush=True)'",
    );
    let mut reader = std::io::BufReader::new(rx.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let payload = "l4lb-udp-datagram-0123456789";
    t.a.exec(&format!(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); \
         s.sendto(b\"{payload}\", (\"198.18.0.3\",9000))'"
    ));
    line.clear();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    let status = rx.wait().unwrap();
    assert!(status.success(), "receiver failed: {line}");
    let hex: String = payload.bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(line.trim(), format!("198.18.0.2 {hex}"));

    let l4lb = t.l4lb.take().unwrap();
    let (status, transcript) = l4lb.stop();
    assert!(status.success(), "l4lb exit {status}:\n{transcript}");
    // Events are log lines: UTC time to the millisecond, level, message; no
    // colour codes (journald and files get plain text).
    let running = transcript.lines().find(|l| l.contains("l4lb running: ")).expect("a start line");
    let (ts, rest) = running.split_once(' ').unwrap();
    assert!(ts.len() == 24 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'), "{running}");
    assert!(rest.starts_with("INFO  l4lb running: 2 ports"), "{running}");
    assert!(!transcript.contains('\x1b'), "colour codes in the log:\n{transcript}");
    // Final per-port stats: both ports saw traffic; every received packet was sent.
    let row = |name: &str| -> Vec<u64> {
        let l = transcript
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name) && l.split_whitespace().count() == 7)
            .unwrap_or_else(|| panic!("no stats row for port {name}:\n{transcript}"));
        l.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
    };
    let (a, b) = (row("a"), row("b"));
    assert!(a[0] >= 4 && b[0] >= 4, "{transcript}");
    assert_eq!(a[0], b[1], "a's RX all left on b:\n{transcript}");
    assert_eq!(b[0], a[1], "b's RX all left on a:\n{transcript}");
    // The forwarding workers meter the gaps between their polls too: a gap
    // can be no longer than l4lb ran (a wrongly scaled meter, or one that
    // timed its first poll from zero, reports more).
    let gap_ms: f64 = transcript
        .lines()
        .find_map(|l| l.trim().strip_prefix("longest poll gap "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no poll-gap line:\n{transcript}"));
    let ran_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!((0.0..=ran_ms).contains(&gap_ms), "gap {gap_ms} ms in a {ran_ms} ms run:\n{transcript}");

    std::fs::remove_dir_all(&t.dir).ok();
    drop(t);
    assert_all_gone(&names, &ifs);
}

#[test]
fn a_failing_test_still_removes_namespaces_l4lb_and_taps() {
    let mut names = Vec::new();
    let mut ifs = Vec::new();
    let mut pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = build();
        names = vec![t.a.name.clone(), t.b.name.clone()];
        ifs = vec![t.if_a.clone(), t.if_b.clone()];
        pid = t.l4lb.as_ref().unwrap().pid();
        let (ok, _) = t.a.exec_try("ping -c 1 -W 1 198.18.0.99");
        assert!(ok, "this assertion fails on purpose: nobody has 198.18.0.99");
    }));
    assert!(result.is_err(), "the inner test was meant to fail");
    assert!(pid != 0);
    assert!(
        common::wait_for(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))),
        "l4lb still running"
    );
    assert_all_gone(&names, &ifs);
}
