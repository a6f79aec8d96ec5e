//! Translating Squid access rules into an appwall rule file.
//!
//! Admins who block Messenger with Squid ACLs switch with one command: the
//! `acl` lines (and the files their `"path"` values name) and the
//! `http_access deny` / `http_reply_access deny` lines that use them become
//! message rules (one rule per deny line, its ACLs ANDed, `!acl` negated, each
//! ACL's values ORed), with the squid.conf line in each rule's `why`.
//! A deny line made of `port` ACLs only becomes kernel fast-path ports.
//!
//! Guarantee: no deny is dropped silently. Every `http_access` or
//! `http_reply_access` line that is not translated (allow lines, ACL types
//! appwall cannot see such as `proxy_auth` or `time`, `deny all`...) is
//! reported with `path:line` and the reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::policy::hosts::{PortSpec, Proto, is_app_name};

/// A line that was not (fully) translated, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// File the line is in.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What happened to it.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// A squid.conf that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SquidError {
    path: PathBuf,
    message: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The rule file (TOML), ready for `rules/NAME.toml`.
    pub toml: String,
    /// Deny lines translated into rules or ports.
    pub translated: usize,
    /// Lines not (fully) translated, in file order.
    pub notes: Vec<Note>,
    /// Hosts-file lines suggested for `src` ACLs (networks, then the app name).
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone)]
struct Acl {
    kind: String,
    /// (value, case-insensitive?)
    values: Vec<(String, bool)>,
    /// Header name for req_header / rep_header.
    header: Option<String>,
    problem: Option<String>,
}

/// One `[[rule.match]]` being built.
#[derive(Debug, Clone)]
struct Cond {
    field: &'static str,
    header: Option<String>,
    key: &'static str,
    values: Vec<String>,
    nocase: bool,
    negate: bool,
}

/// Reads a Squid configuration and translates its deny rules. `name` is the
/// app name of the generated rule file.
pub fn import(conf: &Path, name: &str) -> Result<Import, SquidError> {
    let err = |m: String| SquidError {
        path: conf.to_path_buf(),
        message: m,
    };
    if !is_app_name(name) {
        return Err(err(format!(
            "app name {name:?} must be lower-case letters, digits, '-' or '_'"
        )));
    }
    let text = std::fs::read_to_string(conf).map_err(|e| err(format!("cannot read: {e}")))?;
    let base = conf.parent().unwrap_or(Path::new("."));
    let mut acls: BTreeMap<String, Acl> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut rules = String::new();
    let mut ports: Vec<PortSpec> = Vec::new();
    let mut hosts = Vec::new();
    let mut translated = 0;
    let note = |notes: &mut Vec<Note>, line: usize, m: String| {
        notes.push(Note {
            path: conf.to_path_buf(),
            line,
            message: m,
        })
    };
    for (line, words) in logical_lines(&text) {
        let Some(first) = words.first() else { continue };
        match first.as_str() {
            "acl" => define_acl(&mut acls, &words, line, conf, base, &mut notes),
            "http_access" | "http_reply_access" => {
                let reply = first == "http_reply_access";
                let action = words.get(1).map(String::as_str).unwrap_or("");
                let original = words.join(" ");
                if action == "allow" {
                    note(
                        &mut notes,
                        line,
                        format!(
                            "not translated: `{original}`: appwall only blocks; denies that came after this allow in squid.conf now apply to its traffic too"
                        ),
                    );
                    continue;
                }
                if action != "deny" {
                    note(
                        &mut notes,
                        line,
                        format!("not translated: `{original}`: unknown action {action:?}"),
                    );
                    continue;
                }
                match translate_deny(&acls, &words[2..], reply) {
                    Ok(Translated::Ports(p)) => {
                        translated += 1;
                        for x in p {
                            if !ports.contains(&x) {
                                ports.push(x);
                            }
                        }
                    }
                    Ok(Translated::Rule { conds, dropped_src }) => {
                        translated += 1;
                        for (acl, nets) in &dropped_src {
                            note(
                                &mut notes,
                                line,
                                format!(
                                    "`{original}`: src ACL {acl} becomes hosts-file lines (networks with app {name}), not a rule condition"
                                ),
                            );
                            for n in nets {
                                let h = format!("{n} {name}");
                                if !hosts.contains(&h) {
                                    hosts.push(h);
                                }
                            }
                        }
                        write_rule(&mut rules, conf, line, &original, reply, &conds);
                    }
                    Err(why) => note(&mut notes, line, format!("not translated: `{original}`: {why}")),
                }
            }
            _ => {}
        }
    }
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Imported from {} by `appwall import-squid`.",
        conf.display()
    );
    let _ = writeln!(
        toml,
        "# Each rule blocks a connection when all its conditions hold for one HTTP"
    );
    let _ = writeln!(
        toml,
        "# request (or reply, or TLS ClientHello for host conditions)."
    );
    let _ = writeln!(toml, "name = {}", quote(name));
    let _ = writeln!(
        toml,
        "description = {}",
        quote(&format!("Squid deny rules imported from {}", conf.display()))
    );
    let tcp: Vec<String> = ports.iter().map(|p| quote(&port_text(p))).collect();
    if !tcp.is_empty() {
        let _ = writeln!(toml, "ports.tcp = [{}]", tcp.join(", "));
    }
    toml.push_str(&rules);
    Ok(Import {
        toml,
        translated,
        notes,
        hosts,
    })
}

