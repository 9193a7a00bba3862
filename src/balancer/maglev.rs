//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4) with weights.
//!
//! The table depends only on the backends' identities (16-byte addresses),
//! their weights, the table size and the fixed seeds in [`super::hash`] —
//! never on configuration order, process, core count or machine. The exact
//! algorithm, so another implementation can reproduce a table, is in
//! `docs/maglev.md`:
//!
//! 1. Backends with weight 0 are left out; the rest are sorted by identity.
//! 2. Backend i gets `offset = hash_bytes(SEED_MAGLEV_OFFSET, id) mod M` and
//!    `skip = hash_bytes(SEED_MAGLEV_SKIP, id) mod (M - 1) + 1`; its preference
//!    list is `(offset + j * skip) mod M` for j = 0, 1, 2, ...
//! 3. Backend i may fill `target_i = floor(M * w_i / W)` entries, and the
//!    `M - sum(target)` backends with the largest remainders `M * w_i mod W`
//!    (ties: identity order) one more — so shares match weights to one entry.
//! 4. In rounds, each backend (identity order) that is below its target takes
//!    the next free entry of its preference list, until the table is full.

use super::hash::{hash_bytes, reduce, SEED_MAGLEV_OFFSET, SEED_MAGLEV_SKIP};

/// The default table size, a prime.
pub const DEFAULT_SIZE: u32 = 65537;
/// The largest table size accepted (a prime above 4M).
pub const MAX_SIZE: u32 = 4_194_319;
/// A table entry names a backend by a 16-bit index.
pub const MAX_BACKENDS: usize = u16::MAX as usize;
const EMPTY: u16 = u16::MAX;

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Identity: the backend's address as 16 bytes (IPv4-mapped for IPv4).
    pub id: [u8; 16],
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("table size {0} is not a prime between 3 and {MAX_SIZE}")]
    BadSize(u32),
    #[error("{0} backends is more than the {MAX_BACKENDS} a table can hold")]
    TooManyBackends(usize),
    #[error("backend identity appears twice")]
    DuplicateBackend,
    #[error("table size {size} is smaller than the {backends} backends with weight")]
    TooSmall { size: u32, backends: usize },
}

/// A built lookup table: entry -> index into the backend slice given to
/// [`MaglevTable::build`]. Empty when no backend has weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    entries: Vec<u16>,
    size: u32,
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

