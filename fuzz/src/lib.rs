//! Shared pieces of appwall's fuzz targets: the input formats (decoders for
//! the targets, encoders for the seed generator), the engines under test and
//! a packet builder.
//!
//! Why hand-written formats instead of `arbitrary`: the seed generator turns
//! real captures into inputs, so every format must be easy to *write* as well
//! as to read, and a byte the fuzzer flips should change one field (a flag, a
//! sequence offset, a segment size), which keeps mutations meaningful.
//!
//! Adding a target: write `fuzz_targets/NAME.rs` around a function here (or a
//! new one), add a `[[bin]]` to `Cargo.toml`, seeds to `seeds/NAME/` or to
//! `src/bin/seed.rs`, and the name to `TARGETS` in `ci.sh`.

pub mod iptables_text;
pub mod run;
pub mod wire;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use appwall::engine::{Engine, EngineConfig};
use appwall::policy::{AppLibrary, HostsFile, Policy};

/// The shipped rule library; the fuzz targets cannot run without it.
pub fn embedded_library() -> AppLibrary {
    AppLibrary::embedded().expect("shipped rules are valid")
}

/// A policy that lists every address with every app of `library` (opt-in
/// apps such as mysql included), so every signature is live.
pub fn all_apps_policy(library: AppLibrary) -> Policy {
    let hosts = HostsFile::parse(Path::new("fuzz-hosts"), "0.0.0.0/0 all\n::/0 all\n")
        .expect("static hosts file parses");
    Policy::new(library, &hosts, None).expect("static policy is valid")
}

/// The engines a packet or segment sequence is judged by; index with
/// [`engine`].
struct Engines {
    /// Shipped library, `Policy::everyone`, default config.
    everyone: Engine,
    /// Shipped library, every app, default config.
    all: Engine,
    /// Every app, small reorder buffer, depth by packets, conflicts allowed,
    /// no port rules: reaches the resync and depth paths quickly.
    tight: Engine,
    /// Every app, payload only, with segment-start signatures removed: the
    /// library whose verdict must not depend on segmentation.
    split: Engine,
}

fn engines() -> &'static Engines {
    static E: OnceLock<Engines> = OnceLock::new();
    E.get_or_init(|| {
        let lib = embedded_library();
        let tight = EngineConfig {
            depth_bytes: 2048,
            depth_packets: 24,
            reorder_bytes: 600,
            block_conflicts: false,
            port_rules: false,
        };
        let split = EngineConfig {
            port_rules: false,
            ..EngineConfig::default()
        };
        Engines {
            everyone: Engine::new(Policy::everyone(lib.clone()), EngineConfig::default())
                .expect("shipped rules compile"),
            all: Engine::new(all_apps_policy(lib.clone()), EngineConfig::default())
                .expect("shipped rules compile"),
            tight: Engine::new(all_apps_policy(lib), tight).expect("shipped rules compile"),
            split: Engine::new(all_apps_policy(segmentation_free_library()), split)
                .expect("filtered rules compile"),
        }
    })
}

/// Which engine judges a fuzz input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `Policy::everyone(AppLibrary::embedded())`, default config.
    Everyone,
    /// Every app listed for every address, default config.
    All,
    /// Every app, tight limits (see the field docs in `Engines`).
    Tight,
}

/// The engine for `which`.
pub fn engine(which: Which) -> &'static Engine {
    let e = engines();
    match which {
        Which::Everyone => &e.everyone,
        Which::All => &e.all,
        Which::Tight => &e.tight,
    }
}

/// The engine of the segmentation invariant: every app, port rules off,
/// default depth, and no `segment-start` signatures (those depend on the
/// sender's segmentation by design, see `Scope::SegmentStart`).
pub fn split_engine() -> &'static Engine {
    &engines().split
}

/// The shipped library without `segment-start` signatures.
pub fn segmentation_free_library() -> AppLibrary {
    let files: Vec<(PathBuf, String)> = appwall::policy::library::EMBEDDED
        .iter()
        .map(|(name, text)| {
            let mut doc: toml::Table = toml::from_str(text).expect("shipped rule file is TOML");
            if let Some(toml::Value::Array(sigs)) = doc.get_mut("signature") {
                sigs.retain(|s| s.get("scope").and_then(|v| v.as_str()) != Some("segment-start"));
            }
            let text = toml::to_string(&doc).expect("TOML serialises");
            (Path::new("rules").join(name), text)
        })
        .collect();
    AppLibrary::from_texts(&files).expect("filtered shipped rules are valid")
}

/// TCP segments are built by the library's sample builder (one copy).
pub use appwall::sample::{Flags, tcp_packet};

/// One raw IP UDP packet.
pub fn udp_packet(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    appwall::sample::udp_packet(src, dst, payload)
}
