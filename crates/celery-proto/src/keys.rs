//! Names Celery gives to exchanges and queues whatever the transport: the pidbox and reply exchanges, the event
//! exchange, a node's mailbox, reply and worker-direct queues, and the priority range.
//! The Redis-specific names (lists per priority bucket, binding sets, `unacked`, channels) are in
//! [`crate::kombu_redis`].

/// Exchange of remote-control requests (fanout).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// Exchange of remote-control replies (direct).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// Exchange of events (fanout on Redis).
pub const EVENT_EXCHANGE: &str = "celeryev";
/// celeriac's default dead-letter store: unprocessable messages kept with their reason (not a Celery name).
pub const DEAD_LETTERS: &str = "celeriac:dead_letter";

/// Clamp a message priority to `[0, 9]` as kombu does (missing or invalid means 0).
pub fn clamp_priority(p: i64) -> u8 {
    p.clamp(0, 9) as u8
}

/// A worker's remote-control mailbox queue.
pub fn pidbox_queue(node: &str) -> String {
    format!("{node}.celery.pidbox")
}

/// A control client's reply queue.
pub fn reply_queue(oid: &str) -> String {
    format!("{oid}.reply.celery.pidbox")
}

/// Celery's worker-direct queue of a node (`worker_direct`).
pub fn worker_direct_queue(node: &str) -> String {
    format!("{node}.dq2")
}
