//! The per-worker connection table.
//!
//! Here the bucket layout, its invariants, lookup, insert and eviction;
//! `slot.rs` how a flow is stored; `pairs.rs` IPv6 inserts; `prefetch.rs`
//! the burst lookup's prefetch passes; `expiry.rs` removal and the sweep.
//! Their tests are `tests.rs` (and `pairs.rs`'s own).
//!
//! - Capacity is fixed at creation; nothing is allocated afterwards.
//! - Entries live in buckets of 8. A key may sit in one of two buckets (the
//!   second derived from the first and a 16-bit signature), which keeps lookup
//!   and insert O(1) while filling the table past 90%. Inserts prefer the
//!   first (primary) bucket while it has room to spare, so most lookups need
//!   one signature line: the burst lookup fetches the second only for keys
//!   that are not found in the first.
//! - Each bucket is half a cache line: its 16-bit signatures (0 = empty),
//!   checked before any entry is touched, and each slot's eviction rank
//!   (below). Entries are 32-byte slots, two to a line (`slot.rs`): an IPv4
//!   flow takes one slot, an IPv6 flow an aligned pair (one line), its
//!   second slot marked [`PAIRED`] in the bucket. A lookup reads the bucket
//!   and one line of entries; an insert the two buckets and the line it
//!   writes, whose victim's backend id it reads as it overwrites it. In all
//!   36 bytes per slot.
//! - Entries carry an expiry time set from the service's timeouts for their
//!   TCP state or protocol. Expired entries count as absent and are reclaimed
//!   by inserts and by an incremental [`FlowTable::sweep`].
//!   The sweep reads an entry only when the rank beside its signature (below)
//!   says it may have expired.
//! - While the table is below its high-water mark (31/32 full), an insert
//!   whose two buckets are full first tries to move one entry to that entry's
//!   other bucket. Above it (a SYN flood's steady state) that search would
//!   cost 16 random reads for little chance of room, so inserts evict at once.
//! - When both buckets are full, insert evicts, in order: an expired entry,
//!   the unconfirmed (SYN-only) or closing entry nearest expiry, and only then
//!   the established entry nearest expiry. Evictions are counted per class.
//!   The choice reads a 16-bit rank kept beside each signature (established
//!   bit, expiry to about a second, clamped to 4 hours ahead), not the
//!   entries: an entry idle for 4 hours ranks as stale, whatever its timeout.
//! - Time is passed in (milliseconds); the table never reads a clock.

use super::flow::FlowKey;
use super::Prefetch;
use slot::{pack, Line, Packed, Slot};
use wide::{i16x8, CmpEq, CmpLt};

mod expiry;
mod pairs;
mod prefetch;
mod slot;

pub const BUCKET_SLOTS: usize = 8;
/// Inserts use the primary bucket while it has at least this many free slots.
const PRIMARY_FREE: usize = 3;
/// Smallest table: tests use small ones; production sizes are 1M-16M.
pub const MIN_CAPACITY: usize = 64;
pub const MAX_CAPACITY: usize = 1 << 26;

/// A flow's state as seen from the client side only (DSR: replies bypass us).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum FlowState {
    /// TCP: only SYNs seen so far (unconfirmed).
    #[default]
    SynSeen = 1,
    /// TCP: the client sent a non-SYN segment (handshake completed).
    Established = 2,
    /// TCP: the client sent FIN or RST.
    Closing = 3,
    Udp = 4,
    /// Other protocols and fragments.
    Other = 5,
    /// TCP: the client sent its SYN again (unconfirmed; the backend did not
    /// answer the first: passive health counts such flows per backend).
    SynRetried = 6,
}

impl FlowState {
    /// A TCP flow still in its handshake (the client has sent only SYNs).
    #[inline]
    pub fn opening(self) -> bool {
        matches!(self, FlowState::SynSeen | FlowState::SynRetried)
    }
}

/// Idle timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_ms: u64,
    pub tcp_established_ms: u64,
    pub tcp_closing_ms: u64,
    pub udp_ms: u64,
    pub other_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_ms: 10_000,
            tcp_established_ms: 900_000,
            tcp_closing_ms: 10_000,
            udp_ms: 300_000,
            other_ms: 60_000,
        }
    }
}

