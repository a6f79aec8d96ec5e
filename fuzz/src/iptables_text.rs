//! Checks that generated iptables, ip6tables and ipset text holds only the
//! tokens appwall means to write, whatever hosts or rule files it came from.
//!
//! Why: the text is fed to root-run `iptables-restore` and `ipset restore`,
//! so a hosts line or app name that smuggled an option (`-j ACCEPT`), a
//! newline or a quote into it would change the firewall. The fuzz targets run
//! every policy they manage to build through these checks.

/// Characters allowed in one argument: addresses, CIDR lengths, port ranges,
/// marks and masks, chain, set and app names.
pub fn safe_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b','))
}

/// Characters of a `-m u32 --u32 "..."` expression (fixed by the generator:
/// offsets, shifts, masks, `&&`, `=`).
fn safe_u32(expr: &str) -> bool {
    !expr.is_empty()
        && expr
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'x' | b'>' | b'&' | b'=' | b' ' | b':' | b'@'))
}

/// Checks the arguments of one rule (after `-A CHAIN` or `-I CHAIN N`).
/// Quoted arguments exist in three places only: `--comment "appwall KEY"`,
/// `--nflog-prefix "appwall KEY"` and `--u32 "EXPR"`; a lone `!` negates the
/// next match.
fn check_args(args: &str) -> Result<(), String> {
    let parts: Vec<&str> = args.split('"').collect();
    if parts.len().is_multiple_of(2) {
        return Err(format!("unbalanced quotes in {args:?}"));
    }
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 {
            check_plain(part)?;
            continue;
        }
        let option = parts[i - 1].split(' ').rfind(|t| !t.is_empty());
        let ok = match option {
            Some("--comment" | "--nflog-prefix") => part.strip_prefix("appwall ").is_some_and(safe_token),
            Some("--u32") => safe_u32(part),
            _ => false,
        };
        if !ok {
            return Err(format!("unexpected quoted text {part:?} in {args:?}"));
        }
    }
    Ok(())
}

fn check_plain(s: &str) -> Result<(), String> {
    for t in s.split(' ').filter(|t| !t.is_empty()) {
        if !(safe_token(t) || t == "!") {
            return Err(format!("unsafe argument {t:?}"));
        }
    }
    if s.contains(['\t', '\r', '\n', '\0']) {
        return Err(format!("control character in {s:?}"));
    }
    Ok(())
}

/// Checks `iptables-restore` input: every line is a comment, a table
/// (`*mangle`), a chain (`:NAME - [0:0]`), a rule (`-A`/`-I`) or `COMMIT`.
pub fn check_restore(text: &str) -> Result<(), String> {
    for line in text.lines() {
        if line.starts_with('#') {
            // Comments are fixed strings of the generator.
            continue;
        }
        if line == "COMMIT" || line == "*mangle" || line == "*filter" {
            continue;
        }
        if let Some(chain) = line.strip_prefix(':') {
            let name = chain
                .strip_suffix(" - [0:0]")
                .ok_or_else(|| format!("bad chain line {line:?}"))?;
            if !safe_token(name) {
                return Err(format!("bad chain name in {line:?}"));
            }
            continue;
        }
        let args = line
            .strip_prefix("-A ")
            .or_else(|| line.strip_prefix("-I "))
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        check_args(args)?;
    }
    Ok(())
}

/// Checks plain `iptables ...` / `ip6tables ...` commands.
pub fn check_commands(text: &str) -> Result<(), String> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let rest = line
            .strip_prefix("iptables ")
            .or_else(|| line.strip_prefix("ip6tables "))
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let rest = rest
            .strip_prefix("-t mangle ")
            .or_else(|| rest.strip_prefix("-t filter "))
            .ok_or_else(|| format!("no table in {line:?}"))?;
        if !(rest.starts_with("-A ") || rest.starts_with("-I ") || rest.starts_with("-N ")) {
            return Err(format!("unexpected command {line:?}"));
        }
        check_args(&rest[3..])?;
    }
    Ok(())
}

/// Checks `ipset restore` input: `create`, `flush` and `add` lines only.
pub fn check_ipset(text: &str) -> Result<(), String> {
    for line in text.lines() {
        let mut words = line.split(' ');
        match words.next() {
            Some("create" | "flush" | "add") => {}
            _ => return Err(format!("unexpected ipset line {line:?}")),
        }
        for w in words {
            if !safe_token(w) {
                return Err(format!("unsafe ipset word {w:?} in {line:?}"));
            }
        }
    }
    Ok(())
}
