//! Keeps the house's layout honest: no module of the library imports a
//! module that (directly or through others) imports it back, and the rooms
//! (top-level modules) only import rooms below them on the packet's path.
//!
//! It reads the library's own source files (test code excluded), expands
//! every `use` tree and every inline `crate::`/`super::` path, resolves each
//! to the file that defines it, and checks the resulting graph. A test, not
//! a build step: `cargo test` fails with the offending path when a change
//! adds a loop or an upward import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms, lowest first: a room may import only rooms listed before it.
const ROOMS: &[&str] = &[
    "packet", "log", "decap", "policy", "flow", "engine", "source", "kernel", "daemon", "sample", "bench",
    "lab", "cli", "commands",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path segments of a source file (`engine/http.rs` -> [engine, http]).
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
        segs.pop();
    }
    segs
}

/// The file that defines the longest prefix of `path` (module segments).
fn resolve(path: &[String]) -> Option<PathBuf> {
    let src = src_dir();
    let mut best = None;
    for n in 1..=path.len() {
        let p = path[..n].join("/");
        for cand in [src.join(format!("{p}.rs")), src.join(&p).join("mod.rs")] {
            if cand.is_file() {
                best = Some(cand.strip_prefix(&src).ok()?.to_path_buf());
            }
        }
    }
    best
}

/// Source code without test-only code (a trailing `#[cfg(test)]` module)
/// and without comments (doc links are not imports).
fn non_test(text: &str) -> String {
    let end = [
        "#[cfg(test)]\nmod tests {",
        "#[cfg(test)]\npub(crate) mod tests {",
    ]
    .iter()
    .filter_map(|m| text.find(m))
    .min()
    .unwrap_or(text.len());
    text[..end]
        .split_inclusive('\n')
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect()
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into full paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = format!("{prefix}{}", &tree[..open]);
        let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &head, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &head, out);
    } else if !tree.is_empty() {
        let item = tree.split(" as ").next().unwrap_or(tree).trim();
        let full = format!("{prefix}{item}");
        out.push(full.trim_end_matches("::self").to_string());
    }
}

/// Every crate-internal path a file refers to, as module segments.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(after) = t.strip_prefix("use ") {
            let start = offset + (line.len() - after.len());
            let rest = &text[start..];
            let end = rest.find(';').unwrap_or(rest.len());
            expand(&rest[..end], "", &mut paths);
        }
        offset += line.len();
    }
    // Inline paths (`crate::policy::PortSpec` in an expression or a type).
    for (i, _) in text.match_indices("crate::") {
        let tail: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(tail);
    }
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let tail: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(tail);
    }
    let mut out = Vec::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let abs: Vec<String> = match segs.first() {
            Some(&"crate") => segs[1..].iter().map(|s| s.to_string()).collect(),
            Some(&"super") => {
                let mut base = module.to_vec();
                let mut s = &segs[..];
                while s.first() == Some(&"super") {
                    base.pop();
                    s = &s[1..];
                }
                base.extend(s.iter().map(|x| x.to_string()));
                base
            }
            Some(&"self") => {
                let mut base = module.to_vec();
                base.extend(segs[1..].iter().map(|x| x.to_string()));
                base
            }
            // A relative path names a child module (`use stream::Found` in
            // engine/mod.rs); anything else is an external crate.
            Some(first) if is_child(module, first) => {
                let mut base = module.to_vec();
                base.extend(segs.iter().map(|x| x.to_string()));
                base
            }
            _ => continue,
        };
        out.push(abs);
    }
    out
}

/// True when `name` is a child module of `module` (a file or folder beside it).
fn is_child(module: &[String], name: &str) -> bool {
    let dir = src_dir().join(module.join("/"));
    dir.join(format!("{name}.rs")).is_file() || dir.join(name).join("mod.rs").is_file()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// file -> files it imports (test code and test-only files excluded).
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src").to_path_buf();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("tests") || matches!(name, "layering.rs" | "main.rs" | "lib.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        let module = module_of(&rel);
        let mut deps = BTreeSet::new();
        for r in references(&module, &non_test(&text)) {
            if let Some(target) = resolve(&r)
                && target != rel
                && target != Path::new("lib.rs")
            {
                deps.insert(target);
            }
        }
        g.insert(rel, deps);
    }
    g
}

fn room(f: &Path) -> String {
    f.components()
        .next()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .unwrap_or_default()
}

#[test]
fn no_module_imports_itself_back() {
    let g = graph();
    // Depth-first search for a back edge; report the loop.
    fn visit(
        f: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|s| s == f) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(f.clone());
            return Some(cycle);
        }
        if done.contains(f) {
            return None;
        }
        stack.push(f.clone());
        for d in g.get(f).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(f.clone());
        None
    }
    let mut done = BTreeSet::new();
    for f in g.keys() {
        if let Some(c) = visit(f, &g, &mut Vec::new(), &mut done) {
            let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
            panic!("import loop: {}", names.join(" -> "));
        }
    }
    assert!(g.len() > 40, "the source tree was read ({} files)", g.len());
}

#[test]
fn rooms_import_only_rooms_below_them() {
    let g = graph();
    let rank = |r: &str| ROOMS.iter().position(|x| *x == r);
    let mut bad = Vec::new();
    for (f, deps) in &g {
        let from = room(f);
        let Some(rf) = rank(&from) else {
            bad.push(format!("{}: room {from} is not in ROOMS", f.display()));
            continue;
        };
        for d in deps {
            let to = room(d);
            match rank(&to) {
                Some(rt) if rt <= rf => {}
                _ => bad.push(format!(
                    "{} imports {} (room {to} is not below {from})",
                    f.display(),
                    d.display()
                )),
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_loops_and_groups() {
    let mut out = Vec::new();
    expand(
        "crate::engine::{Engine, verdict::{Reason, Verdict as V}, self}",
        "",
        &mut out,
    );
    assert_eq!(
        out,
        [
            "crate::engine::Engine",
            "crate::engine::verdict::Reason",
            "crate::engine::verdict::Verdict",
            "crate::engine"
        ]
    );
    let m = vec!["engine".to_string(), "http".to_string()];
    let r = references(
        &m,
        "use super::compiled::Compiled;\nlet x = crate::policy::AppSet::default();",
    );
    assert!(r.contains(&vec![
        "engine".to_string(),
        "compiled".to_string(),
        "Compiled".to_string()
    ]));
    assert!(r.contains(&vec![
        "policy".to_string(),
        "AppSet".to_string(),
        "default".to_string()
    ]));
    assert_eq!(
        resolve(&["engine".into(), "http".into(), "HttpState".into()]),
        Some("engine/http.rs".into())
    );
}
