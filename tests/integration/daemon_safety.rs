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
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use appwall::lab::{Filter, Lab};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{is_root, prerequisite};

const HOSTS: &str = "192.0.2.10 msn\n";

fn tools_present() -> bool {
    ["ip", "iptables", "ipset", "conntrack"].iter().all(|t| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn new_lab(dir: &Path) -> Option<Lab> {
    if !prerequisite(is_root(), "live tests need root (network namespaces, iptables)") {
        return None;
    }
    if !prerequisite(tools_present(), "ip, iptables, ipset and conntrack are needed") {
        return None;
    }
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

#[test]
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

#[test]
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

#[test]
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
