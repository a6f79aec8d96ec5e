//! Policy: what to block for whom, validated as a whole before anything uses it.
//!
//! A [`Policy`] joins a parsed hosts file with the rule library: app names are
//! resolved, overlapping lines merged, and the result is immutable. Both the
//! iptables generator and the verdict engine are built from one `Policy`, so
//! the kernel fast path and userspace inspection can never disagree about
//! which host gets which app.

pub mod error;
pub mod hosts;
pub mod library;
pub mod load;
pub mod schedule;
pub mod squid;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use error::{ConfigError, ConfigErrors};
pub use hosts::{AppChoice, HostsFile, PortSpec, Proto};
pub use library::{
    App, AppLibrary, Condition, EchPolicy, Exception, Field, MessageRule, QuicPolicy, Scope, Signature, Test,
};
pub use schedule::{Clock, Schedule};
pub use table::{AppSet, HostRule, HostTable};

/// One listed network with everything that applies to it (lines merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The network.
    pub net: IpNet,
    /// Apps and extra ports.
    pub rule: HostRule,
}

/// A validated, immutable policy.
#[derive(Debug, Clone)]
pub struct Policy {
    library: AppLibrary,
    entries: Vec<HostEntry>,
    table: HostTable,
    hosts_path: Option<PathBuf>,
    /// What hosts lines grant with no schedule (`entries` adds `timed`).
    fixed: Vec<HostEntry>,
    /// Apps hosts lines grant while a schedule is open (`app@name`).
    timed: Vec<(IpNet, AppSet, Schedule)>,
}

impl Policy {
    /// Joins a hosts file and a library. `default_apps` overrides the apps a
    /// line without an app list gets (else: the library's default-enabled apps).
    pub fn new(
        library: AppLibrary,
        hosts: &HostsFile,
        default_apps: Option<&[String]>,
    ) -> Result<Policy, ConfigErrors> {
        Policy::join(library, hosts, default_apps, Vec::new())
    }

    /// Reads the hosts file at `hosts_path` and joins it with `library`,
    /// reporting its syntax errors and the unknown app names of its good
    /// lines together, in line order (see [`HostsFile::load`] for limits).
    pub fn load(
        library: AppLibrary,
        hosts_path: &Path,
        default_apps: Option<&[String]>,
    ) -> Result<Policy, ConfigErrors> {
        let bytes = error::read_limited(hosts_path).map_err(ConfigErrors::one)?;
        let decoded = error::decode(hosts_path, &bytes);
        let (hosts, errors) = HostsFile::parse_partial(hosts_path, &decoded);
        Policy::join(library, &hosts, default_apps, errors)
    }

    fn join(
        library: AppLibrary,
        hosts: &HostsFile,
        default_apps: Option<&[String]>,
        mut errors: Vec<ConfigError>,
    ) -> Result<Policy, ConfigErrors> {
        let default = match default_apps {
            Some(names) => {
                let mut set = 0;
                for n in names {
                    match library.index_of(n) {
                        Some(i) => set |= 1 << i,
                        None => errors.push(ConfigError::file(
                            Path::new("--default-apps"),
                            format!("unknown app {n:?} (known: {})", app_names(&library)),
                        )),
                    }
                }
                set
            }
            None => library_default_set(&library),
        };
        let mut merged: BTreeMap<IpNet, HostRule> = BTreeMap::new();
        let mut timed = Vec::new();
        for line in &hosts.lines {
            let mut rule = HostRule::default();
            match &line.apps {
                AppChoice::Default => rule.apps = default,
                AppChoice::None => {}
                AppChoice::Named(names) => {
                    for (n, l) in names {
                        if n == "all" {
                            rule.apps |= all_set(&library);
                            continue;
                        }
                        let when = line
                            .schedules
                            .iter()
                            .find(|(a, _)| a == n)
                            .and_then(|(_, s)| hosts.schedules.get(s));
                        match (library.index_of(n), when) {
                            (Some(i), Some(w)) => timed.push((line.net, 1u64 << i, w.clone())),
                            (Some(i), None) => rule.apps |= 1 << i,
                            (None, _) => errors.push(ConfigError::at(
                                &hosts.path,
                                *l,
                                format!("unknown app {n:?} (known: {}, all)", app_names(&library)),
                            )),
                        }
                    }
                }
            }
            if let Some(p) = line.port {
                rule.ports.push(p);
            }
            // A line of timed apps only is listed while one is open.
            if rule.apps != 0 || !rule.ports.is_empty() || line.schedules.is_empty() {
                merged.entry(line.net).or_default().merge(&rule);
            }
        }
        errors.sort_by_key(ConfigError::line);
        ConfigErrors::check(errors)?;
        let fixed: Vec<HostEntry> = merged
            .into_iter()
            .map(|(net, rule)| HostEntry { net, rule })
            .collect();
        let mut p = Policy::from_entries(library, Vec::new(), Some(hosts.path.clone()));
        p.fixed = fixed;
        p.timed = timed;
        Ok(p.placed(None))
    }

