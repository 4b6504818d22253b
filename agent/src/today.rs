//! The employee's own view of a stretch of time (the desktop app shows
//! today): the local store's window and AFK timelines combined as they are
//! for upload, active time classified with the org's rules by the same
//! classifier the dashboards use, and summed per category.

use std::collections::HashMap;

use trackhrs_domain::classifier::{Classification, Rules};

use crate::aw::combine::combine;
use crate::aw::store::{AwError, AwEvent, AwStore};
use crate::heartbeat::Event;

/// Active time in one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryTime {
    /// The category path, e.g. `["Work", "Programming"]`.
    pub category: Vec<String>,
    /// Its productivity score.
    pub score: i32,
    /// Active time in it, milliseconds.
    pub active_ms: i64,
}

/// A summary of `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End (exclusive), Unix ms.
    pub to_ms: i64,
    /// Active time, milliseconds.
    pub active_ms: i64,
    /// Idle time, milliseconds.
    pub idle_ms: i64,
    /// Active time per category, the most first (ties by path).
    pub categories: Vec<CategoryTime>,
    /// The version of the org's rules it was classified with; None while
    /// the gateway was never reached (the default rules).
    pub rules_version: Option<u32>,
}

/// The window and AFK timelines of `[from_ms, to_ms)` in the local store:
/// every bucket of ActivityWatch's `currentwindow` and `afkstatus` types
/// (the agent's own in X11 mode, the watchers' otherwise), and whether
/// there is an AFK timeline at all.
pub(crate) struct Timelines {
    pub window: Vec<AwEvent>,
    pub afk: Vec<AwEvent>,
    pub afk_known: bool,
}

impl Timelines {
    pub(crate) fn read(store: &AwStore, from_ms: i64, to_ms: i64) -> Result<Self, AwError> {
        let buckets = store.buckets()?;
        let (start, end) = (
            chrono::DateTime::from_timestamp_millis(from_ms),
            chrono::DateTime::from_timestamp_millis(to_ms),
        );
        let read = |kind: &str| -> Result<(Vec<AwEvent>, bool), AwError> {
            let mut all = Vec::new();
            let mut any = false;
            for b in buckets.iter().filter(|b| b.kind == kind) {
                any = true;
                all.extend(store.events(&b.id, start, end, None)?);
            }
            Ok((all, any))
        };
        let (window, _) = read("currentwindow")?;
        let (afk, afk_known) = read("afkstatus")?;
        Ok(Self {
            window,
            afk,
            afk_known,
        })
    }

    /// The spans they make of `[from_ms, to_ms)`.
    pub(crate) fn combine(&self, from_ms: i64, to_ms: i64) -> Vec<Event> {
        combine(&self.window, &self.afk, self.afk_known, from_ms, to_ms)
    }
}

/// Active and idle time of `spans` and the active time per category.
pub fn summarize(spans: &[Event], rules: &Rules) -> (i64, i64, Vec<CategoryTime>) {
    let (mut active, mut idle) = (0, 0);
    let mut classified: HashMap<(&str, &str, Option<&str>), Classification> = HashMap::new();
    let mut per: HashMap<Vec<String>, (i32, i64)> = HashMap::new();
    for span in spans {
        if !span.data.active {
            idle += span.duration_ms;
            continue;
        }
        active += span.duration_ms;
        let d = &span.data;
        let c = classified
            .entry((&d.app, &d.title, d.url.as_deref()))
            .or_insert_with(|| rules.classify(&d.app, &d.title, d.url.as_deref()));
        let entry = per.entry(c.category.clone()).or_insert((c.score, 0));
        entry.1 += span.duration_ms;
    }
    let mut categories: Vec<CategoryTime> = per
        .into_iter()
        .map(|(category, (score, active_ms))| CategoryTime {
            category,
            score,
            active_ms,
        })
        .collect();
    categories.sort_by(|a, b| {
        b.active_ms
            .cmp(&a.active_ms)
            .then_with(|| a.category.cmp(&b.category))
    });
    (active, idle, categories)
}

#[cfg(test)]
mod tests {
    use trackhrs_domain::categories::CategoryRule;

    use super::*;
    use crate::heartbeat::SpanData;

    fn span(start_s: i64, secs: i64, app: &str, title: &str, active: bool) -> Event {
        Event {
            start_ms: start_s * 1000,
            duration_ms: secs * 1000,
            data: SpanData {
                app: app.into(),
                title: title.into(),
                url: None,
                active,
            },
        }
    }

    #[test]
    fn active_time_is_summed_per_category_and_idle_time_apart() {
        let rules = Rules::compile(&[
            CategoryRule {
                name: vec!["Work".into()],
                regex: None,
                ignore_case: false,
                score: Some(50),
            },
            CategoryRule {
                name: vec!["Work".into(), "Editing".into()],
                regex: Some("gedit".into()),
                ignore_case: true,
                score: None,
            },
            CategoryRule {
                name: vec!["Media".into()],
                regex: Some("YouTube".into()),
                ignore_case: false,
                score: Some(-40),
            },
        ])
        .unwrap();
        let spans = [
            span(0, 60, "Gedit", "notes.txt", true),
            span(60, 30, "firefox", "Cats - YouTube", true),
            span(90, 120, "Gedit", "notes.txt", false),
            span(210, 15, "gedit", "todo.txt", true),
            span(225, 5, "xterm", "bash", true),
        ];
        let (active, idle, categories) = summarize(&spans, &rules);
        assert_eq!((active, idle), (110_000, 120_000));
        let got: Vec<(String, i32, i64)> = categories
            .into_iter()
            .map(|c| (c.category.join(">"), c.score, c.active_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Work>Editing".into(), 50, 75_000),
                ("Media".into(), -40, 30_000),
                ("Uncategorized".into(), 0, 5_000),
            ]
        );
    }
}
