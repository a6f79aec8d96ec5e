//! `HostTable::lookup` with 1, 1k, 100k and 1M listed networks.

// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use appwall::policy::{HostRule, HostTable};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ipnet::{IpNet, Ipv4Net};

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("host_lookup");
    const PROBES: usize = 4096;
    g.throughput(Throughput::Elements(PROBES as u64));
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for n in [1usize, 1_000, 100_000, 1_000_000] {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        // Random even /32s: never adjacent, so no two ranges merge.
        let nets: Vec<(IpNet, HostRule)> = (0..n)
            .map(|_| {
                let a = Ipv4Addr::from(xorshift(&mut rng) as u32 & !1);
                let net = IpNet::V4(Ipv4Net::new(a, 32).unwrap());
                (
                    net,
                    HostRule {
                        apps: 1,
                        ports: Vec::new(),
                    },
                )
            })
            .collect();
        let table = HostTable::build(&nets);
        // Half listed addresses, half random (mostly misses).
        let probes: Vec<IpAddr> = (0..PROBES)
            .map(|i| {
                if i % 2 == 0 {
                    nets[xorshift(&mut rng) as usize % n].0.addr()
                } else {
                    IpAddr::V4(Ipv4Addr::from(xorshift(&mut rng) as u32))
                }
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &probes, |b, probes| {
            b.iter(|| {
                let mut hits = 0u32;
                for &a in probes {
                    hits += u32::from(table.lookup(black_box(a)).is_some());
                }
                hits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
