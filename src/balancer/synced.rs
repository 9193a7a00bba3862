//! Flow sync's table on the receiving box: flows other boxes of the fleet
//! track whose backend this box's tables would not choose (they started
//! before a backend change). A worker consults it only when a packet's flow
//! is not in its own flow table — as happens when the router moves a flow
//! here from a box that died or left — and the flow keeps its backend.
//!
//! One table per box, shared by every worker (the router's hash, not RSS,
//! decides where a moved flow lands), with fixed capacity in 4-way sets and
//! no allocation after creation:
//!
//! - **One writer**: the sync receiver, through the only [`SyncWriter`]. Its
//!   writes are seqlock writes: a slot's sequence word is odd while its
//!   fields change.
//! - **Readers** (workers, on a flow-table miss) read a slot's sequence word
//!   before and after its fields; a read that overlapped a write is a miss
//!   (the flow is then scheduled here as any new flow would be).
//! - A full set gives its nearest-expiry entry to a new one (counted).

#[cfg(all(test, l4lb_loom))]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(all(test, l4lb_loom)))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

use std::sync::Arc;

use super::flow::FlowKey;

const WAYS: usize = 4;
/// The expiry word of an empty slot.
const EMPTY: u64 = 0;

/// One entry: 8 words, a cache line.
struct Slot {
    /// Even when stable, odd while the writer changes the fields.
    seq: AtomicU64,
    key: [AtomicU64; 5],
    /// The backend's stable id on this box (`state::Backend::id`).
    backend: AtomicU64,
    /// ms on the workers' clock; [`EMPTY`] or when the entry lapses.
    expires: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            key: std::array::from_fn(|_| AtomicU64::new(0)),
            backend: AtomicU64::new(0),
            expires: AtomicU64::new(EMPTY),
        }
    }
}

/// A flow key as five words (both addresses, then ports and protocol).
fn words(k: &FlowKey) -> [u64; 5] {
    let w = |b: &[u8; 16], i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    [
        w(&k.src, 0),
        w(&k.src, 1),
        w(&k.dst, 0),
        w(&k.dst, 1),
        k.src_port as u64 | (k.dst_port as u64) << 16 | (k.proto as u64) << 32 | 1 << 40,
    ]
}

/// A flow a worker tracks whose backend the tables would not choose for it
/// now (it started before a backend change): what the peers need to keep it
/// on its backend if the router moves it to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtRisk {
    pub key: FlowKey,
    /// The backend's stable id on this box.
    pub backend: u32,
    /// How long the entry lives on without packets.
    pub expires_in_ms: u32,
}

/// The table's read side, shared by the workers.
pub struct SyncedFlows {
    slots: Box<[Slot]>,
    /// Sets minus one (a power of two minus one).
    set_mask: usize,
}

/// What [`SyncWriter::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// A new entry in a free (or lapsed) slot.
    Inserted,
    /// The key's entry, with the backend and expiry given.
    Updated,
    /// A new entry in place of the set's nearest-expiry live one.
    Evicted,
}

/// The table's only write side.
pub struct SyncWriter {
    table: Arc<SyncedFlows>,
    /// Slots holding an entry, live or lapsed but not yet swept.
    occupied: usize,
    /// The next slot [`SyncWriter::sweep`] reads.
    cursor: usize,
}

impl SyncedFlows {
    /// A table of at least `capacity` entries (rounded up to a power of two
    /// sets of four) and its writer.
    pub fn new(capacity: usize) -> (Arc<SyncedFlows>, SyncWriter) {
        let sets = capacity.div_ceil(WAYS).next_power_of_two().max(1);
        let slots: Box<[Slot]> = (0..sets * WAYS).map(|_| Slot::new()).collect();
        let t = Arc::new(SyncedFlows { slots, set_mask: sets - 1 });
        (t.clone(), SyncWriter { table: t, occupied: 0, cursor: 0 })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn set(&self, hash: u64) -> &[Slot] {
        let s = (hash as usize & self.set_mask) * WAYS;
        &self.slots[s..s + WAYS]
    }

    /// The backend id a peer reported for `key` (whose documented flow hash
    /// is `hash`), while its entry lives; none also when a read overlapped
    /// the writer.
    #[inline]
    pub fn get(&self, key: &FlowKey, hash: u64, now_ms: u64) -> Option<u32> {
        let want = words(key);
        for slot in self.set(hash) {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                continue;
            }
            let same = slot.key.iter().zip(&want).all(|(a, b)| a.load(Ordering::Relaxed) == *b);
            let backend = slot.backend.load(Ordering::Relaxed);
            let expires = slot.expires.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if same && expires > now_ms {
                return Some(backend as u32);
            }
        }
        None
    }

