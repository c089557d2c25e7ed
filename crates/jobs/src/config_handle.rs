//! The live `worker-config.yaml`: loaded at start, reloaded on SIGHUP and when the file changes.
//! A reload swaps one `Arc`, so a decision in progress finishes with the config it started with and no job is
//! dropped; a bad new file keeps the old config, and the reason is logged, counted and shown by `/readyz`.

use routing::{ConfigError, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    Applied,
    Unchanged,
    Kept { error: String },
}

pub struct ConfigHandle {
    path: PathBuf,
    current: RwLock<Arc<WorkerConfig>>,
    last_error: RwLock<Option<String>>,
    /// (modification time, length, text) of the file last read, to notice changes cheaply.
    seen: RwLock<Option<(Option<SystemTime>, u64, String)>>,
}

impl ConfigHandle {
    /// Load `path`; a missing or bad file at start is an error (nobody may route blind).
    pub fn load(path: &Path) -> Result<ConfigHandle, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let config = WorkerConfig::from_yaml_str(&text, &path.display().to_string())?;
        let meta = std::fs::metadata(path).ok();
        Ok(ConfigHandle {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
            last_error: RwLock::new(None),
            seen: RwLock::new(Some((
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map(|m| m.len()).unwrap_or(0),
                text,
            ))),
        })
    }

    /// A handle on a config built in memory (tests); reloads read `path`.
    pub fn fixed(config: WorkerConfig, path: &Path) -> ConfigHandle {
        ConfigHandle {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
            last_error: RwLock::new(None),
            seen: RwLock::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config to decide with now.
    pub fn get(&self) -> Arc<WorkerConfig> {
        self.current.read().expect("config lock").clone()
    }

    /// Why the last reload was refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().expect("config lock").clone()
    }

    /// Re-read the file and swap it in if valid and different.
    pub fn reload(&self) -> Reload {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return self.keep(format!("cannot read {}: {e}", self.path.display())),
        };
        let meta = std::fs::metadata(&self.path).ok();
        let stamp = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.map(|m| m.len()).unwrap_or(0),
        );
        let unchanged = self
            .seen
            .read()
            .expect("config lock")
            .as_ref()
            .is_some_and(|(_, _, t)| *t == text);
        *self.seen.write().expect("config lock") = Some((stamp.0, stamp.1, text.clone()));
        if unchanged && self.last_error().is_none() {
            return Reload::Unchanged;
        }
        match WorkerConfig::from_yaml_str(&text, &self.path.display().to_string()) {
            Ok(c) => {
                *self.current.write().expect("config lock") = Arc::new(c);
                *self.last_error.write().expect("config lock") = None;
                tracing::info!(path = %self.path.display(), "worker-config reloaded");
                Reload::Applied
            }
            Err(e) => self.keep(e.to_string()),
        }
    }

    fn keep(&self, error: String) -> Reload {
        tracing::error!(%error, "worker-config reload refused; keeping the previous config");
        *self.last_error.write().expect("config lock") = Some(error.clone());
        Reload::Kept { error }
    }

    /// True when the file's modification time or length differs from the last read (cheap poll).
    pub fn changed_on_disk(&self) -> bool {
        let meta = std::fs::metadata(&self.path).ok();
        let now = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.map(|m| m.len()).unwrap_or(0),
        );
        match &*self.seen.read().expect("config lock") {
            Some((t, l, _)) => (*t, *l) != now,
            None => true,
        }
    }
}
