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
//!
//! Table pressure never opens a hole: a TCP connection whose inspection is
//! in progress ([`FlowState::in_progress`]: bytes seen, no decision) is
//! evicted only after closed and handshake-only or settled ones, and when
//! one is dropped anyway (everything near the cold end is in progress, or it
//! timed out) its key is remembered in a bounded set; if it comes back it is
//! not a new connection: [`Flow::evicted_undecided`] is set and the user's
//! [`FlowState::resume_undecided`] decides (the engine blocks it: fail closed).
//!
//! Who opened a connection: a capture has only the packets, so the first
//! packet seen names the opener (normally the SYN). The live filter keeps
//! bare SYNs in the kernel and learns each packet's direction from
//! connection tracking instead ([`CtDir`]): a connection first seen in the
//! reply direction (a server's banner) gets the conntrack original source
//! as its opener, and a closed connection that sends again with payload
//! that does not continue its own stream (port reuse, its SYN kept in the
//! kernel) starts a new connection.

use std::collections::{HashMap, HashSet, VecDeque};
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

/// What the table asks of the state its user keeps per connection.
pub trait FlowState: Default {
    /// True while losing this state would lose work that cannot be redone
    /// (stream inspection with bytes seen and no decision yet): such a TCP
    /// connection is evicted last, and remembered when dropped.
    fn in_progress(&self) -> bool {
        false
    }

    /// Called on the fresh state of a connection that was dropped from the
    /// table while [`FlowState::in_progress`] and is seen again (not with a
    /// new SYN): the user decides what such a connection gets.
    fn resume_undecided(&mut self) {}
}

impl FlowState for () {}

/// Which way a packet travels relative to the connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Same direction as the first packet seen (the opener, when seen from SYN).
    Orig = 0,
    /// The other direction.
    Reply = 1,
}

/// Which way a queued packet travels according to the kernel's connection
/// tracking (the conntrack entry's original or reply direction): it stands
/// in for the SYN that the kernel keeps to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    /// From the connection's opener (conntrack `ORIGINAL`).
    Original,
    /// Towards the opener (conntrack `REPLY`).
    Reply,
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
    /// TCP: the sequence number after the last segment seen, per [`Side`]
    /// (a closed connection's own stream continuing is not a new one).
    pub seq_end: [Option<u32>; 2],
    /// A packet came back from the other side (the connection is two-way).
    pub replied: bool,
    /// This connection was dropped from the table mid-inspection (table
    /// full or timed out) and came back: it is not a new connection.
    pub evicted_undecided: bool,
    /// What the table's user keeps about this connection.
    pub state: T,
}

impl<T: Default> Flow<T> {
    /// A new connection opened by packet `p`.
    pub fn new(id: u64, p: &PacketView<'_>, now: u64) -> Flow<T> {
        Flow::tracked(id, p, now, None)
    }

