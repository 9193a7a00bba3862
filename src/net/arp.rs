//! ARP for IPv4 over Ethernet (RFC 826).

use std::net::Ipv4Addr;

use super::ethernet::{mac_at, Mac};
use super::{be16, put16, ParseError};

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// Byte offsets of the (Ethernet, IPv4) ARP packet's fields.
pub mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: usize = 6;
    pub const SENDER_MAC: usize = 8;
    pub const SENDER_IP: usize = 14;
    pub const TARGET_MAC: usize = 18;
    pub const TARGET_IP: usize = 24;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Accepts only hardware type Ethernet (1), protocol IPv4, lengths 6 and 4.
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let b = buf.as_ref();
        if b.len() < LEN {
            return Err(ParseError::Truncated);
        }
        if be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(ParseError::Malformed);
        }
        Ok(Packet { buf })
    }

    pub fn op(&self) -> u16 {
        be16(self.buf.as_ref(), field::OP)
    }
    pub fn sender_mac(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::SENDER_MAC)
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::SENDER_IP)
    }
    pub fn target_mac(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::TARGET_MAC)
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::TARGET_IP)
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Writes a 28-byte ARP packet.
pub fn write(
    buf: &mut [u8],
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) {
    put16(buf, 0, 1);
    put16(buf, 2, 0x0800);
    buf[4] = 6;
    buf[5] = 4;
    put16(buf, 6, op);
    buf[8..14].copy_from_slice(&sender_mac);
    buf[14..18].copy_from_slice(&sender_ip.octets());
    buf[18..24].copy_from_slice(&target_mac);
    buf[24..28].copy_from_slice(&target_ip.octets());
}

/// A broadcast ARP request frame (42 bytes) asking for `target`.
pub fn request_frame(src_mac: Mac, src_ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    super::ethernet::write_header(
        &mut f,
        super::ethernet::BROADCAST,
        src_mac,
        super::ethernet::ETHERTYPE_ARP,
    );
    write(&mut f[14..], OP_REQUEST, src_mac, src_ip, [0; 6], target);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut b = [0u8; 28];
        write(&mut b, OP_REQUEST, [1; 6], Ipv4Addr::new(198, 18, 0, 2), [0; 6], Ipv4Addr::new(198, 18, 0, 1));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.op(), OP_REQUEST);
        assert_eq!(p.sender_mac(), [1; 6]);
        assert_eq!(p.sender_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.target_ip(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(Packet::new_checked(&b[..27]).unwrap_err(), ParseError::Truncated);
        b[5] = 16;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), ParseError::Malformed);
    }
}
