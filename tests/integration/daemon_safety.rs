//! Security and failure behaviour of `appwall run`, proved live in
//! namespace labs (root): signals during start-up, descriptors children
//! inherit, output files planted as symbolic links, reload atomicity,
//! table pressure, overflow accounting. docs/security.md cites these tests.
//!
//! Built on the shared lab fixture ([`with_lab`], which also checks the
//! gateway is left clean) and the helpers of `support`. Only RFC 5737 and
//! 2001:db8::/32 addresses; every wait is bounded; processes started here
//! are stopped by pid.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use appwall::lab::{self, enter_netns};
use nix::sys::signal::Signal;

use crate::support::keepalive::{KEEPALIVE_PORT, KeepAliveClients, KeepAliveServer, read_answer};
use crate::support::lab::{LiveLab, Raw, reload, status_file_json, status_json, stop, wait_for, with_lab};
use crate::support::procs::inheritable_fds;
use crate::support::tools::{TOOLS, ToolShim};
use crate::support::traffic::{MSNP, udp_flood_thread};
use crate::support::{LAB, exe, text};

cases![
    safety_sighup_spam_during_start_up_is_survived_then_reloads: LAB,
    safety_sigterm_during_start_up_exits_cleanly_and_leaves_nothing: LAB,
    safety_rule_tools_inherit_no_queue_socket_and_every_fd_is_close_on_exec: LAB,
    safety_kill9_during_reload_leaves_no_orphan_holding_the_queue: LAB,
    safety_symlinked_or_exposed_output_files_refuse_start_and_targets_stay: LAB,
    safety_reload_lists_a_host_and_its_open_keepalive_connections_are_inspected: LAB,
    safety_syn_burst_between_two_halves_of_the_gateway_request_lets_none_through: LAB,
    safety_queue_overflow_is_zero_without_a_flood_through_start_reloads_and_exit: LAB,
    safety_queue_overflow_under_a_flood_is_monotonic_and_exact_at_exit: LAB,
    safety_queue_full_drop_lets_nothing_through_a_flood_while_bypass_still_serves_a_dead_filter: LAB,
];

/// The listed client, IPv4 only: the reloads below change IPv4 rules only.
const HOSTS: &str = "192.0.2.10 msn\n";

/// [`HOSTS`] and 20,000 IPv6 hosts: start-up (policy compile, ipset fill)
/// takes long enough for many signals to land in it.
fn large_policy() -> String {
    let mut text = String::from(HOSTS);
    for i in 0..20_000u32 {
        text.push_str(&format!("2001:db8:ff{:02x}::{:x} msn\n", i >> 12, i & 0xfff));
    }
    text
}

/// `appwall run` with [`large_policy`] and `extra`, once it has exec'd
/// (its start-up under way).
fn spawn_in_start_up(lab: &LiveLab, extra: &[&str]) -> Raw {
    let h = lab.hosts(&large_policy());
    let raw = lab.spawn(&h, &lab.dir().join("status.json"), extra, "run");
    raw.wait_exec();
    raw
}

// ------------------------------------------------------------ item 1: hygiene

fn safety_sighup_spam_during_start_up_is_survived_then_reloads() {
    with_lab(|lab| {
        let mut raw = spawn_in_start_up(lab, &["--stats-interval", "1"]);
        let mut sent = 0u32;
        let start = Instant::now();
        while !raw.log_text().contains("rules installed") {
            assert!(
                raw.running(),
                "killed by SIGHUP number {sent} during start-up; log:\n{}",
                raw.log_text()
            );
            assert!(start.elapsed() < Duration::from_secs(60), "start-up too slow");
            raw.signal(Signal::SIGHUP);
            sent += 1;
            thread::sleep(Duration::from_millis(2));
        }
        assert!(sent >= 20, "only {sent} signals landed in start-up");
        // The signals were kept: once running, they are one reload.
        wait_for("the reload", Duration::from_secs(30), || {
            raw.log_text().contains("policy reloaded")
        });
        assert!(raw.running(), "{}", raw.log_text());
        assert!(raw.signal(Signal::SIGTERM));
        let st = raw.wait(Duration::from_secs(30));
        assert!(st.success(), "exit {st}: {}", raw.log_text());
        eprintln!("{sent} SIGHUPs during start-up survived");
    });
}

fn safety_sigterm_during_start_up_exits_cleanly_and_leaves_nothing() {
    with_lab(|lab| {
        let mut raw = spawn_in_start_up(lab, &[]);
        assert!(raw.signal(Signal::SIGTERM));
        let st = raw.wait(Duration::from_secs(30));
        assert!(st.success(), "exit {st}: {}", raw.log_text());
        let log = raw.log_text();
        assert!(
            log.contains("nothing was installed") || log.contains("rules removed"),
            "{log}"
        );
    });
}

