//! The per-day longtail cache (`longtail_day_cache`) and the day fingerprints it is checked against.
//!
//! A day's fingerprint is computed from `session_summaries` alone (count, total events, latest update and
//! last event), which is cheap; only days whose fingerprint changed are re-read from `raw_events`.

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
        aggregate -> Jsonb,
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
    pub aggregate: Value,
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
    let rows: Vec<(NaiveDate, String, i32, i32, Value)> = c::longtail_day_cache
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
