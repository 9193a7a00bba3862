//! Source-IP persistence (like IPVS `-p`): a client (per service) keeps its
//! backend for a timeout after its last packet, whatever the weights do.
//!
//! One table per box, shared by every worker, because RSS hashes the 5-tuple:
//! a client's connections land on different workers, and each must find the
//! same entry. Fixed capacity in 4-way sets, no allocation after creation,
//! and no lock:
//!
//! - **Reads** (a new flow's lookup, by any worker) are seqlock reads of a
//!   slot: its sequence word is read before and after the fields, and a read
//!   that saw a write in progress is treated as a miss.
//! - **Entries are made by one worker per client**, its *owner*
//!   ([`owner`]: a fixed hash of the address, modulo the worker count). A
//!   worker that finds no usable entry for a new flow hands the packet to the
//!   owner (`Verdict::Handoff`), which decides and records. Because only the
//!   owner makes a client's entry, two workers can never make two different
//!   ones for the same client at once: persistence is exact however RSS
//!   spreads the connections.
//! - **Slots change hands by compare-and-swap** on their expiry word: a
//!   writer swaps the expiry it saw (empty, expired, or the nearest-expiry
//!   live entry when the set is full) for [`CLAIMING`], which gives it the
//!   slot alone; it then writes the fields inside an odd sequence number and
//!   stores the new expiry last. Two owners after the same slot: one wins,
//!   the other picks again.
//! - **Refreshes** (any worker, when a flow of the client moves its own
//!   expiry) swap a live entry's expiry for a later one, only if the entry
//!   still names the same backend: a refresh racing a claim loses cleanly.

#[cfg(all(test, l4lb_loom))]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(all(test, l4lb_loom)))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::hash::hash_words;

const WAYS: usize = 4;
const SEED: u64 = u64::from_be_bytes(*b"l4lbpers");
const OWNER_SEED: u64 = u64::from_be_bytes(*b"l4lbownr");
/// An expiry word of a slot being written (never a real expiry).
const CLAIMING: u64 = u64::MAX;
/// An expiry word of a slot never written.
const EMPTY: u64 = 0;

/// One entry. Its fields are atomics so that readers on other cores may read
/// them while an owner writes; the sequence word says whether they saw one
/// write whole.
struct Slot {
    /// Even when stable, odd while a writer changes the fields.
    seq: AtomicU64,
    /// Service persistence id (high 32 bits) and backend id (low 32 bits).
    ident: AtomicU64,
    client: [AtomicU64; 2],
    /// ms; [`EMPTY`], [`CLAIMING`] or the time the entry lapses.
    expires: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            ident: AtomicU64::new(0),
            client: [AtomicU64::new(0), AtomicU64::new(0)],
            expires: AtomicU64::new(EMPTY),
        }
    }
}

/// A slot's fields as one consistent read saw them.
#[derive(Debug, Clone, Copy)]
struct View {
    ident: u64,
    client: [u64; 2],
    expires: u64,
}

impl View {
    fn live(&self, now_ms: u64) -> bool {
        self.expires != CLAIMING && self.expires > now_ms
    }

    fn is(&self, service: u32, client: &[u64; 2]) -> bool {
        self.expires != EMPTY && (self.ident >> 32) as u32 == service && self.client == *client
    }

    fn backend(&self) -> u32 {
        self.ident as u32
    }
}

/// What a claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Written into a free or expired slot, or over the client's own entry.
    Written,
    /// Written over another client's live entry: the set was full.
    Evicted,
    /// Every slot of the set was being written by other owners (a
    /// vanishingly rare race): nothing was written.
    Contended,
}

pub struct PersistTable {
    slots: Box<[Slot]>,
    mask: usize,
}

/// The worker (of `workers`) that makes `client`'s entries: a fixed hash of
/// the address, so every worker names the same one.
#[inline]
pub fn owner(client: &[u8; 16], workers: u16) -> u16 {
    if workers <= 1 {
        return 0;
    }
    let [w0, w1] = words(client);
    (hash_words(OWNER_SEED, &[w0, w1]) % workers as u64) as u16
}

#[inline(always)]
fn words(client: &[u8; 16]) -> [u64; 2] {
    let w0 = u64::from_le_bytes(client[..8].try_into().unwrap_or_default());
    let w1 = u64::from_le_bytes(client[8..].try_into().unwrap_or_default());
    [w0, w1]
}

