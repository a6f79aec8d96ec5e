//! Configuration errors that point at `path:line`.
//!
//! Every parser in [`crate::policy`] collects *all* problems of a file before
//! giving up, so an admin fixes a file in one round instead of one error per run.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one input file, located as precisely as the parser knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: PathBuf,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    /// An error at `path:line` (lines count from 1).
    pub fn at(path: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }

    /// An error about a whole file (cannot read it, missing directory...).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// The file the error is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line, when the error belongs to one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// All problems found while loading a policy; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Wraps a non-empty list; returns `Ok(())` for an empty one.
    pub fn check(errors: Vec<ConfigError>) -> Result<(), ConfigErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// A single error.
    pub fn one(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }

    /// The individual errors, in file and line order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
