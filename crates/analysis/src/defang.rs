//! Command defanger and command/event risk scoring (spec section 2.2), with the original's rules.
//!
//! The original (`cowrieprocessor/loader/defanging.py`) classifies a command by its first word,
//! rewrites URL schemes and shell operators so the text cannot be pasted into a shell, and
//! renames dangerous command names in the "aggressive" strategy.
//! Everything here is a pure function of the input string.

use serde::{Deserialize, Serialize};

use crate::text::{py_lower, py_split, py_strip};

/// Commands the original treats as safe (no defanging).
const SAFE_COMMANDS: &[&str] = &[
    "ls", "pwd", "whoami", "id", "date", "uptime", "df", "free", "ps", "top", "htop", "cat",
    "head", "tail", "grep", "find", "locate", "which", "whereis", "type", "help", "man", "info",
    "history", "echo", "print", "printf", "env", "set", "unset", "alias", "cd", "dir", "tree",
    "file", "stat", "wc", "sort", "uniq", "cut", "awk", "sed", "tr", "rev", "tac", "less", "more",
];

/// Commands that modify files but are "relatively safe" (moderate strategy).
const MODERATE_COMMANDS: &[&str] = &[
    "mkdir",
    "rmdir",
    "touch",
    "chmod",
    "chown",
    "ln",
    "cp",
    "mv",
    "tar",
    "zip",
    "unzip",
    "gzip",
    "gunzip",
    "bzip2",
    "bunzip2",
    "rsync",
    "scp",
    "sftp",
    "ftp",
    "telnet",
    "ssh",
    "ping",
    "traceroute",
];

/// High-risk commands (aggressive strategy; names are renamed in the output).
const DANGEROUS_COMMANDS: &[&str] = &[
    "rm",
    "del",
    "format",
    "fdisk",
    "mkfs",
    "dd",
    "shred",
    "wipe",
    "bash",
    "sh",
    "zsh",
    "csh",
    "tcsh",
    "ksh",
    "fish",
    "dash",
    "python",
    "python3",
    "perl",
    "ruby",
    "node",
    "php",
    "java",
    "curl",
    "wget",
    "nc",
    "netcat",
    "ncat",
    "socat",
    "telnet",
    "ssh",
    "scp",
    "rsync",
    "ftp",
    "sftp",
    "aria2c",
    "powershell",
    "cmd",
    "powershell.exe",
    "cmd.exe",
    "rundll32",
    "reg",
    "regedit",
    "gpedit",
    "msconfig",
    "services",
    "taskmgr",
    "schtasks",
    "at",
    "wmic",
    "wscript",
    "cscript",
    "certutil",
    "bitsadmin",
    "vssadmin",
    "wevtutil",
    "bcdedit",
    "diskpart",
];

/// URL scheme rewrites, applied in this order.
const URL_PATTERNS: &[(&str, &str)] = &[
    ("https://", "hxxps://"),
    ("http://", "hxxp://"),
    ("ftp://", "fxp://"),
    ("ftps://", "fxps://"),
    ("sftp://", "sfxp://"),
    ("file://", "fxle://"),
];

/// Paths that make a command suspicious (matched case-insensitively).
///
/// The original lists `/tmp/` and `/var/tmp/`; the shared fixtures and spec show `/srv/` and
/// `/var/srv/` in their place (a text substitution in the shared copies, see docs/analysis.md),
/// so both spellings are recognised.
const SUSPICIOUS_PATHS: &[&str] = &[
    "/tmp/",
    "/var/tmp/",
    "/srv/",
    "/var/srv/",
    "/dev/shm/",
    "/proc/",
    "/sys/",
    "c:\\temp\\",
    "c:\\windows\\temp\\",
    "%temp%",
    "%tmp%",
    "/root/",
    "/home/",
    "c:\\users\\",
    "c:\\programdata\\",
];

/// Risk level of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// No defanging needed.
    Safe,
    /// Defanged with the moderate strategy.
    Moderate,
    /// Defanged with the aggressive strategy.
    Dangerous,
}

impl RiskLevel {
    /// The original's string for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Safe => "safe",
            RiskLevel::Moderate => "moderate",
            RiskLevel::Dangerous => "dangerous",
        }
    }
}

/// Defanging strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Leave the command unchanged.
    None,
    /// Rewrite URLs and shell operators.
    Moderate,
    /// Moderate plus renaming of dangerous command names.
    Aggressive,
}

