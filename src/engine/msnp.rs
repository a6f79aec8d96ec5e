//! MSNP by its grammar: which lines are MSNP commands, and which streams are MSNP.
//!
//! The same line reader also checks IRC command lines (`protocol = "irc"`):
//! well-formed, and not in a stream that opened as another text protocol.
//!
//! A three-letter word at a line start proves nothing: mail, news and web
//! pages are full of `CAL 2026 budget` and `CHG 0031337 approved`. So the
//! MSN command signatures (`protocol = "msnp"`) count only when
//! - the whole line parses as the command it names (numeric transaction id,
//!   the argument shape that verb has: status codes, e-mail addresses,
//!   `MSNP<n>` versions, `host:port`, payload lengths), and
//! - the stream is MSNP: its first line is an MSNP command, or two
//!   consecutive lines are (a `MSG` payload is skipped by its length), and
//!   neither direction opened as another text protocol (SMTP/FTP `220`,
//!   `EHLO`, POP3 `+OK`, IMAP `* OK`, NNTP `200`/`201`, HTTP, SSH).
//!
//! In HTTP the gateway is recognised by its own markers (`gateway.dll`,
//! `application/x-msn-messenger`, `X-MSN-Messenger`), which precede any
//! MSNP in a gateway body; MSNP lines in other HTTP bodies never count.
//!
//! Per direction this keeps the first [`LINE_MAX`] bytes of the current line
//! and a few counters; nothing allocates, every length is checked.

use crate::engine::matcher::{Hit, Matcher};
use crate::engine::protocols::{TextProtocol, first_line};
use crate::policy::AppSet;

/// Bytes of a line kept for the grammar check: enough for the verb, the
/// transaction id and the arguments that identify a command.
pub const LINE_MAX: usize = 96;

/// Largest payload length accepted after `MSG` and friends.
const MAX_PAYLOAD: u32 = 1 << 20;

/// What a direction's stream is, as far as MSNP goes (ordered: a stronger
/// finding wins when the two directions are combined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum StreamKind {
    /// Not known yet.
    #[default]
    Unknown,
    /// An HTTP CONNECT tunnel: what follows may be anything.
    Tunnel,
    /// MSNP commands were seen where the grammar says they belong.
    Msnp,
    /// Another text protocol: MSNP-looking lines in it are its text.
    Foreign,
}

/// Where the line reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Collecting a line's first bytes.
    Line,
    /// The line outgrew the buffer and was judged; waiting for its end.
    Rest,
    /// Skipping a command's payload (bytes left).
    Payload(u32),
    /// The stream's first line outgrew the buffer while the HTTP walker
    /// could still take it for a request line: judged once it cannot.
    Held,
}

/// MSNP state of one direction.
#[derive(Debug, Clone)]
pub struct MsnpDir {
    buf: [u8; LINE_MAX],
    len: u8,
    mode: Mode,
    /// The first line of this direction has been judged.
    first_done: bool,
    /// Consecutive lines that were MSNP commands.
    run: u8,
    /// What the stream is.
    pub kind: StreamKind,
}

impl Default for MsnpDir {
    fn default() -> Self {
        MsnpDir {
            buf: [0; LINE_MAX],
            len: 0,
            mode: Mode::Line,
            first_done: false,
            run: 0,
            kind: StreamKind::Unknown,
        }
    }
}

impl MsnpDir {
    /// State after a policy reload: mid-line and not at the stream's first
    /// line, keeping what the stream is known to be.
    pub fn mid_stream(&self) -> MsnpDir {
        MsnpDir {
            mode: Mode::Rest,
            first_done: true,
            kind: self.kind,
            ..MsnpDir::default()
        }
    }
}

impl MsnpDir {
    /// The HTTP walker recognised this direction as HTTP: lines in its
    /// heads and bodies are HTTP's (a CONNECT head's too; the tunnel after
    /// it is a new stream). Not a proxy's reply inside a tunnel.
    pub fn http_seen(&mut self) {
        if self.kind != StreamKind::Tunnel {
            self.kind = StreamKind::Foreign;
        }
    }

