//! (One file over ~700 lines on purpose: the protocol's messages, the shared
//! slots workers read, and the callbacks' unsafe code are one unit, each
//! block's SAFETY argument resting on the others.)
//!
//! l4lb's server for DPDK's packet-capture protocol, the one `dpdk-dumpcap` and
//! `dpdk-pdump` speak: a secondary process sends an "mp_pdump" request (enable
//! or disable capture on a device's queues, with a ring and a mempool in shared
//! memory), the primary hooks RX/TX callbacks that copy each packet into that
//! mempool and enqueue it on the ring, and the secondary writes the file.
//!
//! DPDK 22.11 ships such a server (`rte_pdump_init`), but its disable removes the
//! callback and answers at once, without waiting for a worker that is inside the
//! callback; the secondary then frees the mempool the worker is copying into,
//! and l4lb crashed (SIGSEGV in `rte_pcapng_copy`, about 1 capture in 12 ended
//! under load on a 2-vCPU VM). This server answers a disable only after every
//! worker has left the callback: each callback slot has a [`Gate`] the worker
//! enters for the length of one burst's copy, and a disable closes the gate and
//! waits for it to empty. (Later DPDK releases added a similar wait.)
//!
//! The wire format mirrors DPDK 22.11's private `struct pdump_request` (see
//! `dpdk-sys/src/shim.h`); the statistics memzone that `rte_pdump_init` reserves
//! is reused, so `dpdk-dumpcap`'s end-of-capture counts stay right.

use super::{DpdkError, Eal};
use dpdk_sys as sys;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The multi-process action name of DPDK's capture protocol.
const ACTION: &CStr = c"mp_pdump";
/// Request operations.
const OP_DISABLE: u16 = 1;
const OP_ENABLE: u16 = 2;
/// Request versions: 1 copies packets as they are (pcap), 2 wraps them for pcapng.
const VER_PCAP: u16 = 1;
const VER_PCAPNG: u16 = 2;
/// Packets per copy step (the callback's stack arrays).
const STEP: usize = 32;

// The request must fit a multi-process message, and the response is what 22.11
// secondaries read back.
const _: () = assert!(std::mem::size_of::<sys::l4lb_pdump_request>() <= sys::RTE_MP_MAX_PARAM_LEN as usize);
const _: () = assert!(std::mem::size_of::<sys::l4lb_pdump_response>() == 8);
const _: () = assert!(std::mem::size_of::<sys::rte_pdump_stats>() == 64);

/// Lets a worker into a critical section and lets the control thread close it
/// and wait until no worker is inside — the handshake the capture callbacks
/// need before their buffers may go. The worker side is two atomic increments
/// and a load per burst; the control side spins.
///
/// Why it is enough: `enter` increments `count` (odd: inside) and then reads
/// `open`; `close_and_wait` clears `open` and then waits for `count` to be even.
/// All four are sequentially consistent, so either the worker's increment comes
/// before the waiter's read (and the waiter waits for its exit), or it comes
/// after, and then so does the worker's read of `open`, which sees it closed.
#[derive(Debug, Default)]
struct Gate {
    open: AtomicBool,
    count: AtomicU32,
}

/// A worker inside a [`Gate`]; leaves it when dropped.
#[must_use]
struct GateGuard<'g>(&'g Gate);

impl Gate {
    /// Opens the gate. Whatever workers read after entering must be written
    /// before this.
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Enters, if the gate is open. One thread per gate (a queue's worker).
    #[inline]
    fn enter(&self) -> Option<GateGuard<'_>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            Some(GateGuard(self))
        } else {
            self.count.fetch_add(1, Ordering::Release);
            None
        }
    }

    /// Closes the gate and returns once no worker is inside; `slow` is called
    /// about once a second while a worker stays in.
    fn close_and_wait(&self, mut slow: impl FnMut(Duration)) {
        self.open.store(false, Ordering::SeqCst);
        let start = Instant::now();
        let mut next_report = Duration::from_secs(1);
        let mut spins = 0u32;
        while self.count.load(Ordering::SeqCst) & 1 == 1 {
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
                let waited = start.elapsed();
                if waited >= next_report {
                    slow(waited);
                    next_report += Duration::from_secs(1);
                }
            }
        }
    }
}

