//! Injection tests: user-written inputs must never put
//! anything of their own into the text that root-run `iptables-restore`,
//! `iptables` and `ipset restore` read.
//!
//! Two halves: hostile hosts lines and rule files are *errors* (never
//! silently accepted, never half-applied), and the text generated for any
//! valid policy holds only the tokens the generator means to write.

use std::path::{Path, PathBuf};

use appwall::kernel::iptables::{self, Family, KernelRuleOptions, PortAction};
use appwall::kernel::marks::MarkBits;
use appwall::kernel::queue_rate::QueueRate;
use appwall::policy::{AppLibrary, HostsFile, Policy};
use proptest::prelude::*;

cases![
    hostile_hosts_lines_are_errors,
    hostile_rule_files_are_errors,
    checker_catches_injection,
    generated_rules_hold_only_safe_tokens,
];

fn hosts_error(text: &str) -> Option<String> {
    match HostsFile::parse(Path::new("hosts"), text) {
        Err(e) => Some(e.to_string()),
        Ok(h) => Policy::new(AppLibrary::embedded().unwrap(), &h, None)
            .err()
            .map(|e| e.to_string()),
    }
}

fn hostile_hosts_lines_are_errors() {
    let hostile = [
        "192.0.2.1 -j ACCEPT",
        "192.0.2.1 msn -j ACCEPT",
        "192.0.2.1 msn,-j,ACCEPT",
        "192.0.2.1;reboot",
        "192.0.2.1 ;reboot",
        "192.0.2.1 msn;reboot",
        "$(reboot)",
        "192.0.2.1 $(reboot)",
        "`reboot`",
        "192.0.2.1 `reboot`",
        "192.0.2.1|reboot",
        "192.0.2.1&&reboot",
        "192.0.2.1 msn&&reboot",
        "192.0.2.1\0 msn",
        "192.0.2.1 msn\0-j",
        "192.0.2.1 ms\0n",
        "192.0.2.1\n-j ACCEPT",
        "192.0.2.1 msn\n-A INPUT -j ACCEPT",
        "192.0.2.1 msn\r-j ACCEPT",
        "192.0.2.1 msn\u{2028}-j ACCEPT",
        "192.0.2.1 msn\u{a0}-jACCEPT",
        "192.0.2.1 \"msn\"",
        "192.0.2.1 'msn'",
        "192.0.2.1 msn\"",
        "192.0.2.1 MSN",
        "192.0.2.1 msn\\",
        "192.0.2.1/33",
        "192.0.2.1:22 -j ACCEPT",
        "192.0.2.1:22/tcp;reboot",
        "192.0.2.1:22/icmp",
        "192.0.2.1:0",
        "192.0.2.1:65536",
        "192.0.2.1:22,23",
        "192.0.2.1:22 --dport 80",
        "[2001:db8::1]:22;reboot",
        "[2001:db8::1;reboot]:22",
        "2001:db8::1%eth0",
        "-s 192.0.2.1",
        "--flush",
        "*filter",
        "COMMIT",
        ":INPUT ACCEPT [0:0]",
        "0x7f000001",
        "192.0.2.1 gtalk",
    ];
    for text in hostile {
        let err = hosts_error(text).unwrap_or_else(|| panic!("{text:?} was accepted"));
        assert!(err.starts_with("hosts:"), "{text:?}: {err}");
    }
    // One bad line spoils the whole file: nothing is half-applied.
    assert!(hosts_error("192.0.2.1 msn\n192.0.2.2 -j ACCEPT\n192.0.2.3\n").is_some());
    // Comments are cut before parsing, so a `#` cannot hide anything either.
    let policy = policy_of("192.0.2.1 msn # -j ACCEPT $(reboot)\n");
    assert_safe(&policy);
}

fn rule_error(stem: &str, text: &str) -> Option<String> {
    let mut files: Vec<(PathBuf, String)> = appwall::policy::library::EMBEDDED
        .iter()
        .map(|(n, t)| (Path::new("rules").join(n), t.to_string()))
        .collect();
    files.push((PathBuf::from(format!("rules/{stem}.toml")), text.to_string()));
    AppLibrary::from_texts(&files).err().map(|e| e.to_string())
}

