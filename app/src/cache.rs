//! The dashboard cache: dashboards served recently, evicted per org when the
//! activity projection commits (every replica listens to the projection's
//! invalidation subjects), cleared when a new projection version goes live.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use futures::StreamExt;
use trackhrs_projections::{activity, invalidation};

use crate::activity::Dashboard;

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
    cache: moka::sync::Cache<DashboardKey, Arc<Dashboard>>,
    invalidated: moka::sync::Cache<String, u64>,
    generation: Arc<AtomicU64>,
}

/// Dashboards a replica keeps by default.
pub const DEFAULT_ENTRIES: u64 = 10_000;

impl DashboardCache {
    /// A cache of at most `entries` dashboards (0: none is kept).
    pub fn with_capacity(entries: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(entries)
                .time_to_live(std::time::Duration::from_secs(600))
                .support_invalidation_closures()
                .build(),
            invalidated: moka::sync::Cache::new(100_000),
            generation: Arc::default(),
        }
    }

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
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn fresh_enough(&self, org: &str, position: u64) -> bool {
        self.invalidated.get(org).is_none_or(|p| position >= p)
    }

    pub(crate) fn get(&self, key: &DashboardKey, min_position: u64) -> Option<Arc<Dashboard>> {
        self.cache
            .get(key)
            .filter(|d| d.position >= min_position && self.fresh_enough(&key.org, d.position))
    }

    /// Stores a dashboard read during `generation`, unless it is already
    /// older than an invalidation.
    pub(crate) fn put(&self, key: DashboardKey, dashboard: Arc<Dashboard>, generation: u64) {
        if generation == self.generation() && self.fresh_enough(&key.org, dashboard.position) {
            self.cache.insert(key, dashboard);
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
pub(crate) async fn follow_invalidations(client: async_nats::Client, cache: DashboardCache) {
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
