//! All integration tests, compiled into one binary (faster to build and
//! run) with its own harness: each file lists its tests with what they need
//! (`cases!`), and a test whose prerequisite is missing here (root, tools,
//! the shared captures) is reported as *ignored* with the reason, or fails
//! under `CI=true`. The usual libtest arguments work (one or more filters,
//! `--exact`, `--skip`, `--list`, `--test-threads`; `RUST_TEST_THREADS` too).
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

#[macro_use]
mod support;

mod bench;
mod captures;
mod cli;
mod daemon_events;
mod daemon_notify;
mod daemon_safety;
mod faults_flood;
mod faults_kill;
mod faults_privilege;
mod faults_reload;
mod faults_tools;
mod fuzz_regressions;
mod injection;
mod inspection;
mod kernel;
mod live;
mod live_http;
mod live_opener;
mod live_retransmissions;
mod live_stream;
mod order;
mod parsers;
mod quic_live;
mod scan_decap;
mod schedules;
mod schemas;
mod soak;
mod squid;
mod squid_oracle;

fn main() {
    let (rest, filters) = split_filters(std::env::args().collect());
    let mut args = libtest_mimic::Arguments::from_iter(rest);
    // libtest reads this variable; keep the same concurrency here.
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let ci = support::in_ci();
    let cases = [
        bench::cases(),
        captures::cases(),
        cli::cases(),
        daemon_events::cases(),
        daemon_notify::cases(),
        daemon_safety::cases(),
        faults_flood::cases(),
        faults_kill::cases(),
        faults_privilege::cases(),
        faults_reload::cases(),
        faults_tools::cases(),
        fuzz_regressions::cases(),
        injection::cases(),
        inspection::cases(),
        kernel::cases(),
        live::cases(),
        live_http::cases(),
        live_opener::cases(),
        live_retransmissions::cases(),
        live_stream::cases(),
        order::cases(),
        parsers::cases(),
        quic_live::cases(),
        scan_decap::cases(),
        schedules::cases(),
        schemas::cases(),
        soak::cases(),
        squid::cases(),
        squid_oracle::cases(),
    ];
    let mut trials: Vec<_> = cases.into_iter().flatten().map(|c| c.trial(ci)).collect();
    // libtest's order: by name.
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    if filters.len() == 1 {
        args.filter = filters.into_iter().next();
    } else if !filters.is_empty() {
        // libtest runs what matches any filter; libtest-mimic takes one.
        let exact = args.exact;
        trials.retain(|t| {
            filters.iter().any(|f| {
                if exact {
                    t.name() == f
                } else {
                    t.name().contains(f.as_str())
                }
            })
        });
    }
    libtest_mimic::run(&args, trials).exit();
}

/// libtest options that take a value as the next argument.
const VALUED: [&str; 6] = [
    "--test-threads",
    "--logfile",
    "--skip",
    "--color",
    "--format",
    "-Z",
];

/// Splits the command line into options (with the program name) and test
/// name filters, of which libtest accepts several.
fn split_filters(argv: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut rest = Vec::new();
    let mut filters = Vec::new();
    let mut it = argv.into_iter();
    rest.extend(it.next());
    while let Some(a) = it.next() {
        if VALUED.contains(&a.as_str()) {
            rest.push(a);
            rest.extend(it.next());
        } else if a.starts_with('-') {
            rest.push(a);
        } else {
            filters.push(a);
        }
    }
    (rest, filters)
}
