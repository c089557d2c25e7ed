//! Routing decisions: given the config, a snapshot of the workers the coordinator sees and a job, say where the
//! job goes (a shared queue, a worker's `<node>.dq2`, or nowhere) and why, candidate by candidate.
//!
//! Architecture invariant: this is a pure function of its inputs; time, Redis and liveness windows are the
//! caller's business (it passes `alive` and the load numbers it measured).

use serde::{Deserialize, Serialize};

use crate::config::{
    Capabilities, Effective, NoWorkerPolicy, Requirements, Strategy, WorkerConfig, WorkerSpec,
};

/// What the coordinator knows about one worker right now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveWorker {
    /// Celery node name, `name@host`.
    pub node: String,
    /// Heartbeat (or inspect reply) within the liveness window, and no `worker-offline` since.
    pub alive: bool,
    /// Seconds since the last sign of life, when any was seen.
    pub seen_ago: Option<f64>,
    /// Tasks running now (`active` of the last heartbeat).
    pub active: u32,
    /// Slots, when known (config, `inspect stats` `pool.max-concurrency`, or registration).
    pub concurrency: Option<u32>,
    /// 1-minute load average from the last heartbeat.
    pub loadavg: Option<f64>,
    /// Queues it consumes (from `inspect active_queues` or registration); empty = unknown.
    pub queues: Vec<String>,
    /// Registered with a token.
    pub registered: bool,
    /// Capabilities detected at registration (the config's win field by field).
    pub detected: Capabilities,
}

/// The job as far as routing cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Job {
    pub task: String,
    pub queue: Option<String>,
    pub requirements: Requirements,
}

/// Where a job goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// To a qualifying worker's worker-direct queue.
    Routed { node: String, queue: String },
    /// Every candidate is busy: waiting in the preferred worker's worker-direct queue.
    QueuedForPreferred { node: String, queue: String },
    /// To the shared queue (strategy `queue`, or the `shared_queue` fallback).
    SharedQueue { queue: String },
    /// Refused.
    Rejected { reason: String },
}

impl Outcome {
    /// The stable name used in metrics and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Routed { .. } => "routed",
            Outcome::QueuedForPreferred { .. } => "queued_for_preferred",
            Outcome::SharedQueue { .. } => "shared_queue",
            Outcome::Rejected { .. } => "rejected",
        }
    }

    /// The Celery queue to publish to, unless rejected.
    pub fn publish_queue(&self) -> Option<&str> {
        match self {
            Outcome::Routed { queue, .. }
            | Outcome::QueuedForPreferred { queue, .. }
            | Outcome::SharedQueue { queue } => Some(queue),
            Outcome::Rejected { .. } => None,
        }
    }

    /// The node addressed directly, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Outcome::Routed { node, .. } | Outcome::QueuedForPreferred { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// One worker considered, in the order it was considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Node name, or the config pattern when no live node matched it.
    pub node: String,
    /// The config entry that named it, if any.
    pub config_name: Option<String>,
    /// The worker's preference for the queue (0 when not configured).
    pub priority: u8,
    pub load: f64,
    /// Capability score (higher is better), for the capability strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// `None` when it qualified; otherwise why it was skipped.
    pub skipped: Option<String>,
    pub chosen: bool,
}

/// A routing decision with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub strategy: Strategy,
    /// The logical (shared) queue of the job.
    pub queue: String,
    pub outcome: Outcome,
    pub candidates: Vec<Candidate>,
    /// Sentences explaining the outcome.
    pub notes: Vec<String>,
}

/// Load of a worker: active / concurrency when the slots are known, else loadavg / cores, else 0.
pub fn load_of(w: &LiveWorker, caps: &Capabilities) -> f64 {
    match (w.concurrency, w.loadavg, caps.cpu_cores) {
        (Some(c), _, _) if c > 0 => w.active as f64 / c as f64,
        (_, Some(l), Some(cores)) if cores.0 > 0 => l / cores.0 as f64,
        _ => 0.0,
    }
}

struct Entry<'a> {
    spec: Option<&'a WorkerSpec>,
    live: Option<&'a LiveWorker>,
    node: String,
    priority: u8,
    caps: Capabilities,
    load: f64,
}

