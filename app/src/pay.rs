//! Leave and payroll: the org's pay policy (currency, pay periods,
//! overtime, holidays, leave types, members' rates), members' leave
//! requests and their decisions, and payroll runs drafted from approved
//! time and approved leave, reviewed and finalized.
//!
//! The aggregates decide; this layer brings them what they cannot read
//! themselves: the caller's role, whether they may decide on a member's
//! leave (a manager of the member's team, or an admin), today in the org's
//! time zone, the days a leave request takes (work days that are not
//! public holidays), and a run's lines, computed from the work read model
//! (approved weeks) and the pay read model (approved leave) by the
//! domain's `payroll::compute`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{Datelike, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use trackhrs_domain::leave::{Leave, LeaveCommand, TypeFacts};
use trackhrs_domain::money::{Currency, HOUR_MS};
use trackhrs_domain::organization::{Organization, Role};
use trackhrs_domain::payroll::compute::{
    Calendar, LeaveDay, MemberInput, Overtime, PayRate, member_lines, rate_on,
};
use trackhrs_domain::payroll::schedule::{Period, PeriodKind};
use trackhrs_domain::payroll::{
    AGGREGATE_ID, Accrual, AccrualEvery, LeaveType, Missing, PayVisibility, Payroll,
    PayrollCommand, Policy, PolicyChange, RunStatus, Terms,
};
use trackhrs_domain::permissions::{Read, Scope};
use trackhrs_domain::week::first_day;
use trackhrs_domain::{Aggregate as _, Token};
use trackhrs_nats::lease::Lease;
use trackhrs_projections::pay as model;
pub use trackhrs_projections::pay::{BalanceRow, LineRow, RequestRow, RunRow};
use trackhrs_projections::work as work_model;

use crate::administration::AtPosition;
use crate::caller::Caller;
use crate::error::{AppError, ErrorKind};
use crate::org::{OrgCommands, Outcome, derived_id};
use crate::reads::{ReadModel, ReadModels};
use crate::work::token;

/// Longest range of days a leave request or a leave query covers.
pub const MAX_LEAVE_DAYS: i64 = 366;

/// How many earlier finalized runs a new draft checks for corrections.
pub const CORRECTION_LOOKBACK: usize = 12;

/// A change to the pay policy, as the caller gives it.
#[derive(Debug, Clone)]
pub enum PolicyInput {
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
    /// A public holiday on `date`, or none.
    Holiday {
        /// The local date.
        date: NaiveDate,
        /// Its name; none removes it.
        name: Option<String>,
    },
    /// A standard day's hours, ms.
    DayMs(i64),
    /// A leave type: a new one (no id) or a change.
    LeaveType {
        /// Its id, when it is changed.
        id: Option<String>,
        /// Its name.
        name: String,
        /// Whether it is paid.
        paid: bool,
        /// Its accrual.
        accrual: Option<Accrual>,
        /// Its carry-over cap, ms.
        carry_over_cap_ms: Option<i64>,
        /// How far under zero, ms.
        negative_allowance_ms: i64,
        /// From when a new type accrues (none: today).
        since: Option<NaiveDate>,
    },
    /// A member's rate from a date on: a decimal amount in the currency
    /// (`"25.50"`), or no pay from then (`ended`: the member left).
    Rate {
        /// Whose.
        person: String,
        /// From when.
        from: NaiveDate,
        /// A salary per period rather than an hourly rate.
        salaried: bool,
        /// The amount.
        amount: String,
        /// No pay from `from` on (the amount is not read).
        ended: bool,
    },
    /// Who else sees pay.
    Visibility(PayVisibility),
}

/// Leave to request.
#[derive(Debug, Clone)]
pub struct NewLeave {
    /// Its type.
    pub leave_type: String,
    /// The first day.
    pub from: NaiveDate,
    /// The last day (inclusive).
    pub to: NaiveDate,
    /// Hours each day, ms (none: the standard day): a part day.
    pub day_ms: Option<i64>,
    /// A note.
    pub note: Option<String>,
}

