//! `trackhrs.activity.v1.Activity`: dashboards over the activity read model,
//! through a moka cache that every replica evicts per org when the activity
//! projection commits; and the org's classification rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;
use tonic::{Request, Response, Status};
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_projections::activity::{self, DashboardCell};
use trackhrs_projections::classifier::{self, CategoryRule};
use trackhrs_projections::invalidation;
use trackhrs_schemas::activity::v1 as pb;
use trackhrs_schemas::activity::v1::activity_server::Activity;

use crate::caller::{self, Caller};
use crate::core::Core;
use crate::{status, validate};

/// Longest dashboard range, in days.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Top window titles per member.
const TOP_TITLES: i64 = 10;

/// What a dashboard answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DashboardKey {
    org: String,
    from: NaiveDate,
    to: NaiveDate,
    people: Option<Vec<String>>,
}

/// Dashboards by query, with the position each reflects.
///
/// A dashboard read before an invalidation may finish after it; so each
/// org's last invalidated position is kept, and a dashboard older than it is
/// neither stored nor served. A promotion bumps a generation, which does the
/// same for every org.
#[derive(Clone)]
pub struct DashboardCache {
    cache: moka::sync::Cache<DashboardKey, Arc<pb::Dashboard>>,
    invalidated: moka::sync::Cache<String, u64>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for DashboardCache {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .support_invalidation_closures()
                .build(),
            invalidated: moka::sync::Cache::new(100_000),
            generation: Arc::default(),
        }
    }
}

impl DashboardCache {
    /// Evicts every dashboard of `org` older than `position`.
    pub fn evict_org(&self, org: &str, position: u64) {
        self.invalidated
            .entry(org.to_owned())
            .and_upsert_with(|seen| seen.map_or(position, |e| (*e.value()).max(position)));
        let org = org.to_owned();
        if let Err(e) = self.cache.invalidate_entries_if(move |k, _| k.org == org) {
            tracing::warn!(error = %e, "dashboard cache eviction failed; clearing it");
            self.cache.invalidate_all();
        }
    }

    /// Evicts everything (a new projection version went live).
    pub fn clear(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fresh_enough(&self, org: &str, position: u64) -> bool {
        self.invalidated.get(org).is_none_or(|p| position >= p)
    }

    fn get(&self, key: &DashboardKey, min_position: u64) -> Option<Arc<pb::Dashboard>> {
        self.cache
            .get(key)
            .filter(|d| d.position >= min_position && self.fresh_enough(&key.org, d.position))
    }

    /// Stores a dashboard read during `generation`, unless it is already
    /// older than an invalidation.
    fn put(&self, key: DashboardKey, dashboard: &pb::Dashboard, generation: u64) {
        if generation == self.generation() && self.fresh_enough(&key.org, dashboard.position) {
            self.cache.insert(key, Arc::new(dashboard.clone()));
        }
    }

    /// Dashboards cached right now (for tests and metrics).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listens for the activity projection's commits and evicts the org's
/// dashboards, until the NATS connection closes.
pub async fn follow_invalidations(client: async_nats::Client, cache: DashboardCache) {
    let subjects = [
        invalidation::org_wildcard(activity::NAME),
        invalidation::promotion_subject(activity::NAME),
    ];
    let mut subs = Vec::new();
    for subject in subjects {
        match client.subscribe(subject.clone()).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                tracing::error!(subject, error = %e, "cannot follow dashboard invalidations");
                return;
            }
        }
    }
    let promotion = invalidation::promotion_subject(activity::NAME);
    let mut messages = futures::stream::select_all(subs);
    while let Some(msg) = messages.next().await {
        if msg.subject.as_str() == promotion {
            cache.clear();
        } else if let Some(org) = msg.subject.as_str().rsplit('.').next() {
            let position = std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(u64::MAX);
            cache.evict_org(org, position);
        }
    }
}

/// The activity service.
pub struct ActivityService {
    core: Arc<Core>,
}

impl ActivityService {
    /// A service over the shared state.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn date(field: &str, value: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| Status::invalid_argument(format!("{field}: must be a date as YYYY-MM-DD")))
}

fn rule_from_wire(rule: pb::CategoryRule) -> CategoryRule {
    CategoryRule {
        name: rule.name,
        regex: rule.regex,
        ignore_case: rule.ignore_case,
        score: rule.score,
    }
}

pub(crate) fn rule_to_wire(rule: &CategoryRule) -> pb::CategoryRule {
    pb::CategoryRule {
        name: rule.name.clone(),
        regex: rule.regex.clone(),
        ignore_case: rule.ignore_case,
        score: rule.score,
    }
}

