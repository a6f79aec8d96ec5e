//! Byte formats of the structured fuzz inputs, with decoders (used by the
//! targets) and encoders (used by the seed generator to turn real captures
//! into inputs).
//!
//! Every decoder is total: any byte string decodes to *some* input (short
//! input simply ends the record list), so the fuzzer never wastes runs on
//! rejected inputs.

use appwall::packet::LinkType;

/// Link types in the order of the `packet_view` selector byte.
pub const LINKS: [LinkType; 5] = [
    LinkType::RawIp,
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
];

/// The link type a `packet_view` selector byte stands for.
pub fn link_of(selector: u8) -> LinkType {
    LINKS[selector as usize % LINKS.len()]
}

/// The selector byte of a link type.
pub fn link_byte(link: LinkType) -> u8 {
    LINKS.iter().position(|l| *l == link).unwrap_or(0) as u8
}

/// Server ports a setup nibble chooses from: web, chat ports (port rules
/// fire), and ports where only payload decides.
pub const PORTS: [u16; 16] = [
    80, 443, 1863, 5050, 5190, 5222, 6667, 8080, 3306, 25, 8000, 51413, 53, 4000, 1080, 8443,
];

/// The index into [`PORTS`] closest to `port` (exact when listed, else 8000).
pub fn port_index(port: u16) -> u8 {
    PORTS.iter().position(|p| *p == port).unwrap_or(10) as u8
}

/// A little cursor over fuzz bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Next little-endian u16 (zero-filled past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Next little-endian u32 (zero-filled past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
}

// ---------------------------------------------------------------- stream_engine

/// One segment (or datagram) of a `stream_engine` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sent by the server (reply direction) rather than the client.
    pub reply: bool,
    /// A UDP datagram on the same addresses and ports instead of TCP.
    pub udp: bool,
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
    /// Sequence number: relative to the direction's expected next byte, or absolute.
    pub seq: Seq,
    /// Which of 16 client ports (so several connections share one table).
    pub conn: u8,
    /// Advance the clock by 200 s before this packet (idle expiry, reuse).
    pub pause: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// How a segment's sequence number is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    /// Offset from the end of the direction's previous segment.
    Rel(i16),
    /// An absolute sequence number.
    Abs(u32),
}

/// A `stream_engine` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInput {
    /// Engine: 0 everyone, 1 all apps, 2 tight limits, 3 all apps.
    pub engine: u8,
    /// IPv6 addresses instead of IPv4.
    pub ipv6: bool,
    /// Index into [`PORTS`] of the server port.
    pub port: u8,
    /// Initial sequence numbers of client and server.
    pub isn: [u32; 2],
    /// The packets, in arrival order.
    pub segments: Vec<Segment>,
}

/// Largest payload of one record.
pub const MAX_SEGMENT: usize = 4096;

impl StreamInput {
    /// Decodes any bytes.
    pub fn decode(data: &[u8]) -> StreamInput {
        let mut r = Reader::new(data);
        let setup = r.u8();
        let isn = [r.u32(), r.u32()];
        let mut segments = Vec::new();
        while !r.is_empty() {
            let f = r.u8();
            let g = r.u8();
            let seq = if f & 0x40 != 0 {
                Seq::Abs(r.u32())
            } else {
                Seq::Rel(r.u16() as i16)
            };
            let len = r.u16() as usize % (MAX_SEGMENT + 1);
            let payload = r.take(len).to_vec();
            segments.push(Segment {
                reply: f & 0x01 != 0,
                syn: f & 0x02 != 0,
                ack: f & 0x04 != 0,
                fin: f & 0x08 != 0,
                rst: f & 0x10 != 0,
                psh: f & 0x20 != 0,
                udp: f & 0x80 != 0,
                conn: g & 0x0f,
                pause: g & 0x10 != 0,
                seq,
                payload,
            });
        }
        StreamInput {
            engine: setup & 3,
            ipv6: setup & 4 != 0,
            port: setup >> 4,
            isn,
            segments,
        }
    }

    /// Encodes (the inverse of [`StreamInput::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![(self.engine & 3) | (u8::from(self.ipv6) << 2) | (self.port << 4)];
        out.extend_from_slice(&self.isn[0].to_le_bytes());
        out.extend_from_slice(&self.isn[1].to_le_bytes());
        for s in &self.segments {
            let f = u8::from(s.reply)
                | u8::from(s.syn) << 1
                | u8::from(s.ack) << 2
                | u8::from(s.fin) << 3
                | u8::from(s.rst) << 4
                | u8::from(s.psh) << 5
                | u8::from(matches!(s.seq, Seq::Abs(_))) << 6
                | u8::from(s.udp) << 7;
            out.push(f);
            out.push((s.conn & 0x0f) | u8::from(s.pause) << 4);
            match s.seq {
                Seq::Abs(v) => out.extend_from_slice(&v.to_le_bytes()),
                Seq::Rel(v) => out.extend_from_slice(&v.to_le_bytes()),
            }
            let p = &s.payload[..s.payload.len().min(MAX_SEGMENT)];
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }
}

