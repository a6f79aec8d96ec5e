//! Where kernel rules are written: pure text generation of iptables-restore,
//! ip6tables-restore and ipset input from a [`Policy`].
//!
//! Everything appwall installs lives in its own chains (`APPWALL`,
//! `APPWALL_INSPECT` in mangle, `APPWALL_REJECT` in filter) and sets (named
//! `appwall4-*` / `appwall6-*`), reached by one jump from each built-in chain,
//! so installing and removing never touches anyone else's rules. Output is
//! deterministic (sorted hosts, sorted apps) so it can be diffed and
//! golden-tested. Every argument comes from validated types (networks, port
//! numbers, app names matching `[a-z][a-z0-9_-]*`), so input files cannot
//! inject iptables options.
//!
//! Layout of the mangle `APPWALL` chain, top to bottom:
//! 1. connections already judged: connmark "blocked" is dropped (or left to
//!    the filter table's reset rule), connmark "clean" returns at once;
//! 2. packets re-injected by appwall (NF_REPEAT) carrying a fresh mark: the
//!    mark is saved to the connection, then the packet is dropped or returned;
//! 3. fast-path port drops: a listed host opening a connection to a port of
//!    one of its apps, or to an `IP:PORT` port;
//! 4. both directions of listed hosts' TCP/UDP go to `APPWALL_INSPECT`, which
//!    queues them to userspace.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::marks::MarkBits;
use crate::packet::Proto;
use crate::policy::{AppSet, Policy, PortSpec};

/// Name of the main mangle chain.
pub const CHAIN: &str = "APPWALL";
/// Name of the mangle chain that queues packets.
pub const CHAIN_INSPECT: &str = "APPWALL_INSPECT";
/// Name of the filter chain that answers blocked TCP with a reset.
pub const CHAIN_REJECT: &str = "APPWALL_REJECT";

/// Address family of one restore input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// iptables / IPv4.
    V4,
    /// ip6tables / IPv6.
    V6,
}

impl Family {
    fn tag(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }

    /// The command that reads this family's restore input.
    pub fn restore_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The plain command of this family.
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// What the fast path does with a connection to a blocked port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAction {
    /// Drop in mangle PREROUTING (REJECT is refused in mangle).
    Drop,
    /// Reject in the filter table: TCP reset, ICMP port unreachable for UDP.
    Reject,
}

/// Everything that shapes the generated rules besides the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRuleOptions {
    /// First NFQUEUE number.
    pub queue: u16,
    /// Number of queues (more than one uses `--queue-balance`).
    pub queues: u16,
    /// Without userspace listener, drop instead of accept (no `--queue-bypass`).
    pub fail_closed: bool,
    /// Port fast path: drop or reject.
    pub port_action: PortAction,
    /// Answer TCP of blocked connections with a reset (filter table).
    pub reset: bool,
    /// Host groups larger than this go into an ipset.
    pub ipset_threshold: usize,
    /// Connmark bits.
    pub marks: MarkBits,
    /// Emit the jumps from built-in chains (an installer that already has
    /// them leaves them out).
    pub jumps: bool,
    /// Queue TCP segments that carry no payload and no SYN too (pure ACKs,
    /// bare FINs and RSTs). Off by default: the engine learns nothing from
    /// them, and skipping them (xt_u32) halves the verdicts of a short
    /// connection. On for kernels without xt_u32.
    pub queue_empty_segments: bool,
}

impl Default for KernelRuleOptions {
    fn default() -> Self {
        KernelRuleOptions {
            queue: 0,
            queues: 1,
            fail_closed: false,
            port_action: PortAction::Drop,
            reset: false,
            ipset_threshold: 16,
            marks: MarkBits::default(),
            jumps: true,
            queue_empty_segments: false,
        }
    }
}

/// A group of networks that share a match, rendered as rules or as an ipset.
#[derive(Debug, Clone)]
struct Group {
    set_name: String,
    nets: Vec<IpNet>,
}

impl Group {
    fn uses_set(&self, opts: &KernelRuleOptions) -> bool {
        self.nets.len() > opts.ipset_threshold
    }

