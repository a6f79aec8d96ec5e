//! The live filter as a library: `appwall run` is a thin front end over
//! [`run`].
//!
//! Start-up order, chosen so a failure at any step leaves nothing behind:
//! catch signals (first of all, so a SIGHUP during start-up is kept, not
//! fatal); validate the policy and build the engine; take the
//! per-network-namespace instance lock ([`lock`]); drop privileges
//! ([`privilege`]: CAP_NET_ADMIN and CAP_NET_RAW stay, `--user`); open the
//! event log and check the status file's path as that user ([`outfile`]:
//! no symbolic links, safe directories); bind every queue (a queue owned by
//! someone else stops us here, before any rule changes); start one named
//! [`worker`] per queue; make every descriptor close-on-exec (no rule tool
//! inherits a queue socket); install the rules (replacing a stale install
//! in the same transaction). Shutdown runs the other way: rules out first
//! (no new packets are queued), then the workers answer what is left and
//! unbind. SIGHUP reloads ([`reload`]): the new policy and engine are
//! validated first, the engine swapped, then the kernel rules, then clean
//! connections of changed hosts are queued again; a bad file changes
//! nothing. SIGHUP and SIGUSR1 reopen the event log (log rotation;
//! SIGUSR1 does only that). docs/security.md lists these guarantees with their tests.
//!
//! Schedules (`when` of rules, `app@name` in the hosts file): the engine
//! holds no clock. The daemon reads the clock ([`crate::policy::Clock`]:
//! the system's; `APPWALL_FAKE_NOW` for tests), builds the engine from the
//! policy as in force now ([`crate::policy::Policy::at`]), and at each
//! window opening or closing swaps in a new one exactly as a reload does
//! ([`reload::swap_in`]: kernel rules, then clean connections of hosts
//! whose apps or rules changed re-queued), within the main loop's 50 ms.
//!
//! Rooms: [`worker`] (the per-queue loop), [`stats`] (hot counters),
//! [`status`] (status file, overflow accounting), [`events`] (blocked
//! connections), [`eve`] (the vocabulary events, scan lines and status
//! share), [`metrics`] (OpenMetrics file and endpoint), [`reset`] (resets
//! for blocked connections), [`nflog`] (events for kernel port-rule
//! blocks), [`outfile`] (files written without following links),
//! [`notify`] (systemd's `Type=notify` readiness, reload and stop
//! notifications and its watchdog, fed by the workers' heartbeats),
//! [`reload`], [`lock`], [`privilege`], [`error`].
//!
//! Under systemd (`NOTIFY_SOCKET` set), `READY=1` is sent once the rules
//! are installed and every worker has entered its receive loop; a SIGHUP
//! reload is framed by `RELOADING=1` and `READY=1`; shutdown starts with
//! `STOPPING=1`; and `WATCHDOG=1` goes out every half `WATCHDOG_USEC` only
//! while every worker's loop keeps turning.

pub mod config;
pub mod error;
pub mod eve;
pub mod events;
pub mod lock;
pub mod metrics;
pub mod nflog;
pub mod notify;
pub mod outfile;
pub mod privilege;
pub mod reload;
pub mod reset;
pub mod stages;
pub mod stats;
pub mod status;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::engine::Engine;
use crate::kernel::install::{self, SystemRunner};
use crate::kernel::queue_rate::QueueRate;
use crate::log::{Level, log};
use crate::policy::Policy;
use crate::policy::load::load_policy;
use crate::policy::schedule::{Clock, FAKE_NOW_ENV};
use crate::source::nfqueue::{NfqSource, QueueOptions};
pub use config::Config;
pub use error::DaemonError;
use events::{BlockEvent, event_writer};
pub use lock::{InstanceLock, LOCK_DIR, lock_path};
use notify::{Heartbeats, Notifier, State, Watchdog};
use reload::RulesGuard;
use stats::WorkerStats;
use status::Status;
use worker::{EngineHandle, Worker, WorkerConfig};

fn spawn_named<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, DaemonError> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| DaemonError::Thread { name, source })
}

