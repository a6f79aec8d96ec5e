//! The per-source limit in front of the queue (`--queue-rate PPS[/BURST]`):
//! a listed host's share of the NFQUEUE queue, enforced in the kernel.
//!
//! Why: "appwall not running" and "queue full" are separate cases
//! (`--queue-bypass` vs `--queue-full`), but with `--queue-full accept`
//! (the fail-open default) one listed host that floods its own traffic can
//! fill the queue, and whatever does not fit (its own Messenger requests
//! included) passes uninspected. An `xt_hashlimit` match keyed per
//! source address (`--hashlimit-mode srcip`; one rule for TCP and one for
//! UDP, sharing one table, so one bucket per source) sits in
//! `APPWALL_INSPECT` after the pure-ACK skips and before the NFQUEUE
//! rules: a source's packets above its rate are **dropped** there (TCP
//! retransmits them), never accepted uninspected, and never reach the
//! queue, so other hosts keep their room.
//!
//! What counts against the limit: only packets that would be queued (TCP
//! and UDP; other protocols return from the chain unqueued). Connections
//! settled in the kernel (connmark clean or blocked) return or drop before
//! `APPWALL_INSPECT`, and pure ACKs and SYN-ACKs return at its top, so
//! steady traffic of settled connections never touches the bucket; what
//! does is the opening packets of new connections and the first
//! inspection depth of each (about ten packets of a short HTTP exchange).
//!
//! The rules carry the comment [`COMMENT`] so the daemon can read its
//! packet counter ([`limited_packets`]) into `queue_rate_limited`; the
//! comment holds no `NFQUEUE`, so the overflow count (which sums the
//! NFQUEUE rules' counters) never includes these drops. Which sources are
//! over their rate the kernel lists in `/proc` ([`sources_over`]); the
//! daemon names them in a warning once per stats interval while drops
//! grow (a log line, not an event per packet: a flood costs nothing).
//!
//! Sizing: one hash entry per active source; entries idle for
//! [`EXPIRE_MS`] are forgotten (a bucket idle that long is full again
//! anyway whenever `BURST / PPS` is under it, which the default is).
//! At [`HTABLE_MAX`] entries the kernel drops packets of sources it cannot
//! add (fail closed, never open): that takes more than `HTABLE_MAX` new
//! source addresses within [`EXPIRE_MS`].

use std::fmt;
use std::str::FromStr;

/// Comment of the limiting rule, by which its counter is found.
pub const COMMENT: &str = "appwall queue-rate";
/// Highest rate xt_hashlimit takes (packets per second).
pub const MAX_PPS: u32 = 1_000_000;
/// Highest burst xt_hashlimit takes (packets).
pub const MAX_BURST: u32 = 1_000_000;
/// Hash buckets of the per-source table.
pub const HTABLE_SIZE: u32 = 16_384;
/// Most sources tracked at once (about 100 bytes of kernel memory each).
pub const HTABLE_MAX: u32 = 131_072;
/// Milliseconds after which an idle source's entry is forgotten.
pub const EXPIRE_MS: u32 = 2_000;

/// `--queue-rate`: off, or packets per second and burst per source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRate {
    /// No per-source limit: a flooding host can fill the queue.
    Off,
    /// Each source address gets `pps` packets per second into the queue,
    /// with bursts of up to `burst`; the excess is dropped in the kernel.
    PerSource {
        /// Sustained packets per second per source.
        pps: u32,
        /// Packets a source may send at once after being quiet.
        burst: u32,
    },
}

impl QueueRate {
    /// The default: 10,000 packets per second with bursts of 2,000 per
    /// source. Far above what a host's new connections put in the queue
    /// (settled connections never reach it), well below what one worker
    /// judges, and the burst fits the default `--queue-maxlen` (4096).
    pub const DEFAULT: QueueRate = QueueRate::PerSource {
        pps: 10_000,
        burst: 2_000,
    };

    /// The burst used when only PPS is given: a fifth of a second of
    /// traffic, at least 5 (xt_hashlimit's own default).
    pub fn default_burst(pps: u32) -> u32 {
        (pps / 5).max(5)
    }

    /// The burst, when limiting.
    pub fn burst(self) -> Option<u32> {
        match self {
            QueueRate::Off => None,
            QueueRate::PerSource { burst, .. } => Some(burst),
        }
    }
}

