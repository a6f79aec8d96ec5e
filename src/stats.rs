//! What the live filter reports: per-worker outcome counters, the kernel's
//! own queue counters, the JSON status file, the JSON-lines event log of
//! blocked connections, and log lines on stderr.
//!
//! Guarantees: the packet path only bumps relaxed atomics in its own
//! worker's [`WorkerStats`] (no lock, no allocation, no sharing of cache
//! lines between workers); everything else (summing, formatting, writing)
//! happens on the stats and event threads. An event is written once per
//! blocked connection, never per packet. Log lines carry a syslog priority
//! prefix (`<3>`) when stderr is the journal, so journald files them at the
//! right level; on a terminal they read `appwall: info: ...`.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::engine::{Engine, Reason, Verdict};
use crate::policy::Proto;

/// Severity of a log line (syslog numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 3,
    /// Something is off but appwall goes on.
    Warning = 4,
    /// Normal operation.
    Info = 6,
}

/// Writes one log line to stderr (journald-friendly, see the module doc).
pub fn log(level: Level, msg: std::fmt::Arguments<'_>) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut err = io::stderr().lock();
    let _ = if journal {
        writeln!(err, "<{}>{msg}", level as u8)
    } else {
        let name = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        };
        writeln!(err, "appwall: {name}: {msg}")
    };
}

/// Number of distinct [`Reason`] kinds.
pub const REASONS: usize = 9;
/// Reason kind names, indexed by [`reason_index`].
pub const REASON_NAMES: [&str; REASONS] = [
    "port",
    "signature",
    "inspecting",
    "clean",
    "not-listed",
    "ports-only",
    "unparsable",
    "evasion",
    "rule",
];
/// App slots: 64 library apps plus "none".
pub const APP_SLOTS: usize = 65;

/// Sums the packet counters of the NFQUEUE rules in `iptables -nvxL` output.
pub fn nfqueue_rule_packets(list: &str) -> u64 {
    list.lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Counter index of a reason kind.
#[inline]
pub fn reason_index(r: &Reason) -> usize {
    match r {
        Reason::Port { .. } => 0,
        Reason::Signature(_) => 1,
        Reason::Inspecting => 2,
        Reason::Clean => 3,
        Reason::NotListed => 4,
        Reason::PortsOnly => 5,
        Reason::Unparsable => 6,
        Reason::Evasion => 7,
        Reason::Rule(_) => 8,
    }
}

/// App slot of a reason (the last slot when it names no app).
#[inline]
pub fn app_index(r: &Reason) -> usize {
    match r {
        Reason::Port { app: Some(i), .. } => usize::from(*i).min(APP_SLOTS - 1),
        Reason::Signature(s) => usize::from(s.app).min(APP_SLOTS - 1),
        Reason::Rule(r) => usize::from(r.app).min(APP_SLOTS - 1),
        _ => APP_SLOTS - 1,
    }
}

/// Counters of one queue worker; written only by that worker (Relaxed).
#[derive(Debug)]
pub struct WorkerStats {
    /// Queue number.
    pub queue: u16,
    /// Packets judged.
    pub packets: AtomicU64,
    /// IP bytes judged.
    pub bytes: AtomicU64,
    /// Packets per verdict (0 accept, 1 drop) and reason kind.
    pub outcomes: [[AtomicU64; REASONS]; 2],
    /// Dropped packets per app slot.
    pub dropped_by_app: [AtomicU64; APP_SLOTS],
    /// Blocked connections per app slot.
    pub blocked_by_app: [AtomicU64; APP_SLOTS],
    /// Connections handed to the kernel fast path as blocked.
    pub marked_blocked: AtomicU64,
    /// Connections handed to the kernel fast path as clean.
    pub marked_clean: AtomicU64,
    /// GSO (super-)packets received.
    pub gso: AtomicU64,
    /// Packets cut short by the copy range.
    pub truncated: AtomicU64,
    /// Socket overruns reported by the kernel (ENOBUFS): packets were lost
    /// to the socket buffer and will be retransmitted or time out.
    pub overruns: AtomicU64,
    /// Receive errors other than overruns.
    pub recv_errors: AtomicU64,
    /// Verdicts the kernel did not take.
    pub verdict_errors: AtomicU64,
    /// Packets whose judging panicked (given the fail-mode verdict).
    pub panics: AtomicU64,
    /// Events lost because the event writer fell behind.
    pub events_dropped: AtomicU64,
    /// Connections held in the worker's table (gauge).
    pub flows: AtomicU64,
}

impl WorkerStats {
    /// Zeroed counters for `queue`.
    pub fn new(queue: u16) -> WorkerStats {
        WorkerStats {
            queue,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcomes: Default::default(),
            dropped_by_app: std::array::from_fn(|_| AtomicU64::new(0)),
            blocked_by_app: std::array::from_fn(|_| AtomicU64::new(0)),
            marked_blocked: AtomicU64::new(0),
            marked_clean: AtomicU64::new(0),
            gso: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            recv_errors: AtomicU64::new(0),
            verdict_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            flows: AtomicU64::new(0),
        }
    }

    /// Counts one judged packet.
    #[inline]
    pub fn count(&self, len: usize, verdict: Verdict, reason: &Reason) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len as u64, Relaxed);
        let v = usize::from(verdict == Verdict::Drop);
        self.outcomes[v][reason_index(reason)].fetch_add(1, Relaxed);
        if v == 1 {
            self.dropped_by_app[app_index(reason)].fetch_add(1, Relaxed);
        }
    }
}

