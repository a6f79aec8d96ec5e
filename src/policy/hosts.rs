//! The hosts file: which hosts appwall guards and what it blocks for them.
//!
//! Reads, unchanged, the classic files admins already keep (one IPv4 address
//! per line, `#` comments, blank lines, `IP:PORT` lines) and extends them with
//! CIDR, IPv6 and a per-line app list. Parsing is purely syntactic: app names
//! are checked against the rule library by [`crate::policy::Policy`].
//!
//! IPv6 with a port must be bracketed (`[2001:db8::5]:1863`); a bare form
//! that could be either an address or address plus port
//! (`2001:db8::5:1863`) is refused with both spellings as a hint (the exact
//! rule is on `ambiguous_v6_port`). The file may start with a UTF-8 byte
//! order mark; a line that is not UTF-8 or is longer than 64 KiB is reported
//! by number, and files over 16 MiB are refused unread.
//!
//! Schedules: a line `@name Mon-Fri 08:00-18:00` defines a weekly window
//! (syntax in [`super::schedule`]), and `app@name` in an app list grants the
//! app only while it is open; an undefined name is an error at the line
//! that uses it. Schedule names are never written to kernel rules.
//!
//! Guarantees: every malformed line is reported as `path:line: what`, all of
//! them in one pass; nothing that reaches iptables can carry an option
//! (`192.0.2.1 -j ACCEPT` is an error, not a rule).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::schedule::Schedule;

use ipnet::IpNet;

use super::error::{ConfigError, ConfigErrors, Decoded, decode, read_limited, shorten};

pub use crate::packet::Proto;

/// An inclusive port range on one protocol (`tcp/1863`, `tcp/6660-7000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Protocol the ports belong to.
    pub proto: Proto,
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (equal to `first` for a single port).
    pub last: u16,
}

impl PortSpec {
    /// True when `port` lies in the range.
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.first <= port && port <= self.last
    }

    /// Parses `N` or `N-M` (1..=65535, N <= M).
    pub fn parse_range(proto: Proto, text: &str) -> Result<PortSpec, String> {
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (a, b),
            None => (text, text),
        };
        let first = parse_port(a)?;
        let last = parse_port(b)?;
        if first > last {
            return Err(format!("port range {text} runs backwards"));
        }
        Ok(PortSpec { proto, first, last })
    }

    /// The range as iptables writes it (`1863` or `6660:7000`).
    pub fn iptables_range(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.proto, self.first)
        } else {
            write!(f, "{}/{}-{}", self.proto, self.first, self.last)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{:?} is not a port number", shorten(text)));
    }
    match text.parse::<u32>().ok().and_then(|p| u16::try_from(p).ok()) {
        Some(p) if p >= 1 => Ok(p),
        _ => Err(format!("port {text} is outside 1-65535")),
    }
}

/// Which apps a hosts line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppChoice {
    /// No app list on the line: the library's default set.
    Default,
    /// `IP:PORT` line without an app list: only that port, no inspection.
    None,
    /// An explicit list (`msn,yahoo`), names not yet checked.
    Named(Vec<(String, usize)>),
}

/// One meaningful line of a hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    /// 1-based line number, for error messages.
    pub line: usize,
    /// The host or network (a single address is a /32 or /128).
    pub net: IpNet,
    /// The port of an `IP:PORT` line.
    pub port: Option<PortSpec>,
    /// The apps the line asks for.
    pub apps: AppChoice,
    /// (app, schedule name) of apps written `app@schedule`: the app applies
    /// to the line's hosts only while the schedule is open.
    pub schedules: Vec<(String, String)>,
}

/// A parsed hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its meaningful lines, in file order.
    pub lines: Vec<HostLine>,
    /// Schedules defined by `@name days hh:mm-hh:mm` lines.
    pub schedules: std::collections::BTreeMap<String, Schedule>,
}