/// True when `v` is an address, or a CIDR network without host bits: what a
/// hosts-file line takes.
fn is_hosts_network(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok() || v.parse::<ipnet::IpNet>().is_ok_and(|n| n.trunc() == n)
}

fn port_text(p: &PortSpec) -> String {
    if p.first == p.last {
        p.first.to_string()
    } else {
        format!("{}-{}", p.first, p.last)
    }
}

/// A TOML basic string with everything escaped.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Squid's logical lines: comments dropped, `\` continuations joined,
/// whitespace-separated words (double quotes keep a word together).
fn logical_lines(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            start = i + 1;
        }
        let t = raw.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(rest) = t.strip_suffix('\\') {
            pending.push_str(rest);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        out.push((start, words(&pending)));
        pending.clear();
    }
    if !pending.is_empty() {
        out.push((start, words(&pending)));
    }
    out
}

fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// ACL types appwall translates, and the field each one tests.
fn supported(kind: &str) -> bool {
    matches!(
        kind,
        "url_regex"
            | "urlpath_regex"
            | "dstdomain"
            | "dstdom_regex"
            | "ssl::server_name"
            | "req_mime_type"
            | "rep_mime_type"
            | "browser"
            | "req_header"
            | "rep_header"
            | "port"
            | "method"
            | "src"
    )
}

fn define_acl(
    acls: &mut BTreeMap<String, Acl>,
    words: &[String],
    line: usize,
    conf: &Path,
    base: &Path,
    notes: &mut Vec<Note>,
) {
    let (Some(name), Some(kind)) = (words.get(1), words.get(2)) else {
        notes.push(Note {
            path: conf.to_path_buf(),
            line,
            message: "acl line without name and type".into(),
        });
        return;
    };
    let mut acl = acls.get(name).cloned().unwrap_or(Acl {
        kind: kind.clone(),
        values: Vec::new(),
        header: None,
        problem: None,
    });
    if acl.kind != *kind {
        acl.problem = Some(format!(
            "acl {name} is defined with two types ({} and {kind})",
            acl.kind
        ));
    }
    if !supported(kind) && acl.problem.is_none() {
        acl.problem = Some(format!(
            "acl {name} is of type {kind}, which appwall cannot see in traffic (it translates url_regex, urlpath_regex, dstdomain, dstdom_regex, ssl::server_name, req_mime_type, rep_mime_type, browser, req_header, rep_header, port, method, src)"
        ));
    }
    let mut nocase = false;
    let mut rest = &words[3..];
    if (kind == "req_header" || kind == "rep_header") && acl.header.is_none() {
        match rest.first() {
            Some(h) => {
                acl.header = Some(h.clone());
                rest = &rest[1..];
            }
            None => acl.problem = Some(format!("acl {name} {kind} needs a header name")),
        }
    }
    for w in rest {
        match w.as_str() {
            "-i" => nocase = true,
            "+i" => nocase = false,
            "-n" => {}
            _ if w.starts_with('"') && w.ends_with('"') && w.len() >= 2 => {
                let p = Path::new(&w[1..w.len() - 1]);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                match std::fs::read_to_string(&p) {
                    Ok(t) => {
                        for item in t
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        {
                            acl.values.push((item.to_string(), nocase));
                        }
                    }
                    Err(e) => {
                        acl.problem = Some(format!("acl {name}: cannot read {}: {e}", p.display()));
                    }
                }
            }
            _ => acl.values.push((w.clone(), nocase)),
        }
    }
    acls.insert(name.clone(), acl);
}

