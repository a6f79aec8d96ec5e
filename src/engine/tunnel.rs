//! Tunnels that start inside a connection: SOCKS 4/4a/5 negotiations and
//! STARTTLS in SMTP, IMAP, POP3 and XMPP. (HTTP CONNECT and Upgrade are
//! read by the HTTP walker, [`super::http`].)
//!
//! Why: a client behind a SOCKS proxy, or a mail or XMPP session that turns
//! to TLS, shows the filter a negotiation first and the real stream (a TLS
//! ClientHello, MSNP's `VER`) only afterwards, at some byte offset that no
//! stream-start rule would look at. These probes find where the tunnelled
//! stream starts so the inspector can judge it as a new stream from its
//! first byte, and report the destination a SOCKS client asked for so it is
//! judged like a destination (host rules, host signatures, app ports).
//!
//! Guarantees: parsing is of untrusted bytes with explicit bounds and never
//! panics; a probe that sees anything off the protocol gives up (returns
//! nothing), so an unrelated stream that happens to start with 0x04 or
//! 0x05 is never judged by a made-up destination; memory is one boxed
//! buffer of at most [`MAX_NEGOTIATION`] bytes per direction, freed once the
//! tunnel opens or the probe gives up.

/// Most bytes of a SOCKS negotiation kept per direction.
pub const MAX_NEGOTIATION: usize = 1024;

/// Most bytes of a line the STARTTLS probe keeps.
const LINE: usize = 32;

/// A destination a client asked a proxy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Host name (lower case) or the address as text.
    pub host: Vec<u8>,
    /// Destination port.
    pub port: u16,
}

/// What a probe saw in the bytes it was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client's request is complete at this offset: judge the
    /// destination; the client's later bytes are the tunnel's.
    Request(Dest, usize),
    /// The proxy's (or server's) success reply ends at this offset: both
    /// directions' later bytes are a new stream.
    Opened(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Four,
    Five,
}

/// A SOCKS negotiation being followed (owned by the client's direction).
#[derive(Debug, Clone)]
pub struct Socks {
    version: Version,
    client: Vec<u8>,
    server: Vec<u8>,
    /// The client's request was complete and judged.
    requested: bool,
}

impl Socks {
    /// Starts following a client stream whose first byte is `first`, if it
    /// can be a SOCKS client.
    pub fn start(first: u8) -> Option<Socks> {
        let version = match first {
            4 => Version::Four,
            5 => Version::Five,
            _ => return None,
        };
        Some(Socks {
            version,
            client: Vec::new(),
            server: Vec::new(),
            requested: false,
        })
    }

    /// Client bytes. `None` from the outer option: the stream is not SOCKS
    /// (give up). `Some(None)`: need more.
    pub fn client(&mut self, data: &[u8]) -> Option<Option<Event>> {
        if self.requested {
            return Some(None);
        }
        let before = self.client.len();
        let room = MAX_NEGOTIATION.saturating_sub(before);
        self.client.extend_from_slice(&data[..data.len().min(room)]);
        let parsed = match self.version {
            Version::Four => socks4_request(&self.client),
            Version::Five => socks5_request(&self.client),
        };
        match parsed {
            Parse::Bad => None,
            Parse::More if self.client.len() >= MAX_NEGOTIATION => None,
            Parse::More => Some(None),
            Parse::Done(dest, end) => {
                self.requested = true;
                // Offset within `data` of the end of the request.
                Some(Some(Event::Request(dest, end.saturating_sub(before))))
            }
        }
    }

    /// Proxy bytes. Same convention as [`Socks::client`].
    pub fn server(&mut self, data: &[u8]) -> Option<Option<Event>> {
        let before = self.server.len();
        let room = MAX_NEGOTIATION.saturating_sub(before);
        self.server.extend_from_slice(&data[..data.len().min(room)]);
        let s = &self.server;
        let end = match self.version {
            Version::Four => {
                if s.len() < 8 {
                    return Some(None);
                }
                // VN 0, CD 90 = granted.
                if s[0] != 0 || s[1] != 90 || !self.requested {
                    return None;
                }
                8
            }
            Version::Five => match socks5_reply(s, self.requested) {
                Parse::Bad => return None,
                Parse::More => return Some(None),
                Parse::Done((), end) => end,
            },
        };
        Some(Some(Event::Opened(end.saturating_sub(before))))
    }
}

