//! The balancing worker: the poll loop that runs the pipeline over DPDK
//! queues, reading its forwarding state and writing its counters through
//! its mailbox (`mailbox.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::mailbox::{FlowAnswer, Handed, StateMailbox};
use super::pipeline::{
    vip_path_answer, Answer, BurstPlan, Counter, Counters, DropReason, Verdict, VipPathPorts, Worker,
};
use super::poll::{flush_all, IdleBackoff, PollConfig, PollGaps, STALL_US};
use super::punt::{self, PuntClass, TokenBucket};
use super::telemetry::WorkerStats;
use crate::balancer::state::ForwardingState;
use crate::dpdk::{tsc, Burst, CpuPrefetch, Mbuf, RxQueue, TxQueue};
use crate::net::ipv4;

/// One balancing worker's queues and state.
pub struct BalanceWorker<'p> {
    /// RX queues it polls, with the index of the port each belongs to.
    pub rx: Vec<(RxQueue<'p>, u16)>,
    /// One TX queue per port, by port index.
    pub tx: Vec<TxQueue<'p>>,
    pub pipeline: Worker,
    pub punt: Punt,
}

/// What the worker hands the ports' kernel interfaces (the exception path,
/// `dataplane::exception`): which ports have one is the forwarding state's
/// (`PortIdentity::kernel`); this bounds everything but control-plane
/// packets (`punt::class`).
pub struct Punt {
    pub bucket: TokenBucket,
    /// The source ports of the box's VIP-path health checks
    /// (`pipeline::vip_path`): the kernel's packets from them are turned
    /// into a client's, their answers back into the backend's.
    pub vip_path: Arc<VipPathPorts>,
}

impl Punt {
    pub fn new(rate_per_s: u64, burst: u64, vip_path: Arc<VipPathPorts>) -> Punt {
        Punt { bucket: TokenBucket::new(rate_per_s, burst), vip_path }
    }
}

/// Flow-table buckets swept per busy poll and per idle poll.
const SWEEP_BUSY: usize = 2;
const SWEEP_IDLE: usize = 256;
/// How often a worker publishes its counters, in ms.
const PUBLISH_MS: u64 = 1;

