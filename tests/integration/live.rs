//! End-to-end tests of `appwall run` (root): the real binary in the
//! gateway of a lab (`support::lab`), real kernel queues, and real clients
//! (curl, python sockets, nc); plus `appwall demo`.

use std::path::Path;
use std::time::Duration;

use appwall::lab;
use nix::sys::signal::Signal;

use crate::support::lab::{HOSTS, stop, wait_log, with_lab};
use crate::support::py::python_msnp;
use crate::support::traffic::{GATEWAY_URL, curl, gateway_post};
use crate::support::{LAB, LAB_CAPTURES, captures_dir, exe, text};

cases![
    live_msn_blocked_web_passes_fast_path_marks: LAB,
    live_real_msn_capture_replayed_is_blocked: LAB_CAPTURES,
    live_kill9_restart_uninstall_and_one_instance_per_queue: LAB,
    live_fail_closed_drops_while_stopped: LAB,
    live_sighup_reloads_and_bad_file_keeps_policy: LAB,
    demo_runs_and_cleans_up: LAB,
];

fn live_msn_blocked_web_passes_fast_path_marks() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &["--reset"], "a");
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
        let o = gateway_post(lab, &c, GATEWAY_URL);
        assert!(!o.status.success(), "gateway POST passed: {}", text(&o));
        // MSNP on 443 and 8080: caught by signature.
        assert!(!python_msnp(lab, &c, lab::SERVER4, 443));
        assert!(!python_msnp(lab, &c, lab::SERVER4, 8080));
        // Ordinary GET and a 2 MB POST pass with bodies intact.
        let o = curl(lab, &c, &["http://198.51.100.10/index.html?q=msn"]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello from the lab server\n",
            "{}",
            text(&o)
        );
        let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let bf = lab.dir().join("body.bin");
        std::fs::write(&bf, &body).unwrap();
        let queued_before = lab.kernel_queued();
        let o = curl(
            lab,
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
        let queued = lab.kernel_queued() - queued_before;
        assert!(queued < 100, "{queued} packets of a 2 MB upload were queued");
        // The non-listed client's MSN passes (also to 1863).
        assert!(python_msnp(lab, &lab.other, lab::SERVER4, 443));
        assert!(python_msnp(lab, &lab.other, lab::SERVER4, 1863));
        let o = gateway_post(lab, &lab.other, GATEWAY_URL);
        assert!(o.status.success(), "{}", text(&o));
        // IPv6 behaves the same.
        assert!(!python_msnp(lab, &c, lab::SERVER6, 443));
        let o = curl(lab, &c, &["-g", "http://[2001:db8:2::10]/"]);
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
            lab.conntrack_marked("0x100000/0x300000") >= 4,
            "blocked connmarks"
        );
        assert!(lab.conntrack_marked("0x200000/0x300000") >= 1, "clean connmarks");

        std::thread::sleep(Duration::from_millis(1500));
        // Kernel port-rule blocks (told through NFLOG) carry all ones in
        // the queue bits of their flow id; the rest were judged in userspace.
        let (kernel, events): (Vec<_>, Vec<_>) = f
            .events()
            .into_iter()
            .partition(|e| e["flow_id"].as_u64().unwrap_or(0) >> 48 == 0xffff);
        assert!(!kernel.is_empty(), "1863 attempts leave events: {kernel:#?}");
        assert!(
            kernel
                .iter()
                .all(|e| e["dest_port"] == 1863 && e["alert"]["category"] == "port"),
            "{kernel:#?}"
        );
        let ports: Vec<u64> = events.iter().filter_map(|e| e["dest_port"].as_u64()).collect();
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
                .any(|e| e["alert"]["signature_id"] == "gateway-dll" && e["app_proto"] == "msn"),
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
        lab.assert_clean();
        // Stopped: everything flows again.
        assert!(python_msnp(lab, &c, lab::SERVER4, 8080));
    });
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

fn live_real_msn_capture_replayed_is_blocked() {
    let stream = msnp_client_stream(&captures_dir().join("msn_msnp_ppa_suspectemployeechat.pcap"));
    assert!(
        stream.len() > 100,
        "client stream of the capture: {} bytes",
        stream.len()
    );
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &["--reset", "--port-action", "reject"], "cap");
        let file = lab.dir().join("stream.bin");
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
                .any(|e| e["dest_port"] == 5000 && e["alert"]["category"] == "signature"),
            "{events:#?}\n{}",
            f.log_text()
        );
        stop(&mut f);
    });
}

fn live_kill9_restart_uninstall_and_one_instance_per_queue() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let mut a = lab.start(&h, &[], "a");
        // A second instance is refused, clearly, and leaves the first alone.
        let o = lab.appwall(&[
            "run",
            "--hosts",
            h.to_str().unwrap(),
            "--status-file",
            "/dev/null",
        ]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("already running"),
            "{}",
            text(&o)
        );
        assert!(
            !python_msnp(lab, &lab.client, lab::SERVER4, 8080),
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
            python_msnp(lab, &lab.client, lab::SERVER4, 8080),
            "fail-open while stopped"
        );
        let o = curl(lab, &lab.client, &["http://198.51.100.10/"]);
        assert!(o.status.success(), "{}", text(&o));

        // A new start replaces the stale install; its stop removes everything.
        let mut b = lab.start(&h, &[], "b");
        assert!(b.log_text().contains("replaced"), "{}", b.log_text());
        assert!(!python_msnp(lab, &lab.client, lab::SERVER4, 8080));
        stop(&mut b);
        lab.assert_clean();

        // Crash again, then remove by hand.
        let mut c = lab.start(&h, &[], "c");
        c.kill9().unwrap();
        let o = lab.appwall(&["uninstall"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("removed"),
            "{}",
            text(&o)
        );
    });
}

fn live_fail_closed_drops_while_stopped() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &["--fail-closed"], "fc");
        let o = curl(lab, &lab.client, &["http://198.51.100.10/"]);
        assert!(o.status.success(), "{}", text(&o));
        f.kill9().unwrap();
        let o = curl(lab, &lab.client, &["--max-time", "2", "http://198.51.100.10/"]);
        assert!(
            !o.status.success(),
            "fail-closed must drop without a listener: {}",
            text(&o)
        );
        let o = lab.appwall(&["uninstall"]);
        assert!(o.status.success(), "{}", text(&o));
    });
}

fn live_sighup_reloads_and_bad_file_keeps_policy() {
    with_lab(|lab| {
        let h = lab.hosts("203.0.113.20 msn\n");
        let mut f = lab.start(&h, &["--reset", "--queues", "2"], "r");
        assert!(python_msnp(lab, &lab.client, lab::SERVER4, 443), "not listed yet");
        assert!(!python_msnp(lab, &lab.other, lab::SERVER4, 443));

        std::fs::write(&h, HOSTS).unwrap();
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "policy reloaded", 1);
        assert!(
            !python_msnp(lab, &lab.client, lab::SERVER4, 443),
            "listed after reload"
        );
        assert!(
            python_msnp(lab, &lab.other, lab::SERVER4, 443),
            "no longer listed"
        );

        std::fs::write(&h, "192.0.2.10 msn\n192.0.2.300 msn\n").unwrap();
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "reload refused", 1);
        let log = f.log_text();
        assert!(
            log.contains(&format!("{}:2:", h.display())),
            "path:line: error expected:\n{log}"
        );
        assert!(
            !python_msnp(lab, &lab.client, lab::SERVER4, 443),
            "old policy stays"
        );
        stop(&mut f);
    });
}

fn demo_runs_and_cleans_up() {
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
