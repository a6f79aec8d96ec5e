//! IPv4 and IPv6 fragment reassembly for captures.
//!
//! The kernel reassembles before NFQUEUE, so the live filter never sees a
//! fragment; a capture taken on the wire does. Reassembling here lets `scan`
//! judge what the receiver would have judged, and only that.
//!
//! Rules, following RFC 791, RFC 8200, RFC 5722 and Linux's reassembly:
//! - datagrams are keyed by (source, destination, identification, protocol)
//!   for IPv4 and (source, destination, identification) for IPv6;
//! - any fragment that overlaps data already held drops the whole datagram
//!   (RFC 5722; Linux does the same for IPv4). A fragment lying wholly inside
//!   contiguous data already held is an ignorable duplicate (RFC 5722 errata
//!   3089), and the first copy wins;
//! - a last fragment that disagrees with the known end, data beyond the end,
//!   or an empty fragment drops the datagram as inconsistent; an IPv4
//!   non-last fragment is cut to a multiple of 8 bytes (as Linux does), an
//!   IPv6 one that is not a multiple of 8 is dropped (RFC 8200);
//! - an IPv6 first fragment that does not hold the whole header chain
//!   through the TCP/UDP/ICMPv6 header is dropped (RFC 8200 section 4.5,
//!   RFC 7112). IPv4 tiny first fragments are reassembled like Linux does:
//!   reassembly itself defeats the RFC 1858 tiny-fragment trick, and its
//!   overlapping variant is dropped by the overlap rule;
//! - an IPv6 atomic fragment (offset 0, no more fragments) is returned at
//!   once without touching pending datagrams (RFC 6946);
//! - a datagram larger than 65535 bytes (IPv4 total length, IPv6 payload
//!   length) is dropped;
//! - memory is bounded by [`DefragConfig`]: when a new datagram or new bytes
//!   would exceed it, the oldest pending datagrams are evicted (counted as
//!   table-full); a datagram expires `timeout_ns` after its first fragment,
//!   on the capture's clock.
//!
//! The result is a whole IP packet with total/payload length fixed, the
//! fragment fields cleared (IPv4 keeps DF; its checksum is recomputed) and
//! the IPv6 Fragment header removed.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::ip::{IpError, parse_ip};

/// Largest reassembled IPv4 datagram or IPv6 payload.
pub const MAX_DATAGRAM: usize = 65535;

/// Bounds on reassembly state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragConfig {
    /// Most datagrams in progress at once.
    pub max_datagrams: usize,
    /// Most fragment bytes held at once (headers included).
    pub max_bytes: usize,
    /// How long a datagram may wait for its fragments, in capture
    /// nanoseconds from its first fragment (a capture clock that steps back
    /// only delays expiry).
    pub timeout_ns: u64,
}

impl Default for DefragConfig {
    /// 1024 datagrams, 4 MiB (Linux's ipfrag_high_thresh), 30 s (ipfrag_time).
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 1024,
            max_bytes: 4 << 20,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// Why fragments were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The datagram did not complete within the timeout (or by the end of the capture).
    Timeout,
    /// A fragment overlapped data already held: the whole datagram is dropped.
    Overlap,
    /// The datagram would exceed 65535 bytes: the whole datagram is dropped.
    TooBig,
    /// Reassembly limits were reached: the oldest datagram (or this one) is dropped.
    TableFull,
    /// Fragments disagree on the datagram's end, or a fragment is empty or
    /// badly sized: the datagram (or the bad IPv6 fragment) is dropped.
    Inconsistent,
    /// An IPv6 first fragment without the whole header chain: the fragment is dropped.
    Tiny,
    /// The capture holds less of the fragment than its header declares, so
    /// the datagram can never be rebuilt: the whole datagram is dropped.
    Truncated,
}

