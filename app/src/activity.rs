//! Activity use cases: dashboards over the activity read model (through the
//! [`DashboardCache`]), a device's raw timelines, and the org's
//! classification rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use trackhrs_domain::Token;
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::classifier::{self, Rules};
use trackhrs_domain::organization::OrgCommand;
use trackhrs_domain::permissions::{Read, Scope};
use trackhrs_projections::activity::{self, DashboardCell};
pub use trackhrs_projections::timeline::TimelineRow;
use trackhrs_projections::{directory, timeline};

use crate::cache::{Answer, DashboardCache, DashboardKey};
use crate::caller::Caller;
use crate::error::{AppError, NOT_YOURS};
use crate::org::{OrgCommands, Outcome};
use crate::reads::{ReadModels, bounded_error, role_in, scope_of};

mod summary;

use self::summary::Header;
pub use self::summary::{DashboardSummary, DayTotal, MemberTotal};

/// Longest dashboard range, in days.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Most people one dashboard query names.
pub const MAX_PEOPLE: usize = 1000;
/// Top window titles per member.
const TOP_TITLES: i64 = 10;
/// Longest range of one timeline query.
pub const MAX_TIMELINE_RANGE_MS: i64 = 31 * 24 * 3_600_000;
/// Most events in one timeline answer.
pub const MAX_TIMELINE_EVENTS: usize = 10_000;
/// Most bytes of one timeline answer (events weighed by their data, names
/// and 64 bytes: data of up to 16 KiB each would make 10,000 of them 160
/// MiB), under the 4 MiB a gRPC client takes by default.
pub const MAX_TIMELINE_BYTES: usize = 3 * 1024 * 1024;

/// Time of one member on one day, or in one category or app of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// Category path (`Work > Programming`) or app name.
    pub name: String,
    /// Active milliseconds.
    pub active_ms: i64,
    /// Idle milliseconds.
    pub idle_ms: i64,
}

/// One member's day.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDay {
    /// The member.
    pub person_id: String,
    /// The day in the org's time zone.
    pub day: NaiveDate,
    /// Active milliseconds.
    pub active_ms: i64,
    /// Idle milliseconds.
    pub idle_ms: i64,
    /// Active time weighted by category scores, per active millisecond.
    pub productivity: f64,
    /// By category, largest first.
    pub categories: Vec<Breakdown>,
    /// By app, largest first.
    pub apps: Vec<Breakdown>,
    /// Time the member withdrew (deleted on a device after it was recorded):
    /// in no other figure, and without any detail of what it was.
    pub removed_ms: i64,
}

/// A window title a member spent much time in.
pub use trackhrs_projections::activity::TopTitle;

/// A dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// The organization.
    pub org_id: String,
    /// Its IANA time zone (days are its days).
    pub timezone: String,
    /// The classification rules version the figures use.
    pub rules_version: u32,
    /// The classifier version the figures use.
    pub classifier_version: u32,
    /// The stream position the figures reflect.
    pub position: u64,
    /// Member days.
    pub days: Vec<MemberDay>,
    /// Top titles per member.
    pub top_titles: Vec<TopTitle>,
}

/// A device's raw timeline events in a range.
/// Not `Debug`: events hold window titles and URLs.
#[derive(Clone, PartialEq)]
pub struct DeviceTimelineView {
    /// The device.
    pub device_id: String,
    /// The stream position the answer reflects.
    pub position: u64,
    /// True when more events overlap the range than one answer holds.
    pub truncated: bool,
    /// The events, each with its category.
    pub events: Vec<ClassifiedEvent>,
}

/// A raw timeline event with its category under the org's rules in force.
#[derive(Clone, PartialEq)]
pub struct ClassifiedEvent {
    /// The event as stored.
    pub row: TimelineRow,
    /// Category path for window and browser-tab events; empty for others
    /// (AFK, editors, ...).
    pub category: Vec<String>,
}

/// The category of a window or browser-tab event, classified as the
/// dashboards classify a span: by app, title and URL.
fn categorize(rules: &Rules, row: &TimelineRow) -> Vec<String> {
    let Some(data) = row.data.as_ref() else {
        return Vec::new();
    };
    let field = |name: &str| data.get(name).and_then(|v| v.as_str());
    let app = match row.bucket_type.as_str() {
        "currentwindow" => field("app").unwrap_or(""),
        t if t.starts_with("web.tab") => field("app").unwrap_or(""),
        _ => return Vec::new(),
    };
    rules
        .classify(app, field("title").unwrap_or(""), field("url"))
        .category
}