impl Default for QueueRate {
    fn default() -> Self {
        QueueRate::DEFAULT
    }
}

impl fmt::Display for QueueRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueRate::Off => f.write_str("off"),
            QueueRate::PerSource { pps, burst } => write!(f, "{pps}/{burst}"),
        }
    }
}

/// Why a `--queue-rate` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueRateError {
    /// Not `off`, `PPS` or `PPS/BURST` in decimal digits.
    #[error("{0:?} is not PPS[/BURST] (packets per second, optional burst) or off")]
    Syntax(String),
    /// A number out of the range the kernel takes.
    #[error("{what} {value} is out of range: 1 to {max} (use off for no limit)")]
    Range {
        /// "rate" or "burst".
        what: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted.
        max: u32,
    },
}

fn number(text: &str, what: &'static str, max: u32, whole: &str) -> Result<u32, QueueRateError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueueRateError::Syntax(whole.to_string()));
    }
    // Digits only: a parse failure can only be a number too large.
    let value = text.parse::<u64>().unwrap_or(u64::MAX);
    match u32::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(QueueRateError::Range { what, value, max }),
    }
}

impl FromStr for QueueRate {
    type Err = QueueRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(QueueRate::Off);
        }
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let pps = number(rate, "rate", MAX_PPS, s)?;
        let burst = match burst {
            Some(b) => number(b, "burst", MAX_BURST, s)?,
            None => QueueRate::default_burst(pps),
        };
        Ok(QueueRate::PerSource { pps, burst })
    }
}

/// The hashlimit table name of a family: `appwall4` / `appwall6` (one
/// appwall per network namespace, whose chains have fixed names too;
/// hashlimit tables are per namespace).
pub fn table_name(v6: bool) -> &'static str {
    if v6 { "appwall6" } else { "appwall4" }
}

/// The `APPWALL_INSPECT` rules (arguments after `-A CHAIN`) of the IPv4
/// (or, `v6`, IPv6) rules that drop a source's packets above its rate:
/// one for TCP, one for UDP (the protocols the queue takes; anything else
/// returns from the chain unqueued and never counts), sharing one table
/// and so one bucket per source. Empty when the limit is off.
pub fn rules(v6: bool, rate: QueueRate) -> Vec<String> {
    let QueueRate::PerSource { pps, burst } = rate else {
        return Vec::new();
    };
    ["tcp", "udp"]
        .into_iter()
        .map(|proto| {
            format!(
                "-p {proto} -m hashlimit --hashlimit-above {pps}/sec --hashlimit-burst {burst} \
                 --hashlimit-mode srcip --hashlimit-name {} --hashlimit-htable-size {HTABLE_SIZE} \
                 --hashlimit-htable-max {HTABLE_MAX} --hashlimit-htable-expire {EXPIRE_MS} \
                 -m comment --comment \"{COMMENT}\" -j DROP",
                table_name(v6)
            )
        })
        .collect()
}

/// Where the kernel lists the sources of a family's table (one line per
/// source: seconds to expiry, `SRC:0->DST:0`, credit, credit cap, cost).
pub fn proc_path(v6: bool) -> &'static str {
    if v6 {
        "/proc/net/ip6t_hashlimit/appwall6"
    } else {
        "/proc/net/ipt_hashlimit/appwall4"
    }
}

/// Sources over their rate right now (credit below the cost of one
/// packet: their next packet is dropped), from a [`proc_path`] listing;
/// lines that do not parse are skipped.
pub fn sources_over(list: &str) -> Vec<std::net::IpAddr> {
    list.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let flow = w.nth(1)?;
            let (credit, _cap, cost) = (w.next()?, w.next()?, w.next()?);
            let (credit, cost) = (credit.parse::<u64>().ok()?, cost.parse::<u64>().ok()?);
            if credit >= cost {
                return None;
            }
            let (src, _) = flow.split_once("->")?;
            src.rsplit_once(':')?.0.parse().ok()
        })
        .collect()
}

