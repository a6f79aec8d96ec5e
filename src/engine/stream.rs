//! TCP stream inspection: sequence numbers, reordering, carry-over.
//!
//! Guarantees, per direction of a connection:
//! - bytes are inspected once, in sequence order, whatever the segmentation:
//!   a literal split across segments is found through the carried-over tail
//!   (`longest literal - 1` bytes), HTTP scopes through the parser's state;
//! - a retransmission is not inspected twice as stream, but its bytes are
//!   compared with the carried-over tail (a difference is counted, and blocks
//!   only with `block_conflicts`) and the whole segment is also scanned after
//!   the stream bytes before it, so a copy that differs cannot smuggle a
//!   signature past the stream; a few zero bytes wait for the next segment,
//!   which may replace them;
//! - a segment ahead of a gap is scanned on its own at once and held (bounded,
//!   [`crate::engine::EngineConfig::reorder_bytes`]) until the gap fills, then
//!   inspected in order, so neither the gap nor the reordering hides a
//!   signature; beyond the bound the stream skips ahead (counted as a resync);
//! - a connection picked up mid-stream (no SYN) starts at the first segment seen;
//! - a tunnel opened inside the connection (HTTP CONNECT or Upgrade, SOCKS,
//!   STARTTLS) restarts inspection at the exact byte where the tunnelled
//!   stream begins, so stream-start, line-start, TLS and HTTP inspection see
//!   it as a new stream; the destination a CONNECT or SOCKS client asks for
//!   is judged like a destination (host rules, `Host` signatures, app ports).

use crate::engine::compiled::Compiled;
use crate::engine::config::EngineConfig;
use crate::engine::hello::{HelloAssembler, Status};
use crate::engine::http::{Fed, HttpHit, host_sigs_on};
use crate::engine::matcher::{Hit, Matcher};
use crate::engine::message_rules::HeadFields;
use crate::engine::message_rules::{Message, RuleRef};
use crate::engine::msnp;
use crate::engine::state::{DirState, MAX_CARRY, Reorder};
use crate::engine::tunnel::{self, Socks, StartTls};
use crate::engine::verdict::MatchedRequest;
use crate::packet::TcpInfo;
use crate::policy::{AppSet, PortSpec};

/// What stream inspection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A signature.
    Sig(Hit),
    /// A message rule.
    Rule(RuleRef),
    /// Retransmitted bytes that differ from the inspected ones.
    Conflict,
    /// A tunnel's destination port belongs to an app (CONNECT or SOCKS to
    /// 1863 is MSN).
    Port(u8, PortSpec),
    /// An HTTP head longer than [`crate::engine::http::MAX_HEAD`].
    OversizedHead,
}

/// The two directions of a connection, from the point of view of one.
pub struct Pair<'a> {
    /// The direction of the segment being inspected.
    pub dir: &'a mut DirState,
    /// The other direction.
    pub other: &'a mut DirState,
}

/// What a connection's segments are judged with.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Compiled signatures and rules.
    pub c: &'a Compiled,
    /// Tunables.
    pub cfg: &'a EngineConfig,
    /// Apps that apply.
    pub apps: AppSet,
    /// Server port of the connection.
    pub port: u16,
}

/// The earlier of two (finding, end offset) pairs.
fn earlier(a: Option<(Found, usize)>, b: Option<(Found, usize)>) -> Option<(Found, usize)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.1 < x.1 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn sig(h: Option<Hit>) -> Option<(Found, usize)> {
    h.map(|h| (Found::Sig(h), h.end))
}

/// Stream literals in `data`, including those that begin in `context`.
#[inline]
pub fn scan_with_context(m: &Matcher, context: &[u8], data: &[u8], apps: AppSet) -> Option<Hit> {
    let carry = m.carry();
    if !context.is_empty() && carry > 0 {
        let mut junction = [0u8; 2 * MAX_CARRY];
        let c = &context[context.len().saturating_sub(carry)..];
        let d = &data[..data.len().min(carry)];
        junction[..c.len()].copy_from_slice(c);
        junction[c.len()..c.len() + d.len()].copy_from_slice(d);
        if let Some(h) = m.find_stream(&junction[..c.len() + d.len()], apps) {
            // A match that straddles the boundary ends early in `data`.
            return Some(Hit {
                sig: h.sig,
                end: h.end.saturating_sub(c.len()),
            });
        }
    }
    m.find_stream(data, apps)
}

