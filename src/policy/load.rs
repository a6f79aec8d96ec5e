//! Loading a policy from files: the app library (built in, overlaid with
//! `--library` directories) and the hosts file, with every error of every
//! file reported together as `path:line: message`.

use std::path::{Path, PathBuf};

use super::Policy;
use super::error::{ConfigError, ConfigErrors};
use super::hosts::HostsFile;
use super::library::AppLibrary;

/// Where a policy comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The hosts file (`None`: see [`load_policy`]'s `everyone`).
    pub hosts: Option<PathBuf>,
    /// App library directories laid over the built-in library, in order.
    pub library_dirs: Vec<PathBuf>,
    /// Leave out the library built into appwall.
    pub no_builtin_library: bool,
    /// Apps for hosts lines that name none (`None`: the library's defaults).
    pub default_apps: Option<Vec<String>>,
}

/// Errors loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Hosts file or app library problems (`path:line: ...`, one per line).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The command needs a hosts file and none was named.
    #[error("--hosts FILE is required")]
    NoHosts,
}

/// Loads the app library and the hosts file. Without a hosts file,
/// `everyone` decides: every host listed (scan, bench) or an error (run).
pub fn load_policy(src: &Sources, everyone: bool) -> Result<Policy, LoadError> {
    let library = load_library(src);
    match (library, &src.hosts) {
        // Hosts syntax errors and unknown app names, together.
        (Ok(l), Some(h)) => Ok(Policy::load(l, h, src.default_apps.as_deref())?),
        (Ok(l), None) if everyone => Ok(Policy::everyone(l)),
        (Ok(_), None) => Err(LoadError::NoHosts),
        // Library and hosts errors together (apps cannot be checked then).
        (Err(lib), Some(h)) => match HostsFile::load(h) {
            Ok(_) => Err(lib.into()),
            Err(hosts) => {
                let mut all = lib.errors().to_vec();
                all.extend_from_slice(hosts.errors());
                Err(match ConfigErrors::check(all) {
                    Err(e) => e.into(),
                    Ok(()) => lib.into(),
                })
            }
        },
        (Err(lib), None) => Err(lib.into()),
    }
}

/// The app library: the built-in one (unless `no_builtin_library`) with
/// every library directory laid over it, later directories winning.
pub fn load_library(src: &Sources) -> Result<AppLibrary, ConfigErrors> {
    let mut lib = if src.no_builtin_library {
        if src.library_dirs.is_empty() {
            return Err(ConfigErrors::one(ConfigError::file(
                Path::new("--no-builtin-library"),
                "needs at least one --library DIR",
            )));
        }
        AppLibrary::default()
    } else {
        AppLibrary::embedded()?
    };
    let mut errors = Vec::new();
    for dir in &src.library_dirs {
        match AppLibrary::load_dir(dir) {
            Ok(over) => lib = lib.overlay(over)?,
            Err(e) => errors.extend_from_slice(e.errors()),
        }
    }
    ConfigErrors::check(errors)?;
    Ok(lib)
}
