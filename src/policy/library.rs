//! The app rule library: one TOML file per app in `rules/`.
//!
//! A file names the app, the ports its native protocol uses (these become the
//! kernel fast-path rules) and its payload signatures, each with a scope that
//! says where in the traffic the bytes count. Unknown keys are refused and
//! every error carries `path:line`. The shipped library is compiled into the
//! binary, so appwall works without a `rules/` directory on disk.
//!
//! Message rules may carry exceptions (`[[rule.except]]`), `src` conditions
//! and schedules (`when`, named in the file's `[schedules]` table or written
//! out; see [`super::schedule`]); [`AppLibrary::at`] gives the library as
//! in force at a moment, which is what the daemon compiles.
//!
//! A file is checked in one pass: TOML syntax errors (the parser recovers
//! and goes on), lines that are not UTF-8 (decoded lossily, each reported),
//! and every table's own errors, each `[[signature]]` and `[[rule]]` being
//! read on its own; a table holding a syntax error is left out rather than
//! reported again. Parsing is linear in the file size (lines are found by
//! binary search over line starts computed once).
//!
//! Limits, so hostile or mistaken input is refused early and memory stays
//! bounded: files at most [`MAX_FILE_BYTES`], lines at most
//! [`MAX_LINE_BYTES`] (both refused before TOML parsing), regular
//! expressions at most [`MAX_REGEX_BYTES`] long and [`MAX_REGEX_COMPILED`]
//! compiled. A leading UTF-8 byte order mark is accepted; quoted values in
//! messages are cut to 120 characters.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::{ConfigError, ConfigErrors, Decoded, LineIndex, decode, read_limited, shorten};
pub use super::error::{MAX_FILE_BYTES, MAX_LINE_BYTES};
use super::hosts::{PortSpec, Proto, is_app_name};
use super::schedule::Schedule;

/// The most apps one library may hold (an app set is a 64-bit mask).
pub const MAX_APPS: usize = 64;
/// Longest signature matched in the byte stream (`anywhere`, `line-start`):
/// the per-direction carry-over between segments is this minus one.
pub const MAX_STREAM_SIG_LEN: usize = 64;
/// Longest signature in an HTTP field or anchored scope.
pub const MAX_FIELD_SIG_LEN: usize = 256;

/// The shipped rule files, compiled in: (file name, text).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("aim.toml", include_str!("../../rules/aim.toml")),
    ("bittorrent.toml", include_str!("../../rules/bittorrent.toml")),
    ("discord.toml", include_str!("../../rules/discord.toml")),
    (
        "encrypted-dns.toml",
        include_str!("../../rules/encrypted-dns.toml"),
    ),
    ("google-chat.toml", include_str!("../../rules/google-chat.toml")),
    ("irc.toml", include_str!("../../rules/irc.toml")),
    ("msn.toml", include_str!("../../rules/msn.toml")),
    ("mysql.toml", include_str!("../../rules/mysql.toml")),
    ("qq.toml", include_str!("../../rules/qq.toml")),
    ("signal.toml", include_str!("../../rules/signal.toml")),
    ("skype.toml", include_str!("../../rules/skype.toml")),
    ("slack.toml", include_str!("../../rules/slack.toml")),
    ("teams.toml", include_str!("../../rules/teams.toml")),
    ("telegram.toml", include_str!("../../rules/telegram.toml")),
    ("whatsapp.toml", include_str!("../../rules/whatsapp.toml")),
    ("xmpp.toml", include_str!("../../rules/xmpp.toml")),
    ("yahoo.toml", include_str!("../../rules/yahoo.toml")),
    ("zoom.toml", include_str!("../../rules/zoom.toml")),
];

/// Where in the traffic a signature's bytes must appear.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Anywhere in one direction's byte stream (or one UDP datagram).
    Anywhere,
    /// At the start of a line: stream start or right after `\n`.
    LineStart,
    /// At the first byte of a direction's stream (first seen, when a
    /// connection is picked up mid-way) or of a UDP datagram.
    StreamStart,
    /// At the first byte of every TCP segment or UDP datagram. Depends on how
    /// the sender cuts its bytes; meant for length-framed binary protocols.
    SegmentStart,
    /// Inside an HTTP request target (percent-decoded, origin or absolute form).
    HttpTarget,
    /// Inside the value of the named HTTP header (name in lower case), in
    /// requests and replies. An empty pattern matches the header's presence.
    HttpHeader(String),
}

impl Scope {
    /// True for scopes compared at a fixed offset (wildcards allowed).
    pub fn is_anchored(&self) -> bool {
        matches!(self, Scope::StreamStart | Scope::SegmentStart)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Anywhere => f.write_str("anywhere"),
            Scope::LineStart => f.write_str("line-start"),
            Scope::StreamStart => f.write_str("stream-start"),
            Scope::SegmentStart => f.write_str("segment-start"),
            Scope::HttpTarget => f.write_str("http-target"),
            Scope::HttpHeader(h) => write!(f, "http-header {h}"),
        }
    }
}

/// A protocol grammar that must confirm a signature's hit (`protocol = "..."`):
/// the literal only finds candidates, code in the engine checks the structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grammar {
    /// MSNP: a `line-start` hit must be a whole MSNP command line in a stream
    /// that is MSNP; an `anywhere` hit counts only in a stream known as MSNP.
    Msnp,
    /// IRC: a `line-start` hit must be a well-formed IRC command line in a
    /// stream that did not open as another text protocol.
    Irc,
    /// QQ/OICQ datagram framing (`stream-start`, UDP only).
    Oicq,
    /// uTP (BEP 29) header (`stream-start`, UDP only).
    Utp,
}

impl Grammar {
    fn parse(name: &str, scope: &Scope) -> Result<Grammar, String> {
        let g = match name {
            "msnp" => Grammar::Msnp,
            "irc" => Grammar::Irc,
            "oicq" => Grammar::Oicq,
            "utp" => Grammar::Utp,
            other => return Err(format!("unknown protocol {other:?} (msnp, irc, oicq, utp)")),
        };
        let ok = match g {
            Grammar::Msnp => matches!(scope, Scope::LineStart | Scope::Anywhere),
            Grammar::Irc => *scope == Scope::LineStart,
            Grammar::Oicq | Grammar::Utp => *scope == Scope::StreamStart,
        };
        if !ok {
            return Err(format!("protocol = {name:?} does not go with scope {scope}"));
        }
        Ok(g)
    }
}

