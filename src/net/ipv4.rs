//! IPv4 headers (RFC 791), with options and fragments.

use std::net::Ipv4Addr;

use super::checksum;
use super::{be16, put16, ParseError};

pub const MIN_HEADER_LEN: usize = 20;

/// Byte offsets of the header's fields.
pub mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}
pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;

/// A view of an IPv4 packet. After `new_checked`: version 4, 20 <= IHL*4 <=
/// total length <= buffer length. The buffer may carry trailing padding
/// (Ethernet minimum frames); `total_len` says where the packet ends.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(ParseError::BadVersion);
        }
        let ihl = ((b[0] & 0x0f) as usize) * 4;
        if ihl < MIN_HEADER_LEN {
            return Err(ParseError::BadLength);
        }
        let total = be16(b, 2) as usize;
        if total < ihl {
            return Err(ParseError::BadLength);
        }
        if b.len() < total {
            return Err(ParseError::Truncated);
        }
        Ok(Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn header_len(&self) -> usize {
        ((self.b()[field::VER_IHL] & 0x0f) as usize) * 4
    }
    /// The fixed 20-byte header.
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        &self.b()[..MIN_HEADER_LEN]
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[field::DSCP_ECN]
    }
    pub fn total_len(&self) -> usize {
        be16(self.b(), field::TOTAL_LEN) as usize
    }
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    pub fn dont_fragment(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_DF != 0
    }
    pub fn more_fragments(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        ((be16(self.b(), field::FLAGS_FRAG) & 0x1fff) as usize) * 8
    }
    /// True for any piece of a fragmented datagram (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & (FLAG_MF | 0x1fff) != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        addr_at(b, field::SRC)
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        addr_at(b, field::DST)
    }
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    pub fn header_checksum_ok(&self) -> bool {
        checksum::checksum(&self.b()[..self.header_len()]) == 0
    }
    /// The bytes after the header, up to `total_len` (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf.as_mut()[field::TTL] = ttl;
    }
    /// Swaps source and destination (a reply's addresses); the header
    /// checksum does not change.
    pub fn swap_addresses(&mut self) {
        let (src, dst) = (self.src(), self.dst());
        let b = self.buf.as_mut();
        b[field::SRC..field::SRC + 4].copy_from_slice(&dst.octets());
        b[field::DST..field::DST + 4].copy_from_slice(&src.octets());
    }
    pub fn fill_checksum(&mut self) {
        let h = self.header_len();
        let b = self.buf.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(&b[..h]);
        put16(b, field::CHECKSUM, c);
    }
}

/// The IPv4 address at byte `at` of `b`.
#[inline]
pub fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Fields of a 20-byte IPv4 header l4lb writes (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: u16,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Repr {
    /// Writes the header with its checksum into `buf[..20]`.
    #[inline]
    pub fn write(&self, buf: &mut [u8]) {
        // Built as five 32-bit words, summed as it goes, stored once.
        let w0 =
            0x4500_0000 | (self.dscp_ecn as u32) << 16 | (self.payload_len as u32 + MIN_HEADER_LEN as u32);
        let w1 = (self.ident as u32) << 16 | if self.dont_fragment { FLAG_DF as u32 } else { 0 };
        let w2 = (self.ttl as u32) << 24 | (self.protocol as u32) << 16;
        let (w3, w4) = (u32::from(self.src), u32::from(self.dst));
        let sum = w0 as u64 + w1 as u64 + w2 as u64 + w3 as u64 + w4 as u64;
        let c = !checksum::fold(sum);
        let mut h = [0u8; MIN_HEADER_LEN];
        h[0..4].copy_from_slice(&w0.to_be_bytes());
        h[4..8].copy_from_slice(&w1.to_be_bytes());
        h[8..12].copy_from_slice(&(w2 | c as u32).to_be_bytes());
        h[12..16].copy_from_slice(&w3.to_be_bytes());
        h[16..20].copy_from_slice(&w4.to_be_bytes());
        buf[..MIN_HEADER_LEN].copy_from_slice(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 28];
        Repr {
            src: Ipv4Addr::new(198, 18, 0, 2),
            dst: Ipv4Addr::new(198, 18, 100, 1),
            protocol: 17,
            payload_len: 8,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0x1234,
            dont_fragment: true,
        }
        .write(&mut b);
        b
    }

    #[test]
    fn fields() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert!(p.dont_fragment() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(198, 18, 100, 1));
        assert!(p.header_checksum_ok());
        assert_eq!(p.payload().len(), 8);
        assert!(p.options().is_empty());
    }

    #[test]
    fn options_and_padding() {
        let mut b = sample();
        // IHL 6 with one 4-byte option (NOPs), total 32, plus 10 bytes of padding.
        b.splice(20..20, [1, 1, 1, 1]);
        b[0] = 0x46;
        b[3] = 32;
        b.extend_from_slice(&[0; 10]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 1]);
        assert_eq!(p.payload().len(), 8);
        assert!(p.header_checksum_ok());
    }

    #[test]
    fn fragments() {
        let mut b = sample();
        b[6] = 0x20; // MF, offset 0
        assert!(Packet::new_checked(&b[..]).unwrap().is_fragment());
        b[6] = 0x00;
        b[7] = 0x03; // offset 24
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && !p.more_fragments());
        assert_eq!(p.frag_offset(), 24);
    }

    #[test]
    fn bad_inputs() {
        let b = sample();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Packet::new_checked(&b[..27]).unwrap_err(), ParseError::Truncated);
        let mut v = b.clone();
        v[0] = 0x65;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadVersion);
        let mut v = b.clone();
        v[0] = 0x44; // IHL 4: 16 bytes, less than the minimum
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadLength);
        let mut v = b.clone();
        v[0] = 0x4f; // IHL 15: 60 bytes, more than the total length
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadLength);
        let mut v = b.clone();
        v[3] = 10; // total length below the header
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadLength);
    }
}
