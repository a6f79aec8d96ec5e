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

/// Largest configuration file read (hosts file, rule file, squid.conf and the
/// files it names): 16 MiB. A hundred thousand signatures take about 6 MiB;
/// anything much larger is a mistake, and refusing it before reading keeps
/// memory bounded.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// Longest line of a configuration file: 64 KiB. No valid hosts line, rule
/// file line or Squid directive comes near it; a longer line is refused (and
/// blanked) before any parser or regex compiler sees it.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// How much of an offending line a message quotes, in characters.
pub const SHOWN_CHARS: usize = 120;

/// `text` cut to [`SHOWN_CHARS`] characters, with `…` when something was cut,
/// so one bad line cannot flood a terminal or a log.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Reads a configuration file, refusing one larger than [`MAX_FILE_BYTES`]
/// before reading it (and reading at most one byte more, should it grow).
pub fn read_limited(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    let too_big = |n: u64| {
        ConfigError::file(
            path,
            format!("file is {n} bytes or more; configuration files may have at most {MAX_FILE_BYTES} bytes"),
        )
    };
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > limit
    {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_big(limit.saturating_add(1)));
    }
    Ok(bytes)
}

/// A configuration file's text, made safe to parse: UTF-8 byte order mark
/// removed, invalid UTF-8 replaced by U+FFFD and over-long lines blanked,
/// each such line reported once. Line numbers are those of the file.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The text to parse (same number of lines as the file).
    pub text: String,
    /// One error per line that was not valid UTF-8 or too long.
    pub errors: Vec<ConfigError>,
    /// The 1-based numbers of those lines, sorted, so a parser can skip them
    /// rather than report the same line twice.
    pub bad_lines: Vec<usize>,
}

impl Decoded {
    /// True when `line` was already reported.
    pub fn is_bad(&self, line: usize) -> bool {
        self.bad_lines.binary_search(&line).is_ok()
    }
}

/// Decodes file bytes as described on [`Decoded`]. Never fails: every
/// problem becomes an error in the result, and parsing can go on to find
/// the file's other problems in the same pass.
pub fn decode(path: &Path, bytes: &[u8]) -> Decoded {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Decoded {
        text: String::with_capacity(bytes.len()),
        ..Decoded::default()
    };
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let (body, end) = match line.strip_suffix(b"\n") {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if body.len() > MAX_LINE_BYTES {
            let shown = String::from_utf8_lossy(&body[..SHOWN_CHARS.min(body.len())]).into_owned();
            out.errors.push(ConfigError::at(
                path,
                n,
                format!(
                    "line is {} bytes; lines may have at most {MAX_LINE_BYTES} (starts {:?}…)",
                    body.len(),
                    shown
                ),
            ));
            out.bad_lines.push(n);
            out.text.push_str(end);
            continue;
        }
        match std::str::from_utf8(body) {
            Ok(s) => out.text.push_str(s),
            Err(e) => {
                let at = e.valid_up_to();
                let lossy = String::from_utf8_lossy(body);
                out.errors.push(ConfigError::at(
                    path,
                    n,
                    format!(
                        "not valid UTF-8 (byte 0x{:02X} at column {}): {}",
                        body[at],
                        at + 1,
                        shorten(lossy.trim_end())
                    ),
                ));
                out.bad_lines.push(n);
                out.text.push_str(&lossy);
            }
        }
        out.text.push_str(end);
    }
    out
}

/// Maps byte offsets of a text to 1-based line numbers in O(log lines),
/// built once per file (looking lines up by rescanning the text made large
/// rule files quadratic).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`'s line starts.
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex { starts }
    }

    /// The 1-based line holding byte `offset` (offsets past the end give the last line).
    pub fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}
