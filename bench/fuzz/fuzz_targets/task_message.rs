//! Fuzz target: task protocol v1 and v2 (`TaskMessage::from_message`) on a decoded Redis envelope, and on the raw
//! input taken as a JSON body under v2 headers (as a Python client sends them) and under no headers (protocol 1).
#![no_main]

use celery_proto::{Message, TaskMessage};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fn bare(body: &[u8], headers: Map<String, Value>) -> Message {
    Message {
        headers,
        properties: Map::new(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body: body.to_vec(),
        delivery_tag: "t".into(),
        priority: 0,
        exchange: String::new(),
        routing_key: "celery".into(),
        redelivered: false,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data, false) {
        if let Ok(task) = TaskMessage::from_message(&msg) {
            // Everything a worker derives from a valid task must be computable without panicking.
            let _ = format!("{task:?}");
        }
    }
    let Value::Object(v2) = json!({"lang": "py", "task": "tasks.add", "id": "i", "root_id": "i", "parent_id": null,
        "group": null, "eta": null, "expires": null, "retries": 0, "timelimit": [null, null]})
    else {
        unreachable!()
    };
    let _ = TaskMessage::from_message(&bare(data, v2));
    let _ = TaskMessage::from_message(&bare(data, Map::new()));
});
