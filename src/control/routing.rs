//! Which VIPs the box announces, kept as routes in a kernel routing table of
//! l4lb's namespace (`[routing] table`) for a routing daemon to export by BGP:
//! BIRD's `kernel` protocol with `learn` reads such a table, FRR's
//! `ip import-table` likewise. l4lb decides; the daemon speaks BGP.
//!
//! A VIP is in the table while its service has at least `min_healthy`
//! backends taking new flows in the forwarding state in force (up, weight
//! above 0, not draining) and, where the service has health checks, checked
//! at least once. Each route goes through the kernel interface of
//! the service's egress port, so if l4lb dies the interface goes with it, the
//! kernel drops the routes and the daemon withdraws them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use crate::balancer::state::ForwardingState;
use crate::control::config::{AnnouncePolicy, Config, GRACEFUL_SHUTDOWN_PROTO};

/// Each VIP's announcement: the interface its route goes through when
/// announced, its services, and why it is (not) announced.
#[derive(Debug, Clone, PartialEq)]
pub struct VipDecision {
    pub dev: Option<String>,
    pub services: Vec<String>,
    pub reason: String,
}

/// Every VIP with what it should be now. `checked(service, backend)`:
/// whether the backend's health is known — a service with health checks
/// counts only checked backends, so a box that starts is not announced
/// before its checks have run (it would draw traffic it might black-hole).
/// A VIP of several services is announced while any of them wants it.
pub fn decide(
    st: &ForwardingState,
    cfg: &Config,
    checked: &dyn Fn(&str, IpAddr) -> bool,
) -> BTreeMap<IpAddr, VipDecision> {
    let mut out: BTreeMap<IpAddr, VipDecision> = BTreeMap::new();
    for s in &cfg.services {
        let d = out.entry(s.vip).or_insert_with(|| VipDecision {
            dev: None,
            services: Vec::new(),
            reason: String::new(),
        });
        d.services.push(s.name.clone());
        if d.dev.is_some() {
            continue;
        }
        let taking = st.services.iter().find(|v| v.name == s.name).map_or(0, |svc| {
            svc.backends
                .iter()
                .map(|&b| &st.backends[b as usize])
                .filter(|b| b.takes_new_flows() && (s.health.is_none() || checked(&s.name, b.addr)))
                .count()
        });
        let (yes, why) = match s.announce {
            AnnouncePolicy::Never => (false, format!("service {}: announce = \"never\"", s.name)),
            AnnouncePolicy::Always => (true, format!("service {}: announce = \"always\"", s.name)),
            AnnouncePolicy::Healthy => (
                taking >= s.min_healthy as usize,
                format!(
                    "service {}: {taking} of {} backends take new flows (min_healthy {})",
                    s.name,
                    s.backends.len(),
                    s.min_healthy
                ),
            ),
        };
        if !d.reason.is_empty() {
            d.reason.push_str("; ");
        }
        d.reason.push_str(&why);
        if yes {
            let egress =
                s.egress.as_ref().and_then(|e| cfg.ports.iter().position(|p| &p.name == e)).unwrap_or(0);
            match crate::control::config::kernel_interface_name(cfg, egress) {
                Some(dev) => {
                    d.dev = Some(dev.to_owned());
                    d.reason = why;
                }
                None => d.reason.push_str(" (its port has no kernel interface)"),
            }
        }
    }
    out
}

/// The VIPs to announce now, each with the interface its route goes
/// through and a line saying why (for the log).
pub fn wanted(
    st: &ForwardingState,
    cfg: &Config,
    checked: &dyn Fn(&str, IpAddr) -> bool,
) -> BTreeMap<IpAddr, (String, String)> {
    decide(st, cfg, checked).into_iter().filter_map(|(vip, d)| Some((vip, (d.dev?, d.reason)))).collect()
}

/// The routes l4lb has put in the table.
pub struct Announcer {
    table: u32,
    announced: BTreeMap<IpAddr, String>,
    /// The routes carry the GRACEFUL_SHUTDOWN mark.
    graceful: bool,
}

