//! The server name of a TLS ClientHello (RFC 8446 4.1.2, RFC 6066 3), so
//! host rules (Squid's `dstdomain`) also work on port 443 without a proxy.
//!
//! Parses untrusted bytes with explicit bounds checks; never panics.

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
        }
    }
}
