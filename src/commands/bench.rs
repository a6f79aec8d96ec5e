//! `appwall bench`: verdict throughput of this machine, measured without root
//! by replaying captures (or a synthetic mix) in memory through the live
//! filter's own path. The measuring itself lives in [`crate::bench`].

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::bench::{self, BenchError, Counts, Measurement, Mix, Mode, Options, Stage, Trace};
use crate::cli::{BenchArgs, MixArg};
use crate::commands::{AppError, build_engine, engine_config, load_policy};
use crate::engine::{Engine, EngineConfig};
use crate::policy::{HostsFile, Policy};

/// Without `--hosts`: every address listed, with `--default-apps` or every app.
fn bench_policy(args: &BenchArgs) -> Result<(Policy, String), AppError> {
    if args.policy.hosts.is_some() {
        let p = load_policy(&args.policy, false)?;
        let name = p
            .hosts_path()
            .map_or_else(String::new, |h| h.display().to_string());
        return Ok((p, format!("hosts file {name}")));
    }
    let library = crate::policy::load::load_library(&crate::commands::sources(&args.policy))?;
    let apps = args
        .policy
        .default_apps
        .as_ref()
        .map_or_else(|| "all".to_string(), |v| v.join(","));
    let text = format!("0.0.0.0/0 {apps}\n::/0 {apps}\n");
    let hosts = HostsFile::parse(Path::new("(bench: every address)"), &text)?;
    Ok((
        Policy::new(library, &hosts, None)?,
        "every address listed".to_string(),
    ))
}

/// One table row.
#[derive(Serialize)]
struct Row {
    label: &'static str,
    depth: &'static str,
    #[serde(flatten)]
    m: Measurement,
    /// Baseline packets/s over this row's, medians of the same thread count.
    cost_vs_baseline: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    traffic: &'a str,
    packets: usize,
    bytes: u64,
    connections: usize,
    skipped_frames: u64,
    policy: &'a str,
    apps: Vec<&'a str>,
    signatures: usize,
    depth_bytes: u64,
    depth_packets: u32,
    table_capacity: usize,
    rounds: u32,
    seconds: f64,
    warmup_seconds: f64,
    cores: usize,
    cpu: &'a str,
    verdicts_first_pass: Counts,
    verdicts_steady: Counts,
    rows: &'a [Row],
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// 2.13M, 950.0k, 12.4G: three significant digits are all timing noise allows.
fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.2}{unit}")
}

fn verdict_line(c: &Counts) -> String {
    format!(
        "{} = accept {} (clean {}, inspecting {}, not-listed {}, ports-only {}, unparsable {}) + drop {} (signature {}, evasion {}, port {})",
        c.packets,
        c.accept,
        c.clean,
        c.inspecting,
        c.not_listed,
        c.ports_only,
        c.unparsable,
        c.drop,
        c.signature,
        c.evasion,
        c.port
    )
}