impl Timeouts {
    #[inline]
    pub fn for_state(&self, s: FlowState) -> u64 {
        // Most packets first: one comparison, not a jump through the states.
        if s == FlowState::Established {
            return self.tcp_established_ms;
        }
        match s {
            FlowState::SynSeen | FlowState::SynRetried => self.tcp_syn_ms,
            FlowState::Established => self.tcp_established_ms,
            FlowState::Closing => self.tcp_closing_ms,
            FlowState::Udp => self.udp_ms,
            FlowState::Other => self.other_ms,
        }
    }
}

/// One tracked flow, as inserted and as [`FlowTable::entry`] reads it back
/// (the table stores it packed: `slot.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub key: FlowKey,
    /// Stable backend id (see `state::Backend::id`).
    pub backend: u32,
    pub expires_ms: u64,
    pub state: FlowState,
}

/// A tracked flow's backend, state and expiry as [`FlowTable::tracked`]
/// read them.
#[derive(Debug, Clone, Copy)]
pub struct Tracked(Slot);

impl Tracked {
    #[inline(always)]
    pub fn backend(&self) -> u32 {
        self.0.backend()
    }

    #[inline(always)]
    pub fn state(&self) -> FlowState {
        self.0.state()
    }

    #[inline(always)]
    pub fn expires_ms(&self) -> u64 {
        self.0.expires_ms()
    }
}

/// A flow to insert, less its key ([`FlowTable::insert_at`] takes the key
/// by reference: a new flow's key is not copied before it is packed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    pub backend: u32,
    pub state: FlowState,
    pub expires_ms: u64,
}

/// A key's two buckets and signature, and the key as stored (see
/// [`FlowTable::place_of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    b1: u32,
    b2: u32,
    sig: u16,
    /// The key's preferred slot in a bucket (see [`FlowTable::insert`]).
    pref: u8,
    /// Packed once here for the lookup and the insert (default where only
    /// the hash was known: such a place only prefetches).
    key: Packed,
}

impl Place {
    /// The preferred slot as an index: masked, so indexing a bucket's
    /// arrays with it needs no bounds check (it is below 8 anyway).
    #[inline(always)]
    fn pref(&self) -> usize {
        self.pref as usize & (BUCKET_SLOTS - 1)
    }
}

/// The slot an insert would write, chosen ahead of the insert by
/// [`FlowTable::prefetch_entry_place_new`] so the insert need not choose
/// again: a free slot (`sig` 0), which the insert takes while it is still
/// free; or, with both buckets full, the victim with the signature and rank
/// it held then, which the insert takes while both are unchanged and no slot
/// has been freed since (`frees`), so the buckets are still full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertHint {
    slot: u32,
    sig: u16,
    rank: u16,
    frees: u32,
}

/// Counters of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    pub inserts: u64,
    /// Expired entries reclaimed (by insert or sweep).
    pub expired: u64,
    pub evicted_unconfirmed: u64,
    pub evicted_established: u64,
}

/// A bucket's signatures (0 = empty slot, [`PAIRED`] = the second slot of
/// an IPv6 flow) and, beside them, each slot's eviction rank (established
/// bit and coarse expiry; a pair's second slot has its first's). Choosing a
/// victim reads this half line per bucket instead of 8 entries.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Bucket {
    sig: [u16; BUCKET_SLOTS],
    rank: [u16; BUCKET_SLOTS],
}

/// The signature of an IPv6 flow's second slot. Keys' signatures are odd, so
/// no key matches it, and it is not 0, so the slot is not free.
const PAIRED: u16 = 2;

/// Rank: expiry in units of 2^10 ms (about 1 s), 15 bits (a 9-hour circle;
/// expiries are clamped to 4 hours ahead so comparisons stay on one half),
/// top bit set for established flows.
const RANK_SHIFT: u32 = 10;
const RANK_MASK: u16 = 0x7fff;
const RANK_ESTABLISHED: u16 = 0x8000;
const RANK_HORIZON_MS: u64 = 4 * 3600 * 1000;

/// How much earlier than its full idle timeout `timeout_ms` a flow may
/// expire so that its packets need not write its entry (see
/// [`FlowTable::refresh`]): 1/16 of the timeout, at most one rank unit
/// (1024 ms), so a skipped write never leaves the rank more than a unit old.
#[inline(always)]
pub fn refresh_slack(timeout_ms: u64) -> u64 {
    (timeout_ms >> 4).min(1 << RANK_SHIFT)
}

#[inline(always)]
fn rank_of(state: FlowState, expires_ms: u64, now_ms: u64) -> u16 {
    let exp = expires_ms.min(now_ms.saturating_add(RANK_HORIZON_MS));
    ((exp >> RANK_SHIFT) as u16 & RANK_MASK)
        | if state == FlowState::Established { RANK_ESTABLISHED } else { 0 }
}

