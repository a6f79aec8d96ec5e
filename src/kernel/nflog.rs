//! The kernel half of events for connections the port rules block: an
//! `NFLOG` rule placed just before each port rule, with the same matches,
//! so the dropped (or rejected) packet is also told to appwall's reader
//! (`daemon::nflog`). Kept apart from `iptables.rs` so the port rules
//! themselves stay as they were.
//!
//! Guarantees: the log rule matches exactly what its port rule matches
//! (same text up to the comment), carries no `appwall` comment (the port
//! rules' own counters stay the per-app block counts), is rate-limited
//! (10 per second, bursts of 20: a flood costs the reader nothing beyond
//! that; the port rule's counter still counts every packet), and names the
//! port group in its prefix (`appwall app-msn`), at most 63 bytes.

/// Log messages per second per port rule, and the burst allowed.
pub const RATE: (u32, u32) = (10, 20);

/// The NFLOG rule for port rule `rule` (whose target text is `target`),
/// told to `group` (appwall reads the group of its first queue number).
pub fn log_rule(rule: &str, target: &str, group: u16) -> String {
    let matches = rule.strip_suffix(target).unwrap_or(rule).trim_end();
    let (matches, prefix) = match matches.split_once(" -m comment --comment \"") {
        Some((m, c)) => (m, c.trim_end_matches('"')),
        None => (matches, "appwall"),
    };
    // The kernel keeps 64 bytes of prefix, NUL included.
    let mut end = prefix.len().min(63);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{matches} -m limit --limit {}/second --limit-burst {} -j NFLOG --nflog-group {group} --nflog-prefix \"{}\"",
        RATE.0,
        RATE.1,
        &prefix[..end]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rule_matches_what_its_port_rule_matches() {
        let rule = "-s 192.0.2.10/32 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m comment --comment \"appwall app-msn\" -j DROP";
        assert_eq!(
            log_rule(rule, "-j DROP", 3),
            "-s 192.0.2.10/32 -p tcp -m multiport --dports 1863 -m conntrack --ctdir ORIGINAL -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 3 --nflog-prefix \"appwall app-msn\""
        );
        let long = format!(
            "-p udp -m comment --comment \"appwall app-{}\" -j APPWALL_REJECT",
            "x".repeat(80)
        );
        let l = log_rule(&long, "-j APPWALL_REJECT", 0);
        let prefix = l.split("--nflog-prefix \"").nth(1).unwrap().trim_end_matches('"');
        assert_eq!(prefix.len(), 63);
        assert!(!l.contains("comment"));
    }
}
