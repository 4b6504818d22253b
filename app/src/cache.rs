//! The dashboard cache: dashboards served recently, evicted per org when the
//! activity projection commits (every replica listens to the projection's
//! invalidation subjects), cleared when a new projection version goes live.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use futures::StreamExt;
use trackhrs_projections::invalidation;

use crate::activity::{Dashboard, DashboardSummary};

/// An answer the cache keeps: member days or their summary.
pub(crate) trait Answer: Send + Sync + 'static {
    /// The stream position it reflects.
    fn position(&self) -> u64;
    /// Where the cache keeps answers of this kind.
    fn kept(cache: &DashboardCache) -> &Kept<Self>;
    /// About how many bytes it takes in memory.
    fn bytes(&self) -> usize;
}

/// Bytes of a value of `T` and its heap text.
fn sized<T>(text: usize) -> usize {
    size_of::<T>() + text
}

impl Answer for Dashboard {
    fn position(&self) -> u64 {
        self.position
    }
    fn kept(cache: &DashboardCache) -> &Kept<Self> {
        &cache.days
    }
    fn bytes(&self) -> usize {
        let breakdowns = |b: &[crate::activity::Breakdown]| -> usize {
            b.iter()
                .map(|b| sized::<crate::activity::Breakdown>(b.name.len()))
                .sum()
        };
        let days: usize = self
            .days
            .iter()
            .map(|d| {
                sized::<crate::activity::MemberDay>(d.person_id.len())
                    + breakdowns(&d.categories)
                    + breakdowns(&d.apps)
            })
            .sum();
        let titles: usize = self
            .top_titles
            .iter()
            .map(|t| {
                sized::<crate::activity::TopTitle>(t.person_id.len() + t.app.len() + t.title.len())
            })
            .sum();
        sized::<Self>(self.org_id.len() + self.timezone.len()) + days + titles
    }
}

impl Answer for DashboardSummary {
    fn position(&self) -> u64 {
        self.position
    }
    fn kept(cache: &DashboardCache) -> &Kept<Self> {
        &cache.summaries
    }
    fn bytes(&self) -> usize {
        let members: usize = self
            .members
            .iter()
            .map(|m| sized::<crate::activity::MemberTotal>(m.person_id.len()))
            .sum();
        sized::<Self>(self.org_id.len() + self.timezone.len())
            + members
            + self.days.len() * size_of::<crate::activity::DayTotal>()
    }
}

/// Each org's last invalidated position: what was read before it is stale.
#[derive(Clone)]
pub(crate) struct Marks(moka::sync::Cache<String, u64>);

impl Marks {
    /// Marks kept at most `ttl` (`None`: until evicted for room).
    pub(crate) fn new(ttl: Option<std::time::Duration>) -> Self {
        let builder = moka::sync::Cache::builder().max_capacity(100_000);
        Self(match ttl {
            Some(ttl) => builder.time_to_live(ttl).build(),
            None => builder.build(),
        })
    }

    /// `org` changed at `position`.
    pub(crate) fn mark(&self, org: &str, position: u64) {
        self.0
            .entry(org.to_owned())
            .and_upsert_with(|seen| seen.map_or(position, |e| (*e.value()).max(position)));
    }

    /// Whether something of `org` read at `position` is still fresh.
    pub(crate) fn fresh(&self, org: &str, position: u64) -> bool {
        self.0.get(org).is_none_or(|p| position >= p)
    }
}

/// Answers of one kind by query.
pub(crate) type Kept<T> = moka::sync::Cache<DashboardKey, Arc<T>>;

/// What a dashboard answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DashboardKey {
    pub(crate) org: String,
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
    pub(crate) people: Option<Vec<String>>,
}

/// Dashboards by query, with the position each reflects.
///
/// A dashboard read before an invalidation may finish after it; so each
/// org's last invalidated position is kept, and a dashboard older than it is
/// neither stored nor served. A promotion bumps a generation, which does the
/// same for every org.
#[derive(Clone)]
pub struct DashboardCache {
    days: Kept<Dashboard>,
    summaries: Kept<DashboardSummary>,
    invalidated: Marks,
    generation: Arc<AtomicU64>,
}

/// Bytes of dashboards (and as many of summaries) a replica keeps by
/// default.
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

fn kept<T: Answer>(bytes: u64) -> Kept<T> {
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(|key: &DashboardKey, answer: &Arc<T>| {
            let people: usize = key.people.iter().flatten().map(|p| p.len() + 24).sum();
            let weight = key.org.len() + people + answer.bytes() + 64;
            u32::try_from(weight).unwrap_or(u32::MAX)
        })
        .time_to_live(std::time::Duration::from_secs(600))
        .support_invalidation_closures()
        .build()
}

fn evict<T: Answer>(kept: &Kept<T>, org: &str) {
    let org = org.to_owned();
    if let Err(e) = kept.invalidate_entries_if(move |k, _| k.org == org) {
        tracing::warn!(error = %e, "dashboard cache eviction failed; clearing it");
        kept.invalidate_all();
    }
}

