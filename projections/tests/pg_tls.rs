//! PostgreSQL over TLS as the URL's `sslmode` says, against a real server
//! with TLS on: `require` is TLS with the certificate verified (a CA the
//! client does not trust is refused, naming the certificate); the default
//! (`prefer`) and `disable` are plaintext; `require` against a server
//! without TLS is refused.

use trackhrs_harness::PgServer;
use trackhrs_harness::tls::LocalCa;
use trackhrs_projections::postgres::{PgTlsError, connector, effective};

async fn ssl_in_use(
    config: &tokio_postgres::Config,
    tls: trackhrs_projections::postgres::Tls,
) -> Result<bool, tokio_postgres::Error> {
    let (client, connection) = effective(config).connect(tls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_is_verified_tls_and_the_default_is_plaintext() {
    let ca = LocalCa::new("TrackHrs test CA", &["localhost", "127.0.0.1"]).unwrap();
    let server = PgServer::start_private_tls(&ca.cert_pem, &ca.key_pem)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let base = server.connection_string("postgres");
    let config = |mode: &str| -> tokio_postgres::Config {
        format!("{base} sslmode={mode}").parse().unwrap()
    };
    let trusting = connector(Some(&ca_file)).unwrap();

    assert!(
        ssl_in_use(&config("require"), trusting.clone())
            .await
            .unwrap(),
        "require: TLS"
    );
    let default: tokio_postgres::Config = base.parse().unwrap();
    assert!(
        !ssl_in_use(&default, trusting.clone()).await.unwrap(),
        "the default: plaintext"
    );
    assert!(
        !ssl_in_use(&config("prefer"), trusting.clone())
            .await
            .unwrap(),
        "prefer: plaintext"
    );
    assert!(
        !ssl_in_use(&config("disable"), trusting.clone())
            .await
            .unwrap(),
        "disable: plaintext"
    );

    // The system's roots alone do not know the server's CA.
    let refused = ssl_in_use(&config("require"), connector(None).unwrap())
        .await
        .expect_err("an unknown CA");
    let chain = format!("{refused:?}");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // A CA file without a certificate is refused before connecting.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "nothing here").unwrap();
    assert!(matches!(connector(Some(&junk)), Err(PgTlsError::Ca { .. })));

    // require against a server without TLS.
    let plain = PgServer::start_private().await.unwrap();
    let config: tokio_postgres::Config =
        format!("{} sslmode=require", plain.connection_string("postgres"))
            .parse()
            .unwrap();
    assert!(
        ssl_in_use(&config, trusting).await.is_err(),
        "require without TLS on the server"
    );
}
