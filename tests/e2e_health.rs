//! End to end: health checks and failover with slow start, on the one-arm TAP
//! LAN (tests/common/lan.rs). l4lb runs in a management namespace on the LAN,
//! so its checks reach the backends through kernel networking.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lan::{
    ctl_json, http_load, managed, service, spawn_script, start_long_stream, start_server, stop_long_stream,
    Managed,
};
use common::netns::{Netns, Scratch};
use common::wait_for;
use serde_json::Value;

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The `ctl backends` row of `service`/`addr`.
fn backend(socket: &Path, service: &str, addr: &str) -> Value {
    let all = ctl_json(socket, "backends");
    all.as_array()
        .unwrap()
        .iter()
        .find(|b| b["service"] == service && b["backend"] == addr)
        .unwrap_or_else(|| panic!("no backend {service}/{addr} in {all}"))
        .clone()
}

fn health_of(socket: &Path, service: &str, addr: &str) -> String {
    backend(socket, service, addr)["health"].as_str().unwrap().to_owned()
}

/// Starts a client that opens a new HTTP connection to `vip` every 20 ms
/// until told to stop; it then prints one line per request, with the times
/// it started and ended: "START END ok NAME" or "START END fail ERROR".
fn start_prober(client: &Netns, vip: &str) -> Child {
    let script = [
        "import http.client, sys, threading, time",
        "stop = threading.Event()",
        "threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()",
        "out = []",
        "print('ready', flush=True)",
        "while not stop.is_set():",
        "    t = time.time()",
        "    try:",
        &format!("        h = http.client.HTTPConnection('{vip}', 80, timeout=2)"),
        "        h.request('GET', '/'); name = h.getresponse().read().decode().split()[0]; h.close()",
        "        out.append(f'{t:.3f} {time.time():.3f} ok {name}')",
        "    except Exception as e:",
        "        out.append(f'{t:.3f} {time.time():.3f} fail {type(e).__name__}')",
        "    time.sleep(0.02)",
        "print('\\n'.join(out), flush=True)",
    ]
    .join("\n");
    spawn_script(client, &script, "l4b-probe-")
}

/// (start, end, Ok(backend name) / Err(error)) per request.
fn stop_prober(mut child: Child) -> Vec<(f64, f64, Result<String, String>)> {
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "stop").unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let t: f64 = w.next()?.parse().ok()?;
            let end: f64 = w.next()?.parse().ok()?;
            let (kind, what) = (w.next()?, w.next().unwrap_or("").to_owned());
            Some((t, end, if kind == "ok" { Ok(what) } else { Err(what) }))
        })
        .collect()
}

const HTTP_CHECK: &str =
    "health = { check = \"http\", path = \"/health\", interval_ms = 300, timeout_ms = 250, rise = 2, fall = 2 }";

