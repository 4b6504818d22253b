//! A device's activity timeline: the spans its agent uploads, batch by batch.
//!
//! Invariants: only an active device of an active member records; batches
//! arrive in their per-device sequence without gaps, each sequence number
//! once; spans end after they start, are in order and do not overlap, within
//! a batch and with everything the device sent before; no span ends later
//! than the clock skew allows or starts before the horizon; the org's
//! privacy policy decides whether titles and URLs are kept.
//!
//! A batch may also retract time: stretches the employee deleted on the
//! device after they became spans. A retraction is recorded after the
//! batch's spans and cut at the end of the last span the device recorded, so
//! it can only ever withdraw spans recorded before it, never later ones.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{Aggregate, DomainEvent, UpcastError};
use crate::ids::PersonId;
use crate::personal::PersonalData;

/// Longest application name, window title or URL kept, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;

/// State of one device's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceActivity {
    /// Sequence number of the last batch recorded (0: none yet).
    pub last_seq: u64,
    /// End of the last span recorded, milliseconds since the Unix epoch.
    pub last_end_ms: Option<i64>,
    /// Spans recorded so far.
    pub spans: u64,
}

/// Whether the device may upload, as the organization says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Enrolled, not revoked, its member active.
    Active,
    /// Revoked, or its member deactivated.
    Revoked,
    /// Not enrolled in this organization.
    Unknown,
}

/// Why a device's batch is refused before its content is looked at: one
/// rule for both of a device's upload streams (spans, raw timelines), each
/// of which turns it into its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRefusal {
    /// The device is not enrolled in this org.
    UnknownDevice,
    /// The device was revoked or its member deactivated.
    DeviceRevoked,
    /// The sequence number was used by an earlier batch.
    SequenceUsed {
        /// The sequence number sent.
        seq: u64,
    },
    /// A sequence number was skipped.
    SequenceGap {
        /// The next sequence number expected.
        expected: u64,
        /// The one sent.
        got: u64,
    },
}

/// Admits batch `seq` of a device whose last batch was `last_seq`: the
/// device must be active and the sequence the next one, without a gap.
pub fn admit_batch(device: DeviceStatus, last_seq: u64, seq: u64) -> Result<(), BatchRefusal> {
    match device {
        DeviceStatus::Active => {}
        DeviceStatus::Revoked => return Err(BatchRefusal::DeviceRevoked),
        DeviceStatus::Unknown => return Err(BatchRefusal::UnknownDevice),
    }
    if seq <= last_seq {
        return Err(BatchRefusal::SequenceUsed { seq });
    }
    if seq != last_seq + 1 {
        return Err(BatchRefusal::SequenceGap {
            expected: last_seq + 1,
            got: seq,
        });
    }
    Ok(())
}

/// What the org lets the agent keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    /// Window titles may be kept.
    pub titles: bool,
    /// URLs may be kept.
    pub urls: bool,
}

/// Limits a batch is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// The recording time, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// How far in the future a span may end (device clocks drift).
    pub max_skew_ms: i64,
    /// How far in the past a span may start.
    pub horizon_ms: i64,
    /// Most spans in one batch.
    pub max_spans: usize,
}

/// One span as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanInput {
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Application (X11 WM_CLASS or similar).
    pub app: String,
    /// Window title (may be empty).
    pub title: String,
    /// URL, when known.
    pub url: Option<String>,
    /// Active (true) or idle.
    pub active: bool,
}

/// A stretch of a device's time the employee withdrew, as uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetractionInput {
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
}

/// Commands on a device's timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityCommand {
    /// Record one uploaded batch.
    RecordBatch {
        /// The device's standing in its org, looked up by the caller.
        device: DeviceStatus,
        /// The device's member (owner of the personal data).
        member: PersonId,
        /// The agent's stable id of the batch.
        batch_id: String,
        /// Per-device sequence number, from 1, without gaps.
        seq: u64,
        /// The spans, in order.
        spans: Vec<SpanInput>,
        /// Time withdrawn by the employee, applied after the spans.
        retractions: Vec<RetractionInput>,
        /// The org's privacy policy.
        privacy: Privacy,
        /// Time and size limits.
        limits: IngestLimits,
    },
}

/// One recorded span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Application.
    pub app: String,
    /// Window title (personal data of the member); None when the policy
    /// forbids titles or the agent sent none.
    pub title: Option<PersonalData>,
    /// URL (personal data of the member), when known and allowed.
    pub url: Option<PersonalData>,
    /// Active or idle.
    pub active: bool,
}

