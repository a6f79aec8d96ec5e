//! Traffic from inside the lab's namespaces, driven by threads that enter
//! a namespace (`appwall::lab::enter_netns`), so there are no client
//! processes to reap: an echo server, long-lived streams, a prober opening
//! a new connection every 100 ms, a UDP sink and flood, and one-shot
//! clients (curl, the Messenger gateway POST). Each background helper is
//! stopped and joined by its Drop guard. [`TcpServer`] is the accept loop
//! of the servers here and in [`super::keepalive`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use appwall::lab::{self, Lab, Outcome, enter_netns};

/// Port of the echo server the tests run in the server namespace (no
/// deadlines, unlike the lab's own server).
pub const ECHO_PORT: u16 = 5001;
/// Benign payload: matches no signature.
pub const CHUNK: &[u8] = b"0123456789abcdef";
/// The first line of a Messenger login.
pub const MSNP: &[u8] = b"VER 1 MSNP8 CVR0\r\n";

/// Tells a background client to stop and waits for its report.
pub fn stop_and_join<T: Default>(stop: &AtomicBool, handle: &mut Option<JoinHandle<T>>) -> T {
    stop.store(true, Relaxed);
    handle
        .take()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default()
}

/// The echo server's address.
pub fn echo_addr() -> SocketAddr {
    SocketAddr::new(lab::SERVER4.parse().unwrap(), ECHO_PORT)
}