impl Drop for GateGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.count.fetch_add(1, Ordering::Release);
    }
}

/// Which way a callback copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dir {
    Rx,
    Tx,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Rx => "rx",
            Dir::Tx => "tx",
        }
    }
}

/// One (port, queue, direction)'s capture state. Allocated once, on the first
/// capture of that queue, and never freed: a worker that read the callback's
/// pointer before its removal may still reach it.
struct Slot {
    gate: Gate,
    ring: AtomicPtr<sys::rte_ring>,
    mp: AtomicPtr<sys::rte_mempool>,
    filter: AtomicPtr<sys::rte_bpf>,
    pcapng: AtomicBool,
    snaplen: AtomicU32,
    /// This queue's counters in the statistics memzone.
    stats: *mut sys::rte_pdump_stats,
    /// Test-only: how long a worker waits inside the gate before it copies.
    stall: Duration,
    /// The ethdev callback handle while hooked (control thread only).
    cb: AtomicPtr<c_void>,
}

// SAFETY: every field a worker and the control thread share is atomic; `stats`
// points into a memzone that outlives the server, written only with atomic
// adds (rte_pdump_stats readers in other processes do the same).
unsafe impl Sync for Slot {}
// SAFETY: as above; the raw pointers are addresses in EAL's shared memory.
unsafe impl Send for Slot {}

impl Slot {
    /// Counter `i` of this queue's statistics: accepted, filtered, nombuf, ringfull.
    fn counter(&self, i: usize) -> &AtomicU64 {
        let s = self.stats;
        // SAFETY: `stats` points at a live, 8-byte-aligned rte_pdump_stats in
        // the memzone (checked at start), and every access to its counters,
        // from any process, is atomic.
        unsafe {
            AtomicU64::from_ptr(match i {
                0 => &raw mut (*s).accepted,
                1 => &raw mut (*s).filtered,
                2 => &raw mut (*s).nombuf,
                _ => &raw mut (*s).ringfull,
            })
        }
    }

    fn reset_stats(&self) {
        (0..4).for_each(|i| self.counter(i).store(0, Ordering::Relaxed));
    }

    fn stats(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.counter(i).load(Ordering::Relaxed))
    }

    /// The worker's side: copies `pkts` into the capture, if one is on.
    #[inline]
    fn copy(&self, port: u16, queue: u16, pkts: *mut *mut sys::rte_mbuf, n: u16, dir: Dir) {
        let Some(_inside) = self.gate.enter() else { return };
        if !self.stall.is_zero() {
            std::thread::sleep(self.stall);
        }
        let ring = self.ring.load(Ordering::Relaxed);
        let mp = self.mp.load(Ordering::Relaxed);
        let filter = self.filter.load(Ordering::Relaxed);
        let pcapng = self.pcapng.load(Ordering::Relaxed);
        let snaplen = self.snaplen.load(Ordering::Relaxed);
        let direction =
            if dir == Dir::Rx { sys::RTE_PCAPNG_DIRECTION_IN } else { sys::RTE_PCAPNG_DIRECTION_OUT };
        let ts = super::tsc();
        let mut done = 0usize;
        while done < n as usize {
            let step = (n as usize - done).min(STEP);
            // SAFETY: `pkts` holds `n` mbufs the ethdev burst just returned or
            // is about to send; this step is `step` of them from `done`.
            let batch = unsafe { pkts.add(done) };
            let mut verdicts = [1u64; STEP];
            if !filter.is_null() {
                // SAFETY: `filter` was loaded by rte_bpf_load for an mbuf
                // argument and is destroyed only after this gate is closed and
                // empty; `batch` holds `step` mbuf pointers.
                unsafe { sys::rte_bpf_exec_burst(filter, batch.cast(), verdicts.as_mut_ptr(), step as u32) };
            }
            let mut copies = [std::ptr::null_mut::<sys::rte_mbuf>(); STEP];
            let (mut kept, mut filtered, mut nombuf) = (0usize, 0u64, 0u64);
            for (i, verdict) in verdicts.iter().take(step).enumerate() {
                if *verdict == 0 {
                    filtered += 1;
                    continue;
                }
                // SAFETY: i < step, so this is one of the burst's mbufs.
                let m = unsafe { *batch.add(i) };
                // SAFETY: `m` is a valid mbuf; `mp` is the capture's mempool,
                // which the secondary frees only after a disable, and a disable
                // is answered only once this gate is empty.
                let copy = unsafe {
                    if pcapng {
                        sys::rte_pcapng_copy(port, queue as u32, m, mp, snaplen, ts, direction)
                    } else {
                        sys::rte_pktmbuf_copy(m, mp, 0, snaplen)
                    }
                };
                if copy.is_null() {
                    nombuf += 1;
                } else {
                    copies[kept] = copy;
                    kept += 1;
                }
            }
            self.count_add(1, filtered);
            self.count_add(2, nombuf);
            if kept > 0 {
                self.count_add(0, kept as u64);
                // SAFETY: `ring` is the capture's multi-producer ring, alive
                // while the gate is open (as `mp`); `copies` holds `kept` mbufs.
                let queued =
                    unsafe { sys::l4lb_ring_enqueue_burst(ring, copies.as_ptr().cast(), kept as u32) };
                let queued = queued as usize;
                if queued < kept {
                    self.count_add(3, (kept - queued) as u64);
                    // SAFETY: the copies the ring refused are still ours.
                    unsafe {
                        sys::rte_pktmbuf_free_bulk(copies.as_mut_ptr().add(queued), (kept - queued) as u32)
                    };
                }
            }
            done += step;
        }
    }

    fn count_add(&self, i: usize, n: u64) {
        if n > 0 {
            self.counter(i).fetch_add(n, Ordering::Relaxed);
        }
    }
}

