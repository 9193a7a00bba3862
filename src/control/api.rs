//! The control protocol, shared by l4lb and `l4lb ctl`: JSON lines over a unix
//! socket (mode 0600; the listeners are `server.rs`).
//!
//! Wire format: one JSON object per line each way. A request is
//! `{"v": 2, "cmd": "backends"}` (the protocol version, then fields by
//! command, see [`Request`]); the answer is `{"ok": true, "result": ...}`
//! with the request's reply type ([`Response`]) or `{"ok": false, "error":
//! "..."}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataplane::pipeline::{Counters, DROPS_METRIC};
use crate::dataplane::telemetry::WorkerStats;

pub use super::server::{start, ApiError, Call, Servers};

/// How long a client waits for an answer beyond the server's own wait for
/// the management loop.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The version of the control protocol. Every request carries it as `v`;
/// a server refuses a request of another version (or none) with an error
/// that names both, so an `l4lb ctl` of another release says what is wrong
/// instead of misreading the answer.
pub const PROTOCOL_VERSION: u32 = 2;

/// A control request: `{"v": 2, "cmd": "backends", "service": "web"}`.
/// Fields by command; unknown fields are refused, for every command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Services,
    Backends {
        #[serde(default)]
        service: Option<String>,
    },
    Stats,
    Drain {
        backend: String,
    },
    Undrain {
        backend: String,
    },
    SetWeight {
        backend: String,
        weight: u32,
    },
    Reload,
    /// Which backend a flow gets.
    Lookup {
        proto: Protocol,
        src: SocketAddr,
        dst: SocketAddr,
    },
    /// What would move if a backend changed.
    Whatif {
        backend: String,
        change: Change,
    },
    /// Each VIP's announcement and the BGP sessions.
    Bgp,
    /// Take the box out of the fleet: GRACEFUL_SHUTDOWN, withdraw every
    /// VIP, keep forwarding for `shutdown_drain_s`, then stop (as SIGTERM),
    /// or stay up unannounced with `keep_running` (until `undrain-box`).
    DrainBox {
        #[serde(default)]
        keep_running: bool,
    },
    /// Announce again after `drain-box --keep-running`.
    UndrainBox,
    /// Flow sync with the peer boxes.
    Sync,
}

/// A transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::net::proto::TCP,
            Protocol::Udp => crate::net::proto::UDP,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A change `whatif` is asked about: `remove` (or `down`), `drain`,
/// `weight=N` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Remove,
    Drain,
    Weight(u32),
}

impl std::str::FromStr for Change {
    type Err = String;
    fn from_str(s: &str) -> Result<Change, String> {
        match s {
            "remove" | "down" => Ok(Change::Remove),
            "drain" => Ok(Change::Drain),
            w => match w.strip_prefix("weight=").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if n <= MAX_WEIGHT => Ok(Change::Weight(n)),
                _ => Err(format!("change `{w}`: say remove, drain or weight=N (N from 0 to {MAX_WEIGHT})")),
            },
        }
    }
}

/// The largest backend weight.
pub const MAX_WEIGHT: u32 = 65_535;

/// `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// l4lb's version.
    pub version: String,
    pub uptime_s: u64,
    /// The configuration file it reloads from.
    pub config: Option<String>,
    /// The newest forwarding state built, and the one each worker uses.
    pub generation: u64,
    pub worker_generations: Vec<u64>,
    pub workers: usize,
    /// The workers' time-stamp counter rate.
    pub tsc_hz: u64,
    pub ports: Vec<PortStatus>,
    pub services: usize,
    pub backends: usize,
    pub backends_not_down: usize,
    pub flows: u64,
    pub rx_packets: u64,
    pub reloads: Reloads,
}

/// A port in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortStatus {
    pub name: String,
    pub device: String,
    /// The link as the driver reports it; none when it cannot tell (a TAP
    /// port whose kernel interface was moved to another network namespace:
    /// DPDK reads the link by name in l4lb's own).
    pub link_up: Option<bool>,
    pub speed_mbps: Option<u32>,
    /// Why the link is unknown, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_note: Option<String>,
}

/// Reloads since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reloads {
    pub applied: u64,
    pub refused: u64,
    /// `applied`, or `refused: REASON`, for the last one.
    pub last: Option<String>,
}