/// One payload signature of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Short id, unique within the app (`gateway-dll`).
    pub id: String,
    /// Where the bytes count.
    pub scope: Scope,
    /// The bytes to find.
    pub bytes: Vec<u8>,
    /// Per-byte mask for anchored scopes: `false` marks a `??` wildcard.
    pub mask: Option<Vec<bool>>,
    /// ASCII case-insensitive comparison.
    pub nocase: bool,
    /// The protocol fact the signature rests on.
    pub why: String,
    /// Line of the signature in its rule file.
    pub line: usize,
    /// Grammar that must confirm a hit (`None`: the literal alone counts).
    pub protocol: Option<Grammar>,
}

/// One application: its ports and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Name used in hosts files and reports (`msn`).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Enabled for hosts lines that name no apps.
    pub default_enabled: bool,
    /// Native ports: dropped by the kernel for the app's hosts.
    pub ports: Vec<PortSpec>,
    /// Payload signatures judged in userspace.
    pub signatures: Vec<Signature>,
    /// HTTP/TLS message rules (AND of conditions), e.g. imported from Squid.
    pub rules: Vec<MessageRule>,
    /// What happens to QUIC (HTTP/3) from the app's hosts.
    pub quic: QuicPolicy,
    /// What happens to a hello of the app's hosts that offers Encrypted
    /// Client Hello.
    pub ech: EchPolicy,
    /// Destination networks of the app (`addresses = [...]`): a connection
    /// a listed host opens into one of them is blocked at set-up, in the
    /// engine and in the kernel fast path. As written, without repeats.
    pub addresses: Vec<IpNet>,
    /// The file it came from.
    pub source: PathBuf,
}

/// What an app does with QUIC connection attempts of its hosts (`quic =` in
/// the app's file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuicPolicy {
    /// Judge the ClientHello inside the client's Initial packets by its
    /// server name, as a TLS ClientHello over TCP is judged (default).
    #[default]
    Inspect,
    /// Drop every QUIC attempt of the app's hosts, so clients fall back to
    /// TCP, where TLS is judged.
    Block,
    /// Leave QUIC alone: the app's message rules do not apply to it.
    Allow,
}

/// What an app does with a ClientHello (QUIC now; TLS over TCP once its
/// hello is assembled) that carries the Encrypted Client Hello extension
/// (`ech =` in the app's file).
///
/// ECH hides the real server name inside an encrypted inner hello; the
/// outer name an observer sees is the provider's public name. Clients
/// also send a GREASE ECH extension when they have no ECH configuration
/// (indistinguishable by design), so `Block` refuses those hellos too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchPolicy {
    /// Judge the outer hello as any other and note ECH on the connection
    /// (counted in the statistics) (default).
    #[default]
    Allow,
    /// Block every hello of the app's hosts that offers ECH.
    Block,
}

/// Most networks in one app's `addresses` list (each app's kernel set is
/// sized for its list, never above this).
pub const MAX_ADDRESSES: usize = 65536;

/// All apps, in name order; at most [`MAX_APPS`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppLibrary {
    apps: Vec<App>,
}

/// A rule file's keys other than its arrays of tables, which are read one
/// table at a time (see `tables`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadToml {
    name: Spanned<String>,
    description: String,
    #[serde(default = "yes")]
    default: bool,
    #[serde(default)]
    ports: PortsToml,
    quic: Option<Spanned<String>>,
    ech: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    /// Named schedules rules refer to by `when = "name"`.
    #[serde(default)]
    schedules: std::collections::BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    id: String,
    why: Option<String>,
    #[serde(default)]
    reply: bool,
    #[serde(rename = "match", default)]
    matches: Vec<CondToml>,
    /// A schedule name (from `[schedules]`) or a schedule written out.
    when: Option<String>,
    /// Exceptions (Squid's earlier `http_access allow` lines).
    #[serde(default)]
    except: Vec<ExceptToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptToml {
    why: Option<String>,
    when: Option<String>,
    #[serde(rename = "match", default)]
    matches: Vec<CondToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CondToml {
    field: String,
    header: Option<String>,
    regex: Option<Vec<String>>,
    text: Option<Vec<String>>,
    domains: Option<Vec<String>>,
    values: Option<Vec<String>>,
    ports: Option<Vec<String>>,
    networks: Option<Vec<String>>,
    #[serde(default)]
    nocase: bool,
    #[serde(default)]
    negate: bool,
}

/// The part of an HTTP message (or TLS hello) a rule condition looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The full URL: `http://host/path?query` rebuilt from an origin-form
    /// request and its Host header, an absolute-form target as sent, or
    /// `host:port` for CONNECT (Squid's `url_regex`).
    Url,
    /// Path and query (Squid's `urlpath_regex`); absent for CONNECT.
    Path,
    /// The destination host name: Host header, absolute-form or CONNECT
    /// target, or the TLS ClientHello's server name (Squid's `dstdomain`).
    Host,
    /// The request method.
    Method,
    /// A header's value (request headers; reply headers in reply rules).
    Header(String),
    /// The URL's port (CONNECT target, absolute URL, Host header), else the
    /// connection's destination port (Squid's `port`).
    Port,
    /// The address of the client that opened the connection (Squid's `src`).
    Src,
}

/// How a condition tests its field; any listed value matching makes it true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// Regular expressions (Rust `regex` syntax, bytes mode).
    Regex(Vec<String>),
    /// Literal substrings.
    Text(Vec<String>),
    /// Domains: `example.com` is that name only, `.example.com` also every
    /// subdomain (Squid's `dstdomain`); always case-insensitive.
    Domains(Vec<String>),
    /// Whole-value equality (methods: `CONNECT`).
    Values(Vec<String>),
    /// Port ranges.
    Ports(Vec<PortSpec>),
    /// Networks (`field = "src"`).
    Networks(Vec<ipnet::IpNet>),
}

/// One condition of a message rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What it looks at.
    pub field: Field,
    /// How.
    pub test: Test,
    /// ASCII case-insensitive (regex and text).
    pub nocase: bool,
    /// True when the condition must *not* hold (Squid's `!acl`).
    pub negate: bool,
}

/// A rule that blocks a connection when all its conditions hold for one
/// HTTP request (or reply, or TLS ClientHello).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRule {
    /// Short id, unique within the app.
    pub id: String,
    /// Where it came from / the fact it rests on.
    pub why: String,
    /// Judged on replies (Squid's `http_reply_access`) instead of requests.
    pub reply: bool,
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// The rule does not hold when all conditions of any exception hold
    /// (Squid's `http_access allow` lines before the deny).
    pub except: Vec<Exception>,
    /// When the rule is in force (`None`: always).
    pub when: Option<Schedule>,
    /// Line of the rule in its file.
    pub line: usize,
}