/// One TCP segment of one direction of a connection.
pub fn inspect_segment(x: Ctx<'_>, p: Pair<'_>, tcp: TcpInfo, payload: &[u8]) -> Option<Found> {
    let (c, cfg, apps) = (x.c, x.cfg, x.apps);
    let Pair { dir, other } = p;
    let data_seq = tcp.seq.wrapping_add(u32::from(tcp.syn));
    if tcp.syn {
        dir.next_seq = Some(data_seq);
    }
    if payload.is_empty() {
        return None;
    }
    // A few zero bytes wait for the next segment: real data at the same
    // sequence number replaces them, anything else proves them real.
    if let Some((zseq, zlen)) = dir.zeros.take()
        && data_seq != zseq
        && let Some(f) = consume(
            x,
            Pair { dir, other },
            &[0u8; MAX_ZEROS][..usize::from(zlen)],
            true,
        )
    {
        return Some(f);
    }
    let next = *dir.next_seq.get_or_insert(data_seq);
    let diff = seq_diff(data_seq, next);
    if diff > 0 {
        return ahead(x, Pair { dir, other }, data_seq, payload);
    }
    if diff == 0 && zeros_only(payload) {
        dir.zeros = u8::try_from(payload.len()).ok().map(|n| (data_seq, n));
        return None;
    }
    let mut at_segment_start = true;
    let fresh = if diff < 0 {
        let overlap = (diff.unsigned_abs() as usize).min(payload.len());
        // A TCP keep-alive probe repeats the last byte's sequence number with
        // one garbage byte (Windows, BSD): not a conflicting copy.
        // Nor is a late zero placeholder (see `zeros`) over data already seen.
        let keepalive = (payload.len() == 1 && diff == -1) || zeros_only(payload);
        if !keepalive && conflicts(dir, next, data_seq, &payload[..overlap]) {
            dir.conflicts = dir.conflicts.saturating_add(1);
            if cfg.block_conflicts {
                return Some(Found::Conflict);
            }
        }
        // Both versions are inspected: the stream saw the first; this copy
        // is scanned whole, after the stream bytes that precede it, so a
        // decoy sent first cannot hide what the receiver may keep.
        let before = before_seq(dir, next, data_seq);
        if let Some(h) = c
            .sigs
            .find_segment_start(payload, apps)
            .or_else(|| scan_with_context(&c.sigs, before, payload, apps))
            .or_else(|| {
                let first = u64::from(next.wrapping_sub(data_seq)) == dir.bytes;
                let mut lines = dir.msnp.retransmission(before.last() == Some(&b'\n'), first);
                msnp::feed(&c.sigs, &mut lines, before, payload, apps)
            })
        {
            return Some(Found::Sig(h));
        }
        at_segment_start = false;
        &payload[overlap..]
    } else {
        payload
    };
    if fresh.is_empty() {
        return None;
    }
    let hit = consume(x, Pair { dir, other }, fresh, at_segment_start);
    if hit.is_some() {
        return hit;
    }
    drain(x, Pair { dir, other })
}

/// Inspects in-order bytes that start at `next_seq`, cutting them where a
/// tunnel starts a new stream.
fn consume(x: Ctx<'_>, p: Pair<'_>, fresh: &[u8], segment_start: bool) -> Option<Found> {
    let Pair { dir, other } = p;
    let next = dir.next_seq.unwrap_or(0);
    dir.next_seq = Some(next.wrapping_add(seq_len(fresh.len())));
    // Depth counts bytes and segments inspected in order, not arrivals.
    dir.payload_packets += 1;
    consume_units(x, Pair { dir, other }, fresh, segment_start)
}

/// Inspects bytes unit by unit: a unit ends where a new stream starts.
fn consume_units(x: Ctx<'_>, p: Pair<'_>, fresh: &[u8], segment_start: bool) -> Option<Found> {
    let Pair { dir, other } = p;
    let mut data = fresh;
    let mut seg_start = segment_start;
    let mut replay = Vec::new();
    loop {
        let (found, cut) = consume_unit(x, Pair { dir, other }, data, seg_start, &mut replay);
        if found.is_some() {
            return found;
        }
        match cut {
            Some(k) if k < data.len() => {
                data = &data[k..];
                // A new stream at the segment's first byte still starts a segment.
                seg_start = seg_start && k == 0;
                if !replay.is_empty() {
                    // The new stream began in earlier data: its first bytes
                    // are inspected again, as its own (they were counted).
                    let mut joined = replay;
                    dir.bytes = dir.bytes.saturating_sub(joined.len() as u64);
                    joined.extend_from_slice(data);
                    return consume_units(x, Pair { dir, other }, &joined, false);
                }
            }
            _ => return None,
        }
    }
}

