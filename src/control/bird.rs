//! `[bgp]`: l4lb runs BIRD 2 as its BGP speaker. It writes BIRD's
//! configuration from the l4lb file (one file for the operator to keep), runs
//! BIRD as its child in the foreground (killed with l4lb, restarted if it
//! dies), and reads the sessions' state over BIRD's control socket.
//!
//! What BIRD announces is what l4lb keeps in `[routing] table` (see
//! `routing.rs`): BIRD's `kernel` protocols learn that table and the BGP
//! sessions export exactly those routes, with the communities and MED the
//! configuration gives each VIP, plus GRACEFUL_SHUTDOWN (65535:0, RFC 8326)
//! on a route whose kernel protocol number is
//! [`GRACEFUL_SHUTDOWN_PROTO`](super::config::GRACEFUL_SHUTDOWN_PROTO).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api::PeerRow;
use super::config::{
    bgp_router_id, peer_source, BgpSection, Community, Config, Validated, GRACEFUL_SHUTDOWN_PROTO,
};

/// BIRD's configuration for `cfg` (which has a `[bgp]` section); `source`
/// names the l4lb file it came from.
pub fn config_text(cfg: &Config, source: &str) -> String {
    let Some(b) = &cfg.bgp else { return String::new() };
    let mut o = String::new();
    let _ = writeln!(o, "# BIRD 2 configuration written by l4lb from {source} at each start and reload.");
    let _ = writeln!(o, "# Edit the [bgp] section of that file instead: changes here are lost.");
    o.push_str("log stderr { info, remote, warning, error, auth, fatal, bug };\n");
    let _ = writeln!(o, "router id {};", bgp_router_id(cfg).expect("validated"));
    o.push_str("protocol device { scan time 10; }\n\n");
    let table = cfg.routing.table;
    for (name, family) in [("l4lb_vips4", "ipv4"), ("l4lb_vips6", "ipv6")] {
        let _ = writeln!(
            o,
            "# The VIPs l4lb announces: the routes it keeps in kernel table {table}.\n\
             protocol kernel {name} {{\n  kernel table {table};\n  learn;\n  scan time 10;\n  \
             {family} {{ import all; export none; }};\n}}\n"
        );
    }
    if let Some(f) = &b.bfd {
        let _ = writeln!(
            o,
            "protocol bfd l4lb_bfd {{\n  interface \"*\" {{ min rx interval {i} ms; min tx interval {i} ms; \
             idle tx interval 1000 ms; multiplier {m}; }};\n}}\n",
            i = f.interval_ms,
            m = f.multiplier
        );
    }
    for (family, proto) in [("4", "l4lb_vips4"), ("6", "l4lb_vips6")] {
        let _ = writeln!(o, "filter l4lb_export{family} {{\n  if proto != \"{proto}\" then reject;");
        let _ = writeln!(o, "  if net.len != {} then reject;", if family == "4" { 32 } else { 128 });
        for s in &cfg.services {
            if s.vip.is_ipv4() != (family == "4") || (s.bgp.communities.is_empty() && s.bgp.med.is_none()) {
                continue;
            }
            let len = if s.vip.is_ipv4() { 32 } else { 128 };
            let _ = write!(o, "  if net = {}/{len} then {{", s.vip);
            for c in &s.bgp.communities {
                o.push_str(&community_add(c));
            }
            if let Some(m) = s.bgp.med {
                let _ = write!(o, " bgp_med = {m};");
            }
            let _ = writeln!(o, " }}  # service {}", s.name);
        }
        if !b.communities.is_empty() {
            o.push(' ');
            for c in &b.communities {
                o.push_str(&community_add(c));
            }
            o.push('\n');
        }
        let _ = writeln!(
            o,
            "  if krt_source = {GRACEFUL_SHUTDOWN_PROTO} then bgp_community.add((65535, 0));  # RFC 8326\n  accept;\n}}\n"
        );
    }
    for (i, p) in b.peers.iter().enumerate() {
        let (local, _) = peer_source(cfg, p).expect("validated");
        let _ = writeln!(o, "protocol bgp {} {{", protocol_name(&p.name(i)));
        let _ = writeln!(o, "  local {local} as {};", b.local_as);
        let _ = writeln!(o, "  neighbor {} port {} as {};", p.address, p.port, p.remote_as);
        if b.hold_time_s == 0 {
            o.push_str("  hold time 0;\n");
        } else {
            let _ =
                writeln!(o, "  hold time {}; keepalive time {};", b.hold_time_s, (b.hold_time_s / 3).max(1));
        }
        let _ = writeln!(o, "  connect retry time {};", b.connect_retry_s);
        match p.multihop {
            Some(ttl) => {
                let _ = writeln!(o, "  multihop {ttl};");
            }
            None => o.push_str("  direct;\n"),
        }
        if let Some(w) = &p.password {
            let _ = writeln!(o, "  password \"{w}\";");
        }
        if p.passive {
            o.push_str("  passive on;\n");
        }
        if b.bfd.is_some() {
            o.push_str("  bfd on;\n");
        }
        let (family, f) = if p.address.is_ipv4() { ("ipv4", "4") } else { ("ipv6", "6") };
        let _ =
            writeln!(o, "  {family} {{ import none; export filter l4lb_export{f}; next hop self; }};\n}}\n");
    }
    o
}

