//! `l4lb run`: start EAL from the configuration, bring up the ports, run the
//! workers until told to stop, then report and release everything.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::balancer::state::ForwardingState;
use crate::balancer::synced::{AtRisk, SyncWriter, SyncedFlows};
use crate::control::api::{self, Call};
use crate::control::config::{device_name, ConfigCache, Validated, MEMPOOL_CACHE};
use crate::control::mgmt::Management;
use crate::control::registry::Registry;
use crate::control::state_build::{worker_config, PortFacts};
use crate::dataplane::balance::{BalanceWorker, Punt};
use crate::dataplane::exception::{KernelLink, KernelQueues};
use crate::dataplane::forward::ForwardWorker;
use crate::dataplane::mailbox::StateMailbox;
use crate::dataplane::pipeline::{BackendCounters, VipPathPorts};
use crate::dataplane::pipeline::{Counter, DropReason, DROPS_METRIC};
use crate::dataplane::poll::PollConfig;
use crate::dataplane::telemetry::WorkerStats;
use crate::dpdk::{lcore, DpdkError, Eal, Mempool, PacketCapture, Port, PortConfig, PortStats};
use crossbeam::queue::ArrayQueue;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting DPDK failed: {0}\n  hint: {1}")]
    Eal(DpdkError, &'static str),
    #[error("port `{port}` ({device}): {source}")]
    Port { port: String, device: String, source: DpdkError },
    #[error("packet buffer pool: {0}\n  hint: reserve more hugepages (scripts/setup-hugepages.sh) or lower dpdk.mbufs")]
    Pool(DpdkError),
    #[error("EAL started {got} lcores but the configuration expects {want} workers")]
    Lcores { got: usize, want: usize },
    #[error("worker: {0}")]
    Worker(String),
    #[error("{0}")]
    Mtu(String),
    #[error("forwarding state: {0}")]
    State(#[from] crate::balancer::state::BuildError),
    #[error("{0}")]
    Control(#[from] api::ApiError),
    #[error("bgp: {0}")]
    Bgp(String),
    #[error("sync: {0}")]
    Sync(String),
    #[error("{0}\n  hint: l4lb needs root (CAP_NET_ADMIN) to set up a port's kernel interface, or set ports.kernel.enabled = false")]
    Kernel(#[from] crate::control::kernel::KernelError),
}

/// Flow sync: reports each worker's ring holds before the sync thread
/// takes them (it does every 5 ms; a full ring loses reports, counted).
const SYNC_RING: usize = 16_384;

/// Each worker's flow-sync report ring, by worker index.
type SyncRings = Vec<Arc<ArrayQueue<AtRisk>>>;

/// What the signal handlers tell the running l4lb.
#[derive(Debug, Default)]
pub struct Signals {
    /// SIGINT / SIGTERM: drain and stop.
    pub stop: AtomicBool,
    /// SIGHUP: re-read the configuration.
    pub reload: AtomicBool,
}

/// Final figures of a run.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// Plain forwarding (no services configured).
    pub workers: WorkerStats,
    /// Balancing (services configured).
    pub balance: Option<WorkerStats>,
    pub ports: Vec<(String, PortStats)>,
    /// Per service (by name): what each backend was sent.
    pub services: Vec<(String, Vec<BackendTraffic>)>,
}

/// Packets and bytes sent to one backend: (address, packets, bytes).
pub type BackendTraffic = (String, u64, u64);

/// What one worker lcore runs.
enum Plan<'p> {
    Forward(ForwardWorker<'p>),
    Balance(Box<BalanceWorker<'p>>, usize),
}

/// What one worker lcore reports.
#[derive(Default)]
enum Final {
    #[default]
    None,
    Forward(WorkerStats),
    Balance(WorkerStats),
}

/// Runs until `signals.stop` is set. Progress goes to the log; the final
/// report to `out`. `source` is the file `reload` re-reads, with what
/// reading it parsed (a reload parses only the files that changed).
///
/// In order: EAL, the packet pool and the ports; packet capture; for
/// balancing, the first forwarding state; the workers' queues; then the
/// workers on their lcores while this (the main lcore) runs the management
/// loop; at the stop, the report.
pub fn run(
    cfg: &Validated,
    source: Option<(&Path, &ConfigCache)>,
    signals: &Signals,
    out: &mut dyn Write,
) -> Result<RunReport, RunError> {
    let stop = &signals.stop;
    // The workers stop on this, set when the management loop is done (after
    // a box's drain, which keeps forwarding past the signal).
    let halt = &AtomicBool::new(false);
    let eal = Eal::init(cfg.eal_args()).map_err(|e| {
        RunError::Eal(
            e,
            "check dpdk.devices and dpdk.lcores; without hugepages run scripts/setup-hugepages.sh or set dpdk.hugepages = false",
        )
    })?;
    let workers = eal.worker_lcores();
    if workers.len() != cfg.workers.len() {
        return Err(RunError::Lcores { got: workers.len(), want: cfg.workers.len() });
    }
    let pool = match cfg.mbuf_data_room() {
        Some(room) => Mempool::with_data_room(&eal, "l4lb_pkts", cfg.mbufs(), MEMPOOL_CACHE, room, -1),
        None => Mempool::new(&eal, "l4lb_pkts", cfg.mbufs(), MEMPOOL_CACHE, -1),
    }
    .map_err(RunError::Pool)?;
    let mut ports = start_ports(cfg, &eal, &pool)?;
    let kernel_ports = start_kernel_ports(cfg, &eal, &pool, &ports)?;
    let kernel_link = KernelLink::new(
        cfg.config.ports.iter().map(|p| (p.ipv4.map(|a| a.addr), p.ipv6.map(|a| a.addr))).collect(),
    );
    let capture = start_capture(cfg, &eal);
    let poll = poll_config(cfg, &eal);
    let mailboxes: Vec<StateMailbox> = workers.iter().map(|_| StateMailbox::new(4)).collect();
    let balancing =
        if cfg.config.services.is_empty() { None } else { Some(first_state(cfg, &ports, &mailboxes)?) };
    // Flow sync: the table of peers' flows the workers consult, the rings
    // they report their own on (read by the management side's sync threads).
    let sync = cfg.config.sync.as_ref().filter(|y| y.enabled && balancing.is_some()).map(|y| {
        let (table, writer) = SyncedFlows::new(y.capacity);
        let rings: SyncRings = workers.iter().map(|_| Arc::new(ArrayQueue::new(SYNC_RING))).collect();
        (table, writer, rings)
    });
    let sync_parts = sync.as_ref().map(|(t, _, r)| (t.clone(), r.clone()));
    let (plans, counter_blocks) = plan_workers(
        cfg,
        &ports,
        workers.len(),
        balancing.is_some(),
        poll,
        sync_parts,
        &kernel_link.vip_path,
    )?;
    let mut sync_side = sync.map(|(_, w, r)| (w, r));
    let tsc_per_ms = eal.tsc_hz() / 1000;

    // Each worker writes its final counters here before its lcore returns.
    let finals: Vec<Mutex<Final>> = workers.iter().map(|_| Mutex::default()).collect();
    let mailboxes = &mailboxes;
    let mut final_backends = Vec::new();
    let (launch, joined) = lcore::scope(&eal, |s| {
        for ((plan, lc), slot) in plans.into_iter().zip(&workers).zip(&finals) {
            let launched = s.launch(*lc, move || {
                let st = match plan {
                    Plan::Forward(f) => Final::Forward(f.run(poll, tsc_per_ms, halt)),
                    Plan::Balance(b, k) => Final::Balance(b.run(poll, tsc_per_ms, mailboxes, k, halt)),
                };
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = st;
                0
            });
            if let Err(e) = launched {
                stop.store(true, Ordering::SeqCst);
                halt.store(true, Ordering::SeqCst);
                return Err(RunError::Worker(e.to_string()));
            }
        }
        let ids: Vec<String> = workers.iter().map(|l| l.id().to_string()).collect();
        log::info!(
            "l4lb running: {} ports, {} workers on lcores {}; Ctrl-C or SIGTERM stops",
            ports.len(),
            workers.len(),
            ids.join(",")
        );
        let Some(first) = balancing else {
            // Plain forwarding: nothing to manage but the stop signal.
            while !stop.load(Ordering::Relaxed) {
                if let Some(c) = &capture {
                    c.sweep();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            halt.store(true, Ordering::SeqCst);
            return Ok(());
        };
        let ctx = ManageContext {
            cfg,
            source,
            ports: &ports,
            pool: &pool,
            mailboxes,
            counters: &counter_blocks,
            capture: capture.as_ref(),
            tsc_hz: tsc_per_ms * 1000,
            kernel: &kernel_link,
        };
        // The exception path's thread, beside the management loop, until it ends.
        let kernel_queues = kernel_queues(&kernel_ports, cfg).inspect_err(|_| {
            stop.store(true, Ordering::SeqCst);
            halt.store(true, Ordering::SeqCst);
        })?;
        let kernel_stop = AtomicBool::new(false);
        let managed = std::thread::scope(|t| {
            if !kernel_queues.is_empty() {
                let (link, stop) = (&kernel_link, &kernel_stop);
                t.spawn(move || crate::dataplane::exception::run(kernel_queues, link, mailboxes, stop));
            }
            let r = manage(&ctx, first, signals, sync_side.take());
            kernel_stop.store(true, Ordering::SeqCst);
            r
        });
        halt.store(true, Ordering::SeqCst);
        final_backends = managed?;
        Ok(())
    });
    for (lc, res) in &joined {
        if let Err(e) = res {
            log::error!("worker on lcore {} failed: {e}", lc.id());
        }
    }
    launch?;
    for mb in mailboxes {
        mb.reclaim();
    }
    let report = collect_report(cfg, finals, &mut ports, &final_backends, &counter_blocks);
    print_report(&report, out);
    drop(capture);
    drop(kernel_ports);
    drop(ports);
    drop(pool);
    drop(eal);
    Ok(report)
}

/// Configures and starts every port, with its queues, MTU and MAC.
fn start_ports(cfg: &Validated, eal: &Eal, pool: &Mempool) -> Result<Vec<Port>, RunError> {
    let mut ports = Vec::with_capacity(cfg.config.ports.len());
    for (i, p) in cfg.config.ports.iter().enumerate() {
        let port_err = |source| RunError::Port { port: p.name.clone(), device: p.device.clone(), source };
        let spec = cfg.config.dpdk.devices.iter().find(|d| device_name(d) == p.device).expect("validated");
        let id = Port::id_by_name(eal, device_name(spec)).map_err(port_err)?;
        let pc = PortConfig {
            rx_queues: cfg.rx_queues(i),
            tx_queues: cfg.tx_queues(i),
            rx_desc: p.rx_desc,
            tx_desc: p.tx_desc,
            mtu: p.mtu,
            promiscuous: true,
        };
        let mut port = Port::configure(eal, id, &pc, pool).map_err(port_err)?;
        if let Some(mac) = p.mac {
            port.set_mac(mac).map_err(port_err)?;
        }
        port.start().map_err(port_err)?;
        let mac = port.mac().map_err(port_err)?;
        log::info!(
            "port {} ({}, driver {}): {} rx / {} tx queues, mac {}, rss {}",
            p.name,
            p.device,
            port.info().driver,
            pc.rx_queues,
            pc.tx_queues,
            crate::net::ethernet::fmt_mac(&mac),
            if port.rss_hf() != 0 { "on" } else { "off" },
        );
        ports.push(port);
    }
    Ok(ports)
}

/// Starts each port's kernel interface device (one RX and one TX queue, for
/// the exception path's thread) and gives the Linux interface the port's
/// MAC, MTU and addresses. By data port index.
fn start_kernel_ports(
    cfg: &Validated,
    eal: &Eal,
    pool: &Mempool,
    ports: &[Port],
) -> Result<Vec<(usize, Port)>, RunError> {
    let mut out = Vec::new();
    for k in cfg.kernel_interfaces() {
        let p = &cfg.config.ports[k.port];
        let device = k.device();
        let port_err = |source| RunError::Port {
            port: format!("{} (kernel interface)", p.name),
            device: device.clone(),
            source,
        };
        let id = Port::id_by_name(eal, &device).map_err(port_err)?;
        let pc = PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: crate::control::config::KERNEL_DESC,
            tx_desc: crate::control::config::KERNEL_DESC,
            mtu: None,
            promiscuous: true,
        };
        let mut port = Port::configure(eal, id, &pc, pool).map_err(port_err)?;
        port.start().map_err(port_err)?;
        let data = &ports[k.port];
        let data_err = |source| RunError::Port { port: p.name.clone(), device: p.device.clone(), source };
        let (mac, mtu) = (data.mac().map_err(data_err)?, data.mtu().map_err(data_err)?);
        let _ = port.set_mtu(mtu);
        crate::control::kernel::take_identity(&k.name, p, mac, mtu)?;
        log::info!(
            "port {}: kernel interface {} ({:?}), mac {}, mtu {mtu}, addresses {:?}",
            p.name,
            k.name,
            k.driver,
            crate::net::ethernet::fmt_mac(&mac),
            crate::control::kernel::addresses(p)
        );
        out.push((k.port, port));
    }
    Ok(out)
}

/// The kernel interface devices' queues, for the exception path's thread.
fn kernel_queues<'p>(
    kernel_ports: &'p [(usize, Port)],
    cfg: &Validated,
) -> Result<Vec<KernelQueues<'p>>, RunError> {
    let mut out = Vec::new();
    for (i, port) in kernel_ports {
        let p = &cfg.config.ports[*i];
        let port_err = |source| RunError::Port {
            port: format!("{} (kernel interface)", p.name),
            device: String::new(),
            source,
        };
        let mut tx = port.tx_queue(0, 0).map_err(port_err)?;
        tx.set_flush_at(1);
        out.push(KernelQueues { port: *i as u16, rx: port.rx_queue(0).map_err(port_err)?, tx });
    }
    Ok(out)
}

/// DPDK's packet capture server, so `dpdk-dumpcap` can attach: only with
/// EAL's shared files (it attaches as a secondary process).
fn start_capture(cfg: &Validated, eal: &Eal) -> Option<PacketCapture> {
    let d = &cfg.config.dpdk;
    if d.in_memory || !d.hugepages {
        return None;
    }
    // Test-only fault injection: a worker waits this long inside the capture
    // callback before each copy, as a descheduled one would
    // (tests/e2e_dpdk_tools.rs).
    let stall = std::env::var("L4LB_TEST_CAPTURE_STALL_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_micros)
        .unwrap_or_default();
    match eal.enable_packet_capture(stall) {
        Ok(c) => {
            log::info!("packet capture on: dpdk-dumpcap --file-prefix {} -i PORT", d.file_prefix);
            if !stall.is_zero() {
                log::warn!("packet capture: test stall of {stall:?} per copied burst");
            }
            Some(c)
        }
        Err(e) => {
            log::warn!("packet capture off: {e}");
            None
        }
    }
}

fn poll_config(cfg: &Validated, eal: &Eal) -> PollConfig {
    let w = &cfg.config.workers;
    PollConfig {
        burst_size: w.burst_size,
        tx_drain_tsc: eal.us_to_tsc(w.tx_drain_us),
        idle_polls_before_pause: w.idle_polls_before_pause,
        idle_pause: Duration::from_micros(w.idle_pause_us),
    }
}

/// What balancing starts from: the backend registry (which assigns the
/// backends' stable ids), the first forwarding state (already in every
/// worker's mailbox) and the ports' MACs and MTUs.
struct FirstState {
    registry: Registry,
    state: Arc<ForwardingState>,
    facts: Vec<PortFacts>,
}

fn first_state(cfg: &Validated, ports: &[Port], mailboxes: &[StateMailbox]) -> Result<FirstState, RunError> {
    let mut facts = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let p = &cfg.config.ports[i];
        let port_err = |source| RunError::Port { port: p.name.clone(), device: p.device.clone(), source };
        let mtu = port.mtu().unwrap_or(p.mtu.unwrap_or(1500));
        facts.push(PortFacts { mac: port.mac().map_err(port_err)?, mtu });
    }
    // Ports without a configured MTU have the device's: check it now.
    let mtus: Vec<u16> = facts.iter().map(|f| f.mtu).collect();
    if let Some(why) = cfg.mtu_problem(&mtus) {
        return Err(RunError::Mtu(why));
    }
    if let Some(why) = cfg.mbuf_room_problem(&mtus) {
        log::warn!("{why}");
    }
    // The first state comes from the registry like every later one.
    let registry = Registry::new(cfg.clone());
    let state = Arc::new(registry.build(1, &facts, &|_, _| None, 0, None)?);
    for mb in mailboxes {
        // Fresh rings have room: this cannot be refused.
        let _ = mb.publish(state.clone());
    }
    log::info!(
        "balancing {} services over {} backends (forwarding state generation {})",
        state.services.len(),
        state.backends.len(),
        state.generation
    );
    Ok(FirstState { registry, state, facts })
}

/// Each worker's queues: worker k polls RX queues k, k+W, k+2W... of every
/// port and owns TX queue k of every port. Balancing workers get a pipeline
/// each, whose per-backend counters the management core reads.
fn plan_workers<'p>(
    cfg: &Validated,
    ports: &'p [Port],
    workers: usize,
    balancing: bool,
    poll: PollConfig,
    sync: Option<(Arc<SyncedFlows>, SyncRings)>,
    vip_path: &Arc<VipPathPorts>,
) -> Result<(Vec<Plan<'p>>, Vec<Arc<BackendCounters>>), RunError> {
    let mut plans = Vec::with_capacity(workers);
    let mut counter_blocks = Vec::with_capacity(workers);
    // Balancing workers are one team: they share the persistence table and
    // hand each other packets (`Verdict::Handoff`).
    let mut team = if balancing {
        crate::dataplane::pipeline::Worker::team_on_hugepages(worker_config(cfg), workers).into_iter()
    } else {
        Vec::new().into_iter()
    };
    for k in 0..workers {
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let p = &cfg.config.ports[i];
            let port_err = |source| RunError::Port { port: p.name.clone(), device: p.device.clone(), source };
            for q in (k..port.rx_queue_count() as usize).step_by(workers) {
                rx.push((port.rx_queue(q as u16).map_err(port_err)?, i));
            }
            let mut t = port.tx_queue(k as u16, poll.tx_drain_tsc).map_err(port_err)?;
            t.set_flush_at(cfg.config.workers.burst_size);
            tx.push(t);
        }
        plans.push(if balancing {
            let rx = rx.into_iter().map(|(q, i)| (q, i as u16)).collect();
            let mut pipeline = team.next().expect("one pipeline per worker");
            if let Some((table, rings)) = &sync {
                pipeline.set_sync(table.clone(), rings[k].clone());
            }
            counter_blocks.push(pipeline.backend_counters());
            let w = &cfg.config.workers;
            let punt = Punt::new(w.punt_rate_per_s, w.punt_burst, vip_path.clone());
            Plan::Balance(Box::new(BalanceWorker { rx, tx, pipeline, punt }), k)
        } else {
            let rx = rx.into_iter().map(|(q, i)| (q, cfg.forward[i])).collect();
            Plan::Forward(ForwardWorker { rx, tx })
        });
    }
    Ok((plans, counter_blocks))
}

