//! The transport-neutral message: [`Envelope`] (what a client publishes: body, headers, properties, exchange,
//! routing key, priority, delivery tag) and [`Message`] (what a consumer received, body decompressed), with the
//! checks every transport shares: `headers.compression`, and the content type Celery accepts by default (`json`).
//! How a transport lays them out on the wire is its own module: [`crate::kombu_redis`] for Redis.

use serde_json::{Map, Value};
use std::io::Read;

/// The only content type Celery's default `accept_content` lets through.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Why a message could not be turned into an envelope or its body.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message has no `properties` object")]
    MissingProperties,
    #[error("message has no `properties.delivery_tag`")]
    MissingDeliveryTag,
    #[error("message has no `body`")]
    MissingBody,
    #[error("body is not valid base64: {0}")]
    BadBase64(String),
    #[error("unsupported body encoding {0:?}")]
    UnsupportedBodyEncoding(String),
    #[error("unsupported compression {0:?}")]
    UnsupportedCompression(String),
    #[error("decompression failed: {0}")]
    Decompression(String),
    #[error("content type {0:?} is not accepted (Celery's accept_content is ['json'])")]
    ContentDisallowed(String),
    #[error("body is not valid JSON: {0}")]
    BodyNotJson(String),
}

/// A message read from Redis, with the envelope fields pulled out and the body decoded to bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub headers: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub content_type: String,
    pub content_encoding: String,
    /// The payload after base64 and decompression, still serialised per `content_type`.
    pub body: Vec<u8>,
    pub delivery_tag: String,
    /// The clamped priority from `properties.priority` (0 when missing or invalid).
    pub priority: u8,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
}

impl Message {
    /// Parse the body as JSON, refusing content types Celery does not accept by default.
    pub fn json_body(&self) -> Result<Value, EnvelopeError> {
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        if !ct.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
            return Err(EnvelopeError::ContentDisallowed(self.content_type.clone()));
        }
        serde_json::from_slice(&self.body).map_err(|e| EnvelopeError::BodyNotJson(e.to_string()))
    }
}

pub(crate) fn decompress(kind: &str, data: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    decompress_bounded(kind, data, MAX_INFLATED_BYTES)
}

/// The most a compressed body may inflate to (128 MiB). A few hundred kilobytes of zlib can inflate to gigabytes;
/// beyond this bound the message is refused (and dead-lettered by the worker, with its compressed bytes kept), so a
/// hostile message cannot exhaust a worker's memory.
pub const MAX_INFLATED_BYTES: u64 = 128 * 1024 * 1024;

fn decompress_bounded(kind: &str, data: &[u8], limit: u64) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    // Read one byte past the bound to tell "exactly the bound" from "more".
    let res = match kind {
        "application/x-gzip" | "gzip" | "zlib" => flate2::read::ZlibDecoder::new(data)
            .take(limit + 1)
            .read_to_end(&mut out),
        "application/x-bz2" | "bzip2" => bzip2::read::BzDecoder::new(data)
            .take(limit + 1)
            .read_to_end(&mut out),
        other => return Err(EnvelopeError::UnsupportedCompression(other.to_string())),
    };
    res.map_err(|e| EnvelopeError::Decompression(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(EnvelopeError::Decompression(format!(
            "the body inflates to more than {limit} bytes (from {} compressed)",
            data.len()
        )));
    }
    Ok(out)
}

/// An envelope to publish. `encode` writes the keys in kombu's order with Python's JSON formatting.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The serialised payload (JSON bytes); it is base64-encoded on the way out.
    pub body: Vec<u8>,
    pub headers: Map<String, Value>,
    /// Properties before `delivery_info`: `correlation_id`, `reply_to`, and anything else the caller sets.
    pub leading_properties: Map<String, Value>,
    pub delivery_mode: u8,
    /// `properties.expiration` in milliseconds, written as a decimal string like kombu.
    pub expiration_ms: Option<u64>,
    pub exchange: String,
    pub routing_key: String,
    pub priority: u8,
    pub delivery_tag: String,
}

