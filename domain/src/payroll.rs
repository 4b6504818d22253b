//! `Payroll`: an org's pay policy and its payroll runs, one aggregate per
//! org (id [`AGGREGATE_ID`]). The policy: the currency, the pay schedule,
//! overtime rules, public holidays, the standard day, leave types and
//! members' pay rates. The runs: one per pay period, drafted from the
//! lines the caller computed ([`compute`]), reviewed, finalized.
//!
//! Invariants: only owners and admins change the policy or run payroll;
//! money is whole minor units of the currency, which does not change once
//! a run is finalized; the schedule never changes for a day a run covers
//! (so runs never overlap); a run covers a period that has ended, and no
//! period after a finalized one is drafted before it; a finalized run never
//! changes, and a later correction of it is an adjustment line of a later
//! run (what the period is worth now, less what was paid for it); runs are
//! finalized in period order, each only when nothing is missing (unapproved
//! weeks, members without a rate) and as the draft that was reviewed.

pub mod compute;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::{PersonId, Token};
use crate::money::{Currency, HOUR_MS, MAX_AMOUNT_MINOR};
use compute::{Line, LineKind, Overtime, PayRate};
use schedule::{Period, PeriodKind, Schedule};

/// The id of an org's payroll aggregate.
pub const AGGREGATE_ID: &str = "payroll";

/// Longest leave type or holiday name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// How a leave type's balance grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccrualEvery {
    /// At the start of every pay period.
    PayPeriod,
    /// On the first day of every month.
    Month,
}

/// A leave type's accrual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    /// When.
    pub every: AccrualEvery,
    /// How much each time, ms.
    pub ms: i64,
}

/// A kind of leave and its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveType {
    /// Its name (`Vacation`).
    pub name: String,
    /// Whether it is paid.
    pub paid: bool,
    /// How its balance grows; none: it has no balance to keep (sick leave,
    /// unpaid leave) and is never refused for one.
    pub accrual: Option<Accrual>,
    /// The most of a balance carried into a new year, ms (none: all).
    pub carry_over_cap_ms: Option<i64>,
    /// How far below zero the balance may go, ms.
    pub negative_allowance_ms: i64,
    /// From when it accrues (the day it was defined).
    pub since: NaiveDate,
}

impl LeaveType {
    /// Whether requests of this type are held to a balance.
    pub fn has_balance(&self) -> bool {
        self.accrual.is_some()
    }
}

/// Who sees pay rates and payroll lines besides owners, admins and the
/// member themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayVisibility {
    /// Managers see those of the members of their teams.
    pub managers: bool,
}

/// The org's pay policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The currency every amount is in (set before the first run).
    pub currency: Option<Currency>,
    /// The pay periods.
    pub schedule: Schedule,
    /// Overtime rules.
    pub overtime: Overtime,
    /// Public holidays, local dates, with their names.
    pub holidays: BTreeMap<NaiveDate, String>,
    /// A standard day's hours (a holiday, a day of leave), ms.
    pub day_ms: i64,
    /// Leave types by id.
    pub leave_types: BTreeMap<Token, LeaveType>,
    /// Members' rates, each from the day it takes effect.
    pub rates: BTreeMap<PersonId, BTreeMap<NaiveDate, PayRate>>,
    /// Who else sees pay.
    pub visibility: PayVisibility,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            currency: None,
            schedule: Schedule::default(),
            overtime: Overtime::default(),
            holidays: BTreeMap::new(),
            day_ms: 8 * HOUR_MS,
            leave_types: BTreeMap::new(),
            rates: BTreeMap::new(),
            visibility: PayVisibility::default(),
        }
    }
}

/// What a run was computed under besides the rates (which take effect by
/// date): a later check of the run for corrections computes it under the
/// same terms, so a new overtime rule or holiday does not reach back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Overtime rules.
    pub overtime: Overtime,
    /// A standard day's hours, ms.
    pub day_ms: i64,
    /// The public holidays of the period.
    pub holidays: BTreeSet<NaiveDate>,
    /// The leave types that were paid.
    pub paid_leave: BTreeSet<Token>,
    /// The days of a whole pay period of its kind.
    pub salary_days: i64,
}

