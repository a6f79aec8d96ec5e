//! Parsing configuration at scale: a rule file with 1k, 10k and 100k
//! signatures (linear time: the line of each signature is a binary search
//! over line starts computed once), and a hosts file of 100k lines.
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appwall::policy::{AppLibrary, HostsFile};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A rule file with `n` distinct `anywhere` signatures.
fn many_signatures(n: usize) -> String {
    let mut t = String::from("name = \"big\"\ndescription = \"generated\"\n");
    for i in 0..n {
        t.push_str(&format!(
            "[[signature]]\nid = \"s{i}\"\nscope = \"anywhere\"\ntext = \"sig-{i}\"\n"
        ));
    }
    t
}

fn rule_files(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_rules");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for n in [1_000usize, 10_000, 100_000] {
        let files = vec![(PathBuf::from("rules/big.toml"), many_signatures(n))];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, files| {
            b.iter(|| AppLibrary::from_texts(black_box(files)).expect("valid"))
        });
    }
    g.finish();
}

fn hosts_files(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_hosts");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let n = 100_000u32;
    let text: String = (0..n)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            format!("10.{a}.{b}.{c} msn,yahoo # desk {i}\n")
        })
        .collect();
    g.throughput(Throughput::Elements(u64::from(n)));
    g.bench_function("100000_lines", |b| {
        b.iter(|| HostsFile::parse(Path::new("hosts"), black_box(&text)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, rule_files, hosts_files);
criterion_main!(benches);
