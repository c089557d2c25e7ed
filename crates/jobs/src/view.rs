//! Job views: a job's record joined with its Celery result-backend meta ([`JobView`]), read once
//! ([`Jobs::view`]) or followed as a stream of state changes until a ready state ([`Jobs::watch`]).

use broker::{Broker, Subscriber};
use celery_proto::{ResultMeta, State};
use futures_util::Stream;
use routing::Decision;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::store::{JobRecord, JobStore, Reroute};
use crate::{JobError, Jobs};

/// How long a watch waits for a change before it yields [`JobUpdate::KeepAlive`].
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The job view. Serializes to the coordinator's `GET /api/v1/jobs/{id}` JSON, keys in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub id: String,
    pub task: Option<String>,
    /// The logical (shared) queue.
    pub queue: Option<String>,
    /// The Celery queue it was published to (the shared queue or a `<node>.dq2`).
    pub published_to: Option<String>,
    /// The Celery state (`PENDING`, `STARTED`, `SUCCESS`, ... or a custom progress state), `REJECTED` when
    /// routing found no place and nothing was stored since.
    pub state: String,
    pub ready: bool,
    /// The result, once ready.
    pub result: Option<Value>,
    pub traceback: Option<String>,
    /// RFC 3339.
    pub date_done: Option<String>,
    /// The meta of a custom (progress) state while not ready.
    pub progress: Option<Value>,
    pub worker: Option<String>,
    pub decision: Option<Decision>,
    pub reroutes: Vec<Reroute>,
    pub revoked: bool,
}

/// One item of [`Jobs::watch`].
// Items come one at a time, seconds apart: a box would only make every consumer's match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    /// The view, when it differs from the one before (the first is always sent).
    View(JobView),
    /// Nothing changed for a while (or a change notice left the view as it was).
    KeepAlive,
}

