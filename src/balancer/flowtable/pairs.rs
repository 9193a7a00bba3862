//! IPv6 flows: an insert finds, makes or evicts an aligned pair of slots
//! (one line, see `slot.rs`), by the same rules as an IPv4 insert's one
//! slot — the primary bucket while it has room, then the emptier; an entry
//! moved to its other bucket while the table is below its high-water mark;
//! else the pair whose more valuable flow is the least valuable, by rank.
//! Out of line: the IPv4 path pays one test for it.

use super::slot::{Packed, Slot};
use super::*;

impl FlowTable {
    /// Inserts an IPv6 flow known to be absent (see [`FlowTable::insert_at`]);
    /// returns its first slot.
    #[inline(never)]
    pub(super) fn insert_pair(
        &mut self,
        key: &FlowKey,
        new: &NewFlow,
        p: &Packed,
        at: &Place,
        now_ms: u64,
        on_remove: &mut impl FnMut(u32),
    ) -> usize {
        let (b1, b2) = (at.b1 as usize, at.b2 as usize);
        let pref = at.pref() & !1;
        let room = self.used + 2 < self.high_water();
        let s = match self.free_pair(b1, b2, pref) {
            Some(s) => s,
            None => match if room { self.displace_pair(b1).or_else(|| self.displace_pair(b2)) } else { None }
            {
                Some(s) => s,
                None => {
                    let s = self.pair_victim(b1, b2, now_ms);
                    for k in [s, s + 1] {
                        let sig = self.sigs[k / BUCKET_SLOTS].sig[k % BUCKET_SLOTS];
                        if sig != 0 && sig != PAIRED {
                            self.evict(k, now_ms, on_remove);
                        }
                    }
                    s
                }
            },
        };
        let (b, i) = (s / BUCKET_SLOTS, s % BUCKET_SLOTS);
        let rank = rank_of(new.state, new.expires_ms, now_ms);
        self.sigs[b].sig[i] = at.sig;
        self.sigs[b].sig[i + 1] = PAIRED;
        self.sigs[b].rank[i] = rank;
        self.sigs[b].rank[i + 1] = rank;
        self.pinned |= beyond_horizon(new.expires_ms, now_ms);
        *self.at_mut(s) = Slot::head(p, new.backend, new.state, new.expires_ms);
        *self.at_mut(s + 1) = Slot::addresses(key);
        self.used += 2;
        self.flows += 1;
        self.stats.inserts += 1;
        s
    }

    /// Bucket `b`'s free aligned pairs, one bit on each pair's first slot.
    #[inline]
    fn free_pairs(&self, b: usize) -> u32 {
        let m = holding(&self.sigs[b].sig, 0);
        m & m >> 1 & 0x55
    }

    /// The first slot of a free pair in bucket `b1` (primary) or `b2`: the
    /// primary while it has room to spare, else the emptier; within it the
    /// preferred pair if free.
    fn free_pair(&self, b1: usize, b2: usize, pref: usize) -> Option<usize> {
        let (p1, p2) = (self.free_pairs(b1), self.free_pairs(b2));
        if p1 | p2 == 0 {
            return None;
        }
        let free = |b: usize| holding(&self.sigs[b].sig, 0).count_ones() as usize;
        let (f1, f2) = (free(b1), free(b2));
        let (b, m) = if p1 != 0 && (p2 == 0 || f1 > PRIMARY_FREE || f1 >= f2) { (b1, p1) } else { (b2, p2) };
        let i = if m >> pref & 1 != 0 { pref } else { m.trailing_zeros() as usize };
        Some(b * BUCKET_SLOTS + i)
    }

    /// Frees an aligned pair in bucket `b` by moving the IPv4 flows in it to
    /// their other buckets, where those have room (one level deep).
    fn displace_pair(&mut self, b: usize) -> Option<usize> {
        'pairs: for i in (0..BUCKET_SLOTS).step_by(2) {
            if self.paired(b, i) {
                continue;
            }
            let (s0, s1) = (self.sigs[b].sig[i], self.sigs[b].sig[i + 1]);
            // Where each occupied slot's flow would go (None: nowhere).
            let other = |sig: u16| (sig != 0).then(|| self.alt(b, sig)).filter(|&a| a != b);
            let (a0, a1) = (other(s0), other(s1));
            if (s0 != 0 && a0.is_none()) || (s1 != 0 && a1.is_none()) {
                continue;
            }
            let need = |a: usize| (a0 == Some(a)) as u32 + (a1 == Some(a)) as u32;
            let fits =
                [a0, a1].into_iter().flatten().all(|a| holding(&self.sigs[a].sig, 0).count_ones() >= need(a));
            if !fits {
                continue;
            }
            for (k, a) in [(i, a0), (i + 1, a1)] {
                if let Some(a) = a {
                    // Counted free above; should that ever be wrong, the
                    // flows moved so far stay valid where they went.
                    let Some(to) = self.free_slot(a) else { continue 'pairs };
                    self.move_one(b * BUCKET_SLOTS + k, to);
                }
            }
            return Some(b * BUCKET_SLOTS + i);
        }
        None
    }