impl DropCause {
    /// Stable short name.
    pub fn name(self) -> &'static str {
        match self {
            DropCause::Timeout => "timeout",
            DropCause::Overlap => "overlap",
            DropCause::TooBig => "too-big",
            DropCause::TableFull => "table-full",
            DropCause::Inconsistent => "inconsistent",
            DropCause::Tiny => "tiny",
            DropCause::Truncated => "truncated",
        }
    }

    /// Stable name as a frame skip cause (`fragment-dropped-<name>`).
    pub fn skip_name(self) -> &'static str {
        match self {
            DropCause::Timeout => "fragment-dropped-timeout",
            DropCause::Overlap => "fragment-dropped-overlap",
            DropCause::TooBig => "fragment-dropped-too-big",
            DropCause::TableFull => "fragment-dropped-table-full",
            DropCause::Inconsistent => "fragment-dropped-inconsistent",
            DropCause::Tiny => "fragment-dropped-tiny",
            DropCause::Truncated => "fragment-dropped-truncated",
        }
    }
}

/// What pushing one packet did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefragResult {
    /// Not a fragment: use the packet as it is.
    NotFragment,
    /// Held until the rest of its datagram arrives.
    Pending,
    /// A copy of data already held: ignored.
    Duplicate,
    /// This fragment completed its datagram: the whole packet.
    Complete(Vec<u8>),
    /// This fragment was dropped (and its datagram, depending on the cause).
    Dropped(DropCause),
}

/// Reassembly counters. Drops are counted once per event: per datagram for
/// timeout, overlap, too-big, table-full, truncated and inconsistent ends,
/// per fragment for tiny and badly sized IPv6 fragments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DefragStats {
    /// Fragments pushed.
    pub fragments: u64,
    /// Datagrams rebuilt (IPv6 atomic fragments included).
    pub reassembled: u64,
    /// Duplicate fragments ignored.
    pub duplicates: u64,
    /// Datagrams still pending.
    pub pending: u64,
    /// Dropped: timeout (or still pending at the end of the capture).
    pub dropped_timeout: u64,
    /// Dropped: overlap.
    pub dropped_overlap: u64,
    /// Dropped: too big.
    pub dropped_too_big: u64,
    /// Dropped: table full.
    pub dropped_table_full: u64,
    /// Dropped: inconsistent.
    pub dropped_inconsistent: u64,
    /// Dropped: tiny IPv6 first fragment.
    pub dropped_tiny: u64,
    /// Dropped: truncated by the capture.
    pub dropped_truncated: u64,
}

impl DefragStats {
    fn count(&mut self, cause: DropCause) {
        let c = match cause {
            DropCause::Timeout => &mut self.dropped_timeout,
            DropCause::Overlap => &mut self.dropped_overlap,
            DropCause::TooBig => &mut self.dropped_too_big,
            DropCause::TableFull => &mut self.dropped_table_full,
            DropCause::Inconsistent => &mut self.dropped_inconsistent,
            DropCause::Tiny => &mut self.dropped_tiny,
            DropCause::Truncated => &mut self.dropped_truncated,
        };
        *c += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        id: u16,
        proto: u8,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        id: u32,
    },
}

#[derive(Debug)]
struct Pending {
    gen_id: u64,
    /// IPv4 header, or IPv6 unfragmentable part with its Next Header fixed;
    /// known once the first fragment arrives.
    header: Option<Vec<u8>>,
    /// (offset, data), sorted by offset, never overlapping.
    frags: Vec<(usize, Vec<u8>)>,
    /// End of the datagram's data, known once the last fragment arrives.
    total: Option<usize>,
    /// Largest fragment end seen.
    max_end: usize,
    /// Data bytes held (no overlaps, so completion is covered == total).
    covered: usize,
    /// Bytes charged against the memory bound.
    bytes: usize,
}

