//! Ingest: a device uploads a batch of spans, or a batch of changes to its
//! raw ActivityWatch timelines; each batch becomes one commit on the device's
//! activity (or raw timeline) aggregate. Admission (size, batch id, the
//! device's standing and the privacy policy) comes from the organization's
//! aggregate, the one source of both; so does the policy the agent asks for.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trackhrs_commands::CommandError;
use trackhrs_domain::activity::{
    ActivityCommand, ActivityError, DeviceActivity, DeviceStatus, IngestLimits, Privacy,
    RetractionInput, SpanInput,
};
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::organization::Organization;
use trackhrs_domain::timeline::{
    DeviceTimeline, TimelineChange, TimelineCommand, TimelineError, TimelineLimits,
};
use trackhrs_domain::{Aggregate, Token};
use trackhrs_nats::CommitMeta;

use crate::caller::DeviceIdentity;
use crate::error::{AppError, ErrorKind};
use crate::org::{OrgCommands, digest_hex};

pub mod quota;

use quota::{Over, Quotas, Rate};

/// Limits of an upload.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most spans (or changes) in one batch; more is refused as too large.
    pub max_spans: usize,
    /// Most bytes of one encoded batch (a commit must stay under NATS's
    /// 1 MiB message limit once encoded and sealed); more is refused as too
    /// large.
    pub max_batch_bytes: usize,
    /// How far in the future a span may end.
    pub max_skew: Duration,
    /// How far in the past a span may start.
    pub horizon: Duration,
    /// Upload quota of each device (bytes of encoded batches, per replica).
    pub device_quota: Rate,
    /// Upload quota of each organization's devices together.
    pub org_quota: Rate,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_spans: 1000,
            max_batch_bytes: 256 * 1024,
            max_skew: Duration::from_secs(120),
            horizon: Duration::from_secs(30 * 24 * 3600),
            // An agent sends a few KiB every 30 s; a week offline is a few
            // MiB at once.
            device_quota: Rate {
                bytes_per_sec: 32.0 * 1024.0,
                burst_bytes: 8.0 * 1024.0 * 1024.0,
            },
            org_quota: Rate {
                bytes_per_sec: 1024.0 * 1024.0,
                burst_bytes: 64.0 * 1024.0 * 1024.0,
            },
        }
    }
}

