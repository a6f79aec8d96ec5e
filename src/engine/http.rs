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

use super::compiled::Compiled;
use super::matcher::{FieldState, HeaderId, SigRef};
use super::message_rules::{HeadFields, MAX_HEADER, MAX_HOST, MAX_METHOD, MAX_TARGET, RuleRef};
use super::names::{FNV_OFFSET, FNV_PRIME, name_hash};
use crate::policy::AppSet;

const CONTENT_LENGTH: u64 = name_hash(b"content-length");
const HOST: u64 = name_hash(b"host");
const TRANSFER_ENCODING: u64 = name_hash(b"transfer-encoding");

/// What the HTTP walker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpHit {
    /// A scoped signature.
    Sig(SigRef, HttpWhere),
    /// A message rule, judged when the head was complete.
    Rule(RuleRef),
}

fn push_capped(v: &mut Vec<u8>, b: u8, cap: usize) {
    if v.len() < cap {
        v.push(b);
    }
}

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
#[derive(Debug, Clone, Default)]
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
    /// A Content-Length header was seen (its value is parsed into `body`).
    has_length: bool,
    chunked: bool,
    in_cl: bool,
    in_te: bool,
    status: u16,
    body: u64,
    /// Rule header slot of the current header, if rules want it.
    slot: Option<u8>,
    in_host: bool,
    /// Fields for message rules; allocated on the first message when the
    /// policy has rules, reused for every later one.
    fields: Option<Box<HeadFields>>,
    /// The connection's client address, for `src` rule conditions (set by
    /// the engine before each segment).
    pub(crate) src: Option<std::net::IpAddr>,
}

impl HttpState {
    /// True once the direction is known not to be (parsable) HTTP any more.
    pub fn is_off(&self) -> bool {
        self.phase == Phase::Off
    }

