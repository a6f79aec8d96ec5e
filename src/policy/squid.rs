//! Translating Squid access rules into an appwall rule file.
//!
//! Admins who block Messenger with Squid ACLs switch with one command: the
//! `acl` lines (and the files their `"path"` values name) and the
//! `http_access` / `http_reply_access` lines that use them become message
//! rules with Squid's semantics: one rule per deny line, its ACLs ANDed,
//! `!acl` negated, each ACL's values ORed, the squid.conf line in its `why`.
//! The lists are first-match: every translatable `allow` line before a deny
//! becomes an exception (`[[rule.except]]`) of that deny, and an
//! `allow all` makes the lines after it dead (reported). `src` ACLs become
//! `src` conditions (negated ones too) and, when not negated, suggested
//! hosts-file lines; `time` ACLs become the rule's (or exception's) `when`
//! schedule, `!time` its complement in the week. A deny line of `port`
//! ACLs only, with no allow before it, becomes kernel fast-path ports.
//!
//! The configuration is read the way Squid reads it:
//! - a word starting with `#` starts a comment, also after a directive
//!   (`acl Safe_ports port 80  # http`); a `#` inside a word is kept;
//! - `include` takes files and shell wildcards (matches read in sorted
//!   order, as glob(3) gives them), nested at most 16 deep as in Squid; a
//!   cycle is refused at the `include` line;
//! - a quoted ACL value `"path"` names a file of values (one per line, `#`
//!   comment lines, text after a whitespace-separated `#` dropped), unless
//!   `configuration_includes_quoted_values on` is in effect, which makes
//!   quoted values literal (with `\` escapes); `parameters("path")` always
//!   names a file;
//! - `-i` and `+i` switch case sensitivity between values of the same line
//!   (mixed values keep their own case rule via `(?i:...)`), `-n` is ignored
//!   and `--` ends the options;
//! - the ACLs Squid predefines (`all`, `localhost`, `to_localhost`,
//!   `manager`, `CONNECT`) are known, so Debian's default squid.conf imports;
//! - `src` values may be addresses, `addr/len`, `addr/netmask` or
//!   `addr1-addr2` ranges (a range becomes the CIDR networks covering it).
//!
//! Relative paths (includes and value files) are taken from the directory of
//! the squid.conf given on the command line: Squid resolves them from its
//! working directory, which the import cannot know, and configurations
//! normally use absolute paths anyway. Include and value files must be
//! regular files within the size limits of [`crate::policy::error`].
//!
//! Guarantee: no access line is dropped silently. Every `http_access` or
//! `http_reply_access` line that is not translated (ACL types appwall
//! cannot see such as `proxy_auth`, `deny all`, lines after `allow all`...)
//! is reported with `path:line` and the reason, and so is every include or
//! value file that could not be read. An untranslatable allow line is
//! reported with its consequence: the denies after it now apply to its
//! traffic too. The oracle test (`tests/integration/squid_oracle.rs`)
//! checks the translation against a real Squid.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::policy::error::{decode, read_limited, shorten};
use crate::policy::hosts::{PortSpec, Proto, is_app_name};
use crate::policy::library::check_regex;
use crate::policy::schedule::Schedule;

/// Deepest `include` nesting, as in Squid (the main file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one `include` line (its wildcards) may pull in.
pub const MAX_INCLUDE_MATCHES: usize = 1000;
/// Most bytes read from all files together (squid.conf, includes, value
/// files): wildcard includes cannot make an import read without end.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;
/// Most directives read from all files together (a bound on memory for
/// include trees that fan out).
pub const MAX_DIRECTIVES: usize = 1_000_000;

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

/// One word of a directive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    /// Written in double quotes (or as `parameters("...")`).
    quoted: bool,
    /// `parameters("...")`: always a file of values.
    file: bool,
}

/// One directive with where it came from.
#[derive(Debug, Clone)]
struct Directive {
    path: PathBuf,
    line: usize,
    words: Vec<Word>,
    /// `configuration_includes_quoted_values` was on for this line.
    quoted_values: bool,
}

