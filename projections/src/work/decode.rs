//! How the work projection reads the log: organization, project, timesheet
//! and erasure commits as the domain's typed events, device batches as the
//! activity projection reads them (a span is a hot event).

use trackhrs_domain::Aggregate as _;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::erasure::ErasureEvent;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_domain::project::{Project, ProjectEvent};
use trackhrs_domain::timesheet::{Timesheet, TimesheetEvent};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::activity::{ActivityCommit, DeviceBatch, decode_device};
use crate::projection::Committed;

/// A stored commit as the work projection reads it.
#[derive(Debug)]
pub enum WorkCommit {
    /// An organization's commit (calendar, teams, clients, rules).
    Org(TypedCommit<OrgEvent>),
    /// A project's commit.
    Project(TypedCommit<ProjectEvent>),
    /// A timesheet's commit.
    Timesheet(TypedCommit<TimesheetEvent>),
    /// A device's batch of spans.
    Device(DeviceBatch),
    /// A person's erasure.
    Erasure(TypedCommit<ErasureEvent>),
}

impl Committed for WorkCommit {
    fn stream_sequence(&self) -> u64 {
        match self {
            Self::Org(c) => c.stream_sequence,
            Self::Project(c) => c.stream_sequence,
            Self::Timesheet(c) => c.stream_sequence,
            Self::Device(b) => b.stream_sequence,
            Self::Erasure(c) => c.stream_sequence,
        }
    }

    fn org_id(&self) -> &str {
        match self {
            Self::Org(c) => &c.org_id,
            Self::Project(c) => &c.org_id,
            Self::Timesheet(c) => &c.org_id,
            Self::Device(b) => &b.org_id,
            Self::Erasure(c) => &c.org_id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Self::Org(c) => c.events.len(),
            Self::Project(c) => c.events.len(),
            Self::Timesheet(c) => c.events.len(),
            Self::Device(b) => b.events,
            Self::Erasure(c) => c.events.len(),
        }
    }
}

/// The subjects the work projection reads.
pub(super) fn subjects() -> Vec<String> {
    vec![
        EventStore::subjects_of::<Organization>(),
        EventStore::subjects_of::<Project>(),
        EventStore::subjects_of::<Timesheet>(),
        EventStore::subjects_of::<DeviceActivity>(),
        crate::erasure::subjects(),
    ]
}

pub(super) async fn decode(
    keys: &KeyStore,
    subject: &str,
    sequence: u64,
    bytes: &[u8],
) -> Result<WorkCommit, StoreError> {
    match subject.split('.').nth(2) {
        Some(Project::TYPE) => decode_typed::<Project>(keys, subject, sequence, bytes)
            .await
            .map(WorkCommit::Project),
        Some(Timesheet::TYPE) => decode_typed::<Timesheet>(keys, subject, sequence, bytes)
            .await
            .map(WorkCommit::Timesheet),
        _ => Ok(match decode_device(keys, subject, sequence, bytes).await? {
            ActivityCommit::Org(c) => WorkCommit::Org(c),
            ActivityCommit::Device(b) => WorkCommit::Device(b),
            ActivityCommit::Erasure(c) => WorkCommit::Erasure(c),
        }),
    }
}
