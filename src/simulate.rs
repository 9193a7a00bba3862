//! `l4lb simulate`: replays a pcap through the pipeline (no DPDK) and writes
//! what would leave the box, using each packet's capture time as the clock.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use crate::control::config::Validated;
use crate::control::state_build::{build_state, simulated_facts, worker_config};
use crate::dataplane::packet::{Packet, TestPacket};
use crate::dataplane::pipeline::{Counter, Counters, DropReason, Verdict, Worker};
use crate::pcap;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{0}: {1}")]
    Pcap(String, pcap::PcapError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("forwarding state: {0}")]
    State(#[from] crate::balancer::state::BuildError),
}

/// How packets are spread over the simulated workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assign {
    /// As a NIC's RSS would: the Toeplitz hash with DPDK's default key over
    /// addresses and TCP/UDP ports, a 128-entry redirection table
    /// (`balancer::rss`).
    Rss,
    /// Packet by packet in turn, whatever its flow: the worst a device could
    /// do, and what decisions must survive.
    RoundRobin,
    /// Each packet to a worker drawn from this seed.
    Random(u64),
}

impl std::str::FromStr for Assign {
    type Err = String;
    fn from_str(s: &str) -> Result<Assign, String> {
        match s {
            "rss" => Ok(Assign::Rss),
            "round-robin" => Ok(Assign::RoundRobin),
            _ => s
                .strip_prefix("random:")
                .and_then(|n| n.parse().ok())
                .map(Assign::Random)
                .ok_or_else(|| format!("`{s}`: say rss, round-robin or random:SEED")),
        }
    }
}

/// Replays `input` as received on port `in_port`, spread over `workers`
/// pipelines by `assign` (each with its own tables, as l4lb's workers have);
/// writes forwarded and reply packets to `output`, in input order; returns
/// the counters summed over the workers. With `trace`, one line per packet:
/// its index, its worker and its verdict.
pub fn run(
    cfg: &Validated,
    input: &Path,
    output: &Path,
    in_port: u16,
    workers: usize,
    assign: Assign,
    mut trace: Option<&mut dyn Write>,
) -> Result<Counters, SimulateError> {
    let state = build_state(cfg, 1, &simulated_facts(cfg))?;
    let mut pipelines = Worker::team(worker_config(cfg), workers.max(1));
    let f = std::fs::File::open(input).map_err(|e| SimulateError::Io(input.display().to_string(), e))?;
    let reader = pcap::Reader::new(std::io::BufReader::new(f))
        .map_err(|e| SimulateError::Pcap(input.display().to_string(), e))?;
    let out =
        std::fs::File::create(output).map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    let mut writer = pcap::Writer::new(std::io::BufWriter::new(out))
        .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    let mut seed = match assign {
        Assign::Random(s) => s | 1,
        _ => 1,
    };
    let n = pipelines.len();
    for (i, rec) in reader.enumerate() {
        let rec = rec.map_err(|e| SimulateError::Pcap(input.display().to_string(), e))?;
        let now_ms = rec.ts_sec as u64 * 1000 + rec.ts_nsec as u64 / 1_000_000;
        let w = match assign {
            Assign::Rss => crate::balancer::rss::queue_of(&crate::balancer::rss::DEFAULT_KEY, &rec.data, n),
            Assign::RoundRobin => i % n,
            Assign::Random(_) => {
                // xorshift64*: reproducible from the seed.
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
            }
        };
        let mut pkt = TestPacket::new(&rec.data);
        let mut v = pipelines[w].process(&state, &mut pkt, in_port, now_ms);
        // Hand-offs, as the workers' rings carry them: the packet goes on to
        // the worker named, which knows where it came in.
        let mut path = String::new();
        while let Verdict::Handoff { worker } = v {
            let at = worker as usize % n;
            path.push_str(&format!(" -> worker {at}"));
            v = pipelines[at].process_handed(&state, &mut pkt, in_port, now_ms, w as u16);
        }
        if let Some(t) = trace.as_deref_mut() {
            if n > 1 {
                let _ = writeln!(t, "{i} worker {w}{path} {}", verdict_text(v));
            } else {
                let _ = writeln!(t, "{i} {}", verdict_text(v));
            }
        }
        if matches!(v, Verdict::Forward { .. } | Verdict::Reply { .. }) {
            writer
                .write(rec.ts_sec, rec.ts_nsec / 1000, pkt.data())
                .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
        }
        if let Verdict::Fragment { port } = v {
            // As the worker loop sends it: one frame per fragment.
            let mtu = state.ports.get(port as usize).map_or(1500, |p| p.mtu as usize);
            let l2 = crate::dataplane::pipeline::l2_len(pkt.data());
            for f in crate::dataplane::pipeline::fragment_frames(pkt.data(), l2, mtu) {
                writer
                    .write(rec.ts_sec, rec.ts_nsec / 1000, &f)
                    .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
            }
        }
    }
    writer
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    let mut sum = Counters::default();
    for p in &pipelines {
        sum += &p.counter_snapshot();
    }
    Ok(sum)
}

/// `forward:1`, `reply:0`, `local`, `drop:no_service`.
pub fn verdict_text(v: Verdict) -> String {
    match v {
        Verdict::Forward { port } => format!("forward:{port}"),
        Verdict::Reply { port } => format!("reply:{port}"),
        Verdict::Fragment { port } => format!("fragment:{port}"),
        Verdict::Local => "local".into(),
        Verdict::Handoff { worker } => format!("handoff:{worker}"),
        Verdict::Drop(r) => format!("drop:{}", r.name()),
    }
}

/// The counts of the pipeline's own counters (what `simulate` can see: no
/// ports, no polls) and of each drop reason that occurred.
pub fn report(c: &Counters, out: &mut dyn Write) {
    for k in [Counter::Forwarded, Counter::Replied, Counter::Local, Counter::NewFlows, Counter::Rescheduled] {
        let _ = writeln!(out, "{} {}", row_name(k), c[k]);
    }
    // Only several workers hand packets over.
    for k in [Counter::HandedOff] {
        if c[k] > 0 {
            let _ = writeln!(out, "{} {}", row_name(k), c[k]);
        }
    }
    for &r in DropReason::ALL {
        if c[r] > 0 {
            let _ = writeln!(out, "drop {} {}", r.name(), c[r]);
        }
    }
}

fn row_name(k: Counter) -> &'static str {
    crate::dataplane::pipeline::row_info(k as usize).name
}
