//! Security and failure behaviour of `appwall run`, proved live in
//! namespace labs (root): signals during start-up, descriptors children
//! inherit, output files planted as symbolic links, reload atomicity,
//! table pressure, overflow accounting. docs/security.md cites these tests.
//!
//! Self-contained on purpose (own small helpers), so the other test files
//! can be reorganised without touching these. Only RFC 5737 and
//! 2001:db8::/32 addresses; every wait is bounded; processes started here
//! are stopped by pid.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use appwall::lab::{self, Filter, Lab, enter_netns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::LAB;

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

const HOSTS: &str = "192.0.2.10 msn\n";

/// The lab (root and its tools are checked by the harness, see `cases!`).
fn new_lab(dir: &Path) -> Option<Lab> {
    let mut lab = Lab::new(dir).expect("build the lab");
    lab.start_server().expect("start the lab server");
    Some(lab)
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appwall"))
}

fn write_hosts(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("hosts");
    fs::write(&p, text).unwrap();
    p
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn stop_filter(f: &mut Filter) {
    let st = f.stop(Duration::from_secs(10)).unwrap();
    assert!(st.success(), "exit {st}; log:\n{}", f.log_text());
}

fn assert_nothing_left(lab: &Lab) {
    let left = lab.gateway_leftovers().unwrap();
    assert!(left.is_empty(), "left behind in the gateway: {left:#?}");
}

fn signal(pid: u32, sig: Signal) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), sig).is_ok()
}

/// A started `appwall run` we reap ourselves (not through [`Lab::start_filter`],
/// which waits for start-up to finish).
struct Raw {
    child: Child,
    log: PathBuf,
}

impl Raw {
    fn start(lab: &Lab, args: &[&str], log: PathBuf) -> Raw {
        let logf = fs::File::create(&log).unwrap();
        let child = lab
            .command(&lab.gateway, &exe().to_string_lossy(), args)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        Raw { child, log }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if self.running() {
            signal(self.child.id(), Signal::SIGTERM);
            let start = Instant::now();
            while self.running() && start.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ item 1: hygiene

fn safety_sighup_spam_during_start_up_is_survived_then_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    // A large policy keeps start-up (policy compile, ipset fill) long enough
    // for many signals to land in it.
    let mut text = String::from(HOSTS);
    for i in 0..20_000u32 {
        text.push_str(&format!("2001:db8:ff{:02x}::{:x} msn\n", i >> 12, i & 0xfff));
    }
    let h = write_hosts(dir.path(), &text);
    let status = dir.path().join("status.json");
    let args = [
        "run",
        "--hosts",
        h.to_str().unwrap(),
        "--status-file",
        status.to_str().unwrap(),
        "--stats-interval",
        "1",
    ];
    let mut raw = Raw::start(&lab, &args, dir.path().join("run.log"));
    let pid = raw.child.id();
    // `ip netns exec` execs appwall in place: wait for that, then a few
    // milliseconds for the runtime to reach `daemon::run`.
    let me = fs::canonicalize(exe()).unwrap();
    wait_for("exec of appwall", Duration::from_secs(5), || {
        fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == me)
    });
    thread::sleep(Duration::from_millis(15));
    let mut sent = 0u32;
    let start = Instant::now();
    while !raw.log_text().contains("rules installed") {
        assert!(
            raw.running(),
            "killed by SIGHUP number {sent} during start-up; log:\n{}",
            raw.log_text()
        );
        assert!(start.elapsed() < Duration::from_secs(60), "start-up too slow");
        signal(pid, Signal::SIGHUP);
        sent += 1;
        thread::sleep(Duration::from_millis(2));
    }
    assert!(sent >= 20, "only {sent} signals landed in start-up");
    // The signals were kept: once running, they are one reload.
    wait_for("the reload", Duration::from_secs(30), || {
        raw.log_text().contains("policy reloaded")
    });
    assert!(raw.running(), "{}", raw.log_text());
    assert!(signal(pid, Signal::SIGTERM));
    let st = raw.child.wait().unwrap();
    assert!(st.success(), "exit {st}: {}", raw.log_text());
    assert_nothing_left(&lab);
    eprintln!("{sent} SIGHUPs during start-up survived");
}

fn safety_sigterm_during_start_up_exits_cleanly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let mut text = String::from(HOSTS);
    for i in 0..20_000u32 {
        text.push_str(&format!("2001:db8:ff{:02x}::{:x} msn\n", i >> 12, i & 0xfff));
    }
    let h = write_hosts(dir.path(), &text);
    let status = dir.path().join("status.json");
    let args = [
        "run",
        "--hosts",
        h.to_str().unwrap(),
        "--status-file",
        status.to_str().unwrap(),
    ];
    let mut raw = Raw::start(&lab, &args, dir.path().join("run.log"));
    let pid = raw.child.id();
    let me = fs::canonicalize(exe()).unwrap();
    wait_for("exec of appwall", Duration::from_secs(5), || {
        fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == me)
    });
    thread::sleep(Duration::from_millis(15));
    assert!(signal(pid, Signal::SIGTERM));
    let start = Instant::now();
    while raw.running() {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", raw.log_text());
        thread::sleep(Duration::from_millis(20));
    }
    let st = raw.child.wait().unwrap();
    assert!(st.success(), "exit {st}: {}", raw.log_text());
    let log = raw.log_text();
    assert!(
        log.contains("nothing was installed") || log.contains("rules removed"),
        "{log}"
    );
    assert_nothing_left(&lab);
}

