//! `Timesheet`: one member's week, what their time was *for*. One aggregate
//! per (member, week), its id `<member>-<yyyy-mm-dd of the week's first
//! day>`. Activity spans are facts the agent observed and are never refused;
//! a timesheet holds the decisions people make about them: manual entries
//! (a meeting, offline work) and assignments of stretches of activity to a
//! task, then the week's submission, approval or rejection, and an admin's
//! reopening.
//!
//! The week's bounds come in with the commands, computed in the org's time
//! zone and work week by the caller (a week in which daylight saving time
//! starts or ends is 167 or 169 hours long), as do the facts of the
//! project booked on (active, may the member book on it) and the caller's
//! rights (may approve: a manager of the member's team, or an admin).
//!
//! Invariants: entries lie inside the week, end after they start and last
//! at most 24 hours; no two entries of the week overlap; nothing changes in
//! a submitted or approved week except the decisions that move it (approve,
//! reject, reopen); only the member submits their week; nobody approves or
//! rejects their own week; only those who may approve decide; an approved
//! week is reopened only by an admin, with a reason; archived projects and
//! projects the member may not book on take no new time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::{PersonId, Token};
use crate::personal::PersonalData;

/// Longest entry, in milliseconds.
pub const MAX_ENTRY_MS: i64 = 24 * 3_600_000;

/// The week's bounds, `[start_ms, end_ms)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Week {
    /// The first instant of the week in the org's time zone.
    pub start_ms: i64,
    /// The first instant of the next week.
    pub end_ms: i64,
}

/// Where a week stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeekStatus {
    /// Being filled in (also after a rejection or a reopening).
    #[default]
    Open,
    /// Submitted, waiting for a decision: nothing in it changes.
    Submitted,
    /// Approved and locked.
    Approved,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Time the agent did not see (a meeting, offline work).
    Manual,
    /// A stretch of observed activity assigned to a task, overriding the
    /// attribution rules.
    Assignment,
}

/// A task booked on: a task of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The project.
    pub project: Token,
    /// The task (within the project).
    pub task: Token,
}

/// One entry of the week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Manual or an assignment.
    pub kind: EntryKind,
    /// What it is for.
    pub task: TaskRef,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
}

/// The state of a project that matters to booking time on it, read by the
/// caller from the project when the entry is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bookable {
    /// Whether the project is active (archived projects take no new time).
    pub active: bool,
    /// Whether the member may book on it.
    pub member_allowed: bool,
}

/// A member's week.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timesheet {
    /// Whose week (set by the first event).
    pub member: Option<PersonId>,
    /// Its bounds (set by the first event).
    pub week: Option<Week>,
    /// Where it stands.
    pub status: WeekStatus,
    /// Its entries by id.
    pub entries: BTreeMap<Token, Entry>,
}

/// What may be asked of a week.
#[derive(Debug, Clone, PartialEq)]
pub enum TimesheetCommand {
    /// Add an entry (the member, for their own week).
    AddEntry {
        /// Who asks.
        actor: PersonId,
        /// Whose week.
        member: PersonId,
        /// Its bounds.
        week: Week,
        /// The entry's id (unique in the week).
        id: Token,
        /// The entry.
        entry: Entry,
        /// The project's state.
        project: Bookable,
        /// A note (personal data of the member).
        note: Option<String>,
    },
    /// Remove an entry.
    RemoveEntry {
        /// Who asks.
        actor: PersonId,
        /// The entry.
        id: Token,
    },
    /// Submit the week for approval (the member).
    Submit {
        /// Who asks.
        actor: PersonId,
        /// Whose week (a week without entries is submitted too).
        member: PersonId,
        /// Its bounds.
        week: Week,
    },
    /// Approve a submitted week.
    Approve {
        /// Who decides.
        actor: PersonId,
        /// Whether they may: a manager of the member's team, or an admin.
        may_approve: bool,
        /// Their comment.
        comment: Option<String>,
    },
    /// Reject a submitted week, saying why.
    Reject {
        /// Who decides.
        actor: PersonId,
        /// Whether they may.
        may_approve: bool,
        /// Why (required).
        comment: String,
    },
    /// Reopen an approved week (admins), with a reason that is recorded.
    Reopen {
        /// Who reopens.
        actor: PersonId,
        /// Whether they are an owner or an admin.
        is_admin: bool,
        /// Why.
        reason: String,
    },
}

