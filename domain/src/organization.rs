//! The organization aggregate: the tenant, its plan's seat count and its members.
//!
//! Invariants: active members never exceed the seats; an e-mail address is
//! unique within the organization (case-insensitive); a member id is used once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{Aggregate, DomainEvent, UpcastError};
use crate::ids::PersonId;
use crate::personal::PersonalData;

/// Longest organization name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A member's role in the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the organization.
    Owner,
    /// Administers members and settings.
    Admin,
    /// Approves their team's timesheets and leave.
    Manager,
    /// Tracks their own time.
    Employee,
    /// Reads everything, changes nothing.
    Auditor,
}

/// One member as the aggregate knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Contact e-mail (personal data).
    pub email: PersonalData,
    /// Display name (personal data), absent for members invited before names existed.
    pub name: Option<PersonalData>,
    /// Role in the organization.
    pub role: Role,
    /// Whether the member holds a seat.
    pub active: bool,
}

/// State of one organization.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// False until `OrganizationCreated`.
    pub created: bool,
    /// Display name of the organization.
    pub name: String,
    /// Seats bought with the plan.
    pub seats: u32,
    /// Members by person id.
    pub members: BTreeMap<PersonId, Member>,
}

impl Organization {
    /// Members currently holding a seat.
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| m.active).count()
    }

    fn email_taken(&self, email: &str) -> bool {
        self.members
            .values()
            .filter_map(|m| m.email.value())
            .any(|e| e.eq_ignore_ascii_case(email))
    }
}

/// Commands on an organization.
#[derive(Debug, Clone, PartialEq)]
pub enum OrgCommand {
    /// Create the organization with its first owner.
    Create {
        /// Display name.
        name: String,
        /// The owner's person id.
        owner: PersonId,
        /// The owner's e-mail.
        owner_email: String,
        /// The owner's display name.
        owner_name: String,
        /// Seats bought.
        seats: u32,
    },
    /// Invite a member, taking a seat.
    InviteMember {
        /// New member's person id.
        member: PersonId,
        /// New member's e-mail.
        email: String,
        /// New member's display name.
        name: String,
        /// Role granted.
        role: Role,
    },
    /// Change the number of seats bought.
    ChangeSeats {
        /// New seat count.
        seats: u32,
    },
}

/// Events of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrgEvent {
    /// The organization exists, with its first owner holding a seat.
    OrganizationCreated {
        /// Display name.
        name: String,
        /// First owner.
        owner: PersonId,
        /// Owner's e-mail (personal data).
        owner_email: PersonalData,
        /// Owner's display name (personal data).
        owner_name: PersonalData,
        /// Seats bought.
        seats: u32,
    },
    /// A member was invited and holds a seat. Schema v2 added `name` and `role`
    /// (v1 members were employees without a recorded name).
    MemberInvited {
        /// The member.
        member: PersonId,
        /// Their e-mail (personal data).
        email: PersonalData,
        /// Their display name (personal data).
        name: Option<PersonalData>,
        /// Role granted.
        role: Role,
    },
    /// The seat count changed.
    SeatsChanged {
        /// New seat count.
        seats: u32,
    },
}

impl DomainEvent for OrgEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::OrganizationCreated { .. } => "OrganizationCreated",
            Self::MemberInvited { .. } => "MemberInvited",
            Self::SeatsChanged { .. } => "SeatsChanged",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Self::MemberInvited { .. } => 2,
            Self::OrganizationCreated { .. } | Self::SeatsChanged { .. } => 1,
        }
    }
}

/// Why an organization command was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// Create on an existing organization.
    #[error("the organization already exists")]
    AlreadyExists,
    /// Any command before create.
    #[error("the organization does not exist")]
    NotFound,
    /// Name empty or too long.
    #[error("name must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName,
    /// Seat count of zero.
    #[error("an organization needs at least one seat")]
    NoSeats,
    /// No free seat for an invitation.
    #[error("all {seats} seats are taken; buy more seats or deactivate a member")]
    SeatsExhausted {
        /// Seats bought.
        seats: u32,
    },
    /// Fewer seats than active members.
    #[error("{active} members are active, so seats cannot drop to {requested}")]
    SeatsBelowActive {
        /// Active members.
        active: usize,
        /// Requested seats.
        requested: u32,
    },
    /// The person is already a member.
    #[error("this person is already a member")]
    AlreadyMember,
    /// The e-mail belongs to another member.
    #[error("another member already uses this e-mail address")]
    EmailTaken,
    /// Malformed e-mail.
    #[error("invalid e-mail address")]
    InvalidEmail,
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace)
}

fn valid_name(name: &str) -> bool {
    let n = name.trim().chars().count();
    n > 0 && n <= MAX_NAME_CHARS
}

