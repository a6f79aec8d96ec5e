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
//!
//! The per-source limit's drops (`queue_rate_limited`, per family) come
//! from the same listing of the queueing chain: the packet counter of its
//! hashlimit rule ([`crate::kernel::queue_rate`]), carried like the port
//! rules' counts so they never go down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::daemon::metrics;
use crate::daemon::outfile;
use crate::daemon::stages::summarize;
use crate::daemon::stats::{self, Snapshot, WorkerStats};
use crate::daemon::worker::EngineHandle;
use crate::kernel::install::{InstallReport, Runner, SystemRunner};
use crate::kernel::iptables::{self, Family};
use crate::kernel::queue_rate;
use crate::log::{Level, log};
use crate::policy::load::Sources;
use crate::source::nfqueue::{self, KernelQueue};

/// What the stats thread, the reload path and shutdown share.
pub struct Status {
    /// Every worker's counters.
    pub workers: Vec<Arc<WorkerStats>>,
    /// Report the workers' stage latencies (`--stage-timings`).
    pub stage_timings: bool,
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
    /// Short hash of the policy files in force ([`policy_hash`]).
    pub policy_hash: Mutex<String>,
    /// The last reload: when, and whether it was applied.
    pub last_reload: Mutex<Option<(SystemTime, bool)>>,
    /// The last metrics text served and when it was made (scrapes reuse it
    /// for a second).
    pub metrics_cache: Mutex<Option<(Instant, String)>>,
    /// Port-rule packet counts carried across rule rebuilds and removal.
    pub kernel_blocks: Mutex<KernelBlocks>,
    /// Packets the per-source queue limit dropped, by family (`ipv4`,
    /// `ipv6`), carried the same way.
    pub rate_limited: Mutex<KernelBlocks>,
}

/// Packets the port rules blocked, per app, that never go down: a rule
/// rebuilt by a reload restarts its counter (what it had is carried), and
/// once the rules are gone (the last status file) the last reading stays.
#[derive(Debug, Default)]
pub struct KernelBlocks {
    /// Per app: (last reading, carried from earlier rules).
    apps: std::collections::BTreeMap<String, (u64, u64)>,
}

impl KernelBlocks {
    /// Takes a reading (apps absent from it keep their count) and returns
    /// every app's total.
    pub fn update(&mut self, reading: &[(String, u64)]) -> Vec<(String, u64)> {
        for (app, n) in reading {
            let e = self.apps.entry(app.clone()).or_default();
            if *n < e.0 {
                e.1 += e.0;
            }
            e.0 = *n;
        }
        self.apps
            .iter()
            .map(|(a, (last, carried))| (a.clone(), last + carried))
            .collect()
    }
}

/// Short SHA-256 (12 hex digits) of the policy files: the hosts file and
/// every file directly in the library directories, by name, with their
/// paths, so an edit, a rename or a new file changes it. Unreadable files
/// count by name alone.
pub fn policy_hash(sources: &Sources) -> String {
    use sha2::{Digest, Sha256};
    let mut files: Vec<PathBuf> = sources.hosts.iter().cloned().collect();
    for dir in &sources.library_dirs {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.is_file());
        names.sort();
        files.extend(names);
    }
    let mut h = Sha256::new();
    h.update(if sources.no_builtin_library {
        b"-\n"
    } else {
        b"+\n"
    });
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update(b"\0");
    }
    h.finalize()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Packet counters of appwall's port rules in `iptables -nvxL` output, by
/// the key their comment carries (`appwall app-msn` -> `app-msn`).
pub fn port_rule_packets(list: &str) -> Vec<(String, u64)> {
    list.lines()
        .filter_map(|l| {
            let key = l.split("/* appwall ").nth(1)?.split(" */").next()?;
            let pkts = l.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((key.to_string(), pkts))
        })
        .collect()
}

/// Packets the kernel port rules blocked, per app name (IP:PORT lines under
/// [`stats::HOSTS_FILE_PORT`]), over both families and both tables (drop
/// in mangle, reject in filter).
fn kernel_port_blocks() -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for cmd in ["iptables", "ip6tables"] {
        for table in ["mangle", "filter"] {
            let Ok(list) = SystemRunner.run(
                cmd,
                &["-w", "-t", table, "-n", "-v", "-x", "-L", iptables::CHAIN],
                None,
            ) else {
                continue;
            };
            for (key, n) in port_rule_packets(&list) {
                let app = key
                    .strip_prefix("app-")
                    .map_or(stats::HOSTS_FILE_PORT.to_string(), str::to_string);
                match out.iter_mut().find(|(a, _)| *a == app) {
                    Some(e) => e.1 += n,
                    None => out.push((app, n)),
                }
            }
        }
    }
    out
}

