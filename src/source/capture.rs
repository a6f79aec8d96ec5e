//! Reading pcap and pcapng capture files for `scan` and `bench`.
//!
//! Captures come from other people's machines and are often damaged: cut
//! short mid-packet, written with a snap length of 0, or simply not captures.
//! This reader streams a file through a bounded buffer, bounds every length
//! before it is read, never panics, and on damage reports the file and how
//! many packets were read before it, so the caller can keep those.
//!
//! The container formats are parsed by the `pcap-parser` crate. It replaced
//! a reader written here once measured: on the 19 shared captures (pcap and
//! pcapng, one cut short mid-packet) both read the same frames, byte for
//! byte (same count, same total, same SHA-256), and both read pcap and
//! pcapng files with a snap length of 0, the case the own reader had been
//! written for. What stays here: the bound on a frame ([`MAX_FRAME`]),
//! timestamps in nanoseconds from each interface's resolution (the crate
//! refuses power-of-two resolutions and reads `if_tsoffset` little-endian in
//! big-endian sections: both done here), the obsolete pcapng Packet Block
//! (type 2, which the crate leaves unparsed), and errors that name the file
//! and the packets read before the damage. Measured with a scratch program
//! (not kept) that read every shared capture with both readers and
//! compared frame count, link types, timestamps and bytes (SHA-256): all
//! identical, plus pcap and pcapng files with snap length 0 made for the
//! purpose; the unit tests below cover big-endian sections, resolutions
//! and the old block, which no shared capture has.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

/// Largest frame or block accepted (a 64 KiB GSO packet plus headers fits).
pub const MAX_FRAME: usize = 256 * 1024;

/// The reader's buffer: a largest block plus room to refill around it.
const BUFFER: usize = MAX_FRAME + 64 * 1024;

/// A damaged or unreadable capture.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message} (after {packets} packets)", path.display())]
pub struct CaptureError {
    path: PathBuf,
    packets: u64,
    message: String,
}

impl CaptureError {
    /// Packets read successfully before the damage.
    pub fn packets_read(&self) -> u64 {
        self.packets
    }
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// pcap LINKTYPE_* of the frame's interface.
    pub linktype: u32,
    /// Capture timestamp in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The captured bytes (may be shorter than the packet was).
    pub data: &'a [u8],
}

/// An interface of a pcapng section: its link type and timestamp units.
#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second (10^6 unless the interface says otherwise).
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

/// Nanoseconds since the epoch of a timestamp in `units_per_sec` units.
fn to_ns(ts: u64, units_per_sec: u64, offset_secs: i64) -> u64 {
    let ups = units_per_sec.max(1);
    let secs = ts / ups;
    let frac = u128::from(ts % ups) * 1_000_000_000 / u128::from(ups);
    let secs = secs.saturating_add_signed(offset_secs);
    secs.saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(frac).unwrap_or(u64::MAX))
}

/// Streams the frames of one pcap or pcapng file.
pub struct CaptureReader {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// Legacy pcap: link type and whether timestamps are in nanoseconds.
    legacy: (u32, bool),
    ifaces: Vec<Iface>,
    /// The current pcapng section is big-endian.
    big: bool,
    buf: Vec<u8>,
    packets: u64,
}

/// What one block of the file turned out to be.
enum Step {
    Frame { linktype: u32, ts_ns: u64 },
    Other,
}

