//! The work read model: teams, clients, projects and tasks; each member's
//! weeks with their entries and decisions (the week view, the approvals
//! queue); and project time per project, task, member and day, computed
//! from observed activity, the attribution rules and the members' entries
//! (see [`compute`]).
//!
//! New activity adds its time to its week's rows (time is additive over
//! spans, given the week's entries); a change to a week's entries or
//! decision computes that week again from its rows. Both happen in the
//! batch's transaction, with the checkpoint, so the numbers are those of a
//! clean pass whatever the batches were. A change of attribution rules computes every
//! week of the org that is not approved again (an approved week keeps the
//! rules it was approved under) and records, per project, the time that
//! moved. A week is bounded in the org's time zone and work week as they
//! were when the activity was applied (`trackhrs_domain::week`).
//!
//! Time the employee withdrew on a device (`TimeRetracted`) is cut out of
//! that device's span rows and its weeks are computed again, approved weeks
//! included: withdrawn time leaves the totals it was in.

mod compute;
mod decode;
mod queries;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use tokio_postgres::Transaction;
use trackhrs_domain::attribution::{Attribution, AttributionRule};
use trackhrs_domain::organization::{OrgEvent, Settings};
use trackhrs_domain::project::ProjectEvent;
use trackhrs_domain::timesheet::{EntryKind, TimesheetEvent};
use trackhrs_domain::week::{first_day, week_of};
use trackhrs_nats::{KeyStore, StoreError, TypedCommit};

use self::compute::{Span, WeekEntry, span_totals, week_totals};
pub use self::decode::WorkCommit;
pub use self::queries::*;
use crate::activity::{Activities, DeviceBatch, activity_id};
use crate::error::ApplyError;
use crate::projection::{Committed, Projection, SchemaVersions};
use crate::withdrawn::Withdrawn;

/// Its name in the catalog.
pub const NAME: &str = "work";

/// Version of this projection's tables and of what its rows mean.
pub const SCHEMA_VERSION: u32 = 2;

/// The first schema version whose span rows name their device. An older
/// live version is applied to without it (and without retractions) while
/// its replacement is built beside it.
pub const DEVICE_SINCE: u32 = 2;

/// The work projection.
#[derive(Clone)]
pub struct Work {
    version: u32,
    /// Compiled attribution rules per (org, version): a version's rules
    /// never change.
    rules: moka::sync::Cache<(String, u32), Arc<Attribution>>,
    schemas: SchemaVersions,
}

impl Work {
    /// The projection as catalog version `version`.
    pub fn new(version: u32) -> Self {
        Self {
            version,
            rules: moka::sync::Cache::new(10_000),
            schemas: SchemaVersions::new(),
        }
    }
}

/// What the projection keeps per org.
#[derive(Debug, Clone, Default)]
struct OrgState {
    settings: Settings,
    rules_version: u32,
    changed: bool,
    /// The rules changed in this batch: every open week is computed again.
    rules_changed: bool,
    position: u64,
}

impl OrgState {
    fn tz(&self) -> Tz {
        self.settings.timezone.parse().unwrap_or(Tz::UTC)
    }

    /// The first day and bounds of the week holding `ms`.
    fn week_at(&self, ms: i64) -> (NaiveDate, i64, i64) {
        let tz = self.tz();
        let date = DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&tz)
            .date_naive();
        let week = week_of(date, tz, &self.settings.work_week);
        (
            first_day(date, &self.settings.work_week),
            week.start_ms,
            week.end_ms,
        )
    }
}

/// A (org, member, week's first day).
type WeekKey = (String, String, NaiveDate);

/// A week's bounds.
type Bounds = (i64, i64);

/// Rows the batch adds, written with a few multi-row statements.
#[derive(Default)]
struct Pending {
    activities: Activities,
    /// New spans by week, with their device: their time is added to the
    /// week's rows.
    spans: BTreeMap<WeekKey, Vec<(Span, Arc<str>)>>,
    /// Time withdrawn, per device.
    withdrawn: Withdrawn,
    /// The member of each (org, device) that withdrew time.
    owners: BTreeMap<(String, String), String>,
    /// The bounds of the weeks the new spans fall in.
    bounds: BTreeMap<WeekKey, Bounds>,
    /// Weeks whose entries, decision or rules changed: computed again from
    /// their rows.
    recompute: BTreeSet<WeekKey>,
    erased: Vec<(String, String)>,
}

/// The member and the week's first day of a timesheet's aggregate id
/// (`<member>-<yyyy-mm-dd>`).
fn timesheet_key(aggregate_id: &str) -> Option<(&str, NaiveDate)> {
    let split = aggregate_id.len().checked_sub(11)?;
    let (member, date) = (aggregate_id.get(..split)?, aggregate_id.get(split + 1..)?);
    Some((member, date.parse().ok()?))
}

