//! The cost of a QUIC connection attempt: decrypting and parsing one real
//! client Initial (aioquic, 1200 bytes), and the whole path of a UDP flow's
//! first datagram through `Tracker::judge` (parse, new connection, host
//! lookup, Initial decryption, server-name rules) against the same flow
//! carrying a datagram that is not QUIC and a host that is not listed.
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appwall::engine::quic::{QuicHello, QuicStatus, client_initial};
use appwall::engine::{Engine, EngineConfig};
use appwall::packet::LinkType;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use appwall::sample::udp_packet;
use appwall::source::Tracker;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const INITIAL_HEX: &str = include_str!("../src/engine/quic/testdata/aioquic_v1.hex");

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0))
        .collect()
}

/// The shipped library plus an app naming the Initial's server name, with
/// 192.0.2.10 listed for it.
fn engine() -> Engine {
    let app = "name = \"site\"\ndescription = \"bench\"\ndefault = false\n[[rule]]\nid = \"n\"\nmatch = [{ field = \"host\", domains = [\".example.net\"] }]\n";
    let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), app.to_string())]).unwrap();
    let lib = AppLibrary::embedded().unwrap().overlay(lib).unwrap();
    let hosts = HostsFile::parse(Path::new("hosts"), "192.0.2.10 site\n").unwrap();
    Engine::new(Policy::new(lib, &hosts, None).unwrap(), EngineConfig::default()).unwrap()
}

fn initial(c: &mut Criterion) {
    let d = unhex(INITIAL_HEX.lines().next().unwrap_or(""));
    assert_eq!(d.len(), 1200);
    let mut g = c.benchmark_group("quic/initial");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("decrypt", |b| b.iter(|| black_box(client_initial(black_box(&d)))));
    g.bench_function("decrypt_and_parse_hello", |b| {
        b.iter(|| {
            let s = QuicHello::new().push_datagram(black_box(&d));
            assert!(matches!(s, QuicStatus::Done(_)));
            black_box(s)
        })
    });
    g.finish();
}

/// Each iteration judges the first datagram of `n` new flows (fresh source
/// ports), from an empty table.
fn first_datagram(c: &mut Criterion) {
    let e = engine();
    let quic = unhex(INITIAL_HEX.lines().next().unwrap_or(""));
    let mut dns =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04quic\x07example\x03org\x00\x00\x01\x00\x01"
            .to_vec();
    dns.resize(quic.len(), 0);
    let server: IpAddr = "198.51.100.1".parse().unwrap();
    let n: u16 = 1000;
    let flows = |client: &str, payload: &[u8]| -> Vec<Vec<u8>> {
        let c: IpAddr = client.parse().unwrap();
        (0..n)
            .map(|i| udp_packet((c, 20000 + i), (server, 443), payload))
            .collect()
    };
    let cases = [
        ("listed_quic_initial", flows("192.0.2.10", &quic)),
        ("listed_not_quic", flows("192.0.2.10", &dns)),
        ("unlisted_quic_initial", flows("203.0.113.9", &quic)),
    ];
    let mut g = c.benchmark_group("quic/first_datagram");
    g.throughput(Throughput::Elements(u64::from(n)));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (name, packets) in &cases {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || Tracker::new(4096, u64::MAX),
                |mut t| {
                    for (i, p) in packets.iter().enumerate() {
                        let d = t
                            .judge(&e, LinkType::RawIp, p, i as u64)
                            .map(|j| j.decision.verdict);
                        black_box(d.ok());
                    }
                    t
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, initial, first_datagram);
criterion_main!(benches);
