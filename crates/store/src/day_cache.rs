//! The per-day longtail cache (`longtail_day_cache`) and the day fingerprints it is checked against.
//!
//! A day's fingerprint is computed from `session_summaries` alone (count, total events, latest update and
//! last event), which is cheap; only days whose fingerprint changed are re-read from `raw_events`.
//!
//! The whole window's result is cached too (`longtail_window_cache`, keyed by sensor, window and parameters and
//! checked against a hash of all its days' fingerprints), so a re-run over unchanged days reads nothing else.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{BigInt, Date, Nullable, Text, Timestamptz};
use diesel::{ExpressionMethods, QueryDsl, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use std::collections::HashMap;

use crate::StoreError;

diesel::table! {
    longtail_day_cache (sensor_key, day, params_key) {
        sensor_key -> Varchar,
        day -> Date,
        params_key -> Varchar,
        fingerprint -> Text,
        format_version -> Int4,
        session_count -> Int4,
        aggregate -> Bytea,
        computed_at -> Timestamptz,
    }
}

/// A cached aggregate of one day.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDay {
    pub day: NaiveDate,
    pub fingerprint: String,
    pub format_version: i32,
    pub session_count: i32,
    /// The aggregate, serialised by its owner (JSON today); the store keeps the bytes as they are.
    pub aggregate: Vec<u8>,
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    sessions: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    events: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    updated: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_event: Option<DateTime<Utc>>,
}

/// The key under which a sensor's (or all sensors') days are cached.
pub fn sensor_key(sensor: Option<&str>) -> String {
    sensor.unwrap_or("*").to_string()
}

/// Fingerprints of the UTC days that have sessions starting in `[start, end)`.
pub async fn day_fingerprints(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<HashMap<NaiveDate, (String, i64)>, StoreError> {
    let sql = "SELECT (first_event_at AT TIME ZONE 'UTC')::date AS day, count(*) AS sessions, \
               sum(event_count)::bigint AS events, max(updated_at) AS updated, max(last_event_at) AS last_event \
               FROM session_summaries WHERE first_event_at >= $1 AND first_event_at < $2 \
               AND ($3::text IS NULL OR sensor = $3) GROUP BY 1";
    let rows: Vec<DayRow> = diesel::sql_query(sql)
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .bind::<Nullable<Text>, _>(sensor)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let fp = format!(
                "{}|{}|{}|{}",
                r.sessions,
                r.events.unwrap_or(0),
                r.updated.map(|t| t.timestamp_micros()).unwrap_or(0),
                r.last_event.map(|t| t.timestamp_micros()).unwrap_or(0)
            );
            (r.day, (fp, r.sessions))
        })
        .collect())
}

/// Cached aggregates for these days.
pub async fn load_days(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    params_key: &str,
    days: &[NaiveDate],
) -> Result<Vec<CachedDay>, StoreError> {
    use longtail_day_cache::dsl as c;
    let rows: Vec<(NaiveDate, String, i32, i32, Vec<u8>)> = c::longtail_day_cache
        .filter(c::sensor_key.eq(sensor_key(sensor)))
        .filter(c::params_key.eq(params_key))
        .filter(c::day.eq_any(days))
        .select((
            c::day,
            c::fingerprint,
            c::format_version,
            c::session_count,
            c::aggregate,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(day, fingerprint, format_version, session_count, aggregate)| CachedDay {
                day,
                fingerprint,
                format_version,
                session_count,
                aggregate,
            },
        )
        .collect())
}

