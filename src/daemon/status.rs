//! The status the live filter reports: counters of every worker summed with
//! the kernel's own queue and rule counters, written as a JSON status file
//! and a summary log line by the stats thread.
//!
//! Queue overflow in fail-open mode is counted nowhere by the kernel; it is
//! derived here: packets the NFQUEUE rules sent minus packets the queues
//! received, carried across rule re-installs (whose counters restart).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::daemon::outfile;
use crate::daemon::stats::{self, Snapshot, WorkerStats};
use crate::daemon::worker::EngineHandle;
use crate::kernel::install::{Runner, SystemRunner};
use crate::kernel::iptables;
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
    /// Packets our queues had received when the rules (and so their
    /// counters) were last installed.
    pub queued_at_install: AtomicU64,
    /// Overflow counted before the last install (rule counters restart then).
    pub overflow_before: AtomicU64,
}

/// Sums the packet counters of the NFQUEUE rules in `iptables -nvxL` output.
pub fn nfqueue_rule_packets(list: &str) -> u64 {
    list.lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Packets the NFQUEUE rules of both families have sent to the queues.
fn rule_packets() -> u64 {
    ["iptables", "ip6tables"]
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
        .sum()
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

    /// Rule counters restart with each install: keep the overflow counted
    /// so far (`before`, read just before installing) and start again.
    pub fn rules_installed(&self, before: u64) {
        self.overflow_before.store(before, Relaxed);
        self.queued_at_install
            .store(self.queued(&nfqueue::kernel_queues()), Relaxed);
    }

    /// Packets the kernel passed or dropped because a queue was full.
    pub fn overflow(&self, kernel: &[KernelQueue]) -> u64 {
        let queued = self
            .queued(kernel)
            .saturating_sub(self.queued_at_install.load(Relaxed));
        self.overflow_before.load(Relaxed) + rule_packets().saturating_sub(queued)
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
        s.totals.queue_overflow = self.overflow(&kernel);
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
