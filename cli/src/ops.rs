//! Operator commands on projections: rebuild with progress, dead letters.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use trackhrs_nats::EventStore;
use trackhrs_projections::activity::{self, Activity};
use trackhrs_projections::directory::{self, Directory};
use trackhrs_projections::timeline::{self, Timeline};
use trackhrs_projections::{Runner, RunnerConfig, VersionState, catalog};

use crate::platform::{self, pg_connect};

/// Builds the next version of `name` from the start of the stream into its
/// own schema while the live one keeps answering; the catalog switches to it
/// when it has caught up, and the old version is dropped.
pub async fn rebuild(
    store: EventStore,
    pg: tokio_postgres::Config,
    name: &str,
) -> anyhow::Result<()> {
    if name != activity::NAME {
        bail!(
            "`rebuild` builds new versions of `{}`; `{}` and `{}` are rebuilt by raising their version in code",
            activity::NAME,
            directory::NAME,
            timeline::NAME
        );
    }
    let client = pg_connect(&pg).await?;
    let (live, highest) = platform::versions(&client, &store, name).await?;
    let next = highest + 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = Runner::new(
        Activity::new(next),
        store.clone(),
        pg.clone(),
        RunnerConfig {
            batch_max: 500,
            batch_wait: Duration::from_millis(200),
            promote_when_caught_up: true,
            ..RunnerConfig::default()
        },
    );
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let target = store.last_sequence().await?;
    let bar = indicatif::ProgressBar::new(target.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} stream positions, {per_sec}, ETA {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_message(format!("{name} v{next}"));
    let started = Instant::now();
    let events = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if task.is_finished() {
            task.await??;
            bail!("the rebuild stopped before it went live");
        }
        let Some(info) = catalog::version_info(&client, name, next).await? else {
            continue;
        };
        bar.set_length(store.last_sequence().await?.max(1));
        bar.set_position(info.position);
        if info.state == VersionState::Live {
            break info.events_applied;
        }
    };
    bar.finish();
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await??;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name} v{next} is live: {events} events in {:.1} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(0.001)
    )?;
    drop(out);
    if let Some(old) = live {
        tokio::time::sleep(platform::DROP_GRACE).await;
        let mut client = pg_connect(&pg).await?;
        trackhrs_projections::drop_version(&mut client, &store, name, old.version).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "dropped {name} v{}", old.version)?;
    }
    Ok(())
}

/// Prints the dead letters (of one projection, or all) as JSON lines.
pub async fn dlq_list(store: &EventStore, projection: Option<&str>) -> anyhow::Result<()> {
    let letters = trackhrs_projections::list_dead_letters(store, projection).await?;
    let mut out = std::io::stdout().lock();
    for l in letters {
        let line = serde_json::json!({
            "dlq_sequence": l.dlq_sequence,
            "projection": l.projection,
            "version": l.version,
            "subject": l.subject,
            "stream_sequence": l.stream_sequence,
            "reason": l.reason,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Applies the dead letters of a projection's live version again (after a
/// fix); those that apply leave the dead-letter stream.
pub async fn dlq_replay(
    store: &EventStore,
    pg: tokio_postgres::Config,
    name: &str,
) -> anyhow::Result<()> {
    let mut client = pg_connect(&pg).await?;
    let report = if name == directory::NAME {
        trackhrs_projections::replay_dead_letters(&mut client, store, &Directory).await?
    } else if name == activity::NAME {
        let (live, _) = platform::versions(&client, store, name).await?;
        let live = live.context("the activity projection has no live version")?;
        trackhrs_projections::replay_dead_letters(&mut client, store, &Activity::new(live.version))
            .await?
    } else if name == timeline::NAME {
        trackhrs_projections::replay_dead_letters(&mut client, store, &Timeline).await?
    } else {
        bail!(
            "unknown projection {name}; the projections are {}, {} and {}",
            directory::NAME,
            activity::NAME,
            timeline::NAME
        );
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "replayed {}, already applied {}, still failing {}",
        report.replayed,
        report.already_applied,
        report.still_failing.len()
    )?;
    for (sequence, reason) in report.still_failing {
        writeln!(out, "  stream sequence {sequence}: {reason}")?;
    }
    Ok(())
}