impl Directive {
    fn text(&self) -> String {
        self.words
            .iter()
            .map(|w| {
                if w.quoted {
                    format!("\"{}\"", w.text)
                } else {
                    w.text.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads squid.conf and its includes into directives, in Squid's order.
struct Reader {
    /// Directory relative paths are taken from.
    base: PathBuf,
    /// Files being read (canonical paths), outermost first: cycle check.
    stack: Vec<PathBuf>,
    quoted_values: bool,
    /// Bytes left to read (see [`MAX_TOTAL_BYTES`]).
    budget: u64,
    out: Vec<Directive>,
    /// (directives read before it, note): placed before that directive's
    /// own notes when all are put in reading order.
    notes: Vec<(usize, Note)>,
}

impl Reader {
    fn note(&mut self, path: &Path, line: usize, message: String) {
        let at = self.out.len();
        self.notes.push((
            at,
            Note {
                path: path.to_path_buf(),
                line,
                message,
            },
        ));
    }

    /// Reads one file at include depth `depth` (the main file is 0).
    fn read(&mut self, path: &Path, depth: usize) -> Result<(), String> {
        let bytes = read_regular(path, &mut self.budget)?;
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.stack.push(canon);
        let decoded = decode(path, &bytes);
        for e in &decoded.errors {
            let line = e.line().unwrap_or(1);
            self.note(path, line, format!("line skipped: {}", e.message()));
        }
        for (line, text) in logical_lines(&decoded.text) {
            if decoded.is_bad(line) {
                continue;
            }
            // Tokenized here: configuration_includes_quoted_values changes
            // how the lines after it are read.
            let words = words(&text, self.quoted_values);
            if self.out.len() >= MAX_DIRECTIVES {
                self.note(
                    path,
                    line,
                    format!("more than {MAX_DIRECTIVES} directives; the rest is not read"),
                );
                break;
            }
            let Some(first) = words.first() else { continue };
            match first.text.as_str() {
                "include" if !first.quoted => self.include(path, line, &words[1..], depth),
                "configuration_includes_quoted_values" if !first.quoted => {
                    match words.get(1).map(|w| w.text.as_str()) {
                        Some("on") => self.quoted_values = true,
                        Some("off") => self.quoted_values = false,
                        _ => self.note(
                            path,
                            line,
                            "configuration_includes_quoted_values takes on or off".into(),
                        ),
                    }
                }
                _ => self.out.push(Directive {
                    path: path.to_path_buf(),
                    line,
                    words,
                    quoted_values: self.quoted_values,
                }),
            }
        }
        self.stack.pop();
        Ok(())
    }

    fn include(&mut self, path: &Path, line: usize, args: &[Word], depth: usize) {
        if args.is_empty() {
            self.note(path, line, "include without a file name".into());
            return;
        }
        for arg in args {
            let pattern = resolve(&self.base, &arg.text);
            let files = match glob(&pattern) {
                Ok(f) => f,
                Err(e) => {
                    self.note(path, line, format!("include {}: {e}", shorten(&arg.text)));
                    continue;
                }
            };
            if files.is_empty() {
                self.note(
                    path,
                    line,
                    format!(
                        "include {}: no such file (Squid refuses to start on this)",
                        shorten(&pattern.display().to_string())
                    ),
                );
            }
            for f in files {
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    self.note(
                        path,
                        line,
                        format!(
                            "include {}: includes nested more than {MAX_INCLUDE_DEPTH} deep (Squid's limit); not read",
                            f.display()
                        ),
                    );
                    continue;
                }
                let canon = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
                if let Some(i) = self.stack.iter().position(|p| *p == canon) {
                    let chain: Vec<String> = self.stack[i..]
                        .iter()
                        .chain(std::iter::once(&canon))
                        .map(|p| p.display().to_string())
                        .collect();
                    self.note(
                        path,
                        line,
                        format!("include cycle refused: {}", chain.join(" includes ")),
                    );
                    continue;
                }
                if let Err(e) = self.read(&f, depth + 1) {
                    self.note(path, line, format!("include {}: {e}", f.display()));
                }
            }
        }
    }
}

/// Reads a file that must be a regular file (not a FIFO or device, which
/// could block or never end) within [`crate::policy::error::MAX_FILE_BYTES`].
/// `budget` is what is left of [`MAX_TOTAL_BYTES`].
fn read_regular(path: &Path, budget: &mut u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > *budget {
        return Err(format!(
            "not read: the files of one import may have at most {MAX_TOTAL_BYTES} bytes together"
        ));
    }
    let bytes = read_limited(path).map_err(|e| e.message().to_string())?;
    *budget = budget.saturating_sub(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    Ok(bytes)
}

/// `text` as a path, relative ones taken from `base`.
fn resolve(base: &Path, text: &str) -> PathBuf {
    let p = Path::new(text);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// True when `s` has shell wildcard characters.
fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands shell wildcards in any component of `pattern` (`*`, `?`,
/// `[abc]`, `[a-z]`, `[!x]`; a leading `.` must be matched literally), as
/// glob(3) does for Squid: existing paths only, sorted per component.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for comp in pattern.components() {
        let c = comp.as_os_str().to_string_lossy();
        if !has_wildcard(&c) {
            for p in &mut current {
                p.push(comp.as_os_str());
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &current {
            let listing = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = std::fs::read_dir(listing) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| wildcard_match(&c, n))
                .collect();
            names.sort();
            for n in names {
                next.push(dir.join(n));
                if next.len() > MAX_INCLUDE_MATCHES {
                    return Err(format!("matches more than {MAX_INCLUDE_MATCHES} files"));
                }
            }
        }
        current = next;
    }
    current.retain(|p| p.exists());
    Ok(current)
}

/// One element of a wildcard pattern.
enum Pat {
    Star,
    Any,
    Class(Vec<(char, char)>, bool),
    Lit(char),
}

fn compile_wildcard(pattern: &str) -> Vec<Pat> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push(Pat::Star),
            '?' => out.push(Pat::Any),
            '[' => {
                let mut j = i + 1;
                let negate = matches!(chars.get(j), Some('!' | '^'));
                if negate {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let start = j;
                while j < chars.len() && (chars[j] != ']' || j == start) {
                    if j + 2 < chars.len() && chars[j + 1] == '-' && chars[j + 2] != ']' {
                        ranges.push((chars[j], chars[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((chars[j], chars[j]));
                        j += 1;
                    }
                }
                if j >= chars.len() {
                    // No closing bracket: a literal '['.
                    out.push(Pat::Lit('['));
                } else {
                    out.push(Pat::Class(ranges, negate));
                    i = j;
                }
            }
            c => out.push(Pat::Lit(c)),
        }
        i += 1;
    }
    out
}

/// Shell wildcard match of a whole file name (linear backtracking on the
/// last `*`, so no pattern can make it exponential).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pat = compile_wildcard(pattern);
    let name: Vec<char> = name.chars().collect();
    let one = |p: &Pat, c: char| match p {
        Pat::Any => true,
        Pat::Lit(l) => *l == c,
        Pat::Class(r, neg) => r.iter().any(|(a, b)| *a <= c && c <= *b) != *neg,
        Pat::Star => false,
    };
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() && matches!(pat[p], Pat::Star) {
            star = Some((p, n));
            p += 1;
        } else if p < pat.len() && one(&pat[p], name[n]) {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|x| matches!(x, Pat::Star))
}

/// Squid's predefined ACLs (squid.conf.documented: "ACLs all, manager,
/// localhost, to_localhost, and CONNECT are predefined"), as Squid defines
/// them; a configuration may add values to them.
fn predefined() -> BTreeMap<String, Acl> {
    let acl = |kind: &str, values: &[(&str, bool)]| Acl {
        kind: kind.to_string(),
        values: values.iter().map(|(v, i)| ((*v).to_string(), *i)).collect(),
        header: None,
        problem: None,
    };
    let mut m = BTreeMap::new();
    m.insert(
        "all".to_string(),
        acl("src", &[("0.0.0.0/0", false), ("::/0", false)]),
    );
    m.insert(
        "localhost".to_string(),
        acl("src", &[("127.0.0.1/32", false), ("::1/128", false)]),
    );
    m.insert(
        "to_localhost".to_string(),
        acl(
            "dst",
            &[
                ("127.0.0.0/8", false),
                ("0.0.0.0/32", false),
                ("::1/128", false),
                ("::/128", false),
            ],
        ),
    );
    m.insert(
        "manager".to_string(),
        acl(
            "url_regex",
            &[
                ("^cache_object://", true),
                ("^[^:]+://[^/]+/squid-internal-mgr/", false),
            ],
        ),
    );
    m.insert("CONNECT".to_string(), acl("method", &[("CONNECT", false)]));
    m
}

/// Reads a Squid configuration and translates its deny rules. `name` is the
/// app name of the generated rule file.
pub fn import(conf: &Path, name: &str) -> Result<Import, SquidError> {
    import_with(conf, name, None)
}

/// [`import`] with the UTC offset Squid's local time had (`+01:00`): time
/// ACLs become schedules in that offset (UTC when `None`).
pub fn import_with(conf: &Path, name: &str, utc_offset: Option<&str>) -> Result<Import, SquidError> {
    let err = |m: String| SquidError {
        path: conf.to_path_buf(),
        message: m,
    };
    if !is_app_name(name) {
        return Err(err(format!(
            "app name {:?} must be lower-case letters, digits, '-' or '_'",
            shorten(name)
        )));
    }
    if let Some(o) = utc_offset
        && Schedule::parse(&format!("00:00-24:00 {o}")).is_err()
    {
        return Err(err(format!(
            "--utc-offset {:?} is not +hh:mm or -hh:mm",
            shorten(o)
        )));
    }
    let offset = utc_offset;
    let base = conf.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut reader = Reader {
        base: base.clone(),
        stack: Vec::new(),
        quoted_values: false,
        budget: MAX_TOTAL_BYTES,
        out: Vec::new(),
        notes: Vec::new(),
    };
    reader.read(conf, 0).map_err(err)?;
    let Reader {
        out: directives,
        notes: read_notes,
        mut budget,
        ..
    } = reader;
    let mut notes: Vec<Note> = Vec::new();
    // Notes of reading (includes, encoding) merged in reading order: those
    // made before directive i come before directive i's own notes.
    let mut read_notes = read_notes.into_iter().peekable();
    let mut acls = predefined();
    let mut rules = String::new();
    let mut ports: Vec<PortSpec> = Vec::new();
    let mut hosts = Vec::new();
    let mut seen_hosts = std::collections::HashSet::new();
    let mut seen_ports = std::collections::HashSet::new();
    let mut translated = 0;
    let mut ids = std::collections::HashSet::new();
    // Per list (http_access, http_reply_access): the allow lines so far,
    // and the allow line that matches everything, if any.
    let mut excepts: [Vec<Except>; 2] = [Vec::new(), Vec::new()];
    let mut allow_all: [Option<String>; 2] = [None, None];
    let note = |notes: &mut Vec<Note>, d: &Directive, m: String| {
        notes.push(Note {
            path: d.path.clone(),
            line: d.line,
            message: m,
        })
    };
    for (i, d) in directives.iter().enumerate() {
        while let Some((_, n)) = read_notes.next_if(|(at, _)| *at <= i) {
            notes.push(n);
        }
        let first = d.words[0].text.as_str();
        match first {
            "acl" => {
                let problems = define_acl(&mut acls, d, &base, &mut budget);
                for p in problems {
                    note(&mut notes, d, p);
                }
            }
            "http_access" | "http_reply_access" => {
                let reply = first == "http_reply_access";
                let list = usize::from(reply);
                let action = d.words.get(1).map(|w| w.text.as_str()).unwrap_or("");
                let original = shorten(&d.text());
                if action != "deny" && action != "allow" {
                    note(
                        &mut notes,
                        d,
                        format!(
                            "not translated: `{original}`: unknown action {:?}",
                            shorten(action)
                        ),
                    );
                    continue;
                }
                let names: Vec<String> = d.words[2..].iter().map(|w| w.text.clone()).collect();
                if let Some(at) = &allow_all[list] {
                    note(
                        &mut notes,
                        d,
                        format!("not translated: `{original}`: never reached, {at} allows everything first"),
                    );
                    continue;
                }
                if action == "allow" {
                    // First match wins: an allow line exempts what it
                    // matches from every deny after it in the same list.
                    match translate_line(&acls, &names, reply, offset) {
                        Ok(t) if t.conds.is_empty() && t.when.is_none() => {
                            allow_all[list] = Some(format!("{}:{}", file_name(d), d.line));
                        }
                        Ok(t) => excepts[list].push(Except {
                            why: format!("{}:{}: {original}", file_name(d), d.line),
                            conds: t.conds,
                            when: t.when,
                        }),
                        Err(why) => note(
                            &mut notes,
                            d,
                            format!(
                                "not translated: `{original}`: {why}; the denies after this allow in squid.conf now apply to its traffic too"
                            ),
                        ),
                    }
                    continue;
                }
                match translate_line(&acls, &names, reply, offset).and_then(|t| deny_checks(t, reply)) {
                    Ok(t) => {
                        translated += 1;
                        for n in &t.src_hosts {
                            let h = format!("{n} {name}");
                            if seen_hosts.insert(h.clone()) {
                                hosts.push(h);
                            }
                        }
                        let port_only = !reply
                            && t.when.is_none()
                            && excepts[list].is_empty()
                            && t.conds.iter().all(|c| c.field == "port" && !c.negate);
                        if port_only {
                            for c in &t.conds {
                                for v in &c.values {
                                    if let Ok(x) = PortSpec::parse_range(Proto::Tcp, v)
                                        && seen_ports.insert(x)
                                    {
                                        ports.push(x);
                                    }
                                }
                            }
                            continue;
                        }
                        if t.when.is_some() && offset.is_none() {
                            note(
                                &mut notes,
                                d,
                                format!(
                                    "`{original}`: Squid reads time ACLs in its local time; the window is written in UTC (give --utc-offset to change)"
                                ),
                            );
                        }
                        let id = rule_id(conf, d, &mut ids);
                        write_rule(&mut rules, d, &id, &original, reply, &t, &excepts[list]);
                    }
                    Err(why) => note(&mut notes, d, format!("not translated: `{original}`: {why}")),
                }
            }
            _ => {}
        }
    }
    notes.extend(read_notes.map(|(_, n)| n));
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
    let tcp: Vec<String> = ports.iter().map(port_text).collect();
    if !tcp.is_empty() {
        let _ = writeln!(toml, "ports.tcp = {}", toml_array(&tcp));
    }
    toml.push_str(&rules);
    Ok(Import {
        toml,
        translated,
        notes,
        hosts,
    })
}

/// A unique rule id: `squid-line-N` for the main file (stable across
/// imports), `squid-<file>-line-N` for included files.
fn rule_id(conf: &Path, d: &Directive, ids: &mut std::collections::HashSet<String>) -> String {
    let base = if d.path == conf {
        format!("squid-line-{}", d.line)
    } else {
        let stem: String = d
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        format!("squid-{stem}-line-{}", d.line)
    };
    let mut id = base.clone();
    let mut k = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}-{k}");
        k += 1;
    }
    id
}

/// A value of a `src` ACL as hosts-file networks: `addr`, `addr/len`,
/// `addr/netmask` (host bits masked off, as Squid does), `a1-a2` (the
/// fewest CIDR networks covering the range), `all`.
fn src_networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    use ipnet::IpNet;
    use std::net::IpAddr;
    if v == "all" {
        return Ok(vec![
            "0.0.0.0/0".parse().expect("static"),
            "::/0".parse().expect("static"),
        ]);
    }
    let (range, mask) = match v.rsplit_once('/') {
        Some((r, m)) => (r, Some(m)),
        None => (v, None),
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (range, None),
    };
    let bad = || {
        format!(
            "src value {:?} is not an address, network or address range",
            shorten(v)
        )
    };
    let lo: IpAddr = lo.parse().map_err(|_| bad())?;
    let prefix = |m: &str, v6: bool| -> Result<u8, String> {
        if let Ok(len) = m.parse::<u8>() {
            return if len <= if v6 { 128 } else { 32 } {
                Ok(len)
            } else {
                Err(bad())
            };
        }
        // Dotted (or IPv6) netmask: contiguous ones only.
        let bits: u128 = match (m.parse::<IpAddr>().map_err(|_| bad())?, v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(a)) << 96,
            (IpAddr::V6(a), true) => u128::from(a),
            _ => return Err(bad()),
        };
        let ones = bits.leading_ones();
        if bits.checked_shl(ones).unwrap_or(0) != 0 {
            return Err(format!(
                "src value {:?}: netmask {m} is not contiguous",
                shorten(v)
            ));
        }
        u8::try_from(ones).map_err(|_| bad())
    };
    match hi {
        None => {
            let len = match mask {
                Some(m) => prefix(m, lo.is_ipv6())?,
                None => {
                    if lo.is_ipv6() {
                        128
                    } else {
                        32
                    }
                }
            };
            Ok(vec![IpNet::new(lo, len).map_err(|_| bad())?.trunc()])
        }
        Some(hi) => {
            let hi: IpAddr = hi.parse().map_err(|_| bad())?;
            if mask.is_some_and(|m| !matches!(m, "32" | "128" | "255.255.255.255")) {
                return Err(format!(
                    "src value {:?}: a range with a netmask matches masked addresses, which hosts-file networks cannot express",
                    shorten(v)
                ));
            }
            range_networks(lo, hi)
                .ok_or_else(|| format!("src range {:?} runs backwards or mixes IPv4 and IPv6", shorten(v)))
        }
    }
}

/// The fewest CIDR networks exactly covering `lo..=hi`.
fn range_networks(lo: std::net::IpAddr, hi: std::net::IpAddr) -> Option<Vec<ipnet::IpNet>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (a, b, bits) = match (lo, hi) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
        _ => return None,
    };
    if a > b {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = a;
    loop {
        // Largest block aligned at `cur` that stays within `b`.
        // `cur` is aligned to the block, so its end cannot overflow.
        let end_of = |size: u32| {
            if size >= 128 {
                u128::MAX
            } else {
                cur + ((1u128 << size) - 1)
            }
        };
        let mut size = cur.trailing_zeros().min(bits);
        while end_of(size) > b {
            size -= 1;
        }
        let len = u8::try_from(bits - size).ok()?;
        let addr = if bits == 32 {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(cur).ok()?))
        } else {
            IpAddr::V6(Ipv6Addr::from(cur))
        };
        out.push(ipnet::IpNet::new(addr, len).ok()?);
        let end = end_of(size);
        if end >= b {
            break;
        }
        cur = end + 1;
    }
    Some(out)
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

