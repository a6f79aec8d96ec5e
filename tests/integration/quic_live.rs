//! QUIC live: a real HTTP/3 client (aioquic) in the lab's client
//! namespaces talks to an aioquic server through `appwall run` in the
//! gateway. The server name of its Initials is judged by message rules;
//! `quic = "block"` drops QUIC so the client falls back to HTTPS over TCP,
//! where the TLS server name is judged; an app's address list is dropped
//! by the kernel before anything is queued.
//!
//! Scripts: `quic/h3_server.py` (HTTP/3 and HTTPS on one port, a
//! self-signed certificate made at start) and `quic/h3_client.py` (QUIC
//! first, then TCP, like a browser). Every wait is bounded; the server is
//! killed by pid, the lab's namespaces go with the lab.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use appwall::lab::{CLIENT4, CLIENT6, SERVER4, SERVER6};

use crate::support::lab::{LiveLab, stop, wait_for, with_lab};
use crate::support::py::Py;
use crate::support::{LAB_TOOLS, Need, text};

/// A lab test that also needs aioquic (installed by `.ci/setup`).
const LAB_QUIC: &[Need] = &[Need::Root, Need::Tools(LAB_TOOLS), Need::PyModule("aioquic")];

cases![
    http3_is_judged_by_its_server_name: LAB_QUIC,
    quic_block_falls_back_to_tcp_and_tls_is_judged: LAB_QUIC,
    address_lists_are_dropped_by_the_kernel: LAB_QUIC,
    new_quic_connections_per_second_through_the_gateway: LAB_QUIC,
    ech_block_refuses_hellos_offering_ech: LAB_QUIC,
];

const SERVER: &str = include_str!("quic/h3_server.py");
const CLIENT: &str = include_str!("quic/h3_client.py");
const FLOOD: &str = include_str!("quic/initial_flood.py");
const COUNT: &str = include_str!("quic/udp_count.py");
/// UDP (HTTP/3) and TCP (HTTPS) port of the test server.
const PORT: &str = "4433";
/// How long the client waits for QUIC before falling back, and for TCP.
const QUIC_WAIT: &str = "1.5";
const TCP_WAIT: &str = "3";

/// Writes the app `site` (a name rule on `.blocked.example`, plus `extra`)
/// into a library directory of the lab; returns the directory.
fn library(lab: &LiveLab, extra: &str) -> PathBuf {
    let dir = lab.dir().join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    let app = format!(
        "name = \"site\"\ndescription = \"test app\"\ndefault = false\n{extra}\n\
         [[rule]]\nid = \"blocked-name\"\nwhy = \"test: names under blocked.example\"\n\
         match = [{{ field = \"host\", domains = [\".blocked.example\"] }}]\n"
    );
    std::fs::write(dir.join("site.toml"), app).unwrap();
    dir
}

/// Starts the HTTP/3 + HTTPS server in the server namespace.
fn server(lab: &LiveLab) -> Py {
    let dir = lab.dir().join("cert");
    std::fs::create_dir_all(&dir).unwrap();
    let mut py = Py::start(lab, &lab.server, SERVER, &[PORT, dir.to_str().unwrap()]);
    py.expect("READY", Duration::from_secs(20));
    py
}

/// What one client run saw: (QUIC ok, TCP ok if tried, ms when each ended).
#[derive(Debug)]
struct Run {
    quic: (bool, u64),
    tcp: Option<(bool, u64)>,
}

/// Runs the client in `ns` to `host` with server name `sni`.
fn client(lab: &LiveLab, ns: &str, host: &str, sni: &str, mode: &str) -> Run {
    client_args(lab, ns, host, sni, mode, &[])
}