impl PersistTable {
    pub fn with_capacity(capacity: usize) -> PersistTable {
        let sets = (capacity / WAYS).max(1).next_power_of_two();
        PersistTable { slots: (0..sets * WAYS).map(|_| Slot::new()).collect(), mask: sets - 1 }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn set(&self, service: u32, client: &[u64; 2]) -> &[Slot] {
        let s = hash_words(SEED, &[service as u64, client[0], client[1]]) as usize & self.mask;
        &self.slots[s * WAYS..(s + 1) * WAYS]
    }

    /// One consistent read of `slot`, or `None` while a writer has it.
    #[inline]
    fn read(slot: &Slot) -> Option<View> {
        let s1 = slot.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        // After the sequence word: a claim that began before this read shows
        // here as CLAIMING or a later value, never the old expiry.
        let expires = slot.expires.load(Ordering::Acquire);
        let ident = slot.ident.load(Ordering::Relaxed);
        let client = [slot.client[0].load(Ordering::Relaxed), slot.client[1].load(Ordering::Relaxed)];
        // The field loads above happen before the second sequence load.
        fence(Ordering::Acquire);
        (slot.seq.load(Ordering::Relaxed) == s1).then_some(View { ident, client, expires })
    }

    /// The client's backend, if its entry is live.
    #[inline]
    pub fn lookup(&self, service: u32, client: &[u8; 16], now_ms: u64) -> Option<u32> {
        self.peek(service, client, now_ms).map(|(backend, _)| backend)
    }

    /// As [`PersistTable::lookup`] with the entry's expiry.
    #[inline]
    pub fn peek(&self, service: u32, client: &[u8; 16], now_ms: u64) -> Option<(u32, u64)> {
        let c = words(client);
        self.set(service, &c)
            .iter()
            .filter_map(Self::read)
            .find(|v| v.live(now_ms) && v.is(service, &c))
            .map(|v| (v.backend(), v.expires))
    }

    /// Moves the expiry of the client's live entry on `backend` to
    /// `expires_ms` (if later). False when there is no such entry. Any
    /// worker may refresh.
    #[inline]
    pub fn refresh(
        &self,
        service: u32,
        client: &[u8; 16],
        backend: u32,
        now_ms: u64,
        expires_ms: u64,
    ) -> bool {
        let c = words(client);
        for slot in self.set(service, &c) {
            let Some(v) = Self::read(slot) else { continue };
            if v.live(now_ms) && v.is(service, &c) {
                if v.backend() != backend {
                    return false;
                }
                if expires_ms <= v.expires {
                    return true;
                }
                // Fails only if a claim or another refresh changed the
                // expiry since the read: the claim wins; a refresh already
                // kept the entry alive.
                return slot
                    .expires
                    .compare_exchange(v.expires, expires_ms, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                    || Self::read(slot)
                        .is_some_and(|n| n.live(now_ms) && n.is(service, &c) && n.backend() == backend);
            }
        }
        false
    }

    /// Makes (or remakes) the client's entry: `backend` until `expires_ms`.
    /// Only the client's [`owner`] may call this; see the module's notes.
    pub fn claim(
        &self,
        service: u32,
        client: &[u8; 16],
        backend: u32,
        now_ms: u64,
        expires_ms: u64,
    ) -> Claimed {
        let c = words(client);
        let set = self.set(service, &c);
        for _ in 0..2 * WAYS {
            // The client's own slot if it has one, else the free or expired
            // slot, else the live entry nearest expiry.
            let mut own = None;
            let mut victim: Option<(usize, u64)> = None;
            for (w, slot) in set.iter().enumerate() {
                let Some(v) = Self::read(slot) else { continue };
                if v.expires == CLAIMING {
                    continue;
                }
                if v.is(service, &c) {
                    own = Some((w, v.expires));
                    break;
                }
                if victim.is_none_or(|(_, e)| v.expires < e) {
                    victim = Some((w, v.expires));
                }
            }
            let Some((w, seen)) = own.or(victim) else { continue };
            let slot = &set[w];
            if slot.expires.compare_exchange(seen, CLAIMING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // The slot is this writer's alone until its expiry is stored.
            let s = slot.seq.load(Ordering::Relaxed);
            slot.seq.store(s + 1, Ordering::Relaxed);
            fence(Ordering::Release);
            slot.ident.store((service as u64) << 32 | backend as u64, Ordering::Relaxed);
            slot.client[0].store(c[0], Ordering::Relaxed);
            slot.client[1].store(c[1], Ordering::Relaxed);
            slot.seq.store(s + 2, Ordering::Release);
            slot.expires.store(expires_ms, Ordering::Release);
            let evicted = own.is_none() && seen != EMPTY && seen > now_ms;
            return if evicted { Claimed::Evicted } else { Claimed::Written };
        }
        Claimed::Contended
    }
}

#[cfg(all(test, not(l4lb_loom)))]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_timeout() {
        let p = PersistTable::with_capacity(64);
        let c = [1u8; 16];
        assert_eq!(p.lookup(1, &c, 0), None);
        assert_eq!(p.claim(1, &c, 42, 0, 1000), Claimed::Written);
        assert_eq!(p.lookup(1, &c, 999), Some(42));
        assert_eq!(p.lookup(2, &c, 999), None, "per service");
        assert_eq!(p.lookup(1, &c, 1000), None, "expired");
        assert!(!p.refresh(1, &c, 42, 1000, 3000), "a lapsed entry is not refreshed");
        p.claim(1, &c, 43, 1000, 3000);
        assert_eq!(p.lookup(1, &c, 2000), Some(43));
        assert_eq!(p.capacity(), 64);
    }

    #[test]
    fn refresh_extends_only_the_same_backend() {
        let p = PersistTable::with_capacity(64);
        let c = [7u8; 16];
        p.claim(3, &c, 5, 0, 1000);
        assert!(!p.refresh(3, &c, 6, 500, 1500), "another backend");
        assert_eq!(p.peek(3, &c, 500), Some((5, 1000)));
        assert!(p.refresh(3, &c, 5, 500, 1500));
        assert_eq!(p.peek(3, &c, 1200), Some((5, 1500)));
        assert!(p.refresh(3, &c, 5, 600, 1400), "an earlier expiry keeps the later one");
        assert_eq!(p.peek(3, &c, 1450), Some((5, 1500)));
    }

    #[test]
    fn a_claim_replaces_the_clients_own_entry_in_place() {
        let p = PersistTable::with_capacity(4); // one set of 4
        let c = [9u8; 16];
        p.claim(1, &c, 1, 0, 1000);
        p.claim(1, &c, 2, 10, 1000);
        for i in 0..3u8 {
            assert_eq!(p.claim(1, &[i; 16], i as u32, 10, 2000), Claimed::Written);
        }
        assert_eq!(p.lookup(1, &c, 20), Some(2), "one entry, rewritten, and three free slots used");
    }

    #[test]
    fn full_set_replaces_nearest_expiry() {
        let p = PersistTable::with_capacity(4);
        for i in 0..4u8 {
            assert_eq!(p.claim(1, &[i; 16], i as u32, 0, 100 + i as u64), Claimed::Written);
        }
        assert_eq!(p.claim(1, &[9; 16], 9, 0, 500), Claimed::Evicted);
        assert_eq!(p.lookup(1, &[0; 16], 1), None, "the entry nearest expiry went");
        assert_eq!(p.lookup(1, &[9; 16], 1), Some(9));
        assert_eq!(p.lookup(1, &[3; 16], 1), Some(3));
        // An expired entry is taken before a live one, and that is no eviction.
        assert_eq!(p.claim(1, &[8; 16], 8, 102, 600), Claimed::Written);
        assert_eq!(p.lookup(1, &[2; 16], 101), Some(2));
    }

    #[test]
    fn owners_spread_clients_and_agree() {
        assert_eq!(owner(&[1; 16], 1), 0);
        let mut per = [0u32; 4];
        for i in 0..4000u32 {
            let mut c = [0u8; 16];
            c[12..].copy_from_slice(&i.to_be_bytes());
            let o = owner(&c, 4);
            assert_eq!(o, owner(&c, 4));
            per[o as usize] += 1;
        }
        assert!(per.iter().all(|&n| (800..=1200).contains(&n)), "{per:?}");
    }

    /// Four threads, each the owner of its own clients, claim, refresh and
    /// read one small table (so sets are contended and entries evicted)
    /// while the others read everybody's entries. Every entry names the
    /// backend its client's id implies, so a read that mixed two writes
    /// would show a wrong backend. (A smoke test on real threads: the
    /// interleavings themselves are explored by the loom models below.)
    #[test]
    fn concurrent_owners_and_readers_never_see_a_torn_entry() {
        let p = std::sync::Arc::new(PersistTable::with_capacity(64));
        let backend_of = |c: &[u8; 16]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ 0x5a5a;
        let client = |i: u32| {
            let mut c = [0u8; 16];
            c[..4].copy_from_slice(&i.to_le_bytes());
            c[8..12].copy_from_slice(&(!i).to_le_bytes());
            c
        };
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut hits = 0u64;
                    for round in 0..20_000u32 {
                        let now = round as u64;
                        let mine = client(t + 4 * (round % 64));
                        if !p.refresh(1, &mine, backend_of(&mine), now, now + 50) {
                            p.claim(1, &mine, backend_of(&mine), now, now + 50);
                        }
                        let other = client((round * 7 + t) % 256);
                        if let Some(b) = p.lookup(1, &other, now.saturating_sub(10)) {
                            assert_eq!(b, backend_of(&other), "torn read of client {other:?}");
                            hits += 1;
                        }
                    }
                    hits
                })
            })
            .collect();
        let hits: u64 = threads.into_iter().map(|t| t.join().expect("no thread panicked")).sum();
        assert!(hits > 0, "the readers found entries");
    }
}

