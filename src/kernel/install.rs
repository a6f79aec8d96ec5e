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
//!
//! After a reload, connections the kernel fast path holds as clean and that
//! the new policy may judge otherwise are sent back to the queue
//! ([`requeue_clean`]: their connmark bits cleared with `conntrack`).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::engine::Engine;
use crate::kernel::iptables::{self, CHAIN, CHAIN_INSPECT, CHAIN_REJECT, Family, KernelRuleOptions};
use crate::kernel::marks::MarkBits;

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
    reconcile_keeping(found, generated, &[])
}

/// [`reconcile`], leaving the chains named in `keep` exactly as they are
/// (not declared, so not flushed, and not removed as stale): their rules
/// and counters survive. `generated` must not declare or fill them.
pub fn reconcile_keeping(found: &Found, generated: &str, keep: &[&str]) -> Option<String> {
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
            .filter(|c| !w.chains.iter().any(|x| x == c) && !keep.contains(c))
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
    /// Rules of the queueing chain now installed, per family (pass them
    /// to the next [`install_keeping`]).
    pub inspect: Vec<(Family, String)>,
    /// True when the queueing chain was left as it was in every family
    /// (its packet counters go on); false when it was created anew.
    pub inspect_kept: bool,
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
    install_keeping(runner, engine, opts, &[])
}

/// The `-A APPWALL_INSPECT` lines of generated restore input.
fn inspect_lines(generated: &str) -> String {
    let prefix = format!("-A {CHAIN_INSPECT} ");
    generated
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .fold(String::new(), |acc, l| acc + l + "\n")
}

/// `generated` without the queueing chain's declaration and rules.
fn without_inspect(generated: &str) -> String {
    let decl = format!(":{CHAIN_INSPECT} ");
    let rule = format!("-A {CHAIN_INSPECT} ");
    generated
        .lines()
        .filter(|l| !l.starts_with(&decl) && !l.starts_with(&rule))
        .fold(String::new(), |acc, l| acc + l + "\n")
}

/// [`install`] that leaves the queueing chain (`APPWALL_INSPECT`) alone
/// where it is installed with exactly the rules `previous` says (the
/// previous report's [`InstallReport::inspect`]): a reload that changes
/// hosts or apps keeps the chain's packet counters, which the overflow
/// accounting reads.
pub fn install_keeping(
    runner: &dyn Runner,
    engine: &Engine,
    opts: &KernelRuleOptions,
    previous: &[(Family, String)],
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
    let mut report = InstallReport {
        inspect_kept: true,
        ..InstallReport::default()
    };
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
        let inspect = inspect_lines(&generated);
        let has_inspect = found
            .chains
            .iter()
            .any(|(t, c)| t == "mangle" && c == CHAIN_INSPECT);
        let keep = used && has_inspect && previous.iter().any(|(f, text)| *f == family && *text == inspect);
        let text = if keep {
            reconcile_keeping(&found, &without_inspect(&generated), &[CHAIN_INSPECT])
        } else {
            // Created anew (or removed): its counters start again.
            if used || has_inspect {
                report.inspect_kept = false;
            }
            reconcile(&found, &generated)
        };
        if let Some(text) = text {
            runner.run(family.restore_command(), &["--noflush"], Some(&text))?;
            report.applied.push((family, text));
        }
        if used {
            report.inspect.push((family, inspect));
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

/// One connection as `conntrack -L` prints its original direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtTuple {
    /// `tcp` or `udp`.
    pub proto: String,
    /// Original source.
    pub src: IpAddr,
    /// Original destination.
    pub dst: IpAddr,
    /// Original source port.
    pub sport: u16,
    /// Original destination port.
    pub dport: u16,
}

/// Reads the original tuples of TCP and UDP connections out of
/// `conntrack -L` output (other protocols and unreadable lines are skipped).
pub fn parse_conntrack_list(text: &str) -> Vec<CtTuple> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let proto = words.next()?;
            if proto != "tcp" && proto != "udp" {
                return None;
            }
            // The first src/dst/sport/dport are the original direction.
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            };
            Some(CtTuple {
                proto: proto.to_string(),
                src: field("src")?.parse().ok()?,
                dst: field("dst")?.parse().ok()?,
                sport: field("sport")?.parse().ok()?,
                dport: field("dport")?.parse().ok()?,
            })
        })
        .collect()
}

