//! Hourly rollups of `raw_events` for the public API: events per sensor and hour, login attempts per credential,
//! command counts per command (`stats_*_hours`, migration `2026-12-03-000003_stats_rollups`).
//!
//! They are written by the loader's commit, in the same transaction as the events, from exactly the rows that
//! transaction inserted ([`add_inserted`]), so they are exactly-once like the events themselves: a re-read line is
//! not inserted, hence not counted. Reads split a window into its whole hours (from the rollups) and its partial
//! edge hours (from `raw_events`), so any `[start, end)` is answered exactly ([`HourSplit`]).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// The hour grid every rollup uses (`date_bin` from this origin).
pub const HOUR_BIN: &str =
    "date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00')";

pub(crate) const ADD_SQL: &str = "
WITH fresh AS (
    SELECT sensor, event_type, event_timestamp, payload, risk_score
    FROM raw_events
    WHERE stream_id = $1 AND source_generation = $2 AND source_offset = ANY($3::int8[])
),
ev AS (
    INSERT INTO stats_event_hours AS h (sensor, hour, events)
    SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'), count(*)
    FROM fresh GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (sensor, hour) DO UPDATE SET events = h.events + EXCLUDED.events
    RETURNING 1
),
lg AS (
    INSERT INTO stats_login_hours AS l (sensor, hour, cred_key, username, password, attempts, successes)
    SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
           md5(jsonb_build_array(payload->>'username', payload->>'password')::text),
           payload->>'username', payload->>'password',
           count(*), count(*) FILTER (WHERE event_type = 'cowrie.login.success')
    FROM fresh
    WHERE event_type IN ('cowrie.login.success', 'cowrie.login.failed')
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3
    ON CONFLICT (sensor, hour, cred_key) DO UPDATE
        SET attempts = l.attempts + EXCLUDED.attempts, successes = l.successes + EXCLUDED.successes
    RETURNING 1
),
cm AS (
    INSERT INTO stats_command_hours AS c (sensor, hour, command_key, command, count, max_risk)
    SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
           md5(payload->>'input'), payload->>'input', count(*), max(risk_score)
    FROM fresh
    WHERE event_type = 'cowrie.command.input' AND payload ? 'input'
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
    ON CONFLICT (sensor, hour, command_key) DO UPDATE
        SET count = c.count + EXCLUDED.count, max_risk = GREATEST(c.max_risk, EXCLUDED.max_risk)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev) + (SELECT count(*) FROM lg) + (SELECT count(*) FROM cm) AS n
";

#[derive(diesel::QueryableByName)]
struct Touched {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Count the rows of one stream that this transaction just inserted (by their offsets) into the rollups.
/// Returns how many rollup rows were written.
pub async fn add_inserted(
    conn: &mut AsyncPgConnection,
    stream_id: &str,
    generation: i32,
    offsets: &[i64],
) -> Result<u64, StoreError> {
    if offsets.is_empty() {
        return Ok(0);
    }
    let t: Touched = diesel::sql_query(ADD_SQL)
        .bind::<Text, _>(stream_id)
        .bind::<Integer, _>(generation)
        .bind::<Array<BigInt>, _>(offsets)
        .get_result(conn)
        .await?;
    Ok(t.n as u64)
}

/// A window `[start, end)` split on the hour grid: whole hours `[hours_from, hours_to)` come from the rollups, the
/// edges `[start, hours_from)` and `[hours_to, end)` from `raw_events`. A window inside one or two hours has no
/// whole hour: then `hours_from == hours_to == end` and the first edge is the whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourSplit {
    pub start: DateTime<Utc>,
    pub hours_from: DateTime<Utc>,
    pub hours_to: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl HourSplit {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> HourSplit {
        let floor = |t: DateTime<Utc>| {
            let s = t.timestamp();
            DateTime::from_timestamp(s - s.rem_euclid(3600), 0).unwrap_or(t)
        };
        let ceil = |t: DateTime<Utc>| {
            let f = floor(t);
            if f == t {
                f
            } else {
                f + chrono::Duration::hours(1)
            }
        };
        let (a, b) = (ceil(start), floor(end));
        if a < b {
            HourSplit {
                start,
                hours_from: a,
                hours_to: b,
                end,
            }
        } else {
            HourSplit {
                start,
                hours_from: end,
                hours_to: end,
                end,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_split_into_whole_hours_and_edges_that_never_overlap() {
        let s = HourSplit::new(t("2024-01-01T10:30:00Z"), t("2024-01-02T08:15:00Z"));
        assert_eq!(s.hours_from, t("2024-01-01T11:00:00Z"));
        assert_eq!(s.hours_to, t("2024-01-02T08:00:00Z"));
        let aligned = HourSplit::new(t("2024-01-01T10:00:00Z"), t("2024-01-01T12:00:00Z"));
        assert_eq!(
            (aligned.hours_from, aligned.hours_to),
            (aligned.start, aligned.end)
        );
        // Inside one hour, and across one hour boundary: no whole hour, one edge covers it all.
        for (a, b) in [
            ("2024-01-01T10:10:00Z", "2024-01-01T10:50:00Z"),
            ("2024-01-01T10:10:00Z", "2024-01-01T11:50:00Z"),
        ] {
            let s = HourSplit::new(t(a), t(b));
            assert_eq!((s.hours_from, s.hours_to), (s.end, s.end), "{a} {b}");
        }
        let one = HourSplit::new(t("2024-01-01T10:10:00Z"), t("2024-01-01T12:50:00Z"));
        assert_eq!(
            (one.hours_from, one.hours_to),
            (t("2024-01-01T11:00:00Z"), t("2024-01-01T12:00:00Z"))
        );
    }
}
