//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) with NDP neighbour solicitation and
//! advertisement (RFC 4861).

use std::net::Ipv6Addr;

use super::ethernet::{mac_at, Mac};
use super::ipv6::addr_at;
use super::{be16, checksum, proto, put16, ParseError};

pub const HEADER_LEN: usize = 8;

/// Byte offsets of the header's fields (ICMPv4 and ICMPv6 alike).
pub mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// The 4 bytes after the checksum: identifier and sequence of an echo,
    /// the MTU of a frag-needed (its last 2) or packet-too-big, NA flags.
    pub const REST: usize = 4;
    /// An NS or NA's target address.
    pub const NDP_TARGET: usize = 8;
    /// An NS or NA's first option.
    pub const NDP_OPTIONS: usize = 24;
}

/// Changes the type of the ICMP or ICMPv6 message `msg` (echo request into
/// reply), updating its checksum incrementally (RFC 1624).
pub fn set_type(msg: &mut [u8], new_type: u8) {
    let old = be16(msg, field::TYPE);
    msg[field::TYPE] = new_type;
    let new = be16(msg, field::TYPE);
    let c = checksum::update16(be16(msg, field::CHECKSUM), old, new);
    put16(msg, field::CHECKSUM, c);
}

/// Writes the header of an ICMPv4 frag-needed message over `msg[..8]`, whose
/// body (`msg[8..]`) already holds the quoted packet, and its checksum over
/// the whole message.
pub fn write_frag_needed(msg: &mut [u8], mtu: u16) {
    msg[field::TYPE] = v4::DEST_UNREACHABLE;
    msg[field::CODE] = v4::CODE_FRAG_NEEDED;
    msg[field::CHECKSUM..HEADER_LEN].fill(0);
    put16(msg, field::REST + 2, mtu);
    let c = checksum::checksum(msg);
    put16(msg, field::CHECKSUM, c);
}

/// Writes the header of an ICMPv6 packet-too-big message over `msg[..8]`,
/// whose body already holds the quoted packet, and its checksum over the
/// pseudo-header of `src` -> `dst` and the whole message.
pub fn write_packet_too_big(msg: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr, mtu: u32) {
    msg[field::TYPE] = v6::PACKET_TOO_BIG;
    msg[field::CODE] = 0;
    put16(msg, field::CHECKSUM, 0);
    msg[field::REST..HEADER_LEN].copy_from_slice(&mtu.to_be_bytes());
    fill_checksum_v6(msg, src, dst);
}

/// The length of a neighbour advertisement with a target link-layer address
/// option, as [`write_neighbor_advert`] writes it.
pub const NA_LEN: usize = 32;

/// Writes a neighbour advertisement for `target` with its link-layer
/// address option (`mac`) into `msg[..32]`, from `src` to `dst` (the
/// addresses its checksum covers); `solicited` sets the S flag (O is set).
pub fn write_neighbor_advert(
    msg: &mut [u8],
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    target: &Ipv6Addr,
    mac: Mac,
    solicited: bool,
) {
    let m = &mut msg[..NA_LEN];
    m[field::TYPE] = v6::NEIGHBOR_ADVERT;
    m[field::CODE] = 0;
    put16(m, field::CHECKSUM, 0);
    let flags = v6::NA_OVERRIDE | if solicited { v6::NA_SOLICITED } else { 0 };
    m[field::REST..field::REST + 4].copy_from_slice(&flags.to_be_bytes());
    m[field::NDP_TARGET..field::NDP_TARGET + 16].copy_from_slice(&target.octets());
    let opt = field::NDP_OPTIONS;
    m[opt] = v6::OPT_TARGET_LL;
    m[opt + 1] = 1; // in units of 8 bytes
    m[opt + 2..opt + 8].copy_from_slice(&mac);
    fill_checksum_v6(m, src, dst);
}

/// Sets the checksum of the ICMPv6 message `msg` (its checksum field 0).
fn fill_checksum_v6(msg: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    let sum = checksum::pseudo_v6(src, dst, proto::ICMPV6, msg.len() as u32);
    let c = !checksum::fold(checksum::add(sum, msg));
    put16(msg, field::CHECKSUM, c);
}

pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Code of DEST_UNREACHABLE: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
}

pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    pub const OPT_SOURCE_LL: u8 = 1;
    pub const OPT_TARGET_LL: u8 = 2;
    /// NA flags: router, solicited, override.
    pub const NA_SOLICITED: u32 = 0x4000_0000;
    pub const NA_OVERRIDE: u32 = 0x2000_0000;
}

/// A view of an ICMP (v4 or v6) message: type, code, checksum, the 4-byte
/// "rest of header" and the body.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Message { buf })
    }

    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Bytes 4..8: identifier and sequence of an echo, the MTU of a
    /// frag-needed (bytes 6..8) or packet-too-big (4..8).
    pub fn rest(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[4], b[5], b[6], b[7]]
    }
    /// Everything after the 8-byte header: the embedded packet of an error.
    pub fn body(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// True for ICMPv4 errors that carry the offending packet.
    pub fn is_v4_error(&self) -> bool {
        matches!(self.msg_type(), v4::DEST_UNREACHABLE | v4::TIME_EXCEEDED | v4::PARAMETER_PROBLEM)
    }

    /// True for ICMPv6 errors that carry the offending packet.
    pub fn is_v6_error(&self) -> bool {
        matches!(
            self.msg_type(),
            v6::DEST_UNREACHABLE | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAMETER_PROBLEM
        )
    }
}

