//! PostgreSQL connections of every role: plaintext unless the URL says
//! `sslmode=require`, then TLS (rustls) with the server's certificate
//! verified against the system's roots and the CA certificate named by
//! `TRACKHRS_PG_CA` (libpq's `verify-full`). `prefer`, tokio-postgres's
//! default, would fall back to plaintext unseen; it is read as `disable`, so
//! a connection is either verified TLS or knowingly plaintext.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

/// The TLS connector of PostgreSQL connections.
pub type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// The environment variable naming a CA certificate (PEM) trusted for
/// PostgreSQL servers, besides the system's roots.
pub const CA_ENV: &str = "TRACKHRS_PG_CA";

/// Why TLS for PostgreSQL cannot be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgTlsError {
    /// The CA certificate file cannot be read or holds no certificate.
    #[error("{CA_ENV}={path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS for PostgreSQL: {0}")]
    Config(String),
}

/// The connector, built once per process from the system's roots and
/// `TRACKHRS_PG_CA`.
pub fn tls() -> Result<Tls, PgTlsError> {
    static TLS: OnceLock<Result<Tls, PgTlsError>> = OnceLock::new();
    TLS.get_or_init(|| {
        let ca = std::env::var_os(CA_ENV).map(PathBuf::from);
        connector(ca.as_deref())
    })
    .clone()
}

/// A connector trusting the system's roots and, given, the CA certificates
/// in `ca` (PEM).
pub fn connector(ca: Option<&Path>) -> Result<Tls, PgTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot read is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        let failed = |reason: String| PgTlsError::Ca {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| failed(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(e.to_string()))?;
        if certs.is_empty() {
            return Err(failed("holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| failed(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgTlsError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Tls::new(config))
}

/// `config` as the platform connects with it: `prefer` becomes `disable`
/// (see the module's documentation); `require` stays TLS, verified.
pub fn effective(config: &Config) -> Config {
    let mut config = config.clone();
    if config.get_ssl_mode() == SslMode::Prefer {
        config.ssl_mode(SslMode::Disable);
    }
    config
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TLS cannot be set up.
    #[error(transparent)]
    Tls(#[from] PgTlsError),
    /// PostgreSQL refused or could not be reached.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects as [`effective`] says; the connection runs on its own task
/// until the client is dropped.
pub async fn connect(config: &Config) -> Result<Client, ConnectError> {
    let (client, connection) = effective(config).connect(tls()?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}
