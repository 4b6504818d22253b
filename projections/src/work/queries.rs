//! Queries of the work read model. Time recorded after a week's approval
//! ("late") is never in project time or budgets; the week view and the
//! approvals queue show it apart.

use chrono::NaiveDate;
use futures::{Stream, TryStreamExt as _};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRow {
    /// Its id.
    pub team_id: String,
    /// Its name.
    pub name: String,
    /// Its managers.
    pub managers: Vec<String>,
    /// Its members.
    pub members: Vec<String>,
}

/// A client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    /// Its id.
    pub client_id: String,
    /// Its name.
    pub name: String,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Its id.
    pub task_id: String,
    /// Its name.
    pub name: String,
}

/// A project with the time booked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    /// Its id.
    pub project_id: String,
    /// Its name.
    pub name: String,
    /// Its client's id.
    pub client_id: Option<String>,
    /// Whether its time is billed.
    pub billable: bool,
    /// Budget in hours.
    pub budget_hours: Option<i32>,
    /// Budget in the org's currency's minor units.
    pub budget_money: Option<i64>,
    /// What an hour is worth, in minor units.
    pub rate_money: Option<i64>,
    /// The time booked at the rate, in minor units, rounded half up (with a
    /// rate).
    pub booked_money: Option<i64>,
    /// Whether it is archived.
    pub archived: bool,
    /// Who may book on it (empty: everyone).
    pub members: Vec<String>,
    /// Its tasks.
    pub tasks: Vec<TaskRow>,
    /// Time booked on it in all, ms (late time excluded).
    pub booked_ms: i64,
    /// Budget marks (percent) crossed and not cleared.
    pub marks: Vec<i32>,
}

/// Time of one (project, task, member, day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectTime {
    /// The project (empty: unattributed).
    pub project_id: String,
    /// The task (empty: none).
    pub task_id: String,
    /// The member.
    pub person_id: String,
    /// The day, in the org's time zone.
    pub day: NaiveDate,
    /// Whether the project is billable.
    pub billable: bool,
    /// Milliseconds.
    pub ms: i64,
}

/// A week of a member: where it stands and its totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekRow {
    /// The member.
    pub person_id: String,
    /// Its first day.
    pub week_start: NaiveDate,
    /// Its bounds, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
    /// `open`, `submitted` or `approved`.
    pub status: String,
    /// When it was last submitted, ms.
    pub submitted_at: Option<i64>,
    /// The last decision: `approved`, `rejected` or `reopened`.
    pub decision: Option<String>,
    /// Who made it.
    pub decided_by: Option<String>,
    /// When, ms.
    pub decided_at: Option<i64>,
    /// Its comment or reason.
    pub comment: Option<String>,
    /// Time counted, ms (late time excluded).
    pub total_ms: i64,
    /// Time recorded after the approval, ms.
    pub late_ms: i64,
}

/// One entry of a week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    /// Its id.
    pub entry_id: String,
    /// `manual` or `assignment`.
    pub kind: String,
    /// Its project.
    pub project_id: String,
    /// Its task.
    pub task_id: String,
    /// Start, ms.
    pub start_ms: i64,
    /// End (exclusive), ms.
    pub end_ms: i64,
    /// Its note.
    pub note: Option<String>,
}

/// Time of a week per day, project, task and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekTime {
    /// The day.
    pub day: NaiveDate,
    /// The project (empty: unattributed).
    pub project_id: String,
    /// The task (empty: none).
    pub task_id: String,
    /// `rule`, `assigned`, `manual` or `late`.
    pub source: String,
    /// Milliseconds.
    pub ms: i64,
}

/// A stretch of observed activity: spans less than [`STRETCH_GAP_MS`] apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stretch {
    /// Start, ms.
    pub start_ms: i64,
    /// End (exclusive), ms.
    pub end_ms: i64,
    /// Active time in it, ms.
    pub active_ms: i64,
    /// The application with the most time in it.
    pub app: String,
}

