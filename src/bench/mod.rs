//! Verdict throughput measurement, shared by `appwall bench` and `benches/`.
//!
//! A benchmark is only worth something if it times the path the live filter
//! runs, so this module has no engine logic of its own: [`replay`] feeds
//! packets held in memory through [`Tracker::judge`] (parse, connection
//! lookup, [`Engine::judge`]), exactly as a queue worker does, and [`measure`] repeats that on one or more threads (each
//! with its own table, as the live filter keeps one per queue) for a number
//! of timed rounds.
//!
//! Replaying a capture many times needs care: a connection judged once is
//! decided ("clean" or "blocked"), and judging it again is the cheap fast
//! path. [`Mode::FirstPass`] therefore starts every replay with an empty
//! table (every connection new: realistic inspection), while
//! [`Mode::Steady`] keeps one table across replays (connections decided
//! earlier take the fast path). Both are reported, and named, so nobody
//! mistakes one for the other.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Decision, Engine, Reason, Verdict};
use crate::flow::FlowKey;
use crate::packet::{LinkType, PacketView};
use crate::sample;
pub use crate::sample::mix::Mix;
use crate::source::Tracker;
use crate::source::capture::{CaptureError, CaptureReader};

/// Errors of the benchmark library.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A capture could not be opened or read at all.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Nothing to replay: no TCP/UDP packet in the input.
    #[error("{0}: no TCP or UDP packet to replay")]
    Empty(String),
    /// A measurement option is out of range.
    #[error("invalid benchmark option: {0}")]
    Option(String),
    /// A worker thread died (a bug: nothing on this path should panic).
    #[error("a benchmark thread panicked")]
    Thread,
}

/// Largest gap kept between two captured frames.
const MAX_GAP_NS: u64 = 1_000_000_000;

/// Where one frame sits in [`Trace`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct FrameRef {
    start: usize,
    len: usize,
    link: LinkType,
    /// Nanoseconds since the trace's first frame.
    ts_ns: u64,
}

/// Packets held in memory (one contiguous buffer) for replaying.
#[derive(Debug, Clone)]
pub struct Trace {
    name: String,
    buf: Vec<u8>,
    frames: Vec<FrameRef>,
    flows: HashSet<FlowKey>,
    skipped: u64,
    warnings: Vec<String>,
}

impl Trace {
    fn empty(name: String) -> Trace {
        Trace {
            name,
            buf: Vec::new(),
            frames: Vec::new(),
            flows: HashSet::new(),
            skipped: 0,
            warnings: Vec::new(),
        }
    }

    /// Keeps a frame if it is a TCP/UDP packet (only those reach the queue).
    fn push(&mut self, link: LinkType, ts_ns: u64, data: &[u8]) {
        match PacketView::from_link(link, data) {
            Ok(p) => {
                self.flows.insert(FlowKey::of(&p));
            }
            Err(_) => {
                self.skipped += 1;
                return;
            }
        }
        self.frames.push(FrameRef {
            start: self.buf.len(),
            len: data.len(),
            link,
            ts_ns,
        });
        self.buf.extend_from_slice(data);
    }

    /// A trace of raw IP packets (what NFQUEUE delivers), `gap_ns` apart.
    pub fn from_packets(name: impl Into<String>, packets: &[Vec<u8>], gap_ns: u64) -> Trace {
        let mut t = Trace::empty(name.into());
        for (i, p) in packets.iter().enumerate() {
            t.push(LinkType::RawIp, i as u64 * gap_ns, p);
        }
        t
    }

    /// Loads captures into memory, one after the other in time (gaps between
    /// frames capped at 1 s). Frames of unsupported link types and
    /// non-TCP/UDP frames are skipped (counted);
    /// a capture damaged part-way keeps what came before the damage (see
    /// [`Trace::warnings`]).
    pub fn load(paths: &[PathBuf]) -> Result<Trace, BenchError> {
        let name = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let mut t = Trace::empty(name.clone());
        let mut offset = 0u64;
        for path in paths {
            offset = t.load_one(path, offset)?;
        }
        if t.frames.is_empty() {
            return Err(BenchError::Empty(name));
        }
        Ok(t)
    }

