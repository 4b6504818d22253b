//! The capture side of the running agent: the thread that polls the desktop
//! (or the ActivityWatch watchers' timelines) and commits spans to the
//! outbox, and the tidying of the local ActivityWatch store.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{AgentConfig, Shared, wall_now_ms};
use crate::aw::store::{AwError, AwEvent, AwStore, OwnBuckets};
use crate::capture::{Capture, CaptureError};
use crate::privacy::Policy;
use crate::recorder::{Recorded, Recorder};
use crate::today::Timelines;

/// How long the local ActivityWatch store keeps events.
const KEEP_LOCALLY: Duration = Duration::from_secs(30 * 86_400);
/// How often the local store forgets what is older than [`KEEP_LOCALLY`].
const TIDY_EVERY: Duration = Duration::from_secs(3600);

/// Forgets local activity older than [`KEEP_LOCALLY`] at `now_ms`.
fn forget_old(aw: &Mutex<AwStore>, now_ms: i64) {
    let before = chrono::DateTime::from_timestamp_millis(now_ms - KEEP_LOCALLY.as_millis() as i64)
        .unwrap_or_default();
    if let Err(e) = crate::lock(aw).forget_before(before) {
        tracing::warn!(error = %e, "cannot forget old local activity");
    }
}

/// The agent's own observation as ActivityWatch's window and AFK watchers
/// would report it, into the local store (what the desktop app and
/// ActivityWatch clients read): heartbeats with the poll's pulsetime.
fn report_locally(
    store: &Mutex<AwStore>,
    own: &OwnBuckets,
    data: &crate::heartbeat::SpanData,
    now_ms: i64,
    pulsetime: Duration,
) -> Result<(), AwError> {
    let at = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let mut window = serde_json::Map::new();
    window.insert("app".into(), data.app.clone().into());
    window.insert("title".into(), data.title.clone().into());
    if let Some(url) = &data.url {
        window.insert("url".into(), url.clone().into());
    }
    let mut afk = serde_json::Map::new();
    let status = if data.active { "not-afk" } else { "afk" };
    afk.insert("status".into(), status.into());
    let mut store = crate::lock(store);
    for (bucket, data) in [(&own.window, window), (&own.afk, afk)] {
        let beat = AwEvent {
            id: None,
            timestamp: at,
            duration: 0.0,
            data,
        };
        store.heartbeat(bucket, &beat, pulsetime.as_secs_f64())?;
    }
    Ok(())
}

