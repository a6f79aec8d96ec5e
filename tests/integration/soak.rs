//! A bounded soak: a minute and a half of mixed benign and Messenger
//! traffic through a live gateway while the filter is reloaded every few
//! seconds, flooded with new connections and with UDP, and killed with -9
//! and restarted in the middle. Afterwards: no Messenger attempt got an
//! answer, no benign connection that was up was cut, memory stayed flat,
//! and exactly one rule set is installed (none after the stop).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use appwall::lab::{self, Outcome, tcp_exchange};

use crate::support::LAB;
use crate::support::lab::{HOSTS, jumps, stop, with_lab};
use crate::support::procs::rss_kib;
use crate::support::py::{PY_SYN_FLOOD, Py};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, Stream, UdpSink, echo_addr, udp_flood};

cases![soak_mixed_traffic_reloads_floods_and_a_crash: LAB];

/// How long the traffic runs.
const SOAK: Duration = Duration::from_secs(80);

/// Counts of one kind of attempt.
#[derive(Default)]
struct Tally {
    tries: AtomicU64,
    answered: AtomicU64,
}

/// New connections from `ns` sending `payload` every `every` until `stop`;
/// each counts as answered when the echo server's reply came back.
fn attempts(
    ns: String,
    payload: &'static [u8],
    every: Duration,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Relaxed) {
            let (o, _) = tcp_exchange(
                &ns,
                echo_addr(),
                payload,
                payload.len(),
                Duration::from_millis(1500),
            );
            t.tries.fetch_add(1, Relaxed);
            if matches!(o, Outcome::Answered(ref b) if b.as_slice() == payload) {
                t.answered.fetch_add(1, Relaxed);
            }
            thread::sleep(every);
        }
    })
}

fn soak_mixed_traffic_reloads_floods_and_a_crash() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let sink = UdpSink::start(&lab.server, 5002);
        let udp_dst: SocketAddr = format!("{}:5002", lab::SERVER4).parse().unwrap();
        let h = lab.hosts(HOSTS);
        // Fail-closed: while the filter is down, a listed host's new
        // connections wait instead of passing uninspected.
        let args = ["--fail-closed", "--reset", "--max-flows", "2000"];
        let mut f = lab.start(&h, &args, "a");

        let stop_traffic = Arc::new(AtomicBool::new(false));
        let msn = Arc::new(Tally::default());
        let benign = Arc::new(Tally::default());
        let other = Arc::new(Tally::default());
        let workers = vec![
            attempts(
                lab.client.clone(),
                MSNP,
                Duration::from_millis(150),
                Arc::clone(&stop_traffic),
                Arc::clone(&msn),
            ),
            attempts(
                lab.client.clone(),
                b"GET / HTTP/1.0\r\n\r\n",
                Duration::from_millis(100),
                Arc::clone(&stop_traffic),
                Arc::clone(&benign),
            ),
            attempts(
                lab.other.clone(),
                MSNP,
                Duration::from_millis(150),
                Arc::clone(&stop_traffic),
                Arc::clone(&other),
            ),
        ];
        // Long-lived benign connections: one still inspected, one settled
        // in the kernel. Neither may be cut by anything below.
        let mut slow = Stream::start(&lab.client, echo_addr(), 0, Duration::from_millis(50));
        let mut bulk = Stream::start(&lab.client, echo_addr(), 20_000, Duration::from_millis(50));

        thread::sleep(Duration::from_secs(3));
        let rss_start = rss_kib(f.pid().unwrap());
        let started = Instant::now();
        let mut next_reload = Instant::now();
        let mut reloads = 0;
        let (mut synned, mut flooded, mut crashed) = (false, false, false);
        let mut rss_peak = rss_start;
        while started.elapsed() < SOAK {
            let t = started.elapsed();
            if Instant::now() >= next_reload {
                // The same policy for the client, a changing one for others.
                let extra = if reloads % 2 == 0 {
                    "203.0.113.99 msn\n"
                } else {
                    ""
                };
                std::fs::write(&h, format!("{HOSTS}{extra}")).unwrap();
                f.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
                reloads += 1;
                next_reload += Duration::from_secs(4);
            }
            if !synned && t > Duration::from_secs(15) {
                // 3000 connections to an address that never answers.
                let mut py = Py::start(lab, &lab.client, PY_SYN_FLOOD, &["198.51.100.99", "3000"]);
                py.expect("SENT", Duration::from_secs(30));
                synned = true;
            }
            if !flooded && t > Duration::from_secs(25) {
                udp_flood(&lab.client, udp_dst, Duration::from_secs(3), 2_000_000);
                flooded = true;
            }
            if !crashed && t > Duration::from_secs(40) {
                f.kill9().unwrap();
                thread::sleep(Duration::from_millis(1500));
                f = lab.start(&h, &args, "b");
                crashed = true;
            }
            if let Some(pid) = f.pid()
                && crashed
            {
                rss_peak = rss_peak.max(rss_kib(pid));
            }
            thread::sleep(Duration::from_millis(200));
        }
        stop_traffic.store(true, Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let (s, b) = (slow.finish(), bulk.finish());
        let rss_end = rss_kib(f.pid().unwrap());
        let rules = lab.appwall_rules();
        eprintln!(
            "soak: {reloads} reloads; Messenger {}/{} answered, benign {}/{} answered, unlisted {}/{}; \
             streams slow {} B, bulk {} B; UDP received {}; RSS {rss_start} KiB at start, \
             {rss_peak} KiB peak after the restart, {rss_end} KiB at the end",
            msn.answered.load(Relaxed),
            msn.tries.load(Relaxed),
            benign.answered.load(Relaxed),
            benign.tries.load(Relaxed),
            other.answered.load(Relaxed),
            other.tries.load(Relaxed),
            s.sent,
            b.sent,
            sink.count.load(Relaxed),
        );
        assert!(synned && flooded && crashed && reloads >= 15);
        assert!(msn.tries.load(Relaxed) >= 100, "Messenger attempts were made");
        assert_eq!(msn.answered.load(Relaxed), 0, "a Messenger attempt got through");
        // The unlisted host is untouched, listed benign traffic flows (new
        // connections wait only while the filter is down: fail-closed).
        assert_eq!(
            other.answered.load(Relaxed),
            other.tries.load(Relaxed),
            "unlisted host disturbed"
        );
        let (bt, ba) = (benign.tries.load(Relaxed), benign.answered.load(Relaxed));
        assert!(ba * 10 >= bt * 9, "benign new connections: {ba}/{bt} answered");
        for (name, r) in [("slow", &s), ("bulk", &b)] {
            assert!(
                r.error.is_none() && r.echoed == r.sent,
                "{name} stream cut: {r:?}"
            );
        }
        assert!(
            rss_end <= rss_peak + 1024 && rss_peak < 64 * 1024,
            "RSS {rss_start} -> {rss_peak} -> {rss_end} KiB"
        );
        let j = jumps(&rules);
        assert!(
            !j.is_empty() && j.iter().all(|(_, n)| *n == 1),
            "one rule set: {j:?}"
        );
        assert!(f.running(), "{}", f.log_text());
        stop(&mut f);
        assert!(lab.appwall_rules().is_empty(), "rules left after the stop");
    });
}