/// The host and URL of a resolved request head (a reply head has none).
fn http_request(f: Option<&HeadFields>) -> Option<Box<MatchedRequest>> {
    let f = f.filter(|f| !f.url.is_empty())?;
    Some(Box::new(MatchedRequest::new(Some(f.url_host()), Some(&f.url))))
}

/// How a unit of bytes ends early: the stream restarts at this offset.
type Cut = Option<usize>;

/// Inspects bytes of the current stream; stops where a new stream begins
/// (a tunnel, or a direction that stopped speaking HTTP). The new stream's
/// bytes that came in earlier data are written to `replay`.
fn consume_unit(
    x: Ctx<'_>,
    p: Pair<'_>,
    data: &[u8],
    segment_start: bool,
    replay: &mut Vec<u8>,
) -> (Option<Found>, Cut) {
    let (c, apps, port) = (x.c, x.apps, x.port);
    let Pair { dir, other } = p;
    // Bodies past the per-message depth need no stream scan.
    let skip_scan = dir.http.skips_body(data.len(), x.cfg.depth_bytes);
    let mut found: Option<(Found, usize)> = None;
    let mut cut: Cut = None;
    let mut opened = false;
    let mut boundary = false;
    let mut left = false;
    if c.wants_http() && !dir.http.is_off() {
        let before = dir.http.messages();
        let was_http = dir.http.spoke_http();
        let fed = dir.http.feed(c, data, apps, port);
        // The walker, not a guess from the first line, says a direction
        // speaks HTTP: MSNP-looking lines in its heads and bodies never count.
        if !was_http && dir.http.spoke_http() {
            dir.msnp.http_seen();
        }
        match fed {
            Some((Fed::Hit(h), end)) => {
                found = Some(match h {
                    HttpHit::Sig(s, _) => (Found::Sig(Hit { sig: s, end }), end),
                    HttpHit::Rule(r) => {
                        // A request rule: this head's host and URL. A reply
                        // rule judged headers only; the request it answers
                        // is gone (or a later one is in), so it names none.
                        dir.matched = http_request(dir.http.fields());
                        (Found::Rule(r), end)
                    }
                    HttpHit::Oversized => (Found::OversizedHead, end),
                });
            }
            Some((Fed::Connect, end)) => {
                let dest_port = dir.http.fields().and_then(|f| f.url_port);
                if let Some(f) = dest_port.and_then(|p| app_port(x, p)) {
                    found = Some((f, end));
                } else {
                    other.http.expect_tunnel(before);
                    cut = Some(end);
                }
            }
            Some((Fed::Opened, end)) => {
                opened = true;
                cut = Some(end);
            }
            Some((Fed::Boundary, end)) => {
                boundary = true;
                cut = Some(end);
            }
            Some((Fed::Left, at)) => {
                left = true;
                cut = Some(at);
            }
            None => {}
        }
        // A server that closes after its reply serves no later request.
        if dir.http.is_closing() && !other.http.is_closing() {
            other.http.set_closing();
        }
        // A HEAD request's reply has no body, whatever its framing says.
        let heads = dir.http.take_head_requests();
        if heads != 0 {
            other.http.expect_head_replies(heads);
        }
    }
    if found.is_none() && cut.is_none() {
        let scan_len = data.len();
        match probe_tunnels(x, Pair { dir, other }, &data[..scan_len]) {
            (Some(f), _) => found = Some((f, data.len())),
            (None, Some((k, open))) => {
                cut = Some(k);
                opened = open;
            }
            (None, None) => {}
        }
    }
    let unit = &data[..cut.unwrap_or(data.len()).min(data.len())];
    if !skip_scan {
        // Every scope is checked; the hit that ends first in the stream is the reason.
        let mut hit = if segment_start {
            c.sigs.find_segment_start(unit, apps)
        } else {
            None
        };
        hit = Hit::first(hit, c.sigs.feed_stream_start(&mut dir.start, unit, apps));
        hit = Hit::first(
            hit,
            scan_with_context(&c.sigs, &dir.tail[..dir.tail_len as usize], unit, apps),
        );
        let context = &dir.tail[..dir.tail_len as usize];
        // Lines of an HTTP message are HTTP's, whatever the other
        // direction turned out to be (it may have left HTTP).
        // A unit cut where the direction left HTTP is all HTTP's bytes.
        let in_http = c.wants_http() && (left || (dir.http.spoke_http() && !dir.http.is_off()));
        if !in_http {
            let pending = c.wants_http() && dir.http.first_line_pending();
            hit = Hit::first(
                hit,
                msnp::feed_holding(&c.sigs, &mut dir.msnp, context, unit, apps, pending),
            );
        }
        found = earlier(sig(hit), found);
    }
    if c.wants_hello() && !dir.hello_done {
        found = earlier(
            found,
            hello(c, dir, unit, apps, port).map(|r| (Found::Rule(r), unit.len())),
        );
    }
    dir.bytes += unit.len() as u64;
    dir.unit_bytes += unit.len() as u64;
    if skip_scan {
        // Bytes were skipped: what follows is not a line start.
        dir.tail_len = 0;
        dir.tail_virtual = 0;
    } else {
        update_tail(c.sigs.carry(), dir, unit);
    }
    if found.is_some() {
        return (found.map(|(f, _)| f), None);
    }
    if boundary {
        // The next message starts a line: a virtual newline in the tail
        // (not a stream byte: retransmission checks skip it).
        update_tail(c.sigs.carry().max(1), dir, b"\n");
        dir.tail_virtual = 1;
        return (None, cut);
    }
    if left {
        // The direction stopped speaking HTTP: a new stream on this side
        // only. The other side's text protocol (HTTP) no longer says what
        // this one is.
        dir.http.take_replay(replay);
        // The request count goes on: the other side numbers its replies
        // (CONNECT, HEAD) by it if this side speaks HTTP again.
        dir.restart_stream(true);
        other.msnp.forget_kind();
        // Depth counts from the new stream for both sides: a long reply
        // before it must not settle the connection clean under it.
        other.unit_bytes = 0;
        return (None, cut);
    }
    if let Some(k) = cut {
        dir.restart_stream(!opened);
        if opened {
            if other.tunnel_requested {
                other.tunnel_requested = false;
                other.http.forget_count();
            } else {
                other.restart_stream(false);
            }
            other.socks = None;
            dir.socks = None;
        } else {
            dir.tunnel_requested = true;
            // What the proxy said before (HTTP replies) is not what the
            // tunnel is.
            other.msnp.forget_kind();
        }
        return (None, Some(k));
    }
    (None, None)
}

