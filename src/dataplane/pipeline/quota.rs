//! Per-service quotas on new flows (`balancer::state::Quota`), each worker
//! enforcing its share alone: a token bucket per service for the rate, and
//! a count of the service's entries in this worker's flow table for the
//! share. Only a flow's first packet is checked; tracked flows pay nothing,
//! and a state without quotas costs one test per insert and release.
//!
//! The count follows the worker's active-flow counts: when a state comes in,
//! a service's count is the sum of its backends' active flows here, and each
//! insert and release of one of those backends' entries moves it. (Entries of
//! a backend no longer in the service are not counted: they end as their
//! flows do.)

use super::super::punt::TokenBucket;
use crate::balancer::limits::MAX_SERVICES;
use crate::balancer::state::{ForwardingState, Quota};

/// A worker's quota bookkeeping.
#[derive(Default)]
pub(super) struct Quotas {
    /// Whether the state in force has a quota (else nothing below is kept).
    pub on: bool,
    /// Per backend id: 1 + the index of its service in the state where that
    /// service has a quota, else 0.
    of_id: Vec<u16>,
    /// Per service index (grown with the states that have a quota).
    services: Vec<ServiceQuota>,
}

struct ServiceQuota {
    bucket: TokenBucket,
    /// Whether the rate is limited.
    rated: bool,
    /// The service's entries in this worker's flow table.
    flows: u32,
    /// The most it may hold.
    limit: u32,
    /// What the bucket was made for (the service's id and quota): a reload
    /// that keeps both keeps the bucket, so reloading refills nothing.
    made_for: Option<(u32, Quota)>,
}

impl Default for ServiceQuota {
    fn default() -> Self {
        ServiceQuota {
            bucket: TokenBucket::new(0, 0),
            rated: false,
            flows: 0,
            limit: u32::MAX,
            made_for: None,
        }
    }
}

impl Quotas {
    /// Takes a new state's quotas: `active` is the worker's active flows
    /// per backend id, `capacity` its flow table's, `workers` its team's size.
    pub fn adopt(&mut self, st: &ForwardingState, active: &[u32], capacity: usize, workers: u16) {
        let any = st.services.iter().any(|s| s.quota.is_some());
        if !any && !self.on {
            return;
        }
        if self.of_id.len() != active.len() {
            self.of_id = vec![0; active.len()];
        }
        let n = st.services.len().min(MAX_SERVICES);
        if self.services.len() < n {
            self.services.resize_with(n, ServiceQuota::default);
        }
        self.of_id.fill(0);
        for (i, svc) in st.services.iter().enumerate().take(MAX_SERVICES) {
            let q = &mut self.services[i];
            let Some(quota) = svc.quota else {
                q.made_for = None;
                continue;
            };
            if q.made_for != Some((svc.persist_id, quota)) {
                let (rate, burst) = quota.per_worker(workers);
                q.bucket = TokenBucket::new(rate, burst);
                q.rated = rate > 0;
                q.made_for = Some((svc.persist_id, quota));
            }
            q.limit = quota.table_limit(capacity);
            q.flows = 0;
            for &b in &svc.backends {
                let id = st.backends[b as usize].id as usize;
                if let (Some(m), Some(&n)) = (self.of_id.get_mut(id), active.get(id)) {
                    *m = i as u16 + 1;
                    q.flows = q.flows.saturating_add(n);
                }
            }
        }
        self.on = any;
    }

    /// Whether service `i` (which has a quota) may start a flow now: below
    /// its table share, and a token for its rate (taken).
    #[inline]
    pub fn admit(&mut self, i: usize, now_ms: u64) -> bool {
        let Some(q) = self.services.get_mut(i) else { return true };
        if q.flows >= q.limit {
            return false;
        }
        !q.rated || q.bucket.take(now_ms)
    }

    /// An entry of backend `id` went into the flow table.
    #[inline]
    pub fn taken(&mut self, id: u32) {
        if let Some(q) = self.service_of(id) {
            q.flows = q.flows.saturating_add(1);
        }
    }

    /// An entry of backend `id` left the flow table.
    #[inline]
    pub fn released(&mut self, id: u32) {
        if let Some(q) = self.service_of(id) {
            q.flows = q.flows.saturating_sub(1);
        }
    }

    #[inline]
    fn service_of(&mut self, id: u32) -> Option<&mut ServiceQuota> {
        let m = *self.of_id.get(id as usize)?;
        self.services.get_mut((m as usize).checked_sub(1)?)
    }

    /// Service `i`'s entries in this worker's table and its limit, while
    /// it has a quota.
    pub fn usage(&self, i: usize) -> Option<(u32, u32)> {
        let q = self.services.get(i)?;
        (self.on && q.made_for.is_some()).then_some((q.flows, q.limit))
    }
}