    /// Entries and table from `fixed` plus the `timed` grants open at `t`
    /// (all of them when `t` is `None`).
    fn placed(mut self, t: Option<std::time::SystemTime>) -> Policy {
        let mut merged: BTreeMap<IpNet, HostRule> =
            self.fixed.iter().map(|e| (e.net, e.rule.clone())).collect();
        for (net, apps, when) in &self.timed {
            if t.is_none_or(|t| when.is_open(t)) {
                merged.entry(*net).or_default().apps |= apps;
            }
        }
        self.entries = merged
            .into_iter()
            .map(|(net, rule)| HostEntry { net, rule })
            .collect();
        let pairs: Vec<(IpNet, HostRule)> = self.entries.iter().map(|e| (e.net, e.rule.clone())).collect();
        self.table = HostTable::build(&pairs);
        self
    }

    /// Every address listed with the default apps: what `scan` uses without `--hosts`.
    pub fn everyone(library: AppLibrary) -> Policy {
        let rule = HostRule {
            apps: library_default_set(&library),
            ports: Vec::new(),
        };
        let entries = ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|n| HostEntry {
                net: n.parse().expect("static network"),
                rule: rule.clone(),
            })
            .collect();
        Policy::from_entries(library, entries, None)
    }

    fn from_entries(library: AppLibrary, entries: Vec<HostEntry>, hosts_path: Option<PathBuf>) -> Policy {
        let pairs: Vec<(IpNet, HostRule)> = entries.iter().map(|e| (e.net, e.rule.clone())).collect();
        Policy {
            table: HostTable::build(&pairs),
            library,
            fixed: entries.clone(),
            entries,
            hosts_path,
            timed: Vec::new(),
        }
    }

    /// This policy as in force at `t` (see [`AppLibrary::at`]): what the
    /// daemon compiles, again whenever [`Policy::next_change`] comes. The
    /// engine holds no clock; a policy never placed in time treats every
    /// schedule as open.
    pub fn at(&self, t: std::time::SystemTime) -> Policy {
        let p = Policy {
            library: self.library.at(t),
            entries: Vec::new(),
            table: self.table.clone(),
            hosts_path: self.hosts_path.clone(),
            fixed: self.fixed.clone(),
            timed: self.timed.clone(),
        };
        p.placed(Some(t))
    }

    /// Time from `t` until a schedule of a rule or a hosts line opens or
    /// closes (`None`: never).
    pub fn next_change(&self, t: std::time::SystemTime) -> Option<std::time::Duration> {
        let hosts = self.timed.iter().filter_map(|(_, _, s)| s.next_change(t)).min();
        match (self.library.next_change(t), hosts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The rule library.
    pub fn library(&self) -> &AppLibrary {
        &self.library
    }

    /// Listed networks, one per distinct network, sorted.
    pub fn entries(&self) -> &[HostEntry] {
        &self.entries
    }

    /// The merged lookup table.
    pub fn table(&self) -> &HostTable {
        &self.table
    }

    /// The hosts file this came from, if any.
    pub fn hosts_path(&self) -> Option<&Path> {
        self.hosts_path.as_deref()
    }

    /// Names of the apps in a set, in library order.
    pub fn app_names(&self, set: AppSet) -> Vec<&str> {
        self.library
            .apps()
            .iter()
            .enumerate()
            .filter(|(i, _)| set & (1 << i) != 0)
            .map(|(_, a)| a.name.as_str())
            .collect()
    }
}

fn library_default_set(library: &AppLibrary) -> AppSet {
    library
        .apps()
        .iter()
        .enumerate()
        .filter(|(_, a)| a.default_enabled)
        .fold(0, |s, (i, _)| s | (1 << i))
}

fn all_set(library: &AppLibrary) -> AppSet {
    (0..library.apps().len()).fold(0, |s, i| s | (1 << i))
}

fn app_names(library: &AppLibrary) -> String {
    library
        .apps()
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The warning for a policy that lists no host (an empty or all-comment
/// hosts file), or `None` when it lists some: `check` and `run` both say it.
pub fn no_hosts_warning(policy: &Policy) -> Option<String> {
    policy.entries().is_empty().then(|| {
        let file = policy
            .hosts_path()
            .map_or("the hosts file".into(), |p| p.display().to_string());
        format!("{file} lists no hosts: appwall run would install no rules and filter nothing")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        let lib = AppLibrary::embedded().unwrap();
        let hosts = HostsFile::parse(Path::new("hosts"), text).map_err(|e| e.to_string())?;
        Policy::new(lib, &hosts, None).map_err(|e| e.to_string())
    }

    #[test]
    fn sales_messenger_accounting_mysql() {
        let p = policy("192.0.2.0/24 msn\n198.51.100.7 mysql\n198.51.100.8\n198.51.100.8:3306\n").unwrap();
        let get = |s: &str| p.table().lookup(s.parse().unwrap()).cloned().unwrap();
        assert_eq!(p.app_names(get("192.0.2.9").apps), vec!["msn"]);
        assert_eq!(p.app_names(get("198.51.100.7").apps), vec!["mysql"]);
        let eight = get("198.51.100.8");
        assert!(!p.app_names(eight.apps).contains(&"mysql"), "mysql is opt-in");
        assert!(p.app_names(eight.apps).contains(&"msn"));
        assert_eq!(eight.ports.len(), 1);
        assert_eq!(p.entries().len(), 3);
    }

    /// `app@schedule` in the hosts file: the app applies while the schedule
    /// is open; a policy not placed in time has every schedule open.
    #[test]
    fn hosts_lines_with_schedules() {
        use std::time::{Duration, UNIX_EPOCH};
        let p = policy("@work Mon-Fri 08:00-18:00\n192.0.2.10 msn@work,irc\n192.0.2.11 msn@work\n").unwrap();
        let names = |p: &Policy, a: &str| {
            p.table()
                .lookup(a.parse().unwrap())
                .map(|r| p.app_names(r.apps).join(","))
        };
        assert_eq!(names(&p, "192.0.2.10").as_deref(), Some("irc,msn"));
        // 2026-11-23 was a Monday.
        let monday = UNIX_EPOCH + Duration::from_secs(1_795_392_000);
        let at9 = p.at(monday + Duration::from_secs(9 * 3600));
        let at7 = p.at(monday + Duration::from_secs(7 * 3600));
        assert_eq!(names(&at9, "192.0.2.10").as_deref(), Some("irc,msn"));
        assert_eq!(names(&at7, "192.0.2.10").as_deref(), Some("irc"));
        assert_eq!(names(&at7, "192.0.2.11"), None);
        assert_eq!(
            p.next_change(monday + Duration::from_secs(7 * 3600)),
            Some(Duration::from_secs(3600))
        );
        let e = policy("192.0.2.10 msn@nosuch\n@bad Mon 18:00-08:00\n@2x Mon 08:00-09:00\n").unwrap_err();
        assert!(e.contains("hosts:1: schedule \"nosuch\" is not defined"), "{e}");
        assert!(e.contains("hosts:2: schedule \"bad\""), "{e}");
        assert!(e.contains("hosts:3: schedule name \"2x\""), "{e}");
    }

    #[test]
    fn unknown_apps_reported_with_line() {
        let err = policy("192.0.2.1 msn\n192.0.2.2 gtalk,icq\n").unwrap_err();
        assert!(err.starts_with("hosts:2: unknown app \"gtalk\""), "{err}");
        assert!(err.contains("hosts:2: unknown app \"icq\""), "{err}");
    }

    #[test]
    fn load_reports_syntax_and_unknown_apps_together() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "192.0.2.1 gtalk\n2001:db8::5:1863\n192.0.2.2 msn\n192.0.2.3 icq\n",
        )
        .unwrap();
        let err = Policy::load(AppLibrary::embedded().unwrap(), &p, None).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = err.errors().iter().map(|e| (e.line(), e.message())).collect();
        assert_eq!(got.len(), 3, "{err}");
        assert_eq!(got[0].0, Some(1));
        assert!(got[0].1.starts_with("unknown app \"gtalk\""));
        assert_eq!(got[1].0, Some(2));
        assert!(got[1].1.contains("ambiguous"));
        assert_eq!(got[2].0, Some(4));
        std::fs::write(&p, "192.0.2.2 msn\n").unwrap();
        Policy::load(AppLibrary::embedded().unwrap(), &p, None).unwrap();
    }
}