/// A peer's protocol name in BIRD (a prefix keeps names like `router`,
/// BIRD keywords, apart from its grammar).
pub fn protocol_name(peer: &str) -> String {
    format!("bgp_{peer}")
}

fn community_add(c: &Community) -> String {
    match c {
        Community::Standard(a, v) => format!(" bgp_community.add(({a}, {v}));"),
        Community::Large(a, v, w) => format!(" bgp_large_community.add(({a}, {v}, {w}));"),
    }
}

/// Where BIRD's files go.
pub fn directory(cfg: &Validated) -> PathBuf {
    let b = cfg.config.bgp.as_ref();
    b.and_then(|b| b.directory.clone())
        .unwrap_or_else(|| PathBuf::from(format!("/run/l4lb/{}-bird", cfg.config.dpdk.file_prefix)))
}

/// Whether the BIRD program can be run.
pub fn available(bird: &str) -> bool {
    Command::new(bird).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Asks BIRD's parser whether `text` is a configuration it takes (`bird -p`).
pub fn check(bird: &str, text: &str, dir: &Path) -> Result<(), String> {
    let path = dir.join(format!("l4lb-bird-{}.conf.check", std::process::id()));
    write_private(&path, text)?;
    let out = Command::new(bird)
        .args(["-p", "-c"])
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run `{bird}` (bgp.bird; Debian package bird2): {e}"))?;
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "BIRD refuses the configuration l4lb wrote: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes a file only its owner reads: BIRD's configuration may hold the
/// peers' passwords.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// One exchange with BIRD's control socket: the reply's lines with their
/// codes and separators stripped. A reply whose final code is 8xxx or 9xxx
/// is an error.
pub fn query(socket: &Path, command: &str) -> Result<Vec<String>, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    // The greeting: "0001 BIRD 2.0.12 ready."
    r.read_line(&mut line).map_err(|e| format!("BIRD's greeting: {e}"))?;
    if !line.starts_with("0001 ") {
        return Err(format!("BIRD's greeting: `{}`", line.trim_end()));
    }
    (&s).write_all(format!("{command}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(|e| format!("BIRD's answer to `{command}`: {e}"))?;
        if n == 0 {
            return Err(format!("BIRD closed the socket during `{command}`"));
        }
        let l = line.trim_end_matches('\n');
        let b = l.as_bytes();
        let coded = b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b' ' || b[4] == b'-');
        if !coded {
            out.push(l.strip_prefix(' ').unwrap_or(l).to_owned());
            continue;
        }
        out.push(l[5..].to_owned());
        if b[4] == b' ' {
            if b[0] == b'8' || b[0] == b'9' {
                return Err(format!("BIRD: `{command}`: {}", &l[5..]));
            }
            return Ok(out);
        }
    }
}

/// The peers' rows from `show protocols all` (and `show bfd sessions`).
pub fn parse_peers(protocols: &[String], bfd: &[String], cfg: &BgpSection) -> Vec<PeerRow> {
    let mut rows = Vec::new();
    for (i, p) in cfg.peers.iter().enumerate() {
        let name = p.name(i);
        let mut row = PeerRow {
            name: name.clone(),
            address: p.address,
            remote_as: p.remote_as,
            state: "unknown".into(),
            up: false,
            since: None,
            exported_routes: None,
            bfd: None,
            last_error: None,
        };
        // The protocol's block: its summary line, then indented details up
        // to the next protocol's summary line.
        let mut inside = false;
        for l in protocols {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 5 && cols[1] == "BGP" {
                inside = cols[0] == protocol_name(&name);
                if inside {
                    row.since = Some(cols[4].to_owned());
                }
                continue;
            }
            if !inside {
                continue;
            }
            let t = l.trim();
            if let Some(v) = t.strip_prefix("BGP state:") {
                row.state = v.trim().to_owned();
                row.up = row.state == "Established";
            } else if let Some(v) = t.strip_prefix("Last error:") {
                row.last_error = Some(v.trim().to_owned());
            } else if let Some(v) = t.strip_prefix("Routes:") {
                // "0 imported, 2 exported, 0 preferred"
                row.exported_routes = v
                    .split(',')
                    .find(|x| x.trim().ends_with("exported"))
                    .and_then(|x| x.split_whitespace().next()?.parse().ok());
            }
        }
        row.bfd = bfd.iter().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 3 && cols[0].parse::<IpAddr>().ok() == Some(p.address)).then(|| cols[2].to_owned())
        });
        rows.push(row);
    }
    rows
}

