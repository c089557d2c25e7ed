//! Property tests: the envelope, task, control and result decoders never panic, whatever bytes arrive.

use celery_proto::control::ControlRequest;
use celery_proto::{Message, ResultMeta, TaskMessage};
use proptest::prelude::*;

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        // Some valid base64 of JSON-ish text, to get past the body decoding now and then.
        prop_oneof![
            Just("W1tdLCB7fSwge31d"),
            Just("e30="),
            Just("W10="),
            Just("W1sxXSwgMiwgM10=")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("body".to_string()),
                    Just("headers".to_string()),
                    Just("properties".to_string()),
                    Just("task".to_string()),
                    Just("id".to_string()),
                    Just("eta".to_string()),
                    Just("delivery_tag".to_string()),
                    Just("body_encoding".to_string()),
                    Just("args".to_string()),
                    Just("method".to_string()),
                    Just("timelimit".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn exercise(raw: &[u8]) {
    if let Ok(msg) = Message::decode(raw, false) {
        let _ = TaskMessage::from_message(&msg);
        let _ = ControlRequest::from_message(&msg);
    }
    let _ = ResultMeta::decode(raw);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&raw);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        exercise(v.to_string().as_bytes());
    }
}
