//! `trackhrs bench payroll`: a payroll run for `members` members over one
//! month of approved timesheets, against its own nats-server (fsync on
//! every write) and PostgreSQL: the time to draft it (reading the work and
//! pay read models, computing every member's lines, appending the run),
//! and the time to rebuild the pay read model from the log (a new version
//! beside the live one), with its totals compared to the live ones.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{Datelike, Days, Months, NaiveDate};
use trackhrs_app::Caller;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::payroll::compute::{Overtime, PayRate, Threshold};
use trackhrs_domain::payroll::schedule::PeriodKind;
use trackhrs_domain::payroll::{Payroll, PayrollCommand, PolicyChange};
use trackhrs_domain::timesheet::{
    Bookable, Entry, EntryKind, TaskRef, Timesheet, TimesheetCommand,
};
use trackhrs_domain::week::{first_day, timesheet_id, week_of};
use trackhrs_nats::CommitMeta;
use trackhrs_projections::pay::Pay;
use trackhrs_projections::{Runner, RunnerConfig, Waited, wait_for_position};

use crate::bench::say;
use crate::bench_pipeline::bench_platform;

/// Settings of `trackhrs bench payroll`.
#[derive(clap::Args, Debug, Clone)]
pub struct PayrollBenchArgs {
    /// Members paid by the hour, each with a week of timesheets approved
    /// for every week the month touches.
    #[arg(long, default_value_t = 1000)]
    pub members: u64,
    /// Drafts timed (the first is the run's, the others draft it again).
    #[arg(long, default_value_t = 3)]
    pub drafts: u32,
    /// Members whose timesheets are recorded at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u64,
}

const H: i64 = 3_600_000;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The last full month before today.
fn last_month() -> anyhow::Result<(NaiveDate, NaiveDate)> {
    let today = chrono::Utc::now().date_naive();
    let this = today.with_day(1).context("a first day")?;
    let first = this
        .checked_sub_months(Months::new(1))
        .context("a month back")?;
    Ok((first, this - Days::new(1)))
}

/// One member's weeks that touch the month: 8 to 10 hours on each work
/// day (overtime on some), submitted and approved by the owner.
async fn record_member(
    handler: &CommandHandler,
    member: u64,
    (first, last): (NaiveDate, NaiveDate),
) -> anyhow::Result<u64> {
    let org = Token::new("bench")?;
    let person = Token::new(format!("m{member}"))?;
    let work_week = trackhrs_domain::organization::Settings::default().work_week;
    let task = TaskRef {
        project: Token::new("ops")?,
        task: Token::new("shift")?,
    };
    let meta = |id: String| CommitMeta::new(id, "system:bench", now_micros());
    let mut week_start = first_day(first, &work_week);
    let mut position = 0;
    while week_start <= last {
        let week = week_of(week_start, chrono_tz::Tz::UTC, &work_week);
        let sheet = timesheet_id(&person, week_start).context("a timesheet id")?;
        for day in 0..5u64 {
            let date = week_start + Days::new(day);
            let start = date
                .and_hms_opt(8, 0, 0)
                .context("08:00")?
                .and_utc()
                .timestamp_millis();
            let hours = 8 + ((member + day) % 3) as i64;
            let command = TimesheetCommand::AddEntry {
                actor: person.clone(),
                member: person.clone(),
                week,
                id: Token::new(format!("e{day}"))?,
                entry: Entry {
                    kind: EntryKind::Manual,
                    task: task.clone(),
                    start_ms: start,
                    end_ms: start + hours * H,
                },
                project: Bookable {
                    active: true,
                    member_allowed: true,
                },
                note: None,
            };
            handler
                .execute::<Timesheet>(&org, &sheet, command, &meta(format!("{sheet}-e{day}")))
                .await?;
        }
        let submit = TimesheetCommand::Submit {
            actor: person.clone(),
            member: person.clone(),
            week,
        };
        handler
            .execute::<Timesheet>(&org, &sheet, submit, &meta(format!("{sheet}-submit")))
            .await?;
        let approve = TimesheetCommand::Approve {
            actor: Token::new("owner")?,
            may_approve: true,
            comment: None,
        };
        let done = handler
            .execute::<Timesheet>(&org, &sheet, approve, &meta(format!("{sheet}-approve")))
            .await?;
        if let Some(appended) = done.appended {
            position = position.max(appended.position);
        }
        week_start = week_start + Days::new(7);
    }
    Ok(position)
}

/// Waits until `name`'s live version reached `position`.
async fn caught_up(pg: &tokio_postgres::Client, name: &str, position: u64) -> anyhow::Result<()> {
    match wait_for_position(pg, name, position, Duration::from_secs(600)).await? {
        Waited::Reached(_) => Ok(()),
        other => anyhow::bail!("{name} did not catch up: {other:?}"),
    }
}

/// The pay read model's runs and lines of a version, in a stable order.
async fn totals(pg: &tokio_postgres::Client, schema: &str) -> anyhow::Result<(i64, i64, String)> {
    let row = pg
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(amount_minor), 0)::bigint, \
                 md5(coalesce(string_agg(t::text, ';' ORDER BY first_day, line_no), '')) \
                 FROM {schema}.lines t"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

