//! systemd's `Type=notify` protocol, live: the daemon runs with
//! `NOTIFY_SOCKET` naming a datagram socket the test binds (as systemd's
//! would be) and `WATCHDOG_USEC` set, and the test reads what it is told:
//! READY only once the NFQUEUE rule is in, WATCHDOG pings while it runs,
//! RELOADING + MONOTONIC_USEC then READY around a SIGHUP (a taken and a
//! refused reload), STOPPING on SIGTERM, then a clean exit.
//!
//! A stalled worker silencing the watchdog is covered below the daemon:
//! `daemon::worker`'s `a_stuck_worker_stops_the_watchdog_pings` runs a real
//! worker loop on a source that hangs, and `daemon::notify`'s unit tests the
//! bookkeeping; stalling a worker of a live daemon would need a test-only
//! hook in the packet path.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::LAB;
use crate::support::lab::{HOSTS, with_lab};

cases![daemon_speaks_sd_notify_with_a_watchdog_fed_by_live_workers: LAB];

/// Waits up to `limit` for the next datagram; `None` on timeout.
fn next(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Reads datagrams until one has the line `line`; returns it and what came
/// before (panics after `limit`, with what was read).
fn until(sock: &UnixDatagram, line: &str, limit: Duration) -> (String, Vec<String>) {
    let start = Instant::now();
    let mut before = Vec::new();
    while start.elapsed() < limit {
        if let Some(m) = next(sock, Duration::from_millis(200)) {
            if m.lines().any(|l| l == line) {
                return (m, before);
            }
            before.push(m);
        }
    }
    panic!("no {line} within {limit:?}; got {before:?}");
}

fn daemon_speaks_sd_notify_with_a_watchdog_fed_by_live_workers() {
    with_lab(|lab| {
        let path = lab.dir().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let hosts = lab.hosts(HOSTS);
        let status = lab.dir().join("status.json");
        // 1 s: a ping every 0.5 s (a worker's loop turns at least every
        // 0.2 s, its receive timeout).
        let env = [
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ];
        let mut f = lab.spawn_env(&hosts, &status, &["--queues", "2"], "notify", &env);

        // READY: the rules are in when it arrives (the log line that follows
        // their installation is written before READY is sent).
        let (ready, before) = until(&sock, "READY=1", Duration::from_secs(20));
        let rules = lab.appwall_rules();
        assert!(
            rules.iter().any(|r| r.contains("NFQUEUE")),
            "READY before the NFQUEUE rule: {rules:#?}"
        );
        assert!(f.log_text().contains("rules installed"), "{}", f.log_text());
        assert!(
            ready
                .lines()
                .any(|l| l.starts_with("STATUS=filtering on queues 0..1")),
            "{ready:?}"
        );
        assert!(
            before.iter().all(|m| !m.contains("WATCHDOG=1")),
            "pings before READY: {before:?}"
        );

        // Watchdog pings, about every 0.5 s.
        let start = Instant::now();
        let mut pings = 0;
        while start.elapsed() < Duration::from_millis(2300) {
            if next(&sock, Duration::from_millis(600)).is_some_and(|m| m == "WATCHDOG=1\n") {
                pings += 1;
            }
        }
        assert!((3..=6).contains(&pings), "{pings} pings in 2.3 s");

        // A reload: RELOADING with the monotonic clock, then READY.
        assert!(f.signal(Signal::SIGHUP));
        let (reloading, _) = until(&sock, "RELOADING=1", Duration::from_secs(5));
        let usec: u64 = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
        assert!(usec > 0);
        let (again, _) = until(&sock, "READY=1", Duration::from_secs(20));
        assert!(again.contains("policy reloaded"), "{again:?}");

        // A refused reload is over too: READY, saying the old policy stays.
        std::fs::write(&hosts, "192.0.2.10 no-such-app\n").unwrap();
        assert!(f.signal(Signal::SIGHUP));
        until(&sock, "RELOADING=1", Duration::from_secs(5));
        let (refused, _) = until(&sock, "READY=1", Duration::from_secs(20));
        assert!(refused.contains("running policy stays"), "{refused:?}");
        assert!(
            lab.appwall_rules().iter().any(|r| r.contains("NFQUEUE")),
            "a refused reload kept the rules"
        );

        // SIGTERM: STOPPING, then a clean exit without the rules.
        assert!(f.signal(Signal::SIGTERM));
        until(&sock, "STOPPING=1", Duration::from_secs(5));
        let st = f.wait(Duration::from_secs(20));
        assert!(st.success(), "exit {st}:\n{}", f.log_text());
        assert!(lab.appwall_rules().is_empty(), "{:#?}", lab.appwall_rules());
    });
}