impl Policy {
    /// The terms a run of `period` is computed under now.
    pub fn terms(&self, period: Period) -> Terms {
        Terms {
            overtime: self.overtime,
            day_ms: self.day_ms,
            holidays: self
                .holidays
                .keys()
                .filter(|d| period.contains(**d))
                .copied()
                .collect(),
            paid_leave: self
                .leave_types
                .iter()
                .filter(|(_, t)| t.paid)
                .map(|(id, _)| id.clone())
                .collect(),
            salary_days: self
                .schedule
                .whole_days(period.first)
                .unwrap_or_else(|| period.len_days()),
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Computed, to be reviewed; drafted again as often as wanted.
    Draft,
    /// Locked.
    Finalized,
}

/// Something that keeps a run from being finalized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Missing {
    /// A member's week that is not approved.
    Week {
        /// Whose.
        member: PersonId,
        /// Its first day.
        first_day: NaiveDate,
    },
    /// A member has time or leave on a day without a pay rate.
    Rate {
        /// Whose.
        member: PersonId,
        /// The day.
        day: NaiveDate,
    },
}

/// A run as the aggregate keeps it (its lines are in its events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its period.
    pub period: Period,
    /// Where it stands.
    pub status: RunStatus,
    /// The number of its latest draft (1, 2, ...).
    pub draft: u32,
    /// What keeps it from being finalized.
    pub missing: Vec<Missing>,
    /// Per member, what its own lines pay (adjustments not included).
    pub paid: BTreeMap<PersonId, i64>,
    /// Per corrected period and member, what its adjustment lines pay.
    pub adjusts: BTreeMap<NaiveDate, BTreeMap<PersonId, i64>>,
    /// What it was computed under (absent in runs drafted before terms
    /// were recorded).
    #[serde(default)]
    pub terms: Option<Terms>,
}

/// An org's payroll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payroll {
    /// The pay policy.
    pub policy: Policy,
    /// Runs by their period's first day.
    pub runs: BTreeMap<NaiveDate, Run>,
}

/// A change to the pay policy.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyChange {
    /// The currency (ISO 4217).
    Currency(String),
    /// Pay periods of `kind` from `from` on.
    Schedule {
        /// The first day of the first such period.
        from: NaiveDate,
        /// Their kind.
        kind: PeriodKind,
    },
    /// Overtime rules.
    Overtime(Overtime),
    /// A public holiday, or none (`name` absent) on `date`.
    Holiday {
        /// The local date.
        date: NaiveDate,
        /// Its name; none removes it.
        name: Option<String>,
    },
    /// A standard day's hours, ms.
    DayMs(i64),
    /// A leave type, new or changed (its `since` is kept when changed).
    LeaveType {
        /// Its id.
        id: Token,
        /// What it is.
        leave_type: LeaveType,
    },
    /// A member's rate from a date on.
    Rate {
        /// Whose.
        member: PersonId,
        /// Whether they may get it (read by the caller): an active member,
        /// or for an ended rate any member.
        is_member: bool,
        /// From when.
        from: NaiveDate,
        /// The rate.
        rate: PayRate,
    },
    /// Who else sees pay.
    Visibility(PayVisibility),
}