pub async fn run_payroll(args: PayrollBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = bench_platform(dir.path()).await?;
    let (store, pg_config, app) = (
        bench.store.clone(),
        bench.pg_config.clone(),
        bench.app.clone(),
    );
    let (org, owner) = bench.org.clone();
    let (first, last) = last_month()?;
    say(&format!(
        "payroll: {} members paid by the hour, {first}..{last}",
        args.members
    ));

    // The pay policy and each member's rate, straight through the handler
    // (the bench org's members are not invited one by one).
    let handler = CommandHandler::new(store.clone());
    let payroll = Token::new(trackhrs_domain::payroll::AGGREGATE_ID)?;
    let mut changes = vec![
        PolicyChange::Currency("EUR".into()),
        PolicyChange::Schedule {
            from: first,
            kind: PeriodKind::Monthly,
        },
        PolicyChange::Overtime(Overtime {
            daily: Some(Threshold {
                after_ms: 8 * H,
                percent: 150,
            }),
            daily_double: None,
            weekly: Some(Threshold {
                after_ms: 40 * H,
                percent: 150,
            }),
        }),
        PolicyChange::Holiday {
            date: first + Days::new(9),
            name: Some("Bench Day".into()),
        },
    ];
    for m in 0..args.members {
        changes.push(PolicyChange::Rate {
            member: Token::new(format!("m{m}"))?,
            is_member: true,
            from: first,
            rate: PayRate::Hourly {
                minor: 1_500 + (m % 50) as i64 * 37,
            },
        });
    }
    let started = Instant::now();
    for (i, change) in changes.into_iter().enumerate() {
        let command = PayrollCommand::Change {
            is_admin: true,
            change,
        };
        handler
            .execute::<Payroll>(
                &org,
                &payroll,
                command,
                &CommitMeta::new(format!("policy-{i}"), "system:bench", now_micros()),
            )
            .await?;
    }
    let mut tasks = Vec::new();
    for lane in 0..args.concurrency {
        let handler = handler.clone();
        let members = args.members;
        let step = args.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut position = 0;
            let mut m = lane;
            while m < members {
                position = position.max(record_member(&handler, m, (first, last)).await?);
                m += step;
            }
            anyhow::Ok(position)
        }));
    }
    let mut position = 0;
    for task in tasks {
        position = position.max(task.await??);
    }
    say(&format!(
        "recorded and approved the timesheets in {:.1} s; waiting for the work read model",
        started.elapsed().as_secs_f64()
    ));
    let (pg, conn) = pg_config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    caught_up(&pg, "work", position).await?;
    caught_up(&pg, "pay", store.last_sequence().await?).await?;

    let caller = Caller {
        org: org.clone(),
        person: owner,
    };
    let mut times = Vec::new();
    let mut drafted = 0;
    for n in 0..args.drafts {
        let at = Instant::now();
        let outcome = app
            .pay()
            .draft_run(
                &caller,
                org.as_str(),
                &format!("draft-{n}"),
                first,
                position,
            )
            .await?;
        times.push(at.elapsed());
        drafted = outcome.position;
    }
    caught_up(&pg, "pay", drafted).await?;
    let live = trackhrs_projections::live_schema(&pg, "pay")
        .await?
        .context("a live pay schema")?;
    let (lines, total, digest) = totals(&pg, &live).await?;
    let mut sorted = times.clone();
    sorted.sort();
    say(&format!(
        "draft of {} members: {} lines, {} total; {} drafts took {} (median {:.0} ms)",
        args.members,
        lines,
        trackhrs_domain::money::Currency::parse("EUR")?.format(total),
        times.len(),
        times
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2].as_secs_f64() * 1000.0
    ));

    // A rebuild of the pay read model from the log, beside the live one.
    let last_position = store.last_sequence().await?;
    let rebuilt_at = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(
        Runner::new(
            Pay::new(2),
            store.clone(),
            pg_config.clone(),
            RunnerConfig::default(),
        )
        .run(async {
            let _ = stopped.await;
        }),
    );
    loop {
        let row = pg
            .query_opt(
                "SELECT position FROM trackhrs_catalog.projection_versions \
                 WHERE name = 'pay' AND version = 2",
                &[],
            )
            .await?;
        if row.is_some_and(|r| r.get::<_, i64>(0) as u64 >= last_position) {
            break;
        }
        anyhow::ensure!(
            rebuilt_at.elapsed() < Duration::from_secs(600),
            "the rebuild did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rebuild = rebuilt_at.elapsed();
    let _ = stop.send(());
    runner.await??;
    let rebuilt = totals(&pg, "proj_pay_v2").await?;
    say(&format!(
        "rebuild of the pay read model ({} commits in the log): {:.0} ms; lines, total and digest {} the live version's",
        last_position,
        rebuild.as_secs_f64() * 1000.0,
        if rebuilt == (lines, total, digest) {
            "equal"
        } else {
            "DIFFER FROM"
        }
    ));
    anyhow::ensure!(
        rebuilt.1 == total,
        "the rebuilt total differs from the live one"
    );
    Ok(())
}
