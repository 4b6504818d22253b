//! A dashboard's summary: the totals the portal paints first, folded from
//! the read model's grouping sets.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use trackhrs_projections::activity::{GroupTime, SummaryGroups};

use super::Breakdown;

/// Applications a summary lists.
const TOP_APPS: usize = 10;

/// What an answer reflects.
pub(crate) struct Header {
    pub(crate) org_id: String,
    pub(crate) timezone: String,
    pub(crate) rules_version: u32,
    pub(crate) meta: trackhrs_projections::activity::Meta,
    pub(crate) position: u64,
}

/// One member's time in the range.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberTotal {
    /// The member.
    pub person_id: String,
    /// Active milliseconds.
    pub active_ms: i64,
    /// Idle milliseconds.
    pub idle_ms: i64,
    /// Active time weighted by category scores, per active millisecond.
    pub productivity: f64,
    /// Days with time.
    pub days: u32,
    /// Time the member withdrew in the range (deleted on a device after it
    /// was recorded), in no other figure.
    pub removed_ms: i64,
}

/// The team's time on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTotal {
    /// The day in the org's time zone.
    pub day: NaiveDate,
    /// Active milliseconds.
    pub active_ms: i64,
    /// Idle milliseconds.
    pub idle_ms: i64,
}

/// A dashboard's totals: per member, per day, per category, the top apps.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSummary {
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
    /// Members with time, most active first.
    pub members: Vec<MemberTotal>,
    /// Days with time, in order.
    pub days: Vec<DayTotal>,
    /// Every category, most active first.
    pub categories: Vec<Breakdown>,
    /// The most active apps, most active first.
    pub apps: Vec<Breakdown>,
    /// The team's productivity, weighted by active time.
    pub productivity: f64,
}

fn per_active(weighted: f64, active_ms: i64) -> f64 {
    if active_ms > 0 {
        weighted / active_ms as f64
    } else {
        0.0
    }
}

fn breakdown(name: String, t: GroupTime) -> Breakdown {
    Breakdown {
        name,
        active_ms: t.active_ms,
        idle_ms: t.idle_ms,
    }
}

/// Folds the grouping sets and the time members withdrew into a summary.
pub(crate) fn summarise(
    header: Header,
    groups: SummaryGroups,
    removed: Vec<(String, NaiveDate, i64)>,
) -> DashboardSummary {
    let mut members: BTreeMap<String, (GroupTime, u32, i64)> = BTreeMap::new();
    for (person, _, ms) in removed {
        members.entry(person).or_default().2 += ms;
    }
    let mut days: BTreeMap<NaiveDate, GroupTime> = BTreeMap::new();
    let mut team = GroupTime::default();
    for (person, day, t) in groups.member_days {
        let m = members.entry(person).or_default();
        let d = days.entry(day).or_default();
        for total in [&mut m.0, d, &mut team] {
            total.active_ms += t.active_ms;
            total.idle_ms += t.idle_ms;
            total.weighted += t.weighted;
        }
        if t.active_ms + t.idle_ms > 0 {
            m.1 += 1;
        }
    }
    let mut members: Vec<MemberTotal> = members
        .into_iter()
        .map(|(person_id, (t, days, removed_ms))| MemberTotal {
            person_id,
            active_ms: t.active_ms,
            idle_ms: t.idle_ms,
            productivity: per_active(t.weighted, t.active_ms),
            days,
            removed_ms,
        })
        .collect();
    members.sort_by(|a, b| {
        b.active_ms
            .cmp(&a.active_ms)
            .then_with(|| a.person_id.cmp(&b.person_id))
    });
    let mut categories: Vec<Breakdown> = groups
        .categories
        .into_iter()
        .map(|(path, t)| breakdown(path.join(" > "), t))
        .collect();
    let most_active = |a: &Breakdown, b: &Breakdown| {
        b.active_ms
            .cmp(&a.active_ms)
            .then_with(|| b.idle_ms.cmp(&a.idle_ms))
            .then_with(|| a.name.cmp(&b.name))
    };
    categories.sort_by(most_active);
    let mut apps: Vec<Breakdown> = groups
        .apps
        .into_iter()
        .map(|(name, t)| breakdown(name, t))
        .collect();
    apps.sort_by(most_active);
    apps.truncate(TOP_APPS);
    DashboardSummary {
        org_id: header.org_id,
        timezone: header.timezone,
        rules_version: header.rules_version,
        classifier_version: header.meta.classifier_version,
        position: header.position,
        members,
        days: days
            .into_iter()
            .map(|(day, t)| DayTotal {
                day,
                active_ms: t.active_ms,
                idle_ms: t.idle_ms,
            })
            .collect(),
        categories,
        apps,
        productivity: per_active(team.weighted, team.active_ms),
    }
}
