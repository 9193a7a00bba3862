//! The flow table's tests: layout, lookup and insert, eviction classes and
//! ranks, expiry and sweep, the prefetch passes against the plain ones.

use super::*;
use crate::balancer::NoPrefetch;

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        std::net::Ipv4Addr::from(0xc612_0000 | (i >> 16)).into(),
        "198.18.100.1".parse().unwrap(),
        6,
        (i & 0xffff) as u16,
        80,
    )
}

/// `n` keys whose two buckets are one pair of distinct buckets (the first
/// key's with two), so 16 of them fill it.
fn same_pair(t: &FlowTable, n: usize) -> Vec<FlowKey> {
    let pair =
        (0u32..).map(|i| t.place(key(i).hash())).find(|p| p.0 != p.1).expect("some key has two buckets");
    (0u32..400_000)
        .map(key)
        .filter(|k| {
            let p = t.place(k.hash());
            (p.0, p.1) == (pair.0, pair.1)
        })
        .take(n)
        .collect()
}

#[test]
fn a_slot_costs_36_bytes() {
    let t = FlowTable::with_capacity(1 << 16);
    assert_eq!(t.bytes(), 36 << 16);
    assert_eq!(t.at(0) as *const Slot as usize % 64, 0, "each even slot starts a line");
    assert_eq!(std::mem::size_of::<Bucket>(), 32);
}

#[test]
fn insert_lookup_touch_expire() {
    let mut t = FlowTable::with_capacity(1024);
    let mut removed = Vec::new();
    let k = key(1);
    assert_eq!(t.lookup(&k, k.hash(), 0), None);
    let s = t.insert(
        Entry { key: k, backend: 7, state: FlowState::SynSeen, expires_ms: 100 },
        k.hash(),
        0,
        &mut |e| removed.push(e),
    );
    assert_eq!(t.lookup(&k, k.hash(), 50), Some(s));
    assert_eq!(t.entry(s).backend, 7);
    t.touch(s, FlowState::Established, 1000, 50);
    assert_eq!(t.lookup(&k, k.hash(), 999), Some(s));
    assert_eq!(t.lookup(&k, k.hash(), 1000), None, "expired at its expiry time");
    assert_eq!(t.len(), 1);
    assert_eq!(t.sweep(1000, t.capacity(), &mut |e| removed.push(e)), 1);
    assert_eq!((t.len(), removed.as_slice()), (0, &[7][..]));
}

#[test]
fn refresh_writes_only_a_new_state_or_an_expiry_moved_by_the_slack() {
    let mut t = FlowTable::with_capacity(1024);
    let k = key(1);
    let est = FlowState::Established;
    let s = t.insert(Entry { key: k, backend: 7, state: est, expires_ms: 10_000 }, k.hash(), 0, &mut |_| {});
    let seen = |t: &FlowTable| {
        (t.entry(s).state, t.entry(s).expires_ms, t.sigs[s / BUCKET_SLOTS].rank[s % BUCKET_SLOTS])
    };
    let first = seen(&t);
    // Same state, 999 ms later than stored with a 1000 ms slack: untouched.
    assert!(!t.refresh(s, &t.tracked(s), est, 10_999, 1000, 999));
    assert_eq!(seen(&t), first);
    // 1000 ms later: written, the rank with it.
    assert!(t.refresh(s, &t.tracked(s), est, 11_000, 1000, 1000));
    assert_eq!(seen(&t), (est, 11_000, rank_of(est, 11_000, 1000)));
    // A new state is written however little the expiry moves...
    assert!(t.refresh(s, &t.tracked(s), FlowState::Closing, 11_001, 1000, 1001));
    assert_eq!(seen(&t), (FlowState::Closing, 11_001, rank_of(FlowState::Closing, 11_001, 1001)));
    // ...and so is an earlier expiry (a shorter timeout).
    assert!(t.refresh(s, &t.tracked(s), FlowState::Closing, 5_000, 1000, 1002));
    assert_eq!(seen(&t), (FlowState::Closing, 5_000, rank_of(FlowState::Closing, 5_000, 1002)));
}