#[test]
fn dead_backend_leaves_and_returns_with_slow_start() {
    let weighted: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\", weight = 10 }}"))
        .collect();
    let svc = service(
        "web",
        "198.18.100.1",
        "tcp",
        80,
        &format!("forwarding = \"l2\"\nslow_start_s = 4\nmaglev_table_size = 65537\n{HTTP_CHECK}"),
        &weighted,
    );
    let Managed { lan: mut t, mut l4lb, socket, dir: _dir, mg: _mg, .. } =
        managed(&["198.18.100.1"], &svc, None);
    let addrs: Vec<String> = t.backends.iter().map(|b| b.v4.clone()).collect();
    assert!(
        wait_for(Duration::from_secs(10), || addrs.iter().all(|a| health_of(&socket, "web", a) == "up")),
        "backends did not come up: {}\n{}",
        ctl_json(&socket, "backends"),
        l4lb.transcript()
    );

    // A long connection: find its backend (the only active flow), and kill another.
    let stream = start_long_stream(&t.client, "198.18.100.1");
    let mut stream_backend = None;
    wait_for(Duration::from_secs(5), || {
        stream_backend = ctl_json(&socket, "backends")
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["active_flows"].as_u64() >= Some(1))
            .map(|b| b["backend"].as_str().unwrap().to_owned());
        stream_backend.is_some()
    });
    let stream_backend = stream_backend.expect("the long connection's flow is tracked");
    let victim = t.backends.iter().position(|b| b.v4 != stream_backend).unwrap();
    let victim_addr = t.backends[victim].v4.clone();

    // Load while it happens: wrk, and a prober that times every new connection.
    let wrk = t.client.spawn("exec wrk -t1 -c4 -d6s --timeout 2s http://198.18.100.1/");
    let prober = start_prober(&t.client, "198.18.100.1");
    // Load before the failure: 20 of the prober's new connections scheduled.
    let new_flows = || -> u64 {
        ctl_json(&socket, "backends web")
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["new_flows"].as_u64().unwrap())
            .sum()
    };
    let start_flows = new_flows();
    assert!(wait_for(Duration::from_secs(5), || new_flows() >= start_flows + 20));
    let killed_at = now_s();
    let _ = t.children[victim].kill();
    let _ = t.children[victim].wait();
    assert!(
        wait_for(Duration::from_secs(5), || health_of(&socket, "web", &victim_addr) == "down"),
        "{victim_addr} not marked down:\n{}",
        l4lb.transcript()
    );
    let down_at = now_s();
    // fall (2) × interval (0.3 s), plus one interval of phase and a margin.
    assert!(down_at - killed_at < 0.6 + 0.3 + 0.5, "took {:.2} s to take it out", down_at - killed_at);
    assert!(l4lb
        .wait_line(Duration::from_secs(2), |l| l.contains(&format!("backend web/{victim_addr} is down")))
        .is_some());
    // Load after the failure: 40 more new connections (the assertions below need 20).
    let down_flows = new_flows();
    assert!(wait_for(Duration::from_secs(5), || new_flows() >= down_flows + 40));
    let results = stop_prober(prober);
    let wrk_out = wrk.wait_with_output().unwrap();
    let wrk_text = String::from_utf8_lossy(&wrk_out.stdout);
    assert!(wrk_text.contains("requests in"), "wrk: {wrk_text}");
    // New connections fail only until the backend is out (plus requests in flight).
    let late: Vec<_> = results.iter().filter(|(t, _, r)| r.is_err() && *t > down_at + 0.1).collect();
    assert!(late.is_empty(), "requests failed after the backend was out: {late:?}");
    let after: Vec<_> = results.iter().filter(|(t, _, _)| *t > down_at + 0.1).collect();
    assert!(after.len() >= 20, "too few requests after the failover: {}", after.len());
    assert!(after.iter().all(|(_, _, r)| r.as_ref().is_ok_and(|n| *n != t.backends[victim].name)));
    // Requests that ended before the kill (one under way at the kill may be
    // reset by the dying backend: that is what the kill does).
    let before: Vec<_> = results.iter().filter(|(_, end, _)| *end < killed_at).collect();
    assert!(before.iter().all(|(_, _, r)| r.is_ok()), "failures before the kill: {before:?}");

    // It returns: `rise` checks, then slow start (4 s) ramps its weight and share.
    t.children[victim] = start_server(&t.backends[victim], None);
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "web", &victim_addr) == "up"));
    let mut samples = Vec::new();
    let ramp_start = Instant::now();
    while ramp_start.elapsed() < Duration::from_millis(5500) {
        let b = backend(&socket, "web", &victim_addr);
        samples.push((b["effective_weight"].as_u64().unwrap(), b["table_entries"].as_u64().unwrap()));
        std::thread::sleep(Duration::from_millis(400));
    }
    let (w0, e0) = samples[0];
    let (wn, en) = *samples.last().unwrap();
    assert!(w0 <= 3, "slow start began at weight {w0}: {samples:?}");
    assert_eq!(wn, 10, "{samples:?}");
    assert!(samples.windows(2).all(|w| w[1].0 >= w[0].0), "weight must only grow: {samples:?}");
    assert!(e0 * 3 < en, "its table share did not grow: {samples:?}\n{}", l4lb.transcript());
    let third = 65537.0 / 3.0;
    assert!((en as f64 - third).abs() < third * 0.02, "full share is a third: {samples:?}");

    let (n, errors, seen) = stop_long_stream(stream);
    assert_eq!(errors, 0, "the connection to a healthy backend broke:\n{}", l4lb.transcript());
    assert!(n > 50);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
}

