//! The `appwall` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    appwall::commands::main()
}