    /// The other direction started a new stream: what this side's first
    /// line said (another text protocol) no longer holds for it.
    pub fn forget_kind(&mut self) {
        if self.kind == StreamKind::Foreign {
            self.kind = StreamKind::Unknown;
        }
    }

    /// A throw-away reader for a retransmitted copy that starts a line (or
    /// not; `first`: the stream's first line), in a stream whose kind is
    /// already known.
    pub fn retransmission(&self, line_start: bool, first: bool) -> MsnpDir {
        MsnpDir {
            mode: if line_start || first {
                Mode::Line
            } else {
                Mode::Rest
            },
            first_done: !first,
            kind: self.kind,
            ..MsnpDir::default()
        }
    }
}

/// Shares what one direction learnt with the other (a connection is one
/// protocol): called before each segment is inspected.
pub fn share(a: &mut MsnpDir, b: &mut MsnpDir) {
    let k = a.kind.max(b.kind);
    a.kind = k;
    b.kind = k;
}

/// Feeds in-order stream bytes; returns a hit of a `protocol = "msnp"`
/// signature (`end` is relative to `data`). `context` is the carried-over
/// tail before `data` (for `anywhere` literals split across segments).
pub fn feed(m: &Matcher, st: &mut MsnpDir, context: &[u8], data: &[u8], apps: AppSet) -> Option<Hit> {
    feed_holding(m, st, context, data, apps, false)
}

/// [`feed`], where `http_pending` says the HTTP walker has not yet decided
/// whether the stream's first line is a request line (it has not reached
/// the version). A first line longer than [`LINE_MAX`] is then judged only
/// once the walker has decided, so where the segments were cut cannot
/// change whether it counts (an HTTP request line never does).
pub fn feed_holding(
    m: &Matcher,
    st: &mut MsnpDir,
    context: &[u8],
    data: &[u8],
    apps: AppSet,
    http_pending: bool,
) -> Option<Hit> {
    if !m.has_lines(apps) || st.kind == StreamKind::Foreign {
        if st.mode == Mode::Held {
            st.mode = Mode::Rest;
            st.len = 0;
        }
        return None;
    }
    let mut hit = None;
    let mut i = 0;
    if st.mode == Mode::Held {
        if http_pending {
            return None;
        }
        // Decided, and not HTTP: the held line is judged as it would have
        // been when it filled the buffer.
        st.mode = Mode::Rest;
        hit = judge_line(m, st, false, apps).map(|sig| Hit { sig, end: 0 });
        st.len = 0;
    }
    // Where in `data` the stream is known to be MSNP (anywhere literals count from there).
    let mut msnp_from = (st.kind == StreamKind::Msnp).then_some(0);
    while i < data.len() && hit.is_none() && st.kind != StreamKind::Foreign {
        match st.mode {
            Mode::Payload(left) => {
                let avail = u32::try_from(data.len() - i).unwrap_or(u32::MAX);
                let take = left.min(avail);
                i += take as usize;
                st.mode = if take == left {
                    Mode::Line
                } else {
                    Mode::Payload(left - take)
                };
            }
            Mode::Held => i = data.len(),
            Mode::Rest => match memchr::memchr(b'\n', &data[i..]) {
                Some(k) => {
                    i += k + 1;
                    st.mode = Mode::Line;
                    st.len = 0;
                }
                None => i = data.len(),
            },
            Mode::Line => {
                let have = usize::from(st.len);
                let room = LINE_MAX - have;
                let rest = &data[i..];
                let (take, ended) = match memchr::memchr(b'\n', &rest[..rest.len().min(room)]) {
                    Some(k) => (k + 1, true),
                    None => (rest.len().min(room), false),
                };
                st.buf[have..have + take].copy_from_slice(&rest[..take]);
                st.len = u8::try_from(have + take).unwrap_or(u8::MAX);
                i += take;
                let full = usize::from(st.len) == LINE_MAX;
                if full && !ended && !st.first_done && http_pending {
                    st.mode = Mode::Held;
                    return None;
                }
                if ended || full {
                    hit = judge_line(m, st, ended, apps).map(|sig| Hit { sig, end: i });
                    if msnp_from.is_none() && st.kind == StreamKind::Msnp {
                        msnp_from = Some(i);
                    }
                    if st.mode == Mode::Line && !ended {
                        st.mode = Mode::Rest;
                    }
                    if ended || st.mode != Mode::Rest {
                        st.len = 0;
                    }
                }
            }
        }
    }
    if let Some(from) = msnp_from.filter(|_| st.kind == StreamKind::Msnp) {
        let context = if from == 0 { context } else { &data[..from] };
        let anywhere = scoped_with_context(m, context, &data[from..], apps).map(|h| Hit {
            sig: h.sig,
            end: h.end + from,
        });
        hit = Hit::first(hit, anywhere);
    }
    hit
}