/// Insert or replace the cached aggregate of one day.
pub async fn store_day(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    params_key: &str,
    day: &CachedDay,
) -> Result<(), StoreError> {
    use longtail_day_cache::dsl as c;
    let row = (
        c::sensor_key.eq(sensor_key(sensor)),
        c::day.eq(day.day),
        c::params_key.eq(params_key),
        c::fingerprint.eq(&day.fingerprint),
        c::format_version.eq(day.format_version),
        c::session_count.eq(day.session_count),
        c::aggregate.eq(&day.aggregate),
        c::computed_at.eq(Utc::now()),
    );
    diesel::insert_into(c::longtail_day_cache)
        .values(row.clone())
        .on_conflict((c::sensor_key, c::day, c::params_key))
        .do_update()
        .set((
            c::fingerprint.eq(&day.fingerprint),
            c::format_version.eq(day.format_version),
            c::session_count.eq(day.session_count),
            c::aggregate.eq(&day.aggregate),
            c::computed_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Insert or replace the cached aggregates of several days in one statement per 64 days.
pub async fn store_days(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    params_key: &str,
    days: &[CachedDay],
) -> Result<(), StoreError> {
    use diesel::upsert::excluded;
    use longtail_day_cache::dsl as c;
    let now = Utc::now();
    let key = sensor_key(sensor);
    for chunk in days.chunks(64) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|day| {
                (
                    c::sensor_key.eq(key.as_str()),
                    c::day.eq(day.day),
                    c::params_key.eq(params_key),
                    c::fingerprint.eq(&day.fingerprint),
                    c::format_version.eq(day.format_version),
                    c::session_count.eq(day.session_count),
                    c::aggregate.eq(&day.aggregate),
                    c::computed_at.eq(now),
                )
            })
            .collect();
        diesel::insert_into(c::longtail_day_cache)
            .values(rows)
            .on_conflict((c::sensor_key, c::day, c::params_key))
            .do_update()
            .set((
                c::fingerprint.eq(excluded(c::fingerprint)),
                c::format_version.eq(excluded(c::format_version)),
                c::session_count.eq(excluded(c::session_count)),
                c::aggregate.eq(excluded(c::aggregate)),
                c::computed_at.eq(excluded(c::computed_at)),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

diesel::table! {
    longtail_window_cache (sensor_key, window_start, window_end, params_key) {
        sensor_key -> Varchar,
        window_start -> Timestamptz,
        window_end -> Timestamptz,
        params_key -> Varchar,
        fingerprint -> Text,
        format_version -> Int4,
        analysis_id -> Int8,
        result -> Jsonb,
        computed_at -> Timestamptz,
    }
}

/// The cached result of one window (see the `longtail_window_cache` migration).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedWindow {
    pub fingerprint: String,
    pub format_version: i32,
    pub analysis_id: i64,
    pub result: Value,
}

/// The cached result of this window, sensor and parameters, if any (whatever its fingerprint).
pub async fn load_window(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    params_key: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<CachedWindow>, StoreError> {
    use diesel::OptionalExtension;
    use longtail_window_cache::dsl as w;
    let row: Option<(String, i32, i64, Value)> = w::longtail_window_cache
        .filter(w::sensor_key.eq(sensor_key(sensor)))
        .filter(w::params_key.eq(params_key))
        .filter(w::window_start.eq(start))
        .filter(w::window_end.eq(end))
        .select((w::fingerprint, w::format_version, w::analysis_id, w::result))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(
        |(fingerprint, format_version, analysis_id, result)| CachedWindow {
            fingerprint,
            format_version,
            analysis_id,
            result,
        },
    ))
}

/// Insert or replace the cached result of this window.
pub async fn store_window(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    params_key: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    entry: &CachedWindow,
) -> Result<(), StoreError> {
    use longtail_window_cache::dsl as w;
    let now = Utc::now();
    diesel::insert_into(w::longtail_window_cache)
        .values((
            w::sensor_key.eq(sensor_key(sensor)),
            w::window_start.eq(start),
            w::window_end.eq(end),
            w::params_key.eq(params_key),
            w::fingerprint.eq(&entry.fingerprint),
            w::format_version.eq(entry.format_version),
            w::analysis_id.eq(entry.analysis_id),
            w::result.eq(&entry.result),
            w::computed_at.eq(now),
        ))
        .on_conflict((w::sensor_key, w::window_start, w::window_end, w::params_key))
        .do_update()
        .set((
            w::fingerprint.eq(&entry.fingerprint),
            w::format_version.eq(entry.format_version),
            w::analysis_id.eq(entry.analysis_id),
            w::result.eq(&entry.result),
            w::computed_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
