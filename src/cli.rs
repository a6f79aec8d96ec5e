//! The command line: every flag is declared once, here, and its doc comment
//! is its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kernel::queue_rate::QueueRate;

/// appwall: block chat applications (MSN Messenger, Yahoo, AIM/ICQ, XMPP,
/// IRC, QQ...) by port in the kernel and by payload in userspace, including
/// Messenger tunnelled through HTTP on port 80.
#[derive(Debug, Parser)]
#[command(name = "appwall", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a hosts file and the app library; print a summary. Exit code 0 only when all is valid.
    Check(CheckArgs),
    /// Print the kernel rules (iptables-restore input, plain commands, or ipset input) for a hosts file.
    #[command(alias = "rules")]
    KernelRules(KernelRulesArgs),
    /// Judge every packet of pcap/pcapng captures offline with the live filter's engine.
    Scan(ScanArgs),
    /// Run the live filter: install the rules, judge queued packets, remove the rules on exit.
    Run(RunArgs),
    /// Show what the running filter of this network namespace reports (its status file): state, policy, counters.
    Status(StatusArgs),
    /// Remove everything `appwall run` installed (after a crash, say).
    Uninstall(UninstallArgs),
    /// Build a throw-away lab of network namespaces and show what `appwall run` blocks (root).
    Demo(DemoArgs),
    /// Measure verdict throughput without root: replay captures (or a synthetic mix) in memory through the engine.
    Bench(BenchArgs),
    /// Write a synthetic sample capture (MSN over HTTP, MSNP, benign web and DNS) to scan.
    Sample(SampleArgs),
    /// Translate a squid.conf's deny rules (and the ACLs they use) into an app library file of message rules.
    ImportSquid(ImportSquidArgs),
    /// Write the man pages or shell completions generated from this command line (for packagers).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Where the policy comes from.
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// App library directory (one TOML file per app, like rules/), added to the built-in library; an app of the same name replaces the built-in one. Repeatable. Old spelling: --rules.
    #[arg(long, value_name = "DIR", alias = "rules")]
    pub library: Vec<PathBuf>,
    /// Use only the --library directories, not the library built into appwall. Old spelling: --no-builtin-rules.
    #[arg(long, alias = "no-builtin-rules")]
    pub no_builtin_library: bool,
    /// Apps for hosts lines that name none (comma-separated). Default: every app marked default in the library.
    #[arg(long, value_name = "APPS", value_delimiter = ',')]
    pub default_apps: Option<Vec<String>>,
}

/// Inspection tunables shared by every command that runs the engine.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// A connection is clean (no longer inspected) once one direction has carried this many payload bytes with no match.
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub depth_bytes: u64,
    /// ...or, when not 0, once this many payload segments (both directions) passed with no match. Off by default: a sender that cuts its bytes into tiny segments would reach it early.
    #[arg(long, value_name = "PACKETS", default_value_t = 0)]
    pub depth_packets: u32,
    /// Most connections tracked at once; the least recently active is evicted beyond it.
    #[arg(long, value_name = "N", default_value_t = 262_144)]
    pub max_flows: usize,
    /// Seconds of silence after which a connection is forgotten.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub flow_timeout: u64,
}

/// `appwall check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy sources.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kernel options, validated as `run` would install them.
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// Address families to print rules for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 only: one iptables-restore input.
    Ipv4,
    /// IPv6 only: one ip6tables-restore input.
    Ipv6,
    /// Both, one after the other, each under a comment header.
    All,
}

/// Output formats of `appwall kernel-rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelRulesFormat {
    /// iptables-restore --noflush input (atomic).
    Restore,
    /// Plain iptables commands, as a classic shell script would run them.
    Commands,
    /// ipset restore input for the host sets the rules use.
    Ipset,
}

/// What the fast path does with connections to a blocked port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PortActionArg {
    /// Drop in mangle PREROUTING.
    Drop,
    /// Reject in the filter table (TCP reset, ICMP port unreachable).
    Reject,
}