/// Folds dashboard cells into member days.
fn member_days(cells: &[DashboardCell]) -> Vec<pb::MemberDay> {
    #[derive(Default)]
    struct Day {
        active: i64,
        idle: i64,
        weighted: f64,
        categories: BTreeMap<String, (i64, i64)>,
        apps: BTreeMap<String, (i64, i64)>,
    }
    let mut days: BTreeMap<(String, NaiveDate), Day> = BTreeMap::new();
    for cell in cells {
        let day = days.entry((cell.person_id.clone(), cell.day)).or_default();
        let category = day.categories.entry(cell.category.join(" > ")).or_default();
        let app = day.apps.entry(cell.app.clone()).or_default();
        if cell.active {
            day.active += cell.ms;
            day.weighted += cell.ms as f64 * f64::from(cell.score);
            category.0 += cell.ms;
            app.0 += cell.ms;
        } else {
            day.idle += cell.ms;
            category.1 += cell.ms;
            app.1 += cell.ms;
        }
    }
    let breakdown = |m: BTreeMap<String, (i64, i64)>| {
        let mut v: Vec<pb::Breakdown> = m
            .into_iter()
            .map(|(name, (active_ms, idle_ms))| pb::Breakdown {
                name,
                active_ms,
                idle_ms,
            })
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.active_ms + b.idle_ms));
        v
    };
    days.into_iter()
        .map(|((person_id, day), d)| pb::MemberDay {
            person_id,
            day: day.to_string(),
            active_ms: d.active,
            idle_ms: d.idle,
            productivity: if d.active > 0 {
                d.weighted / d.active as f64
            } else {
                0.0
            },
            categories: breakdown(d.categories),
            apps: breakdown(d.apps),
        })
        .collect()
}

/// Why a dashboard read failed.
enum ReadError {
    /// The schema was dropped under the read (a rebuild switched).
    SchemaGone,
    /// Anything else, as a status.
    Status(Status),
}

impl From<Status> for ReadError {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

fn read_error(e: tokio_postgres::Error) -> ReadError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
            ReadError::SchemaGone
        }
        _ => ReadError::Status(status::query(&e)),
    }
}

impl ActivityService {
    /// Reads one dashboard in one read-only repeatable-read transaction, so
    /// its parts agree with each other (a rules change committed between two
    /// of them cannot show up in only one) and a rebuild's drop waits for it.
    async fn read_dashboard(
        &self,
        org: &trackhrs_domain::Token,
        from: NaiveDate,
        to: NaiveDate,
        people: Option<&[String]>,
        min_position: u64,
    ) -> Result<pb::Dashboard, ReadError> {
        let (mut client, schema, position) =
            self.core.read_model(activity::NAME, min_position).await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(read_error)?;
        let t: &tokio_postgres::Transaction<'_> = &tx;
        let (timezone, rules_version) = activity::org_info(t, &schema, org.as_str())
            .await
            .map_err(read_error)?;
        let classifier_version = activity::classifier_version(t, &schema)
            .await
            .map_err(read_error)?;
        let cells = activity::dashboard(t, &schema, org.as_str(), from, to, people, rules_version)
            .await
            .map_err(read_error)?;
        let titles = activity::top_titles(t, &schema, org.as_str(), from, to, people, TOP_TITLES)
            .await
            .map_err(read_error)?;
        tx.commit().await.map_err(read_error)?;
        Ok(pb::Dashboard {
            org_id: org.to_string(),
            timezone,
            rules_version,
            classifier_version,
            position,
            days: member_days(&cells),
            top_titles: titles
                .into_iter()
                .map(|t| pb::TopTitle {
                    person_id: t.person_id,
                    app: t.app,
                    title: t.title,
                    ms: t.ms,
                })
                .collect(),
        })
    }

    /// Whom the caller may see: everyone for owners, admins, managers and
    /// auditors; employees themselves only.
    fn people(
        caller: &Caller,
        role: Role,
        asked: Vec<String>,
    ) -> Result<Option<Vec<String>>, Status> {
        if role != Role::Employee {
            return Ok((!asked.is_empty()).then(|| {
                let mut asked = asked;
                asked.sort();
                asked.dedup();
                asked
            }));
        }
        let me = caller.person.to_string();
        if asked.iter().any(|p| *p != me) {
            return Err(Status::permission_denied(
                "employees see only their own time",
            ));
        }
        Ok(Some(vec![me]))
    }
}