/// Spans closer than this form one stretch.
pub const STRETCH_GAP_MS: i64 = 5 * 60_000;

/// A member's week as the week view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekView {
    /// The week.
    pub week: WeekRow,
    /// Its entries, by start.
    pub entries: Vec<EntryRow>,
    /// Its time.
    pub time: Vec<WeekTime>,
    /// Its stretches of activity, by start.
    pub stretches: Vec<Stretch>,
}

/// Time a change of attribution rules moved for a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The project (empty: unattributed).
    pub project_id: String,
    /// Its time before, ms.
    pub before_ms: i64,
    /// After, ms.
    pub after_ms: i64,
}

/// The org's teams.
pub async fn teams(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Vec<TeamRow>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT t.team_id, t.name, t.managers, \
                 coalesce(array_agg(m.person_id ORDER BY m.person_id) \
                   FILTER (WHERE m.person_id IS NOT NULL), '{{}}') \
                 FROM {schema}.teams t LEFT JOIN {schema}.member_teams m USING (org_id, team_id) \
                 WHERE t.org_id = $1 GROUP BY t.team_id, t.name, t.managers ORDER BY t.name, t.team_id"
            ),
            &[&org],
        )
        .await?
        .into_iter()
        .map(|r| TeamRow {
            team_id: r.get(0),
            name: r.get(1),
            managers: r.get(2),
            members: r.get(3),
        })
        .collect())
}

/// The org's clients.
pub async fn clients(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Vec<ClientRow>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT client_id, name FROM {schema}.clients WHERE org_id = $1 ORDER BY name, client_id"
            ),
            &[&org],
        )
        .await?
        .into_iter()
        .map(|r| ClientRow {
            client_id: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// The org's projects with their tasks and the time booked on them.
pub async fn projects(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Vec<ProjectRow>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT p.project_id, p.name, p.client_id, p.billable, p.budget_hours, \
                 p.budget_money, p.archived, p.members, p.marks, p.rate_money, \
                 coalesce((SELECT sum(ms)::bigint FROM {schema}.time t WHERE t.org_id = p.org_id \
                   AND t.project_id = p.project_id AND t.source <> 'late'), 0), \
                 coalesce((SELECT array_agg(k.task_id || E'\\t' || k.name ORDER BY k.name, k.task_id) \
                   FROM {schema}.tasks k WHERE k.org_id = p.org_id AND k.project_id = p.project_id), '{{}}') \
                 FROM {schema}.projects p WHERE p.org_id = $1 ORDER BY p.name, p.project_id"
            ),
            &[&org],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProjectRow {
            project_id: r.get(0),
            name: r.get(1),
            client_id: r.get(2),
            billable: r.get(3),
            budget_hours: r.get(4),
            budget_money: r.get(5),
            archived: r.get(6),
            members: r.get(7),
            marks: r.get(8),
            rate_money: r.get(9),
            booked_money: r
                .get::<_, Option<i64>>(9)
                .map(|rate| trackhrs_domain::project::money_for(r.get(10), rate)),
            booked_ms: r.get(10),
            tasks: r
                .get::<_, Vec<String>>(11)
                .into_iter()
                .map(|t| {
                    let (id, name) = t.split_once('\t').unwrap_or((&t, ""));
                    TaskRow {
                        task_id: id.to_owned(),
                        name: name.to_owned(),
                    }
                })
                .collect(),
        })
        .collect())
}

/// Booked time of each project with a budget in hours or budget marks
/// recorded (for the budget policy): (project, booked ms).
pub async fn budgeted_time(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT p.project_id, coalesce(sum(t.ms), 0)::bigint FROM {schema}.projects p \
                 LEFT JOIN {schema}.time t ON t.org_id = p.org_id AND t.project_id = p.project_id \
                   AND t.source <> 'late' \
                 WHERE p.org_id = $1 AND (p.budget_hours IS NOT NULL OR cardinality(p.marks) > 0) \
                 GROUP BY p.project_id"
            ),
            &[&org],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The SQL of project time in `[$2, $3]` of org `$1`, of members `$4`