impl Projection for Work {
    type Commit = WorkCommit;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<WorkCommit, StoreError> {
        decode::decode(keys, subject, sequence, bytes).await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        decode::subjects()
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.meta (schema_version integer NOT NULL);
             INSERT INTO {schema}.meta VALUES ({SCHEMA_VERSION});
             CREATE TABLE {schema}.org_state (
                 org_id        text PRIMARY KEY,
                 settings      jsonb NOT NULL,
                 rules_version integer NOT NULL,
                 position      bigint NOT NULL
             );
             CREATE TABLE {schema}.rules (
                 org_id  text NOT NULL,
                 version integer NOT NULL,
                 rules   jsonb NOT NULL,
                 PRIMARY KEY (org_id, version)
             );
             CREATE TABLE {schema}.teams (
                 org_id   text NOT NULL,
                 team_id  text NOT NULL,
                 name     text NOT NULL,
                 managers text[] NOT NULL DEFAULT '{{}}',
                 PRIMARY KEY (org_id, team_id)
             );
             CREATE TABLE {schema}.member_teams (
                 org_id    text NOT NULL,
                 person_id text NOT NULL,
                 team_id   text NOT NULL,
                 PRIMARY KEY (org_id, person_id)
             );
             CREATE TABLE {schema}.clients (
                 org_id    text NOT NULL,
                 client_id text NOT NULL,
                 name      text NOT NULL,
                 PRIMARY KEY (org_id, client_id)
             );
             CREATE TABLE {schema}.projects (
                 org_id       text NOT NULL,
                 project_id   text NOT NULL,
                 name         text NOT NULL,
                 client_id    text,
                 billable     boolean NOT NULL,
                 budget_hours integer,
                 budget_money bigint,
                 rate_money   bigint,
                 archived     boolean NOT NULL DEFAULT false,
                 members      text[] NOT NULL,
                 marks        integer[] NOT NULL DEFAULT '{{}}',
                 PRIMARY KEY (org_id, project_id)
             );
             CREATE TABLE {schema}.tasks (
                 org_id     text NOT NULL,
                 project_id text NOT NULL,
                 task_id    text NOT NULL,
                 name       text NOT NULL,
                 PRIMARY KEY (org_id, project_id, task_id)
             );
             CREATE TABLE {schema}.activities (
                 org_id      text NOT NULL,
                 activity_id bigint NOT NULL,
                 app         text NOT NULL,
                 title       text,
                 url         text,
                 span_rows   bigint NOT NULL DEFAULT 0,
                 PRIMARY KEY (org_id, activity_id)
             );
             CREATE TABLE {schema}.spans (
                 org_id      text NOT NULL,
                 device_id   text NOT NULL,
                 person_id   text NOT NULL,
                 week_start  date NOT NULL,
                 start_ms    bigint NOT NULL,
                 end_ms      bigint NOT NULL,
                 activity_id bigint NOT NULL,
                 position    bigint NOT NULL
             );
             CREATE INDEX ON {schema}.spans (org_id, person_id, week_start);
             CREATE TABLE {schema}.weeks (
                 org_id            text NOT NULL,
                 person_id         text NOT NULL,
                 week_start        date NOT NULL,
                 start_ms          bigint NOT NULL,
                 end_ms            bigint NOT NULL,
                 status            text NOT NULL DEFAULT 'open',
                 submitted_at      bigint,
                 decided_by        text,
                 decided_at        bigint,
                 decision          text,
                 comment           text,
                 approved_position bigint,
                 approved_rules    integer,
                 timezone          text NOT NULL,
                 PRIMARY KEY (org_id, person_id, week_start)
             );
             CREATE INDEX ON {schema}.weeks (org_id, status);
             CREATE TABLE {schema}.entries (
                 org_id     text NOT NULL,
                 person_id  text NOT NULL,
                 week_start date NOT NULL,
                 entry_id   text NOT NULL,
                 kind       text NOT NULL,
                 project_id text NOT NULL,
                 task_id    text NOT NULL,
                 start_ms   bigint NOT NULL,
                 end_ms     bigint NOT NULL,
                 note       text,
                 PRIMARY KEY (org_id, person_id, week_start, entry_id)
             );
             CREATE TABLE {schema}.time (
                 org_id     text NOT NULL,
                 person_id  text NOT NULL,
                 week_start date NOT NULL,
                 day        date NOT NULL,
                 project_id text NOT NULL,
                 task_id    text NOT NULL,
                 source     text NOT NULL,
                 ms         bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id, week_start, day, project_id, task_id, source)
             );
             CREATE INDEX ON {schema}.time (org_id, day);
             CREATE TABLE {schema}.moved (
                 org_id        text NOT NULL,
                 rules_version integer NOT NULL,
                 project_id    text NOT NULL,
                 before_ms     bigint NOT NULL,
                 after_ms      bigint NOT NULL,
                 PRIMARY KEY (org_id, rules_version, project_id)
             );"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[WorkCommit],
    ) -> Result<(), ApplyError> {
        // An organization's commit (its calendar, its rules) or an erasure
        // changes how the commits after it count: each is applied on its
        // own, in stream order, so the rows and the time a rules change
        // moved are those of applying one commit at a time.
        let mut start = 0;
        for (i, commit) in batch.iter().enumerate() {
            if matches!(commit, WorkCommit::Org(_) | WorkCommit::Erasure(_)) {
                if start < i {
                    self.apply_part(tx, schema, &batch[start..i]).await?;
                }
                self.apply_part(tx, schema, &batch[i..=i]).await?;
                start = i + 1;
            }
        }
        if start < batch.len() {
            self.apply_part(tx, schema, &batch[start..]).await?;
        }
        Ok(())
    }
}

impl Work {
    /// Applies commits of which at most one is an organization's commit or
    /// an erasure, and then it is alone.
    async fn apply_part(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[WorkCommit],
    ) -> Result<(), ApplyError> {
        let orgs: BTreeSet<&str> = batch.iter().map(|c| c.org_id()).collect();
        let mut states = load_org_states(tx, schema, &orgs).await?;
        let with_devices = self.schemas.of(tx, schema).await? >= DEVICE_SINCE;
        let mut pending = Pending::default();
        for commit in batch {
            match commit {
                WorkCommit::Org(c) => apply_org(tx, schema, c, &mut states).await?,
                WorkCommit::Project(c) => apply_project(tx, schema, c).await?,
                WorkCommit::Timesheet(c) => {
                    let state = states.entry(c.org_id.clone()).or_default();
                    apply_timesheet(tx, schema, c, state, &mut pending).await?;
                }
                WorkCommit::Device(b) => {
                    let state = states.entry(b.org_id.clone()).or_default();
                    collect_spans(b, state, &mut pending);
                    if with_devices && let Some(member) = &b.member {
                        if !b.retracted.is_empty() {
                            let key = (b.org_id.clone(), b.device_id.clone());
                            pending.owners.insert(key, member.clone());
                        }
                        for &(from, to) in &b.retracted {
                            let device = (b.org_id.as_str(), b.device_id.as_str());
                            pending.withdrawn.add(device, from, to, b.stream_sequence);
                        }
                    }
                }
                WorkCommit::Erasure(c) => pending
                    .erased
                    .extend(crate::erasure::erased(c).map(|p| (c.org_id.clone(), p.to_owned()))),
            }
        }
        save_org_states(tx, schema, &states).await?;
        write_activities_and_spans(tx, schema, &pending, &states, with_devices).await?;
        retract(tx, schema, &mut pending).await?;
        let rules_changed: Vec<(&String, &OrgState)> =
            states.iter().filter(|(_, s)| s.rules_changed).collect();
        let mut before = HashMap::new();
        for (org, _) in &rules_changed {
            before.insert(org.as_str(), project_totals(tx, schema, org).await?);
            let open = tx
                .query(
                    &format!(
                        "SELECT DISTINCT s.person_id, s.week_start FROM {schema}.spans s \
                         LEFT JOIN {schema}.weeks w USING (org_id, person_id, week_start) \
                         WHERE s.org_id = $1 AND (w.status IS NULL OR w.status <> 'approved')"
                    ),
                    &[org],
                )
                .await?;
            for row in open {
                pending
                    .recompute
                    .insert(((*org).clone(), row.get(0), row.get(1)));
            }
        }
        self.compute_weeks(tx, schema, &states, &pending.recompute)
            .await?;
        self.add_spans(tx, schema, &states, &pending).await?;
        for (org, state) in &rules_changed {
            let after = project_totals(tx, schema, org).await?;
            record_moved(
                tx,
                schema,
                org,
                state.rules_version,
                &before[org.as_str()],
                &after,
            )
            .await?;
        }
        for (org, person) in &pending.erased {
            erase(tx, schema, org, person).await?;
        }
        Ok(())
    }
}

