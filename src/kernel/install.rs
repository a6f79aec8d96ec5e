//! Applies and removes appwall's kernel rules: iptables-restore /
//! ip6tables-restore `--noflush` and `ipset restore`, fed on stdin (never a
//! shell), with the text [`crate::kernel::iptables`] generates.
//!
//! Guarantees:
//! - one restore transaction per address family: the chains are replaced
//!   (and the jumps added only when missing) atomically, so a reload never
//!   shows the kernel half a policy, and a failed restore changes nothing;
//! - set contents change atomically too (fill a temporary set, `swap`);
//! - install works from whatever is there: what a killed instance left is
//!   found (by reading `iptables-save`) and replaced in the same transaction;
//! - removal deletes every jump to appwall's chains, the chains, and every
//!   `appwall*` set, and tolerates finding any part already gone.
//!
//! The reconciling is a pure function over `iptables-save` text
//! ([`reconcile`]), unit-tested without root.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::engine::Engine;
use crate::kernel::iptables::{self, CHAIN, CHAIN_INSPECT, CHAIN_REJECT, Family, KernelRuleOptions};

const OUR_CHAINS: [&str; 3] = [CHAIN, CHAIN_INSPECT, CHAIN_REJECT];
const TABLES: [&str; 2] = ["mangle", "filter"];
/// Set-name prefixes appwall owns.
pub const SET_PREFIXES: [&str; 3] = ["appwall4-", "appwall6-", "appwall-tmp"];
const TMP_SET: &str = "appwall-tmp";

/// Errors applying or removing rules.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A tool could not be started.
    #[error("cannot run {program}: {source} (is it installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy is past what the kernel rules can hold.
    #[error(transparent)]
    Limit(#[from] iptables::LimitError),
    /// A tool refused its input.
    #[error("{program} failed: {stderr}")]
    Failed {
        /// The program and arguments.
        program: String,
        /// What it said.
        stderr: String,
    },
}

/// Runs the rule tools; a trait so tests can record instead of run.
pub trait Runner {
    /// Runs `program args`, feeding `stdin`; returns stdout.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InstallError>;
}

