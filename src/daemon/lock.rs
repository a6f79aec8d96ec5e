//! One instance per network namespace: a lock file named after the
//! namespace, held with `flock` for the life of the process.
//!
//! Guarantee: the kernel releases the lock when the process dies, however
//! it dies, so a crash never leaves a stale lock behind; a second instance
//! is refused with the holder's pid before it touches a queue or a rule.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::daemon::error::DaemonError;

/// Directory of the instance locks.
pub const LOCK_DIR: &str = "/run/appwall";

/// Held while an instance runs in this network namespace.
pub struct InstanceLock {
    _file: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

/// The lock file of the current network namespace.
pub fn lock_path() -> PathBuf {
    let ns = fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("net:[")?.strip_suffix(']').map(str::to_string)
        })
        .unwrap_or_else(|| "default".into());
    Path::new(LOCK_DIR).join(format!("netns-{ns}.lock"))
}

impl InstanceLock {
    /// Takes the lock, or says which process holds it.
    pub fn acquire() -> Result<InstanceLock, DaemonError> {
        let path = lock_path();
        let err = |source: std::io::Error| DaemonError::Lock {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(LOCK_DIR).map_err(err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::daemon::outfile::FILE_MODE)
            // Never follow a link planted where the lock goes.
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                f.set_len(0).map_err(err)?;
                f.rewind().map_err(err)?;
                writeln!(f, "{}", std::process::id()).map_err(err)?;
                Ok(InstanceLock { _file: f, path })
            }
            Err((mut f, _)) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                Err(DaemonError::AlreadyRunning {
                    pid: pid.trim().to_string(),
                    path,
                })
            }
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Keeps /run tidy. Unlinked while still locked (the file closes
        // after this body); a second start in this very instant could lock
        // the unlinked file while a third creates a new one: accepted.
        let _ = fs::remove_file(&self.path);
    }
}
