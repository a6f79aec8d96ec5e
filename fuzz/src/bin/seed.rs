//! Builds the seed corpora of every fuzz target from real inputs: frames and
//! flows of the shared captures, the shipped rule files and hosts example,
//! and appwall's own sample traffic. Run by `seed.sh`; writes only below the
//! output directory (git-ignored `fuzz/corpus`), never next to the captures.
//!
//! Usage: `seed CAPTURES_DIR RULES_DIR OUT_DIR` (a missing captures
//! directory only skips the capture-based seeds).

use std::collections::{BTreeMap, hash_map::DefaultHasher};
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use appwall::flow::FlowKey;
use appwall::packet::{LinkType, PacketView};
use appwall::policy::Proto;
use appwall::source::capture::CaptureReader;
use appwall_fuzz::wire::{self, Segment, SeqTracker, SplitInput, StreamInput};

/// Most seeds of one kind taken from one capture file.
const PER_FILE: usize = 120;
/// Largest seed written for the structured targets.
const MAX_SEED: usize = 16 * 1024;

struct Out {
    dir: PathBuf,
    written: BTreeMap<&'static str, usize>,
}

impl Out {
    fn put(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        fs::write(dir.join(format!("seed-{:016x}", h.finish())), bytes).expect("write seed");
        *self.written.entry(target).or_default() += 1;
    }
}

/// One packet of a captured flow, reduced to what the stream formats keep.
struct Pkt {
    reply: bool,
    udp: bool,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    seq: u32,
    payload: Vec<u8>,
}

struct CapFlow {
    dport: u16,
    pkts: Vec<Pkt>,
}

fn read_capture(path: &Path, out: &mut Out) -> Vec<CapFlow> {
    let bytes = fs::read(path).expect("read capture");
    out.put("capture_reader", &bytes[..bytes.len().min(4096)]);
    let Ok(mut r) = CaptureReader::open(path) else {
        return Vec::new();
    };
    let mut frames = 0;
    let mut flows: Vec<(FlowKey, (std::net::IpAddr, u16), CapFlow)> = Vec::new();
    while let Ok(Some(f)) = r.next_frame() {
        let Some(link) = LinkType::from_pcap(f.linktype) else {
            continue;
        };
        if frames < PER_FILE {
            let mut seed = vec![wire::link_byte(link)];
            seed.extend_from_slice(f.data);
            out.put("packet_view", &seed);
            frames += 1;
        }
        let Ok(v) = PacketView::from_link(link, f.data) else {
            continue;
        };
        let key = FlowKey::of(&v);
        let i = match flows.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None if flows.len() < 40 => {
                flows.push((
                    key,
                    (v.src, v.sport),
                    CapFlow {
                        dport: v.dport,
                        pkts: Vec::new(),
                    },
                ));
                flows.len() - 1
            }
            None => continue,
        };
        let (_, opener, flow) = &mut flows[i];
        if flow.pkts.len() >= 60 {
            continue;
        }
        let t = v.tcp.unwrap_or_default();
        flow.pkts.push(Pkt {
            reply: (v.src, v.sport) != *opener,
            udp: v.proto == Proto::Udp,
            syn: t.syn,
            ack: t.ack,
            fin: t.fin,
            rst: t.rst,
            seq: t.seq,
            payload: v.payload.to_vec(),
        });
    }
    flows.into_iter().map(|(_, _, f)| f).collect()
}

fn stream_seed(flow: &CapFlow, engine: u8) -> Vec<u8> {
    let isn = [false, true].map(|reply| {
        flow.pkts
            .iter()
            .find(|p| p.reply == reply && !p.udp)
            .map_or(0, |p| p.seq)
    });
    let mut tracker = SeqTracker::new(isn);
    let mut input = StreamInput {
        engine,
        ipv6: false,
        port: wire::port_index(flow.dport),
        isn,
        segments: Vec::new(),
    };
    let mut size = 9;
    for p in &flow.pkts {
        let payload = p.payload[..p.payload.len().min(wire::MAX_SEGMENT)].to_vec();
        size += 8 + payload.len();
        if size > MAX_SEED {
            break;
        }
        let mut s = Segment {
            reply: p.reply,
            udp: p.udp,
            syn: p.syn,
            ack: p.ack,
            fin: p.fin,
            rst: p.rst,
            psh: false,
            seq: wire::Seq::Rel(0),
            conn: 0,
            pause: false,
            payload,
        };
        s.seq = tracker.seq_for(0, p.reply, p.seq);
        tracker.resolve(&s);
        input.segments.push(s);
    }
    input.encode()
}

/// The flow's in-order bytes as messages (retransmissions and segments
/// after a gap left out).
fn split_seed(flow: &CapFlow, cut_b: [u8; 8]) -> Option<Vec<u8>> {
    let mut next: [Option<u32>; 2] = [None, None];
    let mut messages: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut total = 0;
    for p in flow.pkts.iter().filter(|p| !p.udp) {
        let d = usize::from(p.reply);
        let data_seq = p.seq.wrapping_add(u32::from(p.syn));
        if p.syn {
            next[d] = Some(data_seq);
        }
        if p.payload.is_empty() {
            continue;
        }
        let n = *next[d].get_or_insert(data_seq);
        if n != data_seq {
            continue;
        }
        next[d] = Some(n.wrapping_add(p.payload.len() as u32));
        total += p.payload.len();
        if total > MAX_SEED {
            break;
        }
        match messages.last_mut() {
            Some((r, m)) if *r == p.reply => m.extend_from_slice(&p.payload),
            _ => messages.push((p.reply, p.payload.clone())),
        }
    }
    if messages.is_empty() {
        return None;
    }
    Some(
        SplitInput {
            handshake: flow.pkts.first().is_some_and(|p| p.syn),
            ipv6: false,
            port: wire::port_index(flow.dport),
            isn: [1000, u32::MAX - 100],
            cut_a: [0; 8],
            cut_b,
            messages,
        }
        .encode(),
    )
}

