//! The Redis implementation of the transport seam ([`transport::Transport`] and [`transport::ResultBackend`]) on
//! kombu's conventions, over the same commands and Lua scripts as the rest of this crate:
//!
//! - consume: the atomic pop-and-record script under backlog; when idle, `BLMOVE` into this process's in-flight
//!   list (on a connection of its own, so it never stalls pipelined traffic) and an atomic take from there;
//! - ack through the batcher ([`crate::Acker`]); requeue and restore with `redelivered` set;
//! - fanout: `PUBLISH /{db}.<exchange>/<routing key>`, subscriptions as `PSUBSCRIBE`, with kombu 5.7's informational
//!   binding entry for the subscribed queue;
//! - mailboxes: replies go to every queue bound in `_kombu.binding.<exchange>` with the routing key (kombu's
//!   `_lookup`), popped with BRPOP and never recorded (kombu consumes reply queues with `no_ack`).

use async_trait::async_trait;
use celery_proto::kombu_redis;
use celery_proto::{Envelope, Message};
use redis::aio::ConnectionManager;
use std::time::Duration;
use transport::{
    Binding, ChordPart, Delivery, Incoming, Requeue, ResultBackend, ResultKey, Subscription,
    Transport, TransportError,
};

use crate::{Broker, BrokerError};

const NAME: &str = "redis";

impl From<BrokerError> for TransportError {
    fn from(e: BrokerError) -> TransportError {
        if e.is_transient() {
            TransportError::Unavailable {
                transport: NAME,
                message: e.to_string(),
            }
        } else {
            TransportError::Failed {
                transport: NAME,
                message: e.to_string(),
            }
        }
    }
}