fn safety_rule_tools_inherit_no_queue_socket_and_every_fd_is_close_on_exec() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let shim = ToolShim::new(lab.dir(), &TOOLS);
        let mut f = lab.start_env(&h, &[], "a", &[("PATH", &shim.path_then_system())]);
        let open = inheritable_fds(f.pid().unwrap());
        assert!(open.is_empty(), "inheritable descriptors: {open:#?}");
        reload(&f, &h, "192.0.2.10 msn\n192.0.2.11 msn\n", 1);
        stop(&mut f);
        let restores = shim.fd_listings("iptables-restore");
        // Install, reload, removal.
        assert!(restores.len() >= 3, "{} runs of iptables-restore", restores.len());
        for tool in TOOLS {
            for l in shim.fd_listings(tool) {
                assert!(!l.contains("socket:"), "{tool} inherited a socket:\n{l}");
            }
        }
    });
}

fn safety_kill9_during_reload_leaves_no_orphan_holding_the_queue() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let shim = ToolShim::new(lab.dir(), &["iptables-restore"]);
        let mut f = lab.start_env(&h, &[], "a", &[("PATH", &shim.path_then_system())]);
        let bound = || lab.kernel_queue_text().trim().to_string();
        assert!(!bound().is_empty(), "queue 0 bound while running");
        // The reload's iptables-restore hangs 4 s; appwall dies meanwhile.
        shim.hang("iptables-restore", true);
        f.signal(Signal::SIGHUP).unwrap();
        wait_for("the reload's iptables-restore", Duration::from_secs(10), || {
            shim.hung("iptables-restore")
        });
        f.kill9().unwrap();
        thread::sleep(Duration::from_millis(300));
        let left = bound();
        let orphan_running = !shim.woke("iptables-restore");
        wait_for("the orphan to finish", Duration::from_secs(10), || {
            shim.woke("iptables-restore")
        });
        thread::sleep(Duration::from_millis(300));
        assert!(orphan_running, "the check must happen while the orphan runs");
        assert!(
            left.is_empty(),
            "queue still bound after kill -9, by the orphaned rule tool: {left}"
        );
        let o = lab.appwall(&["uninstall", "--force"]);
        assert_out!(o.status.success(), text(&o));
    });
}

fn safety_symlinked_or_exposed_output_files_refuse_start_and_targets_stay() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let target = lab.dir().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        // A filter named NAME writes NAME-events.jsonl and NAME-status.json.
        for (name, planted) in [("ev", "ev-events.jsonl"), ("st", "st-status.json")] {
            symlink(&target, lab.dir().join(planted)).unwrap();
            let e = match lab.start_filter(&exe(), &h, &[], name) {
                Ok(_) => panic!("started with {planted} a symbolic link"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("symbolic link") && e.contains(planted), "{e}");
            assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
            lab.assert_clean();
        }
        // A status file in a directory anyone may write (no sticky bit).
        let open = lab.dir().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let mut raw = lab.spawn(&h, &open.join("status.json"), &[], "open");
        let st = raw.wait(Duration::from_secs(20));
        assert!(!st.success());
        assert!(raw.log_text().contains("sticky"), "{}", raw.log_text());
        assert_eq!(fs::read_dir(&open).unwrap().count(), 0);
        lab.assert_clean();
        // The files appwall does create are 0640.
        let mut f = lab.start(&h, &[], "ok");
        wait_for("the status file", Duration::from_secs(5), || f.status.exists());
        stop(&mut f);
        for p in [&f.status, &f.events] {
            let mode = fs::metadata(p).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o640, "{}: {mode:o}", p.display());
        }
    });
}

// ------------------------------------------- item 2: reload atomic per packet

