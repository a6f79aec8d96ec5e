//! Thin front ends, one per subcommand: they load the policy, call the
//! library, and print. No verdict logic lives here.

pub mod bench;
pub mod check;
pub mod demo;
pub mod generate;
pub mod import_squid;
pub mod kernel_rules;
pub mod run;
pub mod sample;
pub mod scan;
pub mod status;
pub mod uninstall;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, EngineArgs, PolicyArgs};
use crate::daemon::DaemonError;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::kernel::install::InstallError;
use crate::lab::LabError;
use crate::policy::load::{self, LoadError, Sources};
use crate::policy::squid::SquidError;
use crate::policy::{ConfigErrors, Policy};
use crate::source::capture::CaptureError;

/// Exit code of a command that succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code of a command that ran but failed (privileges, the kernel, a
/// busy queue, I/O) or whose check found a difference (`demo`).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad input or usage: command line, policy files, captures.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Hosts file or app library problems (`path:line: ...`, one per line).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The policy could not be loaded.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// A capture could not be read at all.
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// The engine could not be built.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The live filter failed.
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    /// A squid.conf could not be read.
    #[error("{0}")]
    Squid(#[from] SquidError),
    /// A squid.conf had no deny line appwall can translate.
    #[error("{}: no http_access/http_reply_access deny line could be translated", .0.display())]
    NothingTranslated(PathBuf),
    /// The demo lab failed.
    #[error("{0}")]
    Lab(#[from] LabError),
    /// Removing the rules failed.
    #[error("{0}")]
    Install(#[from] InstallError),
    /// `uninstall` refused: an instance runs.
    #[error("{0}; stop it instead (or use --force)")]
    StillRunning(#[source] DaemonError),
    /// The command needs root.
    #[error("appwall {0} builds network namespaces and needs root")]
    NeedsRoot(&'static str),
    /// Signal handlers could not be installed.
    #[error("cannot catch signals: {0}")]
    Signals(#[source] std::io::Error),
    /// Interrupted by a signal; what was built is gone.
    #[error("interrupted; lab removed")]
    Interrupted,
    /// `--queue` + `--queues` past 65535.
    #[error("--queue + --queues runs past queue 65535")]
    QueueRange,
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A benchmark could not run.
    #[error("{0}")]
    Bench(#[from] crate::bench::BenchError),
    /// JSON output could not be written.
    #[error("cannot write JSON output: {0}")]
    Json(#[from] serde_json::Error),
    /// `status` found no readable status file.
    #[error("{}: {why}", path.display())]
    StatusFile {
        /// The status file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Writing output failed (a closed pipe ends quietly).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl AppError {
    /// Exit code: [`EXIT_BAD_INPUT`] for bad input or usage,
    /// [`EXIT_FAILURE`] for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_)
            | AppError::Load(_)
            | AppError::Capture(_)
            | AppError::Engine(_)
            | AppError::Squid(_)
            | AppError::NothingTranslated(_)
            | AppError::QueueRange => EXIT_BAD_INPUT,
            AppError::Daemon(d) if d.is_bad_input() => EXIT_BAD_INPUT,
            AppError::Bench(b) if !matches!(b, crate::bench::BenchError::Thread) => EXIT_BAD_INPUT,
            _ => EXIT_FAILURE,
        }
    }
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Parses `args` and runs the chosen command, printing errors to stderr.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Check(a) => check::run(&a),
        Command::KernelRules(a) => kernel_rules::run(&a),
        Command::Scan(a) => scan::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Status(a) => status::run(&a),
        Command::Uninstall(a) => uninstall::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Sample(a) => sample::run(&a),
        Command::ImportSquid(a) => import_squid::run(&a),
        Command::Generate(a) => generate::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(AppError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            for line in e.to_string().lines() {
                let _ = writeln!(err, "appwall: error: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Where the policy comes from, as the command line says.
pub fn sources(args: &PolicyArgs) -> Sources {
    Sources {
        hosts: args.hosts.clone(),
        library_dirs: args.library.clone(),
        no_builtin_library: args.no_builtin_library,
        default_apps: args.default_apps.clone(),
    }
}

/// Loads the app library and hosts file named by `args`. Without `--hosts`,
/// `everyone` decides: every host listed (scan) or an error (rules, run).
pub fn load_policy(args: &PolicyArgs, everyone: bool) -> Result<Policy, AppError> {
    Ok(load::load_policy(&sources(args), everyone)?)
}

/// Engine tunables from the command line.
pub fn engine_config(args: &EngineArgs) -> EngineConfig {
    EngineConfig {
        depth_bytes: args.depth_bytes,
        depth_packets: args.depth_packets,
        ..EngineConfig::default()
    }
}

/// Builds the engine for a policy.
pub fn build_engine(policy: Policy, config: EngineConfig) -> Result<Engine, AppError> {
    Ok(Engine::new(policy, config)?)
}
