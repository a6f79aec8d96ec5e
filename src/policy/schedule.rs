//! Schedules: weekly time windows during which a rule (or a hosts line's
//! app) is in force, such as Squid's `acl work time MTWHF 08:00-18:00`.
//!
//! A schedule is text: one or more windows separated by `,`, each a set of
//! days and a time range, then optionally a fixed UTC offset:
//! `Mon-Fri 08:00-18:00`, `Sat,Sun 10:00-12:00, Mon 00:00-24:00 +01:00`,
//! or Squid's day letters `MTWHF 08:00-18:00` (S M T W H F A = Sunday to
//! Saturday). Days are `Sun`..`Sat` (any case), ranges `Mon-Fri` (wrapping
//! `Fri-Mon` allowed), lists `Mon,Wed`; no days means every day. A range
//! `h1:m1-h2:m2` holds from `h1:m1` included to `h2:m2` excluded, at the
//! granularity of a second, and may end at `24:00`; it must not be empty or
//! run backwards (Squid refuses that too; write two windows).
//!
//! Time zone: appwall reads no zone database. Times are in UTC unless the
//! schedule ends with an offset (`+02:00`, `-05:00`, `UTC`); Squid uses the
//! proxy's local time, so an imported `time` ACL is written with the offset
//! the import was told (see `appwall import-squid --utc-offset`).
//!
//! Guarantee: evaluation is a pure function of the schedule and a
//! [`SystemTime`]; nothing here reads a clock (see [`Clock`] for the one
//! place the daemon does).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a week.
const WEEK: u64 = 7 * 86_400;
/// Most windows one schedule may have.
pub const MAX_WINDOWS: usize = 64;

/// One window: days of the week (bit 0 = Sunday) and a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Bit `d` set: the window applies on day `d` (0 = Sunday .. 6 = Saturday).
    pub days: u8,
    /// Start, seconds after midnight (included).
    pub start: u32,
    /// End, seconds after midnight (excluded; at most 86 400).
    pub end: u32,
}

/// A parsed schedule: windows and the UTC offset they are written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// The text it was parsed from (for messages and rule files).
    pub text: String,
    /// Windows; the schedule is open when any is.
    pub windows: Vec<Window>,
    /// Offset of the windows' clock from UTC, in seconds (east positive).
    pub offset: i32,
}

/// Day names, Sunday first.
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// Squid's day letters, Sunday first.
const SQUID_DAYS: [char; 7] = ['S', 'M', 'T', 'W', 'H', 'F', 'A'];

fn day(name: &str) -> Option<u8> {
    let l = name.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| l == *d)
        .or_else(|| FULL_DAYS.iter().position(|d| l == *d))
        .and_then(|i| u8::try_from(i).ok())
}

/// Full English day names (`monday`) are accepted too.
const FULL_DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Parses `days` (`Mon-Fri`, `Mon,Wed`, `MTWHF`) into a day mask.
fn parse_days(s: &str) -> Result<u8, String> {
    if !s.is_empty() && s.chars().all(|c| SQUID_DAYS.contains(&c)) {
        let mut mask = 0u8;
        for c in s.chars() {
            let i = SQUID_DAYS.iter().position(|d| *d == c).unwrap_or(0);
            mask |= 1 << i;
        }
        return Ok(mask);
    }
    let mut mask = 0u8;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    day(a.trim()).ok_or_else(|| bad_day(a))?,
                    day(b.trim()).ok_or_else(|| bad_day(b))?,
                );
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(part).ok_or_else(|| bad_day(part))?,
        }
    }
    if mask == 0 {
        return Err(format!("no days in {s:?}"));
    }
    Ok(mask)
}

fn bad_day(s: &str) -> String {
    format!(
        "{:?} is not a day (Sun..Sat, or Squid's letters S M T W H F A)",
        s.trim()
    )
}

