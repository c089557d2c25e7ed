//! The `worker-config.yaml` model: workers with their queue preferences and capabilities, worker profiles, and
//! routing rules; parsed purely from a string, with unknown keys and bad values reported with line and column.
//!
//! Value checks run inside deserialization (newtypes and `try_from`), so `yaml_serde` attaches the position of
//! the offending node; checks that span several entries run on the containing node and point at it.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a config could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The YAML is malformed, has an unknown key, or a value is out of range.
    #[error("{source_name}:{line}:{column}: {message}")]
    Invalid {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The YAML has no position for the error (for example an empty document).
    #[error("{source_name}: {message}")]
    Unlocated {
        source_name: String,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{source_name}: no profile named {name:?} (known: {known})")]
    UnknownProfile {
        source_name: String,
        name: String,
        known: String,
    },
}

impl ConfigError {
    /// Line and column (1-based) when known.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Format version; only 1 exists.
    #[serde(default = "one")]
    pub version: Version,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    pub routing: RoutingConfig,
}

fn one() -> Version {
    Version(1)
}

/// The config format version (must be 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Version(pub u32);

impl TryFrom<u32> for Version {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        // (A fractional version never gets here: the visitor refuses non-integers.)
        if v == 1 {
            Ok(Version(1))
        } else {
            Err(format!(
                "unsupported version {v}: this build reads version 1"
            ))
        }
    }
}

/// The worker list, with names unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workers(pub Vec<WorkerSpec>);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of workers")
            }
            // Checked inside the visitor so the error carries the list's position.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Workers, A::Error> {
                let mut v: Vec<WorkerSpec> = Vec::new();
                while let Some(w) = seq.next_element::<WorkerSpec>()? {
                    if let Some(i) = v.iter().position(|o| o.name == w.name) {
                        return Err(serde::de::Error::custom(format!(
                            "worker name {:?} is used twice (entries {} and {})",
                            w.name,
                            i + 1,
                            v.len() + 1
                        )));
                    }
                    v.push(w);
                }
                Ok(Workers(v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl std::ops::Deref for Workers {
    type Target = [WorkerSpec];
    fn deref(&self) -> &[WorkerSpec] {
        &self.0
    }
}

/// One worker (or a family of workers matched by a node-name pattern).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawWorker")]
pub struct WorkerSpec {
    /// The config's own name for the entry (used in explanations and the API).
    pub name: String,
    /// A glob (`*`, `?`, `[..]`) on the Celery node name, e.g. `gpu@*` or `celery@mac-studio`.
    pub node: Option<String>,
    /// The host part of the node name (after `@`), matched exactly.
    pub hostname: Option<String>,
    pub queues: Vec<QueuePref>,
    pub capabilities: Capabilities,
    /// Slots the worker runs at once, when known from the config (else from `inspect stats` or registration).
    pub concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(default)]
    name: Option<Name>,
    #[serde(default)]
    node: Option<Name>,
    #[serde(default, alias = "host")]
    hostname: Option<Name>,
    #[serde(default)]
    queues: Vec<QueuePref>,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    concurrency: Option<Concurrency>,
}

impl TryFrom<RawWorker> for WorkerSpec {
    type Error = String;
    fn try_from(r: RawWorker) -> Result<Self, String> {
        // The name defaults to the node pattern, then the host name.
        let name = r
            .name
            .as_ref()
            .or(r.node.as_ref())
            .or(r.hostname.as_ref())
            .map(|n| n.0.clone())
            .ok_or_else(|| {
                "a worker needs at least one of `name`, `node`, `hostname`".to_string()
            })?;
        let mut seen = BTreeSet::new();
        for q in &r.queues {
            if !seen.insert(q.name.as_str()) {
                return Err(format!("worker {name:?} lists queue {:?} twice", q.name));
            }
        }
        Ok(WorkerSpec {
            node: r.node.map(|n| n.0),
            hostname: r.hostname.map(|n| n.0),
            name,
            queues: r.queues,
            capabilities: r.capabilities,
            concurrency: r.concurrency.map(|c| c.0),
        })
    }
}

impl WorkerSpec {
    /// Does this entry describe the Celery node `node` (`name@host`)?
    /// With neither `node` nor `hostname` set, the entry's `name` is taken as the node name pattern.
    pub fn matches(&self, node: &str) -> bool {
        let host = node.split_once('@').map(|(_, h)| h).unwrap_or(node);
        match (&self.node, &self.hostname) {
            (Some(p), Some(h)) => glob_match(p, node) && h == host,
            (Some(p), None) => glob_match(p, node),
            (None, Some(h)) => h == host,
            (None, None) => glob_match(&self.name, node),
        }
    }

    /// This worker's preference for `queue`, if it serves it.
    pub fn queue(&self, queue: &str) -> Option<&QueuePref> {
        self.queues.iter().find(|q| q.name == queue)
    }

    /// The queue this worker is reserved for, if it holds one exclusively.
    pub fn exclusive_queues(&self) -> impl Iterator<Item = &str> {
        self.queues
            .iter()
            .filter(|q| q.exclusive)
            .map(|q| q.name.as_str())
    }
}

/// A worker's preference for one queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePref {
    #[serde(deserialize_with = "queue_name")]
    pub name: String,
    /// Higher is preferred (0 to 100).
    #[serde(default)]
    pub priority: Preference,
    /// The queue's jobs go only to its exclusive workers, and those workers take no other queue's routed jobs.
    #[serde(default)]
    pub exclusive: bool,
}

