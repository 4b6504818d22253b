//! The tonic gRPC gateway: identity (sign-up, log-in, tokens), administration
//! of the caller's organization, the agent's session, the standard gRPC
//! health service (reporting whether the event store is reachable) and server
//! reflection, so standard tools (grpcurl, grpc_health_probe) work.
//!
//! Architecture invariant: nothing imports this crate but the `trackhrs`
//! binary. Wire types meet the domain here, and errors become gRPC statuses in
//! one place (`status.rs`). Every request is scoped to the caller's org.

pub mod agent;
pub mod auth;
pub mod caller;
pub mod core;
pub mod dashboard;
pub mod identity;
pub mod ingest;
pub mod orgs;
pub mod status;
pub mod timeline;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use trackhrs_commands::CommandHandler;
use trackhrs_schemas::activity::v1::activity_server::ActivityServer;
use trackhrs_schemas::agent::v1::agent_ingest_server::AgentIngestServer;
use trackhrs_schemas::agent::v1::agent_session_server::AgentSessionServer;
use trackhrs_schemas::org::v1::identity_server::IdentityServer;
use trackhrs_schemas::org::v1::organizations_server::OrganizationsServer;

pub use auth::{Auth, AuthConfig, AuthError};
pub use core::Core;

/// Largest gRPC message the gateway decodes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Name under which the health service reports the event store's reachability.
pub const EVENT_STORE_HEALTH: &str = "trackhrs.events";

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Building reflection from the descriptors failed.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The PostgreSQL pool could not be built.
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    /// The credential store could not be opened.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Token lifetimes and log-in limits.
    pub auth: AuthConfig,
    /// How long a query waits for a read model to reach the position the
    /// caller asked for.
    pub read_wait: Duration,
    /// Upload limits.
    pub ingest: ingest::IngestConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            read_wait: Duration::from_secs(5),
            ingest: ingest::IngestConfig::default(),
        }
    }
}

/// A PostgreSQL connection pool for the gateway (credentials and read-model
/// queries).
pub fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, GatewayError> {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let timeout = Some(Duration::from_secs(5));
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .timeouts(deadpool_postgres::Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        })
        .build()
        .map_err(|e| GatewayError::Pool(e.to_string()))
}

/// Opens the gateway's shared state: applies the credential schema and loads
/// the signing keys.
pub async fn open(
    commands: CommandHandler,
    pool: Pool,
    config: GatewayConfig,
) -> Result<Arc<Core>, GatewayError> {
    let auth = Auth::open(pool.clone(), config.auth).await?;
    let dashboards = dashboard::DashboardCache::default();
    tokio::spawn(follow_org_commits(commands.store().clone()));
    tokio::spawn(dashboard::follow_invalidations(
        commands.store().client().clone(),
        dashboards.clone(),
    ));
    Ok(Arc::new(Core {
        commands,
        auth,
        pool,
        read_wait: config.read_wait,
        ingest: config.ingest,
        dashboards,
    }))
}

/// Evicts this replica's cached state of an organization whenever any
/// replica commits to it (a core NATS subscription sees every JetStream
/// publish), so ingest decides on the org's current devices and privacy
/// policy. Runs until the connection closes.
async fn follow_org_commits(store: trackhrs_nats::EventStore) {
    use futures::StreamExt as _;
    let subject = format!(
        "{}.*.{}.*",
        trackhrs_nats::config::EVENT_SUBJECT_PREFIX,
        <trackhrs_domain::organization::Organization as trackhrs_domain::Aggregate>::TYPE
    );
    match store.client().subscribe(subject.clone()).await {
        Ok(mut commits) => {
            while let Some(msg) = commits.next().await {
                store.forget(msg.subject.as_str());
            }
        }
        Err(e) => tracing::error!(subject, error = %e, "cannot follow organization commits"),
    }
}

/// The connections `listener` accepts, with `TCP_NODELAY` set as tonic sets
/// it on listeners it binds itself: without it, Nagle's algorithm held back
/// replies (a gRPC reply is several small writes) and each upload took about
/// 3.5 ms longer (`benches/results.md`, 2026-11-29).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves the gateway on `listener` until `shutdown` completes.
///
/// `store_reachable` is polled every second; the health service reports
/// SERVING for the server ("") and for [`EVENT_STORE_HEALTH`] only while it
/// returns true.
pub async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    store_reachable: impl Fn() -> bool + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trackhrs_schemas::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let probe = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let status = if store_reachable() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(EVENT_STORE_HEALTH, status)
                .await;
        }
    });
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(IdentityServer::new(identity::IdentityService::new(
            core.clone(),
        )))
        .add_service(OrganizationsServer::new(orgs::OrganizationsService::new(
            core.clone(),
        )))
        .add_service(AgentSessionServer::new(agent::AgentSessionService::new(
            core.clone(),
        )))
        .add_service(
            // Larger than any batch the ingest limits accept, so an oversized
            // batch gets RESOURCE_EXHAUSTED from the ingest checks.
            AgentIngestServer::new(ingest::IngestService::new(core.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ActivityServer::new(dashboard::ActivityService::new(core)))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    probe.abort();
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = accepted.next().await.unwrap().unwrap();
        assert!(conn.nodelay().unwrap());
    }
}
