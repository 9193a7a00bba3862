//! A configuration that passed every check, and what l4lb derives from it:
//! queues, EAL's arguments, the packet pool's size, the control socket, the
//! checks that need the machine (its CPUs, a device's MTU).

use std::sync::Arc;

use crate::balancer::access::AccessList;
use crate::control::lcores::{self, LcoreMap};

use super::{Config, ForwardingMode, KernelDriver, PortSection, ServiceSection};

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
    /// For each service, who may open flows to it (`[access]` and its own;
    /// None: everyone).
    pub access: Vec<Option<Arc<AccessList>>>,
    /// For each service checked over HTTPS, its checks' TLS client.
    pub tls: Vec<Option<crate::control::health::tls::TlsClient>>,
}

impl Validated {
    pub fn rx_queues(&self, port: usize) -> u16 {
        self.config.ports[port].rx_queues.unwrap_or(self.workers.len() as u16)
    }

    pub fn tx_queues(&self, port: usize) -> u16 {
        self.config.ports[port].tx_queues.unwrap_or(self.workers.len() as u16)
    }

    /// The ports' kernel interfaces (the exception path), by port.
    pub fn kernel_interfaces(&self) -> Vec<KernelInterface> {
        (0..self.config.ports.len())
            .filter_map(|i| {
                let name = super::validate::kernel_interface_name(&self.config, i)?;
                let driver = match self.config.ports[i].kernel.driver {
                    KernelDriver::Auto if std::path::Path::new(VHOST_NET).exists() => {
                        KernelDriver::VirtioUser
                    }
                    KernelDriver::Auto => KernelDriver::Tap,
                    d => d,
                };
                Some(KernelInterface { port: i, name: name.to_owned(), driver })
            })
            .collect()
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
        for k in self.kernel_interfaces() {
            a.extend(["--vdev".into(), k.vdev()]);
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

    /// Why packet buffers of `dpdk.mbuf_data_room` cannot hold a full-size
    /// frame of some port (`mtus` by port index, as in [`Self::mtu_problem`]),
    /// if they cannot: such frames are dropped. None without the key.
    pub fn mbuf_room_problem(&self, mtus: &[u16]) -> Option<String> {
        let room = self.config.dpdk.mbuf_data_room?;
        let fits = room.saturating_sub(MBUF_HEADROOM);
        self.config.ports.iter().zip(mtus).find_map(|(p, &mtu)| {
            let frame = mtu as u32 + ETHERNET_VLAN_HEADER;
            (frame > fits as u32).then(|| {
                format!(
                    "dpdk.mbuf_data_room: {room} bytes hold frames of up to {fits} bytes, but port `{}` (MTU {mtu}) \
                     takes frames of {frame}: longer frames than {fits} bytes are dropped",
                    p.name
                )
            })
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

    /// Each packet buffer's data room, headroom included (`dpdk.mbuf_data_room`);
    /// None: DPDK's default.
    pub fn mbuf_data_room(&self) -> Option<u16> {
        self.config.dpdk.mbuf_data_room
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
        // Each kernel interface's RX ring, and the packets in flight to it
        // (the punt rings of every worker).
        let punt_rings = self.workers.len() as u64 * (PUNT_RING_HIGH + PUNT_RING_LOW) as u64;
        n += self.kernel_interfaces().len() as u64 * (KERNEL_DESC as u64 * 2 + punt_rings);
        // A power of two minus one is the most memory-efficient mempool size.
        (n.next_power_of_two() - 1).min(u32::MAX as u64) as u32
    }
}

/// The kernel's vhost-net device (`virtio_user` needs it).
pub const VHOST_NET: &str = "/dev/vhost-net";
/// Descriptors of a kernel interface's RX and TX rings.
pub const KERNEL_DESC: u16 = 512;
/// Packets each worker may hold for the kernel: control-plane packets
/// (BGP, BFD, ARP, NDP) and the rest.
pub const PUNT_RING_HIGH: usize = 256;
pub const PUNT_RING_LOW: usize = 1024;

/// A port's kernel interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInterface {
    /// The port's index.
    pub port: usize,
    pub name: String,
    /// Tap or virtio-user (`auto` resolved on this machine).
    pub driver: KernelDriver,
}

impl KernelInterface {
    /// The DPDK device that makes it (`--vdev`).
    pub fn device(&self) -> String {
        match self.driver {
            KernelDriver::VirtioUser => format!("virtio_user_k{}", self.port),
            _ => format!("net_tap_k{}", self.port),
        }
    }

    fn vdev(&self) -> String {
        match self.driver {
            KernelDriver::VirtioUser => {
                format!(
                    "{},path={VHOST_NET},queues=1,queue_size={KERNEL_DESC},iface={}",
                    self.device(),
                    self.name
                )
            }
            _ => format!("{},iface={}", self.device(), self.name),
        }
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

/// DPDK's headroom at the front of each packet buffer (`RTE_PKTMBUF_HEADROOM`).
const MBUF_HEADROOM: u16 = 128;
/// An Ethernet header with one VLAN tag, on top of the MTU.
const ETHERNET_VLAN_HEADER: u32 = 18;