/// Directory of appwall's run-time files.
pub const RUN_DIR: &str = "/run/appwall";

/// The network namespace of this process (`net:[4026531840]` -> its
/// number), if it can be read.
pub fn netns_id(pid: &str) -> Option<String> {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = l.to_string_lossy().into_owned();
    s.strip_prefix("net:[")?.strip_suffix(']').map(str::to_string)
}

/// The default status file of this network namespace:
/// `/run/appwall/status.json` in the initial one (that of process 1),
/// `/run/appwall/NETNS-ID/status.json` in any other, so instances in
/// different namespaces never share one. When process 1's namespace cannot
/// be read (no privileges), an existing per-namespace file wins.
pub fn default_status_path() -> PathBuf {
    let own = netns_id("self");
    let per_ns = own
        .as_ref()
        .map(|n| Path::new(RUN_DIR).join(n).join("status.json"));
    status_path_for(
        own.as_deref(),
        netns_id("1").as_deref(),
        per_ns.is_some_and(|p| p.exists()),
    )
}

/// [`default_status_path`] from this process's namespace, process 1's
/// (`None`: unreadable), and whether the per-namespace file exists.
fn status_path_for(own: Option<&str>, init: Option<&str>, per_ns_exists: bool) -> PathBuf {
    let base = Path::new(RUN_DIR);
    match (own, init) {
        (None, _) => base.join("status.json"),
        (Some(o), Some(i)) if o == i => base.join("status.json"),
        (Some(o), Some(_)) => base.join(o).join("status.json"),
        (Some(o), None) if per_ns_exists => base.join(o).join("status.json"),
        (Some(_), None) => base.join("status.json"),
    }
}

/// The metrics file beside a status file: `status.json` -> `status.prom`.
pub fn metrics_path(status: &Path) -> PathBuf {
    status.with_extension("prom")
}