enum Parse<T> {
    More,
    Bad,
    Done(T, usize),
}

fn printable(s: &[u8]) -> bool {
    s.iter().all(|&c| (0x21..0x7f).contains(&c))
}

/// `VN CD DSTPORT DSTIP USERID NUL [HOST NUL]` (SOCKS4, 4a).
fn socks4_request(b: &[u8]) -> Parse<Dest> {
    if b.len() >= 2 && b[1] != 1 {
        return Parse::Bad; // only CONNECT opens a stream
    }
    if b.len() < 9 {
        return Parse::More;
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = [b[4], b[5], b[6], b[7]];
    let Some(nul) = b[8..].iter().position(|&c| c == 0) else {
        return if b.len() > 8 + 255 || !printable(&b[8..]) {
            Parse::Bad
        } else {
            Parse::More
        };
    };
    if !printable(&b[8..8 + nul]) || port == 0 {
        return Parse::Bad;
    }
    let mut end = 8 + nul + 1;
    let host = if ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0 {
        // 4a: a host name follows.
        let Some(n) = b[end..].iter().position(|&c| c == 0) else {
            return if b.len() - end > 255 {
                Parse::Bad
            } else {
                Parse::More
            };
        };
        let h = &b[end..end + n];
        if h.is_empty() || !printable(h) {
            return Parse::Bad;
        }
        end += n + 1;
        h.to_ascii_lowercase()
    } else {
        std::net::Ipv4Addr::from(ip).to_string().into_bytes()
    };
    Parse::Done(Dest { host, port }, end)
}

/// Greeting, optional username/password (RFC 1929), then the request
/// (RFC 1928 4): `05 CMD 00 ATYP ADDR PORT`.
fn socks5_request(b: &[u8]) -> Parse<Dest> {
    let Some(&n) = b.get(1) else {
        return Parse::More;
    };
    let n = usize::from(n);
    if n == 0 || n > 10 {
        return Parse::Bad;
    }
    let mut at = 2 + n;
    if b.len() < at {
        return Parse::More;
    }
    match b.get(at) {
        None => return Parse::More,
        // RFC 1929 sub-negotiation.
        Some(1) => {
            let Some(&ulen) = b.get(at + 1) else {
                return Parse::More;
            };
            let p = at + 2 + usize::from(ulen);
            let Some(&plen) = b.get(p) else { return Parse::More };
            at = p + 1 + usize::from(plen);
        }
        Some(5) => {}
        Some(_) => return Parse::Bad,
    }
    let Some(req) = b.get(at..) else {
        return Parse::More;
    };
    if req.len() < 4 {
        return if req.first().is_some_and(|&v| v != 5) {
            Parse::Bad
        } else {
            Parse::More
        };
    }
    if req[0] != 5 || req[1] != 1 || req[2] != 0 {
        return Parse::Bad;
    }
    let (host, len) = match req[3] {
        1 => {
            let Some(a) = req.get(4..8) else {
                return Parse::More;
            };
            let a: [u8; 4] = [a[0], a[1], a[2], a[3]];
            (std::net::Ipv4Addr::from(a).to_string().into_bytes(), 4)
        }
        3 => {
            let Some(&l) = req.get(4) else { return Parse::More };
            let Some(h) = req.get(5..5 + usize::from(l)) else {
                return Parse::More;
            };
            if h.is_empty() || !printable(h) {
                return Parse::Bad;
            }
            (h.to_ascii_lowercase(), 1 + usize::from(l))
        }
        4 => {
            let Some(a) = req.get(4..20) else {
                return Parse::More;
            };
            let mut x = [0u8; 16];
            x.copy_from_slice(a);
            (std::net::Ipv6Addr::from(x).to_string().into_bytes(), 16)
        }
        _ => return Parse::Bad,
    };
    let Some(p) = req.get(4 + len..6 + len) else {
        return Parse::More;
    };
    let port = u16::from_be_bytes([p[0], p[1]]);
    Parse::Done(Dest { host, port }, at + 6 + len)
}

/// Method choice, optional RFC 1929 status, then `05 REP 00 ATYP ADDR PORT`.
fn socks5_reply(b: &[u8], requested: bool) -> Parse<()> {
    if b.len() < 2 {
        return Parse::More;
    }
    if b[0] != 5 || b[1] == 0xff {
        return Parse::Bad;
    }
    let mut at = 2;
    if b[1] == 2 {
        let Some(st) = b.get(2..4) else { return Parse::More };
        if st[0] != 1 || st[1] != 0 {
            return Parse::Bad;
        }
        at = 4;
    }
    let Some(r) = b.get(at..at + 4) else {
        return Parse::More;
    };
    if r[0] != 5 || r[1] != 0 || !requested {
        return Parse::Bad;
    }
    let len = match r[3] {
        1 => 4,
        4 => 16,
        3 => match b.get(at + 4) {
            Some(&l) => 1 + usize::from(l),
            None => return Parse::More,
        },
        _ => return Parse::Bad,
    };
    let end = at + 4 + len + 2;
    if b.len() < end {
        return Parse::More;
    }
    Parse::Done((), end)
}

/// True for a line starting like an SMTP/FTP reply (`250 `, `250-`).
fn is_reply_code(line: &[u8]) -> bool {
    line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit) && matches!(line[3], b' ' | b'-')
}

