//! Telling systemd how the daemon is doing: the `sd_notify(3)` protocol of
//! a `Type=notify` unit, with its watchdog.
//!
//! When the service manager sets `NOTIFY_SOCKET`, the daemon sends
//! datagrams of newline-separated `KEY=VALUE` lines to it:
//!
//! - `READY=1` (with a `STATUS=` line) once the kernel rules are installed
//!   and every queue worker has entered its receive loop: `systemctl start`
//!   returns, and units ordered after appwall start, only when connections
//!   are really being judged;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a SIGHUP reload starts and
//!   `READY=1` when it is over, taken or refused (a refused reload says so
//!   in `STATUS=`: the running policy stays), so `systemctl reload` waits
//!   for the reload to be done;
//! - `STOPPING=1` when shutdown starts;
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` (when `WATCHDOG_PID` is
//!   unset or names this process), but only while every worker is alive and
//!   its loop turns ([`Heartbeats`]): a stuck or dead worker silences the
//!   pings and systemd restarts the daemon (the kernel rules stay in place
//!   until the new instance replaces them).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A socket path starting
//! with `@` is a Linux abstract socket, as sd_notify(3) says. Sending never
//! blocks start-up or the filter: a failed send is returned as a
//! [`NotifyError`] for the caller to log, never a panic.
//!
//! Written on std's `UnixDatagram` rather than the `sd-notify` crate: that
//! crate (0.5) connects `NOTIFY_SOCKET` as a file path only (no abstract
//! sockets), reads the environment again on every call, and unsets it only
//! through an `unsafe` function; here the environment is read once, at
//! start-up. It is not unset: the only children are the rule tools, and
//! with `NotifyAccess=main` systemd ignores anything but the main process.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::log::{Level, log};

/// The environment variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The environment variable with the watchdog timeout, microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Longest `STATUS=` text sent (systemd shows it in `systemctl status`).
const MAX_STATUS: usize = 512;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is set to something that is not a Unix socket
    /// address (empty, relative, too long, or another transport).
    #[error("{NOTIFY_SOCKET}={0:?} is not a Unix socket address: {1}")]
    Address(OsString, &'static str),
    /// The datagram socket could not be created.
    #[error("cannot create the notification socket: {0}")]
    Socket(#[source] io::Error),
    /// The service manager's socket did not take the message.
    #[error("cannot notify the service manager at {NOTIFY_SOCKET}: {0}")]
    Send(#[source] io::Error),
}

/// One state change told to the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up (or a reload) is over: `READY=1` and the status text.
    Ready(&'a str),
    /// A reload starts at `monotonic_usec` (CLOCK_MONOTONIC): `RELOADING=1`,
    /// `MONOTONIC_USEC=` and the status text.
    Reloading {
        /// CLOCK_MONOTONIC now, microseconds.
        monotonic_usec: u64,
        /// Status text.
        status: &'a str,
    },
    /// Shutdown starts: `STOPPING=1` and the status text.
    Stopping(&'a str),
    /// The status text alone.
    Status(&'a str),
    /// The watchdog keep-alive: `WATCHDOG=1`.
    Watchdog,
}

/// Cuts `s` to at most [`MAX_STATUS`] bytes on a character boundary and
/// keeps it on one line (a newline would start another assignment).
fn status_line(s: &str) -> String {
    let mut end = s.len().min(MAX_STATUS);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace(['\n', '\r'], " ")
}

/// The datagram's text for `state`: newline-separated assignments, as
/// sd_notify(3) describes them.
pub fn message(state: State<'_>) -> String {
    match state {
        State::Ready(s) => format!("READY=1\nSTATUS={}\n", status_line(s)),
        State::Reloading {
            monotonic_usec,
            status,
        } => format!(
            "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS={}\n",
            status_line(status)
        ),
        State::Stopping(s) => format!("STOPPING=1\nSTATUS={}\n", status_line(s)),
        State::Status(s) => format!("STATUS={}\n", status_line(s)),
        State::Watchdog => "WATCHDOG=1\n".to_string(),
    }
}

/// The address `NOTIFY_SOCKET` names: an absolute path, or `@name` for an
/// abstract socket.
pub fn parse_socket(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt;
    let bytes = value.as_bytes();
    let bad = |why| NotifyError::Address(value.to_os_string(), why);
    match bytes.first() {
        None => Err(bad("empty")),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map_err(|_| bad("name too long")),
        Some(b'/') => SocketAddr::from_pathname(value).map_err(|_| bad("path too long")),
        Some(_) => Err(bad("neither an absolute path nor @abstract")),
    }
}

/// How often to ping the watchdog, from `WATCHDOG_USEC` and `WATCHDOG_PID`
/// as set for process `me`: half the timeout, as sd_watchdog_enabled(3)
/// advises; `None` when the watchdog is off, for another process, or the
/// values do not parse.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid {
        let p: u32 = p.trim().parse().ok()?;
        if p != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// CLOCK_MONOTONIC now, microseconds (the clock `MONOTONIC_USEC` is read on).
pub fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let us = i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1000;
        u64::try_from(us).unwrap_or(0)
    })
}

/// The service manager's notification socket, if there is one.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier the environment describes (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`); one that sends nothing when
    /// `NOTIFY_SOCKET` is unset. A set but unusable address is an error.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        let watchdog = watchdog_interval(
            std::env::var(WATCHDOG_USEC).ok().as_deref(),
            std::env::var(WATCHDOG_PID).ok().as_deref(),
            std::process::id(),
        );
        match std::env::var_os(NOTIFY_SOCKET) {
            None => Ok(Notifier::default()),
            Some(v) => Notifier::to(&v, watchdog),
        }
    }

    /// A notifier sending to the socket `addr` names (as in
    /// `NOTIFY_SOCKET`), pinging the watchdog every `watchdog`.
    pub fn to(addr: &OsStr, watchdog: Option<Duration>) -> Result<Notifier, NotifyError> {
        let addr = parse_socket(addr)?;
        let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        sock.set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(NotifyError::Socket)?;
        Ok(Notifier {
            target: Some((sock, addr)),
            watchdog,
        })
    }

    /// True when there is a service manager to tell.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often the watchdog wants a ping, when it is on (and there is a
    /// socket to ping it through).
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Sends `state` like [`Notifier::send`], logging a failure as a
    /// warning: the filter goes on either way.
    pub fn tell(&self, state: State<'_>) {
        if let Err(e) = self.send(state) {
            log(Level::Warning, format_args!("{e}"));
        }
    }

    /// Sends `state`; a no-op without a socket.
    pub fn send(&self, state: State<'_>) -> Result<(), NotifyError> {
        let Some((sock, addr)) = &self.target else {
            return Ok(());
        };
        let msg = message(state);
        sock.send_to_addr(msg.as_bytes(), addr)
            .map(|_| ())
            .map_err(NotifyError::Send)
    }
}