/// What happened to a week. Notes, comments and reasons are personal data
/// of the week's member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TimesheetEvent {
    /// An entry was added.
    EntryAdded {
        /// Whose week.
        member: PersonId,
        /// Its bounds.
        week: Week,
        /// The entry's id.
        id: Token,
        /// The entry.
        entry: Entry,
        /// Its note.
        note: Option<PersonalData>,
    },
    /// An entry was removed.
    EntryRemoved {
        /// The entry's id.
        id: Token,
    },
    /// The week was submitted.
    WeekSubmitted {
        /// Whose week.
        member: PersonId,
        /// Its bounds.
        week: Week,
    },
    /// The week was approved and is locked.
    WeekApproved {
        /// Who approved it.
        by: PersonId,
        /// Their comment.
        comment: Option<PersonalData>,
    },
    /// The week was rejected and is open again.
    WeekRejected {
        /// Who rejected it.
        by: PersonId,
        /// Why.
        comment: PersonalData,
    },
    /// An approved week was reopened.
    WeekReopened {
        /// Who reopened it.
        by: PersonId,
        /// Why.
        reason: PersonalData,
    },
}

impl DomainEvent for TimesheetEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::EntryAdded { .. } => "EntryAdded",
            Self::EntryRemoved { .. } => "EntryRemoved",
            Self::WeekSubmitted { .. } => "WeekSubmitted",
            Self::WeekApproved { .. } => "WeekApproved",
            Self::WeekRejected { .. } => "WeekRejected",
            Self::WeekReopened { .. } => "WeekReopened",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a command on a week was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimesheetError {
    /// Only the member changes or submits their week.
    #[error("only the member changes and submits their own week")]
    NotTheMember,
    /// The week is submitted or approved: nothing in it changes.
    #[error("the week is {0:?}: nothing in it changes until it is decided or reopened")]
    Locked(WeekStatus),
    /// The command names another member or other bounds than the week's.
    #[error("this is another member's week, or another week")]
    WrongWeek,
    /// The week's bounds are not a week.
    #[error("the week's bounds are invalid")]
    InvalidWeek,
    /// The entry ends before it starts.
    #[error("an entry must end after it starts")]
    EndBeforeStart,
    /// The entry is longer than 24 hours.
    #[error("an entry lasts at most 24 hours")]
    TooLong,
    /// The entry lies partly outside the week.
    #[error("the entry lies outside the week")]
    OutsideWeek,
    /// The entry overlaps another of the week.
    #[error("the entry overlaps entry {0}")]
    Overlaps(Token),
    /// An entry with this id exists.
    #[error("entry {0} exists")]
    EntryExists(Token),
    /// No entry with this id.
    #[error("no entry {0}")]
    NoSuchEntry(Token),
    /// The project is archived.
    #[error("the project is archived and takes no new time")]
    ProjectArchived,
    /// The member may not book on the project.
    #[error("the member may not book time on this project")]
    NotAllowedOnProject,
    /// The week is not submitted.
    #[error("the week is not submitted")]
    NotSubmitted,
    /// Nobody approves or rejects their own week.
    #[error("nobody decides on their own week")]
    OwnWeek,
    /// The actor may not decide on this member's weeks.
    #[error("only a manager of the member's team or an admin decides on this week")]
    MayNotDecide,
    /// A rejection or reopening needs a reason.
    #[error("say why")]
    ReasonRequired,
    /// Only approved weeks are reopened.
    #[error("only an approved week is reopened")]
    NotApproved,
    /// Only admins reopen.
    #[error("only an owner or an admin reopens an approved week")]
    NotAdmin,
}

impl Timesheet {
    /// Checks that a command about `member`'s `week` is about this one.
    fn same_week(&self, member: &PersonId, week: Week) -> Result<(), TimesheetError> {
        if week.end_ms <= week.start_ms {
            return Err(TimesheetError::InvalidWeek);
        }
        match (&self.member, self.week) {
            (Some(m), Some(w)) if m != member || w != week => Err(TimesheetError::WrongWeek),
            _ => Ok(()),
        }
    }

