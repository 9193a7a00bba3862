//! The l4lb configuration file: TOML read through serde, unknown keys refused,
//! then checked as a whole. Every error names the file, the key and the reason.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::lcores::{self, LcoreMap};
use crate::net::ethernet::Mac;

/// A configuration error: which file, which key (`ports[1].ipv4`), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dpdk: DpdkSection,
    #[serde(default)]
    pub workers: WorkersSection,
    pub ports: Vec<PortSection>,
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    #[serde(default)]
    pub control: ControlSection,
}

/// `[control]`: the management side's sockets and health-check source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Unix socket of the control API (`l4lb ctl`); default
    /// `/run/l4lb/<dpdk.file_prefix>.sock`. Created with mode 0600.
    pub socket: Option<std::path::PathBuf>,
    /// Prometheus metrics listen address (`host:port`); "" turns it off.
    pub metrics_address: String,
    /// Source addresses for health checks (default: the kernel's choice).
    pub health_source_v4: Option<Ipv4Addr>,
    pub health_source_v6: Option<Ipv6Addr>,
    /// Threads that run health checks (each check blocks one until it ends).
    pub health_threads: usize,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: None,
            metrics_address: "127.0.0.1:9100".into(),
            health_source_v4: None,
            health_source_v6: None,
            health_threads: 4,
        }
    }
}

/// `[services.health]`: how the management side checks each backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub check: CheckKind,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Port to check (default: the service port).
    #[serde(default)]
    pub port: Option<u16>,
    /// HTTP: request path, expected status, Host header (default: the backend address).
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub host: Option<String>,
    /// UDP: the datagram to send, and text the answer must contain ("": any answer).
    #[serde(default)]
    pub send: String,
    #[serde(default)]
    pub expect: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Udp,
    Icmp,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Udp => "udp",
            CheckKind::Icmp => "icmp",
        }
    }
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}

/// `[dpdk]`: how EAL starts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// EAL `--lcores` map; the main (management) lcore is the lowest id unless
    /// `main_lcore` says otherwise, every other lcore is a worker.
    pub lcores: String,
    #[serde(default)]
    pub main_lcore: Option<u32>,
    /// PCI addresses to use (`0000:01:00.0`) and virtual devices
    /// (`net_tap0,iface=l4lb0`). With no PCI address, EAL runs with `--no-pci`.
    pub devices: Vec<String>,
    /// Use hugepages (`false`: `--no-huge`, for tests and small demos).
    #[serde(default = "default_true")]
    pub hugepages: bool,
    /// Memory to reserve at start (`-m`), in MiB; default: EAL's dynamic memory.
    #[serde(default)]
    pub memory_mb: Option<u32>,
    /// Keep all DPDK memory private to the process (`--in-memory`): no files in
    /// hugetlbfs or /var/run, but no secondary processes (dpdk-dumpcap).
    #[serde(default)]
    pub in_memory: bool,
    /// EAL `--file-prefix`: distinct per l4lb instance on one host.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// Size of the packet-buffer pool; default: computed from ports and queues.
    #[serde(default)]
    pub mbufs: Option<u32>,
    /// EAL log level (`--log-level`), e.g. "notice", "debug", "lib.eal:info".
    #[serde(default)]
    pub log_level: Option<String>,
    /// Further EAL arguments, passed as they are.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// `[workers]`: the poll loop.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// Packets per RX burst (1..=64).
    pub burst_size: usize,
    /// Longest time a packet waits in a TX buffer before it is sent, in µs.
    pub tx_drain_us: u64,
    /// Sleep this long after `idle_polls_before_pause` empty polls in a row
    /// (0: never sleep — lowest latency, one busy core per worker).
    pub idle_pause_us: u64,
    pub idle_polls_before_pause: u32,
    /// Flows each worker tracks (its flow table is allocated whole at start).
    pub flow_table_capacity: usize,
    /// Source-IP persistence entries per worker.
    pub persistence_capacity: usize,
    /// ICMP frag-needed / packet-too-big answers per second per worker.
    pub icmp_rate_per_s: u64,
    pub icmp_burst: u64,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            burst_size: 32,
            tx_drain_us: 100,
            idle_pause_us: 0,
            idle_polls_before_pause: 256,
            flow_table_capacity: 1 << 20,
            persistence_capacity: 1 << 16,
            icmp_rate_per_s: 100,
            icmp_burst: 20,
        }
    }
}

