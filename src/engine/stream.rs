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
//! - a connection picked up mid-stream (no SYN) starts at the first segment seen.

use crate::engine::compiled::Compiled;
use crate::engine::config::EngineConfig;
use crate::engine::http::HttpHit;
use crate::engine::matcher::{Hit, Matcher};
use crate::engine::message_rules::{Message, RuleRef};
use crate::engine::msnp;
use crate::engine::state::{DirState, MAX_CARRY, Reorder};
use crate::engine::tls::{Hello, server_name};
use crate::packet::TcpInfo;
use crate::policy::AppSet;

/// What stream inspection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A signature.
    Sig(Hit),
    /// A message rule.
    Rule(RuleRef),
    /// Retransmitted bytes that differ from the inspected ones.
    Conflict,
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

/// One TCP segment of one direction of a connection to server port `port`.
pub fn inspect_segment(
    c: &Compiled,
    cfg: &EngineConfig,
    dir: &mut DirState,
    tcp: TcpInfo,
    payload: &[u8],
    apps: AppSet,
    port: u16,
) -> Option<Found> {
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
        && let Some(f) = consume(c, dir, &[0u8; MAX_ZEROS][..usize::from(zlen)], true, apps, port)
    {
        return Some(f);
    }
    let next = *dir.next_seq.get_or_insert(data_seq);
    let diff = data_seq.wrapping_sub(next) as i32;
    if diff > 0 {
        return ahead(c, cfg, dir, data_seq, payload, apps, port);
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
    let hit = consume(c, dir, fresh, at_segment_start, apps, port);
    if hit.is_some() {
        return hit;
    }
    drain(c, dir, apps, port)
}

/// Inspects in-order bytes that start at `next_seq`.
fn consume(
    c: &Compiled,
    dir: &mut DirState,
    fresh: &[u8],
    segment_start: bool,
    apps: AppSet,
    port: u16,
) -> Option<Found> {
    let next = dir.next_seq.unwrap_or(0);
    dir.next_seq = Some(next.wrapping_add(fresh.len() as u32));
    // Depth counts bytes and segments inspected in order, not arrivals.
    dir.payload_packets += 1;
    // Every scope is checked; the hit that ends first in the stream is the reason.
    let mut hit = if segment_start {
        c.sigs.find_segment_start(fresh, apps)
    } else {
        None
    };
    hit = Hit::first(hit, c.sigs.feed_stream_start(&mut dir.start, fresh, apps));
    hit = Hit::first(
        hit,
        scan_with_context(&c.sigs, &dir.tail[..dir.tail_len as usize], fresh, apps),
    );
    let context = &dir.tail[..dir.tail_len as usize];
    hit = Hit::first(hit, msnp::feed(&c.sigs, &mut dir.msnp, context, fresh, apps));
    let mut found = sig(hit);
    if c.wants_http() && !dir.http.is_off() {
        let h = dir.http.feed(c, fresh, apps, port).map(|(h, end)| match h {
            HttpHit::Sig(s, _) => (Found::Sig(Hit { sig: s, end }), end),
            HttpHit::Rule(r) => (Found::Rule(r), end),
        });
        found = earlier(found, h);
    }
    if c.rules.needs_host() && !dir.hello_done {
        found = earlier(
            found,
            hello(c, dir, fresh, apps, port).map(|r| (Found::Rule(r), fresh.len())),
        );
    }
    dir.bytes += fresh.len() as u64;
    update_tail(c.sigs.carry(), dir, fresh);
    found.map(|(f, _)| f)
}

/// Collects a TLS ClientHello at the stream start and judges its server name.
fn hello(c: &Compiled, dir: &mut DirState, fresh: &[u8], apps: AppSet, port: u16) -> Option<RuleRef> {
    if dir.hello.is_none() {
        if dir.bytes != 0 || fresh.first() != Some(&0x16) {
            dir.hello_done = true;
            return None;
        }
        dir.hello = Some(Box::default());
    }
    let buf = dir.hello.as_mut()?;
    let room = 16 * 1024 + 5 - buf.len().min(16 * 1024 + 5);
    buf.extend_from_slice(&fresh[..fresh.len().min(room)]);
    let result = match server_name(buf) {
        Hello::NeedMore if room > fresh.len() => return None,
        Hello::Done(Some(name)) => {
            let mut lower = [0u8; 256];
            let n = name.len().min(256);
            for (o, c) in lower.iter_mut().zip(&name[..n]) {
                *o = c.to_ascii_lowercase();
            }
            let msg = Message {
                host: Some(&lower[..n]),
                port,
                src: dir.http.src,
                ..Message::default()
            };
            c.rules.eval(&msg, apps)
        }
        _ => None,
    };
    dir.hello = None;
    dir.hello_done = true;
    result
}

/// A segment ahead of a gap: scanned alone now, held for in-order inspection.
fn ahead(
    c: &Compiled,
    cfg: &EngineConfig,
    dir: &mut DirState,
    seq: u32,
    payload: &[u8],
    apps: AppSet,
    port: u16,
) -> Option<Found> {
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
        .and_then(|r| {
            r.segments
                .iter()
                .map(|s| s.0)
                .min_by_key(|s| s.wrapping_sub(seq) as i32)
        })
        .unwrap_or(seq);
    let earliest = if (seq.wrapping_sub(earliest) as i32) < 0 {
        seq
    } else {
        earliest
    };
    dir.resyncs += 1;
    dir.next_seq = Some(earliest);
    dir.tail_len = 0;
    if earliest == seq {
        if let Some(f) = consume(c, dir, payload, true, apps, port) {
            return Some(f);
        }
    } else {
        let r = dir.reorder.get_or_insert_with(|| Box::new(Reorder::default()));
        r.bytes += payload.len();
        r.segments.push((seq, payload.to_vec()));
    }
    if let Some(f) = drain(c, dir, apps, port) {
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
            .min_by_key(|s| s.wrapping_sub(next) as i32)?;
        dir.resyncs += 1;
        dir.next_seq = Some(earliest);
        dir.tail_len = 0;
        if let Some(f) = drain(c, dir, apps, port) {
            return Some(f);
        }
    }
    None
}

/// Inspects held segments that the stream has now reached.
fn drain(c: &Compiled, dir: &mut DirState, apps: AppSet, port: u16) -> Option<Found> {
    loop {
        let next = dir.next_seq?;
        let r = dir.reorder.as_mut()?;
        // Drop segments wholly behind the stream; find one that continues it.
        r.segments
            .retain(|(s, d)| (s.wrapping_add(d.len() as u32).wrapping_sub(next) as i32) > 0);
        r.bytes = r.segments.iter().map(|(_, d)| d.len()).sum();
        let Some(i) = r
            .segments
            .iter()
            .position(|(s, _)| (next.wrapping_sub(*s) as i32) >= 0)
        else {
            if r.segments.is_empty() {
                dir.reorder = None;
            }
            return None;
        };
        let (s, data) = r.segments.swap_remove(i);
        r.bytes -= data.len();
        let skip = next.wrapping_sub(s) as usize;
        if let Some(f) = consume(c, dir, &data[skip..], skip == 0, apps, port) {
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
    // Real stream bytes in the tail (the virtual line start is not one).
    let real = (dir.tail_len as u64).min(dir.bytes) as usize;
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

fn update_tail(carry: usize, dir: &mut DirState, fresh: &[u8]) {
    if fresh.len() >= carry {
        dir.tail[..carry].copy_from_slice(&fresh[fresh.len() - carry..]);
        dir.tail_len = carry as u8;
    } else {
        let old = dir.tail_len as usize;
        let keep = (carry - fresh.len()).min(old);
        dir.tail.copy_within(old - keep..old, 0);
        dir.tail[keep..keep + fresh.len()].copy_from_slice(fresh);
        dir.tail_len = (keep + fresh.len()) as u8;
    }
}
