//! The one-arm TAP topology (docs/architecture.md, "Tests"), built inside namespaces:
//! a bridge in `lan` joins l4lb's TAP port, a client (198.18.0.2,
//! 2001:db8::2) and three backends (198.18.0.1N, 2001:db8::1N) with the VIPs
//! on `lo`, each running an HTTP server that answers "NAME CLIENT-ADDRESS".
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Child;

use super::netns::{sh, unique, L4lb, Netns, Scratch};

pub const PY: &str = "/usr/bin/python3";

pub struct Backend {
    pub ns: Netns,
    pub name: String,
    pub v4: String,
    pub v6: String,
    pub mac: String,
    /// The status its `/health` page and UDP health port answer with
    /// (write "500" to make it unhealthy).
    pub health_file: std::path::PathBuf,
}

impl Backend {
    pub fn set_health(&self, status: u16) {
        std::fs::write(&self.health_file, status.to_string()).unwrap();
    }
}

pub struct Lan {
    pub lan: Netns,
    pub client: Netns,
    pub backends: Vec<Backend>,
    pub children: Vec<Child>,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for b in &self.backends {
            let _ = std::fs::remove_file(&b.health_file);
        }
    }
}

/// A management namespace on the LAN (198.18.0.5, 2001:db8::5): l4lb runs
/// in it, so its health checks reach the backends through kernel networking.
pub fn management(t: &Lan) -> Netns {
    let ns = Netns::new(&unique("l4b-mg"));
    veth_into(&t.lan, &ns, "vm", "198.18.0.5", "2001:db8::5", "02:00:00:00:0c:05");
    ns
}

/// Moves l4lb's TAP device from namespace `from` onto the bridge.
pub fn attach_tap_from(t: &Lan, from: &Netns, tap: &str) {
    sh(&format!("ip -n {} link set {tap} netns {}", from.name, t.lan.name));
    t.lan.exec(&format!("ip link set {tap} address 02:00:00:00:01:fe"));
    t.lan.exec(&format!("ip link set {tap} master br0 up"));
}

/// `l4lb ctl --socket SOCKET ARGS`: (success, stdout + stderr).
pub fn ctl(socket: &std::path::Path, args: &str) -> (bool, String) {
    super::netns::sh_try(&format!("{} ctl --socket {} {args}", env!("CARGO_BIN_EXE_l4lb"), socket.display()))
}

/// `l4lb ctl --json ...`, parsed; panics when it fails.
pub fn ctl_json(socket: &std::path::Path, args: &str) -> serde_json::Value {
    let (ok, out) = ctl(socket, &format!("--json {args}"));
    assert!(ok, "ctl {args}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args}: {e}: {out}"))
}

pub fn veth_into(lan: &Netns, ns: &Netns, tag: &str, v4: &str, v6: &str, mac: &str) {
    let (outer, inner) = (format!("{tag}o"), format!("{tag}i"));
    sh(&format!("ip -n {} link add {outer} type veth peer name {inner} netns {}", lan.name, ns.name));
    sh(&format!("ip -n {} link set {outer} master br0 up", lan.name));
    sh(&format!("ip -n {} link set {inner} address {mac}", ns.name));
    sh(&format!("ip -n {} addr add {v4}/24 dev {inner}", ns.name));
    sh(&format!("ip -n {} addr add {v6}/64 dev {inner} nodad", ns.name));
    sh(&format!("ip -n {} link set {inner} up", ns.name));
}

/// Builds the LAN with `vips` (IPv4 and IPv6) on every backend's `lo`.
pub fn topology(vips: &[&str]) -> Lan {
    topology_with(vips, 3)
}

