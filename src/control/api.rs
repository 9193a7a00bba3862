//! The control API: JSON lines over a unix socket (mode 0600), and the
//! Prometheus endpoint over HTTP. Both run on their own threads and pass
//! every question to the management loop over a channel, so all state stays
//! owned by the management core.
//!
//! Wire format: one JSON object per line each way. A request is
//! `{"v": 2, "cmd": "backends"}` (the protocol version, then fields by
//! command, see [`Request`]); the answer is `{"ok": true, "result": ...}`
//! with the request's reply type ([`Response`]) or `{"ok": false, "error":
//! "..."}`. Server and client share these types.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{bounded, Sender};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

/// The management loop's answer.
pub type Reply = Result<Response, String>;

/// One answer line: `{"ok": true, "result": ...}` or `{"ok": false,
/// "error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer<T> {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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
}

/// A question for the management loop.
pub enum Call {
    Api(Request, Sender<Reply>),
    Metrics(Sender<String>),
}

/// How long a connection waits for the management loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, per listener.
const MAX_CONNECTIONS: usize = 32;
/// A control connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("control socket {path}: {reason}")]
    Socket { path: String, reason: String },
    #[error("metrics address {addr} (control.metrics_address): {reason}")]
    Metrics { addr: String, reason: String },
}

