//! From observations to committed spans: each poll's observation becomes a
//! heartbeat under the privacy policy, heartbeats merge into spans, and each
//! closed span is committed to the outbox.
//!
//! Two rules keep the device's timeline valid whatever the wall clock does:
//! - A heartbeat never starts before the device's high-water mark (the end
//!   of the last span committed or acknowledged, or of the open span). When
//!   the clock jumps backwards, the open span is closed and observations are
//!   skipped, with a warning, until the clock has passed the mark again; a
//!   forward jump just starts a new span (the gap exceeds the pulsetime).
//! - Going idle ends the active span at the user's last input, not at the
//!   poll that noticed it (ActivityWatch's AFK watcher does the same), and
//!   the idle span starts there.
//!
//! A long span is committed in pieces: once the open span is a minute longer
//! than the idle threshold, the part older than the threshold (which going
//! idle can no longer cut) is committed, so a crash loses at most the idle
//! threshold plus a minute. While the outbox cannot take spans (disk full),
//! observations go on being recorded: closed spans wait in memory (at most
//! [`MAX_UNSAVED`]; beyond, the oldest go, with a warning) and are
//! committed, oldest first, once the outbox takes writes again.

use std::time::Duration;

use crate::capture::Observation;
use crate::heartbeat::{Event, Merger};
use crate::outbox::{Outbox, OutboxError};
use crate::privacy::Policy;

/// What one observation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// It extended the open span or started a new one.
    Recorded,
    /// The wall clock is behind the device's high-water mark by `by_ms`:
    /// nothing was recorded.
    ClockBehind {
        /// How far behind.
        by_ms: i64,
    },
}

/// Merges observations into spans and commits them to the outbox.
#[derive(Debug)]
pub struct Recorder {
    merger: Merger,
    idle_after: Duration,
    behind: bool,
    unsaved: Vec<Event>,
}

/// How much longer than the idle threshold a span grows before its older
/// part is committed.
const PIECE: Duration = Duration::from_secs(60);

/// Most closed spans kept in memory while the outbox refuses writes (a
/// span is at most a few KiB: tens of MiB at worst, days of switching
/// windows).
pub const MAX_UNSAVED: usize = 20_000;

/// Most waiting spans committed in one transaction.
const SAVE_CHUNK: usize = 500;

impl Recorder {
    /// A recorder for polls every `poll`, idle after `idle_after` without
    /// input.
    pub fn new(poll: Duration, idle_after: Duration) -> Self {
        Self {
            merger: Merger::new(poll),
            idle_after,
            behind: false,
            unsaved: Vec::new(),
        }
    }

    /// Records `observation`, made at `now_ms` (wall clock), under `policy`.
    pub fn record(
        &mut self,
        observation: &Observation,
        now_ms: i64,
        policy: &Policy,
        outbox: &mut Outbox,
    ) -> Result<Recorded, OutboxError> {
        // Spans still waiting from a failed write wait a little longer:
        // this observation is recorded whatever the outbox does.
        let _ = self.save(outbox);
        let open_end = self.merger.open().map(Event::end_ms);
        let unsaved_end = self.unsaved.last().map(Event::end_ms);
        let floor = outbox.high_water()?.max(open_end).max(unsaved_end);
        if let Some(floor) = floor
            && now_ms < floor
        {
            // Kept in memory when the outbox refuses it: the clock is
            // behind either way.
            let _ = self.flush(outbox);
            if !self.behind {
                tracing::warn!(
                    behind_ms = floor - now_ms,
                    "the clock went back; recording resumes when it passes the last recorded time"
                );
                self.behind = true;
            }
            return Ok(Recorded::ClockBehind {
                by_ms: floor - now_ms,
            });
        }
        self.behind = false;
        let mut heartbeat = observation.heartbeat(now_ms, self.idle_after);
        policy.apply(&mut heartbeat.data);
        if !heartbeat.data.active
            && let Some(open) = self.merger.open()
            && open.data.active
        {
            let last_input = now_ms.saturating_sub(observation.idle.as_millis() as i64);
            let cut = last_input.max(open.start_ms);
            self.merger.truncate(cut);
            heartbeat.start_ms = cut;
            heartbeat.duration_ms = now_ms - cut;
        }
        if let Some(closed) = self.merger.heartbeat(heartbeat) {
            self.unsaved.push(closed);
        }
        let idle_after = self.idle_after.as_millis() as i64;
        if self
            .merger
            .open()
            .is_some_and(|o| o.duration_ms > idle_after + PIECE.as_millis() as i64)
            && let Some(piece) = self.merger.split_at(now_ms - idle_after)
        {
            self.unsaved.push(piece);
        }
        self.save(outbox)?;
        Ok(Recorded::Recorded)
    }

