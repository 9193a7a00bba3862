//! End to end: the exception path. l4lb runs in its own namespace ("the
//! box"), where its port's kernel interface appears with the port's MAC and
//! addresses; the box's kernel talks to the LAN through the DPDK port — a TCP
//! server on the box answers a client over IPv4 and IPv6, the box pings the
//! client and a backend (its ARP and neighbour discovery resolve through
//! the path) — while VIP traffic is balanced as before. Traffic to a VIP
//! port no service covers is dropped by default and reaches the box's
//! kernel where the port says so.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::path::Path;
use std::time::Duration;

use common::bird::Bird;
use common::lan::{
    attach_tap_from, ctl_json, http_load, l4lb_config_port, service, start_servers, topology, veth_into, Lan,
    PY,
};
use common::netns::{require_root, unique, L4lb, Netns, Scratch};
use common::wait_for;

const VIP: &str = "198.18.100.1";

/// The LAN with servers, and l4lb in a box namespace of its own with the
/// port's kernel interface (`port_extra` adds keys to `[ports.kernel]`).
struct Box_ {
    l4lb: L4lb,
    ns: Netns,
    lan: Lan,
    socket: std::path::PathBuf,
    dir: Scratch,
}

fn start_box(kernel_extra: &str) -> Box_ {
    start_box_with(kernel_extra, "")
}

/// As [`start_box`], with `sections` (TOML) added to the configuration.
fn start_box_with(kernel_extra: &str, sections: &str) -> Box_ {
    require_root();
    let mut lan = topology(&[VIP]);
    start_servers(&mut lan, None);
    let ns = Netns::new(&unique("l4b-box"));
    let tap = unique("l4bk");
    let dir = Scratch::new("l4lb-box-");
    let socket = dir.join("ctl.sock");
    // Metrics inside the box's own namespace.
    let control = format!(
        "[control]\nsocket = \"{}\"\nmetrics_address = \"127.0.0.1:9100\"\n{sections}\n",
        socket.display()
    );
    let backends: Vec<String> =
        lan.backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v4, b.mac)).collect();
    // Health checks from the box's kernel: through the port's kernel
    // interface (the box has no other way to the LAN).
    // Three failures in a row, a second apart, take a backend down: on a
    // loaded two-CPU runner the flood test starved every check for most of a
    // second at once (all three backends went down together) and broke wrk's
    // connections; a dead backend is still down within about 3 s.
    let extra = "forwarding = \"l2\"\nhealth = { check = \"http\", path = \"/health\", interval_ms = 1000, timeout_ms = 900, rise = 1, fall = 3 }";
    let services = service("web", VIP, "tcp", 80, extra, &backends);
    let port_extra = format!("kernel = {{ name = \"lan\"{kernel_extra} }}");
    let l4lb = L4lb::start_in(Some(&ns), &l4lb_config_port(&tap, &control, &services, 1, &port_extra), &dir);
    attach_tap_from(&lan, &ns, &tap);
    let addrs = ns.exec("ip -br addr show dev lan");
    assert!(addrs.contains("198.18.0.1/24") && addrs.contains("2001:db8::1/64"), "{addrs}");
    let link = ns.exec("ip -br link show dev lan");
    assert!(link.contains("02:00:00:00:01:01"), "the kernel interface has the port's MAC: {link}");
    // Health checks leave from the box's kernel, through the port.
    assert!(
        wait_for(Duration::from_secs(10), || healths(&socket).iter().all(|(_, h)| h == "up")),
        "the backends did not come up: {:?}",
        healths(&socket)
    );
    Box_ { l4lb, ns, lan, socket, dir }
}