/// The org's pay policy as the caller may see it (rates only of the
/// members they may see).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView {
    /// The policy.
    pub policy: Policy,
    /// The periods starting in the twelve months around today.
    pub periods: Vec<Period>,
}

/// Leave requests and balances.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaveView {
    /// The requests, by first day.
    pub requests: Vec<RequestRow>,
    /// The balances, by member and type.
    pub balances: Vec<BalanceRow>,
}

/// The runs the caller may see, and the currency.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsView {
    /// The runs, latest first.
    pub runs: Vec<RunRow>,
    /// The currency.
    pub currency: Option<Currency>,
}

/// A run and the lines the caller may see.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run (its total and missing list only of what the caller sees).
    pub run: RunRow,
    /// Its lines.
    pub lines: Vec<LineRow>,
    /// The currency.
    pub currency: Option<Currency>,
}

/// The leave and payroll use cases.
#[derive(Clone)]
pub struct Pay {
    orgs: OrgCommands,
    reads: ReadModels,
}

fn payroll_id() -> Token {
    Token::new(AGGREGATE_ID).unwrap_or_else(|_| unreachable!("the aggregate id is a token"))
}

/// Today in `tz`.
fn today(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

fn tz_of(state: &Organization) -> Result<Tz, AppError> {
    state
        .settings
        .timezone
        .parse()
        .map_err(|_| AppError::precondition("the organization's time zone is unknown"))
}

fn facts(leave_type: &LeaveType) -> TypeFacts {
    TypeFacts {
        has_balance: leave_type.has_balance(),
        negative_allowance_ms: leave_type.negative_allowance_ms,
    }
}

/// The days `[from, to]` that leave takes: work days that are not
/// holidays.
fn leave_days(
    state: &Organization,
    policy: &Policy,
    (from, to): (NaiveDate, NaiveDate),
    day_ms: i64,
) -> BTreeMap<NaiveDate, i64> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| {
            let weekday = d.weekday().num_days_from_monday();
            state
                .settings
                .work_week
                .iter()
                .any(|w| *w as u32 == weekday)
                && !policy.holidays.contains_key(d)
        })
        .map(|d| (d, day_ms))
        .collect()
}

impl Pay {
    pub(crate) fn new(orgs: OrgCommands, reads: ReadModels) -> Self {
        Self { orgs, reads }
    }

    /// The org's payroll aggregate, fresh from the log.
    async fn payroll(&self, org: &Token) -> Result<std::sync::Arc<Payroll>, AppError> {
        Ok(self
            .orgs
            .store()
            .load_fresh::<Payroll>(org, &payroll_id())
            .await?
            .state)
    }

    /// The org's state and whether the caller is an owner or admin.
    async fn admin(
        &self,
        caller: &Caller,
        org_id: &str,
    ) -> Result<(Token, std::sync::Arc<Organization>, bool), AppError> {
        let org = caller.scope(org_id)?;
        let state = self.orgs.state(&org).await?;
        let is_admin = matches!(
            state.active_role(&caller.person),
            Some(Role::Owner | Role::Admin)
        );
        Ok((org, state, is_admin))
    }