/// A counter bump, as a short helper for the worker.
#[inline]
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// One row of `/proc/net/netfilter/nfnetlink_queue`: the kernel's view of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelQueue {
    /// Queue number.
    pub queue: u16,
    /// Netlink port id of the bound listener.
    pub portid: u32,
    /// Packets waiting for a verdict now.
    pub waiting: u64,
    /// Packets dropped because the queue was full (fail-closed only: in
    /// fail-open mode the kernel passes them uncounted; see `Totals::queue_overflow`).
    pub queue_dropped: u64,
    /// Packets dropped because the socket buffer was full.
    pub user_dropped: u64,
    /// Last packet id handed out.
    pub id_sequence: u64,
}

/// Parses the kernel's queue table (rows it cannot read are skipped).
pub fn parse_kernel_queues(text: &str) -> Vec<KernelQueue> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().map_while(|w| w.parse().ok()).collect();
            (f.len() >= 8).then(|| KernelQueue {
                queue: f[0] as u16,
                portid: f[1] as u32,
                waiting: f[2],
                queue_dropped: f[5],
                user_dropped: f[6],
                id_sequence: f[7],
            })
        })
        .collect()
}

/// Reads the kernel's queue counters of this network namespace.
pub fn kernel_queues() -> Vec<KernelQueue> {
    fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")
        .map(|t| parse_kernel_queues(&t))
        .unwrap_or_default()
}

/// A blocked connection, sent from a worker to the event writer.
#[derive(Debug, Clone)]
pub struct BlockEvent {
    /// When it was blocked.
    pub time: SystemTime,
    /// Queue that judged it.
    pub queue: u16,
    /// TCP or UDP.
    pub proto: Proto,
    /// Opener address.
    pub src: IpAddr,
    /// Opener port.
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// Why.
    pub reason: Reason,
    /// The engine (policy) that decided, to name app and signature.
    pub engine: Arc<Engine>,
}

/// One line of the event log (the documented JSON format).
#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    /// Always "blocked".
    pub event: &'static str,
    /// Seconds since the epoch, with milliseconds.
    pub time: f64,
    /// Queue number.
    pub queue: u16,
    /// "tcp" or "udp".
    pub proto: &'static str,
    /// Opener address.
    pub src: String,
    /// Opener port.
    pub sport: u16,
    /// Responder address.
    pub dst: String,
    /// Responder port.
    pub dport: u16,
    /// App name, when the reason names one.
    pub app: Option<&'a str>,
    /// Reason kind: "port", "signature", "rule" or "evasion".
    pub kind: &'static str,
    /// Id of the signature or rule that matched, if any.
    pub signature: Option<&'a str>,
    /// The rule in words (`signature msn/gateway-dll in http-target`).
    pub rule: String,
}

