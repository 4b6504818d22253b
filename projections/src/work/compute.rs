//! A member's week computed from its facts: time per day, project, task and
//! source. Pure: the work projection's numbers are a function of its rows,
//! so a rebuild, or a batch applied again after a crash, gives the same.
//!
//! - A manual entry counts in full (time the agent did not see); activity
//!   inside it is not counted again.
//! - Activity inside an assignment counts for the assignment's task.
//! - Other activity counts for what the attribution rules say, or as
//!   unattributed (empty project).
//! - In an approved week, activity recorded after the approval (a higher
//!   stream position) counts as "late": shown for review, never added to
//!   the approved totals.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::activity::for_each_day;

/// Where time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Observed activity, attributed by the rules (or unattributed).
    Rule,
    /// Observed activity a member assigned to a task.
    Assigned,
    /// A manual entry.
    Manual,
    /// Activity recorded after the week was approved.
    Late,
}

impl Source {
    /// Its name in the tables and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Assigned => "assigned",
            Self::Manual => "manual",
            Self::Late => "late",
        }
    }
}

/// An active span of the member's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
    /// Its activity (app, title, URL).
    pub activity: i64,
    /// The stream position it was recorded at.
    pub position: u64,
}

/// An entry of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekEntry {
    /// A manual entry (else an assignment).
    pub manual: bool,
    /// Its project.
    pub project: String,
    /// Its task.
    pub task: String,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
}

/// Time per (day, project, task, source), ms. Unattributed time has an
/// empty project and task; a rule without a task, an empty task.
pub type Totals = BTreeMap<(NaiveDate, String, String, Source), i64>;

/// The week `[start_ms, end_ms)`'s totals: [`entry_totals`] plus
/// [`span_totals`] (time is additive over spans, so a batch that only adds
/// spans to a week adds their [`span_totals`] to its rows).
pub fn week_totals(
    week: (i64, i64),
    approved_position: Option<u64>,
    spans: &[Span],
    entries: &[WeekEntry],
    target: impl Fn(i64) -> Option<(String, String)>,
    tz: Tz,
) -> Totals {
    let mut totals = entry_totals(week, entries, tz);
    for (key, ms) in span_totals(week, approved_position, spans, entries, target, tz) {
        *totals.entry(key).or_default() += ms;
    }
    totals
}

/// Adds `[from, to)` clipped to the week, split at the days' bounds.
fn add(
    totals: &mut Totals,
    (start_ms, end_ms): (i64, i64),
    tz: Tz,
    (from, to): (i64, i64),
    (project, task, source): (&str, &str, Source),
) {
    let (from, to) = (from.max(start_ms), to.min(end_ms));
    if from < to {
        for_each_day(from, to, tz, |day, ms| {
            *totals
                .entry((day, project.to_owned(), task.to_owned(), source))
                .or_default() += ms;
        });
    }
}

/// The manual entries' time.
pub fn entry_totals(week: (i64, i64), entries: &[WeekEntry], tz: Tz) -> Totals {
    let mut totals = Totals::new();
    for entry in entries.iter().filter(|e| e.manual) {
        add(
            &mut totals,
            week,
            tz,
            (entry.start_ms, entry.end_ms),
            (&entry.project, &entry.task, Source::Manual),
        );
    }
    totals
}

