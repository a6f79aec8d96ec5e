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
//!    the filter table's reset rule), connmark "clean" returns at once
//!    except for its FINs and RSTs, and connmark "reply clean" returns at
//!    once for the reply direction only, FINs and RSTs again excepted (the
//!    originator's payload goes on to be queued);
//! 2. packets re-injected by appwall (NF_REPEAT) carrying a fresh mark: the
//!    mark is saved to the connection, then the packet is dropped or returned;
//! 3. FINs and RSTs of clean connections go to the queue, behind any data
//!    of theirs still waiting there from before the decision;
//! 4. fast-path port drops: a listed host opening a connection to a port of
//!    one of its apps, or to an `IP:PORT` port; then address drops: a
//!    listed host opening a connection into its apps' `addresses`
//!    ([`super::addresses`]);
//! 5. both directions of listed hosts' TCP/UDP go to `APPWALL_INSPECT`,
//!    which keeps TCP segments without payload, FIN or RST in the kernel
//!    (pure ACKs, SYNs, SYN-ACKs), drops a source's packets above its
//!    `--queue-rate` ([`super::queue_rate`]), marks reply-direction packets
//!    for the worker ([`MarkBits::queued_reply`]) and queues the rest to
//!    userspace, spread per connection over the queues.
//!
//! Order guarantee: no FIN or RST of a connection overtakes its data
//! waiting in the queue, before or after the decision. What may still
//! overtake queued data: pure ACKs (harmless, see `empty_segment_skips`
//! in the source) and, in the moment a connection is decided,
//! data segments that arrive after the mark is saved while earlier ones
//! still wait (reordering within one window, no loss).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::marks::MarkBits;
use super::queue_rate::{self, QueueRate};
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
    /// Queue TCP segments that carry no payload, FIN or RST too (pure ACKs,
    /// SYNs, SYN-ACKs). Off by default: the engine learns nothing from them
    /// (the opener comes from the conntrack direction), and skipping them
    /// (xt_u32) halves the verdicts of a short connection. On for kernels
    /// without xt_u32.
    pub queue_empty_segments: bool,
    /// Per-source limit on packets sent to the queue (xt_hashlimit);
    /// above it packets are dropped in the kernel, never passed uninspected.
    pub queue_rate: QueueRate,
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
            queue_rate: QueueRate::DEFAULT,
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

/// Longest ipset name the kernel takes (IPSET_MAXNAMELEN less the NUL).
pub const MAX_SET_NAME: usize = 31;
/// Most networks appwall puts into one ipset. hash:net costs roughly 50
/// to 100 bytes of kernel memory per entry, so this bounds one set near
/// 1.5 GiB; `check` and `run` refuse policies past it alike.
pub const MAX_SET_ELEMENTS: usize = 1 << 24;
/// Most rules appwall writes per family: past this iptables-restore takes
/// minutes and every undecided packet walks them; lower `--ipset-threshold`.
pub const MAX_RULES: usize = 20_000;

/// The `hash:net` sizing for `n` entries: `maxelem` never below the
/// kernel default (65,536) nor below `n`, and a starting hash size near
/// `n / 2` (a power of two) so a large restore does not rehash repeatedly.
fn set_size(n: usize) -> (usize, usize) {
    let maxelem = n.max(65_536);
    let hashsize = (n / 2).next_power_of_two().clamp(1024, 1 << 22);
    (hashsize, maxelem)
}

/// Gives each set-matched group a set name, one set per distinct list of
/// networks: groups with the same hosts (every app of a host listed with
/// the default apps, say) share the inspection set instead of copying it.
/// A name is `appwall<family>-<first user's key>` when it fits
/// [`MAX_SET_NAME`], else `appwall<family>-set<index>`.
fn share_sets(tag: &str, groups: &mut [&mut Group], opts: &KernelRuleOptions) -> Vec<Group> {
    let mut sets: Vec<Group> = Vec::new();
    for g in groups.iter_mut().filter(|g| g.uses_set(opts)) {
        if let Some(s) = sets.iter().find(|s| s.nets == g.nets) {
            g.set_name = s.set_name.clone();
            continue;
        }
        if g.set_name.len() > MAX_SET_NAME {
            g.set_name = format!("appwall{tag}-set{}", sets.len());
        }
        sets.push(Group {
            set_name: g.set_name.clone(),
            nets: g.nets.clone(),
        });
    }
    sets
}

