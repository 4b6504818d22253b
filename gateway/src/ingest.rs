//! `trackhrs.agent.v1.AgentIngest`: a device uploads a batch of spans, or a
//! batch of changes to its raw ActivityWatch timelines, with its device
//! token; the ingest use cases admit and record them.

use tonic::{Request, Response, Status};
use trackhrs_app::ingest::{Recorded, Upload};
use trackhrs_app::{AppError, Authenticator, Ingest};
use trackhrs_domain::activity::SpanInput;
use trackhrs_domain::timeline::{TimelineChange, TimelineEventInput};
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_ingest_server::AgentIngest;

use crate::caller;
use crate::status::status;

/// The ingest service.
pub struct IngestService {
    auth: Authenticator,
    ingest: Ingest,
}

impl IngestService {
    /// A service over the ingest use cases.
    pub fn new(auth: Authenticator, ingest: Ingest) -> Self {
        Self { auth, ingest }
    }
}

fn timeline_change(change: pb::TimelineChange) -> Result<TimelineChange, Status> {
    use pb::timeline_change::Change;
    match change.change {
        Some(Change::Event(e)) => Ok(TimelineChange::Event(TimelineEventInput {
            bucket: e.bucket_id,
            bucket_type: e.bucket_type,
            client: e.client,
            key: e.event_key,
            version: e.version,
            start_us: e.start_unix_us,
            end_us: e.end_unix_us,
            data: e.data_json,
        })),
        Some(Change::Retraction(r)) if r.event_key.is_empty() => {
            Ok(TimelineChange::RetractBucket {
                bucket: r.bucket_id,
            })
        }
        Some(Change::Retraction(r)) => Ok(TimelineChange::RetractEvent {
            bucket: r.bucket_id,
            key: r.event_key,
        }),
        None => Err(Status::invalid_argument(
            "changes: a change must be an event or a retraction",
        )),
    }
}

fn reply(
    batch_id: String,
    recorded: Result<Recorded, AppError>,
) -> Result<Response<pb::UploadBatchResponse>, Status> {
    let recorded = recorded.map_err(status)?;
    Ok(Response::new(pb::UploadBatchResponse {
        batch_id,
        stream_sequence: recorded.position,
        duplicate: recorded.duplicate,
    }))
}

#[tonic::async_trait]
impl AgentIngest for IngestService {
    async fn upload_batch(
        &self,
        request: Request<pb::UploadBatchRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = caller::device(&self.auth, &request).await?;
        let r = request.into_inner();
        let encoded = prost::Message::encode_to_vec(&r);
        let upload = Upload {
            batch_id: r.batch_id,
            seq: r.device_batch_seq,
            items: r
                .spans
                .into_iter()
                .map(|s| SpanInput {
                    start_ms: s.start_unix_ms,
                    end_ms: s.end_unix_ms,
                    app: s.app,
                    title: s.title,
                    url: s.url,
                    active: s.active,
                })
                .collect(),
            encoded,
        };
        let batch_id = upload.batch_id.clone();
        reply(batch_id, self.ingest.upload_spans(&identity, upload).await)
    }

    async fn upload_timeline(
        &self,
        request: Request<pb::UploadTimelineRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = caller::device(&self.auth, &request).await?;
        let r = request.into_inner();
        let encoded = prost::Message::encode_to_vec(&r);
        let upload = Upload {
            batch_id: r.batch_id,
            seq: r.device_timeline_seq,
            items: r
                .changes
                .into_iter()
                .map(timeline_change)
                .collect::<Result<_, _>>()?,
            encoded,
        };
        let batch_id = upload.batch_id.clone();
        reply(
            batch_id,
            self.ingest.upload_timeline(&identity, upload).await,
        )
    }
}