/// A TOML array of strings; long ones one value per line, so no line of
/// the rule file nears the line length limit however long the ACL.
fn toml_array(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
    let total: usize = quoted.iter().map(|q| q.len() + 2).sum();
    if total <= 100 {
        format!("[{}]", quoted.join(", "))
    } else {
        let mut s = String::from("[\n");
        for q in quoted {
            let _ = writeln!(s, "  {q},");
        }
        s.push(']');
        s
    }
}

/// Squid's logical lines: `\` continuations joined, blank and comment-only
/// lines dropped; (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
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
        out.push((start, std::mem::take(&mut pending)));
    }
    if !pending.is_empty() {
        out.push((start, pending));
    }
    out
}

/// Splits a directive into words the way Squid does: whitespace separates,
/// a word *starting* with `#` starts a comment, `"..."` keeps spaces (with
/// `\` escapes when `quoted_values` is on), `parameters("...")` names a file.
fn words(line: &str, quoted_values: bool) -> Vec<Word> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        if chars[i] == '#' {
            break;
        }
        let rest: String = chars[i..].iter().take(12).collect();
        let function = rest.starts_with("parameters(\"");
        if chars[i] == '"' || function {
            i += if function { 12 } else { 1 };
            let mut text = String::new();
            while i < chars.len() && chars[i] != '"' {
                if quoted_values && !function && chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                text.push(chars[i]);
                i += 1;
            }
            i += 1; // the closing quote
            if function && chars.get(i) == Some(&')') {
                i += 1;
            }
            out.push(Word {
                text,
                quoted: true,
                file: function,
            });
            continue;
        }
        let mut text = String::new();
        while i < chars.len() && !chars[i].is_whitespace() {
            text.push(chars[i]);
            i += 1;
        }
        out.push(Word {
            text,
            quoted: false,
            file: false,
        });
    }
    out
}