    fn editable(&self) -> Result<(), TimesheetError> {
        match self.status {
            WeekStatus::Open => Ok(()),
            locked => Err(TimesheetError::Locked(locked)),
        }
    }

    fn the_member(&self, actor: &PersonId) -> Result<&PersonId, TimesheetError> {
        match &self.member {
            Some(member) if member == actor => Ok(member),
            _ => Err(TimesheetError::NotTheMember),
        }
    }

    /// Checks an entry against the week and its other entries.
    fn check_entry(&self, week: Week, entry: &Entry) -> Result<(), TimesheetError> {
        if entry.end_ms <= entry.start_ms {
            return Err(TimesheetError::EndBeforeStart);
        }
        if entry.end_ms - entry.start_ms > MAX_ENTRY_MS {
            return Err(TimesheetError::TooLong);
        }
        if entry.start_ms < week.start_ms || entry.end_ms > week.end_ms {
            return Err(TimesheetError::OutsideWeek);
        }
        match self
            .entries
            .iter()
            .find(|(_, e)| e.start_ms < entry.end_ms && entry.start_ms < e.end_ms)
        {
            Some((id, _)) => Err(TimesheetError::Overlaps(id.clone())),
            None => Ok(()),
        }
    }

    fn decide(&self, actor: &PersonId, may_approve: bool) -> Result<PersonId, TimesheetError> {
        if self.status != WeekStatus::Submitted {
            return Err(TimesheetError::NotSubmitted);
        }
        let member = self.member.clone().ok_or(TimesheetError::NotSubmitted)?;
        if &member == actor {
            return Err(TimesheetError::OwnWeek);
        }
        if !may_approve {
            return Err(TimesheetError::MayNotDecide);
        }
        Ok(member)
    }
}

impl Aggregate for Timesheet {
    const TYPE: &'static str = "timesheet";
    type Command = TimesheetCommand;
    type Event = TimesheetEvent;
    type Error = TimesheetError;

    fn handle(&self, command: TimesheetCommand) -> Result<Vec<TimesheetEvent>, TimesheetError> {
        match command {
            TimesheetCommand::AddEntry {
                actor,
                member,
                week,
                id,
                entry,
                project,
                note,
            } => {
                self.same_week(&member, week)?;
                if actor != member {
                    return Err(TimesheetError::NotTheMember);
                }
                self.editable()?;
                if self.entries.contains_key(&id) {
                    return Err(TimesheetError::EntryExists(id));
                }
                self.check_entry(week, &entry)?;
                if !project.active {
                    return Err(TimesheetError::ProjectArchived);
                }
                if !project.member_allowed {
                    return Err(TimesheetError::NotAllowedOnProject);
                }
                let note = note.map(|n| PersonalData::new(member.clone(), n));
                Ok(vec![TimesheetEvent::EntryAdded {
                    member,
                    week,
                    id,
                    entry,
                    note,
                }])
            }
            TimesheetCommand::RemoveEntry { actor, id } => {
                self.the_member(&actor)?;
                self.editable()?;
                if !self.entries.contains_key(&id) {
                    return Err(TimesheetError::NoSuchEntry(id));
                }
                Ok(vec![TimesheetEvent::EntryRemoved { id }])
            }
            TimesheetCommand::Submit {
                actor,
                member,
                week,
            } => {
                self.same_week(&member, week)?;
                if actor != member {
                    return Err(TimesheetError::NotTheMember);
                }
                self.editable()?;
                Ok(vec![TimesheetEvent::WeekSubmitted { member, week }])
            }
            TimesheetCommand::Approve {
                actor,
                may_approve,
                comment,
            } => {
                let member = self.decide(&actor, may_approve)?;
                Ok(vec![TimesheetEvent::WeekApproved {
                    by: actor,
                    comment: comment.map(|c| PersonalData::new(member, c)),
                }])
            }
            TimesheetCommand::Reject {
                actor,
                may_approve,
                comment,
            } => {
                let member = self.decide(&actor, may_approve)?;
                if comment.trim().is_empty() {
                    return Err(TimesheetError::ReasonRequired);
                }
                Ok(vec![TimesheetEvent::WeekRejected {
                    by: actor,
                    comment: PersonalData::new(member, comment),
                }])
            }
            TimesheetCommand::Reopen {
                actor,
                is_admin,
                reason,
            } => {
                if self.status != WeekStatus::Approved {
                    return Err(TimesheetError::NotApproved);
                }
                if !is_admin {
                    return Err(TimesheetError::NotAdmin);
                }
                if reason.trim().is_empty() {
                    return Err(TimesheetError::ReasonRequired);
                }
                let member = self.member.clone().ok_or(TimesheetError::NotApproved)?;
                Ok(vec![TimesheetEvent::WeekReopened {
                    by: actor,
                    reason: PersonalData::new(member, reason),
                }])
            }
        }
    }

