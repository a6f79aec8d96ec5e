//! Connections: the key that names one, the state kept per direction, and a
//! bounded table that holds them.
//!
//! The engine needs to remember, per connection, what it decided and where
//! each direction's inspection stands (sequence number, carried-over bytes,
//! HTTP parse state). The table guarantees bounded memory: a fixed capacity
//! with least-recently-active eviction and an idle timeout, O(1) per packet,
//! and no allocation once the table has grown to its working size.

use std::collections::HashMap;
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

    /// True once the connection has ended (RST, or FIN both ways).
    pub fn is_closed(&self) -> bool {
        self.reset || (self.dirs[0].fin && self.dirs[1].fin)
    }
}

const NIL: u32 = u32::MAX;

struct Slot {
    key: FlowKey,
    state: FlowState,
    prev: u32,
    next: u32,
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
}

/// A bounded connection table with least-recently-active eviction.
pub struct FlowTable {
    index: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Most recently active.
    head: u32,
    /// Least recently active.
    tail: u32,
    capacity: usize,
    idle_timeout: u64,
    next_id: u64,
    stats: TableStats,
}

impl FlowTable {
    /// A table of at most `capacity` connections; idle ones leave after
    /// `idle_timeout_ns` of the caller's clock.
    pub fn new(capacity: usize, idle_timeout_ns: u64) -> FlowTable {
        let capacity = capacity.max(1);
        FlowTable {
            index: HashMap::with_capacity(capacity.min(1 << 16)),
            slots: Vec::with_capacity(capacity.min(1 << 16)),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
            idle_timeout: idle_timeout_ns,
            next_id: 1,
            stats: TableStats::default(),
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
    pub fn get_or_insert(&mut self, p: &PacketView<'_>, now: u64) -> &mut FlowState {
        let key = FlowKey::of(p);
        let idx = match self.index.get(&key) {
            Some(&i) => {
                let fresh_syn = p.tcp.is_some_and(|t| t.syn && !t.ack);
                let s = &self.slots[i as usize].state;
                let expired = now.saturating_sub(s.last_seen) > self.idle_timeout;
                if expired || (fresh_syn && s.is_closed()) {
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
                    let victim = self.tail;
                    self.remove_slot(victim);
                    self.stats.evicted_full += 1;
                }
                let id = self.take_id();
                let state = FlowState::new(id, p, now);
                let slot = Slot {
                    key,
                    state,
                    prev: NIL,
                    next: NIL,
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
        self.push_front(idx);
        let s = &mut self.slots[idx as usize].state;
        s.last_seen = now;
        s
    }

    /// Removes `p`'s connection (after a RST, say).
    pub fn remove(&mut self, p: &PacketView<'_>) {
        if let Some(&i) = self.index.get(&FlowKey::of(p)) {
            self.remove_slot(i);
        }
    }

    /// Visits every connection held.
    pub fn for_each(&self, mut f: impl FnMut(&FlowState)) {
        for (_, &i) in self.index.iter() {
            f(&self.slots[i as usize].state);
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Drops up to two idle connections from the cold end (amortised expiry).
    fn expire_some(&mut self, now: u64) {
        for _ in 0..2 {
            let t = self.tail;
            if t == NIL {
                return;
            }
            if now.saturating_sub(self.slots[t as usize].state.last_seen) <= self.idle_timeout {
                return;
            }
            self.remove_slot(t);
            self.stats.expired_idle += 1;
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
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else if self.head == i {
            self.head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else if self.tail == i {
            self.tail = prev;
        }
        let s = &mut self.slots[i as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old != NIL {
            self.slots[old as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
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
