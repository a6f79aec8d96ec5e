//! Address lists in the kernel fast path: an app's `addresses` (the
//! destination networks its service runs on, e.g. Telegram's data
//! centres) as ipsets, and the mangle rules that drop a listed host's new
//! connections into them, as the port rules do for ports.
//!
//! Why a module of its own: the lists are per app and may be long (a
//! provider publishes hundreds of networks), so they always live in a
//! `hash:net` set, one per app and family, whatever the host-group
//! threshold; [`super::iptables`] only asks this module for its rules and
//! sets. A policy without address lists yields nothing here, so its
//! kernel rules are exactly what they were before address lists existed.
//!
//! Names: `appwall4-d-<app>` holds the app's destination networks;
//! `appwall4-s-<app>` its listed hosts, when there are more than the
//! host-group threshold (fewer are written as `-s` matches). Both fit
//! ipset's 31-character names for any app name (at most 20 characters).
//! Sets are created with `maxelem` [`MAX_ADDRESSES`]: the library's limit
//! per app, so a set can never overflow. It is a constant on purpose:
//! `ipset create -exist` refuses an existing set of other parameters, so a
//! size derived from the list would make a reload fail once a list grows;
//! a hash set grows its table itself.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::policy::Policy;
use crate::policy::library::MAX_ADDRESSES;

/// One app's address list for one family, with the hosts it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressGroup {
    /// App name.
    pub app: String,
    /// Set of destination networks (`appwall4-d-<app>`).
    pub set: String,
    /// The app's networks of this family, aggregated.
    pub nets: Vec<IpNet>,
    /// Set of listed hosts (`appwall4-s-<app>`), used when `hosts` is
    /// longer than the host-group threshold.
    pub host_set: String,
    /// Networks of the hosts listed with the app, of this family, aggregated.
    pub hosts: Vec<IpNet>,
}

impl AddressGroup {
    fn hosts_in_set(&self, threshold: usize) -> bool {
        self.hosts.len() > threshold
    }
}

fn of_family(v6: bool, n: &IpNet) -> bool {
    matches!(n, IpNet::V6(_)) == v6
}

/// The address groups of one family (IPv6 when `v6`), in app order: apps with networks of
/// this family and at least one host of this family listed with them.
pub fn groups(policy: &Policy, v6: bool) -> Vec<AddressGroup> {
    let mut out = Vec::new();
    for (i, app) in policy.library().apps().iter().enumerate() {
        let nets: Vec<IpNet> = app
            .addresses
            .iter()
            .copied()
            .filter(|n| of_family(v6, n))
            .collect();
        if nets.is_empty() {
            continue;
        }
        let hosts: Vec<IpNet> = policy
            .entries()
            .iter()
            .filter(|e| of_family(v6, &e.net) && e.rule.apps & (1u64 << i) != 0)
            .map(|e| e.net)
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let t = if v6 { "6" } else { "4" };
        out.push(AddressGroup {
            app: app.name.clone(),
            set: format!("appwall{t}-d-{}", app.name),
            nets: IpNet::aggregate(&nets),
            host_set: format!("appwall{t}-s-{}", app.name),
            hosts: IpNet::aggregate(&hosts),
        });
    }
    out
}

/// The match arguments of the rules (without target), one per rule: a
/// listed host opening a connection into its app's networks. Hosts go into
/// a set when there are more than `threshold` of them.
pub fn rule_matches(policy: &Policy, v6: bool, threshold: usize) -> Vec<String> {
    let mut out = Vec::new();
    for g in groups(policy, v6) {
        let hosts: Vec<String> = if g.hosts_in_set(threshold) {
            vec![format!("-m set --match-set {} src", g.host_set)]
        } else {
            g.hosts.iter().map(|h| format!("-s {h}")).collect()
        };
        for h in hosts {
            out.push(format!(
                "{h} -m set --match-set {} dst -m conntrack --ctdir ORIGINAL -m comment --comment \"appwall addresses-{}\"",
                g.set, g.app
            ));
        }
    }
    out
}

/// Names of the sets [`rule_matches`] uses.
pub fn set_names(policy: &Policy, v6: bool, threshold: usize) -> Vec<String> {
    let mut out = Vec::new();
    for g in groups(policy, v6) {
        out.push(g.set.clone());
        if g.hosts_in_set(threshold) {
            out.push(g.host_set.clone());
        }
    }
    out
}

