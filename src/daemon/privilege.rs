//! Least privilege for `appwall run`: shed every capability but the ones
//! the filter itself and its rule tools need, and optionally become an
//! unprivileged user.
//!
//! What stays, and why:
//! - `CAP_NET_ADMIN`, effective: the kernel checks it on every nfnetlink
//!   message, verdicts included, and it binds the queues and sets
//!   `SO_RCVBUFFORCE`;
//! - `CAP_NET_ADMIN` and `CAP_NET_RAW`, permitted, inheritable and ambient
//!   (not effective for `CAP_NET_RAW`): `iptables-restore`, `iptables-save`
//!   and `ipset`, run on install, reload (SIGHUP) and removal, need
//!   `CAP_NET_ADMIN`; the legacy (non-nft) iptables also opens a raw socket.
//!   Ambient capabilities reach those children also after `--user`;
//! - the bounding set is cut to the same two, so no child ever regains more,
//!   and `no_new_privs` is set (exec cannot add privileges: no setuid, no file
//!   capabilities).
//!
//! Capabilities are per thread and threads inherit them, so this must run
//! before the first thread starts; [`drop_privileges`] refuses otherwise.

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};

/// Capabilities kept (permitted, inheritable, ambient, bounding).
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// The one capability left effective in appwall itself.
pub const EFFECTIVE: Capability = Capability::CAP_NET_ADMIN;

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `--user` names nobody.
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    /// Switching users needs root (CAP_SETUID, CAP_SETGID).
    #[error("--user {0}: switching users needs root (CAP_SETUID and CAP_SETGID)")]
    CannotSwitch(String),
    /// A capability call failed.
    #[error("cannot {what}: {source}")]
    Caps {
        /// What was attempted.
        what: &'static str,
        /// The error.
        #[source]
        source: caps::errors::CapsError,
    },
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Sys {
        /// What was attempted.
        what: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// Called with other threads running: they would keep every capability.
    #[error("privileges must be dropped before any thread starts ({0} threads running)")]
    Threads(usize),
}

/// What [`drop_privileges`] did, for the log.
#[derive(Debug, Clone, Default)]
pub struct Dropped {
    /// Capabilities still permitted (a subset of [`KEPT`]).
    pub kept: Vec<Capability>,
    /// The bounding set was cut to [`KEPT`] (needs CAP_SETPCAP).
    pub bounding_reduced: bool,
    /// The kept capabilities are ambient (children get them).
    pub ambient: bool,
    /// (name, uid, gid) after `--user`.
    pub user: Option<(String, u32, u32)>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.kept.iter().map(|c| c.to_string().to_lowercase()).collect();
        let names = if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        };
        let effective = if self.kept.contains(&EFFECTIVE) {
            format!(" ({} effective)", EFFECTIVE.to_string().to_lowercase())
        } else {
            String::new()
        };
        let ambient = if self.ambient {
            ", ambient for the rule tools"
        } else {
            ""
        };
        let bounding = if self.bounding_reduced {
            "reduced"
        } else {
            "unchanged (no CAP_SETPCAP)"
        };
        write!(
            f,
            "privileges dropped: capabilities kept: {names}{effective}{ambient}; bounding set {bounding}"
        )?;
        if let Some((name, uid, gid)) = &self.user {
            write!(f, "; running as {name} (uid {uid}, gid {gid})")?;
        }
        Ok(())
    }
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |source| PrivilegeError::Caps { what, source }
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> PrivilegeError {
    move |source| PrivilegeError::Sys { what, source }
}

/// Threads of this process, from /proc (1 when unknown).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

fn lookup(name: &str) -> Result<User, PrivilegeError> {
    let by_name = User::from_name(name).map_err(sys_err("look up the --user account"))?;
    let found = match by_name {
        Some(u) => Some(u),
        None => match name.parse::<u32>() {
            Ok(n) => User::from_uid(Uid::from_raw(n)).map_err(sys_err("look up the --user account"))?,
            Err(_) => None,
        },
    };
    found.ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()))
}

