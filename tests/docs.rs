//! Documentation links stay alive: every relative link in README.md and
//! docs/*.md must name a file (or directory) that exists, and an anchor
//! (`file.md#heading`, `#heading`) must name a heading of that file, slugged
//! as GitHub does. Links to other sites are not fetched.
// Test and benchmark data: counters folded into addresses, ports and lengths on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        let mut md: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        md.sort();
        docs.extend(md);
    }
    docs
}

/// The text outside fenced code blocks, line by line, with inline code
/// spans blanked (a link inside backticks is an example, not a link).
fn prose_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => {
                fence = Some(m);
                continue;
            }
            (Some(f), Some(m)) if f == m => {
                fence = None;
                continue;
            }
            (Some(_), _) => continue,
            (None, None) => {}
        }
        let mut prose = String::with_capacity(line.len());
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            }
            prose.push(if in_code { ' ' } else { c });
        }
        out.push(prose);
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Anchors of every heading of a Markdown text (duplicates get `-1`, `-2`).
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let level = line.bytes().take_while(|b| *b == b'#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            let base = slug(&line[level..]);
            let mut name = base.clone();
            let mut n = 0;
            while seen.contains(&name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            seen.insert(name);
        }
    }
    seen
}

/// Link targets of one line: inline `[text](target "title")` links and
/// reference definitions `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        if let Some(target) = after[..end].split_whitespace().next() {
            out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        }
        rest = &after[end..];
    }
    let t = line.trim_start();
    let definition = t
        .strip_prefix('[')
        .filter(|r| !r.starts_with('^'))
        .and_then(|r| r.split_once("]: "))
        .and_then(|(_, target)| target.split_whitespace().next());
    out.extend(definition.map(str::to_string));
    out
}

/// Every dead link of `docs`, as `file:line: target: why`.
fn dead_links(root: &Path, docs: &[PathBuf]) -> Vec<String> {
    let mut dead = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        let name = doc.strip_prefix(root).unwrap_or(doc).display().to_string();
        for (n, line) in prose_lines(&text).iter().enumerate() {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.starts_with("man:") {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let file = if path.is_empty() {
                    doc.clone()
                } else {
                    doc.parent().unwrap().join(path)
                };
                let at = format!("{name}:{}: {target}", n + 1);
                if !file.exists() {
                    dead.push(format!("{at}: no such file"));
                    continue;
                }
                let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
                    continue;
                };
                if file.extension().is_some_and(|x| x == "md") {
                    let text = std::fs::read_to_string(&file).unwrap_or_default();
                    if !anchors(&text).contains(anchor) {
                        dead.push(format!("{at}: no heading #{anchor}"));
                    }
                }
            }
        }
    }
    dead
}

#[test]
fn readme_and_docs_have_no_dead_links() {
    let root = root();
    let docs = documents(&root);
    assert!(docs.len() > 1, "no docs/*.md found");
    let dead = dead_links(&root, &docs);
    assert!(dead.is_empty(), "dead links:\n  {}", dead.join("\n  "));
}

#[test]
fn the_checker_finds_missing_files_and_headings() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("a.md"),
        "# Title\n\n## Run: the `live` filter\n\nSee [b](b.md#gone), [run](#run-the-live-filter), \
         [self](#title), [missing](nothing.md), [web](https://example.org/x.md), `[code](nope.md)`.\n\
         ```\n[fenced](nope.md)\n```\n[ref]: other.md\n",
    )
    .unwrap();
    std::fs::write(docs.join("b.md"), "# B\n").unwrap();
    let dead = dead_links(dir.path(), &[docs.join("a.md")]);
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(dead[0].ends_with("b.md#gone: no heading #gone"), "{dead:?}");
    assert!(dead[1].ends_with("nothing.md: no such file"), "{dead:?}");
    assert!(dead[2].ends_with("other.md: no such file"), "{dead:?}");
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug(" Offline: what one core can judge"),
        "offline-what-one-core-can-judge"
    );
    assert_eq!(slug(" `run`: the live filter"), "run-the-live-filter");
    assert_eq!(slug(" Fail-open or fail-closed"), "fail-open-or-fail-closed");
    let a = anchors("# A\n## A\n```\n# not a heading\n```\n");
    assert!(a.contains("a") && a.contains("a-1") && !a.contains("not-a-heading"));
}
