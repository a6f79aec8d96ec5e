//! `appwall kernel-rules` (alias `rules`): print the kernel rules for a policy.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{FamilyArg, KernelArgs, KernelRulesArgs, KernelRulesFormat, PortActionArg};
use crate::commands::{AppError, build_engine, load_policy};
use crate::engine::EngineConfig;
use crate::kernel::iptables::{self, Family, KernelRuleOptions, PortAction};

/// Rule options from the command line.
pub fn rule_options(k: &KernelArgs) -> KernelRuleOptions {
    KernelRuleOptions {
        queue: k.queue,
        queues: k.queues,
        fail_closed: k.fail_closed,
        port_action: match k.port_action {
            PortActionArg::Drop => PortAction::Drop,
            PortActionArg::Reject => PortAction::Reject,
        },
        reset: k.reset,
        ipset_threshold: k.ipset_threshold,
        queue_empty_segments: k.queue_empty_segments,
        ..KernelRuleOptions::default()
    }
}

/// Runs `appwall kernel-rules`.
pub fn run(args: &KernelRulesArgs) -> Result<ExitCode, AppError> {
    let policy = load_policy(&args.policy, false)?;
    if u32::from(args.kernel.queue) + u32::from(args.kernel.queues) > 65536 {
        return Err(AppError::QueueRange);
    }
    let engine = build_engine(policy, EngineConfig::default())?;
    let policy = engine.policy();
    let inspected = engine.inspected_apps();
    let opts = rule_options(&args.kernel);
    let families: &[Family] = match args.family {
        FamilyArg::Ipv4 => &[Family::V4],
        FamilyArg::Ipv6 => &[Family::V6],
        FamilyArg::All => &[Family::V4, Family::V6],
    };
    let mut out = std::io::stdout().lock();
    for &fam in families {
        if args.family == FamilyArg::All {
            if !iptables::family_used(policy, fam) {
                continue;
            }
            writeln!(
                out,
                "# ===== {} =====",
                match args.format {
                    KernelRulesFormat::Restore => fam.restore_command(),
                    KernelRulesFormat::Commands => fam.command(),
                    KernelRulesFormat::Ipset => "ipset restore",
                }
            )?;
        }
        let text = match args.format {
            KernelRulesFormat::Restore => iptables::restore_input(policy, inspected, fam, &opts),
            KernelRulesFormat::Commands => iptables::commands(policy, inspected, fam, &opts),
            KernelRulesFormat::Ipset => iptables::ipset_input(policy, inspected, fam, &opts),
        };
        out.write_all(text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