/// A dual-stack HTTP server in `ns` on `port`, serving "box" at /.
/// Its document root is in `dir`.
fn start_http(ns: &Netns, dir: &Path, port: u16) -> std::process::Child {
    let root = dir.join(format!("www-{port}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "box\n").unwrap();
    let child =
        ns.spawn(&format!("exec {PY} -m http.server {port} --bind :: --directory {}", root.display()));
    assert!(
        wait_for(Duration::from_secs(10), || ns.exec("ss -ltnH").contains(&format!(":{port}"))),
        "the box's HTTP server did not start"
    );
    child
}

/// Each backend's `ctl backends` health, by address.
fn healths(socket: &std::path::Path) -> Vec<(String, String)> {
    let all = ctl_json(socket, "backends");
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["backend"].as_str().unwrap().to_owned(), r["health"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn the_boxs_kernel_talks_through_the_dpdk_port_while_vips_balance() {
    let b = start_box("");
    let mut server = start_http(&b.ns, &b.dir, 8080);
    // A client reaches a TCP server on the box's own address, both families.
    let out = b.lan.client.exec("curl -s --max-time 5 http://198.18.0.1:8080/");
    assert_eq!(out.trim(), "box", "IPv4 to the box's kernel");
    let out = b.lan.client.exec("curl -s --max-time 5 'http://[2001:db8::1]:8080/'");
    assert_eq!(out.trim(), "box", "IPv6 to the box's kernel");
    // The box's kernel resolves and pings the LAN through the port.
    for target in ["198.18.0.2", "198.18.0.11", "2001:db8::2"] {
        let out = b.ns.exec(&format!("ping -c 2 -i 0.2 -W 2 {target}"));
        assert!(out.contains("2 received"), "ping {target} from the box: {out}");
    }
    // The kernel interface's link-local address: neighbour discovery and
    // echo for it are the box's kernel's, through the port.
    assert!(
        wait_for(Duration::from_secs(10), || !b.ns.exec("ip -6 addr show dev lan").contains("tentative")),
        "{}",
        b.ns.exec("ip -6 addr show dev lan")
    );
    let brief = b.ns.exec("ip -6 -br addr show dev lan scope link");
    let ll = brief.split_whitespace().find(|w| w.starts_with("fe80")).and_then(|w| w.split('/').next());
    let ll = ll.unwrap_or_else(|| panic!("no link-local address: {brief}"));
    let out = b.lan.client.exec(&format!("ping -6 -c 2 -i 0.2 -W 2 {ll}%vci"));
    assert!(out.contains("2 received"), "ping {ll} from the client: {out}");
    // VIP traffic is balanced as ever.
    let counts = http_load(&b.lan.client, VIP, 30, "198.18.0.2", &b.l4lb);
    assert_eq!(counts.values().sum::<usize>(), 30);
    // A backend whose health endpoint fails goes down: the checks' answers
    // come back through the exception path too.
    b.lan.backends[0].set_health(500);
    assert!(
        wait_for(Duration::from_secs(10), || healths(&b.socket)
            .iter()
            .any(|(a, h)| a == "198.18.0.11" && h == "down")),
        "{:?}",
        healths(&b.socket)
    );
    // An unknown port of the VIP: dropped, not the kernel's.
    let (ok, _) = b.lan.client.exec_try("curl -s --max-time 1 http://198.18.100.1:8080/");
    assert!(!ok, "a VIP port no service covers reached something");

    let stats = ctl_json(&b.socket, "stats");
    let port = &stats["ports"][0];
    for k in ["to_kernel", "from_kernel"] {
        assert!(port[k].as_u64().unwrap_or(0) > 0, "{k}: {stats}");
    }
    assert!(stats["counters"]["punted"].as_u64().unwrap_or(0) > 0, "{stats}");
    let page = b.ns.exec("curl -s --max-time 5 http://127.0.0.1:9100/metrics");
    for family in ["l4lb_port_to_kernel_packets_total", "l4lb_port_from_kernel_packets_total"] {
        let line = page.lines().find(|l| l.starts_with(&format!("{family}{{port=\"lan\"}}"))).unwrap_or("");
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(v > 0.0, "{family}: `{line}`");
    }
    assert!(stats["counters"]["no_service"].as_u64().unwrap_or(0) > 0, "{stats}");
    let _ = server.kill();
    let _ = server.wait();
    let (status, transcript) = b.l4lb.stop();
    assert!(status.success(), "{transcript}");
    assert!(!b.ns.exec("ip -br link").contains("lan"), "the kernel interface went with l4lb");
}

#[test]
fn unknown_vip_ports_reach_the_kernel_where_the_port_says_so() {
    let b = start_box(", punt_unknown_vip_ports = true");
    // The box serves the VIP itself on a port no service covers.
    b.ns.exec(&format!("ip addr add {VIP}/32 dev lo"));
    let mut server = start_http(&b.ns, &b.dir, 8080);
    let out = b.lan.client.exec("curl -s --max-time 5 http://198.18.100.1:8080/");
    assert_eq!(out.trim(), "box", "the VIP's unknown port reached the box's kernel");
    // The service's own port is still balanced.
    let counts = http_load(&b.lan.client, VIP, 10, "198.18.0.2", &b.l4lb);
    assert!(!counts.contains_key("box"), "{counts:?}");
    let stats = ctl_json(&b.socket, "stats");
    assert_eq!(stats["counters"]["no_service"].as_u64(), Some(0), "{stats}");
    let _ = server.kill();
    let _ = server.wait();
    let (status, transcript) = b.l4lb.stop();
    assert!(status.success(), "{transcript}");
}

/// BGP between BIRD on the box (its kernel interface) and BIRD in a router
/// namespace, with 2 s keepalives and a 6 s hold time; `sources` are the
/// box's route sources, and `export` what its session announces (the
/// router: none, it announces nothing).
fn bird_conf(id: &str, local_as: u32, peer: &str, peer_as: u32, sources: &str, export: &str) -> String {
    format!(
        r#"
router id {id};
protocol device {{ }}
{sources}
protocol bgp peer {{
  local {id} as {local_as};
  neighbor {peer} as {peer_as};
  hold time 6; keepalive time 2; connect retry time 1;
  ipv4 {{ import all; export {export}; }};
}}
"#
    )
}

/// A router namespace on the LAN (198.18.0.254) running BIRD, peering with the box.
fn router(b: &Box_) -> (Netns, Bird) {
    let ns = Netns::new(&unique("l4b-rt"));
    veth_into(&b.lan.lan, &ns, "vr", "198.18.0.254", "2001:db8::fe", "02:00:00:00:0c:fe");
    let bird = Bird::start(
        &ns,
        &b.dir,
        "router",
        &bird_conf("198.18.0.254", 65001, "198.18.0.1", 65000, "", "none"),
    );
    (ns, bird)
}

/// Sends UDP datagrams from `ns` to `dst` as fast as one Python process
/// can, for `secs` seconds; prints how many it sent. Its script is in `dir`.
fn flood(ns: &Netns, dir: &Path, dst: &str, secs: u32) -> std::process::Child {
    let script = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nend = time.time() + {secs}\nn = 0\n\
         while time.time() < end:\n    for _ in range(1000):\n        s.sendto(b'flood', ('{dst}', 9))\n    n += 1000\nprint(n)\n"
    );
    let path = dir.join("flood.py");
    std::fs::write(&path, script).unwrap();
    ns.spawn(&format!("exec {PY} {}", path.display()))
}

#[test]
fn bgp_from_the_box_comes_up_through_the_port_and_survives_load_and_a_flood() {
    let b = start_box("");
    let (router, on_router) = router(&b);
    let sources = "protocol static vips { ipv4; route 198.18.100.1/32 blackhole; }";
    let on_box = Bird::start(
        &b.ns,
        &b.dir,
        "box",
        &bird_conf("198.18.0.1", 65000, "198.18.0.254", 65001, sources, "where proto = \"vips\""),
    );
    let established = || on_box.protocol(&b.ns, "peer").contains("Established");
    assert!(
        wait_for(Duration::from_secs(30), established),
        "BGP did not come up: box {:?}, router {:?}",
        on_box.protocol(&b.ns, "peer"),
        on_router.protocol(&router, "peer")
    );
    assert!(
        wait_for(Duration::from_secs(10), || on_router.learnt(&router).contains("198.18.100.1/32")),
        "the router did not learn the VIP: {}",
        on_router.learnt(&router)
    );
    // The session's state line carries the time it was established: it must
    // not change (no flap) through what follows.
    let since = on_box.protocol(&b.ns, "peer");

    // Full-rate HTTP through the VIP, then the same under a flood at the
    // box's own address (longer than the hold time).
    let wrk = |secs: u32| b.lan.client.exec(&format!("wrk -t2 -c32 -d{secs}s --timeout 2s http://{VIP}/"));
    let out = wrk(3);
    assert!(out.contains("Requests/sec") && !out.contains("Socket errors"), "wrk: {out}");
    let f = flood(&b.lan.client, &b.dir, "198.18.0.1", 9);
    let out = wrk(8);
    let sent = f
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(
        out.contains("Requests/sec") && !out.contains("Socket errors"),
        "wrk under the flood: {out}\nbackends that changed health: {:?}",
        b.l4lb.lines_with("backend ")
    );
    assert!(!out.contains("Non-2xx"), "{out}");
    assert_eq!(on_box.protocol(&b.ns, "peer"), since, "the BGP session flapped");
    assert!(on_router.protocol(&router, "peer").contains("Established"), "the router lost the session");

    let stats = ctl_json(&b.socket, "stats");
    let c = &stats["counters"];
    eprintln!(
        "flood: {sent} datagrams in 9 s; punted {}, punt_rate_limited {}, punt_ring_full {}; wrk under it: {}",
        c["punted"],
        c["punt_rate_limited"],
        c["punt_ring_full"],
        out.lines().find(|l| l.starts_with("Requests/sec")).unwrap_or("")
    );
    assert!(c["punt_rate_limited"].as_u64().unwrap_or(0) > 0, "the flood was not limited: {stats}");
    drop(on_box);
    drop(on_router);
    let (status, transcript) = b.l4lb.stop();
    assert!(status.success(), "{transcript}");
}

#[test]
fn a_vip_is_announced_while_its_service_has_backends_and_withdrawn_when_not() {
    let b = start_box_with("", "[routing]\ntable = 100\n");
    let (_, table) = b.ns.exec_try("ip route show table 100");
    assert!(
        table.contains("198.18.100.1 dev lan"),
        "l4lb did not put the VIP in table 100: {table}\n{}",
        b.l4lb.transcript()
    );
    let announced_gauge = || {
        let page = b.ns.exec("curl -s --max-time 5 http://127.0.0.1:9100/metrics");
        let line = "l4lb_service_announced{service=\"web\",vip=\"198.18.100.1\"}";
        page.lines().find(|l| l.starts_with(line)).and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!(announced_gauge(), Some(1));
    let services = ctl_json(&b.socket, "services");
    assert_eq!(services[0]["announced"], serde_json::json!(true), "{services}");
    let (router, on_router) = router(&b);
    // BIRD on the box announces what l4lb keeps in table 100.
    let sources =
        "protocol kernel vips { kernel table 100; learn; scan time 2; ipv4 { import all; export none; }; }";
    let on_box = Bird::start(
        &b.ns,
        &b.dir,
        "box",
        &bird_conf("198.18.0.1", 65000, "198.18.0.254", 65001, sources, "where proto = \"vips\""),
    );
    let learnt = || on_router.learnt(&router).contains("198.18.100.1/32");
    assert!(
        wait_for(Duration::from_secs(30), learnt),
        "the router did not learn the VIP: box {:?}, router {}",
        on_box.protocol(&b.ns, "peer"),
        on_router.learnt(&router)
    );
    // Every backend fails its check: the VIP is withdrawn (checks every
    // 300 ms, down after 2 failures), then announced again when one returns.
    for be in &b.lan.backends {
        be.set_health(500);
    }
    assert!(wait_for(Duration::from_secs(10), || !learnt()), "not withdrawn: {}", on_router.learnt(&router));
    assert!(!b.ns.exec_try("ip route show table 100").1.contains("198.18.100.1"));
    assert_eq!(announced_gauge(), Some(0));
    b.lan.backends[1].set_health(200);
    assert!(wait_for(Duration::from_secs(10), learnt), "not announced again: {}", on_router.learnt(&router));
    // The stop withdraws it before l4lb exits.
    let (status, transcript) = b.l4lb.stop();
    assert!(status.success(), "{transcript}");
    assert!(transcript.contains("routing: withdrawing 198.18.100.1"), "{transcript}");
    assert!(wait_for(Duration::from_secs(10), || !learnt()), "still announced after the stop");
    drop(on_box);
    drop(on_router);
}
