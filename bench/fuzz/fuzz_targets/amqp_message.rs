//! Fuzz target: an AMQP delivery as the RabbitMQ transport sees it (`kombu_amqp::message`: application headers as
//! an AMQP table, body decompressed per `compression`), then the task decoder, and the delivery kept as kombu JSON
//! (`kombu_json`, what a dead letter stores) must read back with `Message::decode` with the same body bytes.
//! Input: a JSON object of headers, a NUL byte, then the raw body.
#![no_main]

use celery_proto::kombu_amqp::{AmqpProperties, DeliveryInfo, FieldTable, kombu_json, message};
use celery_proto::{Message, TaskMessage};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let headers = match serde_json::from_slice::<Value>(head) {
        Ok(Value::Object(m)) => Some(FieldTable::from_json(&m)),
        _ => None,
    };
    let props = AmqpProperties {
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        headers,
        delivery_mode: Some(2),
        priority: Some(0),
        ..AmqpProperties::default()
    };
    let info = DeliveryInfo {
        exchange: String::new(),
        routing_key: "celery".into(),
        redelivered: false,
        tag: "1:1".into(),
    };
    if let Ok(msg) = message(&info, &props, body) {
        let _ = TaskMessage::from_message(&msg);
    }
    let kept = kombu_json(&info, &props, body);
    let back = Message::decode(&kept, false);
    if let Ok(m) = message(&info, &props, body) {
        let back = back.expect("a dead letter kept as kombu JSON reads back");
        assert_eq!(
            back.body, m.body,
            "the kept body decodes to the delivered one"
        );
    }
});
