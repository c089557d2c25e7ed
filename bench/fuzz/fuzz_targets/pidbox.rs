//! Fuzz target: pidbox (remote control) bodies: a request as a worker reads it (`ControlRequest::from_message`,
//! addressing with kombu's glob and the typed `ControlCommand::parse`, whose `arguments()` must parse back to the
//! same command), and a reply as the control client reads it. Input: a kombu envelope, or else a raw JSON body.
#![no_main]

use celery_proto::Message;
use celery_proto::command::ControlCommand;
use celery_proto::control::{ControlRequest, glob_match};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fn bare(body: &[u8]) -> Message {
    Message {
        headers: Map::new(),
        properties: Map::new(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body: body.to_vec(),
        delivery_tag: String::new(),
        priority: 0,
        exchange: "celery.pidbox".into(),
        routing_key: String::new(),
        redelivered: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let msg = Message::decode(data, false).unwrap_or_else(|_| bare(data));
    // A reply: `{node: value}` under a ticket header.
    if let Ok(Value::Object(m)) = msg.json_body() {
        let _ = m.into_iter().count();
    }
    let Ok(req) = ControlRequest::from_message(&msg) else {
        return;
    };
    let _ = req.addresses("celery@host", glob_match);
    if let Some(p) = &req.pattern {
        let _ = glob_match(p, "celery@host");
    }
    if let Ok(cmd) = ControlCommand::parse(&req.method, &req.arguments) {
        let again = ControlCommand::parse(cmd.method(), &cmd.arguments())
            .expect("a parsed command's own arguments parse again");
        assert_eq!(again.method(), cmd.method());
        let _ = cmd.replies();
    }
});
