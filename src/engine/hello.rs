//! A complete parser of the TLS ClientHello handshake message (RFC 8446
//! 4.1.2), and an assembler that rebuilds one from a TCP byte stream cut
//! into TLS records and arbitrary chunks.
//!
//! Why: host and application rules need the server name (RFC 6066 3), the
//! offered ALPN protocols (RFC 7301) and whether Encrypted Client Hello
//! hides the real name (extension `encrypted_client_hello`, 0xfe0d). The
//! same message is carried by TLS records over TCP and, without records, by
//! QUIC CRYPTO frames (see [`super::quic`]), so the message parser works on
//! bare handshake bytes and the record layer lives in [`HelloAssembler`].
//!
//! Guarantees: every length read from the input is checked against the bytes
//! present; nothing panics on any input; the assembler holds at most
//! [`MAX_HELLO`] bytes of handshake message per stream. The parser is strict
//! about the structures it interprets (server name, ALPN, supported
//! versions): a message a TLS server would reject as malformed is reported as
//! [`Hello::NotHello`] rather than half-read.

/// Largest ClientHello the assembler accepts, in handshake bytes (header
/// included). Post-quantum key shares push real hellos past 1 KiB and a
/// record's 16 KiB, so this leaves room for two full records.
pub const MAX_HELLO: usize = 32 * 1024;

/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Record content type `handshake`.
const HANDSHAKE_RECORD: u8 = 0x16;
/// Largest plaintext record fragment (RFC 8446 5.1).
const MAX_RECORD: usize = 16 * 1024;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_ECH: u16 = 0xfe0d;

/// Outcome of parsing bytes that should start with a ClientHello message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello<'a> {
    /// A ClientHello so far; more bytes are needed to see all of it.
    NeedMore,
    /// Not a (well-formed) ClientHello message.
    NotHello,
    /// A complete ClientHello.
    Done(ClientHello<'a>),
}

/// The fields of a ClientHello that inspection uses, borrowed from the
/// message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The first `host_name` of the server_name extension, raw bytes (a DNS
    /// name in ASCII when well-behaved; not checked).
    pub server_name: Option<&'a [u8]>,
    /// The encrypted_client_hello extension is present: the real server name
    /// is hidden and `server_name` names the client-facing server.
    pub has_ech: bool,
    /// Body of the ALPN extension's protocol list, already validated.
    alpn: &'a [u8],
    /// Body of the supported_versions list, already validated (even length).
    versions: &'a [u8],
    /// Bytes the message occupies, header included.
    len: usize,
}

impl<'a> ClientHello<'a> {
    /// The offered ALPN protocol names, in the client's order.
    pub fn alpn(&self) -> Alpn<'a> {
        Alpn { rest: self.alpn }
    }

    /// The versions of the supported_versions extension, in the client's
    /// order (empty when the extension is absent).
    pub fn supported_versions(&self) -> impl Iterator<Item = u16> + 'a {
        self.versions
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// Length of the whole handshake message (4-byte header included).
    pub fn message_len(&self) -> usize {
        self.len
    }

    /// An owned copy of the fields, for state kept across packets.
    pub fn to_info(&self) -> HelloInfo {
        HelloInfo {
            legacy_version: self.legacy_version,
            server_name: self.server_name.map(<[u8]>::to_vec),
            alpn: self.alpn().map(<[u8]>::to_vec).collect(),
            ech: self.has_ech,
            supported_versions: self.supported_versions().collect(),
        }
    }
}

/// Iterator over ALPN protocol names (see [`ClientHello::alpn`]).
#[derive(Debug, Clone)]
pub struct Alpn<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Alpn<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        // The list was validated when parsed; `get` keeps this panic-free.
        let (&n, tail) = self.rest.split_first()?;
        let name = tail.get(..usize::from(n))?;
        self.rest = tail.get(usize::from(n)..)?;
        Some(name)
    }
}

/// Owned ClientHello fields, as the assembler and the QUIC reassembler
/// return them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelloInfo {
    /// `legacy_version` of the message.
    pub legacy_version: u16,
    /// First `host_name` of the server_name extension, raw bytes.
    pub server_name: Option<Vec<u8>>,
    /// Offered ALPN protocols, in order.
    pub alpn: Vec<Vec<u8>>,
    /// The encrypted_client_hello extension is present.
    pub ech: bool,
    /// The supported_versions list (empty when absent).
    pub supported_versions: Vec<u16>,
}

