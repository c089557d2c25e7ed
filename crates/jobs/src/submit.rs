//! Submission: validate a job request, decide, record, publish. The record is written first, so a fast worker
//! never finishes a job nobody has a record of; a rejected job is recorded too, with its decision.

use celery_proto::TaskRequest;
use chrono::{DateTime, Utc};
use routing::{Job, Outcome, Requirements};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::store::JobRecord;
use crate::{JobError, Jobs};

/// A job submission (the body of the coordinator's `POST /api/v1/jobs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub task: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    #[serde(default)]
    pub queue: Option<String>,
    /// Celery priority 0 to 9 (lower is served first on Redis).
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub requirements: Option<Value>,
    /// Seconds from now before the job may run.
    #[serde(default)]
    pub countdown: Option<f64>,
    #[serde(default)]
    pub eta: Option<DateTime<Utc>>,
    /// Seconds from now, or an RFC 3339 time, after which the job is discarded.
    #[serde(default)]
    pub expires: Option<Value>,
}

/// A validated submission: what routing decides on, and the Celery message to publish.
pub struct Validated {
    pub job: Job,
    pub request: TaskRequest,
}

/// Parse requirements with the routing crate's own rules (unknown keys and bad values refused).
pub fn parse_requirements(v: Option<&Value>) -> Result<Requirements, JobError> {
    match v {
        None | Some(Value::Null) => Ok(Requirements::default()),
        Some(v) => {
            Requirements::deserialize(v).map_err(|e| JobError::InvalidRequirements(e.to_string()))
        }
    }
}

/// Check a request and build its routing job and Celery message (`InvalidJob` / `InvalidRequirements` if bad).
pub fn validate(req: &JobRequest) -> Result<Validated, JobError> {
    let task = req.task.trim();
    if task.is_empty() {
        return Err(JobError::InvalidJob("`task` is empty".into()));
    }
    let priority = match req.priority {
        None => 0,
        Some(p) if (0..=9).contains(&p) => p as u8,
        Some(p) => {
            return Err(JobError::InvalidJob(format!(
                "priority {p} is out of range 0 to 9"
            )));
        }
    };
    if let Some(q) = &req.queue
        && (q.is_empty() || q.chars().any(char::is_whitespace))
    {
        return Err(JobError::InvalidJob(format!(
            "queue {q:?} is not a queue name"
        )));
    }
    let requirements = parse_requirements(req.requirements.as_ref())?;
    let now = Utc::now();
    let eta = match (req.countdown, req.eta) {
        (Some(_), Some(_)) => {
            return Err(JobError::InvalidJob(
                "give `countdown` or `eta`, not both".into(),
            ));
        }
        (Some(c), None) if c.is_finite() && c >= 0.0 => {
            Some(now + chrono::Duration::milliseconds((c * 1000.0) as i64))
        }
        (Some(c), None) => {
            return Err(JobError::InvalidJob(format!("countdown {c} must be >= 0")));
        }
        (None, e) => e,
    };
    let expires = match &req.expires {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => {
                Some(now + chrono::Duration::milliseconds((s * 1000.0) as i64))
            }
            _ => {
                return Err(JobError::InvalidJob(format!(
                    "expires {n} must be > 0 seconds"
                )));
            }
        },
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| JobError::InvalidJob(format!("expires {s:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        Some(other) => {
            return Err(JobError::InvalidJob(format!(
                "expires must be seconds or an RFC 3339 time, got {other}"
            )));
        }
    };
    let mut request = TaskRequest::new(task);
    request.args = req.args.clone();
    request.kwargs = req.kwargs.clone();
    request.priority = priority;
    request.eta = eta;
    request.expires = expires;
    Ok(Validated {
        job: Job {
            task: task.to_string(),
            queue: req.queue.clone(),
            requirements,
        },
        request,
    })
}

impl Jobs {
    /// Refuse a task that `allowed_tasks` in the live `worker-config.yaml` does not allow on the job's effective
    /// queue (the queue it names, else its task rule's, else the default queue).
    pub fn check_allowed(&self, job: &Job) -> Result<(), JobError> {
        let config = self.config.get();
        let queue = config.effective(&job.task, job.queue.as_deref()).queue;
        config
            .check_task_allowed(&job.task, &queue)
            .map_err(|reason| JobError::TaskNotAllowed {
                task: job.task.clone(),
                queue,
                reason,
            })
    }