/// What may be asked of an org's payroll.
#[derive(Debug, Clone, PartialEq)]
pub enum PayrollCommand {
    /// Change the pay policy.
    Change {
        /// Whether the actor is an owner or an admin.
        is_admin: bool,
        /// The change.
        change: PolicyChange,
    },
    /// Draft (or draft again) the run of the period starting `first`.
    Draft {
        /// Whether the actor is an owner or an admin.
        is_admin: bool,
        /// The period's first day.
        first: NaiveDate,
        /// Today in the org's time zone.
        today: NaiveDate,
        /// The period's own lines (computed by [`compute::member_lines`]).
        lines: Vec<Line>,
        /// What they were computed under.
        terms: Terms,
        /// What keeps it from being finalized.
        missing: Vec<Missing>,
        /// Per earlier finalized period, what each member's pay for it is
        /// worth now (adjustments are what this differs from what was paid).
        recomputed: BTreeMap<NaiveDate, BTreeMap<PersonId, i64>>,
    },
    /// Finalize the run of the period starting `first`, as draft `draft`.
    Finalize {
        /// Whether the actor is an owner or an admin.
        is_admin: bool,
        /// The period's first day.
        first: NaiveDate,
        /// The draft that was reviewed.
        draft: u32,
    },
}

/// What happened to an org's payroll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PayrollEvent {
    /// The currency was set.
    CurrencySet {
        /// It.
        currency: Currency,
    },
    /// Pay periods of `kind` from `from` on.
    ScheduleSet {
        /// From.
        from: NaiveDate,
        /// Their kind.
        kind: PeriodKind,
    },
    /// Overtime rules were set.
    OvertimeSet {
        /// Them.
        overtime: Overtime,
    },
    /// A public holiday was set.
    HolidaySet {
        /// Its date.
        date: NaiveDate,
        /// Its name.
        name: String,
    },
    /// A public holiday was removed.
    HolidayRemoved {
        /// Its date.
        date: NaiveDate,
    },
    /// The standard day was set.
    DaySet {
        /// Its hours, ms.
        ms: i64,
    },
    /// A leave type was defined or changed.
    LeaveTypeDefined {
        /// Its id.
        id: Token,
        /// What it is.
        leave_type: LeaveType,
    },
    /// A member's rate from a date on.
    RateSet {
        /// Whose.
        member: PersonId,
        /// From.
        from: NaiveDate,
        /// The rate.
        rate: PayRate,
    },
    /// Who else sees pay.
    VisibilitySet {
        /// Them.
        visibility: PayVisibility,
    },
    /// A run was drafted: its lines, the adjustments of earlier runs
    /// included.
    RunDrafted {
        /// Its period.
        period: Period,
        /// The draft's number.
        draft: u32,
        /// Its lines.
        lines: Vec<Line>,
        /// What keeps it from being finalized.
        missing: Vec<Missing>,
        /// What it was computed under (absent in the first drafts written).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terms: Option<Terms>,
    },
    /// A run was finalized: locked.
    RunFinalized {
        /// Its period's first day.
        first: NaiveDate,
        /// The draft finalized.
        draft: u32,
    },
}

