use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

use super::queue::{RxQueue, TxQueue};
use super::{DpdkError, Eal, Mempool};

/// How to bring up a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Descriptors per RX queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Descriptors per TX queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// MTU to set, or `None` to keep the device's.
    pub mtu: Option<u16>,
    /// Receive every frame, not only those to the port's MAC.
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { rx_queues: 1, tx_queues: 1, rx_desc: 1024, tx_desc: 1024, mtu: None, promiscuous: true }
    }
}

/// What a device can do, from `rte_eth_dev_info_get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (RTE_ETH_RSS_* bits); 0: no RSS.
    pub rss_offloads: u64,
    pub min_mtu: u16,
    pub max_mtu: u16,
}

/// Link state, from `rte_eth_link_get_nowait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic counters, from `rte_eth_stats_get`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the device because RX queues were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures because the mempool was empty.
    pub rx_no_mbuf: u64,
}

/// A configured ethdev port. Stopped and closed on drop. Hands out each of its
/// queues once; the queues borrow the port, so they cannot outlive it.
pub struct Port {
    id: u16,
    info: PortInfo,
    rss_hf: u64,
    started: bool,
    rx_taken: Vec<AtomicBool>,
    tx_taken: Vec<AtomicBool>,
    _pool: Mempool,
    _eal: Eal,
}

impl Port {
    /// Finds a port by device name (`net_tap0`, `0000:01:00.0`).
    pub fn id_by_name(_eal: &Eal, name: &str) -> Result<u16, DpdkError> {
        let op = || format!("rte_eth_dev_get_port_by_name({name})");
        let cname = CString::new(name).map_err(|_| DpdkError::invalid(op(), "name contains NUL"))?;
        let mut id = 0u16;
        // SAFETY: EAL is initialised; `cname` is a valid C string and `id` a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        DpdkError::check(op, ret)?;
        Ok(id)
    }

