//! The checks of a parsed configuration as a whole: each error names the
//! file, the key and what is wrong.

use std::collections::HashSet;
use std::net::IpAddr;

use super::*;
use crate::balancer::access::{AccessList, Lists};
use crate::control::health::tls::TlsClient;
use crate::control::lcores;
use std::sync::Arc;

impl Config {
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
        if let Some(n) = d.mbuf_data_room.filter(|&n| n < MIN_MBUF_DATA_ROOM) {
            return Err(err(
                "dpdk.mbuf_data_room".into(),
                format!(
                    "{n} bytes is too small: at least {MIN_MBUF_DATA_ROOM} (the 128-byte headroom and a 128-byte frame)"
                ),
            ));
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
            let k = &p.kernel;
            if let Some(n) = &k.name {
                if n.is_empty() || n.len() > MAX_IFNAME || n.contains(['/', ' ', ':']) {
                    return Err(err(
                        key("kernel.name"),
                        format!("`{n}` is not an interface name: 1 to {MAX_IFNAME} characters, no `/`, `:` or space"),
                    ));
                }
            }
            if k.enabled == Some(true) && (p.forward_to.is_some() || self.services.is_empty()) {
                return Err(err(
                    key("kernel.enabled"),
                    "a kernel interface needs l4lb to balance ([[services]]), not plain forwarding".into(),
                ));
            }
            if k.enabled != Some(false)
                && !self.services.is_empty()
                && p.name.len() > MAX_IFNAME
                && k.name.is_none()
            {
                return Err(err(
                    key("kernel.name"),
                    format!(
                        "the port's name `{}` is too long for an interface ({MAX_IFNAME} characters at most): name the kernel interface",
                        p.name
                    ),
                ));
            }
        }
        let mut kernel_names = HashSet::new();
        for i in 0..self.ports.len() {
            if self.ports[i].kernel.punt_unknown_vip_ports && kernel_interface_name(&self, i).is_none() {
                return Err(err(
                    format!("ports[{i}].kernel.punt_unknown_vip_ports"),
                    "needs the port's kernel interface (kernel.enabled, an address, and [[services]])".into(),
                ));
            }
            if let Some(n) = kernel_interface_name(&self, i) {
                if !kernel_names.insert(n) {
                    return Err(err(
                        format!("ports[{i}].kernel.name"),
                        format!("interface `{n}` is used twice"),
                    ));
                }
                if self.dpdk.devices.iter().any(|d| super::tap_interface(d) == Some(n)) {
                    return Err(err(
                        format!("ports[{i}].kernel.name"),
                        format!("`{n}` is also a TAP device in dpdk.devices: name the kernel interface"),
                    ));
                }
            }
        }
        if w.punt_burst == 0 {
            return Err(err("workers.punt_burst".into(), "must be at least 1".into()));
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
        let r = &self.routing;
        if r.table != 0 && (r.table >= 252 && r.table <= 255 || r.table > 0x7fff_ffff) {
            return Err(err(
                "routing.table".into(),
                format!("{} is reserved (252-255: default, main, local) or too large; pick 1-251 or 256-2147483647", r.table),
            ));
        }
        if r.table != 0 && (0..self.ports.len()).all(|i| kernel_interface_name(&self, i).is_none()) {
            return Err(err(
                "routing.table".into(),
                "announcing VIPs needs a port with a kernel interface (its routing daemon's way out)".into(),
            ));
        }
        if r.graceful_shutdown_s > 600 {
            return Err(err("routing.graceful_shutdown_s".into(), "must be at most 600".into()));
        }
        if r.shutdown_drain_s > 3600 {
            return Err(err("routing.shutdown_drain_s".into(), "must be at most 3600".into()));
        }
        if let Some(b) = &self.bgp {
            validate_bgp(&self, b, &err)?;
        }
        if let Some(y) = &self.sync {
            validate_sync(&self, y, &err)?;
        }
        for (i, s) in self.services.iter().enumerate() {
            if s.min_healthy == 0 || s.min_healthy as usize > s.backends.len() {
                return Err(err(
                    format!("services[{i}].min_healthy"),
                    format!("{} must be 1 to the service's {} backends", s.min_healthy, s.backends.len()),
                ));
            }
            if self.bgp.is_none() && s.bgp != ServiceBgp::default() {
                return Err(err(
                    format!("services[{i}].bgp"),
                    "communities and MED are set by l4lb's BIRD: add a [bgp] section, or set them in your routing daemon".into(),
                ));
            }
        }
        validate_services(&self, &err)?;
        let access = access_lists(&self, file, &err)?;
        let tls = tls_clients(&self, file, &err)?;
        Ok(Validated { config: self, lcores, main_lcore, workers, forward, access, tls })
    }
}