/// The rules of one family, before rendering.
#[derive(Debug, Default)]
struct Plan {
    /// (chain, table, rule args) in order.
    mangle: Vec<(String, String)>,
    filter: Vec<(String, String)>,
    sets: Vec<Group>,
    /// `IP:PORT` entries in one `hash:net,port` set, when there are many.
    port_set: Option<PortSet>,
    /// Sets of the address lists ([`super::addresses`]).
    address_sets: Vec<String>,
    /// True when anything is queued or dropped at all.
    queued: bool,
}

/// Every `IP:PORT` entry of the hosts file as (network, port range) pairs
/// of one `hash:net,port` set: one rule however many hosts and ports,
/// where one port group per distinct port would add rules per host.
#[derive(Debug, Clone)]
struct PortSet {
    name: String,
    entries: Vec<(IpNet, PortSpec)>,
}

impl PortSet {
    /// Kernel elements: ipset stores a port range as one element per port.
    fn elements(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, p)| usize::from(p.last - p.first) + 1)
            .sum()
    }
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

/// Rules that keep segments which carry nothing to inspect and cannot
/// overtake anything in the kernel: TCP segments without payload, FIN and
/// RST clear (`FIN,RST NONE`): pure ACKs, SYN-ACKs and bare SYNs.
///
/// A FIN or RST must never overtake its connection's data still waiting in
/// the queue: the peer would see the end before the data (a FIN parked out
/// of order and answered with duplicate ACKs and retransmissions; a RST
/// tears the socket down and the waiting data is lost). So FINs and RSTs are
/// queued behind the data. A pure ACK that overtakes data of its own
/// direction is harmless: the receiver takes the acknowledgment, and a
/// zero-length segment ahead of `rcv_nxt` is neither queued nor answered
/// (RFC 9293 3.10.7.4; Linux does not echo its timestamp either). A SYN or
/// SYN-ACK precedes any data of its direction. The bare SYN used to be
/// queued only so the engine learned who opened the connection; the queue
/// now reports each packet's conntrack direction instead
/// ([`crate::flow::Conntrack`]), which saves one verdict per connection. A
/// SYN carrying data (TCP Fast Open) fails the length test and is queued.
///
/// u32 cannot subtract, so one rule per TCP header length (20 to 44 bytes:
/// none, timestamps, SACK); other shapes (IP options, IPv6 extension
/// headers) are queued.
fn empty_segment_skips(family: Family) -> Vec<String> {
    (5u32..=11)
        .map(|doff| {
            let u32 = match family {
                Family::V4 => format!("0>>24=0x45 && 0&0xFFFF={} && 32>>28={doff}", 20 + 4 * doff),
                Family::V6 => format!("4>>8&0xFF=6 && 4>>16={} && 52>>28={doff}", 4 * doff),
            };
            format!("-p tcp --tcp-flags FIN,RST NONE -m u32 --u32 \"{u32}\" -j RETURN")
        })
        .collect()
}