async fn load_org_states(
    tx: &Transaction<'_>,
    schema: &str,
    orgs: &BTreeSet<&str>,
) -> Result<HashMap<String, OrgState>, ApplyError> {
    let ids: Vec<&str> = orgs.iter().copied().collect();
    let rows = tx
        .query(
            &format!(
                "SELECT org_id, settings, rules_version, position FROM {schema}.org_state \
                 WHERE org_id = ANY($1)"
            ),
            &[&ids],
        )
        .await?;
    let mut states = HashMap::new();
    for row in rows {
        states.insert(
            row.get::<_, String>(0),
            OrgState {
                settings: serde_json::from_value(row.get(1)).unwrap_or_default(),
                rules_version: row.get::<_, i32>(2) as u32,
                position: row.get::<_, i64>(3) as u64,
                ..OrgState::default()
            },
        );
    }
    for org in orgs {
        states.entry((*org).to_owned()).or_insert_with(|| OrgState {
            changed: true,
            ..OrgState::default()
        });
    }
    Ok(states)
}

async fn save_org_states(
    tx: &Transaction<'_>,
    schema: &str,
    states: &HashMap<String, OrgState>,
) -> Result<(), ApplyError> {
    for (org, state) in states.iter().filter(|(_, s)| s.changed) {
        let settings = serde_json::to_value(&state.settings).unwrap_or_default();
        tx.execute(
            &format!(
                "INSERT INTO {schema}.org_state (org_id, settings, rules_version, position) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (org_id) DO UPDATE SET \
                 settings = EXCLUDED.settings, rules_version = EXCLUDED.rules_version, \
                 position = EXCLUDED.position"
            ),
            &[
                org,
                &settings,
                &(state.rules_version as i32),
                &(state.position as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

/// An org's commit: its calendar, teams, clients and attribution rules.
async fn apply_org(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &TypedCommit<OrgEvent>,
    states: &mut HashMap<String, OrgState>,
) -> Result<(), ApplyError> {
    let org = commit.org_id.as_str();
    let state = states.entry(org.to_owned()).or_default();
    if commit.stream_sequence <= state.position {
        return Ok(());
    }
    state.position = commit.stream_sequence;
    state.changed = true;
    for event in &commit.events {
        match event {
            OrgEvent::SettingsChanged { settings } => state.settings.clone_from(settings),
            OrgEvent::TeamCreated { team, name } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.teams (org_id, team_id, name) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&org, &team.as_str(), name],
                )
                .await?;
            }
            OrgEvent::TeamManagersChanged { team, managers } => {
                let managers: Vec<&str> = managers.iter().map(|m| m.as_str()).collect();
                tx.execute(
                    &format!(
                        "UPDATE {schema}.teams SET managers = $3 WHERE org_id = $1 AND team_id = $2"
                    ),
                    &[&org, &team.as_str(), &managers],
                )
                .await?;
            }
            OrgEvent::MemberTeamChanged { member, team } => {
                tx.execute(
                    &format!(
                        "DELETE FROM {schema}.member_teams WHERE org_id = $1 AND person_id = $2"
                    ),
                    &[&org, &member.as_str()],
                )
                .await?;
                if let Some(team) = team {
                    tx.execute(
                        &format!(
                            "INSERT INTO {schema}.member_teams (org_id, person_id, team_id) \
                             VALUES ($1, $2, $3)"
                        ),
                        &[&org, &member.as_str(), &team.as_str()],
                    )
                    .await?;
                }
            }
            OrgEvent::ClientCreated { client, name } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.clients (org_id, client_id, name) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&org, &client.as_str(), name],
                )
                .await?;
            }
            OrgEvent::AttributionRulesChanged { version, rules } => {
                let json = serde_json::to_value(rules).unwrap_or_default();
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.rules (org_id, version, rules) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&org, &(*version as i32), &json],
                )
                .await?;
                state.rules_version = *version;
                state.rules_changed = true;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A project's commit.
async fn apply_project(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &TypedCommit<ProjectEvent>,
) -> Result<(), ApplyError> {
    let (org, project) = (commit.org_id.as_str(), commit.aggregate_id.as_str());
    for event in &commit.events {
        let set = |assignments: &str| {
            format!(
                "UPDATE {schema}.projects SET {assignments} WHERE org_id = $1 AND project_id = $2"
            )
        };
        match event {
            ProjectEvent::ProjectCreated {
                name,
                client,
                billable,
                budget,
                members,
            } => {
                let members: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.projects (org_id, project_id, name, client_id, \
                         billable, budget_hours, budget_money, rate_money, members) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &org,
                        &project,
                        name,
                        &client.as_ref().map(|c| c.as_str()),
                        billable,
                        &budget.hours.map(|h| h as i32),
                        &budget.money_minor,
                        &budget.rate_minor,
                        &members,
                    ],
                )
                .await?;
            }
            ProjectEvent::TaskAdded { task, name } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.tasks (org_id, project_id, task_id, name) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
                    ),
                    &[&org, &project, &task.as_str(), name],
                )
                .await?;
            }
            ProjectEvent::BudgetChanged { budget } => {
                tx.execute(
                    &set("budget_hours = $3, budget_money = $4, rate_money = $5"),
                    &[
                        &org,
                        &project,
                        &budget.hours.map(|h| h as i32),
                        &budget.money_minor,
                        &budget.rate_minor,
                    ],
                )
                .await?;
            }
            ProjectEvent::ProjectMembersChanged { members } => {
                let members: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
                tx.execute(&set("members = $3"), &[&org, &project, &members])
                    .await?;
            }
            ProjectEvent::ProjectArchived => {
                tx.execute(&set("archived = true"), &[&org, &project])
                    .await?;
            }
            ProjectEvent::ProjectUnarchived => {
                tx.execute(&set("archived = false"), &[&org, &project])
                    .await?;
            }
            ProjectEvent::BudgetMarkCrossed { percent, .. } => {
                tx.execute(
                    &set("marks = array_append(array_remove(marks, $3), $3)"),
                    &[&org, &project, &(*percent as i32)],
                )
                .await?;
            }
            ProjectEvent::BudgetMarkCleared { percent } => {
                tx.execute(
                    &set("marks = array_remove(marks, $3)"),
                    &[&org, &project, &(*percent as i32)],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// A timesheet's commit: its entries and decisions.
async fn apply_timesheet(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &TypedCommit<TimesheetEvent>,
    state: &OrgState,
    pending: &mut Pending,
) -> Result<(), ApplyError> {
    let org = commit.org_id.as_str();
    let Some((member, first)) = timesheet_key(&commit.aggregate_id) else {
        return Err(crate::error::poison_at(
            commit.stream_sequence,
            "a timesheet id that is not <member>-<yyyy-mm-dd>",
        ));
    };
    let at_ms = commit.recorded_at_micros / 1000;
    let key: WeekKey = (org.to_owned(), member.to_owned(), first);
    let decide = |status: &str, decision: &str| {
        format!(
            "UPDATE {schema}.weeks SET status = '{status}', decision = '{decision}', \
             decided_by = $4, decided_at = $5, comment = $6 \
             WHERE org_id = $1 AND person_id = $2 AND week_start = $3"
        )
    };
    for event in &commit.events {
        match event {
            TimesheetEvent::EntryAdded {
                week,
                id,
                entry,
                note,
                ..
            } => {
                ensure_week(
                    tx,
                    schema,
                    &key,
                    (week.start_ms, week.end_ms),
                    &state.settings.timezone,
                )
                .await?;
                let kind = match entry.kind {
                    EntryKind::Manual => "manual",
                    EntryKind::Assignment => "assignment",
                };
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.entries (org_id, person_id, week_start, entry_id, \
                         kind, project_id, task_id, start_ms, end_ms, note) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &org,
                        &member,
                        &first,
                        &id.as_str(),
                        &kind,
                        &entry.task.project.as_str(),
                        &entry.task.task.as_str(),
                        &entry.start_ms,
                        &entry.end_ms,
                        &note.as_ref().and_then(|n| n.value()),
                    ],
                )
                .await?;
            }
            TimesheetEvent::EntryRemoved { id } => {
                tx.execute(
                    &format!(
                        "DELETE FROM {schema}.entries WHERE org_id = $1 AND person_id = $2 \
                         AND week_start = $3 AND entry_id = $4"
                    ),
                    &[&org, &member, &first, &id.as_str()],
                )
                .await?;
            }
            TimesheetEvent::WeekSubmitted { week, .. } => {
                ensure_week(
                    tx,
                    schema,
                    &key,
                    (week.start_ms, week.end_ms),
                    &state.settings.timezone,
                )
                .await?;
                tx.execute(
                    &format!(
                        "UPDATE {schema}.weeks SET status = 'submitted', submitted_at = $4, \
                         decision = NULL, decided_by = NULL, decided_at = NULL, comment = NULL \
                         WHERE org_id = $1 AND person_id = $2 AND week_start = $3"
                    ),
                    &[&org, &member, &first, &at_ms],
                )
                .await?;
            }
            TimesheetEvent::WeekApproved { by, comment } => {
                tx.execute(
                    &decide("approved", "approved"),
                    &[
                        &org,
                        &member,
                        &first,
                        &by.as_str(),
                        &at_ms,
                        &comment.as_ref().and_then(|c| c.value()),
                    ],
                )
                .await?;
                tx.execute(
                    &format!(
                        "UPDATE {schema}.weeks SET approved_position = $4, approved_rules = $5 \
                         WHERE org_id = $1 AND person_id = $2 AND week_start = $3"
                    ),
                    &[
                        &org,
                        &member,
                        &first,
                        &(commit.stream_sequence as i64),
                        &(state.rules_version as i32),
                    ],
                )
                .await?;
            }
            TimesheetEvent::WeekRejected { by, comment } => {
                tx.execute(
                    &decide("open", "rejected"),
                    &[
                        &org,
                        &member,
                        &first,
                        &by.as_str(),
                        &at_ms,
                        &comment.value(),
                    ],
                )
                .await?;
            }
            TimesheetEvent::WeekReopened { by, reason } => {
                tx.execute(
                    &decide("open", "reopened"),
                    &[&org, &member, &first, &by.as_str(), &at_ms, &reason.value()],
                )
                .await?;
                tx.execute(
                    &format!(
                        "UPDATE {schema}.weeks SET approved_position = NULL, approved_rules = NULL \
                         WHERE org_id = $1 AND person_id = $2 AND week_start = $3"
                    ),
                    &[&org, &member, &first],
                )
                .await?;
            }
        }
    }
    pending.recompute.insert(key);
    Ok(())
}