/// The classification rules in force.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesInForce {
    /// Their version (0: the default rules).
    pub version: u32,
    /// The rules.
    pub rules: Vec<CategoryRule>,
    /// The same rules as an ActivityWatch categories export.
    pub activitywatch_json: String,
}

/// New classification rules, as given or as an ActivityWatch export.
#[derive(Debug, Clone)]
pub enum NewRules {
    /// Rules as a list (empty: back to the default rules).
    List(Vec<CategoryRule>),
    /// An ActivityWatch categories export (JSON).
    ActivityWatch(String),
}

impl NewRules {
    /// The rules as a list: an export is read, naming the field it came in.
    fn into_list(self) -> Result<Vec<CategoryRule>, AppError> {
        match self {
            Self::List(rules) => Ok(rules),
            Self::ActivityWatch(json) => classifier::parse_activitywatch(&json)
                .map_err(|e| AppError::invalid("activitywatch_json", e)),
        }
    }
}

/// Days a rules preview covers, today included.
pub const PREVIEW_DAYS: i64 = 7;

/// How other rules would classify recent activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesPreview {
    /// First day covered, in the org's time zone.
    pub from: NaiveDate,
    /// Last day covered (today).
    pub to: NaiveDate,
    /// The version of the rules in force it compares with.
    pub rules_version: u32,
    /// Category path (`A > B`) -> (milliseconds now, with the new rules).
    pub categories: BTreeMap<String, (i64, i64)>,
    /// Milliseconds that would change category.
    pub moved_ms: i64,
    /// Milliseconds covered.
    pub total_ms: i64,
}

/// Folds dashboard cells and the time members withdrew into member days.
fn member_days(cells: &[DashboardCell], removed: Vec<(String, NaiveDate, i64)>) -> Vec<MemberDay> {
    #[derive(Default)]
    struct Day {
        active: i64,
        idle: i64,
        weighted: f64,
        categories: BTreeMap<String, (i64, i64)>,
        apps: BTreeMap<String, (i64, i64)>,
        removed: i64,
    }
    let mut days: BTreeMap<(String, NaiveDate), Day> = BTreeMap::new();
    for (person, day, ms) in removed {
        days.entry((person, day)).or_default().removed += ms;
    }
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
        let mut v: Vec<Breakdown> = m
            .into_iter()
            .map(|(name, (active_ms, idle_ms))| Breakdown {
                name,
                active_ms,
                idle_ms,
            })
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.active_ms + b.idle_ms));
        v
    };
    days.into_iter()
        .map(|((person_id, day), d)| MemberDay {
            person_id,
            day,
            active_ms: d.active,
            idle_ms: d.idle,
            productivity: if d.active > 0 {
                d.weighted / d.active as f64
            } else {
                0.0
            },
            categories: breakdown(d.categories),
            apps: breakdown(d.apps),
            removed_ms: d.removed,
        })
        .collect()
}

/// An answer read from the activity read model.
trait Query: Answer + Sized {
    /// Reads it in `tx`; `header` says what it reflects.
    async fn read(
        tx: &tokio_postgres::Transaction<'_>,
        schema: &str,
        key: &DashboardKey,
        header: Header,
    ) -> Result<Self, tokio_postgres::Error>;
}

impl Query for Dashboard {
    async fn read(
        tx: &tokio_postgres::Transaction<'_>,
        schema: &str,
        key: &DashboardKey,
        header: Header,
    ) -> Result<Self, tokio_postgres::Error> {
        let (org, people) = (key.org.as_str(), key.people.as_deref());
        let cells = activity::dashboard(
            tx,
            schema,
            org,
            key.from,
            key.to,
            people,
            header.rules_version,
        )
        .await?;
        let top_titles =
            activity::top_titles(tx, schema, org, key.from, key.to, people, TOP_TITLES).await?;
        let removed = activity::removed(
            tx,
            (schema, header.meta.schema_version),
            org,
            (key.from, key.to),
            people,
        )
        .await?;
        Ok(Dashboard {
            org_id: header.org_id,
            timezone: header.timezone,
            rules_version: header.rules_version,
            classifier_version: header.meta.classifier_version,
            position: header.position,
            days: member_days(&cells, removed),
            top_titles,
        })
    }
}