/// `anywhere` MSNP literals in `data`, including one that begins in `context`.
fn scoped_with_context(m: &Matcher, context: &[u8], data: &[u8], apps: AppSet) -> Option<Hit> {
    let carry = m.carry();
    if !context.is_empty() && carry > 0 {
        let c = &context[context.len().saturating_sub(carry)..];
        let d = &data[..data.len().min(carry)];
        let mut junction = [0u8; 2 * crate::engine::matcher::MAX_CARRY];
        if let Some(j) = junction.get_mut(..c.len() + d.len()) {
            j[..c.len()].copy_from_slice(c);
            j[c.len()..].copy_from_slice(d);
            if let Some(h) = m.find_msnp_anywhere(j, apps) {
                return Some(Hit {
                    sig: h.sig,
                    end: h.end.saturating_sub(c.len()),
                });
            }
        }
    }
    m.find_msnp_anywhere(data, apps)
}

/// Judges the line in `st.buf` (`complete`: it ended with `\n`).
fn judge_line(
    m: &Matcher,
    st: &mut MsnpDir,
    complete: bool,
    apps: AppSet,
) -> Option<crate::engine::matcher::SigRef> {
    let line = &st.buf[..usize::from(st.len)];
    if !st.first_done {
        st.first_done = true;
        match first_line(line) {
            Some(TextProtocol::Connect) => {
                st.kind = st.kind.max(StreamKind::Tunnel);
                return None;
            }
            // A CONNECT tunnel's reply is the proxy's, not the stream's protocol.
            Some(TextProtocol::Http) if st.kind == StreamKind::Tunnel => return None,
            Some(_) => {
                st.kind = StreamKind::Foreign;
                return None;
            }
            None => {
                if let Some(cmd) = command(line, complete) {
                    st.run = 1;
                    st.kind = st.kind.max(StreamKind::Msnp);
                    if let Some(n) = cmd.payload.filter(|&n| n > 0) {
                        st.mode = Mode::Payload(n);
                    }
                    return m.msnp_line_sig(line, apps);
                }
                return irc(m, line, complete, apps);
            }
        }
    }
    match command(line, complete) {
        Some(cmd) => {
            st.run = st.run.saturating_add(1);
            if st.run >= 2 {
                st.kind = st.kind.max(StreamKind::Msnp);
            }
            if let Some(n) = cmd.payload.filter(|&n| n > 0) {
                st.mode = Mode::Payload(n);
            }
            if st.kind == StreamKind::Msnp {
                return m.msnp_line_sig(line, apps);
            }
            None
        }
        None => {
            st.run = 0;
            irc(m, line, complete, apps)
        }
    }
}

