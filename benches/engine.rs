//! The verdict engine on realistic mixes, through the live filter's path
//! (`appwall::bench::replay`: parse, connection lookup, `Engine::judge`),
//! against a parse + lookup baseline; and the per-packet cost as the hosts
//! file grows from everyone-listed to a million entries.
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use appwall::bench::{Counts, Mix, Stage, Trace, replay, synthetic};
use appwall::engine::Engine;
use appwall::source::Tracker;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const TIMEOUT_NS: u64 = 3_600_000_000_000;

/// One replay from an empty table ("first pass": every connection new);
/// building and dropping the table stay outside the timing.
fn first_pass(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    engine: &Engine,
    trace: &Trace,
    stage: Stage,
) {
    let cap = (trace.connections() * 2).max(1024);
    c.bench_function(id, |b| {
        b.iter_batched(
            || Tracker::new(cap, TIMEOUT_NS),
            |mut table| {
                let mut counts = Counts::default();
                replay(engine, trace, &mut table, stage, 0, &mut counts);
                black_box(counts);
                table
            },
            BatchSize::LargeInput,
        )
    });
}

fn mixes(c: &mut Criterion) {
    let engine = common::engine(common::everyone_all_apps());
    let (name, benign) = common::benign();
    let traces = [
        (name, benign),
        ("msn".to_string(), synthetic(Mix::Msn, 64)),
        ("small_packets".to_string(), synthetic(Mix::Small, 64)),
        ("full_size".to_string(), synthetic(Mix::Full, 16)),
        ("web_10k_connections".to_string(), synthetic(Mix::Web, 10_000)),
    ];
    for (name, trace) in &traces {
        let mut g = c.benchmark_group(format!("engine/{name}"));
        g.throughput(Throughput::Elements(trace.len() as u64));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        first_pass(&mut g, "baseline_parse_lookup", &engine, trace, Stage::Baseline);
        first_pass(&mut g, "judge_first_pass", &engine, trace, Stage::Engine);
        g.finish();
    }
}

fn host_counts(c: &mut Criterion) {
    let (name, trace) = common::benign();
    let mut g = c.benchmark_group(format!("engine_hosts/{name}"));
    g.throughput(Throughput::Elements(trace.len() as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let everyone = common::engine(common::everyone_all_apps());
    first_pass(&mut g, "everyone_1_entry", &everyone, &trace, Stage::Engine);
    for n in [1_000usize, 100_000, 1_000_000] {
        let e = common::engine(common::listed_hosts(&trace, n));
        first_pass(&mut g, &format!("listed_{n}"), &e, &trace, Stage::Engine);
    }
    g.finish();
}

criterion_group!(benches, mixes, host_counts);
criterion_main!(benches);
