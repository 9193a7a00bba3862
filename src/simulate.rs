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

/// Replays `input` as received on port `in_port`; writes forwarded and reply
/// packets to `output`; returns the counters. With `trace`, one line per packet.
pub fn run(
    cfg: &Validated,
    input: &Path,
    output: &Path,
    in_port: u16,
    mut trace: Option<&mut dyn Write>,
) -> Result<Counters, SimulateError> {
    let state = build_state(cfg, 1, &simulated_facts(cfg))?;
    let mut worker = Worker::new(worker_config(cfg));
    let f = std::fs::File::open(input).map_err(|e| SimulateError::Io(input.display().to_string(), e))?;
    let reader = pcap::Reader::new(std::io::BufReader::new(f))
        .map_err(|e| SimulateError::Pcap(input.display().to_string(), e))?;
    let out =
        std::fs::File::create(output).map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    let mut writer = pcap::Writer::new(std::io::BufWriter::new(out))
        .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    for (i, rec) in reader.enumerate() {
        let rec = rec.map_err(|e| SimulateError::Pcap(input.display().to_string(), e))?;
        let now_ms = rec.ts_sec as u64 * 1000 + rec.ts_nsec as u64 / 1_000_000;
        let mut pkt = TestPacket::new(&rec.data);
        let v = worker.process(&state, &mut pkt, in_port, now_ms);
        if let Some(t) = trace.as_deref_mut() {
            let _ = writeln!(t, "{i} {}", verdict_text(v));
        }
        if matches!(v, Verdict::Forward { .. } | Verdict::Reply { .. }) {
            writer
                .write(rec.ts_sec, rec.ts_nsec / 1000, pkt.data())
                .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
        }
    }
    writer
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| SimulateError::Io(output.display().to_string(), e))?;
    Ok(worker.counters)
}

/// `forward:1`, `reply:0`, `local`, `drop:no_service`.
pub fn verdict_text(v: Verdict) -> String {
    match v {
        Verdict::Forward { port } => format!("forward:{port}"),
        Verdict::Reply { port } => format!("reply:{port}"),
        Verdict::Local => "local".into(),
        Verdict::Drop(r) => format!("drop:{}", r.name()),
    }
}

/// The counts of the pipeline's own counters (what `simulate` can see: no
/// ports, no polls) and of each drop reason that occurred.
pub fn report(c: &Counters, out: &mut dyn Write) {
    for k in [Counter::Forwarded, Counter::Replied, Counter::Local, Counter::NewFlows, Counter::Rescheduled] {
        let _ = writeln!(out, "{} {}", row_name(k), c[k]);
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