/// As [`topology`], with `n` backends (1 to 9).
pub fn topology_with(vips: &[&str], n: u8) -> Lan {
    let lan = Netns::new(&unique("l4b-lan"));
    lan.exec("ip link add br0 type bridge");
    lan.exec("ip link set br0 up");
    let client = Netns::new(&unique("l4b-cl"));
    veth_into(&lan, &client, "vc", "198.18.0.2", "2001:db8::2", "02:00:00:00:0c:02");
    client.exec("ip route add 198.18.100.0/24 via 198.18.0.1");
    client.exec("ip -6 route add 2001:db8:100::/64 via 2001:db8::1");
    let mut backends = Vec::new();
    for i in 1..=n {
        let ns = Netns::new(&unique(&format!("l4b-b{i}")));
        let (v4, v6, mac) =
            (format!("198.18.0.1{i}"), format!("2001:db8::1{i}"), format!("02:00:00:00:0b:1{i}"));
        veth_into(&lan, &ns, &format!("vb{i}"), &v4, &v6, &mac);
        for vip in vips {
            let plen = if vip.contains(':') { 128 } else { 32 };
            ns.exec(&format!("ip addr add {vip}/{plen} dev lo nodad"));
        }
        // The VIP lives on lo; the backend must not answer ARP for it.
        ns.exec("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2");
        let health_file = std::env::temp_dir().join(unique(&format!("l4b-health-b{i}-")));
        std::fs::write(&health_file, "200").unwrap();
        backends.push(Backend { ns, name: format!("backend-{i}"), v4, v6, mac, health_file });
    }
    Lan { lan, client, backends, children: Vec::new() }
}

/// An l4lb configuration for this LAN: one TAP port "lan" (198.18.0.1/24,
/// 2001:db8::1/64) followed by `services` (TOML `[[services]]` sections).
pub fn l4lb_config(tap: &str, services: &str) -> String {
    // In the root namespace: no metrics listener (a host may have its own on
    // 9100) and a control socket of this test's own.
    let socket = std::env::temp_dir().join(format!("{}.sock", unique("l4b-ctl-")));
    let control = format!("[control]\nsocket = \"{}\"\nmetrics_address = \"\"\n", socket.display());
    l4lb_config_with(tap, &control, services)
}

/// Balancing workers of the test's l4lb: `L4LB_TEST_WORKERS` (scripts/test.sh
/// runs the TAP tests again with 2), else 1.
pub fn test_workers() -> usize {
    std::env::var("L4LB_TEST_WORKERS").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

/// As [`l4lb_config`] with the `[control]` section given, and
/// [`test_workers`] balancing workers.
pub fn l4lb_config_with(tap: &str, control: &str, services: &str) -> String {
    l4lb_config_workers(tap, control, services, test_workers())
}

/// As [`l4lb_config_with`] with `workers` balancing workers: as many RX and
/// TX queues on the TAP port (the kernel's TUN driver spreads flows over
/// them by its own flow hash).
pub fn l4lb_config_workers(tap: &str, control: &str, services: &str, workers: usize) -> String {
    // These tests run l4lb in the root namespace or one that has its own
    // route to the LAN: no kernel interface (tests/e2e_kernel.rs has them).
    l4lb_config_port(tap, control, services, workers, "kernel = { enabled = false }")
}

/// As [`l4lb_config_workers`], with `port_extra` keys in the port's section.
pub fn l4lb_config_port(
    tap: &str,
    control: &str,
    services: &str,
    workers: usize,
    port_extra: &str,
) -> String {
    format!(
        r#"
[dpdk]
lcores = "{lcores}"
devices = ["net_tap0,iface={tap}"]
{mem}

[workers]
idle_pause_us = 200
flow_table_capacity = 65536

[[ports]]
name = "lan"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
mac = "02:00:00:00:01:01"
{port_extra}

{control}
{services}
"#,
        lcores = super::lcore_map(1 + workers),
        mem = if super::hugepages_free() { "in_memory = true" } else { "hugepages = false" },
    )
}

/// One `[[services]]` section.
pub fn service(name: &str, vip: &str, protocol: &str, port: u16, extra: &str, backends: &[String]) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"{protocol}\"\nport = {port}\n{extra}\nbackends = [{}]\n",
        backends.join(", ")
    )
}

/// Moves l4lb's TAP device onto the bridge.
pub fn attach_tap(t: &Lan, tap: &str) {
    sh(&format!("ip link set {tap} netns {}", t.lan.name));
    // The kernel side of a net_tap device starts with the port's MAC; on a
    // bridge that would make the bridge keep l4lb's frames for itself.
    t.lan.exec(&format!("ip link set {tap} address 02:00:00:00:01:fe"));
    t.lan.exec(&format!("ip link set {tap} master br0 up"));
}

fn wait_ready(child: &mut Child, what: &str) {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{what} did not start");
}