/// The app whose port list holds `port` (a tunnel's destination).
fn app_port(x: Ctx<'_>, port: u16) -> Option<Found> {
    if !x.cfg.port_rules {
        return None;
    }
    x.c.app_port(x.apps, port).map(|(a, p)| Found::Port(a, p))
}

/// Judges a destination named inside the stream like a destination.
fn judge_dest(x: Ctx<'_>, d: &tunnel::Dest) -> Option<Found> {
    if let Some(f) = app_port(x, d.port) {
        return Some(f);
    }
    let mut auth = d.host.clone();
    if d.port != 80 {
        auth.push(b':');
        auth.extend_from_slice(d.port.to_string().as_bytes());
    }
    if let Some(s) = host_sigs_on(x.c, &auth, x.apps) {
        return Some(Found::Sig(Hit { sig: s, end: 0 }));
    }
    let msg = Message {
        host: Some(&d.host),
        port: d.port,
        ..Message::default()
    };
    x.c.rules.eval(&msg, x.apps).map(Found::Rule)
}

/// SOCKS and STARTTLS: a finding, or where (and whether both directions)
/// a new stream starts.
fn probe_tunnels(x: Ctx<'_>, p: Pair<'_>, data: &[u8]) -> (Option<Found>, Option<(usize, bool)>) {
    let Pair { dir, other } = p;
    // SOCKS: the client speaks first, at its stream's start.
    if !dir.socks_done && dir.socks.is_none() && other.socks.is_none() {
        dir.socks_done = true;
        if dir.unit_bytes == 0 && other.unit_bytes == 0 {
            dir.socks = data.first().and_then(|&b| Socks::start(b)).map(Box::new);
        }
    }
    if let Some(s) = dir.socks.as_mut() {
        match s.client(data) {
            None => dir.socks = None,
            Some(None) => {}
            Some(Some(tunnel::Event::Request(d, end))) => {
                if let Some(f) = judge_dest(x, &d) {
                    if matches!(f, Found::Rule(_)) {
                        dir.matched = Some(Box::new(MatchedRequest::new(Some(&d.host), None)));
                    }
                    return (Some(f), None);
                }
                return (None, Some((end, false)));
            }
            Some(Some(tunnel::Event::Opened(_))) => {}
        }
        return (None, None);
    }
    if let Some(s) = other.socks.as_mut() {
        match s.server(data) {
            None => other.socks = None,
            Some(Some(tunnel::Event::Opened(end))) => return (None, Some((end, true))),
            Some(_) => {}
        }
        return (None, None);
    }
    // STARTTLS: only in the first bytes of a stream that is not HTTP.
    if dir.unit_bytes < 16 * 1024 && !dir.http.is_live() {
        if dir.starttls != StartTls::None {
            // Asked to STARTTLS: is this the answer?
            match dir.answers.server(data, dir.starttls) {
                Some(Some(end)) => {
                    dir.starttls = StartTls::None;
                    return (None, Some((end, true)));
                }
                Some(None) => dir.starttls = StartTls::None,
                None => {}
            }
        }
        // Either side may look like a client (XMPP servers advertise
        // `<starttls/>`): the side that gets the positive answer opens.
        let kind = dir.lines.client(data);
        if kind != StartTls::None {
            other.starttls = kind;
        }
    }
    (None, None)
}