unsafe extern "C" fn on_rx(
    port: u16,
    queue: u16,
    pkts: *mut *mut sys::rte_mbuf,
    n: u16,
    _max: u16,
    param: *mut c_void,
) -> u16 {
    // SAFETY: `param` is the never-freed Slot this callback was added with.
    let slot = unsafe { &*(param as *const Slot) };
    slot.copy(port, queue, pkts, n, Dir::Rx);
    n
}

unsafe extern "C" fn on_tx(
    port: u16,
    queue: u16,
    pkts: *mut *mut sys::rte_mbuf,
    n: u16,
    param: *mut c_void,
) -> u16 {
    // SAFETY: `param` is the never-freed Slot this callback was added with.
    let slot = unsafe { &*(param as *const Slot) };
    slot.copy(port, queue, pkts, n, Dir::Tx);
    n
}

/// Per hooked (port, queue, direction): the multi-process socket of the
/// secondary that started its capture, and the device's name.
type Owners = HashMap<(u16, u16, Dir), (String, String)>;

/// The server's state, shared with EAL's multi-process thread.
struct Server {
    /// The statistics memzone's address.
    zone: *mut sys::l4lb_pdump_stats_zone,
    stall: Duration,
    slots: Mutex<HashMap<(u16, u16, Dir), &'static Slot>>,
    /// The captures on: for each hooked (port, queue, direction), the
    /// multi-process socket of the secondary that started it and the device's
    /// name. Held for the whole of a request or a sweep, which it serialises.
    owners: Mutex<Owners>,
    /// When the last sweep for captures whose secondary is gone ran.
    last_sweep: Mutex<Instant>,
}

// SAFETY: `zone` is an address in EAL's shared memory, only used to compute
// slot addresses; everything else is behind mutexes.
unsafe impl Send for Server {}
// SAFETY: as above.
unsafe impl Sync for Server {}

static SERVER: OnceLock<Arc<Server>> = OnceLock::new();

/// A request, decoded.
struct Request {
    ver: u16,
    op: u16,
    flags: u32,
    device: String,
    queue: u16,
    ring: *mut sys::rte_ring,
    mp: *mut sys::rte_mempool,
    prm: *const sys::rte_bpf_prm,
    snaplen: u32,
}

impl Server {
    fn log(&self, line: String) {
        log::info!("{line}");
    }

