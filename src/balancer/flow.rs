//! Flow keys: what names a flow, and how one is taken from a packet.
//!
//! - TCP and UDP: the 5-tuple (source, destination, ports, protocol).
//! - ICMP errors (destination unreachable incl. frag-needed, packet-too-big,
//!   time exceeded, parameter problem): the embedded packet's 5-tuple,
//!   reversed. The embedded packet is one the backend sent (from the VIP to the
//!   client); reversed, it is the client's flow, so the error reaches the
//!   backend that owns the connection.
//! - IP fragments: the 3-tuple (source, destination, protocol) for every
//!   fragment, the first included, because later fragments carry no ports;
//!   the parse stage then puts the service's port in the key
//!   (`balancer::fragments`). All pieces of a datagram reach one backend, at
//!   the price that all fragmented traffic between one client and one
//!   service goes to one backend.
//! - Any other protocol (and ICMP echo): the 3-tuple.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::hash::fmix64;
use crate::net::{icmp, ipv4, ipv6, proto, tcp, ParseError};

/// A flow's identity. Addresses are 16 bytes; IPv4 uses the IPv4-mapped form
/// (`::ffff:a.b.c.d`). Ports are 0 in a 3-tuple.
///
/// Eight-byte aligned (40 bytes): keys are copied and compared as whole words.
#[derive(Debug, Clone, Copy, Eq, Default)]
#[repr(C, align(8))]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl PartialEq for FlowKey {
    /// Field by field, as derived, but without short cuts: three wide XORs
    /// and one test (no branch per field).
    #[inline(always)]
    fn eq(&self, o: &FlowKey) -> bool {
        let tail = |k: &FlowKey| (k.src_port as u64) | (k.dst_port as u64) << 16 | (k.proto as u64) << 32;
        ((u128::from_ne_bytes(self.src) ^ u128::from_ne_bytes(o.src))
            | (u128::from_ne_bytes(self.dst) ^ u128::from_ne_bytes(o.dst))
            | (tail(self) ^ tail(o)) as u128)
            == 0
    }
}

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.src, self.dst, self.src_port, self.dst_port, self.proto).hash(h)
    }
}

/// How the key was derived (for counters and for `lookup` explanations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    FiveTuple,
    /// Fragment of an IP datagram.
    Fragment,
    /// The reversed 5-tuple from an ICMP error's embedded packet.
    IcmpError,
    /// Protocol without ports.
    ThreeTuple,
}

/// An address's 16-byte identity: IPv6 as is, IPv4 in its mapped form (the
/// form flow keys, service lookups and Maglev backend identities use).
pub fn ip16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => mapped(v4),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn mapped(a: Ipv4Addr) -> [u8; 16] {
    mapped_bytes(&a.octets())
}

/// `::ffff:a.b.c.d` from the 4 address bytes.
#[inline(always)]
pub fn mapped_bytes(b: &[u8; 4]) -> [u8; 16] {
    // Built as one 128-bit value: whole-word stores, which the word loads of
    // the hashes and key compares that follow can forward from (byte-wise
    // stores read back as words stall the pipeline).
    ((0xffff_u128 << 80) | (u32::from_le_bytes(*b) as u128) << 96).to_le_bytes()
}

#[inline(always)]
fn addr4(h: &[u8], at: usize) -> [u8; 16] {
    mapped_bytes(&[h[at], h[at + 1], h[at + 2], h[at + 3]])
}

impl FlowKey {
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey { src: ip16(src), dst: ip16(dst), src_port, dst_port, proto }
    }

    pub fn is_v4(&self) -> bool {
        self.dst[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }

    pub fn src_ip(&self) -> IpAddr {
        to_ip(&self.src)
    }

    pub fn dst_ip(&self) -> IpAddr {
        to_ip(&self.dst)
    }

    /// The flow hash (docs/maglev.md §2), the one value every box derives
    /// from a flow: the Maglev entry of a new flow, the flow-table placement,
    /// and the entropy in GUE source ports and IPv6 flow labels. With `s0`,
    /// `s1`, `d0`, `d1` the addresses' bytes 0..8 and 8..16 read
    /// little-endian and `t` the little-endian reading of
    /// `[sport BE (2), dport BE (2), proto, 0, 0, 0]`:
    /// `x = (s0 ^ rotl(s1, 32)) * K1 ^ (d0 ^ rotl(d1, 32)) * K2 ^ t * K3`,
    /// then `fmix64(x)` — three independent multiplies and one finaliser, so
    /// the parse computes it once per packet and a new flow needs no second
    /// hash (the chained five-word hash it replaced cost a SYN flood 6–13% of
    /// its rate, docs/benchmarks.md).
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
        };
        let sp = self.src_port.to_be_bytes();
        let dp = self.dst_port.to_be_bytes();
        let tail = u64::from_le_bytes([sp[0], sp[1], dp[0], dp[1], self.proto, 0, 0, 0]);
        let a = w(&self.src, 0) ^ w(&self.src, 8).rotate_left(32);
        let b = w(&self.dst, 0) ^ w(&self.dst, 8).rotate_left(32);
        flow_mix(a, b, tail)
    }
}

