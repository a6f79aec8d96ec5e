//! SIGHUP with broken rule files in the middle of traffic: each is refused
//! with `path:line:`, the running policy stays, traffic never pauses, and a
//! good file is then taken (root, one lab).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::LAB;
use crate::support::lab::{status_json, stop, wait_for, wait_log, with_lab};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, Probe, Prober, Stream, echo_addr, echoed};

cases![fault_sighup_with_broken_rule_files_mid_traffic_keeps_the_policy: LAB];

const SITE_RULES: &str = "name = \"site\"\ndescription = \"test app\"\n\
[[signature]]\nid = \"token\"\nscope = \"anywhere\"\ntext = \"TOKEN\"\nwhy = \"test\"\n";

fn fault_sighup_with_broken_rule_files_mid_traffic_keeps_the_policy() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let rules = lab.dir().join("rules");
        std::fs::create_dir(&rules).unwrap();
        let site = rules.join("site.toml");
        std::fs::write(&site, SITE_RULES.replace("TOKEN", "FORBIDDEN-ALPHA")).unwrap();
        let h = lab.hosts("192.0.2.10 msn,site\n");
        let mut f = lab.start(&h, &["--reset", "--rules", rules.to_str().unwrap()], "r");
        let mut slow = Stream::start(&lab.client, echo_addr(), 0, Duration::from_millis(25));
        let mut probes = Prober::start(&lab.client, echo_addr());
        let c = lab.client.clone();
        let policy_is = |alpha_blocked: bool| {
            assert_eq!(
                !echoed(&c, b"x FORBIDDEN-ALPHA x\n", Duration::from_secs(2)),
                alpha_blocked
            );
            assert!(!echoed(&c, MSNP, Duration::from_secs(2)), "msn blocked");
            assert!(echoed(&c, b"benign\n", Duration::from_secs(2)));
        };
        policy_is(true);
        let started = Instant::now();

        let broken = [
        // TOML syntax error.
        "name = \"site\"\ndescription = \"x\n[[signature]\n".to_string(),
        // Unknown key.
        SITE_RULES.replace("why = ", "whyy = "),
        // A regex that does not compile.
        "name = \"site\"\ndescription = \"d\"\n[[rule]]\nid = \"bad\"\n[[rule.match]]\nfield = \"url\"\nregex = [\"(\"]\n"
            .to_string(),
    ];
        for (i, text) in broken.iter().enumerate() {
            std::fs::write(&site, text).unwrap();
            f.signal(Signal::SIGHUP).unwrap();
            wait_log(&f, "reload refused", i + 1);
            assert!(
                f.log_text().contains(&format!("{}:", site.display())),
                "path:line: error expected:\n{}",
                f.log_text()
            );
            policy_is(true);
        }
        // A good file is taken, mid-traffic too.
        std::fs::write(&site, SITE_RULES.replace("TOKEN", "FORBIDDEN-BETA")).unwrap();
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "policy reloaded", 1);
        policy_is(false);
        assert!(!echoed(&c, b"x FORBIDDEN-BETA x\n", Duration::from_secs(2)));
        let end = Instant::now();
        wait_for("status update", Duration::from_secs(3), || {
            status_json(&f)["reloads"] == 1
        });
        let st = status_json(&f);
        assert_eq!(st["reload_failures"], 3, "{st:#}");

        let probes = probes.finish();
        let s = slow.finish();
        assert!(s.error.is_none() && s.echoed == s.sent, "{s:?}");
        let gap = slow.max_gap(started, end);
        assert!(
            gap < Duration::from_millis(500),
            "a reload stalled traffic for {gap:?}"
        );
        let failed: Vec<&Probe> = probes.iter().filter(|p| !p.ok).collect();
        assert!(failed.is_empty() && !probes.is_empty(), "{failed:?}");
        stop(&mut f);
    });
}