/// `[[ports]]`: one DPDK port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// l4lb's name for the port (used in logs, stats and other keys).
    pub name: String,
    /// The DPDK device name: a PCI address or a vdev name from `dpdk.devices`.
    pub device: String,
    #[serde(default)]
    pub ipv4: Option<Ipv4Cidr>,
    #[serde(default)]
    pub ipv6: Option<Ipv6Cidr>,
    #[serde(default)]
    pub mtu: Option<u16>,
    /// RX queues (default: one per worker); RSS spreads flows over them.
    #[serde(default)]
    pub rx_queues: Option<u16>,
    /// TX queues (default and minimum: one per worker).
    #[serde(default)]
    pub tx_queues: Option<u16>,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Plain forwarding: every packet received here leaves on this port.
    #[serde(default)]
    pub forward_to: Option<String>,
    /// MAC address to give the port (default: the device's own).
    #[serde(default, deserialize_with = "optional_mac")]
    pub mac: Option<Mac>,
    /// IPv4 next hop for encapsulated traffic to backends off this subnet.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 next hop for encapsulated traffic to backends off this subnet.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Static neighbours (IP -> MAC) on this port's segment.
    #[serde(default)]
    pub neighbours: Vec<NeighbourSection>,
}

/// A static neighbour entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourSection {
    pub ip: IpAddr,
    #[serde(deserialize_with = "mac")]
    pub mac: Mac,
}

/// `[[services]]`: one virtual service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: Protocol,
    /// The service port; 0 serves every port of the VIP for this protocol.
    pub port: u16,
    #[serde(default)]
    pub forwarding: ForwardingMode,
    /// GUE's UDP destination port on the backends.
    #[serde(default = "default_gue_port")]
    pub gue_port: u16,
    #[serde(default)]
    pub scheduler: SchedulerName,
    /// Prefix lengths the `source-ip` scheduler keeps of a client address.
    #[serde(default = "default_prefix_v4")]
    pub source_prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub source_prefix_v6: u8,
    /// Source-IP persistence: a client keeps its backend this long after its
    /// last packet (0: off).
    #[serde(default)]
    pub persistence_s: u64,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default = "default_maglev_size")]
    pub maglev_table_size: u32,
    /// The port backends are reached through (default: the first port).
    #[serde(default)]
    pub egress: Option<String>,
    /// Answer ARP / neighbour solicitations for the VIP (one-arm L2 setups
    /// where the router sends VIP traffic by ARP rather than a route).
    #[serde(default)]
    pub answer_arp: bool,
    /// Health checks (none: every backend counts as up).
    #[serde(default)]
    pub health: Option<HealthSection>,
    /// A backend that comes back up ramps its weight from 1 to full over this
    /// many seconds (0: full weight at once).
    #[serde(default)]
    pub slow_start_s: u64,
    /// A drained backend's remaining flows are moved after this many seconds
    /// (0: they continue until they end).
    #[serde(default)]
    pub drain_timeout_s: u64,
    pub backends: Vec<BackendSection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingMode {
    #[default]
    L2,
    Ipip,
    Gue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerName {
    #[default]
    Maglev,
    SourceIp,
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    WeightedLeastConnections,
    LeastResponseTime,
}

/// Flow idle timeouts in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    pub tcp_syn_s: u64,
    pub tcp_established_s: u64,
    pub tcp_closing_s: u64,
    pub udp_s: u64,
    pub other_s: u64,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        let t = crate::balancer::flowtable::Timeouts::default();
        TimeoutsSection {
            tcp_syn_s: t.tcp_syn_ms / 1000,
            tcp_established_s: t.tcp_established_ms / 1000,
            tcp_closing_s: t.tcp_closing_ms / 1000,
            udp_s: t.udp_ms / 1000,
            other_s: t.other_ms / 1000,
        }
    }
}

/// `[[services.backends]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub address: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The backend's MAC (L2 mode, or an on-link backend when encapsulating);
    /// otherwise it comes from the port's neighbours.
    #[serde(default, deserialize_with = "optional_mac")]
    pub mac: Option<Mac>,
}

fn default_gue_port() -> u16 {
    6080
}
fn default_prefix_v4() -> u8 {
    32
}
fn default_prefix_v6() -> u8 {
    128
}
fn default_maglev_size() -> u32 {
    crate::balancer::maglev::DEFAULT_SIZE
}
fn default_weight() -> u32 {
    1
}

/// A MAC address, `02:00:00:00:00:01` (the one MAC type: `net::ethernet::Mac`).
fn mac<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
    let s = String::deserialize(d)?;
    crate::net::ethernet::parse_mac(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("`{s}` is not a MAC address (like 02:00:00:00:00:01)"))
    })
}

fn optional_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
    mac(d).map(Some)
}

fn default_true() -> bool {
    true
}
fn default_file_prefix() -> String {
    "l4lb".into()
}
fn default_desc() -> u16 {
    1024
}

/// An address with a prefix length, `198.18.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// An address with a prefix length, `2001:db8::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