    /// Appends one capture, its timestamps shifted to start at `offset`;
    /// returns the offset for the next capture.
    fn load_one(&mut self, path: &Path, offset: u64) -> Result<u64, BenchError> {
        let mut reader = CaptureReader::open(path)?;
        let mut prev: Option<u64> = None;
        let mut now = offset;
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    let Some(link) = LinkType::from_pcap(f.linktype) else {
                        self.skipped += 1;
                        continue;
                    };
                    // Capture clocks step back and jump years ahead; a jump is
                    // not traffic, so gaps are kept within 0..=1 s.
                    let gap = prev.map_or(0, |p| f.ts_ns.saturating_sub(p).min(MAX_GAP_NS));
                    prev = Some(f.ts_ns);
                    now += gap;
                    self.push(link, now, f.data);
                }
                Ok(None) => break,
                Err(e) => {
                    self.warnings.push(format!("{e}; replaying what was read"));
                    break;
                }
            }
        }
        Ok(now + 1_000_000)
    }

    /// Name for reports (file names, or the synthetic mix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Packets to replay.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of all frames as captured.
    pub fn bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Distinct connections (5-tuples).
    pub fn connections(&self) -> usize {
        self.flows.len()
    }

    /// Frames left out: unsupported link type, or not TCP/UDP over IP.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Damage met while loading.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Time from the first frame to the last, in nanoseconds.
    pub fn span_ns(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.ts_ns)
    }

    /// Every frame: link type and captured bytes.
    pub fn frames(&self) -> impl Iterator<Item = (LinkType, &[u8])> + '_ {
        self.frames.iter().map(|f| (f.link, self.frame(f)))
    }

    /// The bytes of one frame.
    fn frame(&self, f: &FrameRef) -> &[u8] {
        &self.buf[f.start..f.start + f.len]
    }
}

/// What a replay does per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Parse the packet and find or create its connection: the floor any
    /// verdict costs, and the baseline the engine is compared against.
    Baseline,
    /// Parse, connection lookup and [`Engine::judge`]: the live filter's path.
    Engine,
}

/// How connection tables are kept across replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every replay starts from an empty table: all connections are new and
    /// inspected from their first packet (the realistic cost).
    FirstPass,
    /// One table across replays: a connection decided on an earlier replay
    /// takes the fast path; one that closed and is reopened by a SYN starts
    /// over (port reuse), and one still undecided sees its bytes again as
    /// retransmissions.
    Steady,
}

/// Verdict counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Packets replayed.
    pub packets: u64,
    /// Their captured bytes.
    pub bytes: u64,
    /// Accepted packets (engine stage only).
    pub accept: u64,
    /// Dropped packets (engine stage only).
    pub drop: u64,
    /// Dropped by a port rule.
    pub port: u64,
    /// Dropped by a payload signature.
    pub signature: u64,
    /// Dropped because retransmitted bytes differed from inspected ones.
    pub evasion: u64,
    /// Accepted while the connection is still inspected.
    pub inspecting: u64,
    /// Accepted on a connection that passed the depth clean.
    pub clean: u64,
    /// Accepted: neither endpoint listed.
    pub not_listed: u64,
    /// Accepted: listed, but no app with signatures applies.
    pub ports_only: u64,
    /// Accepted because the bytes were not a readable TCP/UDP packet.
    pub unparsable: u64,
}

impl Counts {
    #[inline]
    fn add(&mut self, d: &Decision) {
        match d.verdict {
            Verdict::Accept => self.accept += 1,
            Verdict::Drop => self.drop += 1,
        }
        match d.reason {
            Reason::Port { .. } | Reason::QuicBlocked { .. } | Reason::Address { .. } => self.port += 1,
            Reason::Signature(_) | Reason::Rule(_) | Reason::Ech { .. } => self.signature += 1,
            Reason::Evasion | Reason::OversizedHead => self.evasion += 1,
            Reason::Inspecting => self.inspecting += 1,
            Reason::Clean => self.clean += 1,
            Reason::NotListed => self.not_listed += 1,
            Reason::PortsOnly => self.ports_only += 1,
            Reason::Unparsable => self.unparsable += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.accept += o.accept;
        self.drop += o.drop;
        self.port += o.port;
        self.signature += o.signature;
        self.evasion += o.evasion;
        self.inspecting += o.inspecting;
        self.clean += o.clean;
        self.not_listed += o.not_listed;
        self.ports_only += o.ports_only;
        self.unparsable += o.unparsable;
    }
}

/// Replays every packet of `trace` once through `table` (and the engine, at
/// [`Stage::Engine`]); packet times are the trace's plus `time_base_ns`.
#[inline(never)]
pub fn replay(
    engine: &Engine,
    trace: &Trace,
    table: &mut Tracker,
    stage: Stage,
    time_base_ns: u64,
    counts: &mut Counts,
) {
    for f in &trace.frames {
        let bytes = trace.frame(f);
        counts.packets += 1;
        counts.bytes += bytes.len() as u64;
        let now = time_base_ns.saturating_add(f.ts_ns);
        match stage {
            Stage::Baseline => match table.track(f.link, bytes, now) {
                Ok(tracked) => {
                    black_box(&*tracked.1);
                }
                Err(_) => {
                    // The live filter accepts what it cannot read.
                    counts.accept += 1;
                    counts.unparsable += 1;
                }
            },
            Stage::Engine => match table.judge(engine, f.link, bytes, now) {
                Ok(j) => counts.add(&black_box(j.decision)),
                Err(_) => {
                    counts.accept += 1;
                    counts.unparsable += 1;
                }
            },
        }
    }
}

/// Settings of [`measure`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Timed rounds (the spread is taken over them).
    pub rounds: u32,
    /// Replay time per round and thread (whole replays: at least one).
    pub round_time: Duration,
    /// Untimed replay before the rounds (warms caches, allocator, tables).
    pub warmup: Duration,
    /// Capacity of each connection table.
    pub table_capacity: usize,
    /// Idle timeout of each connection table, nanoseconds.
    pub flow_timeout_ns: u64,
}