    /// Commits the spans not committed yet, oldest first; beyond
    /// [`MAX_UNSAVED`] waiting, the oldest are dropped.
    fn save(&mut self, outbox: &mut Outbox) -> Result<(), OutboxError> {
        if self.unsaved.len() > MAX_UNSAVED {
            let dropped = self.unsaved.len() - MAX_UNSAVED;
            self.unsaved.drain(..dropped);
            tracing::warn!(
                dropped,
                "the outbox has refused writes for long; the oldest activity kept in memory is lost"
            );
        }
        // A few hundred a transaction (one sync each, not one a span) once
        // the disk takes writes again; when a chunk does not fit, as many
        // as fit one by one.
        while !self.unsaved.is_empty() {
            let chunk = self.unsaved.len().min(SAVE_CHUNK);
            if outbox.push_all(&self.unsaved[..chunk]).is_err() {
                let mut saved = 0;
                let result = self.unsaved.iter().try_for_each(|span| {
                    outbox.push(span)?;
                    saved += 1;
                    Ok(())
                });
                self.unsaved.drain(..saved);
                return result;
            }
            self.unsaved.drain(..chunk);
        }
        Ok(())
    }

    /// Closed spans waiting in memory for the outbox to take them.
    pub fn unsaved(&self) -> usize {
        self.unsaved.len()
    }

    /// Closes the open span (pause, shutdown, clock jump) and commits it.
    pub fn flush(&mut self, outbox: &mut Outbox) -> Result<(), OutboxError> {
        if let Some(closed) = self.merger.flush() {
            self.unsaved.push(closed);
        }
        self.save(outbox)
    }

    /// The span still growing, if any.
    pub fn current(&self) -> Option<&Event> {
        self.merger.open()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OPEN: Policy = Policy {
        capture_titles: true,
        capture_urls: true,
    };

    fn seen(app: &str, idle_s: u64) -> Observation {
        Observation {
            app: app.into(),
            title: format!("{app} window"),
            idle: Duration::from_secs(idle_s),
        }
    }

    fn committed(outbox: &mut Outbox) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(batch) = outbox.next_batch(1000).unwrap() {
            all.extend(batch.spans);
            outbox.acknowledge(batch.seq).unwrap();
        }
        all
    }

