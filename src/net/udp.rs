//! UDP headers (RFC 768).

use super::{be16, put16, ParseError};

pub const HEADER_LEN: usize = 8;

/// Byte offsets of the header's fields.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram: after `new_checked`, 8 <= length field <= buffer.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let len = be16(b, field::LEN) as usize;
        if len < HEADER_LEN {
            return Err(ParseError::BadLength);
        }
        if len > b.len() {
            return Err(ParseError::Truncated);
        }
        Ok(Datagram { buf })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }
    pub fn len(&self) -> usize {
        be16(self.buf.as_ref(), field::LEN) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.len()]
    }
}

/// Writes a UDP header; `checksum` 0 means "none" (IPv4 only).
pub fn write_header(buf: &mut [u8], src_port: u16, dst_port: u16, len: u16, checksum: u16) {
    put16(buf, field::SRC_PORT, src_port);
    put16(buf, field::DST_PORT, dst_port);
    put16(buf, field::LEN, len);
    put16(buf, field::CHECKSUM, checksum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_errors() {
        let mut b = [0u8; 12];
        write_header(&mut b, 5000, 53, 12, 0);
        let d = Datagram::new_checked(&b[..]).unwrap();
        assert_eq!((d.src_port(), d.dst_port(), d.len(), d.payload().len()), (5000, 53, 12, 4));
        assert_eq!(Datagram::new_checked(&b[..7]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Datagram::new_checked(&b[..10]).unwrap_err(), ParseError::Truncated);
        b[5] = 4;
        assert_eq!(Datagram::new_checked(&b[..]).unwrap_err(), ParseError::BadLength);
    }
}