/// `hh:mm` (or `hh:mm:ss`) as seconds after midnight; `24:00` allowed.
fn parse_clock(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day (hh:mm)");
    let mut parts = s.split(':');
    let h: u32 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let m: u32 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let sec: u32 = match parts.next() {
        Some(x) => x.parse().map_err(|_| bad())?,
        None => 0,
    };
    if parts.next().is_some() || m > 59 || sec > 59 || h > 24 || (h == 24 && (m, sec) != (0, 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + sec)
}

/// `+hh:mm`, `-hh:mm`, `+hh`, `UTC`/`Z` as seconds east of UTC.
fn parse_offset(s: &str) -> Option<Result<i32, String>> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Some(Ok(0));
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let bad = || format!("{s:?} is not a UTC offset (+hh:mm)");
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let parsed = h
        .parse::<i32>()
        .ok()
        .zip(m.parse::<i32>().ok())
        .filter(|(h, m)| *h <= 14 && *m < 60)
        .map(|(h, m)| sign * (h * 3600 + m * 60))
        .ok_or_else(bad);
    Some(parsed)
}

impl Schedule {
    /// Parses a schedule (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty schedule".into());
        }
        let mut words: Vec<&str> = t.split_whitespace().collect();
        let mut offset = 0;
        if let Some(last) = words.last()
            && let Some(o) = parse_offset(last)
        {
            offset = o?;
            words.pop();
        }
        // Windows: split where a word ends with ',' and the next word starts
        // a new window, i.e. each window is `[days] range`.
        let joined = words.join(" ");
        let mut windows = Vec::new();
        let mut pending_days: Option<String> = None;
        for token in joined
            .split(|c: char| c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let token = token.trim_end_matches(',');
            if token.is_empty() {
                continue;
            }
            let is_range = token.split_once('-').is_some_and(|(a, _)| {
                a.contains(':') || a.bytes().all(|b| b.is_ascii_digit()) && !a.is_empty()
            });
            if is_range {
                let (a, b) = token.split_once('-').unwrap_or((token, ""));
                let (start, end) = (parse_clock(a)?, parse_clock(b)?);
                if start >= end {
                    return Err(format!(
                        "time range {token:?} is empty or runs backwards (write two windows to cross midnight)"
                    ));
                }
                let days = match pending_days.take() {
                    Some(d) => parse_days(&d)?,
                    None => 0x7f,
                };
                windows.push(Window { days, start, end });
                if windows.len() > MAX_WINDOWS {
                    return Err(format!("more than {MAX_WINDOWS} windows"));
                }
            } else {
                // Day words may be spread over several tokens (`Mon, Wed`).
                let d = pending_days.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push(',');
                }
                d.push_str(token);
            }
        }
        if let Some(d) = pending_days {
            return Err(format!("days {d:?} without a time range (hh:mm-hh:mm)"));
        }
        if windows.is_empty() {
            return Err("no time range (hh:mm-hh:mm)".into());
        }
        Ok(Schedule {
            text: t.to_string(),
            windows,
            offset,
        })
    }

    /// (day of week, seconds after midnight) of `t` in this schedule's zone.
    fn local(&self, t: SystemTime) -> (u8, u32) {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let local = i128::from(secs) + i128::from(self.offset);
        // 1970-01-01 was a Thursday (day 4).
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        let dow = (days + 4).rem_euclid(7);
        (u8::try_from(dow).unwrap_or(0), u32::try_from(sod).unwrap_or(0))
    }

    /// True when the schedule is open at `t`.
    pub fn is_open(&self, t: SystemTime) -> bool {
        let (dow, sod) = self.local(t);
        self.windows
            .iter()
            .any(|w| w.days & (1 << dow) != 0 && w.start <= sod && sod < w.end)
    }

    /// Time from `t` to the next moment the schedule opens or closes (at
    /// most a week; `None` when it never changes, e.g. always open).
    pub fn next_change(&self, t: SystemTime) -> Option<Duration> {
        let (dow, sod) = self.local(t);
        let now = u64::from(dow) * 86_400 + u64::from(sod);
        // Every window edge, as seconds ahead of `now` (a full week for an
        // edge right now), in order.
        let mut edges: Vec<u64> = Vec::new();
        for w in &self.windows {
            for d in (0..7u64).filter(|d| w.days & (1 << d) != 0) {
                for edge in [u64::from(w.start), u64::from(w.end)] {
                    let at = (d * 86_400 + edge) % WEEK;
                    let ahead = (at + WEEK - now) % WEEK;
                    edges.push(if ahead == 0 { WEEK } else { ahead });
                }
            }
        }
        edges.sort_unstable();
        edges.dedup();
        let open = self.is_open(t);
        let sub = Duration::from_nanos(u64::from(
            t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
        ));
        // Edges of touching windows do not change the state: skip them.
        edges
            .into_iter()
            .find(|a| self.is_open(t + Duration::from_secs(*a) - sub) != open)
            .map(|a| Duration::from_secs(a) - sub)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where the daemon reads the time: the system clock, or for tests only
/// (debug builds) a fake one (`APPWALL_FAKE_NOW=<unix seconds>`) that
/// starts at the given moment and runs at the real clock's pace.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Added to the system clock (zero for the real clock).
    shift: i128,
}

