//! The HTTPS, HTTP status-and-body and command checks against servers and
//! programs made here (loopback, certificates from rcgen).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::tls::TlsClient;
use super::{CheckError, Probe};
use crate::control::config::{CheckKind, ExpectStatus, HealthSection, TlsSection};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn health(check: CheckKind) -> HealthSection {
    HealthSection { timeout_ms: 2000, path: "/health".into(), ..HealthSection::new(check) }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("l4lb-health-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Hands every connection to `handle`.
fn serve<F: Fn(TcpStream) + Send + 'static>(l: TcpListener, handle: F) {
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            handle(c);
        }
    });
}

/// Reads a request's head, then writes `answer`.
fn answer<S: Read + Write>(c: &mut S, answer: &[u8]) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let _ = c.write_all(answer);
    let _ = c.flush();
}

fn http_server(reply: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve(l, move |mut c| answer(&mut c, reply));
    port
}

#[test]
fn http_checks_take_a_set_of_statuses_and_look_for_text_in_the_body() {
    let plain = http_server(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    let mut h = health(CheckKind::Http);
    h.expect_status = ExpectStatus(vec![200, 204]);
    Probe::new(&h, plain, LOOPBACK, None).run().unwrap();
    h.expect_status = ExpectStatus(vec![200, 301]);
    let e = Probe::new(&h, plain, LOOPBACK, None).run().unwrap_err();
    assert_eq!(e, CheckError::Failed("HTTP status 204, expected 200 or 301".into()));

    let body = http_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\nConnection: close\r\n\r\nstatus: ready; db: up\r\n",
    );
    let chunked = http_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nstatus: r\r\n5\r\neady;\r\n0\r\n\r\n",
    );
    let mut h = health(CheckKind::Http);
    h.expect_body = Some("ready".into());
    Probe::new(&h, body, LOOPBACK, None).run().unwrap();
    // The text spans two chunks: found once the body is de-chunked.
    Probe::new(&h, chunked, LOOPBACK, None).run().unwrap();
    h.expect_body = Some("draining".into());
    let e = Probe::new(&h, body, LOOPBACK, None).run().unwrap_err().to_string();
    assert!(e.contains("lacks \"draining\""), "{e}");
}

/// A CA, and a certificate it signs for `backend.test` and 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = scratch(tag);
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "l4lb test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A certificate for `names` signed by the CA, written as NAME.pem and
    /// NAME.key; its chain and key.
    fn leaf(&self, file: &str, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names.push(SanType::IpAddress(LOOPBACK));
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap())
    }
}

