//! Uploading the outbox to the gateway's gRPC ingest. One batch at a time,
//! in sequence order; a batch leaves the outbox only when the gateway has
//! acknowledged it; failures back off exponentially with full jitter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::timeline_change::Change;
use trackhrs_schemas::agent::v1::{
    Retraction, Span, TimelineChange, UploadBatchRequest, UploadBatchResponse,
    UploadTimelineRequest,
};

use crate::aw::store::{AwError, AwStore};
use crate::aw::timeline::{TimelineBatch, TimelineRefused};
use crate::outbox::{Batch, Outbox, OutboxError, Refused};
use crate::privacy::Policy;

/// Upload settings.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Most spans per batch (the gateway's limit is 1000).
    pub max_spans: usize,
    /// First pause after a failure.
    pub base_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_spans: 500,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What one upload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploaded {
    /// Nothing was waiting.
    Nothing,
    /// The batch is stored (or had been: `duplicate`) at this stream position.
    Stored {
        /// Its sequence number.
        seq: u64,
        /// The stream position of its commit (0 when the gateway recognised
        /// an earlier attempt without naming it).
        position: u64,
        /// True when the gateway had stored it before (an earlier attempt
        /// whose acknowledgement was lost).
        duplicate: bool,
    },
    /// The gateway refused the batch for good: its spans and retractions
    /// were split into batches of one, or the one span was set aside, or
    /// the one retraction dropped (see [`Outbox::refuse`]).
    Refused {
        /// Its sequence number (free again).
        seq: u64,
        /// What became of its spans and retractions.
        outcome: Refused,
        /// The gateway's reason.
        reason: String,
    },
}

/// Why an upload did not go through (the batch stays in the outbox).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The local ActivityWatch store (the raw timelines' queue) failed.
    #[error(transparent)]
    Timelines(#[from] AwError),
    /// The gateway could not be reached or answered with a passing error;
    /// the same batch is sent again later.
    #[error("upload failed, will retry: {0}")]
    Retry(tonic::Status),
    /// The device token is refused: uploads cannot succeed until the device
    /// is enrolled again.
    #[error("the device token is refused: {0}")]
    Unauthorized(tonic::Status),
}

/// The longest wait a refusal's `retry-after` is believed for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl SyncError {
    /// How long the gateway asked to wait before the next attempt (a rate
    /// limit's `retry-after`, at most an hour); zero when it did not.
    pub fn wait(&self) -> Duration {
        match self {
            Self::Retry(status) => retry_after(status).unwrap_or_default().min(MAX_RETRY_AFTER),
            _ => Duration::ZERO,
        }
    }
}

/// Uploads batches with one device token.
pub struct Uploader {
    client: AgentIngestClient<Channel>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    config: SyncConfig,
    /// The gateway records retractions: new batches may carry them (until
    /// an acknowledgement says they were not read).
    retractions: bool,
}

/// The batch as sent, with what `policy` forbids removed (it may have
/// become stricter since the spans were stored).
fn wire(batch: &Batch, policy: &Policy) -> UploadBatchRequest {
    UploadBatchRequest {
        batch_id: batch.batch_id.clone(),
        device_batch_seq: batch.seq,
        spans: batch
            .spans
            .iter()
            .map(|e| {
                let mut data = e.data.clone();
                policy.apply(&mut data);
                Span {
                    start_unix_ms: e.start_ms,
                    end_unix_ms: e.end_ms(),
                    app: data.app,
                    title: data.title,
                    url: data.url,
                    active: data.active,
                }
            })
            .collect(),
        retractions: batch
            .retractions
            .iter()
            .map(|&(start_unix_ms, end_unix_ms)| Retraction {
                start_unix_ms,
                end_unix_ms,
            })
            .collect(),
    }
}

