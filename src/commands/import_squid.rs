//! `appwall import-squid`: Squid ACLs to an appwall rule file.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::ImportSquidArgs;
use crate::commands::AppError;
use crate::policy::AppLibrary;
use crate::policy::squid;

/// Runs `appwall import-squid`.
pub fn run(args: &ImportSquidArgs) -> Result<ExitCode, AppError> {
    let name = match &args.output {
        Some(p) => p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("squid")
            .to_string(),
        None => args.name.clone(),
    };
    let imp = squid::import_with(&args.conf, &name, args.utc_offset.as_deref())?;
    let mut err = std::io::stderr().lock();
    for n in &imp.notes {
        writeln!(err, "appwall: note: {n}")?;
    }
    if imp.translated == 0 {
        return Err(AppError::NothingTranslated(args.conf.clone()));
    }
    // The output must load as a rule file; anything else is a bug here.
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| format!("rules/{name}.toml").into());
    AppLibrary::from_texts(&[(path.clone(), imp.toml.clone())])?;
    match &args.output {
        Some(p) => std::fs::write(p, &imp.toml).map_err(|source| AppError::Write {
            path: p.clone(),
            source,
        })?,
        None => std::io::stdout().lock().write_all(imp.toml.as_bytes())?,
    }
    writeln!(
        err,
        "appwall: translated {} deny line(s) into app {name:?}{}; {} line(s) not translated (listed above)",
        imp.translated,
        args.output
            .as_ref()
            .map_or(String::new(), |p| format!(" in {}", p.display())),
        imp.notes
            .iter()
            .filter(|n| n.message.starts_with("not translated"))
            .count()
    )?;
    if !imp.hosts.is_empty() {
        writeln!(
            err,
            "appwall: add these lines to your hosts file for the src ACLs:"
        )?;
        for h in &imp.hosts {
            writeln!(err, "  {h}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