/// Events of a device's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ActivityEvent {
    /// A batch was accepted; its spans follow in the same commit.
    BatchAccepted {
        /// The agent's batch id.
        batch_id: String,
        /// Its per-device sequence number.
        seq: u64,
        /// The member the spans belong to.
        member: PersonId,
        /// How many spans follow.
        spans: u32,
    },
    /// One span of activity.
    SpanRecorded(Span),
    /// The employee withdrew the device's time in `[start_ms, end_ms)`
    /// (deleted it on the device after it became spans): the spans over it
    /// no longer count. It follows the batch's spans in the same commit and
    /// never reaches past the end of the last span recorded.
    TimeRetracted {
        /// Start, ms since the epoch.
        start_ms: i64,
        /// End (exclusive), ms since the epoch.
        end_ms: i64,
    },
}

impl DomainEvent for ActivityEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::BatchAccepted { .. } => "BatchAccepted",
            Self::SpanRecorded(_) => "SpanRecorded",
            Self::TimeRetracted { .. } => "TimeRetracted",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// What is wrong with one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpanProblem {
    /// `end <= start`.
    #[error("ends before it starts")]
    EndBeforeStart,
    /// Starts before the previous span of the batch ends.
    #[error("overlaps the previous span")]
    Overlap,
    /// Starts before the end of what the device sent before.
    #[error("starts before the end of the device's previous batch")]
    BeforePrevious,
    /// Ends too far in the future.
    #[error("ends in the future beyond the allowed clock skew")]
    Future,
    /// Starts before the horizon.
    #[error("starts too long ago")]
    TooOld,
    /// Application name missing.
    #[error("has no application")]
    NoApp,
    /// A text field is too long.
    #[error("has an application, title or URL longer than {MAX_TEXT_BYTES} bytes")]
    TooLong,
    /// A text field holds a NUL character (no database keeps text with one).
    #[error("has an application, title or URL with a NUL character")]
    Nul,
}

