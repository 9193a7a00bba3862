//! Every configured backend's status in one map that a reload's trial can
//! copy for the price of a reference count per service.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::registry::BackendStatus;

/// Every configured backend's status, by service name and then address
/// (lookups by `&str` allocate nothing: a build looks up every backend).
/// A copy shares each service's statuses until one of them changes, so a
/// reload's trial copy of a hundred thousand statuses costs a thousand
/// reference counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses(BTreeMap<String, Arc<BTreeMap<IpAddr, BackendStatus>>>);

impl std::ops::Index<(&str, IpAddr)> for Statuses {
    type Output = BackendStatus;

    /// A configured backend's status (every configured one has one).
    fn index(&self, (svc, addr): (&str, IpAddr)) -> &BackendStatus {
        self.get(svc, addr).expect("every configured backend has a status")
    }
}

impl Statuses {
    pub fn get(&self, svc: &str, addr: IpAddr) -> Option<&BackendStatus> {
        self.0.get(svc)?.get(&addr)
    }

    pub fn get_mut(&mut self, svc: &str, addr: IpAddr) -> Option<&mut BackendStatus> {
        let m = self.0.get_mut(svc)?;
        if !m.contains_key(&addr) {
            return None;
        }
        Arc::make_mut(m).get_mut(&addr)
    }

    pub fn contains(&self, svc: &str, addr: IpAddr) -> bool {
        self.get(svc, addr).is_some()
    }

    pub(super) fn insert(&mut self, svc: &str, addr: IpAddr, st: BackendStatus) {
        match self.0.get_mut(svc) {
            Some(m) => Arc::make_mut(m).insert(addr, st),
            None => Arc::make_mut(self.0.entry(svc.to_owned()).or_default()).insert(addr, st),
        };
    }

    /// Removes service `svc`'s statuses that `keep` says no to; their
    /// addresses.
    pub(super) fn retain_in(&mut self, svc: &str, keep: impl Fn(IpAddr) -> bool) -> Vec<IpAddr> {
        let Some(m) = self.0.get_mut(svc) else { return Vec::new() };
        let gone: Vec<IpAddr> = m.keys().copied().filter(|a| !keep(*a)).collect();
        if !gone.is_empty() {
            let inner = Arc::make_mut(m);
            for a in &gone {
                inner.remove(a);
            }
            if inner.is_empty() {
                self.0.remove(svc);
            }
        }
        gone
    }

    /// Keeps the services `keep` says yes to; the names of the others.
    pub(super) fn retain_services(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.0.keys().filter(|s| !keep(s)).cloned().collect();
        for s in &gone {
            self.0.remove(s);
        }
        gone
    }

    /// Service `svc`'s statuses by address.
    pub(super) fn service(&self, svc: &str) -> Option<&BTreeMap<IpAddr, BackendStatus>> {
        self.0.get(svc).map(|m| &**m)
    }

    /// ((service, address), status) by service, then address.
    pub fn iter(&self) -> impl Iterator<Item = ((&str, IpAddr), &BackendStatus)> {
        self.0.iter().flat_map(|(svc, m)| m.iter().map(move |(a, st)| ((svc.as_str(), *a), st)))
    }

    pub fn values(&self) -> impl Iterator<Item = &BackendStatus> {
        self.0.values().flat_map(|m| m.values())
    }

    pub fn len(&self) -> usize {
        self.0.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
