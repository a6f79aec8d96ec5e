//! Events: one record per blocked connection, sent by a worker over a
//! bounded channel and written by the event thread as a JSON line (and a
//! log line).
//!
//! Guarantees: an event is written once per blocked connection, never per
//! packet; a full channel drops the event and counts it (a worker never
//! waits on the event log); a failing event file is reported once and
//! events go on to the log.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::daemon::outfile::{self, OutputError};
use crate::daemon::stats::epoch_secs;
use crate::engine::{Engine, Reason};
use crate::log::{Level, log};
use crate::packet::Proto;

/// A blocked connection, sent from a worker to the event writer.
#[derive(Debug, Clone)]
pub struct BlockEvent {
    /// When it was blocked.
    pub time: SystemTime,
    /// Queue that judged it.
    pub queue: u16,
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
}

/// One line of the event log (the documented JSON format).
#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    /// Always "blocked".
    pub event: &'static str,
    /// Seconds since the epoch, with milliseconds.
    pub time: f64,
    /// Queue number.
    pub queue: u16,
    /// "tcp" or "udp".
    pub proto: &'static str,
    /// Opener address.
    pub src: String,
    /// Opener port.
    pub sport: u16,
    /// Responder address.
    pub dst: String,
    /// Responder port.
    pub dport: u16,
    /// App name, when the reason names one.
    pub app: Option<&'a str>,
    /// Reason kind: "port", "signature", "rule" or "evasion".
    pub kind: &'static str,
    /// Id of the signature or rule that matched, if any.
    pub signature: Option<&'a str>,
    /// The rule in words (`signature msn/gateway-dll in http-target`).
    pub rule: String,
}

impl BlockEvent {
    /// The JSON line of this event.
    pub fn to_json(&self) -> String {
        let rec = EventRecord {
            event: "blocked",
            time: epoch_secs(self.time),
            queue: self.queue,
            proto: self.proto.name(),
            src: self.src.to_string(),
            sport: self.sport,
            dst: self.dst.to_string(),
            dport: self.dport,
            app: self.engine.reason_app(&self.reason),
            kind: self.reason.kind(),
            signature: self.engine.reason_id(&self.reason),
            rule: self.engine.reason_text(&self.reason),
        };
        serde_json::to_string(&rec).unwrap_or_default()
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
/// a JSON line to `out` when given.
pub fn event_writer(rx: crossbeam_channel::Receiver<BlockEvent>, mut out: Option<EventOut>) {
    for ev in rx {
        log(
            Level::Info,
            format_args!(
                "blocked {} {}:{} -> {}:{} app {}: {}",
                ev.proto,
                ev.src,
                ev.sport,
                ev.dst,
                ev.dport,
                ev.engine.reason_app(&ev.reason).unwrap_or("-"),
                ev.engine.reason_text(&ev.reason)
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
