//! Operator commands on projections: rebuild with progress, dead letters.

use std::io::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use trackhrs_nats::EventStore;
use trackhrs_projections::Progress;

/// Builds the next version of `name` from the start of the stream into its
/// own schema while the live one keeps answering; the catalog switches to it
/// when it has caught up, and the old version is dropped.
pub async fn rebuild(
    store: EventStore,
    pg: tokio_postgres::Config,
    name: &str,
) -> anyhow::Result<()> {
    let supervisor = trackhrs_platform::read_model(&store, &pg, name)?;
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} stream positions, {per_sec}, ETA {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let shown = bar.clone();
    let rebuilt = supervisor
        .rebuild(Box::new(move |progress: Progress| {
            shown.set_message(format!("{name} v{}", progress.version));
            shown.set_length(progress.last.max(1));
            shown.set_position(progress.position);
        }))
        .await?;
    bar.finish();
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name} v{} is live: {} events in {:.1} s ({:.0} events/s)",
        rebuilt.version,
        rebuilt.events,
        elapsed.as_secs_f64(),
        rebuilt.events as f64 / elapsed.as_secs_f64().max(0.001)
    )?;
    if let Some(old) = rebuilt.replaced {
        writeln!(out, "dropped {name} v{old}")?;
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
    let report = trackhrs_platform::read_model(store, &pg, name)?
        .replay_dead_letters()
        .await?;
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
