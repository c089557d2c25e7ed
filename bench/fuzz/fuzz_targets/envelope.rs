//! Fuzz target: kombu's Redis JSON envelope (`Message::decode`, with and without a delivery tag), its JSON body,
//! and the byte-level helpers that rewrite stored envelopes (`mark_redelivered`, `unacked_entry` and its parse,
//! `readdress`, `string_delivery_tag`). Nothing may panic; a decoded message must survive re-decoding the rewrites.
#![no_main]

use celery_proto::Message;
use celery_proto::kombu_redis::{
    UnackedEntry, mark_redelivered, readdress, string_delivery_tag, unacked_entry, unacked_queue,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = string_delivery_tag(data);
    let _ = UnackedEntry::parse(data);
    let _ = unacked_queue(data);
    let tagged = Message::decode(data, true);
    let Ok(msg) = Message::decode(data, false) else {
        assert!(
            tagged.is_err(),
            "a message with a tag must decode without requiring one"
        );
        return;
    };
    let _ = msg.json_body();
    if tagged.is_ok() {
        if let Ok(again) = mark_redelivered(data) {
            let re = Message::decode(&again, true).expect("a redelivered envelope still decodes");
            assert_eq!(re.body, msg.body, "marking redelivered keeps the body");
        }
        let entry = unacked_entry(data, "ex", "rk");
        let parsed = UnackedEntry::parse(&entry).expect("an unacked entry we wrote parses");
        assert_eq!(
            (parsed.exchange.as_str(), parsed.routing_key.as_str()),
            ("ex", "rk")
        );
        let restored = Message::decode(&parsed.message, true).expect("a restored message decodes");
        assert_eq!(restored.body, msg.body, "restoring keeps the body");
        assert_eq!(unacked_queue(&entry).as_deref(), Some("rk"));
        if let Some(moved) = readdress(data, "elsewhere") {
            let m = Message::decode(&moved, true).expect("a readdressed envelope still decodes");
            assert_eq!(m.body, msg.body, "readdressing keeps the body");
        }
    }
});