    /// The match arguments, one per rule, for direction `dir` ("src"/"dst").
    fn matches(&self, opts: &KernelRuleOptions, dir: &str) -> Vec<String> {
        if self.uses_set(opts) {
            vec![format!("-m set --match-set {} {dir}", self.set_name)]
        } else {
            let flag = if dir == "src" { "-s" } else { "-d" };
            self.nets.iter().map(|n| format!("{flag} {n}")).collect()
        }
    }
}

/// The rules of one family, before rendering.
#[derive(Debug, Default)]
struct Plan {
    /// (chain, table, rule args) in order.
    mangle: Vec<(String, String)>,
    filter: Vec<(String, String)>,
    sets: Vec<Group>,
    /// True when anything is queued or dropped at all.
    queued: bool,
}

fn groups(
    policy: &Policy,
    family: Family,
    inspected: AppSet,
) -> (Vec<(String, Vec<PortSpec>, Group)>, Group) {
    // Port groups: per app with ports, and per explicit IP:PORT spec.
    let mut by_ports: BTreeMap<String, (Vec<PortSpec>, Vec<IpNet>)> = BTreeMap::new();
    let mut inspect = Vec::new();
    for e in policy.entries().iter().filter(|e| family.holds(&e.net)) {
        for (i, app) in policy.library().apps().iter().enumerate() {
            if e.rule.apps & (1u64 << i) != 0 && !app.ports.is_empty() {
                let g = by_ports
                    .entry(format!("app-{}", app.name))
                    .or_insert_with(|| (app.ports.clone(), Vec::new()));
                g.1.push(e.net);
            }
        }
        for p in &e.rule.ports {
            let key = format!("port-{}-{}", p.proto, p.iptables_range().replace(':', "-"));
            let g = by_ports.entry(key).or_insert_with(|| (vec![*p], Vec::new()));
            g.1.push(e.net);
        }
        if e.rule.apps & inspected != 0 {
            inspect.push(e.net);
        }
    }
    let tag = family.tag();
    let port_groups = by_ports
        .into_iter()
        .map(|(key, (ports, nets))| {
            let nets = IpNet::aggregate(&nets);
            (
                key.clone(),
                ports,
                Group {
                    set_name: format!("appwall{tag}-{key}"),
                    nets,
                },
            )
        })
        .collect();
    let inspect = Group {
        set_name: format!("appwall{tag}-inspect"),
        nets: IpNet::aggregate(&inspect),
    };
    (port_groups, inspect)
}

/// Splits ports of one protocol into multiport lists of at most 15 slots.
fn multiport_lists(ports: &[PortSpec], proto: Proto) -> Vec<String> {
    let mut lists = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut slots = 0;
    for p in ports.iter().filter(|p| p.proto == proto) {
        let need = if p.first == p.last { 1 } else { 2 };
        if slots + need > 15 {
            lists.push(cur.join(","));
            cur.clear();
            slots = 0;
        }
        cur.push(p.iptables_range());
        slots += need;
    }
    if !cur.is_empty() {
        lists.push(cur.join(","));
    }
    lists
}

