//! The management core's loop while balancing: neighbour resolution, health
//! checks, drain/weight/reload changes, forwarding-state builds and their
//! hand-over to every worker, and the answers to the control API and the
//! metrics endpoint (its answers: `answers.rs`). Nothing here runs on a worker.

use crate::dataplane::exception::KernelLink;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::balancer::state::ServiceEvent;
use crate::control::config::{ResponseTime, SchedulerName};
use crate::dataplane::pipeline::Handshakes;
use std::time::{Duration, Instant};

use super::api::{
    Applied, BackendRow, BgpStatus, BoxDrain, Call, Change, DaemonRow, Entries, Lookup, PortCounters,
    PortStatus, Protocol, ReloadChanges, Reloads, Reply, Request, Response, ServiceRow, Stats, Status,
    VipRow, WhatifRow, MAX_WEIGHT,
};
use super::config::{
    checked_via_vip, device_name, egress_port, kernel_interface_name, tap_interface, vip_path_source,
    BackendSection, Config, ConfigCache, ServiceSection,
};
use super::health::{CheckError, Checker, Probe, VipPath};
use super::metrics::{self, PortRow};
use super::neighbour::NeighbourTable;
use super::registry::{BackendKey, Health, Registry};
use super::state_build::{needed_neighbours, PortFacts};
use crate::balancer::flow::ip16;
use crate::balancer::flow::FlowKey;
use crate::balancer::state::{ForwardingState, SchedState};
use crate::dataplane::mailbox::{FlowQuery, StateMailbox};
use crate::dataplane::pipeline::{BackendCounters, Counter, VipPathPorts};
use crate::dataplane::telemetry::WorkerStats;
use crate::dpdk::{Mempool, Port};

/// One health-checked backend.
struct Target {
    key: BackendKey,
    health: super::config::HealthSection,
    probe: Arc<Probe>,
    next_due_ms: u64,
    in_flight: bool,
}

/// Packet/byte rates of one backend, from one-second samples.
#[derive(Default, Clone, Copy)]
struct Rate {
    packets: u64,
    bytes: u64,
    pps: f64,
    bps: f64,
}

/// Rebuild a slow-starting state this often.
const RAMP_STEP_MS: u64 = 250;

pub struct Management<'a> {
    pub registry: Registry,
    cfg_path: Option<PathBuf>,
    /// The files `reload` read last and what they parsed to.
    config_cache: ConfigCache,
    facts: &'a [PortFacts],
    ports: &'a [Port],
    pool: &'a Mempool,
    mailboxes: &'a [StateMailbox],
    counters: Vec<Arc<BackendCounters>>,
    pub neighbours: NeighbourTable,
    pub state: Arc<ForwardingState>,
    unsent: Vec<Option<Arc<ForwardingState>>>,
    dirty: bool,
    checker: Checker,
    targets: Vec<Target>,
    /// Bumped when targets are rebuilt; results of older checks are ignored.
    epoch: u64,
    started: Instant,
    rates: BTreeMap<u32, Rate>,
    last_rate_ms: u64,
    last_ramp_ms: u64,
    was_ramping: bool,
    /// When a drain timeout ends next (the state changes then).
    drain_deadline: Option<u64>,
    reloads_ok: u64,
    reloads_refused: u64,
    last_reload: Option<String>,
    query_tag: u64,
    /// The workers' TSC rate (cycles per second), for cycles-per-packet figures.
    pub tsc_hz: u64,
    /// The exception path: neighbour answers go on to the kernel through it;
    /// its per-port counters.
    pub kernel: Option<&'a KernelLink>,
    /// The announced VIPs' routes (`[routing] table`), if on.
    announcer: Option<super::routing::Announcer>,
    /// The box's place in the fleet: announcing, or on its way out.
    box_state: BoxState,
    /// Stop l4lb when the box's drain ends (SIGTERM, `drain-box`).
    stop_after_drain: bool,
    /// l4lb's BIRD (`[bgp]`).
    pub bird: Option<super::bird::Bird>,
    /// Flow sync with the peer boxes (`[sync]`).
    pub sync: Option<super::sync::FlowSync>,
    /// Whether the VIPs wait for flow sync's warm-up.
    warming: bool,
    /// The VIP-path checks' source ports, shared with the workers (the
    /// exception path's, once [`Management::set_kernel`] gives it).
    vip_path: Arc<VipPathPorts>,
}

