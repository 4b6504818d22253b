//! Reads of the pay read model. `members` narrows a read to those people
//! (`None`: the whole org).

use chrono::NaiveDate;
use futures::Stream;
use tokio_postgres::{Client, GenericClient, Row};
use trackhrs_domain::payroll::{Missing, Policy};

/// An org's pay policy (the default one until anything was set).
pub async fn policy(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
) -> Result<Policy, tokio_postgres::Error> {
    let row = pg
        .query_opt(
            &format!("SELECT policy FROM {schema}.policy WHERE org_id = $1"),
            &[&org],
        )
        .await?;
    Ok(row
        .and_then(|r| serde_json::from_value(r.get(0)).ok())
        .unwrap_or_default())
}

/// A leave request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    /// Whose.
    pub person_id: String,
    /// Its id.
    pub request_id: String,
    /// Its type.
    pub type_id: String,
    /// Its first day.
    pub first_day: NaiveDate,
    /// Its last day.
    pub last_day: NaiveDate,
    /// What it takes, ms.
    pub ms: i64,
    /// `pending`, `approved`, `denied` or `cancelled`.
    pub status: String,
    /// The member's note.
    pub note: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
}

fn request_row(r: &Row) -> RequestRow {
    RequestRow {
        person_id: r.get(0),
        request_id: r.get(1),
        type_id: r.get(2),
        first_day: r.get(3),
        last_day: r.get(4),
        ms: r.get(5),
        status: r.get(6),
        note: r.get(7),
        decided_by: r.get(8),
        comment: r.get(9),
    }
}

/// Requests of `members` that touch `[from, to]`, by first day; only
/// `statuses` when given.
pub async fn requests(
    pg: &Client,
    schema: &str,
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
    members: Option<&[String]>,
    statuses: Option<&[&str]>,
) -> Result<Vec<RequestRow>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, request_id, type_id, first_day, last_day, ms, status, note, \
                 decided_by, comment FROM {schema}.requests \
                 WHERE org_id = $1 AND last_day >= $2 AND first_day <= $3 \
                 AND ($4::text[] IS NULL OR person_id = ANY($4)) \
                 AND ($5::text[] IS NULL OR status = ANY($5)) \
                 ORDER BY first_day, person_id, request_id"
            ),
            &[&org, &from, &to, &members, &statuses],
        )
        .await?;
    Ok(rows.iter().map(request_row).collect())
}

/// A day of approved leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveDayRow {
    /// Whose.
    pub person_id: String,
    /// The day.
    pub day: NaiveDate,
    /// Its type.
    pub type_id: String,
    /// How much, ms.
    pub ms: i64,
}

/// Approved leave on the days of `[from, to]`.
pub async fn approved_days(
    pg: &Client,
    schema: &str,
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<LeaveDayRow>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT d.person_id, d.day, r.type_id, d.ms FROM {schema}.leave_days d \
                 JOIN {schema}.requests r USING (org_id, person_id, request_id) \
                 WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3 AND r.status = 'approved' \
                 ORDER BY d.person_id, d.day"
            ),
            &[&org, &from, &to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LeaveDayRow {
            person_id: r.get(0),
            day: r.get(1),
            type_id: r.get(2),
            ms: r.get(3),
        })
        .collect())
}

/// A member's balance of a leave type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRow {
    /// Whose.
    pub person_id: String,
    /// The type.
    pub type_id: String,
    /// Accrued, ms.
    pub accrued_ms: i64,
    /// Taken by approved leave, ms.
    pub taken_ms: i64,
    /// Forfeited at the carry-over cap, ms.
    pub forfeited_ms: i64,
    /// Asked for by pending requests, ms.
    pub pending_ms: i64,
}

impl BalanceRow {
    /// What is left: accrued, less taken and forfeited.
    pub fn balance_ms(&self) -> i64 {
        self.accrued_ms - self.taken_ms - self.forfeited_ms
    }
}

/// Balances of `members`, per type that has any accrual or request.
pub async fn balances(
    pg: &Client,
    schema: &str,
    org: &str,
    members: Option<&[String]>,
) -> Result<Vec<BalanceRow>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "WITH a AS (SELECT person_id, type_id, sum(ms) AS ms FROM {schema}.accruals \
                   WHERE org_id = $1 GROUP BY 1, 2), \
                 f AS (SELECT person_id, type_id, sum(ms) AS ms FROM {schema}.forfeits \
                   WHERE org_id = $1 GROUP BY 1, 2), \
                 t AS (SELECT person_id, type_id, \
                   sum(ms) FILTER (WHERE status = 'approved') AS taken, \
                   sum(ms) FILTER (WHERE status = 'pending') AS pending \
                   FROM {schema}.requests WHERE org_id = $1 GROUP BY 1, 2), \
                 k AS (SELECT person_id, type_id FROM a UNION SELECT person_id, type_id FROM t) \
                 SELECT k.person_id, k.type_id, coalesce(a.ms, 0)::bigint, \
                   coalesce(t.taken, 0)::bigint, coalesce(f.ms, 0)::bigint, \
                   coalesce(t.pending, 0)::bigint \
                 FROM k LEFT JOIN a USING (person_id, type_id) LEFT JOIN f USING (person_id, type_id) \
                 LEFT JOIN t USING (person_id, type_id) \
                 WHERE $2::text[] IS NULL OR k.person_id = ANY($2) \
                 ORDER BY 1, 2"
            ),
            &[&org, &members],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| BalanceRow {
            person_id: r.get(0),
            type_id: r.get(1),
            accrued_ms: r.get(2),
            taken_ms: r.get(3),
            forfeited_ms: r.get(4),
            pending_ms: r.get(5),
        })
        .collect())
}