/// Runs the real tools (no shell; arguments passed as a vector).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InstallError> {
        let name = || format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| InstallError::Spawn {
                program: program.to_string(),
                source,
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its status says why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|source| InstallError::Spawn {
            program: program.to_string(),
            source,
        })?;
        if !out.status.success() {
            return Err(InstallError::Failed {
                program: name(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What one family's `iptables-save` shows of appwall.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// (table, chain) of appwall's chains that exist.
    pub chains: Vec<(String, String)>,
    /// (table, rule spec without `-A`) of rules elsewhere that jump to them.
    pub jumps: Vec<(String, String)>,
}

impl Found {
    /// True when nothing of appwall is there.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// Reads appwall's chains and jumps out of `iptables-save` output.
pub fn parse_save(text: &str) -> Found {
    let mut found = Found::default();
    let mut table = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            if OUR_CHAINS.contains(&name) {
                found.chains.push((table.clone(), name.to_string()));
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            let target = rule
                .split(" -j ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next());
            let target = target.or_else(|| {
                rule.split(" -g ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
            });
            if !OUR_CHAINS.contains(&chain) && target.is_some_and(|t| OUR_CHAINS.contains(&t)) {
                found.jumps.push((table.clone(), rule.to_string()));
            }
        }
    }
    found
}

/// One table's part of generated restore input.
#[derive(Debug, Default)]
struct Wanted {
    chains: Vec<String>,
    /// Jump specs as iptables-save prints them (`PREROUTING -j APPWALL`).
    jumps: Vec<String>,
    rules: Vec<String>,
}

fn parse_generated(text: &str) -> Vec<(String, Wanted)> {
    let mut out: Vec<(String, Wanted)> = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            out.push((t.trim().to_string(), Wanted::default()));
            continue;
        }
        let Some((_, w)) = out.last_mut() else { continue };
        if let Some(decl) = line.strip_prefix(':') {
            w.chains
                .push(decl.split_whitespace().next().unwrap_or("").to_string());
        } else if let Some(rest) = line.strip_prefix("-I ") {
            // `-I CHAIN 1 spec` -> `CHAIN spec`
            let mut parts = rest.splitn(3, ' ');
            let chain = parts.next().unwrap_or("");
            let _pos = parts.next();
            w.jumps.push(format!("{chain} {}", parts.next().unwrap_or("")));
        } else if line.starts_with("-A ") {
            w.rules.push(line.to_string());
        }
    }
    out
}

/// The restore input that turns what is `found` into what `generated`
/// (output of [`iptables::restore_input`] with jumps) asks for; pass an
/// empty `generated` to remove everything. `None` when nothing is to do.
pub fn reconcile(found: &Found, generated: &str) -> Option<String> {
    let wanted = parse_generated(generated);
    let mut out = String::new();
    for table in TABLES {
        let empty = Wanted::default();
        let w = wanted.iter().find(|(t, _)| t == table).map_or(&empty, |(_, w)| w);
        let have_chains: Vec<&str> = found
            .chains
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, c)| c.as_str())
            .collect();
        let have_jumps: Vec<&str> = found
            .jumps
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, j)| j.as_str())
            .collect();
        if w.chains.is_empty() && have_chains.is_empty() && have_jumps.is_empty() {
            continue;
        }
        // Declaring a chain creates it or flushes it (also under --noflush);
        // it must come before any rule that jumps to it.
        let mut lines: Vec<String> = w.chains.iter().map(|c| format!(":{c} - [0:0]")).collect();
        // Jumps: keep one of each wanted, delete the rest (duplicates, strays).
        let mut kept: BTreeSet<&str> = BTreeSet::new();
        for j in &have_jumps {
            if w.jumps.iter().any(|x| x == j) && kept.insert(j) {
                continue;
            }
            lines.push(format!("-D {j}"));
        }
        for j in &w.jumps {
            if !kept.contains(j.as_str()) {
                let (chain, spec) = j.split_once(' ').unwrap_or((j, ""));
                lines.push(format!("-I {chain} 1 {spec}"));
            }
        }
        let stale: Vec<&str> = have_chains
            .iter()
            .copied()
            .filter(|c| !w.chains.iter().any(|x| x == c))
            .collect();
        for c in &stale {
            lines.push(format!("-F {c}"));
        }
        for c in &stale {
            lines.push(format!("-X {c}"));
        }
        lines.extend(w.rules.iter().cloned());
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// `ipset restore` input that fills each set through a temporary set and
/// swaps it in, from [`iptables::ipset_input`] text. The temporary set is
/// created with the new sizing, so a set that grew past its old `maxelem`
/// is replaced by a larger one (swap keeps the name and the rules that use
/// it); a set that does not exist yet (`existing` lists those that do) is
/// renamed into place. The caller destroys a stale temporary set first.
pub fn ipset_swap_input(generated: &str, existing: &[String]) -> String {
    let mut out = String::new();
    let mut current: Option<String> = None;
    let finish = |out: &mut String, cur: &Option<String>| {
        if let Some(name) = cur {
            if existing.iter().any(|e| e == name) {
                out.push_str(&format!("swap {TMP_SET} {name}\ndestroy {TMP_SET}\n"));
            } else {
                out.push_str(&format!("rename {TMP_SET} {name}\n"));
            }
        }
    };
    for line in generated.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(name)) => {
                finish(&mut out, &current);
                let rest: Vec<&str> = words.filter(|w| *w != "-exist").collect();
                out.push_str(&format!("create {TMP_SET} {}\n", rest.join(" ")));
                current = Some(name.to_string());
            }
            (Some("add"), Some(_)) => {
                let net: Vec<&str> = words.collect();
                out.push_str(&format!("add {TMP_SET} {}\n", net.join(" ")));
            }
            _ => {}
        }
    }
    finish(&mut out, &current);
    out
}

/// What [`install`] did.
#[derive(Debug, Default, Clone)]
pub struct InstallReport {
    /// A previous install (a killed instance's, or the running one's on
    /// reload) was found and replaced.
    pub replaced: bool,
    /// Restore inputs applied, per family (for `--verbose` logs and tests).
    pub applied: Vec<(Family, String)>,
    /// Sets in use.
    pub sets: Vec<String>,
}

