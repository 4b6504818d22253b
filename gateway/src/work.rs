//! `trackhrs.work.v1.Work`: teams, clients, projects, attribution rules,
//! project time and weekly timesheets, through the work use cases.

use std::future::Future;
use std::pin::Pin;

use chrono::NaiveDate;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use trackhrs_app::work::{self, Catalog, Decision, NewEntry, NewProject, ProjectChange};
use trackhrs_app::{AppError, Authenticator, Caller, Outcome, Work};
use trackhrs_domain::Token;
use trackhrs_domain::attribution::AttributionRule;
use trackhrs_domain::project::Budget;
use trackhrs_domain::timesheet::EntryKind;
use trackhrs_schemas::work::v1 as pb;
use trackhrs_schemas::work::v1::work_server;

use crate::status::status;
use crate::{caller, validate};

/// The work service.
pub struct WorkService {
    auth: Authenticator,
    work: Work,
}

impl WorkService {
    /// A service over the work use cases.
    pub fn new(auth: Authenticator, work: Work) -> Self {
        Self { auth, work }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller::person(&self.auth, request).await
    }
}

pub(crate) fn result(outcome: Outcome) -> pb::CommandResult {
    pb::CommandResult {
        version: outcome.version,
        position: outcome.position,
        duplicate: outcome.duplicate,
    }
}

pub(crate) fn reply(
    outcome: Result<Outcome, AppError>,
) -> Result<Response<pb::CommandResult>, Status> {
    Ok(Response::new(result(outcome.map_err(status)?)))
}

pub(crate) fn created(
    done: Result<(Token, Outcome), AppError>,
) -> Result<Response<pb::Created>, Status> {
    let (id, outcome) = done.map_err(status)?;
    Ok(Response::new(pb::Created {
        result: Some(result(outcome)),
        id: id.to_string(),
    }))
}

/// A day as YYYY-MM-DD between the years 1970 and 9999.
pub(crate) fn date(field: &str, value: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=9999).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field}: must be a date as YYYY-MM-DD between 1970 and 9999"
            ))
        })
}

pub(crate) fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn budget(b: Option<pb::Budget>) -> Result<Budget, Status> {
    let b = b.unwrap_or_default();
    if b.money_minor < 0 {
        return Err(Status::invalid_argument(
            "budget.money_minor: must not be negative",
        ));
    }
    if b.rate_minor < 0 {
        return Err(Status::invalid_argument(
            "budget.rate_minor: must not be negative",
        ));
    }
    Ok(Budget {
        hours: (b.hours > 0).then_some(b.hours),
        money_minor: (b.money_minor > 0).then_some(b.money_minor),
        rate_minor: (b.rate_minor > 0).then_some(b.rate_minor),
    })
}

fn budget_to_wire(hours: Option<i32>, money: Option<i64>, rate: Option<i64>) -> pb::Budget {
    pb::Budget {
        hours: hours.map_or(0, |h| h.max(0) as u32),
        money_minor: money.unwrap_or(0),
        rate_minor: rate.unwrap_or(0),
    }
}

fn kind_to_wire(kind: &str) -> i32 {
    match kind {
        "manual" => pb::EntryKind::Manual as i32,
        "assignment" => pb::EntryKind::Assignment as i32,
        _ => pb::EntryKind::Unspecified as i32,
    }
}

fn week_to_wire(w: work::WeekRow) -> pb::Week {
    pb::Week {
        person_id: w.person_id,
        week_start: day(w.week_start),
        start_ms: w.start_ms,
        end_ms: w.end_ms,
        status: w.status,
        submitted_at_ms: w.submitted_at.unwrap_or(0),
        decision: w.decision.unwrap_or_default(),
        decided_by: w.decided_by.unwrap_or_default(),
        decided_at_ms: w.decided_at.unwrap_or(0),
        comment: w.comment.unwrap_or_default(),
        total_ms: w.total_ms,
        late_ms: w.late_ms,
    }
}

fn rule_to_wire(r: &AttributionRule) -> pb::AttributionRule {
    pb::AttributionRule {
        project_id: r.project.to_string(),
        task_id: r.task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
        regex: r.regex.clone(),
        ignore_case: r.ignore_case,
    }
}

