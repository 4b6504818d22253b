//! The activity read model behind the dashboards: time per member, day (in
//! the org's time zone), activity (app, title, URL) and active/idle, plus the
//! classification of each distinct activity under the org's current rules.
//!
//! Facts do not depend on classification: `daily` holds milliseconds per
//! (member, day, activity, active) and `classifications` holds the category
//! of each distinct activity per (rules version, classifier version), so a
//! rules change classifies the org's distinct activities once under the new
//! version and the dashboards move time between categories without touching
//! a fact. A batch of commits costs a handful of statements: one read of the
//! orgs' state, multi-row upserts of activities and facts, one read and one
//! insert of classifications, one upsert of the rollup.
//!
//! `rollup` sums the facts per (member, day, category, app) under each
//! org's rules in force: a dashboard's summary reads a few rows per
//! member-day instead of one per distinct activity. When an org's rules
//! change, its rollup is rebuilt from its facts in the batch's transaction
//! (one `INSERT ... SELECT` over all the org's facts: the price of a rules
//! change, paid once by the projection instead of by every read).
//!
//! `spans` keeps each device's spans (times, activity, active; packed, one
//! row per commit, with the time zone their days were counted in) so that
//! time the employee withdrew (`TimeRetracted`) can be taken back out: the
//! spans over it are cut, their time is subtracted from `daily` and
//! `rollup` in the days it was counted in, and it is added to `removed` per
//! member and day, without any detail of what it was; an activity no fact
//! refers to any more is dropped. A device's later spans never reach back into a retraction, so a
//! batch applies its commits' spans first and their retractions after.

mod decode;
mod queries;
mod spans;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;
use trackhrs_domain::activity::DeviceActivity;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit};

pub(crate) use self::decode::decode_device;
pub use self::decode::{ActivityCommit, DeviceBatch, OpenedSpan};
pub use self::queries::{
    ActivityTime, DashboardCell, GroupTime, Meta, SummaryGroups, TopTitle, activity_times,
    dashboard, meta, org_info, org_rules, removed, summary, top_titles,
};
use self::spans::{Kept, SpanRow};
use crate::classifier::{CLASSIFIER_VERSION, CategoryRule, Rules};
use crate::error::{ApplyError, poison_at};
use crate::projection::{Committed, Projection, SchemaVersions};
use crate::withdrawn::{CutRows, Withdrawn};

/// Its name in the catalog.
pub const NAME: &str = "activity";

/// Version of this projection's tables and of what its rows mean. Bump it
/// with any change to either: `projections run` then builds a new version
/// beside the live one (as for a new classifier version).
pub const SCHEMA_VERSION: u32 = 3;

/// The first schema version with the `rollup` table. The live version of an
/// older schema keeps running with this code while the new one is built
/// beside it: it is applied to without a rollup, and read without one.
pub const ROLLUP_SINCE: u32 = 2;

/// The first schema version with the `spans` and `removed` tables: an older
/// live version is applied to without them (retractions are not applied
/// there; its replacement, built beside it, applies them).
pub const RETRACT_SINCE: u32 = 3;

/// The activity projection. Its catalog version is chosen when it is
/// started (a rebuild registers the next one); the classifier version it
/// classifies with is recorded in its schema.
#[derive(Clone)]
pub struct Activity {
    version: u32,
    rules: moka::sync::Cache<(String, u32), Arc<Rules>>,
    schemas: SchemaVersions,
}

impl Activity {
    /// The projection as catalog version `version`.
    pub fn new(version: u32) -> Self {
        Self {
            version,
            rules: moka::sync::Cache::new(10_000),
            schemas: SchemaVersions::new(),
        }
    }

    /// Compiled rules of an org at a rules version (cached: a version's
    /// rules never change).
    fn compiled(&self, org: &str, state: &OrgState) -> Arc<Rules> {
        let key = (org.to_owned(), state.rules_version);
        self.rules.get_with(key, || {
            let rules = Rules::in_force(&state.rules);
            // Stored rules were compiled when they were set; if this code
            // cannot compile them, the defaults keep the dashboard useful.
            Arc::new(Rules::compile(&rules).unwrap_or_else(|e| {
                tracing::warn!(org, error = %e, "stored rules do not compile; using the defaults");
                Rules::compile(&Rules::default_rules())
                    .unwrap_or_else(|_| unreachable!("default rules compile"))
            }))
        })
    }
}