    fn slot(&self, port: u16, queue: u16, dir: Dir) -> &'static Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry((port, queue, dir)).or_insert_with(|| {
            let (p, q) = (port as usize, queue as usize);
            // SAFETY: port < RTE_MAX_ETHPORTS and queue < RTE_MAX_QUEUES_PER_PORT
            // (checked by the caller), so the address is inside the zone.
            let stats = unsafe {
                match dir {
                    Dir::Rx => &raw mut (*self.zone).rx[p][q],
                    Dir::Tx => &raw mut (*self.zone).tx[p][q],
                }
            };
            Box::leak(Box::new(Slot {
                gate: Gate::default(),
                ring: AtomicPtr::default(),
                mp: AtomicPtr::default(),
                filter: AtomicPtr::default(),
                pcapng: AtomicBool::new(false),
                snaplen: AtomicU32::new(0),
                stats,
                stall: self.stall,
                cb: AtomicPtr::default(),
            }))
        })
    }

    /// Handles one request from the secondary at `peer`; 0 or a negative
    /// errno, as 22.11 secondaries expect.
    fn handle(&self, r: &Request, peer: &str) -> c_int {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        match self.try_handle(r, peer, &mut owners) {
            Ok(()) => 0,
            Err((errno, why)) => {
                self.log(format!(
                    "capture {} on {} refused: {why}",
                    if r.op == OP_ENABLE { "start" } else { "stop" },
                    r.device
                ));
                -errno
            }
        }
    }

    /// Unhooks every capture whose secondary is gone (killed: it could not
    /// send its disable), at most once a second. Such a capture would keep the
    /// workers copying into a ring nobody drains, and refuse every later
    /// capture on its queues.
    fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < Duration::from_secs(1) {
                return;
            }
            *last = Instant::now();
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(u16, u16, Dir)> =
            owners.iter().filter(|(_, (peer, _))| !peer_alive(peer)).map(|(k, _)| *k).collect();
        for key in gone {
            self.drop_orphan(key, &mut owners);
        }
    }

    /// Unhooks a capture whose secondary is gone and says so.
    fn drop_orphan(&self, key: (u16, u16, Dir), owners: &mut Owners) {
        let Some((peer, device)) = owners.remove(&key) else { return };
        let (port, queue, dir) = key;
        let s = self.slot(port, queue, dir);
        unhook(port, queue, dir, s, |_| {});
        self.log(format!(
            "capture on {device} ({} queue {queue}) removed: the process that started it is gone ({peer}); {}",
            dir.name(),
            counts(s.stats())
        ));
    }

    fn try_handle(&self, r: &Request, peer: &str, owners: &mut Owners) -> Result<(), (c_int, String)> {
        let inval = |why: String| (libc::EINVAL, why);
        if r.ver != VER_PCAP && r.ver != VER_PCAPNG {
            return Err(inval(format!("request version {} (this l4lb speaks DPDK 22.11's 1 and 2)", r.ver)));
        }
        if r.op != OP_ENABLE && r.op != OP_DISABLE {
            return Err(inval(format!("unknown operation {}", r.op)));
        }
        let flags = r.flags & sys::RTE_PDUMP_FLAG_RXTX;
        if flags == 0 {
            return Err(inval(format!("flags {:#x} name neither rx nor tx", r.flags)));
        }
        let name = std::ffi::CString::new(r.device.clone()).map_err(|_| inval("device name".into()))?;
        let mut port = 0u16;
        // SAFETY: `name` is NUL-terminated; `port` is a valid out pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut port) } != 0 {
            return Err(inval("no such device".into()));
        }
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `port` is a valid port id; `info` is a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
        if ret != 0 {
            return Err((-ret, "cannot read the device's queue counts".into()));
        }
        let queues = |count: u16| -> Result<Vec<u16>, (c_int, String)> {
            if r.queue as u32 == sys::RTE_PDUMP_ALL_QUEUES {
                Ok((0..count).collect())
            } else if r.queue < count {
                Ok(vec![r.queue])
            } else {
                Err(inval(format!("queue {} (the device has {count})", r.queue)))
            }
        };
        let mut targets = Vec::new();
        if flags & sys::RTE_PDUMP_FLAG_RX != 0 {
            targets.extend(queues(info.nb_rx_queues)?.into_iter().map(|q| (q, Dir::Rx)));
        }
        if flags & sys::RTE_PDUMP_FLAG_TX != 0 {
            targets.extend(queues(info.nb_tx_queues)?.into_iter().map(|q| (q, Dir::Tx)));
        }
        if port as u32 >= sys::RTE_MAX_ETHPORTS
            || targets.iter().any(|&(q, _)| q as u32 >= sys::RTE_MAX_QUEUES_PER_PORT)
        {
            return Err(inval("port or queue beyond DPDK's limits".into()));
        }
        let slots: Vec<(u16, Dir, &'static Slot)> =
            targets.iter().map(|&(q, d)| (q, d, self.slot(port, q, d))).collect();
        let what = describe(&slots);
        if r.op == OP_DISABLE {
            if let Some((q, d, _)) = slots.iter().find(|(_, _, s)| s.cb.load(Ordering::Relaxed).is_null()) {
                return Err(inval(format!("no capture on {} queue {q}", d.name())));
            }
            let mut totals = [0u64; 4];
            for &(q, d, s) in &slots {
                unhook(port, q, d, s, |w| {
                    self.log(format!(
                        "capture stop on {}: a worker has been inside the {} callback of queue {q} for {:.1} s",
                        r.device,
                        d.name(),
                        w.as_secs_f64()
                    ))
                });
                owners.remove(&(port, q, d));
                for (t, v) in totals.iter_mut().zip(s.stats()) {
                    *t += v;
                }
            }
            self.log(format!("capture stopped on {} ({what}): {}", r.device, counts(totals)));
            return Ok(());
        }
        // Enable.
        if r.ring.is_null() || r.mp.is_null() {
            return Err(inval("no ring or mempool".into()));
        }
        // A capture already on one of these queues refuses this one, unless
        // the process that started it is gone.
        for &(q, d, s) in &slots {
            if s.cb.load(Ordering::Relaxed).is_null() {
                continue;
            }
            match owners.get(&(port, q, d)) {
                Some((owner, _)) if !peer_alive(owner) => self.drop_orphan((port, q, d), owners),
                _ => return Err((libc::EEXIST, format!("a capture is already on {} queue {q}", d.name()))),
            }
        }
        if !r.prm.is_null() {
            // SAFETY: the secondary put the BPF parameters in shared memory and
            // keeps them until its enable is answered.
            let arg = unsafe { (*r.prm).prog_arg.type_ };
            if arg != sys::RTE_BPF_ARG_PTR_MBUF {
                return Err(inval(format!("BPF program argument type {arg} (not an mbuf)")));
            }
        }
        let mut hooked: Vec<(u16, Dir, &'static Slot)> = Vec::new();
        for &(q, d, s) in &slots {
            if let Err(e) = hook(port, q, d, s, r) {
                for &(hq, hd, hs) in &hooked {
                    unhook(port, hq, hd, hs, |_| {});
                }
                return Err(e);
            }
            hooked.push((q, d, s));
        }
        for &(q, d, _) in &hooked {
            owners.insert((port, q, d), (peer.to_string(), r.device.clone()));
        }
        self.log(format!(
            "capture started on {} ({what}, {}, snap length {}{})",
            r.device,
            if r.ver == VER_PCAPNG { "pcapng" } else { "pcap" },
            r.snaplen,
            if r.prm.is_null() { "" } else { ", with a filter" }
        ));
        Ok(())
    }
}