/// A preference weight, 0 to 100 (higher = preferred).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Preference(pub u8);

impl TryFrom<i64> for Preference {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (0..=100).contains(&v) {
            Ok(Preference(v as u8))
        } else {
            Err(format!("priority {v} is out of range 0 to 100"))
        }
    }
}

/// A non-empty name without whitespace.
#[derive(Debug, Clone, PartialEq)]
struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        check_name(&v)?;
        Ok(Name(v))
    }
}

fn check_name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        Err("empty name".to_string())
    } else if v.chars().any(char::is_whitespace) {
        Err(format!("{v:?} contains whitespace"))
    } else {
        Ok(())
    }
}

fn check_queue_name(s: &str) -> Result<(), String> {
    check_name(s)?;
    if s.ends_with(".dq2") {
        return Err(format!(
            "queue {s:?} is a worker-direct queue; list shared queues only"
        ));
    }
    Ok(())
}

fn queue_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(StrVisitor(check_queue_name))
}

/// Concurrency (1 to 1024).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Concurrency(pub u32);

impl TryFrom<i64> for Concurrency {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (1..=1024).contains(&v) {
            Ok(Concurrency(v as u32))
        } else {
            Err(format!("concurrency {v} is out of range 1 to 1024"))
        }
    }
}

/// A non-negative finite amount (GB).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct Amount(pub f64);

impl TryFrom<f64> for Amount {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && (0.0..=1.0e6).contains(&v) {
            Ok(Amount(v))
        } else {
            Err(format!("{v} is not an amount between 0 and 1000000"))
        }
    }
}

/// Kinds of accelerator a worker may have.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Accelerator {
    None,
    Cuda,
    Rocm,
    /// Apple GPUs (PyTorch calls the backend `mps`, accepted as an alias).
    #[serde(alias = "mps")]
    Metal,
    Xpu,
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Accelerator::None => "none",
            Accelerator::Cuda => "cuda",
            Accelerator::Rocm => "rocm",
            Accelerator::Metal => "metal",
            Accelerator::Xpu => "xpu",
        })
    }
}