/// Reassembles IPv4 and IPv6 fragments within fixed bounds.
#[derive(Debug)]
pub struct Defragmenter {
    cfg: DefragConfig,
    table: HashMap<Key, Pending>,
    /// Datagrams in creation order (first_ts, generation, key); entries whose
    /// generation no longer matches are stale and skipped.
    order: VecDeque<(u64, u64, Key)>,
    bytes: usize,
    next_gen: u64,
    stats: DefragStats,
}

/// Whether an IP packet is a fragment (IPv6 atomic fragments included).
pub fn is_fragment(ip: &[u8]) -> bool {
    matches!(parse_ip(ip), Ok(h) if h.frag.is_some())
}

impl Defragmenter {
    /// An empty reassembler with these bounds.
    pub fn new(cfg: DefragConfig) -> Defragmenter {
        Defragmenter {
            cfg,
            table: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_gen: 0,
            stats: DefragStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Fragment bytes held now.
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    /// Drops every pending datagram, counting each as timed out.
    pub fn expire_all(&mut self) {
        let n = self.table.len() as u64;
        self.stats.dropped_timeout += n;
        self.table.clear();
        self.order.clear();
        self.bytes = 0;
        self.stats.pending = 0;
    }

    /// Offers one IP packet seen at `ts_ns` (capture time).
    pub fn push(&mut self, ts_ns: u64, ip: &[u8]) -> DefragResult {
        self.expire(ts_ns);
        let h = match parse_ip(ip) {
            Ok(h) => h,
            Err(IpError::Truncated) => return DefragResult::NotFragment,
            Err(IpError::Bad) => return DefragResult::NotFragment,
        };
        let Some(f) = h.frag else {
            return DefragResult::NotFragment;
        };
        self.stats.fragments += 1;
        let key = match h.version {
            4 => Key::V4 {
                src: arr(ip, 12),
                dst: arr(ip, 16),
                // IPv4 identification is 16 bits wide.
                id: u16::try_from(f.id).unwrap_or(0),
                proto: h.proto,
            },
            _ => Key::V6 {
                src: arr(ip, 8),
                dst: arr(ip, 24),
                id: f.id,
            },
        };
        if h.truncated {
            return self.kill(&key, DropCause::Truncated);
        }
        let Some(mut data) = ip.get(h.hdr_len..h.len) else {
            return self.kill(&key, DropCause::Truncated);
        };
        // Bytes of header that precede the data in the rebuilt datagram,
        // counted against the 65535 limit.
        let head_len = if h.version == 4 {
            h.hdr_len
        } else {
            f.frag_at.saturating_sub(40)
        };
        if h.version == 6 && f.offset == 0 && !f.more {
            // Atomic fragment: a datagram of its own (RFC 6946).
            if !chain_complete(h.proto, data) {
                self.stats.count(DropCause::Tiny);
                return DefragResult::Dropped(DropCause::Tiny);
            }
            self.stats.reassembled += 1;
            return DefragResult::Complete(build_v6(&unfragmentable(ip, &f, h.proto), data));
        }
        if f.more {
            if h.version == 4 {
                data = data.get(..data.len() & !7).unwrap_or(data);
            } else if data.len() % 8 != 0 {
                self.stats.count(DropCause::Inconsistent);
                return DefragResult::Dropped(DropCause::Inconsistent);
            }
        }
        if data.is_empty() {
            return self.kill(&key, DropCause::Inconsistent);
        }
        let end = f.offset + data.len();
        if head_len + end > MAX_DATAGRAM {
            return self.kill(&key, DropCause::TooBig);
        }
        if h.version == 6 && f.offset == 0 && !chain_complete(h.proto, data) {
            self.stats.count(DropCause::Tiny);
            return DefragResult::Dropped(DropCause::Tiny);
        }
        if !self.table.contains_key(&key) {
            while self.table.len() >= self.cfg.max_datagrams.max(1) {
                if !self.evict_oldest(None) {
                    break;
                }
            }
            let gen_id = self.next_gen;
            self.next_gen += 1;
            self.table.insert(
                key,
                Pending {
                    gen_id,
                    header: None,
                    frags: Vec::new(),
                    total: None,
                    max_end: 0,
                    covered: 0,
                    bytes: 0,
                },
            );
            self.order.push_back((ts_ns, gen_id, key));
            self.compact();
        }
        let Some(p) = self.table.get(&key) else {
            return DefragResult::Dropped(DropCause::TableFull);
        };
        // The end must agree with what is known (RFC 791; Linux drops the queue).
        if !f.more {
            if end < p.max_end || p.total.is_some_and(|t| t != end) {
                return self.kill(&key, DropCause::Inconsistent);
            }
        } else if p.total.is_some_and(|t| end > t) {
            return self.kill(&key, DropCause::Inconsistent);
        }
        match overlap(&p.frags, f.offset, end) {
            Overlap::None => {}
            Overlap::Duplicate => {
                self.stats.duplicates += 1;
                return DefragResult::Duplicate;
            }
            Overlap::Partial => return self.kill(&key, DropCause::Overlap),
        }
        let header = (f.offset == 0).then(|| match h.version {
            4 => ip.get(..h.hdr_len).unwrap_or(&[]).to_vec(),
            _ => unfragmentable(ip, &f, h.proto),
        });
        let need = data.len() + header.as_ref().map_or(0, Vec::len);
        while self.bytes + need > self.cfg.max_bytes {
            if !self.evict_oldest(Some(&key)) {
                return self.kill(&key, DropCause::TableFull);
            }
        }
        let Some(p) = self.table.get_mut(&key) else {
            return DefragResult::Dropped(DropCause::TableFull);
        };
        let at = p.frags.partition_point(|(o, _)| *o < f.offset);
        p.frags.insert(at, (f.offset, data.to_vec()));
        if let Some(hd) = header {
            p.header = Some(hd);
        }
        if !f.more {
            p.total = Some(end);
        }
        p.max_end = p.max_end.max(end);
        p.covered += data.len();
        p.bytes += need;
        self.bytes += need;
        if p.header.is_none() || p.total != Some(p.covered) {
            self.stats.pending = self.table.len() as u64;
            return DefragResult::Pending;
        }
        let Some(p) = self.table.remove(&key) else {
            return DefragResult::Pending;
        };
        self.bytes -= p.bytes;
        self.stats.pending = self.table.len() as u64;
        let header = p.header.unwrap_or_default();
        let mut payload = Vec::with_capacity(p.covered);
        for (_, d) in &p.frags {
            payload.extend_from_slice(d);
        }
        self.stats.reassembled += 1;
        DefragResult::Complete(match h.version {
            4 => build_v4(&header, &payload),
            _ => build_v6(&header, &payload),
        })
    }

    /// Drops `key`'s datagram (if pending) and counts `cause` once.
    fn kill(&mut self, key: &Key, cause: DropCause) -> DefragResult {
        if let Some(p) = self.table.remove(key) {
            self.bytes -= p.bytes;
        }
        self.stats.pending = self.table.len() as u64;
        self.stats.count(cause);
        DefragResult::Dropped(cause)
    }

    fn is_live(&self, gen_id: u64, key: &Key) -> bool {
        self.table.get(key).is_some_and(|p| p.gen_id == gen_id)
    }

    /// Evicts the oldest datagram other than `keep`; false if there is none.
    fn evict_oldest(&mut self, keep: Option<&Key>) -> bool {
        let mut skipped = None;
        let mut evicted = false;
        while let Some((ts, gen_id, key)) = self.order.pop_front() {
            if !self.is_live(gen_id, &key) {
                continue;
            }
            if Some(&key) == keep {
                skipped = Some((ts, gen_id, key));
                continue;
            }
            self.kill(&key, DropCause::TableFull);
            evicted = true;
            break;
        }
        if let Some(s) = skipped {
            self.order.push_front(s);
        }
        evicted
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(ts, gen_id, key)) = self.order.front() {
            if !self.is_live(gen_id, &key) {
                self.order.pop_front();
                continue;
            }
            if ts.saturating_add(self.cfg.timeout_ns) > now {
                break;
            }
            self.order.pop_front();
            self.kill(&key, DropCause::Timeout);
        }
    }

    /// Keeps the order queue proportional to the table (completed
    /// datagrams leave stale entries behind).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.table.len() + 64 {
            let table = &self.table;
            self.order
                .retain(|(_, g, k)| table.get(k).is_some_and(|p| p.gen_id == *g));
        }
    }
}

