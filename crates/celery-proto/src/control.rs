//! Remote control (pidbox) messages: requests published on `/{db}.celery.pidbox`, replies pushed on the
//! client's `<oid>.reply.celery.pidbox` queue. Also kombu's destination/pattern/matcher filter.

use serde_json::{Map, Value, json};

use crate::envelope::{Envelope, EnvelopeError, Message};
use crate::keys::{PIDBOX_EXCHANGE, REPLY_EXCHANGE};

/// A decoded control request.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    pub method: String,
    pub arguments: Map<String, Value>,
    pub destination: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub matcher: Option<String>,
    pub ticket: Option<String>,
    /// The reply routing key (the client's oid), when a reply is wanted.
    pub reply_to: Option<String>,
    pub clock: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("control request body is not an object with a `method`")]
    NoMethod,
}

impl ControlRequest {
    pub fn new(method: &str, arguments: Map<String, Value>) -> ControlRequest {
        ControlRequest {
            method: method.to_string(),
            arguments,
            destination: None,
            pattern: None,
            matcher: None,
            ticket: None,
            reply_to: None,
            clock: None,
        }
    }

    pub fn from_message(msg: &Message) -> Result<ControlRequest, ControlError> {
        let body = msg.json_body()?;
        let method = body
            .get("method")
            .and_then(Value::as_str)
            .ok_or(ControlError::NoMethod)?
            .to_string();
        let arguments = body
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let destination = body.get("destination").and_then(Value::as_array).map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
        let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(ControlRequest {
            method,
            arguments,
            destination,
            pattern: s("pattern"),
            matcher: s("matcher"),
            ticket: s("ticket"),
            reply_to: body
                .get("reply_to")
                .and_then(|r| r.get("routing_key"))
                .and_then(Value::as_str)
                .map(str::to_string),
            clock: msg.headers.get("clock").and_then(Value::as_u64),
        })
    }

    /// Does this request address `node`? (kombu `Node.handle_message` + `kombu.matcher`.)
    /// `pcre` patterns are matched by the caller-supplied regex function, so this crate stays dependency-free.
    pub fn addresses(&self, node: &str, pcre: impl Fn(&str, &str) -> bool) -> bool {
        if let Some(dest) = &self.destination {
            return dest.iter().any(|d| d == node);
        }
        match (&self.pattern, &self.matcher) {
            (Some(p), Some(m)) if m == "pcre" => pcre(p, node),
            (Some(p), Some(_)) | (Some(p), None) => glob_match(p, node),
            _ => true,
        }
    }

    /// The envelope a client publishes (`headers {clock, expires}`).
    pub fn envelope(&self, clock: u64, expires_unix: f64) -> Envelope {
        let mut body = Map::new();
        body.insert("method".into(), json!(self.method));
        body.insert("arguments".into(), Value::Object(self.arguments.clone()));
        body.insert("destination".into(), json!(self.destination));
        body.insert("pattern".into(), json!(self.pattern));
        body.insert("matcher".into(), json!(self.matcher));
        if let (Some(t), Some(r)) = (&self.ticket, &self.reply_to) {
            body.insert("ticket".into(), json!(t));
            body.insert(
                "reply_to".into(),
                json!({"exchange": REPLY_EXCHANGE, "routing_key": r}),
            );
        }
        let mut headers = Map::new();
        headers.insert("clock".into(), json!(clock));
        headers.insert("expires".into(), json!(expires_unix));
        Envelope::new(
            crate::json::to_py_json(&Value::Object(body)),
            headers,
            PIDBOX_EXCHANGE,
            "",
        )
    }
}

/// The reply envelope a worker pushes: body `{node: value}`, headers `{ticket, clock}`, transient.
pub fn reply_envelope(node: &str, value: Value, ticket: &str, oid: &str, clock: u64) -> Envelope {
    let mut body = Map::new();
    body.insert(node.to_string(), value);
    let mut headers = Map::new();
    headers.insert("ticket".into(), json!(ticket));
    headers.insert("clock".into(), json!(clock));
    let mut env = Envelope::new(
        crate::json::to_py_json(&Value::Object(body)),
        headers,
        REPLY_EXCHANGE,
        oid,
    );
    env.delivery_mode = 1;
    env
}

/// `fnmatch.fnmatch` (case-sensitive on POSIX): `*`, `?`, `[seq]`, `[!seq]`.
///
/// In `O(pattern x text)` time whatever the pattern: a pattern is sent by whoever can publish to the
/// pidbox or write `worker-config.yaml`, and a backtracking matcher takes exponential time on many `*`
/// (found by fuzzing: 50 stars against a worker name that does not match hung the caller).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let tokens = glob_tokens(pattern);
    let text: Vec<char> = text.chars().collect();
    // Every token but `*` takes exactly one character, so the classic two-pointer walk is exact: on a
    // mismatch, only the latest `*` needs to take one more character (an earlier one taking more could
    // only give the later one less to choose from).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(GlobToken::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(tok) if tok.takes(text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|tok| matches!(tok, GlobToken::Star))
}

enum GlobToken {
    Star,
    Any,
    Char(char),
    /// `[seq]` or `[!seq]`: single characters and `a-z` ranges.
    Set {
        negated: bool,
        items: Vec<char>,
    },
}

