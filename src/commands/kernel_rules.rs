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
        queue_rate: k.queue_rate,
        ..KernelRuleOptions::default()
    }
}

/// The comment printed instead of rules when `run` would install none for
/// the requested family: `in_policy` are the families the policy has hosts
/// in. `None` when there are rules to print (under `--family all`, a family
/// without hosts is simply left out).
pub fn no_rules_note(requested: FamilyArg, in_policy: &[Family]) -> Option<String> {
    let (family, name, tool) = match requested {
        _ if in_policy.is_empty() => {
            return Some("# the policy lists no hosts: appwall run installs no kernel rules".into());
        }
        FamilyArg::All => return None,
        FamilyArg::Ipv4 => (Family::V4, "IPv4", Family::V4.command()),
        FamilyArg::Ipv6 => (Family::V6, "IPv6", Family::V6.command()),
    };
    (!in_policy.contains(&family))
        .then(|| format!("# the policy has no {name} hosts: appwall run installs no {tool} rules"))
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
    let in_policy: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|&f| iptables::family_used(policy, f))
        .collect();
    // `run` installs nothing for a family without hosts; say so instead of
    // printing rules that would never be installed. A '#' line is a comment
    // for iptables-restore, ipset restore and the shell alike.
    if let Some(note) = no_rules_note(args.family, &in_policy) {
        writeln!(out, "{note}")?;
        return Ok(ExitCode::SUCCESS);
    }
    for &fam in families.iter().filter(|f| in_policy.contains(f)) {
        if args.family == FamilyArg::All {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_without_hosts_gets_a_note_instead_of_rules() {
        use Family::{V4, V6};
        const NONE: &str = "# the policy lists no hosts: appwall run installs no kernel rules";
        const NO_V6: &str = "# the policy has no IPv6 hosts: appwall run installs no ip6tables rules";
        const NO_V4: &str = "# the policy has no IPv4 hosts: appwall run installs no iptables rules";
        let table: [(FamilyArg, &[Family], Option<&str>); 9] = [
            (FamilyArg::Ipv4, &[V4], None),
            (FamilyArg::Ipv6, &[V4], Some(NO_V6)),
            (FamilyArg::Ipv4, &[V6], Some(NO_V4)),
            (FamilyArg::Ipv6, &[V4, V6], None),
            (FamilyArg::All, &[V4], None),
            (FamilyArg::All, &[V6], None),
            (FamilyArg::All, &[], Some(NONE)),
            (FamilyArg::Ipv4, &[], Some(NONE)),
            (FamilyArg::Ipv6, &[], Some(NONE)),
        ];
        for (requested, in_policy, want) in table {
            assert_eq!(
                no_rules_note(requested, in_policy).as_deref(),
                want,
                "{requested:?} {in_policy:?}"
            );
        }
    }
}