/// Creates the row of a week that has none yet, with the org's time zone
/// now: its days are counted in that zone for good.
async fn ensure_week(
    tx: &Transaction<'_>,
    schema: &str,
    (org, member, first): &WeekKey,
    (start, end): Bounds,
    timezone: &str,
) -> Result<(), ApplyError> {
    tx.execute(
        &format!(
            "INSERT INTO {schema}.weeks (org_id, person_id, week_start, start_ms, end_ms, timezone) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
        ),
        &[org, member, first, &start, &end, &timezone],
    )
    .await?;
    Ok(())
}

/// A device batch's active spans, cut at the week boundaries of the org's
/// calendar.
fn collect_spans(batch: &DeviceBatch, state: &OrgState, pending: &mut Pending) {
    let Some(member) = &batch.member else {
        return;
    };
    let mut ids: HashMap<(&str, Option<&str>, Option<&str>), i64> = HashMap::new();
    let device: Arc<str> = batch.device_id.as_str().into();
    for span in batch
        .spans
        .iter()
        .filter(|s| s.active && s.end_ms > s.start_ms)
    {
        let (app, title, url) = (
            span.app.as_str(),
            span.title.as_deref(),
            span.url.as_deref(),
        );
        let id = *ids
            .entry((app, title, url))
            .or_insert_with(|| activity_id(app, title, url));
        let mut cursor = span.start_ms;
        while cursor < span.end_ms {
            let (first, start, end) = state.week_at(cursor);
            let piece_end = span.end_ms.min(end.max(cursor + 1));
            let key: WeekKey = (batch.org_id.clone(), member.clone(), first);
            pending.bounds.insert(key.clone(), (start, end));
            let span = Span {
                start_ms: cursor,
                end_ms: piece_end,
                activity: id,
                position: batch.stream_sequence,
            };
            pending
                .spans
                .entry(key)
                .or_default()
                .push((span, device.clone()));
            cursor = piece_end;
        }
    }
    for ((app, title, url), id) in ids {
        pending
            .activities
            .entry((batch.org_id.clone(), id))
            .or_insert_with(|| {
                (
                    app.to_owned(),
                    title.map(str::to_owned),
                    url.map(str::to_owned),
                )
            });
    }
}

