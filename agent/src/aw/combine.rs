//! ActivityWatch's window and AFK timelines combined into the device's
//! spans, as ActivityWatch's canonical query combines them (window events
//! intersected with the AFK watcher's periods): window time the AFK watcher
//! calls `not-afk` is active, time it calls `afk` is idle, and window time
//! no AFK event covers is dropped, as ActivityWatch drops it. A machine
//! without an AFK watcher (`afk_known` false) counts all window time active.

use serde_json::Value;

use super::store::AwEvent;
use crate::capture::UNKNOWN_APP;
use crate::heartbeat::{Event, SpanData};

fn start_ms(e: &AwEvent) -> i64 {
    e.timestamp.timestamp_millis()
}

fn end_ms(e: &AwEvent) -> i64 {
    start_ms(e) + (e.duration * 1000.0).round() as i64
}

fn text(e: &AwEvent, key: &str) -> Option<String> {
    e.data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The spans of `[from_ms, to_ms)`: `window` events split by `afk` events,
/// in order and never overlapping (a window event that overlaps the one
/// before it starts where that one ends).
pub fn combine(
    window: &[AwEvent],
    afk: &[AwEvent],
    afk_known: bool,
    from_ms: i64,
    to_ms: i64,
) -> Vec<Event> {
    let mut window: Vec<&AwEvent> = window.iter().collect();
    window.sort_by_key(|e| start_ms(e));
    let mut afk: Vec<(i64, i64, bool)> = afk
        .iter()
        .map(|e| {
            let idle = e.data.get("status").and_then(Value::as_str) == Some("afk");
            (start_ms(e), end_ms(e), idle)
        })
        .collect();
    afk.sort();
    let mut spans: Vec<Event> = Vec::new();
    let mut cursor = from_ms;
    for w in window {
        let (start, end) = (start_ms(w).max(cursor), end_ms(w).min(to_ms));
        if start >= end {
            continue;
        }
        cursor = end;
        let data = |active| SpanData {
            app: text(w, "app")
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| UNKNOWN_APP.into()),
            title: text(w, "title").unwrap_or_default(),
            url: text(w, "url"),
            active,
        };
        // Cut points: the window event's ends and every AFK boundary inside.
        let mut cuts: Vec<i64> = afk
            .iter()
            .flat_map(|&(s, e, _)| [s, e])
            .filter(|&t| t > start && t < end)
            .collect();
        cuts.extend([start, end]);
        cuts.sort_unstable();
        cuts.dedup();
        for pair in cuts.windows(2) {
            let (s, e) = (pair[0], pair[1]);
            // The last AFK event covering [s, e) decides.
            let idle = match afk.iter().rev().find(|&&(a, b, _)| a <= s && b >= e) {
                Some(&(_, _, idle)) => idle,
                None if afk_known => continue,
                None => false,
            };
            let piece = Event {
                start_ms: s,
                duration_ms: e - s,
                data: data(!idle),
            };
            match spans.last_mut() {
                Some(last) if last.end_ms() == s && last.data == piece.data => {
                    last.duration_ms += piece.duration_ms;
                }
                _ => spans.push(piece),
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aw::store::ev;

    fn summary(spans: &[Event]) -> Vec<(i64, i64, &str, bool)> {
        spans
            .iter()
            .map(|e| {
                (
                    e.start_ms / 1000,
                    e.end_ms() / 1000,
                    e.data.app.as_str(),
                    e.data.active,
                )
            })
            .collect()
    }

    #[test]
    fn window_time_is_split_by_afk_periods() {
        let window = [
            ev(0, 100.0, json!({"app": "code", "title": "a"})),
            ev(100, 100.0, json!({"app": "firefox", "title": "b"})),
        ];
        let afk = [
            ev(0, 50.0, json!({"status": "not-afk"})),
            ev(50, 100.0, json!({"status": "afk"})),
            ev(150, 100.0, json!({"status": "not-afk"})),
        ];
        assert_eq!(
            summary(&combine(&window, &afk, true, 0, 1_000_000)),
            vec![
                (0, 50, "code", true),
                (50, 100, "code", false),
                (100, 150, "firefox", false),
                (150, 200, "firefox", true),
            ]
        );
    }

    #[test]
    fn the_range_clips_and_overlapping_window_events_never_overlap() {
        let window = [
            ev(0, 100.0, json!({"app": "code", "title": "a"})),
            ev(80, 40.0, json!({"app": "slack", "title": "c"})),
        ];
        // No AFK watcher: active. The range starts at 10 s and ends at 110 s.
        assert_eq!(
            summary(&combine(&window, &[], false, 10_000, 110_000)),
            vec![(10, 100, "code", true), (100, 110, "slack", true)]
        );
        // An AFK watcher that says nothing about 50..110 s: that time is
        // dropped, as ActivityWatch drops it.
        let afk = [ev(0, 50.0, json!({"status": "not-afk"}))];
        assert_eq!(
            summary(&combine(&window, &afk, true, 10_000, 110_000)),
            vec![(10, 50, "code", true)]
        );
    }
}
