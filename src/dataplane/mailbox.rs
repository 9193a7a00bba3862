//! The lock-free rings between one worker and the management core: new
//! forwarding states in and old ones back (so they are freed on the
//! management core, never on a worker), neighbour answers up, the management
//! core's own packets down, flow-table questions and answers, the worker's
//! published counters, packets handed over by other workers, and packets
//! for the kernel (`dataplane::exception`).

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::telemetry::WorkerTelemetry;
use crate::balancer::flow::FlowKey;
use crate::balancer::flowtable::Entry;
use crate::balancer::limits::MAX_BACKEND_IDS;
use crate::balancer::state::ForwardingState;
use crate::dpdk::Mbuf;

/// One worker's rings to and from the management core: new states in, old
/// states back; control packets (ARP replies, neighbour advertisements) up,
/// packets the management core wants sent (its ARP requests and
/// solicitations) down. All lock-free (crossbeam `ArrayQueue`).
pub struct StateMailbox {
    inbox: ArrayQueue<Arc<ForwardingState>>,
    returned: ArrayQueue<Arc<ForwardingState>>,
    /// (port, packet) from the worker to the management core.
    pub control_up: ArrayQueue<(u16, Mbuf)>,
    /// (port, packet) for the worker to transmit.
    pub control_down: ArrayQueue<(u16, Mbuf)>,
    /// Flow-table questions from the management core (`l4lb ctl lookup`)...
    pub queries: ArrayQueue<FlowQuery>,
    /// ...and the worker's answers.
    pub answers: ArrayQueue<FlowAnswer>,
    /// Packets for the ports' kernel interfaces, to the exception path's
    /// thread: control-plane traffic (BGP, BFD, ARP, NDP)...
    pub punt_high: ArrayQueue<(u16, Mbuf)>,
    /// ...and the rest (rate-limited by the worker).
    pub punt_low: ArrayQueue<(u16, Mbuf)>,
    /// Packets other workers handed to this one to decide
    /// (`Verdict::Handoff`): many producers, this worker consumes.
    pub handoff: ArrayQueue<Handed>,
    /// The worker's live counters.
    pub telemetry: Arc<WorkerTelemetry>,
}

/// A packet handed from one worker to another: the port it came in on and
/// the worker that received it from the NIC.
pub struct Handed {
    pub m: Mbuf,
    pub port: u16,
    pub origin: u16,
}

/// Packets in flight to one worker from the others. Hand-offs are rare (the
/// first packet of a persisted client's new flow on a worker that is not
/// the client's owner, ICMP errors), so a full ring means a flood: the
/// packet is dropped and counted (`handoff_ring_full`).
pub const HANDOFF_RING: usize = 1024;

/// "Do you track this flow?", asked of every worker.
#[derive(Debug, Clone, Copy)]
pub struct FlowQuery {
    pub tag: u64,
    pub key: FlowKey,
    /// The service's persistence id, when it has persistence: also ask
    /// whether the source is kept on a backend.
    pub persist_id: Option<u32>,
}

/// A worker's answer: the tracked entry, if any, and the persisted backend
/// id of the source with the time it has left (ms), if asked and any.
#[derive(Debug, Clone, Copy)]
pub struct FlowAnswer {
    pub tag: u64,
    pub entry: Option<Entry>,
    pub persisted: Option<(u32, u64)>,
}

/// Control packets in flight per direction and worker.
pub const CONTROL_RING: usize = 256;

impl StateMailbox {
    /// Rings of `depth` states each.
    pub fn new(depth: usize) -> StateMailbox {
        StateMailbox {
            inbox: ArrayQueue::new(depth),
            returned: ArrayQueue::new(depth + 1),
            control_up: ArrayQueue::new(CONTROL_RING),
            control_down: ArrayQueue::new(CONTROL_RING),
            queries: ArrayQueue::new(16),
            answers: ArrayQueue::new(16),
            handoff: ArrayQueue::new(HANDOFF_RING),
            punt_high: ArrayQueue::new(crate::control::config::PUNT_RING_HIGH),
            punt_low: ArrayQueue::new(crate::control::config::PUNT_RING_LOW),
            telemetry: Arc::new(WorkerTelemetry::new(MAX_BACKEND_IDS)),
        }
    }

    /// Management side: offers a state; gives it back when the ring is full,
    /// so the caller retries (a state is never lost).
    pub fn publish(&self, st: Arc<ForwardingState>) -> Result<(), Arc<ForwardingState>> {
        self.inbox.push(st)
    }

    /// Management side: the states workers are done with (dropped here, on
    /// the management core).
    pub fn reclaim(&self) -> usize {
        let mut n = 0;
        while self.returned.pop().is_some() {
            n += 1;
        }
        n
    }

    /// Worker side: the newest state waiting, if any (older ones waiting are
    /// returned unused).
    #[inline]
    pub fn take_newest(&self, pending: &mut Vec<Arc<ForwardingState>>) -> Option<Arc<ForwardingState>> {
        let mut newest = self.inbox.pop()?;
        while let Some(newer) = self.inbox.pop() {
            pending.push(std::mem::replace(&mut newest, newer));
        }
        Some(newest)
    }

    /// Worker side: hands old states back; what does not fit stays pending.
    #[inline]
    pub fn give_back(&self, pending: &mut Vec<Arc<ForwardingState>>) {
        while let Some(old) = pending.pop() {
            if let Err(old) = self.returned.push(old) {
                pending.push(old);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::state::PortIdentity;

    fn state(generation: u64) -> Arc<ForwardingState> {
        Arc::new(
            ForwardingState::build(
                generation,
                vec![PortIdentity { mac: [2, 0, 0, 0, 0, 1], mtu: 1500, ..Default::default() }],
                vec![],
            )
            .unwrap(),
        )
    }

    #[test]
    fn mailbox_delivers_the_newest_and_returns_the_rest() {
        let mb = StateMailbox::new(2);
        assert!(mb.publish(state(1)).is_ok());
        assert!(mb.publish(state(2)).is_ok());
        let third = mb.publish(state(3)).unwrap_err();
        assert_eq!(third.generation, 3, "a full ring hands the state back for a retry");
        let mut pending = Vec::new();
        let got = mb.take_newest(&mut pending).unwrap();
        assert_eq!(got.generation, 2);
        assert_eq!(pending.iter().map(|s| s.generation).collect::<Vec<_>>(), vec![1]);
        assert!(mb.publish(third).is_ok());
        mb.give_back(&mut pending);
        assert!(pending.is_empty());
        assert_eq!(mb.reclaim(), 1);
        assert_eq!(mb.take_newest(&mut pending).unwrap().generation, 3);
    }

    #[test]
    fn give_back_keeps_what_does_not_fit() {
        let mb = StateMailbox::new(1); // return ring holds 2
        let mut pending = vec![state(1), state(2), state(3)];
        mb.give_back(&mut pending);
        assert_eq!(pending.len(), 1);
        assert_eq!(mb.reclaim(), 2);
        mb.give_back(&mut pending);
        assert!(pending.is_empty());
        assert_eq!(mb.reclaim(), 1);
    }
}