impl Query for DashboardSummary {
    async fn read(
        tx: &tokio_postgres::Transaction<'_>,
        schema: &str,
        key: &DashboardKey,
        header: Header,
    ) -> Result<Self, tokio_postgres::Error> {
        let groups = activity::summary(
            tx,
            (schema, header.meta.schema_version),
            &key.org,
            (key.from, key.to),
            key.people.as_deref(),
            header.rules_version,
        )
        .await?;
        let removed = activity::removed(
            tx,
            (schema, header.meta.schema_version),
            &key.org,
            (key.from, key.to),
            key.people.as_deref(),
        )
        .await?;
        Ok(summary::summarise(header, groups, removed))
    }
}

/// Why a dashboard read failed.
enum ReadError {
    /// The schema was dropped under the read (a rebuild switched).
    SchemaGone,
    /// Anything else.
    App(AppError),
}

impl From<AppError> for ReadError {
    fn from(error: AppError) -> Self {
        Self::App(error)
    }
}

fn read_error(e: tokio_postgres::Error) -> ReadError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
            ReadError::SchemaGone
        }
        _ => ReadError::App(bounded_error(e)),
    }
}

/// The activity use cases.
#[derive(Clone)]
pub struct Activity {
    orgs: OrgCommands,
    reads: ReadModels,
    dashboards: DashboardCache,
}

impl Activity {
    pub(crate) fn new(orgs: OrgCommands, reads: ReadModels, dashboards: DashboardCache) -> Self {
        Self {
            orgs,
            reads,
            dashboards,
        }
    }

    /// The dashboard cache (for operators and tests).
    pub fn cache(&self) -> &DashboardCache {
        &self.dashboards
    }

    /// Reads one answer in one read-only repeatable-read transaction, so its
    /// parts agree with each other (a rules change committed between two of
    /// them cannot show up in only one) and a rebuild's drop waits for it.
    async fn read_answer<T: Query>(
        &self,
        key: &DashboardKey,
        min_position: u64,
    ) -> Result<T, ReadError> {
        let mut model = self.reads.read_model(activity::NAME, min_position).await?;
        let schema = model.schema.clone();
        let position = model.position;
        let tx = model.bounded(true).await.map_err(read_error)?;
        let t: &tokio_postgres::Transaction<'_> = &tx;
        let (timezone, rules_version) = activity::org_info(t, &schema, &key.org)
            .await
            .map_err(read_error)?;
        let header = Header {
            org_id: key.org.clone(),
            timezone,
            rules_version,
            meta: activity::meta(t, &schema).await.map_err(read_error)?,
            position,
        };
        let answer = T::read(t, &schema, key, header).await.map_err(read_error)?;
        tx.commit().await.map_err(read_error)?;
        Ok(answer)
    }

    /// The dashboard of `from..=to` (days in the org's time zone) for the
    /// people asked (everyone when none), as far as the caller may see them.
    #[tracing::instrument(skip_all)]
    pub async fn dashboard(
        &self,
        caller: &Caller,
        org_id: &str,
        range: (NaiveDate, NaiveDate),
        people: Vec<Token>,
        min_position: u64,
    ) -> Result<Arc<Dashboard>, AppError> {
        let key = self.key(caller, org_id, range, people).await?;
        self.answer(key, min_position).await
    }

    /// The totals of the dashboard of `from..=to` for the people asked
    /// (everyone when none), as far as the caller may see them.
    #[tracing::instrument(skip_all)]
    pub async fn summary(
        &self,
        caller: &Caller,
        org_id: &str,
        range: (NaiveDate, NaiveDate),
        people: Vec<Token>,
        min_position: u64,
    ) -> Result<Arc<DashboardSummary>, AppError> {
        let key = self.key(caller, org_id, range, people).await?;
        self.answer(key, min_position).await
    }

