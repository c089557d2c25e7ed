//! Names kombu and Celery give to Redis keys and pub/sub channels, and the priority buckets.
//!
//! Everything here is a pure function of its inputs, so the broker crate and the tests agree on every byte.

/// kombu's separator between a queue name and its priority step, and inside binding members.
pub const SEP: &str = "\x06\x16";

/// kombu's `PRIORITY_STEPS` for Redis: a message of priority p lives in the list of the largest step <= p.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// Hash of unacknowledged messages (field = delivery tag, value = `[message, exchange, routing_key]`).
pub const UNACKED: &str = "unacked";
/// Zset of unacknowledged delivery tags, scored by the time the consumer received them.
pub const UNACKED_INDEX: &str = "unacked_index";
/// Lock taken while restoring expired unacknowledged messages.
pub const UNACKED_MUTEX: &str = "unacked_mutex";

/// Exchange of remote-control requests (fanout).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// Exchange of remote-control replies (direct).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// Exchange of events (fanout on Redis).
pub const EVENT_EXCHANGE: &str = "celeryev";
/// kombu 5.7's zset of binding deadlines for queues with `x-expires`.
pub const BINDING_DEADLINES: &str = "_kombu.binding_deadlines";

/// Clamp a message priority to `[0, 9]` as kombu does (missing or invalid means 0).
pub fn clamp_priority(p: i64) -> u8 {
    p.clamp(0, 9) as u8
}

/// The priority step (bucket) a priority falls into.
pub fn priority_step(priority: u8) -> u8 {
    let p = priority.min(9);
    *PRIORITY_STEPS.iter().rev().find(|s| **s <= p).unwrap_or(&0)
}

/// The Redis list holding messages of `queue` at `priority`: `queue` for bucket 0, `queue\x06\x16<step>` otherwise.
pub fn queue_key(queue: &str, priority: u8) -> String {
    match priority_step(priority) {
        0 => queue.to_string(),
        step => format!("{queue}{SEP}{step}"),
    }
}

/// The four lists of a queue, highest priority (bucket 0) first.
pub fn queue_keys(queue: &str) -> [String; 4] {
    PRIORITY_STEPS.map(|s| queue_key(queue, s))
}

/// BRPOP key order for several queues: priority-major, so priority beats queue order.
pub fn consume_keys<S: AsRef<str>>(queues: &[S]) -> Vec<String> {
    let mut keys = Vec::with_capacity(queues.len() * 4);
    for step in PRIORITY_STEPS {
        for q in queues {
            keys.push(queue_key(q.as_ref(), step));
        }
    }
    keys
}

/// The queue a BRPOP'd key belongs to (`key.rsplit(SEP, 1)[0]` when the suffix is a step).
pub fn queue_of_key(key: &str) -> &str {
    match key.rsplit_once(SEP) {
        Some((q, step)) if step.len() == 1 && step.as_bytes()[0].is_ascii_digit() => q,
        _ => key,
    }
}

/// The binding set of an exchange.
pub fn binding_key(exchange: &str) -> String {
    format!("_kombu.binding.{exchange}")
}

/// kombu 5.7's mirror of the binding set for queues without `x-expires`.
pub fn binding_permanent_key(exchange: &str) -> String {
    format!("_kombu.binding_permanent.{exchange}")
}

/// A member of a binding set: `routing_key SEP pattern SEP queue`.
pub fn binding_member(routing_key: &str, pattern: &str, queue: &str) -> String {
    format!("{routing_key}{SEP}{pattern}{SEP}{queue}")
}

/// Split a binding member back into (routing_key, pattern, queue).
pub fn parse_binding_member(member: &str) -> Option<(&str, &str, &str)> {
    let mut parts = member.splitn(3, SEP);
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Fanout channel for `exchange` on database `db`, with the routing key appended when not empty.
pub fn fanout_channel(db: i64, exchange: &str, routing_key: &str) -> String {
    if routing_key.is_empty() {
        format!("/{db}.{exchange}")
    } else {
        format!("/{db}.{exchange}/{routing_key}")
    }
}

/// Result backend key of a task.
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
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

/// kombu's `TopicExchange.key_to_pattern`: the regex string a topic binder stores.
pub fn topic_pattern(binding_key: &str) -> String {
    let escaped: String = binding_key
        .chars()
        .flat_map(|c| {
            let esc = !(c.is_alphanumeric() || c == '_' || c == '.' || c == '#' || c == '*');
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect();
    let words: Vec<String> = escaped
        .split('.')
        .map(|w| match w {
            "*" => r".*?[^\.]".to_string(),
            "#" => ".*?".to_string(),
            other => other.to_string(),
        })
        .collect();
    format!("^{}$", words.join(r"\."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_kombu() {
        let want = [0, 0, 0, 3, 3, 3, 6, 6, 6, 9];
        for p in 0..=9u8 {
            assert_eq!(priority_step(p), want[p as usize], "priority {p}");
        }
        assert_eq!(clamp_priority(50), 9);
        assert_eq!(clamp_priority(-3), 0);
        assert_eq!(queue_key("longtail", 9).as_bytes(), b"longtail\x06\x169");
        assert_eq!(queue_key("longtail", 5), "longtail\x06\x163");
        assert_eq!(queue_key("longtail", 2), "longtail");
    }

    #[test]
    fn consume_order_is_priority_major() {
        let keys = consume_keys(&["A", "B"]);
        let want = [
            "A",
            "B",
            "A\x06\x163",
            "B\x06\x163",
            "A\x06\x166",
            "B\x06\x166",
            "A\x06\x169",
            "B\x06\x169",
        ];
        assert_eq!(keys, want);
        for k in &keys {
            assert!(["A", "B"].contains(&queue_of_key(k)));
        }
        assert_eq!(queue_of_key("w1@vm.dq2"), "w1@vm.dq2");
    }

    #[test]
    fn bindings_and_channels() {
        assert_eq!(
            binding_member("celery", "", "celery"),
            "celery\x06\x16\x06\x16celery"
        );
        assert_eq!(
            parse_binding_member("\x06\x16\x06\x16w1@vm.celery.pidbox"),
            Some(("", "", "w1@vm.celery.pidbox"))
        );
        assert_eq!(fanout_channel(0, "celery.pidbox", ""), "/0.celery.pidbox");
        assert_eq!(
            fanout_channel(3, "celeryev", "worker.heartbeat"),
            "/3.celeryev/worker.heartbeat"
        );
    }

    #[test]
    fn topic_patterns_match_kombu() {
        // The table of celery-wire.md section 3.4, computed with kombu 5.6.2.
        let cases = [
            ("worker.#", r"^worker\..*?$"),
            ("#", r"^.*?$"),
            ("*.x", r"^.*?[^\.]\.x$"),
            ("a.*.c", r"^a\..*?[^\.]\.c$"),
            ("a-b.c", r"^a\-b\.c$"),
        ];
        for (key, want) in cases {
            assert_eq!(topic_pattern(key), want, "pattern of {key}");
        }
    }
}