impl HelloInfo {
    /// The server name as text, when it is valid UTF-8.
    pub fn server_name_str(&self) -> Option<&str> {
        std::str::from_utf8(self.server_name.as_deref()?).ok()
    }
}

/// Bounds-checked reader over untrusted bytes.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// Length announced by a handshake header, if `buf` starts with one of a
/// ClientHello: `Err(())` when the bytes cannot start a ClientHello.
fn announced_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    match buf.first() {
        None => return Ok(None),
        Some(&CLIENT_HELLO) => {}
        Some(_) => return Err(()),
    }
    let Some(h) = buf.get(1..4) else {
        return Ok(None);
    };
    let body = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
    Ok(Some(body + 4))
}

/// Length of the ClientHello message (4-byte header included) that `buf`
/// starts with, once its header is there; `None` before that or when `buf`
/// does not start with a ClientHello's type byte.
pub fn client_hello_len(buf: &[u8]) -> Option<usize> {
    announced_len(buf).ok().flatten()
}

/// Parses a ClientHello handshake message (type byte, 3-byte length, body)
/// at the start of `msg`; bytes after the message are ignored.
pub fn parse_client_hello(msg: &[u8]) -> Hello<'_> {
    let total = match announced_len(msg) {
        Err(()) => return Hello::NotHello,
        Ok(None) => return Hello::NeedMore,
        Ok(Some(n)) => n,
    };
    let Some(whole) = msg.get(..total) else {
        return Hello::NeedMore;
    };
    match parse_body(whole.get(4..).unwrap_or_default(), total) {
        Some(h) => Hello::Done(h),
        None => Hello::NotHello,
    }
}

fn parse_body(body: &[u8], len: usize) -> Option<ClientHello<'_>> {
    let mut r = Reader { b: body };
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let sid = r.vec8()?;
    if sid.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // compression methods: at least `null`
    }
    let mut hello = ClientHello {
        legacy_version,
        server_name: None,
        has_ech: false,
        alpn: &[],
        versions: &[],
        len,
    };
    if r.is_empty() {
        return Some(hello); // TLS 1.2 allows a hello without extensions
    }
    let mut exts = Reader { b: r.vec16()? };
    if !r.is_empty() {
        return None;
    }
    // Extensions this parser interprets; a repeat is illegal (RFC 8446 4.2)
    // and would let two readers disagree on the name, so it is refused.
    let mut seen = [false; 4];
    while !exts.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        let slot = match typ {
            EXT_SERVER_NAME => 0,
            EXT_ALPN => 1,
            EXT_SUPPORTED_VERSIONS => 2,
            EXT_ECH => 3,
            _ => continue,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match typ {
            EXT_SERVER_NAME => hello.server_name = parse_sni(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => hello.versions = parse_versions(data)?,
            _ => hello.has_ech = true,
        }
    }
    Some(hello)
}

/// ServerNameList (RFC 6066 3): the first `host_name` entry. An empty
/// extension body is what a server sends back, never a client: refused.
fn parse_sni(data: &[u8]) -> Option<Option<&[u8]>> {
    let mut r = Reader { b: data };
    let mut list = Reader { b: r.vec16()? };
    if !r.is_empty() || list.is_empty() {
        return None;
    }
    let mut first = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 && first.is_none() {
            if name.is_empty() {
                return None;
            }
            first = Some(name);
        }
    }
    Some(first)
}

/// ProtocolNameList (RFC 7301 3.1): validated, returned as the list body.
fn parse_alpn(data: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { b: data };
    let body = r.vec16()?;
    if !r.is_empty() || body.is_empty() {
        return None;
    }
    let mut list = Reader { b: body };
    while !list.is_empty() {
        if list.vec8()?.is_empty() {
            return None;
        }
    }
    Some(body)
}

/// The client's supported_versions (RFC 8446 4.2.1): a one-byte-length list
/// of 2-byte versions.
fn parse_versions(data: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { b: data };
    let list = r.vec8()?;
    if !r.is_empty() || list.is_empty() || list.len() % 2 != 0 {
        return None;
    }
    Some(list)
}