    /// The cache key of a dashboard query: the range checked, the people
    /// narrowed to what the caller may see.
    async fn key(
        &self,
        caller: &Caller,
        org_id: &str,
        (from, to): (NaiveDate, NaiveDate),
        people: Vec<Token>,
    ) -> Result<DashboardKey, AppError> {
        let org = caller.scope(org_id)?;
        if to < from {
            return Err(AppError::invalid("to", "must not be before from"));
        }
        if people.len() > MAX_PEOPLE {
            return Err(AppError::invalid(
                "person_ids",
                format!("at most {MAX_PEOPLE} people (none: everyone the caller sees)"),
            ));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(AppError::invalid(
                "to",
                format!("a dashboard covers at most {MAX_RANGE_DAYS} days"),
            ));
        }
        let people: Vec<String> = people.into_iter().map(|p| p.to_string()).collect();
        let people = match self.reads.authorize(caller, Read::Dashboard).await? {
            Scope::Org => (!people.is_empty()).then(|| {
                let mut people = people;
                people.sort();
                people.dedup();
                people
            }),
            Scope::Team => {
                // Managers: themselves and the members of the teams they
                // manage (all of them when no one is named).
                let state = self.orgs.cached_state(&org).await?;
                let mut team: Vec<String> = state
                    .managed_members(&caller.person)
                    .into_iter()
                    .map(|p| p.to_string())
                    .collect();
                team.push(caller.person.to_string());
                team.sort();
                if people.iter().any(|p| team.binary_search(p).is_err()) {
                    return Err(AppError::not_allowed(NOT_YOURS));
                }
                if people.is_empty() {
                    Some(team)
                } else {
                    let mut people = people;
                    people.sort();
                    people.dedup();
                    Some(people)
                }
            }
            _ => {
                let me = caller.person.to_string();
                if people.iter().any(|p| *p != me) {
                    return Err(AppError::not_allowed(NOT_YOURS));
                }
                Some(vec![me])
            }
        };
        Ok(DashboardKey {
            org: org.to_string(),
            from,
            to,
            people,
        })
    }

