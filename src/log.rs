//! Log lines on stderr, the one place every part of appwall writes them.
//!
//! Lines carry a syslog priority prefix (`<3>`) when stderr is the journal
//! (`JOURNAL_STREAM` is set), so journald files them at the right level; on a
//! terminal they read `appwall: info: ...`. Writing never fails the caller.

use std::io::{self, Write};

/// Severity of a log line (syslog numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 3,
    /// Something is off but appwall goes on.
    Warning = 4,
    /// Normal operation.
    Info = 6,
}

/// Writes one log line to stderr (journald-friendly, see the module doc).
pub fn log(level: Level, msg: std::fmt::Arguments<'_>) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut err = io::stderr().lock();
    let _ = if journal {
        writeln!(err, "<{}>{msg}", level as u8)
    } else {
        let name = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        };
        writeln!(err, "appwall: {name}: {msg}")
    };
}