/// [`client`] with extra arguments (`ech`).
fn client_args(lab: &LiveLab, ns: &str, host: &str, sni: &str, mode: &str, extra: &[&str]) -> Run {
    let mut args = vec!["-u", "-c", CLIENT, host, PORT, sni, mode, QUIC_WAIT, TCP_WAIT];
    args.extend_from_slice(extra);
    let o = lab.exec(ns, "python3", &args, Duration::from_secs(20)).unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let field = |name: &str| {
        out.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| {
                let ok = w.next() == Some("OK");
                (ok, w.next().and_then(|t| t.parse().ok()).unwrap_or(0))
            })
        })
    };
    assert!(out.contains("END"), "client did not finish: {}", text(&o));
    Run {
        quic: field("QUIC").unwrap_or_else(|| panic!("no QUIC line: {}", text(&o))),
        tcp: field("TCP"),
    }
}

/// Seconds since midnight of an event's RFC 3339 UTC `timestamp`.
fn seconds_of_day(ts: &serde_json::Value) -> f64 {
    let t = ts.as_str().unwrap_or_else(|| panic!("no timestamp: {ts}"));
    let clock = t.get(11..t.len() - 1).unwrap_or_else(|| panic!("timestamp {t}"));
    let mut parts = clock
        .split(':')
        .map(|x| x.parse::<f64>().unwrap_or_else(|_| panic!("timestamp {t}")));
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// Events of the filter with `kind`, once at least `n` are there.
fn events_of(f: &appwall::lab::Filter, kind: &str, n: usize) -> Vec<serde_json::Value> {
    let of = || -> Vec<serde_json::Value> {
        f.events()
            .into_iter()
            .filter(|e| e["alert"]["category"] == kind)
            .collect()
    };
    wait_for(&format!("{n} {kind} events"), Duration::from_secs(5), || {
        of().len() >= n
    });
    of()
}

fn http3_is_judged_by_its_server_name() {
    with_lab(|lab| {
        let rules = library(lab, "");
        let hosts = lab.hosts(&format!("{CLIENT4} site\n{CLIENT6} site\n"));
        let _srv = server(lab);
        let mut f = lab.start(&hosts, &["--library", rules.to_str().unwrap()], "quic-names");
        // (b) The listed host to an allowed name: HTTP/3 works.
        let r = client(lab, &lab.client, SERVER4, "www.allowed.example", "quic");
        assert!(r.quic.0, "allowed name over QUIC: {r:?}\n{}", f.log_text());
        // (a) A blocked name, IPv4 and IPv6: the Initial is dropped, the
        // client times out.
        for host in [SERVER4, SERVER6] {
            let r = client(lab, &lab.client, host, "chat.blocked.example", "quic");
            assert!(!r.quic.0, "blocked name over QUIC to {host}: {r:?}");
        }
        // (c) A host that is not listed is untouched, whatever the name.
        let r = client(lab, &lab.other, SERVER4, "chat.blocked.example", "quic");
        assert!(r.quic.0, "unlisted host: {r:?}");
        let ev = events_of(&f, "rule", 2);
        assert_eq!(ev.len(), 2, "one event per blocked attempt: {ev:#?}");
        for e in &ev {
            assert_eq!(e["proto"], "UDP", "{e}");
            assert_eq!(e["dest_port"], 4433, "{e}");
            assert_eq!(e["alert"]["app"], "site", "{e}");
            assert_eq!(e["alert"]["signature_id"], "blocked-name", "{e}");
        }
        stop(&mut f);
    });
}

fn quic_block_falls_back_to_tcp_and_tls_is_judged() {
    with_lab(|lab| {
        let rules = library(lab, "quic = \"block\"");
        let hosts = lab.hosts(&format!("{CLIENT4} site\n{CLIENT6} site\n"));
        let _srv = server(lab);
        let mut f = lab.start(&hosts, &["--library", rules.to_str().unwrap()], "quic-block");
        // An allowed name: QUIC is refused, the fallback to TCP works.
        let t = Instant::now();
        let r = client(lab, &lab.client, SERVER4, "www.allowed.example", "fallback");
        let whole = t.elapsed();
        assert!(!r.quic.0, "QUIC must be refused: {r:?}");
        let (tcp_ok, tcp_ms) = r.tcp.expect("the client fell back");
        assert!(
            tcp_ok,
            "fallback to TCP with an allowed name: {r:?}\n{}",
            f.log_text()
        );
        eprintln!(
            "fallback: QUIC given up after {} ms, page over TCP at {tcp_ms} ms (client run {whole:?})",
            r.quic.1
        );
        // A blocked name: refused on QUIC, then on TCP by its TLS server name.
        let r = client(lab, &lab.client, SERVER4, "chat.blocked.example", "fallback");
        assert!(!r.quic.0, "{r:?}");
        assert_eq!(r.tcp.map(|t| t.0), Some(false), "TLS over TCP judged too: {r:?}");
        let quic = events_of(&f, "quic", 2);
        assert!(
            quic.iter()
                .all(|e| e["proto"] == "UDP" && e["alert"]["app"] == "site"),
            "{quic:#?}"
        );
        let tls = events_of(&f, "rule", 1);
        assert_eq!(tls.len(), 1, "{tls:#?}");
        assert_eq!(tls[0]["proto"], "TCP");
        assert_eq!(tls[0]["alert"]["signature_id"], "blocked-name");
        // The TCP block comes within a few seconds of the client's start.
        let t0 = quic.last().map(|e| seconds_of_day(&e["timestamp"])).unwrap();
        let t1 = seconds_of_day(&tls[0]["timestamp"]);
        let gap = (t1 - t0 + 86_400.0) % 86_400.0;
        assert!(gap < 5.0, "QUIC block at {t0}, TLS block at {t1}");
        eprintln!(
            "blocked name: QUIC refused, TLS over TCP blocked {:.0} ms later",
            gap * 1000.0
        );
        // A host that is not listed keeps QUIC.
        let r = client(lab, &lab.other, SERVER4, "chat.blocked.example", "fallback");
        assert!(r.quic.0 && r.tcp.is_none(), "{r:?}");
        stop(&mut f);
    });
}

fn address_lists_are_dropped_by_the_kernel() {
    with_lab(|lab| {
        // The server's networks are the app's address list: no name needed.
        let rules = library(lab, "addresses = [\"198.51.100.0/24\", \"2001:db8:2::/48\"]");
        let hosts = lab.hosts(&format!("{CLIENT4} site\n{CLIENT6} site\n"));
        let _srv = server(lab);
        let mut f = lab.start(&hosts, &["--library", rules.to_str().unwrap()], "quic-addr");
        let installed = lab.appwall_rules().join("\n");
        for want in [
            "appwall4-d-site dst",
            "appwall6-d-site dst",
            "add appwall4-d-site 198.51.100.0/24",
            "add appwall6-d-site 2001:db8:2::/48",
        ] {
            assert!(installed.contains(want), "{want} not installed:\n{installed}");
        }
        let queued = lab.kernel_queued();
        for host in [SERVER4, SERVER6] {
            let r = client(lab, &lab.client, host, "www.allowed.example", "fallback");
            assert!(!r.quic.0 && r.tcp.map(|t| t.0) == Some(false), "to {host}: {r:?}");
        }
        // Dropped in the kernel: nothing of it reached the queue.
        assert_eq!(lab.kernel_queued(), queued, "address drops are not queued");
        let r = client(lab, &lab.other, SERVER4, "www.allowed.example", "quic");
        assert!(r.quic.0, "unlisted host: {r:?}");
        stop(&mut f);
    });
}

fn ech_block_refuses_hellos_offering_ech() {
    with_lab(|lab| {
        let rules = library(lab, "ech = \"block\"");
        let hosts = lab.hosts(&format!("{CLIENT4} site\n{CLIENT6} site\n"));
        let _srv = server(lab);
        let mut f = lab.start(&hosts, &["--library", rules.to_str().unwrap()], "quic-ech");
        // Without ECH an allowed name works; with it, the hello is refused.
        let r = client(lab, &lab.client, SERVER4, "www.allowed.example", "quic");
        assert!(r.quic.0, "no ECH: {r:?}");
        for host in [SERVER4, SERVER6] {
            let r = client_args(lab, &lab.client, host, "www.allowed.example", "quic", &["ech"]);
            assert!(!r.quic.0, "ECH offered to {host}: {r:?}");
        }
        // The same hello from a host that is not listed: the server takes it.
        let r = client_args(lab, &lab.other, SERVER4, "www.allowed.example", "quic", &["ech"]);
        assert!(r.quic.0, "unlisted host with ECH: {r:?}");
        let ev = events_of(&f, "ech", 2);
        assert_eq!(ev.len(), 2, "{ev:#?}");
        assert!(
            ev.iter()
                .all(|e| e["alert"]["app"] == "site" && e["proto"] == "UDP"),
            "{ev:#?}"
        );
        stop(&mut f);
    });
}

/// One burst of `n` new QUIC flows from the client to the counter: (sent,
/// seconds to send, received, seconds from first to last received).
fn burst(lab: &LiveLab, counter: &mut Py, n: usize, kind: &str) -> (usize, f64, usize, f64) {
    let o = lab
        .exec(
            &lab.client,
            "python3",
            &[
                "-u",
                "-c",
                FLOOD,
                SERVER4,
                "4500",
                &n.to_string(),
                "www.allowed.example",
                kind,
            ],
            Duration::from_secs(120),
        )
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix("SENT "))
        .unwrap_or_else(|| panic!("flood: {}", text(&o)));
    let mut w = sent.split_whitespace();
    let sent_n: usize = w.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let send_s: f64 = w.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let line = counter.expect("COUNT", Duration::from_secs(30));
    let mut w = line.split_whitespace().skip(1);
    let got: usize = w.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let span: f64 = w.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (sent_n, send_s, got, span)
}

