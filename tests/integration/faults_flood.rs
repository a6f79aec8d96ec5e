//! Floods (root, one lab per test): small UDP packets past the queue in
//! both fail modes, new connections past `--max-flows`, and one-byte drips
//! over thousands of connections; memory stays bounded and blocked
//! connections stay blocked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use appwall::lab::{self, enter_netns};

use crate::support::LAB;
use crate::support::lab::{HOSTS, status_json, stop, wait_for, with_lab};
use crate::support::procs::rss_kib;
use crate::support::py::{PY_DRIP_MANY, PY_SINK, PY_SYN_FLOOD, Py};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, UdpSink, echo_addr, udp_flood};

cases![
    flood_small_udp_past_the_queue_fails_open_and_is_counted: LAB,
    flood_new_connections_past_max_flows_keeps_blocked_connections_blocked: LAB,
    flood_slow_drip_over_thousands_of_connections_has_bounded_memory: LAB,
];

fn flood_small_udp_past_the_queue_fails_open_and_is_counted() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let sink = UdpSink::start(&lab.server, 5002);
        let dst: SocketAddr = format!("{}:5002", lab::SERVER4).parse().unwrap();
        for (mode, extra) in [("fail-open", None), ("fail-closed", Some("--fail-closed"))] {
            // One socket is one flow, which would be handed to the kernel after
            // the inspection depth: an endless depth keeps every datagram queued.
            let mut args = vec![
                "--reset",
                "--queue-maxlen",
                "32",
                "--depth-bytes",
                "1000000000000",
            ];
            args.extend(extra);
            let mut f = lab.start(&h, &args, mode);
            let pid = f.pid().unwrap();
            // Warm up (allocations of the first packets), then the baseline.
            udp_flood(&lab.client, dst, Duration::from_millis(200), 2000);
            thread::sleep(Duration::from_millis(300));
            let rss0 = rss_kib(pid);
            let q0 = lab.kernel_queues()[0];
            let rule0 = lab.nfqueue_rule_packets();
            let got0 = sink.count.load(Relaxed);

            let peak = Arc::new(AtomicU64::new(rss0));
            let watching = Arc::new(AtomicBool::new(true));
            let watcher = {
                let (peak, watching) = (Arc::clone(&peak), Arc::clone(&watching));
                thread::spawn(move || {
                    while watching.load(Relaxed) {
                        peak.fetch_max(rss_kib(pid), Relaxed);
                        thread::sleep(Duration::from_millis(100));
                    }
                })
            };
            let sent = udp_flood(&lab.client, dst, Duration::from_secs(3), 3_000_000);
            watching.store(false, Relaxed);
            watcher.join().unwrap();
            // Nothing stays stuck in the queue.
            wait_for("an empty queue", Duration::from_secs(3), || {
                lab.kernel_queues().first().is_some_and(|q| q.waiting == 0)
            });
            thread::sleep(Duration::from_millis(300));
            assert!(f.running(), "{mode}: filter died:\n{}", f.log_text());
            let q1 = lab.kernel_queues()[0];
            let queued = q1.id_sequence - q0.id_sequence;
            let to_queue = lab.nfqueue_rule_packets() - rule0;
            let received = sink.count.load(Relaxed) - got0;
            let not_queued = to_queue.saturating_sub(queued);
            let rss1 = rss_kib(pid);
            let peak = peak.load(Relaxed);
            eprintln!(
                "UDP flood {mode}: sent {sent}, to the queue {to_queue}, queued {queued}, not queued {not_queued} \
             (kernel queue_dropped {}, socket drops {}), received {received}; RSS {rss0} -> peak {peak} -> {rss1} KiB",
                q1.queue_dropped - q0.queue_dropped,
                q1.user_dropped - q0.user_dropped
            );
            assert!(
                not_queued > sent / 10,
                "{mode}: the queue took nearly everything ({queued} of {to_queue}): no overflow to test"
            );
            // appwall reports the overflow itself (in fail-open mode the kernel
            // counts these passes nowhere else).
            wait_for("the overflow in the status file", Duration::from_secs(5), || {
                status_json(&f)["totals"]["queue_overflow"].as_u64().unwrap_or(0) >= not_queued * 9 / 10
            });
            if extra.is_none() {
                // The excess passed uninspected: more arrived than was judged
                // (the receiving socket itself may drop some).
                assert!(received > queued + not_queued / 4, "{mode}: received {received}");
                assert_eq!(q1.queue_dropped, q0.queue_dropped);
            } else {
                // The excess was dropped, and counted by the kernel.
                assert!(q1.queue_dropped - q0.queue_dropped > 0);
                assert!(received <= queued, "{mode}: {received} received, {queued} queued");
            }
            assert!(
                peak < rss0 + 8 * 1024,
                "{mode}: RSS grew from {rss0} to {peak} KiB"
            );
            // Still filtering.
            let st = status_json(&f);
            assert_eq!(st["queues"][0]["panics"], 0, "{st:#}");
            let (o, _) = lab::tcp_exchange(
                &lab.client,
                format!("{}:8080", lab::SERVER4).parse().unwrap(),
                MSNP,
                MSNP.len(),
                Duration::from_secs(2),
            );
            assert!(!o.passed(), "{mode}: MSN passed after the flood: {o:?}");
            stop(&mut f);
            lab.assert_clean();
        }
    });
}

