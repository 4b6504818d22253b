//! `Leave`: one member's leave, one aggregate per member (its id is the
//! member's id): their requests and, per leave type, their balance (what
//! accrued, less approved leave, less what a year's carry-over cap took).
//!
//! The leave types' policies come in with the commands (they live in the
//! org's `Payroll`), as do the caller's rights and today's date; the days a
//! request covers are computed by the caller from the org's work week and
//! holidays (a day of leave on a day off is not taken).
//!
//! Invariants: a balance never goes below what its type allows, however
//! approvals race (each approval is decided on the member's whole state);
//! no two live (pending or approved) requests of a member share a day;
//! only the member requests and cancels their leave, and only before it
//! starts; nobody decides on their own leave, only a manager of the
//! member's team or an admin; an accrual is recorded once per type and
//! boundary, a carry-over once per type and year.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::{PersonId, Token};
use crate::money::HOUR_MS;
use crate::personal::PersonalData;

/// Most days one request covers.
pub const MAX_REQUEST_DAYS: usize = 366;

/// What a command needs to know of a leave type (from the org's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeFacts {
    /// Whether requests are held to a balance.
    pub has_balance: bool,
    /// How far below zero the balance may go, ms.
    pub negative_allowance_ms: i64,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved: taken from the balance.
    Approved,
    /// Denied.
    Denied,
    /// Cancelled by the member.
    Cancelled,
}

/// A leave request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its type.
    pub leave_type: Token,
    /// The days it takes, each with how much of it (ms).
    pub days: BTreeMap<NaiveDate, i64>,
    /// Where it stands.
    pub status: RequestStatus,
}

impl Request {
    /// How much it takes, ms.
    pub fn ms(&self) -> i64 {
        self.days.values().sum()
    }

    fn live(&self) -> bool {
        matches!(
            self.status,
            RequestStatus::Pending | RequestStatus::Approved
        )
    }

    fn first_day(&self) -> Option<NaiveDate> {
        self.days.keys().next().copied()
    }
}

/// A member's leave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    /// Whose (set by the first event).
    pub member: Option<PersonId>,
    /// Requests by id.
    pub requests: BTreeMap<Token, Request>,
    /// Per type, accruals by their boundary, ms.
    pub accruals: BTreeMap<Token, BTreeMap<NaiveDate, i64>>,
    /// Per type, what the carry-over cap took at the start of each year, ms.
    pub forfeits: BTreeMap<Token, BTreeMap<i32, i64>>,
}

/// What may be asked of a member's leave.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaveCommand {
    /// Request leave (the member).
    Request {
        /// Who asks.
        actor: PersonId,
        /// Whose leave.
        member: PersonId,
        /// The request's id.
        id: Token,
        /// Its type.
        leave_type: Token,
        /// The type's policy.
        facts: TypeFacts,
        /// The days it takes, each with how much (ms).
        days: BTreeMap<NaiveDate, i64>,
        /// A note (personal data of the member).
        note: Option<String>,
    },
    /// Approve a pending request.
    Approve {
        /// Who decides.
        actor: PersonId,
        /// Whether they may: a manager of the member's team, or an admin.
        may_approve: bool,
        /// The request.
        id: Token,
        /// Its type's policy now.
        facts: TypeFacts,
    },
    /// Deny a pending request.
    Deny {
        /// Who decides.
        actor: PersonId,
        /// Whether they may.
        may_approve: bool,
        /// The request.
        id: Token,
        /// Why.
        comment: Option<String>,
    },
    /// Cancel a request that has not started (the member).
    Cancel {
        /// Who asks.
        actor: PersonId,
        /// The request.
        id: Token,
        /// Today, in the org's time zone.
        today: NaiveDate,
    },
    /// Accrue `ms` of a type at a boundary (the scheduled job); nothing if
    /// that boundary already accrued.
    Accrue {
        /// Whose leave.
        member: PersonId,
        /// The type.
        leave_type: Token,
        /// The boundary (first day of a month or pay period).
        boundary: NaiveDate,
        /// How much.
        ms: i64,
    },
    /// Apply a type's carry-over cap at the start of `year` (the scheduled
    /// job): what accrued before the year, less leave taken before it, above
    /// the cap is forfeited; nothing if that year was done.
    CarryOver {
        /// Whose leave.
        member: PersonId,
        /// The type.
        leave_type: Token,
        /// The new year.
        year: i32,
        /// The cap, ms.
        cap_ms: i64,
    },
}

