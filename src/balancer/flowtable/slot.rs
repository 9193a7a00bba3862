//! How the flow table stores a flow: 32-byte slots, two to a 64-byte line.
//!
//! - An IPv4 flow takes one slot, its whole key inline.
//! - An IPv6 flow takes an aligned pair of slots, one whole line: the head
//!   (even) slot as an IPv4 flow's, less the addresses, and the next slot
//!   with the two addresses. A lookup of either family reads one line.
//!
//! The head slot's words:
//!
//! | word | bits | holds |
//! |---|---|---|
//! | 0 | 0–31, 32–63 | IPv4: source and destination address (0 for IPv6) |
//! | 1 | 0–15, 16–31, 32–39 | source port, destination port, protocol |
//! | 1 | 40 | IPv6 (its addresses are in the next slot) |
//! | 2 | 0–31, 32–39 | the backend's stable id, the flow's [`FlowState`] |
//! | 3 | all | expiry, ms |
//!
//! Words 0 and 1 are the key as stored ([`Packed`]): one compare each,
//! where the full 37-byte key took three 128-bit ones. The backend and the
//! state, which the established path reads together, share a word.

use super::{Entry, FlowState};
use crate::balancer::flow::FlowKey;

/// One 32-byte slot (see the module docs for its words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(32))]
pub(super) struct Slot {
    pub w: [u64; 4],
}

/// Two slots, one cache line: the table allocates lines, so each even slot
/// starts one, and reads them as slots (`bytemuck::cast_slice`).
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub(super) struct Line(pub [Slot; 2]);

/// Word 1: set for an IPv6 flow.
pub(super) const V6: u64 = 1 << 40;
/// Word 2: where the state is.
const STATE_SHIFT: u32 = 32;
/// The first 12 bytes of an IPv4-mapped address (how [`FlowKey`] holds IPv4).
const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// A key as a head slot stores it ([`pack`]), computed once per lookup or
/// insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Packed {
    /// Word 0: an IPv4 key's addresses, 0 for IPv6.
    addrs: u64,
    /// Word 1: ports, protocol, family.
    tail: u64,
}

impl Packed {
    /// An IPv4 key: its addresses as little-endian loads of their four
    /// bytes, ports in host order.
    #[inline(always)]
    fn v4(src: u32, dst: u32, src_port: u16, dst_port: u16, proto: u8) -> Packed {
        Packed {
            addrs: src as u64 | (dst as u64) << 32,
            tail: src_port as u64 | (dst_port as u64) << 16 | (proto as u64) << 32,
        }
    }

    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.tail & V6 != 0
    }
}

