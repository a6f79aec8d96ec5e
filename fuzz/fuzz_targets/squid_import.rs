//! Fuzz target `squid_import`: see `appwall_fuzz::run::squid_import` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::squid_import(data));
