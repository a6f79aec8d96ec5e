//! Host lookup: which apps and ports apply to an address.
//!
//! Entries (networks with an app set and port list) are flattened into
//! disjoint, sorted address ranges whose value is the union of every entry
//! covering them, so overlapping lines merge and a lookup is one binary
//! search: O(log n) in the number of entries, no allocation.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::hosts::PortSpec;

/// A set of apps as a bit mask over library indices.
pub type AppSet = u64;

/// What applies to one host: apps to inspect and ports to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostRule {
    /// Apps whose ports and signatures apply.
    pub apps: AppSet,
    /// Extra ports to drop (`IP:PORT` lines), sorted and deduplicated.
    pub ports: Vec<PortSpec>,
}

impl HostRule {
    /// Merges `other` into `self` (union of apps and ports).
    pub fn merge(&mut self, other: &HostRule) {
        self.apps |= other.apps;
        for p in &other.ports {
            if !self.ports.contains(p) {
                self.ports.push(*p);
            }
        }
        self.ports.sort();
    }
}

/// Sorted disjoint inclusive ranges with a value index each.
#[derive(Debug, Clone, Default)]
struct RangeMap<K> {
    starts: Vec<K>,
    ends: Vec<K>,
    values: Vec<u32>,
}

impl<K: Copy + Ord> RangeMap<K> {
    fn get(&self, key: K) -> Option<u32> {
        let i = self.starts.partition_point(|s| *s <= key);
        if i == 0 || self.ends[i - 1] < key {
            None
        } else {
            Some(self.values[i - 1])
        }
    }
}

/// The lookup structure for both address families.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    v4: RangeMap<u32>,
    v6: RangeMap<u128>,
    rules: Vec<HostRule>,
}