#[inline(always)]
fn word(b: &[u8; 16], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// An IPv4-mapped address's last four bytes.
#[inline(always)]
fn v4_addr(b: &[u8; 16]) -> u32 {
    u32::from_le_bytes([b[12], b[13], b[14], b[15]])
}

/// `key` as stored: IPv4 where its destination is IPv4-mapped, as
/// [`FlowKey::is_v4`] and flow sync have it (a packet's two addresses are
/// of one family).
#[inline(always)]
pub(super) fn pack(key: &FlowKey) -> Packed {
    let v4 = key.is_v4();
    let p = Packed::v4(v4_addr(&key.src), v4_addr(&key.dst), key.src_port, key.dst_port, key.proto);
    if v4 {
        p
    } else {
        Packed { addrs: 0, tail: p.tail | V6 }
    }
}

impl Slot {
    /// A head slot.
    #[inline(always)]
    pub fn head(p: &Packed, backend: u32, state: FlowState, expires_ms: u64) -> Slot {
        Slot { w: [p.addrs, p.tail, backend as u64 | (state as u64) << STATE_SHIFT, expires_ms] }
    }

    /// The slot after an IPv6 flow's head: its two addresses.
    #[inline(always)]
    pub fn addresses(key: &FlowKey) -> Slot {
        Slot { w: [word(&key.src, 0), word(&key.src, 8), word(&key.dst, 0), word(&key.dst, 8)] }
    }

    /// Whether this head slot holds key `p` (for IPv6, the next slot must
    /// hold its addresses too: [`Slot::holds_addresses`]).
    #[inline(always)]
    pub fn holds(&self, p: &Packed) -> bool {
        (self.w[0] ^ p.addrs) | (self.w[1] ^ p.tail) == 0
    }

    #[inline(always)]
    pub fn holds_addresses(&self, key: &FlowKey) -> bool {
        *self == Slot::addresses(key)
    }

    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.w[1] & V6 != 0
    }

    #[inline(always)]
    pub fn state_byte(&self) -> u8 {
        (self.w[2] >> STATE_SHIFT) as u8
    }

    /// (A table, not a match: the match compiled to a chain of tests.)
    #[inline(always)]
    pub fn state(&self) -> FlowState {
        const BY_BYTE: [FlowState; 8] = [
            FlowState::Other,
            FlowState::SynSeen,
            FlowState::Established,
            FlowState::Closing,
            FlowState::Udp,
            FlowState::Other,
            FlowState::SynRetried,
            FlowState::Other,
        ];
        BY_BYTE[self.state_byte() as usize & 7]
    }

    #[inline(always)]
    pub fn set(&mut self, state: FlowState, expires_ms: u64) {
        self.w[2] = self.w[2] as u32 as u64 | (state as u64) << STATE_SHIFT;
        self.w[3] = expires_ms;
    }

    #[inline(always)]
    pub fn backend(&self) -> u32 {
        self.w[2] as u32
    }

    #[inline(always)]
    pub fn set_backend(&mut self, backend: u32) {
        self.w[2] = (self.w[2] >> 32 << 32) | backend as u64;
    }

    #[inline(always)]
    pub fn expires_ms(&self) -> u64 {
        self.w[3]
    }

    /// The flow in this head slot; `addresses` is the next slot, read only
    /// for IPv6.
    pub fn unpack(&self, addresses: &Slot) -> Entry {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if self.v6() {
            for (i, w) in addresses.w.iter().enumerate() {
                let to =
                    if i < 2 { &mut src[i * 8..i * 8 + 8] } else { &mut dst[(i - 2) * 8..(i - 2) * 8 + 8] };
                to.copy_from_slice(&w.to_ne_bytes());
            }
        } else {
            src[..12].copy_from_slice(&MAPPED);
            dst[..12].copy_from_slice(&MAPPED);
            src[12..].copy_from_slice(&(self.w[0] as u32).to_le_bytes());
            dst[12..].copy_from_slice(&((self.w[0] >> 32) as u32).to_le_bytes());
        }
        let t = self.w[1];
        Entry {
            key: FlowKey { src, dst, src_port: t as u16, dst_port: (t >> 16) as u16, proto: (t >> 32) as u8 },
            backend: self.backend(),
            expires_ms: self.expires_ms(),
            state: self.state(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_half_a_line_and_keys_come_back_whole() {
        assert_eq!((std::mem::size_of::<Slot>(), std::mem::align_of::<Slot>()), (32, 32));
        let keys = [
            FlowKey::new("198.18.0.2".parse().unwrap(), "198.18.100.1".parse().unwrap(), 6, 40000, 80),
            FlowKey::new("2001:db8::2".parse().unwrap(), "2001:db8:100::1".parse().unwrap(), 17, 1, 65535),
            FlowKey::new("2001:db8::2".parse().unwrap(), "2001:db8::1".parse().unwrap(), 1, 0, 0),
        ];
        for (i, k) in keys.iter().enumerate() {
            let p = pack(k);
            assert_eq!(p.v6(), i > 0, "{k:?}");
            let states = [FlowState::SynSeen, FlowState::Established, FlowState::Closing];
            for (n, state) in states.into_iter().enumerate() {
                let head = Slot::head(&p, 70_000 + n as u32, state, 1 << 40);
                let addrs = if p.v6() { Slot::addresses(k) } else { Slot::default() };
                assert!(head.holds(&p) && (!p.v6() || addrs.holds_addresses(k)));
                let e = head.unpack(&addrs);
                assert_eq!(
                    (e.key, e.backend, e.state, e.expires_ms),
                    (*k, 70_000 + n as u32, state, 1 << 40)
                );
            }
            let mut other = *k;
            other.src_port ^= 1;
            assert!(!Slot::head(&p, 1, FlowState::Udp, 0).holds(&pack(&other)));
        }
    }
}
