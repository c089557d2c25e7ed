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

/// How long one wait may block on one list before the lower-priority lists (and, with several queues, the next
/// queue's list) are looked at: the idle latency of a message that is not on the list being waited on.
const WAIT_SLICE_ONE_QUEUE: Duration = Duration::from_millis(250);
const WAIT_SLICE_MANY_QUEUES: Duration = Duration::from_millis(50);
/// How much longer than its own timeout a wait may take before its connection is taken for dead.
const WAIT_GRACE: Duration = Duration::from_secs(2);

impl Broker {
    /// The idle path. kombu's BRPOP takes the message in the command that wakes the consumer, so a reply lost in
    /// a cut connection, a consumer killed before it records the message, or a Redis restart in between loses it.
    /// Here the wait is `BLMOVE queue in-flight RIGHT LEFT` into this process's own in-flight list (it competes
    /// for messages exactly like BRPOP does), and `lua/take_in_flight.lua` then records what is there in kombu's
    /// `unacked` in one atomic step. Whatever happens in between, the message is in the queue, in the in-flight
    /// list (taken again by this process's next wait, or by any Rust worker's restore once this process's alive
    /// key has expired: `lua/sweep_in_flight.lua`), or recorded in `unacked`.
    ///
    /// The wait blocks on the priority-0 list of one queue at a time (where messages without a priority go) for at
    /// most a slice, then `lua/pop_and_record.lua` looks at every list; with several queues the waits take turns.
    /// On a Redis older than 6.2 (no BLMOVE) the slices are plain sleeps.
    async fn blocking_pop(
        &self,
        queues: usize,
        keys: &[String],
        max: usize,
        timeout: Duration,
    ) -> crate::Result<Vec<(String, Vec<u8>)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let base = &keys[..queues.clamp(1, keys.len())];
        let slice = if base.len() == 1 {
            WAIT_SLICE_ONE_QUEUE
        } else {
            WAIT_SLICE_MANY_QUEUES
        };
        self.renew_in_flight().await?;
        let mut turn = 0usize;
        loop {
            if self.in_flight_dirty(None) {
                let taken = self.take_in_flight().await?;
                self.in_flight_dirty(Some(false));
                if !taken.is_empty() {
                    // Only this process moves messages into its list: they came from the list this call last waited
                    // on (leftovers of an earlier call are labelled with the first queue; the label only names the
                    // queue in a dead letter).
                    let from = &base[turn.saturating_sub(1) % base.len()];
                    return Ok(taken.into_iter().map(|raw| (from.clone(), raw)).collect());
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let moved = self
                .wait_and_move(&base[turn % base.len()], left.min(slice))
                .await?;
            turn += 1;
            if moved {
                continue;
            }
            let got = self.pop_and_record(keys, max).await?;
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }

    /// Block until `key` holds a message or `wait` has passed; move the message into this process's in-flight
    /// list (true) or move nothing (false).
    async fn wait_and_move(&self, key: &str, wait: Duration) -> crate::Result<bool> {
        if self
            .inner
            .no_blmove
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(wait).await;
            return Ok(false);
        }
        let mut slot = self.inner.consumer_conn.lock().await;
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => {
                let opened = tokio::time::timeout(WAIT_GRACE * 4, self.blocking_connection())
                    .await
                    .map_err(|_| {
                        BrokerError::Unavailable("no connection for the idle wait".into())
                    })??;
                slot.insert(opened)
            }
        };
        // From here until a take has recorded it, a message may sit in the in-flight list.
        self.in_flight_dirty(Some(true));
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(key)
            .arg(self.in_flight_list())
            .arg("RIGHT")
            .arg("LEFT")
            .arg(wait.as_secs_f64().max(0.01));
        let blmove = cmd.query_async::<Option<Vec<u8>>>(conn);
        // A wait that outlives its own timeout (a link that swallows replies) is given up and its connection
        // dropped; whatever it moved is in the in-flight list, taken by the next wait.
        let Ok(reply) = tokio::time::timeout(wait + WAIT_GRACE, blmove).await else {
            *slot = None;
            return Err(BrokerError::Unavailable(format!(
                "no answer to the idle wait within {:?}",
                wait + WAIT_GRACE
            )));
        };
        match reply {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                self.in_flight_dirty(Some(false));
                Ok(false)
            }
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    && e.to_string()
                        .to_ascii_lowercase()
                        .contains("unknown command") =>
            {
                tracing::warn!(
                    "this Redis has no BLMOVE (it came in 6.2): an idle worker polls its queues every {} ms instead",
                    WAIT_SLICE_ONE_QUEUE.as_millis()
                );
                self.in_flight_dirty(Some(false));
                self.inner
                    .no_blmove
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => {
                *slot = None;
                Err(e.into())
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
        let got = self.pop_and_record(&keys, max).await?;
        if !got.is_empty() || idle_wait.is_zero() {
            return Ok(got
                .into_iter()
                .map(|(key, raw)| recorded_delivery(&key, raw))
                .collect());
        }
        Ok(self
            .blocking_pop(queues.len(), &keys, max, idle_wait)
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