impl MaglevTable {
    /// Builds a table of `size` entries (a prime) over `backends`.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Result<MaglevTable, MaglevError> {
        if !(3..=MAX_SIZE).contains(&size) || !is_prime(size) {
            return Err(MaglevError::BadSize(size));
        }
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends(backends.len()));
        }
        // Canonical order: identity, independent of the caller's order.
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].weight > 0).collect();
        order.sort_unstable_by(|&a, &b| backends[a].id.cmp(&backends[b].id));
        if order.windows(2).any(|w| backends[w[0]].id == backends[w[1]].id) {
            return Err(MaglevError::DuplicateBackend);
        }
        let n = order.len();
        if n == 0 {
            return Ok(MaglevTable { entries: Vec::new(), size });
        }
        if n > size as usize {
            return Err(MaglevError::TooSmall { size, backends: n });
        }
        let m = size as u64;
        let total: u64 = order.iter().map(|&i| backends[i].weight as u64).sum();
        let mut target: Vec<u64> = order.iter().map(|&i| m * backends[i].weight as u64 / total).collect();
        let left = m - target.iter().sum::<u64>();
        if left > 0 {
            let mut by_rem: Vec<usize> = (0..n).collect();
            // Largest remainder first; the stable sort keeps identity order on ties.
            by_rem.sort_by_key(|&k| std::cmp::Reverse(m * backends[order[k]].weight as u64 % total));
            for &k in by_rem.iter().take(left as usize) {
                target[k] += 1;
            }
        }
        let mut pos: Vec<u32> = Vec::with_capacity(n);
        let mut skip: Vec<u32> = Vec::with_capacity(n);
        for &i in &order {
            let id = &backends[i].id;
            pos.push((hash_bytes(SEED_MAGLEV_OFFSET, id) % m) as u32);
            skip.push((hash_bytes(SEED_MAGLEV_SKIP, id) % (m - 1)) as u32 + 1);
        }
        let mut entries = vec![EMPTY; size as usize];
        let mut count = vec![0u64; n];
        let mut filled = 0u64;
        while filled < m {
            for k in 0..n {
                if count[k] == target[k] {
                    continue;
                }
                let mut p = pos[k];
                while entries[p as usize] != EMPTY {
                    p += skip[k];
                    if p >= size {
                        p -= size;
                    }
                }
                entries[p as usize] = order[k] as u16;
                p += skip[k];
                if p >= size {
                    p -= size;
                }
                pos[k] = p;
                count[k] += 1;
                filled += 1;
                if filled == m {
                    break;
                }
            }
        }
        Ok(MaglevTable { entries, size })
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend index for a 64-bit hash ([`reduce`] picks the entry).
    #[inline(always)]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let i = reduce(hash, self.size) as usize;
        self.entries.get(i).map(|&b| b as usize)
    }

    /// The raw entries (backend indices).
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(n: usize) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| MaglevBackend {
                id: crate::balancer::flow::mapped([198, 18, (i / 256) as u8, (i % 256) as u8].into()),
                weight: 1,
            })
            .collect()
    }

    fn shares(t: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &e in t.entries() {
            c[e as usize] += 1;
        }
        c
    }

    /// The table as identities, so tables over differently ordered slices compare.
    fn by_id(t: &MaglevTable, b: &[MaglevBackend]) -> Vec<[u8; 16]> {
        t.entries().iter().map(|&e| b[e as usize].id).collect()
    }

    #[test]
    fn primes_and_sizes() {
        assert!(is_prime(65537) && is_prime(655373) && is_prime(MAX_SIZE) && !is_prime(65536));
        assert_eq!(MaglevTable::build(&backends(3), 65536).unwrap_err(), MaglevError::BadSize(65536));
        assert_eq!(
            MaglevTable::build(&backends(20), 17).unwrap_err(),
            MaglevError::TooSmall { size: 17, backends: 20 }
        );
        let mut dup = backends(3);
        dup[2].id = dup[0].id;
        assert_eq!(MaglevTable::build(&dup, 101).unwrap_err(), MaglevError::DuplicateBackend);
        let mut zero = backends(3);
        zero.iter_mut().for_each(|b| b.weight = 0);
        let t = MaglevTable::build(&zero, 101).unwrap();
        assert!(t.is_empty() && t.lookup(5).is_none());
    }

    #[test]
    fn every_entry_filled_and_balanced() {
        let b = backends(100);
        let t = MaglevTable::build(&b, 65537).unwrap();
        assert!(t.entries().iter().all(|&e| (e as usize) < 100));
        let s = shares(&t, 100);
        let mean = 65537.0 / 100.0;
        let max = *s.iter().max().unwrap() as f64;
        assert!(max / mean <= 1.01, "max/mean {}", max / mean);
    }

    #[test]
    fn weighted_shares_within_one_percent() {
        let mut b = backends(3);
        for (i, w) in [1, 2, 3].iter().enumerate() {
            b[i].weight = *w;
        }
        let t = MaglevTable::build(&b, 65537).unwrap();
        let s = shares(&t, 3);
        for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
            let want = w / 6.0;
            let got = s[i] as f64 / 65537.0;
            assert!((got - want).abs() <= 0.01 * want, "backend {i}: {got} vs {want}");
        }
    }

    #[test]
    fn disruption_when_one_of_n_leaves() {
        let n = 10;
        let b = backends(n);
        let t1 = MaglevTable::build(&b, 65537).unwrap();
        let t2 = MaglevTable::build(&b[..n - 1], 65537).unwrap();
        let e1 = by_id(&t1, &b);
        let e2 = by_id(&t2, &b[..n - 1]);
        let gone = b[n - 1].id;
        let moved = e1.iter().zip(&e2).filter(|(a, c)| a != c).count();
        let forced = e1.iter().filter(|a| **a == gone).count();
        // Entries of the leaving backend must move (about 1/N); others should
        // mostly stay. The paper reports small extra disruption; we bound it.
        let frac = moved as f64 / 65537.0;
        assert!(moved >= forced);
        assert!(
            frac < 1.0 / n as f64 * 1.5,
            "moved {frac:.4} of entries, forced {:.4}",
            forced as f64 / 65537.0
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn same_table_for_a_shuffled_config(n in 1usize..40, seed in any::<u64>()) {
            let b = backends(n);
            let mut shuffled = b.clone();
            // Deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = crate::balancer::hash::fmix64(s.wrapping_add(i as u64));
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let t1 = MaglevTable::build(&b, 4099).unwrap();
            let t2 = MaglevTable::build(&shuffled, 4099).unwrap();
            prop_assert_eq!(by_id(&t1, &b), by_id(&t2, &shuffled));
        }

        #[test]
        fn balance_with_equal_weights(n in 1usize..60) {
            // M >= 100 N: max/mean <= 1.01.
            let m = 65537u32;
            let t = MaglevTable::build(&backends(n), m).unwrap();
            let s = shares(&t, n);
            let mean = m as f64 / n as f64;
            prop_assert!(*s.iter().max().unwrap() as f64 / mean <= 1.01);
        }

        #[test]
        fn weighted_shares(weights in proptest::collection::vec(1u32..100, 1..20)) {
            let mut b = backends(weights.len());
            for (x, w) in b.iter_mut().zip(&weights) { x.weight = *w; }
            let m = 65537u32;
            let t = MaglevTable::build(&b, m).unwrap();
            let s = shares(&t, b.len());
            let total: u32 = weights.iter().sum();
            for (i, w) in weights.iter().enumerate() {
                let want = m as f64 * *w as f64 / total as f64;
                prop_assert!((s[i] as f64 - want).abs() <= 1.0 + 0.01 * want, "{} vs {}", s[i], want);
            }
        }

        #[test]
        fn disruption_bound(n in 3usize..50, leave in any::<prop::sample::Index>()) {
            let b = backends(n);
            let gone = leave.index(n);
            let rest: Vec<MaglevBackend> = b.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, x)| *x).collect();
            let m = 65537u32;
            let e1 = by_id(&MaglevTable::build(&b, m).unwrap(), &b);
            let e2 = by_id(&MaglevTable::build(&rest, m).unwrap(), &rest);
            let moved = e1.iter().zip(&e2).filter(|(a, c)| a != c).count() as f64 / m as f64;
            // Ideal is 1/N; allow 2x for Maglev's extra shuffling with few backends.
            prop_assert!(moved <= 2.0 / n as f64, "moved {} with n {}", moved, n);
        }
    }
}
