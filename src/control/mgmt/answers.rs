//! The management loop's answers: control requests (status, services,
//! backends, stats, changes, lookup, whatif) and metrics scrapes, built from
//! what it owns — the registry, the forwarding state, the workers'
//! telemetry — as the typed replies of `control::api`.

use super::*;

impl Management<'_> {
    /// Answers one call from the API or metrics thread.
    pub fn handle(&mut self, call: Call) {
        match call {
            Call::Api(req, reply) => {
                let r = self.api(req);
                let _ = reply.send(r);
            }
            Call::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
        }
    }

    fn api(&mut self, req: Request) -> Reply {
        let now = self.now_ms();
        match req {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::Services => Ok(Response::Services(self.services())),
            Request::Backends { service } => {
                if let Some(s) = &service {
                    if self.registry.service(s).is_none() {
                        return Err(format!("no service named `{s}`"));
                    }
                }
                Ok(Response::Backends(self.backends(service.as_deref())))
            }
            Request::Stats => Ok(Response::Stats(Box::new(self.stats()))),
            Request::Drain { backend } => {
                let keys = self.registry.resolve(&backend)?;
                for k in &keys {
                    let st = self.registry.backends.get_mut(&k.0, k.1).expect("resolved");
                    st.draining_since_ms.get_or_insert(now);
                }
                log::info!("drain {backend}");
                let mut v = self.publish_and_wait()?;
                v.backends = keys.iter().map(|k| format!("{}/{}", k.0, k.1)).collect();
                Ok(Response::Applied(v))
            }
            Request::Undrain { backend } => {
                let keys = self.registry.resolve(&backend)?;
                for k in &keys {
                    self.registry.backends.get_mut(&k.0, k.1).expect("resolved").draining_since_ms = None;
                }
                log::info!("undrain {backend}");
                self.publish_and_wait().map(Response::Applied)
            }
            Request::SetWeight { backend, weight } => {
                if weight > MAX_WEIGHT {
                    return Err(format!("weight must be 0 to {MAX_WEIGHT}"));
                }
                let keys = self.registry.resolve(&backend)?;
                for k in &keys {
                    self.registry.backends.get_mut(&k.0, k.1).expect("resolved").weight_override =
                        Some(weight);
                }
                log::info!("set-weight {backend} {weight}");
                self.publish_and_wait().map(Response::Applied)
            }
            Request::Reload => self.reload().map(Response::Applied),
            Request::Bgp => Ok(Response::Bgp(Box::new(self.bgp_status()))),
            Request::Sync => match &self.sync {
                Some(y) => Ok(Response::Sync(Box::new(y.status()))),
                None => Err("flow sync is off: no [sync] section, or sync.enabled = false".into()),
            },
            Request::DrainBox { keep_running } => {
                if self.registry.cfg.config.routing.table == 0 && keep_running {
                    return Err("the box announces nothing ([routing] table is off): nothing to drain".into());
                }
                log::warn!("drain-box{}", if keep_running { " --keep-running" } else { "" });
                let vips = self.drain_box(!keep_running);
                Ok(Response::BoxDrain(BoxDrain {
                    box_state: self.box_state().into(),
                    vips,
                    stopping: self.stopping(),
                }))
            }
            Request::UndrainBox => {
                let vips = self.undrain_box()?;
                Ok(Response::BoxDrain(BoxDrain { box_state: self.box_state().into(), vips, stopping: false }))
            }
            Request::Lookup { proto, src, dst } => self.lookup(proto, src, dst).map(Response::Lookup),
            Request::Whatif { backend, change } => {
                if let Change::Weight(w) = change {
                    if w > MAX_WEIGHT {
                        return Err(format!("weight must be 0 to {MAX_WEIGHT}"));
                    }
                }
                let keys = self.registry.resolve(&backend)?;
                let mut rows = Vec::new();
                for k in keys {
                    let svc = self.registry.service(&k.0).expect("resolved").clone();
                    let w = self.registry.whatif(&svc, k.1, change, now);
                    let id = self.registry.backends[(k.0.as_str(), k.1)].id;
                    let flows = if w.tracked_flows_move { self.active(id) } else { 0 };
                    let list = |v: &[(IpAddr, u64)]| -> Vec<Entries> {
                        v.iter().map(|&(backend, entries)| Entries { backend, entries }).collect()
                    };
                    rows.push(WhatifRow {
                        service: k.0,
                        backend: k.1,
                        table_size: w.table_size,
                        entries_moved: w.entries_moved,
                        tracked_flows_moved: flows,
                        entries_before: list(&w.entries_before),
                        entries_after: list(&w.entries_after),
                    });
                }
                Ok(Response::Whatif(rows))
            }
        }
    }

    fn status(&self) -> Status {
        let (t, per) = self.telemetry();
        let up = self.registry.backends.values().filter(|b| b.health.state != Health::Down).count();
        let ports = self.registry.cfg.config.ports.iter().zip(self.ports);
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            config: self.cfg_path.as_ref().map(|p| p.display().to_string()),
            generation: self.generation(),
            worker_generations: per.iter().map(|p| p.generation).collect(),
            workers: self.mailboxes.len(),
            tsc_hz: self.tsc_hz,
            ports: ports
                .map(|(p, port)| {
                    let link = port.link().ok();
                    // net_tap reads its link by interface name in this
                    // namespace; once the interface is moved, it says down.
                    let devices = &self.registry.cfg.config.dpdk.devices;
                    let spec = devices.iter().find(|d| device_name(d) == p.device);
                    let moved = spec
                        .and_then(|d| tap_interface(d))
                        .filter(|i| !std::path::Path::new("/sys/class/net").join(i).exists());
                    PortStatus {
                        name: p.name.clone(),
                        device: p.device.clone(),
                        link_up: if moved.is_some() { None } else { link.map(|l| l.up) },
                        speed_mbps: link.map(|l| l.speed_mbps),
                        link_note: moved.map(|i| {
                            format!(
                                "TAP interface {i} is in another network namespace: DPDK cannot read its link \
                                 from here (the port still forwards)"
                            )
                        }),
                    }
                })
                .collect(),
            services: self.registry.cfg.config.services.len(),
            backends: self.registry.backends.len(),
            backends_not_down: up,
            flows: t.flows,
            rx_packets: t.counters[Counter::RxPackets],
            reloads: Reloads {
                applied: self.reloads_ok,
                refused: self.reloads_refused,
                last: self.last_reload.clone(),
            },
        }
    }

    /// `bgp`: each VIP's announcement and BIRD's sessions.
    pub(super) fn bgp_status(&self) -> BgpStatus {
        let r = &self.registry;
        let checked = |svc: &str, addr: IpAddr| {
            r.backends.get(svc, addr).is_some_and(|b| b.health.state != Health::Unknown)
        };
        let decided = super::super::routing::decide(&self.state, &r.cfg.config, &checked);
        let state = self.box_state();
        let vips = decided
            .into_iter()
            .map(|(vip, d)| {
                let announced = self.announced(vip).unwrap_or(false);
                let reason = if state != "announcing" {
                    format!("the box is {state}")
                } else if r.cfg.config.routing.table == 0 {
                    "[routing] table is off".into()
                } else {
                    d.reason
                };
                VipRow { vip, services: d.services, announced, reason }
            })
            .collect();
        let (daemon, peers) = match &self.bird {
            Some(b) => {
                let seen = b.seen();
                let d = DaemonRow {
                    running: seen.running,
                    restarts: b.restarts(),
                    socket: b.socket().display().to_string(),
                    error: seen.error,
                };
                (Some(d), seen.peers)
            }
            None => (None, Vec::new()),
        };
        BgpStatus { box_state: state.into(), table: r.cfg.config.routing.table, vips, daemon, peers }
    }

    fn services(&self) -> Vec<ServiceRow> {
        let entries = self.table_entries();
        let c = &self.registry.cfg.config;
        c.services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (mut p, mut b, mut nf, mut act, mut up) = (0, 0, 0, 0, 0);
                for be in &s.backends {
                    let st = &self.registry.backends[(s.name.as_str(), be.address)];
                    let (bp, bb) = self.traffic(st.id);
                    p += bp;
                    b += bb;
                    nf += self.new_flows(st.id);
                    act += self.active(st.id);
                    up += (entries.contains_key(&st.id) && st.health.state != Health::Down) as u64;
                }
                ServiceRow {
                    name: s.name.clone(),
                    vip: s.vip,
                    protocol: format!("{:?}", s.protocol).to_lowercase(),
                    port: s.port,
                    forwarding: format!("{:?}", s.forwarding).to_lowercase(),
                    scheduler: format!("{:?}", s.scheduler),
                    backends: s.backends.len(),
                    backends_in_service: up,
                    packets: p,
                    bytes: b,
                    new_flows: nf,
                    active_flows: act,
                    health_check: s.health.as_ref().map(|h| h.check.name().to_owned()),
                    announced: self.announced(s.vip),
                    access_prefixes: self.registry.cfg.access.get(i).cloned().flatten().map(|a| a.prefixes),
                    denied_flows: self.service_count(&s.name, ServiceEvent::Denied),
                    quota: s.quota.as_ref().map(quota_words),
                    over_quota_dropped: self.service_count(&s.name, ServiceEvent::OverQuotaDropped),
                    over_quota_stateless: self.service_count(&s.name, ServiceEvent::OverQuotaStateless),
                }
            })
            .collect()
    }

    fn backends(&self, only: Option<&str>) -> Vec<BackendRow> {
        let entries = self.table_entries();
        let now = self.now_ms();
        let mut rows = Vec::new();
        for s in self.registry.cfg.config.services.iter().filter(|s| only.is_none_or(|o| o == s.name)) {
            for b in &s.backends {
                let st = &self.registry.backends[(s.name.as_str(), b.address)];
                let (p, by) = self.traffic(st.id);
                let r = self.rates.get(&st.id).copied().unwrap_or_default();
                let in_state = self.state.slot_of(st.id).is_some_and(|slot| {
                    self.state
                        .services
                        .iter()
                        .any(|sv| sv.name == s.name && sv.backends.contains(&(slot as u32)))
                });
                rows.push(BackendRow {
                    service: s.name.clone(),
                    backend: b.address,
                    id: st.id,
                    health: st.health.state.name().into(),
                    draining: st.draining_since_ms.is_some(),
                    in_state,
                    weight: b.weight,
                    weight_override: st.weight_override,
                    effective_weight: if in_state {
                        self.registry.effective_weight(s, b.address, now)
                    } else {
                        0
                    },
                    table_entries: entries.get(&st.id).copied().unwrap_or(0),
                    active_flows: self.active(st.id),
                    new_flows: self.new_flows(st.id),
                    packets: p,
                    bytes: by,
                    pps: r.pps,
                    bps: r.bps,
                    rtt_us: st.last_check_ms.is_some().then_some(st.rtt_us),
                    checks_ok: st.checks_ok,
                    checks_failed: st.checks_failed,
                    checks_not_run: st.checks_not_run,
                    last_error: st.last_error.clone(),
                    syn_retried: self.syn_retried(st.id),
                    suspect: st.suspect.clone(),
                    handshake_us: st.handshake_us,
                    check_via: s.health.as_ref().map(|_| {
                        let vip = crate::control::config::checked_via_vip(&self.registry.cfg.config, s, b);
                        if vip { "vip" } else { "backend" }.to_string()
                    }),
                });
            }
        }
        rows
    }

    fn stats(&self) -> Stats {
        let (_, per) = self.telemetry();
        let ports = self.port_stats(false).into_iter().map(|(c, _)| c).collect();
        Stats::from_workers(&per, self.generation(), ports)
    }

    fn lookup(&mut self, proto: Protocol, s: SocketAddr, d: SocketAddr) -> Result<Lookup, String> {
        let p = proto.number();
        if s.is_ipv4() != d.is_ipv4() {
            return Err("source and destination are of different address families".into());
        }
        let key = FlowKey::new(s.ip(), d.ip(), p, s.port(), d.port());
        let st = self.state.clone();
        let Some(si) = st.find_service(&ip16(d.ip()), p, d.port()) else {
            return Err(format!("no service for {proto} {d}"));
        };
        let svc = &st.services[si];
        // Ask every worker whether it tracks the flow.
        self.query_tag += 1;
        let tag = self.query_tag;
        for mb in self.mailboxes {
            while mb.answers.pop().is_some() {}
            let persist_id = (svc.persistence_ms > 0).then_some(svc.persist_id);
            let _ = mb.queries.push(FlowQuery { tag, key, persist_id });
        }
        let mut tracked = None;
        let mut persisted = None;
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut answered = vec![false; self.mailboxes.len()];
        while Instant::now() < deadline && answered.iter().any(|a| !a) {
            for (w, mb) in self.mailboxes.iter().enumerate() {
                while let Some(a) = mb.answers.pop() {
                    if a.tag == tag {
                        answered[w] = true;
                        if let Some(e) = a.entry {
                            tracked = Some((w, e));
                        }
                        if let Some(p) = a.persisted {
                            persisted = persisted.or(Some((w, p)));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let addr_of = |id: u32| st.slot_of(id).map(|s| st.backends[s].addr);
        let mut v = Lookup {
            service: svc.name.clone(),
            flow_hash: format!("{:016x}", key.hash()),
            backend: None,
            why: String::new(),
        };
        if let Some((w, e)) = tracked {
            if let Some(a) = addr_of(e.backend) {
                v.backend = Some(a);
                v.why = format!("tracked flow on worker {w} (state {:?}): it keeps its backend", e.state);
                return Ok(v);
            }
            // Its backend left: the next packet is scheduled again, as below.
        }
        // A flow to decide: the access lists first, as the workers do.
        if svc.access.as_deref().is_some_and(|a| !a.permits(&key.src)) {
            v.why = format!(
                "refused: {} is not allowed by the access lists of service {} ([access] and its own):                  dropped (access_denied)",
                s.ip(),
                svc.name
            );
            return Ok(v);
        }
        // A new flow of a persisted client goes where the box keeps that
        // client, while that backend is up, not draining and of weight above
        // 0. The workers share one persistence table: any answer will do.
        if let Some((_, (id, left_ms))) = persisted {
            if let Some(b) = st.slot_of(id).filter(|&b| st.backends[b].takes_new_flows()) {
                let left_s = left_ms.div_ceil(1000);
                v.backend = Some(st.backends[b].addr);
                v.why = format!(
                    "new flow of a persisted client: l4lb keeps {} on this backend for {left_s} s more \
                     (persistence_s, renewed by the client's packets)",
                    s.ip()
                );
                return Ok(v);
            }
        }
        let active: Vec<u32> = (0..st.id_space() as u32).map(|id| self.active(id) as u32).collect();
        let mut sched = SchedState { rr: 0, wrr: vec![0; svc.backends.len()] };
        let pick = svc.pick(&st, &key, key.hash(), &active, &mut sched);
        v.backend = pick.map(|b| st.backends[b].addr);
        let how = match svc.scheduler {
            crate::balancer::state::Scheduler::Maglev => format!(
                "new flow: Maglev entry {} of {} (the same on every l4lb with this configuration)",
                crate::balancer::hash::reduce(key.hash(), svc.maglev.size()),
                svc.maglev.size()
            ),
            crate::balancer::state::Scheduler::SourceIp { .. } => {
                "new flow: Maglev on the source address".into()
            }
            s => format!("new flow: {s:?} picks from each worker's own counts; this is its choice now"),
        };
        let how =
            if pick.is_none() { "no backend takes new flows: dropped (no_backend)".to_string() } else { how };
        v.why = if svc.persistence_ms > 0 {
            format!("{how}; l4lb keeps no backend for this client (persistence), so the scheduler decides")
        } else {
            how
        };
        if let Some((w, _)) = tracked {
            v.why = format!("tracked flow on worker {w}, but its backend left: {}", v.why);
        }
        Ok(v)
    }

    /// Prometheus text exposition (`control::metrics`) of what this scrape
    /// gathers.
    pub fn metrics(&self) -> String {
        let (_, per) = self.telemetry();
        let entries = self.table_entries();
        let c = &self.registry.cfg.config;
        let mut services = Vec::new();
        let mut backends = Vec::new();
        for (i, s) in c.services.iter().enumerate() {
            let mut sums = [0u64; 5];
            sums[4] = self.service_count(&s.name, ServiceEvent::Denied);
            for b in &s.backends {
                let st = &self.registry.backends[(s.name.as_str(), b.address)];
                let (p, by) = self.traffic(st.id);
                let traffic = [p, by, self.new_flows(st.id), self.active(st.id)];
                for (a, v) in sums.iter_mut().zip(traffic) {
                    *a += v;
                }
                backends.push(metrics::BackendRow {
                    service: s.name.clone(),
                    addr: b.address.to_string(),
                    status: st.clone(),
                    traffic,
                    maglev_entries: entries.get(&st.id).copied(),
                    syn_retried: self.syn_retried(st.id),
                    handshakes: self.handshakes(st.id),
                });
            }
            services.push(metrics::ServiceRow {
                name: s.name.clone(),
                vip: s.vip.to_string(),
                sums,
                announced: self.announced(s.vip),
                access_prefixes: self
                    .registry
                    .cfg
                    .access
                    .get(i)
                    .cloned()
                    .flatten()
                    .map(|a| a.prefixes as u64),
                over_quota: s.quota.as_ref().map(|_| {
                    [
                        self.service_count(&s.name, ServiceEvent::OverQuotaDropped),
                        self.service_count(&s.name, ServiceEvent::OverQuotaStateless),
                    ]
                }),
            });
        }
        metrics::render(&metrics::Scrape {
            generation: self.generation(),
            reloads_applied: self.reloads_ok,
            reloads_refused: self.reloads_refused,
            ports: self.port_stats(true),
            services,
            backends,
            workers: per,
            bgp: (c.routing.table != 0).then(|| self.bgp_status()),
            sync: self.sync.as_ref().map(|y| y.status()),
        })
    }
}

/// A service's quota as `ctl services` shows it: "5000/s (burst 500),
/// 25% of each table, drop".
fn quota_words(q: &crate::control::config::QuotaSection) -> String {
    let mut parts = Vec::new();
    if let Some(r) = q.new_flows_per_s {
        let burst = q.new_flows_burst.unwrap_or((r / 10).max(1));
        parts.push(format!("{r}/s (burst {burst})"));
    }
    if let Some(f) = q.flow_table_share {
        parts.push(format!("{}% of each table", f * 100.0));
    }
    parts.push(format!("{:?}", q.over_quota).to_lowercase());
    parts.join(", ")
}
