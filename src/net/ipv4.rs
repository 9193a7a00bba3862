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

/// How an IPv4 packet of `total_len` bytes with a `header_len`-byte header
/// splits to fit `mtu` (RFC 791): the payload bytes per fragment (a multiple
/// of 8) and the number of fragments. `None` when it cannot (an MTU below
/// header + 8 bytes).
pub fn fragment_plan(total_len: usize, header_len: usize, mtu: usize) -> Option<(usize, usize)> {
    let piece = mtu.checked_sub(header_len)? & !7;
    if piece == 0 || total_len < header_len {
        return None;
    }
    Some((piece, (total_len - header_len).div_ceil(piece).max(1)))
}

/// How a packet without options is cut to fit an MTU: [`fragment_plan`]
/// read off the packet, with each fragment's length. The worker loop
/// (into new buffers) and `simulate` (into frames) cut by it alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragments {
    piece: usize,
    count: usize,
    total: usize,
}

impl Fragments {
    /// The plan for `packet` (from its total-length field); `None` when
    /// the MTU leaves no room for 8 bytes of payload.
    pub fn plan(packet: &[u8], mtu: usize) -> Option<Fragments> {
        let total = packet.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
        let (piece, count) = fragment_plan(total, MIN_HEADER_LEN, mtu)?;
        Some(Fragments { piece, count, total })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The length of fragment `i` (header included).
    pub fn len_of(&self, i: usize) -> usize {
        MIN_HEADER_LEN + self.piece.min((self.total - MIN_HEADER_LEN).saturating_sub(i * self.piece))
    }

    /// Writes fragment `i` of `packet` into `out` ([`write_fragment`]):
    /// `Some` when it wrote the planned [`Fragments::len_of`] bytes.
    pub fn write(&self, packet: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        write_fragment(packet, self.piece, i, out).filter(|&n| n == self.len_of(i))
    }
}

/// Writes fragment `i` of `packet` (a whole IPv4 packet without options,
/// `total_len` long, as [`fragment_plan`] cut it in `piece`-byte pieces)
/// into `out`: the header with its length, offset, MF flag and checksum,
/// then its piece of the payload. Returns the bytes written, or `None`
/// when the packet has options, `i` is past the last fragment or `out` is
/// too short.
pub fn write_fragment(packet: &[u8], piece: usize, i: usize, out: &mut [u8]) -> Option<usize> {
    let h = MIN_HEADER_LEN;
    let p = Packet::new_checked(packet).ok()?;
    if p.header_len() != h || piece == 0 || piece % 8 != 0 {
        return None;
    }
    let payload = &packet[h..p.total_len()];
    let from = i * piece;
    if from >= payload.len() && !(i == 0 && payload.is_empty()) {
        return None;
    }
    let to = (from + piece).min(payload.len());
    let len = h + to - from;
    let out = out.get_mut(..len)?;
    out[..h].copy_from_slice(&packet[..h]);
    out[h..].copy_from_slice(&payload[from..to]);
    let flags = be16(packet, field::FLAGS_FRAG);
    // A packet that is itself a fragment keeps its offset and its MF on its last piece.
    let offset8 = (flags & 0x1fff) as usize + from / 8;
    let more = to < payload.len() || flags & FLAG_MF != 0;
    put16(out, field::TOTAL_LEN, len as u16);
    put16(out, field::FLAGS_FRAG, (flags & FLAG_DF) | if more { FLAG_MF } else { 0 } | offset8 as u16);
    put16(out, field::CHECKSUM, 0);
    let c = checksum::checksum(&out[..h]);
    put16(out, field::CHECKSUM, c);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_cover_the_payload_in_order_and_each_fits() {
        let payload: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let mut pkt = vec![0u8; 20 + payload.len()];
        Repr {
            src: Ipv4Addr::new(198, 18, 1, 1),
            dst: Ipv4Addr::new(198, 18, 1, 11),
            protocol: 4,
            payload_len: payload.len() as u16,
            ttl: 64,
            dscp_ecn: 0,
            ident: 77,
            dont_fragment: false,
        }
        .write(&mut pkt);
        pkt[20..].copy_from_slice(&payload);
        let (piece, n) = fragment_plan(pkt.len(), 20, 1500).unwrap();
        assert_eq!((piece, n), (1480, 2));
        let mut joined = Vec::new();
        for i in 0..n {
            let mut out = [0u8; 1600];
            let len = write_fragment(&pkt, piece, i, &mut out).unwrap();
            assert!(len <= 1500);
            let f = Packet::new_checked(&out[..len]).unwrap();
            assert!(f.header_checksum_ok());
            assert_eq!((f.ident(), f.protocol(), f.total_len()), (77, 4, len));
            assert_eq!(f.frag_offset(), joined.len(), "fragment {i} starts where the last ended");
            assert_eq!(f.more_fragments(), i + 1 < n);
            assert!(!f.dont_fragment());
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, payload);
        let mut out = [0u8; 1600];
        assert_eq!(write_fragment(&pkt, piece, n, &mut out), None, "past the last");
        assert_eq!(write_fragment(&pkt, 1481, 0, &mut out), None, "a piece not a multiple of 8");
        assert_eq!(write_fragment(&pkt, piece, 0, &mut out[..100]), None, "out too short");
        assert_eq!(fragment_plan(100, 20, 27), None);
        assert_eq!(fragment_plan(1000, 20, 1500), Some((1480, 1)));
    }

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
