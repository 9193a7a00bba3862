//! What the management side knows about each backend beyond the file: its
//! stable id, health, drain, weight override and slow start; and how that
//! becomes the next forwarding state. Pure logic with time passed in, so it
//! is tested without DPDK or sockets.

use crate::dataplane::pipeline::Handshakes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::config::{BackendSection, HealthSection, ServiceSection, Validated};
use super::health::CheckError;
use super::state_build::{build_state_with, Adjust, PortFacts, Resolver};
use crate::balancer::maglev::{MaglevBackend, MaglevTable};
use crate::balancer::state::{BuildError, ForwardingState, ServiceStats};

/// A backend's health as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet (or no checks configured): takes traffic.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Passive health's evidence about one backend: its totals of new flows and
/// of those whose client sent its SYN again, sampled about once a second,
/// kept for the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassiveTracker {
    samples: std::collections::VecDeque<(u64, u64, u64)>,
}

impl PassiveTracker {
    /// Takes the totals at `now_ms`; returns the backend's suspicion now:
    /// `Some(reason)` while the window holds at least `min_flows` new flows
    /// of which at least `syn_retried_share` retried their SYN.
    pub fn observe(
        &mut self,
        now_ms: u64,
        new_flows: u64,
        syn_retried: u64,
        p: &crate::control::config::PassiveSection,
    ) -> Option<String> {
        self.samples.push_back((now_ms, new_flows, syn_retried));
        let from = now_ms.saturating_sub(p.window_s * 1000);
        while self.samples.len() > 1 && self.samples[1].0 <= from {
            self.samples.pop_front();
        }
        let (_, f0, r0) = self.samples.front().copied()?;
        let (flows, retried) = (new_flows.saturating_sub(f0), syn_retried.saturating_sub(r0));
        (flows >= p.min_flows && retried as f64 >= p.syn_retried_share * flows as f64)
            .then(|| format!("{retried} of {flows} new flows in {} s retried their SYN", p.window_s))
    }
}

/// A backend's handshake counts over a window (see [`PassiveTracker`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeTracker {
    samples: std::collections::VecDeque<(u64, Handshakes)>,
}

impl HandshakeTracker {
    /// Takes the totals at `now_ms`; returns those of the last `window_ms`.
    pub fn observe(&mut self, now_ms: u64, totals: Handshakes, window_ms: u64) -> Handshakes {
        self.samples.push_back((now_ms, totals));
        let from = now_ms.saturating_sub(window_ms);
        while self.samples.len() > 1 && self.samples[1].0 <= from {
            self.samples.pop_front();
        }
        self.samples.front().map_or(Handshakes::default(), |(_, first)| totals.since(first))
    }
}

/// Rise/fall hysteresis: `rise` successes in a row bring a backend up, `fall`
/// failures in a row take it down; the very first result decides at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTracker {
    pub state: Health,
    ok_run: u32,
    fail_run: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker { state: Health::Unknown, ok_run: 0, fail_run: 0 }
    }
}

impl HealthTracker {
    /// Records one check result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        if ok {
            self.ok_run += 1;
            self.fail_run = 0;
        } else {
            self.fail_run += 1;
            self.ok_run = 0;
        }
        let next = match (self.state, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.ok_run >= rise => Health::Up,
            (Health::Up, false) if self.fail_run >= fall => Health::Down,
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// Everything the management side tracks for one (service, backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub id: u32,
    pub health: HealthTracker,
    /// Set by `drain`: when it began (ms).
    pub draining_since_ms: Option<u64>,
    /// Set by `set-weight`; cleared by a reload that changes the configured weight.
    pub weight_override: Option<u32>,
    /// When it last came back up (slow start runs from here).
    pub up_since_ms: Option<u64>,
    pub rtt_us: u32,
    pub last_check_ms: Option<u64>,
    pub last_error: Option<String>,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// Checks this box could not make (no socket, source address not up).
    pub checks_not_run: u64,
    /// Passive health: the evidence, and why the backend is suspect now.
    pub passive: PassiveTracker,
    pub suspect: Option<String>,
    /// Its handshakes, sampled about once a second, and their mean time
    /// over the last window in µs (none: no handshake in it).
    pub handshakes: HandshakeTracker,
    pub handshake_us: Option<u32>,
}