/// Values of a Squid value file: one per line, blank lines and lines
/// starting with `#` skipped, surrounding space and anything from a
/// whitespace-separated `#` on dropped (Squid's `strtokFile`).
fn file_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut end = t.len();
        let mut prev_space = false;
        for (i, c) in t.char_indices() {
            if c == '#' && prev_space {
                end = i;
                break;
            }
            prev_space = c.is_whitespace();
        }
        out.push(t[..end].trim_end().to_string());
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
            | "time"
    )
}

/// Adds an `acl` line to `acls`; returns notes about it (files that could
/// not be read, options appwall does not know).
fn define_acl(acls: &mut BTreeMap<String, Acl>, d: &Directive, base: &Path, budget: &mut u64) -> Vec<String> {
    let mut notes = Vec::new();
    let (Some(name), Some(kind)) = (d.words.get(1), d.words.get(2)) else {
        return vec!["acl line without name and type".into()];
    };
    let (name, kind) = (&name.text, &kind.text);
    // In place: an ACL spread over many lines is not copied per line.
    let acl = acls.entry(name.clone()).or_insert_with(|| Acl {
        kind: kind.clone(),
        values: Vec::new(),
        header: None,
        problem: None,
    });
    if acl.kind != *kind {
        acl.problem = Some(format!(
            "acl {name} is defined with two types ({} and {})",
            acl.kind,
            shorten(kind)
        ));
    }
    if !supported(kind) && acl.problem.is_none() {
        acl.problem = Some(format!(
            "acl {name} is of type {}, which appwall cannot see in traffic (it translates url_regex, urlpath_regex, dstdomain, dstdom_regex, ssl::server_name, req_mime_type, rep_mime_type, browser, req_header, rep_header, port, method, src, time)",
            shorten(kind)
        ));
    }
    let mut rest = &d.words[3..];
    if kind == "time" {
        // One window per acl line: `[days] [h1:m1-h2:m2]`; days alone mean
        // the whole day, a time alone every day (Squid's defaults).
        let mut text: Vec<String> = rest.iter().map(|w| w.text.clone()).collect();
        if !text.iter().any(|w| w.contains(':')) {
            text.push("00:00-24:00".into());
        }
        acl.values.push((text.join(" "), false));
        return notes;
    }
    if (kind == "req_header" || kind == "rep_header") && acl.header.is_none() {
        match rest.first() {
            Some(h) => {
                acl.header = Some(h.text.clone());
                rest = &rest[1..];
            }
            None => acl.problem = Some(format!("acl {name} {kind} needs a header name")),
        }
    }
    let mut nocase = false;
    let mut options = true;
    // (value, from a file) in order; -i / +i apply to what follows.
    let add = |acl: &mut Acl, v: &str, nocase: &mut bool, options: bool| match v {
        "-i" if options => *nocase = true,
        "+i" if options => *nocase = false,
        _ => acl.values.push((v.to_string(), *nocase)),
    };
    for w in rest {
        if !w.quoted && options {
            match w.text.as_str() {
                "-n" => continue,
                "--" => {
                    options = false;
                    continue;
                }
                o if o.starts_with("-m") => {
                    acl.problem = Some(format!("acl {name}: option {} is not supported", shorten(o)));
                    continue;
                }
                _ => {}
            }
        }
        if w.file || (w.quoted && !d.quoted_values) {
            let p = resolve(base, &w.text);
            match read_regular(&p, budget) {
                Ok(bytes) => {
                    let decoded = decode(&p, &bytes);
                    for e in &decoded.errors {
                        notes.push(format!("acl {name}: {e}; that line is skipped"));
                    }
                    let good: String = decoded
                        .text
                        .lines()
                        .enumerate()
                        .filter(|(i, _)| !decoded.is_bad(i + 1))
                        .map(|(_, l)| format!("{l}\n"))
                        .collect();
                    for v in file_values(&good) {
                        add(acl, &v, &mut nocase, options);
                    }
                }
                Err(e) => {
                    let msg = format!("acl {name}: cannot read {}: {e}", p.display());
                    notes.push(msg.clone());
                    acl.problem = Some(msg);
                }
            }
            continue;
        }
        add(acl, &w.text, &mut nocase, options && !w.quoted);
    }
    notes
}

