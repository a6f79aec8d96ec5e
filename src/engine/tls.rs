//! The server name of a TLS ClientHello (RFC 8446 4.1.2, RFC 6066 3), so
//! host rules (Squid's `dstdomain`) also work on port 443 without a proxy.
//!
//! [`HelloCollector`] reassembles the handshake message from as many TLS
//! records as the client cut it into (RFC 8446 5.1 allows any split), fed
//! in whatever TCP segments carry them, up to [`MAX_HELLO`] bytes; the
//! stream inspector starts one at the start of every stream, including a
//! stream that begins inside a connection (after CONNECT, SOCKS or
//! STARTTLS). The collector is the only thing the inspector calls, so a
//! fuller parser (the lead's `hello::HelloAssembler`) plugs in by replacing
//! the body of [`HelloCollector::feed`] / [`parse_client_hello`].
//!
//! Parses untrusted bytes with explicit bounds checks; never panics.

/// Largest ClientHello handshake message collected (bytes); a longer one is
/// judged on what was collected.
pub const MAX_HELLO: usize = 64 * 1024;

/// Progress of a [`HelloCollector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// More bytes needed.
    NeedMore,
    /// The stream does not start with a TLS ClientHello.
    NotTls,
    /// The ClientHello is complete (or hit the cap): its server name.
    Done(Option<Vec<u8>>),
}

/// Reassembles a ClientHello from handshake records at a stream's start.
#[derive(Debug, Clone, Default)]
pub struct HelloCollector {
    /// Record header being read (5 bytes).
    hdr: [u8; 5],
    hdr_len: u8,
    /// Payload bytes left in the current record.
    rec_left: usize,
    /// Handshake bytes collected so far.
    hs: Vec<u8>,
}

impl HelloCollector {
    /// Feeds the next in-order bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Collected {
        while !data.is_empty() {
            if self.rec_left == 0 {
                let need = 5 - usize::from(self.hdr_len);
                let take = need.min(data.len());
                let at = usize::from(self.hdr_len);
                self.hdr[at..at + take].copy_from_slice(&data[..take]);
                self.hdr_len += u8::try_from(take).unwrap_or(0);
                data = &data[take..];
                // Content type 22 (handshake), legacy version 3.x.
                if self.hdr[0] != 0x16 || (self.hdr_len >= 2 && self.hdr[1] != 3) {
                    return Collected::NotTls;
                }
                if self.hdr_len < 5 {
                    return Collected::NeedMore;
                }
                let len = usize::from(u16::from_be_bytes([self.hdr[3], self.hdr[4]]));
                if len == 0 || len > 16_384 + 256 {
                    return Collected::NotTls;
                }
                self.rec_left = len;
                self.hdr_len = 0;
                continue;
            }
            let take = self.rec_left.min(data.len());
            let room = MAX_HELLO.saturating_sub(self.hs.len());
            self.hs.extend_from_slice(&data[..take.min(room)]);
            self.rec_left -= take;
            data = &data[take..];
            if self.hs.first().is_some_and(|&t| t != 1) {
                return Collected::NotTls;
            }
            if self.hs.len() >= 4 {
                let want = 4
                    + (usize::from(self.hs[1]) << 16
                        | usize::from(self.hs[2]) << 8
                        | usize::from(self.hs[3]));
                if self.hs.len() >= want || self.hs.len() >= MAX_HELLO {
                    return match parse_client_hello(&self.hs) {
                        Some(name) => Collected::Done(name.map(<[u8]>::to_vec)),
                        None => Collected::NotTls,
                    };
                }
            }
        }
        Collected::NeedMore
    }
}

/// Parses a ClientHello handshake message (type, length, body; possibly
/// cut short): `Some(server name)` when it is one, `None` when not.
pub fn parse_client_hello(hs: &[u8]) -> Option<Option<&[u8]>> {
    parse_hello(&mut Reader { b: hs, at: 0 })
}

/// Outcome of parsing the first bytes a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello<'a> {
    /// Looks like a ClientHello; more bytes are needed.
    NeedMore,
    /// Not a TLS ClientHello.
    NotTls,
    /// A ClientHello, with its server name if it has one.
    Done(Option<&'a [u8]>),
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|s| s[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|s| (s[0] as usize) << 8 | s[1] as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|s| (s[0] as usize) << 16 | (s[1] as usize) << 8 | s[2] as usize)
    }
}

/// Parses the start of a client's stream (first TLS record only).
pub fn server_name(buf: &[u8]) -> Hello<'_> {
    if buf.is_empty() {
        return Hello::NeedMore;
    }
    // Record: content type 22 (handshake), version 3.x, length.
    if buf[0] != 0x16 || buf.get(1).is_some_and(|&v| v != 3) {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::NeedMore;
    }
    let rec_len = (buf[3] as usize) << 8 | buf[4] as usize;
    if !(4..=16_384 + 256).contains(&rec_len) {
        return Hello::NotTls;
    }
    if buf[5..].first().is_some_and(|&t| t != 1) {
        return Hello::NotTls;
    }
    if buf.len() < 5 + rec_len {
        return Hello::NeedMore;
    }
    let mut r = Reader {
        b: &buf[5..5 + rec_len],
        at: 0,
    };
    parse_hello(&mut r).map_or(Hello::NotTls, Hello::Done)
}