/// Stand-in for iptables-restore (first on PATH): records its open
/// descriptors, then runs the real tool.
fn fd_recording_shim(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let shim = dir.join("shim");
    fs::create_dir_all(&shim).unwrap();
    let real = which("iptables-restore");
    let out = dir.join("fds");
    fs::create_dir_all(&out).unwrap();
    let p = shim.join("iptables-restore");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\nls -l /proc/$$/fd/ > {out}/$$.txt 2>&1\nexec {real} \"$@\"\n",
            out = out.display(),
            real = real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(which("ip"), shim.join("ip")).unwrap();
    shim
}

fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

/// Descriptors above stderr of `pid` that are not close-on-exec.
fn inheritable_fds(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok_and(|fd| fd <= 2) {
            continue;
        }
        let info = fs::read_to_string(e.path()).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        // O_CLOEXEC is 02000000 in fdinfo's octal flags.
        if flags.is_some_and(|f| f & 0o2000000 == 0) {
            let link = fs::read_link(format!("/proc/{pid}/fd/{name}")).unwrap_or_default();
            out.push(format!("fd {name} -> {}", link.display()));
        }
    }
    out
}

fn safety_rule_tools_inherit_no_queue_socket_and_every_fd_is_close_on_exec() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let h = write_hosts(dir.path(), HOSTS);
    let shim = fd_recording_shim(dir.path());
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
    let mut f = lab
        .start_filter_env(&exe(), &h, &[], "a", &[("PATH", path.as_str())])
        .unwrap();
    let pid = f.pid().unwrap();
    let open = inheritable_fds(pid);
    assert!(open.is_empty(), "inheritable descriptors: {open:#?}");
    fs::write(&h, "192.0.2.10 msn\n192.0.2.11 msn\n").unwrap();
    f.signal(Signal::SIGHUP).unwrap();
    wait_for("the reload", Duration::from_secs(20), || {
        f.log_text().contains("policy reloaded")
    });
    stop_filter(&mut f);
    let listings: Vec<String> = fs::read_dir(dir.path().join("fds"))
        .unwrap()
        .flatten()
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    // Install, reload, removal.
    assert!(listings.len() >= 3, "{} runs of iptables-restore", listings.len());
    for l in &listings {
        assert!(!l.contains("socket:"), "a rule tool inherited a socket:\n{l}");
    }
    assert_nothing_left(&lab);
}

