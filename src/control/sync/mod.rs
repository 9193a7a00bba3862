//! Flow sync between the boxes of a fleet (`[sync]`). Every box behind the
//! router picks the same backend for a new flow, but a flow that started
//! before a backend change keeps its old backend only on the box that tracks
//! it. The workers find such flows (`Worker::sync_scan`: a tracked flow
//! whose backend is not what the tables pick for it now) and report them on
//! a ring; this module sends them to every peer, and installs what the peers
//! send in the table the workers consult for a flow they do not track
//! (`balancer::synced`). A flow the router moves here keeps its backend.
//!
//! Threads, none on the packet path:
//! - **collector**: drains the workers' rings every 5 ms, keeps the box's
//!   shared flows (`exported`), queues new or changed ones for every peer
//!   (a bounded queue per peer; a full one drops and counts);
//! - **sender**, one per peer: connects to it (again every second while it
//!   cannot), sends everything shared so far then `DumpEnd`, then the queue
//!   in batches;
//! - **listener** and one **reader** per peer connection: installs the
//!   entries a peer sends; knows when each peer's dump is complete (a
//!   starting box waits for that, or `warmup_timeout_s`, to announce).
//!
//! Wire format: `wire.rs`. Only configured peers' connections are read.

pub mod wire;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender};
use crossbeam::queue::ArrayQueue;

use super::api::{SyncPeerRow, SyncStatus};
use super::config::{Config, SyncSection};
use crate::balancer::flow::FlowKey;
use crate::balancer::synced::{AtRisk, SyncWriter, SyncedFlows};
use wire::{Message, SyncEntry};

/// The workers' clock (ms), as they read it.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the receiver needs of the configuration in force: a flow's service
/// (by VIP, protocol and port) and its backends' ids, and each id's address.
#[derive(Debug, Default, Clone)]
pub struct View {
    services: HashMap<(IpAddr, u8, u16), HashMap<IpAddr, u32>>,
    addresses: HashMap<u32, IpAddr>,
}

impl View {
    /// From the configuration and the backends' ids (`id(service, address)`).
    pub fn new(cfg: &Config, id: &dyn Fn(&str, IpAddr) -> Option<u32>) -> View {
        let mut v = View::default();
        for s in &cfg.services {
            let proto = match s.protocol {
                super::config::Protocol::Tcp => crate::net::proto::TCP,
                super::config::Protocol::Udp => crate::net::proto::UDP,
            };
            let ids = v.services.entry((s.vip, proto, s.port)).or_default();
            for b in &s.backends {
                if let Some(i) = id(&s.name, b.address) {
                    ids.insert(b.address, i);
                    v.addresses.insert(i, b.address);
                }
            }
        }
        v
    }

    /// The id here of the backend `backend` of `key`'s service.
    fn id(&self, key: &FlowKey, backend: IpAddr) -> Option<u32> {
        let dst = key.dst_ip();
        let ids = self
            .services
            .get(&(dst, key.proto, key.dst_port))
            .or_else(|| self.services.get(&(dst, key.proto, 0)))?;
        ids.get(&backend).copied()
    }
}

/// A flow this box shares: its backend and until when its entry lives.
#[derive(Debug, Clone, Copy)]
struct Exported {
    backend: IpAddr,
    expires_ms: u64,
}

#[derive(Default)]
struct PeerCounters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    out_up: AtomicBool,
    in_up: AtomicBool,
    dump_received: AtomicBool,
    /// Entries were dropped for this peer: send it everything again once
    /// its queue is empty.
    resync: AtomicBool,
    connects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct Peer {
    address: IpAddr,
    /// Entries with when they were queued (ms since the Unix epoch).
    queue: Sender<(SyncEntry, u64)>,
    queued: Receiver<(SyncEntry, u64)>,
    counters: PeerCounters,
}

/// Upper bounds (ms) of the lag histogram's buckets.
pub const LAG_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// How long batches took from being queued on the peer to being installed
/// here (by the two boxes' clocks: meaningful where they are synchronised).
#[derive(Default)]
struct Lag {
    /// Per bucket of [`LAG_BUCKETS_MS`], then one for longer.
    buckets: [AtomicU64; 13],
    sum_ms: AtomicU64,
    max_ms: AtomicU64,
}