/// New UDP-443-style flows per second, each opened by a real Initial,
/// forwarded plain and through `appwall run` (the listed client's Initials
/// all decrypted and judged), and, through appwall, datagrams of the same
/// flows that are not QUIC (queued, not decrypted): the figures go to
/// stderr (docs/quic.md). `APPWALL_BENCH_EXE` names another binary to
/// measure (a release build: the test binary's is a debug one).
fn new_quic_connections_per_second_through_the_gateway() {
    const N: usize = 3000;
    with_lab(|lab| {
        let rules = library(lab, "");
        let hosts = lab.hosts(&format!("{CLIENT4} site\n"));
        let mut counter = Py::start(lab, &lab.server, COUNT, &["4500"]);
        counter.expect("LISTENING", Duration::from_secs(10));
        let plain = burst(lab, &mut counter, N, "quic");
        let exe = std::env::var_os("APPWALL_BENCH_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(crate::support::exe);
        // A rate measurement from one address: far above any per-source
        // share of the queue, so the limit is off (--queue-rate).
        let args = ["--library", rules.to_str().unwrap(), "--queue-rate", "off"];
        let mut f = lab
            .start_filter_env(&exe, &hosts, &args, "quic-rate", &[])
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let other = burst(lab, &mut counter, N, "other");
        let queued = lab.kernel_queued();
        let filtered = burst(lab, &mut counter, N, "quic");
        let judged = lab.kernel_queued() - queued;
        stop(&mut f);
        let rate = |(_, send, got, span): (usize, f64, usize, f64)| got as f64 / span.max(send).max(1e-6);
        let show = |r: (usize, f64, usize, f64)| {
            format!("{} of {} in {:.3} s ({:.0}/s)", r.2, r.0, r.3.max(r.1), rate(r))
        };
        eprintln!(
            "new flows ({}): plain, Initials: {}; appwall, not QUIC: {}; appwall, Initials: {} ({judged} queued); Initials through appwall / plain {:.2}, / not QUIC {:.2}",
            exe.display(),
            show(plain),
            show(other),
            show(filtered),
            rate(filtered) / rate(plain),
            rate(filtered) / rate(other)
        );
        assert_eq!(plain.0, N, "the sender sent them all");
        assert!(
            plain.2 * 100 >= N * 99,
            "plain forwarding lost datagrams: {plain:?}"
        );
        // Every Initial of the listed client went through the engine, and
        // none was dropped for an allowed name (fail-open overflow aside).
        assert!(
            judged as usize >= filtered.2,
            "queued {judged}, received {filtered:?}"
        );
        assert!(filtered.2 * 100 >= N * 90, "allowed Initials lost: {filtered:?}");
    });
}
