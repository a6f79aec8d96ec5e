//! Incremental HTTP/1.x message walker for the `http-target` and
//! `http-header` scopes.
//!
//! It exists so HTTP signatures are matched where the protocol puts them
//! (request target, a named header's value) and nowhere else: `gateway.dll`
//! in a database row is not a request target. It is fed one direction's
//! in-order bytes in whatever pieces they arrive and keeps O(1) state
//! (phase, a header-name hash, automaton states, body length), so a target or
//! header split anywhere, pipelined requests, header names in any case,
//! obsolete line folding and percent-encoded targets (`gateway%2Edll`) all
//! behave as if the message had arrived in one piece. It never allocates.
//!
//! A direction whose first bytes are not an HTTP request or status line is
//! switched off for good, as is a reply body delimited only by connection
//! close.

use super::matcher::{FieldState, HeaderId, Hit, Matcher, SigRef};
use crate::policy::AppSet;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of a lower-cased header name; the parser computes it byte by byte.
pub const fn name_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() {
        h = (h ^ name[i].to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

const CONTENT_LENGTH: u64 = name_hash(b"content-length");
const TRANSFER_ENCODING: u64 = name_hash(b"transfer-encoding");

/// Where in an HTTP message a signature matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpWhere {
    /// The request target.
    Target,
    /// The value (or presence) of a header.
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Before a message: skipping blank lines, then the first token.
    #[default]
    Start,
    /// Inside the method token (or `HTTP` of a status line).
    Method,
    /// Inside the request target.
    Target,
    /// Rest of the request line or status line.
    LineRest,
    /// Status code digits of a reply.
    Status,
    /// At the start of a header line.
    LineStart,
    /// Inside a header name.
    Name,
    /// Between `:` and the value.
    ValueWs,
    /// Inside a header value.
    Value,
    /// After CR of the empty line ending the head.
    HeadEnd,
    /// Skipping `body` bytes of a length-delimited body.
    Body,
    /// Chunk-size line of a chunked body.
    ChunkSize,
    /// Chunk extensions up to LF.
    ChunkExt,
    /// Skipping chunk data.
    ChunkData,
    /// CRLF after chunk data.
    ChunkEnd,
    /// Trailer section after the last chunk.
    Trailer,
    /// Inside one trailer field line.
    TrailerLine,
    /// Not HTTP, or a body that runs until close: nothing more to parse.
    Off,
}

/// Per-direction HTTP parse state (about 48 bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpState {
    phase: Phase,
    /// Bytes in the current token or line (bounded checks).
    count: u32,
    /// First bytes of the first token, to spot `HTTP/`.
    token: u32,
    field: Option<FieldState>,
    header: HeaderId,
    name: u64,
    /// Percent-decoding: 0 none, 1 after `%`, 2 after `%X`.
    pct: u8,
    pct_hi: u8,
    is_reply: bool,
    content_length: Option<u64>,
    chunked: bool,
    te_window: u64,
    in_cl: bool,
    in_te: bool,
    status: u16,
    body: u64,
}

impl HttpState {
    /// True once the direction is known not to be (parsable) HTTP any more.
    pub fn is_off(&self) -> bool {
        self.phase == Phase::Off
    }