impl HostsFile {
    /// Reads and parses a hosts file. Files over
    /// [`MAX_FILE_BYTES`](super::error::MAX_FILE_BYTES) are refused unread;
    /// a line that is not UTF-8 or longer than
    /// [`MAX_LINE_BYTES`](super::error::MAX_LINE_BYTES) is reported with its
    /// number and the other lines are still checked.
    pub fn load(path: &Path) -> Result<HostsFile, ConfigErrors> {
        let bytes = read_limited(path).map_err(ConfigErrors::one)?;
        HostsFile::parse_decoded(path, &decode(path, &bytes))
    }

    /// Parses hosts-file text; `path` is used only in messages. A leading
    /// byte order mark is skipped.
    pub fn parse(path: &Path, text: &str) -> Result<HostsFile, ConfigErrors> {
        HostsFile::parse_decoded(path, &decode(path, text.as_bytes()))
    }

    fn parse_decoded(path: &Path, decoded: &Decoded) -> Result<HostsFile, ConfigErrors> {
        let (file, errors) = HostsFile::parse_partial(path, decoded);
        ConfigErrors::check(errors)?;
        Ok(file)
    }

    /// Parses what it can: the good lines, and an error for every other one
    /// (encoding and length problems included), so a caller can check the
    /// good lines' app names and report everything in one pass.
    pub fn parse_partial(path: &Path, decoded: &Decoded) -> (HostsFile, Vec<ConfigError>) {
        let mut lines = Vec::new();
        let mut errors = decoded.errors.clone();
        let mut schedules = std::collections::BTreeMap::new();
        for (i, raw) in decoded.text.lines().enumerate() {
            let n = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if let Some(def) = content.strip_prefix('@') {
                // `@name schedule`: a named schedule for `app@name`.
                let (name, spec) = def.split_once(char::is_whitespace).unwrap_or((def, ""));
                let parsed = if !is_app_name(name) {
                    Err(format!(
                        "schedule name {:?} must be lower-case letters, digits, '-' or '_'",
                        shorten(name)
                    ))
                } else if schedules.contains_key(name) {
                    Err(format!("schedule {name:?} is defined twice"))
                } else {
                    Schedule::parse(spec).map_err(|e| format!("schedule {name:?}: {e}"))
                };
                match parsed {
                    Ok(sched) => {
                        schedules.insert(name.to_string(), sched);
                    }
                    Err(_) if decoded.is_bad(n) => {}
                    Err(msg) => errors.push(ConfigError::at(path, n, msg)),
                }
                continue;
            }
            match parse_line(content, n) {
                Ok(l) => lines.push(l),
                // A line already reported (not UTF-8) gets one message.
                Err(_) if decoded.is_bad(n) => {}
                Err(msg) => errors.push(ConfigError::at(path, n, msg)),
            }
        }
        for l in &lines {
            for (_, s) in &l.schedules {
                if !schedules.contains_key(s) {
                    errors.push(ConfigError::at(
                        path,
                        l.line,
                        format!("schedule {s:?} is not defined (add a line `@{s} Mon-Fri 08:00-18:00`)"),
                    ));
                }
            }
        }
        errors.sort_by_key(ConfigError::line);
        let file = HostsFile {
            path: path.to_path_buf(),
            lines,
            schedules,
        };
        (file, errors)
    }
}

fn parse_line(content: &str, line: usize) -> Result<HostLine, String> {
    let mut fields = content.split_whitespace();
    let addr = fields.next().unwrap_or_default();
    let rest: Vec<&str> = fields.collect();
    let (net, port) = parse_address(addr)?;
    let mut schedules = Vec::new();
    let apps = if rest.is_empty() {
        if port.is_some() {
            AppChoice::None
        } else {
            AppChoice::Default
        }
    } else {
        let mut names = Vec::new();
        for word in rest.join(",").split(',').filter(|s| !s.is_empty()) {
            let name = match word.split_once('@') {
                Some((app, sched)) => {
                    if !is_app_name(sched) {
                        return Err(format!("{:?} is not a schedule name", shorten(sched)));
                    }
                    schedules.push((app.to_string(), sched.to_string()));
                    app
                }
                None => word,
            };
            if !is_app_name(name) {
                return Err(format!(
                    "{:?} is not an app name (expected a list like msn,yahoo after the address)",
                    shorten(name)
                ));
            }
            names.push((name.to_string(), line));
        }
        if names.is_empty() {
            return Err("empty app list".to_string());
        }
        AppChoice::Named(names)
    };
    Ok(HostLine {
        line,
        net,
        port,
        apps,
        schedules,
    })
}