impl Announcer {
    /// Starts from an empty table (routes a previous run left are removed).
    pub fn new(table: u32) -> Announcer {
        let a = Announcer { table, announced: BTreeMap::new(), graceful: false };
        for family in ["-4", "-6"] {
            let _ = a.ip(&[family, "route", "flush", "table", &table.to_string()]);
        }
        a
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out =
            Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn route(vip: &IpAddr) -> String {
        match vip {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        }
    }

    /// Makes the table hold exactly `want`; logs each change.
    pub fn apply(&mut self, want: &BTreeMap<IpAddr, (String, String)>) {
        let table = self.table.to_string();
        let gone: Vec<IpAddr> = self.announced.keys().filter(|v| !want.contains_key(v)).copied().collect();
        for vip in gone {
            let r = Self::route(&vip);
            match self.ip(&["route", "del", &r, "table", &table]) {
                Ok(()) => log::warn!("routing: withdrawing {vip}"),
                Err(e) => log::warn!("routing: withdrawing {vip}: {e}"),
            }
            self.announced.remove(&vip);
        }
        for (vip, (dev, why)) in want {
            if self.announced.get(vip) == Some(dev) {
                continue;
            }
            let r = Self::route(vip);
            match self.put(&r, dev) {
                Ok(()) => {
                    log::info!("routing: announcing {vip} via {dev} in table {table} ({why})");
                    self.announced.insert(*vip, dev.clone());
                }
                Err(e) => log::warn!("routing: announcing {vip}: {e}"),
            }
        }
    }

    /// `ip route replace` of one VIP's route: `proto static` (a route
    /// another tool made, which BIRD's `learn` imports), or the
    /// GRACEFUL_SHUTDOWN protocol number while marked.
    fn put(&self, route: &str, dev: &str) -> Result<(), String> {
        let proto = if self.graceful { GRACEFUL_SHUTDOWN_PROTO.to_string() } else { "static".to_owned() };
        let table = self.table.to_string();
        self.ip(&["route", "replace", route, "dev", dev, "table", &table, "proto", &proto])
    }

    /// Marks every announced route GRACEFUL_SHUTDOWN (RFC 8326), in place:
    /// l4lb's BIRD adds the community 65535:0, and routers that honour it
    /// prefer other paths before the withdrawal.
    pub fn mark_graceful_shutdown(&mut self) {
        self.graceful = true;
        for (vip, dev) in &self.announced {
            match self.put(&Self::route(vip), dev) {
                Ok(()) => log::info!("routing: {vip} marked GRACEFUL_SHUTDOWN"),
                Err(e) => log::warn!("routing: marking {vip}: {e}"),
            }
        }
    }

    /// Ends the mark (a drain undone): routes still in the table are put
    /// back as `proto static`.
    pub fn clear_graceful_shutdown(&mut self) {
        if !std::mem::take(&mut self.graceful) {
            return;
        }
        for (vip, dev) in &self.announced {
            if let Err(e) = self.put(&Self::route(vip), dev) {
                log::warn!("routing: unmarking {vip}: {e}");
            }
        }
    }

    /// The VIPs in the table now.
    pub fn announced(&self) -> impl Iterator<Item = &IpAddr> {
        self.announced.keys()
    }

    /// Takes every route out (at the stop).
    pub fn withdraw_all(&mut self) {
        self.apply(&BTreeMap::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state_build::{build_state, simulated_facts};

    const CONFIG: &str = r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"

[[services]]
name = "checked"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
min_healthy = 2
health = { check = "tcp" }
backends = [{ address = "198.18.0.11", mac = "02:00:00:00:0b:11" }, { address = "198.18.0.12", mac = "02:00:00:00:0b:12" }]

[[services]]
name = "unchecked"
vip = "198.18.100.2"
protocol = "tcp"
port = 80
backends = [{ address = "198.18.0.21", mac = "02:00:00:00:0b:21" }]
"#;

    #[test]
    fn a_vip_needs_min_healthy_checked_backends_and_unchecked_services_need_none() {
        let cfg = Config::parse(CONFIG, "t.toml").unwrap().validate("t.toml").unwrap();
        let st = build_state(&cfg, 1, &simulated_facts(&cfg)).unwrap();
        let vips = |checked: &dyn Fn(&str, IpAddr) -> bool| -> Vec<String> {
            wanted(&st, &cfg.config, checked).keys().map(|v| v.to_string()).collect()
        };
        assert_eq!(vips(&|_, _| false), ["198.18.100.2"], "before the checks ran");
        assert_eq!(vips(&|_, a| a.to_string() == "198.18.0.11"), ["198.18.100.2"], "one of two checked");
        assert_eq!(vips(&|_, _| true), ["198.18.100.1", "198.18.100.2"]);
        let (dev, why) = &wanted(&st, &cfg.config, &|_, _| true)[&"198.18.100.1".parse().unwrap()];
        assert_eq!(dev, "lan");
        assert!(why.contains("2 of 2 backends"), "{why}");
    }
}
