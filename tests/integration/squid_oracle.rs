//! The Squid oracle: Debian's real `squid` judges a corpus of requests in
//! the lab, and `appwall run` with the rules `appwall import-squid` made of
//! the same squid.conf judges the same requests sent past the proxy; every
//! disagreement fails, printed with the request and both verdicts.
//!
//! Squid runs in the server namespace as an explicit proxy (port 3128,
//! absolute-form and CONNECT requests) and as an accelerator (port 3129,
//! origin-form requests with `Host`), with names mapped to the lab server
//! by a `hosts_file` (no DNS). Its verdict per request is read from its
//! access.log (`TCP_DENIED*` = denied), each request carrying an
//! `X-Oracle` id. appwall's verdict: an answer from the origin = allowed,
//! none = blocked (cross-checked with its event log).
//!
//! The configuration covers every ACL type the import translates, allow
//! lines before denies (exceptions), `!acl`, includes, ACL files, `src`
//! (and `!src`), `time`, and `http_reply_access`. Known, documented
//! differences are listed in the corpus with their reason and must still
//! disagree (so a change of either side shows).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appwall::lab::{self, Lab};
use serde_json::Value;

use crate::support::lab::{stop, with_lab};
use crate::support::py::Py;
use crate::support::{LAB_TOOLS, Need, exe};

const NEEDS: &[Need] = &[Need::Root, Need::Tools(LAB_TOOLS), Need::Tools(&["squid"])];

cases![squid_oracle_agrees_with_appwall: NEEDS];

/// The origin server in the server namespace: HTTP/1.1 with keep-alive on
/// the given ports; the reply's Content-Type is `ctype=` of the request
/// line (else text/plain), `msnhdr=1` adds an `X-MSN-Messenger` header;
/// CONNECT gets `200 Connection established`.
pub(crate) const ORIGIN: &str = r#"
import socket, sys, threading, urllib.parse
def serve(c):
    c.settimeout(10)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            first = lines[0].decode("latin-1")
            n = 0
            for l in lines[1:]:
                k, _, v = l.partition(b":")
                if k.strip().lower() == b"content-length":
                    try: n = int(v.strip())
                    except ValueError: n = 0
            while len(buf) < n:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[n:]
            if first.upper().startswith("CONNECT "):
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                return
            q = urllib.parse.unquote(first)
            ctype = "text/plain"
            if "ctype=" in q:
                ctype = q.split("ctype=", 1)[1].split("&")[0].split(" ")[0]
            extra = "X-MSN-Messenger: SessionID=1; GW-IP=198.51.100.10\r\n" if "msnhdr=1" in q else ""
            body = b"hello from the oracle origin\n"
            c.sendall(("HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n" % (ctype, extra, len(body))).encode() + body)
    except OSError:
        pass
    finally:
        c.close()
def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
ports = [int(p) for p in sys.argv[1:]]
for p in ports:
    threading.Thread(target=listen, args=(p,), daemon=True).start()
print("READY", flush=True)
threading.Event().wait()
"#;

/// The client driver: reads cases (JSON: id, host, port, reqs as hex) from
/// a file, runs them on `argv[2]` threads, each request of a case on the
/// same connection, and prints one JSON line per request: id, first line
/// of the answer (or ""), how it ended, the `X-Squid-Error` header.
const DRIVER: &str = r#"
import json, socket, sys, threading, time, queue
cases = json.load(open(sys.argv[1]))
par = int(sys.argv[2]); limit = float(sys.argv[3])
out = []; lock = threading.Lock()
def answer(s):
    end = time.time() + limit
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = end - time.time()
        if left <= 0: return buf, "timeout"
        s.settimeout(left)
        try: d = s.recv(65536)
        except socket.timeout: return buf, "timeout"
        except OSError: return buf, "reset"
        if not d: return buf, "closed"
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = None
    for l in head.split(b"\r\n")[1:]:
        k, _, v = l.partition(b":")
        if k.strip().lower() == b"content-length":
            try: n = int(v.strip())
            except ValueError: n = 0
    if n is None or head.split(b" ")[0].startswith(b"HTTP/") and b" 200 Connection established" in head.split(b"\r\n")[0]:
        return head, "ok"
    while len(body) < n:
        left = end - time.time()
        if left <= 0: break
        s.settimeout(left)
        try: d = s.recv(65536)
        except OSError: break
        if not d: break
        body += d
    return head, "ok"
