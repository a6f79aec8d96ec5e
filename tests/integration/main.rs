//! All integration tests, compiled into one binary (faster to build and run).

#[macro_use]
mod util;

mod captures;
mod cli;
mod kernel;
