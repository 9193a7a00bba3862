//! IPv6 headers (RFC 8200) with a bounded walk of the extension-header chain.

use std::net::Ipv6Addr;

use super::{be16, proto, put16, ParseError};

pub const HEADER_LEN: usize = 40;

/// Byte offsets of the fixed header's fields.
pub mod field {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}
/// The longest extension chain l4lb walks; longer chains are refused (they are
/// either attacks or nothing a load balancer should carry).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet. After `new_checked`: version 6 and the payload
/// length fits the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

/// Where the upper-layer header starts, after the extension chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// The upper-layer protocol (TCP, UDP, ICMPv6, ...; 59 for none).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Present when a Fragment header was in the chain.
    pub fragment: Option<Fragment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes.
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(ParseError::BadVersion);
        }
        if b.len() < HEADER_LEN + be16(b, 4) as usize {
            return Err(ParseError::Truncated);
        }
        Ok(Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.b();
        (b[0] << 4) | (b[1] >> 4)
    }
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        ((b[1] as u32 & 0x0f) << 16) | ((b[2] as u32) << 8) | b[3] as u32
    }
    pub fn payload_len(&self) -> usize {
        be16(self.b(), field::PAYLOAD_LEN) as usize
    }
    /// Header plus payload (padding excluded).
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> Ipv6Addr {
        addr_at(self.b(), field::SRC)
    }
    pub fn dst(&self) -> Ipv6Addr {
        addr_at(self.b(), field::DST)
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }

    /// Walks hop-by-hop, routing, fragment and destination-options headers
    /// (at most [`MAX_EXTENSION_HEADERS`]); hop-by-hop only first. A
    /// non-first fragment stops the walk: its upper header is not present.
    pub fn upper(&self) -> Result<Upper, ParseError> {
        let b = &self.b()[..self.total_len()];
        let mut next = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = None;
        for i in 0..=MAX_EXTENSION_HEADERS {
            match next {
                proto::HOPOPT | proto::IPV6_ROUTE | proto::IPV6_OPTS => {
                    if next == proto::HOPOPT && i != 0 {
                        return Err(ParseError::BadExtensionChain);
                    }
                    if b.len() < off + 8 {
                        return Err(ParseError::Truncated);
                    }
                    let len = (b[off + 1] as usize + 1) * 8;
                    if b.len() < off + len {
                        return Err(ParseError::Truncated);
                    }
                    next = b[off];
                    off += len;
                }
                proto::IPV6_FRAG => {
                    if fragment.is_some() {
                        return Err(ParseError::BadExtensionChain);
                    }
                    if b.len() < off + 8 {
                        return Err(ParseError::Truncated);
                    }
                    let fo = be16(b, off + 2);
                    let f = Fragment {
                        offset: (fo & 0xfff8) as usize,
                        more: fo & 1 != 0,
                        ident: u32::from_be_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]),
                    };
                    fragment = Some(f);
                    next = b[off];
                    off += 8;
                    if f.offset != 0 {
                        return Ok(Upper { protocol: next, offset: off, fragment });
                    }
                }
                _ => return Ok(Upper { protocol: next, offset: off, fragment }),
            }
        }
        Err(ParseError::BadExtensionChain)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = h;
    }
    /// Swaps source and destination (a reply's addresses); an upper-layer
    /// checksum over the pseudo-header does not change.
    pub fn swap_addresses(&mut self) {
        let (src, dst) = (self.src(), self.dst());
        let b = self.buf.as_mut();
        b[field::SRC..field::SRC + 16].copy_from_slice(&dst.octets());
        b[field::DST..field::DST + 16].copy_from_slice(&src.octets());
    }
}

/// The IPv6 address at byte `at` of `b`.
pub fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// Fields of a 40-byte IPv6 header l4lb writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    pub fn write(&self, buf: &mut [u8]) {
        let fl = self.flow_label & 0x000f_ffff;
        buf[0] = 0x60 | (self.traffic_class >> 4);
        buf[1] = (self.traffic_class << 4) | (fl >> 16) as u8;
        buf[2] = (fl >> 8) as u8;
        buf[3] = fl as u8;
        put16(buf, 4, self.payload_len);
        buf[6] = self.next_header;
        buf[7] = self.hop_limit;
        buf[8..24].copy_from_slice(&self.src.octets());
        buf[24..40].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        Repr {
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8:100::1".parse().unwrap(),
            next_header: next,
            payload_len: payload.len() as u16,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
        .write(&mut b);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn fixed_fields() {
        let b = header(proto::TCP, &[0; 20]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.upper().unwrap(), Upper { protocol: proto::TCP, offset: 40, fragment: None });
    }

    #[test]
    fn extension_chain() {
        // hop-by-hop (8) -> routing (16) -> fragment (first) -> dest opts (8) -> UDP
        let mut ext = vec![proto::IPV6_ROUTE, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[proto::IPV6_FRAG, 1]);
        ext.extend_from_slice(&[0; 14]);
        ext.extend_from_slice(&[proto::IPV6_OPTS, 0, 0, 1, 0, 0, 0, 42]);
        ext.extend_from_slice(&[proto::UDP, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 8]);
        let b = header(proto::HOPOPT, &ext);
        let u = Packet::new_checked(&b[..]).unwrap().upper().unwrap();
        assert_eq!(u.protocol, proto::UDP);
        assert_eq!(u.offset, 40 + 8 + 16 + 8 + 8);
        assert_eq!(u.fragment, Some(Fragment { offset: 0, more: true, ident: 42 }));
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let mut ext = vec![proto::TCP, 0, 0x05, 0x68, 0, 0, 0, 7];
        ext.extend_from_slice(&[0; 16]);
        let b = header(proto::IPV6_FRAG, &ext);
        let u = Packet::new_checked(&b[..]).unwrap().upper().unwrap();
        assert_eq!(u.fragment, Some(Fragment { offset: 0x568, more: false, ident: 7 }));
        assert_eq!(u.protocol, proto::TCP);
    }

    #[test]
    fn bad_chains() {
        // A chain of destination-options headers longer than the bound ("looping").
        let mut ext = Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[proto::IPV6_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let b = header(proto::IPV6_OPTS, &ext);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper().unwrap_err(), ParseError::BadExtensionChain);
        // Hop-by-hop not first.
        let b = header(proto::IPV6_OPTS, &[proto::HOPOPT, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper().unwrap_err(), ParseError::BadExtensionChain);
        // Extension header longer than the packet.
        let b = header(proto::IPV6_ROUTE, &[proto::TCP, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper().unwrap_err(), ParseError::Truncated);
        // Two fragment headers.
        let mut ext = vec![proto::IPV6_FRAG, 0, 0, 1, 0, 0, 0, 1];
        ext.extend_from_slice(&[proto::TCP, 0, 0, 1, 0, 0, 0, 1]);
        let b = header(proto::IPV6_FRAG, &ext);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper().unwrap_err(), ParseError::BadExtensionChain);
    }

    #[test]
    fn bad_headers() {
        let b = header(proto::TCP, &[0; 20]);
        assert_eq!(Packet::new_checked(&b[..39]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Packet::new_checked(&b[..50]).unwrap_err(), ParseError::Truncated);
        let mut v = b.clone();
        v[0] = 0x40;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadVersion);
    }
}