async fn write_activities_and_spans(
    tx: &Transaction<'_>,
    schema: &str,
    pending: &Pending,
    states: &HashMap<String, OrgState>,
    with_devices: bool,
) -> Result<(), ApplyError> {
    if !pending.activities.is_empty() {
        let mut orgs = Vec::new();
        let mut ids = Vec::new();
        let mut apps = Vec::new();
        let mut titles = Vec::new();
        let mut urls = Vec::new();
        for ((org, id), (app, title, url)) in &pending.activities {
            orgs.push(org.as_str());
            ids.push(*id);
            apps.push(app.as_str());
            titles.push(title.as_deref());
            urls.push(url.as_deref());
        }
        if with_devices {
            // How many span rows refer to each: an activity no row refers
            // to any more (its time withdrawn) is dropped.
            let mut rows: HashMap<(&str, i64), i64> = HashMap::new();
            for ((org, _, _), spans) in &pending.spans {
                for (span, _) in spans {
                    *rows.entry((org.as_str(), span.activity)).or_default() += 1;
                }
            }
            let rows: Vec<i64> = orgs
                .iter()
                .zip(&ids)
                .map(|(org, id)| rows.get(&(*org, *id)).copied().unwrap_or_default())
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.activities AS a \
                       (org_id, activity_id, app, title, url, span_rows) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], \
                       $5::text[], $6::int8[]) \
                     ON CONFLICT (org_id, activity_id) DO UPDATE \
                     SET span_rows = a.span_rows + EXCLUDED.span_rows, \
                       title = CASE WHEN a.title IS NULL AND a.url IS NULL \
                         THEN EXCLUDED.title ELSE a.title END, \
                       url = CASE WHEN a.title IS NULL AND a.url IS NULL \
                         THEN EXCLUDED.url ELSE a.url END"
                ),
                &[&orgs, &ids, &apps, &titles, &urls, &rows],
            )
            .await?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.activities AS a (org_id, activity_id, app, title, url) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], \
                       $5::text[]) \
                     ON CONFLICT (org_id, activity_id) DO UPDATE \
                     SET title = EXCLUDED.title, url = EXCLUDED.url \
                     WHERE a.title IS NULL AND a.url IS NULL \
                     AND (EXCLUDED.title IS NOT NULL OR EXCLUDED.url IS NOT NULL)"
                ),
                &[&orgs, &ids, &apps, &titles, &urls],
            )
            .await?;
        }
    }
    if !pending.spans.is_empty() {
        let n = pending.spans.values().map(Vec::len).sum();
        let (mut orgs, mut devices, mut people, mut weeks) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut starts, mut ends, mut ids, mut positions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((org, person, week), (span, device)) in pending
            .spans
            .iter()
            .flat_map(|(key, spans)| spans.iter().map(move |s| (key, s)))
        {
            orgs.push(org.as_str());
            devices.push(&**device);
            people.push(person.as_str());
            weeks.push(*week);
            starts.push(span.start_ms);
            ends.push(span.end_ms);
            ids.push(span.activity);
            positions.push(span.position as i64);
        }
        if with_devices {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.spans (org_id, person_id, week_start, start_ms, \
                     end_ms, activity_id, position, device_id) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::int8[], \
                     $5::int8[], $6::int8[], $7::int8[], $8::text[])"
                ),
                &[
                    &orgs, &people, &weeks, &starts, &ends, &ids, &positions, &devices,
                ],
            )
            .await?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.spans \
                     (org_id, person_id, week_start, start_ms, end_ms, activity_id, position) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::int8[], \
                     $5::int8[], $6::int8[], $7::int8[])"
                ),
                &[&orgs, &people, &weeks, &starts, &ends, &ids, &positions],
            )
            .await?;
        }
    }
    for (key, bounds) in &pending.bounds {
        let timezone = states
            .get(&key.0)
            .map_or("UTC", |s| s.settings.timezone.as_str());
        ensure_week(tx, schema, key, *bounds, timezone).await?;
    }
    Ok(())
}