fn flood_new_connections_past_max_flows_keeps_blocked_connections_blocked() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &["--max-flows", "200"], "syn");
        let pid = f.pid().unwrap();

        // An established connection, blocked by signature before the flood.
        let c = lab.client.clone();
        let (tx, rx) = mpsc::channel::<(u16, bool)>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let blocked = thread::spawn(move || {
            enter_netns(&c).unwrap();
            let mut s = TcpStream::connect_timeout(&echo_addr(), Duration::from_secs(3)).unwrap();
            let port = s.local_addr().unwrap().port();
            s.write_all(MSNP).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            let mut b = [0u8; 64];
            let answered = matches!(s.read(&mut b), Ok(n) if n > 0);
            tx.send((port, answered)).unwrap();
            // After the flood: still nothing comes back.
            let _ = go_rx.recv_timeout(Duration::from_secs(60));
            let _ = s.write_all(b"still there?\n");
            let answered = matches!(s.read(&mut b), Ok(n) if n > 0);
            tx.send((port, answered)).unwrap();
        });
        let (port, answered) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!answered, "MSNP was echoed");
        let marked = || lab.conntrack_of(port).contains("mark=1048576");
        assert!(marked(), "{}", lab.conntrack_of(port));
        thread::sleep(Duration::from_millis(300));
        let rss0 = rss_kib(pid);
        let q0 = lab.kernel_queues()[0].id_sequence;

        // 6000 new connections from the listed client: half to a server that
        // answers with resets (closed ports), half to an address that never
        // answers (SYN flood: the table's NEW list).
        let mut max_flows = 0u64;
        for target in [lab::SERVER4, "198.51.100.99"] {
            let mut py = Py::start(lab, &lab.client, PY_SYN_FLOOD, &[target, "3000"]);
            let started = Instant::now();
            let (dtx, drx) = mpsc::channel();
            let waiter = thread::spawn(move || {
                let l = py.expect("SENT", Duration::from_secs(30));
                let _ = dtx.send(());
                l
            });
            while drx.recv_timeout(Duration::from_millis(200)).is_err() {
                if let Some(n) = status_json(&f)["queues"][0]["flows"].as_u64() {
                    max_flows = max_flows.max(n);
                }
                assert!(started.elapsed() < Duration::from_secs(35));
            }
            waiter.join().unwrap();
        }
        thread::sleep(Duration::from_millis(1200));
        if let Some(n) = status_json(&f)["queues"][0]["flows"].as_u64() {
            max_flows = max_flows.max(n);
        }
        let queued = lab.kernel_queues()[0].id_sequence - q0;
        let rss1 = rss_kib(pid);
        go_tx.send(()).unwrap();
        let (_, answered) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        blocked.join().unwrap();
        eprintln!(
            "new-connection flood: {queued} packets queued, table peak {max_flows} of 200, RSS {rss0} -> {rss1} KiB"
        );
        // Bare SYNs stay in the kernel: the 3000 unanswered ones never reach
        // the queue; the 3000 resets of the closed ports do, each a new
        // connection to the table (first seen in the reply direction).
        assert!(queued >= 3000, "the flood reached the queue: {queued}");
        assert!(max_flows <= 200, "table over its cap: {max_flows}");
        assert!(rss1 < rss0 + 4 * 1024, "RSS {rss0} -> {rss1} KiB");
        assert!(!answered, "the blocked connection came back to life");
        assert!(marked(), "connmark lost: {}", lab.conntrack_of(port));
        assert!(f.running());
        stop(&mut f);
    });
}

fn flood_slow_drip_over_thousands_of_connections_has_bounded_memory() {
    const CONNS: u64 = 3000;
    const ROUNDS: u64 = 4;
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let mut f = lab.start(&h, &[], "drip");
        let pid = f.pid().unwrap();
        let mut sink = Py::start(lab, &lab.server, PY_SINK, &["5003"]);
        sink.expect("LISTENING", Duration::from_secs(10));
        thread::sleep(Duration::from_millis(300));
        let rss0 = rss_kib(pid);
        let q0 = lab.kernel_queues()[0].id_sequence;
        let started = Instant::now();
        let (conns, rounds) = (CONNS.to_string(), ROUNDS.to_string());
        let mut drip = Py::start(
            lab,
            &lab.client,
            PY_DRIP_MANY,
            &[lab::SERVER4, "5003", &conns, &rounds],
        );
        drip.expect("CONNECTED", Duration::from_secs(30));
        // Bare SYNs stay in the kernel: a connection reaches the table with
        // its first segment, so the reference is taken after the second round.
        drip.expect("ROUND 2", Duration::from_secs(30));
        let rss_connected = rss_kib(pid);
        drip.expect("DONE", Duration::from_secs(30));
        let want = format!("TOTAL {}", CONNS * ROUNDS);
        sink.expect(&want, Duration::from_secs(15));
        thread::sleep(Duration::from_millis(1200));
        let rss1 = rss_kib(pid);
        let st = status_json(&f);
        let flows = st["queues"][0]["flows"].as_u64().unwrap_or(0);
        let queued = lab.kernel_queues()[0].id_sequence - q0;
        let per_conn = (rss1.saturating_sub(rss0) * 1024) / CONNS;
        eprintln!(
            "slow drip: {CONNS} connections x {ROUNDS} one-byte segments in {:?}; {queued} packets queued; \
         {flows} connections tracked; RSS {rss0} -> {rss_connected} (two rounds) -> {rss1} KiB: {per_conn} bytes per connection",
            started.elapsed()
        );
        assert!(flows >= CONNS, "tracked {flows}");
        // Every one-byte segment is queued (segments without payload, the
        // opening SYN included, are not).
        assert!(queued >= CONNS * ROUNDS, "queued {queued}");
        // Documented bound (README, "Security and failure behaviour"): 4 KiB per tracked connection,
        // however many one-byte segments it sends.
        assert!(per_conn < 4096, "{per_conn} bytes per connection");
        assert!(
            rss1 <= rss_connected + 2048,
            "RSS grew with the drip itself: {rss_connected} -> {rss1} KiB"
        );
        assert!(f.running());
        drop(drip);
        drop(sink);
        stop(&mut f);
    });
}