const CUTS: [[u8; 8]; 3] = [[1; 8], [7, 3, 64, 13, 2, 200, 5, 1], [2, 0, 3, 0, 17, 0, 1, 0]];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, captures, rules, out_dir] = &args[..] else {
        eprintln!("usage: seed CAPTURES_DIR RULES_DIR OUT_DIR");
        std::process::exit(2);
    };
    let mut out = Out {
        dir: PathBuf::from(out_dir),
        written: BTreeMap::new(),
    };

    // Real captures: frames, heads of files, flows.
    let mut paths: Vec<PathBuf> = fs::read_dir(captures)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"));
    paths.sort();
    if paths.is_empty() {
        eprintln!("seed: no captures in {captures}; capture-based seeds skipped");
    }
    for path in &paths {
        let flows = read_capture(path, &mut out);
        for (i, flow) in flows.iter().enumerate() {
            out.put("stream_engine", &stream_seed(flow, (i % 3) as u8));
            if let Some(s) = split_seed(flow, CUTS[i % CUTS.len()]) {
                out.put("stream_split", &s);
            }
        }
    }

    // appwall's own sample traffic and segmentation corpus.
    let mut pcap = Vec::new();
    appwall::source::capture::write_pcap(&mut pcap, &appwall::sample::sample_frames()).expect("write to Vec");
    out.put("capture_reader", &pcap);
    for s in appwall::sample::scenarios() {
        for p in &s.packets {
            let mut seed = vec![wire::link_byte(LinkType::RawIp)];
            seed.extend_from_slice(p);
            out.put("packet_view", &seed);
        }
    }
    for (i, c) in appwall::sample::corpus().iter().enumerate() {
        let seed = SplitInput {
            handshake: i % 2 == 0,
            ipv6: i % 3 == 0,
            port: wire::port_index(c.port),
            isn: [u32::MAX - 5, 77],
            cut_a: [0; 8],
            cut_b: CUTS[i % CUTS.len()],
            messages: c.script.iter().map(|(client, b)| (!client, b.to_vec())).collect(),
        };
        out.put("stream_split", &seed.encode());
        let flow = CapFlow {
            dport: c.port,
            pkts: scripted_packets(&c.script),
        };
        out.put("stream_engine", &stream_seed(&flow, 1));
    }

    // Shipped rules and hosts example.
    let rules = Path::new(rules);
    let mut tomls: Vec<PathBuf> = fs::read_dir(rules)
        .expect("read rules directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    tomls.sort();
    let mut all = Vec::new();
    for p in &tomls {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
        let text = fs::read_to_string(p).expect("read rule file");
        let one = format!("{stem}\n{text}");
        out.put("rule_files", one.as_bytes());
        all.push(one);
    }
    for pair in all.chunks(2) {
        out.put("rule_files", pair.join("\0").as_bytes());
    }
    let hosts = fs::read_to_string(rules.join("hosts.example")).expect("read hosts.example");
    out.put("hosts_file", hosts.as_bytes());
    for line in hosts
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        out.put("hosts_file", line.as_bytes());
    }

    // Squid configurations (committed in seeds/squid_import/), and the rule
    // files they import to: the only source of `[[rule]]` message rules.
    let squid_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/squid_import");
    let tmp = std::env::temp_dir().join(format!("appwall-seed-{}", std::process::id()));
    fs::create_dir_all(&tmp).expect("create temporary directory");
    for entry in fs::read_dir(&squid_dir).into_iter().flatten().flatten() {
        let conf = tmp.join("squid.conf");
        fs::copy(entry.path(), &conf).expect("copy squid seed");
        if let Ok(imp) = appwall::policy::squid::import(&conf, "site") {
            out.put("rule_files", format!("site\n{}", imp.toml).as_bytes());
            out.put("rule_files", format!("+site\n{}", imp.toml).as_bytes());
        }
    }
    let _ = fs::remove_dir_all(&tmp);

    for (target, n) in &out.written {
        println!("{target}: {n} seeds");
    }
}

/// Packets of a scripted conversation: SYN, SYN/ACK, then each message as one segment.
fn scripted_packets(script: &[(bool, &[u8])]) -> Vec<Pkt> {
    let mut seq = [1000u32, 5000u32];
    let mut pkts = vec![
        Pkt {
            reply: false,
            udp: false,
            syn: true,
            ack: false,
            fin: false,
            rst: false,
            seq: 999,
            payload: vec![],
        },
        Pkt {
            reply: true,
            udp: false,
            syn: true,
            ack: true,
            fin: false,
            rst: false,
            seq: 4999,
            payload: vec![],
        },
    ];
    for (client, bytes) in script {
        let d = usize::from(!client);
        pkts.push(Pkt {
            reply: !client,
            udp: false,
            syn: false,
            ack: true,
            fin: false,
            rst: false,
            seq: seq[d],
            payload: bytes.to_vec(),
        });
        seq[d] = seq[d].wrapping_add(bytes.len() as u32);
    }
    pkts
}