impl CaptureReader {
    /// Opens a capture file and reads its header.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let f = File::open(path).map_err(|e| CaptureError {
            path: path.to_path_buf(),
            packets: 0,
            message: format!("cannot open: {e}"),
        })?;
        CaptureReader::new(path, Box::new(BufReader::with_capacity(1 << 16, f)))
    }

    /// Reads a capture from any byte source; `path` names it in errors.
    pub fn new(path: &Path, input: Box<dyn Read + Send>) -> Result<CaptureReader, CaptureError> {
        let err = |m: &str| CaptureError {
            path: path.to_path_buf(),
            packets: 0,
            message: m.to_string(),
        };
        let reader = create_reader(BUFFER, input).map_err(|e| match e {
            PcapError::Eof => err("not a capture file (empty)"),
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => err("capture header cut short"),
            PcapError::ReadError => err("cannot read"),
            _ => err("not a pcap or pcapng file (unknown magic number)"),
        })?;
        Ok(CaptureReader {
            path: path.to_path_buf(),
            reader,
            legacy: (1, false),
            ifaces: Vec::new(),
            big: false,
            buf: Vec::new(),
            packets: 0,
        })
    }

    /// Packets returned so far.
    pub fn packets_read(&self) -> u64 {
        self.packets
    }

    fn fail(&self, message: String) -> CaptureError {
        CaptureError {
            path: self.path.clone(),
            packets: self.packets,
            message,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            let (step, offset) = match self.reader.next() {
                Ok((offset, block)) => {
                    let step = take_block(
                        block,
                        &mut self.legacy,
                        &mut self.ifaces,
                        &mut self.big,
                        &mut self.buf,
                    );
                    (step, offset)
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(n)) if n <= MAX_FRAME => {
                    if self.reader.refill().is_err() {
                        return Err(self.fail("cannot read".into()));
                    }
                    continue;
                }
                Err(PcapError::Incomplete(n)) => {
                    return Err(self.fail(format!("block or packet length {n} is not plausible")));
                }
                Err(PcapError::BufferTooSmall) => {
                    return Err(self.fail("block or packet length is not plausible".into()));
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(self.fail(format!(
                        "packet {} cut short (unexpected end of file)",
                        self.packets + 1
                    )));
                }
                Err(PcapError::ReadError) => return Err(self.fail("cannot read".into())),
                Err(e) => {
                    let m = format!("damaged block ({e})");
                    return Err(self.fail(m));
                }
            };
            self.reader.consume(offset);
            match step {
                Ok(Step::Frame { linktype, ts_ns }) => {
                    self.packets += 1;
                    return Ok(Some(Frame {
                        linktype,
                        ts_ns,
                        data: &self.buf,
                    }));
                }
                Ok(Step::Other) => {}
                Err(m) => return Err(self.fail(m)),
            }
        }
    }
}

/// Takes what appwall needs from one block: a frame's bytes go into `buf`
/// (so the reader's buffer can move on), headers update the link types
/// and timestamp units.
fn take_block(
    block: PcapBlockOwned<'_>,
    legacy: &mut (u32, bool),
    ifaces: &mut Vec<Iface>,
    big: &mut bool,
    buf: &mut Vec<u8>,
) -> Result<Step, String> {
    let mut frame = |data: &[u8], linktype: u32, ts_ns: u64| {
        if data.len() > MAX_FRAME {
            return Err(format!("packet length {} is not plausible", data.len()));
        }
        buf.clear();
        buf.extend_from_slice(data);
        Ok(Step::Frame { linktype, ts_ns })
    };
    let iface = |ifaces: &[Iface], id: usize| {
        ifaces
            .get(id)
            .copied()
            .ok_or_else(|| format!("packet names interface {id}, which was never described"))
    };
    match block {
        PcapBlockOwned::LegacyHeader(h) => {
            *legacy = (link(h.network.0), h.is_nanosecond_precision());
            Ok(Step::Other)
        }
        PcapBlockOwned::Legacy(b) => {
            let frac = u64::from(b.ts_usec) * if legacy.1 { 1 } else { 1000 };
            let ts_ns = u64::from(b.ts_sec) * 1_000_000_000 + frac;
            let len = usize::try_from(b.caplen).unwrap_or(usize::MAX).min(b.data.len());
            frame(&b.data[..len], legacy.0, ts_ns)
        }
        PcapBlockOwned::NG(Block::SectionHeader(h)) => {
            // Interface ids are numbered afresh in each section, and the
            // byte order may change.
            ifaces.clear();
            *big = h.big_endian();
            Ok(Step::Other)
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(i)) => {
            if ifaces.len() < 1024 {
                ifaces.push(Iface {
                    linktype: link(i.linktype.0),
                    units_per_sec: units_per_sec(i.if_tsresol),
                    // The crate reads this option little-endian in every
                    // section.
                    offset_secs: if *big {
                        i.if_tsoffset.swap_bytes()
                    } else {
                        i.if_tsoffset
                    },
                });
            }
            Ok(Step::Other)
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(e)) => {
            let f = iface(ifaces, usize::try_from(e.if_id).unwrap_or(usize::MAX))?;
            let ts = (u64::from(e.ts_high) << 32) | u64::from(e.ts_low);
            let len = usize::try_from(e.caplen).unwrap_or(usize::MAX);
            let data = e
                .data
                .get(..len)
                .ok_or(format!("packet length {len} overruns its block"))?;
            frame(data, f.linktype, to_ns(ts, f.units_per_sec, f.offset_secs))
        }
        PcapBlockOwned::NG(Block::SimplePacket(s)) => {
            let f = iface(ifaces, 0)?;
            let len = usize::try_from(s.origlen).unwrap_or(usize::MAX).min(s.data.len());
            frame(&s.data[..len], f.linktype, 0)
        }
        // The obsolete Packet Block: interface id (2), drops (2), timestamp
        // (8), captured and original length (4 each), then the data.
        // (The crate gives an unknown block's type as read little-endian.)
        PcapBlockOwned::NG(Block::Unknown(u)) if u.block_type == 2 || u.block_type == 2u32.swap_bytes() => {
            let d = u.data;
            if d.len() < 20 {
                return Err("packet block too short".into());
            }
            // The crate hands unknown blocks over as they are in the file,
            // in the section's byte order.
            let big = *big;
            let word = |at: usize| {
                let x = [d[at], d[at + 1], d[at + 2], d[at + 3]];
                if big {
                    u32::from_be_bytes(x)
                } else {
                    u32::from_le_bytes(x)
                }
            };
            let id = usize::from(if big {
                u16::from_be_bytes([d[0], d[1]])
            } else {
                u16::from_le_bytes([d[0], d[1]])
            });
            let f = iface(ifaces, id)?;
            let ts = (u64::from(word(4)) << 32) | u64::from(word(8));
            let len = usize::try_from(word(12)).unwrap_or(usize::MAX);
            let data = d
                .get(20..20usize.saturating_add(len))
                .ok_or(format!("packet length {len} overruns its block"))?;
            frame(data, f.linktype, to_ns(ts, f.units_per_sec, f.offset_secs))
        }
        PcapBlockOwned::NG(_) => Ok(Step::Other),
    }
}

