//! A queue worker: receives queued packets, judges each through the shared
//! [`Tracker`] step, and answers with a verdict (and a connection mark for
//! the kernel fast path).
//!
//! Guarantees:
//! - every packet received gets exactly one verdict, on every path: a
//!   packet that cannot be parsed is accepted, a judging panic is caught and
//!   answered with the fail-mode verdict, and a verdict the kernel refuses is
//!   counted (a packet dropped without a verdict would stay stuck in the
//!   kernel);
//! - verdicts leave in the order packets arrived on each queue (one worker
//!   per queue, judged and answered in turn), which keeps the kernel's
//!   queue walk short; the NFQUEUE source batches runs of plain accepts
//!   into one message and sends them before any other verdict and before
//!   it waits ([`crate::source::nfqueue::netlink`]), so the order holds;
//! - a connection's fate is handed to the kernel once: the settling packet
//!   gets `NF_REPEAT` with appwall's mark bits ([`crate::kernel::marks`]);
//!   the mangle chain saves that mark to conntrack and drops or returns, so
//!   the rest of the connection never leaves the kernel;
//! - no lock and no allocation per packet: the engine is read through an
//!   `arc_swap` cache, counters are this worker's own relaxed atomics.
//!
//! The loop is written against [`PacketSource`] so it can be driven with
//! synthetic packets in tests; [`crate::source::nfqueue::NfqSource`] is the
//! kernel-backed one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;
use crossbeam_channel::{Sender, TrySendError};

use crate::daemon::events::BlockEvent;
use crate::daemon::reset::{self, ResetSender};
use crate::daemon::stages::Stage;
use crate::daemon::stats::{self, WorkerStats, bump};
use crate::engine::{Engine, FlowMark, Reason, Verdict};
use crate::kernel::marks::MarkBits;
use crate::log::{Level, log};
use crate::packet::LinkType;
use crate::source::{CtDir, PacketSource, QueueError, QueueVerdict, Received, Tracker};

/// The engine in force, swapped whole on reload.
pub type EngineHandle = Arc<ArcSwap<Engine>>;

/// Settings of one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Queue number (for counters and events).
    pub queue: u16,
    /// Connection-mark bits, as in the installed rules.
    pub marks: MarkBits,
    /// Verdict for a packet whose judging failed: drop when fail-closed.
    pub fail_closed: bool,
    /// Connection table capacity.
    pub max_flows: usize,
    /// Idle timeout of a connection, nanoseconds.
    pub flow_timeout_ns: u64,
    /// Accept every packet without judging it and never mark a connection,
    /// so every packet keeps being queued: measures the queue path alone.
    pub accept_all: bool,
    /// Judge every packet but never hand a connection to the kernel
    /// (no `NF_REPEAT` marks): blocked packets are dropped, clean accepted,
    /// and the rest of the connection keeps being queued.
    pub no_fast_path: bool,
    /// Record per-stage latencies into the worker's
    /// [`WorkerStats::stages`] ([`crate::daemon::stages`]).
    pub stage_timings: bool,
}

/// One queue's worker: owns its source and connection table (the kernel
/// keeps a connection on one queue, so the table needs no lock).
pub struct Worker<S: PacketSource> {
    source: S,
    engine: Cache<EngineHandle, Arc<Engine>>,
    tracker: Tracker,
    stats: Arc<WorkerStats>,
    events: Option<Sender<BlockEvent>>,
    cfg: WorkerConfig,
    epoch: Instant,
    draining: bool,
    resets: Option<Arc<ResetSender>>,
    heartbeat: Option<Arc<AtomicU64>>,
}

impl<S: PacketSource> Worker<S> {
    /// A worker reading `source`, judging with the engine in `engine`.
    pub fn new(
        source: S,
        engine: EngineHandle,
        stats: Arc<WorkerStats>,
        events: Option<Sender<BlockEvent>>,
        cfg: WorkerConfig,
    ) -> Worker<S> {
        Worker {
            source,
            engine: Cache::new(engine),
            tracker: Tracker::new(cfg.max_flows, cfg.flow_timeout_ns),
            stats,
            events,
            cfg,
            epoch: Instant::now(),
            draining: false,
            resets: None,
            heartbeat: None,
        }
    }

    /// Answers each blocked TCP connection with a reset to both sides
    /// ([`crate::daemon::reset`]) through `sender`.
    pub fn with_resets(mut self, sender: Arc<ResetSender>) -> Worker<S> {
        self.resets = Some(sender);
        self
    }