/// The test-only environment variable of [`Clock::from_env`].
pub const FAKE_NOW_ENV: &str = "APPWALL_FAKE_NOW";

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { shift: 0 }
    }

    /// The system clock, unless [`FAKE_NOW_ENV`] holds unix seconds (tests
    /// of window changes that cannot wait for a real minute to turn). The
    /// variable is honoured by debug builds only (the test binaries):
    /// release builds always use the system clock.
    pub fn from_env() -> Clock {
        if !cfg!(debug_assertions) {
            return Clock::system();
        }
        let Some(fake) = std::env::var(FAKE_NOW_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            return Clock::system();
        };
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // Millisecond precision is plenty for minute-wide windows.
        // Saturating float-to-integer conversion (Rust's `as` on floats).
        #[allow(clippy::cast_possible_truncation)]
        let fake_ms = (fake * 1000.0) as i128;
        Clock {
            shift: fake_ms - i128::try_from(real).unwrap_or(0),
        }
    }

    /// True when the clock is shifted (a test clock).
    pub fn is_fake(&self) -> bool {
        self.shift != 0
    }

    /// The current time by this clock.
    pub fn now(&self) -> SystemTime {
        let real = SystemTime::now();
        let ms = u64::try_from(self.shift.unsigned_abs()).unwrap_or(u64::MAX);
        if self.shift >= 0 {
            real + Duration::from_millis(ms)
        } else {
            real.checked_sub(Duration::from_millis(ms)).unwrap_or(UNIX_EPOCH)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 was a Monday; 00:00 UTC.
    const MONDAY: u64 = 1_795_392_000;

    fn at(day: u64, h: u64, m: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(MONDAY + day * 86_400 + h * 3600 + m * 60)
    }

    #[test]
    fn the_reference_monday_is_a_monday() {
        let s = Schedule::parse("Mon 00:00-24:00").unwrap();
        assert!(s.is_open(at(0, 12, 0)));
        assert!(!s.is_open(at(1, 12, 0)));
    }

    #[test]
    fn syntax_table() {
        // (schedule, (day from Monday, h, m), open?)
        let table: &[(&str, (u64, u64, u64), bool)] = &[
            ("Mon-Fri 08:00-18:00", (0, 8, 0), true),
            ("Mon-Fri 08:00-18:00", (0, 7, 59), false),
            ("Mon-Fri 08:00-18:00", (0, 18, 0), false),
            ("Mon-Fri 08:00-18:00", (4, 17, 59), true),
            ("Mon-Fri 08:00-18:00", (5, 12, 0), false),
            ("MTWHF 08:00-18:00", (3, 9, 0), true),
            ("MTWHF 08:00-18:00", (6, 9, 0), false),
            ("SA 10:00-12:00", (5, 11, 0), true),
            ("SA 10:00-12:00", (6, 11, 0), true),
            ("SA 10:00-12:00", (0, 11, 0), false),
            ("Fri-Mon 00:00-24:00", (0, 23, 59), true),
            ("Fri-Mon 00:00-24:00", (1, 0, 0), false),
            ("Mon,Wed 12:00-13:00, Sat 00:00-01:00", (2, 12, 30), true),
            ("Mon,Wed 12:00-13:00, Sat 00:00-01:00", (5, 0, 30), true),
            ("Mon,Wed 12:00-13:00, Sat 00:00-01:00", (1, 12, 30), false),
            ("12:00-13:00", (6, 12, 0), true),
            ("Mon 08:00-09:00 +02:00", (0, 6, 30), true),
            ("Mon 08:00-09:00 +02:00", (0, 8, 30), false),
            ("Mon 00:00-01:00 -01:00", (0, 1, 30), true),
            ("Sun 23:00-24:00 +02:00", (6, 21, 30), true),
            ("monday 08:00-09:00 UTC", (0, 8, 30), true),
            ("MON-fri 08:00-09:00", (4, 8, 30), true),
        ];
        for (text, (d, h, m), want) in table {
            let s = Schedule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.is_open(at(*d, *h, *m)), *want, "{text} at day {d} {h}:{m}");
        }
        for bad in [
            "",
            "Mon",
            "Mon 18:00-08:00",
            "Mon 08:00-08:00",
            "Xyz 08:00-09:00",
            "Mon 25:00-26:00",
            "Mon 08:60-09:00",
            "Mon 08:00-24:01",
            "Mon 08:00-09:00 +15:00",
            "08:00-09:00 Mon",
            "Möndäy 08:00-09:00",
            "éé-ü 08:00-09:00",
            "Mon 08:00-09:00 +1é",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn next_change_finds_the_next_edge_that_changes_the_state() {
        let s = Schedule::parse("Mon-Fri 08:00-18:00").unwrap();
        assert_eq!(s.next_change(at(0, 7, 59)), Some(Duration::from_secs(60)));
        assert_eq!(s.next_change(at(0, 8, 0)), Some(Duration::from_secs(10 * 3600)));
        // Friday evening to Monday morning.
        assert_eq!(
            s.next_change(at(4, 18, 0)),
            Some(Duration::from_secs(2 * 86_400 + 14 * 3600))
        );
        // Touching windows: 08-12 and 12-18 change state only at 18:00.
        let t = Schedule::parse("Mon 08:00-12:00, Mon 12:00-18:00").unwrap();
        assert_eq!(t.next_change(at(0, 9, 0)), Some(Duration::from_secs(9 * 3600)));
        let always = Schedule::parse("00:00-24:00").unwrap();
        assert_eq!(always.next_change(at(0, 9, 0)), None);
        // Sub-second: the change is at the edge, not a second later.
        let t = at(0, 7, 59) + Duration::from_millis(250);
        assert_eq!(s.next_change(t), Some(Duration::from_millis(59_750)));
    }

    proptest::proptest! {
        /// Any text: parsed or refused, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,60}") {
            let _ = Schedule::parse(&text);
        }

        /// `next_change` is exact: the state is the same just before it and
        /// different at it.
        #[test]
        fn next_change_is_where_the_state_flips(
            days in 1u8..128,
            start in 0u32..1439,
            len in 1u32..600,
            offset in -12i32..14,
            t in 0u64..(2 * WEEK),
        ) {
            let end = (start + len).min(1440);
            let text = format!(
                "{} {:02}:{:02}-{:02}:{:02} {:+03}:00",
                SQUID_DAYS.iter().enumerate().filter(|(i, _)| days & (1 << i) != 0).map(|(_, c)| *c).collect::<String>(),
                start / 60, start % 60, end / 60, end % 60, offset
            );
            let s = Schedule::parse(&text).unwrap();
            let now = UNIX_EPOCH + Duration::from_secs(1_795_392_000 + t);
            let d = s.next_change(now).unwrap();
            proptest::prop_assert!(d > Duration::ZERO && d <= Duration::from_secs(WEEK));
            proptest::prop_assert_eq!(s.is_open(now + d - Duration::from_secs(1)), s.is_open(now));
            proptest::prop_assert_ne!(s.is_open(now + d), s.is_open(now));
        }
    }

    #[test]
    fn fake_clock_runs_from_the_given_moment() {
        let c = Clock { shift: 0 };
        assert!(!c.is_fake());
        let fake = Clock {
            shift: -(i128::from(u32::MAX)) * 1000,
        };
        assert!(fake.now() < SystemTime::now());
    }
}