/// The NFQUEUE rules: one queue, or connections spread over `queues`.
///
/// `--queue-balance` hashes the two addresses only, so one client talking
/// to one server lands on one queue however many connections it opens.
/// With u32 available the spread is per connection instead: the opener's
/// port (the source port in the original direction, the destination port
/// in the reply direction, so both directions meet on one queue) picks the
/// queue. Bit 0 is skipped (Linux's connect() takes even ports), bits 1 and
/// up go round the queues: value v = (port >> 1) mod 2^b, queue = v mod N,
/// with 2^b the power of two >= N doubled when N is not one itself (at most
/// four values per rule, well inside u32's ten). Packets whose ports u32
/// cannot find (IPv6 extension headers) and untracked ones go to the first
/// queue. Without u32 (`queue_empty_segments`), `--queue-balance` remains.
fn queue_rules(family: Family, opts: &KernelRuleOptions) -> Vec<String> {
    let bypass = if opts.fail_closed { "" } else { " --queue-bypass" };
    let (q, n) = (u32::from(opts.queue), u32::from(opts.queues));
    let mut rules = Vec::new();
    if n <= 1 || opts.queue_empty_segments {
        let target = if n > 1 {
            format!("--queue-balance {}:{}", q, q + n - 1)
        } else {
            format!("--queue-num {q}")
        };
        for proto in ["tcp", "udp"] {
            rules.push(format!("-p {proto} -j NFQUEUE {target}{bypass}"));
        }
        return rules;
    }
    let slots = if n.is_power_of_two() {
        n
    } else {
        2 * n.next_power_of_two()
    };
    for (proto, number) in [("tcp", 6), ("udp", 17)] {
        // (sport, dport) is one 32-bit word after the IP header: port >> 1
        // is word >> 17 for the source, word >> 1 (masked) for the destination.
        for (ctdir, port_shift) in [("ORIGINAL", 17), ("REPLY", 1)] {
            let at = match family {
                Family::V4 => "0>>22&0x3C@0".to_string(),
                Family::V6 => format!("4>>8&0xFF={number} && 40"),
            };
            for k in 0..n {
                let values: Vec<String> = (k..slots).step_by(n as usize).map(|v| v.to_string()).collect();
                rules.push(format!(
                    "-p {proto} -m conntrack --ctdir {ctdir} -m u32 --u32 \"{at}>>{port_shift}&0x{:x}={}\" -j NFQUEUE --queue-num {}{bypass}",
                    slots - 1,
                    values.join(","),
                    q + k
                ));
            }
        }
        rules.push(format!("-p {proto} -j NFQUEUE --queue-num {q}{bypass}"));
    }
    rules
}