/// STARTTLS dialects recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartTls {
    /// Nothing asked.
    #[default]
    None,
    /// SMTP `STARTTLS` (RFC 3207), answered by `220`.
    Smtp,
    /// IMAP `tag STARTTLS` (RFC 9051), answered by `tag OK`.
    Imap,
    /// POP3 `STLS` (RFC 2595), answered by `+OK`.
    Pop3,
    /// XMPP `<starttls/>` (RFC 6120 5.4), answered by `<proceed/>`.
    Xmpp,
}

/// Line-start collector of one direction for the STARTTLS probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines {
    buf: [u8; LINE],
    len: u8,
    /// The stream starts with `<` (XML: XMPP).
    xml: Option<bool>,
    /// Last bytes seen, so an XML tag cut across segments is found.
    win: [u8; WIN],
    win_len: u8,
    /// `<proceed` was seen; its tag has not ended yet.
    proceed: bool,
}

/// Bytes of XML carried between segments (longest tag searched - 1).
const WIN: usize = 15;

impl Lines {
    /// Finds `needle` in the stream, also across the previous segment;
    /// returns the offset in `data` just past its end. Updates the window.
    fn find_xml(&mut self, data: &[u8], needle: &[u8]) -> Option<usize> {
        let w = usize::from(self.win_len);
        let mut junction = [0u8; 2 * WIN];
        let head = data.len().min(WIN);
        junction[..w].copy_from_slice(&self.win[..w]);
        junction[w..w + head].copy_from_slice(&data[..head]);
        // A match wholly inside the window was reported with its segment.
        let found = memchr::memmem::find(&junction[..w + head], needle)
            .and_then(|k| (k + needle.len()).checked_sub(w).filter(|&e| e > 0))
            .or_else(|| memchr::memmem::find(data, needle).map(|k| k + needle.len()));
        // Keep the last WIN bytes of (window + data).
        let mut all = [0u8; 2 * WIN];
        let tail = &data[data.len().saturating_sub(WIN)..];
        let keep = (WIN - tail.len()).min(w);
        all[..keep].copy_from_slice(&self.win[w - keep..w]);
        all[keep..keep + tail.len()].copy_from_slice(tail);
        let n = keep + tail.len();
        self.win[..n].copy_from_slice(&all[..n]);
        self.win_len = u8::try_from(n).unwrap_or(0);
        found
    }

    fn is_xml(&mut self, data: &[u8]) -> bool {
        if self.xml.is_none() && !data.is_empty() {
            self.xml = Some(data[0] == b'<');
        }
        self.xml == Some(true)
    }

