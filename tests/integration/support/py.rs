//! Python helpers in the lab's namespaces: a process killed by pid in its
//! Drop guard whose output lines arrive on a channel, the scripts the
//! tests run, and a one-shot MSNP client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use appwall::lab::Lab;

use super::text;

/// A python helper in a namespace, killed by pid on drop; its stdout
/// lines arrive on a channel.
pub struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Py {
    /// Starts `python3 -u -c script args...` in `ns`.
    pub fn start(lab: &Lab, ns: &str, script: &str, args: &[&str]) -> Py {
        let mut a = vec!["-u", "-c", script];
        a.extend_from_slice(args);
        let mut child = lab
            .command(ns, "python3", &a)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Py { child, lines }
    }

    /// Waits for a line starting with `prefix`; returns it.
    pub fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("no {prefix:?} from python within {limit:?}: {e}"),
            }
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SYNs to `argv[1]` ports 1..: `argv[2]` connection attempts, 400 open at
/// a time, closed before they complete.
pub const PY_SYN_FLOOD: &str = r#"
import socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
sent, socks = 0, []
while sent < n:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, 10000 + sent % 20000))
    socks.append(s)
    sent += 1
    if len(socks) >= 400:
        time.sleep(0.02)
        for x in socks: x.close()
        socks = []
for x in socks: x.close()
print("SENT", sent)
"#;

/// Server side of the drip: accepts everything, reads and counts bytes.
pub const PY_SINK: &str = r#"
import selectors, socket, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
sel = selectors.DefaultSelector()
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1]))); l.listen(4096); l.setblocking(False)
sel.register(l, selectors.EVENT_READ)
print("LISTENING", flush=True)
total = 0
while True:
    for key, _ in sel.select(1):
        s = key.fileobj
        if s is l:
            try:
                c, _ = l.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            except BlockingIOError:
                pass
        else:
            try:
                d = s.recv(4096)
            except ConnectionError:
                d = b""
            if d:
                total += len(d)
                print("TOTAL", total, flush=True)
            else:
                sel.unregister(s); s.close()
"#;

/// Client side: `argv[3]` connections, then `argv[4]` rounds of one byte
/// on each, a pause between rounds.
pub const PY_DRIP_MANY: &str = r#"
import socket, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
host, port, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
print("CONNECTED", len(socks), flush=True)
for r in range(rounds):
    for s in socks:
        s.send(b"a")
    print("ROUND", r + 1, flush=True)
    time.sleep(0.5)
print("DONE", flush=True)
time.sleep(30)
"#;

pub const PY_MSNP: &str = r#"
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
pub fn python_msnp(lab: &Lab, ns: &str, host: &str, port: u16) -> bool {
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
