//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod bird;
pub mod lan;
pub mod netns;

use std::time::{Duration, Instant};

/// EAL arguments for a test process: memory only in this process (no files
/// under /dev/hugepages or /var/run), the main lcore free to float over the
/// machine's CPUs, and hugepages when the machine has them free.
pub fn eal_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--in-memory".into(),
        "--lcores".into(),
        lcore_map(1),
        "--log-level".into(),
        "lib.eal:notice".into(),
    ];
    if !hugepages_free() {
        args.extend(["--no-huge".into(), "-m".into(), "256".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `n` lcores (0..n), each allowed on every CPU, so a test never waits on a
/// CPU that another lcore busy-polls.
pub fn lcore_map(n: usize) -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let set = if cpus > 1 { format!("(0-{})", cpus - 1) } else { "0".to_string() };
    (0..n).map(|i| format!("{i}@{set}")).collect::<Vec<_>>().join(",")
}

pub fn hugepages_free() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .is_some_and(|n| n >= 64)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A minimal Ethernet/IPv4/UDP frame with `payload`, for byte comparisons.
pub fn udp_frame(seq: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload_len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload_len) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&seq.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 2]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 3]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(1024 + seq).to_be_bytes());
    f.extend_from_slice(&9000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload_len).map(|i| (i as u8).wrapping_add(seq as u8)));
    f
}