impl GlobToken {
    fn takes(&self, c: char) -> bool {
        match self {
            GlobToken::Star => false,
            GlobToken::Any => true,
            GlobToken::Char(x) => *x == c,
            GlobToken::Set { negated, items } => {
                let mut hit = false;
                let mut i = 0;
                while i < items.len() {
                    if i + 2 < items.len() && items[i + 1] == '-' {
                        hit |= items[i] <= c && c <= items[i + 2];
                        i += 3;
                    } else {
                        hit |= items[i] == c;
                        i += 1;
                    }
                }
                hit != *negated
            }
        }
    }
}

/// The pattern as tokens. A `[` closes at the first `]` after the character that follows it (so `[]]`
/// is the set of `]`); a `[` that never closes is a literal `[`.
fn glob_tokens(pattern: &str) -> Vec<GlobToken> {
    let p: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => tokens.push(GlobToken::Star),
            '?' => tokens.push(GlobToken::Any),
            '[' => {
                if let Some(end) = p[i..]
                    .iter()
                    .skip(2)
                    .position(|c| *c == ']')
                    .map(|k| i + k + 2)
                {
                    let negated = p[i + 1] == '!';
                    let from = if negated { i + 2 } else { i + 1 };
                    tokens.push(GlobToken::Set {
                        negated,
                        items: p[from..end].to_vec(),
                    });
                    i = end;
                } else {
                    tokens.push(GlobToken::Char('['));
                }
            }
            c => tokens.push(GlobToken::Char(c)),
        }
        i += 1;
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_like_fnmatch() {
        assert!(glob_match("w*@vm", "w1@vm"));
        assert!(glob_match("w?@v[lm]", "w1@vm"));
        assert!(!glob_match("w?@v[!m]", "w1@vm"));
        assert!(!glob_match("x*", "w1@vm"));
        assert!(glob_match("[]]x", "]x"));
        assert!(glob_match("[a-c]*[!x]", "b@vm"));
        assert!(glob_match("a[b", "a[b"));
        assert!(glob_match("", ""));
        assert!(glob_match("**", ""));
        assert!(!glob_match("?", ""));
    }

    /// The fuzzer's hang, and worse: with a backtracking matcher each of these takes longer than the
    /// age of the universe, so this test would never end.
    #[test]
    fn many_stars_that_do_not_match_end() {
        let stars = "*".repeat(60);
        let name = "celery".repeat(20);
        assert!(!glob_match(&format!("{stars}x"), &name));
        assert!(!glob_match(&format!("c{stars}e[:::e]{stars}upppp"), &name));
        assert!(glob_match(&format!("c{stars}y"), &name));
        let pattern = "a*".repeat(40) + "b";
        assert!(!glob_match(&pattern, &"a".repeat(200)));
        assert!(glob_match(&pattern, &("a".repeat(200) + "b")));
    }

    /// The plain recursive definition of the same glob (exponential on many stars, fine on short inputs).
    fn reference_glob(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| reference_glob(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && reference_glob(&p[1..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                    return t.first() == Some(&'[') && reference_glob(&p[1..], &t[1..]);
                };
                let Some(c) = t.first() else { return false };
                let (neg, set) = if p[1] == '!' {
                    (true, &p[2..end])
                } else {
                    (false, &p[1..end])
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && reference_glob(&p[end + 1..], &t[1..])
            }
            Some(ch) => t.first() == Some(ch) && reference_glob(&p[1..], &t[1..]),
        }
    }

    /// Every pattern of up to 4 symbols from `a * ? [ ] ! -` against every text of up to 4 characters
    /// from `a b ] - [`: the same answer as the recursive definition.
    #[test]
    fn glob_agrees_with_the_recursive_definition_exhaustively() {
        fn all(alphabet: &[char], max: usize) -> Vec<Vec<char>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w: &Vec<char>| {
                        alphabet.iter().map(move |&c| {
                            let mut w = w.clone();
                            w.push(c);
                            w
                        })
                    })
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let patterns = all(&['a', '*', '?', '[', ']', '!', '-'], 4);
        let texts = all(&['a', 'b', ']', '-', '['], 4);
        let mut matched = 0;
        for p in &patterns {
            let ps: String = p.iter().collect();
            for t in &texts {
                let expected = reference_glob(p, t);
                let ts: String = t.iter().collect();
                assert_eq!(glob_match(&ps, &ts), expected, "pattern {ps:?} text {ts:?}");
                matched += usize::from(expected);
            }
        }
        assert!(matched > 50_000, "{matched}");
    }

    #[test]
    fn destination_beats_pattern() {
        let mut r = ControlRequest::new("ping", Map::new());
        assert!(r.addresses("a@h", |_, _| false));
        r.destination = Some(vec!["b@h".into()]);
        r.pattern = Some("*".into());
        assert!(!r.addresses("a@h", |_, _| true));
        r.destination = None;
        r.pattern = Some("a@.*".into());
        r.matcher = Some("pcre".into());
        assert!(r.addresses("a@h", |p, n| p == "a@.*" && n == "a@h"));
    }
}
