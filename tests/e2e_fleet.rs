//! End to end: a fleet. A router namespace (BIRD with BFD, ECMP over an L4
//! hash: `fib_multipath_hash_policy = 1`) stands between the client
//! (198.19.0.2) and a LAN with two l4lb boxes — each in a namespace of its
//! own with its TAP port, exception path and the BIRD l4lb runs from its
//! `[bgp]` section — and three DSR backends that answer the client through
//! the router. Nothing here is a speed figure: two l4lb processes share
//! this machine's CPUs.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::bird::Bird;
use common::lan::{
    ctl, ctl_json, service, spawn_script, start_servers, test_workers, topology_with, veth_into, Lan,
};
use common::netns::{require_root, sh, unique, L4lb, Netns};
use common::{hugepages_free, lcore_map, wait_for};

const VIP: &str = "198.18.100.1";
const VIP6: &str = "2001:db8:100::1";
const CLIENT: &str = "198.19.0.2";
const ROUTER_MAC: &str = "02:00:00:00:0c:fe";

/// One l4lb box: box `n` (1, 2) is 198.18.0.(2n-1) and 2001:db8::(2n-1)
/// with MAC 02:00:00:00:01:0(2n-1).
struct BoxRun {
    ns: Netns,
    l4lb: L4lb,
    socket: PathBuf,
    config: PathBuf,
}

struct Fleet {
    lan: Lan,
    /// With `[sync]` (on or off) between the boxes, or without.
    sync: Option<bool>,
    /// How many of the LAN's backends the boxes' services list.
    serving: usize,
    router: Netns,
    client: Netns,
    router_bird: Bird,
    boxes: [Option<BoxRun>; 3],
    /// Boxes 1..=size are the fleet (the router's and each other's peers).
    size: u8,
    dir: PathBuf,
}

fn box_address(n: u8) -> String {
    format!("198.18.0.{}", 2 * n - 1)
}

fn box_mac(n: u8) -> String {
    format!("02:00:00:00:01:0{}", 2 * n - 1)
}

/// BIRD on the router: a session to each box with BFD, GRACEFUL_SHUTDOWN
/// honoured (local preference 0), and equal routes merged into one
/// multipath route in the kernel.
fn router_conf(size: u8) -> String {
    let mut c = String::from(
        r#"
router id 198.18.0.254;
protocol device { }
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol kernel { ipv6 { export all; }; merge paths on; }
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
filter from_boxes {
  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
  accept;
}
template bgp boxes {
  local 198.18.0.254 as 65000;
  hold time 9; keepalive time 3; connect retry time 1;
  bfd on;
  ipv4 { import filter from_boxes; export none; };
}
template bgp boxes6 {
  local 2001:db8::fe as 65000;
  hold time 9; keepalive time 3; connect retry time 1;
  bfd on;
  ipv6 { import filter from_boxes; export none; };
}
"#,
    );
    for n in 1..=size {
        c.push_str(&format!("protocol bgp box{n} from boxes {{ neighbor {} as 65001; }}\n", box_address(n)));
        c.push_str(&format!(
            "protocol bgp box{n}v6 from boxes6 {{ neighbor 2001:db8::{} as 65001; }}\n",
            2 * n - 1
        ));
    }
    c
}

impl Fleet {
    /// The LAN, the backends' servers, the router and the client; no box yet.
    fn new() -> Fleet {
        Fleet::with(3, None, 2)
    }

    /// As [`Fleet::new`] with `backends` on the LAN (the boxes serve the
    /// first three) and `[sync]` on, off or absent.
    fn with(backends: u8, sync: Option<bool>, size: u8) -> Fleet {
        require_root();
        let mut lan = topology_with(&[VIP, VIP6], backends);
        start_servers(&mut lan, None);
        let dir = std::env::temp_dir().join(unique("l4lb-fleet-"));
        std::fs::create_dir_all(&dir).unwrap();
        let router = Netns::new(&unique("l4b-rt"));
        veth_into(&lan.lan, &router, "vr", "198.18.0.254", "2001:db8::fe", ROUTER_MAC);
        router.exec(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
             net.ipv6.conf.all.forwarding=1 net.ipv6.fib_multipath_hash_policy=1",
        );
        let client = Netns::new(&unique("l4b-fc"));
        sh(&format!("ip -n {} link add vcr type veth peer name vcc netns {}", router.name, client.name));
        router.exec("ip addr add 198.19.0.1/24 dev vcr");
        router.exec("ip addr add 2001:db8:19::1/64 dev vcr nodad");
        router.exec("ip link set vcr up");
        client.exec(&format!("ip addr add {CLIENT}/24 dev vcc"));
        client.exec("ip addr add 2001:db8:19::2/64 dev vcc nodad");
        client.exec("ip link set vcc up");
        client.exec("ip route add default via 198.19.0.1");
        client.exec("ip -6 route add default via 2001:db8:19::1");
        // Direct server return: the backends answer the client through the router.
        for b in &lan.backends {
            b.ns.exec("ip route add 198.19.0.0/24 via 198.18.0.254");
            b.ns.exec("ip -6 route add 2001:db8:19::/64 via 2001:db8::fe");
        }
        let router_bird = Bird::start(&router, &dir, "router", &router_conf(size));
        Fleet { lan, sync, serving: 3, router, client, router_bird, boxes: [None, None, None], size, dir }
    }

