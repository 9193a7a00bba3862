//! End to end: l4lb under systemd's eyes. With `NOTIFY_SOCKET` set (as a
//! `Type=notify` unit runs it) l4lb says READY=1 once it serves, pets the
//! watchdog at half `WATCHDOG_USEC`, marks a SIGHUP reload with RELOADING=1
//! … READY=1, and says STOPPING=1 when the graceful stop begins; with
//! `JOURNAL_STREAM` set its log lines carry journald priorities, no colour.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::lan::{attach_tap, l4lb_config, service, start_servers, topology};
use common::netns::{require_root, sh, unique, L4lb};

const VIP: &str = "198.18.100.1";

/// The messages that arrive on `sock` within `wait` (each one datagram).
fn messages(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

/// Reads until a message has `field` (or `wait` passes): the messages read.
fn until(sock: &UnixDatagram, field: &str, wait: Duration) -> Vec<String> {
    let end = Instant::now() + wait;
    let mut seen = Vec::new();
    while Instant::now() < end {
        let got = messages(sock, Duration::from_millis(100));
        let done = got.iter().any(|m| m.lines().any(|l| l == field));
        seen.extend(got);
        if done {
            break;
        }
    }
    seen
}

#[test]
fn l4lb_tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    require_root();
    let mut lan = topology(&[VIP]);
    start_servers(&mut lan, None);
    let backends: Vec<String> =
        lan.backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.v4)).collect();
    let tap = unique("l4bs");
    let dir = std::env::temp_dir().join(unique("l4lb-sd-"));
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let cfg = l4lb_config(&tap, &service("web", VIP, "tcp", 80, "forwarding = \"l2\"", &backends));
    let l4lb = L4lb::start_with_env(
        None,
        &cfg,
        &dir,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("JOURNAL_STREAM", "8:12345"),
        ],
    );
    attach_tap(&lan, &tap);

    let first = until(&sock, "READY=1", Duration::from_secs(10));
    let ready = first.iter().find(|m| m.lines().any(|l| l == "READY=1"));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1: {first:?}\n{}", l4lb.transcript()));
    assert!(ready.contains("STATUS=balancing 1 services"), "{ready}");

    // The watchdog at half of 400 ms: about five in a second.
    let later = messages(&sock, Duration::from_secs(1));
    let pets = later.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!((3..=8).contains(&pets), "{pets} watchdog messages in 1 s: {later:?}");

    // A reload by SIGHUP: RELOADING=1, then READY=1 again.
    sh(&format!("kill -HUP {}", l4lb.pid()));
    let reload = until(&sock, "READY=1", Duration::from_secs(10));
    let at = |f: &str| reload.iter().position(|m| m.lines().any(|l| l == f));
    assert!(matches!((at("RELOADING=1"), at("READY=1")), (Some(a), Some(b)) if a < b), "reload: {reload:?}");

    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
    let last = messages(&sock, Duration::from_millis(200));
    assert!(last.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")), "no STOPPING=1 at the stop: {last:?}");
    // Journald: l4lb's own lines start with their priority and carry no colour.
    let running = out.lines().find(|l| l.contains("l4lb running: ")).unwrap();
    assert!(running.starts_with("<6>l4lb running: "), "{running}");
    assert!(out.lines().any(|l| l.starts_with("<6>")), "{out}");
    assert!(!out.contains('\u{1b}'), "colour codes in the log:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