/// Each HTTPS-checked service's TLS client, its files read.
fn tls_clients(
    cfg: &Config,
    file: &str,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<Option<TlsClient>>, ConfigError> {
    let dir = Path::new(file).parent().unwrap_or(Path::new("."));
    let mut out = Vec::with_capacity(cfg.services.len());
    for (i, s) in cfg.services.iter().enumerate() {
        out.push(match &s.health {
            Some(h) if h.check == CheckKind::Https => Some(
                TlsClient::new(&h.tls, dir)
                    .map_err(|(k, why)| err(format!("services[{i}].health.tls.{k}"), why))?,
            ),
            _ => None,
        });
    }
    Ok(out)
}

/// Each service's access list (`[access]` with its own), files read.
fn access_lists(
    cfg: &Config,
    file: &str,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<Option<Arc<AccessList>>>, ConfigError> {
    let global = lists(&cfg.access, "access", file, err)?;
    let mut out = Vec::with_capacity(cfg.services.len());
    for (i, s) in cfg.services.iter().enumerate() {
        let own = lists(&s.access, &format!("services[{i}].access"), file, err)?;
        out.push(AccessList::build(&global, &own).map(Arc::new));
    }
    Ok(out)
}

/// The largest access-list file read (about 2.5 million prefixes).
const MAX_LIST_FILE_BYTES: u64 = 64 << 20;
/// The smallest `dpdk.mbuf_data_room`: DPDK's headroom and a 128-byte frame.
const MIN_MBUF_DATA_ROOM: u16 = 256;

/// One `access` table's lists, with its files' prefixes.
fn lists(
    a: &AccessSection,
    key: &str,
    file: &str,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<Lists, ConfigError> {
    if a.allow.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            format!("{key}.allow"),
            "an empty allow list refuses every client: remove the key to allow everyone not denied".into(),
        ));
    }
    let read = |name: &str, path: &str| -> Result<Vec<Prefix>, ConfigError> {
        let at = Path::new(file).parent().unwrap_or(Path::new(".")).join(path);
        let cannot =
            |why: String| err(format!("{key}.{name}"), format!("cannot read {}: {why}", at.display()));
        // A regular file of bounded size: a device or a FIFO named here
        // would hang `l4lb check` or a reload, or fill the memory.
        let meta = std::fs::metadata(&at).map_err(|e| cannot(e.to_string()))?;
        if !meta.is_file() {
            return Err(cannot("not a regular file".into()));
        }
        if meta.len() > MAX_LIST_FILE_BYTES {
            return Err(cannot(format!("{} bytes, more than {MAX_LIST_FILE_BYTES}", meta.len())));
        }
        let text = std::fs::read_to_string(&at).map_err(|e| cannot(e.to_string()))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let p = line
                .parse::<Prefix>()
                .map_err(|e| err(format!("{key}.{name}"), format!("{}:{}: {e}", at.display(), n + 1)))?;
            out.push(p);
        }
        Ok(out)
    };
    let mut l = Lists { allow: a.allow.clone(), deny: a.deny.clone() };
    if let Some(f) = &a.allow_file {
        l.allow.get_or_insert_with(Vec::new).extend(read("allow_file", f)?);
    }
    if let Some(f) = &a.deny_file {
        l.deny.extend(read("deny_file", f)?);
    }
    Ok(l)
}

