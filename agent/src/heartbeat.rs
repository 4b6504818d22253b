//! Heartbeats merged into spans, as ActivityWatch's server merges them
//! (aw-core `heartbeat_merge`): a heartbeat extends the last span when its
//! data is identical and it starts no earlier than the span and no later than
//! the span's end plus the pulsetime; otherwise it starts a new span.

use std::time::Duration;

/// What a span is about: the active window and whether the user was active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanData {
    /// Application (X11 WM_CLASS or similar).
    pub app: String,
    /// Window title.
    pub title: String,
    /// URL, when known.
    pub url: Option<String>,
    /// Active (true) or idle.
    pub active: bool,
}

/// A stretch of time with one `SpanData`; a heartbeat is one of length 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Length in milliseconds.
    pub duration_ms: i64,
    /// What it is about.
    pub data: SpanData,
}

impl Event {
    /// End (exclusive), milliseconds since the Unix epoch.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }
}

/// ActivityWatch's pulsetime for a poll interval: max(1.5 x poll, poll + 1 s).
pub fn pulsetime(poll: Duration) -> Duration {
    (poll * 3 / 2).max(poll + Duration::from_secs(1))
}

/// ActivityWatch's heartbeat rule on times (in any one unit), the one rule
/// both the agent's spans and its ActivityWatch store merge by: a heartbeat
/// that starts between the last event's start and its end plus the
/// pulsetime extends the event to the later of both ends (returned);
/// otherwise it starts a new event. The caller checks that the data agree.
pub fn merged_end(last: (i64, i64), heartbeat: (i64, i64), pulsetime: i64) -> Option<i64> {
    let ((start, end), (beat_start, beat_end)) = (last, heartbeat);
    (beat_start >= start && beat_start <= end.saturating_add(pulsetime)).then(|| end.max(beat_end))
}

/// The last event extended by `heartbeat`, or None when the heartbeat
/// starts a new event (other data, or outside the pulsetime window).
pub fn merge(last: &Event, heartbeat: &Event, pulsetime: Duration) -> Option<Event> {
    if last.data != heartbeat.data {
        return None;
    }
    let end = merged_end(
        (last.start_ms, last.end_ms()),
        (heartbeat.start_ms, heartbeat.end_ms()),
        pulsetime.as_millis() as i64,
    )?;
    Some(Event {
        duration_ms: end - last.start_ms,
        ..last.clone()
    })
}

/// Merges a stream of heartbeats into spans: the open span grows while
/// heartbeats merge into it, and each span that can no longer grow is handed
/// out (to the outbox).
#[derive(Debug)]
pub struct Merger {
    pulsetime: Duration,
    open: Option<Event>,
}

impl Merger {
    /// A merger with the pulsetime of `poll`.
    pub fn new(poll: Duration) -> Self {
        Self {
            pulsetime: pulsetime(poll),
            open: None,
        }
    }

    /// Takes a heartbeat; returns the span it closed, if any. A span of
    /// length 0 (a single heartbeat) is dropped when closed.
    pub fn heartbeat(&mut self, heartbeat: Event) -> Option<Event> {
        match &self.open {
            Some(open) => match merge(open, &heartbeat, self.pulsetime) {
                Some(merged) => {
                    self.open = Some(merged);
                    None
                }
                None => {
                    let closed = self.open.replace(heartbeat);
                    closed.filter(|e| e.duration_ms > 0)
                }
            },
            None => {
                self.open = Some(heartbeat);
                None
            }
        }
    }

    /// The span still growing, if any.
    pub fn open(&self) -> Option<&Event> {
        self.open.as_ref()
    }

    /// Ends the open span at `end_ms` if that is inside it (the user went
    /// idle at their last input, before the heartbeat that noticed it).
    pub fn truncate(&mut self, end_ms: i64) {
        if let Some(open) = &mut self.open
            && end_ms >= open.start_ms
            && end_ms < open.end_ms()
        {
            open.duration_ms = end_ms - open.start_ms;
        }
    }