#[test]
fn fills_past_ninety_percent_without_eviction() {
    let cap = 1 << 14;
    let mut t = FlowTable::with_capacity(cap);
    let n = cap * 9 / 10;
    let mut evicted = 0;
    for i in 0..n as u32 {
        let k = key(i);
        t.insert(
            Entry { key: k, backend: i, state: FlowState::Established, expires_ms: 10_000 },
            k.hash(),
            0,
            &mut |_| evicted += 1,
        );
    }
    assert_eq!(evicted, 0, "2-choice buckets of 8 with displacement hold 90% without evicting");
    for i in 0..n as u32 {
        let k = key(i);
        let s = t.lookup(&k, k.hash(), 1).expect("present");
        assert_eq!(t.entry(s).backend, i);
    }
    let mut first = None;
    for i in n as u32..cap as u32 {
        let k = key(i);
        t.insert(
            Entry { key: k, backend: i, state: FlowState::Established, expires_ms: 10_000 },
            k.hash(),
            0,
            &mut |_| {
                first.get_or_insert(i);
            },
        );
    }
    println!("first eviction at load {:.3}", first.unwrap_or(cap as u32) as f64 / cap as f64);
}

#[test]
fn at_half_load_nearly_every_key_sits_in_its_primary_bucket() {
    let cap = 1 << 16;
    let mut t = FlowTable::with_capacity(cap);
    for i in 0..(cap / 2) as u32 {
        let k = key(i);
        let e = Entry { key: k, backend: i, state: FlowState::Established, expires_ms: 10_000 };
        t.insert(e, k.hash(), 0, &mut |_| panic!("no eviction at half load"));
    }
    let primary = (0..(cap / 2) as u32)
        .filter(|&i| {
            let k = key(i);
            let slot = t.lookup(&k, k.hash(), 1).expect("present");
            slot / BUCKET_SLOTS == t.place(k.hash()).0
        })
        .count();
    let share = primary as f64 / (cap / 2) as f64;
    // Printed for docs/architecture.md (`cargo test --lib at_half_load -- --nocapture`).
    println!("at half load: {share:.3} of keys in their primary bucket");
    assert!(share > 0.93, "only {share:.3} in the primary bucket: lookups would need two lines");
    // ...and most in their preferred slot there, whose entry the first
    // prefetch stage fetches beside the signature line.
    let preferred = (0..(cap / 2) as u32)
        .filter(|&i| {
            let k = key(i);
            let at = t.place_of(&k, k.hash());
            t.lookup(&k, k.hash(), 1) == Some(at.b1 as usize * BUCKET_SLOTS + at.pref as usize)
        })
        .count();
    let share = preferred as f64 / (cap / 2) as f64;
    println!("at half load: {share:.3} of keys in their preferred slot");
    assert!(share > 0.7, "only {share:.3} in the preferred slot");
    // ...and more in that slot's line (the other slot of the line is an
    // insert's second choice): the line the first stage fetches.
    let in_line = (0..(cap / 2) as u32)
        .filter(|&i| {
            let k = key(i);
            let at = t.place_of(&k, k.hash());
            let slot = t.lookup(&k, k.hash(), 1).expect("present");
            slot / 2 == (at.b1 as usize * BUCKET_SLOTS + at.pref as usize) / 2
        })
        .count();
    let share = in_line as f64 / (cap / 2) as f64;
    println!("at half load: {share:.3} of keys in their preferred slot's line");
    assert!(share > 0.85, "only {share:.3} in the preferred slot's line");
}

/// The address of a table line, as a prefetch sees it.
fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

/// Records the address of every line prefetched.
#[derive(Default)]
struct Recorded(std::cell::RefCell<Vec<usize>>);

impl Prefetch for Recorded {
    fn prefetch<T>(&self, r: &T) {
        self.0.borrow_mut().push(addr(r));
    }
}

