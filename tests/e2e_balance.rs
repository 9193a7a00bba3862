//! End to end: `l4lb run` balancing real HTTP over TAP in L2 (MAC-rewrite)
//! direct-server-return mode. One-arm topology (docs/architecture.md): a
//! bridge in a "lan" namespace joins l4lb's TAP port, a client namespace and
//! three backend namespaces with the VIP on `lo` (arp_ignore/arp_announce),
//! each running an HTTP server that answers with its own name.
mod common;

use std::collections::HashMap;

use common::netns::{link_exists_in_root, netns_exists, require_root, unique, L4lb, Netns};

const PY: &str = "/usr/bin/python3";

struct Lan {
    lan: Netns,
    client: Netns,
    backends: Vec<(Netns, String, String)>, // (ns, address, mac)
}

fn veth_into(lan: &Netns, ns: &Netns, tag: &str, addr: &str, mac: &str) {
    let (outer, inner) = (format!("{tag}o"), format!("{tag}i"));
    common::netns::sh(&format!(
        "ip -n {} link add {outer} type veth peer name {inner} netns {}",
        lan.name, ns.name
    ));
    common::netns::sh(&format!("ip -n {} link set {outer} master br0 up", lan.name));
    common::netns::sh(&format!("ip -n {} link set {inner} address {mac}", ns.name));
    common::netns::sh(&format!("ip -n {} addr add {addr}/24 dev {inner}", ns.name));
    common::netns::sh(&format!("ip -n {} link set {inner} up", ns.name));
}

fn topology() -> Lan {
    let lan = Netns::new(&unique("l4b-lan"));
    lan.exec("ip link add br0 type bridge");
    lan.exec("ip link set br0 up");
    let client = Netns::new(&unique("l4b-cl"));
    veth_into(&lan, &client, "vc", "198.18.0.2", "02:00:00:00:0c:02");
    client.exec("ip route add 198.18.100.0/24 via 198.18.0.1");
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        let ns = Netns::new(&unique(&format!("l4b-b{i}")));
        let (addr, mac) = (format!("198.18.0.1{i}"), format!("02:00:00:00:0b:1{i}"));
        veth_into(&lan, &ns, &format!("vb{i}"), &addr, &mac);
        // The VIP lives on lo; the backend must not answer ARP for it.
        for vip in 1..=4 {
            ns.exec(&format!("ip addr add 198.18.100.{vip}/32 dev lo"));
        }
        ns.exec("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2");
        backends.push((ns, addr, mac));
    }
    Lan { lan, client, backends }
}