fn plan(policy: &Policy, inspected: AppSet, family: Family, opts: &KernelRuleOptions) -> Plan {
    let (mut port_groups, mut inspect) = groups(policy, family, inspected);
    let m = opts.marks;
    let mut p = Plan::default();
    // Many distinct `IP:PORT` ports: one hash:net,port set instead of a
    // port group (and its rules) per port.
    let spec_groups = port_groups
        .iter()
        .filter(|(k, _, _)| k.starts_with("port-"))
        .count();
    if spec_groups > opts.ipset_threshold.max(1) {
        let mut entries = Vec::new();
        port_groups.retain(|(key, ports, g)| {
            if !key.starts_with("port-") {
                return true;
            }
            for net in &g.nets {
                entries.extend(ports.iter().map(|p| (*net, *p)));
            }
            false
        });
        p.port_set = Some(PortSet {
            name: format!("appwall{}-ports", family.tag()),
            entries,
        });
    }
    {
        let mut all: Vec<&mut Group> = vec![&mut inspect];
        all.extend(port_groups.iter_mut().map(|(_, _, g)| g));
        p.sets = share_sets(family.tag(), &mut all, opts);
    }
    let mut mangle = |chain: &str, args: String| p.mangle.push((chain.to_string(), args));
    let blocked = format!("0x{:x}/0x{:x}", m.blocked, m.mask);
    let clean = format!("0x{:x}/0x{:x}", m.clean, m.mask);
    let reply_clean = format!("0x{:x}/0x{:x}", m.reply_clean, m.mask);
    let save = format!(
        "-j CONNMARK --save-mark --nfmask 0x{0:x} --ctmask 0x{0:x}",
        m.mask
    );
    // 1. Judged connections.
    if opts.reset {
        mangle(CHAIN, format!("-m connmark --mark {blocked} -p tcp -j RETURN"));
    }
    mangle(CHAIN, format!("-m connmark --mark {blocked} -j DROP"));
    // A clean connection's FIN or RST is not let through here: it may
    // follow data still queued from before the decision (see step 3).
    mangle(
        CHAIN,
        format!("-m connmark --mark {clean} -p tcp --tcp-flags FIN,RST NONE -j RETURN"),
    );
    mangle(CHAIN, format!("-m connmark --mark {clean} ! -p tcp -j RETURN"));
    // The reply direction of an HTTP connection whose replies were judged
    // clean; requests (and FINs, RSTs) still go on to the queue.
    mangle(
        CHAIN,
        format!(
            "-m connmark --mark {reply_clean} -m conntrack --ctdir REPLY -p tcp --tcp-flags FIN,RST NONE -j RETURN"
        ),
    );
    // 2. Fresh decisions re-injected by appwall.
    mangle(CHAIN, format!("-m mark --mark {blocked} {save}"));
    if opts.reset {
        mangle(CHAIN, format!("-m mark --mark {blocked} -p tcp -j RETURN"));
    }
    mangle(CHAIN, format!("-m mark --mark {blocked} -j DROP"));
    mangle(CHAIN, format!("-m mark --mark {clean} {save}"));
    mangle(CHAIN, format!("-m mark --mark {clean} -j RETURN"));
    mangle(CHAIN, format!("-m mark --mark {reply_clean} {save}"));
    mangle(CHAIN, format!("-m mark --mark {reply_clean} -j RETURN"));
    // 3. FINs and RSTs of clean connections queue behind whatever of the
    // connection still waits from before the decision, so they cannot
    // overtake it (a RST would destroy it). The worker accepts them without
    // a new mark; one re-injected with a mark was caught by step 2.
    if !inspect.nets.is_empty() {
        mangle(CHAIN, format!("-m connmark --mark {clean} -j {CHAIN_INSPECT}"));
    }
    // 4. Port fast path.
    let port_target = match opts.port_action {
        PortAction::Drop => "-j DROP".to_string(),
        PortAction::Reject => format!("-j {CHAIN_REJECT}"),
    };
    let mut filter_rules = Vec::new();
    if let Some(ps) = &p.port_set {
        let rule = format!(
            "-m set --match-set {} src,dst -m conntrack --ctdir ORIGINAL -m comment --comment \"appwall ports\" {port_target}",
            ps.name
        );
        match opts.port_action {
            PortAction::Drop => p.mangle.push((CHAIN.to_string(), rule)),
            PortAction::Reject => filter_rules.push((CHAIN.to_string(), rule)),
        }
        p.queued = true;
    }
    for (key, ports, group) in &port_groups {
        if group.nets.is_empty() {
            continue;
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
    // 4b. Address lists (kernel/addresses.rs), acted on like ports.
    for m in super::addresses::rule_matches(policy, family == Family::V6, opts.ipset_threshold) {
        let rule = (CHAIN.to_string(), format!("{m} {port_target}"));
        match opts.port_action {
            PortAction::Drop => p.mangle.push(rule),
            PortAction::Reject => filter_rules.push(rule),
        }
        p.queued = true;
    }
    p.address_sets = super::addresses::set_names(policy, family == Family::V6, opts.ipset_threshold);
    // 5. Inspection: both directions of listed hosts.
    if !inspect.nets.is_empty() {
        for dir in ["src", "dst"] {
            for host in inspect.matches(opts, dir) {
                p.mangle
                    .push((CHAIN.to_string(), format!("{host} -j {CHAIN_INSPECT}")));
            }
        }
        if !opts.queue_empty_segments {
            for rule in empty_segment_skips(family) {
                p.mangle.push((CHAIN_INSPECT.to_string(), rule));
            }
        }
        // A source's packets above its share are dropped before the queue.
        for rule in queue_rate::rules(family == Family::V6, opts.queue_rate) {
            p.mangle.push((CHAIN_INSPECT.to_string(), rule));
        }
        // The direction, for the worker: bare SYNs stay in the kernel, so
        // the first packet queued may be the server's (see `marks.rs`).
        p.mangle.push((
            CHAIN_INSPECT.to_string(),
            format!(
                "-m conntrack --ctdir REPLY -j MARK --set-xmark 0x{:x}/0x{:x}",
                m.queued_reply, m.mask
            ),
        ));
        for rule in queue_rules(family, opts) {
            p.mangle.push((CHAIN_INSPECT.to_string(), rule));
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
    if !p.sets.is_empty() || !p.address_sets.is_empty() {
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
    if !p.sets.is_empty() || !p.address_sets.is_empty() {
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
        let (hashsize, maxelem) = set_size(s.nets.len());
        let _ = writeln!(
            out,
            "create {} hash:net family {fam} hashsize {hashsize} maxelem {maxelem} -exist",
            s.set_name
        );
        let _ = writeln!(out, "flush {}", s.set_name);
        for n in &s.nets {
            let _ = writeln!(out, "add {} {n}", s.set_name);
        }
    }
    if let Some(ps) = &p.port_set {
        let (hashsize, maxelem) = set_size(ps.elements());
        let _ = writeln!(
            out,
            "create {} hash:net,port family {fam} hashsize {hashsize} maxelem {maxelem} -exist",
            ps.name
        );
        let _ = writeln!(out, "flush {}", ps.name);
        for (net, port) in &ps.entries {
            let range = if port.first == port.last {
                port.first.to_string()
            } else {
                format!("{}-{}", port.first, port.last)
            };
            let _ = writeln!(out, "add {} {net},{}:{range}", ps.name, port.proto);
        }
    }
    out.push_str(&super::addresses::ipset_input(
        policy,
        family == Family::V6,
        opts.ipset_threshold,
    ));
    out
}

/// Names of the ipsets the rules of `family` use.
pub fn set_names(
    policy: &Policy,
    inspected: AppSet,
    family: Family,
    opts: &KernelRuleOptions,
) -> Vec<String> {
    let p = plan(policy, inspected, family, opts);
    p.sets
        .into_iter()
        .map(|s| s.set_name)
        .chain(p.port_set.map(|s| s.name))
        .chain(p.address_sets)
        .collect()
}

/// What the kernel (or a sane install) cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A set would hold more than [`MAX_SET_ELEMENTS`] networks.
    #[error(
        "{family}: ipset {set} would hold {count} networks, more than {max}: aggregate the hosts file into wider networks"
    )]
    SetTooLarge {
        /// The restore command of the family.
        family: &'static str,
        /// Set name.
        set: String,
        /// Entries it would hold.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_RULES`] rules in one family.
    #[error("{family}: {count} rules, more than {max}: lower --ipset-threshold so host lists go into ipsets")]
    TooManyRules {
        /// The restore command of the family.
        family: &'static str,
        /// Rules generated.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Refuses what `appwall run` could not install (or should not): sets past
/// [`MAX_SET_ELEMENTS`], rule lists past [`MAX_RULES`]. Set names always
/// fit [`MAX_SET_NAME`] and sets are sized for their contents, so neither
/// needs checking here. `check` and the installer both call this.
pub fn validate(
    policy: &Policy,
    inspected: AppSet,
    family: Family,
    opts: &KernelRuleOptions,
) -> Result<(), LimitError> {
    let p = plan(policy, inspected, family, opts);
    if let Some(s) = p.sets.iter().find(|s| s.nets.len() > MAX_SET_ELEMENTS) {
        return Err(LimitError::SetTooLarge {
            family: family.restore_command(),
            set: s.set_name.clone(),
            count: s.nets.len(),
            max: MAX_SET_ELEMENTS,
        });
    }
    if let Some(ps) = p.port_set.as_ref().filter(|s| s.elements() > MAX_SET_ELEMENTS) {
        return Err(LimitError::SetTooLarge {
            family: family.restore_command(),
            set: ps.name.clone(),
            count: ps.elements(),
            max: MAX_SET_ELEMENTS,
        });
    }
    let count = p.mangle.len() + p.filter.len();
    if count > MAX_RULES {
        return Err(LimitError::TooManyRules {
            family: family.restore_command(),
            count,
            max: MAX_RULES,
        });
    }
    Ok(())
}

/// True when the policy gives this family anything to install.
pub fn family_used(policy: &Policy, family: Family) -> bool {
    policy.entries().iter().any(|e| family.holds(&e.net))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AppLibrary, HostsFile};
    use std::path::Path;

    fn policy(hosts: &str) -> Policy {
        let h = HostsFile::parse(Path::new("hosts"), hosts).unwrap();
        Policy::new(AppLibrary::embedded().unwrap(), &h, None).unwrap()
    }

    fn opts() -> KernelRuleOptions {
        KernelRuleOptions::default()
    }

    #[test]
    fn fin_and_rst_are_queued_only_pure_acks_skip() {
        for fam in [Family::V4, Family::V6] {
            let skips = empty_segment_skips(fam);
            assert_eq!(skips.len(), 7);
            for r in &skips {
                // FIN and RST clear: a FIN or RST never matches; SYNs and
                // ACKs without payload do.
                assert!(r.contains("--tcp-flags FIN,RST NONE "), "{r}");
            }
        }
        let with = restore_input(&policy("192.0.2.10 msn\n"), !0, Family::V4, &opts());
        assert!(with.contains("-j RETURN") && with.contains("FIN,RST NONE"));
        let o = KernelRuleOptions {
            queue_empty_segments: true,
            ..opts()
        };
        let without = restore_input(&policy("192.0.2.10 msn\n"), !0, Family::V4, &o);
        assert!(!without.contains("-m u32"), "{without}");
    }

    /// Every port value lands on exactly one queue, both directions alike.
    #[test]
    fn spread_covers_every_port_once_per_direction() {
        for n in [2u16, 3, 4, 5, 8, 33, 64] {
            let o = KernelRuleOptions {
                queue: 10,
                queues: n,
                ..opts()
            };
            let rules = queue_rules(Family::V4, &o);
            for dir in ["ORIGINAL", "REPLY"] {
                let mut seen = Vec::new();
                let mut per_queue = vec![0usize; usize::from(n)];
                for r in rules
                    .iter()
                    .filter(|r| r.starts_with("-p tcp") && r.contains(dir))
                {
                    let vals = r.split('=').nth(1).unwrap().split('"').next().unwrap();
                    let q: usize = r
                        .split("--queue-num ")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    for v in vals.split(',') {
                        seen.push(v.parse::<u32>().unwrap());
                        per_queue[q - 10] += 1;
                    }
                    assert!(vals.split(',').count() <= 10, "u32 takes ten values: {r}");
                }
                seen.sort_unstable();
                let slots = seen.len() as u32;
                assert_eq!(seen, (0..slots).collect::<Vec<_>>(), "n={n} {dir}");
                let (lo, hi) = (per_queue.iter().min().unwrap(), per_queue.iter().max().unwrap());
                assert!(hi - lo <= 1, "n={n}: {per_queue:?}");
            }
            assert!(
                rules
                    .iter()
                    .any(|r| r == "-p tcp -j NFQUEUE --queue-num 10 --queue-bypass")
            );
        }
        // One queue, or no u32: the plain targets.
        let one = queue_rules(Family::V4, &opts());
        assert_eq!(one[0], "-p tcp -j NFQUEUE --queue-num 0 --queue-bypass");
        let o = KernelRuleOptions {
            queues: 2,
            queue_empty_segments: true,
            fail_closed: true,
            ..opts()
        };
        assert_eq!(
            queue_rules(Family::V6, &o)[1],
            "-p udp -j NFQUEUE --queue-balance 0:1"
        );
    }

    #[test]
    fn same_hosts_share_one_set_sized_for_them() {
        let mut text = String::new();
        for i in 0..100u32 {
            text.push_str(&format!("10.{}.{}.1 msn aim\n", i / 250, i % 250));
        }
        let p = policy(&text);
        let names = set_names(&p, !0, Family::V4, &opts());
        assert_eq!(
            names,
            vec!["appwall4-inspect".to_string()],
            "one set, not three copies"
        );
        let rules = restore_input(&p, !0, Family::V4, &opts());
        // Two port drops and two queue jumps (the NFLOG rules before the
        // port drops use the same set).
        let using = |what: &str| {
            rules
                .lines()
                .filter(|l| l.contains("--match-set appwall4-inspect") && l.contains(what))
                .count()
        };
        assert_eq!(using("-j DROP") + using("-j APPWALL_INSPECT"), 4, "{rules}");
        let sets = ipset_input(&p, !0, Family::V4, &opts());
        assert!(sets.contains("hashsize 1024 maxelem 65536"), "{sets}");
        assert_eq!(set_size(1_000_000), (1 << 19, 1_000_000));
        assert_eq!(set_size(10), (1024, 65_536));
    }

    #[test]
    fn long_set_names_fall_back_to_numbers() {
        let mut g = Group {
            set_name: "appwall4-app-a-very-long-application-name".into(),
            nets: vec![
                "192.0.2.0/24".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ],
        };
        let o = KernelRuleOptions {
            ipset_threshold: 0,
            ..opts()
        };
        let sets = share_sets("4", &mut [&mut g], &o);
        assert_eq!(sets[0].set_name, "appwall4-set0");
        assert_eq!(g.set_name, "appwall4-set0");
    }

    #[test]
    fn validate_refuses_too_many_rules() {
        let mut text = String::new();
        for i in 0..30u32 {
            text.push_str(&format!("10.0.{i}.1 msn\n"));
        }
        let p = policy(&text);
        assert!(validate(&p, !0, Family::V4, &opts()).is_ok());
        let o = KernelRuleOptions {
            ipset_threshold: usize::MAX,
            ..opts()
        };
        assert!(validate(&p, !0, Family::V4, &o).is_ok(), "90 rules are fine");
        let mut big = String::new();
        for i in 0..8000u32 {
            big.push_str(&format!("10.{}.{}.1 msn\n", i / 200, (i % 200) + 1));
        }
        let err = validate(&policy(&big), !0, Family::V4, &o).unwrap_err();
        assert!(matches!(err, LimitError::TooManyRules { .. }), "{err}");
    }

    #[test]
    fn many_ip_port_lines_share_one_net_port_set() {
        let mut text = String::new();
        for port in 1000..1020u16 {
            text.push_str(&format!("192.0.2.20:{port}\n"));
        }
        text.push_str("198.51.100.7:6660-6670/udp\n");
        let p = policy(&text);
        let rules = restore_input(&p, !0, Family::V4, &opts());
        assert_eq!(
            rules.matches("--match-set appwall4-ports src,dst").count(),
            1,
            "{rules}"
        );
        assert!(!rules.contains("--dports 1000"), "{rules}");
        let sets = ipset_input(&p, !0, Family::V4, &opts());
        assert!(
            sets.starts_with("create appwall4-ports hash:net,port family inet "),
            "{sets}"
        );
        assert!(
            sets.contains("add appwall4-ports 198.51.100.7/32,udp:6660-6670\n"),
            "{sets}"
        );
        assert_eq!(sets.matches("\nadd ").count(), 21);
        assert_eq!(
            set_names(&p, !0, Family::V4, &opts()),
            vec!["appwall4-ports".to_string()]
        );
        // Few ports: ordinary rules, no set.
        let few = policy("192.0.2.20:3306\n");
        assert!(set_names(&few, !0, Family::V4, &opts()).is_empty());
    }

    /// In the generated rules: after the pure-ACK skips (which never count),
    /// before every NFQUEUE rule, once per family, whatever the queues; gone
    /// with `off`; the connmark fast path returns before any of it.
    #[test]
    fn the_limit_sits_between_the_skips_and_the_queue() {
        use super::super::queue_rate::table_name;
        let hosts = HostsFile::parse(
            std::path::Path::new("hosts"),
            "192.0.2.10 msn\n2001:db8:1::10 msn\n",
        )
        .unwrap();
        let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap();
        for queues in [1u16, 3] {
            for fail_closed in [false, true] {
                let opts = KernelRuleOptions {
                    queues,
                    fail_closed,
                    ..KernelRuleOptions::default()
                };
                for fam in [Family::V4, Family::V6] {
                    let text = restore_input(&policy, !0, fam, &opts);
                    let inspect: Vec<&str> = text
                        .lines()
                        .filter(|l| l.starts_with(&format!("-A {CHAIN_INSPECT} ")))
                        .collect();
                    let at = |what: &str| inspect.iter().position(|l| l.contains(what));
                    let limit = at("hashlimit").expect("a limit rule");
                    assert_eq!(text.matches("-m hashlimit").count(), 2, "{text}");
                    assert!(at("-j RETURN").unwrap() < limit, "{text}");
                    assert!(inspect[limit..].iter().filter(|l| l.contains("NFQUEUE")).count() >= 2);
                    assert!(!inspect[..limit].iter().any(|l| l.contains("NFQUEUE")), "{text}");
                    assert!(inspect[limit].contains(table_name(fam == Family::V6)));
                    // Settled connections return in APPWALL, before any jump here.
                    let clean_return = text.find("-j RETURN").unwrap();
                    assert!(clean_return < text.find("hashlimit").unwrap());
                    let off = KernelRuleOptions {
                        queue_rate: QueueRate::Off,
                        ..opts.clone()
                    };
                    let text = restore_input(&policy, !0, fam, &off);
                    assert!(!text.contains("hashlimit"), "{text}");
                }
            }
        }
    }
}
