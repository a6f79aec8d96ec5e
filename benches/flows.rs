//! Connection-table memory and flood behaviour (issue 4, item 5).
//!
//! Not a criterion bench: it measures resident memory, which criterion does
//! not. Run with `cargo bench --bench flows`. It prints:
//! - the size of one connection's state and the table's resident memory per
//!   connection at 100k and 1M connections (each connection opened with a SYN
//!   and one payload segment in each direction, so its state is fully built);
//! - a SYN flood of 10x the capacity: the table stays at its cap, memory stays
//!   flat, established connections keep their state, and their verdict time is
//!   compared with the same packets without the flood (ratio in one run).
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use appwall::engine::{ConnState, Connection, Engine, EngineConfig};
use appwall::flow::FlowTable;
use appwall::packet::PacketView;
use appwall::policy::{AppLibrary, Policy};
use appwall::sample::TcpFlowBuilder;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn engine() -> Engine {
    Engine::new(
        Policy::everyone(AppLibrary::embedded().unwrap()),
        EngineConfig::default(),
    )
    .unwrap()
}

/// Packets of connection `i`: SYN, one request segment, one reply segment.
fn conn_packets(i: u32) -> Vec<Vec<u8>> {
    // 32768 source ports per client address, clients 192.0.2.0 upwards.
    let c = IpAddr::V4(Ipv4Addr::from(0xc000_0200u32 + (i >> 15)));
    let s = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let mut b = TcpFlowBuilder::new((c, 1024 + (i & 0x7fff) as u16), (s, 80));
    b.handshake = true;
    let mut p = b.packets(&[
        (true, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (false, b"HTTP/1.1 200 OK\r\n"),
    ]);
    p.truncate(5); // SYN, SYN-ACK, ACK, request, reply: no FIN, so it stays open
    p
}

fn fill(e: &Engine, n: u32) -> (FlowTable<ConnState>, u64) {
    let before = rss_bytes();
    let mut t = FlowTable::new(n as usize, u64::MAX);
    for i in 0..n {
        for p in conn_packets(i) {
            let v = PacketView::from_ip(&p).unwrap();
            let f = t.get_or_insert(&v, i as u64);
            black_box(e.judge(&v, f));
        }
    }
    let after = rss_bytes();
    (t, after.saturating_sub(before))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("flows: bench");
        return;
    }
    let e = engine();
    println!(
        "size_of::<Connection>() = {} bytes",
        std::mem::size_of::<Connection>()
    );
    for n in [100_000u32, 1_000_000] {
        let (t, grew) = fill(&e, n);
        println!(
            "{n:>8} connections: table holds {}, resident memory grew {:.1} MiB = {} bytes per connection",
            t.len(),
            grew as f64 / (1 << 20) as f64,
            grew / n as u64
        );
        drop(t);
    }

    // SYN flood against a capped table.
    let cap = 50_000usize;
    let mut t = FlowTable::new(cap, u64::MAX);
    let established: Vec<Vec<Vec<u8>>> = (0..1000).map(|i| conn_packets(4_000_000 + i)).collect();
    for (k, conn) in established.iter().enumerate() {
        for p in &conn[..4] {
            let v = PacketView::from_ip(p).unwrap();
            e.judge(&v, t.get_or_insert(&v, k as u64));
        }
    }
    // The packet each established connection sends during the flood.
    let probe: Vec<&Vec<u8>> = established.iter().map(|c| &c[4]).collect();
    let time_probes = |t: &mut FlowTable<ConnState>, now: u64| {
        let start = Instant::now();
        for p in &probe {
            let v = PacketView::from_ip(p).unwrap();
            black_box(e.judge(&v, t.get_or_insert(&v, now)));
        }
        start.elapsed().as_nanos() as f64 / probe.len() as f64
    };
    let quiet = time_probes(&mut t, 10_000);
    let rss0 = rss_bytes();
    let mut flood_ns = Vec::new();
    let mut max_len = 0;
    for round in 0..10u32 {
        for i in 0..cap as u32 {
            let syn = &conn_packets(round * cap as u32 + i)[0];
            let v = PacketView::from_ip(syn).unwrap();
            e.judge(&v, t.get_or_insert(&v, 20_000 + (round * cap as u32 + i) as u64));
            max_len = max_len.max(t.len());
        }
        // Established connections stay active during the flood.
        flood_ns.push(time_probes(&mut t, 30_000_000 + round as u64));
    }
    let rss1 = rss_bytes();
    let during = flood_ns.iter().sum::<f64>() / flood_ns.len() as f64;
    let kept = established
        .iter()
        .filter(|c| {
            let v = PacketView::from_ip(&c[4]).unwrap();
            t.get_or_insert(&v, u64::MAX / 2).packets >= 5
        })
        .count();
    println!(
        "SYN flood of {} new connections against cap {cap}: table max {max_len}, memory {:+.1} MiB during the flood, {kept}/1000 established connections kept their state",
        10 * cap,
        (rss1 as f64 - rss0 as f64) / (1 << 20) as f64
    );
    println!(
        "verdict for established connections: {quiet:.0} ns quiet, {during:.0} ns during the flood (ratio {:.2})",
        during / quiet
    );
    assert!(max_len <= cap);
}