fn hostile_rule_files_are_errors() {
    let sig = |id: &str| {
        format!(
            "name = \"evil\"\ndescription = \"d\"\n[[signature]]\nid = {id}\nscope = \"anywhere\"\ntext = \"xyz\"\n"
        )
    };
    let named = |name: &str| format!("name = {name}\ndescription = \"d\"\nports.tcp = [\"1\"]\n");
    let cases: Vec<(String, String)> = vec![
        ("evil -j ACCEPT".into(), named("\"evil -j ACCEPT\"")),
        ("evil".into(), named("\"evil -j ACCEPT\"")),
        ("-j".into(), named("\"-j\"")),
        ("evil".into(), named("\"-j\"")),
        ("evil".into(), named("\"evil\\\"\"")),
        ("evil".into(), named("\"ev il\"")),
        ("evil".into(), named("\"evil;reboot\"")),
        ("evil".into(), named("\"$(reboot)\"")),
        ("evil".into(), named("\"evil\\nCOMMIT\"")),
        ("evil".into(), named("\"evil\\u0000\"")),
        ("evil".into(), named("\"Evil\"")),
        ("evil".into(), named("\"\"")),
        ("evil".into(), named(&format!("\"{}\"", "e".repeat(21)))),
        ("evil".into(), sig("\"a b\"")),
        ("evil".into(), sig("\"a\\\"b\"")),
        ("evil".into(), sig("\"-j ACCEPT\"")),
        ("evil".into(), sig("\"a;reboot\"")),
        ("evil".into(), sig("\"a\\nb\"")),
        ("evil".into(), sig("\"\"")),
        (
            "evil".into(),
            "name = \"evil\"\ndescription = \"d\"\nports.tcp = [\"1863 -j ACCEPT\"]\n".into(),
        ),
        (
            "evil".into(),
            "name = \"evil\"\ndescription = \"d\"\nports.tcp = [\"1863,22\"]\n".into(),
        ),
        (
            "evil".into(),
            "name = \"evil\"\ndescription = \"d\"\nports.tcp = [\"1:22\"]\n".into(),
        ),
        (
            "evil".into(),
            "name = \"evil\"\ndescription = \"d\"\n[[signature]]\nid = \"a\"\nscope = \"http-header\"\nheader = \"X-A: b\"\ntext = \"x\"\n".into(),
        ),
    ];
    for (stem, text) in &cases {
        let err = rule_error(stem, text).unwrap_or_else(|| panic!("{stem}.toml accepted:\n{text}"));
        assert!(err.contains(".toml"), "{stem}: {err}");
    }
    // The same file with a clean name loads, and its name is all that reaches iptables.
    assert!(rule_error("evil", &named("\"evil\"")).is_none());
}

fn policy_of(hosts: &str) -> Policy {
    let h = HostsFile::parse(Path::new("hosts"), hosts).unwrap();
    Policy::new(AppLibrary::embedded().unwrap(), &h, None).unwrap()
}

fn safe_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b','))
}

/// The generator's fixed u32 expressions (empty-segment skip): digits,
/// hex and the u32 operators only.
fn u32_expr(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_hexdigit() || b" x>&=:@".contains(&b))
}

/// Rule arguments: safe tokens, plus quoted `"appwall KEY"` comments and
/// `--u32 "EXPR"` expressions.
fn check_args(line: &str, args: &str) {
    let parts: Vec<&str> = args.split('"').collect();
    assert!(parts.len() % 2 == 1, "unbalanced quotes in {line:?}");
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            if parts[i - 1].ends_with("--u32 ") {
                assert!(u32_expr(part), "unexpected u32 expression in {line:?}");
                continue;
            }
            let key = part
                .strip_prefix("appwall ")
                .unwrap_or_else(|| panic!("unexpected quoted text in {line:?}"));
            assert!(safe_token(key), "unsafe comment in {line:?}");
        } else {
            // `!` stands alone before a negated match (`! --tcp-flags`).
            for t in part.split(' ').filter(|t| !t.is_empty() && *t != "!") {
                assert!(safe_token(t), "unsafe argument {t:?} in {line:?}");
            }
        }
    }
}

fn check_restore(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') || line == "COMMIT" || line == "*mangle" || line == "*filter" {
            continue;
        }
        if let Some(chain) = line.strip_prefix(':') {
            let name = chain
                .strip_suffix(" - [0:0]")
                .unwrap_or_else(|| panic!("bad chain line {line:?}"));
            assert!(safe_token(name), "{line:?}");
            continue;
        }
        let args = line
            .strip_prefix("-A ")
            .or_else(|| line.strip_prefix("-I "))
            .unwrap_or_else(|| panic!("unexpected restore line {line:?}"));
        check_args(line, args);
    }
}

fn check_commands(text: &str) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let rest = line
            .strip_prefix("iptables -t ")
            .or_else(|| line.strip_prefix("ip6tables -t "))
            .unwrap_or_else(|| panic!("unexpected command {line:?}"));
        let rest = rest
            .strip_prefix("mangle ")
            .or_else(|| rest.strip_prefix("filter "))
            .unwrap_or_else(|| panic!("unexpected table in {line:?}"));
        assert!(
            ["-A ", "-I ", "-N "].iter().any(|p| rest.starts_with(p)),
            "unexpected command {line:?}"
        );
        check_args(line, &rest[3..]);
    }
}