    /// Live entries (for `ctl sync` and the metrics; reads every slot).
    pub fn live(&self, now_ms: u64) -> usize {
        self.slots.iter().filter(|s| s.expires.load(Ordering::Relaxed) > now_ms).count()
    }
}

impl SyncWriter {
    /// The read side.
    pub fn table(&self) -> &Arc<SyncedFlows> {
        &self.table
    }

    /// Records that `key` goes to `backend` until `expires_ms`: updates the
    /// key's entry, or takes a free or lapsed slot of its set, or the set's
    /// nearest-expiry entry.
    pub fn put(&mut self, key: &FlowKey, hash: u64, backend: u32, expires_ms: u64, now_ms: u64) -> Put {
        let want = words(key);
        let set = self.table.set(hash);
        // Only this writer changes slots: plain loads see the latest values.
        let mut pick = None;
        let mut how = Put::Evicted;
        let mut nearest = u64::MAX;
        for (i, slot) in set.iter().enumerate() {
            let exp = slot.expires.load(Ordering::Relaxed);
            let live = exp > now_ms;
            if live && slot.key.iter().zip(&want).all(|(a, b)| a.load(Ordering::Relaxed) == *b) {
                pick = Some(i);
                how = Put::Updated;
                break;
            }
            if !live {
                if how != Put::Inserted {
                    pick = Some(i);
                    how = Put::Inserted;
                }
            } else if how == Put::Evicted && exp < nearest {
                nearest = exp;
                pick = Some(i);
            }
        }
        let slot = &set[pick.expect("a set has slots")];
        if slot.expires.load(Ordering::Relaxed) == EMPTY {
            self.occupied += 1;
        }
        write(slot, Some((&want, backend)), expires_ms.max(1));
        how
    }

    /// Empties the lapsed entries among the next `slots` slots (round the
    /// table), so that [`SyncWriter::occupied`] counts what still lives.
    pub fn sweep(&mut self, now_ms: u64, slots: usize) {
        let all = &self.table.slots;
        for _ in 0..slots.min(all.len()) {
            let slot = &all[self.cursor];
            self.cursor = (self.cursor + 1) % all.len();
            let exp = slot.expires.load(Ordering::Relaxed);
            if exp != EMPTY && exp <= now_ms {
                write(slot, None, EMPTY);
                self.occupied -= 1;
            }
        }
    }

    /// Entries held: the live ones and lapsed ones not yet swept (a count,
    /// not a read of the table).
    pub fn occupied(&self) -> usize {
        self.occupied
    }
}

/// The seqlock write of one slot (only the writer calls it): the sequence
/// word odd while the fields change; `entry` None keeps key and backend.
fn write(slot: &Slot, entry: Option<(&[u64; 5], u32)>, expires: u64) {
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    if let Some((key, backend)) = entry {
        for (a, b) in slot.key.iter().zip(key) {
            a.store(*b, Ordering::Relaxed);
        }
        slot.backend.store(backend as u64, Ordering::Relaxed);
    }
    slot.expires.store(expires, Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(2), Ordering::Release);
}