/// What a worker offers. Missing fields are unknown (a requirement on an unknown field is not met).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<Amount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl serde::Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl Capabilities {
    /// Field-wise merge: `self` (the config) wins, `other` (detected at registration) fills the gaps.
    pub fn merged_with(&self, other: &Capabilities) -> Capabilities {
        let mut labels = self.labels.clone();
        for l in &other.labels {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
        Capabilities {
            accelerator: self.accelerator.or(other.accelerator),
            memory_gb: self.memory_gb.or(other.memory_gb),
            cpu_cores: self.cpu_cores.or(other.cpu_cores),
            gpu_memory_gb: self.gpu_memory_gb.or(other.gpu_memory_gb),
            labels,
        }
    }
}

/// A worker profile for `celeriac-worker --profile NAME`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(deserialize_with = "queue_list")]
    pub queues: Vec<String>,
    pub concurrency: Concurrency,
    #[serde(default)]
    pub description: Option<String>,
}

fn queue_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<QueueName>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "a profile needs at least one queue",
        ));
    }
    Ok(v.into_iter().map(|q| q.0).collect())
}

/// Routing strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Publish to the shared queue; any worker consuming it may take the job.
    Queue,
    /// The most preferred live, not overloaded worker for the queue, through its `.dq2`.
    Priority,
    /// Live workers that meet the job's requirements, best score first, through its `.dq2`.
    Capability,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Queue => "queue",
            Strategy::Priority => "priority",
            Strategy::Capability => "capability",
        }
    }
}

/// What to do when no worker qualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoWorkerPolicy {
    /// Wait in the most preferred live worker's `.dq2` (all busy); the shared queue if none is live.
    QueueForPreferred,
    /// Publish to the shared queue.
    SharedQueue,
    /// Refuse the job with the reason.
    Reject,
}

impl NoWorkerPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            NoWorkerPolicy::QueueForPreferred => "queue_for_preferred",
            NoWorkerPolicy::SharedQueue => "shared_queue",
            NoWorkerPolicy::Reject => "reject",
        }
    }
}

/// A load threshold: a worker whose load (active / concurrency, else loadavg / cores) reaches it is overloaded.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Threshold(pub f64);

impl TryFrom<f64> for Threshold {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v > 0.0 && v <= 4.0 {
            Ok(Threshold(v))
        } else {
            Err(format!(
                "overload_threshold {v} is out of range (0, 4]: 1.0 means every slot is busy"
            ))
        }
    }
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold(1.0)
    }
}

/// The `routing:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default = "default_strategy")]
    pub default_strategy: Strategy,
    #[serde(default = "default_queue")]
    pub default_queue: String,
    #[serde(default)]
    pub overload_threshold: Threshold,
    #[serde(default = "default_policy")]
    pub when_no_worker: NoWorkerPolicy,
    /// Refuse workers that never registered with a token as routing targets (they are still shown).
    #[serde(default)]
    pub require_registration: bool,
    /// Task names (globs) the job APIs accept on queues without their own `allowed_tasks`; `None` = any task.
    #[serde(default)]
    pub allowed_tasks: Option<TaskPatterns>,
    /// Rules per queue name.
    #[serde(default)]
    pub queues: BTreeMap<String, Rule>,
    /// Rules per task name (they win over queue rules); `allowed_tasks` is refused here.
    #[serde(default)]
    pub tasks: TaskRules,
}

fn default_strategy() -> Strategy {
    Strategy::Queue
}
fn default_queue() -> String {
    "celery".to_string()
}
fn default_policy() -> NoWorkerPolicy {
    NoWorkerPolicy::QueueForPreferred
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_strategy: default_strategy(),
            default_queue: default_queue(),
            overload_threshold: Threshold::default(),
            when_no_worker: default_policy(),
            require_registration: false,
            allowed_tasks: None,
            queues: BTreeMap::new(),
            tasks: TaskRules::default(),
        }
    }
}

