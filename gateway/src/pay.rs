//! `trackhrs.pay.v1.Pay`: the pay policy, leave requests and balances,
//! payroll runs, through the pay use cases.

use tonic::{Request, Response, Status};
use trackhrs_app::pay::{LineRow, NewLeave, PolicyInput, RunRow};
use trackhrs_app::{Authenticator, Caller, Pay};
use trackhrs_domain::money::Currency;
use trackhrs_domain::payroll::compute::{Overtime, PayRate, Threshold};
use trackhrs_domain::payroll::schedule::PeriodKind;
use trackhrs_domain::payroll::{Accrual, AccrualEvery, Missing, PayVisibility};
use trackhrs_schemas::pay::v1 as pb;
use trackhrs_schemas::pay::v1::pay_server;
use trackhrs_schemas::work::v1 as wpb;

use crate::status::status;
use crate::work::{CsvStream, created, csv_response, date, day, reply, result, send_line};
use crate::{caller, validate};

/// The pay service.
pub struct PayService {
    auth: Authenticator,
    pay: Pay,
}

impl PayService {
    /// A service over the pay use cases.
    pub fn new(auth: Authenticator, pay: Pay) -> Self {
        Self { auth, pay }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller::person(&self.auth, request).await
    }
}

fn kind_from_wire(kind: i32) -> Result<PeriodKind, Status> {
    match pb::PeriodKind::try_from(kind) {
        Ok(pb::PeriodKind::Weekly) => Ok(PeriodKind::Weekly),
        Ok(pb::PeriodKind::BiWeekly) => Ok(PeriodKind::BiWeekly),
        Ok(pb::PeriodKind::SemiMonthly) => Ok(PeriodKind::SemiMonthly),
        Ok(pb::PeriodKind::Monthly) => Ok(PeriodKind::Monthly),
        _ => Err(Status::invalid_argument(
            "schedule.kind: weekly, bi-weekly, semi-monthly or monthly",
        )),
    }
}

fn kind_to_wire(kind: PeriodKind) -> i32 {
    (match kind {
        PeriodKind::Weekly => pb::PeriodKind::Weekly,
        PeriodKind::BiWeekly => pb::PeriodKind::BiWeekly,
        PeriodKind::SemiMonthly => pb::PeriodKind::SemiMonthly,
        PeriodKind::Monthly => pb::PeriodKind::Monthly,
    }) as i32
}

fn threshold(t: Option<pb::Threshold>) -> Option<Threshold> {
    t.map(|t| Threshold {
        after_ms: t.after_ms,
        percent: t.percent,
    })
}

fn threshold_to_wire(t: Option<Threshold>) -> Option<pb::Threshold> {
    t.map(|t| pb::Threshold {
        after_ms: t.after_ms,
        percent: t.percent,
    })
}

fn accrual(a: Option<pb::Accrual>) -> Result<Option<Accrual>, Status> {
    let Some(a) = a else { return Ok(None) };
    let every = match pb::AccrualEvery::try_from(a.every) {
        Ok(pb::AccrualEvery::PayPeriod) => AccrualEvery::PayPeriod,
        Ok(pb::AccrualEvery::Month) => AccrualEvery::Month,
        _ => {
            return Err(Status::invalid_argument(
                "leave_type.accrual.every: pay period or month",
            ));
        }
    };
    Ok(Some(Accrual { every, ms: a.ms }))
}

fn policy_input(change: pb::change_policy_request::Change) -> Result<PolicyInput, Status> {
    use pb::change_policy_request::Change;
    Ok(match change {
        Change::Currency(code) => PolicyInput::Currency(code),
        Change::Schedule(s) => PolicyInput::Schedule {
            from: date("schedule.from", &s.from)?,
            kind: kind_from_wire(s.kind)?,
        },
        Change::Overtime(o) => PolicyInput::Overtime(Overtime {
            daily: threshold(o.daily),
            daily_double: threshold(o.daily_double),
            weekly: threshold(o.weekly),
        }),
        Change::Holiday(h) => PolicyInput::Holiday {
            date: date("holiday.date", &h.date)?,
            name: (!h.name.is_empty()).then_some(h.name),
        },
        Change::DayMs(ms) => PolicyInput::DayMs(ms),
        Change::LeaveType(t) => PolicyInput::LeaveType {
            id: (!t.id.is_empty()).then_some(t.id),
            name: t.name,
            paid: t.paid,
            accrual: accrual(t.accrual)?,
            carry_over_cap_ms: t.carry_over_cap_ms,
            negative_allowance_ms: t.negative_allowance_ms,
            since: if t.since.is_empty() {
                None
            } else {
                Some(date("leave_type.since", &t.since)?)
            },
        },
        Change::Rate(r) => PolicyInput::Rate {
            from: date("rate.from", &r.from)?,
            person: r.person_id,
            salaried: r.salaried,
            amount: r.amount,
            ended: r.ended,
        },
        Change::ManagersSeeTeamPay(managers) => PolicyInput::Visibility(PayVisibility { managers }),
    })
}