/// The observed activity's time, given the week's entries. `target` says
/// what the rules attribute an activity to (project, task).
pub fn span_totals(
    week: (i64, i64),
    approved_position: Option<u64>,
    spans: &[Span],
    entries: &[WeekEntry],
    target: impl Fn(i64) -> Option<(String, String)>,
    tz: Tz,
) -> Totals {
    let mut totals = Totals::new();
    let mut sorted: Vec<&WeekEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.start_ms, e.end_ms));
    for span in spans {
        let (project, task) = target(span.activity).unwrap_or_default();
        let ruled = |source| (project.as_str(), task.as_str(), source);
        if approved_position.is_some_and(|approved| span.position > approved) {
            add(
                &mut totals,
                week,
                tz,
                (span.start_ms, span.end_ms),
                ruled(Source::Late),
            );
            continue;
        }
        let mut cursor = span.start_ms;
        for entry in &sorted {
            if cursor >= span.end_ms {
                break;
            }
            if entry.end_ms <= cursor || entry.start_ms >= span.end_ms {
                continue;
            }
            add(
                &mut totals,
                week,
                tz,
                (cursor, entry.start_ms),
                ruled(Source::Rule),
            );
            if !entry.manual {
                add(
                    &mut totals,
                    week,
                    tz,
                    (cursor.max(entry.start_ms), span.end_ms.min(entry.end_ms)),
                    (&entry.project, &entry.task, Source::Assigned),
                );
            }
            cursor = cursor.max(entry.end_ms);
        }
        add(
            &mut totals,
            week,
            tz,
            (cursor, span.end_ms),
            ruled(Source::Rule),
        );
    }
    totals
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const H: i64 = 3_600_000;
    /// Monday 2026-11-30 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800_000;

    fn day(offset: i64) -> NaiveDate {
        chrono::DateTime::from_timestamp_millis(MONDAY + offset * 24 * H)
            .unwrap()
            .date_naive()
    }

    fn span(from_h: i64, to_h: i64, activity: i64, position: u64) -> Span {
        Span {
            start_ms: MONDAY + from_h * H,
            end_ms: MONDAY + to_h * H,
            activity,
            position,
        }
    }

    fn entry(manual: bool, task: &str, from_h: i64, to_h: i64) -> WeekEntry {
        WeekEntry {
            manual,
            project: "p".into(),
            task: task.into(),
            start_ms: MONDAY + from_h * H,
            end_ms: MONDAY + to_h * H,
        }
    }

    fn rules(activity: i64) -> Option<(String, String)> {
        (activity == 1).then(|| ("web".to_owned(), String::new()))
    }

    fn get(t: &Totals, d: i64, project: &str, task: &str, source: Source) -> i64 {
        t.get(&(day(d), project.into(), task.into(), source))
            .copied()
            .unwrap_or(0)
    }

    const WEEK: (i64, i64) = (MONDAY, MONDAY + 168 * H);

    #[test]
    fn monday_is_a_monday() {
        assert_eq!(day(0).format("%a").to_string(), "Mon");
    }

    #[test]
    fn assignments_override_rules_and_manual_entries_count_once() {
        // Activity 9:00-13:00 (web by the rules); 10-11 assigned to "review";
        // 12-14 a manual meeting.
        let totals = week_totals(
            WEEK,
            None,
            &[span(9, 13, 1, 5)],
            &[
                entry(false, "review", 10, 11),
                entry(true, "meeting", 12, 14),
            ],
            rules,
            Tz::UTC,
        );
        assert_eq!(get(&totals, 0, "web", "", Source::Rule), 2 * H);
        assert_eq!(get(&totals, 0, "p", "review", Source::Assigned), H);
        assert_eq!(get(&totals, 0, "p", "meeting", Source::Manual), 2 * H);
        assert_eq!(totals.values().sum::<i64>(), 5 * H);
    }

    #[test]
    fn activity_no_rule_matches_is_unattributed_and_days_split_at_midnight() {
        let totals = week_totals(WEEK, None, &[span(22, 26, 7, 1)], &[], rules, Tz::UTC);
        assert_eq!(get(&totals, 0, "", "", Source::Rule), 2 * H);
        assert_eq!(get(&totals, 1, "", "", Source::Rule), 2 * H);
    }

    #[test]
    fn activity_recorded_after_the_approval_is_late_and_outside_the_totals() {
        let spans = [span(9, 10, 1, 10), span(11, 12, 1, 30)];
        let totals = week_totals(WEEK, Some(20), &spans, &[], rules, Tz::UTC);
        assert_eq!(get(&totals, 0, "web", "", Source::Rule), H);
        assert_eq!(get(&totals, 0, "web", "", Source::Late), H);
        // Reopened (no approval): both count.
        let reopened = week_totals(WEEK, None, &spans, &[], rules, Tz::UTC);
        assert_eq!(get(&reopened, 0, "web", "", Source::Rule), 2 * H);
    }

    #[test]
    fn time_outside_the_week_is_not_counted() {
        let totals = week_totals(
            WEEK,
            None,
            &[span(-2, 1, 1, 1), span(167, 170, 1, 1)],
            &[],
            rules,
            Tz::UTC,
        );
        assert_eq!(totals.values().sum::<i64>(), 2 * H);
    }

    #[test]
    fn spans_added_later_add_up_to_the_whole_week() {
        let entries = [
            entry(false, "review", 10, 11),
            entry(true, "meeting", 30, 31),
        ];
        let (first, later) = (
            [span(9, 13, 1, 5)],
            [span(30, 32, 7, 9), span(50, 52, 1, 9)],
        );
        let mut both = first.to_vec();
        both.extend(later);
        let mut incremental = week_totals(WEEK, None, &first, &entries, rules, Tz::UTC);
        for (key, ms) in span_totals(WEEK, None, &later, &entries, rules, Tz::UTC) {
            *incremental.entry(key).or_default() += ms;
        }
        assert_eq!(
            incremental,
            week_totals(WEEK, None, &both, &entries, rules, Tz::UTC)
        );
    }

    proptest! {
        /// Whatever the spans and (non-overlapping) entries: the total is
        /// the manual entries plus the activity outside them; no time is
        /// lost or counted twice.
        #[test]
        fn every_millisecond_is_counted_once(
            spans in prop::collection::vec((0i64..160, 1i64..8, 0i64..3), 0..12),
            cuts in prop::collection::btree_set(0i64..168, 0..8),
            manual in prop::collection::vec(any::<bool>(), 8),
        ) {
            let spans: Vec<Span> = spans
                .iter()
                .map(|&(from, len, activity)| span(from, (from + len).min(168), activity, 1))
                .collect();
            // Entries between consecutive cut points: never overlapping.
            let cuts: Vec<i64> = cuts.into_iter().collect();
            let entries: Vec<WeekEntry> = cuts
                .chunks(2)
                .filter(|c| c.len() == 2)
                .enumerate()
                .map(|(i, c)| entry(manual[i], "t", c[0], c[1]))
                .collect();
            let totals = week_totals(WEEK, None, &spans, &entries, rules, Tz::UTC);
            let inside = |from: i64, to: i64| {
                entries
                    .iter()
                    .map(|e| (to.min(e.end_ms) - from.max(e.start_ms)).max(0))
                    .sum::<i64>()
            };
            let manual_ms: i64 = entries.iter().filter(|e| e.manual).map(|e| e.end_ms - e.start_ms).sum();
            let activity_outside: i64 = spans.iter().map(|s| s.end_ms - s.start_ms - inside(s.start_ms, s.end_ms)).sum();
            let assigned_inside: i64 = spans
                .iter()
                .map(|s| {
                    entries
                        .iter()
                        .filter(|e| !e.manual)
                        .map(|e| (s.end_ms.min(e.end_ms) - s.start_ms.max(e.start_ms)).max(0))
                        .sum::<i64>()
                })
                .sum();
            prop_assert_eq!(totals.values().sum::<i64>(), manual_ms + activity_outside + assigned_inside);
        }
    }
}
