//! A service's policies in the configuration file: its health checks
//! (`services.health`), passive health and response time from traffic, and
//! its quota on new flows. Re-exported by `config`.

use serde::Deserialize;

use super::default_true;

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
    /// HTTP(S): request path, the statuses that pass (a number or a list),
    /// Host header (default: the backend address), and text the body's
    /// first 64 KiB must contain.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub expect_status: ExpectStatus,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub expect_body: Option<String>,
    /// HTTPS: how the backend's certificate is checked, and ours if it asks.
    #[serde(default)]
    pub tls: TlsSection,
    /// `command` checks: the program and its arguments (no shell).
    #[serde(default)]
    pub command: Vec<String>,
    /// UDP: the datagram to send, and text the answer must contain ("": any answer).
    #[serde(default)]
    pub send: String,
    #[serde(default)]
    pub expect: String,
    /// The path the check takes: `"vip"`, to the VIP through the backend's
    /// rewrite as a client's packet (the default where the mode allows:
    /// see [`vip_path_obstacle`]), or `"backend"`, to the backend's own
    /// address.
    #[serde(default)]
    pub via: Option<HealthVia>,
}

/// `[services.health] via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthVia {
    Vip,
    Backend,
}

/// The port a service's packets leave by: its `egress`, else the first.
pub fn egress_port(c: &super::Config, s: &super::ServiceSection) -> usize {
    s.egress.as_ref().and_then(|e| c.ports.iter().position(|p| &p.name == e)).unwrap_or(0)
}

/// Why backend `b` of service `s` cannot be checked through its VIP's path
/// (`None`: it can). The box's kernel makes the check through the kernel
/// interface of the service's port, from that port's address, to the
/// backend; the worker sending it readdresses it to the VIP
/// (`dataplane::pipeline::vip_path`).
pub fn vip_path_obstacle(
    c: &super::Config,
    s: &super::ServiceSection,
    b: &super::BackendSection,
) -> Option<String> {
    let h = s.health.as_ref()?;
    if matches!(h.check, CheckKind::Icmp | CheckKind::Command) {
        return Some(format!(
            "a `{}` check cannot take the VIP's path (tcp, http, https and udp can)",
            h.check.name()
        ));
    }
    let family = |a: std::net::IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    if b.address.is_ipv4() != s.vip.is_ipv4() {
        return Some(format!(
            "backend {} is {} and the VIP {}: a check's packet keeps its family",
            b.address,
            family(b.address),
            family(s.vip)
        ));
    }
    let i = egress_port(c, s);
    let port = c.ports.get(i)?;
    if super::kernel_interface_name(c, i).is_none() {
        return Some(format!(
            "port `{}` has no kernel interface (ports.kernel), which VIP-path checks leave by",
            port.name
        ));
    }
    if vip_path_source(c, s, b.address).is_none() {
        return Some(format!("port `{}` has no {} address to check from", port.name, family(b.address)));
    }
    None
}

/// The address of the service's port in `backend`'s family: where the
/// box's VIP-path checks of it come from.
pub fn vip_path_source(
    c: &super::Config,
    s: &super::ServiceSection,
    backend: std::net::IpAddr,
) -> Option<std::net::IpAddr> {
    let port = c.ports.get(egress_port(c, s))?;
    match backend {
        std::net::IpAddr::V4(_) => port.ipv4.map(|a| a.addr.into()),
        std::net::IpAddr::V6(_) => port.ipv6.map(|a| a.addr.into()),
    }
}

/// Whether backend `b` of service `s` is checked through its VIP's path.
pub fn checked_via_vip(c: &super::Config, s: &super::ServiceSection, b: &super::BackendSection) -> bool {
    s.health.as_ref().is_some_and(|h| h.via != Some(HealthVia::Backend))
        && vip_path_obstacle(c, s, b).is_none()
}

