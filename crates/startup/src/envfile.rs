//! `--env-file PATH` (or `CELERIAC_ENV_FILE`): KEY=VALUE lines set the variables the environment does not already
//! have, before the command line is parsed, so clap's `env = ...` defaults see them. A file readable or writable by
//! group or others (mode & 0o077 != 0) is refused: secrets files are 600.
//!
//! The variables are applied by re-executing the binary (same pid, same arguments) with them added to its
//! environment: `std::env::set_var` is `unsafe` in edition 2024 and the workspace forbids unsafe code, and a process
//! that starts with its environment complete is sound even when threads already run (`#[tokio::main]`).
//!
//! Format: one `KEY=VALUE` per line; blank lines and lines starting with `#` are skipped; an optional `export `
//! prefix; keys are `[A-Za-z_][A-Za-z0-9_]*`; a value is taken literally to the end of the line (surrounding
//! spaces trimmed, no inline comments, so a `#` in a password is kept), or quoted: `'...'` literally, `"..."` with
//! `\n`, `\t`, `\"` and `\\` escapes, either followed by nothing or a `# comment`. A key given twice keeps its last
//! value (as Docker and Compose do).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The flag, on every binary.
pub const FLAG: &str = "--env-file";
/// The variable naming the file when the flag is absent.
pub const ENV_VAR: &str = "CELERIAC_ENV_FILE";

/// Why an env file was not applied.
#[derive(Debug)]
pub enum EnvFileError {
    /// `--env-file` was the last argument.
    MissingPath,
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    NotAFile {
        path: PathBuf,
    },
    /// Readable or writable by group or others.
    Mode {
        path: PathBuf,
        mode: u32,
    },
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Re-executing the binary with the variables failed.
    Exec {
        source: std::io::Error,
    },
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPath => write!(f, "{FLAG} needs a PATH"),
            Self::Read { path, source } => {
                write!(f, "cannot read env file {}: {source}", path.display())
            }
            Self::NotAFile { path } => {
                write!(f, "env file {} is not a regular file", path.display())
            }
            Self::Mode { path, mode } => write!(
                f,
                "refusing to start: env file {p} has mode {mode:04o}, readable or writable by group or others; \
                 a secrets file must be 600: run `chmod 600 {p}`",
                p = path.display()
            ),
            Self::Parse { path, line, reason } => {
                write!(f, "env file {}, line {line}: {reason}", path.display())
            }
            Self::Exec { source } => {
                write!(
                    f,
                    "could not restart with the env file's variables: {source}"
                )
            }
        }
    }
}

impl std::error::Error for EnvFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } | Self::Exec { source } => Some(source),
            _ => None,
        }
    }
}

/// The env file named by `--env-file PATH` or `--env-file=PATH` among `args` (the first one, before a `--`), else by
/// `env_value` (the value of `CELERIAC_ENV_FILE`; empty means none). `args` excludes the program name.
pub fn path_from_args<I>(
    args: I,
    env_value: Option<OsString>,
) -> Result<Option<PathBuf>, EnvFileError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let prefix = format!("{FLAG}=");
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == FLAG {
            return match args.next() {
                Some(p) if !p.is_empty() => Ok(Some(PathBuf::from(p))),
                _ => Err(EnvFileError::MissingPath),
            };
        }
        if let Some(p) = arg.to_str().and_then(|s| s.strip_prefix(&prefix)) {
            if p.is_empty() {
                return Err(EnvFileError::MissingPath);
            }
            return Ok(Some(PathBuf::from(p)));
        }
    }
    Ok(env_value.filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Refuse a file that is not a regular file or whose mode gives group or others any access.
#[cfg(unix)]
pub fn check_mode(path: &Path) -> Result<(), EnvFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| EnvFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(EnvFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(EnvFileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Check the mode, then read and parse the file.
#[cfg(unix)]
pub fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    check_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|(line, reason)| EnvFileError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

/// Parse KEY=VALUE lines; an error is the 1-based line number and the reason.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, "expected KEY=VALUE".into()));
        };
        let key = key.trim_end();
        if !valid_key(key) {
            return Err((line_no, format!("invalid variable name {key:?}")));
        }
        let value = parse_value(value.trim()).map_err(|reason| (line_no, reason))?;
        if value.contains('\0') {
            return Err((line_no, "a value cannot contain a NUL byte".into()));
        }
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn parse_value(v: &str) -> Result<String, String> {
    let Some(quote) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(v.to_string());
    };
    let mut out = String::new();
    let mut chars = v[1..].char_indices();
    let end = loop {
        let Some((i, c)) = chars.next() else {
            return Err(format!("unterminated {quote} quote"));
        };
        if c == quote {
            break i + 2;
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return Err(format!("unterminated {quote} quote")),
            }
        } else {
            out.push(c);
        }
    };
    let rest = v[end..].trim_start();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("unexpected text after the closing quote: {rest:?}"));
    }
    Ok(out)
}