impl Options {
    fn check(&self, threads: usize) -> Result<(), BenchError> {
        if self.rounds == 0 {
            return Err(BenchError::Option("rounds must be at least 1".into()));
        }
        if threads == 0 || threads > 1024 {
            return Err(BenchError::Option("threads must be between 1 and 1024".into()));
        }
        if self.round_time.is_zero() {
            return Err(BenchError::Option("round time must be above zero".into()));
        }
        Ok(())
    }
}

/// Minimum, median and maximum of a set of figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (all zero when empty).
    pub fn of(v: &[f64]) -> Spread {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return Spread::default();
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Spread {
            min: s[0],
            median,
            max: s[n - 1],
        }
    }
}

/// The result of one [`measure`] call.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was timed per packet.
    pub stage: Stage,
    /// How tables were kept.
    pub mode: Mode,
    /// Threads replaying at once.
    pub threads: usize,
    /// Packets per second (all threads together), over the rounds.
    pub packets_per_s: Spread,
    /// Bits of captured frames per second (all threads together).
    pub bits_per_s: Spread,
    /// CPU nanoseconds per packet on one thread (= threads / packets_per_s).
    pub ns_per_packet: Spread,
    /// Replays timed, all threads and rounds.
    pub replays: u64,
    /// Verdicts of the timed replays, all threads and rounds.
    pub counts: Counts,
}

/// One thread's state that outlives a round.
struct Worker {
    /// The kept table ([`Mode::Steady`]).
    table: Option<Tracker>,
    /// Replays done, to keep packet times moving forward.
    replays: u64,
}

/// One thread's share of a round: counts and busy (timed) time.
fn run_round(
    engine: &Engine,
    trace: &Trace,
    stage: Stage,
    mode: Mode,
    opts: &Options,
    w: &mut Worker,
    budget: Duration,
) -> (Counts, Duration, u64) {
    let mut counts = Counts::default();
    let mut busy = Duration::ZERO;
    let mut replays = 0u64;
    // Each replay's times follow the previous replay's (1 ms gap), so kept
    // connections neither expire nor see time run backwards.
    let stride = trace.span_ns() + 1_000_000;
    while busy < budget || replays == 0 {
        let base = w.replays.saturating_mul(stride);
        w.replays += 1;
        replays += 1;
        match mode {
            Mode::FirstPass => {
                // Creation and teardown are not per-packet costs: untimed.
                let mut table = Tracker::new(opts.table_capacity, opts.flow_timeout_ns);
                let t0 = Instant::now();
                replay(engine, trace, &mut table, stage, base, &mut counts);
                busy += t0.elapsed();
                drop(table);
            }
            Mode::Steady => {
                let table = w
                    .table
                    .get_or_insert_with(|| Tracker::new(opts.table_capacity, opts.flow_timeout_ns));
                let t0 = Instant::now();
                replay(engine, trace, table, stage, base, &mut counts);
                busy += t0.elapsed();
            }
        }
    }
    (counts, busy, replays)
}

