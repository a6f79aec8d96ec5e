//! The rule tools seen from appwall: missing or failing at start-up (a
//! clear error, nothing left behind), failing on reload (nothing changes),
//! and always run directly with fixed arguments, never through a shell
//! (root, stand-ins from `support::tools` first on `PATH`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use appwall::lab;
use nix::sys::signal::Signal;

use crate::support::lab::{HOSTS, LiveLab, stop, wait_log, with_lab};
use crate::support::tools::{TOOLS, ToolShim};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, echoed};
use crate::support::{LAB, exe, text};

cases![
    fault_rule_tools_missing_or_failing_at_start_leave_nothing: LAB,
    fault_failed_reload_changes_nothing_and_no_shell_runs_the_tools: LAB,
];

/// `appwall run` with `PATH` at the shim; returns its output (start-up is
/// expected to fail).
fn run_with_path(lab: &LiveLab, dir: &Path, shim: &ToolShim, h: &Path) -> Output {
    let mut cmd = lab.command(
        &lab.gateway,
        exe().to_str().unwrap(),
        &[
            "run",
            "--hosts",
            h.to_str().unwrap(),
            "--status-file",
            dir.join("st.json").to_str().unwrap(),
            "--ipset-threshold",
            "0",
            "--reset",
        ],
    );
    cmd.env("PATH", shim.path()).env_remove("JOURNAL_STREAM");
    lab::run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap()
}

fn fault_rule_tools_missing_or_failing_at_start_leave_nothing() {
    with_lab(|lab| {
        let h = lab.hosts(HOSTS);
        let lock = lab.gateway_lock();
        // (tools present, tool that fails, expected error)
        let cases: [(&[&str], Option<&str>, &str); 5] = [
            (
                &[],
                None,
                "installing rules: cannot run iptables-save: No such file or directory",
            ),
            (
                &TOOLS,
                Some("iptables-save"),
                "installing rules: iptables-save -t mangle failed: simulated failure",
            ),
            (
                &TOOLS,
                Some("ipset"),
                "installing rules: ipset restore failed: simulated failure",
            ),
            (
                &TOOLS,
                Some("iptables-restore"),
                "installing rules: iptables-restore --noflush failed: simulated failure",
            ),
            // IPv4 is in by then: it must be taken out again.
            (
                &TOOLS,
                Some("ip6tables-restore"),
                "installing rules: ip6tables-restore --noflush failed: simulated failure",
            ),
        ];
        for (i, (tools, failing, expect)) in cases.iter().enumerate() {
            let sub = lab.dir().join(format!("case{i}"));
            let shim = ToolShim::new(&sub, tools);
            if let Some(t) = failing {
                shim.fail(t, true);
            }
            let started = Instant::now();
            let o = run_with_path(lab, &sub, &shim, &h);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(err.contains(&format!("appwall: error: {expect}")), "{}", text(&o));
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
            lab.assert_clean();
            assert!(!lock.exists(), "lock file left: {}", lock.display());
            if *failing == Some("ip6tables-restore") {
                let restores = shim
                    .calls()
                    .iter()
                    .filter(|c| c.contains(" iptables-restore --noflush"))
                    .count();
                assert_eq!(restores, 2, "IPv4 installed then removed: {:#?}", shim.calls());
            }
        }
    });
}

fn fault_failed_reload_changes_nothing_and_no_shell_runs_the_tools() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let shim = ToolShim::new(lab.dir(), &TOOLS);
        let h = lab.hosts(HOSTS);
        let mut f = lab.start_env(
            &h,
            &["--reset", "--ipset-threshold", "0"],
            "shim",
            &[("PATH", &shim.path())],
        );
        let installed = lab.appwall_rules();
        assert!(!echoed(&lab.client, MSNP, Duration::from_secs(2)));
        assert!(echoed(&lab.other, MSNP, Duration::from_secs(2)), "not listed yet");

        // The kernel refuses the new rules (IPv4 first, then IPv6 after IPv4
        // and the sets went in): nothing changes, kernel or engine.
        std::fs::write(&h, format!("{HOSTS}203.0.113.20 msn\n")).unwrap();
        let port_1863: SocketAddr = format!("{}:1863", lab::SERVER4).parse().unwrap();
        for (i, tool) in ["iptables-restore", "ip6tables-restore"].iter().enumerate() {
            shim.fail(tool, true);
            f.signal(Signal::SIGHUP).unwrap();
            wait_log(&f, "reload refused", i + 1);
            shim.fail(tool, false);
            assert_eq!(lab.appwall_rules(), installed, "after {tool} failed");
            assert!(
                echoed(&lab.other, MSNP, Duration::from_secs(2)),
                "old policy in force"
            );
            let (o, _) = lab::tcp_exchange(&lab.other, port_1863, MSNP, 1, Duration::from_secs(2));
            assert!(
                o.passed(),
                "the new port rule leaked in after {tool} failed: {o:?}"
            );
            assert!(!echoed(&lab.client, MSNP, Duration::from_secs(2)));
        }
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "policy reloaded", 1);
        assert!(
            !echoed(&lab.other, MSNP, Duration::from_secs(2)),
            "new policy in force"
        );
        stop(&mut f);
        lab.assert_clean();

        // Every tool run came straight from appwall (no shell between), with
        // fixed arguments; the rules themselves went through stdin.
        let calls = shim.calls();
        let allowed = [
            "iptables-save -t mangle",
            "iptables-save -t filter",
            "ip6tables-save -t mangle",
            "ip6tables-save -t filter",
            "iptables-restore --noflush",
            "ip6tables-restore --noflush",
            "ipset restore",
            "ipset list -n",
        ];
        assert!(calls.len() >= 20, "{calls:#?}");
        for c in &calls {
            let (comm, cmd) = c.split_once(' ').unwrap_or(("", c));
            assert_eq!(comm, "appwall", "run by something else: {c}");
            assert!(
                allowed.contains(&cmd) || cmd.starts_with("ipset destroy appwall"),
                "unexpected tool run: {c}"
            );
        }
        let kinds: BTreeSet<&str> = calls.iter().filter_map(|c| c.split(' ').nth(1)).collect();
        assert_eq!(kinds.len(), TOOLS.len(), "{kinds:?}");
    });
}