#[cfg(all(test, not(l4lb_loom)))]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn key(i: u16) -> FlowKey {
        let c: IpAddr = "198.19.0.2".parse().unwrap();
        let v: IpAddr = "198.18.100.1".parse().unwrap();
        FlowKey::new(c, v, 6, 40000 + i, 80)
    }

    #[test]
    fn entries_are_found_until_they_lapse_and_updates_replace_them() {
        let (t, mut w) = SyncedFlows::new(64);
        let k = key(1);
        assert_eq!(t.get(&k, k.hash(), 0), None);
        assert_eq!(w.put(&k, k.hash(), 7, 1_000, 0), Put::Inserted);
        assert_eq!(t.get(&k, k.hash(), 999), Some(7));
        assert_eq!(t.get(&k, k.hash(), 1_000), None, "lapsed");
        assert_eq!(t.get(&key(2), key(2).hash(), 0), None, "another key");
        assert_eq!(w.put(&k, k.hash(), 9, 5_000, 500), Put::Updated);
        assert_eq!(t.get(&k, k.hash(), 4_000), Some(9));
        // An IPv4 key and the IPv6 key with the same bytes elsewhere differ.
        let six =
            FlowKey::new("2001:db8::2".parse().unwrap(), "2001:db8:100::1".parse().unwrap(), 6, 40001, 80);
        assert_eq!(t.get(&six, k.hash(), 0), None);
    }

    #[test]
    fn a_full_set_gives_up_its_nearest_expiry_entry() {
        let (t, mut w) = SyncedFlows::new(4);
        assert_eq!(t.capacity(), 4, "one set");
        for i in 0..4u16 {
            let k = key(i);
            assert_eq!(w.put(&k, k.hash(), i as u32, 10_000 + i as u64, 0), Put::Inserted);
        }
        let k = key(9);
        assert_eq!(w.put(&k, k.hash(), 99, 20_000, 0), Put::Evicted);
        assert_eq!(t.get(&key(0), key(0).hash(), 0), None, "the nearest expiry went");
        for i in 1..4u16 {
            assert_eq!(t.get(&key(i), key(i).hash(), 0), Some(i as u32));
        }
        assert_eq!(t.get(&k, k.hash(), 0), Some(99));
        assert_eq!(t.live(0), 4);
        // A lapsed entry's slot is taken before any live one.
        assert_eq!(w.put(&key(20), key(20).hash(), 1, 30_000, 10_002), Put::Inserted);
        assert_eq!(t.get(&key(3), key(3).hash(), 10_002), Some(3));
    }

    #[test]
    fn the_count_of_entries_follows_puts_and_sweeps() {
        let (t, mut w) = SyncedFlows::new(64);
        for i in 0..10 {
            w.put(&key(i), key(i).hash(), 1, if i < 4 { 100 } else { 10_000 }, 0);
        }
        w.put(&key(5), key(5).hash(), 2, 20_000, 0);
        assert_eq!((w.occupied(), t.live(50)), (10, 10), "an update is no new entry");
        // Lapsed entries count until a sweep reaches them, in parts.
        assert_eq!(t.live(200), 6);
        w.sweep(200, t.capacity() / 2);
        w.sweep(200, t.capacity() / 2);
        assert_eq!(w.occupied(), 6);
        assert_eq!(t.get(&key(5), key(5).hash(), 200), Some(2), "live entries stay");
        // A swept slot is free again, and counted again once reused.
        w.put(&key(1), key(1).hash(), 3, 30_000, 200);
        assert_eq!((w.occupied(), t.live(200)), (7, 7));
    }

    #[test]
    fn readers_on_other_threads_see_whole_entries_only() {
        let (t, mut w) = SyncedFlows::new(4);
        let keys: Vec<FlowKey> = (0..8).map(key).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The writer starts once the readers run, so that they race it.
        let started = Arc::new(std::sync::Barrier::new(3));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, keys, stop, started) = (t.clone(), keys.clone(), stop.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    started.wait();
                    while !stop.load(Ordering::Relaxed) || seen == 0 {
                        for (i, k) in keys.iter().enumerate() {
                            // Each key is only ever written with backend = its index.
                            if let Some(b) = t.get(k, k.hash(), 0) {
                                assert_eq!(b as usize, i, "a torn read");
                                seen += 1;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        started.wait();
        for round in 0..20_000u64 {
            let i = (round % 8) as usize;
            w.put(&keys[i], keys[i].hash(), i as u32, 1 + round, 0);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

/// Interleavings of a read against the writer (`scripts/test.sh` runs these
/// with `--cfg l4lb_loom`).
#[cfg(all(test, l4lb_loom))]
mod loom_models {
    use super::*;

    #[test]
    fn a_read_racing_a_replacement_sees_the_old_entry_or_a_miss_never_a_mix() {
        loom::model(|| {
            let key = |port: u16| {
                FlowKey::new("198.19.0.2".parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, port, 80)
            };
            let (t, mut w) = SyncedFlows::new(4);
            // One set, full: flow i goes to backend i, the first lapses first.
            for i in 1..=4u16 {
                w.put(&key(i), key(i).hash(), i as u32, 10 * i as u64, 0);
            }
            let reader = {
                let t = t.clone();
                loom::thread::spawn(move || {
                    (t.get(&key(1), key(1).hash(), 0), t.get(&key(5), key(5).hash(), 0))
                })
            };
            // Flow 5 takes flow 1's slot.
            assert_eq!(w.put(&key(5), key(5).hash(), 5, 50, 0), Put::Evicted);
            let (one, five) = reader.join().unwrap();
            assert!(matches!(one, None | Some(1)), "flow 1 read as {one:?}");
            assert!(matches!(five, None | Some(5)), "flow 5 read as {five:?}");
        });
    }
}
