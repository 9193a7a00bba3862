//! The l4lb configuration file: TOML read through serde, unknown keys refused
//! (this file: the schema, section by section; `include.rs`: `Config::load`,
//! included files and the parse cache of reloads; a
//! service's health checks, passive health, response time and quota in
//! `policies.rs`), then
//! checked as a whole (`validate.rs`) into a [`Validated`] configuration with
//! what the checks derived (`validated.rs`). Every error names the file, the
//! key and the reason.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::balancer::access::Prefix;
use crate::net::ethernet::Mac;

mod policies;
pub use policies::*;

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
    /// Files and directories (every `*.toml` in one, by name) of more
    /// `[[services]]`, relative to this file's directory.
    #[serde(default)]
    pub include: Vec<String>,
    pub dpdk: DpdkSection,
    #[serde(default)]
    pub workers: WorkersSection,
    pub ports: Vec<PortSection>,
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub routing: RoutingSection,
    /// BGP through a BIRD l4lb runs (none: announce through `[routing]`
    /// alone, to a daemon the operator runs).
    #[serde(default)]
    pub bgp: Option<BgpSection>,
    /// Flow sync with the other boxes of the fleet.
    #[serde(default)]
    pub sync: Option<SyncSection>,
    /// Who may open flows to every service (each service may narrow it).
    #[serde(default)]
    pub access: AccessSection,
}

/// `[access]` and `services.access`: source prefixes allowed and denied to
/// open flows (`balancer::access` has the rule: deny wins; an allow list,
/// where there is one, must hold the client).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// None: no allow list (everyone not denied).
    #[serde(default)]
    pub allow: Option<Vec<Prefix>>,
    #[serde(default)]
    pub deny: Vec<Prefix>,
    /// Files of more prefixes, one per line (`#` starts a comment); a
    /// relative path is from the configuration file's directory.
    #[serde(default)]
    pub allow_file: Option<String>,
    #[serde(default)]
    pub deny_file: Option<String>,
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[sync]`: the flows this box tracks whose backend the tables would not
/// choose now go to the peers, and theirs come here (`control::sync`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Off keeps the section but sends and installs nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The other boxes' addresses (each listens on `port`).
    pub peers: Vec<IpAddr>,
    /// TCP port: listened on, and connected to at each peer.
    #[serde(default = "default_sync_port")]
    pub port: u16,
    /// The address listened on and connected from (the address the peers
    /// list for this box); unset: every address, the kernel's choice.
    #[serde(default)]
    pub listen: Option<IpAddr>,
    /// Entries of the table of flows received from peers.
    #[serde(default = "default_sync_capacity")]
    pub capacity: usize,
    /// Entries waiting for a peer before new ones are dropped (counted).
    #[serde(default = "default_sync_queue")]
    pub queue: usize,
    /// A starting box announces its VIPs once every peer sent what it had,
    /// or after this long.
    #[serde(default = "default_sync_warmup_s")]
    pub warmup_timeout_s: u64,
}

fn default_sync_port() -> u16 {
    4788
}
fn default_sync_capacity() -> usize {
    1 << 18
}
fn default_sync_queue() -> usize {
    1 << 16
}
fn default_sync_warmup_s() -> u64 {
    5
}

/// `[routing]`: the VIPs l4lb asks a routing daemon to announce.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// The kernel routing table (in l4lb's namespace) l4lb keeps one route
    /// per announced VIP in, for BIRD's `kernel` protocol (or FRR's
    /// `ip import-table`) to pick up; 0: off.
    pub table: u32,
    /// At a graceful stop, how long the routes carry the GRACEFUL_SHUTDOWN
    /// mark (kernel protocol number [`GRACEFUL_SHUTDOWN_PROTO`]) before they
    /// are withdrawn.
    pub graceful_shutdown_s: u64,
    /// At a graceful stop, how long l4lb keeps forwarding after the
    /// withdrawal, while the routers move traffic away.
    pub shutdown_drain_s: u64,
}

/// The kernel protocol number of a VIP's route while it carries the
/// GRACEFUL_SHUTDOWN mark (RFC 8326); `static` otherwise.
pub const GRACEFUL_SHUTDOWN_PROTO: u8 = 200;

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection { table: 0, graceful_shutdown_s: 2, shutdown_drain_s: 5 }
    }
}

/// `[bgp]`: l4lb writes a BIRD 2 configuration from this section, runs BIRD
/// and asks it for the sessions' state; BIRD announces the VIPs l4lb keeps
/// in `[routing] table`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    pub local_as: u32,
    /// Default: the first port's IPv4 address.
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// BGP hold time (keepalives every third of it); 0 turns both off.
    #[serde(default = "default_hold_time_s")]
    pub hold_time_s: u16,
    /// Seconds between connection attempts to a peer that is not up.
    #[serde(default = "default_connect_retry_s")]
    pub connect_retry_s: u16,
    /// BFD on every session: a dead box is noticed in interval × multiplier.
    #[serde(default)]
    pub bfd: Option<BfdSection>,
    /// Communities (`"65000:100"`) and large communities (`"65000:1:2"`)
    /// every VIP carries.
    #[serde(default)]
    pub communities: Vec<Community>,
    /// The BIRD 2 program.
    #[serde(default = "default_bird")]
    pub bird: String,
    /// Where BIRD's configuration and control socket go (default
    /// `/run/l4lb/<dpdk.file_prefix>-bird`).
    #[serde(default)]
    pub directory: Option<std::path::PathBuf>,
    pub peers: Vec<PeerSection>,
}

/// `[bgp.bfd]`: BFD timers (BIRD's `protocol bfd`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdSection {
    #[serde(default = "default_bfd_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u32,
}

/// `[[bgp.peers]]`: one BGP neighbour (a router).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Default: `peer<index>`.
    #[serde(default)]
    pub name: Option<String>,
    pub address: IpAddr,
    pub remote_as: u32,
    #[serde(default = "default_bgp_port")]
    pub port: u16,
    /// TCP MD5 password.
    #[serde(default)]
    pub password: Option<String>,
    /// A peer more than one hop away: its TTL (default: directly connected,
    /// on a port's subnet).
    #[serde(default)]
    pub multihop: Option<u8>,
    /// Wait for the peer to connect.
    #[serde(default)]
    pub passive: bool,
}

impl PeerSection {
    /// The session's name in BIRD and in `ctl bgp`.
    pub fn name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("peer{index}"))
    }
}

/// A BGP community: standard (`"65000:100"`) or large (`"65000:1:2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!("`{s}` is not a community: write ASN:VALUE (each 0-65535) or ASN:V1:V2 (large, each 0-4294967295)")
        };
        match parts[..] {
            [a, b] => Ok(Community::Standard(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)),
            [a, b, c] => Ok(Community::Large(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
                c.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

/// When a service's VIP is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncePolicy {
    /// While `min_healthy` backends take new flows.
    #[default]
    Healthy,
    /// Whenever l4lb runs (and the box is not drained).
    Always,
    /// Never by this box.
    Never,
}

/// `[services.bgp]`: what the VIP's route carries.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceBgp {
    pub communities: Vec<Community>,
    /// Multi-exit discriminator.
    pub med: Option<u32>,
}

fn default_hold_time_s() -> u16 {
    9
}
fn default_connect_retry_s() -> u16 {
    5
}
fn default_bfd_interval_ms() -> u32 {
    100
}
fn default_bfd_multiplier() -> u32 {
    3
}
fn default_bgp_port() -> u16 {
    179
}
fn default_bird() -> String {
    "bird".into()
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
    /// Bytes of each packet buffer's data room, DPDK's 128-byte headroom
    /// included; default DPDK's 2176. Frames longer than the room less the
    /// headroom do not fit one buffer: lower it only for benchmarks and ports
    /// whose frames are all short.
    #[serde(default)]
    pub mbuf_data_room: Option<u16>,
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
    /// Source-IP persistence entries (one table shared by the workers).
    pub persistence_capacity: usize,
    /// ICMP frag-needed / packet-too-big answers per second per worker.
    pub icmp_rate_per_s: u64,
    pub icmp_burst: u64,
    /// Packets per second each worker hands its ports' kernel interfaces,
    /// control-plane packets (BGP, BFD, ARP, NDP) not counted.
    pub punt_rate_per_s: u64,
    pub punt_burst: u64,
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
            punt_rate_per_s: 10_000,
            punt_burst: 1_000,
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
    /// The port's kernel interface (the exception path).
    #[serde(default)]
    pub kernel: KernelSection,
}

/// `[ports.kernel]`: the kernel-side interface of a port, which carries the
/// box's own traffic (BGP, SSH, health checks from the port's address).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSection {
    /// Default: on when the port has an address and l4lb balances.
    pub enabled: Option<bool>,
    /// The interface's name (default: the port's name).
    pub name: Option<String>,
    pub driver: KernelDriver,
    /// Traffic to a VIP on a protocol and port no service covers goes to
    /// the kernel instead of being dropped.
    pub punt_unknown_vip_ports: bool,
}

