//! Source-IP persistence (like IPVS `-p`): a client (address, optionally
//! masked) keeps its backend for a timeout after its last packet, whatever the
//! weights do. Fixed capacity, 4-way sets, no allocation after creation; when a
//! set is full the entry nearest expiry is replaced and counted.

use super::hash::hash_words;

const WAYS: usize = 4;
const SEED: u64 = u64::from_be_bytes(*b"l4lbpers");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    service: u32,
    client: [u8; 16],
    backend: u32,
    /// 0 = empty.
    expires_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistStats {
    pub hits: u64,
    pub inserts: u64,
    /// Live entries replaced because their set was full.
    pub evicted: u64,
}

pub struct PersistTable {
    sets: Vec<[Slot; WAYS]>,
    mask: usize,
    stats: PersistStats,
}

impl PersistTable {
    pub fn with_capacity(capacity: usize) -> PersistTable {
        let sets = (capacity / WAYS).max(1).next_power_of_two();
        PersistTable {
            sets: vec![[Slot::default(); WAYS]; sets],
            mask: sets - 1,
            stats: PersistStats::default(),
        }
    }

    pub fn stats(&self) -> PersistStats {
        self.stats
    }

    #[inline]
    fn set(&self, service: u32, client: &[u8; 16]) -> usize {
        let w0 = u64::from_le_bytes(client[..8].try_into().unwrap_or_default());
        let w1 = u64::from_le_bytes(client[8..].try_into().unwrap_or_default());
        hash_words(SEED, &[service as u64, w0, w1]) as usize & self.mask
    }

    /// The client's backend, if its entry is live.
    #[inline]
    pub fn lookup(&mut self, service: u32, client: &[u8; 16], now_ms: u64) -> Option<u32> {
        let hit = self.peek(service, client, now_ms).map(|(backend, _)| backend);
        if hit.is_some() {
            self.stats.hits += 1;
        }
        hit
    }

    /// As [`PersistTable::lookup`] with the entry's expiry, for the control
    /// plane's questions (not counted as a hit).
    #[inline]
    pub fn peek(&self, service: u32, client: &[u8; 16], now_ms: u64) -> Option<(u32, u64)> {
        self.sets[self.set(service, client)]
            .iter()
            .find(|e| e.expires_ms > now_ms && e.service == service && e.client == *client)
            .map(|e| (e.backend, e.expires_ms))
    }

    /// Records or refreshes the client's backend until `expires_ms`.
    #[inline]
    pub fn record(&mut self, service: u32, client: &[u8; 16], backend: u32, now_ms: u64, expires_ms: u64) {
        let s = self.set(service, client);
        let set = &mut self.sets[s];
        if let Some(e) =
            set.iter_mut().find(|e| e.expires_ms > now_ms && e.service == service && e.client == *client)
        {
            e.backend = backend;
            e.expires_ms = expires_ms;
            return;
        }
        let victim = set.iter_mut().min_by_key(|e| e.expires_ms).expect("WAYS > 0");
        if victim.expires_ms > now_ms {
            self.stats.evicted += 1;
        }
        *victim = Slot { service, client: *client, backend, expires_ms };
        self.stats.inserts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_timeout() {
        let mut p = PersistTable::with_capacity(64);
        let c = [1u8; 16];
        assert_eq!(p.lookup(1, &c, 0), None);
        p.record(1, &c, 42, 0, 1000);
        assert_eq!(p.lookup(1, &c, 999), Some(42));
        assert_eq!(p.lookup(2, &c, 999), None, "per service");
        assert_eq!(p.lookup(1, &c, 1000), None, "expired");
        p.record(1, &c, 43, 1000, 3000);
        assert_eq!(p.lookup(1, &c, 2000), Some(43));
    }

    #[test]
    fn full_set_replaces_nearest_expiry() {
        let mut p = PersistTable::with_capacity(4); // one set of 4
        for i in 0..4u8 {
            p.record(1, &[i; 16], i as u32, 0, 100 + i as u64);
        }
        p.record(1, &[9; 16], 9, 0, 500);
        assert_eq!(p.stats().evicted, 1);
        assert_eq!(p.lookup(1, &[0; 16], 1), None, "the entry nearest expiry went");
        assert_eq!(p.lookup(1, &[9; 16], 1), Some(9));
        assert_eq!(p.lookup(1, &[3; 16], 1), Some(3));
    }
}
