//! Flows leaving the table other than by eviction: removal, and the sweep
//! that reclaims expired flows a few buckets at a time (with the scan flow
//! sync makes over the same buckets).

use super::*;

impl FlowTable {
    /// Removes the flow in a slot (either slot of a pair).
    pub fn remove(&mut self, slot: usize, on_remove: &mut impl FnMut(u32)) {
        let slot = self.head_of(slot);
        let (b, i) = (slot / BUCKET_SLOTS, slot % BUCKET_SLOTS);
        if self.sigs[b].sig[i] != 0 {
            self.release(b, i, on_remove);
        }
    }

    /// As [`FlowTable::clear`], counting the slots as freed (for hints).
    fn release(&mut self, b: usize, i: usize, on_remove: &mut impl FnMut(u32)) -> usize {
        let n = self.clear(b, i, on_remove);
        self.frees = self.frees.wrapping_add(n as u32);
        n
    }

    /// Buckets in the table (the unit of [`FlowTable::scan`]).
    pub fn buckets(&self) -> usize {
        self.sigs.len()
    }

    /// Hands `f` every live entry in the `buckets` buckets from bucket
    /// `from` on (round the table); returns the bucket after the last.
    pub fn scan(&self, from: usize, buckets: usize, now_ms: u64, mut f: impl FnMut(&Entry)) -> usize {
        let mut b = from & self.mask;
        for _ in 0..buckets.min(self.sigs.len()) {
            for i in 0..BUCKET_SLOTS {
                let sig = self.sigs[b].sig[i];
                let slot = b * BUCKET_SLOTS + i;
                if sig != 0 && sig != PAIRED && !expired(self.at(slot), now_ms) {
                    f(&self.entry(slot));
                }
            }
            b = (b + 1) & self.mask;
        }
        b
    }

    /// Reclaims expired flows in the next `buckets` buckets (round robin over
    /// the table); returns how many it freed. Workers call it a little per
    /// burst and more when idle, so counts of active flows stay true.
    pub fn sweep(&mut self, now_ms: u64, buckets: usize, on_remove: &mut impl FnMut(u32)) -> usize {
        let mut freed = 0;
        let now = rank_now(now_ms);
        for _ in 0..buckets.min(self.sigs.len()) {
            let b = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) & self.mask;
            for i in 0..BUCKET_SLOTS {
                let slot = b * BUCKET_SLOTS + i;
                // (A pair goes with its first slot.)
                if self.sigs[b].sig[i] == 0 || self.sigs[b].sig[i] == PAIRED {
                    continue;
                }
                // The rank (expiry to the second) decides most slots without
                // reading their entry (`expired_by_rank`).
                let r = self.sigs[b].rank[i];
                let left = rank_left(r, now);
                if (1..0x4000).contains(&left) {
                    continue;
                }
                if !self.expired_by_rank(slot, left, now_ms) {
                    if left != 0 {
                        // Idle past the rank horizon but not expired (a long
                        // timeout): keep its rank just behind now, so it stays
                        // stale for victim() and is read again here, instead of
                        // drifting round the 15-bit circle into the future.
                        self.set_rank(slot, (r & RANK_ESTABLISHED) | (now.wrapping_sub(1) & RANK_MASK));
                    }
                    continue;
                }
                self.release(b, i, on_remove);
                self.stats.expired += 1;
                freed += 1;
            }
        }
        freed
    }
}