/// `conntrack -R` input that clears appwall's mark bits (others kept) of
/// the connections in `tuples` that have an endpoint in `nets`.
pub fn requeue_batch(tuples: &[CtTuple], nets: &[IpNet], marks: MarkBits) -> String {
    let mut out = String::new();
    for t in tuples {
        if !nets.iter().any(|n| n.contains(&t.src) || n.contains(&t.dst)) {
            continue;
        }
        let family = if t.src.is_ipv4() { "ipv4" } else { "ipv6" };
        out.push_str(&format!(
            "-U -f {family} -p {} -s {} -d {} --sport {} --dport {} -m 0/0x{:x}\n",
            t.proto, t.src, t.dst, t.sport, t.dport, marks.mask
        ));
    }
    out
}

/// Sends connections the kernel fast path holds as clean, with an endpoint
/// in `nets`, back to the queue: their mark bits are cleared, so their
/// next packet is judged by the engine now in force. Blocked connections
/// keep their mark. Returns how many were handled (cleared, or found
/// already cleared or gone when the batch had to be retried one by one).
pub fn requeue_clean(runner: &dyn Runner, nets: &[IpNet], marks: MarkBits) -> Result<usize, InstallError> {
    if nets.is_empty() {
        return Ok(0);
    }
    let clean = format!("0x{:x}/0x{:x}", marks.clean, marks.mask);
    let mut tuples = Vec::new();
    for family in ["ipv4", "ipv6"] {
        if !nets
            .iter()
            .any(|n| matches!((family, n), ("ipv4", IpNet::V4(_)) | ("ipv6", IpNet::V6(_))))
        {
            continue;
        }
        let text = runner.run("conntrack", &["-L", "-f", family, "-m", &clean], None)?;
        tuples.extend(parse_conntrack_list(&text));
    }
    let batch = requeue_batch(&tuples, nets, marks);
    if batch.is_empty() {
        return Ok(0);
    }
    if runner
        .run("conntrack", &["-R", "/dev/stdin"], Some(&batch))
        .is_ok()
    {
        return Ok(batch.lines().count());
    }
    // `-R` stops at the first line the kernel refuses (seen: EPROTO while
    // the connection is busy): one call per connection, each tried twice.
    let mut done = 0;
    let mut first_err = None;
    for line in batch.lines() {
        let args: Vec<&str> = line.split_whitespace().collect();
        let mut result = runner.run("conntrack", &args, None);
        if result.is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            result = runner.run("conntrack", &args, None);
        }
        match result {
            Ok(_) => done += 1,
            // Already cleared (by the partial batch) or gone: done too.
            Err(InstallError::Failed { stderr, .. }) if stderr.contains(" 0 flow entries") => done += 1,
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) if done == 0 => Err(e),
        _ => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers like a box with appwall's IPv4 chains installed (no IPv6),
    /// recording what is fed to the restore tools.
    struct Installed {
        fed: std::cell::RefCell<Vec<String>>,
    }

    impl Runner for Installed {
        fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InstallError> {
            match program {
                "iptables-save" if args.contains(&"mangle") => Ok(
                    "*mangle\n:PREROUTING ACCEPT [0:0]\n:APPWALL - [0:0]\n:APPWALL_INSPECT - [0:0]\n\
-A PREROUTING -j APPWALL\nCOMMIT\n"
                        .into(),
                ),
                "iptables-save" | "ipset" => Ok(String::new()),
                "iptables-restore" => {
                    self.fed.borrow_mut().push(stdin.unwrap_or("").to_string());
                    Ok(String::new())
                }
                _ => Err(InstallError::Spawn {
                    program: program.into(),
                    source: std::io::Error::other("absent"),
                }),
            }
        }
    }

    fn engine(hosts: &str) -> Engine {
        let h = crate::policy::HostsFile::parse(std::path::Path::new("hosts"), hosts).unwrap();
        let p = crate::policy::Policy::new(crate::policy::AppLibrary::embedded().unwrap(), &h, None).unwrap();
        Engine::new(p, crate::engine::EngineConfig::default()).unwrap()
    }

    #[test]
    fn reload_keeps_an_unchanged_queueing_chain_and_its_counters() {
        let r = Installed {
            fed: Default::default(),
        };
        let opts = KernelRuleOptions::default();
        let first = install(&r, &engine("192.0.2.10 msn\n"), &opts).unwrap();
        assert!(!first.inspect_kept);
        assert_eq!(first.inspect.len(), 1);
        assert!(r.fed.borrow()[0].contains(":APPWALL_INSPECT - [0:0]"));
        // Other hosts, same queue options: the chain is left alone.
        let second = install_keeping(&r, &engine("192.0.2.11 msn\n"), &opts, &first.inspect).unwrap();
        assert!(second.inspect_kept);
        let fed = r.fed.borrow()[1].clone();
        assert!(!fed.contains("APPWALL_INSPECT -"), "{fed}");
        assert!(!fed.contains("-A APPWALL_INSPECT"), "{fed}");
        assert!(fed.contains("-j APPWALL_INSPECT"), "{fed}");
        assert!(fed.contains("192.0.2.11"), "{fed}");
        // Other queue options: created anew.
        let other = KernelRuleOptions {
            queue: 3,
            ..opts.clone()
        };
        let third = install_keeping(&r, &engine("192.0.2.11 msn\n"), &other, &first.inspect).unwrap();
        assert!(!third.inspect_kept);
        assert!(r.fed.borrow()[2].contains("--queue-num 3"));
    }

    #[test]
    fn clean_connections_of_affected_hosts_are_requeued_others_kept() {
        let list = "tcp      6 99 ESTABLISHED src=192.0.2.10 dst=198.51.100.10 sport=1000 dport=80 src=198.51.100.10 dst=192.0.2.10 sport=80 dport=1000 [ASSURED] mark=2097152 use=1\n\
udp      17 29 src=198.51.100.10 dst=192.0.2.11 sport=53 dport=4000 src=192.0.2.11 dst=198.51.100.10 sport=4000 dport=53 mark=2097153 use=1\n\
tcp      6 99 ESTABLISHED src=203.0.113.5 dst=198.51.100.10 sport=1001 dport=80 src=198.51.100.10 dst=203.0.113.5 sport=80 dport=1001 mark=2097152 use=1\n\
icmp     1 29 src=192.0.2.10 dst=198.51.100.10 type=8 code=0 id=1 mark=2097152 use=1\n\
tcp      6 99 ESTABLISHED src=2001:db8:1::10 dst=2001:db8:2::10 sport=5 dport=443 src=2001:db8:2::10 dst=2001:db8:1::10 sport=443 dport=5 mark=2097152 use=1\n";
        let t = parse_conntrack_list(list);
        assert_eq!(t.len(), 4, "{t:?}");
        assert_eq!(t[1].src, "198.51.100.10".parse::<IpAddr>().unwrap());
        assert_eq!((t[1].sport, t[1].dport), (53, 4000));
        let nets: Vec<IpNet> = vec![
            "192.0.2.0/28".parse().unwrap(),
            "2001:db8:1::/64".parse().unwrap(),
        ];
        let batch = requeue_batch(&t, &nets, MarkBits::default());
        assert_eq!(
            batch,
            "-U -f ipv4 -p tcp -s 192.0.2.10 -d 198.51.100.10 --sport 1000 --dport 80 -m 0/0x700000\n\
-U -f ipv4 -p udp -s 198.51.100.10 -d 192.0.2.11 --sport 53 --dport 4000 -m 0/0x700000\n\
-U -f ipv6 -p tcp -s 2001:db8:1::10 -d 2001:db8:2::10 --sport 5 --dport 443 -m 0/0x700000\n"
        );
        assert_eq!(requeue_batch(&t, &[], MarkBits::default()), "");
    }

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
