//! Fuzz target: Celery event messages as the event receiver and the cluster model read them: envelope, JSON body,
//! `events_of` (a `task.multi` list or one object), `EventKind::parse`, every accessor of `Event`, and
//! `ClusterState::apply` (the model the coordinator and the API route by).
#![no_main]

use celeriac_control::{ClusterState, Event};
use celery_proto::Message;
use celery_proto::event::{EventKind, events_of};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let body: Value = match Message::decode(data, false) {
        Ok(msg) => match msg.json_body() {
            Ok(v) => v,
            Err(_) => return,
        },
        Err(_) => match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    let mut state = ClusterState::new(16);
    for (i, fields) in events_of(body).into_iter().enumerate() {
        let ev = Event::new(fields, 1_700_000_000.0 + i as f64);
        let _ = EventKind::parse(ev.event_type());
        let _ = (
            ev.kind(),
            ev.hostname(),
            ev.uuid(),
            ev.timestamp(),
            ev.freq(),
        );
        let _ = (ev.active(), ev.processed(), ev.loadavg());
        state.apply(&ev);
    }
    let _ = state.alive_workers(1_700_000_100.0);
});