/// An exception of a message rule: when all its conditions hold, the rule
/// does not (Squid's first-match order: an earlier `allow` wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// Where it came from.
    pub why: String,
    /// All must hold for the exception to apply (none: always).
    pub conditions: Vec<Condition>,
    /// When the exception is in force (`None`: always).
    pub when: Option<Schedule>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PortsToml {
    #[serde(default)]
    tcp: Vec<Spanned<String>>,
    #[serde(default)]
    udp: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigToml {
    id: String,
    scope: String,
    header: Option<String>,
    text: Option<String>,
    hex: Option<String>,
    #[serde(default)]
    nocase: bool,
    why: Option<String>,
    protocol: Option<String>,
}

impl AppLibrary {
    /// The library compiled into the binary.
    pub fn embedded() -> Result<AppLibrary, ConfigErrors> {
        let files: Vec<(PathBuf, String)> = EMBEDDED
            .iter()
            .map(|(name, text)| (Path::new("rules").join(name), text.to_string()))
            .collect();
        AppLibrary::from_texts(&files)
    }

    /// Loads every `*.toml` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<AppLibrary, ConfigErrors> {
        let read = std::fs::read_dir(dir).map_err(|e| {
            ConfigErrors::one(ConfigError::file(dir, format!("cannot read rule directory: {e}")))
        })?;
        let mut paths: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match read_limited(&p) {
                Ok(bytes) => {
                    let d = decode(&p, &bytes);
                    files.push((p, d));
                }
                Err(e) => errors.push(e),
            }
        }
        if files.is_empty() && errors.is_empty() {
            errors.push(ConfigError::file(dir, "no *.toml rule files"));
        }
        ConfigErrors::check(errors)?;
        AppLibrary::from_decoded(&files)
    }

    /// Parses rule files given as (path, text); the path names the app.
    /// A leading byte order mark is skipped; texts over [`MAX_FILE_BYTES`]
    /// and lines over [`MAX_LINE_BYTES`] are refused.
    pub fn from_texts(files: &[(PathBuf, String)]) -> Result<AppLibrary, ConfigErrors> {
        let mut errors = Vec::new();
        let mut decoded = Vec::new();
        for (p, t) in files {
            if t.len() > MAX_FILE_BYTES {
                errors.push(ConfigError::file(
                    p,
                    format!(
                        "file is {} bytes; configuration files may have at most {MAX_FILE_BYTES}",
                        t.len()
                    ),
                ));
            } else {
                decoded.push((p.clone(), decode(p, t.as_bytes())));
            }
        }
        ConfigErrors::check(errors)?;
        AppLibrary::from_decoded(&decoded)
    }

    fn from_decoded(files: &[(PathBuf, Decoded)]) -> Result<AppLibrary, ConfigErrors> {
        let mut apps = Vec::new();
        let mut errors = Vec::new();
        for (path, text) in files {
            match parse_app(path, text) {
                Ok(app) => apps.push(app),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut seen = HashSet::new();
        for app in &apps {
            if !seen.insert(app.name.clone()) {
                errors.push(ConfigError::file(
                    &app.source,
                    format!("app {} is defined twice", app.name),
                ));
            }
        }
        if apps.len() > MAX_APPS {
            errors.push(ConfigError::file(
                &files[MAX_APPS].0,
                format!("more than {MAX_APPS} apps in one library"),
            ));
        }
        ConfigErrors::check(errors)?;
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(AppLibrary { apps })
    }

    /// This library with `over`'s apps added; an app of the same name in
    /// `over` replaces this one's.
    pub fn overlay(self, over: AppLibrary) -> Result<AppLibrary, ConfigErrors> {
        let mut apps: Vec<App> = self
            .apps
            .into_iter()
            .filter(|a| !over.apps.iter().any(|o| o.name == a.name))
            .collect();
        apps.extend(over.apps);
        if apps.len() > MAX_APPS {
            let src = apps.last().map(|a| a.source.clone()).unwrap_or_default();
            return Err(ConfigErrors::one(ConfigError::file(
                &src,
                format!("more than {MAX_APPS} apps in one library"),
            )));
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(AppLibrary { apps })
    }

    /// All apps, in name order; an app's index is its id in app sets.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// The index of the app called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.name == name)
    }

    /// Total number of signatures.
    pub fn signature_count(&self) -> usize {
        self.apps.iter().map(|a| a.signatures.len()).sum()
    }

    /// Total number of message rules.
    pub fn rule_count(&self) -> usize {
        self.apps.iter().map(|a| a.rules.len()).sum()
    }

    /// This library as in force at `t`: rules and exceptions whose schedule
    /// (`when`) is closed at `t` are left out, the others lose their
    /// schedule. A library never placed in time keeps every rule and
    /// exception (scheduled ones count as always in force).
    pub fn at(&self, t: std::time::SystemTime) -> AppLibrary {
        let mut apps = self.apps.clone();
        for app in &mut apps {
            app.rules.retain(|r| r.when.as_ref().is_none_or(|w| w.is_open(t)));
            for r in &mut app.rules {
                r.when = None;
                r.except.retain(|x| x.when.as_ref().is_none_or(|w| w.is_open(t)));
                for x in &mut r.except {
                    x.when = None;
                }
            }
        }
        AppLibrary { apps }
    }

    /// Time from `t` until a schedule of a rule or exception opens or
    /// closes (`None`: no schedule ever changes).
    pub fn next_change(&self, t: std::time::SystemTime) -> Option<std::time::Duration> {
        self.schedules().filter_map(|s| s.next_change(t)).min()
    }

    /// Every schedule rules and exceptions refer to.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.apps.iter().flat_map(|a| &a.rules).flat_map(|r| {
            r.when
                .iter()
                .chain(r.except.iter().filter_map(|x| x.when.as_ref()))
        })
    }
}

