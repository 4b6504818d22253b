//! The projection worker (`trackhrs projections run`, a real process) is
//! killed with SIGKILL at random points, ten times, while 100k events flow
//! into the log; its read models (activity, and the work read model's
//! project time with an approved week, entries and attribution rules, and
//! the pay read model's leave and payroll runs with their lines) must then
//! equal a clean single pass over the same log: nothing lost, nothing
//! counted twice.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_harness::{NatsServer, TestDb, wait_until};
use trackhrs_nats::{CommitMeta, EventStore, StoreConfig};
use trackhrs_projections::activity::Activity;
use trackhrs_projections::pay::Pay;
use trackhrs_projections::work::Work;
use trackhrs_projections::{Runner, RunnerConfig, Waited, wait_for_position};

const DEVICES: u64 = 50;
const BATCHES_PER_DEVICE: u64 = 20;
const SPANS_PER_BATCH: usize = 100;
/// Commits of [`seed_work`].
const SEEDED: u64 = 8;
/// Members with leave in [`produce_pay`].
const PAY_MEMBERS: u64 = 50;
/// Drafts of the payroll run in [`produce_pay`].
const PAY_DRAFTS: u64 = 6;
/// Commits of [`produce_pay`]: the policy, each member's accrual, request
/// and approval, the drafts and the finalization.
const PAY_COMMITS: u64 = 3 + 3 * PAY_MEMBERS + PAY_DRAFTS + 1;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Appends every device's batches (each commit: 1 + 100 events).
async fn produce(store: EventStore, devices: std::ops::Range<u64>) {
    let handler = CommandHandler::new(store);
    let org = Token::new("acme").unwrap();
    let base = now_ms() - 20 * 24 * 3_600_000;
    for d in devices {
        let device = Token::new(format!("dev{d}")).unwrap();
        for seq in 1..=BATCHES_PER_DEVICE {
            let start = base + ((seq - 1) * SPANS_PER_BATCH as u64 * 60_000) as i64;
            let spans = (0..SPANS_PER_BATCH)
                .map(|i| SpanInput {
                    start_ms: start + i as i64 * 60_000,
                    end_ms: start + (i as i64 + 1) * 60_000,
                    app: ["code", "firefox", "slack", "zoom"][i % 4].into(),
                    title: format!("window {} of device {d}", i % 7),
                    url: None,
                    active: i % 6 != 5,
                })
                .collect();
            let command = ActivityCommand::RecordBatch {
                device: DeviceStatus::Active,
                member: Token::new(format!("person{}", d % 10)).unwrap(),
                batch_id: format!("dev{d}-{seq}"),
                seq,
                spans,
                retractions: vec![],
                privacy: Privacy {
                    titles: true,
                    urls: true,
                },
                limits: IngestLimits {
                    now_ms: now_ms(),
                    max_skew_ms: 60_000,
                    horizon_ms: 30 * 24 * 3_600_000,
                    max_spans: SPANS_PER_BATCH,
                },
            };
            let meta = CommitMeta::new(format!("dev{d}-{seq}"), "test", now_ms() * 1000);
            handler
                .execute::<DeviceActivity>(&org, &device, command, &meta)
                .await
                .unwrap();
        }
    }
}

