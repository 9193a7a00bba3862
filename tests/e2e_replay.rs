//! `l4lb replay`, the generator of the memif benchmark: it sends a capture and
//! counts what comes back, and it keeps every thread it and EAL start on its
//! own CPU, off the CPUs of the program it measures.
//! (Named e2e_ to run alone: it busy-polls a CPU.)
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use common::netns::{require_root, unique};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (thread name, `Cpus_allowed_list`) of each thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    dir.filter_map(|t| {
        let t = t.ok()?.path();
        let comm = std::fs::read_to_string(t.join("comm")).ok()?.trim().to_string();
        let status = std::fs::read_to_string(t.join("status")).ok()?;
        let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim().to_string();
        Some((comm, cpus))
    })
    .collect()
}

#[test]
fn replay_counts_what_it_sends_and_keeps_its_threads_on_its_cpu() {
    require_root();
    let dir = std::env::temp_dir().join(unique("l4lb-replay-"));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("flows.pcap");
    let gen = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args(["gen", "--flows", "100", "--out"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));

    let child = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args(["replay", "--pcap"])
        .arg(&pcap)
        .args(["--tx-device", "net_null0", "--rx-device", "net_null1,no-rx=1"])
        .args(["--seconds", "2", "--warmup-seconds", "0", "--cpu", "0", "--file-prefix"])
        .arg(unique("l4lbreplay"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // EAL's control threads exist once its init is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let t = threads(child.id());
        if t.iter().any(|(name, _)| name == "eal-intr-thread") || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));

    // Every thread on CPU 0 — EAL's interrupt, multi-process and telemetry
    // threads included (EAL would put them on the CPUs no lcore uses) —
    // except the signal thread, which only waits for signals.
    assert!(seen.iter().any(|(name, _)| name == "eal-intr-thread"), "EAL never started: {seen:?}");
    for (name, cpus) in &seen {
        if name != "l4lb-signals" {
            assert_eq!(cpus, "0", "thread {name} may run on CPUs {cpus}: {seen:?}");
        }
    }

    // net_null takes every packet and (no-rx) returns none: all offered, all
    // sent, nothing back.
    let line = stdout.lines().find(|l| l.starts_with("offered ")).unwrap_or_else(|| panic!("{stdout}"));
    let field = |k: &str| -> u64 {
        let w: Vec<&str> = line.split_whitespace().collect();
        let i = w.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k} in {line}"));
        w[i + 1].parse().unwrap()
    };
    assert!(field("offered") > 1000, "{line}");
    assert_eq!(field("sent"), field("offered"), "{line}");
    assert_eq!(field("refused"), 0, "{line}");
    assert_eq!(field("received"), 0, "{line}");
    assert_eq!(field("lost"), field("offered"), "{line}");
}
