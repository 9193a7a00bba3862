//! The fixed hashes behind the cross-box decisions that are not per packet
//! (Maglev permutations, source-ip affinity, persistence slots), and the
//! finaliser the per-packet flow hash (`FlowKey::hash`) ends with. They depend
//! on nothing but their input and a documented seed, so every l4lb box,
//! process and release computes the same value. Specified in `docs/maglev.md`.

/// Seeds (ASCII tags, read as big-endian integers).
pub const SEED_MAGLEV_OFFSET: u64 = u64::from_be_bytes(*b"l4lboffs");
pub const SEED_MAGLEV_SKIP: u64 = u64::from_be_bytes(*b"l4lbskip");
pub const SEED_SOURCE: u64 = u64::from_be_bytes(*b"l4lbsrce");

const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: a bijective avalanche mix.
#[inline(always)]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Hashes 64-bit words: `h = seed ^ (n * K)`, then `h = fmix64(h ^ w)` for
/// each word, then `fmix64(h)`.
#[inline(always)]
pub fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed ^ (words.len() as u64).wrapping_mul(K);
    for &w in words {
        h = fmix64(h ^ w);
    }
    fmix64(h)
}

/// Hashes bytes: split into 8-byte little-endian words, the last one padded
/// with zero bytes, then [`hash_words`] — with the word count replaced by the
/// byte length so `[1]` and `[1, 0]` differ.
pub fn hash_bytes(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed ^ (data.len() as u64).wrapping_mul(K);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        h = fmix64(h ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = fmix64(h ^ u64::from_le_bytes(last));
    }
    fmix64(h)
}

/// Maps a hash uniformly onto `0..n` without a division (Lemire's
/// multiply-shift on the hash's high 32 bits).
#[inline(always)]
pub fn reduce(h: u64, n: u32) -> u32 {
    (((h >> 32) * n as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed of the published test vectors (docs/maglev.md §1).
    const SEED_FLOW: u64 = u64::from_be_bytes(*b"l4lbflow");

    const FMIX64_OF_1: u64 = 0xb456_bcfc_34c2_cb2c;
    const HASH_EMPTY: u64 = 0x97d9_aa14_dd09_4825;
    const HASH_L4LB: u64 = 0xec09_19a6_3b27_2fd7;
    const HASH_WORDS_1_2: u64 = 0x10ac_9865_8a01_82c0;

    #[test]
    fn test_vectors() {
        // Published in docs/maglev.md; a change here breaks cross-box consistency.
        assert_eq!(fmix64(1), FMIX64_OF_1);
        assert_eq!(hash_bytes(SEED_FLOW, b""), HASH_EMPTY);
        assert_eq!(hash_bytes(SEED_FLOW, b"l4lb"), HASH_L4LB);
        assert_eq!(hash_words(SEED_FLOW, &[1, 2]), HASH_WORDS_1_2);
        assert_ne!(hash_bytes(0, &[1]), hash_bytes(0, &[1, 0]));
    }

    #[test]
    fn reduce_is_in_range_and_spread() {
        let n = 65537;
        let mut seen = vec![0u32; 16];
        for i in 0..100_000u64 {
            let r = reduce(hash_words(1, &[i]), n);
            assert!(r < n);
            seen[(r as usize * 16) / n as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (5500..7000).contains(&c)), "{seen:?}");
    }
}