/// Span rows as columns: org, member, week, device, end.
type CutKeys = (
    Vec<String>,
    Vec<String>,
    Vec<NaiveDate>,
    Vec<String>,
    Vec<i64>,
);

/// The span rows that overlap each withdrawing device's hull, found
/// through their member's weeks (the index the weeks are computed by): a
/// row overlapping `[from, to)` lies in a week that starts after the UTC
/// day of `from` less 8 days and by the UTC day after `to`, whatever the
/// org's zone. Columns: org, device, start, end, member, week, activity id,
/// position.
async fn candidates(
    tx: &Transaction<'_>,
    table: &str,
    pending: &Pending,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let (orgs, devices, froms, tos) = pending.withdrawn.hulls();
    let members: Vec<&str> = orgs
        .iter()
        .zip(&devices)
        .map(|(org, device)| {
            pending
                .owners
                .get(&((*org).to_owned(), (*device).to_owned()))
                .map_or("", String::as_str)
        })
        .collect();
    let day = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .date_naive()
    };
    let first_weeks: Vec<NaiveDate> = froms
        .iter()
        .map(|&ms| day(ms) - chrono::Duration::days(8))
        .collect();
    let last_weeks: Vec<NaiveDate> = tos
        .iter()
        .map(|&ms| day(ms) + chrono::Duration::days(1))
        .collect();
    tx.query(
        &format!(
            "SELECT s.org_id, s.device_id, s.start_ms, s.end_ms, s.person_id, s.week_start, \
               s.activity_id, s.position \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[], \
               $6::int8[], $7::int8[]) \
               AS h(org_id, device_id, person_id, first_week, last_week, from_ms, to_ms) \
             JOIN {table} s ON s.org_id = h.org_id AND s.person_id = h.person_id \
               AND s.week_start BETWEEN h.first_week AND h.last_week \
               AND s.device_id = h.device_id AND s.end_ms > h.from_ms AND s.start_ms < h.to_ms"
        ),
        &[
            &orgs,
            &devices,
            &members,
            &first_weeks,
            &last_weeks,
            &froms,
            &tos,
        ],
    )
    .await
}

/// Cuts the withdrawn time out of its devices' span rows (the parts of a
/// row outside it stay, in the same week with the same position) and drops
/// the activities (app, title, URL) no row refers to any more (counted in
/// `span_rows`: an erasure finds a person's activities through their rows,
/// so one left without rows would outlive it); the weeks touched are
/// computed again.
async fn retract(
    tx: &Transaction<'_>,
    schema: &str,
    pending: &mut Pending,
) -> Result<(), ApplyError> {
    if pending.withdrawn.is_empty() {
        return Ok(());
    }
    pending.withdrawn.merge();
    let table = format!("{schema}.spans");
    let candidates = candidates(tx, &table, pending).await?;
    // The rows cut, by their member's week (the index) and end.
    let mut cut: CutKeys = Default::default();
    // Span rows that refer to each activity: one less per row cut, one more
    // per piece of it that stays.
    let mut rows: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut kept: (Vec<String>, Vec<String>, Vec<String>, Vec<NaiveDate>) = Default::default();
    let mut kept_times: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    for row in &candidates {
        let (org, device): (String, String) = (row.get(0), row.get(1));
        let span: (i64, i64) = (row.get(2), row.get(3));
        let (taken, stay) = pending.withdrawn.cut(&org, &device, span);
        if taken.is_empty() {
            continue;
        }
        let (person, week): (String, NaiveDate) = (row.get(4), row.get(5));
        let (activity, position): (i64, i64) = (row.get(6), row.get(7));
        let stays = stay.len() as i64;
        for (start, end) in stay {
            kept.0.push(org.clone());
            kept.1.push(device.clone());
            kept.2.push(person.clone());
            kept.3.push(week);
            kept_times.0.push(start);
            kept_times.1.push(end);
            kept_times.2.push(activity);
            kept_times.3.push(position);
        }
        pending
            .recompute
            .insert((org.clone(), person.clone(), week));
        *rows.entry((org.clone(), activity)).or_default() += stays - 1;
        cut.0.push(org);
        cut.1.push(person);
        cut.2.push(week);
        cut.3.push(device);
        cut.4.push(span.1);
    }
    tx.execute(
        &format!(
            "DELETE FROM {table} s \
             USING unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::int8[]) \
               AS c(org_id, person_id, week_start, device_id, end_ms) \
             WHERE s.org_id = c.org_id AND s.person_id = c.person_id \
               AND s.week_start = c.week_start AND s.device_id = c.device_id \
               AND s.end_ms = c.end_ms"
        ),
        &[&cut.0, &cut.1, &cut.2, &cut.3, &cut.4],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO {table} (org_id, device_id, person_id, week_start, start_ms, \
             end_ms, activity_id, position) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[])"
        ),
        &[
            &kept.0,
            &kept.1,
            &kept.2,
            &kept.3,
            &kept_times.0,
            &kept_times.1,
            &kept_times.2,
            &kept_times.3,
        ],
    )
    .await?;
    let (mut orgs, mut ids, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    for ((org, id), delta) in &rows {
        orgs.push(org.as_str());
        ids.push(*id);
        deltas.push(*delta);
    }
    tx.execute(
        &format!(
            "UPDATE {schema}.activities a SET span_rows = a.span_rows + c.delta \
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS c(org_id, activity_id, delta) \
             WHERE a.org_id = c.org_id AND a.activity_id = c.activity_id"
        ),
        &[&orgs, &ids, &deltas],
    )
    .await?;
    tx.execute(
        &format!(
            "DELETE FROM {schema}.activities a \
             USING unnest($1::text[], $2::int8[]) AS c(org_id, activity_id) \
             WHERE a.org_id = c.org_id AND a.activity_id = c.activity_id AND a.span_rows <= 0"
        ),
        &[&orgs, &ids],
    )
    .await?;
    Ok(())
}