enum Overlap {
    None,
    Duplicate,
    Partial,
}

/// How [start, end) meets the held fragments (sorted, disjoint).
fn overlap(frags: &[(usize, Vec<u8>)], start: usize, end: usize) -> Overlap {
    let mut cursor = start;
    let mut any = false;
    // Fragments are disjoint and sorted, so their ends are sorted too.
    let first = frags.partition_point(|(o, d)| o + d.len() <= start);
    for (o, d) in frags.get(first..).unwrap_or(&[]) {
        if *o >= end {
            break;
        }
        any = true;
        if *o > cursor {
            return Overlap::Partial;
        }
        cursor = cursor.max(o + d.len());
    }
    match (any, cursor >= end) {
        (false, _) => Overlap::None,
        (true, true) => Overlap::Duplicate,
        (true, false) => Overlap::Partial,
    }
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        out.copy_from_slice(s);
    }
    out
}

/// The IPv6 unfragmentable part with the Next Header that named the
/// Fragment header changed to what the fragment carries.
fn unfragmentable(ip: &[u8], f: &super::ip::FragInfo, proto: u8) -> Vec<u8> {
    let mut v = ip.get(..f.frag_at).unwrap_or(&[]).to_vec();
    if let Some(b) = v.get_mut(f.nh_at) {
        *b = proto;
    }
    v
}

