//! `appwall sample`: write the synthetic sample capture.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::SampleArgs;
use crate::commands::AppError;
use crate::sample::{sample_frames, scenarios};
use crate::source::capture::write_pcap;

/// Runs `appwall sample`.
pub fn run(args: &SampleArgs) -> Result<ExitCode, AppError> {
    let frames = sample_frames();
    let mut file =
        std::io::BufWriter::new(
            std::fs::File::create(&args.out).map_err(|source| AppError::Write {
                path: args.out.clone(),
                source,
            })?,
        );
    write_pcap(&mut file, &frames)?;
    file.flush()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "wrote {} packets to {}", frames.len(), args.out.display())?;
    writeln!(out, "expected with --hosts rules/hosts.example:")?;
    for s in scenarios() {
        writeln!(
            out,
            "  {:<6} {}",
            if s.blocked { "block" } else { "allow" },
            s.name
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