    /// A new connection first seen with packet `p`: opened by `p`'s sender,
    /// unless conntrack says `p` travels in the reply direction, then by its
    /// receiver.
    pub fn tracked(id: u64, p: &PacketView<'_>, now: u64, dir: Option<CtDir>) -> Flow<T> {
        let reply = dir == Some(CtDir::Reply);
        let ((src, sport), (dst, dport)) = if reply {
            ((p.dst, p.dport), (p.src, p.sport))
        } else {
            ((p.src, p.sport), (p.dst, p.dport))
        };
        Flow {
            id,
            orig_src: src,
            orig_sport: sport,
            orig_dst: dst,
            orig_dport: dport,
            proto: p.proto,
            from_syn: !reply && p.tcp.is_some_and(|t| t.syn && !t.ack),
            packets: 0,
            last_seen: now,
            reset: false,
            fin: [false; 2],
            seq_end: [None; 2],
            replied: false,
            evicted_undecided: false,
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
/// [`NEW`] as stored in a slot.
const NEW_LIST: u8 = 0;
/// Connections with packets in both directions, least recently active at the tail.
const OPEN: usize = 1;
/// Closed connections (RST, or FIN both ways), oldest at the tail.
const CLOSED: usize = 2;
/// Eviction order when the table is full.
const EVICT_ORDER: [usize; 3] = [CLOSED, NEW, OPEN];
/// Entries looked at from the cold end of a list for one that is not in
/// progress, before one in progress is evicted after all.
const EVICT_SCAN: usize = 64;

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
    /// Connections dropped (evicted or timed out) while inspection was in progress.
    pub dropped_undecided: u64,
    /// Such connections seen again (and handed to [`FlowState::resume_undecided`]).
    pub resumed_undecided: u64,
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
    /// Keys of connections dropped while in progress, oldest first, bounded.
    undecided: HashSet<FlowKey, RandomState>,
    undecided_order: VecDeque<FlowKey>,
    undecided_cap: usize,
}

impl<T: FlowState> FlowTable<T> {
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
            undecided: HashSet::with_hasher(RandomState::default()),
            undecided_order: VecDeque::new(),
            undecided_cap: (capacity / 4).clamp(64, 65_536),
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
        self.get_or_insert_tracked(p, now, None)
    }

    /// [`FlowTable::get_or_insert`] with the direction conntrack reports for
    /// `p` (the live filter, whose rules keep bare SYNs in the kernel): a
    /// new connection first seen in the reply direction is opened by `p`'s
    /// receiver, and a closed connection that sends again with payload (not
    /// a FIN or RST) whose sequence number does not continue its own stream
    /// is taken as a new one on the same ports, as a capture takes a fresh
    /// SYN. With `dir` `None` this is exactly
    /// [`FlowTable::get_or_insert`].
    pub fn get_or_insert_tracked(
        &mut self,
        p: &PacketView<'_>,
        now: u64,
        dir: Option<CtDir>,
    ) -> &mut Flow<T> {
        let key = FlowKey::of(p);
        let fresh_syn = p.tcp.is_some_and(|t| t.syn && !t.ack);
        // Without the SYN: payload after both FINs (or a RST) belongs to the
        // next connection on these ports, unless it continues the closed
        // one's own stream (a forged RST or FIN must not restart the
        // inspection mid-stream). A new connection's sequence numbers start
        // anywhere (Linux reusing its own TIME_WAIT starts 64 KiB + 2 past
        // the old end, just outside the window below).
        let data = dir.is_some() && !p.payload.is_empty() && p.tcp.is_some_and(|t| !t.fin && !t.rst);
        let idx = match self.index.get(&key) {
            Some(&i) => {
                let s = &self.slots[i as usize].flow;
                // Only a closed connection can be reopened (checked first:
                // most packets belong to open ones).
                let reopened = s.is_closed() && (fresh_syn || (data && !Self::continues(s, p)));
                let stale = now.saturating_sub(s.last_seen) > self.timeout_of(s);
                if stale || reopened {
                    // Port reuse or a stale entry: a new connection instance.
                    let resumed = stale && !fresh_syn && Self::is_undecided(s);
                    if stale && Self::is_undecided(s) {
                        self.stats.dropped_undecided += 1;
                    }
                    let id = self.take_id();
                    self.slots[i as usize].flow = Flow::tracked(id, p, now, dir);
                    if resumed {
                        self.resume(i);
                    }
                }
                self.unlink(i);
                i
            }
            None => {
                self.expire_some(now);
                if self.index.len() >= self.capacity {
                    let victim = self.pick_victim();
                    self.remove_slot(victim);
                    self.stats.evicted_full += 1;
                }
                let was_undecided = self.undecided.remove(&key);
                let id = self.take_id();
                let slot = Slot {
                    key,
                    flow: Flow::tracked(id, p, now, dir),
                    prev: NIL,
                    next: NIL,
                    list: NEW_LIST,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = slot;
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        // capacity is checked against the table size, which
                        // is far below u32::MAX slots.
                        u32::try_from(self.slots.len() - 1).unwrap_or(NIL)
                    }
                };
                self.index.insert(key, i);
                self.stats.created += 1;
                if was_undecided && !fresh_syn {
                    self.resume(i);
                }
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
            let len = u32::try_from(p.payload.len()).unwrap_or(u32::MAX);
            let end = t
                .seq
                .wrapping_add(len)
                .wrapping_add(u32::from(t.syn) + u32::from(t.fin));
            // The furthest end (wrapping order): retransmissions do not move
            // it back, and neither a RST nor a jump of more than 16 MiB (a
            // forged segment the receiver would discard) moves it on.
            let ahead = s.seq_end[side].is_none_or(|old| {
                let d = end.wrapping_sub(old).cast_signed();
                d > 0 && d <= 1 << 24
            });
            if ahead && !t.rst {
                s.seq_end[side] = Some(end);
            }
        }
        let list = Self::list_of(s);
        self.push_front(idx, list);
        &mut self.slots[idx as usize].flow
    }

    /// Removes `p`'s connection.
    /// Nothing is remembered of it: the caller decided it is done.
    pub fn remove(&mut self, p: &PacketView<'_>) {
        if let Some(&i) = self.index.get(&FlowKey::of(p)) {
            self.drop_slot(i, false);
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

    /// True when TCP packet `p` continues `f`'s stream on its side: its
    /// sequence number within 64 KiB of where that side's last segment ended.
    fn continues(f: &Flow<T>, p: &PacketView<'_>) -> bool {
        const WINDOW: u32 = 1 << 16;
        let side = f.side_of(p) as usize;
        match (p.tcp, f.seq_end[side]) {
            (Some(t), Some(end)) => t.seq.wrapping_sub(end).cast_signed().unsigned_abs() <= WINDOW,
            _ => false,
        }
    }

    /// True for a TCP connection whose inspection is in progress.
    fn is_undecided(f: &Flow<T>) -> bool {
        f.proto == Proto::Tcp && f.state.in_progress()
    }

    /// Marks slot `i` as a connection that was dropped undecided and is back.
    fn resume(&mut self, i: u32) {
        let f = &mut self.slots[i as usize].flow;
        f.evicted_undecided = true;
        f.state.resume_undecided();
        self.stats.resumed_undecided += 1;
    }

    /// The entry to evict from a full table: the oldest closed one, else
    /// the coldest new one not in progress, else the coldest open one not in
    /// progress (looking at most [`EVICT_SCAN`] entries per list), else the
    /// coldest of all (remembered as dropped undecided).
    fn pick_victim(&self) -> u32 {
        if self.lists[CLOSED].tail != NIL {
            return self.lists[CLOSED].tail;
        }
        for list in [NEW, OPEN] {
            let mut i = self.lists[list].tail;
            for _ in 0..EVICT_SCAN {
                if i == NIL {
                    break;
                }
                let slot = &self.slots[i as usize];
                if !Self::is_undecided(&slot.flow) {
                    return i;
                }
                i = slot.prev;
            }
        }
        EVICT_ORDER
            .iter()
            .map(|&l| self.lists[l].tail)
            .find(|&t| t != NIL)
            .unwrap_or(NIL)
    }

    /// Remembers `key` as dropped while in progress (oldest forgotten first).
    fn remember_undecided(&mut self, key: FlowKey) {
        self.stats.dropped_undecided += 1;
        if self.undecided.insert(key) {
            self.undecided_order.push_back(key);
        }
        while self.undecided_order.len() > self.undecided_cap {
            if let Some(old) = self.undecided_order.pop_front() {
                self.undecided.remove(&old);
            }
        }
    }

    /// Connections remembered as dropped undecided (bounded).
    pub fn undecided_remembered(&self) -> usize {
        self.undecided.len()
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

    /// Evicts or expires slot `i`, remembering it when it was undecided.
    fn remove_slot(&mut self, i: u32) {
        self.drop_slot(i, true);
    }

    fn drop_slot(&mut self, i: u32, remember: bool) {
        if i == NIL {
            return;
        }
        self.unlink(i);
        let key = self.slots[i as usize].key;
        if remember && Self::is_undecided(&self.slots[i as usize].flow) {
            self.remember_undecided(key);
        }
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
            s.list = u8::try_from(list).unwrap_or(NEW_LIST);
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

    /// State whose "in progress" flag the test sets by hand.
    #[derive(Debug, Default)]
    struct Busy {
        in_progress: bool,
        resumed: bool,
    }

    impl FlowState for Busy {
        fn in_progress(&self) -> bool {
            self.in_progress
        }
        fn resume_undecided(&mut self) {
            self.resumed = true;
        }
    }

    fn syn4(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(src, [198, 51, 100, 1], 64)
            .tcp(sport, 80, 0, 65535)
            .syn()
            .write(&mut out, b"")
            .unwrap();
        out
    }

    fn view(b: &[u8]) -> PacketView<'_> {
        PacketView::from_ip(b).unwrap()
    }

    #[test]
    fn syn_burst_never_evicts_a_connection_mid_inspection() {
        let mut t = FlowTable::<Busy>::new(8, u64::MAX);
        // Half a request sent, nothing heard back: new list, in progress.
        let half = tcp4(
            [192, 0, 2, 10],
            40000,
            [198, 51, 100, 1],
            80,
            1,
            b"POST /gateway/gate",
        );
        let f = t.get_or_insert(&view(&half), 0);
        f.state.in_progress = true;
        let id = f.id;
        for i in 0..200u16 {
            let syn = syn4([192, 0, 2, 10], 41000 + i);
            t.get_or_insert(&view(&syn), 1 + u64::from(i));
            assert!(t.len() <= 8);
        }
        let rest = tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 80, 19, b"way.dll");
        let f = t.get_or_insert(&view(&rest), 500);
        assert_eq!(f.id, id, "the connection under inspection stayed");
        assert!(!f.evicted_undecided);
        assert_eq!(t.stats().dropped_undecided, 0);
        assert!(t.stats().evicted_full >= 190);
    }

    #[test]
    fn conntrack_direction_names_the_opener_without_the_syn() {
        let mut t = FlowTable::<Busy>::new(8, u64::MAX);
        // A server's banner is the first packet seen: the client opened it.
        let banner = tcp4([198, 51, 100, 1], 25, [192, 0, 2, 10], 40000, 1, b"220 mail\r\n");
        let f = t.get_or_insert_tracked(&view(&banner), 0, Some(CtDir::Reply));
        assert_eq!(
            (f.orig_src, f.orig_sport, f.orig_dport),
            ("192.0.2.10".parse().unwrap(), 40000, 25)
        );
        assert_eq!(f.side_of(&view(&banner)), Side::Reply);
        assert!(!f.from_syn && f.replied);
        let helo = tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 25, 1, b"HELO x\r\n");
        let id = f.id;
        let f = t.get_or_insert_tracked(&view(&helo), 1, Some(CtDir::Original));
        assert_eq!((f.id, f.side_of(&view(&helo))), (id, Side::Orig));
        // Without conntrack (a capture) the first packet seen opens it.
        let mut t = FlowTable::<Busy>::new(8, u64::MAX);
        let f = t.get_or_insert(&view(&banner), 0);
        assert_eq!((f.orig_sport, f.orig_dport), (25, 40000));
    }

    #[test]
    fn payload_on_a_closed_connection_is_the_next_one_on_its_ports() {
        let o = Some(CtDir::Original);
        let r = Some(CtDir::Reply);
        // Client to server and back, port 40000 to 80.
        let c2s =
            |seq: u32, payload: &[u8]| tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 80, seq, payload);
        let s2c =
            |seq: u32, payload: &[u8]| tcp4([198, 51, 100, 1], 80, [192, 0, 2, 10], 40000, seq, payload);
        let get = c2s(1, b"GET / HTTP/1.0\r\n\r\n");
        let mut fin_c = c2s(20, b"");
        fin_c[33] |= 0x01;
        let mut fin_s = s2c(9, b"");
        fin_s[33] |= 0x01;
        for (dir, new) in [(o, true), (None, false)] {
            let mut t = FlowTable::<Busy>::new(8, u64::MAX);
            let id = t.get_or_insert_tracked(&view(&get), 0, dir).id;
            // Payload on an open connection: the same one.
            assert_eq!(t.get_or_insert_tracked(&view(&get), 1, dir).id, id);
            t.get_or_insert_tracked(&view(&fin_c), 2, dir);
            let f = t.get_or_insert_tracked(&view(&fin_s), 3, dir.map(|_| CtDir::Reply));
            assert!(f.is_closed());
            // A late FIN is still the old connection.
            assert_eq!(t.get_or_insert_tracked(&view(&fin_c), 4, dir).id, id);
            // Same ports again, the SYN kept in the kernel: payload with
            // sequence numbers of its own tells (a capture without the SYN
            // cannot tell).
            let again = c2s(3_000_000, b"GET / HTTP/1.0\r\n\r\n");
            let f = t.get_or_insert_tracked(&view(&again), 5, dir);
            assert_eq!(f.id != id, new, "{dir:?}");
            assert_eq!(f.is_closed(), !new);
            assert!(!f.evicted_undecided);
        }
        // A forged RST, then the same stream going on: not a new connection.
        let mut t = FlowTable::<Busy>::new(8, u64::MAX);
        let id = t.get_or_insert_tracked(&view(&get), 0, o).id;
        let mut rst = c2s(900_000, b"");
        rst[33] |= 0x04;
        assert!(t.get_or_insert_tracked(&view(&rst), 1, o).is_closed());
        let next = c2s(19, b"more of the request");
        assert_eq!(t.get_or_insert_tracked(&view(&next), 2, o).id, id);
        // Linux reusing its TIME_WAIT tuple starts 64 KiB + 2 past the old end.
        let reused = c2s(38 + 65_538, b"GET / HTTP/1.0\r\n\r\n");
        assert_ne!(t.get_or_insert_tracked(&view(&reused), 3, o).id, id);
        // A server-first reuse: the banner opens it, oriented by conntrack.
        let mut t = FlowTable::<Busy>::new(8, u64::MAX);
        t.get_or_insert_tracked(&view(&get), 0, o);
        t.get_or_insert_tracked(&view(&fin_c), 1, o);
        t.get_or_insert_tracked(&view(&fin_s), 2, r);
        let banner = s2c(5_000_000, b"hello\r\n");
        let f = t.get_or_insert_tracked(&view(&banner), 3, r);
        assert!(!f.is_closed());
        assert_eq!(f.orig_sport, 40000);
    }

    #[test]
    fn a_connection_dropped_undecided_comes_back_flagged_not_new() {
        let mut t = FlowTable::<Busy>::new(4, u64::MAX);
        let data = |port: u16| {
            tcp4(
                [192, 0, 2, 10],
                port,
                [198, 51, 100, 1],
                80,
                1,
                b"POST /gateway/gate",
            )
        };
        // Every entry in progress: a fifth connection must evict one.
        for (n, port) in (40000..40005u16).enumerate() {
            let b = data(port);
            t.get_or_insert(&view(&b), n as u64).state.in_progress = true;
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.stats().dropped_undecided, 1);
        assert_eq!(t.undecided_remembered(), 1);
        // The coldest (port 40000) went; its next segment is not a new,
        // unknown connection.
        let rest = tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 80, 19, b"way.dll");
        let f = t.get_or_insert(&view(&rest), 10);
        assert!(f.evicted_undecided && f.state.resumed);
        assert_eq!(t.stats().resumed_undecided, 1);
        // Coming back took it off the list; its slot cost another one.
        assert_eq!(t.stats().dropped_undecided, 2);
        assert_eq!(t.undecided_remembered(), 1);

        // A fresh SYN on a remembered key is a new connection.
        let mut t = FlowTable::<Busy>::new(1, u64::MAX);
        let b = data(40010);
        t.get_or_insert(&view(&b), 0).state.in_progress = true;
        let b2 = data(40011);
        t.get_or_insert(&view(&b2), 1);
        let syn = syn4([192, 0, 2, 10], 40010);
        let f = t.get_or_insert(&view(&syn), 2);
        assert!(!f.evicted_undecided && !f.state.resumed);

        // UDP keeps no state across datagrams: never remembered.
        let mut t = FlowTable::<Busy>::new(1, u64::MAX);
        let u = |port: u16| {
            let mut out = Vec::new();
            etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 1], 64)
                .udp(port, 53)
                .write(&mut out, b"x")
                .unwrap();
            out
        };
        let (a, b) = (u(5000), u(5001));
        t.get_or_insert(&view(&a), 0).state.in_progress = true;
        t.get_or_insert(&view(&b), 1);
        assert!(!t.get_or_insert(&view(&a), 2).evicted_undecided);
    }

    #[test]
    fn timed_out_mid_inspection_is_remembered_too_and_memory_stays_bounded() {
        let mut t = FlowTable::<Busy>::new(100, 10);
        let a = tcp4(
            [192, 0, 2, 10],
            40000,
            [198, 51, 100, 1],
            80,
            1,
            b"POST /gateway/gate",
        );
        t.get_or_insert(&view(&a), 0).state.in_progress = true;
        // Silent past the timeout, then the rest: flagged, not a new connection.
        let rest = tcp4([192, 0, 2, 10], 40000, [198, 51, 100, 1], 80, 19, b"way.dll");
        let f = t.get_or_insert(&view(&rest), 100);
        assert!(f.evicted_undecided && f.state.resumed);
        // Expired by another connection's arrival, then back.
        let b = tcp4(
            [192, 0, 2, 10],
            40001,
            [198, 51, 100, 1],
            80,
            1,
            b"POST /gateway/gate",
        );
        t.get_or_insert(&view(&b), 200).state.in_progress = true;
        let c = tcp4([192, 0, 2, 10], 40002, [198, 51, 100, 1], 80, 1, b"");
        t.get_or_insert(&view(&c), 300);
        assert_eq!(
            t.undecided_remembered(),
            1,
            "40001 (40000 was taken over in place)"
        );
        let back = tcp4([192, 0, 2, 10], 40001, [198, 51, 100, 1], 80, 19, b"way.dll");
        assert!(t.get_or_insert(&view(&back), 301).evicted_undecided);
        // The memory of dropped connections is bounded.
        let mut t = FlowTable::<Busy>::new(4, u64::MAX);
        let mut bufs = Vec::new();
        for i in 0..1000u16 {
            bufs.push(tcp4([192, 0, 2, 10], 10000 + i, [198, 51, 100, 1], 80, 1, b"x"));
        }
        for (n, b) in bufs.iter().enumerate() {
            t.get_or_insert(&view(b), n as u64).state.in_progress = true;
        }
        assert_eq!(t.stats().dropped_undecided, 996);
        assert_eq!(t.undecided_remembered(), 64);
    }
}