fn parse_cidr<A: FromStr>(s: &str, max: u8, family: &str) -> Result<(A, u8), String> {
    let (a, p) = s.split_once('/').ok_or_else(|| {
        format!("`{s}` is not an {family} address with a prefix length (like {})", example(family))
    })?;
    let addr = a.parse::<A>().map_err(|_| format!("`{a}` is not a valid {family} address"))?;
    let prefix_len = p
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix length `{p}` is not between 0 and {max}"))?;
    Ok((addr, prefix_len))
}

fn example(family: &str) -> &'static str {
    if family == "IPv4" {
        "198.18.0.1/24"
    } else {
        "2001:db8::1/64"
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cidr(s, 32, "IPv4").map(|(addr, prefix_len)| Ipv4Cidr { addr, prefix_len })
    }
}

impl FromStr for Ipv6Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cidr(s, 128, "IPv6").map(|(addr, prefix_len)| Ipv6Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Ipv4Cidr, Ipv6Cidr);

/// A configuration that passed every check, with what the checks derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub config: Config,
    pub lcores: LcoreMap,
    pub main_lcore: u32,
    /// Worker lcore ids, in order.
    pub workers: Vec<u32>,
    /// For each port, the index of the port it forwards to.
    pub forward: Vec<Option<usize>>,
}

impl Validated {
    pub fn rx_queues(&self, port: usize) -> u16 {
        self.config.ports[port].rx_queues.unwrap_or(self.workers.len() as u16)
    }

    pub fn tx_queues(&self, port: usize) -> u16 {
        self.config.ports[port].tx_queues.unwrap_or(self.workers.len() as u16)
    }

    /// EAL arguments for this configuration.
    pub fn eal_args(&self) -> Vec<String> {
        let d = &self.config.dpdk;
        let mut a: Vec<String> =
            vec!["--lcores".into(), d.lcores.clone(), "--main-lcore".into(), self.main_lcore.to_string()];
        a.extend(["--file-prefix".into(), d.file_prefix.clone()]);
        if d.in_memory {
            a.push("--in-memory".into());
        }
        if !d.hugepages {
            a.push("--no-huge".into());
            if d.memory_mb.is_none() {
                a.extend(["-m".into(), "512".into()]);
            }
        }
        if let Some(mb) = d.memory_mb {
            a.extend(["-m".into(), mb.to_string()]);
        }
        let mut any_pci = false;
        for dev in &d.devices {
            if is_pci_address(dev) {
                any_pci = true;
                a.extend(["-a".into(), dev.clone()]);
            } else {
                a.extend(["--vdev".into(), dev.clone()]);
            }
        }
        if !any_pci {
            a.push("--no-pci".into());
        }
        if let Some(level) = &d.log_level {
            a.extend(["--log-level".into(), level.clone()]);
        }
        a.extend(d.extra_args.iter().cloned());
        a
    }

    /// The control API's unix socket.
    /// Why a port's MTU as the device set it (`mtus`, by port index: what
    /// `run` finds when `ports.mtu` is not set) cannot carry a service, if
    /// one cannot; the key is the service's.
    pub fn mtu_problem(&self, mtus: &[u16]) -> Option<String> {
        let c = &self.config;
        c.services.iter().enumerate().find_map(|(i, s)| {
            let e = s.egress_index(&c.ports)?;
            let why = s.ipv6_mtu_problem(&c.ports[e].name, *mtus.get(e)?)?;
            Some(format!("services[{i}].forwarding: {why}"))
        })
    }

    /// Why this machine cannot run the configuration's lcore map (an lcore
    /// pinned to a CPU it does not have), if it cannot.
    pub fn cpu_problem(&self) -> Option<String> {
        let map = lcores::parse(&self.config.dpdk.lcores).ok()?;
        lcores::missing_cpu(&map, &lcores::allowed_cpus()?)
    }

    pub fn control_socket(&self) -> std::path::PathBuf {
        self.config.control.socket.clone().unwrap_or_else(|| {
            std::path::PathBuf::from(format!("/run/l4lb/{}.sock", self.config.dpdk.file_prefix))
        })
    }

    /// Packet buffers to allocate: enough for every descriptor and buffer,
    /// plus per-lcore caches and slack.
    pub fn mbufs(&self) -> u32 {
        if let Some(n) = self.config.dpdk.mbufs {
            return n;
        }
        let mut n: u64 = 4096;
        for (i, p) in self.config.ports.iter().enumerate() {
            n += self.rx_queues(i) as u64 * p.rx_desc as u64;
            n += self.tx_queues(i) as u64
                * (p.tx_desc as u64 + crate::balancer::limits::TX_BUFFER_CAPACITY as u64);
        }
        n += (self.workers.len() as u64 + 1)
            * (MEMPOOL_CACHE as u64 + crate::balancer::limits::BURST_MAX as u64);
        // A power of two minus one is the most memory-efficient mempool size.
        (n.next_power_of_two() - 1).min(u32::MAX as u64) as u32
    }
}

