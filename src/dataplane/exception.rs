//! The exception path: the thread that moves packets between the workers and
//! the ports' kernel interfaces (DPDK `net_tap` or `virtio_user` devices whose
//! other side is a Linux interface with the port's MAC and addresses).
//!
//! - **Up**: the workers put what is the box's own traffic on their punt
//!   rings (`StateMailbox::punt_high` for control-plane packets, `punt_low`
//!   for the rest, which each worker rate-limits); this thread drains every
//!   worker's high ring before any low one, and the management core's
//!   neighbour answers (after it has learnt from them), and sends them to the
//!   kernel interface of the port they came in on.
//! - **Down**: what the kernel sends on its interface is received here and
//!   handed to a worker (its `control_down` ring, the workers in turn), which
//!   sends it on the port: each TX queue keeps its one owner. The kernel's ARP
//!   replies and neighbour advertisements for the port's addresses stay here:
//!   l4lb answers for those itself (those for the interface's link-local
//!   address go out).
//!
//! The thread owns the kernel devices' queues alone; it sleeps briefly when
//! there is nothing to move (it is not a busy-polling core).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::queue::ArrayQueue;

use super::mailbox::StateMailbox;
use super::pipeline::VipPathPorts;
use super::punt::kernel_answer_for;
use crate::dpdk::{Burst, Mbuf, RxQueue, TxQueue};

/// What the thread moved, per data port (by port index).
#[derive(Default)]
pub struct KernelCounters {
    /// Packets sent to the kernel interface.
    pub to_kernel: AtomicU64,
    /// Packets from the kernel handed to a worker to send on the port.
    pub from_kernel: AtomicU64,
    /// Packets dropped on the way: the kernel device full, the workers'
    /// rings full, the kernel's own neighbour answers.
    pub dropped: AtomicU64,
}

/// What the exception path shares with the management core.
pub struct KernelLink {
    /// By data port index; ports without a kernel interface count nothing
    /// (which have one is the forwarding state's `PortIdentity::kernel`).
    pub counters: Vec<KernelCounters>,
    /// Each data port's own addresses: the kernel's ARP and neighbour
    /// answers for them stay in (l4lb answers for them on the wire).
    pub addresses: Vec<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)>,
    /// Neighbour answers the management core has learnt from, for the kernel.
    pub from_management: ArrayQueue<(u16, Mbuf)>,
    /// The source ports of VIP-path health checks, which the management
    /// side's checks claim and the workers read (`pipeline::vip_path`).
    pub vip_path: Arc<VipPathPorts>,
}

impl KernelLink {
    /// `addresses`: each data port's, by port index.
    pub fn new(addresses: Vec<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)>) -> KernelLink {
        KernelLink {
            counters: addresses.iter().map(|_| KernelCounters::default()).collect(),
            addresses,
            from_management: ArrayQueue::new(crate::control::config::PUNT_RING_HIGH),
            vip_path: Arc::default(),
        }
    }
}

/// One kernel interface's queues and the data port it stands for.
pub struct KernelQueues<'p> {
    pub port: u16,
    pub rx: RxQueue<'p>,
    pub tx: TxQueue<'p>,
}

/// Packets taken from each low-priority ring per round.
const LOW_PER_ROUND: usize = 64;
/// The pause when a round moved nothing.
const IDLE_PAUSE: Duration = Duration::from_micros(100);

/// Runs the exception path until `stop`.
pub fn run(
    mut queues: Vec<KernelQueues<'_>>,
    link: &KernelLink,
    mailboxes: &[StateMailbox],
    stop: &AtomicBool,
) {
    crate::dpdk::block_driver_signals();
    let mut burst = Burst::new();
    let mut next_worker = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut moved = 0usize;
        // Up: control-plane packets first, from every worker.
        for mb in mailboxes {
            while let Some((port, m)) = mb.punt_high.pop() {
                moved += 1;
                to_kernel(&mut queues, link, port, m);
            }
        }
        while let Some((port, m)) = link.from_management.pop() {
            moved += 1;
            to_kernel(&mut queues, link, port, m);
        }
        for mb in mailboxes {
            for _ in 0..LOW_PER_ROUND {
                let Some((port, m)) = mb.punt_low.pop() else { break };
                moved += 1;
                to_kernel(&mut queues, link, port, m);
            }
        }
        // Down: the kernel's packets, to the workers in turn.
        for q in queues.iter_mut() {
            let n = q.rx.burst(&mut burst);
            moved += n;
            let c = &link.counters[q.port as usize];
            let (v4, v6) = link.addresses.get(q.port as usize).copied().unwrap_or_default();
            for m in burst.drain() {
                if kernel_answer_for(m.data(), v4, v6) || mailboxes.is_empty() {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                next_worker = (next_worker + 1) % mailboxes.len();
                match mailboxes[next_worker].control_down.push((q.port, m)) {
                    Ok(()) => c.from_kernel.fetch_add(1, Ordering::Relaxed),
                    Err(_) => c.dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            q.tx.flush();
        }
        if moved == 0 {
            std::thread::sleep(IDLE_PAUSE);
        }
    }
    for q in queues.iter_mut() {
        q.tx.flush();
    }
}

/// Sends a punted packet to the kernel interface of `port`.
fn to_kernel(queues: &mut [KernelQueues<'_>], link: &KernelLink, port: u16, m: Mbuf) {
    let Some(c) = link.counters.get(port as usize) else { return };
    match queues.iter_mut().find(|q| q.port == port) {
        Some(q) => {
            let before = q.tx.stats().dropped_full;
            q.tx.push(m);
            if q.tx.stats().dropped_full > before {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                c.to_kernel.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
