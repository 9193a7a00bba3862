//! The fuzz targets' bodies (`tests/fuzz/`, run with `cargo fuzz`; see
//! `docs/architecture.md`, "Fuzzing"): each takes arbitrary bytes and
//! panics only where an invariant breaks. They live in the library so the
//! fast tier replays the committed corpus through them (`tests/fuzz_corpus.rs`)
//! without a fuzzer.
//!
//! - [`parsers`]: every packet view on the bytes, then the IPv4 and IPv6 fast
//!   paths against the general parser on each frame;
//! - [`pipeline`]: two workers on a forwarding state drawn from the first
//!   bytes, fed frames, bursts, sweeps and a state swap; what they forward,
//!   answer or fragment must be well formed;
//! - [`config`]: `l4lb check` on the bytes as a configuration: a
//!   configuration that validates must build its forwarding state;
//! - [`control`]: the control API's request parser: a request it takes must
//!   come back the same from its own wire form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::balancer::access::{AccessList, Lists, Prefix};
use crate::balancer::flowtable::Timeouts;
use crate::balancer::state::{
    Backend, Forwarding, ForwardingState, OverQuota, PortIdentity, Quota, Scheduler, ServiceSpec,
    ServiceStats, VipPathTarget,
};
use crate::balancer::NoPrefetch;
use crate::dataplane::packet::{Packet, TestPacket};
use crate::dataplane::pipeline::harness::{check_output, differential_worker, fast_paths_agree, two_ports};
use crate::dataplane::pipeline::{
    fragment_frames, l2_len, vip_path_answer, Answer, Verdict, VipPathPorts, Worker, WorkerConfig,
    VIP_PATH_PORTS,
};
use crate::net::ipv4;

/// Bytes read from the front; zeros once they run out.
struct Draw<'a>(&'a [u8]);

impl Draw<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n.max(1)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Frames as the `parsers` and `pipeline` targets read them: a length
/// (little-endian u16, modulo 2048) and that many bytes.
fn frame<'a>(d: &mut Draw<'a>) -> &'a [u8] {
    let n = d.u16() as usize % 2048;
    let (a, b) = d.0.split_at(n.min(d.0.len()));
    d.0 = b;
    a
}

/// Every packet view on `data`, then the fast paths against the general
/// parser on each frame in it (a byte whose low bit is the port, then a
/// frame), one worker seeing them all.
pub fn parsers(data: &[u8]) {
    crate::net::exercise_views(data);
    let (st, mut w) = differential_worker();
    let mut d = Draw(data);
    while !d.is_empty() {
        let in_port = (d.u8() & 1) as u16;
        let f = frame(&mut d);
        crate::net::exercise_views(f);
        if let Err(e) = fast_paths_agree(st, &mut w, in_port, f) {
            panic!("{e}");
        }
    }
}

/// The VIPs a drawn service may have: the fixtures' (so the seed corpus's
/// frames meet services), one of them port 1's own address (a VIP too,
/// balanced only when it arrives on port 0).
const VIPS: [IpAddr; 7] = [
    IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
    IpAddr::V4(Ipv4Addr::new(198, 18, 100, 2)),
    IpAddr::V4(Ipv4Addr::new(198, 18, 100, 3)),
    IpAddr::V4(Ipv4Addr::new(198, 18, 100, 4)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 4)),
];

