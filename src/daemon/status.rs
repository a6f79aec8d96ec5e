//! The status the live filter reports: counters of every worker summed with
//! the kernel's own queue and rule counters, written as a JSON status file
//! and a summary log line by the stats thread.
//!
//! Queue overflow in fail-open mode is counted nowhere by the kernel; it is
//! derived here: packets the NFQUEUE rules sent minus packets the queues
//! received (the kernel numbers every queued packet, and a packet is counted
//! by its rule before it gets its number). Guarantees of `queue_overflow`:
//! - never phantom: the rule counters are read before the queue counters,
//!   and the queue baseline is read before the rules are created, so every
//!   read is at most the truth;
//! - never down: what was reported is the floor of every later report, the
//!   last status file (after the rules are gone) included;
//! - exact across reloads: a reload leaves the queueing chain, and so its
//!   counters, untouched when its rules do not change (they depend on the
//!   queue options only); when they do change, the count so far is carried.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::daemon::outfile;
use crate::daemon::stats::{self, Snapshot, WorkerStats};
use crate::daemon::worker::EngineHandle;
use crate::kernel::install::{InstallReport, Runner, SystemRunner};
use crate::kernel::iptables::{self, Family};
use crate::log::{Level, log};
use crate::source::nfqueue::{self, KernelQueue};

/// What the stats thread, the reload path and shutdown share.
pub struct Status {
    /// Every worker's counters.
    pub workers: Vec<Arc<WorkerStats>>,
    /// The engine in force (for app names).
    pub handle: EngineHandle,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Refused reloads.
    pub reload_failures: AtomicU64,
    /// Start time.
    pub started: Instant,
    /// Where the JSON status goes.
    pub status_file: Option<PathBuf>,
    /// Socket inode of each queue, to read the kernel's drop counters.
    pub inodes: Vec<Option<u64>>,
    /// Packets our queues had received just before the queueing chain (and
    /// so its counters) was last created.
    pub queued_at_install: AtomicU64,
    /// Overflow counted before the queueing chain was last created.
    pub overflow_before: AtomicU64,
    /// Highest overflow reported so far: reports never go down.
    pub overflow_reported: AtomicU64,
    /// The queueing chain's rules as installed, per family (a reload that
    /// would install the same keeps the chain and its counters).
    pub inspect_installed: Mutex<Vec<(Family, String)>>,
}

/// Sums the packet counters of the NFQUEUE rules in `iptables -nvxL` output.
pub fn nfqueue_rule_packets(list: &str) -> u64 {
    list.lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Packets the NFQUEUE rules of both families have sent to the queues;
/// `None` when no family has the chain (the rules are gone).
fn rule_packets() -> Option<u64> {
    let counts: Vec<u64> = ["iptables", "ip6tables"]
        .into_iter()
        .filter_map(|cmd| {
            SystemRunner
                .run(
                    cmd,
                    &[
                        "-w",
                        "-t",
                        "mangle",
                        "-n",
                        "-v",
                        "-x",
                        "-L",
                        iptables::CHAIN_INSPECT,
                    ],
                    None,
                )
                .ok()
        })
        .map(|out| nfqueue_rule_packets(&out))
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

impl Status {
    /// Packets our queues have received (the kernel's id sequence).
    pub fn queued(&self, kernel: &[KernelQueue]) -> u64 {
        let ours: Vec<u16> = self.workers.iter().map(|w| w.queue).collect();
        kernel
            .iter()
            .filter(|q| ours.contains(&q.queue))
            .map(|q| q.id_sequence)
            .sum()
    }

    /// Packets our queues have received so far, read from the kernel now.
    pub fn queued_now(&self) -> u64 {
        self.queued(&nfqueue::kernel_queues())
    }

    /// The queueing chain was created anew, so its counters restart: keep
    /// the overflow counted so far (`before`) and the queue count read just
    /// before the chain was created (`queued_before`) as the new baseline.
    pub fn inspect_recreated(&self, before: u64, queued_before: u64) {
        self.overflow_before.store(before, Relaxed);
        self.queued_at_install.store(queued_before, Relaxed);
    }

    /// Records what an install did: a recreated queueing chain restarts the
    /// counters; the installed chain is remembered for the next reload.
    pub fn installed(&self, report: &InstallReport, before: u64, queued_before: u64) {
        if !report.inspect_kept {
            self.inspect_recreated(before, queued_before);
        }
        if let Ok(mut i) = self.inspect_installed.lock() {
            i.clone_from(&report.inspect);
        }
    }

    /// The queueing chain's rules as installed (for [`crate::kernel::install::install_keeping`]).
    pub fn inspect_rules(&self) -> Vec<(Family, String)> {
        self.inspect_installed
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }

    /// Packets the kernel passed (fail-open) or dropped (fail-closed)
    /// because a queue was full, so far; never less than reported before.
    pub fn overflow(&self) -> u64 {
        // Rules first, queues second: a packet is counted by its rule before
        // it is queued, so this order can only under-count, never invent.
        let now = rule_packets().map(|rules| {
            let queued = self
                .queued_now()
                .saturating_sub(self.queued_at_install.load(Relaxed));
            self.overflow_before.load(Relaxed) + rules.saturating_sub(queued)
        });
        let now = now.unwrap_or(0);
        self.overflow_reported.fetch_max(now, Relaxed).max(now)
    }

    /// Everything summed now.
    pub fn snapshot(&self, running: bool) -> Snapshot {
        let engine = self.handle.load();
        let names: Vec<String> = engine
            .policy()
            .library()
            .apps()
            .iter()
            .map(|a| a.name.clone())
            .collect();
        let kernel = nfqueue::kernel_queues();
        let mut s = stats::snapshot(&self.workers, &kernel, &names);
        s.totals.queue_overflow = self.overflow();
        s.running = running;
        s.uptime = self.started.elapsed().as_secs_f64();
        s.reloads = self.reloads.load(Relaxed);
        s.reload_failures = self.reload_failures.load(Relaxed);
        // Socket drops as the kernel counts them for our sockets.
        for (q, ino) in s.queues.iter_mut().zip(&self.inodes) {
            if let (Some(ino), Some(k)) = (ino, q.kernel.as_mut())
                && let Some(d) = nfqueue::socket_drops(*ino)
            {
                k.user_dropped = k.user_dropped.max(d);
            }
        }
        s
    }

    /// Writes the status file (when one is configured) and returns what it wrote.
    pub fn write_status(&self, running: bool) -> Snapshot {
        let s = self.snapshot(running);
        if let Some(path) = &self.status_file {
            let text = serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
            if let Err(e) = outfile::write_replace(path, &text) {
                log(
                    Level::Warning,
                    format_args!("status file {}: {e}", path.display()),
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nfqueue_rule_counters() {
        let out = "Chain APPWALL_INSPECT (2 references)\n    pkts      bytes target     prot opt in     out     source               destination\n       7      364 RETURN     6    --  *      *       0.0.0.0/0            0.0.0.0/0            u32 \"0x0>>0x18=0x45\"\n    1200    99000 NFQUEUE    6    --  *      *       0.0.0.0/0            0.0.0.0/0            NFQUEUE num 0 bypass\n      34     2000 NFQUEUE    17   --  *      *       0.0.0.0/0            0.0.0.0/0            NFQUEUE num 0 bypass\n";
        assert_eq!(super::nfqueue_rule_packets(out), 1234);
        assert_eq!(super::nfqueue_rule_packets(""), 0);
    }
}