/// What the projection keeps per org.
#[derive(Debug, Clone, Default)]
struct OrgState {
    timezone: String,
    rules_version: u32,
    rules: Vec<CategoryRule>,
    changed: bool,
    /// Set when the rules changed in this batch: classify every activity.
    reclassify: bool,
    /// Stream position of the last organization commit applied: an older
    /// one (a dead letter replayed late) must not set the state back.
    position: u64,
}

/// Distinct activities by (org, activity id): app, title, URL.
pub(crate) type Activities = BTreeMap<(String, i64), (String, Option<String>, Option<String>)>;

/// Key of one fact row.
type FactKey = (String, String, NaiveDate, i64, bool);

/// The stable id of an activity: the first 8 bytes of SHA-256 over its parts.
pub fn activity_id(app: &str, title: Option<&str>, url: Option<&str>) -> i64 {
    let mut h = Sha256::new();
    for part in [Some(app), title, url] {
        match part {
            Some(p) => {
                h.update([1u8]);
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    let digest = h.finalize();
    i64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

/// (schema version, classifier version) of this code.
pub fn code_version() -> (u32, u32) {
    (SCHEMA_VERSION, CLASSIFIER_VERSION)
}

/// (schema version, classifier version) as one number that orders the same
/// way, for the catalog.
fn code_version_number((schema, classifier): (u32, u32)) -> u64 {
    (u64::from(schema) << 32) | u64::from(classifier)
}

/// Splits `[start_ms, end_ms)` at local midnights of `tz`: (local day, ms).
pub fn split_by_day(start_ms: i64, end_ms: i64, tz: Tz) -> Vec<(NaiveDate, i64)> {
    let mut out = Vec::new();
    for_each_day(start_ms, end_ms, tz, |day, ms| out.push((day, ms)));
    out
}

/// Calls `f` with each local day of `tz` that `[start_ms, end_ms)` touches
/// and the milliseconds spent in it (no allocation: this runs per span).
pub(crate) fn for_each_day(start_ms: i64, end_ms: i64, tz: Tz, mut f: impl FnMut(NaiveDate, i64)) {
    let mut cursor = start_ms;
    while cursor < end_ms {
        let Some(at) = DateTime::<Utc>::from_timestamp_millis(cursor) else {
            break;
        };
        let day = at.with_timezone(&tz).date_naive();
        let next_day = day.succ_opt().unwrap_or(day);
        let midnight = next_day.and_hms_opt(0, 0, 0).unwrap_or_default();
        // Where a DST change skips midnight, the day starts at the first
        // local time that exists (an hour later).
        let next_ms = tz
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or(end_ms, |d| d.timestamp_millis());
        let piece_end = next_ms.clamp(cursor + 1, end_ms);
        f(day, piece_end - cursor);
        cursor = piece_end;
    }
}

impl Projection for Activity {
    type Commit = ActivityCommit;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<ActivityCommit, StoreError> {
        decode_device(keys, subject, sequence, bytes).await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![
            EventStore::subjects_of::<Organization>(),
            EventStore::subjects_of::<DeviceActivity>(),
            crate::erasure::subjects(),
        ]
    }

    fn code_version(&self) -> u64 {
        code_version_number(code_version())
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.meta (
                 schema_version     integer NOT NULL,
                 classifier_version integer NOT NULL
             );
             INSERT INTO {schema}.meta VALUES ({SCHEMA_VERSION}, {CLASSIFIER_VERSION});
             CREATE TABLE {schema}.org_state (
                 org_id        text PRIMARY KEY,
                 timezone      text NOT NULL,
                 rules_version integer NOT NULL,
                 rules         jsonb NOT NULL,
                 position      bigint NOT NULL DEFAULT 0
             );
             CREATE TABLE {schema}.activities (
                 org_id      text NOT NULL,
                 activity_id bigint NOT NULL,
                 app         text NOT NULL,
                 title       text,
                 url         text,
                 PRIMARY KEY (org_id, activity_id)
             );
             CREATE TABLE {schema}.classifications (
                 org_id             text NOT NULL,
                 rules_version      integer NOT NULL,
                 activity_id        bigint NOT NULL,
                 classifier_version integer NOT NULL,
                 category           text[] NOT NULL,
                 score              integer NOT NULL,
                 PRIMARY KEY (org_id, rules_version, activity_id)
             );
             CREATE TABLE {schema}.daily (
                 org_id      text NOT NULL,
                 person_id   text NOT NULL,
                 day         date NOT NULL,
                 activity_id bigint NOT NULL,
                 active      boolean NOT NULL,
                 ms          bigint NOT NULL,
                 PRIMARY KEY (org_id, day, person_id, activity_id, active)
             );
             CREATE INDEX ON {schema}.daily (org_id, activity_id);
             CREATE TABLE {schema}.spans (
                 org_id    text NOT NULL,
                 device_id text NOT NULL,
                 start_ms  bigint NOT NULL,
                 end_ms    bigint NOT NULL,
                 person_id text NOT NULL,
                 timezone  text NOT NULL,
                 spans     bytea NOT NULL,
                 PRIMARY KEY (org_id, device_id, end_ms)
             );
             CREATE TABLE {schema}.removed (
                 org_id    text NOT NULL,
                 person_id text NOT NULL,
                 day       date NOT NULL,
                 ms        bigint NOT NULL,
                 PRIMARY KEY (org_id, day, person_id)
             );
             CREATE TABLE {schema}.rollup (
                 org_id        text NOT NULL,
                 rules_version integer NOT NULL,
                 day           date NOT NULL,
                 person_id     text NOT NULL,
                 category      text[] NOT NULL,
                 app           text NOT NULL,
                 score         integer NOT NULL,
                 active_ms     bigint NOT NULL,
                 idle_ms       bigint NOT NULL,
                 PRIMARY KEY (org_id, rules_version, day, person_id, category, app, score)
             );"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[ActivityCommit],
    ) -> Result<(), ApplyError> {
        let orgs: BTreeSet<&str> = batch.iter().map(|c| c.org_id()).collect();
        let mut states = load_org_states(tx, schema, &orgs).await?;
        let schema_version = self.schemas.of(tx, schema).await?;
        let keep_spans = schema_version >= RETRACT_SINCE;
        let mut facts: BTreeMap<FactKey, i64> = BTreeMap::new();
        let mut activities: Activities = BTreeMap::new();
        let mut spans: Vec<SpanRow> = Vec::new();
        let mut withdrawn = Withdrawn::default();
        let mut erased = Vec::new();
        for commit in batch {
            match commit {
                ActivityCommit::Org(c) => apply_org_commit(c, &mut states)?,
                ActivityCommit::Device(b) => {
                    let state = states.entry(b.org_id.clone()).or_default();
                    let tz: Tz = state.timezone.parse().unwrap_or(Tz::UTC);
                    let kept = collect_spans(b, tz, &mut facts, &mut activities);
                    if keep_spans {
                        spans.extend(kept.map(|kept| SpanRow {
                            org: b.org_id.clone(),
                            device: b.device_id.clone(),
                            person: b.member.clone().unwrap_or_default(),
                            zone: Arc::from(state.timezone.as_str()),
                            spans: kept,
                        }));
                        for &(from, to) in &b.retracted {
                            withdrawn.add((&b.org_id, &b.device_id), from, to, b.stream_sequence);
                        }
                    }
                }
                ActivityCommit::Erasure(c) => erased
                    .extend(crate::erasure::erased(c).map(|person| (c.org_id.as_str(), person))),
            }
        }
        save_org_states(tx, schema, &states).await?;
        upsert_activities(tx, schema, &activities).await?;
        upsert_facts(tx, schema, &facts).await?;
        spans::insert(tx, schema, &spans).await?;
        let (withdrawn, cut) = retract(tx, schema, withdrawn).await?;
        for (key, ms) in &withdrawn {
            *facts.entry(key.clone()).or_default() += ms;
        }
        self.classify(tx, schema, &states, &activities).await?;
        if schema_version >= ROLLUP_SINCE {
            update_rollup(tx, schema, &states, &facts).await?;
        }
        drop_emptied(tx, schema, &withdrawn).await?;
        cut.drop_unreferenced_activities(tx, schema, "daily")
            .await?;
        // Last, so what this batch wrote for an erased person goes too.
        for (org, person) in erased {
            erase_titles(tx, schema, org, person).await?;
        }
        Ok(())
    }
}

/// Drops the titles and URLs of an erased person's activities that nobody
/// else's time refers to (a title others saw too is theirs as well). Their
/// time and its categories stay; a rebuild reads their spans without titles
/// and classifies them by application alone.
async fn erase_titles(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
    person: &str,
) -> Result<(), ApplyError> {
    tx.execute(
        &format!(
            "WITH theirs AS (
                 SELECT DISTINCT activity_id FROM {schema}.daily
                 WHERE org_id = $1 AND person_id = $2
             ), shared AS (
                 SELECT DISTINCT d.activity_id FROM {schema}.daily d
                 JOIN theirs USING (activity_id)
                 WHERE d.org_id = $1 AND d.person_id <> $2
             )
             UPDATE {schema}.activities a SET title = NULL, url = NULL
             FROM theirs
             WHERE a.org_id = $1 AND a.activity_id = theirs.activity_id
               AND (a.title IS NOT NULL OR a.url IS NOT NULL)
               AND a.activity_id NOT IN (SELECT activity_id FROM shared)"
        ),
        &[&org, &person],
    )
    .await?;
    Ok(())
}

/// The time zone of an org whose settings the projection has not seen.
pub(crate) fn timezone_default() -> String {
    "UTC".into()
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
                "SELECT org_id, timezone, rules_version, rules, position FROM {schema}.org_state \
                 WHERE org_id = ANY($1)"
            ),
            &[&ids],
        )
        .await?;
    let mut states = HashMap::new();
    for row in rows {
        let rules: Value = row.get(3);
        states.insert(
            row.get::<_, String>(0),
            OrgState {
                timezone: row.get(1),
                rules_version: row.get::<_, i32>(2) as u32,
                rules: serde_json::from_value(rules).unwrap_or_default(),
                changed: false,
                reclassify: false,
                position: row.get::<_, i64>(4) as u64,
            },
        );
    }
    for org in orgs {
        states.entry((*org).to_owned()).or_insert_with(|| OrgState {
            timezone: timezone_default(),
            changed: true,
            ..OrgState::default()
        });
    }
    Ok(states)
}

fn apply_org_commit(
    commit: &TypedCommit<OrgEvent>,
    states: &mut HashMap<String, OrgState>,
) -> Result<(), ApplyError> {
    let state = states.entry(commit.org_id.clone()).or_default();
    if commit.stream_sequence <= state.position {
        return Ok(());
    }
    state.position = commit.stream_sequence;
    state.changed = true;
    for event in &commit.events {
        match event {
            OrgEvent::SettingsChanged { settings } => {
                if settings.timezone.parse::<Tz>().is_err() {
                    return Err(poison_at(
                        commit.stream_sequence,
                        format!("unknown time zone {}", settings.timezone),
                    ));
                }
                state.timezone.clone_from(&settings.timezone);
            }
            OrgEvent::CategoryRulesChanged { version, rules } => {
                state.rules_version = *version;
                state.rules.clone_from(rules);
                state.reclassify = true;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds a device batch's spans to the batch's facts and activities, and
/// returns them as `spans` keeps them (None without a member). Spans are
/// summed per (day, activity, active) within the commit first, so the org
/// and member strings are copied once per distinct fact, and each distinct
/// (app, title, url) of the commit is hashed once.
fn collect_spans(
    batch: &DeviceBatch,
    tz: Tz,
    facts: &mut BTreeMap<FactKey, i64>,
    activities: &mut Activities,
) -> Option<Vec<Kept>> {
    let person = batch.member.as_ref()?;
    let mut kept = Vec::with_capacity(batch.spans.len());
    let mut local: HashMap<(NaiveDate, i64, bool), i64> = HashMap::new();
    let mut ids: HashMap<(&str, Option<&str>, Option<&str>), i64> = HashMap::new();
    for span in &batch.spans {
        let (app, title, url) = (
            span.app.as_str(),
            span.title.as_deref(),
            span.url.as_deref(),
        );
        let id = *ids
            .entry((app, title, url))
            .or_insert_with(|| activity_id(app, title, url));
        for_each_day(span.start_ms, span.end_ms, tz, |day, ms| {
            *local.entry((day, id, span.active)).or_default() += ms;
        });
        kept.push(Kept {
            start_ms: span.start_ms,
            end_ms: span.end_ms,
            activity: id,
            active: span.active,
        });
    }
    for ((app, title, url), id) in ids {
        activities
            .entry((batch.org_id.clone(), id))
            .or_insert_with(|| {
                (
                    app.to_owned(),
                    title.map(str::to_owned),
                    url.map(str::to_owned),
                )
            });
    }
    for ((day, id, active), ms) in local {
        *facts
            .entry((batch.org_id.clone(), person.clone(), day, id, active))
            .or_default() += ms;
    }
    Some(kept)
}

/// Cuts the withdrawn time out of its devices' spans and counts it as
/// removed by the employee per member and day, each piece in the days of
/// the time zone its span was counted in. Returns the time taken out of
/// each fact (negative).
async fn retract(
    tx: &Transaction<'_>,
    schema: &str,
    mut withdrawn: Withdrawn,
) -> Result<(BTreeMap<FactKey, i64>, CutRows), ApplyError> {
    let mut taken: BTreeMap<FactKey, i64> = BTreeMap::new();
    let mut cut = CutRows::default();
    if withdrawn.is_empty() {
        return Ok((taken, cut));
    }
    withdrawn.merge();
    let table = format!("{schema}.spans");
    let columns = "s.person_id, s.timezone, s.spans";
    let candidates = withdrawn.candidates(tx, &table, columns).await?;
    let mut removed: BTreeMap<(String, String, NaiveDate), i64> = BTreeMap::new();
    let mut rows: Vec<SpanRow> = Vec::new();
    for row in &candidates {
        let (org, device): (String, String) = (row.get(0), row.get(1));
        let (person, zone): (String, String) = (row.get(4), row.get(5));
        let spans = spans::unpack(row.get(6))
            .map_err(|e| poison_at(withdrawn.sequence(&org, &device), e))?;
        let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
        let mut stays = Vec::with_capacity(spans.len());
        let mut touched = false;
        for span in spans {
            let (pieces, stay) = withdrawn.cut(&org, &device, (span.start_ms, span.end_ms));
            touched |= !pieces.is_empty();
            for (from, to) in pieces {
                cut.touched(&org, span.activity);
                for_each_day(from, to, tz, |day, ms| {
                    *taken
                        .entry((org.clone(), person.clone(), day, span.activity, span.active))
                        .or_default() -= ms;
                    *removed
                        .entry((org.clone(), person.clone(), day))
                        .or_default() += ms;
                });
            }
            stays.extend(stay.into_iter().map(|(start_ms, end_ms)| Kept {
                start_ms,
                end_ms,
                ..span
            }));
        }
        if !touched {
            continue;
        }
        cut.push(org.clone(), device.clone(), row.get(3));
        rows.push(SpanRow {
            org,
            device,
            person,
            zone: zone.into(),
            spans: stays,
        });
    }
    cut.delete(tx, &table).await?;
    spans::insert(tx, schema, &rows).await?;
    upsert_facts(tx, schema, &taken).await?;
    for ((org, person, day), ms) in removed {
        tx.execute(
            &format!(
                "INSERT INTO {schema}.removed AS r (org_id, person_id, day, ms) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org_id, day, person_id) DO UPDATE SET ms = r.ms + EXCLUDED.ms"
            ),
            &[&org, &person, &day, &ms],
        )
        .await?;
    }
    Ok((taken, cut))
}

/// Drops the facts and rollup rows a retraction emptied: nothing of the
/// withdrawn time is left to show.
async fn drop_emptied(
    tx: &Transaction<'_>,
    schema: &str,
    withdrawn: &BTreeMap<FactKey, i64>,
) -> Result<(), ApplyError> {
    if withdrawn.is_empty() {
        return Ok(());
    }
    let days: BTreeSet<(&str, &str, NaiveDate)> = withdrawn
        .keys()
        .map(|(org, person, day, _, _)| (org.as_str(), person.as_str(), *day))
        .collect();
    let (orgs, people, days): (Vec<&str>, Vec<&str>, Vec<NaiveDate>) =
        days.into_iter()
            .fold(Default::default(), |mut cols, (o, p, d)| {
                cols.0.push(o);
                cols.1.push(p);
                cols.2.push(d);
                cols
            });
    tx.execute(
        &format!(
            "DELETE FROM {schema}.daily d \
             USING unnest($1::text[], $2::text[], $3::date[]) AS c(org_id, person_id, day) \
             WHERE d.org_id = c.org_id AND d.person_id = c.person_id AND d.day = c.day \
               AND d.ms <= 0"
        ),
        &[&orgs, &people, &days],
    )
    .await?;
    tx.execute(
        &format!(
            "DELETE FROM {schema}.rollup r \
             USING unnest($1::text[], $2::text[], $3::date[]) AS c(org_id, person_id, day) \
             WHERE r.org_id = c.org_id AND r.person_id = c.person_id AND r.day = c.day \
               AND r.active_ms <= 0 AND r.idle_ms <= 0"
        ),
        &[&orgs, &people, &days],
    )
    .await?;
    Ok(())
}

async fn save_org_states(
    tx: &Transaction<'_>,
    schema: &str,
    states: &HashMap<String, OrgState>,
) -> Result<(), ApplyError> {
    let changed: Vec<(&String, &OrgState)> = states.iter().filter(|(_, s)| s.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = changed.iter().map(|(o, _)| o.as_str()).collect();
    let tzs: Vec<&str> = changed.iter().map(|(_, s)| s.timezone.as_str()).collect();
    let versions: Vec<i32> = changed
        .iter()
        .map(|(_, s)| s.rules_version as i32)
        .collect();
    let rules: Vec<Value> = changed
        .iter()
        .map(|(_, s)| serde_json::to_value(&s.rules).unwrap_or(Value::Null))
        .collect();
    let positions: Vec<i64> = changed.iter().map(|(_, s)| s.position as i64).collect();
    tx.execute(
        &format!(
            "INSERT INTO {schema}.org_state (org_id, timezone, rules_version, rules, position) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::jsonb[], $5::int8[]) \
             ON CONFLICT (org_id) DO UPDATE SET timezone = EXCLUDED.timezone, \
             rules_version = EXCLUDED.rules_version, rules = EXCLUDED.rules, \
             position = EXCLUDED.position"
        ),
        &[&ids, &tzs, &versions, &rules, &positions],
    )
    .await?;
    Ok(())
}

async fn upsert_activities(
    tx: &Transaction<'_>,
    schema: &str,
    activities: &Activities,
) -> Result<(), ApplyError> {
    if activities.is_empty() {
        return Ok(());
    }
    let mut orgs = Vec::with_capacity(activities.len());
    let mut ids = Vec::with_capacity(activities.len());
    let mut apps = Vec::with_capacity(activities.len());
    let mut titles = Vec::with_capacity(activities.len());
    let mut urls = Vec::with_capacity(activities.len());
    for ((org, id), (app, title, url)) in activities {
        orgs.push(org.as_str());
        ids.push(*id);
        apps.push(app.as_str());
        titles.push(title.as_deref());
        urls.push(url.as_deref());
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.activities (org_id, activity_id, app, title, url) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[]) \
             ON CONFLICT DO NOTHING"
        ),
        &[&orgs, &ids, &apps, &titles, &urls],
    )
    .await?;
    Ok(())
}

async fn upsert_facts(
    tx: &Transaction<'_>,
    schema: &str,
    facts: &BTreeMap<FactKey, i64>,
) -> Result<(), ApplyError> {
    if facts.is_empty() {
        return Ok(());
    }
    let mut orgs = Vec::with_capacity(facts.len());
    let mut people = Vec::with_capacity(facts.len());
    let mut days = Vec::with_capacity(facts.len());
    let mut ids = Vec::with_capacity(facts.len());
    let mut actives = Vec::with_capacity(facts.len());
    let mut ms = Vec::with_capacity(facts.len());
    for ((org, person, day, id, active), total) in facts {
        orgs.push(org.as_str());
        people.push(person.as_str());
        days.push(*day);
        ids.push(*id);
        actives.push(*active);
        ms.push(*total);
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.daily AS d (org_id, person_id, day, activity_id, active, ms) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::int8[], $5::bool[], $6::int8[]) \
             ON CONFLICT (org_id, day, person_id, activity_id, active) \
             DO UPDATE SET ms = d.ms + EXCLUDED.ms"
        ),
        &[&orgs, &people, &days, &ids, &actives, &ms],
    )
    .await?;
    Ok(())
}

/// Keeps `rollup` (time per member, day, category and app under the org's
/// rules in force: what dashboards read) in step with the facts: the
/// batch's facts are added under their org's rules version; an org whose
/// rules changed in the batch has its rollup rebuilt from `daily` under the
/// new version (the batch's facts are in `daily` by then).
async fn update_rollup(
    tx: &Transaction<'_>,
    schema: &str,
    states: &HashMap<String, OrgState>,
    facts: &BTreeMap<FactKey, i64>,
) -> Result<(), ApplyError> {
    let rebuilt: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s.reclassify)
        .map(|(o, _)| o.as_str())
        .collect();
    if !rebuilt.is_empty() {
        tx.execute(
            &format!("DELETE FROM {schema}.rollup WHERE org_id = ANY($1)"),
            &[&rebuilt],
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO {schema}.rollup \
                 SELECT d.org_id, s.rules_version, d.day, d.person_id, \
                   coalesce(c.category, ARRAY['Uncategorized']), a.app, coalesce(c.score, 0), \
                   coalesce(sum(d.ms) FILTER (WHERE d.active), 0), \
                   coalesce(sum(d.ms) FILTER (WHERE NOT d.active), 0) \
                 FROM {schema}.daily d \
                 JOIN {schema}.org_state s ON s.org_id = d.org_id \
                 JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
                 LEFT JOIN {schema}.classifications c ON c.org_id = d.org_id \
                   AND c.rules_version = s.rules_version AND c.activity_id = d.activity_id \
                 WHERE d.org_id = ANY($1) \
                 GROUP BY 1, 2, 3, 4, 5, 6, 7"
            ),
            &[&rebuilt],
        )
        .await?;
    }
    let mut orgs = Vec::with_capacity(facts.len());
    let mut versions = Vec::with_capacity(facts.len());
    let mut people = Vec::with_capacity(facts.len());
    let mut days = Vec::with_capacity(facts.len());
    let mut ids = Vec::with_capacity(facts.len());
    let mut active = Vec::with_capacity(facts.len());
    let mut idle = Vec::with_capacity(facts.len());
    for ((org, person, day, id, is_active), ms) in facts {
        let Some(state) = states.get(org).filter(|s| !s.reclassify) else {
            continue;
        };
        orgs.push(org.as_str());
        versions.push(state.rules_version as i32);
        people.push(person.as_str());
        days.push(*day);
        ids.push(*id);
        active.push(if *is_active { *ms } else { 0 });
        idle.push(if *is_active { 0 } else { *ms });
    }
    if orgs.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.rollup AS r \
             SELECT f.org_id, f.rules_version, f.day, f.person_id, \
               coalesce(c.category, ARRAY['Uncategorized']), a.app, coalesce(c.score, 0), \
               sum(f.active_ms), sum(f.idle_ms) \
             FROM unnest($1::text[], $2::int4[], $3::text[], $4::date[], $5::int8[], $6::int8[], $7::int8[]) \
               AS f(org_id, rules_version, person_id, day, activity_id, active_ms, idle_ms) \
             JOIN {schema}.activities a ON a.org_id = f.org_id AND a.activity_id = f.activity_id \
             LEFT JOIN {schema}.classifications c ON c.org_id = f.org_id \
               AND c.rules_version = f.rules_version AND c.activity_id = f.activity_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7 \
             ON CONFLICT (org_id, rules_version, day, person_id, category, app, score) \
             DO UPDATE SET active_ms = r.active_ms + EXCLUDED.active_ms, \
               idle_ms = r.idle_ms + EXCLUDED.idle_ms"
        ),
        &[&orgs, &versions, &people, &days, &ids, &active, &idle],
    )
    .await?;
    Ok(())
}

