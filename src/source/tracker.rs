//! The one packet -> connection -> judge step, shared by the live filter's
//! workers, `scan`, the benchmarks and the fuzz runner.
//!
//! Guarantee: a front end that judges a packet does it through
//! [`Tracker::judge`], so what the benchmarks time and what `scan` reports is
//! exactly what the live filter does with the same bytes.

use crate::engine::{ConnState, Connection, Decision, Engine};
use crate::flow::{CtDir, FlowTable};
use crate::packet::{LinkType, NotParsable, PacketView};

/// A connection table and the step that feeds it.
pub struct Tracker {
    table: FlowTable<ConnState>,
}

/// One judged packet: its view, its connection (after judging) and the
/// engine's decision.
pub struct Judged<'t, 'p> {
    /// The parsed packet.
    pub packet: PacketView<'p>,
    /// The connection it belongs to.
    pub conn: &'t mut Connection,
    /// What the engine decided.
    pub decision: Decision,
}

impl Tracker {
    /// A tracker holding at most `capacity` connections, forgetting idle
    /// ones after `idle_timeout_ns` of the caller's clock.
    pub fn new(capacity: usize, idle_timeout_ns: u64) -> Tracker {
        Tracker::with_table(FlowTable::new(capacity, idle_timeout_ns))
    }

    /// A tracker over a table built by the caller (custom timeouts).
    pub fn with_table(table: FlowTable<ConnState>) -> Tracker {
        Tracker { table }
    }

    /// Parses `bytes` (framed as `link`) and finds or creates its
    /// connection, without judging: the baseline the benchmarks subtract.
    #[inline]
    pub fn track<'p>(
        &mut self,
        link: LinkType,
        bytes: &'p [u8],
        now_ns: u64,
    ) -> Result<(PacketView<'p>, &mut Connection), NotParsable> {
        let p = PacketView::from_link(link, bytes)?;
        let conn = self.table.get_or_insert(&p, now_ns);
        Ok((p, conn))
    }

    /// [`Tracker::judge`] for a packet whose direction the kernel's
    /// connection tracking reports (the live filter, which keeps bare SYNs
    /// in the kernel): a connection first seen in the reply direction is
    /// opened by the packet's receiver
    /// ([`crate::flow::FlowTable::get_or_insert_tracked`]). With `dir`
    /// `None` this is exactly [`Tracker::judge`] (the first packet seen
    /// names the opener).
    #[inline]
    pub fn judge_tracked<'p>(
        &mut self,
        engine: &Engine,
        link: LinkType,
        bytes: &'p [u8],
        now_ns: u64,
        dir: Option<CtDir>,
    ) -> Result<Judged<'_, 'p>, NotParsable> {
        let packet = PacketView::from_link(link, bytes)?;
        let conn = self.table.get_or_insert_tracked(&packet, now_ns, dir);
        let decision = engine.judge(&packet, conn);
        Ok(Judged {
            packet,
            conn,
            decision,
        })
    }

    /// Parses, tracks and judges one packet. Bytes that give no TCP/UDP
    /// view return why; the caller decides (the live filter accepts them).
    #[inline]
    pub fn judge<'p>(
        &mut self,
        engine: &Engine,
        link: LinkType,
        bytes: &'p [u8],
        now_ns: u64,
    ) -> Result<Judged<'_, 'p>, NotParsable> {
        self.judge_tracked(engine, link, bytes, now_ns, None)
    }

    /// Judges an already parsed packet (callers that built the view themselves).
    #[inline]
    pub fn judge_view<'p>(&mut self, engine: &Engine, packet: PacketView<'p>, now_ns: u64) -> Judged<'_, 'p> {
        let conn = self.table.get_or_insert(&packet, now_ns);
        let decision = engine.judge(&packet, conn);
        Judged {
            packet,
            conn,
            decision,
        }
    }

    /// The connection table.
    pub fn table(&self) -> &FlowTable<ConnState> {
        &self.table
    }

    /// The connection table, for callers that remove or clear connections.
    pub fn table_mut(&mut self) -> &mut FlowTable<ConnState> {
        &mut self.table
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
