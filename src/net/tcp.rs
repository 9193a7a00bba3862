//! TCP headers (RFC 9293).

use super::{be16, be32, ParseError};

pub const MIN_HEADER_LEN: usize = 20;

/// Byte offsets of the header's fields.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset in the high 4 bits, in 32-bit words.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
}
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A view of a TCP segment: after `new_checked`, 20 <= data offset <= length.
#[derive(Debug, Clone, Copy)]
pub struct Segment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let off = (b[field::DATA_OFF] >> 4) as usize * 4;
        if off < MIN_HEADER_LEN {
            return Err(ParseError::BadLength);
        }
        if off > b.len() {
            return Err(ParseError::Truncated);
        }
        Ok(Segment { buf })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), field::ACK)
    }
    pub fn header_len(&self) -> usize {
        (self.buf.as_ref()[field::DATA_OFF] >> 4) as usize * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), field::WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

/// The first 4 bytes of TCP and UDP headers: the ports, enough to route an
/// ICMP error's embedded packet (which carries at least 8 bytes of it).
pub fn ports(b: &[u8]) -> Option<(u16, u16)> {
    (b.len() >= 4).then(|| (be16(b, 0), be16(b, 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_errors() {
        let mut b = [0u8; 24];
        b[0..2].copy_from_slice(&40000u16.to_be_bytes());
        b[2..4].copy_from_slice(&80u16.to_be_bytes());
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[12] = 6 << 4;
        b[13] = SYN | ACK;
        let s = Segment::new_checked(&b[..]).unwrap();
        assert_eq!(
            (s.src_port(), s.dst_port(), s.seq(), s.header_len(), s.flags()),
            (40000, 80, 7, 24, 0x12)
        );
        assert!(s.payload().is_empty());
        assert_eq!(Segment::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Segment::new_checked(&b[..22]).unwrap_err(), ParseError::Truncated);
        b[12] = 4 << 4;
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), ParseError::BadLength);
        assert_eq!(ports(&b), Some((40000, 80)));
        assert_eq!(ports(&b[..3]), None);
    }
}
