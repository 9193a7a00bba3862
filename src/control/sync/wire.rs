//! Flow sync's wire format between boxes: a TCP stream of frames, each a
//! 4-byte big-endian length and a message:
//!
//! ```text
//! message   = "L4SY" version:u8 kind:u8 body
//! kind 1    Hello    body = router_id:u32        (the sender's [bgp] router id, or 0)
//! kind 2    Entries  body = queued_unix_ms:u64 count:u16 entry*count
//!                     (queued_unix_ms: when the oldest entry was queued, by the sender's clock; 0 in a
//!                     dump, whose entries are old by nature — the receiver's lag figures skip it)
//! kind 3    DumpEnd  body = (none)               (every entry the sender had is sent)
//! entry     = flags:u8 proto:u8 src dst sport:u16 dport:u16 backend ttl_ms:u32
//!             flags bit 0: src and dst are IPv6 (16 bytes each, else 4)
//!             flags bit 1: backend is IPv6 (16 bytes, else 4)
//! ```
//!
//! An IPv4 entry is 22 bytes, a batch's header 16. A reader refuses anything else — a bad magic,
//! version or kind, a length over [`MAX_FRAME`], an entry cut short — with an
//! error that names it (the connection is then closed and counted).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::balancer::flow::FlowKey;

pub const MAGIC: &[u8; 4] = b"L4SY";
pub const VERSION: u8 = 1;
/// The longest frame a reader takes (a batch of entries).
pub const MAX_FRAME: usize = 64 * 1024;
/// Entries per frame a writer puts at most (IPv6 ones fit in [`MAX_FRAME`]).
pub const MAX_ENTRIES: usize = 1000;

/// One flow another box tracks: its key, the backend it goes to, and how
/// long its entry lives on without packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncEntry {
    pub key: FlowKey,
    pub backend: IpAddr,
    pub ttl_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello { router_id: u32 },
    Entries { queued_unix_ms: u64, entries: Vec<SyncEntry> },
    DumpEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes: over the {MAX_FRAME}-byte limit")]
    TooLong(usize),
    #[error("not a flow-sync message (magic {0:02x?})")]
    Magic(Vec<u8>),
    #[error("flow-sync version {0}; this l4lb speaks version {VERSION}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message cut short: {0}")]
    Short(&'static str),
    #[error("{0} bytes after the message's end")]
    Trailing(usize),
    #[error("entry {index}: unknown flags {flags:#04x}")]
    Flags { index: usize, flags: u8 },
}