/// only when not null, ordered by day, member, project and task.
fn project_time_query(schema: &str) -> String {
    format!(
        "SELECT t.project_id, t.task_id, t.person_id, t.day, coalesce(p.billable, false), \
             sum(t.ms)::bigint FROM {schema}.time t \
             LEFT JOIN {schema}.projects p ON p.org_id = t.org_id AND p.project_id = t.project_id \
             WHERE t.org_id = $1 AND t.day BETWEEN $2 AND $3 AND t.source <> 'late' \
               AND t.project_id <> '' AND ($4::text[] IS NULL OR t.person_id = ANY($4)) \
             GROUP BY 1, 2, 3, 4, 5 ORDER BY t.day, t.person_id, t.project_id, t.task_id"
    )
}

fn project_time_row(r: &tokio_postgres::Row) -> ProjectTime {
    ProjectTime {
        project_id: r.get(0),
        task_id: r.get(1),
        person_id: r.get(2),
        day: r.get(3),
        billable: r.get(4),
        ms: r.get(5),
    }
}

/// Project time per project, task, member and day in `[from, to]`, of
/// `members` only when given.
pub async fn project_time(
    pg: &Client,
    schema: &str,
    org: &str,
    from: NaiveDate,
    to: NaiveDate,
    members: Option<Vec<String>>,
) -> Result<Vec<ProjectTime>, tokio_postgres::Error> {
    Ok(pg
        .query(&project_time_query(schema), &[&org, &from, &to, &members])
        .await?
        .iter()
        .map(project_time_row)
        .collect())
}

/// The same rows as [`project_time`], streamed from the server as they
/// come (an export of any size holds one row at a time).
pub async fn project_time_stream(
    pg: &Client,
    schema: &str,
    org: &str,
    from: NaiveDate,
    to: NaiveDate,
    members: Option<Vec<String>>,
) -> Result<impl Stream<Item = Result<ProjectTime, tokio_postgres::Error>>, tokio_postgres::Error> {
    let params: [&(dyn ToSql + Sync); 4] = [&org, &from, &to, &members];
    let rows = pg.query_raw(&project_time_query(schema), params).await?;
    Ok(rows.map_ok(|r| project_time_row(&r)))
}

const WEEK_COLUMNS: &str = "w.person_id, w.week_start, w.start_ms, w.end_ms, w.status, \
    w.submitted_at, w.decision, w.decided_by, w.decided_at, w.comment, \
    coalesce((SELECT sum(ms) FILTER (WHERE source <> 'late') FROM {schema}.time t \
      WHERE t.org_id = w.org_id AND t.person_id = w.person_id AND t.week_start = w.week_start), 0)::bigint, \
    coalesce((SELECT sum(ms) FILTER (WHERE source = 'late') FROM {schema}.time t \
      WHERE t.org_id = w.org_id AND t.person_id = w.person_id AND t.week_start = w.week_start), 0)::bigint";

fn week_columns(schema: &str) -> String {
    WEEK_COLUMNS.replace("{schema}", schema)
}

fn week_row(r: &tokio_postgres::Row) -> WeekRow {
    WeekRow {
        person_id: r.get(0),
        week_start: r.get(1),
        start_ms: r.get(2),
        end_ms: r.get(3),
        status: r.get(4),
        submitted_at: r.get(5),
        decision: r.get(6),
        decided_by: r.get(7),
        decided_at: r.get(8),
        comment: r.get(9),
        total_ms: r.get(10),
        late_ms: r.get(11),
    }
}

