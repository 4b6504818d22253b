//! A device's raw ActivityWatch timelines: the events its watchers wrote,
//! bucket by bucket, as the agent kept them, synced beside the combined
//! spans of [`crate::activity`].
//!
//! A bucket is one timeline (a window watcher's, an AFK watcher's, an
//! editor's, ...). ActivityWatch lets a watcher change an event after the
//! fact (heartbeats extend it, an insert with its id replaces it) and delete
//! it, so each upload of an event is a new *version* of it, and a deletion is
//! a retraction: the log keeps every version and the retraction, and read
//! models keep the newest version of what is not retracted.
//!
//! Invariants: only an active device of an active member records; batches
//! arrive in their own per-device sequence (separate from the span batches)
//! without gaps, each number once; an event ends no earlier than it starts
//! and no later than the clock skew allows, has a version from 1 and data
//! that is a JSON object. Where the org's privacy policy forbids titles or
//! URLs, only the fields [`allowed_data`] lists for the bucket's type are
//! kept (a watcher of a type it does not know keeps only its numbers and
//! flags). The raw timelines are not classified.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::activity::{BatchRefusal, DeviceStatus, Privacy, admit_batch};
use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::PersonId;
use crate::personal::PersonalData;

/// Longest bucket id, bucket type, client name or event key, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest event data (JSON text), in bytes.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// State of one device's raw timelines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTimeline {
    /// Sequence number of the last batch recorded (0: none yet).
    pub last_seq: u64,
    /// Event versions recorded so far.
    pub versions: u64,
    /// Retractions recorded so far (of events and of whole buckets).
    pub retractions: u64,
}

/// An event of a bucket as the agent uploads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEventInput {
    /// The bucket (timeline), e.g. `aw-watcher-window_laptop`.
    pub bucket: String,
    /// The bucket's type, e.g. `currentwindow`, `afkstatus`, `app.editor.activity`.
    pub bucket_type: String,
    /// The watcher that created the bucket.
    pub client: String,
    /// The agent's stable key of the event within the device.
    pub key: String,
    /// Its version: 1 when first uploaded, higher when it changed since.
    pub version: u64,
    /// Start, microseconds since the Unix epoch.
    pub start_us: i64,
    /// End, microseconds since the Unix epoch (equal to start for an
    /// event without duration).
    pub end_us: i64,
    /// The event's data, a JSON object as text.
    pub data: String,
}

/// One change of a device's raw timelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineChange {
    /// An event, new or changed.
    Event(TimelineEventInput),
    /// An event was deleted.
    RetractEvent {
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
    /// A bucket was deleted with all its events.
    RetractBucket {
        /// The bucket.
        bucket: String,
    },
}

/// Limits a timeline batch is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineLimits {
    /// The recording time, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// How far in the future an event may end.
    pub max_skew_ms: i64,
    /// How far in the past an event may end.
    pub horizon_ms: i64,
    /// Most changes in one batch.
    pub max_changes: usize,
}

/// Commands on a device's raw timelines.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineCommand {
    /// Record one uploaded batch of changes.
    RecordChanges {
        /// The device's standing in its org, looked up by the caller.
        device: DeviceStatus,
        /// The device's member (owner of the personal data).
        member: PersonId,
        /// The agent's stable id of the batch.
        batch_id: String,
        /// Per-device sequence number of timeline batches, from 1.
        seq: u64,
        /// The changes, in the order they happened.
        changes: Vec<TimelineChange>,
        /// The org's privacy policy.
        privacy: Privacy,
        /// Time and size limits.
        limits: TimelineLimits,
    },
}

/// A recorded version of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Its bucket.
    pub bucket: String,
    /// The bucket's type.
    pub bucket_type: String,
    /// The watcher that created the bucket.
    pub client: String,
    /// The event's key.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// Start, µs since the epoch.
    pub start_us: i64,
    /// End, µs since the epoch.
    pub end_us: i64,
    /// The data (a JSON object as text; personal data of the member: window
    /// titles, URLs, file names).
    pub data: PersonalData,
}