/// The pairs whose key `is_set` says the environment does not have yet.
pub fn not_yet_set(
    vars: Vec<(String, String)>,
    is_set: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    vars.into_iter().filter(|(k, _)| !is_set(k)).collect()
}

/// Apply the env file named on this process's command line or by `CELERIAC_ENV_FILE`, if any: returns when there is
/// none or when every variable in it is already set; otherwise re-executes the binary with the missing ones added
/// (and does not return unless that fails).
#[cfg(unix)]
pub fn init() -> Result<(), EnvFileError> {
    let Some(path) = path_from_args(std::env::args_os().skip(1), std::env::var_os(ENV_VAR))? else {
        return Ok(());
    };
    let missing = not_yet_set(read(&path)?, |k| std::env::var_os(k).is_some());
    if missing.is_empty() {
        return Ok(());
    }
    Err(reexec(missing))
}

#[cfg(unix)]
fn reexec(vars: Vec<(String, String)>) -> EnvFileError {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // /proc/self/exe names this very binary even if its file was replaced since; elsewhere (macOS) ask the OS.
    let exe = if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        match std::env::current_exe() {
            Ok(p) => p,
            Err(source) => return EnvFileError::Exec { source },
        }
    };
    let source = std::process::Command::new(exe)
        .arg0(argv0)
        .args(args)
        .envs(vars)
        .exec();
    EnvFileError::Exec { source }
}

/// [`init`] for a binary's `main`: on an error, print it after the program's name and exit with status 1.
#[cfg(unix)]
pub fn init_or_exit() {
    if let Err(e) = init() {
        let program = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "celeriac".into());
        eprintln!("{program}: error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_comments_blanks_export_and_quotes() {
        let text = "# a comment\n\n  A=1\nexport B = two words \nC='lit $x'\nD=\"x\\\"y\\nz\" # note\nE=\nF=p#ss\nG='a\\n'\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $x"),
                ("D", "x\"y\nz"),
                ("E", ""),
                ("F", "p#ss"),
                ("G", "a\\n"),
            ])
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_wins() {
        assert_eq!(
            parse("A=1\nB=2\nA=3\n").unwrap(),
            pairs(&[("B", "2"), ("A", "3")])
        );
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().0, 2);
        assert_eq!(parse("1A=x").unwrap_err().0, 1);
        assert!(
            parse("A B=x")
                .unwrap_err()
                .1
                .contains("invalid variable name")
        );
        assert!(parse("A=\"open").unwrap_err().1.contains("unterminated"));
        assert!(
            parse("A='x' y")
                .unwrap_err()
                .1
                .contains("after the closing quote")
        );
        assert!(parse("A=\"x\\\"").unwrap_err().1.contains("unterminated"));
    }

    #[test]
    fn the_flag_wins_over_the_variable_and_stops_at_double_dash() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let env = Some(OsString::from("/from/env"));
        assert_eq!(
            path_from_args(a(&["serve", "--env-file", "/x"]), env.clone()).unwrap(),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            path_from_args(a(&["--env-file=/y", "serve"]), env.clone()).unwrap(),
            Some(PathBuf::from("/y"))
        );
        assert_eq!(
            path_from_args(a(&["serve", "--", "--env-file", "/x"]), env.clone()).unwrap(),
            Some(PathBuf::from("/from/env"))
        );
        assert_eq!(
            path_from_args(a(&["serve"]), Some(OsString::new())).unwrap(),
            None
        );
        assert!(matches!(
            path_from_args(a(&["--env-file"]), None),
            Err(EnvFileError::MissingPath)
        ));
    }

    #[test]
    fn variables_already_set_are_kept() {
        let vars = pairs(&[("A", "1"), ("B", "2")]);
        assert_eq!(not_yet_set(vars, |k| k == "A"), pairs(&[("B", "2")]));
    }

    #[cfg(unix)]
    fn file_with_mode(text: &str, mode: u32) -> tempfile::NamedTempFile {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[cfg(unix)]
    #[test]
    fn mode_600_and_400_are_accepted() {
        for mode in [0o600, 0o400] {
            let f = file_with_mode("A=1\n", mode);
            assert_eq!(
                read(f.path()).unwrap(),
                pairs(&[("A", "1")]),
                "mode {mode:o}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn any_group_or_other_bit_is_refused_with_the_fix() {
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o601, 0o610] {
            let f = file_with_mode("A=1\n", mode);
            let e = read(f.path()).unwrap_err();
            assert!(
                matches!(e, EnvFileError::Mode { mode: m, .. } if m == mode),
                "mode {mode:o}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(
                msg.contains(&format!("chmod 600 {}", f.path().display())),
                "{msg}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_file_or_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(&dir.path().join("none")),
            Err(EnvFileError::Read { .. })
        ));
        assert!(matches!(
            read(dir.path()),
            Err(EnvFileError::NotAFile { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_parse_error_names_the_file_and_line() {
        let f = file_with_mode("A=1\nB\n", 0o600);
        let msg = read(f.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{}, line 2", f.path().display())),
            "{msg}"
        );
    }
}
