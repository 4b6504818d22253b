//! The activity read model's queries: what the dashboards read.

use chrono::NaiveDate;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::timezone_default;
use crate::classifier::CategoryRule;

/// One row of the dashboard: time of one member on one day in one
/// (category, app, active) cell.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardCell {
    /// Person id.
    pub person_id: String,
    /// Day in the org's time zone.
    pub day: NaiveDate,
    /// Category path (`["Uncategorized"]` when none applies).
    pub category: Vec<String>,
    /// Productivity score of the category.
    pub score: i32,
    /// Application.
    pub app: String,
    /// Active or idle.
    pub active: bool,
    /// Milliseconds.
    pub ms: i64,
}

/// One of a member's most-used window titles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTitle {
    /// Person id.
    pub person_id: String,
    /// Application.
    pub app: String,
    /// Window title.
    pub title: String,
    /// Milliseconds, active and idle.
    pub ms: i64,
}

/// The org's time zone and rules version as the projection knows them.
pub async fn org_info(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
) -> Result<(String, u32), tokio_postgres::Error> {
    Ok(pg
        .query_opt(
            &format!("SELECT timezone, rules_version FROM {schema}.org_state WHERE org_id = $1"),
            &[&org],
        )
        .await?
        .map_or((timezone_default(), 0), |r| {
            (r.get(0), r.get::<_, i32>(1) as u32)
        }))
}

/// The org's rules version and rules (empty: the default rules).
pub async fn org_rules(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
) -> Result<(u32, Vec<CategoryRule>), tokio_postgres::Error> {
    Ok(pg
        .query_opt(
            &format!("SELECT rules_version, rules FROM {schema}.org_state WHERE org_id = $1"),
            &[&org],
        )
        .await?
        .map_or((0, Vec::new()), |r| {
            let rules: Value = r.get(1);
            (
                r.get::<_, i32>(0) as u32,
                serde_json::from_value(rules).unwrap_or_default(),
            )
        }))
}

/// What made a version's schema: the schema and classifier versions of
/// the code that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The schema version its tables were made by.
    pub schema_version: u32,
    /// The classifier version it classifies with.
    pub classifier_version: u32,
}

/// The schema's [`Meta`].
pub async fn meta(pg: &impl GenericClient, schema: &str) -> Result<Meta, tokio_postgres::Error> {
    let row = pg
        .query_one(
            &format!("SELECT schema_version, classifier_version FROM {schema}.meta"),
            &[],
        )
        .await?;
    Ok(Meta {
        schema_version: row.get::<_, i32>(0) as u32,
        classifier_version: row.get::<_, i32>(1) as u32,
    })
}

/// Dashboard cells of an org from `from` to `to` (inclusive), optionally for
/// some members only, classified under `rules_version`.
pub async fn dashboard(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
    from: NaiveDate,
    to: NaiveDate,
    people: Option<&[String]>,
    rules_version: u32,
) -> Result<Vec<DashboardCell>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT d.person_id, d.day, coalesce(c.category, ARRAY['Uncategorized']), \
                 coalesce(c.score, 0), a.app, d.active, sum(d.ms)::int8 \
                 FROM {schema}.daily d \
                 JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
                 LEFT JOIN {schema}.classifications c ON c.org_id = d.org_id \
                   AND c.activity_id = d.activity_id AND c.rules_version = $5 \
                 WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3 \
                   AND ($4::text[] IS NULL OR d.person_id = ANY($4)) \
                 GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 5, 6"
            ),
            &[&org, &from, &to, &people, &(rules_version as i32)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DashboardCell {
            person_id: r.get(0),
            day: r.get(1),
            category: r.get(2),
            score: r.get(3),
            app: r.get(4),
            active: r.get(5),
            ms: r.get(6),
        })
        .collect())
}

/// Time in one group of a summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupTime {
    /// Active milliseconds.
    pub active_ms: i64,
    /// Idle milliseconds.
    pub idle_ms: i64,
    /// Active milliseconds times their category's productivity score.
    pub weighted: f64,
}

/// A range's time grouped three ways, as [`summary`] reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummaryGroups {
    /// Per member and day.
    pub member_days: Vec<(String, NaiveDate, GroupTime)>,
    /// Per category path.
    pub categories: Vec<(Vec<String>, GroupTime)>,
    /// Per app.
    pub apps: Vec<(String, GroupTime)>,
}

/// Grouping-set bit masks of [`summary`]'s query (`GROUPING(person_id, day,
/// category, app)`: a bit is set for a column grouped away).
const BY_MEMBER_DAY: i32 = 0b0011;
const BY_CATEGORY: i32 = 0b1101;