impl BalanceWorker<'_> {
    /// Polls until `stop`, reading the forwarding state from its own mailbox
    /// (`mailboxes[me]`; it waits for the first state) and handing packets
    /// to the other workers' mailboxes. `tsc_per_ms` converts TSC ticks to
    /// the pipeline's milliseconds.
    pub fn run(
        mut self,
        cfg: PollConfig,
        tsc_per_ms: u64,
        mailboxes: &[StateMailbox],
        me: usize,
        stop: &AtomicBool,
    ) -> WorkerStats {
        let mailbox = &mailboxes[me];
        let peers = Peers { mailboxes, me: me as u16 };
        let mut stats = WorkerStats::default();
        // Room for every state the rings can hold, so handing back never allocates.
        let mut pending: Vec<Arc<ForwardingState>> = Vec::with_capacity(64);
        let mut state = loop {
            if let Some(s) = mailbox.take_newest(&mut pending) {
                break s;
            }
            if stop.load(Ordering::Relaxed) {
                return stats;
            }
            std::hint::spin_loop();
        };
        self.pipeline.counters[Counter::StatesAdopted] += 1;
        // Two bursts in flight: each poll prepares the burst it receives
        // (parse, first flow-table prefetches) before it finishes the one it
        // held from the poll before, and stages the held one (its second
        // prefetches, which need the first's lines) before it receives, so
        // each pass's lines arrive while the worker receives and decides other
        // packets instead of right before it needs them. A poll that receives
        // nothing finishes the held burst at once: a packet waits at most one
        // poll.
        let mut next = InFlight::new();
        let mut held = InFlight::new();
        let mut backoff = IdleBackoff::default();
        let tsc_per_ms = tsc_per_ms.max(1);
        let mut gaps = PollGaps::new(STALL_US * tsc_per_ms / 1000);
        let mut published_ms = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Some(newer) = mailbox.take_newest(&mut pending) {
                // A held burst planned with the old state is parsed again
                // when it is finished (`Worker::finish_burst`).
                pending.push(std::mem::replace(&mut state, newer));
                self.pipeline.counters[Counter::StatesAdopted] += 1;
            }
            if !pending.is_empty() {
                mailbox.give_back(&mut pending);
            }
            let now_tsc = tsc();
            let now_ms = now_tsc / tsc_per_ms;
            if !mailbox.control_down.is_empty() {
                self.send_control(&state, now_ms, &peers);
            }
            gaps.poll(now_tsc);
            if mailboxes.len() > 1 {
                self.take_handed(&state, now_ms, &peers);
            }
            if now_ms.wrapping_sub(published_ms) >= PUBLISH_MS {
                published_ms = now_ms;
                self.publish(&mut stats, &gaps, tsc_per_ms, &state, mailbox, now_ms);
            }
            let mut got = 0usize;
            for (rxq, port) in self.rx.iter_mut() {
                if !held.burst.is_empty() {
                    // The held burst's second prefetch pass, before the
                    // receive: its entries arrive while this burst is
                    // received and parsed.
                    self.pipeline.stage_burst(&state, &mut held.plan, now_ms, &CpuPrefetch);
                }
                let n = rxq.burst_max(&mut next.burst, cfg.burst_size);
                if n > 0 {
                    got += n;
                    for m in next.burst.as_slice() {
                        m.prefetch_data();
                    }
                    next.port = *port;
                    self.pipeline.prepare_burst(
                        &state,
                        next.burst.as_mut_slice(),
                        *port,
                        &mut next.plan,
                        &CpuPrefetch,
                    );
                }
                held.finish(&mut self.pipeline, &state, now_ms, &mut self.tx, &peers, &mut self.punt);
                if n > 0 {
                    std::mem::swap(&mut next, &mut held);
                }
            }
            for t in self.tx.iter_mut() {
                t.drain_if_due(now_tsc);
            }
            self.pipeline.counters[Counter::RxPackets] += got as u64;
            let sweep = if got > 0 { SWEEP_BUSY } else { SWEEP_IDLE };
            self.pipeline.sweep(now_ms, sweep);
            // Flow sync's scan (nothing without [sync]): a bucket per busy
            // poll, a sweep's worth when idle.
            self.pipeline.sync_scan(&state, now_ms, if got > 0 { 1 } else { SWEEP_IDLE });
            if got > 0 {
                self.pipeline.prefetch_sweep(SWEEP_BUSY, &CpuPrefetch);
            }
            if backoff.after_poll(got, &cfg, &mut self.pipeline.counters) {
                gaps.paused();
            }
        }
        held.finish(&mut self.pipeline, &state, tsc() / tsc_per_ms, &mut self.tx, &peers, &mut self.punt);
        flush_all(&mut self.tx);
        self.publish(&mut stats, &gaps, tsc_per_ms, &state, mailbox, tsc() / tsc_per_ms);
        pending.push(state);
        mailbox.give_back(&mut pending);
        stats
    }
}

