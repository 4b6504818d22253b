//! How the activity projection reads the log: organization commits and
//! erasures as the domain's own events, device batches by a typed reader of their stored
//! form (a span is a hot event, most of the log, and a JSON tree per span
//! cost most of the apply time).

use trackhrs_domain::Aggregate;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::erasure::{ErasureEvent, PersonErasure};
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_nats::codec::{StoredPersonal, decode_commit};
use trackhrs_nats::keys::SubjectKeys;
use trackhrs_nats::{KeyStore, StoreError, TypedCommit, decode_typed};

use crate::projection::Committed;

/// A stored commit as the activity projection reads it.
#[derive(Debug)]
pub enum ActivityCommit {
    /// An organization's commit (time zone, category rules), its events
    /// typed.
    Org(TypedCommit<OrgEvent>),
    /// A device's batch of spans, read typed: a span is a hot event (most
    /// of the log), and a JSON tree per span cost most of the apply time.
    Device(DeviceBatch),
    /// A person's erasure: their titles and URLs are dropped.
    Erasure(TypedCommit<ErasureEvent>),
}

/// A device-activity commit: its member and spans, personal data opened.
#[derive(Debug)]
pub struct DeviceBatch {
    /// Stream sequence of the commit.
    pub stream_sequence: u64,
    /// Organization.
    pub org_id: String,
    /// The device.
    pub device_id: String,
    /// Events in the commit.
    pub events: usize,
    /// From the commit's `BatchAccepted` (a commit without one has no spans).
    pub member: Option<String>,
    /// The spans, in commit order.
    pub spans: Vec<OpenedSpan>,
    /// Time the employee withdrew (`TimeRetracted`): `[start_ms, end_ms)`,
    /// applied after the spans.
    pub retracted: Vec<(i64, i64)>,
}

/// One `SpanRecorded`, title and URL opened (`None` when absent or erased).
/// Its debug output hides them, as [`PersonalData`]'s does.
///
/// [`PersonalData`]: trackhrs_domain::personal::PersonalData
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedSpan {
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Application.
    pub app: String,
    /// Window title.
    pub title: Option<String>,
    /// URL.
    pub url: Option<String>,
    /// Active or idle.
    pub active: bool,
}

impl std::fmt::Debug for OpenedSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("OpenedSpan")
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("app", &self.app)
            .field("title", &hidden(&self.title))
            .field("url", &hidden(&self.url))
            .field("active", &self.active)
            .finish()
    }
}

/// `BatchAccepted` v1, the part this projection reads.
#[derive(serde::Deserialize)]
struct StoredAccepted {
    member: String,
}

/// `TimeRetracted` v1 as stored.
#[derive(serde::Deserialize)]
struct StoredRetraction {
    start_ms: i64,
    end_ms: i64,
}

/// `SpanRecorded` v1 as stored.
#[derive(serde::Deserialize)]
struct StoredSpan<'a> {
    start_ms: i64,
    end_ms: i64,
    #[serde(borrow)]
    app: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    title: Option<StoredPersonal<'a>>,
    #[serde(borrow)]
    url: Option<StoredPersonal<'a>>,
    active: bool,
}

impl Committed for ActivityCommit {
    fn stream_sequence(&self) -> u64 {
        match self {
            Self::Org(c) => c.stream_sequence,
            Self::Device(b) => b.stream_sequence,
            Self::Erasure(c) => c.stream_sequence,
        }
    }

    fn org_id(&self) -> &str {
        match self {
            Self::Org(c) => &c.org_id,
            Self::Device(b) => &b.org_id,
            Self::Erasure(c) => &c.org_id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Self::Org(c) => c.events.len(),
            Self::Device(b) => b.events,
            Self::Erasure(c) => c.events.len(),
        }
    }
}

/// Decodes a device-activity commit without a JSON tree per event. Only
/// schema version 1 of its events exists; any other version, an unknown
/// event type or a malformed payload makes the commit a dead letter.
pub(crate) async fn decode_device(
    keys: &KeyStore,
    subject: &str,
    sequence: u64,
    bytes: &[u8],
) -> Result<ActivityCommit, StoreError> {
    let bad = |reason: String| StoreError::Decode {
        subject: subject.to_owned(),
        sequence,
        reason,
    };
    let commit = decode_commit(subject, sequence, bytes)?;
    if commit.aggregate_type == PersonErasure::TYPE {
        return decode_typed::<PersonErasure>(keys, subject, sequence, bytes)
            .await
            .map(ActivityCommit::Erasure);
    }
    if commit.aggregate_type != DeviceActivity::TYPE {
        return decode_typed::<Organization>(keys, subject, sequence, bytes)
            .await
            .map(ActivityCommit::Org);
    }
    // The subjects' keys met in this commit (one: the member's).
    let mut found: Vec<(String, SubjectKeys)> = Vec::new();
    let mut batch = DeviceBatch {
        stream_sequence: sequence,
        org_id: commit.org_id.clone(),
        device_id: commit.aggregate_id.clone(),
        events: commit.events.len(),
        member: None,
        spans: Vec::with_capacity(commit.events.len()),
        retracted: Vec::new(),
    };
    for event in &commit.events {
        let kind = event.event_type.as_str();
        if event.schema_version != 1 {
            return Err(bad(format!(
                "{kind} v{} is not a version this projection reads",
                event.schema_version
            )));
        }
        match kind {
            "BatchAccepted" => {
                let accepted: StoredAccepted = serde_json::from_slice(&event.payload)
                    .map_err(|e| bad(format!("{kind}: {e}")))?;
                batch.member = Some(accepted.member);
            }
            "SpanRecorded" => {
                if batch.member.is_none() {
                    return Err(bad("a span before its BatchAccepted".into()));
                }
                let span: StoredSpan = serde_json::from_slice(&event.payload)
                    .map_err(|e| bad(format!("{kind}: {e}")))?;
                let mut open = async |pd: &Option<StoredPersonal<'_>>| {
                    let Some(pd) = pd else {
                        return Ok(None);
                    };
                    let key = match found.iter().find(|(s, _)| *s == pd.subject) {
                        Some((_, key)) => key.clone(),
                        None => {
                            let key = keys.key_for_read(&commit.org_id, &pd.subject).await?;
                            found.push((pd.subject.to_string(), key.clone()));
                            key
                        }
                    };
                    pd.open(&key).map_err(bad)
                };
                let title = open(&span.title).await?;
                let url = open(&span.url).await?;
                batch.spans.push(OpenedSpan {
                    start_ms: span.start_ms,
                    end_ms: span.end_ms,
                    app: span.app.into_owned(),
                    title,
                    url,
                    active: span.active,
                });
            }
            "TimeRetracted" => {
                let r: StoredRetraction = serde_json::from_slice(&event.payload)
                    .map_err(|e| bad(format!("{kind}: {e}")))?;
                if batch.member.is_none() || r.end_ms <= r.start_ms {
                    return Err(bad(format!("{kind}: not after a batch, or empty")));
                }
                batch.retracted.push((r.start_ms, r.end_ms));
            }
            other => return Err(bad(format!("unknown device activity event {other}"))),
        }
    }
    Ok(ActivityCommit::Device(batch))
}
