//! Connections: the key that names one, which way a packet travels, and a
//! bounded table that holds one record per connection.
//!
//! The table is generic over what its user remembers per connection (the
//! engine keeps [`crate::engine::state::ConnState`]); it knows no engine type.
//! It owns only the connection's identity and lifecycle (who opened it, when
//! it was last active, FIN/RST seen, whether the other side answered), which
//! is what eviction and expiry need. Guarantees: bounded memory (a fixed
//! capacity with least-recently-active eviction and timeouts), O(1) per
//! packet, and no allocation once the table has grown to its working size.

use std::collections::HashMap;
use std::net::IpAddr;

use foldhash::fast::RandomState;

use crate::packet::{PacketView, Proto};

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

/// One connection: its identity and lifecycle, and the user's state `T`.
#[derive(Debug, Clone)]
pub struct Flow<T> {
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
    /// Packets seen.
    pub packets: u64,
    /// Time of the last packet (caller's clock, nanoseconds).
    pub last_seen: u64,
    /// RST seen.
    pub reset: bool,
    /// FIN seen, per [`Side`].
    pub fin: [bool; 2],
    /// A packet came back from the other side (the connection is two-way).
    pub replied: bool,
    /// What the table's user keeps about this connection.
    pub state: T,
}

impl<T: Default> Flow<T> {
    /// A new connection opened by packet `p`.
    pub fn new(id: u64, p: &PacketView<'_>, now: u64) -> Flow<T> {
        Flow {
            id,
            orig_src: p.src,
            orig_sport: p.sport,
            orig_dst: p.dst,
            orig_dport: p.dport,
            proto: p.proto,
            from_syn: p.tcp.is_some_and(|t| t.syn && !t.ack),
            packets: 0,
            last_seen: now,
            reset: false,
            fin: [false; 2],
            replied: false,
            state: T::default(),
        }
    }
}

impl<T> Flow<T> {
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
        self.reset || (self.fin[0] && self.fin[1])
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

struct Slot<T> {
    key: FlowKey,
    flow: Flow<T>,
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
pub struct FlowTable<T> {
    /// Keyed per table (foldhash, random seed): fast, and a flood of
    /// crafted ports cannot aim at one bucket.
    index: HashMap<FlowKey, u32, RandomState>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    lists: [Ends; 3],
    capacity: usize,
    idle_timeout: u64,
    new_timeout: u64,
    close_timeout: u64,
    next_id: u64,
    stats: TableStats,
}

impl<T: Default> FlowTable<T> {
    /// A table of at most `capacity` connections; idle ones leave after
    /// `idle_timeout_ns` of the caller's clock, closed ones after 10 s.
    pub fn new(capacity: usize, idle_timeout_ns: u64) -> FlowTable<T> {
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
    pub fn with_close_timeout(mut self, ns: u64) -> FlowTable<T> {
        self.close_timeout = ns;
        self
    }

    fn timeout_of(&self, s: &Flow<T>) -> u64 {
        if s.is_closed() {
            self.close_timeout
        } else if s.replied {
            self.idle_timeout
        } else {
            self.new_timeout
        }
    }

    fn list_of(s: &Flow<T>) -> usize {
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
    pub fn get_or_insert(&mut self, p: &PacketView<'_>, now: u64) -> &mut Flow<T> {
        let key = FlowKey::of(p);
        let fresh_syn = p.tcp.is_some_and(|t| t.syn && !t.ack);
        let idx = match self.index.get(&key) {
            Some(&i) => {
                let s = &self.slots[i as usize].flow;
                let stale = now.saturating_sub(s.last_seen) > self.timeout_of(s);
                if stale || (fresh_syn && s.is_closed()) {
                    // Port reuse or a stale entry: a new connection instance.
                    let id = self.take_id();
                    self.slots[i as usize].flow = Flow::new(id, p, now);
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
                    flow: Flow::new(id, p, now),
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
        let s = &mut self.slots[idx as usize].flow;
        s.last_seen = now;
        let side = s.side_of(p) as usize;
        s.replied |= side == Side::Reply as usize;
        s.packets += 1;
        if let Some(t) = p.tcp {
            s.reset |= t.rst;
            s.fin[side] |= t.fin;
        }
        let list = Self::list_of(s);
        self.push_front(idx, list);
        &mut self.slots[idx as usize].flow
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
    pub fn for_each(&self, mut f: impl FnMut(&Flow<T>)) {
        for &i in self.index.values() {
            f(&self.slots[i as usize].flow);
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
                if t == NIL || now.saturating_sub(self.slots[t as usize].flow.last_seen) <= limit {
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
        let mut t = FlowTable::<()>::new(3, 1_000);
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
        let mut t = FlowTable::<()>::new(3, 1_000_000).with_close_timeout(10);
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
        let mut t = FlowTable::<()>::new(100, 1_000_000).with_close_timeout(10);
        t.get_or_insert(&v, 0);
        t.get_or_insert(&PacketView::from_ip(&open).unwrap(), 0);
        let b = tcp4([192, 0, 2, 1], 3000, [198, 51, 100, 1], 80, 0, b"");
        t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 50);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().expired_closed, 1);
    }

    #[test]
    fn syn_flood_evicts_new_connections_before_established_ones() {
        let mut t = FlowTable::<()>::new(100, u64::MAX);
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
        let mut t = FlowTable::<()>::new(100, 10);
        let a = tcp4([192, 0, 2, 1], 1000, [198, 51, 100, 1], 80, 0, b"");
        let b = tcp4([192, 0, 2, 1], 1001, [198, 51, 100, 1], 80, 0, b"");
        let id = t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 0).id;
        t.get_or_insert(&PacketView::from_ip(&b).unwrap(), 100);
        assert_eq!(t.len(), 1, "the idle flow was expired");
        assert_ne!(t.get_or_insert(&PacketView::from_ip(&a).unwrap(), 101).id, id);
    }
}
