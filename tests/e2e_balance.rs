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
        ns.exec("ip addr add 198.18.100.1/32 dev lo");
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
        &format!("        b = b'{name}\\n'"),
        "        self.send_response(200)",
        "        self.send_header('Content-Length', str(len(b)))",
        "        self.end_headers()",
        "        self.wfile.write(b)",
        "    def log_message(self, *a):",
        "        pass",
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
"#,
        common::lcore_map(2),
        if common::hugepages_free() { "in_memory = true" } else { "hugepages = false" },
        bs.join(", ")
    )
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

    // Every request succeeds and each backend answers some of them.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let requests = 90;
    for i in 0..requests {
        let (ok, body) = t.client.exec_try("curl -s --max-time 5 http://198.18.100.1/");
        assert!(ok, "request {i} failed: {body}\n{}", l4lb.transcript());
        *seen.entry(body.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(seen.values().sum::<usize>(), requests);
    for n in &names {
        let c = seen.get(n).copied().unwrap_or(0);
        assert!((10..=50).contains(&c), "backend {n} got {c} of {requests}: {seen:?}");
    }

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
    assert!(field("new_flows") >= requests as u64, "{line}");
    assert!(field("forwarded") >= 3 * requests as u64, "SYN, ACK, request, FIN per connection: {line}");
    assert!(field("replied") <= 10, "l4lb answered only ARP: {line}");
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
