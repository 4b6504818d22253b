//! `trackhrs.agent.v1.AgentIngest`: a device uploads a batch of spans, or a
//! batch of changes to its raw ActivityWatch timelines, with its device
//! token; the ingest use cases admit and record them. The token is checked
//! from the headers by [`DeviceGate`] before the body is read.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use trackhrs_app::ingest::{Recorded, Upload};
use trackhrs_app::{AppError, Authenticator, DeviceIdentity, Ingest};
use trackhrs_domain::activity::{RetractionInput, SpanInput};
use trackhrs_domain::timeline::{TimelineChange, TimelineEventInput};
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_ingest_server::AgentIngest;

use crate::caller;
use crate::status::status;

/// The ingest service.
pub struct IngestService {
    ingest: Ingest,
}

impl IngestService {
    /// A service over the ingest use cases; serve it behind a
    /// [`DeviceGate`].
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }
}

/// Authenticates the device token of every call from its headers before
/// the body is read, so a caller without a valid token is answered at once
/// whatever it sends (or is slow to send) after them. The handlers find
/// the device in the request's extensions.
#[derive(Clone)]
pub struct DeviceGate<S> {
    auth: Authenticator,
    inner: S,
}

impl<S> DeviceGate<S> {
    /// `inner` behind the gate.
    pub fn new(auth: Authenticator, inner: S) -> Self {
        Self { auth, inner }
    }
}

impl<S: NamedService> NamedService for DeviceGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for DeviceGate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let auth = self.auth.clone();
        // The clone takes the place of the service that was made ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let identity = match caller::bearer_token(authorization) {
                Ok(token) => auth.device(token).await.map_err(status),
                Err(refused) => Err(refused),
            };
            match identity {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    inner.call(request).await
                }
                Err(refused) => Ok(refused.into_http()),
            }
        })
    }
}

/// The device [`DeviceGate`] authenticated.
fn device<T>(request: &Request<T>) -> Result<DeviceIdentity, Status> {
    request
        .extensions()
        .get::<DeviceIdentity>()
        .cloned()
        .ok_or_else(|| Status::internal("the ingest service is served without its device gate"))
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
        retractions_read: true,
    }))
}

#[tonic::async_trait]
impl AgentIngest for IngestService {
    async fn upload_batch(
        &self,
        request: Request<pb::UploadBatchRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = device(&request)?;
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
        let retractions = r
            .retractions
            .into_iter()
            .map(|r| RetractionInput {
                start_ms: r.start_unix_ms,
                end_ms: r.end_unix_ms,
            })
            .collect();
        let batch_id = upload.batch_id.clone();
        reply(
            batch_id,
            self.ingest
                .upload_spans(&identity, upload, retractions)
                .await,
        )
    }

    async fn upload_timeline(
        &self,
        request: Request<pb::UploadTimelineRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = device(&request)?;
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
