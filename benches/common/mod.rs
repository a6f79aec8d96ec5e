//! Helpers shared by the benches: policies with every app enabled, and the
//! benign capture when the shared captures folder is present.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use appwall::bench::{Mix, Trace};
use appwall::engine::{Engine, EngineConfig};
use appwall::packet::PacketView;
use appwall::policy::hosts::{AppChoice, HostLine};
use appwall::policy::{AppLibrary, HostsFile, Policy};
use ipnet::IpNet;

/// One shared capture, read in place from [`appwall::sample::captures_dir`]
/// (`APPWALL_CAPTURES`), or `None` when it is absent.
pub fn capture(name: &str) -> Option<PathBuf> {
    let p = appwall::sample::captures_dir().join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("note: {} not present; skipping what needs it", p.display());
        None
    }
}

/// The benign mix capture, or a synthetic web mix when it is absent.
pub fn benign() -> (String, Trace) {
    match capture("benign_mixed_1kxun_ndpi.pcap").and_then(|p| Trace::load(&[p]).ok()) {
        Some(t) => ("benign_1kxun".into(), t),
        None => ("synthetic_web".into(), appwall::bench::synthetic(Mix::Web, 200)),
    }
}

fn line(i: usize, net: IpNet, apps: &[&str]) -> HostLine {
    HostLine {
        line: i + 1,
        net,
        port: None,
        apps: AppChoice::Named(apps.iter().map(|a| (a.to_string(), i + 1)).collect()),
        schedules: Vec::new(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("static network")
}

/// Every address listed with every app of the shipped library.
pub fn everyone_all_apps() -> Policy {
    let hosts = HostsFile {
        path: PathBuf::from("bench"),
        lines: vec![
            line(0, net("0.0.0.0/0"), &["all"]),
            line(1, net("::/0"), &["all"]),
        ],
        schedules: Default::default(),
    };
    Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap()
}

/// `entries` listed networks: every endpoint of `trace` with every app (so
/// verdict work equals [`everyone_all_apps`]), padded with non-adjacent
/// filler /32s for msn only (so no two ranges merge).
pub fn listed_hosts(trace: &Trace, entries: usize) -> Policy {
    let mut addrs: Vec<IpAddr> = trace
        .frames()
        .filter_map(|(l, b)| PacketView::from_link(l, b).ok())
        .flat_map(|p| [p.src, p.dst])
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut lines: Vec<HostLine> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| line(i, IpNet::from(*a), &["all"]))
        .collect();
    let mut k = 0u32;
    while lines.len() < entries {
        // 11.0.0.0/8, even addresses only: never adjacent, never an endpoint.
        let a = Ipv4Addr::from(0x0b00_0000u32 + 2 * k);
        k += 1;
        lines.push(line(lines.len(), IpNet::from(IpAddr::V4(a)), &["msn"]));
    }
    let hosts = HostsFile {
        path: PathBuf::from("bench"),
        lines,
        schedules: Default::default(),
    };
    Policy::new(AppLibrary::embedded().unwrap(), &hosts, None).unwrap()
}

/// An engine with the default tunables.
pub fn engine(policy: Policy) -> Engine {
    Engine::new(policy, EngineConfig::default()).unwrap()
}