/// Tracks each direction's expected next sequence number the way the
/// decoder resolves [`Seq::Rel`]: the end of that direction's previous segment.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    next: std::collections::HashMap<(u8, bool), u32>,
    isn: [u32; 2],
}

impl SeqTracker {
    /// Starts at the initial sequence numbers.
    pub fn new(isn: [u32; 2]) -> SeqTracker {
        SeqTracker {
            next: Default::default(),
            isn,
        }
    }

    /// The absolute sequence number of `s`, and records where it ends.
    pub fn resolve(&mut self, s: &Segment) -> u32 {
        let next = self
            .next
            .entry((s.conn, s.reply))
            .or_insert(self.isn[usize::from(s.reply)]);
        let seq = match s.seq {
            Seq::Abs(v) => v,
            Seq::Rel(d) => next.wrapping_add(d as i32 as u32),
        };
        *next = seq
            .wrapping_add(s.payload.len() as u32)
            .wrapping_add(u32::from(s.syn))
            .wrapping_add(u32::from(s.fin));
        seq
    }

    /// The expected next sequence number of a direction (what it acknowledges).
    pub fn peek(&self, conn: u8, reply: bool) -> u32 {
        self.next
            .get(&(conn, reply))
            .copied()
            .unwrap_or(self.isn[usize::from(reply)])
    }

    /// The [`Seq`] that makes `seq` come out of [`SeqTracker::resolve`]
    /// (relative when it fits in 16 bits).
    pub fn seq_for(&self, conn: u8, reply: bool, seq: u32) -> Seq {
        let d = seq.wrapping_sub(self.peek(conn, reply)) as i32;
        match i16::try_from(d) {
            Ok(v) => Seq::Rel(v),
            Err(_) => Seq::Abs(seq),
        }
    }
}

// ----------------------------------------------------------------- stream_split

/// A `stream_split` input: one conversation and two ways to cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInput {
    /// Open with SYN, SYN/ACK (else picked up mid-stream).
    pub handshake: bool,
    /// IPv6 addresses instead of IPv4.
    pub ipv6: bool,
    /// Index into [`PORTS`] of the server port.
    pub port: u8,
    /// Initial sequence numbers of client and server.
    pub isn: [u32; 2],
    /// Segment sizes of the first cut, used in turn (0 stands for 1460).
    pub cut_a: [u8; 8],
    /// Segment sizes of the second cut.
    pub cut_b: [u8; 8],
    /// (from the server?, bytes) in order; a segment never spans two messages.
    pub messages: Vec<(bool, Vec<u8>)>,
}

impl SplitInput {
    /// Decodes any bytes.
    pub fn decode(data: &[u8]) -> SplitInput {
        let mut r = Reader::new(data);
        let setup = r.u8();
        let isn = [r.u32(), r.u32()];
        let mut cut_a = [0u8; 8];
        let mut cut_b = [0u8; 8];
        cut_a.iter_mut().for_each(|c| *c = r.u8());
        cut_b.iter_mut().for_each(|c| *c = r.u8());
        let mut messages = Vec::new();
        while !r.is_empty() {
            let h = r.u16();
            let reply = h & 0x8000 != 0;
            let bytes = r.take(usize::from(h & 0x7fff)).to_vec();
            messages.push((reply, bytes));
        }
        SplitInput {
            handshake: setup & 1 != 0,
            ipv6: setup & 2 != 0,
            port: (setup >> 2) & 0x0f,
            isn,
            cut_a,
            cut_b,
            messages,
        }
    }

    /// Encodes (the inverse of [`SplitInput::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.handshake) | u8::from(self.ipv6) << 1 | (self.port & 0x0f) << 2];
        out.extend_from_slice(&self.isn[0].to_le_bytes());
        out.extend_from_slice(&self.isn[1].to_le_bytes());
        out.extend_from_slice(&self.cut_a);
        out.extend_from_slice(&self.cut_b);
        for (reply, bytes) in &self.messages {
            let b = &bytes[..bytes.len().min(0x7fff)];
            let h = b.len() as u16 | if *reply { 0x8000 } else { 0 };
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = StreamInput {
            engine: 2,
            ipv6: true,
            port: 7,
            isn: [u32::MAX - 3, 9],
            segments: vec![Segment {
                reply: true,
                udp: false,
                syn: true,
                ack: false,
                fin: true,
                rst: false,
                psh: true,
                seq: Seq::Rel(-5),
                conn: 3,
                pause: true,
                payload: b"VER 1".to_vec(),
            }],
        };
        assert_eq!(StreamInput::decode(&s.encode()), s);
        let p = SplitInput {
            handshake: true,
            ipv6: false,
            port: 3,
            isn: [1, 2],
            cut_a: [1, 2, 3, 4, 5, 6, 7, 0],
            cut_b: [0; 8],
            messages: vec![(false, b"GET".to_vec()), (true, b"HTTP".to_vec())],
        };
        assert_eq!(SplitInput::decode(&p.encode()), p);
    }
}