/// What the management loop borrows from `run`.
struct ManageContext<'a> {
    cfg: &'a Validated,
    source: Option<(&'a Path, &'a ConfigCache)>,
    ports: &'a [Port],
    pool: &'a Mempool,
    mailboxes: &'a [StateMailbox],
    counters: &'a [Arc<BackendCounters>],
    capture: Option<&'a PacketCapture>,
    tsc_hz: u64,
    kernel: &'a KernelLink,
}

/// Every configured backend at the stop (down ones too), by service, with
/// its stable id.
type FinalBackends = Vec<(String, Vec<(std::net::IpAddr, u32)>)>;

/// The management lcore's loop while balancing: neighbours, health checks,
/// changes, the control API and metrics, until the stop.
fn manage(
    ctx: &ManageContext<'_>,
    first: FirstState,
    signals: &Signals,
    sync: Option<(SyncWriter, SyncRings)>,
) -> Result<FinalBackends, RunError> {
    let stop = &signals.stop;
    // Its helper threads (health checks, API, metrics) inherit this.
    crate::dpdk::block_driver_signals();
    let (calls_tx, calls) = crossbeam::channel::unbounded::<Call>();
    let socket = ctx.cfg.control_socket();
    let servers = match api::start(&socket, &ctx.cfg.config.control.metrics_address, calls_tx) {
        Ok(s) => s,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
    };
    log::info!(
        "control socket {}{}",
        socket.display(),
        servers.metrics_addr.map(|a| format!(", metrics on http://{a}/metrics")).unwrap_or_default()
    );
    let mut mgmt = Management::new(
        first.registry,
        ctx.source.map(|(p, c)| (p.to_path_buf(), c.clone())),
        &first.facts,
        ctx.ports,
        ctx.pool,
        ctx.mailboxes,
        ctx.counters.to_vec(),
        first.state,
    );
    mgmt.tsc_hz = ctx.tsc_hz;
    mgmt.set_kernel(ctx.kernel);
    if ctx.cfg.config.bgp.is_some() {
        let source = ctx.source.map_or("(no file)".into(), |(p, _)| p.display().to_string());
        match crate::control::bird::Bird::start(ctx.cfg, &source) {
            Ok(b) => mgmt.bird = Some(b),
            Err(e) => {
                mgmt.withdraw_routes();
                stop.store(true, Ordering::SeqCst);
                return Err(RunError::Bgp(e));
            }
        }
    }
    if let (Some((writer, rings)), Some(y)) = (sync, ctx.cfg.config.sync.as_ref()) {
        let tsc_per_ms = (ctx.tsc_hz / 1000).max(1);
        let clock: crate::control::sync::Clock = Arc::new(move || crate::dpdk::tsc() / tsc_per_ms);
        match crate::control::sync::FlowSync::start(y, rings, writer, Default::default(), clock) {
            Ok(s) => mgmt.start_sync(s),
            Err(e) => {
                mgmt.withdraw_routes();
                stop.store(true, Ordering::SeqCst);
                return Err(RunError::Sync(e));
            }
        }
    }
    // Ready for systemd: ports up, the first state with the workers, the
    // control socket listening.
    let mut systemd = crate::control::systemd::Notifier::new();
    let serving = |m: &Management<'_>| {
        format!(
            "balancing {} services (forwarding state generation {})",
            m.registry.cfg.config.services.len(),
            m.generation()
        )
    };
    systemd.ready(&serving(&mgmt));
    let mut told_stopping = false;
    // A stop (signal) first takes the box out of the fleet: GRACEFUL_SHUTDOWN,
    // withdrawal, forwarding while the routers move traffic away.
    loop {
        systemd.tick();
        if stop.load(Ordering::Relaxed) && !mgmt.stopping() {
            mgmt.drain_box(true);
        }
        // A signal's stop or `ctl drain-box`'s.
        if mgmt.stopping() && !told_stopping {
            told_stopping = true;
            systemd.stopping("withdrawing the VIPs and draining before the stop");
        }
        if mgmt.drain_finished() {
            break;
        }
        let reload = signals.reload.swap(false, Ordering::SeqCst);
        if reload {
            systemd.reloading();
        }
        mgmt.tick(reload);
        if reload {
            systemd.ready(&serving(&mgmt));
        }
        if let Some(c) = ctx.capture {
            c.sweep();
        }
        if let Ok(call) = calls.recv_timeout(Duration::from_millis(10)) {
            mgmt.handle(call);
            while let Ok(call) = calls.try_recv() {
                mgmt.handle(call);
            }
        }
    }
    mgmt.withdraw_routes();
    drop(servers);
    if mgmt.generation() > 1 || mgmt.neighbours.resolved() > 0 {
        log::info!(
            "neighbours: {} of {} resolved; forwarding state generation {}",
            mgmt.neighbours.resolved(),
            mgmt.neighbours.len(),
            mgmt.generation()
        );
    }
    let r = &mgmt.registry;
    Ok(r.cfg
        .config
        .services
        .iter()
        .map(|s| {
            let ids = s
                .backends
                .iter()
                .filter_map(|b| r.backends.get(&s.name, b.address).map(|st| (b.address, st.id)))
                .collect();
            (s.name.clone(), ids)
        })
        .collect())
}