/// A neighbour solicitation or advertisement: target address and the
/// link-layer address option, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ndp {
    pub msg_type: u8,
    pub target: Ipv6Addr,
    /// Source link-layer address (NS) or target link-layer address (NA).
    pub link_addr: Option<Mac>,
    /// NA flags word (router/solicited/override), 0 for NS.
    pub flags: u32,
}

/// Parses an NS or NA message (the whole ICMPv6 message). Options with a zero
/// length are invalid (RFC 4861 §4.6) and refused.
pub fn parse_ndp(b: &[u8]) -> Result<Ndp, ParseError> {
    if b.len() < 24 {
        return Err(ParseError::Truncated);
    }
    let msg_type = b[0];
    if msg_type != v6::NEIGHBOR_SOLICIT && msg_type != v6::NEIGHBOR_ADVERT {
        return Err(ParseError::Malformed);
    }
    if b[1] != 0 {
        return Err(ParseError::Malformed);
    }
    let flags =
        if msg_type == v6::NEIGHBOR_ADVERT { u32::from_be_bytes([b[4], b[5], b[6], b[7]]) } else { 0 };
    let target = addr_at(b, 8);
    let want = if msg_type == v6::NEIGHBOR_SOLICIT { v6::OPT_SOURCE_LL } else { v6::OPT_TARGET_LL };
    let mut link_addr = None;
    let mut off = 24;
    while off + 2 <= b.len() {
        let len = b[off + 1] as usize * 8;
        if len == 0 {
            return Err(ParseError::Malformed);
        }
        if off + len > b.len() {
            return Err(ParseError::Truncated);
        }
        if b[off] == want && len >= 8 {
            link_addr = Some(mac_at(b, off + 2));
        }
        off += len;
    }
    Ok(Ndp { msg_type, target, link_addr, flags })
}

/// A neighbour solicitation frame (86 bytes) for `target`, sent to its
/// solicited-node multicast address with our link-layer address.
pub fn solicit_frame(src_mac: Mac, src_ip: Ipv6Addr, target: Ipv6Addr) -> [u8; 86] {
    let t = target.octets();
    let dst_ip =
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | t[13] as u16, u16::from_be_bytes([t[14], t[15]]));
    let dst_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let mut f = [0u8; 86];
    super::ethernet::write_header(&mut f, dst_mac, src_mac, super::ethernet::ETHERTYPE_IPV6);
    super::ipv6::Repr {
        src: src_ip,
        dst: dst_ip,
        next_header: super::proto::ICMPV6,
        payload_len: 32,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .write(&mut f[14..]);
    let m = &mut f[54..86];
    m[0] = v6::NEIGHBOR_SOLICIT;
    m[8..24].copy_from_slice(&t);
    m[24] = v6::OPT_SOURCE_LL;
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac);
    let sum = super::checksum::pseudo_v6(&src_ip, &dst_ip, super::proto::ICMPV6, 32);
    let c = !super::checksum::fold(super::checksum::add(sum, m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fields() {
        let b = [8u8, 0, 0xab, 0xcd, 0, 1, 0, 2, 9, 9];
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!((m.msg_type(), m.code(), m.checksum(), m.rest()), (8, 0, 0xabcd, [0, 1, 0, 2]));
        assert_eq!(m.body(), &[9, 9]);
        assert!(!m.is_v4_error());
        assert_eq!(Message::new_checked(&b[..7]).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn solicitation_frame_parses_back_and_verifies() {
        let target: Ipv6Addr = "2001:db8::1234:5678".parse().unwrap();
        let f = solicit_frame([2, 0, 0, 0, 0, 1], "2001:db8::1".parse().unwrap(), target);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x34, 0x56, 0x78]);
        let ip = super::super::ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst(), "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap());
        let n = parse_ndp(ip.payload()).unwrap();
        assert_eq!(
            (n.msg_type, n.target, n.link_addr),
            (v6::NEIGHBOR_SOLICIT, target, Some([2, 0, 0, 0, 0, 1]))
        );
        let sum = super::super::checksum::pseudo_v6(&ip.src(), &ip.dst(), 58, 32);
        assert_eq!(super::super::checksum::fold(super::super::checksum::add(sum, ip.payload())), 0xffff);
    }

    #[test]
    fn ndp() {
        let mut ns = vec![v6::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        ns.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        ns.extend_from_slice(&[v6::OPT_SOURCE_LL, 1, 2, 0, 0, 0, 0, 9]);
        let n = parse_ndp(&ns).unwrap();
        assert_eq!(n.target, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.link_addr, Some([2, 0, 0, 0, 0, 9]));
        let mut bad = ns.clone();
        bad[25] = 0;
        assert_eq!(parse_ndp(&bad).unwrap_err(), ParseError::Malformed);
        let mut bad = ns.clone();
        bad[25] = 2;
        assert_eq!(parse_ndp(&bad).unwrap_err(), ParseError::Truncated);
        assert_eq!(parse_ndp(&ns[..20]).unwrap_err(), ParseError::Truncated);
        let no_opt = &ns[..24];
        assert_eq!(parse_ndp(no_opt).unwrap().link_addr, None);
    }
}