/// A row of `services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRow {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: String,
    /// 0 for a service on every port.
    pub port: u16,
    pub forwarding: String,
    pub scheduler: String,
    pub backends: usize,
    /// Backends in the current state and not down.
    pub backends_in_service: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
    /// The check kind, when the service is health-checked.
    pub health_check: Option<String>,
    /// With `[routing]`: whether the VIP is announced now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<bool>,
    /// Prefixes in the service's access lists (global ones included); none
    /// without lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_prefixes: Option<usize>,
    /// New flows the access lists refused.
    #[serde(default)]
    pub denied_flows: u64,
    /// The service's quota in words (`services.quota`); none without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// Packets of new flows over the quota: dropped, and sent without a
    /// flow-table entry (`over_quota = "stateless"`).
    #[serde(default)]
    pub over_quota_dropped: u64,
    #[serde(default)]
    pub over_quota_stateless: u64,
}

/// A row of `backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRow {
    pub service: String,
    pub backend: IpAddr,
    /// The backend's id (stable across reloads).
    pub id: u32,
    /// `unknown` (not checked yet), `up` or `down`.
    pub health: String,
    pub draining: bool,
    /// Whether the current forwarding state has it.
    pub in_state: bool,
    /// The configured weight, a `set-weight` override, and what the state
    /// uses now (slow start and drain included).
    pub weight: u32,
    pub weight_override: Option<u32>,
    pub effective_weight: u32,
    /// Maglev entries it holds.
    pub table_entries: u64,
    pub active_flows: u64,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    pub bps: f64,
    /// The last successful check's round trip.
    pub rtt_us: Option<u32>,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// Checks this box could not make (no socket, source address not up):
    /// they leave the health as it was.
    pub checks_not_run: u64,
    pub last_error: Option<String>,
    /// New flows whose client sent its SYN again (passive health).
    #[serde(default)]
    pub syn_retried: u64,
    /// Why passive health finds the backend failing (none: it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<String>,
    /// The mean TCP handshake of its new flows over the last window, in µs,
    /// from traffic (none: no handshake in the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_us: Option<u32>,
    /// The path its health checks take: `vip` (as a client's packet, through
    /// the backend's rewrite) or `backend` (its own address); none without
    /// checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_via: Option<String>,
}

/// What `drain`, `undrain`, `set-weight` and `reload` changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// The forwarding state built for the change.
    pub generation: u64,
    /// How long until every worker used it (ms); none when not every worker
    /// confirmed within 2 s.
    pub applied_ms: Option<f64>,
    /// The backends the change named (SERVICE/ADDRESS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// What a reload changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadChanges>,
}

/// What a reload changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadChanges {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub weights_changed: Vec<String>,
    /// The files read (the main file and those it includes) and how many of
    /// them were parsed (the others had not changed).
    #[serde(default)]
    pub files_read: usize,
    #[serde(default)]
    pub files_parsed: usize,
    /// From the request to the new state on every worker (or, where not
    /// every worker confirmed it, to its publication), ms.
    #[serde(default)]
    pub took_ms: f64,
}

/// `lookup`: the backend a flow gets, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    pub service: String,
    /// The documented flow hash (docs/maglev.md), hex.
    pub flow_hash: String,
    /// None: no backend takes new flows.
    pub backend: Option<IpAddr>,
    pub why: String,
}

/// A row of `whatif`: one backend of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatifRow {
    pub service: String,
    pub backend: IpAddr,
    pub table_size: u32,
    pub entries_moved: u64,
    pub tracked_flows_moved: u64,
    pub entries_before: Vec<Entries>,
    pub entries_after: Vec<Entries>,
}

/// Maglev entries of one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entries {
    pub backend: IpAddr,
    pub entries: u64,
}

/// `bgp`: what the box announces and, with `[bgp]`, the sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpStatus {
    /// `announcing`, `graceful-shutdown`, `withdrawn` (drained, stopping or
    /// kept running unannounced).
    pub box_state: String,
    /// The kernel table the VIPs' routes are kept in.
    pub table: u32,
    pub vips: Vec<VipRow>,
    /// With `[bgp]`: whether l4lb's BIRD answers, how often it was started
    /// again, and the last error asking it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonRow>,
    pub peers: Vec<PeerRow>,
}

/// A VIP in `bgp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipRow {
    pub vip: IpAddr,
    pub services: Vec<String>,
    pub announced: bool,
    /// Why it is (not) announced.
    pub reason: String,
}

/// l4lb's BIRD in `bgp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonRow {
    pub running: bool,
    pub restarts: u64,
    pub socket: String,
    pub error: Option<String>,
}