/// The multipliers of the flow hash (docs/maglev.md §2).
const FLOW_K1: u64 = 0x9e37_79b9_7f4a_7c15;
const FLOW_K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const FLOW_K3: u64 = 0x1656_67b1_9e37_79f9;

#[inline(always)]
fn flow_mix(a: u64, b: u64, tail: u64) -> u64 {
    fmix64(a.wrapping_mul(FLOW_K1) ^ b.wrapping_mul(FLOW_K2) ^ tail.wrapping_mul(FLOW_K3))
}

/// [`FlowKey::hash`] of an IPv4 TCP/UDP key, straight from the header's
/// words as they sit in the packet (each read little-endian): `src` and `dst`
/// the address bytes, `ports` the four port bytes. For the mapped address
/// `::ffff:a.b.c.d` the first word is 0 and the second, rotated, is
/// `0xffff << 48 | abcd`, so the same value comes out without building the key.
#[inline(always)]
pub fn hash_v4(src: u32, dst: u32, ports: u32, proto: u8) -> u64 {
    const MAPPED: u64 = 0xffff << 48;
    flow_mix(MAPPED | src as u64, MAPPED | dst as u64, ports as u64 | (proto as u64) << 32)
}

fn to_ip(b: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The key of an IPv4 packet (`ip` starts at the IPv4 header).
#[inline]
pub fn key_v4(ip: &ipv4::Packet<&[u8]>) -> Result<(FlowKey, KeyKind), ParseError> {
    let h = ip.header();
    let (src, dst, p) = (addr4(h, 12), addr4(h, 16), ip.protocol());
    if ip.is_fragment() {
        return Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::Fragment));
    }
    let l4 = ip.payload();
    match p {
        proto::TCP | proto::UDP => {
            let (sp, dp) = tcp::ports(l4).ok_or(ParseError::Truncated)?;
            Ok((FlowKey { src, dst, src_port: sp, dst_port: dp, proto: p }, KeyKind::FiveTuple))
        }
        proto::ICMP => {
            let m = icmp::Message::new_checked(l4)?;
            if !m.is_v4_error() {
                return Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::ThreeTuple));
            }
            // Embedded: IPv4 header + at least 8 bytes; its total length may
            // exceed what was quoted, so check only the header.
            let inner = m.body();
            if inner.len() < ipv4::MIN_HEADER_LEN || inner[0] >> 4 != 4 {
                return Err(ParseError::Malformed);
            }
            let ihl = (inner[0] & 0x0f) as usize * 4;
            if ihl < ipv4::MIN_HEADER_LEN || inner.len() < ihl + 4 {
                return Err(ParseError::Truncated);
            }
            let ip_at = |o: usize| Ipv4Addr::new(inner[o], inner[o + 1], inner[o + 2], inner[o + 3]);
            let (isrc, idst, ip_proto) = (ip_at(12), ip_at(16), inner[9]);
            let (sp, dp) = match ip_proto {
                proto::TCP | proto::UDP => tcp::ports(&inner[ihl..]).ok_or(ParseError::Truncated)?,
                _ => (0, 0),
            };
            Ok((
                FlowKey { src: mapped(idst), dst: mapped(isrc), src_port: dp, dst_port: sp, proto: ip_proto },
                KeyKind::IcmpError,
            ))
        }
        _ => Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::ThreeTuple)),
    }
}