/// An IRC signature's hit, if the line has its command's shape.
fn irc(m: &Matcher, line: &[u8], complete: bool, apps: AppSet) -> Option<crate::engine::matcher::SigRef> {
    m.irc_line_sig(line, apps)
        .filter(|_| crate::engine::protocols::irc_line(line, complete))
}

/// A line that parsed as an MSNP command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Bytes of payload that follow the line (`MSG`, `UUX`...).
    pub payload: Option<u32>,
}

/// Parses one line (with or without its line end) as an MSNP command.
/// `complete` is false when only the line's first bytes are given: then the
/// last, possibly cut, token is dropped and the visible arguments must
/// include all the verb requires.
pub fn command(line: &[u8], complete: bool) -> Option<Command> {
    let mut line = line;
    if complete {
        line = line.strip_suffix(b"\n")?;
        line = line.strip_suffix(b"\r").unwrap_or(line);
    }
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    let mut toks: [&[u8]; 16] = [&[]; 16];
    let mut count = 0;
    for t in line.split(|&b| b == b' ') {
        // MSNP separates arguments with exactly one space.
        if t.is_empty() || count == toks.len() {
            return None;
        }
        toks[count] = t;
        count += 1;
    }
    if !complete {
        count = count.saturating_sub(1);
    }
    let (&verb, args) = toks[..count].split_first()?;
    let n = args.len();
    // A cut line shows a prefix of its arguments: the ones the verb needs
    // must all be visible (and are checked), more may follow.
    let arity = |lo: usize, hi: usize| n >= lo && n <= hi;
    let arg = |i: usize| args.get(i).copied();
    let opt = |i: usize, f: fn(&[u8]) -> bool| arg(i).is_none_or(f);
    let ok = |c: bool| c.then_some(Command { payload: None });
    match verb {
        b"VER" => ok(arity(2, 10)
            && opt(0, trid)
            && args
                .iter()
                .skip(1)
                .all(|a| versioned(a, b"MSNP") || versioned(a, b"CVR"))
            && (!complete || args.iter().skip(1).any(|a| versioned(a, b"MSNP")))),
        b"CVR" => ok(arity(4, 14)
            && opt(0, trid)
            && (opt(1, hex_locale) || (opt(1, version) && opt(2, version) && opt(3, version)))),
        b"USR" => {
            let auth = |a: &[u8]| matches!(a, b"TWN" | b"MD5" | b"SSO");
            let ok_form = arg(1) == Some(b"OK") && opt(2, email);
            let auth_form = arg(1).is_some_and(auth) && opt(2, |a| a == b"I" || a == b"S");
            let sb_form = arg(1).is_some_and(email) && opt(2, ticket);
            ok(arity(3, 8) && opt(0, trid) && (ok_form || auth_form || sb_form))
        }
        b"XFR" => ok(opt(0, trid)
            && opt(1, |a| a == b"NS" || a == b"SB")
            && ((complete && n == 2) || (arity(3, 8) && opt(2, host_port)))),
        b"MSG" => {
            let trid_form = arg(0).is_some_and(trid) && opt(1, |a| matches!(a, b"N" | b"U" | b"A" | b"D"));
            let server_form = arg(0).is_some_and(|a| email(a) || a == b"Hotmail") && opt(1, name);
            if !(arity(3, 3) && (trid_form || server_form || n == 0) && opt(2, digits)) {
                return None;
            }
            Some(Command {
                payload: arg(2).and_then(length),
            })
        }
        b"CHG" => ok(arity(2, 4) && opt(0, trid) && opt(1, status)),
        b"CAL" => ok(arity(2, 3)
            && opt(0, trid)
            && (opt(1, email) || (arg(1) == Some(b"RINGING") && opt(2, digits)))),
        b"JOI" => ok(arity(2, 4) && opt(0, email) && opt(1, name)),
        b"ANS" => ok(opt(0, trid)
            && ((complete && n == 2 && arg(1) == Some(b"OK"))
                || (arity(4, 4) && opt(1, email) && opt(2, ticket) && opt(3, digits)))),
        b"IRO" => ok(arity(5, 7)
            && opt(0, trid)
            && opt(1, digits)
            && opt(2, digits)
            && opt(3, email)
            && opt(4, name)),
        b"ILN" => ok(arity(4, 8) && opt(0, trid) && opt(1, status) && opt(2, email)),
        b"NLN" => ok(arity(3, 8) && opt(0, status) && opt(1, email)),
        b"FLN" => ok(arity(1, 3) && opt(0, email)),
        b"RNG" => ok(arity(6, 11) && opt(0, digits) && opt(1, host_port) && opt(2, |a| a == b"CKI")),
        b"PNG" => ok(complete && n == 0),
        b"QNG" => ok(arity(0, 1) && opt(0, digits)),
        b"OUT" => ok(arity(0, 1) && opt(0, |a| a.len() == 3 && a.iter().all(u8::is_ascii_uppercase))),
        b"BYE" => ok(arity(0, 2) && opt(0, email)),
        // Commands with a payload whose length is the last argument.
        b"UUX" | b"UBX" | b"GCF" | b"ADL" | b"RML" | b"UUN" | b"UBN" | b"NOT" | b"QRY" => {
            let payload = if complete {
                args.last().copied().and_then(length)
            } else {
                None
            };
            if complete && payload.is_none() {
                return None;
            }
            let head_ok = match verb {
                b"UBX" => opt(0, email),
                b"NOT" => true,
                _ => opt(0, trid),
            };
            head_ok.then_some(Command { payload })
        }
        // Other commands of the notification server: a transaction id first.
        b"SYN" | b"GTC" | b"BLP" | b"ADC" | b"ADD" | b"REM" | b"ADG" | b"RMG" | b"PRP" | b"CHL" | b"SBP"
        | b"REA" | b"URL" | b"LSG" | b"BPR" => ok(arity(1, 10) && opt(0, trid)),
        b"LST" => ok(arity(1, 10) && (opt(0, trid) || arg(0).is_some_and(|a| a.starts_with(b"N=")))),
        _ => None,
    }
}