/// Events of a device's raw timelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TimelineEventKind {
    /// A batch was accepted; its changes follow in the same commit.
    TimelineBatchAccepted {
        /// The agent's batch id.
        batch_id: String,
        /// Its per-device sequence number.
        seq: u64,
        /// The member the data belongs to.
        member: PersonId,
        /// How many changes follow.
        changes: u32,
    },
    /// A version of an event.
    TimelineEventRecorded(TimelineEvent),
    /// An event was deleted on the device: read models drop it.
    TimelineEventRetracted {
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
    /// A bucket was deleted on the device: read models drop its events
    /// recorded before.
    TimelineBucketRetracted {
        /// The bucket.
        bucket: String,
    },
}

impl DomainEvent for TimelineEventKind {
    fn event_type(&self) -> &'static str {
        match self {
            Self::TimelineBatchAccepted { .. } => "TimelineBatchAccepted",
            Self::TimelineEventRecorded(_) => "TimelineEventRecorded",
            Self::TimelineEventRetracted { .. } => "TimelineEventRetracted",
            Self::TimelineBucketRetracted { .. } => "TimelineBucketRetracted",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// What is wrong with one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChangeProblem {
    /// Bucket, bucket type, client or key empty, too long or with control
    /// characters.
    #[error(
        "needs a bucket, bucket type, client and key of 1 to {MAX_NAME_BYTES} bytes without control characters"
    )]
    BadName,
    /// `end < start`.
    #[error("ends before it starts")]
    EndBeforeStart,
    /// Ends too far in the future.
    #[error("ends in the future beyond the allowed clock skew")]
    Future,
    /// Ended before the horizon.
    #[error("ended too long ago")]
    TooOld,
    /// Version 0.
    #[error("has version 0 (versions start at 1)")]
    NoVersion,
    /// The data is not a JSON object.
    #[error("has data that is not a JSON object")]
    DataNotObject,
    /// The data is too big.
    #[error("has data over {MAX_DATA_BYTES} bytes")]
    DataTooLong,
    /// A key or string of the data holds a NUL character (no database
    /// keeps text with one).
    #[error("has data with a NUL character")]
    DataNul,
}

impl From<BatchRefusal> for TimelineError {
    fn from(refusal: BatchRefusal) -> Self {
        match refusal {
            BatchRefusal::UnknownDevice => Self::UnknownDevice,
            BatchRefusal::DeviceRevoked => Self::DeviceRevoked,
            BatchRefusal::SequenceUsed { seq } => Self::SequenceUsed { seq },
            BatchRefusal::SequenceGap { expected, got } => Self::SequenceGap { expected, got },
        }
    }
}

/// Why a timeline batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    /// The device is not enrolled in this org.
    #[error("this device is not enrolled in the organization")]
    UnknownDevice,
    /// The device was revoked or its member deactivated.
    #[error("this device was revoked")]
    DeviceRevoked,
    /// The sequence number was used by an earlier batch.
    #[error("timeline batch sequence {seq} was already used by another batch")]
    SequenceUsed {
        /// The sequence number sent.
        seq: u64,
    },
    /// A sequence number was skipped.
    #[error("timeline batch sequence {got} skips ahead: the next expected is {expected}")]
    SequenceGap {
        /// The next sequence number expected.
        expected: u64,
        /// The one sent.
        got: u64,
    },
    /// No changes.
    #[error("a timeline batch needs at least one change")]
    Empty,
    /// More changes than allowed.
    #[error("a timeline batch holds at most {max} changes")]
    TooManyChanges {
        /// The limit.
        max: usize,
    },
    /// A change is invalid.
    #[error("change {index} {problem}")]
    Change {
        /// Its index in the batch (from 0).
        index: usize,
        /// What is wrong.
        problem: ChangeProblem,
    },
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_control)
}

/// The data object with what `privacy` forbids removed.
fn kept_data(
    bucket_type: &str,
    data: &str,
    privacy: Privacy,
) -> Result<Map<String, Value>, ChangeProblem> {
    if data.len() > MAX_DATA_BYTES {
        return Err(ChangeProblem::DataTooLong);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(data) else {
        return Err(ChangeProblem::DataNotObject);
    };
    if map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(ChangeProblem::DataNul);
    }
    Ok(allowed_data(bucket_type, map, privacy))
}

