//! The live filter as an admin meets it: blocked connections answered with
//! resets on both sides, the event log reopened for log rotation, the
//! status file, `appwall status`, and the metrics file and endpoint.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::schemas::assert_valid;
use crate::support::LAB;
use crate::support::lab::{HOSTS, status_json, stop, wait_for, wait_log, with_lab};
use crate::support::py::Py;

cases![
    blocked_connections_are_reset_on_both_sides_with_metrics_and_status: LAB,
    silent_drop_leaves_the_client_waiting: LAB,
    the_event_log_is_reopened_on_sigusr1: LAB,
    kernel_port_blocks_leave_one_event_through_nflog: LAB,
    stage_timings_cover_every_stage_with_kernel_timestamps: LAB,
];

/// A one-connection server on `argv[1]`: says how its connection ended.
const PY_SERVER: &str = r#"
import socket, sys
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(4)
print("READY")
c, _ = l.accept()
c.settimeout(5)
try:
    d = c.recv(100)
    print("EOF" if not d else "DATA")
except ConnectionResetError:
    print("RESET")
except socket.timeout:
    print("TIMEOUT")
"#;

/// MSNP from a client: how the connection ended and after how long.
const PY_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
t = time.monotonic()
s.sendall(b"VER 1 MSNP8 CVR0\r\n")
s.settimeout(float(sys.argv[3]))
try:
    d = s.recv(100)
    print("EOF" if not d else "DATA", time.monotonic() - t)
except ConnectionResetError:
    print("RESET", time.monotonic() - t)
except socket.timeout:
    print("TIMEOUT", time.monotonic() - t)
"#;

/// Runs the client in the lab's client namespace; returns (outcome, seconds).
fn client(lab: &appwall::lab::Lab, port: u16, wait: &str) -> (String, f64) {
    let o = lab
        .exec(
            &lab.client,
            "python3",
            &["-c", PY_CLIENT, appwall::lab::SERVER4, &port.to_string(), wait],
            Duration::from_secs(15),
        )
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let mut it = out.split_whitespace();
    let what = it
        .next()
        .unwrap_or_else(|| panic!("client said nothing: {o:?}"))
        .to_string();
    (what, it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN))
}

fn blocked_connections_are_reset_on_both_sides_with_metrics_and_status() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &["--metrics-listen", "127.0.0.1:9474"], "rst");
        let mut server = Py::start(lab, &lab.server, PY_SERVER, &["5002"]);
        server.expect("READY", Duration::from_secs(5));
        let (what, took) = client(lab, 5002, "3");
        assert_eq!(what, "RESET", "the client is told at once\n{}", f.log_text());
        assert!(took < 1.0, "reset after {took} s");
        server.expect("RESET", Duration::from_secs(5));

        // The event, in the documented vocabulary.
        wait_for("the event", Duration::from_secs(5), || !f.events().is_empty());
        let ev = &f.events()[0];
        assert_valid("event.json", ev);
        assert_eq!(ev["dest_port"], 5002);
        assert_eq!(ev["alert"]["signature_id"], "msnp-ver", "{ev}");

        // Status file, its schema, `appwall status`.
        wait_for("resets counted", Duration::from_secs(5), || {
            status_json(&f)["totals"]["resets_sent"].as_u64() >= Some(2)
        });
        let st = status_json(&f);
        assert_valid("status.json", &st);
        assert_eq!(st["policy_hash"].as_str().unwrap().len(), 12, "{st}");
        assert!(
            st.get("stages").is_none(),
            "stage timings are off by default: {st}"
        );
        let o = lab.appwall(&["status", "--status-file", f.status.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(text.starts_with("appwall: running"), "{text}");
        assert!(text.contains("msn 1 connections"), "{text}");
        let o = lab.appwall(&["status", "--json", "--status-file", f.status.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["event_type"], "stats");

        // Metrics: the file beside the status file and the endpoint.
        let prom = std::fs::read_to_string(f.status.with_extension("prom")).unwrap();
        assert!(prom.ends_with("# EOF\n"), "{prom}");
        assert!(
            prom.contains("# TYPE appwall_resets_sent_total counter"),
            "{prom}"
        );
        let o = lab
            .exec(
                &lab.gateway,
                "curl",
                &["-s", "-i", "-m", "5", "http://127.0.0.1:9474/metrics"],
                Duration::from_secs(10),
            )
            .unwrap();
        let scrape = String::from_utf8_lossy(&o.stdout);
        assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
        assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
        assert!(scrape.contains("# TYPE appwall_resets_sent counter"), "{scrape}");
        assert!(
            scrape.contains("appwall_blocked_connections_total{app=\"msn\"} 1"),
            "{scrape}"
        );
        assert!(
            scrape.contains("appwall_packets_total{verdict=\"drop\",reason=\"quic\"} 0"),
            "{scrape}"
        );
        assert!(scrape.ends_with("# EOF\n"), "{scrape}");
        let o = lab
            .exec(
                &lab.gateway,
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-m",
                    "5",
                    "http://127.0.0.1:9474/",
                ],
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
        stop(&mut f);
        let o = lab.appwall(&["status", "--status-file", f.status.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "stopped: {o:?}");
    });
}

/// `--stage-timings`: every stage is timed on real queued packets, the
/// queue wait from the kernel's own receive timestamps (present only
/// because the flag asked for them), in the status file (valid against its
/// schema), `appwall status` and the metrics file.
fn stage_timings_cover_every_stage_with_kernel_timestamps() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &["--stage-timings"], "stages");
        let mut server = Py::start(lab, &lab.server, PY_SERVER, &["5005"]);
        server.expect("READY", Duration::from_secs(5));
        let (what, _) = client(lab, 5005, "3");
        assert_eq!(what, "RESET", "{}", f.log_text());
        let count = |st: &serde_json::Value, stage: &str| {
            st["stages"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["stage"] == stage))
                .and_then(|s| s["count"].as_u64())
                .unwrap_or(0)
        };
        wait_for("every stage timed", Duration::from_secs(5), || {
            let st = status_json(&f);
            ["queue_wait", "judge", "verdict"]
                .iter()
                .all(|s| count(&st, s) > 0)
        });
        let st = status_json(&f);
        assert_valid("status.json", &st);
        let judged = st["totals"]["packets"].as_u64().unwrap();
        assert_eq!(count(&st, "judge"), judged, "one judge timing per packet: {st}");
        assert_eq!(
            count(&st, "verdict"),
            judged,
            "one verdict timing per packet: {st}"
        );
        for s in st["stages"].as_array().unwrap() {
            // A lab packet waits microseconds, not seconds: the timestamps are
            // the kernel's receive times, not something stale.
            let p99 = s["p99_ns"].as_u64().unwrap();
            assert!(p99 < 1 << 26, "{s}");
        }
        let o = lab.appwall(&["status", "--status-file", f.status.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("stage latency (--stage-timings; upper bounds): queue_wait p50 "),
            "{text}"
        );
        let prom = std::fs::read_to_string(f.status.with_extension("prom")).unwrap();
        assert!(
            prom.contains("appwall_stage_latency_seconds_bucket{stage=\"queue_wait\",le=\"+Inf\"}"),
            "{prom}"
        );
        stop(&mut f);
    });
}