/// Starts each backend's HTTP server (dual stack, port 80) and, if given, a
/// UDP echo-with-name server bound to `udp_vip`:5300.
pub fn start_servers(t: &mut Lan, udp_vip: Option<&str>) {
    for i in 0..t.backends.len() {
        let child = start_server(&t.backends[i], udp_vip);
        t.children.push(child);
    }
}

/// Starts one backend's servers (see [`start_servers`]); kill the child to
/// take the backend's service down.
pub fn start_server(b: &Backend, udp_vip: Option<&str>) -> Child {
    {
        let mut script = vec![
            "import http.server as h, socket, threading, time".to_string(),
            "class S(h.ThreadingHTTPServer):".into(),
            "    request_queue_size = 512".into(),
            "    address_family = socket.AF_INET6".into(),
            "class H(h.BaseHTTPRequestHandler):".into(),
            "    protocol_version = 'HTTP/1.1'".into(),
            "    disable_nagle_algorithm = True".into(),
            "    def do_GET(self):".into(),
            "        if self.path.startswith('/stream'):".into(),
            "            return self.stream()".into(),
            "        a = self.client_address[0].removeprefix('::ffff:')".into(),
            format!("        b = ('{} ' + a + '\\n').encode()", b.name),
            "        code = health() if self.path == '/health' else 200".into(),
            "        self.send_response(code)".into(),
            "        self.send_header('Content-Length', str(len(b)))".into(),
            "        self.end_headers()".into(),
            "        self.wfile.write(b)".into(),
            // A slow download: /stream?chunks=N sends N chunks of 1000
            // bytes, 0.25 s apart, byte i of the body being i % 251; the
            // backend's name in a header.
            "    def stream(self):".into(),
            "        n = int(self.path.partition('chunks=')[2] or 40)".into(),
            "        self.send_response(200)".into(),
            "        self.send_header('Content-Length', str(n * 1000))".into(),
            format!("        self.send_header('X-Backend', '{}')", b.name),
            "        self.end_headers()".into(),
            "        body = (bytes(range(251)) * (n * 4 + 1))[:n * 1000]".into(),
            "        for k in range(n):".into(),
            "            self.wfile.write(body[k * 1000:(k + 1) * 1000]); self.wfile.flush()".into(),
            "            if k + 1 < n: time.sleep(0.25)".into(),
            "    def log_message(self, *a):".into(),
            "        pass".into(),
            format!(
                "def health():\n    return int(open('{}').read().strip() or 200)",
                b.health_file.display()
            ),
            // UDP health port: answers "ok NAME" while healthy, nothing otherwise.
            "def udp_health():".into(),
            "    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)".into(),
            "    u.bind(('::', 5301))".into(),
            "    while True:".into(),
            "        d, a = u.recvfrom(2048)".into(),
            "        if health() == 200:".into(),
            format!("            u.sendto(b'ok {}', a)", b.name),
            "threading.Thread(target=udp_health, daemon=True).start()".into(),
        ];
        if let Some(vip) = udp_vip {
            script.extend([
                "def udp():".into(),
                "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)".into(),
                // A DSR UDP service binds the VIP, so answers leave from it.
                format!("    u.bind(('{vip}', 5300))"),
                "    while True:".into(),
                "        d, a = u.recvfrom(2048)".into(),
                format!("        u.sendto(b'{} ' + a[0].encode(), a)", b.name),
                "threading.Thread(target=udp, daemon=True).start()".into(),
            ]);
        }
        script.extend([
            "s = S(('::', 80), H)".into(),
            "print('ready', flush=True)".into(),
            "s.serve_forever()".into(),
        ]);
        let path = std::env::temp_dir().join(format!("{}.py", unique(&format!("l4b-srv-{}-", b.name))));
        std::fs::write(&path, script.join("\n")).unwrap();
        let mut child = b.ns.spawn(&format!("exec {PY} {}", path.display()));
        wait_ready(&mut child, &b.name);
        // Python has read it.
        let _ = std::fs::remove_file(&path);
        child
    }
}

/// Starts the userspace tunnel endpoint (scripts/backend-decap.py) in every backend.
pub fn start_decap(t: &mut Lan) {
    start_decap_delayed(t, &[]);
}