/// `via = "vip"` said outright must be possible for every backend.
pub(super) fn validate_via(c: &super::Config, s: &super::ServiceSection) -> Result<(), String> {
    if s.health.as_ref().and_then(|h| h.via) != Some(HealthVia::Vip) {
        return Ok(());
    }
    match s.backends.iter().find_map(|b| vip_path_obstacle(c, s, b)) {
        Some(why) => Err(format!("{why}; say via = \"backend\" to check the backends' own addresses")),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Icmp,
    /// A program's exit status (keepalived's MISC_CHECK).
    Command,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Udp => "udp",
            CheckKind::Icmp => "icmp",
            CheckKind::Command => "command",
        }
    }

    /// Whether the check speaks HTTP (`path`, `expect_status`, `host`,
    /// `expect_body` apply).
    pub fn is_http(self) -> bool {
        matches!(self, CheckKind::Http | CheckKind::Https)
    }
}

/// The HTTP statuses a check accepts: `expect_status = 200` or
/// `expect_status = [200, 204, 301]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "StatusOneOrMany")]
pub struct ExpectStatus(pub Vec<u16>);

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusOneOrMany {
    One(u16),
    Many(Vec<u16>),
}

impl From<StatusOneOrMany> for ExpectStatus {
    fn from(s: StatusOneOrMany) -> Self {
        match s {
            StatusOneOrMany::One(n) => ExpectStatus(vec![n]),
            StatusOneOrMany::Many(v) => ExpectStatus(v),
        }
    }
}

impl Default for ExpectStatus {
    fn default() -> Self {
        ExpectStatus(vec![200])
    }
}

impl std::fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&words.join(" or "))
    }
}

/// `services.health.tls`: an HTTPS check's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Verify the backend's certificate chain and name (off: any
    /// certificate passes, e.g. self-signed ones).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// The CA certificates (PEM) to verify against (default: the system's
    /// bundle, /etc/ssl/certs/ca-certificates.crt).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The name sent by SNI and verified (default: `host`, else none and
    /// the backend's address is verified).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate chain and its key (PEM), for backends that ask.
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection { verify: true, ca_file: None, server_name: None, cert_file: None, key_file: None }
    }
}

impl HealthSection {
    /// A `check` with every other key at its default, as a file that names
    /// only `check` gets.
    pub fn new(check: CheckKind) -> HealthSection {
        HealthSection {
            check,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
            port: None,
            path: default_path(),
            expect_status: ExpectStatus::default(),
            host: None,
            expect_body: None,
            tls: TlsSection::default(),
            command: Vec::new(),
            send: String::new(),
            expect: String::new(),
            via: None,
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

/// The response time `least-response-time` weighs backends by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResponseTime {
    /// The last health check's round trip.
    #[default]
    Check,
    /// The mean TCP handshake (client SYN to its first ACK, one round trip
    /// through the backend) of the backend's new flows over the last
    /// window, from traffic; the check's round trip until there is one.
    Handshake,
}

/// `services.passive_health`: a backend is suspect while, over the last
/// `window_s`, at least `min_flows` new flows went to it and at least
/// `syn_retried_share` of them had their client send its SYN again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSection {
    #[serde(default = "default_passive_window_s")]
    pub window_s: u64,
    #[serde(default = "default_passive_min_flows")]
    pub min_flows: u64,
    #[serde(default = "default_passive_share")]
    pub syn_retried_share: f64,
    /// A suspect backend takes no new flows (as if down) until a window
    /// without that evidence.
    #[serde(default)]
    pub down: bool,
}

fn default_passive_window_s() -> u64 {
    10
}
fn default_passive_min_flows() -> u64 {
    20
}
fn default_passive_share() -> f64 {
    0.5
}

/// `services.quota`: how many new flows the service may start, and how much
/// of each worker's flow table it may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// New flows per second for the box (each worker admits its share).
    #[serde(default)]
    pub new_flows_per_s: Option<u64>,
    /// New flows admitted at once above the rate (default: a tenth of a
    /// second's worth, at least one per worker).
    #[serde(default)]
    pub new_flows_burst: Option<u64>,
    /// The most of each worker's flow table the service may hold, 0 to 1.
    #[serde(default)]
    pub flow_table_share: Option<f64>,
    /// What happens to a new flow over a limit.
    #[serde(default)]
    pub over_quota: OverQuotaName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverQuotaName {
    /// Dropped and counted.
    #[default]
    Drop,
    /// Sent by the service's hash without a flow-table entry.
    Stateless,
}
