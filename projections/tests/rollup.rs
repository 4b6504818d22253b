//! The activity projection's rollup (time per member, day, category and app
//! under each org's rules in force) against its facts: the same time however
//! the commits are batched, with a rules change and two orgs in one batch;
//! time the employee withdrew, taken out of the days it was counted in (also
//! after a time-zone change) and out of the rollup, however batched; and a
//! live schema made before the rollup, applied to and summarised by this
//! code while the new version is built beside it.

mod common;

use chrono::NaiveDate;
use common::*;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, RetractionInput,
    SpanInput,
};
use trackhrs_domain::categories::CategoryRule;
use trackhrs_domain::organization::{OrgCommand, Settings};
use trackhrs_nats::CommitMeta;
use trackhrs_projections::Projection;
use trackhrs_projections::activity::{self, Activity, ActivityCommit};

const MINUTE_MS: i64 = 60_000;

/// Device d1 of p1 in acme.
const D1: (&str, &str, &str) = ("acme", "d1", "p1");

/// Records `spans` and `retractions` as batch `seq` of `device` of `member`
/// in `org`.
async fn record_batch(
    env: &Env,
    (org, device, member): (&str, &str, &str),
    seq: u64,
    spans: Vec<SpanInput>,
    retractions: Vec<RetractionInput>,
) {
    let command = ActivityCommand::RecordBatch {
        device: DeviceStatus::Active,
        member: tok(member),
        batch_id: format!("{device}-{seq}"),
        seq,
        spans,
        retractions,
        privacy: Privacy {
            titles: true,
            urls: true,
        },
        limits: IngestLimits {
            now_ms: now_micros() / 1000,
            max_skew_ms: 60_000,
            horizon_ms: 7 * 24 * 60 * MINUTE_MS,
            max_spans: 100,
        },
    };
    let meta = CommitMeta::new(
        format!("{device}-{seq}"),
        format!("device:{device}"),
        now_micros(),
    );
    env.handler
        .execute::<DeviceActivity>(&tok(org), &tok(device), command, &meta)
        .await
        .unwrap();
}

/// Records `n` spans of 7 minutes from `start_ms` on `device` of `member` in `org`.
async fn record(env: &Env, who: (&str, &str, &str), seq: u64, start_ms: i64, n: i64) {
    const APPS: [(&str, &str); 4] = [
        ("code", "main.rs"),
        ("slack", "#general"),
        ("firefox", "YouTube - cats"),
        ("zoom", "Weekly sync"),
    ];
    let spans = (0..n)
        .map(|i| {
            let (app, title) = APPS[i as usize % APPS.len()];
            SpanInput {
                start_ms: start_ms + i * 7 * MINUTE_MS,
                end_ms: start_ms + (i + 1) * 7 * MINUTE_MS,
                app: app.into(),
                title: format!("{title} {}", i % 3),
                url: None,
                active: i % 5 != 4,
            }
        })
        .collect();
    record_batch(env, who, seq, spans, vec![]).await;
}

/// Every commit of the log, as the projection reads it.
async fn commits(env: &Env) -> Vec<ActivityCommit> {
    let js = async_nats::jetstream::new(env.store.client().clone());
    let stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    let mut out = Vec::new();
    for sequence in 1..=env.last_sequence().await {
        let msg = stream.direct_get(sequence).await.unwrap();
        out.push(
            Activity::decode(env.store.keys(), &msg.subject, sequence, &msg.payload)
                .await
                .unwrap(),
        );
    }
    out
}

