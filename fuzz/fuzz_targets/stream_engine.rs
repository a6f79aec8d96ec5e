//! Fuzz target `stream_engine`: see `appwall_fuzz::run::stream_engine` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::stream_engine(data));