impl DomainEvent for PayrollEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CurrencySet { .. } => "CurrencySet",
            Self::ScheduleSet { .. } => "ScheduleSet",
            Self::OvertimeSet { .. } => "OvertimeSet",
            Self::HolidaySet { .. } => "HolidaySet",
            Self::HolidayRemoved { .. } => "HolidayRemoved",
            Self::DaySet { .. } => "DaySet",
            Self::LeaveTypeDefined { .. } => "LeaveTypeDefined",
            Self::RateSet { .. } => "RateSet",
            Self::VisibilitySet { .. } => "VisibilitySet",
            Self::RunDrafted { .. } => "RunDrafted",
            Self::RunFinalized { .. } => "RunFinalized",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a payroll command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayrollError {
    /// Only owners and admins.
    #[error("only an owner or an admin changes pay or runs payroll")]
    NotAdmin,
    /// Unknown currency.
    #[error("{0}")]
    Money(#[from] crate::money::MoneyError),
    /// The currency is fixed once rates are set in it.
    #[error("the currency cannot change once rates are set or a run is finalized")]
    CurrencyFixed,
    /// A schedule change for a day a run covers.
    #[error("the run of {first}..{last} covers {from}: pay periods change only after the last run")]
    ScheduleOverlapsRun {
        /// The change's first day.
        from: NaiveDate,
        /// The run's first day.
        first: NaiveDate,
        /// Its last.
        last: NaiveDate,
    },
    /// A threshold or multiplier out of range.
    #[error("overtime: {0}")]
    Overtime(&'static str),
    /// An empty or too long name.
    #[error("a name has 1 to {MAX_NAME_CHARS} characters, without control characters")]
    BadName,
    /// A duration out of range.
    #[error("{0}")]
    BadDuration(&'static str),
    /// A rate of zero or too large.
    #[error("a rate is more than 0 and at most {MAX_AMOUNT_MINOR} minor units")]
    BadRate,
    /// No such member.
    #[error("no such member")]
    NotAMember,
    /// No currency set.
    #[error("set the currency before the first run")]
    NoCurrency,
    /// No period starts on that day.
    #[error("no pay period starts on {first}{}", .starts.map(|s| format!(" (the one holding it starts on {s})")).unwrap_or_default())]
    NotAPeriod {
        /// The day asked.
        first: NaiveDate,
        /// The first day of the period holding it, if any.
        starts: Option<NaiveDate>,
    },
    /// The period has not ended.
    #[error("the period {first}..{last} has not ended: a run is drafted from its next day on")]
    NotEnded {
        /// Its first day.
        first: NaiveDate,
        /// Its last day.
        last: NaiveDate,
    },
    /// The run is finalized.
    #[error(
        "the run of {0} is finalized and never changes; a correction is an adjustment of a later run"
    )]
    Finalized(NaiveDate),
    /// A later run is finalized.
    #[error("the later run of {0} is finalized: corrections go into the next run as adjustments")]
    LaterFinalized(NaiveDate),
    /// No run of that period.
    #[error("no run of the period starting {0}")]
    NoRun(NaiveDate),
    /// An earlier run is not finalized.
    #[error("the earlier run of {0} is not finalized: runs are finalized in order")]
    EarlierDraft(NaiveDate),
    /// The period before has no finalized run.
    #[error(
        "the period before, from {0}, has no finalized run: runs are drafted one period after another"
    )]
    PreviousOpen(NaiveDate),
    /// The draft changed since it was reviewed.
    #[error("draft {reviewed} was reviewed but the run is at draft {current}: review it again")]
    StaleDraft {
        /// What was reviewed.
        reviewed: u32,
        /// The latest.
        current: u32,
    },
    /// Something is missing.
    #[error("{} missing: {}", .0.len(), describe(.0))]
    Missing(Vec<Missing>),
}

fn describe(missing: &[Missing]) -> String {
    let mut parts: Vec<String> = missing
        .iter()
        .take(5)
        .map(|m| match m {
            Missing::Week { member, first_day } => {
                format!("the week of {first_day} of {member} is not approved")
            }
            Missing::Rate { member, day } => format!("{member} has no pay rate on {day}"),
        })
        .collect();
    if missing.len() > 5 {
        parts.push(format!("and {} more", missing.len() - 5));
    }
    parts.join("; ")
}

fn check_name(name: &str) -> Result<(), PayrollError> {
    let chars = name.chars().count();
    if chars == 0
        || chars > MAX_NAME_CHARS
        || name.trim().is_empty()
        || name.chars().any(char::is_control)
    {
        return Err(PayrollError::BadName);
    }
    Ok(())
}

fn check_overtime(o: &Overtime) -> Result<(), PayrollError> {
    use PayrollError::Overtime as E;
    for (t, max) in [
        (o.daily, 24 * HOUR_MS),
        (o.daily_double, 24 * HOUR_MS),
        (o.weekly, 168 * HOUR_MS),
    ] {
        if let Some(t) = t {
            if t.after_ms <= 0 || t.after_ms > max {
                return Err(E("a threshold is more than 0 and at most a day (a week)"));
            }
            if !(100..=1000).contains(&t.percent) {
                return Err(E("a multiplier is between 1x and 10x"));
            }
        }
    }
    match (o.daily, o.daily_double) {
        (None, Some(_)) => Err(E("a double-time threshold needs a daily one")),
        (Some(d), Some(dd)) if dd.after_ms <= d.after_ms => {
            Err(E("the double-time threshold is above the daily one"))
        }
        _ => Ok(()),
    }
}