#[test]
fn http_udp_and_icmp_checks_mark_backends_down_and_up() {
    let bs: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let bs6: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"2001:db8::1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let fast = "interval_ms = 200, timeout_ms = 150, rise = 2, fall = 2";
    let services = [
        service("web", "198.18.100.1", "tcp", 80, &format!("forwarding = \"l2\"\n{HTTP_CHECK}"), &bs),
        service(
            "dns",
            "198.18.100.4",
            "udp",
            5300,
            &format!("health = {{ check = \"udp\", port = 5301, send = \"ping\", expect = \"ok\", {fast} }}"),
            &bs,
        ),
        service("ping", "198.18.100.5", "tcp", 80, &format!("health = {{ check = \"icmp\", {fast} }}"), &bs),
        // The same over IPv6 (checks from 2001:db8::5).
        service("web6", "2001:db8:100::1", "tcp", 80, &format!("forwarding = \"l2\"\n{HTTP_CHECK}"), &bs6),
        service(
            "ping6",
            "2001:db8:100::5",
            "tcp",
            80,
            &format!("health = {{ check = \"icmp\", {fast} }}"),
            &bs6,
        ),
    ];
    let vips = ["198.18.100.1", "198.18.100.4", "198.18.100.5", "2001:db8:100::1", "2001:db8:100::5"];
    let Managed { lan: t, l4lb, socket, dir: _dir, mg: _mg, .. } = managed(&vips, &services.join("\n"), None);
    let all_up = |svc: &str| {
        t.backends
            .iter()
            .all(|b| health_of(&socket, svc, if svc.ends_with('6') { &b.v6 } else { &b.v4 }) == "up")
    };
    let every = ["web", "dns", "ping", "web6", "ping6"];
    assert!(
        wait_for(Duration::from_secs(10), || every.iter().all(|s| all_up(s))),
        "{}\n{}",
        ctl_json(&socket, "backends"),
        l4lb.transcript()
    );
    let rtt = backend(&socket, "ping", "198.18.0.11")["rtt_us"].as_u64().unwrap();
    assert!(rtt > 0 && rtt < 200_000, "check RTT {rtt} µs");

    // backend-2 answers 500 on /health and stops answering its UDP health port.
    t.backends[1].set_health(500);
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "web", "198.18.0.12") == "down"));
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "dns", "198.18.0.12") == "down"));
    let b = backend(&socket, "web", "198.18.0.12");
    assert_eq!(b["last_error"], "HTTP status 500, expected 200");
    assert_eq!(b["table_entries"], 0);
    assert!(backend(&socket, "dns", "198.18.0.12")["last_error"].as_str().unwrap().contains("timed out"));
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "web6", "2001:db8::12") == "down"));
    // backend-3 ignores pings (v4 and v6).
    t.backends[2].ns.exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=1 net.ipv6.icmp.echo_ignore_all=1");
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "ping", "198.18.0.13") == "down"));
    assert!(wait_for(Duration::from_secs(5), || health_of(&socket, "ping6", "2001:db8::13") == "down"));
    // The others stay up; traffic avoids the down backend.
    assert_eq!(health_of(&socket, "web", "198.18.0.11"), "up");
    assert_eq!(health_of(&socket, "ping", "198.18.0.12"), "up");
    let counts: HashMap<String, usize> = http_load(&t.client, "198.18.100.1", 90, "198.18.0.2", &l4lb);
    assert!(!counts.contains_key("backend-2"), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    let counts: HashMap<String, usize> = http_load(&t.client, "2001:db8:100::1", 60, "2001:db8::2", &l4lb);
    assert!(!counts.contains_key("backend-2") && counts.len() == 2, "{counts:?}");

    // Healthy again: up after `rise` checks.
    t.backends[1].set_health(200);
    t.backends[2].ns.exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=0 net.ipv6.icmp.echo_ignore_all=0");
    assert!(wait_for(Duration::from_secs(5), || every.iter().all(|s| all_up(s))));
    // Each change was a line on l4lb's output (read by another thread: wait for them).
    let logged = |needle: &str| !l4lb.lines_with(needle).is_empty();
    assert!(
        wait_for(Duration::from_secs(2), || {
            logged("backend web/198.18.0.12 is down (HTTP status 500")
                && logged("backend ping/198.18.0.13 is down")
                && logged("backend web/198.18.0.12 is up")
        }),
        "{}",
        l4lb.transcript()
    );
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
}