/// `ipset restore` input creating and filling the sets of one family.
pub fn ipset_input(policy: &Policy, v6: bool, threshold: usize) -> String {
    let fam = if v6 { "inet6" } else { "inet" };
    let mut out = String::new();
    let mut set = |name: &str, nets: &[IpNet]| {
        let _ = writeln!(
            out,
            "create {name} hash:net family {fam} maxelem {MAX_ADDRESSES} -exist"
        );
        let _ = writeln!(out, "flush {name}");
        for n in nets {
            let _ = writeln!(out, "add {name} {n}");
        }
    };
    for g in groups(policy, v6) {
        set(&g.set, &g.nets);
        if g.hosts_in_set(threshold) {
            set(&g.host_set, &g.hosts);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::iptables::{self, Family, KernelRuleOptions};
    use crate::policy::{AppLibrary, HostsFile};
    use std::path::{Path, PathBuf};

    fn policy(hosts: &str) -> Policy {
        let app = "name = \"chat\"\ndescription = \"t\"\naddresses = [\"198.51.100.0/25\", \"198.51.100.128/25\", \"2001:db8:99::/48\"]\n";
        let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/chat.toml"), app.to_string())]).unwrap();
        let lib = AppLibrary::embedded().unwrap().overlay(lib).unwrap();
        Policy::new(lib, &HostsFile::parse(Path::new("hosts"), hosts).unwrap(), None).unwrap()
    }

    #[test]
    fn sets_and_rules_per_app_and_family() {
        let p = policy("192.0.2.10 chat\n192.0.2.11 chat\n2001:db8:1::10 chat\n203.0.113.5 msn\n");
        let o = KernelRuleOptions::default();
        let v4 = ipset_input(&p, false, o.ipset_threshold);
        assert_eq!(
            v4,
            "create appwall4-d-chat hash:net family inet maxelem 65536 -exist\n\
             flush appwall4-d-chat\nadd appwall4-d-chat 198.51.100.0/24\n"
        );
        assert!(ipset_input(&p, true, o.ipset_threshold).contains("add appwall6-d-chat 2001:db8:99::/48"));
        let rules = iptables::restore_input(&p, 0, Family::V4, &o);
        let want = "-A APPWALL -s 192.0.2.10/31 -m set --match-set appwall4-d-chat dst -m conntrack --ctdir ORIGINAL -m comment --comment \"appwall addresses-chat\" -j DROP";
        assert!(rules.contains(want), "{rules}");
        assert!(rules.contains("needs ipsets first"), "{rules}");
        assert_eq!(
            iptables::set_names(&p, 0, Family::V4, &o),
            vec!["appwall4-d-chat".to_string()]
        );
        // Many hosts: they go into their own set.
        let o = KernelRuleOptions {
            ipset_threshold: 0,
            ..KernelRuleOptions::default()
        };
        let m = rule_matches(&p, false, o.ipset_threshold);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("-m set --match-set appwall4-s-chat src "),
            "{m:?}"
        );
        assert!(ipset_input(&p, false, o.ipset_threshold).contains("add appwall4-s-chat 192.0.2.10/31"));
    }

    #[test]
    fn nothing_without_listed_hosts_or_lists() {
        let o = KernelRuleOptions::default();
        let p = policy("192.0.2.10 msn\n");
        assert!(groups(&p, false).is_empty());
        assert!(ipset_input(&p, false, o.ipset_threshold).is_empty());
        // A host of the other family only: no IPv6 set for an IPv4 host.
        let p = policy("192.0.2.10 chat\n");
        assert!(groups(&p, true).is_empty());
        assert_eq!(groups(&p, false).len(), 1);
    }

    #[test]
    fn reject_port_action_moves_address_rules_to_filter() {
        let p = policy("192.0.2.10 chat\n");
        let o = KernelRuleOptions {
            port_action: iptables::PortAction::Reject,
            ..KernelRuleOptions::default()
        };
        let rules = iptables::restore_input(&p, 0, Family::V4, &o);
        let filter = rules.split("*filter").nth(1).unwrap_or("");
        assert!(filter.contains("appwall4-d-chat dst"), "{rules}");
        assert!(filter.contains("-j APPWALL_REJECT"), "{rules}");
    }
}
