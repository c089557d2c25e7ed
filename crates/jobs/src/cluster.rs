//! The cluster watch that keeps the [`Registry`](crate::Registry) current: the Celery event subscription
//! (heartbeats, online/offline) and periodic `inspect active_queues`/`stats`/`active` rounds plus the workers'
//! registrations ([`Jobs::refresh`]). Both the coordinator and the API run it, so each routes on live data.

use celeriac_control::EventReceiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transport::Backoff;

use crate::Jobs;

impl Jobs {
    /// One round of `inspect active_queues`, `stats` and `active`, plus the registrations from Redis, into the
    /// registry. Returns the snapshot's (online, known) worker counts. Failures are logged; the registry keeps
    /// what it knew.
    pub async fn refresh(&self, inspect_timeout: Duration) -> (usize, usize) {
        let t = inspect_timeout;
        let c = &self.control;
        let empty = || serde_json::json!({});
        let (q, s, a) = tokio::join!(
            c.inspect("active_queues", empty(), None, t),
            c.inspect("stats", empty(), None, t),
            c.inspect("active", empty(), None, t),
        );
        let regs = self.store.registrations().await;
        let now = broker::now_f64();
        let mut reg = self.registry.lock().expect("registry");
        match (q, s, a) {
            (Ok(q), Ok(s), Ok(a)) => {
                reg.apply_active_queues(&q, now);
                reg.apply_stats(&s, now);
                reg.apply_active(&a, now);
            }
            (q, s, a) => {
                let err = [q.err(), s.err(), a.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(error = %err, "inspect round failed");
            }
        }
        match regs {
            Ok(r) => reg.set_registrations(r),
            Err(e) => tracing::warn!(error = %e, "cannot read registrations"),
        }
        let snap = reg.snapshot(now);
        (snap.iter().filter(|w| w.alive).count(), snap.len())
    }
}

/// Start the background loops shared by the coordinator and the API: the event subscription feeding the registry
/// (resubscribing when lost; after a failed attempt it waits 1 s, doubling up to 5 s) and an inspect round every
/// `inspect_interval`. `on_refresh` is called after each round with (online, known), so the caller can set its
/// gauges. Both loops end when `shutdown` changes.
pub fn spawn_cluster_watch(
    jobs: Arc<Jobs>,
    inspect_interval: Duration,
    inspect_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    on_refresh: impl Fn(usize, usize) + Send + Sync + 'static,
) -> Vec<JoinHandle<()>> {
    let events = {
        let jobs = jobs.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
            loop {
                let mut rx = match EventReceiver::new(jobs.control.transport()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to events; retrying");
                        tokio::select! {
                            _ = backoff.wait() => continue,
                            _ = stop.changed() => return,
                        }
                    }
                };
                backoff.reset();
                loop {
                    tokio::select! {
                        ev = rx.next() => match ev {
                            Some(ev) => jobs.registry.lock().expect("registry").apply_event(&ev),
                            None => break,
                        },
                        _ = stop.changed() => {
                            rx.close().await;
                            return;
                        }
                    }
                }
                tracing::warn!("event subscription lost; resubscribing");
            }
        })
    };
    let inspect = {
        let mut stop = shutdown;
        tokio::spawn(async move {
            loop {
                let (online, known) = jobs.refresh(inspect_timeout).await;
                on_refresh(online, known);
                tokio::select! {
                    _ = tokio::time::sleep(inspect_interval) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    vec![events, inspect]
}
