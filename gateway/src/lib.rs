//! The tonic gRPC gateway: adapters only. Each service decodes a request,
//! calls one use case of the application layer (`trackhrs-app`), encodes the
//! answer and maps the error to a gRPC status in one place (`status.rs`).
//! Beside them: the standard gRPC health service (reporting whether the
//! event store is reachable) and server reflection, so standard tools
//! (grpcurl, grpc_health_probe) work.
//!
//! Architecture invariant: nothing imports this crate but the `trackhrs`
//! binary, and it reaches the event store, PostgreSQL and the credential
//! store only through `trackhrs-app` (checked by `tests/tests/layering.rs`).
//! Wire types meet the domain here. Every request is scoped to the caller's
//! org.

pub mod agent;
pub mod caller;
pub mod dashboard;
pub mod forwarded;
pub mod identity;
pub mod ingest;
pub mod ops;
pub mod orgs;
pub mod pay;
pub mod status;
pub mod telemetry;
pub mod validate;
pub mod web;
pub mod work;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use trackhrs_app::App;
use trackhrs_schemas::activity::v1::activity_server::ActivityServer;
use trackhrs_schemas::agent::v1::agent_ingest_server::AgentIngestServer;
use trackhrs_schemas::agent::v1::agent_session_server::AgentSessionServer;
use trackhrs_schemas::ops::v1::operations_server::OperationsServer;
use trackhrs_schemas::org::v1::identity_server::IdentityServer;
use trackhrs_schemas::org::v1::organizations_server::OrganizationsServer;
use trackhrs_schemas::pay::v1::pay_server::PayServer;
use trackhrs_schemas::work::v1::work_server::WorkServer;

/// Largest gRPC message a load generator's own fake servers decode
/// (`trackhrs bench floor`); the gateway decodes an upload of at most
/// twice the ingest batch limit, and other messages of at most tonic's
/// 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How the gateway serves, beyond its services: who may forward client
/// addresses, and the limits that keep one client from starving others.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reverse proxies (TLS terminators, load balancers) whose
    /// `X-Forwarded-For` is believed ([`forwarded`]). Empty: the peer is
    /// the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest a call may take from its headers to its answer, reading the
    /// request included (a client's shorter `grpc-timeout` wins); then it
    /// is cancelled.
    pub request_timeout: Duration,
    /// Most calls in flight on one HTTP/2 connection (announced to the
    /// client in its settings).
    pub max_streams_per_connection: u32,
    /// Most calls in flight in the whole gateway (health checks aside);
    /// more are refused with UNAVAILABLE at once.
    pub max_calls: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_streams_per_connection: 100,
            max_calls: 1024,
        }
    }
}

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
    /// The TLS certificate or key cannot be served.
    #[error(
        "the TLS certificate and key cannot be served (PEM files, the key matching the certificate): {0}"
    )]
    Tls(String),
}

/// The connections `listener` accepts, with `TCP_NODELAY` set as tonic sets
/// it on listeners it binds itself: without it, Nagle's algorithm held back
/// replies (a gRPC reply is several small writes) and each upload took about
/// 3.5 ms longer (`benches/results.md`, 2026-11-29).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_config(identity: Identity) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity)
        .timeout(TLS_HANDSHAKE_TIMEOUT)
}

/// Checks that `identity` can be served (a certificate chain and its key,
/// PEM), so a wrong one stops the platform before it starts anything.
pub fn check_tls(identity: Identity) -> Result<(), GatewayError> {
    tonic::transport::Server::builder()
        .tls_config(tls_config(identity))
        .map(|_| ())
        .map_err(tls_error)
}

/// The reason sits in the transport error's sources, not in its message.
fn tls_error(e: tonic::transport::Error) -> GatewayError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    GatewayError::Tls(text)
}