/// Per-worker loop counters the watchdog reads: each worker bumps its own
/// once per turn of its receive loop (which wakes at least every receive
/// timeout, traffic or not).
#[derive(Debug, Default)]
pub struct Heartbeats {
    beats: Vec<Arc<AtomicU64>>,
    seen: Vec<u64>,
}

impl Heartbeats {
    /// Adds a worker; returns the counter it bumps.
    pub fn add(&mut self) -> Arc<AtomicU64> {
        let b = Arc::new(AtomicU64::new(0));
        self.beats.push(Arc::clone(&b));
        self.seen.push(0);
        b
    }

    /// True once every worker has turned its loop at least once (it is
    /// receiving).
    pub fn all_started(&self) -> bool {
        self.beats.iter().all(|b| b.load(Relaxed) > 0)
    }

    /// True when every worker turned its loop since the last call (and
    /// remembers where they are now). With no workers, true.
    pub fn all_advanced(&mut self) -> bool {
        let mut all = true;
        for (b, seen) in self.beats.iter().zip(self.seen.iter_mut()) {
            let now = b.load(Relaxed);
            all &= now != *seen;
            *seen = now;
        }
        all
    }
}

/// When the next watchdog ping is due, and whether the workers earned it.
#[derive(Debug)]
pub struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// A watchdog pinged every `every`, first at `every` from now.
    pub fn new(every: Duration) -> Watchdog {
        Watchdog {
            every,
            next: Instant::now() + every,
        }
    }

    /// At a due time: true (ping now) when every worker made progress since
    /// the last due time and `alive` holds; the next due time is set either
    /// way, so a worker stuck for good silences the pings until systemd's
    /// timeout ends the process.
    pub fn due(&mut self, now: Instant, beats: &mut Heartbeats, alive: bool) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        beats.all_advanced() && alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_newline_separated_assignments() {
        assert_eq!(
            message(State::Ready("filtering on queues 0..1")),
            "READY=1\nSTATUS=filtering on queues 0..1\n"
        );
        assert_eq!(
            message(State::Reloading {
                monotonic_usec: 1234,
                status: "reloading"
            }),
            "RELOADING=1\nMONOTONIC_USEC=1234\nSTATUS=reloading\n"
        );
        assert_eq!(message(State::Stopping("bye")), "STOPPING=1\nSTATUS=bye\n");
        assert_eq!(message(State::Watchdog), "WATCHDOG=1\n");
        // A status cannot smuggle another assignment in.
        assert_eq!(message(State::Status("a\nREADY=1")), "STATUS=a READY=1\n");
        // Long ones are cut on a character boundary.
        let long = "é".repeat(400);
        let m = message(State::Status(&long));
        assert!(m.len() <= "STATUS=\n".len() + MAX_STATUS, "{}", m.len());
        assert!(m.ends_with("é\n"));
    }

    #[test]
    fn socket_addresses_are_paths_or_abstract_names() {
        let p = parse_socket(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(p.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        use std::os::linux::net::SocketAddrExt;
        let a = parse_socket(OsStr::new("@/org/freedesktop/systemd1/notify")).unwrap();
        assert_eq!(
            a.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        for bad in ["", "relative/path", "vsock:2:1234"] {
            assert!(
                matches!(parse_socket(OsStr::new(bad)), Err(NotifyError::Address(..))),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(parse_socket(OsStr::new(&long)).is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("-5"), None, 7), None);
        assert_eq!(
            watchdog_interval(Some("1"), None, 7),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn a_notifier_sends_to_a_bound_socket_and_nothing_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.as_os_str(), Some(Duration::from_secs(1))).unwrap();
        assert!(n.enabled() && n.watchdog().is_some());
        n.send(State::Watchdog).unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        drop(rx);
        assert!(matches!(n.send(State::Watchdog), Err(NotifyError::Send(_))));
        let none = Notifier::default();
        assert!(!none.enabled() && none.watchdog().is_none());
        none.send(State::Ready("x")).unwrap();
    }

    #[test]
    fn the_watchdog_needs_every_worker_to_turn() {
        let mut beats = Heartbeats::default();
        let (a, b) = (beats.add(), beats.add());
        assert!(!beats.all_started());
        a.fetch_add(1, Relaxed);
        assert!(!beats.all_started());
        b.fetch_add(1, Relaxed);
        assert!(beats.all_started());
        let mut w = Watchdog::new(Duration::from_millis(10));
        let t0 = Instant::now();
        assert!(!w.due(t0, &mut beats, true), "not due yet");
        let t1 = t0 + Duration::from_millis(20);
        assert!(w.due(t1, &mut beats, true), "both turned");
        a.fetch_add(1, Relaxed);
        let t2 = t1 + Duration::from_millis(20);
        assert!(!w.due(t2, &mut beats, true), "b is stuck");
        a.fetch_add(1, Relaxed);
        b.fetch_add(1, Relaxed);
        let t3 = t2 + Duration::from_millis(20);
        assert!(!w.due(t3, &mut beats, false), "a worker is gone");
        a.fetch_add(1, Relaxed);
        b.fetch_add(1, Relaxed);
        let t4 = t3 + Duration::from_millis(20);
        assert!(w.due(t4, &mut beats, true));
    }
}