    /// Changes the pay policy (owners and admins); returns the id of a new
    /// leave type.
    #[tracing::instrument(skip_all)]
    pub async fn change_policy(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        input: PolicyInput,
    ) -> Result<(Option<Token>, Outcome), AppError> {
        let (org, state, is_admin) = self.admin(caller, org_id).await?;
        let mut new_id = None;
        let change = match input {
            PolicyInput::Currency(code) => PolicyChange::Currency(code),
            PolicyInput::Schedule { from, kind } => PolicyChange::Schedule { from, kind },
            PolicyInput::Overtime(o) => PolicyChange::Overtime(o),
            PolicyInput::Holiday { date, name } => PolicyChange::Holiday { date, name },
            PolicyInput::DayMs(ms) => PolicyChange::DayMs(ms),
            PolicyInput::LeaveType {
                id,
                name,
                paid,
                accrual,
                carry_over_cap_ms,
                negative_allowance_ms,
                since,
            } => {
                let id = match id {
                    Some(id) => {
                        let id = token("leave_type_id", &id)?;
                        if !self
                            .payroll(&org)
                            .await?
                            .policy
                            .leave_types
                            .contains_key(&id)
                        {
                            return Err(AppError::new(
                                ErrorKind::NotFound,
                                "leave_type_id: no such leave type",
                            ));
                        }
                        id
                    }
                    None => {
                        let id = derived_id("lt", &org, "leave type", command_id);
                        new_id = Some(id.clone());
                        id
                    }
                };
                PolicyChange::LeaveType {
                    id,
                    leave_type: LeaveType {
                        name,
                        paid,
                        accrual,
                        carry_over_cap_ms,
                        negative_allowance_ms,
                        since: match since {
                            Some(day) => day,
                            None => today(tz_of(&state)?),
                        },
                    },
                }
            }
            PolicyInput::Rate {
                person,
                from,
                salaried,
                amount,
                ended,
            } => {
                let member = token("person_id", &person)?;
                // A rate for an active member; an end for any member.
                let is_member = if ended {
                    state.members.contains_key(&member)
                } else {
                    state.active_role(&member).is_some()
                };
                let rate = if ended {
                    PayRate::Ended
                } else {
                    let currency = self
                        .payroll(&org)
                        .await?
                        .policy
                        .currency
                        .clone()
                        .ok_or_else(|| {
                            AppError::precondition("set the currency before any rate")
                        })?;
                    let minor = currency
                        .parse_amount(&amount)
                        .map_err(|e| AppError::invalid("amount", e))?;
                    if salaried {
                        PayRate::Salaried { minor }
                    } else {
                        PayRate::Hourly { minor }
                    }
                };
                PolicyChange::Rate {
                    is_member,
                    member,
                    from,
                    rate,
                }
            }
            PolicyInput::Visibility(v) => PolicyChange::Visibility(v),
        };
        let outcome = self
            .orgs
            .execute_on::<Payroll>(
                &org,
                &payroll_id(),
                &caller.actor(),
                command_id,
                PayrollCommand::Change { is_admin, change },
            )
            .await?;
        Ok((new_id, outcome))
    }

    /// Requests leave for the caller; returns the request's id.
    #[tracing::instrument(skip_all)]
    pub async fn request_leave(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        new: NewLeave,
    ) -> Result<(Token, Outcome), AppError> {
        let org = caller.scope(org_id)?;
        if new.to < new.from {
            return Err(AppError::invalid(
                "to",
                "leave of negative length: the last day is before the first",
            ));
        }
        if (new.to - new.from).num_days() >= MAX_LEAVE_DAYS {
            return Err(AppError::invalid(
                "to",
                format!("a request covers at most {MAX_LEAVE_DAYS} days"),
            ));
        }
        if let Some(note) = &new.note {
            crate::work::check_note("note", note)?;
        }
        let state = self.orgs.state(&org).await?;
        match state.active_role(&caller.person) {
            None => return Err(AppError::not_allowed(crate::NOT_YOURS)),
            Some(Role::Auditor) => {
                return Err(AppError::not_allowed(
                    "auditors read; they request no leave",
                ));
            }
            Some(_) => {}
        }
        let leave_type = token("leave_type_id", &new.leave_type)?;
        let payroll = self.payroll(&org).await?;
        let policy = &payroll.policy;
        let kind = policy.leave_types.get(&leave_type).ok_or_else(|| {
            AppError::new(ErrorKind::NotFound, "leave_type_id: no such leave type")
        })?;
        let day_ms = new.day_ms.unwrap_or(policy.day_ms);
        if day_ms <= 0 || day_ms > 24 * HOUR_MS {
            return Err(AppError::invalid(
                "hours_per_day",
                "more than 0 and at most 24 hours",
            ));
        }
        let days = leave_days(&state, policy, (new.from, new.to), day_ms);
        let id = derived_id("lv", &org, "leave", command_id);
        let command = LeaveCommand::Request {
            actor: caller.person.clone(),
            member: caller.person.clone(),
            id: id.clone(),
            leave_type,
            facts: facts(kind),
            days,
            note: new.note,
        };
        let outcome = self
            .orgs
            .execute_on::<Leave>(&org, &caller.person, &caller.actor(), command_id, command)
            .await?;
        Ok((id, outcome))
    }