    #[test]
    fn going_idle_ends_the_active_span_at_the_last_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        // Active input until t=100 s, then none: noticed at t=280 s.
        for t in 0..=280i64 {
            let idle = (t - 100).max(0) as u64;
            r.record(&seen("code", idle), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        for t in 281..=300i64 {
            r.record(&seen("code", 0), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        r.flush(&mut outbox).unwrap();
        let spans: Vec<(i64, i64, bool)> = committed(&mut outbox)
            .iter()
            .map(|e| (e.start_ms, e.end_ms(), e.data.active))
            .collect();
        assert_eq!(
            spans,
            vec![
                // Committed in pieces while it grew (see below).
                (0, 61_000, true),
                (61_000, 100_000, true),
                (100_000, 280_000, false),
                (281_000, 300_000, true)
            ]
        );
    }

    #[test]
    fn a_clock_jump_back_pauses_recording_until_the_clock_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        for t in 0..10i64 {
            r.record(&seen("code", 0), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        // Back by 5 s: the open span is committed as it was.
        assert_eq!(
            r.record(&seen("code", 0), 4_000, &OPEN, &mut outbox)
                .unwrap(),
            Recorded::ClockBehind { by_ms: 5_000 }
        );
        assert_eq!(outbox.high_water().unwrap(), Some(9_000));
        assert_eq!(
            r.record(&seen("code", 0), 9_000, &OPEN, &mut outbox)
                .unwrap(),
            Recorded::Recorded
        );
        // A recorder restarted with the clock behind obeys the same mark.
        let mut restarted = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        assert!(matches!(
            restarted
                .record(&seen("code", 0), 1_000, &OPEN, &mut outbox)
                .unwrap(),
            Recorded::ClockBehind { .. }
        ));
    }

    #[test]
    fn a_long_span_is_committed_in_pieces_the_idle_cut_cannot_reach() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        for t in 0..=600i64 {
            r.record(&seen("code", 0), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        // Committed before the span closes, never within the idle threshold.
        let pieces = outbox.spans().unwrap();
        assert!(!pieces.is_empty());
        assert!(pieces.last().unwrap().end_ms() <= 420_000, "{pieces:?}");
        r.flush(&mut outbox).unwrap();
        let all = committed(&mut outbox);
        assert_eq!(all.first().unwrap().start_ms, 0);
        assert_eq!(all.last().unwrap().end_ms(), 600_000);
        for w in all.windows(2) {
            assert_eq!(w[0].end_ms(), w[1].start_ms, "pieces are contiguous");
        }
    }

    #[test]
    fn minutes_of_full_disk_lose_no_observation() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        // A window switch every 2 s while the disk is full.
        let app = |t: i64| match t {
            10..1210 => ["firefox", "slack", "code"][(t / 2 % 3) as usize],
            _ => "code",
        };
        for t in 0..10i64 {
            r.record(&seen(app(t), 0), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        // SQLite answers "database or disk is full" for twenty minutes
        // (once the spans' last page has no room left) ...
        outbox.fill(true);
        let mut refused = 0;
        for t in 10..1210i64 {
            if r.record(&seen(app(t), 0), t * 1000, &OPEN, &mut outbox)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused > 0, "the outbox never refused a write");
        assert!(r.unsaved() > 0);
        // ... then takes writes again: everything observed is committed.
        outbox.fill(false);
        for t in 1210..1220i64 {
            r.record(&seen(app(t), 0), t * 1000, &OPEN, &mut outbox)
                .unwrap();
        }
        r.flush(&mut outbox).unwrap();
        assert_eq!(r.unsaved(), 0);
        // Every run of one window, from its first heartbeat to its last.
        let mut runs: Vec<(i64, i64, &str)> = Vec::new();
        for t in 0..1220i64 {
            match runs.last_mut() {
                Some(run) if run.2 == app(t) => run.1 = t * 1000,
                _ => runs.push((t * 1000, t * 1000, app(t))),
            }
        }
        runs.retain(|run| run.1 > run.0);
        let all: Vec<(i64, i64, String)> = committed(&mut outbox)
            .into_iter()
            .map(|e| (e.start_ms, e.end_ms(), e.data.app))
            .collect();
        let expected: Vec<(i64, i64, String)> = runs
            .into_iter()
            .map(|(start, end, app)| (start, end, app.to_owned()))
            .collect();
        let first_lost = expected.iter().find(|run| !all.contains(run));
        assert!(
            all == expected,
            "{} spans committed of {} observed; first lost: {first_lost:?}",
            all.len(),
            expected.len()
        );
    }

    #[test]
    fn the_policy_is_applied_before_the_span_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
        for t in 0..5i64 {
            r.record(&seen("code", 0), t * 1000, &Policy::STRICT, &mut outbox)
                .unwrap();
        }
        r.flush(&mut outbox).unwrap();
        let spans = committed(&mut outbox);
        assert_eq!(spans.len(), 1);
        assert_eq!(
            (spans[0].data.app.as_str(), spans[0].data.title.as_str()),
            ("code", "")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the wall clock does (small steps, jumps back and forth
        /// by up to an hour, the agent restarted), committed spans are in
        /// order, never overlap and never have a negative length.
        #[test]
        fn spans_stay_ordered_whatever_the_clock_does(
            steps in proptest::collection::vec(
                (prop_oneof![
                    8 => 0i64..2_000,
                    1 => -3_600_000i64..3_600_000,
                ], 0u8..3, 0u64..400, 0u8..20),
                1..120)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("o.db");
            let mut outbox = Outbox::open(&path).unwrap();
            let mut r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
            let mut now = 10 * 3_600_000i64;
            let mut all = Vec::new();
            for (step, app, idle, restart) in steps {
                now += step;
                r.record(&seen(["code", "firefox", "slack"][app as usize], idle), now, &OPEN, &mut outbox).unwrap();
                if restart == 0 {
                    // Killed: the open span is lost, the outbox stays.
                    drop(outbox);
                    outbox = Outbox::open(&path).unwrap();
                    r = Recorder::new(Duration::from_secs(1), Duration::from_secs(180));
                }
                if restart == 1 {
                    all.extend(committed(&mut outbox));
                }
            }
            r.flush(&mut outbox).unwrap();
            all.extend(committed(&mut outbox));
            for e in &all {
                prop_assert!(e.duration_ms > 0, "{:?}", e);
            }
            for w in all.windows(2) {
                prop_assert!(w[0].end_ms() <= w[1].start_ms, "{:?}", w);
            }
        }
    }
}
