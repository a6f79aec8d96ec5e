//! Small-UDP-packet generator for `benches/e2e.sh`: one thread sends
//! datagrams of `--len` payload bytes to a documentation address as fast as
//! the socket takes them, for a bounded time, then prints what it sent.
//!
//! `e2e_udp ADDR:PORT [SECONDS] [LEN]` (defaults 3 s, 64 bytes). Only RFC 5737
//! (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and 2001:db8::/32
//! destinations are accepted, so a typo cannot flood a real network.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn documentation(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets(), [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]),
        IpAddr::V6(a) => a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dst) = args.first().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: e2e_udp ADDR:PORT [SECONDS] [LEN]");
        return ExitCode::from(2);
    };
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let len: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    if !documentation(dst.ip()) || !(0.1..=60.0).contains(&secs) || len > 1400 {
        eprintln!(
            "e2e_udp: destination must be an RFC 5737 or 2001:db8::/32 address, 0.1-60 s, at most 1400 bytes"
        );
        return ExitCode::from(2);
    }
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap();
    let sock = match UdpSocket::bind(bind).and_then(|s| s.connect(dst).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("e2e_udp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let buf = vec![0x5a_u8; len];
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    // Check the clock every 256 sends: reading it per packet would cost as much as sending.
    while start.elapsed() < limit {
        for _ in 0..256 {
            match sock.send(&buf) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} errors {errors} seconds {el:.3} rate {:.0}",
        sent as f64 / el
    );
    ExitCode::SUCCESS
}