impl BackendStatus {
    fn new(id: u32) -> Self {
        BackendStatus {
            id,
            health: HealthTracker::default(),
            draining_since_ms: None,
            weight_override: None,
            up_since_ms: None,
            rtt_us: 0,
            last_check_ms: None,
            last_error: None,
            checks_ok: 0,
            checks_failed: 0,
            checks_not_run: 0,
            passive: PassiveTracker::default(),
            suspect: None,
            handshakes: HandshakeTracker::default(),
            handshake_us: None,
        }
    }
}

/// (service name, backend address).
pub type BackendKey = (String, IpAddr);

pub use super::statuses::Statuses;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub weights_changed: Vec<String>,
}

/// A change `whatif` is asked about (the control API's type).
pub use super::api::Change;

/// The answer to `whatif`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatIf {
    pub table_size: u32,
    /// Maglev entries whose backend would change.
    pub entries_moved: u64,
    /// Entries per backend address, before and after.
    pub entries_before: Vec<(IpAddr, u64)>,
    pub entries_after: Vec<(IpAddr, u64)>,
    /// Whether the backend's tracked flows would move (removal, or down).
    pub tracked_flows_move: bool,
}

/// The management side's model: the configuration in force and every
/// backend's status, keyed by (service, address) so ids survive reloads.
#[derive(Debug, Clone)]
pub struct Registry {
    pub cfg: Validated,
    pub backends: Statuses,
    /// Ids are never reused while l4lb runs: a worker may still track flows
    /// with an old id, and a reused one would send them to a stranger.
    next_id: u32,
    /// Each service's counts, kept across reloads while it exists.
    pub stats: BTreeMap<String, Arc<ServiceStats>>,
}

/// A backend's weight at `now_ms`: `set-weight` or the file's (`file`),
/// ramped during slow start (at least 1 while ramping).
fn weight_now(svc: &ServiceSection, file: u32, st: &BackendStatus, now_ms: u64) -> u32 {
    let base = st.weight_override.unwrap_or(file);
    let period = svc.slow_start_s * 1000;
    match st.up_since_ms {
        Some(since) if period > 0 && base > 0 && now_ms.saturating_sub(since) < period => {
            let elapsed = now_ms.saturating_sub(since);
            ((base as u64 * elapsed / period) as u32).clamp(1, base)
        }
        _ => base,
    }
}

fn fmt_key(svc: &str, addr: IpAddr) -> String {
    format!("{svc}/{addr}")
}

impl Registry {
    /// Ids in configuration order, as `build_state` assigns them.
    pub fn new(cfg: Validated) -> Registry {
        let mut r = Registry { cfg, backends: Statuses::default(), next_id: 0, stats: BTreeMap::new() };
        let all: Vec<usize> = (0..r.cfg.config.services.len()).collect();
        r.adopt_new_backends(&all);
        r.adopt_services();
        r
    }

    /// Counts for new services; removed services' counts go.
    fn adopt_services(&mut self) {
        let c = &self.cfg;
        let names: HashSet<&str> = c.config.services.iter().map(|s| s.name.as_str()).collect();
        self.stats.retain(|name, _| names.contains(name.as_str()));
        for s in &c.config.services {
            if !self.stats.contains_key(&s.name) {
                self.stats.insert(s.name.clone(), ServiceStats::new(c.workers.len()));
            }
        }
    }

