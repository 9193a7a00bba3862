//! Health checks: TCP connect, HTTP and HTTPS GET (`http.rs`, `tls.rs`), UDP
//! request/answer, ICMP echo and a program's exit status (`command.rs`), run
//! through the host's kernel networking by a small pool of threads on the
//! management side (never on a worker). Each check is blocking with a
//! deadline; the management loop hands out due checks and collects results.

mod command;
mod http;
#[cfg(test)]
mod tests_checks;
pub mod tls;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::{CheckKind, HealthSection};
use crate::dataplane::pipeline::{VipPathClaim, VipPathPorts, VIP_PATH_PORTS};

/// One check of one backend, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: CheckKind,
    pub addr: IpAddr,
    /// TCP/HTTP/UDP port (unused by ICMP).
    pub port: u16,
    /// Source address to bind (when its family matches the backend's).
    pub source: Option<IpAddr>,
    pub timeout: Duration,
    pub path: String,
    /// The Host header: `host`, else the backend's address.
    pub host: String,
    /// `host` as configured (HTTPS: the name to verify, unless `tls.server_name`).
    pub host_name: Option<String>,
    pub expect_status: Vec<u16>,
    pub expect_body: Option<Vec<u8>>,
    pub tls: Option<tls::TlsClient>,
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
    /// Command checks: the program and its arguments.
    pub command: Vec<String>,
    /// The service, for command checks' environment.
    pub service: String,
    pub vip: Option<IpAddr>,
    /// Set when the check takes the VIP's path (`[services.health] via`).
    pub vip_path: Option<VipPath>,
}

/// How a check takes its backend's VIP path (`dataplane::pipeline::vip_path`):
/// from a source port claimed for the backend, out of the kernel interface
/// of the service's port, from that port's address. The worker sending it
/// makes it a client's packet to the VIP.
#[derive(Clone)]
pub struct VipPath {
    pub ports: Arc<VipPathPorts>,
    /// The backend's stable id (the forwarding state's `vip_path` key).
    pub id: u32,
    /// The kernel interface the check must leave by.
    pub device: String,
    pub source: IpAddr,
}

impl PartialEq for VipPath {
    fn eq(&self, o: &VipPath) -> bool {
        (self.id, &self.device, self.source) == (o.id, &o.device, o.source)
    }
}

impl Eq for VipPath {}

impl std::fmt::Debug for VipPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VipPath {{ id: {}, device: {}, source: {} }}", self.id, self.device, self.source)
    }
}

impl Probe {
    /// The probe a service's `[services.health]` asks for on `addr`.
    pub fn new(h: &HealthSection, service_port: u16, addr: IpAddr, source: Option<IpAddr>) -> Probe {
        Probe {
            kind: h.check,
            addr,
            port: h.port.unwrap_or(service_port),
            source: source.filter(|s| s.is_ipv4() == addr.is_ipv4()),
            timeout: Duration::from_millis(h.timeout_ms),
            path: h.path.clone(),
            host: h.host.clone().unwrap_or_else(|| match addr {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            }),
            host_name: h.host.clone(),
            expect_status: h.expect_status.0.clone(),
            expect_body: h.expect_body.as_ref().map(|b| b.as_bytes().to_vec()),
            tls: None,
            send: h.send.as_bytes().to_vec(),
            expect: h.expect.as_bytes().to_vec(),
            command: h.command.clone(),
            service: String::new(),
            vip: None,
            vip_path: None,
        }
    }

    /// As [`Probe::new`] for a backend of `service`, with the service's TLS
    /// client for HTTPS checks.
    pub fn for_service(
        h: &HealthSection,
        service: &crate::control::config::ServiceSection,
        addr: IpAddr,
        source: Option<IpAddr>,
        tls: Option<tls::TlsClient>,
    ) -> Probe {
        Probe {
            tls,
            service: service.name.clone(),
            vip: Some(service.vip),
            ..Probe::new(h, service.port, addr, source)
        }
    }

    /// Runs the check: the round-trip time, or why it failed or could not run.
    pub fn run(&self) -> Result<Duration, CheckError> {
        let deadline = Instant::now() + self.timeout;
        let r = match self.kind {
            CheckKind::Tcp => self.connect(deadline).map(|(_, rtt, _)| rtt),
            CheckKind::Http => self.http(deadline),
            CheckKind::Https => self.https(deadline),
            CheckKind::Udp => self.udp(deadline),
            CheckKind::Icmp => self.icmp(deadline),
            CheckKind::Command => self.command(deadline),
        };
        // A VIP-path check's errors name the backend's address (the kernel's
        // view): say which path it took.
        match (r, &self.vip_path, self.vip) {
            (Err(CheckError::Failed(e)), Some(_), Some(vip)) => {
                Err(CheckError::Failed(format!("{e} (through the path to VIP {vip})")))
            }
            (r, _, _) => r,
        }
    }