/// Per-lcore mempool cache size.
pub const MEMPOOL_CACHE: u32 = 256;

/// `0000:01:00.0` or `01:00.0`.
pub fn is_pci_address(s: &str) -> bool {
    let hex = |t: &str, n: usize| t.len() == n && t.chars().all(|c| c.is_ascii_hexdigit());
    let (rest, func) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    if !(func.len() == 1 && func.as_bytes()[0].is_ascii_digit() && func.as_bytes()[0] <= b'7') {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [dom, bus, dev] => hex(dom, 4) && hex(bus, 2) && hex(dev, 2),
        [bus, dev] => hex(bus, 2) && hex(dev, 2),
        _ => false,
    }
}

impl ServiceSection {
    /// The port a service's packets leave on: `egress`, or the first port.
    pub fn egress_index(&self, ports: &[PortSection]) -> Option<usize> {
        match &self.egress {
            Some(name) => ports.iter().position(|p| &p.name == name),
            None => Some(0),
        }
    }

    /// Why an egress MTU of `mtu` cannot carry this service: an IPv6 VIP
    /// must deliver 1280-byte packets (RFC 8200) with the encapsulation on.
    pub fn ipv6_mtu_problem(&self, port: &str, mtu: u16) -> Option<String> {
        if self.forwarding == ForwardingMode::L2 || !self.vip.is_ipv6() {
            return None;
        }
        let overhead = if self.backends.iter().any(|b| b.address.is_ipv6()) { 40 } else { 20 }
            + if self.forwarding == ForwardingMode::Gue { 8 } else { 0 };
        ((mtu as usize) < 1280 + overhead).then(|| {
            format!(
                "port `{port}` MTU {mtu} is below 1280 + {overhead} bytes of encapsulation for an IPv6 VIP \
                 (set ports.mtu to at least {})",
                1280 + overhead
            )
        })
    }
}

/// The kernel interface of a `net_tap` / `net_tun` device entry (`iface=`).
pub fn tap_interface(spec: &str) -> Option<&str> {
    let name = device_name(spec);
    if !(name.starts_with("net_tap") || name.starts_with("net_tun")) {
        return None;
    }
    spec.split(',').skip(1).find_map(|kv| kv.trim().strip_prefix("iface=")).map(str::trim)
}

/// The longest kernel interface name (IFNAMSIZ less its terminating NUL).
pub const MAX_IFNAME: usize = 15;