/// A CA (written as ca.pem in `dir`) and a certificate it signs for
/// backend.test and the backends' addresses (server.pem, server.key).
fn backend_pki(dir: &Path, ca_name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = p.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join(format!("{ca_name}.pem")), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["backend.test".to_string()]).unwrap();
    for i in 1..=3u8 {
        p.subject_alt_names.push(SanType::IpAddress([198, 18, 0, 10 + i].into()));
    }
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// An HTTPS server on port 8443 in `ns` with `dir`'s certificate, answering
/// GET with the status and body in `state` ("200 ready").
fn start_https(ns: &Netns, dir: &Path, state: &Path) -> Child {
    let script = format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        status, _, body = open('{state}').read().strip().partition(' ')
        b = body.encode()
        self.send_response(int(status))
        self.send_header('Content-Length', str(len(b)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('0.0.0.0', 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('{dir}/server.pem', '{dir}/server.key')
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print('ready', flush=True)
s.serve_forever()
"#,
        state = state.display(),
        dir = dir.display()
    );
    let path = dir.join(format!("https-{}.py", ns.name));
    std::fs::write(&path, script).unwrap();
    let mut child = ns.spawn(&format!("exec python3 {}", path.display()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the HTTPS server in {} did not start", ns.name);
    child
}

#[test]
fn https_status_body_and_command_checks_mark_backends_down_and_up() {
    let dir = Scratch::new("l4lb-checks-");
    backend_pki(&dir, "other-ca");
    backend_pki(&dir, "ca"); // the one that signed server.pem
    let d = dir.display();
    let bs: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let timing = "interval_ms = 300, timeout_ms = 250, rise = 2, fall = 2";
    let https = |tls: &str, more: &str| {
        format!("forwarding = \"l2\"\nhealth = {{ check = \"https\", port = 8443, path = \"/health\", {more} tls = {{ {tls} }}, {timing} }}")
    };
    let services = [
        // Verification off (any certificate), the body must say "ready".
        service("tlsoff", "198.18.100.1", "tcp", 80, &https("verify = false", "expect_body = \"ready\","), &bs),
        // Verified against the test's CA and name; 200 or 204 pass.
        service(
            "tlson",
            "198.18.100.2",
            "tcp",
            80,
            &https(&format!("ca_file = \"{d}/ca.pem\", server_name = \"backend.test\""), "expect_status = [200, 204],"),
            &bs,
        ),
        // Verified against a CA that did not sign it.
        service("tlsbad", "198.18.100.3", "tcp", 80, &https(&format!("ca_file = \"{d}/other-ca.pem\""), ""), &bs),
        // A program: passes while DIR/up-ADDRESS exists.
        service(
            "cmd",
            "198.18.100.4",
            "tcp",
            80,
            &format!(
                "forwarding = \"l2\"\nhealth = {{ check = \"command\", command = [\"/bin/sh\", \"-c\", \"test -e {d}/up-$L4LB_BACKEND\"], {timing} }}"
            ),
            &bs,
        ),
        // A program that hangs: killed at its timeout, every time.
        service(
            "hang",
            "198.18.100.5",
            "tcp",
            80,
            &format!("forwarding = \"l2\"\nhealth = {{ check = \"command\", command = [\"/bin/sleep\", \"30\"], {timing} }}"),
            &bs,
        ),
    ];
    let vips = ["198.18.100.1", "198.18.100.2", "198.18.100.3", "198.18.100.4", "198.18.100.5"];
    let Managed { lan: mut t, l4lb, socket, dir: _mgdir, mg: _mg, .. } =
        managed(&vips, &services.join("\n"), None);
    let states: Vec<std::path::PathBuf> = (1..=3).map(|i| dir.join(format!("state-{i}"))).collect();
    for (b, state) in t.backends.iter().zip(&states) {
        std::fs::write(state, "200 ready").unwrap();
        std::fs::write(dir.join(format!("up-{}", b.v4)), "").unwrap();
    }
    let servers: Vec<Child> =
        t.backends.iter().zip(&states).map(|(b, s)| start_https(&b.ns, &dir, s)).collect();
    t.children.extend(servers);
    let h = |svc: &str, i: usize| health_of(&socket, svc, &format!("198.18.0.1{i}"));
    let err = |svc: &str, i: usize| {
        backend(&socket, svc, &format!("198.18.0.1{i}"))["last_error"].as_str().unwrap_or("").to_owned()
    };
    let all = |svc: &str, want: &str| (1..=3).all(|i| h(svc, i) == want);
    assert!(
        wait_for(Duration::from_secs(10), || ["tlsoff", "tlson", "cmd"].iter().all(|s| all(s, "up"))
            && all("tlsbad", "down")
            && all("hang", "down")),
        "{}\n{}",
        ctl_json(&socket, "backends"),
        l4lb.transcript()
    );
    assert!(err("tlsbad", 1).contains("invalid peer certificate"), "{}", err("tlsbad", 1));
    assert!(err("hang", 2).contains("killed"), "{}", err("hang", 2));

    // backend-1 answers 204: down where only 200 passes, up where 204 does;
    // backend-2 answers 500: down for both; backend-3 answers 200 without
    // "ready": down where the body is checked.
    std::fs::write(&states[0], "204 ready").unwrap();
    std::fs::write(&states[1], "500 ready").unwrap();
    std::fs::write(&states[2], "200 sick").unwrap();
    assert!(wait_for(Duration::from_secs(5), || h("tlsoff", 1) == "down"
        && h("tlsoff", 2) == "down"
        && h("tlson", 2) == "down"
        && h("tlsoff", 3) == "down"));
    assert_eq!(err("tlsoff", 1), "HTTP status 204, expected 200");
    assert_eq!(err("tlson", 2), "HTTP status 500, expected 200 or 204");
    assert!(err("tlsoff", 3).contains("lacks \"ready\""), "{}", err("tlsoff", 3));
    assert_eq!((h("tlson", 1), h("tlson", 3)), ("up".to_string(), "up".to_string()));
    assert_eq!(backend(&socket, "tlsoff", "198.18.0.12")["table_entries"], 0);
    // backend-1's file goes: its command check exits 1.
    std::fs::remove_file(dir.join("up-198.18.0.11")).unwrap();
    assert!(wait_for(Duration::from_secs(5), || h("cmd", 1) == "down"));
    assert!(err("cmd", 1).contains("exit status: 1"), "{}", err("cmd", 1));
    assert_eq!(h("cmd", 2), "up");

    // All healthy again.
    for s in &states {
        std::fs::write(s, "200 ready").unwrap();
    }
    std::fs::write(dir.join("up-198.18.0.11"), "").unwrap();
    assert!(wait_for(Duration::from_secs(5), || ["tlsoff", "tlson", "cmd"].iter().all(|s| all(s, "up"))));
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
}

#[test]
fn a_backend_that_drops_syns_is_suspect_from_traffic_while_its_checks_pass() {
    let bs: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    // Checked on its UDP health port, which keeps answering.
    let keys = |down: bool| {
        format!(
            "forwarding = \"l2\"\n\
             health = {{ check = \"udp\", port = 5301, send = \"ping\", expect = \"ok\", interval_ms = 300, timeout_ms = 250 }}\n\
             passive_health = {{ window_s = 60, min_flows = 5, syn_retried_share = 0.5, down = {down} }}"
        )
    };
    let m = managed(&["198.18.100.1"], &service("web", "198.18.100.1", "tcp", 80, &keys(false), &bs), None);
    let socket = &m.socket;
    let all_up = || (1..=3).all(|i| health_of(socket, "web", &format!("198.18.0.1{i}")) == "up");
    assert!(wait_for(Duration::from_secs(10), all_up), "{}", ctl_json(socket, "backends"));
    // backend-2's kernel drops every SYN to port 80.
    m.lan.backends[1].ns.exec(
        "nft 'add table inet l4b; add chain inet l4b in { type filter hook input priority 0; }; \
         add rule inet l4b in tcp dport 80 tcp flags & (syn | ack) == syn drop'",
    );
    // 45 new connections at once, 2.5 s each to connect: the client sends
    // each SYN again after 1 s.
    let script = "import socket, threading\n\
                  ok = []\n\
                  def one():\n    try:\n        s = socket.create_connection(('198.18.100.1', 80), timeout=2.5)\n        \
                  s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'); s.recv(100); s.close(); ok.append(1)\n    \
                  except OSError:\n        pass\n\
                  ts = [threading.Thread(target=one) for _ in range(45)]\n\
                  [t.start() for t in ts]; [t.join() for t in ts]\n\
                  print(len(ok))\n";
    let ok: usize = common::lan::client_py(&m, script).trim().parse().unwrap();
    let suspect =
        |i: u8| backend(socket, "web", &format!("198.18.0.1{i}"))["suspect"].as_str().map(String::from);
    assert!(
        wait_for(Duration::from_secs(5), || suspect(2).is_some()),
        "{ok} of 45 connected; {}\n{}",
        ctl_json(socket, "backends"),
        m.l4lb.transcript()
    );
    eprintln!("{ok} of 45 connected; backend-2: {}", suspect(2).unwrap());
    assert_eq!((suspect(1), suspect(3)), (None, None));
    assert_eq!(health_of(socket, "web", "198.18.0.12"), "up", "its checks still pass");
    let b2 = backend(socket, "web", "198.18.0.12");
    assert!(b2["syn_retried"].as_u64().unwrap() >= 5 && b2["in_state"] == true, "{b2}");
    let text = m.mg.exec("curl -sf http://127.0.0.1:9100/metrics");
    assert_eq!(
        common::lan::metric(&text, "l4lb_backend_suspect{service=\"web\",backend=\"198.18.0.12\"}"),
        Some(1.0)
    );
    assert_eq!(
        common::lan::metric(&text, "l4lb_backend_suspect{service=\"web\",backend=\"198.18.0.11\"}"),
        Some(0.0)
    );
    // Taken as down: it leaves the state, and every new connection succeeds.
    m.write_config(&m.config(&service("web", "198.18.100.1", "tcp", 80, &keys(true), &bs)));
    let (ok, out) = common::lan::ctl(socket, "reload");
    assert!(ok, "{out}");
    assert!(wait_for(Duration::from_secs(5), || backend(socket, "web", "198.18.0.12")["in_state"] == false));
    let ok: usize = common::lan::client_py(&m, script).trim().parse().unwrap();
    assert_eq!(ok, 45, "with the suspect backend out, every connection succeeds");
}

#[test]
fn handshake_times_from_traffic_show_a_slow_backend_and_weigh_least_response_time() {
    // IP-in-IP backends whose tunnel endpoints hold packets 0, 20 and 0 ms.
    let bs: Vec<String> = (1..=3).map(|i| format!("{{ address = \"198.18.0.1{i}\" }}")).collect();
    let extra = "forwarding = \"ipip\"\nscheduler = \"least-response-time\"\nresponse_time = \"handshake\"";
    let mut m = managed(&["198.18.100.1"], &service("slow", "198.18.100.1", "tcp", 80, extra, &bs), None);
    common::lan::start_decap_delayed(&mut m.lan, &[0, 20, 0]);
    let socket = m.socket.clone();
    let hs = |i: u8| backend(&socket, "slow", &format!("198.18.0.1{i}"))["handshake_us"].as_u64();
    // Connections until every backend has handshakes in the window (least
    // response time spreads the first ones evenly: no time is known yet).
    let mut first = HashMap::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            for (k, v) in http_load(&m.lan.client, "198.18.100.1", 15, "198.18.0.2", &m.l4lb) {
                *first.entry(k).or_insert(0) += v;
            }
            (1..=3).all(|i| hs(i).is_some())
        }),
        "{first:?} {}",
        ctl_json(&socket, "backends")
    );
    let (fast1, slow, fast3) = (hs(1).unwrap(), hs(2).unwrap(), hs(3).unwrap());
    eprintln!("handshakes: {fast1} µs, {slow} µs (held 20 ms), {fast3} µs; first flows {first:?}");
    assert!(slow >= 15_000 && slow >= fast1.max(fast3) + 10_000, "{fast1} {slow} {fast3}");
    let text = m.mg.exec("curl -sf http://127.0.0.1:9100/metrics");
    let count = common::lan::metric(
        &text,
        "l4lb_backend_handshake_seconds_count{service=\"slow\",backend=\"198.18.0.12\"}",
    );
    assert!(count.is_some_and(|n| n >= 1.0), "{text}");
    // Weighed by those times, the slow backend gets the fewest new flows.
    let after = http_load(&m.lan.client, "198.18.100.1", 60, "198.18.0.2", &m.l4lb);
    let n = |b: &str| after.get(b).copied().unwrap_or(0);
    eprintln!("then: {after:?}");
    assert!(n("backend-2") < n("backend-1").min(n("backend-3")), "{after:?}");
}