/// The fields of a watcher's event data `privacy` lets leave the machine.
/// With titles and URLs both allowed, all of them. Otherwise an allow-list
/// per ActivityWatch bucket type: the fields that never hold free text,
/// the free text that counts as a title (window and tab titles, an
/// editor's file and project) only with titles, the URL only with URLs;
/// nested objects and lists never. A bucket type not listed keeps only its
/// numbers and flags.
pub fn allowed_data(
    bucket_type: &str,
    data: Map<String, Value>,
    privacy: Privacy,
) -> Map<String, Value> {
    if privacy.titles && privacy.urls {
        return data;
    }
    let (always, titles, urls): (&[&str], &[&str], &[&str]) = match bucket_type {
        "currentwindow" => (&["app"], &["title"], &["url"]),
        "afkstatus" => (&["status"], &[], &[]),
        "web.tab.current" => (&["audible", "incognito", "tabCount"], &["title"], &["url"]),
        "app.editor.activity" => (&["language"], &["file", "project"], &[]),
        _ => {
            return data
                .into_iter()
                .filter(|(_, v)| matches!(v, Value::Bool(_) | Value::Number(_)))
                .collect();
        }
    };
    data.into_iter()
        .filter(|(key, value)| {
            let key = key.as_str();
            let listed = always.contains(&key)
                || (privacy.titles && titles.contains(&key))
                || (privacy.urls && urls.contains(&key));
            listed && !matches!(value, Value::Object(_) | Value::Array(_))
        })
        .collect()
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn check(change: &TimelineChange, limits: &TimelineLimits) -> Result<(), ChangeProblem> {
    match change {
        TimelineChange::Event(e) => {
            let names = [&e.bucket, &e.bucket_type, &e.client, &e.key];
            if !names.into_iter().all(|n| name_ok(n)) {
                return Err(ChangeProblem::BadName);
            }
            if e.end_us < e.start_us {
                return Err(ChangeProblem::EndBeforeStart);
            }
            let latest_us = limits
                .now_ms
                .saturating_add(limits.max_skew_ms)
                .saturating_mul(1000);
            if e.end_us > latest_us {
                return Err(ChangeProblem::Future);
            }
            let earliest_us = limits
                .now_ms
                .saturating_sub(limits.horizon_ms)
                .saturating_mul(1000);
            if e.end_us < earliest_us {
                return Err(ChangeProblem::TooOld);
            }
            if e.version == 0 {
                return Err(ChangeProblem::NoVersion);
            }
            Ok(())
        }
        TimelineChange::RetractEvent { bucket, key } => {
            if name_ok(bucket) && name_ok(key) {
                Ok(())
            } else {
                Err(ChangeProblem::BadName)
            }
        }
        TimelineChange::RetractBucket { bucket } => {
            if name_ok(bucket) {
                Ok(())
            } else {
                Err(ChangeProblem::BadName)
            }
        }
    }
}

impl Aggregate for DeviceTimeline {
    const TYPE: &'static str = "device_timeline";
    type Command = TimelineCommand;
    type Event = TimelineEventKind;
    type Error = TimelineError;

    fn handle(&self, command: TimelineCommand) -> Result<Vec<TimelineEventKind>, TimelineError> {
        let TimelineCommand::RecordChanges {
            device,
            member,
            batch_id,
            seq,
            changes,
            privacy,
            limits,
        } = command;
        admit_batch(device, self.last_seq, seq)?;
        if changes.is_empty() {
            return Err(TimelineError::Empty);
        }
        if changes.len() > limits.max_changes {
            return Err(TimelineError::TooManyChanges {
                max: limits.max_changes,
            });
        }
        let mut events = Vec::with_capacity(changes.len() + 1);
        events.push(TimelineEventKind::TimelineBatchAccepted {
            batch_id,
            seq,
            member: member.clone(),
            changes: changes.len() as u32,
        });
        for (index, change) in changes.into_iter().enumerate() {
            let fail = |problem| TimelineError::Change { index, problem };
            check(&change, &limits).map_err(fail)?;
            events.push(match change {
                TimelineChange::Event(e) => {
                    let data = kept_data(&e.bucket_type, &e.data, privacy).map_err(fail)?;
                    let data = Value::Object(data).to_string();
                    TimelineEventKind::TimelineEventRecorded(TimelineEvent {
                        bucket: e.bucket,
                        bucket_type: e.bucket_type,
                        client: e.client,
                        key: e.key,
                        version: e.version,
                        start_us: e.start_us,
                        end_us: e.end_us,
                        data: PersonalData::new(member.clone(), data),
                    })
                }
                TimelineChange::RetractEvent { bucket, key } => {
                    TimelineEventKind::TimelineEventRetracted { bucket, key }
                }
                TimelineChange::RetractBucket { bucket } => {
                    TimelineEventKind::TimelineBucketRetracted { bucket }
                }
            });
        }
        Ok(events)
    }

    fn apply(&mut self, event: &TimelineEventKind) {
        match event {
            TimelineEventKind::TimelineBatchAccepted { seq, .. } => self.last_seq = *seq,
            TimelineEventKind::TimelineEventRecorded(_) => self.versions += 1,
            TimelineEventKind::TimelineEventRetracted { .. }
            | TimelineEventKind::TimelineBucketRetracted { .. } => self.retractions += 1,
        }
    }

    fn upcast(event_type: &str, version: u32, payload: Value) -> Result<Value, UpcastError> {
        let types = [
            "TimelineBatchAccepted",
            "TimelineEventRecorded",
            "TimelineEventRetracted",
            "TimelineBucketRetracted",
        ];
        upcast_first_versions(Self::TYPE, &types, event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::AggregateTest;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn member() -> PersonId {
        PersonId::new("m1").unwrap()
    }

    fn event(key: &str, version: u64, data: Value) -> TimelineEventInput {
        TimelineEventInput {
            bucket: "aw-watcher-window_laptop".into(),
            bucket_type: "currentwindow".into(),
            client: "aw-watcher-window".into(),
            key: key.into(),
            version,
            start_us: (NOW_MS - 60_000) * 1000,
            end_us: (NOW_MS - 30_000) * 1000,
            data: data.to_string(),
        }
    }

    fn record(seq: u64, changes: Vec<TimelineChange>, privacy: Privacy) -> TimelineCommand {
        TimelineCommand::RecordChanges {
            device: DeviceStatus::Active,
            member: member(),
            batch_id: format!("t{seq}"),
            seq,
            changes,
            privacy,
            limits: TimelineLimits {
                now_ms: NOW_MS,
                max_skew_ms: 60_000,
                horizon_ms: 3_600_000,
                max_changes: 10,
            },
        }
    }

    const ALL: Privacy = Privacy {
        titles: true,
        urls: true,
    };

    fn accepted(seq: u64, changes: u32) -> TimelineEventKind {
        TimelineEventKind::TimelineBatchAccepted {
            batch_id: format!("t{seq}"),
            seq,
            member: member(),
            changes,
        }
    }

    fn recorded(input: TimelineEventInput, data: Value) -> TimelineEventKind {
        TimelineEventKind::TimelineEventRecorded(TimelineEvent {
            bucket: input.bucket,
            bucket_type: input.bucket_type,
            client: input.client,
            key: input.key,
            version: input.version,
            start_us: input.start_us,
            end_us: input.end_us,
            data: PersonalData::new(member(), data.to_string()),
        })
    }

    #[test]
    fn versions_and_retractions_are_recorded_in_order() {
        let data = json!({"app": "code", "title": "main.rs"});
        let e = event("s-1", 2, data.clone());
        AggregateTest::<DeviceTimeline>::given(vec![accepted(1, 1)])
            .when(record(
                2,
                vec![
                    TimelineChange::Event(e.clone()),
                    TimelineChange::RetractEvent {
                        bucket: e.bucket.clone(),
                        key: "s-0".into(),
                    },
                    TimelineChange::RetractBucket {
                        bucket: "aw-watcher-vim_laptop".into(),
                    },
                ],
                ALL,
            ))
            .then_expect(vec![
                accepted(2, 3),
                recorded(e.clone(), data),
                TimelineEventKind::TimelineEventRetracted {
                    bucket: e.bucket,
                    key: "s-0".into(),
                },
                TimelineEventKind::TimelineBucketRetracted {
                    bucket: "aw-watcher-vim_laptop".into(),
                },
            ]);
    }

    #[test]
    fn the_privacy_policy_removes_titles_and_urls_from_any_bucket() {
        let data = json!({"url": "https://pay.example/", "title": "Payroll", "audible": false,
            "tabCount": 3, "incognito": false, "favicon": {"href": "https://pay.example/f.ico"}});
        let mut e = event("s-1", 1, data);
        e.bucket_type = "web.tab.current".into();
        AggregateTest::<DeviceTimeline>::given(vec![])
            .when(record(
                1,
                vec![TimelineChange::Event(e.clone())],
                Privacy {
                    titles: false,
                    urls: false,
                },
            ))
            .then_expect(vec![
                accepted(1, 1),
                recorded(
                    e,
                    json!({"audible": false, "tabCount": 3, "incognito": false}),
                ),
            ]);
    }

    #[test]
    fn where_titles_or_urls_are_forbidden_only_listed_fields_leave() {
        let editor = json!({"language": "rust", "file": "/home/erin/layoffs.rs",
            "project": "/home/erin/secret", "git": {"branch": "layoffs"}});
        let unknown = json!({"presses": 12, "active": true, "note": "dear diary",
            "nested": {"title": "Payroll"}, "list": ["https://pay.example/"]});
        let window = json!({"app": "firefox", "title": "Payroll", "url": "https://pay.example/"});
        let map = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let none = Privacy {
            titles: false,
            urls: false,
        };
        let titles = Privacy {
            titles: true,
            urls: false,
        };
        let urls = Privacy {
            titles: false,
            urls: true,
        };
        let kept = |kind: &str, data: &Value, privacy| {
            Value::Object(allowed_data(kind, map(data.clone()), privacy))
        };
        assert_eq!(
            kept("app.editor.activity", &editor, none),
            json!({"language": "rust"})
        );
        assert_eq!(
            kept("app.editor.activity", &editor, titles),
            json!({"language": "rust", "file": "/home/erin/layoffs.rs", "project": "/home/erin/secret"})
        );
        assert_eq!(
            kept("os.hid.input", &unknown, titles),
            json!({"presses": 12, "active": true})
        );
        assert_eq!(
            kept("currentwindow", &window, none),
            json!({"app": "firefox"})
        );
        assert_eq!(
            kept("currentwindow", &window, urls),
            json!({"app": "firefox", "url": "https://pay.example/"})
        );
        assert_eq!(kept("os.hid.input", &unknown, ALL), unknown);
    }

    #[test]
    fn sequences_are_gapless_and_used_once() {
        let change = || vec![TimelineChange::Event(event("s-1", 1, json!({})))];
        AggregateTest::<DeviceTimeline>::given(vec![accepted(1, 1)])
            .when(record(1, change(), ALL))
            .then_expect_error(TimelineError::SequenceUsed { seq: 1 });
        AggregateTest::<DeviceTimeline>::given(vec![accepted(1, 1)])
            .when(record(3, change(), ALL))
            .then_expect_error(TimelineError::SequenceGap {
                expected: 2,
                got: 3,
            });
        AggregateTest::<DeviceTimeline>::given(vec![])
            .when(record(1, vec![], ALL))
            .then_expect_error(TimelineError::Empty);
        AggregateTest::<DeviceTimeline>::given(vec![])
            .when(record(1, (0..11).flat_map(|_| change()).collect(), ALL))
            .then_expect_error(TimelineError::TooManyChanges { max: 10 });
    }

    #[test]
    fn a_revoked_or_unknown_device_records_nothing() {
        for (device, error) in [
            (DeviceStatus::Revoked, TimelineError::DeviceRevoked),
            (DeviceStatus::Unknown, TimelineError::UnknownDevice),
        ] {
            let mut command = record(
                1,
                vec![TimelineChange::Event(event("s-1", 1, json!({})))],
                ALL,
            );
            let TimelineCommand::RecordChanges { device: d, .. } = &mut command;
            *d = device;
            AggregateTest::<DeviceTimeline>::given(vec![])
                .when(command)
                .then_expect_error(error);
        }
    }

    #[test]
    fn bad_changes_are_refused_naming_the_change() {
        let good = TimelineChange::Event(event("s-1", 1, json!({"status": "afk"})));
        let bad: Vec<(TimelineChange, ChangeProblem)> = vec![
            (
                TimelineChange::Event(TimelineEventInput {
                    end_us: (NOW_MS - 70_000) * 1000,
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::EndBeforeStart,
            ),
            (
                TimelineChange::Event(TimelineEventInput {
                    end_us: (NOW_MS + 61_000) * 1000,
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::Future,
            ),
            (
                TimelineChange::Event(TimelineEventInput {
                    start_us: (NOW_MS - 3_700_000) * 1000,
                    end_us: (NOW_MS - 3_600_001) * 1000,
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::TooOld,
            ),
            (
                TimelineChange::Event(event("s-2", 0, json!({}))),
                ChangeProblem::NoVersion,
            ),
            (
                TimelineChange::Event(TimelineEventInput {
                    data: "[1, 2]".into(),
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::DataNotObject,
            ),
            (
                TimelineChange::Event(TimelineEventInput {
                    data: "{\"title\": ".into(),
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::DataNotObject,
            ),
            (
                TimelineChange::Event(event("s-2", 1, json!({"t": "x".repeat(MAX_DATA_BYTES)}))),
                ChangeProblem::DataTooLong,
            ),
            (
                TimelineChange::Event(event("s-2", 1, json!({"a": [{"b": "x\u{0}y"}]}))),
                ChangeProblem::DataNul,
            ),
            (
                TimelineChange::Event(event("s-2", 1, json!({"a\u{0}": 1}))),
                ChangeProblem::DataNul,
            ),
            (
                TimelineChange::Event(TimelineEventInput {
                    bucket: String::new(),
                    ..event("s-2", 1, json!({}))
                }),
                ChangeProblem::BadName,
            ),
            (
                TimelineChange::RetractEvent {
                    bucket: "b".into(),
                    key: "a\nb".into(),
                },
                ChangeProblem::BadName,
            ),
            (
                TimelineChange::RetractBucket {
                    bucket: "b".repeat(MAX_NAME_BYTES + 1),
                },
                ChangeProblem::BadName,
            ),
        ];
        for (change, problem) in bad {
            AggregateTest::<DeviceTimeline>::given(vec![])
                .when(record(1, vec![good.clone(), change], ALL))
                .then_expect_error(TimelineError::Change { index: 1, problem });
        }
    }

    #[test]
    fn state_counts_what_was_recorded() {
        let mut state = DeviceTimeline::default();
        let events = state
            .handle(record(
                1,
                vec![
                    TimelineChange::Event(event("s-1", 1, json!({}))),
                    TimelineChange::RetractEvent {
                        bucket: "b".into(),
                        key: "s-1".into(),
                    },
                ],
                ALL,
            ))
            .unwrap();
        for e in &events {
            state.apply(e);
        }
        assert_eq!(
            state,
            DeviceTimeline {
                last_seq: 1,
                versions: 1,
                retractions: 1
            }
        );
        for e in &events {
            let stored = serde_json::to_value(e).unwrap();
            let upcast = DeviceTimeline::upcast(e.event_type(), 1, stored["data"].clone()).unwrap();
            assert_eq!(upcast, stored["data"]);
        }
        assert!(DeviceTimeline::upcast("TimelineEventRecorded", 2, json!({})).is_err());
        assert!(DeviceTimeline::upcast("SpanRecorded", 1, json!({})).is_err());
    }
}
