//! The generated rules are accepted by the kernel: loaded into a scratch
//! network namespace (never the host's own tables), then removed with it.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Need, run, temp_file};

/// Root (namespaces) and the rule tools.
const KERNEL: &[Need] = &[
    Need::Root,
    Need::Tools(&["iptables-restore", "ip6tables-restore", "ipset", "ip"]),
];

cases![
    kernel_accepts_generated_rules_in_every_variant: KERNEL,
];

/// A network namespace deleted on drop, also when the test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        let name = format!("aw-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Netns(name))
    }

    fn exec(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).args(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ip netns exec");
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn load(ns: &Netns, family_cmd: &str, text: &str) {
    let (ok, msg) = ns.exec(&[family_cmd, "--noflush"], Some(text));
    assert!(ok, "{family_cmd} refused the rules: {msg}\n{text}");
}

fn kernel_accepts_generated_rules_in_every_variant() {
    let ns = Netns::new("rules").expect("create namespace");
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/hosts.example");
    let ex = ex.to_str().unwrap();
    let variants: &[&[&str]] = &[
        &[],
        &["--port-action", "reject", "--reset"],
        &["--reset"],
        &[
            "--queues",
            "2",
            "--fail-closed",
            "--queue-rate",
            "1000000/1000000",
        ],
        &["--queue-rate", "off"],
        &["--queue-rate", "1/1"],
    ];
    for extra in variants {
        for (fam, cmd) in [("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")] {
            let mut args = vec!["rules", "--hosts", ex, "--family", fam];
            args.extend_from_slice(extra);
            let (code, text, err) = run(&args);
            assert_eq!(code, 0, "{err}");
            load(&ns, cmd, &text);
            // Loading again replaces the chains' contents; jumps are the caller's job.
            let (ok, saved) = ns.exec(
                &[if fam == "ipv4" {
                    "iptables-save"
                } else {
                    "ip6tables-save"
                }],
                None,
            );
            assert!(ok);
            assert!(saved.contains(":APPWALL - "), "{saved}");
            assert!(saved.contains("-j NFQUEUE"), "{saved}");
            // The per-source limit (xt_hashlimit), on unless told off.
            assert_eq!(
                saved.contains("--hashlimit-mode srcip"),
                !extra.contains(&"off"),
                "{saved}"
            );
        }
    }
    // Large lists through ipsets.
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("203.0.113.{} msn\n", i * 2));
    }
    let (_d, hosts) = temp_file("hosts", text.as_bytes());
    let h = hosts.to_str().unwrap();
    let (_, sets, _) = run(&["rules", "--hosts", h, "--family", "ipv4", "--format", "ipset"]);
    let (ok, msg) = ns.exec(&["ipset", "restore"], Some(&sets));
    assert!(ok, "ipset refused: {msg}");
    let (_, rules, _) = run(&["rules", "--hosts", h, "--family", "ipv4"]);
    load(&ns, "iptables-restore", &rules);
    let (_, saved) = ns.exec(&["iptables-save", "-t", "mangle"], None);
    assert!(saved.contains("--match-set appwall4-inspect src"), "{saved}");
    // The plain-commands form runs too (one command per line, no shell).
    let ns2 = Netns::new("cmds").expect("create namespace");
    let (_, cmds, _) = run(&["rules", "--hosts", ex, "--family", "ipv4", "--format", "commands"]);
    for line in cmds.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let args = split_args(line);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, msg) = ns2.exec(&argv, None);
        assert!(ok, "`{line}` failed: {msg}");
    }
    // The namespace's sets must go before the namespace (ipset is global? no: per netns).
    let _ = ns.exec(&["iptables", "-t", "mangle", "-F"], None);
    let _ = ns.exec(&["ipset", "destroy"], None);
}

/// Splits a command line on spaces, honouring double quotes (as a shell would
/// for the generated `-m comment --comment "..."` arguments).
fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
