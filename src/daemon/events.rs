//! Events: one record per blocked connection, sent by a worker over a
//! bounded channel and written by the event thread as a JSON line (and a
//! log line).
//!
//! Guarantees: an event is written once per blocked connection, never per
//! packet; a full channel drops the event and counts it (a worker never
//! waits on the event log); a failing event file is reported once and
//! events go on to the log; on SIGHUP and SIGUSR1 the file is reopened by
//! name (log rotation moves it away, then signals).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::RecvTimeoutError;

use serde::Serialize;

use crate::daemon::eve::{self, Alert, FlowFields};
use crate::daemon::outfile::{self, OutputError};
use crate::engine::{Engine, MatchedRequest, Reason};
use crate::log::{Level, log};
use crate::packet::Proto;

/// A blocked connection, sent from a worker to the event writer.
#[derive(Debug, Clone)]
pub struct BlockEvent {
    /// When it was blocked.
    pub time: SystemTime,
    /// Queue that judged it.
    pub queue: u16,
    /// Connection id (the queue in the top 16 bits, so ids of queues differ).
    pub flow_id: u64,
    /// TCP or UDP.
    pub proto: Proto,
    /// Opener address.
    pub src: IpAddr,
    /// Opener port.
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// Why.
    pub reason: Reason,
    /// The engine (policy) that decided, to name app and signature.
    pub engine: Arc<Engine>,
    /// The host and URL a message rule judged (`reason` is a rule), boxed:
    /// only rule blocks carry one.
    pub request: Option<Box<MatchedRequest>>,
}

/// One line of the event log (docs/schemas/event.json): eve.json's
/// shape, `event_type` "alert".
#[derive(Debug, Serialize)]
pub struct EventRecord {
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Always "alert".
    pub event_type: &'static str,
    /// Queue number.
    pub queue: u16,
    /// The connection.
    #[serde(flatten)]
    pub flow: FlowFields,
    /// What was decided and why.
    pub alert: Alert,
}

impl BlockEvent {
    /// The record of this event.
    pub fn record(&self) -> EventRecord {
        let alert = Alert::new(&self.engine, &self.reason, true).with_request(self.request.as_deref());
        EventRecord {
            timestamp: eve::timestamp(self.time),
            event_type: "alert",
            queue: self.queue,
            flow: FlowFields::new(
                self.flow_id,
                self.proto,
                (self.src, self.sport),
                (self.dst, self.dport),
                alert.app.as_deref(),
            ),
            alert,
        }
    }

    /// The JSON line of this event.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.record()).unwrap_or_default()
    }
}

/// Where event lines go.
pub type EventOut = Box<dyn Write + Send>;

/// Opens the event log: "-" is standard output; a file is opened for
/// appending through [`outfile::open_append`] (no symbolic link, created
/// 0640, a safe directory), so start-up fails before anything is installed.
pub fn open_events(path: &Path) -> Result<EventOut, OutputError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    Ok(Box::new(outfile::open_append(path)?))
}

/// Writes events from `rx` until every sender is gone: a log line each, and
/// a JSON line to `out` when given. When `reopen` is set (SIGHUP, SIGUSR1:
/// log rotation moved the file away), the file at `path` is opened anew
/// (created 0640 when missing) and the old one closed; if that fails, lines
/// go on to the old file.
pub fn event_writer(
    rx: crossbeam_channel::Receiver<BlockEvent>,
    mut out: Option<EventOut>,
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
) {
    loop {
        if reopen.swap(false, Ordering::Relaxed)
            && let Some(p) = path.as_deref().filter(|p| p.as_os_str() != "-")
        {
            match open_events(p) {
                Ok(w) => {
                    out = Some(w);
                    log(Level::Info, format_args!("event log {} reopened", p.display()));
                }
                Err(e) => log(
                    Level::Error,
                    format_args!("event log not reopened: {e}; lines go on to the old file"),
                ),
            }
        }
        let ev = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let request = ev
            .request
            .as_deref()
            .map_or(String::new(), |m| match (&m.url, &m.host) {
                (Some(u), _) => format!(" (url {})", u.text),
                (None, Some(h)) => format!(" (host {})", h.text),
                (None, None) => String::new(),
            });
        log(
            Level::Info,
            format_args!(
                "blocked {} {}:{} -> {}:{} app {}: {}{}",
                ev.proto,
                ev.src,
                ev.sport,
                ev.dst,
                ev.dport,
                ev.engine.reason_app(&ev.reason).unwrap_or("-"),
                ev.engine.reason_text(&ev.reason),
                request.escape_debug()
            ),
        );
        if let Some(w) = out.as_mut() {
            let line = ev.to_json();
            if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
                log(
                    Level::Error,
                    format_args!("event log write failed; events go to the log only"),
                );
                out = None;
            }
        }
    }
}