/// What the kernel does with a packet when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueFullArg {
    /// Accept it uninspected (the queue's fail-open flag): traffic never stalls, a flood can push packets past inspection.
    Accept,
    /// Drop it: nothing passes uninspected, a flood costs packets (retransmitted for TCP).
    Drop,
}

/// Kernel rule options shared by `kernel-rules` and `run`.
#[derive(Debug, Args, Clone)]
pub struct KernelArgs {
    /// First NFQUEUE queue number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub queue: u16,
    /// Number of queues, spread with --queue-balance (one worker each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: u16,
    /// Drop queued traffic when appwall is not running (default: fail open with --queue-bypass).
    #[arg(long)]
    pub fail_closed: bool,
    /// What to do with connections to a blocked port.
    #[arg(long, value_enum, default_value_t = PortActionArg::Drop)]
    pub port_action: PortActionArg,
    /// Answer blocked TCP connections with a reset so clients fail fast.
    #[arg(long)]
    pub reset: bool,
    /// Also queue TCP segments without payload (pure ACKs, SYNs, SYN-ACKs; by default the kernel skips them with xt_u32; use this on kernels without xt_u32).
    #[arg(long)]
    pub queue_empty_segments: bool,
    /// Host groups larger than this are matched through an ipset (hash:net).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub ipset_threshold: usize,
    /// Per-source share of the queue: PPS[/BURST] packets per second (and burst, default PPS/5) per source address, or off. A source's packets above it are dropped in the kernel, never passed uninspected, so one flooding host cannot fill the queue for others. Only packets on their way to the queue count (new and not yet settled connections); status and metrics count the drops as queue_rate_limited.
    #[arg(long, value_name = "PPS[/BURST]", default_value_t = QueueRate::DEFAULT)]
    pub queue_rate: QueueRate,
}

/// `appwall kernel-rules`.
#[derive(Debug, Args)]
pub struct KernelRulesArgs {
    /// Policy sources.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kernel options.
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Which address family to print.
    #[arg(long, value_enum, default_value_t = FamilyArg::All)]
    pub family: FamilyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = KernelRulesFormat::Restore)]
    pub format: KernelRulesFormat,
}

/// `appwall scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Policy sources (without --hosts every host counts as listed).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Inspection tunables.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// One JSON object per flow per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ignore the fast-path port rules: judge by payload signatures alone.
    #[arg(long)]
    pub signatures_only: bool,
    /// Show only blocked flows in the table.
    #[arg(long)]
    pub blocked_only: bool,
    /// pcap or pcapng files.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

/// `appwall sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Where to write the pcap file.
    #[arg(value_name = "OUT.pcap")]
    pub out: PathBuf,
}

/// Built-in traffic for `appwall bench` without captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MixArg {
    /// Benign web (HTML pages, TLS-like downloads, DNS) with one connection in sixteen being MSN.
    Mixed,
    /// Benign web only.
    Web,
    /// MSN only: HTTP gateway, MSNP on 1863 and on other ports.
    Msn,
    /// Small packets: interactive sessions of 30-120 byte segments.
    Small,
    /// Full-size packets: 1460-byte segments of text and binary.
    Full,
}

/// `appwall bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Policy sources (without --hosts every address is listed with every app of the library, or with --default-apps).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Inspection tunables.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Threads for the multi-thread rows, each with its own connection table (as each queue has). Default: the number of cores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Timed rounds per row; the table shows min/median/max over them.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: u32,
    /// Seconds of replay per round (a warm-up of up to 0.2 s comes first).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    pub seconds: f64,
    /// Also measure with no inspection depth: every packet inspected in full (the worst case).
    #[arg(long)]
    pub no_depth: bool,
    /// Synthetic traffic to use when no capture is given.
    #[arg(long, value_enum, default_value_t = MixArg::Mixed)]
    pub mix: MixArg,
    /// Concurrent connections in the synthetic traffic.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// pcap or pcapng files, loaded into memory once and replayed many times.
    #[arg(value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