pub(super) fn capture_loop<C, F>(
    shared: &Shared,
    config: &AgentConfig,
    aw: &Mutex<AwStore>,
    mut connect: F,
) where
    C: Capture,
    F: FnMut() -> Result<C, CaptureError>,
{
    const RECONNECT: Duration = Duration::from_secs(5);
    let mut recorder = Recorder::new(config.poll, config.idle_after);
    let pulsetime = crate::heartbeat::pulsetime(config.poll);
    let own = crate::lock(aw).own_buckets(&crate::aw::api::hostname());
    let own = match own {
        Ok(own) => Some(own),
        Err(e) => {
            tracing::error!(error = %e, "cannot keep recent activity locally");
            None
        }
    };
    let mut next_tidy = Instant::now();
    let mut local_failed = false;
    // Once per outage, not once per observation: while the disk is full
    // every poll fails the same way.
    let mut outbox_failed = false;
    let mut capture: Option<C> = None;
    let mut next_connect = Instant::now();
    let mut next = Instant::now();
    let flush =
        |recorder: &mut Recorder, failed: &mut bool| match recorder.flush(&mut shared.outbox()) {
            Ok(()) => *failed = false,
            Err(e) if !*failed => {
                *failed = true;
                tracing::error!(error = %e, "cannot commit the open span to the outbox");
            }
            Err(_) => {}
        };
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        next = (next + config.poll).max(now);
        if shared.paused.load(Ordering::SeqCst) {
            flush(&mut recorder, &mut outbox_failed);
            shared.update(|s| {
                s.paused = true;
                s.current = None;
            });
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
            continue;
        }
        if capture.is_none() && now >= next_connect {
            match connect() {
                Ok(c) => {
                    capture = Some(c);
                    shared.update(|s| s.capture_error = None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot observe the desktop; trying again");
                    shared.update(|s| s.capture_error = Some(e.to_string()));
                    next_connect = now + RECONNECT;
                }
            }
        }
        if let Some(c) = &mut capture {
            match c.observe() {
                Ok(observation) => {
                    let policy = shared.policy().unwrap_or(Policy::STRICT);
                    let at = wall_now_ms();
                    let recorded = recorder.record(&observation, at, &policy, &mut shared.outbox());
                    if let (Ok(Recorded::Recorded), Some(own)) = (&recorded, &own) {
                        let mut data = observation.heartbeat(at, config.idle_after).data;
                        policy.apply(&mut data);
                        match report_locally(aw, own, &data, at, pulsetime) {
                            Ok(()) => local_failed = false,
                            Err(e) if !local_failed => {
                                local_failed = true;
                                tracing::warn!(error = %e, "cannot keep recent activity locally");
                            }
                            Err(_) => {}
                        }
                    }
                    if now >= next_tidy {
                        next_tidy = now + TIDY_EVERY;
                        forget_old(aw, at);
                    }
                    let behind = match recorded {
                        Ok(Recorded::ClockBehind { by_ms }) => Some(by_ms),
                        Ok(Recorded::Recorded) => {
                            if outbox_failed {
                                outbox_failed = false;
                                tracing::info!("the outbox takes writes again");
                            }
                            None
                        }
                        Err(e) => {
                            if !outbox_failed {
                                outbox_failed = true;
                                tracing::error!(
                                    error = %e,
                                    "cannot commit a span to the outbox; activity waits in memory until it takes writes"
                                );
                            }
                            None
                        }
                    };
                    let waiting = shared.outbox().waiting().unwrap_or_default();
                    shared.update(|s| {
                        s.paused = false;
                        s.current = recorder.current().cloned();
                        s.clock_behind_ms = behind;
                        s.waiting = waiting;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the desktop connection failed; reconnecting");
                    flush(&mut recorder, &mut outbox_failed);
                    capture = None;
                    next_connect = now + RECONNECT;
                    shared.update(|s| {
                        s.current = None;
                        s.capture_error = Some(e.to_string());
                    });
                }
            }
        }
        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
    }
    flush(&mut recorder, &mut outbox_failed);
}

/// Combines ActivityWatch's settled timelines into the outbox every 5 s
/// (and once more when stopping). While paused, the watchers' time up to
/// the pause is combined at once and the time after it is skipped (the
/// watchers go on reporting; the paused time never becomes spans).
pub(super) fn combine_loop(shared: &Shared, config: &AgentConfig, aw: &Mutex<AwStore>) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut paused_at: Option<i64> = None;
    let mut next_tidy = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let paused = shared.paused.load(Ordering::SeqCst);
        let now = wall_now_ms();
        if Instant::now() >= next_tidy {
            next_tidy = Instant::now() + TIDY_EVERY;
            forget_old(aw, now);
        }
        if paused && paused_at.is_none() {
            paused_at = Some(now);
        }
        let combined = match paused_at {
            Some(at) => combine_settled(shared, aw, at).and_then(|_| {
                // Skip the paused time: the mark moves to now.
                let mut outbox = shared.outbox();
                outbox
                    .push_combined(&[], now)
                    .and_then(|()| outbox.waiting())
                    .map_err(|e| e.to_string())
            }),
            None => combine_settled(
                shared,
                aw,
                now - config.settle.as_millis().min(i64::MAX as u128) as i64,
            ),
        };
        if !paused {
            paused_at = None;
        }
        match combined {
            Ok(waiting) => shared.update(|s| {
                s.paused = paused;
                s.waiting = waiting;
                s.capture_error = None;
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot combine ActivityWatch's timelines");
                shared.update(|s| s.capture_error = Some(e));
            }
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(EVERY);
    }
}

/// Window and AFK events up to `settled`, from where the last run
/// stopped (and never before the device's high-water mark), become spans in
/// the outbox. The mark never passes the end of the newest window event, so
/// heartbeats a watcher queued while the agent was down and sends late are
/// still combined. The store stays locked until the spans are committed, so
/// a delete (which queues its retraction under that lock, cut at the
/// high-water mark) falls wholly before the events are read or after their
/// spans are in the outbox. Returns the spans waiting.
fn combine_settled(shared: &Shared, aw: &Mutex<AwStore>, settled: i64) -> Result<u64, String> {
    let store = crate::lock(aw);
    let (done, high) = {
        let outbox = shared.outbox();
        (
            outbox.combined_until().map_err(|e| e.to_string())?,
            outbox.high_water().map_err(|e| e.to_string())?,
        )
    };
    // A mark in the future was set while the clock was ahead; the spans of
    // that time were refused and set aside, so the high-water mark decides.
    let done = done.filter(|&d| d <= wall_now_ms());
    let from = done.max(high).unwrap_or(i64::MIN);
    let buckets = store.buckets().map_err(|e| e.to_string())?;
    let mut newest_end = None;
    for b in buckets.iter().filter(|b| b.kind == "currentwindow") {
        for e in store
            .events(&b.id, None, None, Some(1))
            .map_err(|e| e.to_string())?
        {
            newest_end = newest_end.max(Some(
                e.timestamp.timestamp_millis() + (e.duration * 1000.0).round() as i64,
            ));
        }
    }
    let until = newest_end.map(|end| end.min(settled));
    if let Some(until) = until.filter(|&until| until > from) {
        let timelines = Timelines::read(&store, from, until).map_err(|e| e.to_string())?;
        let policy = shared.policy().unwrap_or(Policy::STRICT);
        let mut spans = timelines.combine(from, until);
        for span in &mut spans {
            policy.apply(&mut span.data);
        }
        shared
            .outbox()
            .push_combined(&spans, until)
            .map_err(|e| e.to_string())?;
    }
    drop(store);
    shared.outbox().waiting().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use serde_json::json;
    use tokio::sync::{Notify, watch};

    use super::*;
    use crate::aw::store::{NewBucket, SpanSource, ev};
    use crate::capture::Observation;
    use crate::outbox::Outbox;
    use crate::runner::{Classify, Status, later_for, retract_into};

    fn shared(outbox: Outbox) -> Arc<Shared> {
        Arc::new(Shared {
            outbox: Mutex::new(outbox),
            policy: Mutex::new(None),
            classify: Mutex::new(Classify::kept(None)),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            status: watch::channel(Status::default()).0,
            wake_uploader: Notify::new(),
        })
    }

    #[test]
    fn deleting_a_combined_event_queues_its_retraction_and_wakes_the_uploader() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(Outbox::open(&dir.path().join("outbox.db")).unwrap());
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        for (id, kind) in [("w", "currentwindow"), ("a", "afkstatus")] {
            let new: NewBucket = serde_json::from_value(
                json!({"client": "aw-watcher", "type": kind, "hostname": "laptop"}),
            )
            .unwrap();
            store.create_bucket(id, &new).unwrap();
        }
        let t0 = 1_700_000_000;
        let window = store
            .insert("w", &[ev(t0, 60.0, json!({"app": "code", "title": "x"}))])
            .unwrap();
        store
            .insert("a", &[ev(t0, 60.0, json!({"status": "not-afk"}))])
            .unwrap();
        store.set_span_source(SpanSource::Watchers);
        store.on_retract(retract_into(
            shared.clone(),
            later_for(SpanSource::Watchers),
        ));
        let aw = Mutex::new(store);
        assert_eq!(combine_settled(&shared, &aw, wall_now_ms()), Ok(1));
        crate::lock(&aw)
            .delete_event("w", window[0].id.unwrap())
            .unwrap();
        let batch = shared.outbox().next_batch(10).unwrap().unwrap();
        assert_eq!(batch.spans.len(), 1);
        assert_eq!(batch.retractions, vec![(t0 * 1000, (t0 + 60) * 1000)]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let woken = runtime.block_on(async {
            tokio::time::timeout(Duration::ZERO, shared.wake_uploader.notified()).await
        });
        assert!(woken.is_ok(), "the uploader is woken");
    }

    #[test]
    fn deleting_the_event_the_own_capture_is_still_in_withdraws_its_span_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(Outbox::open(&dir.path().join("outbox.db")).unwrap());
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        let own = store.own_buckets("laptop").unwrap();
        store.set_span_source(SpanSource::Own);
        store.on_retract(retract_into(shared.clone(), later_for(SpanSource::Own)));
        let aw = Mutex::new(store);
        let poll = Duration::from_secs(1);
        let idle_after = Duration::from_secs(180);
        let mut recorder = Recorder::new(poll, idle_after);
        let open = Policy {
            capture_titles: true,
            capture_urls: true,
        };
        // An hour ago: 20 s of code, then 20 s of banking, still open.
        let t0 = (wall_now_ms() - 3_600_000) / 1000 * 1000;
        for s in 0..40 {
            let observation = Observation {
                app: if s < 20 { "code" } else { "bank" }.into(),
                title: "t".into(),
                idle: Duration::ZERO,
            };
            let at = t0 + s * 1000;
            recorder
                .record(&observation, at, &open, &mut shared.outbox())
                .unwrap();
            let data = observation.heartbeat(at, idle_after).data;
            report_locally(&aw, &own, &data, at, crate::heartbeat::pulsetime(poll)).unwrap();
        }
        assert_eq!(
            shared.outbox().waiting().unwrap(),
            1,
            "the banking span is open"
        );
        // The employee deletes the banking event.
        let bank = {
            let store = crate::lock(&aw);
            let events = store.events(&own.window, None, None, None).unwrap();
            events
                .into_iter()
                .find(|e| e.data["app"] == "bank")
                .unwrap()
        };
        let start = bank.timestamp.timestamp_millis();
        let deleted = (start, start + (bank.duration * 1000.0).round() as i64);
        assert!(deleted.1 > deleted.0);
        crate::lock(&aw)
            .delete_event(&own.window, bank.id.unwrap())
            .unwrap();
        // The open span is committed: it is uploaded whole, and its deleted
        // time is withdrawn with it.
        recorder.flush(&mut shared.outbox()).unwrap();
        let batch = shared.outbox().next_batch(10).unwrap().unwrap();
        let apps: Vec<&str> = batch.spans.iter().map(|s| s.data.app.as_str()).collect();
        assert_eq!(apps, ["code", "bank"]);
        let span = &batch.spans[1];
        assert!(
            span.start_ms <= deleted.0 && deleted.1 <= span.end_ms(),
            "{span:?}"
        );
        assert_eq!(batch.retractions, vec![deleted]);
    }
}