impl BlockEvent {
    /// The JSON line of this event.
    pub fn to_json(&self) -> String {
        let rec = EventRecord {
            event: "blocked",
            time: epoch_secs(self.time),
            queue: self.queue,
            proto: self.proto.name(),
            src: self.src.to_string(),
            sport: self.sport,
            dst: self.dst.to_string(),
            dport: self.dport,
            app: self.engine.reason_app(&self.reason),
            kind: self.reason.kind(),
            signature: self.engine.reason_id(&self.reason),
            rule: self.engine.reason_text(&self.reason),
        };
        serde_json::to_string(&rec).unwrap_or_default()
    }
}

fn epoch_secs(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Sums of every worker's counters plus the kernel's, as written to the
/// status file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Seconds since the epoch.
    pub time: f64,
    /// Process id.
    pub pid: u32,
    /// True while running; false in the last write at shutdown.
    pub running: bool,
    /// Seconds since start.
    pub uptime: f64,
    /// Policy reloads done.
    pub reloads: u64,
    /// Reloads refused (bad file, rules not applied).
    pub reload_failures: u64,
    /// Totals over all queues.
    pub totals: Totals,
    /// `{"accept": {"clean": n, ...}, "drop": {...}}`.
    pub packets_by_verdict: serde_json::Map<String, serde_json::Value>,
    /// `{"msn": {"dropped_packets": n, "blocked_connections": n}}`.
    pub apps: serde_json::Map<String, serde_json::Value>,
    /// Per queue: userspace counters and the kernel's.
    pub queues: Vec<QueueSnapshot>,
}

/// Whole-filter totals.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Packets judged.
    pub packets: u64,
    /// IP bytes judged.
    pub bytes: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Connections blocked.
    pub blocked_connections: u64,
    /// Connections handed to the kernel as clean.
    pub clean_connections: u64,
    /// Events lost.
    pub events_dropped: u64,
    /// Packets the NFQUEUE rules sent that no queue took because it was full
    /// (the rules' packet counters less what the queues received): passed
    /// uninspected in fail-open mode (the kernel counts these nowhere else),
    /// dropped in fail-closed mode (then also in `queue_dropped`).
    pub queue_overflow: u64,
}

/// One queue's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueSnapshot {
    /// Queue number.
    pub queue: u16,
    /// Packets judged.
    pub packets: u64,
    /// GSO packets.
    pub gso: u64,
    /// Truncated packets.
    pub truncated: u64,
    /// Socket overruns (ENOBUFS).
    pub overruns: u64,
    /// Receive errors.
    pub recv_errors: u64,
    /// Verdict errors.
    pub verdict_errors: u64,
    /// Judging panics.
    pub panics: u64,
    /// Connections tracked.
    pub flows: u64,
    /// The kernel's counters, when the kernel lists the queue.
    pub kernel: Option<KernelQueue>,
}

/// Builds a snapshot from workers' counters and the kernel's table.
pub fn snapshot(workers: &[Arc<WorkerStats>], kernel: &[KernelQueue], app_names: &[String]) -> Snapshot {
    let mut s = Snapshot {
        time: epoch_secs(SystemTime::now()),
        pid: std::process::id(),
        running: true,
        ..Snapshot::default()
    };
    let mut outcomes = [[0u64; REASONS]; 2];
    let mut dropped_app = [0u64; APP_SLOTS];
    let mut blocked_app = [0u64; APP_SLOTS];
    for w in workers {
        let get = |c: &AtomicU64| c.load(Relaxed);
        for (v, row) in w.outcomes.iter().enumerate() {
            for (r, c) in row.iter().enumerate() {
                outcomes[v][r] += get(c);
            }
        }
        for i in 0..APP_SLOTS {
            dropped_app[i] += get(&w.dropped_by_app[i]);
            blocked_app[i] += get(&w.blocked_by_app[i]);
        }
        s.totals.packets += get(&w.packets);
        s.totals.bytes += get(&w.bytes);
        s.totals.blocked_connections += get(&w.marked_blocked);
        s.totals.clean_connections += get(&w.marked_clean);
        s.totals.events_dropped += get(&w.events_dropped);
        s.queues.push(QueueSnapshot {
            queue: w.queue,
            packets: get(&w.packets),
            gso: get(&w.gso),
            truncated: get(&w.truncated),
            overruns: get(&w.overruns),
            recv_errors: get(&w.recv_errors),
            verdict_errors: get(&w.verdict_errors),
            panics: get(&w.panics),
            flows: get(&w.flows),
            kernel: kernel.iter().find(|k| k.queue == w.queue).copied(),
        });
    }
    s.totals.accepted = outcomes[0].iter().sum();
    s.totals.dropped = outcomes[1].iter().sum();
    for (v, name) in ["accept", "drop"].iter().enumerate() {
        let mut m = serde_json::Map::new();
        for (r, rn) in REASON_NAMES.iter().enumerate() {
            if outcomes[v][r] > 0 {
                m.insert((*rn).into(), outcomes[v][r].into());
            }
        }
        s.packets_by_verdict.insert((*name).into(), m.into());
    }
    for i in 0..APP_SLOTS {
        if dropped_app[i] == 0 && blocked_app[i] == 0 {
            continue;
        }
        let name = app_names.get(i).map_or("(hosts-file port)", |n| n.as_str());
        s.apps.insert(
            name.into(),
            serde_json::json!({"dropped_packets": dropped_app[i], "blocked_connections": blocked_app[i]}),
        );
    }
    s
}