    /// The cached answer for `key`, or a fresh read (stored in the cache).
    async fn answer<T: Query>(
        &self,
        key: DashboardKey,
        min_position: u64,
    ) -> Result<Arc<T>, AppError> {
        if let Some(hit) = self.dashboards.get(&key, min_position) {
            return Ok(hit);
        }
        let generation = self.dashboards.generation();
        // A rebuild's switch may drop the schema just looked up: look again once.
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            match self.read_answer::<T>(&key, min_position).await {
                Err(ReadError::SchemaGone) if attempt == 1 => continue,
                Err(ReadError::SchemaGone) => {
                    return Err(AppError::unavailable(
                        "the activity read model is switching versions; try again",
                    ));
                }
                Err(ReadError::App(e)) => return Err(e),
                Ok(answer) => break Arc::new(answer),
            }
        };
        self.dashboards.put(key, answer.clone(), generation);
        Ok(answer)
    }

    /// A device's raw timeline events overlapping `from_ms..to_ms`, for the
    /// people who may see its member's time. A device the caller may not
    /// see gets the same answer as one that does not exist.
    #[tracing::instrument(skip_all)]
    pub async fn device_timeline(
        &self,
        caller: &Caller,
        org_id: &str,
        device: Token,
        (from_ms, to_ms): (i64, i64),
        min_position: u64,
    ) -> Result<DeviceTimelineView, AppError> {
        let org = caller.scope(org_id)?;
        if to_ms <= from_ms {
            return Err(AppError::invalid(
                "to_unix_ms",
                "must be after from_unix_ms",
            ));
        }
        if to_ms.saturating_sub(from_ms) > MAX_TIMELINE_RANGE_MS {
            return Err(AppError::invalid(
                "to_unix_ms",
                "a query covers at most 31 days",
            ));
        }
        let dir = self.reads.read_model(directory::NAME, 0).await?;
        let scope = scope_of(role_in(&dir, caller).await?, Read::DeviceTimeline)?;
        let owner =
            directory::device_owner(&dir.client, &dir.schema, org.as_str(), device.as_str())
                .await?;
        drop(dir);
        match owner {
            Some(owner) if scope == Scope::Org || owner == caller.person.as_str() => {}
            None if scope == Scope::Org => {
                return Err(AppError::new(
                    crate::error::ErrorKind::NotFound,
                    "no such device in this organization",
                ));
            }
            _ => return Err(AppError::not_allowed(NOT_YOURS)),
        }
        let mut model = self.reads.read_model(timeline::NAME, min_position).await?;
        let range = (from_ms.saturating_mul(1000), to_ms.saturating_mul(1000));
        let (schema, position) = (model.schema.clone(), model.position);
        let tx = model.bounded(false).await.map_err(bounded_error)?;
        let (events, truncated) = timeline::device_events(
            &*tx,
            &schema,
            org.as_str(),
            device.as_str(),
            range,
            (MAX_TIMELINE_EVENTS as i64, MAX_TIMELINE_BYTES as i64),
        )
        .await
        .map_err(bounded_error)?;
        tx.commit().await.map_err(bounded_error)?;
        drop(model);
        let activity = self.reads.read_model(activity::NAME, 0).await?;
        let pg: &tokio_postgres::Client = &activity.client;
        let (_, rules) = activity::org_rules(pg, &activity.schema, org.as_str()).await?;
        drop(activity);
        // Rules in force were checked when they were set: they compile.
        let rules =
            Rules::compile(&Rules::in_force(&rules)).map_err(|e| AppError::invalid("rules", e))?;
        Ok(DeviceTimelineView {
            device_id: device.to_string(),
            position,
            truncated,
            events: events
                .into_iter()
                .map(|row| ClassifiedEvent {
                    category: categorize(&rules, &row),
                    row,
                })
                .collect(),
        })
    }

    /// Sets the org's classification rules (a new rules version; the
    /// activity projection reclassifies with it).
    #[tracing::instrument(skip_all)]
    pub async fn set_rules(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        rules: NewRules,
    ) -> Result<(Outcome, u32), AppError> {
        let org = caller.scope(org_id)?;
        // A list is checked by the aggregate (`Rules::compile`); an export is
        // read first, naming the field it came in.
        let rules = rules.into_list()?;
        let categories = rules.len() as u32;
        let command = OrgCommand::SetCategoryRules {
            actor: caller.person.clone(),
            rules,
        };
        let outcome = self
            .orgs
            .execute(&org, &caller.actor(), command_id, command)
            .await?;
        Ok((outcome, categories))
    }

    /// How `rules` would classify the org's last [`PREVIEW_DAYS`] days (in
    /// its time zone, today included) against the rules in force: time per
    /// category both ways, and how much would change category. Nothing is
    /// stored.
    #[tracing::instrument(skip_all)]
    pub async fn preview_rules(
        &self,
        caller: &Caller,
        org_id: &str,
        rules: NewRules,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RulesPreview, AppError> {
        let org = caller.scope(org_id)?;
        let rules = rules.into_list()?;
        let proposed = if rules.is_empty() {
            Rules::in_force(&rules)
        } else {
            rules
        };
        let compiled = Rules::compile(&proposed).map_err(|e| AppError::invalid("rules", e))?;
        self.reads.authorize(caller, Read::RulesPreview).await?;
        let mut model = self.reads.read_model(activity::NAME, 0).await?;
        let schema = model.schema.clone();
        let tx = model.bounded(true).await.map_err(bounded_error)?;
        let (timezone, rules_version) = activity::org_info(&*tx, &schema, org.as_str())
            .await
            .map_err(bounded_error)?;
        let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
        let to = now.with_timezone(&tz).date_naive();
        let from = to - chrono::Duration::days(PREVIEW_DAYS - 1);
        let times = activity::activity_times(&*tx, &schema, org.as_str(), from, to, rules_version)
            .await
            .map_err(bounded_error)?;
        tx.commit().await.map_err(bounded_error)?;
        drop(model);
        let mut categories: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut moved = 0;
        let mut total = 0;
        for time in times {
            let now_in = time.category.join(" > ");
            let then_in = compiled
                .classify(
                    &time.app,
                    time.title.as_deref().unwrap_or(""),
                    time.url.as_deref(),
                )
                .category
                .join(" > ");
            categories.entry(now_in.clone()).or_default().0 += time.ms;
            categories.entry(then_in.clone()).or_default().1 += time.ms;
            if now_in != then_in {
                moved += time.ms;
            }
            total += time.ms;
        }
        Ok(RulesPreview {
            from,
            to,
            rules_version,
            categories,
            moved_ms: moved,
            total_ms: total,
        })
    }

    /// The org's classification rules in force, as the activity read model
    /// has applied them.
    #[tracing::instrument(skip_all)]
    pub async fn rules(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<RulesInForce, AppError> {
        let org = caller.scope(org_id)?;
        self.reads.authorize(caller, Read::CategoryRules).await?;
        let model = self.reads.read_model(activity::NAME, min_position).await?;
        let pg: &tokio_postgres::Client = &model.client;
        let (version, rules) = activity::org_rules(pg, &model.schema, org.as_str()).await?;
        let rules = Rules::in_force(&rules);
        Ok(RulesInForce {
            version,
            activitywatch_json: classifier::to_activitywatch(&rules),
            rules,
        })
    }
}