fn digits(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= 10 && t.iter().all(u8::is_ascii_digit)
}

/// A transaction id: a decimal number that fits 32 bits.
fn trid(t: &[u8]) -> bool {
    digits(t) && std::str::from_utf8(t).is_ok_and(|s| s.parse::<u32>().is_ok())
}

fn length(t: &[u8]) -> Option<u32> {
    if !digits(t) {
        return None;
    }
    std::str::from_utf8(t)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_PAYLOAD)
}

fn status(t: &[u8]) -> bool {
    matches!(
        t,
        b"NLN" | b"BSY" | b"IDL" | b"BRB" | b"AWY" | b"PHN" | b"LUN" | b"HDN" | b"FLN"
    )
}

/// `MSNP8`, `CVR0`: a fixed prefix and a small number.
fn versioned(t: &[u8], prefix: &[u8]) -> bool {
    t.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.iter().all(u8::is_ascii_digit))
}

/// `0x0409`: the client's locale id.
fn hex_locale(t: &[u8]) -> bool {
    t.strip_prefix(b"0x")
        .is_some_and(|h| !h.is_empty() && h.len() <= 8 && h.iter().all(u8::is_ascii_hexdigit))
}

/// `6.0.0602`: dotted version numbers.
fn version(t: &[u8]) -> bool {
    t.contains(&b'.')
        && t.first().is_some_and(u8::is_ascii_digit)
        && t.iter().all(|b| b.is_ascii_digit() || *b == b'.')
}