    /// Feeds in-order bytes; returns the first enabled signature hit.
    pub fn feed(&mut self, m: &Matcher, data: &[u8], apps: AppSet) -> Option<(Hit, HttpWhere)> {
        let mut i = 0;
        while i < data.len() {
            match self.phase {
                Phase::Off => return None,
                Phase::Body | Phase::ChunkData => {
                    let take = (self.body.min((data.len() - i) as u64)) as usize;
                    i += take;
                    self.body -= take as u64;
                    if self.body == 0 {
                        self.phase = if self.phase == Phase::Body {
                            self.reset_message();
                            Phase::Start
                        } else {
                            Phase::ChunkEnd
                        };
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            if let Some((sig, at)) = self.step(m, b, apps) {
                return Some((Hit { sig, end: i }, at));
            }
        }
        None
    }

    fn reset_message(&mut self) {
        *self = HttpState {
            phase: Phase::Start,
            ..HttpState::default()
        };
    }

    fn step(&mut self, m: &Matcher, b: u8, apps: AppSet) -> Option<(SigRef, HttpWhere)> {
        match self.phase {
            Phase::Start => {
                if b == b'\r' || b == b'\n' {
                    self.count += 1;
                    if self.count > 8 {
                        self.phase = Phase::Off;
                    }
                } else if b.is_ascii_uppercase() {
                    self.phase = Phase::Method;
                    self.count = 1;
                    self.token = u32::from(b);
                } else {
                    self.phase = Phase::Off;
                }
            }
            Phase::Method => {
                if b == b' ' {
                    self.phase = Phase::Target;
                    self.field = Some(m.target_start());
                    self.pct = 0;
                } else if b == b'/' && self.count == 4 && self.token == u32::from_be_bytes(*b"HTTP") {
                    self.is_reply = true;
                    self.phase = Phase::LineRest;
                    self.count = 0;
                } else if (b.is_ascii_uppercase() || b == b'-' || b == b'_') && self.count < 24 {
                    if self.count < 4 {
                        self.token = (self.token << 8) | u32::from(b);
                    }
                    self.count += 1;
                } else {
                    self.phase = Phase::Off;
                }
            }
            Phase::Target => {
                if b == b' ' || b == b'\r' || b == b'\n' {
                    // A pending "%X" is fed literally, as a server would keep it.
                    self.phase = if b == b'\n' {
                        Phase::LineStart
                    } else {
                        Phase::LineRest
                    };
                    self.count = 0;
                    if b == b'\n' {
                        self.begin_line();
                    }
                    return None;
                }
                return self.target_byte(m, b, apps).map(|r| (r, HttpWhere::Target));
            }
            Phase::LineRest => {
                if b == b'\n' {
                    self.phase = Phase::LineStart;
                    self.begin_line();
                } else if self.is_reply && b == b' ' && self.status == 0 {
                    self.phase = Phase::Status;
                }
            }
            Phase::Status => {
                if b.is_ascii_digit() && self.status < 1000 {
                    self.status = self.status * 10 + u16::from(b - b'0');
                } else if b == b'\n' {
                    self.phase = Phase::LineStart;
                    self.begin_line();
                } else {
                    self.phase = Phase::LineRest;
                    if self.status == 0 {
                        self.status = 1000;
                    }
                }
            }
            Phase::Trailer => match b {
                b'\r' => {}
                b'\n' => self.reset_message(),
                _ => self.phase = Phase::TrailerLine,
            },
            Phase::TrailerLine => {
                if b == b'\n' {
                    self.phase = Phase::Trailer;
                }
            }
            Phase::LineStart => match b {
                b'\r' => self.phase = Phase::HeadEnd,
                b'\n' => self.end_head(),
                b' ' | b'\t' if self.header != 0 => {
                    // Obsolete line folding: the value goes on.
                    self.phase = Phase::Value;
                }
                _ => {
                    self.phase = Phase::Name;
                    self.name = (FNV_OFFSET ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
                    self.header = 0;
                    self.in_cl = false;
                    self.in_te = false;
                }
            },
            Phase::HeadEnd => {
                if b == b'\n' {
                    self.end_head();
                } else {
                    self.phase = Phase::Off;
                }
            }
            Phase::Name => {
                if b == b':' {
                    self.header_named(m);
                    self.phase = Phase::ValueWs;
                    if self.header != 0
                        && let Some(r) = m.header_present(self.header, apps)
                    {
                        return Some((r, HttpWhere::Header));
                    }
                } else if b == b'\n' {
                    // A header line without a colon: tolerate, as servers do.
                    self.begin_line();
                    self.phase = Phase::LineStart;
                } else {
                    self.name = (self.name ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
                }
            }
            Phase::ValueWs => {
                if b == b' ' || b == b'\t' {
                    return None;
                }
                self.phase = Phase::Value;
                return self.value_byte(m, b, apps);
            }
            Phase::Value => return self.value_byte(m, b, apps),
            Phase::ChunkSize => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.body = self.body.saturating_mul(16).saturating_add(d);
                    self.count += 1;
                }
                b';' | b' ' | b'\t' | b'\r' => self.phase = Phase::ChunkExt,
                b'\n' => self.chunk_line_done(),
                _ => self.phase = Phase::Off,
            },
            Phase::ChunkExt => {
                if b == b'\n' {
                    self.chunk_line_done();
                }
            }
            Phase::ChunkEnd => {
                if b == b'\n' {
                    self.phase = Phase::ChunkSize;
                    self.body = 0;
                    self.count = 0;
                } else if b != b'\r' {
                    self.phase = Phase::Off;
                }
            }
            Phase::Body | Phase::ChunkData | Phase::Off => {}
        }
        None
    }

    fn begin_line(&mut self) {
        self.count = 0;
    }

    fn header_named(&mut self, m: &Matcher) {
        self.in_cl = self.name == CONTENT_LENGTH;
        self.in_te = self.name == TRANSFER_ENCODING;
        self.header = m.header_id(self.name);
        self.field = if self.header != 0 {
            Some(m.header_start())
        } else {
            None
        };
        if self.in_cl {
            self.content_length = Some(0);
        }
        self.te_window = 0;
    }

    fn value_byte(&mut self, m: &Matcher, b: u8, apps: AppSet) -> Option<(SigRef, HttpWhere)> {
        if b == b'\n' {
            self.phase = Phase::LineStart;
            self.begin_line();
            return None;
        }
        if self.in_cl && b.is_ascii_digit() {
            let v = self.content_length.unwrap_or(0);
            self.content_length = Some(v.saturating_mul(10).saturating_add(u64::from(b - b'0')));
        }
        if self.in_te {
            self.te_window =
                ((self.te_window << 8) | u64::from(b.to_ascii_lowercase())) & 0x00ff_ffff_ffff_ffff;
            if self.te_window == u64::from_be_bytes(*b"\0chunked") {
                self.chunked = true;
            }
        }
        if self.header != 0
            && let Some(st) = self.field.as_mut()
            && let Some(r) = m.step_header(st, b, self.header, apps)
        {
            return Some((r, HttpWhere::Header));
        }
        None
    }

    fn target_byte(&mut self, m: &Matcher, b: u8, apps: AppSet) -> Option<SigRef> {
        let st = self.field.as_mut()?;
        match (self.pct, b) {
            (0, b'%') => {
                self.pct = 1;
                None
            }
            (0, _) => m.step_target(st, b, apps),
            (1, _) if b.is_ascii_hexdigit() => {
                self.pct = 2;
                self.pct_hi = b;
                None
            }
            (2, _) if b.is_ascii_hexdigit() => {
                self.pct = 0;
                let v = (hex(self.pct_hi) << 4) | hex(b);
                m.step_target(st, v, apps)
            }
            (1, _) => {
                self.pct = 0;
                m.step_target(st, b'%', apps)
                    .or_else(|| m.step_target(st, b, apps))
            }
            _ => {
                let hi = self.pct_hi;
                self.pct = 0;
                m.step_target(st, b'%', apps)
                    .or_else(|| m.step_target(st, hi, apps))
                    .or_else(|| m.step_target(st, b, apps))
            }
        }
    }

    fn end_head(&mut self) {
        let no_body = self.is_reply && (self.status < 200 || self.status == 204 || self.status == 304);
        if no_body {
            self.reset_message();
        } else if self.chunked {
            self.phase = Phase::ChunkSize;
            self.body = 0;
            self.count = 0;
        } else if let Some(n) = self.content_length {
            if n == 0 {
                self.reset_message();
            } else {
                self.phase = Phase::Body;
                self.body = n;
            }
        } else if self.is_reply {
            // Delimited by connection close: the rest is body.
            self.phase = Phase::Off;
        } else {
            self.reset_message();
        }
    }

    fn chunk_line_done(&mut self) {
        if self.count == 0 {
            self.phase = Phase::Off;
        } else if self.body == 0 {
            self.phase = Phase::Trailer;
        } else {
            self.phase = Phase::ChunkData;
        }
    }
}

fn hex(b: u8) -> u8 {
    (b as char).to_digit(16).unwrap_or(0) as u8
}
