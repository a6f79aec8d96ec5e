//! Least privilege: after start-up only CAP_NET_ADMIN is left (with
//! no_new_privs), also after `--user`; reload and removal still work, and
//! an unknown user is refused before anything is installed (root).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::lab::{HOSTS, status_json, stop, wait_for, wait_log, with_lab};
use crate::support::procs::{proc_status, status_field, thread_caps};
use crate::support::traffic::{ECHO_PORT, EchoServer, MSNP, echoed};
use crate::support::{LAB, LAB_TOOLS, Need, text};

/// A live test that also switches to the user `nobody`.
const LAB_NOBODY: &[Need] = &[Need::Root, Need::Tools(LAB_TOOLS), Need::User("nobody")];

cases![
    privilege_only_net_admin_left_and_reload_still_works: LAB,
    privilege_user_switch_keeps_filtering_reload_and_removal: LAB_NOBODY,
];

const NET_ADMIN: &str = "0000000000001000";
const NET_ADMIN_RAW: &str = "0000000000003000";

/// Every thread of `pid` holds CAP_NET_ADMIN only (effective), with
/// CAP_NET_RAW kept permitted and inheritable for the rule tools, and no_new_privs.
fn assert_least_privilege(pid: u32) {
    let threads = thread_caps(pid);
    assert!(threads.len() >= 3, "{threads:?}");
    for t in &threads {
        assert_eq!(
            t,
            &[
                NET_ADMIN.to_string(),
                NET_ADMIN_RAW.into(),
                NET_ADMIN_RAW.into(),
                NET_ADMIN_RAW.into(),
                NET_ADMIN_RAW.into(),
                "1".into()
            ],
            "[eff, prm, inh, bnd, amb, no_new_privs] of a thread of {pid}"
        );
    }
}

fn privilege_only_net_admin_left_and_reload_still_works() {
    with_lab(|lab| {
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        let h = lab.hosts("203.0.113.20 msn\n");
        let mut f = lab.start(
            &h,
            &["--reset", "--queues", "2", "--ipset-threshold", "0"],
            "caps",
        );
        let pid = f.pid().unwrap();
        assert_least_privilege(pid);
        assert!(f.log_text().contains("privileges dropped"), "{}", f.log_text());
        // Verdicts work with only CAP_NET_ADMIN.
        assert!(!echoed(&lab.other, MSNP, Duration::from_secs(2)));
        // Reload runs iptables-restore and ipset with the ambient capabilities.
        std::fs::write(&h, HOSTS).unwrap();
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "policy reloaded", 1);
        assert!(
            !echoed(&lab.client, MSNP, Duration::from_secs(2)),
            "reload applied"
        );
        assert!(echoed(&lab.other, MSNP, Duration::from_secs(2)));
        assert_least_privilege(pid);
        // And removal at exit.
        stop(&mut f);
    });
}

fn privilege_user_switch_keeps_filtering_reload_and_removal() {
    with_lab(|lab| {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody (declared in the test list)");
        let _echo = EchoServer::start(&lab.server, ECHO_PORT);
        // The lab's scratch directory holds the hosts, status and event files
        // the unprivileged filter reads and writes after the switch.
        nix::unistd::chown(lab.dir(), Some(nobody.uid), Some(nobody.gid)).unwrap();
        let h = lab.hosts("203.0.113.20 msn\n");
        let lock = lab.gateway_lock();
        let mut f = lab.start(&h, &["--user", "nobody", "--reset"], "u");
        let pid = f.pid().unwrap();
        let st = proc_status(pid);
        let four = |n: String| format!("{n}\t{n}\t{n}\t{n}");
        assert_eq!(status_field(&st, "Uid:"), four(nobody.uid.to_string()), "{st}");
        assert_eq!(status_field(&st, "Gid:"), four(nobody.gid.to_string()), "{st}");
        assert_eq!(status_field(&st, "Groups:"), nobody.gid.to_string());
        assert_least_privilege(pid);
        assert!(f.log_text().contains("running as nobody"), "{}", f.log_text());

        assert!(!echoed(&lab.other, MSNP, Duration::from_secs(2)));
        std::fs::write(&h, HOSTS).unwrap();
        f.signal(Signal::SIGHUP).unwrap();
        wait_log(&f, "policy reloaded", 1);
        assert!(
            !echoed(&lab.client, MSNP, Duration::from_secs(2)),
            "reload as nobody"
        );
        assert!(echoed(&lab.other, MSNP, Duration::from_secs(2)));
        // The status file is written by the unprivileged process.
        wait_for("status file", Duration::from_secs(3), || {
            status_json(&f)["reloads"] == 1
        });
        stop(&mut f);
        lab.assert_clean();
        // Documented: an unprivileged process cannot unlink its lock in /run/appwall.
        let _ = std::fs::remove_file(&lock);

        // An unknown user is refused before anything is installed.
        let o = lab.appwall(&[
            "run",
            "--hosts",
            h.to_str().unwrap(),
            "--user",
            "appwall-no-such-user",
            "--status-file",
            "/dev/null",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--user appwall-no-such-user: no such user"),
            "{}",
            text(&o)
        );
        lab.assert_clean();
        assert!(!lock.exists());
    });
}