/// Whether an expiry lies beyond the rank horizon: [`rank_of`] clamps it, so
/// the rank runs out before the entry does.
#[inline(always)]
fn beyond_horizon(expires_ms: u64, now_ms: u64) -> bool {
    expires_ms > now_ms.saturating_add(RANK_HORIZON_MS)
}

/// Rank units from `now` (see [`rank_now`]) to the rank's expiry on the
/// 15-bit circle; 0x4000 and above is the past.
#[inline(always)]
fn rank_left(r: u16, now: u16) -> u16 {
    (r & RANK_MASK).wrapping_sub(now) & RANK_MASK
}

#[inline(always)]
fn rank_now(now_ms: u64) -> u16 {
    (now_ms >> RANK_SHIFT) as u16 & RANK_MASK
}

/// The slots of a bucket holding signature `x` (0: the free ones), one bit
/// each: a vector compare and a mask, where `position` and `filter().count()`
/// compiled to 20-odd instructions a scan.
#[inline(always)]
fn holding(sigs: &[u16; BUCKET_SLOTS], x: u16) -> u32 {
    i16x8::new(sigs.map(|s| s as i16)).cmp_eq(i16x8::splat(x as i16)).move_mask() as u32
}

/// A key's preferred slot within its bucket: three hash bits used by neither
/// the bucket index (low bits) nor the signature (top 16).
#[inline(always)]
fn preferred_slot(hash: u64) -> usize {
    (hash >> 45) as usize & (BUCKET_SLOTS - 1)
}

pub struct FlowTable {
    sigs: Vec<Bucket>,
    /// The slots, two to a line.
    lines: Vec<Line>,
    mask: usize,
    /// Slots taken (an IPv6 flow takes two).
    used: usize,
    /// Flows tracked.
    flows: usize,
    sweep_at: usize,
    stats: FlowTableStats,
    /// Whether any entry was ever given an expiry beyond the rank horizon
    /// (its rank clamped, see [`rank_of`]). Until then a rank in the past
    /// proves its entry expired without reading the entry.
    pinned: bool,
    /// Slots freed by `remove` and `sweep`, wrapping: an eviction hint
    /// made at the same count knows its buckets are still full.
    frees: u32,
}

#[inline(always)]
fn expired(e: &Slot, now_ms: u64) -> bool {
    e.expires_ms() <= now_ms
}

impl FlowTable {
    /// A table for at least `capacity` flows (rounded up to a power of two,
    /// clamped to MIN_CAPACITY..=MAX_CAPACITY). All memory is allocated here.
    pub fn with_capacity(capacity: usize) -> FlowTable {
        Self::with_capacity_advised(capacity, &|_, _| {})
    }

    /// As [`FlowTable::with_capacity`]; `advise(address, bytes)` sees each
    /// array after it is reserved and before it is first written (to ask for
    /// huge pages: `crate::dpdk::advise_hugepages`).
    pub fn with_capacity_advised(capacity: usize, advise: &dyn Fn(usize, usize)) -> FlowTable {
        let cap = capacity.clamp(MIN_CAPACITY, MAX_CAPACITY).next_power_of_two();
        let buckets = cap / BUCKET_SLOTS;
        let mut sigs: Vec<Bucket> = Vec::with_capacity(buckets);
        advise(sigs.spare_capacity_mut().as_ptr() as usize, buckets * std::mem::size_of::<Bucket>());
        sigs.resize(buckets, Bucket::default());
        let mut lines: Vec<Line> = Vec::with_capacity(cap / 2);
        advise(lines.spare_capacity_mut().as_ptr() as usize, cap / 2 * std::mem::size_of::<Line>());
        lines.resize(cap / 2, Line::default());
        FlowTable {
            sigs,
            lines,
            mask: buckets - 1,
            used: 0,
            flows: 0,
            sweep_at: 0,
            stats: FlowTableStats::default(),
            pinned: false,
            frees: 0,
        }
    }

    /// Slots: IPv4 flows the table holds when full (an IPv6 flow takes two).
    pub fn capacity(&self) -> usize {
        self.lines.len() * 2
    }

    /// Flows held, expired-but-not-reclaimed ones included.
    pub fn len(&self) -> usize {
        self.flows
    }

    /// Slots taken (an IPv6 flow takes two).
    pub fn slots_used(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.flows == 0
    }

