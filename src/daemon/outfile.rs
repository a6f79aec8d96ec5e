//! Output files a root daemon writes (status file, event log) without
//! letting anyone who can write to their directory aim those writes at
//! another file.
//!
//! Guarantees:
//! - a directory is used only when it is owned by root or by us and is not
//!   writable by others without the sticky bit ([`check_dir`]);
//! - the final path component is never followed when it is a symbolic link
//!   (`O_NOFOLLOW`), and an existing file must be a regular file of ours with
//!   one link (no hard link to a file elsewhere);
//! - the status file is replaced through a temporary file created
//!   exclusively (`O_EXCL`) under an unpredictable name in the same
//!   directory, then renamed over the target, so a reader sees the old or the
//!   new text, never half;
//! - files are created mode 0640 and close-on-exec (no rule tool inherits them).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::geteuid;

/// Mode of the files appwall creates (owner read-write, group read).
pub const FILE_MODE: u32 = 0o640;
/// Mode of a directory appwall creates for its files.
pub const DIR_MODE: u32 = 0o755;

/// Why an output file was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The directory may be written by someone else.
    #[error(
        "{}: unsafe directory for appwall's files ({why}); use a directory owned by root (or the --user) that others cannot write",
        dir.display()
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file exists but is not a plain file of ours.
    #[error("{}: refused: {why}", path.display())]
    UnsafeFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory a file lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `dir` (mode 0755) when missing, then checks it is safe.
pub fn prepare_dir(dir: &Path) -> Result<(), OutputError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    check_dir(dir)
}

/// Refuses a directory that someone other than root or us could write
/// without the sticky bit, or that neither root nor we own.
pub fn check_dir(dir: &Path) -> Result<(), OutputError> {
    let md = fs::metadata(dir).map_err(io_err(dir))?;
    let unsafe_dir = |why| OutputError::UnsafeDir {
        dir: dir.to_path_buf(),
        why,
    };
    if !md.is_dir() {
        return Err(unsafe_dir("not a directory"));
    }
    let me = geteuid().as_raw();
    if md.uid() != 0 && md.uid() != me {
        return Err(unsafe_dir("owned by another user"));
    }
    let sticky = md.mode() & 0o1000 != 0;
    if md.mode() & 0o002 != 0 && !sticky {
        return Err(unsafe_dir("world-writable without the sticky bit"));
    }
    Ok(())
}

/// Checks an open file is a regular file of ours with a single link.
fn check_opened(path: &Path, f: &File) -> Result<(), OutputError> {
    let md = f.metadata().map_err(io_err(path))?;
    let refuse = |why| OutputError::UnsafeFile {
        path: path.to_path_buf(),
        why,
    };
    if !md.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    if md.uid() != geteuid().as_raw() {
        return Err(refuse("owned by another user"));
    }
    if md.nlink() > 1 {
        return Err(refuse("has more than one hard link"));
    }
    Ok(())
}

/// Opens `path` for appending (created 0640 when missing), refusing a
/// symbolic link, anything but a regular file of ours, and an unsafe directory.
pub fn open_append(path: &Path) -> Result<File, OutputError> {
    // Refuse a FIFO or device before opening it (opening may block or act);
    // O_NOFOLLOW and the check after opening cover a swap in between.
    check_replaceable(path)?;
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| symlink_or(path, e))?;
    check_opened(path, &f)?;
    Ok(f)
}

/// ELOOP from `O_NOFOLLOW` means a symbolic link: say so.
fn symlink_or(path: &Path, e: io::Error) -> OutputError {
    if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
        OutputError::UnsafeFile {
            path: path.to_path_buf(),
            why: "is a symbolic link",
        }
    } else {
        OutputError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Checks that `path` may be replaced: a safe directory, and the path is
/// missing or a regular file (never a symbolic link, directory or device).
pub fn check_replaceable(path: &Path) -> Result<(), OutputError> {
    prepare_dir(parent_of(path))?;
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => Err(OutputError::UnsafeFile {
            path: path.to_path_buf(),
            why: "is a symbolic link",
        }),
        Ok(md) if !md.file_type().is_file() => Err(OutputError::UnsafeFile {
            path: path.to_path_buf(),
            why: "not a regular file",
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// 64 random bits from the kernel, for temporary names nobody can guess.
fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// Replaces `path` with `text` atomically: a temporary file created
/// exclusively (0640, unpredictable name) in the same directory, then
/// renamed over `path`. Refuses what [`check_replaceable`] refuses.
pub fn write_replace(path: &Path, text: &str) -> Result<(), OutputError> {
    check_replaceable(path)?;
    let dir = parent_of(path);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status".into());
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{base}.{:016x}.tmp", random_u64().map_err(io_err(dir))?));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&tmp);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(io_err(&tmp)(e)),
        };
        let done = f.write_all(text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(path)(e));
        }
        return Ok(());
    }
    Err(io_err(dir)(
        last.unwrap_or_else(|| io::Error::other("no free temporary name")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn symlinked_outputs_are_refused_and_their_targets_untouched() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        let link = d.path().join("out.json");
        symlink(&target, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = write_replace(&link, "{}").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn hard_links_fifos_and_unsafe_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        let hard = d.path().join("events.jsonl");
        fs::hard_link(&target, &hard).unwrap();
        let e = open_append(&hard).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_append(&fifo).unwrap_err().to_string().contains("regular"));
        assert!(
            write_replace(&fifo, "x")
                .unwrap_err()
                .to_string()
                .contains("regular")
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");

        let open_dir = d.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_replace(&open_dir.join("status.json"), "{}").unwrap_err();
        assert!(e.to_string().contains("sticky"), "{e}");
        assert!(open_append(&open_dir.join("ev")).is_err());
        assert_eq!(fs::read_dir(&open_dir).unwrap().count(), 0, "nothing created");
        // The sticky bit makes a shared directory (like /tmp) acceptable.
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o1777)).unwrap();
        write_replace(&open_dir.join("status.json"), "{}").unwrap();
    }

    #[test]
    fn files_are_created_0640_and_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/status.json");
        write_replace(&p, "one\n").unwrap();
        write_replace(&p, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n");
        let mode = fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & !FILE_MODE, 0, "mode {mode:o}");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let ev = d.path().join("events.jsonl");
        let mut f = open_append(&ev).unwrap();
        writeln!(f, "a").unwrap();
        let mut f = open_append(&ev).unwrap();
        writeln!(f, "b").unwrap();
        assert_eq!(fs::read_to_string(&ev).unwrap(), "a\nb\n");
        assert_eq!(fs::metadata(&ev).unwrap().mode() & 0o777 & !FILE_MODE, 0);
    }
}