/// The weeks starting `week_start` of `members` (of every member with a
/// week when `None`), by member.
pub async fn weeks(
    pg: &Client,
    schema: &str,
    org: &str,
    week_start: NaiveDate,
    members: Option<Vec<String>>,
) -> Result<Vec<WeekRow>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT {} FROM {schema}.weeks w WHERE w.org_id = $1 AND w.week_start = $2 \
                 AND ($3::text[] IS NULL OR w.person_id = ANY($3)) ORDER BY w.person_id",
                week_columns(schema)
            ),
            &[&org, &week_start, &members],
        )
        .await?
        .iter()
        .map(week_row)
        .collect())
}

/// The weeks starting in `[from, to]` of `members` (all when `None`),
/// streamed from the server by week and member.
pub async fn weeks_stream(
    pg: &Client,
    schema: &str,
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
    members: Option<Vec<String>>,
) -> Result<impl Stream<Item = Result<WeekRow, tokio_postgres::Error>>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM {schema}.weeks w WHERE w.org_id = $1 AND w.week_start BETWEEN $2 AND $3 \
         AND ($4::text[] IS NULL OR w.person_id = ANY($4)) ORDER BY w.week_start, w.person_id",
        week_columns(schema)
    );
    let params: [&(dyn ToSql + Sync); 4] = [&org, &from, &to, &members];
    Ok(pg.query_raw(&sql, params).await?.map_ok(|r| week_row(&r)))
}

/// The approvals queue: submitted weeks, and approved weeks with time that
/// arrived after the approval, of `members` (all when `None`), oldest first.
pub async fn approvals(
    pg: &Client,
    schema: &str,
    org: &str,
    members: Option<Vec<String>>,
) -> Result<Vec<WeekRow>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT {} FROM {schema}.weeks w WHERE w.org_id = $1 \
                 AND ($2::text[] IS NULL OR w.person_id = ANY($2)) \
                 AND (w.status = 'submitted' OR (w.status = 'approved' AND EXISTS ( \
                   SELECT 1 FROM {schema}.time t WHERE t.org_id = w.org_id \
                   AND t.person_id = w.person_id AND t.week_start = w.week_start \
                   AND t.source = 'late'))) \
                 ORDER BY w.week_start, w.person_id",
                week_columns(schema)
            ),
            &[&org, &members],
        )
        .await?
        .iter()
        .map(week_row)
        .collect())
}

/// A member's week: `None` when nothing was recorded or decided in it.
pub async fn week_view(
    pg: &Client,
    schema: &str,
    org: &str,
    person: &str,
    week_start: NaiveDate,
) -> Result<Option<WeekView>, tokio_postgres::Error> {
    let Some(week) = pg
        .query_opt(
            &format!(
                "SELECT {} FROM {schema}.weeks w WHERE w.org_id = $1 AND w.person_id = $2 \
                 AND w.week_start = $3",
                week_columns(schema)
            ),
            &[&org, &person, &week_start],
        )
        .await?
    else {
        return Ok(None);
    };
    let entries = pg
        .query(
            &format!(
                "SELECT entry_id, kind, project_id, task_id, start_ms, end_ms, note \
                 FROM {schema}.entries WHERE org_id = $1 AND person_id = $2 AND week_start = $3 \
                 ORDER BY start_ms, entry_id"
            ),
            &[&org, &person, &week_start],
        )
        .await?
        .into_iter()
        .map(|r| EntryRow {
            entry_id: r.get(0),
            kind: r.get(1),
            project_id: r.get(2),
            task_id: r.get(3),
            start_ms: r.get(4),
            end_ms: r.get(5),
            note: r.get(6),
        })
        .collect();
    let time = pg
        .query(
            &format!(
                "SELECT day, project_id, task_id, source, ms FROM {schema}.time \
                 WHERE org_id = $1 AND person_id = $2 AND week_start = $3 \
                 ORDER BY day, project_id, task_id, source"
            ),
            &[&org, &person, &week_start],
        )
        .await?
        .into_iter()
        .map(|r| WeekTime {
            day: r.get(0),
            project_id: r.get(1),
            task_id: r.get(2),
            source: r.get(3),
            ms: r.get(4),
        })
        .collect();
    let spans = pg
        .query(
            &format!(
                "SELECT s.start_ms, s.end_ms, a.app FROM {schema}.spans s \
                 JOIN {schema}.activities a ON a.org_id = s.org_id AND a.activity_id = s.activity_id \
                 WHERE s.org_id = $1 AND s.person_id = $2 AND s.week_start = $3 ORDER BY s.start_ms"
            ),
            &[&org, &person, &week_start],
        )
        .await?;
    let stretches = stretches(
        spans
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, &str>(2))),
    );
    Ok(Some(WeekView {
        week: week_row(&week),
        entries,
        time,
        stretches,
    }))
}

