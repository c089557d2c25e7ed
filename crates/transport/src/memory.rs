//! An in-process transport and result backend, for tests of the runtime that run in milliseconds under
//! `tokio::time::pause()`. It behaves like kombu's Redis transport where the runtime can tell: four priority
//! buckets served lowest number first, first in first out inside a bucket, unacknowledged messages held until acked
//! or requeued (to the back, or restored to the front, marked redelivered), fanout to subscribers, mailbox queues
//! reached through bindings. Messages are stored as the same kombu JSON envelopes the Redis transport writes.
//!
//! Tests look inside with [`MemoryBroker::queued`], [`MemoryBroker::unacked`], [`MemoryBroker::result`],
//! [`MemoryBroker::dead_letters`], and can make the next calls fail with [`MemoryBroker::fail_next`].

use async_trait::async_trait;
use celery_proto::kombu_redis::priority_step;
use celery_proto::{Envelope, Message};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

use crate::{
    Binding, ChordPart, Delivery, Incoming, Requeue, ResultBackend, Subscription, Transport,
    TransportError,
};

const NAME: &str = "memory";

#[derive(Default)]
struct Queue {
    /// Buckets by priority step (0, 3, 6, 9); front = next to deliver.
    buckets: BTreeMap<u8, VecDeque<Vec<u8>>>,
}

impl Queue {
    fn push(&mut self, priority: u8, raw: Vec<u8>, to: Requeue) {
        let bucket = self.buckets.entry(priority_step(priority)).or_default();
        match to {
            Requeue::Back => bucket.push_back(raw),
            Requeue::Front => bucket.push_front(raw),
        }
    }

    fn len(&self) -> usize {
        self.buckets.values().map(VecDeque::len).sum()
    }
}

struct Held {
    queue: String,
    priority: u8,
    raw: Vec<u8>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    declared: Vec<String>,
    unacked: BTreeMap<String, Held>,
    bindings: Vec<Binding>,
    subscribers: Vec<(Binding, mpsc::UnboundedSender<Incoming>)>,
    mailboxes: HashMap<String, VecDeque<Vec<u8>>>,
    /// Oldest first: when kept, id, record.
    dead_letters: HashMap<String, VecDeque<(tokio::time::Instant, String, Vec<u8>)>>,
    results: HashMap<String, Vec<u8>>,
    /// The `reply_to` each result was stored with, when it had one.
    reply_tos: HashMap<String, String>,
    chords: HashMap<String, Vec<(i64, Vec<u8>)>>,
    chord_sizes: HashMap<String, usize>,
    acks: u64,
}

