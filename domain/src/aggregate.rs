//! The aggregate and event traits every aggregate of the domain implements.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A domain event: an immutable fact, stored once and never rewritten.
///
/// Event enums are serialized adjacently tagged
/// (`#[serde(tag = "type", content = "data")]`): the event store keeps the tag
/// as the envelope's event type and the content as its payload.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The event's type name, equal to its serde tag.
    fn event_type(&self) -> &'static str;
    /// The current schema version of this event type; bumped whenever the
    /// payload's shape changes, with an upcaster for the previous version.
    fn schema_version(&self) -> u32;
}

/// A consistency boundary: decides on commands from its current state and
/// evolves by applying its own events.
///
/// This mirrors `cqrs_es::Aggregate` (same names and roles: `TYPE`, `Command`,
/// `Event`, `Error`, `handle`, `apply`) but `handle` is synchronous and free of
/// side effects: the crate `cqrs-es` makes `handle` async and depends on tokio,
/// which the domain must not. ARCHITECTURE.md records this choice.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Aggregate type name, used in the event subject (`evt.<org>.<TYPE>.<id>`).
    const TYPE: &'static str;
    /// The commands this aggregate decides on.
    type Command: Clone + Debug + Send + Sync;
    /// The events this aggregate records.
    type Event: DomainEvent;
    /// Why a command was denied.
    type Error: std::error::Error + Clone + PartialEq + Send + Sync + 'static;

    /// Decides on a command: the events to record, or why not. Never mutates.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event. Total: every recorded event applies.
    fn apply(&mut self, event: &Self::Event);

    /// Brings a stored payload of `schema_version` up to the current schema of
    /// `event_type`. The payload is JSON as stored (personal data still sealed).
    fn upcast(
        event_type: &str,
        schema_version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, UpcastError>;
}

/// The upcaster of an aggregate whose event `types` all exist only at
/// schema version 1: the payload of a version 1 as it is, any other version
/// or type refused.
pub fn upcast_first_versions(
    aggregate_type: &'static str,
    types: &[&str],
    event_type: &str,
    version: u32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, UpcastError> {
    match (types.contains(&event_type), version) {
        (true, 1) => Ok(payload),
        (true, _) => Err(UpcastError::UnknownVersion {
            event_type: event_type.to_owned(),
            version,
        }),
        (false, _) => Err(UpcastError::UnknownType {
            aggregate_type,
            event_type: event_type.to_owned(),
        }),
    }
}

/// A stored event that this code cannot turn into a current event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The event type is not one this aggregate knows.
    #[error("unknown event type {event_type:?} for aggregate {aggregate_type}")]
    UnknownType {
        /// Aggregate type that was asked.
        aggregate_type: &'static str,
        /// The stored event type.
        event_type: String,
    },
    /// The schema version is newer than this code, or was never defined.
    #[error("unsupported schema version {version} of event {event_type:?}")]
    UnknownVersion {
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        version: u32,
    },
    /// The payload does not have the shape its version promises.
    #[error("malformed payload of {event_type:?} v{version}: {reason}")]
    Malformed {
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// What was wrong.
        reason: String,
    },
}