impl JobView {
    /// The view of a job from its record and its result meta (either may be missing).
    pub fn of(id: &str, record: Option<&JobRecord>, meta: Option<&ResultMeta>) -> JobView {
        let state = meta
            .map(|m| m.status.as_str().to_string())
            .unwrap_or_else(|| {
                if record.is_some_and(|r| r.published_to.is_none()) {
                    "REJECTED".into()
                } else {
                    "PENDING".into()
                }
            });
        let ready = meta.is_some_and(|m| m.status.is_ready());
        let worker = meta
            .and_then(|m| m.extended.as_ref().map(|e| e.worker.clone()))
            .or_else(|| {
                meta.filter(|_| !ready)
                    .and_then(|m| m.result.get("hostname"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| record.and_then(|r| r.node.clone()));
        let progress = meta
            .filter(|m| !m.status.is_ready() && m.status != State::Started)
            .map(|m| m.result.clone());
        JobView {
            id: id.to_string(),
            task: record.map(|r| r.task.clone()),
            queue: record.map(|r| r.queue.clone()),
            published_to: record.and_then(|r| r.published_to.clone()),
            state,
            ready,
            result: meta.filter(|_| ready).map(|m| m.result.clone()),
            traceback: meta.and_then(|m| m.traceback.clone()),
            date_done: meta.and_then(|m| m.date_done.map(|d| d.to_rfc3339())),
            progress,
            worker,
            decision: record.map(|r| r.decision.clone()),
            reroutes: record.map(|r| r.reroutes.clone()).unwrap_or_default(),
            revoked: record.is_some_and(|r| r.revoked),
        }
    }
}

/// Read record and result meta; `NotFound` if neither exists.
async fn load(store: &JobStore, backend: &Broker, id: &str) -> Result<JobView, JobError> {
    let record = store.job(id).await?;
    let meta = match backend.get_result(id).await? {
        Some(raw) => Some(
            ResultMeta::decode(&raw)
                .map_err(|e| JobError::Internal(format!("result of {id} is not readable: {e}")))?,
        ),
        None => None,
    };
    if record.is_none() && meta.is_none() {
        return Err(JobError::NotFound(id.to_string()));
    }
    Ok(JobView::of(id, record.as_ref(), meta.as_ref()))
}

impl Jobs {
    /// The job view (record + result-backend meta); `NotFound` if neither exists.
    pub async fn view(&self, id: &str) -> Result<JobView, JobError> {
        load(&self.store, &self.backend, id).await
    }

    /// A stream of views: the current one first, then one per stored state change, ending after a ready state.
    /// [`JobUpdate::KeepAlive`] comes every 15 s when nothing changes. `NotFound` (before any stream) if the job
    /// is unknown. The result channel is subscribed before the first item is read again, so no state stored in
    /// between is missed; if pub/sub is lost, the stream polls every second.
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = JobUpdate> + Send + 'static, JobError> {
        let first = self.view(id).await?;
        let sub = Subscriber::new(&self.backend).await?;
        let channel = celery_proto::kombu_redis::result_key(id);
        let updates = sub.subscribe(&channel).await?;
        let watch = Watch {
            store: self.store.clone(),
            backend: self.backend.clone(),
            id: id.to_string(),
            sub,
            channel,
            updates,
            last: first,
            phase: Phase::First,
        };
        Ok(futures_util::stream::unfold(watch, Watch::step))
    }
}

enum Phase {
    /// Nothing sent yet.
    First,
    /// Waiting for changes.
    Following,
    /// A ready view was sent: unsubscribe and end.
    Done,
}

/// The state of one [`Jobs::watch`] stream.
struct Watch {
    store: JobStore,
    backend: Broker,
    id: String,
    sub: Subscriber,
    channel: String,
    updates: UnboundedReceiver<Vec<u8>>,
    last: JobView,
    phase: Phase,
}

impl Watch {
    async fn read(&self) -> Result<JobView, JobError> {
        load(&self.store, &self.backend, &self.id).await
    }

    async fn step(mut self) -> Option<(JobUpdate, Watch)> {
        match self.phase {
            Phase::Done => {
                self.sub.unsubscribe(&self.channel).await;
                return None;
            }
            Phase::First => {
                // Subscribed before reading again, so nothing stored in between is missed.
                if let Ok(v) = self.read().await {
                    self.last = v;
                }
                self.phase = if self.last.ready {
                    Phase::Done
                } else {
                    Phase::Following
                };
                return Some((JobUpdate::View(self.last.clone()), self));
            }
            Phase::Following => {}
        }
        loop {
            let got = tokio::time::timeout(KEEP_ALIVE, self.updates.recv()).await;
            if let Ok(None) = got {
                // Pub/sub lost: poll.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let Ok(view) = self.read().await else {
                continue;
            };
            if view == self.last {
                return Some((JobUpdate::KeepAlive, self));
            }
            if view.ready {
                self.phase = Phase::Done;
            }
            self.last = view.clone();
            return Some((JobUpdate::View(view), self));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::{Job, LiveWorker, WorkerConfig};
    use serde_json::json;

    fn record(published_to: Option<&str>) -> JobRecord {
        let config = WorkerConfig::from_yaml_str("workers: []\n", "test").expect("config");
        let job = Job {
            task: "celeriac.add".into(),
            queue: None,
            requirements: Default::default(),
        };
        let no_workers: Vec<LiveWorker> = Vec::new();
        JobRecord {
            id: "j1".into(),
            task: "celeriac.add".into(),
            queue: "celery".into(),
            published_to: published_to.map(str::to_string),
            node: Some("w@h".into()),
            priority: 0,
            requirements: Default::default(),
            decision: routing::decide(&config, &no_workers, &job),
            created_at: 1.0,
            reroutes: Vec::new(),
            revoked: false,
        }
    }

    #[test]
    fn keys_come_in_the_coordinators_order() {
        let v =
            serde_json::to_value(JobView::of("j1", Some(&record(Some("celery"))), None)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "task",
                "queue",
                "published_to",
                "state",
                "ready",
                "result",
                "traceback",
                "date_done",
                "progress",
                "worker",
                "decision",
                "reroutes",
                "revoked"
            ]
        );
        assert_eq!(v["state"], "PENDING");
        assert_eq!(v["worker"], "w@h", "the routed node until a worker reports");
        assert_eq!(v["result"], Value::Null);
    }

    #[test]
    fn states_from_the_meta_and_the_record() {
        let rejected = JobView::of("j1", Some(&record(None)), None);
        assert_eq!(
            (rejected.state.as_str(), rejected.ready),
            ("REJECTED", false)
        );

        let mut progress =
            ResultMeta::new("j1", State::Custom("PROGRESS".into()), json!({"done": 3}));
        progress.date_done = None;
        let v = JobView::of("j1", None, Some(&progress));
        assert_eq!(v.state, "PROGRESS");
        assert_eq!(v.progress, Some(json!({"done": 3})));
        assert_eq!((v.result, v.task), (None, None));

        let started = ResultMeta::new("j1", State::Started, json!({"hostname": "py@h"}));
        let v = JobView::of("j1", Some(&record(Some("celery"))), Some(&started));
        assert_eq!(v.worker.as_deref(), Some("py@h"));
        assert_eq!(v.progress, None, "STARTED carries no progress");

        let done = ResultMeta::new("j1", State::Success, json!(42));
        let v = JobView::of("j1", Some(&record(Some("celery"))), Some(&done));
        assert!(v.ready && v.date_done.is_some());
        assert_eq!(v.result, Some(json!(42)));
    }
}