    fn apply(&mut self, event: &TimesheetEvent) {
        match event {
            TimesheetEvent::EntryAdded {
                member,
                week,
                id,
                entry,
                ..
            } => {
                self.member.get_or_insert_with(|| member.clone());
                self.week.get_or_insert(*week);
                self.entries.insert(id.clone(), entry.clone());
            }
            TimesheetEvent::EntryRemoved { id } => {
                self.entries.remove(id);
            }
            TimesheetEvent::WeekSubmitted { member, week } => {
                self.member.get_or_insert_with(|| member.clone());
                self.week.get_or_insert(*week);
                self.status = WeekStatus::Submitted;
            }
            TimesheetEvent::WeekApproved { .. } => self.status = WeekStatus::Approved,
            TimesheetEvent::WeekRejected { .. } | TimesheetEvent::WeekReopened { .. } => {
                self.status = WeekStatus::Open;
            }
        }
    }

    fn upcast(
        event_type: &str,
        version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, UpcastError> {
        let types = [
            "EntryAdded",
            "EntryRemoved",
            "WeekSubmitted",
            "WeekApproved",
            "WeekRejected",
            "WeekReopened",
        ];
        upcast_first_versions(Self::TYPE, &types, event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::AggregateTest;

    const H: i64 = 3_600_000;
    /// A week of 169 hours (daylight saving time ends in it).
    const WEEK: Week = Week {
        start_ms: 1_792_000_000_000,
        end_ms: 1_792_000_000_000 + 169 * H,
    };

    fn p(s: &str) -> PersonId {
        PersonId::new(s).unwrap()
    }

    fn task() -> TaskRef {
        TaskRef {
            project: Token::new("apollo").unwrap(),
            task: Token::new("design").unwrap(),
        }
    }

    fn entry(start_h: i64, end_h: i64) -> Entry {
        Entry {
            kind: EntryKind::Manual,
            task: task(),
            start_ms: WEEK.start_ms + start_h * H,
            end_ms: WEEK.start_ms + end_h * H,
        }
    }

    const BOOKABLE: Bookable = Bookable {
        active: true,
        member_allowed: true,
    };

    fn add(id: &str, start_h: i64, end_h: i64) -> TimesheetCommand {
        add_on(id, start_h, end_h, BOOKABLE)
    }

    fn add_on(id: &str, start_h: i64, end_h: i64, project: Bookable) -> TimesheetCommand {
        TimesheetCommand::AddEntry {
            actor: p("erin"),
            member: p("erin"),
            week: WEEK,
            id: Token::new(id).unwrap(),
            entry: entry(start_h, end_h),
            project,
            note: None,
        }
    }

    fn added(id: &str, start_h: i64, end_h: i64) -> TimesheetEvent {
        TimesheetEvent::EntryAdded {
            member: p("erin"),
            week: WEEK,
            id: Token::new(id).unwrap(),
            entry: entry(start_h, end_h),
            note: None,
        }
    }

    fn submitted() -> TimesheetEvent {
        TimesheetEvent::WeekSubmitted {
            member: p("erin"),
            week: WEEK,
        }
    }

    fn approved() -> TimesheetEvent {
        TimesheetEvent::WeekApproved {
            by: p("manny"),
            comment: None,
        }
    }

    #[test]
    fn the_member_adds_entries_that_fit_the_week_and_overlap_nothing() {
        AggregateTest::<Timesheet>::given(vec![])
            .when(add("e1", 9, 12))
            .then_expect(vec![added("e1", 9, 12)]);
        // Touching is not overlapping; the last hour of a 169-hour week fits.
        AggregateTest::<Timesheet>::given(vec![added("e1", 9, 12)])
            .when(add("e2", 12, 13))
            .then_expect(vec![added("e2", 12, 13)]);
        AggregateTest::<Timesheet>::given(vec![])
            .when(add("e1", 168, 169))
            .then_expect(vec![added("e1", 168, 169)]);
        for (command, error) in [
            (
                add("e2", 11, 14),
                TimesheetError::Overlaps(Token::new("e1").unwrap()),
            ),
            (add("e2", 13, 12), TimesheetError::EndBeforeStart),
            (add("e2", 12, 12), TimesheetError::EndBeforeStart),
            (add("e2", 30, 55), TimesheetError::TooLong),
            (add("e2", 168, 170), TimesheetError::OutsideWeek),
            (add("e2", -1, 1), TimesheetError::OutsideWeek),
            (
                add("e1", 20, 21),
                TimesheetError::EntryExists(Token::new("e1").unwrap()),
            ),
        ] {
            AggregateTest::<Timesheet>::given(vec![added("e1", 9, 12)])
                .when(command)
                .then_expect_error(error);
        }
    }

    #[test]
    fn archived_projects_and_projects_off_limits_take_no_time() {
        for (project, error) in [
            (
                Bookable {
                    active: false,
                    member_allowed: true,
                },
                TimesheetError::ProjectArchived,
            ),
            (
                Bookable {
                    active: true,
                    member_allowed: false,
                },
                TimesheetError::NotAllowedOnProject,
            ),
        ] {
            AggregateTest::<Timesheet>::given(vec![])
                .when(add_on("e1", 1, 2, project))
                .then_expect_error(error);
        }
    }

    #[test]
    fn only_the_member_changes_their_week() {
        AggregateTest::<Timesheet>::given(vec![])
            .when(TimesheetCommand::AddEntry {
                actor: p("manny"),
                member: p("erin"),
                week: WEEK,
                id: Token::new("e1").unwrap(),
                entry: entry(1, 2),
                project: BOOKABLE,
                note: None,
            })
            .then_expect_error(TimesheetError::NotTheMember);
        AggregateTest::<Timesheet>::given(vec![added("e1", 1, 2)])
            .when(TimesheetCommand::RemoveEntry {
                actor: p("manny"),
                id: Token::new("e1").unwrap(),
            })
            .then_expect_error(TimesheetError::NotTheMember);
        AggregateTest::<Timesheet>::given(vec![added("e1", 1, 2)])
            .when(TimesheetCommand::Submit {
                actor: p("manny"),
                member: p("erin"),
                week: WEEK,
            })
            .then_expect_error(TimesheetError::NotTheMember);
        // Another week's bounds are not this week's.
        AggregateTest::<Timesheet>::given(vec![added("e1", 1, 2)])
            .when(TimesheetCommand::Submit {
                actor: p("erin"),
                member: p("erin"),
                week: Week {
                    start_ms: WEEK.end_ms,
                    end_ms: WEEK.end_ms + 168 * H,
                },
            })
            .then_expect_error(TimesheetError::WrongWeek);
    }

    #[test]
    fn a_submitted_week_changes_only_by_a_decision_of_someone_else_who_may() {
        let given = || vec![added("e1", 1, 2), submitted()];
        for command in [
            add("e2", 3, 4),
            TimesheetCommand::RemoveEntry {
                actor: p("erin"),
                id: Token::new("e1").unwrap(),
            },
            TimesheetCommand::Submit {
                actor: p("erin"),
                member: p("erin"),
                week: WEEK,
            },
        ] {
            AggregateTest::<Timesheet>::given(given())
                .when(command)
                .then_expect_error(TimesheetError::Locked(WeekStatus::Submitted));
        }
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Approve {
                actor: p("erin"),
                may_approve: true,
                comment: None,
            })
            .then_expect_error(TimesheetError::OwnWeek);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Approve {
                actor: p("ed"),
                may_approve: false,
                comment: None,
            })
            .then_expect_error(TimesheetError::MayNotDecide);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Reject {
                actor: p("manny"),
                may_approve: true,
                comment: " ".into(),
            })
            .then_expect_error(TimesheetError::ReasonRequired);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Approve {
                actor: p("manny"),
                may_approve: true,
                comment: None,
            })
            .then_expect(vec![approved()]);
        // A rejected week is open again: the member fixes it and submits.
        AggregateTest::<Timesheet>::given(vec![
            added("e1", 1, 2),
            submitted(),
            TimesheetEvent::WeekRejected {
                by: p("manny"),
                comment: PersonalData::new(p("erin"), "Tuesday is missing"),
            },
        ])
        .when(add("e2", 30, 38))
        .then_expect(vec![added("e2", 30, 38)]);
        AggregateTest::<Timesheet>::given(vec![added("e1", 1, 2)])
            .when(TimesheetCommand::Approve {
                actor: p("manny"),
                may_approve: true,
                comment: None,
            })
            .then_expect_error(TimesheetError::NotSubmitted);
    }

    #[test]
    fn an_approved_week_is_locked_until_an_admin_reopens_it_with_a_reason() {
        let given = || vec![added("e1", 1, 2), submitted(), approved()];
        AggregateTest::<Timesheet>::given(given())
            .when(add("e2", 3, 4))
            .then_expect_error(TimesheetError::Locked(WeekStatus::Approved));
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Reject {
                actor: p("manny"),
                may_approve: true,
                comment: "late".into(),
            })
            .then_expect_error(TimesheetError::NotSubmitted);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Reopen {
                actor: p("manny"),
                is_admin: false,
                reason: "typo".into(),
            })
            .then_expect_error(TimesheetError::NotAdmin);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Reopen {
                actor: p("olive"),
                is_admin: true,
                reason: String::new(),
            })
            .then_expect_error(TimesheetError::ReasonRequired);
        AggregateTest::<Timesheet>::given(given())
            .when(TimesheetCommand::Reopen {
                actor: p("olive"),
                is_admin: true,
                reason: "payroll correction".into(),
            })
            .then_expect(vec![TimesheetEvent::WeekReopened {
                by: p("olive"),
                reason: PersonalData::new(p("erin"), "payroll correction"),
            }]);
    }

    fn state_after(events: &[TimesheetEvent]) -> Timesheet {
        let mut state = Timesheet::default();
        for e in events {
            state.apply(e);
        }
        state
    }

    proptest! {
        /// Whatever the member tries, in whatever order, the entries the
        /// week keeps never overlap and all lie inside it.
        #[test]
        fn entries_never_overlap_and_stay_inside_the_week(
            tries in proptest::collection::vec((-5i64..175, 0i64..30, any::<bool>()), 0..40)
        ) {
            let mut events = Vec::new();
            for (n, (start_h, len_h, remove)) in tries.into_iter().enumerate() {
                let state = state_after(&events);
                let command = if remove && !state.entries.is_empty() {
                    let id = state.entries.keys().nth(n % state.entries.len()).unwrap().clone();
                    TimesheetCommand::RemoveEntry { actor: p("erin"), id }
                } else {
                    add(&format!("e{n}"), start_h, start_h + len_h)
                };
                if let Ok(new) = state.handle(command) {
                    events.extend(new);
                }
            }
            let state = state_after(&events);
            let entries: Vec<&Entry> = state.entries.values().collect();
            for (i, a) in entries.iter().enumerate() {
                prop_assert!(a.start_ms < a.end_ms && a.end_ms - a.start_ms <= MAX_ENTRY_MS);
                prop_assert!(a.start_ms >= WEEK.start_ms && a.end_ms <= WEEK.end_ms);
                for b in &entries[i + 1..] {
                    prop_assert!(a.end_ms <= b.start_ms || b.end_ms <= a.start_ms);
                }
            }
        }

        /// Once approved, no sequence of member commands changes a week.
        #[test]
        fn an_approved_week_refuses_every_member_command(start_h in 0i64..160, len_h in 1i64..8) {
            let state = state_after(&[added("e1", 1, 2), submitted(), approved()]);
            for command in [
                add("e2", start_h, start_h + len_h),
                TimesheetCommand::RemoveEntry { actor: p("erin"), id: Token::new("e1").unwrap() },
                TimesheetCommand::Submit { actor: p("erin"), member: p("erin"), week: WEEK },
            ] {
                prop_assert_eq!(
                    state.handle(command),
                    Err(TimesheetError::Locked(WeekStatus::Approved))
                );
            }
        }
    }
}