impl Work {
    /// Compiled attribution rules of `org` at `version` (none at 0).
    async fn attribution(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        org: &str,
        version: u32,
    ) -> Result<Arc<Attribution>, ApplyError> {
        let key = (format!("{schema}/{org}"), version);
        if let Some(hit) = self.rules.get(&key) {
            return Ok(hit);
        }
        let rules: Vec<AttributionRule> = if version == 0 {
            Vec::new()
        } else {
            tx.query_opt(
                &format!("SELECT rules FROM {schema}.rules WHERE org_id = $1 AND version = $2"),
                &[&org, &(version as i32)],
            )
            .await?
            .and_then(|row| serde_json::from_value(row.get(0)).ok())
            .unwrap_or_default()
        };
        // Stored rules compiled when they were set; if this code cannot
        // compile them, nothing is attributed by them.
        let compiled = Arc::new(Attribution::compile(&rules).unwrap_or_else(|e| {
            tracing::warn!(org, error = %e, "stored attribution rules do not compile");
            Attribution::compile(&[]).unwrap_or_else(|_| unreachable!("no rules compile"))
        }));
        self.rules.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Computes the `weeks` again from their rows.
    async fn compute_weeks(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        states: &HashMap<String, OrgState>,
        weeks: &BTreeSet<WeekKey>,
    ) -> Result<(), ApplyError> {
        for chunk in weeks.iter().collect::<Vec<_>>().chunks(500) {
            let keys = KeyArrays::of(chunk);
            let mut spans: HashMap<WeekKey, Vec<Span>> = HashMap::new();
            for row in tx
                .query(
                    &format!(
                        "SELECT org_id, person_id, week_start, start_ms, end_ms, activity_id, \
                         position FROM {schema}.spans WHERE {KEYS}"
                    ),
                    &keys.params(),
                )
                .await?
            {
                spans
                    .entry((row.get(0), row.get(1), row.get(2)))
                    .or_default()
                    .push(Span {
                        start_ms: row.get(3),
                        end_ms: row.get(4),
                        activity: row.get(5),
                        position: row.get::<_, i64>(6) as u64,
                    });
            }
            tx.execute(
                &format!("DELETE FROM {schema}.time WHERE {KEYS}"),
                &keys.params(),
            )
            .await?;
            self.add_time(tx, schema, states, &keys, &spans, true)
                .await?;
        }
        Ok(())
    }

    /// Adds the time of the batch's new spans to their weeks (those not
    /// computed again already).
    async fn add_spans(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        states: &HashMap<String, OrgState>,
        pending: &Pending,
    ) -> Result<(), ApplyError> {
        let weeks: Vec<&WeekKey> = pending
            .spans
            .keys()
            .filter(|k| !pending.recompute.contains(*k))
            .collect();
        for chunk in weeks.chunks(500) {
            let keys = KeyArrays::of(chunk);
            let spans: HashMap<WeekKey, Vec<Span>> = chunk
                .iter()
                .map(|k| {
                    let spans = pending.spans[*k].iter().map(|(s, _)| *s).collect();
                    ((*k).clone(), spans)
                })
                .collect();
            self.add_time(tx, schema, states, &keys, &spans, false)
                .await?;
        }
        Ok(())
    }

    /// Adds the time of `spans` (and, with `entries_too`, of the manual
    /// entries) of the weeks `keys` to their rows.
    async fn add_time(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        states: &HashMap<String, OrgState>,
        keys: &KeyArrays<'_>,
        spans: &HashMap<WeekKey, Vec<Span>>,
        entries_too: bool,
    ) -> Result<(), ApplyError> {
        let weeks = tx
            .query(
                &format!(
                    "SELECT org_id, person_id, week_start, start_ms, end_ms, \
                     approved_position, approved_rules, timezone FROM {schema}.weeks WHERE {KEYS}"
                ),
                &keys.params(),
            )
            .await?;
        let mut entries: HashMap<WeekKey, Vec<WeekEntry>> = HashMap::new();
        for row in tx
            .query(
                &format!(
                    "SELECT org_id, person_id, week_start, kind, project_id, task_id, \
                     start_ms, end_ms FROM {schema}.entries WHERE {KEYS}"
                ),
                &keys.params(),
            )
            .await?
        {
            entries
                .entry((row.get(0), row.get(1), row.get(2)))
                .or_default()
                .push(WeekEntry {
                    manual: row.get::<_, &str>(3) == "manual",
                    project: row.get(4),
                    task: row.get(5),
                    start_ms: row.get(6),
                    end_ms: row.get(7),
                });
        }
        let mut activities: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for ((org, _, _), list) in spans {
            activities
                .entry(org.clone())
                .or_default()
                .extend(list.iter().map(|s| s.activity));
        }
        let described = describe(tx, schema, &activities).await?;
        let mut rows = TimeRows::default();
        for week in weeks {
            let key: WeekKey = (week.get(0), week.get(1), week.get(2));
            let bounds = (week.get(3), week.get(4));
            let approved = week.get::<_, Option<i64>>(5).map(|p| p as u64);
            let version = match week.get::<_, Option<i32>>(6) {
                Some(v) => v as u32,
                None => states.get(&key.0).map_or(0, |s| s.rules_version),
            };
            let rules = self.attribution(tx, schema, &key.0, version).await?;
            let tz: Tz = week.get::<_, &str>(7).parse().unwrap_or(Tz::UTC);
            let target = |activity: i64| {
                let (app, title, url) = described.get(&(key.0.clone(), activity))?;
                rules
                    .attribute(app, title.as_deref().unwrap_or(""), url.as_deref())
                    .map(|t| {
                        (
                            t.project.to_string(),
                            t.task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                        )
                    })
            };
            let week_entries = entries.get(&key).map_or(&[][..], Vec::as_slice);
            let week_spans = spans.get(&key).map_or(&[][..], Vec::as_slice);
            let totals = if entries_too {
                week_totals(bounds, approved, week_spans, week_entries, target, tz)
            } else {
                span_totals(bounds, approved, week_spans, week_entries, target, tz)
            };
            rows.extend(&key, totals);
        }
        rows.insert(tx, schema).await
    }
}

/// The weeks of a statement: `$1` orgs, `$2` members, `$3` first days.
const KEYS: &str = "(org_id, person_id, week_start) IN \
                    (SELECT * FROM unnest($1::text[], $2::text[], $3::date[]))";

/// The parameters of [`KEYS`].
struct KeyArrays<'a> {
    orgs: Vec<&'a str>,
    people: Vec<&'a str>,
    firsts: Vec<NaiveDate>,
}