/// A payroll run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// Its period's first day.
    pub first_day: NaiveDate,
    /// Its last.
    pub last_day: NaiveDate,
    /// `draft` or `finalized`.
    pub status: String,
    /// Its latest draft's number.
    pub draft: u32,
    /// What keeps it from being finalized.
    pub missing: Vec<Missing>,
    /// What it pays, minor units.
    pub total_minor: i64,
    /// How many members it pays.
    pub members: u32,
    /// When it was drafted last, ms since the epoch.
    pub drafted_at_ms: i64,
    /// When it was finalized.
    pub finalized_at_ms: Option<i64>,
}

fn run_row(r: &Row) -> RunRow {
    RunRow {
        first_day: r.get(0),
        last_day: r.get(1),
        status: r.get(2),
        draft: r.get::<_, i32>(3) as u32,
        missing: serde_json::from_value(r.get(4)).unwrap_or_default(),
        total_minor: r.get(5),
        members: r.get::<_, i32>(6) as u32,
        drafted_at_ms: r.get(7),
        finalized_at_ms: r.get(8),
    }
}

const RUN_COLUMNS: &str =
    "first_day, last_day, status, draft, missing, total_minor, members, drafted_at, finalized_at";

/// An org's runs, latest first.
pub async fn runs(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Vec<RunRow>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM {schema}.runs WHERE org_id = $1 ORDER BY first_day DESC"
            ),
            &[&org],
        )
        .await?;
    Ok(rows.iter().map(run_row).collect())
}

/// The run of the period starting `first`.
pub async fn run(
    pg: &Client,
    schema: &str,
    org: &str,
    first: NaiveDate,
) -> Result<Option<RunRow>, tokio_postgres::Error> {
    let row = pg
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM {schema}.runs WHERE org_id = $1 AND first_day = $2"
            ),
            &[&org, &first],
        )
        .await?;
    Ok(row.as_ref().map(run_row))
}

/// A line of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRow {
    /// Whose pay.
    pub person_id: String,
    /// `regular`, `overtime`, `leave`, `holiday`, `salary` or `adjustment`.
    pub kind: String,
    /// A leave line's type.
    pub leave_type: Option<String>,
    /// The period an adjustment corrects.
    pub corrects: Option<NaiveDate>,
    /// Hours, ms.
    pub ms: i64,
    /// Days a salary line pays.
    pub days: i64,
    /// The rate (hourly, or salary per period), minor units.
    pub rate_minor: i64,
    /// Percent of the rate.
    pub percent: u32,
    /// The amount, minor units.
    pub amount_minor: i64,
}

fn line_row(r: &Row) -> LineRow {
    LineRow {
        person_id: r.get(0),
        kind: r.get(1),
        leave_type: r.get(2),
        corrects: r.get(3),
        ms: r.get(4),
        days: r.get(5),
        rate_minor: r.get(6),
        percent: r.get::<_, i32>(7) as u32,
        amount_minor: r.get(8),
    }
}

fn lines_sql(schema: &str) -> String {
    format!(
        "SELECT person_id, kind, leave_type, corrects, ms, days, rate_minor, percent, amount_minor \
         FROM {schema}.lines WHERE org_id = $1 AND first_day = $2 \
         AND ($3::text[] IS NULL OR person_id = ANY($3)) ORDER BY line_no"
    )
}

/// The lines of the run starting `first` that pay `members`.
pub async fn lines(
    pg: &Client,
    schema: &str,
    org: &str,
    first: NaiveDate,
    members: Option<&[String]>,
) -> Result<Vec<LineRow>, tokio_postgres::Error> {
    let rows = pg
        .query(&lines_sql(schema), &[&org, &first, &members])
        .await?;
    Ok(rows.iter().map(line_row).collect())
}

/// The same lines as [`lines`], streamed (a CSV export).
pub async fn lines_stream(
    pg: &Client,
    schema: &str,
    org: &str,
    first: NaiveDate,
    members: Option<&[String]>,
) -> Result<impl Stream<Item = Result<LineRow, tokio_postgres::Error>>, tokio_postgres::Error> {
    use futures::TryStreamExt as _;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&org, &first, &members];
    let rows = pg.query_raw(&lines_sql(schema), params).await?;
    Ok(rows.map_ok(|r| line_row(&r)))
}

/// Every org's pay policy that has a leave type which accrues.
pub async fn accruing_policies(
    pg: &Client,
    schema: &str,
) -> Result<Vec<(String, Policy)>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT org_id, policy FROM {schema}.policy WHERE EXISTS \
                 (SELECT 1 FROM jsonb_each(policy->'leave_types') t \
                  WHERE t.value->'accrual' <> 'null'::jsonb) ORDER BY org_id"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get(0), serde_json::from_value(r.get(1)).ok()?)))
        .collect())
}

/// What an org's members accrued and carried over: (person, type,
/// boundary) and (person, type, year).
pub async fn accrued(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<
    (
        std::collections::HashSet<(String, String, NaiveDate)>,
        std::collections::HashSet<(String, String, i32)>,
    ),
    tokio_postgres::Error,
> {
    let accruals = pg
        .query(
            &format!(
                "SELECT person_id, type_id, boundary FROM {schema}.accruals WHERE org_id = $1"
            ),
            &[&org],
        )
        .await?;
    let forfeits = pg
        .query(
            &format!("SELECT person_id, type_id, year FROM {schema}.forfeits WHERE org_id = $1"),
            &[&org],
        )
        .await?;
    Ok((
        accruals
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        forfeits
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    ))
}
