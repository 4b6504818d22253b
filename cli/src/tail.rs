//! `trackhrs events tail`: the event log as an operator or auditor sees it.

use std::io::Write as _;

use anyhow::Context as _;
use futures::StreamExt;
use trackhrs_nats::EventStore;
use trackhrs_nats::reader::{self, StartAt};

use crate::NatsArgs;

/// Arguments of `events tail`.
#[derive(clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// First stream sequence to print (default: the beginning).
    #[arg(long)]
    from: Option<u64>,
    /// Only this organization's events.
    #[arg(long)]
    org: Option<String>,
    /// Keep waiting for new commits instead of stopping at the end.
    #[arg(long, short)]
    follow: bool,
}

/// Prints one JSON line per commit on stdout; undecodable messages are
/// reported on stderr with subject and sequence, and the tail goes on.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let config = trackhrs_nats::StoreConfig {
        kek: Some(args.nats.kek.keyring()?),
        ..args.nats.store_config()
    };
    let client = args.nats.connect().await?;
    let store = EventStore::open(client.clone(), config.clone())
        .await
        .context("open the event store (run `trackhrs provision` first?)")?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(&config.events_stream)
        .await
        .context("event stream not found")?;
    if !args.follow && stream.info().await?.state.messages == 0 {
        return Ok(());
    }
    let from = args.from.map_or(StartAt::Start, StartAt::Sequence);
    let filter = args.org.map(|org| format!("evt.{org}.>"));
    let mut log = reader::read(
        &js,
        store.keys().clone(),
        &config.events_stream,
        from,
        filter,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    loop {
        // Without --follow, a filter that matches nothing more ends the tail.
        let next = if args.follow {
            log.next().await
        } else {
            tokio::time::timeout(std::time::Duration::from_secs(2), log.next())
                .await
                .ok()
                .flatten()
        };
        let Some(item) = next else { break };
        match item.commit {
            Ok(commit) => writeln!(out, "{}", serde_json::to_string(&commit)?)?,
            Err(e) => tracing::error!(error = %e, "cannot decode a stored message"),
        }
        if item.pending == 0 && !args.follow {
            break;
        }
    }
    Ok(())
}