/// Whether a secondary still listens on its multi-process socket `peer`.
/// Connecting a datagram socket sends nothing; it fails when no socket is
/// bound at that path (the process died without removing its file) or when
/// the file is gone (it exited).
fn peer_alive(peer: &str) -> bool {
    match std::os::unix::net::UnixDatagram::unbound().and_then(|u| u.connect(peer)) {
        Ok(()) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound),
    }
}

/// A capture's statistics (accepted, filtered, nombuf, ringfull) for the log.
fn counts([copied, filtered, nombuf, ringfull]: [u64; 4]) -> String {
    format!("{copied} packets copied, {filtered} filtered out, {nombuf} lost for buffers, {ringfull} for ring space")
}

fn describe(slots: &[(u16, Dir, &Slot)]) -> String {
    let mut parts = Vec::new();
    for d in [Dir::Rx, Dir::Tx] {
        let qs: Vec<String> = slots.iter().filter(|s| s.1 == d).map(|s| s.0.to_string()).collect();
        if !qs.is_empty() {
            parts.push(format!("{} queues {}", d.name(), qs.join(",")));
        }
    }
    parts.join(", ")
}

/// Points `s` at the request's buffers and adds its ethdev callback.
fn hook(port: u16, queue: u16, dir: Dir, s: &'static Slot, r: &Request) -> Result<(), (c_int, String)> {
    let filter = if r.prm.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: `prm` is valid (checked by the caller) and its program takes
        // an mbuf; rte_bpf_load copies what it needs.
        let f = unsafe { sys::rte_bpf_load(r.prm) };
        if f.is_null() {
            // SAFETY: reads this thread's rte_errno.
            let errno = unsafe { sys::l4lb_errno() };
            return Err((
                errno,
                format!("cannot load the BPF filter ({})", DpdkError::from_errno("rte_bpf_load")),
            ));
        }
        f
    };
    s.ring.store(r.ring, Ordering::Relaxed);
    s.mp.store(r.mp, Ordering::Relaxed);
    s.filter.store(filter, Ordering::Relaxed);
    s.pcapng.store(r.ver == VER_PCAPNG, Ordering::Relaxed);
    s.snaplen.store(r.snaplen, Ordering::Relaxed);
    s.reset_stats();
    s.gate.open();
    let param = s as *const Slot as *mut c_void;
    // SAFETY: the port and queue exist; `param` is a Slot that is never freed,
    // and the callbacks only read it.
    let cb = unsafe {
        match dir {
            Dir::Rx => sys::rte_eth_add_first_rx_callback(port, queue, Some(on_rx), param),
            Dir::Tx => sys::rte_eth_add_tx_callback(port, queue, Some(on_tx), param),
        }
    };
    if cb.is_null() {
        // SAFETY: reads this thread's rte_errno.
        let errno = unsafe { sys::l4lb_errno() };
        s.gate.close_and_wait(|_| {});
        drop_filter(s);
        return Err((errno, format!("cannot add the {} callback on queue {queue}", dir.name())));
    }
    s.cb.store(cb as *mut c_void, Ordering::Relaxed);
    Ok(())
}

