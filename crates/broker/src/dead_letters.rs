//! The dead-letter store on Redis (`docs/dead-letters.md`): under a store name `N` (the worker's
//! `celeriac:dead_letter`), the hash `N:entries` maps an entry's id to its JSON record and the sorted set
//! `N:by_time` orders the ids by the time they were kept (milliseconds, Redis's own clock). Every change to both is
//! one call of `lua/dead_letters.lua` (keep with the size and age bounds, trim, drop, replay, adopt), so list, show,
//! drop and replay by id are single look-ups and atomic; a replay pushes the message and removes the entry in the
//! same script, so two operators replaying one id push it once.
//!
//! Before, entries were pushed to the plain list `N`; [`Broker::adopt_old_dead_letters`] moves such entries into
//! the new layout (each in one script call, so concurrent adopters move each once).

use std::sync::LazyLock;

use redis::AsyncCommands;

use crate::{Broker, Result};

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/dead_letters.lua")));

/// The hash of records of store `name`.
pub fn entries_key(name: &str) -> String {
    format!("{name}:entries")
}

/// The sorted set of ids by time kept of store `name`.
pub fn by_time_key(name: &str) -> String {
    format!("{name}:by_time")
}

/// One stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    pub id: String,
    /// When it was kept: Unix milliseconds by Redis's clock.
    pub kept_ms: i64,
    pub record: Vec<u8>,
}

fn ms(d: Option<std::time::Duration>) -> u64 {
    d.map(|d| d.as_millis().max(1) as u64).unwrap_or(0)
}

impl Broker {
    fn dead_letter_script(&self, name: &str, op: &str) -> redis::ScriptInvocation<'static> {
        let mut inv = SCRIPT.prepare_invoke();
        inv.key(entries_key(name)).key(by_time_key(name)).arg(op);
        inv
    }

    /// Keep `record` under `id`, then drop the oldest beyond `max_entries` (0: no bound) and those older than
    /// `max_age`; returns `(too_many, too_old)` dropped.
    pub async fn keep_dead_letter(
        &self,
        name: &str,
        id: &str,
        record: &[u8],
        max_entries: u64,
        max_age: Option<std::time::Duration>,
    ) -> Result<(u64, u64)> {
        let mut inv = self.dead_letter_script(name, "keep");
        inv.arg(id).arg(record).arg(max_entries).arg(ms(max_age));
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    /// Drop the entries beyond the bounds now (`purge --older-than` is `trim(0, Some(age))`).
    pub async fn trim_dead_letters(
        &self,
        name: &str,
        max_entries: u64,
        max_age: Option<std::time::Duration>,
    ) -> Result<(u64, u64)> {
        let mut inv = self.dead_letter_script(name, "trim");
        inv.arg(max_entries).arg(ms(max_age));
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    /// How many entries the store holds, and `limit` of them from `offset`, newest first.
    pub async fn dead_letter_page(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<StoredDeadLetter>)> {
        let by_time = by_time_key(name);
        if limit == 0 {
            let n: u64 = self.conn().zcard(&by_time).await?;
            return Ok((n, Vec::new()));
        }
        let (total, ids): (u64, Vec<(String, f64)>) = redis::pipe()
            .zcard(&by_time)
            .zrevrange_withscores(&by_time, offset as isize, (offset + limit) as isize - 1)
            .query_async(&mut self.conn())
            .await?;
        if ids.is_empty() {
            return Ok((total, Vec::new()));
        }
        let names: Vec<&str> = ids.iter().map(|(i, _)| i.as_str()).collect();
        let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(entries_key(name))
            .arg(&names)
            .query_async(&mut self.conn())
            .await?;
        // An entry dropped between the two reads is left out.
        let out = ids
            .into_iter()
            .zip(records)
            .filter_map(|((id, score), r)| {
                r.map(|record| StoredDeadLetter {
                    id,
                    kept_ms: score as i64,
                    record,
                })
            })
            .collect();
        Ok((total, out))
    }

    /// One entry by id.
    pub async fn dead_letter_get(&self, name: &str, id: &str) -> Result<Option<StoredDeadLetter>> {
        let (record, score): (Option<Vec<u8>>, Option<f64>) = redis::pipe()
            .hget(entries_key(name), id)
            .zscore(by_time_key(name), id)
            .query_async(&mut self.conn())
            .await?;
        Ok(record.map(|record| StoredDeadLetter {
            id: id.to_string(),
            kept_ms: score.unwrap_or(0.0) as i64,
            record,
        }))
    }

    /// Remove entries by id; `true` for each that was there.
    pub async fn drop_dead_letters(&self, name: &str, ids: &[String]) -> Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.dead_letter_script(name, "drop");
        for id in ids {
            inv.arg(id);
        }
        let flags: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    /// Push `message` (the original bytes) to the Redis list `queue_key` and remove entry `id`, atomically;
    /// `false` when the entry is gone (replayed or dropped by someone else: nothing is pushed).
    pub async fn replay_dead_letter(
        &self,
        name: &str,
        id: &str,
        queue_key: &str,
        message: &[u8],
    ) -> Result<bool> {
        let mut inv = self.dead_letter_script(name, "replay");
        inv.key(queue_key).arg(id).arg(message);
        let pushed: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(pushed == 1)
    }

    /// Up to `max` of the oldest entries of the old plain list `name` (celeriac before dead-letter ids), oldest
    /// first.
    pub async fn old_dead_letters(&self, name: &str, max: usize) -> Result<Vec<Vec<u8>>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut got: Vec<Vec<u8>> = self.conn().lrange(name, -(max as isize), -1).await?;
        got.reverse();
        Ok(got)
    }

    /// How many entries the old plain list `name` still holds.
    pub async fn old_dead_letters_len(&self, name: &str) -> Result<u64> {
        Ok(self.conn().llen(name).await?)
    }

    /// Move one entry (`old`, as the list holds it) of the old list into the store as `record` under `id`, kept at
    /// `kept_ms`; `false` when someone else moved it first.
    pub async fn adopt_old_dead_letter(
        &self,
        name: &str,
        old: &[u8],
        id: &str,
        kept_ms: i64,
        record: &[u8],
    ) -> Result<bool> {
        let mut inv = self.dead_letter_script(name, "adopt");
        inv.key(name).arg(old).arg(id).arg(kept_ms).arg(record);
        let moved: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(moved == 1)
    }
}
