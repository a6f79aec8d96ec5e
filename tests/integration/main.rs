//! All integration tests, compiled into one binary (faster to build and run).

#[macro_use]
mod util;

mod bench;
mod captures;
mod cli;
mod faults;
mod fuzz_regressions;
mod injection;
mod inspection;
mod kernel;
mod live;
mod live_http;
mod live_stream;
mod squid;