impl Envelope {
    /// A JSON-bodied envelope with persistent delivery and a fresh delivery tag.
    pub fn new(
        body: Vec<u8>,
        headers: Map<String, Value>,
        exchange: &str,
        routing_key: &str,
    ) -> Envelope {
        Envelope {
            body,
            headers,
            leading_properties: Map::new(),
            delivery_mode: 2,
            expiration_ms: None,
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            priority: 0,
            delivery_tag: uuid::Uuid::new_v4().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kombu_redis::mark_redelivered;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde_json::json;

    fn env(body: &str, props: &str) -> Vec<u8> {
        format!(r#"{{"body": {body}, "content-type": "application/json", "headers": {{}}, "properties": {props}}}"#)
            .into_bytes()
    }

    #[test]
    fn a_body_that_inflates_past_the_bound_is_refused_and_one_at_the_bound_is_not() {
        use std::io::Write;
        let zeros = vec![0u8; 4096];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&zeros).unwrap();
        let zlib = z.finish().unwrap();
        let mut b = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        b.write_all(&zeros).unwrap();
        let bz = b.finish().unwrap();
        for (kind, data) in [("zlib", &zlib), ("bzip2", &bz)] {
            assert_eq!(
                decompress_bounded(kind, data, 4096).unwrap(),
                zeros,
                "{kind}"
            );
            let err = decompress_bounded(kind, data, 4095).unwrap_err();
            assert!(
                matches!(&err, EnvelopeError::Decompression(m) if m.contains("more than 4095 bytes")),
                "{kind}: {err}"
            );
        }
        assert_eq!(
            decompress("zlib", &zlib).unwrap().len(),
            4096,
            "the real bound lets ordinary bodies through"
        );
    }

    #[test]
    fn rejects_what_kombu_rejects() {
        let cases: Vec<(Vec<u8>, EnvelopeError)> = vec![
            (
                b"not json".to_vec(),
                EnvelopeError::InvalidJson(String::new()),
            ),
            (b"[1]".to_vec(), EnvelopeError::NotAnObject),
            (
                br#"{"body": "e30="}"#.to_vec(),
                EnvelopeError::MissingProperties,
            ),
            (
                env(r#""e30=""#, r#"{"body_encoding": "base64"}"#),
                EnvelopeError::MissingDeliveryTag,
            ),
            (
                env(
                    r#""%%%""#,
                    r#"{"body_encoding": "base64", "delivery_tag": "t"}"#,
                ),
                EnvelopeError::BadBase64(String::new()),
            ),
            (
                env(
                    r#""x""#,
                    r#"{"body_encoding": "rot13", "delivery_tag": "t"}"#,
                ),
                EnvelopeError::UnsupportedBodyEncoding("rot13".into()),
            ),
        ];
        for (raw, want) in cases {
            let got = Message::decode(&raw, true).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{}",
                String::from_utf8_lossy(&raw)
            );
        }
    }

    #[test]
    fn plain_utf8_body_and_priority_coercion() {
        let raw = env(
            r#""{\"a\": 1}""#,
            r#"{"delivery_tag": "t", "priority": "7"}"#,
        );
        let m = Message::decode(&raw, true).unwrap();
        assert_eq!(m.priority, 7);
        assert_eq!(m.json_body().unwrap(), json!({"a": 1}));
    }

    #[test]
    fn content_type_is_enforced_on_body() {
        let raw = br#"{"body": "gAN9cQAu", "content-type": "application/x-python-serialize", "headers": {}, "properties": {"body_encoding": "base64", "delivery_tag": "t"}}"#;
        let m = Message::decode(raw, true).unwrap();
        assert!(matches!(
            m.json_body(),
            Err(EnvelopeError::ContentDisallowed(_))
        ));
    }

    #[test]
    fn zlib_compressed_bodies_are_inflated() {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"[[1], {}, {}]").unwrap();
        let b64 = B64.encode(enc.finish().unwrap());
        let raw = format!(
            r#"{{"body": "{b64}", "content-type": "application/json", "headers": {{"compression": "application/x-gzip"}}, "properties": {{"body_encoding": "base64", "delivery_tag": "t"}}}}"#
        );
        let m = Message::decode(raw.as_bytes(), true).unwrap();
        assert_eq!(m.json_body().unwrap(), json!([[1], {}, {}]));
    }

    #[test]
    fn redelivered_flags_are_added() {
        let raw = br#"{"body": "", "headers": {"a": 1}, "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "delivery_tag": "t"}}"#;
        let out = mark_redelivered(raw).unwrap();
        let m = Message::decode(&out, true).unwrap();
        assert!(m.redelivered);
        assert_eq!(m.headers["redelivered"], json!(true));
    }
}