/// As [`start_decap`], backend N holding each packet `delays_ms[N]` ms (a
/// slow backend; none where the list ends).
pub fn start_decap_delayed(t: &mut Lan, delays_ms: &[u32]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/backend-decap.py");
    for (i, b) in t.backends.iter().enumerate() {
        let delay = delays_ms.get(i).copied().unwrap_or(0);
        let mut child = b.ns.spawn(&format!("exec {PY} {script} l4bdecap 6080 {delay}"));
        wait_ready(&mut child, "backend-decap.py");
        t.children.push(child);
    }
}

/// `n` HTTP connections to `vip` from the client; answers per backend name.
/// Every request must succeed, and every backend must report `client_addr`
/// (direct server return: no source NAT).
pub fn http_load(
    client: &Netns,
    vip: &str,
    n: usize,
    client_addr: &str,
    l4lb: &L4lb,
) -> HashMap<String, usize> {
    let script = [
        "import http.client, collections",
        "c = collections.Counter(); bad = []",
        &format!("for i in range({n}):"),
        "    try:",
        &format!("        h = http.client.HTTPConnection('{vip}', 80, timeout=5)"),
        "        h.request('GET', '/'); body = h.getresponse().read().decode().split(); h.close()",
        "        c[body[0]] += 1",
        &format!("        if body[1] != '{client_addr}': bad.append('source ' + body[1])"),
        "    except Exception as e:",
        "        bad.append(repr(e))",
        // Fail fast: a broken path would otherwise cost a timeout per connection.
        "    if len(bad) >= 3: break",
        "print(' '.join(f'{k}={v}' for k, v in c.items()))",
        "print('bad', len(bad), bad[:3])",
    ]
    .join("\n");
    let path = std::env::temp_dir().join(format!("{}.py", unique("l4b-load-")));
    std::fs::write(&path, script).unwrap();
    let out = client.exec(&format!("{PY} {}", path.display()));
    let _ = std::fs::remove_file(&path);
    let mut lines = out.lines();
    let counts: HashMap<String, usize> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.parse().unwrap())))
        .collect();
    let bad = lines.next().unwrap_or("");
    assert!(bad.starts_with("bad 0 "), "{vip}: {bad}\n{}", l4lb.transcript());
    assert_eq!(counts.values().sum::<usize>(), n);
    counts
}

/// Asserts each backend's share of `counts` (connections per backend name)
/// is within `points` of its weight's share.
pub fn assert_shares(counts: &HashMap<String, usize>, names: &[String], weights: &[f64], points: f64) {
    let (total, sum) = (counts.values().sum::<usize>() as f64, weights.iter().sum::<f64>());
    for (n, w) in names.iter().zip(weights) {
        let share = counts.get(n).copied().unwrap_or(0) as f64 / total;
        assert!(
            (share - w / sum).abs() <= points,
            "backend {n}: share {share:.3}, want {:.3}: {counts:?}",
            w / sum
        );
    }
}

/// Starts a client that keeps one HTTP/1.1 connection to `vip` and sends a
/// request on it every 10 ms until it is told to stop (a line on stdin); it
/// then prints "requests N errors E backends B1,B2..".
pub fn start_long_stream(client: &Netns, vip: &str) -> Child {
    let script = [
        "import http.client, sys, threading, time",
        "stop = threading.Event()",
        "threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()",
        &format!("h = http.client.HTTPConnection('{vip}', 80, timeout=5)"),
        "n = 0; errors = 0; names = set()",
        "print('ready', flush=True)",
        "while not stop.is_set():",
        "    try:",
        "        h.request('GET', '/'); names.add(h.getresponse().read().decode().split()[0]); n += 1",
        "    except Exception as e:",
        "        errors += 1; print('error', repr(e), file=sys.stderr, flush=True); break",
        "    time.sleep(0.01)",
        "print('requests', n, 'errors', errors, 'backends', ','.join(sorted(names)), flush=True)",
    ]
    .join("\n");
    spawn_script(client, &script, "l4b-stream-")
}

/// Runs a Python client script in `ns` with stdin/stdout piped, and waits
/// for its "ready" line.
pub fn spawn_script(ns: &Netns, script: &str, tag: &str) -> Child {
    let path = std::env::temp_dir().join(format!("{}.py", unique(tag)));
    std::fs::write(&path, script).unwrap();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, PY])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child, tag);
    // Python has read it.
    let _ = std::fs::remove_file(&path);
    child
}