    /// Approves or denies a member's pending request (their team's
    /// managers, owners and admins).
    #[tracing::instrument(skip_all)]
    pub async fn decide_leave(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        (person, request): (&str, &str),
        approve: bool,
        comment: Option<String>,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let member = token("person_id", person)?;
        let id = token("request_id", request)?;
        if let Some(c) = &comment {
            crate::work::check_note("comment", c)?;
        }
        let state = self.orgs.state(&org).await?;
        let may_approve = state.may_approve(&caller.person, &member);
        if !may_approve && member != caller.person {
            // Nothing about another member or their requests to someone
            // who may not decide on them.
            return Err(AppError::not_allowed(
                "only a manager of the member's team or an admin decides on this leave",
            ));
        }
        if !state.members.contains_key(&member) {
            return Err(AppError::new(
                ErrorKind::NotFound,
                "person_id: no such member",
            ));
        }
        let command = if approve {
            let leave = self.orgs.store().load_fresh::<Leave>(&org, &member).await?;
            let leave_type = leave
                .state
                .requests
                .get(&id)
                .map(|r| r.leave_type.clone())
                .ok_or_else(|| {
                    AppError::new(
                        ErrorKind::NotFound,
                        format!("request_id: no leave request {id}"),
                    )
                })?;
            let payroll = self.payroll(&org).await?;
            let facts = payroll
                .policy
                .leave_types
                .get(&leave_type)
                .map(facts)
                .ok_or_else(|| {
                    AppError::precondition("the request's leave type no longer exists")
                })?;
            LeaveCommand::Approve {
                actor: caller.person.clone(),
                may_approve,
                id,
                facts,
            }
        } else {
            LeaveCommand::Deny {
                actor: caller.person.clone(),
                may_approve,
                id,
                comment,
            }
        };
        self.orgs
            .execute_on::<Leave>(&org, &member, &caller.actor(), command_id, command)
            .await
    }

    /// Cancels one of the caller's requests that has not started.
    #[tracing::instrument(skip_all)]
    pub async fn cancel_leave(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        request: &str,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let id = token("request_id", request)?;
        let state = self.orgs.cached_state(&org).await?;
        let command = LeaveCommand::Cancel {
            actor: caller.person.clone(),
            id,
            today: today(tz_of(&state)?),
        };
        self.orgs
            .execute_on::<Leave>(&org, &caller.person, &caller.actor(), command_id, command)
            .await
    }