/// A routing rule for a queue or a task; every field is optional and falls back to the next level.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// The queue a task goes to when the job names none (task rules only make sense here).
    #[serde(default, deserialize_with = "opt_queue_name")]
    pub queue: Option<String>,
    #[serde(default)]
    pub when_no_worker: Option<NoWorkerPolicy>,
    #[serde(default)]
    pub overload_threshold: Option<Threshold>,
    /// Requirements added to every job of this task or queue.
    #[serde(default)]
    pub requirements: Requirements,
    /// Queue rules only: the task names (globs) the job APIs accept for this queue, replacing
    /// `routing.allowed_tasks`; `[]` closes the queue to submissions.
    #[serde(default)]
    pub allowed_tasks: Option<TaskPatterns>,
}

/// A list of task-name globs (`*`, `?`, `[..]`), each non-empty and without whitespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TaskPatterns(pub Vec<TaskPattern>);

/// One task-name glob.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPattern(pub String);

impl<'de> Deserialize<'de> for TaskPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(check_name)).map(TaskPattern)
    }
}

impl TaskPatterns {
    /// Does any pattern match `task`?
    pub fn allows(&self, task: &str) -> bool {
        self.0.iter().any(|p| glob_match(&p.0, task))
    }

    /// The patterns as written, comma separated (for messages).
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "no task".to_string();
        }
        self.0
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `routing.tasks` map; a rule there may not carry `allowed_tasks` (it belongs to queues).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRules(pub BTreeMap<String, Rule>);

impl<'de> Deserialize<'de> for TaskRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TaskRules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of task names to rules")
            }
            // Checked entry by entry, so the error points at the offending rule.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TaskRules, A::Error> {
                let mut rules = BTreeMap::new();
                while let Some((task, rule)) = map.next_entry::<String, Rule>()? {
                    if rule.allowed_tasks.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "task rule {task:?} has `allowed_tasks`: allow-lists belong on a queue rule \
                             (routing.queues.<queue>.allowed_tasks) or on routing.allowed_tasks"
                        )));
                    }
                    rules.insert(task, rule);
                }
                Ok(TaskRules(rules))
            }
        }
        d.deserialize_map(V)
    }
}

impl std::ops::Deref for TaskRules {
    type Target = BTreeMap<String, Rule>;
    fn deref(&self) -> &BTreeMap<String, Rule> {
        &self.0
    }
}

fn opt_queue_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    queue_name(d).map(Some)
}

/// What a job needs from a worker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_gb: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cpu_cores: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpu_memory_gb: Option<Amount>,
    /// Any of these accelerators is acceptable (empty = no constraint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accelerator: Vec<Accelerator>,
    /// Every label must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        *self == Requirements::default()
    }

    /// Field-wise union (the stricter value wins; lists are joined).
    pub fn and(&self, other: &Requirements) -> Requirements {
        fn max<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y > x { y } else { x }),
                (x, None) => x,
                (None, y) => y,
            }
        }
        let mut accel = self.accelerator.clone();
        if !other.accelerator.is_empty() {
            accel = if accel.is_empty() {
                other.accelerator.clone()
            } else {
                accel
                    .into_iter()
                    .filter(|a| other.accelerator.contains(a))
                    .collect()
            };
        }
        let mut labels = self.labels.clone();
        for l in &other.labels {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
        Requirements {
            min_memory_gb: max(self.min_memory_gb, other.min_memory_gb),
            min_cpu_cores: max(
                self.min_cpu_cores.map(|c| c.0),
                other.min_cpu_cores.map(|c| c.0),
            )
            .map(Concurrency),
            min_gpu_memory_gb: max(self.min_gpu_memory_gb, other.min_gpu_memory_gb),
            accelerator: accel,
            labels,
        }
    }

    /// The first requirement `caps` does not meet, as a sentence fragment.
    pub fn unmet_by(&self, caps: &Capabilities) -> Option<String> {
        if let Some(min) = self.min_memory_gb {
            match caps.memory_gb {
                None => return Some(format!("needs {} GB memory, memory unknown", min.0)),
                Some(m) if m.0 < min.0 => {
                    return Some(format!("needs {} GB memory, has {}", min.0, m.0));
                }
                _ => {}
            }
        }
        if let Some(min) = self.min_cpu_cores {
            match caps.cpu_cores {
                None => return Some(format!("needs {} cores, cores unknown", min.0)),
                Some(c) if c.0 < min.0 => {
                    return Some(format!("needs {} cores, has {}", min.0, c.0));
                }
                _ => {}
            }
        }
        if let Some(min) = self.min_gpu_memory_gb {
            match caps.gpu_memory_gb {
                None => return Some(format!("needs {} GB GPU memory, unknown", min.0)),
                Some(m) if m.0 < min.0 => {
                    return Some(format!("needs {} GB GPU memory, has {}", min.0, m.0));
                }
                _ => {}
            }
        }
        if !self.accelerator.is_empty() {
            let have = caps.accelerator.unwrap_or(Accelerator::None);
            if !self.accelerator.contains(&have) {
                let want: Vec<String> = self.accelerator.iter().map(|a| a.to_string()).collect();
                return Some(format!(
                    "needs accelerator {}, has {have}",
                    want.join(" or ")
                ));
            }
        }
        for l in &self.labels {
            if !caps.labels.contains(l) {
                return Some(format!("needs label {l:?}"));
            }
        }
        None
    }
}