impl Lag {
    fn record(&self, ms: u64) {
        let i = LAG_BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(LAG_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The bucket bound at or under which `q` of the batches fell (none
    /// without batches; `u64::MAX` beyond the last bound).
    fn quantile(&self, counts: &[u64], q: f64) -> Option<u64> {
        let n: u64 = counts.iter().sum();
        if n == 0 {
            return None;
        }
        let want = (q * n as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(LAG_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }
}

/// The received table's lapsed entries are emptied within this many
/// seconds (a part of the table a second), so its count stays true.
const SWEEP_ROUNDS: usize = 32;

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Shared {
    cfg: SyncSection,
    stop: AtomicBool,
    clock: Clock,
    started: Instant,
    view: RwLock<View>,
    writer: Mutex<SyncWriter>,
    table: Arc<SyncedFlows>,
    exported: Mutex<HashMap<FlowKey, Exported>>,
    peers: Vec<Peer>,
    rings: Vec<Arc<ArrayQueue<AtRisk>>>,
    installed: AtomicU64,
    evicted: AtomicU64,
    unknown: AtomicU64,
    refused: AtomicU64,
    bad: AtomicU64,
    lag: Lag,
}

/// Flow sync, running.
pub struct FlowSync {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FlowSync {
    /// Starts the threads: `rings` are the workers' report rings, `writer`
    /// the received-flows table's writer, `view` the configuration in force.
    pub fn start(
        cfg: &SyncSection,
        rings: Vec<Arc<ArrayQueue<AtRisk>>>,
        writer: SyncWriter,
        view: View,
        clock: Clock,
    ) -> Result<FlowSync, String> {
        let on = SocketAddr::new(cfg.listen.unwrap_or(IpAddr::from([0u16; 8])), cfg.port);
        let listener = TcpListener::bind(on).map_err(|e| format!("sync: cannot listen on {on}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let peers = cfg
            .peers
            .iter()
            .map(|&address| {
                let (queue, queued) = bounded(cfg.queue);
                Peer { address, queue, queued, counters: PeerCounters::default() }
            })
            .collect();
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            stop: AtomicBool::new(false),
            clock,
            started: Instant::now(),
            view: RwLock::new(view),
            table: writer.table().clone(),
            writer: Mutex::new(writer),
            // Sized as the peers' tables (the same `capacity` fleet-wide):
            // growing it at a high rate would stall the collector (a rehash)
            // long enough for the workers' rings to overflow.
            exported: Mutex::new(HashMap::with_capacity(cfg.capacity)),
            peers,
            rings,
            installed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            lag: Lag::default(),
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f).map_err(|e| format!("sync: thread: {e}"))
        };
        let s = shared.clone();
        threads.push(spawn("l4lb-sync".into(), Box::new(move || collect(&s)))?);
        for i in 0..shared.peers.len() {
            let s = shared.clone();
            threads.push(spawn(format!("l4lb-sync-out{i}"), Box::new(move || send(&s, i)))?);
        }
        let s = shared.clone();
        threads.push(spawn("l4lb-sync-in".into(), Box::new(move || listen(&s, listener)))?);
        log::info!(
            "sync: listening on {on}, peers {}",
            cfg.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        );
        Ok(FlowSync { shared, threads })
    }

    /// The configuration in force changed (a reload, new backend ids).
    pub fn set_view(&self, view: View) {
        *self.shared.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// Whether every peer sent what it had (or `warmup_timeout_s` passed):
    /// the box may announce its VIPs.
    pub fn warm(&self) -> bool {
        let s = &self.shared;
        s.started.elapsed() >= Duration::from_secs(s.cfg.warmup_timeout_s)
            || s.peers.iter().all(|p| p.counters.dump_received.load(Ordering::Relaxed))
    }

    /// `ctl sync` and the metrics.
    pub fn status(&self) -> SyncStatus {
        let s = &self.shared;
        let lag: Vec<u64> = s.lag.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        SyncStatus {
            lag_batches: lag.iter().sum(),
            lag_ms_p50: s.lag.quantile(&lag, 0.5),
            lag_ms_p99: s.lag.quantile(&lag, 0.99),
            lag_ms_max: s.lag.max_ms.load(Ordering::Relaxed),
            lag_ms_sum: s.lag.sum_ms.load(Ordering::Relaxed),
            lag_buckets: lag,
            port: s.cfg.port,
            warm: self.warm(),
            shared_flows: s.exported.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            received_flows: s.writer.lock().unwrap_or_else(|e| e.into_inner()).occupied() as u64,
            table_capacity: s.table.capacity() as u64,
            installed: s.installed.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            unknown: s.unknown.load(Ordering::Relaxed),
            refused_connections: s.refused.load(Ordering::Relaxed),
            bad_messages: s.bad.load(Ordering::Relaxed),
            peers: s
                .peers
                .iter()
                .map(|p| {
                    let c = &p.counters;
                    SyncPeerRow {
                        address: p.address,
                        sending: c.out_up.load(Ordering::Relaxed),
                        receiving: c.in_up.load(Ordering::Relaxed),
                        dump_received: c.dump_received.load(Ordering::Relaxed),
                        sent: c.sent.load(Ordering::Relaxed),
                        sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
                        dropped: c.dropped.load(Ordering::Relaxed),
                        received: c.received.load(Ordering::Relaxed),
                        queued: p.queued.len() as u64,
                        last_error: c.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    }
                })
                .collect(),
        }
    }

    /// Stops the threads (within about a second).
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The collector: workers' reports to `exported` and the peers' queues.
fn collect(s: &Shared) {
    let mut last_purge = Instant::now();
    while !s.stop.load(Ordering::Relaxed) {
        let now = (s.clock)();
        // Held, not copied: a large configuration's maps are not cloned every 5 ms.
        let view = s.view.read().unwrap_or_else(|e| e.into_inner());
        let mut exported = s.exported.lock().unwrap_or_else(|e| e.into_inner());
        for ring in &s.rings {
            while let Some(r) = ring.pop() {
                let Some(&backend) = view.addresses.get(&r.backend) else { continue };
                let expires_ms = now + r.expires_in_ms as u64;
                // Peers hold a copy until it lapses: send again only what
                // is new, changed, or half-way to lapsing there.
                if let Some(e) = exported.get(&r.key) {
                    let fresh = e.expires_ms.saturating_sub(now) > r.expires_in_ms as u64 / 2;
                    if e.backend == backend && fresh {
                        continue;
                    }
                }
                exported.insert(r.key, Exported { backend, expires_ms });
                let entry = SyncEntry { key: r.key, backend, ttl_ms: r.expires_in_ms };
                let queued = unix_ms();
                for p in &s.peers {
                    if p.queue.try_send((entry, queued)).is_err() {
                        p.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        p.counters.resync.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        if last_purge.elapsed() >= Duration::from_secs(1) {
            last_purge = Instant::now();
            exported.retain(|_, e| e.expires_ms > now);
            // Round the received table every SWEEP_ROUNDS seconds.
            let mut w = s.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.sweep(now, s.table.capacity().div_ceil(SWEEP_ROUNDS));
        }
        drop(exported);
        drop(view);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A sender: one peer, connected again whenever the connection fails.
fn send(s: &Shared, i: usize) {
    let p = &s.peers[i];
    let to = SocketAddr::new(p.address, s.cfg.port);
    while !s.stop.load(Ordering::Relaxed) {
        let mut conn = match connect(s.cfg.listen, to) {
            Ok(c) => c,
            Err(e) => {
                note_error(p, format!("connect {to}: {e}"));
                sleep_unless_stopped(s, Duration::from_secs(1));
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        p.counters.out_up.store(true, Ordering::Relaxed);
        if p.counters.connects.fetch_add(1, Ordering::Relaxed) == 0 {
            log::info!("sync: sending to {to}");
        } else {
            log::info!("sync: sending to {to} again");
        }
        if let Err(e) = stream(s, p, &mut conn) {
            note_error(p, format!("send to {to}: {e}"));
            log::warn!("sync: send to {to}: {e}; connecting again");
        }
        p.counters.out_up.store(false, Ordering::Relaxed);
        sleep_unless_stopped(s, Duration::from_secs(1));
    }
}

/// A connection to `to`, from `from` if set (`sync.listen`: the address
/// the peer knows this box by).
fn connect(from: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(from) = from else { return TcpStream::connect_timeout(&to, Duration::from_secs(1)) };
    let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(1))?;
    Ok(sock.into())
}

/// One connection's life: what the box shares now, `DumpEnd`, then the
/// queue in batches — and everything again after the queue overflowed.
fn stream(s: &Shared, p: &Peer, conn: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    wire::encode(&Message::Hello { router_id: 0 }, &mut buf);
    conn.write_all(&buf)?;
    p.counters.resync.store(false, Ordering::Relaxed);
    dump(s, p, conn)?;
    let mut batch = Vec::with_capacity(wire::MAX_ENTRIES);
    while !s.stop.load(Ordering::Relaxed) {
        let oldest = match p.queued.recv_timeout(Duration::from_millis(50)) {
            Ok((e, at)) => {
                batch.push(e);
                at
            }
            Err(RecvTimeoutError::Timeout) => {
                if p.counters.resync.swap(false, Ordering::Relaxed) {
                    dump(s, p, conn)?;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        while batch.len() < wire::MAX_ENTRIES {
            match p.queued.try_recv() {
                Ok((e, _)) => batch.push(e),
                Err(_) => break,
            }
        }
        buf.clear();
        let n = batch.len();
        wire::encode(
            &Message::Entries { queued_unix_ms: oldest, entries: std::mem::take(&mut batch) },
            &mut buf,
        );
        count_sent(p, n, &buf);
        conn.write_all(&buf)?;
    }
    Ok(())
}

/// Everything the box shares now, then `DumpEnd`.
fn dump(s: &Shared, p: &Peer, conn: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let now = (s.clock)();
    let dump: Vec<SyncEntry> = s
        .exported
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, e)| e.expires_ms > now)
        .map(|(k, e)| SyncEntry {
            key: *k,
            backend: e.backend,
            ttl_ms: (e.expires_ms - now).min(u32::MAX as u64) as u32,
        })
        .collect();
    for chunk in dump.chunks(wire::MAX_ENTRIES) {
        wire::encode(&Message::Entries { queued_unix_ms: 0, entries: chunk.to_vec() }, &mut buf);
        count_sent(p, chunk.len(), &buf);
        conn.write_all(&buf)?;
        buf.clear();
    }
    wire::encode(&Message::DumpEnd, &mut buf);
    conn.write_all(&buf)
}

fn count_sent(p: &Peer, entries: usize, frame: &[u8]) {
    p.counters.sent.fetch_add(entries as u64, Ordering::Relaxed);
    p.counters.sent_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
}

fn note_error(p: &Peer, e: String) {
    *p.counters.last_error.lock().unwrap_or_else(|x| x.into_inner()) = Some(e);
}

fn sleep_unless_stopped(s: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The listener: peers' connections, each read by a thread of its own.
fn listen(s: &Arc<Shared>, listener: TcpListener) {
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    while !s.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, from)) => {
                let ip = match from.ip() {
                    IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
                    a => a,
                };
                let Some(i) = s.peers.iter().position(|p| p.address == ip) else {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    log::warn!("sync: refused a connection from {from}: not in sync.peers");
                    continue;
                };
                let s2 = s.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("l4lb-sync-in{i}"))
                    .spawn(move || receive(&s2, i, conn));
                match spawned {
                    Ok(h) => readers.push(h),
                    Err(e) => log::warn!("sync: reader thread: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                log::warn!("sync: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        readers.retain(|h| !h.is_finished());
    }
    for h in readers {
        let _ = h.join();
    }
}

/// A reader: one peer's connection, its entries into the table.
fn receive(s: &Shared, i: usize, mut conn: TcpStream) {
    let p = &s.peers[i];
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    p.counters.in_up.store(true, Ordering::Relaxed);
    log::info!("sync: receiving from {}", p.address);
    let mut buf: Vec<u8> = Vec::with_capacity(wire::MAX_FRAME + 4);
    let mut chunk = vec![0u8; 64 * 1024];
    let why = loop {
        if s.stop.load(Ordering::Relaxed) {
            break None;
        }
        match conn.read(&mut chunk) {
            Ok(0) => break Some("closed".to_owned()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => break Some(e.to_string()),
        }
        let mut at = 0;
        let err = loop {
            let len = match wire::frame_len(&buf[at..]) {
                Ok(Some(n)) if buf.len() - at >= 4 + n => n,
                Ok(_) => break None,
                Err(e) => break Some(e),
            };
            match wire::decode(&buf[at + 4..at + 4 + len]) {
                Ok(m) => install(s, p, m),
                Err(e) => break Some(e),
            }
            at += 4 + len;
        };
        buf.drain(..at);
        if let Some(e) = err {
            s.bad.fetch_add(1, Ordering::Relaxed);
            break Some(e.to_string());
        }
    };
    p.counters.in_up.store(false, Ordering::Relaxed);
    if let Some(why) = why {
        log::warn!("sync: from {}: {why}", p.address);
    }
}

fn install(s: &Shared, p: &Peer, m: Message) {
    match m {
        Message::Hello { .. } => {}
        Message::DumpEnd => {
            if !p.counters.dump_received.swap(true, Ordering::Relaxed) {
                log::info!("sync: {} sent what it shares", p.address);
            }
        }
        Message::Entries { queued_unix_ms, entries: es } => {
            p.counters.received.fetch_add(es.len() as u64, Ordering::Relaxed);
            let view = s.view.read().unwrap_or_else(|e| e.into_inner());
            let mut w = s.writer.lock().unwrap_or_else(|e| e.into_inner());
            let now = (s.clock)();
            for e in es {
                let Some(id) = view.id(&e.key, e.backend) else {
                    s.unknown.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let how = w.put(&e.key, e.key.hash(), id, now + e.ttl_ms as u64, now);
                s.installed.fetch_add(1, Ordering::Relaxed);
                if how == crate::balancer::synced::Put::Evicted {
                    s.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            if queued_unix_ms != 0 {
                s.lag.record(unix_ms().saturating_sub(queued_unix_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests;