impl IngestConfig {
    /// Refuses quotas under which a batch of the largest size could never
    /// be accepted (a burst smaller than it, or no refill).
    pub fn check(&self) -> Result<(), AppError> {
        for (name, rate) in [
            ("device_quota", &self.device_quota),
            ("org_quota", &self.org_quota),
        ] {
            if !(rate.burst_bytes >= self.max_batch_bytes as f64 && rate.bytes_per_sec > 0.0) {
                return Err(AppError::invalid(
                    name,
                    format!(
                        "the burst must hold a batch of max_batch_bytes ({}) and the rate be above 0",
                        self.max_batch_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One upload as the adapter decoded it.
#[derive(Debug)]
pub struct Upload<T> {
    /// The batch id (the commit's idempotency key).
    pub batch_id: String,
    /// The device's sequence number of this batch (1, 2, ...).
    pub seq: u64,
    /// The spans or timeline changes.
    pub items: Vec<T>,
    /// The request as received, encoded: its size is checked and its digest
    /// recorded (a batch id sent again with other content is refused).
    pub encoded: Vec<u8>,
}

/// A recorded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The stream position of its commit.
    pub position: u64,
    /// True when the batch had been recorded before.
    pub duplicate: bool,
}

/// What the agent must obey, and where its uploads stand.
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    /// The device's identity.
    pub device: DeviceIdentity,
    /// The org's IANA time zone.
    pub timezone: String,
    /// Whether window titles may be captured.
    pub capture_titles: bool,
    /// Whether URLs may be captured.
    pub capture_urls: bool,
    /// The last span batch sequence recorded for the device.
    pub last_batch_seq: u64,
    /// The end of the last span recorded, in Unix milliseconds.
    pub last_span_end_ms: Option<i64>,
    /// The last timeline batch sequence recorded.
    pub last_timeline_seq: u64,
    /// The version of the org's classification rules.
    pub rules_version: u32,
    /// The rules in force (the default rules while the org has none).
    pub rules: Vec<CategoryRule>,
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

/// What both uploads check and look up before deciding.
struct Admitted {
    org: Token,
    device: Token,
    /// Bytes charged to the quotas.
    bytes: usize,
    batch_id: String,
    digest: String,
    status: DeviceStatus,
    member: Token,
    privacy: Privacy,
}

fn bad_credentials() -> AppError {
    AppError::new(ErrorKind::Unauthenticated, "invalid credentials")
}

/// The ingest use cases.
#[derive(Clone)]
pub struct Ingest {
    orgs: OrgCommands,
    config: Arc<IngestConfig>,
    quotas: Quotas,
}

impl Ingest {
    pub(crate) fn new(orgs: OrgCommands, config: IngestConfig) -> Self {
        Self {
            orgs,
            quotas: Quotas::new(config.device_quota, config.org_quota),
            config: Arc::new(config),
        }
    }

    /// Most bytes of one encoded batch.
    pub fn max_batch_bytes(&self) -> usize {
        self.config.max_batch_bytes
    }

    /// The upload limits.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    fn check_count(&self, count: usize, field: &str) -> Result<(), AppError> {
        if count > self.config.max_spans {
            return Err(AppError::new(
                ErrorKind::Exhausted,
                format!(
                    "{field}: a batch holds at most {} {field}; split it",
                    self.config.max_spans
                ),
            ));
        }
        Ok(())
    }

    async fn admit<T>(
        &self,
        identity: &DeviceIdentity,
        upload: &Upload<T>,
        field: &str,
    ) -> Result<Admitted, AppError> {
        self.check_count(upload.items.len(), field)?;
        if upload.encoded.len() > self.config.max_batch_bytes {
            return Err(AppError::new(
                ErrorKind::Exhausted,
                format!(
                    "{field}: a batch is at most {} bytes; split it",
                    self.config.max_batch_bytes
                ),
            ));
        }
        let batch_id = crate::command_id(&upload.batch_id).map_err(|_| {
            AppError::invalid(
                "batch_id",
                "must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
            )
        })?;
        let org = Token::new(&identity.org_id).map_err(|_| bad_credentials())?;
        let device = Token::new(&identity.device_id).map_err(|_| bad_credentials())?;
        if let Err((over, wait)) =
            self.quotas
                .charge(org.as_str(), device.as_str(), upload.encoded.len())
        {
            let (scope, whose) = match over {
                Over::Device => ("device", "this device uploads"),
                Over::Org => ("org", "this organization's devices upload"),
            };
            metrics::counter!("trackhrs_ingest_throttled_total", "quota" => scope).increment(1);
            let seconds = wait.as_secs().saturating_add(1);
            return Err(AppError::new(
                ErrorKind::Exhausted,
                format!("{whose} faster than allowed; try again in {seconds} seconds"),
            )
            .retry_after(Duration::from_secs(seconds)));
        }
        // This replica's cached org state is evicted whenever any replica
        // commits to the org; a standing other than active is checked again
        // on fresh state before it is believed.
        let mut state = self.orgs.cached_state(&org).await?;
        if standing(&state, &device).0 != DeviceStatus::Active {
            state = self.orgs.state(&org).await?;
        }
        let (status, member, privacy) = standing(&state, &device);
        let member = member.unwrap_or_else(|| device.clone());
        Ok(Admitted {
            org,
            bytes: upload.encoded.len(),
            member,
            digest: digest_hex(&upload.encoded),
            batch_id,
            device,
            status,
            privacy,
        })
    }

    /// Runs an upload's command. Only a batch stored now keeps its charge
    /// to the quotas: one refused, failed or stored before is refunded.
    async fn record<A: Aggregate>(
        &self,
        admitted: &Admitted,
        command: A::Command,
        used: impl Fn(&CommandError<A::Error>) -> bool,
    ) -> Result<Recorded, AppError>
    where
        AppError: From<CommandError<A::Error>>,
    {
        let recorded = self.append::<A>(admitted, command, used).await;
        if !matches!(
            recorded,
            Ok(Recorded {
                duplicate: false,
                ..
            })
        ) {
            self.quotas.refund(
                admitted.org.as_str(),
                admitted.device.as_str(),
                admitted.bytes,
            );
        }
        recorded
    }

    /// Appends an upload's command; a sequence used before answers with
    /// the original acknowledgement when it was this batch (sent again
    /// after the store forgot its id), and is refused when it was another.
    async fn append<A: Aggregate>(
        &self,
        admitted: &Admitted,
        command: A::Command,
        used: impl Fn(&CommandError<A::Error>) -> bool,
    ) -> Result<Recorded, AppError>
    where
        AppError: From<CommandError<A::Error>>,
    {
        let Admitted {
            org,
            device,
            batch_id,
            digest,
            ..
        } = admitted;
        let meta = crate::request::stamp(
            CommitMeta::new(batch_id, format!("device:{device}"), now_ms() * 1000)
                .with_request_digest(digest.clone()),
        );
        let handler = self.orgs.handler();
        let appended = match handler.execute::<A>(org, device, command, &meta).await {
            Ok(executed) => executed.appended,
            Err(e) if used(&e) => {
                let original = handler
                    .store()
                    .find_command::<A>(org, device, batch_id)
                    .await?
                    .ok_or_else(|| AppError::from(e))?;
                Some(original.for_retry_of(&meta)?)
            }
            Err(e) => return Err(e.into()),
        };
        let appended = appended.ok_or_else(|| {
            AppError::new(ErrorKind::Unavailable, "a batch always records events")
        })?;
        Ok(Recorded {
            position: appended.position,
            duplicate: appended.duplicate,
        })
    }

    /// Records a batch of spans and of time the employee withdrew
    /// (`retractions`, applied after the spans).
    #[tracing::instrument(skip_all)]
    pub async fn upload_spans(
        &self,
        identity: &DeviceIdentity,
        upload: Upload<SpanInput>,
        retractions: Vec<RetractionInput>,
    ) -> Result<Recorded, AppError> {
        if upload.seq == 0 {
            return Err(AppError::invalid("device_batch_seq", "starts at 1"));
        }
        let admitted = self.admit(identity, &upload, "spans").await?;
        let spans = upload.items.len();
        let command = ActivityCommand::RecordBatch {
            device: admitted.status,
            member: admitted.member.clone(),
            batch_id: admitted.batch_id.clone(),
            seq: upload.seq,
            spans: upload.items,
            retractions,
            privacy: admitted.privacy,
            limits: IngestLimits {
                now_ms: now_ms(),
                max_skew_ms: self.config.max_skew.as_millis() as i64,
                horizon_ms: self.config.horizon.as_millis() as i64,
                max_spans: self.config.max_spans,
            },
        };
        let recorded = self
            .record::<DeviceActivity>(&admitted, command, |e| {
                matches!(e, CommandError::Denied(ActivityError::SequenceUsed { .. }))
            })
            .await?;
        if !recorded.duplicate {
            metrics::counter!("trackhrs_spans_ingested_total").increment(spans as u64);
        }
        Ok(recorded)
    }

    /// Records a batch of raw timeline changes.
    #[tracing::instrument(skip_all)]
    pub async fn upload_timeline(
        &self,
        identity: &DeviceIdentity,
        upload: Upload<TimelineChange>,
    ) -> Result<Recorded, AppError> {
        if upload.seq == 0 {
            return Err(AppError::invalid("device_timeline_seq", "starts at 1"));
        }
        let admitted = self.admit(identity, &upload, "changes").await?;
        let changes = upload.items.len();
        let command = TimelineCommand::RecordChanges {
            device: admitted.status,
            member: admitted.member.clone(),
            batch_id: admitted.batch_id.clone(),
            seq: upload.seq,
            changes: upload.items,
            privacy: admitted.privacy,
            limits: TimelineLimits {
                now_ms: now_ms(),
                max_skew_ms: self.config.max_skew.as_millis() as i64,
                horizon_ms: self.config.horizon.as_millis() as i64,
                max_changes: self.config.max_spans,
            },
        };
        let recorded = self
            .record::<DeviceTimeline>(&admitted, command, |e| {
                matches!(e, CommandError::Denied(TimelineError::SequenceUsed { .. }))
            })
            .await?;
        if !recorded.duplicate {
            metrics::counter!("trackhrs_timeline_changes_ingested_total").increment(changes as u64);
        }
        Ok(recorded)
    }

    /// The policy the device must obey, from the organization's aggregate
    /// (the same source ingest admits by), and where its uploads stand.
    #[tracing::instrument(skip_all)]
    pub async fn policy(&self, identity: DeviceIdentity) -> Result<AgentPolicy, AppError> {
        let org = Token::new(&identity.org_id).map_err(|_| bad_credentials())?;
        let id = Token::new(&identity.device_id).map_err(|_| bad_credentials())?;
        let store = self.orgs.store();
        let (state, spans, raw) = tokio::try_join!(
            self.orgs.cached_state(&org),
            async { Ok(store.load::<DeviceActivity>(&org, &id).await?.state) },
            async { Ok::<_, AppError>(store.load::<DeviceTimeline>(&org, &id).await?.state) },
        )?;
        if !state.created {
            return Err(AppError::unavailable("the organization does not exist yet"));
        }
        let rules = trackhrs_domain::classifier::Rules::in_force(&state.rules);
        Ok(AgentPolicy {
            timezone: state.settings.timezone.clone(),
            capture_titles: state.settings.capture_titles,
            capture_urls: state.settings.capture_urls,
            last_batch_seq: spans.last_seq,
            last_span_end_ms: spans.last_end_ms,
            last_timeline_seq: raw.last_seq,
            rules_version: state.rules_version,
            rules,
            device: identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_that_could_never_take_a_full_batch_are_refused() {
        assert!(IngestConfig::default().check().is_ok());
        let small = IngestConfig {
            device_quota: Rate {
                bytes_per_sec: 1024.0,
                burst_bytes: 1024.0,
            },
            ..IngestConfig::default()
        };
        let refused = small.check().unwrap_err();
        assert!(refused.message().starts_with("device_quota"), "{refused}");
        let still = IngestConfig {
            org_quota: Rate {
                bytes_per_sec: 0.0,
                burst_bytes: 1e9,
            },
            ..IngestConfig::default()
        };
        assert!(
            still
                .check()
                .unwrap_err()
                .message()
                .starts_with("org_quota")
        );
    }
}
