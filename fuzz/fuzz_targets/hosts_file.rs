//! Fuzz target `hosts_file`: see `appwall_fuzz::run::hosts_file` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::hosts_file(data));
