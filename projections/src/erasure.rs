//! Erasures reach the read models: a read model that copies personal data
//! (names, e-mails, window titles, URLs, raw timeline data) also reads the
//! `erasure` aggregate's commits, and on `PersonErased` drops its copies of
//! that person's data in the same transaction as its checkpoint: within the
//! projection lag, without a rebuild. The log is untouched; the person's
//! data key was destroyed before the event was appended, so whatever the
//! read model decodes after it reads as erased.

use trackhrs_domain::Aggregate as _;
use trackhrs_domain::erasure::{ErasureEvent, PersonErasure};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::projection::Committed;

/// A commit of a read model's own aggregates, or an erasure.
#[derive(Debug)]
pub enum WithErasures<C> {
    /// One of the read model's own commits.
    Own(C),
    /// A person's erasure.
    Erasure(TypedCommit<ErasureEvent>),
}

impl<C: Committed> Committed for WithErasures<C> {
    fn stream_sequence(&self) -> u64 {
        match self {
            Self::Own(c) => c.stream_sequence(),
            Self::Erasure(c) => c.stream_sequence,
        }
    }

    fn org_id(&self) -> &str {
        match self {
            Self::Own(c) => c.org_id(),
            Self::Erasure(c) => &c.org_id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Self::Own(c) => c.events(),
            Self::Erasure(c) => c.events.len(),
        }
    }
}

/// The subjects of erasures, to add to a read model's own.
pub fn subjects() -> String {
    EventStore::subjects_of::<PersonErasure>()
}

/// Decodes an erasure, or with `own` any other commit.
pub async fn decode<C, F>(
    keys: &KeyStore,
    subject: &str,
    sequence: u64,
    bytes: &[u8],
    own: F,
) -> Result<WithErasures<C>, StoreError>
where
    F: AsyncFnOnce() -> Result<C, StoreError>,
{
    if subject.split('.').nth(2) == Some(PersonErasure::TYPE) {
        decode_typed::<PersonErasure>(keys, subject, sequence, bytes)
            .await
            .map(WithErasures::Erasure)
    } else {
        own().await.map(WithErasures::Own)
    }
}

/// The people an erasure commit erases.
pub fn erased(commit: &TypedCommit<ErasureEvent>) -> impl Iterator<Item = &str> {
    commit.events.iter().map(|e| match e {
        ErasureEvent::PersonErased { person } => person.as_str(),
    })
}
