//! Rule compilation (`Engine::new`): the shipped library, and one 100 times
//! larger generated in memory (every signature repeated with a distinct
//! suffix; `stream-start` signatures kept once, as a matcher holds at most 64).
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::path::PathBuf;
use std::time::Duration;

use appwall::engine::{Engine, EngineConfig};
use appwall::policy::library::EMBEDDED;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// The shipped rule files with each signature repeated `times` times.
pub fn scaled_library(times: usize) -> AppLibrary {
    let files: Vec<(PathBuf, String)> = EMBEDDED
        .iter()
        .map(|(name, text)| {
            let mut doc: toml::Table = toml::from_str(text).expect("shipped rules parse");
            if let Some(toml::Value::Array(sigs)) = doc.remove("signature") {
                let mut out = Vec::new();
                for k in 0..times {
                    for s in &sigs {
                        if let Some(v) = variant(s, k) {
                            out.push(v);
                        }
                    }
                }
                doc.insert("signature".into(), toml::Value::Array(out));
            }
            (
                PathBuf::from("rules").join(name),
                toml::to_string(&doc).expect("serialise"),
            )
        })
        .collect();
    AppLibrary::from_texts(&files).expect("generated library is valid")
}

fn variant(sig: &toml::Value, k: usize) -> Option<toml::Value> {
    if k == 0 {
        return Some(sig.clone());
    }
    let mut t = sig.as_table()?.clone();
    let scope = t.get("scope")?.as_str()?.to_string();
    if scope == "stream-start" {
        return None;
    }
    let id = format!("{}-{k}", t.get("id")?.as_str()?);
    t.insert("id".into(), id.into());
    if let Some(text) = t.get("text").and_then(|v| v.as_str()) {
        if text.is_empty() || text.len() + 2 > 64 {
            return None;
        }
        t.insert("text".into(), format!("{text}{k:02}").into());
    } else if let Some(hex) = t.get("hex").and_then(|v| v.as_str()) {
        t.insert("hex".into(), format!("{hex} {k:02x}").into());
    }
    Some(toml::Value::Table(t))
}

fn all_apps(library: AppLibrary) -> Policy {
    let hosts = HostsFile::parse(std::path::Path::new("bench"), "0.0.0.0/0 all\n::/0 all\n").unwrap();
    Policy::new(library, &hosts, None).unwrap()
}

fn compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for (name, lib) in [
        ("shipped", AppLibrary::embedded().unwrap()),
        ("shipped_x100", scaled_library(100)),
    ] {
        eprintln!("note: {name}: {} signatures", lib.signature_count());
        let policy = all_apps(lib);
        g.bench_function(name, |b| {
            b.iter_batched(
                || policy.clone(),
                |p| Engine::new(p, EngineConfig::default()).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
