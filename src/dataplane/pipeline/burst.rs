//! Bursts: every packet parsed and its flow-table lines prefetched before any
//! is decided, so the lines (a DRAM miss each with a large table) arrive
//! while the worker parses and decides other packets.

use super::verdict::DropReason;
use super::{PacketMeta, TablePlan, Verdict, Worker};
use crate::balancer::state::ForwardingState;
use crate::balancer::Prefetch;
use crate::dataplane::packet::Packet;

/// Packets per `process_burst` call at most.
const BURST: usize = crate::balancer::limits::BURST_MAX;

/// What [`Worker::prepare_burst`] hands [`Worker::finish_burst`]: each
/// packet's parse (or its verdict, when parsing decided it) and flow-table
/// place. Allocated once per worker (about 6 KiB for 64 packets), reused
/// for every burst.
pub struct BurstPlan {
    metas: [PacketMeta; BURST],
    /// Each VIP packet's flow-table place and insert hint.
    places: [TablePlan; BURST],
    is_vip: [bool; BURST],
    verdicts: [Verdict; BURST],
    /// Packets planned.
    n: usize,
    /// The generation of the state the plan was made with.
    generation: u64,
    /// Whether the second prefetch pass ran ([`Worker::stage_burst`]).
    staged: bool,
}

impl Default for BurstPlan {
    fn default() -> Self {
        BurstPlan {
            metas: [PacketMeta::default(); BURST],
            places: [TablePlan::default(); BURST],
            is_vip: [false; BURST],
            verdicts: [Verdict::Drop(DropReason::Malformed); BURST],
            n: 0,
            generation: u64::MAX,
            staged: false,
        }
    }
}

impl BurstPlan {
    /// The verdicts of the last finished burst, one per packet.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts[..self.n]
    }
}

impl Worker {
    /// Processes a burst in three passes: parse every packet and prefetch, for
    /// those bound for VIPs, the primary signature line and the preferred
    /// entry (both buckets' lines for a TCP SYN); prefetch the entry a key
    /// matched elsewhere, or the second line; then decide each packet, in
    /// order. `verdicts[i]` is for `pkts[i]`.
    pub fn process_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        now_ms: u64,
        verdicts: &mut [Verdict],
        pf: &F,
    ) {
        // The per-burst plan lives with the worker: no 6 KiB of stack to
        // clear per burst. (Taken out and put back to borrow it beside `self`.)
        let mut plan = self.plan.take().unwrap_or_default();
        let n = pkts.len().min(verdicts.len());
        self.prepare_burst(st, &mut pkts[..n], in_port, &mut plan, pf);
        self.finish_burst(st, &mut pkts[..n], in_port, now_ms, &mut plan, pf);
        verdicts[..plan.n].copy_from_slice(&plan.verdicts[..plan.n]);
        self.plan = Some(plan);
    }

    /// The first pass of [`Worker::process_burst`]: parses every packet
    /// (answering ARP, NDP and echo requests in place) and prefetches the
    /// flow-table lines of those bound for VIPs. A worker may prepare its next
    /// burst before it finishes this one (see `BalanceWorker::run`), so the
    /// lines arrive while it receives and decides other packets.
    pub fn prepare_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        plan: &mut BurstPlan,
        pf: &F,
    ) {
        self.adopt(st);
        let BurstPlan { metas, places, is_vip, verdicts, n: planned, generation, staged, .. } = plan;
        let n = pkts.len().min(BURST);
        *planned = n;
        *generation = st.generation;
        *staged = false;
        for i in 0..n {
            is_vip[i] = false;
            match self.parse(st, &mut pkts[i], in_port, &mut metas[i]) {
                Some(v) => verdicts[i] = v,
                None => {
                    places[i].at = self.flows.place_of(&metas[i].key, metas[i].hash);
                    if metas[i].opens() {
                        self.flows.prefetch_place_new(&places[i].at, pf);
                    } else {
                        self.flows.prefetch_place(&places[i].at, pf);
                    }
                    is_vip[i] = true;
                }
            }
        }
    }

    /// The second prefetch pass of a prepared burst, once its primary
    /// signature lines are in cache: the entries the keys matched, the second
    /// bucket's line of keys not found in the first, and for a new flow the
    /// slot its insert will write (its insert hint). The balancing worker
    /// runs it a poll after [`Worker::prepare_burst`] and before it receives
    /// its next burst, so these lines (a miss in DRAM each, with a table
    /// larger than the caches) arrive while it receives and parses that burst;
    /// [`Worker::finish_burst`] runs it itself when it has not run. Reads the
    /// table only. The worker changes nothing in the table between the two
    /// calls, and each hint is checked again at its insert: a slot changed in
    /// between costs a fresh choice, never a wrong one. A plan made with
    /// another forwarding state is left to the finish, which parses it again.
    pub fn stage_burst<F: Prefetch>(&self, st: &ForwardingState, plan: &mut BurstPlan, now_ms: u64, pf: &F) {
        let BurstPlan { metas, places, is_vip, n, generation, staged, .. } = plan;
        if *staged || *generation != st.generation {
            return;
        }
        *staged = true;
        let n = (*n).min(BURST);
        for i in 0..n {
            // (As statements: written as one `if` expression, LLVM's code for
            // this loop took 21 more instructions per hot packet, callgrind.)
            if is_vip[i] {
                let place = &mut places[i];
                place.hint = None;
                if metas[i].opens() {
                    place.hint = self.flows.prefetch_entry_place_new(&place.at, now_ms, pf);
                } else {
                    self.flows.prefetch_entry_place(&place.at, pf);
                }
            }
        }
    }

    /// The rest of [`Worker::process_burst`] for a prepared burst (the same
    /// packets, in the same order): stages it (see [`Worker::stage_burst`])
    /// unless that ran, then decides each packet in order.
    /// `plan.verdicts()[i]` is for `pkts[i]`. A plan made with another
    /// forwarding state (one arrived in between) has its VIP packets parsed
    /// again: services are numbered per state.
    pub fn finish_burst<P: Packet, F: Prefetch>(
        &mut self,
        st: &ForwardingState,
        pkts: &mut [P],
        in_port: u16,
        now_ms: u64,
        plan: &mut BurstPlan,
        pf: &F,
    ) {
        if plan.generation != st.generation {
            self.adopt(st);
            let BurstPlan { metas, places, is_vip, verdicts, n, generation, staged, .. } = &mut *plan;
            *generation = st.generation;
            *staged = false;
            for i in 0..(*n).min(pkts.len()).min(BURST) {
                if is_vip[i] {
                    // A VIP packet is not changed by its parse: parsed again as received.
                    match self.parse(st, &mut pkts[i], in_port, &mut metas[i]) {
                        Some(v) => (is_vip[i], verdicts[i]) = (false, v),
                        None => places[i].at = self.flows.place_of(&metas[i].key, metas[i].hash),
                    }
                }
            }
        }
        self.stage_burst(st, plan, now_ms, pf);
        let BurstPlan { metas, places, is_vip, verdicts, n, .. } = plan;
        // (Bounded by BURST too, so the plan's arrays need no bounds checks.)
        let n = (*n).min(pkts.len()).min(BURST);
        for i in 0..n {
            if is_vip[i] {
                let found = self.flows.find(&metas[i].key, &places[i].at, now_ms);
                verdicts[i] = self.balance(st, &mut pkts[i], in_port, now_ms, &metas[i], found, &places[i]);
            }
            self.count(verdicts[i]);
        }
    }
}
