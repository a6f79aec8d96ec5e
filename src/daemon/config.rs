//! What the live filter is told at start-up: plain data built by the
//! command line's front end and read again (its policy sources) on reload.

use std::path::PathBuf;

use crate::engine::EngineConfig;
use crate::kernel::iptables::KernelRuleOptions;
use crate::policy::load::Sources;

/// Everything `appwall run` needs to know, built from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the policy comes from (read again on every reload).
    pub sources: Sources,
    /// Inspection tunables.
    pub engine: EngineConfig,
    /// Connection table capacity per queue.
    pub max_flows: usize,
    /// Idle timeout of a connection, nanoseconds.
    pub flow_timeout_ns: u64,
    /// Shape of the kernel rules (queues, fail mode, port action, marks).
    pub rules: KernelRuleOptions,
    /// Most packets waiting in each kernel queue.
    pub queue_maxlen: u32,
    /// Netlink socket receive buffer per queue, bytes.
    pub rcvbuf: usize,
    /// JSON status file.
    pub status_file: Option<PathBuf>,
    /// JSON-lines event log ("-" for stdout).
    pub events: Option<PathBuf>,
    /// Seconds between status writes and summary lines.
    pub stats_interval: u64,
    /// User to become after start-up.
    pub user: Option<String>,
    /// A full queue accepts what does not fit, uninspected (the queue's
    /// fail-open flag); false drops it. Independent of `rules.fail_closed`
    /// (no appwall bound to the queue at all).
    pub queue_full_accept: bool,
    /// Benchmarking: accept every packet unjudged.
    pub accept_all: bool,
    /// Benchmarking: judge every packet, never mark a connection.
    pub no_fast_path: bool,
    /// Profiling: latency histograms per stage ([`crate::daemon::stages`]).
    pub stage_timings: bool,
    /// Where to serve OpenMetrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Blocked TCP connections are dropped silently instead of being
    /// answered with resets to both sides.
    pub silent_drop: bool,
}
