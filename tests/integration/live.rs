//! End-to-end tests of `appwall run` (root): a lab of network namespaces
//! per test (see `appwall::lab`), the real binary in the gateway, real
//! kernel queues, and real clients (curl, python sockets, nc). Every lab is
//! removed by its Drop guard, also when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use appwall::lab::{self, Filter, Lab};

use crate::util::{in_ci, is_root, prerequisite};

const HOSTS: &str = "192.0.2.10 msn\n2001:db8:1::10 msn\n";

fn tools_present() -> bool {
    [
        "ip",
        "iptables-restore",
        "ipset",
        "conntrack",
        "curl",
        "nc",
        "python3",
    ]
    .iter()
    .all(|t| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A lab with the server running, or `None` when the test must be skipped.
pub(crate) fn lab(dir: &Path) -> Option<Lab> {
    if !prerequisite(is_root(), "live tests need root (network namespaces, iptables)") {
        return None;
    }
    if !prerequisite(
        tools_present(),
        "ip, iptables, ipset, conntrack, curl, nc and python3 are needed",
    ) {
        return None;
    }
    let mut lab = Lab::new(dir).expect("build the lab");
    lab.start_server().expect("start the lab server");
    Some(lab)
}

pub(crate) fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appwall"))
}

pub(crate) fn hosts(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("hosts");
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const PY_MSNP: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"VER 1 MSNP8 CVR0\r\n")
    d = s.recv(100)
    print("ANSWER" if d else "CLOSED", d)
except Exception as e:
    print("BLOCKED", type(e).__name__)
"#;

/// MSNP from a python socket in `ns`; true when the server answered.
fn python_msnp(lab: &Lab, ns: &str, host: &str, port: u16) -> bool {
    let o = lab
        .exec(
            ns,
            "python3",
            &["-c", PY_MSNP, host, &port.to_string()],
            Duration::from_secs(10),
        )
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.starts_with("ANSWER") || out.starts_with("BLOCKED") || out.starts_with("CLOSED"),
        "{}",
        text(&o)
    );
    out.starts_with("ANSWER")
}

fn curl(lab: &Lab, ns: &str, args: &[&str]) -> Output {
    let mut a = vec!["-sS", "--max-time", "5", "-H", "Expect:"];
    a.extend_from_slice(args);
    lab.exec(ns, "curl", &a, Duration::from_secs(10)).unwrap()
}

const GATEWAY_URL: &str =
    "http://198.51.100.10/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com";

fn gateway_post(lab: &Lab, ns: &str, url: &str) -> Output {
    curl(
        lab,
        ns,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-msn-messenger",
            "--data-binary",
            "VER 1 MSNP8 CVR0\r\n",
            url,
        ],
    )
}