/// A BGP session in `bgp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRow {
    pub name: String,
    pub address: IpAddr,
    pub remote_as: u32,
    /// BIRD's BGP state (`Established`, `Active`, `Connect`, ...).
    pub state: String,
    pub up: bool,
    /// When the protocol last changed state (BIRD's clock).
    pub since: Option<String>,
    pub exported_routes: Option<u64>,
    /// The BFD session's state, with `[bgp.bfd]`.
    pub bfd: Option<String>,
    pub last_error: Option<String>,
}

/// `sync`: flow sync with the peer boxes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncStatus {
    pub port: u16,
    /// Every peer sent what it shares (or the warm-up timeout passed).
    pub warm: bool,
    /// Flows this box tracks and shares (their backend is not the tables' choice now).
    pub shared_flows: u64,
    /// Live entries received from peers, and the table's size.
    pub received_flows: u64,
    pub table_capacity: u64,
    /// Entries installed from peers; of those, ones that took a full set's
    /// nearest-expiry slot.
    pub installed: u64,
    pub evicted: u64,
    /// Entries for a service or backend this box does not have.
    pub unknown: u64,
    /// Connections from addresses not in `sync.peers`.
    pub refused_connections: u64,
    /// Connections closed for a malformed message.
    pub bad_messages: u64,
    /// Lag of the batches received (queued on the peer → installed here, by
    /// the two clocks): how many, the bucket bounds (ms) half and 99% of them
    /// fell under, the longest, the sum, and the counts per bucket of
    /// `control::sync::LAG_BUCKETS_MS` (then one for longer).
    pub lag_batches: u64,
    pub lag_ms_p50: Option<u64>,
    pub lag_ms_p99: Option<u64>,
    pub lag_ms_max: u64,
    pub lag_ms_sum: u64,
    pub lag_buckets: Vec<u64>,
    pub peers: Vec<SyncPeerRow>,
}

/// A peer in `sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPeerRow {
    pub address: IpAddr,
    /// This box's connection to it is up; its connection to this box is up.
    pub sending: bool,
    pub receiving: bool,
    /// It sent everything it shared when its connection came up.
    pub dump_received: bool,
    pub sent: u64,
    pub sent_bytes: u64,
    /// Entries dropped because its queue was full.
    pub dropped: u64,
    pub received: u64,
    pub queued: u64,
    pub last_error: Option<String>,
}

/// What `drain-box` and `undrain-box` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxDrain {
    pub box_state: String,
    /// The VIPs withdrawn (or announced again).
    pub vips: Vec<IpAddr>,
    /// Whether l4lb stops at the end of the drain.
    pub stopping: bool,
}

/// Every answer, as the server sends it (`result`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Status(Box<Status>),
    Services(Vec<ServiceRow>),
    Backends(Vec<BackendRow>),
    Stats(Box<Stats>),
    Applied(Applied),
    Lookup(Lookup),
    Whatif(Vec<WhatifRow>),
    Bgp(Box<BgpStatus>),
    BoxDrain(BoxDrain),
    Sync(Box<SyncStatus>),
}

/// The management loop's answer.
pub type Reply = Result<Response, String>;

/// One answer line: `{"ok": true, "result": ...}` or `{"ok": false,
/// "error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer<T> {
    pub(super) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// `stats`: every worker counter, summed and per worker, and the ports'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Every row of the workers' counter table (`dataplane::pipeline::
    /// counters`), summed over workers, by name; drop reasons among them.
    pub counters: BTreeMap<String, u64>,
    /// The drop reasons' rows alone (also in `counters`).
    pub drops: BTreeMap<String, u64>,
    /// Every packet dropped, whatever the reason.
    pub dropped: u64,
    pub flows: u64,
    pub flow_capacity: u64,
    /// The newest forwarding state built.
    pub generation: u64,
    pub workers: Vec<WorkerStatsRow>,
    pub ports: Vec<PortCounters>,
}

impl Stats {
    /// The reply from each worker's published counters (`per`, by worker
    /// index), the newest state's generation and the ports' counters.
    pub fn from_workers(per: &[WorkerStats], generation: u64, ports: Vec<PortCounters>) -> Stats {
        let mut t = WorkerStats::default();
        for w in per {
            t += *w;
        }
        let by_name = |c: &Counters| c.rows().map(|(i, v)| (i.name.to_owned(), v)).collect();
        Stats {
            counters: by_name(&t.counters),
            drops: t
                .counters
                .rows()
                .filter(|(i, _)| i.metric == DROPS_METRIC)
                .map(|(i, v)| (i.name.to_owned(), v))
                .collect(),
            dropped: t.counters.dropped(),
            flows: t.flows,
            flow_capacity: t.flow_capacity,
            generation,
            workers: per
                .iter()
                .map(|w| WorkerStatsRow {
                    counters: by_name(&w.counters),
                    flows: w.flows,
                    generation: w.generation,
                    longest_poll_gap_us: w.longest_poll_gap_us,
                })
                .collect(),
            ports,
        }
    }
}

