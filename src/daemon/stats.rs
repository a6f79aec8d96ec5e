//! The live filter's counters: per-worker outcome counters and their sum
//! with the kernel's queue counters into a [`Snapshot`].
//!
//! Guarantees: the packet path only bumps relaxed atomics in its own
//! worker's [`WorkerStats`] (no lock, no allocation, no sharing of cache
//! lines between workers); everything else (summing, formatting, writing)
//! happens on the stats thread ([`crate::daemon::status`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::daemon::stages::{StageHistograms, StageSummary};
use crate::engine::{Reason, Verdict};
use crate::source::nfqueue::KernelQueue;

/// Number of distinct [`Reason`] kinds.
pub const REASONS: usize = Reason::COUNT;
/// Reason kind names, indexed by [`Reason::index`].
pub const REASON_NAMES: [&str; REASONS] = Reason::KINDS;
/// Name of the app slot of `IP:PORT` hosts lines (no app).
pub const HOSTS_FILE_PORT: &str = "(hosts-file port)";
/// App slots: 64 library apps plus "none".
pub const APP_SLOTS: usize = 65;

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
    /// Latency per stage, recorded only with `--stage-timings`.
    pub stages: StageHistograms,
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
    /// Connections dropped from the table (full, timed out) mid-inspection
    /// (since the table was created).
    pub dropped_undecided: AtomicU64,
    /// Such connections seen again, and blocked (fail closed).
    pub resumed_undecided: AtomicU64,
    /// Packets that retransmitted bytes differing from the inspected ones
    /// (`Decision::conflict`; both versions were inspected).
    pub conflicts: AtomicU64,
    /// Settled connections whose client hello offered Encrypted Client
    /// Hello (its server name is the provider's, not the real one).
    pub ech_connections: AtomicU64,
    /// TCP resets sent for blocked connections (each side counts one).
    pub resets_sent: AtomicU64,
    /// Resets that could not be sent.
    pub reset_errors: AtomicU64,
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
            stages: StageHistograms::default(),
            overruns: AtomicU64::new(0),
            recv_errors: AtomicU64::new(0),
            verdict_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            dropped_undecided: AtomicU64::new(0),
            resumed_undecided: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            ech_connections: AtomicU64::new(0),
            resets_sent: AtomicU64::new(0),
            reset_errors: AtomicU64::new(0),
        }
    }

    /// Counts one judged packet.
    #[inline]
    pub fn count(&self, len: usize, verdict: Verdict, reason: &Reason) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len as u64, Relaxed);
        let v = usize::from(verdict == Verdict::Drop);
        self.outcomes[v][reason.index()].fetch_add(1, Relaxed);
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

pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Sums of every worker's counters plus the kernel's, as written to the
/// status file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When it was taken: RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Always "stats" (the event vocabulary of [`crate::daemon::eve`]).
    pub event_type: &'static str,
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
    /// The last reload was applied (true before any reload).
    pub last_reload_ok: bool,
    /// When the last reload was tried, if ever.
    pub last_reload: Option<String>,
    /// Short SHA-256 of the policy files in force (hosts file, library
    /// directories' files): tells which files a running instance uses.
    pub policy_hash: String,
    /// Totals over all queues.
    pub totals: Totals,
    /// `{"accept": {"clean": n, ...}, "drop": {...}}`, every reason kind
    /// present (0 when none yet).
    pub packets_by_verdict: serde_json::Map<String, serde_json::Value>,
    /// `{"msn": {"dropped_packets": n, "blocked_connections": n,
    /// "kernel_blocked_packets": n}}`, every app of the library present;
    /// `kernel_blocked_packets` are the port rules' own counters (packets the
    /// kernel dropped or rejected without queueing).
    pub apps: serde_json::Map<String, serde_json::Value>,
    /// Per queue: userspace counters and the kernel's.
    pub queues: Vec<QueueSnapshot>,
    /// Latency per stage over all queues; present only with
    /// `--stage-timings` ([`crate::daemon::stages`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSummary>>,
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
    /// Packets that retransmitted bytes differing from the inspected ones.
    pub conflicts: u64,
    /// Settled connections that offered Encrypted Client Hello.
    pub ech_connections: u64,
    /// TCP resets sent for blocked connections.
    pub resets_sent: u64,
    /// Resets that could not be sent.
    pub reset_errors: u64,
    /// Socket overruns (ENOBUFS) over all queues.
    pub overruns: u64,
    /// Packets the kernel dropped because a queue was full (its own count).
    pub queue_dropped: u64,
    /// Packets the kernel could not hand to our sockets.
    pub socket_dropped: u64,
    /// Packets the NFQUEUE rules sent that no queue took because it was full
    /// (the rules' packet counters less what the queues received): passed
    /// uninspected in fail-open mode (the kernel counts these nowhere else),
    /// dropped in fail-closed mode (then also in `queue_dropped`).
    pub queue_overflow: u64,
    /// Packets the per-source queue limit (`--queue-rate`) dropped in the
    /// kernel before the queue, both families.
    pub queue_rate_limited: u64,
    /// ... of them IPv4.
    pub queue_rate_limited_ipv4: u64,
    /// ... of them IPv6.
    pub queue_rate_limited_ipv6: u64,
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
    /// Connections dropped from the table mid-inspection.
    pub dropped_undecided: u64,
    /// Such connections seen again and blocked (fail closed).
    pub resumed_undecided: u64,
    /// The kernel's counters, when the kernel lists the queue.
    pub kernel: Option<KernelQueue>,
}

/// Builds a snapshot from workers' counters and the kernel's table.
pub fn snapshot(workers: &[Arc<WorkerStats>], kernel: &[KernelQueue], app_names: &[String]) -> Snapshot {
    let now = SystemTime::now();
    let mut s = Snapshot {
        timestamp: crate::daemon::eve::timestamp(now),
        event_type: "stats",
        last_reload_ok: true,
        time: epoch_secs(now),
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
        s.totals.conflicts += get(&w.conflicts);
        s.totals.ech_connections += get(&w.ech_connections);
        s.totals.resets_sent += get(&w.resets_sent);
        s.totals.reset_errors += get(&w.reset_errors);
        s.totals.overruns += get(&w.overruns);
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
            dropped_undecided: get(&w.dropped_undecided),
            resumed_undecided: get(&w.resumed_undecided),
            kernel: kernel.iter().find(|k| k.queue == w.queue).copied(),
        });
    }
    s.totals.accepted = outcomes[0].iter().sum();
    s.totals.dropped = outcomes[1].iter().sum();
    for (v, name) in ["accept", "drop"].iter().enumerate() {
        let mut m = serde_json::Map::new();
        for (r, rn) in REASON_NAMES.iter().enumerate() {
            m.insert((*rn).into(), outcomes[v][r].into());
        }
        s.packets_by_verdict.insert((*name).into(), m.into());
    }
    for i in 0..APP_SLOTS {
        let name = match app_names.get(i) {
            Some(n) => n.as_str(),
            None if i == APP_SLOTS - 1 => HOSTS_FILE_PORT,
            None => continue,
        };
        s.apps.insert(
            name.into(),
            serde_json::json!({
                "dropped_packets": dropped_app[i],
                "blocked_connections": blocked_app[i],
                "kernel_blocked_packets": 0,
            }),
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
            .filter(|(_, v)| v["blocked_connections"].as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k}={}", v["blocked_connections"]))
            .collect();
        format!(
            "stats: {} packets ({} accepted, {} dropped), {} connections blocked [{}], {} clean; \
             kernel queue: {} waiting, {} queue-full drops, {} socket drops, {} overflowed, {} rate-limited; {} overruns",
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
            t.queue_rate_limited,
            overruns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Proto;

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