/// An allow line, as an exception of the deny rules after it.
struct Except {
    why: String,
    conds: Vec<Cond>,
    when: Option<String>,
}

/// The conditions of one `http_access` line.
struct LineConds {
    conds: Vec<Cond>,
    /// Schedule text from `time` ACLs.
    when: Option<String>,
    /// Networks of (non-negated) `src` ACLs, for hosts-file suggestions.
    src_hosts: Vec<String>,
}

/// The refusals that apply to deny lines (not to allow lines).
fn deny_checks(t: LineConds, _reply: bool) -> Result<LineConds, String> {
    if t.conds.is_empty() {
        return Err(if t.when.is_some() {
            "only time ACLs: that blocks everything in the window; appwall blocks apps, not hosts".into()
        } else {
            "`deny all` blocks everything; appwall blocks apps, not hosts".into()
        });
    }
    if t.conds.iter().all(|c| c.field == "src") {
        return Err(
            "only src ACLs: that blocks every connection of those hosts, which is a job for a plain firewall rule"
                .into(),
        );
    }
    if t.conds.iter().all(|c| c.negate) {
        return Err("only negated ACLs: appwall would block almost everything".into());
    }
    Ok(t)
}

/// The file name of a directive's file, for `why` texts.
fn file_name(d: &Directive) -> String {
    d.path
        .file_name()
        .map_or("squid.conf".into(), |f| f.to_string_lossy().into_owned())
}

/// The complement of a schedule within the week, as schedule text.
fn complement(s: &Schedule) -> String {
    const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let mut parts = Vec::new();
    for (d, day) in NAMES.iter().enumerate() {
        let mut spans: Vec<(u32, u32)> = s
            .windows
            .iter()
            .filter(|w| w.days & (1 << d) != 0)
            .map(|w| (w.start, w.end))
            .collect();
        spans.sort_unstable();
        let mut at = 0u32;
        for (a, b) in spans {
            if a > at {
                parts.push(format!("{day} {}-{}", clock(at), clock(a)));
            }
            at = at.max(b);
        }
        if at < 86_400 {
            parts.push(format!("{day} {}-24:00", clock(at)));
        }
    }
    parts.join(", ")
}