/// Collects a TLS ClientHello at the stream start and judges its server name.
fn hello(c: &Compiled, dir: &mut DirState, fresh: &[u8], apps: AppSet, port: u16) -> Option<RuleRef> {
    if fresh.is_empty() {
        return None;
    }
    if dir.hello.is_none() {
        if dir.unit_bytes != 0 || fresh.first() != Some(&0x16) {
            dir.hello_done = true;
            return None;
        }
        dir.hello = Some(Box::default());
    }
    let asm: &mut HelloAssembler = dir.hello.as_mut()?;
    let result = match asm.push(fresh) {
        Status::NeedMore => return None,
        Status::Done(info) => {
            dir.hello_ech = info.ech;
            let name = info.server_name.unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            let lower = lower.strip_suffix(b".").unwrap_or(&lower);
            let msg = Message {
                host: (!lower.is_empty()).then_some(lower),
                port,
                src: dir.http.src,
                ..Message::default()
            };
            let r = c.rules.eval(&msg, apps);
            if r.is_some() {
                dir.matched = Some(Box::new(MatchedRequest::new(Some(lower), None)));
            }
            r
        }
        _ => None,
    };
    dir.hello = None;
    dir.hello_done = true;
    result
}

/// A segment ahead of a gap: scanned alone now, held for in-order inspection.
fn ahead(x: Ctx<'_>, p: Pair<'_>, seq: u32, payload: &[u8]) -> Option<Found> {
    let (c, cfg, apps) = (x.c, x.cfg, x.apps);
    let Pair { dir, other } = p;
    if let Some(h) = c
        .sigs
        .find_segment_start(payload, apps)
        .or_else(|| scan_with_context(&c.sigs, b"", payload, apps))
    {
        return Some(Found::Sig(h));
    }
    let held = dir.reorder.as_ref().map_or(0, |r| r.bytes);
    if held + payload.len() <= cfg.reorder_bytes {
        let r = dir.reorder.get_or_insert_with(|| Box::new(Reorder::default()));
        r.bytes += payload.len();
        r.segments.push((seq, payload.to_vec()));
        return None;
    }
    // No room: skip the gap. The stream goes on from the earliest held
    // segment (or this one); the gap's bytes, if they ever come, are
    // retransmissions and get scanned on their own.
    let earliest = dir
        .reorder
        .as_ref()
        .and_then(|r| r.segments.iter().map(|s| s.0).min_by_key(|s| seq_diff(*s, seq)))
        .unwrap_or(seq);
    let earliest = if seq_diff(seq, earliest) < 0 {
        seq
    } else {
        earliest
    };
    dir.resyncs += 1;
    dir.next_seq = Some(earliest);
    dir.tail_len = 0;
    dir.tail_virtual = 0;
    if earliest == seq {
        if let Some(f) = consume(x, Pair { dir, other }, payload, true) {
            return Some(f);
        }
    } else {
        let r = dir.reorder.get_or_insert_with(|| Box::new(Reorder::default()));
        r.bytes += payload.len();
        r.segments.push((seq, payload.to_vec()));
    }
    if let Some(f) = drain(x, Pair { dir, other }) {
        return Some(f);
    }
    // Still over the bound (the segment skipped to was small and the rest lie
    // beyond more gaps): keep skipping to the earliest held segment. Each
    // round inspects and frees at least that segment.
    while let Some(r) = dir.reorder.as_ref().filter(|r| r.bytes > cfg.reorder_bytes) {
        let next = dir.next_seq.unwrap_or(seq);
        let earliest = r
            .segments
            .iter()
            .map(|s| s.0)
            .min_by_key(|s| seq_diff(*s, next))?;
        dir.resyncs += 1;
        dir.next_seq = Some(earliest);
        dir.tail_len = 0;
        dir.tail_virtual = 0;
        if let Some(f) = drain(x, Pair { dir, other }) {
            return Some(f);
        }
    }
    None
}