fn catalog_to_wire(c: Catalog, position: u64) -> pb::Catalog {
    pb::Catalog {
        teams: c
            .teams
            .into_iter()
            .map(|t| pb::Team {
                team_id: t.team_id,
                name: t.name,
                managers: t.managers,
                members: t.members,
            })
            .collect(),
        clients: c
            .clients
            .into_iter()
            .map(|c| pb::Client {
                client_id: c.client_id,
                name: c.name,
            })
            .collect(),
        projects: c
            .projects
            .into_iter()
            .map(|p| pb::Project {
                project_id: p.project_id,
                name: p.name,
                client_id: p.client_id.unwrap_or_default(),
                billable: p.billable,
                budget: Some(budget_to_wire(p.budget_hours, p.budget_money, p.rate_money)),
                archived: p.archived,
                members: p.members,
                tasks: p
                    .tasks
                    .into_iter()
                    .map(|t| pb::Task {
                        task_id: t.task_id,
                        name: t.name,
                    })
                    .collect(),
                booked_ms: p.booked_ms,
                booked_money_minor: p.booked_money.unwrap_or(0),
                marks: p.marks.into_iter().map(|m| m.max(0) as u32).collect(),
            })
            .collect(),
        rules_version: c.rules.0,
        rules: c.rules.1.iter().map(rule_to_wire).collect(),
        position,
    }
}

/// One CSV line of project time (the README documents the columns).
pub fn csv_line(row: &work::ProjectTime) -> String {
    format!(
        "{},{},{},{},{},{},{:.2}\n",
        day(row.day),
        row.person_id,
        row.project_id,
        row.task_id,
        if row.billable { "yes" } else { "no" },
        row.ms,
        row.ms as f64 / 3_600_000.0
    )
}

/// The CSV header of project time.
pub const CSV_HEADER: &str = "day,person_id,project_id,task_id,billable,ms,hours\n";

/// One CSV line of a week (the README documents the columns).
pub fn week_csv_line(w: &work::WeekRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{:.2}\n",
        day(w.week_start),
        w.person_id,
        w.status,
        w.decision.as_deref().unwrap_or(""),
        w.decided_by.as_deref().unwrap_or(""),
        w.total_ms,
        w.late_ms,
        w.total_ms as f64 / 3_600_000.0
    )
}

/// The CSV header of weeks.
pub const WEEKS_CSV_HEADER: &str =
    "week_start,person_id,status,decision,decided_by,total_ms,late_ms,total_hours\n";

/// Rows per CSV chunk sent.
const CSV_ROWS_PER_CHUNK: usize = 500;

pub(crate) type CsvStream = Pin<Box<dyn Stream<Item = Result<pb::CsvChunk, Status>> + Send>>;

type Export = Pin<Box<dyn Future<Output = Result<u64, AppError>> + Send>>;

/// Sends one CSV line to the chunker; fails when the client went away.
pub(crate) fn send_line(
    lines: &mpsc::Sender<String>,
    line: String,
) -> impl Future<Output = Result<(), AppError>> + use<> {
    let lines = lines.clone();
    async move {
        lines
            .send(line)
            .await
            .map_err(|_| AppError::unavailable("the client went away"))
    }
}

/// A CSV answer: `header`, then the lines `export` sends, in chunks of
/// [`CSV_ROWS_PER_CHUNK`] lines. The channels are small, so the query runs
/// only as fast as the client reads; a failure ends the stream with its
/// status, and a client that goes away stops the export.
pub(crate) fn csv_response(
    header: &'static str,
    export: impl FnOnce(mpsc::Sender<String>) -> Export + Send + 'static,
) -> CsvStream {
    let (lines_tx, mut lines_rx) = mpsc::channel::<String>(CSV_ROWS_PER_CHUNK);
    let (out, chunks) = mpsc::channel::<Result<pb::CsvChunk, Status>>(4);
    tokio::spawn(async move {
        let export = tokio::spawn(export(lines_tx));
        let mut chunk = String::from(header);
        let mut rows = 0;
        loop {
            let line = tokio::select! {
                line = lines_rx.recv() => line,
                () = out.closed() => {
                    export.abort();
                    return;
                }
            };
            let Some(line) = line else { break };
            chunk.push_str(&line);
            rows += 1;
            if rows % CSV_ROWS_PER_CHUNK == 0 {
                let data = std::mem::take(&mut chunk).into_bytes();
                if out.send(Ok(pb::CsvChunk { data })).await.is_err() {
                    export.abort();
                    return;
                }
            }
        }
        let last = match export.await {
            Ok(Ok(_)) => Ok(pb::CsvChunk {
                data: chunk.into_bytes(),
            }),
            Ok(Err(e)) => Err(status(e)),
            Err(_) => Err(Status::internal("the export stopped")),
        };
        // The client may have gone away meanwhile: nothing left to tell.
        let _ = out.send(last).await;
    });
    Box::pin(futures::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    }))
}

