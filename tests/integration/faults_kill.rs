//! kill -9 under steady traffic, in both fail modes, then a restart: what
//! keeps flowing, what stops, and that the restart replaces the stale
//! install exactly (root, one lab per test).

use std::thread;
use std::time::{Duration, Instant};

use crate::support::LAB;
use crate::support::lab::{HOSTS, jumps, stop, with_lab};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, Probe, Prober, Stream, echo_addr, echoed};

cases![
    fault_kill9_fail_open_under_traffic_and_restart_without_duplicates: LAB,
    fault_kill9_fail_closed_stops_then_recovers_after_restart: LAB,
];

fn fault_kill9_fail_open_under_traffic_and_restart_without_duplicates() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let h = lab.hosts(HOSTS);
        // Sets too, so a restart must also re-adopt them.
        let args = ["--reset", "--ipset-threshold", "0"];
        let mut a = lab.start(&h, &args, "a");
        let installed = lab.appwall_rules();
        let one_each = jumps(&installed);
        assert!(
            one_each.len() >= 4 && one_each.iter().all(|(_, n)| *n == 1),
            "{one_each:?}"
        );
        assert!(
            installed.iter().any(|l| l.starts_with("ipset: add appwall4-")),
            "{installed:#?}"
        );

        // A connection still under inspection (every packet queued), one
        // settled in the kernel (clean connmark), and a new connection every 100 ms.
        let mut slow = Stream::start(&lab.client, echo_addr(), 0, Duration::from_millis(25));
        let mut bulk = Stream::start(&lab.client, echo_addr(), 20_000, Duration::from_millis(25));
        let mut probes = Prober::start(&lab.client, echo_addr());
        thread::sleep(Duration::from_millis(1200));
        assert!(
            !lab.conntrack_of(slow.port()).contains("mark=2097152"),
            "the slow stream must still be inspected"
        );
        assert!(
            lab.conntrack_of(bulk.port()).contains("mark=2097152"),
            "the bulk stream must be settled clean: {}",
            lab.conntrack_of(bulk.port())
        );

        let killed = Instant::now();
        a.kill9().unwrap();
        thread::sleep(Duration::from_millis(2000));
        // Fail-open while stopped: even MSN passes uninspected (the port rules stay).
        assert!(echoed(&lab.client, MSNP, Duration::from_secs(3)));
        let restarted = Instant::now();
        let mut b = lab.start(&h, &args, "b");
        assert!(b.log_text().contains("replaced"), "{}", b.log_text());
        let after = lab.appwall_rules();
        assert_eq!(
            after, installed,
            "the restart must leave exactly the first install"
        );
        thread::sleep(Duration::from_millis(1500));
        assert!(
            !echoed(&lab.client, MSNP, Duration::from_secs(2)),
            "filtering again"
        );
        let end = Instant::now();

        let probes = probes.finish();
        let (s, k) = (slow.finish(), bulk.finish());
        for (name, st, r) in [("slow", &slow, &s), ("bulk", &bulk, &k)] {
            assert!(r.error.is_none() && r.echoed == r.sent, "{name}: {r:?}");
            // Packets queued at the moment of the kill are lost with the socket
            // and retransmitted: one retransmission timeout at most.
            let gap = st.max_gap(killed - Duration::from_millis(500), end);
            assert!(gap < Duration::from_millis(1500), "{name} stalled {gap:?}");
            assert!(st.bytes_between(killed + Duration::from_millis(500), restarted) > 0);
        }
        let failed: Vec<&Probe> = probes.iter().filter(|p| !p.ok).collect();
        assert!(probes.len() >= 25, "{} probes", probes.len());
        let during = probes
            .iter()
            .filter(|p| p.at >= killed && p.at < restarted)
            .count();
        assert!(during >= 10, "{during} probes while no filter ran");
        assert!(failed.is_empty(), "new connections failed: {failed:?}");
        eprintln!(
            "kill -9 fail-open: slow stream {} B, max gap {:?}; bulk {} B, max gap {:?}; {} probes, slowest {:?}",
            s.sent,
            slow.max_gap(killed - Duration::from_millis(500), end),
            k.sent,
            bulk.max_gap(killed - Duration::from_millis(500), end),
            probes.len(),
            probes.iter().map(|p| p.took).max().unwrap_or_default()
        );
        stop(&mut b);
    });
}

fn fault_kill9_fail_closed_stops_then_recovers_after_restart() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let h = lab.hosts(HOSTS);
        let args = ["--fail-closed"];
        let mut a = lab.start(&h, &args, "a");
        let installed = lab.appwall_rules();
        let mut slow = Stream::start(&lab.client, echo_addr(), 0, Duration::from_millis(25));
        let mut bulk = Stream::start(&lab.client, echo_addr(), 20_000, Duration::from_millis(25));
        thread::sleep(Duration::from_millis(1000));

        let killed = Instant::now();
        a.kill9().unwrap();
        // New connections fail while no filter listens.
        assert!(!echoed(&lab.client, b"hello\n", Duration::from_millis(1500)));
        assert!(
            echoed(&lab.other, b"hello\n", Duration::from_secs(3)),
            "not listed: untouched"
        );
        thread::sleep(Duration::from_millis(500));
        let restarted = Instant::now();
        let mut b = lab.start(&h, &args, "b");
        assert!(b.log_text().contains("replaced"), "{}", b.log_text());
        assert_eq!(lab.appwall_rules(), installed, "no duplicates after the restart");
        assert!(
            echoed(&lab.client, b"hello\n", Duration::from_secs(3)),
            "new connections again"
        );
        thread::sleep(Duration::from_millis(1500));

        let (s, k) = (slow.finish(), bulk.finish());
        let recovered = Instant::now();
        // The inspected connection stopped while the filter was down...
        let quiet = slow.bytes_between(killed + Duration::from_millis(300), restarted);
        assert_eq!(quiet, 0, "fail-closed let {quiet} bytes through");
        // ...and recovered whole after the restart (TCP retransmitted the rest).
        assert!(s.error.is_none() && s.echoed == s.sent, "slow: {s:?}");
        assert!(slow.bytes_between(restarted, recovered) > 0);
        // A connection already settled clean lives in the kernel: it never stopped.
        assert!(k.error.is_none() && k.echoed == k.sent, "bulk: {k:?}");
        let gap = bulk.max_gap(killed, restarted);
        assert!(
            gap < Duration::from_millis(500),
            "settled connection stalled {gap:?}"
        );
        eprintln!(
            "kill -9 fail-closed: inspected stream silent for {:?}, {} B delivered whole; settled stream max gap {gap:?}",
            slow.max_gap(killed, recovered),
            s.sent
        );
        stop(&mut b);
    });
}