fn check_ipset(text: &str) {
    for line in text.lines() {
        let mut words = line.split(' ');
        assert!(
            matches!(words.next(), Some("create" | "flush" | "add")),
            "unexpected ipset line {line:?}"
        );
        for w in words {
            assert!(safe_token(w), "unsafe ipset word {w:?} in {line:?}");
        }
    }
}

fn option_sets() -> Vec<KernelRuleOptions> {
    vec![
        KernelRuleOptions::default(),
        KernelRuleOptions {
            queue: 7,
            queues: 4,
            fail_closed: true,
            port_action: PortAction::Reject,
            reset: true,
            ipset_threshold: 0,
            marks: MarkBits::default(),
            jumps: false,
            queue_empty_segments: true,
            queue_rate: QueueRate::PerSource {
                pps: 1,
                burst: 1_000_000,
            },
        },
        KernelRuleOptions {
            queue_rate: QueueRate::Off,
            ..KernelRuleOptions::default()
        },
    ]
}

fn assert_safe(policy: &Policy) {
    let all: u64 = (0..policy.library().apps().len()).fold(0, |s, i| s | (1 << i));
    for opts in option_sets() {
        for fam in [Family::V4, Family::V6] {
            for inspected in [0, all] {
                check_restore(&iptables::restore_input(policy, inspected, fam, &opts));
                check_commands(&iptables::commands(policy, inspected, fam, &opts));
                check_ipset(&iptables::ipset_input(policy, inspected, fam, &opts));
            }
        }
    }
}

fn checker_catches_injection() {
    // The checks themselves must reject what they guard against.
    for bad in [
        "-A APPWALL -s 192.0.2.1 -j ACCEPT;reboot",
        "-A APPWALL -s 192.0.2.1 -m comment --comment \"x\" -j DROP",
        "-A APPWALL -s $(reboot) -j DROP",
        "-F",
        "-A APPWALL -m comment --comment \"appwall a b\" -j DROP",
        "-A APPWALL -m u32 --u32 \"0>>22&0x3C@ 12>>26&0x3C@ 0=0x1 -j ACCEPT\" -j DROP",
        "-A APPWALL -s 192.0.2.1 \"--u32\" -j DROP",
        "-A APPWALL ! ! -j DROP;",
    ] {
        assert!(std::panic::catch_unwind(|| check_restore(bad)).is_err(), "{bad}");
    }
    check_restore(
        "-A APPWALL -s 192.0.2.1/32 -p tcp -m multiport --dports 1863,6660:7000 -m comment --comment \"appwall msn\" -j DROP",
    );
    check_restore(
        "-A APPWALL_INSPECT -p tcp ! --tcp-flags SYN,ACK SYN -m u32 --u32 \"0>>24=0x45 && 0&0xFFFF=40 && 32>>28=5\" -j RETURN",
    );
}

fn net() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| {
            let n = ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc();
            if l == 32 && a[0] % 2 == 0 {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        }),
        (any::<[u16; 8]>(), 0u8..=128).prop_map(|(a, l)| {
            let n = ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc();
            if l == 128 {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        }),
    ]
}

fn port() -> impl Strategy<Value = String> {
    (1u16..=65535, 0u16..200, prop::bool::ANY, prop::bool::ANY).prop_map(|(p, span, range, udp)| {
        let mut s = if range {
            format!("{p}-{}", p.saturating_add(span))
        } else {
            p.to_string()
        };
        if udp {
            s.push_str("/udp");
        }
        s
    })
}

fn host_line() -> impl Strategy<Value = String> {
    let apps = prop::sample::subsequence(
        vec![
            "aim",
            "bittorrent",
            "irc",
            "msn",
            "mysql",
            "qq",
            "xmpp",
            "yahoo",
            "all",
        ],
        0..4,
    );
    (net(), prop::option::of(port()), apps).prop_map(|(net, port, apps)| {
        let addr = match port {
            // IP:PORT lines take single addresses in brackets for IPv6.
            Some(p) if net.contains(':') => format!("[{net}]:{p}"),
            Some(p) => format!("{net}:{p}"),
            None => net,
        };
        if apps.is_empty() {
            addr
        } else {
            format!("{addr} {}", apps.join(","))
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random valid policies generate only expected lines and safe tokens.
        fn generated_rules_hold_only_safe_tokens(lines in prop::collection::vec(host_line(), 1..40)) {
        let text = lines.join("\n");
        let hosts = HostsFile::parse(Path::new("hosts"), &text);
        prop_assume!(hosts.is_ok(), "generator made an invalid line: {:?}", hosts.err());
        let policy = Policy::new(AppLibrary::embedded().unwrap(), &hosts.unwrap(), None).unwrap();
        assert_safe(&policy);
    }
}
