//! Connections: the key that names one, the state kept per direction, and a
//! bounded table that holds them.
//!
//! The engine needs to remember, per connection, what it decided and where
//! each direction's inspection stands (sequence number, carried-over bytes,
//! HTTP parse state). The table guarantees bounded memory: a fixed capacity
//! with least-recently-active eviction and an idle timeout, O(1) per packet,
//! and no allocation once the table has grown to its working size.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::net::IpAddr;

use crate::engine::http::HttpState;
use crate::engine::matcher::StartState;
use crate::engine::verdict::Reason;
use crate::packet::PacketView;
use crate::policy::{AppSet, Proto};

/// Most bytes a direction carries over between segments.
pub const MAX_CARRY: usize = 64;

/// Direction-independent name of a connection: the lower endpoint first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    lo: (u128, u16),
    hi: (u128, u16),
    proto: u8,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FlowKey {
    /// The key of the connection a packet belongs to.
    #[inline]
    pub fn of(p: &PacketView<'_>) -> FlowKey {
        let a = (addr_bits(p.src), p.sport);
        let b = (addr_bits(p.dst), p.dport);
        let proto = match p.proto {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        };
        if a <= b {
            FlowKey { lo: a, hi: b, proto }
        } else {
            FlowKey { lo: b, hi: a, proto }
        }
    }
}

/// Which way a packet travels relative to the connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Same direction as the first packet seen (the opener, when seen from SYN).
    Orig = 0,
    /// The other direction.
    Reply = 1,
}

/// What has been decided for a whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowDecision {
    /// Still inspecting.
    #[default]
    Inspecting,
    /// Blocked for good.
    Blocked(Reason),
    /// Passed the inspection depth with no match: accepted without inspection.
    Clean,
    /// No listed host in it, or no app with signatures: accepted.
    Ignored,
}

/// Inspection state of one direction.
#[derive(Debug, Clone)]
pub struct DirState {
    /// Next expected TCP sequence number, once known.
    pub next_seq: Option<u32>,
    /// Last bytes of the stream, so literals split across segments match.
    pub tail: [u8; MAX_CARRY],
    /// Valid bytes in `tail`.
    pub tail_len: u8,
    /// `stream-start` comparison progress.
    pub start: StartState,
    /// HTTP walker state.
    pub http: HttpState,
    /// In-order payload bytes inspected.
    pub bytes: u64,
    /// Packets carrying payload.
    pub payload_packets: u32,
    /// FIN seen in this direction.
    pub fin: bool,
    /// Segments held because they arrived ahead of a gap (rare; boxed so the
    /// common case costs one pointer).
    pub reorder: Option<Box<Reorder>>,
    /// Times the stream skipped a gap because the reorder buffer was full.
    pub resyncs: u32,
    /// Start of a TLS ClientHello being collected (only when host rules exist).
    pub hello: Option<Box<Vec<u8>>>,
    /// The stream start was looked at for a ClientHello.
    pub hello_done: bool,
}

/// Segments that arrived ahead of a gap, waiting for it to fill.
#[derive(Debug, Clone, Default)]
pub struct Reorder {
    /// (sequence number, payload) in arrival order.
    pub segments: Vec<(u32, Vec<u8>)>,
    /// Payload bytes held.
    pub bytes: usize,
}

impl Default for DirState {
    fn default() -> Self {
        let mut tail = [0u8; MAX_CARRY];
        tail[0] = b'\n';
        DirState {
            next_seq: None,
            tail,
            // Stream start counts as a line start.
            tail_len: 1,
            start: StartState::default(),
            http: HttpState::default(),
            bytes: 0,
            payload_packets: 0,
            fin: false,
            reorder: None,
            resyncs: 0,
            hello: None,
            hello_done: false,
        }
    }
}

impl DirState {
    /// Forgets match progress (after a policy reload), keeping TCP position.
    pub fn reset_matching(&mut self) {
        let seq = self.next_seq;
        let (bytes, pkts, fin) = (self.bytes, self.payload_packets, self.fin);
        *self = DirState::default();
        self.next_seq = seq;
        self.bytes = bytes;
        self.payload_packets = pkts;
        self.fin = fin;
        // Mid-stream after a reload: neither line start nor stream start.
        self.tail_len = 0;
        self.start.begun = true;
        self.start.alive = 0;
    }
}