/// A raw-timeline change as sent: where `policy` forbids titles or URLs,
/// only the fields the platform's allow-list for the bucket's type lets
/// through ([`trackhrs_domain::timeline::allowed_data`]; data that is not a
/// JSON object is sent as it is, for the gateway to refuse).
fn wire_change(change: &TimelineChange, policy: &Policy) -> TimelineChange {
    let mut change = change.clone();
    if let Some(Change::Event(e)) = &mut change.change
        && let Ok(serde_json::Value::Object(data)) = serde_json::from_str(&e.data_json)
    {
        let privacy = trackhrs_domain::activity::Privacy {
            titles: policy.capture_titles,
            urls: policy.capture_urls,
        };
        let kept = trackhrs_domain::timeline::allowed_data(&e.bucket_type, data, privacy);
        e.data_json = serde_json::Value::Object(kept).to_string();
    }
    change
}

/// A change named for a log line: its kind, bucket and key, never its data.
fn described(change: &TimelineChange) -> String {
    match &change.change {
        Some(Change::Event(e)) => format!(
            "event {} version {} of bucket {}",
            e.event_key, e.version, e.bucket_id
        ),
        Some(Change::Retraction(r)) if r.event_key.is_empty() => {
            format!("retraction of bucket {}", r.bucket_id)
        }
        Some(Change::Retraction(r)) => {
            format!(
                "retraction of event {} of bucket {}",
                r.event_key, r.bucket_id
            )
        }
        None => "an empty change".into(),
    }
}

/// How long a refusal asks the device to wait (its `retry-after`
/// metadata, in seconds: a rate limit), if it does.
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    let seconds: u64 = status
        .metadata()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// How an acknowledged or refused upload is taken.
enum Sent {
    Stored {
        position: u64,
        duplicate: bool,
        /// The gateway read the batch's retractions (an older one does not).
        retractions_read: bool,
    },
    Refused(tonic::Status),
}

/// Sorts an upload's answer: stored (also as an earlier attempt whose
/// reply was lost), refused for good, or an error to retry or to stop on.
fn sorted(answer: Result<UploadBatchResponse, tonic::Status>) -> Result<Sent, SyncError> {
    match answer {
        Ok(ack) => Ok(Sent::Stored {
            position: ack.stream_sequence,
            duplicate: ack.duplicate,
            retractions_read: ack.retractions_read,
        }),
        // The batch id is ours alone (a fresh UUID): the gateway stored an
        // earlier attempt of this batch whose reply was lost, sent before
        // the privacy policy became stricter and changed its content. The
        // answer does not say whether its retractions were read: they count
        // as read.
        Err(status) if status.code() == Code::AlreadyExists => Ok(Sent::Stored {
            position: 0,
            duplicate: true,
            retractions_read: true,
        }),
        // Over a rate limit: the same batch later, not before it says.
        Err(status) if retry_after(&status).is_some() => Err(SyncError::Retry(status)),
        // Bad, or too large (for the checks, or for the gateway to read).
        Err(status)
            if matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
            ) =>
        {
            Ok(Sent::Refused(status))
        }
        Err(status)
            if matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ) =>
        {
            Err(SyncError::Unauthorized(status))
        }
        Err(status) => Err(SyncError::Retry(status)),
    }
}