impl From<BatchRefusal> for ActivityError {
    fn from(refusal: BatchRefusal) -> Self {
        match refusal {
            BatchRefusal::UnknownDevice => Self::UnknownDevice,
            BatchRefusal::DeviceRevoked => Self::DeviceRevoked,
            BatchRefusal::SequenceUsed { seq } => Self::SequenceUsed { seq },
            BatchRefusal::SequenceGap { expected, got } => Self::SequenceGap { expected, got },
        }
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivityError {
    /// The device is not enrolled in this org.
    #[error("this device is not enrolled in the organization")]
    UnknownDevice,
    /// The device was revoked or its member deactivated.
    #[error("this device was revoked")]
    DeviceRevoked,
    /// The sequence number was used by an earlier batch.
    #[error("batch sequence {seq} was already used by another batch")]
    SequenceUsed {
        /// The sequence number sent.
        seq: u64,
    },
    /// A sequence number was skipped.
    #[error("batch sequence {got} skips ahead: the next expected is {expected}")]
    SequenceGap {
        /// The next sequence number expected.
        expected: u64,
        /// The one sent.
        got: u64,
    },
    /// Neither spans nor retractions.
    #[error("a batch needs at least one span or retraction")]
    Empty,
    /// More retractions than allowed.
    #[error("a batch holds at most {max} retractions")]
    TooManyRetractions {
        /// The limit.
        max: usize,
    },
    /// A retraction ends before it starts.
    #[error("retraction {index} ends before it starts")]
    Retraction {
        /// Its index in the batch (from 0).
        index: usize,
    },
    /// More spans than allowed.
    #[error("a batch holds at most {max} spans")]
    TooManySpans {
        /// The limit.
        max: usize,
    },
    /// A span is invalid.
    #[error("span {index} {problem}")]
    Span {
        /// Its index in the batch (from 0).
        index: usize,
        /// What is wrong.
        problem: SpanProblem,
    },
}

impl DeviceActivity {
    fn check_spans(&self, spans: &[SpanInput], limits: &IngestLimits) -> Result<(), ActivityError> {
        let mut previous_end = self.last_end_ms;
        for (index, span) in spans.iter().enumerate() {
            let fail = |problem| Err(ActivityError::Span { index, problem });
            if span.end_ms <= span.start_ms {
                return fail(SpanProblem::EndBeforeStart);
            }
            if let Some(end) = previous_end
                && span.start_ms < end
            {
                return fail(if index == 0 {
                    SpanProblem::BeforePrevious
                } else {
                    SpanProblem::Overlap
                });
            }
            if span.end_ms > limits.now_ms.saturating_add(limits.max_skew_ms) {
                return fail(SpanProblem::Future);
            }
            if span.start_ms < limits.now_ms.saturating_sub(limits.horizon_ms) {
                return fail(SpanProblem::TooOld);
            }
            if span.app.trim().is_empty() {
                return fail(SpanProblem::NoApp);
            }
            let too_long = span.app.len() > MAX_TEXT_BYTES
                || span.title.len() > MAX_TEXT_BYTES
                || span.url.as_ref().is_some_and(|u| u.len() > MAX_TEXT_BYTES);
            if too_long {
                return fail(SpanProblem::TooLong);
            }
            let nul = span.app.contains('\0')
                || span.title.contains('\0')
                || span.url.as_ref().is_some_and(|u| u.contains('\0'));
            if nul {
                return fail(SpanProblem::Nul);
            }
            previous_end = Some(span.end_ms);
        }
        Ok(())
    }
}

impl Aggregate for DeviceActivity {
    const TYPE: &'static str = "device_activity";
    type Command = ActivityCommand;
    type Event = ActivityEvent;
    type Error = ActivityError;

    fn handle(&self, command: ActivityCommand) -> Result<Vec<ActivityEvent>, ActivityError> {
        let ActivityCommand::RecordBatch {
            device,
            member,
            batch_id,
            seq,
            spans,
            retractions,
            privacy,
            limits,
        } = command;
        admit_batch(device, self.last_seq, seq)?;
        if spans.is_empty() && retractions.is_empty() {
            return Err(ActivityError::Empty);
        }
        if spans.len() > limits.max_spans {
            return Err(ActivityError::TooManySpans {
                max: limits.max_spans,
            });
        }
        if retractions.len() > limits.max_spans {
            return Err(ActivityError::TooManyRetractions {
                max: limits.max_spans,
            });
        }
        if let Some(index) = retractions.iter().position(|r| r.end_ms <= r.start_ms) {
            return Err(ActivityError::Retraction { index });
        }
        self.check_spans(&spans, &limits)?;
        // What a retraction may reach: the device's time recorded so far,
        // this batch's spans included.
        let recorded_end = spans.last().map(|s| s.end_ms).or(self.last_end_ms);
        let mut events = Vec::with_capacity(spans.len() + retractions.len() + 1);
        events.push(ActivityEvent::BatchAccepted {
            batch_id,
            seq,
            member: member.clone(),
            spans: spans.len() as u32,
        });
        for span in spans {
            let title = (privacy.titles && !span.title.is_empty())
                .then(|| PersonalData::new(member.clone(), span.title));
            let url = span
                .url
                .filter(|u| privacy.urls && !u.is_empty())
                .map(|u| PersonalData::new(member.clone(), u));
            events.push(ActivityEvent::SpanRecorded(Span {
                start_ms: span.start_ms,
                end_ms: span.end_ms,
                app: span.app,
                title,
                url,
                active: span.active,
            }));
        }
        events.extend(retractions.into_iter().filter_map(|r| {
            let end_ms = r.end_ms.min(recorded_end?);
            (end_ms > r.start_ms).then_some(ActivityEvent::TimeRetracted {
                start_ms: r.start_ms,
                end_ms,
            })
        }));
        Ok(events)
    }

    fn apply(&mut self, event: &ActivityEvent) {
        match event {
            ActivityEvent::BatchAccepted { seq, .. } => self.last_seq = *seq,
            ActivityEvent::SpanRecorded(span) => {
                self.last_end_ms = Some(span.end_ms);
                self.spans += 1;
            }
            ActivityEvent::TimeRetracted { .. } => {}
        }
    }

    fn upcast(event_type: &str, version: u32, payload: Value) -> Result<Value, UpcastError> {
        match (event_type, version) {
            ("BatchAccepted" | "SpanRecorded" | "TimeRetracted", 1) => Ok(payload),
            ("BatchAccepted" | "SpanRecorded" | "TimeRetracted", _) => {
                Err(UpcastError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version,
                })
            }
            _ => Err(UpcastError::UnknownType {
                aggregate_type: Self::TYPE,
                event_type: event_type.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::AggregateTest;

    const NOW: i64 = 1_800_000_000_000;

    fn limits() -> IngestLimits {
        IngestLimits {
            now_ms: NOW,
            max_skew_ms: 60_000,
            horizon_ms: 30 * 24 * 3_600_000,
            max_spans: 100,
        }
    }

    fn member() -> PersonId {
        PersonId::new("m1").unwrap()
    }

    fn span(start_s: i64, end_s: i64) -> SpanInput {
        SpanInput {
            start_ms: NOW - 3_600_000 + start_s * 1000,
            end_ms: NOW - 3_600_000 + end_s * 1000,
            app: "code".into(),
            title: "main.rs".into(),
            url: Some("https://example.test".into()),
            active: true,
        }
    }

    fn batch(seq: u64, spans: Vec<SpanInput>) -> ActivityCommand {
        ActivityCommand::RecordBatch {
            device: DeviceStatus::Active,
            member: member(),
            batch_id: format!("b{seq}"),
            seq,
            spans,
            retractions: vec![],
            privacy: Privacy {
                titles: true,
                urls: false,
            },
            limits: limits(),
        }
    }

    fn recorded(start_s: i64, end_s: i64) -> ActivityEvent {
        let s = span(start_s, end_s);
        ActivityEvent::SpanRecorded(Span {
            start_ms: s.start_ms,
            end_ms: s.end_ms,
            app: s.app,
            title: Some(PersonalData::new(member(), s.title)),
            url: None,
            active: true,
        })
    }

    fn accepted(seq: u64, spans: u32) -> ActivityEvent {
        ActivityEvent::BatchAccepted {
            batch_id: format!("b{seq}"),
            seq,
            member: member(),
            spans,
        }
    }

    #[test]
    fn a_batch_records_its_spans_under_the_privacy_policy() {
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(batch(1, vec![span(0, 10), span(10, 20)]))
            .then_expect(vec![accepted(1, 2), recorded(0, 10), recorded(10, 20)]);
    }

    #[test]
    fn sequences_are_gapless_and_used_once() {
        let given = || vec![accepted(1, 1), recorded(0, 10)];
        AggregateTest::<DeviceActivity>::given(given())
            .when(batch(1, vec![span(20, 30)]))
            .then_expect_error(ActivityError::SequenceUsed { seq: 1 });
        AggregateTest::<DeviceActivity>::given(given())
            .when(batch(3, vec![span(20, 30)]))
            .then_expect_error(ActivityError::SequenceGap {
                expected: 2,
                got: 3,
            });
    }

    #[test]
    fn bad_spans_are_named_by_index() {
        let cases = [
            (vec![span(10, 10)], 0, SpanProblem::EndBeforeStart),
            (vec![span(0, 10), span(5, 20)], 1, SpanProblem::Overlap),
            (
                vec![SpanInput {
                    end_ms: NOW + 120_000,
                    ..span(0, 10)
                }],
                0,
                SpanProblem::Future,
            ),
            (
                vec![SpanInput {
                    start_ms: NOW - 40 * 24 * 3_600_000,
                    ..span(0, 10)
                }],
                0,
                SpanProblem::TooOld,
            ),
            (
                vec![
                    span(0, 10),
                    SpanInput {
                        app: " ".into(),
                        ..span(10, 20)
                    },
                ],
                1,
                SpanProblem::NoApp,
            ),
            (
                vec![SpanInput {
                    title: "x".repeat(MAX_TEXT_BYTES + 1),
                    ..span(0, 10)
                }],
                0,
                SpanProblem::TooLong,
            ),
            (
                vec![SpanInput {
                    url: Some("https://a.example/\u{0}".into()),
                    ..span(0, 10)
                }],
                0,
                SpanProblem::Nul,
            ),
        ];
        for (spans, index, problem) in cases {
            AggregateTest::<DeviceActivity>::given(vec![])
                .when(batch(1, spans))
                .then_expect_error(ActivityError::Span { index, problem });
        }
        // A batch may not reach back into what the device sent before.
        AggregateTest::<DeviceActivity>::given(vec![accepted(1, 1), recorded(0, 10)])
            .when(batch(2, vec![span(5, 30)]))
            .then_expect_error(ActivityError::Span {
                index: 0,
                problem: SpanProblem::BeforePrevious,
            });
    }

    #[test]
    fn revoked_unknown_empty_and_oversized_batches_are_refused() {
        let with_device = |device| ActivityCommand::RecordBatch {
            device,
            member: member(),
            batch_id: "b1".into(),
            seq: 1,
            spans: vec![span(0, 10)],
            retractions: vec![],
            privacy: Privacy {
                titles: true,
                urls: true,
            },
            limits: limits(),
        };
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(with_device(DeviceStatus::Revoked))
            .then_expect_error(ActivityError::DeviceRevoked);
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(with_device(DeviceStatus::Unknown))
            .then_expect_error(ActivityError::UnknownDevice);
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(batch(1, vec![]))
            .then_expect_error(ActivityError::Empty);
        let many = (0..101).map(|i| span(i * 10, i * 10 + 5)).collect();
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(batch(1, many))
            .then_expect_error(ActivityError::TooManySpans { max: 100 });
    }

    fn retracting(seq: u64, spans: Vec<SpanInput>, ranges: &[(i64, i64)]) -> ActivityCommand {
        let ActivityCommand::RecordBatch {
            device,
            member,
            batch_id,
            seq,
            spans,
            privacy,
            limits,
            ..
        } = batch(seq, spans);
        let at = |s: i64| NOW - 3_600_000 + s * 1000;
        ActivityCommand::RecordBatch {
            device,
            member,
            batch_id,
            seq,
            spans,
            retractions: ranges
                .iter()
                .map(|&(start, end)| RetractionInput {
                    start_ms: at(start),
                    end_ms: at(end),
                })
                .collect(),
            privacy,
            limits,
        }
    }

    fn retracted(start_s: i64, end_s: i64) -> ActivityEvent {
        let at = |s: i64| NOW - 3_600_000 + s * 1000;
        ActivityEvent::TimeRetracted {
            start_ms: at(start_s),
            end_ms: at(end_s),
        }
    }

    #[test]
    fn retractions_follow_the_spans_and_stop_at_the_recorded_end() {
        // With the batch's own spans: cut at their end.
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(retracting(1, vec![span(0, 10)], &[(5, 60)]))
            .then_expect(vec![accepted(1, 1), recorded(0, 10), retracted(5, 10)]);
        // A batch of retractions only: cut at what the device sent before;
        // a retraction wholly after it is dropped, the batch still counts.
        AggregateTest::<DeviceActivity>::given(vec![accepted(1, 1), recorded(0, 10)])
            .when(retracting(2, vec![], &[(2, 4), (8, 30), (10, 20)]))
            .then_expect(vec![accepted(2, 0), retracted(2, 4), retracted(8, 10)]);
        // Nothing recorded yet: nothing to withdraw.
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(retracting(1, vec![], &[(0, 10)]))
            .then_expect(vec![accepted(1, 0)]);
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(retracting(1, vec![span(0, 10)], &[(0, 5), (7, 7)]))
            .then_expect_error(ActivityError::Retraction { index: 1 });
        let many: Vec<(i64, i64)> = (0..101).map(|i| (i, i + 1)).collect();
        AggregateTest::<DeviceActivity>::given(vec![])
            .when(retracting(1, vec![span(0, 10)], &many))
            .then_expect_error(ActivityError::TooManyRetractions { max: 100 });
    }

    #[test]
    fn titles_and_urls_are_dropped_when_the_policy_forbids_them() {
        let command = ActivityCommand::RecordBatch {
            device: DeviceStatus::Active,
            member: member(),
            batch_id: "b1".into(),
            seq: 1,
            spans: vec![span(0, 10)],
            retractions: vec![],
            privacy: Privacy {
                titles: false,
                urls: false,
            },
            limits: limits(),
        };
        let events = DeviceActivity::default().handle(command).unwrap();
        let ActivityEvent::SpanRecorded(span) = &events[1] else {
            panic!("expected a span, got {events:?}");
        };
        assert_eq!((span.title.is_none(), span.url.is_none()), (true, true));
    }

    proptest! {
        #[test]
        fn recorded_timelines_never_overlap(batches in proptest::collection::vec(
            proptest::collection::vec((0i64..50, 1i64..50), 0..8), 0..12)) {
            let mut state = DeviceActivity::default();
            let mut cursor = 0i64;
            let mut recorded: Vec<(i64, i64)> = Vec::new();
            for spans in batches {
                let spans: Vec<SpanInput> = spans.into_iter().map(|(gap, len)| {
                    // Gaps may be negative relative to the cursor: some batches overlap.
                    let start = cursor + gap - 20;
                    cursor = start + len;
                    span(start, start + len)
                }).collect();
                if let Ok(events) = state.handle(batch(state.last_seq + 1, spans)) {
                    for e in &events {
                        if let ActivityEvent::SpanRecorded(s) = e {
                            recorded.push((s.start_ms, s.end_ms));
                        }
                        state.apply(e);
                    }
                }
            }
            for w in recorded.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "overlap: {:?}", w);
            }
            prop_assert_eq!(state.spans as usize, recorded.len());
        }
    }
}
