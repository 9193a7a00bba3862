//! The small packet interface the pipeline works on, implemented by DPDK's
//! `Mbuf` and by [`TestPacket`] (a plain buffer with headroom), so the whole
//! per-packet logic runs and is tested without EAL.

pub trait Packet {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// The packet's length: `data().len()` without making the slice.
    #[inline(always)]
    fn len(&self) -> usize {
        self.data().len()
    }
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Grows the packet at the front by `n` bytes; false if there is no room.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front.
    fn trim_front(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the end.
    fn trim_back(&mut self, n: usize) -> bool;
    /// Grows the packet at the end by `n` (unspecified) bytes.
    fn append(&mut self, n: usize) -> bool;
}

#[cfg(feature = "dpdk")]
impl Packet for crate::dpdk::Mbuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        crate::dpdk::Mbuf::data(self)
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        crate::dpdk::Mbuf::data_mut(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        crate::dpdk::Mbuf::len(self)
    }
    #[inline(always)]
    fn prepend(&mut self, n: usize) -> bool {
        crate::dpdk::Mbuf::prepend(self, n).is_some()
    }
    #[inline(always)]
    fn trim_front(&mut self, n: usize) -> bool {
        crate::dpdk::Mbuf::trim_front(self, n)
    }
    #[inline(always)]
    fn trim_back(&mut self, n: usize) -> bool {
        crate::dpdk::Mbuf::trim_back(self, n)
    }
    #[inline(always)]
    fn append(&mut self, n: usize) -> bool {
        crate::dpdk::Mbuf::append(self, n).is_some()
    }
}

/// A packet in an ordinary buffer with fixed headroom and tailroom, like an mbuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// DPDK's default mbuf headroom.
pub const DEFAULT_HEADROOM: usize = 128;

impl TestPacket {
    /// `bytes` with DPDK's default headroom and room to grow to 2048 bytes.
    pub fn new(bytes: &[u8]) -> TestPacket {
        Self::with_room(bytes, DEFAULT_HEADROOM, 2048usize.saturating_sub(bytes.len()))
    }

    pub fn with_room(bytes: &[u8], headroom: usize, tailroom: usize) -> TestPacket {
        let mut buf = vec![0u8; headroom + bytes.len() + tailroom];
        buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
        TestPacket { buf, start: headroom, end: headroom + bytes.len() }
    }

    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Replaces the contents with `bytes` at the default headroom, reusing the
    /// buffer (no allocation when it is large enough).
    pub fn reset(&mut self, bytes: &[u8]) {
        let head = DEFAULT_HEADROOM.min(self.buf.len().saturating_sub(bytes.len()));
        if self.buf.len() < head + bytes.len() {
            self.buf.resize(head + bytes.len(), 0);
        }
        self.buf[head..head + bytes.len()].copy_from_slice(bytes);
        self.start = head;
        self.end = head + bytes.len();
    }
}

impl Packet for TestPacket {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn len(&self) -> usize {
        self.end - self.start
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn trim_front(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn trim_back(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.buf.len() {
            return false;
        }
        self.end += n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_respected() {
        let mut p = TestPacket::with_room(&[1, 2, 3], 4, 2);
        assert!(p.prepend(4));
        assert!(!p.prepend(1));
        assert_eq!(p.data().len(), 7);
        assert!(p.trim_front(4));
        assert_eq!(p.data(), &[1, 2, 3]);
        assert!(p.append(2));
        assert!(!p.append(1));
        assert!(p.trim_back(2));
        assert!(!p.trim_back(4));
        assert_eq!(p.data(), &[1, 2, 3]);
    }
}