impl BalanceWorker<'_> {
    /// Decides the packets other workers handed over (a burst's worth at
    /// most per poll) and sends, hands on or frees each.
    #[inline(never)]
    fn take_handed(&mut self, state: &ForwardingState, now_ms: u64, peers: &Peers<'_>) {
        let own = &peers.mailboxes[peers.me as usize];
        for _ in 0..crate::balancer::limits::BURST_MAX {
            let Some(Handed { mut m, port, origin }) = own.handoff.pop() else { return };
            let v = self.pipeline.process_handed(state, &mut m, port, now_ms, origin);
            self.deliver(state, peers, now_ms, (m, port, origin), v);
        }
    }

    /// [`deliver`] with this worker's queues, counters and punt state; `m`
    /// came in on `port` at worker `origin`.
    fn deliver(
        &mut self,
        state: &ForwardingState,
        peers: &Peers<'_>,
        now_ms: u64,
        m: (Mbuf, u16, u16),
        v: Verdict,
    ) {
        let (c, punt) = (&mut self.pipeline.counters, &mut self.punt);
        deliver(state, &mut self.tx, peers, c, punt, now_ms, m.0, m.1, m.2, v)
    }

    /// Sends what the management core and the ports' kernel interfaces
    /// gave this worker to send: as it is, or, for a VIP-path health check,
    /// as a client's packet to the VIP would go to its backend.
    #[inline(never)]
    fn send_control(&mut self, state: &ForwardingState, now_ms: u64, peers: &Peers<'_>) {
        let own = &peers.mailboxes[peers.me as usize];
        while let Some((port, mut m)) = own.control_down.pop() {
            let probe = if state.has_vip_paths() {
                self.pipeline.vip_path_out(state, &mut m, port, now_ms, &self.punt.vip_path)
            } else {
                None
            };
            match probe {
                None => {
                    if let Some(t) = self.tx.get_mut(port as usize) {
                        t.push(m);
                        self.pipeline.counters[Counter::ControlSent] += 1;
                    }
                }
                Some(v) => self.deliver(state, peers, now_ms, (m, port, peers.me), v),
            }
        }
    }

    /// Copies the counters out for the management core and answers its
    /// flow-table questions (both off the per-packet path: once per ms).
    fn publish(
        &self,
        stats: &mut WorkerStats,
        gaps: &PollGaps,
        tsc_per_ms: u64,
        state: &ForwardingState,
        mailbox: &StateMailbox,
        now_ms: u64,
    ) {
        let p = &self.pipeline;
        stats.counters = p.counter_snapshot();
        let c = &mut stats.counters;
        for t in &self.tx {
            let s = t.stats();
            c[Counter::TxPackets] += s.sent;
            c[DropReason::TxFull] += s.dropped_full;
        }
        c[Counter::Stalls] = gaps.stalls;
        stats.longest_poll_gap_us = gaps.longest_tsc * 1000 / tsc_per_ms;
        let f = p.flows();
        (stats.flows, stats.flow_slots_used, stats.flow_capacity) =
            (f.len() as u64, f.slots_used() as u64, f.capacity() as u64);
        mailbox.telemetry.publish(stats, state, |id| p.active_flows(id));
        while let Some(q) = mailbox.queries.pop() {
            let _ = mailbox.answers.push(FlowAnswer {
                tag: q.tag,
                entry: p.tracked(&q.key, now_ms),
                persisted: q
                    .persist_id
                    .and_then(|id| p.persisted(id, &q.key.src, now_ms))
                    .map(|(b, expires_ms)| (b, expires_ms.saturating_sub(now_ms))),
            });
        }
    }
}

/// A received burst between `prepare_burst` and `finish_burst`: its packets,
/// the port they came in on, and the plan.
struct InFlight {
    burst: Burst,
    port: u16,
    plan: Box<BurstPlan>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight { burst: Burst::new(), port: 0, plan: Box::default() }
    }

    /// Decides the burst, if one is held, and sends, hands up or frees its
    /// packets; the burst is empty afterwards.
    #[inline(always)]
    fn finish(
        &mut self,
        pipeline: &mut Worker,
        st: &ForwardingState,
        now_ms: u64,
        tx: &mut [TxQueue<'_>],
        peers: &Peers<'_>,
        punt: &mut Punt,
    ) {
        if self.burst.is_empty() {
            return;
        }
        pipeline.finish_burst(st, self.burst.as_mut_slice(), self.port, now_ms, &mut self.plan, &CpuPrefetch);
        let verdicts = self.plan.verdicts();
        let (counters, port) = (&mut pipeline.counters, self.port);
        for (m, v) in self.burst.drain().zip(verdicts.iter()) {
            deliver(st, tx, peers, counters, punt, now_ms, m, port, peers.me, *v);
        }
    }
}

/// Every worker's mailbox, and which is this worker's.
struct Peers<'a> {
    mailboxes: &'a [StateMailbox],
    me: u16,
}

