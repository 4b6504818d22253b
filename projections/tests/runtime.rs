//! The projection runtime against a real nats-server and a real PostgreSQL:
//! batching, checkpoints, restarts, failures, poison messages, dead-letter
//! replay, versions and promotion, status, NATS crashes, invalidations and
//! read-your-writes. Each test has its own server and database.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use trackhrs_projections::{
    ProjectionError, RunOutcome, RunnerConfig, VersionState, Waited, catalog, invalidation,
    list_dead_letters, replay_dead_letters,
};

const NAME: &str = "org_events";
const V1: &str = "proj_org_events_v1";
const V2: &str = "proj_org_events_v2";

fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_apply_and_the_checkpoint_advances() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut last = 0;
    for org in ["acme", "globex", "initech"] {
        last = env.create_org(org).await;
        for m in 0..4 {
            last = env.invite(org, &format!("m{m}")).await;
        }
    }
    let projection = CountEvents::new(1);
    let hooks = projection.hooks.clone();
    let runner = env.spawn_runner(projection, quick(4));
    wait_position(&pg, NAME, 1, last).await;

    let i = info(&pg, NAME, 1).await.unwrap();
    assert_eq!(
        i.state,
        VersionState::Live,
        "the first version is live at once"
    );
    assert_eq!(i.position, last);
    assert_eq!(
        (i.commits_applied, i.events_applied, i.dead_letters),
        (15, 15, 0)
    );
    assert_eq!(
        catalog::live_schema(&pg, NAME).await.unwrap().as_deref(),
        Some(V1)
    );
    assert_eq!(
        counts(&pg, V1).await,
        expect(&[("acme", 5), ("globex", 5), ("initech", 5)])
    );
    assert_eq!(seen(&pg, V1).await, (15, 15));
    let batches = hooks.batches.lock().unwrap().clone();
    assert!(
        batches.len() >= 4 && batches.iter().all(|&b| (1..=4).contains(&b)),
        "batches of at most 4: {batches:?}"
    );

    // Once caught up, new events keep flowing.
    let late = env.invite("acme", "late").await;
    wait_position(&pg, NAME, 1, late).await;
    assert_eq!(counts(&pg, V1).await["acme"], 6);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_resumes_without_duplicates_or_gaps() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut last = 0;
    for i in 0..10 {
        last = env.create_org(&format!("a{i}")).await;
    }
    let runner = env.spawn_runner(CountEvents::new(1), quick(3));
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);

    // Appended while no runner runs.
    for i in 0..10 {
        last = env.create_org(&format!("b{i}")).await;
    }
    // A runner aborted in the middle of its work (its task dropped at an
    // await point, transaction and all) while it holds a delivered batch it
    // has not acknowledged: JetStream would redeliver that batch only after
    // the ack wait, after newer messages.
    let crashing_projection = CountEvents::new(1);
    let crashing_hooks = crashing_projection.hooks.clone();
    crashing_hooks.fail.store(true, Ordering::SeqCst);
    let crashing = env.spawn_runner(crashing_projection, quick(2));
    for i in 0..10 {
        last = env.create_org(&format!("c{i}")).await;
    }
    eventually("the crashing runner holds a batch", || async {
        crashing_hooks.failures.load(Ordering::SeqCst) >= 1
    })
    .await;
    crashing.task.abort();
    let _ = crashing.task.await;
    for i in 0..10 {
        last = env.create_org(&format!("d{i}")).await;
    }

    let runner = env.spawn_runner(CountEvents::new(1), quick(3));
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(seen(&pg, V1).await, (40, 40), "every commit exactly once");
    let c = counts(&pg, V1).await;
    assert_eq!(c.len(), 40);
    assert!(c.values().all(|&n| n == 1), "{c:?}");
    assert_eq!(info(&pg, NAME, 1).await.unwrap().events_applied, 40);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_rolls_back_rows_and_checkpoint_and_is_retried() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut last = 0;
    for i in 0..6 {
        last = env.create_org(&format!("o{i}")).await;
    }
    let projection = CountEvents::new(1);
    let hooks = projection.hooks.clone();
    hooks.fail.store(true, Ordering::SeqCst);
    let runner = env.spawn_runner(
        projection,
        RunnerConfig {
            max_backoff: Duration::from_millis(200),
            ..quick(100)
        },
    );
    eventually("two failed attempts", || async {
        hooks.failures.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Every attempt wrote its rows before failing; none of them stayed.
    assert_eq!(seen(&pg, V1).await, (0, 0));
    assert!(counts(&pg, V1).await.is_empty());
    let i = info(&pg, NAME, 1).await.unwrap();
    assert_eq!((i.position, i.events_applied), (0, 0));

    hooks.fail.store(false, Ordering::SeqCst);
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(seen(&pg, V1).await, (6, 6));
    assert_eq!(counts(&pg, V1).await.values().sum::<i64>(), 6);
    assert_eq!(info(&pg, NAME, 1).await.unwrap().events_applied, 6);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_flushes_a_partial_batch() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let projection = CountEvents::new(1);
    let hooks = projection.hooks.clone();
    let runner = env.spawn_runner(
        projection,
        RunnerConfig {
            batch_max: 100,
            batch_wait: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let mut last = 0;
    for i in 0..3 {
        last = env.create_org(&format!("o{i}")).await;
    }
    // Three commits never fill a batch of 100: only the timer applies them.
    wait_position(&pg, NAME, 1, last).await;
    let batches = hooks.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 3, "{batches:?}");
    assert!(batches.iter().all(|&b| b < 100));
    assert_eq!(seen(&pg, V1).await, (3, 3));
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_applied_without_waiting_for_the_timer() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut last = 0;
    for i in 0..25 {
        last = env.create_org(&format!("o{i}")).await;
    }
    let projection = CountEvents::new(1);
    let hooks = projection.hooks.clone();
    // The timer is far longer than the test's patience: only a runner that
    // applies the backlog's last partial batch at once gets there.
    let runner = env.spawn_runner(
        projection,
        RunnerConfig {
            batch_max: 10,
            batch_wait: PATIENCE * 2,
            ..Default::default()
        },
    );
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(*hooks.batches.lock().unwrap(), [10, 10, 5]);
    assert_eq!(seen(&pg, V1).await, (25, 25));
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_stream_and_later_events_apply() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let js = async_nats::jetstream::new(env.store.client().clone());
    let projection = CountEvents::new(1);
    *projection.hooks.poison_org.lock().unwrap() = Some("refused".into());
    *projection.hooks.sql_error_org.lock().unwrap() = Some("broken".into());

    env.create_org("good1").await;
    let refused = env.create_org("refused").await;
    let broken = env.create_org("broken").await;
    let garbage = js
        .publish("evt.garbage.organization.org", "not a commit".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let mut last = env.create_org("good2").await;

    let runner = env.spawn_runner(projection, quick(10));
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(counts(&pg, V1).await, expect(&[("good1", 1), ("good2", 1)]));
    assert_eq!(seen(&pg, V1).await, (2, 2));
    let i = info(&pg, NAME, 1).await.unwrap();
    assert_eq!((i.commits_applied, i.dead_letters), (2, 3));

    let letters = list_dead_letters(&env.store, Some(NAME)).await.unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    let events = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    for (sequence, subject, reason) in [
        (refused, "evt.refused.organization.org", "not welcome"),
        (broken, "evt.broken.organization.org", "division by zero"),
        (garbage, "evt.garbage.organization.org", "cannot decode"),
    ] {
        let l = letters
            .iter()
            .find(|l| l.stream_sequence == sequence)
            .unwrap_or_else(|| panic!("no dead letter for {sequence}: {letters:?}"));
        assert_eq!((l.projection.as_str(), l.version), (NAME, 1));
        assert_eq!(l.subject, subject);
        assert!(l.reason.contains(reason), "{}", l.reason);
        let original = events.get_raw_message(sequence).await.unwrap();
        assert_eq!(l.payload, original.payload, "the original bytes are kept");
    }

    // The projection goes on after them.
    last = env.create_org("good3").await;
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(counts(&pg, V1).await["good3"], 1);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_once_after_a_fix() {
    let env = Env::start().await;
    let mut pg = env.pg().await;
    let js = async_nats::jetstream::new(env.store.client().clone());
    let projection = CountEvents::new(1);
    *projection.hooks.poison_org.lock().unwrap() = Some("refused".into());

    env.create_org("good1").await;
    env.create_org("refused").await;
    js.publish("evt.garbage.organization.org", "not a commit".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let last = env.create_org("good2").await;
    let runner = env.spawn_runner(projection.clone(), quick(10));
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(info(&pg, NAME, 1).await.unwrap().dead_letters, 2);

    // The handler is fixed; the runner keeps running during the replay.
    *projection.hooks.poison_org.lock().unwrap() = None;
    let report = replay_dead_letters(&mut pg, &env.store, &projection)
        .await
        .unwrap();
    assert_eq!((report.replayed, report.already_applied), (1, 0));
    assert_eq!(report.still_failing.len(), 1, "the undecodable one stays");
    assert!(
        report.still_failing[0].1.contains("not a commit"),
        "{report:?}"
    );
    assert_eq!(
        counts(&pg, V1).await,
        expect(&[("good1", 1), ("refused", 1), ("good2", 1)])
    );
    let i = info(&pg, NAME, 1).await.unwrap();
    assert_eq!((i.commits_applied, i.dead_letters), (3, 1));
    let left = list_dead_letters(&env.store, Some(NAME)).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].subject, "evt.garbage.organization.org");

    // A second replay applies nothing twice.
    let again = replay_dead_letters(&mut pg, &env.store, &projection)
        .await
        .unwrap();
    assert_eq!((again.replayed, again.still_failing.len()), (0, 1));
    assert_eq!(seen(&pg, V1).await, (3, 3));
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_run_side_by_side_and_promote_flips_the_live_one() {
    let env = Env::start().await;
    let mut pg = env.pg().await;
    let mut last = 0;
    for i in 0..5 {
        last = env.create_org(&format!("o{i}")).await;
    }
    let v1 = env.spawn_runner(CountEvents::new(1), quick(2));
    wait_position(&pg, NAME, 1, last).await;
    let v2 = env.spawn_runner(CountEvents::new(2), quick(2));
    wait_position(&pg, NAME, 2, last).await;

    assert_eq!(
        info(&pg, NAME, 2).await.unwrap().state,
        VersionState::Building
    );
    assert_eq!(
        catalog::live_schema(&pg, NAME).await.unwrap().as_deref(),
        Some(V1)
    );
    assert_eq!(
        counts(&pg, V2).await,
        counts(&pg, V1).await,
        "v2 rebuilt from the start"
    );

    let mut promotions = env
        .store
        .client()
        .subscribe(invalidation::promotion_subject(NAME))
        .await
        .unwrap();
    env.store.client().flush().await.unwrap();
    let promoted = catalog::promote(&mut pg, env.store.client(), NAME, 2)
        .await
        .unwrap();
    assert_eq!(promoted.previous, Some(1));
    assert_eq!(
        catalog::live_schema(&pg, NAME).await.unwrap().as_deref(),
        Some(V2)
    );
    assert_eq!(
        info(&pg, NAME, 1).await.unwrap().state,
        VersionState::Retired
    );
    assert_eq!(info(&pg, NAME, 2).await.unwrap().state, VersionState::Live);
    let note = tokio::time::timeout(PATIENCE, promotions.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.subject.as_str(), invalidation::promotion_subject(NAME));

    // The retired version's runner stops by itself; the live one goes on.
    assert_eq!(v1.finished().await, RunOutcome::Retired);
    let late = env.create_org("late").await;
    wait_position(&pg, NAME, 2, late).await;
    assert_eq!(counts(&pg, V2).await.len(), 6);
    assert_eq!(counts(&pg, V1).await.len(), 5);

    // Only a version that is not live can be dropped.
    assert!(matches!(
        catalog::drop_version(&mut pg, &env.store, NAME, 2).await,
        Err(ProjectionError::DropLive { .. })
    ));
    catalog::drop_version(&mut pg, &env.store, NAME, 1)
        .await
        .unwrap();
    assert!(info(&pg, NAME, 1).await.is_none());
    let schemas = pg
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&V1],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(schemas, 0, "the old schema is gone");
    let js = async_nats::jetstream::new(env.store.client().clone());
    let events = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    assert!(
        events.consumer_info(V1).await.is_err(),
        "its consumer is gone"
    );
    assert!(events.consumer_info(V2).await.is_ok());
    assert_eq!(v2.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_can_promote_itself_when_caught_up() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut last = 0;
    for i in 0..4 {
        last = env.create_org(&format!("o{i}")).await;
    }
    let v1 = env.spawn_runner(CountEvents::new(1), quick(10));
    wait_position(&pg, NAME, 1, last).await;
    let v2 = env.spawn_runner(
        CountEvents::new(2),
        RunnerConfig {
            promote_when_caught_up: true,
            ..quick(1)
        },
    );
    eventually("v2 live", || async {
        catalog::live_schema(&pg, NAME).await.unwrap().as_deref() == Some(V2)
    })
    .await;
    assert!(info(&pg, NAME, 2).await.unwrap().position >= last);
    assert_eq!(counts(&pg, V2).await.len(), 4);
    assert_eq!(v1.finished().await, RunOutcome::Retired);
    assert_eq!(v2.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_position_and_lag() {
    let env = Env::start().await;
    let mut pg = env.pg().await;
    catalog::migrate(&mut pg).await.unwrap();
    let events = async_nats::jetstream::new(env.store.client().clone())
        .get_stream("TRACKHRS_EVENTS")
        .await
        .unwrap();
    catalog::register(&mut pg, &CountEvents::new(1), &events)
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = env.create_org(&format!("o{i}")).await;
    }
    let before = catalog::status(&pg, &env.store).await.unwrap();
    assert_eq!(before.len(), 1);
    let s = &before[0];
    assert_eq!((s.info.name.as_str(), s.info.version), (NAME, 1));
    assert_eq!(s.info.position, 0);
    assert_eq!(s.stream_last_sequence, last);
    assert_eq!(s.lag, last);
    assert_eq!(s.pending_messages, None, "no consumer before the first run");

    let runner = env.spawn_runner(CountEvents::new(1), quick(2));
    wait_position(&pg, NAME, 1, last).await;
    let after = catalog::status(&pg, &env.store).await.unwrap();
    assert_eq!(after[0].lag, 0);
    assert_eq!(after[0].info.events_applied, 5);
    assert_eq!(after[0].info.state, VersionState::Live);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
    // A stopped runner lets the lag grow again.
    let more = env.create_org("more").await;
    let stopped = catalog::status(&pg, &env.store).await.unwrap();
    assert_eq!(stopped[0].lag, more - last);
    assert_eq!(stopped[0].pending_messages, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_applied_once_across_a_nats_crash() {
    let mut env = Env::start().await;
    let pg = env.pg().await;
    let projection = CountEvents::new(1);
    let hooks = projection.hooks.clone();
    let runner = env.spawn_runner(
        projection,
        RunnerConfig {
            max_backoff: Duration::from_millis(200),
            ..quick(5)
        },
    );
    let mut last = 0;
    for i in 0..15 {
        last = env.create_org(&format!("a{i}")).await;
    }
    wait_position(&pg, NAME, 1, last).await;
    // The runner holds a delivered, unacknowledged batch it cannot commit
    // yet when the server dies.
    hooks.fail.store(true, Ordering::SeqCst);
    for i in 0..15 {
        env.create_org(&format!("b{i}")).await;
    }
    eventually("a batch in hand", || async {
        hooks.failures.load(Ordering::SeqCst) >= 1
    })
    .await;
    env.nats.kill();
    hooks.fail.store(false, Ordering::SeqCst);
    env.nats.restart().await.unwrap();
    for i in 0..30 {
        last = env.create_org(&format!("c{i}")).await;
    }
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(seen(&pg, V1).await, (60, 60), "every commit exactly once");
    let c = counts(&pg, V1).await;
    assert_eq!(c.len(), 60);
    assert!(c.values().all(|&n| n == 1), "{c:?}");
    assert_eq!(info(&pg, NAME, 1).await.unwrap().events_applied, 60);
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_publish_invalidations_and_positions_can_be_awaited() {
    let env = Env::start().await;
    let pg = env.pg().await;
    let mut projection = CountEvents::new(1);
    projection.subjects = vec!["evt.acme.organization.*".into()];
    let mut notes = env
        .store
        .client()
        .subscribe(invalidation::org_wildcard(NAME))
        .await
        .unwrap();
    env.store.client().flush().await.unwrap();
    let runner = env.spawn_runner(projection, quick(100));

    let p = env.create_org("acme").await;
    let waited = catalog::wait_for_position(&pg, NAME, p, PATIENCE)
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Reached(x) if x >= p), "{waited:?}");
    assert_eq!(counts(&pg, V1).await, expect(&[("acme", 1)]));
    let note = tokio::time::timeout(PATIENCE, notes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        note.subject.as_str(),
        invalidation::org_subject(NAME, "acme")
    );
    let noted: u64 = std::str::from_utf8(&note.payload).unwrap().parse().unwrap();
    assert!(noted >= p);

    // A commit the projection does not read still gets passed.
    let q = env.create_org("other").await;
    let waited = catalog::wait_for_position(&pg, NAME, q, PATIENCE)
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Reached(x) if x >= q), "{waited:?}");
    assert_eq!(counts(&pg, V1).await, expect(&[("acme", 1)]));

    let never = catalog::wait_for_position(&pg, NAME, q + 1000, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        matches!(never, Waited::TimedOut(Some(x)) if x >= q),
        "{never:?}"
    );
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_migrations_are_idempotent_when_run_at_once() {
    let env_db = trackhrs_harness::TestDb::create().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut pg = env_db.connect().await.unwrap();
        tasks.push(tokio::spawn(async move { catalog::migrate(&mut pg).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let pg = env_db.connect().await.unwrap();
    let (applied, distinct): (i64, i64) = pg
        .query_one(
            "SELECT count(*), count(DISTINCT version) FROM trackhrs_catalog.schema_migrations",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    // Each of the catalog's two migrations, once.
    assert_eq!((applied, distinct), (2, 2));
}

/// A refused row's description keeps PostgreSQL's message and code but not
/// its detail, which quotes the row (people's titles and URLs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_descriptions_do_not_quote_rows() {
    let db = trackhrs_harness::TestDb::create().await.unwrap();
    let pg = db.connect().await.unwrap();
    pg.batch_execute("CREATE TABLE t (title text CHECK (length(title) < 5))")
        .await
        .unwrap();
    let refused = pg
        .execute("INSERT INTO t VALUES ('a secret window title')", &[])
        .await
        .unwrap_err();
    let detail = refused.as_db_error().and_then(|d| d.detail()).unwrap_or("");
    assert!(
        detail.contains("secret"),
        "the server quoted the row: {detail}"
    );
    let described = trackhrs_projections::error::describe(&refused);
    assert!(!described.contains("secret"), "{described}");
    assert!(
        described.contains("SQLSTATE 23514") && described.contains("t_title_check"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_reads_added_subjects_only_when_it_missed_nothing_on_them() {
    let env = Env::start().await;
    let mut pg = env.pg().await;
    // An event on a subject the first code does not read, then one it does.
    let js = async_nats::jetstream::new(env.store.client().clone());
    js.publish("evt.acme.other.x", "not for v1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let last = env.create_org("acme").await;
    let runner = env.spawn_runner(CountEvents::new(1), quick(4));
    wait_position(&pg, NAME, 1, last).await;
    assert_eq!(runner.shutdown().await, RunOutcome::Shutdown);
    let events = js.get_stream("TRACKHRS_EVENTS").await.unwrap();

    // New code reads a subject on which nothing was stored: the version
    // reads it from its position on.
    let mut newer = CountEvents::new(1);
    newer.subjects.push("evt.*.erasure.*".into());
    let info = catalog::register(&mut pg, &newer, &events).await.unwrap();
    assert_eq!(info.subjects, newer.subjects);
    assert_eq!(
        catalog::version_info(&pg, NAME, 1)
            .await
            .unwrap()
            .unwrap()
            .subjects,
        newer.subjects,
        "recorded"
    );
    // A subject with an event at or before the version's position would
    // have been missed: that needs a new version.
    let mut missed = newer.clone();
    missed.subjects.push("evt.*.other.*".into());
    let refused = catalog::register(&mut pg, &missed, &events)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("bump the version"), "{refused}");
    // So does dropping a subject.
    let fewer = CountEvents::new(1);
    assert!(catalog::register(&mut pg, &fewer, &events).await.is_err());
}