/// Sums the packet counters of the NFQUEUE rules in `iptables -nvxL` output.
pub fn nfqueue_rule_packets(list: &str) -> u64 {
    list.lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The queueing chain's listing with counters (`iptables -nvxL
/// APPWALL_INSPECT`), per family that has it.
fn inspect_listings() -> Vec<(Family, String)> {
    [Family::V4, Family::V6]
        .into_iter()
        .filter_map(|fam| {
            SystemRunner
                .run(
                    fam.command(),
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
                .map(|out| (fam, out))
        })
        .collect()
}

/// The family label of status and metrics: `ipv4`, `ipv6`.
pub fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
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
    /// The same reading of the queueing chain updates the per-source
    /// limit's drops ([`Status::rate_limited_totals`]).
    pub fn overflow(&self) -> u64 {
        // Rules first, queues second: a packet is counted by its rule before
        // it is queued, so this order can only under-count, never invent.
        let listings = inspect_listings();
        let limited: Vec<(String, u64)> = listings
            .iter()
            .map(|(fam, l)| (family_label(*fam).to_string(), queue_rate::limited_packets(l)))
            .collect();
        if let Ok(mut r) = self.rate_limited.lock() {
            r.update(&limited);
        }
        let rules = (!listings.is_empty())
            .then(|| listings.iter().map(|(_, l)| nfqueue_rule_packets(l)).sum::<u64>());
        let now = rules.map(|rules| {
            let queued = self
                .queued_now()
                .saturating_sub(self.queued_at_install.load(Relaxed));
            self.overflow_before.load(Relaxed) + rules.saturating_sub(queued)
        });
        let now = now.unwrap_or(0);
        self.overflow_reported.fetch_max(now, Relaxed).max(now)
    }

    /// Packets the per-source queue limit dropped so far, (IPv4, IPv6), as
    /// of the last reading ([`Status::overflow`]); never down.
    pub fn rate_limited_totals(&self) -> (u64, u64) {
        let totals = match self.rate_limited.lock() {
            Ok(mut r) => r.update(&[]),
            Err(_) => Vec::new(),
        };
        let get = |fam| {
            totals
                .iter()
                .find(|(k, _)| k == family_label(fam))
                .map_or(0, |(_, n)| *n)
        };
        (get(Family::V4), get(Family::V6))
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
        if self.stage_timings {
            s.stages = Some(summarize(self.workers.iter().map(|w| &w.stages)));
        }
        s.totals.queue_overflow = self.overflow();
        let (v4, v6) = self.rate_limited_totals();
        s.totals.queue_rate_limited_ipv4 = v4;
        s.totals.queue_rate_limited_ipv6 = v6;
        s.totals.queue_rate_limited = v4 + v6;
        s.running = running;
        s.uptime = self.started.elapsed().as_secs_f64();
        s.reloads = self.reloads.load(Relaxed);
        s.reload_failures = self.reload_failures.load(Relaxed);
        if let Ok(h) = self.policy_hash.lock() {
            s.policy_hash.clone_from(&h);
        }
        if let Ok(Some((t, ok))) = self.last_reload.lock().as_deref() {
            s.last_reload = Some(crate::daemon::eve::timestamp(*t));
            s.last_reload_ok = *ok;
        }
        let blocks = match self.kernel_blocks.lock() {
            Ok(mut k) => k.update(&kernel_port_blocks()),
            Err(_) => Vec::new(),
        };
        for (app, n) in blocks {
            if let Some(v) = s.apps.get_mut(&app) {
                v["kernel_blocked_packets"] = n.into();
            }
        }
        // Socket drops as the kernel counts them for our sockets.
        for (q, ino) in s.queues.iter_mut().zip(&self.inodes) {
            if let (Some(ino), Some(k)) = (ino, q.kernel.as_mut())
                && let Some(d) = nfqueue::socket_drops(*ino)
            {
                k.user_dropped = k.user_dropped.max(d);
            }
        }
        for k in s.queues.iter().filter_map(|q| q.kernel) {
            s.totals.queue_dropped += k.queue_dropped;
            s.totals.socket_dropped += k.user_dropped;
        }
        s
    }

    /// Writes the status file and the metrics file beside it
    /// ([`metrics_path`]) when a status file is configured, and returns
    /// what it wrote.
    pub fn write_status(&self, running: bool) -> Snapshot {
        let s = self.snapshot(running);
        if let Some(path) = &self.status_file {
            let text = serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
            let prom = metrics_path(path);
            for (p, text) in [
                (path.as_path(), text),
                (prom.as_path(), metrics::render(&s, false)),
            ] {
                if let Err(e) = outfile::write_replace(p, &text) {
                    log(Level::Warning, format_args!("status file {}: {e}", p.display()));
                }
            }
        }
        s
    }

    /// OpenMetrics text of a snapshot at most a second old (for scrapes).
    pub fn metrics_text(&self) -> String {
        if let Ok(c) = self.metrics_cache.lock()
            && let Some((at, text)) = c.as_ref()
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return text.clone();
        }
        let text = metrics::render(&self.snapshot(true), true);
        if let Ok(mut c) = self.metrics_cache.lock() {
            *c = Some((Instant::now(), text.clone()));
        }
        text
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

    #[test]
    fn kernel_block_counts_never_go_down() {
        let mut k = super::KernelBlocks::default();
        let r = |v: &[(&str, u64)]| v.iter().map(|(a, n)| (a.to_string(), *n)).collect::<Vec<_>>();
        assert_eq!(k.update(&r(&[("msn", 5)])), r(&[("msn", 5)]));
        assert_eq!(
            k.update(&r(&[("msn", 7), ("irc", 1)])),
            r(&[("irc", 1), ("msn", 7)])
        );
        // Rules rebuilt: msn's counter restarts.
        assert_eq!(
            k.update(&r(&[("msn", 2), ("irc", 1)])),
            r(&[("irc", 1), ("msn", 9)])
        );
        // Rules gone: nothing read, nothing lost.
        assert_eq!(k.update(&[]), r(&[("irc", 1), ("msn", 9)]));
    }

    #[test]
    fn status_paths_are_per_network_namespace() {
        use super::status_path_for as f;
        let p = |s: &str| std::path::PathBuf::from(s);
        assert_eq!(
            f(Some("4026531840"), Some("4026531840"), false),
            p("/run/appwall/status.json")
        );
        assert_eq!(
            f(Some("4026532999"), Some("4026531840"), false),
            p("/run/appwall/4026532999/status.json")
        );
        // Unprivileged `appwall status` cannot read process 1's namespace.
        assert_eq!(
            f(Some("4026532999"), None, true),
            p("/run/appwall/4026532999/status.json")
        );
        assert_eq!(f(Some("4026532999"), None, false), p("/run/appwall/status.json"));
        assert_eq!(f(None, None, false), p("/run/appwall/status.json"));
    }
}
