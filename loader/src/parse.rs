//! Pure parsing of one Cowrie JSON record (bytes in, an event row or a rejection out).
//!
//! Accepts every `cowrie.*` event id of every Cowrie version, IPv4 and IPv6 text,
//! `message` as string or list, timestamps with `Z`, `+00:00` or `+0000`, and the
//! four encodings of `session.closed` durations.
//! Anything else becomes a [`Rejection`] with a stable snake_case reason.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use store::ingest::{EventRow, FileRef};

/// Why a record was not stored as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Stable snake_case reason: `invalid_utf8`, `json_parse_error`, `not_an_object`,
    /// `missing_eventid`, `not_cowrie_event`, `missing_timestamp`, `invalid_timestamp`.
    pub reason: &'static str,
    pub detail: String,
    /// The JSON object as text, when the record was valid JSON.
    pub payload: Option<String>,
    /// The JSON ended early: the record may continue on the next lines.
    pub incomplete: bool,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            payload: None,
            incomplete: false,
        }
    }
}

/// Removes trailing `\r`, `\n` and spaces.
pub fn trim_record(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    let mut start = 0;
    while start < end && matches!(bytes[start], b' ' | b'\t') {
        start += 1;
    }
    &bytes[start..end]
}

/// Hex xxh3-128 of some bytes (payload hashes and first-line identities).
pub fn hash_hex(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Replaces escapes of lone UTF-16 surrogates (`\udc80` …) by `\ufffd`, which
/// serde_json and PostgreSQL both reject; paired surrogates are kept.
pub fn repair_lone_surrogates(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let hex_at = |i: usize| -> Option<u16> {
        if i + 6 <= b.len() && b[i] == b'\\' && b[i + 1] == b'u' {
            u16::from_str_radix(std::str::from_utf8(&b[i + 2..i + 6]).ok()?, 16).ok()
        } else {
            None
        }
    };
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            // count preceding backslashes: an escaped backslash is not an escape start
            if let Some(u) = hex_at(i) {
                let is_high = (0xD800..0xDC00).contains(&u);
                let is_low = (0xDC00..0xE000).contains(&u);
                if is_high {
                    if let Some(u2) = hex_at(i + 6)
                        && (0xDC00..0xE000).contains(&u2)
                    {
                        i += 12;
                        continue;
                    }
                    out.push_str(&text[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                } else if is_low {
                    out.push_str(&text[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                }
                i += 6;
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    out
}

fn replace_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{2400}"),
        Value::Array(a) => a.iter_mut().for_each(replace_nul),
        Value::Object(m) => {
            let needs_key_fix = m.keys().any(|k| k.contains('\0'));
            if needs_key_fix {
                let old = std::mem::take(m);
                for (k, mut val) in old {
                    replace_nul(&mut val);
                    m.insert(k.replace('\0', "\u{2400}"), val);
                }
            } else {
                m.values_mut().for_each(replace_nul);
            }
        }
        _ => {}
    }
}

/// Parses Cowrie's timestamp encodings into UTC (one parser for loader and analysis).
pub use analysis::model::parse_timestamp;

/// Parses a `session.closed` / `log.closed` duration: float seconds, a string
/// `"12.3"`, a string `"H:MM:SS"`, or `duration_ms` (integer milliseconds).
pub fn parse_duration(obj: &Map<String, Value>) -> Option<f64> {
    if let Some(ms) = obj.get("duration_ms").and_then(Value::as_f64) {
        return Some(ms / 1000.0);
    }
    match obj.get("duration")? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(f) = s.parse::<f64>() {
                return Some(f);
            }
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() == 3 {
                let h: f64 = parts[0].parse().ok()?;
                let m: f64 = parts[1].parse().ok()?;
                let sec: f64 = parts[2].parse().ok()?;
                return Some(h * 3600.0 + m * 60.0 + sec);
            }
            None
        }
        _ => None,
    }
}

fn text(obj: &Map<String, Value>, k: &str) -> Option<String> {
    match obj.get(k)? {
        Value::String(s) => Some(if s.contains('\0') {
            s.replace('\0', "\u{2400}")
        } else {
            s.clone()
        }),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Parses one record (a line, or several joined lines of pretty-printed JSON).
/// `default_sensor` is used when the event's `sensor` is missing or `""`.
/// The returned row has offset and line 0; the caller fills them in.
pub fn parse_record(record: &[u8], default_sensor: &str) -> Result<EventRow, Rejection> {
    let bytes = trim_record(record);
    let text_in = std::str::from_utf8(bytes)
        .map_err(|e| Rejection::new("invalid_utf8", format!("invalid UTF-8: {e}")))?;
    let mut payload_text: Option<String> = None;
    let mut value: Value = match serde_json::from_str(text_in) {
        Ok(v) => v,
        Err(e) if e.is_eof() => {
            let mut r = Rejection::new("json_parse_error", e.to_string());
            r.incomplete = true;
            return Err(r);
        }
        Err(e) => {
            let repaired = repair_lone_surrogates(text_in);
            if repaired != text_in {
                match serde_json::from_str(&repaired) {
                    Ok(v) => {
                        payload_text = Some(repaired);
                        v
                    }
                    Err(e2) => return Err(Rejection::new("json_parse_error", e2.to_string())),
                }
            } else {
                return Err(Rejection::new("json_parse_error", e.to_string()));
            }
        }
    };
    let has_nul_escape = text_in.contains("\\u0000");
    if has_nul_escape {
        replace_nul(&mut value);
        payload_text = Some(value.to_string());
    }
    // Multi-line (pretty-printed) records are stored compact, as Cowrie writes them.
    let multi_line = bytes.contains(&b'\n');
    let payload = match payload_text {
        Some(p) => p,
        None if multi_line => value.to_string(),
        None => text_in.to_owned(),
    };
    let Value::Object(obj) = &value else {
        let mut r = Rejection::new("not_an_object", "record is JSON but not an object");
        r.payload = Some(payload);
        return Err(r);
    };
    let reject = |reason: &'static str, detail: String| {
        let mut r = Rejection::new(reason, detail);
        r.payload = Some(payload.clone());
        r
    };
    let Some(event_type) = text(obj, "eventid") else {
        return Err(reject("missing_eventid", "no string `eventid`".into()));
    };
    if !event_type.starts_with("cowrie.") {
        return Err(reject(
            "not_cowrie_event",
            format!("eventid {event_type:?} is not cowrie.*"),
        ));
    }
    let Some(ts_text) = text(obj, "timestamp") else {
        return Err(reject("missing_timestamp", "no string `timestamp`".into()));
    };
    // Years outside 1..=9999 would make PostgreSQL reject the whole batch.
    let in_range = |t: &DateTime<Utc>| (1..=9999).contains(&chrono::Datelike::year(t));
    let Some(timestamp) = parse_timestamp(&ts_text).filter(in_range) else {
        return Err(reject(
            "invalid_timestamp",
            format!("unparsable timestamp {ts_text:?}"),
        ));
    };
    let session_id = nonempty(text(obj, "session").or_else(|| text(obj, "session_id")));
    let src_ip = nonempty(text(obj, "src_ip").or_else(|| text(obj, "peer_ip")));
    let sensor = nonempty(text(obj, "sensor")).unwrap_or_else(|| default_sensor.to_owned());
    let is_login = event_type.starts_with("cowrie.login.");
    let file = match event_type.as_str() {
        "cowrie.session.file_download" | "cowrie.session.file_upload" => text(obj, "shasum")
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| is_sha256_hex(s))
            .map(|shasum| FileRef {
                shasum,
                direction: if event_type.ends_with("upload") {
                    "upload".into()
                } else {
                    "download".into()
                },
                filename: nonempty(text(obj, "filename").or_else(|| text(obj, "destfile"))),
                outfile: nonempty(text(obj, "outfile")),
                url: nonempty(text(obj, "url")),
            }),
        _ => None,
    };
    // The original loader's risk score: from `input` (or `command`) and the event type.
    let command = obj
        .get("input")
        .and_then(Value::as_str)
        .or_else(|| obj.get("command").and_then(Value::as_str));
    let risk = analysis::defang::event_risk_score(&event_type, command);
    Ok(EventRow {
        risk_score: risk as i32,
        quarantined: risk >= analysis::defang::QUARANTINE_THRESHOLD,
        offset: 0,
        line: 0,
        payload_hash: hash_hex(payload.as_bytes()),
        payload,
        session_id,
        timestamp,
        src_ip,
        protocol: nonempty(text(obj, "protocol")),
        username: if is_login {
            text(obj, "username")
        } else {
            None
        },
        password: if is_login {
            text(obj, "password")
        } else {
            None
        },
        client_version: if event_type == "cowrie.client.version" {
            text(obj, "version")
        } else {
            None
        },
        hassh: if event_type == "cowrie.client.kex" {
            nonempty(text(obj, "hassh"))
        } else {
            None
        },
        duration_seconds: if event_type == "cowrie.session.closed" {
            parse_duration(obj)
        } else {
            None
        },
        file,
        sensor,
        event_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> EventRow {
        parse_record(s.as_bytes(), "fallback").expect("should parse")
    }

    fn err(b: &[u8]) -> Rejection {
        parse_record(b, "fallback").expect_err("should be rejected")
    }

    #[test]
    fn accepts_unknown_cowrie_event_and_list_message() {
        let e = ok(
            r#"{"eventid":"cowrie.session.params","arch":"linux-x64-lsb","message":[],"sensor":"","timestamp":"2024-01-26T03:31:30.123456Z","src_ip":"1.2.3.4","session":"abcdef012345"}"#,
        );
        assert_eq!(e.event_type, "cowrie.session.params");
        assert_eq!(e.sensor, "fallback");
        let e = ok(
            r#"{"eventid":"cowrie.telnet.exploit_attempt","cve":"x","timestamp":"2024-01-26T03:31:30.123456+0000","sensor":"s1"}"#,
        );
        assert_eq!(e.sensor, "s1");
        assert_eq!(e.session_id, None);
    }

    #[test]
    fn ipv6_and_timestamp_forms() {
        let e = ok(
            r#"{"eventid": "cowrie.session.connect", "src_ip": "2001:db8::1", "timestamp": "2018-05-06T17:44:05.866769+00:00", "session": "0123456789ab"}"#,
        );
        assert_eq!(e.src_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(e.timestamp.to_rfc3339(), "2018-05-06T17:44:05.866769+00:00");
        assert!(parse_timestamp("2018-05-06T17:44:05.866769+0000").is_some());
        assert!(parse_timestamp("2018-05-06T17:44:05.866769").is_some());
        assert!(parse_timestamp("yesterday").is_none());
        let far = err(br#"{"eventid":"cowrie.x","timestamp":"-5000-01-01T00:00:00"}"#);
        assert_eq!(far.reason, "invalid_timestamp");
    }

    #[test]
    fn four_duration_encodings() {
        for (line, want) in [
            (r#""duration": 12.5"#, 12.5),
            (r#""duration": "12.3""#, 12.3),
            (r#""duration": "0:01:10""#, 70.0),
            (r#""duration_ms": 1500"#, 1.5),
        ] {
            let s = format!(
                r#"{{"eventid":"cowrie.session.closed",{line},"timestamp":"2024-01-01T00:00:00.000000Z","session":"aaaaaaaaaaaa"}}"#
            );
            assert_eq!(ok(&s).duration_seconds, Some(want), "{line}");
        }
    }

    #[test]
    fn rejections_have_reasons() {
        assert_eq!(
            err(b"{\"eventid\":\"cowrie.x\",\xff}").reason,
            "invalid_utf8"
        );
        assert_eq!(err(b"{\"eventid\": ").reason, "json_parse_error");
        assert!(err(b"{\"eventid\": ").incomplete);
        assert!(!err(b"{\"eventid\" ]").incomplete);
        assert_eq!(err(b"[1,2]").reason, "not_an_object");
        assert_eq!(
            err(br#"{"timestamp":"2024-01-01T00:00:00Z"}"#).reason,
            "missing_eventid"
        );
        assert_eq!(
            err(br#"{"eventid":"dionaea.x","timestamp":"2024-01-01T00:00:00Z"}"#).reason,
            "not_cowrie_event"
        );
        assert_eq!(
            err(br#"{"eventid":"cowrie.x"}"#).reason,
            "missing_timestamp"
        );
        let r = err(br#"{"eventid":"cowrie.x","timestamp":"soon"}"#);
        assert_eq!(r.reason, "invalid_timestamp");
        assert!(r.payload.is_some());
    }

    #[test]
    fn nul_and_lone_surrogates_are_made_storable() {
        let e = ok(
            r#"{"eventid":"cowrie.login.failed","username":"ro\u0000ot","password":"\udc80x","timestamp":"2024-01-01T00:00:00Z"}"#,
        );
        assert_eq!(e.username.as_deref(), Some("ro\u{2400}ot"));
        assert_eq!(e.password.as_deref(), Some("\u{fffd}x"));
        assert!(!e.payload.contains("\\u0000"));
        // a valid pair survives
        assert_eq!(repair_lone_surrogates(r#"\ud83d\ude00"#), r#"\ud83d\ude00"#);
        assert_eq!(repair_lone_surrogates(r#"\\udc80"#), r#"\\udc80"#);
    }

    #[test]
    fn downloads_and_logins_extracted() {
        let e = ok(
            r#"{"eventid":"cowrie.session.file_download","url":"http://x/y","outfile":"dl/AB","shasum":"ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789","timestamp":"2024-01-01T00:00:00Z","session":"aaaaaaaaaaaa"}"#,
        );
        let f = e.file.expect("file");
        assert_eq!(f.direction, "download");
        assert_eq!(
            f.shasum,
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        );
        let e = ok(
            r#"{"eventid":"cowrie.login.success","username":"root","password":"1234","timestamp":"2024-01-01T00:00:00Z"}"#,
        );
        assert_eq!(
            (e.username.as_deref(), e.password.as_deref()),
            (Some("root"), Some("1234"))
        );
    }
}