/// Stops a [`start_long_stream`] client: (requests, errors, backends seen).
pub fn stop_long_stream(mut child: Child) -> (u64, u64, Vec<String>) {
    use std::io::{BufRead, Write};
    let mut stdin = child.stdin.take().unwrap();
    // It may have ended already (after an error): its summary is still there.
    let _ = writeln!(stdin, "stop");
    drop(stdin);
    // wait_ready already consumed the "ready" line.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("stream summary").unwrap();
    let _ = child.wait();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
    if !err.is_empty() {
        eprintln!("long stream: {err}");
    }
    let w: Vec<&str> = line.split_whitespace().collect();
    (
        w[1].parse().unwrap(),
        w[3].parse().unwrap(),
        w.get(5).map_or(vec![], |s| s.split(',').map(String::from).collect()),
    )
}

/// A field of l4lb's final `balancing:` line.
pub fn balancing_field(transcript: &str, name: &str) -> u64 {
    let line = transcript.lines().find(|l| l.starts_with("balancing: rx")).expect("balancing stats");
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == name).unwrap();
    words[i + 1].parse().unwrap()
}

/// A drop counter from l4lb's final report (0 when absent).
pub fn drop_count(transcript: &str, reason: &str) -> u64 {
    transcript
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("drop {reason} ")))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

/// The LAN with l4lb running in a management namespace on it.
pub struct Managed {
    pub l4lb: L4lb,
    pub mg: Netns,
    pub lan: Lan,
    pub socket: std::path::PathBuf,
    /// Its configuration and control socket; removed when dropped.
    pub dir: Scratch,
    pub tap: String,
    /// Each worker's flow-table capacity.
    pub flows: usize,
}

impl Managed {
    /// The configuration text for `services` (what `managed` started with,
    /// or a replacement for a reload).
    pub fn config(&self, services: &str) -> String {
        managed_config(&self.tap, &self.socket, services, self.flows)
    }

    /// Rewrites the configuration file l4lb reloads from.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("l4lb.toml"), text).unwrap();
    }
}

fn managed_config(tap: &str, socket: &std::path::Path, services: &str, flows: usize) -> String {
    let control = format!(
        "[control]\nsocket = \"{}\"\nhealth_source_v4 = \"198.18.0.5\"\nhealth_source_v6 = \"2001:db8::5\"\n",
        socket.display()
    );
    l4lb_config_with(tap, &control, services)
        .replace("flow_table_capacity = 65536", &format!("flow_table_capacity = {flows}"))
}

/// The LAN (servers started, UDP ones on `udp_vip`), a management namespace,
/// and l4lb running in it with `services`; its control socket is in a fresh
/// directory, its metrics on 127.0.0.1:9100 inside the management namespace.
pub fn managed(vips: &[&str], services: &str, udp_vip: Option<&str>) -> Managed {
    managed_sized(vips, services, udp_vip, 65536)
}

/// As [`managed`], each worker's flow table of `flows` entries.
pub fn managed_sized(vips: &[&str], services: &str, udp_vip: Option<&str>, flows: usize) -> Managed {
    super::netns::require_root();
    let mut lan = topology(vips);
    start_servers(&mut lan, udp_vip);
    let mg = management(&lan);
    let tap = unique("l4bh");
    let dir = Scratch::new("l4lb-mg-");
    let socket = dir.join("ctl.sock");
    let l4lb = L4lb::start_in(Some(&mg), &managed_config(&tap, &socket, services, flows), &dir);
    attach_tap_from(&lan, &mg, &tap);
    Managed { l4lb, mg, lan, socket, dir, tap, flows }
}

/// Runs a Python snippet in the client namespace; its stdout.
pub fn client_py(m: &Managed, script: &str) -> String {
    let path = std::env::temp_dir().join(format!("{}.py", unique("l4b-cl-")));
    std::fs::write(&path, script).unwrap();
    let out = m.lan.client.exec(&format!("{PY} {}", path.display()));
    let _ = std::fs::remove_file(&path);
    out
}

/// The value of a metric line (exact name and labels) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
