//! Work: teams and their managers, clients, projects and tasks, attribution
//! rules, and each member's weekly timesheet with its decisions (submit,
//! approve, reject, reopen).
//!
//! The aggregates decide; this layer brings them the facts they cannot
//! read themselves: the caller's current role, whether they may decide on
//! a member's week (a manager of the member's team, or an admin), the
//! project's state when time is booked on it, the week's bounds in the
//! org's time zone and work week, and that the clients, projects and tasks
//! a command names exist in this organization (another org's are not
//! found, like ones that never existed).

use std::future::Future;

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use trackhrs_commands::CommandError;
use trackhrs_domain::attribution::AttributionRule;
use trackhrs_domain::organization::{OrgCommand, Organization, Role};
use trackhrs_domain::project::{Budget, Project, ProjectCommand};
use trackhrs_domain::timesheet::{
    Bookable, Entry, EntryKind, MAX_ENTRY_MS, TaskRef, Timesheet, TimesheetCommand,
};
use trackhrs_domain::{Aggregate, Token};
use trackhrs_nats::CommitMeta;

use trackhrs_domain::permissions::Read;
use trackhrs_projections::work as model;
pub use trackhrs_projections::work::{
    ClientRow, EntryRow, Moved, ProjectRow, ProjectTime, Stretch, TaskRow, TeamRow, WeekRow,
    WeekTime, WeekView,
};

use crate::administration::AtPosition;
use crate::caller::Caller;
use crate::error::{AppError, ErrorKind};
use crate::org::{OrgCommands, Outcome, derived_id, digest_hex, now_micros};
use crate::reads::{ReadModel, ReadModels};
use trackhrs_domain::week::{first_day, timesheet_id, week_of};

/// A project to create (names checked by the aggregate).
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Its name.
    pub name: String,
    /// Its client's id, if any.
    pub client: Option<String>,
    /// Whether its time is billed.
    pub billable: bool,
    /// Its budget.
    pub budget: Budget,
    /// Who may book on it (empty: every member).
    pub members: Vec<String>,
}

/// A change to a project.
#[derive(Debug, Clone)]
pub enum ProjectChange {
    /// A new budget.
    Budget(Budget),
    /// Who may book on it (empty: every member).
    Members(Vec<String>),
    /// Archive it.
    Archive,
    /// Take it out of the archive.
    Unarchive,
}

/// An entry of the caller's week.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Manual time, or a stretch of activity assigned to the task.
    pub kind: EntryKind,
    /// The project.
    pub project: String,
    /// The task inside it.
    pub task: String,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// A note.
    pub note: Option<String>,
}

/// A decision on a member's week.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Approve (and lock) a submitted week.
    Approve {
        /// An optional comment.
        comment: Option<String>,
    },
    /// Send a submitted week back.
    Reject {
        /// Why.
        comment: String,
    },
    /// Reopen an approved week (owners and admins).
    Reopen {
        /// Why.
        reason: String,
    },
}

/// The last instant an entry may end at: the end of the year 9999.
const MAX_ENTRY_END_MS: i64 = 253_402_300_799_999;

/// Longest note, comment or reason, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Longest range of days a project-time query or export covers.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Teams, clients and projects of an org.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Its teams.
    pub teams: Vec<TeamRow>,
    /// Its clients.
    pub clients: Vec<ClientRow>,
    /// Its projects, with their tasks, budgets and time booked.
    pub projects: Vec<ProjectRow>,
    /// Its attribution rules and their version.
    pub rules: (u32, Vec<AttributionRule>),
}

/// A member's week: its bounds always, its view when anything happened in
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Week {
    /// The member.
    pub person: Token,
    /// Its first day.
    pub first_day: NaiveDate,
    /// Its bounds.
    pub bounds: trackhrs_domain::timesheet::Week,
    /// What the read model holds of it.
    pub view: Option<WeekView>,
}

/// The work use cases.
#[derive(Clone)]
pub struct Work {
    orgs: OrgCommands,
    reads: ReadModels,
}