    /// The table's memory: its buckets and slots.
    pub fn bytes(&self) -> usize {
        self.sigs.len() * std::mem::size_of::<Bucket>() + self.lines.len() * std::mem::size_of::<Line>()
    }

    #[inline(always)]
    fn at(&self, slot: usize) -> &Slot {
        &bytemuck::cast_slice::<Line, Slot>(&self.lines)[slot]
    }

    #[inline(always)]
    fn at_mut(&mut self, slot: usize) -> &mut Slot {
        &mut bytemuck::cast_slice_mut::<Line, Slot>(&mut self.lines)[slot]
    }

    /// Whether slot `i` of bucket `b` is the first of an IPv6 flow's pair.
    #[inline(always)]
    fn paired(&self, b: usize, i: usize) -> bool {
        i % 2 == 0 && self.sigs[b].sig[(i + 1) & (BUCKET_SLOTS - 1)] == PAIRED
    }

    /// Slot `s`'s flow's first slot (a pair's second slot names the first).
    #[inline(always)]
    fn head_of(&self, s: usize) -> usize {
        s - (self.sigs[s / BUCKET_SLOTS].sig[s % BUCKET_SLOTS] == PAIRED) as usize
    }

    /// Sets the rank of the flow whose first slot is `s` (both slots of a pair).
    #[inline(always)]
    fn set_rank(&mut self, s: usize, r: u16) {
        let (b, i) = (s / BUCKET_SLOTS, s % BUCKET_SLOTS);
        if self.paired(b, i) {
            self.sigs[b].rank[i + 1] = r;
        }
        self.sigs[b].rank[i] = r;
    }

    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    #[inline(always)]
    fn place(&self, hash: u64) -> (usize, usize, u16) {
        let sig = ((hash >> 48) as u16) | 1;
        let b1 = (hash as usize) & self.mask;
        (b1, self.alt(b1, sig), sig)
    }