/// Decide where `job` goes.
pub fn decide(config: &WorkerConfig, workers: &[LiveWorker], job: &Job) -> Decision {
    let eff = config.effective(&job.task, job.queue.as_deref());
    let requirements = eff.requirements.and(&job.requirements);
    let mut notes = vec![format!(
        "task {:?} on queue {:?}: strategy {}",
        job.task,
        eff.queue,
        eff.strategy.as_str()
    )];
    if eff.strategy == Strategy::Queue {
        notes.push(
            "strategy queue publishes to the shared queue; any consuming worker may take it".into(),
        );
        if !requirements.is_empty() {
            notes.push("requirements are not checked with strategy queue".into());
        }
        return Decision {
            strategy: eff.strategy,
            queue: eff.queue.clone(),
            outcome: Outcome::SharedQueue { queue: eff.queue },
            candidates: Vec::new(),
            notes,
        };
    }
    let entries = entries(config, workers, &eff.queue);
    let exclusive_owners: Vec<&str> = config
        .workers
        .iter()
        .filter(|w| w.queue(&eff.queue).is_some_and(|q| q.exclusive))
        .map(|w| w.name.as_str())
        .collect();
    if !exclusive_owners.is_empty() {
        notes.push(format!(
            "queue {:?} is exclusive to {}",
            eff.queue,
            exclusive_owners.join(", ")
        ));
    }
    let threshold = eff.overload_threshold.0;
    let mut candidates = Vec::new();
    // Indexes into `candidates`: those that pass everything but the load check, and those that pass everything.
    let mut busy: Vec<usize> = Vec::new();
    let mut ready: Vec<usize> = Vec::new();
    let mut any_meets_requirements = false;
    for e in &entries {
        let mut skipped = None;
        let exclusive_elsewhere = e.spec.and_then(|s| {
            s.exclusive_queues()
                .find(|q| *q != eff.queue)
                .map(str::to_string)
        });
        let unmet = requirements.unmet_by(&e.caps);
        if unmet.is_none() {
            any_meets_requirements = true;
        }
        if !exclusive_owners.is_empty()
            && !e
                .spec
                .is_some_and(|s| exclusive_owners.contains(&s.name.as_str()))
        {
            skipped = Some(format!(
                "queue {:?} is exclusive to {}",
                eff.queue,
                exclusive_owners.join(", ")
            ));
        } else if let Some(q) = exclusive_elsewhere {
            skipped = Some(format!("reserved exclusively for queue {q:?}"));
        } else if let Some(why) = unmet {
            skipped = Some(why);
        } else if e.live.is_none() {
            skipped = Some("not seen: no events, inspect reply or registration".into());
        } else if let Some(l) = e.live.filter(|l| !l.alive) {
            skipped = Some(match l.seen_ago {
                Some(s) => format!("offline: last seen {s:.1}s ago"),
                None => "offline".into(),
            });
        } else if config.routing.require_registration && !e.live.is_some_and(|l| l.registered) {
            skipped = Some("not registered (routing.require_registration)".into());
        } else if e.load >= threshold {
            skipped = Some(format!(
                "overloaded: load {:.2} >= threshold {threshold:.2}",
                e.load
            ));
            busy.push(candidates.len());
        } else {
            ready.push(candidates.len());
        }
        let score = (eff.strategy == Strategy::Capability)
            .then(|| capability_score(e.priority, e.load, &e.caps, &requirements));
        candidates.push(Candidate {
            node: e.node.clone(),
            config_name: e.spec.map(|s| s.name.clone()),
            priority: e.priority,
            load: e.load,
            score,
            skipped,
            chosen: false,
        });
    }
    if eff.strategy == Strategy::Capability {
        // Best score first among the ready and among the busy ones (the list order breaks ties).
        let by_score = |v: &mut Vec<usize>| {
            v.sort_by(|a, b| {
                let (sa, sb) = (candidates[*a].score, candidates[*b].score);
                sb.partial_cmp(&sa).unwrap_or(std::cmp::Ordering::Equal)
            })
        };
        by_score(&mut ready);
        by_score(&mut busy);
    }
    let outcome = if let Some(&i) = ready.first() {
        candidates[i].chosen = true;
        let node = candidates[i].node.clone();
        notes.push(match eff.strategy {
            Strategy::Capability => format!("{node} has the best score among qualifying workers"),
            _ => format!("{node} is the most preferred live worker under the load threshold"),
        });
        Outcome::Routed {
            queue: direct_queue(&node),
            node,
        }
    } else {
        fallback(
            &eff,
            &mut candidates,
            &busy,
            !exclusive_owners.is_empty(),
            any_meets_requirements,
            &requirements,
            &mut notes,
        )
    };
    Decision {
        strategy: eff.strategy,
        queue: eff.queue,
        outcome,
        candidates,
        notes,
    }
}