/// The message's delivery tag when it is a non-empty JSON string (what the record script requires).
fn string_tag(msg: &Message) -> Option<String> {
    msg.properties
        .get("delivery_tag")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A message the pop-and-record script returned: it was recorded exactly when it has a string delivery tag.
fn recorded_delivery(key: &str, raw: Vec<u8>) -> Delivery {
    let message = Message::decode(&raw, true);
    let tag = match &message {
        Ok(m) => string_tag(m),
        Err(_) => kombu_redis::string_delivery_tag(&raw),
    };
    Delivery {
        queue: kombu_redis::queue_of_key(key).to_string(),
        tag,
        raw,
        message,
    }
}

/// A Redis channel pattern for an AMQP binding key: `#` and `*` both become the glob `*`.
fn channel_pattern(db: i64, binding: &Binding) -> String {
    let glob = binding.routing_key.replace('#', "*");
    kombu_redis::fanout_channel(db, &binding.exchange, &glob)
}

/// How long the poll of a Redis without BLMOVE (older than 6.2) sleeps between looks at the queues.
const POLL_WITHOUT_BLMOVE: Duration = Duration::from_millis(250);
/// How much longer than its own timeout a wait may take before its connection is taken for dead.
const WAIT_GRACE: Duration = Duration::from_secs(2);

/// One connection of the idle wait: it blocks in `BLMOVE` on one list; `id` is its `CLIENT ID`, for the
/// `CLIENT UNBLOCK` that ends its wait when another list woke the consumer.
pub(crate) struct Watcher {
    conn: redis::aio::MultiplexedConnection,
    id: i64,
}

impl Broker {
    /// The idle path. kombu's BRPOP takes the message in the command that wakes the consumer, so a reply lost in
    /// a cut connection, a consumer killed before it records the message, or a Redis restart in between loses it.
    /// Here the wait is `BLMOVE list in-flight RIGHT LEFT` into this process's own in-flight list (it competes
    /// for messages exactly like BRPOP does), and `lua/take_in_flight.lua` then records what is there in kombu's
    /// `unacked` in one atomic step. Whatever happens in between, the message is in the queue, in the in-flight
    /// list (taken again by this process's next wait, or by any Rust worker's restore once this process's alive
    /// key has expired: `lua/sweep_in_flight.lua`), or recorded in `unacked`.
    ///
    /// BLMOVE watches one list, where BRPOP watches many: the wait runs one BLMOVE per list (every queue, every
    /// priority bucket) at once, each on a connection of its own, and the first that moves a message ends the
    /// others with `CLIENT UNBLOCK`, so a message on any list wakes the consumer at once, as with BRPOP.
    /// On a Redis older than 6.2 (no BLMOVE) the wait is a poll.
    async fn blocking_pop(
        &self,
        keys: &[String],
        max: usize,
        timeout: Duration,
    ) -> crate::Result<Vec<(String, Vec<u8>)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.renew_in_flight().await?;
        let mut woken_by: Option<String> = None;
        loop {
            if self.in_flight_dirty(None) {
                let taken = self
                    .take_in_flight_labelled(max, woken_by.as_deref().unwrap_or(&keys[0]))
                    .await?;
                if !taken.is_empty() {
                    return Ok(taken);
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            match self.wait_and_move(keys, left).await? {
                Some(key) => {
                    woken_by = Some(key);
                    continue;
                }
                None => {
                    let got = self.pop_and_record(keys, max).await?;
                    if !got.is_empty() {
                        return Ok(got);
                    }
                }
            }
        }
    }

    /// Take up to `max` messages from this process's in-flight list, labelled with the list `from` (the one whose
    /// wait moved them; the label only names the queue in a dead letter). The list stays marked while it may hold
    /// more.
    async fn take_in_flight_labelled(
        &self,
        max: usize,
        from: &str,
    ) -> crate::Result<Vec<(String, Vec<u8>)>> {
        let max = max.max(1);
        let taken = self.take_in_flight(max).await?;
        if taken.len() < max {
            self.in_flight_dirty(Some(false));
        }
        Ok(taken
            .into_iter()
            .map(|raw| (from.to_string(), raw))
            .collect())
    }

    /// Block until one of `keys` holds a message or `wait` has passed; move a message into this process's in-flight
    /// list and return the list it came from, or move nothing (None).
    async fn wait_and_move(
        &self,
        keys: &[String],
        wait: Duration,
    ) -> crate::Result<Option<String>> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        if self
            .inner
            .no_blmove
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(wait.min(POLL_WITHOUT_BLMOVE)).await;
            return Ok(None);
        }
        let mut pool = self.inner.watchers.lock().await;
        while pool.len() < keys.len() {
            let opened = tokio::time::timeout(WAIT_GRACE * 4, self.open_watcher())
                .await
                .map_err(|_| {
                    BrokerError::Unavailable("no connection for the idle wait".into())
                })??;
            pool.push(opened);
        }
        // One connection per list of this wait (the lists can be fewer than last time: a queue was cancelled).
        pool.truncate(keys.len());
        // From here until a take has recorded it, a message may sit in the in-flight list.
        self.in_flight_dirty(Some(true));
        let list = self.in_flight_list().to_string();
        let secs = wait.as_secs_f64().max(0.01);
        let mut waits: FuturesUnordered<_> = keys
            .iter()
            .zip(pool.iter())
            .enumerate()
            .map(|(i, (key, w))| {
                let mut conn = w.conn.clone();
                let mut cmd = redis::cmd("BLMOVE");
                cmd.arg(key).arg(&list).arg("RIGHT").arg("LEFT").arg(secs);
                async move {
                    // A wait that outlives its own timeout (a link that swallows replies) is given up.
                    let r = tokio::time::timeout(
                        wait + WAIT_GRACE,
                        cmd.query_async::<Option<Vec<u8>>>(&mut conn),
                    )
                    .await;
                    (i, r)
                }
            })
            .collect();
        let mut done = vec![false; keys.len()];
        let mut broken = vec![false; keys.len()];
        let mut moved: Option<String> = None;
        let mut failure: Option<BrokerError> = None;
        let mut unblocked = false;
        while let Some((i, r)) = waits.next().await {
            done[i] = true;
            match r {
                Ok(Ok(Some(_))) => {
                    moved.get_or_insert_with(|| keys[i].clone());
                }
                Ok(Ok(None)) => {}
                Ok(Err(e))
                    if e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                        && e.to_string()
                            .to_ascii_lowercase()
                            .contains("unknown command") =>
                {
                    tracing::warn!(
                        "this Redis has no BLMOVE (it came in 6.2): an idle worker polls its queues every {} ms instead",
                        POLL_WITHOUT_BLMOVE.as_millis()
                    );
                    self.inner
                        .no_blmove
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    broken[i] = true;
                    failure.get_or_insert(e.into());
                }
                Err(_) => {
                    broken[i] = true;
                    failure.get_or_insert(BrokerError::Unavailable(format!(
                        "no answer to the idle wait within {:?}",
                        wait + WAIT_GRACE
                    )));
                }
            }
            if (moved.is_some() || failure.is_some()) && !unblocked {
                unblocked = true;
                let ids: Vec<i64> = pool
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| !done[*j])
                    .map(|(_, w)| w.id)
                    .collect();
                if !self.unblock(&ids).await {
                    // Without CLIENT UNBLOCK (an ACL may forbid it) the other waits are ended by dropping their
                    // connections; a message one of them moved meanwhile is in the in-flight list.
                    drop(waits);
                    pool.clear();
                    return match (moved, failure) {
                        (Some(key), _) => Ok(Some(key)),
                        (None, Some(e)) => Err(e),
                        (None, None) => Ok(None),
                    };
                }
            }
        }
        drop(waits);
        let mut i = 0;
        pool.retain(|_| {
            let keep = !broken[i];
            i += 1;
            keep
        });
        match (moved, failure) {
            (Some(key), _) => Ok(Some(key)),
            (None, Some(e)) => Err(e),
            (None, None) => {
                self.in_flight_dirty(Some(false));
                Ok(None)
            }
        }
    }

    /// A connection for one list of the idle wait, with its `CLIENT ID`.
    async fn open_watcher(&self) -> crate::Result<Watcher> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let mut conn = self
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        Ok(Watcher { conn, id })
    }

    /// End the blocked waits of these connections (`CLIENT UNBLOCK`: they answer as if timed out). False when
    /// Redis refused.
    async fn unblock(&self, ids: &[i64]) -> bool {
        if ids.is_empty() {
            return true;
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("CLIENT").arg("UNBLOCK").arg(*id).ignore();
        }
        match pipe.query_async::<()>(&mut self.conn()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "CLIENT UNBLOCK refused; dropping the idle wait's connections instead");
                false
            }
        }
    }

    async fn reply_conn(&self) -> crate::Result<ConnectionManager> {
        let pooled = self
            .inner
            .reply_conns
            .lock()
            .expect("reply connections")
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.blocking_connection().await,
        }
    }

    fn acker(&self) -> &crate::Acker {
        self.inner
            .acker
            .get_or_init(|| crate::Acker::new(self.clone()))
    }
}