/// The ethdev name of a `dpdk.devices` entry: the part before the first comma.
pub fn device_name(spec: &str) -> &str {
    spec.split(',').next().unwrap_or(spec).trim()
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)?.validate(&file)
    }

    /// Parses TOML text; `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut msg = inner.message().to_owned();
            let line = inner.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let mut key = if path == "." { String::new() } else { path };
            // serde reports a missing key at its parent: name the key itself.
            if let Some(field) = msg.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
                key = if key.is_empty() { field.to_owned() } else { format!("{key}.{field}") };
                msg = "required key is missing".to_owned();
            } else if let Some(rest) = msg.strip_prefix("unknown field `") {
                if let Some((field, expected)) = rest.split_once('`') {
                    let field = field.to_owned();
                    let known = expected.trim_start_matches(", expected ").to_owned();
                    if !key.ends_with(&field) {
                        key = if key.is_empty() { field.clone() } else { format!("{key}.{field}") };
                    }
                    msg = format!("unknown key (known keys here: {known})");
                }
            }
            if key.is_empty() {
                key = "(syntax)".into();
            }
            if let Some(line) = line {
                msg = format!("{msg} (line {line})");
            }
            ConfigError { file: file.to_owned(), key, reason: msg }
        })
    }

    /// Checks the configuration as a whole.
    pub fn validate(self, file: &str) -> Result<Validated, ConfigError> {
        let err = |key: String, reason: String| ConfigError { file: file.to_owned(), key, reason };
        let d = &self.dpdk;
        let lcores = lcores::parse(&d.lcores).map_err(|r| err("dpdk.lcores".into(), r))?;
        let main_lcore = match d.main_lcore {
            Some(m) if lcores.ids().any(|id| id == m) => m,
            Some(m) => return Err(err("dpdk.main_lcore".into(), format!("lcore {m} is not in dpdk.lcores"))),
            None => lcores.ids().next().expect("parse returns at least one lcore"),
        };
        let workers: Vec<u32> = lcores.ids().filter(|id| *id != main_lcore).collect();
        if workers.is_empty() {
            return Err(err(
                "dpdk.lcores".into(),
                "needs at least two lcores: one for management, one or more workers".into(),
            ));
        }
        if d.devices.is_empty() {
            return Err(err("dpdk.devices".into(), "lists no device: add a PCI address or a vdev".into()));
        }
        let mut dev_names = HashSet::new();
        for (i, dev) in d.devices.iter().enumerate() {
            let name = device_name(dev);
            if name.is_empty() {
                return Err(err(format!("dpdk.devices[{i}]"), "empty device name".into()));
            }
            if !dev_names.insert(name) {
                return Err(err(format!("dpdk.devices[{i}]"), format!("device `{name}` is listed twice")));
            }
            // Kernel interface names (TAP, pcap, af_packet devices) fit IFNAMSIZ.
            for (k, v) in dev.split(',').skip(1).filter_map(|kv| kv.split_once('=')) {
                if matches!(k.trim(), "iface" | "remote") && v.len() > MAX_IFNAME {
                    return Err(err(
                        format!("dpdk.devices[{i}]"),
                        format!(
                            "interface name `{v}` ({k}=) is {} characters; Linux allows at most {MAX_IFNAME}",
                            v.len()
                        ),
                    ));
                }
            }
        }
        if d.in_memory && !d.hugepages {
            return Err(err(
                "dpdk.in_memory".into(),
                "cannot be combined with hugepages = false (EAL's --no-huge already keeps memory private)"
                    .into(),
            ));
        }
        if d.file_prefix.is_empty() || d.file_prefix.contains('/') {
            return Err(err("dpdk.file_prefix".into(), "must be a non-empty name without `/`".into()));
        }
        if d.mbufs.is_some_and(|n| n < 1024) {
            return Err(err("dpdk.mbufs".into(), "must be at least 1024".into()));
        }
        let w = &self.workers;
        if !(1..=crate::balancer::limits::BURST_MAX).contains(&w.burst_size) {
            return Err(err(
                "workers.burst_size".into(),
                format!("must be 1 to {}", crate::balancer::limits::BURST_MAX),
            ));
        }
        if w.tx_drain_us == 0 || w.tx_drain_us > 100_000 {
            return Err(err("workers.tx_drain_us".into(), "must be 1 to 100000 µs".into()));
        }
        if w.idle_pause_us > 100_000 {
            return Err(err("workers.idle_pause_us".into(), "must be at most 100000 µs".into()));
        }
        if self.ports.is_empty() {
            return Err(err("ports".into(), "at least one [[ports]] section is required".into()));
        }
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = |k: &str| format!("ports[{i}].{k}");
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(key("name"), format!("`{}` must be letters, digits, `-` or `_`", p.name)));
            }
            if !names.insert(p.name.as_str()) {
                return Err(err(key("name"), format!("port name `{}` is used twice", p.name)));
            }
            if !dev_names.contains(p.device.as_str()) {
                return Err(err(key("device"), format!("`{}` is not in dpdk.devices", p.device)));
            }
            if !devices.insert(p.device.as_str()) {
                return Err(err(key("device"), format!("device `{}` is used by two ports", p.device)));
            }
            if let Some(mtu) = p.mtu {
                if !(68..=9600).contains(&mtu) {
                    return Err(err(key("mtu"), format!("{mtu} is not between 68 and 9600")));
                }
                if p.ipv6.is_some() && mtu < 1280 {
                    return Err(err(key("mtu"), format!("{mtu} is below IPv6's minimum of 1280")));
                }
            }
            for (k, v) in [("rx_queues", p.rx_queues), ("tx_queues", p.tx_queues)] {
                if v == Some(0) || v.is_some_and(|v| v > 1024) {
                    return Err(err(key(k), "must be 1 to 1024".into()));
                }
            }
            if let Some(tx) = p.tx_queues {
                if (tx as usize) < workers.len() {
                    return Err(err(
                        key("tx_queues"),
                        format!(
                            "{tx} is fewer than the {} workers; each worker needs its own TX queue",
                            workers.len()
                        ),
                    ));
                }
            }
            for (k, v) in [("rx_desc", p.rx_desc), ("tx_desc", p.tx_desc)] {
                if !(32..=16384).contains(&v) {
                    return Err(err(key(k), format!("{v} is not between 32 and 16384")));
                }
            }
        }
        let mut forward = Vec::with_capacity(self.ports.len());
        for (i, p) in self.ports.iter().enumerate() {
            forward.push(match &p.forward_to {
                None => None,
                Some(t) => Some(self.ports.iter().position(|q| &q.name == t).ok_or_else(|| {
                    err(format!("ports[{i}].forward_to"), format!("there is no port named `{t}`"))
                })?),
            });
        }
        if !(crate::balancer::flowtable::MIN_CAPACITY..=crate::balancer::flowtable::MAX_CAPACITY)
            .contains(&w.flow_table_capacity)
        {
            return Err(err(
                "workers.flow_table_capacity".into(),
                format!(
                    "must be {} to {} flows",
                    crate::balancer::flowtable::MIN_CAPACITY,
                    crate::balancer::flowtable::MAX_CAPACITY
                ),
            ));
        }
        if w.persistence_capacity == 0 || w.persistence_capacity > 1 << 24 {
            return Err(err("workers.persistence_capacity".into(), "must be 1 to 16777216".into()));
        }
        if w.icmp_burst == 0 {
            return Err(err("workers.icmp_burst".into(), "must be at least 1".into()));
        }
        if !self.services.is_empty() {
            if let Some(i) = self.ports.iter().position(|p| p.forward_to.is_some()) {
                return Err(err(
                    format!("ports[{i}].forward_to"),
                    "plain forwarding cannot be combined with [[services]]: remove one of them".into(),
                ));
            }
        }
        validate_services(&self, &err)?;
        Ok(Validated { config: self, lcores, main_lcore, workers, forward })
    }
}