/// Removes `s`'s callback and returns once no worker is inside it: after this
/// the capture's ring and mempool may be freed.
fn unhook(port: u16, queue: u16, dir: Dir, s: &Slot, slow: impl FnMut(Duration)) {
    let cb = s.cb.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if cb.is_null() {
        return;
    }
    // First the gate, so a worker already past the callback list copies nothing.
    s.gate.close_and_wait(slow);
    // SAFETY: `cb` is the handle this port and queue returned when it was added.
    // The callback struct is not freed (DPDK leaves that to the caller, who
    // cannot know when the last worker read it); it is 40 bytes per capture.
    unsafe {
        match dir {
            Dir::Rx => sys::rte_eth_remove_rx_callback(port, queue, cb.cast()),
            Dir::Tx => sys::rte_eth_remove_tx_callback(port, queue, cb.cast()),
        };
    }
    // A worker that read the list before the removal finds the gate closed.
    drop_filter(s);
    s.ring.store(std::ptr::null_mut(), Ordering::Relaxed);
    s.mp.store(std::ptr::null_mut(), Ordering::Relaxed);
}

fn drop_filter(s: &Slot) {
    let f = s.filter.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if !f.is_null() {
        // SAFETY: `f` came from rte_bpf_load and the gate is closed and empty,
        // so no worker runs it.
        unsafe { sys::rte_bpf_destroy(f) };
    }
}