fn safety_reload_lists_a_host_and_its_open_keepalive_connections_are_inspected() {
    const N: usize = 10;
    with_lab(|lab| {
        let _server = KeepAliveServer::start(&lab.server);
        // The client is listed for IRC only; the other host is not listed.
        let h = lab.hosts("192.0.2.10 irc\n");
        let mut f = lab.start(&h, &[], "a");
        // Clients of the listed host send 20 KB of upload first, so their
        // connections are settled clean in the kernel fast path before the
        // reload.
        let mut upload = b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Length: 20000\r\n\r\n".to_vec();
        upload.extend(std::iter::repeat_n(b'a', 20_000));
        let mut who = vec![(lab.client.as_str(), Some(upload)); N];
        who.extend(vec![(lab.other.as_str(), None); N]);
        let clients = KeepAliveClients::start(&who, Duration::from_millis(10));
        // Every connection up (HTTP keep-alive clients are never settled
        // whole: each request is judged; see docs/inspection.md).
        wait_for("connections", Duration::from_secs(5), || {
            lab.conntrack_to(KEEPALIVE_PORT).matches("ESTABLISHED").count() >= 2 * N
        });
        let settled = lab.conntrack_to(KEEPALIVE_PORT).matches("mark=2097152").count();
        thread::sleep(Duration::from_millis(200));
        // Reload: both hosts listed for Messenger, while every connection
        // keeps sending requests.
        reload(&f, &h, "192.0.2.10 irc msn\n203.0.113.20 msn\n", 1);
        thread::sleep(Duration::from_millis(300));
        let reports = clients.finish();
        let log = f.log_text();
        stop(&mut f);
        for r in &reports {
            assert!(r.failed.is_none(), "a clean request failed: {r:?}\n{log}");
            assert!(r.answered >= 5, "{r:?}");
        }
        let through: Vec<_> = reports.iter().filter(|r| r.msn_through).collect();
        assert!(
            through.is_empty(),
            "{} of {} MSN requests got through after the reload: {through:?}\n{log}",
            through.len(),
            reports.len()
        );
        // Connections the kernel had settled are sent back to inspection.
        assert!(settled == 0 || log.contains("sent back to inspection"), "{log}");
    });
}

// --------------------------------------------- item 3: table pressure

fn safety_syn_burst_between_two_halves_of_the_gateway_request_lets_none_through() {
    const N: usize = 10;
    with_lab(|lab| {
        let _server = KeepAliveServer::start(&lab.server);
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &["--max-flows", "16"], "a");
        let ns = lab.client.clone();
        let client = thread::spawn(move || {
            enter_netns(&ns).unwrap();
            let dst = SocketAddr::new(lab::SERVER4.parse().unwrap(), KEEPALIVE_PORT);
            let mut conns: Vec<TcpStream> = (0..N)
                .map(|_| {
                    let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).unwrap();
                    s.set_nodelay(true).unwrap();
                    s
                })
                .collect();
            for s in &mut conns {
                s.write_all(b"POST /gateway/gate").unwrap();
            }
            thread::sleep(Duration::from_millis(300));
            // 300 new connections (their SYNs are queued), 20x the table.
            let web = SocketAddr::new(lab::SERVER4.parse().unwrap(), 80);
            let burst: Vec<TcpStream> = (0..300)
                .filter_map(|_| TcpStream::connect_timeout(&web, Duration::from_secs(2)).ok())
                .collect();
            thread::sleep(Duration::from_millis(300));
            let mut through = 0;
            for s in &mut conns {
                let rest = b"way.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n\
                             Host: gateway.messenger.hotmail.com\r\nContent-Length: 0\r\n\r\n";
                if s.write_all(rest).is_ok() && read_answer(s, Duration::from_secs(1)) {
                    through += 1;
                }
            }
            (through, burst.len())
        });
        let (through, burst) = client.join().unwrap();
        let status = status_json(&f);
        let log = f.log_text();
        stop(&mut f);
        assert!(burst >= 250, "only {burst} connections of the burst opened");
        assert_eq!(through, 0, "{through} of {N} gateway requests got through\n{log}");
        eprintln!(
            "table pressure: 0 of {N} through after a burst of {burst}; status queues: {}",
            status["queues"]
        );
    });
}

// ------------------------------------------- item 4: overflow accounting

/// `queue_overflow` of a status file (`None` while absent or half written).
fn status_overflow(path: &Path) -> Option<u64> {
    status_file_json(path)["totals"]["queue_overflow"].as_u64()
}

/// Samples a status file's `queue_overflow` every 50 ms until finished;
/// keeps each change.
struct OverflowWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u64>>,
}

impl OverflowWatch {
    fn start(path: &Path) -> OverflowWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let path = path.to_path_buf();
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            while !st.load(Relaxed) {
                if let Some(v) = status_overflow(&path)
                    && seen.last() != Some(&v)
                {
                    seen.push(v);
                }
                thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        OverflowWatch { stop, thread }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap()
    }
}

/// Small UDP datagrams from the client to the server (port 9), in the
/// background.
fn flood(lab: &lab::Lab, limit: Duration, max: u64) -> JoinHandle<u64> {
    let discard = SocketAddr::new(lab::SERVER4.parse().unwrap(), 9);
    udp_flood_thread(&lab.client, discard, limit, max)
}