def run(c):
    res = []
    try:
        s = socket.create_connection((c["host"], c["port"]), timeout=limit)
    except OSError as e:
        res = [(i, "", "connect:" + type(e).__name__, "") for i in range(len(c["reqs"]))]
        s = None
    if s is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dead = False
        for i, r in enumerate(c["reqs"]):
            if dead:
                res.append((i, "", "after-dead", "")); continue
            try: s.sendall(bytes.fromhex(r))
            except OSError:
                res.append((i, "", "send-failed", "")); dead = True; continue
            head, how = answer(s)
            lines = head.split(b"\r\n")
            err = ""
            for l in lines[1:]:
                if l.lower().startswith(b"x-squid-error:"): err = l.split(b":", 1)[1].strip().decode("latin-1")
            first = lines[0].decode("latin-1") if head else ""
            res.append((i, first, how, err))
            if how != "ok" or b"Connection established" in lines[0]: dead = True
        s.close()
    with lock:
        for (i, first, how, err) in res:
            out.append({"id": "%s.%d" % (c["id"], i), "first": first, "how": how, "err": err})
q = queue.Queue()
for c in cases: q.put(c)
def worker():
    while True:
        try: c = q.get_nowait()
        except queue.Empty: return
        run(c)
ts = [threading.Thread(target=worker) for _ in range(par)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
"#;

/// Names the corpus uses, all mapped to the lab server by Squid's hosts file.
const NAMES: &[&str] = &[
    "gateway.messenger.hotmail.com",
    "messenger.msn.com",
    "x.messenger.msn.com",
    "www.msn.com",
    "webchat.example",
    "chat.webchat.example",
    "news.example",
    "origin.lab.example",
];

/// Origin ports besides the lab server's (80, 443, 1863, 8080, 5000).
const ORIGIN_PORTS: &[u16] = &[8000, 9443, 5050, 6667];

/// One case: requests on one connection, from one client, in one form.
#[derive(Debug, Clone)]
struct Case {
    /// Origin-form (Squid accelerator port, direct to port 80) or proxy
    /// form (absolute URLs and CONNECT).
    origin_form: bool,
    /// From the `other` namespace (203.0.113.20) instead of the listed
    /// client (192.0.2.10).
    other: bool,
    /// Destination port when sent past the proxy.
    port: u16,
    /// The requests (without the X-Oracle header, added per request).
    reqs: Vec<String>,
    /// A documented difference: (request index, reason); that request
    /// must disagree.
    known: Option<(usize, &'static str)>,
}

/// Adds `X-Oracle: id` as the first header of a request head.
fn tag(req: &str, id: &str) -> String {
    match req.find("\r\n") {
        Some(i) => format!("{}\r\nX-Oracle: {id}{}", &req[..i], &req[i..]),
        None => req.to_string(),
    }
}

/// The URL's port (default 80), for a request sent past the proxy.
fn url_port(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split(['/', '?']).next().unwrap_or("");
    auth.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80)
}

fn absolute(method: &str, url: &str, headers: &str, other: bool) -> Case {
    let host = url
        .split_once("://")
        .map_or("", |(_, r)| r.split(['/', '?']).next().unwrap_or(""));
    let body = if method == "POST" || method == "PUT" {
        "Content-Length: 4\r\n\r\nping"
    } else {
        "\r\n"
    };
    Case {
        origin_form: false,
        other,
        port: url_port(url),
        reqs: vec![format!(
            "{method} {url} HTTP/1.1\r\nHost: {host}\r\n{headers}{body}"
        )],
        known: None,
    }
}

fn origin(method: &str, host: &str, target: &str, headers: &str, other: bool) -> Case {
    let body = if method == "POST" {
        "Content-Length: 4\r\n\r\nping"
    } else {
        "\r\n"
    };
    Case {
        origin_form: true,
        other,
        port: 80,
        reqs: vec![format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}{body}"
        )],
        known: None,
    }
}