    /// Bumps `beat` once per turn of the receive loop (which wakes at
    /// least every receive timeout): the watchdog's sign of life
    /// ([`crate::daemon::notify::Heartbeats`]).
    pub fn with_heartbeat(mut self, beat: Arc<AtomicU64>) -> Worker<S> {
        self.heartbeat = Some(beat);
        self
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The source (tests inspect the verdicts a mock collected).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Judges one packet's bytes. Never fails: unparsable bytes are accepted.
    pub fn decide(&mut self, bytes: &[u8], mark: u32) -> QueueVerdict {
        self.decide_tracked(bytes, mark, None)
    }

    /// [`Worker::decide`] with the packet's conntrack direction, which
    /// names the opener of a connection whose SYN stayed in the kernel.
    pub fn decide_tracked(&mut self, bytes: &[u8], mark: u32, dir: Option<CtDir>) -> QueueVerdict {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let engine = self.engine.load();
        let Ok(j) = self
            .tracker
            .judge_tracked(engine, LinkType::RawIp, bytes, now, dir)
        else {
            self.stats
                .count(bytes.len(), Verdict::Accept, &Reason::Unparsable);
            return QueueVerdict::Accept;
        };
        let (mut d, flow) = (j.decision, j.conn);
        if flow.evicted_undecided && flow.packets == 1 && d.verdict == Verdict::Drop && d.mark.is_none() {
            // Dropped from the table mid-inspection and back (blocked by
            // the engine's state, fail closed): hand it to the kernel as
            // blocked, with its event, like any other blocked connection.
            d = d.marked(FlowMark::Blocked);
        }
        self.stats.count(bytes.len(), d.verdict, &d.reason);
        if d.conflict {
            bump(&self.stats.conflicts);
        }
        if d.mark.is_some() && flow.state.ech {
            // Once per connection: the mark settles it once.
            bump(&self.stats.ech_connections);
        }
        let m = self.cfg.marks;
        let v = match (d.mark, d.verdict) {
            (Some(FlowMark::Blocked), _) => {
                bump(&self.stats.marked_blocked);
                bump(&self.stats.blocked_by_app[stats::app_index(&d.reason)]);
                if let Some(sender) = &self.resets {
                    for r in reset::resets_for(bytes) {
                        bump(if sender.send(&r) {
                            &self.stats.resets_sent
                        } else {
                            &self.stats.reset_errors
                        });
                    }
                }
                if let Some(tx) = &self.events {
                    let ev = BlockEvent {
                        time: SystemTime::now(),
                        queue: self.cfg.queue,
                        flow_id: (u64::from(self.cfg.queue) << 48) | (flow.id & ((1 << 48) - 1)),
                        proto: flow.proto,
                        src: flow.orig_src,
                        sport: flow.orig_sport,
                        dst: flow.orig_dst,
                        dport: flow.orig_dport,
                        reason: d.reason,
                        engine: Arc::clone(engine),
                        request: flow.state.matched_request().cloned().map(Box::new),
                    };
                    if let Err(TrySendError::Full(_)) = tx.try_send(ev) {
                        bump(&self.stats.events_dropped);
                    }
                }
                if self.draining || self.cfg.no_fast_path {
                    QueueVerdict::Drop
                } else {
                    QueueVerdict::Repeat(m.blocked_mark(mark))
                }
            }
            (Some(FlowMark::Clean), _) => {
                bump(&self.stats.marked_clean);
                if self.draining || self.cfg.no_fast_path {
                    QueueVerdict::Accept
                } else {
                    QueueVerdict::Repeat(m.clean_mark(mark))
                }
            }
            // Replies judged clean while the client may still send requests:
            // the kernel takes the reply direction, requests stay queued.
            (None, Verdict::Accept) if d.settle_reply && !self.draining && !self.cfg.no_fast_path => {
                QueueVerdict::Repeat(m.reply_clean_mark(mark))
            }
            (None, Verdict::Accept) => QueueVerdict::Accept,
            (None, Verdict::Drop) => QueueVerdict::Drop,
        };
        self.stats.flows.store(self.tracker.len() as u64, Relaxed);
        let t = self.tracker.table().stats();
        self.stats.dropped_undecided.store(t.dropped_undecided, Relaxed);
        self.stats.resumed_undecided.store(t.resumed_undecided, Relaxed);
        v
    }

    /// Judges and answers one packet.
    pub fn handle(&mut self, p: S::Packet) {
        let timed = self.cfg.stage_timings;
        if timed && let Some(t) = S::timestamp(&p) {
            self.stats.stages.record_since(Stage::QueueWait, t);
        }
        if S::is_gso(&p) {
            bump(&self.stats.gso);
        }
        if S::is_truncated(&p) {
            bump(&self.stats.truncated);
        }
        let bytes = S::payload(&p);
        if self.cfg.accept_all {
            // The cost of the queue path itself: no parsing, no table, no mark.
            bump(&self.stats.packets);
            self.stats.bytes.fetch_add(bytes.len() as u64, Relaxed);
            self.send_timed(p, QueueVerdict::Accept, timed);
            return;
        }
        let mark = S::mark(&p);
        // The rules mark reply-direction packets (kernel/marks.rs): the
        // opener of a connection whose SYN stayed in the kernel.
        let dir = if self.cfg.marks.is_queued_reply(mark) {
            CtDir::Reply
        } else {
            CtDir::Original
        };
        let judging = timed.then(Instant::now);
        let v = match catch_unwind(AssertUnwindSafe(|| self.decide_tracked(bytes, mark, Some(dir)))) {
            Ok(v) => v,
            Err(_) => {
                // The table may be half-updated: start afresh, answer the packet.
                bump(&self.stats.panics);
                self.tracker = Tracker::new(self.cfg.max_flows, self.cfg.flow_timeout_ns);
                if self.cfg.fail_closed {
                    QueueVerdict::Drop
                } else {
                    QueueVerdict::Accept
                }
            }
        };
        if let Some(t) = judging {
            self.stats.stages.record(Stage::Judge, t.elapsed());
        }
        self.send_timed(p, v, timed);
    }

    /// [`Self::send`], timed as the verdict stage when `timed`.
    fn send_timed(&mut self, p: S::Packet, v: QueueVerdict, timed: bool) {
        if timed {
            let t = Instant::now();
            self.send(p, v);
            self.stats.stages.record(Stage::Verdict, t.elapsed());
        } else {
            self.send(p, v);
        }
    }

    /// Sends a verdict; a refused one is counted and logged sparsely.
    fn send(&mut self, p: S::Packet, v: QueueVerdict) {
        if let Err(e) = self.source.verdict(p, v) {
            bump(&self.stats.verdict_errors);
            let n = self.stats.verdict_errors.load(Relaxed);
            if n.is_power_of_two() {
                log(Level::Warning, format_args!("{e} ({n} so far)"));
            }
        }
    }

    /// Runs until `stop` is set, then answers whatever is still queued.
    /// Returns an error only when the source fails for good.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), QueueError> {
        let mut failures = 0u32;
        while !stop.load(Relaxed) {
            if let Some(b) = &self.heartbeat {
                b.fetch_add(1, Relaxed);
            }
            match self.source.recv() {
                Ok(Received::Packet(p)) => {
                    failures = 0;
                    self.handle(p);
                }
                Ok(Received::Idle) => failures = 0,
                Ok(Received::Malformed) => bump(&self.stats.recv_errors),
                // The kernel refused a verdict: counted, not a receive failure.
                Err(QueueError::Verdict { .. }) => bump(&self.stats.verdict_errors),
                Ok(Received::Overrun) => {
                    bump(&self.stats.overruns);
                    let n = self.stats.overruns.load(Relaxed);
                    if n.is_power_of_two() {
                        log(
                            Level::Warning,
                            format_args!(
                                "queue {}: socket buffer overrun ({n} so far): raise --rcvbuf or --queues",
                                self.cfg.queue
                            ),
                        );
                    }
                }
                Err(e) => {
                    bump(&self.stats.recv_errors);
                    failures += 1;
                    if failures >= 100 {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.drain();
        Ok(())
    }

    /// Answers what is left without waiting; the rules are gone by now, so
    /// decisions are plain accept/drop.
    pub fn drain(&mut self) {
        self.draining = true;
        self.source.start_draining();
        for _ in 0..1_000_000 {
            match self.source.recv() {
                Ok(Received::Packet(p)) => self.handle(p),
                Ok(Received::Overrun) => bump(&self.stats.overruns),
                Ok(Received::Malformed) => bump(&self.stats.recv_errors),
                Err(QueueError::Verdict { .. }) => bump(&self.stats.verdict_errors),
                Ok(Received::Idle) | Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::packet::tests::tcp4;
    use crate::policy::{AppLibrary, HostsFile, Policy};
    use std::collections::VecDeque;
    use std::io;
    use std::path::Path;

    /// Synthetic packets in, verdicts recorded.
    #[derive(Default)]
    struct Mock {
        input: VecDeque<(Vec<u8>, u32)>,
        verdicts: Vec<QueueVerdict>,
        fail_verdicts: bool,
    }

    impl PacketSource for Mock {
        type Packet = (Vec<u8>, u32);
        fn recv(&mut self) -> Result<Received<Self::Packet>, QueueError> {
            Ok(self.input.pop_front().map_or(Received::Idle, Received::Packet))
        }
        fn payload(p: &Self::Packet) -> &[u8] {
            &p.0
        }
        fn mark(p: &Self::Packet) -> u32 {
            p.1
        }
        fn is_gso(p: &Self::Packet) -> bool {
            p.0.len() > 1500
        }
        fn is_truncated(_: &Self::Packet) -> bool {
            false
        }
        fn verdict(&mut self, _: Self::Packet, v: QueueVerdict) -> Result<(), QueueError> {
            self.verdicts.push(v);
            if self.fail_verdicts {
                return Err(QueueError::Verdict {
                    queue: 0,
                    source: io::Error::other("test"),
                });
            }
            Ok(())
        }
    }

    fn engine(hosts: &str) -> EngineHandle {
        let lib = AppLibrary::embedded().unwrap();
        let h = HostsFile::parse(Path::new("hosts"), hosts).unwrap();
        let p = Policy::new(lib, &h, None).unwrap();
        Arc::new(ArcSwap::from_pointee(
            Engine::new(p, EngineConfig::default()).unwrap(),
        ))
    }

    fn worker(mock: Mock, e: EngineHandle, tx: Option<Sender<BlockEvent>>) -> Worker<Mock> {
        let cfg = WorkerConfig {
            queue: 3,
            marks: MarkBits::default(),
            fail_closed: false,
            max_flows: 1000,
            flow_timeout_ns: 60_000_000_000,
            accept_all: false,
            no_fast_path: false,
            stage_timings: false,
        };
        Worker::new(mock, e, Arc::new(WorkerStats::new(3)), tx, cfg)
    }

    fn worker_with(mock: Mock, e: EngineHandle, accept_all: bool, no_fast_path: bool) -> Worker<Mock> {
        let mut w = worker(mock, e, None);
        w.cfg.accept_all = accept_all;
        w.cfg.no_fast_path = no_fast_path;
        w
    }

    const C: [u8; 4] = [192, 0, 2, 10];
    const S: [u8; 4] = [198, 51, 100, 10];

    #[test]
    fn signature_on_odd_port_is_marked_once_with_one_event() {
        let m = MarkBits::default();
        let mut mock = Mock::default();
        mock.input.push_back((tcp4(C, 40000, S, 443, 1, b""), 0x5));
        mock.input
            .push_back((tcp4(C, 40000, S, 443, 1, b"VER 1 MSNP8 CVR0\r\n"), 0x5));
        // Queued again before the kernel rule took over: plain drop, no new event.
        mock.input
            .push_back((tcp4(C, 40000, S, 443, 19, b"CVR 2 0x0409\r\n"), 0x5));
        let (tx, rx) = crossbeam_channel::bounded(8);
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), Some(tx));
        while let Ok(Received::Packet(p)) = w.source.recv() {
            w.handle(p);
        }
        assert_eq!(
            w.source().verdicts,
            vec![
                QueueVerdict::Accept,
                QueueVerdict::Repeat(0x5 | m.blocked),
                QueueVerdict::Drop
            ]
        );
        let ev: Vec<BlockEvent> = rx.try_iter().collect();
        assert_eq!(ev.len(), 1, "one event per connection");
        let json = ev[0].to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["event_type"], "alert", "{json}");
        assert_eq!(v["app_proto"], "msn", "{json}");
        assert_eq!(v["alert"]["signature_id"], "msnp-ver", "{json}");
        assert_eq!(v["alert"]["signature"], "msn/msnp-ver", "{json}");
        assert_eq!(v["alert"]["category"], "signature", "{json}");
        assert_eq!(v["dest_port"], 443, "{json}");
        assert_eq!(v["proto"], "TCP", "{json}");
        assert_eq!(v["flow_id"].as_u64().unwrap() >> 48, 3, "queue in the id");
        assert_eq!(w.stats().marked_blocked.load(Relaxed), 1);
        assert_eq!(w.stats().packets.load(Relaxed), 3);
    }

    #[test]
    fn a_message_rule_event_names_the_host_and_url_it_judged() {
        let mut mock = Mock::default();
        let req = b"GET /api/rtm.connect?x=1 HTTP/1.1\r\nHost: App.Slack.com:80\r\n\r\n";
        mock.input.push_back((tcp4(C, 40002, S, 80, 1, req), 0));
        let (tx, rx) = crossbeam_channel::bounded(8);
        let mut w = worker(mock, engine("192.0.2.10 slack\n"), Some(tx));
        while let Ok(Received::Packet(p)) = w.source.recv() {
            w.handle(p);
        }
        let ev: Vec<BlockEvent> = rx.try_iter().collect();
        assert_eq!(ev.len(), 1);
        let json = ev[0].to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["alert"]["category"], "rule", "{json}");
        assert_eq!(v["alert"]["signature"], "slack/slack-names", "{json}");
        // Normalised: lower case, default port dropped.
        assert_eq!(v["alert"]["host"], "app.slack.com", "{json}");
        assert_eq!(
            v["alert"]["url"], "http://app.slack.com/api/rtm.connect?x=1",
            "{json}"
        );
        assert!(v["alert"].get("truncated").is_none(), "{json}");
    }

    #[test]
    fn draining_never_repeats_without_rules() {
        let mut mock = Mock::default();
        mock.input
            .push_back((tcp4(C, 40001, S, 443, 1, b"VER 1 MSNP8 CVR0\r\n"), 0));
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), None);
        w.drain();
        assert_eq!(w.source().verdicts, vec![QueueVerdict::Drop]);
    }

    #[test]
    fn port_rule_clean_mark_and_unlisted_hosts() {
        let m = MarkBits::default();
        let mut w = worker(Mock::default(), engine("192.0.2.10 msn\n"), None);
        // Port 1863 from a listed host: blocked on the SYN, old mark bits kept.
        let v = w.decide(&tcp4(C, 40002, S, 1863, 1, b""), 0xff30_0001);
        assert_eq!(v, QueueVerdict::Repeat(0xff00_0001 | m.blocked));
        // Not listed: plain accept, never a mark.
        let v = w.decide(&tcp4([203, 0, 113, 5], 40003, S, 443, 1, b"VER 1 MSNP8\r\n"), 0);
        assert_eq!(v, QueueVerdict::Accept);
        // Clean after the inspection depth.
        let mut seq = 1u32;
        let body = [b'a'; 1400];
        let mut last = QueueVerdict::Accept;
        for _ in 0..20 {
            last = w.decide(&tcp4(C, 40004, S, 80, seq, &body), 0);
            if last != QueueVerdict::Accept {
                break;
            }
            seq += body.len() as u32;
        }
        assert_eq!(last, QueueVerdict::Repeat(m.clean));
        // Garbage is accepted and counted.
        assert_eq!(w.decide(b"\x45garbage", 0), QueueVerdict::Accept);
        assert_eq!(w.stats().outcomes[0][6].load(Relaxed), 1);
    }

    #[test]
    fn a_connection_first_seen_in_the_reply_direction_is_judged_by_its_opener() {
        // The SYN stayed in the kernel; the server speaks first. CtDir
        // says the packet is a reply, so the opener's port (1863) applies.
        let m = MarkBits::default();
        let mut w = worker(Mock::default(), engine("192.0.2.10 msn\n"), None);
        let banner = tcp4(S, 1863, C, 40100, 1, b"hello\r\n");
        assert_eq!(
            w.decide_tracked(&banner, 0, Some(CtDir::Reply)),
            QueueVerdict::Repeat(m.blocked)
        );
        // Through the queue: the rules' direction mark says the same.
        let mut mock = Mock::default();
        mock.input
            .push_back((tcp4(S, 1863, C, 40102, 1, b"hello\r\n"), m.queued_reply | 0x1));
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), None);
        w.drain();
        assert_eq!(w.source().verdicts, vec![QueueVerdict::Drop], "drained: no marks");
        let mut mock = Mock::default();
        mock.input
            .push_back((tcp4(S, 1863, C, 40103, 1, b"hello\r\n"), m.queued_reply | 0x1));
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), None);
        while let Ok(Received::Packet(p)) = w.source.recv() {
            w.handle(p);
        }
        assert_eq!(w.source().verdicts, vec![QueueVerdict::Repeat(m.blocked | 0x1)]);
        // Without conntrack the sender would count as the opener.
        let mut w = worker(Mock::default(), engine("192.0.2.10 msn\n"), None);
        assert_eq!(
            w.decide(&tcp4(S, 1863, C, 40101, 1, b"hello\r\n"), 0),
            QueueVerdict::Accept
        );
    }

    #[test]
    fn every_packet_gets_a_verdict_even_when_sending_fails() {
        let mut mock = Mock {
            fail_verdicts: true,
            ..Mock::default()
        };
        for i in 0..10u16 {
            mock.input
                .push_back((tcp4(C, 41000 + i, S, 80, 1, b"GET / HTTP/1.1\r\n\r\n"), 0));
        }
        mock.input.push_back((vec![0u8; 3], 0));
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), None);
        w.drain();
        assert_eq!(w.source().verdicts.len(), 11);
        assert_eq!(w.stats().verdict_errors.load(Relaxed), 11);
    }

    #[test]
    fn reload_swaps_the_engine_between_packets() {
        let handle = engine("192.0.2.99 msn\n");
        let mut w = worker(Mock::default(), Arc::clone(&handle), None);
        let syn = tcp4(C, 42000, S, 1863, 1, b"");
        assert_eq!(w.decide(&syn, 0), QueueVerdict::Accept, "not listed yet");
        handle.store(engine("192.0.2.10 msn\n").load_full());
        let syn2 = tcp4(C, 42001, S, 1863, 1, b"");
        assert!(
            matches!(w.decide(&syn2, 0), QueueVerdict::Repeat(_)),
            "new policy for new connections"
        );
    }

    /// Sends `segments` on one connection from `seq`; returns the verdicts
    /// and the next sequence number.
    fn send(w: &mut Worker<Mock>, port: u16, mut seq: u32, segments: &[&[u8]]) -> (Vec<QueueVerdict>, u32) {
        let mut out = Vec::new();
        for s in segments {
            out.push(w.decide(&tcp4(C, port, S, 80, seq, s), 0));
            seq = seq.wrapping_add(u32::try_from(s.len()).unwrap());
        }
        (out, seq)
    }

    fn blocked(v: QueueVerdict) -> bool {
        matches!(v, QueueVerdict::Repeat(m) if m & MarkBits::default().blocked != 0)
    }

    #[test]
    fn reload_rejudges_not_listed_and_clean_connections() {
        use crate::sample::MSN_GATEWAY_OPEN;
        let get: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        // Not listed under the old policy: accepted, never marked.
        let handle = engine("192.0.2.99 msn\n");
        let mut w = worker(Mock::default(), Arc::clone(&handle), None);
        let (v, seq) = send(&mut w, 46000, 1, &[get, get]);
        assert_eq!(v, [QueueVerdict::Accept; 2]);
        handle.store(engine("192.0.2.10 msn\n").load_full());
        let (v, seq) = send(&mut w, 46000, seq, &[get]);
        assert_eq!(v, [QueueVerdict::Accept], "still inspecting");
        let (v, _) = send(&mut w, 46000, seq, &[MSN_GATEWAY_OPEN]);
        assert!(blocked(v[0]), "the old 'not listed' must not stick: {v:?}");

        // Settled clean under a policy without msn for this host (a
        // stream that is not HTTP: an HTTP client is never settled).
        let handle = engine("192.0.2.10 irc\n");
        let mut w = worker(Mock::default(), Arc::clone(&handle), None);
        let head = b"hello, a binary upload follows\r\n";
        let body = [b'a'; 1400];
        let mut segs: Vec<&[u8]> = vec![head];
        segs.extend(std::iter::repeat_n(&body[..], 10));
        let (v, seq) = send(&mut w, 46001, 1, &segs);
        assert!(
            v.contains(&QueueVerdict::Repeat(MarkBits::default().clean)),
            "{v:?}"
        );
        handle.store(engine("192.0.2.10 irc msn\n").load_full());
        let (v, _) = send(&mut w, 46001, seq, &[MSN_GATEWAY_OPEN]);
        assert!(blocked(v[0]), "a clean connection is inspected again: {v:?}");
    }

    #[test]
    fn reload_never_unblocks_a_blocked_connection() {
        let handle = engine("192.0.2.10 msn\n");
        let mut w = worker(Mock::default(), Arc::clone(&handle), None);
        let (v, seq) = send(&mut w, 46002, 1, &[b"VER 1 MSNP8 CVR0\r\n"]);
        assert!(blocked(v[0]), "{v:?}");
        handle.store(engine("192.0.2.99 msn\n").load_full());
        let (v, _) = send(&mut w, 46002, seq, &[b"hello\r\n", b"more\r\n"]);
        assert_eq!(v, [QueueVerdict::Drop; 2]);
    }

    fn syn(port: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(C, S, 64)
            .tcp(port, 80, 0, 65535)
            .syn()
            .write(&mut out, b"")
            .unwrap();
        out
    }

    #[test]
    fn table_pressure_between_two_halves_of_the_gateway_request_never_lets_it_through() {
        let first: &[u8] = b"POST /gateway/gate";
        let second: &[u8] = b"way.dll?Action=open&Server=NS HTTP/1.1\r\nHost: a\r\n\r\n";
        // A SYN burst far past the table: the connection mid-inspection stays.
        let mut w = worker(Mock::default(), engine("192.0.2.10 msn\n"), None);
        w.tracker = Tracker::new(8, u64::MAX);
        let (v, seq) = send(&mut w, 47000, 1, &[first]);
        assert_eq!(v, [QueueVerdict::Accept]);
        for p in 0..500u16 {
            w.decide(&syn(48000 + p), 0);
        }
        let (v, _) = send(&mut w, 47000, seq, &[second]);
        assert!(blocked(v[0]), "{v:?}");

        // Every connection mid-inspection: one must go, and when it comes
        // back it is blocked (fail closed), with an event.
        let (tx, rx) = crossbeam_channel::bounded(64);
        let mut w = worker(Mock::default(), engine("192.0.2.10 msn\n"), Some(tx));
        w.tracker = Tracker::new(8, u64::MAX);
        let (_, seq) = send(&mut w, 47001, 1, &[first]);
        for p in 0..8u16 {
            send(&mut w, 49000 + p, 1, &[first]);
        }
        let (v, _) = send(&mut w, 47001, seq, &[second, b"more"]);
        assert!(blocked(v[0]), "{v:?}");
        assert_eq!(v[1], QueueVerdict::Drop);
        let ev: Vec<BlockEvent> = rx.try_iter().collect();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].sport, 47001);
        assert!(
            ev[0].to_json().contains("\"category\":\"evasion\""),
            "{}",
            ev[0].to_json()
        );
        assert_eq!(w.stats().resumed_undecided.load(Relaxed), 1);
    }

    #[test]
    fn run_returns_after_stop_and_answers_the_rest() {
        let mut mock = Mock::default();
        mock.input.push_back((tcp4(C, 43000, S, 80, 1, b""), 0));
        let w = worker(mock, engine("192.0.2.10 msn\n"), None);
        let stop = AtomicBool::new(true);
        let stats = Arc::clone(w.stats());
        w.run(&stop).unwrap();
        assert_eq!(stats.packets.load(Relaxed), 1);
    }

    /// A source that idles, then hangs in `recv` while `stuck` is set: a
    /// worker stuck somewhere in its loop.
    struct Stalling {
        stuck: Arc<AtomicBool>,
    }

    impl PacketSource for Stalling {
        type Packet = (Vec<u8>, u32);
        fn recv(&mut self) -> Result<Received<Self::Packet>, QueueError> {
            while self.stuck.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(2));
            Ok(Received::Idle)
        }
        fn payload(p: &Self::Packet) -> &[u8] {
            &p.0
        }
        fn mark(p: &Self::Packet) -> u32 {
            p.1
        }
        fn is_gso(_: &Self::Packet) -> bool {
            false
        }
        fn is_truncated(_: &Self::Packet) -> bool {
            false
        }
        fn verdict(&mut self, _: Self::Packet, _: QueueVerdict) -> Result<(), QueueError> {
            Ok(())
        }
    }

    /// The watchdog's view of a real worker loop: pings while it turns,
    /// none while it is stuck, pings again once it moves.
    #[test]
    fn a_stuck_worker_stops_the_watchdog_pings() {
        use crate::daemon::notify::{Heartbeats, Watchdog};
        let stuck = Arc::new(AtomicBool::new(false));
        let src = Stalling {
            stuck: Arc::clone(&stuck),
        };
        let mut beats = Heartbeats::default();
        let cfg = WorkerConfig {
            queue: 0,
            marks: MarkBits::default(),
            fail_closed: false,
            max_flows: 10,
            flow_timeout_ns: 1,
            accept_all: false,
            no_fast_path: false,
            stage_timings: false,
        };
        let w = Worker::new(src, engine(""), Arc::new(WorkerStats::new(0)), None, cfg)
            .with_heartbeat(beats.add());
        let stop = Arc::new(AtomicBool::new(false));
        let t = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || w.run(&stop)
        });
        let every = Duration::from_millis(100);
        let mut dog = Watchdog::new(every);
        // One due time per `every`: whether a ping went out.
        let window = |dog: &mut Watchdog, beats: &mut Heartbeats| {
            std::thread::sleep(every + Duration::from_millis(5));
            dog.due(Instant::now(), beats, true)
        };
        assert!(window(&mut dog, &mut beats), "a turning loop earns pings");
        assert!(window(&mut dog, &mut beats));
        stuck.store(true, Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        window(&mut dog, &mut beats); // the turn it may have begun
        assert!(!window(&mut dog, &mut beats), "stuck: no ping");
        assert!(!window(&mut dog, &mut beats), "still stuck: still none");
        stuck.store(false, Relaxed);
        std::thread::sleep(Duration::from_millis(10));
        assert!(window(&mut dog, &mut beats), "moving again");
        stop.store(true, Relaxed);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn accept_all_accepts_everything_and_never_marks() {
        let mut mock = Mock::default();
        // MSNP to 1863, a signature on 443, garbage and an empty packet.
        mock.input.push_back((tcp4(C, 44000, S, 1863, 1, b""), 0x5));
        mock.input
            .push_back((tcp4(C, 44001, S, 443, 1, b"VER 1 MSNP8 CVR0\r\n"), 0));
        mock.input.push_back((b"\x45garbage".to_vec(), 0));
        mock.input.push_back((Vec::new(), 0));
        let (tx, rx) = crossbeam_channel::bounded(8);
        let mut w = worker(mock, engine("192.0.2.10 msn\n"), Some(tx));
        w.cfg.accept_all = true;
        let stop = AtomicBool::new(true);
        let stats = Arc::clone(w.stats());
        w.drain();
        assert_eq!(w.source().verdicts, vec![QueueVerdict::Accept; 4]);
        assert_eq!(rx.try_iter().count(), 0, "no events");
        assert_eq!(stats.packets.load(Relaxed), 4);
        assert_eq!(stats.marked_blocked.load(Relaxed), 0);
        assert_eq!(stats.marked_clean.load(Relaxed), 0);
        assert_eq!(stats.flows.load(Relaxed), 0, "no connection table work");
        w.run(&stop).unwrap();
    }

    #[test]
    fn no_fast_path_judges_but_never_repeats() {
        let mut w = worker_with(Mock::default(), engine("192.0.2.10 msn\n"), false, true);
        // Blocked by port and by signature: plain drops, no mark.
        assert_eq!(
            w.decide(&tcp4(C, 45000, S, 1863, 1, b""), 0x5),
            QueueVerdict::Drop
        );
        let _ = w.decide(&tcp4(C, 45001, S, 443, 1, b""), 0);
        assert_eq!(
            w.decide(&tcp4(C, 45001, S, 443, 1, b"VER 1 MSNP8 CVR0\r\n"), 0),
            QueueVerdict::Drop
        );
        // Past the depth: accepted, and later packets are still judged.
        let body = [b'a'; 1400];
        let mut seq = 1u32;
        for _ in 0..20 {
            assert_eq!(
                w.decide(&tcp4(C, 45002, S, 80, seq, &body), 0),
                QueueVerdict::Accept
            );
            seq += body.len() as u32;
        }
        let before = w.stats().packets.load(Relaxed);
        assert_eq!(
            w.decide(&tcp4(C, 45002, S, 80, seq, &body), 0),
            QueueVerdict::Accept
        );
        assert_eq!(w.stats().packets.load(Relaxed), before + 1);
        assert_eq!(
            w.stats().marked_blocked.load(Relaxed),
            2,
            "still counted as decided"
        );
        assert_eq!(w.stats().marked_clean.load(Relaxed), 1);
        // Accept-all overrides judging altogether.
        let mut w = worker_with(Mock::default(), engine("192.0.2.10 msn\n"), true, true);
        let mut mock = Mock::default();
        mock.input.push_back((tcp4(C, 45003, S, 1863, 1, b""), 0));
        w.source = mock;
        w.drain();
        assert_eq!(w.source().verdicts, vec![QueueVerdict::Accept]);
    }
}
