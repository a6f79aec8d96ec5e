//! `appwall run`: the live filter.
//!
//! Start-up order, chosen so a failure at any step leaves nothing behind:
//! validate the policy and build the engine; take the per-network-namespace
//! instance lock; catch signals; drop privileges (see [`crate::privilege`]:
//! CAP_NET_ADMIN and CAP_NET_RAW stay, `--user`); bind every queue (a queue
//! owned by someone else stops us here, before any rule changes); start one named worker per
//! queue; install the rules (replacing a stale install in the same
//! transaction). Shutdown runs the other way: rules out first (no new
//! packets are queued), then the workers answer what is left and unbind.
//! SIGHUP reloads: new policy and engine are validated first, the kernel
//! rules swapped atomically, then the engine; a bad file changes nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::fcntl::{Flock, FlockArg};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::RunArgs;
use crate::commands::rules::rule_options;
use crate::commands::{AppError, build_engine, engine_config, load_policy};
use crate::engine::Engine;
use crate::install::{self, Runner, SystemRunner};
use crate::iptables::{self, RuleOptions};
use crate::queue::{EngineHandle, NfqSource, QueueError, QueueOptions, Worker, WorkerConfig};
use crate::stats::{self, BlockEvent, Level, WorkerStats};

/// Directory of the instance locks.
pub const LOCK_DIR: &str = "/run/appwall";

/// Held while an instance runs in this network namespace; released by the
/// kernel when the process dies, however it dies.
pub struct InstanceLock {
    _file: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

/// The lock file of the current network namespace.
pub fn lock_path() -> PathBuf {
    let ns = fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("net:[")?.strip_suffix(']').map(str::to_string)
        })
        .unwrap_or_else(|| "default".into());
    Path::new(LOCK_DIR).join(format!("netns-{ns}.lock"))
}

impl InstanceLock {
    /// Takes the lock, or says which process holds it.
    pub fn acquire() -> Result<InstanceLock, AppError> {
        let path = lock_path();
        let err = |e: std::io::Error| AppError::Other(format!("cannot open {}: {e}", path.display()));
        fs::create_dir_all(LOCK_DIR).map_err(err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                f.set_len(0).map_err(err)?;
                f.rewind().map_err(err)?;
                writeln!(f, "{}", std::process::id()).map_err(err)?;
                Ok(InstanceLock { _file: f, path })
            }
            Err((mut f, _)) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                Err(AppError::Other(format!(
                    "appwall is already running in this network namespace (pid {}, lock {}); \
                     only one instance may own the queues",
                    pid.trim(),
                    path.display()
                )))
            }
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Keeps /run tidy. Unlinked while still locked (the file closes
        // after this body); a second start in this very instant could lock
        // the unlinked file while a third creates a new one: accepted.
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes the rules when dropped unless defused: covers every early return.
struct Installed {
    armed: bool,
}

impl Installed {
    fn remove_now(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        match install::remove(&SystemRunner) {
            Ok(r) => stats::log(
                Level::Info,
                format_args!(
                    "rules removed ({} chains/jumps, {} sets)",
                    r.removed.len(),
                    r.sets.len()
                ),
            ),
            Err(e) => stats::log(Level::Error, format_args!("removing rules: {e}")),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.remove_now();
    }
}

fn app_names(engine: &Engine) -> Vec<String> {
    engine
        .policy()
        .library()
        .apps()
        .iter()
        .map(|a| a.name.clone())
        .collect()
}

struct Shared {
    workers: Vec<Arc<WorkerStats>>,
    handle: EngineHandle,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    started: Instant,
    status_file: Option<PathBuf>,
    inodes: Vec<Option<u64>>,
    /// Packets our queues had received when the rules (and so their
    /// counters) were last installed.
    queued_at_install: AtomicU64,
    /// Overflow counted before the last install (rule counters restart then).
    overflow_before: AtomicU64,
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
        .map(|out| stats::nfqueue_rule_packets(&out))
        .sum()
}

impl Shared {
    /// Packets our queues have received (the kernel's id sequence).
    fn queued(&self, kernel: &[stats::KernelQueue]) -> u64 {
        let ours: Vec<u16> = self.workers.iter().map(|w| w.queue).collect();
        kernel
            .iter()
            .filter(|q| ours.contains(&q.queue))
            .map(|q| q.id_sequence)
            .sum()
    }

    /// Rule counters restart with each install: keep the overflow counted
    /// so far (`before`, read just before installing) and start again.
    fn rules_installed(&self, before: u64) {
        self.overflow_before.store(before, Relaxed);
        self.queued_at_install
            .store(self.queued(&stats::kernel_queues()), Relaxed);
    }

    fn overflow(&self, kernel: &[stats::KernelQueue]) -> u64 {
        let queued = self
            .queued(kernel)
            .saturating_sub(self.queued_at_install.load(Relaxed));
        self.overflow_before.load(Relaxed) + rule_packets().saturating_sub(queued)
    }

    fn snapshot(&self, running: bool) -> stats::Snapshot {
        let names = app_names(&self.handle.load());
        let kernel = stats::kernel_queues();
        let mut s = stats::snapshot(&self.workers, &kernel, &names);
        s.totals.queue_overflow = self.overflow(&kernel);
        s.running = running;
        s.uptime = self.started.elapsed().as_secs_f64();
        s.reloads = self.reloads.load(Relaxed);
        s.reload_failures = self.reload_failures.load(Relaxed);
        // Socket drops as the kernel counts them for our sockets.
        for (q, ino) in s.queues.iter_mut().zip(&self.inodes) {
            if let (Some(ino), Some(k)) = (ino, q.kernel.as_mut())
                && let Some(d) = crate::queue::socket_drops(*ino)
            {
                k.user_dropped = k.user_dropped.max(d);
            }
        }
        s
    }

    fn write_status(&self, running: bool) -> stats::Snapshot {
        let s = self.snapshot(running);
        if let Some(path) = &self.status_file {
            let text = serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
            if let Err(e) = stats::write_atomic(path, &text) {
                stats::log(
                    Level::Warning,
                    format_args!("status file {}: {e}", path.display()),
                );
            }
        }
        s
    }
}

fn spawn_named<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, AppError> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| AppError::Other(format!("cannot start thread {name}: {e}")))
}

fn event_writer(rx: crossbeam_channel::Receiver<BlockEvent>, path: Option<PathBuf>) {
    let mut out: Option<Box<dyn Write>> = match &path {
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = fs::create_dir_all(d);
            }
            match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Some(Box::new(f)),
                Err(e) => {
                    stats::log(Level::Error, format_args!("event log {}: {e}", p.display()));
                    None
                }
            }
        }
        None => None,
    };
    for ev in rx {
        stats::log(
            Level::Info,
            format_args!(
                "blocked {} {}:{} -> {}:{} app {}: {}",
                ev.proto,
                ev.src,
                ev.sport,
                ev.dst,
                ev.dport,
                ev.engine.reason_app(&ev.reason).unwrap_or("-"),
                ev.engine.reason_text(&ev.reason)
            ),
        );
        if let Some(w) = out.as_mut() {
            let line = ev.to_json();
            if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
                stats::log(
                    Level::Error,
                    format_args!("event log write failed; events go to the log only"),
                );
                out = None;
            }
        }
    }
}

