//! Live tests of per-message HTTP inspection and tunnels: real sockets
//! through the namespace gateway running `appwall run`, against a small
//! keep-alive HTTP server and CONNECT proxy started in the server namespace.

use std::process::{Child, Stdio};
use std::time::Duration;

use appwall::lab::{self, Lab};

use crate::support::lab::with_lab;
use crate::support::{LAB, exe};

cases![live_every_message_and_every_tunnel_is_judged: LAB];

/// Port of the keep-alive server (not one of the lab server's ports).
const PORT: &str = "8081";

/// A keep-alive HTTP/1.1 server and CONNECT proxy: `/big` answers 24 KiB,
/// anything else a short body; CONNECT answers 200 and then echoes; a line
/// that is not an HTTP request line is echoed (a relay that switches
/// protocols without asking).
const PY_SERVER: &str = r#"
import socket, threading
def serve(c):
    buf = b""
    c.settimeout(10)
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                if b"\r\n" in buf and not buf.split(b"\r\n")[0].split(b" ")[-1].startswith(b"HTTP/"):
                    break
                d = c.recv(65536)
                if not d: return
                buf += d
            if b"\r\n\r\n" not in buf:
                line, buf = buf.split(b"\r\n", 1)
                c.sendall(line + b"\r\n")
                continue
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n")[0]
            n = 0
            for h in head.split(b"\r\n")[1:]:
                if h.lower().startswith(b"content-length:"): n = int(h.split(b":")[1])
            while len(buf) < n:
                buf += c.recv(65536)
            buf = buf[n:]
            if line.startswith(b"CONNECT"):
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                while True:
                    d = c.recv(65536)
                    if not d: return
                    c.sendall(d)
            body = b"x" * 24576 if b" /big " in line else b"small\n"
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except Exception:
        pass
    finally:
        c.close()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8081))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Sends each argument (escaped) on one connection, reading one answer
/// after each; prints one word per step: ANSWER <bytes>, CLOSED or BLOCKED.
const PY_CLIENT: &str = r#"
import socket, sys, time
out = []
s = None
for _ in range(50):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        break
    except Exception:
        time.sleep(0.1)
try:
    for a in sys.argv[3:]:
        data = a.encode().decode("unicode_escape").encode("latin-1")
        s.sendall(data)
        got = b""
        want = None
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
            if b"\r\n\r\n" in got and got.startswith(b"HTTP/"):
                head, body = got.split(b"\r\n\r\n", 1)
                if b" 200 Connection" in head: break
                for h in head.split(b"\r\n"):
                    if h.lower().startswith(b"content-length:"): want = int(h.split(b":")[1])
                if want is not None and len(body) >= want: break
            elif not got.startswith(b"HTTP/") and got: break
        out.append("ANSWER %d" % len(got) if got else "CLOSED")
except Exception as e:
    out.append("BLOCKED " + type(e).__name__)
print(" | ".join(out))
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Ends only the server this test started, by its id.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(lab: &Lab) -> Server {
    let child = lab
        .command(&lab.server, "python3", &["-c", PY_SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the keep-alive server");
    Server(child)
}

fn talk(lab: &Lab, steps: &[&str]) -> String {
    let mut args = vec!["-c", PY_CLIENT, lab::SERVER4, PORT];
    args.extend_from_slice(steps);
    let o = lab
        .exec(&lab.client, "python3", &args, Duration::from_secs(30))
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const BIG: &str = "GET /big HTTP/1.1\\r\\nHost: www.example.com\\r\\n\\r\\n";
const SMALL: &str = "GET /small HTTP/1.1\\r\\nHost: www.example.com\\r\\n\\r\\n";
const GATEWAY: &str = "POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\\r\\n\
                       Host: 198.51.100.10\\r\\nContent-Length: 0\\r\\n\\r\\n";

fn live_every_message_and_every_tunnel_is_judged() {
    with_lab(|lab| {
        let dir = lab.dir();
        let _server = start_server(lab);
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "192.0.2.10 msn\n").unwrap();
        let mut f = lab.start_filter(&exe(), &hosts, &["--reset"], "http").unwrap();
        let cases: [(&str, Vec<&str>, bool); 8] = [
            ("keep-alive benign", vec![BIG, SMALL, BIG], false),
            (
                "HTTP, then a line of another protocol",
                vec![BIG, "HELLO 1 there\\r\\n"],
                false,
            ),
            (
                "HTTP, then raw MSNP without an Upgrade",
                vec![BIG, "VER 1 MSNP8 CVR0\\r\\n"],
                true,
            ),
            (
                "HTTP, then a request line without a version and MSNP lines",
                vec![SMALL, "GET Host: x\\r\\nVER 1 MSNP8\\r\\nVER 2 MSNP8\\r\\n"],
                true,
            ),
            (
                "keep-alive: 24 KiB download, then the gateway POST",
                vec![BIG, GATEWAY],
                true,
            ),
            (
                "absolute-form URL host over Host",
                vec![
                    BIG,
                    "GET http://gateway.messenger.hotmail.com/ HTTP/1.1\\r\\nHost: www.example.com\\r\\n\\r\\n",
                ],
                true,
            ),
            (
                "CONNECT to port 1863",
                vec!["CONNECT 203.0.113.5:1863 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"],
                true,
            ),
            (
                "MSNP inside a CONNECT tunnel",
                vec![
                    "CONNECT 203.0.113.5:443 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
                    "VER 1 MSNP8 CVR0\\r\\n",
                ],
                true,
            ),
        ];
        let mut failures = Vec::new();
        for (name, steps, blocked) in &cases {
            let got = talk(lab, steps);

            let answers = got.split(" | ").filter(|s| s.starts_with("ANSWER")).count();
            // Blocked: the last step gets no answer; benign: every step does.
            let ok = if *blocked {
                answers < steps.len()
            } else {
                answers == steps.len()
            };
            if !ok {
                failures.push(format!("{name}: {got}"));
            }
        }
        assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), f.log_text());
        let st = f.stop(Duration::from_secs(10)).unwrap();
        assert!(st.success(), "{}", f.log_text());
    });
}