/// Marks every descriptor above stderr close-on-exec, so no child (the
/// rule tools) inherits a netlink socket, the lock or an output file,
/// whichever library opened it.
#[allow(unsafe_code)]
pub fn close_on_exec_all() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: only the descriptor flags are read and set; a descriptor
        // closed meanwhile (the directory listing's own) just fails.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(bits) = fcntl(bfd, FcntlArg::F_GETFD) {
            let flags = FdFlag::from_bits_truncate(bits) | FdFlag::FD_CLOEXEC;
            let _ = fcntl(bfd, FcntlArg::F_SETFD(flags));
        }
    }
}

/// Runs the live filter until SIGINT/SIGTERM.
pub fn run(cfg: &Config) -> Result<(), DaemonError> {
    // First of all: a SIGHUP (or SIGTERM) that arrives while the policy
    // compiles must not kill the process with the default action; it is
    // acted on once the filter runs. signal-hook's handler thread is not
    // started yet (`pending` is polled), so privileges can still be dropped.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]).map_err(DaemonError::Signals)?;
    // systemd's notification socket (Type=notify), read once; without one
    // every notification is a no-op.
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        log(
            Level::Warning,
            format_args!("{e}: systemd is not told of readiness"),
        );
        Notifier::default()
    });
    let k = &cfg.rules;
    if u32::from(k.queue) + u32::from(k.queues) > 65536 {
        return Err(DaemonError::QueueRange);
    }
    let policy = load_policy(&cfg.sources, false)?;
    if let Some(w) = crate::policy::no_hosts_warning(&policy) {
        log(Level::Warning, format_args!("{w}"));
    }
    // Schedules: the engine holds no clock; it is built from the policy as
    // in force now, and rebuilt (like a reload) when a schedule turns.
    let clock = Clock::from_env();
    if clock.is_fake() {
        log(
            Level::Warning,
            format_args!("{FAKE_NOW_ENV} is set: schedules follow a test clock"),
        );
    }
    let engine = Engine::new(policy.at(clock.now()), cfg.engine)?;
    let mut full = policy;
    if !privilege::may_admin_network() {
        return Err(DaemonError::NotPrivileged);
    }
    let _lock = InstanceLock::acquire()?;
    // Bound before privileges go, so a port below 1024 works too.
    let metrics_listener = cfg
        .metrics_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr).map_err(|source| DaemonError::MetricsListen { addr, source })
        })
        .transpose()?;
    // Raw sockets for resets, opened while CAP_NET_RAW is effective (after
    // the drop it is only kept for the rule tools).
    let resets = (!cfg.silent_drop && !cfg.accept_all).then(|| Arc::new(reset::ResetSender::open()));
    // Kernel port-rule blocks told through NFLOG (group = first queue):
    // an event for a connection the kernel dropped.
    let nflog_source = match nflog::NflogSource::open(k.queue, Duration::from_millis(200)) {
        Ok(s) => Some(s),
        Err(e) => {
            log(
                Level::Warning,
                format_args!("{e}: connections blocked by the kernel port rules leave no event"),
            );
            None
        }
    };
    // Before the first thread: capabilities are per thread and inherited.
    let dropped = privilege::drop_privileges(cfg.user.as_deref())?;
    log(Level::Info, format_args!("{dropped}"));
    // Output files are checked as the user that will write them, before
    // any queue or rule exists: an unsafe path stops start-up here.
    let events_out = cfg.events.as_deref().map(events::open_events).transpose()?;
    if let Some(p) = &cfg.status_file {
        outfile::check_replaceable(p)?;
        outfile::check_replaceable(&status::metrics_path(p))?;
    }
    // A stop asked for while the policy compiled ends start-up here, before
    // any queue or rule exists; a SIGHUP is kept for the main loop.
    let mut early: Vec<i32> = signals.pending().collect();
    if early.iter().any(|s| *s != SIGHUP && *s != SIGUSR1) {
        log(
            Level::Info,
            format_args!("stopped by a signal during start-up; nothing was installed"),
        );
        return Ok(());
    }
    early.dedup();

    let qopts = QueueOptions {
        fail_open: cfg.queue_full_accept,
        max_len: cfg.queue_maxlen,
        rcvbuf: cfg.rcvbuf,
        timestamps: cfg.stage_timings,
        ..QueueOptions::default()
    };
    let mut sources = Vec::new();
    for q in k.queue..k.queue + k.queues {
        let src = NfqSource::open(q, &qopts)?;
        log(
            Level::Info,
            format_args!(
                "queue {q} bound: fail-{} when appwall is gone, {} when full, GSO on, max length {}, receive buffer {}",
                if k.fail_closed { "closed" } else { "open" },
                if cfg.queue_full_accept { "accept" } else { "drop" },
                cfg.queue_maxlen,
                src.rcvbuf.map_or("default".into(), |b| format!("{b} bytes"))
            ),
        );
        sources.push(src);
    }
    match k.queue_rate {
        QueueRate::Off => log(
            Level::Info,
            format_args!(
                "per-source queue limit off (--queue-rate off): one flooding host can fill the queue"
            ),
        ),
        QueueRate::PerSource { pps, burst } => {
            log(
                Level::Info,
                format_args!(
                    "per-source queue limit: {pps} packets/s, bursts of {burst}; a source's excess is dropped in the kernel"
                ),
            );
            if burst > cfg.queue_maxlen {
                log(
                    Level::Warning,
                    format_args!(
                        "--queue-rate burst {burst} exceeds --queue-maxlen {}: one source's burst can fill the queue",
                        cfg.queue_maxlen
                    ),
                );
            }
        }
    }

    if cfg.accept_all {
        log(
            Level::Warning,
            format_args!(
                "--accept-all: every queued packet is accepted unjudged; nothing is blocked but the port rules"
            ),
        );
    } else if cfg.no_fast_path {
        log(
            Level::Warning,
            format_args!(
                "--no-fast-path: connections are never handed to the kernel; every packet is queued and judged"
            ),
        );
    }
    let handle: EngineHandle = Arc::new(ArcSwap::from_pointee(engine));
    let stop = Arc::new(AtomicBool::new(false));
    let (ev_tx, ev_rx) = crossbeam_channel::bounded::<BlockEvent>(4096);
    let reopen = Arc::new(AtomicBool::new(false));
    let events = spawn_named("appwall-events".into(), {
        let (path, reopen) = (cfg.events.clone(), Arc::clone(&reopen));
        move || event_writer(ev_rx, events_out, path, reopen)
    })?;
    let mut status = Status {
        workers: Vec::new(),
        stage_timings: cfg.stage_timings,
        handle: Arc::clone(&handle),
        reloads: AtomicU64::new(0),
        reload_failures: AtomicU64::new(0),
        started: Instant::now(),
        status_file: cfg.status_file.clone(),
        inodes: sources.iter().map(|s| s.inode).collect(),
        queued_at_install: AtomicU64::new(0),
        overflow_before: AtomicU64::new(0),
        overflow_reported: AtomicU64::new(0),
        inspect_installed: std::sync::Mutex::new(Vec::new()),
        policy_hash: std::sync::Mutex::new(status::policy_hash(&cfg.sources)),
        last_reload: std::sync::Mutex::new(None),
        metrics_cache: std::sync::Mutex::new(None),
        kernel_blocks: std::sync::Mutex::new(status::KernelBlocks::default()),
        rate_limited: std::sync::Mutex::new(status::KernelBlocks::default()),
    };
    if let Some(r) = &resets {
        if r.usable() {
            log(
                Level::Info,
                format_args!("blocked TCP connections are answered with resets to both sides"),
            );
        } else {
            log(
                Level::Warning,
                format_args!(
                    "no raw socket for resets (CAP_NET_RAW?): blocked connections are dropped silently"
                ),
            );
        }
    }
    let mut workers = Vec::new();
    let mut beats = Heartbeats::default();
    for src in sources {
        let q = src.queue_num();
        let st = Arc::new(WorkerStats::new(q));
        status.workers.push(Arc::clone(&st));
        let wcfg = WorkerConfig {
            queue: q,
            marks: k.marks,
            fail_closed: k.fail_closed,
            max_flows: cfg.max_flows,
            flow_timeout_ns: cfg.flow_timeout_ns,
            accept_all: cfg.accept_all,
            no_fast_path: cfg.no_fast_path,
            stage_timings: cfg.stage_timings,
        };
        let mut w =
            Worker::new(src, Arc::clone(&handle), st, Some(ev_tx.clone()), wcfg).with_heartbeat(beats.add());
        if let Some(r) = &resets {
            w = w.with_resets(Arc::clone(r));
        }
        let stop = Arc::clone(&stop);
        workers.push(spawn_named(format!("appwall-q{q}"), move || w.run(&stop))?);
    }
    let nflog_thread = match nflog_source {
        Some(src) => {
            let (h, tx, stop) = (Arc::clone(&handle), ev_tx.clone(), Arc::clone(&stop));
            Some(spawn_named("appwall-nflog".into(), move || {
                nflog::run_reader(src, h, tx, stop)
            })?)
        }
        None => None,
    };
    drop(ev_tx);

    // Rule tools run as children from here on: none may inherit a queue
    // socket (an orphaned child would keep the queue bound) or a file.
    close_on_exec_all();
    let mut installed = RulesGuard::armed();
    // The overflow baseline is read before the queueing rules exist.
    let queued_before = status.queued_now();
    match install::install(&SystemRunner, &handle.load(), k) {
        Ok(r) => {
            status.installed(&r, 0, queued_before);
            if r.replaced {
                log(
                    Level::Warning,
                    format_args!("found appwall rules left by an earlier instance; replaced them"),
                );
            }
            log(
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
            return Err(DaemonError::Install(e));
        }
    }

    let status = Arc::new(status);
    let stats_thread = spawn_named("appwall-stats".into(), {
        let status = Arc::clone(&status);
        let stop = Arc::clone(&stop);
        let every = Duration::from_secs(cfg.stats_interval.max(1));
        move || {
            let mut next = Instant::now();
            let mut limited = 0;
            while !stop.load(Relaxed) {
                if Instant::now() >= next {
                    // Sources over their share are read first: a source's
                    // credit refills within BURST/PPS seconds of its flood
                    // ending, sooner than the rule tools of a status write
                    // may take on a busy machine.
                    let over = sources_over_queue_rate();
                    let s = status.write_status(true);
                    log(Level::Info, format_args!("{}", s.summary()));
                    warn_rate_limited(limited, s.totals.queue_rate_limited, &over);
                    limited = s.totals.queue_rate_limited;
                    next += every;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    })?;

    let metrics_thread = match metrics_listener {
        Some(l) => {
            let body: Arc<dyn Fn() -> String + Send + Sync> = {
                let status = Arc::clone(&status);
                Arc::new(move || status.metrics_text())
            };
            if let Ok(a) = l.local_addr() {
                log(Level::Info, format_args!("metrics on http://{a}/metrics"));
            }
            let stop = Arc::clone(&stop);
            Some(spawn_named("appwall-metrics".into(), move || {
                metrics::serve(l, body, stop)
            })?)
        }
        None => None,
    };

    let mut failed: Option<DaemonError> = None;
    let turn = |full: &Policy| {
        full.next_change(clock.now())
            .map(|d| Instant::now() + d + Duration::from_millis(1))
    };
    let mut next_turn = turn(&full);
    // READY=1 once the rules are in (above) and every worker receives.
    let filtering = format!("filtering on queues {}..{}", k.queue, k.queue + k.queues - 1);
    let mut ready = false;
    let mut watchdog = notifier.watchdog().map(Watchdog::new);
    'main: loop {
        if !ready && beats.all_started() {
            notifier.tell(State::Ready(&filtering));
            ready = true;
        }
        if ready
            && let Some(w) = &mut watchdog
            && w.due(
                Instant::now(),
                &mut beats,
                !workers.iter().any(|w| w.is_finished()),
            )
        {
            notifier.tell(State::Watchdog);
        }
        if next_turn.is_some_and(|t| Instant::now() >= t) {
            next_turn = match reload::swap_in(cfg, &handle, &status, full.at(clock.now())) {
                Ok(()) => {
                    log(
                        Level::Info,
                        format_args!("schedule changed: rules in force re-applied"),
                    );
                    turn(&full)
                }
                Err(e) => {
                    log(
                        Level::Error,
                        format_args!("schedule change not applied: {e}; retrying in a second"),
                    );
                    Some(Instant::now() + Duration::from_secs(1))
                }
            };
        }
        let pending: Vec<i32> = early.drain(..).chain(signals.pending()).collect();
        for sig in pending {
            if sig == SIGHUP || sig == SIGUSR1 {
                // Log rotation: the event log is opened anew by name.
                reopen.store(true, Relaxed);
            }
            match sig {
                SIGUSR1 => {}
                SIGHUP => {
                    // Told only once READY was: systemd knows no reload
                    // before start-up is over.
                    let told = ready;
                    if told {
                        notifier.tell(State::Reloading {
                            monotonic_usec: notify::monotonic_usec(),
                            status: "reloading the policy",
                        });
                    }
                    match reload::reload(cfg, &handle, &status, clock.now()) {
                        Ok(p) => {
                            full = p;
                            next_turn = turn(&full);
                            status.reloads.fetch_add(1, Relaxed);
                            if let Ok(mut l) = status.last_reload.lock() {
                                *l = Some((std::time::SystemTime::now(), true));
                            }
                            if let Ok(mut h) = status.policy_hash.lock() {
                                *h = status::policy_hash(&cfg.sources);
                            }
                            if let Some(w) = crate::policy::no_hosts_warning(handle.load().policy()) {
                                log(Level::Warning, format_args!("{w}"));
                            }
                            log(Level::Info, format_args!("policy reloaded"));
                            if told {
                                notifier.tell(State::Ready(&format!("{filtering}; policy reloaded")));
                            }
                        }
                        Err(e) => {
                            status.reload_failures.fetch_add(1, Relaxed);
                            if let Ok(mut l) = status.last_reload.lock() {
                                *l = Some((std::time::SystemTime::now(), false));
                            }
                            for line in e.to_string().lines() {
                                log(Level::Error, format_args!("{line}"));
                            }
                            log(
                                Level::Error,
                                format_args!("reload refused; the running policy stays in force"),
                            );
                            if told {
                                notifier.tell(State::Ready(&format!(
                                    "{filtering}; reload refused, the running policy stays in force"
                                )));
                            }
                        }
                    }
                }
                _ => {
                    log(Level::Info, format_args!("signal {sig}: shutting down"));
                    break 'main;
                }
            }
        }
        if workers.iter().any(|w| w.is_finished()) {
            failed = Some(DaemonError::Worker("stopped"));
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    notifier.tell(State::Stopping(match failed {
        Some(_) => "a queue worker stopped: removing the rules",
        None => "stopping: removing the rules",
    }));

    // Last count while the rules (and their counters) still exist: the
    // final status file reports it (reports never go down); the per-source
    // limit's drops are read in the same pass.
    let _ = status.overflow();
    installed.remove_now();
    stop.store(true, Relaxed);
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log(Level::Error, format_args!("{e}"));
                failed.get_or_insert(DaemonError::Worker("failed"));
            }
            Err(_) => {
                failed.get_or_insert(DaemonError::Worker("panicked"));
            }
        }
    }
    let _ = stats_thread.join();
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    if let Some(t) = nflog_thread {
        let _ = t.join();
    }
    let _ = events.join();
    let s = status.write_status(false);
    log(Level::Info, format_args!("{}", s.summary()));
    match failed {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Sources the kernel holds over their `--queue-rate` share at this moment,
/// both families (none when the limit is off or the rules are gone).
fn sources_over_queue_rate() -> Vec<std::net::IpAddr> {
    let mut over = Vec::new();
    for v6 in [false, true] {
        if let Ok(list) = std::fs::read_to_string(crate::kernel::queue_rate::proc_path(v6)) {
            over.extend(crate::kernel::queue_rate::sources_over(&list));
        }
    }
    over
}

/// One warning per stats interval while the per-source queue limit drops
/// packets (`before` -> `now`), naming the sources over their rate
/// (`over`, from [`sources_over_queue_rate`], at most 8 shown).
fn warn_rate_limited(before: u64, now: u64, over: &[std::net::IpAddr]) {
    if now <= before {
        return;
    }
    let shown: Vec<String> = over.iter().take(8).map(ToString::to_string).collect();
    let more = over.len().saturating_sub(shown.len());
    log(
        Level::Warning,
        format_args!(
            "per-source queue limit (--queue-rate) dropped {} packets since the last report; over their share now: {}{}",
            now - before,
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            },
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    );
}