fn connect(target: &str, other: bool) -> Case {
    Case {
        origin_form: false,
        other,
        // Past the proxy, CONNECT goes to the origin's port that answers it.
        port: 8000,
        reqs: vec![format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: Mozilla/5.0\r\n\r\n"
        )],
        known: None,
    }
}

/// The corpus: messenger gateways in both forms, web chat, benign URLs that
/// mention messengers, methods, user agents, CONNECT to several ports,
/// replies, keep-alive, long and odd heads; from both clients.
fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    let paths = [
        "/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com",
        "/gateway/GATEWAY.DLL?SessionID=123.456",
        "/",
        "/news/msn-messenger-review.html",
        "/search?q=gateway.dll+download",
        "/gateway/index.html",
        "/download/msnmsgr.exe",
        "/news/gateway.dll",
    ];
    let hosts = [
        "gateway.messenger.hotmail.com",
        "messenger.msn.com",
        "x.messenger.msn.com",
        "www.msn.com",
        "origin.lab.example",
    ];
    for other in [false, true] {
        for h in hosts {
            for p in paths {
                c.push(absolute(
                    "GET",
                    &format!("http://{h}{p}"),
                    "User-Agent: Mozilla/5.0\r\n",
                    other,
                ));
            }
        }
        // Origin form through the accelerator.
        for h in [
            "gateway.messenger.hotmail.com",
            "www.msn.com",
            "origin.lab.example",
        ] {
            for p in paths {
                c.push(origin("GET", h, p, "User-Agent: Mozilla/5.0\r\n", other));
            }
        }
        // Gateway POSTs as Messenger sends them.
        for (h, ct, ua) in [
            ("origin.lab.example", "application/x-msn-messenger", "MSMSGS"),
            ("origin.lab.example", "APPLICATION/X-MSN-MESSENGER", "Mozilla/5.0"),
            ("origin.lab.example", "text/plain", "MSMSGS"),
            ("origin.lab.example", "text/plain", "msmsgs"),
            (
                "origin.lab.example",
                "text/plain",
                "Mozilla/4.0 (compatible; MSN Messenger 7.5; MSMSGS)",
            ),
            ("news.example", "application/x-msn-messenger-extra", "Mozilla/5.0"),
            ("news.example", "text/html", "Skype/8.0"),
            ("news.example", "text/html", "skypeforlinux"),
            ("news.example", "text/html", "Mozilla/5.0 Skype"),
        ] {
            let headers = format!("User-Agent: {ua}\r\nContent-Type: {ct}\r\n");
            c.push(absolute(
                "POST",
                &format!("http://{h}/gateway/x?Action=poll"),
                &headers,
                other,
            ));
            c.push(origin("POST", h, "/chat/poll", &headers, other));
        }
        // Web chat by domain regex (in force by a time ACL).
        for h in ["webchat.example", "chat.webchat.example", "news.example"] {
            c.push(absolute(
                "GET",
                &format!("http://{h}/room/1"),
                "User-Agent: Mozilla/5.0\r\n",
                other,
            ));
            c.push(origin("GET", h, "/room/1", "", other));
        }
        // Methods and ports in URLs.
        for m in ["GET", "POST", "PUT", "OPTIONS", "DELETE", "HEAD"] {
            c.push(absolute(m, "http://news.example:8000/api/messenger", "", other));
        }
        for port in [1863, 5050, 6667, 8000] {
            c.push(absolute(
                "GET",
                &format!("http://news.example:{port}/"),
                "",
                other,
            ));
        }
        // A request header ACL.
        c.push(absolute(
            "GET",
            "http://news.example/poll",
            "X-MSN-Messenger: SessionID=9\r\n",
            other,
        ));
        // CONNECT to several ports.
        for t in [
            "gateway.messenger.hotmail.com:443",
            "news.example:443",
            "news.example:8000",
            "news.example:9443",
            "news.example:1863",
            "news.example:5050",
            "news.example:6667",
            "messenger.msn.com:9443",
        ] {
            c.push(connect(t, other));
        }
        // Replies judged by http_reply_access.
        for q in [
            "ctype=application/x-msn-messenger",
            "ctype=text/html",
            "msnhdr=1",
            "ctype=APPLICATION/X-MSN-MESSENGER&msnhdr=1",
        ] {
            c.push(absolute(
                "GET",
                &format!("http://news.example:8000/file?{q}"),
                "",
                other,
            ));
        }
    }
    // Keep-alive: a second request on the same connection is judged on
    // its own (allowed first, denied second; allowed both).
    for (a, b) in [
        ("/index.html", "/gateway/gateway.dll?Action=poll"),
        ("/index.html", "/news/today.html"),
        ("/file?ctype=text/html", "/file?ctype=application/x-msn-messenger"),
    ] {
        let r =
            |p: &str| format!("GET http://news.example:8000{p} HTTP/1.1\r\nHost: news.example:8000\r\n\r\n");
        c.push(Case {
            origin_form: false,
            other: false,
            port: 8000,
            reqs: vec![r(a), r(b)],
            known: None,
        });
    }
    // From the admin network: the first request matches an allow line
    // (an exception of the deny), the second on the same connection does
    // not and is denied.
    {
        let r = |p: &str| {
            format!("GET http://messenger.msn.com:8000{p} HTTP/1.1\r\nHost: messenger.msn.com:8000\r\n\r\n")
        };
        c.push(Case {
            origin_form: false,
            other: true,
            port: 8000,
            reqs: vec![r("/news/today.html"), r("/index.html")],
            known: None,
        });
    }
    // Denied first, then allowed: Squid answers 403 and goes on; appwall
    // drops the connection, so the second request has no appwall verdict
    // (counted as skipped, see docs/squid.md).
    {
        let r =
            |p: &str| format!("GET http://news.example:8000{p} HTTP/1.1\r\nHost: news.example:8000\r\n\r\n");
        c.push(Case {
            origin_form: false,
            other: false,
            port: 8000,
            reqs: vec![r("/gateway/gateway.dll"), r("/index.html")],
            known: None,
        });
    }
    // Long and odd heads.
    let long = format!("Cookie: {}\r\n", "a=b; ".repeat(1500));
    c.push(absolute(
        "GET",
        "http://news.example/gateway/gateway.dll",
        &long,
        false,
    ));
    c.push(absolute("GET", "http://news.example/benign", &long, false));
    let long_url = format!("http://news.example/search?q={}&x=gateway.dll", "m".repeat(3000));
    c.push(absolute("GET", &long_url, "", false));
    c.push(absolute(
        "GET",
        "http://NEWS.EXAMPLE/GATEWAY/GATEWAY.DLL",
        "",
        false,
    ));
    c.push(absolute(
        "GET",
        "http://Gateway.Messenger.Hotmail.Com/",
        "",
        false,
    ));
    c.push(absolute(
        "GET",
        "http://news.example/a?b=c",
        "User-Agent:   MSMSGS  \r\n",
        false,
    ));
    c.push(absolute(
        "GET",
        "http://198.51.100.10/gateway/gateway.dll",
        "",
        false,
    ));
    c.push(absolute("GET", "http://198.51.100.10/news/", "", false));
    c.push(Case {
        origin_form: false,
        other: false,
        port: 80,
        reqs: vec!["GET http://news.example/x HTTP/1.0\r\nUser-Agent: MSMSGS\r\n\r\n".to_string()],
        known: None,
    });
    // Percent-encoding: both decode unreserved characters before url_regex.
    c.push(absolute(
        "GET",
        "http://news.example/files/gateway%2Edll?Action=open",
        "",
        false,
    ));
    c.push(absolute(
        "GET",
        "http://news.example/files/gateway.d%6Cl",
        "",
        false,
    ));
    c.push(absolute(
        "GET",
        "http://news.example/files/gateway%2edll",
        "",
        true,
    ));
    c
}