/// What happened to a member's leave. Notes and comments are personal data
/// of the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LeaveEvent {
    /// Leave was requested.
    LeaveRequested {
        /// Whose.
        member: PersonId,
        /// The request's id.
        id: Token,
        /// Its type.
        leave_type: Token,
        /// Its days.
        days: BTreeMap<NaiveDate, i64>,
        /// Its note.
        note: Option<PersonalData>,
    },
    /// A request was approved.
    LeaveApproved {
        /// The request.
        id: Token,
        /// Who approved it.
        by: PersonId,
    },
    /// A request was denied.
    LeaveDenied {
        /// The request.
        id: Token,
        /// Who denied it.
        by: PersonId,
        /// Why.
        comment: Option<PersonalData>,
    },
    /// A request was cancelled.
    LeaveCancelled {
        /// The request.
        id: Token,
    },
    /// Leave accrued.
    LeaveAccrued {
        /// Whose.
        member: PersonId,
        /// The type.
        leave_type: Token,
        /// The boundary.
        boundary: NaiveDate,
        /// How much, ms.
        ms: i64,
    },
    /// A year's carry-over cap was applied.
    LeaveForfeited {
        /// Whose.
        member: PersonId,
        /// The type.
        leave_type: Token,
        /// The new year.
        year: i32,
        /// What the cap took, ms (0: nothing).
        ms: i64,
    },
}

impl DomainEvent for LeaveEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::LeaveRequested { .. } => "LeaveRequested",
            Self::LeaveApproved { .. } => "LeaveApproved",
            Self::LeaveDenied { .. } => "LeaveDenied",
            Self::LeaveCancelled { .. } => "LeaveCancelled",
            Self::LeaveAccrued { .. } => "LeaveAccrued",
            Self::LeaveForfeited { .. } => "LeaveForfeited",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a leave command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    /// Only the member requests or cancels their leave.
    #[error("only the member requests and cancels their own leave")]
    NotTheMember,
    /// The request takes no day.
    #[error("the request takes no work day")]
    NoDays,
    /// Too many days.
    #[error("a request takes at most {MAX_REQUEST_DAYS} days")]
    TooManyDays,
    /// A day's amount out of range.
    #[error("leave on a day is more than 0 and at most 24 hours")]
    BadAmount,
    /// A request with this id exists.
    #[error("request {0} exists")]
    RequestExists(Token),
    /// No request with this id.
    #[error("no leave request {0}")]
    NoSuchRequest(Token),
    /// Overlaps another live request.
    #[error("the leave overlaps request {id} on {day}")]
    Overlaps {
        /// The other request.
        id: Token,
        /// A day both take.
        day: NaiveDate,
    },
    /// Not enough balance.
    #[error(
        "the balance is {balance_h} h; {needed_h} h would take it below the {allowance_h} h the policy allows under zero"
    )]
    InsufficientBalance {
        /// The balance, hours (rounded down to 0.01).
        balance_h: String,
        /// What the request takes.
        needed_h: String,
        /// How far under zero the policy allows.
        allowance_h: String,
    },
    /// The request is not pending.
    #[error("the request is {0:?}")]
    NotPending(RequestStatus),
    /// Nobody decides on their own leave.
    #[error("nobody decides on their own leave")]
    OwnRequest,
    /// The actor may not decide.
    #[error("only a manager of the member's team or an admin decides on this leave")]
    MayNotDecide,
    /// The leave has started.
    #[error("leave that has started is not cancelled")]
    Started,
    /// Another member's leave.
    #[error("this is another member's leave")]
    WrongMember,
    /// An accrual out of range.
    #[error("an accrual is more than 0 and at most 31 days")]
    BadAccrual,
}