/// A forwarding state drawn from the bytes: two ports, one to four
/// services on [`VIPS`] with any forwarding mode, scheduler,
/// persistence, backends (either family, weights, drains, unknown MACs),
/// access list and quota.
fn draw_state(d: &mut Draw, generation: u64) -> ForwardingState {
    let ports = two_ports(PortIdentity {
        mtu: [1500, 1280, 9000, 576][d.below(4)],
        kernel: d.bool(),
        punt_unknown_vip_ports: d.bool(),
        ..Default::default()
    });
    let mut id = 0u32;
    let mut specs: Vec<ServiceSpec> = Vec::new();
    for s in 0..1 + d.below(4) {
        let vip = VIPS[d.below(VIPS.len())];
        let proto = if d.bool() { 6 } else { 17 };
        let port = [80, 0, 53, 443][d.below(4)];
        if specs.iter().any(|x| x.vip == vip && x.proto == proto && x.port == port) {
            continue;
        }
        let forwarding = [Forwarding::L2, Forwarding::IpIp, Forwarding::Gue { port: 6080 }][d.below(3)];
        let scheduler = match d.below(7) {
            0 => Scheduler::Maglev,
            1 => Scheduler::SourceIp { v4_prefix: d.below(33) as u8, v6_prefix: d.below(129) as u8 },
            2 => Scheduler::RoundRobin,
            3 => Scheduler::WeightedRoundRobin,
            4 => Scheduler::LeastConnections,
            5 => Scheduler::WeightedLeastConnections,
            _ => Scheduler::LeastResponseTime,
        };
        let persistence_ms = if d.below(4) == 0 { 1000 * (1 + d.below(30) as u64) } else { 0 };
        let backends = (0..1 + d.below(5))
            .map(|i| {
                id += 1;
                let v6 = d.bool();
                let b = crate::dataplane::testframes::backend(i as u32, v6);
                Backend {
                    id,
                    weight: d.below(4) as u32,
                    draining: d.below(8) == 0,
                    rtt_us: d.u8() as u32 * 10,
                    next_hop: if d.below(8) == 0 { None } else { b.next_hop },
                    port: d.below(2),
                    ..b
                }
            })
            .collect();
        let access = if d.below(4) == 0 {
            let allow = if d.bool() {
                let n = 1 + d.below(3);
                Some(prefixes(d, n))
            } else {
                None
            };
            let n = d.below(3);
            let lists = Lists { allow, deny: prefixes(d, n) };
            AccessList::build(&Lists { allow: None, deny: Vec::new() }, &lists).map(std::sync::Arc::new)
        } else {
            None
        };
        let hashing = matches!(scheduler, Scheduler::Maglev | Scheduler::SourceIp { .. });
        let quota = (d.below(3) == 0).then(|| Quota {
            new_flows_per_s: d.below(5) as u64,
            new_flows_burst: 1 + d.below(3) as u64,
            table_share_milli: 1 + d.below(1000) as u32,
            over: if hashing && persistence_ms == 0 && d.bool() {
                OverQuota::Stateless
            } else {
                OverQuota::Drop
            },
        });
        specs.push(ServiceSpec {
            name: format!("s{s}"),
            vip,
            proto,
            port,
            forwarding,
            scheduler,
            persistence_ms,
            timeouts: Timeouts {
                tcp_syn_ms: 1000,
                tcp_established_ms: 5000,
                tcp_closing_ms: 1000,
                udp_ms: 3000,
                other_ms: 2000,
            },
            answer_arp: d.bool(),
            maglev_size: if d.bool() { 13 } else { 251 },
            backends,
            access,
            stats: ServiceStats::new(2),
            quota,
        });
    }
    let mut st = ForwardingState::build(generation, ports, specs).expect("a drawn state builds");
    // Every backend of its VIP's family checked through the VIP's path.
    let targets = st
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |&slot| (s, slot as usize)))
        .filter_map(|(s, slot)| {
            let backend = st.backends[slot].clone();
            (backend.addr.is_ipv4() == s.vip.is_ipv4()).then_some(VipPathTarget {
                vip: s.vip,
                forwarding: s.forwarding,
                backend,
            })
        })
        .collect();
    st.set_vip_paths(targets);
    st
}

/// `n` prefixes of 198.18.0.0/15 and 2001:db8::/32 (those with host bits
/// set left out).
fn prefixes(d: &mut Draw, n: usize) -> Vec<Prefix> {
    (0..n)
        .filter_map(|_| {
            let text = if d.bool() {
                format!("198.18.{}.0/{}", d.u8(), 16 + d.below(9))
            } else {
                format!("2001:db8:{:x}::/{}", d.u16(), 32 + d.below(17))
            };
            text.parse().ok()
        })
        .collect()
}

