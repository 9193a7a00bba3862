//! `l4lb replay`: a paced traffic source and counting sink for loss
//! measurements over `net_memif` (scripts/bench.sh's second setup). It sends
//! a pcap on one port at a fixed packet rate (or as fast as the port takes
//! it) and counts what comes back on another, on one lcore. A packet the
//! device refuses counts as lost: on a NIC it would have been dropped at
//! l4lb's RX ring.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dpdk::{tsc, Burst, Eal, Mempool, Port, PortConfig};

#[derive(Debug, Clone)]
pub struct ReplayArgs {
    pub pcap: PathBuf,
    /// EAL `--vdev` of the sending and the counting port.
    pub tx_device: String,
    pub rx_device: String,
    /// Packets per second to offer (None: as fast as the port takes them).
    pub rate_pps: Option<u64>,
    pub seconds: f64,
    /// Traffic sent before the measured window (flow-table fill, page faults).
    pub warmup_seconds: f64,
    /// The CPU to run on.
    pub cpu: u32,
    pub file_prefix: String,
}

/// What happened during a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplayReport {
    pub offered: u64,
    /// Accepted by the sending port.
    pub sent: u64,
    /// Refused by the sending port (its peer's ring was full).
    pub refused: u64,
    pub received: u64,
    pub seconds: f64,
}

impl ReplayReport {
    /// Offered packets that did not come back.
    pub fn lost(&self) -> u64 {
        self.offered.saturating_sub(self.received)
    }
}

fn device_name(spec: &str) -> &str {
    spec.split(',').next().unwrap_or(spec)
}

/// Runs the replay; progress lines go to `out`.
pub fn run(a: &ReplayArgs, stop: &AtomicBool, out: &mut dyn Write) -> Result<ReplayReport, String> {
    let frames: Vec<Vec<u8>> = crate::pcap::read_file(&a.pcap)
        .map_err(|e| format!("{}: {e}", a.pcap.display()))?
        .into_iter()
        .map(|r| r.data)
        .collect();
    if frames.is_empty() {
        return Err(format!("{}: no packets", a.pcap.display()));
    }
    let eal = Eal::init([
        "--lcores".to_string(),
        format!("0@{}", a.cpu),
        "--no-pci".into(),
        "--no-huge".into(),
        "-m".into(),
        "1024".into(),
        "--file-prefix".into(),
        a.file_prefix.clone(),
        "--log-level".into(),
        "lib.eal:warning".into(),
        "--vdev".into(),
        a.tx_device.clone(),
        "--vdev".into(),
        a.rx_device.clone(),
    ])
    .map_err(|e| format!("EAL: {e}"))?;
    let pool = Mempool::new(&eal, "replay", 65535, 256, -1).map_err(|e| format!("mempool: {e}"))?;
    let pc =
        PortConfig { rx_queues: 1, tx_queues: 1, rx_desc: 1024, tx_desc: 1024, mtu: None, promiscuous: true };
    let open = |spec: &str| -> Result<Port, String> {
        let id = Port::id_by_name(&eal, device_name(spec)).map_err(|e| format!("{spec}: {e}"))?;
        let mut p = Port::configure(&eal, id, &pc, &pool).map_err(|e| format!("{spec}: {e}"))?;
        p.start().map_err(|e| format!("{spec}: {e}"))?;
        Ok(p)
    };
    let txp = open(&a.tx_device)?;
    let rxp = open(&a.rx_device)?;
    // memif links come up when the peer connects.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(txp.link().is_ok_and(|l| l.up) && rxp.link().is_ok_and(|l| l.up)) {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return Err("the ports' links did not come up in 30 s (is the peer running?)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writeln!(out, "links up; replaying {} frames for {} s", frames.len(), a.seconds);
    let _ = out.flush();
    let mut tx = txp.tx_queue(0, eal.us_to_tsc(50)).map_err(|e| e.to_string())?;
    let mut rx = rxp.rx_queue(0).map_err(|e| e.to_string())?;
    let hz = eal.tsc_hz() as u128;
    let warm_start = tsc();
    let start = warm_start + (a.warmup_seconds * eal.tsc_hz() as f64) as u64;
    let end = start + (a.seconds * eal.tsc_hz() as f64) as u64;
    let mut r = ReplayReport::default();
    // Counts at the start of the measured window.
    let mut base: Option<(u64, u64, u64, u64)> = None;
    let mut next = 0usize;
    let mut burst = Burst::new();
    let mut drain_until = None;
    loop {
        let now = tsc();
        if base.is_none() && now >= start {
            let s = tx.stats();
            base = Some((r.offered, s.sent, s.dropped_full, r.received));
        }
        if now < end && !stop.load(Ordering::Relaxed) {
            let due = match a.rate_pps {
                Some(rate) => ((now - warm_start) as u128 * rate as u128 / hz) as u64,
                None => r.offered + 32,
            };
            let n = due.saturating_sub(r.offered).min(32);
            for _ in 0..n {
                let Some(mut m) = pool.alloc() else { break };
                if !m.set_data(&frames[next]) {
                    break;
                }
                next = (next + 1) % frames.len();
                r.offered += 1;
                tx.push(m);
            }
            tx.flush();
        } else {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + Duration::from_millis(300));
            tx.flush();
            if Instant::now() > until {
                break;
            }
        }
        let got = rx.burst(&mut burst);
        r.received += got as u64;
        burst.clear();
    }
    tx.discard();
    let s = tx.stats();
    let (o, se, re, rc) = base.unwrap_or_default();
    r.offered -= o;
    r.sent = s.sent - se;
    r.refused = s.dropped_full - re;
    r.received -= rc;
    r.seconds = a.seconds;
    Ok(r)
}
