//! What the engine remembers about one connection between its packets.
//!
//! The connection table ([`crate::flow::FlowTable`]) holds one [`ConnState`]
//! per connection next to the connection's identity; everything here is the
//! engine's own memory: the decision so far, and per direction where stream
//! inspection stands (sequence number, carried-over bytes, parser states,
//! held segments). Memory per connection is small and bounded: held
//! segments and a ClientHello being collected are boxed, capped, and freed
//! as soon as the connection is settled ([`ConnState::release_inspection`]).

use crate::engine::hello::HelloAssembler;
use crate::engine::http::HttpState;
use crate::engine::matcher::StartState;
use crate::engine::msnp::MsnpDir;
use crate::engine::quic::QuicHello;
use crate::engine::tunnel::{Lines, Socks, StartTls};
use crate::engine::verdict::{MatchedRequest, Reason};
use crate::flow::{Flow, FlowState};
use crate::policy::AppSet;

pub use crate::engine::matcher::MAX_CARRY;

/// A connection as the engine sees it: identity from the table, state here.
pub type Connection = Flow<ConnState>;

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
    /// Segments held because they arrived ahead of a gap (rare; boxed so the
    /// common case costs one pointer).
    pub reorder: Option<Box<Reorder>>,
    /// Times the stream skipped a gap because the reorder buffer was full.
    pub resyncs: u32,
    /// In-order payload bytes since the current stream started: the
    /// connection's start, or where a tunnel (CONNECT, SOCKS, STARTTLS,
    /// Upgrade) began inside it. Depth counts from here.
    pub unit_bytes: u64,
    /// A TLS ClientHello being collected at the stream start (only when
    /// host rules exist). Plug point for a fuller hello parser.
    pub hello: Option<Box<HelloAssembler>>,
    /// The ClientHello at this stream's start offered Encrypted Client Hello.
    pub hello_ech: bool,
    /// The stream start was looked at for a ClientHello.
    pub hello_done: bool,
    /// MSNP line reader and what the stream is known to be.
    pub msnp: MsnpDir,
    /// Retransmissions whose bytes differed from the inspected ones.
    pub conflicts: u32,
    /// A short all-zero segment not yet inspected: (sequence, length). Some
    /// stacks send a few zero bytes and then real data at the same sequence
    /// number; the zeros count only once the stream goes on past them.
    pub zeros: Option<(u32, u8)>,
    /// A SOCKS negotiation this direction started as the client (kept
    /// across the restart of its stream; the other direction reads it).
    pub socks: Option<Box<Socks>>,
    /// The SOCKS probe looked at this stream's start.
    pub socks_done: bool,
    /// When non-zero, the tail holds a virtual newline (an HTTP body ended,
    /// so the next message starts a line) followed by `tail_virtual - 1`
    /// stream bytes.
    pub tail_virtual: u8,
    /// Line starts for the STARTTLS probe (commands).
    pub lines: Lines,
    /// Line starts for the STARTTLS probe (answers).
    pub answers: Lines,
    /// This direction is a server that was asked to STARTTLS.
    pub starttls: StartTls,
    /// The stream was restarted as a tunnel by this direction's own request
    /// (CONNECT, SOCKS): the reply that opens it must not restart it again.
    pub tunnel_requested: bool,
    /// What a message rule that held on this direction judged (host, URL):
    /// set only when it blocks, for events ([`ConnState::matched_request`]).
    pub matched: Option<Box<MatchedRequest>>,
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
            reorder: None,
            resyncs: 0,
            unit_bytes: 0,
            hello: None,
            hello_ech: false,
            hello_done: false,
            msnp: MsnpDir::default(),
            conflicts: 0,
            zeros: None,
            socks: None,
            socks_done: false,
            tail_virtual: 0,
            lines: Lines::default(),
            answers: Lines::default(),
            starttls: StartTls::None,
            tunnel_requested: false,
            matched: None,
        }
    }
}

impl DirState {
    /// The bytes from here on are a new stream (a tunnel opened inside the
    /// connection, or a direction that stopped speaking HTTP): stream-start, line-start, HTTP, TLS and tunnel probes
    /// start over and the depth counts from here. TCP position, held
    /// segments and counters are kept. `own_request`: this side asked for
    /// the tunnel (CONNECT, SOCKS) and the other side has not answered yet,
    /// or left HTTP while the other side still numbers its replies: the
    /// request count goes on.
    pub fn restart_stream(&mut self, own_request: bool) {
        let mut fresh = DirState {
            next_seq: self.next_seq,
            bytes: self.bytes,
            payload_packets: self.payload_packets,
            reorder: self.reorder.take(),
            resyncs: self.resyncs,
            socks: self.socks.take(),
            conflicts: self.conflicts,
            ..DirState::default()
        };
        // Keep the HTTP walker's buffers.
        fresh.http = HttpState::restarted(std::mem::take(&mut self.http), own_request);
        *self = fresh;
    }