    /// Feeds in-order bytes of a connection to `port`; returns the first hit
    /// for an app in `apps` and the offset just past the byte that made it.
    pub fn feed(&mut self, c: &Compiled, data: &[u8], apps: AppSet, port: u16) -> Option<(HttpHit, usize)> {
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
                // Bytes nobody looks at: jump to the end of the line.
                Phase::Value | Phase::ValueWs if self.uninteresting_value() => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k;
                            self.phase = Phase::Value;
                        }
                        None => return None,
                    }
                }
                Phase::LineRest if !(self.is_reply && self.status == 0) => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => i += k,
                        None => return None,
                    }
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            if let Some(hit) = self.step(c, b, apps, port) {
                return Some((hit, i));
            }
        }
        None
    }

    fn reset_message(&mut self) {
        let mut fields = self.fields.take();
        if let Some(f) = fields.as_mut() {
            f.clear();
        }
        *self = HttpState {
            phase: Phase::Start,
            fields,
            ..HttpState::default()
        };
    }

    fn step(&mut self, c: &Compiled, b: u8, apps: AppSet, port: u16) -> Option<HttpHit> {
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
                    if c.rules.any() && apps & c.rules.apps() != 0 {
                        let f = self.fields.get_or_insert_with(Box::default);
                        f.headers.resize(c.rules.header_slots(), Vec::new());
                        f.method.push(b);
                    }
                } else {
                    self.phase = Phase::Off;
                }
            }
            Phase::Method => {
                if b == b' ' {
                    self.phase = Phase::Target;
                    self.field = Some(c.sigs.target_start());
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
                    if let Some(f) = self.fields.as_mut() {
                        push_capped(&mut f.method, b, MAX_METHOD);
                    }
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
                return self
                    .target_byte(c, b, apps)
                    .map(|r| HttpHit::Sig(r, HttpWhere::Target));
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
                b'\n' => return self.end_head(c, apps, port),
                b' ' | b'\t' if self.header != 0 || self.slot.is_some() || self.in_host => {
                    // Obsolete line folding: the value goes on.
                    self.phase = Phase::Value;
                }
                _ => {
                    self.phase = Phase::Name;
                    self.name = (FNV_OFFSET ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
                    self.header = 0;
                    self.slot = None;
                    self.in_host = false;
                    self.in_cl = false;
                    self.in_te = false;
                }
            },
            Phase::HeadEnd => {
                if b == b'\n' {
                    return self.end_head(c, apps, port);
                } else {
                    self.phase = Phase::Off;
                }
            }
            Phase::Name => {
                if b == b':' {
                    self.header_named(c);
                    self.phase = Phase::ValueWs;
                    if self.header != 0
                        && let Some(r) = c.sigs.header_present(self.header, apps)
                    {
                        return Some(HttpHit::Sig(r, HttpWhere::Header));
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
                return self.value_byte(c, b, apps);
            }
            Phase::Value => return self.value_byte(c, b, apps),
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

    /// True when no signature, rule or framing header needs this value.
    #[inline]
    fn uninteresting_value(&self) -> bool {
        self.header == 0 && self.slot.is_none() && !self.in_host && !self.in_cl && !self.in_te
    }

    fn begin_line(&mut self) {
        self.count = 0;
    }

    fn header_named(&mut self, c: &Compiled) {
        self.in_cl = self.name == CONTENT_LENGTH;
        self.in_te = self.name == TRANSFER_ENCODING;
        self.header = c.sigs.header_id(self.name);
        if let Some(f) = self.fields.as_mut() {
            self.in_host = self.name == HOST && !self.is_reply;
            self.slot = c.rules.header_slot(self.name).map(|s| s as u8);
            if let Some(s) = self.slot {
                let v = &mut f.headers[s as usize];
                if f.present & (1u64 << s) != 0 && v.len() + 2 <= MAX_HEADER {
                    // Repeated header: values joined as one list.
                    v.extend_from_slice(b", ");
                }
                f.present |= 1u64 << s;
            }
        }
        self.field = if self.header != 0 {
            Some(c.sigs.header_start())
        } else {
            None
        };
        if self.in_cl {
            self.has_length = true;
            self.body = 0;
        }
        // After the colon the name hash is spent: it becomes the window
        // that spots `chunked` in a Transfer-Encoding value.
        self.name = 0;
    }

    fn value_byte(&mut self, c: &Compiled, b: u8, apps: AppSet) -> Option<HttpHit> {
        if b == b'\n' {
            self.phase = Phase::LineStart;
            self.begin_line();
            return None;
        }
        if let Some(f) = self.fields.as_mut()
            && b != b'\r'
        {
            if let Some(s) = self.slot {
                push_capped(&mut f.headers[s as usize], b, MAX_HEADER);
            }
            if self.in_host {
                push_capped(&mut f.host, b.to_ascii_lowercase(), MAX_HOST);
            }
        }
        if self.in_cl && b.is_ascii_digit() {
            self.body = self.body.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        }
        if self.in_te {
            self.name = ((self.name << 8) | u64::from(b.to_ascii_lowercase())) & 0x00ff_ffff_ffff_ffff;
            if self.name == u64::from_be_bytes(*b"\0chunked") {
                self.chunked = true;
            }
        }
        if self.header != 0
            && let Some(st) = self.field.as_mut()
            && let Some(r) = c.sigs.step_header(st, b, self.header, apps)
        {
            return Some(HttpHit::Sig(r, HttpWhere::Header));
        }
        None
    }

    fn target_byte(&mut self, c: &Compiled, b: u8, apps: AppSet) -> Option<SigRef> {
        let mut out = [0u8; 3];
        let n = match (self.pct, b) {
            (0, b'%') => {
                self.pct = 1;
                return None;
            }
            (0, _) => {
                out[0] = b;
                1
            }
            (1, _) if b.is_ascii_hexdigit() => {
                self.pct = 2;
                self.pct_hi = b;
                return None;
            }
            (2, _) if b.is_ascii_hexdigit() => {
                self.pct = 0;
                out[0] = (hex(self.pct_hi) << 4) | hex(b);
                1
            }
            (1, _) => {
                // Not an escape: kept literally, as a server would.
                self.pct = 0;
                out[..2].copy_from_slice(&[b'%', b]);
                2
            }
            _ => {
                self.pct = 0;
                out.copy_from_slice(&[b'%', self.pct_hi, b]);
                3
            }
        };
        let mut hit = None;
        for &v in &out[..n] {
            if let Some(f) = self.fields.as_mut() {
                push_capped(&mut f.target, v, MAX_TARGET);
            }
            if let Some(st) = self.field.as_mut()
                && hit.is_none()
            {
                hit = c.sigs.step_target(st, v, apps);
            }
        }
        hit
    }

    fn end_head(&mut self, c: &Compiled, apps: AppSet, port: u16) -> Option<HttpHit> {
        let reply = self.is_reply;
        let hit = self
            .fields
            .as_mut()
            .and_then(|f| c.rules.eval_head(f, reply, apps, port, self.src))
            .map(HttpHit::Rule);
        self.end_head_body();
        hit
    }

    fn end_head_body(&mut self) {
        let no_body = self.is_reply && (self.status < 200 || self.status == 204 || self.status == 304);
        if no_body {
            self.reset_message();
        } else if self.chunked {
            self.phase = Phase::ChunkSize;
            self.body = 0;
            self.count = 0;
        } else if self.has_length {
            if self.body == 0 {
                self.reset_message();
            } else {
                self.phase = Phase::Body;
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
