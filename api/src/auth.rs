//! API keys: how a key is made, presented, checked and scoped.
//!
//! A secret is `cak_` plus 64 hex digits (256 random bits from the OS). Only its SHA-256 is stored (`store::api_keys`),
//! with a name, scopes, an optional expiry and an optional rate limit. A request presents it as `X-API-Key: <key>` or
//! `Authorization: Bearer <key>`. Look-ups go to the primary (a key created or revoked is seen at once) and are cached
//! in the process for `cache_ttl` (default 2 s), so a busy API does not query PostgreSQL on every request; a
//! revocation therefore takes effect within that time. Expiry is checked on every request.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::api_keys::ApiKeyRow;

use crate::error::ApiError;
use crate::limits::KeyLimits;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Statistics, sessions, findings, job status.
    StatisticsRead,
    /// Submit and revoke analyses.
    JobsWrite,
    /// Everything.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::StatisticsRead, Scope::JobsWrite, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StatisticsRead => "statistics:read",
            Scope::JobsWrite => "jobs:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s.trim())
    }
}

/// Parse a comma-separated scope list; every entry must be known.
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| {
            format!(
                "unknown scope {part:?} (known: {})",
                Scope::ALL.map(Scope::as_str).join(", ")
            )
        })?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err("give at least one scope".into());
    }
    Ok(out)
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: KeyLimits,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::MissingScope(scope.as_str()))
        }
    }
}

/// A new secret: `cak_` and 64 hex digits from two v4 UUIDs (the `uuid` crate draws them from the OS's CSPRNG).
pub fn generate_secret() -> String {
    format!(
        "cak_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key a request presents, if any (`X-API-Key` first, then `Authorization: Bearer`).
pub fn presented_key(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    let auth = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What a stored key says about a presented secret, before the clock is read.
#[derive(Debug, Clone)]
enum Known {
    Unknown,
    Revoked,
    Key(Caller),
}

/// Judge a stored row (or its absence) at time `now`.
pub fn judge(row: Option<&ApiKeyRow>, now: DateTime<Utc>) -> Result<Caller, ApiError> {
    match classify(row) {
        Known::Unknown => Err(ApiError::InvalidKey),
        Known::Revoked => Err(ApiError::KeyRevoked),
        Known::Key(c) => check_expiry(c, now),
    }
}

fn classify(row: Option<&ApiKeyRow>) -> Known {
    let Some(row) = row else {
        return Known::Unknown;
    };
    if row.revoked_at.is_some() {
        return Known::Revoked;
    }
    Known::Key(Caller {
        key_id: row.id.clone(),
        name: row.name.clone(),
        // Scopes unknown to this build (a newer one wrote them) are ignored, never widened.
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        expires_at: row.expires_at,
        limits: row
            .rate_limit
            .as_deref()
            .and_then(|s| KeyLimits::parse(s).ok())
            .unwrap_or_default(),
    })
}

fn check_expiry(c: Caller, now: DateTime<Utc>) -> Result<Caller, ApiError> {
    match c.expires_at {
        Some(t) if t <= now => Err(ApiError::KeyExpired),
        _ => Ok(c),
    }
}

/// A short-lived cache of key look-ups (hits and misses), keyed by the secret's hash.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Known)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached verdict for `hash`, if fresh.
    pub fn get(&self, hash: &str) -> Option<Result<Caller, ApiError>> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.entries.lock().expect("key cache");
        let (at, known) = map.get(hash)?;
        if at.elapsed() > self.ttl {
            return None;
        }
        Some(match known.clone() {
            Known::Unknown => Err(ApiError::InvalidKey),
            Known::Revoked => Err(ApiError::KeyRevoked),
            Known::Key(c) => check_expiry(c, Utc::now()),
        })
    }

    /// Remember the stored row (or its absence) for `hash`.
    pub fn put(&self, hash: &str, row: Option<&ApiKeyRow>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().expect("key cache");
        // Bounded: a flood of random keys cannot grow the cache without end.
        if map.len() >= 10_000 {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() <= ttl);
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(hash.to_string(), (Instant::now(), classify(row)));
    }
}

/// A key as `key list` and `key create --json` show it (never the secret, except once at creation).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub rate_limit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub status: &'static str,
}

impl KeyInfo {
    pub fn of(row: &ApiKeyRow, now: DateTime<Utc>) -> KeyInfo {
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        };
        KeyInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            scopes: row.scopes.clone(),
            rate_limit: row.rate_limit.clone(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            status,
        }
    }
}

/// Build the row for a new key and its secret.
pub fn new_key(
    name: &str,
    scopes: &[Scope],
    ttl_days: Option<u32>,
    rate_limit: Option<&str>,
    now: DateTime<Utc>,
) -> (ApiKeyRow, String) {
    let secret = generate_secret();
    let row = ApiKeyRow {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        name: name.to_string(),
        key_hash: hash_secret(&secret),
        prefix: secret[..12].to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        rate_limit: rate_limit.map(str::to_string),
        created_at: now,
        expires_at: ttl_days.map(|d| now + chrono::Duration::days(i64::from(d))),
        revoked_at: None,
    };
    (row, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_are_presented_either_way() {
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "cak_1")])).as_deref(),
            Some("cak_1")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer cak_2")])).as_deref(),
            Some("cak_2")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }

    #[test]
    fn scopes_parse_strictly_and_admin_implies_all() {
        assert_eq!(
            parse_scopes("statistics:read, jobs:write").unwrap(),
            vec![Scope::StatisticsRead, Scope::JobsWrite]
        );
        assert!(parse_scopes("statistics:write").is_err());
        assert!(parse_scopes("").is_err());
        let now = Utc::now();
        let (row, secret) = new_key("ops", &[Scope::Admin], None, None, now);
        assert!(secret.starts_with("cak_") && secret.len() == 68);
        assert_eq!(row.key_hash, hash_secret(&secret));
        assert!(!row.key_hash.contains(&secret[4..]));
        let c = judge(Some(&row), now).unwrap();
        assert!(c.has(Scope::JobsWrite) && c.has(Scope::StatisticsRead));
    }

    #[test]
    fn revoked_expired_and_unknown_keys_are_told_apart() {
        let now = Utc::now();
        let (mut row, _) = new_key("a", &[Scope::StatisticsRead], Some(1), None, now);
        assert!(judge(Some(&row), now).is_ok());
        assert!(matches!(
            judge(Some(&row), now + chrono::Duration::days(2)),
            Err(ApiError::KeyExpired)
        ));
        row.revoked_at = Some(now);
        assert!(matches!(judge(Some(&row), now), Err(ApiError::KeyRevoked)));
        assert!(matches!(judge(None, now), Err(ApiError::InvalidKey)));
        let c = judge(
            Some(&new_key("b", &[Scope::StatisticsRead], None, None, now).0),
            now,
        )
        .unwrap();
        assert!(matches!(
            c.require(Scope::JobsWrite),
            Err(ApiError::MissingScope("jobs:write"))
        ));
    }

    #[test]
    fn the_cache_remembers_misses_and_expires() {
        let cache = KeyCache::new(Duration::from_millis(50));
        cache.put("h", None);
        assert!(matches!(cache.get("h"), Some(Err(ApiError::InvalidKey))));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("h").is_none());
        let off = KeyCache::new(Duration::ZERO);
        off.put("h", None);
        assert!(off.get("h").is_none());
    }
}
