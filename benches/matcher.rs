//! `Matcher::find_stream` on full-size payloads, and the aho-corasick
//! configurations it could use, compared on the same stream literals and
//! payloads (text, binary, and the benign capture's large payloads).
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use appwall::bench::{Mix, synthetic};
use appwall::engine::matcher::Matcher;
use appwall::packet::PacketView;
use appwall::policy::{AppSet, Scope};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Full-size payloads of one kind from the synthetic full-size mix.
fn payloads(text: bool) -> Vec<Vec<u8>> {
    let t = synthetic(Mix::Full, 8);
    t.frames()
        .filter_map(|(l, b)| PacketView::from_link(l, b).ok())
        .filter(|p| p.payload.len() == 1460)
        .filter(|p| p.payload.iter().take(64).all(|b| b.is_ascii()) == text)
        .map(|p| p.payload.to_vec())
        .take(64)
        .collect()
}

/// Large payloads of the benign capture, when present.
fn capture_payloads() -> Option<Vec<Vec<u8>>> {
    let p = common::capture("benign_mixed_1kxun_ndpi.pcap")?;
    let t = appwall::bench::Trace::load(&[p]).ok()?;
    Some(
        t.frames()
            .filter_map(|(l, b)| PacketView::from_link(l, b).ok())
            .filter(|p| p.payload.len() >= 1000)
            .map(|p| p.payload.to_vec())
            .take(512)
            .collect(),
    )
}

/// The stream literals as the matcher builds them: (case-sensitive, case-insensitive).
fn literals() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let policy = common::everyone_all_apps();
    let (mut cs, mut ci) = (Vec::new(), Vec::new());
    for app in policy.library().apps() {
        for s in &app.signatures {
            let lit = match s.scope {
                Scope::Anywhere => s.bytes.clone(),
                Scope::LineStart => [b"\n".as_slice(), &s.bytes].concat(),
                _ => continue,
            };
            if s.nocase { ci.push(lit) } else { cs.push(lit) }
        }
    }
    (cs, ci)
}

type Config = (&'static str, fn(&[Vec<u8>], bool) -> AhoCorasick);

fn build(kind: Option<AhoCorasickKind>, prefilter: bool, pats: &[Vec<u8>], nocase: bool) -> AhoCorasick {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .ascii_case_insensitive(nocase)
        .kind(kind)
        .prefilter(prefilter)
        .build(pats)
        .unwrap()
}

const CONFIGS: &[Config] = &[
    ("dfa_prefilter", |p, n| {
        build(Some(AhoCorasickKind::DFA), true, p, n)
    }),
    ("dfa_no_prefilter", |p, n| {
        build(Some(AhoCorasickKind::DFA), false, p, n)
    }),
    ("contiguous_nfa_prefilter", |p, n| {
        build(Some(AhoCorasickKind::ContiguousNFA), true, p, n)
    }),
    ("noncontiguous_nfa_prefilter", |p, n| {
        build(Some(AhoCorasickKind::NoncontiguousNFA), true, p, n)
    }),
    ("auto_kind_prefilter", |p, n| build(None, true, p, n)),
];

fn run(c: &mut Criterion, label: &str, data: &[Vec<u8>]) {
    let bytes: usize = data.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group(format!("matcher/{label}"));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let policy = common::everyone_all_apps();
    let m = Matcher::build(&policy).unwrap();
    let apps: AppSet = u64::MAX;
    g.bench_function("Matcher::find_stream", |b| {
        b.iter(|| {
            data.iter()
                .filter(|d| m.find_stream(black_box(d), apps).is_some())
                .count()
        })
    });
    let (cs, ci) = literals();
    for (name, make) in CONFIGS {
        // An empty set is skipped, as the matcher does (an automaton with no
        // pattern has no prefilter and walks every byte).
        let sets: Vec<AhoCorasick> = [(&cs, false), (&ci, true)]
            .into_iter()
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, nocase)| make(p, nocase))
            .collect();
        g.bench_function(*name, |b| {
            b.iter(|| {
                data.iter()
                    .filter(|d| sets.iter().any(|s| s.find(black_box(d.as_slice())).is_some()))
                    .count()
            })
        });
    }
    // Reference: one literal with memchr's SIMD searcher.
    let finder = memchr::memmem::Finder::new(b"gateway.dll");
    g.bench_function("memmem_one_literal", |b| {
        b.iter(|| {
            data.iter()
                .filter(|d| finder.find(black_box(d)).is_some())
                .count()
        })
    });
    g.finish();
}

fn matcher(c: &mut Criterion) {
    run(c, "text_1460", &payloads(true));
    run(c, "binary_1460", &payloads(false));
    if let Some(p) = capture_payloads() {
        run(c, "benign_capture_large", &p);
    }
}

criterion_group!(benches, matcher);
criterion_main!(benches);