impl HostTable {
    /// Builds the table from (network, rule) entries; overlaps are merged.
    pub fn build(entries: &[(IpNet, HostRule)]) -> HostTable {
        let mut interner: HashMap<HostRule, u32> = HashMap::new();
        let mut rules = Vec::new();
        let v4_entries: Vec<(u128, u128, &HostRule)> = entries
            .iter()
            .filter_map(|(n, r)| match n {
                IpNet::V4(n) => Some((
                    u32::from(n.network()) as u128,
                    u32::from(n.broadcast()) as u128,
                    r,
                )),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6_entries: Vec<(u128, u128, &HostRule)> = entries
            .iter()
            .filter_map(|(n, r)| match n {
                IpNet::V6(n) => Some((u128::from(n.network()), u128::from(n.broadcast()), r)),
                IpNet::V4(_) => None,
            })
            .collect();
        let v4 = sweep(&v4_entries, &mut interner, &mut rules);
        let v6 = sweep(&v6_entries, &mut interner, &mut rules);
        HostTable {
            v4: RangeMap {
                // IPv4 keys were widened from u32: they narrow back losslessly.
                starts: v4
                    .starts
                    .iter()
                    .map(|&s| u32::try_from(s).unwrap_or(u32::MAX))
                    .collect(),
                ends: v4
                    .ends
                    .iter()
                    .map(|&s| u32::try_from(s).unwrap_or(u32::MAX))
                    .collect(),
                values: v4.values,
            },
            v6,
            rules,
        }
    }

    /// The rule for an address, if it is listed.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&HostRule> {
        let idx = match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => self.v6.get(u128::from(a)),
            },
        }?;
        self.rules.get(idx as usize)
    }

    /// Number of disjoint ranges after merging.
    pub fn range_count(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

/// Flattens possibly overlapping inclusive ranges into disjoint ones whose
/// value is the union of the covering entries' rules.
fn sweep(
    entries: &[(u128, u128, &HostRule)],
    interner: &mut HashMap<HostRule, u32>,
    rules: &mut Vec<HostRule>,
) -> RangeMap<u128> {
    // (position, +1 start / -1 end-after, entry); an end at u128::MAX never closes.
    let mut events: Vec<(u128, i8, usize)> = Vec::with_capacity(entries.len() * 2);
    for (i, (s, e, _)) in entries.iter().enumerate() {
        events.push((*s, 1, i));
        if let Some(after) = e.checked_add(1) {
            events.push((after, -1, i));
        }
    }
    events.sort_unstable_by_key(|&(p, k, _)| (p, k));
    let mut app_count = [0u32; 64];
    let mut apps: AppSet = 0;
    let mut ports: BTreeMap<PortSpec, u32> = BTreeMap::new();
    let mut active = 0usize;
    let mut out: RangeMap<u128> = RangeMap::default();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, kind, e) = events[i];
            let rule = entries[e].2;
            for (bit, count) in app_count.iter_mut().enumerate() {
                if rule.apps & (1 << bit) != 0 {
                    if kind > 0 {
                        *count += 1;
                        apps |= 1 << bit;
                    } else {
                        *count -= 1;
                        if *count == 0 {
                            apps &= !(1 << bit);
                        }
                    }
                }
            }
            for p in &rule.ports {
                let c = ports.entry(*p).or_insert(0);
                if kind > 0 {
                    *c += 1;
                } else {
                    *c -= 1;
                    if *c == 0 {
                        ports.remove(p);
                    }
                }
            }
            if kind > 0 {
                active += 1;
            } else {
                active -= 1;
            }
            i += 1;
        }
        if active == 0 {
            continue;
        }
        let end = if i < events.len() {
            events[i].0 - 1
        } else {
            u128::MAX
        };
        let rule = HostRule {
            apps,
            ports: ports.keys().copied().collect(),
        };
        let idx = *interner.entry(rule.clone()).or_insert_with(|| {
            rules.push(rule);
            u32::try_from(rules.len() - 1).unwrap_or(u32::MAX)
        });
        // Merge with the previous range when adjacent and equal.
        if let (Some(last_end), Some(last_val)) = (out.ends.last_mut(), out.values.last())
            && *last_val == idx
            && last_end.checked_add(1) == Some(pos)
        {
            *last_end = end;
            continue;
        }
        out.starts.push(pos);
        out.ends.push(end);
        out.values.push(idx);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::hosts::Proto;

    fn rule(apps: AppSet, ports: &[u16]) -> HostRule {
        HostRule {
            apps,
            ports: ports
                .iter()
                .map(|&p| PortSpec {
                    proto: Proto::Tcp,
                    first: p,
                    last: p,
                })
                .collect(),
        }
    }

    #[test]
    fn overlapping_entries_merge() {
        let t = HostTable::build(&[
            ("192.0.2.0/24".parse().unwrap(), rule(0b01, &[])),
            ("192.0.2.7/32".parse().unwrap(), rule(0b10, &[3306])),
            ("192.0.2.7/32".parse().unwrap(), rule(0b00, &[1863])),
            ("2001:db8::/64".parse().unwrap(), rule(0b100, &[])),
            ("::/0".parse().unwrap(), rule(0b1000, &[])),
        ]);
        let get = |s: &str| t.lookup(s.parse().unwrap()).cloned();
        assert_eq!(get("192.0.2.1"), Some(rule(0b01, &[])));
        assert_eq!(get("192.0.2.7"), Some(rule(0b11, &[1863, 3306])));
        assert_eq!(get("192.0.2.8"), Some(rule(0b01, &[])));
        assert_eq!(get("192.0.3.0"), None);
        assert_eq!(get("198.51.100.1"), None);
        assert_eq!(get("2001:db8::1"), Some(rule(0b1100, &[])));
        assert_eq!(get("2001:db9::1"), Some(rule(0b1000, &[])));
        assert_eq!(
            get("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some(rule(0b1000, &[]))
        );
        // IPv4-mapped IPv6 finds the IPv4 entry.
        assert_eq!(get("::ffff:192.0.2.9"), Some(rule(0b01, &[])));
        // 192.0.2.0/24 splits into three ranges around .7.
        assert_eq!(t.range_count(), 3 + 3);
    }

    #[test]
    fn adjacent_equal_ranges_coalesce() {
        let entries: Vec<(IpNet, HostRule)> = (0..=255)
            .map(|i| (format!("198.51.100.{i}/32").parse().unwrap(), rule(1, &[])))
            .collect();
        let t = HostTable::build(&entries);
        assert_eq!(t.range_count(), 1);
        assert!(t.lookup("198.51.100.77".parse().unwrap()).is_some());
        assert!(t.lookup("0.0.0.0".parse().unwrap()).is_none());
        assert!(t.lookup("255.255.255.255".parse().unwrap()).is_none());
    }

    #[test]
    fn whole_v4_space() {
        let t = HostTable::build(&[("0.0.0.0/0".parse().unwrap(), rule(1, &[]))]);
        assert!(t.lookup("255.255.255.255".parse().unwrap()).is_some());
        assert!(t.lookup("0.0.0.0".parse().unwrap()).is_some());
        assert!(t.lookup("2001:db8::1".parse().unwrap()).is_none());
    }
}