#[tonic::async_trait]
impl Activity for ActivityService {
    async fn get_dashboard(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::Dashboard>, Status> {
        let caller = caller::person(&self.core.auth, &request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (from, to) = (date("from", &r.from)?, date("to", &r.to)?);
        if to < from {
            return Err(Status::invalid_argument("to: must not be before from"));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(Status::invalid_argument(format!(
                "to: a dashboard covers at most {MAX_RANGE_DAYS} days"
            )));
        }
        for person in &r.person_ids {
            validate::id("person_ids", person)?;
        }
        let (dir, dir_schema, _) = self.core.directory(0).await?;
        let role = self
            .core
            .directory_role(&dir, &dir_schema, &org, &caller.person)
            .await?;
        drop(dir);
        let people = Self::people(&caller, role, r.person_ids)?;
        let key = DashboardKey {
            org: org.to_string(),
            from,
            to,
            people: people.clone(),
        };
        if let Some(hit) = self.core.dashboards.get(&key, r.min_position) {
            return Ok(Response::new((*hit).clone()));
        }
        let generation = self.core.dashboards.generation();
        // A rebuild's switch may drop the schema just looked up: look again once.
        let mut attempt = 0;
        let dashboard = loop {
            attempt += 1;
            match self
                .read_dashboard(&org, from, to, people.as_deref(), r.min_position)
                .await
            {
                Err(ReadError::SchemaGone) if attempt == 1 => continue,
                Err(ReadError::SchemaGone) => {
                    return Err(Status::unavailable(
                        "the activity read model is switching versions; try again",
                    ));
                }
                Err(ReadError::Status(status)) => return Err(status),
                Ok(dashboard) => break dashboard,
            }
        };
        self.core.dashboards.put(key, &dashboard, generation);
        Ok(Response::new(dashboard))
    }

    async fn get_device_timeline(
        &self,
        request: Request<pb::GetDeviceTimelineRequest>,
    ) -> Result<Response<pb::DeviceTimeline>, Status> {
        let caller = caller::person(&self.core.auth, &request).await?;
        crate::timeline::device_timeline(&self.core, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_category_rules(
        &self,
        request: Request<pb::SetCategoryRulesRequest>,
    ) -> Result<Response<pb::SetCategoryRulesResponse>, Status> {
        let caller = caller::person(&self.core.auth, &request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let command_id = validate::command_id(&r.command_id)?;
        let rules = if r.activitywatch_json.is_empty() {
            let rules: Vec<CategoryRule> = r.rules.into_iter().map(rule_from_wire).collect();
            if !rules.is_empty() {
                classifier::Rules::compile(&rules)
                    .map_err(|e| Status::invalid_argument(format!("rules: {e}")))?;
            }
            rules
        } else if !r.rules.is_empty() {
            return Err(Status::invalid_argument(
                "rules: give either rules or activitywatch_json, not both",
            ));
        } else {
            classifier::parse_activitywatch(&r.activitywatch_json)
                .map_err(|e| Status::invalid_argument(format!("activitywatch_json: {e}")))?
        };
        let categories = rules.len() as u32;
        let executed = self
            .core
            .org_command(
                &org,
                &caller.actor(),
                &command_id,
                OrgCommand::SetCategoryRules {
                    actor: caller.person.clone(),
                    rules,
                },
            )
            .await?;
        Ok(Response::new(pb::SetCategoryRulesResponse {
            version: executed.version,
            position: executed.appended.map_or(0, |a| a.position),
            duplicate: executed.appended.is_some_and(|a| a.duplicate),
            categories,
        }))
    }

    async fn get_category_rules(
        &self,
        request: Request<pb::GetCategoryRulesRequest>,
    ) -> Result<Response<pb::CategoryRules>, Status> {
        let caller = caller::person(&self.core.auth, &request).await?;
        let r = request.into_inner();
        let org = caller.scope(&r.org_id)?;
        let (dir, dir_schema, _) = self.core.directory(0).await?;
        self.core
            .directory_role(&dir, &dir_schema, &org, &caller.person)
            .await?;
        drop(dir);
        let (client, schema, _) = self.core.read_model(activity::NAME, r.min_position).await?;
        let pg: &tokio_postgres::Client = &client;
        let (rules_version, rules) = activity::org_rules(pg, &schema, org.as_str())
            .await
            .map_err(|e| status::query(&e))?;
        let in_force = if rules.is_empty() {
            classifier::Rules::default_rules()
        } else {
            rules
        };
        Ok(Response::new(pb::CategoryRules {
            rules_version,
            rules: in_force.iter().map(rule_to_wire).collect(),
            activitywatch_json: classifier::to_activitywatch(&in_force),
        }))
    }
}