    /// Reads a port's capabilities without configuring it.
    pub fn info_of(_eal: &Eal, id: u16) -> Result<PortInfo, DpdkError> {
        // SAFETY: rte_eth_dev_info is plain data; zero is a valid initial value.
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: EAL is initialised; `info` is a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        DpdkError::check(|| format!("rte_eth_dev_info_get(port {id})"), ret)?;
        let mut name = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: the buffer has RTE_ETH_NAME_MAX_LEN bytes as the API requires.
        let ret = unsafe { sys::rte_eth_dev_get_name_by_port(id, name.as_mut_ptr()) };
        DpdkError::check(|| format!("rte_eth_dev_get_name_by_port({id})"), ret)?;
        // SAFETY: DPDK NUL-terminates the name; driver_name is a static C string.
        let (name, driver) = unsafe {
            (
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                if info.driver_name.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(info.driver_name).to_string_lossy().into_owned()
                },
            )
        };
        Ok(PortInfo {
            name,
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
        })
    }

    /// Configures port `id`: queues (RSS over the RX queues when there are
    /// several and the device supports it), descriptors, MTU, promiscuous mode.
    /// RX queues take buffers from `pool`. The port is left stopped.
    pub fn configure(eal: &Eal, id: u16, cfg: &PortConfig, pool: &Mempool) -> Result<Port, DpdkError> {
        let info = Self::info_of(eal, id)?;
        let op = |what: &str| format!("{what}(port {id} {})", info.name);
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 {
            return Err(DpdkError::invalid(op("configure"), "a port needs at least one RX and one TX queue"));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::invalid(
                op("configure"),
                format!(
                    "{} RX / {} TX queues asked, device {} allows {} / {}",
                    cfg.rx_queues, cfg.tx_queues, info.driver, info.max_rx_queues, info.max_tx_queues
                ),
            ));
        }
        // SAFETY: rte_eth_conf is plain data; all-zero is its documented default.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        let wanted = sys::consts::eth_rss_ip() | sys::consts::eth_rss_tcp() | sys::consts::eth_rss_udp();
        let rss_hf = if cfg.rx_queues > 1 { wanted & info.rss_offloads } else { 0 };
        if rss_hf != 0 {
            conf.rxmode.mq_mode = sys::consts::eth_mq_rx_rss() as _;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: EAL is initialised and `conf` is a valid configuration.
        let ret = unsafe { sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        DpdkError::check(|| op("rte_eth_dev_configure"), ret)?;

        let (mut nb_rx, mut nb_tx) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid out pointers.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rx, &mut nb_tx) };
        DpdkError::check(|| op("rte_eth_dev_adjust_nb_rx_tx_desc"), ret)?;
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            // SAFETY: the port is configured; a null rxconf means device defaults;
            // the pool outlives the port (the port holds a clone).
            let ret =
                unsafe { sys::rte_eth_rx_queue_setup(id, q, nb_rx, socket, std::ptr::null(), pool.as_ptr()) };
            DpdkError::check(|| op(&format!("rte_eth_rx_queue_setup[{q}]")), ret)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above, null txconf means device defaults.
            let ret = unsafe { sys::rte_eth_tx_queue_setup(id, q, nb_tx, socket, std::ptr::null()) };
            DpdkError::check(|| op(&format!("rte_eth_tx_queue_setup[{q}]")), ret)?;
        }
        let port = Port {
            id,
            info,
            rss_hf,
            started: false,
            rx_taken: (0..cfg.rx_queues).map(|_| AtomicBool::new(false)).collect(),
            tx_taken: (0..cfg.tx_queues).map(|_| AtomicBool::new(false)).collect(),
            _pool: pool.clone(),
            _eal: eal.clone(),
        };
        if let Some(mtu) = cfg.mtu {
            port.set_mtu(mtu)?;
        }
        if cfg.promiscuous {
            // SAFETY: configured port. Some virtual devices have no promiscuous
            // control (they receive everything anyway), so failure is not fatal.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        Ok(port)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// RSS hash types enabled on this port (0: RSS off).
    pub fn rss_hf(&self) -> u64 {
        self.rss_hf
    }

    pub fn rx_queue_count(&self) -> u16 {
        self.rx_taken.len() as u16
    }

    pub fn tx_queue_count(&self) -> u16 {
        self.tx_taken.len() as u16
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: the port is configured with all its queues set up.
        let ret = unsafe { sys::rte_eth_dev_start(self.id) };
        DpdkError::check(|| format!("rte_eth_dev_start(port {} {})", self.id, self.info.name), ret)?;
        self.started = true;
        Ok(())
    }

    /// Stops the port. Takes `&mut self`, so no queue of it is in use.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        // SAFETY: the port is started and no queue handle exists (they borrow self).
        let ret = unsafe { sys::rte_eth_dev_stop(self.id) };
        self.started = false;
        DpdkError::check(|| format!("rte_eth_dev_stop(port {})", self.id), ret)?;
        Ok(())
    }

    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port, valid out pointer.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) };
        DpdkError::check(|| format!("rte_eth_macaddr_get(port {})", self.id), ret)?;
        Ok(addr.addr_bytes)
    }

    /// Sets the port's MAC address (the device's default unicast address).
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut addr = sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port; `addr` is a valid in pointer for the call.
        let ret = unsafe { sys::rte_eth_dev_default_mac_addr_set(self.id, &mut addr) };
        DpdkError::check(|| format!("rte_eth_dev_default_mac_addr_set(port {})", self.id), ret)?;
        Ok(())
    }

    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;
        // SAFETY: valid port, valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_get_mtu(self.id, &mut mtu) };
        DpdkError::check(|| format!("rte_eth_dev_get_mtu(port {})", self.id), ret)?;
        Ok(mtu)
    }

    pub fn set_mtu(&self, mtu: u16) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        let ret = unsafe { sys::rte_eth_dev_set_mtu(self.id, mtu) };
        DpdkError::check(|| format!("rte_eth_dev_set_mtu(port {}, {mtu})", self.id), ret)?;
        Ok(())
    }

    pub fn link(&self) -> Result<Link, DpdkError> {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid port, valid out pointer.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        DpdkError::check(|| format!("rte_eth_link_get_nowait(port {})", self.id), ret)?;
        Ok(Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port, valid out pointer.
        let ret = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        DpdkError::check(|| format!("rte_eth_stats_get(port {})", self.id), ret)?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        })
    }

    pub fn reset_stats(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        let ret = unsafe { sys::rte_eth_stats_reset(self.id) };
        DpdkError::check(|| format!("rte_eth_stats_reset(port {})", self.id), ret)?;
        Ok(())
    }

    /// Every extended counter the driver reports, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let op = || format!("rte_eth_xstats_get(port {})", self.id);
        // SAFETY: a null buffer with size 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        let n = DpdkError::check(op, n)? as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: both buffers hold `n` entries.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got_values = unsafe { sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32) };
        DpdkError::check(op, got_names)?;
        DpdkError::check(op, got_values)?;
        let count = (got_names as usize).min(got_values as usize).min(n);
        Ok(values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates xstat names within the fixed buffer.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }

    /// Takes RX queue `q`; each queue can be taken once.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue<'_>, DpdkError> {
        take(&self.rx_taken, q, || format!("rx queue {q} of port {}", self.id))?;
        Ok(RxQueue::new(self.id, q))
    }

    /// Takes TX queue `q` with a buffer drained at least every `drain_tsc`
    /// TSC ticks; each queue can be taken once.
    pub fn tx_queue(&self, q: u16, drain_tsc: u64) -> Result<TxQueue<'_>, DpdkError> {
        take(&self.tx_taken, q, || format!("tx queue {q} of port {}", self.id))?;
        Ok(TxQueue::new(self.id, q, drain_tsc))
    }
}

fn take(slots: &[AtomicBool], q: u16, what: impl FnOnce() -> String) -> Result<(), DpdkError> {
    match slots.get(q as usize) {
        None => Err(DpdkError::invalid(what(), "no such queue")),
        Some(s) if s.swap(true, Ordering::AcqRel) => Err(DpdkError::invalid(what(), "queue already taken")),
        Some(_) => Ok(()),
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.stop();
        // SAFETY: the port is stopped and no queue borrows it any more.
        unsafe {
            sys::rte_eth_dev_close(self.id);
        }
    }
}
