//! The control socket's and the metrics endpoint's listeners. Both run on
//! their own threads and pass every question to the management loop over a
//! channel, so all state stays owned by the management core; the protocol
//! is `api.rs`.

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

use super::api::{answer_line, parse_request, Reply, Request, ANSWER_TIMEOUT};

/// A question for the management loop.
pub enum Call {
    Api(Request, Sender<Reply>),
    Metrics(Sender<String>),
}

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

/// A minimal HTTP/1.1 responder: `GET /metrics`, the status page (`GET /`)
/// and its `GET /status.json`, nothing else.
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
    let mut extra = "";
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/" | "/index.html") => {
            extra = "Cache-Control: no-store\r\n";
            ("200 OK", "text/html; charset=utf-8", super::status_page::PAGE.to_owned())
        }
        ("GET", "/status.json") => match super::status_page::status_json(|r| ask(&calls, r)) {
            Ok(j) => ("200 OK", "application/json", j),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        ("GET", "/metrics") => {
            let (tx, rx) = bounded(1);
            match calls.send(Call::Metrics(tx)).ok().and_then(|_| rx.recv_timeout(ANSWER_TIMEOUT).ok()) {
                Some(m) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", m),
                None => ("503 Service Unavailable", "text/plain", "l4lb is not answering\n".into()),
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics, or / for the status page\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len(),
        super::status_page::CONTENT_SECURITY_POLICY
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{call, Response, Status};
    use serde_json::Value;

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
        // The status page, with a policy that loads nothing from elsewhere;
        // its status.json fails with the management loop's refusal.
        let get = |path: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
            let mut resp = String::new();
            c.read_to_string(&mut resp).unwrap();
            resp
        };
        let page = get("/");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html"), "{page}");
        assert!(page.contains("\r\nContent-Security-Policy: default-src 'none';"), "{page}");
        assert!(page.ends_with(super::super::status_page::PAGE));
        let json = get("/status.json");
        assert!(json.starts_with("HTTP/1.1 503") && json.ends_with("\r\n\r\nno\n"), "{json}");
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