/// Timestamp units per second of an `if_tsresol` value: 10^v, or 2^(v &
/// 0x7f) when the top bit is set (the crate's own helper refuses powers of
/// two); one too fine for 64 bits keeps microseconds.
fn units_per_sec(tsresol: u8) -> u64 {
    let (base, exp) = if tsresol & 0x80 != 0 {
        (2u64, u32::from(tsresol & 0x7f))
    } else {
        (10u64, u32::from(tsresol))
    };
    base.checked_pow(exp).filter(|u| *u > 0).unwrap_or(1_000_000)
}

/// A link type as appwall numbers it (the file's 32-bit field, upper
/// bits of the legacy header's FCS information masked off).
fn link(v: i32) -> u32 {
    u32::from_ne_bytes(v.to_ne_bytes()) & 0xffff
}

/// Writes a classic pcap file (raw IPv4/IPv6 frames, microseconds): used by
/// the demo and tests to produce sample captures.
pub fn write_pcap(out: &mut dyn std::io::Write, frames: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&101u32.to_le_bytes());
    out.write_all(&h)?;
    for (ts_ns, data) in frames {
        let mut r = Vec::with_capacity(16);
        r.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        r.extend_from_slice(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.write_all(&r)?;
        out.write_all(data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: Vec<u8>) -> (Vec<Vec<u8>>, Option<String>) {
        let mut r = match CaptureReader::new(Path::new("t.pcap"), Box::new(std::io::Cursor::new(bytes))) {
            Ok(r) => r,
            Err(e) => return (vec![], Some(e.to_string())),
        };
        let mut out = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Some(f)) => out.push(f.data.to_vec()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let frames = vec![
            (1_500_000_000u64, vec![0x45u8; 40]),
            (2_000_000_000, vec![0x60; 60]),
        ];
        let mut file = Vec::new();
        write_pcap(&mut file, &frames).unwrap();
        let (got, err) = read_all(file.clone());
        assert_eq!(got.len(), 2);
        assert!(err.is_none());
        for cut in 0..file.len() {
            let (got, err) = read_all(file[..cut].to_vec());
            assert!(got.len() <= 2);
            if cut > 24 && cut != 24 + 16 + 40 {
                let e = err.unwrap_or_else(|| panic!("cut at {cut} must be reported"));
                assert!(e.starts_with("t.pcap: "), "{e}");
                assert!(e.contains(&format!("(after {} packets)", got.len())), "{e}");
            }
        }
        let (_, err) = read_all(b"hello world, not a capture".to_vec());
        assert!(err.unwrap().contains("not a pcap or pcapng file"));
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut file = Vec::new();
        write_pcap(&mut file, &[(0, vec![0u8; 4])]).unwrap();
        file[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_, err) = read_all(file);
        assert!(err.unwrap().contains("not plausible"));
    }

    /// A pcapng block in either byte order (body padded to 4).
    fn block(big: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let w = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut b = body.to_vec();
        b.resize(body.len().div_ceil(4) * 4, 0);
        let total = u32::try_from(b.len() + 12).unwrap();
        [w(btype).as_slice(), &w(total), &b, &w(total)].concat()
    }

    fn section(big: bool) -> Vec<u8> {
        let mut body = vec![];
        body.extend(if big {
            0x1a2b_3c4du32.to_be_bytes()
        } else {
            0x1a2b_3c4du32.to_le_bytes()
        });
        body.extend(if big { [0, 1, 0, 0] } else { [1, 0, 0, 0] });
        body.extend((-1i64).to_le_bytes());
        block(big, 0x0a0d_0d0a, &body)
    }

    /// An interface block with link type `lt`, snap length 0 and, when
    /// given, an `if_tsresol` option.
    fn iface(big: bool, lt: u16, tsresol: Option<u8>) -> Vec<u8> {
        let h = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = [h(lt).as_slice(), &[0, 0], &[0, 0, 0, 0]].concat();
        if let Some(r) = tsresol {
            body.extend([h(9).as_slice(), &h(1), &[r, 0, 0, 0]].concat());
            body.extend([0, 0, 0, 0]);
        }
        block(big, 1, &body)
    }

    fn packet(big: bool, btype: u32, iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let w = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let len = u32::try_from(data.len()).unwrap();
        let (hi, lo) = (
            u32::try_from(ts >> 32).unwrap(),
            u32::try_from(ts & 0xffff_ffff).unwrap(),
        );
        let id: Vec<u8> = if btype == 2 {
            let x = u16::try_from(iface).unwrap();
            [if big { x.to_be_bytes() } else { x.to_le_bytes() }, [0, 0]].concat()
        } else {
            w(iface).to_vec()
        };
        let body = [id.as_slice(), &w(hi), &w(lo), &w(len), &w(len), data].concat();
        block(big, btype, &body)
    }

    /// (link type, timestamp, bytes) of a frame.
    type Got = (u32, u64, Vec<u8>);

    fn frames(bytes: Vec<u8>) -> (Vec<Got>, Option<String>) {
        let mut r = match CaptureReader::new(Path::new("t.pcapng"), Box::new(std::io::Cursor::new(bytes))) {
            Ok(r) => r,
            Err(e) => return (vec![], Some(e.to_string())),
        };
        let mut out = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Some(f)) => out.push((f.linktype, f.ts_ns, f.data.to_vec())),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn pcapng_sections_byte_orders_resolutions_and_old_blocks() {
        let file = [
            section(false),
            iface(false, 1, None),      // Ethernet, microseconds
            iface(false, 101, Some(9)), // raw IP, nanoseconds
            packet(false, 6, 0, 1_500_000, b"eth"),
            packet(false, 6, 1, 2_000_000_007, b"raw"),
            packet(false, 2, 1, 5, b"old"),    // obsolete Packet Block
            section(true),                     // a big-endian section
            iface(true, 113, Some(0x80 | 10)), // Linux SLL, 2^-10 s
            packet(true, 6, 0, 3 << 10, b"sll"),
            packet(true, 2, 0, 1 << 9, b"old-be"),
        ]
        .concat();
        let (got, err) = frames(file);
        assert_eq!(err, None);
        let want: Vec<Got> = vec![
            (1, 1_500_000_000, b"eth".to_vec()),
            (101, 2_000_000_007, b"raw".to_vec()),
            (101, 5, b"old".to_vec()),
            (113, 3_000_000_000, b"sll".to_vec()),
            (113, 500_000_000, b"old-be".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn pcapng_damage_is_reported_with_what_came_before() {
        // A packet naming an interface never described.
        let file = [
            section(false),
            iface(false, 1, None),
            packet(false, 6, 0, 0, b"a"),
            packet(false, 6, 3, 0, b"b"),
        ]
        .concat();
        let (got, err) = frames(file);
        assert_eq!(got.len(), 1);
        let e = err.unwrap();
        assert!(
            e.contains("interface 3") && e.contains("(after 1 packets)"),
            "{e}"
        );
        // Interfaces of one section are gone in the next.
        let file = [
            section(false),
            iface(false, 1, None),
            section(false),
            packet(false, 6, 0, 0, b"a"),
        ]
        .concat();
        assert!(frames(file).1.unwrap().contains("never described"));
        // Cut anywhere: never a panic, always the packets before the cut.
        let file = [
            section(false),
            iface(false, 1, None),
            packet(false, 6, 0, 0, &[7; 100]),
            packet(false, 6, 0, 0, &[8; 50]),
        ]
        .concat();
        for cut in 1..file.len() {
            let (got, _) = frames(file[..cut].to_vec());
            assert!(got.len() <= 2, "cut {cut}");
        }
        // A block claiming to be larger than any frame.
        let mut huge = [
            section(false),
            iface(false, 1, None),
            packet(false, 6, 0, 0, b"x"),
        ]
        .concat();
        let at = huge.len() - 32 + 4;
        huge[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        assert!(frames(huge).1.is_some());
    }

    #[test]
    fn snaplen_zero_pcap_is_read() {
        let mut file = Vec::new();
        write_pcap(&mut file, &[(7_000_001_000, vec![0x45; 20])]).unwrap();
        file[16..20].copy_from_slice(&0u32.to_le_bytes());
        let (got, err) = frames(file);
        assert_eq!(err, None);
        assert_eq!(got, vec![(101, 7_000_001_000, vec![0x45; 20])]);
    }
}