/// Everything kept about one connection.
#[derive(Debug, Clone)]
pub struct FlowState {
    /// Unique id of this connection instance (for reports and events).
    pub id: u64,
    /// Source address of the first packet.
    pub orig_src: IpAddr,
    /// Source port of the first packet.
    pub orig_sport: u16,
    /// Destination address of the first packet.
    pub orig_dst: IpAddr,
    /// Destination port of the first packet.
    pub orig_dport: u16,
    /// Protocol.
    pub proto: Proto,
    /// First packet was a SYN without ACK (seen from the start).
    pub from_syn: bool,
    /// Apps that apply (set up on the first packet).
    pub apps: AppSet,
    /// Engine generation the matching state belongs to (0: not set up).
    pub engine_gen: u64,
    /// The decision so far.
    pub decision: FlowDecision,
    /// Per-direction state, indexed by [`Side`].
    pub dirs: [DirState; 2],
    /// Packets seen.
    pub packets: u64,
    /// Time of the last packet (caller's clock, nanoseconds).
    pub last_seen: u64,
    /// RST seen.
    pub reset: bool,
    /// A packet came back from the other side (the connection is two-way).
    pub replied: bool,
}

impl FlowState {
    /// A new connection opened by packet `p`.
    pub fn new(id: u64, p: &PacketView<'_>, now: u64) -> FlowState {
        FlowState {
            id,
            orig_src: p.src,
            orig_sport: p.sport,
            orig_dst: p.dst,
            orig_dport: p.dport,
            proto: p.proto,
            from_syn: p.tcp.is_some_and(|t| t.syn && !t.ack),
            apps: 0,
            engine_gen: 0,
            decision: FlowDecision::Inspecting,
            dirs: [DirState::default(), DirState::default()],
            packets: 0,
            last_seen: now,
            reset: false,
            replied: false,
        }
    }

    /// The side packet `p` travels on.
    #[inline]
    pub fn side_of(&self, p: &PacketView<'_>) -> Side {
        if p.src == self.orig_src && p.sport == self.orig_sport {
            Side::Orig
        } else {
            Side::Reply
        }
    }

    /// Frees what only inspection needed (held segments, a ClientHello
    /// being collected, HTTP fields) once the connection is settled.
    pub fn release_inspection(&mut self) {
        for d in &mut self.dirs {
            d.reorder = None;
            d.hello = None;
            d.http = HttpState::default();
        }
    }

    /// True once the connection has ended (RST, or FIN both ways).
    pub fn is_closed(&self) -> bool {
        self.reset || (self.dirs[0].fin && self.dirs[1].fin)
    }
}

const NIL: u32 = u32::MAX;
/// Connections that have not heard back from the other side (a SYN flood
/// lives here), least recently active at the tail.
const NEW: usize = 0;
/// Connections with packets in both directions, least recently active at the tail.
const OPEN: usize = 1;
/// Closed connections (RST, or FIN both ways), oldest at the tail.
const CLOSED: usize = 2;
/// Eviction order when the table is full.
const EVICT_ORDER: [usize; 3] = [CLOSED, NEW, OPEN];

struct Slot {
    key: FlowKey,
    state: FlowState,
    prev: u32,
    next: u32,
    list: u8,
}

#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

/// Counters of the table's own activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Connections created.
    pub created: u64,
    /// Connections evicted because the table was full.
    pub evicted_full: u64,
    /// Connections removed after the idle timeout.
    pub expired_idle: u64,
    /// Closed connections removed after the close timeout.
    pub expired_closed: u64,
}

/// A bounded connection table with least-recently-active eviction.
///
/// Connections live on one of three lists: new (nothing heard back yet),
/// open (packets both ways) and closed (RST, or FIN both ways). New ones
/// leave after `new_timeout` of silence, open ones after `idle_timeout`,
/// closed ones after the short `close_timeout`. When the table is full, a new
/// connection evicts the oldest closed one, else the least recently active
/// new one, and only then an open one: a flood of SYNs churns through the new
/// list and leaves established connections (and their verdicts) alone.
/// Expiry is amortised: each new connection checks the cold end of every
/// list, so there is no sweeper thread and no pause.
pub struct FlowTable {
    /// Keyed per table (foldhash, random seed): fast, and a flood of
    /// crafted ports cannot aim at one bucket.
    index: HashMap<FlowKey, u32, RandomState>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    lists: [Ends; 3],
    capacity: usize,
    idle_timeout: u64,
    new_timeout: u64,
    close_timeout: u64,
    next_id: u64,
    stats: TableStats,
}