impl DashboardCache {
    /// A cache of at most about `bytes` of dashboards and as many of
    /// summaries (0: none is kept).
    pub fn with_capacity(bytes: u64) -> Self {
        Self {
            days: kept(bytes),
            summaries: kept(bytes),
            invalidated: Marks::new(None),
            generation: Arc::default(),
        }
    }

    /// Evicts every dashboard of `org` older than `position`.
    pub fn evict_org(&self, org: &str, position: u64) {
        self.invalidated.mark(org, position);
        evict(&self.days, org);
        evict(&self.summaries, org);
    }

    /// Evicts everything (a new projection version went live).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.days.invalidate_all();
        self.summaries.invalidate_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn get<T: Answer>(&self, key: &DashboardKey, min_position: u64) -> Option<Arc<T>> {
        T::kept(self).get(key).filter(|d| {
            d.position() >= min_position && self.invalidated.fresh(&key.org, d.position())
        })
    }

    /// Stores an answer read during `generation`, unless it is already
    /// older than an invalidation.
    pub(crate) fn put<T: Answer>(&self, key: DashboardKey, answer: Arc<T>, generation: u64) {
        if generation == self.generation() && self.invalidated.fresh(&key.org, answer.position()) {
            T::kept(self).insert(key, answer);
        }
    }

    /// Dashboards and summaries cached right now (for tests and metrics).
    pub fn len(&self) -> u64 {
        self.days.run_pending_tasks();
        self.summaries.run_pending_tasks();
        self.days.entry_count() + self.summaries.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cache the projections' invalidations keep fresh.
pub(crate) trait Invalidated: Send + Sync + 'static {
    /// The projection committed a change of `org` at `position`.
    fn evict_org(&self, org: &str, position: u64);
    /// A new version of the projection went live.
    fn clear(&self);
}

impl Invalidated for DashboardCache {
    fn evict_org(&self, org: &str, position: u64) {
        DashboardCache::evict_org(self, org, position);
    }
    fn clear(&self) {
        DashboardCache::clear(self);
    }
}

/// Follows projection `name`'s invalidations on its own task until the
/// NATS connection closes, evicting from `cache`.
pub(crate) fn follow_invalidations(
    client: async_nats::Client,
    name: &'static str,
    cache: impl Invalidated,
) {
    tokio::spawn(follow(client, name, cache));
}

async fn follow(client: async_nats::Client, name: &str, cache: impl Invalidated) {
    let subjects = [
        invalidation::org_wildcard(name),
        invalidation::promotion_subject(name),
    ];
    let mut subs = Vec::new();
    for subject in subjects {
        match client.subscribe(subject.clone()).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                tracing::error!(subject, error = %e, "cannot follow cache invalidations");
                return;
            }
        }
    }
    let promotion = invalidation::promotion_subject(name);
    let mut messages = futures::stream::select_all(subs);
    while let Some(msg) = messages.next().await {
        if msg.subject.as_str() == promotion {
            cache.clear();
        } else if let Some(id) = msg.subject.as_str().rsplit('.').next() {
            let position = std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(u64::MAX);
            cache.evict_org(id, position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{MemberDay, TopTitle};

    /// A dashboard of `members` members with a long title each: about
    /// `members` KiB.
    fn dashboard(members: usize) -> Arc<Dashboard> {
        let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        Arc::new(Dashboard {
            org_id: "acme".into(),
            timezone: "UTC".into(),
            rules_version: 1,
            classifier_version: 1,
            position: 1,
            days: (0..members)
                .map(|m| MemberDay {
                    person_id: format!("p{m}"),
                    day,
                    active_ms: 1,
                    idle_ms: 0,
                    productivity: 0.0,
                    categories: Vec::new(),
                    apps: Vec::new(),
                    removed_ms: 0,
                })
                .collect(),
            top_titles: (0..members)
                .map(|m| TopTitle {
                    person_id: format!("p{m}"),
                    app: "code".into(),
                    title: "t".repeat(1000),
                    ms: 1,
                })
                .collect(),
        })
    }

    fn key(n: usize) -> DashboardKey {
        let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        DashboardKey {
            org: format!("org{n}"),
            from: day,
            to: day,
            people: None,
        }
    }

    #[test]
    fn the_cache_keeps_a_budget_of_bytes_not_of_entries() {
        // 1 MiB: a few large dashboards, many small ones.
        let cache = DashboardCache::with_capacity(1024 * 1024);
        for n in 0..20 {
            cache.put(key(n), dashboard(300), 0);
        }
        let large = cache.len();
        assert!(
            (1..=4).contains(&large),
            "{large} dashboards of 300 KiB kept in 1 MiB"
        );
        let cache = DashboardCache::with_capacity(1024 * 1024);
        for n in 0..200 {
            cache.put(key(n), dashboard(1), 0);
        }
        assert!(cache.len() > 100, "{} small dashboards kept", cache.len());
    }
}