fn validate_bgp(
    cfg: &Config,
    b: &BgpSection,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if cfg.routing.table == 0 {
        return Err(err(
            "routing.table".into(),
            "[bgp] announces the VIPs l4lb keeps in this kernel table: set it (e.g. 100)".into(),
        ));
    }
    if b.local_as == 0 {
        return Err(err("bgp.local_as".into(), "AS 0 is reserved; use your AS number".into()));
    }
    if bgp_router_id(cfg).is_none() {
        return Err(err(
            "bgp.router_id".into(),
            "no port has an IPv4 address to take it from: set it".into(),
        ));
    }
    if b.hold_time_s != 0 && b.hold_time_s < 3 {
        return Err(err("bgp.hold_time_s".into(), "must be 0 (off) or at least 3 (RFC 4271)".into()));
    }
    if b.connect_retry_s == 0 {
        return Err(err("bgp.connect_retry_s".into(), "must be at least 1".into()));
    }
    if let Some(f) = &b.bfd {
        if !(10..=10_000).contains(&f.interval_ms) {
            return Err(err("bgp.bfd.interval_ms".into(), format!("{} must be 10 to 10000", f.interval_ms)));
        }
        if !(1..=255).contains(&f.multiplier) {
            return Err(err("bgp.bfd.multiplier".into(), format!("{} must be 1 to 255", f.multiplier)));
        }
    }
    if b.bird.is_empty() {
        return Err(err("bgp.bird".into(), "names no program".into()));
    }
    if b.peers.is_empty() {
        return Err(err("bgp.peers".into(), "lists no peer: add the routers as [[bgp.peers]]".into()));
    }
    let mut names = HashSet::new();
    for (i, p) in b.peers.iter().enumerate() {
        let name = p.name(i);
        if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(
                format!("bgp.peers[{i}].name"),
                format!("`{name}`: use 1-32 letters, digits or _"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(err(format!("bgp.peers[{i}].name"), format!("`{name}` is used twice")));
        }
        if p.remote_as == 0 {
            return Err(err(format!("bgp.peers[{i}].remote_as"), "AS 0 is reserved".into()));
        }
        if p.port == 0 {
            return Err(err(format!("bgp.peers[{i}].port"), "must be 1-65535".into()));
        }
        if p.multihop == Some(0) {
            return Err(err(format!("bgp.peers[{i}].multihop"), "a TTL of at least 1".into()));
        }
        if p.password.as_deref().is_some_and(|w| w.is_empty() || w.contains(['"', '\\', '\n'])) {
            return Err(err(
                format!("bgp.peers[{i}].password"),
                "must be non-empty, without quotes, backslashes or newlines".into(),
            ));
        }
        if peer_source(cfg, p).is_none() {
            let why = if p.multihop.is_some() {
                format!(
                    "no port with a kernel interface has an {} address to reach {} from",
                    family(p.address),
                    p.address
                )
            } else {
                format!(
                    "{} is on no subnet of a port with a kernel interface; set multihop for a peer further away",
                    p.address
                )
            };
            return Err(err(format!("bgp.peers[{i}].address"), why));
        }
    }
    Ok(())
}

fn validate_sync(
    cfg: &Config,
    y: &SyncSection,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let own: Vec<IpAddr> = cfg
        .ports
        .iter()
        .flat_map(|p| [p.ipv4.map(|c| IpAddr::V4(c.addr)), p.ipv6.map(|c| IpAddr::V6(c.addr))])
        .flatten()
        .collect();
    let mut seen = HashSet::new();
    for (i, a) in y.peers.iter().enumerate() {
        if own.contains(a) {
            return Err(err(format!("sync.peers[{i}]"), format!("{a} is this box's own address")));
        }
        if !seen.insert(a) {
            return Err(err(format!("sync.peers[{i}]"), format!("{a} is listed twice")));
        }
        if let Some(l) = y.listen {
            if l == *a {
                return Err(err(format!("sync.peers[{i}]"), format!("{a} is sync.listen, this box's own")));
            }
            if l.is_ipv4() != a.is_ipv4() {
                return Err(err(
                    format!("sync.peers[{i}]"),
                    format!("{a} is {} but sync.listen {l} is {}", family(*a), family(l)),
                ));
            }
        }
    }
    if y.port == 0 {
        return Err(err("sync.port".into(), "must be 1-65535".into()));
    }
    if y.capacity == 0 || y.capacity > 1 << 24 {
        return Err(err("sync.capacity".into(), "must be 1 to 16777216".into()));
    }
    if y.queue == 0 || y.queue > 1 << 24 {
        return Err(err("sync.queue".into(), "must be 1 to 16777216".into()));
    }
    if y.warmup_timeout_s > 600 {
        return Err(err("sync.warmup_timeout_s".into(), "must be at most 600".into()));
    }
    Ok(())
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// `[bgp] router_id`, or the first port's IPv4 address.
pub fn bgp_router_id(cfg: &Config) -> Option<std::net::Ipv4Addr> {
    cfg.bgp.as_ref()?.router_id.or_else(|| cfg.ports.iter().find_map(|p| p.ipv4.map(|c| c.addr)))
}

/// The address and kernel interface a BGP session to `peer` leaves from:
/// the port whose subnet holds the peer (a multihop peer: the first port of
/// its family), among ports with a kernel interface.
pub fn peer_source<'c>(cfg: &'c Config, peer: &PeerSection) -> Option<(IpAddr, &'c str)> {
    let within = |addr: IpAddr, prefix_len: u8| -> bool {
        let (a, b, bits) = match (addr, peer.address) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32u32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
            _ => return false,
        };
        let host = bits - prefix_len as u32;
        host >= bits || (a >> host) == (b >> host)
    };
    let candidates = cfg.ports.iter().enumerate().filter_map(|(i, p)| {
        let dev = kernel_interface_name(cfg, i)?;
        let addr = if peer.address.is_ipv4() {
            p.ipv4.map(|c| (IpAddr::V4(c.addr), c.prefix_len))
        } else {
            p.ipv6.map(|c| (IpAddr::V6(c.addr), c.prefix_len))
        }?;
        Some((addr, dev))
    });
    let mut first = None;
    for ((addr, len), dev) in candidates {
        if within(addr, len) && addr != peer.address {
            return Some((addr, dev));
        }
        first.get_or_insert((addr, dev));
    }
    if peer.multihop.is_some() {
        first
    } else {
        None
    }
}