/// Appends one frame (length and message) to `out`.
pub fn encode(m: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    match m {
        Message::Hello { router_id } => {
            out.push(1);
            out.extend_from_slice(&router_id.to_be_bytes());
        }
        Message::Entries { queued_unix_ms, entries: es } => {
            out.push(2);
            out.extend_from_slice(&queued_unix_ms.to_be_bytes());
            out.extend_from_slice(&(es.len() as u16).to_be_bytes());
            for e in es {
                encode_entry(e, out);
            }
        }
        Message::DumpEnd => out.push(3),
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_entry(e: &SyncEntry, out: &mut Vec<u8>) {
    let v6 = !e.key.is_v4();
    let flags = v6 as u8 | (e.backend.is_ipv6() as u8) << 1;
    out.push(flags);
    out.push(e.key.proto);
    if v6 {
        out.extend_from_slice(&e.key.src);
        out.extend_from_slice(&e.key.dst);
    } else {
        out.extend_from_slice(&e.key.src[12..]);
        out.extend_from_slice(&e.key.dst[12..]);
    }
    out.extend_from_slice(&e.key.src_port.to_be_bytes());
    out.extend_from_slice(&e.key.dst_port.to_be_bytes());
    match e.backend {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    out.extend_from_slice(&e.ttl_ms.to_be_bytes());
}

/// The length of the frame at the start of `buf`, once its 4-byte header is
/// there.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(h) = buf.get(..4) else { return Ok(None) };
    let n = u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLong(n));
    }
    Ok(Some(n))
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Short(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn addr(&mut self, v6: bool, what: &'static str) -> Result<IpAddr, WireError> {
        Ok(if v6 {
            let b: [u8; 16] = self.take(16, what)?.try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            let b: [u8; 4] = self.take(4, what)?.try_into().expect("4 bytes");
            IpAddr::V4(Ipv4Addr::from(b))
        })
    }
}

/// Decodes one message (a frame without its length).
pub fn decode(msg: &[u8]) -> Result<Message, WireError> {
    let mut c = Cursor { b: msg };
    let magic = c.take(4, "magic")?;
    if magic != MAGIC {
        return Err(WireError::Magic(magic.to_vec()));
    }
    let v = c.u8("version")?;
    if v != VERSION {
        return Err(WireError::Version(v));
    }
    let m = match c.u8("kind")? {
        1 => Message::Hello { router_id: c.u32("router id")? },
        2 => {
            let queued_unix_ms = c.u64("queued time")?;
            let n = c.u16("entry count")? as usize;
            let mut es = Vec::with_capacity(n.min(MAX_ENTRIES));
            for index in 0..n {
                let flags = c.u8("entry flags")?;
                if flags & !3 != 0 {
                    return Err(WireError::Flags { index, flags });
                }
                let proto = c.u8("entry protocol")?;
                let src = c.addr(flags & 1 == 1, "entry source")?;
                let dst = c.addr(flags & 1 == 1, "entry destination")?;
                let (sport, dport) = (c.u16("entry source port")?, c.u16("entry destination port")?);
                let backend = c.addr(flags & 2 == 2, "entry backend")?;
                let ttl_ms = c.u32("entry ttl")?;
                es.push(SyncEntry { key: FlowKey::new(src, dst, proto, sport, dport), backend, ttl_ms });
            }
            Message::Entries { queued_unix_ms, entries: es }
        }
        3 => Message::DumpEnd,
        k => return Err(WireError::Kind(k)),
    };
    if !c.b.is_empty() {
        return Err(WireError::Trailing(c.b.len()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(src: &str, dst: &str, backend: &str) -> SyncEntry {
        SyncEntry {
            key: FlowKey::new(src.parse().unwrap(), dst.parse().unwrap(), 6, 40000, 80),
            backend: backend.parse().unwrap(),
            ttl_ms: 900_000,
        }
    }

    #[test]
    fn messages_survive_the_wire_and_an_ipv4_entry_is_22_bytes() {
        let es = vec![
            entry("198.19.0.2", "198.18.100.1", "198.18.0.12"),
            entry("2001:db8:19::2", "2001:db8:100::1", "2001:db8::12"),
            entry("198.19.0.2", "198.18.100.1", "2001:db8::13"),
        ];
        let mut buf = Vec::new();
        let batch = Message::Entries { queued_unix_ms: 1_796_000_000_000, entries: es.clone() };
        for m in [Message::Hello { router_id: 0xc612_0001 }, batch, Message::DumpEnd] {
            buf.clear();
            encode(&m, &mut buf);
            let n = frame_len(&buf).unwrap().unwrap();
            assert_eq!(n + 4, buf.len());
            assert_eq!(decode(&buf[4..]).unwrap(), m);
        }
        buf.clear();
        encode(&Message::Entries { queued_unix_ms: 0, entries: vec![es[0]; 100] }, &mut buf);
        assert_eq!(buf.len(), 4 + 6 + 8 + 2 + 100 * 22);
    }

    #[test]
    fn bad_messages_are_refused_with_the_reason() {
        let mut buf = Vec::new();
        let one = vec![entry("198.19.0.2", "198.18.100.1", "198.18.0.12")];
        encode(&Message::Entries { queued_unix_ms: 5, entries: one }, &mut buf);
        let m = &buf[4..];
        assert_eq!(decode(b"HTTP/1.1"), Err(WireError::Magic(b"HTTP".to_vec())));
        let mut v = m.to_vec();
        v[4] = 9;
        assert_eq!(decode(&v), Err(WireError::Version(9)));
        v[4] = VERSION;
        v[5] = 7;
        assert_eq!(decode(&v), Err(WireError::Kind(7)));
        for cut in 0..m.len() {
            assert!(decode(&m[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = m.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(WireError::Trailing(1)));
        let mut flags = m.to_vec();
        flags[16] = 0x80;
        assert_eq!(decode(&flags), Err(WireError::Flags { index: 0, flags: 0x80 }));
        assert_eq!(frame_len(&(MAX_FRAME as u32 + 1).to_be_bytes()), Err(WireError::TooLong(MAX_FRAME + 1)));
        assert_eq!(frame_len(&[0, 0]), Ok(None));
    }
}