    /// Validate, check the allow-list, decide, record, publish (record first). A task the allow-list refuses is
    /// neither recorded nor published ([`JobError::TaskNotAllowed`]). A routing rejection is recorded and returned
    /// as [`JobError::RoutingRejected`] with `{"job_id", "decision"}` as details. Returns the record; the caller
    /// counts its metrics from `record.decision`.
    pub async fn submit(&self, req: &JobRequest) -> Result<JobRecord, JobError> {
        let Validated { job, mut request } = validate(req)?;
        if let Err(e) = self.check_allowed(&job) {
            tracing::warn!(task = %job.task, error = %e, "job refused");
            return Err(e);
        }
        let decision = self.decide(&job);
        let mut record = JobRecord {
            id: request.id.clone(),
            task: job.task.clone(),
            queue: decision.queue.clone(),
            published_to: decision.outcome.publish_queue().map(str::to_string),
            node: decision.outcome.node().map(str::to_string),
            priority: request.priority,
            requirements: job.requirements.clone(),
            decision: decision.clone(),
            created_at: broker::now_f64(),
            reroutes: Vec::new(),
            revoked: false,
        };
        let Some(target) = decision.outcome.publish_queue().map(str::to_string) else {
            self.store.put_job(&record).await?;
            let reason = match &decision.outcome {
                Outcome::Rejected { reason } => reason.clone(),
                _ => "rejected".into(),
            };
            return Err(JobError::RoutingRejected {
                reason,
                details: serde_json::json!({"job_id": record.id, "decision": decision}),
            });
        };
        request.queue = target.clone();
        record.published_to = Some(target.clone());
        self.store.put_job(&record).await?;
        self.transport.publish(&target, &request.envelope()).await?;
        tracing::info!(id = %record.id, task = %record.task, queue = %target, outcome = decision.outcome.kind(), "job published");
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> JobRequest {
        serde_json::from_value(v).expect("a job request")
    }

    fn invalid(v: Value) -> String {
        match validate(&request(v)) {
            Err(JobError::InvalidJob(m)) => m,
            Err(e) => panic!("expected InvalidJob, got {e:?}"),
            Ok(_) => panic!("expected InvalidJob, got a valid job"),
        }
    }

    #[test]
    fn a_valid_request_becomes_a_routing_job_and_a_celery_message() {
        let v = validate(&request(json!({
            "task": " celeriac.add ", "args": [1, 2], "kwargs": {"k": 1}, "queue": "work", "priority": 7,
            "requirements": {"min_memory_gb": 8}, "countdown": 5, "expires": 60
        })))
        .unwrap();
        assert_eq!(v.job.task, "celeriac.add");
        assert_eq!(v.job.queue.as_deref(), Some("work"));
        assert_eq!(v.request.name, "celeriac.add");
        assert_eq!(v.request.args, vec![json!(1), json!(2)]);
        assert_eq!(v.request.priority, 7);
        let eta = v.request.eta.expect("eta from countdown");
        let expires = v.request.expires.expect("expires from seconds");
        assert!(expires > eta, "60 s expiry is after a 5 s countdown");
    }

    #[test]
    fn bad_submissions_are_refused_with_the_reason() {
        assert!(invalid(json!({"task": "  "})).contains("empty"));
        assert!(invalid(json!({"task": "t", "priority": 10})).contains("out of range"));
        assert!(invalid(json!({"task": "t", "queue": "a b"})).contains("not a queue name"));
        assert!(
            invalid(json!({"task": "t", "countdown": 1, "eta": "2030-01-01T00:00:00Z"}))
                .contains("not both")
        );
        assert!(invalid(json!({"task": "t", "countdown": -1})).contains(">= 0"));
        assert!(invalid(json!({"task": "t", "expires": 0})).contains("> 0 seconds"));
        assert!(invalid(json!({"task": "t", "expires": "tomorrow"})).contains("expires"));
        assert!(invalid(json!({"task": "t", "expires": true})).contains("RFC 3339"));
    }

    #[test]
    fn requirements_use_the_routing_crates_rules() {
        assert_eq!(parse_requirements(None).unwrap(), Requirements::default());
        assert_eq!(
            parse_requirements(Some(&Value::Null)).unwrap(),
            Requirements::default()
        );
        assert!(matches!(
            parse_requirements(Some(&json!({"min_memory_gb": 8}))),
            Ok(r) if r != Requirements::default()
        ));
        assert!(matches!(
            parse_requirements(Some(&json!({"no_such_key": 1}))),
            Err(JobError::InvalidRequirements(_))
        ));
    }
}