/// `appwall run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Policy sources (--hosts is required).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Inspection tunables.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Kernel options.
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Most packets waiting in each kernel queue; beyond it the kernel accepts (fail-open) or drops (--fail-closed).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub queue_maxlen: u32,
    /// Netlink socket receive buffer per queue, bytes (set with SO_RCVBUFFORCE).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub rcvbuf: usize,
    /// JSON status file, rewritten every --stats-interval and at exit, with OpenMetrics text beside it (FILE with extension .prom, for node_exporter's textfile collector). Default: /run/appwall/status.json in the initial network namespace, /run/appwall/NETNS-ID/status.json in any other.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<std::path::PathBuf>,
    /// Serve OpenMetrics at http://ADDR/metrics (e.g. 127.0.0.1:9474): one connection at a time, bounded requests.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Drop blocked TCP connections silently instead of answering both sides with a reset (clients then wait for their own timeout).
    #[arg(long)]
    pub silent_drop: bool,
    /// JSON-lines event log, one line per blocked connection ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub events: Option<std::path::PathBuf>,
    /// Seconds between status file writes and summary log lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stats_interval: u64,
    /// Run as this user (name or uid) once the instance lock is taken, keeping only CAP_NET_ADMIN (and CAP_NET_RAW for iptables); --status-file and --events must be writable by it.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// When a queue is full (a flood outruns the filter): accept the packets that do not fit, uninspected, or drop them. Separate from --fail-closed, which is about appwall not running at all. Default: drop with --fail-closed, else accept.
    #[arg(long, value_enum, value_name = "ACTION")]
    pub queue_full: Option<QueueFullArg>,
    /// Benchmarking: queue and answer every packet as usual (same rules) but accept it without judging and never mark its connection, so every packet keeps being queued. Measures the queue path alone; blocks nothing.
    #[arg(long)]
    pub accept_all: bool,
    /// Benchmarking: judge every packet but never hand a connection to the kernel fast path (no connmark), so every packet of a listed host is queued and judged.
    #[arg(long)]
    pub no_fast_path: bool,
    /// Profiling: keep latency histograms per stage of a queued packet (queue wait from the kernel's receive timestamp, judging, verdict) in the status file, `appwall status` and the metrics. Turns on the kernel's receive timestamps for the whole machine and reads the clock a few times per packet.
    #[arg(long)]
    pub stage_timings: bool,
}

/// `appwall status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The status file to read. Default: that of this network namespace (/run/appwall/status.json in the initial one, /run/appwall/NETNS-ID/status.json in others).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Print the status file's JSON as it is.
    #[arg(long)]
    pub json: bool,
}

/// `appwall uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Remove even when an appwall instance is running in this network namespace.
    #[arg(long)]
    pub force: bool,
}

/// `appwall demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Show the filter's own log lines.
    #[arg(long)]
    pub verbose: bool,
    /// Run the lab without the filter, to see that everything passes then.
    #[arg(long)]
    pub no_filter: bool,
}

/// `appwall import-squid`.
#[derive(Debug, Args)]
pub struct ImportSquidArgs {
    /// The Squid configuration file (ACL files it names are read too).
    #[arg(value_name = "squid.conf")]
    pub conf: PathBuf,
    /// Write the rule file here instead of standard output (e.g. rules/site.toml; the app is named after the file).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// App name when writing to standard output.
    #[arg(long, value_name = "NAME", default_value = "squid")]
    pub name: String,
    /// UTC offset of the proxy's local time (`+01:00`): Squid reads `time` ACLs in local time; the schedules written are in UTC without it.
    #[arg(long, value_name = "+HH:MM", allow_hyphen_values = true)]
    pub utc_offset: Option<String>,
}

/// What `appwall generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateWhat {
    /// Man pages: appwall.8 and one appwall-COMMAND.8 per subcommand.
    Man,
    /// Shell completions: appwall.bash, _appwall (zsh), appwall.fish.
    Completions,
    /// Both, into DIR/man and DIR/completions (`appwall generate all dist`).
    All,
}

/// `appwall generate` (hidden: a packaging step, not an admin's command).
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: GenerateWhat,
    /// Directory to write into (created if missing); appwall's own stale files there are removed.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}