/// An e-mail address (MSNP18 prefixes a network id, `1:user@host`, and
/// switchboards add the endpoint, `user@host;{guid}`).
fn email(t: &[u8]) -> bool {
    let t = match t.iter().position(|&b| b == b';') {
        Some(k) if t[k + 1..].starts_with(b"{") && t.ends_with(b"}") => &t[..k],
        Some(_) => return false,
        None => t,
    };
    let t = match t.iter().position(|&b| b == b':') {
        Some(k) if k > 0 && t[..k].iter().all(u8::is_ascii_digit) => &t[k + 1..],
        _ => t,
    };
    let Some(at) = t.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&t[..at], &t[at + 1..]);
    let local_ok = !local.is_empty()
        && local
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-=".contains(b));
    let domain_ok = domain.len() >= 3
        && domain.contains(&b'.')
        && !domain.starts_with(b".")
        && !domain.ends_with(b".")
        && domain
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-');
    local_ok && domain_ok
}

/// A URL-encoded display name: printable, no spaces (those are `%20`).
fn name(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|&b| b > 0x20 && b != 0x7f)
}

/// An authentication ticket or session key: digits, dots, letters.
fn ticket(t: &[u8]) -> bool {
    !t.is_empty()
        && t.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-=!*$|+/".contains(b))
}