impl Aggregate for Organization {
    const TYPE: &'static str = "organization";
    type Command = OrgCommand;
    type Event = OrgEvent;
    type Error = OrgError;

    fn handle(&self, command: OrgCommand) -> Result<Vec<OrgEvent>, OrgError> {
        match command {
            OrgCommand::Create {
                name,
                owner,
                owner_email,
                owner_name,
                seats,
            } => {
                if self.created {
                    return Err(OrgError::AlreadyExists);
                }
                if !valid_name(&name) || !valid_name(&owner_name) {
                    return Err(OrgError::InvalidName);
                }
                if !valid_email(&owner_email) {
                    return Err(OrgError::InvalidEmail);
                }
                if seats == 0 {
                    return Err(OrgError::NoSeats);
                }
                Ok(vec![OrgEvent::OrganizationCreated {
                    name,
                    owner_email: PersonalData::new(owner.clone(), owner_email),
                    owner_name: PersonalData::new(owner.clone(), owner_name),
                    owner,
                    seats,
                }])
            }
            OrgCommand::InviteMember {
                member,
                email,
                name,
                role,
            } => {
                if !self.created {
                    return Err(OrgError::NotFound);
                }
                if !valid_name(&name) {
                    return Err(OrgError::InvalidName);
                }
                if !valid_email(&email) {
                    return Err(OrgError::InvalidEmail);
                }
                if self.members.contains_key(&member) {
                    return Err(OrgError::AlreadyMember);
                }
                if self.email_taken(&email) {
                    return Err(OrgError::EmailTaken);
                }
                if self.active_members() >= self.seats as usize {
                    return Err(OrgError::SeatsExhausted { seats: self.seats });
                }
                Ok(vec![OrgEvent::MemberInvited {
                    email: PersonalData::new(member.clone(), email),
                    name: Some(PersonalData::new(member.clone(), name)),
                    member,
                    role,
                }])
            }
            OrgCommand::ChangeSeats { seats } => {
                if !self.created {
                    return Err(OrgError::NotFound);
                }
                if seats == 0 {
                    return Err(OrgError::NoSeats);
                }
                let active = self.active_members();
                if (seats as usize) < active {
                    return Err(OrgError::SeatsBelowActive {
                        active,
                        requested: seats,
                    });
                }
                if seats == self.seats {
                    return Ok(vec![]);
                }
                Ok(vec![OrgEvent::SeatsChanged { seats }])
            }
        }
    }

    fn apply(&mut self, event: &OrgEvent) {
        match event {
            OrgEvent::OrganizationCreated {
                name,
                owner,
                owner_email,
                owner_name,
                seats,
            } => {
                self.created = true;
                self.name.clone_from(name);
                self.seats = *seats;
                self.members.insert(
                    owner.clone(),
                    Member {
                        email: owner_email.clone(),
                        name: Some(owner_name.clone()),
                        role: Role::Owner,
                        active: true,
                    },
                );
            }
            OrgEvent::MemberInvited {
                member,
                email,
                name,
                role,
            } => {
                self.members.insert(
                    member.clone(),
                    Member {
                        email: email.clone(),
                        name: name.clone(),
                        role: *role,
                        active: true,
                    },
                );
            }
            OrgEvent::SeatsChanged { seats } => self.seats = *seats,
        }
    }

