//! celeriac's own records in Redis, under `celeriac:`: job records (written by the coordinator and the API alike),
//! registration tokens (stored as SHA-256 hashes, with expiry, rotation and revocation) and worker registrations.
//!
//! Keys:
//! - `celeriac:job:<id>`: the job record (JSON), kept `job_ttl` seconds.
//! - `celeriac:regtoken:<token id>`: token metadata with the hash, expiring with the token.
//! - `celeriac:regtoken-hash:<sha256 hex>`: the token id, expiring with the token.
//! - `celeriac:worker:<node>`: a worker's registration (JSON).
//! - `celeriac:reroute:holding`: messages being moved out of a dead worker's `.dq2` (see `broker::coordinator_store`).

use broker::{Broker, BrokerError};
use routing::{Capabilities, Decision, Requirements};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const HOLDING_KEY: &str = "celeriac:reroute:holding";

/// Token records outlive their expiry by this much, so a late presenter hears "expired", not "unknown".
const TOKEN_GRACE_SECS: u64 = 7 * 86_400;

fn job_key(id: &str) -> String {
    format!("celeriac:job:{id}")
}
fn token_key(id: &str) -> String {
    format!("celeriac:regtoken:{id}")
}
fn token_hash_key(hash: &str) -> String {
    format!("celeriac:regtoken-hash:{hash}")
}
fn worker_key(node: &str) -> String {
    format!("celeriac:worker:{node}")
}

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("stored record {key} is not readable: {why}")]
    Corrupt { key: String, why: String },
}

/// A job as it was published (by the coordinator or the API), with its routing decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub task: String,
    /// The logical (shared) queue.
    pub queue: String,
    /// The Celery queue it was published to (the shared queue or a `<node>.dq2`).
    pub published_to: Option<String>,
    pub node: Option<String>,
    pub priority: u8,
    #[serde(default)]
    pub requirements: Requirements,
    pub decision: Decision,
    pub created_at: f64,
    /// Earlier placements, when the job was routed again after its worker went offline.
    #[serde(default)]
    pub reroutes: Vec<Reroute>,
    #[serde(default)]
    pub revoked: bool,
}

/// One move of a waiting job from an offline worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reroute {
    pub from_node: String,
    pub to_queue: String,
    pub at: f64,
    pub reason: String,
}

/// Token metadata (the secret itself is never stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub created_at: f64,
    pub expires_at: f64,
    #[serde(default)]
    pub revoked: bool,
    /// The token this one replaced, when created by a rotation.
    #[serde(default)]
    pub rotated_from: Option<String>,
}

/// A newly created token: the only time the secret is shown.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub name: String,
    pub token: String,
    pub expires_at: f64,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenCheck {
    Valid(TokenRecord),
    Unknown,
    Revoked,
    Expired,
}

/// A worker's own registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    pub node: String,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub concurrency: Option<u32>,
    pub token_id: String,
    pub registered_at: f64,
}

/// SHA-256 of a token, hex.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The record store.
#[derive(Clone)]
pub struct JobStore {
    broker: Broker,
    job_ttl: u64,
}

impl JobStore {
    pub fn new(broker: Broker, job_ttl_secs: u64) -> JobStore {
        JobStore {
            broker,
            job_ttl: job_ttl_secs,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, JobStoreError> {
        match self.broker.kv_get(key).await? {
            None => Ok(None),
            Some(raw) => {
                serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| JobStoreError::Corrupt {
                        key: key.to_string(),
                        why: e.to_string(),
                    })
            }
        }
    }

    pub async fn put_job(&self, job: &JobRecord) -> Result<(), JobStoreError> {
        let raw = serde_json::to_vec(job).expect("job record serializes");
        self.broker
            .kv_set(&job_key(&job.id), &raw, Some(self.job_ttl))
            .await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.get_json(&job_key(id)).await
    }

    /// Create a token valid for `ttl_secs`.
    pub async fn create_token(
        &self,
        name: &str,
        ttl_secs: u64,
        rotated_from: Option<String>,
    ) -> Result<IssuedToken, JobStoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let secret = format!(
            "crt_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let hash = hash_token(&secret);
        let now = broker::now_f64();
        let rec = TokenRecord {
            id: id.clone(),
            name: name.to_string(),
            hash: hash.clone(),
            created_at: now,
            expires_at: now + ttl_secs as f64,
            revoked: false,
            rotated_from,
        };
        let raw = serde_json::to_vec(&rec).expect("token record serializes");
        self.broker
            .kv_set(&token_key(&id), &raw, Some(ttl_secs + TOKEN_GRACE_SECS))
            .await?;
        self.broker
            .kv_set(
                &token_hash_key(&hash),
                id.as_bytes(),
                Some(ttl_secs + TOKEN_GRACE_SECS),
            )
            .await?;
        Ok(IssuedToken {
            id,
            name: name.to_string(),
            token: secret,
            expires_at: rec.expires_at,
        })
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, JobStoreError> {
        self.get_json(&token_key(id)).await
    }

    /// Every token still on record (revoked and recently expired ones included).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, JobStoreError> {
        let mut out = Vec::new();
        for key in self.broker.kv_scan("celeriac:regtoken:*").await? {
            if let Some(t) = self.get_json::<TokenRecord>(&key).await? {
                out.push(t);
            }
        }
        out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(out)
    }

    /// Revoke a token; false if it does not exist (or already expired).
    pub async fn revoke_token(&self, id: &str) -> Result<bool, JobStoreError> {
        let Some(mut rec) = self.token(id).await? else {
            return Ok(false);
        };
        rec.revoked = true;
        let ttl = self.broker.kv_ttl(&token_key(id)).await?;
        let raw = serde_json::to_vec(&rec).expect("token record serializes");
        self.broker.kv_set(&token_key(id), &raw, ttl).await?;
        Ok(true)
    }

    /// Replace a token by a new one with the same name and lifetime; the old one is revoked.
    pub async fn rotate_token(&self, id: &str) -> Result<Option<IssuedToken>, JobStoreError> {
        let Some(rec) = self.token(id).await? else {
            return Ok(None);
        };
        let lifetime = (rec.expires_at - rec.created_at).max(1.0) as u64;
        let issued = self
            .create_token(&rec.name, lifetime, Some(rec.id.clone()))
            .await?;
        self.revoke_token(id).await?;
        Ok(Some(issued))
    }

    /// Check a presented token.
    pub async fn check_token(&self, token: &str) -> Result<TokenCheck, JobStoreError> {
        let hash = hash_token(token);
        let Some(id) = self.broker.kv_get(&token_hash_key(&hash)).await? else {
            return Ok(TokenCheck::Unknown);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let Some(rec) = self.token(&id).await? else {
            return Ok(TokenCheck::Expired);
        };
        if rec.hash != hash {
            return Ok(TokenCheck::Unknown);
        }
        if rec.revoked {
            return Ok(TokenCheck::Revoked);
        }
        if rec.expires_at <= broker::now_f64() {
            return Ok(TokenCheck::Expired);
        }
        Ok(TokenCheck::Valid(rec))
    }

    pub async fn put_registration(&self, reg: &Registration) -> Result<(), JobStoreError> {
        let raw = serde_json::to_vec(reg).expect("registration serializes");
        self.broker
            .kv_set(&worker_key(&reg.node), &raw, None)
            .await?;
        Ok(())
    }

    pub async fn registrations(&self) -> Result<Vec<Registration>, JobStoreError> {
        let mut out = Vec::new();
        for key in self.broker.kv_scan("celeriac:worker:*").await? {
            match self.get_json::<Registration>(&key).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable registration"),
            }
        }
        Ok(out)
    }
}