/// Leave and payroll while the activity flows: a policy, each member's
/// accrual, request and approval, drafts of January's run with 600 lines
/// each, and its finalization.
async fn produce_pay(store: EventStore) {
    use trackhrs_domain::leave::{Leave, LeaveCommand, TypeFacts};
    use trackhrs_domain::payroll::compute::{Line, LineKind};
    use trackhrs_domain::payroll::schedule::PeriodKind;
    use trackhrs_domain::payroll::{
        Accrual, AccrualEvery, LeaveType, Payroll, PayrollCommand, PolicyChange, Terms,
    };
    let handler = CommandHandler::new(store);
    let org = Token::new("acme").unwrap();
    let t = |s: &str| Token::new(s).unwrap();
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let meta = |id: String| CommitMeta::new(id, "test", now_ms() * 1000);
    let h = 3_600_000i64;
    for (i, change) in [
        PolicyChange::Currency("EUR".into()),
        PolicyChange::Schedule {
            from: d("2026-01-01"),
            kind: PeriodKind::Monthly,
        },
        PolicyChange::LeaveType {
            id: t("vacation"),
            leave_type: LeaveType {
                name: "Vacation".into(),
                paid: true,
                accrual: Some(Accrual {
                    every: AccrualEvery::Month,
                    ms: 8 * h,
                }),
                carry_over_cap_ms: None,
                negative_allowance_ms: 0,
                since: d("2025-12-15"),
            },
        },
    ]
    .into_iter()
    .enumerate()
    {
        handler
            .execute::<Payroll>(
                &org,
                &t("payroll"),
                PayrollCommand::Change {
                    is_admin: true,
                    change,
                },
                &meta(format!("policy-{i}")),
            )
            .await
            .unwrap();
    }
    let facts = TypeFacts {
        has_balance: true,
        negative_allowance_ms: 0,
    };
    for m in 0..PAY_MEMBERS {
        let member = t(&format!("person{m}"));
        let commands = [
            LeaveCommand::Accrue {
                member: member.clone(),
                leave_type: t("vacation"),
                boundary: d("2026-01-01"),
                ms: 16 * h,
            },
            LeaveCommand::Request {
                actor: member.clone(),
                member: member.clone(),
                id: t("r1"),
                leave_type: t("vacation"),
                facts,
                days: [(d("2026-01-12"), 8 * h), (d("2026-01-13"), 4 * h)].into(),
                note: Some(format!("note of person{m}")),
            },
            LeaveCommand::Approve {
                actor: t("owner"),
                may_approve: true,
                id: t("r1"),
                facts,
            },
        ];
        for (i, command) in commands.into_iter().enumerate() {
            handler
                .execute::<Leave>(&org, &member, command, &meta(format!("leave-{m}-{i}")))
                .await
                .unwrap();
        }
    }
    for draft in 0..PAY_DRAFTS {
        let lines = (0..200)
            .flat_map(|m| {
                let member = t(&format!("person{m}"));
                [LineKind::Regular, LineKind::Overtime, LineKind::Leave]
                    .into_iter()
                    .map(move |kind| Line {
                        member: member.clone(),
                        kind,
                        leave_type: (kind == LineKind::Leave).then(|| t("vacation")),
                        corrects: None,
                        ms: (m as i64 + 1) * h + draft as i64,
                        days: 0,
                        rate_minor: 2_000 + draft as i64,
                        percent: if kind == LineKind::Overtime { 150 } else { 100 },
                        amount_minor: (m as i64 + 1) * 2_000 + draft as i64,
                    })
            })
            .collect();
        handler
            .execute::<Payroll>(
                &org,
                &t("payroll"),
                PayrollCommand::Draft {
                    is_admin: true,
                    first: d("2026-01-01"),
                    today: d("2026-02-01"),
                    lines,
                    terms: Terms {
                        overtime: Default::default(),
                        day_ms: 8 * h,
                        holidays: Default::default(),
                        paid_leave: [t("vacation")].into(),
                        salary_days: 31,
                    },
                    missing: vec![],
                    recomputed: Default::default(),
                },
                &meta(format!("draft-{draft}")),
            )
            .await
            .unwrap();
    }
    handler
        .execute::<Payroll>(
            &org,
            &t("payroll"),
            PayrollCommand::Finalize {
                is_admin: true,
                first: d("2026-01-01"),
                draft: PAY_DRAFTS as u32,
            },
            &meta("finalize".into()),
        )
        .await
        .unwrap();
}

