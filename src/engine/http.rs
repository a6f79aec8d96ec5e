//! Incremental HTTP/1.x message walker for the `http-target` and
//! `http-header` scopes and message rules, judging every message of a
//! connection.
//!
//! It exists so HTTP signatures are matched where the protocol puts them
//! (request target, a named header's value) and nowhere else: `gateway.dll`
//! in a database row is not a request target. It is fed one direction's
//! in-order bytes in whatever pieces they arrive, so a target or header split
//! anywhere, keep-alive and pipelined messages, header names in any case and
//! obsolete line folding behave as if each message had arrived alone.
//!
//! Guarantees:
//! - every head is read whole, however many messages came before it, up to
//!   [`MAX_HEAD`] bytes; a longer head is itself a finding
//!   ([`HttpHit::Oversized`]); bodies are skipped by their framing
//!   (Content-Length, chunked; none after 1xx/204/304 or for HEAD);
//! - the request target is matched in normalised form ([`super::uri`]), and
//!   `Host` signatures see the request's effective host (the absolute-form
//!   URL's host wins over `Host`), the same view message rules get;
//! - header signatures see every instance of a repeated header;
//! - CONNECT, a 2xx reply to it and a 101 reply are reported
//!   ([`Fed::Connect`], [`Fed::Opened`]) so the stream inspector can judge the
//!   destination and restart inspection on the tunnelled bytes;
//! - a direction that spoke HTTP and stops (a later message that does not
//!   start as HTTP, a head or chunked framing that breaks the grammar) is
//!   reported ([`Fed::Left`]) with the byte where the new stream starts, the
//!   start of a message that came in earlier pieces included, so what came
//!   before cannot change how those bytes are judged.
//!
//! A direction whose first bytes are not an HTTP request or status line is
//! switched off for good, as is a reply body delimited only by connection
//! close. Memory: a few dozen bytes of state plus the current head's fields
//! (boxed, bounded by [`MAX_HEAD`], shrunk after a large head).

use super::compiled::Compiled;
use super::matcher::{FieldState, HeaderId, SigRef};
use super::message_rules::{HeadFields, MAX_METHOD, RuleRef};
use super::names::{FNV_OFFSET, FNV_PRIME, name_hash};
use crate::policy::AppSet;

/// Longest message head read (request or status line and header fields).
pub const MAX_HEAD: u32 = 64 * 1024;

const CONTENT_LENGTH: u64 = name_hash(b"content-length");
const HOST: u64 = name_hash(b"host");
const TRANSFER_ENCODING: u64 = name_hash(b"transfer-encoding");
const CONNECTION: u64 = name_hash(b"connection");

/// What the HTTP walker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpHit {
    /// A scoped signature.
    Sig(SigRef, HttpWhere),
    /// A message rule, judged when the head was complete.
    Rule(RuleRef),
    /// A head longer than [`MAX_HEAD`].
    Oversized,
}

/// What feeding bytes produced, besides nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// A signature or rule matched, or a limit was passed.
    Hit(HttpHit),
    /// A CONNECT request head ended (destination in [`HttpState::fields`]);
    /// the client's next bytes are the tunnel's.
    Connect,
    /// A reply opened a tunnel (2xx to CONNECT, 101 Switching Protocols):
    /// both directions' next bytes are a new stream.
    Opened,
    /// A length-delimited body ended: the next byte starts a message (and
    /// a line, for line-start signatures).
    Boundary,
    /// A direction that spoke HTTP stopped: a later message did not start
    /// as HTTP, or a message broke the grammar. What follows is judged as a
    /// new stream, from the returned offset, after the
    /// [`HttpState::take_replay`] bytes of it that came in earlier data (a
    /// message that does not start as HTTP is a new stream from its first
    /// byte, so the verdict on it does not depend on what came before).
    Left,
}

/// `Host` signatures on the request's effective authority.
fn host_sigs(c: &Compiled, f: &HeadFields, apps: AppSet) -> Option<SigRef> {
    host_sigs_on(c, f.url_authority(), apps)
}