/// A fresh schema made by this code, with `batch` commits applied per transaction.
async fn build(
    pg: &mut tokio_postgres::Client,
    schema: &str,
    log: &[ActivityCommit],
    batch: usize,
) {
    let projection = Activity::new(1);
    let tx = pg.transaction().await.unwrap();
    tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    projection.migrate(&tx, schema).await.unwrap();
    tx.commit().await.unwrap();
    for chunk in log.chunks(batch) {
        let tx = pg.transaction().await.unwrap();
        projection.apply(&tx, schema, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// Rows of a query as text, in order.
async fn rows(pg: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    pg.query(&format!("SELECT t::text FROM ({sql}) t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The rollup, and the facts grouped the same way under each org's rules in force.
async fn rollup_and_facts(pg: &tokio_postgres::Client, schema: &str) -> (Vec<String>, Vec<String>) {
    let rollup = rows(
        pg,
        &format!(
            "SELECT org_id, rules_version, day, person_id, category, app, score, active_ms, idle_ms \
             FROM {schema}.rollup ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
    )
    .await;
    let facts = rows(
        pg,
        &format!(
            "SELECT d.org_id, s.rules_version, d.day, d.person_id, \
               coalesce(c.category, ARRAY['Uncategorized']) AS category, a.app, coalesce(c.score, 0) AS score, \
               coalesce(sum(d.ms) FILTER (WHERE d.active), 0)::int8, \
               coalesce(sum(d.ms) FILTER (WHERE NOT d.active), 0)::int8 \
             FROM {schema}.daily d JOIN {schema}.org_state s USING (org_id) \
             JOIN {schema}.activities a ON a.org_id = d.org_id AND a.activity_id = d.activity_id \
             LEFT JOIN {schema}.classifications c ON c.org_id = d.org_id \
               AND c.rules_version = s.rules_version AND c.activity_id = d.activity_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
    )
    .await;
    (rollup, facts)
}

/// Two orgs' spans around a rules change of one of them.
async fn history(env: &Env) -> Vec<ActivityCommit> {
    let start = now_micros() / 1000 - 26 * 60 * MINUTE_MS;
    env.create_org("acme").await;
    env.create_org("beta").await;
    record(env, ("acme", "d1", "p1"), 1, start, 40).await;
    record(env, ("beta", "d2", "p2"), 1, start, 30).await;
    env.execute(
        "acme",
        "rules-1",
        OrgCommand::SetCategoryRules {
            actor: tok("owner"),
            rules: vec![CategoryRule {
                name: vec!["Chat".into()],
                regex: Some("slack|zoom".into()),
                ignore_case: false,
                score: Some(-10),
            }],
        },
    )
    .await;
    record(env, ("acme", "d1", "p1"), 2, start + 40 * 7 * MINUTE_MS, 25).await;
    record(env, ("acme", "d3", "p3"), 1, start, 10).await;
    record(env, ("beta", "d2", "p2"), 2, start + 30 * 7 * MINUTE_MS, 12).await;
    commits(env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_is_the_facts_grouped_however_the_commits_are_batched() {
    let env = Env::start().await;
    let log = history(&env).await;
    let mut pg = env.pg().await;
    build(&mut pg, "one_batch", &log, log.len()).await;
    build(&mut pg, "per_commit", &log, 1).await;
    build(&mut pg, "in_threes", &log, 3).await;
    let (rollup, facts) = rollup_and_facts(&pg, "one_batch").await;
    assert!(rollup.len() > 10, "{rollup:?}");
    assert_eq!(rollup, facts, "one batch holding the rules change");
    assert!(
        rollup
            .iter()
            .any(|r| r.starts_with("(acme,1,") && r.contains("{Chat}"))
    );
    assert!(
        rollup.iter().all(|r| !r.starts_with("(acme,0,")),
        "acme's old rules version left behind"
    );
    assert!(rollup.iter().any(|r| r.starts_with("(beta,0,")));
    for schema in ["per_commit", "in_threes"] {
        assert_eq!(
            rollup_and_facts(&pg, schema).await,
            (rollup.clone(), facts.clone()),
            "{schema}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_schema_made_before_the_rollup_is_applied_to_and_summarised_from_its_facts() {
    let env = Env::start().await;
    let log = history(&env).await;
    let mut pg = env.pg().await;
    // Version 1's tables: this code's without the rollup.
    build(&mut pg, "old", &[], 1).await;
    pg.batch_execute("DROP TABLE old.rollup; UPDATE old.meta SET schema_version = 1")
        .await
        .unwrap();
    for chunk in log.chunks(2) {
        let tx = pg.transaction().await.unwrap();
        Activity::new(1).apply(&tx, "old", chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    build(&mut pg, "new", &log, 2).await;
    assert_eq!(
        rows(&pg, "SELECT * FROM old.daily ORDER BY 1, 2, 3, 4, 5").await,
        rows(&pg, "SELECT * FROM new.daily ORDER BY 1, 2, 3, 4, 5").await
    );
    let today = chrono::Utc::now().date_naive();
    let range: (NaiveDate, NaiveDate) = (today - chrono::Duration::days(3), today);
    for org in ["acme", "beta"] {
        let (_, rules) = activity::org_info(&pg, "new", org).await.unwrap();
        let mut read = Vec::new();
        for schema in ["old", "new"] {
            let version = activity::meta(&pg, schema).await.unwrap().schema_version;
            read.push(
                activity::summary(&pg, (schema, version), org, range, None, rules)
                    .await
                    .unwrap(),
            );
        }
        let (from_facts, from_rollup) = (read.remove(0), read.remove(0));
        let sorted = |mut g: activity::SummaryGroups| {
            g.member_days.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            g.categories.sort_by(|a, b| a.0.cmp(&b.0));
            g.apps.sort_by(|a, b| a.0.cmp(&b.0));
            g
        };
        let (from_facts, from_rollup) = (sorted(from_facts), sorted(from_rollup));
        assert!(!from_rollup.member_days.is_empty(), "{org}");
        assert_eq!(from_facts, from_rollup, "{org}");
    }
}

/// Time per day: the facts, and the time removed by the employee.
async fn per_day(pg: &tokio_postgres::Client, schema: &str) -> (Vec<String>, Vec<String>) {
    (
        rows(
            pg,
            &format!("SELECT day, sum(ms)::int8 FROM {schema}.daily GROUP BY 1 ORDER BY 1"),
        )
        .await,
        rows(
            pg,
            &format!("SELECT day, sum(ms)::int8 FROM {schema}.removed GROUP BY 1 ORDER BY 1"),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_time_leaves_the_days_it_was_counted_in_however_batched() {
    let env = Env::start().await;
    env.create_org("acme").await;
    // 40 spans of 7 minutes from 30 hours ago (across a UTC midnight), and
    // one of private banking, counted in UTC.
    let start = now_micros() / 1000 - 30 * 60 * MINUTE_MS;
    record(&env, D1, 1, start, 40).await;
    let bank = start + 40 * 7 * MINUTE_MS;
    let private = SpanInput {
        start_ms: bank,
        end_ms: bank + 20 * MINUTE_MS,
        app: "bank".into(),
        title: "private banking".into(),
        url: None,
        active: true,
    };
    record_batch(&env, D1, 2, vec![private], vec![]).await;
    // The org moves to UTC+14, and changes its rules; then the employee
    // withdraws the banking, four hours across the first spans (split in
    // two ranges that touch), a stretch nothing was recorded in, and
    // records more after it (which is not withdrawn).
    env.execute(
        "acme",
        "tz",
        OrgCommand::ChangeSettings {
            actor: tok("owner"),
            settings: Settings {
                timezone: "Pacific/Kiritimati".into(),
                ..Settings::default()
            },
        },
    )
    .await;
    env.execute(
        "acme",
        "rules-1",
        OrgCommand::SetCategoryRules {
            actor: tok("owner"),
            rules: vec![CategoryRule {
                name: vec!["Chat".into()],
                regex: Some("slack|zoom".into()),
                ignore_case: false,
                score: Some(-10),
            }],
        },
    )
    .await;
    let later = bank + 30 * MINUTE_MS;
    let range = |from: i64, to: i64| RetractionInput {
        start_ms: from,
        end_ms: to,
    };
    record_batch(
        &env,
        D1,
        3,
        vec![SpanInput {
            start_ms: later,
            end_ms: later + 5 * MINUTE_MS,
            app: "code".into(),
            title: "after".into(),
            url: None,
            active: true,
        }],
        vec![
            range(bank, bank + 20 * MINUTE_MS),
            range(start + 3 * MINUTE_MS, start + 2 * 60 * MINUTE_MS),
            range(start + 2 * 60 * MINUTE_MS, start + 4 * 60 * MINUTE_MS),
            range(bank + 20 * MINUTE_MS, later),
        ],
    )
    .await;
    let log = commits(&env).await;
    let mut pg = env.pg().await;
    build(&mut pg, "one_batch", &log, log.len()).await;
    build(&mut pg, "per_commit", &log, 1).await;
    build(&mut pg, "in_threes", &log, 3).await;
    // The same log with its retractions left out: what was counted.
    let mut kept = commits(&env).await;
    for commit in &mut kept {
        if let ActivityCommit::Device(b) = commit {
            b.retracted.clear();
        }
    }
    build(&mut pg, "all_kept", &kept, kept.len()).await;

    let withdrawn_ms = 20 * MINUTE_MS + (4 * 60 - 3) * MINUTE_MS;
    let total = |schema: &'static str| {
        let pg = &pg;
        async move {
            pg.query_one(
                &format!(
                    "SELECT (SELECT coalesce(sum(ms), 0)::int8 FROM {schema}.daily), \
                            (SELECT coalesce(sum(ms), 0)::int8 FROM {schema}.removed)"
                ),
                &[],
            )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .unwrap()
        }
    };
    let (all, none) = total("all_kept").await;
    assert_eq!(none, 0);
    assert_eq!(total("one_batch").await, (all - withdrawn_ms, withdrawn_ms));
    // Per day: what stays plus what was removed is what was counted, in
    // the days of UTC, where it was counted (not of the zone in force when
    // it was withdrawn).
    let (counted, _) = per_day(&pg, "all_kept").await;
    let (stays, removed) = per_day(&pg, "one_batch").await;
    assert_eq!(counted.len(), 2, "two UTC days: {counted:?}");
    let sum_by_day = |lists: &[&Vec<String>]| {
        let mut by_day = std::collections::BTreeMap::<String, i64>::new();
        for row in lists.iter().flat_map(|l| l.iter()) {
            let (day, ms) = row
                .trim_matches(|c| c == '(' || c == ')')
                .split_once(',')
                .unwrap();
            *by_day.entry(day.to_owned()).or_default() += ms.parse::<i64>().unwrap();
        }
        by_day
    };
    assert_eq!(sum_by_day(&[&stays, &removed]), sum_by_day(&[&counted]));
    let (rollup, facts) = rollup_and_facts(&pg, "one_batch").await;
    assert_eq!(
        rollup, facts,
        "the rollup is its facts after the withdrawal"
    );
    for schema in ["per_commit", "in_threes"] {
        assert_eq!(
            rollup_and_facts(&pg, schema).await,
            (rollup.clone(), facts.clone()),
            "{schema}"
        );
        assert_eq!(per_day(&pg, schema).await, (stays.clone(), removed.clone()));
    }
    for schema in ["one_batch", "per_commit", "in_threes"] {
        let left = rows(
            &pg,
            &format!(
                "SELECT count(*) FILTER (WHERE ms <= 0) || '/' || \
                   (SELECT count(*) FROM {schema}.activities WHERE title = 'private banking') \
                 FROM {schema}.daily"
            ),
        )
        .await;
        assert_eq!(
            left,
            ["(0/0)"],
            "{schema}: empty facts or the banking title left"
        );
    }
    let title = rows(
        &pg,
        "SELECT count(*) FROM all_kept.activities WHERE title = 'private banking'",
    )
    .await;
    assert_eq!(title, ["(1)"]);
    // A live schema made before spans were kept goes on without the
    // retractions (its successor, built beside it, applies them).
    build(&mut pg, "old", &[], 1).await;
    pg.batch_execute(
        "DROP TABLE old.spans; DROP TABLE old.removed; UPDATE old.meta SET schema_version = 2",
    )
    .await
    .unwrap();
    for chunk in log.chunks(2) {
        let tx = pg.transaction().await.unwrap();
        Activity::new(1).apply(&tx, "old", chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        rows(&pg, "SELECT * FROM old.daily ORDER BY 1, 2, 3, 4, 5").await,
        rows(&pg, "SELECT * FROM all_kept.daily ORDER BY 1, 2, 3, 4, 5").await
    );
}