/// Packets the limiting rule dropped, from `iptables -nvxL APPWALL_INSPECT`
/// output (0 when it has no such rule).
pub fn limited_packets(list: &str) -> u64 {
    let tag = format!("/* {COMMENT} */");
    list.lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print_back() {
        let p = |s: &str| s.parse::<QueueRate>();
        assert_eq!(p("off"), Ok(QueueRate::Off));
        assert_eq!(p("OFF"), Ok(QueueRate::Off));
        assert_eq!(p("500/50"), Ok(QueueRate::PerSource { pps: 500, burst: 50 }));
        assert_eq!(p("500"), Ok(QueueRate::PerSource { pps: 500, burst: 100 }));
        assert_eq!(p("3"), Ok(QueueRate::PerSource { pps: 3, burst: 5 }));
        assert_eq!(
            p("1000000/1000000").map(|r| r.to_string()).as_deref(),
            Ok("1000000/1000000")
        );
        assert_eq!(QueueRate::DEFAULT.to_string().parse(), Ok(QueueRate::DEFAULT));
        assert_eq!(QueueRate::default(), QueueRate::DEFAULT);
    }

    #[test]
    fn bad_values_are_typed_errors_not_panics() {
        for bad in [
            "", "/", "abc", "10/", "/10", "-5", "+5", "1e3", "10/2/3", "10 /2", "１０",
        ] {
            assert!(
                matches!(bad.parse::<QueueRate>(), Err(QueueRateError::Syntax(_))),
                "{bad:?}"
            );
        }
        for bad in ["0", "1000001", "99999999999999999999999", "10/0", "10/1000001"] {
            let e = bad.parse::<QueueRate>().unwrap_err();
            assert!(matches!(e, QueueRateError::Range { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("use off"), "{e}");
        }
    }

    #[test]
    fn sources_over_their_rate_are_read_from_the_kernel_listing() {
        // As the kernel prints them (mode srcip: destination and ports 0).
        let list = "0 192.0.2.10:0->0.0.0.0:0 549755813888 54975581200000 27487790600000\n\
                    1 192.0.2.11:0->0.0.0.0:0 54975581200000 54975581200000 27487790600000\n\
                    0 2001:0db8:0001:0000:0000:0000:0000:0010:0->0000:0000:0000:0000:0000:0000:0000:0000:0 0 10 5\n\
                    garbage\n0 nonsense:0->x 1 2 3\n";
        let over = sources_over(list);
        assert_eq!(
            over,
            vec![
                "192.0.2.10".parse::<std::net::IpAddr>().unwrap(),
                "2001:db8:1::10".parse().unwrap()
            ]
        );
        assert!(sources_over("").is_empty());
        assert!(proc_path(true).ends_with("appwall6") && proc_path(false).ends_with("appwall4"));
    }

    #[test]
    fn the_rule_is_per_source_per_family_and_found_by_its_comment() {
        assert!(rules(false, QueueRate::Off).is_empty());
        let r = QueueRate::PerSource { pps: 800, burst: 64 };
        let (v4, v6) = (rules(false, r), rules(true, r));
        assert_eq!((v4.len(), v6.len()), (2, 2));
        assert!(v4[0].starts_with("-p tcp ") && v4[1].starts_with("-p udp "));
        for (text, name) in v4
            .iter()
            .map(|t| (t, "appwall4"))
            .chain(v6.iter().map(|t| (t, "appwall6")))
        {
            assert!(
                text.contains("--hashlimit-above 800/sec --hashlimit-burst 64 "),
                "{text}"
            );
            assert!(text.contains("--hashlimit-mode srcip "), "{text}");
            assert!(text.contains(&format!("--hashlimit-name {name} ")), "{text}");
            assert!(text.ends_with("-j DROP"), "{text}");
            assert!(!text.contains("NFQUEUE"), "the overflow sum must not count it");
        }
        let list = "Chain APPWALL_INSPECT (2 references)\n    pkts      bytes target     prot opt in     out     source               destination\n\
       7      364 RETURN     6    --  *      *       0.0.0.0/0            0.0.0.0/0            u32 \"0x0>>0x18=0x45\"\n\
   51234  2869104 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0            limit: above 800/sec burst 64 mode srcip htable-size 16384 htable-max 131072 htable-expire 2000 /* appwall queue-rate */\n\
      66     1848 DROP       17   --  *      *       0.0.0.0/0            0.0.0.0/0            limit: above 800/sec burst 64 mode srcip htable-size 16384 htable-max 131072 htable-expire 2000 /* appwall queue-rate */\n\
    1200    99000 NFQUEUE    6    --  *      *       0.0.0.0/0            0.0.0.0/0            NFQUEUE num 0 bypass\n";
        assert_eq!(limited_packets(list), 51_300);
        assert_eq!(limited_packets(""), 0);
    }
}