    /// Splits the open span at `at_ms` if that is inside it: the part before
    /// is returned (closed), the part after stays open.
    pub fn split_at(&mut self, at_ms: i64) -> Option<Event> {
        let open = self.open.as_mut()?;
        if at_ms <= open.start_ms || at_ms >= open.end_ms() {
            return None;
        }
        let closed = Event {
            duration_ms: at_ms - open.start_ms,
            ..open.clone()
        };
        open.duration_ms = open.end_ms() - at_ms;
        open.start_ms = at_ms;
        Some(closed)
    }

    /// Closes the open span (pause, shutdown) and returns it.
    pub fn flush(&mut self) -> Option<Event> {
        self.open.take().filter(|e| e.duration_ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data(app: &str) -> SpanData {
        SpanData {
            app: app.into(),
            title: format!("{app} window"),
            url: None,
            active: true,
        }
    }

    fn beat(at_s: i64, app: &str) -> Event {
        Event {
            start_ms: at_s * 1000,
            duration_ms: 0,
            data: data(app),
        }
    }

    #[test]
    fn pulsetime_is_activitywatchs() {
        assert_eq!(pulsetime(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(
            pulsetime(Duration::from_secs(5)),
            Duration::from_millis(7500)
        );
    }

    #[test]
    fn identical_data_within_the_window_merges() {
        let last = Event {
            start_ms: 0,
            duration_ms: 10_000,
            data: data("code"),
        };
        let merged = merge(&last, &beat(11, "code"), Duration::from_secs(2)).unwrap();
        assert_eq!((merged.start_ms, merged.duration_ms), (0, 11_000));
        // Inside the span: the duration does not shrink.
        let inside = merge(&last, &beat(3, "code"), Duration::from_secs(2)).unwrap();
        assert_eq!(inside.duration_ms, 10_000);
        // Beyond end + pulsetime, other data, or before the start: no merge.
        assert!(merge(&last, &beat(13, "code"), Duration::from_secs(2)).is_none());
        assert!(merge(&last, &beat(11, "firefox"), Duration::from_secs(2)).is_none());
        let late = Event {
            start_ms: 5_000,
            ..last.clone()
        };
        assert!(merge(&late, &beat(4, "code"), Duration::from_secs(2)).is_none());
    }

    #[test]
    fn a_poll_every_second_becomes_spans() {
        let mut merger = Merger::new(Duration::from_secs(1));
        let mut closed = Vec::new();
        for s in 0..10 {
            closed.extend(merger.heartbeat(beat(s, "code")));
        }
        for s in 10..15 {
            closed.extend(merger.heartbeat(beat(s, "firefox")));
        }
        // A gap of 5 s (more than the 2 s pulsetime) splits.
        for s in 20..23 {
            closed.extend(merger.heartbeat(beat(s, "firefox")));
        }
        closed.extend(merger.flush());
        let spans: Vec<(i64, i64, &str)> = closed
            .iter()
            .map(|e| (e.start_ms, e.end_ms(), e.data.app.as_str()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 9_000, "code"),
                (10_000, 14_000, "firefox"),
                (20_000, 22_000, "firefox")
            ]
        );
    }

    proptest! {
        #[test]
        fn closed_spans_are_ordered_and_never_overlap(beats in proptest::collection::vec((0i64..3, 0u8..3), 1..200)) {
            let mut merger = Merger::new(Duration::from_secs(1));
            let mut at = 0;
            let mut closed = Vec::new();
            for (step, app) in beats {
                at += step;
                closed.extend(merger.heartbeat(beat(at, ["code", "firefox", "slack"][app as usize])));
            }
            closed.extend(merger.flush());
            for w in closed.windows(2) {
                prop_assert!(w[0].end_ms() <= w[1].start_ms, "{:?}", w);
            }
            for e in &closed {
                prop_assert!(e.duration_ms > 0);
            }
        }
    }
}