/// Sends, hands up, hands over or frees one decided packet by its verdict.
/// `origin`: the worker that received it from the NIC. Inlined into the
/// burst's loop: a forward (nearly every packet) is one push; the rest is out
/// of line.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn deliver(
    st: &ForwardingState,
    tx: &mut [TxQueue<'_>],
    peers: &Peers<'_>,
    counters: &mut Counters,
    punt: &mut Punt,
    now_ms: u64,
    m: Mbuf,
    in_port: u16,
    origin: u16,
    v: Verdict,
) {
    if let Verdict::Forward { port } = v {
        match tx.get_mut(port as usize) {
            Some(t) => t.push(m),
            None => drop(m),
        }
        return;
    }
    deliver_other(st, tx, peers, counters, punt, now_ms, m, in_port, origin, v)
}

/// [`deliver`] for every verdict but a forward.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn deliver_other(
    st: &ForwardingState,
    tx: &mut [TxQueue<'_>],
    peers: &Peers<'_>,
    counters: &mut Counters,
    punt: &mut Punt,
    now_ms: u64,
    m: Mbuf,
    in_port: u16,
    origin: u16,
    v: Verdict,
) {
    match v {
        Verdict::Forward { port } | Verdict::Reply { port } => match tx.get_mut(port as usize) {
            Some(t) => t.push(m),
            None => drop(m),
        },
        // ARP replies and neighbour advertisements teach the management
        // core its neighbours (it then passes them to the kernel interface);
        // the rest of the traffic for the box goes to the port's kernel
        // interface, or is freed (counted `local` by the pipeline) on a port
        // without one.
        Verdict::Local if is_neighbour_answer(m.data()) => {
            match peers.mailboxes[peers.me as usize].control_up.push((in_port, m)) {
                Ok(()) => counters[Counter::ControlUp] += 1,
                Err(_) => counters[DropReason::ControlRingFull] += 1,
            }
        }
        Verdict::Local if st.ports.get(in_port as usize).is_some_and(|p| p.kernel) => {
            to_kernel(st, peers, counters, punt, now_ms, m, in_port)
        }
        Verdict::Fragment { port } => match (tx.get_mut(port as usize), st.ports.get(port as usize)) {
            (Some(t), Some(p)) => {
                let l2 = super::pipeline::l2_len(m.data());
                send_fragments(t, counters, m, l2, p.mtu as usize)
            }
            _ => drop(m),
        },
        Verdict::Handoff { worker } => match peers.mailboxes.get(worker as usize) {
            Some(mb) => {
                if mb.handoff.push(Handed { m, port: in_port, origin }).is_err() {
                    counters[DropReason::HandoffRingFull] += 1;
                }
            }
            None => counters[DropReason::HandoffRingFull] += 1,
        },
        Verdict::Local | Verdict::Drop(_) => drop(m),
    }
}

/// Sends `m` (its IPv4 packet after `l2` bytes) in fragments of at most
/// `mtu` bytes, each in a new buffer of the same pool; the original is
/// freed. A fragment without a buffer ends the packet (counted `no_mbuf`):
/// the receiver cannot reassemble it anyway.
fn send_fragments(t: &mut TxQueue<'_>, counters: &mut Counters, m: Mbuf, l2: usize, mtu: usize) {
    let data = m.data();
    let Some(ip) = data.get(l2..) else { return };
    let Some(plan) = ipv4::Fragments::plan(ip, mtu) else {
        counters[DropReason::TooBig] += 1;
        return;
    };
    for i in 0..plan.count() {
        let len = plan.len_of(i);
        let Some(mut f) = m.alloc_sibling() else {
            counters[DropReason::NoMbuf] += 1;
            return;
        };
        let Some(buf) = f.append(l2 + len) else {
            counters[DropReason::NoMbuf] += 1;
            return;
        };
        buf[..l2].copy_from_slice(&data[..l2]);
        if plan.write(ip, i, &mut buf[l2..]).is_none() {
            counters[DropReason::Malformed] += 1;
            return;
        }
        t.push(f);
    }
}

