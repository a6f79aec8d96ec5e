//! The lab fixture of the live tests: [`with_lab`] builds a lab of network
//! namespaces (see `appwall::lab`) with its server in a scratch directory,
//! runs the test body with it, and checks the gateway is left clean. The
//! lab's and the filters' Drop guards remove namespaces and processes also
//! when an assertion fails. The prerequisites (root, [`super::LAB_TOOLS`])
//! are declared in the test list ([`super::LAB`]), so a body never checks them.
//!
//! Also here: what a test reads back from the gateway (kernel queues,
//! conntrack marks, installed rules, the lock file), the filter's status
//! file and log, reloads, and [`Raw`], an `appwall run` the test reaps
//! itself (for tests of start-up).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use appwall::lab::{Filter, Lab};
use appwall::source::nfqueue::KernelQueue;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::exe;

/// The usual hosts file: the lab's listed client, IPv4 and IPv6, with msn.
pub const HOSTS: &str = "192.0.2.10 msn\n2001:db8:1::10 msn\n";

/// A lab with its server running and its scratch directory; derefs to
/// [`Lab`] (namespaces `client`, `other`, `gateway`, `server`).
pub struct LiveLab {
    // Dropped first: namespaces go before the scratch directory.
    lab: Lab,
    dir: tempfile::TempDir,
}

/// Runs `body` with a fresh lab, then checks nothing of appwall's is left
/// in the gateway (filters the body started are stopped by their Drop
/// guards when it returns).
pub fn with_lab(body: impl FnOnce(&LiveLab)) {
    let dir = tempfile::tempdir().expect("scratch directory");
    let mut lab = Lab::new(dir.path()).expect("build the lab");
    lab.start_server().expect("start the lab server");
    let live = LiveLab { lab, dir };
    body(&live);
    live.assert_clean();
}

