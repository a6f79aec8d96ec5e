//! Everything the live filter can fail with, each cause its own variant so
//! callers (and the exit code) can tell bad input from a busy queue.

use std::io;
use std::path::PathBuf;

use crate::daemon::privilege::PrivilegeError;
use crate::engine::EngineError;
use crate::kernel::install::InstallError;
use crate::policy::load::LoadError;
use crate::source::QueueError;

/// Why `appwall run` could not start, reload or finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The policy files are invalid or missing.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The policy could not be compiled.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The queue numbers run past 65535.
    #[error("--queue + --queues runs past queue 65535")]
    QueueRange,
    /// Neither root nor CAP_NET_ADMIN.
    #[error(
        "appwall run installs iptables rules and binds NFQUEUE queues: run it as root or with \
         CAP_NET_ADMIN (the policy itself is valid: `appwall check` says so without privileges)"
    )]
    NotPrivileged,
    /// The instance lock file could not be used.
    #[error("cannot open {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another instance runs in this network namespace.
    #[error(
        "appwall is already running in this network namespace (pid {pid}, lock {}); \
         only one instance may own the queues",
        path.display()
    )]
    AlreadyRunning {
        /// The other instance's pid, as its lock file says.
        pid: String,
        /// The lock file.
        path: PathBuf,
    },
    /// Signal handlers could not be installed.
    #[error("cannot catch signals: {0}")]
    Signals(#[source] io::Error),
    /// Privileges could not be dropped.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// A queue could not be bound or failed for good.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// Thread name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel rules could not be installed.
    #[error("installing rules: {0}")]
    Install(#[source] InstallError),
    /// A reload's new rules were refused by the kernel (the running policy was put back).
    #[error("{0}")]
    Reload(#[source] InstallError),
    /// An output file (status file, event log) is unsafe or cannot be opened.
    #[error(transparent)]
    Output(#[from] crate::daemon::outfile::OutputError),
    /// A worker panicked or stopped; the rules were removed.
    #[error("a queue worker {0}; rules removed")]
    Worker(&'static str),
    /// The metrics endpoint's address could not be bound.
    #[error("--metrics-listen {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl DaemonError {
    /// True when the cause is the admin's input (policy files, options),
    /// not the machine: such errors exit with code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DaemonError::Load(_) | DaemonError::Engine(_) | DaemonError::QueueRange
        )
    }
}
