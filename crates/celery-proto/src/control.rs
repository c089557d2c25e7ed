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
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                    return t.first() == Some(&'[') && go(&p[1..], &t[1..]);
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
                hit != neg && go(&p[end + 1..], &t[1..])
            }
            Some(ch) => t.first() == Some(ch) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
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