/// Runs `appwall bench`.
pub fn run(args: &BenchArgs) -> Result<ExitCode, AppError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(BenchError::Option("--seconds must be above 0 and at most 3600".into()).into());
    }
    let (policy, policy_text) = bench_policy(args)?;
    let config = engine_config(&args.engine);
    let deep = EngineConfig {
        depth_bytes: u64::MAX,
        depth_packets: u32::MAX,
        ..config
    };
    let engine = build_engine(policy.clone(), config)?;
    let no_depth = if args.no_depth {
        Some(Engine::new(policy, deep)?)
    } else {
        None
    };
    let trace = if args.captures.is_empty() {
        let mix = match args.mix {
            MixArg::Mixed => Mix::Mixed,
            MixArg::Web => Mix::Web,
            MixArg::Msn => Mix::Msn,
            MixArg::Small => Mix::Small,
            MixArg::Full => Mix::Full,
        };
        bench::synthetic(mix, args.connections as usize)
    } else {
        Trace::load(&args.captures)?
    };
    for w in trace.warnings() {
        eprintln!("appwall: warning: {w}");
    }
    let round_time = Duration::from_secs_f64(args.seconds);
    let opts = Options {
        rounds: args.rounds,
        round_time,
        warmup: round_time.min(Duration::from_millis(200)),
        // Room for every connection of the trace: eviction is not measured here.
        table_capacity: args
            .engine
            .max_flows
            .clamp(1, (trace.connections() * 2).max(1024)),
        flow_timeout_ns: args.engine.flow_timeout.saturating_mul(1_000_000_000),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.map_or(cores, usize::from);
    let mut thread_counts = vec![1];
    if threads != 1 {
        thread_counts.push(threads);
    }
    let (first, steady) = bench::verdict_mix(&engine, &trace, &opts);

    let progress = !args.json && std::io::stderr().is_terminal();
    let mut rows: Vec<Row> = Vec::new();
    for &t in &thread_counts {
        let mut plan: Vec<(&'static str, &'static str, &Engine, Stage, Mode)> = vec![
            (
                "baseline: parse + connection lookup",
                "configured",
                &engine,
                Stage::Baseline,
                Mode::FirstPass,
            ),
            (
                "engine, first pass",
                "configured",
                &engine,
                Stage::Engine,
                Mode::FirstPass,
            ),
            (
                "engine, steady (table kept)",
                "configured",
                &engine,
                Stage::Engine,
                Mode::Steady,
            ),
        ];
        if let Some(e) = &no_depth {
            plan.push((
                "engine, first pass, no depth",
                "none",
                e,
                Stage::Engine,
                Mode::FirstPass,
            ));
        }
        let mut base = 0.0;
        for (label, depth, e, stage, mode) in plan {
            if progress {
                eprintln!("appwall bench: {label}, {t} thread(s)...");
            }
            let m = bench::measure(e, &trace, stage, mode, t, &opts)?;
            if stage == Stage::Baseline {
                base = m.packets_per_s.median;
            }
            let cost = if m.packets_per_s.median > 0.0 {
                base / m.packets_per_s.median
            } else {
                0.0
            };
            rows.push(Row {
                label,
                depth,
                m,
                cost_vs_baseline: cost,
            });
        }
    }

    let lib = engine.policy().library();
    let cpu = cpu_model();
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = Report {
            traffic: trace.name(),
            packets: trace.len(),
            bytes: trace.bytes(),
            connections: trace.connections(),
            skipped_frames: trace.skipped(),
            policy: &policy_text,
            apps: lib.apps().iter().map(|a| a.name.as_str()).collect(),
            signatures: lib.signature_count(),
            depth_bytes: config.depth_bytes,
            depth_packets: config.depth_packets,
            table_capacity: opts.table_capacity,
            rounds: opts.rounds,
            seconds: args.seconds,
            warmup_seconds: opts.warmup.as_secs_f64(),
            cores,
            cpu: &cpu,
            verdicts_first_pass: first,
            verdicts_steady: steady,
            rows: &rows,
        };
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "appwall bench: verdict throughput, packets replayed in memory"
    )?;
    writeln!(
        out,
        "traffic  {}: {} packets, {} bytes, {} connections ({} frames skipped: not TCP/UDP)",
        trace.name(),
        trace.len(),
        trace.bytes(),
        trace.connections(),
        trace.skipped()
    )?;
    writeln!(
        out,
        "policy   {policy_text}; apps {} ({} signatures)",
        lib.apps()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        lib.signature_count()
    )?;
    writeln!(
        out,
        "engine   depth {} bytes / {} packets; a table of {} connections per thread",
        config.depth_bytes, config.depth_packets, opts.table_capacity
    )?;
    writeln!(
        out,
        "timing   {} rounds x {:.2} s per row after {:.2} s warm-up; {cores} cores ({cpu})",
        opts.rounds,
        args.seconds,
        opts.warmup.as_secs_f64()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<37} {:>3}  {:>9}  {:>19}  {:>9}  {:>7}  {:>8}",
        "ROW", "THR", "PKTS/S", "(MIN - MAX)", "BIT/S", "NS/PKT", "COST"
    )?;
    for r in &rows {
        let p = r.m.packets_per_s;
        writeln!(
            out,
            "{:<37} {:>3}  {:>9}  {:>19}  {:>9}  {:>7.0}  {:>7.2}x",
            r.label,
            r.m.threads,
            si(p.median),
            format!("({} - {})", si(p.min), si(p.max)),
            si(r.m.bits_per_s.median),
            r.m.ns_per_packet.median,
            r.cost_vs_baseline
        )?;
    }
    writeln!(out)?;
    writeln!(out, "verdicts of one first pass:  {}", verdict_line(&first))?;
    writeln!(out, "verdicts of one steady pass: {}", verdict_line(&steady))?;
    writeln!(out)?;
    writeln!(
        out,
        "PKTS/S and BIT/S: medians over the rounds, all threads together; NS/PKT: CPU time per packet on one thread;"
    )?;
    writeln!(
        out,
        "COST: baseline packets/s over the row's (same thread count). Bits count captured frame bytes."
    )?;
    writeln!(
        out,
        "first pass: every replay starts from an empty connection table, so each connection is inspected from its first"
    )?;
    writeln!(
        out,
        "  packet until it matches or passes the depth: the realistic cost of new traffic."
    )?;
    writeln!(
        out,
        "steady: one table kept across replays: connections decided earlier take the fast path, connections closed and"
    )?;
    writeln!(
        out,
        "  reopened by a SYN start over, undecided ones see their bytes again as retransmissions (see its verdicts)."
    )?;
    if no_depth.is_some() {
        writeln!(
            out,
            "no depth: depth = infinity, every packet of every undecided connection inspected in full: the worst case."
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