fn safety_kill9_during_reload_leaves_no_orphan_holding_the_queue() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let h = write_hosts(dir.path(), HOSTS);
    // iptables-restore that hangs for 4 s while `slow` exists.
    let shim = dir.path().join("shim");
    fs::create_dir_all(&shim).unwrap();
    let p = shim.join("iptables-restore");
    let d = dir.path().display();
    fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ -e {d}/slow ]; then touch {d}/started; sleep 4; touch {d}/done; fi\nexec {} \"$@\"\n",
            which("iptables-restore").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(which("ip"), shim.join("ip")).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
    let mut f = lab
        .start_filter_env(&exe(), &h, &[], "a", &[("PATH", path.as_str())])
        .unwrap();
    let bound = || {
        let o = lab
            .exec(
                &lab.gateway,
                "cat",
                &["/proc/net/netfilter/nfnetlink_queue"],
                Duration::from_secs(5),
            )
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert!(!bound().is_empty(), "queue 0 bound while running");
    fs::write(dir.path().join("slow"), "").unwrap();
    f.signal(Signal::SIGHUP).unwrap();
    wait_for("the reload's iptables-restore", Duration::from_secs(10), || {
        dir.path().join("started").exists()
    });
    f.kill9().unwrap();
    thread::sleep(Duration::from_millis(300));
    let left = bound();
    let orphan_running = !dir.path().join("done").exists();
    wait_for("the orphan to finish", Duration::from_secs(10), || {
        dir.path().join("done").exists()
    });
    thread::sleep(Duration::from_millis(300));
    assert!(orphan_running, "the check must happen while the orphan runs");
    assert!(
        left.is_empty(),
        "queue still bound after kill -9, by the orphaned rule tool: {left}"
    );
    let o = lab
        .exec(
            &lab.gateway,
            exe().to_str().unwrap(),
            &["uninstall", "--force"],
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_nothing_left(&lab);
}

fn safety_symlinked_or_exposed_output_files_refuse_start_and_targets_stay() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let h = write_hosts(dir.path(), HOSTS);
    let target = dir.path().join("precious");
    fs::write(&target, "keep me\n").unwrap();
    // Lab::start_filter writes to <dir>/<name>-events.jsonl and <name>-status.json.
    for (name, planted) in [("ev", "ev-events.jsonl"), ("st", "st-status.json")] {
        symlink(&target, dir.path().join(planted)).unwrap();
        let e = match lab.start_filter(&exe(), &h, &[], name) {
            Ok(_) => panic!("started with {planted} a symbolic link"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("symbolic link") && e.contains(planted), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
        assert_nothing_left(&lab);
    }
    // A status file in a directory anyone may write (no sticky bit).
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let status = open.join("status.json");
    let mut raw = Raw::start(
        &lab,
        &[
            "run",
            "--hosts",
            h.to_str().unwrap(),
            "--status-file",
            status.to_str().unwrap(),
        ],
        dir.path().join("open.log"),
    );
    let st = raw.child.wait().unwrap();
    assert!(!st.success());
    assert!(raw.log_text().contains("sticky"), "{}", raw.log_text());
    assert_eq!(fs::read_dir(&open).unwrap().count(), 0);
    assert_nothing_left(&lab);
    // The files appwall does create are 0640.
    let mut f = lab.start_filter(&exe(), &h, &[], "ok").unwrap();
    wait_for("the status file", Duration::from_secs(5), || f.status.exists());
    stop_filter(&mut f);
    for p in [&f.status, &f.events] {
        use std::os::unix::fs::MetadataExt;
        let mode = fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}: {mode:o}", p.display());
    }
    assert_nothing_left(&lab);
}

// ------------------------------------------- item 2: reload atomic per packet

/// Port of the keep-alive HTTP server (the lab's own server closes after
/// one answer).
const KEEPALIVE_PORT: u16 = 8000;

/// An HTTP/1.1 server in a namespace that answers every request on a
/// connection with a short `200 OK` and keeps the connection open.
struct KeepAliveServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KeepAliveServer {
    fn start(ns: &str) -> KeepAliveServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let ns = ns.to_string();
        let st = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            enter_netns(&ns).unwrap();
            let l = TcpListener::bind(("::", KEEPALIVE_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let mut conns = Vec::new();
            while !st.load(Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let st = Arc::clone(&st);
                        conns.push(thread::spawn(move || serve_keepalive(s, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        KeepAliveServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KeepAliveServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_keepalive(mut s: TcpStream, stop: &AtomicBool) {
    s.set_nonblocking(false).unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while !stop.load(Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        // Answer every complete request in the buffer.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            buf.drain(..end + 4 + len);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    }
}

/// Reads one `... ok` answer; false on timeout, reset or close.
fn read_answer(s: &mut TcpStream, limit: Duration) -> bool {
    let _ = s.set_read_timeout(Some(limit));
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < limit {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                if got.ends_with(b"\r\n\r\nok") {
                    return true;
                }
            }
        }
    }
    false
}

/// Messenger's gateway request, origin form, with an exact Content-Length.
const MSN_GATEWAY_POST: &[u8] =
    b"POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n\
Host: gateway.messenger.hotmail.com\r\nContent-Type: application/x-msn-messenger\r\n\
User-Agent: MSMSGS\r\nContent-Length: 18\r\n\r\nVER 1 MSNP8 CVR0\r\n";

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct KeepAliveReport {
    port: u16,
    /// Requests answered before the MSN request.
    answered: u32,
    /// A request before the MSN request went unanswered.
    failed: Option<String>,
    /// The MSN gateway request was answered (it got through).
    msn_through: bool,
}

/// A client in `ns` on one keep-alive connection: `first` (if any), then
/// a small GET every `every` until `go` is set, then the MSN gateway request.
fn keepalive_client(
    ns: &str,
    first: Option<Vec<u8>>,
    every: Duration,
    go: Arc<AtomicBool>,
    ready: mpsc::Sender<u16>,
) -> JoinHandle<KeepAliveReport> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let mut r = KeepAliveReport::default();
        let dst: SocketAddr = format!("{}:{KEEPALIVE_PORT}", lab::SERVER4).parse().unwrap();
        let mut s = match TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => {
                r.failed = Some(format!("connect: {e}"));
                let _ = ready.send(0);
                return r;
            }
        };
        r.port = s.local_addr().unwrap().port();
        let _ = s.set_nodelay(true);
        if let Some(first) = first
            && (s.write_all(&first).is_err() || !read_answer(&mut s, Duration::from_secs(3)))
        {
            r.failed = Some("first request".into());
        }
        let _ = ready.send(r.port);
        let get = b"GET /ping HTTP/1.1\r\nHost: lab\r\n\r\n";
        while !go.load(Relaxed) && r.failed.is_none() {
            if s.write_all(get).is_err() || !read_answer(&mut s, Duration::from_secs(3)) {
                r.failed = Some(format!("request {} unanswered", r.answered + 1));
                break;
            }
            r.answered += 1;
            thread::sleep(every);
        }
        if r.failed.is_none() {
            r.msn_through =
                s.write_all(MSN_GATEWAY_POST).is_ok() && read_answer(&mut s, Duration::from_secs(2));
        }
        r
    })
}

/// conntrack lines of the gateway for connections to the keep-alive port.
fn keepalive_conntrack(lab: &Lab) -> String {
    let port = KEEPALIVE_PORT.to_string();
    let o = lab
        .exec(
            &lab.gateway,
            "conntrack",
            &["-L", "-p", "tcp", "--dport", &port],
            Duration::from_secs(5),
        )
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn safety_reload_lists_a_host_and_its_open_keepalive_connections_are_inspected() {
    const N: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let _server = KeepAliveServer::start(&lab.server);
    // The client is listed for IRC only; the other host is not listed.
    let h = write_hosts(dir.path(), "192.0.2.10 irc\n");
    let mut f = lab.start_filter(&exe(), &h, &[], "a").unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let mut clients = Vec::new();
    // Group "clean": 20 KB of upload first, so the connection is settled
    // clean in the kernel fast path before the reload.
    let upload = {
        let mut b = b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Length: 20000\r\n\r\n".to_vec();
        b.extend(std::iter::repeat_n(b'a', 20_000));
        b
    };
    for i in 0..2 * N {
        let (ns, first) = if i < N {
            (&lab.client, Some(upload.clone()))
        } else {
            (&lab.other, None)
        };
        clients.push(keepalive_client(
            ns,
            first,
            Duration::from_millis(10),
            Arc::clone(&go),
            tx.clone(),
        ));
    }
    for _ in 0..2 * N {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    wait_for("clean marks", Duration::from_secs(5), || {
        count_marked(&keepalive_conntrack(&lab), "mark=2097152") >= N
    });
    thread::sleep(Duration::from_millis(200));
    // Reload: both hosts listed for Messenger, while every connection keeps
    // sending requests.
    fs::write(&h, "192.0.2.10 irc msn\n203.0.113.20 msn\n").unwrap();
    f.signal(Signal::SIGHUP).unwrap();
    wait_for("the reload", Duration::from_secs(20), || {
        f.log_text().contains("policy reloaded")
    });
    thread::sleep(Duration::from_millis(300));
    go.store(true, Relaxed);
    let reports: Vec<KeepAliveReport> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let log = f.log_text();
    stop_filter(&mut f);
    for r in &reports {
        assert!(r.failed.is_none(), "a clean request failed: {r:?}\n{log}");
        assert!(r.answered >= 5, "{r:?}");
    }
    let through: Vec<&KeepAliveReport> = reports.iter().filter(|r| r.msn_through).collect();
    assert!(
        through.is_empty(),
        "{} of {} MSN requests got through after the reload: {through:?}\n{log}",
        through.len(),
        reports.len()
    );
    assert!(log.contains("sent back to inspection"), "{log}");
    assert_nothing_left(&lab);
}

fn count_marked(conntrack: &str, mark: &str) -> usize {
    conntrack.lines().filter(|l| l.contains(mark)).count()
}

// --------------------------------------------- item 3: table pressure

fn safety_syn_burst_between_two_halves_of_the_gateway_request_lets_none_through() {
    const N: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let _server = KeepAliveServer::start(&lab.server);
    let h = write_hosts(dir.path(), HOSTS);
    let mut f = lab.start_filter(&exe(), &h, &["--max-flows", "16"], "a").unwrap();
    let ns = lab.client.clone();
    let client = thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let dst: SocketAddr = format!("{}:{KEEPALIVE_PORT}", lab::SERVER4).parse().unwrap();
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
        let web: SocketAddr = format!("{}:80", lab::SERVER4).parse().unwrap();
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
    let status: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&f.status).unwrap_or_default()).unwrap_or_default();
    let log = f.log_text();
    stop_filter(&mut f);
    assert!(burst >= 250, "only {burst} connections of the burst opened");
    assert_eq!(through, 0, "{through} of {N} gateway requests got through\n{log}");
    eprintln!(
        "table pressure: 0 of {N} through after a burst of {burst}; status queues: {}",
        status["queues"]
    );
    assert_nothing_left(&lab);
}

// ------------------------------------------- item 4: overflow accounting

fn status_overflow(path: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    v["totals"]["queue_overflow"].as_u64()
}

/// Samples the status file's `queue_overflow` every 50 ms until stopped.
struct OverflowWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl OverflowWatch {
    fn start(path: PathBuf) -> OverflowWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
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
        OverflowWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or_default()
    }
}

/// Sends small UDP datagrams from `ns` to the server as fast as it can.
fn udp_flood(ns: &str, limit: Duration, max: u64) -> JoinHandle<u64> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let dst: SocketAddr = format!("{}:9", lab::SERVER4).parse().unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < limit && sent < max {
            if s.send_to(b"0123456789abcdef0123456789abcdef", dst).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// (NFQUEUE rule packets, packets queue 0 received) read in the gateway.
fn kernel_truth(lab: &Lab) -> (u64, u64) {
    let o = lab
        .exec(
            &lab.gateway,
            "iptables",
            &["-w", "-t", "mangle", "-n", "-v", "-x", "-L", "APPWALL_INSPECT"],
            Duration::from_secs(5),
        )
        .unwrap();
    let rules = appwall::daemon::status::nfqueue_rule_packets(&String::from_utf8_lossy(&o.stdout));
    let o = lab
        .exec(
            &lab.gateway,
            "cat",
            &["/proc/net/netfilter/nfnetlink_queue"],
            Duration::from_secs(5),
        )
        .unwrap();
    let queued = appwall::source::nfqueue::parse_kernel_queues(&String::from_utf8_lossy(&o.stdout))
        .iter()
        .map(|q| q.id_sequence)
        .sum();
    (rules, queued)
}

fn reload_with(f: &Filter, hosts: &Path, text: &str, n: usize) {
    fs::write(hosts, text).unwrap();
    f.signal(Signal::SIGHUP).unwrap();
    wait_for("the reload", Duration::from_secs(20), || {
        f.log_text().matches("policy reloaded").count() >= n
    });
}

fn safety_queue_overflow_is_zero_without_a_flood_through_start_reloads_and_exit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let _server = KeepAliveServer::start(&lab.server);
    let h = write_hosts(dir.path(), HOSTS);
    // Traffic from a listed host (every data segment queued) from before
    // start-up to after the exit.
    let go = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            keepalive_client(
                &lab.client,
                None,
                Duration::from_millis(2),
                Arc::clone(&go),
                tx.clone(),
            )
        })
        .collect();
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    let status = dir.path().join("a-status.json");
    let watch = OverflowWatch::start(status.clone());
    let mut f = lab
        .start_filter(&exe(), &h, &["--depth-bytes", "100000000"], "a")
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    reload_with(&f, &h, "192.0.2.10 msn\n192.0.2.11 msn\n", 1);
    thread::sleep(Duration::from_millis(1200));
    reload_with(&f, &h, "192.0.2.10 msn irc\n", 2);
    thread::sleep(Duration::from_millis(1200));
    let (rules, queued) = kernel_truth(&lab);
    stop_filter(&mut f);
    go.store(true, Relaxed);
    let reports: Vec<KeepAliveReport> = clients.into_iter().map(|c| c.join().unwrap()).collect();
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
}