fn clock(secs: u32) -> String {
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

fn translate_line(
    acls: &BTreeMap<String, Acl>,
    names: &[String],
    reply: bool,
    offset: Option<&str>,
) -> Result<LineConds, String> {
    let mut conds = Vec::new();
    let mut src_hosts = Vec::new();
    let mut when: Option<String> = None;
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
        if acl.kind == "time" {
            if when.is_some() {
                return Err("two time ACLs on one line: appwall takes one schedule per rule".into());
            }
            let text: Vec<&str> = acl.values.iter().map(|(v, _)| v.as_str()).collect();
            let mut text = text.join(", ");
            if let Some(o) = offset {
                text = format!("{text} {o}");
            }
            let sched = Schedule::parse(&text).map_err(|e| format!("acl {name}: {e}"))?;
            let mut t = if negate { complement(&sched) } else { text };
            if negate {
                if t.is_empty() {
                    return Err(format!("`!{name}` never matches"));
                }
                if let Some(o) = offset {
                    t = format!("{t} {o}");
                }
            }
            when = Some(t);
            continue;
        }
        let mixed = acl.values.iter().any(|v| v.1 != acl.values[0].1);
        let nocase = !mixed && acl.values[0].1;
        // Mixed -i / +i values: each regex carries its own case rule.
        // Duplicates go (a configuration redefining a predefined ACL, such
        // as CONNECT in Squid 4 files, repeats its values).
        let mut seen = std::collections::HashSet::new();
        let vals: Vec<String> = acl
            .values
            .iter()
            .map(|(v, i)| {
                if mixed && *i {
                    format!("(?i:{v})")
                } else {
                    v.clone()
                }
            })
            .filter(|v| seen.insert(v.clone()))
            .collect();
        let request_only = |what: &str| -> Result<(), String> {
            if reply {
                Err(format!(
                    "acl {name} ({what}) tests the request; appwall's reply rules see reply headers, the port and src only"
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
                // Netmasks and ranges become CIDR networks; anything else
                // is refused.
                let mut nets = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for v in &vals {
                    for n in src_networks(v).map_err(|e| format!("acl {name}: {e}"))? {
                        let text = n.to_string();
                        if seen.insert(text.clone()) {
                            if !negate {
                                // A single host as the classic hosts file writes it.
                                src_hosts.push(if n.prefix_len() == n.max_prefix_len() {
                                    n.addr().to_string()
                                } else {
                                    text.clone()
                                });
                            }
                            nets.push(text);
                        }
                    }
                }
                conds.push(Cond {
                    field: "src",
                    header: None,
                    key: "networks",
                    values: nets,
                    nocase: false,
                    negate,
                });
                continue;
            }
            other => return Err(format!("acl type {other} is not supported")),
        };
        // Validate values in the rule format's terms.
        match key {
            "regex" => {
                for v in &vals {
                    check_regex(v, nocase).map_err(|e| format!("acl {name}: {e}"))?;
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
        conds.push(Cond {
            field,
            header,
            key,
            values: vals,
            nocase: nocase && key != "ports" && key != "domains",
            negate,
        });
    }
    Ok(LineConds {
        conds,
        when,
        src_hosts,
    })
}

fn write_conds(out: &mut String, table: &str, conds: &[Cond]) {
    for c in conds {
        let _ = writeln!(out, "[[{table}]]");
        let _ = writeln!(out, "field = \"{}\"", c.field);
        if let Some(h) = &c.header {
            let _ = writeln!(out, "header = {}", quote(h));
        }
        let _ = writeln!(out, "{} = {}", c.key, toml_array(&c.values));
        if c.nocase {
            let _ = writeln!(out, "nocase = true");
        }
        if c.negate {
            let _ = writeln!(out, "negate = true");
        }
    }
}

fn write_rule(
    out: &mut String,
    d: &Directive,
    id: &str,
    original: &str,
    reply: bool,
    t: &LineConds,
    excepts: &[Except],
) {
    let _ = writeln!(out);
    let _ = writeln!(out, "# {}:{}: {original}", d.path.display(), d.line);
    let _ = writeln!(out, "[[rule]]");
    let _ = writeln!(out, "id = {}", quote(id));
    let _ = writeln!(
        out,
        "why = {}",
        quote(&format!("{}:{}: {original}", file_name(d), d.line))
    );
    if reply {
        let _ = writeln!(out, "reply = true");
    }
    if let Some(w) = &t.when {
        let _ = writeln!(out, "when = {}", quote(w));
    }
    write_conds(out, "rule.match", &t.conds);
    for x in excepts {
        let _ = writeln!(out, "[[rule.except]]");
        let _ = writeln!(out, "why = {}", quote(&x.why));
        if let Some(w) = &x.when {
            let _ = writeln!(out, "when = {}", quote(w));
        }
        write_conds(out, "rule.except.match", &x.conds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AppLibrary;

    const DEBIAN_SQUID_CONF: &str = "\
acl localnet src 0.0.0.1-0.255.255.255\t# RFC 1122 \"this\" network (LAN)
acl localnet src 10.0.0.0/8\t\t# RFC 1918 local private network (LAN)
acl localnet src 100.64.0.0/10\t\t# RFC 6598 shared address space (CGN)
acl localnet src 169.254.0.0/16 \t# RFC 3927 link-local (directly plugged) machines
acl localnet src 172.16.0.0/12\t\t# RFC 1918 local private network (LAN)
acl localnet src 192.168.0.0/16\t\t# RFC 1918 local private network (LAN)
acl localnet src fc00::/7       \t# RFC 4193 local private network range
acl localnet src fe80::/10      \t# RFC 4291 link-local (directly plugged) machines

acl SSL_ports port 443
acl Safe_ports port 80\t\t# http
acl Safe_ports port 21\t\t# ftp
acl Safe_ports port 443\t\t# https
acl Safe_ports port 70\t\t# gopher
acl Safe_ports port 210\t\t# wais
acl Safe_ports port 1025-65535\t# unregistered ports
acl Safe_ports port 280\t\t# http-mgmt
acl Safe_ports port 488\t\t# gss-http
acl Safe_ports port 591\t\t# filemaker
acl Safe_ports port 777\t\t# multiling http

#
# Recommended minimum Access Permission configuration:
#
# Deny requests to certain unsafe ports
#
#
http_access deny !Safe_ports
# Deny CONNECT to other than secure SSL ports
http_access deny CONNECT !SSL_ports
http_access allow localhost manager
http_access deny manager
include /etc/squid/conf.d/*.conf
http_access allow localhost
http_access deny all
http_port 3128
coredump_dir /var/spool/squid
refresh_pattern ^ftp:\t\t1440\t20%\t10080
refresh_pattern -i (/cgi-bin/|\\?) 0\t0%\t0
refresh_pattern .\t\t0\t20%\t4320
";

    fn run(conf: &str, extra: &[(&str, &str)]) -> Import {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in extra {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let p = dir.path().join("squid.conf");
        std::fs::write(&p, conf).unwrap();
        let imp = import(&p, "site").unwrap();
        // The output is always a valid rule file.
        let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), imp.toml.clone())]);
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

    /// Squid's first match over the http_access list: allow lines before a
    /// deny become its exceptions; `allow all` makes later lines dead.
    #[test]
    fn allows_become_exceptions_src_and_time_conditions() {
        let imp = run(
            "acl boss src 192.0.2.7\nacl lan src 192.0.2.0/24\nacl msn url_regex -i gateway\\.dll\n\
             acl news urlpath_regex ^/news/\nacl work time MTWHF 08:00-18:00\nacl work time A 10:00-12:00\n\
             http_access deny msn !lan\n\
             http_access allow boss\nhttp_access allow news work\n\
             http_access deny msn lan\nhttp_access deny msn !work\n\
             http_access allow all\nhttp_access deny msn\n",
            &[],
        );
        assert_eq!(imp.translated, 3, "{:?}", imp.notes);
        let t = &imp.toml;
        // Line 7: before any allow, no exception; a negated src condition.
        let l7 = &t[t.find("squid-line-7").unwrap()..t.find("squid-line-10").unwrap()];
        assert!(!l7.contains("rule.except"), "{l7}");
        assert!(
            l7.contains("field = \"src\"\nnetworks = [\"192.0.2.0/24\"]\nnegate = true"),
            "{l7}"
        );
        // Line 10: both allows as exceptions, the second with its schedule.
        let l10 = &t[t.find("squid-line-10").unwrap()..t.find("squid-line-11").unwrap()];
        assert!(l10.contains("[[rule.except]]\nwhy = \"squid.conf:8: http_access allow boss\"\n[[rule.except.match]]\nfield = \"src\"\nnetworks = [\"192.0.2.7/32\"]"), "{l10}");
        assert!(l10.contains("why = \"squid.conf:9: http_access allow news work\"\nwhen = \"MTWHF 08:00-18:00, A 10:00-12:00\""), "{l10}");
        // Line 11: `!work` is the rest of the week.
        assert!(
            t.contains("when = \"Sun 00:00-24:00, Mon 00:00-08:00, Mon 18:00-24:00,"),
            "{t}"
        );
        assert!(t.contains("Sat 00:00-10:00, Sat 12:00-24:00\""), "{t}");
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        assert!(
            notes.iter().any(|n| n.contains("squid.conf:13: not translated")
                && n.contains("squid.conf:12 allows everything")),
            "{notes:#?}"
        );
        // With the proxy's offset, windows are written in it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("squid.conf");
        std::fs::write(
            &p,
            "acl w time 08:00-09:00\nacl m method POST\nhttp_access deny m w\n",
        )
        .unwrap();
        let imp = import_with(&p, "site", Some("+02:00")).unwrap();
        assert!(imp.toml.contains("when = \"08:00-09:00 +02:00\""), "{}", imp.toml);
        assert!(imp.notes.is_empty(), "{:?}", imp.notes);
        assert!(import_with(&p, "site", Some("2 hours")).is_err());
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
        assert_eq!(imp.translated, 2);
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        let expect = [
            (5, "type proxy_auth"),
            (6, "local time"),
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
        // The src ACL is a condition of the rule (and suggested hosts lines).
        assert!(
            imp.toml
                .contains("field = \"src\"\nnetworks = [\"192.0.2.0/28\", \"192.0.2.77/32\"]"),
            "{}",
            imp.toml
        );
        assert!(imp.notes.is_empty(), "{:?}", imp.notes);
        let missing = run("acl m url_regex \"nope.txt\"\nhttp_access deny m\n", &[]);
        assert!(
            missing.notes[0].message.contains("cannot read"),
            "{:?}",
            missing.notes
        );
    }

    fn conds_of(imp: &Import) -> String {
        imp.toml.clone()
    }

    #[test]
    fn trailing_comments_are_dropped_hash_inside_a_word_kept() {
        let imp = run(
            "acl chat port 1863\t\t# msn\nacl u url_regex a#b   # not a value\n\
             http_access deny chat # block\nhttp_access deny u\n",
            &[],
        );
        assert_eq!(imp.translated, 2, "{:?}", imp.notes);
        assert!(imp.toml.contains("ports.tcp = [\"1863\"]"), "{}", imp.toml);
        assert!(imp.toml.contains("regex = [\"a#b\"]"), "{}", imp.toml);
        assert!(
            imp.toml.contains("why = \"squid.conf:4: http_access deny u\""),
            "{}",
            imp.toml
        );
    }

    #[test]
    fn quoted_values_files_and_literals() {
        let imp = run(
            "acl f url_regex -i \"list.txt\"\n\
             configuration_includes_quoted_values on\n\
             acl b browser \"Mozilla/5.0 \\\"x\\\"\" +i plain\n\
             acl p dstdomain parameters(\"domains.txt\")\n\
             configuration_includes_quoted_values off\n\
             acl g url_regex \"list.txt\"\n\
             http_access deny f\nhttp_access deny b\nhttp_access deny p\nhttp_access deny g\n",
            &[
                (
                    "list.txt",
                    "# patterns\n  gateway\\.dll   # the gateway\nwith space#kept\n\n",
                ),
                ("domains.txt", ".msn.com\nmessenger.hotmail.com # comment\n"),
            ],
        );
        assert_eq!(imp.translated, 4, "{:?}", imp.notes);
        let t = conds_of(&imp);
        assert!(
            t.contains(r#"regex = ['gateway\.dll', "with space#kept"]"#),
            "{t}"
        );
        assert!(t.contains(r#"regex = ['Mozilla/5.0 "x"', "plain"]"#), "{t}");
        assert!(
            t.contains(r#"domains = [".msn.com", "messenger.hotmail.com"]"#),
            "{t}"
        );
    }

    #[test]
    fn case_toggles_mid_line_and_many_values() {
        let imp = run("acl m url_regex -i a +i b -i c\nhttp_access deny m\n", &[]);
        assert!(
            imp.toml.contains(r#"regex = ["(?i:a)", "b", "(?i:c)"]"#),
            "{}",
            imp.toml
        );
        assert!(!imp.toml.contains("nocase"), "{}", imp.toml);
        // `--` ends options: "-i" is then a value.
        let imp = run(
            "acl d dstdomain -n -- .a.example b.example\nhttp_access deny d\n",
            &[],
        );
        assert!(
            imp.toml.contains(r#"domains = [".a.example", "b.example"]"#),
            "{}",
            imp.toml
        );
        // A long list is written one value per line and still loads.
        let many: Vec<String> = (0..3000).map(|i| format!("d{i}.example")).collect();
        let imp = run(
            &format!("acl d dstdomain {}\nhttp_access deny d\n", many.join(" ")),
            &[],
        );
        assert_eq!(imp.translated, 1);
        assert!(imp.toml.lines().all(|l| l.len() < 200));
    }

    #[test]
    fn src_netmasks_and_ranges() {
        let table: &[(&str, Result<&[&str], &str>)] = &[
            ("192.0.2.0/255.255.255.0", Ok(&["192.0.2.0/24"])),
            ("192.0.2.7/255.255.255.0", Ok(&["192.0.2.0/24"])),
            ("192.0.2.7", Ok(&["192.0.2.7/32"])),
            ("2001:db8::/32", Ok(&["2001:db8::/32"])),
            (
                "192.0.2.1-192.0.2.9",
                Ok(&["192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/30", "192.0.2.8/31"]),
            ),
            ("0.0.0.0-255.255.255.255", Ok(&["0.0.0.0/0"])),
            ("2001:db8::-2001:db8::ffff", Ok(&["2001:db8::/112"])),
            ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Ok(&["::/0"])),
            ("all", Ok(&["0.0.0.0/0", "::/0"])),
            ("10.0.0.0/255.0.255.0", Err("not contiguous")),
            ("192.0.2.9-192.0.2.1", Err("runs backwards")),
            ("192.0.2.1-2001:db8::1", Err("mixes IPv4 and IPv6")),
            ("192.0.2.1-192.0.2.9/24", Err("range with a netmask")),
            ("192.0.2.0/33", Err("not an address")),
            ("office.example", Err("not an address")),
        ];
        for (v, want) in table {
            let got = src_networks(v).map(|n| n.iter().map(|x| x.to_string()).collect::<Vec<_>>());
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{v}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{v}: {g}"),
                (w, g) => panic!("{v}: want {w:?}, got {g:?}"),
            }
        }
        // Debian's localnet range: 0.0.0.1-0.255.255.255 is 24 networks.
        assert_eq!(src_networks("0.0.0.1-0.255.255.255").unwrap().len(), 24);
    }

    #[test]
    fn includes_globs_cycles_and_depth() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("conf.d/b.conf"),
            "acl b dstdomain b.example\nhttp_access deny b\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/a.conf"),
            "acl a dstdomain a.example\nhttp_access deny a\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/.hidden.conf"), "http_access deny hidden\n").unwrap();
        std::fs::write(d.join("conf.d/c.txt"), "http_access deny c\n").unwrap();
        std::fs::write(d.join("loop1.conf"), "\ninclude loop2.conf\n").unwrap();
        std::fs::write(d.join("loop2.conf"), "include loop1.conf\n").unwrap();
        // A chain of 20 files, each including the next.
        for i in 0..20 {
            std::fs::write(d.join(format!("n{i}.conf")), format!("include n{}.conf\n", i + 1)).unwrap();
        }
        std::fs::write(d.join("n20.conf"), "acl deep dstdomain deep.example\n").unwrap();
        let conf = d.join("squid.conf");
        std::fs::write(
            &conf,
            "include conf.d/[a-b].conf\ninclude loop1.conf\ninclude n0.conf\ninclude none/*.conf\n\
             include conf.d\nhttp_access deny unknown_acl # from the main file\n",
        )
        .unwrap();
        let imp = import(&conf, "site").unwrap();
        assert_eq!(imp.translated, 2, "{:?}", imp.notes);
        // Sorted glob order: a.conf before b.conf; ids name the file.
        let a = imp.toml.find("squid-a-line-2").unwrap();
        let b = imp.toml.find("squid-b-line-2").unwrap();
        assert!(a < b, "{}", imp.toml);
        assert!(
            imp.toml.contains("why = \"a.conf:2: http_access deny a\""),
            "{}",
            imp.toml
        );
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        let has = |path: &str, what: &str| {
            assert!(
                notes.iter().any(|n| n.contains(path) && n.contains(what)),
                "{path} {what}: {notes:#?}"
            )
        };
        has("loop2.conf:1: ", "include cycle refused");
        has("n15.conf:1: ", "nested more than 16 deep");
        has("squid.conf:4: ", "no such file");
        has("squid.conf:5: ", "not a regular file");
        has("squid.conf:6: ", "acl unknown_acl is not defined");
        assert_eq!(notes.len(), 5, "{notes:#?}");
    }

    /// The active lines of Debian 12's /etc/squid/squid.conf (package squid
    /// 5.7), trailing comments included, with the include pointed at a test
    /// directory, plus a conf.d file with the site's own deny rules.
    #[test]
    fn debian_default_conf_with_a_conf_d_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("conf.d/debian.conf"),
            "#\n# Squid configuration settings for Debian\n#\n\nlogfile_rotate 0\n\n#http_access allow localnet\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/messenger.conf"),
            "acl msn dstdomain .messenger.hotmail.com   # MSN gateway\n\
             acl msngw url_regex -i gateway\\.dll\n\
             http_access deny msn\nhttp_access deny msngw localnet\n",
        )
        .unwrap();
        let conf_text =
            DEBIAN_SQUID_CONF.replace("/etc/squid/conf.d", &d.join("conf.d").display().to_string());
        let conf = d.join("squid.conf");
        std::fs::write(&conf, conf_text).unwrap();
        let imp = import(&conf, "site").unwrap();
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        // deny CONNECT !SSL_ports, deny manager, and the two conf.d denies.
        assert_eq!(imp.translated, 4, "{notes:#?}\n{}", imp.toml);
        for (line, what) in [(28, "only negated ACLs"), (35, "blocks everything")] {
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains(&format!("squid.conf:{line}: ")) && n.contains(what)),
                "line {line}: {notes:#?}"
            );
        }
        assert_eq!(
            notes.iter().filter(|n| n.contains("not translated")).count(),
            2,
            "{notes:#?}"
        );
        // `allow localhost manager` (line 31) is an exception of the denies
        // after it.
        assert!(
            imp.toml
                .contains("[[rule.except]]\nwhy = \"squid.conf:31: http_access allow localhost manager\""),
            "{}",
            imp.toml
        );
        assert!(notes.iter().all(|n| !n.contains("not defined")), "{notes:#?}");
        // localnet (its range line included) became hosts lines.
        assert!(imp.hosts.contains(&"0.0.0.1 site".to_string()), "{:?}", imp.hosts);
        assert!(
            imp.hosts.contains(&"fe80::/10 site".to_string()),
            "{:?}",
            imp.hosts
        );
        assert!(imp.toml.contains(r#"values = ["CONNECT"]"#), "{}", imp.toml);
        assert!(imp.toml.contains("squid-internal-mgr"), "{}", imp.toml);
        AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), imp.toml.clone())])
            .unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));

        // The same file where /etc/squid/conf.d does not exist: still imports.
        std::fs::write(
            &conf,
            DEBIAN_SQUID_CONF.replace("/etc/squid/conf.d", "/nonexistent/conf.d"),
        )
        .unwrap();
        let imp = import(&conf, "site").unwrap();
        assert_eq!(imp.translated, 2);
        assert!(
            imp.notes
                .iter()
                .any(|n| n.line == 33 && n.message.contains("no such file"))
        );
    }

    #[test]
    fn long_and_non_utf8_lines_are_notes_not_failures() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("squid.conf");
        let mut bytes = b"acl a dstdomain caf\xE9.example\n".to_vec();
        bytes.extend_from_slice(format!("acl b url_regex {}\n", "x".repeat(100_000)).as_bytes());
        bytes.extend_from_slice(b"acl c dstdomain c.example\nhttp_access deny a\nhttp_access deny c\n");
        std::fs::write(&conf, bytes).unwrap();
        let imp = import(&conf, "site").unwrap();
        assert_eq!(imp.translated, 1);
        let notes: Vec<String> = imp.notes.iter().map(|n| n.to_string()).collect();
        assert!(
            notes[0].contains("squid.conf:1: line skipped: not valid UTF-8"),
            "{notes:#?}"
        );
        assert!(
            notes[1].contains("squid.conf:2: line skipped: line is 100016 bytes"),
            "{notes:#?}"
        );
        assert!(
            notes[2].contains("squid.conf:4: not translated: `http_access deny a`: acl a is not defined"),
            "{notes:#?}"
        );
        assert!(notes.iter().all(|n| n.len() < 400));
    }
}