/// Times `stage` over `trace` on `threads` threads for `opts.rounds` rounds
/// after a warm-up. Each thread replays the whole trace with its own table.
pub fn measure(
    engine: &Engine,
    trace: &Trace,
    stage: Stage,
    mode: Mode,
    threads: usize,
    opts: &Options,
) -> Result<Measurement, BenchError> {
    opts.check(threads)?;
    if trace.is_empty() {
        return Err(BenchError::Empty(trace.name.clone()));
    }
    let mut workers: Vec<Worker> = (0..threads)
        .map(|_| Worker {
            table: None,
            replays: 0,
        })
        .collect();
    let mut rates = Vec::new();
    let mut bits = Vec::new();
    let mut total = Counts::default();
    let mut replays = 0u64;
    for round in 0..=opts.rounds {
        let budget = if round == 0 { opts.warmup } else { opts.round_time };
        let barrier = Barrier::new(threads);
        let results: Vec<Option<(Counts, Duration, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .map(|w| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        run_round(engine, trace, stage, mode, opts, w, budget)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().ok()).collect()
        });
        if round == 0 {
            if results.iter().any(Option::is_none) {
                return Err(BenchError::Thread);
            }
            continue;
        }
        let mut rate = 0.0;
        let mut bit_rate = 0.0;
        for r in results {
            let (c, busy, n) = r.ok_or(BenchError::Thread)?;
            let secs = busy.as_secs_f64().max(1e-9);
            rate += c.packets as f64 / secs;
            bit_rate += c.bytes as f64 * 8.0 / secs;
            total.merge(&c);
            replays += n;
        }
        rates.push(rate);
        bits.push(bit_rate);
    }
    let ns: Vec<f64> = rates.iter().map(|r| threads as f64 * 1e9 / r).collect();
    Ok(Measurement {
        stage,
        mode,
        threads,
        packets_per_s: Spread::of(&rates),
        bits_per_s: Spread::of(&bits),
        ns_per_packet: Spread::of(&ns),
        replays,
        counts: total,
    })
}

/// Verdicts of one replay from an empty table and of a second replay on the
/// same table: the first-pass and steady verdict mixes.
pub fn verdict_mix(engine: &Engine, trace: &Trace, opts: &Options) -> (Counts, Counts) {
    let mut table = Tracker::new(opts.table_capacity, opts.flow_timeout_ns);
    let (mut first, mut steady) = (Counts::default(), Counts::default());
    replay(engine, trace, &mut table, Stage::Engine, 0, &mut first);
    let next = trace.span_ns() + 1_000_000;
    replay(engine, trace, &mut table, Stage::Engine, next, &mut steady);
    (first, steady)
}

/// Synthetic traffic of `connections` concurrent connections (see
/// [`crate::sample::mix`]), 1 µs apart.
pub fn synthetic(mix: Mix, connections: usize) -> Trace {
    let (name, packets) = sample::mix::packets(mix, connections);
    Trace::from_packets(name, &packets, 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::policy::{AppLibrary, Policy};

    fn engine() -> Engine {
        let p = Policy::everyone(AppLibrary::embedded().unwrap());
        Engine::new(p, EngineConfig::default()).unwrap()
    }

    fn opts() -> Options {
        Options {
            rounds: 2,
            round_time: Duration::from_millis(5),
            warmup: Duration::from_millis(1),
            table_capacity: 4096,
            flow_timeout_ns: 3_600_000_000_000,
        }
    }

    #[test]
    fn mixes_parse_and_msn_is_blocked() {
        for mix in [Mix::Web, Mix::Msn, Mix::Small, Mix::Full, Mix::Mixed] {
            let t = synthetic(mix, 32);
            assert_eq!(t.skipped(), 0, "{mix:?}");
            assert!(t.connections() >= 32, "{mix:?}");
        }
        let e = engine();
        let (first, steady) = verdict_mix(&e, &synthetic(Mix::Msn, 8), &opts());
        assert!(
            first.drop > 0 && first.signature > 0 && first.port > 0,
            "{first:?}"
        );
        assert_eq!(first.accept + first.drop, first.packets);
        assert_eq!(steady.packets, first.packets);
        assert!(steady.drop > 0, "{steady:?}");
        let (web, _) = verdict_mix(&e, &synthetic(Mix::Web, 64), &opts());
        assert_eq!(web.drop, 0, "benign mix has no hit: {web:?}");
    }

    #[test]
    fn measure_counts_add_up() {
        let e = engine();
        let t = synthetic(Mix::Mixed, 16);
        for (stage, mode) in [(Stage::Baseline, Mode::FirstPass), (Stage::Engine, Mode::Steady)] {
            let m = measure(&e, &t, stage, mode, 2, &opts()).unwrap();
            assert!(m.replays >= 4);
            assert_eq!(m.counts.packets, m.replays * t.len() as u64);
            assert!(m.packets_per_s.min > 0.0 && m.packets_per_s.min <= m.packets_per_s.max);
        }
        let bad = Options { rounds: 0, ..opts() };
        assert!(matches!(
            measure(&e, &t, Stage::Engine, Mode::Steady, 1, &bad),
            Err(BenchError::Option(_))
        ));
    }

    #[test]
    fn spread_and_bad_capture() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(Spread::of(&[]), Spread::default());
        let dir = std::env::temp_dir().join(format!("appwall-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pcap");
        std::fs::write(&p, b"not a capture").unwrap();
        assert!(matches!(Trace::load(&[p]), Err(BenchError::Capture(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