#[tonic::async_trait]
impl work_server::Work for WorkService {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let name = validate::name("name", &r.name)?;
        created(
            self.work
                .create_team(&caller, &r.org_id, &command_id, name)
                .await,
        )
    }

    async fn set_team_managers(
        &self,
        request: Request<pb::SetTeamManagersRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        reply(
            self.work
                .set_team_managers(&caller, &r.org_id, &command_id, &r.team_id, &r.managers)
                .await,
        )
    }

    async fn set_member_team(
        &self,
        request: Request<pb::SetMemberTeamRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let team = (!r.team_id.is_empty()).then_some(r.team_id.as_str());
        reply(
            self.work
                .set_member_team(&caller, &r.org_id, &command_id, &r.person_id, team)
                .await,
        )
    }

    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let name = validate::name("name", &r.name)?;
        created(
            self.work
                .create_client(&caller, &r.org_id, &command_id, name)
                .await,
        )
    }

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let new = NewProject {
            name: validate::name("name", &r.name)?,
            client: (!r.client_id.is_empty()).then_some(r.client_id),
            billable: r.billable,
            budget: budget(r.budget)?,
            members: r.members,
        };
        created(
            self.work
                .create_project(&caller, &r.org_id, &command_id, new)
                .await,
        )
    }

    async fn add_task(
        &self,
        request: Request<pb::AddTaskRequest>,
    ) -> Result<Response<pb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let name = validate::name("name", &r.name)?;
        created(
            self.work
                .add_task(&caller, &r.org_id, &command_id, &r.project_id, name)
                .await,
        )
    }

    async fn change_project(
        &self,
        request: Request<pb::ChangeProjectRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        use pb::change_project_request::Change;
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let change = match r.change {
            Some(Change::Budget(b)) => ProjectChange::Budget(budget(Some(b))?),
            Some(Change::Members(m)) => ProjectChange::Members(m.members),
            Some(Change::Archived(true)) => ProjectChange::Archive,
            Some(Change::Archived(false)) => ProjectChange::Unarchive,
            None => return Err(Status::invalid_argument("change: say what changes")),
        };
        reply(
            self.work
                .change_project(&caller, &r.org_id, &command_id, &r.project_id, change)
                .await,
        )
    }

    async fn set_attribution_rules(
        &self,
        request: Request<pb::SetAttributionRulesRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let rules = r
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                Ok(AttributionRule {
                    project: validate::id(&format!("rules[{i}].project_id"), &rule.project_id)?,
                    task: (!rule.task_id.is_empty())
                        .then(|| validate::id(&format!("rules[{i}].task_id"), &rule.task_id))
                        .transpose()?,
                    regex: rule.regex,
                    ignore_case: rule.ignore_case,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        reply(
            self.work
                .set_attribution_rules(&caller, &r.org_id, &command_id, rules)
                .await,
        )
    }

    async fn get_catalog(
        &self,
        request: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .work
            .catalog(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(catalog_to_wire(found.value, found.position)))
    }

    async fn add_entry(
        &self,
        request: Request<pb::AddEntryRequest>,
    ) -> Result<Response<pb::Created>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let kind = match pb::EntryKind::try_from(r.kind) {
            Ok(pb::EntryKind::Manual) => EntryKind::Manual,
            Ok(pb::EntryKind::Assignment) => EntryKind::Assignment,
            _ => return Err(Status::invalid_argument("kind: manual or assignment")),
        };
        let new = NewEntry {
            kind,
            project: r.project_id,
            task: r.task_id,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            note: (!r.note.trim().is_empty()).then_some(r.note),
        };
        created(
            self.work
                .add_entry(&caller, &r.org_id, &command_id, new)
                .await,
        )
    }

    async fn remove_entry(
        &self,
        request: Request<pb::RemoveEntryRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let date = date("date", &r.date)?;
        reply(
            self.work
                .remove_entry(&caller, &r.org_id, &command_id, date, &r.entry_id)
                .await,
        )
    }

    async fn submit_week(
        &self,
        request: Request<pb::SubmitWeekRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let date = date("date", &r.date)?;
        reply(
            self.work
                .submit_week(&caller, &r.org_id, &command_id, date)
                .await,
        )
    }

    async fn decide_week(
        &self,
        request: Request<pb::DecideWeekRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        use pb::decide_week_request::Decision as Wire;
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let command_id = validate::command_id(&r.command_id)?;
        let date = date("date", &r.date)?;
        let decision = match r.decision {
            Some(Wire::Approve(comment)) => Decision::Approve {
                comment: (!comment.trim().is_empty()).then_some(comment),
            },
            Some(Wire::Reject(comment)) => Decision::Reject { comment },
            Some(Wire::Reopen(reason)) => Decision::Reopen { reason },
            None => {
                return Err(Status::invalid_argument(
                    "decision: approve, reject or reopen",
                ));
            }
        };
        reply(
            self.work
                .decide_week(
                    &caller,
                    &r.org_id,
                    &command_id,
                    &r.person_id,
                    date,
                    decision,
                )
                .await,
        )
    }

    async fn get_week(
        &self,
        request: Request<pb::GetWeekRequest>,
    ) -> Result<Response<pb::WeekView>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let date = date("date", &r.date)?;
        let person = if r.person_id.is_empty() {
            caller.person.to_string()
        } else {
            r.person_id
        };
        let found = self
            .work
            .week(&caller, &r.org_id, &person, date, r.min_position)
            .await
            .map_err(status)?;
        let w = found.value;
        let view = w.view;
        let week = match &view {
            Some(v) => week_to_wire(v.week.clone()),
            None => pb::Week {
                person_id: w.person.to_string(),
                week_start: day(w.first_day),
                start_ms: w.bounds.start_ms,
                end_ms: w.bounds.end_ms,
                status: "open".into(),
                ..pb::Week::default()
            },
        };
        let (entries, time, stretches) = match view {
            Some(v) => (v.entries, v.time, v.stretches),
            None => Default::default(),
        };
        Ok(Response::new(pb::WeekView {
            week: Some(week),
            entries: entries
                .into_iter()
                .map(|e| pb::Entry {
                    entry_id: e.entry_id,
                    kind: kind_to_wire(&e.kind),
                    project_id: e.project_id,
                    task_id: e.task_id,
                    start_ms: e.start_ms,
                    end_ms: e.end_ms,
                    note: e.note.unwrap_or_default(),
                })
                .collect(),
            time: time
                .into_iter()
                .map(|t| pb::WeekTime {
                    day: day(t.day),
                    project_id: t.project_id,
                    task_id: t.task_id,
                    source: t.source,
                    ms: t.ms,
                })
                .collect(),
            stretches: stretches
                .into_iter()
                .map(|s| pb::Stretch {
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    active_ms: s.active_ms,
                    app: s.app,
                })
                .collect(),
            position: found.position,
        }))
    }

    async fn list_weeks(
        &self,
        request: Request<pb::ListWeeksRequest>,
    ) -> Result<Response<pb::ListWeeksResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let date = date("date", &r.date)?;
        let found = self
            .work
            .team_weeks(&caller, &r.org_id, date, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListWeeksResponse {
            weeks: found.value.into_iter().map(week_to_wire).collect(),
            position: found.position,
        }))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListWeeksResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .work
            .approvals(&caller, &r.org_id, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListWeeksResponse {
            weeks: found.value.into_iter().map(week_to_wire).collect(),
            position: found.position,
        }))
    }

    async fn get_project_time(
        &self,
        request: Request<pb::GetProjectTimeRequest>,
    ) -> Result<Response<pb::ProjectTime>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let range = (date("from", &r.from)?, date("to", &r.to)?);
        let found = self
            .work
            .project_time(&caller, &r.org_id, range, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ProjectTime {
            rows: found
                .value
                .into_iter()
                .map(|t| pb::ProjectTimeRow {
                    project_id: t.project_id,
                    task_id: t.task_id,
                    person_id: t.person_id,
                    day: day(t.day),
                    billable: t.billable,
                    ms: t.ms,
                })
                .collect(),
            position: found.position,
        }))
    }

    type ExportProjectTimeStream = CsvStream;

    async fn export_project_time(
        &self,
        request: Request<pb::GetProjectTimeRequest>,
    ) -> Result<Response<CsvStream>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let range = (date("from", &r.from)?, date("to", &r.to)?);
        let work = self.work.clone();
        Ok(Response::new(csv_response(CSV_HEADER, move |lines| {
            Box::pin(async move {
                work.export_project_time(&caller, &r.org_id, range, |row| {
                    send_line(&lines, csv_line(&row))
                })
                .await
            })
        })))
    }

    type ExportTimesheetsStream = CsvStream;

    async fn export_timesheets(
        &self,
        request: Request<pb::GetProjectTimeRequest>,
    ) -> Result<Response<CsvStream>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let range = (date("from", &r.from)?, date("to", &r.to)?);
        let work = self.work.clone();
        Ok(Response::new(csv_response(
            WEEKS_CSV_HEADER,
            move |lines| {
                Box::pin(async move {
                    work.export_weeks(&caller, &r.org_id, range, |week| {
                        send_line(&lines, week_csv_line(&week))
                    })
                    .await
                })
            },
        )))
    }

    async fn get_moved_time(
        &self,
        request: Request<pb::GetMovedTimeRequest>,
    ) -> Result<Response<pb::MovedTime>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let found = self
            .work
            .moved(&caller, &r.org_id, r.rules_version, r.min_position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MovedTime {
            projects: found
                .value
                .into_iter()
                .map(|m| pb::Moved {
                    project_id: m.project_id,
                    before_ms: m.before_ms,
                    after_ms: m.after_ms,
                })
                .collect(),
            position: found.position,
        }))
    }
}
