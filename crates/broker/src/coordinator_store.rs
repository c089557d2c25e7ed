//! Redis commands the coordinator needs beyond kombu's transport: plain keys under `celeriac:` (job records,
//! registration tokens, worker registrations), and an at-least-once move of a waiting message out of a dead
//! worker's `.dq2` lists into another queue through a holding list.
//!
//! The move is two steps, each atomic: `RPOPLPUSH` from the oldest end of the source into the holding list, then
//! one `MULTI` that pushes the rewritten message to its new list and removes the original from the holding list.
//! A coordinator that dies between the steps leaves the message in the holding list, from which the next start
//! moves it again ([`Broker::held`]); nothing is lost, and no consumer can pop it twice.

use celery_proto::kombu_redis;
use redis::AsyncCommands;

use crate::{Broker, Result};

impl Broker {
    /// `SET key value [EX ttl]`.
    pub async fn kv_set(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<()> {
        let mut c = self.conn();
        match ttl_secs {
            Some(t) if t > 0 => {
                let () = c.set_ex(key, value, t).await?;
            }
            _ => {
                let () = c.set(key, value).await?;
            }
        }
        Ok(())
    }

    /// `SET key value NX [EX ttl]`: true when the key was created.
    pub async fn kv_set_nx(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX");
        if let Some(t) = ttl_secs.filter(|t| *t > 0) {
            cmd.arg("EX").arg(t);
        }
        let r: Option<String> = cmd.query_async(&mut self.conn()).await?;
        Ok(r.is_some())
    }

    /// `GET key`.
    pub async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.conn().get(key).await?)
    }

    /// `DEL key`; true when it existed.
    pub async fn kv_del(&self, key: &str) -> Result<bool> {
        let n: i64 = self.conn().del(key).await?;
        Ok(n > 0)
    }

    /// Remaining time to live in seconds (`None` without expiry or when missing).
    pub async fn kv_ttl(&self, key: &str) -> Result<Option<u64>> {
        let t: i64 = self.conn().ttl(key).await?;
        Ok((t >= 0).then_some(t as u64))
    }

    /// Every key matching a glob `pattern`, through `SCAN` (never `KEYS`).
    pub async fn kv_scan(&self, pattern: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.conn())
                .await?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Lengths of a queue's four priority lists, bucket 0 first.
    pub async fn queue_bucket_lens(&self, queue: &str) -> Result<[u64; 4]> {
        let mut pipe = redis::pipe();
        for k in kombu_redis::queue_keys(queue) {
            pipe.llen(k);
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        let mut out = [0u64; 4];
        for (o, l) in out.iter_mut().zip(lens) {
            *o = l;
        }
        Ok(out)
    }

    /// How many messages each queue has delivered and not yet acknowledged (kombu's `unacked` hash, read whole with
    /// `HVALS`: its size is bounded by the consumers' prefetch, so this stays small).
    pub async fn unacked_per_queue(&self) -> Result<std::collections::HashMap<String, u64>> {
        let entries: Vec<Vec<u8>> = self.conn().hvals(kombu_redis::UNACKED).await?;
        let mut out = std::collections::HashMap::new();
        for e in entries {
            if let Some(q) = kombu_redis::unacked_queue(&e) {
                *out.entry(q).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// A plain list's length and its first `limit` entries (`LLEN` and `LRANGE 0 limit-1` in one pipeline): the
    /// dead letters, newest first (they are pushed at the head).
    pub async fn list_head(&self, key: &str, limit: usize) -> Result<(u64, Vec<Vec<u8>>)> {
        if limit == 0 {
            let len: u64 = self.conn().llen(key).await?;
            return Ok((len, Vec::new()));
        }
        let (len, entries): (u64, Vec<Vec<u8>>) = redis::pipe()
            .llen(key)
            .lrange(key, 0, limit as isize - 1)
            .query_async(&mut self.conn())
            .await?;
        Ok((len, entries))
    }

    /// Step one of a move: the oldest waiting message of `queue` (highest priority bucket first) into `holding`.
    pub async fn take_to_holding(&self, queue: &str, holding: &str) -> Result<Option<Vec<u8>>> {
        for k in kombu_redis::queue_keys(queue) {
            let got: Option<Vec<u8>> = redis::cmd("RPOPLPUSH")
                .arg(&k)
                .arg(holding)
                .query_async(&mut self.conn())
                .await?;
            if got.is_some() {
                return Ok(got);
            }
        }
        Ok(None)
    }

    /// Step two: push `rewritten` to `queue` at `priority` and drop `original` from `holding`, in one transaction.
    pub async fn commit_from_holding(
        &self,
        holding: &str,
        original: &[u8],
        queue: &str,
        priority: u8,
        rewritten: &[u8],
    ) -> Result<()> {
        self.declare_queue(queue).await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(kombu_redis::queue_key(queue, priority), rewritten)
            .ignore()
            .lrem(holding, 1, original)
            .ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Messages left in a holding list by an interrupted move (oldest first).
    pub async fn held(&self, holding: &str) -> Result<Vec<Vec<u8>>> {
        let mut v: Vec<Vec<u8>> = self.conn().lrange(holding, 0, -1).await?;
        v.reverse();
        Ok(v)
    }
}