fn conntrack_marked(lab: &Lab, mark: &str) -> usize {
    let o = lab
        .exec(
            &lab.gateway,
            "conntrack",
            &["-L", "-m", mark],
            Duration::from_secs(5),
        )
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

fn kernel_queued(lab: &Lab) -> u64 {
    let o = lab
        .exec(
            &lab.gateway,
            "cat",
            &["/proc/net/netfilter/nfnetlink_queue"],
            Duration::from_secs(5),
        )
        .unwrap();
    appwall::source::nfqueue::parse_kernel_queues(&String::from_utf8_lossy(&o.stdout))
        .iter()
        .map(|q| q.id_sequence)
        .sum()
}

pub(crate) fn assert_clean(lab: &Lab) {
    let left = lab.gateway_leftovers().unwrap();
    assert!(left.is_empty(), "left behind in the gateway: {left:#?}");
}

pub(crate) fn stop(f: &mut Filter) {
    let st = f.stop(Duration::from_secs(10)).unwrap();
    assert!(st.success(), "exit {st}; log:\n{}", f.log_text());
}

#[test]
fn live_msn_blocked_web_passes_fast_path_marks() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = lab(dir.path()) else { return };
    let h = hosts(dir.path(), HOSTS);
    let mut f = lab.start_filter(&exe(), &h, &["--reset"], "a").unwrap();
    let c = lab.client.clone();

    // MSNP to 1863: the kernel port rule drops it; it never reaches the queue.
    let o = lab
        .exec(
            &c,
            "nc",
            &["-w", "2", "198.51.100.10", "1863"],
            Duration::from_secs(6),
        )
        .unwrap();
    assert!(o.stdout.is_empty(), "{}", text(&o));
    // The gateway.dll POST to port 80: judged in the queue.
    let o = gateway_post(&lab, &c, GATEWAY_URL);
    assert!(!o.status.success(), "gateway POST passed: {}", text(&o));
    // MSNP on 443 and 8080: caught by signature.
    assert!(!python_msnp(&lab, &c, lab::SERVER4, 443));
    assert!(!python_msnp(&lab, &c, lab::SERVER4, 8080));
    // Ordinary GET and a 2 MB POST pass with bodies intact.
    let o = curl(&lab, &c, &["http://198.51.100.10/index.html?q=msn"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from the lab server\n",
        "{}",
        text(&o)
    );
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let bf = dir.path().join("body.bin");
    std::fs::write(&bf, &body).unwrap();
    let queued_before = kernel_queued(&lab);
    let o = curl(
        &lab,
        &c,
        &[
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", bf.display()),
            "http://198.51.100.10/upload",
        ],
    );
    assert!(
        o.stdout == body,
        "POST body not echoed intact: {} bytes back; {}",
        o.stdout.len(),
        String::from_utf8_lossy(&o.stderr)
    );
    // Clean after the inspection depth: the kernel stopped queueing it.
    let queued = kernel_queued(&lab) - queued_before;
    assert!(queued < 100, "{queued} packets of a 2 MB upload were queued");
    // The non-listed client's MSN passes (also to 1863).
    assert!(python_msnp(&lab, &lab.other, lab::SERVER4, 443));
    assert!(python_msnp(&lab, &lab.other, lab::SERVER4, 1863));
    let o = gateway_post(&lab, &lab.other, GATEWAY_URL);
    assert!(o.status.success(), "{}", text(&o));
    // IPv6 behaves the same.
    assert!(!python_msnp(&lab, &c, lab::SERVER6, 443));
    let o = curl(&lab, &c, &["-g", "http://[2001:db8:2::10]/"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lab
        .exec(
            &c,
            "nc",
            &["-w", "2", "2001:db8:2::10", "1863"],
            Duration::from_secs(6),
        )
        .unwrap();
    assert!(o.stdout.is_empty(), "{}", text(&o));

    // Decisions live in conntrack: blocked and clean marks.
    assert!(
        conntrack_marked(&lab, "0x100000/0x300000") >= 4,
        "blocked connmarks"
    );
    assert!(
        conntrack_marked(&lab, "0x200000/0x300000") >= 1,
        "clean connmarks"
    );

    std::thread::sleep(Duration::from_millis(1500));
    let events = f.events();
    let ports: Vec<u64> = events.iter().filter_map(|e| e["dport"].as_u64()).collect();
    assert_eq!(events.len(), 4, "one event per blocked connection: {events:#?}");
    assert!(
        ports.contains(&80) && ports.contains(&443) && ports.contains(&8080),
        "{ports:?}"
    );
    assert!(
        !ports.contains(&1863),
        "1863 is dropped in the kernel, never queued"
    );
    assert!(
        events
            .iter()
            .any(|e| e["signature"] == "gateway-dll" && e["app"] == "msn"),
        "{events:#?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f.status).unwrap()).unwrap();
    assert_eq!(status["running"], true);
    assert!(
        status["totals"]["blocked_connections"].as_u64() >= Some(4),
        "{status:#}"
    );
    assert!(status["queues"][0]["kernel"]["queue"] == 0, "{status:#}");
    stop(&mut f);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f.status).unwrap()).unwrap();
    assert_eq!(status["running"], false);
    assert_clean(&lab);
    // Stopped: everything flows again.
    assert!(python_msnp(&lab, &c, lab::SERVER4, 8080));
}

/// Client-to-server payloads of the first MSNP connection in a capture.
fn msnp_client_stream(capture: &Path) -> Vec<u8> {
    use appwall::packet::{LinkType, PacketView};
    use appwall::source::capture::CaptureReader;
    let mut r = CaptureReader::open(capture).unwrap();
    let mut key = None;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Some(fr) = r.next_frame().unwrap() {
        let Some(link) = LinkType::from_pcap(fr.linktype) else {
            continue;
        };
        let Ok(p) = PacketView::from_link(link, fr.data) else {
            continue;
        };
        if p.dport != 1863 || p.payload.is_empty() {
            continue;
        }
        let k = (p.src, p.sport);
        if *key.get_or_insert(k) != k {
            continue;
        }
        let seq = p.tcp.map_or(0, |t| t.seq);
        if seen.insert(seq) {
            out.extend_from_slice(p.payload);
        }
    }
    out
}

#[test]
fn live_real_msn_capture_replayed_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let Some(caps) = crate::util::captures() else {
        return;
    };
    let stream = msnp_client_stream(&caps.join("msn_msnp_ppa_suspectemployeechat.pcap"));
    assert!(
        stream.len() > 100,
        "client stream of the capture: {} bytes",
        stream.len()
    );
    let Some(lab) = lab(dir.path()) else { return };
    let h = hosts(dir.path(), HOSTS);
    let mut f = lab
        .start_filter(&exe(), &h, &["--reset", "--port-action", "reject"], "cap")
        .unwrap();
    let file = dir.path().join("stream.bin");
    std::fs::write(&file, &stream).unwrap();
    let input = std::fs::File::open(&file).unwrap();
    for port in ["5000", "1863"] {
        let mut cmd = lab.command(&lab.client, "nc", &["-w", "3", "-q", "1", lab::SERVER4, port]);
        cmd.stdin(input.try_clone().unwrap());
        let o = cmd.output().unwrap();
        assert!(
            o.stdout.len() < stream.len(),
            "port {port}: the whole stream was echoed ({} bytes)",
            o.stdout.len()
        );
        use std::io::Seek;
        input.try_clone().unwrap().rewind().unwrap();
    }
    // The same replay from the non-listed host is echoed whole.
    let mut cmd = lab.command(&lab.other, "nc", &["-w", "3", "-q", "1", lab::SERVER4, "5000"]);
    cmd.stdin(std::fs::File::open(&file).unwrap());
    let o = cmd.output().unwrap();
    assert_eq!(o.stdout.len(), stream.len(), "{}", text(&o));
    std::thread::sleep(Duration::from_millis(1500));
    let events = f.events();
    assert!(
        events
            .iter()
            .any(|e| e["dport"] == 5000 && e["kind"] == "signature"),
        "{events:#?}\n{}",
        f.log_text()
    );
    stop(&mut f);
    assert_clean(&lab);
}

#[test]
fn live_kill9_restart_uninstall_and_one_instance_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = lab(dir.path()) else { return };
    let h = hosts(dir.path(), HOSTS);
    let mut a = lab.start_filter(&exe(), &h, &[], "a").unwrap();
    // A second instance is refused, clearly, and leaves the first alone.
    let o = lab
        .exec(
            &lab.gateway,
            exe().to_str().unwrap(),
            &[
                "run",
                "--hosts",
                h.to_str().unwrap(),
                "--status-file",
                "/dev/null",
            ],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already running"),
        "{}",
        text(&o)
    );
    assert!(
        !python_msnp(&lab, &lab.client, lab::SERVER4, 8080),
        "first instance still filters"
    );

    // kill -9: the rules stay, the queue binding goes; fail-open lets traffic through.
    a.kill9().unwrap();
    let left = lab.gateway_leftovers().unwrap();
    assert!(left.iter().any(|l| l.contains("APPWALL")), "{left:?}");
    assert!(
        !left.iter().any(|l| l.starts_with("cat:")),
        "queue binding left: {left:?}"
    );
    assert!(
        python_msnp(&lab, &lab.client, lab::SERVER4, 8080),
        "fail-open while stopped"
    );
    let o = curl(&lab, &lab.client, &["http://198.51.100.10/"]);
    assert!(o.status.success(), "{}", text(&o));

    // A new start replaces the stale install; its stop removes everything.
    let mut b = lab.start_filter(&exe(), &h, &[], "b").unwrap();
    assert!(b.log_text().contains("replaced"), "{}", b.log_text());
    assert!(!python_msnp(&lab, &lab.client, lab::SERVER4, 8080));
    stop(&mut b);
    assert_clean(&lab);

    // Crash again, then remove by hand.
    let mut c = lab.start_filter(&exe(), &h, &[], "c").unwrap();
    c.kill9().unwrap();
    let o = lab
        .exec(
            &lab.gateway,
            exe().to_str().unwrap(),
            &["uninstall"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("removed"),
        "{}",
        text(&o)
    );
    assert_clean(&lab);
}

#[test]
fn live_fail_closed_drops_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = lab(dir.path()) else { return };
    let h = hosts(dir.path(), HOSTS);
    let mut f = lab.start_filter(&exe(), &h, &["--fail-closed"], "fc").unwrap();
    let o = curl(&lab, &lab.client, &["http://198.51.100.10/"]);
    assert!(o.status.success(), "{}", text(&o));
    f.kill9().unwrap();
    let o = curl(&lab, &lab.client, &["--max-time", "2", "http://198.51.100.10/"]);
    assert!(
        !o.status.success(),
        "fail-closed must drop without a listener: {}",
        text(&o)
    );
    let o = lab
        .exec(
            &lab.gateway,
            exe().to_str().unwrap(),
            &["uninstall"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_clean(&lab);
}

#[test]
fn live_sighup_reloads_and_bad_file_keeps_policy() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = lab(dir.path()) else { return };
    let h = hosts(dir.path(), "203.0.113.20 msn\n");
    let mut f = lab
        .start_filter(&exe(), &h, &["--reset", "--queues", "2"], "r")
        .unwrap();
    assert!(
        python_msnp(&lab, &lab.client, lab::SERVER4, 443),
        "not listed yet"
    );
    assert!(!python_msnp(&lab, &lab.other, lab::SERVER4, 443));

    let wait_log = |f: &Filter, what: &str, n: usize| {
        for _ in 0..200 {
            if f.log_text().matches(what).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no {what:?} in the log:\n{}", f.log_text());
    };
    std::fs::write(&h, HOSTS).unwrap();
    f.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_log(&f, "policy reloaded", 1);
    assert!(
        !python_msnp(&lab, &lab.client, lab::SERVER4, 443),
        "listed after reload"
    );
    assert!(
        python_msnp(&lab, &lab.other, lab::SERVER4, 443),
        "no longer listed"
    );

    std::fs::write(&h, "192.0.2.10 msn\n192.0.2.300 msn\n").unwrap();
    f.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_log(&f, "reload refused", 1);
    let log = f.log_text();
    assert!(
        log.contains(&format!("{}:2:", h.display())),
        "path:line: error expected:\n{log}"
    );
    assert!(
        !python_msnp(&lab, &lab.client, lab::SERVER4, 443),
        "old policy stays"
    );
    stop(&mut f);
    assert_clean(&lab);
}

#[test]
fn demo_runs_and_cleans_up() {
    if !prerequisite(is_root(), "appwall demo needs root") {
        return;
    }
    let _ = in_ci();
    let o = lab::run_with_timeout(
        std::process::Command::new(exe()).arg("demo"),
        Duration::from_secs(120),
    )
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("BLOCKED") && out.contains("passed") && out.contains("lab removed"),
        "{out}"
    );
    assert!(!out.contains(" NO "), "{out}");
}