fn parse_app(path: &Path, decoded: &Decoded) -> Result<App, Vec<ConfigError>> {
    let text = decoded.text.as_str();
    let lines = LineIndex::new(text);
    let mut errors = decoded.errors.clone();
    // Lines already reported (bad encoding, too long, TOML syntax): later
    // complaints about them would only repeat the first.
    let mut reported: HashSet<usize> = decoded.bad_lines.iter().copied().collect();
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in &syntax {
        let line = e.span().map_or(1, |s| lines.line_of(s.start));
        if reported.insert(line) {
            errors.push(ConfigError::at(path, line, shorten(e.message().trim())));
        }
    }
    let broken = !errors.is_empty();
    // Lines of table headers (`[x]`, `[[x]]`), for the extent of each table.
    let headers: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('['))
        .map(|(i, _)| i + 1)
        .collect();
    let root_span = root.span();
    let mut root = root.into_inner();
    let raw_sigs = root.remove("signature");
    let raw_rules = root.remove("rule");
    let push = |errors: &mut Vec<ConfigError>, line: usize, msg: String| {
        if !reported.contains(&line) {
            errors.push(ConfigError::at(path, line, msg));
        }
    };
    let head = HeadToml::deserialize(ValueDeserializer::from(Spanned::new(
        root_span,
        DeValue::Table(root),
    )));
    let head = match head {
        Ok(h) => Some(h),
        Err(e) => {
            // After a syntax error a missing key is most likely on the broken line.
            if !(broken && e.message().starts_with("missing field")) {
                let line = e.span().map_or(1, |s| lines.line_of(s.start));
                push(&mut errors, line, shorten(e.message().trim()));
            }
            None
        }
    };
    // Sorted, so each table's check is a binary search.
    let mut skip: Vec<usize> = reported.iter().copied().collect();
    skip.sort_unstable();
    let mut ids = HashSet::new();
    let mut signatures = Vec::new();
    for (line, s) in tables::<SigToml>(raw_sigs, "signature", &lines, &headers, &skip, &mut |l, m| {
        push(&mut errors, l, m)
    }) {
        if !ids.insert(s.id.clone()) {
            push(
                &mut errors,
                line,
                format!("signature id {:?} is used twice", shorten(&s.id)),
            );
        }
        match parse_signature(s, line) {
            Ok(sig) => signatures.push(sig),
            Err(msg) => push(&mut errors, line, msg),
        }
    }
    let mut schedules = std::collections::BTreeMap::new();
    if let Some(h) = &head {
        for (name, text) in &h.schedules {
            match Schedule::parse(text.get_ref()) {
                Ok(s) => {
                    schedules.insert(name.clone(), s);
                }
                Err(e) => push(
                    &mut errors,
                    lines.line_of(text.span().start),
                    format!("schedule {}: {e}", q(name)),
                ),
            }
        }
    }
    let mut rules = Vec::new();
    for (line, r) in tables::<RuleToml>(raw_rules, "rule", &lines, &headers, &skip, &mut |l, m| {
        push(&mut errors, l, m)
    }) {
        if !ids.insert(r.id.clone()) {
            push(
                &mut errors,
                line,
                format!("rule id {:?} is used twice", shorten(&r.id)),
            );
        }
        match parse_rule(r, line, &schedules) {
            Ok(rule) => rules.push(rule),
            Err(msg) => push(&mut errors, line, msg),
        }
    }
    let Some(head) = head else {
        errors.sort_by_key(ConfigError::line);
        return Err(errors);
    };
    let name_line = lines.line_of(head.name.span().start);
    let name = head.name.into_inner();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if !is_app_name(&name) {
        push(
            &mut errors,
            name_line,
            format!(
                "app name {:?} must be lower-case letters, digits, '-' or '_' (at most 20)",
                shorten(&name)
            ),
        );
    } else if name != stem {
        push(
            &mut errors,
            name_line,
            format!("app {name:?} must live in a file called {name}.toml"),
        );
    }
    let mut ports = Vec::new();
    for (proto, list) in [(Proto::Tcp, &head.ports.tcp), (Proto::Udp, &head.ports.udp)] {
        for p in list {
            match PortSpec::parse_range(proto, p.get_ref()) {
                Ok(spec) => ports.push(spec),
                Err(e) => push(&mut errors, lines.line_of(p.span().start), e),
            }
        }
    }
    let quic = match head.quic.as_ref().map(|q| (q.get_ref().as_str(), q.span())) {
        None | Some(("inspect", _)) => QuicPolicy::Inspect,
        Some(("block", _)) => QuicPolicy::Block,
        Some(("allow", _)) => QuicPolicy::Allow,
        Some((other, span)) => {
            push(
                &mut errors,
                lines.line_of(span.start),
                format!(
                    "quic must be \"inspect\", \"block\" or \"allow\", not {:?}",
                    shorten(other)
                ),
            );
            QuicPolicy::Inspect
        }
    };
    let ech = match head.ech.as_ref().map(|q| (q.get_ref().as_str(), q.span())) {
        None | Some(("allow", _)) => EchPolicy::Allow,
        Some(("block", _)) => EchPolicy::Block,
        Some((other, span)) => {
            push(
                &mut errors,
                lines.line_of(span.start),
                format!("ech must be \"allow\" or \"block\", not {:?}", shorten(other)),
            );
            EchPolicy::Allow
        }
    };
    let mut addresses = Vec::new();
    for a in &head.addresses {
        match parse_address(a.get_ref()) {
            Ok(net) => addresses.push(net),
            Err(e) => push(&mut errors, lines.line_of(a.span().start), e),
        }
    }
    if addresses.len() > MAX_ADDRESSES {
        push(
            &mut errors,
            name_line,
            format!(
                "{} addresses; an app may list at most {MAX_ADDRESSES}",
                addresses.len()
            ),
        );
    }
    let mut seen_nets = HashSet::new();
    addresses.retain(|n| seen_nets.insert(*n));
    let policy_only = quic == QuicPolicy::Block || ech == EchPolicy::Block || !head.addresses.is_empty();
    if ports.is_empty() && signatures.is_empty() && rules.is_empty() && !policy_only && !broken {
        push(
            &mut errors,
            name_line,
            "the app has neither ports nor signatures".to_string(),
        );
    }
    if !errors.is_empty() {
        errors.sort_by_key(ConfigError::line);
        return Err(errors);
    }
    Ok(App {
        name,
        description: head.description,
        default_enabled: head.default,
        ports,
        signatures,
        rules,
        quic,
        ech,
        addresses,
        source: path.to_path_buf(),
    })
}

