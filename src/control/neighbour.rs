//! Dynamic neighbour resolution, run by the management core: which next hops
//! need a MAC, when to ask (ARP / neighbour solicitation through the port),
//! what the answers taught us, and when an answer is too old to trust. Time is
//! passed in (milliseconds).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::net::ethernet::Mac;

/// Ask this often while a neighbour is unresolved.
pub const RETRY_MS: u64 = 1_000;
/// Ask again this long after the last answer (refresh).
pub const REFRESH_MS: u64 = 30_000;
/// Forget a MAC this long after the last answer.
pub const EXPIRE_MS: u64 = 90_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mac: Option<Mac>,
    answered_ms: u64,
    asked_ms: Option<u64>,
}

/// Neighbours per (port, address).
#[derive(Debug, Default, Clone)]
pub struct NeighbourTable {
    entries: BTreeMap<(usize, IpAddr), Entry>,
}

impl NeighbourTable {
    /// Sets the neighbours to track; others are forgotten. Returns whether the
    /// set of known MACs changed.
    pub fn track(&mut self, wanted: &[(usize, IpAddr)]) -> bool {
        let had = self.resolved();
        self.entries.retain(|k, _| wanted.contains(k));
        for k in wanted {
            self.entries.entry(*k).or_insert(Entry { mac: None, answered_ms: 0, asked_ms: None });
        }
        had != self.resolved()
    }

    /// The MAC of a neighbour, if known.
    pub fn mac(&self, port: usize, ip: IpAddr) -> Option<Mac> {
        self.entries.get(&(port, ip)).and_then(|e| e.mac)
    }

    /// Records an answer (ARP reply or advertisement) seen on `port`. Only
    /// tracked neighbours are learnt. Returns whether a MAC changed.
    pub fn learn(&mut self, port: usize, ip: IpAddr, mac: Mac, now_ms: u64) -> bool {
        match self.entries.get_mut(&(port, ip)) {
            Some(e) => {
                let changed = e.mac != Some(mac);
                e.mac = Some(mac);
                e.answered_ms = now_ms;
                changed
            }
            None => false,
        }
    }

    /// The neighbours to ask now (marked as asked).
    pub fn due(&mut self, now_ms: u64) -> Vec<(usize, IpAddr)> {
        let mut out = Vec::new();
        for (k, e) in self.entries.iter_mut() {
            let stale = e.mac.is_none() || now_ms >= e.answered_ms + REFRESH_MS;
            if stale && e.asked_ms.is_none_or(|a| now_ms >= a + RETRY_MS) {
                e.asked_ms = Some(now_ms);
                out.push(*k);
            }
        }
        out
    }

    /// Forgets MACs not confirmed for EXPIRE_MS. Returns whether any went.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        for e in self.entries.values_mut() {
            if e.mac.is_some() && now_ms >= e.answered_ms + EXPIRE_MS {
                e.mac = None;
                changed = true;
            }
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn resolved(&self) -> usize {
        self.entries.values().filter(|e| e.mac.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ask_learn_refresh_expire() {
        let mut t = NeighbourTable::default();
        t.track(&[(0, ip("198.18.0.11")), (0, ip("2001:db8::11"))]);
        assert_eq!(t.due(0).len(), 2, "unresolved: ask at once");
        assert!(t.due(500).is_empty(), "then once per RETRY_MS");
        assert_eq!(t.due(1000).len(), 2);
        assert!(t.learn(0, ip("198.18.0.11"), [2, 0, 0, 0, 0, 0x11], 1200));
        assert!(!t.learn(0, ip("198.18.0.11"), [2, 0, 0, 0, 0, 0x11], 1300), "same MAC: no change");
        assert!(!t.learn(1, ip("198.18.0.11"), [2; 6], 1300), "untracked port");
        assert!(!t.learn(0, ip("198.18.0.99"), [2; 6], 1300), "untracked address");
        assert_eq!(t.mac(0, ip("198.18.0.11")), Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(t.due(2000), vec![(0, ip("2001:db8::11"))], "resolved ones wait for the refresh");
        assert!(t.due(1300 + REFRESH_MS).contains(&(0, ip("198.18.0.11"))), "refresh");
        assert!(!t.expire(1300 + EXPIRE_MS - 1));
        assert!(t.expire(1300 + EXPIRE_MS));
        assert_eq!(t.mac(0, ip("198.18.0.11")), None);
        assert_eq!(t.resolved(), 0);
    }

    #[test]
    fn tracking_a_new_set_forgets_the_rest() {
        let mut t = NeighbourTable::default();
        t.track(&[(0, ip("198.18.0.11")), (0, ip("198.18.0.12"))]);
        t.learn(0, ip("198.18.0.12"), [2; 6], 1);
        assert!(t.track(&[(0, ip("198.18.0.11"))]), "a known MAC went away");
        assert_eq!(t.len(), 1);
        assert_eq!(t.mac(0, ip("198.18.0.12")), None);
    }
}