impl Snapshot {
    /// The periodic one-line summary.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let (mut waiting, mut qdrop, mut udrop) = (0, 0, 0);
        let mut overruns = 0;
        for q in &self.queues {
            overruns += q.overruns;
            if let Some(k) = q.kernel {
                waiting += k.waiting;
                qdrop += k.queue_dropped;
                udrop += k.user_dropped;
            }
        }
        let apps: Vec<String> = self
            .apps
            .iter()
            .map(|(k, v)| format!("{k}={}", v["blocked_connections"]))
            .collect();
        format!(
            "stats: {} packets ({} accepted, {} dropped), {} connections blocked [{}], {} clean; \
             kernel queue: {} waiting, {} queue-full drops, {} socket drops, {} overflowed; {} overruns",
            t.packets,
            t.accepted,
            t.dropped,
            t.blocked_connections,
            apps.join(" "),
            t.clean_connections,
            waiting,
            qdrop,
            udrop,
            t.queue_overflow,
            overruns
        )
    }
}

/// Writes `text` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nfqueue_rule_counters() {
        let out = "Chain APPWALL_INSPECT (2 references)\n    pkts      bytes target     prot opt in     out     source               destination\n       7      364 RETURN     6    --  *      *       0.0.0.0/0            0.0.0.0/0            u32 \"0x0>>0x18=0x45\"\n    1200    99000 NFQUEUE    6    --  *      *       0.0.0.0/0            0.0.0.0/0            NFQUEUE num 0 bypass\n      34     2000 NFQUEUE    17   --  *      *       0.0.0.0/0            0.0.0.0/0            NFQUEUE num 0 bypass\n";
        assert_eq!(super::nfqueue_rule_packets(out), 1234);
        assert_eq!(super::nfqueue_rule_packets(""), 0);
    }

    use super::*;

    #[test]
    fn kernel_table_parses() {
        let t = "    0  12345     2 2 65535     7     9      100  1\n    1 -4012     0 2 65535 0 0 0 1\ngarbage\n";
        let q = parse_kernel_queues(t);
        assert_eq!(q.len(), 1, "a negative portid row is not readable as u64: {q:?}");
        assert_eq!(q[0].queue, 0);
        assert_eq!(q[0].waiting, 2);
        assert_eq!(q[0].queue_dropped, 7);
        assert_eq!(q[0].user_dropped, 9);
    }

    #[test]
    fn counters_sum_into_a_snapshot() {
        let a = Arc::new(WorkerStats::new(0));
        let b = Arc::new(WorkerStats::new(1));
        a.count(100, Verdict::Accept, &Reason::Clean);
        let port = crate::policy::PortSpec {
            proto: Proto::Tcp,
            first: 1863,
            last: 1863,
        };
        b.count(50, Verdict::Drop, &Reason::Port { app: Some(0), port });
        bump(&b.blocked_by_app[0]);
        let s = snapshot(&[a, b], &[], &["msn".to_string()]);
        assert_eq!(s.totals.packets, 2);
        assert_eq!(s.totals.dropped, 1);
        assert_eq!(s.apps["msn"]["blocked_connections"], 1);
        assert_eq!(s.packets_by_verdict["drop"]["port"], 1);
        assert!(s.summary().contains("msn=1"), "{}", s.summary());
        serde_json::to_string(&s).unwrap();
    }
}