/// Squid's day letter for today (UTC, as Squid runs with TZ=UTC here).
fn today_letter() -> char {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    // 1970-01-01 was a Thursday.
    ['H', 'F', 'A', 'S', 'M', 'T', 'W'][(days % 7) as usize]
}

/// The squid.conf under test (paths in `dir`).
fn squid_conf(dir: &Path) -> String {
    let d = dir.display();
    let others: String = "SMTWHFA".chars().filter(|c| *c != today_letter()).collect();
    format!(
        "\
http_port 198.51.100.10:3128
http_port 198.51.100.10:3129 accel vhost allow-direct
pid_filename {d}/logs/squid.pid
cache_log {d}/logs/cache.log
logformat oracle %Ss/%03>Hs %>a %rm %{{X-Oracle}}>h %ru
access_log stdio:{d}/logs/access.log oracle
cache deny all
cache_mem 8 MB
hosts_file {d}/hosts
dns_nameservers 127.0.0.1
coredump_dir {d}/logs
cache_effective_user proxy
shutdown_lifetime 0 seconds
visible_hostname oracle.lab.example
via off
forwarded_for transparent
client_persistent_connections on

acl msnd dstdomain -n \"{d}/acl/msn-domains.txt\"
acl gw url_regex -i gateway\\.dll
acl gwpath urlpath_regex ^/gateway/
acl msnmime req_mime_type -i ^application/x-msn-messenger$
acl msnua browser MSMSGS
acl skypeua browser -i ^skype
acl webchat dstdom_regex -i (^|\\.)webchat\\.example$
acl xmsn req_header X-MSN-Messenger .
acl SSL_ports port 443
acl labports port 8000 9443
acl chatports port 1863 5050 6667-6669
acl unusual method PUT DELETE
acl optionsm method OPTIONS
acl admins src 203.0.113.0/255.255.255.0
acl lan src \"{d}/acl/lan.txt\"
acl always time SMTWHFA 00:00-24:00
acl notoday time {others}
acl newsonly urlpath_regex ^/news/
acl repmsn rep_mime_type -i ^application/x-msn-messenger
acl repmsnhdr rep_header X-MSN-Messenger SessionID

http_access allow admins newsonly
http_access deny msnd
include {d}/conf.d/*.conf
http_access allow admins gwpath
http_access deny msnmime
http_access deny msnua lan
http_access deny skypeua
http_access deny webchat always
http_access deny msnua notoday
http_access deny optionsm !notoday
http_access deny xmsn
http_access deny CONNECT !SSL_ports !labports
http_access deny chatports
http_access deny unusual !admins
http_access allow all
http_reply_access deny repmsn
http_reply_access deny repmsnhdr !admins
http_reply_access allow all
"
    )
}

/// One request's verdicts.
#[derive(Debug, Default, Clone)]
struct Verdict {
    squid: Option<bool>,
    squid_log: String,
    squid_client: String,
    appwall: Option<bool>,
    appwall_how: String,
}

/// Kills a child by pid on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Runs the driver in `ns` for `cases` (id, host, port, requests).
fn drive(
    lab: &Lab,
    ns: &str,
    dir: &Path,
    name: &str,
    cases: &[(String, String, u16, Vec<String>)],
) -> Vec<Value> {
    let json: Vec<Value> = cases
        .iter()
        .map(|(id, host, port, reqs)| {
            serde_json::json!({"id": id, "host": host, "port": port,
                "reqs": reqs.iter().map(|r| hex(r)).collect::<Vec<_>>()})
        })
        .collect();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_string(&json).unwrap()).unwrap();
    let o = lab
        .exec(
            ns,
            "python3",
            &["-c", DRIVER, file.to_str().unwrap(), "24", "2.5"],
            Duration::from_secs(90),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str::<Vec<Value>>(text.trim()).unwrap_or_else(|e| {
        panic!(
            "driver {name}: {e}\n{}\n{}",
            text,
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn squid_oracle_agrees_with_appwall() {
    let started = Instant::now();
    with_lab(|lab| {
        let dir = lab.dir().join("oracle");
        for sub in ["", "acl", "conf.d", "logs", "rules"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Squid drops to user proxy: it must reach its files and logs.
        std::fs::set_permissions(lab.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("chown")
            .args(["proxy:proxy", dir.join("logs").to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        let mut hosts = String::from("198.51.100.10 origin.lab.example\n");
        for n in NAMES.iter().filter(|n| **n != "origin.lab.example") {
            let _ = writeln!(hosts, "198.51.100.10 {n}");
        }
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        std::fs::write(
            dir.join("acl/msn-domains.txt"),
            "# Messenger servers\n.messenger.hotmail.com\nmessenger.msn.com   # exact name only\n",
        )
        .unwrap();
        std::fs::write(dir.join("acl/lan.txt"), "192.0.2.0/24\n").unwrap();
        std::fs::write(
            dir.join("conf.d/gateway.conf"),
            "# gateway requests from the LAN\nhttp_access deny gw lan\nhttp_access deny gwpath !admins\n",
        )
        .unwrap();
        let conf = dir.join("squid.conf");
        std::fs::write(&conf, squid_conf(&dir)).unwrap();

        // The origin, then Squid (TZ=UTC: its time ACLs in UTC, as the
        // import writes them without --utc-offset).
        let ports: Vec<String> = ORIGIN_PORTS.iter().map(|p| p.to_string()).collect();
        let py_args: Vec<&str> = ports.iter().map(String::as_str).collect();
        let mut origin = Py::start(lab, &lab.server, ORIGIN, &py_args);
        origin.expect("READY", Duration::from_secs(10));
        let parse = lab
            .command(
                &lab.server,
                "squid",
                &["-k", "parse", "-f", conf.to_str().unwrap()],
            )
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(
            parse.status.success(),
            "squid -k parse: {}",
            String::from_utf8_lossy(&parse.stderr)
        );
        let squid = Proc(
            lab.command(&lab.server, "squid", &["-N", "-f", conf.to_str().unwrap()])
                .env("TZ", "UTC")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let up = Instant::now();
        let addr = format!("{}:3129", lab::SERVER4).parse().unwrap();
        loop {
            let (o, _) = lab::tcp_exchange(
                &lab.client,
                addr,
                b"GET /up HTTP/1.1\r\nHost: origin.lab.example\r\n\r\n",
                1,
                Duration::from_secs(2),
            );
            if o.passed() {
                break;
            }
            assert!(
                up.elapsed() < Duration::from_secs(30),
                "squid did not come up: {}",
                std::fs::read_to_string(dir.join("logs/cache.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        let cases = corpus();
        let mut verdicts: BTreeMap<String, Verdict> = BTreeMap::new();
        let tagged = |proxy: bool, other: bool| -> Vec<(String, String, u16, Vec<String>)> {
            cases
                .iter()
                .enumerate()
                .filter(|(_, c)| c.other == other)
                .map(|(i, c)| {
                    let port = match (proxy, c.origin_form) {
                        (true, true) => 3129,
                        (true, false) => 3128,
                        (false, _) => c.port,
                    };
                    let reqs = c
                        .reqs
                        .iter()
                        .enumerate()
                        .map(|(k, r)| tag(r, &format!("{i}.{k}")))
                        .collect();
                    (i.to_string(), lab::SERVER4.to_string(), port, reqs)
                })
                .collect()
        };
        for other in [false, true] {
            let ns = if other { &lab.other } else { &lab.client };
            for r in drive(lab, ns, &dir, &format!("squid-{other}"), &tagged(true, other)) {
                let v = verdicts.entry(r["id"].as_str().unwrap().to_string()).or_default();
                v.squid_client = format!("{} {} {}", r["first"], r["how"], r["err"]);
                if r["err"].as_str().unwrap_or("").starts_with("ERR_ACCESS_DENIED") {
                    v.squid = Some(true);
                }
            }
        }
        // Stop Squid so its log is complete.
        let pid = squid.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stop_at = Instant::now();
        let mut squid = squid;
        while stop_at.elapsed() < Duration::from_secs(10) {
            if matches!(squid.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(squid);
        let log = std::fs::read_to_string(dir.join("logs/access.log")).unwrap_or_default();
        for line in log.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 5 {
                continue;
            }
            if let Some(v) = verdicts.get_mut(f[3]) {
                v.squid = Some(f[0].starts_with("TCP_DENIED"));
                v.squid_log = line.chars().take(200).collect();
            }
        }

        // The same squid.conf through appwall import-squid and appwall run.
        let rules = dir.join("rules");
        let out = Command::new(exe())
            .args(["import-squid", conf.to_str().unwrap(), "-o"])
            .arg(rules.join("oracle.toml"))
            .output()
            .unwrap();
        let import_err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{import_err}");
        // Every access line is translated: none is listed as not translated.
        assert!(
            !import_err.contains("not translated:"),
            "the oracle's squid.conf must translate fully:\n{import_err}"
        );
        let hosts = lab.dir().join("hosts");
        std::fs::write(&hosts, "192.0.2.0/24 oracle\n203.0.113.0/24 oracle\n").unwrap();
        // Silent drops: a reset would make a block look like a failed fetch.
        let mut f = lab.start(
            &hosts,
            &["--library", rules.to_str().unwrap(), "--silent-drop"],
            "oracle",
        );
        for other in [false, true] {
            let ns = if other { &lab.other } else { &lab.client };
            for r in drive(lab, ns, &dir, &format!("appwall-{other}"), &tagged(false, other)) {
                let v = verdicts.entry(r["id"].as_str().unwrap().to_string()).or_default();
                let how = r["how"].as_str().unwrap_or("");
                v.appwall_how = format!("{} {how}", r["first"]);
                // A drop leaves the client waiting; anything else (the
                // origin closing, a refused connection) is no verdict.
                v.appwall = match how {
                    "ok" => Some(false),
                    "timeout" => Some(true),
                    _ => None,
                };
            }
        }
        let events = f.events();
        stop(&mut f);

        // Compare.
        let mut agree = 0;
        let mut known = 0;
        let mut skipped = Vec::new();
        let mut wrong = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            for (k, req) in c.reqs.iter().enumerate() {
                let id = format!("{i}.{k}");
                let v = verdicts.get(&id).cloned().unwrap_or_default();
                let shown = || {
                    let r: String = req.chars().take(300).collect();
                    format!(
                        "request {id} ({}, from {}, port {}):\n  {}\n  squid:   {:?} log={:?} client={}\n  appwall: {:?} {}",
                        if c.origin_form {
                            "origin form"
                        } else {
                            "proxy form"
                        },
                        if c.other { lab::OTHER4 } else { lab::CLIENT4 },
                        c.port,
                        r.escape_debug(),
                        v.squid,
                        v.squid_log,
                        v.squid_client,
                        v.appwall,
                        v.appwall_how
                    )
                };
                let (Some(s), Some(a)) = (v.squid, v.appwall) else {
                    skipped.push(shown());
                    continue;
                };
                let expect_diff = c.known.is_some_and(|(at, _)| at == k);
                if expect_diff {
                    if s == a {
                        wrong.push(format!("known difference no longer differs: {}", shown()));
                    } else {
                        known += 1;
                    }
                } else if s == a {
                    agree += 1;
                } else {
                    wrong.push(shown());
                }
            }
        }
        let total: usize = cases.iter().map(|c| c.reqs.len()).sum();
        let denied = verdicts.values().filter(|v| v.squid == Some(true)).count();
        eprintln!(
            "squid oracle: {total} requests, {agree} agree, {known} known differences, {} skipped, {} disagree; squid denied {denied}; {} appwall events; {:?}",
            skipped.len(),
            wrong.len(),
            events.len(),
            started.elapsed()
        );
        for s in &skipped {
            eprintln!("skipped (no verdict on one side): {s}");
        }
        assert!(total >= 150, "corpus too small: {total}");
        assert!(
            denied >= 40 && denied + 40 <= total,
            "corpus must have both verdicts: {denied}/{total}"
        );
        assert!(
            skipped.len() * 20 <= total,
            "too many requests without a verdict:\n{}",
            skipped.join("\n")
        );
        assert!(
            wrong.is_empty(),
            "{} disagreements:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        // A request without an answer was dropped by appwall, not lost: one
        // blocked-connection event each (a connection dies at its first block).
        let blocked = verdicts.values().filter(|v| v.appwall == Some(true)).count();
        assert_eq!(events.len(), blocked, "events: {events:?}");
    });
}
