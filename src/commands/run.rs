//! `appwall run`: the live filter; the work is in [`crate::daemon`].

use std::process::ExitCode;

use crate::cli::{QueueFullArg, RunArgs};
use crate::commands::kernel_rules::rule_options;
use crate::commands::{AppError, engine_config, sources};
use crate::daemon::{self, Config};

/// The daemon's configuration from the command line.
pub fn config(args: &RunArgs) -> Config {
    Config {
        sources: sources(&args.policy),
        engine: engine_config(&args.engine),
        max_flows: args.engine.max_flows,
        flow_timeout_ns: args.engine.flow_timeout.saturating_mul(1_000_000_000),
        rules: rule_options(&args.kernel),
        queue_maxlen: args.queue_maxlen,
        rcvbuf: args.rcvbuf,
        status_file: Some(
            args.status_file
                .clone()
                .unwrap_or_else(daemon::status::default_status_path),
        ),
        events: args.events.clone(),
        stats_interval: args.stats_interval,
        user: args.user.clone(),
        queue_full_accept: match args.queue_full {
            Some(QueueFullArg::Accept) => true,
            Some(QueueFullArg::Drop) => false,
            None => !args.kernel.fail_closed,
        },
        accept_all: args.accept_all,
        no_fast_path: args.no_fast_path,
        stage_timings: args.stage_timings,
        metrics_listen: args.metrics_listen,
        silent_drop: args.silent_drop,
    }
}

/// Runs `appwall run` until SIGINT/SIGTERM.
pub fn run(args: &RunArgs) -> Result<ExitCode, AppError> {
    daemon::run(&config(args))?;
    Ok(ExitCode::SUCCESS)
}
