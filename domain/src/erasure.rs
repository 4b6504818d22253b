//! `PersonErasure`: the right to be forgotten as a fact in the log, one
//! aggregate per (org, person), its id the person's. Destroying the
//! person's data key makes their personal data unreadable; this event is
//! what makes the erasure survive a restore of the key bucket (the store
//! destroys the key again for every erasure it finds) and what tells the
//! read models to drop the copies they made.
//!
//! Invariant: a person is erased once. Only owners and admins erase; the
//! use case passes the actor's role in, as for the organization's commands.

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::PersonId;
use crate::organization::Role;

/// Whether the person was erased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonErasure {
    erased: bool,
}

/// The one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureCommand {
    /// Erase the person: their personal data becomes unreadable everywhere.
    Erase {
        /// The person (the aggregate's id).
        person: PersonId,
        /// The role of whoever asks, in the person's organization; `None`
        /// for the platform's operator tool (`trackhrs erase-person`).
        by: Option<Role>,
    },
}

/// The one event. It carries no personal data: the person's id only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ErasureEvent {
    /// The person was erased.
    PersonErased {
        /// Who.
        person: PersonId,
    },
}

impl DomainEvent for ErasureEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::PersonErased { .. } => "PersonErased",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why an erasure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    /// Erased before.
    #[error("this person has already been erased")]
    AlreadyErased,
    /// Only owners and admins erase people.
    #[error("only owners and admins erase people")]
    NotAllowed,
}

impl Aggregate for PersonErasure {
    const TYPE: &'static str = "erasure";
    type Command = ErasureCommand;
    type Event = ErasureEvent;
    type Error = ErasureError;

    fn handle(&self, command: ErasureCommand) -> Result<Vec<ErasureEvent>, ErasureError> {
        let ErasureCommand::Erase { person, by } = command;
        if matches!(by, Some(role) if !matches!(role, Role::Owner | Role::Admin)) {
            return Err(ErasureError::NotAllowed);
        }
        if self.erased {
            return Err(ErasureError::AlreadyErased);
        }
        Ok(vec![ErasureEvent::PersonErased { person }])
    }

    fn apply(&mut self, event: &ErasureEvent) {
        match event {
            ErasureEvent::PersonErased { .. } => self.erased = true,
        }
    }

    fn upcast(
        event_type: &str,
        version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, UpcastError> {
        upcast_first_versions(Self::TYPE, &["PersonErased"], event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::AggregateTest;

    fn ann() -> PersonId {
        PersonId::new("ann").unwrap()
    }

    fn erase(by: Option<Role>) -> ErasureCommand {
        ErasureCommand::Erase { person: ann(), by }
    }

    #[test]
    fn owners_admins_and_the_operator_tool_erase_a_person_once() {
        for by in [None, Some(Role::Owner), Some(Role::Admin)] {
            AggregateTest::<PersonErasure>::given(vec![])
                .when(erase(by))
                .then_expect(vec![ErasureEvent::PersonErased { person: ann() }]);
        }
        AggregateTest::<PersonErasure>::given(vec![ErasureEvent::PersonErased { person: ann() }])
            .when(erase(None))
            .then_expect_error(ErasureError::AlreadyErased);
    }

    #[test]
    fn nobody_else_erases() {
        for role in [Role::Manager, Role::Employee, Role::Auditor] {
            AggregateTest::<PersonErasure>::given(vec![])
                .when(erase(Some(role)))
                .then_expect_error(ErasureError::NotAllowed);
        }
    }

    #[test]
    fn the_event_carries_the_person_id_only_and_upcasts_its_version() {
        let event = ErasureEvent::PersonErased { person: ann() };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "PersonErased", "data": {"person": "ann"}})
        );
        assert_eq!(
            PersonErasure::upcast("PersonErased", 1, json["data"].clone()).unwrap(),
            json["data"]
        );
        assert!(PersonErasure::upcast("PersonErased", 2, json["data"].clone()).is_err());
        assert!(PersonErasure::upcast("Other", 1, json["data"].clone()).is_err());
    }
}