    fn upcast(event_type: &str, version: u32, payload: Value) -> Result<Value, UpcastError> {
        let malformed = |reason: &str| UpcastError::Malformed {
            event_type: event_type.to_owned(),
            version,
            reason: reason.to_owned(),
        };
        match (event_type, version) {
            ("OrganizationCreated", 1) | ("SeatsChanged", 1) | ("MemberInvited", 2) => Ok(payload),
            // v1 had neither a name nor a role: every invitee was an employee.
            ("MemberInvited", 1) => {
                let Value::Object(mut fields) = payload else {
                    return Err(malformed("payload is not an object"));
                };
                if !fields.contains_key("member") || !fields.contains_key("email") {
                    return Err(malformed("missing member or email"));
                }
                fields.insert("name".into(), Value::Null);
                fields.insert("role".into(), Value::String("employee".into()));
                Ok(Value::Object(fields))
            }
            ("OrganizationCreated" | "SeatsChanged" | "MemberInvited", _) => {
                Err(UpcastError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version,
                })
            }
            _ => Err(UpcastError::UnknownType {
                aggregate_type: Self::TYPE,
                event_type: event_type.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::AggregateTest;

    fn pid(s: &str) -> PersonId {
        PersonId::new(s).unwrap()
    }

    fn created(seats: u32) -> OrgEvent {
        OrgEvent::OrganizationCreated {
            name: "Acme".into(),
            owner: pid("owner"),
            owner_email: PersonalData::new(pid("owner"), "owner@acme.test"),
            owner_name: PersonalData::new(pid("owner"), "Olive Owner"),
            seats,
        }
    }

    fn invite(id: &str, email: &str) -> OrgCommand {
        OrgCommand::InviteMember {
            member: pid(id),
            email: email.into(),
            name: format!("Member {id}"),
            role: Role::Employee,
        }
    }

    #[test]
    fn create_records_owner_with_a_seat() {
        AggregateTest::<Organization>::given(vec![])
            .when(OrgCommand::Create {
                name: "Acme".into(),
                owner: pid("owner"),
                owner_email: "owner@acme.test".into(),
                owner_name: "Olive Owner".into(),
                seats: 3,
            })
            .then_expect(vec![created(3)]);
    }

    #[test]
    fn invite_takes_a_free_seat() {
        AggregateTest::<Organization>::given(vec![created(2)])
            .when(invite("m1", "m1@acme.test"))
            .then_expect(vec![OrgEvent::MemberInvited {
                member: pid("m1"),
                email: PersonalData::new(pid("m1"), "m1@acme.test"),
                name: Some(PersonalData::new(pid("m1"), "Member m1")),
                role: Role::Employee,
            }]);
    }

    #[test]
    fn invite_denied_when_seats_are_taken() {
        AggregateTest::<Organization>::given(vec![created(1)])
            .when(invite("m1", "m1@acme.test"))
            .then_expect_error(OrgError::SeatsExhausted { seats: 1 });
    }

    #[test]
    fn email_is_unique_ignoring_case() {
        AggregateTest::<Organization>::given(vec![created(5)])
            .when(invite("m1", "OWNER@acme.test"))
            .then_expect_error(OrgError::EmailTaken);
    }

    #[test]
    fn seats_cannot_drop_below_active_members() {
        let invited = Organization::default()
            .handle(OrgCommand::Create {
                name: "Acme".into(),
                owner: pid("owner"),
                owner_email: "o@acme.test".into(),
                owner_name: "O".into(),
                seats: 2,
            })
            .unwrap();
        let mut given = invited;
        given.push(OrgEvent::MemberInvited {
            member: pid("m1"),
            email: PersonalData::new(pid("m1"), "m1@acme.test"),
            name: None,
            role: Role::Employee,
        });
        AggregateTest::<Organization>::given(given)
            .when(OrgCommand::ChangeSeats { seats: 1 })
            .then_expect_error(OrgError::SeatsBelowActive {
                active: 2,
                requested: 1,
            });
    }

    #[test]
    fn malformed_input_is_denied() {
        AggregateTest::<Organization>::given(vec![created(5)])
            .when(invite("m1", "not-an-email"))
            .then_expect_error(OrgError::InvalidEmail);
        AggregateTest::<Organization>::given(vec![])
            .when(OrgCommand::Create {
                name: " ".into(),
                owner: pid("o"),
                owner_email: "o@a.test".into(),
                owner_name: "O".into(),
                seats: 1,
            })
            .then_expect_error(OrgError::InvalidName);
    }

    #[test]
    fn member_invited_v1_upcasts_to_an_employee_without_name() {
        let v1 = serde_json::json!({"member": "m1", "email": {"$pd": "m1", "ct": "x"}});
        let v2 = Organization::upcast("MemberInvited", 1, v1).unwrap();
        assert_eq!(v2["role"], "employee");
        assert!(v2["name"].is_null());
        assert!(matches!(
            Organization::upcast("MemberInvited", 3, Value::Null),
            Err(UpcastError::UnknownVersion { .. })
        ));
        assert!(matches!(
            Organization::upcast("Nope", 1, Value::Null),
            Err(UpcastError::UnknownType { .. })
        ));
    }

    fn command() -> impl Strategy<Value = OrgCommand> {
        prop_oneof![
            (0u8..12).prop_map(|i| invite(&format!("m{i}"), &format!("m{i}@acme.test"))),
            (0u32..8).prop_map(|seats| OrgCommand::ChangeSeats { seats }),
        ]
    }

    proptest! {
        #[test]
        fn no_command_sequence_exceeds_the_seats(seats in 1u32..5, cmds in proptest::collection::vec(command(), 0..40)) {
            let mut org = Organization::default();
            for e in org.handle(OrgCommand::Create {
                name: "Acme".into(),
                owner: pid("owner"),
                owner_email: "owner@acme.test".into(),
                owner_name: "Olive".into(),
                seats,
            }).unwrap() {
                org.apply(&e);
            }
            for cmd in cmds {
                if let Ok(events) = org.handle(cmd) {
                    for e in &events {
                        org.apply(e);
                    }
                }
                prop_assert!(org.active_members() <= org.seats as usize);
                prop_assert!(org.seats >= 1);
            }
        }
    }
}
