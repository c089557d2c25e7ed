//! TLS to a real PostgreSQL (`store::connect`): the server's own TLS, with the certificate it is configured with
//! (`ssl_cert_file`; Debian's clusters start with `ssl = on` and the `ssl-cert` snake-oil certificate, made for
//! the name `localhost`). The pool, the migrations and a single connection all go through `connect`.

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use store::test_support::{TestDb, service_missing};

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The server's certificate file, when the server has TLS on (`None` after reacting to its absence).
async fn server_certificate(db: &TestDb) -> Option<String> {
    let mut c = db.connect().await;
    let on: Setting = diesel::sql_query("SELECT current_setting('ssl') AS value")
        .get_result(&mut c)
        .await
        .unwrap();
    if on.value != "on" {
        service_missing(
            "PostgreSQL with ssl = on (Debian's default; set ssl = on with a certificate)",
            &"ssl is off",
        );
        return None;
    }
    let file: Setting = diesel::sql_query("SELECT current_setting('ssl_cert_file') AS value")
        .get_result(&mut c)
        .await
        .unwrap();
    Some(file.value)
}

/// Whether the connection's backend speaks TLS, as the server sees it.
async fn encrypted(c: &mut diesel_async::AsyncPgConnection) -> bool {
    let r: Ssl = diesel::sql_query(
        "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl",
    )
    .get_result(c)
    .await
    .unwrap();
    r.ssl
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_and_verify_ca_encrypt_and_verify_full_checks_the_name() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(cert) = server_certificate(&db).await else {
        db.drop_db().await;
        return;
    };
    if std::fs::read(&cert).is_err() {
        service_missing("the server's certificate file readable by the test", &cert);
        db.drop_db().await;
        return;
    }

    // No sslmode: plain, as before.
    let mut plain = store::connect::connect(&db.url).await.unwrap();
    assert!(!encrypted(&mut plain).await, "no sslmode stays plain");

    // require: encrypted, whatever the certificate.
    let require = with_params(&db.url, "sslmode=require");
    let mut c = store::connect::connect(&require).await.unwrap();
    assert!(encrypted(&mut c).await, "sslmode=require");

    // The pool and the migrations take the same way.
    let pool = store::build_pool(&require, 2, std::time::Duration::from_secs(5));
    let mut pooled = pool.get().await.unwrap();
    assert!(encrypted(&mut pooled).await, "a pooled connection");
    drop(pooled);
    assert_eq!(
        store::run_migrations(&require).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(
        store::pending_migrations(&require)
            .await
            .unwrap()
            .is_empty()
    );

    // verify-ca with the server's own certificate as the root: the chain is checked, not the name.
    let root = cert.replace('/', "%2F");
    let verify_ca = with_params(&db.url, &format!("sslmode=verify-ca&sslrootcert={root}"));
    let mut c = store::connect::connect(&verify_ca).await.unwrap();
    assert!(encrypted(&mut c).await, "sslmode=verify-ca");

    // verify-full: the URL's host (127.0.0.1) is not a name the certificate holds.
    let verify_full = with_params(&db.url, &format!("sslmode=verify-full&sslrootcert={root}"));
    let e = store::connect::connect(&verify_full)
        .await
        .err()
        .expect("refused");
    let e = e.to_string();
    eprintln!("verify-full on 127.0.0.1: {e}");
    assert!(e.contains("not valid for name"), "{e}");
    // The same through a name the certificate holds (Debian's snake-oil is made for `localhost`).
    let by_name = verify_full.replace("127.0.0.1", "localhost");
    match store::connect::connect(&by_name).await {
        Ok(mut c) => assert!(encrypted(&mut c).await, "sslmode=verify-full via localhost"),
        Err(e) if e.to_string().contains("not valid for name") => {
            service_missing(
                "a server certificate made for localhost (Debian's default)",
                &e,
            );
        }
        Err(e) => panic!("verify-full via localhost: {e}"),
    }

    // A root that did not sign the server's certificate: refused, and said so.
    let other_root =
        std::env::temp_dir().join(format!("celeriac-other-root-{}.pem", std::process::id()));
    std::fs::write(&other_root, OTHER_ROOT).unwrap();
    let wrong = with_params(
        &db.url,
        &format!("sslmode=verify-ca&sslrootcert={}", other_root.display()),
    );
    let e = store::connect::connect(&wrong)
        .await
        .err()
        .expect("refused")
        .to_string();
    let _ = std::fs::remove_file(&other_root);
    eprintln!("verify-ca with another root: {e}");
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );

    drop((plain, c));
    db.drop_db().await;
}

/// A self-signed CA certificate that signed nothing the server holds (`openssl req -x509 -newkey ec`, 2026-12-06,
/// valid ten years; its key was thrown away).
const OTHER_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBtjCCAV2gAwIBAgIUVbqWVimASYM8WMou8E2334VgAbMwCgYIKoZIzj0EAwIw
MTEvMC0GA1UEAwwmY2VsZXJpYWMgdGVzdCByb290IHRoYXQgc2lnbmVkIG5vdGhp
bmcwHhcNMjYxMjA2MDYwNDE0WhcNMzYxMjAzMDYwNDE0WjAxMS8wLQYDVQQDDCZj
ZWxlcmlhYyB0ZXN0IHJvb3QgdGhhdCBzaWduZWQgbm90aGluZzBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABDW2JrXAPx3bD+nmOuI41bFOmJwBtkTPqfyvz+ABsbBf
x6rLIttZUlMSvbwrHRZ+GuEx3CZWFri/u6W5Jfb8chmjUzBRMB0GA1UdDgQWBBST
5oZFjQl8K+T8bq0z5zinFf3KSjAfBgNVHSMEGDAWgBST5oZFjQl8K+T8bq0z5zin
Ff3KSjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCID/N1PKSFW06
h7/Z7AgncFAIx2ro3ud23CHSeBPsT4TxAiAjYbAoCcQNMbBcTrERqA39zyhzdUk8
SrLdovBrkcjGgw==
-----END CERTIFICATE-----
";
