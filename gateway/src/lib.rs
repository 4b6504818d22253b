//! The tonic gRPC gateway. Today it serves the standard gRPC health service
//! (reporting whether the event store is reachable) and server reflection, so
//! standard tools (grpcurl, grpc_health_probe) work; agent ingest, commands and
//! read-model queries are added here as they land.
//!
//! Architecture invariant: nothing imports this crate but the `trackhrs` binary.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

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
}

/// Serves the gateway on `listener` until `shutdown` completes.
///
/// `store_reachable` is polled every second; the health service reports
/// SERVING for the server ("") and for [`EVENT_STORE_HEALTH`] only while it
/// returns true.
pub async fn serve(
    listener: TcpListener,
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
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await;
    probe.abort();
    Ok(served?)
}