fn validate_services(cfg: &Config, err: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
    use crate::balancer::maglev::{is_prime, MAX_BACKENDS, MAX_SIZE};
    let mut seen: Vec<(IpAddr, Protocol, u16)> = Vec::new();
    let mut names = HashSet::new();
    if cfg.services.len() > crate::balancer::limits::MAX_SERVICES {
        return Err(err(
            "services".into(),
            format!("at most {} services", crate::balancer::limits::MAX_SERVICES),
        ));
    }
    let mut backend_count = 0usize;
    for (i, s) in cfg.services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(err(key("name"), format!("`{}` must be letters, digits, `-` or `_`", s.name)));
        }
        if !names.insert(s.name.as_str()) {
            return Err(err(key("name"), format!("service name `{}` is used twice", s.name)));
        }
        if s.vip.is_unspecified() || s.vip.is_multicast() {
            return Err(err(key("vip"), format!("{} cannot be a VIP", s.vip)));
        }
        if let Some(j) = seen.iter().position(|x| *x == (s.vip, s.protocol, s.port)) {
            return Err(err(key("vip"), format!("same VIP, protocol and port as services[{j}]")));
        }
        seen.push((s.vip, s.protocol, s.port));
        let egress = match &s.egress {
            Some(name) => cfg
                .ports
                .iter()
                .position(|p| &p.name == name)
                .ok_or_else(|| err(key("egress"), format!("there is no port named `{name}`")))?,
            None => 0,
        };
        let port = &cfg.ports[egress];
        if s.forwarding == ForwardingMode::Gue && s.gue_port == 0 {
            return Err(err(key("gue_port"), "must not be 0".into()));
        }
        if s.source_prefix_v4 > 32 {
            return Err(err(key("source_prefix_v4"), "must be 0 to 32".into()));
        }
        if s.source_prefix_v6 > 128 {
            return Err(err(key("source_prefix_v6"), "must be 0 to 128".into()));
        }
        if s.persistence_s > 86_400 {
            return Err(err(key("persistence_s"), "must be at most 86400 (one day)".into()));
        }
        let t = &s.timeouts;
        for (k, v) in [
            ("tcp_syn_s", t.tcp_syn_s),
            ("tcp_established_s", t.tcp_established_s),
            ("tcp_closing_s", t.tcp_closing_s),
            ("udp_s", t.udp_s),
            ("other_s", t.other_s),
        ] {
            if v == 0 || v > 7 * 86_400 {
                return Err(err(key(&format!("timeouts.{k}")), "must be 1 s to 7 days".into()));
            }
        }
        if !(3..=MAX_SIZE).contains(&s.maglev_table_size) || !is_prime(s.maglev_table_size) {
            return Err(err(
                key("maglev_table_size"),
                format!(
                    "{} is not a prime between 3 and {MAX_SIZE} (65537 and 655373 are)",
                    s.maglev_table_size
                ),
            ));
        }
        if s.backends.is_empty() {
            return Err(err(key("backends"), "a service needs at least one backend".into()));
        }
        if s.slow_start_s > 3600 {
            return Err(err(key("slow_start_s"), "must be at most 3600".into()));
        }
        if s.drain_timeout_s > 7 * 86_400 {
            return Err(err(key("drain_timeout_s"), "must be at most 7 days".into()));
        }
        if let Some(h) = &s.health {
            let hkey = |k: &str| format!("services[{i}].health.{k}");
            if !(10..=3_600_000).contains(&h.interval_ms) {
                return Err(err(hkey("interval_ms"), "must be 10 to 3600000".into()));
            }
            if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                return Err(err(hkey("timeout_ms"), "must be 1 to interval_ms".into()));
            }
            if !(1..=100).contains(&h.rise) {
                return Err(err(hkey("rise"), "must be 1 to 100".into()));
            }
            if !(1..=100).contains(&h.fall) {
                return Err(err(hkey("fall"), "must be 1 to 100".into()));
            }
            if h.check != CheckKind::Icmp && h.port.unwrap_or(s.port) == 0 {
                return Err(err(
                    hkey("port"),
                    "the service serves every port (port = 0): say which port to check".into(),
                ));
            }
            if h.check == CheckKind::Http {
                if !h.path.starts_with('/') || h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err(hkey("path"), "must start with `/` and contain no spaces".into()));
                }
                if !(100..=599).contains(&h.expect_status) {
                    return Err(err(hkey("expect_status"), "must be an HTTP status, 100 to 599".into()));
                }
                if h.host.as_ref().is_some_and(|x| x.is_empty() || x.chars().any(|c| c.is_whitespace())) {
                    return Err(err(hkey("host"), "must be a host name without spaces".into()));
                }
            }
            if h.check == CheckKind::Udp && h.send.is_empty() {
                return Err(err(hkey("send"), "a UDP check needs a datagram to send".into()));
            }
        }
        if s.backends.len() > MAX_BACKENDS || s.backends.len() as u64 > s.maglev_table_size as u64 {
            return Err(err(key("backends"), "more backends than the Maglev table size allows".into()));
        }
        backend_count += s.backends.len();
        let total: u64 = s.backends.iter().map(|b| b.weight as u64).sum();
        if total == 0 {
            return Err(err(key("backends"), "total weight is 0: no backend would get traffic".into()));
        }
        for (j, b) in s.backends.iter().enumerate() {
            let bkey = |k: &str| format!("services[{i}].backends[{j}].{k}");
            if s.backends[..j].iter().any(|o| o.address == b.address) {
                return Err(err(bkey("address"), format!("{} is listed twice", b.address)));
            }
            if b.weight > 65_535 {
                return Err(err(bkey("weight"), "must be 0 to 65535".into()));
            }
            if s.forwarding != ForwardingMode::L2 {
                match (s.vip, b.address) {
                    (IpAddr::V6(_), IpAddr::V4(_)) => {
                        return Err(err(
                            bkey("address"),
                            "an IPv6 VIP cannot be encapsulated to an IPv4 backend (4in4, 6in6 and 4in6 are supported)"
                                .into(),
                        ))
                    }
                    (_, IpAddr::V4(_)) if port.ipv4.is_none() => {
                        return Err(err(
                            bkey("address"),
                            format!("port `{}` has no ipv4 address to encapsulate from", port.name),
                        ))
                    }
                    (_, IpAddr::V6(_)) if port.ipv6.is_none() => {
                        return Err(err(
                            bkey("address"),
                            format!("port `{}` has no ipv6 address to encapsulate from", port.name),
                        ))
                    }
                    _ => {}
                }
            }
        }
        // With no `mtu` the device's applies: `l4lb run` checks it then
        // (Validated::mtu_problem), once the port is up.
        if let Some(why) = port.mtu.and_then(|m| s.ipv6_mtu_problem(&port.name, m)) {
            return Err(err(key("forwarding"), why));
        }
    }
    if backend_count > crate::balancer::limits::MAX_BACKEND_IDS {
        return Err(err("services".into(), "too many backends in total".into()));
    }
    let c = &cfg.control;
    if !c.metrics_address.is_empty() && c.metrics_address.parse::<std::net::SocketAddr>().is_err() {
        return Err(err(
            "control.metrics_address".into(),
            format!(
                "`{}` is not an address:port (like 127.0.0.1:9100), or \"\" to turn metrics off",
                c.metrics_address
            ),
        ));
    }
    if !(1..=64).contains(&c.health_threads) {
        return Err(err("control.health_threads".into(), "must be 1 to 64".into()));
    }
    if c.socket.as_ref().is_some_and(|p| p.as_os_str().is_empty() || p.as_os_str().len() > 100) {
        return Err(err("control.socket".into(), "must be a path of 1 to 100 bytes".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=a", "net_tap1,iface=b"]
hugepages = false

[[ports]]
name = "left"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
forward_to = "right"

[[ports]]
name = "right"
device = "net_tap1"
forward_to = "left"
"#;

    fn check(text: &str) -> Result<Validated, ConfigError> {
        Config::parse(text, "t.toml")?.validate("t.toml")
    }

    #[test]
    fn good_config() {
        let v = check(GOOD).unwrap();
        assert_eq!(v.main_lcore, 0);
        assert_eq!(v.workers, vec![1]);
        assert_eq!(v.forward, vec![Some(1), Some(0)]);
        assert_eq!(v.config.ports[0].ipv4.unwrap().to_string(), "198.18.0.1/24");
        let args = v.eal_args();
        assert!(args.windows(2).any(|w| w == ["--vdev", "net_tap0,iface=a"]));
        assert!(args.contains(&"--no-pci".to_string()));
        assert!(args.contains(&"--no-huge".to_string()));
        assert_eq!(v.rx_queues(0), 1);
        assert!(v.mbufs() >= 4096 && (v.mbufs() + 1).is_power_of_two());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = check(&GOOD.replace("hugepages = false", "hugepages = false\nhugepage = 1")).unwrap_err();
        assert_eq!(e.key, "dpdk.hugepage");
        assert!(e.reason.starts_with("unknown key"), "{e}");
        let e =
            check(&GOOD.replace("forward_to = \"left\"", "forward_to = \"left\"\nspeed = 1")).unwrap_err();
        assert_eq!(e.key, "ports[1].speed");
    }

    #[test]
    fn bad_address_is_named() {
        let e = check(&GOOD.replace("198.18.0.1/24", "198.18.0.300/24")).unwrap_err();
        assert_eq!(e.key, "ports[0].ipv4");
        assert!(e.reason.contains("198.18.0.300"), "{e}");
        let e = check(&GOOD.replace("2001:db8::1/64", "2001:db8::1/129")).unwrap_err();
        assert_eq!(e.key, "ports[0].ipv6");
        assert!(e.reason.contains("prefix length"), "{e}");
    }

    #[test]
    fn missing_section_is_named() {
        let text = GOOD.split("[[ports]]").next().unwrap();
        let e = check(text).unwrap_err();
        assert_eq!(e.key, "ports");
        assert!(e.reason.contains("missing"), "{e}");
        let e = check(&GOOD.replace("[dpdk]", "[dpdkx]")).unwrap_err();
        assert_eq!(e.key, "dpdkx");
    }

    #[test]
    fn semantic_errors() {
        let cases = [
            ("lcores = \"0@0,1@1\"", "lcores = \"0\"", "dpdk.lcores"),
            ("hugepages = false", "hugepages = false\nin_memory = true", "dpdk.in_memory"),
            ("forward_to = \"right\"", "forward_to = \"nowhere\"", "ports[0].forward_to"),
            ("device = \"net_tap1\"", "device = \"net_tap7\"", "ports[1].device"),
            ("device = \"net_tap1\"", "device = \"net_tap0\"", "ports[1].device"),
            ("name = \"right\"", "name = \"left\"", "ports[1].name"),
            ("forward_to = \"left\"", "forward_to = \"left\"\nmtu = 20", "ports[1].mtu"),
            ("forward_to = \"left\"", "forward_to = \"left\"\ntx_queues = 0", "ports[1].tx_queues"),
        ];
        for (from, to, key) in cases {
            let e = check(&GOOD.replacen(from, to, 1)).unwrap_err();
            assert_eq!(e.key, key, "{from} -> {to}: {e}");
        }
        let e = check("[dpdk\n").unwrap_err();
        assert_eq!(e.key, "(syntax)");
        assert!(e.reason.contains("line 1"), "{e}");
    }

    #[test]
    fn an_ipv6_vip_needs_an_egress_mtu_for_1280_bytes_plus_encapsulation() {
        let text = |mtu: &str| {
            format!(
                r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=a"]
[[ports]]
name = "p"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
{mtu}
[[services]]
name = "v6"
vip = "2001:db8:100::1"
protocol = "tcp"
port = 80
forwarding = "ipip"
backends = [{{ address = "2001:db8::11", mac = "02:00:00:00:00:11" }}]
"#
            )
        };
        // Set in the file: check refuses it.
        let e = check(&text("mtu = 1300")).unwrap_err();
        assert_eq!(e.key, "services[0].forwarding", "{e}");
        assert!(
            e.reason.contains("MTU 1300 is below 1280 + 40") && e.reason.contains("at least 1320"),
            "{e}"
        );
        // Not set: the device's applies, which run checks once the port is up.
        let v = check(&text("")).unwrap();
        assert_eq!(v.mtu_problem(&[1500]), None);
        let why = v.mtu_problem(&[1300]).unwrap();
        assert!(why.starts_with("services[0].forwarding: port `p` MTU 1300 is below 1280 + 40"), "{why}");
        assert_eq!(check(&text("mtu = 1320")).map(|_| ()), Ok(()));
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("3b:00.1"));
        assert!(!is_pci_address("net_tap0"));
        assert!(!is_pci_address("0000:01:00.8"));
        assert_eq!(device_name("net_tap0,iface=x"), "net_tap0");
        assert_eq!(tap_interface("net_tap0,iface=l4lb0"), Some("l4lb0"));
        assert_eq!(tap_interface("net_tap1, iface=x ,remote=eth0"), Some("x"));
        assert_eq!(tap_interface("net_pcap0,iface=eth0"), None);
    }
}