/// Result of [`analyze_command`], the same shape as the original's dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnalysis {
    /// `safe`, `moderate` or `dangerous`.
    pub risk_level: RiskLevel,
    /// `empty`, `safe_command`, `moderate_command`, `dangerous_command`, `unknown_dangerous`, `unknown_command`.
    pub command_type: String,
    /// Whether [`create_safe_command`] changes the command.
    pub needs_defanging: bool,
    /// `none`, `moderate` or `aggressive`.
    pub defanging_strategy: Strategy,
}

fn contains(set: &[&str], word: &str) -> bool {
    set.contains(&word)
}

/// Classifies a command by its first whitespace-separated word and its patterns.
pub fn analyze_command(command: &str) -> CommandAnalysis {
    let stripped = py_strip(command);
    let Some(first) = py_split(stripped).next() else {
        return CommandAnalysis {
            risk_level: RiskLevel::Safe,
            command_type: "empty".into(),
            needs_defanging: false,
            defanging_strategy: Strategy::None,
        };
    };
    let base = py_lower(first);
    let (mut level, kind, mut needs, mut strategy) = if contains(SAFE_COMMANDS, &base) {
        (RiskLevel::Safe, "safe_command", false, Strategy::None)
    } else if contains(MODERATE_COMMANDS, &base) {
        (
            RiskLevel::Moderate,
            "moderate_command",
            true,
            Strategy::Moderate,
        )
    } else if contains(DANGEROUS_COMMANDS, &base) {
        (
            RiskLevel::Dangerous,
            "dangerous_command",
            true,
            Strategy::Aggressive,
        )
    } else if has_dangerous_patterns(command) {
        (
            RiskLevel::Dangerous,
            "unknown_dangerous",
            true,
            Strategy::Aggressive,
        )
    } else {
        (
            RiskLevel::Moderate,
            "unknown_command",
            true,
            Strategy::Moderate,
        )
    };
    if level == RiskLevel::Safe && has_dangerous_patterns(command) {
        level = RiskLevel::Moderate;
        needs = true;
        strategy = Strategy::Moderate;
    }
    CommandAnalysis {
        risk_level: level,
        command_type: kind.into(),
        needs_defanging: needs,
        defanging_strategy: strategy,
    }
}

