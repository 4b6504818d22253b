//! A reference for gRPC ingest on this machine, for `bench pipeline`: a
//! service with the gateway's transport settings whose `UploadBatch` does
//! the least any gRPC ingest must do (decode the request, encode it again,
//! publish it to JetStream under its batch id and wait for the
//! acknowledgement) and nothing of the gateway's own work (no device check,
//! no domain, no events, no sealing). What ingest reaches against it shows
//! the gateway's own cost; what it reaches against raw publish, the gRPC
//! hop's (its messages are the uploads' protobuf, about half the size of a
//! stored commit).

use std::net::SocketAddr;

use async_nats::jetstream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_ingest_server::{AgentIngest, AgentIngestServer};

/// Subjects of the stream the floor service publishes to.
const SUBJECTS: &str = "benchgrpc.>";

struct Floor {
    js: jetstream::Context,
}

#[tonic::async_trait]
impl AgentIngest for Floor {
    async fn upload_batch(
        &self,
        request: Request<pb::UploadBatchRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let r = request.into_inner();
        let payload = prost::Message::encode_to_vec(&r);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.batch_id.as_str());
        let ack = self
            .js
            .publish_with_headers(format!("benchgrpc.{}", r.batch_id), headers, payload.into())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::UploadBatchResponse {
            batch_id: r.batch_id,
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
            // It stands in for a current gateway, which reads retractions.
            retractions_read: true,
        }))
    }

    async fn upload_timeline(
        &self,
        _: Request<pb::UploadTimelineRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        Err(Status::unimplemented("the floor service takes spans only"))
    }
}

/// Creates the floor's stream and serves the floor service on a free port
/// until the process ends; returns its address.
pub async fn serve(js: jetstream::Context) -> anyhow::Result<SocketAddr> {
    js.create_or_update_stream(jetstream::stream::Config {
        name: "BENCH_GRPC".into(),
        subjects: vec![SUBJECTS.into()],
        ..Default::default()
    })
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = AgentIngestServer::new(Floor { js })
        .max_decoding_message_size(trackhrs_platform::MAX_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    Ok(addr)
}