fn safety_queue_overflow_under_a_flood_is_monotonic_and_exact_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let h = write_hosts(dir.path(), HOSTS);
    let mut f = lab
        .start_filter(
            &exe(),
            &h,
            &["--queue-maxlen", "8", "--depth-bytes", "100000000"],
            "a",
        )
        .unwrap();
    let watch = OverflowWatch::start(f.status.clone());
    let flood = udp_flood(&lab.client, Duration::from_millis(2500), 2_000_000);
    thread::sleep(Duration::from_millis(800));
    reload_with(&f, &h, "192.0.2.10 msn\n192.0.2.11 msn\n", 1);
    let sent = flood.join().unwrap();
    // Let the queue drain and one more status write happen.
    thread::sleep(Duration::from_millis(1500));
    let (rules, queued) = kernel_truth(&lab);
    let truth = rules - queued;
    stop_filter(&mut f);
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
}

// ------------------------------------------- item 5: a full queue vs no appwall

fn safety_queue_full_drop_lets_nothing_through_a_flood_while_bypass_still_serves_a_dead_filter() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = new_lab(dir.path()) else { return };
    let h = write_hosts(dir.path(), HOSTS);
    let args = [
        "--queue-maxlen",
        "8",
        "--depth-bytes",
        "100000000",
        "--queue-full",
        "drop",
    ];
    let mut f = lab.start_filter(&exe(), &h, &args, "a").unwrap();
    assert!(
        f.log_text()
            .contains("fail-open when appwall is gone, drop when full"),
        "{}",
        f.log_text()
    );
    let flood = udp_flood(&lab.client, Duration::from_millis(4000), 5_000_000);
    thread::sleep(Duration::from_millis(300));
    let echo: SocketAddr = format!("{}:5000", lab::SERVER4).parse().unwrap();
    let probes: Vec<_> = (0..N)
        .map(|i| {
            let ns = lab.client.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100 * i as u64));
                lab::tcp_exchange(&ns, echo, b"VER 1 MSNP8 CVR0\r\n", 18, Duration::from_secs(2)).0
            })
        })
        .collect();
    let outcomes: Vec<lab::Outcome> = probes.into_iter().map(|p| p.join().unwrap()).collect();
    let sent = flood.join().unwrap();
    let o = lab
        .exec(
            &lab.gateway,
            "cat",
            &["/proc/net/netfilter/nfnetlink_queue"],
            Duration::from_secs(5),
        )
        .unwrap();
    let dropped: u64 = appwall::source::nfqueue::parse_kernel_queues(&String::from_utf8_lossy(&o.stdout))
        .iter()
        .map(|q| q.queue_dropped)
        .sum();
    let through = outcomes.iter().filter(|o| o.passed()).count();
    eprintln!(
        "queue full, drop: {sent} datagrams, {dropped} dropped by the full queue, {through} of {N} MSNP probes through"
    );
    assert!(dropped > 0, "the flood must fill the queue");
    assert_eq!(through, 0, "{outcomes:?}");
    // appwall gone: --queue-bypass still lets traffic flow (fail-open).
    f.kill9().unwrap();
    let (o, _) = lab::tcp_exchange(
        &lab.client,
        echo,
        b"VER 1 MSNP8 CVR0\r\n",
        18,
        Duration::from_secs(3),
    );
    assert!(o.passed(), "bypass while appwall is gone: {o:?}");
    let o = lab
        .exec(
            &lab.gateway,
            exe().to_str().unwrap(),
            &["uninstall", "--force"],
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_nothing_left(&lab);
}