fn parse_hello<'a>(r: &mut Reader<'a>) -> Option<Option<&'a [u8]>> {
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    // A hello longer than its first record is cut there: search what we have.
    let body_end = (r.at + len).min(r.b.len());
    let mut h = Reader {
        b: &r.b[..body_end],
        at: r.at,
    };
    h.take(2 + 32)?; // client version, random
    let sid = h.u8()?;
    h.take(sid)?;
    let suites = h.u16()?;
    h.take(suites)?;
    let comp = h.u8()?;
    h.take(comp)?;
    let Some(ext_len) = h.u16() else {
        return Some(None); // no extensions
    };
    let end = (h.at + ext_len).min(h.b.len());
    while h.at + 4 <= end {
        let typ = h.u16()?;
        let len = h.u16()?;
        let data = h.take(len)?;
        if typ == 0 {
            let mut s = Reader { b: data, at: 0 };
            let list = s.u16()?;
            let list_end = (s.at + list).min(data.len());
            while s.at + 3 <= list_end {
                let kind = s.u8()?;
                let n = s.u16()?;
                let name = s.take(n)?;
                if kind == 0 {
                    return Some(Some(name));
                }
            }
            return Some(None);
        }
    }
    Some(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use crate::sample::tls_client_hello as client_hello;

    #[test]
    fn finds_the_server_name_and_survives_any_cut() {
        let h = client_hello("gateway.messenger.hotmail.com");
        assert_eq!(
            server_name(&h),
            Hello::Done(Some(&b"gateway.messenger.hotmail.com"[..]))
        );
        for cut in 0..h.len() {
            assert_eq!(server_name(&h[..cut]), Hello::NeedMore, "cut {cut}");
        }
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        // Corrupt every byte in turn: never a panic.
        for i in 0..h.len() {
            let mut x = h.clone();
            x[i] ^= 0xff;
            let _ = server_name(&x);
            let _ = HelloCollector::default().feed(&x);
        }
    }

    /// Re-frames a one-record hello into records of `size` payload bytes.
    pub fn split_records(h: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in h[5..].chunks(size) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn collects_a_hello_cut_into_records_and_segments() {
        let h = client_hello("gateway.messenger.hotmail.com");
        for size in [1, 7, 40, 100, 10_000] {
            let recs = split_records(&h, size);
            // Only one record: the first-record parser sees a cut hello.
            if size < 60 {
                assert_ne!(
                    server_name(&recs),
                    Hello::Done(Some(&b"gateway.messenger.hotmail.com"[..]))
                );
            }
            for seg in [1, 3, 1460] {
                let mut c = HelloCollector::default();
                let mut got = Collected::NeedMore;
                for piece in recs.chunks(seg) {
                    got = c.feed(piece);
                    if got != Collected::NeedMore {
                        break;
                    }
                }
                assert_eq!(
                    got,
                    Collected::Done(Some(b"gateway.messenger.hotmail.com".to_vec())),
                    "records of {size}, segments of {seg}"
                );
            }
        }
        assert_eq!(
            HelloCollector::default().feed(b"GET / HTTP/1.1"),
            Collected::NotTls
        );
        assert_eq!(HelloCollector::default().feed(&[0x16, 3]), Collected::NeedMore);
    }

    #[test]
    fn a_hello_longer_than_one_record_is_collected_whole() {
        // A 20 KiB padding extension before the server name: two full records.
        let name = b"gateway.messenger.hotmail.com";
        let mut ext = Vec::new();
        ext.extend_from_slice(&21u16.to_be_bytes());
        ext.extend_from_slice(&20_000u16.to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, 20_000));
        ext.extend_from_slice(&0u16.to_be_bytes());
        let sni_len = u16::try_from(name.len()).unwrap();
        ext.extend_from_slice(&(sni_len + 5).to_be_bytes());
        ext.extend_from_slice(&(sni_len + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&sni_len.to_be_bytes());
        ext.extend_from_slice(name);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut hs = vec![1, len[1], len[2], len[3]];
        hs.extend_from_slice(&body);
        let mut recs = Vec::new();
        for chunk in hs.chunks(16_384) {
            recs.extend_from_slice(&[0x16, 3, 3]);
            recs.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
            recs.extend_from_slice(chunk);
        }
        let mut c = HelloCollector::default();
        let mut got = Collected::NeedMore;
        for piece in recs.chunks(1448) {
            got = c.feed(piece);
            if got != Collected::NeedMore {
                break;
            }
        }
        assert_eq!(got, Collected::Done(Some(name.to_vec())));
    }
}
