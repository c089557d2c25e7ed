//! Python `repr()` of JSON values, for the places where Celery puts a repr string on the wire:
//! `argsrepr`/`kwargsrepr` headers, `task-received` args, `task-succeeded` result, `task-failed` exception.

use serde_json::{Map, Value};
use std::fmt::Write;

/// Celery's `saferepr` limit for args and kwargs reprs.
pub const REPR_MAXLEN: usize = 1024;

/// How strings are written: Python's `repr()` escapes them; Celery's `saferepr` (used for `argsrepr`,
/// `kwargsrepr` and event args) only wraps them in single quotes, as the real captures show (`'\x00'` stays raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Repr,
    Safe,
}

/// `repr(value)` for a value decoded from JSON (dict, list, str, int, float, bool, None).
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, Style::Repr);
    out
}

/// Celery's `saferepr(value)` (without the length limit; see [`truncate`]).
pub fn saferepr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, Style::Safe);
    out
}

/// Celery's `saferepr(tuple(args))`: `()`, `(1,)`, `(1, 2)`.
pub fn repr_args(args: &[Value]) -> String {
    write_tuple(args, Style::Safe)
}

/// Python's `repr(tuple(args))`, e.g. for exception reprs.
pub fn py_repr_tuple(args: &[Value]) -> String {
    write_tuple(args, Style::Repr)
}

fn write_tuple(args: &[Value], style: Style) -> String {
    let mut out = String::from("(");
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, v, style);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

/// Celery's `saferepr(kwargs)`.
pub fn repr_kwargs(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_dict(&mut out, kwargs, Style::Safe);
    out
}

/// Truncate a repr like `saferepr(x, maxlen)` does, marking the cut with `...`.
pub fn truncate(mut s: String, maxlen: usize) -> String {
    if s.len() > maxlen {
        let mut cut = maxlen;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn write_dict(out: &mut String, map: &Map<String, Value>, style: Style) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k, style);
        out.push_str(": ");
        write_repr(out, v, style);
    }
    out.push('}');
}

fn write_repr(out: &mut String, value: &Value, style: Style) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                write_float(out, f);
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Value::String(s) => write_str(out, s, style),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, v, style);
            }
            out.push(']');
        }
        Value::Object(map) => write_dict(out, map, style),
    }
}

/// Python float repr: shortest round-trip digits, always with a `.0` or exponent.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let abs = f.abs();
        if !(1e-4..1e16).contains(&abs) {
            // Python: 1e-05, 1.5e+16
            let s = format!("{f:e}");
            let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let exp: i32 = exp.parse().unwrap_or(0);
            let _ = write!(
                out,
                "{mant}e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            );
        } else {
            let _ = write!(out, "{f}");
        }
    }
}

/// Python str repr: single quotes unless the text has a single quote and no double quote.
fn write_str(out: &mut String, s: &str, style: Style) {
    if style == Style::Safe {
        out.push('\'');
        out.push_str(s);
        out.push('\'');
        return;
    }
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs_match_python() {
        let cases = [
            (json!(null), "None"),
            (json!(true), "True"),
            (json!(5), "5"),
            (json!(2.0), "2.0"),
            (json!(0.1), "0.1"),
            (json!(1e-5), "1e-05"),
            (json!("it's"), "\"it's\""),
            (json!("a'b\"c"), "'a\\'b\"c'"),
            (json!("\u{0}x\n"), "'\\x00x\\n'"),
            (json!("ünï€ode"), "'ünï€ode'"),
            (json!({"x": 1, "y": [1, "a"]}), "{'x': 1, 'y': [1, 'a']}"),
        ];
        for (v, want) in cases {
            assert_eq!(repr(&v), want, "repr of {v}");
        }
    }

    #[test]
    fn saferepr_does_not_escape() {
        assert_eq!(
            repr_args(&[json!("\u{0}"), json!("it's")]),
            "('\u{0}', 'it's')"
        );
        assert_eq!(py_repr_tuple(&[json!("\u{0}")]), "('\\x00',)");
    }

    #[test]
    fn args_tuple_repr() {
        assert_eq!(repr_args(&[]), "()");
        assert_eq!(repr_args(&[json!(12)]), "(12,)");
        assert_eq!(repr_args(&[json!(2), json!(3)]), "(2, 3)");
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é...");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
