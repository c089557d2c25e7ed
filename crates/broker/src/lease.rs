//! A fenced leader lease in Redis, for running several `celeriac-coordinator`s on one broker (one leader moves
//! messages, the others stand by), and the two fenced steps of a move out of a dead worker's `.dq2`.
//!
//! The lease is one key holding `"<term>:<token>"` with a time to live (`SET ... PX`): `token` is the holder's
//! random id, `term` a number that only grows (`INCR` of a counter key at every takeover), so a lease taken again
//! after it expired is a new term even for the same holder. Taking, renewing and giving it up are Lua scripts
//! (`lua/lease_acquire.lua`, `lua/lease_release.lua`).
//!
//! Fencing: each step of a move is a script that first checks the lease key still holds the caller's exact value
//! (`lua/fenced_take.lua`, `lua/fenced_commit.lua`), in the same atomic step as the move. A leader that was
//! paused or cut off past its lease can therefore not move anything once Redis let the lease expire, which is
//! before anyone else can take it: the deposed leader stops before the new one starts.
//! The commit also removes the original from the holding list in the same step and pushes only if it was there,
//! so a half-done move is finished once, by whoever leads next, never twice.

use celery_proto::kombu_redis;
use std::sync::LazyLock;
use std::time::Duration;

use crate::{Broker, Result};

static ACQUIRE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/lease_acquire.lua")));
static RELEASE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/lease_release.lua")));
static TAKE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/fenced_take.lua")));
static COMMIT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/fenced_commit.lua")));

/// A held lease: proof to show with every fenced command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key.
    pub key: String,
    /// The fencing term (grows at every takeover).
    pub term: u64,
    /// The holder's random token.
    pub token: String,
}

impl Fence {
    /// The exact value the lease key holds while this fence is current.
    pub fn value(&self) -> String {
        format!("{}:{}", self.term, self.token)
    }
}

/// What an attempt to take or renew a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The caller holds the lease (taken now or renewed).
    Held(Fence),
    /// Someone else holds it, in `term`.
    Other { term: u64, holder: String },
}

/// The outcome of a fenced step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced<T> {
    /// Done (or nothing to do) under a current lease.
    Done(T),
    /// The lease is not the caller's any more: nothing was changed.
    Deposed,
}

/// The outcome of a fenced commit that ran under a current lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The message left the holding list and was pushed to its target.
    Moved,
    /// The message was no longer in the holding list (that move was already finished): nothing pushed.
    AlreadyDone,
}

impl Broker {
    /// Take the lease `key` (terms counted in `term_key`) for `token`, or renew it if `token` holds it; `ttl` is
    /// how long it lasts without renewal.
    pub async fn lease_acquire(
        &self,
        key: &str,
        term_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<LeaseState> {
        let (held, term, holder): (i64, u64, String) = ACQUIRE
            .key(key)
            .key(term_key)
            .arg(token)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(if held == 1 {
            LeaseState::Held(Fence {
                key: key.to_string(),
                term,
                token: token.to_string(),
            })
        } else {
            LeaseState::Other { term, holder }
        })
    }

    /// Give the lease up if `fence` is still current (a graceful stop hands over at once). True when released.
    pub async fn lease_release(&self, fence: &Fence) -> Result<bool> {
        let n: i64 = RELEASE
            .key(&fence.key)
            .arg(fence.value())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// Whether `fence` is still the current lease (a plain read: for steps that cannot run inside a script, such
    /// as a move through RabbitMQ).
    pub async fn lease_holds(&self, fence: &Fence) -> Result<bool> {
        let cur: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&fence.key)
            .query_async(&mut self.conn())
            .await?;
        Ok(cur.as_deref() == Some(fence.value().as_bytes()))
    }

    /// Step one of a fenced move: the oldest waiting message of `queue` (highest priority bucket first) into
    /// `holding`, only while `fence` is current.
    pub async fn fenced_take(
        &self,
        fence: &Fence,
        queue: &str,
        holding: &str,
    ) -> Result<Fenced<Option<Vec<u8>>>> {
        let mut inv = TAKE.key(&fence.key);
        inv.key(holding);
        for k in kombu_redis::queue_keys(queue) {
            inv.key(k);
        }
        let got: Vec<redis::Value> = inv
            .arg(fence.value())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match got.as_slice() {
            [redis::Value::Int(1), redis::Value::BulkString(m)] => Fenced::Done(Some(m.clone())),
            [redis::Value::Int(1)] => Fenced::Done(None),
            _ => Fenced::Deposed,
        })
    }

    /// Step two of a fenced move: drop `original` from `holding` and push `rewritten` to `queue` at `priority`, in
    /// one step, only while `fence` is current and only if `original` was still held.
    pub async fn fenced_commit(
        &self,
        fence: &Fence,
        holding: &str,
        original: &[u8],
        queue: &str,
        priority: u8,
        rewritten: &[u8],
    ) -> Result<Fenced<Commit>> {
        self.declare_queue(queue).await?;
        let r: i64 = COMMIT
            .key(&fence.key)
            .key(holding)
            .key(kombu_redis::queue_key(queue, priority))
            .arg(fence.value())
            .arg(original)
            .arg(rewritten)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match r {
            1 => Fenced::Done(Commit::Moved),
            0 => Fenced::Done(Commit::AlreadyDone),
            _ => Fenced::Deposed,
        })
    }
}