fn safety_queue_overflow_is_zero_without_a_flood_through_start_reloads_and_exit() {
    with_lab(|lab| {
        let _server = KeepAliveServer::start(&lab.server);
        let h = lab.hosts(HOSTS);
        // Traffic from a listed host (every data segment queued) from before
        // start-up to after the exit.
        let clients =
            KeepAliveClients::start(&vec![(lab.client.as_str(), None); 4], Duration::from_millis(2));
        let status = lab.dir().join("a-status.json");
        let watch = OverflowWatch::start(&status);
        let mut f = lab.start(&h, &["--depth-bytes", "100000000"], "a");
        thread::sleep(Duration::from_millis(1500));
        reload(&f, &h, "192.0.2.10 msn\n192.0.2.11 msn\n", 1);
        thread::sleep(Duration::from_millis(1200));
        reload(&f, &h, "192.0.2.10 msn irc\n", 2);
        thread::sleep(Duration::from_millis(1200));
        let (rules, queued) = (lab.nfqueue_rule_packets(), lab.kernel_queued());
        stop(&mut f);
        let reports = clients.finish();
        let seen = watch.finish();
        let last = status_overflow(&status);
        assert!(reports.iter().all(|r| r.failed.is_none()), "{reports:?}");
        let answered: u32 = reports.iter().map(|r| r.answered).sum();
        assert!(answered > 200, "{answered} requests");
        assert!(queued > 400, "{queued} packets queued: the test needs traffic");
        assert_eq!(
            seen,
            [0],
            "queue_overflow over the run (rules {rules}, queued {queued})"
        );
        assert_eq!(last, Some(0));
    });
}

fn safety_queue_overflow_under_a_flood_is_monotonic_and_exact_at_exit() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        // No per-source limit: the queue itself must overflow.
        let args = [
            "--queue-maxlen",
            "8",
            "--depth-bytes",
            "100000000",
            "--queue-rate",
            "off",
        ];
        let mut f = lab.start(&h, &args, "a");
        let watch = OverflowWatch::start(&f.status);
        let flood = flood(lab, Duration::from_millis(2500), 2_000_000);
        thread::sleep(Duration::from_millis(800));
        reload(&f, &h, "192.0.2.10 msn\n192.0.2.11 msn\n", 1);
        let sent = flood.join().unwrap();
        // Let the queue drain and one more status write happen.
        thread::sleep(Duration::from_millis(1500));
        let (rules, queued) = (lab.nfqueue_rule_packets(), lab.kernel_queued());
        let truth = rules - queued;
        stop(&mut f);
        let seen = watch.finish();
        let last = status_overflow(&f.status).unwrap();
        eprintln!(
            "flood: {sent} sent, {rules} to the queue rule, {queued} queued, overflow seen {seen:?}, final {last}"
        );
        assert!(truth > 0, "the flood must overflow the queue ({sent} sent)");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "went down: {seen:?}");
        assert!(
            seen.iter().all(|v| *v <= truth),
            "phantom overflow: {seen:?} > {truth}"
        );
        assert_eq!(last, truth, "final status file: {seen:?}");
    });
}

// ------------------------------------------- item 5: a full queue vs no appwall

fn safety_queue_full_drop_lets_nothing_through_a_flood_while_bypass_still_serves_a_dead_filter() {
    const N: usize = 20;
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let args = [
            "--queue-maxlen",
            "8",
            "--depth-bytes",
            "100000000",
            "--queue-full",
            "drop",
            "--queue-rate",
            "off",
        ];
        let mut f = lab.start(&h, &args, "a");
        assert!(
            f.log_text()
                .contains("fail-open when appwall is gone, drop when full"),
            "{}",
            f.log_text()
        );
        let flood = flood(lab, Duration::from_millis(4000), 5_000_000);
        thread::sleep(Duration::from_millis(300));
        // The lab server's raw TCP echo port.
        let echo = SocketAddr::new(lab::SERVER4.parse().unwrap(), 5000);
        let probes: Vec<_> = (0..N)
            .map(|i| {
                let ns = lab.client.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100 * i as u64));
                    lab::tcp_exchange(&ns, echo, MSNP, MSNP.len(), Duration::from_secs(2)).0
                })
            })
            .collect();
        let outcomes: Vec<lab::Outcome> = probes.into_iter().map(|p| p.join().unwrap()).collect();
        let sent = flood.join().unwrap();
        let dropped: u64 = lab.kernel_queues().iter().map(|q| q.queue_dropped).sum();
        let through = outcomes.iter().filter(|o| o.passed()).count();
        eprintln!(
            "queue full, drop: {sent} datagrams, {dropped} dropped by the full queue, {through} of {N} MSNP probes through"
        );
        assert!(dropped > 0, "the flood must fill the queue");
        assert_eq!(through, 0, "{outcomes:?}");
        // appwall gone: --queue-bypass still lets traffic flow (fail-open).
        f.kill9().unwrap();
        let (o, _) = lab::tcp_exchange(&lab.client, echo, MSNP, MSNP.len(), Duration::from_secs(3));
        assert!(o.passed(), "bypass while appwall is gone: {o:?}");
        let o = lab.appwall(&["uninstall", "--force"]);
        assert_out!(o.status.success(), text(&o));
    });
}
