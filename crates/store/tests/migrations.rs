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