impl FlowTable {
    /// A table of at most `capacity` connections; idle ones leave after
    /// `idle_timeout_ns` of the caller's clock, closed ones after 10 s.
    pub fn new(capacity: usize, idle_timeout_ns: u64) -> FlowTable {
        let capacity = capacity.max(1);
        FlowTable {
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), RandomState::default()),
            slots: Vec::with_capacity(capacity.min(1 << 16)),
            free: Vec::new(),
            lists: [Ends { head: NIL, tail: NIL }; 3],
            capacity,
            idle_timeout: idle_timeout_ns,
            new_timeout: 120_000_000_000u64.min(idle_timeout_ns),
            close_timeout: 10_000_000_000u64.min(idle_timeout_ns),
            next_id: 1,
            stats: TableStats::default(),
        }
    }

    /// Sets how long a closed connection is remembered (late retransmissions
    /// and the last ACK still find it), in the caller's clock.
    pub fn with_close_timeout(mut self, ns: u64) -> FlowTable {
        self.close_timeout = ns;
        self
    }

    fn timeout_of(&self, s: &FlowState) -> u64 {
        if s.is_closed() {
            self.close_timeout
        } else if s.replied {
            self.idle_timeout
        } else {
            self.new_timeout
        }
    }

    fn list_of(s: &FlowState) -> usize {
        if s.is_closed() {
            CLOSED
        } else if s.replied {
            OPEN
        } else {
            NEW
        }
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Table counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// The state of `p`'s connection, created if new; `now` in nanoseconds.
    /// Also keeps the connection's lifecycle: FIN and RST flags are recorded
    /// here, before the engine sees the packet.
    pub fn get_or_insert(&mut self, p: &PacketView<'_>, now: u64) -> &mut FlowState {
        let key = FlowKey::of(p);
        let fresh_syn = p.tcp.is_some_and(|t| t.syn && !t.ack);
        let idx = match self.index.get(&key) {
            Some(&i) => {
                let s = &self.slots[i as usize].state;
                let stale = now.saturating_sub(s.last_seen) > self.timeout_of(s);
                if stale || (fresh_syn && s.is_closed()) {
                    // Port reuse or a stale entry: a new connection instance.
                    let id = self.take_id();
                    self.slots[i as usize].state = FlowState::new(id, p, now);
                }
                self.unlink(i);
                i
            }
            None => {
                self.expire_some(now);
                if self.index.len() >= self.capacity {
                    let victim = EVICT_ORDER
                        .iter()
                        .map(|&l| self.lists[l].tail)
                        .find(|&t| t != NIL)
                        .unwrap_or(NIL);
                    self.remove_slot(victim);
                    self.stats.evicted_full += 1;
                }
                let id = self.take_id();
                let slot = Slot {
                    key,
                    state: FlowState::new(id, p, now),
                    prev: NIL,
                    next: NIL,
                    list: NEW as u8,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = slot;
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(key, i);
                self.stats.created += 1;
                i
            }
        };
        let s = &mut self.slots[idx as usize].state;
        s.last_seen = now;
        let side = s.side_of(p) as usize;
        s.replied |= side == Side::Reply as usize;
        if let Some(t) = p.tcp {
            s.reset |= t.rst;
            s.dirs[side].fin |= t.fin;
        }
        let list = FlowTable::list_of(s);
        self.push_front(idx, list);
        &mut self.slots[idx as usize].state
    }

    /// Removes `p`'s connection.
    pub fn remove(&mut self, p: &PacketView<'_>) {
        if let Some(&i) = self.index.get(&FlowKey::of(p)) {
            self.remove_slot(i);
        }
    }

    /// Forgets every connection (after a policy reload that must not mix).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.lists = [Ends { head: NIL, tail: NIL }; 3];
    }

    /// Visits every connection held.
    pub fn for_each(&self, mut f: impl FnMut(&FlowState)) {
        for &i in self.index.values() {
            f(&self.slots[i as usize].state);
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Drops up to two expired connections from the cold end of each list.
    fn expire_some(&mut self, now: u64) {
        let limits = [
            (CLOSED, self.close_timeout),
            (NEW, self.new_timeout),
            (OPEN, self.idle_timeout),
        ];
        for (list, limit) in limits {
            for _ in 0..2 {
                let t = self.lists[list].tail;
                if t == NIL || now.saturating_sub(self.slots[t as usize].state.last_seen) <= limit {
                    break;
                }
                self.remove_slot(t);
                if list == CLOSED {
                    self.stats.expired_closed += 1;
                } else {
                    self.stats.expired_idle += 1;
                }
            }
        }
    }

    fn remove_slot(&mut self, i: u32) {
        if i == NIL {
            return;
        }
        self.unlink(i);
        let key = self.slots[i as usize].key;
        self.index.remove(&key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, list) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next, s.list as usize)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else if self.lists[list].head == i {
            self.lists[list].head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else if self.lists[list].tail == i {
            self.lists[list].tail = prev;
        }
        let s = &mut self.slots[i as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    fn push_front(&mut self, i: u32, list: usize) {
        let old = self.lists[list].head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
            s.list = list as u8;
        }
        if old != NIL {
            self.slots[old as usize].prev = i;
        }
        self.lists[list].head = i;
        if self.lists[list].tail == NIL {
            self.lists[list].tail = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::tcp4;

    #[test]
    fn both_directions_share_a_flow_and_capacity_holds() {
        let mut t = FlowTable::new(3, 1_000);
        let a = tcp4([192, 0, 2, 1], 1000, [198, 51, 100, 1], 80, 0, b"");
        let b = tcp4([198, 51, 100, 1], 80, [192, 0, 2, 1], 1000, 0, b"");
        let pa = PacketView::from_ip(&a).unwrap();
        let pb = PacketView::from_ip(&b).unwrap();
        let id = t.get_or_insert(&pa, 0).id;
        let f = t.get_or_insert(&pb, 1);
        assert_eq!(f.id, id);
        assert_eq!(f.side_of(&pb), Side::Reply);
        assert_eq!(f.side_of(&pa), Side::Orig);
        let mut bufs = Vec::new();
        for port in 2000..2010u16 {
            bufs.push(tcp4([192, 0, 2, 1], port, [198, 51, 100, 1], 80, 0, b""));
        }
        for (i, buf) in bufs.iter().enumerate() {
            // Keep the first flow warm: it must survive the flood.
            t.get_or_insert(&pa, 2 + i as u64);
            t.get_or_insert(&PacketView::from_ip(buf).unwrap(), 2 + i as u64);
            assert!(t.len() <= 3);
        }
        assert_eq!(t.get_or_insert(&pa, 20).id, id);
        assert!(t.stats().evicted_full >= 8);
    }

    #[test]
    fn closed_connections_leave_early_and_are_evicted_first() {
        let mut t = FlowTable::new(3, 1_000_000).with_close_timeout(10);
        let open = tcp4([192, 0, 2, 1], 1000, [198, 51, 100, 1], 80, 0, b"");
        let back = tcp4([198, 51, 100, 1], 80, [192, 0, 2, 1], 1000, 0, b"");
        let open_id = t.get_or_insert(&PacketView::from_ip(&open).unwrap(), 0).id;
        assert!(t.get_or_insert(&PacketView::from_ip(&back).unwrap(), 0).replied);
        // A connection reset by its peer.
        let mut rst = tcp4([198, 51, 100, 1], 80, [192, 0, 2, 1], 1001, 0, b"");
        rst[33] |= 0x04; // RST flag in the TCP header (IPv4 header is 20 bytes)
        let v = PacketView::from_ip(&rst).unwrap();
        assert!(v.tcp.unwrap().rst);
        assert!(t.get_or_insert(&v, 1).is_closed());
        // Two more flows: the closed one is evicted first, the open one stays.
        for port in [2000u16, 2001] {
            let b = tcp4([192, 0, 2, 1], port, [198, 51, 100, 1], 80, 0, b"");
            t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 2);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.stats().evicted_full, 1);
        assert_eq!(
            t.get_or_insert(&PacketView::from_ip(&open).unwrap(), 3).id,
            open_id
        );
        // Close timeout: a closed flow is gone after 10 ns, an open one is not.
        let mut t = FlowTable::new(100, 1_000_000).with_close_timeout(10);
        t.get_or_insert(&v, 0);
        t.get_or_insert(&PacketView::from_ip(&open).unwrap(), 0);
        let b = tcp4([192, 0, 2, 1], 3000, [198, 51, 100, 1], 80, 0, b"");
        t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 50);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().expired_closed, 1);
    }

    #[test]
    fn syn_flood_evicts_new_connections_before_established_ones() {
        let mut t = FlowTable::new(100, u64::MAX);
        let a = tcp4([192, 0, 2, 1], 1000, [198, 51, 100, 1], 80, 0, b"");
        let b = tcp4([198, 51, 100, 1], 80, [192, 0, 2, 1], 1000, 0, b"");
        let id = t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 0).id;
        t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 0);
        // 10x the capacity of SYNs, never touching the established flow.
        for i in 0..1000u32 {
            let syn = tcp4(
                [203, 0, 113, (i >> 8) as u8],
                1024 + (i & 0xff) as u16,
                [198, 51, 100, 1],
                80,
                0,
                b"",
            );
            t.get_or_insert(&PacketView::from_ip(&syn).unwrap(), 1 + i as u64);
            assert!(t.len() <= 100);
        }
        assert_eq!(t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 5000).id, id);
    }

    #[test]
    fn idle_connections_expire() {
        let mut t = FlowTable::new(100, 10);
        let a = tcp4([192, 0, 2, 1], 1000, [198, 51, 100, 1], 80, 0, b"");
        let b = tcp4([192, 0, 2, 1], 1001, [198, 51, 100, 1], 80, 0, b"");
        let id = t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 0).id;
        t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 100);
        assert_eq!(t.len(), 1, "the idle flow was expired");
        assert_ne!(t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 101).id, id);
    }
}