/// Deserializes each table of an array of tables (`[[signature]]`) on its
/// own, so one bad table does not hide the others' errors. Yields (line of
/// the table, value); reports the rest through `report(line, message)`.
///
/// A table holding a line already reported (`skip`) is left out silently:
/// what the TOML parser recovered of it would only give follow-on errors.
fn tables<T: serde::de::DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    key: &str,
    lines: &LineIndex,
    headers: &[usize],
    skip: &[usize],
    report: &mut dyn FnMut(usize, String),
) -> Vec<(usize, T)> {
    let Some(value) = value else { return Vec::new() };
    let at = lines.line_of(value.span().start);
    let DeValue::Array(items) = value.into_inner() else {
        report(at, format!("`{key}` must be an array of tables: [[{key}]]"));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let line = lines.line_of(item.span().start);
        // The table runs from its header to the next header (included: a
        // broken header leaves its keys to the table before).
        let next = headers.partition_point(|&h| h <= line);
        let end = headers.get(next).copied().unwrap_or(usize::MAX);
        let first_skipped = skip.partition_point(|&l| l < line);
        if skip.get(first_skipped).is_some_and(|&l| l <= end) {
            continue;
        }
        match T::deserialize(ValueDeserializer::from(item)) {
            Ok(v) => out.push((line, v)),
            Err(e) => {
                let l = e.span().map_or(line, |s| lines.line_of(s.start));
                report(l, shorten(e.message().trim()));
            }
        }
    }
    out
}

/// Narrowest prefix an address list may hold, per family: a shorter one
/// would cut a listed host off from a large part of the Internet.
const MIN_PREFIX: (u8, u8) = (8, 16);

/// One `addresses` entry: a network (`91.108.4.0/22`) or one address.
fn parse_address(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => return Err(format!("{} is not a network (192.0.2.0/24) or address", q(text))),
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{} has host bits set; the network is {}",
            q(text),
            net.trunc()
        ));
    }
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX.0,
        IpNet::V6(_) => MIN_PREFIX.1,
    };
    if net.prefix_len() < min {
        return Err(format!(
            "{} is too wide: address lists take /{min} or longer",
            q(text)
        ));
    }
    Ok(net)
}

fn parse_signature(s: SigToml, line: usize) -> Result<Signature, String> {
    let id_ok = !s.id.is_empty()
        && s.id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !id_ok {
        return Err(format!(
            "signature id {} must be letters, digits, '-' or '_'",
            q(&s.id)
        ));
    }
    let scope = match (s.scope.as_str(), &s.header) {
        ("anywhere", None) => Scope::Anywhere,
        ("line-start", None) => Scope::LineStart,
        ("stream-start", None) => Scope::StreamStart,
        ("segment-start", None) => Scope::SegmentStart,
        ("http-target", None) => Scope::HttpTarget,
        ("http-header", Some(h)) => {
            let ok =
                !h.is_empty() && h.len() <= 64 && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
            if !ok {
                return Err(format!("{} is not an HTTP header name", q(h)));
            }
            Scope::HttpHeader(h.to_ascii_lowercase())
        }
        ("http-header", None) => return Err("scope http-header needs header = \"Name\"".into()),
        (_, Some(_)) if is_scope(&s.scope) => {
            return Err(format!(
                "header = ... only goes with scope = \"http-header\", not {}",
                q(&s.scope)
            ));
        }
        (other, _) => {
            return Err(format!(
                "unknown scope {} (anywhere, line-start, stream-start, segment-start, http-target, http-header)",
                q(other)
            ));
        }
    };
    let (bytes, mask) = match (&s.text, &s.hex) {
        (Some(t), None) => (t.as_bytes().to_vec(), None),
        (None, Some(h)) => parse_hex(h)?,
        _ => return Err("give exactly one of text = \"...\" or hex = \"...\"".into()),
    };
    if mask.is_some() && !scope.is_anchored() {
        return Err("?? wildcards work only in stream-start and segment-start scopes".into());
    }
    let empty_ok = matches!(scope, Scope::HttpHeader(_));
    if bytes.is_empty() && !empty_ok {
        return Err("empty pattern".into());
    }
    let max = match scope {
        Scope::Anywhere | Scope::LineStart => MAX_STREAM_SIG_LEN,
        _ => MAX_FIELD_SIG_LEN,
    };
    if bytes.len() > max {
        return Err(format!(
            "pattern is {} bytes; scope {scope} allows at most {max}",
            bytes.len()
        ));
    }
    if scope == Scope::LineStart && bytes.contains(&b'\n') && bytes.len() + 1 > MAX_STREAM_SIG_LEN {
        return Err("line-start pattern too long".into());
    }
    let protocol = s
        .protocol
        .as_deref()
        .map(|p| Grammar::parse(p, &scope))
        .transpose()?;
    Ok(Signature {
        id: s.id,
        scope,
        bytes,
        mask,
        nocase: s.nocase,
        why: s.why.unwrap_or_default(),
        line,
        protocol,
    })
}

fn parse_rule(
    r: RuleToml,
    line: usize,
    schedules: &std::collections::BTreeMap<String, Schedule>,
) -> Result<MessageRule, String> {
    let id_ok = !r.id.is_empty()
        && r.id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !id_ok {
        return Err(format!(
            "rule id {} must be letters, digits, '-' or '_'",
            q(&r.id)
        ));
    }
    if r.matches.is_empty() {
        return Err(format!("rule {} has no [[rule.match]] conditions", q(&r.id)));
    }
    if r.matches.iter().all(|c| c.negate) {
        return Err(format!(
            "rule {:?} has only negated conditions: it would block almost everything",
            r.id
        ));
    }
    let mut conditions = Vec::new();
    for c in r.matches {
        conditions.push(parse_condition(c, r.reply).map_err(|e| format!("rule {}: {e}", q(&r.id)))?);
    }
    let mut except = Vec::new();
    for x in r.except {
        if x.matches.is_empty() && x.when.is_none() {
            return Err(format!(
                "rule {}: an exception needs [[rule.except.match]] conditions or a when",
                q(&r.id)
            ));
        }
        let mut conds = Vec::new();
        for c in x.matches {
            conds.push(parse_condition(c, r.reply).map_err(|e| format!("rule {} exception: {e}", q(&r.id)))?);
        }
        except.push(Exception {
            why: x.why.unwrap_or_default(),
            conditions: conds,
            when: resolve_when(x.when, schedules).map_err(|e| format!("rule {} exception: {e}", q(&r.id)))?,
        });
    }
    let when = resolve_when(r.when, schedules).map_err(|e| format!("rule {}: {e}", q(&r.id)))?;
    Ok(MessageRule {
        id: r.id,
        why: r.why.unwrap_or_default(),
        reply: r.reply,
        conditions,
        except,
        when,
        line,
    })
}