/// Puts a packet for the box on this worker's punt ring for its class:
/// control-plane packets always (while the ring has room), the rest within
/// the worker's punt rate.
#[inline(never)]
fn to_kernel(
    st: &ForwardingState,
    peers: &Peers<'_>,
    counters: &mut Counters,
    punt: &mut Punt,
    now_ms: u64,
    mut m: Mbuf,
    port: u16,
) {
    let mb = &peers.mailboxes[peers.me as usize];
    if st.has_vip_paths() {
        match vip_path_answer(st, m.data_mut(), &punt.vip_path) {
            Answer::NotOne => {}
            Answer::Translated => counters[Counter::VipPathAnswers] += 1,
            Answer::Drop(r) => {
                counters[r] += 1;
                return;
            }
        }
    }
    let ring = match punt::class(m.data(), |src| st.is_priority_source(src)) {
        PuntClass::Control => &mb.punt_high,
        PuntClass::Other => {
            if !punt.bucket.take(now_ms) {
                counters[DropReason::PuntRateLimited] += 1;
                return;
            }
            &mb.punt_low
        }
    };
    match ring.push((port, m)) {
        Ok(()) => counters[Counter::Punted] += 1,
        Err(_) => counters[DropReason::PuntRingFull] += 1,
    }
}

/// An ARP reply or an ICMPv6 neighbour advertisement (untagged or tagged).
#[inline]
pub fn is_neighbour_answer(frame: &[u8]) -> bool {
    use crate::net::{arp, ethernet, icmp, ipv6, proto};
    let Ok(f) = ethernet::Frame::new_checked(frame) else { return false };
    let p = f.payload();
    match f.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            p.get(arp::field::OP..arp::field::OP + 2) == Some(&arp::OP_REPLY.to_be_bytes()[..])
        }
        ethernet::ETHERTYPE_IPV6 => {
            p.get(ipv6::field::NEXT_HEADER) == Some(&proto::ICMPV6)
                && p.get(ipv6::HEADER_LEN + icmp::field::TYPE) == Some(&icmp::v6::NEIGHBOR_ADVERT)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::is_neighbour_answer;
    use crate::net::{arp, ethernet, icmp, ipv6, proto};

    #[test]
    fn neighbour_answers_go_up_and_nothing_else() {
        let (mac, ip) = ([2, 0, 0, 0, 0, 0x0b], Ipv4Addr::new(198, 18, 0, 11));
        let request = arp::request_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 1), ip);
        assert!(!is_neighbour_answer(&request), "an ARP request");
        let mut reply = request;
        arp::write(&mut reply[ethernet::HEADER_LEN..], arp::OP_REPLY, mac, ip, [2, 0, 0, 0, 0, 1], ip);
        assert!(is_neighbour_answer(&reply), "an ARP reply");
        assert!(!is_neighbour_answer(&reply[..ethernet::HEADER_LEN + 7]), "cut before the op");
        let (me, them) = (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11),
        );
        let ns = icmp::solicit_frame([2, 0, 0, 0, 0, 1], me, them);
        assert!(!is_neighbour_answer(&ns), "a solicitation");
        let mut na = vec![0u8; ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmp::NA_LEN];
        ethernet::write_header(&mut na, [2, 0, 0, 0, 0, 1], mac, ethernet::ETHERTYPE_IPV6);
        let repr = ipv6::Repr {
            src: them,
            dst: me,
            next_header: proto::ICMPV6,
            payload_len: icmp::NA_LEN as u16,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
        };
        repr.write(&mut na[ethernet::HEADER_LEN..]);
        icmp::write_neighbor_advert(
            &mut na[ethernet::HEADER_LEN + ipv6::HEADER_LEN..],
            &them,
            &me,
            &them,
            mac,
            true,
        );
        assert!(is_neighbour_answer(&na), "an advertisement");
        assert!(!is_neighbour_answer(&na[..ethernet::HEADER_LEN + ipv6::HEADER_LEN]), "cut before the type");
    }
}