impl Uploader {
    /// An uploader over `channel` with the device token `token`.
    pub fn new(channel: Channel, token: &str, config: SyncConfig) -> Result<Self, SyncError> {
        let bearer = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            SyncError::Unauthorized(tonic::Status::unauthenticated(
                "the device token is not valid metadata",
            ))
        })?;
        Ok(Self {
            client: AgentIngestClient::new(channel),
            bearer,
            config,
            retractions: false,
        })
    }

    /// Whether the gateway records retractions (its policy says so): until
    /// told it does, new batches carry spans only and retractions wait in
    /// the outbox (a gateway that does not know them would acknowledge a
    /// batch without recording them). An acknowledgement that says the
    /// retractions were not read (an older gateway behind the same address)
    /// stops them again until the next call says so.
    pub fn accept_retractions(&mut self, accepted: bool) {
        self.retractions = accepted;
    }

    /// Sends one batch and returns the gateway's acknowledgement; the caller
    /// removes it from the outbox (see [`Uploader::upload_next`]).
    pub async fn send(
        &mut self,
        batch: &Batch,
        policy: &Policy,
    ) -> Result<UploadBatchResponse, tonic::Status> {
        let mut request = tonic::Request::new(wire(batch, policy));
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        Ok(self.client.upload_batch(request).await?.into_inner())
    }

    /// Uploads the next batch of the outbox, if any, under `policy`; new
    /// batches carry retractions only once the gateway records them (see
    /// [`Uploader::accept_retractions`]). When the gateway stored a batch
    /// without reading its retractions, its spans leave the outbox and its
    /// retractions wait again ([`Outbox::acknowledge_spans`]).
    pub async fn upload_next(
        &mut self,
        outbox: &Mutex<Outbox>,
        policy: &Policy,
    ) -> Result<Uploaded, SyncError> {
        let batch = {
            let mut outbox = crate::lock(outbox);
            outbox.next_batch_with(self.config.max_spans, self.retractions)?
        };
        let Some(batch) = batch else {
            return Ok(Uploaded::Nothing);
        };
        match sorted(self.send(&batch, policy).await)? {
            Sent::Stored {
                position,
                duplicate,
                retractions_read,
            } => {
                if retractions_read {
                    crate::lock(outbox).acknowledge(batch.seq)?;
                } else {
                    let released = crate::lock(outbox).acknowledge_spans(batch.seq)?;
                    if released > 0 {
                        self.retractions = false;
                        tracing::warn!(
                            seq = batch.seq,
                            retractions = released,
                            "the gateway stored a batch without reading its retractions (an older gateway); they wait in the outbox until the policy says the gateway records them"
                        );
                    }
                }
                Ok(Uploaded::Stored {
                    seq: batch.seq,
                    position,
                    duplicate,
                })
            }
            // A gateway that reads retractions names them when it refuses
            // them ("retractions: ..."); an older one finds a batch of
            // retractions only empty and says so about its spans.
            Sent::Refused(status)
                if batch.spans.is_empty() && !status.message().starts_with("retractions:") =>
            {
                let outcome = crate::lock(outbox).refuse_unread(batch.seq)?;
                self.retractions = false;
                tracing::warn!(
                    seq = batch.seq,
                    retractions = batch.retractions.len(),
                    "the gateway refused a batch of retractions without reading them (an older gateway); they wait in the outbox until the policy says the gateway records them"
                );
                Ok(Uploaded::Refused {
                    seq: batch.seq,
                    outcome,
                    reason: status.message().to_owned(),
                })
            }
            Sent::Refused(status) => {
                let reason = status.message().to_owned();
                let outcome = crate::lock(outbox).refuse(batch.seq, &reason)?;
                match &outcome {
                    Refused::Split { spans, retractions } => tracing::warn!(
                        seq = batch.seq,
                        spans,
                        retractions,
                        %reason,
                        "the gateway refused a batch; sending its spans and retractions one by one to find the bad one"
                    ),
                    Refused::SetAside { span } => tracing::error!(
                        start_ms = span.start_ms,
                        end_ms = span.end_ms(),
                        %reason,
                        "the gateway refused a span; it is set aside in the outbox and not sent again"
                    ),
                    Refused::Unread { .. } => {}
                    Refused::Dropped { retractions } => tracing::warn!(
                        seq = batch.seq,
                        retractions,
                        %reason,
                        "the gateway refused a retraction (time the employee deleted); it is dropped and not sent again"
                    ),
                }
                Ok(Uploaded::Refused {
                    seq: batch.seq,
                    outcome,
                    reason,
                })
            }
        }
    }

    /// Sends one batch of raw-timeline changes under `policy`.
    pub async fn send_timeline(
        &mut self,
        batch: &TimelineBatch,
        policy: &Policy,
    ) -> Result<UploadBatchResponse, tonic::Status> {
        let mut request = tonic::Request::new(UploadTimelineRequest {
            batch_id: batch.batch_id.clone(),
            device_timeline_seq: batch.seq,
            changes: batch
                .changes
                .iter()
                .map(|c| wire_change(c, policy))
                .collect(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        Ok(self.client.upload_timeline(request).await?.into_inner())
    }

    /// Uploads the next batch of raw-timeline changes queued in `store`, if
    /// any; returns false when nothing was queued. A batch the gateway
    /// refuses for good is split, and a single refused change set aside
    /// with a logged error (never retried forever, never dropped silently).
    pub async fn upload_timeline_next(
        &mut self,
        store: &Mutex<AwStore>,
        policy: &Policy,
    ) -> Result<bool, SyncError> {
        let batch = crate::lock(store).next_timeline_batch(self.config.max_spans)?;
        let Some(batch) = batch else {
            return Ok(false);
        };
        match sorted(self.send_timeline(&batch, policy).await)? {
            Sent::Stored { .. } => crate::lock(store).acknowledge_timeline(batch.seq)?,
            Sent::Refused(status) => {
                let reason = status.message();
                match crate::lock(store).refuse_timeline(batch.seq, reason)? {
                    TimelineRefused::Split { changes } => tracing::warn!(
                        seq = batch.seq,
                        changes,
                        %reason,
                        "the gateway refused a timeline batch; sending its changes one by one to find the bad one"
                    ),
                    TimelineRefused::SetAside { change } => tracing::error!(
                        change = %described(&change),
                        %reason,
                        "the gateway refused a raw timeline change; it is set aside in the ActivityWatch store and not sent again"
                    ),
                }
            }
        }
        Ok(true)
    }

    /// Uploads until the outbox is empty; failed attempts are retried after
    /// a pause (full jitter: uniform up to min(max, base x 2^failures)).
    /// Returns what was uploaded; stops early on `Unauthorized`.
    pub async fn drain(
        &mut self,
        outbox: Arc<Mutex<Outbox>>,
        policy: &Policy,
    ) -> Result<Vec<Uploaded>, SyncError> {
        let mut done = Vec::new();
        let mut failures = 0u32;
        loop {
            match self.upload_next(&outbox, policy).await {
                Ok(Uploaded::Nothing) => return Ok(done),
                Ok(uploaded) => {
                    failures = 0;
                    done.push(uploaded);
                }
                Err(e @ SyncError::Retry(_)) => {
                    failures += 1;
                    let pause = self.backoff(failures).max(e.wait());
                    tracing::info!(error = %e, ?pause, "upload failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The pause after `failures` failed attempts in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let cap = self
            .config
            .base_backoff
            .saturating_mul(1u32 << failures.min(16))
            .min(self.config.max_backoff);
        Duration::from_micros(rand::rng().random_range(0..=cap.as_micros() as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use trackhrs_schemas::agent::v1::TimelineEvent;
    use trackhrs_schemas::agent::v1::agent_ingest_server::{AgentIngest, AgentIngestServer};

    use super::*;
    use crate::outbox::Later;

    #[test]
    fn a_rate_limit_is_retried_and_a_batch_too_large_split() {
        let mut limited = tonic::Status::resource_exhausted("this device uploads too fast");
        limited
            .metadata_mut()
            .insert("retry-after", "7".parse().unwrap());
        assert!(matches!(
            sorted(Err(limited.clone())),
            Err(SyncError::Retry(_))
        ));
        assert_eq!(retry_after(&limited), Some(Duration::from_secs(7)));
        for refused in [
            tonic::Status::resource_exhausted("a batch is at most 262144 bytes; split it"),
            tonic::Status::out_of_range("decoded message length too large"),
            tonic::Status::invalid_argument("spans[3]: ends before it starts"),
        ] {
            assert!(matches!(sorted(Err(refused)), Ok(Sent::Refused(_))));
        }
        assert!(matches!(
            sorted(Err(tonic::Status::unavailable("the gateway is busy"))),
            Err(SyncError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn retractions_are_sent_only_once_the_gateway_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Mutex::new(Outbox::open(&dir.path().join("outbox.db")).unwrap());
        {
            let mut outbox = crate::lock(&outbox);
            outbox
                .push(&crate::heartbeat::Event {
                    start_ms: 0,
                    duration_ms: 5000,
                    data: crate::heartbeat::SpanData {
                        app: "code".into(),
                        title: String::new(),
                        url: None,
                        active: true,
                    },
                })
                .unwrap();
            let spans = outbox.next_batch(10).unwrap().unwrap();
            outbox.acknowledge(spans.seq).unwrap();
            outbox.retract(&[(0, 1000)], Later::Drop).unwrap();
        }
        // Nothing listens there: an attempt to send fails.
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{nowhere}"))
            .unwrap()
            .connect_lazy();
        let mut uploader = Uploader::new(channel, "token", SyncConfig::default()).unwrap();
        // Not told the gateway records them: they wait, nothing is sent.
        assert_eq!(
            uploader
                .upload_next(&outbox, &Policy::STRICT)
                .await
                .unwrap(),
            Uploaded::Nothing
        );
        uploader.accept_retractions(true);
        assert!(matches!(
            uploader.upload_next(&outbox, &Policy::STRICT).await,
            Err(SyncError::Retry(_))
        ));
        let formed = crate::lock(&outbox).next_batch_with(10, false).unwrap();
        assert_eq!(formed.unwrap().retractions, vec![(0, 1000)]);
    }

    /// A gateway that stores every batch and says it read their
    /// retractions only when `reads` (an older one does not know them, and
    /// refuses a batch of retractions only as empty).
    #[derive(Clone, Default)]
    struct Gateway {
        reads: Arc<AtomicBool>,
        received: Arc<Mutex<Vec<UploadBatchRequest>>>,
    }

    #[tonic::async_trait]
    impl AgentIngest for Gateway {
        async fn upload_batch(
            &self,
            request: tonic::Request<UploadBatchRequest>,
        ) -> Result<tonic::Response<UploadBatchResponse>, tonic::Status> {
            let request = request.into_inner();
            if !self.reads.load(Ordering::SeqCst) && request.spans.is_empty() {
                return Err(tonic::Status::invalid_argument(
                    "spans: a batch needs at least one span",
                ));
            }
            self.received.lock().unwrap().push(request.clone());
            Ok(tonic::Response::new(UploadBatchResponse {
                batch_id: request.batch_id,
                stream_sequence: 1,
                duplicate: false,
                retractions_read: self.reads.load(Ordering::SeqCst),
            }))
        }

        async fn upload_timeline(
            &self,
            _: tonic::Request<UploadTimelineRequest>,
        ) -> Result<tonic::Response<UploadBatchResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("spans only"))
        }
    }

    #[tokio::test]
    async fn retractions_a_gateway_did_not_read_are_sent_again_once_the_policy_says_it_does() {
        let span = |start_ms: i64| crate::heartbeat::Event {
            start_ms,
            duration_ms: 5000,
            data: crate::heartbeat::SpanData {
                app: "code".into(),
                title: String::new(),
                url: None,
                active: true,
            },
        };
        let gateway = Gateway::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentIngestServer::new(gateway.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let dir = tempfile::tempdir().unwrap();
        let outbox = Mutex::new(Outbox::open(&dir.path().join("outbox.db")).unwrap());
        let mut uploader = Uploader::new(channel, "token", SyncConfig::default()).unwrap();
        uploader.accept_retractions(true);
        let upload = async |uploader: &mut Uploader| {
            uploader
                .upload_next(&outbox, &Policy::STRICT)
                .await
                .unwrap()
        };
        // The policy came from a gateway that records retractions, the
        // uploads reach an older one. Spans alone: stored as usual.
        crate::lock(&outbox).push(&span(0)).unwrap();
        assert!(matches!(
            upload(&mut uploader).await,
            Uploaded::Stored { seq: 1, .. }
        ));
        // Spans with a retraction: the spans are stored, the retraction
        // waits, and no more are sent to it.
        crate::lock(&outbox).push(&span(10_000)).unwrap();
        crate::lock(&outbox)
            .retract(&[(1000, 2000)], Later::Drop)
            .unwrap();
        assert!(matches!(
            upload(&mut uploader).await,
            Uploaded::Stored { seq: 2, .. }
        ));
        assert_eq!(crate::lock(&outbox).waiting().unwrap(), 0);
        assert_eq!(upload(&mut uploader).await, Uploaded::Nothing);
        // A policy says so again, but the upload reaches the older one: the
        // retraction alone is refused as an empty batch; it waits again.
        uploader.accept_retractions(true);
        assert!(matches!(
            upload(&mut uploader).await,
            Uploaded::Refused {
                seq: 3,
                outcome: Refused::Unread { retractions: 1 },
                ..
            }
        ));
        assert_eq!(upload(&mut uploader).await, Uploaded::Nothing);
        // The next policy says the gateway records them: sent again, read.
        gateway.reads.store(true, Ordering::SeqCst);
        uploader.accept_retractions(true);
        assert!(matches!(
            upload(&mut uploader).await,
            Uploaded::Stored { seq: 3, .. }
        ));
        assert_eq!(upload(&mut uploader).await, Uploaded::Nothing);
        let sent: Vec<(usize, Vec<(i64, i64)>)> = gateway
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.spans.len(),
                    r.retractions
                        .iter()
                        .map(|r| (r.start_unix_ms, r.end_unix_ms))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            sent,
            [
                (1, vec![]),
                (1, vec![(1000, 2000)]),
                (0, vec![(1000, 2000)])
            ]
        );
        // A batch stored before whose content changed counts as read.
        assert!(matches!(
            sorted(Err(tonic::Status::already_exists("stored before"))),
            Ok(Sent::Stored {
                retractions_read: true,
                ..
            })
        ));
    }

    #[test]
    fn a_batch_is_sent_with_its_retractions() {
        let batch = Batch {
            batch_id: "b".into(),
            seq: 3,
            spans: Vec::new(),
            retractions: vec![(1000, 2000), (5000, 6000)],
        };
        let sent = wire(&batch, &Policy::STRICT);
        assert_eq!((sent.batch_id.as_str(), sent.device_batch_seq), ("b", 3));
        assert!(sent.spans.is_empty());
        assert_eq!(
            sent.retractions,
            vec![
                Retraction {
                    start_unix_ms: 1000,
                    end_unix_ms: 2000
                },
                Retraction {
                    start_unix_ms: 5000,
                    end_unix_ms: 6000
                },
            ]
        );
    }

    #[test]
    fn a_forbidden_title_leaves_no_free_text_of_any_watcher() {
        let change = |bucket_type: &str, data: serde_json::Value| TimelineChange {
            change: Some(Change::Event(TimelineEvent {
                bucket_id: "b".into(),
                bucket_type: bucket_type.into(),
                data_json: data.to_string(),
                ..TimelineEvent::default()
            })),
        };
        let data = |change: &TimelineChange| match &change.change {
            Some(Change::Event(e)) => {
                serde_json::from_str::<serde_json::Value>(&e.data_json).unwrap()
            }
            _ => unreachable!(),
        };
        let strict = Policy {
            capture_titles: false,
            capture_urls: false,
        };
        let editor = change(
            "app.editor.activity",
            serde_json::json!({"language": "rust", "file": "/home/erin/layoffs.rs", "project": "secret", "meta": {"branch": "layoffs"}}),
        );
        assert_eq!(
            data(&wire_change(&editor, &strict)),
            serde_json::json!({"language": "rust"})
        );
        let unknown = change(
            "com.example.notes",
            serde_json::json!({"note": "dear diary", "words": 12}),
        );
        assert_eq!(
            data(&wire_change(&unknown, &strict)),
            serde_json::json!({"words": 12})
        );
        let open = Policy {
            capture_titles: true,
            capture_urls: true,
        };
        assert_eq!(data(&wire_change(&unknown, &open)), data(&unknown));
    }
}