enum Translated {
    Ports(Vec<PortSpec>),
    Rule {
        conds: Vec<Cond>,
        /// (acl name, networks) of `src` ACLs moved to the hosts file.
        dropped_src: Vec<(String, Vec<String>)>,
    },
}

fn translate_deny(acls: &BTreeMap<String, Acl>, names: &[String], reply: bool) -> Result<Translated, String> {
    if names.is_empty() {
        return Err("a deny without ACLs denies everything".into());
    }
    let mut conds = Vec::new();
    let mut dropped_src = Vec::new();
    let mut port_only = Vec::new();
    let mut only_ports = true;
    for n in names {
        let (negate, name) = match n.strip_prefix('!') {
            Some(x) => (true, x),
            None => (false, n.as_str()),
        };
        if name == "all" {
            if negate {
                return Err("`!all` never matches".into());
            }
            continue;
        }
        let acl = acls
            .get(name)
            .ok_or_else(|| format!("acl {name} is not defined"))?;
        if let Some(p) = &acl.problem {
            return Err(p.clone());
        }
        if acl.values.is_empty() {
            return Err(format!("acl {name} has no values"));
        }
        let cases: Vec<bool> = acl.values.iter().map(|v| v.1).collect();
        if cases.iter().any(|c| *c != cases[0]) {
            return Err(format!("acl {name} mixes -i and +i values"));
        }
        let nocase = cases[0];
        let vals: Vec<String> = acl.values.iter().map(|v| v.0.clone()).collect();
        let request_only = |what: &str| -> Result<(), String> {
            if reply {
                Err(format!(
                    "acl {name} ({what}) tests the request; appwall's reply rules see reply headers and the port only"
                ))
            } else {
                Ok(())
            }
        };
        let (field, key, header) = match acl.kind.as_str() {
            "url_regex" => {
                request_only("url_regex")?;
                ("url", "regex", None)
            }
            "urlpath_regex" => {
                request_only("urlpath_regex")?;
                ("path", "regex", None)
            }
            "dstdomain" | "ssl::server_name" => {
                request_only(&acl.kind)?;
                ("host", "domains", None)
            }
            "dstdom_regex" => {
                request_only("dstdom_regex")?;
                ("host", "regex", None)
            }
            "req_mime_type" => {
                request_only("req_mime_type")?;
                ("header", "regex", Some("Content-Type".to_string()))
            }
            "rep_mime_type" => {
                if !reply {
                    return Err(format!(
                        "acl {name} is rep_mime_type, which Squid only evaluates in http_reply_access"
                    ));
                }
                ("header", "regex", Some("Content-Type".to_string()))
            }
            "browser" => {
                request_only("browser")?;
                ("header", "regex", Some("User-Agent".to_string()))
            }
            "req_header" => {
                request_only("req_header")?;
                ("header", "regex", acl.header.clone())
            }
            "rep_header" => {
                if !reply {
                    return Err(format!(
                        "acl {name} is rep_header, which Squid only evaluates on replies"
                    ));
                }
                ("header", "regex", acl.header.clone())
            }
            "method" => {
                request_only("method")?;
                ("method", "values", None)
            }
            "port" => ("port", "ports", None),
            "src" => {
                if negate {
                    return Err(format!(
                        "`!{name}`: a negated src ACL cannot become hosts-file lines"
                    ));
                }
                // Each value becomes a hosts-file line: refuse what the hosts
                // file would refuse (Squid's a-b ranges and netmask form, typos).
                if let Some(v) = vals.iter().find(|v| !is_hosts_network(v)) {
                    return Err(format!(
                        "acl {name}: src value {v:?} is not an address or CIDR network the hosts file takes"
                    ));
                }
                dropped_src.push((name.to_string(), vals.clone()));
                continue;
            }
            other => return Err(format!("acl type {other} is not supported")),
        };
        // Validate values in the rule format's terms.
        match key {
            "regex" => {
                for v in &vals {
                    regex::bytes::RegexBuilder::new(v)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            format!(
                                "acl {name}: regex {v:?} is not valid here: {}",
                                first_line(&e.to_string())
                            )
                        })?;
                }
            }
            "ports" => {
                for v in &vals {
                    PortSpec::parse_range(Proto::Tcp, v)
                        .map_err(|_| format!("acl {name}: {v:?} is not a port or port range"))?;
                }
            }
            "domains" => {
                for v in &vals {
                    let d = v.strip_prefix('.').unwrap_or(v);
                    let ok = !d.is_empty()
                        && d.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
                    if !ok {
                        return Err(format!("acl {name}: {v:?} is not a domain name"));
                    }
                }
            }
            _ => {}
        }
        // Header names as the rule format takes them (see policy/rules.rs).
        if let Some(h) = &header
            && !(!h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(format!("acl {name}: {h:?} is not an HTTP header name"));
        }
        if field == "port" && !negate {
            for v in &vals {
                if let Ok(p) = PortSpec::parse_range(Proto::Tcp, v) {
                    port_only.push(p);
                }
            }
        } else {
            only_ports = false;
        }
        conds.push(Cond {
            field,
            header,
            key,
            values: vals,
            nocase: nocase && key != "ports" && key != "domains",
            negate,
        });
    }
    if conds.is_empty() {
        return Err(if dropped_src.is_empty() {
            "`deny all` blocks everything; appwall blocks apps, not hosts".into()
        } else {
            "only src ACLs: that blocks every connection of those hosts, which is a job for a plain firewall rule".into()
        });
    }
    if conds.iter().all(|c| c.negate) {
        return Err("only negated ACLs: appwall would block almost everything".into());
    }
    if only_ports && !reply && dropped_src.is_empty() {
        return Ok(Translated::Ports(port_only));
    }
    Ok(Translated::Rule { conds, dropped_src })
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or("").trim().to_string()
}