fn fallback(
    eff: &Effective,
    candidates: &mut [Candidate],
    busy: &[usize],
    exclusive: bool,
    any_meets_requirements: bool,
    requirements: &Requirements,
    notes: &mut Vec<String>,
) -> Outcome {
    let policy = eff.when_no_worker;
    notes.push(format!(
        "no worker qualifies; when_no_worker is {}",
        policy.as_str()
    ));
    let shared = |notes: &mut Vec<String>, why: &str| {
        notes.push(why.to_string());
        Outcome::SharedQueue {
            queue: eff.queue.clone(),
        }
    };
    if !requirements.is_empty() && !any_meets_requirements {
        let reason = format!(
            "no known worker meets the requirements of queue {:?}",
            eff.queue
        );
        return match policy {
            NoWorkerPolicy::SharedQueue => shared(
                notes,
                "published to the shared queue; its consumers may not meet the requirements",
            ),
            _ => {
                notes.push(reason.clone());
                Outcome::Rejected { reason }
            }
        };
    }
    match policy {
        NoWorkerPolicy::Reject => {
            let reason = if busy.is_empty() {
                format!("no live worker qualifies for queue {:?}", eff.queue)
            } else {
                format!(
                    "all qualifying workers for queue {:?} are overloaded",
                    eff.queue
                )
            };
            notes.push(reason.clone());
            Outcome::Rejected { reason }
        }
        NoWorkerPolicy::QueueForPreferred => {
            if let Some(&i) = busy.first() {
                candidates[i].chosen = true;
                let node = candidates[i].node.clone();
                notes.push(format!(
                    "all busy: queued for the preferred worker {node}, which takes it when a slot frees"
                ));
                Outcome::QueuedForPreferred {
                    queue: direct_queue(&node),
                    node,
                }
            } else if exclusive {
                shared(
                    notes,
                    "no exclusive worker is live: published to the shared queue, which the exclusive workers consume",
                )
            } else {
                shared(
                    notes,
                    "no qualifying worker is live: published to the shared queue so nothing waits on a dead worker",
                )
            }
        }
        NoWorkerPolicy::SharedQueue => shared(notes, "published to the shared queue"),
    }
}

fn direct_queue(node: &str) -> String {
    format!("{node}.dq2")
}

/// Score for the capability strategy: preference first, then free capacity, then headroom over the requirements.
pub fn capability_score(priority: u8, load: f64, caps: &Capabilities, req: &Requirements) -> f64 {
    let free = (1.0 - load).clamp(0.0, 1.0);
    let headroom = match (req.min_memory_gb, caps.memory_gb) {
        (Some(min), Some(have)) if have.0 > 0.0 => ((have.0 - min.0) / have.0).clamp(0.0, 1.0),
        _ => 0.0,
    };
    // Prefer a tight fit slightly (keep big machines for big jobs): headroom lowers the score a little.
    let score = priority as f64 * 10.0 + free * 10.0 - headroom;
    (score * 1000.0).round() / 1000.0
}

/// The ordered candidate list: configured entries serving the queue, each expanded to its matching live nodes,
/// ordered by preference (descending), then seen before never seen, then load (ascending), then node name;
/// then live workers not in the config that consume the queue (priority 0, by load and name).
fn entries<'a>(config: &'a WorkerConfig, workers: &'a [LiveWorker], queue: &str) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    let mut claimed: Vec<&str> = Vec::new();
    for spec in config.workers.iter() {
        let Some(pref) = spec.queue(queue) else {
            continue;
        };
        let priority = pref.priority.0;
        let nodes: Vec<&LiveWorker> = workers
            .iter()
            .filter(|w| spec.matches(&w.node) && !claimed.contains(&w.node.as_str()))
            .collect();
        if nodes.is_empty() {
            out.push(Entry {
                spec: Some(spec),
                live: None,
                node: spec
                    .node
                    .clone()
                    .or_else(|| spec.hostname.as_ref().map(|h| format!("*@{h}")))
                    .unwrap_or_else(|| spec.name.clone()),
                priority,
                caps: spec.capabilities.clone(),
                load: 0.0,
            });
            continue;
        }
        for w in nodes {
            claimed.push(w.node.as_str());
            let caps = spec.capabilities.merged_with(&w.detected);
            let mut lw = w.clone();
            lw.concurrency = lw.concurrency.or(spec.concurrency);
            out.push(Entry {
                spec: Some(spec),
                live: Some(w),
                node: w.node.clone(),
                priority,
                load: load_of(&lw, &caps),
                caps,
            });
        }
    }
    for w in workers {
        if claimed.contains(&w.node.as_str())
            || config.specs_for(&w.node).next().is_some()
            || !w.queues.iter().any(|q| q == queue)
        {
            continue;
        }
        let caps = w.detected.clone();
        out.push(Entry {
            spec: None,
            live: Some(w),
            node: w.node.clone(),
            priority: 0,
            load: load_of(w, &caps),
            caps,
        });
    }
    out.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.live.is_none().cmp(&b.live.is_none()))
            .then(a.spec.is_none().cmp(&b.spec.is_none()))
            .then(
                a.load
                    .partial_cmp(&b.load)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
            .then_with(|| a.node.cmp(&b.node))
    });
    out
}