fn silent_drop_leaves_the_client_waiting() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &["--silent-drop"], "quiet");
        let mut server = Py::start(lab, &lab.server, PY_SERVER, &["5003"]);
        server.expect("READY", Duration::from_secs(5));
        let (what, _) = client(lab, 5003, "2");
        assert_eq!(what, "TIMEOUT", "{}", f.log_text());
        assert_eq!(status_json(&f)["totals"]["resets_sent"], 0);
        stop(&mut f);
    });
}

fn the_event_log_is_reopened_on_sigusr1() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &[], "rot");
        let mut server = Py::start(lab, &lab.server, PY_SERVER, &["5004"]);
        server.expect("READY", Duration::from_secs(5));
        assert_eq!(client(lab, 5004, "3").0, "RESET");
        wait_for("the first event", Duration::from_secs(5), || {
            f.events().len() == 1
        });
        // Log rotation: move the file away, then signal.
        let rotated = f.events.with_extension("jsonl.1");
        std::fs::rename(&f.events, &rotated).unwrap();
        f.signal(Signal::SIGUSR1).unwrap();
        wait_log(&f, "reopened", 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.events).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "new file mode {mode:o}");
        // The old file is closed: no descriptor of the filter points at it.
        let pid = f.pid().unwrap();
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            !open.iter().any(|p| p.contains("jsonl.1")),
            "old event log still open: {open:?}"
        );
        drop(server);
        let mut server = Py::start(lab, &lab.server, PY_SERVER, &["5004"]);
        server.expect("READY", Duration::from_secs(5));
        assert_eq!(client(lab, 5004, "3").0, "RESET");
        wait_for("the second event", Duration::from_secs(5), || {
            f.events().len() == 1
        });
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert_eq!(old.lines().count(), 1, "{old}");
        // SIGUSR1 is not a reload.
        assert_eq!(status_json(&f)["reloads"], 0);
        stop(&mut f);
    });
}

fn kernel_port_blocks_leave_one_event_through_nflog() {
    with_lab(|lab| {
        let hosts = lab.hosts(HOSTS);
        let mut f = lab.start(&hosts, &[], "nflog");
        assert!(!f.log_text().contains("leave no event"), "{}", f.log_text());
        // The kernel half: appwall's NFLOG rule before its port rule.
        let rules = lab.appwall_rules().join("\n");
        assert!(rules.contains("--nflog-prefix \"appwall app-msn\""), "{rules}");
        // MSNP to 1863: dropped by the kernel's port rule, SYNs retried.
        assert!(!crate::support::py::python_msnp(
            lab,
            &lab.client,
            appwall::lab::SERVER4,
            1863
        ));
        wait_for("the kernel block's event", Duration::from_secs(5), || {
            f.events().iter().any(|e| e["dest_port"] == 1863)
        });
        std::thread::sleep(Duration::from_millis(500));
        let evs: Vec<serde_json::Value> = f
            .events()
            .into_iter()
            .filter(|e| e["dest_port"] == 1863)
            .collect();
        assert_eq!(evs.len(), 1, "one event per attempt, not per SYN: {evs:#?}");
        let ev = &evs[0];
        assert_valid("event.json", ev);
        assert_eq!(ev["app_proto"], "msn", "{ev}");
        assert_eq!(ev["alert"]["category"], "port", "{ev}");
        assert_eq!(ev["flow_id"].as_u64().unwrap() >> 48, 0xffff, "{ev}");
        // The port rule's own counter, per app, kept in the last status file.
        let blocked =
            |f: &appwall::lab::Filter| status_json(f)["apps"]["msn"]["kernel_blocked_packets"].as_u64();
        wait_for("the port rule's counter", Duration::from_secs(5), || {
            blocked(&f) >= Some(1)
        });
        stop(&mut f);
        assert!(blocked(&f) >= Some(1), "{}", status_json(&f));
    });
}
