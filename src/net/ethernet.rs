//! Ethernet II frames with up to two 802.1Q / 802.1ad VLAN tags.

use super::{be16, put16, ParseError};

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub type Mac = [u8; 6];

/// Byte offsets of an untagged header's fields.
pub mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// A view of an Ethernet frame. `header_len` covers the VLAN tags.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
    header_len: usize,
    ethertype: u16,
    vlan: Option<u16>,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks the header and up to two VLAN tags.
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let mut off = 12;
        let mut ethertype = be16(b, off);
        let mut vlan = None;
        let mut tags = 0;
        while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            tags += 1;
            if tags > 2 {
                return Err(ParseError::Malformed);
            }
            if b.len() < off + 6 {
                return Err(ParseError::Truncated);
            }
            // The innermost tag's VLAN id is the one that selects the network.
            vlan = Some(be16(b, off + 2) & 0x0fff);
            off += 4;
            ethertype = be16(b, off);
        }
        Ok(Frame { buf, header_len: off + 2, ethertype, vlan })
    }

    pub fn dst(&self) -> Mac {
        mac_at(self.buf.as_ref(), 0)
    }

    pub fn src(&self) -> Mac {
        mac_at(self.buf.as_ref(), 6)
    }

    /// The ethertype after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// The innermost VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan
    }

    /// Length of the header including VLAN tags.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len..]
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: Mac) {
        self.buf.as_mut()[0..6].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: Mac) {
        self.buf.as_mut()[6..12].copy_from_slice(&mac);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len;
        &mut self.buf.as_mut()[h..]
    }
}

#[inline(always)]
pub(crate) fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Writes an untagged Ethernet header into the first 14 bytes of `buf`.
pub fn write_header(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    put16(buf, 12, ethertype);
}

/// Sets the destination and source MAC addresses of a frame.
#[inline]
pub fn set_addresses(buf: &mut [u8], dst: Mac, src: Mac) {
    buf[field::DST..field::DST + 6].copy_from_slice(&dst);
    buf[field::SRC..field::SRC + 6].copy_from_slice(&src);
}

/// Swaps a frame's destination and source MAC addresses (a reply's header).
#[inline]
pub fn swap_addresses(buf: &mut [u8]) {
    let (dst, src) = (mac_at(buf, field::DST), mac_at(buf, field::SRC));
    set_addresses(buf, src, dst);
}

/// Sets the ethertype of a frame whose header (with tags) is `header_len` long.
pub fn set_ethertype(buf: &mut [u8], header_len: usize, ethertype: u16) {
    put16(buf, header_len - 2, ethertype);
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

/// Formats a MAC address as `02:00:00:00:00:01`.
pub fn fmt_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Parses `02:00:00:00:00:01` (or with `-`).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged() {
        let mut f = [0u8; 20];
        write_header(&mut f, [1; 6], [2; 6], ETHERTYPE_IPV4);
        let v = Frame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (v.dst(), v.src(), v.ethertype(), v.header_len(), v.vlan()),
            ([1; 6], [2; 6], 0x0800, 14, None)
        );
        assert_eq!(v.payload().len(), 6);
    }

    #[test]
    fn vlan_and_qinq() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x86, 0xdd, 9]);
        let v = Frame::new_checked(&f[..]).unwrap();
        assert_eq!((v.ethertype(), v.vlan(), v.header_len()), (ETHERTYPE_IPV6, Some(10), 18));
        let mut q = vec![0u8; 12];
        q.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        let v = Frame::new_checked(&q[..]).unwrap();
        assert_eq!((v.ethertype(), v.vlan(), v.header_len()), (ETHERTYPE_IPV4, Some(7), 22));
    }

    #[test]
    fn truncated_and_too_many_tags() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]).unwrap_err(), ParseError::Truncated);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 1]);
        assert_eq!(Frame::new_checked(&f[..]).unwrap_err(), ParseError::Truncated);
        let mut f = vec![0u8; 12];
        for _ in 0..3 {
            f.extend_from_slice(&[0x81, 0x00, 0, 1]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(Frame::new_checked(&f[..]).unwrap_err(), ParseError::Malformed);
    }

    #[test]
    fn mac_text() {
        assert_eq!(parse_mac("02:00:00:00:0a:ff"), Some([2, 0, 0, 0, 10, 255]));
        assert_eq!(parse_mac("02:00:00:00:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:ff:00"), None);
        assert_eq!(fmt_mac(&[2, 0, 0, 0, 10, 255]), "02:00:00:00:0a:ff");
    }
}