fn check_leave_type(t: &LeaveType) -> Result<(), PayrollError> {
    check_name(&t.name)?;
    const YEAR: i64 = 366 * 24 * HOUR_MS;
    if let Some(a) = t.accrual
        && (a.ms <= 0 || a.ms > 31 * 24 * HOUR_MS)
    {
        return Err(PayrollError::BadDuration(
            "an accrual is more than 0 and at most 31 days",
        ));
    }
    if t.carry_over_cap_ms
        .is_some_and(|c| !(0..=YEAR).contains(&c))
    {
        return Err(PayrollError::BadDuration(
            "a carry-over cap is between 0 and a year",
        ));
    }
    if !(0..=YEAR).contains(&t.negative_allowance_ms) {
        return Err(PayrollError::BadDuration(
            "a negative allowance is between 0 and a year",
        ));
    }
    Ok(())
}

impl Payroll {
    /// What was paid for the finalized period starting `first`, per member:
    /// its own lines and the adjustments finalized runs made to it.
    pub fn paid_for(&self, first: NaiveDate) -> BTreeMap<PersonId, i64> {
        let mut paid = self
            .runs
            .get(&first)
            .map(|r| r.paid.clone())
            .unwrap_or_default();
        for run in self
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Finalized)
        {
            for (member, amount) in run.adjusts.get(&first).into_iter().flatten() {
                *paid.entry(member.clone()).or_default() += amount;
            }
        }
        paid
    }

    fn change(&self, change: PolicyChange) -> Result<Vec<PayrollEvent>, PayrollError> {
        let policy = &self.policy;
        let event = match change {
            PolicyChange::Currency(code) => {
                let currency = Currency::parse(&code)?;
                if policy.currency.as_ref() == Some(&currency) {
                    return Ok(vec![]);
                }
                if !policy.rates.is_empty()
                    || self.runs.values().any(|r| r.status == RunStatus::Finalized)
                {
                    return Err(PayrollError::CurrencyFixed);
                }
                PayrollEvent::CurrencySet { currency }
            }
            PolicyChange::Schedule { from, kind } => {
                if let Some(run) = self.runs.values().find(|r| r.period.last >= from) {
                    return Err(PayrollError::ScheduleOverlapsRun {
                        from,
                        first: run.period.first,
                        last: run.period.last,
                    });
                }
                PayrollEvent::ScheduleSet { from, kind }
            }
            PolicyChange::Overtime(overtime) => {
                check_overtime(&overtime)?;
                PayrollEvent::OvertimeSet { overtime }
            }
            PolicyChange::Holiday {
                date,
                name: Some(name),
            } => {
                check_name(&name)?;
                PayrollEvent::HolidaySet { date, name }
            }
            PolicyChange::Holiday { date, name: None } => {
                if !policy.holidays.contains_key(&date) {
                    return Ok(vec![]);
                }
                PayrollEvent::HolidayRemoved { date }
            }
            PolicyChange::DayMs(ms) => {
                if ms <= 0 || ms > 24 * HOUR_MS {
                    return Err(PayrollError::BadDuration(
                        "a standard day is more than 0 and at most 24 hours",
                    ));
                }
                PayrollEvent::DaySet { ms }
            }
            PolicyChange::LeaveType { id, mut leave_type } => {
                check_leave_type(&leave_type)?;
                if let Some(existing) = policy.leave_types.get(&id) {
                    leave_type.since = existing.since;
                }
                PayrollEvent::LeaveTypeDefined { id, leave_type }
            }
            PolicyChange::Rate {
                member,
                is_member,
                from,
                rate,
            } => {
                if !is_member {
                    return Err(PayrollError::NotAMember);
                }
                if let PayRate::Hourly { minor } | PayRate::Salaried { minor } = rate
                    && (minor <= 0 || minor > MAX_AMOUNT_MINOR)
                {
                    return Err(PayrollError::BadRate);
                }
                PayrollEvent::RateSet { member, from, rate }
            }
            PolicyChange::Visibility(visibility) => PayrollEvent::VisibilitySet { visibility },
        };
        Ok(vec![event])
    }

    fn draft(
        &self,
        (first, today): (NaiveDate, NaiveDate),
        mut lines: Vec<Line>,
        terms: Terms,
        mut missing: Vec<Missing>,
        recomputed: BTreeMap<NaiveDate, BTreeMap<PersonId, i64>>,
    ) -> Result<Vec<PayrollEvent>, PayrollError> {
        if self.policy.currency.is_none() {
            return Err(PayrollError::NoCurrency);
        }
        let period = self.policy.schedule.period_starting(first).ok_or_else(|| {
            PayrollError::NotAPeriod {
                first,
                starts: self.policy.schedule.period_of(first).map(|p| p.first),
            }
        })?;
        if today <= period.last {
            return Err(PayrollError::NotEnded {
                first,
                last: period.last,
            });
        }
        if let Some(run) = self.runs.get(&first)
            && run.status == RunStatus::Finalized
        {
            return Err(PayrollError::Finalized(first));
        }
        if let Some((later, _)) = self
            .runs
            .range(first..)
            .find(|(_, r)| r.status == RunStatus::Finalized)
        {
            return Err(PayrollError::LaterFinalized(*later));
        }
        // One period after another: once a run exists, the period before a
        // new one is finalized (so no period is skipped, and one draft at a
        // time corrects the finalized runs).
        if self.runs.range(..first).next().is_some()
            && let Some(previous) = first
                .pred_opt()
                .and_then(|d| self.policy.schedule.period_of(d))
            && self
                .runs
                .get(&previous.first)
                .is_none_or(|r| r.status != RunStatus::Finalized)
        {
            return Err(PayrollError::PreviousOpen(previous.first));
        }
        for (corrected, now) in recomputed {
            let finalized = self
                .runs
                .get(&corrected)
                .is_some_and(|r| r.status == RunStatus::Finalized);
            if !finalized || corrected >= first {
                continue;
            }
            let mut delta = now;
            for (member, paid) in self.paid_for(corrected) {
                *delta.entry(member).or_default() -= paid;
            }
            lines.extend(delta.into_iter().filter(|(_, amount)| *amount != 0).map(
                |(member, amount)| Line {
                    member,
                    kind: LineKind::Adjustment,
                    leave_type: None,
                    corrects: Some(corrected),
                    ms: 0,
                    days: 0,
                    rate_minor: 0,
                    percent: 100,
                    amount_minor: amount,
                },
            ));
        }
        lines.sort_by(|a, b| {
            (
                &a.member,
                a.kind,
                &a.corrects,
                &a.leave_type,
                a.rate_minor,
                a.percent,
            )
                .cmp(&(
                    &b.member,
                    b.kind,
                    &b.corrects,
                    &b.leave_type,
                    b.rate_minor,
                    b.percent,
                ))
        });
        missing.sort();
        missing.dedup();
        let draft = self.runs.get(&first).map_or(1, |r| r.draft + 1);
        Ok(vec![PayrollEvent::RunDrafted {
            period,
            draft,
            lines,
            missing,
            terms: Some(terms),
        }])
    }

    fn finalize(&self, first: NaiveDate, draft: u32) -> Result<Vec<PayrollEvent>, PayrollError> {
        let run = self.runs.get(&first).ok_or(PayrollError::NoRun(first))?;
        if run.status == RunStatus::Finalized {
            return Err(PayrollError::Finalized(first));
        }
        if let Some((earlier, _)) = self
            .runs
            .range(..first)
            .find(|(_, r)| r.status == RunStatus::Draft)
        {
            return Err(PayrollError::EarlierDraft(*earlier));
        }
        if run.draft != draft {
            return Err(PayrollError::StaleDraft {
                reviewed: draft,
                current: run.draft,
            });
        }
        if !run.missing.is_empty() {
            return Err(PayrollError::Missing(run.missing.clone()));
        }
        Ok(vec![PayrollEvent::RunFinalized { first, draft }])
    }
}

