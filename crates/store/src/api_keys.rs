//! API keys of `celeriac-api`: create, look up by hash, list, revoke.
//!
//! Only the SHA-256 of a secret is stored; the secret itself is shown once, by whoever created it.
//! Scopes and the rate limit are plain strings here: their meaning belongs to the API.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, Insertable, OptionalExtension, QueryDsl, Queryable, Selectable};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::schema::api_keys;

/// One stored key (without its secret).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub rate_limit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Store a new key.
pub async fn insert_key(conn: &mut AsyncPgConnection, row: &ApiKeyRow) -> Result<(), StoreError> {
    diesel::insert_into(api_keys::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// The key whose secret hashes to `key_hash`, revoked and expired ones included (the caller tells them apart).
pub async fn key_by_hash(
    conn: &mut AsyncPgConnection,
    key_hash: &str,
) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .select(<ApiKeyRow as diesel::SelectableHelper<diesel::pg::Pg>>::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Every key, oldest first.
pub async fn list_keys(conn: &mut AsyncPgConnection) -> Result<Vec<ApiKeyRow>, StoreError> {
    Ok(api_keys::table
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .select(<ApiKeyRow as diesel::SelectableHelper<diesel::pg::Pg>>::as_select())
        .load(conn)
        .await?)
}

/// Revoke a key now; `false` when no key has that id. Revoking twice keeps the first time.
pub async fn revoke_key(conn: &mut AsyncPgConnection, id: &str) -> Result<bool, StoreError> {
    let exists = api_keys::table
        .filter(api_keys::id.eq(id))
        .count()
        .get_result::<i64>(conn)
        .await?
        > 0;
    if exists {
        diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    }
    Ok(exists)
}
