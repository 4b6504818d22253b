//! Errors of the event store.

/// What can go wrong talking to the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The command id was used before by another actor or for another
    /// request: not a retry, and not stored.
    #[error("command id {command_id} was already used for a different request")]
    CommandIdReused {
        /// The command id.
        command_id: String,
    },
    /// The connected nats-server lacks a feature the store needs.
    #[error(
        "nats-server {found} is too old: TrackHrs needs nats-server {minimum} or newer ({feature})"
    )]
    ServerTooOld {
        /// Version the server reported.
        found: String,
        /// Minimum version required.
        minimum: &'static str,
        /// The feature that needs it.
        feature: &'static str,
    },
    /// Another writer appended to the aggregate after the expected position.
    #[error(
        "version conflict on {subject}: expected last position {expected}, another commit came first"
    )]
    Conflict {
        /// The aggregate's subject.
        subject: String,
        /// The position the writer expected.
        expected: u64,
    },
    /// A stored message could not be decoded into events.
    #[error("cannot decode the message on {subject} at stream sequence {sequence}: {reason}")]
    Decode {
        /// Subject of the message.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// Why it could not be decoded.
        reason: String,
    },
    /// The events could not be turned into a commit.
    #[error("cannot encode events: {0}")]
    Encode(String),
    /// The outcome of a publish is unknown (no acknowledgement). The commit may
    /// or may not be stored; retrying with the same command id is safe.
    #[error(
        "no acknowledgement from the event store ({0}); the commit may or may not be stored, retry with the same command id"
    )]
    Unacknowledged(String),
    /// The event store could not be reached or refused the request.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Creating or updating streams and buckets failed.
    #[error("cannot provision JetStream: {0}")]
    Provision(String),
    /// Personal data about an erased person cannot be stored.
    #[error("{0} has been erased; personal data about them can no longer be stored")]
    Erased(String),
    /// The personal-data key store failed.
    #[error("personal-data keys: {0}")]
    Keys(String),
}

impl StoreError {
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::Unavailable(e.to_string())
    }
}
