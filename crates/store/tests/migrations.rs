//! Migrations against a real PostgreSQL: processes that start together (two API replicas, an API and a loader)
//! migrate one after the other under the advisory lock, and every one of them succeeds.

use diesel::sql_types::BigInt;
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use store::test_support::TestDb;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_on_an_empty_database_all_succeed_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // An empty database again (TestDb migrated it).
    let mut c = db.connect().await;
    sql_query("DROP SCHEMA public CASCADE")
        .execute(&mut c)
        .await
        .unwrap();
    sql_query("CREATE SCHEMA public")
        .execute(&mut c)
        .await
        .unwrap();
    sql_query("DROP TABLE IF EXISTS __diesel_schema_migrations")
        .execute(&mut c)
        .await
        .unwrap();

    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { store::run_migrations(&url).await })
        })
        .collect();
    let mut applied = Vec::new();
    for r in runs {
        let versions = r
            .await
            .unwrap()
            .expect("every concurrent migration run succeeds");
        applied.push(versions.len());
    }
    let total = store::migrations_count();
    // Exactly one run applied everything; the others found nothing pending.
    applied.sort();
    assert_eq!(
        applied,
        vec![0, 0, 0, total],
        "versions applied by each run"
    );
    let rows: Count = sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .get_result(&mut c)
        .await
        .unwrap();
    assert_eq!(rows.n as usize, total);
    assert!(store::pending_migrations(&db.url).await.unwrap().is_empty());
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_cache_rows_written_as_jsonb_survive_the_move_to_bytes() {
    // A database as it was before 2026-12-22-000001_day_cache_bytes (the migration's own down.sql), holding a day
    // written as JSONB; migrating reads it back as the same JSON, byte for byte as JSONB prints it.
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/2026-12-22-000001_day_cache_bytes");
    let down = std::fs::read_to_string(dir.join("down.sql")).unwrap();
    for statement in down.split(';').filter(|s| !s.trim().is_empty()) {
        sql_query(statement).execute(&mut c).await.unwrap();
    }
    sql_query("DELETE FROM __diesel_schema_migrations WHERE version = '20261222000001'")
        .execute(&mut c)
        .await
        .unwrap();
    let aggregate = serde_json::json!({
        "sessions": 3,
        "commands": {"uname -a": [1, 2], "cat /proc/cpuinfo | grep name": [3]},
        "note": "quotes \" and unicode é survive"
    });
    sql_query(
        "INSERT INTO longtail_day_cache \
         (sensor_key, day, params_key, fingerprint, format_version, session_count, aggregate) \
         VALUES ('*', '2024-09-28', 'p', 'f', 3, 3, $1::jsonb)",
    )
    .bind::<diesel::sql_types::Text, _>(aggregate.to_string())
    .execute(&mut c)
    .await
    .unwrap();
    assert_eq!(
        store::pending_migrations(&db.url).await.unwrap().len(),
        1,
        "only the byte migration is pending"
    );

    let applied = store::run_migrations(&db.url).await.unwrap();
    assert_eq!(applied.len(), 1, "{applied:?}");
    let day = chrono::NaiveDate::from_ymd_opt(2024, 9, 28).unwrap();
    let rows = store::day_cache::load_days(&mut c, None, "p", &[day])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].format_version, rows[0].session_count),
        (3, 3),
        "the row's other columns"
    );
    let back: serde_json::Value = serde_json::from_slice(&rows[0].aggregate)
        .expect("the converted bytes are the JSON the row held");
    assert_eq!(back, aggregate);
    drop(c);
    db.drop_db().await;
}