/// How the kernel interface is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelDriver {
    /// `virtio-user` where `/dev/vhost-net` exists, else `tap`.
    #[default]
    Auto,
    /// DPDK's `net_tap`.
    Tap,
    /// DPDK's `virtio_user` over the kernel's vhost-net (DPDK's recommended
    /// exception path).
    VirtioUser,
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
    /// Who may open flows to this service, within `[access]`.
    #[serde(default)]
    pub access: AccessSection,
    /// Limits on the service's new flows (none by default).
    #[serde(default)]
    pub quota: Option<QuotaSection>,
    /// Judging backends from the service's own traffic (none by default).
    #[serde(default)]
    pub passive_health: Option<PassiveSection>,
    /// What `least-response-time` takes as a backend's response time.
    #[serde(default)]
    pub response_time: ResponseTime,
    /// A backend that comes back up ramps its weight from 1 to full over this
    /// many seconds (0: full weight at once).
    #[serde(default)]
    pub slow_start_s: u64,
    /// A drained backend's remaining flows are moved after this many seconds
    /// (0: they continue until they end).
    #[serde(default)]
    pub drain_timeout_s: u64,
    /// The VIP is announced (`[routing]`) while at least this many backends
    /// take new flows.
    #[serde(default = "default_min_healthy")]
    pub min_healthy: u32,
    /// When the VIP is announced (`[routing]`).
    #[serde(default)]
    pub announce: AnnouncePolicy,
    /// Communities and MED of the VIP's route (`[bgp]`).
    #[serde(default)]
    pub bgp: ServiceBgp,
    pub backends: Vec<BackendSection>,
}

fn default_min_healthy() -> u32 {
    1
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
deserialize_from_str!(Ipv4Cidr, Ipv6Cidr, Community);

mod include;
#[cfg(test)]
mod tests;
mod validate;
mod validated;

pub use include::ConfigCache;
pub use validate::{bgp_router_id, kernel_interface_name, peer_source};
pub use validated::{
    device_name, is_pci_address, tap_interface, KernelInterface, Validated, KERNEL_DESC, MAX_IFNAME,
    MEMPOOL_CACHE, PUNT_RING_HIGH, PUNT_RING_LOW, VHOST_NET,
};