fn missing_to_wire(m: &Missing) -> pb::Missing {
    match m {
        Missing::Week { member, first_day } => pb::Missing {
            person_id: member.to_string(),
            what: "week".into(),
            day: day(*first_day),
        },
        Missing::Rate { member, day: d } => pb::Missing {
            person_id: member.to_string(),
            what: "rate".into(),
            day: day(*d),
        },
    }
}

fn run_to_wire(r: &RunRow) -> pb::Run {
    pb::Run {
        first_day: day(r.first_day),
        last_day: day(r.last_day),
        status: r.status.clone(),
        draft: r.draft,
        missing: r.missing.iter().map(missing_to_wire).collect(),
        total_minor: r.total_minor,
        members: r.members,
        drafted_at_ms: r.drafted_at_ms,
        finalized_at_ms: r.finalized_at_ms.unwrap_or(0),
    }
}

fn line_to_wire(l: LineRow) -> pb::Line {
    pb::Line {
        person_id: l.person_id,
        kind: l.kind,
        leave_type_id: l.leave_type.unwrap_or_default(),
        corrects: l.corrects.map(day).unwrap_or_default(),
        ms: l.ms,
        days: l.days,
        rate_minor: l.rate_minor,
        percent: l.percent,
        amount_minor: l.amount_minor,
    }
}

/// The CSV header of a run's lines.
pub const RUN_CSV_HEADER: &str = "period_first,period_last,person_id,kind,leave_type,corrects,hours,days,rate,percent,amount,currency\n";

/// One CSV line of a run (the README documents the columns): hours with
/// two decimals (rounded down), money in the currency's decimals.
pub fn run_csv_line(run: &RunRow, currency: &Currency, l: &LineRow) -> String {
    let hundredths = l.ms * 100 / 3_600_000;
    format!(
        "{},{},{},{},{},{},{}.{:02},{},{},{},{},{}\n",
        day(run.first_day),
        day(run.last_day),
        l.person_id,
        l.kind,
        l.leave_type.as_deref().unwrap_or(""),
        l.corrects.map(day).unwrap_or_default(),
        hundredths / 100,
        hundredths % 100,
        l.days,
        currency.format(l.rate_minor),
        l.percent,
        currency.format(l.amount_minor),
        currency.code,
    )
}

