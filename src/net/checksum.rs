//! The Internet checksum (RFC 1071): full computation over bytes, pseudo-header
//! sums for IPv4 and IPv6, and RFC 1624 incremental updates.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to a running one's-complement sum (not yet folded). Bytes are
/// taken as big-endian 16-bit words; an odd last byte is padded with zero.
#[inline]
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    // 32-bit big-endian words summed into 64 bits: since 2^16 = 1 in one's
    // complement arithmetic, folding the total gives the 16-bit sum, and no
    // carry is lost below 2^32 words.
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 4];
    last[..rest.len()].copy_from_slice(rest);
    sum + u32::from_be_bytes(last) as u64
}

/// Folds a running sum into 16 bits (without the final complement). Four
/// fixed end-around-carry steps take any u64 down to 16 bits, without a loop.
#[inline]
pub fn fold(sum: u64) -> u16 {
    let s = (sum & 0xffff_ffff) + (sum >> 32); // < 2^33
    let s = (s & 0xffff) + (s >> 16); // < 2^17 + 2^16
    let s = (s & 0xffff) + (s >> 16); // <= 0xffff + 2
    let s = (s & 0xffff) + (s >> 16); // <= 0xffff
    s as u16
}

/// The checksum of `data`: the complement of its folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(add(0, data))
}

/// Sum of the IPv4 pseudo-header for a transport checksum.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    let s = add(add(0, &src.octets()), &dst.octets());
    s + proto as u64 + len as u64
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let s = add(add(0, &src.octets()), &dst.octets());
    s + (len >> 16) as u64 + (len & 0xffff) as u64 + next_header as u64
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered
/// data changes from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u64) + (!old as u64) + new as u64;
    !fold(sum)
}

/// As [`update16`] for a 32-bit field (an IPv4 address, say).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u64)
        + (!(old >> 16) as u16) as u64
        + (!(old as u16)) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(sum)
}

/// As [`update16`] for a run of bytes of equal length at an even offset.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // ~old summed word by word equals 0xffff * words - sum(old) in one's complement;
    // adding the complement of the folded old sum is equivalent.
    let sum = (!check as u64) + (!fold(add(0, old)) as u64) + fold(add(0, new)) as u64;
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2, checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
        let mut z = hdr;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn fold_matches_the_loop_for_extreme_sums() {
        let slow = |mut s: u64| {
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        for s in [
            0,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
            u64::MAX - 1,
            0xffff_0001_ffff,
        ] {
            assert_eq!(fold(s), slow(s), "{s:#x}");
        }
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = crate::balancer::hash::fmix64(x);
            assert_eq!(fold(x), slow(x));
            assert_eq!(fold(x >> 20), slow(x >> 20));
        }
    }

    #[test]
    fn odd_length() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    proptest! {
        #[test]
        fn incremental_equals_full_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            pos in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let words = data.len() / 2;
            let at = pos.index(words) * 2;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let inc = update16(before, old, new);
            // 0x0000 and 0xffff are the same value in one's complement.
            prop_assert!(inc == after || (inc == 0xffff && after == 0) || (inc == 0 && after == 0xffff),
                "inc {inc:#x} full {after:#x}");
        }

        #[test]
        fn incremental32_and_bytes_equal_full_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..200),
            pos in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let at = pos.index(data.len() / 2 - 1) * 2;
            let before = checksum(&data);
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let old_bytes = data[at..at + 4].to_vec();
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            for inc in [update32(before, old, new), update_bytes(before, &old_bytes, &new.to_be_bytes())] {
                prop_assert!(inc == after || (inc == 0xffff && after == 0) || (inc == 0 && after == 0xffff),
                    "inc {inc:#x} full {after:#x}");
            }
        }
    }
}