/// A `when` value: a name from the file's `[schedules]`, or a schedule.
fn resolve_when(
    w: Option<String>,
    schedules: &std::collections::BTreeMap<String, Schedule>,
) -> Result<Option<Schedule>, String> {
    let Some(w) = w else { return Ok(None) };
    if let Some(s) = schedules.get(&w) {
        return Ok(Some(s.clone()));
    }
    Schedule::parse(&w)
        .map(Some)
        .map_err(|e| format!("when = {}: not a name in [schedules], and {e}", q(&w)))
}

fn parse_condition(c: CondToml, reply: bool) -> Result<Condition, String> {
    let field = match (c.field.as_str(), &c.header) {
        ("url", None) => Field::Url,
        ("path", None) => Field::Path,
        ("host", None) => Field::Host,
        ("method", None) => Field::Method,
        ("port", None) => Field::Port,
        ("src", None) => Field::Src,
        ("header", Some(h)) => {
            let ok =
                !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(format!("{} is not an HTTP header name", q(h)));
            }
            Field::Header(h.to_ascii_lowercase())
        }
        ("header", None) => return Err("field \"header\" needs header = \"Name\"".into()),
        (f, Some(_)) => {
            return Err(format!(
                "header = ... only goes with field = \"header\", not {}",
                q(f)
            ));
        }
        (f, None) => {
            return Err(format!(
                "unknown field {} (url, path, host, method, header, port, src)",
                q(f)
            ));
        }
    };
    if reply && !matches!(field, Field::Header(_) | Field::Port | Field::Src) {
        return Err("reply rules can test reply headers, the port and src only".into());
    }
    let given = [
        c.regex.is_some(),
        c.text.is_some(),
        c.domains.is_some(),
        c.values.is_some(),
        c.ports.is_some(),
        c.networks.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("give exactly one of regex, text, domains, values, ports, networks".into());
    }
    if (field == Field::Src) != c.networks.is_some() {
        return Err("field \"src\" takes networks = [...], and only it does".into());
    }
    let nonempty = |v: Vec<String>, what: &str| -> Result<Vec<String>, String> {
        if v.is_empty() || v.iter().any(|s| s.is_empty()) {
            Err(format!("{what} must be a non-empty list of non-empty strings"))
        } else {
            Ok(v)
        }
    };
    let test = if let Some(v) = c.regex {
        let v = nonempty(v, "regex")?;
        for re in &v {
            check_regex(re, c.nocase)?;
        }
        Test::Regex(v)
    } else if let Some(v) = c.text {
        Test::Text(nonempty(v, "text")?)
    } else if let Some(v) = c.domains {
        if field != Field::Host {
            return Err("domains = [...] goes with field = \"host\"".into());
        }
        let v = nonempty(v, "domains")?;
        for d in &v {
            let name = d.strip_prefix('.').unwrap_or(d);
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !ok {
                return Err(format!("{} is not a domain name", q(d)));
            }
        }
        Test::Domains(v.into_iter().map(|d| d.to_ascii_lowercase()).collect())
    } else if let Some(v) = c.values {
        Test::Values(nonempty(v, "values")?)
    } else if let Some(v) = c.networks {
        let v = nonempty(v, "networks")?;
        let mut nets = Vec::new();
        for n in &v {
            let net = n
                .parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{} is not an address or network (addr/len)", q(n)))?;
            nets.push(net.trunc());
        }
        Test::Networks(nets)
    } else {
        if field != Field::Port {
            return Err("ports = [...] goes with field = \"port\"".into());
        }
        let v = nonempty(c.ports.unwrap_or_default(), "ports")?;
        let mut ports = Vec::new();
        for p in &v {
            ports.push(PortSpec::parse_range(Proto::Tcp, p)?);
        }
        Test::Ports(ports)
    };
    if field == Field::Port && !matches!(test, Test::Ports(_)) {
        return Err("field \"port\" takes ports = [...]".into());
    }
    Ok(Condition {
        field,
        test,
        nocase: c.nocase,
        negate: c.negate,
    })
}

/// Longest regular expression a rule may hold, in bytes. Squid-style URL
/// and header patterns are far shorter; the limit keeps the regex parser's
/// own memory small before [`MAX_REGEX_COMPILED`] applies.
pub const MAX_REGEX_BYTES: usize = 4096;
/// Compiled size limit of one regular expression (`regex`'s `size_limit`),
/// 1 MiB: a pattern like `a{1000}{1000}` is refused instead of growing.
pub const MAX_REGEX_COMPILED: usize = 1 << 20;

/// `s` quoted for a message, cut to [`SHOWN_CHARS`](super::error::SHOWN_CHARS).
fn q(s: &str) -> String {
    format!("{:?}", shorten(s))
}

/// Checks that `re` is a valid, bounded regular expression (bytes mode).
/// `nocase` compiles it case-insensitively, as the engine will.
pub fn check_regex(re: &str, nocase: bool) -> Result<(), String> {
    if re.len() > MAX_REGEX_BYTES {
        return Err(format!(
            "regex is {} bytes; at most {MAX_REGEX_BYTES} allowed: {:?}",
            re.len(),
            shorten(re)
        ));
    }
    regex::bytes::RegexBuilder::new(re)
        .case_insensitive(nocase)
        .size_limit(MAX_REGEX_COMPILED)
        .build()
        .map(|_| ())
        .map_err(|e| {
            format!(
                "bad regex {:?}: {}",
                shorten(re),
                e.to_string().lines().last().unwrap_or("").trim()
            )
        })
}

fn is_scope(s: &str) -> bool {
    matches!(
        s,
        "anywhere" | "line-start" | "stream-start" | "segment-start" | "http-target"
    )
}

type HexPattern = (Vec<u8>, Option<Vec<bool>>);

/// Parses `"2a 01 ?? ?? 00"` (spaces optional between bytes).
fn parse_hex(text: &str) -> Result<HexPattern, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex {} has an odd number of digits", q(text)));
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    let mut mask = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks(2) {
        if pair == b"??" {
            bytes.push(0);
            mask.push(false);
            continue;
        }
        let s = std::str::from_utf8(pair).unwrap_or("");
        let b =
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} in hex {} is not a hex byte", q(text)))?;
        bytes.push(b);
        mask.push(true);
    }
    let wild = mask.iter().any(|m| !m);
    Ok((bytes, if wild { Some(mask) } else { None }))
}

