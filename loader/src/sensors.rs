//! The sensors file (`sensors.yaml`): which sensors `cowrie-loader delta --all` loads, parsed strictly and checked
//! (pure: text in, sensors or an error with line and column out), and the durations and schedules it names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// One sensor: a name and the directory holding its Cowrie logs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    /// Sensor name: stamped on events whose `sensor` is empty, and the namespace of the cursors.
    pub name: String,
    /// Directory holding `cowrie.json` and its rotated copies.
    pub logdir: PathBuf,
    /// How often the sensor should be loaded: a cron expression (`*/15 * * * *`) or an interval (`15m`).
    /// Used by `cowrie-loader sensors cronjobs` and for documentation, not by the loader itself.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Where the sensor stands (free text, for people and generated labels).
    #[serde(default)]
    pub site: Option<String>,
    /// The Kubernetes node holding the log directory (`sensors cronjobs`; default: the sensor's name).
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorsFile {
    sensors: Vec<Sensor>,
}

/// Why a sensors file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SensorsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{source_name}:{line}:{column}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

/// The schedule used when a sensor names none: every 15 minutes, like the CronJob template.
pub const DEFAULT_CRON: &str = "*/15 * * * *";

/// Parses and checks a sensors file's text. `source_name` names the file in errors.
pub fn parse_sensors(text: &str, source_name: &str) -> Result<Vec<Sensor>, SensorsError> {
    let file: SensorsFile = yaml_serde::from_str(text).map_err(|e| {
        let full = e.to_string();
        match e.location() {
            Some(loc) => SensorsError::Syntax {
                source_name: source_name.into(),
                line: loc.line(),
                column: loc.column(),
                message: match full.rfind(" at line ") {
                    Some(i) => full[..i].to_string(),
                    None => full,
                },
            },
            None => SensorsError::Invalid {
                source_name: source_name.into(),
                message: full,
            },
        }
    })?;
    let invalid = |message: String| SensorsError::Invalid {
        source_name: source_name.into(),
        message,
    };
    if file.sensors.is_empty() {
        return Err(invalid("`sensors` lists no sensor".into()));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, s) in file.sensors.iter().enumerate() {
        let n = i + 1;
        if let Err(why) = check_name(&s.name) {
            return Err(invalid(format!("sensor {n}: name {:?} {why}", s.name)));
        }
        if let Some(first) = seen.insert(&s.name, n) {
            return Err(invalid(format!(
                "sensor {n}: name {:?} is already used by sensor {first}",
                s.name
            )));
        }
        if s.logdir.as_os_str().is_empty() {
            return Err(invalid(format!("sensor {:?}: `logdir` is empty", s.name)));
        }
        if let Some(sched) = &s.schedule
            && let Err(why) = cron_of(sched)
        {
            return Err(invalid(format!(
                "sensor {:?}: schedule {sched:?}: {why}",
                s.name
            )));
        }
    }
    Ok(file.sensors)
}

/// Reads and checks a sensors file.
pub fn load_sensors(path: &Path) -> Result<Vec<Sensor>, SensorsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SensorsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse_sensors(&text, &path.display().to_string())
}

/// Names are used in cursor keys, metric labels and Kubernetes object names: letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, at most 63 characters.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err("must start with a letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may only hold letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Parses a duration such as `90s`, `15m`, `1h30m` or `1d` (units `s`, `m`, `h`, `d`; a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use s, m, h or d)")),
        };
        if digits.is_empty() {
            return Err(format!("{text:?}: a number must come before {c:?}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("{text:?}: a unit must follow {digits}"));
    }
    Ok(Duration::from_secs(total))
}

/// The cron expression of a schedule: a 5-field cron expression as given, or an interval that divides an hour
/// (`15m` → `*/15 * * * *`) or a day (`2h` → `0 */2 * * *`, `1d` → `0 0 * * *`).
pub fn cron_of(schedule: &str) -> Result<String, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() == 5 {
        for f in &fields {
            if !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-'))
            {
                return Err(format!("cron field {f:?} holds an unexpected character"));
            }
        }
        return Ok(fields.join(" "));
    }
    if fields.len() != 1 {
        return Err("neither a 5-field cron expression nor an interval like 15m".into());
    }
    let secs = parse_duration(schedule)?.as_secs();
    match secs {
        s if s == 0 || s % 60 != 0 => Err("an interval must be whole minutes".into()),
        s if s < 3600 && 3600 % s == 0 => Ok(format!("*/{} * * * *", s / 60)),
        3600 => Ok("0 * * * *".into()),
        s if s < 86_400 && s % 3600 == 0 && 86_400 % s == 0 => {
            Ok(format!("0 */{} * * *", s / 3600))
        }
        86_400 => Ok("0 0 * * *".into()),
        _ => Err("an interval must divide an hour or a day (or give a cron expression)".into()),
    }
}

