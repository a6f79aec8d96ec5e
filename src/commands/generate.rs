//! `appwall generate`: man pages and shell completions generated from the
//! clap definitions in [`crate::cli`], so they cannot say anything the
//! command line does not. The packaged copies live in `dist/man` and
//! `dist/completions`; `appwall generate all dist` rewrites both, and a test
//! fails when the checked-in files differ from a fresh generation.
//!
//! Output is deterministic (no date, no host name), so regenerating an
//! unchanged command line changes no file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs, GenerateWhat};
use crate::commands::{AppError, EXIT_OK};

/// Manual section of every page: system administration commands.
pub const MAN_SECTION: &str = "8";

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// One generated file: its name (no directory) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// File name, e.g. `appwall-run.8` or `_appwall`.
    pub name: String,
    /// File contents.
    pub bytes: Vec<u8>,
}

/// The root command as clap builds it (the help subcommand left out of the
/// man pages: `help` is not a command an admin looks up).
fn root_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Roff for the sections clap_mangen does not write: exit status (root page
/// only) and cross-references.
fn extra_sections(root: &clap::Command, page: &str) -> String {
    let mut s = String::new();
    if page == "appwall" {
        s.push_str(
            ".SH \"EXIT STATUS\"\n\
             .TP\n0\nsuccess\n\
             .TP\n1\nthe command ran but failed (privileges, the kernel, a busy queue, I/O), \
             or its check found a difference (demo)\n\
             .TP\n2\nbad input or usage: command line, hosts file, app library, captures, squid.conf\n",
        );
    }
    s.push_str(".SH \"SEE ALSO\"\n");
    let mut refs: Vec<String> = Vec::new();
    if page != "appwall" {
        refs.push(format!("\\fBappwall\\fR({MAN_SECTION})"));
    }
    for sub in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("appwall\\-{}", sub.get_name().replace('-', "\\-"));
        if format!("appwall-{}", sub.get_name()) != page {
            refs.push(format!("\\fB{name}\\fR({MAN_SECTION})"));
        }
    }
    s.push_str(&refs.join(", "));
    s.push_str(
        "\n.PP\nThe gateway guide, the rule-file reference and the design notes are in \
         the docs/ directory of the source tree (installed under \
         /usr/share/doc/appwall by the Debian package).\n",
    );
    s
}

fn render_page(root: &clap::Command, cmd: clap::Command, page: &str) -> Result<Generated, AppError> {
    let man = clap_mangen::Man::new(cmd)
        .section(MAN_SECTION)
        .manual("appwall manual");
    let name = man.get_filename();
    let mut bytes = Vec::new();
    man.render(&mut bytes)?;
    bytes.extend_from_slice(extra_sections(root, page).as_bytes());
    Ok(Generated { name, bytes })
}

/// `appwall.8` and one `appwall-COMMAND.8` per documented subcommand.
pub fn man_pages() -> Result<Vec<Generated>, AppError> {
    let root = root_command();
    // The NAME line wants a short phrase; --help keeps the long sentence.
    let top = root
        .clone()
        .about("block chat applications by port in the kernel and by payload in userspace")
        .long_about(root.get_about().cloned().unwrap_or_default());
    let mut pages = vec![render_page(&root, top, "appwall")?];
    for sub in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        let page = format!("appwall-{}", sub.get_name());
        pages.push(render_page(&root, sub.clone(), &page)?);
    }
    Ok(pages)
}

/// Completion scripts for [`SHELLS`], under the names each shell's
/// completion directory expects.
pub fn completions() -> Vec<Generated> {
    SHELLS
        .iter()
        .map(|&shell| {
            let mut cmd = Cli::command();
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut cmd, "appwall", &mut bytes);
            let name = clap_complete::Generator::file_name(&shell, "appwall");
            Generated { name, bytes }
        })
        .collect()
}

/// Whether `name` is a file [`man_pages`] or [`completions`] could write,
/// so a stale one (a removed subcommand's page) may be deleted.
fn is_ours(name: &str) -> bool {
    (name.starts_with("appwall") && name.ends_with(&format!(".{MAN_SECTION}")))
        || matches!(name, "appwall.bash" | "_appwall" | "appwall.fish")
}

/// Writes `files` into `dir` (created if missing) and deletes appwall's
/// own files there that are not among them. Returns the paths written.
pub fn write_dir(dir: &Path, files: &[Generated]) -> Result<Vec<PathBuf>, AppError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AppError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    for entry in std::fs::read_dir(dir).map_err(werr(dir))? {
        let entry = entry.map_err(werr(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_ours(name) && !files.iter().any(|f| f.name == name) {
            std::fs::remove_file(entry.path()).map_err(werr(&entry.path()))?;
        }
    }
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.bytes).map_err(werr(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `appwall generate`.
pub fn run(args: &GenerateArgs) -> Result<ExitCode, AppError> {
    let mut written = Vec::new();
    if matches!(args.what, GenerateWhat::Man) {
        written.extend(write_dir(&args.dir, &man_pages()?)?);
    }
    if matches!(args.what, GenerateWhat::Completions) {
        written.extend(write_dir(&args.dir, &completions())?);
    }
    if args.what == GenerateWhat::All {
        written.extend(write_dir(&args.dir.join("man"), &man_pages()?)?);
        written.extend(write_dir(&args.dir.join("completions"), &completions())?);
    }
    let mut out = std::io::stdout().lock();
    for p in &written {
        writeln!(out, "wrote {}", p.display())?;
    }
    Ok(ExitCode::from(EXIT_OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_documented_subcommand_and_none_for_hidden_ones() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], "appwall.8");
        for sub in ["run", "check", "kernel-rules", "demo", "scan"] {
            assert!(names.contains(&format!("appwall-{sub}.8").as_str()), "{names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate") || n.contains("help")));
        let run = pages.iter().find(|p| p.name == "appwall-run.8").unwrap();
        let text = String::from_utf8_lossy(&run.bytes);
        assert!(
            text.contains(".TH appwall-run 8"),
            "{}",
            &text[..200.min(text.len())]
        );
        assert!(text.contains("fail\\-closed"));
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(man_pages().unwrap(), man_pages().unwrap());
        assert_eq!(completions(), completions());
    }

    #[test]
    fn completions_name_every_shell_file() {
        let names: Vec<String> = completions().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["appwall.bash", "_appwall", "appwall.fish"]);
    }

    #[test]
    fn stale_pages_are_removed_and_foreign_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("appwall-gone.8"), "old").unwrap();
        std::fs::write(dir.path().join("other.8"), "not ours").unwrap();
        write_dir(dir.path(), &man_pages().unwrap()).unwrap();
        assert!(!dir.path().join("appwall-gone.8").exists());
        assert!(dir.path().join("other.8").exists());
        assert!(dir.path().join("appwall.8").exists());
    }
}