/// Finds the first match of `open [^close]+ close` at or after `from` (Python regex semantics:
/// leftmost match, the class also matches newlines).
fn find_delimited(s: &str, from: usize, open: &str, close: char) -> Option<(usize, usize)> {
    let mut pos = from;
    while let Some(rel) = s[pos..].find(open) {
        let start = pos + rel;
        let body = start + open.len();
        if let Some(end_rel) = s[body..].find(close) {
            if end_rel > 0 {
                return Some((start, body + end_rel + close.len_utf8()));
            }
        } else {
            return None;
        }
        // Empty body: the regex fails at this position and moves one character on.
        pos = start + s[start..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// Replaces every `open X close` (X non-empty, without `close`) by `left X right`.
fn replace_delimited(s: &str, open: &str, close: char, left: &str, right: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut pos = 0;
    while let Some((start, end)) = find_delimited(s, pos, open, close) {
        out.push_str(&s[pos..start]);
        out.push_str(left);
        out.push_str(&s[start + open.len()..end - close.len_utf8()]);
        out.push_str(right);
        pos = end;
    }
    out.push_str(&s[pos..]);
    out
}

/// True when the command holds a suspicious path, a shell operator or a URL scheme.
pub fn has_dangerous_patterns(command: &str) -> bool {
    let lower = py_lower(command);
    if SUSPICIOUS_PATHS.iter().any(|p| lower.contains(p)) {
        return true;
    }
    if ["&&", "||", "|", ";", ">>", ">", "2>&1"]
        .iter()
        .any(|p| command.contains(p))
    {
        return true;
    }
    if find_delimited(command, 0, "`", '`').is_some()
        || find_delimited(command, 0, "$(", ')').is_some()
        || find_delimited(command, 0, "<", '>').is_some()
    {
        return true;
    }
    URL_PATTERNS.iter().any(|(p, _)| command.contains(p))
}

fn defang_command_name(lower_name: &str) -> String {
    let mapped = match lower_name {
        "bash" => "bxsh",
        "sh" => "sx",
        "python" => "pythxn",
        "python3" => "pythxn3",
        "perl" => "pxrl",
        "curl" => "cxrl",
        "wget" => "wxgt",
        "nc" => "nx",
        "netcat" => "nxcat",
        "rm" => "rx",
        "del" => "dxl",
        "format" => "fxrmat",
        "dd" => "dx",
        "powershell" => "pxwershell",
        "cmd" => "cxd",
        "rundll32" => "rxndll32",
        "reg" => "rxg",
        "regedit" => "rxgdit",
        "wmic" => "wxic",
        "wscript" => "wxcript",
        "cscript" => "cxript",
        "certutil" => "cxrtutil",
        "bitsadmin" => "bxtsadmin",
        "vssadmin" => "vxsadmin",
        "wevtutil" => "wxvtutil",
        "bcdedit" => "bxdxt",
        "diskpart" => "dxskpart",
        other => other,
    };
    mapped.to_string()
}

/// Defangs a command with the given strategy (the original's `defang_command`).
pub fn defang_command(command: &str, strategy: Strategy) -> String {
    if command.is_empty() || strategy == Strategy::None {
        return command.to_string();
    }
    let mut s = command.to_string();
    for (pattern, replacement) in URL_PATTERNS {
        if s.contains(pattern) {
            s = s.replace(pattern, replacement);
        }
    }
    for (pattern, replacement) in [
        ("&&", "[AND]"),
        ("||", "[OR]"),
        ("|", "[PIPE]"),
        (";", "[SC]"),
    ] {
        if s.contains(pattern) {
            s = s.replace(pattern, replacement);
        }
    }
    s = replace_delimited(&s, "`", '`', "[BACKTICK] ", " [BACKTICK]");
    s = replace_delimited(&s, "$(", ')', "[SUBSHELL] ", " [SUBSHELL]");
    s = replace_delimited(&s, "<", '>', "[REDIRECT] ", " [REDIRECT]");
    for (pattern, replacement) in [(">>", "[APPEND]"), (">", "[OUTPUT]"), ("2>&1", "[STDERR]")] {
        if s.contains(pattern) {
            s = s.replace(pattern, replacement);
        }
    }
    if strategy == Strategy::Aggressive {
        let parts: Vec<String> = py_split(&s)
            .map(|part| {
                let lower = py_lower(part);
                if contains(DANGEROUS_COMMANDS, &lower) {
                    defang_command_name(&lower)
                } else {
                    part.to_string()
                }
            })
            .collect();
        s = parts.join(" ");
    }
    py_strip(&s).to_string()
}

/// The display-safe form: unchanged for safe commands, else `"[defang:<level>] " + defanged`.
pub fn create_safe_command(command: &str) -> String {
    let analysis = analyze_command(command);
    if !analysis.needs_defanging {
        return command.to_string();
    }
    format!(
        "[defang:{}] {}",
        analysis.risk_level.as_str(),
        defang_command(command, analysis.defanging_strategy)
    )
}

/// Command risk score 0..=100: safe 0, moderate 30, dangerous 70, plus 20 with dangerous patterns.
pub fn command_risk_score(command: &str) -> u32 {
    if command.is_empty() {
        return 0;
    }
    let base = match analyze_command(command).risk_level {
        RiskLevel::Safe => 0,
        RiskLevel::Moderate => 30,
        RiskLevel::Dangerous => 70,
    };
    let extra = if has_dangerous_patterns(command) {
        20
    } else {
        0
    };
    (base + extra).min(100)
}

/// Event risk score as the loader computes it: command score, +10 for command events,
/// +20 for `cowrie.session.file_download`, capped at 100.
pub fn event_risk_score(eventid: &str, command: Option<&str>) -> u32 {
    let mut score = 0;
    if let Some(cmd) = command {
        score = command_risk_score(cmd);
        if eventid.contains("command") {
            score += 10;
        }
    }
    if eventid == "cowrie.session.file_download" {
        score += 20;
    }
    score.min(100)
}

/// The loader's quarantine threshold: events scoring at least this are quarantined.
pub const QUARANTINE_THRESHOLD: u32 = 90;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtick_with_empty_body_is_skipped() {
        assert_eq!(
            replace_delimited("a``b`c`", "`", '`', "[B] ", " [B]"),
            "a`[B] b [B]c`"
        );
    }

    #[test]
    fn subshell_is_rewritten() {
        assert_eq!(
            defang_command("echo $(id)", Strategy::Moderate),
            "echo [SUBSHELL] id [SUBSHELL]"
        );
    }
}