fn write_rule(out: &mut String, conf: &Path, line: usize, original: &str, reply: bool, conds: &[Cond]) {
    let _ = writeln!(out);
    let _ = writeln!(out, "# {}:{}: {original}", conf.display(), line);
    let _ = writeln!(out, "[[rule]]");
    let _ = writeln!(out, "id = \"squid-line-{line}\"");
    let file = conf
        .file_name()
        .map_or("squid.conf".into(), |f| f.to_string_lossy().into_owned());
    let _ = writeln!(out, "why = {}", quote(&format!("{file}:{line}: {original}")));
    if reply {
        let _ = writeln!(out, "reply = true");
    }
    for c in conds {
        let _ = writeln!(out, "[[rule.match]]");
        let _ = writeln!(out, "field = \"{}\"", c.field);
        if let Some(h) = &c.header {
            let _ = writeln!(out, "header = {}", quote(h));
        }
        let vals: Vec<String> = c.values.iter().map(|v| quote(v)).collect();
        let _ = writeln!(out, "{} = [{}]", c.key, vals.join(", "));
        if c.nocase {
            let _ = writeln!(out, "nocase = true");
        }
        if c.negate {
            let _ = writeln!(out, "negate = true");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleLibrary;

    fn run(conf: &str, extra: &[(&str, &str)]) -> Import {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in extra {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let p = dir.path().join("squid.conf");
        std::fs::write(&p, conf).unwrap();
        let imp = import(&p, "site").unwrap();
        // The output is always a valid rule file.
        let lib = RuleLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), imp.toml.clone())]);
        if imp.translated > 0 {
            lib.unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
        }
        imp
    }

    #[test]
    fn the_typical_messenger_config() {
        let imp = run(
            "acl msn url_regex -i gateway.dll\n\
             acl msnd dstdomain messenger.msn.com gateway.messenger.hotmail.com\n\
             acl msn1 req_mime_type ^application/x-msn-messenger$\n\
             acl Skype_UA browser ^skype\n\
             http_access deny msnd\n\
             http_access deny msn\n\
             http_access deny msn1\n",
            &[],
        );
        assert_eq!(imp.translated, 3);
        assert!(imp.notes.is_empty(), "{:?}", imp.notes);
        let t = &imp.toml;
        assert!(
            t.contains(
                "field = \"host\"\ndomains = [\"messenger.msn.com\", \"gateway.messenger.hotmail.com\"]"
            ),
            "{t}"
        );
        assert!(
            t.contains("field = \"url\"\nregex = [\"gateway.dll\"]\nnocase = true"),
            "{t}"
        );
        assert!(
            t.contains("header = \"Content-Type\"\nregex = [\"^application/x-msn-messenger$\"]"),
            "{t}"
        );
        assert!(t.contains("why = \"squid.conf:6: http_access deny msn\""), "{t}");
    }

    #[test]
    fn translation_table() {
        // (squid lines, expected fragment of the output or of a note)
        let table: &[(&str, &str)] = &[
            (
                "acl p urlpath_regex ^/gateway/\nhttp_access deny p\n",
                "field = \"path\"\nregex = [\"^/gateway/\"]",
            ),
            (
                "acl d dstdomain .msn.com\nhttp_access deny d\n",
                "domains = [\".msn.com\"]",
            ),
            (
                "acl d dstdom_regex -i msn\nhttp_access deny d\n",
                "field = \"host\"\nregex = [\"msn\"]\nnocase = true",
            ),
            (
                "acl h req_header X-Requested-With -i msn\nhttp_access deny h\n",
                "header = \"X-Requested-With\"\nregex = [\"msn\"]",
            ),
            (
                "acl r rep_mime_type -i ^application/x-msn-messenger\nhttp_reply_access deny r\n",
                "reply = true\n[[rule.match]]\nfield = \"header\"\nheader = \"Content-Type\"",
            ),
            (
                "acl SSL_ports port 443\nacl CONNECT method CONNECT\nhttp_access deny CONNECT !SSL_ports\n",
                "field = \"method\"\nvalues = [\"CONNECT\"]\n[[rule.match]]\nfield = \"port\"\nports = [\"443\"]\nnegate = true",
            ),
            (
                "acl chat port 1863 5050\nhttp_access deny chat\n",
                "ports.tcp = [\"1863\", \"5050\"]",
            ),
            (
                "acl a url_regex a\nacl a url_regex b\nhttp_access deny a\n",
                "regex = [\"a\", \"b\"]",
            ),
            (
                "acl u url_regex \\\n  gateway.dll\nhttp_access deny u\n",
                "regex = [\"gateway.dll\"]",
            ),
        ];
        for (conf, want) in table {
            let imp = run(conf, &[]);
            assert!(imp.toml.contains(want), "{conf}\n--- got\n{}", imp.toml);
            assert_eq!(imp.translated, 1, "{conf}");
        }
    }

    #[test]
    fn untranslatable_lines_are_listed_never_dropped() {
        let imp = run(
            "acl users proxy_auth REQUIRED\n\
             acl work time MTWHF 08:00-17:00\n\
             acl msn url_regex gateway.dll\n\
             acl d dstdomain msn.com\n\
             http_access allow users\n\
             http_access deny work msn\n\
             http_access deny all\n\
             http_reply_access deny d\n\
             http_access deny undefined_acl\n\
             http_access deny msn\n",
            &[],
        );
        assert_eq!(imp.translated, 1);
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        let expect = [
            (5, "appwall only blocks"),
            (6, "type time"),
            (7, "blocks everything"),
            (8, "tests the request"),
            (9, "not defined"),
        ];
        assert_eq!(notes.len(), expect.len(), "{notes:#?}");
        for ((line, what), n) in expect.iter().zip(&notes) {
            assert!(n.contains(&format!("squid.conf:{line}: ")), "{n}");
            assert!(n.contains(what), "{n} should mention {what}");
        }
    }

    #[test]
    fn acl_files_and_src_acls() {
        let imp = run(
            "acl sales src \"sales.txt\"\nacl msn url_regex -i \"msn.txt\"\nhttp_access deny sales msn\n",
            &[
                ("sales.txt", "# sales desks\n192.0.2.0/28\n\n192.0.2.77\n"),
                ("msn.txt", "gateway\\.dll\n# comment\nmessenger\\.hotmail\n"),
            ],
        );
        assert_eq!(imp.translated, 1);
        assert!(
            imp.toml
                .contains(r"regex = ['gateway\.dll', 'messenger\.hotmail']"),
            "{}",
            imp.toml
        );
        assert_eq!(imp.hosts, vec!["192.0.2.0/28 site", "192.0.2.77 site"]);
        assert!(
            imp.notes[0]
                .message
                .contains("src ACL sales becomes hosts-file lines")
        );
        let missing = run("acl m url_regex \"nope.txt\"\nhttp_access deny m\n", &[]);
        assert!(
            missing.notes[0].message.contains("cannot read"),
            "{:?}",
            missing.notes
        );
    }
}