/// Inspects held segments that the stream has now reached.
fn drain(x: Ctx<'_>, p: Pair<'_>) -> Option<Found> {
    let Pair { dir, other } = p;
    loop {
        let next = dir.next_seq?;
        let r = dir.reorder.as_mut()?;
        // Drop segments wholly behind the stream; find one that continues it.
        r.segments
            .retain(|(s, d)| seq_diff(s.wrapping_add(seq_len(d.len())), next) > 0);
        r.bytes = r.segments.iter().map(|(_, d)| d.len()).sum();
        let Some(i) = r.segments.iter().position(|(s, _)| seq_diff(next, *s) >= 0) else {
            if r.segments.is_empty() {
                dir.reorder = None;
            }
            return None;
        };
        let (s, data) = r.segments.swap_remove(i);
        r.bytes -= data.len();
        let skip = next.wrapping_sub(s) as usize;
        if let Some(f) = consume(x, Pair { dir, other }, &data[skip..], skip == 0) {
            return Some(f);
        }
    }
}

/// Longest run of zero bytes held back as a possible placeholder.
const MAX_ZEROS: usize = 8;

/// A short segment of zero bytes (a placeholder some stacks send on ACKs).
fn zeros_only(payload: &[u8]) -> bool {
    payload.len() <= MAX_ZEROS && payload.iter().all(|&b| b == 0)
}

/// The carried-over stream bytes just before sequence number `seq` (at most
/// the tail; the virtual line start counts at the stream's start).
fn before_seq(dir: &DirState, next: u32, seq: u32) -> &[u8] {
    let back = next.wrapping_sub(seq) as usize;
    let len = dir.tail_len as usize;
    &dir.tail[..len.saturating_sub(back).min(len)]
}

/// True when retransmitted bytes differ from the carried-over tail.
fn conflicts(dir: &DirState, next: u32, seq: u32, old: &[u8]) -> bool {
    // Real stream bytes in the tail (the virtual line start is not one; a
    // restarted stream's tail holds only its own bytes).
    let mut real = usize::try_from(u64::from(dir.tail_len).min(dir.unit_bytes)).unwrap_or(0);
    if dir.tail_virtual > 0 {
        // Only the bytes after a virtual newline are stream bytes.
        real = real.min(usize::from(dir.tail_virtual) - 1);
    }
    let tail = &dir.tail[dir.tail_len as usize - real..dir.tail_len as usize];
    // Stream position of tail[0] is next - real; of old[0] is seq.
    let back = next.wrapping_sub(seq) as usize; // bytes from old[0] to next
    for (i, &b) in old.iter().enumerate() {
        let dist = back - i; // distance of this byte before `next`, >= 1
        if dist <= real && tail[real - dist] != b {
            return true;
        }
    }
    false
}

/// Serial-number distance from `b` to `a` (RFC 1982): positive when `a`
/// lies ahead of `b` within half the sequence space.
#[inline]
fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b).cast_signed()
}

/// A payload length in sequence space (one segment is at most 64 KiB, even
/// a GSO one; anything longer is clamped rather than wrapped).
#[inline]
fn seq_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn update_tail(carry: usize, dir: &mut DirState, fresh: &[u8]) {
    if dir.tail_virtual > 0 {
        let after = usize::from(dir.tail_virtual) + fresh.len();
        dir.tail_virtual = if after <= carry {
            u8::try_from(after).unwrap_or(0)
        } else {
            0
        };
    }
    if fresh.len() >= carry {
        dir.tail[..carry].copy_from_slice(&fresh[fresh.len() - carry..]);
        dir.tail_len = u8::try_from(carry).unwrap_or(u8::MAX);
    } else {
        let old = dir.tail_len as usize;
        let keep = (carry - fresh.len()).min(old);
        dir.tail.copy_within(old - keep..old, 0);
        dir.tail[keep..keep + fresh.len()].copy_from_slice(fresh);
        dir.tail_len = u8::try_from(keep + fresh.len()).unwrap_or(u8::MAX);
    }
}