    /// Forgets match progress (after a policy reload), keeping TCP position.
    pub fn reset_matching(&mut self) {
        let seq = self.next_seq;
        let (bytes, pkts, unit) = (self.bytes, self.payload_packets, self.unit_bytes);
        let (msnp, conflicts) = (self.msnp.mid_stream(), self.conflicts);
        let http = std::mem::take(&mut self.http).across_reload();
        *self = DirState::default();
        self.http = http;
        self.msnp = msnp;
        self.conflicts = conflicts;
        self.next_seq = seq;
        self.bytes = bytes;
        self.payload_packets = pkts;
        self.unit_bytes = unit;
        self.hello_done = true;
        self.socks_done = true;
        // Mid-stream after a reload: neither line start nor stream start.
        self.tail_len = 0;
        self.start.begun = true;
        self.start.alive = 0;
    }
}

/// The engine's memory of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// Apps that apply (set up on the first packet).
    pub apps: AppSet,
    /// Engine generation the matching state belongs to (0: not set up).
    pub engine_gen: u64,
    /// The decision so far.
    pub decision: FlowDecision,
    /// Per-direction state, indexed by [`crate::flow::Side`].
    pub dirs: [DirState; 2],
    /// QUIC Initial inspection of the opener's datagrams (UDP only; boxed,
    /// present only while an attempt is being followed).
    pub quic: Option<Box<QuicHello>>,
    /// The opener's datagrams were looked at for QUIC and the answer is in.
    pub quic_done: bool,
    /// The client's hello (TLS or QUIC) offered Encrypted Client Hello: its
    /// server name is the provider's, not the real one.
    pub ech: bool,
    /// The reply direction was handed to the kernel (its packets bypass the
    /// queue) while the originator's payload is still judged.
    pub reply_settled: bool,
}

impl ConnState {
    /// The host and URL a message rule blocked this connection for; `None`
    /// unless the connection is blocked by a message rule.
    pub fn matched_request(&self) -> Option<&MatchedRequest> {
        if !matches!(self.decision, FlowDecision::Blocked(Reason::Rule(_))) {
            return None;
        }
        self.dirs.iter().find_map(|d| d.matched.as_deref())
    }

    /// Opens again a decision of an older policy that a new one may change:
    /// `Clean` inspects again from here (mid-stream, depth counted afresh),
    /// `Ignored` starts over as a connection first seen now. `Blocked`
    /// stays blocked: a reload never lets a blocked connection through.
    pub fn reopen(&mut self) {
        match self.decision {
            FlowDecision::Clean => {
                self.decision = FlowDecision::Inspecting;
                for d in &mut self.dirs {
                    d.bytes = 0;
                    d.payload_packets = 0;
                    // Segments were not followed while clean: pick the
                    // stream up again at the next one seen.
                    d.next_seq = None;
                }
            }
            FlowDecision::Ignored => {
                self.decision = FlowDecision::Inspecting;
                self.dirs = Default::default();
                self.engine_gen = 0;
            }
            FlowDecision::Blocked(_) | FlowDecision::Inspecting => {}
        }
    }

    /// Frees what only inspection needed (held segments, a ClientHello
    /// being collected, HTTP fields) once the connection is settled.
    pub fn release_inspection(&mut self) {
        for d in &mut self.dirs {
            d.reorder = None;
            d.hello = None;
            d.socks = None;
            d.http = HttpState::default();
        }
        self.quic = None;
    }
}

impl FlowState for ConnState {
    /// Inspection has seen bytes and decided nothing yet: losing this state
    /// would let the rest of the stream be judged as a new connection.
    fn in_progress(&self) -> bool {
        self.decision == FlowDecision::Inspecting
            && self
                .dirs
                .iter()
                .any(|d| d.bytes > 0 || d.reorder.is_some() || d.hello.is_some())
    }

    /// Dropped from the table mid-inspection and back: fail closed. The
    /// bytes already passed cannot be inspected again, so the connection is
    /// blocked as an evasion (table pressure hides a stream's start).
    fn resume_undecided(&mut self) {
        self.decision = FlowDecision::Blocked(Reason::Evasion);
    }
}
