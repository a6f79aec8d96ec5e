//! Fuzz target `packet_view`: see `appwall_fuzz::run::packet_view` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::packet_view(data));