impl Activity {
    /// Classifies each activity of the batch not yet classified under its
    /// org's current rules version, and every activity of an org whose rules
    /// changed in this batch.
    async fn classify(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        states: &HashMap<String, OrgState>,
        batch_activities: &Activities,
    ) -> Result<(), ApplyError> {
        let mut wanted: Activities = batch_activities.clone();
        let reclassify: Vec<&str> = states
            .iter()
            .filter(|(_, s)| s.reclassify)
            .map(|(o, _)| o.as_str())
            .collect();
        if !reclassify.is_empty() {
            let rows = tx
                .query(
                    &format!(
                        "SELECT org_id, activity_id, app, title, url FROM {schema}.activities \
                         WHERE org_id = ANY($1)"
                    ),
                    &[&reclassify],
                )
                .await?;
            for r in rows {
                wanted.insert((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4)));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let version_of = |org: &str| states.get(org).map_or(0, |s| s.rules_version as i32);
        let orgs: Vec<&str> = wanted.keys().map(|(o, _)| o.as_str()).collect();
        let ids: Vec<i64> = wanted.keys().map(|(_, id)| *id).collect();
        let versions: Vec<i32> = orgs.iter().map(|o| version_of(o)).collect();
        let existing: BTreeSet<(String, i64)> = tx
            .query(
                &format!(
                    "SELECT c.org_id, c.activity_id FROM {schema}.classifications c \
                     JOIN unnest($1::text[], $2::int4[], $3::int8[]) AS w(org_id, rules_version, activity_id) \
                     USING (org_id, rules_version, activity_id)"
                ),
                &[&orgs, &versions, &ids],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut c_orgs = Vec::new();
        let mut c_versions = Vec::new();
        let mut c_ids = Vec::new();
        let mut c_categories = Vec::new();
        let mut c_scores = Vec::new();
        for ((org, id), (app, title, url)) in &wanted {
            if existing.contains(&(org.clone(), *id)) {
                continue;
            }
            let state = states.get(org).cloned().unwrap_or_default();
            let rules = self.compiled(org, &state);
            let class = rules.classify(app, title.as_deref().unwrap_or(""), url.as_deref());
            c_orgs.push(org.as_str());
            c_versions.push(state.rules_version as i32);
            c_ids.push(*id);
            c_categories.push(format_category(&class.category));
            c_scores.push(class.score);
        }
        if c_ids.is_empty() {
            return Ok(());
        }
        tx.execute(
            &format!(
                "INSERT INTO {schema}.classifications \
                 (org_id, rules_version, activity_id, classifier_version, category, score) \
                 SELECT o, v, a, {CLASSIFIER_VERSION}, string_to_array(c, E'\\x1f'), s \
                 FROM unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::int4[]) AS t(o, v, a, c, s) \
                 ON CONFLICT DO NOTHING"
            ),
            &[&c_orgs, &c_versions, &c_ids, &c_categories, &c_scores],
        )
        .await?;
        Ok(())
    }
}

/// A category path as one text (unit separator between parts) for the
/// array parameter that PostgreSQL splits back.
fn format_category(path: &[String]) -> String {
    path.join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use trackhrs_domain::DomainEvent;
    use trackhrs_domain::activity::{ActivityEvent, Span};

    use super::*;

    /// `decode_device` reads version 1 of the device events only (and
    /// dead-letters others): a new version must be taught to it first.
    #[test]
    fn the_typed_reading_knows_every_current_device_event_version() {
        let accepted = ActivityEvent::BatchAccepted {
            batch_id: "b".into(),
            seq: 1,
            member: trackhrs_domain::Token::new("p1").unwrap(),
            spans: 0,
        };
        let span = ActivityEvent::SpanRecorded(Span {
            start_ms: 0,
            end_ms: 1,
            app: "a".into(),
            title: None,
            url: None,
            active: true,
        });
        let retracted = ActivityEvent::TimeRetracted {
            start_ms: 0,
            end_ms: 1,
        };
        for event in [accepted, span, retracted] {
            assert_eq!(
                (event.event_type(), event.schema_version()),
                (event.event_type(), 1),
                "teach decode_device the new version"
            );
        }
    }

    #[test]
    fn an_opened_span_hides_title_and_url_in_debug_output() {
        let span = OpenedSpan {
            start_ms: 0,
            end_ms: 1,
            app: "code".into(),
            title: Some("secret.rs".into()),
            url: Some("https://secret.example".into()),
            active: true,
        };
        let shown = format!("{span:?}");
        assert!(
            shown.contains("code") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn spans_split_at_local_midnight() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        // 2026-03-10 21:30 to 2026-03-11 00:30 UTC, that is 22:30 to 01:30
        // in Berlin (UTC+1): an hour and a half on each side of Berlin's
        // midnight.
        let start = Utc
            .with_ymd_and_hms(2026, 3, 10, 21, 30, 0)
            .unwrap()
            .timestamp_millis();
        let end = start + 3 * 3_600_000;
        assert_eq!(
            split_by_day(start, end, tz),
            vec![(day(10), 5_400_000), (day(11), 5_400_000)]
        );
        // In UTC the same span splits at UTC's midnight: two and a half
        // hours, then half an hour.
        assert_eq!(
            split_by_day(start, end, Tz::UTC),
            vec![(day(10), 9_000_000), (day(11), 1_800_000)]
        );
    }

    #[test]
    fn days_with_a_daylight_saving_change_have_their_real_length() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let at = |m, d, h| {
            Utc.with_ymd_and_hms(2026, m, d, h, 0, 0)
                .unwrap()
                .timestamp_millis()
        };
        let hours = |h: i64| h * 3_600_000;
        // Spring forward on 2026-03-29: the local day runs from 00:00 CET
        // (23:00 UTC the day before) to 00:00 CEST (22:00 UTC): 23 hours.
        let (start, end) = (at(3, 28, 20), at(3, 30, 1));
        assert_eq!(
            split_by_day(start, end, tz),
            vec![
                (NaiveDate::from_ymd_opt(2026, 3, 28).unwrap(), hours(3)),
                (NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), hours(23)),
                (NaiveDate::from_ymd_opt(2026, 3, 30).unwrap(), hours(3)),
            ]
        );
        // Fall back on 2026-10-25: from 00:00 CEST (22:00 UTC the day
        // before) to 00:00 CET (23:00 UTC): 25 hours.
        let (start, end) = (at(10, 24, 22), at(10, 25, 23));
        assert_eq!(
            split_by_day(start, end, tz),
            vec![(NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(), hours(25))]
        );
    }

    #[test]
    fn activity_ids_tell_parts_apart() {
        assert_ne!(
            activity_id("ab", Some("c"), None),
            activity_id("a", Some("bc"), None)
        );
        assert_ne!(
            activity_id("a", None, Some("x")),
            activity_id("a", Some("x"), None)
        );
        assert_eq!(
            activity_id("a", Some("t"), None),
            activity_id("a", Some("t"), None)
        );
    }
}