    /// A socket from the configured source: failing here is this box's
    /// problem (no such address yet, no permission), not the backend's. A
    /// VIP-path check's socket is bound to its port's kernel interface and
    /// address and a source port claimed for the backend, which it holds
    /// until the socket is closed (the claim is dropped after the socket).
    fn socket(&self, ty: Type, proto: Protocol) -> Result<(Socket, Option<VipPathClaim>), CheckError> {
        let not_run = |what: String| move |e: std::io::Error| CheckError::NotRun(format!("{what}: {e}"));
        let s = Socket::new(Domain::for_address(SocketAddr::new(self.addr, 0)), ty, Some(proto))
            .map_err(not_run("socket".into()))?;
        let Some(v) = &self.vip_path else {
            if let Some(src) = self.source {
                s.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(not_run(format!("bind {src}")))?;
            }
            return Ok((s, None));
        };
        s.bind_device(Some(v.device.as_bytes())).map_err(not_run(format!("bind to device {}", v.device)))?;
        // A port the box's kernel holds for something else: the next one.
        let mut last = None;
        for _ in 0..4 {
            let claim = v.ports.claim(v.id).ok_or_else(|| {
                CheckError::NotRun(format!("all {VIP_PATH_PORTS} VIP-path source ports are in use"))
            })?;
            let from = SocketAddr::new(v.source, claim.port());
            match s.bind(&SockAddr::from(from)) {
                Ok(()) => return Ok((s, Some(claim))),
                Err(e) => last = Some(format!("bind {from}: {e}")),
            }
        }
        Err(CheckError::NotRun(last.unwrap_or_default()))
    }

    /// A connected TCP socket, the connect's round-trip time, and the
    /// VIP-path port it holds (to drop after the socket).
    #[allow(clippy::type_complexity)]
    pub(super) fn connect(
        &self,
        deadline: Instant,
    ) -> Result<(Socket, Duration, Option<VipPathClaim>), CheckError> {
        let (s, claim) = self.socket(Type::STREAM, Protocol::TCP)?;
        let to = SocketAddr::new(self.addr, self.port);
        let start = Instant::now();
        s.connect_timeout(&to.into(), left(deadline)?).map_err(|e| format!("connect {to}: {e}"))?;
        let rtt = start.elapsed();
        // Close with a reset: checks must not pile up TIME_WAIT sockets.
        let _ = s.set_linger(Some(Duration::ZERO));
        Ok((s, rtt, claim))
    }