fn decode(msg: &sys::rte_mp_msg) -> Option<Request> {
    if msg.len_param as usize != std::mem::size_of::<sys::l4lb_pdump_request>() {
        return None;
    }
    // SAFETY: the message carries exactly one request's bytes (checked above);
    // read_unaligned makes no assumption about the buffer's alignment, and
    // every bit pattern is a valid request (integers and raw pointers).
    let raw: sys::l4lb_pdump_request = unsafe { std::ptr::read_unaligned(msg.param.as_ptr().cast()) };
    let bytes: Vec<u8> = raw.device.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    Some(Request {
        ver: raw.ver,
        op: raw.op,
        flags: raw.flags,
        device: String::from_utf8_lossy(&bytes).into_owned(),
        queue: raw.queue,
        ring: raw.ring,
        mp: raw.mp,
        prm: raw.prm,
        snaplen: raw.snaplen,
    })
}

/// EAL's multi-process thread calls this for each "mp_pdump" request.
unsafe extern "C" fn on_request(msg: *const sys::rte_mp_msg, peer: *const c_void) -> c_int {
    // SAFETY: EAL passes a valid message for the duration of the call.
    let msg = unsafe { &*msg };
    // SAFETY: `peer` is the NUL-terminated socket path of the sender, which
    // EAL passes for the duration of the call (rte_mp_reply takes it as such).
    let from = unsafe { CStr::from_ptr(peer.cast::<c_char>()) }.to_string_lossy().into_owned();
    let (ver, op, err) = match (SERVER.get(), decode(msg)) {
        (Some(server), Some(req)) => (req.ver, req.op, server.handle(&req, &from)),
        (Some(server), None) => {
            server.log(format!("capture request of {} bytes refused (not DPDK 22.11's)", msg.len_param));
            (0, 0, -libc::EINVAL)
        }
        (None, _) => (0, 0, -libc::EINVAL),
    };
    let mut reply = sys::rte_mp_msg::default();
    for (d, s) in reply.name.iter_mut().zip(ACTION.to_bytes()) {
        *d = *s as c_char;
    }
    let resp = sys::l4lb_pdump_response { ver, res_op: op, err_value: err };
    reply.len_param = std::mem::size_of::<sys::l4lb_pdump_response>() as c_int;
    // SAFETY: the response is 8 plain bytes and param holds 256.
    unsafe {
        std::ptr::write_unaligned(reply.param.as_mut_ptr().cast(), resp);
    }
    // SAFETY: `reply` is a complete message; `peer` is the address EAL gave us.
    unsafe { sys::rte_mp_reply(&mut reply, peer.cast()) }
}

/// The capture server; stops (unhooking any capture still on) when dropped.
pub struct PacketCapture {
    server: Arc<Server>,
    _eal: Eal,
}

impl Eal {
    /// Serves `dpdk-dumpcap` / `dpdk-pdump` (secondary processes attaching to
    /// this one). Needs a primary process with shared files: not
    /// `--in-memory`, `--no-huge` or `--no-shconf`. `stall` is for tests only: a
    /// worker waits that long inside the capture callback before each copy,
    /// as a descheduled one would.
    pub fn enable_packet_capture(&self, stall: Duration) -> Result<PacketCapture, DpdkError> {
        if !self.has_shared_files() {
            return Err(DpdkError::invalid(
                "rte_pdump_init",
                "packet capture needs EAL's shared files (not in_memory, not hugepages = false)",
            ));
        }
        if SERVER.get().is_some() {
            return Err(DpdkError::invalid("rte_pdump_init", "packet capture is already on in this process"));
        }
        // SAFETY: EAL is initialised; rte_pdump_init reserves the statistics
        // memzone and registers DPDK's own handler, replaced below.
        if unsafe { sys::rte_pdump_init() } < 0 {
            return Err(DpdkError::from_errno("rte_pdump_init"));
        }
        let fail = |e: DpdkError| {
            // SAFETY: rte_pdump_init succeeded above.
            unsafe { sys::rte_pdump_uninit() };
            Err(e)
        };
        // SAFETY: the name is NUL-terminated; lookup only reads EAL's table.
        let mz = unsafe { sys::rte_memzone_lookup(c"rte_pdump_stats".as_ptr()) };
        // SAFETY: a non-null memzone pointer stays valid until it is freed
        // (rte_pdump_uninit, in Drop).
        let zone = match unsafe { mz.as_ref() } {
            Some(mz) if mz.len >= std::mem::size_of::<sys::l4lb_pdump_stats_zone>() => {
                // SAFETY: reading the union's pointer member, which EAL set.
                unsafe { mz.__bindgen_anon_1.addr.cast::<sys::l4lb_pdump_stats_zone>() }
            }
            _ => {
                return fail(DpdkError::invalid(
                    "rte_memzone_lookup",
                    "rte_pdump_init left no statistics memzone of DPDK 22.11's size",
                ))
            }
        };
        let server = Arc::new(Server {
            zone,
            stall,
            slots: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        });
        if SERVER.set(server.clone()).is_err() {
            return fail(DpdkError::invalid(
                "rte_pdump_init",
                "packet capture is already on in this process",
            ));
        }
        // SAFETY: the action name is NUL-terminated; DPDK's handler goes and
        // ours, which lives for the whole process, takes its place.
        unsafe {
            sys::rte_mp_action_unregister(ACTION.as_ptr());
            if sys::rte_mp_action_register(ACTION.as_ptr(), Some(on_request)) < 0 {
                return fail(DpdkError::from_errno("rte_mp_action_register"));
            }
        }
        Ok(PacketCapture { server, _eal: self.clone() })
    }
}