    /// Statuses and ids for the backends of services `which` (indices in
    /// configuration order) that have none.
    fn adopt_new_backends(&mut self, which: &[usize]) -> Vec<String> {
        let mut added = Vec::new();
        for &i in which {
            let s = &self.cfg.config.services[i];
            for b in &s.backends {
                if !self.backends.contains(&s.name, b.address) {
                    self.backends.insert(&s.name, b.address, BackendStatus::new(self.next_id));
                    self.next_id += 1;
                    added.push(fmt_key(&s.name, b.address));
                }
            }
        }
        added
    }

    /// Takes a new configuration. Only services may change while running;
    /// anything else is refused with what differs. Statuses of backends that
    /// stay are kept (health, drain, slow start); a changed configured weight
    /// clears a `set-weight` override.
    pub fn reload(&mut self, new: Validated) -> Result<ReloadSummary, String> {
        let (next, sum) = self.reloaded(new)?;
        *self = next;
        Ok(sum)
    }

    /// [`Registry::reload`] into a new registry, this one unchanged (a
    /// reload's trial). Services whose backends did not change cost a
    /// comparison each.
    pub fn reloaded(&self, new: Validated) -> Result<(Registry, ReloadSummary), String> {
        let (old, c) = (&self.cfg.config, &new.config);
        for (name, same) in [
            ("[dpdk]", old.dpdk == c.dpdk),
            ("[workers]", old.workers == c.workers),
            ("[[ports]]", old.ports == c.ports),
            ("[control]", old.control == c.control),
            ("[routing]", old.routing == c.routing),
            ("[bgp]", old.bgp == c.bgp),
            ("[sync]", old.sync == c.sync),
        ] {
            if !same {
                return Err(format!(
                    "{name} changed: only [[services]] can change while l4lb runs; restart l4lb to apply it"
                ));
            }
        }
        let olds: HashMap<&str, &ServiceSection> =
            old.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let news: HashSet<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        // Services whose backend lists changed (or that are new), in order.
        let changed: Vec<usize> = (c.services.iter().enumerate())
            .filter(|(_, s)| olds.get(s.name.as_str()).is_none_or(|o| o.backends != s.backends))
            .map(|(i, _)| i)
            .collect();
        // Only (service, backend) pairs new to this run take new ids.
        let new_ids: usize = (changed.iter().map(|&i| &c.services[i]))
            .map(|s| s.backends.iter().filter(|b| !self.backends.contains(&s.name, b.address)).count())
            .sum();
        if self.next_id as usize + new_ids > crate::balancer::limits::MAX_BACKEND_IDS {
            return Err(
                "backend ids are exhausted (they are not reused while l4lb runs): restart l4lb".into()
            );
        }
        let mut sum = ReloadSummary::default();
        let mut backends = self.backends.clone();
        for s in &old.services {
            if !news.contains(s.name.as_str()) {
                sum.services_removed.push(s.name.clone());
            }
        }
        let mut removed: Vec<(String, IpAddr)> = Vec::new();
        for name in backends.retain_services(|svc| news.contains(svc)) {
            let gone = self.backends.service(&name).into_iter().flat_map(|m| m.keys());
            removed.extend(gone.map(|a| (name.clone(), *a)));
        }
        for s in changed.iter().map(|&i| &c.services[i]) {
            let Some(o) = olds.get(s.name.as_str()) else {
                sum.services_added.push(s.name.clone());
                continue;
            };
            let old_weights: HashMap<IpAddr, u32> =
                o.backends.iter().map(|x| (x.address, x.weight)).collect();
            for b in &s.backends {
                if old_weights.get(&b.address).is_some_and(|&w| w != b.weight) {
                    sum.weights_changed.push(fmt_key(&s.name, b.address));
                    if let Some(st) = backends.get_mut(&s.name, b.address) {
                        st.weight_override = None;
                    }
                }
            }
            let configured: HashSet<IpAddr> = s.backends.iter().map(|b| b.address).collect();
            let gone = backends.retain_in(&s.name, |a| configured.contains(&a));
            removed.extend(gone.into_iter().map(|a| (s.name.clone(), a)));
        }
        removed.sort();
        sum.backends_removed = removed.iter().map(|(svc, a)| fmt_key(svc, *a)).collect();
        let mut next = Registry { cfg: new, backends, next_id: self.next_id, stats: self.stats.clone() };
        sum.backends_added = next.adopt_new_backends(&changed);
        next.adopt_services();
        Ok((next, sum))
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSection> {
        self.cfg.config.services.iter().find(|s| s.name == name)
    }

    /// The weight a backend has now: `set-weight` or the file, ramped during
    /// slow start (at least 1 while ramping).
    pub fn effective_weight(&self, svc: &ServiceSection, addr: IpAddr, now_ms: u64) -> u32 {
        let Some(b) = svc.backends.iter().find(|b| b.address == addr) else { return 0 };
        let Some(st) = self.backends.get(&svc.name, addr) else { return 0 };
        weight_now(svc, b.weight, st, now_ms)
    }

    /// Whether some backend is in slow start (the state is rebuilt as its
    /// weight grows).
    pub fn ramping(&self, now_ms: u64) -> bool {
        // (Called every management tick: nothing to walk without slow start,
        // else one pass over the statuses with a lookup by name each.)
        let periods: HashMap<&str, u64> = self
            .cfg
            .config
            .services
            .iter()
            .filter(|s| s.slow_start_s > 0)
            .map(|s| (s.name.as_str(), s.slow_start_s * 1000))
            .collect();
        !periods.is_empty()
            && self.backends.iter().any(|((svc, _), st)| {
                st.up_since_ms.is_some_and(|t| {
                    periods.get(svc).is_some_and(|&period| now_ms.saturating_sub(t) < period)
                })
            })
    }

    /// The next moment a drain timeout ends (the state must be rebuilt then).
    pub fn next_drain_deadline(&self, now_ms: u64) -> Option<u64> {
        self.backends
            .iter()
            .filter_map(|((svc, _), st)| {
                // Draining ones only: the service is found for those alone.
                let since = st.draining_since_ms?;
                let timeout = self.service(svc)?.drain_timeout_s;
                (timeout > 0).then_some(since + timeout * 1000)
            })
            .filter(|&end| end > now_ms)
            .min()
    }

    /// How one backend appears in the forwarding state now (`None`: absent).
    pub fn adjust(&self, svc: &ServiceSection, b: &BackendSection, now_ms: u64) -> Option<Adjust> {
        let st = self.backends.get(&svc.name, b.address)?;
        if st.health.state == Health::Down {
            return None;
        }
        // Suspect from its traffic, where the service takes that as down.
        if st.suspect.is_some() && svc.passive_health.as_ref().is_some_and(|p| p.down) {
            return None;
        }
        let drain_over = st
            .draining_since_ms
            .is_some_and(|t| svc.drain_timeout_s > 0 && now_ms >= t + svc.drain_timeout_s * 1000);
        if drain_over {
            return None;
        }
        let rtt_us = match (svc.response_time, st.handshake_us) {
            (crate::control::config::ResponseTime::Handshake, Some(us)) => us,
            _ => st.rtt_us,
        };
        Some(Adjust {
            id: st.id,
            weight: weight_now(svc, b.weight, st, now_ms),
            draining: st.draining_since_ms.is_some(),
            rtt_us,
        })
    }

    /// Builds the forwarding state for `now_ms` (sharing `previous`'s
    /// unchanged Maglev tables).
    pub fn build(
        &self,
        generation: u64,
        facts: &[PortFacts],
        resolved: Resolver<'_>,
        now_ms: u64,
        previous: Option<&ForwardingState>,
    ) -> Result<ForwardingState, BuildError> {
        let workers = self.cfg.workers.len();
        let mut st = build_state_with(
            &self.cfg,
            generation,
            facts,
            resolved,
            &mut |s, b| self.adjust(s, b, now_ms),
            &|s| self.stats.get(&s.name).cloned().unwrap_or_else(|| ServiceStats::new(workers)),
            previous,
        )?;
        st.set_vip_paths(crate::control::state_build::vip_path_targets(&self.cfg, resolved, &|s, a| {
            self.backends.get(&s.name, a).map(|b| b.id)
        }));
        Ok(st)
    }

    /// Records a health-check result; returns the new health when it changed.
    pub fn record_check(
        &mut self,
        key: &BackendKey,
        h: &HealthSection,
        result: Result<u32, CheckError>,
        now_ms: u64,
    ) -> Option<Health> {
        let st = self.backends.get_mut(&key.0, key.1)?;
        let ok = match result {
            Ok(rtt) => {
                st.rtt_us = rtt.max(1);
                st.checks_ok += 1;
                st.last_error = None;
                true
            }
            // This box could not make the check: the backend's health stays
            // as it was (a new backend: not checked yet).
            Err(e @ CheckError::NotRun(_)) => {
                st.checks_not_run += 1;
                st.last_error = Some(e.to_string());
                return None;
            }
            Err(CheckError::Failed(e)) => {
                st.checks_failed += 1;
                st.last_error = Some(e);
                false
            }
        };
        st.last_check_ms = Some(now_ms);
        let before = st.health.state;
        let changed = st.health.record(ok, h.rise, h.fall);
        if changed == Some(Health::Up) && before == Health::Down {
            st.up_since_ms = Some(now_ms);
        }
        changed
    }

    /// Backends named by `spec`: `SERVICE/ADDRESS`, or `ADDRESS` for every
    /// service that has it.
    pub fn resolve(&self, spec: &str) -> Result<Vec<BackendKey>, String> {
        let (svc, addr) = match spec.split_once('/') {
            Some((s, a)) => (Some(s), a),
            None => (None, spec),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{spec}` is not a backend: give ADDRESS or SERVICE/ADDRESS"))?;
        if let Some(s) = svc {
            if self.service(s).is_none() {
                let names: Vec<&str> = self.cfg.config.services.iter().map(|s| s.name.as_str()).collect();
                return Err(format!("no service named `{s}` (services: {})", names.join(", ")));
            }
        }
        let keys: Vec<BackendKey> = self
            .backends
            .iter()
            .filter(|((sv, a), _)| *a == addr && svc.is_none_or(|s| s == *sv))
            .map(|((sv, a), _)| (sv.to_owned(), a))
            .collect();
        if keys.is_empty() {
            return Err(match svc {
                Some(s) => format!("service `{s}` has no backend {addr}"),
                None => format!("no service has a backend {addr}"),
            });
        }
        Ok(keys)
    }

    /// Maglev table of a service as it would be with `change` applied to
    /// `target` (or as it is, with `None`), over the backends in the state.
    fn table(
        &self,
        svc: &ServiceSection,
        target: Option<(IpAddr, Change)>,
        now_ms: u64,
    ) -> (Vec<IpAddr>, MaglevTable) {
        let mut addrs = Vec::new();
        let mut mb = Vec::new();
        for b in &svc.backends {
            let Some(mut a) = self.adjust(svc, b, now_ms) else { continue };
            match target {
                Some((t, Change::Remove)) if t == b.address => continue,
                Some((t, Change::Drain)) if t == b.address => a.draining = true,
                Some((t, Change::Weight(w))) if t == b.address => a.weight = w,
                _ => {}
            }
            addrs.push(b.address);
            mb.push(MaglevBackend {
                id: crate::balancer::flow::ip16(b.address),
                weight: if a.draining { 0 } else { a.weight },
            });
        }
        let table = MaglevTable::build(&mb, svc.maglev_table_size)
            .unwrap_or_else(|_| MaglevTable::build(&[], svc.maglev_table_size).expect("validated size"));
        (addrs, table)
    }

    /// Maglev entries per backend address of a service now.
    pub fn entries(&self, svc: &ServiceSection, now_ms: u64) -> Vec<(IpAddr, u64)> {
        let (addrs, t) = self.table(svc, None, now_ms);
        count_entries(&addrs, &t)
    }

    /// What `change` to backend `addr` of `svc` would move.
    pub fn whatif(&self, svc: &ServiceSection, addr: IpAddr, change: Change, now_ms: u64) -> WhatIf {
        let (a0, t0) = self.table(svc, None, now_ms);
        let (a1, t1) = self.table(svc, Some((addr, change)), now_ms);
        let moved = if t0.is_empty() || t1.is_empty() {
            if t0.is_empty() == t1.is_empty() {
                0
            } else {
                svc.maglev_table_size as u64
            }
        } else {
            t0.entries()
                .iter()
                .zip(t1.entries())
                .filter(|(x, y)| a0[**x as usize] != a1[**y as usize])
                .count() as u64
        };
        WhatIf {
            table_size: svc.maglev_table_size,
            entries_moved: moved,
            entries_before: count_entries(&a0, &t0),
            entries_after: count_entries(&a1, &t1),
            tracked_flows_move: change == Change::Remove && a0.contains(&addr),
        }
    }
}

fn count_entries(addrs: &[IpAddr], t: &MaglevTable) -> Vec<(IpAddr, u64)> {
    let n = t.entries_per_backend().iter().map(|&k| k as u64).chain(std::iter::repeat(0));
    addrs.iter().copied().zip(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Config;
    use crate::control::state_build::simulated_facts;

    fn cfg(backends: &str, extra: &str) -> Validated {
        let text = format!(
            r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_null0"]
hugepages = false
[[ports]]
name = "p"
device = "net_null0"
ipv4 = "198.18.0.1/24"
[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
maglev_table_size = 1009
{extra}
backends = [{backends}]
"#
        );
        Config::parse(&text, "t.toml").unwrap().validate("t.toml").unwrap()
    }

    const THREE: &str = r#"{ address = "198.18.0.11", mac = "02:00:00:00:0b:11" },
        { address = "198.18.0.12", mac = "02:00:00:00:0b:12" },
        { address = "198.18.0.13", mac = "02:00:00:00:0b:13" }"#;

    fn key(last: u8) -> BackendKey {
        ("web".into(), IpAddr::from([198, 18, 0, last]))
    }

    fn health() -> HealthSection {
        HealthSection {
            interval_ms: 100,
            timeout_ms: 50,
            rise: 2,
            fall: 3,
            ..HealthSection::new(crate::control::config::CheckKind::Tcp)
        }
    }

    fn build(r: &Registry, now: u64) -> ForwardingState {
        r.build(1, &simulated_facts(&r.cfg), &|_, _| None, now, None).unwrap()
    }

    #[test]
    fn rise_and_fall_hysteresis() {
        let mut t = HealthTracker::default();
        assert_eq!(t.record(true, 2, 3), Some(Health::Up), "first result decides");
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), None, "a success resets the failure run");
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), Some(Health::Down));
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), Some(Health::Up));
        let mut u = HealthTracker::default();
        assert_eq!(u.record(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn checks_that_could_not_run_leave_the_health_as_it_was() {
        let mut r = Registry::new(cfg(THREE, ""));
        let h = health();
        let not_run = || Err(CheckError::NotRun("bind 198.18.0.5: Cannot assign requested address".into()));
        // A new backend whose checks cannot be made yet: not checked yet,
        // still in the state, the reason on record.
        for t in 0..5 {
            assert_eq!(r.record_check(&key(12), &h, not_run(), t), None);
        }
        let st = &r.backends[("web", key(12).1)];
        assert_eq!((st.health.state, st.checks_not_run, st.checks_failed), (Health::Unknown, 5, 0));
        assert_eq!(
            st.last_error.as_deref(),
            Some("check could not run: bind 198.18.0.5: Cannot assign requested address")
        );
        assert_eq!(st.last_check_ms, None, "no check has run");
        assert_eq!(build(&r, 10).backends.len(), 3);
        // Once checks run they decide; checks that cannot run in between
        // neither count as failures nor break a run of them.
        assert_eq!(r.record_check(&key(12), &h, Ok(100), 20), Some(Health::Up));
        assert_eq!(r.record_check(&key(12), &h, not_run(), 30), None);
        assert_eq!(r.backends[("web", key(12).1)].health.state, Health::Up);
    }

    #[test]
    fn down_backends_leave_the_state_and_come_back_with_slow_start() {
        let mut r = Registry::new(cfg(THREE, "slow_start_s = 10"));
        let h = health();
        assert_eq!(build(&r, 0).backends.len(), 3);
        for _ in 0..3 {
            r.record_check(&key(12), &h, Ok(100), 0);
        }
        // Up on the first success; three failures take it down.
        for i in 0..3 {
            let c = r.record_check(&key(12), &h, Err(CheckError::Failed("refused".into())), 1000 + i);
            assert_eq!(c, (i == 2).then_some(Health::Down));
        }
        let st = build(&r, 2000);
        assert_eq!(st.backends.len(), 2);
        assert!(st.backends.iter().all(|b| b.addr != IpAddr::from([198, 18, 0, 12])));
        // Back up after `rise` successes, at weight 1, ramping to full over 10 s.
        r.record_check(&key(12), &h, Ok(100), 3000);
        assert_eq!(r.record_check(&key(12), &h, Ok(100), 3000), Some(Health::Up));
        let svc = r.service("web").unwrap().clone();
        let addr = key(12).1;
        assert_eq!(r.effective_weight(&svc, addr, 3000), 1);
        assert!(r.ramping(3000));
        // Weight 1 in the file: the ramp is 1 throughout; with 10 it grows.
        let mut r10 = Registry::new(cfg(
            &THREE.replacen("mac = \"02:00:00:00:0b:12\"", "mac = \"02:00:00:00:0b:12\", weight = 10", 1),
            "slow_start_s = 10",
        ));
        for (ok, t) in [(true, 0), (false, 1), (false, 2), (false, 3), (true, 4), (true, 5)] {
            r10.record_check(&key(12), &h, if ok { Ok(5) } else { Err(CheckError::Failed("x".into())) }, t);
        }
        let svc = r10.service("web").unwrap().clone();
        let w: Vec<u32> =
            [5, 1005, 5005, 9005, 10_005].iter().map(|&t| r10.effective_weight(&svc, addr, t)).collect();
        assert_eq!(w, vec![1, 1, 5, 9, 10]);
        assert!(!r10.ramping(10_005));
    }

    #[test]
    fn drain_keeps_flows_then_times_out() {
        let mut r = Registry::new(cfg(THREE, "drain_timeout_s = 5"));
        r.backends.get_mut("web", key(11).1).unwrap().draining_since_ms = Some(1000);
        let st = build(&r, 2000);
        let b = st.backends.iter().find(|b| b.addr == key(11).1).unwrap();
        assert!(b.draining, "a draining backend stays, for its flows");
        assert_eq!(st.services[0].maglev.entries().iter().filter(|&&e| e == 0).count(), 0, "no new flows");
        assert_eq!(r.next_drain_deadline(2000), Some(6000));
        assert_eq!(build(&r, 6000).backends.len(), 2, "after the timeout its flows move");
    }

    #[test]
    fn reload_keeps_ids_and_statuses_and_refuses_other_sections() {
        let mut r = Registry::new(cfg(THREE, ""));
        let id13 = r.backends[("web", key(13).1)].id;
        r.backends.get_mut("web", key(13).1).unwrap().draining_since_ms = Some(5);
        let two_and_new = r#"{ address = "198.18.0.13", mac = "02:00:00:00:0b:13", weight = 3 },
            { address = "198.18.0.14", mac = "02:00:00:00:0b:14" }"#;
        let sum = r.reload(cfg(two_and_new, "")).unwrap();
        assert_eq!(sum.backends_added, vec!["web/198.18.0.14"]);
        assert_eq!(sum.backends_removed, vec!["web/198.18.0.11", "web/198.18.0.12"]);
        assert_eq!(sum.weights_changed, vec!["web/198.18.0.13"]);
        assert_eq!(r.backends[("web", key(13).1)].id, id13);
        assert_eq!(r.backends[("web", key(13).1)].draining_since_ms, Some(5));
        assert_eq!(r.backends[("web", key(14).1)].id, 3, "ids are not reused");
        let mut other = cfg(two_and_new, "");
        other.config.workers.burst_size = 16;
        let e = r.reload(other).unwrap_err();
        assert!(e.contains("[workers] changed"), "{e}");
        // Two boxes, different histories, same backends and weights: same table.
        let fresh = Registry::new(cfg(two_and_new, ""));
        let mut r2 = r.clone();
        r2.backends.get_mut("web", key(13).1).unwrap().draining_since_ms = None;
        assert_eq!(build(&r2, 0).services[0].maglev, build(&fresh, 0).services[0].maglev);
    }

    #[test]
    fn whatif_counts_what_moves() {
        let r = Registry::new(cfg(THREE, ""));
        let svc = r.service("web").unwrap().clone();
        let w = r.whatif(&svc, key(12).1, Change::Remove, 0);
        let removed = w.entries_moved;
        let before: u64 = w.entries_before.iter().find(|(a, _)| *a == key(12).1).unwrap().1;
        assert!(w.entries_moved >= before && w.entries_moved < before + before / 5, "{w:?}");
        assert_eq!(w.entries_after.len(), 2);
        assert!(w.tracked_flows_move);
        // The prediction equals the table actually built without it.
        let mut gone = r.clone();
        gone.backends.get_mut("web", key(12).1).unwrap().health.state = Health::Down;
        assert_eq!(gone.entries(&svc, 0), w.entries_after);
        let w = r.whatif(&svc, key(12).1, Change::Weight(2), 0);
        assert!(!w.tracked_flows_move);
        assert!(w.entries_moved > 0);
        let d = r.whatif(&svc, key(12).1, Change::Drain, 0);
        // Draining takes the same entries as removal, but its flows stay.
        assert_eq!(d.entries_moved, removed);
        assert!(!d.tracked_flows_move);
        assert!(r.resolve("198.18.0.99").unwrap_err().contains("no service has"));
        assert!(r.resolve("nope/198.18.0.11").unwrap_err().contains("no service named"));
        assert_eq!(r.resolve("web/198.18.0.11").unwrap(), vec![key(11)]);
    }
}

#[cfg(test)]
mod passive_tests {
    use super::PassiveTracker;
    use crate::control::config::PassiveSection;

    #[test]
    fn a_backend_is_suspect_while_its_window_holds_enough_retried_syns() {
        let p = PassiveSection { window_s: 10, min_flows: 4, syn_retried_share: 0.5, down: false };
        let mut t = PassiveTracker::default();
        assert_eq!(t.observe(0, 100, 10, &p), None, "one sample: nothing to judge yet");
        assert_eq!(t.observe(1000, 103, 12, &p), None, "3 new flows: below min_flows");
        assert_eq!(
            t.observe(2000, 104, 13, &p).as_deref(),
            Some("3 of 4 new flows in 10 s retried their SYN")
        );
        assert_eq!(t.observe(3000, 110, 13, &p), None, "3 of 10: below the share");
        // Ten seconds without new flows: the evidence has left the window.
        assert_eq!(t.observe(13_500, 110, 13, &p), None);
        assert_eq!(
            t.observe(14_000, 114, 17, &p).as_deref(),
            Some("4 of 4 new flows in 10 s retried their SYN")
        );
    }
}
