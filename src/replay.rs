//! `l4lb replay`: a paced traffic source and counting sink for loss
//! measurements over `net_memif` (scripts/bench/testpmd.sh's second setup). It sends
//! a pcap on one port at a fixed packet rate (or as fast as the port takes
//! it) and counts what comes back on another, on one lcore. A packet the
//! device refuses counts as lost: on a NIC it would have been dropped at
//! l4lb's RX ring.
//!
//! Pacing keeps to the schedule with at most [`MAX_LAG`] packets of slack: when
//! the generator itself was not running (preempted), it does not send the
//! missed packets in one catch-up rush faster than the set rate; they are
//! counted as `skipped` and the offered rate it reports is what it really
//! offered. A NIC's traffic does not arrive in such rushes either.
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
    /// Paced packets never offered because the generator fell more than
    /// [`MAX_LAG`] behind its schedule (it was not running).
    pub skipped: u64,
    pub seconds: f64,
}

impl ReplayReport {
    /// Offered packets that did not come back.
    pub fn lost(&self) -> u64 {
        self.offered.saturating_sub(self.received)
    }
}

/// The most packets a paced replay sends behind its schedule: 16 bursts
/// (about 0.1 ms at 5 Mpps), which absorbs the loop's own jitter but not a
/// preemption's milliseconds.
pub const MAX_LAG: u64 = 512;

/// A packet schedule at a fixed rate from a start time, in TSC ticks.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    rate_pps: u64,
    hz: u64,
    start: u64,
    /// Packets dropped from the schedule while the generator lagged.
    skipped: u64,
}

impl Pacer {
    pub fn new(rate_pps: u64, hz: u64, start: u64) -> Pacer {
        Pacer { rate_pps, hz: hz.max(1), start, skipped: 0 }
    }

    /// How many packets to send at `now` after `offered` so far: what the
    /// schedule says is due, at most [`MAX_LAG`]; anything further behind
    /// is skipped for good.
    pub fn due(&mut self, now: u64, offered: u64) -> u64 {
        let scheduled =
            (now.saturating_sub(self.start) as u128 * self.rate_pps as u128 / self.hz as u128) as u64;
        let behind = scheduled.saturating_sub(offered + self.skipped);
        if behind > MAX_LAG {
            self.skipped += behind - MAX_LAG;
            return MAX_LAG;
        }
        behind
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
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
    // EAL's control threads stay on our CPU, off the device under test's.
    crate::dpdk::pin_current_thread(a.cpu).map_err(|e| format!("--cpu {}: {e}", a.cpu))?;
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
    let warm_start = tsc();
    let start = warm_start + (a.warmup_seconds * eal.tsc_hz() as f64) as u64;
    let end = start + (a.seconds * eal.tsc_hz() as f64) as u64;
    let mut r = ReplayReport::default();
    // Counts at the start of the measured window.
    let mut base: Option<(u64, u64, u64, u64, u64)> = None;
    let mut pacer = a.rate_pps.map(|rate| Pacer::new(rate, eal.tsc_hz(), warm_start));
    let mut next = 0usize;
    let mut burst = Burst::new();
    let mut drain_until = None;
    loop {
        let now = tsc();
        if base.is_none() && now >= start {
            let s = tx.stats();
            base = Some((r.offered, s.sent, s.dropped_full, r.received, pacer.map_or(0, |p| p.skipped())));
        }
        if now < end && !stop.load(Ordering::Relaxed) {
            let n = match pacer.as_mut() {
                Some(p) => p.due(now, r.offered),
                None => 32,
            }
            .min(32);
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
    let (o, se, re, rc, sk) = base.unwrap_or_default();
    r.skipped = pacer.map_or(0, |p| p.skipped()) - sk;
    r.offered -= o;
    r.sent = s.sent - se;
    r.refused = s.dropped_full - re;
    r.received -= rc;
    r.seconds = a.seconds;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_keeps_its_rate_and_skips_what_it_could_not_send() {
        // 1000 packets per second on a 1 MHz clock: one packet per 1000 ticks.
        let mut p = Pacer::new(1000, 1_000_000, 5_000);
        let mut offered = 0;
        for now in (5_000..105_000).step_by(250) {
            offered += p.due(now, offered);
        }
        assert_eq!((offered, p.skipped()), (99, 0), "on time: exactly the schedule");
        // The generator stalls for a second: 1000 packets fall due at once,
        // but only MAX_LAG go out; the rest are skipped, not rushed.
        let n = p.due(1_105_000, offered);
        assert_eq!(n, MAX_LAG);
        offered += n;
        assert_eq!(p.skipped(), 1100 - MAX_LAG - 99);
        // Afterwards the schedule runs on from the skip at the same rate.
        assert_eq!(p.due(1_105_999, offered), 0);
        assert_eq!(p.due(1_106_000, offered), 1);
        // A generator that does not send what is due does not build credit
        // beyond MAX_LAG either.
        assert_eq!(p.due(2_000_000, offered), MAX_LAG);
    }
}
