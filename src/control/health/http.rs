//! HTTP and HTTPS checks: `GET path` with `Connection: close`; the status
//! must be one of `expect_status` and, with `expect_body`, the body's first
//! 64 KiB (de-chunked) must contain that text. HTTPS runs the same exchange
//! over rustls. The round-trip time is the status line's (the TLS handshake
//! included).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::{left, timeout_words, CheckError, Probe};

/// The most of a response read: its head, and of its body.
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 64 << 10;

/// A stream whose reads and writes can be given the time left.
trait Timed: Read + Write {
    fn time_left(&self, d: Duration) -> std::io::Result<()>;
}

impl Timed for TcpStream {
    fn time_left(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Timed for StreamOwned<ClientConnection, TcpStream> {
    fn time_left(&self, d: Duration) -> std::io::Result<()> {
        self.sock.time_left(d)
    }
}

impl Probe {
    pub(super) fn http(&self, deadline: Instant) -> Result<Duration, CheckError> {
        let start = Instant::now();
        // The claim of a VIP-path port outlives the stream (locals drop in reverse).
        let (s, _, _claim) = self.connect(deadline)?;
        let mut stream = TcpStream::from(s);
        self.exchange(&mut stream, deadline, start)
    }

    pub(super) fn https(&self, deadline: Instant) -> Result<Duration, CheckError> {
        let Some(tls) = &self.tls else {
            return Err(CheckError::NotRun("no TLS settings for an HTTPS check".into()));
        };
        let start = Instant::now();
        let (s, _, _claim) = self.connect(deadline)?;
        let name = tls.server_name(self.host_name.as_deref(), self.addr);
        let conn = ClientConnection::new(tls.config.clone(), name)
            .map_err(|e| CheckError::NotRun(format!("TLS: {e}")))?;
        let mut stream = StreamOwned::new(conn, TcpStream::from(s));
        self.exchange(&mut stream, deadline, start)
    }

    /// Sends the request and judges the answer.
    fn exchange<S: Timed>(
        &self,
        s: &mut S,
        deadline: Instant,
        start: Instant,
    ) -> Result<Duration, CheckError> {
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: l4lb-health\r\nConnection: close\r\n\r\n",
            self.path, self.host
        );
        s.time_left(left(deadline)?).map_err(|e| e.to_string())?;
        // A signal handled on this thread interrupts calls with socket
        // timeouts even under SA_RESTART: write_all and the reads below retry.
        // (The TAP driver's SIGIO is blocked here: dpdk::block_driver_signals.)
        s.write_all(req.as_bytes()).map_err(|e| format!("send request: {}", tls_words(e)))?;
        let mut buf = Vec::with_capacity(1024);
        let mut rtt = None;
        let mut head_end = None;
        let want_body = self.expect_body.is_some();
        loop {
            if rtt.is_none() && buf.windows(2).any(|w| w == b"\r\n") {
                rtt = Some(start.elapsed());
            }
            if head_end.is_none() {
                head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            }
            match head_end {
                Some(_) if !want_body => break,
                Some(h) if buf.len() - h >= MAX_BODY => break,
                None if rtt.is_some() && !want_body => break,
                None if buf.len() >= MAX_HEAD => return Err("response head longer than 16 KiB".into()),
                _ => {}
            }
            s.time_left(left(deadline)?).map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            let n = match s.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A server that closes without TLS's close_notify ends its
                // answer all the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
                r => r.map_err(|e| format!("read answer: {}", tls_words(e)))?,
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let Some(rtt) = rtt else { return Err("connection closed before a status line".into()) };
        let text = String::from_utf8_lossy(&buf);
        let line = text.lines().next().unwrap_or("");
        let mut words = line.split_whitespace();
        let status = match (words.next(), words.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("not an HTTP status line: {:?}", line.chars().take(60).collect::<String>()))?;
        if !self.expect_status.contains(&status) {
            let want: Vec<String> = self.expect_status.iter().map(u16::to_string).collect();
            return Err(format!("HTTP status {status}, expected {}", want.join(" or ")).into());
        }
        if let Some(expect) = &self.expect_body {
            let h = head_end.ok_or("the answer ended inside its head")?;
            let chunked = text[..h.min(text.len())].lines().any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("transfer-encoding:") && l.contains("chunked")
            });
            let raw = &buf[h..];
            let body = if chunked { dechunk(raw) } else { raw.to_vec() };
            let body = &body[..body.len().min(MAX_BODY)];
            if !expect.is_empty() && !body.windows(expect.len()).any(|w| w == expect.as_slice()) {
                return Err(format!(
                    "the body ({} bytes read) lacks {:?}",
                    body.len(),
                    String::from_utf8_lossy(expect)
                )
                .into());
            }
        }
        Ok(rtt)
    }
}

/// A chunked body's data (as much as arrived; framing that does not parse
/// ends it).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol]).ok().and_then(|l| {
            let hex = l.split(';').next().unwrap_or("").trim();
            usize::from_str_radix(hex, 16).ok()
        });
        let Some(size) = size.filter(|&n| n > 0) else { break };
        let data = &raw[eol + 2..];
        out.extend_from_slice(&data[..size.min(data.len())]);
        if data.len() < size + 2 {
            break;
        }
        raw = &data[size + 2..];
    }
    out
}

/// An I/O error in words, a TLS failure (rustls reports it inside an I/O
/// error) or a timeout among them.
fn tls_words(e: std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => format!("TLS: {t}"),
        None => timeout_words(e),
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined_and_cut_ones_kept() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"), b"Wikipedia");
        assert_eq!(dechunk(b"4\r\nWi"), b"Wi");
        assert_eq!(dechunk(b"zz\r\nabc"), b"");
    }
}
