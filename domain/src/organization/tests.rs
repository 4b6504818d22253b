//! The organization's invariants: given/when/then cases and a property
//! test over random command sequences.

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
        actor: pid("owner"),
        member: pid(id),
        email: email.into(),
        name: format!("Member {id}"),
        role: Role::Employee,
    }
}

#[test]
fn names_are_the_serialized_forms() {
    for role in Role::ALL {
        assert_eq!(serde_json::to_value(role).unwrap(), role.name());
        assert_eq!(Role::from_name(role.name()), Some(role));
    }
    for day in Weekday::ALL {
        assert_eq!(serde_json::to_value(day).unwrap(), day.name());
        assert_eq!(Weekday::from_name(day.name()), Some(day));
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
        .when(OrgCommand::ChangeSeats {
            actor: pid("owner"),
            seats: 1,
        })
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

fn member_invited(id: &str, role: Role) -> OrgEvent {
    OrgEvent::MemberInvited {
        member: pid(id),
        email: PersonalData::new(pid(id), format!("{id}@acme.test")),
        name: None,
        role,
    }
}

fn enrolled(device: &str, member: &str) -> OrgEvent {
    OrgEvent::DeviceEnrolled {
        device: pid(device),
        member: pid(member),
        name: PersonalData::new(pid(member), "Laptop"),
    }
}

#[test]
fn only_owners_and_admins_manage_members() {
    for role in [Role::Manager, Role::Employee, Role::Auditor] {
        AggregateTest::<Organization>::given(vec![created(5), member_invited("x", role)])
            .when(OrgCommand::InviteMember {
                actor: pid("x"),
                member: pid("y"),
                email: "y@acme.test".into(),
                name: "Y".into(),
                role: Role::Employee,
            })
            .then_expect_error(OrgError::NotAllowed);
    }
    AggregateTest::<Organization>::given(vec![created(5), member_invited("a", Role::Admin)])
        .when(OrgCommand::ChangeRole {
            actor: pid("a"),
            member: pid("owner"),
            role: Role::Employee,
        })
        .then_expect_error(OrgError::NotAllowed);
    AggregateTest::<Organization>::given(vec![created(5), member_invited("a", Role::Admin)])
        .when(OrgCommand::Deactivate {
            actor: pid("a"),
            member: pid("owner"),
        })
        .then_expect_error(OrgError::NotAllowed);
}

#[test]
fn the_last_active_owner_stays() {
    AggregateTest::<Organization>::given(vec![created(5)])
        .when(OrgCommand::ChangeRole {
            actor: pid("owner"),
            member: pid("owner"),
            role: Role::Admin,
        })
        .then_expect_error(OrgError::LastOwner);
    AggregateTest::<Organization>::given(vec![created(5), member_invited("o2", Role::Owner)])
        .when(OrgCommand::Deactivate {
            actor: pid("o2"),
            member: pid("owner"),
        })
        .then_expect(vec![OrgEvent::MemberDeactivated {
            member: pid("owner"),
        }]);
}

#[test]
fn deactivation_revokes_the_members_devices_in_the_same_commit() {
    AggregateTest::<Organization>::given(vec![
        created(5),
        member_invited("m1", Role::Employee),
        enrolled("d1", "m1"),
        enrolled("d2", "m1"),
        enrolled("d3", "owner"),
        OrgEvent::DeviceRevoked { device: pid("d2") },
    ])
    .when(OrgCommand::Deactivate {
        actor: pid("owner"),
        member: pid("m1"),
    })
    .then_expect(vec![
        OrgEvent::MemberDeactivated { member: pid("m1") },
        OrgEvent::DeviceRevoked { device: pid("d1") },
    ]);
}

#[test]
fn devices_belong_to_active_members() {
    AggregateTest::<Organization>::given(vec![
        created(5),
        member_invited("m1", Role::Employee),
        OrgEvent::MemberDeactivated { member: pid("m1") },
    ])
    .when(OrgCommand::EnrollDevice {
        actor: pid("m1"),
        device: pid("d1"),
        name: "Laptop".into(),
    })
    .then_expect_error(OrgError::MemberInactive);
    AggregateTest::<Organization>::given(vec![created(5), member_invited("m1", Role::Employee)])
        .when(OrgCommand::EnrollDevice {
            actor: pid("m1"),
            device: pid("d1"),
            name: "Laptop".into(),
        })
        .then_expect(vec![enrolled("d1", "m1")]);
    // A member revokes their own device; another employee may not.
    let given = || {
        vec![
            created(5),
            member_invited("m1", Role::Employee),
            member_invited("m2", Role::Employee),
            enrolled("d1", "m1"),
        ]
    };
    AggregateTest::<Organization>::given(given())
        .when(OrgCommand::RevokeDevice {
            actor: pid("m2"),
            device: pid("d1"),
        })
        .then_expect_error(OrgError::NotAllowed);
    AggregateTest::<Organization>::given(given())
        .when(OrgCommand::RevokeDevice {
            actor: pid("m1"),
            device: pid("d1"),
        })
        .then_expect(vec![OrgEvent::DeviceRevoked { device: pid("d1") }]);
}

#[test]
fn reactivation_needs_a_free_seat() {
    AggregateTest::<Organization>::given(vec![
        created(2),
        member_invited("m1", Role::Employee),
        OrgEvent::MemberDeactivated { member: pid("m1") },
        member_invited("m2", Role::Employee),
    ])
    .when(OrgCommand::Reactivate {
        actor: pid("owner"),
        member: pid("m1"),
    })
    .then_expect_error(OrgError::SeatsExhausted { seats: 2 });
}

fn berlin() -> Settings {
    Settings {
        timezone: "Europe/Berlin".into(),
        work_week: vec![Weekday::Monday, Weekday::Tuesday, Weekday::Wednesday],
        capture_titles: false,
        capture_urls: false,
    }
}

#[test]
fn managers_change_settings_and_others_may_not() {
    AggregateTest::<Organization>::given(vec![created(3)])
        .when(OrgCommand::ChangeSettings {
            actor: pid("owner"),
            settings: berlin(),
        })
        .then_expect(vec![OrgEvent::SettingsChanged { settings: berlin() }]);
    for role in [Role::Manager, Role::Employee, Role::Auditor] {
        AggregateTest::<Organization>::given(vec![created(3), member_invited("m1", role)])
            .when(OrgCommand::ChangeSettings {
                actor: pid("m1"),
                settings: berlin(),
            })
            .then_expect_error(OrgError::NotAllowed);
    }
    // The same settings again change nothing.
    AggregateTest::<Organization>::given(vec![created(3)])
        .when(OrgCommand::ChangeSettings {
            actor: pid("owner"),
            settings: Settings::default(),
        })
        .then_expect(vec![]);
}

#[test]
fn malformed_settings_are_denied() {
    let bad = [
        Settings {
            timezone: String::new(),
            ..berlin()
        },
        Settings {
            timezone: "Europe/Berlin; DROP".into(),
            ..berlin()
        },
        Settings {
            work_week: vec![],
            ..berlin()
        },
        Settings {
            work_week: vec![Weekday::Friday, Weekday::Monday],
            ..berlin()
        },
        Settings {
            work_week: vec![Weekday::Monday, Weekday::Monday],
            ..berlin()
        },
    ];
    for settings in bad {
        AggregateTest::<Organization>::given(vec![created(3)])
            .when(OrgCommand::ChangeSettings {
                actor: pid("owner"),
                settings,
            })
            .then_expect_error(OrgError::InvalidSettings);
    }
}

#[test]
fn rules_are_versioned_and_set_by_managers_only() {
    let rule = CategoryRule {
        name: vec!["Work".into()],
        regex: Some("code".into()),
        ignore_case: true,
        score: Some(80),
    };
    AggregateTest::<Organization>::given(vec![
        created(3),
        OrgEvent::CategoryRulesChanged {
            version: 1,
            rules: vec![],
        },
    ])
    .when(OrgCommand::SetCategoryRules {
        actor: pid("owner"),
        rules: vec![rule.clone()],
    })
    .then_expect(vec![OrgEvent::CategoryRulesChanged {
        version: 2,
        rules: vec![rule.clone()],
    }]);
    AggregateTest::<Organization>::given(vec![created(3), member_invited("m1", Role::Manager)])
        .when(OrgCommand::SetCategoryRules {
            actor: pid("m1"),
            rules: vec![rule.clone()],
        })
        .then_expect_error(OrgError::NotAllowed);
    AggregateTest::<Organization>::given(vec![created(3)])
        .when(OrgCommand::SetCategoryRules {
            actor: pid("owner"),
            rules: vec![CategoryRule {
                name: vec!["Work".into(), " ".into()],
                ..rule
            }],
        })
        .then_expect_error(OrgError::InvalidRules(
            "categories[0] (Work > \" \"): part 1 of the name is empty".into(),
        ));
}

#[test]
fn auditors_enroll_no_device() {
    AggregateTest::<Organization>::given(vec![created(3), member_invited("a1", Role::Auditor)])
        .when(OrgCommand::EnrollDevice {
            actor: pid("a1"),
            device: pid("d1"),
            name: "Laptop".into(),
        })
        .then_expect_error(OrgError::NotAllowed);
}

const PEOPLE: [&str; 6] = ["owner", "m0", "m1", "m2", "m3", "m4"];

fn person() -> impl Strategy<Value = PersonId> {
    (0..PEOPLE.len()).prop_map(|i| pid(PEOPLE[i]))
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Owner),
        Just(Role::Admin),
        Just(Role::Manager),
        Just(Role::Employee),
        Just(Role::Auditor),
    ]
}