    /// A key's other bucket: `b ^ f(sig)`, so each bucket of the pair names
    /// the other (partial-key cuckoo). One multiply spreads the 16-bit
    /// signature over the index bits.
    #[inline(always)]
    fn alt(&self, b: usize, sig: u16) -> usize {
        (b ^ ((sig as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24) as usize) & self.mask
    }

    /// Where `key` (whose hash is `hash`) lives: its two buckets and
    /// signature, and the key packed, computed once and reused by the
    /// prefetch stages, the lookup and the insert.
    #[inline(always)]
    pub fn place_of(&self, key: &FlowKey, hash: u64) -> Place {
        let (p, at) = (pack(key), self.place_of_hash(hash));
        // An IPv6 key's preferred pair starts at the even slot of that line.
        Place { key: p, pref: at.pref & !(p.v6() as u8), ..at }
    }

    /// The place of a hash, less the key ([`FlowTable::place_of`] adds it).
    #[inline(always)]
    fn place_of_hash(&self, hash: u64) -> Place {
        let (b1, b2, sig) = self.place(hash);
        Place { b1: b1 as u32, b2: b2 as u32, sig, pref: preferred_slot(hash) as u8, key: Packed::default() }
    }

    /// The first slot of bucket `b` holding signature `sig` (0: the first
    /// free slot).
    #[inline(always)]
    fn first(&self, b: usize, sig: u16) -> Option<usize> {
        let m = holding(&self.sigs[b].sig, sig);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    /// Above this many entries, inserts evict rather than move entries.
    #[inline(always)]
    fn high_water(&self) -> usize {
        self.capacity() - self.capacity() / 32
    }

    /// Whether the flow whose first slot is `slot` is `key` (packed: `p`)
    /// and live.
    #[inline(always)]
    fn holds(&self, slot: usize, p: &Packed, key: &FlowKey, now_ms: u64) -> bool {
        let e = self.at(slot);
        // An IPv6 head is always an even slot with its pair beside it.
        e.holds(p) && !expired(e, now_ms) && (!p.v6() || self.at(slot | 1).holds_addresses(key))
    }

    #[inline(always)]
    fn find_in(&self, b: usize, sig: u16, p: &Packed, key: &FlowKey, now_ms: u64) -> Option<usize> {
        let mut m = holding(&self.sigs[b].sig, sig);
        while m != 0 {
            let slot = b * BUCKET_SLOTS + m.trailing_zeros() as usize;
            if self.holds(slot, p, key, now_ms) {
                return Some(slot);
            }
            m &= m - 1;
        }
        None
    }

    /// The slot of a live entry for `key` (`hash` = `key.hash()`).
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64, now_ms: u64) -> Option<usize> {
        self.lookup_place(key, &self.place_of(key, hash), now_ms)
    }

    /// As [`FlowTable::lookup`] for a computed place. Always inlined: the
    /// burst loop calls it for every packet.
    #[inline(always)]
    pub fn lookup_place(&self, key: &FlowKey, at: &Place, now_ms: u64) -> Option<usize> {
        debug_assert_eq!(at.key, pack(key), "a place made for another key");
        let (b1, b2) = (at.b1 as usize, at.b2 as usize);
        let p = &at.key;
        // Most keys sit in their preferred slot of the primary bucket.
        let i = at.pref();
        if self.sigs[b1].sig[i] == at.sig && self.holds(b1 * BUCKET_SLOTS + i, p, key, now_ms) {
            return Some(b1 * BUCKET_SLOTS + i);
        }
        self.find_in(b1, at.sig, p, key, now_ms).or_else(|| self.find_in(b2, at.sig, p, key, now_ms))
    }

    /// As [`FlowTable::lookup_place`], with the flow as found
    /// ([`FlowTable::tracked`]), read while its slot is at hand.
    #[inline(always)]
    pub fn find(&self, key: &FlowKey, at: &Place, now_ms: u64) -> Option<(usize, Tracked)> {
        self.lookup_place(key, at, now_ms).map(|s| (s, self.tracked(s)))
    }

    /// The flow whose first slot is `slot`, unpacked.
    pub fn entry(&self, slot: usize) -> Entry {
        self.at(slot).unpack(self.at(slot | 1))
    }

    /// The backend id of the flow whose first slot is `slot`.
    #[inline(always)]
    pub fn backend(&self, slot: usize) -> u32 {
        self.at(slot).backend()
    }

    /// The expiry (ms) of the flow whose first slot is `slot`.
    #[inline(always)]
    pub fn expires_ms(&self, slot: usize) -> u64 {
        self.at(slot).expires_ms()
    }

    /// The flow whose first slot is `slot`, read once for the established
    /// path (its backend, state and expiry; [`FlowTable::refresh`] takes it
    /// back rather than reading the slot again).
    #[inline(always)]
    pub fn tracked(&self, slot: usize) -> Tracked {
        Tracked(*self.at(slot))
    }

    /// [`FlowTable::touch`] for a packet of a live flow, except that an
    /// entry whose state stays the same and whose expiry would move less than
    /// `slack_ms` later is left as it is: most packets of a flow then write
    /// neither its entry's line nor its bucket's (Linux conntrack refreshes
    /// its timeouts the same way). The flow may expire up to `slack_ms`
    /// before its full timeout after its last packet. An earlier expiry (a
    /// shorter timeout) is always written. Returns whether it wrote.
    /// `was` is the flow as [`FlowTable::tracked`] read it.
    #[inline(always)]
    pub fn refresh(
        &mut self,
        slot: usize,
        was: &Tracked,
        state: FlowState,
        expires_ms: u64,
        slack_ms: u64,
        now_ms: u64,
    ) -> bool {
        let e = &was.0;
        if e.state_byte() == state as u8 && expires_ms.wrapping_sub(e.expires_ms()) < slack_ms {
            return false;
        }
        self.touch(slot, state, expires_ms, now_ms);
        true
    }

    /// Updates a live entry's state and expiry.
    #[inline]
    pub fn touch(&mut self, slot: usize, state: FlowState, expires_ms: u64, now_ms: u64) {
        self.at_mut(slot).set(state, expires_ms);
        self.pinned |= beyond_horizon(expires_ms, now_ms);
        self.set_rank(slot, rank_of(state, expires_ms, now_ms));
    }

    /// Points a live entry at another backend (its old one went away).
    pub fn rebind(&mut self, slot: usize, backend: u32, on_remove: &mut impl FnMut(u32)) {
        on_remove(self.owner(slot));
        self.at_mut(slot).set_backend(backend);
    }

    /// Inserts a flow known to be absent and returns its slot. Never fails:
    /// when both buckets are full it reclaims or evicts (see module docs);
    /// `on_remove` sees the backend id of every entry that leaves.
    pub fn insert(&mut self, new: Entry, hash: u64, now_ms: u64, on_remove: &mut impl FnMut(u32)) -> usize {
        self.insert_hinted(new, hash, now_ms, None, on_remove)
    }

    /// As [`FlowTable::insert`], writing the hinted slot while the hint still
    /// holds (see [`InsertHint`]: a free slot still free; a victim unchanged,
    /// in buckets still full), without choosing again; else it chooses anew.
    pub fn insert_hinted(
        &mut self,
        new: Entry,
        hash: u64,
        now_ms: u64,
        hint: Option<InsertHint>,
        on_remove: &mut impl FnMut(u32),
    ) -> usize {
        let flow = NewFlow { backend: new.backend, state: new.state, expires_ms: new.expires_ms };
        self.insert_at(&new.key, flow, &self.place_of(&new.key, hash), now_ms, hint, on_remove)
    }

    /// As [`FlowTable::insert_hinted`] for the key's computed place.
    /// Inlined (callgrind: 33 fewer instructions per SYN than as a call),
    /// with the choice made without a hint — a new flow that is not a TCP
    /// SYN, or a hint that no longer holds — left a call.
    #[inline(always)]
    pub fn insert_at(
        &mut self,
        key: &FlowKey,
        new: NewFlow,
        at: &Place,
        now_ms: u64,
        hint: Option<InsertHint>,
        on_remove: &mut impl FnMut(u32),
    ) -> usize {
        let (b1, b2, sig) = (at.b1 as usize, at.b2 as usize, at.sig);
        let holds = |h: &InsertHint| {
            let (b, i) = (h.slot as usize / BUCKET_SLOTS, h.slot as usize % BUCKET_SLOTS);
            (b == b1 || b == b2)
                && self.sigs[b].sig[i] == h.sig
                && (h.sig == 0 || (self.sigs[b].rank[i] == h.rank && h.frees == self.frees))
        };
        let p = &at.key;
        if p.v6() {
            return self.insert_pair(key, &new, p, at, now_ms, on_remove);
        }
        let slot = match hint.filter(holds) {
            Some(h) if h.sig == 0 => {
                (self.used, self.flows) = (self.used + 1, self.flows + 1);
                h.slot as usize
            }
            Some(h) => self.evict_for_one(h.slot as usize, now_ms, on_remove),
            None => self.choose(b1, b2, at.pref(), now_ms, on_remove),
        };
        let bucket = &mut self.sigs[slot / BUCKET_SLOTS];
        bucket.sig[slot % BUCKET_SLOTS] = sig;
        bucket.rank[slot % BUCKET_SLOTS] = rank_of(new.state, new.expires_ms, now_ms);
        self.pinned |= beyond_horizon(new.expires_ms, now_ms);
        *self.at_mut(slot) = Slot::head(p, new.backend, new.state, new.expires_ms);
        self.stats.inserts += 1;
        slot
    }

    /// The slot an unhinted IPv4 insert into buckets `b1` (primary) and `b2`
    /// writes, emptied: a free one, or one freed by moving an entry, or a
    /// victim evicted. A call (see [`FlowTable::insert_at`]): inlined too,
    /// it cost the burst loop 8 instructions per established packet.
    #[inline(never)]
    fn choose(
        &mut self,
        b1: usize,
        b2: usize,
        pref: usize,
        now_ms: u64,
        on_remove: &mut impl FnMut(u32),
    ) -> usize {
        // The primary bucket while it has 3+ free slots, so nearly every
        // lookup reads one signature line (at half load 95.7% of keys sit in
        // their primary bucket); after that the emptier of the two, which
        // keeps the table filling past 90% before any insert has to evict.
        // Within a bucket, the key's preferred slot or the other slot of its
        // line if free: the burst lookup prefetches that line together with
        // the signature line.
        let pick = self.free_pick(b1, b2, pref);
        // Moving an entry to its other bucket needs room there: worth its 16
        // random reads only while the table has room to speak of. Above the
        // high-water mark (a SYN flood's steady state) go straight to eviction.
        let room = self.used < self.high_water();
        match pick.or_else(|| if room { self.displace(b1).or_else(|| self.displace(b2)) } else { None }) {
            Some(s) => {
                (self.used, self.flows) = (self.used + 1, self.flows + 1);
                s
            }
            None => {
                let s = self.victim(b1, b2, now_ms);
                self.evict_for_one(s, now_ms, on_remove)
            }
        }
    }

    /// Empties slot `s` for an IPv4 insert, which then writes the slot this
    /// returns: an IPv4 victim's own (the flow counts stay as they are), or
    /// an IPv6 victim's first, its second left free.
    #[inline(always)]
    fn evict_for_one(&mut self, s: usize, now_ms: u64, on_remove: &mut impl FnMut(u32)) -> usize {
        let (b, i) = (s / BUCKET_SLOTS, s % BUCKET_SLOTS);
        if self.sigs[b].sig[i] == PAIRED || self.paired(b, i) {
            return self.evict_pair_for_one(s, now_ms, on_remove);
        }
        self.count_eviction(s, now_ms);
        on_remove(self.owner(s));
        s
    }

    #[inline(never)]
    fn evict_pair_for_one(&mut self, s: usize, now_ms: u64, on_remove: &mut impl FnMut(u32)) -> usize {
        let (head, _) = self.evict(s, now_ms, on_remove);
        // The new flow takes the first slot (the insert counts it).
        (self.used, self.flows) = (self.used + 1, self.flows + 1);
        // The second is left free: a hint made before must not take its
        // buckets for full.
        self.frees = self.frees.wrapping_add(1);
        head
    }

    /// Counts the flow whose first slot is `s`, evicted now, by class: from
    /// its rank (`expired_by_rank`), so the common victims of a SYN flood —
    /// an unconfirmed flow not yet due, or one expired a unit or more ago —
    /// wait for no read of their entry. (Its backend id is read from the line
    /// the insert writes, prefetched with the victim's choice.)
    #[inline(always)]
    fn count_eviction(&mut self, s: usize, now_ms: u64) {
        let r = self.sigs[s / BUCKET_SLOTS].rank[s % BUCKET_SLOTS];
        if self.expired_by_rank(s, rank_left(r, rank_now(now_ms)), now_ms) {
            self.stats.expired += 1;
        } else if r & RANK_ESTABLISHED != 0 {
            self.stats.evicted_established += 1;
        } else {
            self.stats.evicted_unconfirmed += 1;
        }
    }

    /// Evicts the flow in slot `s` (either slot of a pair) for an insert:
    /// counts it as expired or evicted, hands `on_remove` its backend id and
    /// frees its slots. Returns its first slot and how many slots it took.
    fn evict(&mut self, s: usize, now_ms: u64, on_remove: &mut impl FnMut(u32)) -> (usize, usize) {
        let s = self.head_of(s);
        self.count_eviction(s, now_ms);
        (s, self.clear(s / BUCKET_SLOTS, s % BUCKET_SLOTS, on_remove))
    }

    /// Frees the flow whose first slot is slot `i` of bucket `b` (its pair
    /// too) and hands `on_remove` its backend id; returns the slots freed.
    fn clear(&mut self, b: usize, i: usize, on_remove: &mut impl FnMut(u32)) -> usize {
        on_remove(self.owner(b * BUCKET_SLOTS + i));
        let n = 1 + self.paired(b, i) as usize;
        self.sigs[b].sig[i] = 0;
        if n == 2 {
            self.sigs[b].sig[i + 1] = 0;
        }
        self.used -= n;
        self.flows -= 1;
        n
    }

    /// Whether the entry in `slot`, whose rank lies `left` units from now
    /// ([`rank_left`]), has expired: from the rank alone where it can tell —
    /// a rank ahead of now cannot have expired; one in the past has, unless
    /// some entry was ever pinned at the horizon — else from the entry
    /// itself (due within this rank unit, or past in a pinned table).
    #[inline(always)]
    fn expired_by_rank(&self, slot: usize, left: u16, now_ms: u64) -> bool {
        match left {
            1..0x4000 => false,
            0x4000.. if !self.pinned => true,
            _ => expired(self.at(slot), now_ms),
        }
    }

    /// The backend id of the flow whose first slot is `slot`.
    #[inline(always)]
    fn owner(&self, slot: usize) -> u32 {
        self.at(slot).backend()
    }

    #[cfg(test)]
    fn free_count(&self, b: usize) -> usize {
        holding(&self.sigs[b].sig, 0).count_ones() as usize
    }

    /// The free slot an insert into buckets `b1` (primary) and `b2` writes,
    /// if they have one (see [`FlowTable::insert_hinted`]); the SYN prefetch
    /// asks the same question.
    #[inline(always)]
    fn free_pick(&self, b1: usize, b2: usize, pref: usize) -> Option<usize> {
        // Each bucket's free slots as a mask, computed once: a full pair
        // (a flood's steady state) answers from the two masks alone.
        let (m1, m2) = (holding(&self.sigs[b1].sig, 0), holding(&self.sigs[b2].sig, 0));
        if m1 | m2 == 0 {
            return None;
        }
        let (f1, f2) = (m1.count_ones() as usize, m2.count_ones() as usize);
        let (b, m) = if f1 >= PRIMARY_FREE || (f1 >= f2 && f1 > 0) { (b1, m1) } else { (b2, m2) };
        // The preferred slot if free, else the other slot of its line (the
        // line the lookup's first stage fetches), else the first free one
        // (the bucket chosen has one: the other is picked only when it has
        // more).
        let i = if m >> pref & 1 != 0 {
            pref
        } else if m >> (pref ^ 1) & 1 != 0 {
            pref ^ 1
        } else {
            m.trailing_zeros() as usize
        };
        Some(b * BUCKET_SLOTS + i)
    }

    #[inline]
    fn free_slot(&self, b: usize) -> Option<usize> {
        self.first(b, 0).map(|i| b * BUCKET_SLOTS + i)
    }

    /// Frees a slot in bucket `b` by moving one of its entries to that entry's
    /// other bucket (partial-key cuckoo: the other bucket is `b ^ f(sig)`),
    /// if one of those has room. One level deep: bounded work.
    /// IPv6 pairs stay where they are.
    fn displace(&mut self, b: usize) -> Option<usize> {
        for i in 0..BUCKET_SLOTS {
            let sig = self.sigs[b].sig[i];
            if sig == PAIRED || self.paired(b, i) {
                continue;
            }
            let alt = self.alt(b, sig);
            if alt == b {
                continue;
            }
            if let Some(to) = self.free_slot(alt) {
                return Some(self.move_one(b * BUCKET_SLOTS + i, to));
            }
        }
        None
    }

    /// Moves the IPv4 flow in slot `from` to the free slot `to`; returns `from`.
    fn move_one(&mut self, from: usize, to: usize) -> usize {
        let (b, i) = (from / BUCKET_SLOTS, from % BUCKET_SLOTS);
        *self.at_mut(to) = *self.at(from);
        let (sig, rank) = (self.sigs[b].sig[i], self.sigs[b].rank[i]);
        self.sigs[to / BUCKET_SLOTS].sig[to % BUCKET_SLOTS] = sig;
        self.sigs[to / BUCKET_SLOTS].rank[to % BUCKET_SLOTS] = rank;
        self.sigs[b].sig[i] = 0;
        from
    }

    /// Best slot to sacrifice among the 16 candidates, from their ranks alone
    /// (no entry is read): expired first, then unconfirmed or closing, then
    /// established; within a class the nearest expiry (to about a second).
    /// Inlined into the SYN's second prefetch pass, its one hot caller
    /// (callgrind: 20 fewer instructions per SYN than as a call).
    #[inline(always)]
    fn victim(&self, b1: usize, b2: usize, now_ms: u64) -> usize {
        // One order key per candidate, smallest wins: the class in the top
        // bits (0 stale, 1 unconfirmed or closing, 2 established), then the
        // time left (< 0x4000); the first of equals wins. Eight candidates
        // per 16-bit vector (`wide`: SSE2 here), keys compared signed with
        // the top bit flipped. Left to LLVM, the same arithmetic on arrays
        // took ~200 instructions, part of them scalar; with branches, every
        // SYN of a flood paid for mispredicted class tests.
        let splat = i16x8::splat;
        let now = splat(rank_now(now_ms) as i16);
        let order = |ranks: &[u16; BUCKET_SLOTS]| {
            let r = i16x8::new(ranks.map(|x| x as i16));
            let left = (r - now) & splat(RANK_MASK as i16);
            let stale = left.cmp_eq(splat(0)) | (left & splat(0x4000)).cmp_eq(splat(0x4000));
            let class = r.cmp_lt(splat(0)).blend(splat(i16::MIN), splat(0x4000));
            stale.blend(splat(0), class | left) ^ splat(i16::MIN)
        };
        let (k1, k2) = (order(&self.sigs[b1].rank), order(&self.sigs[b2].rank));
        let best = splat(k1.min(k2).reduce_min());
        let holders =
            k1.cmp_eq(best).move_mask() as u32 | (k2.cmp_eq(best).move_mask() as u32) << BUCKET_SLOTS;
        let i = holders.trailing_zeros() as usize;
        if i < BUCKET_SLOTS {
            b1 * BUCKET_SLOTS + i
        } else {
            b2 * BUCKET_SLOTS + i - BUCKET_SLOTS
        }
    }
}

#[cfg(test)]
mod tests;