/// One worker's counters (by name) and gauges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStatsRow {
    pub counters: BTreeMap<String, u64>,
    pub flows: u64,
    /// The forwarding-state generation the worker uses.
    pub generation: u64,
    pub longest_poll_gap_us: u64,
}

/// One port's device counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCounters {
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_no_mbuf: u64,
    /// The exception path, on a port with a kernel interface: packets sent
    /// to the kernel, packets from it sent on the port, and those dropped on
    /// the way (workers' punt drops are in the drop counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_kernel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_kernel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_dropped: Option<u64>,
}

/// Parses one request line: the protocol version first, then the request,
/// refusing any field the request's command does not have.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let mut v: Value = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Err("bad request: not a JSON object".into());
    };
    let mine = env!("CARGO_PKG_VERSION");
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION as u64) => {}
        Some(other) => {
            return Err(format!(
                "control protocol version {other} is not spoken here: l4lb {mine} speaks version \
                 {PROTOCOL_VERSION}; use the l4lb ctl of the same release"
            ))
        }
        None => {
            return Err(format!(
                "the request names no control protocol version (`v`): l4lb {mine} speaks version \
                 {PROTOCOL_VERSION}; use the l4lb ctl of the same release"
            ))
        }
    }
    let sent: Vec<String> = obj.keys().cloned().collect();
    let req: Request = serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))?;
    // Serde lets fields through beside a command without fields (`reload`):
    // the request's own fields are those it serializes back to.
    let known = serde_json::to_value(&req).unwrap_or_default();
    if let Some(extra) = sent.iter().find(|k| known.get(k.as_str()).is_none()) {
        return Err(format!(
            "bad request: unknown field `{extra}` for `{}`",
            known["cmd"].as_str().unwrap_or("?")
        ));
    }
    Ok(req)
}

/// The wire form of a request: its fields and the protocol version.
pub fn request_line(req: &Request) -> String {
    let mut v = serde_json::to_value(req).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("v".into(), PROTOCOL_VERSION.into());
    }
    v.to_string() + "\n"
}

pub(super) fn answer_line(r: Reply) -> String {
    let a = match r {
        Ok(result) => Answer { ok: true, result: Some(result), error: None },
        Err(error) => Answer { ok: false, result: None, error: Some(error) },
    };
    serde_json::to_string(&a).unwrap_or_default() + "\n"
}

/// Client side: sends one request and returns its result as JSON (the
/// serialized form of the request's reply type).
pub fn call(socket: &Path, req: &Request) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no control socket at {}: is l4lb running? (--socket or --config names another)",
            socket.display()
        ),
        std::io::ErrorKind::ConnectionRefused => {
            format!("{} is left over from an l4lb that is no longer running", socket.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("{}: permission denied (run as root)", socket.display())
        }
        _ => format!("{}: {e}", socket.display()),
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(5))).map_err(|e| e.to_string())?;
    // A server that refuses the connection answers before it reads: the
    // write may fail, and the answer is still there to read.
    let sent = s.write_all(request_line(req).as_bytes());
    let mut line = String::new();
    let read = BufReader::new(s).read_line(&mut line);
    if line.is_empty() {
        return Err(match (sent, read) {
            (Err(e), _) => format!("send: {e} (l4lb closed the connection without an answer)"),
            (_, Err(e)) => format!("no answer: {e}"),
            _ => "l4lb closed the connection without an answer".into(),
        });
    }
    let a: Answer<Value> = serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))?;
    match (a.ok, a.result, a.error) {
        (true, Some(r), _) => Ok(r),
        (_, _, Some(e)) => Err(e),
        _ => Err("bad answer: neither a result nor an error".into()),
    }
}

