//! JSON written the way Python's `json.dumps` writes it with default settings:
//! `", "` and `": "` separators and `ensure_ascii=True` (every non-ASCII character as `\uXXXX`, surrogate pairs above U+FFFF).
//!
//! Python reads any valid JSON, so this matters only where we want byte-identical output to Celery's
//! (golden tests, and people diffing Redis contents between Python and Rust workers).

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use std::io;

/// A `serde_json` formatter that mimics Python's `json.dumps` defaults.
#[derive(Debug, Default, Clone, Copy)]
pub struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json hands us runs without characters that need JSON escaping; we still have to escape non-ASCII.
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{:04x}", unit)?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Python escapes control characters with lower-case hex, like serde_json, and `/` is not escaped.
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Solidus => b"/",
            CharEscape::AsciiControl(byte) => {
                return write!(w, "\\u{:04x}", byte);
            }
        };
        w.write_all(s)
    }
}

/// Serialise `value` as Python's `json.dumps(value)` would.
pub fn to_py_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serialising a `serde_json::Value` or our own derive types into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("JSON serialisation into memory cannot fail");
    out
}

/// Like [`to_py_json`], as a `String` (the output is pure ASCII).
pub fn to_py_json_string<T: Serialize + ?Sized>(value: &T) -> String {
    String::from_utf8(to_py_json(value)).expect("ensure_ascii output is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_and_ascii_match_python() {
        let v = json!({"a": [1, 2.5, null, true], "b": "ünï€ode \u{1F600}", "c": "\u{0}\n\"/"});
        assert_eq!(
            to_py_json_string(&v),
            r#"{"a": [1, 2.5, null, true], "b": "\u00fcn\u00ef\u20acode \ud83d\ude00", "c": "\u0000\n\"/"}"#
        );
    }

    #[test]
    fn empty_containers() {
        assert_eq!(
            to_py_json_string(&json!({"x": {}, "y": []})),
            r#"{"x": {}, "y": []}"#
        );
    }
}
