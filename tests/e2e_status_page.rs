//! End to end: the status page in headless Chromium (Debian's `chromium`,
//! driven over the DevTools protocol by tests/status_page.py). The page at
//! `/` on the metrics listener loads with no console error, no uncaught
//! exception and no failed load, shows the three backends of the demo-like
//! LAN up, and shows one turning down within two seconds of l4lb marking it
//! down. A screenshot is kept in target/artifacts/status-page.png.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::lan::{ctl_json, http_load, managed, service, PY};
use common::netns::unique;
use common::wait_for;
use serde_json::Value;

/// tests/status_page.py in the management namespace, and its pipes.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    profile: std::path::PathBuf,
}

impl Browser {
    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.to, "{cmd}").unwrap();
        let mut line = String::new();
        self.from.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{cmd}: {e}: {line:?}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        // Chromium's output, which tests/status_page.py writes beside the profile.
        let _ = std::fs::remove_file(format!("{}.log", self.profile.display()));
    }
}

fn health(socket: &std::path::Path, addr: &str) -> String {
    let all = ctl_json(socket, "backends");
    let row = all.as_array().unwrap().iter().find(|r| r["backend"] == addr).unwrap().clone();
    row["health"].as_str().unwrap().to_owned()
}

#[test]
fn the_status_page_shows_the_backends_and_one_going_down_within_two_seconds() {
    let backends: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let extra = "forwarding = \"l2\"\n\
                 health = { check = \"http\", path = \"/health\", interval_ms = 200, timeout_ms = 150, rise = 1, fall = 1 }";
    let m = managed(&["198.18.100.1"], &service("web", "198.18.100.1", "tcp", 80, extra, &backends), None);
    let addrs: Vec<String> = (1..=3).map(|i| format!("198.18.0.1{i}")).collect();
    assert!(wait_for(Duration::from_secs(10), || addrs.iter().all(|a| health(&m.socket, a) == "up")));

    let profile = std::env::temp_dir().join(unique("l4b-chromium-"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/status_page.py");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &m.mg.name, PY, script, "http://127.0.0.1:9100/", "9222"])
        .arg(&profile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tests/status_page.py");
    let (to, from) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
    let mut b = Browser { child, to, from, profile };

    let rows = b.ask("rows 3 15000");
    assert_eq!(rows["ok"], true, "the page did not show three backends: {rows}");
    for (i, a) in addrs.iter().enumerate() {
        let row = rows["rows"].as_array().unwrap().iter().find(|r| r[1] == a.as_str());
        assert_eq!(row, Some(&serde_json::json!(["web", a, "up"])), "backend {i}: {rows}");
    }

    // Traffic while the page watches: rates, shares and the chart move.
    http_load(&m.lan.client, "198.18.100.1", 300, "198.18.0.2", &m.l4lb);
    let busy = b.ask("busy 5000");
    assert_eq!(busy["ok"], true, "the page showed no traffic: {busy}");

    // Backend 2's health page fails: the page follows l4lb within two seconds.
    m.lan.backends[1].set_health(500);
    let start = Instant::now();
    assert!(wait_for(Duration::from_secs(5), || health(&m.socket, &addrs[1]) == "down"));
    let marked = start.elapsed();
    let shown = b.ask(&format!("health {} down 2000", addrs[1]));
    assert_eq!(shown["ok"], true, "the page did not show the backend down within 2 s of l4lb: {shown}");
    eprintln!("l4lb marked it down after {marked:?}; the page showed it {} ms later", shown["ms"]);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status-page.png");
    assert_eq!(b.ask(&format!("screenshot {}", png.display()))["ok"], true);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"), "screenshot of {} bytes", bytes.len());

    let errors = b.ask("errors");
    assert_eq!(errors["errors"], serde_json::json!([]), "the page logged errors: {errors}");
    let text = errors["text"].as_str().unwrap();
    assert!(text.contains("2 of 3 backends not down"), "{text}");
}
