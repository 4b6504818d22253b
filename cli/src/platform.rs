//! The command line's view of the platform: where PostgreSQL is, the
//! gateway's flags, the shutdown on a signal. The wiring itself is
//! `trackhrs-platform`'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use trackhrs_app::AppConfig;
use trackhrs_domain::Token;
use trackhrs_platform::{ReadModels, Settings, TlsIdentity};

/// Where PostgreSQL is.
#[derive(clap::Args, Clone)]
pub struct PgArgs {
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(long, env = "TRACKHRS_DATABASE_URL", default_value_t = crate::local::database_url())]
    pub database_url: String,
}

impl PgArgs {
    /// The parsed connection settings.
    pub fn config(&self) -> anyhow::Result<tokio_postgres::Config> {
        self.database_url
            .parse()
            .context("invalid PostgreSQL connection string")
    }
}

/// Settings of the gateway role.
#[derive(clap::Args, Clone)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "TRACKHRS_GATEWAY_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "TRACKHRS_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,
    /// PostgreSQL connections of the gateway.
    #[arg(long, env = "TRACKHRS_GATEWAY_PG_POOL", default_value_t = 16)]
    pub pg_pool: usize,
    /// The built portal (`portal/dist`) to serve on the gateway's address;
    /// without it the gateway serves gRPC and gRPC-Web only.
    #[arg(long, env = "TRACKHRS_PORTAL_DIR")]
    pub portal_dir: Option<PathBuf>,
    /// The organization whose owners and admins operate the platform: read
    /// models, dead letters and replays in the portal (`trackhrs dev`: the
    /// demo org).
    #[arg(long, env = "TRACKHRS_OPERATOR_ORG")]
    pub operator_org: Option<String>,
    /// The gateway's TLS certificate chain (PEM): with `--tls-key`, every
    /// connection is TLS and plaintext is refused.
    #[arg(long, env = "TRACKHRS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "TRACKHRS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A reverse proxy (address or network, e.g. 10.0.0.0/8) whose
    /// `X-Forwarded-For` names the client, for the log-in throttle;
    /// repeat it, or separate them with commas. Without one, the peer is
    /// the client.
    #[arg(
        long = "trusted-proxy",
        env = "TRACKHRS_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = network
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest a call may take, reading its request included, in seconds.
    #[arg(long, env = "TRACKHRS_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
}

/// A network (`10.0.0.0/8`), or one address as its own network.
fn network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("{text:?} is not an IP address or network (10.0.0.0/8, 2001:db8::/32)")
        })
}

/// The TLS certificate and key the flags name, read.
fn tls_identity(gateway: &GatewayArgs) -> anyhow::Result<Option<TlsIdentity>> {
    let (Some(cert), Some(key)) = (&gateway.tls_cert, &gateway.tls_key) else {
        return Ok(None);
    };
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
    };
    Ok(Some(TlsIdentity {
        cert_pem: read("--tls-cert", cert)?,
        key_pem: read("--tls-key", key)?,
    }))
}

/// A shutdown signal that many tasks can wait for.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A signal fired by Ctrl-C or SIGTERM.
    pub fn on_signal() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Completes when the signal fires.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Connects to PostgreSQL with the catalog migrated.
pub async fn pg_connect(pg: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let mut client = trackhrs_projections::postgres::connect(pg)
        .await
        .context("connect to PostgreSQL")?;
    trackhrs_projections::migrate(&mut client).await?;
    Ok(client)
}

/// The platform's settings for these flags: the application layer and its
/// pool, and the gateway on `listen`.
pub fn settings(gateway: &GatewayArgs, read_models: ReadModels) -> anyhow::Result<Settings> {
    let mut app = AppConfig::default();
    app.auth.access_ttl = Duration::from_secs(gateway.access_ttl_secs);
    app.operator_org = gateway
        .operator_org
        .as_deref()
        .map(Token::new)
        .transpose()
        .context("--operator-org: not an organization id")?;
    Ok(Settings {
        app,
        pg_pool: gateway.pg_pool,
        gateway: Some(gateway.listen),
        portal: gateway.portal_dir.clone(),
        tls: tls_identity(gateway)?,
        gateway_options: trackhrs_platform::GatewayOptions {
            trusted_proxies: gateway.trusted_proxies.clone(),
            request_timeout: Duration::from_secs(gateway.request_timeout_secs.max(1)),
            ..trackhrs_platform::GatewayOptions::default()
        },
        read_models,
        batch_wait: None,
    })
}
