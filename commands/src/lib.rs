//! Command handling: load the aggregate, let it decide, append the events with
//! optimistic concurrency, and on a conflict reload and decide again.
//!
//! Architecture invariant: the decision is the aggregate's alone (pure
//! `handle`); this crate only loads, appends and retries. "Denied" (the
//! aggregate said no) is kept apart from "could not record" (the store failed).

use std::time::Duration;

use rand::Rng;
use trackhrs_domain::{Aggregate, Token};
use trackhrs_nats::{Appended, CommitMeta, EventStore, StoreError};

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a broken invariant or bad input).
    #[error("command denied: {0}")]
    Denied(E),
    /// Other writers kept winning; the command was not recorded.
    #[error("the {subject} aggregate kept changing; gave up after {attempts} attempts")]
    Conflict {
        /// Aggregate subject.
        subject: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed; whether the command was recorded is said by the error.
    #[error(transparent)]
    Store(StoreError),
}

/// The result of a command that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// The commit, or `None` when the command changed nothing.
    pub appended: Option<Appended>,
    /// The aggregate's version after the command.
    pub version: u64,
}

/// Executes commands against aggregates in the event store.
#[derive(Clone)]
pub struct CommandHandler {
    store: EventStore,
    max_attempts: u32,
}

impl CommandHandler {
    /// A handler retrying conflicts up to 10 times.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            max_attempts: 10,
        }
    }

    /// Sets how many times a conflicting command is decided again.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The store commands are recorded in.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Executes `command` on aggregate `A` with id `id` in `org`.
    ///
    /// A command id already recorded returns its original result without
    /// deciding again; a conflict reloads and decides again, with jittered
    /// backoff, up to the attempt limit.
    #[tracing::instrument(skip(self, command), fields(aggregate = A::TYPE, command_id = %meta.command_id))]
    pub async fn execute<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
        command: A::Command,
        meta: &CommitMeta,
    ) -> Result<Executed, CommandError<A::Error>> {
        // A cached state may be stale: a denial or a no-op decided on it is
        // decided again on fresh state before it is reported. Only conflicts
        // count as attempts.
        let mut fresh = false;
        let mut attempt = 0;
        while attempt < self.max_attempts {
            let loaded = if fresh {
                self.store.load_fresh::<A>(org, id).await
            } else {
                self.store.load::<A>(org, id).await
            }
            .map_err(CommandError::Store)?;
            if let Some(original) = loaded.committed(&meta.command_id) {
                let original = original.for_retry_of(meta).map_err(CommandError::Store)?;
                return Ok(Executed {
                    version: original.last_version,
                    appended: Some(original),
                });
            }
            let decided = loaded.state.handle(command.clone());
            if !fresh && !matches!(&decided, Ok(events) if !events.is_empty()) {
                fresh = true;
                continue;
            }
            let events = decided.map_err(CommandError::Denied)?;
            if events.is_empty() {
                return Ok(Executed {
                    appended: None,
                    version: loaded.version,
                });
            }
            attempt += 1;
            match self.store.append::<A>(org, id, &loaded, events, meta).await {
                Ok(appended) => {
                    return Ok(Executed {
                        version: appended.last_version,
                        appended: Some(appended),
                    });
                }
                Err(StoreError::Conflict { subject, .. }) => {
                    tracing::debug!(attempt, subject, "conflict; deciding again");
                    metrics::counter!("trackhrs_command_conflicts_total", "aggregate" => A::TYPE)
                        .increment(1);
                    fresh = true;
                    if attempt < self.max_attempts {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                Err(e) => return Err(CommandError::Store(e)),
            }
        }
        metrics::counter!("trackhrs_command_gave_up_total", "aggregate" => A::TYPE).increment(1);
        Err(CommandError::Conflict {
            subject: EventStore::subject::<A>(org, id),
            attempts: self.max_attempts,
        })
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(2^attempt, 64) ms].
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 1u64 << attempt.min(6);
    Duration::from_micros(rand::rng().random_range(0..=cap_ms * 1000))
}
