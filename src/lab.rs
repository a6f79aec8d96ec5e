//! A throw-away lab of network namespaces for `appwall demo` and the
//! end-to-end tests: a listed client, a client that is not listed, a
//! gateway that forwards (and runs `appwall run`), and a server.
//!
//! Guarantees: only RFC 5737 and 2001:db8::/32 addresses; namespace names
//! carry the pid and a counter so labs never collide; dropping a [`Lab`]
//! kills the processes it started (by pid) and deletes its namespaces,
//! which takes the gateway's rules, queues and conntrack entries with them;
//! every wait is bounded in time.
//!
//! ```text
//!  client 192.0.2.10  2001:db8:1::10 ─┐
//!                                      ├─ gateway ─── server 198.51.100.10  2001:db8:2::10
//!  other  203.0.113.20 2001:db8:3::20 ─┘
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Listed client, IPv4.
pub const CLIENT4: &str = "192.0.2.10";
/// Listed client, IPv6.
pub const CLIENT6: &str = "2001:db8:1::10";
/// Client that is not listed, IPv4.
pub const OTHER4: &str = "203.0.113.20";
/// Client that is not listed, IPv6.
pub const OTHER6: &str = "2001:db8:3::20";
/// Server, IPv4.
pub const SERVER4: &str = "198.51.100.10";
/// Server, IPv6.
pub const SERVER6: &str = "2001:db8:2::10";
/// Ports the lab server listens on.
pub const SERVER_PORTS: [u16; 5] = [80, 443, 1863, 8080, 5000];

