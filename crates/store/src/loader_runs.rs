//! The `loader_runs` table (migration `2026-12-10-000001_loader_runs`): one row per sensor and loader run, written
//! by `cowrie-loader` when a run ends, and the per-sensor health the API exports to Prometheus at scrape time
//! (newest event, newest successful run, whether the newest run failed).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// How a run ended, as stored in `loader_runs.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything read was stored (exit code 0).
    Ok,
    /// Anything else: a file failed, PostgreSQL stayed away, the log directory was missing.
    Failed,
}

impl Outcome {
    /// The text stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        }
    }
}

/// One finished run of one sensor.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub sensor: String,
    /// `bulk` or `delta`.
    pub mode: String,
    pub ingest_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub events_loaded: i64,
    pub dead_letters: i64,
    /// The errors of the run, joined; `None` when there were none.
    pub error: Option<String>,
}

/// How long a sensor's runs are kept: `record` removes that sensor's runs that started more than this many days
/// before the new one, except its newest successful run (the "last success" the alerts read, however old). The
/// old rows are found through `ix_loader_runs_sensor_started`, so a run reads only what it removes.
pub const KEEP_DAYS: i32 = 90;

/// Stores one run, and removes the sensor's runs older than [`KEEP_DAYS`] (one statement: a loader run every
/// minute on 50 sensors writes 72,000 rows a day).
pub async fn record(conn: &mut AsyncPgConnection, run: &NewRun) -> Result<(), StoreError> {
    // The DELETE does not see the row inserted by the same statement, so "the newest successful run" it spares is
    // the newest before this one: at most one more row than needed is kept until the next run.
    diesel::sql_query(
        "WITH inserted AS (INSERT INTO loader_runs (sensor, mode, ingest_id, started_at, finished_at, outcome, \
         exit_code, events_loaded, dead_letters, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING id) \
         DELETE FROM loader_runs WHERE sensor = $1 AND started_at < $4 - make_interval(days => $11) \
         AND id IS DISTINCT FROM (SELECT id FROM loader_runs WHERE sensor = $1 AND outcome = 'ok' \
         ORDER BY finished_at DESC LIMIT 1)",
    )
    .bind::<Text, _>(&run.sensor)
    .bind::<Text, _>(&run.mode)
    .bind::<Nullable<Text>, _>(run.ingest_id.as_deref())
    .bind::<Timestamptz, _>(run.started_at)
    .bind::<Timestamptz, _>(run.finished_at)
    .bind::<Text, _>(run.outcome.as_str())
    .bind::<Integer, _>(run.exit_code)
    .bind::<BigInt, _>(run.events_loaded)
    .bind::<BigInt, _>(run.dead_letters)
    .bind::<Nullable<Text>, _>(run.error.as_deref())
    .bind::<Integer, _>(KEEP_DAYS)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored run, as read back.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct RunRow {
    #[diesel(sql_type = Text)]
    pub sensor: String,
    #[diesel(sql_type = Text)]
    pub mode: String,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub finished_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Integer)]
    pub exit_code: i32,
    #[diesel(sql_type = BigInt)]
    pub events_loaded: i64,
    #[diesel(sql_type = BigInt)]
    pub dead_letters: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

/// Every stored run, oldest first (for operators and tests).
pub async fn all_runs(conn: &mut AsyncPgConnection) -> Result<Vec<RunRow>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT sensor, mode, started_at, finished_at, outcome, exit_code, events_loaded, dead_letters, error \
         FROM loader_runs ORDER BY id",
    )
    .load(conn)
    .await?)
}

/// What the monitoring needs to know about one sensor.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SensorHealth {
    #[diesel(sql_type = Text)]
    pub sensor: String,
    /// The newest `event_timestamp` stored for the sensor (`None`: no event yet).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_event_at: Option<DateTime<Utc>>,
    /// When the newest successful loader run of the sensor finished (`None`: none yet).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Whether the sensor's newest loader run failed (`None`: no run recorded).
    #[diesel(sql_type = Nullable<Bool>)]
    pub last_run_failed: Option<bool>,
}

// The sensors are found by a loose index scan (one probe per distinct sensor) over the primary key of
// `stats_event_hours` (sensor, hour) and over ix_loader_runs_sensor_started; each figure is then one index probe:
// max(event_timestamp) through ix_raw_events_sensor_ts, the newest success through the partial ix_loader_runs_sensor_ok,
// the newest run through ix_loader_runs_sensor_started. Nothing scans raw_events or the run history.
const HEALTH_SQL: &str = "
WITH RECURSIVE ev AS (
    (SELECT sensor FROM stats_event_hours ORDER BY sensor LIMIT 1)
    UNION ALL
    SELECT (SELECT h.sensor FROM stats_event_hours h WHERE h.sensor > ev.sensor ORDER BY h.sensor LIMIT 1)
    FROM ev WHERE ev.sensor IS NOT NULL
),
runs AS (
    (SELECT sensor FROM loader_runs ORDER BY sensor LIMIT 1)
    UNION ALL
    SELECT (SELECT l.sensor FROM loader_runs l WHERE l.sensor > runs.sensor ORDER BY l.sensor LIMIT 1)
    FROM runs WHERE runs.sensor IS NOT NULL
),
sensors AS (
    SELECT sensor FROM ev WHERE sensor IS NOT NULL
    UNION
    SELECT sensor FROM runs WHERE sensor IS NOT NULL
)
SELECT s.sensor,
       (SELECT max(r.event_timestamp) FROM raw_events r WHERE r.sensor = s.sensor) AS last_event_at,
       (SELECT l.finished_at FROM loader_runs l WHERE l.sensor = s.sensor AND l.outcome = 'ok'
         ORDER BY l.finished_at DESC LIMIT 1) AS last_success_at,
       (SELECT l.outcome = 'failed' FROM loader_runs l WHERE l.sensor = s.sensor
         ORDER BY l.started_at DESC, l.id DESC LIMIT 1) AS last_run_failed
FROM sensors s
ORDER BY s.sensor
";

/// Per sensor (every sensor with events or loader runs): newest event, newest successful run, newest run failed.
pub async fn sensor_health(conn: &mut AsyncPgConnection) -> Result<Vec<SensorHealth>, StoreError> {
    Ok(diesel::sql_query(HEALTH_SQL).load(conn).await?)
}