impl Sensor {
    /// The sensor's schedule as a cron expression ([`DEFAULT_CRON`] when it names none).
    pub fn cron(&self) -> String {
        self.schedule
            .as_deref()
            .and_then(|s| cron_of(s).ok())
            .unwrap_or_else(|| DEFAULT_CRON.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
sensors:
  - name: sensor-01
    logdir: /srv/cowrie/var/log/cowrie
  - name: sensor-02
    logdir: /srv/sensor-02/log
    schedule: 5m
    site: ams
  - name: sensor-03
    logdir: /srv/sensor-03/log
    schedule: '0 * * * *'
    node: storage-1
";

    #[test]
    fn a_good_file_parses_in_order() {
        let s = parse_sensors(GOOD, "sensors.yaml").unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sensor-01", "sensor-02", "sensor-03"]);
        assert_eq!(s[0].logdir, PathBuf::from("/srv/cowrie/var/log/cowrie"));
        assert_eq!(s[0].schedule, None);
        assert_eq!(s[1].site.as_deref(), Some("ams"));
        assert_eq!(s[2].node.as_deref(), Some("storage-1"));
        assert_eq!(s[0].cron(), DEFAULT_CRON);
        assert_eq!(s[1].cron(), "*/5 * * * *");
        assert_eq!(s[2].cron(), "0 * * * *");
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line_and_column() {
        let text = "sensors:\n  - name: a\n    logdir: /x\n    logdri: /y\n";
        match parse_sensors(text, "s.yaml").unwrap_err() {
            SensorsError::Syntax {
                source_name,
                line,
                column,
                message,
            } => {
                assert_eq!(source_name, "s.yaml");
                assert_eq!((line, column), (4, 5));
                assert!(message.contains("logdri"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_top_level_keys_and_missing_fields_are_refused() {
        let e = parse_sensors("sensors: []\nextra: 1\n", "s").unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = parse_sensors("sensors:\n  - name: a\n", "s").unwrap_err();
        assert!(e.to_string().contains("logdir"), "{e}");
        assert!(matches!(e, SensorsError::Syntax { line: 2, .. }), "{e:?}");
        let e = parse_sensors("- name: a\n  logdir: /x\n", "s").unwrap_err();
        assert!(matches!(e, SensorsError::Syntax { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = "sensors:\n  - {name: a, logdir: /x}\n  - {name: b, logdir: /y}\n  - {name: a, logdir: /z}\n";
        let e = parse_sensors(text, "s.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.yaml: sensor 3: name \"a\" is already used by sensor 1"
        );
    }

    #[test]
    fn bad_names_logdirs_and_schedules_are_refused() {
        for (text, needle) in [
            ("sensors: []\n", "no sensor"),
            ("sensors:\n  - {name: '', logdir: /x}\n", "is empty"),
            ("sensors:\n  - {name: 'a b', logdir: /x}\n", "may only hold"),
            ("sensors:\n  - {name: '-a', logdir: /x}\n", "must start"),
            ("sensors:\n  - {name: a, logdir: ''}\n", "`logdir` is empty"),
            (
                "sensors:\n  - {name: a, logdir: /x, schedule: 7m}\n",
                "divide an hour",
            ),
            (
                "sensors:\n  - {name: a, logdir: /x, schedule: 'every day'}\n",
                "neither",
            ),
            (
                "sensors:\n  - {name: a, logdir: /x, schedule: 15q}\n",
                "unknown unit",
            ),
        ] {
            let e = parse_sensors(text, "s").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        for bad in ["", "m", "15x", "1h30", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn intervals_become_cron_expressions() {
        assert_eq!(cron_of("15m").unwrap(), "*/15 * * * *");
        assert_eq!(cron_of("1h").unwrap(), "0 * * * *");
        assert_eq!(cron_of("6h").unwrap(), "0 */6 * * *");
        assert_eq!(cron_of("1d").unwrap(), "0 0 * * *");
        assert_eq!(cron_of("*/10  * * * *").unwrap(), "*/10 * * * *");
        assert!(cron_of("45s").is_err());
        assert!(cron_of("5h").is_err());
        assert!(cron_of("* * * *").is_err());
    }
}