impl Deref for LiveLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl LiveLab {
    /// The scratch directory (hosts, rule files, logs, status files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` as the scratch `hosts` file; returns its path.
    pub fn hosts(&self, text: &str) -> PathBuf {
        let p = self.dir().join("hosts");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts `appwall run --hosts hosts extra...` in the gateway, named
    /// `name` (its log, status and event files); returns when its rules are in.
    pub fn start(&self, hosts: &Path, extra: &[&str], name: &str) -> Filter {
        self.start_env(hosts, extra, name, &[])
    }

    /// [`LiveLab::start`] with extra environment variables.
    pub fn start_env(&self, hosts: &Path, extra: &[&str], name: &str, env: &[(&str, &str)]) -> Filter {
        self.lab
            .start_filter_env(&exe(), hosts, extra, name, env)
            .unwrap_or_else(|e| panic!("start filter {name}: {e}"))
    }

    /// Starts `appwall run --hosts hosts --status-file status extra...` in the
    /// gateway and returns at once (not through [`Lab::start_filter`], which
    /// waits for start-up to finish): for tests of start-up itself. Its log
    /// is `name.log` in the scratch directory.
    pub fn spawn(&self, hosts: &Path, status: &Path, extra: &[&str], name: &str) -> Raw {
        self.spawn_env(hosts, status, extra, name, &[])
    }

    /// [`LiveLab::spawn`] with extra environment variables.
    pub fn spawn_env(
        &self,
        hosts: &Path,
        status: &Path,
        extra: &[&str],
        name: &str,
        env: &[(&str, &str)],
    ) -> Raw {
        let log = self.dir().join(format!("{name}.log"));
        let mut args = vec![
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            "--status-file",
            status.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let child = self
            .command(&self.gateway, exe().to_str().unwrap(), &args)
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Raw { child, log }
    }

    /// Runs the `appwall` binary with `args` in the gateway (`limit` 10 s).
    pub fn appwall(&self, args: &[&str]) -> Output {
        self.exec(
            &self.gateway,
            exe().to_str().unwrap(),
            args,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    /// Asserts nothing of appwall's is left in the gateway: no chain, jump,
    /// set or queue binding.
    pub fn assert_clean(&self) {
        let left = self.gateway_leftovers().unwrap();
        assert!(left.is_empty(), "left behind in the gateway: {left:#?}");
    }

    /// The gateway's kernel queue table as the kernel prints it
    /// (`/proc/net/netfilter/nfnetlink_queue`; empty when no queue is bound).
    pub fn kernel_queue_text(&self) -> String {
        let o = self
            .exec(
                &self.gateway,
                "cat",
                &["/proc/net/netfilter/nfnetlink_queue"],
                Duration::from_secs(5),
            )
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The gateway's kernel queues, parsed from [`LiveLab::kernel_queue_text`].
    pub fn kernel_queues(&self) -> Vec<KernelQueue> {
        appwall::source::nfqueue::parse_kernel_queues(&self.kernel_queue_text())
    }

    /// Packets ever queued, over all the gateway's queues.
    pub fn kernel_queued(&self) -> u64 {
        self.kernel_queues().iter().map(|q| q.id_sequence).sum()
    }

    /// The gateway's conntrack entries selected by `args` (after `-L`).
    fn conntrack(&self, args: &[&str]) -> String {
        let mut a = vec!["-L"];
        a.extend_from_slice(args);
        let o = self
            .exec(&self.gateway, "conntrack", &a, Duration::from_secs(5))
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// How many gateway conntrack entries carry `mark` (`value/mask`).
    pub fn conntrack_marked(&self, mark: &str) -> usize {
        self.conntrack(&["-m", mark])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    }

    /// The gateway's conntrack entries of one client TCP port.
    pub fn conntrack_of(&self, sport: u16) -> String {
        self.conntrack(&["-p", "tcp", "--sport", &sport.to_string()])
    }

    /// The gateway's conntrack entries of TCP connections to server port `dport`.
    pub fn conntrack_to(&self, dport: u16) -> String {
        self.conntrack(&["-p", "tcp", "--dport", &dport.to_string()])
    }

    /// Every line of iptables-save and ip6tables-save in the gateway that
    /// mentions appwall, in order (no counters: they are not saved without
    /// `-c`), then appwall's sets and their members.
    pub fn appwall_rules(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (prog, args) in [
            ("iptables-save", &[][..]),
            ("ip6tables-save", &[][..]),
            ("ipset", &["save"][..]),
        ] {
            let o = self
                .exec(&self.gateway, prog, args, Duration::from_secs(10))
                .unwrap();
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.to_ascii_lowercase().contains("appwall"))
                    // A set's header carries a random hash seed: keep its name.
                    .map(|l| match l.strip_prefix("create ") {
                        Some(c) => format!("create {}", c.split(' ').next().unwrap_or("")),
                        None => l.to_string(),
                    })
                    .map(|l| format!("{prog}: {l}")),
            );
        }
        out
    }

    /// Packets the NFQUEUE rules sent to the queues (the rule counters
    /// count the fail-open passes the queue itself does not). `-w`: the
    /// filter lists the same chain for its status file, and a listing that
    /// lost the xtables lock would read as 0.
    pub fn nfqueue_rule_packets(&self) -> u64 {
        let o = self
            .exec(
                &self.gateway,
                "iptables",
                &["-w", "-t", "mangle", "-n", "-v", "-x", "-L", "APPWALL_INSPECT"],
                Duration::from_secs(5),
            )
            .unwrap();
        appwall::daemon::status::nfqueue_rule_packets(&String::from_utf8_lossy(&o.stdout))
    }

    /// The lock file of the gateway's network namespace (see
    /// `appwall::daemon::lock_path`).
    pub fn gateway_lock(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.gateway))
            .unwrap()
            .ino();
        Path::new(appwall::daemon::LOCK_DIR).join(format!("netns-{ino}.lock"))
    }
}

/// How many jumps into appwall's chains `rules` (from
/// [`LiveLab::appwall_rules`]) hold, per (tool, chain).
pub fn jumps(rules: &[String]) -> Vec<(String, usize)> {
    let mut n: std::collections::BTreeMap<String, usize> = Default::default();
    for l in rules {
        let (prog, rule) = l.split_once(": ").unwrap_or(("", l));
        if let Some(spec) = rule.strip_prefix("-A ")
            && !spec.starts_with("APPWALL")
            && spec.contains("-j APPWALL")
        {
            let chain = spec.split_whitespace().next().unwrap_or("");
            *n.entry(format!("{prog} {chain}")).or_default() += 1;
        }
    }
    n.into_iter().collect()
}

/// An `appwall run` started by [`LiveLab::spawn`], reaped by the test; on
/// drop it gets SIGTERM, then SIGKILL after 10 s.
pub struct Raw {
    child: Child,
    log: PathBuf,
}

impl Raw {
    /// Its pid (that of `ip netns exec` until it has exec'd appwall).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig`; false when the process is gone.
    pub fn signal(&self, sig: Signal) -> bool {
        kill(Pid::from_raw(i32::try_from(self.pid()).unwrap()), sig).is_ok()
    }

    /// Waits until `ip netns exec` has exec'd appwall in place, then 15 ms
    /// more for the runtime to reach `daemon::run`: from then on a signal
    /// lands in start-up proper.
    pub fn wait_exec(&self) {
        let me = std::fs::canonicalize(exe()).unwrap();
        let pid = self.pid();
        let start = Instant::now();
        while !std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == me) {
            assert!(start.elapsed() < Duration::from_secs(5), "no exec of appwall");
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(15));
    }

    /// Waits up to `limit` for exit; panics with the log on timeout.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if self.running() {
            self.signal(Signal::SIGTERM);
            let start = Instant::now();
            while self.running() && start.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// SIGTERM to a filter; asserts it exits successfully.
pub fn stop(f: &mut Filter) {
    let st = f.stop(Duration::from_secs(10)).unwrap();
    assert!(st.success(), "exit {st}; log:\n{}", f.log_text());
}

/// The filter's status file as JSON (`Null` while absent or half written).
pub fn status_json(f: &Filter) -> serde_json::Value {
    status_file_json(&f.status)
}

/// [`status_json`] of a status file by path (also before its filter starts).
pub fn status_file_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

/// Rewrites `hosts` with `text`, sends SIGHUP and waits (20 s) until the
/// log holds `n` reloads.
pub fn reload(f: &Filter, hosts: &Path, text: &str, n: usize) {
    std::fs::write(hosts, text).unwrap();
    f.signal(Signal::SIGHUP).unwrap();
    wait_for("the reload", Duration::from_secs(20), || {
        f.log_text().matches("policy reloaded").count() >= n
    });
}

/// Waits up to `limit` for `ok`; panics naming `what` on timeout.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Waits up to 5 s for `n` occurrences of `what` in the filter's log.
pub fn wait_log(f: &Filter, what: &str, n: usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f.log_text().matches(what).count() >= n {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("no {n}x {what:?} in the log:\n{}", f.log_text());
}