fn plan(policy: &Policy, inspected: AppSet, family: Family, opts: &KernelRuleOptions) -> Plan {
    let (port_groups, inspect) = groups(policy, family, inspected);
    let m = opts.marks;
    let mut p = Plan::default();
    let mut mangle = |chain: &str, args: String| p.mangle.push((chain.to_string(), args));
    let blocked = format!("0x{:x}/0x{:x}", m.blocked, m.mask);
    let clean = format!("0x{:x}/0x{:x}", m.clean, m.mask);
    let save = format!(
        "-j CONNMARK --save-mark --nfmask 0x{0:x} --ctmask 0x{0:x}",
        m.mask
    );
    // 1. Judged connections.
    if opts.reset {
        mangle(CHAIN, format!("-m connmark --mark {blocked} -p tcp -j RETURN"));
    }
    mangle(CHAIN, format!("-m connmark --mark {blocked} -j DROP"));
    mangle(CHAIN, format!("-m connmark --mark {clean} -j RETURN"));
    // 2. Fresh decisions re-injected by appwall.
    mangle(CHAIN, format!("-m mark --mark {blocked} {save}"));
    if opts.reset {
        mangle(CHAIN, format!("-m mark --mark {blocked} -p tcp -j RETURN"));
    }
    mangle(CHAIN, format!("-m mark --mark {blocked} -j DROP"));
    mangle(CHAIN, format!("-m mark --mark {clean} {save}"));
    mangle(CHAIN, format!("-m mark --mark {clean} -j RETURN"));
    // 3. Port fast path.
    let port_target = match opts.port_action {
        PortAction::Drop => "-j DROP".to_string(),
        PortAction::Reject => format!("-j {CHAIN_REJECT}"),
    };
    let mut filter_rules = Vec::new();
    for (key, ports, group) in &port_groups {
        if group.nets.is_empty() {
            continue;
        }
        if group.uses_set(opts) {
            p.sets.push(group.clone());
        }
        for proto in [Proto::Tcp, Proto::Udp] {
            for list in multiport_lists(ports, proto) {
                for host in group.matches(opts, "src") {
                    let rule = format!(
                        "{host} -p {proto} -m multiport --dports {list} -m conntrack --ctdir ORIGINAL -m comment --comment \"appwall {key}\" {port_target}"
                    );
                    let log = (
                        CHAIN.to_string(),
                        super::nflog::log_rule(&rule, &port_target, opts.queue),
                    );
                    match opts.port_action {
                        PortAction::Drop => p.mangle.extend([log, (CHAIN.to_string(), rule)]),
                        PortAction::Reject => filter_rules.extend([log, (CHAIN.to_string(), rule)]),
                    }
                }
            }
        }
        p.queued = true;
    }
    // 4. Inspection: both directions of listed hosts.
    if !inspect.nets.is_empty() {
        if inspect.uses_set(opts) {
            p.sets.push(inspect.clone());
        }
        for dir in ["src", "dst"] {
            for host in inspect.matches(opts, dir) {
                p.mangle
                    .push((CHAIN.to_string(), format!("{host} -j {CHAIN_INSPECT}")));
            }
        }
        let queue = if opts.queues > 1 {
            format!("--queue-balance {}:{}", opts.queue, opts.queue + opts.queues - 1)
        } else {
            format!("--queue-num {}", opts.queue)
        };
        let bypass = if opts.fail_closed { "" } else { " --queue-bypass" };
        if !opts.queue_empty_segments {
            // A segment without SYN whose length is exactly its headers has
            // nothing to inspect. u32 cannot subtract, so one rule per TCP
            // header length (20 to 44 bytes: none, timestamps, SACK); other
            // shapes (IP options, IPv6 extension headers) are queued. The
            // opening SYN stays queued so a reused port starts a new
            // connection; SYN-ACKs, pure ACKs, bare FINs and RSTs are skipped.
            for doff in 5u32..=11 {
                let u32 = match family {
                    Family::V4 => format!("0>>24=0x45 && 0&0xFFFF={} && 32>>28={doff}", 20 + 4 * doff),
                    Family::V6 => format!("4>>8&0xFF=6 && 4>>16={} && 52>>28={doff}", 4 * doff),
                };
                p.mangle.push((
                    CHAIN_INSPECT.to_string(),
                    format!("-p tcp ! --tcp-flags SYN,ACK SYN -m u32 --u32 \"{u32}\" -j RETURN"),
                ));
            }
        }
        for proto in ["tcp", "udp"] {
            p.mangle.push((
                CHAIN_INSPECT.to_string(),
                format!("-p {proto} -j NFQUEUE {queue}{bypass}"),
            ));
        }
        p.queued = true;
    }
    // Filter table: resets for blocked connections and rejected ports.
    if opts.reset {
        filter_rules.insert(
            0,
            (
                CHAIN.to_string(),
                format!("-m connmark --mark {blocked} -p tcp -j REJECT --reject-with tcp-reset"),
            ),
        );
    }
    if opts.port_action == PortAction::Reject {
        let unreach = match family {
            Family::V4 => "icmp-port-unreachable",
            Family::V6 => "icmp6-port-unreachable",
        };
        filter_rules.push((
            CHAIN_REJECT.to_string(),
            "-p tcp -j REJECT --reject-with tcp-reset".to_string(),
        ));
        filter_rules.push((
            CHAIN_REJECT.to_string(),
            format!("-j REJECT --reject-with {unreach}"),
        ));
    }
    p.filter = filter_rules;
    p
}

