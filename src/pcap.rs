//! Classic libpcap files (the format tcpdump, DPDK's `net_pcap` and testpmd
//! read and write): reading both byte orders and both time resolutions,
//! writing little-endian microsecond Ethernet captures.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record l4lb accepts (jumbo frames fit with room).
pub const MAX_RECORD: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a pcap file: it does not start with a pcap magic number (it starts {0:#010x}; pcapng is not read: convert with `editcap -F pcap`)")]
    BadMagic(u32),
    #[error("not a pcap file: {0} bytes, shorter than a pcap file header (24)")]
    ShortHeader(usize),
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
    #[error("record {index}: captured length {len} is over the {MAX_RECORD}-byte limit")]
    RecordTooLong { index: u64, len: u32 },
    #[error("record {index}: file ends inside the record")]
    Truncated { index: u64 },
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    /// Sub-second part in nanoseconds (whatever the file's resolution).
    pub ts_nsec: u32,
    /// Length on the wire (may exceed `data.len()` for truncated captures).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Streams records out of a pcap file.
pub struct Reader<R> {
    inner: R,
    swapped: bool,
    nanos: bool,
    index: u64,
    pub link_type: u32,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the file header (Ethernet only).
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        let got = read_full(&mut inner, &mut h)?;
        if got < h.len() {
            return Err(PcapError::ShortHeader(got));
        }
        let magic_le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swapped, nanos) = match magic_le {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            m => return Err(PcapError::BadMagic(m)),
        };
        let mut r = Reader { inner, swapped, nanos, index: 0, link_type: 0 };
        r.link_type = r.u32_at(&h, 20);
        if r.link_type != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(r.link_type));
        }
        Ok(r)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        match read_full(&mut self.inner, &mut h)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(PcapError::Truncated { index: self.index }),
        }
        let ts_sec = self.u32_at(&h, 0);
        let frac = self.u32_at(&h, 4);
        let incl = self.u32_at(&h, 8);
        let orig_len = self.u32_at(&h, 12);
        if incl > MAX_RECORD {
            return Err(PcapError::RecordTooLong { index: self.index, len: incl });
        }
        let mut data = vec![0u8; incl as usize];
        if read_full(&mut self.inner, &mut data)? != data.len() {
            return Err(PcapError::Truncated { index: self.index });
        }
        self.index += 1;
        let ts_nsec = if self.nanos { frac } else { frac.saturating_mul(1000) };
        Ok(Some(Record { ts_sec, ts_nsec, orig_len, data }))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, PcapError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes a little-endian, microsecond-resolution Ethernet pcap.
pub struct Writer<W: Write> {
    inner: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut inner: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_US.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&h)?;
        Ok(Writer { inner })
    }

    /// Writes one frame with the given timestamp.
    pub fn write(&mut self, ts_sec: u32, ts_usec: u32, frame: &[u8]) -> io::Result<()> {
        let len = frame.len() as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
        h[4..8].copy_from_slice(&ts_usec.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(frame)
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Reads every frame of a pcap file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<Record>, PcapError> {
    let f = io::BufReader::new(std::fs::File::open(path)?);
    Reader::new(f)?.collect()
}

/// Writes frames to a new pcap file (timestamps 0, 1 µs, 2 µs, …).
pub fn write_file<'a>(path: &std::path::Path, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
    let mut w = Writer::new(io::BufWriter::new(std::fs::File::create(path)?))?;
    for (i, f) in frames.into_iter().enumerate() {
        w.write(0, i as u32, f)?;
    }
    w.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.write(1, 2, &[1, 2, 3]).unwrap();
        w.write(3, 999_999, &[0xff; 60]).unwrap();
        let bytes = w.into_inner().unwrap();
        let recs: Vec<Record> = Reader::new(&bytes[..]).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data, vec![1, 2, 3]);
        assert_eq!((recs[0].ts_sec, recs[0].ts_nsec), (1, 2000));
        assert_eq!(recs[1].data, vec![0xff; 60]);
    }

    #[test]
    fn big_endian_nanosecond_file() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_NS.to_be_bytes());
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&5u32.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&2u32.to_be_bytes());
        f.extend_from_slice(&2u32.to_be_bytes());
        f.extend_from_slice(&[9, 8]);
        let recs: Vec<Record> = Reader::new(&f[..]).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs, vec![Record { ts_sec: 5, ts_nsec: 7, orig_len: 2, data: vec![9, 8] }]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(Reader::new(&[0u8; 24][..]), Err(PcapError::BadMagic(0))));
        // A short text file, a pcapng file: the message says what is wrong.
        let e = Reader::new(&b"hello\n"[..]).err().unwrap().to_string();
        assert_eq!(e, "not a pcap file: 6 bytes, shorter than a pcap file header (24)");
        let pcapng = [
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let e = Reader::new(&pcapng[..]).err().unwrap().to_string();
        assert!(
            e.starts_with("not a pcap file: it does not start with a pcap magic number")
                && e.contains("pcapng"),
            "{e}"
        );
        let mut w = Writer::new(Vec::new()).unwrap();
        w.write(0, 0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.into_inner().unwrap();
        bytes.pop();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated { index: 0 })));
        // An absurd record length is refused before allocating.
        let mut w = Writer::new(Vec::new()).unwrap();
        w.write(0, 0, &[1]).unwrap();
        let mut bytes = w.into_inner().unwrap();
        bytes[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::RecordTooLong { .. })));
    }
}