#[cfg(test)]
mod tests {

    #[test]
    fn schedules_src_and_exceptions_parse_and_place_in_time() {
        use std::time::{Duration, UNIX_EPOCH};
        let text = r#"
name = "site"
description = "t"
[schedules]
workhours = "Mon-Fri 08:00-18:00"
[[rule]]
id = "a"
when = "workhours"
[[rule.match]]
field = "host"
domains = [".msn.com"]
[[rule.except]]
when = "Sat-Sun 00:00-24:00"
[[rule]]
id = "b"
when = "Mon 12:00-13:00 +01:00"
[[rule.match]]
field = "src"
networks = ["192.0.2.0/24", "2001:db8::1"]
[[rule.match]]
field = "method"
values = ["POST"]
[[rule.except]]
[[rule.except.match]]
field = "src"
networks = ["192.0.2.9/32"]
"#;
        let lib = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), text.to_string())]).unwrap();
        let rules = &lib.apps()[0].rules;
        assert_eq!(rules[0].when.as_ref().unwrap().text, "Mon-Fri 08:00-18:00");
        assert_eq!(rules[1].except[0].conditions[0].field, Field::Src);
        assert!(matches!(&rules[1].conditions[0].test, Test::Networks(n) if n.len() == 2));
        // 2026-11-23 (a Monday) 11:30 UTC: both in force; 13:30: only a.
        let monday = UNIX_EPOCH + Duration::from_secs(1_795_392_000);
        let at = |h: u64, m: u64| monday + Duration::from_secs(h * 3600 + m * 60);
        let ids = |l: &AppLibrary| l.apps()[0].rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&lib.at(at(11, 30))), ["a", "b"]);
        assert_eq!(ids(&lib.at(at(12, 30))), ["a"]);
        assert_eq!(ids(&lib.at(at(7, 0))), Vec::<String>::new());
        assert!(
            lib.at(at(11, 30)).apps()[0]
                .rules
                .iter()
                .all(|r| r.when.is_none())
        );
        // The weekend exception is dropped on a Monday.
        assert!(lib.at(at(11, 30)).apps()[0].rules[0].except.is_empty());
        assert_eq!(lib.next_change(at(7, 59)), Some(Duration::from_secs(60)));
        assert_eq!(lib.next_change(at(10, 30)), Some(Duration::from_secs(1800)));

        for (bad, what) in [
            (
                "[[rule]]\nid = \"x\"\nwhen = \"nosuch\"\n[[rule.match]]\nfield = \"method\"\nvalues = [\"GET\"]\n",
                "not a name in [schedules]",
            ),
            (
                "[[rule]]\nid = \"x\"\n[[rule.match]]\nfield = \"src\"\nregex = [\"x\"]\n",
                "takes networks",
            ),
            (
                "[[rule]]\nid = \"x\"\n[[rule.match]]\nfield = \"src\"\nnetworks = [\"office\"]\n",
                "not an address",
            ),
            (
                "[[rule]]\nid = \"x\"\n[[rule.match]]\nfield = \"method\"\nvalues = [\"GET\"]\n[[rule.except]]\nwhy = \"w\"\n",
                "exception needs",
            ),
            ("[schedules]\nw = \"Mon 18:00-08:00\"\n", "schedule \"w\""),
        ] {
            let t = format!("name = \"site\"\ndescription = \"t\"\n{bad}");
            let e = AppLibrary::from_texts(&[(PathBuf::from("rules/site.toml"), t)]).unwrap_err();
            assert!(e.to_string().contains(what), "{bad}: {e}");
        }
    }
    use super::*;

    fn lib(text: &str) -> Result<AppLibrary, String> {
        AppLibrary::from_texts(&[(PathBuf::from("rules/t.toml"), text.to_string())])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn embedded_library_loads_and_matches_directory() {
        let lib = AppLibrary::embedded().expect("shipped rules are valid");
        let mut on_disk: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, embedded, "rules/ and EMBEDDED must list the same files");
        for app in lib.apps() {
            for s in &app.signatures {
                assert!(
                    s.why.len() > 20,
                    "{}/{} needs a why citing the protocol fact",
                    app.name,
                    s.id
                );
            }
        }
    }

    #[test]
    fn good_file() {
        let l = lib(r#"
name = "t"
description = "test"
ports.tcp = ["1863", "6660-7000"]
ports.udp = ["8000"]
[[signature]]
id = "a"
scope = "http-header"
header = "Content-Type"
text = "application/x-msn-messenger"
nocase = true
why = "x"
[[signature]]
id = "b"
scope = "stream-start"
hex = "2a 01 ?? ?? 00 04"
"#)
        .unwrap();
        let app = &l.apps()[0];
        assert_eq!(app.ports.len(), 3);
        assert_eq!(app.signatures[0].scope, Scope::HttpHeader("content-type".into()));
        assert_eq!(app.signatures[0].line, 6);
        assert_eq!(
            app.signatures[1].mask.as_deref(),
            Some(&[true, true, false, false, true, true][..])
        );
    }

    #[test]
    fn bad_files() {
        let head = "name = \"t\"\ndescription = \"d\"\n";
        let table = [
            (
                "name = \"t\"\ndescription = \"d\"\ncolour = 1\n",
                "t.toml:3: unknown field `colour`",
            ),
            (
                "name = \"X\"\ndescription = \"d\"\nports.tcp=[\"1\"]\n",
                "t.toml:1: app name",
            ),
            (
                "name = \"u\"\ndescription = \"d\"\nports.tcp=[\"1\"]\n",
                "must live in a file called u.toml",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n",
                "neither ports nor signatures",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\nports.tcp=[\"0\"]\n",
                "t.toml:3: port 0 is outside",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"body\"\ntext=\"x\"\n",
                "t.toml:3: unknown scope",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"anywhere\"\n",
                "exactly one of text",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"anywhere\"\nhex=\"2a ?? 01\"\n",
                "wildcards work only",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"anywhere\"\nhex=\"2g\"\n",
                "not a hex byte",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"http-header\"\ntext=\"x\"\n",
                "needs header",
            ),
            (
                "name = \"t\"\ndescription = \"d\"\n[[signature]]\nid=\"a\"\nscope=\"anywhere\"\ntext=\"\"\n",
                "empty pattern",
            ),
        ];
        for (text, want) in table {
            let err = lib(text).expect_err(text);
            assert!(err.contains(want), "{text}\n got: {err}\nwant: {want}");
        }
        let long = format!(
            "{head}[[signature]]\nid=\"a\"\nscope=\"anywhere\"\ntext=\"{}\"\n",
            "x".repeat(65)
        );
        assert!(lib(&long).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn addresses_and_ech() {
        let l = lib("name = \"t\"\ndescription = \"d\"\nech = \"block\"\naddresses = [\"198.51.100.0/24\", \"2001:db8::/32\", \"192.0.2.7\", \"198.51.100.0/24\"]\n")
            .unwrap();
        let app = &l.apps()[0];
        assert_eq!(app.ech, EchPolicy::Block);
        let nets: Vec<String> = app.addresses.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["198.51.100.0/24", "2001:db8::/32", "192.0.2.7/32"]);
        let table = [
            (
                "addresses = [\"198.51.100.1/24\"]",
                "t.toml:3: \"198.51.100.1/24\" has host bits set; the network is 198.51.100.0/24",
            ),
            (
                "addresses = [\"10.0.0.0/7\"]",
                "t.toml:3: \"10.0.0.0/7\" is too wide",
            ),
            (
                "addresses = [\"2000::/15\"]",
                "is too wide: address lists take /16",
            ),
            ("addresses = [\"example.org\"]", "is not a network"),
            ("addresses = \"198.51.100.0/24\"", "t.toml:3: invalid type"),
            ("ech = \"log\"", "t.toml:3: ech must be \"allow\" or \"block\""),
        ];
        for (line, want) in table {
            let err = lib(&format!("name = \"t\"\ndescription = \"d\"\n{line}\n")).expect_err(line);
            assert!(err.contains(want), "{line}\n got: {err}\nwant: {want}");
        }
        // Shipped address lists cite their source in the file.
        for app in AppLibrary::embedded().unwrap().apps() {
            if !app.addresses.is_empty() {
                let (_, text) = EMBEDDED
                    .iter()
                    .find(|(n, _)| *n == format!("{}.toml", app.name))
                    .unwrap();
                let cited = text.lines().any(|l| l.starts_with("# [") && l.contains(']'));
                let near = text
                    .lines()
                    .zip(text.lines().skip(1))
                    .any(|(a, b)| a.starts_with("# [") && b.starts_with("addresses"));
                assert!(
                    cited && near,
                    "{}: the addresses need a cited source line above them",
                    app.name
                );
            }
        }
    }

    #[test]
    fn every_error_of_a_file_in_one_pass() {
        let text = "\u{feff}name = \"t\"\ndescription = \"d\"\n\
                    [[signature]]\nid = \"a\"\nscope = \"anywhere\"\ntext = \"unterminated\n\
                    [[signature]]\nid = \"b\"\nscope = \"anywhere\"\ntext = \"x\"\ncolour = 1\n\
                    [[signature]]\nid = \"c\"\nscope = \"body\"\ntext = \"x\"\n\
                    [[rule]]\nid = \"r\"\n[[rule.match]]\nfield = \"url\"\nregex = [\"(\"]\n";
        let err = AppLibrary::from_texts(&[(PathBuf::from("rules/t.toml"), text.to_string())]).unwrap_err();
        let got: Vec<String> = err.errors().iter().map(|e| e.to_string()).collect();
        let want = [
            "t.toml:6: ",
            "t.toml:11: unknown field `colour`",
            "t.toml:12: unknown scope",
            "t.toml:16: rule \"r\": bad regex",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.contains(w), "{g} should contain {w}");
        }
    }

    #[test]
    fn a_syntax_error_gives_no_follow_on_errors() {
        let text = "name = \"t\"\ndescription = \"d\"\nports.tcp = [\"1\"]\n\
                    [[signature]]\nid = \"b\"\nscope = \"anywhere\"\nhex = \"zz\"\n\
                    [[signature]]\nid = \"a\"\njunk\nscope = \"anywhere\"\ntext = \"x\"\n\
                    [[signature\nid = \"c\"\nscope = \"anywhere\"\ntext = \"x\"\n";
        let err = lib(text).unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].contains("t.toml:4: \"zz\" in hex \"zz\" is not a hex byte"),
            "{err}"
        );
        assert!(lines[1].contains("t.toml:10: key with no value"), "{err}");
        assert!(lines[2].contains("t.toml:13: unclosed array table"), "{err}");
    }

    #[test]
    fn encoding_bom_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"\xEF\xBB\xBFname = \"t\"\n# caf\xE9 comment\ndescription = \"d\xFF\"\n".to_vec();
        bytes.extend_from_slice(b"ports.tcp = [\"1863\"]\n");
        std::fs::write(dir.path().join("t.toml"), &bytes).unwrap();
        let err = AppLibrary::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("t.toml:2: not valid UTF-8 (byte 0xE9 at column 6)"),
            "{err}"
        );
        assert!(
            err.contains("t.toml:3: not valid UTF-8 (byte 0xFF at column 17)"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 2, "{err}");

        // The byte order mark alone is fine.
        std::fs::write(
            dir.path().join("t.toml"),
            b"\xEF\xBB\xBFname = \"t\"\ndescription = \"d\"\nports.tcp = [\"1863\"]\n",
        )
        .unwrap();
        AppLibrary::load_dir(dir.path()).unwrap();

        // A 10 MB line is refused before TOML or regex parsing, quoted briefly.
        let start = std::time::Instant::now();
        let huge = format!(
            "name = \"t\"\ndescription = \"d\"\nports.tcp = [\"1\"]\n[[rule]]\nid = \"r\"\n[[rule.match]]\nfield = \"url\"\nregex = [\"{}\"]\n",
            "a".repeat(10 << 20)
        );
        let err = lib(&huge).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            err.contains("t.toml:8: line is 10485772 bytes; lines may have at most 65536"),
            "{err}"
        );
        assert!(err.len() < 400, "{}", err.len());
        // A long regex within the line limit is refused by the regex limit.
        let long = huge.replace(&"a".repeat(10 << 20), &"a".repeat(5000));
        let err = lib(&long).unwrap_err();
        assert!(err.contains("regex is 5000 bytes; at most 4096"), "{err}");
        assert!(err.contains("aaa…"), "{err}");
        let blowup = huge.replace(&"a".repeat(10 << 20), "(a{1000}){1000}");
        assert!(lib(&blowup).unwrap_err().contains("bad regex"));
    }
}