/// Every row of the pay read model's tables of a version.
async fn pay_tables(pg: &tokio_postgres::Client, version: u32) -> Vec<String> {
    let schema = format!("proj_pay_v{version}");
    let mut out = Vec::new();
    for table in [
        "policy",
        "requests",
        "leave_days",
        "accruals",
        "runs",
        "lines",
    ] {
        for row in pg
            .query(
                &format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    out
}

/// The org's work before the activity: a project with a task, a rule that
/// attributes "code" to it, and person0's week (20 days ago) with a manual
/// entry and an assignment, submitted and approved before any activity is
/// recorded (so the week's activity all arrives late).
async fn seed_work(store: &EventStore) {
    use trackhrs_domain::attribution::AttributionRule;
    use trackhrs_domain::organization::Role;
    use trackhrs_domain::organization::{OrgCommand, Organization};
    use trackhrs_domain::project::{Budget, Project, ProjectCommand};
    use trackhrs_domain::timesheet::{
        Bookable, Entry, EntryKind, TaskRef, Timesheet, TimesheetCommand,
    };
    let handler = CommandHandler::new(store.clone());
    let org = Token::new("acme").unwrap();
    let t = |s: &str| Token::new(s).unwrap();
    let meta = |id: &str| CommitMeta::new(id, "test", now_ms() * 1000);
    let owner = t("owner");
    handler
        .execute::<Organization>(
            &org,
            &t("org"),
            OrgCommand::Create {
                name: "Acme".into(),
                owner: owner.clone(),
                owner_email: "owner@acme.test".into(),
                owner_name: "Owner".into(),
                seats: 5,
            },
            &meta("create"),
        )
        .await
        .unwrap();
    handler
        .execute::<Project>(
            &org,
            &t("web"),
            ProjectCommand::Create {
                role: Role::Owner,
                name: "Web".into(),
                client: None,
                billable: true,
                budget: Budget::default(),
                members: Default::default(),
            },
            &meta("project"),
        )
        .await
        .unwrap();
    handler
        .execute::<Project>(
            &org,
            &t("web"),
            ProjectCommand::AddTask {
                role: Role::Owner,
                task: t("build"),
                name: "Build".into(),
            },
            &meta("task"),
        )
        .await
        .unwrap();
    handler
        .execute::<Organization>(
            &org,
            &t("org"),
            OrgCommand::SetAttributionRules {
                actor: owner.clone(),
                rules: vec![AttributionRule {
                    project: t("web"),
                    task: Some(t("build")),
                    regex: "^code$".into(),
                    ignore_case: false,
                }],
            },
            &meta("rules"),
        )
        .await
        .unwrap();
    let person = t("person0");
    let base = now_ms() - 20 * 24 * 3_600_000;
    let date = chrono::DateTime::from_timestamp_millis(base)
        .unwrap()
        .date_naive();
    let work_week = trackhrs_domain::organization::Settings::default().work_week;
    let week = trackhrs_domain::week::week_of(date, chrono_tz::Tz::UTC, &work_week);
    let first = trackhrs_domain::week::first_day(date, &work_week);
    let sheet = trackhrs_domain::week::timesheet_id(&person, first).unwrap();
    let task = TaskRef {
        project: t("web"),
        task: t("build"),
    };
    for (i, (kind, from, to)) in [
        (
            EntryKind::Manual,
            week.start_ms + 3_600_000,
            week.start_ms + 7_200_000,
        ),
        (EntryKind::Assignment, base, base + 30 * 60_000),
    ]
    .into_iter()
    .enumerate()
    {
        handler
            .execute::<Timesheet>(
                &org,
                &sheet,
                TimesheetCommand::AddEntry {
                    actor: person.clone(),
                    member: person.clone(),
                    week,
                    id: t(&format!("e{i}")),
                    entry: Entry {
                        kind,
                        task: task.clone(),
                        start_ms: from,
                        end_ms: to,
                    },
                    project: Bookable {
                        active: true,
                        member_allowed: true,
                    },
                    note: None,
                },
                &meta(&format!("entry-{i}")),
            )
            .await
            .unwrap();
    }
    handler
        .execute::<Timesheet>(
            &org,
            &sheet,
            TimesheetCommand::Submit {
                actor: person.clone(),
                member: person.clone(),
                week,
            },
            &meta("submit"),
        )
        .await
        .unwrap();
    handler
        .execute::<Timesheet>(
            &org,
            &sheet,
            TimesheetCommand::Approve {
                actor: owner,
                may_approve: true,
                comment: None,
            },
            &meta("approve"),
        )
        .await
        .unwrap();
}

async fn position(pg: &tokio_postgres::Client, version: u32) -> u64 {
    position_of(pg, "activity", version).await
}

async fn position_of(pg: &tokio_postgres::Client, name: &str, version: u32) -> u64 {
    pg.query_opt(
        "SELECT position FROM trackhrs_catalog.projection_versions WHERE name = $1 AND version = $2",
        &[&name, &(version as i64)],
    )
    .await
    .ok()
    .flatten()
    .map_or(0, |r| r.get::<_, i64>(0) as u64)
}

/// Every row of a version's tables, in a stable order.
async fn tables(pg: &tokio_postgres::Client, version: u32) -> Vec<String> {
    let schema = format!("proj_activity_v{version}");
    let mut out = Vec::new();
    for (table, order) in [
        ("daily", "org_id, day, person_id, activity_id, active"),
        ("activities", "org_id, activity_id"),
        ("classifications", "org_id, rules_version, activity_id"),
        (
            "rollup",
            "org_id, rules_version, day, person_id, category, app, score",
        ),
        ("org_state", "org_id"),
    ] {
        for row in pg
            .query(
                &format!("SELECT t::text FROM {schema}.{table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap()
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    out
}

/// Every row of the work read model's tables of a version.
async fn work_tables(pg: &tokio_postgres::Client, version: u32) -> Vec<String> {
    let schema = format!("proj_work_v{version}");
    let mut out = Vec::new();
    for (table, order) in [
        (
            "time",
            "org_id, person_id, week_start, day, project_id, task_id, source",
        ),
        ("weeks", "org_id, person_id, week_start"),
        ("entries", "org_id, person_id, week_start, entry_id"),
        (
            "spans",
            "org_id, person_id, start_ms, end_ms, activity_id, position",
        ),
        ("projects", "org_id, project_id"),
        ("rules", "org_id, version"),
    ] {
        for row in pg
            .query(
                &format!("SELECT t::text FROM {schema}.{table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap()
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_killed_ten_times_ends_where_a_clean_pass_ends() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.connect().await.unwrap();
    let store =
        EventStore::provision_and_open(client, StoreConfig::with_kek(trackhrs_harness::test_kek()))
            .await
            .unwrap();
    let db = TestDb::create().await.unwrap();
    let pg = db.connect().await.unwrap();
    seed_work(&store).await;

    // 1,000 commits of 101 events from 50 devices, four producers at once,
    // and leave and payroll beside them.
    let mut producers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(produce(store, (i * DEVICES / 4)..((i + 1) * DEVICES / 4)))
        })
        .collect();
    producers.push(tokio::spawn(produce_pay(store.clone())));

    let mut worker = common::spawn_worker(&nats.url(), db.connection_string());
    // The first kill once the worker applies (its start registers every read
    // model, slower on a busy machine), so the kills land while it works.
    let started = wait_until(Duration::from_secs(60), || async {
        (position(&pg, 1).await > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "the worker never applied anything");
    let mut kills = Vec::new();
    while kills.len() < 10 {
        // Short enough that several kills land while the log is being applied.
        let pause = rand::rng().random_range(100..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        kills.push(position(&pg, 1).await);
        worker = common::spawn_worker(&nats.url(), db.connection_string());
    }
    for p in producers {
        p.await.unwrap();
    }
    let last = store.last_sequence().await.unwrap();
    let events = DEVICES * BATCHES_PER_DEVICE * (SPANS_PER_BATCH as u64 + 1);
    assert_eq!(
        last,
        SEEDED + DEVICES * BATCHES_PER_DEVICE + PAY_COMMITS,
        "one commit per batch"
    );
    // The killed worker, restarted, catches up with the whole log.
    let caught_up = wait_until(Duration::from_secs(180), || async {
        (position(&pg, 1).await >= last
            && position_of(&pg, "work", 1).await >= last
            && position_of(&pg, "pay", 1).await >= last)
            .then_some(())
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(
        caught_up.is_some(),
        "the worker did not catch up after the kills {kills:?}"
    );
    assert!(
        kills.iter().any(|p| *p > 0 && *p < last),
        "no kill landed while events were flowing: {kills:?}"
    );

    // A clean single pass over the same log, as version 2 of each.
    let config = RunnerConfig {
        batch_wait: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_work, work_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_pay, pay_stopped) = tokio::sync::oneshot::channel::<()>();
    let pg_config: tokio_postgres::Config = db.connection_string().parse().unwrap();
    let clean = tokio::spawn(
        Runner::new(
            Activity::new(2),
            store.clone(),
            pg_config.clone(),
            config.clone(),
        )
        .run(async {
            let _ = stopped.await;
        }),
    );
    let clean_work = tokio::spawn(
        Runner::new(
            Work::new(2),
            store.clone(),
            pg_config.clone(),
            config.clone(),
        )
        .run(async {
            let _ = work_stopped.await;
        }),
    );
    let clean_pay = tokio::spawn(
        Runner::new(Pay::new(2), store.clone(), pg_config, config).run(async {
            let _ = pay_stopped.await;
        }),
    );
    let reached = wait_until(Duration::from_secs(180), || async {
        (position(&pg, 2).await >= last
            && position_of(&pg, "work", 2).await >= last
            && position_of(&pg, "pay", 2).await >= last)
            .then_some(())
    })
    .await;
    let _ = stop.send(());
    let _ = stop_work.send(());
    let _ = stop_pay.send(());
    clean.await.unwrap().unwrap();
    clean_work.await.unwrap().unwrap();
    clean_pay.await.unwrap().unwrap();
    assert!(reached.is_some(), "the clean pass did not finish");

    let killed = pay_tables(&pg, 1).await;
    let single = pay_tables(&pg, 2).await;
    assert_eq!(
        killed.iter().filter(|r| r.starts_with("lines: ")).count(),
        600,
        "the last draft's lines"
    );
    assert!(
        killed
            .iter()
            .any(|r| r.starts_with("runs: ") && r.contains("finalized"))
    );
    assert_eq!(killed.len(), single.len(), "pay: row counts differ");
    assert!(
        killed == single,
        "the pay read models differ after the kills"
    );

    let killed = work_tables(&pg, 1).await;
    let single = work_tables(&pg, 2).await;
    assert!(
        killed
            .iter()
            .any(|r| r.starts_with("time: ") && r.contains(",late,")),
        "the approved week has late time"
    );
    assert_eq!(killed.len(), single.len(), "work: row counts differ");
    assert!(
        killed == single,
        "the work read models differ after the kills"
    );

    let killed = tables(&pg, 1).await;
    let single = tables(&pg, 2).await;
    assert!(!killed.is_empty());
    assert_eq!(killed.len(), single.len(), "row counts differ");
    assert!(killed == single, "the read models differ after the kills");
    let total: i64 = pg
        .query_one("SELECT sum(ms)::int8 FROM proj_activity_v1.daily", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        (DEVICES * BATCHES_PER_DEVICE) as i64 * SPANS_PER_BATCH as i64 * 60_000,
        "{events} events: time lost or counted twice"
    );
    // Live readers would have seen version 1 all along.
    let waited = wait_for_position(&pg, "activity", last, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Reached(_)));
}
