//! Fuzz target `capture_reader`: see `appwall_fuzz::run::capture_reader` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::capture_reader(data));
