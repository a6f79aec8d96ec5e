//! `appwall check`: validate everything, summarise, exit 0 only when valid.
//!
//! A valid policy that lists no host (an empty or all-comment hosts file) is
//! still valid, so `check` exits 0, but it warns on stderr: `run` with such a
//! file filters nothing, which is rarely what was meant. Valid includes
//! installable: kernel rules past what `appwall run` can install
//! ([`iptables::validate`]) with the same kernel options (`--queues`,
//! `--ipset-threshold`, `--queue-rate`...) are refused here too; the
//! options' values themselves are checked by the command line parser.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::CheckArgs;
use crate::commands::kernel_rules::rule_options;
use crate::commands::{AppError, EXIT_BAD_INPUT, build_engine, load_policy};
use crate::engine::EngineConfig;
use crate::kernel::iptables::{self, Family};
use crate::kernel::queue_rate::QueueRate;
use crate::log::{Level, log};

pub use crate::policy::no_hosts_warning;

/// Runs `appwall check`.
pub fn run(args: &CheckArgs) -> Result<ExitCode, AppError> {
    let policy = load_policy(&args.policy, false)?;
    if u32::from(args.kernel.queue) + u32::from(args.kernel.queues) > 65536 {
        return Err(AppError::QueueRange);
    }
    if let Some(w) = no_hosts_warning(&policy) {
        log(Level::Warning, format_args!("{w}"));
    }
    let started = std::time::Instant::now();
    let engine = build_engine(policy, EngineConfig::default())?;
    let compile = started.elapsed();
    let policy = engine.policy();
    let lib = policy.library();
    let mut out = std::io::stdout().lock();
    let v4 = policy.entries().iter().filter(|e| e.net.addr().is_ipv4()).count();
    let v6 = policy.entries().len() - v4;
    writeln!(
        out,
        "hosts: {} ({} IPv4, {} IPv6 entries, {} lookup ranges) from {}",
        policy.entries().len(),
        v4,
        v6,
        policy.table().range_count(),
        policy
            .hosts_path()
            .map_or("-".into(), |p| p.display().to_string())
    )?;
    writeln!(
        out,
        "apps: {} with {} signatures and {} rules (compiled in {:.1} ms)",
        lib.apps().len(),
        lib.signature_count(),
        lib.rule_count(),
        compile.as_secs_f64() * 1e3
    )?;
    for (i, app) in lib.apps().iter().enumerate() {
        let hosts = policy
            .entries()
            .iter()
            .filter(|e| e.rule.apps & (1u64 << i) != 0)
            .count();
        let ports: Vec<String> = app.ports.iter().map(|p| p.to_string()).collect();
        writeln!(
            out,
            "  {:<11} {:>3} signatures {:>3} rules  ports {:<22} hosts {:>6}{}",
            app.name,
            app.signatures.len(),
            app.rules.len(),
            if ports.is_empty() {
                "-".to_string()
            } else {
                ports.join(",")
            },
            hosts,
            if app.default_enabled {
                ""
            } else {
                "  (not in the default set)"
            }
        )?;
    }
    let opts = rule_options(&args.kernel);
    match opts.queue_rate {
        QueueRate::Off => writeln!(out, "queue rate: off (a flooding host can fill the queue)")?,
        QueueRate::PerSource { pps, burst } => writeln!(
            out,
            "queue rate: {pps} packets/s per source, bursts of {burst} (above: dropped in the kernel)"
        )?,
    }
    let inspected = engine.inspected_apps();
    for fam in [Family::V4, Family::V6] {
        if !iptables::family_used(policy, fam) {
            continue;
        }
        if let Err(e) = iptables::validate(policy, inspected, fam, &opts) {
            out.flush()?;
            eprintln!("appwall: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        let text = iptables::restore_input(policy, inspected, fam, &opts);
        let rules = text
            .lines()
            .filter(|l| l.starts_with("-A ") || l.starts_with("-I "))
            .count();
        let sets = iptables::set_names(policy, inspected, fam, &opts).len();
        writeln!(out, "{}: {} rules, {} ipsets", fam.restore_command(), rules, sets)?;
    }
    writeln!(out, "ok")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{AppLibrary, HostsFile, Policy};

    fn policy(text: &str) -> Policy {
        let hosts = HostsFile::parse(Path::new("hosts"), text).unwrap();
        Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap()
    }

    #[test]
    fn empty_and_comment_only_files_warn_and_listed_hosts_do_not() {
        for text in ["", "\n\n", "# nobody yet\n   # indented\n"] {
            let w = no_hosts_warning(&policy(text));
            assert!(
                w.as_deref().is_some_and(|w| w.contains("lists no hosts")),
                "{text:?}: {w:?}"
            );
        }
        assert_eq!(no_hosts_warning(&policy("192.0.2.10\n")), None);
        assert_eq!(no_hosts_warning(&policy("# desk\n2001:db8::5 msn\n")), None);
    }
}