/// App names are lower-case words: they end up in ipset and chain names.
pub fn is_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 20
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Parses `ADDR`, `ADDR/LEN`, `IPv4[/LEN]:PORT[/proto]`, `[IPv6[/LEN]]:PORT[/proto]`.
fn parse_address(text: &str) -> Result<(IpNet, Option<PortSpec>), String> {
    let q = shorten(text);
    let (addr, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{q:?}: missing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{q:?}: expected ':PORT' after ']'"))?;
        (inside, Some(port))
    } else if text.contains('.') && text.contains(':') {
        let (a, p) = text.rsplit_once(':').unwrap_or((text, ""));
        (a, Some(p))
    } else {
        if let Some(hint) = ambiguous_v6_port(text) {
            return Err(hint);
        }
        (text, None)
    };
    let net = parse_net(addr)?;
    let port = match port {
        None => None,
        Some(p) => {
            let (range, proto) = match p.split_once('/') {
                Some((r, "tcp")) => (r, Proto::Tcp),
                Some((r, "udp")) => (r, Proto::Udp),
                Some((_, other)) => {
                    return Err(format!("{:?} is not a protocol (use tcp or udp)", shorten(other)));
                }
                None => (p, Proto::Tcp),
            };
            Some(PortSpec::parse_range(proto, range).map_err(|e| format!("{q:?}: {e}"))?)
        }
    };
    Ok((net, port))
}