    fn udp(&self, deadline: Instant) -> Result<Duration, CheckError> {
        let (s, _claim) = self.socket(Type::DGRAM, Protocol::UDP)?;
        let to = SocketAddr::new(self.addr, self.port);
        s.connect(&to.into()).map_err(|e| format!("connect {to}: {e}"))?;
        let start = Instant::now();
        let s = std::net::UdpSocket::from(s);
        s.send(&self.send).map_err(|e| format!("send to {to}: {e}"))?;
        let mut buf = [0u8; 2048];
        loop {
            s.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
            // A connected UDP socket reports an ICMP port unreachable as "refused".
            let n = match s.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.map_err(|e| format!("answer from {to}: {}", timeout_words(e)))?,
            };
            let rtt = start.elapsed();
            if self.expect.is_empty() || buf[..n].windows(self.expect.len()).any(|w| w == self.expect) {
                return Ok(rtt);
            }
            if Instant::now() >= deadline {
                return Err(format!("answer from {to} lacks the expected text").into());
            }
            // Another answer may still come: keep reading until the deadline.
        }
    }

    fn icmp(&self, deadline: Instant) -> Result<Duration, CheckError> {
        static SEQ: AtomicU16 = AtomicU16::new(1);
        let (proto, request, reply) = match self.addr {
            IpAddr::V4(_) => (Protocol::ICMPV4, 8u8, 0u8),
            IpAddr::V6(_) => (Protocol::ICMPV6, 128u8, 129u8),
        };
        let (mut s, _) = self.socket(Type::RAW, proto).map_err(|e| match e {
            CheckError::NotRun(e) => {
                CheckError::NotRun(format!("{e} (ICMP checks need root or CAP_NET_RAW)"))
            }
            e => e,
        })?;
        // A connected raw socket only receives from that address.
        s.connect(&SocketAddr::new(self.addr, 0).into())
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let ident = (std::process::id() as u16) ^ 0x4c34;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut msg = [0u8; 24];
        msg[0] = request;
        msg[4..6].copy_from_slice(&ident.to_be_bytes());
        msg[6..8].copy_from_slice(&seq.to_be_bytes());
        msg[8..24].copy_from_slice(b"l4lb health chk.");
        if self.addr.is_ipv4() {
            // The kernel fills the ICMPv6 checksum itself, not ICMPv4's.
            let c = !crate::net::checksum::fold(crate::net::checksum::add(0, &msg));
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let start = Instant::now();
        s.send(&msg).map_err(|e| format!("send echo to {}: {e}", self.addr))?;
        let mut buf = [0u8; 1500];
        loop {
            s.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
            let n = match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.map_err(|e| format!("echo reply from {}: {}", self.addr, timeout_words(e)))?,
            };
            // IPv4 raw sockets deliver the IP header too; ICMPv6 ones do not.
            let at = if self.addr.is_ipv4() { ((buf[0] & 0x0f) as usize) * 4 } else { 0 };
            let m = &buf[at.min(n)..n];
            if m.len() >= 8 && m[0] == reply && m[4..6] == ident.to_be_bytes() && m[6..8] == seq.to_be_bytes()
            {
                return Ok(start.elapsed());
            }
        }
    }
}

/// Time left before `deadline`, or the timeout error.
pub(super) fn left(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_string())
}

pub(super) fn timeout_words(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The check could not be made from this box — no socket, the source
    /// address not up (yet), no permission for raw sockets. It says nothing
    /// about the backend, whose health stays as it was.
    NotRun(String),
    /// The backend did not answer as the check expects.
    Failed(String),
}

impl From<String> for CheckError {
    fn from(e: String) -> Self {
        CheckError::Failed(e)
    }
}

impl From<&str> for CheckError {
    fn from(e: &str) -> Self {
        CheckError::Failed(e.to_owned())
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::NotRun(e) => write!(f, "check could not run: {e}"),
            CheckError::Failed(e) => f.write_str(e),
        }
    }
}

/// A finished check: its tag and its round-trip time in µs or the failure.
pub type Done = (u64, Result<u32, CheckError>);

