//! Reloading the policy (SIGHUP) and keeping the kernel rules tied to the
//! process's life.
//!
//! Guarantees: a reload builds and validates the new policy and engine
//! before anything changes; the kernel rules are swapped in one transaction
//! per family, then the engine; a bad file or a refused rule set leaves the
//! running policy in force (kernel and engine still agree). [`RulesGuard`]
//! removes the rules on every exit path, early returns included.

use std::sync::Arc;

use crate::daemon::config::Config;
use crate::daemon::error::DaemonError;
use crate::daemon::status::Status;
use crate::daemon::worker::EngineHandle;
use crate::engine::Engine;
use crate::kernel::install::{self, SystemRunner};
use crate::log::{Level, log};
use crate::policy::load::load_policy;
use crate::source::nfqueue;

/// Removes the rules when dropped unless already removed.
pub struct RulesGuard {
    armed: bool,
}

impl RulesGuard {
    /// A guard for rules about to be installed.
    pub fn armed() -> RulesGuard {
        RulesGuard { armed: true }
    }

    /// Removes the rules now (once).
    pub fn remove_now(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        match install::remove(&SystemRunner) {
            Ok(r) => log(
                Level::Info,
                format_args!(
                    "rules removed ({} chains/jumps, {} sets)",
                    r.removed.len(),
                    r.sets.len()
                ),
            ),
            Err(e) => log(Level::Error, format_args!("removing rules: {e}")),
        }
    }
}

impl Drop for RulesGuard {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// Rebuilds policy, engine and rules; swaps them in only when all is valid.
pub fn reload(cfg: &Config, handle: &EngineHandle, status: &Status) -> Result<(), DaemonError> {
    let policy = load_policy(&cfg.sources, false)?;
    let engine = Engine::new(policy, cfg.engine)?;
    // Installing restarts the rules' counters (also when it fails and the
    // running policy is put back).
    let before = status.overflow(&nfqueue::kernel_queues());
    let result = install::install(&SystemRunner, &engine, &cfg.rules);
    status.rules_installed(before);
    if let Err(e) = result {
        // Part of it may be in (sets before rules, IPv4 before IPv6): put
        // the running policy back so kernel and engine still agree.
        let _ = install::install(&SystemRunner, &handle.load(), &cfg.rules);
        return Err(DaemonError::Reload(e));
    }
    handle.store(Arc::new(engine));
    Ok(())
}