/// `iptables-restore --noflush` (or `ip6tables-restore`) input for one family.
pub fn restore_input(policy: &Policy, inspected: AppSet, family: Family, opts: &KernelRuleOptions) -> String {
    let p = plan(policy, inspected, family, opts);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# appwall rules for {} --noflush: own chains only; the jump lines are added once",
        family.restore_command()
    );
    if !p.sets.is_empty() {
        let _ = writeln!(
            out,
            "# needs ipsets first: appwall rules --format ipset ... | ipset restore"
        );
    }
    let _ = writeln!(out, "*mangle");
    let _ = writeln!(out, ":{CHAIN} - [0:0]");
    let _ = writeln!(out, ":{CHAIN_INSPECT} - [0:0]");
    if opts.jumps {
        let _ = writeln!(out, "-I PREROUTING 1 -j {CHAIN}");
    }
    for (chain, args) in &p.mangle {
        let _ = writeln!(out, "-A {chain} {args}");
    }
    let _ = writeln!(out, "COMMIT");
    if !p.filter.is_empty() {
        let _ = writeln!(out, "*filter");
        let _ = writeln!(out, ":{CHAIN} - [0:0]");
        if opts.port_action == PortAction::Reject {
            let _ = writeln!(out, ":{CHAIN_REJECT} - [0:0]");
        }
        if opts.jumps {
            let _ = writeln!(out, "-I FORWARD 1 -j {CHAIN}");
            let _ = writeln!(out, "-I INPUT 1 -j {CHAIN}");
        }
        for (chain, args) in &p.filter {
            let _ = writeln!(out, "-A {chain} {args}");
        }
        let _ = writeln!(out, "COMMIT");
    }
    out
}

/// Plain `iptables ...` commands equivalent to [`restore_input`], for admins
/// who paste commands (not atomic: prefer the restore input).
pub fn commands(policy: &Policy, inspected: AppSet, family: Family, opts: &KernelRuleOptions) -> String {
    let p = plan(policy, inspected, family, opts);
    let cmd = family.command();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# appwall rules as {cmd} commands (not atomic; prefer --format restore)"
    );
    if !p.sets.is_empty() {
        let _ = writeln!(
            out,
            "# create the ipsets first: appwall rules --format ipset ... | ipset restore"
        );
    }
    let _ = writeln!(out, "{cmd} -t mangle -N {CHAIN}");
    let _ = writeln!(out, "{cmd} -t mangle -N {CHAIN_INSPECT}");
    for (chain, args) in &p.mangle {
        let _ = writeln!(out, "{cmd} -t mangle -A {chain} {args}");
    }
    if opts.jumps {
        let _ = writeln!(out, "{cmd} -t mangle -I PREROUTING 1 -j {CHAIN}");
    }
    if !p.filter.is_empty() {
        let _ = writeln!(out, "{cmd} -t filter -N {CHAIN}");
        if opts.port_action == PortAction::Reject {
            let _ = writeln!(out, "{cmd} -t filter -N {CHAIN_REJECT}");
        }
        for (chain, args) in &p.filter {
            let _ = writeln!(out, "{cmd} -t filter -A {chain} {args}");
        }
        if opts.jumps {
            let _ = writeln!(out, "{cmd} -t filter -I FORWARD 1 -j {CHAIN}");
            let _ = writeln!(out, "{cmd} -t filter -I INPUT 1 -j {CHAIN}");
        }
    }
    out
}

/// `ipset restore` input creating and filling every set the rules use.
pub fn ipset_input(policy: &Policy, inspected: AppSet, family: Family, opts: &KernelRuleOptions) -> String {
    let p = plan(policy, inspected, family, opts);
    let fam = match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let mut out = String::new();
    for s in &p.sets {
        let _ = writeln!(out, "create {} hash:net family {fam} -exist", s.set_name);
        let _ = writeln!(out, "flush {}", s.set_name);
        for n in &s.nets {
            let _ = writeln!(out, "add {} {n}", s.set_name);
        }
    }
    out
}

/// Names of the ipsets the rules of `family` use.
pub fn set_names(
    policy: &Policy,
    inspected: AppSet,
    family: Family,
    opts: &KernelRuleOptions,
) -> Vec<String> {
    plan(policy, inspected, family, opts)
        .sets
        .into_iter()
        .map(|s| s.set_name)
        .collect()
}

/// True when the policy gives this family anything to install.
pub fn family_used(policy: &Policy, family: Family) -> bool {
    policy.entries().iter().any(|e| family.holds(&e.net))
}