/// What [`HelloAssembler::push`] has found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A ClientHello may still come: feed more bytes.
    NeedMore,
    /// The stream does not start with a TLS ClientHello (or it is malformed).
    NotTls,
    /// The complete ClientHello.
    Done(HelloInfo),
    /// The ClientHello announces or needs more than [`MAX_HELLO`] bytes.
    TooLong,
}

/// Where the assembler is in the record layer.
#[derive(Debug, Clone)]
enum Framing {
    /// Reading a 5-byte record header; `have` bytes of it so far.
    Header { hdr: [u8; 5], have: usize },
    /// Inside a record's fragment; this many bytes of it still to come.
    Body { left: usize },
    /// No record layer: the bytes are the handshake stream itself.
    Raw,
}

/// Rebuilds the first handshake message of a TLS stream from chunks of any
/// size, across as many handshake records as the client used (RFC 8446 5.1
/// allows one message to span records), and parses it as a ClientHello.
///
/// Holds at most [`MAX_HELLO`] bytes; once it has returned anything other
/// than [`Status::NeedMore`] it keeps returning that and ignores new bytes.
#[derive(Debug, Clone)]
pub struct HelloAssembler {
    framing: Framing,
    msg: Vec<u8>,
    result: Option<Status>,
}

impl Default for HelloAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl HelloAssembler {
    /// An assembler for a TLS-over-TCP stream (record layer present).
    pub fn new() -> Self {
        HelloAssembler {
            framing: Framing::Header { hdr: [0; 5], have: 0 },
            msg: Vec::new(),
            result: None,
        }
    }

    /// An assembler for a bare handshake stream (no records), as QUIC's
    /// CRYPTO frames carry it.
    pub fn handshake_only() -> Self {
        HelloAssembler {
            framing: Framing::Raw,
            msg: Vec::new(),
            result: None,
        }
    }

    /// Bytes of handshake message held so far.
    pub fn buffered(&self) -> usize {
        self.msg.len()
    }

    /// Feeds the next bytes of the client's stream.
    pub fn push(&mut self, mut bytes: &[u8]) -> Status {
        if let Some(done) = &self.result {
            return done.clone();
        }
        while !bytes.is_empty() {
            let status = self.step(&mut bytes);
            if status != Status::NeedMore {
                // Free the buffer: the answer is all that is kept.
                self.msg = Vec::new();
                self.result = Some(status.clone());
                return status;
            }
        }
        Status::NeedMore
    }

    /// Consumes some of `bytes` (at least one) and says what is known.
    fn step(&mut self, bytes: &mut &[u8]) -> Status {
        match &mut self.framing {
            Framing::Header { hdr, have } => {
                let all = std::mem::take(bytes);
                let (head, rest) = all.split_at((5 - *have).min(all.len()));
                hdr[*have..*have + head.len()].copy_from_slice(head);
                *have += head.len();
                *bytes = rest;
                // Judge each header byte as soon as it is there, so a
                // non-TLS stream is let go after its first byte.
                if hdr[0] != HANDSHAKE_RECORD || (*have >= 2 && hdr[1] != 3) {
                    return Status::NotTls;
                }
                if *have < 5 {
                    return Status::NeedMore;
                }
                let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
                // Zero-length handshake fragments are forbidden (5.1).
                if len == 0 || len > MAX_RECORD {
                    return Status::NotTls;
                }
                self.framing = Framing::Body { left: len };
                Status::NeedMore
            }
            Framing::Body { left } => {
                let all = std::mem::take(bytes);
                let (chunk, rest) = all.split_at((*left).min(all.len()));
                *bytes = rest;
                *left -= chunk.len();
                if *left == 0 {
                    self.framing = Framing::Header { hdr: [0; 5], have: 0 };
                }
                self.absorb(chunk)
            }
            Framing::Raw => {
                let chunk = std::mem::take(bytes);
                self.absorb(chunk)
            }
        }
    }

    /// Adds handshake bytes and checks whether the message is complete.
    fn absorb(&mut self, chunk: &[u8]) -> Status {
        // Only as much as the message can still need (or the cap allows).
        let want = match announced_len(&self.msg) {
            Ok(Some(total)) => total,
            _ => MAX_HELLO,
        };
        let room = want.min(MAX_HELLO).saturating_sub(self.msg.len());
        self.msg.extend_from_slice(&chunk[..room.min(chunk.len())]);
        match announced_len(&self.msg) {
            Err(()) => return Status::NotTls,
            Ok(Some(total)) if total > MAX_HELLO => return Status::TooLong,
            _ => {}
        }
        match parse_client_hello(&self.msg) {
            Hello::NeedMore => Status::NeedMore,
            Hello::NotHello => Status::NotTls,
            Hello::Done(h) => Status::Done(h.to_info()),
        }
    }
}