/// The box's place in the fleet (`[routing]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoxState {
    Announcing,
    /// The routes carry GRACEFUL_SHUTDOWN until then; withdrawn after.
    GracefulShutdown {
        until_ms: u64,
    },
    /// Nothing announced; forwarding goes on until then (none: until
    /// `undrain-box`).
    Withdrawn {
        until_ms: Option<u64>,
    },
}

impl BoxState {
    fn name(self) -> &'static str {
        match self {
            BoxState::Announcing => "announcing",
            BoxState::GracefulShutdown { .. } => "graceful-shutdown",
            BoxState::Withdrawn { .. } => "withdrawn",
        }
    }
}

impl<'a> Management<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Registry,
        source: Option<(PathBuf, ConfigCache)>,
        facts: &'a [PortFacts],
        ports: &'a [Port],
        pool: &'a Mempool,
        mailboxes: &'a [StateMailbox],
        counters: Vec<Arc<BackendCounters>>,
        state: Arc<ForwardingState>,
    ) -> Self {
        let mut neighbours = NeighbourTable::default();
        neighbours.track(&needed_neighbours(&registry.cfg));
        let threads = registry.cfg.config.control.health_threads;
        let (cfg_path, config_cache) = source.map_or((None, ConfigCache::default()), |(p, c)| (Some(p), c));
        let mut m = Management {
            registry,
            cfg_path,
            config_cache,
            facts,
            ports,
            pool,
            mailboxes,
            counters,
            neighbours,
            state,
            unsent: Vec::new(),
            dirty: false,
            checker: Checker::new(threads),
            targets: Vec::new(),
            epoch: 0,
            started: Instant::now(),
            rates: BTreeMap::new(),
            last_rate_ms: 0,
            last_ramp_ms: 0,
            was_ramping: false,
            drain_deadline: None,
            reloads_ok: 0,
            reloads_refused: 0,
            last_reload: None,
            query_tag: 0,
            tsc_hz: 0,
            kernel: None,
            announcer: None,
            box_state: BoxState::Announcing,
            stop_after_drain: false,
            bird: None,
            sync: None,
            warming: false,
            vip_path: Arc::default(),
        };
        m.warming = m.registry.cfg.config.sync.as_ref().is_some_and(|y| y.enabled);
        m.rebuild_targets();
        // Passive health's first samples before any traffic: the windows
        // count from here.
        m.passive_work(0);
        let table = m.registry.cfg.config.routing.table;
        if table != 0 {
            m.announcer = Some(super::routing::Announcer::new(table));
            m.announce();
        }
        m
    }

    /// Connects the exception path: neighbour answers go on to the kernel
    /// through it, and VIP-path checks claim its workers' source ports.
    pub fn set_kernel(&mut self, link: &'a KernelLink) {
        self.kernel = Some(link);
        self.vip_path = link.vip_path.clone();
        self.rebuild_targets();
        if self.targets.iter().any(|t| t.probe.vip_path.is_some()) {
            warn_ephemeral_overlap();
        }
    }

    /// Brings the announced VIPs in line with the state in force (while
    /// the box is not on its way out of the fleet).
    fn announce(&mut self) {
        if self.box_state != BoxState::Announcing {
            return;
        }
        // A starting box with flow sync announces once its peers sent what
        // they share: flows the router then moves here keep their backend.
        if self.warming {
            if !self.sync.as_ref().is_some_and(|y| y.warm()) {
                return;
            }
            self.warming = false;
            log::info!("sync: warm; the VIPs may be announced");
        }
        if let Some(a) = self.announcer.as_mut() {
            let r = &self.registry;
            let checked = |svc: &str, addr: IpAddr| {
                r.backends.get(svc, addr).is_some_and(|b| b.health.state != Health::Unknown)
            };
            a.apply(&super::routing::wanted(&self.state, &r.cfg.config, &checked));
        }
    }

    /// What the workers counted for service `name`, every worker together.
    pub fn service_count(&self, name: &str, e: ServiceEvent) -> u64 {
        self.registry.stats.get(name).map_or(0, |x| x.total(e))
    }

    /// With `[routing]`: whether `vip` is announced now.
    pub fn announced(&self, vip: IpAddr) -> Option<bool> {
        self.announcer.as_ref().map(|a| a.announced().any(|v| *v == vip))
    }

    /// Starts flow sync (`[sync]`): the VIPs wait for its warm-up.
    pub fn start_sync(&mut self, y: super::sync::FlowSync) {
        self.sync = Some(y);
        self.sync_view();
    }

    /// Gives flow sync the configuration in force (after a reload).
    fn sync_view(&self) {
        if let Some(y) = &self.sync {
            let r = &self.registry;
            let id = |svc: &str, addr: IpAddr| r.backends.get(svc, addr).map(|b| b.id);
            y.set_view(super::sync::View::new(&r.cfg.config, &id));
        }
    }

    /// Withdraws every announced VIP and stops BIRD (at the stop).
    pub fn withdraw_routes(&mut self) {
        if let Some(a) = self.announcer.as_mut() {
            a.withdraw_all();
        }
        if let Some(b) = self.bird.take() {
            b.stop();
        }
        if let Some(y) = self.sync.take() {
            y.stop();
        }
    }

    /// Takes the box out of the fleet: its routes carry GRACEFUL_SHUTDOWN
    /// for `graceful_shutdown_s`, are withdrawn, and forwarding goes on for
    /// `shutdown_drain_s` (with `stop`; without, until `undrain-box`).
    /// Without announced routes there is nothing to wait for.
    pub fn drain_box(&mut self, stop: bool) -> Vec<IpAddr> {
        let now = self.now_ms();
        let r = &self.registry.cfg.config.routing;
        let (graceful_ms, drain_ms) = (r.graceful_shutdown_s * 1000, r.shutdown_drain_s * 1000);
        self.stop_after_drain |= stop;
        let vips: Vec<IpAddr> =
            self.announcer.as_ref().map(|a| a.announced().copied().collect()).unwrap_or_default();
        match self.box_state {
            BoxState::Announcing if !vips.is_empty() && graceful_ms > 0 => {
                if let Some(a) = self.announcer.as_mut() {
                    a.mark_graceful_shutdown();
                }
                log::warn!(
                    "box drain: {} VIPs marked GRACEFUL_SHUTDOWN for {} s, then withdrawn",
                    vips.len(),
                    r.graceful_shutdown_s
                );
                self.box_state = BoxState::GracefulShutdown { until_ms: now + graceful_ms };
            }
            // Nothing announced: nothing for the routers to move away from.
            BoxState::Announcing if vips.is_empty() => {
                self.box_state = BoxState::Withdrawn { until_ms: stop.then_some(now) };
            }
            BoxState::Announcing => self.withdraw_for_drain(now + drain_ms),
            BoxState::Withdrawn { until_ms: None } if stop => {
                self.box_state = BoxState::Withdrawn { until_ms: Some(now + drain_ms) };
            }
            _ => {}
        }
        vips
    }

    fn withdraw_for_drain(&mut self, until_ms: u64) {
        if let Some(a) = self.announcer.as_mut() {
            a.withdraw_all();
        }
        let r = &self.registry.cfg.config.routing;
        if self.stop_after_drain {
            log::warn!(
                "box drain: routes withdrawn; forwarding for {} s more, then stopping",
                r.shutdown_drain_s
            );
            self.box_state = BoxState::Withdrawn { until_ms: Some(until_ms) };
        } else {
            log::warn!("box drain: routes withdrawn; forwarding until undrain-box");
            self.box_state = BoxState::Withdrawn { until_ms: None };
        }
    }

    /// Announces again after `drain-box --keep-running`.
    pub fn undrain_box(&mut self) -> Result<Vec<IpAddr>, String> {
        if self.stop_after_drain {
            return Err("the box is stopping: its drain cannot be undone".into());
        }
        if self.box_state == BoxState::Announcing {
            return Err("the box is not drained".into());
        }
        if let Some(a) = self.announcer.as_mut() {
            a.clear_graceful_shutdown();
        }
        self.box_state = BoxState::Announcing;
        log::warn!("box undrain: announcing again");
        self.announce();
        Ok(self.announcer.as_ref().map(|a| a.announced().copied().collect()).unwrap_or_default())
    }

    /// The box's drain steps in time (called each tick).
    fn box_work(&mut self, now: u64) {
        if let BoxState::GracefulShutdown { until_ms } = self.box_state {
            if now >= until_ms {
                let drain_ms = self.registry.cfg.config.routing.shutdown_drain_s * 1000;
                self.withdraw_for_drain(now + drain_ms);
            }
        }
    }

    /// Whether a stopping box's drain is over (l4lb may exit).
    pub fn drain_finished(&self) -> bool {
        self.stop_after_drain
            && matches!(self.box_state, BoxState::Withdrawn { until_ms: Some(u) } if self.now_ms() >= u)
    }

    /// Whether the box is on its way out (a drain that ends in a stop).
    pub fn stopping(&self) -> bool {
        self.stop_after_drain
    }

    /// `announcing`, `graceful-shutdown` or `withdrawn`.
    pub fn box_state(&self) -> &'static str {
        self.box_state.name()
    }

    /// The newest forwarding state's generation.
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// (Re)creates the health-check targets from the configuration; targets
    /// that stay keep their schedule.
    fn rebuild_targets(&mut self) {
        let c = &self.registry.cfg.config;
        let src4 = c.control.health_source_v4.map(IpAddr::V4);
        let src6 = c.control.health_source_v6.map(IpAddr::V6);
        let now = self.now_ms();
        // Unchanged checks keep their schedule (a lookup each: a
        // configuration may check a hundred thousand backends).
        let old: HashMap<&BackendKey, &Target> = self.targets.iter().map(|t| (&t.key, t)).collect();
        let mut next = Vec::new();
        for (i, s) in c.services.iter().enumerate() {
            let Some(h) = &s.health else { continue };
            let tls = self.registry.cfg.tls.get(i).cloned().flatten();
            for b in &s.backends {
                let key = (s.name.clone(), b.address);
                let src = if b.address.is_ipv4() { src4 } else { src6 };
                let mut probe = Probe::for_service(h, s, b.address, src, tls.clone());
                probe.vip_path = self.vip_path_of(s, b);
                let probe = Arc::new(probe);
                let due = old
                    .get(&key)
                    .filter(|t| *t.probe == *probe && t.health == *h)
                    .map_or(now, |t| t.next_due_ms);
                next.push(Target { key, health: h.clone(), probe, next_due_ms: due, in_flight: false });
            }
        }
        drop(old);
        self.targets = next;
        self.epoch += 1;
    }

    /// How a backend's checks take its VIP's path, when they do.
    fn vip_path_of(&self, s: &ServiceSection, b: &BackendSection) -> Option<VipPath> {
        let c = &self.registry.cfg.config;
        if !checked_via_vip(c, s, b) {
            return None;
        }
        Some(VipPath {
            ports: self.vip_path.clone(),
            id: self.registry.backends.get(&s.name, b.address)?.id,
            device: kernel_interface_name(c, egress_port(c, s))?.to_owned(),
            source: vip_path_source(c, s, b.address)?,
        })
    }

    /// One pass of periodic work; `reload` is set when SIGHUP arrived.
    pub fn tick(&mut self, reload: bool) {
        let now = self.now_ms();
        self.neighbour_work();
        self.health_work(now);
        self.box_work(now);
        if self.warming {
            self.announce();
        }
        if reload {
            match self.reload() {
                Ok(v) => {
                    log::info!("reload (SIGHUP): applied, {}", serde_json::to_string(&v).unwrap_or_default())
                }
                Err(e) => log::warn!("reload (SIGHUP) refused: {e}"),
            }
        }
        // Slow start: a new state every step while a weight ramps, and one
        // more when the ramp ends (full weight).
        let ramping = self.registry.ramping(now);
        if (ramping && now.saturating_sub(self.last_ramp_ms) >= RAMP_STEP_MS)
            || (self.was_ramping && !ramping)
        {
            self.last_ramp_ms = now;
            self.dirty = true;
        }
        self.was_ramping = ramping;
        if self.drain_deadline.is_some_and(|d| now >= d) {
            self.dirty = true;
        }
        if self.dirty {
            let _ = self.publish();
        }
        self.offer();
        if now.saturating_sub(self.last_rate_ms) >= 1000 {
            self.sample_rates(now);
            self.passive_work(now);
            self.handshake_work(now);
        }
    }

    /// Each backend's mean handshake time over the last window (the
    /// service's `passive_health.window_s`, else 10 s), about once a second.
    /// Where least response time weighs by it, a change of a fifth and of a
    /// millisecond or more makes a new state (not every second's jitter).
    fn handshake_work(&mut self, now: u64) {
        let mut changed = false;
        for s in &self.registry.cfg.config.services {
            let window_ms = s.passive_health.as_ref().map_or(10, |p| p.window_s) * 1000;
            let by_lrt =
                s.response_time == ResponseTime::Handshake && s.scheduler == SchedulerName::LeastResponseTime;
            for b in &s.backends {
                let key = (s.name.clone(), b.address);
                let Some(id) = self.registry.backends.get(&key.0, key.1).map(|st| st.id) else { continue };
                let totals = self.handshakes(id);
                let Some(st) = self.registry.backends.get_mut(&key.0, key.1) else { continue };
                let window = st.handshakes.observe(now, totals, window_ms);
                let us = window.mean_ms().map(|ms| (ms * 1000.0).clamp(1.0, u32::MAX as f64) as u32);
                let moved = match (st.handshake_us, us) {
                    (Some(a), Some(b)) => a.abs_diff(b) >= 1000 && a.abs_diff(b) * 5 >= a,
                    (a, b) => a != b,
                };
                changed |= by_lrt && moved;
                st.handshake_us = us;
            }
        }
        self.dirty |= changed;
    }

    /// Passive health, about once a second: each backend of a service with
    /// `passive_health` is judged from its new flows and those whose client
    /// sent its SYN again. A change is logged; where the service takes a
    /// suspect backend as down, a new state follows.
    fn passive_work(&mut self, now: u64) {
        // Each backend's service's settings come with it: no search by name.
        let totals: Vec<(BackendKey, u64, u64, Arc<crate::control::config::PassiveSection>)> = self
            .registry
            .cfg
            .config
            .services
            .iter()
            .filter_map(|s| Some((s, Arc::new(s.passive_health.clone()?))))
            .flat_map(|(s, p)| s.backends.iter().map(move |b| ((s.name.clone(), b.address), p.clone())))
            .filter_map(|(key, p)| {
                let id = self.registry.backends.get(&key.0, key.1)?.id;
                Some((key, self.new_flows(id), self.syn_retried(id), p))
            })
            .collect();
        for ((name, addr), flows, retried, p) in totals {
            let Some(st) = self.registry.backends.get_mut(&name, addr) else { continue };
            let now_suspect = st.passive.observe(now, flows, retried, &p);
            if now_suspect.is_some() == st.suspect.is_some() {
                st.suspect = now_suspect; // the reason's figures, updated
                continue;
            }
            match &now_suspect {
                Some(why) => log::warn!(
                    "backend {name}/{addr} is suspect: {why}{}",
                    if p.down { " (takes no new flows)" } else { "" }
                ),
                None => log::info!("backend {name}/{addr} is no longer suspect"),
            }
            st.suspect = now_suspect;
            self.dirty |= p.down;
        }
    }

    fn neighbour_work(&mut self) {
        let now_ms = self.now_ms();
        let mut changed = false;
        for mb in self.mailboxes {
            while let Some((port, m)) = mb.control_up.pop() {
                if let Some((ip, mac)) = neighbour_answer(m.data()) {
                    changed |= self.neighbours.learn(port as usize, ip, mac, now_ms);
                }
                // The port's kernel resolves its neighbours from the same answers.
                let kernel = self.state.ports.get(port as usize).is_some_and(|p| p.kernel);
                if let Some(k) = self.kernel.filter(|_| kernel) {
                    if k.from_management.push((port, m)).is_err() {
                        k.counters[port as usize].dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        changed |= self.neighbours.expire(now_ms);
        let cfg = &self.registry.cfg;
        for (port, ip) in self.neighbours.due(now_ms) {
            let (Some(f), Some(p)) = (self.facts.get(port), cfg.config.ports.get(port)) else {
                continue;
            };
            let frame: Option<Vec<u8>> = match ip {
                IpAddr::V4(t) => p.ipv4.map(|a| crate::net::arp::request_frame(f.mac, a.addr, t).to_vec()),
                IpAddr::V6(t) => p.ipv6.map(|a| crate::net::icmp::solicit_frame(f.mac, a.addr, t).to_vec()),
            };
            let (Some(frame), Some(mut m)) = (frame, self.pool.alloc()) else { continue };
            if m.set_data(&frame) {
                if let Some(mb) = self.mailboxes.first() {
                    let _ = mb.control_down.push((port as u16, m));
                }
            }
        }
        self.dirty |= changed;
    }

    fn health_work(&mut self, now: u64) {
        let results: Vec<_> = self.checker.results().collect();
        for (tag, result) in results {
            if tag >> 32 != self.epoch {
                continue; // a check of a target a reload replaced
            }
            let Some(t) = self.targets.get_mut((tag & 0xffff_ffff) as usize) else { continue };
            t.in_flight = false;
            let (key, h) = (t.key.clone(), t.health.clone());
            let err = result.as_ref().err().cloned();
            if let Some(CheckError::NotRun(e)) = &err {
                // Once per run of checks that cannot be made, not every interval.
                let st = self.registry.backends.get(&key.0, key.1);
                if st.is_some_and(|b| {
                    b.last_error.as_deref().is_none_or(|l| !l.starts_with("check could not run"))
                }) {
                    let state = st.map_or("not checked yet", |b| match b.health.state {
                        Health::Unknown => "not checked yet",
                        Health::Up => "up",
                        Health::Down => "down",
                    });
                    log::warn!("health check of {}/{} could not run ({e}): it stays {state}", key.0, key.1);
                }
            }
            if let Some(to) = self.registry.record_check(&key, &h, result, now) {
                let why = err.map(|e| format!(" ({e})")).unwrap_or_default();
                let level = if to == Health::Down { log::Level::Warn } else { log::Level::Info };
                log::log!(level, "backend {}/{} is {}{why}", key.0, key.1, to.name());
                self.dirty = true;
            }
        }
        for (i, t) in self.targets.iter_mut().enumerate() {
            if !t.in_flight && now >= t.next_due_ms {
                t.in_flight = true;
                t.next_due_ms = now + t.health.interval_ms;
                self.checker.submit(self.epoch << 32 | i as u64, t.probe.clone());
            }
        }
    }

    /// Builds the next generation and offers it to every worker.
    fn publish(&mut self) -> Result<u64, String> {
        let st = self.build_state(&self.registry).map_err(|e| format!("forwarding state refused: {e}"))?;
        Ok(self.publish_state(st))
    }

    /// The next forwarding state from `registry` (the one in force, or a
    /// reload's trial), sharing unchanged services' tables with the state in
    /// force.
    fn build_state(
        &self,
        registry: &Registry,
    ) -> Result<ForwardingState, crate::balancer::state::BuildError> {
        let n = &self.neighbours;
        registry.build(
            self.generation() + 1,
            self.facts,
            &|p, ip| n.mac(p, ip),
            self.now_ms(),
            Some(&self.state),
        )
    }

    /// Sends `st`, built from the registry in force, to every worker.
    fn publish_state(&mut self, st: ForwardingState) -> u64 {
        self.dirty = false;
        self.drain_deadline = self.registry.next_drain_deadline(self.now_ms());
        let st = Arc::new(st);
        self.unsent = self.mailboxes.iter().map(|_| Some(st.clone())).collect();
        self.state = st;
        self.offer();
        self.announce();
        self.generation()
    }

    /// Offers unsent states again (a full inbox refused them).
    fn offer(&mut self) {
        for (slot, mb) in self.unsent.iter_mut().zip(self.mailboxes) {
            if let Some(st) = slot.take() {
                if let Err(st) = mb.publish(st) {
                    *slot = Some(st);
                }
            }
        }
        for mb in self.mailboxes {
            mb.reclaim();
        }
    }

    /// Waits (briefly) until every worker runs generation `g`; the time it took.
    fn wait_applied(&mut self, g: u64) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            self.offer();
            if self.mailboxes.iter().all(|m| m.telemetry.snapshot().generation >= g) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }

    fn publish_and_wait(&mut self) -> Result<Applied, String> {
        let g = self.publish()?;
        Ok(self.wait_published(g))
    }

    fn wait_published(&mut self, g: u64) -> Applied {
        let applied = self.wait_applied(g);
        Applied {
            generation: g,
            applied_ms: applied.map(|d| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
            ..Applied::default()
        }
    }

    /// Re-reads the configuration file; a bad one is refused and the old one
    /// stays in force.
    pub fn reload(&mut self) -> Result<Applied, String> {
        let r = self.try_reload();
        match &r {
            Ok(_) => self.reloads_ok += 1,
            Err(_) => self.reloads_refused += 1,
        }
        self.last_reload = Some(match &r {
            Ok(_) => "applied".into(),
            Err(e) => format!("refused: {e}"),
        });
        r
    }

    fn try_reload(&mut self) -> Result<Applied, String> {
        let start = Instant::now();
        let path = self.cfg_path.clone().ok_or("l4lb was started without a configuration file")?;
        let new = Config::load_cached(&path, &mut self.config_cache).map_err(|e| e.to_string())?;
        // The new services must build before anything changes; the state
        // built is the one published unless passive health changes it.
        let (trial, sum) = self.registry.reloaded(new)?;
        let state = self.build_state(&trial).map_err(|e| format!("{}: {e}", path.display()))?;
        // The VIPs' communities and MED: BIRD takes its new configuration
        // first (it checks it), or the reload is refused.
        if let Some(b) = &self.bird {
            b.reconfigure(&trial.cfg, &path.display().to_string()).map_err(|e| format!("bgp: {e}"))?;
        }
        self.registry = trial;
        // The trial holds every status change so far: what follows may
        // mark more (new passive-health windows start from the counts now).
        self.dirty = false;
        self.passive_work(self.now_ms());
        self.sync_view();
        self.neighbours.track(&needed_neighbours(&self.registry.cfg));
        self.rebuild_targets();
        let g = if self.dirty { self.publish()? } else { self.publish_state(state) };
        let mut v = self.wait_published(g);
        v.reload = Some(ReloadChanges {
            services_added: sum.services_added,
            services_removed: sum.services_removed,
            backends_added: sum.backends_added,
            backends_removed: sum.backends_removed,
            weights_changed: sum.weights_changed,
            files_read: self.config_cache.len(),
            files_parsed: self.config_cache.parsed(),
            took_ms: (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        });
        Ok(v)
    }

    fn sample_rates(&mut self, now: u64) {
        let dt = (now - self.last_rate_ms).max(1) as f64 / 1000.0;
        let first = self.last_rate_ms == 0;
        self.last_rate_ms = now;
        for st in self.registry.backends.values() {
            let (p, b) = self.traffic(st.id);
            let r = self.rates.entry(st.id).or_default();
            if !first {
                r.pps = p.saturating_sub(r.packets) as f64 / dt;
                r.bps = 8.0 * b.saturating_sub(r.bytes) as f64 / dt;
            }
            r.packets = p;
            r.bytes = b;
        }
    }

    fn traffic(&self, id: u32) -> (u64, u64) {
        self.counters.iter().map(|c| c.get(id)).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1))
    }

    fn new_flows(&self, id: u32) -> u64 {
        self.counters.iter().map(|c| c.new_flows(id)).sum()
    }

    /// Backend `id`'s handshakes, every worker together.
    pub fn handshakes(&self, id: u32) -> Handshakes {
        let mut h = Handshakes::default();
        for c in self.counters.iter() {
            let x = c.handshakes(id);
            for (a, b) in h.buckets.iter_mut().zip(x.buckets) {
                *a += b;
            }
            h.sum_ms += x.sum_ms;
        }
        h
    }

    pub fn syn_retried(&self, id: u32) -> u64 {
        self.counters.iter().map(|c| c.syn_retried(id)).sum()
    }

    fn active(&self, id: u32) -> u64 {
        self.mailboxes.iter().map(|m| m.telemetry.active(id) as u64).sum()
    }

    fn telemetry(&self) -> (WorkerStats, Vec<WorkerStats>) {
        let per: Vec<WorkerStats> = self.mailboxes.iter().map(|m| m.telemetry.snapshot()).collect();
        let mut sum = WorkerStats::default();
        for s in &per {
            sum += *s;
        }
        (sum, per)
    }

    /// Each port's counters and (with `xstats`) extended counters.
    fn port_stats(&self, xstats: bool) -> Vec<PortRow> {
        let names = self.registry.cfg.config.ports.iter().map(|p| p.name.clone());
        names
            .zip(self.ports)
            .enumerate()
            .map(|(i, (name, port))| {
                let x = if xstats { port.xstats().unwrap_or_default() } else { Vec::new() };
                let s = port.stats().unwrap_or_default();
                let counters = PortCounters {
                    name,
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    rx_missed: s.rx_missed,
                    rx_errors: s.rx_errors,
                    tx_errors: s.tx_errors,
                    rx_no_mbuf: s.rx_no_mbuf,
                    ..Default::default()
                };
                let mut counters = counters;
                let kernel = self.state.ports.get(i).is_some_and(|p| p.kernel);
                if let Some(k) = self.kernel.filter(|_| kernel).and_then(|k| k.counters.get(i)) {
                    use std::sync::atomic::Ordering::Relaxed;
                    counters.to_kernel = Some(k.to_kernel.load(Relaxed));
                    counters.from_kernel = Some(k.from_kernel.load(Relaxed));
                    counters.kernel_dropped = Some(k.dropped.load(Relaxed));
                }
                (counters, x)
            })
            .collect()
    }

    /// Maglev entries per backend id in the current state.
    fn table_entries(&self) -> BTreeMap<u32, u64> {
        let st = &self.state;
        let mut out = BTreeMap::new();
        for svc in &st.services {
            let n = svc.maglev.entries_per_backend();
            for (pos, &slot) in svc.backends.iter().enumerate() {
                *out.entry(st.backends[slot as usize].id).or_insert(0) +=
                    n.get(pos).copied().unwrap_or(0) as u64;
            }
        }
        out
    }
}

/// (address, MAC) from an ARP reply or a neighbour advertisement.
pub fn neighbour_answer(frame: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    use crate::net::{arp, ethernet, icmp, ipv6};
    let f = ethernet::Frame::new_checked(frame).ok()?;
    match f.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            let a = arp::Packet::new_checked(f.payload()).ok()?;
            (a.op() == arp::OP_REPLY).then(|| (IpAddr::V4(a.sender_ip()), a.sender_mac()))
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(f.payload()).ok()?;
            let na = icmp::parse_ndp(ip.payload()).ok()?;
            (na.msg_type == icmp::v6::NEIGHBOR_ADVERT)
                .then(|| (IpAddr::V6(na.target), na.link_addr.unwrap_or(f.src())))
        }
        _ => None,
    }
}

mod answers;

/// Warns when the kernel's ephemeral ports reach into the VIP-path checks'
/// source ports: a connection of the box's own could then take one.
fn warn_ephemeral_overlap() {
    use crate::dataplane::pipeline::{VIP_PATH_FIRST_PORT, VIP_PATH_PORTS};
    const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let Ok(text) = std::fs::read_to_string(RANGE) else { return };
    let mut it = text.split_whitespace().filter_map(|w| w.parse::<u32>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else { return };
    let (first, last) = (VIP_PATH_FIRST_PORT as u32, VIP_PATH_FIRST_PORT as u32 + VIP_PATH_PORTS as u32 - 1);
    if lo <= last && hi >= first {
        log::warn!(
            "the kernel's ephemeral ports ({RANGE}: {lo}-{hi}) overlap the VIP-path health checks' \
             source ports {first}-{last}: a check finding its port taken moves to the next; \
             keep them apart (sysctl net.ipv4.ip_local_port_range=\"32768 60999\")"
        );
    }
}