    /// What the lines of every member for `period` are now under `terms`,
    /// and what keeps them from being final (weeks not approved of days
    /// paid by the hour, time or leave without a rate).
    async fn compute(
        &self,
        org: &Token,
        state: &Organization,
        policy: &Policy,
        (period, terms): (Period, &Terms),
        (work, pay): (&ReadModel, &ReadModel),
    ) -> Result<(Vec<trackhrs_domain::payroll::compute::Line>, Vec<Missing>), AppError> {
        let work_week = &state.settings.work_week;
        let from = first_day(period.first, work_week);
        let range = (from, period.last);
        let mut inputs: BTreeMap<String, MemberInput> = BTreeMap::new();
        for (person, rates) in &policy.rates {
            inputs.entry(person.to_string()).or_default().rates = rates.clone();
        }
        let approved: BTreeSet<(String, NaiveDate)> =
            work_model::approved_weeks(&work.client, &work.schema, org.as_str(), range)
                .await?
                .into_iter()
                .collect();
        for (person, week, day, ms) in
            work_model::time_by_day(&work.client, &work.schema, org.as_str(), range).await?
        {
            if approved.contains(&(person.clone(), week)) {
                *inputs
                    .entry(person)
                    .or_default()
                    .worked
                    .entry(day)
                    .or_default() += ms;
            }
        }
        for row in model::approved_days(&pay.client, &pay.schema, org.as_str(), range).await? {
            let Ok(leave_type) = Token::new(&row.type_id) else {
                continue;
            };
            let paid = terms.paid_leave.contains(&leave_type);
            inputs
                .entry(row.person_id)
                .or_default()
                .leave
                .entry(row.day)
                .or_default()
                .push(LeaveDay {
                    leave_type,
                    ms: row.ms,
                    paid,
                });
        }
        let calendar = Calendar {
            work_week,
            holidays: &terms.holidays,
            day_ms: terms.day_ms,
            overtime: &terms.overtime,
            salary_days: terms.salary_days,
        };
        let mut lines = Vec::new();
        let mut missing = Vec::new();
        for (person, input) in &inputs {
            let Ok(member) = Token::new(person) else {
                continue;
            };
            // The weeks holding a day of the period paid by the hour.
            let mut weeks = BTreeSet::new();
            for day in period.days() {
                if matches!(input.rate_on(day), Some(PayRate::Hourly { .. })) {
                    weeks.insert(first_day(day, work_week));
                }
            }
            missing.extend(
                weeks
                    .into_iter()
                    .filter(|week| !approved.contains(&(person.clone(), *week)))
                    .map(|week| Missing::Week {
                        member: member.clone(),
                        first_day: week,
                    }),
            );
            match member_lines(&member, period, calendar, input) {
                Ok(member_lines) => lines.extend(member_lines),
                Err(days) => missing.extend(days.into_iter().map(|day| Missing::Rate {
                    member: member.clone(),
                    day,
                })),
            }
        }
        Ok((lines, missing))
    }

    /// Drafts (again) the run of the pay period starting `first` (owners
    /// and admins), from approved time and leave as the read models hold
    /// them at `min_position` or later.
    #[tracing::instrument(skip_all)]
    pub async fn draft_run(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        first: NaiveDate,
        min_position: u64,
    ) -> Result<Outcome, AppError> {
        let (org, state, is_admin) = self.admin(caller, org_id).await?;
        let payroll = self.payroll(&org).await?;
        let today = today(tz_of(&state)?);
        // The aggregate's refusals (not an admin, not a period, not ended,
        // finalized) before any computing.
        let check = PayrollCommand::Draft {
            is_admin,
            first,
            today,
            lines: vec![],
            terms: payroll.policy.terms(Period { first, last: first }),
            missing: vec![],
            recomputed: BTreeMap::new(),
        };
        payroll.handle(check)?;
        let Some(period) = payroll.policy.schedule.period_starting(first) else {
            return Err(AppError::invalid("first_day", "no pay period starts then"));
        };
        let work = self
            .reads
            .read_model(work_model::NAME, min_position)
            .await?;
        let pay = self.reads.read_model(model::NAME, min_position).await?;
        let terms = payroll.policy.terms(period);
        let (lines, mut missing) = self
            .compute(
                &org,
                &state,
                &payroll.policy,
                (period, &terms),
                (&work, &pay),
            )
            .await?;
        // What each earlier finalized run is worth now, under its own terms;
        // a member with something missing there (a reopened week) keeps
        // what was paid until it is fixed, and the fix is listed here.
        let mut recomputed = BTreeMap::new();
        let earlier = payroll
            .runs
            .range(..first)
            .rev()
            .filter(|(_, r)| r.status == RunStatus::Finalized)
            .take(CORRECTION_LOOKBACK);
        for (start, run) in earlier {
            let run_terms = run
                .terms
                .clone()
                .unwrap_or_else(|| payroll.policy.terms(run.period));
            let (now, open) = self
                .compute(
                    &org,
                    &state,
                    &payroll.policy,
                    (run.period, &run_terms),
                    (&work, &pay),
                )
                .await?;
            let paid = payroll.paid_for(*start);
            let mut totals: BTreeMap<Token, i64> = BTreeMap::new();
            for line in now {
                *totals.entry(line.member).or_default() += line.amount_minor;
            }
            for m in &open {
                let (Missing::Week { member, .. } | Missing::Rate { member, .. }) = m;
                totals.insert(member.clone(), paid.get(member).copied().unwrap_or(0));
            }
            missing.extend(open);
            recomputed.insert(*start, totals);
        }
        let command = PayrollCommand::Draft {
            is_admin,
            first,
            today,
            lines,
            terms,
            missing,
            recomputed,
        };
        self.orgs
            .execute_on::<Payroll>(&org, &payroll_id(), &caller.actor(), command_id, command)
            .await
    }