    /// Client bytes: the dialect of a STARTTLS command in them, if any.
    pub fn client(&mut self, data: &[u8]) -> StartTls {
        if self.is_xml(data) {
            return if self.find_xml(data, b"<starttls").is_some() {
                StartTls::Xmpp
            } else {
                StartTls::None
            };
        }
        let mut found = StartTls::None;
        self.lines(data, |line| {
            let l = line.trim_ascii_end();
            let upper = l.to_ascii_uppercase();
            if upper == b"STARTTLS" {
                found = StartTls::Smtp;
            } else if upper == b"STLS" {
                found = StartTls::Pop3;
            } else if upper.ends_with(b" STARTTLS") && !upper.starts_with(b" ") && !is_reply_code(&upper) {
                found = StartTls::Imap;
            }
            false
        });
        found
    }

    /// Server bytes after a STARTTLS of dialect `kind`: `Some(Some(end))`
    /// when a positive answer ends at `end`, `Some(None)` on a refusal,
    /// `None` when no complete answer yet.
    pub fn server(&mut self, data: &[u8], kind: StartTls) -> Option<Option<usize>> {
        if kind == StartTls::Xmpp {
            // The new stream starts after the `<proceed .../>` tag's `>`,
            // wherever the segments were cut.
            if self.proceed {
                return memchr::memchr(b'>', data).map(|g| Some(g + 1));
            }
            let mut probe = *self;
            if let Some(k) = self.find_xml(data, b"<proceed") {
                return match memchr::memchr(b'>', &data[k..]) {
                    Some(g) => Some(Some(k + g + 1)),
                    None => {
                        self.proceed = true;
                        None
                    }
                };
            }
            return probe.find_xml(data, b"<failure").map(|_| None);
        }
        let mut answer = None;
        self.lines(data, |line| {
            let ok = match kind {
                StartTls::Smtp => line.starts_with(b"220 "),
                StartTls::Pop3 => line.starts_with(b"+OK"),
                StartTls::Imap => {
                    let u = line.to_ascii_uppercase();
                    // Untagged lines (`* ...`) come before the tagged answer.
                    if u.starts_with(b"* ") {
                        return false;
                    }
                    memchr::memmem::find(&u, b" OK").is_some()
                }
                StartTls::Xmpp | StartTls::None => false,
            };
            // SMTP continuation lines (`220-`) precede the last one.
            if kind == StartTls::Smtp && line.starts_with(b"220-") {
                return false;
            }
            answer = Some(ok);
            true
        })
        .map(|end| if answer == Some(true) { Some(end) } else { None })
    }

