//! Receive-side scaling as a NIC computes it, so `l4lb simulate --workers`
//! can spread a capture over workers the way the hardware would: the
//! Toeplitz hash over the packet's addresses (and TCP/UDP ports), and a
//! redirection table from the hash's low bits to a queue.
//!
//! The key is DPDK's default (the 40-byte key most PMDs program when none is
//! given); the fields are what l4lb asks for (IPv4/IPv6 addresses, TCP/UDP
//! ports; fragments and other protocols by addresses only); the redirection
//! table has 128 entries, entry i naming queue i mod N, as most drivers set it.
//! A device may differ (net_tap's kernel driver picks queues by its own hash):
//! nothing in l4lb may depend on which worker a packet reaches.

use crate::net::{ethernet, ipv4, ipv6, proto};

/// DPDK's default RSS key.
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0,
    0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42,
    0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Entries of the redirection table.
pub const RETA_SIZE: usize = 128;

/// The Toeplitz hash of `input` under `key`: for every set bit of the input
/// (most significant first), the 32 key bits starting at that bit's position
/// are XORed in. Input bits past the key's 32nd-from-last count as if the
/// key were padded with zeros.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |i: usize| key.get(i / 8).map_or(0, |b| (b >> (7 - i % 8)) & 1) as u32;
    let mut window = (0..32).fold(0u32, |w, i| w << 1 | key_bit(i));
    let mut hash = 0u32;
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = window << 1 | key_bit(32 + i * 8 + bit);
        }
    }
    hash
}

/// What a NIC hashes of an Ethernet frame: source and destination address,
/// then source and destination port for TCP and UDP that are not fragments.
/// Empty for what is not IP (the NIC's hash is then 0).
pub fn hash_input(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    let Ok(f) = ethernet::Frame::new_checked(frame) else { return out };
    let p = f.payload();
    let l4: Option<(u8, &[u8])> = match f.ethertype() {
        ethernet::ETHERTYPE_IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(p) else { return out };
            out.extend_from_slice(&ip.src().octets());
            out.extend_from_slice(&ip.dst().octets());
            let (from, to) = (ip.header_len(), ip.total_len());
            (!ip.is_fragment()).then(|| (ip.protocol(), &p[from..to]))
        }
        ethernet::ETHERTYPE_IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(p) else { return out };
            out.extend_from_slice(&ip.src().octets());
            out.extend_from_slice(&ip.dst().octets());
            let to = ip.total_len();
            match ip.upper() {
                Ok(u) if u.fragment.is_none() && u.offset <= to => Some((u.protocol, &p[u.offset..to])),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some((next, l4)) = l4 {
        if (next == proto::TCP || next == proto::UDP) && l4.len() >= 4 {
            out.extend_from_slice(&l4[..4]);
        }
    }
    out
}

/// The queue of `queues` a frame goes to under `key`.
pub fn queue_of(key: &[u8], frame: &[u8], queues: usize) -> usize {
    let h = toeplitz(key, &hash_input(frame));
    (h as usize % RETA_SIZE) % queues.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification vectors (the "Verifying the RSS Hash
    /// Calculation" suite), which NIC vendors and DPDK's own tests use.
    #[test]
    fn the_published_toeplitz_vectors() {
        let v4 = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| {
            let mut a = [s, d].concat();
            let two = toeplitz(&DEFAULT_KEY, &a);
            a.extend_from_slice(&sp.to_be_bytes());
            a.extend_from_slice(&dp.to_be_bytes());
            (two, toeplitz(&DEFAULT_KEY, &a))
        };
        assert_eq!(v4([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766), (0x323e8fc2, 0x51ccc178));
        assert_eq!(v4([199, 92, 111, 2], [65, 69, 140, 83], 14230, 4739), (0xd718262a, 0xc626b0ea));
        assert_eq!(v4([24, 19, 198, 95], [12, 22, 207, 184], 12898, 38024), (0xd2d0a5de, 0x5c2b394a));
        let v6 = |s: &str, d: &str, sp: u16, dp: u16| {
            let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut a = [s.octets(), d.octets()].concat();
            let two = toeplitz(&DEFAULT_KEY, &a);
            a.extend_from_slice(&sp.to_be_bytes());
            a.extend_from_slice(&dp.to_be_bytes());
            (two, toeplitz(&DEFAULT_KEY, &a))
        };
        assert_eq!(v6("3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794, 1766), (0x2cc18cd5, 0x40207d3d));
    }

    #[test]
    fn a_frame_is_hashed_on_its_addresses_and_ports() {
        let f = crate::dataplane::testframes::tcp(7, false, 0x10);
        let input = hash_input(&f);
        assert_eq!(input.len(), 12);
        assert_eq!(&input[4..8], &[198, 18, 100, 1], "the destination address second");
        assert_eq!(&input[10..12], &80u16.to_be_bytes(), "the destination port last");
        let f6 = crate::dataplane::testframes::udp(7, true);
        assert_eq!(hash_input(&f6).len(), 36);
        assert!(hash_input(&[0u8; 10]).is_empty());
        // The same flow, the same queue; flows spread over the queues.
        let q = |flow| queue_of(&DEFAULT_KEY, &crate::dataplane::testframes::tcp(flow, false, 0x10), 4);
        assert_eq!(q(7), q(7));
        let mut seen = [0usize; 4];
        for flow in 0..4000 {
            seen[q(flow)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