#[tonic::async_trait]
impl pay_server::Pay for PayService {
    async fn change_policy(
        &self,
        request: Request<pb::ChangePolicyRequest>,
    ) -> Result<Response<wpb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let change = r
            .change
            .ok_or_else(|| Status::invalid_argument("change: say what changes"))?;
        let input = policy_input(change)?;
        let (id, outcome) = self
            .pay
            .change_policy(&caller, &r.org_id, &command_id, input)
            .await
            .map_err(status)?;
        Ok(Response::new(wpb::Created {
            result: Some(result(outcome)),
            id: id.map(|i| i.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PayPolicy>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .pay
            .policy(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        let (policy, periods) = (found.value.policy, found.value.periods);
        let currency = policy.currency.clone();
        let format = |minor: i64| {
            currency
                .as_ref()
                .map(|c| c.format(minor))
                .unwrap_or_default()
        };
        let mut rates = Vec::new();
        for (person, by_day) in &policy.rates {
            for (from, rate) in by_day {
                let (salaried, minor) = match rate {
                    PayRate::Hourly { minor } => (false, Some(*minor)),
                    PayRate::Salaried { minor } => (true, Some(*minor)),
                    PayRate::Ended => (false, None),
                };
                rates.push(pb::Rate {
                    person_id: person.to_string(),
                    from: day(*from),
                    salaried,
                    amount: minor.map(format).unwrap_or_default(),
                    amount_minor: minor.unwrap_or(0),
                    ended: minor.is_none(),
                });
            }
        }
        Ok(Response::new(pb::PayPolicy {
            currency: currency
                .as_ref()
                .map(|c| c.code.clone())
                .unwrap_or_default(),
            minor_digits: currency.as_ref().map_or(0, |c| u32::from(c.minor_digits)),
            schedule: policy
                .schedule
                .segments
                .iter()
                .map(|(from, kind)| pb::Schedule {
                    from: day(*from),
                    kind: kind_to_wire(*kind),
                })
                .collect(),
            overtime: Some(pb::Overtime {
                daily: threshold_to_wire(policy.overtime.daily),
                daily_double: threshold_to_wire(policy.overtime.daily_double),
                weekly: threshold_to_wire(policy.overtime.weekly),
            }),
            holidays: policy
                .holidays
                .iter()
                .map(|(d, name)| pb::Holiday {
                    date: day(*d),
                    name: name.clone(),
                })
                .collect(),
            day_ms: policy.day_ms,
            leave_types: policy
                .leave_types
                .iter()
                .map(|(id, t)| pb::LeaveType {
                    id: id.to_string(),
                    name: t.name.clone(),
                    paid: t.paid,
                    accrual: t.accrual.map(|a| pb::Accrual {
                        every: match a.every {
                            AccrualEvery::PayPeriod => pb::AccrualEvery::PayPeriod,
                            AccrualEvery::Month => pb::AccrualEvery::Month,
                        } as i32,
                        ms: a.ms,
                    }),
                    carry_over_cap_ms: t.carry_over_cap_ms,
                    negative_allowance_ms: t.negative_allowance_ms,
                    since: day(t.since),
                })
                .collect(),
            rates,
            managers_see_team_pay: policy.visibility.managers,
            periods: periods
                .iter()
                .map(|p| pb::Period {
                    first_day: day(p.first),
                    last_day: day(p.last),
                })
                .collect(),
            position: found.position,
        }))
    }

    async fn request_leave(
        &self,
        request: Request<pb::RequestLeaveRequest>,
    ) -> Result<Response<wpb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let new = NewLeave {
            leave_type: r.leave_type_id,
            from: date("from", &r.from)?,
            to: date("to", &r.to)?,
            day_ms: (r.day_ms != 0).then_some(r.day_ms),
            note: (!r.note.is_empty()).then_some(r.note),
        };
        created(
            self.pay
                .request_leave(&caller, &r.org_id, &command_id, new)
                .await,
        )
    }

    async fn cancel_leave(
        &self,
        request: Request<pb::CancelLeaveRequest>,
    ) -> Result<Response<wpb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        reply(
            self.pay
                .cancel_leave(&caller, &r.org_id, &command_id, &r.request_id)
                .await,
        )
    }

    async fn decide_leave(
        &self,
        request: Request<pb::DecideLeaveRequest>,
    ) -> Result<Response<wpb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        reply(
            self.pay
                .decide_leave(
                    &caller,
                    &r.org_id,
                    &command_id,
                    (&r.person_id, &r.request_id),
                    r.approve,
                    (!r.comment.is_empty()).then_some(r.comment),
                )
                .await,
        )
    }

    async fn list_leave(
        &self,
        request: Request<pb::ListLeaveRequest>,
    ) -> Result<Response<pb::LeaveView>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let range = (date("from", &r.from)?, date("to", &r.to)?);
        let found = self
            .pay
            .leave(&caller, &r.org_id, range, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaveView {
            requests: found
                .value
                .requests
                .into_iter()
                .map(|q| pb::LeaveRequest {
                    person_id: q.person_id,
                    request_id: q.request_id,
                    leave_type_id: q.type_id,
                    first_day: day(q.first_day),
                    last_day: day(q.last_day),
                    ms: q.ms,
                    status: q.status,
                    note: q.note.unwrap_or_default(),
                    decided_by: q.decided_by.unwrap_or_default(),
                    comment: q.comment.unwrap_or_default(),
                })
                .collect(),
            balances: found
                .value
                .balances
                .into_iter()
                .map(|b| pb::Balance {
                    balance_ms: b.balance_ms(),
                    person_id: b.person_id,
                    leave_type_id: b.type_id,
                    accrued_ms: b.accrued_ms,
                    taken_ms: b.taken_ms,
                    forfeited_ms: b.forfeited_ms,
                    pending_ms: b.pending_ms,
                })
                .collect(),
            position: found.position,
        }))
    }

    async fn draft_run(
        &self,
        request: Request<pb::DraftRunRequest>,
    ) -> Result<Response<wpb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let first = date("first_day", &r.first_day)?;
        reply(
            self.pay
                .draft_run(&caller, &r.org_id, &command_id, first, r.min_position)
                .await,
        )
    }

    async fn finalize_run(
        &self,
        request: Request<pb::FinalizeRunRequest>,
    ) -> Result<Response<wpb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let first = date("first_day", &r.first_day)?;
        reply(
            self.pay
                .finalize_run(&caller, &r.org_id, &command_id, first, r.draft)
                .await,
        )
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .pay
            .runs(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: found.value.runs.iter().map(run_to_wire).collect(),
            currency: found.value.currency.map(|c| c.code).unwrap_or_default(),
            position: found.position,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunView>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let first = date("first_day", &r.first_day)?;
        let found = self
            .pay
            .run(&caller, &r.org_id, first, r.min_position)
            .await
            .map_err(status)?;
        let view = found.value;
        Ok(Response::new(pb::RunView {
            run: Some(run_to_wire(&view.run)),
            lines: view.lines.into_iter().map(line_to_wire).collect(),
            currency: view
                .currency
                .as_ref()
                .map(|c| c.code.clone())
                .unwrap_or_default(),
            minor_digits: view.currency.map_or(0, |c| u32::from(c.minor_digits)),
            position: found.position,
        }))
    }

    type ExportRunStream = CsvStream;

    async fn export_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<CsvStream>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let first = date("first_day", &r.first_day)?;
        let pay = self.pay.clone();
        Ok(Response::new(csv_response(RUN_CSV_HEADER, move |lines| {
            Box::pin(async move {
                pay.export_run(&caller, &r.org_id, first, |run, currency| {
                    let (run, currency) = (run.clone(), currency.clone());
                    move |line| send_line(&lines, run_csv_line(&run, &currency, &line))
                })
                .await
            })
        })))
    }
}