/// The workers' final counters, the ports' (which stop here) and what each
/// backend was sent.
fn collect_report(
    cfg: &Validated,
    finals: Vec<Mutex<Final>>,
    ports: &mut [Port],
    final_backends: &FinalBackends,
    counter_blocks: &[Arc<BackendCounters>],
) -> RunReport {
    let mut report = RunReport::default();
    for st in finals {
        match st.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Final::None => {}
            Final::Forward(f) => report.workers += f,
            Final::Balance(b) => *report.balance.get_or_insert_with(WorkerStats::default) += b,
        }
    }
    for (i, port) in ports.iter_mut().enumerate() {
        let s = port.stats().unwrap_or_default();
        report.ports.push((cfg.config.ports[i].name.clone(), s));
        let _ = port.stop();
    }
    for (name, backends) in final_backends {
        let rows = backends
            .iter()
            .map(|(addr, id)| {
                let (p, by) =
                    counter_blocks.iter().map(|c| c.get(*id)).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
                (addr.to_string(), p, by)
            })
            .collect();
        report.services.push((name.clone(), rows));
    }
    report
}

fn print_report(r: &RunReport, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>12} {:>14} {:>14} {:>10} {:>10}",
        "port", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_missed", "errors"
    );
    for (name, s) in &r.ports {
        let _ = writeln!(
            out,
            "{:<12} {:>12} {:>12} {:>14} {:>14} {:>10} {:>10}",
            name,
            s.rx_packets,
            s.tx_packets,
            s.rx_bytes,
            s.tx_bytes,
            s.rx_missed,
            s.rx_errors + s.tx_errors
        );
    }
    for (name, rows) in &r.services {
        let (p, b) = rows.iter().fold((0, 0), |a, x| (a.0 + x.1, a.1 + x.2));
        let _ = writeln!(out, "service {name}: {p} packets {b} bytes");
        for (addr, p, b) in rows {
            let _ = writeln!(out, "  backend {addr:<24} {p:>12} packets {b:>14} bytes");
        }
    }
    if let Some(b) = &r.balance {
        let c = &b.counters;
        let polls = (c[Counter::BusyPolls] + c[Counter::IdlePolls]).max(1);
        let _ = writeln!(
            out,
            "balancing: rx {} tx {} forwarded {} replied {} local {} new_flows {} rescheduled {} dropped {} busy polls {:.1}%",
            c[Counter::RxPackets],
            c[Counter::TxPackets],
            c[Counter::Forwarded],
            c[Counter::Replied],
            c[Counter::Local],
            c[Counter::NewFlows],
            c[Counter::Rescheduled],
            c.dropped(),
            100.0 * c[Counter::BusyPolls] as f64 / polls as f64
        );
        poll_gap_line(out, b.longest_poll_gap_us, c[Counter::Stalls]);
        for (info, v) in c.rows() {
            if v > 0 && info.metric == DROPS_METRIC {
                let _ = writeln!(out, "  drop {:<22} {v}", info.name);
            }
        }
        return;
    }
    let c = &r.workers.counters;
    let polls = (c[Counter::BusyPolls] + c[Counter::IdlePolls]).max(1);
    let _ = writeln!(
        out,
        "workers: rx {} tx {} dropped(no route) {} dropped(tx full) {} busy polls {:.1}%",
        c[Counter::RxPackets],
        c[Counter::TxPackets],
        c[DropReason::NoRoute],
        c[DropReason::TxFull],
        100.0 * c[Counter::BusyPolls] as f64 / polls as f64
    );
    poll_gap_line(out, r.workers.longest_poll_gap_us, c[Counter::Stalls]);
}

/// The workers' poll-gap meter in the summary (see `PollGaps`).
fn poll_gap_line(out: &mut dyn Write, longest_us: u64, stalls: u64) {
    let _ = writeln!(
        out,
        "  longest poll gap {:.3} ms, stalls (gaps of {} ms or more) {}",
        longest_us as f64 / 1000.0,
        crate::dataplane::poll::STALL_US / 1000,
        stalls
    );
}