/// The kernel interface port `i` gets, if any: on by default when the port
/// has an address and l4lb balances (plain forwarding has no management
/// core to carry it).
pub fn kernel_interface_name(cfg: &Config, i: usize) -> Option<&str> {
    let p = cfg.ports.get(i)?;
    let has_address = p.ipv4.is_some() || p.ipv6.is_some();
    let on = p.kernel.enabled.unwrap_or(has_address) && !cfg.services.is_empty() && p.forward_to.is_none();
    on.then(|| p.kernel.name.as_deref().unwrap_or(&p.name))
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
        if s.response_time == ResponseTime::Handshake && s.protocol != Protocol::Tcp {
            return Err(err(
                key("response_time"),
                "`handshake` is measured on TCP handshakes: a TCP service only".into(),
            ));
        }
        if let Some(p) = &s.passive_health {
            let pkey = |k: &str| format!("services[{i}].passive_health.{k}");
            if !(1..=3600).contains(&p.window_s) {
                return Err(err(pkey("window_s"), "must be 1 to 3600".into()));
            }
            if !(1..=1_000_000_000).contains(&p.min_flows) {
                return Err(err(pkey("min_flows"), "must be 1 to 1000000000".into()));
            }
            if !(p.syn_retried_share > 0.0 && p.syn_retried_share <= 1.0) {
                return Err(err(pkey("syn_retried_share"), "must be above 0 and at most 1".into()));
            }
            if s.protocol != Protocol::Tcp {
                return Err(err(
                    pkey("window_s"),
                    "passive health judges TCP handshakes: a TCP service only".into(),
                ));
            }
        }
        if let Some(q) = &s.quota {
            validate_quota(q, s, &|k: &str| format!("services[{i}].quota.{k}"), err)?;
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
            if !matches!(h.check, CheckKind::Icmp | CheckKind::Command) && h.port.unwrap_or(s.port) == 0 {
                return Err(err(
                    hkey("port"),
                    "the service serves every port (port = 0): say which port to check".into(),
                ));
            }
            if h.check.is_http() {
                if !h.path.starts_with('/') || h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err(hkey("path"), "must start with `/` and contain no spaces".into()));
                }
                if h.expect_status.0.is_empty() || h.expect_status.0.iter().any(|c| !(100..=599).contains(c))
                {
                    return Err(err(
                        hkey("expect_status"),
                        "must be an HTTP status or a list of them, each 100 to 599".into(),
                    ));
                }
                if h.host.as_ref().is_some_and(|x| x.is_empty() || x.chars().any(|c| c.is_whitespace())) {
                    return Err(err(hkey("host"), "must be a host name without spaces".into()));
                }
            }
            super::policies::validate_via(cfg, s).map_err(|why| err(hkey("via"), why))?;
            if h.check == CheckKind::Udp && h.send.is_empty() {
                return Err(err(hkey("send"), "a UDP check needs a datagram to send".into()));
            }
            // Keys of one kind set on a check of another are mistakes.
            let stray = [
                ("expect_body", h.expect_body.is_some() && !h.check.is_http()),
                ("tls", h.tls != TlsSection::default() && h.check != CheckKind::Https),
                ("command", !h.command.is_empty() && h.check != CheckKind::Command),
            ];
            if let Some((k, _)) = stray.iter().find(|(_, bad)| *bad) {
                return Err(err(hkey(k), format!("does not apply to a `{}` check", h.check.name())));
            }
            if h.check == CheckKind::Command {
                match h.command.first() {
                    None => return Err(err(
                        hkey("command"),
                        "a command check needs the program to run: command = [\"/path/to/check\", \"arg\"]"
                            .into(),
                    )),
                    Some(p) if !p.starts_with('/') => {
                        return Err(err(
                            hkey("command"),
                            format!(
                                "`{p}`: give the program's absolute path (it is run without a shell or PATH)"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
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

/// `services.quota`: at least one limit, each in range; stateless sending
/// only where the scheduler's choice is a hash of the packet.
fn validate_quota(
    q: &QuotaSection,
    s: &ServiceSection,
    key: &dyn Fn(&str) -> String,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if q.new_flows_per_s.is_none() && q.flow_table_share.is_none() {
        return Err(err(
            key("new_flows_per_s"),
            "the quota sets no limit: give new_flows_per_s, flow_table_share or both".into(),
        ));
    }
    if let Some(r) = q.new_flows_per_s {
        if !(1..=1_000_000_000).contains(&r) {
            return Err(err(key("new_flows_per_s"), "must be 1 to 1000000000".into()));
        }
    }
    match (q.new_flows_burst, q.new_flows_per_s) {
        (Some(_), None) => {
            return Err(err(
                key("new_flows_burst"),
                "needs new_flows_per_s (the rate it is a burst of)".into(),
            ))
        }
        (Some(b), Some(_)) if !(1..=1_000_000_000).contains(&b) => {
            return Err(err(key("new_flows_burst"), "must be 1 to 1000000000".into()))
        }
        _ => {}
    }
    if let Some(f) = q.flow_table_share {
        if !(f > 0.0 && f <= 1.0) {
            return Err(err(key("flow_table_share"), format!("{f} is not a share above 0 and at most 1")));
        }
        if f < 0.001 {
            return Err(err(key("flow_table_share"), "must be at least 0.001 (a thousandth)".into()));
        }
    }
    if q.over_quota == OverQuotaName::Stateless {
        if !matches!(s.scheduler, SchedulerName::Maglev | SchedulerName::SourceIp) {
            return Err(err(
                key("over_quota"),
                "`stateless` needs a hashing scheduler (maglev or source-ip): any other would send each \
                 packet of an untracked flow somewhere else"
                    .into(),
            ));
        }
        if s.persistence_s > 0 {
            return Err(err(
                key("over_quota"),
                "`stateless` cannot keep persistence (persistence_s): an untracked flow's packets would \
                 ignore the client's entry"
                    .into(),
            ));
        }
    }
    Ok(())
}
