//! Schedules live: a hosts line's `app@schedule` comes into force when its
//! window opens and goes when it closes, within a second, also for a
//! connection the kernel fast path already holds as clean (its mark is
//! cleared and it is judged again). The daemon reads a test clock
//! (`APPWALL_FAKE_NOW`) that starts seconds before the window.

use std::time::{Duration, Instant};

use crate::squid_oracle::ORIGIN;
use crate::support::LAB;
use crate::support::lab::{stop, with_lab};
use crate::support::py::Py;

cases![live_schedule_windows_open_and_close_within_a_second: LAB];

/// One keep-alive connection A (opened before the window), then B (in the
/// window) and C (after it), each sending the gateway request; trigger
/// files in `argv[1]` pace it.
const CLIENT: &str = r#"
import os, socket, sys, time
d = sys.argv[1]
def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)
def conn():
    s = socket.create_connection(("198.51.100.10", 8000), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
def req(s):
    s.sendall(b"GET /gateway/gateway.dll?Action=poll HTTP/1.1\r\nHost: gw.example\r\n\r\n")
    s.settimeout(2)
    try:
        r = s.recv(65536)
        return "ANSWER" if r else "CLOSED"
    except OSError as e:
        return "BLOCKED"
a = conn()
print("A1", req(a), flush=True)
wait("open")
print("A2", req(a), flush=True)
print("B1", req(conn()), flush=True)
wait("closed")
print("C1", req(conn()), flush=True)
"#;

const CHAT: &str = r#"name = "chat"
description = "gateway requests, in a schedule"
default = false
[[rule]]
id = "gw"
[[rule.match]]
field = "url"
regex = ["gateway\\.dll"]
"#;

/// Keeps the host inspected (so its connections reach the fast path as
/// clean) without ever matching.
const WEB: &str = r#"name = "web"
description = "never matches"
default = false
[[rule]]
id = "never"
[[rule.match]]
field = "path"
regex = ["^/never-ever$"]
"#;

fn live_schedule_windows_open_and_close_within_a_second() {
    with_lab(|lab| {
        let lib = lab.dir().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::write(lib.join("chat.toml"), CHAT).unwrap();
        std::fs::write(lib.join("web.toml"), WEB).unwrap();
        // Monday 2026-11-23 07:59:56 UTC; the window opens 4 s later and
        // lasts 6 s.
        let fake = (1_795_392_000u64 + 8 * 3600 - 4).to_string();
        let hosts = lab.hosts("@soon Mon 08:00:00-08:00:06\n192.0.2.10 web,chat@soon\n");
        let mut origin = Py::start(lab, &lab.server, ORIGIN, &["8000"]);
        origin.expect("READY", Duration::from_secs(10));
        let mut f = lab.start_env(
            &hosts,
            &["--library", lib.to_str().unwrap(), "--depth-bytes", "64"],
            "sched",
            &[("APPWALL_FAKE_NOW", &fake)],
        );
        let trig = lab.dir().join("trig");
        std::fs::create_dir(&trig).unwrap();
        let mut client = Py::start(lab, &lab.client, CLIENT, &[trig.to_str().unwrap()]);
        assert_eq!(
            client.expect("A1", Duration::from_secs(10)),
            "A1 ANSWER",
            "before the window: {}",
            f.log_text()
        );
        let changes = |f: &appwall::lab::Filter| f.log_text().matches("schedule changed").count();
        let wait_change = |n: usize, f: &appwall::lab::Filter| {
            let start = Instant::now();
            while changes(f) < n {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "no schedule change {n}:\n{}",
                    f.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_change(1, &f);
        let opened = Instant::now();
        std::fs::write(trig.join("open"), "").unwrap();
        let a2 = client.expect("A2", Duration::from_secs(5));
        assert!(
            opened.elapsed() < Duration::from_secs(3),
            "the window took too long to apply"
        );
        assert_eq!(
            a2,
            "A2 BLOCKED",
            "a clean connection of the host, in the window:\n{}",
            f.log_text()
        );
        assert_eq!(client.expect("B1", Duration::from_secs(5)), "B1 BLOCKED");
        // An HTTP keep-alive connection is never settled whole (each request
        // is judged), so the first connection was still inspected when the
        // window opened; a settled one would have been sent back to
        // inspection (the reload path's requeue, tested in daemon_safety).
        let log = f.log_text();
        assert!(
            !log.contains("clean connections") || log.contains("sent back to inspection"),
            "a settled connection was not re-queued:\n{log}"
        );
        wait_change(2, &f);
        std::fs::write(trig.join("closed"), "").unwrap();
        assert_eq!(
            client.expect("C1", Duration::from_secs(5)),
            "C1 ANSWER",
            "after the window:\n{}",
            f.log_text()
        );
        let events = f.events();
        assert!(
            events.iter().any(|e| e["alert"]["signature_id"] == "gw"),
            "{events:?}"
        );
        stop(&mut f);
    });
}