/// The lines both prefetch stages fetch for a SYN of key `i`, sorted.
fn syn_prefetches(t: &FlowTable, i: u32) -> Vec<usize> {
    let at = t.place_of(&key(i), key(i).hash());
    let rec = Recorded::default();
    t.prefetch_place_new(&at, &rec);
    t.prefetch_entry_place_new(&at, 0, &rec);
    let mut v = rec.0.into_inner();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn a_tracked_flow_finds_its_lines_prefetched() {
    // The two stages of a lookup fetch, for a key the table holds, its
    // bucket line and entry: always when it sits in its primary bucket;
    // in the second bucket when it sits in the preferred slot there,
    // where inserts put it unless that slot was taken.
    for load in [2, 32] {
        let mut t = FlowTable::with_capacity(1 << 14);
        let n = (t.capacity() - t.capacity() / load) as u32;
        let est =
            |i: u32| Entry { key: key(i), backend: i, state: FlowState::Established, expires_ms: 1 << 40 };
        for i in 0..n {
            t.insert(est(i), key(i).hash(), 0, &mut |_| {});
        }
        let (mut second, mut covered) = (0, 0);
        for i in 0..n {
            let k = key(i);
            let at = t.place_of(&k, k.hash());
            // (Filling to the high-water mark evicts a few.)
            let Some(slot) = t.lookup(&k, k.hash(), 0) else { continue };
            let same_sig = |b: u32| holding(&t.sigs[b as usize].sig, at.sig).count_ones();
            if same_sig(at.b1) + same_sig(at.b2) > 1 {
                continue; // another key's signature too: its entry may be fetched instead
            }
            let rec = Recorded::default();
            t.prefetch_place(&at, &rec);
            t.prefetch_entry_place(&at, &rec);
            // Compared as cache lines: a prefetch fetches the line it points into.
            let line = |a: usize| a & !63;
            let got: Vec<usize> = rec.0.into_inner().into_iter().map(line).collect();
            let b = slot / BUCKET_SLOTS;
            assert!(got.contains(&line(addr(&t.sigs[b]))), "key {i}: its bucket line");
            assert!(got.contains(&line(addr(&t.sigs[at.b1 as usize]))), "key {i}: the primary line");
            assert!(got.len() <= 5, "key {i}: {} lines", got.len());
            if b == at.b1 as usize {
                assert!(got.contains(&line(addr(t.at(slot)))), "key {i}: its entry in the primary");
            } else {
                second += 1;
                if slot % BUCKET_SLOTS == at.pref as usize {
                    assert!(got.contains(&line(addr(t.at(slot)))), "key {i}: its entry in the second");
                    covered += 1;
                }
            }
        }
        println!("1/{load} free: {second} of {n} keys in the second bucket, {covered} in its preferred slot");
        assert!(
            covered * 100 > n as usize,
            "only {covered} keys in the second's preferred slot: few checked"
        );
    }
}

#[test]
fn a_flow_moved_out_of_its_preferred_slot_is_found_where_it_went() {
    let mut t = FlowTable::with_capacity(1024);
    let k = (0u32..).map(key).find(|k| {
        let at = t.place_of(k, k.hash());
        at.b1 != at.b2
    });
    let k = k.expect("some key has two buckets");
    let at = t.place_of(&k, k.hash());
    let e = Entry { key: k, backend: 7, state: FlowState::Established, expires_ms: 1 << 40 };
    let from = t.insert(e, k.hash(), 0, &mut |_| {});
    assert_eq!(from, at.b1 as usize * BUCKET_SLOTS + at.pref(), "an empty table: the preferred slot");
    // Moved to its other bucket (as an insert that makes room does).
    let to = t.free_slot(at.b2 as usize).unwrap();
    t.move_one(from, to);
    assert_eq!(t.lookup(&k, k.hash(), 0), Some(to), "found where it went, not where it was");
    let mut gone = Vec::new();
    t.remove(to, &mut |b| gone.push(b));
    assert_eq!((gone, t.lookup(&k, k.hash(), 0)), (vec![7], None));
}

#[test]
fn the_sweep_prefetches_the_buckets_it_reads_next() {
    let mut t = FlowTable::with_capacity(1024);
    let buckets = t.sigs.len();
    // Round the table twice, two buckets a step, across the wrap.
    for step in 0..buckets {
        let rec = Recorded::default();
        t.prefetch_sweep(2, &rec);
        let want = [addr(&t.sigs[(2 * step) % buckets]), addr(&t.sigs[(2 * step + 1) % buckets])];
        assert_eq!(rec.0.into_inner(), want, "step {step}");
        t.sweep(0, 2, &mut |_| {});
    }
    let rec = Recorded::default();
    t.prefetch_sweep(usize::MAX, &rec);
    assert_eq!(rec.0.into_inner().len(), buckets, "at most the whole table");
}

#[test]
fn a_syn_prefetches_the_lines_its_insert_touches() {
    let syn = |i: u32| Entry { key: key(i), backend: i, state: FlowState::SynSeen, expires_ms: 10_000 };
    let mut t = FlowTable::with_capacity(1024);
    // Filling: both bucket lines and the slot written (the preferred
    // entry is fetched up front then, since most inserts write it).
    let mut displaced = 0;
    let mut i = 0;
    while t.len() < t.high_water() {
        i += 1;
        let at = t.place_of(&key(i), key(i).hash());
        let (b1, b2) = (at.b1 as usize, at.b2 as usize);
        let got = syn_prefetches(&t, i);
        if t.free_count(b1) + t.free_count(b2) == 0 {
            // The insert moves an entry to make room: not foreseen.
            t.insert(syn(i), key(i).hash(), 0, &mut |_| {});
            displaced += 1;
            continue;
        }
        let slot = t.insert(syn(i), key(i).hash(), 0, &mut |_| {});
        for want in [addr(&t.sigs[b1]), addr(&t.sigs[b2]), addr(t.at(slot))] {
            assert!(got.contains(&want), "key {i}: {want:#x} not prefetched");
        }
        assert!(got.len() <= 4, "key {i}: {} lines", got.len());
    }
    assert!(t.len() >= t.high_water());
    assert!(displaced * 5 < i, "{displaced} of {i} inserts displaced an entry: few checked");
    // Past the high-water mark every new flow evicts: exactly its two
    // bucket lines and the victim's entry, not the preferred entry too.
    let mut evictions = 0;
    for i in 100_000..101_000u32 {
        let at = t.place_of(&key(i), key(i).hash());
        if t.first(at.b1 as usize, at.sig).or(t.first(at.b2 as usize, at.sig)).is_some() {
            // Another key with the same signature: its entry is fetched
            // for the lookup's key compare, the victim's then is not.
            continue;
        }
        let got = syn_prefetches(&t, i);
        let hint = t.prefetch_entry_place_new(&at, 0, &NoPrefetch);
        let slot = t.insert_hinted(syn(i), key(i).hash(), 0, hint, &mut |_| {});
        let mut want = vec![addr(&t.sigs[at.b1 as usize]), addr(&t.sigs[at.b2 as usize]), addr(t.at(slot))];
        want.sort_unstable();
        want.dedup();
        assert_eq!(got, want, "key {i}");
        evictions += usize::from(hint.is_some_and(|h| h.sig != 0));
    }
    assert!(evictions > 900, "only {evictions} evictions");
    // A retransmitted SYN finds its flow: its entry is fetched, wherever it sits.
    let mut found = 0;
    for i in 100_000..101_000u32 {
        let k = key(i);
        if let Some(slot) = t.lookup(&k, k.hash(), 0) {
            assert!(syn_prefetches(&t, i).contains(&addr(t.at(slot))), "key {i}");
            found += 1;
        }
    }
    assert!(found > 100, "only {found} of the new flows are still in the table");
}

#[test]
fn a_free_slot_hint_is_taken_only_while_the_slot_is_free() {
    let mut t = FlowTable::with_capacity(1024);
    let keys = same_pair(&t, 3);
    let syn = |k: FlowKey| Entry { key: k, backend: 1, state: FlowState::SynSeen, expires_ms: 10_000 };
    let at = t.place_of(&keys[0], keys[0].hash());
    let hint = t.prefetch_entry_place_new(&at, 0, &NoPrefetch).expect("an empty table hints a free slot");
    assert_eq!(hint.sig, 0);
    // Taken while free, whichever key of the pair inserts with it.
    let first = t.insert_hinted(syn(keys[1]), keys[1].hash(), 0, Some(hint), &mut |_| {});
    assert_eq!(first, hint.slot as usize);
    // Not once another flow holds it.
    let second = t.insert_hinted(syn(keys[2]), keys[2].hash(), 0, Some(hint), &mut |_| {});
    assert_ne!(second, first);
    assert_eq!(t.len(), 2);
    for (k, slot) in [(keys[1], first), (keys[2], second)] {
        assert_eq!(t.lookup(&k, k.hash(), 0), Some(slot));
    }
}

#[test]
fn an_eviction_hint_is_taken_only_while_it_holds() {
    // Past the high-water mark with unconfirmed flows of staggered expiry.
    let mut t = FlowTable::with_capacity(1024);
    for i in 0..100_000u32 {
        if t.len() >= t.high_water() {
            break;
        }
        let k = key(i);
        let e = Entry { key: k, backend: i, state: FlowState::SynSeen, expires_ms: 5_000 + 1_000 * i as u64 };
        t.insert(e, k.hash(), 0, &mut |_| {});
    }
    assert!(t.len() >= t.high_water(), "filled to {}", t.len());
    let new = |i: u32| Entry { key: key(i), backend: i, state: FlowState::SynSeen, expires_ms: 9_000_000 };

    // New keys whose two buckets are full (most, past the high-water mark).
    let hinted = |t: &FlowTable, from: u32| {
        (from..from + 10_000)
            .find_map(|i| {
                let h = t.prefetch_entry_place_new(&t.place_of(&key(i), key(i).hash()), 0, &NoPrefetch)?;
                (h.sig != 0).then_some((i, h))
            })
            .expect("a key with both buckets full")
    };

    // A hint whose slot changed in between (here: its flow got confirmed) is not taken.
    let (i, hint) = hinted(&t, 200_000);
    let k = key(i);
    let slot = hint.slot as usize;
    let kept = t.entry(slot).key;
    t.touch(slot, FlowState::Established, 8_000_000, 0);
    let got = t.insert_hinted(new(i), k.hash(), 0, Some(hint), &mut |_| {});
    assert_ne!(got, slot);
    assert_eq!(t.lookup(&kept, kept.hash(), 0), Some(slot), "the confirmed flow stays");

    // Nor one made before a slot of its buckets was freed: the insert takes
    // the free slot and evicts nothing.
    let (i, hint) = hinted(&t, 250_000);
    let k = key(i);
    let at = t.place_of(&k, k.hash());
    let victim = t.entry(hint.slot as usize).key;
    let freed = (at.b2 as usize * BUCKET_SLOTS..).find(|&s| s != hint.slot as usize).unwrap();
    t.remove(freed, &mut |_| {});
    let evicted = t.stats().evicted_unconfirmed;
    let got = t.insert_hinted(new(i), k.hash(), 0, Some(hint), &mut |_| {});
    assert_eq!(got, freed);
    assert_eq!(t.stats().evicted_unconfirmed, evicted);
    assert!(t.lookup(&victim, victim.hash(), 0).is_some(), "the hinted victim stays");

    // An unchanged one is the slot evicted, the same the insert would choose.
    let (i, hint) = hinted(&t, 300_000);
    let k = key(i);
    let at = t.place_of(&k, k.hash());
    assert_eq!(hint.slot as usize, t.victim(at.b1 as usize, at.b2 as usize, 0));
    let got = t.insert_hinted(new(i), k.hash(), 0, Some(hint), &mut |_| {});
    assert_eq!(got, hint.slot as usize);
    assert_eq!(t.stats().evicted_unconfirmed, evicted + 1);
    assert_eq!(t.lookup(&k, k.hash(), 0), Some(got));
}

#[test]
fn a_new_flow_whose_preferred_slot_is_taken_takes_the_other_slot_of_that_line() {
    // The first prefetch stage fetches the preferred slot's line, which holds
    // two slots: the second is the next best place, ahead of the bucket's
    // first free slot.
    let mut t = FlowTable::with_capacity(1024);
    let (b1, b2) = (3, 10);
    for (taken, pref, want) in [
        (&[4][..], 4, 5),       // the line's other slot, not slot 0
        (&[5][..], 5, 4),       // either way round
        (&[4, 5][..], 4, 0),    // that line full: the first free slot
        (&[0, 1, 2][..], 2, 3), // free slots only after it
    ] {
        for i in 0..BUCKET_SLOTS {
            t.sigs[b1].sig[i] = if taken.contains(&i) { 0x8001 } else { 0 };
        }
        assert_eq!(t.free_pick(b1, b2, pref), Some(b1 * BUCKET_SLOTS + want), "{taken:?} taken");
    }
}

#[test]
fn a_new_flow_takes_the_primary_while_it_has_room_then_the_emptier_bucket() {
    let mut t = FlowTable::with_capacity(1024);
    let (b1, b2) = (3, 10);
    // `free` slots free at the end of a bucket, the rest taken.
    let fill = |t: &mut FlowTable, b: usize, free: usize| {
        for i in 0..BUCKET_SLOTS {
            t.sigs[b].sig[i] = if i < BUCKET_SLOTS - free { 0x8001 } else { 0 };
        }
    };
    let first_free = |free: usize| BUCKET_SLOTS - free;
    for (f1, f2, want) in [
        (3, 8, Some(b1)), // three free: the primary, however empty the other
        (2, 2, Some(b1)), // a tie: the primary
        (2, 3, Some(b2)),
        (0, 1, Some(b2)),
        (1, 0, Some(b1)),
        (0, 0, None),
    ] {
        fill(&mut t, b1, f1);
        fill(&mut t, b2, f2);
        let free = |b: usize| if b == b1 { f1 } else { f2 };
        // The preferred slot when free (the last one is, in every bucket with room) ...
        let got = t.free_pick(b1, b2, BUCKET_SLOTS - 1);
        assert_eq!(got, want.map(|b| b * BUCKET_SLOTS + BUCKET_SLOTS - 1), "{f1} and {f2} free");
        // ... else the bucket's first free slot.
        let got = t.free_pick(b1, b2, 0);
        assert_eq!(
            got,
            want.map(|b| b * BUCKET_SLOTS + first_free(free(b))),
            "{f1} and {f2} free, slot 0 taken"
        );
    }
}

#[test]
fn full_buckets_evict_stale_then_unconfirmed_then_established() {
    // 8 buckets; keys whose two buckets are one fixed pair.
    let mut t = FlowTable::with_capacity(64);
    let mut same = same_pair(&t, 32).into_iter();
    for n in 0..16u32 {
        let (state, exp) = match n % 4 {
            0 => (FlowState::Established, 50), // stale by t=100
            1 => (FlowState::SynSeen, 5_000),  // unconfirmed
            _ => (FlowState::Established, 10_000 + n as u64),
        };
        let k = same.next().unwrap();
        t.insert(Entry { key: k, backend: n, state, expires_ms: exp }, k.hash(), 0, &mut |_| {
            panic!("no eviction while filling")
        });
    }
    let mut classes = Vec::new();
    for _ in 0..16 {
        let k = same.next().unwrap();
        t.insert(
            Entry { key: k, backend: 99, state: FlowState::Established, expires_ms: 20_000 },
            k.hash(),
            100,
            // Backend n was given the class n % 4 above.
            &mut |b| classes.push(if b % 4 < 2 { b % 4 } else { 2 }),
        );
    }
    assert_eq!(classes, [[0; 4], [1; 4], [2; 4], [2; 4]].concat());
    let s = t.stats();
    assert_eq!((s.expired, s.evicted_unconfirmed, s.evicted_established), (4, 4, 8));
    assert_eq!(t.len(), 16);
}

#[test]
fn victims_rank_by_expiry_to_the_second_and_idle_hours_count_as_stale() {
    let mut t = FlowTable::with_capacity(64);
    let mut same = same_pair(&t, 24).into_iter();
    // 15 SYN entries expiring 2 s apart (inserted out of order), and one
    // established flow with a 7-day timeout, all at t = 0.
    let order = [7u64, 3, 12, 0, 9, 14, 1, 5, 11, 2, 8, 13, 4, 10, 6];
    for &n in &order {
        let k = same.next().unwrap();
        let e =
            Entry { key: k, backend: n as u32, state: FlowState::SynSeen, expires_ms: 10_000 + 2_000 * n };
        t.insert(e, k.hash(), 0, &mut |_| panic!("room left"));
    }
    let k = same.next().unwrap();
    let long = Entry { key: k, backend: 100, state: FlowState::Established, expires_ms: 7 * 86_400_000 };
    t.insert(long, k.hash(), 0, &mut |_| panic!("room left"));
    // At t = 1 s: SYNs go in expiry order; the established flow stays.
    let mut gone = Vec::new();
    for _ in 0..3 {
        let k = same.next().unwrap();
        let e = Entry { key: k, backend: 200, state: FlowState::SynSeen, expires_ms: 60_000 };
        t.insert(e, k.hash(), 1_000, &mut |e| gone.push(e));
    }
    assert_eq!(gone, vec![0, 1, 2]);
}

#[test]
fn a_flow_idle_for_hours_ranks_as_stale_whatever_its_timeout() {
    // The long timeout given at the insert, or later by a touch.
    for by_touch in [false, true] {
        let mut t = FlowTable::with_capacity(64);
        let mut same = same_pair(&t, 24).into_iter();
        // An established flow with a 7-day timeout, last seen at t = 0...
        let k = same.next().unwrap();
        let week = 7 * 86_400_000;
        let first = if by_touch { 10_000 } else { week };
        let long = Entry { key: k, backend: 100, state: FlowState::Established, expires_ms: first };
        let slot = t.insert(long, k.hash(), 0, &mut |_| panic!("room left"));
        if by_touch {
            t.touch(slot, FlowState::Established, week, 0);
        }
        // ...and 15 live SYNs five hours later.
        let now = 5 * 3_600_000;
        for n in 0..15u32 {
            let k = same.next().unwrap();
            let e = Entry { key: k, backend: n, state: FlowState::SynSeen, expires_ms: now + 10_000 };
            t.insert(e, k.hash(), now - 1_000, &mut |_| panic!("room left"));
        }
        let k = same.next().unwrap();
        let e = Entry { key: k, backend: 200, state: FlowState::SynSeen, expires_ms: now + 10_000 };
        let mut gone = None;
        t.insert(e, k.hash(), now, &mut |e| gone = Some(e));
        assert_eq!(gone, Some(100), "idle for 5 h: evicted before live SYNs");
        // Its rank looks stale, but its entry says live: counted as an
        // established flow evicted, not as an expired one.
        let s = t.stats();
        assert_eq!((s.expired, s.evicted_established, s.evicted_unconfirmed), (0, 1, 0), "touch: {by_touch}");
    }
}

#[test]
fn victims_expired_a_rank_unit_ago_count_as_expired_pinned_or_not() {
    // Two tables alike but for one thing: in the second, an entry in
    // another bucket was pinned at the rank horizon, so the insert must
    // read its victims' entries instead of trusting their ranks.
    for pin in [false, true] {
        let mut t = FlowTable::with_capacity(64);
        let mut same = same_pair(&t, 24).into_iter();
        if pin {
            let (b1, b2, _) = t.place(same_pair(&t, 1)[0].hash());
            let apart = |k: &FlowKey| {
                let (c1, c2, _) = t.place(k.hash());
                ![b1, b2].contains(&c1) && ![b1, b2].contains(&c2)
            };
            let k = (0..).map(key).find(apart).unwrap();
            let e = Entry { key: k, backend: 1, state: FlowState::Established, expires_ms: u64::MAX };
            t.insert(e, k.hash(), 0, &mut |_| panic!("room left"));
        }
        // 16 SYNs (the pair's every slot) due at 2 s; established at 60 s.
        for n in 0..16u32 {
            let k = same.next().unwrap();
            let (state, exp) =
                if n < 8 { (FlowState::SynSeen, 2_000) } else { (FlowState::Established, 60_000) };
            t.insert(Entry { key: k, backend: n, state, expires_ms: exp }, k.hash(), 0, &mut |_| {
                panic!("room left")
            });
        }
        // At 10 s the SYNs' ranks are units in the past: expired.
        let mut gone = Vec::new();
        for _ in 0..8 {
            let k = same.next().unwrap();
            let e = Entry { key: k, backend: 99, state: FlowState::SynSeen, expires_ms: 13_000 };
            t.insert(e, k.hash(), 10_000, &mut |b| gone.push(b));
        }
        gone.sort();
        assert_eq!(gone, (0..8).collect::<Vec<_>>(), "pinned: {pin}");
        let s = t.stats();
        assert_eq!((s.expired, s.evicted_unconfirmed, s.evicted_established), (8, 0, 0), "pinned: {pin}");
    }
}

proptest::proptest! {
    /// The vector victim choice against the rule written plainly: the
    /// smallest (class, time left, candidate) over both buckets.
    #[test]
    fn the_victim_is_the_first_of_the_smallest_class_and_time_left(
        // Each candidate's time left (mostly live, often tied, some
        // stale) and class bit, around any clock.
        lefts in proptest::array::uniform16(proptest::prop_oneof![
            6 => 1u16..0x4000,
            3 => 1u16..4,
            1 => 0x4000u16..0x8000,
            1 => proptest::strategy::Just(0u16),
        ]),
        established in proptest::array::uniform16(proptest::prelude::any::<bool>()),
        now_ms in proptest::prelude::any::<u64>(),
    ) {
        let mut ranks = [0u16; 2 * BUCKET_SLOTS];
        for i in 0..2 * BUCKET_SLOTS {
            let established = if established[i] { RANK_ESTABLISHED } else { 0 };
            ranks[i] = (rank_now(now_ms).wrapping_add(lefts[i]) & RANK_MASK) | established;
        }
        let mut t = FlowTable::with_capacity(64);
        let (b1, b2) = (1, 5);
        t.sigs[b1].rank.copy_from_slice(&ranks[..BUCKET_SLOTS]);
        t.sigs[b2].rank.copy_from_slice(&ranks[BUCKET_SLOTS..]);
        let now = rank_now(now_ms);
        let order = |i: usize| {
            let r = ranks[i];
            let left = rank_left(r, now);
            let class = if left == 0 || left >= 0x4000 {
                0
            } else if r & RANK_ESTABLISHED != 0 {
                2
            } else {
                1
            };
            (class, if class == 0 { 0 } else { left }, i)
        };
        let i = (0..2 * BUCKET_SLOTS).min_by_key(|&i| order(i)).unwrap();
        let want = if i < BUCKET_SLOTS { b1 * BUCKET_SLOTS + i } else { b2 * BUCKET_SLOTS + i - BUCKET_SLOTS };
        proptest::prop_assert_eq!(t.victim(b1, b2, now_ms), want);
    }
}

#[test]
fn departing_entries_name_their_backend_after_moves_and_rebinds() {
    // Filled past 90%, so inserts move entries to their other bucket and
    // the last ones evict; every flow that leaves must report its own
    // backend (kept beside the entry, not read from it, on eviction).
    let mut t = FlowTable::with_capacity(1024);
    let mut live = std::collections::BTreeSet::new();
    for i in 0..1000u32 {
        let k = key(i);
        let e = Entry { key: k, backend: 7_000 + i, state: FlowState::Established, expires_ms: 1_000 };
        t.insert(e, k.hash(), 0, &mut |b| assert!(live.remove(&b), "{b} left twice"));
        live.insert(7_000 + i);
    }
    assert_eq!(t.len(), live.len());
    assert!(t.stats().evicted_established > 0);
    // Rebind a flow: it must then leave as its new backend.
    let (k, slot) = (0..1000).map(key).find_map(|k| Some((k, t.lookup(&k, k.hash(), 0)?))).unwrap();
    let mut old = Vec::new();
    t.rebind(slot, 1, &mut |b| old.push(b));
    assert_eq!(old, [7_000 + k.src_port as u32]);
    live.remove(&old[0]);
    live.insert(1);
    let mut gone = std::collections::BTreeSet::new();
    assert_eq!(t.sweep(2_000, t.capacity(), &mut |b| assert!(gone.insert(b))), live.len());
    assert_eq!(gone, live);
}

#[test]
fn sweep_frees_exactly_the_expired_entries() {
    // Expiries on sub-second, second and multi-hour scales, some beyond
    // the rank horizon (4 h) and beyond a turn of the rank circle (9.3 h).
    let mut t = FlowTable::with_capacity(4096);
    let mut live = std::collections::BTreeMap::new();
    for i in 0..2000u32 {
        let k = key(i);
        let exp = match i % 4 {
            0 => 1 + (i as u64 * 37) % 3_000,
            1 => 1_000 * (i as u64 % 20),
            2 => 5 * 3_600_000 + i as u64,
            _ => 10 * 3_600_000 + 7 * i as u64,
        };
        let e = Entry { key: k, backend: i, state: FlowState::Established, expires_ms: exp };
        t.insert(e, k.hash(), 0, &mut |_| panic!("room left"));
        live.insert(i, exp);
    }
    // A worker sweeps the whole table many times a minute; here once per
    // step, at times that fall inside rank units (1.024 s) too.
    let mut now = 0;
    while now < 11 * 3_600_000 {
        now += if now < 30_000 { 317 } else { 59_999 };
        let mut gone = Vec::new();
        t.sweep(now, t.capacity(), &mut |e| gone.push(e));
        gone.sort();
        let want: Vec<u32> = live.iter().filter(|(_, &exp)| exp <= now).map(|(&i, _)| i).collect();
        assert_eq!(gone, want, "swept at {now} ms");
        live.retain(|_, exp| *exp > now);
        assert_eq!(t.len(), live.len());
    }
    assert!(live.is_empty());
}

#[test]
fn burst_lookup_matches_single_lookups() {
    let mut t = FlowTable::with_capacity(4096);
    // More than one batch of LOOKUP_BURST.
    let keys: Vec<FlowKey> = (0..150).map(key).collect();
    let hashes: Vec<u64> = keys.iter().map(|k| k.hash()).collect();
    for (i, k) in keys.iter().enumerate().step_by(2) {
        t.insert(
            Entry { key: *k, backend: i as u32, state: FlowState::Udp, expires_ms: 1000 },
            hashes[i],
            0,
            &mut |_| {},
        );
    }
    let mut out = [Some(usize::MAX); 150];
    t.lookup_burst(&keys, &hashes, 10, &mut out, &NoPrefetch);
    for i in 0..150 {
        assert_eq!(out[i].is_some(), i % 2 == 0);
        assert_eq!(out[i], t.lookup(&keys[i], hashes[i], 10));
    }
}
