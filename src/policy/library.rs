//! The app rule library: one TOML file per app in `rules/`.
//!
//! A file names the app, the ports its native protocol uses (these become the
//! kernel fast-path rules) and its payload signatures, each with a scope that
//! says where in the traffic the bytes count. Unknown keys are refused and
//! every error carries `path:line`. The shipped library is compiled into the
//! binary, so appwall works without a `rules/` directory on disk.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors};
use super::hosts::{PortSpec, Proto, is_app_name};

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
    ("irc.toml", include_str!("../../rules/irc.toml")),
    ("msn.toml", include_str!("../../rules/msn.toml")),
    ("mysql.toml", include_str!("../../rules/mysql.toml")),
    ("qq.toml", include_str!("../../rules/qq.toml")),
    ("xmpp.toml", include_str!("../../rules/xmpp.toml")),
    ("yahoo.toml", include_str!("../../rules/yahoo.toml")),
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
    /// The file it came from.
    pub source: PathBuf,
}

/// All apps, in name order; at most [`MAX_APPS`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleLibrary {
    apps: Vec<App>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppToml {
    name: Spanned<String>,
    description: String,
    #[serde(default = "yes")]
    default: bool,
    #[serde(default)]
    ports: PortsToml,
    #[serde(default)]
    signature: Vec<Spanned<SigToml>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleToml>>,
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
    /// Line of the rule in its file.
    pub line: usize,
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

impl RuleLibrary {
    /// The library compiled into the binary.
    pub fn embedded() -> Result<RuleLibrary, ConfigErrors> {
        let files: Vec<(PathBuf, String)> = EMBEDDED
            .iter()
            .map(|(name, text)| (Path::new("rules").join(name), text.to_string()))
            .collect();
        RuleLibrary::from_texts(&files)
    }

    /// Loads every `*.toml` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<RuleLibrary, ConfigErrors> {
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
            match std::fs::read_to_string(&p) {
                Ok(t) => files.push((p, t)),
                Err(e) => errors.push(ConfigError::file(&p, format!("cannot read: {e}"))),
            }
        }
        if files.is_empty() && errors.is_empty() {
            errors.push(ConfigError::file(dir, "no *.toml rule files"));
        }
        ConfigErrors::check(errors)?;
        RuleLibrary::from_texts(&files)
    }

    /// Parses rule files given as (path, text); the path names the app.
    pub fn from_texts(files: &[(PathBuf, String)]) -> Result<RuleLibrary, ConfigErrors> {
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
        Ok(RuleLibrary { apps })
    }

    /// This library with `over`'s apps added; an app of the same name in
    /// `over` replaces this one's.
    pub fn overlay(self, over: RuleLibrary) -> Result<RuleLibrary, ConfigErrors> {
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
        Ok(RuleLibrary { apps })
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
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn parse_app(path: &Path, text: &str) -> Result<App, Vec<ConfigError>> {
    let raw: AppToml = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        vec![ConfigError::at(path, line, e.message().trim().to_string())]
    })?;
    let mut errors = Vec::new();
    let name_line = line_of(text, raw.name.span().start);
    let name = raw.name.into_inner();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if !is_app_name(&name) {
        errors.push(ConfigError::at(
            path,
            name_line,
            format!("app name {name:?} must be lower-case letters, digits, '-' or '_' (at most 20)"),
        ));
    } else if name != stem {
        errors.push(ConfigError::at(
            path,
            name_line,
            format!("app {name:?} must live in a file called {name}.toml"),
        ));
    }
    let mut ports = Vec::new();
    for (proto, list) in [(Proto::Tcp, &raw.ports.tcp), (Proto::Udp, &raw.ports.udp)] {
        for p in list {
            match PortSpec::parse_range(proto, p.get_ref()) {
                Ok(spec) => ports.push(spec),
                Err(e) => errors.push(ConfigError::at(path, line_of(text, p.span().start), e)),
            }
        }
    }
    let mut signatures = Vec::new();
    let mut ids = HashSet::new();
    for s in raw.signature {
        let line = line_of(text, s.span().start);
        let s = s.into_inner();
        if !ids.insert(s.id.clone()) {
            errors.push(ConfigError::at(
                path,
                line,
                format!("signature id {:?} is used twice", s.id),
            ));
        }
        match parse_signature(s, line) {
            Ok(sig) => signatures.push(sig),
            Err(msg) => errors.push(ConfigError::at(path, line, msg)),
        }
    }
    let mut rules = Vec::new();
    for r in raw.rule {
        let line = line_of(text, r.span().start);
        let r = r.into_inner();
        if !ids.insert(r.id.clone()) {
            errors.push(ConfigError::at(
                path,
                line,
                format!("rule id {:?} is used twice", r.id),
            ));
        }
        match parse_rule(r, line) {
            Ok(rule) => rules.push(rule),
            Err(msg) => errors.push(ConfigError::at(path, line, msg)),
        }
    }
    if ports.is_empty() && signatures.is_empty() && rules.is_empty() {
        errors.push(ConfigError::at(
            path,
            name_line,
            "the app has neither ports nor signatures",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(App {
        name,
        description: raw.description,
        default_enabled: raw.default,
        ports,
        signatures,
        rules,
        source: path.to_path_buf(),
    })
}

fn parse_signature(s: SigToml, line: usize) -> Result<Signature, String> {
    let id_ok = !s.id.is_empty()
        && s.id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !id_ok {
        return Err(format!(
            "signature id {:?} must be letters, digits, '-' or '_'",
            s.id
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
                return Err(format!("{h:?} is not an HTTP header name"));
            }
            Scope::HttpHeader(h.to_ascii_lowercase())
        }
        ("http-header", None) => return Err("scope http-header needs header = \"Name\"".into()),
        (_, Some(_)) if is_scope(&s.scope) => {
            return Err(format!(
                "header = ... only goes with scope = \"http-header\", not {:?}",
                s.scope
            ));
        }
        (other, _) => {
            return Err(format!(
                "unknown scope {other:?} (anywhere, line-start, stream-start, segment-start, http-target, http-header)"
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

fn parse_rule(r: RuleToml, line: usize) -> Result<MessageRule, String> {
    let id_ok = !r.id.is_empty()
        && r.id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !id_ok {
        return Err(format!("rule id {:?} must be letters, digits, '-' or '_'", r.id));
    }
    if r.matches.is_empty() {
        return Err(format!("rule {:?} has no [[rule.match]] conditions", r.id));
    }
    if r.matches.iter().all(|c| c.negate) {
        return Err(format!(
            "rule {:?} has only negated conditions: it would block almost everything",
            r.id
        ));
    }
    let mut conditions = Vec::new();
    for c in r.matches {
        conditions.push(parse_condition(c, r.reply).map_err(|e| format!("rule {:?}: {e}", r.id))?);
    }
    Ok(MessageRule {
        id: r.id,
        why: r.why.unwrap_or_default(),
        reply: r.reply,
        conditions,
        line,
    })
}

fn parse_condition(c: CondToml, reply: bool) -> Result<Condition, String> {
    let field = match (c.field.as_str(), &c.header) {
        ("url", None) => Field::Url,
        ("path", None) => Field::Path,
        ("host", None) => Field::Host,
        ("method", None) => Field::Method,
        ("port", None) => Field::Port,
        ("header", Some(h)) => {
            let ok =
                !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(format!("{h:?} is not an HTTP header name"));
            }
            Field::Header(h.to_ascii_lowercase())
        }
        ("header", None) => return Err("field \"header\" needs header = \"Name\"".into()),
        (f, Some(_)) => {
            return Err(format!(
                "header = ... only goes with field = \"header\", not {f:?}"
            ));
        }
        (f, None) => {
            return Err(format!(
                "unknown field {f:?} (url, path, host, method, header, port)"
            ));
        }
    };
    if reply && !matches!(field, Field::Header(_) | Field::Port) {
        return Err("reply rules can test reply headers and the port only".into());
    }
    let given = [
        c.regex.is_some(),
        c.text.is_some(),
        c.domains.is_some(),
        c.values.is_some(),
        c.ports.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("give exactly one of regex, text, domains, values, ports".into());
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
            regex::bytes::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("bad regex {re:?}: {}", e.to_string().lines().last().unwrap_or("")))?;
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
                return Err(format!("{d:?} is not a domain name"));
            }
        }
        Test::Domains(v.into_iter().map(|d| d.to_ascii_lowercase()).collect())
    } else if let Some(v) = c.values {
        Test::Values(nonempty(v, "values")?)
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
        return Err(format!("hex {text:?} has an odd number of digits"));
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
        let b = u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} in hex {text:?} is not a hex byte"))?;
        bytes.push(b);
        mask.push(true);
    }
    let wild = mask.iter().any(|m| !m);
    Ok((bytes, if wild { Some(mask) } else { None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(text: &str) -> Result<RuleLibrary, String> {
        RuleLibrary::from_texts(&[(PathBuf::from("rules/t.toml"), text.to_string())])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn embedded_library_loads_and_matches_directory() {
        let lib = RuleLibrary::embedded().expect("shipped rules are valid");
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
}
