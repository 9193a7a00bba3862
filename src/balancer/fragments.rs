//! Which service a datagram's later fragments belong to. Only the first
//! fragment carries the ports that name the service; a worker records
//! (source, destination, protocol, IP identification) → the service's port
//! from it, and the later fragments, which RSS brings to the same worker
//! (NICs hash fragments by addresses only), look it up. A later fragment
//! whose first was not seen (it came first, or its entry was overwritten)
//! goes to the VIP's lowest-port service of its protocol, as every
//! fragment did before there was a table, and is counted.
//!
//! Direct-mapped, fixed size, no allocation after creation, no clock: an
//! entry lives until another datagram's first fragment takes its slot. A
//! stale entry can only answer a datagram with the same addresses, protocol
//! and identification — one sent 65,536 datagrams later on IPv4.

use super::hash::{hash_words, SEED_SOURCE};

/// Slots of a worker's table unless told otherwise.
pub const DEFAULT_SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    src: u128,
    dst: u128,
    ident: u32,
    proto: u8,
    /// 0: empty.
    used: u8,
    /// The service's port (0: a service on every port).
    port: u16,
}

/// One worker's table.
#[derive(Debug, Clone)]
pub struct FragmentServices {
    slots: Box<[Slot]>,
}

impl Default for FragmentServices {
    fn default() -> Self {
        Self::with_slots(DEFAULT_SLOTS)
    }
}

impl FragmentServices {
    /// A table of `n` slots (rounded up to a power of two, at least 16).
    pub fn with_slots(n: usize) -> Self {
        FragmentServices { slots: vec![Slot::default(); n.max(16).next_power_of_two()].into_boxed_slice() }
    }
}

fn index(src: u128, dst: u128, ident: u32, proto: u8, slots: usize) -> usize {
    let w = [
        src as u64 ^ (src >> 64) as u64,
        dst as u64 ^ (dst >> 64) as u64,
        (ident as u64) << 8 | proto as u64,
    ];
    hash_words(SEED_SOURCE, &w) as usize & (slots - 1)
}

impl FragmentServices {
    /// A first fragment went to the service on `port`.
    #[inline]
    pub fn record(&mut self, src: &[u8; 16], dst: &[u8; 16], proto: u8, ident: u32, port: u16) {
        let (src, dst) = (u128::from_ne_bytes(*src), u128::from_ne_bytes(*dst));
        self.slots[index(src, dst, ident, proto, self.slots.len())] =
            Slot { src, dst, ident, proto, used: 1, port };
    }

    /// The port of the service the datagram's first fragment went to.
    #[inline]
    pub fn port_of(&self, src: &[u8; 16], dst: &[u8; 16], proto: u8, ident: u32) -> Option<u16> {
        let (src, dst) = (u128::from_ne_bytes(*src), u128::from_ne_bytes(*dst));
        let s = &self.slots[index(src, dst, ident, proto, self.slots.len())];
        (s.used == 1 && s.src == src && s.dst == dst && s.ident == ident && s.proto == proto)
            .then_some(s.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_fragment_names_the_service_of_its_datagram_only() {
        let mut t = FragmentServices::default();
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        assert_eq!(t.port_of(&a, &b, 17, 7), None);
        t.record(&a, &b, 17, 7, 5300);
        t.record(&a, &b, 17, 8, 53);
        assert_eq!(t.port_of(&a, &b, 17, 7), Some(5300));
        assert_eq!(t.port_of(&a, &b, 17, 8), Some(53));
        assert_eq!(t.port_of(&a, &b, 6, 7), None, "another protocol");
        assert_eq!(t.port_of(&c, &b, 17, 7), None, "another source");
        assert_eq!(t.port_of(&a, &c, 17, 7), None, "another destination");
        t.record(&a, &b, 17, 7, 0);
        assert_eq!(t.port_of(&a, &b, 17, 7), Some(0), "the datagram's newest first fragment");
    }
}