/// Builders of ClientHello bytes for tests across the crate.
#[cfg(test)]
pub(crate) mod build {
    fn with_len16(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
    }

    /// A ClientHello message (handshake header included) naming `sni`,
    /// offering `alpn`, with an ECH extension when `ech`, and a padding
    /// extension of `pad` bytes to make it as long as a test needs.
    pub fn client_hello(sni: Option<&str>, alpn: &[&str], ech: bool, pad: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            with_len16(&mut entry, name.as_bytes());
            let mut list = Vec::new();
            with_len16(&mut list, &entry);
            ext.extend_from_slice(&0u16.to_be_bytes());
            with_len16(&mut ext, &list);
        }
        if !alpn.is_empty() {
            let mut names = Vec::new();
            for a in alpn {
                names.push(u8::try_from(a.len()).unwrap());
                names.extend_from_slice(a.as_bytes());
            }
            let mut list = Vec::new();
            with_len16(&mut list, &names);
            ext.extend_from_slice(&16u16.to_be_bytes());
            with_len16(&mut ext, &list);
        }
        // supported_versions: TLS 1.3, TLS 1.2.
        ext.extend_from_slice(&[0, 43, 0, 5, 4, 3, 4, 3, 3]);
        if ech {
            ext.extend_from_slice(&0xfe0du16.to_be_bytes());
            with_len16(&mut ext, &[0, 0, 1, 0, 1, 7, 0, 0, 0, 0]);
        }
        if pad > 0 {
            ext.extend_from_slice(&21u16.to_be_bytes());
            with_len16(&mut ext, &vec![0u8; pad]);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(32);
        body.extend_from_slice(&[0xa5; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        with_len16(&mut body, &ext);
        let mut msg = vec![1];
        msg.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// Bytes from hex text (whitespace ignored).
    pub fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The first record of a real OpenSSL client (see testdata/README.md).
    pub fn openssl_record() -> Vec<u8> {
        unhex(include_str!("testdata/openssl_client_hello.hex"))
    }

    /// `msg` cut into handshake records of at most `max` bytes each.
    pub fn records(msg: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(max) {
            out.extend_from_slice(&[0x16, 3, 1]);
            with_len16(&mut out, part);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{client_hello, openssl_record, records};
    use super::*;
    use proptest::prelude::*;

    fn info(sni: &str, alpn: &[&str], ech: bool) -> HelloInfo {
        HelloInfo {
            legacy_version: 0x0303,
            server_name: Some(sni.as_bytes().to_vec()),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            ech,
            supported_versions: vec![0x0304, 0x0303],
        }
    }

    #[test]
    fn parses_every_field() {
        let m = client_hello(Some("example.com"), &["h2", "http/1.1"], true, 0);
        let Hello::Done(h) = parse_client_hello(&m) else {
            panic!("not parsed");
        };
        assert_eq!(h.server_name, Some(&b"example.com"[..]));
        assert_eq!(h.alpn().collect::<Vec<_>>(), [&b"h2"[..], b"http/1.1"]);
        assert!(h.has_ech);
        assert_eq!(h.supported_versions().collect::<Vec<_>>(), [0x0304, 0x0303]);
        assert_eq!(h.message_len(), m.len());
        assert_eq!(h.to_info(), info("example.com", &["h2", "http/1.1"], true));

        let m = client_hello(None, &[], false, 0);
        let Hello::Done(h) = parse_client_hello(&m) else {
            panic!("not parsed");
        };
        assert_eq!((h.server_name, h.alpn().count(), h.has_ech), (None, 0, false));
    }

    #[test]
    fn every_prefix_needs_more_and_trailing_bytes_are_ignored() {
        let m = client_hello(Some("a.example"), &["h3"], false, 50);
        for cut in 0..m.len() {
            assert_eq!(parse_client_hello(&m[..cut]), Hello::NeedMore, "cut {cut}");
        }
        let mut longer = m.clone();
        longer.extend_from_slice(b"junk");
        assert!(matches!(parse_client_hello(&longer), Hello::Done(_)));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let good = client_hello(Some("example.com"), &["h2"], false, 0);
        // Offsets into `good`: header 4, version 2, random 32, session id
        // 1+32, suites 2+4, compression 2, extensions length 2 → 81.
        let ext_start = 4 + 2 + 32 + 33 + 6 + 2 + 2;
        assert_eq!(&good[ext_start..ext_start + 2], &[0, 0], "SNI first");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("server hello", {
                let mut m = good.clone();
                m[0] = 2;
                m
            }),
            ("session id over 32", {
                let mut m = good.clone();
                m[4 + 2 + 32] = 33;
                m
            }),
            ("odd suites", {
                let mut m = good.clone();
                m[4 + 2 + 32 + 33 + 1] = 3;
                m
            }),
            ("duplicate SNI", {
                let mut m = good.clone();
                let sni = good[ext_start..ext_start + 4 + 16].to_vec();
                m.splice(ext_start..ext_start, sni.iter().copied());
                fix_lengths(&mut m, ext_start, sni.len());
                m
            }),
            ("SNI list overruns", {
                let mut m = good.clone();
                m[ext_start + 5] += 1;
                m
            }),
            ("extensions overrun", {
                let mut m = good.clone();
                m[ext_start - 1] += 1;
                m
            }),
            ("trailing bytes in body", {
                let mut m = good.clone();
                m.push(0);
                m[3] += 1;
                m
            }),
        ];
        for (what, m) in cases {
            assert_eq!(parse_client_hello(&m), Hello::NotHello, "{what}");
        }
        assert!(matches!(parse_client_hello(&good), Hello::Done(_)));
    }

    /// Adds `extra` to the message and extensions lengths of a hello.
    fn fix_lengths(m: &mut [u8], ext_start: usize, extra: usize) {
        let body = (usize::from(m[2]) << 8 | usize::from(m[3])) + extra;
        m[2] = (body >> 8) as u8;
        m[3] = body as u8;
        let e = usize::from(u16::from_be_bytes([m[ext_start - 2], m[ext_start - 1]])) + extra;
        m[ext_start - 2..ext_start].copy_from_slice(&u16::try_from(e).unwrap().to_be_bytes());
    }

    #[test]
    fn agrees_with_the_crates_sample_hello() {
        let rec = crate::sample::tls_client_hello("gateway.messenger.hotmail.com");
        let mut a = HelloAssembler::new();
        let Status::Done(i) = a.push(&rec) else {
            panic!("not parsed");
        };
        assert_eq!(i.server_name_str(), Some("gateway.messenger.hotmail.com"));
    }

    #[test]
    fn reads_a_real_openssl_hello() {
        let rec = openssl_record();
        assert_eq!(rec.len(), 517);
        let mut a = HelloAssembler::new();
        let Status::Done(i) = a.push(&rec) else {
            panic!("not parsed");
        };
        assert_eq!(i.server_name_str(), Some("www.example.org"));
        assert_eq!(i.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!i.ech);
        assert_eq!(i.legacy_version, 0x0303);
        assert!(i.supported_versions.contains(&0x0304));
        // The same message in 100-byte records, fed at every cut.
        let stream = records(&rec[5..], 100);
        for cut in 0..=stream.len() {
            let mut a = HelloAssembler::new();
            a.push(&stream[..cut]);
            assert_eq!(a.push(&stream[cut..]), Status::Done(i.clone()), "cut {cut}");
        }
    }

    /// A hello over two records, then fed cut at every byte boundary.
    #[test]
    fn two_records_split_at_every_byte() {
        let m = client_hello(Some("split.example"), &["h2"], true, 300);
        let stream = records(&m, m.len() / 2 + 1);
        assert_eq!(stream.len(), m.len() + 10, "two records");
        let want = Status::Done(info("split.example", &["h2"], true));
        for cut in 0..=stream.len() {
            let mut a = HelloAssembler::new();
            let first = a.push(&stream[..cut]);
            if cut < stream.len() {
                assert_eq!(first, Status::NeedMore, "cut {cut}");
            }
            assert_eq!(a.push(&stream[cut..]), want, "cut {cut}");
        }
        // One byte at a time, and many tiny records.
        for (stream, what) in [(stream.clone(), "bytewise"), (records(&m, 7), "7-byte records")] {
            let mut a = HelloAssembler::new();
            let mut last = Status::NeedMore;
            for b in &stream {
                last = a.push(std::slice::from_ref(b));
            }
            assert_eq!(last, want, "{what}");
        }
    }

    #[test]
    fn raw_handshake_mode() {
        let m = client_hello(Some("quic.example"), &["h3"], false, 0);
        let mut a = HelloAssembler::handshake_only();
        assert_eq!(a.push(&m[..10]), Status::NeedMore);
        assert_eq!(
            a.push(&m[10..]),
            Status::Done(info("quic.example", &["h3"], false))
        );
        assert_eq!(HelloAssembler::handshake_only().push(&[0x16, 3]), Status::NotTls);
    }

    #[test]
    fn refusals_and_limits() {
        let table: &[(&[u8], Status)] = &[
            (b"GET / HTTP/1.1\r\n", Status::NotTls),
            (&[0x16, 2], Status::NotTls),
            (&[0x17, 3, 3, 0, 5], Status::NotTls),
            (&[0x16, 3, 1, 0, 0], Status::NotTls),    // empty record
            (&[0x16, 3, 1, 0x40, 1], Status::NotTls), // over 16 KiB
            (&[0x16, 3, 1, 0, 4, 2], Status::NotTls), // not a ClientHello
            (&[0x16, 3, 1, 0, 4, 1, 1, 0, 0], Status::TooLong), // 64 KiB hello
            (&[0x16, 3, 1], Status::NeedMore),
        ];
        for (bytes, want) in table {
            assert_eq!(HelloAssembler::new().push(bytes), *want, "{bytes:02x?}");
        }
        // An alert record after the first fragment ends the hunt.
        let m = client_hello(Some("x.example"), &[], false, 0);
        let mut s = records(&m[..20], 20);
        s.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        assert_eq!(HelloAssembler::new().push(&s), Status::NotTls);
        // The largest accepted hello, just under the cap, in records.
        let pad = MAX_HELLO - client_hello(Some("x.example"), &[], false, 4).len() + 4;
        let m = client_hello(Some("x.example"), &[], false, pad);
        assert_eq!(m.len(), MAX_HELLO);
        let mut a = HelloAssembler::new();
        assert!(matches!(a.push(&records(&m, MAX_RECORD)), Status::Done(_)));
        let m = client_hello(Some("x.example"), &[], false, pad + 1);
        let mut a = HelloAssembler::new();
        assert_eq!(a.push(&records(&m, MAX_RECORD)), Status::TooLong);
        assert_eq!(a.buffered(), 0, "buffer released");
    }

    #[test]
    fn answer_is_sticky() {
        let m = client_hello(Some("x.example"), &[], false, 0);
        let mut a = HelloAssembler::new();
        let done = a.push(&records(&m, 100));
        assert!(matches!(done, Status::Done(_)));
        assert_eq!(a.push(b"anything"), done);
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_client_hello(&data);
            let _ = HelloAssembler::new().push(&data);
            let _ = HelloAssembler::handshake_only().push(&data);
        }

        /// Feeding a stream in two chunks or one gives the same answer,
        /// for valid, mutated and truncated record streams alike.
        #[test]
        fn answer_does_not_depend_on_chunking(
            i in 0usize..400, x in 0u8..=255, cut in 0usize..500, rec in 1usize..300,
        ) {
            let mut m = client_hello(Some("chunks.example"), &["h2"], false, 40);
            let i = i % m.len();
            m[i] ^= x;
            let s = records(&m, rec);
            let cut = cut.min(s.len());
            let whole = HelloAssembler::new().push(&s);
            let mut a = HelloAssembler::new();
            let split = match a.push(&s[..cut]) {
                Status::NeedMore => a.push(&s[cut..]),
                other => other,
            };
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn never_panics_on_a_mutated_hello(i in 0usize..400, x in 1u8..=255, cut in 0usize..500) {
            let mut m = client_hello(Some("mutant.example"), &["h2", "h3"], true, 0);
            let i = i % m.len();
            m[i] ^= x;
            let _ = parse_client_hello(&m[..cut.min(m.len())]);
            let _ = HelloAssembler::handshake_only().push(&m);
            let _ = HelloAssembler::new().push(&records(&m, 64));
        }
    }
}