/// The in-memory broker and result backend (cheap to clone; clones share everything).
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    beyond: Arc<std::sync::atomic::AtomicI64>,
    failures: Arc<AtomicUsize>,
    errors_seen: Arc<AtomicU64>,
}

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory broker state")
    }

    /// Make the next `n` broker or backend calls fail as if the service were down.
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    fn check(&self) -> crate::Result<()> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(TransportError::Unavailable {
                transport: NAME,
                message: "injected failure".into(),
            });
        }
        Ok(())
    }

    /// How many messages wait in a queue (all priorities).
    pub fn queued(&self, queue: &str) -> usize {
        self.lock().queues.get(queue).map(Queue::len).unwrap_or(0)
    }

    /// The waiting messages of a queue, decoded, in delivery order.
    pub fn messages(&self, queue: &str) -> Vec<Message> {
        let st = self.lock();
        let Some(q) = st.queues.get(queue) else {
            return Vec::new();
        };
        q.buckets
            .values()
            .flatten()
            .filter_map(|raw| Message::decode(raw, true).ok())
            .collect()
    }

    /// Delivery tags held unacknowledged.
    pub fn unacked(&self) -> Vec<String> {
        self.lock().unacked.keys().cloned().collect()
    }

    /// How many acks were received.
    pub fn acks(&self) -> u64 {
        self.lock().acks
    }

    /// Queues declared so far, in order.
    pub fn declared(&self) -> Vec<String> {
        self.lock().declared.clone()
    }

    /// A stored result meta, parsed.
    pub fn result(&self, task_id: &str) -> Option<Value> {
        self.lock()
            .results
            .get(task_id)
            .and_then(|m| serde_json::from_slice(m).ok())
    }

    /// How many messages the consumer says it holds outside its prefetch budget (ETA tasks).
    pub fn held_beyond_prefetch(&self) -> i64 {
        self.beyond.load(Ordering::SeqCst)
    }

    /// The `reply_to` the result of `task_id` was stored with (where `rpc://` would have sent it).
    pub fn result_reply_to(&self, task_id: &str) -> Option<String> {
        self.lock().reply_tos.get(task_id).cloned()
    }

    /// Records written to a dead-letter store, parsed.
    pub fn dead_letters(&self, name: &str) -> Vec<Value> {
        self.lock()
            .dead_letters
            .get(name)
            .map(|v| {
                v.iter()
                    .filter_map(|(_, _, r)| serde_json::from_slice(r).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Put raw bytes in a queue as if another client had published them (malformed input tests).
    pub fn push_raw(&self, queue: &str, raw: Vec<u8>) {
        self.lock()
            .queues
            .entry(queue.to_string())
            .or_default()
            .push(0, raw, Requeue::Back);
        self.changed.notify_waiters();
    }

    /// Chord sizes are known to Celery's Redis backend from the header message (`chord_size`); tests set them.
    pub fn set_chord_size(&self, group_id: &str, size: usize) {
        self.lock().chord_sizes.insert(group_id.to_string(), size);
    }

    fn take(&self, queues: &[String], max: usize) -> Vec<Delivery> {
        let mut st = self.lock();
        let mut out = Vec::new();
        // Priority-major like kombu's BRPOP key order: every queue's bucket 0, then bucket 3, ...
        for step in celery_proto::kombu_redis::PRIORITY_STEPS {
            for q in queues {
                while out.len() < max {
                    let Some(raw) = st
                        .queues
                        .get_mut(q)
                        .and_then(|queue| queue.buckets.get_mut(&step))
                        .and_then(VecDeque::pop_front)
                    else {
                        break;
                    };
                    let message = Message::decode(&raw, true);
                    let tag = message.as_ref().ok().map(|m| m.delivery_tag.clone());
                    if let (Some(t), Ok(m)) = (&tag, &message) {
                        st.unacked.insert(
                            t.clone(),
                            Held {
                                queue: q.clone(),
                                priority: m.priority,
                                raw: raw.clone(),
                            },
                        );
                    }
                    out.push(Delivery {
                        queue: q.clone(),
                        tag,
                        raw,
                        message,
                    });
                }
            }
        }
        out
    }
}

fn decode_incoming(routing_key: &str, raw: Vec<u8>) -> Incoming {
    Incoming {
        routing_key: routing_key.to_string(),
        message: Message::decode(&raw, false),
        raw,
    }
}

fn matches(binding: &Binding, exchange: &str, routing_key: &str) -> bool {
    if binding.exchange != exchange {
        return false;
    }
    if binding.routing_key.is_empty() || binding.routing_key == "#" {
        return true;
    }
    topic_matches(&binding.routing_key, routing_key)
}

/// AMQP topic matching: words split on `.`, `*` is exactly one word, `#` is zero or more words.
fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], words: &[&str]) -> bool {
        match p.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => (0..=words.len()).any(|i| go(rest, &words[i..])),
            Some((&"*", rest)) => !words.is_empty() && go(rest, &words[1..]),
            Some((w, rest)) => words.first() == Some(w) && go(rest, &words[1..]),
        }
    }
    let p: Vec<&str> = binding_key.split('.').collect();
    let w: Vec<&str> = routing_key.split('.').collect();
    go(&p, &w)
}