    /// The aligned pair to empty for an IPv6 flow, from the ranks alone: the
    /// one whose more valuable slot is the least valuable (free, then stale,
    /// then unconfirmed or closing, then established, each by time left);
    /// the first of equals.
    fn pair_victim(&self, b1: usize, b2: usize, now_ms: u64) -> usize {
        let now = rank_now(now_ms);
        let value = |b: usize, i: usize| -> u32 {
            if self.sigs[b].sig[i] == 0 {
                return 0;
            }
            let r = self.sigs[b].rank[i];
            let left = rank_left(r, now);
            if left == 0 || left >= 0x4000 {
                1
            } else {
                2 + (left as u32 | if r & RANK_ESTABLISHED != 0 { 0x8000 } else { 0x4000 })
            }
        };
        let mut best = (u32::MAX, 0);
        for b in [b1, b2] {
            for i in (0..BUCKET_SLOTS).step_by(2) {
                let v = value(b, i).max(value(b, i + 1));
                if v < best.0 {
                    best = (v, b * BUCKET_SLOTS + i);
                }
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::NoPrefetch;
    use std::collections::HashMap;

    /// Key `i`: IPv4 for even `i`, IPv6 for odd.
    fn mixed(i: u32) -> FlowKey {
        let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if i % 2 == 0 {
            (std::net::Ipv4Addr::from(0xc612_0000 | i).into(), "198.18.100.1".parse().unwrap())
        } else {
            (
                std::net::Ipv6Addr::from(0x2001_0db8_0019_u128 << 80 | i as u128).into(),
                "2001:db8:100::1".parse().unwrap(),
            )
        };
        FlowKey::new(src, dst, 6, (i % 65_000) as u16 + 1, 443)
    }

    /// Every pair's second slot follows an IPv6 first slot, and every IPv6
    /// flow's first slot is even with its second beside it.
    fn check_layout(t: &FlowTable) {
        for b in 0..t.buckets() {
            let sig = &t.sigs[b].sig;
            for i in 0..BUCKET_SLOTS {
                let s = b * BUCKET_SLOTS + i;
                if sig[i] == PAIRED {
                    assert!(i % 2 == 1 && sig[i - 1] & 1 == 1 && t.at(s - 1).v6(), "slot {s}");
                    assert_eq!(t.sigs[b].rank[i], t.sigs[b].rank[i - 1], "slot {s}: its pair's rank");
                } else if sig[i] != 0 && t.at(s).v6() {
                    assert!(i % 2 == 0 && sig[i + 1] == PAIRED, "slot {s}");
                }
            }
        }
    }

    proptest::proptest! {
        /// IPv4 and IPv6 flows in one small table, inserted (with and without
        /// hints, some hints gone stale), refreshed, rebound, removed, swept
        /// and evicted, against a model: every flow that leaves names its
        /// own backend once, the counts of flows and slots agree, every live
        /// flow is found whole and no other.
        #[test]
        fn ipv4_and_ipv6_flows_share_a_table(
            ops in proptest::collection::vec((0u8..10, 0u32..400, 0u64..3_000), 1..1_200)
        ) {
            // Small, so buckets fill and inserts move and evict flows.
            let mut t = FlowTable::with_capacity(64);
            let mut model: HashMap<u32, Entry> = HashMap::new();
            let mut next_backend = 1u32;
            let mut now = 0u64;
            for (op, i, dt) in ops {
                let key = mixed(i);
                let h = key.hash();
                let found = t.lookup(&key, h, now);
                // Found exactly while live: no freed or moved slot still
                // answers for its old flow.
                let live = model.values().any(|e| e.key == key && e.expires_ms > now);
                proptest::prop_assert_eq!(found.is_some(), live, "key {}", i);
                let mut gone = Vec::new();
                match (op, found) {
                    (0..=3, None) => {
                        let state = if dt % 3 == 0 { FlowState::SynSeen } else { FlowState::Established };
                        let e = Entry { key, backend: next_backend, state, expires_ms: now + dt };
                        next_backend += 1;
                        let at = t.place_of(&key, h);
                        let hint = (op > 1).then(|| t.prefetch_entry_place_new(&at, now, &NoPrefetch)).flatten();
                        if op == 3 {
                            // Another flow inserted between the hint and its insert.
                            let other = mixed(i + 401);
                            if t.lookup(&other, other.hash(), now).is_none() {
                                let o = Entry { key: other, backend: next_backend, state, expires_ms: now + 50 };
                                next_backend += 1;
                                t.insert(o, other.hash(), now, &mut |b| gone.push(b));
                                model.insert(o.backend, o);
                            }
                        }
                        let flow = NewFlow { backend: e.backend, state, expires_ms: e.expires_ms };
                        let s = t.insert_at(&key, flow, &at, now, hint, &mut |b| gone.push(b));
                        model.insert(e.backend, e);
                        proptest::prop_assert_eq!(t.entry(s), e);
                    }
                    (4 | 5, Some(s)) => {
                        let state = if op == 4 { FlowState::Closing } else { FlowState::Established };
                        t.touch(s, state, now + dt, now);
                        let m = model.get_mut(&t.backend(s)).unwrap();
                        (m.state, m.expires_ms) = (state, now + dt);
                    }
                    (6, Some(s)) => {
                        let mut e = model.remove(&t.backend(s)).unwrap();
                        let mut old = Vec::new();
                        t.rebind(s, next_backend, &mut |b| old.push(b));
                        proptest::prop_assert_eq!(old, vec![e.backend]);
                        e.backend = next_backend;
                        next_backend += 1;
                        model.insert(e.backend, e);
                    }
                    (7, Some(s)) => {
                        t.remove(s, &mut |b| gone.push(b));
                        proptest::prop_assert_eq!(gone.len(), 1, "removing a found flow frees it");
                    }
                    (8, _) => {
                        t.sweep(now, 1 + i as usize % 8, &mut |b| gone.push(b));
                    }
                    _ => now += dt / 4,
                }
                for b in gone {
                    proptest::prop_assert!(model.remove(&b).is_some(), "{} left twice", b);
                }
                proptest::prop_assert_eq!(t.len(), model.len());
                let slots: usize = model.values().map(|e| 1 + !e.key.is_v4() as usize).sum();
                proptest::prop_assert_eq!(t.slots_used(), slots);
                for e in model.values().filter(|e| e.expires_ms > now) {
                    let s = t.lookup(&e.key, e.key.hash(), now);
                    proptest::prop_assert_eq!(s.map(|s| t.entry(s)), Some(*e));
                }
                check_layout(&t);
            }
        }
    }

    #[test]
    fn ipv6_flows_evict_ipv4_pairs_and_ipv4_flows_take_half_a_pair() {
        // A full table of IPv4 flows, then IPv6 ones: each evicts two IPv4
        // flows (or one and a free slot); then IPv4 ones again into the
        // IPv6 pairs, each leaving one slot free.
        let mut t = FlowTable::with_capacity(64);
        let mut out = 0;
        for i in (0..400).step_by(2) {
            let k = mixed(i);
            let e = Entry { key: k, backend: i, state: FlowState::Established, expires_ms: 1_000 + i as u64 };
            t.insert(e, k.hash(), 0, &mut |_| out += 1);
        }
        assert_eq!((t.slots_used(), t.len()), (64, 64));
        for i in (1..400).step_by(2) {
            let k = mixed(i);
            let e = Entry { key: k, backend: i, state: FlowState::Established, expires_ms: 10_000 };
            t.insert(e, k.hash(), 0, &mut |_| {});
            assert!(t.lookup(&k, k.hash(), 0).is_some());
        }
        assert_eq!((t.slots_used(), t.len()), (64, 32), "IPv6 flows only");
        check_layout(&t);
        let k = mixed(1_000);
        let e = Entry { key: k, backend: 1_000, state: FlowState::SynSeen, expires_ms: 20_000 };
        t.insert(e, k.hash(), 0, &mut |_| {});
        assert_eq!((t.slots_used(), t.len()), (63, 32), "one IPv6 flow out, one IPv4 in, one slot free");
        check_layout(&t);
        assert_eq!(t.sweep(15_000, t.buckets(), &mut |_| {}), 31);
        assert_eq!((t.slots_used(), t.len()), (1, 1));
    }
}
