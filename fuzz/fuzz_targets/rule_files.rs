//! Fuzz target `rule_files`: see `appwall_fuzz::run::rule_files` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| appwall_fuzz::run::rule_files(data));