/// Loom models of the protocol: every interleaving (and every weak-memory
/// outcome loom models) of a claim against a read, a refresh and another
/// claim, on a table of one set.
/// `RUSTFLAGS="--cfg l4lb_loom" cargo test --release --no-default-features --lib loom`
#[cfg(all(test, l4lb_loom))]
mod loom_models {
    use loom::sync::Arc;

    use super::*;

    fn client(i: u8) -> [u8; 16] {
        [i; 16]
    }

    /// A full set: clients 1..=4 on backends 11..=14, client 1's entry
    /// nearest expiry.
    fn full_set() -> PersistTable {
        let p = PersistTable::with_capacity(4);
        for i in 1..=4u8 {
            assert_eq!(p.claim(1, &client(i), 10 + i as u32, 0, 100 + i as u64), Claimed::Written);
        }
        p
    }

    /// An owner evicts client 1 for client 9 while another worker reads
    /// and refreshes client 1 and reads client 9: every read sees a whole
    /// entry (client 1 on 11, or client 9 on 19, or nothing), never a mix.
    #[test]
    fn a_claim_never_shows_a_torn_entry_to_readers() {
        loom::model(|| {
            let p = Arc::new(full_set());
            let owner = {
                let p = p.clone();
                loom::thread::spawn(move || p.claim(1, &client(9), 19, 0, 300))
            };
            let old = p.lookup(1, &client(1), 0);
            assert!(old.is_none() || old == Some(11), "client 1 read as {old:?}");
            p.refresh(1, &client(1), 11, 0, 150);
            let new = p.lookup(1, &client(9), 0);
            assert!(new.is_none() || new == Some(19), "client 9 read as {new:?}");
            assert_eq!(owner.join().unwrap(), Claimed::Evicted);
            assert_eq!(p.lookup(1, &client(9), 0), Some(19), "the claim is whole once done");
            // The entry nearest expiry went: client 1's, or client 2's if
            // the refresh came first. The rest are untouched.
            let kept: Vec<u8> = (1..=4u8).filter(|&i| p.lookup(1, &client(i), 0).is_some()).collect();
            assert!(kept == [2, 3, 4] || kept == [1, 3, 4], "kept {kept:?}");
            for i in kept {
                assert_eq!(p.lookup(1, &client(i), 0), Some(10 + i as u32), "client {i}");
            }
        });
    }

    /// Two owners claim for two clients at once with one slot free: both
    /// entries end up whole, in different slots.
    #[test]
    fn two_owners_never_write_one_slot() {
        loom::model(|| {
            let p = PersistTable::with_capacity(4);
            for i in 1..=3u8 {
                p.claim(1, &client(i), 10 + i as u32, 0, 100 + i as u64);
            }
            let p = Arc::new(p);
            let other = {
                let p = p.clone();
                loom::thread::spawn(move || p.claim(1, &client(8), 18, 0, 300))
            };
            let mine = p.claim(1, &client(9), 19, 0, 300);
            let theirs = other.join().unwrap();
            assert_ne!(mine, Claimed::Contended);
            assert_ne!(theirs, Claimed::Contended);
            assert_eq!(p.lookup(1, &client(8), 0), Some(18));
            assert_eq!(p.lookup(1, &client(9), 0), Some(19));
            // One of the two took the free slot, the other evicted client 1.
            assert_eq!(p.lookup(1, &client(1), 0), None);
        });
    }
}