/// Serves the gateway on `listener` until `shutdown` completes: gRPC over
/// HTTP/2, gRPC-Web over HTTP/1.1 and HTTP/2 for browsers, and, given
/// `portal` (the built portal's folder), the portal's files on the same
/// address. Given `tls` (a certificate chain and key), every connection is
/// TLS and plaintext is refused.
///
/// Whether the event store is reachable is checked every second; the health
/// service reports SERVING for the server (""), for [`EVENT_STORE_HEALTH`]
/// and for each gRPC service only while it is.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    portal: Option<PathBuf>,
    tls: Option<Identity>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Reflection in both versions: older clients (grpcurl before 1.8.8, many
    // IDEs) still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(trackhrs_schemas::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Every service needs the event store: each is as healthy as it is.
    let services = [
        "",
        EVENT_STORE_HEALTH,
        <IdentityServer<identity::IdentityService> as NamedService>::NAME,
        <OrganizationsServer<orgs::OrganizationsService> as NamedService>::NAME,
        <AgentSessionServer<agent::AgentSessionService> as NamedService>::NAME,
        <AgentIngestServer<ingest::IngestService> as NamedService>::NAME,
        <ActivityServer<dashboard::ActivityService> as NamedService>::NAME,
        <OperationsServer<ops::OperationsService> as NamedService>::NAME,
        <WorkServer<work::WorkService> as NamedService>::NAME,
        <PayServer<pay::PayService> as NamedService>::NAME,
    ];
    let probed = app.clone();
    let probe = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let status = if probed.store_reachable() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in services {
                reporter.set_service_status(service, status).await;
            }
        }
    });
    tracing::info!(addr = ?listener.local_addr().ok(), portal = portal.is_some(), tls = tls.is_some(), "gateway listening");
    let auth = app.authenticator().clone();
    let grpc = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IdentityServer::new(identity::IdentityService::new(
            app.identity().clone(),
            tls.is_some(),
            forwarded::TrustedProxies::new(options.trusted_proxies),
        )))
        .add_service(OrganizationsServer::new(orgs::OrganizationsService::new(
            auth.clone(),
            app.administration().clone(),
        )))
        .add_service(AgentSessionServer::new(agent::AgentSessionService::new(
            auth.clone(),
            app.ingest().clone(),
        )))
        .add_service(ingest::DeviceGate::new(
            auth.clone(),
            // Twice the ingest batch limit: a batch a little too large gets
            // the ingest checks' RESOURCE_EXHAUSTED with the limit in it;
            // a much larger one is not read.
            AgentIngestServer::new(ingest::IngestService::new(app.ingest().clone()))
                .max_decoding_message_size(2 * app.ingest().max_batch_bytes()),
        ))
        .add_service(ActivityServer::new(dashboard::ActivityService::new(
            auth.clone(),
            app.activity().clone(),
        )))
        .add_service(WorkServer::new(work::WorkService::new(
            auth.clone(),
            app.work().clone(),
        )))
        .add_service(PayServer::new(pay::PayService::new(
            auth.clone(),
            app.pay().clone(),
        )))
        .add_service(OperationsServer::new(ops::OperationsService::new(
            auth,
            app.operations().clone(),
        )));
    // The telemetry layer sees every call as gRPC (inside the gRPC-Web
    // translation), and only calls to the services: portal files are not
    // RPCs.
    let calls = Arc::new(tokio::sync::Semaphore::new(options.max_calls));
    let router = grpc
        .into_axum_router()
        .route_layer(axum::middleware::from_fn_with_state(calls, limit_calls))
        .route_layer(telemetry::RpcLayer)
        .route_layer(tonic_web::GrpcWebLayer::new())
        .fallback(move |request| web::fallback(portal.clone(), request));
    let mut server = tonic::transport::Server::builder()
        .timeout(options.request_timeout)
        .max_concurrent_streams(options.max_streams_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(identity) = tls {
        // Every connection is TLS: a plaintext client fails its handshake.
        server = server.tls_config(tls_config(identity)).map_err(tls_error)?;
    }
    let served = server
        .accept_http1(true)
        .add_routes(Routes::from(router).prepare())
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    probe.abort();
    Ok(served?)
}

/// Refuses a call beyond the gateway's limit of calls in flight with
/// UNAVAILABLE at once (a client retries it later; an agent keeps its
/// batch), except health checks, which a probe must always get through.
async fn limit_calls(
    axum::extract::State(calls): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().starts_with("/grpc.health.v1.Health/") {
        return next.run(request).await;
    }
    match calls.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("trackhrs_calls_shed_total").increment(1);
            tonic::Status::unavailable("the gateway is busy; try again shortly").into_http()
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    #[test]
    fn a_certificate_and_key_that_cannot_be_served_are_refused_with_the_reason() {
        let refused = super::check_tls(super::Identity::from_pem("not a certificate", "not a key"))
            .unwrap_err();
        let text = refused.to_string();
        assert!(
            text.starts_with("the TLS certificate and key cannot be served") && text.len() > 100,
            "{text}"
        );
    }

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
