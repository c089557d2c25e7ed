//! The consumer: takes messages from the worker's queues as prefetch slots free up, several at a time under a
//! backlog, and hands each to the executor. Queue order rotates so no queue starves another; a broker that goes away
//! is retried with backoff, and nothing taken is dropped on shutdown (the transport's wait is allowed to finish).

use std::time::Duration;
use transport::Backoff;

use crate::executor::{Executor, Shutdown};

/// Most messages taken in one call (the pop-and-record script's batch).
const MAX_BATCH: usize = 64;

/// How long one call waits for a message when the queues are empty.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Consume until the worker stops running; then say so through `exec.consumer_done`.
pub(crate) async fn consume(exec: Executor) -> anyhow::Result<()> {
    let result = consume_until_stopped(&exec).await;
    exec.consumer_done.send_replace(true);
    result
}

async fn consume_until_stopped(exec: &Executor) -> anyhow::Result<()> {
    let mut rotation = 0usize;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut shutdown = exec.shutdown.clone();
    while *shutdown.borrow() == Shutdown::Running {
        // Wait for at least one prefetch slot, then take every free one (up to a batch).
        let permit = tokio::select! {
            p = exec.prefetch.clone().acquire_owned() => p.map_err(|_| anyhow::anyhow!("prefetch semaphore closed"))?,
            _ = shutdown.changed() => continue,
        };
        permit.forget();
        let free = exec.prefetch.available_permits().min(MAX_BATCH - 1);
        let extra = match exec.prefetch.clone().try_acquire_many_owned(free as u32) {
            Ok(p) if free > 0 => {
                p.forget();
                free
            }
            _ => 0,
        };
        let want = 1 + extra;
        let mut queues = exec.state.queues();
        if !queues.is_empty() {
            let n = queues.len();
            queues.rotate_left(rotation % n);
        }
        rotation = rotation.wrapping_add(1);
        match exec.transport.consume(&queues, want, IDLE_WAIT).await {
            Ok(got) => {
                backoff.reset();
                let n = got.len();
                for d in got {
                    exec.dispatch(d);
                }
                if n < want {
                    exec.prefetch.add_permits(want - n);
                }
            }
            Err(e) => {
                exec.prefetch.add_permits(want);
                exec.transport.note_error(&e);
                tracing::warn!(error = %e, retry_in = ?backoff.peek(), "broker unavailable; retrying");
                backoff.wait().await;
            }
        }
    }
    Ok(())
}