/// A TCP server in a namespace (IPv4 and IPv6), one thread per connection
/// running its `serve` function; stopped and joined on drop.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `port` in `ns`; returns once bound. `serve` gets each
    /// connection and the stop flag, which it must poll.
    pub fn start(ns: &str, port: u16, serve: fn(TcpStream, &AtomicBool)) -> TcpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let ns = ns.to_string();
        let st = Arc::clone(&stop);
        let main = thread::spawn(move || {
            let l = enter_netns(&ns).and_then(|()| {
                let l = TcpListener::bind(("::", port)).map_err(|e| e.to_string())?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(l)
            });
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut conns = Vec::new();
            while !st.load(Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let st = Arc::clone(&st);
                        conns.push(thread::spawn(move || serve(s, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("server start")
            .unwrap_or_else(|e| panic!("server bind on port {port}: {e}"));
        TcpServer {
            stop,
            main: Some(main),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.main.take() {
            let _ = h.join();
        }
    }
}

/// Reads `s` (blocking, waking every `tick` to look at `stop`) and hands
/// each chunk to `data` until the peer closes, a read fails, `stop` is
/// set or `data` returns false.
pub fn read_until_stopped(
    s: &mut TcpStream,
    stop: &AtomicBool,
    tick: Duration,
    mut data: impl FnMut(&[u8]) -> bool,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(tick));
    let mut buf = [0u8; 65536];
    while !stop.load(Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !data(&buf[..n]) {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// A TCP echo server in a namespace ([`TcpServer`]), stopped on drop.
pub struct EchoServer {
    _server: TcpServer,
}

impl EchoServer {
    /// Listens on `port` (IPv4 and IPv6) in `ns`; returns once bound.
    pub fn start(ns: &str, port: u16) -> EchoServer {
        EchoServer {
            _server: TcpServer::start(ns, port, echo),
        }
    }
}

/// Echoes what arrives until the peer closes or the server stops.
fn echo(mut s: TcpStream, stop: &AtomicBool) {
    let Ok(mut w) = s.try_clone() else { return };
    read_until_stopped(&mut s, stop, Duration::from_millis(100), |d| {
        w.write_all(d).is_ok()
    });
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// What a streaming client saw.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// Bytes sent.
    pub sent: usize,
    /// Bytes echoed back.
    pub echoed: usize,
    /// The client's port.
    pub port: u16,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

/// A long-lived connection from a namespace: after an optional `prefill`
/// (enough bytes to pass the inspection depth and settle the connection in
/// the kernel), sends [`CHUNK`] every `every` and reads the echo; arrival
/// times are kept to find stalls.
pub struct Stream {
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<(Instant, usize)>>>,
    port: Arc<AtomicU64>,
    handle: Option<JoinHandle<StreamReport>>,
}

impl Stream {
    /// Connects from `ns` to `dst`; returns once the prefill is echoed.
    pub fn start(ns: &str, dst: SocketAddr, prefill: usize, every: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let port = Arc::new(AtomicU64::new(0));
        let (st, arr, pt) = (Arc::clone(&stop), Arc::clone(&arrivals), Arc::clone(&port));
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let mut r = StreamReport::default();
            let fail = |mut r: StreamReport, e: String| {
                r.error = Some(e);
                r
            };
            if let Err(e) = enter_netns(&ns) {
                let _ = ready_tx.send(());
                return fail(r, e);
            }
            let mut s = match TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(());
                    return fail(r, format!("connect: {e}"));
                }
            };
            r.port = s.local_addr().map(|a| a.port()).unwrap_or(0);
            pt.store(u64::from(r.port), Relaxed);
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            if prefill > 0 {
                let data: Vec<u8> = CHUNK.iter().copied().cycle().take(prefill).collect();
                if let Err(e) = s.write_all(&data) {
                    let _ = ready_tx.send(());
                    return fail(r, format!("prefill: {e}"));
                }
                r.sent += prefill;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                while r.echoed < r.sent {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => r.echoed += n,
                        other => {
                            let _ = ready_tx.send(());
                            return fail(r, format!("prefill echo: {other:?}"));
                        }
                    }
                }
            }
            let _ = ready_tx.send(());
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let mut next = Instant::now();
            let mut drain_until = None;
            loop {
                let now = Instant::now();
                if drain_until.is_none() && st.load(Relaxed) {
                    drain_until = Some(now + Duration::from_secs(10));
                }
                match drain_until {
                    Some(d) if r.echoed >= r.sent || now > d => break,
                    None if now >= next => {
                        if let Err(e) = s.write_all(CHUNK) {
                            return fail(r, format!("write: {e}"));
                        }
                        r.sent += CHUNK.len();
                        next += every;
                    }
                    _ => {}
                }
                match s.read(&mut buf) {
                    Ok(0) => return fail(r, "closed by the server".into()),
                    Ok(n) => {
                        r.echoed += n;
                        arr.lock().unwrap().push((Instant::now(), n));
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return fail(r, format!("read: {e}")),
                }
            }
            r
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
        Stream {
            stop,
            arrivals,
            port,
            handle: Some(handle),
        }
    }

    /// The client's port (0 until connected).
    pub fn port(&self) -> u16 {
        self.port.load(Relaxed) as u16
    }

    /// Echoed bytes that arrived in [from, to).
    pub fn bytes_between(&self, from: Instant, to: Instant) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .sum()
    }

    /// Longest time without an echo between `from` and `to`.
    pub fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let arr = self.arrivals.lock().unwrap();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for (t, _) in arr.iter().filter(|(t, _)| *t >= from && *t < to) {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        gap.max(to.saturating_duration_since(last))
    }

    /// Stops sending, waits for the echo of everything sent.
    pub fn finish(&mut self) -> StreamReport {
        stop_and_join(&self.stop, &mut self.handle)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        stop_and_join(&self.stop, &mut self.handle);
    }
}

/// One new-connection attempt: when it started, whether the echo came back.
#[derive(Debug, Clone)]
pub struct Probe {
    /// When it started.
    pub at: Instant,
    /// Whether the echo came back.
    pub ok: bool,
    /// How long it took.
    pub took: Duration,
}

/// Opens a new connection every 100 ms from a namespace (echo round trip,
/// 3 s limit each) until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Probe>>>,
}

impl Prober {
    /// Starts probing `dst` from `ns`.
    pub fn start(ns: &str, dst: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let ns = ns.to_string();
        let handle = thread::spawn(move || {
            let mut out = Vec::new();
            if enter_netns(&ns).is_err() {
                return out;
            }
            while !st.load(Relaxed) {
                let at = Instant::now();
                let ok = (|| {
                    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).ok()?;
                    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                    s.write_all(b"probe\n").ok()?;
                    let mut b = [0u8; 6];
                    s.read_exact(&mut b).ok()?;
                    (&b == b"probe\n").then_some(())
                })()
                .is_some();
                out.push(Probe {
                    at,
                    ok,
                    took: at.elapsed(),
                });
                thread::sleep(Duration::from_millis(100));
            }
            out
        });
        Prober {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops; returns every probe made.
    pub fn finish(&mut self) -> Vec<Probe> {
        stop_and_join(&self.stop, &mut self.handle)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        stop_and_join(&self.stop, &mut self.handle);
    }
}

/// Sends `payload` on a new connection to the echo server; true when the
/// echo came back.
pub fn echoed(ns: &str, payload: &[u8], limit: Duration) -> bool {
    let (o, _) = lab::tcp_exchange(ns, echo_addr(), payload, payload.len(), limit);
    matches!(o, Outcome::Answered(ref b) if b == payload)
}

/// Counts UDP datagrams arriving in a namespace until dropped.
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    /// Datagrams received so far.
    pub count: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl UdpSink {
    /// Binds UDP `port` in `ns`; returns once bound.
    pub fn start(ns: &str, port: u16) -> UdpSink {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (st, n) = (Arc::clone(&stop), Arc::clone(&count));
        let ns = ns.to_string();
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let sock = enter_netns(&ns).and_then(|()| {
                let s = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                Ok(s)
            });
            let _ = tx.send(sock.as_ref().map(|_| ()).map_err(Clone::clone));
            let Ok(sock) = sock else { return };
            let mut buf = [0u8; 2048];
            while !st.load(Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    n.fetch_add(1, Relaxed);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        UdpSink {
            stop,
            count,
            handle: Some(handle),
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        stop_and_join(&self.stop, &mut self.handle);
    }
}

/// Sends 32-byte datagrams from a namespace as fast as it can, for `limit`
/// or `max` datagrams; returns how many were sent.
pub fn udp_flood(ns: &str, dst: SocketAddr, limit: Duration, max: u64) -> u64 {
    udp_flood_thread(ns, dst, limit, max).join().unwrap()
}

/// [`udp_flood`] in the background: join the thread for the count.
pub fn udp_flood_thread(ns: &str, dst: SocketAddr, limit: Duration, max: u64) -> JoinHandle<u64> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        s.connect(dst).unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < max && start.elapsed() < limit {
            for _ in 0..256 {
                if s.send(&[b'u'; 32]).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
}

/// The Messenger HTTP gateway's opening request, to the lab server.
pub const GATEWAY_URL: &str =
    "http://198.51.100.10/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com";

/// curl from `ns` (5 s limit, no `Expect: 100-continue`) with `args`.
pub fn curl(lab: &Lab, ns: &str, args: &[&str]) -> Output {
    let mut a = vec!["-sS", "--max-time", "5", "-H", "Expect:"];
    a.extend_from_slice(args);
    lab.exec(ns, "curl", &a, Duration::from_secs(10)).unwrap()
}

/// The Messenger gateway POST (MSNP in an HTTP body) from `ns` to `url`.
pub fn gateway_post(lab: &Lab, ns: &str, url: &str) -> Output {
    curl(
        lab,
        ns,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-msn-messenger",
            "--data-binary",
            "VER 1 MSNP8 CVR0\r\n",
            url,
        ],
    )
}