/// `207.46.108.37:1863` or a host name with a port.
fn host_port(t: &[u8]) -> bool {
    let Some(c) = t.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = (&t[..c], &t[c + 1..]);
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
        && digits(port)
        && port.len() <= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_accepts_real_commands() {
        let good: &[&[u8]] = &[
            b"VER 1 MSNP8 CVR0\r\n",
            b"VER 1 MSNP18 MSNP17 CVR0\r\n",
            b"VER 0 MSNP15\r\n",
            b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 8.1.0178 msmsgs alice@hotmail.com\r\n",
            b"CVR 2 6.0.0602 6.0.0602 6.0.0268 http://download.microsoft.com/x http://messenger.msn.com\r\n",
            b"USR 3 TWN I alice@hotmail.com\r\n",
            b"USR 4 TWN S t=abc&p=def\r\n",
            b"USR 5 SSO I alice@live.com\r\n",
            b"USR 6 MD5 I alice@hotmail.com\r\n",
            b"USR 178 jujurius@msn.com 246503.1115372323.20879\r\n",
            b"USR 178 OK jujurius@msn.com July(6)\r\n",
            b"XFR 10 SB\r\n",
            b"XFR 10 SB 207.46.108.37:1863 CKI 17262740.1050826919.32308\r\n",
            b"XFR 3 NS 207.46.106.145:1863 0 207.46.104.20:1863\r\n",
            b"MSG 77 U 89\r\n",
            b"MSG 5 A 140\r\n",
            b"MSG Hotmail Hotmail 465\r\n",
            b"MSG cecile260992@hotmail.com choupi 140\r\n",
            b"CHG 12 NLN 0\r\n",
            b"CHG 12 AWY 268435492 %3Cmsnobj%2F%3E\r\n",
            b"CAL 179 cecile260992@hotmail.com\r\n",
            b"CAL 179 RINGING 246503\r\n",
            b"JOI tesla_thomas@hotmail.com Thomas 1616756780\r\n",
            b"ANS 89 jujurius@msn.com 1115371039.15845 17069658\r\n",
            b"ANS 89 OK\r\n",
            b"IRO 89 1 1 cecile260992@hotmail.com choupi\r\n",
            b"ILN 9 NLN bob@hotmail.com Bob 268435456\r\n",
            b"NLN NLN 1:bob@live.com Bob 2789003324:48 0\r\n",
            b"FLN bob@hotmail.com\r\n",
            b"PNG\r\n",
            b"QNG 45\r\n",
            b"QNG\r\n",
            b"OUT\r\n",
            b"OUT OTH\r\n",
            b"BYE bob@hotmail.com\r\n",
            b"RNG 11752013 207.46.108.38:1863 CKI 849102291.520491113 alice@hotmail.com Alice\r\n",
            b"UUX 14 53\r\n",
            b"SYN 5 0 0\r\n",
            b"USR 1 alice@live.com;{f52973b6-c926-4bad-9ba8-7c1e840e4ab0} 1234.5678\r\n",
            b"CVR 2 0x0409 winnt 6.1.0 i386 MSNMSGR 14.0.8117.0416 msmsgs alice@hotmail.com VmVyc2lvbjogMQ0K\r\n",
            b"RNG 11752013 207.46.108.38:1863 CKI 849102291.520491113 alice@hotmail.com Alice U messenger.msn.com 1\r\n",
            b"XFR 10 SB 207.46.108.37:1863 CKI 17262740.1050826919.32308 1 messenger.msn.com 0\r\n",
            b"USR 3 SSO S MBI_KEY_OLD 8CLhG/xfgYZ7TyPJ4zIZ1k==\r\n",
            b"USR 5 OK alice@live.com 1 0\r\n",
            b"CHL 0 15570131571988941333\r\n",
            b"QRY 18 PROD0119GSJUC$18 32\r\n",
            b"ILN 9 NLN 1:bob@live.com Bob 2789003324:48 %3Cmsnobj%2F%3E\r\n",
            b"IRO 1 1 2 bob@live.com;{f52973b6-c926-4bad-9ba8-7c1e840e4ab0} Bob 2789003324:48\r\n",
            b"JOI bob@live.com;{f52973b6-c926-4bad-9ba8-7c1e840e4ab0} Bob 2789003324:48\r\n",
        ];
        for l in good {
            assert!(command(l, true).is_some(), "{}", String::from_utf8_lossy(l));
        }
        assert_eq!(command(b"MSG 77 U 89\r\n", true).unwrap().payload, Some(89));
        assert_eq!(command(b"UUX 14 53\r\n", true).unwrap().payload, Some(53));
        // A cut line: the visible arguments are checked.
        assert!(command(b"USR 7 TWN S t=very-long-ticket-cut-he", false).is_some());
        assert!(command(b"CHG 7 approved and then some more te", false).is_none());
        // A long argument cut away is not taken for a valid one.
        assert!(
            command(
                b"CAL 2026 budget-review-with-the-whole-finance-department-n",
                false
            )
            .is_none()
        );
        assert!(
            command(
                b"ANS 42 a-very-long-word-that-does-not-fit-in-the-line-buffer",
                false
            )
            .is_none()
        );
    }

    #[test]
    fn grammar_refuses_look_alikes() {
        let bad: &[&[u8]] = &[
            b"CHG 0031337 approved\r\n",
            b"CAL 2026 budget\r\n",
            b"CAL 2026 budget review\r\n",
            b"VER 2 of the draft\r\n",
            b"VER 1 MSNP8 draft\r\n",
            b"USR 3 TWN X alice@hotmail.com\r\n",
            b"USR 3 logs in\r\n",
            b"XFR 4 to accounting\r\n",
            b"MSG 4 X 10\r\n",
            b"MSG from the board\r\n",
            b"JOI us for lunch\r\n",
            b"ANS 42 is the answer\r\n",
            b"NLN NLN\r\n",
            b"ILN 1 ONLINE bob@x.com Bob\r\n",
            b"PNG image attached\r\n",
            b"QNG later\r\n",
            b"OUT of office until Monday\r\n",
            b"BYE for now\r\n",
            b"CHG  12 NLN 0\r\n",
            b"CHG 99999999999 NLN 0\r\n",
            b"VER\r\n",
            b"HELLO\r\n",
            b"\r\n",
        ];
        for l in bad {
            assert!(command(l, true).is_none(), "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn emails() {
        assert!(email(b"a@b.co"));
        assert!(email(b"1:bob@live.com"));
        assert!(email(b"bob@live.com;{f52973b6-c926-4bad-9ba8-7c1e840e4ab0}"));
        assert!(!email(b"bob@live.com;x"));
        assert!(!email(b"bob"));
        assert!(!email(b"@x.com"));
        assert!(!email(b"a@com"));
        assert!(!email(b"a@.com"));
    }
}
