//! The command line: every flag is declared once, here, and its doc comment
//! is its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Validate a hosts file and the rule library; print a summary. Exit code 0 only when all is valid.
    Check(CheckArgs),
    /// Print the kernel rules (iptables-restore input, plain commands, or ipset input) for a hosts file.
    Rules(RulesArgs),
    /// Judge every packet of pcap/pcapng captures offline with the live filter's engine.
    Scan(ScanArgs),
    /// Write a synthetic sample capture (MSN over HTTP, MSNP, benign web and DNS) to scan.
    Sample(SampleArgs),
}

/// Where the policy comes from.
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Hosts file: one address, network or IP:PORT per line, optional app list (`192.0.2.0/24 msn,yahoo`).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Rule library directory (one TOML file per app). Default: the library built into appwall.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
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
    /// ...or once this many payload packets (both directions) passed with no match.
    #[arg(long, value_name = "PACKETS", default_value_t = 16)]
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

/// Output formats of `appwall rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
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

/// Kernel rule options shared by `rules` and `run`.
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
    /// Host groups larger than this are matched through an ipset (hash:net).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub ipset_threshold: usize,
}

/// `appwall rules`.
#[derive(Debug, Args)]
pub struct RulesArgs {
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
    #[arg(long, value_enum, default_value_t = RulesFormat::Restore)]
    pub format: RulesFormat,
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
