//! The burst lookup's prefetch passes: the lines a lookup, an insert and the
//! sweep will read, fetched a stage ahead so they arrive while the worker
//! handles other packets (module docs of `mod.rs`: the layout they follow).

use super::*;

/// How many keys [`FlowTable::lookup_burst`] prefetches at once.
pub const LOOKUP_BURST: usize = 64;

impl FlowTable {
    /// The first stage of a burst lookup: prefetches the primary signature
    /// line of the key's place and the entry in its preferred slot there,
    /// where most keys live, beside the signature line rather than after it.
    #[inline(always)]
    pub fn prefetch_place<P: Prefetch>(&self, at: &Place, p: &P) {
        let b1 = at.b1 as usize;
        p.prefetch(&self.sigs[b1]);
        p.prefetch(self.at(b1 * BUCKET_SLOTS + at.pref()));
    }

    /// As [`FlowTable::prefetch_place`] for a key that is most likely new (a
    /// TCP SYN): a miss reads both bucket lines (an eviction takes the
    /// victim's rank and backend id from them too), so both are fetched at
    /// once. The preferred entry only while the table is below its high-water
    /// mark: above it (a SYN flood's steady state) the insert writes the
    /// victim's slot, one of sixteen, and that line would be fetched in vain.
    #[inline(always)]
    pub fn prefetch_place_new<P: Prefetch>(&self, at: &Place, p: &P) {
        let b1 = at.b1 as usize;
        p.prefetch(&self.sigs[b1]);
        p.prefetch(&self.sigs[at.b2 as usize]);
        if self.used < self.high_water() {
            p.prefetch(self.at(b1 * BUCKET_SLOTS + at.pref()));
        }
    }

    /// The second stage, once the primary signature line is in cache: nothing
    /// when the preferred slot holds the signature (its entry is on its way);
    /// else the entry of the first signature match; with no match, the second
    /// bucket's signature line and its preferred entry (the key most likely
    /// lives there: at half load 4.5% of keys do, 58% of those in that slot)
    /// and, when the primary's preferred slot is taken, the primary's first
    /// free entry (where a new flow will most likely be written).
    #[inline(always)]
    pub fn prefetch_entry_place<P: Prefetch>(&self, at: &Place, p: &P) {
        let b1 = at.b1 as usize;
        let pref = at.pref();
        if self.sigs[b1].sig[pref] == at.sig {
            return; // prefetched in the first stage
        }
        if let Some(i) = self.first(b1, at.sig) {
            // (The preferred slot's line holds the slot beside it too.)
            if i ^ pref > 1 {
                p.prefetch(self.at(b1 * BUCKET_SLOTS + i));
            }
            return;
        }
        // Not in the primary: in the second bucket, where an insert takes the
        // preferred slot when it is free (that entry is fetched beside the
        // bucket's line: a third pass would come too late), or a new flow.
        let b2 = at.b2 as usize;
        p.prefetch(&self.sigs[b2]);
        p.prefetch(self.at(b2 * BUCKET_SLOTS + pref));
        if self.sigs[b1].sig[pref] != 0 {
            if let Some(i) = self.first(b1, 0) {
                p.prefetch(self.at(b1 * BUCKET_SLOTS + i));
            }
        }
    }

    /// As [`FlowTable::prefetch_entry_place`] for a key that is most likely
    /// new (a TCP SYN, whose two bucket lines the first stage fetched): a
    /// signature match in either bucket prefetches that entry; with none, the
    /// entry the insert will write — a free slot, or in a table above its
    /// high-water mark the victim, chosen from the ranks as the insert would
    /// choose it — and returns that slot for [`FlowTable::insert_hinted`], so
    /// the choice is made once. Without it a SYN flood on a full table too
    /// large for the caches wrote every new entry into a line not in cache.
    #[inline(always)]
    pub fn prefetch_entry_place_new<P: Prefetch>(
        &self,
        at: &Place,
        now_ms: u64,
        p: &P,
    ) -> Option<InsertHint> {
        let (b1, b2, pref) = (at.b1 as usize, at.b2 as usize, at.pref());
        if self.sigs[b1].sig[pref] == at.sig {
            // (The first stage fetched it only below the high-water mark.)
            p.prefetch(self.at(b1 * BUCKET_SLOTS + pref));
            return None;
        }
        let known = self
            .first(b1, at.sig)
            .map(|i| b1 * BUCKET_SLOTS + i)
            .or_else(|| self.first(b2, at.sig).map(|i| b2 * BUCKET_SLOTS + i));
        if let Some(s) = known {
            p.prefetch(self.at(s));
            return None;
        }
        let s = match self.free_pick(b1, b2, pref) {
            Some(s) => s,
            None if self.used < self.high_water() => return None, // the insert will move an entry instead
            None => self.victim(b1, b2, now_ms),
        };
        p.prefetch(self.at(s));
        let (b, i) = (s / BUCKET_SLOTS, s % BUCKET_SLOTS);
        Some(InsertHint {
            slot: s as u32,
            sig: self.sigs[b].sig[i],
            rank: self.sigs[b].rank[i],
            frees: self.frees,
        })
    }

    /// Looks up a burst, [`LOOKUP_BURST`] keys at a time: both prefetch
    /// stages for each of them ([`FlowTable::prefetch_place`],
    /// [`FlowTable::prefetch_entry_place`]), then their lookups. `out[i]` is
    /// the slot of `keys[i]`, if live.
    pub fn lookup_burst<P: Prefetch>(
        &self,
        keys: &[FlowKey],
        hashes: &[u64],
        now_ms: u64,
        out: &mut [Option<usize>],
        p: &P,
    ) {
        let n = keys.len().min(hashes.len()).min(out.len());
        let mut at = [Place::default(); LOOKUP_BURST];
        for from in (0..n).step_by(LOOKUP_BURST) {
            let m = (n - from).min(LOOKUP_BURST);
            for i in 0..m {
                at[i] = self.place_of(&keys[from + i], hashes[from + i]);
                self.prefetch_place(&at[i], p);
            }
            for a in &at[..m] {
                self.prefetch_entry_place(a, p);
            }
            for i in 0..m {
                out[from + i] = self.lookup_place(&keys[from + i], &at[i], now_ms);
            }
        }
    }

    /// Prefetches the signature lines the next [`FlowTable::sweep`] of
    /// `buckets` buckets reads, so a worker sweeping a few buckets per poll
    /// finds them in cache at its next poll (in a table beyond the caches each
    /// was a miss: half the sweep's time).
    #[inline]
    pub fn prefetch_sweep<P: Prefetch>(&self, buckets: usize, p: &P) {
        for k in 0..buckets.min(self.sigs.len()) {
            p.prefetch(&self.sigs[(self.sweep_at + k) & self.mask]);
        }
    }
}