/// True when this thread may administer the network (install rules, bind
/// NFQUEUE): root, or CAP_NET_ADMIN given by systemd or setcap.
pub fn may_admin_network() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// Drops every capability but [`KEPT`], switches to `user` when given, sets
/// `no_new_privs`. Must be called while the process has one thread.
///
/// Without the capabilities to begin with (not root) it only sheds what there
/// is; binding a queue then fails with its own clear error.
pub fn drop_privileges(user: Option<&str>) -> Result<Dropped, PrivilegeError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let account = user.map(lookup).transpose()?;
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("read capabilities"))?;
    let keep: CapsHashSet = KEPT.iter().copied().filter(|c| permitted.contains(c)).collect();
    let mut done = Dropped {
        kept: KEPT.iter().copied().filter(|c| keep.contains(c)).collect(),
        ..Dropped::default()
    };

    // The bounding set first: cutting it needs CAP_SETPCAP, dropped below.
    if has(Capability::CAP_SETPCAP) {
        for c in caps::runtime::thread_all_supported() {
            if !KEPT.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c).map_err(caps_err("shrink the bounding set"))?;
            }
        }
        done.bounding_reduced = true;
    }

    if let (Some(name), Some(u)) = (user, &account) {
        if !has(Capability::CAP_SETUID) || !has(Capability::CAP_SETGID) {
            return Err(PrivilegeError::CannotSwitch(name.to_string()));
        }
        // Keep the permitted set across the uid change (effective is cleared
        // by the kernel and raised again below).
        nix::sys::prctl::set_keepcaps(true).map_err(sys_err("set PR_SET_KEEPCAPS"))?;
        nix::unistd::setgroups(&[u.gid]).map_err(sys_err("set supplementary groups"))?;
        nix::unistd::setresgid(u.gid, u.gid, u.gid).map_err(sys_err("switch group"))?;
        nix::unistd::setresuid(u.uid, u.uid, u.uid).map_err(sys_err("switch user"))?;
        nix::sys::prctl::set_keepcaps(false).map_err(sys_err("clear PR_SET_KEEPCAPS"))?;
        done.user = Some((u.name.clone(), u.uid.as_raw(), Gid::as_raw(u.gid)));
    }

    // Effective first: the kernel wants effective within permitted at each step.
    let effective: CapsHashSet = keep.iter().copied().filter(|c| *c == EFFECTIVE).collect();
    caps::set(None, CapSet::Effective, &effective).map_err(caps_err("set effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("set permitted capabilities"))?;
    caps::set(None, CapSet::Inheritable, &keep).map_err(caps_err("set inheritable capabilities"))?;
    match caps::set(None, CapSet::Ambient, &keep) {
        Ok(()) => done.ambient = !keep.is_empty(),
        // Without ambient capabilities (kernels before 4.3) a root child still
        // gets the bounding set; a --user child would get nothing.
        Err(e) if account.is_some() => return Err(caps_err("set ambient capabilities")(e)),
        Err(_) => {}
    }
    nix::sys::prctl::set_no_new_privs().map_err(sys_err("set no_new_privs"))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_is_an_error_before_anything_changes() {
        let e = lookup("appwall-no-such-user-xyz").unwrap_err();
        assert_eq!(e.to_string(), "--user appwall-no-such-user-xyz: no such user");
    }

    #[test]
    fn kept_set_is_net_admin_and_net_raw() {
        assert!(KEPT.contains(&EFFECTIVE));
        let bits: u64 = KEPT.iter().map(|c| c.bitmask()).sum();
        assert_eq!(bits, 0x3000, "CAP_NET_ADMIN (12) and CAP_NET_RAW (13)");
        let d = Dropped {
            kept: KEPT.to_vec(),
            bounding_reduced: true,
            ambient: true,
            user: Some(("nobody".into(), 65534, 65534)),
        };
        let s = d.to_string();
        assert!(s.contains("cap_net_admin, cap_net_raw"), "{s}");
        assert!(s.contains("running as nobody (uid 65534"), "{s}");
    }
}