/// Spans (by start) joined into stretches where less than
/// [`STRETCH_GAP_MS`] apart.
fn stretches<'a>(spans: impl Iterator<Item = (i64, i64, &'a str)>) -> Vec<Stretch> {
    let mut out: Vec<(Stretch, std::collections::HashMap<&'a str, i64>)> = Vec::new();
    for (start, end, app) in spans {
        match out.last_mut() {
            Some((s, apps)) if start - s.end_ms < STRETCH_GAP_MS => {
                s.end_ms = s.end_ms.max(end);
                s.active_ms += end - start;
                *apps.entry(app).or_default() += end - start;
            }
            _ => out.push((
                Stretch {
                    start_ms: start,
                    end_ms: end,
                    active_ms: end - start,
                    app: String::new(),
                },
                [(app, end - start)].into(),
            )),
        }
    }
    out.into_iter()
        .map(|(mut s, apps)| {
            s.app = apps
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map(|(app, _)| app.to_owned())
                .unwrap_or_default();
            s
        })
        .collect()
}

/// Time the change to attribution rules version `version` moved, per
/// project.
pub async fn moved(
    pg: &Client,
    schema: &str,
    org: &str,
    version: u32,
) -> Result<Vec<Moved>, tokio_postgres::Error> {
    Ok(pg
        .query(
            &format!(
                "SELECT project_id, before_ms, after_ms FROM {schema}.moved \
                 WHERE org_id = $1 AND rules_version = $2 ORDER BY project_id"
            ),
            &[&org, &(version as i32)],
        )
        .await?
        .into_iter()
        .map(|r| Moved {
            project_id: r.get(0),
            before_ms: r.get(1),
            after_ms: r.get(2),
        })
        .collect())
}

/// Time per member, week and local day in `[from, to]` (time recorded
/// after a week's approval left out). Payroll keeps the days of approved
/// weeks ([`approved_weeks`]): no join, so the plan does not depend on
/// statistics a bulk load has not gathered yet.
pub async fn time_by_day(
    pg: &Client,
    schema: &str,
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<(String, NaiveDate, NaiveDate, i64)>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, week_start, day, sum(ms)::bigint FROM {schema}.time \
                 WHERE org_id = $1 AND day BETWEEN $2 AND $3 AND source <> 'late' \
                 GROUP BY 1, 2, 3"
            ),
            &[&org, &from, &to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// The members' weeks starting in `[from, to]` that are approved.
pub async fn approved_weeks(
    pg: &Client,
    schema: &str,
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<(String, NaiveDate)>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, week_start FROM {schema}.weeks WHERE org_id = $1 \
                 AND week_start BETWEEN $2 AND $3 AND status = 'approved'"
            ),
            &[&org, &from, &to],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_close_together_are_one_stretch_named_by_its_main_app() {
        let m = 60_000;
        let s = stretches(
            [
                (0, 10 * m, "Code"),
                (12 * m, 14 * m, "Firefox"),
                (30 * m, 31 * m, "Slack"),
            ]
            .into_iter(),
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].start_ms, s[0].end_ms, s[0].active_ms),
            (0, 14 * m, 12 * m)
        );
        assert_eq!(s[0].app, "Code");
        assert_eq!(s[1].app, "Slack");
    }
}
