//! `appwall uninstall`: remove by hand everything `appwall run` installs in
//! this network namespace (chains, jumps, sets), e.g. after a crash.
//! Queue bindings need no removal: the kernel drops them with the process.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::UninstallArgs;
use crate::commands::AppError;
use crate::daemon::InstanceLock;
use crate::kernel::install::{self, SystemRunner};

/// Runs `appwall uninstall`.
pub fn run(args: &UninstallArgs) -> Result<ExitCode, AppError> {
    // A running instance owns its rules; pulling them would leave it
    // queueing nothing while it believes it filters.
    let lock = match InstanceLock::acquire() {
        Ok(l) => Some(l),
        Err(e) if args.force => {
            let _ = writeln!(
                std::io::stderr(),
                "appwall: warning: {e}; removing anyway (--force)"
            );
            None
        }
        Err(e) => return Err(AppError::StillRunning(e)),
    };
    let report = install::remove(&SystemRunner)?;
    let mut out = std::io::stdout().lock();
    if report.is_empty() {
        writeln!(out, "nothing of appwall is installed")?;
    }
    for r in &report.removed {
        writeln!(out, "removed {r}")?;
    }
    for s in &report.sets {
        writeln!(out, "destroyed ipset {s}")?;
    }
    drop(lock);
    Ok(ExitCode::SUCCESS)
}