impl PacketCapture {
    /// Unhooks captures whose process is gone (killed: it could not send its
    /// disable), at most once a second; the management loop calls it often.
    pub fn sweep(&self) {
        self.server.sweep();
    }
}

impl Drop for PacketCapture {
    fn drop(&mut self) {
        // SAFETY: the name is NUL-terminated; after this no new request arrives.
        unsafe {
            sys::rte_mp_action_unregister(ACTION.as_ptr());
        }
        let slots: Vec<_> = self
            .server
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((port, queue, dir), s) in slots {
            unhook(port, queue, dir, s, |_| {});
        }
        // SAFETY: rte_pdump_init succeeded in this process, no callback is
        // hooked any more and EAL is still up (this guard holds it).
        unsafe {
            sys::rte_pdump_uninit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A worker enters and leaves in a loop and reads a "buffer" while inside;
    /// the closer closes, waits, then "frees" it. The worker must never read
    /// it freed, and must find the gate closed from then on.
    #[test]
    fn a_closed_gate_has_no_worker_inside_and_lets_none_in() {
        for _ in 0..200 {
            let gate = Arc::new(Gate::default());
            let freed = Arc::new(AtomicBool::new(false));
            let entered = Arc::new(AtomicUsize::new(0));
            gate.open();
            let worker = {
                let (gate, freed, entered) = (gate.clone(), freed.clone(), entered.clone());
                std::thread::spawn(move || {
                    let mut bad = 0;
                    for _ in 0..20_000 {
                        if let Some(_g) = gate.enter() {
                            entered.fetch_add(1, Ordering::Relaxed);
                            for _ in 0..10 {
                                if freed.load(Ordering::Relaxed) {
                                    bad += 1;
                                }
                                std::hint::spin_loop();
                            }
                        }
                    }
                    bad
                })
            };
            while entered.load(Ordering::Relaxed) < 100 {
                std::hint::spin_loop();
            }
            gate.close_and_wait(|_| {});
            freed.store(true, Ordering::Relaxed);
            assert!(gate.enter().is_none());
            assert_eq!(worker.join().unwrap(), 0, "a worker was inside after close_and_wait returned");
        }
    }

    #[test]
    fn the_gate_waits_for_a_worker_held_inside() {
        let gate = Arc::new(Gate::default());
        gate.open();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let g = gate.enter().expect("open");
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                drop(g);
                Instant::now()
            })
        };
        rx.recv().unwrap();
        gate.close_and_wait(|_| {});
        let closed = Instant::now();
        let left = worker.join().unwrap();
        assert!(closed >= left, "close_and_wait returned before the worker left");
        assert!(gate.enter().is_none());
        gate.open();
        assert!(gate.enter().is_some());
    }
}