    /// Starts box `n`; with `wait`, until its backends are up.
    fn start_box(&mut self, n: u8) {
        let ns = Netns::new(&unique(&format!("l4b-box{n}")));
        let tap = unique(&format!("l4bf{n}-"));
        let dir = self.dir.join(format!("box{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("ctl.sock");
        let (backends, backends6) = self.backend_lists(self.serving);
        let sync = match self.sync {
            Some(on) => {
                let peers: Vec<String> =
                    (1..=self.size).filter(|&m| m != n).map(|m| format!("\"{}\"", box_address(m))).collect();
                format!("[sync]\nenabled = {on}\npeers = [{}]\nwarmup_timeout_s = 5\n", peers.join(", "))
            }
            None => String::new(),
        };
        let extra = "forwarding = \"l2\"\nhealth = { check = \"http\", path = \"/health\", interval_ms = 400, timeout_ms = 350, rise = 1, fall = 3 }";
        let config = format!(
            r#"
[dpdk]
lcores = "{lcores}"
devices = ["net_tap0,iface={tap}"]
file_prefix = "{prefix}"
{mem}

[workers]
idle_pause_us = 200
flow_table_capacity = 65536

[[ports]]
name = "lan"
device = "net_tap0"
ipv4 = "{addr}/24"
ipv6 = "2001:db8::{last}/64"
mac = "{mac}"
kernel = {{ name = "lan" }}

[control]
socket = "{socket}"
metrics_address = "127.0.0.1:9100"

[routing]
table = 100
graceful_shutdown_s = 1
shutdown_drain_s = 2

[bgp]
local_as = 65001
connect_retry_s = 1
directory = "{bird}"
bfd = {{ interval_ms = 100, multiplier = 3 }}
peers = [
  {{ name = "router", address = "198.18.0.254", remote_as = 65000 }},
  {{ name = "router6", address = "2001:db8::fe", remote_as = 65000 }},
]

{sync}
{services}
{services6}
"#,
            lcores = lcore_map(1 + test_workers()),
            prefix = unique(&format!("fleet{n}-")),
            mem = if hugepages_free() { "in_memory = true" } else { "hugepages = false" },
            addr = box_address(n),
            mac = box_mac(n),
            socket = socket.display(),
            bird = dir.join("bird").display(),
            services = service("web", VIP, "tcp", 80, extra, &backends),
            services6 = service("web6", VIP6, "tcp", 80, extra, &backends6),
            last = 2 * n - 1,
        );
        let l4lb = L4lb::start_in(Some(&ns), &config, &dir);
        // The TAP's kernel side joins the LAN (each box's with its own MAC).
        sh(&format!("ip -n {} link set {tap} netns {}", ns.name, self.lan.lan.name));
        self.lan.lan.exec(&format!("ip link set {tap} address 02:00:00:00:01:f{n}"));
        self.lan.lan.exec(&format!("ip link set {tap} master br0 up"));
        self.boxes[n as usize - 1] = Some(BoxRun { ns, l4lb, socket, config: dir.join("l4lb.toml") });
    }

    /// The services' backend entries (IPv4, IPv6) for the LAN's first `count`.
    fn backend_lists(&self, count: usize) -> (Vec<String>, Vec<String>) {
        let bs = &self.lan.backends[..count];
        (
            bs.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v4, b.mac)).collect(),
            bs.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v6, b.mac)).collect(),
        )
    }

    /// Every running box serves the LAN's first `count` backends: its file
    /// rewritten and reloaded.
    fn serve(&mut self, count: usize) {
        let (old4, old6) = self.backend_lists(self.serving);
        let (new4, new6) = self.backend_lists(count);
        for b in self.boxes.iter().flatten() {
            let text = std::fs::read_to_string(&b.config).unwrap();
            let text = text
                .replace(
                    &format!("backends = [{}]", old4.join(", ")),
                    &format!("backends = [{}]", new4.join(", ")),
                )
                .replace(
                    &format!("backends = [{}]", old6.join(", ")),
                    &format!("backends = [{}]", new6.join(", ")),
                );
            std::fs::write(&b.config, text).unwrap();
            let (ok, out) = ctl(&b.socket, "reload");
            assert!(ok && out.contains("backends added"), "reload: {out}");
        }
        self.serving = count;
    }

    fn box_(&self, n: u8) -> &BoxRun {
        self.boxes[n as usize - 1].as_ref().expect("box running")
    }

    /// The router's next hops for the VIP (the boxes it sends VIP traffic to).
    fn next_hops(&self) -> Vec<String> {
        self.next_hops_to(VIP)
    }

    fn next_hops_to(&self, vip: &str) -> Vec<String> {
        let family = if vip.contains(':') { "-6" } else { "-4" };
        let (_, out) = self.router.exec_try(&format!("ip {family} route show {vip}"));
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<String> =
            words.windows(2).filter(|w| w[0] == "via").map(|w| w[1].to_owned()).collect();
        hops.sort();
        hops
    }

    fn wait_next_hops(&self, want: &[&str], timeout: Duration) {
        let ok = wait_for(timeout, || self.next_hops() == want);
        assert!(
            ok,
            "the router's next hops for {VIP} are {:?}, not {want:?}\nrouter: {}\n{}",
            self.next_hops(),
            self.router_bird.ask(&self.router, "show protocols"),
            self.boxes.iter().flatten().map(|b| b.l4lb.transcript()).collect::<Vec<_>>().join("\n----\n")
        );
    }

    /// Both boxes up, announcing, the router using both.
    fn with_both_boxes() -> Fleet {
        Fleet::both(Fleet::new())
    }

    /// `f` with both boxes started, announcing, the router using both.
    fn both(f: Fleet) -> Fleet {
        let mut f = f;
        f.start_box(1);
        f.start_box(2);
        f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(60));
        assert!(
            wait_for(Duration::from_secs(30), || f.next_hops_to(VIP6) == ["2001:db8::1", "2001:db8::3"]),
            "the router's next hops for {VIP6}: {:?}\n{}\n{}",
            f.next_hops_to(VIP6),
            f.router_bird.ask(&f.router, "show route all"),
            ctl(&f.box_(1).socket, "bgp").1
        );
        f
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for b in self.boxes.iter_mut() {
            b.take();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` slow downloads (`chunks` chunks of 1000 bytes 0.25 s apart) at once
/// from the client, started before this returns (every one has its
/// headers); `finish_downloads` reads the verdict.
fn start_downloads(client: &Netns, n: usize, chunks: usize) -> std::process::Child {
    let script = format!(
        r#"
import http.client, sys, threading
want = bytes(i % 251 for i in range({chunks} * 1000))
ready = threading.Barrier({n} + 1)
results = []
lock = threading.Lock()
def one(i):
    try:
        h = http.client.HTTPConnection('{VIP}', 80, timeout=30)
        h.request('GET', '/stream?chunks={chunks}')
        r = h.getresponse()
        name = r.getheader('X-Backend') + ' ' + str(h.sock.getsockname()[1])
    except Exception as e:
        ready.abort()
        with lock: results.append(('error', repr(e)))
        return
    try:
        ready.wait(60)
    except threading.BrokenBarrierError:
        pass
    try:
        body = r.read()
        ok = body == want
        with lock: results.append(('ok' if ok else 'bad', name + ' ' + str(len(body))))
    except Exception as e:
        with lock: results.append(('broken', name + ' ' + repr(e)))
threads = [threading.Thread(target=one, args=(i,)) for i in range({n})]
for t in threads: t.start()
try:
    ready.wait(60)
except threading.BrokenBarrierError:
    print('not ready', flush=True)
print('ready', flush=True)
for t in threads: t.join()
for kind, what in results:
    print(kind, what, flush=True)
print('done', flush=True)
"#
    );
    spawn_script(client, &script, "l4b-downloads-")
}

/// The downloads' results: (complete and correct, the other lines).
fn finish_downloads(mut child: std::process::Child) -> (usize, Vec<String>) {
    let out = child.stdout.take().unwrap();
    let mut ok = 0;
    let mut other = Vec::new();
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if line == "done" {
            break;
        }
        if line.starts_with("ok ") {
            ok += 1;
        } else {
            other.push(line);
        }
    }
    let _ = child.wait();
    (ok, other)
}

/// wrk against the VIP for `secs` from the client, in the background.
fn start_wrk(client: &Netns, secs: u32) -> std::process::Child {
    client.spawn(&format!("exec wrk -t2 -c16 -d{secs}s --timeout 3s http://{VIP}/"))
}

fn wrk_output(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Times the router's next hops until they are `want`, polling every 5 ms.
fn time_until_next_hops(f: &Fleet, want: &[&str], from: Instant) -> Duration {
    assert!(
        wait_for(Duration::from_secs(30), || f.next_hops() == want),
        "the router still uses {:?}",
        f.next_hops()
    );
    from.elapsed()
}

#[test]
fn both_boxes_carry_the_vip_and_every_connection_gets_the_backend_simulate_predicts() {
    let f = Fleet::with_both_boxes();
    // Each box: its session and BFD up, the VIP announced.
    for n in 1..=2u8 {
        let b = f.box_(n);
        let bgp = ctl_json(&b.socket, "bgp");
        assert_eq!(bgp["box_state"], "announcing", "{bgp}");
        assert_eq!(bgp["vips"][0]["announced"], true, "{bgp}");
        assert_eq!(bgp["vips"][1]["announced"], true, "{bgp}");
        // One session per family, each announcing its family's VIP.
        assert!(
            wait_for(Duration::from_secs(10), || {
                let peers = ctl_json(&b.socket, "bgp")["peers"].clone();
                peers.as_array().unwrap().len() == 2
                    && peers
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|p| p["up"] == true && p["bfd"] == "Up" && p["exported_routes"] == 1)
            }),
            "box {n}: {}",
            ctl_json(&b.socket, "bgp")
        );
        let page = b.ns.exec("curl -s --max-time 5 http://127.0.0.1:9100/metrics");
        for line in [
            "l4lb_bgp_session_up{peer=\"router\",address=\"198.18.0.254\"} 1",
            "l4lb_bgp_bfd_session_up{peer=\"router\",address=\"198.18.0.254\"} 1",
            "l4lb_bgp_session_exported_routes{peer=\"router\",address=\"198.18.0.254\"} 1",
            "l4lb_bgp_daemon_running 1",
            "l4lb_box_announcing 1",
        ] {
            assert!(page.lines().any(|l| l == line), "box {n}: no `{line}` in\n{page}");
        }
        let (ok, text) = ctl(&b.socket, "bgp");
        assert!(ok && text.contains("Established") && text.contains("yes"), "{text}");
    }

    // 1000 connections from the client, each with the backend that answered.
    let script = format!(
        r#"
import socket
print('ready', flush=True)
for i in range(1000):
    s = socket.create_connection(('{VIP}', 80), timeout=5)
    port = s.getsockname()[1]
    s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    data = b''
    while True:
        d = s.recv(4096)
        if not d: break
        data += d
    s.close()
    print(port, data.split(b'\r\n\r\n', 1)[1].split()[0].decode(), flush=True)
print('done', flush=True)
"#
    );
    let mut child = spawn_script(&f.client, &script, "l4b-conns-");
    let mut seen: Vec<(u16, String)> = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if line == "done" {
            break;
        }
        let (port, name) = line.split_once(' ').unwrap();
        seen.push((port.parse().unwrap(), name.to_owned()));
    }
    let _ = child.wait();
    assert_eq!(seen.len(), 1000, "not every connection was answered");

    // Both boxes carried a share. The client closes second, so its kernel
    // may pick a source port again while the boxes still track the flow
    // that used it: such a connection is that flow again, not a new one.
    // (The workers publish their counters every few ms: wait for the last
    // connections' to arrive.)
    let flows = seen.iter().map(|(port, _)| *port).collect::<std::collections::BTreeSet<_>>().len() as u64;
    let counts = || -> Vec<u64> {
        (1..=2u8)
            .map(|n| ctl_json(&f.box_(n).socket, "stats")["counters"]["new_flows"].as_u64().unwrap())
            .collect()
    };
    wait_for(Duration::from_secs(5), || counts().iter().sum::<u64>() >= flows);
    let new_flows = counts();
    eprintln!("new flows per box: {new_flows:?} of 1000 connections on {flows} source ports");
    assert!(new_flows.iter().all(|&x| x >= 100), "the router did not spread the flows: {new_flows:?}");
    assert!(new_flows.iter().sum::<u64>() >= flows, "{new_flows:?} for {flows} source ports");

    // `l4lb simulate` on box 1's configuration, fed each connection's SYN,
    // names the backend that answered it.
    let frames: Vec<Vec<u8>> = seen.iter().map(|(port, _)| syn_frame(*port)).collect();
    let (input, output) = (f.dir.join("syns.pcap"), f.dir.join("out.pcap"));
    l4lb::pcap::write_file(&input, frames.iter().map(|v| v.as_slice())).unwrap();
    let sim = sh(&format!(
        "{} simulate --config {} --in {} --out {}",
        env!("CARGO_BIN_EXE_l4lb"),
        f.box_(1).config.display(),
        input.display(),
        output.display()
    ));
    let out = l4lb::pcap::read_file(&output).unwrap();
    assert_eq!(out.len(), 1000, "simulate forwarded {} of 1000: {sim}", out.len());
    let by_mac: HashMap<String, String> =
        f.lan.backends.iter().map(|b| (b.mac.clone(), b.name.clone())).collect();
    let mut differ = Vec::new();
    for ((port, name), rec) in seen.iter().zip(&out) {
        let mac = l4lb::net::ethernet::fmt_mac(&rec.data[..6].try_into().unwrap());
        let predicted = by_mac.get(&mac).cloned().unwrap_or(mac);
        if &predicted != name {
            differ.push(format!("{CLIENT}:{port}: simulate {predicted}, answered by {name}"));
        }
    }
    assert!(differ.is_empty(), "{} of 1000 differ: {:?}", differ.len(), &differ[..differ.len().min(10)]);

    // IPv6: the VIP over the IPv6 sessions, spread over both boxes too.
    let before: Vec<u64> = (1..=2u8)
        .map(|n| ctl_json(&f.box_(n).socket, "stats")["counters"]["new_flows"].as_u64().unwrap())
        .collect();
    let out = f.client.exec(&format!(
        "sh -c \"for i in \\$(seq 1 100); do curl -s --max-time 5 'http://[{VIP6}]/'; done\" | awk '{{print $1}}' | sort | uniq -c"
    ));
    let answered: usize = out.split_whitespace().step_by(2).filter_map(|n| n.parse::<usize>().ok()).sum();
    assert_eq!(answered, 100, "{out}");
    let six: Vec<u64> = (1..=2u8)
        .map(|n| {
            ctl_json(&f.box_(n).socket, "stats")["counters"]["new_flows"].as_u64().unwrap()
                - before[n as usize - 1]
        })
        .collect();
    eprintln!("IPv6: 100 connections, new flows per box {six:?}");
    assert!(six.iter().all(|&x| x > 0), "{six:?}");

    // A box taken out by hand stays up, unannounced, and comes back.
    let b2 = f.box_(2);
    let (ok, text) = ctl(&b2.socket, "drain-box --keep-running");
    assert!(ok && text.contains("graceful-shutdown"), "{text}");
    // GRACEFUL_SHUTDOWN alone takes it out of the router's multipath route
    // (local preference 0); the withdrawal follows.
    f.wait_next_hops(&["198.18.0.1"], Duration::from_secs(15));
    assert!(
        wait_for(Duration::from_secs(5), || ctl_json(&b2.socket, "bgp")["box_state"] == "withdrawn"),
        "{}",
        ctl_json(&b2.socket, "bgp")
    );
    assert!(!f.router_bird.ask(&f.router, &format!("show route {VIP}/32 protocol box2")).contains(VIP));
    let (ok, text) = ctl(&b2.socket, "undrain-box");
    assert!(ok && text.contains("announcing"), "{text}");
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(15));
    // Undone while the routes still carry GRACEFUL_SHUTDOWN: the mark goes.
    assert!(ctl(&b2.socket, "drain-box --keep-running").0);
    let (ok, text) = ctl(&b2.socket, "undrain-box");
    assert!(ok && text.contains("announcing"), "{text}");
    let box2 = || f.router_bird.ask(&f.router, &format!("show route {VIP}/32 all protocol box2"));
    assert!(
        wait_for(Duration::from_secs(10), || box2().contains(VIP) && !box2().contains("(65535,0)")),
        "{}",
        box2()
    );
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(15));

    // A reload gives the VIP a community and a MED: l4lb rewrites BIRD's
    // configuration, BIRD takes it, the router sees them. A lower MED on
    // box 1 alone makes the router prefer box 1 (no longer equal paths);
    // the same on box 2 makes them equal again.
    let reload = |n: u8, med: u32| {
        let b = f.box_(n);
        let text = std::fs::read_to_string(&b.config).unwrap();
        let text = match text.find("\nbgp = {") {
            Some(i) => text[..i].to_owned() + text[i..].split_once('}').unwrap().1,
            None => text,
        };
        let text = text.replacen(
            "forwarding = \"l2\"",
            &format!("forwarding = \"l2\"\nbgp = {{ communities = [\"65001:42\"], med = {med} }}"),
            1,
        );
        std::fs::write(&b.config, text).unwrap();
        let (ok, out) = ctl(&b.socket, "reload");
        assert!(ok, "reload: {out}");
    };
    reload(2, 20);
    reload(1, 10);
    let route = |n: u8| f.router_bird.ask(&f.router, &format!("show route {VIP}/32 all protocol box{n}"));
    assert!(
        wait_for(Duration::from_secs(10), || route(1).contains("(65001,42)")
            && route(1).contains("BGP.med: 10")),
        "{}",
        route(1)
    );
    f.wait_next_hops(&["198.18.0.1"], Duration::from_secs(10));
    reload(2, 10);
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(10));

    // BIRD dies on box 2: the router drops the box with its session; l4lb
    // starts BIRD again and the box is back.
    let bird = sh(&format!("pgrep -P {} -x bird", f.box_(2).l4lb.pid()));
    sh(&format!("kill -9 {}", bird.trim()));
    f.wait_next_hops(&["198.18.0.1"], Duration::from_secs(15));
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(30));
    let bgp = ctl_json(&f.box_(2).socket, "bgp");
    assert_eq!(bgp["daemon"]["restarts"], 1, "{bgp}");
    assert!(f.box_(2).l4lb.transcript().contains("bgp: BIRD exited"));
}

/// A SYN from the client to the VIP as box 1 receives it from the router.
fn syn_frame(sport: u16) -> Vec<u8> {
    use l4lb::net::checksum;
    let parse = |m: &str| l4lb::net::ethernet::parse_mac(m).unwrap();
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (CLIENT.parse().unwrap(), VIP.parse().unwrap());
    let mut f = vec![0u8; 14 + 20 + 20];
    l4lb::net::ethernet::write_header(&mut f, parse(&box_mac(1)), parse(ROUTER_MAC), 0x0800);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 63;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let sum = checksum::add(checksum::pseudo_v4(src, dst, 6, 20), tcp);
    let c = !checksum::fold(sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn a_box_that_dies_breaks_no_connection() {
    let mut f = Fleet::with_both_boxes();
    let downloads = start_downloads(&f.client, 200, 40);
    let wrk = start_wrk(&f.client, 8);
    f.wait_wrk_running();
    let active: Vec<u64> =
        (1..=2u8).map(|n| ctl_json(&f.box_(n).socket, "stats")["flows"].as_u64().unwrap_or(0)).collect();
    // Box 1 dies: no drain, no withdrawal; BIRD dies with it.
    let t0 = Instant::now();
    let transcript = f.boxes[0].take().unwrap().l4lb.kill();
    let failover = time_until_next_hops(&f, &["198.18.0.3"], t0);
    let (ok, other) = finish_downloads(downloads);
    let wrk = wrk_output(wrk);
    eprintln!(
        "box 1 killed with flows per box {active:?}: the router stopped using it after {:.0} ms; \
         downloads complete {ok} of 200; wrk: {}",
        failover.as_secs_f64() * 1000.0,
        wrk.lines()
            .filter(|l| l.contains("Requests/sec") || l.contains("errors"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(active.iter().all(|&a| a > 0), "both boxes should carry downloads: {active:?}");
    assert_eq!(ok, 200, "broken downloads: {other:?}\n{transcript}");
    assert!(wrk.contains("Requests/sec"), "{wrk}");
    assert!(!wrk.contains("Non-2xx"), "{wrk}");
}

#[test]
fn a_draining_box_leaves_the_routes_first_and_breaks_nothing() {
    let mut f = Fleet::with_both_boxes();
    let downloads = start_downloads(&f.client, 200, 40);
    let wrk = start_wrk(&f.client, 8);
    f.wait_wrk_running();
    let t0 = Instant::now();
    f.box_(1).l4lb.signal_stop();
    // The router sees GRACEFUL_SHUTDOWN on box 1's route, then prefers box 2.
    let marked = wait_for(Duration::from_secs(5), || {
        f.router_bird.ask(&f.router, &format!("show route {VIP}/32 all protocol box1")).contains("(65535,0)")
    });
    let moved = time_until_next_hops(&f, &["198.18.0.3"], t0);
    let b1 = f.boxes[0].as_mut().unwrap();
    assert!(b1.l4lb.exited().is_none(), "box 1 exited before the router moved traffic away");
    assert!(marked, "the router never saw GRACEFUL_SHUTDOWN on box 1's route");
    assert!(wait_for(Duration::from_secs(15), || b1.l4lb.exited().is_some()), "box 1 did not stop");
    let exited = t0.elapsed();
    let b1 = f.boxes[0].take().unwrap();
    let (status, transcript) = b1.l4lb.stop();
    assert!(status.success(), "{transcript}");
    for line in ["marked GRACEFUL_SHUTDOWN", "routes withdrawn", "bgp: BIRD stopped"] {
        assert!(transcript.contains(line), "no `{line}` in\n{transcript}");
    }
    let (ok, other) = finish_downloads(downloads);
    let wrk = wrk_output(wrk);
    eprintln!(
        "box 1 drained: the router moved to box 2 after {:.0} ms, box 1 exited after {:.1} s; \
         downloads complete {ok} of 200; wrk: {}",
        moved.as_secs_f64() * 1000.0,
        exited.as_secs_f64(),
        wrk.lines()
            .filter(|l| l.contains("Requests/sec") || l.contains("errors"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert_eq!(ok, 200, "broken downloads: {other:?}");
    assert!(
        wrk.contains("Requests/sec") && !wrk.contains("Socket errors") && !wrk.contains("Non-2xx"),
        "{wrk}"
    );
}

#[test]
fn a_vip_without_backends_is_withdrawn_and_a_box_that_returns_announces_after_its_checks() {
    let mut f = Fleet::with_both_boxes();
    // Every backend fails its check (every 400 ms, down after 3 failures).
    let t0 = Instant::now();
    for b in &f.lan.backends {
        b.set_health(500);
    }
    let gone = time_until_next_hops(&f, &[], t0);
    eprintln!(
        "every backend failing: withdrawn from the router after {:.0} ms (interval × fall = 1200 ms)",
        gone.as_secs_f64() * 1000.0
    );
    let bgp = ctl_json(&f.box_(1).socket, "bgp");
    assert_eq!(bgp["vips"][0]["announced"], false, "{bgp}");
    assert!(bgp["vips"][0]["reason"].as_str().unwrap().contains("0 of 3 backends"), "{bgp}");
    f.lan.backends[0].set_health(200);
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(15));
    for b in &f.lan.backends[1..] {
        b.set_health(200);
    }
    assert!(
        wait_for(Duration::from_secs(10), || ctl_json(&f.box_(1).socket, "backends")
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["health"] == "up")),
        "the backends did not come back"
    );
    // Draining every backend of box 1, then setting every weight to 0: the
    // box withdraws the VIP each time (no backend takes new flows), and
    // announces it again when one does.
    let s1 = &f.box_(1).socket;
    for (take, give) in [("drain", "undrain"), ("set-weight", "set-weight")] {
        for b in &f.lan.backends {
            let args =
                if take == "drain" { format!("drain {}", b.v4) } else { format!("set-weight {} 0", b.v4) };
            let (ok, out) = ctl(s1, &args);
            assert!(ok, "{args}: {out}");
        }
        f.wait_next_hops(&["198.18.0.3"], Duration::from_secs(10));
        let args = if give == "undrain" {
            format!("undrain {}", f.lan.backends[2].v4)
        } else {
            format!("set-weight {} 1", f.lan.backends[2].v4)
        };
        let (ok, out) = ctl(s1, &args);
        assert!(ok, "{args}: {out}");
        f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(10));
        for b in &f.lan.backends[..2] {
            let args = if give == "undrain" {
                format!("undrain {}", b.v4)
            } else {
                format!("set-weight {} 1", b.v4)
            };
            assert!(ctl(s1, &args).0);
        }
    }

    // Box 2 goes; downloads run through box 1 alone; box 2 comes back and
    // the router moves about half of them to it: they keep their backend.
    let b2 = f.boxes[1].take().unwrap();
    let (status, _) = b2.l4lb.stop();
    assert!(status.success());
    f.wait_next_hops(&["198.18.0.1"], Duration::from_secs(15));
    let downloads = start_downloads(&f.client, 100, 100);
    f.start_box(2);
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3"], Duration::from_secs(60));
    let t = f.box_(2).l4lb.transcript();
    let announced = t.find("routing: announcing 198.18.100.1").expect("box 2 announced");
    let first_up = t.find("is up").expect("a backend came up on box 2");
    assert!(first_up < announced, "box 2 announced before its checks:\n{t}");
    let (ok, other) = finish_downloads(downloads);
    let moved = ctl_json(&f.box_(2).socket, "stats")["counters"]["new_flows"].as_u64().unwrap_or(0);
    eprintln!("box 2 back: {moved} flows moved to it; downloads complete {ok} of 100");
    assert_eq!(ok, 100, "broken downloads: {other:?}");
    assert!(moved > 0, "the router moved no download to the returning box");
}

/// 200 slow downloads through both boxes; a fourth backend joins (a reload
/// on both), so the downloads Maglev now maps to it are no longer the
/// tables' choice; box 1 dies. Returns the downloads that completed, the
/// others' lines, and what flow sync saw.
fn a_backend_joins_then_a_box_dies(sync: bool) -> (usize, Vec<String>, String) {
    let mut f = Fleet::both(Fleet::with(4, Some(sync), 2));
    let downloads = start_downloads(&f.client, 200, 80);
    f.serve(4);
    let up = |n: u8| {
        ctl_json(&f.box_(n).socket, "backends")
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["backend"] == "198.18.0.14" && b["health"] == "up" && b["in_state"] == true)
    };
    assert!(wait_for(Duration::from_secs(10), || up(1) && up(2)), "the fourth backend did not come up");
    let mut seen = String::new();
    if sync {
        // Each box found its downloads the new tables would send elsewhere,
        // and its peer installed them.
        let sync_of = |n: u8| ctl_json(&f.box_(n).socket, "sync");
        let exchanged = || {
            let (a, b) = (sync_of(1), sync_of(2));
            let shared = |v: &serde_json::Value| v["shared_flows"].as_u64().unwrap_or(0);
            let got = |v: &serde_json::Value| v["received_flows"].as_u64().unwrap_or(0);
            shared(&a) > 0 && got(&b) >= shared(&a) && got(&a) >= shared(&b)
        };
        assert!(
            wait_for(Duration::from_secs(10), exchanged),
            "box 1: {}\nbox 2: {}\n{}\n{}",
            sync_of(1),
            sync_of(2),
            f.box_(1).l4lb.lines_with("sync").join("\n"),
            f.box_(2).l4lb.lines_with("sync").join("\n")
        );
        let (a, b) = (sync_of(1), sync_of(2));
        seen = format!(
            "box 1 shared {} flows, box 2 shared {}; box 2 holds {} of box 1's, sent {} bytes for {} entries",
            a["shared_flows"],
            b["shared_flows"],
            b["received_flows"],
            a["peers"][0]["sent_bytes"],
            a["peers"][0]["sent"]
        );
        let (ok, text) = ctl(&f.box_(1).socket, "sync");
        assert!(ok && text.contains("flow sync on port 4788: warm") && text.contains("198.18.0.3"), "{text}");
        // Box 1's entries came in live batches, whose lag box 2 measured.
        assert!(b["lag_batches"].as_u64().unwrap_or(0) > 0, "{b}");
        seen.push_str(&format!(
            "; lag at box 2: {} batches, p50 ≤ {} ms, p99 ≤ {} ms, max {} ms",
            b["lag_batches"], b["lag_ms_p50"], b["lag_ms_p99"], b["lag_ms_max"]
        ));
        let page = f.box_(1).ns.exec("curl -s --max-time 5 http://127.0.0.1:9100/metrics");
        assert!(page.contains("l4lb_sync_sent_entries_total{peer=\"198.18.0.3\"}"), "{page}");
        assert!(page.contains("l4lb_sync_lag_seconds_bucket{le=\"0.1\"}"), "{page}");
    }
    let t0 = Instant::now();
    let transcript = f.boxes[0].take().unwrap().l4lb.kill();
    let failover = time_until_next_hops(&f, &["198.18.0.3"], t0);
    let (ok, other) = finish_downloads(downloads);
    let synced = ctl_json(&f.box_(2).socket, "stats")["counters"]["synced_flows"].as_u64().unwrap_or(0);
    seen.push_str(&format!(
        "; failover {:.0} ms; box 2 kept {synced} moved flows on a peer's entry",
        failover.as_secs_f64() * 1000.0
    ));
    if ok < 200 && sync {
        eprintln!("{}", transcript.lines().filter(|l| l.contains(" is ")).collect::<Vec<_>>().join("\n"));
        for l in other.iter().take(5) {
            let port = l.split_whitespace().nth(2).unwrap_or("0");
            eprintln!(
                "{l}: box 2 says {}",
                ctl(&f.box_(2).socket, &format!("lookup tcp {CLIENT}:{port} {VIP}:80")).1
            );
        }
        let _ = transcript;
    }
    (ok, other, seen)
}

#[test]
fn with_flow_sync_no_connection_breaks_when_a_backend_joins_and_then_a_box_dies() {
    let (ok, other, seen) = a_backend_joins_then_a_box_dies(true);
    eprintln!("flow sync on: {ok} of 200 downloads complete; {seen}");
    assert_eq!(ok, 200, "broken: {other:?}");
}

#[test]
fn without_flow_sync_the_same_change_breaks_connections() {
    let (ok, other, seen) = a_backend_joins_then_a_box_dies(false);
    eprintln!("flow sync off: {ok} of 200 downloads complete, {} broken; {seen}", 200 - ok);
    assert!(ok < 200, "no download broke without flow sync: the test shows nothing");
    assert!(other.iter().all(|l| l.starts_with("broken") || l.starts_with("bad")), "{other:?}");
}

impl Fleet {
    /// Waits until wrk's 16 connections are through the boxes beside the
    /// 200 downloads (new flows over both boxes).
    fn wait_wrk_running(&self) {
        let flows = || -> u64 {
            self.boxes
                .iter()
                .flatten()
                .map(|b| ctl_json(&b.socket, "stats")["counters"]["new_flows"].as_u64().unwrap_or(0))
                .sum()
        };
        assert!(wait_for(Duration::from_secs(10), || flows() >= 216), "wrk did not start: {} flows", flows());
    }

    /// `ctl sync` of box `n`.
    fn sync_of(&self, n: u8) -> serde_json::Value {
        ctl_json(&self.box_(n).socket, "sync")
    }

    /// Whether each box in `boxes` holds at least the flows every other one shares.
    fn sync_caught_up(&self, boxes: &[u8]) -> bool {
        let all: Vec<serde_json::Value> = boxes.iter().map(|&n| self.sync_of(n)).collect();
        let shared = |v: &serde_json::Value| v["shared_flows"].as_u64().unwrap_or(0);
        let got = |v: &serde_json::Value| v["received_flows"].as_u64().unwrap_or(0);
        (0..all.len()).all(|i| {
            let others: u64 = (0..all.len()).filter(|&j| j != i).map(|j| shared(&all[j])).sum();
            got(&all[i]) >= others
        })
    }

    /// Waits until the LAN's fourth backend is up and in the state of every box in `boxes`.
    fn wait_fourth_up(&self, boxes: &[u8]) {
        let up = |n: u8| {
            ctl_json(&self.box_(n).socket, "backends")
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["backend"] == "198.18.0.14" && b["health"] == "up" && b["in_state"] == true)
        };
        assert!(
            wait_for(Duration::from_secs(10), || boxes.iter().all(|&n| up(n))),
            "the fourth backend did not come up"
        );
    }
}

#[test]
fn a_box_that_joins_after_a_backend_change_keeps_the_flows_ecmp_moves_onto_it() {
    let mut f = Fleet::both(Fleet::with(4, Some(true), 3));
    let downloads = start_downloads(&f.client, 200, 100);
    f.serve(4);
    f.wait_fourth_up(&[1, 2]);
    assert!(
        wait_for(Duration::from_secs(10), || f.sync_of(1)["shared_flows"].as_u64().unwrap_or(0) > 0
            && f.sync_caught_up(&[1, 2])),
        "box 1: {}\nbox 2: {}",
        f.sync_of(1),
        f.sync_of(2)
    );
    // Box 3 starts with the new backend set: it takes the others' shared
    // flows before it announces, then the router spreads over three boxes.
    f.start_box(3);
    f.wait_next_hops(&["198.18.0.1", "198.18.0.3", "198.18.0.5"], Duration::from_secs(60));
    let three = f.sync_of(3);
    assert_eq!(three["warm"], true, "{three}");
    // Every flow each peer shares reached box 3. (Per peer: two boxes may
    // share one flow, as both track it once a flow moved, so the table may
    // hold fewer entries than the peers' counts added up.)
    let mut shared = 0;
    for n in [1u8, 2] {
        let theirs = f.sync_of(n)["shared_flows"].as_u64().unwrap_or(0);
        let peer =
            three["peers"].as_array().unwrap().iter().find(|p| p["address"] == box_address(n)).unwrap();
        assert!(
            peer["received"].as_u64().unwrap_or(0) >= theirs,
            "box 3 from box {n} ({theirs} shared): {three}"
        );
        shared += theirs;
    }
    assert!(three["received_flows"].as_u64().unwrap_or(0) > 0, "box 3: {three}");
    let t = f.box_(3).l4lb.transcript();
    let warm = t.find("sync: warm").expect("box 3 warmed up");
    let announced = t.find("routing: announcing 198.18.100.1").expect("box 3 announced");
    assert!(warm < announced, "box 3 announced before its peers' flows arrived:\n{t}");
    let (ok, other) = finish_downloads(downloads);
    let stats = ctl_json(&f.box_(3).socket, "stats");
    let (moved, kept) = (
        stats["counters"]["new_flows"].as_u64().unwrap_or(0),
        stats["counters"]["synced_flows"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "box 3 joined: it took {} shared flows (the peers shared {shared}); the router moved {moved} downloads to it, {kept} kept their backend on a peer's entry; {ok} of 200 complete",
        three["received_flows"]
    );
    assert_eq!(
        ok,
        200,
        "broken: {other:?}\n{}",
        f.boxes.iter().flatten().map(|b| b.l4lb.transcript()).collect::<Vec<_>>().join("\n----\n")
    );
    assert!(moved > 0, "the router moved nothing to box 3");
}

#[test]
fn a_cut_sync_link_catches_up_when_it_returns() {
    let mut f = Fleet::both(Fleet::with(4, Some(true), 2));
    let downloads = start_downloads(&f.client, 200, 100);
    // Box 1's sync traffic is dropped both ways (BGP, BFD and VIP traffic pass).
    // One `nft -f` run inside box 1's namespace (a `&&` chain would run
    // its later commands outside it).
    let rules = f.dir.join("cut.nft");
    std::fs::write(
        &rules,
        "table ip cut {\n  chain out { type filter hook output priority 0; tcp dport 4788 drop; tcp sport 4788 drop; }\n  \
         chain in { type filter hook input priority 0; tcp dport 4788 drop; tcp sport 4788 drop; }\n}\n",
    )
    .unwrap();
    f.box_(1).ns.exec(&format!("nft -f {}", rules.display()));
    let before = f.sync_of(2)["received_flows"].as_u64().unwrap_or(0);
    f.serve(4);
    f.wait_fourth_up(&[1, 2]);
    // New connections keep arriving during the cut.
    let load = f.client.spawn(&format!(
        "exec sh -c 'for i in $(seq 1 300); do curl -s --max-time 2 -o /dev/null http://{VIP}/; done'"
    ));
    assert!(
        wait_for(Duration::from_secs(10), || f.sync_of(1)["shared_flows"].as_u64().unwrap_or(0) > 0),
        "box 1 found nothing to share: {}",
        f.sync_of(1)
    );
    // The cut lasts 10 s: nothing of box 1's reaches box 2 meanwhile.
    std::thread::sleep(Duration::from_secs(10));
    let during = f.sync_of(2)["received_flows"].as_u64().unwrap_or(0);
    assert_eq!(during, before, "entries crossed a cut link");
    let cut = f.sync_of(1);
    f.box_(1).ns.exec("nft delete table ip cut");
    assert!(
        wait_for(Duration::from_secs(30), || f.sync_caught_up(&[1, 2])),
        "no catch-up: box 1 {}\nbox 2 {}",
        f.sync_of(1),
        f.sync_of(2)
    );
    let after = f.sync_of(1);
    let _ = load.wait_with_output();
    // Both boxes lived through it; the caught-up entries carry box 1's flows.
    assert!(f.boxes.iter_mut().flatten().all(|b| b.l4lb.exited().is_none()), "a box exited");
    let t0 = Instant::now();
    let _ = f.boxes[0].take().unwrap().l4lb.kill();
    time_until_next_hops(&f, &["198.18.0.3"], t0);
    let (ok, other) = finish_downloads(downloads);
    eprintln!(
        "sync cut 10 s: box 1 shared {}, peer row during the cut {}, after {}; {ok} of 200 downloads complete after box 1 died",
        after["shared_flows"], cut["peers"][0], after["peers"][0]
    );
    assert_eq!(ok, 200, "broken: {other:?}");
}
