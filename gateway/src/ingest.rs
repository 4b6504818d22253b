//! `trackhrs.agent.v1.AgentIngest`: a device uploads a batch of spans, or a
//! batch of changes to its raw ActivityWatch timelines, with its device
//! token; each batch becomes one commit on the device's activity (or raw
//! timeline) aggregate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use trackhrs_commands::CommandError;
use trackhrs_domain::Aggregate;
use trackhrs_domain::Token;
use trackhrs_domain::activity::{
    ActivityCommand, ActivityError, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_domain::organization::Organization;
use trackhrs_domain::timeline::{
    DeviceTimeline, TimelineChange, TimelineCommand, TimelineError, TimelineEventInput,
    TimelineLimits,
};
use trackhrs_nats::CommitMeta;
use trackhrs_schemas::agent::v1 as pb;
use trackhrs_schemas::agent::v1::agent_ingest_server::AgentIngest;

use crate::auth::DeviceIdentity;
use crate::core::Core;
use crate::{caller, status, validate};

/// Limits of an upload.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most spans in one batch; more is RESOURCE_EXHAUSTED.
    pub max_spans: usize,
    /// Most bytes of one encoded batch (a commit must stay under NATS's
    /// 1 MiB message limit once encoded and sealed); more is
    /// RESOURCE_EXHAUSTED.
    pub max_batch_bytes: usize,
    /// How far in the future a span may end.
    pub max_skew: Duration,
    /// How far in the past a span may start.
    pub horizon: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_spans: 1000,
            max_batch_bytes: 256 * 1024,
            max_skew: Duration::from_secs(120),
            horizon: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The ingest service.
pub struct IngestService {
    core: Arc<Core>,
}

impl IngestService {
    /// A service over the shared state.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The device's standing, its member and the privacy policy, from the org
/// aggregate.
fn standing(org: &Organization, device: &Token) -> (DeviceStatus, Option<Token>, Privacy) {
    let privacy = Privacy {
        titles: org.settings.capture_titles,
        urls: org.settings.capture_urls,
    };
    let Some(d) = org.devices.get(device) else {
        return (DeviceStatus::Unknown, None, privacy);
    };
    let active = !d.revoked && org.members.get(&d.member).is_some_and(|m| m.active);
    let status = if active {
        DeviceStatus::Active
    } else {
        DeviceStatus::Revoked
    };
    (status, Some(d.member.clone()), privacy)
}

/// What both uploads check and look up before deciding: the request's size,
/// its batch id, and the device's standing and privacy policy.
struct Admitted {
    org: Token,
    device: Token,
    batch_id: String,
    digest: String,
    status: DeviceStatus,
    member: Token,
    privacy: Privacy,
}

impl IngestService {
    async fn admit(
        &self,
        identity: &DeviceIdentity,
        encoded: &[u8],
        batch_id: &str,
        field: &str,
    ) -> Result<Admitted, Status> {
        let config = &self.core.ingest;
        if encoded.len() > config.max_batch_bytes {
            return Err(Status::resource_exhausted(format!(
                "{field}: a batch is at most {} bytes; split it",
                config.max_batch_bytes
            )));
        }
        let batch_id = validate::command_id(batch_id).map_err(|_| {
            Status::invalid_argument("batch_id: must be 1 to 128 characters of A-Z a-z 0-9 - _ . :")
        })?;
        let org = Token::new(&identity.org_id)
            .map_err(|_| Status::unauthenticated("invalid credentials"))?;
        let device = Token::new(&identity.device_id)
            .map_err(|_| Status::unauthenticated("invalid credentials"))?;
        let org_id = crate::core::org_aggregate();
        let store = self.core.commands.store();
        // This replica's cached org state is evicted whenever any replica
        // commits to the org (`follow_org_commits`); a standing other than
        // active is checked again on fresh state before it is believed.
        let mut org_state = store
            .load::<Organization>(&org, &org_id)
            .await
            .map_err(|e| status::store(&e))?;
        if standing(&org_state.state, &device).0 != DeviceStatus::Active {
            org_state = store
                .load_fresh::<Organization>(&org, &org_id)
                .await
                .map_err(|e| status::store(&e))?;
        }
        let (status, member, privacy) = standing(&org_state.state, &device);
        let member = member.unwrap_or_else(|| device.clone());
        Ok(Admitted {
            org,
            member,
            digest: crate::core::digest_hex(encoded),
            batch_id,
            device,
            status,
            privacy,
        })
    }

    /// Runs an upload's command; a sequence used before answers with the
    /// original acknowledgement when it was this batch (sent again after the
    /// store forgot its id), and is refused when it was another.
    async fn record<A: Aggregate>(
        &self,
        admitted: &Admitted,
        command: A::Command,
        used: impl Fn(&CommandError<A::Error>) -> bool,
        refused: impl Fn(CommandError<A::Error>) -> Status,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let Admitted {
            org,
            device,
            batch_id,
            digest,
            ..
        } = admitted;
        let meta = CommitMeta::new(batch_id, format!("device:{device}"), now_ms() * 1000)
            .with_request_digest(digest.clone());
        let appended = match self
            .core
            .commands
            .execute::<A>(org, device, command, &meta)
            .await
        {
            Ok(executed) => executed.appended,
            Err(e) if used(&e) => {
                let original = self
                    .core
                    .commands
                    .store()
                    .find_command::<A>(org, device, batch_id)
                    .await
                    .map_err(|e| status::store(&e))?
                    .ok_or_else(|| refused(e))?;
                Some(
                    original
                        .for_retry_of(&meta)
                        .map_err(|e| status::store(&e))?,
                )
            }
            Err(e) => return Err(refused(e)),
        };
        let appended = appended.ok_or_else(|| Status::internal("a batch always records events"))?;
        Ok(Response::new(pb::UploadBatchResponse {
            batch_id: batch_id.clone(),
            stream_sequence: appended.position,
            duplicate: appended.duplicate,
        }))
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

#[tonic::async_trait]
impl AgentIngest for IngestService {
    async fn upload_batch(
        &self,
        request: Request<pb::UploadBatchRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = caller::device(&self.core.auth, &request).await?;
        let r = request.into_inner();
        let config = &self.core.ingest;
        if r.spans.len() > config.max_spans {
            return Err(Status::resource_exhausted(format!(
                "spans: a batch holds at most {} spans; split it",
                config.max_spans
            )));
        }
        let encoded = prost::Message::encode_to_vec(&r);
        let admitted = self
            .admit(&identity, &encoded, &r.batch_id, "spans")
            .await?;
        if r.device_batch_seq == 0 {
            return Err(Status::invalid_argument("device_batch_seq: starts at 1"));
        }
        let spans = r
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
            .collect();
        let command = ActivityCommand::RecordBatch {
            device: admitted.status,
            member: admitted.member.clone(),
            batch_id: admitted.batch_id.clone(),
            seq: r.device_batch_seq,
            spans,
            privacy: admitted.privacy,
            limits: IngestLimits {
                now_ms: now_ms(),
                max_skew_ms: config.max_skew.as_millis() as i64,
                horizon_ms: config.horizon.as_millis() as i64,
                max_spans: config.max_spans,
            },
        };
        self.record::<DeviceActivity>(
            &admitted,
            command,
            |e| matches!(e, CommandError::Denied(ActivityError::SequenceUsed { .. })),
            status::activity_command,
        )
        .await
    }

    async fn upload_timeline(
        &self,
        request: Request<pb::UploadTimelineRequest>,
    ) -> Result<Response<pb::UploadBatchResponse>, Status> {
        let identity = caller::device(&self.core.auth, &request).await?;
        let r = request.into_inner();
        let config = &self.core.ingest;
        if r.changes.len() > config.max_spans {
            return Err(Status::resource_exhausted(format!(
                "changes: a batch holds at most {} changes; split it",
                config.max_spans
            )));
        }
        let encoded = prost::Message::encode_to_vec(&r);
        let admitted = self
            .admit(&identity, &encoded, &r.batch_id, "changes")
            .await?;
        if r.device_timeline_seq == 0 {
            return Err(Status::invalid_argument("device_timeline_seq: starts at 1"));
        }
        let changes = r
            .changes
            .into_iter()
            .map(timeline_change)
            .collect::<Result<_, _>>()?;
        let command = TimelineCommand::RecordChanges {
            device: admitted.status,
            member: admitted.member.clone(),
            batch_id: admitted.batch_id.clone(),
            seq: r.device_timeline_seq,
            changes,
            privacy: admitted.privacy,
            limits: TimelineLimits {
                now_ms: now_ms(),
                max_skew_ms: config.max_skew.as_millis() as i64,
                max_changes: config.max_spans,
            },
        };
        self.record::<DeviceTimeline>(
            &admitted,
            command,
            |e| matches!(e, CommandError::Denied(TimelineError::SequenceUsed { .. })),
            status::timeline_command,
        )
        .await
    }
}