    /// Finalizes the run of the period starting `first` as draft `draft`.
    #[tracing::instrument(skip_all)]
    pub async fn finalize_run(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        first: NaiveDate,
        draft: u32,
    ) -> Result<Outcome, AppError> {
        let (org, _, is_admin) = self.admin(caller, org_id).await?;
        let command = PayrollCommand::Finalize {
            is_admin,
            first,
            draft,
        };
        self.orgs
            .execute_on::<Payroll>(&org, &payroll_id(), &caller.actor(), command_id, command)
            .await
    }

    /// The pay read model after `min_position`, the caller's scope of
    /// `read` (pay widened to their teams for managers where the org
    /// allows) and the members it covers.
    async fn model(
        &self,
        caller: &Caller,
        org_id: &str,
        read: Read,
        min_position: u64,
    ) -> Result<(Token, ReadModel, Scope, Option<Vec<String>>), AppError> {
        let org = caller.scope(org_id)?;
        let mut scope = self.reads.authorize(caller, read).await?;
        let m = self.reads.read_model(model::NAME, min_position).await?;
        if read == Read::Payroll && scope == Scope::Own {
            let policy = model::policy(&**m.client, &m.schema, org.as_str()).await?;
            let state = self.orgs.cached_state(&org).await?;
            if policy.visibility.managers
                && state.active_role(&caller.person) == Some(Role::Manager)
            {
                scope = Scope::Team;
            }
        }
        let members = self.orgs.visible(caller, &org, scope).await?;
        Ok((org, m, scope, members))
    }

