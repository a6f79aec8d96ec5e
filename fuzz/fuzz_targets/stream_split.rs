//! Fuzz target `stream_split`: see `appwall_fuzz::run::stream_split` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::stream_split(data));