impl WorkerConfig {
    /// Parse and validate a config. `source_name` names the file in error messages.
    pub fn from_yaml_str(text: &str, source_name: &str) -> Result<WorkerConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(WorkerConfig::default());
        }
        yaml_serde::from_str::<WorkerConfig>(text).map_err(|e| {
            let full = e.to_string();
            match e.location() {
                Some(loc) => {
                    let message = match full.rfind(" at line ") {
                        Some(i) => full[..i].to_string(),
                        None => full,
                    };
                    ConfigError::Invalid {
                        source_name: source_name.to_string(),
                        line: loc.line(),
                        column: loc.column(),
                        message,
                    }
                }
                None => ConfigError::Unlocated {
                    source_name: source_name.to_string(),
                    message: full,
                },
            }
        })
    }

    /// Read and parse a file (the one I/O helper, for binaries at the edge).
    pub fn load(path: &std::path::Path) -> Result<WorkerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        WorkerConfig::from_yaml_str(&text, &path.display().to_string())
    }

    /// A profile by name, or an error listing the known ones.
    pub fn profile(&self, name: &str, source_name: &str) -> Result<&Profile, ConfigError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ConfigError::UnknownProfile {
                source_name: source_name.to_string(),
                name: name.to_string(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Config entries that describe `node`, in file order.
    pub fn specs_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a WorkerSpec> + 'a {
        self.workers.iter().filter(move |w| w.matches(node))
    }

    /// The effective rule for a job: task rule fields win over queue rule fields, which win over the defaults.
    pub fn effective(&self, task: &str, queue: Option<&str>) -> Effective {
        let task_rule = self.routing.tasks.get(task);
        let queue = queue
            .map(str::to_string)
            .or_else(|| task_rule.and_then(|r| r.queue.clone()))
            .unwrap_or_else(|| self.routing.default_queue.clone());
        let queue_rule = self.routing.queues.get(&queue);
        let pick =
            |f: &dyn Fn(&Rule) -> bool| task_rule.filter(|r| f(r)).or(queue_rule.filter(|r| f(r)));
        let strategy = pick(&|r| r.strategy.is_some())
            .and_then(|r| r.strategy)
            .unwrap_or(self.routing.default_strategy);
        let when_no_worker = pick(&|r| r.when_no_worker.is_some())
            .and_then(|r| r.when_no_worker)
            .unwrap_or(self.routing.when_no_worker);
        let overload_threshold = pick(&|r| r.overload_threshold.is_some())
            .and_then(|r| r.overload_threshold)
            .unwrap_or(self.routing.overload_threshold);
        let mut requirements = Requirements::default();
        for r in [queue_rule, task_rule].into_iter().flatten() {
            requirements = requirements.and(&r.requirements);
        }
        Effective {
            queue,
            strategy,
            when_no_worker,
            overload_threshold,
            requirements,
        }
    }
}