/// What `ctl bgp` and the metrics show of BIRD.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub running: bool,
    pub peers: Vec<PeerRow>,
    /// The last failure to ask BIRD, if the last attempt failed.
    pub error: Option<String>,
}

/// BIRD, run by l4lb.
pub struct Bird {
    program: String,
    conf: PathBuf,
    socket: PathBuf,
    child: Arc<Mutex<Option<Child>>>,
    seen: Arc<Mutex<Seen>>,
    restarts: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    monitor: Option<std::thread::JoinHandle<()>>,
}

impl Bird {
    /// Writes the configuration, has BIRD check it, starts BIRD and a thread
    /// that asks it for the sessions' state every second (and starts it
    /// again, with a log line, if it exits).
    pub fn start(cfg: &Validated, source: &str) -> Result<Bird, String> {
        let b = cfg.config.bgp.as_ref().ok_or("no [bgp] section")?;
        let dir = directory(cfg);
        std::fs::create_dir_all(&dir).map_err(|e| format!("bgp.directory {}: {e}", dir.display()))?;
        let text = config_text(&cfg.config, source);
        check(&b.bird, &text, &dir)?;
        let conf = dir.join("bird.conf");
        write_private(&conf, &text)?;
        let socket = dir.join("bird.ctl");
        let _ = std::fs::remove_file(&socket);
        let child = spawn(&b.bird, &conf, &socket)?;
        let mut bird = Bird {
            program: b.bird.clone(),
            conf,
            socket,
            child: Arc::new(Mutex::new(Some(child))),
            seen: Arc::default(),
            restarts: Arc::default(),
            stopping: Arc::default(),
            monitor: None,
        };
        let (child, seen, restarts, stopping) =
            (bird.child.clone(), bird.seen.clone(), bird.restarts.clone(), bird.stopping.clone());
        let (program, conf, socket, bgp) =
            (bird.program.clone(), bird.conf.clone(), bird.socket.clone(), b.clone());
        let monitor = std::thread::Builder::new()
            .name("l4lb-bird".into())
            .spawn(move || {
                let mut backoff = Duration::from_secs(1);
                while !stopping.load(Ordering::Relaxed) {
                    let exited = {
                        let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                        match c.as_mut().map(|c| c.try_wait()) {
                            Some(Ok(Some(status))) => {
                                *c = None;
                                Some(status.to_string())
                            }
                            _ => None,
                        }
                    };
                    if let Some(status) = exited {
                        if stopping.load(Ordering::Relaxed) {
                            break;
                        }
                        log::error!("bgp: BIRD exited ({status}); starting it again in {backoff:?}");
                        seen.lock().unwrap_or_else(|e| e.into_inner()).running = false;
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        match spawn(&program, &conf, &socket) {
                            Ok(c) => {
                                restarts.fetch_add(1, Ordering::Relaxed);
                                *child.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                            }
                            Err(e) => log::error!("bgp: {e}"),
                        }
                        continue;
                    }
                    let now = poll(&socket, &bgp);
                    if now.running {
                        backoff = Duration::from_secs(1);
                    }
                    log_changes(&seen.lock().unwrap_or_else(|e| e.into_inner()), &now);
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .map_err(|e| format!("bgp: monitor thread: {e}"))?;
        bird.monitor = Some(monitor);
        log::info!("bgp: BIRD runs with {} (control socket {})", bird.conf.display(), bird.socket.display());
        Ok(bird)
    }

    /// What was seen of BIRD at the last poll.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How often BIRD was started again after it exited.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// BIRD's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Writes the configuration for `cfg` (a reload) and has BIRD take it.
    pub fn reconfigure(&self, cfg: &Validated, source: &str) -> Result<(), String> {
        let b = cfg.config.bgp.as_ref().ok_or("no [bgp] section")?;
        let text = config_text(&cfg.config, source);
        if std::fs::read_to_string(&self.conf).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let dir = self.conf.parent().unwrap_or(Path::new("."));
        check(&b.bird, &text, dir)?;
        write_private(&self.conf, &text)?;
        query(&self.socket, "configure").map(|_| ())
    }

    /// Stops BIRD: `down` over the socket (BGP sessions end with a Cease
    /// notification), then SIGKILL if it is still there after 3 s.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // `down` before the monitor thread ends: a BIRD that thread started
        // again is killed with it (its parent-death signal).
        let _ = query(&self.socket, "down");
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = c.as_mut() {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        log::info!("bgp: BIRD stopped");
    }
}

/// Starts `bird -f` (foreground: its PID is the child's) under `setpriv
/// --pdeathsig KILL`, so BIRD dies with l4lb even when l4lb is killed: the
/// routers must then notice the box is gone (hold time, BFD) rather than
/// hear from a BIRD that outlived it. BIRD's log lines go to l4lb's log.
fn spawn(program: &str, conf: &Path, socket: &Path) -> Result<Child, String> {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", program, "-f", "-c"])
        .arg(conf)
        .arg("-s")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `setpriv ... {program}` (bgp.bird; Debian package bird2): {e}"))?;
    if let Some(err) = child.stderr.take() {
        let _ = std::thread::Builder::new().name("l4lb-bird-log".into()).spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                // BIRD's lines carry a date and a <LEVEL>.
                let text = line.split_once("> ").map_or(line.as_str(), |(_, t)| t);
                if line.contains("<ERR>") || line.contains("<FATAL>") || line.contains("<BUG>") {
                    log::error!("bird: {text}");
                } else if line.contains("<WARN>") || line.contains("<AUTH>") {
                    log::warn!("bird: {text}");
                } else {
                    log::info!("bird: {text}");
                }
            }
        });
    }
    Ok(child)
}

