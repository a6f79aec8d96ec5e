//! HTTP/1.1 keep-alive traffic for tests that need connections which stay
//! open across a reload or a burst (the lab's own server closes after one
//! answer): a server answering every request on a connection, and clients
//! that keep asking until told to send Messenger's gateway request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use appwall::lab::{self, enter_netns};

use super::traffic::{TcpServer, read_until_stopped};

/// Port of the keep-alive server in the server namespace.
pub const KEEPALIVE_PORT: u16 = 8000;

/// Messenger's gateway request, origin form, with an exact Content-Length.
pub const MSN_GATEWAY_POST: &[u8] =
    b"POST /gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com HTTP/1.1\r\n\
Host: gateway.messenger.hotmail.com\r\nContent-Type: application/x-msn-messenger\r\n\
User-Agent: MSMSGS\r\nContent-Length: 18\r\n\r\nVER 1 MSNP8 CVR0\r\n";

/// The answer the server gives to every request.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// An HTTP/1.1 server on [`KEEPALIVE_PORT`] that answers every request on
/// a connection with a short `200 OK` and keeps the connection open;
/// stopped on drop.
pub struct KeepAliveServer {
    _server: TcpServer,
}

impl KeepAliveServer {
    /// Listens in `ns` (IPv4 and IPv6); returns once bound.
    pub fn start(ns: &str) -> KeepAliveServer {
        KeepAliveServer {
            _server: TcpServer::start(ns, KEEPALIVE_PORT, serve),
        }
    }
}

/// Answers each complete request as it arrives.
fn serve(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nodelay(true);
    let Ok(mut w) = s.try_clone() else { return };
    let mut buf = Vec::new();
    read_until_stopped(&mut s, stop, Duration::from_millis(200), |d| {
        buf.extend_from_slice(d);
        while let Some(n) = complete_request(&buf) {
            buf.drain(..n);
            if w.write_all(ANSWER).is_err() {
                return false;
            }
        }
        true
    });
}

/// Length of the first complete request in `buf` (head and body), if it
/// has all arrived.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let body = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..body]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let end = body.checked_add(len)?;
    (buf.len() >= end).then_some(end)
}

/// Reads one `... ok` answer; false on timeout, reset or close.
pub fn read_answer(s: &mut TcpStream, limit: Duration) -> bool {
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

/// What one keep-alive client saw.
#[derive(Debug, Default)]
pub struct KeepAliveReport {
    /// The client's port.
    pub port: u16,
    /// Requests answered before the MSN request.
    pub answered: u32,
    /// A request before the MSN request went unanswered.
    pub failed: Option<String>,
    /// The MSN gateway request was answered (it got through).
    pub msn_through: bool,
}

/// Keep-alive clients, one connection each to the server's
/// [`KEEPALIVE_PORT`]: a first request (if any), then a small GET every
/// `every` until [`KeepAliveClients::finish`], then the MSN gateway request.
pub struct KeepAliveClients {
    go: Arc<AtomicBool>,
    clients: Vec<JoinHandle<KeepAliveReport>>,
}

impl KeepAliveClients {
    /// One client per `(namespace, first request)`; returns once each has
    /// connected and had its first request answered (10 s each).
    pub fn start(clients: &[(&str, Option<Vec<u8>>)], every: Duration) -> KeepAliveClients {
        let go = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let clients: Vec<_> = clients
            .iter()
            .map(|(ns, first)| client(ns, first.clone(), every, Arc::clone(&go), tx.clone()))
            .collect();
        for _ in &clients {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        KeepAliveClients { go, clients }
    }

    /// Has every client send the MSN gateway request; returns their reports.
    pub fn finish(self) -> Vec<KeepAliveReport> {
        self.go.store(true, Relaxed);
        self.clients.into_iter().map(|c| c.join().unwrap()).collect()
    }
}

/// One client in `ns`; sends its port on `ready` once its first request
/// is answered.
fn client(
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
        let dst = SocketAddr::new(lab::SERVER4.parse().unwrap(), KEEPALIVE_PORT);
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