/// Judges a destination named inside the stream (CONNECT, SOCKS) like the
/// request's host: `Host` signatures on `authority`.
pub fn host_sigs_on(c: &Compiled, authority: &[u8], apps: AppSet) -> Option<SigRef> {
    let id = c.sigs.header_id(HOST);
    if id == 0 || authority.is_empty() {
        return None;
    }
    if let Some(r) = c.sigs.header_present(id, apps) {
        return Some(r);
    }
    let mut st = c.sigs.header_start();
    authority
        .iter()
        .find_map(|&b| c.sigs.step_header(&mut st, b, id, apps))
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
    /// `HTTP/` after a request target.
    Version,
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

impl Phase {
    /// True before a message's first line is known to be HTTP.
    fn in_first_line(self) -> bool {
        matches!(
            self,
            Phase::Start | Phase::Method | Phase::Target | Phase::Version
        )
    }
}

/// Per-direction HTTP parse state.
#[derive(Debug, Clone, Default)]
pub struct HttpState {
    phase: Phase,
    /// Bytes of the current head so far.
    head_bytes: u32,
    /// Body bytes of the current message walked so far.
    body_seen: u64,
    /// A request or status line was recognised on this direction.
    seen: bool,
    /// Requests whose heads ended (client side) / final replies (server side).
    count_msgs: u32,
    /// Reply side: the index of the reply that answers a CONNECT.
    tunnel_at: Option<u32>,
    /// Reply side: requests (index mod 64) that were HEAD: no reply body.
    head_mask: u64,
    /// Client side: HEAD requests (index mod 64) not yet handed to the
    /// reply side.
    head_sent: u64,
    /// Bytes in the current token or line (bounded checks).
    count: u32,
    /// First bytes of the first token, to spot `HTTP/`.
    token: u32,
    field: Option<FieldState>,
    header: HeaderId,
    name: u64,
    is_reply: bool,
    /// A Content-Length header was seen (its value is parsed into `body`).
    has_length: bool,
    chunked: bool,
    in_cl: bool,
    in_te: bool,
    in_conn: bool,
    /// This head says `Connection: close`.
    close: bool,
    /// A head on this connection said `Connection: close` (kept across
    /// messages): no request after the current one will be served.
    closing: bool,
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
    /// Blank-line bytes before this message (servers skip any number).
    lead: u32,
    /// The last 64 of them: bit 0 is the latest, set for CR, clear for LF.
    lead_cr: u64,
    /// The phase in which the bytes stopped being HTTP ([`Fed::Left`]).
    left_from: Phase,
    /// After [`Fed::Left`]: bytes of the new stream that came in earlier data.
    replay_len: u32,
}

impl HttpState {
    /// A fresh walker for a new stream, reusing `old`'s field buffers.
    /// `keep_count`: the stream restarted only on this side (after its own
    /// CONNECT), so if the proxy refuses, later requests keep the numbering
    /// the reply side counts with.
    pub fn restarted(old: HttpState, keep_count: bool) -> HttpState {
        let mut fields = old.fields;
        if let Some(f) = fields.as_mut() {
            f.clear();
        }
        HttpState {
            fields,
            count_msgs: if keep_count { old.count_msgs } else { 0 },
            ..HttpState::default()
        }
    }

    /// The walker carried across a policy reload: message framing (where
    /// the next request starts, body left, keep-alive) is the protocol's,
    /// not the policy's, so it is kept; what indexes the old engine's rules
    /// (the current header's rule slot, fields of a head cut in two) is
    /// dropped. Without this a keep-alive connection would lose track of
    /// its requests at a reload and be settled clean.
    pub fn across_reload(mut self) -> HttpState {
        self.slot = None;
        // A first line's method and target are the stream's bytes, not
        // the policy's: kept (a message that is not HTTP replays them).
        if self.in_head()
            && !self.phase.in_first_line()
            && let Some(f) = self.fields.as_mut()
        {
            f.clear();
        }
        self
    }

    /// True once the direction is known not to be (parsable) HTTP any more.
    pub fn is_off(&self) -> bool {
        self.phase == Phase::Off
    }

    /// True while the direction speaks HTTP and may start another message
    /// that a server would serve (not after `Connection: close`).
    pub fn is_live(&self) -> bool {
        self.seen && self.phase != Phase::Off && !self.closing
    }

    /// True while the first line of the direction's first message may
    /// still turn out to be an HTTP request line (method or target read,
    /// version not yet).
    pub fn first_line_pending(&self) -> bool {
        !self.seen && matches!(self.phase, Phase::Method | Phase::Target | Phase::Version)
    }

    /// True once this direction sent an HTTP request or status line.
    pub fn spoke_http(&self) -> bool {
        self.seen
    }

    /// True once a head on this direction said `Connection: close`.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The other side said `Connection: close`: no later request is served.
    pub fn set_closing(&mut self) {
        self.closing = true;
    }

    /// True when the next `n` bytes are all body of a message of which at
    /// least `depth` body bytes were already walked: they need no stream
    /// scan (bodies are inspected up to the depth per message).
    pub fn skips_body(&self, n: usize, depth: u64) -> bool {
        matches!(self.phase, Phase::Body | Phase::ChunkData)
            && self.body_seen >= depth
            && self.body >= n as u64
    }

    /// Starts counting requests from zero (both sides of a tunnel restart).
    pub fn forget_count(&mut self) {
        self.count_msgs = 0;
    }

    /// Heads of requests ended so far (client side).
    pub fn messages(&self) -> u32 {
        self.count_msgs
    }

    /// Reply side: the reply number `index` (0-based, final replies) answers
    /// a CONNECT; a 2xx there opens a tunnel.
    pub fn expect_tunnel(&mut self, index: u32) {
        self.tunnel_at = Some(index);
    }

    /// Client side: takes the HEAD requests seen since the last call, for
    /// the reply side's [`HttpState::expect_head_replies`].
    pub fn take_head_requests(&mut self) -> u64 {
        std::mem::take(&mut self.head_sent)
    }

    /// Reply side: the requests in `mask` (bit = index mod 64) were HEAD
    /// (their replies have no body).
    pub fn expect_head_replies(&mut self, mask: u64) {
        self.head_mask |= mask;
    }

    /// The current (or just ended) head's fields, if collected.
    pub fn fields(&self) -> Option<&HeadFields> {
        self.fields.as_deref()
    }

    /// Feeds in-order bytes of a connection to `port`; returns the first
    /// event and the offset just past the byte that made it.
    pub fn feed(&mut self, c: &Compiled, data: &[u8], apps: AppSet, port: u16) -> Option<(Fed, usize)> {
        let mut i = 0;
        while i < data.len() {
            if self.in_head() && self.head_bytes > MAX_HEAD {
                self.phase = Phase::Off;
                return Some((Fed::Hit(HttpHit::Oversized), i));
            }
            match self.phase {
                Phase::Off => return None,
                Phase::Body | Phase::ChunkData => {
                    let take = usize::try_from(self.body.min((data.len() - i) as u64)).unwrap_or(0);
                    i += take;
                    self.body -= take as u64;
                    self.body_seen += take as u64;
                    if self.body == 0 {
                        if self.phase == Phase::Body {
                            self.reset_message();
                            // The next message starts a line, whatever the
                            // body's last byte was.
                            return Some((Fed::Boundary, i));
                        }
                        self.phase = Phase::ChunkEnd;
                    }
                    continue;
                }
                // Bytes nobody looks at: jump to the end of the line.
                Phase::Value | Phase::ValueWs if self.uninteresting_value() => {
                    let rest = &data[i..];
                    let k = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    self.add_head(k);
                    i += k;
                    self.phase = Phase::Value;
                    if k == rest.len() {
                        continue;
                    }
                }
                Phase::LineRest if !(self.is_reply && self.status == 0) => {
                    let rest = &data[i..];
                    let k = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    self.add_head(k);
                    i += k;
                    if k == rest.len() {
                        continue;
                    }
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            if self.in_head() {
                self.add_head(1);
            }
            if let Some(ev) = self.step(c, b, apps, port) {
                if ev == Fed::Left {
                    return Some((ev, self.left_at(i)));
                }
                return Some((ev, i));
            }
        }
        None
    }

    /// Where the new stream starts in the data just fed (`i`: offset past
    /// the byte that left HTTP); notes how many of its bytes came earlier.
    fn left_at(&mut self, i: usize) -> usize {
        if !self.left_from.in_first_line() {
            // Mid-message: the byte that broke the grammar starts it.
            self.replay_len = 0;
            return i - 1;
        }
        // The blank lines, the line read so far, and the byte that left.
        let line: usize = self.line_parts().iter().map(|p| p.len()).sum();
        let n = (self.lead as usize).saturating_add(line + 1);
        self.replay_len = u32::try_from(n.saturating_sub(i)).unwrap_or(u32::MAX);
        i.saturating_sub(n)
    }

    /// After [`Fed::Left`]: writes the new stream's bytes that came in
    /// earlier data (the start of a message that was not HTTP) to `out`.
    pub fn take_replay(&mut self, out: &mut Vec<u8>) {
        let want = std::mem::take(&mut self.replay_len) as usize;
        if want == 0 {
            return;
        }
        // The blank lines before the message: exact for the last 64 (all a
        // real client sends); older ones are not replayed.
        let lead = self.lead as usize;
        let blanks = want.min(lead);
        for j in blanks.saturating_sub(64)..blanks {
            let age = lead - 1 - j;
            let cr = age < 64 && self.lead_cr & (1 << age) != 0;
            out.push(if cr { b'\r' } else { b'\n' });
        }
        let mut want = want - blanks;
        for part in self.line_parts() {
            let take = want.min(part.len());
            out.extend_from_slice(&part[..take]);
            want -= take;
        }
    }

    /// The first line read before the byte that left HTTP (after blank
    /// lines): method, then target, then the part of `HTTP/` matched, each
    /// with the space before it, as far as the walker got.
    fn line_parts(&self) -> [&[u8]; 5] {
        let Some(f) = self.fields.as_deref() else {
            return [&[]; 5];
        };
        let target = matches!(self.left_from, Phase::Target | Phase::Version);
        let version = self.left_from == Phase::Version;
        let pick = |on: bool, b: &'static [u8]| if on { b } else { &[] };
        [
            &f.method,
            pick(target, b" "),
            if target { &f.target } else { &[] },
            pick(version, b" "),
            pick(version, &b"HTTP/"[..(self.count as usize).min(5)]),
        ]
    }

    fn add_head(&mut self, n: usize) {
        self.head_bytes = self
            .head_bytes
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// True while inside a message head.
    fn in_head(&self) -> bool {
        matches!(
            self.phase,
            Phase::Method
                | Phase::Target
                | Phase::Version
                | Phase::LineRest
                | Phase::Status
                | Phase::LineStart
                | Phase::Name
                | Phase::ValueWs
                | Phase::Value
                | Phase::HeadEnd
        )
    }

    fn reset_message(&mut self) {
        let mut fields = self.fields.take();
        if let Some(f) = fields.as_mut() {
            f.clear();
        }
        *self = HttpState {
            phase: Phase::Start,
            fields,
            seen: self.seen,
            count_msgs: self.count_msgs,
            tunnel_at: self.tunnel_at,
            head_mask: self.head_mask,
            head_sent: self.head_sent,
            closing: self.closing,
            ..HttpState::default()
        };
    }

    /// The bytes stopped parsing as HTTP at the current byte. A direction
    /// that spoke HTTP goes on as a new stream ([`Fed::Left`]); one that
    /// never did is simply not HTTP.
    fn leave(&mut self) -> Option<Fed> {
        let from = self.phase;
        self.phase = Phase::Off;
        if !self.seen {
            return None;
        }
        self.left_from = from;
        Some(Fed::Left)
    }

    fn step(&mut self, c: &Compiled, b: u8, apps: AppSet, port: u16) -> Option<Fed> {
        match self.phase {
            Phase::Start => {
                if b == b'\r' || b == b'\n' {
                    // Blank lines before a message are skipped, however
                    // many: servers do (nginx), so a signature must not
                    // be dodged by them.
                    self.lead = self.lead.saturating_add(1);
                    self.lead_cr = (self.lead_cr << 1) | u64::from(b == b'\r');
                } else if b.is_ascii_uppercase() {
                    self.phase = Phase::Method;
                    self.count = 1;
                    self.head_bytes = 1;
                    self.token = u32::from(b);
                    let f = self.fields.get_or_insert_with(Box::default);
                    f.method.push(b);
                } else {
                    return self.leave();
                }
            }
            Phase::Method => {
                if b == b' ' {
                    self.phase = Phase::Target;
                } else if b == b'/' && self.count == 4 && self.token == u32::from_be_bytes(*b"HTTP") {
                    self.is_reply = true;
                    self.seen = true;
                    self.phase = Phase::LineRest;
                    self.count = 0;
                } else if (b.is_ascii_uppercase() || b == b'-' || b == b'_') && self.count < 24 {
                    if self.count < 4 {
                        self.token = (self.token << 8) | u32::from(b);
                    }
                    self.count += 1;
                    if let Some(f) = self.fields.as_mut()
                        && f.method.len() < MAX_METHOD
                    {
                        f.method.push(b);
                    }
                } else {
                    return self.leave();
                }
            }
            Phase::Target => {
                if b == b' ' || b == b'\r' || b == b'\n' {
                    // Only `METHOD target HTTP/x` is HTTP/1.x; a line without
                    // a version (HTTP/0.9, SMTP's `EHLO host`) ends the walk
                    // after its target was judged.
                    self.count = 0;
                    if let Some(r) = self.target_done(c, apps) {
                        self.phase = Phase::Off;
                        return Some(Fed::Hit(HttpHit::Sig(r, HttpWhere::Target)));
                    }
                    if b == b' ' {
                        self.phase = Phase::Version;
                        return None;
                    }
                    return self.leave();
                }
                if b < 0x21 || b == 0x7f {
                    return self.leave();
                } else if let Some(f) = self.fields.as_mut() {
                    f.target.push(b);
                }
            }
            Phase::Version => {
                let want = b"HTTP/";
                if want.get(self.count as usize) == Some(&b) {
                    self.count += 1;
                    if self.count as usize == want.len() {
                        self.seen = true;
                        self.phase = Phase::LineRest;
                        self.count = 0;
                    }
                } else {
                    return self.leave();
                }
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
                b' ' | b'\t' if !self.uninteresting_value() => {
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
                    self.in_conn = false;
                }
            },
            Phase::HeadEnd => {
                if b == b'\n' {
                    return self.end_head(c, apps, port);
                }
                return self.leave();
            }
            Phase::Name => {
                if b == b':' {
                    self.header_named(c, apps);
                    self.phase = Phase::ValueWs;
                    if self.header != 0
                        && let Some(r) = c.sigs.header_present(self.header, apps)
                    {
                        return Some(Fed::Hit(HttpHit::Sig(r, HttpWhere::Header)));
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
                return self
                    .value_byte(c, b, apps)
                    .map(|r| Fed::Hit(HttpHit::Sig(r, HttpWhere::Header)));
            }
            Phase::Value => {
                return self
                    .value_byte(c, b, apps)
                    .map(|r| Fed::Hit(HttpHit::Sig(r, HttpWhere::Header)));
            }
            Phase::ChunkSize => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.body = self.body.saturating_mul(16).saturating_add(d);
                    self.count += 1;
                }
                b';' | b' ' | b'\t' | b'\r' => self.phase = Phase::ChunkExt,
                b'\n' => return self.chunk_line_done(),
                _ => return self.leave(),
            },
            Phase::ChunkExt => {
                if b == b'\n' {
                    return self.chunk_line_done();
                }
            }
            Phase::ChunkEnd => {
                if b == b'\n' {
                    self.phase = Phase::ChunkSize;
                    self.body = 0;
                    self.count = 0;
                } else if b != b'\r' {
                    return self.leave();
                }
            }
            Phase::Body | Phase::ChunkData | Phase::Off => {}
        }
        None
    }

    /// True when no signature, rule or framing header needs this value.
    #[inline]
    fn uninteresting_value(&self) -> bool {
        self.header == 0
            && self.slot.is_none()
            && !self.in_host
            && !self.in_cl
            && !self.in_te
            && !self.in_conn
    }

    fn begin_line(&mut self) {
        self.count = 0;
    }

    fn header_named(&mut self, c: &Compiled, apps: AppSet) {
        self.in_cl = self.name == CONTENT_LENGTH;
        self.in_te = self.name == TRANSFER_ENCODING;
        self.in_conn = self.name == CONNECTION;
        self.header = c.sigs.header_id(self.name);
        self.in_host = false;
        if self.name == HOST && !self.is_reply {
            // Host signatures are matched once the head is complete, on the
            // request's effective host (an absolute-form URL's host wins).
            self.header = 0;
            self.in_host = self.fields.as_ref().is_some_and(|f| !f.host_seen);
        }
        self.slot = None;
        if let Some(f) = self.fields.as_mut() {
            if self.in_host {
                f.host_seen = true;
            }
            if c.rules.any() && apps & c.rules.apps() != 0 {
                self.slot = c.rules.header_slot(self.name).and_then(|s| u8::try_from(s).ok());
            }
            if let Some(s) = self.slot {
                // Every instance is kept apart: a repeated header is not one value.
                let at = u32::try_from(f.values.len()).unwrap_or(u32::MAX);
                f.spans.push((s, at, at));
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

    fn value_byte(&mut self, c: &Compiled, b: u8, apps: AppSet) -> Option<SigRef> {
        if b == b'\n' {
            self.phase = Phase::LineStart;
            self.begin_line();
            return None;
        }
        if let Some(f) = self.fields.as_mut()
            && b != b'\r'
        {
            if self.slot.is_some() {
                f.values.push(b);
                if let Some(last) = f.spans.last_mut() {
                    last.2 = u32::try_from(f.values.len()).unwrap_or(u32::MAX);
                }
            }
            if self.in_host && !(f.host.is_empty() && (b == b' ' || b == b'\t')) {
                f.host.push(b);
            }
        }
        if self.in_cl && b.is_ascii_digit() {
            self.body = self.body.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        }
        if self.in_conn {
            self.name = ((self.name << 8) | u64::from(b.to_ascii_lowercase())) & 0xff_ffff_ffff;
            if self.name == u64::from_be_bytes(*b"\0\0\0close") {
                self.close = true;
            }
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
            return Some(r);
        }
        None
    }

    /// The request line's target is complete: normalise it and match
    /// target signatures on the normalised form.
    fn target_done(&mut self, c: &Compiled, apps: AppSet) -> Option<SigRef> {
        let f = self.fields.as_mut()?;
        f.normalise_target();
        let mut st = c.sigs.target_start();
        f.norm.iter().find_map(|&v| c.sigs.step_target(&mut st, v, apps))
    }

    fn end_head(&mut self, c: &Compiled, apps: AppSet, port: u16) -> Option<Fed> {
        let reply = self.is_reply;
        // A final reply or a request that closes the connection: RFC 9112 9.6.
        if self.close && (!reply || self.status >= 200) {
            self.closing = true;
        }
        let mut found = None;
        if let Some(f) = self.fields.as_mut() {
            if !reply {
                f.resolve();
                found = host_sigs(c, f, apps).map(|r| Fed::Hit(HttpHit::Sig(r, HttpWhere::Header)));
            }
            if found.is_none() && c.rules.any() {
                found = c
                    .rules
                    .eval_head(f, reply, apps, port, self.src)
                    .map(|r| Fed::Hit(HttpHit::Rule(r)));
            }
        }
        if found.is_some() {
            return found;
        }
        if reply {
            let index = self.count_msgs;
            let final_reply = self.status >= 200 || self.status == 101;
            if final_reply {
                self.count_msgs = self.count_msgs.saturating_add(1);
            }
            let head_bit = 1u64 << (index % 64);
            let to_head = final_reply && self.head_mask & head_bit != 0;
            if final_reply {
                self.head_mask &= !head_bit;
            }
            let connect = final_reply && self.tunnel_at == Some(index);
            if connect {
                self.tunnel_at = None;
            }
            if self.status == 101 || (connect && (200..300).contains(&self.status)) {
                self.phase = Phase::Off;
                return Some(Fed::Opened);
            }
            if to_head {
                self.reset_message();
                return None;
            }
        } else {
            if self.fields.as_ref().is_some_and(|f| f.method == b"HEAD") {
                self.head_sent |= 1u64 << (self.count_msgs % 64);
            }
            self.count_msgs = self.count_msgs.saturating_add(1);
            if self.fields.as_ref().is_some_and(|f| f.is_connect()) {
                // The rest of this direction is the tunnel (or, if the proxy
                // refuses, more requests: a fresh walker reads those too).
                return Some(Fed::Connect);
            }
        }
        self.end_head_body();
        None
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

    fn chunk_line_done(&mut self) -> Option<Fed> {
        if self.count == 0 {
            return self.leave();
        } else if self.body == 0 {
            self.phase = Phase::Trailer;
        } else {
            self.phase = Phase::ChunkData;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::policy::{AppLibrary, HostsFile, Policy};

    const RULES: &str = r#"
name = "chat"
description = "test"
[[signature]]
id = "target"
scope = "http-target"
text = "/gateway/gateway.dll"
why = "test"
[[signature]]
id = "host"
scope = "http-header"
header = "Host"
text = "gateway.messenger.test"
why = "test"
"#;

    fn compiled() -> Compiled {
        let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/chat.toml"), RULES.to_string())]).unwrap();
        let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 chat\n").unwrap();
        Compiled::build(&Policy::new(lib, &hosts, None).unwrap()).unwrap()
    }

    /// Feeds `data` in pieces of `cut` bytes; collects every event.
    fn events(c: &Compiled, h: &mut HttpState, data: &[u8], cut: usize) -> Vec<Fed> {
        let mut out = Vec::new();
        for piece in data.chunks(cut) {
            let mut at = 0;
            while at < piece.len() {
                match h.feed(c, &piece[at..], 1, 80) {
                    Some((ev, end)) => {
                        out.push(ev);
                        at += end.max(1);
                        if matches!(ev, Fed::Hit(_) | Fed::Connect | Fed::Opened) {
                            return out;
                        }
                    }
                    None => break,
                }
            }
        }
        out
    }

    /// Feeds `data` in pieces of `cut` bytes until the walker leaves HTTP;
    /// returns the new stream's bytes (replayed start plus the rest).
    fn left_stream(c: &Compiled, data: &[u8], cut: usize) -> Option<Vec<u8>> {
        let mut h = HttpState::default();
        let mut fed = 0;
        for piece in data.chunks(cut) {
            let mut at = 0;
            while at < piece.len() {
                match h.feed(c, &piece[at..], 1, 80) {
                    Some((Fed::Left, k)) => {
                        let mut out = Vec::new();
                        h.take_replay(&mut out);
                        out.extend_from_slice(&data[fed + at + k..]);
                        return Some(out);
                    }
                    Some((Fed::Hit(_), _)) => return None,
                    Some((_, end)) => at += end.max(1),
                    None => break,
                }
            }
            fed += piece.len();
        }
        None
    }

    #[test]
    fn a_direction_that_stops_speaking_http_is_a_new_stream_from_the_right_byte() {
        let c = compiled();
        let get: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let cases: [(&[u8], Option<&[u8]>); 9] = [
            // A later message that is not HTTP: from its first byte,
            // leading blank lines included.
            (b"VER 1 MSNP8 CVR0\r\n", Some(b"VER 1 MSNP8 CVR0\r\n")),
            (b"GET Host: x\r\nVER 1\r\n", Some(b"GET Host: x\r\nVER 1\r\n")),
            (b"\r\n\nUSR 1\r\n", Some(b"\r\n\nUSR 1\r\n")),
            (b"\x16\x03\x01\x00", Some(b"\x16\x03\x01\x00")),
            (b"GET /x HTTP/9 \r\n", None),
            (
                b"GETTING-LONGER-THAN-A-METHOD-CAN-BE x",
                Some(b"GETTING-LONGER-THAN-A-METHOD-CAN-BE x"),
            ),
            // Grammar broken inside a message: from the breaking byte.
            (b"GET / HTTP/1.1\r\n\rVER 1\r\n", Some(b"VER 1\r\n")),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Some(b"zz\r\n"),
            ),
            // More HTTP is not a new stream.
            (b"GET /b HTTP/1.1\r\n\r\n", None),
        ];
        for (rest, want) in cases {
            let data = [get, rest].concat();
            for cut in 1..=data.len() {
                assert_eq!(
                    left_stream(&c, &data, cut).as_deref(),
                    want,
                    "{} cut {cut}",
                    String::from_utf8_lossy(rest)
                );
            }
        }
        // The first message that is not HTTP is simply not HTTP.
        assert_eq!(left_stream(&c, b"VER 1 MSNP8\r\n", 3), None);
        // Any number of blank lines before a request: still HTTP.
        let blank = [&b"\r\n".repeat(40)[..], b"GET /b HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(
            left_stream(&c, &[get, &blank[..], b"VER 1\r\n"].concat(), 5).as_deref(),
            Some(&b"VER 1\r\n"[..])
        );
        // A policy reload inside a first line keeps what it replays.
        let mut h = HttpState::default();
        assert_eq!(h.feed(&c, get, 1, 80), None);
        assert_eq!(h.feed(&c, b"VER 1", 1, 80), None);
        let mut h = h.across_reload();
        assert_eq!(h.feed(&c, b" MSNP8\r\n", 1, 80), Some((Fed::Left, 0)));
        let mut replay = Vec::new();
        h.take_replay(&mut replay);
        assert_eq!(replay, b"VER 1");
    }

    #[test]
    fn messages_are_walked_one_by_one_whatever_the_cut() {
        let c = compiled();
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        let cases: Vec<(Vec<u8>, Option<Fed>, bool)> = vec![
            (
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b/../gateway/./gateway.dll HTTP/1.1\r\n\r\n"
                    .to_vec(),
                Some(Fed::Hit(HttpHit::Sig(
                    SigRef { app: 0, sig: 0 },
                    HttpWhere::Target,
                ))),
                true,
            ),
            (
                b"GET http://GATEWAY.messenger.test:80/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n".to_vec(),
                Some(Fed::Hit(HttpHit::Sig(
                    SigRef { app: 0, sig: 1 },
                    HttpWhere::Header,
                ))),
                true,
            ),
            (
                b"GET http://www.example.com/ HTTP/1.1\r\nHost: gateway.messenger.test\r\n\r\n".to_vec(),
                None,
                true,
            ),
            (
                b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03".to_vec(),
                Some(Fed::Connect),
                true,
            ),
            (big_head.into_bytes(), Some(Fed::Hit(HttpHit::Oversized)), false),
            (b"EHLO mail.example\r\nMAIL FROM:<a@b>\r\n".to_vec(), None, false),
            (
                b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
                None,
                false,
            ),
        ];
        for (data, want, live) in cases {
            for cut in [1, 7, 100_000] {
                let mut h = HttpState::default();
                let got: Vec<Fed> = events(&c, &mut h, &data, cut)
                    .into_iter()
                    .filter(|e| *e != Fed::Boundary)
                    .collect();
                assert_eq!(
                    got.first().copied(),
                    want,
                    "{} cut {cut}",
                    String::from_utf8_lossy(&data[..data.len().min(60)])
                );
                if want.is_none() {
                    assert_eq!(
                        h.is_live(),
                        live,
                        "{}",
                        String::from_utf8_lossy(&data[..data.len().min(60)])
                    );
                }
            }
        }
    }

    #[test]
    fn replies_open_tunnels_and_skip_bodies_by_framing() {
        let c = compiled();
        let mut h = HttpState::default();
        // Reply 0 answers a HEAD: its Content-Length announces no body.
        h.expect_head_replies(1);
        h.expect_tunnel(2);
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
                     HTTP/1.1 200 Connection established\r\n\r\n\x16\x03";
        for cut in [1, 5, 1000] {
            let mut h = h.clone();
            let got = events(&c, &mut h, data, cut);
            assert_eq!(got, vec![Fed::Boundary, Fed::Opened], "cut {cut}");
        }
        let mut h = HttpState::default();
        let got = events(&c, &mut h, b"HTTP/1.1 101 Switching Protocols\r\n\r\nVER 1", 1000);
        assert_eq!(got, vec![Fed::Opened]);
    }
}
