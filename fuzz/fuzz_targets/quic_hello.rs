//! Fuzz target `quic_hello`: see `appwall_fuzz::run::quic_hello` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::quic_hello(data));
