//! Least-privilege roles on a real PostgreSQL (`store::roles`): the API's role can only read, the loader's and the
//! workers' can write their own tables and nothing else, none of them can drop, alter or truncate a table, every
//! table of the migrated schema is classified, the components' start-up "migrate" works under these roles once the
//! owner has migrated, and `deploy/postgres/roles.sql` is the script `store::roles::sql()` generates.

use diesel::sql_types::{Bool, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use store::roles::{
    API_ROLE, LOADER_ROLE, LOADER_TABLES, OWNER_ONLY_TABLES, WORKER_ROLE, WORKER_TABLES,
};
use store::test_support::TestDb;

/// The password the test gives the roles, so the test also works where PostgreSQL asks for one.
const ROLE_PASSWORD: &str = "roles-test-password";

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    ok: bool,
}

/// `db.url` with `role` as the user.
fn url_as(db: &TestDb, role: &str) -> String {
    let (_, rest) = db.url.split_once("://").expect("a URL");
    let host_and_db = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("postgres://{role}:{ROLE_PASSWORD}@{host_and_db}")
}

async fn connect_as(db: &TestDb, role: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(&url_as(db, role))
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

/// Run `sql` as whoever `conn` is and return the error text, panicking if it succeeded.
async fn refused(conn: &mut AsyncPgConnection, sql: &str) -> String {
    match sql_query(sql).execute(conn).await {
        Ok(_) => panic!("{sql:?} should have been refused"),
        Err(e) => e.to_string(),
    }
}

async fn may(conn: &mut AsyncPgConnection, role: &str, table: &str, right: &str) -> bool {
    sql_query(format!(
        "SELECT has_table_privilege('{role}', '{table}', '{right}') AS ok"
    ))
    .get_result::<Flag>(conn)
    .await
    .expect("has_table_privilege")
    .ok
}

#[tokio::test]
async fn each_role_has_the_least_rights_it_needs() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut owner = db.connect().await;
    store::roles::apply(&mut owner).await.expect("roles script");
    // Idempotent: a second run (after a migration, say) succeeds and changes nothing.
    store::roles::apply(&mut owner)
        .await
        .expect("roles script again");
    for role in [API_ROLE, LOADER_ROLE, WORKER_ROLE] {
        sql_query(format!("ALTER ROLE {role} PASSWORD '{ROLE_PASSWORD}'"))
            .execute(&mut owner)
            .await
            .expect("set the test password");
    }

    // Every table the migrations made is in exactly one list.
    let tables: Vec<String> = sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .load::<Name>(&mut owner)
    .await
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    let listed: Vec<&str> = [LOADER_TABLES, WORKER_TABLES, OWNER_ONLY_TABLES].concat();
    for t in &tables {
        assert!(
            listed.contains(&t.as_str()),
            "table {t} is in no list of store::roles: decide who writes it (LOADER_TABLES, WORKER_TABLES or \
             OWNER_ONLY_TABLES)"
        );
    }
    for t in &listed {
        assert!(
            tables.contains(&t.to_string()),
            "store::roles lists {t}, which the migrations do not create"
        );
    }

    // Grants, table by table: everyone reads everything; writes only where listed.
    for t in &tables {
        for role in [API_ROLE, LOADER_ROLE, WORKER_ROLE] {
            assert!(may(&mut owner, role, t, "SELECT").await, "{role} reads {t}");
            for right in ["TRUNCATE", "REFERENCES", "TRIGGER"] {
                assert!(
                    !may(&mut owner, role, t, right).await,
                    "{role} has {right} on {t}"
                );
            }
        }
        for right in ["INSERT", "UPDATE", "DELETE"] {
            assert!(
                !may(&mut owner, API_ROLE, t, right).await,
                "the API may {right} {t}"
            );
            assert_eq!(
                may(&mut owner, LOADER_ROLE, t, right).await,
                LOADER_TABLES.contains(&t.as_str()),
                "loader {right} {t}"
            );
            assert_eq!(
                may(&mut owner, WORKER_ROLE, t, right).await,
                WORKER_TABLES.contains(&t.as_str()),
                "worker {right} {t}"
            );
        }
    }

    // The API's role: reads, and every write or DDL is refused by PostgreSQL.
    let mut api = connect_as(&db, API_ROLE).await;
    sql_query("SELECT count(*) FROM raw_events")
        .execute(&mut api)
        .await
        .expect("the API reads");
    let e = refused(
        &mut api,
        "INSERT INTO api_keys (id, name, key_hash, prefix, scopes) VALUES ('x', 'x', 'x', 'x', '{}')",
    )
    .await;
    assert!(e.contains("permission denied for table api_keys"), "{e}");
    let e = refused(&mut api, "UPDATE loader_runs SET sensor = sensor").await;
    assert!(e.contains("permission denied"), "{e}");
    let e = refused(&mut api, "DELETE FROM raw_events").await;
    assert!(e.contains("permission denied"), "{e}");
    let e = refused(&mut api, "DROP TABLE raw_events").await;
    assert!(e.contains("must be owner"), "{e}");
    let e = refused(&mut api, "CREATE TABLE intruder (x int)").await;
    assert!(e.contains("permission denied for schema public"), "{e}");

    // The loader's role: cannot drop, truncate or alter a table, nor write the analysis results or API keys.
    let mut loader = connect_as(&db, LOADER_ROLE).await;
    for t in [
        "raw_events",
        "session_summaries",
        "api_keys",
        "longtail_analysis",
    ] {
        let e = refused(&mut loader, &format!("DROP TABLE {t}")).await;
        assert!(e.contains("must be owner"), "{e}");
    }
    let e = refused(&mut loader, "TRUNCATE raw_events").await;
    assert!(e.contains("permission denied"), "{e}");
    let e = refused(
        &mut loader,
        "ALTER TABLE raw_events ADD COLUMN intruder int",
    )
    .await;
    assert!(e.contains("must be owner"), "{e}");
    let e = refused(&mut loader, "DELETE FROM longtail_analysis").await;
    assert!(
        e.contains("permission denied for table longtail_analysis"),
        "{e}"
    );
    sql_query("DELETE FROM dead_letter_events WHERE false")
        .execute(&mut loader)
        .await
        .expect("the loader writes its own tables");

    // The workers' role: writes results, not events.
    let mut worker = connect_as(&db, WORKER_ROLE).await;
    let e = refused(&mut worker, "DELETE FROM raw_events").await;
    assert!(e.contains("permission denied for table raw_events"), "{e}");
    let e = refused(&mut worker, "DROP TABLE longtail_analysis").await;
    assert!(e.contains("must be owner"), "{e}");
    sql_query("DELETE FROM longtail_day_cache WHERE false")
        .execute(&mut worker)
        .await
        .expect("the worker writes its own tables");

    // Components that migrate on start work under these roles once the owner has migrated.
    for role in [API_ROLE, LOADER_ROLE, WORKER_ROLE] {
        let applied = store::run_migrations(&url_as(&db, role))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert!(applied.is_empty(), "{role} applied {applied:?}");
    }
    // Tables the owner adds later are readable at once (default privileges), writable by nobody until the script runs.
    sql_query("CREATE TABLE later_table (x int)")
        .execute(&mut owner)
        .await
        .unwrap();
    assert!(may(&mut owner, API_ROLE, "later_table", "SELECT").await);
    assert!(!may(&mut owner, LOADER_ROLE, "later_table", "INSERT").await);

    drop((api, loader, worker, owner));
    db.drop_db().await;
}

#[test]
fn the_shipped_script_is_the_generated_one() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/postgres/roles.sql");
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    if shipped != store::roles::sql() {
        if std::env::var("CELERIAC_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, store::roles::sql()).expect("write roles.sql");
            return;
        }
        panic!(
            "{} differs from store::roles::sql(); regenerate it with CELERIAC_BLESS=1 cargo test -p store --test roles",
            path.display()
        );
    }
}