/// `ms` as hours with two decimals.
fn hours(ms: i64) -> String {
    let hundredths = ms * 100 / HOUR_MS;
    let sign = if hundredths < 0 { "-" } else { "" };
    let abs = hundredths.abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl Leave {
    /// The balance of `leave_type`, ms: accrued, less approved leave, less
    /// forfeits.
    pub fn balance(&self, leave_type: &Token) -> i64 {
        let accrued: i64 = self
            .accruals
            .get(leave_type)
            .map_or(0, |a| a.values().sum());
        let forfeited: i64 = self
            .forfeits
            .get(leave_type)
            .map_or(0, |f| f.values().sum());
        accrued - forfeited - self.taken(leave_type, |_| true)
    }

    /// Approved leave of `leave_type` on the days `which` keeps, ms.
    fn taken(&self, leave_type: &Token, which: impl Fn(NaiveDate) -> bool) -> i64 {
        self.requests
            .values()
            .filter(|r| r.status == RequestStatus::Approved && &r.leave_type == leave_type)
            .flat_map(|r| r.days.iter())
            .filter(|(day, _)| which(**day))
            .map(|(_, ms)| ms)
            .sum()
    }

    fn check_balance(
        &self,
        leave_type: &Token,
        facts: TypeFacts,
        ms: i64,
    ) -> Result<(), LeaveError> {
        let balance = self.balance(leave_type);
        if facts.has_balance && balance - ms < -facts.negative_allowance_ms {
            return Err(LeaveError::InsufficientBalance {
                balance_h: hours(balance),
                needed_h: hours(ms),
                allowance_h: hours(facts.negative_allowance_ms),
            });
        }
        Ok(())
    }

    fn same_member(&self, member: &PersonId) -> Result<(), LeaveError> {
        match &self.member {
            Some(m) if m != member => Err(LeaveError::WrongMember),
            _ => Ok(()),
        }
    }

    fn pending(&self, id: &Token) -> Result<&Request, LeaveError> {
        let request = self
            .requests
            .get(id)
            .ok_or_else(|| LeaveError::NoSuchRequest(id.clone()))?;
        if request.status != RequestStatus::Pending {
            return Err(LeaveError::NotPending(request.status));
        }
        Ok(request)
    }

    fn decider(&self, actor: &PersonId, may_approve: bool) -> Result<(), LeaveError> {
        if self.member.as_ref() == Some(actor) {
            return Err(LeaveError::OwnRequest);
        }
        if !may_approve {
            return Err(LeaveError::MayNotDecide);
        }
        Ok(())
    }

    fn request(
        &self,
        member: PersonId,
        id: Token,
        leave_type: Token,
        facts: TypeFacts,
        days: BTreeMap<NaiveDate, i64>,
        note: Option<String>,
    ) -> Result<Vec<LeaveEvent>, LeaveError> {
        if days.is_empty() {
            return Err(LeaveError::NoDays);
        }
        if days.len() > MAX_REQUEST_DAYS {
            return Err(LeaveError::TooManyDays);
        }
        if days.values().any(|ms| *ms <= 0 || *ms > 24 * HOUR_MS) {
            return Err(LeaveError::BadAmount);
        }
        if self.requests.contains_key(&id) {
            return Err(LeaveError::RequestExists(id));
        }
        for (other, request) in self.requests.iter().filter(|(_, r)| r.live()) {
            if let Some(day) = days.keys().find(|d| request.days.contains_key(d)) {
                return Err(LeaveError::Overlaps {
                    id: other.clone(),
                    day: *day,
                });
            }
        }
        self.check_balance(&leave_type, facts, days.values().sum())?;
        let note = note.map(|n| PersonalData::new(member.clone(), n));
        Ok(vec![LeaveEvent::LeaveRequested {
            member,
            id,
            leave_type,
            days,
            note,
        }])
    }
}

impl Aggregate for Leave {
    const TYPE: &'static str = "leave";
    type Command = LeaveCommand;
    type Event = LeaveEvent;
    type Error = LeaveError;

    fn handle(&self, command: LeaveCommand) -> Result<Vec<LeaveEvent>, LeaveError> {
        match command {
            LeaveCommand::Request {
                actor,
                member,
                id,
                leave_type,
                facts,
                days,
                note,
            } => {
                self.same_member(&member)?;
                if actor != member {
                    return Err(LeaveError::NotTheMember);
                }
                self.request(member, id, leave_type, facts, days, note)
            }
            LeaveCommand::Approve {
                actor,
                may_approve,
                id,
                facts,
            } => {
                // Who decides first: nothing about a request is told to
                // someone who may not decide on it.
                self.decider(&actor, may_approve)?;
                let request = self.pending(&id)?;
                self.check_balance(&request.leave_type, facts, request.ms())?;
                Ok(vec![LeaveEvent::LeaveApproved { id, by: actor }])
            }
            LeaveCommand::Deny {
                actor,
                may_approve,
                id,
                comment,
            } => {
                self.decider(&actor, may_approve)?;
                self.pending(&id)?;
                let member = self
                    .member
                    .clone()
                    .ok_or(LeaveError::NoSuchRequest(id.clone()))?;
                let comment = comment.map(|c| PersonalData::new(member, c));
                Ok(vec![LeaveEvent::LeaveDenied {
                    id,
                    by: actor,
                    comment,
                }])
            }
            LeaveCommand::Cancel { actor, id, today } => {
                if self.member.as_ref() != Some(&actor) {
                    return Err(LeaveError::NotTheMember);
                }
                let request = self
                    .requests
                    .get(&id)
                    .ok_or_else(|| LeaveError::NoSuchRequest(id.clone()))?;
                if !request.live() {
                    return Err(LeaveError::NotPending(request.status));
                }
                if request.first_day().is_none_or(|first| first <= today) {
                    return Err(LeaveError::Started);
                }
                Ok(vec![LeaveEvent::LeaveCancelled { id }])
            }
            LeaveCommand::Accrue {
                member,
                leave_type,
                boundary,
                ms,
            } => {
                self.same_member(&member)?;
                if ms <= 0 || ms > 31 * 24 * HOUR_MS {
                    return Err(LeaveError::BadAccrual);
                }
                if self
                    .accruals
                    .get(&leave_type)
                    .is_some_and(|a| a.contains_key(&boundary))
                {
                    return Ok(vec![]);
                }
                Ok(vec![LeaveEvent::LeaveAccrued {
                    member,
                    leave_type,
                    boundary,
                    ms,
                }])
            }
            LeaveCommand::CarryOver {
                member,
                leave_type,
                year,
                cap_ms,
            } => {
                self.same_member(&member)?;
                if self
                    .forfeits
                    .get(&leave_type)
                    .is_some_and(|f| f.contains_key(&year))
                {
                    return Ok(vec![]);
                }
                let before = |day: NaiveDate| day.year() < year;
                let accrued: i64 = self.accruals.get(&leave_type).map_or(0, |a| {
                    a.iter()
                        .filter(|(d, _)| before(**d))
                        .map(|(_, ms)| ms)
                        .sum()
                });
                let forfeited: i64 = self
                    .forfeits
                    .get(&leave_type)
                    .map_or(0, |f| f.values().sum());
                let left = accrued - forfeited - self.taken(&leave_type, before);
                // Never more than the balance holds now (leave approved for
                // the new year is already taken from it).
                let ms = (left - cap_ms).max(0).min(self.balance(&leave_type).max(0));
                Ok(vec![LeaveEvent::LeaveForfeited {
                    member,
                    leave_type,
                    year,
                    ms,
                }])
            }
        }
    }

    fn apply(&mut self, event: &LeaveEvent) {
        match event {
            LeaveEvent::LeaveRequested {
                member,
                id,
                leave_type,
                days,
                ..
            } => {
                self.member.get_or_insert_with(|| member.clone());
                self.requests.insert(
                    id.clone(),
                    Request {
                        leave_type: leave_type.clone(),
                        days: days.clone(),
                        status: RequestStatus::Pending,
                    },
                );
            }
            LeaveEvent::LeaveApproved { id, .. } => self.set(id, RequestStatus::Approved),
            LeaveEvent::LeaveDenied { id, .. } => self.set(id, RequestStatus::Denied),
            LeaveEvent::LeaveCancelled { id } => self.set(id, RequestStatus::Cancelled),
            LeaveEvent::LeaveAccrued {
                member,
                leave_type,
                boundary,
                ms,
            } => {
                self.member.get_or_insert_with(|| member.clone());
                self.accruals
                    .entry(leave_type.clone())
                    .or_default()
                    .insert(*boundary, *ms);
            }
            LeaveEvent::LeaveForfeited {
                member,
                leave_type,
                year,
                ms,
            } => {
                self.member.get_or_insert_with(|| member.clone());
                self.forfeits
                    .entry(leave_type.clone())
                    .or_default()
                    .insert(*year, *ms);
            }
        }
    }

    fn upcast(
        event_type: &str,
        schema_version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, UpcastError> {
        upcast_first_versions(
            Self::TYPE,
            &[
                "LeaveRequested",
                "LeaveApproved",
                "LeaveDenied",
                "LeaveCancelled",
                "LeaveAccrued",
                "LeaveForfeited",
            ],
            event_type,
            schema_version,
            payload,
        )
    }
}

impl Leave {
    fn set(&mut self, id: &Token, status: RequestStatus) {
        if let Some(request) = self.requests.get_mut(id) {
            request.status = status;
        }
    }
}

#[cfg(test)]
mod tests;
