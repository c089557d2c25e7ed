//! The worker: wires the parts together and runs them. Declare the queues, restore what dead consumers left,
//! mingle, open the remote-control mailbox, serve metrics, announce itself, heartbeat, renew leases, consume; on
//! shutdown give back what has not started (warm) or everything still held (cold), and say goodbye.
//!
//! Each part gets only the handles it needs (state, transport, backend, event sink); none of them knows `Worker`.

use anyhow::Context as _;
use celery_proto::event::EventKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use transport::{SharedBackend, SharedTransport};

use crate::config::RuntimeConfig;
use crate::control::{ControlContext, Pidbox};
use crate::events::EventSink;
use crate::executor::{Executor, Pool, Shutdown};
use crate::ratelimit::RateLimiters;
use crate::state::{Phase, WorkerState};
use crate::task::{StopReason, TaskRegistry};

/// A worker ready to run (see [`Worker::run`]).
pub struct Worker {
    exec: Executor,
}

impl Worker {
    /// Build a worker on a broker and a result backend. Nothing is consumed until [`Worker::run`].
    pub fn new(
        config: RuntimeConfig,
        registry: TaskRegistry,
        transport: SharedTransport,
        backend: SharedBackend,
        shutdown: watch::Receiver<Shutdown>,
    ) -> Worker {
        let otel = config
            .tracing
            .then(|| Arc::new(crate::otel::Tracing::new()));
        let mut queues = config.queues.clone();
        let dq = celery_proto::keys::worker_direct_queue(&config.node_name);
        if !queues.contains(&dq) {
            queues.push(dq);
        }
        let state = Arc::new(WorkerState::new(
            &config.node_name,
            queues,
            config.task_events,
        ));
        let events = EventSink::new(transport.clone(), state.clone());
        Worker {
            exec: Executor {
                pool: Arc::new(Pool::new(config.concurrency)),
                prefetch: Arc::new(Semaphore::new(config.prefetch_count())),
                rate: Arc::new(RateLimiters::default()),
                config: Arc::new(config),
                registry: Arc::new(registry),
                transport,
                backend,
                state,
                events,
                shutdown,
                consumer_done: Arc::new(watch::channel(false).0),
                eta_held: Arc::default(),
                eta_bound_logged: Arc::default(),
                otel,
            },
        }
    }

    /// The worker's state (requests, revoked ids, queues, totals), shared with everything that reads it.
    pub fn state(&self) -> Arc<WorkerState> {
        self.exec.state.clone()
    }

    /// Run until shut down.
    pub async fn run(self) -> anyhow::Result<()> {
        let exec = self.exec;
        let config = exec.config.clone();
        let queues = exec.state.queues();
        for q in &queues {
            exec.transport
                .declare_queue(q)
                .await
                .with_context(|| format!("declaring queue {q}"))?;
        }
        match exec.transport.recover(config.visibility_timeout).await {
            Ok(n) if n > 0 => tracing::info!(
                restored = n,
                "restored unacknowledged messages of dead consumers"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not restore unacknowledged messages"),
        }
        if !config.without_mingle {
            crate::mingle::sync(exec.transport.clone(), &exec.state).await;
        }
        let pidbox = Pidbox::new(ControlContext {
            config: config.clone(),
            registry: exec.registry.clone(),
            state: exec.state.clone(),
            transport: exec.transport.clone(),
            backend: exec.backend.clone(),
            events: exec.events.clone(),
            pool: exec.pool.clone(),
        });
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let control = tokio::spawn(pidbox.clone().serve(subscribed.clone()));
        if tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .is_err()
        {
            tracing::warn!("pidbox not subscribed yet; remote control will answer once it is");
        }
        if let Some(port) = config.metrics_port {
            let sources = crate::metrics::Sources {
                state: exec.state.clone(),
                transport: exec.transport.clone(),
            };
            crate::metrics::serve(sources, port)
                .await
                .with_context(|| format!("serving metrics on port {port}"))?;
        }
        tracing::info!(
            node = %config.node_name,
            queues = ?queues,
            concurrency = config.concurrency,
            prefetch = config.prefetch_count(),
            transport = exec.transport.name(),
            broker = %transport::redact_url(&config.broker_url),
            "celeriac-worker ready"
        );
        exec.events
            .worker(EventKind::WorkerOnline, config.heartbeat_interval)
            .await;

        let heart = tokio::spawn(heartbeat_loop(
            exec.events.clone(),
            config.heartbeat_interval,
        ));
        let leases = tokio::spawn(lease_loop(exec.clone()));
        let consumer = crate::consumer::consume(exec.clone()).await;
        if let Err(e) = &consumer {
            tracing::error!(error = %e, "consumer stopped");
        }

        // Warm shutdown: give back what has not started, then wait for active tasks.
        exec.give_back(&[Phase::Reserved, Phase::Scheduled]).await;
        // Also wait for handlers of the last messages taken that are not tracked yet: each holds a prefetch slot
        // until its message is settled (given back, since the worker is stopping), so none is left unacknowledged.
        let mut shutdown = exec.shutdown.clone();
        loop {
            let active = exec.state.active_count();
            let unsettled = config.prefetch_count()
                - exec
                    .prefetch
                    .available_permits()
                    .min(config.prefetch_count());
            if (active == 0 && unsettled == 0) || *shutdown.borrow() == Shutdown::Cold {
                break;
            }
            if active > 0 {
                tracing::info!(
                    active,
                    "waiting for active tasks to finish (send SIGTERM again or SIGQUIT for a cold shutdown)"
                );
            }
            let pause = if active == 0 { 20 } else { 500 };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() == Shutdown::Cold {
            exec.state.requests.stop_all(StopReason::Terminated);
            exec.give_back(&[Phase::Reserved, Phase::Scheduled, Phase::Active])
                .await;
        }
        heart.abort();
        leases.abort();
        control.abort();
        pidbox.unbind().await;
        exec.events
            .worker(EventKind::WorkerOffline, config.heartbeat_interval)
            .await;
        tracing::info!("celeriac-worker stopped");
        consumer
    }
}

async fn heartbeat_loop(events: EventSink, interval: f64) {
    let period = Duration::from_secs_f64(interval.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        events.worker(EventKind::WorkerHeartbeat, interval).await;
    }
}

/// Renew the lease of every message we hold, so no consumer (Python or Rust) restores a message that a live worker
/// is still holding (ETA tasks, long acks_late tasks); and restore messages of dead consumers once their lease is
/// older than the visibility timeout.
async fn lease_loop(exec: Executor) {
    let mut tick = tokio::time::interval(exec.config.restore_interval());
    loop {
        tick.tick().await;
        let tags = exec.state.requests.held_tags();
        if !tags.is_empty()
            && let Err(e) = exec.transport.renew(&tags).await
        {
            tracing::warn!(error = %e, "could not renew message leases");
        }
        match exec.transport.recover(exec.config.visibility_timeout).await {
            Ok(n) if n > 0 => {
                tracing::info!(restored = n, "restored messages whose consumer went away")
            }
            Ok(_) => {}
            Err(e) => {
                exec.transport.note_error(&e);
                tracing::warn!(error = %e, "restore of expired messages failed");
            }
        }
    }
}