fn command() -> impl Strategy<Value = OrgCommand> {
    prop_oneof![
        (person(), person(), role()).prop_map(|(actor, member, role)| {
            OrgCommand::InviteMember {
                email: format!("{member}@acme.test"),
                name: format!("Name {member}"),
                actor,
                member,
                role,
            }
        }),
        (person(), 0u32..8).prop_map(|(actor, seats)| OrgCommand::ChangeSeats { actor, seats }),
        (person(), person(), role()).prop_map(|(actor, member, role)| OrgCommand::ChangeRole {
            actor,
            member,
            role
        }),
        (person(), person()).prop_map(|(actor, member)| OrgCommand::Deactivate { actor, member }),
        (person(), person()).prop_map(|(actor, member)| OrgCommand::Reactivate { actor, member }),
        (person(), 0u8..4).prop_map(|(actor, d)| OrgCommand::EnrollDevice {
            actor,
            device: pid(&format!("d{d}")),
            name: "Laptop".into(),
        }),
        (person(), 0u8..4).prop_map(|(actor, d)| OrgCommand::RevokeDevice {
            actor,
            device: pid(&format!("d{d}")),
        }),
        (person(), any::<bool>()).prop_map(|(actor, titles)| OrgCommand::ChangeSettings {
            actor,
            settings: Settings {
                capture_titles: titles,
                ..Settings::default()
            },
        }),
    ]
}

proptest! {
    #[test]
    fn no_command_sequence_breaks_the_invariants(seats in 1u32..5, cmds in proptest::collection::vec(command(), 0..60)) {
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
            prop_assert!(org.active_owners() >= 1);
            for device in org.devices.values() {
                let member = &org.members[&device.member];
                prop_assert!(member.active || device.revoked, "a deactivated member kept a device");
            }
        }
    }
}