#[async_trait]
impl Transport for Broker {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn declare_queue(&self, queue: &str) -> transport::Result<()> {
        Ok(Broker::declare_queue(self, queue).await?)
    }

    async fn publish(&self, queue: &str, envelope: &Envelope) -> transport::Result<()> {
        Ok(Broker::publish(self, queue, envelope.priority, &envelope.encode()).await?)
    }

    async fn purge(&self, queue: &str) -> transport::Result<u64> {
        Ok(Broker::purge(self, queue).await?)
    }

    async fn queue_len(&self, queue: &str) -> transport::Result<Option<u64>> {
        // A Redis list that does not exist is an empty one: every queue "exists".
        let lens = self.queue_bucket_lens(queue).await?;
        Ok(Some(lens.iter().sum()))
    }

    async fn consume(
        &self,
        queues: &[String],
        max: usize,
        idle_wait: Duration,
    ) -> transport::Result<Vec<Delivery>> {
        let keys = kombu_redis::consume_keys(queues);
        if self.in_flight_dirty(None) {
            // What an earlier wait moved comes first (it left its list before anything still there).
            let taken = self.take_in_flight_labelled(max, &keys[0]).await?;
            if !taken.is_empty() {
                return Ok(taken
                    .into_iter()
                    .map(|(key, raw)| recorded_delivery(&key, raw))
                    .collect());
            }
        }
        let got = self.pop_and_record(&keys, max).await?;
        if !got.is_empty() || idle_wait.is_zero() {
            return Ok(got
                .into_iter()
                .map(|(key, raw)| recorded_delivery(&key, raw))
                .collect());
        }
        Ok(self
            .blocking_pop(&keys, max, idle_wait)
            .await?
            .into_iter()
            .map(|(key, raw)| recorded_delivery(&key, raw))
            .collect())
    }

    async fn ack(&self, tag: &str) -> transport::Result<()> {
        Ok(self.acker().ack(tag).await?)
    }

    async fn requeue(&self, tag: &str, to: Requeue) -> transport::Result<bool> {
        Ok(Broker::requeue(self, tag, to == Requeue::Front).await?)
    }

    async fn renew(&self, held: &[String]) -> transport::Result<()> {
        Ok(self.renew_leases(held).await?)
    }

    async fn recover(&self, visibility_timeout: f64) -> transport::Result<usize> {
        Ok(self.restore_visible(visibility_timeout).await?)
    }

    async fn keep_dead_letter(
        &self,
        name: &str,
        id: &str,
        record: &[u8],
        bounds: transport::DeadLetterBounds,
    ) -> transport::Result<transport::DeadLetterDropped> {
        let (too_many, too_old) =
            Broker::keep_dead_letter(self, name, id, record, bounds.max_entries, bounds.max_age)
                .await?;
        Ok(transport::DeadLetterDropped { too_many, too_old })
    }