#[async_trait]
impl Transport for MemoryBroker {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn declare_queue(&self, queue: &str) -> crate::Result<()> {
        self.check()?;
        let mut st = self.lock();
        if !st.declared.iter().any(|q| q == queue) {
            st.declared.push(queue.to_string());
        }
        st.queues.entry(queue.to_string()).or_default();
        Ok(())
    }

    async fn publish(&self, queue: &str, envelope: &Envelope) -> crate::Result<()> {
        self.check()?;
        self.lock()
            .queues
            .entry(queue.to_string())
            .or_default()
            .push(envelope.priority, envelope.encode(), Requeue::Back);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn consume(
        &self,
        queues: &[String],
        max: usize,
        idle_wait: Duration,
    ) -> crate::Result<Vec<Delivery>> {
        self.check()?;
        let deadline = tokio::time::Instant::now() + idle_wait;
        loop {
            let notified = self.changed.notified();
            let got = self.take(queues, max.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn purge(&self, queue: &str) -> crate::Result<u64> {
        self.check()?;
        let mut st = self.lock();
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(0);
        };
        let n = q.len() as u64;
        q.buckets.clear();
        Ok(n)
    }

    async fn queue_len(&self, queue: &str) -> crate::Result<Option<u64>> {
        self.check()?;
        Ok(self.lock().queues.get(queue).map(|q| q.len() as u64))
    }

    fn hold_beyond_prefetch(&self, delta: i64) {
        self.beyond.fetch_add(delta, Ordering::SeqCst);
    }

    async fn ack(&self, tag: &str) -> crate::Result<()> {
        self.check()?;
        let mut st = self.lock();
        st.unacked.remove(tag);
        st.acks += 1;
        Ok(())
    }

    async fn requeue(&self, tag: &str, to: Requeue) -> crate::Result<bool> {
        self.check()?;
        let mut st = self.lock();
        let Some(held) = st.unacked.remove(tag) else {
            return Ok(false);
        };
        let raw = celery_proto::kombu_redis::mark_redelivered(&held.raw).unwrap_or(held.raw);
        st.queues
            .entry(held.queue)
            .or_default()
            .push(held.priority, raw, to);
        drop(st);
        self.changed.notify_waiters();
        Ok(true)
    }

    async fn keep_dead_letter(
        &self,
        name: &str,
        id: &str,
        record: &[u8],
        bounds: crate::DeadLetterBounds,
    ) -> crate::Result<crate::DeadLetterDropped> {
        self.check()?;
        let now = tokio::time::Instant::now();
        let mut st = self.lock();
        let kept = st.dead_letters.entry(name.to_string()).or_default();
        kept.retain(|(_, i, _)| i != id);
        kept.push_back((now, id.to_string(), record.to_vec()));
        let mut dropped = crate::DeadLetterDropped::default();
        if let Some(age) = bounds.max_age {
            while kept
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > age)
            {
                kept.pop_front();
                dropped.too_old += 1;
            }
        }
        while bounds.max_entries > 0 && kept.len() as u64 > bounds.max_entries {
            kept.pop_front();
            dropped.too_many += 1;
        }
        Ok(dropped)
    }

    async fn broadcast(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> crate::Result<()> {
        self.check()?;
        let raw = envelope.encode();
        let mut st = self.lock();
        st.subscribers.retain(|(b, tx)| {
            !matches(b, exchange, routing_key)
                || tx.send(decode_incoming(routing_key, raw.clone())).is_ok()
        });
        Ok(())
    }

    async fn subscribe(&self, binding: &Binding) -> crate::Result<Subscription> {
        self.check()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        if !st.bindings.contains(binding) {
            st.bindings.push(binding.clone());
        }
        st.subscribers.push((binding.clone(), tx));
        Ok(Subscription::new(rx, None))
    }

    async fn bind(&self, binding: &Binding) -> crate::Result<()> {
        self.check()?;
        let mut st = self.lock();
        if !st.bindings.contains(binding) {
            st.bindings.push(binding.clone());
        }
        Ok(())
    }

    async fn unbind(&self, binding: &Binding) -> crate::Result<()> {
        self.check()?;
        let mut st = self.lock();
        st.bindings.retain(|b| b != binding);
        st.subscribers.retain(|(b, _)| b != binding);
        st.mailboxes.remove(&binding.queue);
        Ok(())
    }

    async fn send_direct(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> crate::Result<usize> {
        self.check()?;
        let raw = envelope.encode();
        let mut st = self.lock();
        let queues: Vec<String> = st
            .bindings
            .iter()
            .filter(|b| b.exchange == exchange && b.routing_key == routing_key)
            .map(|b| b.queue.clone())
            .collect();
        for q in &queues {
            st.mailboxes
                .entry(q.clone())
                .or_default()
                .push_back(raw.clone());
        }
        drop(st);
        self.changed.notify_waiters();
        Ok(queues.len())
    }

    async fn pop(&self, queue: &str, timeout: Duration) -> crate::Result<Option<Incoming>> {
        self.check()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let got = self
                .lock()
                .mailboxes
                .get_mut(queue)
                .and_then(VecDeque::pop_front);
            if let Some(raw) = got {
                return Ok(Some(decode_incoming("", raw)));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    fn note_error(&self, error: &TransportError) {
        if error.is_transient() {
            self.errors_seen.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reconnects(&self) -> u64 {
        self.errors_seen.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ResultBackend for MemoryBroker {
    async fn store(
        &self,
        key: crate::ResultKey<'_>,
        meta: &[u8],
        _expires_secs: u64,
    ) -> crate::Result<bool> {
        let task_id = key.task_id;
        self.check()?;
        let mut st = self.lock();
        if let Some(r) = key.reply_to {
            st.reply_tos.insert(task_id.to_string(), r.to_string());
        }
        let done = st
            .results
            .get(task_id)
            .and_then(|m| serde_json::from_slice::<Value>(m).ok())
            .is_some_and(|v| v["status"] == "SUCCESS");
        if done {
            return Ok(false);
        }
        st.results.insert(task_id.to_string(), meta.to_vec());
        drop(st);
        self.changed.notify_waiters();
        Ok(true)
    }

    async fn get(&self, task_id: &str) -> crate::Result<Option<Vec<u8>>> {
        self.check()?;
        Ok(self.lock().results.get(task_id).cloned())
    }

    async fn chord_join(&self, part: ChordPart<'_>) -> crate::Result<bool> {
        self.check()?;
        let mut st = self.lock();
        let size = st.chord_sizes.get(part.group_id).copied();
        let parts = st.chords.entry(part.group_id.to_string()).or_default();
        parts.push((part.group_index.unwrap_or(i64::MAX), part.value.to_vec()));
        Ok(size.is_some_and(|n| parts.len() == n))
    }

    async fn chord_results(&self, group_id: &str) -> crate::Result<Vec<Vec<u8>>> {
        self.check()?;
        let mut parts = self
            .lock()
            .chords
            .get(group_id)
            .cloned()
            .unwrap_or_default();
        parts.sort_by_key(|(i, _)| *i);
        Ok(parts.into_iter().map(|(_, v)| v).collect())
    }

    async fn chord_done(&self, group_id: &str, _token: &str, _expires: u64) -> crate::Result<()> {
        self.check()?;
        self.lock().chords.remove(group_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[tokio::test(start_paused = true)]
    async fn passes_the_transport_conformance_checks() {
        let b = MemoryBroker::new();
        crate::conformance::queues(&b, "c1").await;
        crate::conformance::idle_wait_and_queue_order(&b, "c2").await;
        crate::conformance::fanout_and_mailboxes(&b, "c3").await;
        crate::conformance::dead_letters(&b, "c4").await;
        assert_eq!(b.dead_letters("c4.dead")[0]["reason"], "test");
        crate::conformance::results(&b, "c5").await;
        crate::conformance::chords(&b, "c6", |gid, n| b.set_chord_size(gid, n)).await;
    }

    fn env(priority: u8, body: &str) -> Envelope {
        let mut e = Envelope::new(body.as_bytes().to_vec(), Map::new(), "", "q");
        e.priority = priority;
        e
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_fifo_and_requeue_front_or_back() {
        let b = MemoryBroker::new();
        let q = vec!["q".to_string()];
        b.publish("q", &env(9, "\"low\"")).await.unwrap();
        b.publish("q", &env(0, "\"a\"")).await.unwrap();
        b.publish("q", &env(0, "\"b\"")).await.unwrap();
        let got = b.consume(&q, 2, Duration::ZERO).await.unwrap();
        let bodies: Vec<String> = got
            .iter()
            .map(|d| String::from_utf8(d.message.as_ref().unwrap().body.clone()).unwrap())
            .collect();
        assert_eq!(bodies, vec!["\"a\"", "\"b\""]);
        assert_eq!(b.unacked().len(), 2);
        // Restore "b" to the front: it comes before "low" again, marked redelivered.
        assert!(
            b.requeue(got[1].tag.as_ref().unwrap(), Requeue::Front)
                .await
                .unwrap()
        );
        b.ack(got[0].tag.as_ref().unwrap()).await.unwrap();
        let next = b.consume(&q, 1, Duration::ZERO).await.unwrap();
        let m = next[0].message.as_ref().unwrap();
        assert_eq!(m.body, b"\"b\"");
        assert!(m.redelivered);
        assert!(b.unacked().len() == 1 && b.acks() == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn consume_waits_for_a_publish_or_gives_up() {
        let b = MemoryBroker::new();
        let q = vec!["q".to_string()];
        assert!(
            b.consume(&q, 4, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
        let b2 = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            b2.publish("q", &env(0, "1")).await.unwrap();
        });
        assert_eq!(
            b.consume(&q, 4, Duration::from_secs(5))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fanout_reaches_matching_subscribers_and_direct_reaches_bound_queues() {
        let b = MemoryBroker::new();
        let all = Binding::new("celeryev", "#", "celeryev.x", Duration::from_secs(60));
        let tasks = Binding::new("celeryev", "task.#", "celeryev.y", Duration::from_secs(60));
        let mut s_all = b.subscribe(&all).await.unwrap();
        let mut s_tasks = b.subscribe(&tasks).await.unwrap();
        b.broadcast("celeryev", "worker.heartbeat", &env(0, "{}"))
            .await
            .unwrap();
        b.broadcast("celeryev", "task.multi", &env(0, "{}"))
            .await
            .unwrap();
        assert_eq!(s_all.next().await.unwrap().routing_key, "worker.heartbeat");
        assert_eq!(s_all.next().await.unwrap().routing_key, "task.multi");
        assert_eq!(s_tasks.next().await.unwrap().routing_key, "task.multi");

        let reply = Binding::new(
            "reply.celery.pidbox",
            "oid",
            "oid.reply.celery.pidbox",
            Duration::from_secs(60),
        );
        assert_eq!(
            b.send_direct("reply.celery.pidbox", "oid", &env(0, "1"))
                .await
                .unwrap(),
            0
        );
        b.bind(&reply).await.unwrap();
        assert_eq!(
            b.send_direct("reply.celery.pidbox", "oid", &env(0, "1"))
                .await
                .unwrap(),
            1
        );
        assert!(
            b.pop(&reply.queue, Duration::from_millis(10))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.pop(&reply.queue, Duration::from_millis(10))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn success_is_never_overwritten_and_failures_can_be_injected() {
        let b = MemoryBroker::new();
        assert!(
            b.store("t".into(), br#"{"status": "SUCCESS"}"#, 0)
                .await
                .unwrap()
        );
        assert!(
            !b.store("t".into(), br#"{"status": "FAILURE"}"#, 0)
                .await
                .unwrap()
        );
        b.fail_next(1);
        assert!(b.get("t").await.unwrap_err().is_transient());
        assert_eq!(b.result("t").unwrap()["status"], "SUCCESS");
    }
}