impl Aggregate for Payroll {
    const TYPE: &'static str = "payroll";
    type Command = PayrollCommand;
    type Event = PayrollEvent;
    type Error = PayrollError;

    fn handle(&self, command: PayrollCommand) -> Result<Vec<PayrollEvent>, PayrollError> {
        match command {
            PayrollCommand::Change { is_admin, change } => {
                if !is_admin {
                    return Err(PayrollError::NotAdmin);
                }
                self.change(change)
            }
            PayrollCommand::Draft {
                is_admin,
                first,
                today,
                lines,
                terms,
                missing,
                recomputed,
            } => {
                if !is_admin {
                    return Err(PayrollError::NotAdmin);
                }
                self.draft((first, today), lines, terms, missing, recomputed)
            }
            PayrollCommand::Finalize {
                is_admin,
                first,
                draft,
            } => {
                if !is_admin {
                    return Err(PayrollError::NotAdmin);
                }
                self.finalize(first, draft)
            }
        }
    }

    fn apply(&mut self, event: &PayrollEvent) {
        let policy = &mut self.policy;
        match event {
            PayrollEvent::CurrencySet { currency } => policy.currency = Some(currency.clone()),
            PayrollEvent::ScheduleSet { from, kind } => {
                policy.schedule.segments.split_off(from);
                policy.schedule.segments.insert(*from, *kind);
            }
            PayrollEvent::OvertimeSet { overtime } => policy.overtime = *overtime,
            PayrollEvent::HolidaySet { date, name } => {
                policy.holidays.insert(*date, name.clone());
            }
            PayrollEvent::HolidayRemoved { date } => {
                policy.holidays.remove(date);
            }
            PayrollEvent::DaySet { ms } => policy.day_ms = *ms,
            PayrollEvent::LeaveTypeDefined { id, leave_type } => {
                policy.leave_types.insert(id.clone(), leave_type.clone());
            }
            PayrollEvent::RateSet { member, from, rate } => {
                policy
                    .rates
                    .entry(member.clone())
                    .or_default()
                    .insert(*from, *rate);
            }
            PayrollEvent::VisibilitySet { visibility } => policy.visibility = *visibility,
            PayrollEvent::RunDrafted {
                period,
                draft,
                lines,
                missing,
                terms,
            } => {
                let mut paid: BTreeMap<PersonId, i64> = BTreeMap::new();
                let mut adjusts: BTreeMap<NaiveDate, BTreeMap<PersonId, i64>> = BTreeMap::new();
                for line in lines {
                    let total = match line.corrects {
                        Some(period) => adjusts.entry(period).or_default(),
                        None => &mut paid,
                    };
                    *total.entry(line.member.clone()).or_default() += line.amount_minor;
                }
                self.runs.insert(
                    period.first,
                    Run {
                        period: *period,
                        status: RunStatus::Draft,
                        draft: *draft,
                        missing: missing.clone(),
                        paid,
                        adjusts,
                        terms: terms.clone(),
                    },
                );
            }
            PayrollEvent::RunFinalized { first, .. } => {
                if let Some(run) = self.runs.get_mut(first) {
                    run.status = RunStatus::Finalized;
                }
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
                "CurrencySet",
                "ScheduleSet",
                "OvertimeSet",
                "HolidaySet",
                "HolidayRemoved",
                "DaySet",
                "LeaveTypeDefined",
                "RateSet",
                "VisibilitySet",
                "RunDrafted",
                "RunFinalized",
            ],
            event_type,
            schema_version,
            payload,
        )
    }
}

#[cfg(test)]
mod tests;