    async fn broadcast(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> transport::Result<()> {
        let channel = kombu_redis::fanout_channel(self.db(), exchange, routing_key);
        Ok(self.publish_fanout(&channel, &envelope.encode()).await?)
    }

    async fn subscribe(&self, binding: &Binding) -> transport::Result<Subscription> {
        Transport::bind(self, binding).await?;
        let prefix = kombu_redis::fanout_channel(self.db(), &binding.exchange, "");
        let mut stream = self
            .psubscribe(&[channel_pattern(self.db(), binding)])
            .await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                let routing_key = m
                    .channel
                    .strip_prefix(&prefix)
                    .map(|rk| rk.trim_start_matches('/'))
                    .unwrap_or_default()
                    .to_string();
                let incoming = Incoming {
                    routing_key,
                    message: Message::decode(&m.payload, false),
                    raw: m.payload,
                };
                if tx.send(incoming).is_err() {
                    break;
                }
            }
        });
        Ok(Subscription::new(rx, Some(reader.abort_handle())))
    }

    async fn bind(&self, binding: &Binding) -> transport::Result<()> {
        Ok(self
            .bind_expiring(
                &binding.exchange,
                &binding.routing_key,
                &binding.queue,
                binding.expires.as_millis() as u64,
            )
            .await?)
    }

    async fn unbind(&self, binding: &Binding) -> transport::Result<()> {
        Ok(self
            .unbind_and_delete(&binding.exchange, &binding.routing_key, &binding.queue)
            .await?)
    }

    async fn send_direct(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> transport::Result<usize> {
        let members = self.bindings(exchange).await?;
        let queues: std::collections::BTreeSet<&str> = members
            .iter()
            .filter_map(|m| kombu_redis::parse_binding_member(m))
            .filter(|(rk, _, _)| *rk == routing_key)
            .map(|(_, _, q)| q)
            .collect();
        let bytes = envelope.encode();
        for q in &queues {
            self.lpush(&kombu_redis::queue_key(q, 0), &bytes).await?;
        }
        Ok(queues.len())
    }

    async fn pop(&self, queue: &str, timeout: Duration) -> transport::Result<Option<Incoming>> {
        let mut conn = self.reply_conn().await?;
        let keys = kombu_redis::queue_keys(queue).to_vec();
        let got = self
            .brpop_raw(&mut conn, &keys, timeout.as_secs_f64().max(0.01))
            .await?;
        self.inner
            .reply_conns
            .lock()
            .expect("reply connections")
            .push(conn);
        Ok(got.map(|(_, raw)| Incoming {
            routing_key: String::new(),
            message: Message::decode(&raw, false),
            raw,
        }))
    }

    fn note_error(&self, error: &TransportError) {
        if error.is_transient() {
            self.count_reconnect();
        }
    }

    fn reconnects(&self) -> u64 {
        Broker::reconnects(self)
    }
}

#[async_trait]
impl ResultBackend for Broker {
    async fn store(
        &self,
        key: ResultKey<'_>,
        meta: &[u8],
        expires_secs: u64,
    ) -> transport::Result<bool> {
        Ok(self.store_result(key.task_id, meta, expires_secs).await?)
    }

    async fn get(&self, task_id: &str) -> transport::Result<Option<Vec<u8>>> {
        Ok(self.get_result(task_id).await?)
    }

    async fn wait(&self, task_id: &str, timeout: Duration) -> transport::Result<Option<Vec<u8>>> {
        // Subscribe first, then GET, so a result stored in between is not missed (Celery's ResultConsumer order).
        let subscriber = crate::Subscriber::new(self).await?;
        let mut rx = subscriber
            .subscribe(&kombu_redis::result_key(task_id))
            .await?;
        if let Some(m) = self.get_result(task_id).await? {
            return Ok(Some(m));
        }
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(m)) => Ok(Some(m)),
            _ => Ok(self.get_result(task_id).await?),
        }
    }

    async fn chord_join(&self, part: ChordPart<'_>) -> transport::Result<bool> {
        Ok(Broker::chord_join(
            self,
            part.group_id,
            part.task_id,
            part.value,
            part.group_index,
            part.expires_secs,
            part.token,
        )
        .await?)
    }

    async fn chord_results(&self, group_id: &str) -> transport::Result<Vec<Vec<u8>>> {
        Ok(Broker::chord_results(self, group_id).await?)
    }

    async fn chord_done(
        &self,
        group_id: &str,
        token: &str,
        expires_secs: u64,
    ) -> transport::Result<()> {
        Ok(Broker::chord_done(self, group_id, token, expires_secs).await?)
    }

    fn note_error(&self, error: &TransportError) {
        Transport::note_error(self, error)
    }
}