/// An HTTPS server with the CA's certificate for backend.test, asking
/// clients for a certificate signed by the CA when `client_auth`.
fn https_server(pki: &Pki, client_auth: bool) -> u16 {
    let (chain, key) = pki.leaf("server", &["backend.test"]);
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    let config = Arc::new(b.with_single_cert(chain, key).unwrap());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve(l, move |c| {
        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else { return };
        let mut tls = rustls::StreamOwned::new(conn, c);
        answer(&mut tls, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy");
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    port
}

fn https_probe(port: u16, tls: &TlsSection, dir: &Path, body: &str) -> Result<Duration, CheckError> {
    let mut h = health(CheckKind::Https);
    h.tls = tls.clone();
    h.expect_body = Some(body.into());
    let client = TlsClient::new(tls, dir).unwrap_or_else(|(k, e)| panic!("{k}: {e}"));
    Probe { tls: Some(client), ..Probe::new(&h, port, LOOPBACK, None) }.run()
}

#[test]
fn https_checks_verify_the_backend_as_told_and_present_a_client_certificate() {
    let pki = Pki::new("tls");
    let port = https_server(&pki, false);
    let off = TlsSection { verify: false, ..Default::default() };
    https_probe(port, &off, &pki.dir, "healthy").unwrap();
    let e = https_probe(port, &off, &pki.dir, "sick").unwrap_err().to_string();
    assert!(e.contains("lacks"), "{e}");
    // Verified against the test's CA, by name and by address.
    let ours = |name: Option<&str>| TlsSection {
        ca_file: Some("ca.pem".into()),
        server_name: name.map(String::from),
        ..Default::default()
    };
    https_probe(port, &ours(Some("backend.test")), &pki.dir, "healthy").unwrap();
    https_probe(port, &ours(None), &pki.dir, "healthy").unwrap();
    let e = https_probe(port, &ours(Some("other.test")), &pki.dir, "healthy").unwrap_err().to_string();
    assert!(e.contains("TLS") && e.contains("not valid for name \"other.test\""), "{e}");
    // The system's CAs do not know the test's.
    if Path::new(super::tls::SYSTEM_CA_FILE).exists() {
        let e = https_probe(port, &TlsSection::default(), &pki.dir, "healthy").unwrap_err().to_string();
        assert!(e.contains("invalid peer certificate"), "{e}");
    }

    // A backend that asks for a client certificate.
    let strict = https_server(&pki, true);
    let e = https_probe(strict, &off, &pki.dir, "healthy").unwrap_err().to_string();
    assert!(e.contains("TLS") || e.contains("read answer"), "{e}");
    pki.leaf("client", &["l4lb.test"]);
    let with_cert =
        TlsSection { cert_file: Some("client.pem".into()), key_file: Some("client.key".into()), ..off };
    https_probe(strict, &with_cert, &pki.dir, "healthy").unwrap();

    // Settings that cannot work name their key.
    for (t, key) in [
        (TlsSection { ca_file: Some("missing.pem".into()), ..Default::default() }, "ca_file"),
        (TlsSection { ca_file: Some("client.key".into()), ..Default::default() }, "ca_file"),
        (TlsSection { cert_file: Some("client.pem".into()), ..Default::default() }, "key_file"),
        (
            TlsSection {
                key_file: Some("server.pem".into()),
                cert_file: Some("client.pem".into()),
                ..Default::default()
            },
            "key_file",
        ),
    ] {
        assert_eq!(TlsClient::new(&t, &pki.dir).unwrap_err().0, key, "{t:?}");
    }
    std::fs::remove_dir_all(&pki.dir).unwrap();
}

#[test]
fn command_checks_pass_on_exit_0_and_a_hung_one_is_killed_with_what_it_started() {
    let dir = scratch("cmd");
    let script = dir.join("check.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         [ \"$L4LB_BACKEND\" = 127.0.0.1 ] && [ \"$L4LB_BACKEND_PORT\" = 8080 ] || exit 3\n\
         case \"$1\" in\n\
           ok) exit 0 ;;\n\
           fail) exit 1 ;;\n\
           hang) sleep 60 & echo $! > \"$2\"; wait ;;\n\
         esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let probe = |args: &[&str], timeout_ms: u64| {
        let mut h = health(CheckKind::Command);
        h.timeout_ms = timeout_ms;
        h.command =
            std::iter::once(script.to_str().unwrap()).chain(args.iter().copied()).map(String::from).collect();
        Probe::new(&h, 8080, LOOPBACK, None)
    };
    probe(&["ok"], 2000).run().unwrap();
    let e = probe(&["fail"], 2000).run().unwrap_err().to_string();
    assert!(e.ends_with("exit status: 1"), "{e}");
    let pidfile = dir.join("sleep.pid");
    let start = Instant::now();
    let e = probe(&["hang", pidfile.to_str().unwrap()], 300).run().unwrap_err().to_string();
    assert!(e.contains("killed") && start.elapsed() < Duration::from_secs(5), "{e}");
    // The sleep it started went with it.
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let gone = (0..200).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        if alive {
            std::thread::sleep(Duration::from_millis(10));
        }
        !alive
    });
    assert!(gone, "the hung check's child {pid} survived");
    let e = Probe::new(
        &{
            let mut h = health(CheckKind::Command);
            h.command = vec!["/nonexistent/check".into()];
            h
        },
        80,
        LOOPBACK,
        None,
    )
    .run()
    .unwrap_err();
    assert!(matches!(e, CheckError::NotRun(ref m) if m.contains("cannot run")), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