/// `value` as an id, or INVALID_ARGUMENT naming `field`.
pub(crate) fn token(field: &str, value: &str) -> Result<Token, AppError> {
    Token::new(value).map_err(|_| AppError::invalid(field, "is not a valid id"))
}

fn not_found(field: &str, what: &str) -> AppError {
    AppError::new(ErrorKind::NotFound, format!("{field}: no such {what}"))
}

/// Passes each row of `rows` to `sink`, one at a time (the stream reads the
/// next only when `sink` is done); returns how many.
pub(crate) async fn drain<T, F, Fut>(
    rows: impl futures::Stream<Item = Result<T, tokio_postgres::Error>>,
    mut sink: F,
) -> Result<u64, AppError>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(), AppError>>,
{
    use futures::TryStreamExt as _;
    futures::pin_mut!(rows);
    let mut count = 0;
    while let Some(row) = rows.try_next().await? {
        sink(row).await?;
        count += 1;
    }
    Ok(count)
}

fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), AppError> {
    if to < from {
        return Err(AppError::invalid("to", "must not be before from"));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(AppError::invalid(
            "to",
            format!("a range covers at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

pub(crate) fn check_note(field: &str, note: &str) -> Result<(), AppError> {
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(AppError::invalid(
            field,
            format!("at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    if note
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AppError::invalid(
            field,
            "no control characters but line breaks and tabs",
        ));
    }
    Ok(())
}

impl Work {
    pub(crate) fn new(orgs: OrgCommands, reads: ReadModels) -> Self {
        Self { orgs, reads }
    }

    /// Runs `command` on aggregate `A` `id` of `org` for the caller.
    async fn execute<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
        caller: &Caller,
        command_id: &str,
        command: A::Command,
    ) -> Result<Outcome, AppError>
    where
        AppError: From<CommandError<A::Error>>,
    {
        self.orgs
            .execute_on::<A>(org, id, &caller.actor(), command_id, command)
            .await
    }

    /// The org's state and the caller's active role in it.
    async fn role(&self, caller: &Caller, org_id: &str) -> Result<(Token, Role), AppError> {
        let org = caller.scope(org_id)?;
        let state = self.orgs.state(&org).await?;
        let role = state
            .active_role(&caller.person)
            .ok_or_else(|| AppError::not_allowed(crate::NOT_YOURS))?;
        Ok((org, role))
    }

    /// A project of `org` that exists (another org's is not found).
    async fn project(
        &self,
        org: &Token,
        field: &str,
        id: &str,
    ) -> Result<(Token, Project), AppError> {
        let id = token(field, id)?;
        let loaded = self.orgs.store().load_fresh::<Project>(org, &id).await?;
        if !loaded.state.created {
            return Err(not_found(field, "project"));
        }
        Ok((id, (*loaded.state).clone()))
    }

    /// Members named in a command, each an org member.
    fn members(
        state: &Organization,
        field: &str,
        ids: &[String],
    ) -> Result<std::collections::BTreeSet<Token>, AppError> {
        ids.iter()
            .map(|id| {
                let id = token(field, id)?;
                if state.members.contains_key(&id) {
                    Ok(id)
                } else {
                    Err(not_found(field, "member"))
                }
            })
            .collect()
    }

    /// Runs an org command as the caller.
    async fn org_command(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        command: OrgCommand,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        self.orgs
            .execute(&org, &caller.actor(), command_id, command)
            .await
    }

    /// Runs the org command `make` builds from the caller and a new id,
    /// derived from the command id (`<prefix>_<hex>`, the same for a retry);
    /// returns the id.
    async fn create(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        (prefix, purpose): (&str, &str),
        make: impl FnOnce(Token, Token) -> OrgCommand,
    ) -> Result<(Token, Outcome), AppError> {
        let org = caller.scope(org_id)?;
        let id = derived_id(prefix, &org, purpose, command_id);
        let command = make(caller.person.clone(), id.clone());
        Ok((
            id,
            self.org_command(caller, org_id, command_id, command)
                .await?,
        ))
    }

    /// Creates a team (owners and admins); returns its id.
    #[tracing::instrument(skip_all)]
    pub async fn create_team(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        name: String,
    ) -> Result<(Token, Outcome), AppError> {
        self.create(caller, org_id, command_id, ("tm", "team"), |actor, team| {
            OrgCommand::CreateTeam { actor, team, name }
        })
        .await
    }

    /// Sets a team's managers (owners and admins).
    #[tracing::instrument(skip_all)]
    pub async fn set_team_managers(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        team: &str,
        managers: &[String],
    ) -> Result<Outcome, AppError> {
        caller.scope(org_id)?;
        let managers = managers
            .iter()
            .map(|m| token("managers", m))
            .collect::<Result<_, _>>()?;
        let command = OrgCommand::SetTeamManagers {
            actor: caller.person.clone(),
            team: token("team_id", team)?,
            managers,
        };
        self.org_command(caller, org_id, command_id, command).await
    }

    /// Puts a member in a team, or in none (owners and admins).
    #[tracing::instrument(skip_all)]
    pub async fn set_member_team(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        member: &str,
        team: Option<&str>,
    ) -> Result<Outcome, AppError> {
        caller.scope(org_id)?;
        let command = OrgCommand::SetMemberTeam {
            actor: caller.person.clone(),
            member: token("person_id", member)?,
            team: team.map(|t| token("team_id", t)).transpose()?,
        };
        self.org_command(caller, org_id, command_id, command).await
    }

    /// Creates a client (owners, admins and managers); returns its id.
    #[tracing::instrument(skip_all)]
    pub async fn create_client(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        name: String,
    ) -> Result<(Token, Outcome), AppError> {
        self.create(
            caller,
            org_id,
            command_id,
            ("cl", "client"),
            |actor, client| OrgCommand::CreateClient {
                actor,
                client,
                name,
            },
        )
        .await
    }

    /// Replaces the attribution rules (owners and admins); every project and
    /// task they name must exist in this organization.
    #[tracing::instrument(skip_all)]
    pub async fn set_attribution_rules(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        rules: Vec<AttributionRule>,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let mut projects = std::collections::BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let field = format!("rules[{i}].project");
            if !projects.contains_key(&rule.project) {
                let (id, project) = self.project(&org, &field, rule.project.as_str()).await?;
                projects.insert(id, project);
            }
            if let Some(task) = &rule.task
                && !projects[&rule.project].tasks.contains_key(task)
            {
                return Err(not_found(
                    &format!("rules[{i}].task"),
                    "task in this project",
                ));
            }
        }
        let command = OrgCommand::SetAttributionRules {
            actor: caller.person.clone(),
            rules,
        };
        self.org_command(caller, org_id, command_id, command).await
    }

    /// Creates a project (owners, admins and managers); returns its id.
    #[tracing::instrument(skip_all)]
    pub async fn create_project(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        new: NewProject,
    ) -> Result<(Token, Outcome), AppError> {
        let (org, role) = self.role(caller, org_id).await?;
        let state = self.orgs.state(&org).await?;
        let client = match &new.client {
            Some(c) => {
                let c = token("client_id", c)?;
                if !state.clients.contains_key(&c) {
                    return Err(not_found("client_id", "client"));
                }
                Some(c)
            }
            None => None,
        };
        let members = Self::members(&state, "members", &new.members)?;
        let project = derived_id("pr", &org, "project", command_id);
        let command = ProjectCommand::Create {
            role,
            name: new.name,
            client,
            billable: new.billable,
            budget: new.budget,
            members,
        };
        let outcome = self
            .execute::<Project>(&org, &project, caller, command_id, command)
            .await?;
        Ok((project, outcome))
    }

    /// Adds a task to a project; returns its id.
    #[tracing::instrument(skip_all)]
    pub async fn add_task(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        project: &str,
        name: String,
    ) -> Result<(Token, Outcome), AppError> {
        let (org, role) = self.role(caller, org_id).await?;
        let (project, _) = self.project(&org, "project_id", project).await?;
        let task = derived_id("tk", &org, "task", command_id);
        let command = ProjectCommand::AddTask {
            role,
            task: task.clone(),
            name,
        };
        let outcome = self
            .execute::<Project>(&org, &project, caller, command_id, command)
            .await?;
        Ok((task, outcome))
    }

    /// Changes a project's budget, members or archived state.
    #[tracing::instrument(skip_all)]
    pub async fn change_project(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        project: &str,
        change: ProjectChange,
    ) -> Result<Outcome, AppError> {
        let (org, role) = self.role(caller, org_id).await?;
        let (project, _) = self.project(&org, "project_id", project).await?;
        let command = match change {
            ProjectChange::Budget(budget) => ProjectCommand::ChangeBudget { role, budget },
            ProjectChange::Members(members) => {
                let state = self.orgs.state(&org).await?;
                ProjectCommand::ChangeMembers {
                    role,
                    members: Self::members(&state, "members", &members)?,
                }
            }
            ProjectChange::Archive => ProjectCommand::Archive { role },
            ProjectChange::Unarchive => ProjectCommand::Unarchive { role },
        };
        self.execute::<Project>(&org, &project, caller, command_id, command)
            .await
    }

    /// Refused unless the caller is an active member who changes things:
    /// auditors change nothing, their own weeks included.
    fn may_keep_time(state: &Organization, caller: &Caller) -> Result<(), AppError> {
        match state.active_role(&caller.person) {
            Some(Role::Auditor) => Err(AppError::not_allowed("auditors change nothing")),
            Some(_) => Ok(()),
            None => Err(AppError::not_allowed(crate::NOT_YOURS)),
        }
    }

    /// The org's time zone and work week.
    fn calendar(state: &Organization) -> Result<Tz, AppError> {
        state
            .settings
            .timezone
            .parse()
            .map_err(|_| AppError::precondition("the organization's time zone is unknown"))
    }

    /// The caller's timesheet id and week bounds for the week holding `date`.
    fn sheet(
        state: &Organization,
        member: &Token,
        date: NaiveDate,
    ) -> Result<(Token, trackhrs_domain::timesheet::Week), AppError> {
        let tz = Self::calendar(state)?;
        let work_week = &state.settings.work_week;
        let id = timesheet_id(member, first_day(date, work_week))
            .ok_or_else(|| AppError::invalid("person_id", "is too long for a timesheet"))?;
        Ok((id, week_of(date, tz, work_week)))
    }

    /// The date in the org's time zone of an instant.
    fn local_date(state: &Organization, ms: i64) -> Result<NaiveDate, AppError> {
        let tz = Self::calendar(state)?;
        let at = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| AppError::invalid("start_ms", "is out of range"))?;
        Ok(at.with_timezone(&tz).date_naive())
    }

    /// Adds an entry to the caller's own week (the week holding its start);
    /// returns the entry's id.
    #[tracing::instrument(skip_all)]
    pub async fn add_entry(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        new: NewEntry,
    ) -> Result<(Token, Outcome), AppError> {
        let org = caller.scope(org_id)?;
        if !(0..=MAX_ENTRY_END_MS).contains(&new.start_ms) {
            return Err(AppError::invalid(
                "start_ms",
                "must be between 1970 and the year 9999",
            ));
        }
        if new.end_ms <= new.start_ms {
            return Err(AppError::invalid("end_ms", "must be after start_ms"));
        }
        if new.end_ms - new.start_ms > MAX_ENTRY_MS {
            return Err(AppError::invalid(
                "end_ms",
                "an entry lasts at most 24 hours",
            ));
        }
        if let Some(note) = &new.note {
            check_note("note", note)?;
        }
        let state = self.orgs.state(&org).await?;
        Self::may_keep_time(&state, caller)?;
        let (project_id, project) = self.project(&org, "project_id", &new.project).await?;
        let task = token("task_id", &new.task)?;
        if !project.tasks.contains_key(&task) {
            return Err(not_found("task_id", "task in this project"));
        }
        let date = Self::local_date(&state, new.start_ms)?;
        let (sheet, week) = Self::sheet(&state, &caller.person, date)?;
        let id = derived_id("en", &org, "entry", command_id);
        let command = TimesheetCommand::AddEntry {
            actor: caller.person.clone(),
            member: caller.person.clone(),
            week,
            id: id.clone(),
            entry: Entry {
                kind: new.kind,
                task: TaskRef {
                    project: project_id,
                    task,
                },
                start_ms: new.start_ms,
                end_ms: new.end_ms,
            },
            project: Bookable {
                active: !project.archived,
                member_allowed: project.bookable_by(&caller.person),
            },
            note: new.note,
        };
        let outcome = self
            .execute::<Timesheet>(&org, &sheet, caller, command_id, command)
            .await?;
        Ok((id, outcome))
    }

    /// Removes an entry from the caller's week holding `date`.
    #[tracing::instrument(skip_all)]
    pub async fn remove_entry(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        date: NaiveDate,
        entry: &str,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let state = self.orgs.state(&org).await?;
        Self::may_keep_time(&state, caller)?;
        let (sheet, _) = Self::sheet(&state, &caller.person, date)?;
        let command = TimesheetCommand::RemoveEntry {
            actor: caller.person.clone(),
            id: token("entry_id", entry)?,
        };
        self.execute::<Timesheet>(&org, &sheet, caller, command_id, command)
            .await
    }

    /// Submits the caller's week holding `date` for approval.
    #[tracing::instrument(skip_all)]
    pub async fn submit_week(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        date: NaiveDate,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let state = self.orgs.state(&org).await?;
        Self::may_keep_time(&state, caller)?;
        let (sheet, week) = Self::sheet(&state, &caller.person, date)?;
        let command = TimesheetCommand::Submit {
            actor: caller.person.clone(),
            member: caller.person.clone(),
            week,
        };
        self.execute::<Timesheet>(&org, &sheet, caller, command_id, command)
            .await
    }

    /// Decides on `member`'s week holding `date`: approve or reject a
    /// submitted week (a manager of the member's team, or an admin), or
    /// reopen an approved one (owners and admins).
    #[tracing::instrument(skip_all)]
    pub async fn decide_week(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        member: &str,
        date: NaiveDate,
        decision: Decision,
    ) -> Result<Outcome, AppError> {
        let org = caller.scope(org_id)?;
        let member = token("person_id", member)?;
        let state = self.orgs.state(&org).await?;
        if !state.members.contains_key(&member) {
            return Err(not_found("person_id", "member"));
        }
        let (sheet, _) = Self::sheet(&state, &member, date)?;
        let actor = caller.person.clone();
        let may_approve = state.may_approve(&actor, &member);
        let command = match decision {
            Decision::Approve { comment } => {
                if let Some(c) = &comment {
                    check_note("comment", c)?;
                }
                TimesheetCommand::Approve {
                    actor,
                    may_approve,
                    comment,
                }
            }
            Decision::Reject { comment } => {
                check_note("comment", &comment)?;
                TimesheetCommand::Reject {
                    actor,
                    may_approve,
                    comment,
                }
            }
            Decision::Reopen { reason } => {
                check_note("reason", &reason)?;
                TimesheetCommand::Reopen {
                    is_admin: matches!(state.active_role(&actor), Some(Role::Owner | Role::Admin)),
                    actor,
                    reason,
                }
            }
        };
        self.execute::<Timesheet>(&org, &sheet, caller, command_id, command)
            .await
    }

    /// The work read model after `min_position`, the caller's scope of
    /// `read` in it, and the members that scope covers.
    async fn model(
        &self,
        caller: &Caller,
        org_id: &str,
        read: Read,
        min_position: u64,
    ) -> Result<(Token, ReadModel, Option<Vec<String>>), AppError> {
        let org = caller.scope(org_id)?;
        let scope = self.reads.authorize(caller, read).await?;
        let members = self.orgs.visible(caller, &org, scope).await?;
        let model = self.reads.read_model(model::NAME, min_position).await?;
        Ok((org, model, members))
    }

    /// Teams, clients, projects and the attribution rules: every member
    /// sees them (they book time on the projects).
    #[tracing::instrument(skip_all)]
    pub async fn catalog(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<AtPosition<Catalog>, AppError> {
        let (org, m, _) = self
            .model(caller, org_id, Read::Projects, min_position)
            .await?;
        let (teams, clients, projects) = (
            model::teams(&m.client, &m.schema, org.as_str()).await?,
            model::clients(&m.client, &m.schema, org.as_str()).await?,
            model::projects(&m.client, &m.schema, org.as_str()).await?,
        );
        let state = self.orgs.cached_state(&org).await?;
        Ok(AtPosition {
            value: Catalog {
                teams,
                clients,
                projects,
                rules: (state.attribution_version, state.attribution.clone()),
            },
            position: m.position,
        })
    }

    /// Project time per project, task, member and day in `[from, to]`
    /// (days in the org's time zone), of the members the caller may see.
    #[tracing::instrument(skip_all)]
    pub async fn project_time(
        &self,
        caller: &Caller,
        org_id: &str,
        (from, to): (NaiveDate, NaiveDate),
        min_position: u64,
    ) -> Result<AtPosition<Vec<ProjectTime>>, AppError> {
        caller.scope(org_id)?;
        check_range(from, to)?;
        let (org, m, members) = self
            .model(caller, org_id, Read::ProjectTime, min_position)
            .await?;
        let rows =
            model::project_time(&m.client, &m.schema, org.as_str(), from, to, members).await?;
        Ok(AtPosition {
            value: rows,
            position: m.position,
        })
    }

    /// Streams the same rows as [`Work::project_time`] to `sink` one at a
    /// time (an export never holds the whole range in memory); returns how
    /// many.
    #[tracing::instrument(skip_all)]
    pub async fn export_project_time<F, Fut>(
        &self,
        caller: &Caller,
        org_id: &str,
        (from, to): (NaiveDate, NaiveDate),
        sink: F,
    ) -> Result<u64, AppError>
    where
        F: FnMut(ProjectTime) -> Fut,
        Fut: Future<Output = Result<(), AppError>>,
    {
        caller.scope(org_id)?;
        check_range(from, to)?;
        let (org, m, members) = self.model(caller, org_id, Read::ProjectTime, 0).await?;
        let rows =
            model::project_time_stream(&m.client, &m.schema, org.as_str(), from, to, members)
                .await?;
        drain(rows, sink).await
    }

    /// Streams the weeks starting in `[from, to]` of the members the caller
    /// may see to `sink`, one at a time; returns how many.
    #[tracing::instrument(skip_all)]
    pub async fn export_weeks<F, Fut>(
        &self,
        caller: &Caller,
        org_id: &str,
        (from, to): (NaiveDate, NaiveDate),
        sink: F,
    ) -> Result<u64, AppError>
    where
        F: FnMut(WeekRow) -> Fut,
        Fut: Future<Output = Result<(), AppError>>,
    {
        caller.scope(org_id)?;
        check_range(from, to)?;
        let (org, m, members) = self.model(caller, org_id, Read::Timesheets, 0).await?;
        let rows =
            model::weeks_stream(&m.client, &m.schema, org.as_str(), (from, to), members).await?;
        drain(rows, sink).await
    }

    /// `person`'s week holding `date`: the caller's own, or one of a member
    /// they may see.
    #[tracing::instrument(skip_all)]
    pub async fn week(
        &self,
        caller: &Caller,
        org_id: &str,
        person: &str,
        date: NaiveDate,
        min_position: u64,
    ) -> Result<AtPosition<Week>, AppError> {
        caller.scope(org_id)?;
        let person = token("person_id", person)?;
        let (org, m, members) = self
            .model(caller, org_id, Read::Timesheets, min_position)
            .await?;
        if members.is_some_and(|m| !m.iter().any(|p| p == person.as_str())) {
            return Err(AppError::not_allowed(crate::NOT_YOURS));
        }
        let state = self.orgs.cached_state(&org).await?;
        let tz = Self::calendar(&state)?;
        let first = first_day(date, &state.settings.work_week);
        let bounds = week_of(date, tz, &state.settings.work_week);
        let view =
            model::week_view(&m.client, &m.schema, org.as_str(), person.as_str(), first).await?;
        Ok(AtPosition {
            value: Week {
                person,
                first_day: first,
                bounds,
                view,
            },
            position: m.position,
        })
    }

    /// The weeks holding `date` of the members the caller may see.
    #[tracing::instrument(skip_all)]
    pub async fn team_weeks(
        &self,
        caller: &Caller,
        org_id: &str,
        date: NaiveDate,
        min_position: u64,
    ) -> Result<AtPosition<Vec<WeekRow>>, AppError> {
        let (org, m, members) = self
            .model(caller, org_id, Read::Timesheets, min_position)
            .await?;
        let state = self.orgs.cached_state(&org).await?;
        let first = first_day(date, &state.settings.work_week);
        let rows = model::weeks(&m.client, &m.schema, org.as_str(), first, members).await?;
        Ok(AtPosition {
            value: rows,
            position: m.position,
        })
    }

    /// The approvals queue of the caller: submitted weeks, and approved
    /// weeks with time that arrived after the approval, of the members they
    /// decide on (their own excluded).
    #[tracing::instrument(skip_all)]
    pub async fn approvals(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<AtPosition<Vec<WeekRow>>, AppError> {
        let (org, m, members) = self
            .model(caller, org_id, Read::Approvals, min_position)
            .await?;
        let mut rows = model::approvals(&m.client, &m.schema, org.as_str(), members).await?;
        rows.retain(|w| w.person_id != caller.person.as_str());
        Ok(AtPosition {
            value: rows,
            position: m.position,
        })
    }

    /// The time a change to attribution rules `version` moved, per project.
    #[tracing::instrument(skip_all)]
    pub async fn moved(
        &self,
        caller: &Caller,
        org_id: &str,
        version: u32,
        min_position: u64,
    ) -> Result<AtPosition<Vec<Moved>>, AppError> {
        let (org, m, _) = self
            .model(caller, org_id, Read::Projects, min_position)
            .await?;
        let rows = model::moved(&m.client, &m.schema, org.as_str(), version).await?;
        Ok(AtPosition {
            value: rows,
            position: m.position,
        })
    }

    /// Tells each of `org`'s projects with a budget in hours, or with marks
    /// recorded, the time booked on it now (the budget policy); the
    /// aggregate records the marks crossed and clears those fallen back
    /// below (or left without a budget). The command id names the read
    /// model's position, so a replica repeating a check gets the stored
    /// answer and a later check is decided again.
    pub(crate) async fn record_budgets(&self, org: &str) -> Result<(), AppError> {
        let org = token("org_id", org)?;
        let m = self.reads.read_model(model::NAME, 0).await?;
        let booked = model::budgeted_time(&m.client, &m.schema, org.as_str()).await?;
        let position = m.position;
        drop(m);
        for (project, booked_ms) in booked {
            let project = token("project_id", &project)?;
            let command = ProjectCommand::RecordBookedTime { booked_ms };
            let meta = crate::request::stamp(
                CommitMeta::new(
                    format!("budget-{project}-{position}"),
                    "system:budget",
                    now_micros(),
                )
                .with_request_digest(digest_hex(format!("{command:?}").as_bytes())),
            );
            match self
                .orgs
                .handler()
                .execute::<Project>(&org, &project, command, &meta)
                .await
            {
                // A conflict: another replica's check was decided first.
                Ok(_) | Err(CommandError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