fn save(runner: &dyn Runner, family: Family) -> Result<Found, InstallError> {
    let prog = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    let mut found = Found::default();
    for table in TABLES {
        let f = parse_save(&runner.run(prog, &["-t", table], None)?);
        found.chains.extend(f.chains);
        found.jumps.extend(f.jumps);
    }
    Ok(found)
}

/// Names of existing `appwall*` sets.
pub fn existing_sets(runner: &dyn Runner) -> Vec<String> {
    runner
        .run("ipset", &["list", "-n"], None)
        .map(|t| {
            t.lines()
                .filter(|n| SET_PREFIXES.iter().any(|p| n.starts_with(p)))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Installs (or replaces in place) the rules for `engine`'s policy.
pub fn install(
    runner: &dyn Runner,
    engine: &Engine,
    opts: &KernelRuleOptions,
) -> Result<InstallReport, InstallError> {
    let policy = engine.policy();
    let inspected = engine.inspected_apps();
    let opts = KernelRuleOptions {
        jumps: true,
        ..opts.clone()
    };
    for family in [Family::V4, Family::V6] {
        if iptables::family_used(policy, family) {
            iptables::validate(policy, inspected, family, &opts)?;
        }
    }
    let mut report = InstallReport::default();
    let mut wanted_sets = Vec::new();
    // A temporary set left by a killed install would make the restore fail.
    let _ = runner.run("ipset", &["destroy", TMP_SET], None);
    let mut have_sets = existing_sets(runner);
    for family in [Family::V4, Family::V6] {
        let used = iptables::family_used(policy, family);
        let found = match save(runner, family) {
            Ok(f) => f,
            // No IPv6 in this kernel and nothing IPv6 to install: fine.
            Err(_) if !used => continue,
            Err(e) => return Err(e),
        };
        report.replaced |= !found.is_empty();
        let generated = if used {
            iptables::restore_input(policy, inspected, family, &opts)
        } else {
            String::new()
        };
        if used {
            let sets = ipset_swap_input(
                &iptables::ipset_input(policy, inspected, family, &opts),
                &have_sets,
            );
            if !sets.is_empty() {
                runner.run("ipset", &["restore"], Some(&sets))?;
                let names = iptables::set_names(policy, inspected, family, &opts);
                have_sets.extend(names.iter().cloned());
                wanted_sets.extend(names);
            }
        }
        if let Some(text) = reconcile(&found, &generated) {
            runner.run(family.restore_command(), &["--noflush"], Some(&text))?;
            report.applied.push((family, text));
        }
    }
    // Sets the new rules no longer use (after a reload, or a stale install).
    for s in existing_sets(runner) {
        if !wanted_sets.contains(&s) {
            let _ = runner.run("ipset", &["destroy", &s], None);
        }
    }
    report.sets = wanted_sets;
    Ok(report)
}

/// What [`remove`] found and removed.
#[derive(Debug, Default, Clone)]
pub struct RemoveReport {
    /// Chains and jumps removed, per family, as `table/chain` and `table: rule`.
    pub removed: Vec<String>,
    /// Sets destroyed.
    pub sets: Vec<String>,
}

impl RemoveReport {
    /// True when nothing was there.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.sets.is_empty()
    }
}

/// Removes every appwall chain, jump and set; what is already gone is skipped.
pub fn remove(runner: &dyn Runner) -> Result<RemoveReport, InstallError> {
    let mut report = RemoveReport::default();
    let mut first_err = None;
    for family in [Family::V4, Family::V6] {
        let found = match save(runner, family) {
            Ok(f) => f,
            Err(_) => continue,
        };
        if let Some(text) = reconcile(&found, "") {
            match runner.run(family.restore_command(), &["--noflush"], Some(&text)) {
                Ok(_) => {
                    let tag = family.command();
                    report
                        .removed
                        .extend(found.chains.iter().map(|(t, c)| format!("{tag} {t}/{c}")));
                    report
                        .removed
                        .extend(found.jumps.iter().map(|(t, j)| format!("{tag} {t}: -A {j}")));
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
    }
    for s in existing_sets(runner) {
        match runner.run("ipset", &["destroy", &s], None) {
            Ok(_) => report.sets.push(s),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// True when anything of appwall is installed in this network namespace.
pub fn anything_installed(runner: &dyn Runner) -> bool {
    [Family::V4, Family::V6]
        .iter()
        .any(|f| save(runner, *f).is_ok_and(|x| !x.is_empty()))
        || !existing_sets(runner).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:APPWALL - [0:0]\n:APPWALL_INSPECT - [0:0]\n\
-A PREROUTING -j APPWALL\n-A PREROUTING -j APPWALL\n-A PREROUTING -i eth0 -j MARK --set-mark 1\n\
-A APPWALL -j APPWALL_INSPECT\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:APPWALL - [0:0]\n\
-A FORWARD -j APPWALL\n-A INPUT -j APPWALL\nCOMMIT\n";

    #[test]
    fn save_output_finds_chains_and_jumps_only() {
        let f = parse_save(SAVE);
        assert_eq!(f.chains.len(), 3);
        assert_eq!(f.jumps.len(), 4, "{:?}", f.jumps);
        assert!(f.jumps.iter().all(|(_, j)| j.ends_with("-j APPWALL")));
    }

    #[test]
    fn removal_deletes_jumps_then_chains() {
        let text = reconcile(&parse_save(SAVE), "").unwrap();
        assert_eq!(
            text,
            "*mangle\n-D PREROUTING -j APPWALL\n-D PREROUTING -j APPWALL\n-F APPWALL\n-F APPWALL_INSPECT\n\
-X APPWALL\n-X APPWALL_INSPECT\nCOMMIT\n*filter\n-D FORWARD -j APPWALL\n-D INPUT -j APPWALL\n-F APPWALL\n\
-X APPWALL\nCOMMIT\n"
        );
        assert_eq!(reconcile(&Found::default(), ""), None);
    }

    #[test]
    fn replacing_keeps_one_jump_and_drops_stale_tables() {
        let generated = "*mangle\n:APPWALL - [0:0]\n:APPWALL_INSPECT - [0:0]\n-I PREROUTING 1 -j APPWALL\n\
-A APPWALL -j DROP\nCOMMIT\n";
        let text = reconcile(&parse_save(SAVE), generated).unwrap();
        assert!(
            text.starts_with(
                "*mangle\n:APPWALL - [0:0]\n:APPWALL_INSPECT - [0:0]\n-D PREROUTING -j APPWALL\n-A"
            ),
            "{text}"
        );
        assert!(!text.contains("-I PREROUTING"), "jump exists already: {text}");
        assert!(
            text.contains("-A APPWALL -j DROP\nCOMMIT\n*filter\n-D FORWARD"),
            "{text}"
        );
        // Fresh install: the jump is added.
        let fresh = reconcile(&Found::default(), generated).unwrap();
        assert!(
            fresh.contains(":APPWALL_INSPECT - [0:0]\n-I PREROUTING 1 -j APPWALL\n"),
            "{fresh}"
        );
    }

    #[test]
    fn ipset_contents_are_swapped_in() {
        let g = "create appwall4-inspect hash:net family inet hashsize 1024 maxelem 65536 -exist\n\
flush appwall4-inspect\nadd appwall4-inspect 192.0.2.0/24\n";
        let fill = "create appwall-tmp hash:net family inet hashsize 1024 maxelem 65536\nadd appwall-tmp 192.0.2.0/24\n";
        // Existing (perhaps smaller) set: swapped, so rules keep their reference.
        assert_eq!(
            ipset_swap_input(g, &["appwall4-inspect".to_string()]),
            format!("{fill}swap appwall-tmp appwall4-inspect\ndestroy appwall-tmp\n")
        );
        // New set: renamed into place, no `create -exist` that a differently
        // sized old set would refuse.
        assert_eq!(
            ipset_swap_input(g, &[]),
            format!("{fill}rename appwall-tmp appwall4-inspect\n")
        );
    }
}
