//! Between `celery_proto::kombu_amqp`'s neutral values (typed field tables, properties, declarations) and lapin's
//! types. Nothing else in the crate builds a lapin property or field table by hand.
//!
//! lapin keeps field tables in a `BTreeMap`, so headers leave this process with their keys sorted rather than in
//! Python's dict order. Consumers read them into a dict (kombu) or a map (us), and RabbitMQ itself sorts them when it
//! dead-letters a message, so nothing depends on the order.

use celery_proto::kombu_amqp::{AmqpProperties, ExchangeKind, FieldTable, FieldValue};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, LongString, ShortString};

pub(crate) fn table_to_lapin(t: &FieldTable) -> lapin::types::FieldTable {
    let mut out = lapin::types::FieldTable::default();
    for (k, v) in &t.0 {
        out.insert(ShortString::from(k.as_str()), value_to_lapin(v));
    }
    out
}

fn value_to_lapin(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::I32(i) => AMQPValue::LongInt(*i),
        FieldValue::I64(i) => AMQPValue::LongLongInt(*i),
        FieldValue::F64(f) => AMQPValue::Double(*f),
        FieldValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        FieldValue::Bytes(b) => AMQPValue::LongString(LongString::from(b.clone())),
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Void => AMQPValue::Void,
        FieldValue::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(value_to_lapin).collect::<Vec<_>>(),
        )),
        FieldValue::Table(t) => AMQPValue::FieldTable(table_to_lapin(t)),
    }
}

pub(crate) fn table_from_lapin(t: &lapin::types::FieldTable) -> FieldTable {
    FieldTable(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), value_from_lapin(v)))
            .collect(),
    )
}

fn value_from_lapin(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => FieldValue::I32(i32::from(*i)),
        AMQPValue::ShortShortUInt(i) => FieldValue::I32(i32::from(*i)),
        AMQPValue::ShortInt(i) => FieldValue::I32(i32::from(*i)),
        AMQPValue::ShortUInt(i) => FieldValue::I32(i32::from(*i)),
        AMQPValue::LongInt(i) => FieldValue::I32(*i),
        AMQPValue::LongUInt(i) => FieldValue::I64(i64::from(*i)),
        AMQPValue::LongLongInt(i) => FieldValue::I64(*i),
        AMQPValue::Float(f) => FieldValue::F64(f64::from(*f)),
        AMQPValue::Double(f) => FieldValue::F64(*f),
        AMQPValue::DecimalValue(d) => {
            FieldValue::F64(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => FieldValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => FieldValue::Str(text.to_string()),
            Err(_) => FieldValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::FieldArray(a) => {
            FieldValue::Array(a.as_slice().iter().map(value_from_lapin).collect())
        }
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Table(table_from_lapin(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Void => FieldValue::Void,
    }
}

pub(crate) fn properties_to_lapin(p: &AmqpProperties) -> BasicProperties {
    let mut b = BasicProperties::default();
    let s = |v: &str| ShortString::from(v);
    if let Some(v) = &p.content_type {
        b = b.with_content_type(s(v));
    }
    if let Some(v) = &p.content_encoding {
        b = b.with_content_encoding(s(v));
    }
    if let Some(h) = &p.headers {
        b = b.with_headers(table_to_lapin(h));
    }
    if let Some(v) = p.delivery_mode {
        b = b.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        b = b.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        b = b.with_correlation_id(s(v));
    }
    if let Some(v) = &p.reply_to {
        b = b.with_reply_to(s(v));
    }
    if let Some(v) = &p.expiration {
        b = b.with_expiration(s(v));
    }
    if let Some(v) = &p.message_id {
        b = b.with_message_id(s(v));
    }
    if let Some(v) = p.timestamp {
        b = b.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        b = b.with_type(s(v));
    }
    if let Some(v) = &p.user_id {
        b = b.with_user_id(s(v));
    }
    if let Some(v) = &p.app_id {
        b = b.with_app_id(s(v));
    }
    b
}

pub(crate) fn properties_from_lapin(b: &BasicProperties) -> AmqpProperties {
    let s = |v: &Option<ShortString>| v.as_ref().map(|x| x.as_str().to_string());
    AmqpProperties {
        content_type: s(b.content_type()),
        content_encoding: s(b.content_encoding()),
        headers: b.headers().as_ref().map(table_from_lapin),
        delivery_mode: *b.delivery_mode(),
        priority: *b.priority(),
        correlation_id: s(b.correlation_id()),
        reply_to: s(b.reply_to()),
        expiration: s(b.expiration()),
        message_id: s(b.message_id()),
        timestamp: *b.timestamp(),
        kind: s(b.kind()),
        user_id: s(b.user_id()),
        app_id: s(b.app_id()),
    }
}

pub(crate) fn exchange_kind(k: ExchangeKind) -> lapin::ExchangeKind {
    match k {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_survive_the_trip_through_lapin() {
        let headers = FieldTable::from_json(
            json!({"task": "t", "retries": 0, "big": 1_i64 << 40, "eta": null, "timelimit": [null, 1.5], "stamps": {}, "ok": true})
                .as_object()
                .unwrap(),
        );
        let props = AmqpProperties {
            content_type: Some("application/json".into()),
            headers: Some(headers.clone()),
            priority: Some(10),
            delivery_mode: Some(2),
            correlation_id: Some("id".into()),
            ..AmqpProperties::default()
        };
        let back = properties_from_lapin(&properties_to_lapin(&props));
        let mut sorted = headers.0.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            back.headers.as_ref().unwrap().0,
            sorted,
            "same values, keys sorted"
        );
        assert_eq!(
            AmqpProperties {
                headers: None,
                ..back
            },
            AmqpProperties {
                headers: None,
                ..props
            }
        );
    }
}