/// Errors building or using the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed.
    #[error("{cmd}: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// What went wrong.
        msg: String,
    },
    /// A process or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A lab address did not parse (a constant of this module is wrong).
    #[error("lab address {0:?} does not parse")]
    Address(String),
    /// A lab step did not finish or did not do what it must.
    #[error("{0}")]
    Step(String),
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command with a deadline; kills it (by pid) when the deadline passes.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<Output, LabError> {
    let text = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Command {
            cmd: text.clone(),
            msg: e.to_string(),
        })?;
    // Read pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t1 = thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let t2 = thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| LabError::Io {
            what: "waiting for a process".into(),
            source: e,
        })? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().map_err(|e| LabError::Io {
                what: "waiting for a process".into(),
                source: e,
            })?;
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    })
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = run_with_timeout(Command::new("ip").args(args), Duration::from_secs(10))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("ip {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A running `appwall run` inside the gateway namespace.
pub struct Filter {
    child: Option<Child>,
    /// Its stderr log.
    pub log: PathBuf,
    /// Its status file.
    pub status: PathBuf,
    /// Its event log.
    pub events: PathBuf,
}

impl Filter {
    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Blocked-connection events so far (JSON objects).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) -> Result<(), LabError> {
        let pid = self
            .pid()
            .ok_or_else(|| LabError::Step("filter not running".into()))?;
        kill(Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)), sig).map_err(|e| LabError::Io {
            what: format!("signal {sig} to pid {pid}"),
            source: e.into(),
        })
    }

    /// SIGTERM, then waits up to `limit` for exit; returns the exit status.
    pub fn stop(&mut self, limit: Duration) -> Result<std::process::ExitStatus, LabError> {
        self.signal(Signal::SIGTERM)?;
        self.wait(limit)
    }

    /// SIGKILL: simulates a crash; the rules stay behind.
    pub fn kill9(&mut self) -> Result<(), LabError> {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = None;
        Ok(())
    }

    /// Waits for exit.
    pub fn wait(&mut self, limit: Duration) -> Result<std::process::ExitStatus, LabError> {
        let start = Instant::now();
        let Some(c) = self.child.as_mut() else {
            return Err(LabError::Step("filter not running".into()));
        };
        loop {
            if let Some(st) = c.try_wait().map_err(|e| LabError::Io {
                what: "waiting for a process".into(),
                source: e,
            })? {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                self.child = None;
                return Err(LabError::Step(format!("filter did not stop within {limit:?}")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The namespaces, their addresses, and the server threads.
pub struct Lab {
    /// Unique tag in the namespace names.
    pub tag: String,
    /// Listed client namespace.
    pub client: String,
    /// Not-listed client namespace.
    pub other: String,
    /// Gateway namespace.
    pub gateway: String,
    /// Server namespace.
    pub server: String,
    /// Scratch directory (hosts file, logs).
    pub dir: PathBuf,
    created: Vec<String>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Builds the namespaces and links; `dir` holds scratch files.
    pub fn new(dir: &Path) -> Result<Lab, LabError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let name = |r: &str| format!("aw-{tag}-{r}");
        let mut lab = Lab {
            client: name("c"),
            other: name("o"),
            gateway: name("g"),
            server: name("s"),
            tag,
            dir: dir.to_path_buf(),
            created: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        for ns in [&self.client, &self.other, &self.gateway, &self.server] {
            ip(&["netns", "add", ns])?;
            self.created.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let g = self.gateway.clone();
        // (peer ns, peer if, gw if, peer v4, gw v4, v4 prefix, peer v6, gw v6)
        let links = [
            (
                &self.client,
                "c0",
                "gc",
                CLIENT4,
                "192.0.2.1",
                24,
                CLIENT6,
                "2001:db8:1::1",
            ),
            (
                &self.other,
                "o0",
                "go",
                OTHER4,
                "203.0.113.1",
                24,
                OTHER6,
                "2001:db8:3::1",
            ),
            (
                &self.server,
                "s0",
                "gs",
                SERVER4,
                "198.51.100.1",
                24,
                SERVER6,
                "2001:db8:2::1",
            ),
        ];
        for (ns, pif, gif, p4, g4, len, p6, g6) in links {
            ip(&[
                "link", "add", pif, "netns", ns, "type", "veth", "peer", "name", gif, "netns", &g,
            ])?;
            ip(&["-n", ns, "addr", "add", &format!("{p4}/{len}"), "dev", pif])?;
            ip(&["-n", ns, "addr", "add", &format!("{p6}/64"), "dev", pif, "nodad"])?;
            ip(&["-n", &g, "addr", "add", &format!("{g4}/{len}"), "dev", gif])?;
            ip(&["-n", &g, "addr", "add", &format!("{g6}/64"), "dev", gif, "nodad"])?;
            ip(&["-n", ns, "link", "set", pif, "up"])?;
            ip(&["-n", &g, "link", "set", gif, "up"])?;
            ip(&["-n", ns, "route", "add", "default", "via", g4])?;
            ip(&["-n", ns, "-6", "route", "add", "default", "via", g6])?;
        }
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = run_with_timeout(
                Command::new("ip").args(["netns", "exec", &g, "sysctl", "-qw", key]),
                Duration::from_secs(5),
            )?;
            if !out.status.success() {
                return Err(LabError::Step(format!("sysctl {key} failed in {g}")));
            }
        }
        Ok(())
    }

    /// A command run inside namespace `ns` (`ip netns exec ns program args`).
    pub fn command(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).args(args);
        c
    }

    /// Runs a command in `ns` with a deadline.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str], limit: Duration) -> Result<Output, LabError> {
        run_with_timeout(&mut self.command(ns, program, args), limit)
    }

    /// Starts the lab server (echo for raw TCP, echoing HTTP server for
    /// HTTP requests) on every port of [`SERVER_PORTS`], IPv4 and IPv6.
    pub fn start_server(&mut self) -> Result<(), LabError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = self.server.clone();
        let stop = Arc::clone(&self.stop);
        let h = thread::Builder::new()
            .name("lab-server".into())
            .spawn(move || {
                let listeners = enter_netns(&ns).and_then(|()| {
                    SERVER_PORTS
                        .iter()
                        .map(|p| {
                            let l = TcpListener::bind(("::", *p)).map_err(|e| e.to_string())?;
                            l.set_nonblocking(true).map_err(|e| e.to_string())?;
                            Ok(l)
                        })
                        .collect::<Result<Vec<_>, String>>()
                });
                let listeners = match listeners {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let mut idle = true;
                    for l in &listeners {
                        if let Ok((s, _)) = l.accept() {
                            idle = false;
                            let _ = thread::Builder::new()
                                .name("lab-conn".into())
                                .spawn(move || serve_one(s));
                        }
                    }
                    if idle {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .map_err(|e| LabError::Io {
                what: "starting the lab server thread".into(),
                source: e,
            })?;
        self.servers.push(h);
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| LabError::Step("lab server did not start".into()))?
            .map_err(|e| LabError::Step(format!("lab server: {e}")))
    }

    /// Starts `exe run --hosts hosts ... extra` in the gateway and waits
    /// until its rules are in (or it exits).
    pub fn start_filter(
        &self,
        exe: &Path,
        hosts: &Path,
        extra: &[&str],
        name: &str,
    ) -> Result<Filter, LabError> {
        self.start_filter_env(exe, hosts, extra, name, &[])
    }

    /// [`Lab::start_filter`] with extra environment variables (fault tests
    /// point `PATH` at stand-ins for the rule tools).
    pub fn start_filter_env(
        &self,
        exe: &Path,
        hosts: &Path,
        extra: &[&str],
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<Filter, LabError> {
        let log = self.dir.join(format!("{name}.log"));
        let status = self.dir.join(format!("{name}-status.json"));
        let events = self.dir.join(format!("{name}-events.jsonl"));
        let logf = File::create(&log).map_err(|e| LabError::Io {
            what: format!("creating {}", log.display()),
            source: e,
        })?;
        let exe_s = exe.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--hosts".into(),
            hosts.to_string_lossy().into_owned(),
            "--status-file".into(),
            status.to_string_lossy().into_owned(),
            "--events".into(),
            events.to_string_lossy().into_owned(),
            "--stats-interval".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gateway, &exe_s])
            .args(&args)
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| LabError::Step(format!("cannot start {exe_s}: {e}")))?;
        let mut f = Filter {
            child: Some(child),
            log,
            status,
            events,
        };
        let start = Instant::now();
        loop {
            let text = f.log_text();
            if text.contains("rules installed") {
                return Ok(f);
            }
            if !f.running() {
                return Err(LabError::Step(format!(
                    "appwall run exited during start-up:\n{text}"
                )));
            }
            if start.elapsed() > Duration::from_secs(15) {
                return Err(LabError::Step(format!(
                    "appwall run not ready after 15 s:\n{text}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `iptables-save`, `ip6tables-save` and `ipset list -n` of the gateway,
    /// filtered to lines that mention appwall, plus bound queues.
    pub fn gateway_leftovers(&self) -> Result<Vec<String>, LabError> {
        let mut left = Vec::new();
        for (prog, args) in [
            ("iptables-save", &[][..]),
            ("ip6tables-save", &[][..]),
            ("ipset", &["list", "-n"][..]),
            ("cat", &["/proc/net/netfilter/nfnetlink_queue"][..]),
        ] {
            let out = self.exec(&self.gateway, prog, args, Duration::from_secs(10))?;
            let text = String::from_utf8_lossy(&out.stdout);
            for l in text.lines() {
                let ours = if prog == "cat" {
                    !l.trim().is_empty()
                } else {
                    l.to_ascii_lowercase().contains("appwall")
                };
                if ours {
                    left.push(format!("{prog}: {l}"));
                }
            }
        }
        Ok(left)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
        for ns in self.created.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Moves the calling thread into namespace `ns` (other threads stay put).
pub fn enter_netns(ns: &str) -> Result<(), String> {
    let f = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns}: {e}"))
}

const HTTP_METHODS: [&str; 5] = ["GET ", "POST ", "PUT ", "HEAD ", "OPTIONS "];

fn serve_one(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let is_http = HTTP_METHODS.iter().any(|m| buf.starts_with(m.as_bytes()));
        if !is_http {
            // Raw TCP: echo as it comes.
            if s.write_all(&buf).is_err() {
                return;
            }
            buf.clear();
            continue;
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() < end + 4 + len {
            continue;
        }
        let body: Vec<u8> = if len > 0 {
            buf[end + 4..end + 4 + len].to_vec()
        } else {
            b"hello from the lab server\n".to_vec()
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes());
        let _ = s.write_all(&body);
        break;
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server's answer arrived (the bytes).
    Answered(Vec<u8>),
    /// Refused or reset.
    Reset,
    /// No answer in time.
    Timeout,
    /// Could not even try.
    Error(String),
}

impl Outcome {
    /// True when the server answered.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Answered(b) if !b.is_empty())
    }
}

/// What arrived, or `empty` when nothing did.
fn answered_or(got: Vec<u8>, empty: Outcome) -> Outcome {
    if got.is_empty() {
        empty
    } else {
        Outcome::Answered(got)
    }
}

/// Opens a TCP connection from inside `ns` (on a fresh thread), sends
/// `payload`, and reads the answer until `expect` bytes or the deadline.
/// Returns the client's local port too (to match events).
pub fn tcp_exchange(
    ns: &str,
    dst: SocketAddr,
    payload: &[u8],
    expect: usize,
    limit: Duration,
) -> (Outcome, u16) {
    let ns = ns.to_string();
    let payload = payload.to_vec();
    let h = thread::Builder::new().name("lab-client".into()).spawn(move || {
        if let Err(e) = enter_netns(&ns) {
            return (Outcome::Error(e), 0);
        }
        let start = Instant::now();
        let mut s = match TcpStream::connect_timeout(&dst, limit) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (Outcome::Timeout, 0),
            Err(_) => return (Outcome::Reset, 0),
        };
        let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
        let _ = s.set_nodelay(true);
        // Write and read at once: a peer that answers while it reads (an
        // echo) would otherwise fill both socket buffers and block the two
        // writers for good once the payload outgrows them.
        let _ = s.set_write_timeout(Some(limit));
        let _writer = match s.try_clone() {
            // A failed write shows to the reader as a reset or a timeout.
            Ok(mut w) => thread::spawn(move || {
                let _ = w.write_all(&payload);
            }),
            Err(e) => return (Outcome::Error(e.to_string()), port),
        };
        let mut got = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return (answered_or(got, Outcome::Timeout), port);
            }
            let _ = s.set_read_timeout(Some(left));
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&chunk[..n]);
                    if got.len() >= expect {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (answered_or(got, Outcome::Timeout), port);
                }
                Err(_) => {
                    return (answered_or(got, Outcome::Reset), port);
                }
            }
        }
        (answered_or(got, Outcome::Reset), port)
    });
    match h {
        Ok(h) => h
            .join()
            .unwrap_or((Outcome::Error("client thread panicked".into()), 0)),
        Err(e) => (Outcome::Error(e.to_string()), 0),
    }
}
