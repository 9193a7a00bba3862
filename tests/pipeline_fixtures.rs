//! The fixture table: for each forwarding mode × address family and the edge
//! cases (ICMP errors, fragments, persistence, TTL, too-big, malformed input,
//! ARP/NDP/echo), an input frame → the exact output bytes and verdict.
//!
//! Expectations come from `tests/fixtures/gen_fixtures.py`: scapy builds the
//! frames (and so computes every length and checksum independently), and a
//! separate Python implementation of the documented hash and Maglev picks the
//! backends. The same cases then go through `l4lb simulate`, and tshark, with
//! checksum validation on, must decode its output without a complaint.
use std::path::{Path, PathBuf};
use std::process::Command;

use l4lb::control::config::Config;
use l4lb::control::state_build::{build_state, simulated_facts, worker_config};
use l4lb::dataplane::packet::{Packet, TestPacket};
use l4lb::dataplane::pipeline::Worker;
use l4lb::simulate::verdict_text;

const PYTHON: &str = "/usr/bin/python3";

struct Case {
    name: String,
    port: u16,
    time_ms: u64,
    input: Vec<u8>,
    verdict: String,
    output: Option<Vec<u8>>,
    /// The client's packet is malformed inside (l4lb forwards it as it came):
    /// left out of the tshark decoding check, which judges l4lb's headers.
    inner_malformed: bool,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<Case> {
    let out = Command::new(PYTHON)
        .arg(fixtures_dir().join("gen_fixtures.py"))
        .output()
        .expect("python3 with scapy (scripts/setup.sh installs python3-scapy)");
    assert!(out.status.success(), "gen_fixtures.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            port: c["port"].as_u64().unwrap() as u16,
            time_ms: c["time_ms"].as_u64().unwrap(),
            input: unhex(c["input"].as_str().unwrap()),
            verdict: c["verdict"].as_str().unwrap().to_owned(),
            output: c["output"].as_str().map(unhex),
            inner_malformed: c["inner_malformed"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn diff(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "lengths {} vs {}, first difference at byte {at}\n  got  {}\n  want {}",
        got.len(),
        want.len(),
        hex(&got[at.saturating_sub(4)..got.len().min(at + 24)]),
        hex(&want[at.saturating_sub(4)..want.len().min(at + 24)])
    )
}

#[test]
fn every_fixture_gives_its_verdict_and_exact_bytes() {
    let cfg = Config::load(&fixtures_dir().join("fixtures.toml")).unwrap();
    let state = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
    let mut worker = Worker::new(worker_config(&cfg));
    let cases = cases();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for c in &cases {
        let mut p = TestPacket::new(&c.input);
        let v = verdict_text(worker.process(&state, &mut p, c.port, c.time_ms));
        if v != c.verdict {
            failures.push(format!("{}: verdict {v}, want {}", c.name, c.verdict));
            continue;
        }
        if let Some(want) = &c.output {
            if p.data() != &want[..] {
                failures.push(format!("{}: {}", c.name, diff(p.data(), want)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn simulate_replays_the_fixtures_and_tshark_decodes_the_output_cleanly() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| !c.inner_malformed).collect();
    let dir = std::env::temp_dir().join(format!("l4lb-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));
    {
        let f = std::fs::File::create(&inp).unwrap();
        let mut w = l4lb::pcap::Writer::new(std::io::BufWriter::new(f)).unwrap();
        for c in &cases {
            assert_eq!(c.port, 0);
            w.write((c.time_ms / 1000) as u32, (c.time_ms % 1000 * 1000) as u32, &c.input).unwrap();
        }
        w.into_inner().unwrap();
    }
    let run = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args(["simulate", "--trace", "--config"])
        .arg(fixtures_dir().join("fixtures.toml"))
        .arg("--in")
        .arg(&inp)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "simulate failed: {}", String::from_utf8_lossy(&run.stderr));
    let trace: Vec<&str> =
        stdout.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    assert_eq!(trace.len(), cases.len());
    for (line, c) in trace.iter().zip(&cases) {
        assert!(line.ends_with(&format!(" {}", c.verdict)), "{}: {line}", c.name);
    }
    let want: Vec<&Vec<u8>> = cases.iter().filter_map(|c| c.output.as_ref()).collect();
    let got = l4lb::pcap::read_file(&out).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g.data, *w);
    }
    let forwarded = cases.iter().filter(|c| c.verdict.starts_with("forward")).count();
    assert!(stdout.contains(&format!("forwarded {forwarded}\n")), "{stdout}");

    // Independent decoding: nothing malformed, and every checksum l4lb
    // writes or keeps (IP headers, GUE's UDP, ICMP it builds) verifies. TCP
    // checksums are the clients' (and quoted or fragmented segments cannot
    // verify), so they are not judged here.
    let tshark = |args: &[&str]| {
        let o = Command::new("tshark")
            .args([
                "-n",
                "-r",
                out.to_str().unwrap(),
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
            ])
            .args(args)
            .output()
            .expect("tshark (scripts/setup.sh installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = tshark(&["-V"]);
    assert!(!text.contains("Malformed"), "tshark finds a malformed frame:\n{text}");
    assert!(text.matches("Internet Protocol Version 4").count() >= 10, "no IP-in-IP seen");
    let fields = tshark(&[
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-e",
        "frame.number",
        "-e",
        "ip.checksum.status",
        "-e",
        "udp.checksum.status",
        "-e",
        "icmp.checksum.status",
        "-e",
        "icmpv6.checksum.status",
    ]);
    let mut verified = 0;
    for line in fields.lines() {
        let mut cols = line.split(';');
        let frame = cols.next().unwrap();
        for status in cols.flat_map(|c| c.split(',')).filter(|s| !s.is_empty()) {
            // 0 bad, 1 good, 2 unverified, 3 not present (UDP over IPv4 without checksum).
            assert_ne!(status, "0", "frame {frame}: a bad checksum ({line})");
            verified += (status == "1") as usize;
        }
    }
    assert!(verified >= want.len(), "only {verified} checksums verified");
    std::fs::remove_dir_all(&dir).unwrap();
}