fn poll(socket: &Path, bgp: &BgpSection) -> Seen {
    let protocols = match query(socket, "show protocols all") {
        Ok(p) => p,
        Err(e) => return Seen { running: false, peers: parse_peers(&[], &[], bgp), error: Some(e) },
    };
    let bfd =
        if bgp.bfd.is_some() { query(socket, "show bfd sessions").unwrap_or_default() } else { Vec::new() };
    Seen { running: true, peers: parse_peers(&protocols, &bfd, bgp), error: None }
}

fn log_changes(before: &Seen, now: &Seen) {
    for p in &now.peers {
        let was = before.peers.iter().find(|b| b.name == p.name);
        if was.map(|w| w.up) != Some(p.up) && (was.is_some() || p.up) {
            if p.up {
                log::info!("bgp: session {} ({}) established", p.name, p.address);
            } else {
                log::warn!(
                    "bgp: session {} ({}) is {}{}",
                    p.name,
                    p.address,
                    p.state,
                    p.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"

[routing]
table = 100

[bgp]
local_as = 65001
communities = ["65001:7", "65001:1:2"]
bfd = { interval_ms = 50, multiplier = 4 }
peers = [
  { name = "router", address = "198.18.0.254", remote_as = 65000, password = "s3cret" },
  { address = "2001:db8::fe", remote_as = 65000 },
  { name = "far", address = "198.19.9.9", remote_as = 65002, multihop = 4, passive = true },
]

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
bgp = { communities = ["65000:100"], med = 20 }
backends = [{ address = "198.18.0.11", mac = "02:00:00:00:0b:11" }]
"#;

    #[test]
    fn the_bird_configuration_follows_the_bgp_section() {
        let cfg = Config::parse(CONFIG, "t.toml").unwrap().validate("t.toml").unwrap();
        let t = config_text(&cfg.config, "t.toml");
        for want in [
            "router id 198.18.0.1;",
            "kernel table 100;",
            "min rx interval 50 ms; min tx interval 50 ms; idle tx interval 1000 ms; multiplier 4;",
            "if net = 198.18.100.1/32 then { bgp_community.add((65000, 100)); bgp_med = 20; }",
            " bgp_community.add((65001, 7)); bgp_large_community.add((65001, 1, 2));",
            "if krt_source = 200 then bgp_community.add((65535, 0));",
            "protocol bgp bgp_router {\n  local 198.18.0.1 as 65001;\n  neighbor 198.18.0.254 port 179 as 65000;",
            "hold time 9; keepalive time 3;",
            "password \"s3cret\";",
            "protocol bgp bgp_peer1 {\n  local 2001:db8::1 as 65001;",
            "ipv6 { import none; export filter l4lb_export6; next hop self; };",
            "protocol bgp bgp_far {\n  local 198.18.0.1 as 65001;\n  neighbor 198.19.9.9 port 179 as 65002;",
            "multihop 4;",
            "passive on;",
            "bfd on;",
        ] {
            assert!(t.contains(want), "missing `{want}` in\n{t}");
        }
        // BIRD itself takes it (where BIRD is installed: scripts/setup.sh
        // installs it for the full tier).
        if available("bird") {
            let dir = std::env::temp_dir();
            check("bird", &t, &dir).unwrap();
        } else {
            eprintln!("bird not installed: BIRD's own check of the configuration skipped");
        }
        // The IPv6 filter does not carry the IPv4 VIP.
        let six = t.split("filter l4lb_export6").nth(1).unwrap().split("protocol bgp").next().unwrap();
        assert!(!six.contains("198.18.100.1"), "{six}");
    }

    #[test]
    fn birds_configuration_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("l4lb-private-{}", std::process::id()));
        write_private(&path, "password \"x\";").unwrap();
        write_private(&path, "password \"y\";").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode, std::fs::read_to_string(&path).unwrap().as_str()), (0o600, "password \"y\";"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bird_state_is_read_from_its_replies() {
        let cfg = Config::parse(CONFIG, "t.toml").unwrap().validate("t.toml").unwrap();
        let protocols: Vec<String> = [
            "Name       Proto      Table      State  Since         Info",
            "bgp_router BGP        ---        up     08:00:01.000  Established",
            "  BGP state:          Established",
            "    Neighbor address: 198.18.0.254",
            "  Channel ipv4",
            "    Routes:         0 imported, 2 exported, 0 preferred",
            "bgp_peer1  BGP        ---        start  08:00:00.500  Active        Socket: Connection refused",
            "  BGP state:          Active",
            "    Last error:       Socket: Connection refused",
            "  Channel ipv6",
            "    Routes:         0 imported, 0 exported, 0 preferred",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let bfd: Vec<String> = [
            "l4lb_bfd:",
            "IP address                Interface  State      Since         Interval  Timeout",
            "198.18.0.254              lan        Up         08:00:01.000    0.050    0.200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = parse_peers(&protocols, &bfd, cfg.config.bgp.as_ref().unwrap());
        assert_eq!(rows.len(), 3);
        assert!(rows[0].up && rows[0].state == "Established", "{:?}", rows[0]);
        assert_eq!(rows[0].exported_routes, Some(2));
        assert_eq!(rows[0].bfd.as_deref(), Some("Up"));
        assert_eq!(rows[0].since.as_deref(), Some("08:00:01.000"));
        assert!(!rows[1].up && rows[1].state == "Active");
        assert_eq!(rows[1].last_error.as_deref(), Some("Socket: Connection refused"));
        assert_eq!(rows[1].exported_routes, Some(0));
        assert_eq!(rows[2].state, "unknown", "a peer BIRD does not list");
    }
}