impl<'a> KeyArrays<'a> {
    fn of(keys: &[&'a WeekKey]) -> Self {
        Self {
            orgs: keys.iter().map(|k| k.0.as_str()).collect(),
            people: keys.iter().map(|k| k.1.as_str()).collect(),
            firsts: keys.iter().map(|k| k.2).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 3] {
        [&self.orgs, &self.people, &self.firsts]
    }
}

/// The app, title and URL of each activity named.
type Described = HashMap<(String, i64), (String, Option<String>, Option<String>)>;

async fn describe(
    tx: &Transaction<'_>,
    schema: &str,
    activities: &BTreeMap<String, BTreeSet<i64>>,
) -> Result<Described, ApplyError> {
    let mut described = HashMap::new();
    for (org, ids) in activities {
        let ids: Vec<i64> = ids.iter().copied().collect();
        for row in tx
            .query(
                &format!(
                    "SELECT activity_id, app, title, url FROM {schema}.activities \
                     WHERE org_id = $1 AND activity_id = ANY($2)"
                ),
                &[org, &ids],
            )
            .await?
        {
            described.insert(
                (org.clone(), row.get(0)),
                (row.get(1), row.get(2), row.get(3)),
            );
        }
    }
    Ok(described)
}

/// Rows of `time` to insert.
#[derive(Default)]
struct TimeRows {
    orgs: Vec<String>,
    people: Vec<String>,
    weeks: Vec<NaiveDate>,
    days: Vec<NaiveDate>,
    projects: Vec<String>,
    tasks: Vec<String>,
    sources: Vec<&'static str>,
    ms: Vec<i64>,
}

impl TimeRows {
    fn extend(&mut self, (org, person, week): &WeekKey, totals: compute::Totals) {
        for ((day, project, task, source), ms) in totals {
            self.orgs.push(org.clone());
            self.people.push(person.clone());
            self.weeks.push(*week);
            self.days.push(day);
            self.projects.push(project);
            self.tasks.push(task);
            self.sources.push(source.as_str());
            self.ms.push(ms);
        }
    }

    async fn insert(&self, tx: &Transaction<'_>, schema: &str) -> Result<(), ApplyError> {
        if self.ms.is_empty() {
            return Ok(());
        }
        tx.execute(
            &format!(
                "INSERT INTO {schema}.time AS t \
                 (org_id, person_id, week_start, day, project_id, task_id, source, ms) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::date[], \
                 $5::text[], $6::text[], $7::text[], $8::int8[]) \
                 ON CONFLICT (org_id, person_id, week_start, day, project_id, task_id, source) \
                 DO UPDATE SET ms = t.ms + EXCLUDED.ms"
            ),
            &[
                &self.orgs,
                &self.people,
                &self.weeks,
                &self.days,
                &self.projects,
                &self.tasks,
                &self.sources,
                &self.ms,
            ],
        )
        .await?;
        Ok(())
    }
}

/// Time per project of an org (late time excluded).
async fn project_totals(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
) -> Result<BTreeMap<String, i64>, ApplyError> {
    Ok(tx
        .query(
            &format!(
                "SELECT project_id, sum(ms)::bigint FROM {schema}.time \
                 WHERE org_id = $1 AND source <> 'late' GROUP BY project_id"
            ),
            &[&org],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Records, per project, the time a rules change moved.
async fn record_moved(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
    version: u32,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> Result<(), ApplyError> {
    let projects: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for project in projects {
        let (b, a) = (
            before.get(project).copied().unwrap_or(0),
            after.get(project).copied().unwrap_or(0),
        );
        if a != b {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.moved (org_id, rules_version, project_id, before_ms, after_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, rules_version, project_id) \
                     DO UPDATE SET before_ms = EXCLUDED.before_ms, after_ms = EXCLUDED.after_ms"
                ),
                &[&org, &(version as i32), project, &b, &a],
            )
            .await?;
        }
    }
    Ok(())
}

/// Drops an erased person's copies: their entries' notes, their weeks'
/// comments, and the titles and URLs of activities nobody else has.
async fn erase(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
    person: &str,
) -> Result<(), ApplyError> {
    tx.execute(
        &format!("UPDATE {schema}.entries SET note = NULL WHERE org_id = $1 AND person_id = $2"),
        &[&org, &person],
    )
    .await?;
    tx.execute(
        &format!("UPDATE {schema}.weeks SET comment = NULL WHERE org_id = $1 AND person_id = $2"),
        &[&org, &person],
    )
    .await?;
    tx.execute(
        &format!(
            "WITH theirs AS (
                 SELECT DISTINCT activity_id FROM {schema}.spans WHERE org_id = $1 AND person_id = $2
             ), shared AS (
                 SELECT DISTINCT s.activity_id FROM {schema}.spans s JOIN theirs USING (activity_id)
                 WHERE s.org_id = $1 AND s.person_id <> $2
             )
             UPDATE {schema}.activities a SET title = NULL, url = NULL FROM theirs
             WHERE a.org_id = $1 AND a.activity_id = theirs.activity_id
               AND (a.title IS NOT NULL OR a.url IS NOT NULL)
               AND a.activity_id NOT IN (SELECT activity_id FROM shared)"
        ),
        &[&org, &person],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesheet_ids_give_the_member_and_the_week() {
        assert_eq!(
            timesheet_key("p_ab-cd-2026-11-30"),
            Some(("p_ab-cd", "2026-11-30".parse().unwrap()))
        );
        assert_eq!(timesheet_key("2026-11-30"), None);
        assert_eq!(timesheet_key("erin-2026-13-30"), None);
    }
}