/// The key of an IPv6 packet, given its walked extension chain.
pub fn key_v6(ip: &ipv6::Packet<&[u8]>, upper: &ipv6::Upper) -> Result<(FlowKey, KeyKind), ParseError> {
    let (src, dst) = (ip.src().octets(), ip.dst().octets());
    let p = upper.protocol;
    if upper.fragment.is_some() {
        return Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::Fragment));
    }
    let l4 = &ip.payload()[upper.offset - ipv6::HEADER_LEN..];
    match p {
        proto::TCP | proto::UDP => {
            let (sp, dp) = tcp::ports(l4).ok_or(ParseError::Truncated)?;
            Ok((FlowKey { src, dst, src_port: sp, dst_port: dp, proto: p }, KeyKind::FiveTuple))
        }
        proto::ICMPV6 => {
            let m = icmp::Message::new_checked(l4)?;
            if !m.is_v6_error() {
                return Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::ThreeTuple));
            }
            let inner = m.body();
            if inner.len() < ipv6::HEADER_LEN || inner[0] >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            let isrc: [u8; 16] = inner[8..24].try_into().map_err(|_| ParseError::Truncated)?;
            let idst: [u8; 16] = inner[24..40].try_into().map_err(|_| ParseError::Truncated)?;
            // Only a plain upper header is followed in a quoted packet.
            let ip_proto = inner[6];
            let (sp, dp) = match ip_proto {
                proto::TCP | proto::UDP => {
                    tcp::ports(&inner[ipv6::HEADER_LEN..]).ok_or(ParseError::Truncated)?
                }
                _ => (0, 0),
            };
            Ok((
                FlowKey { src: idst, dst: isrc, src_port: dp, dst_port: sp, proto: ip_proto },
                KeyKind::IcmpError,
            ))
        }
        _ => Ok((FlowKey { src, dst, proto: p, ..Default::default() }, KeyKind::ThreeTuple)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v4_header_hash_is_the_key_hash() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (s, d, ports, proto) = (x as u32, (x >> 32) as u32, x.rotate_left(17) as u32, (x >> 8) as u8);
            let pb = ports.to_le_bytes();
            let key = FlowKey {
                src: mapped_bytes(&s.to_le_bytes()),
                dst: mapped_bytes(&d.to_le_bytes()),
                src_port: u16::from_be_bytes([pb[0], pb[1]]),
                dst_port: u16::from_be_bytes([pb[2], pb[3]]),
                proto,
            };
            assert_eq!(hash_v4(s, d, ports, proto), key.hash());
            // The word-wise compare sees a one-bit change in every field.
            let bit = (x % 8) as u8;
            let changes: [fn(&mut FlowKey, u8); 5] = [
                |k, b| k.src[15] ^= 1 << b,
                |k, b| k.dst[12] ^= 1 << b,
                |k, b| k.src_port ^= 1 << b,
                |k, b| k.dst_port ^= 0x100 << b,
                |k, b| k.proto ^= 1 << b,
            ];
            for change in changes {
                let mut other = key;
                change(&mut other, bit);
                assert_ne!(other, key);
            }
            let copy = key;
            assert_eq!(copy, key);
        }
    }

    #[test]
    fn the_flow_hash_is_the_documented_formula_for_both_families() {
        // docs/maglev.md §2, computed here from the bytes of the key with the
        // constants as printed there: what another implementation would
        // compute for the same flow.
        let spec = |k: &FlowKey| {
            let w = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
            let (sp, dp) = (k.src_port.to_be_bytes(), k.dst_port.to_be_bytes());
            let t = u64::from_le_bytes([sp[0], sp[1], dp[0], dp[1], k.proto, 0, 0, 0]);
            let a = w(&k.src, 0) ^ w(&k.src, 8).rotate_left(32);
            let b = w(&k.dst, 0) ^ w(&k.dst, 8).rotate_left(32);
            fmix64(
                a.wrapping_mul(0x9e3779b97f4a7c15)
                    ^ b.wrapping_mul(0xc2b2ae3d27d4eb4f)
                    ^ t.wrapping_mul(0x165667b19e3779f9),
            )
        };
        let mut x = 0x0fed_cba9_8765_4321u64;
        for i in 0..10_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v4 = |v: u64| IpAddr::V4(Ipv4Addr::from(v as u32));
            let v6 = |v: u64| IpAddr::V6(Ipv6Addr::from((v as u128) << 64 | v.rotate_left(9) as u128));
            let (s, d) = if i % 2 == 0 { (v4(x), v4(x >> 32)) } else { (v6(x), v6(x ^ 0x55)) };
            let k = FlowKey::new(s, d, (x >> 40) as u8, (x >> 8) as u16, (x >> 24) as u16);
            assert_eq!(k.hash(), spec(&k), "{k:?}");
        }
        // An IPv6 source whose first eight bytes are zero (::a.b.c.d style).
        let k = FlowKey::new("::5".parse().unwrap(), "2001:db8::1".parse().unwrap(), 17, 1, 2);
        assert_eq!(k.hash(), spec(&k));
    }

    #[test]
    fn flow_hash_test_vectors() {
        // Published in docs/maglev.md §2; a change here breaks cross-box consistency.
        let v4 = FlowKey::new("198.18.0.2".parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, 40000, 80);
        let v6 =
            FlowKey::new("2001:db8::2".parse().unwrap(), "2001:db8:100::1".parse().unwrap(), 17, 5353, 53);
        assert_eq!(format!("{:016x}", v4.hash()), "46a8f5c1f28f94c0");
        assert_eq!(format!("{:016x}", v6.hash()), "b4803ab47e2a4b9c");
    }

    #[test]
    fn v4_mapping_and_hash_is_stable() {
        let k = FlowKey::new("198.18.0.2".parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, 40000, 80);
        assert!(k.is_v4());
        assert_eq!(k.src_ip(), "198.18.0.2".parse::<IpAddr>().unwrap());
        let k6 =
            FlowKey::new("2001:db8::2".parse().unwrap(), "2001:db8:100::1".parse().unwrap(), 6, 40000, 80);
        assert!(!k6.is_v4());
        assert_ne!(k.hash(), k6.hash());
        let mut k2 = k;
        k2.src_port += 1;
        assert_ne!(k.hash(), k2.hash());
    }
}
