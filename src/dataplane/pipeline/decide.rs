//! The flow decision: the flow table first (a tracked flow keeps its backend
//! while that backend is in the state), then persistence, then the service's
//! scheduler; the flow's state machine from the client's packets.
//!
//! With several workers, two decisions need another worker
//! ([`Verdict::Handoff`]): a new flow of a persistent service whose client
//! has no usable entry goes to the client's owner, the only worker that
//! makes its entry (`balancer::persist`); an ICMP error whose flow this
//! worker does not track goes round the workers until one does (the last
//! one decides as for an untracked flow).

use super::verdict::DropReason;
use super::{release, Counter, PacketMeta, TablePlan, Verdict, Worker, NOT_HANDED};
use crate::balancer::flow::KeyKind;
use crate::balancer::flowtable::{refresh_slack, FlowState, NewFlow, Tracked};
use crate::balancer::persist::{self, Claimed};
use crate::balancer::state::{ForwardingState, OverQuota, Service, ServiceEvent};
use crate::dataplane::packet::Packet;
use crate::net::{ethernet, proto, tcp};

impl Worker {
    /// Flow tracking, scheduling and the DSR rewrite of one VIP packet:
    /// `slot` is its flow's, if tracked; `table` its place in the flow table.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn balance<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
        found: Option<(usize, Tracked)>,
        table: &TablePlan,
    ) -> Verdict {
        let svc = &st.services[meta.service as usize];
        let kind = meta.kind;
        // Whether this packet moved the flow's expiry (or started or moved the
        // flow): only then is the client's persistence refreshed, so that
        // most packets of a persistent flow skip that table too.
        let mut refreshed = true;
        // Whether this packet's backend was chosen now (not the flow table's).
        let mut decided = false;
        // The backend's slot in the state and its stable id.
        let (backend, id) = match found {
            Some((s, was)) => {
                let (e_backend, e_state) = (was.backend(), was.state());
                match st.slot_of(e_backend) {
                    Some(b) => {
                        if kind != KeyKind::IcmpError {
                            let state = next_state(svc.proto, kind, meta.tcp_flags, Some(e_state));
                            // A handshake's end (passive health): the
                            // client's SYN again, the first time (its
                            // backend did not answer), or its first ACK.
                            if e_state == FlowState::SynSeen && state != FlowState::SynSeen {
                                self.handshake_ended(s, svc, state, now_ms);
                            }
                            let t = svc.timeouts.for_state(state);
                            // Persistence bounds the slack too (per service).
                            let slack = refresh_slack(t).min(svc.persist_slack_ms);
                            refreshed = self.flows.refresh(s, &was, state, now_ms + t, slack, now_ms);
                        }
                        (b, e_backend)
                    }
                    None => {
                        // Its backend is gone (down or removed): this flow moves.
                        let Some(b) = self.schedule(st, svc, meta, now_ms) else {
                            return self.unscheduled(svc, meta);
                        };
                        decided = true;
                        let id = st.backends[b].id;
                        let Worker { flows, active, quotas, .. } = self;
                        flows.rebind(s, id, &mut release(active, quotas));
                        self.hold(id);
                        let state = next_state(svc.proto, kind, meta.tcp_flags, None);
                        self.flows.touch(s, state, now_ms + svc.timeouts.for_state(state), now_ms);
                        self.counters[Counter::Rescheduled] += 1;
                        self.per_backend.count_new_flow(id as usize);
                        if self.sync.is_some() {
                            self.share_if_at_risk(st, svc, meta, b, state);
                        }
                        (b, id)
                    }
                }
            }
            None => {
                // ICMP errors follow flows and never start one; a packet
                // another worker handed over is decided here but tracked
                // there. Both are rare: off the new-flow path.
                if kind == KeyKind::IcmpError || self.handed_origin != NOT_HANDED {
                    return self.balance_untracked(st, pkt, in_port, now_ms, meta);
                }
                let Some(b) = self.schedule(st, svc, meta, now_ms) else {
                    return self.unscheduled(svc, meta);
                };
                if svc.quota.is_some() && !self.quotas.admit(meta.service as usize, now_ms) {
                    return self.over_quota(st, svc, b, pkt, in_port, now_ms, meta);
                }
                decided = true;
                let id = st.backends[b].id;
                let state = next_state(svc.proto, kind, meta.tcp_flags, None);
                let expires = now_ms + svc.timeouts.for_state(state);
                let Worker { flows, active, quotas, .. } = self;
                let new = NewFlow { backend: id, state, expires_ms: expires };
                flows.insert_at(&meta.key, new, &table.at, now_ms, table.hint, &mut release(active, quotas));
                self.hold(id);
                self.counters[Counter::NewFlows] += 1;
                self.per_backend.count_new_flow(id as usize);
                if self.sync.is_some() {
                    self.share_if_at_risk(st, svc, meta, b, state);
                }
                (b, id)
            }
        };
        if svc.persistence_ms > 0 && kind != KeyKind::IcmpError && refreshed {
            self.persist_flow(svc, &meta.key.src, id, now_ms, decided);
        }
        self.send_to(st, svc, backend, id, pkt, in_port, now_ms, meta)
    }

    /// The DSR rewrite of a VIP packet for `backend` (its slot in the state;
    /// `id` its stable id) and its per-backend count.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn send_to<P: Packet>(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        backend: usize,
        id: u32,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
    ) -> Verdict {
        let id = id as usize;
        if let Some(t) = st.template(backend) {
            if meta.ip_len <= t.max_inner && meta.l2_len as usize == ethernet::HEADER_LEN {
                self.per_backend.count(id, meta.ip_len as u64);
                return self.encap_template(t, pkt, meta);
            }
        }
        let v = self.rewrite(st, svc, &st.backends[backend], pkt, in_port, now_ms, meta);
        if let Verdict::Forward { .. } = v {
            self.per_backend.count(id, meta.ip_len as u64);
        }
        v
    }

    /// A new flow over its service's quota (`backend` is the one its
    /// scheduler chose): dropped, or sent there with no table entry where
    /// the service says `stateless` (a hashing scheduler, so the flow's
    /// next packets are sent alike). A TCP segment without SYN is no new
    /// connection but one this worker does not track (it began before a
    /// restart, or on a box that failed): where every box would send it to
    /// `backend` anyway — the service's hash, or a peer's entry — it goes
    /// there without an entry whatever the mode, so a quota never breaks a
    /// connection that Maglev or flow sync would keep, and still takes no
    /// room in the table. Counted for the service either way.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn over_quota<P: Packet>(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        backend: usize,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
    ) -> Verdict {
        let worker = self.index as usize;
        let id = st.backends[backend].id;
        let midstream =
            svc.proto == proto::TCP && meta.kind == KeyKind::FiveTuple && meta.tcp_flags & tcp::SYN == 0;
        let kept_anyway = midstream
            && svc.persistence_ms == 0
            && (svc.stateless_pick(&meta.key, meta.hash) == Some(backend)
                || self
                    .sync
                    .as_deref()
                    .is_some_and(|y| y.peers.get(&meta.key, meta.hash, now_ms) == Some(id)));
        if kept_anyway || svc.quota.is_some_and(|q| q.over == OverQuota::Stateless) {
            svc.stats.count(worker, ServiceEvent::OverQuotaStateless);
            self.counters[Counter::OverQuotaStateless] += 1;
            return self.send_to(st, svc, backend, id, pkt, in_port, now_ms, meta);
        }
        svc.stats.count(worker, ServiceEvent::OverQuotaDropped);
        Verdict::Drop(DropReason::OverQuota)
    }

    /// A VIP packet this worker decides without tracking its flow: an ICMP
    /// error whose flow it does not track (handed to the next worker, unless
    /// the error has been round them all: then decided as a new flow), or a
    /// new flow another worker handed over (decided and, if persistent,
    /// recorded here; tracked by the worker that received it, whose next
    /// packet finds the persistence entry).
    #[inline(never)]
    fn balance_untracked<P: Packet>(
        &mut self,
        st: &ForwardingState,
        pkt: &mut P,
        in_port: u16,
        now_ms: u64,
        meta: &PacketMeta,
    ) -> Verdict {
        let svc = &st.services[meta.service as usize];
        let icmp = meta.kind == KeyKind::IcmpError;
        if icmp && self.workers > 1 {
            let origin = if self.handed_origin == NOT_HANDED { self.index } else { self.handed_origin };
            let next = (self.index + 1) % self.workers;
            if next != origin {
                return Verdict::Handoff { worker: next };
            }
        }
        let Some(b) = self.schedule(st, svc, meta, now_ms) else {
            return self.unscheduled(svc, meta);
        };
        let id = st.backends[b].id;
        if svc.persistence_ms > 0 && !icmp {
            self.persist_flow(svc, &meta.key.src, id, now_ms, true);
        }
        self.send_to(st, svc, b, id, pkt, in_port, now_ms, meta)
    }

    /// A backend for a new flow (or one whose backend is gone): the
    /// persisted one if live, else the scheduler's. `None`: no backend here
    /// ([`Worker::unscheduled`] says why), also when the service's access
    /// list refuses the client — checked whenever a flow is decided, never
    /// for a tracked flow's packets. (Out of line: the established path's
    /// code in `balance` stays lean.)
    #[inline(never)]
    pub(super) fn schedule(
        &mut self,
        st: &ForwardingState,
        svc: &Service,
        meta: &PacketMeta,
        now_ms: u64,
    ) -> Option<usize> {
        if svc.access.is_some() && self.refused(svc, meta) {
            return None;
        }
        // A flow another box tracked (flow sync): never a TCP SYN, which
        // starts a flow; so SYN floods pay nothing for it.
        if self.sync.is_some() && !meta.opens() {
            if let Some(b) = self.synced_choice(st, meta, now_ms) {
                return Some(b);
            }
        }
        if svc.persistence_ms > 0 {
            if let Some(choice) = self.persistent_choice(st, svc, meta, now_ms) {
                return choice;
            }
        }
        let sched = self.sched.get_mut(meta.service as usize)?;
        // `meta.hash` is the documented flow hash, computed once by the parse.
        svc.pick(st, &meta.key, meta.hash, &self.active, sched)
    }

    /// Persistence's part of [`Worker::schedule`]: `Some(Some(b))` the
    /// client's live entry's backend, `Some(None)` no usable entry and the
    /// client's owner must decide, `None` the scheduler decides. (Out of
    /// line: services without persistence pay one test.)
    #[inline(never)]
    fn persistent_choice(
        &self,
        st: &ForwardingState,
        svc: &Service,
        meta: &PacketMeta,
        now_ms: u64,
    ) -> Option<Option<usize>> {
        if let Some(id) = self.persist.lookup(svc.persist_id, &meta.key.src, now_ms) {
            // A drained backend, or one whose weight is now 0, takes no new
            // flows, persisted clients' included.
            if let Some(b) = st.slot_of(id).filter(|&b| st.backends[b].takes_new_flows()) {
                return Some(Some(b));
            }
        }
        // No usable entry: only the client's owner makes one, so two workers
        // never give one client two backends.
        self.owes_handoff(meta).then_some(None)
    }

    /// Whether a new flow of a persistent service with no usable entry must
    /// go to its client's owner: not from the owner itself, not a packet
    /// already handed over, not an ICMP error (it makes no entry: it is
    /// decided where it is).
    #[inline]
    fn owes_handoff(&self, meta: &PacketMeta) -> bool {
        meta.kind != KeyKind::IcmpError
            && self.handed_origin == NOT_HANDED
            && persist::owner(&meta.key.src, self.workers) != self.index
    }

    /// The flow in `slot`, SYN-only until this packet, is now `state`: its
    /// SYN again (its backend did not answer: counted once per flow), or
    /// its first ACK, which ends the handshake one round trip through the
    /// backend after the SYN — the SYN's time is its entry's expiry less the
    /// SYN timeout (a SYN-only entry is written once). Out of line: once per
    /// flow.
    #[inline(never)]
    fn handshake_ended(&mut self, slot: usize, svc: &Service, state: FlowState, now_ms: u64) {
        let (id, expires_ms) = (self.flows.backend(slot) as usize, self.flows.expires_ms(slot));
        match state {
            FlowState::SynRetried => {
                self.counters[Counter::SynRetried] += 1;
                self.per_backend.count_syn_retried(id);
            }
            FlowState::Established => {
                let syn_ms = expires_ms.saturating_sub(svc.timeouts.tcp_syn_ms);
                self.per_backend.count_handshake(id, now_ms.saturating_sub(syn_ms));
            }
            _ => {}
        }
    }

    /// Whether the service's access list refuses the client (counted for
    /// the service). Out of line: services without a list pay one test.
    #[inline(never)]
    fn refused(&self, svc: &Service, meta: &PacketMeta) -> bool {
        let refused = svc.access.as_deref().is_some_and(|acl| !acl.permits(&meta.key.src));
        if refused {
            svc.stats.count(self.index as usize, ServiceEvent::Denied);
        }
        refused
    }

    /// The verdict of a packet [`Worker::schedule`] found no backend for:
    /// refused by the access list, the client's owner must decide, or no
    /// backend takes new flows.
    #[inline(never)]
    fn unscheduled(&self, svc: &Service, meta: &PacketMeta) -> Verdict {
        if svc.access.as_deref().is_some_and(|acl| !acl.permits(&meta.key.src)) {
            return Verdict::Drop(DropReason::AccessDenied);
        }
        if svc.persistence_ms > 0 && self.owes_handoff(meta) {
            return Verdict::Handoff { worker: persist::owner(&meta.key.src, self.workers) };
        }
        Verdict::Drop(DropReason::NoBackend)
    }

    /// Keeps a persistent client on `backend` for the service's timeout from
    /// now: refreshes its live entry; a backend chosen now (`decided`) makes
    /// or remakes the entry, which only the client's owner does (a worker
    /// that is not the owner decides only on a live entry, refreshed here).
    #[inline(never)]
    fn persist_flow(&mut self, svc: &Service, client: &[u8; 16], backend: u32, now_ms: u64, decided: bool) {
        let expires = now_ms + svc.persistence_ms;
        if self.persist.refresh(svc.persist_id, client, backend, now_ms, expires) || !decided {
            return;
        }
        if persist::owner(client, self.workers) != self.index {
            return;
        }
        match self.persist.claim(svc.persist_id, client, backend, now_ms, expires) {
            Claimed::Written => self.counters[Counter::PersistWritten] += 1,
            Claimed::Evicted => {
                self.counters[Counter::PersistWritten] += 1;
                self.counters[Counter::PersistEvicted] += 1;
            }
            Claimed::Contended => {}
        }
    }
}

/// A flow's next state from the client's packet (DSR: one direction only).
#[inline]
pub fn next_state(p: u8, kind: KeyKind, flags: u8, prev: Option<FlowState>) -> FlowState {
    // Most packets first: a plain segment of an established TCP flow.
    if prev == Some(FlowState::Established)
        && flags & (tcp::FIN | tcp::RST | tcp::SYN) == 0
        && kind == KeyKind::FiveTuple
        && p == proto::TCP
    {
        return FlowState::Established;
    }
    if kind != KeyKind::FiveTuple {
        return FlowState::Other;
    }
    match p {
        proto::TCP => {
            if flags & (tcp::FIN | tcp::RST) != 0 {
                FlowState::Closing
            } else if flags & tcp::SYN != 0 && flags & tcp::ACK == 0 {
                match prev {
                    Some(FlowState::Established) => FlowState::Established,
                    Some(s) if s.opening() => FlowState::SynRetried,
                    _ => FlowState::SynSeen,
                }
            } else {
                match prev {
                    Some(FlowState::Closing) => FlowState::Closing,
                    _ => FlowState::Established,
                }
            }
        }
        proto::UDP => FlowState::Udp,
        _ => FlowState::Other,
    }
}