/// A range's time per member and day, per category and per app under
/// `rules_version`, in one pass (grouping sets) over the rollup, or over the
/// facts in a schema made before the rollup ([`super::ROLLUP_SINCE`]; its
/// `schema_version` from [`meta`]).
pub async fn summary(
    pg: &impl GenericClient,
    (schema, schema_version): (&str, u32),
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
    people: Option<&[String]>,
    rules_version: u32,
) -> Result<SummaryGroups, tokio_postgres::Error> {
    let source = if schema_version >= super::ROLLUP_SINCE {
        format!(
            "SELECT person_id, day, category, app, score, active_ms, idle_ms \
             FROM {schema}.rollup \
             WHERE org_id = $1 AND rules_version = $5 AND day BETWEEN $2 AND $3 \
               AND ($4::text[] IS NULL OR person_id = ANY($4))"
        )
    } else {
        format!(
            "SELECT d.person_id, d.day, coalesce(c.category, ARRAY['Uncategorized']) AS category, \
               a.app, coalesce(c.score, 0) AS score, \
               CASE WHEN d.active THEN d.ms ELSE 0 END AS active_ms, \
               CASE WHEN d.active THEN 0 ELSE d.ms END AS idle_ms \
             FROM {schema}.daily d \
             JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
             LEFT JOIN {schema}.classifications c ON c.org_id = d.org_id \
               AND c.activity_id = d.activity_id AND c.rules_version = $5 \
             WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3 \
               AND ($4::text[] IS NULL OR d.person_id = ANY($4))"
        )
    };
    let rows = pg
        .query(
            &format!(
                "SELECT GROUPING(person_id, day, category, app)::int4, person_id, day, category, app, \
                   sum(active_ms)::int8, sum(idle_ms)::int8, sum(active_ms * score)::float8 \
                 FROM ({source}) f \
                 GROUP BY GROUPING SETS ((person_id, day), (category), (app))"
            ),
            &[&org, &from, &to, &people, &(rules_version as i32)],
        )
        .await?;
    let mut groups = SummaryGroups::default();
    for r in &rows {
        let time = GroupTime {
            active_ms: r.get(5),
            idle_ms: r.get(6),
            weighted: r.get(7),
        };
        match r.get::<_, i32>(0) {
            BY_MEMBER_DAY => groups.member_days.push((r.get(1), r.get(2), time)),
            BY_CATEGORY => groups.categories.push((r.get(3), time)),
            _ => groups.apps.push((r.get(4), time)),
        }
    }
    Ok(groups)
}

/// Time each member withdrew (deleted on a device after it became spans),
/// per day of the range, in a schema that keeps it ([`super::RETRACT_SINCE`];
/// none in an older one).
pub async fn removed(
    pg: &impl GenericClient,
    (schema, schema_version): (&str, u32),
    org: &str,
    (from, to): (NaiveDate, NaiveDate),
    people: Option<&[String]>,
) -> Result<Vec<(String, NaiveDate, i64)>, tokio_postgres::Error> {
    if schema_version < super::RETRACT_SINCE {
        return Ok(Vec::new());
    }
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, day, ms FROM {schema}.removed \
                 WHERE org_id = $1 AND day BETWEEN $2 AND $3 AND ms > 0 \
                   AND ($4::text[] IS NULL OR person_id = ANY($4)) \
                 ORDER BY person_id, day"
            ),
            &[&org, &from, &to, &people],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Each member's `limit` most-used window titles in the range.
pub async fn top_titles(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
    from: NaiveDate,
    to: NaiveDate,
    people: Option<&[String]>,
    limit: i64,
) -> Result<Vec<TopTitle>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, app, title, ms FROM ( \
                   SELECT d.person_id, a.app, a.title, sum(d.ms)::int8 AS ms, \
                     row_number() OVER (PARTITION BY d.person_id ORDER BY sum(d.ms) DESC, a.title) AS n \
                   FROM {schema}.daily d \
                   JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
                   WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3 AND a.title IS NOT NULL \
                     AND ($4::text[] IS NULL OR d.person_id = ANY($4)) \
                   GROUP BY d.person_id, a.app, a.title) t \
                 WHERE n <= $5 ORDER BY person_id, ms DESC, title"
            ),
            &[&org, &from, &to, &people, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TopTitle {
            person_id: r.get(0),
            app: r.get(1),
            title: r.get(2),
            ms: r.get(3),
        })
        .collect())
}

/// One activity's time in a range, with its category under the rules in
/// force (for previewing other rules).
#[derive(Clone, PartialEq, Eq)]
pub struct ActivityTime {
    /// Application.
    pub app: String,
    /// Window title, when captured.
    pub title: Option<String>,
    /// URL, when captured.
    pub url: Option<String>,
    /// Category path under the rules in force.
    pub category: Vec<String>,
    /// Milliseconds, active and idle.
    pub ms: i64,
}

/// Every activity of an org from `from` to `to` (inclusive) with its time and
/// its category under `rules_version`.
pub async fn activity_times(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
    from: NaiveDate,
    to: NaiveDate,
    rules_version: u32,
) -> Result<Vec<ActivityTime>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT a.app, a.title, a.url, coalesce(c.category, ARRAY['Uncategorized']), \
                 sum(d.ms)::int8 \
                 FROM {schema}.daily d \
                 JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
                 LEFT JOIN {schema}.classifications c ON c.org_id = d.org_id \
                   AND c.activity_id = d.activity_id AND c.rules_version = $4 \
                 WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3 \
                 GROUP BY a.activity_id, a.app, a.title, a.url, c.category"
            ),
            &[&org, &from, &to, &(rules_version as i32)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ActivityTime {
            app: r.get(0),
            title: r.get(1),
            url: r.get(2),
            category: r.get(3),
            ms: r.get(4),
        })
        .collect())
}