/// What leaves the box for a verdict must be well formed: forwarded and
/// answered frames (`check_output`), and a fragmented packet's fragments,
/// each within the MTU with a right header checksum, together the packet.
fn check_verdict(st: &ForwardingState, input: &[u8], out: &[u8], v: Verdict) {
    match v {
        Verdict::Forward { .. } => check_output(input, out, true),
        Verdict::Reply { .. } => check_output(input, out, false),
        Verdict::Fragment { port } => {
            check_output(input, out, true);
            let l2 = l2_len(out);
            let mtu = st.ports[port as usize].mtu as usize;
            let whole = ipv4::Packet::new_checked(&out[l2..]).expect("an IPv4 packet to fragment");
            let payload = &out[l2 + whole.header_len()..l2 + whole.total_len()];
            let mut joined = Vec::new();
            for f in fragment_frames(out, l2, mtu) {
                let p = ipv4::Packet::new_checked(&f[l2..]).expect("a fragment");
                assert!(p.header_checksum_ok() && p.total_len() <= mtu, "fragment {f:02x?}");
                assert_eq!(p.frag_offset(), joined.len(), "fragments out of order");
                joined.extend_from_slice(p.payload());
            }
            assert_eq!(joined, payload, "the fragments are not the packet");
        }
        _ => {}
    }
}

/// The bytes each drawn state is made from.
pub const STATE_BYTES: usize = 192;

/// Two workers (flow tables of 64, one persistence table) on a state drawn
/// from the first bytes, and a second state to swap to; then operations
/// until the bytes run out: a frame (to either worker, on either port), a
/// burst of frames, a sweep, or the swap. Time moves on by each operation's
/// byte. A hand-off goes to the worker named, which must decide it within
/// two hops.
pub fn pipeline(data: &[u8]) {
    // Each state from its own fixed share of the front (zeros where the
    // bytes are short), so a seed's operations start at a known place.
    let (head, ops) = data.split_at(data.len().min(2 * STATE_BYTES));
    let (a, b) = head.split_at(head.len().min(STATE_BYTES));
    let states = [draw_state(&mut Draw(a), 1), draw_state(&mut Draw(b), 2)];
    let mut d = Draw(ops);
    let mut st = &states[0];
    let cfg = WorkerConfig::small();
    let mut workers = Worker::team(cfg, 2);
    let mut now = 1000u64;
    // Every VIP-path source port claimed, for the drawn states' first ids.
    let vip_ports = std::sync::Arc::new(VipPathPorts::default());
    let _claims: Vec<_> = (0..VIP_PATH_PORTS).filter_map(|i| vip_ports.claim(1 + (i % 12) as u32)).collect();
    while !d.is_empty() {
        let op = d.u8();
        now += (op >> 4) as u64 * 97;
        let (w, in_port) = ((op & 1) as usize, ((op >> 1) & 1) as u16);
        match (op >> 2) & 3 {
            0 | 1 => {
                let f = frame(&mut d);
                let mut p = TestPacket::new(f);
                let v = workers[w].process(st, &mut p, in_port, now);
                follow(st, &mut workers, f, p, v, in_port, now, w);
                // The same frame from the box's kernel (a VIP-path check's
                // packet, perhaps), and as an answer to one.
                let mut p = TestPacket::new(f);
                if let Some(v) = workers[w].vip_path_out(st, &mut p, in_port, now, &vip_ports) {
                    check_vip_path_out(f, p.data(), v);
                }
                let mut answer = f.to_vec();
                if vip_path_answer(st, &mut answer, &vip_ports) == Answer::Translated {
                    assert_eq!(answer.len(), f.len(), "an answer changed length");
                }
            }
            2 => {
                let frames: Vec<&[u8]> = (0..1 + d.below(8)).map(|_| frame(&mut d)).collect();
                let mut pkts: Vec<TestPacket> = frames.iter().map(|f| TestPacket::new(f)).collect();
                let mut verdicts = vec![Verdict::Local; pkts.len()];
                workers[w].process_burst(st, &mut pkts, in_port, now, &mut verdicts, &NoPrefetch);
                for ((f, p), v) in frames.into_iter().zip(pkts).zip(verdicts) {
                    follow(st, &mut workers, f, p, v, in_port, now, w);
                }
            }
            _ => {
                if op & 0x40 != 0 {
                    st = if std::ptr::eq(st, &states[0]) { &states[1] } else { &states[0] };
                } else {
                    workers[w].sweep(now, 1 + d.below(8));
                }
            }
        }
    }
}