/// A pool of threads running probes. Dropping it stops the threads once
/// their current checks end.
pub struct Checker {
    jobs: Option<Sender<(u64, Arc<Probe>)>>,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Checker {
    pub fn new(threads: usize) -> Checker {
        let (jobs, job_rx) = unbounded::<(u64, Arc<Probe>)>();
        let (done_tx, results) = unbounded::<Done>();
        let threads = (0..threads.max(1))
            .map(|i| {
                let (rx, tx) = (job_rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("l4lb-health-{i}"))
                    .spawn(move || {
                        for (tag, probe) in rx.iter() {
                            let r = probe.run().map(|d| d.as_micros().clamp(1, u32::MAX as u128) as u32);
                            if tx.send((tag, r)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn a health-check thread")
            })
            .collect();
        Checker { jobs: Some(jobs), results, threads }
    }

    /// Queues a probe; its result comes back with `tag`.
    pub fn submit(&self, tag: u64, probe: Arc<Probe>) {
        if let Some(j) = &self.jobs {
            let _ = j.send((tag, probe));
        }
    }

    /// Finished checks, without waiting.
    pub fn results(&self) -> impl Iterator<Item = Done> + '_ {
        self.results.try_iter()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, UdpSocket};

    fn health(kind: CheckKind) -> HealthSection {
        HealthSection {
            timeout_ms: 500,
            rise: 1,
            fall: 1,
            path: "/health".into(),
            send: "ping".into(),
            expect: "pong".into(),
            ..HealthSection::new(kind)
        }
    }

    fn local(v6: bool) -> IpAddr {
        if v6 {
            "::1".parse().unwrap()
        } else {
            "127.0.0.1".parse().unwrap()
        }
    }

    /// An HTTP server on loopback answering each request with `status`;
    /// returns its port and the request lines it saw.
    fn http_server(status: u16) -> (u16, std::sync::mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut c in l.incoming().map_while(Result::ok) {
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = tx.send(req);
                let _ = c.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        (port, rx)
    }

    #[test]
    fn tcp_connect_up_and_refused() {
        for v6 in [false, true] {
            let l = TcpListener::bind(SocketAddr::new(local(v6), 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            let p = Probe::new(&health(CheckKind::Tcp), port, local(v6), None);
            assert!(p.run().is_ok(), "v6={v6}");
            drop(l);
            let e = p.run().unwrap_err().to_string();
            assert!(e.contains("refused"), "{e}");
        }
    }

    #[test]
    fn http_status_is_checked() {
        let (port, reqs) = http_server(200);
        let p = Probe::new(&health(CheckKind::Http), port, local(false), None);
        p.run().unwrap();
        let req = reqs.recv().unwrap();
        assert!(req.starts_with("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"), "{req}");
        let (port, _r) = http_server(500);
        let e = Probe::new(&health(CheckKind::Http), port, local(false), None).run().unwrap_err();
        assert_eq!(e, CheckError::Failed("HTTP status 500, expected 200".into()));
        // A server that accepts and never answers: the timeout bounds the check.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut h = health(CheckKind::Http);
        h.timeout_ms = 100;
        let start = Instant::now();
        let e = Probe::new(&h, silent.local_addr().unwrap().port(), local(false), None)
            .run()
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_millis(400));
    }

    #[test]
    fn udp_answer_must_contain_the_expected_text() {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok((len, from)) = u.recv_from(&mut buf) {
                assert_eq!(&buf[..len], b"ping");
                n += 1;
                let answer: &[u8] = if n == 1 { b"pong 1" } else { b"nope" };
                u.send_to(answer, from).unwrap();
            }
        });
        let mut h = health(CheckKind::Udp);
        h.timeout_ms = 200;
        let p = Probe::new(&h, port, local(false), None);
        p.run().unwrap();
        let e = p.run().unwrap_err().to_string();
        assert!(e.contains("timed out") || e.contains("lacks"), "{e}");
        // Nobody listening: the port unreachable comes back as refused.
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        let e = Probe::new(&h, cport, local(false), None).run().unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    // Raw ICMP sockets need root: the full tier (scripts/test.sh, as root) runs it.
    #[cfg_attr(not(feature = "dpdk"), ignore = "needs root (CAP_NET_RAW): run by the full tier")]
    fn icmp_echo_on_loopback() {
        for v6 in [false, true] {
            let p = Probe::new(&health(CheckKind::Icmp), 0, local(v6), None);
            match p.run() {
                Ok(rtt) => assert!(rtt < Duration::from_millis(500)),
                // Without root the raw socket is refused: say so, do not pass silently.
                Err(e) => panic!("ICMP echo to {} failed (tests run as root): {e}", local(v6)),
            }
        }
    }

    #[test]
    fn source_address_is_bound_and_pool_returns_tagged_results() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        let p = Probe::new(&health(CheckKind::Tcp), port, local(false), Some(src));
        assert_eq!(p.source, Some(src));
        let checker = Checker::new(2);
        checker.submit(7, Arc::new(p));
        let (c, from) = l.accept().unwrap();
        assert_eq!(from.ip(), src);
        drop(c);
        let done = loop {
            if let Some(d) = checker.results().next() {
                break d;
            }
            std::thread::yield_now();
        };
        assert_eq!(done.0, 7);
        assert!(done.1.is_ok());
        // A v6 source is not used for a v4 backend.
        let p6 = Probe::new(&health(CheckKind::Tcp), port, local(false), Some("::1".parse().unwrap()));
        assert_eq!(p6.source, None);
    }

    #[test]
    fn a_source_address_this_box_lacks_means_the_check_did_not_run() {
        // 198.18.255.254 is on no interface here: bind fails before any
        // packet leaves, which says nothing about the backend.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let src: IpAddr = "198.18.255.254".parse().unwrap();
        for kind in [CheckKind::Tcp, CheckKind::Http, CheckKind::Udp] {
            let e = Probe::new(&health(kind), port, local(false), Some(src)).run().unwrap_err();
            match &e {
                CheckError::NotRun(why) => assert!(why.starts_with("bind 198.18.255.254"), "{e}"),
                other => panic!("{kind:?}: {other:?}"),
            }
            assert!(e.to_string().starts_with("check could not run: bind"), "{e}");
        }
    }
}
