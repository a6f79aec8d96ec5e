//! Reloading the policy (SIGHUP) and keeping the kernel rules tied to the
//! process's life.
//!
//! Guarantees: a reload builds and validates the new policy and engine
//! before anything changes; then the engine is swapped, then the kernel
//! rules in one transaction per family, so a packet the new rules queue is
//! never judged by the old engine; decisions the old engine settled short
//! of blocking are taken again, and connections the kernel fast path holds
//! as clean for hosts whose policy changed are queued again; a bad file or
//! a refused rule set leaves the running policy in force (kernel and engine
//! still agree). [`RulesGuard`]
//! removes the rules on every exit path, early returns included.

use std::sync::Arc;

use ipnet::IpNet;

use crate::daemon::config::Config;
use crate::daemon::error::DaemonError;
use crate::daemon::status::Status;
use crate::daemon::worker::EngineHandle;
use crate::engine::Engine;
use crate::kernel::install::{self, SystemRunner};
use crate::log::{Level, log};
use crate::policy::Policy;
use crate::policy::load::load_policy;

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

/// Networks of `new` whose connections `new` may judge otherwise than
/// `old` did: listed anew, listed with other apps or ports, or listed for
/// an app whose signatures or rules changed. Networks no longer listed are
/// left out: what was clean stays clean, what was blocked stays blocked.
pub fn affected_networks(old: &Policy, new: &Policy) -> Vec<IpNet> {
    let changed_app = |name: &str| {
        let o = old.library().apps().iter().find(|a| a.name == name);
        let n = new.library().apps().iter().find(|a| a.name == name);
        o != n
    };
    let mut nets: Vec<IpNet> = new
        .entries()
        .iter()
        .filter(|e| {
            let apps = new.app_names(e.rule.apps);
            let before = old.entries().iter().find(|o| o.net == e.net);
            match before {
                None => true,
                Some(o) => {
                    old.app_names(o.rule.apps) != apps
                        || o.rule.ports != e.rule.ports
                        || apps.iter().any(|a| changed_app(a))
                }
            }
        })
        .map(|e| e.net)
        .collect();
    nets = IpNet::aggregate(&nets);
    nets
}

/// Rebuilds policy, engine and rules; swaps them in only when all is valid.
///
/// Order, so that no packet is judged by the old policy once the kernel
/// queues it under the new rules: the new engine first (packets already
/// queued are judged by it; decisions of the old one short of blocking are
/// taken again, see [`crate::engine::state::ConnState::reopen`]), then the
/// kernel rules, then connections the fast path holds as clean for hosts
/// whose policy changed are sent back to the queue. A refused rule set puts
/// the old engine and rules back.
///
/// Returns the policy as loaded (schedules not applied), which the daemon
/// places in time again at each schedule change ([`swap_in`]).
pub fn reload(
    cfg: &Config,
    handle: &EngineHandle,
    status: &Status,
    now: std::time::SystemTime,
) -> Result<Policy, DaemonError> {
    let policy = load_policy(&cfg.sources, false)?;
    swap_in(cfg, handle, status, policy.at(now))?;
    Ok(policy)
}

/// Swaps in an engine for `policy` (already placed in time), then the
/// kernel rules, then re-queues clean connections of hosts it judges
/// otherwise: what a reload does after loading, and what a schedule
/// change does with the policy it already has.
pub fn swap_in(
    cfg: &Config,
    handle: &EngineHandle,
    status: &Status,
    policy: Policy,
) -> Result<(), DaemonError> {
    let engine = Arc::new(Engine::new(policy, cfg.engine)?);
    let old = handle.load_full();
    handle.store(Arc::clone(&engine));
    // The queueing chain is kept (with its counters) when its rules do not
    // change; if it is created anew, the overflow so far is carried over.
    let before = status.overflow();
    let queued_before = status.queued_now();
    let previous = status.inspect_rules();
    match install::install_keeping(&SystemRunner, &engine, &cfg.rules, &previous) {
        Ok(r) => status.installed(&r, before, queued_before),
        Err(e) => {
            // Part of it may be in (sets before rules, IPv4 before IPv6): put
            // the running policy back so kernel and engine still agree.
            handle.store(Arc::clone(&old));
            if let Ok(r) = install::install_keeping(&SystemRunner, &old, &cfg.rules, &previous) {
                status.installed(&r, before, queued_before);
            }
            return Err(DaemonError::Reload(e));
        }
    }
    let nets = affected_networks(old.policy(), engine.policy());
    if !cfg.no_fast_path && !cfg.accept_all {
        match install::requeue_clean(&SystemRunner, &nets, cfg.rules.marks) {
            Ok(0) => {}
            Ok(n) => log(
                Level::Info,
                format_args!("{n} clean connections of changed hosts sent back to inspection"),
            ),
            Err(e) => log(
                Level::Warning,
                format_args!(
                    "could not send clean connections of changed hosts back to inspection: {e}; \
                     they stay in the kernel fast path until they end"
                ),
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AppLibrary, HostsFile};
    use std::path::Path;

    fn policy(hosts: &str) -> Policy {
        let h = HostsFile::parse(Path::new("hosts"), hosts).unwrap();
        Policy::new(AppLibrary::embedded().unwrap(), &h, None).unwrap()
    }

    #[test]
    fn affected_are_new_and_changed_hosts_not_removed_or_unchanged_ones() {
        let old = policy("192.0.2.10 msn\n192.0.2.11 irc\n192.0.2.12 msn\n198.51.100.0/24 msn\n");
        let new = policy(
            "192.0.2.10 msn\n192.0.2.11 irc msn\n192.0.2.13 msn\n198.51.100.0/24 msn\n198.51.100.7:8080\n",
        );
        let nets: Vec<String> = affected_networks(&old, &new)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.0.2.11/32", "192.0.2.13/32", "198.51.100.7/32"]);
        assert!(affected_networks(&new, &new).is_empty());
    }
}