/// The listening threads; they stop when this drops.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loops block in accept(): one connection to each wakes it
        // to see the flag. A loop that cannot be woken is left to end with
        // the process rather than waited for.
        let woken = [
            UnixStream::connect(&self.socket).is_ok(),
            self.metrics_addr.is_none_or(|a| {
                let ip = match a.ip() {
                    IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                TcpStream::connect_timeout(&SocketAddr::new(ip, a.port()), Duration::from_secs(1)).is_ok()
            }),
        ];
        for (t, woken) in self.threads.drain(..).zip(woken) {
            if woken {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds the control socket and the metrics address (if any) and starts
/// serving; every question goes to `calls`.
pub fn start(socket: &Path, metrics: &str, calls: Sender<Call>) -> Result<Servers, ApiError> {
    let sock_err = |reason: String| ApiError::Socket { path: socket.display().to_string(), reason };
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| sock_err(format!("cannot create {}: {e}", dir.display())))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(sock_err(
                "another l4lb answers on it: stop it, or give this one its own control.socket".into(),
            ));
        }
        // Left behind by an l4lb that did not exit cleanly.
        std::fs::remove_file(socket).map_err(|e| sock_err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(socket).map_err(|e| sock_err(e.to_string()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| sock_err(format!("chmod 0600: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let (s, c) = (stop.clone(), calls.clone());
    threads.push(spawn("l4lb-api", move || {
        accept_loop(&s, || listener.accept().map(|x| x.0), &c, serve_api, refuse_api)
    }));
    let mut metrics_addr = None;
    if !metrics.is_empty() {
        let m_err = |reason: String| ApiError::Metrics { addr: metrics.to_owned(), reason };
        let l = TcpListener::bind(metrics).map_err(|e| m_err(e.to_string()))?;
        metrics_addr = l.local_addr().ok();
        let (s, c) = (stop.clone(), calls);
        threads.push(spawn("l4lb-metrics", move || {
            accept_loop(&s, || l.accept().map(|x| x.0), &c, serve_http, refuse_http)
        }));
    }
    Ok(Servers { stop, threads, socket: socket.to_owned(), metrics_addr })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("spawn a control thread")
}

/// Accepts until `stop` (blocking: a request is served the moment it comes,
/// and an idle l4lb does not wake this thread); each connection gets its own
/// thread. Dropping [`Servers`] connects once to wake it.
fn accept_loop<S: Send + 'static>(
    stop: &AtomicBool,
    accept: impl Fn() -> std::io::Result<S>,
    calls: &Sender<Call>,
    serve: fn(S, Sender<Call>),
    refuse: fn(S),
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            // Over the limit the connection is answered with the reason and
            // closed: a client loop gone wrong must not pile up threads on
            // the management core.
            Ok(conn) if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS => refuse(conn),
            Ok(conn) => {
                let c = calls.clone();
                let open = open.clone();
                open.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new().name("l4lb-conn".into()).spawn({
                    let open = open.clone();
                    move || {
                        serve(conn, c);
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            // Out of descriptors or memory: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The answer a connection over [`MAX_CONNECTIONS`] gets before it is closed.
fn too_many_connections() -> String {
    format!(
        "too many control connections open ({MAX_CONNECTIONS}); l4lb closes a connection idle for {} s",
        IDLE_TIMEOUT.as_secs()
    )
}

fn refuse_api(mut conn: UnixStream) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = conn.write_all(answer_line(Err(too_many_connections())).as_bytes());
}

fn refuse_http(mut conn: TcpStream) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let body = too_many_connections() + "\n";
    let _ = write!(
        conn,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn ask(calls: &Sender<Call>, req: Request) -> Reply {
    let (tx, rx) = bounded(1);
    calls.send(Call::Api(req, tx)).map_err(|_| "l4lb is stopping".to_string())?;
    rx.recv_timeout(ANSWER_TIMEOUT).map_err(|_| "the management loop did not answer in 10 s".to_string())?
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

fn answer_line(r: Reply) -> String {
    let a = match r {
        Ok(result) => Answer { ok: true, result: Some(result), error: None },
        Err(error) => Answer { ok: false, result: None, error: Some(error) },
    };
    serde_json::to_string(&a).unwrap_or_default() + "\n"
}

fn serve_api(conn: UnixStream, calls: Sender<Call>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = Vec::new();
        match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_LINE {
            Err(format!("request longer than {MAX_LINE} bytes"))
        } else {
            parse_request(&line).and_then(|req| ask(&calls, req))
        };
        if out.write_all(answer_line(answer).as_bytes()).is_err() || line.len() > MAX_LINE {
            return;
        }
    }
}

/// A minimal HTTP/1.1 responder: `GET /metrics`, nothing else.
fn serve_http(mut conn: TcpStream, calls: Sender<Call>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let (tx, rx) = bounded(1);
            match calls.send(Call::Metrics(tx)).ok().and_then(|_| rx.recv_timeout(ANSWER_TIMEOUT).ok()) {
                Some(m) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", m),
                None => ("503 Service Unavailable", "text/plain", "l4lb is not answering\n".into()),
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
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

    fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

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

    #[test]
    fn socket_answers_refuses_junk_and_stays_up() {
        let dir = std::env::temp_dir().join(format!("l4lb-api-{}", std::process::id()));
        let path = dir.join("t.sock");
        let (tx, rx) = crossbeam::channel::unbounded::<Call>();
        let servers = start(&path, "127.0.0.1:0", tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The "management loop": answers status and metrics.
        let mgmt = std::thread::spawn(move || {
            for c in rx.iter() {
                match c {
                    Call::Api(Request::Status, r) => {
                        let st = Status { generation: 4, ..Status::default() };
                        drop(r.send(Ok(Response::Status(Box::new(st)))))
                    }
                    Call::Api(_, r) => drop(r.send(Err("no".into()))),
                    Call::Metrics(r) => drop(r.send("l4lb_up 1\n".into())),
                }
            }
        });
        assert_eq!(call(&path, &Request::Status).unwrap()["generation"], 4);
        assert_eq!(call(&path, &Request::Reload).unwrap_err(), "no");
        // Junk on one connection: an error answer, and the connection and server stay up.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{not json\n{\"v\":2,\"cmd\":\"bogus\"}\n{\"v\":2,\"cmd\":\"status\"}\n").unwrap();
        let mut lines = BufReader::new(s).lines();
        for _ in 0..2 {
            let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            assert_eq!(v["ok"], false);
            assert!(v["error"].as_str().unwrap().starts_with("bad request"), "{v}");
        }
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(v["ok"], true);
        // Metrics over HTTP.
        let addr = servers.metrics_addr.unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nl4lb_up 1\n"), "{resp}");
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
        resp.clear();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        // Idle connections hold at most MAX_CONNECTIONS threads; the next is
        // told why and closed at once, and a slot frees when a client leaves.
        let idle: Vec<UnixStream> =
            (0..MAX_CONNECTIONS).map(|_| UnixStream::connect(&path).unwrap()).collect();
        assert!(wait_until(|| call(&path, &Request::Status).is_err_and(|e| e
            .contains("too many control connections open (32)")
            && e.contains("idle for 10 s"))));
        drop(idle);
        assert!(wait_until(|| call(&path, &Request::Status).is_ok()));
        // A second server on the same socket is refused while the first lives.
        let (tx2, _rx2) = crossbeam::channel::unbounded::<Call>();
        let e = start(&path, "", tx2).err().unwrap().to_string();
        assert!(e.contains("another l4lb"), "{e}");
        drop(servers);
        assert!(!path.exists(), "the socket is removed on shutdown");
        let e = call(&path, &Request::Status).unwrap_err();
        assert!(e.contains("is l4lb running"), "{e}");
        drop(mgmt);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn blocking_accept_loops_end_when_the_servers_drop() {
        // Metrics on every IPv4 address: the shutdown wakes that listener
        // through loopback. Both loops block in accept() until then.
        let dir = std::env::temp_dir().join(format!("l4lb-api-stop-{}", std::process::id()));
        let path = dir.join("t.sock");
        let (tx, _rx) = crossbeam::channel::unbounded::<Call>();
        let servers = start(&path, "0.0.0.0:0", tx).unwrap();
        let port = servers.metrics_addr.unwrap().port();
        let (done_tx, done_rx) = bounded(1);
        std::thread::spawn(move || {
            drop(servers);
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(30)).is_ok(), "dropping the servers hung");
        // Both listeners are closed: their threads ended and dropped them.
        assert!(UnixStream::connect(&path).is_err());
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
