//! Pure packet code: zero-copy views over byte slices and the builders l4lb
//! needs. Every view has a constructor that checks lengths once
//! (`new_checked`), after which every accessor is panic-free.
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its header or its own length field says.
    Truncated,
    /// A length or header-length field is impossible.
    BadLength,
    /// The version field is not what the view expects.
    BadVersion,
    /// IPv6 extension chain too long or malformed.
    BadExtensionChain,
    /// A field has a value the protocol forbids.
    Malformed,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated",
            ParseError::BadLength => "bad length field",
            ParseError::BadVersion => "bad version",
            ParseError::BadExtensionChain => "bad IPv6 extension header chain",
            ParseError::Malformed => "malformed",
        })
    }
}

impl std::error::Error for ParseError {}

/// IP protocol numbers l4lb knows.
pub mod proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const IPV6_ROUTE: u8 = 43;
    pub const IPV6_FRAG: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NONXT: u8 = 59;
    pub const IPV6_OPTS: u8 = 60;
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Builds every view on `b` and calls every accessor: none may panic on
/// any bytes (the property test below and the `parsers` fuzz target).
pub fn exercise_views(b: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(b) {
        let _ = (f.dst(), f.src(), f.ethertype(), f.vlan(), f.payload().len());
    }
    if let Ok(a) = arp::Packet::new_checked(b) {
        let _ = (a.op(), a.sender_mac(), a.sender_ip(), a.target_mac(), a.target_ip());
    }
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        let _ = (p.header_len(), p.total_len(), p.ident(), p.frag_offset(), p.is_fragment(), p.ttl());
        let _ = (p.protocol(), p.checksum(), p.src(), p.dst(), p.options().len(), p.payload().len());
        let _ = p.header_checksum_ok();
    }
    if let Ok(p) = ipv6::Packet::new_checked(b) {
        let _ = (p.traffic_class(), p.flow_label(), p.payload_len(), p.hop_limit(), p.src(), p.dst());
        let _ = (p.payload().len(), p.upper());
    }
    if let Ok(t) = tcp::Segment::new_checked(b) {
        let _ = (t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags(), t.window(), t.payload().len());
    }
    if let Ok(u) = udp::Datagram::new_checked(b) {
        let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum(), u.payload().len());
    }
    if let Ok(m) = icmp::Message::new_checked(b) {
        let _ = (
            m.msg_type(),
            m.code(),
            m.checksum(),
            m.rest(),
            m.body().len(),
            m.is_v4_error(),
            m.is_v6_error(),
        );
    }
    let _ = icmp::parse_ndp(b);
    let _ = tcp::ports(b);
}

#[cfg(test)]
mod fuzz {
    //! No view panics on any bytes: construct, then call every accessor.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn no_view_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            exercise_views(&bytes);
        }

        #[test]
        fn no_view_panics_on_plausible_headers(
            first in prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60, 0x44]),
            rest in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut b = vec![first];
            b.extend(rest);
            exercise_views(&b);
        }
    }
}