    /// The pay policy with the rates of the members the caller may see and
    /// the pay periods around today.
    #[tracing::instrument(skip_all)]
    pub async fn policy(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<AtPosition<PolicyView>, AppError> {
        let (org, m, _, members) = self
            .model(caller, org_id, Read::Payroll, min_position)
            .await?;
        let mut policy = model::policy(&**m.client, &m.schema, org.as_str()).await?;
        if let Some(members) = members {
            policy
                .rates
                .retain(|person, _| members.iter().any(|m| m == person.as_str()));
        }
        let state = self.orgs.cached_state(&org).await?;
        let now = today(tz_of(&state)?);
        let periods = policy
            .schedule
            .periods_starting_between(now - Days::new(366), now + Days::new(31));
        Ok(AtPosition {
            value: PolicyView { policy, periods },
            position: m.position,
        })
    }

    /// Leave requests touching `[from, to]` of the members the caller may
    /// see (who is away when), and their balances.
    #[tracing::instrument(skip_all)]
    pub async fn leave(
        &self,
        caller: &Caller,
        org_id: &str,
        (from, to): (NaiveDate, NaiveDate),
        min_position: u64,
    ) -> Result<AtPosition<LeaveView>, AppError> {
        if to < from {
            return Err(AppError::invalid("to", "must not be before from"));
        }
        if (to - from).num_days() >= MAX_LEAVE_DAYS {
            return Err(AppError::invalid(
                "to",
                format!("a range covers at most {MAX_LEAVE_DAYS} days"),
            ));
        }
        let (org, m, _, members) = self
            .model(caller, org_id, Read::Leave, min_position)
            .await?;
        let requests = model::requests(
            &m.client,
            &m.schema,
            org.as_str(),
            (from, to),
            members.as_deref(),
            None,
        )
        .await?;
        let balances =
            model::balances(&m.client, &m.schema, org.as_str(), members.as_deref()).await?;
        Ok(AtPosition {
            value: LeaveView { requests, balances },
            position: m.position,
        })
    }

    /// Payroll runs: every run with its totals for those who see the whole
    /// org; finalized runs with their own total for the others.
    #[tracing::instrument(skip_all)]
    pub async fn runs(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<AtPosition<RunsView>, AppError> {
        let (org, m, scope, members) = self
            .model(caller, org_id, Read::Payroll, min_position)
            .await?;
        let mut runs = model::runs(&m.client, &m.schema, org.as_str()).await?;
        if scope != Scope::Org {
            runs.retain(|r| r.status == "finalized");
            for run in &mut runs {
                let lines = model::lines(
                    &m.client,
                    &m.schema,
                    org.as_str(),
                    run.first_day,
                    members.as_deref(),
                )
                .await?;
                narrow(run, &lines, members.as_deref());
            }
        }
        let currency = model::policy(&**m.client, &m.schema, org.as_str())
            .await?
            .currency;
        Ok(AtPosition {
            value: RunsView { runs, currency },
            position: m.position,
        })
    }

    /// A run and the lines the caller may see.
    #[tracing::instrument(skip_all)]
    pub async fn run(
        &self,
        caller: &Caller,
        org_id: &str,
        first: NaiveDate,
        min_position: u64,
    ) -> Result<AtPosition<RunView>, AppError> {
        let (org, m, scope, members) = self
            .model(caller, org_id, Read::Payroll, min_position)
            .await?;
        let not_found = || AppError::new(ErrorKind::NotFound, "first_day: no such run");
        let mut run = model::run(&m.client, &m.schema, org.as_str(), first)
            .await?
            .ok_or_else(not_found)?;
        if scope != Scope::Org && run.status != "finalized" {
            return Err(not_found());
        }
        let lines = model::lines(
            &m.client,
            &m.schema,
            org.as_str(),
            first,
            members.as_deref(),
        )
        .await?;
        if scope != Scope::Org {
            narrow(&mut run, &lines, members.as_deref());
        }
        let currency = model::policy(&**m.client, &m.schema, org.as_str())
            .await?
            .currency;
        Ok(AtPosition {
            value: RunView {
                run,
                lines,
                currency,
            },
            position: m.position,
        })
    }

    /// Streams the lines of a finalized run the caller may see, one at a
    /// time, to the sink `sink_for` makes from the run and the currency
    /// (read once, before the first line); returns how many.
    #[tracing::instrument(skip_all)]
    pub async fn export_run<F, Fut>(
        &self,
        caller: &Caller,
        org_id: &str,
        first: NaiveDate,
        sink_for: impl FnOnce(&RunRow, &Currency) -> F,
    ) -> Result<u64, AppError>
    where
        F: FnMut(LineRow) -> Fut,
        Fut: Future<Output = Result<(), AppError>>,
    {
        let (org, m, _, members) = self.model(caller, org_id, Read::Payroll, 0).await?;
        let run = match model::run(&m.client, &m.schema, org.as_str(), first).await? {
            Some(run) if run.status == "finalized" => run,
            Some(_) => {
                return Err(AppError::precondition(
                    "only a finalized run is exported; finalize it first",
                ));
            }
            None => return Err(AppError::new(ErrorKind::NotFound, "first_day: no such run")),
        };
        let currency = model::policy(&**m.client, &m.schema, org.as_str())
            .await?
            .currency
            .ok_or_else(|| AppError::precondition("the organization has no currency"))?;
        let rows = model::lines_stream(
            &m.client,
            &m.schema,
            org.as_str(),
            first,
            members.as_deref(),
        )
        .await?;
        crate::work::drain(rows, sink_for(&run, &currency)).await
    }
}

impl Pay {
    /// Records the accruals and carry-overs due in every org (the accrual
    /// job, while `lease` holds); returns how many it recorded.
    pub(crate) async fn accrue_due(&self, lease: &mut Lease) -> Result<u64, AppError> {
        let m = self.reads.read_model(model::NAME, 0).await?;
        let mut recorded = 0;
        for (org_id, policy) in model::accruing_policies(&m.client, &m.schema).await? {
            if !lease.hold().await {
                break;
            }
            let Ok(org) = Token::new(&org_id) else {
                continue;
            };
            let state = self.orgs.cached_state(&org).await?;
            let Ok(tz) = tz_of(&state) else {
                continue;
            };
            let today = today(tz);
            let (accrued, carried) = model::accrued(&m.client, &m.schema, &org_id).await?;
            for (type_id, kind) in &policy.leave_types {
                let Some(accrual) = kind.accrual else {
                    continue;
                };
                let boundaries = boundaries(&policy, accrual.every, kind.since, today);
                for (member, rates) in &policy.rates {
                    let Some(start) = rates.keys().next().copied() else {
                        continue;
                    };
                    if state.active_role(member).is_none() {
                        continue;
                    }
                    // At the boundaries where the member has a rate (worked
                    // for the org then).
                    let mut due: Vec<LeaveCommand> = boundaries
                        .iter()
                        .filter(|b| rate_on(rates, **b).is_some())
                        .filter(|b| {
                            !accrued.contains(&(member.to_string(), type_id.to_string(), **b))
                        })
                        .map(|b| LeaveCommand::Accrue {
                            member: member.clone(),
                            leave_type: type_id.clone(),
                            boundary: *b,
                            ms: accrual.ms,
                        })
                        .collect();
                    if let Some(cap_ms) = kind.carry_over_cap_ms {
                        due.extend(
                            (kind.since.year() + 1..=today.year())
                                .filter(|y| NaiveDate::from_ymd_opt(*y, 1, 1) > Some(start))
                                .filter(|y| {
                                    !carried.contains(&(
                                        member.to_string(),
                                        type_id.to_string(),
                                        *y,
                                    ))
                                })
                                .map(|year| LeaveCommand::CarryOver {
                                    member: member.clone(),
                                    leave_type: type_id.clone(),
                                    year,
                                    cap_ms,
                                }),
                        );
                    }
                    for command in due {
                        let command_id = match &command {
                            LeaveCommand::Accrue { boundary, .. } => {
                                format!("accrue-{type_id}-{boundary}")
                            }
                            LeaveCommand::CarryOver { year, .. } => {
                                format!("carry-{type_id}-{year}")
                            }
                            _ => continue,
                        };
                        let outcome = self
                            .orgs
                            .execute_on::<Leave>(&org, member, "accrual", &command_id, command)
                            .await?;
                        if outcome.position > 0 && !outcome.duplicate {
                            recorded += 1;
                        }
                    }
                }
            }
        }
        Ok(recorded)
    }
}

/// The accrual boundaries after `since` up to `today`: the first days of
/// months, or of pay periods.
fn boundaries(
    policy: &Policy,
    every: AccrualEvery,
    since: NaiveDate,
    today: NaiveDate,
) -> Vec<NaiveDate> {
    let Some(after) = since.succ_opt() else {
        return Vec::new();
    };
    match every {
        AccrualEvery::Month => after
            .iter_days()
            .take_while(|d| *d <= today)
            .filter(|d| d.day() == 1)
            .collect(),
        AccrualEvery::PayPeriod => policy
            .schedule
            .periods_starting_between(after, today)
            .into_iter()
            .map(|p| p.first)
            .collect(),
    }
}

/// A run as seen by someone who sees only `members`' lines: its total and
/// missing list of those.
fn narrow(run: &mut RunRow, lines: &[LineRow], members: Option<&[String]>) {
    run.total_minor = lines.iter().map(|l| l.amount_minor).sum();
    run.members = lines
        .iter()
        .map(|l| &l.person_id)
        .collect::<BTreeSet<_>>()
        .len() as u32;
    if let Some(members) = members {
        run.missing.retain(|m| {
            let (Missing::Week { member, .. } | Missing::Rate { member, .. }) = m;
            members.iter().any(|p| p == member.as_str())
        });
    }
}
