//! One vocabulary for everything appwall writes about connections: the
//! lines of `scan --json`, the event log of `appwall run` and the status
//! file. The field names follow Suricata's eve.json (`timestamp`,
//! `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`,
//! `app_proto`, `flow_id`, `community_id`, an `alert` object), so the tools
//! that read eve.json (and correlate by Community ID with Zeek or Suricata)
//! read appwall's lines too. docs/schemas/ holds a JSON Schema per output.
//!
//! Guarantees: timestamps are RFC 3339 in UTC with microseconds; the
//! Community ID is version 1 of the public specification
//! (corelight/community-id-spec), checked against its published vectors;
//! the alert object names the same reason kinds ([`Reason::KINDS`]) the
//! counters use.

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::engine::{Engine, MatchedRequest, Reason};
use crate::packet::Proto;

/// RFC 3339 text of `t` in UTC with microseconds
/// (`2026-11-27T15:04:05.123456Z`); a time before 1970 prints as the epoch.
pub fn timestamp(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t.max(SystemTime::UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

/// A capture timestamp (nanoseconds since the epoch) as RFC 3339 text.
pub fn timestamp_ns(ns: u64) -> String {
    timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

/// The protocol name eve.json uses ("TCP", "UDP").
pub fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Community ID v1 of a TCP/UDP connection with `seed`: the same text for
/// both directions. Endpoints of different families (not a real flow)
/// are hashed in the order given.
pub fn community_id_seeded(seed: u16, proto: Proto, a: (IpAddr, u16), b: (IpAddr, u16)) -> String {
    let (ab, bb) = (ip_bytes(&a.0), ip_bytes(&b.0));
    // The smaller endpoint (address, then port) comes first.
    let ((sip, sp), (dip, dp)) = if (ab.as_slice(), a.1) <= (bb.as_slice(), b.1) {
        ((ab, a.1), (bb, b.1))
    } else {
        ((bb, b.1), (ab, a.1))
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&sip);
    h.update(&dip);
    h.update([proto_number(proto), 0]);
    h.update(sp.to_be_bytes());
    h.update(dp.to_be_bytes());
    let digest = h.finalize();
    format!("1:{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Community ID v1 with the default seed 0.
pub fn community_id(proto: Proto, a: (IpAddr, u16), b: (IpAddr, u16)) -> String {
    community_id_seeded(0, proto, a, b)
}

/// What was decided for a connection and why: the `alert` object of
/// events and scan lines.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// "blocked" or "allowed".
    pub action: &'static str,
    /// App the reason names, if any.
    pub app: Option<String>,
    /// Id of the signature or message rule that matched (`msnp-ver`).
    pub signature_id: Option<String>,
    /// The same, qualified by its app (`msn/msnp-ver`).
    pub signature: Option<String>,
    /// The reason in words (`signature msn/msnp-ver in stream-start`).
    pub reason: String,
    /// Reason kind, one of [`Reason::KINDS`] ("port", "signature", "rule",
    /// "quic", "evasion", "clean", ...).
    pub category: &'static str,
    /// For a message rule (`category` "rule"): the normalised host of the
    /// request it judged (HTTP host, TLS or QUIC server name, tunnel
    /// destination); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For a message rule on an HTTP request: the normalised URL it judged
    /// (`http://host/path?query`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Present (true) when `host` or `url` was cut to
    /// [`crate::engine::verdict::MAX_MATCHED`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

impl Alert {
    /// The alert object for `reason` as judged by `engine`.
    pub fn new(engine: &Engine, reason: &Reason, blocked: bool) -> Alert {
        let app = engine.reason_app(reason).map(str::to_string);
        let id = engine.reason_id(reason).map(str::to_string);
        Alert {
            action: if blocked { "blocked" } else { "allowed" },
            signature: id
                .as_ref()
                .map(|i| format!("{}/{i}", app.as_deref().unwrap_or("-"))),
            signature_id: id,
            app,
            reason: engine.reason_text(reason),
            category: reason.kind(),
            host: None,
            url: None,
            truncated: None,
        }
    }

    /// Adds the host and URL a message rule judged ([`MatchedRequest`]).
    pub fn with_request(mut self, request: Option<&MatchedRequest>) -> Alert {
        if let Some(m) = request {
            self.host = m.host.as_ref().map(|h| h.text.clone());
            self.url = m.url.as_ref().map(|u| u.text.clone());
            let cut = m.host.iter().chain(&m.url).any(|t| t.cut);
            self.truncated = cut.then_some(true);
        }
        self
    }
}

/// The connection fields every line shares.
#[derive(Debug, Clone, Serialize)]
pub struct FlowFields {
    /// Connection id, unique within one run or capture.
    pub flow_id: u64,
    /// Opener address.
    pub src_ip: String,
    /// Opener port.
    pub src_port: u16,
    /// Responder address.
    pub dest_ip: String,
    /// Responder port.
    pub dest_port: u16,
    /// "TCP" or "UDP".
    pub proto: &'static str,
    /// The app blocked in it, or null.
    pub app_proto: Option<String>,
    /// Community ID v1 (seed 0).
    pub community_id: String,
}

impl FlowFields {
    /// The fields of connection `flow_id` opened from `src` to `dst`.
    pub fn new(
        flow_id: u64,
        proto: Proto,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        app: Option<&str>,
    ) -> FlowFields {
        FlowFields {
            flow_id,
            src_ip: src.0.to_string(),
            src_port: src.1,
            dest_ip: dst.0.to_string(),
            dest_port: dst.1,
            proto: proto_name(proto),
            app_proto: app.map(str::to_string),
            community_id: community_id(proto, src, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str, p: u16) -> (IpAddr, u16) {
        (s.parse().unwrap(), p)
    }

    #[test]
    fn community_id_matches_the_published_vectors() {
        // From the specification's baseline (seed 0 and seed 1).
        let table = [
            (0, Proto::Tcp, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
            (0, Proto::Udp, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
            (1, Proto::Tcp, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
        ];
        for (seed, proto, want) in table {
            let (a, b) = (ep("1.2.3.4", 1122), ep("5.6.7.8", 3344));
            assert_eq!(community_id_seeded(seed, proto, a, b), want);
            assert_eq!(community_id_seeded(seed, proto, b, a), want, "direction-free");
        }
        // Same addresses: ports decide the order.
        let (a, b) = (ep("2001:db8::1", 80), ep("2001:db8::1", 40000));
        assert_eq!(community_id(Proto::Tcp, a, b), community_id(Proto::Tcp, b, a));
        assert_ne!(community_id(Proto::Tcp, a, b), community_id(Proto::Udp, a, b));
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(timestamp_ns(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day) 12:34:56.789012345
        let ns = 951_827_696_789_012_345;
        assert_eq!(timestamp_ns(ns), "2000-02-29T12:34:56.789012Z");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