/// The rule for IPv6 with a port: the port form is `[ADDR]:PORT` only. A bare
/// IPv6 text `A:P` where `A` alone is an IPv6 address and `P` is a port or
/// port range (decimal, 1-65535, optional `/tcp` or `/udp`) is refused with
/// a hint, whether or not `A:P` happens to be an address too: in
/// `2001:db8::5:1863` the `::` lets `1863` be a group *or* a port, and
/// guessing either way would guard the wrong thing. Such an address is
/// written unambiguously as `2001:db8::5:1863/128` or in full
/// (`2001:db8:0:0:0:0:5:1863`). Addresses whose last group is not decimal,
/// or whose rest is no address (`2001:db8::1`, `::1`), are not affected.
fn ambiguous_v6_port(text: &str) -> Option<String> {
    if text.contains('.') || text.contains('[') {
        return None;
    }
    let (addr, port) = text.rsplit_once(':')?;
    let range = match port.split_once('/') {
        Some((r, "tcp" | "udp")) => r,
        Some(_) => return None,
        None => port,
    };
    if range.is_empty() || !range.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    PortSpec::parse_range(Proto::Tcp, range).ok()?;
    addr.parse::<std::net::Ipv6Addr>().ok()?;
    let q = shorten(text);
    Some(if text.parse::<std::net::Ipv6Addr>().is_ok() {
        format!(
            "{q:?} is ambiguous: write [{addr}]:{port} for port {port} of {addr}, or {text}/128 for the address {text}"
        )
    } else {
        format!("{q:?}: an IPv6 address with a port must be bracketed: [{addr}]:{port}")
    })
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    let q = shorten(text);
    if text.is_empty() {
        return Err("missing address".to_string());
    }
    if let Some((_, len)) = text.split_once('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("{q:?} is not an IPv4 or IPv6 network"))?;
        if net.trunc() != net {
            return Err(format!("{q:?} has host bits set; did you mean {}? ", net.trunc())
                .trim_end()
                .to_string());
        }
        let _ = len;
        Ok(net)
    } else {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("{q:?} is not an IPv4 or IPv6 address"))?;
        Ok(IpNet::from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<HostLine, String> {
        match HostsFile::parse(Path::new("h"), text) {
            Ok(f) => Ok(f.lines.into_iter().next().expect("one line")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn accepted_lines() {
        let tcp = |p| {
            Some(PortSpec {
                proto: Proto::Tcp,
                first: p,
                last: p,
            })
        };
        let named = |v: &[&str]| AppChoice::Named(v.iter().map(|s| (s.to_string(), 1)).collect());
        let table: Vec<(&str, &str, Option<PortSpec>, AppChoice)> = vec![
            ("192.0.2.7", "192.0.2.7/32", None, AppChoice::Default),
            ("  192.0.2.7   # sales", "192.0.2.7/32", None, AppChoice::Default),
            ("192.0.2.7:3306", "192.0.2.7/32", tcp(3306), AppChoice::None),
            (
                "192.0.2.7:8000/udp",
                "192.0.2.7/32",
                Some(PortSpec {
                    proto: Proto::Udp,
                    first: 8000,
                    last: 8000,
                }),
                AppChoice::None,
            ),
            (
                "192.0.2.7:6660-7000",
                "192.0.2.7/32",
                Some(PortSpec {
                    proto: Proto::Tcp,
                    first: 6660,
                    last: 7000,
                }),
                AppChoice::None,
            ),
            (
                "192.0.2.0/24 msn,yahoo",
                "192.0.2.0/24",
                None,
                named(&["msn", "yahoo"]),
            ),
            (
                "192.0.2.0/24 msn, yahoo",
                "192.0.2.0/24",
                None,
                named(&["msn", "yahoo"]),
            ),
            ("198.51.100.7 mysql", "198.51.100.7/32", None, named(&["mysql"])),
            ("2001:db8::5", "2001:db8::5/128", None, AppChoice::Default),
            ("2001:db8::/64", "2001:db8::/64", None, AppChoice::Default),
            (
                "[2001:db8::5]:1863",
                "2001:db8::5/128",
                tcp(1863),
                AppChoice::None,
            ),
            (
                "[2001:db8::5]:1863 msn",
                "2001:db8::5/128",
                tcp(1863),
                named(&["msn"]),
            ),
            ("192.0.2.0/24:3306", "192.0.2.0/24", tcp(3306), AppChoice::None),
            // IPv6 forms the port rule leaves alone.
            (
                "2001:db8::5:1863/128",
                "2001:db8::5:1863/128",
                None,
                AppChoice::Default,
            ),
            (
                "2001:db8:0:0:0:0:5:1863",
                "2001:db8::5:1863/128",
                None,
                AppChoice::Default,
            ),
            (
                "2001:db8::5:abcd",
                "2001:db8::5:abcd/128",
                None,
                AppChoice::Default,
            ),
            ("::1", "::1/128", None, AppChoice::Default),
            ("2001:db8::1 msn", "2001:db8::1/128", None, named(&["msn"])),
            ("\u{feff}192.0.2.7", "192.0.2.7/32", None, AppChoice::Default),
        ];
        for (line, net, port, apps) in table {
            let got = one(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(got.net.to_string(), net, "{line}");
            assert_eq!(got.port, port, "{line}");
            assert_eq!(got.apps, apps, "{line}");
        }
    }

    #[test]
    fn rejected_lines() {
        let table = [
            ("192.0.2.300", "not an IPv4 or IPv6 address"),
            ("192.0.2.1 -j ACCEPT", "\"-j\" is not an app name"),
            ("192.0.2.1;reboot", "not an IPv4 or IPv6 address"),
            ("192.0.2.1:0", "outside 1-65535"),
            ("192.0.2.1:70000", "outside 1-65535"),
            ("192.0.2.1:http", "is not a port number"),
            ("192.0.2.1:2000-1000", "runs backwards"),
            ("192.0.2.1:80/sctp", "is not a protocol"),
            ("192.0.2.5/24", "host bits set; did you mean 192.0.2.0/24?"),
            ("192.0.2.0/33", "not an IPv4 or IPv6 network"),
            ("[2001:db8::5]", "expected ':PORT'"),
            ("[2001:db8::5:1863", "missing ']'"),
            ("192.0.2.1 MSN", "not an app name"),
            (
                "2001:db8::5:1863",
                "\"2001:db8::5:1863\" is ambiguous: write [2001:db8::5]:1863 for port 1863 of 2001:db8::5, or 2001:db8::5:1863/128 for the address",
            ),
            ("2001:db8::5:1863 msn", "is ambiguous"),
            ("2001:db8::5:18630", "must be bracketed: [2001:db8::5]:18630"),
            (
                "2001:db8::5:1863/udp",
                "must be bracketed: [2001:db8::5]:1863/udp",
            ),
            (
                "2001:db8::5:6660-7000",
                "must be bracketed: [2001:db8::5]:6660-7000",
            ),
            ("::5:1863", "ambiguous: write [::5]:1863"),
        ];
        for (line, want) in table {
            let err = one(line).expect_err(line);
            assert!(err.starts_with("h:1: "), "{line}: {err}");
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn classic_file_and_all_errors_at_once() {
        let classic = "# blocked hosts\n\n192.0.2.10\n192.0.2.11 # boss\n192.0.2.12:3306\n";
        let f = HostsFile::parse(Path::new("hosts"), classic).unwrap();
        assert_eq!(f.lines.len(), 3);
        assert_eq!(f.lines[2].line, 5);

        let bad = "192.0.2.1\nnonsense\n192.0.2.2\n10.0.0.1:99999\n";
        let err = HostsFile::parse(Path::new("hosts"), bad).unwrap_err();
        let lines: Vec<_> = err.errors().iter().map(|e| e.line()).collect();
        assert_eq!(lines, vec![Some(2), Some(4)]);
        assert!(err.to_string().starts_with("hosts:2: "));
    }

    #[test]
    fn encoding_bom_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        let mut bytes = b"\xEF\xBB\xBF192.0.2.1\n192.0.2.2 # caf\xE9\n192.0.2.3 m\xFCsn\nnonsense\n".to_vec();
        bytes.extend_from_slice(format!("192.0.2.4 {}\n", "x".repeat(100_000)).as_bytes());
        bytes.extend_from_slice(format!("{}\n192.0.2.5\n", "9".repeat(1000)).as_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let err = HostsFile::load(&p).unwrap_err();
        let lines: Vec<_> = err.errors().iter().map(|e| e.line()).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(4), Some(5), Some(6)], "{err}");
        let msgs: Vec<&str> = err.errors().iter().map(|e| e.message()).collect();
        assert!(
            msgs[0].starts_with("not valid UTF-8 (byte 0xE9 at column 16)"),
            "{}",
            msgs[0]
        );
        assert!(
            msgs[1].starts_with("not valid UTF-8 (byte 0xFC at column 12)"),
            "{}",
            msgs[1]
        );
        assert!(
            msgs[3].starts_with("line is 100010 bytes; lines may have at most 65536"),
            "{}",
            msgs[3]
        );
        // A long bad token is quoted cut at 120 characters.
        assert!(
            msgs[4].contains(&format!("\"{}…\" is not", "9".repeat(120))),
            "{}",
            msgs[4]
        );
        assert!(msgs.iter().all(|m| m.len() < 300));

        // Good lines survive, so app names can be checked in the same pass.
        let d = decode(&p, &bytes);
        let (file, errors) = HostsFile::parse_partial(&p, &d);
        assert_eq!(errors.len(), 5);
        let nets: Vec<String> = file.lines.iter().map(|l| l.net.to_string()).collect();
        assert_eq!(nets, vec!["192.0.2.1/32", "192.0.2.2/32", "192.0.2.5/32"]);
    }
}
