//! Thin front ends, one per subcommand: they load the policy, call the
//! library, and print. No verdict logic lives here.

pub mod bench;
pub mod check;
pub mod demo;
pub mod import_squid;
pub mod rules;
pub mod run;
pub mod sample;
pub mod scan;
pub mod uninstall;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::capture::CaptureError;
use crate::cli::{Cli, Command, EngineArgs, PolicyArgs};
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::policy::{ConfigErrors, HostsFile, Policy, RuleLibrary};

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Hosts file or rule library problems (`path:line: ...`, one per line).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A capture could not be read at all.
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// The engine could not be built.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// Writing output failed (a closed pipe ends quietly).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// Anything else, already phrased for the admin.
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// Exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Capture(_) => 2,
            _ => 1,
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
        Command::Rules(a) => rules::run(&a),
        Command::Scan(a) => scan::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Uninstall(a) => uninstall::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Sample(a) => sample::run(&a),
        Command::ImportSquid(a) => import_squid::run(&a),
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

/// Loads the rule library and hosts file named by `args`. Without `--hosts`,
/// `everyone` decides: every host listed (scan) or an error (rules, run).
pub fn load_policy(args: &PolicyArgs, everyone: bool) -> Result<Policy, AppError> {
    let library = load_library(args);
    // Report library and hosts errors together.
    let hosts = args.hosts.as_ref().map(|p| HostsFile::load(p));
    let (library, hosts) = match (library, hosts) {
        (Ok(l), Some(Ok(h))) => (l, Some(h)),
        (Ok(l), None) => (l, None),
        (Err(a), Some(Err(b))) => {
            let mut all = a.errors().to_vec();
            all.extend_from_slice(b.errors());
            return Err(ConfigErrors::check(all).unwrap_err().into());
        }
        (Err(e), _) | (_, Some(Err(e))) => return Err(e.into()),
    };
    match hosts {
        Some(h) => Ok(Policy::new(library, &h, args.default_apps.as_deref())?),
        None if everyone => Ok(Policy::everyone(library)),
        None => Err(AppError::Other("--hosts FILE is required".into())),
    }
}

/// The rule library: the built-in one (unless `--no-builtin-rules`) with
/// every `--rules` directory laid over it, later directories winning.
pub fn load_library(args: &PolicyArgs) -> Result<RuleLibrary, ConfigErrors> {
    let mut lib = if args.no_builtin_rules {
        if args.rules.is_empty() {
            return Err(ConfigErrors::one(crate::policy::ConfigError::file(
                std::path::Path::new("--no-builtin-rules"),
                "needs at least one --rules DIR",
            )));
        }
        RuleLibrary::default()
    } else {
        RuleLibrary::embedded()?
    };
    let mut errors = Vec::new();
    for dir in &args.rules {
        match RuleLibrary::load_dir(dir) {
            Ok(over) => match lib.overlay(over) {
                Ok(l) => lib = l,
                Err(e) => return Err(e),
            },
            Err(e) => errors.extend_from_slice(e.errors()),
        }
    }
    ConfigErrors::check(errors)?;
    Ok(lib)
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