impl WorkerConfig {
    /// The allow-list that governs submissions to `queue`: the queue rule's `allowed_tasks`, else
    /// `routing.allowed_tasks`, with the setting's name for messages; `None` when any task is allowed.
    pub fn allowed_tasks(&self, queue: &str) -> Option<(&TaskPatterns, String)> {
        if let Some(p) = self
            .routing
            .queues
            .get(queue)
            .and_then(|r| r.allowed_tasks.as_ref())
        {
            return Some((p, format!("routing.queues.{queue}.allowed_tasks")));
        }
        self.routing
            .allowed_tasks
            .as_ref()
            .map(|p| (p, "routing.allowed_tasks".to_string()))
    }

    /// May `task` be submitted to `queue` (the job's effective queue)? `Err` says which list refuses it and what
    /// that list allows.
    pub fn check_task_allowed(&self, task: &str, queue: &str) -> Result<(), String> {
        match self.allowed_tasks(queue) {
            None => Ok(()),
            Some((p, _)) if p.allows(task) => Ok(()),
            Some((p, name)) => Err(format!("{name} allows {}", p.describe())),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            version: Version(1),
            workers: Workers::default(),
            profiles: BTreeMap::new(),
            routing: RoutingConfig::default(),
        }
    }
}

/// The rule that applies to one job after merging task, queue and default levels.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub queue: String,
    pub strategy: Strategy,
    pub when_no_worker: NoWorkerPolicy,
    pub overload_threshold: Threshold,
    pub requirements: Requirements,
}

/// `fnmatch`-style glob: `*`, `?`, `[seq]`, `[!seq]` (the same matcher kombu's pidbox uses for `pattern`).
pub use celery_proto::control::glob_match;

/// Visitors that check a scalar while it is being read, so the parser reports the scalar's own line and column
/// (a check after `deserialize` returns would be attributed to the enclosing mapping).
struct StrVisitor(fn(&str) -> Result<(), String>);

impl serde::de::Visitor<'_> for StrVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        (self.0)(v).map_err(E::custom)?;
        Ok(v.to_string())
    }
}

struct NumVisitor {
    integer: bool,
    check: fn(f64) -> Result<(), String>,
}

impl serde::de::Visitor<'_> for NumVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.integer {
            "an integer"
        } else {
            "a number"
        })
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
        (self.check)(v as f64).map_err(E::custom)?;
        Ok(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
        (self.check)(v as f64).map_err(E::custom)?;
        Ok(v as f64)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        if self.integer {
            return Err(E::invalid_type(serde::de::Unexpected::Float(v), &self));
        }
        (self.check)(v).map_err(E::custom)?;
        Ok(v)
    }
}

macro_rules! checked_number {
    ($t:ident, $integer:expr, $check:expr, $build:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let check: fn(f64) -> Result<(), String> = $check;
                let build: fn(f64) -> $t = $build;
                d.deserialize_any(NumVisitor {
                    integer: $integer,
                    check,
                })
                .map(build)
            }
        }
    };
}

checked_number!(
    Version,
    true,
    |v| Version::try_from(v as u32).map(|_| ()),
    |v| Version(v as u32)
);
checked_number!(
    Preference,
    true,
    |v| Preference::try_from(v as i64).map(|_| ()),
    |v| Preference(v as u8)
);
checked_number!(
    Concurrency,
    true,
    |v| Concurrency::try_from(v as i64).map(|_| ()),
    |v| Concurrency(v as u32)
);
checked_number!(Amount, false, |v| Amount::try_from(v).map(|_| ()), Amount);
checked_number!(
    Threshold,
    false,
    |v| Threshold::try_from(v).map(|_| ()),
    Threshold
);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(check_name)).map(Name)
    }
}

/// A shared queue name (not a worker-direct one).
struct QueueName(String);

impl<'de> Deserialize<'de> for QueueName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(check_queue_name))
            .map(QueueName)
    }
}