/// A VIP-path check's packet leaves as a client's would: the kernel's IP
/// packet inside (readdressed to the VIP, so only its length is compared),
/// or a counted drop.
fn check_vip_path_out(input: &[u8], out: &[u8], v: Verdict) {
    match v {
        Verdict::Forward { .. } | Verdict::Fragment { .. } => {
            let (l2_in, l2_out) = (l2_len(input), l2_len(out));
            assert!(out.len() >= input.len() - l2_in + l2_out, "a check's packet lost bytes");
        }
        Verdict::Drop(_) | Verdict::Reply { .. } => {}
        other => panic!("a VIP-path check's packet got {other:?}"),
    }
}

/// Checks a verdict, following hand-offs to the worker they name.
#[allow(clippy::too_many_arguments)]
fn follow(
    st: &ForwardingState,
    workers: &mut [Worker],
    input: &[u8],
    mut p: TestPacket,
    mut v: Verdict,
    in_port: u16,
    now: u64,
    origin: usize,
) {
    let mut hops = 0;
    while let Verdict::Handoff { worker } = v {
        hops += 1;
        assert!(hops <= workers.len(), "handed on {hops} times");
        assert_eq!(p.data(), input, "a handed-over packet changed");
        let to = worker as usize;
        assert!(to < workers.len(), "handed to worker {to} of {}", workers.len());
        v = workers[to].process_handed(st, &mut p, in_port, now, origin as u16);
    }
    check_verdict(st, input, p.data(), v);
}

/// `l4lb check` on the bytes as a configuration file's text (its own parse
/// and validation, then what `run` would build from it): whatever
/// validates must build a forwarding state and the BIRD configuration.
pub fn config(data: &[u8]) {
    use crate::control::config::Config;
    use crate::control::state_build::{build_state, simulated_facts, worker_config};
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Read in pieces (as a reload reads the main file), the text must parse
    // as it does whole: the same configuration, or an error both ways.
    let mut cache = crate::control::config::ConfigCache::default();
    let pieces = Config::parse_cached(text, "fuzz.toml", &mut cache);
    let whole = Config::parse(text, "fuzz.toml");
    assert_eq!(pieces.as_ref().ok(), whole.as_ref().ok(), "in pieces and whole");
    let Ok(cfg) = whole else { return };
    let Ok(v) = cfg.validate("fuzz.toml") else { return };
    let _ = v.cpu_problem();
    let _ = worker_config(&v);
    if let Err(e) = build_state(&v, 1, &simulated_facts(&v)) {
        panic!("validated but does not build: {e}");
    }
    if v.config.bgp.is_some() {
        let _ = crate::control::bird::config_text(&v.config, "fuzz.toml");
    }
}

/// The control API's request parser on the bytes as a request line: a
/// request it takes must come back the same from its own wire form.
pub fn control(data: &[u8]) {
    use crate::control::api::{parse_request, request_line};
    if let Ok(req) = parse_request(data) {
        let line = request_line(&req);
        assert_eq!(parse_request(line.trim_end().as_bytes()).as_ref(), Ok(&req), "{line}");
    }
}
