//! A short-lived answer cache for the read endpoints, with single flight.
//!
//! Honeypot statistics change when a loader run commits (every few minutes), while dashboards and scripts ask the
//! same questions many times a second. An answer is kept for `ttl` (default 5 s, `--answer-cache-secs`; 0 turns it
//! off), keyed by the route and its exact query string, and shared by every key (no answer depends on who asks;
//! authentication and rate limits run before the cache). Concurrent requests for an answer that is not cached wait
//! for one computation instead of each running the query (no stampede on PostgreSQL). Errors are never cached.

use actix_web::web::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use crate::error::ApiError;

struct Entry {
    created: Instant,
    answer: OnceCell<Bytes>,
}

pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// At most this many answers are kept; beyond it, expired ones are dropped (and all, if none expired).
const MAX_ENTRIES: usize = 4096;

impl AnswerCache {
    pub fn new(ttl: Duration) -> AnswerCache {
        AnswerCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The JSON answer for `key`: cached if fresh, else computed once by `compute` for every concurrent asker.
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        key: String,
        compute: F,
    ) -> Result<Bytes, ApiError>
    where
        T: serde::Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let to_bytes = |v: T| {
            serde_json::to_vec(&v)
                .map(Bytes::from)
                .map_err(|e| ApiError::Internal(format!("serialising an answer: {e}")))
        };
        if self.ttl.is_zero() {
            return to_bytes(compute().await?);
        }
        let entry = {
            let mut map = self.entries.lock().expect("answer cache");
            match map.get(&key) {
                Some(e) if e.created.elapsed() < self.ttl => e.clone(),
                _ => {
                    if map.len() >= MAX_ENTRIES {
                        let ttl = self.ttl;
                        map.retain(|_, e| e.created.elapsed() < ttl);
                        if map.len() >= MAX_ENTRIES {
                            map.clear();
                        }
                    }
                    let e = Arc::new(Entry {
                        created: Instant::now(),
                        answer: OnceCell::new(),
                    });
                    map.insert(key, e.clone());
                    e
                }
            }
        };
        let answer = entry
            .answer
            .get_or_try_init(|| async { to_bytes(compute().await?) })
            .await?;
        Ok(answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_misses_compute_once_and_errors_are_not_kept() {
        let cache = Arc::new(AnswerCache::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, runs) = (cache.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute("k".into(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ApiError>(serde_json::json!({"n": 1}))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(&t.await.unwrap()[..], br#"{"n":1}"#);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let failed = cache
            .get_or_compute("e".into(), || async {
                Err::<serde_json::Value, _>(ApiError::DatabaseTimeout)
            })
            .await;
        assert!(failed.is_err());
        let ok = cache
            .get_or_compute("e".into(), || async { Ok::<_, ApiError>(2) })
            .await
            .unwrap();
        assert_eq!(&ok[..], b"2");
    }

    #[tokio::test]
    async fn a_zero_ttl_computes_every_time() {
        let cache = AnswerCache::new(Duration::ZERO);
        for i in 0..3 {
            let b = cache
                .get_or_compute("k".into(), || async move { Ok::<_, ApiError>(i) })
                .await
                .unwrap();
            assert_eq!(b, Bytes::from(i.to_string()));
        }
    }
}