/// Rebuilds policy, engine and rules; swaps them in only when all is valid.
fn reload(
    args: &RunArgs,
    opts: &RuleOptions,
    handle: &EngineHandle,
    shared: &Shared,
) -> Result<(), AppError> {
    let policy = load_policy(&args.policy, false)?;
    let engine = build_engine(policy, engine_config(&args.engine))?;
    // Installing restarts the rules' counters (also when it fails and the
    // running policy is put back).
    let before = shared.overflow(&stats::kernel_queues());
    let result = install::install(&SystemRunner, &engine, opts);
    shared.rules_installed(before);
    if let Err(e) = result {
        // Part of it may be in (sets before rules, IPv4 before IPv6): put
        // the running policy back so kernel and engine still agree.
        let _ = install::install(&SystemRunner, &handle.load(), opts);
        return Err(AppError::Other(e.to_string()));
    }
    handle.store(Arc::new(engine));
    Ok(())
}

/// Runs `appwall run` until SIGINT/SIGTERM.
pub fn run(args: &RunArgs) -> Result<ExitCode, AppError> {
    let k = &args.kernel;
    if u32::from(k.queue) + u32::from(k.queues) > 65536 {
        return Err(AppError::Other("--queue + --queues runs past queue 65535".into()));
    }
    let policy = load_policy(&args.policy, false)?;
    let engine = build_engine(policy, engine_config(&args.engine))?;
    let opts = rule_options(k);
    if !crate::privilege::may_admin_network() {
        return Err(AppError::Other(
            "appwall run installs iptables rules and binds NFQUEUE queues: run it as root or with CAP_NET_ADMIN (the policy itself is valid: `appwall check` says so without privileges)".into(),
        ));
    }
    let _lock = InstanceLock::acquire()?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| AppError::Other(format!("cannot catch signals: {e}")))?;
    // Before the first thread: capabilities are per thread and inherited.
    let dropped = crate::privilege::drop_privileges(args.user.as_deref())
        .map_err(|e| AppError::Other(e.to_string()))?;
    stats::log(Level::Info, format_args!("{dropped}"));

    let qopts = QueueOptions {
        fail_open: !k.fail_closed,
        max_len: args.queue_maxlen,
        rcvbuf: args.rcvbuf,
        ..QueueOptions::default()
    };
    let mut sources = Vec::new();
    for q in k.queue..k.queue + k.queues {
        let src = NfqSource::open(q, &qopts).map_err(|e| match e {
            QueueError::Busy { .. } => AppError::Other(e.to_string()),
            other => AppError::Other(other.to_string()),
        })?;
        stats::log(
            Level::Info,
            format_args!(
                "queue {q} bound: fail-{}, GSO on, max length {}, receive buffer {}",
                if k.fail_closed { "closed" } else { "open" },
                args.queue_maxlen,
                src.rcvbuf.map_or("default".into(), |b| format!("{b} bytes"))
            ),
        );
        sources.push(src);
    }

    if args.accept_all {
        stats::log(
            Level::Warning,
            format_args!(
                "--accept-all: every queued packet is accepted unjudged; nothing is blocked but the port rules"
            ),
        );
    } else if args.no_fast_path {
        stats::log(
            Level::Warning,
            format_args!(
                "--no-fast-path: connections are never handed to the kernel; every packet is queued and judged"
            ),
        );
    }
    let handle: EngineHandle = Arc::new(ArcSwap::from_pointee(engine));
    let stop = Arc::new(AtomicBool::new(false));
    let (ev_tx, ev_rx) = crossbeam_channel::bounded::<BlockEvent>(4096);
    let events = spawn_named("appwall-events".into(), {
        let path = args.events.clone();
        move || event_writer(ev_rx, path)
    })?;
    let mut shared = Shared {
        workers: Vec::new(),
        handle: Arc::clone(&handle),
        reloads: AtomicU64::new(0),
        reload_failures: AtomicU64::new(0),
        started: Instant::now(),
        status_file: args.status_file.clone(),
        inodes: sources.iter().map(|s| s.inode).collect(),
        queued_at_install: AtomicU64::new(0),
        overflow_before: AtomicU64::new(0),
    };
    let mut workers = Vec::new();
    for src in sources {
        let q = src.queue_num();
        let st = Arc::new(WorkerStats::new(q));
        shared.workers.push(Arc::clone(&st));
        let cfg = WorkerConfig {
            queue: q,
            marks: opts.marks,
            fail_closed: k.fail_closed,
            max_flows: args.engine.max_flows,
            flow_timeout_ns: args.engine.flow_timeout.saturating_mul(1_000_000_000),
            accept_all: args.accept_all,
            no_fast_path: args.no_fast_path,
        };
        let w = Worker::new(src, Arc::clone(&handle), st, Some(ev_tx.clone()), cfg);
        let stop = Arc::clone(&stop);
        workers.push(spawn_named(format!("appwall-q{q}"), move || w.run(&stop))?);
    }
    drop(ev_tx);

    let mut installed = Installed { armed: true };
    match install::install(&SystemRunner, &handle.load(), &opts) {
        Ok(r) => {
            if r.replaced {
                stats::log(
                    Level::Warning,
                    format_args!("found appwall rules left by an earlier instance; replaced them"),
                );
            }
            stats::log(
                Level::Info,
                format_args!(
                    "rules installed ({} restore transactions, {} ipsets); filtering on queues {}..{}",
                    r.applied.len(),
                    r.sets.len(),
                    k.queue,
                    k.queue + k.queues - 1
                ),
            );
        }
        Err(e) => {
            installed.remove_now();
            stop.store(true, Relaxed);
            for w in workers {
                let _ = w.join();
            }
            return Err(AppError::Other(format!("installing rules: {e}")));
        }
    }

    let queued_now = shared.queued(&stats::kernel_queues());
    shared.queued_at_install.store(queued_now, Relaxed);
    let shared = Arc::new(shared);
    let stats_thread = spawn_named("appwall-stats".into(), {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        let every = Duration::from_secs(args.stats_interval.max(1));
        move || {
            let mut next = Instant::now();
            while !stop.load(Relaxed) {
                if Instant::now() >= next {
                    let s = shared.write_status(true);
                    stats::log(Level::Info, format_args!("{}", s.summary()));
                    next += every;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    })?;

    let mut failed = None;
    'main: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => match reload(args, &opts, &handle, &shared) {
                    Ok(()) => {
                        shared.reloads.fetch_add(1, Relaxed);
                        stats::log(Level::Info, format_args!("policy reloaded"));
                    }
                    Err(e) => {
                        shared.reload_failures.fetch_add(1, Relaxed);
                        for line in e.to_string().lines() {
                            stats::log(Level::Error, format_args!("{line}"));
                        }
                        stats::log(
                            Level::Error,
                            format_args!("reload refused; the running policy stays in force"),
                        );
                    }
                },
                _ => {
                    stats::log(Level::Info, format_args!("signal {sig}: shutting down"));
                    break 'main;
                }
            }
        }
        if workers.iter().any(|w| w.is_finished()) {
            failed = Some("a queue worker stopped".to_string());
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }

    installed.remove_now();
    stop.store(true, Relaxed);
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stats::log(Level::Error, format_args!("{e}"));
                failed.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                failed.get_or_insert_with(|| "a queue worker panicked".into());
            }
        }
    }
    let _ = stats_thread.join();
    let _ = events.join();
    let s = shared.write_status(false);
    stats::log(Level::Info, format_args!("{}", s.summary()));
    match failed {
        Some(f) => Err(AppError::Other(format!("{f}; rules removed"))),
        None => Ok(ExitCode::SUCCESS),
    }
}