    /// Calls `f` on the first [`LINE`] bytes of every line completed in
    /// `data` (with the carried start of a line); stops when `f` says so and
    /// returns the offset just past that line.
    fn lines(&mut self, data: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> Option<usize> {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            let piece = &data[start..nl];
            let room = LINE - usize::from(self.len);
            let take = piece.len().min(room);
            let at = usize::from(self.len);
            self.buf[at..at + take].copy_from_slice(&piece[..take]);
            let line = self.buf;
            let len = at + take;
            self.len = 0;
            start = nl + 1;
            if f(&line[..len]) {
                return Some(nl + 1);
            }
        }
        let piece = &data[start..];
        let at = usize::from(self.len);
        let take = piece.len().min(LINE - at);
        self.buf[at..at + take].copy_from_slice(&piece[..take]);
        self.len = u8::try_from(at + take).unwrap_or(0);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_events(s: &mut Socks, bytes: &[u8], cut: usize) -> Option<Event> {
        let mut at = 0;
        for piece in bytes.chunks(cut) {
            if let Some(Some(ev)) = s.client(piece) {
                return Some(match ev {
                    Event::Request(d, end) => Event::Request(d, at + end),
                    e => e,
                });
            }
            at += piece.len();
        }
        None
    }

    #[test]
    fn socks_requests_name_their_destination_whatever_the_cut() {
        let s5: Vec<u8> = [
            &[5u8, 1, 0][..],
            &[5, 1, 0, 3, 29],
            b"Messenger.Hotmail.com.example"[..29].as_ref(),
            &[0x07, 0x47],
        ]
        .concat();
        let s4a: Vec<u8> = [
            &[4u8, 1, 0x07, 0x47, 0, 0, 0, 1][..],
            b"user\0messenger.hotmail.com\0",
        ]
        .concat();
        let s4: Vec<u8> = [&[4u8, 1, 0, 80, 198, 51, 100, 7][..], b"\0"].concat();
        let s5auth: Vec<u8> = [
            &[5u8, 1, 2][..],
            &[1, 1, b'u', 1, b'p'],
            &[5, 1, 0, 1, 203, 0, 113, 5, 0x07, 0x47],
        ]
        .concat();
        for (bytes, host, port) in [
            (&s5, "messenger.hotmail.com.example", 1863),
            (&s4a, "messenger.hotmail.com", 1863),
            (&s4, "198.51.100.7", 80),
            (&s5auth, "203.0.113.5", 1863),
        ] {
            for cut in [1, 2, 5, 100] {
                let mut s = Socks::start(bytes[0]).unwrap();
                let ev = client_events(&mut s, bytes, cut);
                assert_eq!(
                    ev,
                    Some(Event::Request(
                        Dest {
                            host: host.as_bytes().to_vec(),
                            port
                        },
                        bytes.len()
                    )),
                    "{host} cut {cut}"
                );
            }
        }
        // Not SOCKS: given up at once.
        for junk in [&[5u8, 0][..], &[4, 9, 0, 0], &[5, 1, 0, 9]] {
            let mut s = Socks::start(junk[0]).unwrap();
            assert_eq!(s.client(junk), None, "{junk:?}");
        }
        assert!(Socks::start(b'G').is_none());
    }

    #[test]
    fn socks_replies_open_the_tunnel_only_on_success() {
        let mut s = Socks::start(5).unwrap();
        let req = [&[5u8, 1, 0][..], &[5, 1, 0, 1, 203, 0, 113, 5, 0x07, 0x47]].concat();
        assert!(matches!(s.client(&req), Some(Some(Event::Request(..)))));
        let reply = [&[5u8, 0][..], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0], b"VER 1"].concat();
        assert_eq!(s.server(&reply[..5]), Some(None));
        assert_eq!(s.server(&reply[5..]), Some(Some(Event::Opened(7))));
        let mut s = Socks::start(4).unwrap();
        assert!(s.client(&[4, 1, 0, 80, 1, 2, 3, 4, 0]).is_some());
        assert_eq!(s.server(&[0, 91, 0, 0, 0, 0, 0, 0]), None, "refused");
    }

    #[test]
    fn starttls_dialects() {
        for (client, server, kind, opened) in [
            (
                &b"EHLO x\r\nSTARTTLS\r\n"[..],
                &b"220 2.0.0 Ready\r\n\x16\x03"[..],
                StartTls::Smtp,
                Some(17),
            ),
            (
                b"a1 STARTTLS\r\n",
                b"* OK hi\r\na1 OK Begin TLS\r\n",
                StartTls::Imap,
                Some(26),
            ),
            (b"STLS\r\n", b"+OK go\r\n", StartTls::Pop3, Some(8)),
            (
                b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
                b"<proceed xmlns='x'/>",
                StartTls::Xmpp,
                Some(20),
            ),
            (
                b"STARTTLS\r\n",
                b"454 TLS not available\r\n",
                StartTls::Smtp,
                None,
            ),
        ] {
            let mut c = Lines::default();
            assert_eq!(c.client(client), kind);
            let mut s = Lines::default();
            assert_eq!(s.server(server, kind), Some(opened), "{kind:?}");
        }
        // XML tags cut anywhere are still seen.
        let req = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
        let mut c = Lines::default();
        let mut got = StartTls::None;
        for piece in req.chunks(3) {
            got = match c.client(piece) {
                StartTls::None => got,
                k => k,
            };
        }
        assert_eq!(got, StartTls::Xmpp);
        let mut s = Lines::default();
        assert_eq!(s.server(b"<pro", StartTls::Xmpp), None);
        assert_eq!(s.server(b"ceed/>", StartTls::Xmpp), Some(Some(6)));
        // A command cut across segments is still seen.
        let mut c = Lines::default();
        assert_eq!(c.client(b"STA"), StartTls::None);
        assert_eq!(c.client(b"RTTLS\r\n"), StartTls::Smtp);
        let mut c = Lines::default();
        assert_eq!(c.client(b"MAIL FROM:<starttls@example.com>\r\n"), StartTls::None);
    }
}