fn http_server(ns: &Netns, name: &str) -> std::process::Child {
    let script = [
        "import http.server as h",
        "class H(h.BaseHTTPRequestHandler):",
        "    def do_GET(self):",
        &format!("        b = ('{name} ' + self.client_address[0] + '\\n').encode()"),
        "        self.send_response(200)",
        "        self.send_header('Content-Length', str(len(b)))",
        "        self.end_headers()",
        "        self.wfile.write(b)",
        "    def log_message(self, *a):",
        "        pass",
        "import socket, threading",
        "def udp():",
        "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        // A DSR UDP service binds the VIP, so answers leave from it.
        "    u.bind(('198.18.100.4', 5300))",
        "    while True:",
        "        d, a = u.recvfrom(2048)",
        &format!("        u.sendto(b'{name} ' + a[0].encode(), a)"),
        "threading.Thread(target=udp, daemon=True).start()",
        "s = h.ThreadingHTTPServer(('0.0.0.0', 80), H)",
        "print('ready', flush=True)",
        "s.serve_forever()",
    ]
    .join("\n");
    let path = std::env::temp_dir().join(format!("{}.py", unique(&format!("l4b-srv-{name}-"))));
    std::fs::write(&path, script).unwrap();
    let mut child = ns.spawn(&format!("exec {PY} {}", path.display()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "server {name} did not start");
    child
}

fn config(tap: &str, backends: &[(Netns, String, String)]) -> String {
    let bs: Vec<String> =
        backends.iter().map(|(_, a, m)| format!("{{ address = \"{a}\", mac = \"{m}\" }}")).collect();
    let weighted: Vec<String> = backends
        .iter()
        .zip(1..)
        .map(|((_, a, m), w)| format!("{{ address = \"{a}\", mac = \"{m}\", weight = {w} }}"))
        .collect();
    format!(
        r#"
[dpdk]
lcores = "{}"
devices = ["net_tap0,iface={tap}"]
{}

[workers]
idle_pause_us = 200
flow_table_capacity = 65536

[[ports]]
name = "lan"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
mac = "02:00:00:00:01:01"

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
forwarding = "l2"
backends = [{}]

[[services]]
name = "weighted"
vip = "198.18.100.2"
protocol = "tcp"
port = 80
forwarding = "l2"
backends = [{}]

[[services]]
name = "sticky"
vip = "198.18.100.3"
protocol = "tcp"
port = 80
forwarding = "l2"
scheduler = "source-ip"
backends = [{}]

[[services]]
name = "udp"
vip = "198.18.100.4"
protocol = "udp"
port = 5300
forwarding = "l2"
backends = [{}]
"#,
        common::lcore_map(2),
        if common::hugepages_free() { "in_memory = true" } else { "hugepages = false" },
        bs.join(", "),
        weighted.join(", "),
        bs.join(", "),
        bs.join(", "),
    )
}

/// `n` HTTP connections to `vip` from the client namespace; the count of
/// answers per backend name. Every request must succeed and every backend
/// must report the client's real address.
fn http_load(client: &Netns, vip: &str, n: usize, l4lb: &L4lb) -> HashMap<String, usize> {
    let script = [
        "import http.client, sys, collections",
        "c = collections.Counter(); bad = []",
        &format!("for i in range({n}):"),
        "    try:",
        &format!("        h = http.client.HTTPConnection('{vip}', 80, timeout=5)"),
        "        h.request('GET', '/'); body = h.getresponse().read().decode().split(); h.close()",
        "        c[body[0]] += 1",
        "        if body[1] != '198.18.0.2': bad.append('source ' + body[1])",
        "    except Exception as e:",
        "        bad.append(repr(e))",
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

#[test]
fn http_through_the_vip_in_l2_dsr_mode_spreads_over_backends() {
    require_root();
    let t = topology();
    let names: Vec<String> = (1..=3).map(|i| format!("backend-{i}")).collect();
    let _servers: Vec<_> = t.backends.iter().zip(&names).map(|((ns, _, _), n)| http_server(ns, n)).collect();
    let tap = unique("l4bt");
    let dir = std::env::temp_dir().join(unique("l4lb-bal-"));
    std::fs::create_dir_all(&dir).unwrap();
    let l4lb = L4lb::start(&config(&tap, &t.backends), &dir);
    common::netns::sh(&format!("ip link set {tap} netns {}", t.lan.name));
    // The kernel side of a net_tap device starts with the port's MAC; on a
    // bridge that would make the bridge keep l4lb's frames for itself.
    t.lan.exec(&format!("ip link set {tap} address 02:00:00:00:01:fe"));
    t.lan.exec(&format!("ip link set {tap} master br0 up"));

    // l4lb answers ARP and ping for its own address.
    let out = t.client.exec("ping -c 2 -i 0.2 -W 2 198.18.0.1");
    assert!(out.contains("2 received"), "{out}");

    // Equal weights: every connection succeeds; over 900 connections each of
    // three backends gets its third within ±15%. Backends see the client's own
    // address (direct server return, no source NAT).
    let counts = http_load(&t.client, "198.18.100.1", 900, &l4lb);
    for n in &names {
        let c = counts.get(n).copied().unwrap_or(0);
        assert!((255..=345).contains(&c), "backend {n} got {c} of 900: {counts:?}");
    }
    // Weights 1:2:3: shares within ±5 points of 1/6, 2/6, 3/6 over 1200 connections.
    let counts = http_load(&t.client, "198.18.100.2", 1200, &l4lb);
    for (n, w) in names.iter().zip([1.0, 2.0, 3.0]) {
        let share = counts.get(n).copied().unwrap_or(0) as f64 / 1200.0;
        assert!(
            (share - w / 6.0).abs() <= 0.05,
            "backend {n}: share {share:.3}, want {:.3}: {counts:?}",
            w / 6.0
        );
    }
    // source-ip: one client, one backend, whatever its ports.
    let counts = http_load(&t.client, "198.18.100.3", 60, &l4lb);
    assert_eq!(counts.len(), 1, "source-ip spread one client: {counts:?}");
    // UDP: the datagrams of one flow (one socket) all reach one backend, and
    // its answers come straight back from the VIP.
    let out = t.client.exec(&format!(
        "{PY} -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect(('198.18.100.4', 5300)); r=set()\n\
for i in range(20):\n    s.send(b'x'); r.add(s.recv(100).split()[0])\nprint(len(r), r.pop().decode())\""
    ));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"1"), "one UDP flow reached several backends: {out}");
    assert!(names.iter().any(|n| words.get(1) == Some(&n.as_str())), "{out}");
    // Traffic routed to l4lb for an address it does not serve is dropped and counted.
    let _ = t.client.exec_try("curl -s --max-time 1 http://198.18.100.99/");

    let (status, transcript) = l4lb.stop();
    assert!(status.success(), "{transcript}");
    // DSR: l4lb only saw client-to-server packets; replies bypassed it. Its
    // forwarded count is at least one SYN per connection, and it replied only
    // to ARP.
    let line = transcript.lines().find(|l| l.starts_with("balancing: rx")).expect("balancing stats");
    let field = |name: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| *w == name).unwrap();
        words[i + 1].parse().unwrap()
    };
    let requests = 900 + 1200 + 60;
    assert!(field("new_flows") >= requests, "{line}");
    assert!(field("forwarded") >= 3 * requests, "SYN, ACK, request, FIN per connection: {line}");
    assert!(field("replied") <= 10, "l4lb answered only ARP and ping: {line}");
    let not_for_us = transcript
        .lines()
        .find(|l| l.trim_start().starts_with("drop not_for_us"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(not_for_us >= 1, "the unknown destination was not counted:\n{transcript}");
    let tap_gone = !link_exists_in_root(&tap);
    let names_ns: Vec<String> =
        std::iter::once(t.lan.name.clone()).chain(t.backends.iter().map(|b| b.0.name.clone())).collect();
    drop(t);
    assert!(tap_gone);
    for n in names_ns {
        assert!(!netns_exists(&n), "{n} left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
