//! Bounded parallelism for the detectors' hot loops, never on rayon's global pool: either a pool
//! of exactly the thread count the caller passes, or the rayon pool the caller already runs in
//! (a worker's pool sized by its concurrency, so concurrent tasks share those threads).
//!
//! One thread runs the plain serial code on the caller's thread. Every parallel path computes
//! the same values as the serial one (same floating-point operations in the same order per
//! value, order-independent set results), which `tests/parallel.rs` checks.

use rayon::ThreadPool;
use rayon::slice::ParallelSliceMut;

use crate::error::AnalysisError;
use crate::model::Session;

/// Where the parallel paths run.
pub(crate) enum Pool {
    /// On the caller's thread, serially.
    Serial,
    /// On a pool made for this call.
    Own(ThreadPool),
    /// On the rayon pool the caller runs in, with this many threads.
    Current(usize),
}

impl Pool {
    /// A pool for `threads` threads; 0 is an error. If the operating system refuses the
    /// threads, the work runs serially (the results are the same).
    pub(crate) fn new(threads: usize) -> Result<Pool, AnalysisError> {
        if threads == 0 {
            return Err(AnalysisError::InvalidParameter {
                name: "threads",
                reason: "must be at least 1".into(),
            });
        }
        if threads == 1 {
            return Ok(Pool::Serial);
        }
        Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("analysis-{i}"))
            .build()
            .map_or(Pool::Serial, Pool::Own))
    }

    /// The rayon pool this thread belongs to, if any (serial otherwise: never the global pool
    /// by accident).
    pub(crate) fn current() -> Pool {
        match rayon::current_thread_index() {
            Some(_) if rayon::current_num_threads() > 1 => {
                Pool::Current(rayon::current_num_threads())
            }
            _ => Pool::Serial,
        }
    }

    /// Threads the parallel paths may use (1 = serial).
    pub(crate) fn threads(&self) -> usize {
        match self {
            Pool::Serial => 1,
            Pool::Own(p) => p.current_num_threads(),
            Pool::Current(n) => *n,
        }
    }

    /// Runs `f` where rayon calls in it use this pool's threads.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            Pool::Own(p) => p.install(f),
            Pool::Serial | Pool::Current(_) => f(),
        }
    }
}

/// The sessions in session-id order (a stable sort, so equal ids keep their input order).
pub(crate) fn sorted_by_session_id<'a>(sessions: &'a [Session], pool: &Pool) -> Vec<&'a Session> {
    let mut order: Vec<&Session> = sessions.iter().collect();
    let by_id = |a: &&Session, b: &&Session| a.session_id.cmp(&b.session_id);
    if pool.threads() > 1 {
        pool.install(|| order.par_sort_by(by_id));
    } else {
        order.sort_by(by_id);
    }
    order
}