/// As [`call`], the result read as the request's reply type `T`.
pub fn call_as<T: serde::de::DeserializeOwned>(socket: &Path, req: &Request) -> Result<T, String> {
    let v = call(socket, req)?;
    serde_json::from_value(v).map_err(|e| format!("bad answer: {e} (is l4lb of another release?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let r =
            parse_request(br#"{"v":2,"cmd":"set-weight","backend":"web/198.18.0.11","weight":3}"#).unwrap();
        assert_eq!(r, Request::SetWeight { backend: "web/198.18.0.11".into(), weight: 3 });
        assert_eq!(request_line(&Request::Status), "{\"cmd\":\"status\",\"v\":2}\n");
        // Typed fields: addresses, protocols and changes are parsed by the
        // client and checked again here.
        let lookup = Request::Lookup {
            proto: Protocol::Udp,
            src: "[2001:db8::2]:40000".parse().unwrap(),
            dst: "198.18.100.1:53".parse().unwrap(),
        };
        assert_eq!(parse_request(request_line(&lookup).as_bytes()).unwrap(), lookup);
        let whatif = Request::Whatif { backend: "a".into(), change: Change::Weight(7) };
        assert_eq!(parse_request(request_line(&whatif).as_bytes()).unwrap(), whatif);
        for (line, why) in [
            (r#"{"v":2,"cmd":"drain"}"#, "missing field `backend`"),
            (r#"{"v":2,"cmd":"drain","backend":"a","x":1}"#, "unknown field `x`"),
            // Commands without fields refuse extra ones too.
            (r#"{"v":2,"cmd":"reload","file":"/etc/shadow"}"#, "unknown field `file` for `reload`"),
            (r#"{"v":2,"cmd":"status","x":null}"#, "unknown field `x` for `status`"),
            (
                r#"{"v":2,"cmd":"lookup","proto":"icmp","src":"1.2.3.4:1","dst":"1.2.3.4:2"}"#,
                "unknown variant `icmp`",
            ),
            (
                r#"{"v":2,"cmd":"lookup","proto":"tcp","src":"1.2.3.4","dst":"1.2.3.4:2"}"#,
                "invalid socket address",
            ),
            (r#"{"v":2,"cmd":"bogus"}"#, "unknown variant `bogus`"),
            (r#"[1]"#, "not a JSON object"),
            // Another release's client: the version, or none, is named.
            (r#"{"cmd":"status"}"#, "names no control protocol version"),
            (r#"{"v":1,"cmd":"status"}"#, "control protocol version 1 is not spoken here"),
        ] {
            let e = parse_request(line.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn changes_parse_from_the_command_line() {
        assert_eq!("remove".parse::<Change>(), Ok(Change::Remove));
        assert_eq!("down".parse::<Change>(), Ok(Change::Remove));
        assert_eq!("drain".parse::<Change>(), Ok(Change::Drain));
        assert_eq!("weight=3".parse::<Change>(), Ok(Change::Weight(3)));
        for bad in ["weight=x", "weight=65536", "stop"] {
            assert!(bad.parse::<Change>().unwrap_err().contains("say remove, drain or weight=N"), "{bad}");
        }
    }

    #[test]
    fn every_reply_type_reads_back_as_itself() {
        // What the server sends (Response) is what the client reads (the
        // reply type): a field renamed on one side fails here.
        let status = Status { version: "1".into(), workers: 2, ..Status::default() };
        let v = serde_json::to_value(Response::Status(Box::new(status.clone()))).unwrap();
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status);
        let row = BackendRow {
            service: "web".into(),
            backend: "198.18.0.11".parse().unwrap(),
            id: 1,
            health: "up".into(),
            draining: false,
            in_state: true,
            weight: 1,
            weight_override: Some(2),
            effective_weight: 2,
            table_entries: 10,
            active_flows: 3,
            new_flows: 4,
            packets: 5,
            bytes: 6,
            pps: 1.5,
            bps: 12.0,
            rtt_us: Some(100),
            checks_ok: 7,
            checks_failed: 0,
            checks_not_run: 0,
            last_error: None,
            syn_retried: 0,
            suspect: None,
            handshake_us: None,
            check_via: None,
        };
        let v = serde_json::to_value(Response::Backends(vec![row.clone()])).unwrap();
        assert_eq!(serde_json::from_value::<Vec<BackendRow>>(v).unwrap(), vec![row]);
        let applied = Applied {
            generation: 3,
            applied_ms: Some(0.2),
            backends: vec!["web/198.18.0.11".into()],
            reload: Some(ReloadChanges { services_added: vec!["x".into()], ..Default::default() }),
        };
        let v = serde_json::to_value(Response::Applied(applied.clone())).unwrap();
        assert_eq!(serde_json::from_value::<Applied>(v).unwrap(), applied);
        let l = Lookup { service: "web".into(), flow_hash: "00".into(), backend: None, why: "w".into() };
        let v = serde_json::to_value(Response::Lookup(l.clone())).unwrap();
        assert_eq!(serde_json::from_value::<Lookup>(v).unwrap(), l);
    }
}