fn build_v4(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + payload.len());
    v.extend_from_slice(header);
    v.extend_from_slice(payload);
    // Sizes were checked against MAX_DATAGRAM on every fragment.
    let total = u16::try_from(v.len()).unwrap_or(u16::MAX);
    if v.len() >= 20 {
        v[2..4].copy_from_slice(&total.to_be_bytes());
        // Keep DF, clear MF and the offset.
        v[6] &= 0x40;
        v[7] = 0;
        v[10] = 0;
        v[11] = 0;
        let ihl = header.len().min(v.len());
        let sum: u32 = v[..ihl]
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let mut sum = sum;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let ck = !u16::try_from(sum).unwrap_or(0xffff);
        v[10..12].copy_from_slice(&ck.to_be_bytes());
    }
    v
}

fn build_v6(unfrag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(unfrag.len() + payload.len());
    v.extend_from_slice(unfrag);
    v.extend_from_slice(payload);
    let plen = u16::try_from(v.len().saturating_sub(40)).unwrap_or(u16::MAX);
    if v.len() >= 40 {
        v[4..6].copy_from_slice(&plen.to_be_bytes());
    }
    v
}

/// Whether an IPv6 first fragment's data holds every extension header and
/// the upper-layer header (RFC 8200 section 4.5).
fn chain_complete(mut nh: u8, data: &[u8]) -> bool {
    let mut at = 0usize;
    for _ in 0..16 {
        let need = match nh {
            0 | 43 | 60 | 135 | 139 | 140 => match data.get(at + 1) {
                Some(l) => (usize::from(*l) + 1) * 8,
                None => return false,
            },
            51 => match data.get(at + 1) {
                Some(l) => (usize::from(*l) + 2) * 4,
                None => return false,
            },
            6 => return data.len() >= at + 20,
            17 => return data.len() >= at + 8,
            58 => return data.len() >= at + 8,
            _ => return true,
        };
        match data.get(at) {
            Some(n) => nh = *n,
            None => return false,
        }
        at += need;
        if at > data.len() {
            return false;
        }
    }
    false
}
